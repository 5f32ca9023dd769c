/* model: a decoder-only transformer (Qwen3, Qwen2, Llama) as a sequence of backend ops.
 *
 * model_forward() runs one step over a batch of token rows from any number of sequences
 * (prefill chunks and decodes mixed): embed -> per layer [residual add + RMSNorm, fused QKV
 * projection (+bias), per-head q/k RMSNorm (Qwen3) + RoPE + KV store into the paged cache,
 * paged attention, output projection, residual add + RMSNorm, fused gate/up projection,
 * SwiGLU, down projection] -> final norm -> LM head on the rows that want logits -> either
 * the logits or (greedy steps) the argmax ids come back. The residual stream is f32, other
 * activations the backend's act_dtype. Metadata for the step is staged on the host in
 * model_batch (one contiguous int32 area) and uploaded with one call.
 *
 * Memory: everything is carved at model_init from the backend reservation (weights,
 * activations for max_tokens rows, logits for max_logits rows, the KV cache of num_blocks
 * blocks, metadata), from the backend's host staging (alloc_host: the per-step metadata,
 * sampling and compression staging, the ids / logprobs / logits that come back) and from the
 * host arena (the layer table). No allocation later.
 * Queues: forward passes run on the backend's compute queue and wait for it alone; a compression
 * batch (model_compress_begin) runs its ops on the compression queue after the compute work
 * queued before it, and overlaps the forward passes after it: the caller keeps those away from
 * the batch's requests and blocks until model_compress_done says it finished. One launch per
 * op covers every layer (layer tables of the K, V and score caches, scratch slabs per layer).
 * Its phases, and the forward passes it overlapped, are timed by timer events (the event ids
 * below): what part of the batch's device time the compute queue spent idle is counted.
 * Single-threaded: called from the engine thread.
 */
#ifndef ZP_MODEL_H
#define ZP_MODEL_H

#include "arena/arena.h"
#include "drv/backend.h"
#include "drv/comm.h"
#include "drv/sample_abi.h"
#include "engine/loader.h"
#include "engine/shard.h"

/* The backend events the model uses (ids of the backend's pool; other users take others): one
 * marks the compute work that compression reads; 3 timer marks from MODEL_EV_MARK bound a
 * compression batch's phases (start, scoring + selection done, compaction done); and, when
 * compressing, each forward pass records a start and an end event in a ring of
 * MODEL_STEP_RING pairs from MODEL_EV_STEP (the compute intervals a batch may overlap). */
enum { MODEL_EV_COMPUTED = 0, MODEL_EV_MARK = 1, MODEL_EV_STEP = 4, MODEL_STEP_RING = 32 };

typedef struct model_dims {
    int32_t max_tokens; /* rows per step */
    int32_t max_logits; /* rows with logits per step */
    int32_t max_seqs;   /* sequences per step */
    int32_t max_blocks; /* block-table width */
    int32_t block_size;
    int32_t num_blocks;
    zp_dtype kv_dtype;
    int32_t graphs;  /* capture decode steps as CUDA graphs (when the backend has them) */
    int32_t n_valid; /* ids the greedy path and the sampler may choose (0 = the vocabulary) */
    /* compression (all 0 when off) */
    int32_t qcache_slots; /* query-cache slots */
    int32_t qcl;          /* queries kept per slot and layer */
    int32_t cmp_jobs;     /* compression jobs per batch */
    int32_t cmp_max_pos;  /* longest job, positions (multiple of block_size) */
    int32_t cmp_max_keep; /* largest n_keep */
    be_cparams cp;        /* the compression ops' parameters: decode graphs capture them (under
                           * tensor parallelism hq and hkv are the rank's own) */
    /* Tensor parallelism (docs/TENSOR_PARALLEL.md): NULL = one rank, the whole model; else this
     * rank's communicator, and the model is rank comm->rank's shard of comm->size
     * (engine/shard.h). Every rank runs model_forward on the same batch, each from the thread
     * that owns its backend. */
    comm *comm;
} model_dims;

/* Host staging of one step's metadata (filled by the scheduler, see be_batch). */
typedef struct model_batch {
    int32_t n_tokens, n_seqs, n_logits;
    bool want_ids; /* only ids come back (host_ids): argmax, or the backend's sampler when it
                    * has one (then sparams / seat jobs are staged and logprobs come back) */
    int32_t *token_ids, *positions, *slots, *tok_seq, *tok_kv_idx, *logit_rows;
    int32_t *tok_qslot;            /* query-cache slot of each token, -1 = none */
    int32_t *tok_prompt;           /* set for every row: nonzero = a prompt token (its attention
                                    * may run in the backend's prefill kernel) */
    int32_t *qtile;                /* [2 * max_tokens] the q-tiles model_forward builds */
    int32_t *dec_rows;             /* [max_tokens] with q-tiles, the other rows (model_forward) */
    int32_t *block_tables;         /* [max_seqs][max_blocks] */
    zp_sample_params *sparams;     /* [max_logits], per logit row (backends that sample) */
    zp_sample_seat_job *seat_jobs; /* [max_logits]: seats to initialise this step */
    int32_t n_seat_jobs;
    int32_t *hist; /* [hist_cap]: the ids the seat jobs read */
    int32_t n_hist, hist_cap;
    const be_oracle **rec; /* [max_tokens] the row's attention record or NULL (backends with
                            * attn_record; NULL otherwise), n_rec of them set this step */
    int32_t n_rec;
} model_batch;

/* Host staging of one compression batch (see be_cjobs). */
typedef struct model_cjobs {
    int32_t n_jobs;
    int32_t *n_blocks, *kv_len, *n_keep, *qslot, *flags, *protect, *seed;
    int32_t *src, *dst;       /* [cmp_jobs][max_blocks] */
    const be_oracle **oracle; /* [cmp_jobs] with seq_len: eviction=oracle (backends with
                               * attn_record; NULL otherwise) */
    int32_t *seq_len;
} model_cjobs;

