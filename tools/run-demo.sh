#!/usr/bin/env bash
# make run: starts the engine on the shipped reasoning model (models/zipage-reasoner),
# streams one problem's reasoning through zipage-cli, then runs three problems at once at
# different KV budgets and prints their answers, whether they are right, and the KV numbers.
# `--backend auto` picks the GPU when there is one (compression included), else the CPU.
set -u
cd "$(dirname "$0")/.."
B=${ZP_BUILD:-build}
M=models/zipage-reasoner
NAME=zipage-demo-$$
DATA=$M/test.jsonl
command -v python3 >/dev/null || { echo "make run needs python3 to read $DATA"; exit 1; }
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[int(sys.argv[2])])[sys.argv[3]], end="")' "$DATA" "$1" "$2"; }

log=$(mktemp /tmp/zipage-demo.XXXXXX)
# block_size 32 and a budget of 46 blocks (1,472 tokens) per request: long traces compress
"$B/zipage" serve --model "$M" --set ipc_name="$NAME" --set block_size=32 \
    --set max_cache_blocks_per_seq=46 --set query_cache_len=16 >"$log" 2>&1 &
srv=$!
trap 'kill -TERM $srv 2>/dev/null; wait $srv 2>/dev/null; rm -f "$log" "$log.out"' EXIT
for _ in $(seq 100); do grep -q ready "$log" && break; sleep 0.1; done
grep ready "$log" || { cat "$log"; exit 1; }
grep 'backend' "$log" | head -1

echo
echo "== Problem 1, full KV cache (streamed; the model writes its whole chain of thought):"
p=$(field 0 prompt); want=$(field 0 answer)
echo "$p" | head -c 160; echo " ..."
echo "--------------------------------------------------------------------------------"
"$B/zipage-cli" --name "$NAME" generate --chat-text "$p" --max-tokens 3000 --no-compress --usage | tee "$log.out"
got=$(grep -o 'answer [0-9]*' "$log.out" | tail -1 | cut -d' ' -f2)
echo "--------------------------------------------------------------------------------"
[ "$got" = "$want" ] && echo "answer $got: RIGHT" || echo "answer ${got:-none}: WRONG (expected $want)"

echo
echo "== Problems 2-4 at once, each capped at a different KV budget (Compressed PagedAttention):"
run() { # index label extra-args...
    local i=$1 label=$2; shift 2
    local p want res
    p=$(field "$i" prompt); want=$(field "$i" answer)
    res=$("$B/zipage-cli" --name "$NAME" generate --chat-text "$p" --max-tokens 3000 --json "$@")
    echo "$res" | python3 -c '
import json, re, sys
r = json.load(sys.stdin)
want, label = sys.argv[1], sys.argv[2]
a = re.findall(r"answer (\d+)", r["text"])
got = a[-1] if a else "none"
s = r["stats"]
verdict = "RIGHT" if got == want else "WRONG, expected " + want
print("  %-28s answer %5s (%s); %d+%d tokens, KV peak %d blocks of 32, %d compressions, "
      "%d tokens evicted" % (label, got, verdict, r["prompt_tokens"], len(r["token_ids"]),
      s["kv_blocks_peak"], s["compressions"], s["evicted_tokens"]))' "$want" "$label"
}
run 1 "budget 46 blocks (1472 tok)" & a=$!
run 2 "budget 42 blocks (1344 tok)" --kv-budget-blocks 42 & b=$!
run 3 "budget 36 blocks (1152 tok)" --kv-budget-blocks 36 & c=$!
wait $a $b $c
echo
"$B/zipage-cli" --name "$NAME" stats | sed -n '1p;/compressions/p;/evicted/p;/tokens_per_s/p'
echo
echo "Accuracy of the whole test set by budget: docs/ACCURACY.md (zipage bench accuracy)."
