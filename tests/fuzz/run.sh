#!/usr/bin/env bash
# Runs libFuzzer targets for a bounded time each, one after the other, and prints one line
# per target and a total. Used by `make fuzz` and tests/test_fuzz.sh.
#   tests/fuzz/run.sh BUILD SECONDS WORKDIR [NAME...]     (default: every tests/fuzz/fuzz_*.c)
# Target NAME is BUILD/fuzz/fuzz_NAME. New inputs go to WORKDIR/NAME, the first corpus
# directory; the committed seeds tests/fuzz/corpus/NAME are the second, which libFuzzer only
# reads. A finding (crash, sanitizer report, leak, timeout over 10 s, RSS over 2 GiB) stops
# that target, saves the input as BUILD/fuzz/artifacts/NAME-crash-* (or leak-, timeout-, oom-)
# and makes the script exit 1 after the others ran. Logs: BUILD/fuzz/logs/NAME.log.
# -close_fd_mask=1 closes only stdout: a target's own stderr line before abort() stays in the log.
set -u
O=$1 secs=$2 work=$3
shift 3
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do
        [ -f "$f" ] || continue
        n=${f#tests/fuzz/fuzz_}
        names+=("${n%.c}")
    done
fi
mkdir -p "$O/fuzz/logs" "$O/fuzz/artifacts"
# The test runner's ASAN_OPTIONS/UBSAN_OPTIONS (tests/run.sh) hold: leaks and UB are findings.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
       UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
printf '%-14s %6s %10s %8s %14s %6s  %s\n' target seconds execs exec/s corpus cov result
failed=() t_all=$SECONDS
for name in "${names[@]}"; do
    bin="$O/fuzz/fuzz_$name" log="$O/fuzz/logs/$name.log"
    if [ ! -x "$bin" ]; then
        printf '%-14s not built (%s missing: make fuzz-build)\n' "$name" "$bin"
        failed+=("$name")
        continue
    fi
    mkdir -p "$work/$name"
    seeds=()
    [ -d "tests/fuzz/corpus/$name" ] && seeds=("tests/fuzz/corpus/$name")
    t0=$SECONDS
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -close_fd_mask=1 \
        -print_final_stats=1 -artifact_prefix="$O/fuzz/artifacts/$name-" \
        "$work/$name" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    # The last status line: "#N DONE cov: C ft: F corp: UNITS/BYTES ..." (or the last pulse).
    status=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$status")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
    if [ "$rc" -eq 0 ]; then result=ok; else
        result="FINDING (exit $rc): $(grep -m1 -oE "Test unit written to [^ ]*" "$log" || echo "see $log")"
        failed+=("$name")
    fi
    printf '%-14s %6d %10s %8s %14s %6s  %s\n' "$name" $((SECONDS - t0)) "${execs:-?}" \
        "${rate:-?}" "${corp:-?}" "${cov:-?}" "$result"
    if [ "$rc" -ne 0 ]; then
        grep -E -A30 '^==[0-9]+==ERROR|runtime error|^==[0-9]+== ERROR|ALARM|out-of-memory|fuzz_' \
            "$log" | head -n 25 | sed 's/^/    | /'
    fi
done
echo "fuzzing: ${#names[@]} targets, $((SECONDS - t_all)) s, ${#failed[@]} with findings${failed[*]:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
