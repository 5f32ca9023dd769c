#!/usr/bin/env bash
# accuracy-table.sh: the published accuracy table of docs/ACCURACY.md on the test splits (the
# configuration was chosen on the dev splits, tools/accuracy-sweep.sh): zipage-reasoner's
# greedy accuracy on the first 100 problems of each family's test split, block size 32, for
#   default+protect   the default configuration, the prompt protected (400 / 256 tokens max)
#   default           the default configuration, nothing protected
#   reference+protect the reference's scoring (carried score on, protect_recent 0), protected
#   reference         the reference's scoring, nothing protected
# at family 1's budgets 32, 24, 20 and 16 blocks (20 = 25% of the trace + the prompt) and
# family 2's 35, 17, 13, 9 and 8 blocks (50%, 25%, 19%, 13.5% and 12% of the mean trace; 8
# blocks only unprotected: 256 protected tokens leave nothing to evict there), and at full KV.
# JOBS runs at once (default 8; on the GPU each takes 0.5/JOBS of the free memory).
#   usage: accuracy-table.sh ZIPAGE OUT_DIR BACKEND [JOBS]
# Writes OUT_DIR/table-fF-CONFIG.{md,log}.
set -u
ZP=$1 OUT=$2 BE=$3 JOBS=${4:-8}
mkdir -p "$OUT"
mem=$(python3 -c "print(round(0.5 / $JOBS, 3))")
common="bench accuracy --model models/zipage-reasoner --n 100 --set block_size=32 --backend $BE"
[ "$BE" = cuda ] && common="$common --set gpu_memory_utilization=$mem"
ref="--set protect_recent=0 --set use_global_score=true"
jobs=$(mktemp) && trap 'rm -f "$jobs"' EXIT
for f in 1 2; do
    if [ $f = 1 ]; then d=models/zipage-reasoner/test.jsonl b=32b,24b,20b,16b p=400
    else d=tools/task/data/task2-test.jsonl b=35b,17b,13b,9b p=256; fi
    u=$b && [ $f = 2 ] && u=$b,8b
    pr="--set protect_prompt=$p --set protect_prompt_max=$p"
    echo "$common --data $d --budgets full,$b $pr --md $OUT/table-f$f-default+protect.md" >>"$jobs"
    echo "$common --data $d --budgets $u --md $OUT/table-f$f-default.md" >>"$jobs"
    echo "$common --data $d --budgets $b $pr $ref --md $OUT/table-f$f-reference+protect.md" >>"$jobs"
    echo "$common --data $d --budgets $u $ref --md $OUT/table-f$f-reference.md" >>"$jobs"
done
xargs -P "$JOBS" -I{} bash -c 'l=$(sed -E "s/.*--md ([^ ]*)\.md.*/\1.log/" <<<"$1"); "$0" $1 >"$l" 2>&1 ||
    { echo "FAILED: $1"; tail -3 "$l"; exit 1; }' "$ZP" {} <"$jobs"
