/* backend: the op table every compute backend implements (cpu.c, cuda_be.c) and the factory
 * that picks one (backend.c).
 *
 * The engine never touches backend memory directly. Buffers are `be_ptr` addresses in the
 * backend's own address space (a host address on the CPU backend, a CUdeviceptr on CUDA),
 * carved once at start-up from one reservation (be->reserve + be->alloc) and reached only
 * through ops, upload and download. Each step the engine writes its batch metadata into one
 * host staging area (from alloc_host) and uploads it with a single call; ops read it through
 * be_batch.
 *
 * Dtypes: the residual stream and the logits are f32 on every backend; every other
 * activation (normed rows, QKV, attention output, MLP) has the backend's act_dtype (f32 on
 * the CPU, bf16 on CUDA), with f32 math inside every op. Weights keep their checkpoint dtype
 * on the CPU (used in place) and are converted to bf16 on upload on CUDA (weight_bytes says
 * how much of the reservation they take).
 *
 * Ops know nothing about requests: only tokens, rows, slots and block tables. They are queued
 * on the current queue (below); errors surface at be->sync(). On the CPU backend they run to
 * completion, multi-threaded, and every output element is computed by one thread in a fixed
 * order, so results are bit-identical for any thread count and any batch composition.
 *
 * Queues and events: two queues, BE_Q_COMPUTE (forward passes; the default) and BE_Q_COMPRESS
 * (compression). use_queue selects the queue that every later op, upload, download and copy goes
 * to, in call order; graphs are captured and replayed on the compute queue only. Work on different
 * queues is unordered unless an event orders it: event_record(ev, q) marks the point reached by
 * everything queued on q so far; event_wait(q2, ev) makes work queued on q2 afterwards start only
 * once that point is passed (the host does not block); event_done asks without blocking; event_sync
 * blocks the host until the point is passed; event_elapsed gives the milliseconds between two
 * passed points (a timer). An event refers to its latest record; one never recorded is done, and
 * waiting on it orders nothing. Events are ids 0 .. BE_EVENTS-1 of a pool made when the backend is
 * created; callers assign them (engine/model.c names the ones it uses). A bad queue or event id is
 * an error (ZP_EINVAL naming it), never a crash. On the CPU backend every op has run when its call
 * returns, so queues are already ordered and an event is passed when it is recorded; a record reads
 * the host's monotonic clock, which event_elapsed subtracts.
 *
 * Host staging: upload reads its source when the queue reaches it and download writes its
 * destination then; the destination's bytes are there once sync (or event_sync of an event
 * recorded after the download on the same queue) returns. Memory from alloc_host (pinned on
 * CUDA) is copied asynchronously, so a source must stay unchanged until the queue has passed
 * its upload; other host memory is copied before upload returns (the driver stages it).
 *
 * Padding contract: a token row with slot < 0 writes no K/V; rows past the device-side counts
 * (be_batch.counts) are never read or written, so a launch sized for a bucket serves any batch.
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
    int32_t max_kv_len;  /* longest context of the step's tokens (sizes attention splits) */
    be_ptr counts;       /* [8]: n_tokens, n_logits, n_seqs, n_seat_jobs, n_qtiles (kernels read
                          * them) */
    be_ptr token_ids;    /* [n_tokens] */
    be_ptr positions;    /* [n_tokens] absolute positions for RoPE */
    be_ptr slots;        /* [n_tokens] physical slot receiving the token's K/V */
    be_ptr tok_seq;      /* [n_tokens] sequence row of each token */
    be_ptr tok_kv_idx;   /* [n_tokens] the token's logical cache index */
    be_ptr block_tables; /* [n_seqs][max_blocks] physical block ids */
    be_ptr logit_rows;   /* [n_logits] token rows whose logits are wanted */
    /* Prompt rows for a backend with a prefill attention kernel (prefill_tiles): qtile
     * [n_qtiles][2] {first row, rows} (drv/attn_tiles.h); n_qtiles on the host sizes the grid,
     * counts[4] holds it for the kernel. With q-tiles, dec_rows [n_dec_rows] lists the other
     * rows in order, the decode kernel's grid (none: not launched); without, that kernel takes
     * every row. Which rows are prompt rows depends on the row alone, never on the batch (the
     * kernels round differently). Other backends ignore them. */
    be_ptr qtile, dec_rows;
    int32_t n_qtiles, n_dec_rows;
} be_batch;

