#!/usr/bin/env bash
# test_gguf_model: --model FILE.gguf (engine/ggufmodel.c) against the same random Llama-3,
# Qwen2 and Qwen3 models loaded from their directories (F32 files: logits equal within 1e-6,
# Llama-3's rope_freqs.weight applied), and broken files refused with an error naming the key
# or tensor (tests/gguf_model_check.py). Needs the environment of tools/pyenv.sh (gguf-py
# writes the files); skips when it cannot be made.
set -u
Z=${ZP_BUILD:-build}/zipage
[ -x "$Z" ] || { echo "SKIP zipage not built"; exit 77; }
T=$(mktemp -d /tmp/zp_test_gguf_model.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/need_pyenv.sh
"$py" tests/gguf_model_check.py "$Z" "$T" >"$T/out" 2>"$T/err"
rc=$?
cat "$T/out"
if [ $rc -ne 0 ]; then
    echo "FAIL test_gguf_model (exit $rc)"
    tail -n 20 "$T/err"
    exit 1
fi
echo "PASS test_gguf_model"
