#!/usr/bin/env bash
# test_fuzz: every libFuzzer target (tests/fuzz/fuzz_*.c) runs FUZZ_SECONDS (default 60) from
# its committed seed corpus; any finding fails the test (report and input path in the log).
# New corpus entries go to a temporary directory, never into tests/fuzz/corpus/. Skips only
# when clang's libFuzzer runtime is missing (then `make` built no targets); a target that
# should have been built but was not is a failure. See docs/FUZZING.md.
set -u
O=${ZP_BUILD:-build}
secs=${FUZZ_SECONDS:-60}
cc=${FUZZ_CC:-clang}
cd "$(dirname "$0")/.."
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
if ! printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ return 0; }\n' |
    "$cc" -x c -fsanitize=fuzzer -o "$probe/probe" - >/dev/null 2>&1; then
    echo "SKIP $cc with libFuzzer (-fsanitize=fuzzer) not found: apt-get install clang libclang-rt-14-dev"
    exit 77
fi
tests/fuzz/run.sh "$O" "$secs" "$probe"
