/* backend: the op table every compute backend implements (cpu.c now; cuda_ops.c next).
 *
 * The engine never touches backend memory directly. Buffers are `be_ptr` addresses in the
 * backend's own address space (a host address on the CPU backend, a CUdeviceptr on CUDA),
 * carved once at start-up from one reservation (be->reserve + be->alloc) and reached only
 * through ops, upload and download. Each step the engine writes its batch metadata into one
 * host staging area and uploads it with a single call; ops read it through be_batch.
 *
 * Ops know nothing about requests: only tokens, rows, slots and block tables. They are
 * asynchronous in principle (queued on the backend's stream); errors surface at be->sync().
 * On the CPU backend they run to completion, multi-threaded, and every output element is
 * computed by one thread in a fixed order, so results are bit-identical for any thread count
 * and any batch composition.
 *
 * KV cache layout, per layer: [num_blocks][Hkv][block_size][D] for K and for V, element type
 * kv_dtype. Token slot s lives in block s / bs at offset s % bs.
 */
#ifndef ZP_BACKEND_H
#define ZP_BACKEND_H

#include "drv/dtype.h"

#include <stddef.h>
#include <stdint.h>

typedef uint64_t be_ptr;

/* Per-step batch metadata (all int32 arrays in backend memory). Token rows are grouped by
 * sequence. A token at logical cache index i attends to cache indices [0, i] of its
 * sequence, so causality holds in cache order even after compaction (which preserves order);
 * RoPE uses `positions`, which need not equal the cache index. */
typedef struct be_batch {
    int32_t n_tokens, n_seqs, max_blocks, n_logits;
    be_ptr token_ids;    /* [n_tokens] */
    be_ptr positions;    /* [n_tokens] absolute positions for RoPE */
    be_ptr slots;        /* [n_tokens] physical slot receiving the token's K/V */
    be_ptr tok_seq;      /* [n_tokens] sequence row of each token */
    be_ptr tok_kv_idx;   /* [n_tokens] the token's logical cache index */
    be_ptr block_tables; /* [n_seqs][max_blocks] physical block ids */
    be_ptr logit_rows;   /* [n_logits] token rows whose logits are wanted */
} be_batch;

/* Compression of a batch of requests ("jobs"), one layer at a time (see
 * ../shared/spec/compressed-paged-attention.md, sections 4-6). Device metadata. A job's
 * cached positions p = 0 .. n_blocks*bs-1 run over its source block table in order;
 * positions >= kv_len are unused. */
enum { BE_CJ_GLOBAL = 1, /* already compressed: carried score applies to non-last blocks */
       BE_CJ_POOL = 2 };  /* max-pool the scores this time */

typedef struct be_cjobs {
    int32_t n_jobs;
    int32_t max_blocks; /* row stride of src / dst */
    int32_t max_pos;    /* row stride of score rows, >= every job's n_blocks * bs */
    int32_t max_keep;   /* row stride of keep rows, >= every job's n_keep */
    be_ptr n_blocks;    /* int32 [n_jobs] */
    be_ptr kv_len;      /* int32 [n_jobs] */
    be_ptr n_keep;      /* int32 [n_jobs] tokens kept per (layer, kv head): M * bs */
    be_ptr qslot;       /* int32 [n_jobs] query-cache slot */
    be_ptr flags;       /* int32 [n_jobs] BE_CJ_* */
    be_ptr src;         /* int32 [n_jobs][max_blocks] block table before compaction */
    be_ptr dst;         /* int32 [n_jobs][max_blocks] target blocks, first n_keep/bs used */
} be_cjobs;

typedef struct be_cparams {
    int32_t layers, hq, hkv, dim, bs, qcl;
    float scale;      /* 1/sqrt(dim) */
    int32_t max_norm; /* divide A by its max per (job, head) */
    float gamma;      /* decay of the carried score */
    int32_t pool;     /* max-pool width (odd; <= 1 = none) */
    int32_t redundancy; /* 0 lightning, 1 raw, 2 off */
    float lambda, temperature, threshold;
    int32_t sink_len;
} be_cparams;

typedef struct backend backend;

struct backend {
    const char *name;
    void *impl;
    int copies_weights; /* map_host copies into the reservation (so plan room for weights) */

    /* Memory: one reservation at start-up, carved by alloc (start-up only). */
    int (*reserve)(backend *be, size_t bytes);
    int (*alloc)(backend *be, size_t bytes, size_t align, be_ptr *out, const char *what);
    /* Makes host bytes (e.g. mapped weights) available to ops. May alias host memory
     * (CPU) or copy into the reservation (GPU). Start-up only. */
    int (*map_host)(backend *be, const void *host, size_t bytes, be_ptr *out, const char *what);
    int (*upload)(backend *be, be_ptr dst, const void *src, size_t bytes);
    int (*download)(backend *be, void *dst, be_ptr src, size_t bytes);
    int (*sync)(backend *be);
    void (*destroy)(backend *be);

