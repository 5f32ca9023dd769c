#!/usr/bin/env bash
# zipage serve --echo (ASan build) + zipage-cli + the Python client, end to end:
# static binary, generate --json (text and ids), chat through the engine's template, stats
# (--json, --prometheus), --engine-uid, cancel refused without ipc_admin_cancel, bench-ipc, Python
# generate/stream/errors, protect_prompt through zipage-cli and Python, SIGTERM drain (object removed), SIGINT twice stops a busy engine,
# SIGTERM with sigterm = cancel.
set -u
B=${ZP_BUILD:-build}
CLI=$B/zipage-cli
SERVE=$B/asan/zipage
NAME=zpt-cli-$$
fails=0
srv=
tmp=$(mktemp -d)
cleanup() {
    [ -n "$srv" ] && kill -9 "$srv" 2>/dev/null
    rm -f "/dev/shm/$NAME"
    rm -rf "$tmp"
}
trap cleanup EXIT
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
start() { # start [serve options...]: launches the engine and waits for its ready line
    : >"$tmp/serve.out"
    "$SERVE" serve --echo --set ipc_name=$NAME "$@" >"$tmp/serve.out" 2>"$tmp/serve.err" &
    srv=$!
    for _ in $(seq 1 200); do
        grep -q '^zipage serve: ready' "$tmp/serve.out" && return 0
        sleep 0.05
    done
    echo "engine did not start:"; cat "$tmp/serve.err"; exit 1
}
stop_wait() { # stop_wait SIGNAL...: sends the signals, returns the engine's exit status
    for s in "$@"; do kill -s "$s" "$srv"; sleep 0.05; done
    wait "$srv"; local rc=$?
    srv=
    return $rc
}

check "zipage-cli is statically linked" bash -c "file '$CLI' | grep -q 'statically linked'"

start
check "ready line names model, blocks, concurrency and ipc" \
    grep -Eq 'ready model=echo backend=echo blocks=[0-9]+ max_concurrency=[0-9]+ ipc=/dev/shm/'$NAME "$tmp/serve.out"
check "object is mode 0600" bash -c "[ \$(stat -c %a /dev/shm/$NAME) = 600 ]"

$CLI --name $NAME generate --prompt 'hello "world"' --max-tokens 50 --json >"$tmp/gen.json"
check "generate --json" python3 - "$tmp/gen.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["text"] == 'hello "world"', d
assert d["token_ids"] == list(b'hello "world"') and d["prompt_tokens"] == 13, d
assert d["finish_reason"] == "stop" and d["stats"]["kv_blocks_peak"] == 2, d
assert d["stats"]["tokens_per_s"] > 0, d
PY
out=$($CLI generate --name $NAME --prompt-ids "72 105 33" --max-tokens 2)
check "generate --prompt-ids streams text (capped by --max-tokens)" [ "$out" = "Hi" ]
$CLI --name $NAME generate --prompt-ids "1 999" --json >"$tmp/bad.json"; rc=$?
check "engine-refused request: exit 2 and finish_reason error" \
    bash -c "[ $rc = 2 ] && grep -q '\"finish_reason\": \"error\"' '$tmp/bad.json'"
out=$($CLI --name $NAME generate --prompt-ids "72 105" --protect-prompt 2 --max-tokens 5)
check "generate --protect-prompt goes through the record" [ "$out" = "Hi" ]
$CLI --name $NAME generate --max-tokens 3 2>/dev/null; rc=$?
check "missing --prompt: exit 2" [ $rc = 2 ]

printf 'hi there\nsecond\n' | $CLI --name $NAME chat --system sys >"$tmp/chat.out" 2>/dev/null
check "chat keeps history (echo renders the messages)" \
    grep -q '"role": "assistant", "content": "\[{\\"role\\": \\"system\\"' "$tmp/chat.out"

$CLI --name $NAME --engine-uid abc stats 2>/dev/null; rc=$?
check "--engine-uid that is not a uid: exit 2" [ $rc = 2 ]
check "--engine-uid naming another uid still accepts our own engine" \
    bash -c "$CLI stats --engine-uid 12345 --name $NAME | grep -q 'model echo'"
