#!/usr/bin/env bash
# Everything zipage checks on the GPU machine, in one call (see docs/GPU.md):
#   1. external parity of the CPU reference against transformers (random Qwen3/Qwen2/Llama,
#      and every model directory under models/ that has weights)
# Run from the repository root on the device with the engine binary carried in .carry/bin.
# Results go to $OUT (parity.json, gpu-check.log).
set -u
OUT=${OUT:-/tmp/zp-out}
mkdir -p "$OUT"
ZP=${ZP:-.carry/bin/zipage}
log="$OUT/gpu-check.log"
{
  echo "== gpu-check $(date -u +%FT%TZ) on $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  echo "== parity: random models"
  PYTHONUNBUFFERED=1 python3 tools/hf_parity.py "$ZP" "$OUT/parity.json"
  rc=$?
  models=$(ls -d models/*/ 2>/dev/null | while read -r d; do [ -f "$d/model.safetensors" ] && echo "$d"; done)
  if [ -n "$models" ]; then
    echo "== parity: shipped models"
    PYTHONUNBUFFERED=1 python3 tools/hf_parity.py "$ZP" "$OUT/parity-models.json" $models || rc=1
  fi
  echo "== gpu-check exit $rc"
  exit $rc
} 2>&1 | tee "$log"