/* Compression of a batch of requests ("jobs"), every layer at once (see
 * ../shared/spec/compressed-paged-attention.md, sections 4-6). Device metadata. A job's
 * cached positions p = 0 .. n_blocks*bs-1 run over its source block table in order;
 * positions >= kv_len are unused. */
enum {
    BE_CJ_GLOBAL = 1, /* already compressed: carried score applies to non-last blocks */
    BE_CJ_POOL = 2
}; /* max-pool the scores this time */

typedef struct be_cjobs {
    int32_t n_jobs;
    int32_t max_jobs;   /* job rows per layer slab of scores, work and keep (>= n_jobs) */
    int32_t max_blocks; /* row stride of src / dst */
    int32_t max_pos;    /* row stride of score rows, >= every job's n_blocks * bs */
    int32_t max_keep;   /* row stride of keep rows, >= every job's n_keep */
    be_ptr n_blocks;    /* int32 [n_jobs] */
    be_ptr kv_len;      /* int32 [n_jobs] */
    be_ptr n_keep;      /* int32 [n_jobs] tokens kept per (layer, kv head): M * bs */
    be_ptr qslot;       /* int32 [n_jobs] query-cache slot */
    be_ptr flags;       /* int32 [n_jobs] BE_CJ_* */
    be_ptr protect;     /* int32 [n_jobs]: positions p < protect[b] are never evicted */
    be_ptr src;         /* int32 [n_jobs][max_blocks] block table before compaction */
    be_ptr dst;         /* int32 [n_jobs][max_blocks] target blocks, first n_keep/bs used */
    be_ptr count;       /* int32: n_jobs, for kernels (a padded grid serves any batch) */
    be_ptr seed;        /* int32 [n_jobs]: the job's random-eviction seed (BE_EVICT_RANDOM) */
    /* BE_EVICT_ORACLE only (the CPU backend, whose ops run to completion when called): host
     * arrays [n_jobs], each job's recorded table and its sequence length (tokens whose K/V
     * were computed: position seq_len - 1 is the newest cached token). NULL otherwise. */
    const struct be_oracle *const *oracle;
    const int32_t *seq_len;
} be_cjobs;

/* Which positions a compression keeps (be_cparams.policy). SCORE: spec 5.1-5.5 (attention,
 * carried score, pooling, redundancy). The baselines replace the score and keep everything
 * else (protection, selection of n_keep, compaction): STREAMING scores position p as p (the
 * protected first max(sink_len, protect[b]) plus the newest); RANDOM as a uniform value in
 * [0, 1) hashed from the job's seed, the layer, the kv head and p (a seeded uniform subset);
 * ORACLE as the most attention the token at p gets from the queries still to come, read from
 * the job's be_oracle recorded in a full-KV run of the same request (an upper bound for
 * attention-based eviction; the CPU backend only). */
typedef enum { BE_EVICT_SCORE, BE_EVICT_STREAMING, BE_EVICT_RANDOM, BE_EVICT_ORACLE } be_evict;

/* One request's attention record (the oracle baseline, docs/ACCURACY.md), host memory owned
 * by the caller: a[((l * hkv + h) * n_pos + p) * n_chunks + c] for layer l, kv head h, token
 * position p < n_pos and query chunk c < n_chunks (query positions [c * chunk, (c + 1) *
 * chunk)). attn_record leaves there the largest attention probability p got from a query of
 * chunk c, over the heads of h's group; the caller then turns every row into suffix maxima
 * (column c: the most from chunk c on), which ORACLE scoring reads at the chunk of the next
 * query. Positions are the request's absolute token positions, whatever was evicted. */
typedef struct be_oracle {
    int32_t n_pos, chunk, n_chunks;
    float *a;
} be_oracle;

typedef struct be_cparams {
    int32_t layers, hq, hkv, dim, bs, qcl;
    float scale;        /* 1/sqrt(dim) */
    int32_t max_norm;   /* divide A by its max per (job, head) */
    float gamma;        /* decay of the carried score */
    int32_t pool;       /* max-pool width (odd; <= 1 = none) */
    int32_t redundancy; /* 0 lightning, 1 raw, 2 off */
    float lambda, temperature, threshold;
    int32_t sink_len; /* positions p < max(sink_len, protect[b]) are never evicted */
    int32_t policy;   /* be_evict */
    int32_t recent;   /* newest max(qcl, min(recent, (n_keep - k) / 2)) stay, k: sink/protect */
} be_cparams;

