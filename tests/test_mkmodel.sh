#!/usr/bin/env bash
# test_mkmodel: `zipage mkmodel` rejects bad arguments with exit status 2 and a message naming
# the option, writes every file of a model directory, and is deterministic per seed.
set -u
Z=${ZP_BUILD:-build}/asan/zipage
[ -x "$Z" ] || { echo "SKIP zipage not built"; exit 77; }
T=$(mktemp -d /tmp/zp_test_mkmodel.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
OK="--arch qwen3 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --head-dim 16 --intermediate 64 --vocab 300 --seed 1"

# bad ARGS... -> exit 2 and stderr containing WANT
bad() {
    local want=$1; shift
    "$Z" mkmodel "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ $rc -ne 2 ] || ! grep -qF -- "$want" "$T/err"; then
        echo "FAIL: mkmodel $* -> exit $rc, stderr: $(cat "$T/err") (want 2 and '$want')"
        fail=1
    fi
}
bad "--arch is required" --hidden 32 --out "$T/x"
bad "--arch: 'mistral' is not qwen3, qwen2 or llama" --arch mistral --hidden 32 --out "$T/x"
bad "--out is required" $OK
bad "--hidden is required" --arch qwen3 --layers 1 --heads 2 --intermediate 8 --vocab 300 --seed 1 --out "$T/x"
bad "--seed is required" --arch llama --hidden 32 --layers 1 --heads 2 --intermediate 8 --vocab 300 --out "$T/x"
bad "--heads 3 is not a multiple of --kv-heads 2" $OK --heads 3 --kv-heads 2 --out "$T/x"
bad "--head-dim 15 is odd" $OK --head-dim 15 --out "$T/x"
bad "--hidden 30 is not a multiple of --heads 4" --arch llama --hidden 30 --layers 1 --heads 4 --intermediate 8 --vocab 300 --seed 1 --out "$T/x"
bad "qwen2 derives head_dim" $OK --arch qwen2 --head-dim 8 --out "$T/x"
bad "--vocab 200 is smaller than the tokenizer's 261 ids" $OK --vocab 200 --out "$T/x"
bad "--layers: 0 out of range" $OK --layers 0 --out "$T/x"
bad "--hidden: 'abc' is not an integer" $OK --hidden abc --out "$T/x"
bad "--dtype: 'fp8' is not bf16 or f32" $OK --dtype fp8 --out "$T/x"
bad "unknown option '--bogus'" $OK --bogus --out "$T/x"
bad "--seed needs a value" $OK --out "$T/x" --seed
bad "$T/nodir/x" $OK --out "$T/nodir/x"
[ -e "$T/x" ] && { echo "FAIL: a rejected command wrote $T/x"; fail=1; }

# success: every file, index when sharded, same seed -> same bytes
for args in "--out $T/a" "--out $T/b" "--out $T/c --seed 2" "--out $T/s --shards 2"; do
    "$Z" mkmodel $OK $args 2>"$T/err" || { echo "FAIL: mkmodel $args: $(cat "$T/err")"; fail=1; }
done
for f in config.json generation_config.json tokenizer.json tokenizer_config.json model.safetensors; do
    [ -s "$T/a/$f" ] || { echo "FAIL: $f not written"; fail=1; }
done
for f in model-00001-of-00002.safetensors model-00002-of-00002.safetensors model.safetensors.index.json; do
    [ -s "$T/s/$f" ] || { echo "FAIL: sharded $f not written"; fail=1; }
done
# rewriting a directory in the other layout leaves no stale entry point
"$Z" mkmodel $OK --out "$T/s" 2>"$T/err" && [ -s "$T/s/model.safetensors" ] && [ ! -e "$T/s/model.safetensors.index.json" ] ||
    { echo "FAIL: sharded -> single left an index or no model.safetensors"; fail=1; }
"$Z" mkmodel $OK --out "$T/s" --shards 3 2>"$T/err" && [ ! -e "$T/s/model.safetensors" ] && [ -s "$T/s/model.safetensors.index.json" ] ||
    { echo "FAIL: single -> sharded left model.safetensors or no index"; fail=1; }
cmp -s "$T/a/model.safetensors" "$T/b/model.safetensors" || { echo "FAIL: same seed, different weights"; fail=1; }
cmp -s "$T/a/model.safetensors" "$T/c/model.safetensors" && { echo "FAIL: different seeds, same weights"; fail=1; }
[ $fail -eq 0 ] && echo "PASS test_mkmodel"
exit $fail
