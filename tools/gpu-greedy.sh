#!/usr/bin/env bash
# The engine end to end on the GPU: zipage-reasoner's greedy accuracy on its 200-problem test
# split at full KV (compression runs on the CPU only, for now) with --backend cuda. The CPU's
# figure on the same split (docs/GPU.md, measured with --backend cpu) is passed as EXPECT and
# must be equal (issue "The engine on the GPU"). Run by tools/gpu-check.sh.
#   usage: gpu-greedy.sh ZIPAGE OUT_DIR EXPECT   (EXPECT e.g. 200/200)
set -u
ZP=$1 OUT=$2 EXPECT=$3 M=models/zipage-reasoner
"$ZP" bench accuracy --model $M --data $M/test.jsonl --n 200 --budgets full --backend cuda \
    >"$OUT/accuracy-cuda.txt" 2>&1 || { cat "$OUT/accuracy-cuda.txt"; exit 1; }
cat "$OUT/accuracy-cuda.txt"
got=$(grep -E '^full ' "$OUT/accuracy-cuda.txt" | awk '{print $3}')
echo "greedy accuracy: cuda $got, cpu $EXPECT"
[ "$got" = "$EXPECT" ]