/* What a backend must know about the model and the step bounds when it is created (CUDA
 * compiles its kernels for head dim, block size and GQA group, and sizes its scratch). */
typedef struct be_shape {
    int32_t layers, hidden, heads, kv_heads, head_dim, intermediate, vocab;
    int32_t block_size, max_tokens, max_logits, max_model_len;
} be_shape;

/* One weight matrix of a linear layer as the loader holds it: host rows [rows][k] (w), or a
 * weight already given to the backend (dev, e.g. the embedding table for a tied LM head).
 * ld: elements between the host rows, 0 = k (packed); a tensor-parallel rank's column slice of
 * a checkpoint's row-parallel weight is its first column with ld = the full row (the CPU
 * backend reads it in place; the CUDA backend takes packed rows only). */
typedef struct be_part {
    const void *w;
    be_ptr dev;
    zp_dtype wt;
    const void *bias; /* host [rows], or NULL */
    zp_dtype bt;
    int32_t rows, ld;
} be_part;

enum { BE_LINEAR_PARTS = 3 };

/* The most tensor-parallel ranks (drv/comm.h), and the number of K segments a row-parallel
 * layer's sum is cut into at every TP size (be_linear.k_segs). */
enum { ZP_TP_MAX = 8 };

/* A linear layer: y[n][n_out] = x[n][k] . W^T (+ bias), W the row-wise concatenation of its
 * parts (fused QKV, fused gate/up). Filled by linear_init; the backend may fuse the parts into
 * one weight (CUDA) or keep them apart (CPU, weights used in place).
 * k_segs (1 after linear_init; the model sets it for o_proj and down_proj): how many equal K
 * segments the CPU backend sums apart, each in the matmul's own chain, then combines in the
 * pairwise tree (((s0 + s1) + (s2 + s3)) + ...): a power of two dividing k, at most ZP_TP_MAX,
 * and no bias. A row-parallel layer cut over tp ranks takes ZP_TP_MAX / tp segments per rank,
 * and the all-reduce continues the tree over the ranks, so every power-of-two TP size adds the
 * same products in the same order as TP 1 (docs/TENSOR_PARALLEL.md). Other backends ignore it. */
typedef struct be_linear {
    int32_t k, n_out, n_parts, k_segs;
    zp_dtype out_t; /* act_dtype, or f32 for the logits */
    be_ptr w[BE_LINEAR_PARTS], bias[BE_LINEAR_PARTS];
    zp_dtype wt[BE_LINEAR_PARTS], bt[BE_LINEAR_PARTS];
    int32_t rows[BE_LINEAR_PARTS], ldw[BE_LINEAR_PARTS]; /* ldw: the part's row stride (CPU) */
    int32_t plan;                                        /* the backend's GEMM plan (CUDA) */
} be_linear;

typedef struct backend backend;

enum { BE_Q_COMPUTE, BE_Q_COMPRESS, BE_QUEUES };
enum { BE_EVENTS = 512 }; /* events in every backend's pool */

struct backend {
    const char *name;
    void *impl;
    zp_dtype act_dtype;
    int device_memory;    /* the reservation is GPU memory: kv_memory_mb 0 sizes the KV pool from
                           * mem_info x gpu_memory_utilization */
    size_t scratch_bytes; /* the backend's own scratch, reserved on top of reserve()'s bytes */
    int prefill_tiles;    /* attention runs prompt rows given as q-tiles (be_batch.qtile) */
    be_ptr counts;        /* set by the model: int32 [8] (n_tokens, n_logits, n_seqs, n_seat_jobs,
                           * n_qtiles)
                           * of the step, in backend memory, read by kernels (padded launches) */

