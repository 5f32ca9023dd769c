#!/usr/bin/env bash
# test_gguf_dequant: zipage's GGUF reader against gguf-py 0.19 (the pinned tools/pyenv.sh
# environment). tests/gguf_dequant_ref.py writes a GGUF with gguf-py's GGUFWriter (every value
# type, string and nested arrays, alignment 64; tensors of every type zipage reads: quantized
# by gguf-py where it can, random blocks with finite scales where it cannot, every f16 and
# bf16 bit pattern) and gguf.quants.dequantize of each tensor. `zipage gguf` must list the same
# keys (type, count) and tensors (type, dims, offset, bytes) as GGUFReader reads, and
# `zipage gguf --dequant` must give every tensor bit for bit. Runs the non-ASan build/zipage
# (tests/test_gguf.c covers the reader under ASan); skips without the Python environment.
set -u
cd "$(dirname "$0")/.."
Z=${ZP_BUILD:-build}/zipage
[ -x "$Z" ] || { echo "SKIP zipage not built"; exit 77; }
T=$(mktemp -d /tmp/zp_test_gguf_dequant.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/need_pyenv.sh
"$py" tests/gguf_dequant_ref.py "$T" 2>"$T/err" ||
    { echo "FAIL: gguf_dequant_ref.py"; tail -n 20 "$T/err"; exit 1; }
"$Z" gguf "$T/ref.gguf" >"$T/dump" 2>"$T/err" || { echo "FAIL: zipage gguf: $(cat "$T/err")"; exit 1; }
fail=0
# The key table: "#  type  count  key = value"; the tensor table: "#  type  dims...  offset
# bytes  name" with dims as "ne0 x ne1 ...".
awk '/^ +# +type +count/ {k = 1; next} /^$/ {k = 0} k {print $4, $2, $3}' "$T/dump" >"$T/keys.got"
awk '/^ +# +type +dims/ {k = 1; next} k {
        d = $3; for (i = 4; i <= NF - 3; i++) if ($i != "x") d = d "," $i
        print $NF, $2, d, $(NF - 2), $(NF - 1) }' "$T/dump" >"$T/tensors.got"
for f in keys tensors; do
    if ! diff "$T/$f.txt" "$T/$f.got" >"$T/$f.diff"; then
        echo "FAIL: zipage gguf lists other $f than gguf-py (< gguf-py, > zipage):"
        head -n 20 "$T/$f.diff"
        fail=1
    fi
done
n=0
while read -r name type _; do
    if ! "$Z" gguf "$T/ref.gguf" --dequant "$name" "$T/got.f32" >/dev/null 2>"$T/err"; then
        echo "FAIL $name ($type): $(cat "$T/err")"
        fail=1
    elif ! cmp -s "$T/got.f32" "$T/$name.f32"; then
        byte=$(cmp "$T/got.f32" "$T/$name.f32" 2>&1 | sed -n 's/.* byte \([0-9]*\).*/\1/p')
        echo "FAIL $name ($type): differs from gguf.quants.dequantize at element $(((${byte:-1} - 1) / 4))"
        fail=1
    fi
    n=$((n + 1))
done <"$T/tensors.txt"
[ "$n" -ge 14 ] || { echo "FAIL: only $n tensors listed"; fail=1; }
[ $fail -eq 0 ] || exit 1
echo "PASS test_gguf_dequant ($n tensors bit-identical to gguf-py, keys and tensor directory equal)"
