#!/usr/bin/env bash
# Everything zipage checks on the GPU machine, in one call (docs/GPU.md):
#   1. the kernels: `zipage kernels` compiles every kernel with NVRTC for the GPU and loads it;
#   2. every GPU test program (tests/test_cuda_*.c against their CPU twins, test_nvrtc;
#      test_cuda_nccl: NCCL collectives over every GPU of the machine);
#   3. the engine on the GPU: bf16 logits against transformers on random models and against
#      the CPU backend (tools/gpu_parity.py); greedy accuracy of zipage-reasoner (gpu-greedy.sh)
#      and with compression at several KV budgets against the CPU's (gpu-accuracy.sh);
#   4. benchmarks: `zipage bench decode` on a Qwen3-8B shape beside the PyTorch CUDA-graph
#      decode step (tools/peer_decode.py), also over a sweep of batches drawn as decode.png;
#      the Qwen3-1.7B shape's decode steps at 1-256 rows of 1,152 (the compressed throughput
#      workload's), with the tuned batch-invariant GEMM plans and with batch_invariant=false;
#      `zipage bench compress` (asynchronous against synchronous compression at 256 requests);
#      the prefill attention kernels (`zipage bench attention --prefill`, with the default
#      attention_prefill_kernel, auto, and with mma); `zipage bench prefill` (both ways) beside
#      cuBLAS (tools/peer_gemm.py); `zipage bench startup`; with --attention
#      `zipage bench attention` beside torch SDPA (tools/peer_sdpa.py); on 2+ GPUs `zipage bench
#      throughput` at tensor_parallel_size 1 and 2;
#   5. with --parity: the CPU reference against transformers (tools/hf_parity.py);
#   6. with --accuracy: docs/ACCURACY.md's dev-split configuration sweep and test-split table on
#      the GPU (tools/accuracy-sweep.sh, tools/accuracy-table.sh; a few minutes), packed into
#      $OUT/accuracy.tgz with their summary tables beside it (the device tool returns few files);
#   7. with --profile: one Qwen3-8B-shaped decode step at 64 x 2,048 under Nsight Compute, every
#      kernel's GPU time summed by name (tools/ncu_step.py -> $OUT/ncu-decode.txt), and one of
#      the Qwen3-1.7B shape at 88 x 1,152 (the compressed workload's steps,
#      ncu-decode-1.7b.txt); one compression batch's scoring launch of the throughput
#      workload's shape (Qwen3-1.7B, M 4): duration, occupancy, launch and warp-stall
#      sections ($OUT/ncu-score.txt).
# Binaries are built on the development machine (`make gpu-tests`) and carried in .carry/:
#   mkdir -p .carry && cp -r build/zipage build/zipage-cli build/gpu .carry/
# Results: $OUT/gpu-check.log and $OUT/gpu-check.json (one entry per step: name, exit, seconds).
set -u
# NVLink multicast stays off in everything started from here (NCCL, PyTorch, NVSHMEM): on the
# shared multi-GPU hosts a program that uses it can put every GPU of the host out of service for
# a day or more (the device machines' KINDS.md). drv/nccl.c forces NCCL's too; never call
# cuMulticastCreate.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/zp-out}
mkdir -p "$OUT"
C=${CARRY:-.carry}
ZP=$C/zipage
log="$OUT/gpu-check.log"
json="$OUT/gpu-check.json"
parity=0 bench=1 attn=0 acc=0 prof=0
for a in "$@"; do
  case $a in
    --parity) parity=1 ;;      # also the CPU reference against transformers (hf_parity.py)
    --no-bench) bench=0 ;;     # skip the benchmarks (correctness only)
    --attention) attn=1 ;;     # also the attention kernel beside torch SDPA
    --accuracy) acc=1 ;;       # also the accuracy sweep and table of docs/ACCURACY.md
    --profile) prof=1 ;;       # also the per-kernel time of one decode step (ncu)
    *) echo "usage: gpu-check.sh [--parity] [--no-bench] [--attention] [--accuracy] [--profile]"
       exit 2 ;;
  esac
