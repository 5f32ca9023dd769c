#!/usr/bin/env bash
# test_ipc_srv_shm: a full /dev/shm never kills the engine. In a private mount namespace with
# a 4 MiB tmpfs on /dev/shm: an engine whose object does not fit fails at start-up with exit 2
# and a message naming the size and /dev/shm; an engine that started keeps serving (and stays
# alive) after the tmpfs is filled by someone else, because its pages were reserved at
# creation (a sparse object died with SIGBUS on its first untouched completion-ring page).
set -u
B=${ZP_BUILD:-build}
SERVE=$B/asan/zipage
CLI=$B/zipage-cli
[ -x "$SERVE" ] && [ -x "$CLI" ] || { echo "SKIP zipage or zipage-cli not built"; exit 77; }
if [ -z "${ZP_SHM_INNER:-}" ]; then
    command -v unshare >/dev/null || { echo "SKIP unshare not installed"; exit 77; }
    unshare -m --propagation private true 2>/dev/null ||
        { echo "SKIP unshare -m not permitted (needs root or user namespaces)"; exit 77; }
    ZP_SHM_INNER=1 exec unshare -m --propagation private bash "$0" "$@"
fi
mount -t tmpfs -o size=4m tmpfs /dev/shm 2>/dev/null ||
    { echo "SKIP cannot mount a tmpfs on /dev/shm in a mount namespace"; exit 77; }
NAME=zpt-shm-$$
fails=0
srv=
tmp=$(mktemp -d)
trap '[ -n "$srv" ] && kill -9 $srv 2>/dev/null; rm -rf "$tmp"' EXIT
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}

# 1. The default layout (16 clients x 1 MiB payload) does not fit in 4 MiB.
timeout 60 "$SERVE" serve --echo --set ipc_name=$NAME >"$tmp/big.out" 2>"$tmp/big.err"
rc=$?
cat "$tmp/big.err"
check "start-up on a too small /dev/shm exits 2" [ $rc = 2 ]
check "the message names the size and /dev/shm/NAME" \
    grep -Eq "cannot reserve [0-9]+ bytes .*/dev/shm/$NAME: No space left on device" "$tmp/big.err"
check "no ready line, no object left behind" \
    bash -c "! grep -q ready '$tmp/big.out' && [ ! -e /dev/shm/$NAME ]"

# 2. A small layout starts, serves, and keeps serving once the tmpfs is full.
"$SERVE" serve --echo --set ipc_name=$NAME --set max_clients=2 \
    --set payload_bytes_per_client=65536 >"$tmp/serve.out" 2>"$tmp/serve.err" &
srv=$!
for _ in $(seq 1 200); do grep -q '^zipage serve: ready' "$tmp/serve.out" && break; sleep 0.05; done
check "small engine is ready" grep -q '^zipage serve: ready' "$tmp/serve.out"
out=$($CLI --name $NAME generate --prompt-ids "72 105" --max-tokens 2)
check "first request served" [ "$out" = "Hi" ]
dd if=/dev/zero of=/dev/shm/fill bs=64k 2>/dev/null
check "the tmpfs is full" bash -c "[ \$(df --output=avail /dev/shm | tail -1) -lt 64 ]"
ids=$(for i in $(seq 1 200); do printf '%d ' $((65 + i % 26)); done)
$CLI --name $NAME generate --prompt-ids "$ids" --max-tokens 200 --json >"$tmp/long.json"
check "200-token request served after the tmpfs filled" python3 - "$tmp/long.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["token_ids"]) == 200 and d["finish_reason"] == "stop", d
PY
check "engine still alive" kill -0 $srv
out=$($CLI --name $NAME generate --prompt-ids "79 75" --max-tokens 2)
check "engine serves afterwards" [ "$out" = "OK" ]
kill -TERM $srv; wait $srv; rc=$?; srv=
check "engine drains and exits 0" [ $rc = 0 ]
[ $fails = 0 ] || { echo "stderr of the engine:"; cat "$tmp/serve.err"; exit 1; }
echo PASS
