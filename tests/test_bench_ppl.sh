#!/usr/bin/env bash
# test_bench_ppl: `zipage bench ppl` on a tiny random model on the CPU over a license text: the
# perplexity table has the full row and, per budget, the score and streaming rows, with finite
# perplexities, an agreement in [0, 1] and compressions in every compressed row; the full-KV
# perplexity past the budget is the same for both policies at a budget and differs between
# budgets; the full row's perplexity does not depend on the budgets asked for; --md writes the same rows; --probe prints
# recall rows without and with the fact protected; bad options are refused by name.
set -u
ZP=${ZP_BUILD:-build}/asan/zipage
[ -x "$ZP" ] || { echo "SKIP zipage not built"; exit 77; }
T=/usr/share/common-licenses/GPL-3
[ -f "$T" ] || { echo "SKIP $T not found"; exit 77; }
d=$(mktemp -d /tmp/zp_bench_ppl.XXXXXX)
trap 'rm -rf "$d"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }
$ZP mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$d/m" >/dev/null || exit 1
B="bench ppl --model $d/m --backend cpu --text $T --n 2 --window 256 --set block_size=16"

$ZP $B --budgets 50%,4b --md "$d/t.md" >"$d/out" 2>"$d/err"
rc=$?
cat "$d/out"
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
check '[ "$(grep -c "^full " "$d/out")" = 1 ]'
check '[ "$(grep -cE "^(50%|4b) .* score +[0-9.]+ +[0-9.]+ +[0-9.]+ +[01]\.[0-9]{4} +[1-9][0-9.]*$" "$d/out")" = 2 ]'
check '[ "$(grep -cE "^(50%|4b) .* streaming +[0-9.]+ +[0-9.]+ +[0-9.]+ +[01]\.[0-9]{4} +[1-9][0-9.]*$" "$d/out")" = 2 ]'
# full KV over the same positions: one value per budget, whatever the policy
check '[ "$(grep "^50% " "$d/out" | awk "{print \$7}" | sort -u | wc -l)" = 1 ]'
check '[ "$(grep "^50% " "$d/out" | awk "{print \$7}")" != "$(grep "^4b " "$d/out" | awk "{print \$7}" | head -1)" ]'
check 'grep -q "^| budget | blocks | policy | ppl (all)" "$d/t.md" && [ "$(grep -c "^| 50%" "$d/t.md")" = 2 ]'
full1=$(grep "^full " "$d/out" | awk "{print \$4}")
$ZP $B --budgets 25% >"$d/out2" 2>/dev/null
check '[ "$(grep "^full " "$d/out2" | awk "{print \$4}")" = "$full1" ]'

$ZP $B --budgets 25% --probe >"$d/probe" 2>"$d/err"
rc=$?
cat "$d/probe"
check '[ $rc -eq 0 ] || { cat "$d/err"; false; }'
check '[ "$(grep -cE "^25% .* (score|streaming) +no +[0-9]+/2 " "$d/probe")" = 2 ]'
check '[ "$(grep -cE "^25% .* (score|streaming) +yes +[0-9]+/2 " "$d/probe")" = 2 ]'

$ZP $B --budgets 25x >/dev/null 2>"$d/err"
check '[ $? -eq 2 ] && grep -q "budgets" "$d/err"'
$ZP $B --baselines bogus >/dev/null 2>"$d/err"
check '[ $? -eq 2 ] && grep -q "baselines" "$d/err"'
$ZP $B --n 1000 >/dev/null 2>"$d/err"
check '[ $? -eq 2 ] && grep -q "fewer than --n" "$d/err"'
[ $fail -eq 0 ] && echo PASS || echo FAIL
exit $fail
