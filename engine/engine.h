/* engine: the request table and the step loop (schedule -> batch metadata -> forward ->
 * sample -> append / finish -> emit). Single-threaded: every engine_* call comes from the
 * one scheduler thread. Outputs leave through the per-engine callback given at init; the
 * callback must not call back into the engine except engine_cancel().
 * Under tensor parallelism (tensor_parallel_size > 1, docs/TENSOR_PARALLEL.md) that thread is
 * rank 0, and the engine owns one more thread per other rank (engine/tp.h), each driving its
 * rank's backend; they are created by engine_open and ended by engine_close.
 *
 * Requests are copied into engine memory at submit (prompt ids included), so callers may
 * free their buffers at once. Every accepted request gets exactly one terminal event.
 */
#ifndef ZP_ENGINE_H
#define ZP_ENGINE_H

#include "arena/arena.h"
#include "drv/backend.h"
#include "drv/comm.h"
#include "engine/conf.h"
#include "engine/loader.h"
#include "engine/sampler.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct engine engine;

typedef struct engine_request {
    uint64_t user_tag;         /* opaque to the engine, echoed in events */
    const int32_t *prompt_ids; /* copied at submit */
    int32_t n_prompt;
    sampling_params sp;
    int8_t compress;          /* -1 = engine default, 0 = never compress, 1 = compress */
    int32_t kv_budget_blocks; /* 0 = engine default (max_cache_blocks_per_seq) */
    int32_t protect_prompt;   /* -1 = engine default (key protect_prompt), else the number of
                               * leading prompt tokens never evicted (0 = none) */
    bool logprobs;
    /* The oracle baseline of `zipage bench accuracy` (docs/ACCURACY.md); in-process only, NULL
     * otherwise. Tables are the caller's and must outlive the request. record: with full KV
     * (compress off for the request) on a backend with attn_record (CPU), every generated
     * token's query attention is max-folded into it; n_pos >= prompt + max_tokens. oracle:
     * what eviction=oracle ranks this request's tokens by (the record of a full-KV run of the
     * same request, rows turned into suffix maxima). */
    be_oracle *record;
    const be_oracle *oracle;
    /* Teacher forcing (zipage bench ppl; in-process only, NULL otherwise): the k-th generated
     * token is forced[k] instead of a sample, for k < n_forced = sp.max_tokens; its event's
     * logprob is forced[k]'s log-probability under the step's logits (over the ids the
     * tokenizer can produce) and top1 those logits' argmax; end-of-sequence ids do not stop
     * the request. The array is the caller's and must outlive the request. */
    const int32_t *forced;
    int32_t n_forced;
} engine_request;

typedef enum {
    ENGINE_RUNNING = 0, /* a token event, more follow */
    ENGINE_FINISH_STOP,
    ENGINE_FINISH_LENGTH,
    ENGINE_FINISH_CANCELLED,
    ENGINE_FINISH_ERROR,
} engine_finish;

typedef struct engine_usage {
    int32_t prompt_tokens, completion_tokens;
    int32_t kv_blocks_peak, compressions;
    int64_t evicted_tokens;
    int32_t cached_prompt_tokens; /* prefix-cache hits */
} engine_usage;

/* One event per generated token (finish = ENGINE_RUNNING, token set) and one terminal event
 * (finish != ENGINE_RUNNING; token = the last token or -1; usage filled). */
typedef struct engine_event {
    uint64_t req_id, user_tag;
    int32_t token;
    float logprob;
    int32_t top1; /* forced requests: the argmax of the step's logits; else -1 */
    engine_finish finish;
    int32_t err_code;    /* ZP_E* when finish == ENGINE_FINISH_ERROR */
    const char *err_msg; /* valid during the callback */
    engine_usage usage;
} engine_event;

typedef void (*engine_output_fn)(void *user, const engine_event *ev);

typedef struct engine_stats {
    int32_t running, waiting, max_concurrency;
    int32_t blocks_total, blocks_used, blocks_free, blocks_peak;
    int64_t steps, prompt_tokens, completion_tokens, preemptions;
    int64_t prefix_hit_tokens, prefix_query_tokens;
    int64_t compressions, evicted_tokens;
    int64_t graph_steps;    /* decode steps replayed from a CUDA graph */
    int64_t kv_tokens_read; /* KV positions attention read: per scheduled row, its cache
                             * length after the step (kv_len + tokens taken), summed over steps */
    double score_seconds, compact_seconds, forward_seconds, busy_seconds;
    double cmp_device_seconds;  /* device time of compression batches, event-timed */
    double cmp_exposed_seconds; /* the part of it while the compute queue ran no forward step */
    double tokens_per_s;        /* completion tokens per busy second */
} engine_stats;

