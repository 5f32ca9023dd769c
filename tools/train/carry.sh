#!/bin/sh
# Copies what the GPU run needs into the main checkout's git-ignored .carry/train/ (the device
# tool sends the main checkout, not this worktree). Usage: sh tools/train/carry.sh [/work/main]
set -e
R=$(cd "$(dirname "$0")/../.." && pwd)
D=${1:-/work/main}/.carry/train
rm -rf "$D"
mkdir -p "$D/tools/task" "$D/tools/train" "$D/models/zipage-reasoner"
cp "$R/tools/task/gen_task.py" "$D/tools/task/"
cp "$R/tools/train/train.py" "$R/tools/train/ref_logits.py" "$D/tools/train/"
for f in tokenizer.json tokenizer_config.json dev.jsonl test.jsonl \
         config.json generation_config.json model.safetensors; do
    [ -f "$R/models/zipage-reasoner/$f" ] && cp "$R/models/zipage-reasoner/$f" "$D/models/zipage-reasoner/"
done
echo "carried to $D:"; find "$D" -type f | sort
