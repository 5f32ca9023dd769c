#!/usr/bin/env bash
# accuracy-sweep.sh: the measurement behind the default compression configuration
# (docs/ACCURACY.md, "Choosing the default"). On the dev splits only, never the test splits:
# zipage-reasoner's greedy accuracy on the first 100 problems of each family's dev split, block
# size 32, for each configuration below, at budgets around the issue's targets:
#   family 1 (models/zipage-reasoner/dev.jsonl, prompts 300-388 tokens, traces 1,136 on
#     average): 32, 24, 20 and 16 blocks (20 = 25% of the trace + the prompt);
#   family 2 (tools/task/data/task2-dev.jsonl, prompts 140-250, traces 2,233): 35, 17, 13 and
#     9 blocks (50%, 25%, 18.75% and 12.5% of the trace);
# and both at full KV. "protect" covers each family's longest prompt (400 and 256 tokens: a
# request's protect = min(prompt length, 400 or 256)); "noglobal" turns the carried score off;
# "rN" sets protect_recent=N; the other keys keep their defaults. One bench run per family,
# configuration and budget, JOBS at once (default 4; on the GPU each takes 0.5/JOBS of the free
# memory). A combination the engine refuses (protection leaving nothing to evict) is shown as
# "refused"; docs/ACCURACY.md's run predates the window's cap, when large windows were refused too.
#   usage: accuracy-sweep.sh ZIPAGE OUT_DIR BACKEND [JOBS]
# Writes OUT_DIR/sweep-FAMILY-CONFIG-BUDGET.{md,log} (bench accuracy's table and log) and
# OUT_DIR/sweep.md (a row per family and configuration: accuracy at each budget).
set -u
ZP=$1 OUT=$2 BE=$3 JOBS=${4:-4} N=${ZP_SWEEP_N:-100} # ZP_SWEEP_N: fewer problems, a smoke run
F1=models/zipage-reasoner/dev.jsonl F2=tools/task/data/task2-dev.jsonl
mkdir -p "$OUT"
mem=$(python3 -c "print(round(0.5 / $JOBS, 3))")
common="bench accuracy --model models/zipage-reasoner --n $N --set block_size=32 --backend $BE"
[ "$BE" = cuda ] && common="$common --set gpu_memory_utilization=$mem"
configs=(
    "reference|"
    "noglobal|G"
    "protect|P"
    "protect-noglobal|P G"
    "protect-noglobal-nopool|P G --set pooling_size=0"
    "r64-noglobal|G --set protect_recent=64"
    "r128-noglobal|G --set protect_recent=128"
    "r256-noglobal|G --set protect_recent=256"
    "protect-r64-noglobal|P G --set protect_recent=64"
    "protect-r128-noglobal|P G --set protect_recent=128"
    "protect-r256-noglobal|P G --set protect_recent=256"
    "protect-r128|P --set protect_recent=128"
)
jobs=$(mktemp) && trap 'rm -f "$jobs"' EXIT
for fam in 1 2; do
    if [ $fam = 1 ]; then data=$F1 budgets="32b 24b 20b 16b" p=400
    else data=$F2 budgets="35b 17b 13b 9b" p=256; fi
    echo "$ZP $common --data $data --budgets full --md $OUT/sweep-f$fam-full-full.md" >>"$jobs"
    for c in "${configs[@]}"; do
        name=${c%%|*} sets=${c#*|}
        sets=${sets/P/--set protect_prompt=$p --set protect_prompt_max=$p}
        sets=${sets/G/--set use_global_score=false}
        for b in $budgets; do
            echo "$ZP $common --data $data --budgets $b $sets --md $OUT/sweep-f$fam-$name-$b.md" >>"$jobs"
        done
    done
done
# each run logs to its table's name with .log; a refusal at start-up is not a failure here
fail=0
xargs -P "$JOBS" -I{} bash -c 'l=$(sed -E "s/.*--md ([^ ]*)\.md.*/\1.log/" <<<"$1"); $1 >"$l" 2>&1 ||
    grep -q "leave nothing to evict\|leaves nothing to evict" "$l" ||
    { echo "FAILED: $1"; tail -3 "$l"; exit 1; }' _ {} <"$jobs" || fail=1
python3 - "$OUT" "$N" <<'PY'
import glob, os, re, sys
out, N = sys.argv[1], sys.argv[2]
rows = {}
for p in sorted(glob.glob(os.path.join(out, "sweep-f*.log"))):
    fam, cfg, b = re.match(r"sweep-f(\d)-(.*)-(full|\d+b)\.log", os.path.basename(p)).groups()
    cell = "refused" if "nothing to evict" in open(p).read() else "failed"
    md = p[:-4] + ".md"
    if os.path.exists(md):
        for l in open(md):
            m = re.match(r"\| (full|\d+b) \| (?:score|-) \| \S+ \| (\d+)/(\d+) = ", l)
            if m:
                cell = f"{m.group(2)}/{m.group(3)}"
    rows.setdefault((fam, cfg), {})[b] = cell
with open(os.path.join(out, "sweep.md"), "w") as f:
    for fam, budgets in (("1", ["full", "32b", "24b", "20b", "16b"]),
                         ("2", ["full", "35b", "17b", "13b", "9b"])):
        f.write(f"\nfamily {fam} (dev, {N} problems)\n\n| configuration | "
                + " | ".join(budgets) + " |\n|---|" + "---|" * len(budgets) + "\n")
        for (fm, cfg), acc in sorted(rows.items()):
            if fm == fam:
                f.write(f"| {cfg} | " + " | ".join(acc.get(b, "") for b in budgets) + " |\n")
print(open(os.path.join(out, "sweep.md")).read())
PY
exit $fail
