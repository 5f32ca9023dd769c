#!/usr/bin/env bash
# test_hf_parity: zipage's CPU backend against Hugging Face transformers (tools/hf_parity.py,
# docs/PARITY.md): seeded random Qwen3, Qwen2 and Llama-3 models from `zipage mkmodel`, fp32;
# the logits of every position of a 256-id prompt (one prefill, and 100 prefilled + 156 decode
# steps) within 1e-4, and 128 greedy tokens identical. Runs the non-ASan build/zipage (ASan
# would only slow the Python side's calls) with the pinned environment of tools/pyenv.sh;
# skips when that environment cannot be made.
set -u
Z=${ZP_BUILD:-build}/zipage
[ -x "$Z" ] || { echo "SKIP zipage not built"; exit 77; }
T=$(mktemp -d /tmp/zp_test_hf_parity.XXXXXX)
trap 'rm -rf "$T"' EXIT
py=$(bash tools/pyenv.sh 2>"$T/pyenv.err")
rc=$?
if [ $rc -eq 2 ]; then
    echo "SKIP no Python environment: $(tail -n 1 "$T/pyenv.err")"
    exit 77
fi
[ $rc -eq 0 ] || { echo "FAIL: tools/pyenv.sh exit $rc"; cat "$T/pyenv.err"; exit 1; }
HF_HUB_DISABLE_PROGRESS_BARS=1 "$py" tools/hf_parity.py "$Z" "$T/parity.json" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ]; then
    echo "FAIL: hf_parity.py exit $rc"
    tail -n 30 "$T/err"
    exit 1
fi
echo "PASS test_hf_parity"
