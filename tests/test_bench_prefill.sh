#!/usr/bin/env bash
# test_bench_prefill: `zipage bench prefill` on a tiny model on the CPU, with only its config.json:
# both prompts (16 and 64 tokens) are timed, the table has a row each with tok/s and TFLOP/s above
# 0 and the fraction of --peak-tflops; --json appends one object per prompt whose FLOPs are the
# documented formula's; max_num_batched_tokens follows the longest prompt, and a value set below
# it is refused with a message naming the key.
set -u
ZP=${ZP_BUILD:-build}/asan/zipage
[ -x "$ZP" ] || { echo "SKIP zipage not built"; exit 77; }
d=$(mktemp -d /tmp/zp_bench_prefill.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }
$ZP mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$d/m" >/dev/null || exit 1
rm "$d/m/model.safetensors"
B="bench prefill --model $d/m --backend cpu --prompts 16,64 --set block_size=16"

$ZP $B --peak-tflops 0.5 --json "$d/runs.jsonl" >"$d/out" 2>"$d/err"
rc=$?
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
check 'grep -q "^ *prompt *step (ms) *tok/s *TFLOP/s *of peak$" "$d/out"'
check '[ "$(grep -cE "^ +(16|64) +[0-9.]+ +[0-9]+ +[0-9.e+-]+ +[0-9.]+%$" "$d/out")" = 2 ]'
check 'grep -q "max_num_batched_tokens 64," "$d/err"'
check 'python3 - "$d/runs.jsonl" <<"P"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert [r["prompt"] for r in runs] == [16, 64], runs
# L=2, H=64, Hq=4, Hkv=2, D=16, I=96, V=300
lin = 2 * 64 * ((4 + 2 * 2) * 16 + 4 * 16 + 3 * 96)
for r in runs:
    n = r["prompt"]
    flops = 2 * n * lin + 2 * 300 * 64 + 2 * 2 * 2 * 4 * 16 * n * (n + 1) // 2
    assert abs(r["gflop"] * 1e9 - flops) <= 1e-4 * flops, (r, flops)
    assert r["backend"] == "cpu" and r["tok_s"] > 0 and r["tflops"] > 0 and r["step_ms"] > 0, r
    assert abs(r["of_peak"] - r["tflops"] / 0.5) < 1e-3, r
    assert r["max_num_batched_tokens"] == 64, r
P'
# --json appends; without --peak-tflops there is no peak column
$ZP $B --prompts 32 --json "$d/runs.jsonl" >"$d/out2" 2>/dev/null
check '[ "$(wc -l < "$d/runs.jsonl")" = 3 ] && ! grep -q "of peak" "$d/out2"'

err=$($ZP $B --set max_num_batched_tokens=32 2>&1 >/dev/null)
rc=$?
want="key 'max_num_batched_tokens': 32 rows cannot hold the 64-token prompt"
check '[ $rc -eq 2 ] && echo "$err" | grep -qF "$want"'
err=$($ZP $B --prompts 16,0 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 2 ] && echo "$err" | grep -qF -- "--prompts"'
[ $fail -eq 0 ] && echo "PASS test_bench_prefill"
exit $fail
