#!/usr/bin/env bash
# accuracy-sweep.sh: the measurement behind the default compression configuration
# (docs/ACCURACY.md, "Choosing the default"). On the dev splits only, never the test splits:
# zipage-reasoner's greedy accuracy on the first 100 problems of each family's dev split, block
# size 32, for each configuration below, at budgets around the issue's targets:
#   family 1 (models/zipage-reasoner/dev.jsonl, prompts 300-388 tokens, traces 1,136 on
#     average): 16, 20, 24 and 32 blocks (20 = 25% of the trace + the prompt);
#   family 2 (tools/task/data/task2-dev.jsonl, prompts 140-250, traces 2,233): 35, 17, 13 and
#     9 blocks (50%, 25%, 18.75% and 12.5% of the trace);
# and both at full KV. Protection covers each family's longest prompt (400 and 256 tokens: the
# request's protect = min(prompt length, 400 or 256)); the other keys keep their defaults.
# Runs JOBS bench processes at once (default 4); on the GPU each takes 0.5/JOBS of the free memory.
#   usage: accuracy-sweep.sh ZIPAGE OUT_DIR BACKEND [JOBS]
# Writes OUT_DIR/sweep-FAMILY-CONFIG.md (bench accuracy's markdown tables, one per run) and
# OUT_DIR/sweep.md (a row per family and configuration: accuracy at each budget); exits 1 when a
# run failed.
set -u
ZP=$1 OUT=$2 BE=$3 JOBS=${4:-4} N=${ZP_SWEEP_N:-100}  # ZP_SWEEP_N: fewer problems, for a smoke run
F1=models/zipage-reasoner/dev.jsonl F2=tools/task/data/task2-dev.jsonl
mkdir -p "$OUT"
mem=$(python3 -c "print(round(0.5 / $JOBS, 3))")
common="bench accuracy --model models/zipage-reasoner --n $N --set block_size=32 --backend $BE"
[ "$BE" = cuda ] && common="$common --set gpu_memory_utilization=$mem"
configs=(
    "reference|"
    "noglobal|--set use_global_score=false"
    "noglobal-nopool|--set use_global_score=false --set pooling_size=0"
    "noglobal-noredund|--set use_global_score=false --set redundancy=off"
    "protect|PROTECT"
    "protect-noglobal|PROTECT --set use_global_score=false"
    "protect-noglobal-nopool|PROTECT --set use_global_score=false --set pooling_size=0"
    "protect-noglobal-noredund|PROTECT --set use_global_score=false --set redundancy=off"
)
jobs=$(mktemp) && trap 'rm -f "$jobs"' EXIT
for fam in 1 2; do
    if [ $fam = 1 ]; then data=$F1 budgets=16b,20b,24b,32b p=400
    else data=$F2 budgets=35b,17b,13b,9b p=256; fi
    echo "$ZP $common --data $data --budgets full --md $OUT/sweep-f$fam-full.md" >>"$jobs"
    for c in "${configs[@]}"; do
        name=${c%%|*} sets=${c#*|}
        sets=${sets/PROTECT/--set protect_prompt=$p --set protect_prompt_max=$p}
        echo "$ZP $common --data $data --budgets $budgets $sets --md $OUT/sweep-f$fam-$name.md" >>"$jobs"
    done
done
# each run logs to OUT_DIR/sweep-*.log beside its table
fail=0
xargs -P "$JOBS" -I{} bash -c 'l=$(sed -E "s/.*--md ([^ ]*)\.md.*/\1.log/" <<<"$1"); $1 >"$l" 2>&1 ||
    { echo "FAILED: $1"; tail -3 "$l"; exit 1; }' _ {} <"$jobs" || fail=1
python3 - "$OUT" "$N" <<'PY'
import glob, os, re, sys
out, N = sys.argv[1], sys.argv[2]
rows = {}
for p in sorted(glob.glob(os.path.join(out, "sweep-f*.md"))):
    fam, cfg = re.match(r"sweep-f(\d)-(.*)\.md", os.path.basename(p)).groups()
    for l in open(p):
        m = re.match(r"\| (full|\d+b) \| (?:score|-) \| \S+ \| (\d+)/(\d+) = ", l)
        if m:
            rows.setdefault((fam, cfg), {})[m.group(1)] = f"{m.group(2)}/{m.group(3)}"
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