    /* Memory: one reservation at start-up of `bytes` of backend memory (plus scratch_bytes),
     * carved by alloc, and one of `host_bytes` of host staging (pinned on CUDA, an ordinary
     * mapping on the CPU), carved by alloc_host in pieces of al256(bytes) at 256-byte
     * alignment. Start-up only. mem_info: the memory the reservation may come from (free and
     * total bytes). */
    int (*mem_info)(backend *be, size_t *free_bytes, size_t *total_bytes);
    int (*reserve)(backend *be, size_t bytes, size_t host_bytes);
    int (*alloc)(backend *be, size_t bytes, size_t align, be_ptr *out, const char *what);
    int (*alloc_host)(backend *be, size_t bytes, void **out, const char *what);
    /* Bytes of the reservation a host weight of n elements of type t takes (0: used in place). */
    size_t (*weight_bytes)(backend *be, zp_dtype t, size_t n);
    /* Makes a host weight available to ops: aliased (CPU) or converted to bf16 and copied into
     * the reservation (CUDA). *out_t: the dtype ops see. Start-up only. */
    int (*map_weight)(backend *be, const void *host, zp_dtype t, size_t n, be_ptr *out,
                      zp_dtype *out_t, const char *what);
    /* Builds a linear layer of n_parts parts (1..BE_LINEAR_PARTS) of inner dimension k, for
     * at most max_rows rows per call. Start-up only. It takes al256(sum of weight_bytes of the
     * parts' weights) + al256(weight_bytes of n_out bias values, when any part has a bias) of
     * the reservation, and map_weight al256(weight_bytes); al256 rounds up to 256 bytes. */
    int (*linear_init)(backend *be, be_linear *l, const be_part *parts, int n_parts, int k,
                       int max_rows, zp_dtype out_t, const char *what);
    int (*upload)(backend *be, be_ptr dst, const void *src, size_t bytes);
    int (*download)(backend *be, void *dst, be_ptr src, size_t bytes);
    /* Copies bytes from src to dst, both the backend's memory and not overlapping, queued like
     * upload (the bench's copy-bandwidth ceiling times it). */
    int (*copy)(backend *be, be_ptr dst, be_ptr src, size_t bytes);
    /* Blocks until every queue has run all its work; returns the first error of an op queued
     * since the last sync (or of the queues themselves). */
    int (*sync)(backend *be);
    /* The same for queue q alone (the other may keep running). */
    int (*sync_queue)(backend *be, int q);
    /* Makes the backend usable from the calling thread, e.g. a tensor-parallel rank's own thread
     * (CUDA: its GPU's context current there); call once in that thread before its first op.
     * NULL where any thread may call (CPU). */
    int (*bind_thread)(backend *be);
    void (*destroy)(backend *be);
    /* Queues and events (see the top of this file). q: BE_Q_*; ev: 0 .. BE_EVENTS-1. Not
     * inside a capture. event_done: 1 passed, 0 pending, < 0 an error. event_elapsed: *ms from
     * start's point to end's, both recorded and passed. */
    int (*use_queue)(backend *be, int q);
    int (*event_record)(backend *be, int ev, int q);
    int (*event_wait)(backend *be, int q, int ev);
    int (*event_done)(backend *be, int ev);
    int (*event_sync)(backend *be, int ev);
    int (*event_elapsed)(backend *be, int start, int end, float *ms);
    /* CUDA graphs (NULL where the backend has none). Between capture_begin and capture_end
     * the ops are recorded, not run; capture_end makes them graph `slot` (< max_graphs) and
     * graph_launch replays it on the compute queue. A capture begins with the compute queue
     * selected. Nothing may be uploaded, downloaded or synced inside a capture, and counts must
     * come from device memory (be->counts).
     * Start-up only, except graph_launch. */
    int max_graphs;
    int (*capture_begin)(backend *be);
    int (*capture_end)(backend *be, int slot);
    int (*graph_launch)(backend *be, int slot);
    /* One line on what start-up chose for the GEMMs (NULL where there is nothing to say). */
    void (*describe_plans)(backend *be, char *buf, size_t cap);

