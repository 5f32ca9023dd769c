#!/usr/bin/env bash
# test_accuracy_baselines: `zipage bench accuracy --baselines` end to end on the shipped model
# (CPU backend, the optimised build, 2 dev problems at full KV and 40 blocks of 32, about a
# minute on 2 cores): one row per eviction policy (score, streaming, random, oracle) with the
# same budget and KV peak, accuracy with a 95% Wilson interval, the markdown table, the
# oracle's recording run (its tokens equal to the full-KV row's, or the bench fails), and
# refusals naming the option.
set -u
ZP=${ZP_BUILD:-build}/zipage
M=models/zipage-reasoner
md=$(mktemp) && trap 'rm -f "$md" "$md.err"' EXIT
"$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 2 --set block_size=32 \
    --budgets full,40b --baselines streaming,random,oracle --md "$md" 2>"$md.err" ||
    { cat "$md.err"; exit 1; }
cat "$md" "$md.err"
grep -q "oracle: recorded in .*, tokens equal to the full-KV row" "$md.err" ||
    { echo "no recording run"; exit 1; }
for pol in score streaming random oracle; do
    grep -Eq "^\| 40b \| $pol \| 1280 \| [0-2]/2 = [0-9.]+% \[[0-9.]+, [0-9.]+\] \| [0-9]+ \| [0-9]+ \| 41\.0 / 41 \|" "$md" ||
        { echo "no $pol row of 1280 tokens and 41 blocks at most"; exit 1; }
done
[ "$(grep -c '^| 40b' "$md")" = 4 ] || { echo "expected 4 rows"; exit 1; }
out=$("$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 1 --budgets 40b \
    --baselines oracle 2>&1) && exit 1
grep -q -- "--baselines oracle: needs 'full' first" <<<"$out" || { echo "$out"; exit 1; }
out=$("$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 1 --budgets full \
    --baselines lru 2>&1) && exit 1
grep -q -- "--baselines: 'lru' is not streaming, random or oracle" <<<"$out" || { echo "$out"; exit 1; }
out=$("$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 1 --budgets full,40b \
    --baselines oracle --backend cuda 2>&1) && exit 1
grep -q -- "--baselines oracle: the attention is recorded on the cpu backend only" <<<"$out" ||
    { echo "$out"; exit 1; }
# eviction=oracle outside the benchmark: a request without a record is refused
out=$("$ZP" generate --model "$M" --prompt "x" --max-tokens 4 --set compress=true \
    --set eviction=oracle 2>&1) && exit 1
grep -q "no oracle table" <<<"$out" || { echo "$out"; exit 1; }
out=$("$ZP" bench accuracy --model "$M" --data "$M/dev.jsonl" --n 1 --budgets 40b \
    --set eviction=lru 2>&1) && exit 1
grep -q "eviction" <<<"$out" || { echo "$out"; exit 1; }
exit 0
