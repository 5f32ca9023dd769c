#!/usr/bin/env bash
# test_accuracy_baselines: `zipage bench accuracy --baselines` end to end on the shipped model
# (CPU backend, the optimised build, 2 dev problems at 40 blocks of 32, about 30 s on 2 cores):
# one row per eviction policy (score, streaming, random) with the same budget and KV peak,
# accuracy with a 95% Wilson interval, the markdown table, and refusals naming the option.
set -u
ZP=${ZP_BUILD:-build}/zipage
M=models/zipage-reasoner
md=$(mktemp) && trap 'rm -f "$md"' EXIT
"$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 2 --set block_size=32 \
    --budgets 40b --baselines streaming,random --md "$md" || exit 1
cat "$md"
for pol in score streaming random; do
    grep -Eq "^\| 40b \| $pol \| 1280 \| [0-2]/2 = [0-9.]+% \[[0-9.]+, [0-9.]+\] \| [0-9]+ \| [0-9]+ \| 41\.0 / 41 \|" "$md" ||
        { echo "no $pol row of 1280 tokens and 41 blocks at most"; exit 1; }
done
[ "$(grep -c '^| 40b' "$md")" = 3 ] || { echo "expected 3 rows"; exit 1; }
out=$("$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 1 --budgets 40b \
    --baselines oracle 2>&1) && exit 1
grep -q -- "--baselines: 'oracle' is not streaming or random" <<<"$out" || { echo "$out"; exit 1; }
out=$("$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 1 --budgets 40b \
    --set eviction=lru 2>&1) && exit 1
grep -q "eviction" <<<"$out" || { echo "$out"; exit 1; }
exit 0
