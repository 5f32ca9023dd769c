#!/usr/bin/env bash
# test_generate_cli: `zipage generate` end to end: --json fields, seed determinism, errors
# (missing model dir, prompt longer than max_model_len, bad option, bad JSONL, protect_prompt
# over its bound or a bound over the budget) exit with 2
# and a message, and --requests prints one line per request plus a summary on stderr.
set -u
ZP=${ZP_BUILD:-build}/asan/zipage
d=$(mktemp -d /tmp/zp_gen_cli.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }
$ZP mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$d/m" >/dev/null || exit 1
S="--set block_size=16 --set max_model_len=64 --set kv_memory_mb=4"

out=$($ZP generate --model "$d/m" $S --prompt-ids "1 2 3" --max-tokens 7 --ignore-eos --json)
check '[ "$(echo "$out" | grep -o "\"token_ids\":\[[0-9,]*\]" | tr -cd , | wc -c)" = 6 ]'
check 'echo "$out" | grep -q "\"prompt_tokens\":3"'
check 'echo "$out" | grep -q "\"finish_reason\":\"length\""'
check 'echo "$out" | grep -q "\"kv_blocks_peak\":1"'
a=$($ZP generate --model "$d/m" $S --prompt-ids "5 6" --max-tokens 20 --temperature 1 --seed 4 --ignore-eos)
b=$($ZP generate --model "$d/m" $S --prompt-ids "5 6" --max-tokens 20 --temperature 1 --seed 4 --ignore-eos)
c=$($ZP generate --model "$d/m" $S --prompt-ids "5 6" --max-tokens 20 --temperature 1 --seed 5 --ignore-eos)
check '[ "$a" = "$b" ] && [ "$a" != "$c" ]'

expect_2() { # args... ; message pattern in $pat
    local err rc
    err=$("$@" 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 2 ] || ! echo "$err" | grep -q "$pat"; then
        echo "FAILED: exit $rc, '$err' (wanted 2 and /$pat/) for: $*"; fail=1; fi
}
pat="no-such-dir" expect_2 $ZP generate --model "$d/no-such-dir" --prompt-ids "1"
pat="max_model_len 64" expect_2 $ZP generate --model "$d/m" $S --prompt-ids "$(seq -s ' ' 1 64)"
pat="unknown option '--bogus'" expect_2 $ZP generate --model "$d/m" $S --prompt-ids "1" --bogus
pat="outside the vocabulary" expect_2 $ZP generate --model "$d/m" $S --prompt-ids "1 999"
pat="top_p" expect_2 $ZP generate --model "$d/m" $S --prompt-ids "1" --top-p 0
# protected prompts: compression with M 2, qcl 4 (32 kept tokens), at most 8 protected
P="--set compress=true --set max_cache_blocks_per_seq=2 --set query_cache_len=4 --set protect_prompt_max=8"
pat="protect_prompt 9 out of range \[0, 8\]" expect_2 $ZP generate --model "$d/m" $S $P --prompt-ids "1 2 3 4 5 6 7 8 9 10" --protect-prompt 9
pat="key 'protect_prompt_max'" expect_2 $ZP generate --model "$d/m" $S $P --set protect_prompt_max=28 --prompt-ids "1"
out=$($ZP generate --model "$d/m" $S $P --prompt-ids "1 2 3 4 5 6 7 8 9 10" --protect-prompt 8 --max-tokens 50 --ignore-eos --json)
check 'echo "$out" | grep -q "\"compressions\":[1-9]"'
printf '{"id":"a","prompt_ids":[1,2],"max_tokens":3}\n{"id":"b","prompt_ids":[1,2,\n' > "$d/bad.jsonl"
pat="bad.jsonl:2" expect_2 $ZP generate --model "$d/m" $S --requests "$d/bad.jsonl"

cat > "$d/r.jsonl" <<'J'
{"id": "x", "prompt_ids": [1, 2, 3], "max_tokens": 4, "ignore_eos": true}
{"id": 7, "prompt_ids": [4, 5], "max_tokens": 6, "temperature": 0.7, "seed": 3, "ignore_eos": true, "arrival_step": 3}

{"id": "long", "prompt_ids": [9, 8, 7, 6, 5, 4, 3, 2, 1], "max_tokens": 2, "ignore_eos": true}
J
$ZP generate --model "$d/m" $S --requests "$d/r.jsonl" >"$d/out" 2>"$d/err"
check '[ $? -eq 0 ] && [ "$(wc -l < "$d/out")" = 3 ]'
check 'grep -q "\"id\":\"x\"" "$d/out" && grep -q "\"id\":\"7\"" "$d/out"'
check 'grep -q "\"requests\":3" "$d/err" && grep -q "\"completion_tokens\":12" "$d/err"'
check 'grep -q "prefix_cache_hit_rate" "$d/err" && grep -q "preemptions" "$d/err"'
# the single-request path gives the same ids as the batch path for request x
one=$($ZP generate --model "$d/m" $S --prompt-ids "1 2 3" --max-tokens 4 --ignore-eos --json | grep -o '"token_ids":\[[0-9,]*\]')
check 'grep -qF "$one" "$d/out"'
exit $fail