done
export ZP_BUILD=$C  # tests make their models with $C/zipage
export ZIPAGE_KERNEL_CACHE=${ZIPAGE_KERNEL_CACHE:-/tmp/zp-kernels}
steps=()
step() { # step NAME COMMAND...: runs, logs, records exit and time (skipped when NAME matches $ZP_SKIP)
    local name=$1 t0=$SECONDS; shift
    local w
    for w in ${ZP_SKIP:-}; do  # names or shell patterns, e.g. ZP_SKIP="kernels-* test_*"
      case $name in $w) echo "== $name: skipped (ZP_SKIP)"; return 0 ;; esac
    done
    echo "== $name: $*"
    "$@"; local rc=$?
    echo "== $name: exit $rc, $((SECONDS - t0)) s"
    steps+=("{\"step\": \"$name\", \"exit\": $rc, \"seconds\": $((SECONDS - t0))}")
    return $rc
}
profile_decode() { # profile_decode NAME SHAPE BxL: one decode step's kernels under ncu, summed
    # by name into $OUT/NAME.txt
    local b=(bench decode --model "tools/shapes/$2" --backend cuda --points "$3" --steps 1)
    # a first run leaves the GEMM plans in the cache, so ncu does not profile the tuner's launches
    "$ZP" "${b[@]}" >/dev/null || return 1
    ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        "$ZP" "${b[@]}" > "$OUT/$1.csv" || return 1
    python3 tools/ncu_step.py "$OUT/$1.csv" > "$OUT/$1.txt"; local rc=$?
    cat "$OUT/$1.txt"; rm -f "$OUT/$1.csv"  # large; the summary holds the step
    return $rc
}
profile_score() { # a zp_cmp_score launch of the compressed throughput workload under ncu
    ncu --clock-control none --kernel-name zp_cmp_score --launch-skip 4 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        "$ZP" bench throughput --model tools/shapes/qwen3-1.7b --backend cuda --requests 32 \
        --prompt 512 --gen 1100 --budget 4 --modes compressed > "$OUT/ncu-score.txt"; local rc=$?
    grep -E "Duration|Registers|Achieved Occupancy|Theoretical Occupancy|Block Limit|Stall|Grid Size|Dynamic Shared" \
        "$OUT/ncu-score.txt"
    return $rc
}
{
  echo "== gpu-check $(date -u +%FT%TZ) on $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  fail=0
  step kernels-cold "$ZP" kernels --quiet --set kernel_cache_dir="$ZIPAGE_KERNEL_CACHE" || fail=1
  step kernels-warm "$ZP" kernels --quiet --set kernel_cache_dir="$ZIPAGE_KERNEL_CACHE" || fail=1
  for t in "$C"/gpu/tests/test_*; do
    [ -x "$t" ] || continue
    step "$(basename "$t")" "$t"; rc=$?
    [ $rc = 0 ] || [ $rc = 77 ] || fail=1
  done
  # the engine on the GPU: bf16 logits against transformers on random models and against the
  # CPU backend on the shipped model; greedy generation on both backends
  step gpu-parity env PYTHONUNBUFFERED=1 python3 tools/gpu_parity.py "$ZP" "$OUT/gpu-parity.json" \
      --cpu-twin models/zipage-reasoner --trained models/zipage-reasoner \
      --sets models/zipage-reasoner/test.jsonl,tools/task/data/task2-test.jsonl || fail=1
  step engine-greedy bash tools/gpu-greedy.sh "$ZP" "$OUT" 198/200 200/200 || fail=1
  # compression on the GPU: accuracy at the budgets of docs/ACCURACY.md against the CPU's
  step gpu-accuracy bash tools/gpu-accuracy.sh "$ZP" "$OUT" || fail=1
  # make run's script with the carried binaries (its last part runs on the GPU)
  [ -x "$C/zipage-cli" ] && { step make-run env ZP_BUILD="$C" bash tools/run-demo.sh || fail=1; }
  if [ $bench = 1 ]; then
    # decode throughput of a Qwen3-8B-shaped model beside the roofline and the PyTorch peer
    step bench-decode "$ZP" bench decode --model tools/shapes/qwen3-8b --backend cuda \
        --prefill 2048 --json "$OUT/bench-decode.jsonl" || fail=1
    # the same from the cache of tuned GEMM plans (a second start), and the cost of batch
    # invariance: cuBLASLt's heuristic per batch size instead (batch_invariant=false)
    step bench-decode-cached "$ZP" bench decode --model tools/shapes/qwen3-8b --backend cuda \
        --prefill 2048 --json "$OUT/bench-decode-cached.jsonl" || fail=1
    step bench-decode-heuristic "$ZP" bench decode --model tools/shapes/qwen3-8b --backend cuda \
        --prefill 2048 --set batch_invariant=false --json "$OUT/bench-decode-heuristic.jsonl" || fail=1
    # decode rows through zp_attn_partial (CUDA cores) instead of the tensor-core kernel
    step bench-decode-simt "$ZP" bench decode --model tools/shapes/qwen3-8b --backend cuda \
        --set attention_kernel=simt --json "$OUT/bench-decode-simt.jsonl" || fail=1
    # without CUDA graphs
    step bench-decode-eager "$ZP" bench decode --model tools/shapes/qwen3-8b --backend cuda \
        --set cuda_graphs=false --json "$OUT/bench-decode-eager.jsonl" || fail=1
    # plain stream order instead of programmatic dependent launch (cuda_pdl=false)
    step bench-decode-nopdl "$ZP" bench decode --model tools/shapes/qwen3-8b --backend cuda \
        --set cuda_pdl=false --json "$OUT/bench-decode-nopdl.jsonl" || fail=1
    # the curve: tok/s over the batch at 2,048 and 8,192 tokens beside the peer and the roofline
    # (tools/plot_decode.py draws $OUT/decode.png; the peer's points include the table's four)
    sweep=1x2048,4x2048,16x2048,32x2048,64x2048,128x2048,256x2048,16x8192,64x8192
    step bench-decode-sweep "$ZP" bench decode --model tools/shapes/qwen3-8b --backend cuda \
        --points $sweep --json "$OUT/bench-decode-sweep.jsonl" || fail=1
    step peer-decode env PYTHONUNBUFFERED=1 python3 tools/peer_decode.py --points $sweep \
        --json "$OUT/peer-decode.jsonl" || fail=1
    step plot-decode python3 tools/plot_decode.py "$OUT/bench-decode-sweep.jsonl" \
        "$OUT/peer-decode.jsonl" "$OUT/decode.png" "Qwen3-8B shape, $(nvidia-smi \
        --query-gpu=name --format=csv,noheader | head -1), $(date -u +%F)" || fail=1
    # the compressed throughput workload's decode steps (Qwen3-1.7B shape, 85-112 rows of about
    # 1,152 positions) with the tuned batch-invariant GEMM plans and with cuBLASLt's heuristic
    # per batch size: what batch invariance costs where the compressed roofline target is missed
    p17=1x1152,88x1152,112x1152,256x1152
    step bench-decode-1.7b "$ZP" bench decode --model tools/shapes/qwen3-1.7b --backend cuda \
        --points $p17 --json "$OUT/bench-decode-1.7b.jsonl" || fail=1
    step bench-decode-1.7b-heuristic "$ZP" bench decode --model tools/shapes/qwen3-1.7b \
        --backend cuda --points $p17 --set batch_invariant=false \
        --json "$OUT/bench-decode-1.7b-heuristic.jsonl" || fail=1
    # the cost of compression on the GPU: 256 requests at block size 256, M 8, asynchronous
    # against synchronous compression (exposed compression time, throughput)
    step bench-compress "$ZP" bench compress --model tools/shapes/qwen3-8b --backend cuda \
        --json "$OUT/bench-compress.jsonl" || fail=1
    # full KV against compressed in a 16 GB KV pool on the Qwen3-1.7B shape (the issue's workload:
    # 256 x 512 prompt x 8,192 output; ZP_THROUGHPUT_GEN shortens the output for a short run)
    step bench-throughput "$ZP" bench throughput --model tools/shapes/qwen3-1.7b --backend cuda \
        --requests 256 --prompt 512 --gen "${ZP_THROUGHPUT_GEN:-8192}" --budget 4 \
        --set kv_memory_mb=16384 --json "$OUT/bench-throughput.jsonl" || fail=1
    # the compressed mode again with slot holders only (hybrid_scheduling=false: no slotless
    # requests, no preemption), to choose the default by measurement
    step bench-throughput-slots "$ZP" bench throughput --model tools/shapes/qwen3-1.7b --backend cuda \
        --requests 256 --prompt 512 --gen "${ZP_THROUGHPUT_GEN:-8192}" --budget 4 --modes compressed \
        --set kv_memory_mb=16384 --set hybrid_scheduling=false \
        --json "$OUT/bench-throughput-slots.jsonl" || fail=1
    # serving over the IPC against in-process on the same workload (2,048 output tokens): needs
    # Qwen3's tokenizer files beside the shape's config.json (ZP_QWEN3_TOKENIZER: a directory
    # holding tokenizer.json and tokenizer_config.json, carried to the machine)
    if [ -n "${ZP_QWEN3_TOKENIZER:-}" ]; then
      tq=$(mktemp -d) && cp tools/shapes/qwen3-1.7b/config.json \
        "$ZP_QWEN3_TOKENIZER"/tokenizer.json "$ZP_QWEN3_TOKENIZER"/tokenizer_config.json "$tq"/ &&
        step bench-throughput-ipc "$ZP" bench throughput --model "$tq" --backend cuda \
          --requests 256 --prompt 512 --gen 2048 --budget 4 --set kv_memory_mb=16384 --ipc \
          --json "$OUT/bench-throughput-ipc.jsonl" || fail=1
      rm -rf "$tq"
    fi
    # zipage beside transformers' generate_batch (continuous batching, CUDA graphs): 64 requests x
    # 128 prompt x 1,024 new tokens on the Qwen3-1.7B shape
    step bench-throughput-64 "$ZP" bench throughput --model tools/shapes/qwen3-1.7b --backend cuda \
        --requests 64 --prompt 128 --gen 1024 --modes full --json "$OUT/bench-throughput-64.jsonl" || fail=1
    step peer-generate-batch env PYTHONUNBUFFERED=1 python3 tools/peer_generate_batch.py \
        --json "$OUT/peer-generate-batch.jsonl" || fail=1
    # prefill TFLOP/s beside cuBLAS's on the same layer's GEMMs at M = 4,096 (target: a 4,096-token
    # prompt at >= 70% of it), and start-up time with an empty and a filled kernel cache
    step peer-gemm env PYTHONUNBUFFERED=1 python3 tools/peer_gemm.py --json "$OUT/peer-gemm.json" || fail=1
    peak=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["total_tflops"])' \
        "$OUT/peer-gemm.json" 2>/dev/null)
    step bench-prefill "$ZP" bench prefill --model tools/shapes/qwen3-8b --backend cuda \
        ${peak:+--peak-tflops "$peak"} --json "$OUT/bench-prefill.jsonl" || fail=1
    # the same with the prompt rows' attention on mma.sync (prefill.cu; auto is wgmma on sm_90)
    step bench-prefill-mma "$ZP" bench prefill --model tools/shapes/qwen3-8b --backend cuda \
        ${peak:+--peak-tflops "$peak"} --set attention_prefill_kernel=mma \
        --json "$OUT/bench-prefill-mma.jsonl" || fail=1
    step bench-startup "$ZP" bench startup --model tools/shapes/qwen3-8b --backend cuda \
        --json "$OUT/bench-startup.jsonl" || fail=1
    # a 2,048-row prompt's attention: the tensor-core prefill kernel beside every row through
    # zp_attn_partial (8 kv heads, head dim 128)
    step bench-attention-prefill "$ZP" bench attention --prefill 2048 --block-sizes 16,256 --gqa 4,8 \
        --json "$OUT/bench-attention-prefill.jsonl" || fail=1
    step bench-attention-prefill-mma "$ZP" bench attention --prefill 2048 --block-sizes 16,256 \
        --gqa 4,8 --set attention_prefill_kernel=mma \
        --json "$OUT/bench-attention-prefill-mma.jsonl" || fail=1
    # tensor parallelism (issue 16) on a machine of 2+ GPUs: the engine's rank threads end to end,
    # TP 2 beside TP 1 on the Qwen3-8B shape (64 requests x 512 prompt x 1,024 output, full KV)
    if [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 2 ]; then
      for tp in 1 2; do
        step bench-throughput-tp$tp "$ZP" bench throughput --model tools/shapes/qwen3-8b --backend cuda \
            --requests 64 --prompt 512 --gen 1024 --modes full --set tensor_parallel_size=$tp \
            --json "$OUT/bench-throughput-tp.jsonl" || fail=1
      done
    fi
  fi
  if [ $attn = 1 ]; then
    # paged decode attention beside torch SDPA on the same shapes
    step bench-attention "$ZP" bench attention --json "$OUT/bench-attention.jsonl" || fail=1
    step peer-sdpa env PYTHONUNBUFFERED=1 python3 tools/peer_sdpa.py --json "$OUT/peer-sdpa.jsonl" || fail=1
  fi
  if [ $acc = 1 ]; then
    step accuracy-sweep bash tools/accuracy-sweep.sh "$ZP" "$OUT/accuracy/sweep" cuda 8 || fail=1
    step accuracy-table bash tools/accuracy-table.sh "$ZP" "$OUT/accuracy/table" cuda 8 || fail=1
    cp "$OUT/accuracy/sweep/sweep.md" "$OUT/accuracy-sweep.md" 2>/dev/null
    tar czf "$OUT/accuracy.tgz" -C "$OUT" accuracy && rm -rf "$OUT/accuracy"
  fi
  if [ $prof = 1 ]; then
    step profile-decode profile_decode ncu-decode qwen3-8b 64x2048 || fail=1
    # the compressed throughput workload's decode steps: about 88 rows of 1,152 positions
    step profile-decode-1.7b profile_decode ncu-decode-1.7b qwen3-1.7b 88x1152 || fail=1
    step profile-score profile_score || fail=1
  fi
  if [ $parity = 1 ]; then
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
    step parity env PYTHONUNBUFFERED=1 python3 tools/hf_parity.py "$ZP" "$OUT/parity.json" || fail=1
  fi
  (IFS=,; echo "{\"date\": \"$(date -u +%FT%TZ)\", \"failed\": $fail, \"steps\": [${steps[*]}]}") > "$json"
  echo "== gpu-check exit $fail"
  exit $fail
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
