#!/usr/bin/env bash
# test_bench_throughput: `zipage bench throughput` on a tiny model on the CPU, with only its
# config.json (load_format = dummy), in a 1 MiB KV pool that holds about three of the six
# requests at full KV: both modes finish with the same completion tokens, full KV preempts and
# sustains fewer requests at once than compressed, which holds less KV per request; one JSON
# object per mode is appended and the two target lines are printed. engine_stats.kv_tokens_read
# of one request alone equals the sum of its rows' cache lengths: prompt in one chunk or in
# chunks of 10, then one decode row per token, compressed or not. Bad --modes are refused.
set -u
ZP=${ZP_BUILD:-build}/asan/zipage
[ -x "$ZP" ] || { echo "SKIP zipage not built"; exit 77; }
d=$(mktemp -d /tmp/zp_bench_throughput.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }
$ZP mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$d/m" >/dev/null || exit 1
rm "$d/m/model.safetensors"
B="bench throughput --model $d/m --backend cpu --budget 2 --set block_size=16"

$ZP $B --requests 6 --prompt 24 --gen 600 --set kv_memory_mb=1 --json "$d/runs.jsonl" \
    >"$d/out" 2>"$d/err"
rc=$?
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
check 'grep -q "^full " "$d/out" && grep -q "^compressed " "$d/out"'
check 'grep -q "^compressed vs full: [0-9.]*x output tok/s (target >= 3.5x)" "$d/out"'
check 'grep -q "^compressed roofline fraction: [0-9]*% (target >= 80%)" "$d/out"'
check 'python3 - "$d/runs.jsonl" <<"P"
import json, sys
full, cmp = [json.loads(l) for l in open(sys.argv[1])]
assert full["mode"] == "full" and cmp["mode"] == "compressed", (full, cmp)
for r in (full, cmp):
    assert r["backend"] == "cpu" and r["completion_tokens"] == 6 * 600, r
    assert r["output_tok_s"] > 0 and r["steps"] > 0 and r["host_us_per_step"] >= 0, r
    assert 0 < r["decode_kv_tokens_read"] <= r["kv_tokens_read"], r
    assert 0 < r["decode_steps"] <= r["steps"] and 0 < r["roofline_fraction"], r
    assert 0 < r["mean_running"] <= r["peak_running"] <= 6, r
assert full["compressions"] == 0 and full["preemptions"] > 0, full
assert cmp["compressions"] > 0 and cmp["preemptions"] == 0, cmp
assert cmp["mean_running"] > full["mean_running"], (full, cmp)
assert cmp["kv_bytes_per_request"] < full["kv_bytes_per_request"], (full, cmp)
P'
# --json appends: a second run adds one object per mode
$ZP $B --requests 2 --prompt 8 --gen 4 --json "$d/runs.jsonl" >/dev/null 2>&1
check '[ "$(wc -l < "$d/runs.jsonl")" = 4 ]'

# One request alone: its rows' cache lengths, summed (budget 2 blocks of 16: it compresses
# back to 32 positions when its cache reaches 48).
P=24 G=120
$ZP $B --requests 1 --prompt $P --gen $G --json "$d/one.jsonl" >/dev/null 2>&1
$ZP $B --requests 1 --prompt $P --gen $G --modes full --set max_num_batched_tokens=10 \
    --json "$d/one.jsonl" >/dev/null 2>&1
check 'python3 - "$d/one.jsonl" $P $G <<"P"
import json, sys
full, cmp, chunked = [json.loads(l) for l in open(sys.argv[1])]
p, g = int(sys.argv[2]), int(sys.argv[3])
decode = sum(p + k for k in range(1, g))
assert full["kv_tokens_read"] == p + decode, full
assert chunked["kv_tokens_read"] == 10 + 20 + 24 + decode, chunked
kv, want = p, p
for _ in range(g - 1):
    kv = 32 if kv == 48 else kv
    kv += 1
    want += kv
assert cmp["kv_tokens_read"] == want, (cmp["kv_tokens_read"], want)
P'

err=$($ZP $B --modes full,full 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 2 ] && echo "$err" | grep -qF -- "--modes '"'"'full,full'"'"': want full, compressed or full,compressed"'
err=$($ZP $B --modes bogus 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 2 ] && echo "$err" | grep -qF -- "--modes '"'"'bogus'"'"'"'
[ $fail -eq 0 ] && echo "PASS test_bench_throughput"
exit $fail
