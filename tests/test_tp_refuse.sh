#!/usr/bin/env bash
# test_tp_refuse: tensor_parallel_size > 1 is refused at start-up where it cannot run, with exit
# status 2 and a message naming the key and why, never silently run at TP 1: by the engine's
# commands (serve, generate) off backend=cuda (CPU ranks exist only in tests, through
# engine_open_comms), and by the commands that run the model alone on one device (bench decode,
# logits) on any backend, backend=cuda included; out of its range [1, 8] it is a configuration
# error; 1 (the default) runs. (Multi-GPU runs need GPUs: test_cuda_tp, docs/TENSOR_PARALLEL.md.)
set -u
Z=${ZP_BUILD:-build}/asan/zipage
[ -x "$Z" ] || { echo "SKIP zipage not built"; exit 77; }
T=$(mktemp -d /tmp/zp_test_tp_refuse.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
"$Z" mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 \
    --intermediate 96 --vocab 300 --seed 9 --out "$T/m" >/dev/null || exit 1
M="--model $T/m --backend cpu"

# ARGS... -> exit 2 and stderr containing WANT
refused() {
    local want=$1; shift
    timeout 60 "$Z" "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ $rc -ne 2 ] || ! grep -qF -- "$want" "$T/err"; then
        echo "FAIL: zipage $* -> exit $rc, stderr: $(cat "$T/err") (want 2 and '$want')"
        fail=1
    fi
}
CPU="key 'tensor_parallel_size': 2 needs backend=cuda (one GPU per rank)"
refused "$CPU" serve $M --set tensor_parallel_size=2 --set ipc_name=zp_tp_refuse_$$
refused "$CPU" generate $M --prompt-ids "1 2 3" --set tensor_parallel_size=2
ALONE="key 'tensor_parallel_size': 2 is not for zipage"
refused "$ALONE bench decode, which runs the model alone" bench decode $M --points 1x16 \
    --steps 2 --set tensor_parallel_size=2
refused "$ALONE logits, which runs the model alone" logits $M --prompt-ids "1 2 3" \
    --out "$T/logits" --set tensor_parallel_size=2
refused "$ALONE logits, which runs the model alone" logits --model "$T/m" --backend cuda \
    --prompt-ids "1 2 3" --out "$T/logits" --set tensor_parallel_size=2
refused "tensor_parallel_size': value 9 out of range [1, 8]" generate $M --prompt-ids "1 2" \
    --set tensor_parallel_size=9
refused "tensor_parallel_size': value 0 out of range [1, 8]" generate $M --prompt-ids "1 2" \
    --set tensor_parallel_size=0
if ! "$Z" generate $M --prompt-ids "1 2 3" --max-tokens 2 --set tensor_parallel_size=1 \
    >"$T/out" 2>"$T/err"; then
    echo "FAIL: tensor_parallel_size=1 did not run: $(cat "$T/err")"
    fail=1
fi
[ $fail -eq 0 ] && echo "PASS test_tp_refuse"
exit $fail
