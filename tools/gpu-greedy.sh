#!/usr/bin/env bash
# The engine end to end on the GPU: zipage-reasoner's greedy accuracy at full KV with
# --backend cuda on both task families' 200-problem test splits (models/zipage-reasoner/
# test.jsonl, tools/task/data/task2-test.jsonl). The CPU backend's figures on the same splits
# (models/zipage-reasoner/EVAL.md, measured with --backend cpu) are passed as EXPECT1 and EXPECT2
# and must be equal (issue "The engine on the GPU"). Run by tools/gpu-check.sh.
#   usage: gpu-greedy.sh ZIPAGE OUT_DIR EXPECT1 EXPECT2   (e.g. 198/200 200/200)
set -u
ZP=$1 OUT=$2 M=models/zipage-reasoner
rc=0
for f in 1 2; do
    if [ $f = 1 ]; then data=$M/test.jsonl want=$3; else data=tools/task/data/task2-test.jsonl want=$4; fi
    txt=$OUT/accuracy-cuda-f$f.txt
    "$ZP" bench accuracy --model $M --data "$data" --n 200 --budgets full --backend cuda \
        >"$txt" 2>&1 || { cat "$txt"; exit 1; }
    cat "$txt"
    got=$(grep -E '^full ' "$txt" | awk '{print $4}') # budget, eviction, KV tokens, accuracy
    echo "family $f greedy accuracy: cuda $got, cpu $want"
    [ "$got" = "$want" ] || rc=1
done
exit $rc