    /* Forward-pass ops ("act": act_dtype). */
    /* resid[i][:] = table[ids[i]][:] (f32 out) */
    void (*embed)(backend *be, be_ptr resid, be_ptr table, zp_dtype wt, be_ptr ids, int n, int dim);
    /* The vocabulary-parallel embedding of a tensor-parallel rank holding rows [v0, v1):
     * resid[i][:] = table[ids[i] - v0][:] for v0 <= ids[i] < v1, else -0.0f, IEEE's additive
     * identity (x + -0.0f == x for every x, -0.0f included), so the sum over the ranks is the
     * owner's row bit for bit (f32 out). */
    void (*embed_shard)(backend *be, be_ptr resid, be_ptr table, zp_dtype wt, be_ptr ids, int n,
                        int dim, int v0, int v1);
    /* resid[r] += x[r] when x != 0; out[r] = rmsnorm(resid[r]) * w (act); out may equal x */
    void (*add_rmsnorm)(backend *be, be_ptr resid, be_ptr x, be_ptr out, be_ptr w, zp_dtype wt,
                        int rows, int dim, float eps);
    /* out[n][l->n_out] (l->out_t) = x[n][l->k] (act) . W^T (+ bias) */
    void (*linear)(backend *be, be_ptr out, be_ptr x, const be_linear *l, int n);
    /* On the fused QKV rows qkv[n][(hq + 2 hkv) dim] (act): per-head RMSNorm of q and k with
     * qn / kn (when not 0; eps), rotate-half RoPE at positions[i] * inv_freq[j]; q -> q_out
     * [n][hq][dim] (act); k and v -> the layer's caches at slots (slot < 0: not stored). */
    void (*qkv_rope_store)(backend *be, be_ptr q_out, be_ptr qkv, be_ptr qn, be_ptr kn, zp_dtype nt,
                           float eps, be_ptr positions, be_ptr inv_freq, be_ptr slots, be_ptr kc,
                           be_ptr vc, zp_dtype kvt, int n, int hq, int hkv, int dim, int bs);
    /* out[t][hq*dim] = softmax(q k^T * scale) v over the token's cache indices [0, i] (act) */
    void (*attention)(backend *be, be_ptr out, be_ptr q, be_ptr kc, be_ptr vc, zp_dtype kvt,
                      const be_batch *b, int hq, int hkv, int dim, int bs, float scale);
    /* The oracle baseline's recording (NULL where the backend has none; CPU: it runs when
     * called, on host memory): for every token row t with rec[t] != NULL (a host array
     * [n_tokens]; rows of distinct requests, at most one row per request, whose cache index
     * equals its position: full KV), the attention probabilities of its query heads over
     * cache indices [0, i] (the same softmax as attention), max over each kv head's group,
     * are max-folded into rec[t]->a at (layer, kv head, index, positions[t] / chunk). */
    void (*attn_record)(backend *be, const be_oracle *const *rec, int layer, be_ptr q, be_ptr kc,
                        zp_dtype kvt, const be_batch *b, int hq, int hkv, int dim, int bs,
                        float scale);
    /* out[t][i] = silu(gu[t][i]) * gu[t][inter + i] on the fused gate/up rows (act) */
    void (*swiglu)(backend *be, be_ptr out, be_ptr gu, int n, int inter);
    /* out[i][:] = x[rows[i]][:] (act) */
    void (*gather_rows)(backend *be, be_ptr out, be_ptr x, be_ptr rows, int n, int dim);
    /* Greedy sampling: ids[r] = the lowest id of the largest of logits[r][0 .. n_valid) (f32,
     * rows `stride` apart), or the error codes of drv/sample_abi.h (a NaN, a +inf, all -inf). */
    void (*argmax)(backend *be, be_ptr ids, be_ptr logits, int n, int n_valid, int stride);
    /* Sampling on the backend, every parameter of engine/sampler.c (NULL: the engine samples
     * on the host). params: zp_sample_params [n] (drv/sample_abi.h); ids [n] get tokens or
     * error codes, logprobs [n] the chosen token's logprob where asked; logits are modified.
     * Penalty state lives in sample_seats seats kept by the backend; seat_init (re)initialises
     * the seats of n_jobs zp_sample_seat_job records (count also at counts[3]) from hist ids,
     * and sample adds each row's token to its seat. */
    int sample_seats;
    void (*seat_init)(backend *be, be_ptr jobs, be_ptr hist, int n_jobs, int stride);
    void (*sample)(backend *be, be_ptr ids, be_ptr logprobs, be_ptr logits, be_ptr params, int n,
                   int n_valid, int stride);

