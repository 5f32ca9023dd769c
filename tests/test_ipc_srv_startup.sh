#!/usr/bin/env bash
# test_ipc_srv_startup: `zipage serve` start-up and the facts it publishes.
# - header.vocab is the bound the engine enforces on ids: vocab-1 is served, vocab refused
#   (the header used to carry the tokenizer's size, smaller than the model's vocabulary);
# - memory that start-up cannot have (a KV reservation beyond the host arena, an arena beyond
#   the address-space limit) is a configuration error: exit 2 naming the key, not exit 1.
set -u
B=${ZP_BUILD:-build}
Z=$B/asan/zipage
CLI=$B/zipage-cli
[ -x "$Z" ] && [ -x "$B/zipage" ] && [ -x "$CLI" ] || { echo "SKIP zipage or zipage-cli not built"; exit 77; }
NAME=zpt-start-$$
T=$(mktemp -d /tmp/zp_test_srv_start.XXXXXX)
srv=
fails=0
trap '[ -n "$srv" ] && kill -9 $srv 2>/dev/null; rm -f /dev/shm/$NAME; rm -rf "$T"' EXIT
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
"$Z" mkmodel --arch qwen3 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --head-dim 16 \
    --intermediate 64 --vocab 300 --seed 1 --out "$T/m" >/dev/null || { echo "FAIL mkmodel"; exit 1; }

"$Z" serve --model "$T/m" --set threads=1 --set ipc_name=$NAME >"$T/serve.out" 2>"$T/serve.err" &
srv=$!
for _ in $(seq 1 400); do grep -q '^zipage serve: ready' "$T/serve.out" && break; sleep 0.05; done
grep -q '^zipage serve: ready' "$T/serve.out" || { echo "FAIL engine did not start"; cat "$T/serve.err"; exit 1; }
vocab=$(python3 -c "import struct,sys; print(struct.unpack_from('<i', open(sys.argv[1],'rb').read(128), 104)[0])" /dev/shm/$NAME)
check "header.vocab is the model's 300 ids (got $vocab)" [ "$vocab" = 300 ]
$CLI --name $NAME generate --prompt-ids "$((vocab - 1))" --max-tokens 1 --json >"$T/last.json"
check "id vocab-1 is served" grep -q '"finish_reason": "length"' "$T/last.json"
$CLI --name $NAME generate --prompt-ids "$vocab" --max-tokens 1 --json >"$T/over.json"
rc=$?
check "id vocab is refused (exit 2, message names the bound)" \
    bash -c "[ $rc = 2 ] && grep -q 'outside the vocabulary \[0, $vocab)' '$T/over.json'"
kill -TERM $srv; wait $srv; srv=

"$Z" serve --model "$T/m" --set threads=1 --set ipc_name=$NAME --set kv_memory_mb=16777216 \
    >/dev/null 2>"$T/kv.err"
rc=$?
cat "$T/kv.err"
check "KV memory beyond the arena: exit 2 naming kv_memory_mb" \
    bash -c "[ $rc = 2 ] && grep -q kv_memory_mb '$T/kv.err'"
# the release build: ASan's shadow memory cannot live under ulimit -v
(ulimit -v 4000000; exec "$B/zipage" serve --echo --set ipc_name=$NAME --set host_arena_mb=8192 \
    >/dev/null 2>"$T/arena.err")
rc=$?
cat "$T/arena.err"
check "host arena beyond the address-space limit: exit 2 naming host_arena_mb" \
    bash -c "[ $rc = 2 ] && grep -q 'host_arena_mb (lower it)' '$T/arena.err'"
check "no object left behind" [ ! -e /dev/shm/$NAME ]
[ $fails = 0 ] && echo PASS
[ $fails = 0 ]
