#!/usr/bin/env bash
# test_bench_compress: `zipage bench compress` on a tiny model on the CPU, with only its
# config.json (load_format = dummy), prompts prefilled in chunks: both runs (async and sync
# compression) finish, compress, give the same completion tokens and outputs, count a decode
# window that starts after the first tokens, and append one JSON object each; the two target
# lines are printed; load_format = auto then fails for want of weights, and load_format = bogus
# is refused with a message naming the key.
set -u
ZP=${ZP_BUILD:-build}/asan/zipage
[ -x "$ZP" ] || { echo "SKIP zipage not built"; exit 77; }
d=$(mktemp -d /tmp/zp_bench_compress.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }
$ZP mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$d/m" >/dev/null || exit 1
rm "$d/m/model.safetensors"
B="bench compress --model $d/m --backend cpu --requests 6 --prompt 40 --spread 20 --gen 200 --budget 2 --set block_size=16 --set max_num_batched_tokens=64"

$ZP $B --json "$d/runs.jsonl" >"$d/out" 2>"$d/err"
rc=$?
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
check 'grep -q "^async " "$d/out" && grep -q "^sync " "$d/out"'
check 'grep -q "^exposed compression: [0-9.]*% of decode time (target <= 5%)" "$d/out"'
check 'grep -q "^async vs sync throughput: [0-9]* tok/s vs [0-9]* tok/s (target async >= sync)" "$d/out"'
check 'grep -q "^outputs of the two runs: identical" "$d/out"'
check 'python3 - "$d/runs.jsonl" <<"P"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert [r["mode"] for r in runs] == ["async", "sync"], runs
for r in runs:
    assert r["backend"] == "cpu" and r["compressions"] > 0 and r["decode_tok_s"] > 0, r
    assert r["completion_tokens"] == 6 * 200 and 0 < r["decode_tokens"] < 6 * 200, r
    assert 0 < r["decode_compressions"] <= r["compressions"], r
assert runs[0]["output_hash"] == runs[1]["output_hash"], runs
P'
# --json appends: a second run adds two more objects
$ZP $B --gen 20 --json "$d/runs.jsonl" >/dev/null 2>&1
check '[ "$(wc -l < "$d/runs.jsonl")" = 4 ]'

err=$($ZP $B --set load_format=auto 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 2 ] && echo "$err" | grep -q "model.safetensors"'
err=$($ZP $B --set load_format=bogus 2>&1 >/dev/null)
rc=$?
want="key 'load_format': 'bogus' is not one of auto|dummy"
check '[ $rc -eq 2 ] && echo "$err" | grep -qF "$want"'
[ $fail -eq 0 ] && echo "PASS test_bench_compress"
exit $fail