typedef struct be_w {
    be_ptr p;
    zp_dtype t;
} be_w;

typedef struct model_layer {
    be_w in_norm, post_norm, qn, kn;
    be_linear qkv, o, gu, down; /* qkv: q|k|v (+biases); gu: gate|up */
    be_ptr kc, vc, cc;          /* cc: carried scores, when compressing */
} model_layer;

typedef struct model {
    model_config cfg; /* the rank's view (shard_config): its heads, kv heads, intermediate rows */
    model_dims dims;
    backend *be;
    comm *comm;          /* dims.comm */
    shard sh;            /* the rank's shard (the whole model at TP 1) */
    int full_kv_heads;   /* the checkpoint's kv heads */
    int comm_rc;         /* the first collective error (the communicator is unusable after it) */
    be_ptr logits_piece; /* TP > 1: [max_logits][sh.vocab] logits of the rank's vocabulary rows */
    model_layer *layers;
    be_w embed, final_norm;
    be_linear lm_head;
    be_ptr x, xn, qkv, q, att, gu, h, sel, logits, ids, inv_freq;
    be_ptr meta;
    size_t meta_words;
    int32_t *host_meta;
    model_batch batch;
    int32_t n_valid;      /* ids >= n_valid are never chosen (dims.n_valid, fixed before capture) */
    float *host_logits;   /* [max_logits][vocab] */
    int32_t *host_ids;    /* [max_logits], after a want_ids step */
    float *host_logprobs; /* [max_logits], after a step sampled on the backend */
    be_ptr smeta, shist, logprobs; /* device sampling: params + seat jobs, history, logprobs */
    be_batch bb;
    be_ptr tok_qslot;
    /* compression */
    be_ptr qc, scores, work, keep, cmeta;
    be_ptr ctab; /* layer tables: K bases [layers], then V, then score caches */
    size_t cmeta_words;
    int32_t *host_cmeta;
    model_cjobs cjobs;
    be_cjobs bcj;
    double score_seconds, compact_seconds; /* model_compress's phases, timed by events */
    double cmp_seconds;         /* device time of compression batches (first mark to last) */
    double cmp_exposed_seconds; /* the part of it outside the forward passes of the ring */
    int cmp_marks;              /* marks of the batch in flight (0: none) */
    int64_t fwd_steps;          /* forward passes timed in the step ring */
    int64_t cmp_step0;          /* the first forward pass after the batch in flight began */
    /* decode-step graphs: slot = batch bucket * n_len_buckets + length bucket */
    int32_t n_batch_buckets, n_len_buckets;
    int32_t batch_bucket[32], len_bucket[32];
    int64_t graph_steps; /* decode steps replayed from a graph */
    /* model_init's wall time: the weights' upload (to the end of the copies) and the capture
     * of the decode graphs */
    double upload_seconds, capture_seconds;
} model;

/* Bytes of backend memory model_init will carve, exactly (plan the reservation with it): the
 * same walk over the same buffers, counting instead of carving; of the rank's shard under tensor
 * parallelism (0 for a shard that shard_plan refuses: model_init says why). */
size_t model_device_bytes(const model_config *c, const model_weights *w, const model_dims *d,
                          backend *be);
/* Bytes of host staging model_init will take with alloc_host, exactly (the reservation's
 * host_bytes), by the same walk. */
size_t model_host_bytes(const model_config *c, const model_dims *d, backend *be);
/* Bytes of one KV block across all layers: K and V, plus the carried f32 score per token
 * and kv head when compressing. Under tensor parallelism, of one rank: pass the rank's config
 * (shard_config). */
size_t model_block_bytes(const model_config *c, int32_t block_size, zp_dtype kv_dtype, bool scores);
int model_init(model *m, arena *a, backend *be, const model_config *c, const model_weights *w,
               const model_dims *d);
/* Runs the staged batch; logits of the logit rows land in m->host_logits (rank 0's only under
 * tensor parallelism; every rank runs the same batch), or with want_ids
 * the chosen ids in m->host_ids (-1 a NaN, -2 a +inf, -3 every logit -inf: drv/sample_abi.h). A
 * decode step (one token per sequence, want_ids) replays the CUDA graph of its batch and length
 * buckets when the model captured graphs; every other step runs op by op. Both give the same bits.
 */
int model_forward(model *m);
/* Compresses the staged jobs: scores, selects and compacts every layer on the compression
 * queue; adds the device time of the scoring and compaction phases to score_seconds and
 * compact_seconds, the batch's to cmp_seconds, and the part of it that no forward pass
 * overlapped to cmp_exposed_seconds (forward passes that began after the batch and fell out of
 * the step ring count as not overlapping). On return the work is done and later compute work
 * is ordered after it. */
int model_compress(model *m);
/* The same in two halves. begin queues the batch (one at a time) on the compression queue and
 * returns; done is 1 once it has run (0 while it runs, < 0 on error); end (after done, or to
 * wait for it) reports the batch's errors and adds its phase times. model_compress = begin +
 * end. Until end, the batch's K/V blocks, query-cache slots and host staging are its own. */
int model_compress_begin(model *m);
int model_compress_done(model *m);
int model_compress_end(model *m);
/* Bytes of one query-cache slot (all layers). */
size_t model_slot_bytes(const model_config *c, int32_t qcl);
/* Bytes of compression scratch for the dims' job batch. */
size_t model_cmp_scratch_bytes(const model_config *c, const model_dims *d);
/* The RoPE inverse frequencies HF computes for this config (default or llama3), f32. */
void model_rope_inv_freq(const model_config *c, float *out);

#endif
