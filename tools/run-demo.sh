#!/usr/bin/env bash
# make run: starts the engine on the shipped reasoning model (models/zipage-reasoner),
# streams one problem's reasoning through zipage-cli at full KV, then runs that same problem and
# two more at once, each capped at a KV budget far below its length (Compressed PagedAttention
# with the default configuration and a protected prompt), and prints their answers, whether
# they are right, and the KV numbers. Problems: task family 2 (a rule machine, traces of
# 1,200-3,300 tokens, tools/task/data/task2-test.jsonl) and family 1 (a reverse running sum,
# models/zipage-reasoner/test.jsonl). `--backend auto` picks the GPU when there is one
# (compression included), else the CPU.
set -u
cd "$(dirname "$0")/.."
B=${ZP_BUILD:-build}
M=models/zipage-reasoner
NAME=zipage-demo-$$
T2=tools/task/data/task2-test.jsonl T1=$M/test.jsonl
command -v python3 >/dev/null || { echo "make run needs python3 to read $T2"; exit 1; }
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[int(sys.argv[2])])[sys.argv[3]], end="")' "$1" "$2" "$3"; }

log=$(mktemp /tmp/zipage-demo.XXXXXX)
# block_size 32, a default budget of 13 blocks; requests may protect up to 384 prompt tokens
# (--protect-prompt; the bound leaves the 16 newest and something to evict in 13 blocks)
"$B/zipage" serve --model "$M" --set ipc_name="$NAME" --set block_size=32 \
    --set max_cache_blocks_per_seq=13 --set protect_prompt_max=384 >"$log" 2>&1 &
srv=$!
trap 'kill -TERM $srv 2>/dev/null; wait $srv 2>/dev/null; rm -f "$log" "$log.out"' EXIT
for _ in $(seq 100); do grep -q ready "$log" && break; sleep 0.1; done
grep ready "$log" || { cat "$log"; exit 1; }
grep 'backend' "$log" | head -1

echo
echo "== Problem A (task family 2), full KV cache (streamed; the model writes its whole chain of thought):"
p=$(field $T2 0 prompt); want=$(field $T2 0 answer)
echo "$p" | head -c 160; echo " ..."
echo "--------------------------------------------------------------------------------"
"$B/zipage-cli" --name "$NAME" generate --chat-text "$p" --max-tokens 4000 --no-compress --usage | tee "$log.out"
got=$(grep -o 'answer [A-Z0-9]*' "$log.out" | tail -1 | cut -d' ' -f2)
echo "--------------------------------------------------------------------------------"
[ "$got" = "$want" ] && echo "answer $got: RIGHT" || echo "answer ${got:-none}: WRONG (expected $want)"

echo
echo "== At once, each capped at a KV budget far below its length (Compressed PagedAttention):"
run() { # file index label extra-args...
    local f=$1 i=$2 label=$3; shift 3
    local p want res
    p=$(field "$f" "$i" prompt); want=$(field "$f" "$i" answer)
    res=$("$B/zipage-cli" --name "$NAME" generate --chat-text "$p" --max-tokens 4000 --json "$@")
    echo "$res" | python3 -c '
import json, re, sys
r = json.load(sys.stdin)
want, label = sys.argv[1], sys.argv[2]
a = re.findall(r"answer ([A-Z0-9]+)", r["text"])
got = a[-1] if a else "none"
s = r["stats"]
n = r["prompt_tokens"] + len(r["token_ids"])
verdict = "RIGHT" if got == want else "WRONG, expected " + want
print("  %-44s answer %5s (%s); %d+%d tokens, KV peak %d blocks of 32 = %d%% of full, "
      "%d compressions, %d tokens evicted" % (label, got, verdict, r["prompt_tokens"],
      len(r["token_ids"]), s["kv_blocks_peak"], 100 * s["kv_blocks_peak"] * 32 // n,
      s["compressions"], s["evicted_tokens"]))' "$want" "$label"
}
run $T2 0 "problem A again, 13 blocks (416 tokens)" --kv-budget-blocks 13 --protect-prompt 384 & a=$!
run $T2 1 "family 2, problem B, 17 blocks (544 tokens)" --kv-budget-blocks 17 --protect-prompt 384 & b=$!
run $T1 0 "family 1, problem C, 20 blocks (640 tokens)" --kv-budget-blocks 20 --protect-prompt 384 & c=$!
wait $a $b $c
echo
"$B/zipage-cli" --name "$NAME" stats | sed -n '1p;/compressions/p;/evicted/p;/tokens_per_s/p'
echo
echo "Accuracy of the whole test set by budget: docs/ACCURACY.md (zipage bench accuracy)."
