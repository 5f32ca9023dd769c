#!/usr/bin/env bash
# test_gguf_cli: `zipage gguf` on a small GGUF written here byte by byte (one string key, one
# 4-element F32 tensor): the dump, --dequant (the tensor's bytes back) and --model FILE; then
# damaged files (truncated, bad magic, version 2, an unknown tensor type) and bad use (no file,
# a missing file or tensor, an unknown option, an unwritable output): exit status 2 and a
# message "zipage gguf: FILE: ..." naming what is wrong.
set -u
Z=${ZP_BUILD:-build}/asan/zipage
[ -x "$Z" ] || { echo "SKIP $Z not built"; exit 77; }
d=$(mktemp -d /tmp/zp_test_gguf_cli.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
# le VALUE BYTES: VALUE as BYTES little-endian bytes
le() {
    local s="" i
    for ((i = 0; i < $2; i++)); do s+=$(printf '\\x%02x' $((($1 >> (8 * i)) & 255))); done
    printf "%b" "$s"
}
str() { le ${#1} 8; printf '%s' "$1"; }
# gguf VERSION TENSOR_TYPE: header, general.architecture = "llama", tensor w [4] at 0, padding
# to 32 bytes (the infos end at byte 102), data 1.0 2.0 -0.5 3.0
gguf() {
    printf 'GGUF'; le "$1" 4; le 1 8; le 1 8
    str general.architecture; le 8 4; str llama
    str w; le 1 4; le 4 8; le "$2" 4; le 0 8
    printf '%b' "$(printf '\\x00%.0s' $(seq 26))"
    le 0x3f800000 4; le 0x40000000 4; le 0xbf000000 4; le 0x40400000 4
}
gguf 3 0 >"$d/ok.gguf"
[ "$(stat -c %s "$d/ok.gguf")" = 144 ] || { echo "FAIL: writer made $(stat -c %s "$d/ok.gguf") bytes"; exit 1; }
out=$("$Z" gguf "$d/ok.gguf" 2>&1) || { echo "FAIL dump: $out"; fail=1; }
for want in "GGUF version 3, 1 keys, 1 tensors, alignment 32, data section at byte 128 (16 bytes)" \
    'string            1  general.architecture = "llama"' " F32    4 " "0           16  w"; do
    grep -qF -- "$want" <<<"$out" || { echo "FAIL dump lacks '$want':"; echo "$out"; fail=1; }
done
"$Z" gguf --model "$d/ok.gguf" --dequant w "$d/w.f32" >/dev/null || { echo "FAIL --dequant"; fail=1; }
tail -c 16 "$d/ok.gguf" | cmp -s - "$d/w.f32" || { echo "FAIL --dequant: other values"; fail=1; }

head -c 140 "$d/ok.gguf" >"$d/short.gguf"
{ printf 'GGUX'; tail -c +5 "$d/ok.gguf"; } >"$d/magic.gguf"
gguf 2 0 >"$d/v2.gguf"
gguf 3 99 >"$d/type.gguf"
# expect ARGS... -- MESSAGE: exit status 2 and MESSAGE in the error line
expect() {
    local args=() msg err rc
    while [ "$1" != -- ]; do args+=("$1"); shift; done
    msg=$2
    err=$("$Z" gguf "${args[@]}" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 2 ] || ! grep -qF -- "zipage gguf: $msg" <<<"$err"; then
        echo "FAIL zipage gguf ${args[*]}: exit $rc, '$err' (want 2, 'zipage gguf: $msg')"
        fail=1
    fi
}
expect "$d/short.gguf" -- "$d/short.gguf: tensor 'w': data [0, +16) lies outside the data section"
expect "$d/magic.gguf" -- "$d/magic.gguf: not a GGUF file"
expect "$d/v2.gguf" -- "$d/v2.gguf: GGUF version 2 is not supported (zipage reads version 3)"
expect "$d/type.gguf" -- "$d/type.gguf: tensor 'w': unknown tensor type 99"
expect "$d/none.gguf" -- "$d/none.gguf: No such file"
expect "$d/ok.gguf" --dequant x "$d/x.f32" -- "$d/ok.gguf: no tensor 'x'"
expect "$d/ok.gguf" --dequant w "$d/no/dir/w.f32" -- "$d/no/dir/w.f32: cannot create"
expect "$d/ok.gguf" --dequant w -- "--dequant needs a tensor name and an output file"
expect "$d/ok.gguf" --bogus -- "unknown option '--bogus'"
expect -- "usage: zipage gguf FILE"
[ $fail -eq 0 ] || exit 1
echo "PASS test_gguf_cli"
