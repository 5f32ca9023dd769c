#!/usr/bin/env bash
# test_bench_decode: `zipage bench decode` on a tiny model on the CPU: with --weights (the
# checkpoint read, each tensor its own memory) the host's read bandwidth is measured in the run
# and printed, each point's row has tok/s, the roofline at that bandwidth and the fraction of it;
# --json writes one object per point with the bandwidth used; --bw replaces the measurement.
set -u
ZP=${ZP_BUILD:-build}/asan/zipage
[ -x "$ZP" ] || { echo "SKIP zipage not built"; exit 77; }
d=$(mktemp -d /tmp/zp_bench_decode.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }
$ZP mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$d/m" >/dev/null || exit 1
B="bench decode --model $d/m --backend cpu --points 1x16,4x40 --steps 3 --set block_size=16"

$ZP $B --weights --json "$d/runs.jsonl" >"$d/out" 2>"$d/err"
rc=$?
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
check 'grep -qE "^memory bandwidth: [0-9.]+ GB/s \(read, [0-9]+ threads, measured now\)$" "$d/out"'
check '[ "$(grep -cE "^ +(1 +16|4 +40) +[0-9.]+ +[0-9]+ +[0-9]+ +[0-9.]+%$" "$d/out")" = 2 ]'
check 'python3 - "$d/runs.jsonl" <<"P"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert [(r["batch"], r["context"]) for r in runs] == [(1, 16), (4, 40)], runs
for r in runs:
    assert r["backend"] == "cpu" and r["bw_gbps"] > 0 and r["tok_s"] > 0, r
    assert r["roofline_tok_s"] > 0, r
P'
# a bandwidth given is used, not measured
$ZP $B --bw 10 --json "$d/bw.jsonl" >"$d/out2" 2>/dev/null
check '! grep -q "memory bandwidth" "$d/out2" && grep -q "\"bw_gbps\": 10.0," "$d/bw.jsonl"'
[ $fail -eq 0 ] && echo "PASS test_bench_decode"
exit $fail
