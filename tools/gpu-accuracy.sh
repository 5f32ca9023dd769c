#!/usr/bin/env bash
# Compressed PagedAttention on the GPU against the CPU reference: zipage-reasoner's greedy
# accuracy on the first 50 problems of each family's test split, block size 32, the default
# configuration with the prompt protected (up to 400 and 256 tokens; docs/ACCURACY.md): family 1 at full KV and 24, 20
# and 16 blocks, family 2 at 17 and 13 blocks; --backend cuda and --backend cpu on the same
# machine (the CPU runs in the background meanwhile), the CPU's KV cache in bf16 like the GPU's
# (kv_dtype=bf16: the same keys and values scored; activations stay f32 on the CPU). Passes
# when every budget's GPU count is within one problem of the CPU's (issue "Compressed
# PagedAttention on the GPU"). Run by tools/gpu-check.sh.
#   usage: gpu-accuracy.sh ZIPAGE OUT_DIR
set -u
ZP=$1 OUT=$2 M=models/zipage-reasoner
run() { # family backend threads
    local data budgets p
    if [ "$1" = 1 ]; then data=$M/test.jsonl budgets=full,24b,20b,16b p=400
    else data=tools/task/data/task2-test.jsonl budgets=17b,13b p=256; fi
    "$ZP" bench accuracy --model $M --data $data --n 50 --budgets $budgets --set block_size=32 \
        --set kv_dtype=bf16 --set protect_prompt=$p --set protect_prompt_max=$p \
        --set threads="$3" --backend "$2" >"$OUT/accuracy-budgets-f$1-$2.txt" 2>&1
}
run 1 cpu 8 & c1=$!
run 2 cpu 8 & c2=$!
rc=0
for f in 1 2; do run $f cuda 0 || { cat "$OUT/accuracy-budgets-f$f-cuda.txt"; rc=1; }; done
wait $c1 || { cat "$OUT/accuracy-budgets-f1-cpu.txt"; rc=1; }
wait $c2 || { cat "$OUT/accuracy-budgets-f2-cpu.txt"; rc=1; }
[ $rc = 0 ] || exit 1
python3 - "$OUT" <<'PY'
import re, sys
def read(p):
    return {m.group(1): int(m.group(2)) for m in
            (re.match(r'^(full|\d+b)\s+\S+\s+\S+\s+(\d+)/50', l) for l in open(p)) if m}
ok = True
for f in (1, 2):
    g = read(f"{sys.argv[1]}/accuracy-budgets-f{f}-cuda.txt")
    c = read(f"{sys.argv[1]}/accuracy-budgets-f{f}-cpu.txt")
    ok &= bool(g) and g.keys() == c.keys() and all(abs(g[k] - c[k]) <= 1 for k in g)
    for k in c:
        print(f"family {f} {k:>5}: cuda {g.get(k, '-')}/50, cpu {c[k]}/50")
print("GPU ACCURACY", "OK (within one problem at every budget)" if ok else "DIFFERS")
sys.exit(0 if ok else 1)
PY
