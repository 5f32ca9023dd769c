#!/usr/bin/env bash
# Compressed PagedAttention on the GPU against the CPU reference: zipage-reasoner's greedy
# accuracy on the first 50 problems of its test split at the budgets of docs/ACCURACY.md
# (block size 32), with --backend cuda and --backend cpu on the same machine (the CPU run in the
# background meanwhile), the CPU's KV cache in bf16 like the GPU's (kv_dtype=bf16: the same keys
# and values scored; activations stay f32 on the CPU). Passes when every budget's GPU count is
# within one problem of the CPU's (issue "Compressed PagedAttention on the GPU"). Run by
# tools/gpu-check.sh.
#   usage: gpu-accuracy.sh ZIPAGE OUT_DIR
set -u
ZP=$1 OUT=$2 M=models/zipage-reasoner
B=full,46b,44b,42b,40b,38b,36b
run() { # backend
    "$ZP" bench accuracy --model $M --data $M/test.jsonl --n 50 --budgets $B \
        --set block_size=32 --set kv_dtype=bf16 --backend "$1" >"$OUT/accuracy-budgets-$1.txt" 2>&1
}
run cpu & cpu=$!
run cuda || { cat "$OUT/accuracy-budgets-cuda.txt"; exit 1; }
wait $cpu || { cat "$OUT/accuracy-budgets-cpu.txt"; exit 1; }
for b in cuda cpu; do echo "== $b"; grep -E '^(budget|full|[0-9]+b) ' "$OUT/accuracy-budgets-$b.txt"; done
python3 - "$OUT/accuracy-budgets-cuda.txt" "$OUT/accuracy-budgets-cpu.txt" <<'PY'
import re, sys
def read(p):
    return {m.group(1): int(m.group(2)) for m in
            (re.match(r'^(full|\d+b)\s+\S+\s+(\d+)/50', l) for l in open(p)) if m}
g, c = read(sys.argv[1]), read(sys.argv[2])
ok = bool(g) and g.keys() == c.keys() and all(abs(g[k] - c[k]) <= 1 for k in g)
for k in c:
    print(f"{k:>5}: cuda {g.get(k, '-')}/50, cpu {c[k]}/50")
print("GPU ACCURACY", "OK (within one problem at every budget)" if ok else "DIFFERS")
sys.exit(0 if ok else 1)
PY
