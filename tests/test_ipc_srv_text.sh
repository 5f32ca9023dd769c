#!/usr/bin/env bash
# test_ipc_srv_text: text over IPC equals offline text for every request. A tiny random model
# serves 48 greedy requests (1..6 tokens, random prompts); each one's text from zipage-cli
# must equal `zipage generate` on the same ids, including completions that end in an
# incomplete UTF-8 sequence (offline decoding ends them with U+FFFD: the engine must send the
# streaming detokenizer's final flush before the FINAL record).
set -u
B=${ZP_BUILD:-build}
Z=$B/asan/zipage
CLI=$B/zipage-cli
[ -x "$Z" ] && [ -x "$CLI" ] || { echo "SKIP zipage or zipage-cli not built"; exit 77; }
NAME=zpt-text-$$
T=$(mktemp -d /tmp/zp_test_srv_text.XXXXXX)
srv=
trap '[ -n "$srv" ] && kill -9 $srv 2>/dev/null; rm -f /dev/shm/$NAME; rm -rf "$T"' EXIT
"$Z" mkmodel --arch qwen3 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --head-dim 16 \
    --intermediate 64 --vocab 300 --seed 1 --out "$T/m" >/dev/null || { echo "FAIL mkmodel"; exit 1; }
SETS="--set threads=1 --set max_model_len=64"

python3 - "$T/req.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    # the issue's request shape first: "1 2", one token
    f.write(json.dumps({"id": "r0", "prompt_ids": [1, 2], "max_tokens": 1, "ignore_eos": True,
                        "temperature": 0}) + "\n")
    for i in range(1, 48):
        ids = [rng.randrange(0, 261) for _ in range(rng.randrange(1, 8))]
        f.write(json.dumps({"id": "r%d" % i, "prompt_ids": ids, "max_tokens": rng.randrange(1, 7),
                            "ignore_eos": True, "temperature": 0}) + "\n")
PY
"$Z" generate --model "$T/m" $SETS --requests "$T/req.jsonl" --json >"$T/offline.jsonl" 2>"$T/gen.err" ||
    { echo "FAIL offline generate"; cat "$T/gen.err"; exit 1; }

"$Z" serve --model "$T/m" $SETS --set ipc_name=$NAME >"$T/serve.out" 2>"$T/serve.err" &
srv=$!
for _ in $(seq 1 400); do grep -q '^zipage serve: ready' "$T/serve.out" && break; sleep 0.05; done
grep -q '^zipage serve: ready' "$T/serve.out" || { echo "FAIL engine did not start"; cat "$T/serve.err"; exit 1; }

python3 - "$T/req.jsonl" "$T/offline.jsonl" "$CLI" "$NAME" <<'PY'
import json, subprocess, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
off = {}
for l in open(sys.argv[2]):
    d = json.loads(l)
    off[d["id"]] = d
cli, name = sys.argv[3], sys.argv[4]
fails = ends_incomplete = 0
for q in reqs:
    o = off[q["id"]]
    r = subprocess.run([cli, "--name", name, "generate", "--prompt-ids",
                        " ".join(map(str, q["prompt_ids"])), "--max-tokens", str(q["max_tokens"]),
                        "--ignore-eos", "--temperature", "0", "--json"],
                       capture_output=True, text=True)
    d = json.loads(r.stdout)
    want = o.get("text", "")
    if d["token_ids"] != o["token_ids"] or d["text"] != want:
        fails += 1
        print("FAIL %s ids %s: ipc %r %r, offline %r %r" % (q["id"], q["prompt_ids"], d["token_ids"],
              d["text"], o["token_ids"], want))
    ends_incomplete += want.endswith("\ufffd")
if ends_incomplete < 3:
    fails += 1
    print("FAIL only %d requests end in an incomplete sequence: the test covers too little" % ends_incomplete)
print("%d requests, %d end in U+FFFD, %d mismatches" % (len(reqs), ends_incomplete, fails))
sys.exit(1 if fails else 0)
PY
rc=$?
kill -TERM $srv; wait $srv; src=$?; srv=
[ $src = 0 ] || { echo "FAIL engine exit $src"; cat "$T/serve.err"; exit 1; }
[ $rc = 0 ] && echo PASS
exit $rc