    /* Fails (ZP_EUNSUP, message naming the limit and the key to change) when this backend
     * cannot run attention with p's heads and head dim, or (when p->qcl > 0) compress with
     * these parameters. Called once at start-up. */
    int (*check)(backend *be, const be_cparams *p);
    /* Compression ops. Query cache qc: f32 [slots][layers][qcl][hq][dim]; the query of a
     * token with cache index i goes to ring entry i % qcl. Score cache C (one per layer):
     * f32 [num_blocks][hkv][bs], laid out like K. The cmp_* ops cover layers layer0 ..
     * layer0 + n_layers - 1 in one call (on CUDA one launch each): kc, vc and cc are layer
     * tables, u64 [layers] in backend memory holding each layer's K, V and C base, and the
     * scratch holds one slab per covered layer (layer z of the call at slab z): scores f32
     * [max_jobs][hkv][max_pos], work max_jobs * hkv * max_pos * 8 bytes, keep int32
     * [max_jobs][hkv][max_keep]. */
    void (*qcache_store)(backend *be, be_ptr qc, be_ptr q, const be_batch *b, be_ptr tok_qslot,
                         int layer, const be_cparams *p);
    /* Spec 5.1-5.4: attention score of the qcl cached queries (causal by cache index),
     * optional max-norm, carried score (writes C := S back for p < kv_len), pooling.
     * Unused positions get -inf. Under a baseline policy (be_evict) S is the policy's score
     * alone (no attention, max-norm, carried score or pooling) and C := S all the same. */
    void (*cmp_score)(backend *be, be_ptr scores, be_ptr qc, be_ptr kc, be_ptr cc, zp_dtype kvt,
                      const be_cjobs *j, int layer0, int n_layers, const be_cparams *p);
    /* Spec 5.5: S := lambda*S - (1-lambda)*R, in place (nothing when redundancy is off or
     * the policy is a baseline).
     * R, in closed form (a function of the keys only, no scan order), over the positions
     * p < kv_len of one (job, kv head); a pair (m, c) is allowed when m != c and, for
     * lightning, both lie in one block:
     *   inv[p]    = 1 / max(|K[p]|, 1e-6)
     *   Sim[m][c] = (K[m] . K[c]) * inv[max(m, c)] * inv[min(m, c)]   (symmetric)
     *   m*(c)     = the largest m with (m, c) allowed and Sim[m][c] > threshold, if any
     *   r[m]      = sum of Sim[m][c] over allowed (m, c) with m*(c) != m
     *   R[p]      = softmax over p < kv_len of r[p] / (temperature * den),
     *               den = bs (lightning) or kv_len (raw)
     * i.e. in every column the entry of the most recent similar row is left out. Rounding,
     * shared by every backend so that the threshold decisions agree bit for bit: f32
     * throughout, never a fused multiply-add; a dot product is 8 interleaved partial sums
     * (element i into sum i % 8, i ascending) combined as ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)),
     * then any elements past the last multiple of 8 in order; sqrt and division correctly
     * rounded; the products in the order written above; r[m] summed sequentially over c
     * descending. Afterwards work holds, per (job, head) row, r[max_pos] then inv[max_pos]
     * (entries p < kv_len; the rest untouched), inv[c] negated where m*(c) exists; backends
     * agree on it byte for byte. Only the softmax's exp and sum may round differently. */
    void (*cmp_redundancy)(backend *be, be_ptr scores, be_ptr kc, zp_dtype kvt, be_ptr work,
                           const be_cjobs *j, int layer0, int n_layers, const be_cparams *p);
    /* Spec 5.6-5.7: protection (+inf for the qcl newest and for p < max(sink_len,
     * protect[b]), -inf unused) and selection of exactly n_keep positions per (job, head) on
     * f32 scores, ties to the later position; keep rows list the kept positions in ascending
     * order. */
    void (*cmp_select)(backend *be, be_ptr keep, be_ptr scores, be_ptr work, const be_cjobs *j,
                       int n_layers, const be_cparams *p);
    /* Spec 6: moves K, V and C of the kept positions, in order, to target slots 0.. of the
     * dst blocks. dst may share blocks with src, each shared block at the SAME index of both
     * tables (in place, or fresh blocks for shared leading ones): then target j overwrites
     * only source position j, which keep rows (ascending, keep[i] >= i) read at an index
     * <= j. A block at a lower dst index than its src index is not safe. */
    void (*cmp_compact)(backend *be, be_ptr kc, be_ptr vc, be_ptr cc, zp_dtype kvt, be_ptr keep,
                        const be_cjobs *j, int layer0, int n_layers, const be_cparams *p);
};

