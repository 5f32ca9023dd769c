#!/usr/bin/env bash
# test_bench_throughput: `zipage bench throughput` on a tiny model on the CPU, with only its
# config.json (load_format = dummy), in a 1 MiB KV pool that holds about three of the six
# requests at full KV: both modes finish with the same completion tokens, full KV preempts and
# sustains fewer requests at once than compressed, which holds less KV per request; one JSON
# object per mode is appended and the two target lines are printed. With --ipc each mode runs
# again through a `zipage serve` the benchmark starts and the client library: its output hash
# equals the in-process run's, its JSON object and target line are there, and its shared-memory
# object is gone afterwards; a server killed in the middle of the run and a benchmark killed in
# the middle of it leave no object and no server behind, and a model without a tokenizer is
# refused. engine_stats.kv_tokens_read of one request alone equals the sum of its rows' cache
# lengths: prompt in one chunk or in chunks of 10, then one decode row per token, compressed or
# not. Bad --modes are refused. The roofline's bandwidth is measured before the modes run and
# printed (on the CPU the host's read bandwidth), and each in-process JSON object carries it;
# --bw replaces the measurement.
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

$ZP $B --requests 6 --prompt 24 --gen 600 --set kv_memory_mb=1 --ipc --json "$d/runs.jsonl" \
    >"$d/out" 2>"$d/err"
rc=$?
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
check 'grep -q "^full " "$d/out" && grep -q "^compressed " "$d/out"'
check 'grep -q "^full ipc " "$d/out" && grep -q "^compressed ipc " "$d/out"'
check 'grep -q "^compressed vs full: [0-9.]*x output tok/s (target >= 3.5x)" "$d/out"'
check 'grep -q "^compressed: [0-9]* decode steps, [0-9.]* rows each; .* compression batches: [1-9][0-9]* jobs" "$d/out"'
check 'grep -q "^full: [0-9]* decode steps, .* compression batches: 0 jobs" "$d/out"'
check 'grep -q "^compressed roofline fraction: [0-9]*% (target >= 80%)" "$d/out"'
check 'grep -qE "^memory bandwidth: [0-9.]+ GB/s \(read, [0-9]+ threads, measured now\)$" "$d/out"'
target="% of in-process output tok/s (target >= 98%)"
same="identical to the in-process run.s (hash [0-9a-f]\{16\}, 3600 tokens)"
for m in full compressed; do
    check 'grep -q "^ipc vs in-process ($m): [0-9.]*$target" "$d/out"'
    check 'grep -q "^outputs over ipc ($m): $same" "$d/out"'
done
check 'python3 - "$d/runs.jsonl" <<"P"
import json, os, sys
full, full_ipc, cmp, cmp_ipc = [json.loads(l) for l in open(sys.argv[1])]
assert full["mode"] == "full" and cmp["mode"] == "compressed", (full, cmp)
for local, ipc in ((full, full_ipc), (cmp, cmp_ipc)):
    assert local["ipc"] is False and ipc["ipc"] is True and ipc["mode"] == local["mode"], ipc
    assert ipc["output_hash"] == local["output_hash"] and ipc["outputs_match"] is True, ipc
    assert ipc["completion_tokens"] == local["completion_tokens"] == 6 * 600, ipc
    assert ipc["compress"] == local["compress"] and ipc["backend"] == "cpu", ipc
    assert ipc["output_tok_s"] > 0 and ipc["steps"] > 0, ipc
    assert ipc["in_process_output_tok_s"] == local["output_tok_s"], ipc
    assert ipc["ipc_name"].startswith("zpbench-"), ipc
    assert not os.path.exists("/dev/shm/" + ipc["ipc_name"]), ipc["ipc_name"]
assert cmp_ipc["compressions"] > 0 and full_ipc["compressions"] == 0, (full_ipc, cmp_ipc)
for r in (full, cmp):
    assert r["backend"] == "cpu" and r["completion_tokens"] == 6 * 600, r
    assert r["output_tok_s"] > 0 and r["steps"] > 0 and r["host_us_per_step"] >= 0, r
    assert 0 < r["decode_kv_tokens_read"] <= r["kv_tokens_read"], r
    assert 0 < r["decode_steps"] <= r["steps"] and 0 < r["roofline_fraction"], r
    assert 0 < r["mean_running"] <= r["peak_running"] <= 6, r
    assert r["decode_steps"] <= r["decode_rows"] <= r["completion_tokens"], r
    assert 0 < r["decode_forward_s"] <= r["decode_s"] <= r["busy_s"], r
    assert 0 <= r["decode_cmp_exposed_s"] <= r["cmp_exposed_s"], r
