#!/usr/bin/env bash
# Runs every test program (build/asan/tests/test_*) and shell test (tests/test_*.sh).
# A test exits 0 = pass, 77 = skip, anything else = fail. Ends with `N passed, N failed, N skipped`.
set -u
O=${1:-build}
export ZP_BUILD=$O ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
       UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
pass=0 fail=0 skip=0 failed=()
mkdir -p "$O/test-logs"
run_one() {
    local name=$1; shift
    local log="$O/test-logs/$name.log" t0=$SECONDS
    timeout 900 "$@" >"$log" 2>&1
    local rc=$?
    local dt=$((SECONDS - t0))
    case $rc in
        0) pass=$((pass + 1)); printf 'PASS %-40s %3ds\n' "$name" "$dt" ;;
        77) skip=$((skip + 1)); printf 'SKIP %-40s %s\n' "$name" "$(grep -m1 '^SKIP' "$log" | cut -c6-)" ;;
        *) fail=$((fail + 1)); failed+=("$name"); printf 'FAIL %-40s (exit %d)\n' "$name" "$rc"
           tail -n 25 "$log" | sed 's/^/    | /' ;;
    esac
}
for t in "$O"/asan/tests/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t" .sh)" bash "$t"
done
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