/* The CPU reference backend. threads = 0: one per online core. max_k bounds the inner
 * dimension of linear layers (per-thread scratch is sized from it at creation). isa: the
 * matmul kernels' instruction set (CPU_ISA_* of drv/cpu_gemm.h; CPU_ISA_AUTO = the best this
 * CPU runs); one this CPU lacks is ZP_EUNSUP.
 *
 * What the instruction set changes: the matmul's lane count (AVX-512 16, AVX2 and generic 8)
 * and whether a lane multiply-adds in one rounding (FMA: AVX-512, AVX2) or two (generic), so
 * the last bits of every linear layer's output, hence of the logits, differ between kernels;
 * the same kernel gives the same bits for any thread count and batch (attention's arithmetic
 * is the same in every build). Reference tolerances (1e-4 on logits) hold for each kernel.
 * AUTO picks by the CPU, so two machines with different instruction sets may disagree in the
 * last bits; set cpu_isa to compare them.
 *
 * prec: the matmul's precision. CPU_PREC_F32 (the reference): f32 activations times the
 * weights, f32 sums. CPU_PREC_BF16 (faster where the CPU has avx512_bf16): for bf16 weights,
 * each activation row is first rounded to bf16 (nearest even), then multiplied in pairs by
 * vdpbf16ps with f32 sums (drv/cpu_gemm.h); f32 and f16 weights stay f32. Outputs move by the
 * activations' rounding (up to 2^-9 relative per product; the f32 reference tolerances are
 * not claimed for it), and remain the same for any thread count and batch. Kernels without
 * avx512_bf16 use the same rounded inputs with their f32 tiles: the same inputs, their own last
 * bits. */
enum { CPU_ISA_AUTO, CPU_ISA_GENERIC, CPU_ISA_AVX2, CPU_ISA_AVX512 };
enum { CPU_PREC_F32, CPU_PREC_BF16 };
int cpu_backend_create(backend **out, int threads, int max_k, int isa, int prec);
/* "N threads, ISA kernels, PREC matmul" of a CPU backend (static storage per backend). */
const char *cpu_backend_describe(const backend *be);

/* The CPU backend's max_k for a model shape. */
int be_shape_max_k(const be_shape *s);

/* 0 when q is a queue (BE_Q_*), or ev an id of the event pool; else ZP_EINVAL naming the value
 * and be's name. Every backend checks its arguments with these. */
int be_check_queue(const backend *be, int q);
int be_check_event(const backend *be, int ev);

/* What the factory needs from the configuration (filled by the engine from zipage.conf). */
typedef struct be_config {
    int kind;     /* BE_AUTO, BE_CPU, BE_CUDA */
    int threads;  /* CPU workers, 0 = one per core */
    int cpu_isa;  /* CPU matmul kernels: CPU_ISA_* */
    int cpu_prec; /* CPU matmul precision: CPU_PREC_* */
    const char *cuda_driver_path, *nvrtc_path, *cublaslt_path, *kernel_cache_dir;
    int cuda_device;
    int batch_invariant;         /* GEMM rows independent of the batch (CUDA: drv/gemmtune.h) */
    int attention_chunk;         /* KV positions per split of attention (CUDA) */
    int attention_prefill_chunk; /* the same for prompt rows, >= attention_chunk (CUDA) */
    int attention_mma;           /* decode rows on tensor cores (zp_attn_decode_mma) (CUDA) */
    int attention_prefill;       /* prompt rows' kernel: ATTN_PREFILL_* (CUDA, drv/attn_tiles.h) */
    int gemm_workspace_mb;       /* cuBLASLt's workspace (CUDA) */
    int pdl;                     /* programmatic dependent launch (CUDA, sm_90+) */
} be_config;

enum { BE_AUTO, BE_CPU, BE_CUDA };

/* Creates the configured backend. With BE_AUTO: CUDA when a GPU, its driver, NVRTC and
 * cuBLASLt are usable and the configuration runs there, else the CPU; why (one line) goes to
 * why[why_len]. An explicit BE_CUDA that cannot start is an error naming what to change. */
int backend_create(backend **out, const be_config *c, const be_shape *s, char *why, size_t why_len);

#endif