assert cmp["cmp_device_s"] > 0 and cmp["score_s"] > 0 and full["cmp_device_s"] == 0, (cmp, full)
assert full["compressions"] == 0 and full["preemptions"] > 0, full
assert cmp["compressions"] > 0 and cmp["preemptions"] == 0, cmp
assert cmp["mean_running"] > full["mean_running"], (full, cmp)
assert cmp["kv_bytes_per_request"] < full["kv_bytes_per_request"], (full, cmp)
P'
bw=$(sed -nE 's/^memory bandwidth: ([0-9.]+) GB\/s.*/\1/p' "$d/out")
check '[ -n "$bw" ] && [ "$(grep -c "\"bw_gbps\": $bw," "$d/runs.jsonl")" = 2 ]'
# --json appends: a second run adds one object per mode; a bandwidth given is used, not measured
$ZP $B --requests 2 --prompt 8 --gen 4 --bw 12345 --json "$d/runs.jsonl" >"$d/out2" 2>&1
check '[ "$(wc -l < "$d/runs.jsonl")" = 6 ]'
check '! grep -q "memory bandwidth" "$d/out2" && [ "$(grep -c "\"bw_gbps\": 12345.0," "$d/runs.jsonl")" = 2 ]'

# --max-wall: a full-KV run longer than 1 s (6 x 2,000 tokens thrashing a 1 MiB pool, 2.3 s
# without the sanitizers) is stopped at its first step after 1 s; its rate over the whole workload
# is bounded by 12,000 tokens / 1 s and the compressed run, which finished, gives the ratio as a
# lower bound. With --ipc it is refused.
$ZP $B --requests 6 --prompt 24 --gen 2000 --set kv_memory_mb=1 --max-wall 1 \
    --json "$d/wall.jsonl" >"$d/wout" 2>"$d/werr"
rc=$?
check '[ $rc -eq 0 ] || { cat "$d/werr"; false; }'
check 'grep -q "^full stopped " "$d/wout" && grep -q "^compressed  " "$d/wout"'
check 'grep -q "^full: stopped by --max-wall 1 s with [0-9]* of 12000 tokens: output tok/s over the workload < 12000$" "$d/wout"'
check 'grep -q "^compressed vs full: > [0-9.]*x output tok/s (target >= 3.5x)" "$d/wout"'
check 'python3 - "$d/wall.jsonl" <<"P"
import json, sys
full, cmp = [json.loads(l) for l in open(sys.argv[1])]
assert full["stopped"] is True and full["max_wall_s"] == 1, full
assert 0 < full["completion_tokens"] < 12000 and full["workload_output_tok_s"] == 12000, full
assert 1 <= full["wall_s"] < 30, full
assert cmp["stopped"] is False and cmp["completion_tokens"] == 12000, cmp
assert cmp["workload_output_tok_s"] == cmp["output_tok_s"], cmp
P'
err=$($ZP $B --requests 2 --prompt 8 --gen 4 --ipc --max-wall 5 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 2 ] && echo "$err" | grep -q -- "--max-wall and --ipc do not combine"'

# --ipc, the server or the benchmark killed (-9) while the workload runs over IPC: the benchmark
# fails naming the server, or the server (PR_SET_PDEATHSIG) stops; no object is left either way.
# The benchmark is stopped (SIGSTOP) as soon as its server is ready, so the run cannot end first.
alive() { [ -e /proc/$1 ] && ! grep -q ") Z " /proc/$1/stat 2>/dev/null; } # a zombie is gone
kill_during_ipc() {
    $ZP $B --requests 2 --prompt 8 --gen 2000 --modes compressed --ipc >/dev/null 2>"$d/kerr" &
    local bp=$! sp="" i
    for i in $(seq 1500); do
        grep -q "zipage serve (pid [0-9]*) ready" "$d/kerr" && break
        sleep 0.02
    done
    kill -STOP $bp
    sp=$(sed -n "s/.*zipage serve (pid \([0-9]*\)) ready.*/\1/p" "$d/kerr")
    check '[ -n "$sp" ] && [ -e /dev/shm/zpbench-$bp-compressed ]'
    if [ "$1" = server ]; then kill -9 $sp; else kill -9 $bp; fi
    kill -CONT $bp 2>/dev/null # gone already when it was the one killed
    { wait $bp; } 2>/dev/null
    krc=$?
    for i in $(seq 250); do alive $sp || break; sleep 0.02; done
    check '! alive $sp && [ ! -e /dev/shm/zpbench-$bp-compressed ]'
}
kill_during_ipc server
check '[ $krc -eq 1 ] && grep -q "^zipage bench throughput: --ipc: .*engine" "$d/kerr"'
kill_during_ipc bench
check '[ $krc -eq 137 ]'
# --ipc needs the tokenizer zipage serve loads
mkdir "$d/notok" && cp "$d/m/config.json" "$d/notok/"
err=$($ZP $B --model "$d/notok" --requests 2 --prompt 8 --gen 4 --ipc 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 2 ] && echo "$err" | grep -q -- "--ipc: zipage serve needs the model.s tokenizer"'
check 'echo "$err" | grep -qF "loading tokenizer from $d/notok"'
# a server that cannot start: its own message, then the benchmark's
err=$($ZP $B --requests 2 --prompt 8 --gen 4 --ipc --set ipc_group=zp-no-such-group 2>&1 >/dev/null)
rc=$?
check '[ $rc -eq 1 ] && echo "$err" | grep -q "serve (pid [0-9]*) exited with status 2 before it was ready"'
check 'echo "$err" | grep -q "no group '"'"'zp-no-such-group'"'"'"'

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
