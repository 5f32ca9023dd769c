/* bench_workload: what the benchmarks share: a monotonic clock, and for the engine-level ones
 * (`zipage bench compress`, `bench throughput`) the configuration of a workload submitted at
 * once on random weights and its seeded random prompts.
 *
 * Invariants: request i's prompt depends only on (i, its length, the vocabulary), so every run
 * and every mode of a benchmark serves the same requests.
 * Memory: none of its own; callers pass the buffers. Threading: any.
 */
#ifndef ZP_BENCH_WORKLOAD_H
#define ZP_BENCH_WORKLOAD_H

#include "engine/conf.h"

#include <stdint.h>

/* Seconds on CLOCK_MONOTONIC. */
double bench_now_s(void);

/* The defaults of a workload benchmark, before -c and --set: dummy weights, block_size 256, and
 * max_num_seqs = 0 / max_model_len = -1 as markers that bench_workload_fit replaces. */
int bench_workload_conf(conf *cf, int *argc, char **argv);

/* After the arguments: max_num_seqs = requests and max_model_len = longest when left unset,
 * room to queue every request, and max_cache_blocks_per_seq = budget (M). */
void bench_workload_fit(conf *cf, int64_t requests, int64_t longest, int64_t budget);

/* Request i's prompt: n ids from a xorshift64 seeded by i, each in [0, vocab). */
void bench_prompt_ids(int32_t *ids, int64_t n, int64_t i, int32_t vocab);

#endif