/* Loads the model named by cf->model on the configured backend, plans memory (activations,
 * KV blocks) and carves everything from the arena and the backend reservation. n_valid: ids
 * the tokenizer can produce (logits of ids >= n_valid are masked); 0 = the model's vocab.
 * extra_eos: further end-of-sequence ids (e.g. the tokenizer's), may be NULL.
 * tensor_parallel_size > 1 (backend=cuda only, engine_check_tp): one CUDA backend per rank on
 * GPUs cuda_device + rank, NCCL loaded from nccl_path and the ranks' communicators made with
 * comm_nccl_open; every rank plans its own KV pool, and the block count and query-cache slots
 * are the minimum over ranks. */
int engine_open(engine **out, arena *a, const conf *cf, int32_t n_valid, const int32_t *extra_eos,
                int n_extra_eos, engine_output_fn out_fn, void *user);
/* The same with the ranks' communicators given: comms[r] is rank r's of tensor_parallel_size
 * (ZP_EINVAL otherwise), on any backend (tests run CPU ranks joined by tests/tp_comm.h). The
 * communicators are the caller's and must outlive the engine. */
int engine_open_comms(engine **out, arena *a, const conf *cf, comm *const *comms, int32_t n_valid,
                      const int32_t *extra_eos, int n_extra_eos, engine_output_fn out_fn,
                      void *user);
void engine_close(engine *e);
/* Facts for banners and clients. */
typedef struct engine_info {
    const char *backend, *arch;
    const char *backend_why;   /* one line: the backend chosen and why */
    const char *backend_plans; /* one line on the GEMM plans chosen at start-up, or "" */
    int32_t vocab, n_valid, layers, hidden, max_model_len, block_size, num_blocks;
    int32_t max_num_seqs, max_concurrency;
    size_t kv_bytes, device_bytes;
    /* engine_open's wall time in seconds: the weights read or made (loader), the backend
     * created (driver, NVRTC kernels), the weights uploaded, the decode graphs captured, and
     * the whole call (the rest: memory plan, reservation, GEMM plans, buffers) */
    struct {
        double weights, backend, upload, graphs, total;
    } open_s;
} engine_info;
void engine_get_info(const engine *e, engine_info *info);
/* What the backend factory needs, for tools that run the model alone: the model's shape and
 * the step bounds, and the settings from a configuration. */
void engine_be_shape(const model_config *mc, int32_t block_size, int32_t max_tokens,
                     int32_t max_logits, int32_t max_model_len, be_shape *s);
void engine_be_config(const conf *cf, be_config *bc);
/* Refuses at start-up what tensor parallelism cannot run: tensor_parallel_size > 1 off
 * backend=cuda (CPU ranks exist only in tests, through engine_open_comms), or in a tool that runs
 * the model alone on one device (alone: its command, e.g. "logits"; NULL for the engine's
 * commands). ZP_EUNSUP naming the key, else 0. */
int engine_check_tp(const conf *cf, const char *alone);

/* Queues a request. *req_id gets its id. Errors (prompt too long, bad parameter, queue
 * full) are returned at once with a message, and no event is ever sent for that request. */
int engine_submit(engine *e, const engine_request *r, uint64_t *req_id);
/* Cancels a request; its blocks are freed at once and a CANCELLED terminal event follows. */
int engine_cancel(engine *e, uint64_t req_id);
/* Runs one step. Returns the number of unfinished requests, or a negative code. A backend's
 * failure ends the step's requests with it. Under tensor parallelism it also stops the ranks
 * (their group aborted, engine/tp.h): every later step ends the remaining requests with that
 * failure and engine_submit refuses new ones (ZP_ESTATE), until the engine is restarted. */
int engine_step(engine *e);
void engine_get_stats(const engine *e, engine_stats *s);

/* Introspection for tests and diagnostics (cost O(blocks + requests); not for the hot path).
 * engine_check verifies every scheduler and block invariant and returns ZP_ESTATE with a
 * message naming the first one broken. engine_debug_block reports a block's reference
 * count and a hash of its K/V contents across all layers (rank 0's kv heads under tensor
 * parallelism). */
int engine_check(const engine *e);
/* The engine's backend, rank 0's under tensor parallelism (tests reach the CUDA backend's driver
 * table through it). */
backend *engine_backend(const engine *e);
int engine_debug_block(engine *e, int32_t block, int32_t *ref, uint64_t *contents);

#endif