check "stats --json" bash -c "$CLI --name $NAME stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"model\"]==\"echo\" and d[\"clients\"]>=1, d'"
check "stats --prometheus" bash -c "$CLI --name $NAME stats --prometheus | grep -q '^zipage_completed_total [0-9]'"
$CLI --name $NAME cancel --slot 0 2>/dev/null; rc=$?
check "cancel refused without ipc_admin_cancel" [ $rc = 1 ]
check "bench-ipc" bash -c "$CLI --name $NAME bench-ipc --requests 300 --window 8 | grep -c 'p99.9=' | grep -q 2"

check "python client" env ZIPAGE_LIB="$B/libzipage.so" PYTHONPATH=ipc/python python3 - $NAME <<'PY'
import sys
from zipage import Client, ZipageError
with Client(sys.argv[1]) as c:
    r = c.generate("héllo", max_tokens=100)
    assert r["text"] == "héllo" and r["finish_reason"] == "stop" and len(r["ids"]) == 6, r
    r = c.generate(ids=[65, 66, 67], max_tokens=2)
    assert r["text"] == "AB" and r["finish_reason"] == "length", r
    evs = list(c.stream("xyz", logprobs=True))
    assert [e.get("token") for e in evs[:-1]] == [120, 121, 122], evs
    assert evs[-1]["finish_reason"] == "stop" and evs[-1]["completion_tokens"] == 3, evs
    assert c.generate(messages=[{"role": "user", "content": "q"}])["text"].startswith("[{")
    try:
        c.generate(ids=[500])
        raise AssertionError("no error")
    except ZipageError as e:
        assert e.code == -1 and "500" in str(e), e
    it = c.stream("long " * 100)
    next(it)
    it.close()  # cancels the request
    r = c.generate("after")
    assert r["text"] == "after", r
    assert c.generate("kept", protect_prompt=3)["text"] == "kept"
    try:
        c.generate("x", protect_prompt=-2)
        raise AssertionError("no error")
    except ZipageError as e:
        assert "protect_prompt -2" in str(e), e
    assert c.stats()["model"] == "echo"
with Client(sys.argv[1], engine_uid=12345) as c:  # another uid named: ours still accepted
    assert c.generate("uid", max_tokens=5)["text"] == "uid"
PY

check "SIGTERM drains and exits 0" stop_wait TERM
check "object removed after stop" bash -c "[ ! -e /dev/shm/$NAME ]"

long_request() { # starts a 6-second stream in the background ($gen) and waits until it runs
    $CLI --name $NAME generate --prompt "$(head -c 3000 /dev/zero | tr '\0' a)" --max-tokens 3000 \
        --json >"$tmp/long.json" 2>/dev/null &
    gen=$!
    for _ in $(seq 1 200); do
        $CLI --name $NAME stats --json 2>/dev/null | grep -q '"inflight": 1,' && return
        sleep 0.05
    done
}

# SIGINT twice: a long stream is cancelled and the engine stops at once
start --echo-step-us 2000 --set max_clients=4
long_request
t0=$(date +%s%N)
check "SIGINT twice stops with exit 0" stop_wait INT INT
t1=$(date +%s%N)
check "... within a second" [ $(( (t1 - t0) / 1000000 )) -lt 1000 ]
wait $gen
check "... the running request ended cancelled" grep -q '"finish_reason": "cancelled"' "$tmp/long.json"

# sigterm = cancel: SIGTERM cancels running requests, each with its final record
start --echo-step-us 2000 --set sigterm=cancel
long_request
check "SIGTERM with sigterm=cancel exits 0" stop_wait TERM
wait $gen
check "... the running request ended cancelled" grep -q '"finish_reason": "cancelled"' "$tmp/long.json"

[ $fails = 0 ] || { echo "$fails checks failed"; exit 1; }
echo "PASS ipc_cli"
