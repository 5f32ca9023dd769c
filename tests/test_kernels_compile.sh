#!/usr/bin/env bash
# Every GPU kernel compiles with NVRTC for sm_90 at every head dim, block size and GQA group
# (`zipage kernels --compile-only`), with no GPU; every source of rtc_kernels/ is among them.
# NVRTC comes from a CUDA install when there is one, else from the nvidia-cuda-nvrtc wheel that
# the Makefile installs into build/nvrtc-venv, where the binary looks beside itself
# (drv/culib.c). SKIP only where neither can be had. A second run must take every CUBIN from
# the cache.
set -u
B=${ZP_BUILD:-build}
ZP=$B/zipage
[ -x "$ZP" ] || { echo "FAIL: $ZP not built"; exit 1; }
cache=$(mktemp -d); trap 'rm -rf "$cache"' EXIT

probe=$("$ZP" kernels --compile-only --only layer.cu --quiet --set kernel_cache_dir=off 2>&1)
if echo "$probe" | grep -q 'NVRTC not found'; then
    echo "SKIP no NVRTC: no CUDA install and no nvidia-cuda-nvrtc wheel in $B/nvrtc-venv"; exit 77
fi

out=$("$ZP" kernels --compile-only --arch sm_90 --set kernel_cache_dir="$cache" 2>&1) || {
    echo "$out"; echo "FAIL: kernels do not compile"; exit 1; }
echo "$out" | tail -n 3
echo "$out" | grep -qE '^[1-9][0-9]* kernels compiled, 0 from the cache' || { echo "FAIL: nothing compiled"; exit 1; }
n=$(echo "$out" | sed -n 's/^\([0-9]*\) kernels compiled.*/\1/p')
# every kernel source of rtc_kernels/ (compress_select.cu included) is among them
for f in rtc_kernels/*.cu; do
    echo "$out" | grep -q "^$(basename "$f") " || { echo "FAIL: $(basename "$f") was not compiled"; exit 1; }
done

again=$("$ZP" kernels --compile-only --arch sm_90 --set kernel_cache_dir="$cache" 2>&1) || {
    echo "$again"; echo "FAIL: second run"; exit 1; }
echo "$again" | grep -q "^0 kernels compiled, $n from the cache" || {
    echo "$again" | tail -n 2; echo "FAIL: second run did not use the cache"; exit 1; }

# An unsupported architecture is a clear error naming the supported list.
err=$("$ZP" kernels --compile-only --arch sm_61 2>&1) && { echo "FAIL: sm_61 accepted"; exit 1; }
echo "$err" | grep -q 'cannot compile for sm_61; it supports:' || { echo "$err"; echo "FAIL: sm_61 message"; exit 1; }
echo "PASS: $n kernels compile for sm_90; cache reused"