    /* Forward-pass ops. Activations are f32 row-major; weights of type wt. */
    /* out[i][:] = table[ids[i]][:] */
    void (*embed)(backend *be, be_ptr out, be_ptr table, zp_dtype wt, be_ptr ids, int n, int dim);
    /* out[r] = x[r] / rms(x[r]) * w, rows of dim; out may equal x */
    void (*rmsnorm)(backend *be, be_ptr out, be_ptr x, be_ptr w, zp_dtype wt, int rows, int dim,
                    float eps);
    /* resid[r] += x[r]; out[r] = rmsnorm(resid[r]) */
    void (*add_rmsnorm)(backend *be, be_ptr resid, be_ptr x, be_ptr out, be_ptr w, zp_dtype wt,
                        int rows, int dim, float eps);
    /* out[n][m] = x[n][k] . w[m][k]^T (+ bias[m] when bias != 0) */
    void (*matmul)(backend *be, be_ptr out, be_ptr x, be_ptr w, zp_dtype wt, be_ptr bias, int n,
                   int k, int m);
    /* rotate-half RoPE in place on x[n][heads][dim] with angle positions[i] * inv_freq[j] */
    void (*rope)(backend *be, be_ptr x, be_ptr positions, be_ptr inv_freq, int n, int heads,
                 int dim);
    /* writes k/v rows [n][hkv*dim] into one layer's caches at slots */
    void (*kv_store)(backend *be, be_ptr kc, be_ptr vc, zp_dtype kvt, be_ptr k, be_ptr v,
                     be_ptr slots, int n, int hkv, int dim, int bs);
    /* out[t][hq*dim] = softmax(q k^T * scale) v over the token's cache indices [0, i] */
    void (*attention)(backend *be, be_ptr out, be_ptr q, be_ptr kc, be_ptr vc, zp_dtype kvt,
                      const be_batch *b, int hq, int hkv, int dim, int bs, float scale);
    /* out[i] = silu(gate[i]) * up[i] for n elements; out may equal gate */
    void (*silu_mul)(backend *be, be_ptr out, be_ptr gate, be_ptr up, size_t n);
    /* out[i][:] = x[rows[i]][:] */
    void (*gather_rows)(backend *be, be_ptr out, be_ptr x, be_ptr rows, int n, int dim);

    /* Fails (ZP_EUNSUP, message naming the limit and the key to change) when this backend
     * cannot run attention with p's heads and head dim, or (when p->qcl > 0) compress with
     * these parameters. Called once at start-up. */
    int (*check)(backend *be, const be_cparams *p);
    /* Compression ops. Query cache qc: f32 [slots][layers][qcl][hq][dim]; the query of a
     * token with cache index i goes to ring entry i % qcl. Score cache cc (one per layer):
     * f32 [num_blocks][hkv][bs], laid out like K. Scores: f32 [n_jobs][hkv][max_pos].
     * work: scratch of n_jobs * hkv * max_pos * 8 bytes. keep: int32 [n_jobs][hkv][max_keep]. */
    /* For each token t with tok_qslot[t] >= 0, stores q[t] (post-norm, post-RoPE) in its
     * slot's ring entry tok_kv_idx[t] % qcl of this layer. */
    void (*qcache_store)(backend *be, be_ptr qc, be_ptr q, const be_batch *b, be_ptr tok_qslot,
                         int layer, const be_cparams *p);
    /* Spec 5.1-5.4: attention score of the qcl cached queries (causal by cache index),
     * optional max-norm, carried score (writes C := S back for p < kv_len), pooling.
     * Unused positions get -inf. */
    void (*cmp_score)(backend *be, be_ptr scores, be_ptr qc, be_ptr kc, be_ptr cc, zp_dtype kvt,
                      const be_cjobs *j, int layer, const be_cparams *p);
    /* Spec 5.5: S := lambda*S - (1-lambda)*R, in place (nothing when redundancy is off). */
    void (*cmp_redundancy)(backend *be, be_ptr scores, be_ptr kc, zp_dtype kvt, be_ptr work,
                           const be_cjobs *j, const be_cparams *p);
    /* Spec 5.6-5.7: protection (+inf for the qcl newest and the sinks, -inf unused) and
     * selection of exactly n_keep positions per (job, head) on f32 scores, ties to the
     * later position; keep rows list the kept positions in ascending order. */
    void (*cmp_select)(backend *be, be_ptr keep, be_ptr scores, be_ptr work, const be_cjobs *j,
                       const be_cparams *p);
    /* Spec 6: moves K, V and C of the kept positions, in order, to target slots 0.. of the
     * dst blocks (dst may alias src: the write cursor never passes the read cursor). */
    void (*cmp_compact)(backend *be, be_ptr kc, be_ptr vc, be_ptr cc, zp_dtype kvt, be_ptr keep,
                        const be_cjobs *j, const be_cparams *p);
};

/* The CPU reference backend. threads = 0: one per online core. max_k bounds the inner
 * dimension of matmul (per-thread scratch is sized from it at creation). */
int cpu_backend_create(backend **out, int threads, int max_k);

#endif
