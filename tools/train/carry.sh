#!/bin/sh
# Copies what the GPU run needs into the main checkout's git-ignored .carry/train/ (the device
# tool sends the main checkout, not this worktree).
# Usage: sh tools/train/carry.sh [--ckpt DIR] [--with-model] [MAIN]
#   --ckpt DIR     also copy DIR/ckpt.* (a previous call's checkpoint, from the tool's files_at)
#                  into .carry/train/ckpt/, for train.py --resume ckpt
#   --with-model   also copy the shipped model.safetensors (ref_logits.py on it, --init-from);
#                  left out by default: the checkpoint (38.5 MB) and the repo must stay within
#                  the tool's 64 MiB
#   MAIN           the main checkout (default /work/main)
set -e
R=$(cd "$(dirname "$0")/../.." && pwd)
CK= WM=
while [ $# -gt 0 ]; do
    case "$1" in
        --ckpt) CK=$2; shift 2 ;;
        --with-model) WM=1; shift ;;
        *) break ;;
    esac
done
D=${1:-/work/main}/.carry/train
rm -rf "$D"
mkdir -p "$D/tools/task/data" "$D/tools/train" "$D/models/zipage-reasoner"
cp "$R/tools/task/gen_task.py" "$R/tools/task/gen_task2.py" "$D/tools/task/"
cp "$R/tools/task/data/task2-dev.jsonl" "$R/tools/task/data/task2-test.jsonl" "$D/tools/task/data/"
cp "$R/tools/train/train.py" "$R/tools/train/eval.py" "$R/tools/train/ref_logits.py" "$D/tools/train/"
for f in tokenizer.json tokenizer_config.json dev.jsonl test.jsonl config.json generation_config.json; do
    [ -f "$R/models/zipage-reasoner/$f" ] && cp "$R/models/zipage-reasoner/$f" "$D/models/zipage-reasoner/"
done
if [ -n "$WM" ]; then
    cp "$R/models/zipage-reasoner/model.safetensors" "$D/models/zipage-reasoner/"
fi
if [ -n "$CK" ]; then
    mkdir -p "$D/ckpt"
    n=0
    for f in "$CK"/ckpt.*; do
        [ -f "$f" ] || continue
        cp "$f" "$D/ckpt/"
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || { echo "no ckpt.* in $CK" >&2; exit 1; }
fi
echo "carried to $D ($(du -sk "$D" | cut -f1) KiB):"; find "$D" -type f | sort
