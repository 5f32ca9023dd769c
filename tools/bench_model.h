/* bench_model: the model-level harness of `zipage bench decode` and `zipage bench prefill`: a
 * model of DIR/config.json's shape on random weights (loader_dummy_weights: one buffer of small
 * bf16 values that every tensor shares, so no checkpoint is read) or, with real weights, the
 * directory's checkpoint (each tensor its own memory: on the CPU, where the shared buffer's
 * layers stay in cache, the only way to time the weights' traffic), a backend made for the
 * largest step the benchmark runs (engine_be_shape, engine_be_config, backend_create) and the
 * model placed for that step (model_init), without the engine's scheduler or KV memory plan.
 * The benchmark stages each step in m->batch (block tables included) and runs model_forward.
 *
 * Invariants: every step stays within the bounds given at open (rows, sequences, block-table
 * width, blocks); the cache holds whatever the memory held (attention costs the same whatever
 * the values).
 * Memory: the arena bm->a (host_arena_mb) holds the config, the weights and the model table;
 * the backend's reservation the model's buffers (and, with bounds.copy_bw on a GPU, the two
 * copy-bandwidth buffers). bench_model_close releases both.
 * Threading: one thread.
 */
#ifndef ZP_BENCH_MODEL_H
#define ZP_BENCH_MODEL_H

#include "arena/arena.h"
#include "drv/backend.h"
#include "engine/conf.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "tools/bench_workload.h" /* bench_now_s */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bench_model {
    arena a;
    model_config mc;
    model_weights mw;
    backend *be;
    model *m;
    be_ptr copy_src, copy_dst; /* bench_roofline_bw's buffers on a GPU (BENCH_COPY_BYTES), or 0 */
} bench_model;

/* The largest step: token rows, sequences (each with logits), the block-table width and the
 * blocks in the cache. copy_bw: also reserve two BENCH_COPY_BYTES buffers for bench_roofline_bw
 * when the backend is not the CPU. */
typedef struct bench_bounds {
    int32_t max_tokens, max_seqs, max_blocks, num_blocks;
    bool copy_bw;
} bench_bounds;

enum { BENCH_COPY_BYTES = 512 << 20 }; /* ten times the L2 of an H100 / H200 */

/* Opens the arena, reads DIR/config.json (cf->model), makes the weights (real_weights: reads the
 * checkpoint; else random), creates the backend of
 * cf (block_size, cuda_graphs and the backend keys) and places the model; prints on stderr,
 * each line starting "TOOL: ", the backend, the placement (seconds, GiB, CUDA graphs) and the
 * GEMM plans. On failure nothing is left to release. */
int bench_model_open(bench_model *bm, const conf *cf, const char *tool, const bench_bounds *b,
                     bool real_weights);
void bench_model_close(bench_model *bm);

/* Parameters of one layer's linear layers (fused QKV, O, fused gate/up, down), biases left out:
 * H ((Hq + 2 Hkv) D + Hq D + 3 I). */
size_t bench_layer_linear_params(const model_config *mc);

/* Times one step that prefills a P-token prompt of one sequence (ids i * 7919 mod vocab at
 * positions 0..P-1 in blocks 0, 1, ...; logits of the last row only; greedy id back): one
 * warm-up, then the median of 5 into *median_s. Needs P <= max_tokens and ceil(P / block_size)
 * blocks within the bounds. */
int bench_prefill_step(bench_model *bm, int32_t P, double *median_s);

/* Bytes of weights one decode step reads: every layer's linear weights and the LM head, as
 * stored (a tied head counts once; norms and biases are left out). */
size_t bench_step_weight_bytes(const bench_model *bm);

/* The roofline's bandwidth in GB/s, measured now and printed on stdout. On the CPU backend the
 * host's read bandwidth: cf's thread count (all cores when 0) each summing its share of a 256
 * MiB buffer from bm's arena, the best of 5 passes ("memory bandwidth: X GB/s (read, N threads,
 * measured now)"; ZP_ENOMEM when the arena cannot hold the buffer). On a GPU its copy bandwidth,
 * the measure the PyTorch peers use (tools/peer_decode.py times one pass of 2 GiB copies with
 * events): bytes read plus written per second by device-to-device copies of BENCH_COPY_BYTES on
 * the compute queue, timed on the host to the sync, the best of 5 passes of 10 copies after 3
 * untimed ("copy bandwidth: X GB/s (device to device, measured now)"; needs bounds.copy_bw,
 * ZP_EINVAL without it). */
int bench_roofline_bw(bench_model *bm, const conf *cf, double *gbps);

/* Opens DIR's model for one one-token request (random weights, bounds.copy_bw; on one device,
 * whatever cf's tensor_parallel_size), measures bench_roofline_bw and closes it: for benchmarks
 * that run the engine itself. It places the whole model (seconds of upload and, on a GPU, a
 * tuning of GEMM plans for one row, kept in kernel_cache_dir), which a benchmark of minutes can
 * afford, in exchange for one path to a backend and its memory. */
int bench_measure_bw(const conf *cf, const char *tool, double *gbps);

/* Greedy, no penalty, no logprob for rows 0..rows-1 (backends that sample read these). */
void bench_stage_greedy(model_batch *b, int32_t rows);
/* The ids of a step: a negative one is the sampler's error. */
int bench_check_ids(const model *m, int32_t rows);

/* Sorts t[0..n-1] and returns its median (the upper one for even n). */
double bench_median(double *t, int n);

#endif
