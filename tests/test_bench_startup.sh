#!/usr/bin/env bash
# test_bench_startup: `zipage bench startup` on a tiny model on the CPU: the cold start and
# --runs warm starts run (each in its own process), the table has a row each and the target
# line, --json appends one object per run, and the kernel cache it made under $TMPDIR is gone
# afterwards; --load auto reads the checkpoint, and without one fails naming the missing file,
# still removing its directory.
set -u
ZP=${ZP_BUILD:-build}/asan/zipage
[ -x "$ZP" ] || { echo "SKIP zipage not built"; exit 77; }
d=$(mktemp -d /tmp/zp_bench_startup.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }
$ZP mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$d/m" >/dev/null || exit 1
mkdir "$d/cfg" "$d/tmp" && cp "$d/m/config.json" "$d/cfg/"
B="bench startup --backend cpu --set block_size=16 --set max_model_len=256"

TMPDIR=$d/tmp $ZP $B --model "$d/cfg" --runs 2 --json "$d/runs.jsonl" >"$d/out" 2>"$d/err"
rc=$?
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
cache=$(sed -n 's|^bench startup: kernel cache \(.*\) (removed at the end).*|\1|p' "$d/err")
check '[ -n "$cache" ] && case "$cache" in "$d/tmp/zipage-startup-"*) true ;; *) false ;; esac'
check '[ ! -e "$cache" ] && [ -z "$(ls -A "$d/tmp")" ]'
check 'grep -qE "^cold +[0-9.]+ +- +([0-9.]+ +){6}0$" "$d/out"'
check '[ "$(grep -cE "^warm [12] " "$d/out")" = 2 ]'
check 'grep -q "^warm start-up besides reading / making and uploading the weights: [0-9.]* s (median; target <= 1 s: met); cold start-up [0-9.]* s in all" "$d/out"'
check 'python3 - "$d/runs.jsonl" <<"P"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert [(r["run"], r["index"]) for r in runs] == [("cold", 0), ("warm", 1), ("warm", 2)], runs
for r in runs:
    assert r["backend"] == "cpu" and r["load_format"] == "dummy", r
    assert r["open_s"] > 0 and r["close_s"] >= 0 and r["dummy_weights_s"] > 0, r
    assert "auto_weights_s" not in r and r["weight_bytes"] > 0, r
    phases = [r[k] for k in ("open_weights_s", "open_backend_s", "open_upload_s", "open_graphs_s")]
    assert all(p >= 0 for p in phases) and sum(phases) <= r["open_s"], r
P'

# the checkpoint: both weight timings, the same bytes
TMPDIR=$d/tmp $ZP $B --model "$d/m" --runs 1 --load auto --json "$d/auto.jsonl" >/dev/null 2>&1
check 'python3 - "$d/auto.jsonl" "$d/runs.jsonl" <<"P"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
dummy = json.loads(open(sys.argv[2]).readline())
assert len(runs) == 2 and all(r["load_format"] == "auto" and r["auto_weights_s"] > 0 for r in runs), runs
assert runs[0]["weight_bytes"] == dummy["weight_bytes"], (runs, dummy)
P'
err=$(TMPDIR=$d/tmp $ZP $B --model "$d/cfg" --runs 1 --load auto 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 2 ] && echo "$err" | grep -q "cold start-up: .*model.safetensors"'
check '[ -z "$(ls -A "$d/tmp")" ]'
[ $fail -eq 0 ] && echo "PASS test_bench_startup"
exit $fail
