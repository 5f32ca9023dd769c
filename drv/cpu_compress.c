/* cpu_compress: compression ops of the CPU backend (spec sections 4-6; see cpu_compress.h for
 * the threading, memory and caller rules, docs/COMPRESSION.md for the formulas).
 *
 * All math is f32. Every (job, kv head) row is one parallel item computed by one thread in a
 * fixed loop order; sums use fixed-shape partial sums (dot_f32), so the bits do not depend on
 * the thread count. Cost per row, N = kv_len:
 *   cmp_score:      2 reads of K (pass 1 softmax statistics, pass 2 probabilities), 2*G*qcl*N dots;
 *                   under a baseline policy (be_evict) one hash or copy per position, K unread
 *   cmp_redundancy: lightning bs*N/2 dots, raw N^2/2 dots; O(N) state (2 floats per position)
 *   cmp_select:     5 linear passes (radix select on 32-bit score keys; no sort, no allocation)
 *   cmp_compact:    one copy per kept token (skipped when it does not move)
 */
#include "drv/cpu_compress.h"

#include "arena/err.h"

#include "drv/cpu_impl.h"

#include <assert.h>
#include <math.h>
#include <string.h>

static inline void *ptr(be_ptr p) {
    return (void *)(uintptr_t)p;
}

/* Host views of a be_cjobs (CPU be_ptrs are host addresses) and of the call's layers. */
typedef struct {
    const int32_t *n_blocks, *kv_len, *n_keep, *qslot, *flags, *protect, *src, *dst, *seed;
    const be_oracle *const *oracle; /* BE_EVICT_ORACLE: host arrays (be_cjobs) */
    const int32_t *seq_len;
    int n_jobs, max_jobs, max_blocks, max_pos, max_keep, hkv, layer0;
} jobs_view;

static jobs_view view(const be_cjobs *j, int layer0, int n_layers, const be_cparams *p) {
    assert(j->n_jobs >= 0 && j->n_jobs <= j->max_jobs);
    assert(layer0 >= 0 && n_layers >= 0 && layer0 + n_layers <= p->layers);
    return (jobs_view){ptr(j->n_blocks), ptr(j->kv_len),  ptr(j->n_keep), ptr(j->qslot),
                       ptr(j->flags),    ptr(j->protect), ptr(j->src),    ptr(j->dst),
                       ptr(j->seed),     j->oracle,       j->seq_len,     j->n_jobs,
                       j->max_jobs,      j->max_blocks,   j->max_pos,     j->max_keep,
                       p->hkv,           layer0};
}

/* The parallel items of a call: (layer z of the call, job b, kv head h) for item i, in that
 * order; slab is the row's index in the per-layer scratch (layer z's slab first). */
typedef struct {
    int z, b, h;
    size_t slab;
} row_at;

static row_at row_of(const jobs_view *v, size_t i) {
    size_t per_layer = (size_t)v->n_jobs * (size_t)v->hkv, r = i % per_layer;
    row_at a = {(int)(i / per_layer), (int)(r / (size_t)v->hkv), (int)(r % (size_t)v->hkv), 0};
    a.slab = (size_t)a.z * (size_t)v->max_jobs * (size_t)v->hkv + r;
    return a;
}

/* Layer l's cache base from a layer table. */
static inline void *layer_base(be_ptr table, int l) {
    return ptr(((const uint64_t *)ptr(table))[l]);
}

/* Index of (position pos, kv head h) in a [blocks][hkv][bs] array through block table bt:
 * the C element, or the K/V row (times dim). */
static inline size_t slot_row(const int32_t *bt, int pos, int hkv, int h, int bs) {
    return ((size_t)bt[pos / bs] * (size_t)hkv + (size_t)h) * (size_t)bs + (size_t)(pos % bs);
}

/* Checks the row shape every op relies on; returns the job's position count. */
static int job_positions(const jobs_view *v, int b, int bs) {
    int nb = v->n_blocks[b], kvl = v->kv_len[b];
    assert(nb >= 0 && nb <= v->max_blocks);
    assert(kvl >= 0 && kvl <= nb * bs && nb * bs <= v->max_pos);
    return nb * bs;
}

/* a . b over n floats: 8 partial sums combined in a fixed tree (vectorisable, deterministic). */
static float dot_f32(const float *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += a[i + k] * b[i + k];
    float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++)
        t += a[i] * b[i];
    return t;
}

/* a . (elements off.. of a kvt buffer), the same sum as dot_f32 on the converted row (f32 and
 * bf16 are read in place: the redundancy pair loop would otherwise convert a row per pair). */
static float dot_kv(const float *a, const void *k, zp_dtype t, size_t off, int n, float *tmp) {
    if (t == ZP_F32) return dot_f32(a, (const float *)k + off, n);
    if (t == ZP_F16) {
        const uint16_t *h = (const uint16_t *)k + off;
        for (int i = 0; i < n; i++)
            tmp[i] = zp_f16_to_f32(h[i]);
        return dot_f32(a, tmp, n);
    }
    const uint16_t *h = (const uint16_t *)k + off;
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * zp_bf16_to_f32(h[i + j]);
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++)
        r += a[i] * zp_bf16_to_f32(h[i]);
    return r;
}

/* dst[0..n) = elements off.. of a kvt buffer, as f32. */
static void load_row(float *dst, const void *src, zp_dtype t, size_t off, int n) {
    if (t == ZP_F32) {
        memcpy(dst, (const float *)src + off, sizeof(float) * (size_t)n);
    } else {
        const uint16_t *h = (const uint16_t *)src + off;
        if (t == ZP_BF16)
            for (int i = 0; i < n; i++)
                dst[i] = zp_bf16_to_f32(h[i]);
        else
            for (int i = 0; i < n; i++)
                dst[i] = zp_f16_to_f32(h[i]);
    }
}

/* ---- qcache_store ---- */

typedef struct {
    float *qc;
    const float *q;
    const int32_t *qslot, *kv_idx, *seq;
    int n, layer, layers, qcl, width; /* width = hq * dim */
} qstore_args;

/* A token writes its ring entry unless a later token of its sequence in this batch maps to
 * the same entry (the ring keeps the newest); so each entry has one writer, whatever the
 * thread split. Rows of one sequence are contiguous (be_batch), so the scan stays inside the
 * token's group and stops at the first newer token of the entry (qcl rows on for a prefill). */
static void qstore_rows(void *ctx, size_t b, size_t e, int tid) {
    qstore_args *a = ctx;
    for (size_t t = b; t < e; t++) {
        int s = a->qslot[t], idx = a->kv_idx[t];
        if (s < 0) continue;
        int newer = 0;
        for (int u = (int)t + 1; u < a->n && a->seq[u] == a->seq[t] && !newer; u++)
            newer = a->qslot[u] == s && a->kv_idx[u] > idx && (a->kv_idx[u] - idx) % a->qcl == 0;
        if (newer) continue;
        size_t ent = ((size_t)s * (size_t)a->layers + (size_t)a->layer) * (size_t)a->qcl +
                     (size_t)(idx % a->qcl);
        memcpy(a->qc + ent * (size_t)a->width, a->q + t * (size_t)a->width,
               sizeof(float) * (size_t)a->width);
    }
}

int cpu_cmp_check(backend *be, const be_cparams *p) {
    if (p->policy < BE_EVICT_SCORE || p->policy > BE_EVICT_ORACLE)
        return err_set(ZP_EINVAL, "key 'eviction': policy %d unknown to the cpu backend",
                       p->policy);
    if (p->dim > CPU_CMP_MAX_DIM)
        return err_set(ZP_EUNSUP, "cpu backend: compression needs head_dim <= %d (model has %d)",
                       CPU_CMP_MAX_DIM, p->dim);
    if (p->hq / p->hkv * p->qcl > CPU_CMP_MAX_GQ)
        return err_set(ZP_EUNSUP,
                       "key 'query_cache_len': %d x %d query heads per kv head exceeds "
                       "the cpu backend's %d",
                       p->qcl, p->hq / p->hkv, CPU_CMP_MAX_GQ);
    if (p->pool > CPU_CMP_MAX_POOL)
        return err_set(ZP_EUNSUP, "key 'pooling_size': %d exceeds the cpu backend's %d", p->pool,
                       CPU_CMP_MAX_POOL);
    return 0;
}

void cpu_qcache_store(backend *be, be_ptr qc, be_ptr q, const be_batch *b, be_ptr tok_qslot,
                      int layer, const be_cparams *p) {
    assert(p->qcl >= 1 && layer >= 0 && layer < p->layers);
    qstore_args a = {ptr(qc),         ptr(q),        ptr(tok_qslot), ptr(b->tok_kv_idx),
                     ptr(b->tok_seq), b->n_tokens,   layer,          p->layers,
                     p->qcl,          p->hq * p->dim};
    cpu_parallel(be->impl, (size_t)b->n_tokens, 1, qstore_rows, &a);
}

/* ---- cmp_score ---- */

typedef struct {
    float *scores;
    const float *qc;
    be_ptr kc, cc; /* layer tables */
    zp_dtype kvt;
    jobs_view v;
    const be_cparams *p;
} score_args;

/* In-place max-pool of s[0..n) with window [i - left, i - left + width - 1] clipped to the
 * row; the originals left of i are kept in a small ring since s[i-left..i-1] are already
 * overwritten. */
static void maxpool_row(float *s, int n, int width) {
    int left = width / 2, right = width - 1 - left;
    float ring[CPU_CMP_MAX_POOL];
    for (int i = 0; i < n; i++) {
        float m = -INFINITY;
        for (int k = i - left < 0 ? 0 : i - left; k < i; k++) {
            float o = ring[k % width];
            if (o > m) m = o;
        }
        for (int k = i; k <= i + right && k < n; k++)
            if (s[k] > m) m = s[k];
        ring[i % width] = s[i];
        s[i] = m;
    }
}

/* splitmix64's finaliser: a bijection of 64-bit values whose outputs look uniform. */
static uint64_t mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A baseline policy's score of positions 0 .. kvl-1 of one (job, layer, kv head): the
 * position itself (STREAMING: the newest rank highest), or a uniform value in [0, 1) on a
 * 2^-24 grid from the job's seed, the layer, the head and the position (RANDOM). */
static void baseline_row(float *S, int kvl, int policy, uint32_t seed, int layer, int h) {
    uint64_t row = mix64(mix64(mix64(seed) ^ (uint64_t)layer) ^ (uint64_t)h);
    for (int pos = 0; pos < kvl; pos++)
        S[pos] = policy == BE_EVICT_STREAMING
                     ? (float)pos
                     : (float)(mix64(row ^ (uint64_t)pos) >> 40) * 0x1p-24f;
}

/* ORACLE: the token at cache index pos has absolute position orig (kept in its C entry since
 * the job's last compression: C := orig, moved by compaction as scores are; the newer tokens,
 * from the last block on, are the newest of the sequence); its score is the record's suffix
 * maximum at the chunk of the next query, 0 past the record (a rerun that outgrew the
 * recorded trace). */
static void oracle_row(float *S, float *cc, const int32_t *bt, const jobs_view *v, int b, int h,
                       int layer, const be_cparams *p) {
    const be_oracle *o = v->oracle[b];
    int kvl = v->kv_len[b], sl = v->seq_len[b], bs = p->bs, hkv = p->hkv;
    int carried = v->flags[b] & BE_CJ_GLOBAL ? (v->n_blocks[b] - 1) * bs : 0;
    int col = sl / o->chunk;
    assert(sl >= kvl && carried <= kvl);
    const float *row =
        o->a + ((size_t)layer * (size_t)hkv + (size_t)h) * (size_t)o->n_pos * (size_t)o->n_chunks;
    for (int pos = 0; pos < kvl; pos++) {
        float *c = cc + slot_row(bt, pos, hkv, h, bs);
        int orig = pos < carried ? (int)*c : sl - kvl + pos;
        assert(orig >= 0 && orig < sl);
        S[pos] = orig < o->n_pos && col < o->n_chunks
                     ? row[(size_t)orig * (size_t)o->n_chunks + (size_t)col]
                     : 0;
        *c = (float)orig;
    }
}

static void score_rows(void *ctx, size_t begin, size_t end, int tid) {
    score_args *a = ctx;
    const be_cparams *p = a->p;
    int hkv = p->hkv, D = p->dim, bs = p->bs, qcl = p->qcl, G = p->hq / p->hkv;
    float kf[CPU_CMP_MAX_DIM], mx[CPU_CMP_MAX_GQ], sm[CPU_CMP_MAX_GQ];
    for (size_t i = begin; i < end; i++) {
        row_at r = row_of(&a->v, i);
        int b = r.b, h = r.h, layer = a->v.layer0 + r.z;
        const void *kc = layer_base(a->kc, layer);
        float *cc = layer_base(a->cc, layer);
        job_positions(&a->v, b, bs);
        int kvl = a->v.kv_len[b], fl = a->v.flags[b];
        const int32_t *bt = a->v.src + (size_t)b * (size_t)a->v.max_blocks;
        float *S = a->scores + r.slab * (size_t)a->v.max_pos;
        for (int pos = kvl; pos < a->v.max_pos; pos++)
            S[pos] = -INFINITY;
        if (kvl == 0) continue;
        if (p->policy == BE_EVICT_ORACLE) {
            oracle_row(S, cc, bt, &a->v, b, h, layer, p);
            continue;
        }
        if (p->policy != BE_EVICT_SCORE) {
            uint32_t seed = p->policy == BE_EVICT_RANDOM ? (uint32_t)a->v.seed[b] : 0;
            baseline_row(S, kvl, p->policy, seed, layer, h);
            for (int pos = 0; pos < kvl; pos++)
                cc[slot_row(bt, pos, hkv, h, bs)] = S[pos];
            continue;
        }
        /* Window query i (cache index kvl-qcl+i) sees positions <= its index; queries before
         * the first token do not exist. Query (i, g) is head h*G+g of ring entry qi % qcl. */
        const float *qbase = a->qc + ((size_t)a->v.qslot[b] * (size_t)p->layers + (size_t)layer) *
                                         (size_t)qcl * (size_t)p->hq * (size_t)D;
        int i_first = qcl > kvl ? qcl - kvl : 0, nq = qcl - i_first;
#define QVEC(i, g)                                                                                 \
    (qbase +                                                                                       \
     (((size_t)((kvl - qcl + (i)) % qcl) * (size_t)p->hq) + (size_t)(h * G + (g))) * (size_t)D)
        for (int k = 0; k < G * qcl; k++)
            mx[k] = -INFINITY, sm[k] = 0;
        /* Pass 1: online softmax max and sum per (query, head). */
        for (int pos = 0; pos < kvl; pos++) {
            load_row(kf, kc, a->kvt, slot_row(bt, pos, hkv, h, bs) * (size_t)D, D);
            int i0 = pos - kvl + qcl > i_first ? pos - kvl + qcl : i_first;
            for (int i = i0; i < qcl; i++)
                for (int g = 0; g < G; g++) {
                    float z = dot_f32(QVEC(i, g), kf, D) * p->scale;
                    int k = i * G + g;
                    if (z > mx[k])
                        sm[k] = sm[k] * expf(mx[k] - z) + 1.0f, mx[k] = z;
                    else
                        sm[k] += expf(z - mx[k]);
                }
        }
        /* Pass 2: A[pos] = mean over queries of the max over the group's heads. */
        for (int pos = 0; pos < kvl; pos++) {
            load_row(kf, kc, a->kvt, slot_row(bt, pos, hkv, h, bs) * (size_t)D, D);
            int i0 = pos - kvl + qcl > i_first ? pos - kvl + qcl : i_first;
            float acc = 0;
            for (int i = i0; i < qcl; i++) {
                float best = 0;
                for (int g = 0; g < G; g++) {
                    int k = i * G + g;
                    float pr = expf(dot_f32(QVEC(i, g), kf, D) * p->scale - mx[k]) / sm[k];
                    if (pr > best) best = pr;
                }
                acc += best;
            }
            S[pos] = acc / (float)nq;
        }
#undef QVEC
        if (p->max_norm) {
            float m = 0;
            for (int pos = 0; pos < kvl; pos++)
                if (S[pos] > m) m = S[pos];
            if (m > 0)
                for (int pos = 0; pos < kvl; pos++)
                    S[pos] /= m;
        }
        /* Carried score: non-last blocks of an already compressed job; then C := S. */
        int carried = fl & BE_CJ_GLOBAL ? (a->v.n_blocks[b] - 1) * bs : 0;
        for (int pos = 0; pos < kvl; pos++) {
            float *c = cc + slot_row(bt, pos, hkv, h, bs);
            if (pos < carried) {
                float g = p->gamma * *c;
                if (g > S[pos]) S[pos] = g;
            }
            *c = S[pos];
        }
        if ((fl & BE_CJ_POOL) && p->pool > 1) maxpool_row(S, kvl, p->pool);
    }
}

/* Items of a call: n_layers * n_jobs * hkv rows. */
static size_t n_rows(const be_cjobs *j, int n_layers, const be_cparams *p) {
    return (size_t)n_layers * (size_t)j->n_jobs * (size_t)p->hkv;
}

void cpu_cmp_score(backend *be, be_ptr scores, be_ptr qc, be_ptr kc, be_ptr cc, zp_dtype kvt,
                   const be_cjobs *j, int layer0, int n_layers, const be_cparams *p) {
    assert(p->dim <= CPU_CMP_MAX_DIM && p->hq % p->hkv == 0 && p->qcl >= 1);
    assert(p->hq / p->hkv * p->qcl <= CPU_CMP_MAX_GQ && p->pool <= CPU_CMP_MAX_POOL);
    score_args a = {ptr(scores), ptr(qc), kc, cc, kvt, view(j, layer0, n_layers, p), p};
    cpu_parallel(be->impl, n_rows(j, n_layers, p), 1, score_rows, &a);
}

/* ---- cmp_redundancy ---- */

typedef struct {
    float *scores, *work;
    be_ptr kc; /* layer table */
    zp_dtype kvt;
    jobs_view v;
    const be_cparams *p;
} red_args;

/* Row sums of the similarity matrix without materialising it. Pairs (m, n), n < m, are visited
 * with m descending, and n descending inside: when a column c is first seen with a similarity
 * above the threshold, every larger row of c has already been visited (rows > m at earlier m;
 * for column m itself, rows n < m come in descending order), so that first hit is m*(c) and
 * its entry is left out of its row sum. Per-row state: r[] and inv[] = 1/max(|K|, 1e-6), with
 * the sign bit of inv[c] marking "column c resolved". */
static void red_rows(void *ctx, size_t begin, size_t end, int tid) {
    red_args *a = ctx;
    const be_cparams *p = a->p;
    int hkv = p->hkv, D = p->dim, bs = p->bs, lightning = p->redundancy == 0;
    float km[CPU_CMP_MAX_DIM], kn[CPU_CMP_MAX_DIM];
    for (size_t i = begin; i < end; i++) {
        row_at ra = row_of(&a->v, i);
        int b = ra.b, h = ra.h;
        const void *kc = layer_base(a->kc, a->v.layer0 + ra.z);
        job_positions(&a->v, b, bs);
        int kvl = a->v.kv_len[b];
        if (kvl == 0) continue;
        const int32_t *bt = a->v.src + (size_t)b * (size_t)a->v.max_blocks;
        float *S = a->scores + ra.slab * (size_t)a->v.max_pos;
        float *r = a->work + ra.slab * 2 * (size_t)a->v.max_pos, *inv = r + a->v.max_pos;
        for (int m = 0; m < kvl; m++) {
            load_row(km, kc, a->kvt, slot_row(bt, m, hkv, h, bs) * (size_t)D, D);
            float nrm = sqrtf(dot_f32(km, km, D));
            inv[m] = 1.0f / (nrm > 1e-6f ? nrm : 1e-6f);
            r[m] = 0;
        }
        for (int m = kvl - 1; m > 0; m--) {
            load_row(km, kc, a->kvt, slot_row(bt, m, hkv, h, bs) * (size_t)D, D);
            float im = fabsf(inv[m]);
            int lo = lightning ? m / bs * bs : 0;
            for (int n = m - 1; n >= lo; n--) {
                float s = dot_kv(km, kc, a->kvt, slot_row(bt, n, hkv, h, bs) * (size_t)D, D, kn) *
                          im * fabsf(inv[n]);
                if (s > p->threshold && !signbit(inv[n]))
                    inv[n] = -inv[n]; /* (m, n): m = m*(n) */
                else
                    r[m] += s;
                if (s > p->threshold && !signbit(inv[m]))
                    inv[m] = -inv[m]; /* (n, m): n = m*(m) */
                else
                    r[n] += s;
            }
        }
        float den = p->temperature * (float)(lightning ? bs : kvl), mxv = -INFINITY, sum = 0;
        for (int m = 0; m < kvl; m++)
            if (r[m] / den > mxv) mxv = r[m] / den;
        for (int m = 0; m < kvl; m++)
            sum += expf(r[m] / den - mxv);
        for (int m = 0; m < kvl; m++)
            S[m] = p->lambda * S[m] - (1.0f - p->lambda) * (expf(r[m] / den - mxv) / sum);
    }
}

void cpu_cmp_redundancy(backend *be, be_ptr scores, be_ptr kc, zp_dtype kvt, be_ptr work,
                        const be_cjobs *j, int layer0, int n_layers, const be_cparams *p) {
    if (p->redundancy == 2 || p->policy != BE_EVICT_SCORE) return;
    assert(p->dim <= CPU_CMP_MAX_DIM && (p->redundancy == 0 || p->redundancy == 1));
    red_args a = {ptr(scores), ptr(work), kc, kvt, view(j, layer0, n_layers, p), p};
    cpu_parallel(be->impl, n_rows(j, n_layers, p), 1, red_rows, &a);
}

/* ---- cmp_select ---- */

typedef struct {
    int32_t *keep;
    const float *scores;
    uint32_t *work;
    jobs_view v;
    const be_cparams *p;
} sel_args;

/* Order-preserving map of f32 scores to uint32 (-0 == +0; NaN ranks below -inf). */
static uint32_t score_key(float f) {
    if (f == 0) f = 0;
    if (f != f) return 0;
    uint32_t u;
    memcpy(&u, &f, 4);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

/* Keeps the n_keep largest (key, position) pairs: MSB-first radix select finds the threshold
 * key T (fewer than n_keep keys above it, at least n_keep at or above); of the keys equal to
 * T, the latest positions fill the rest. Then one ascending scan writes the kept positions. */
static void sel_rows(void *ctx, size_t begin, size_t end, int tid) {
    sel_args *a = ctx;
    const be_cparams *p = a->p;
    uint32_t hist[256];
    for (size_t i = begin; i < end; i++) {
        row_at r = row_of(&a->v, i);
        int b = r.b;
        int N = job_positions(&a->v, b, p->bs), kvl = a->v.kv_len[b], nk = a->v.n_keep[b];
        assert(nk >= 0 && nk <= N && nk <= a->v.max_keep);
        if (nk == 0) continue;
        const float *S = a->scores + r.slab * (size_t)a->v.max_pos;
        uint32_t *key = a->work + r.slab * 2 * (size_t)a->v.max_pos;
        int sink = a->v.protect[b] > p->sink_len ? a->v.protect[b] : p->sink_len;
        /* the recent window: at most half of what the protected prefix leaves of n_keep */
        int rec = p->recent < (nk - sink) / 2 ? p->recent : (nk - sink) / 2;
        int newest = kvl - (rec > p->qcl ? rec : p->qcl);
        for (int pos = 0; pos < N; pos++)
            key[pos] = pos >= kvl                    ? score_key(-INFINITY)
                       : pos >= newest || pos < sink ? score_key(INFINITY)
                                                     : score_key(S[pos]);
        uint32_t prefix = 0, mask = 0, need = (uint32_t)nk;
        for (int shift = 24; shift >= 0; shift -= 8) {
            memset(hist, 0, sizeof hist);
            for (int pos = 0; pos < N; pos++)
                if ((key[pos] & mask) == prefix) hist[(key[pos] >> shift) & 255u]++;
            uint32_t d = 255;
            while (hist[d] < need)
                need -= hist[d--];
            prefix |= d << shift;
            mask |= 255u << shift;
        }
        int tpos = N;
        while (need)
            need -= key[--tpos] == prefix;
        int32_t *out = a->keep + r.slab * (size_t)a->v.max_keep;
        int n = 0;
        for (int pos = 0; pos < N; pos++)
            if (key[pos] > prefix || (key[pos] == prefix && pos >= tpos)) out[n++] = pos;
        assert(n == nk);
    }
}

void cpu_cmp_select(backend *be, be_ptr keep, be_ptr scores, be_ptr work, const be_cjobs *j,
                    int n_layers, const be_cparams *p) {
    sel_args a = {ptr(keep), ptr(scores), ptr(work), view(j, 0, n_layers, p), p};
    cpu_parallel(be->impl, n_rows(j, n_layers, p), 1, sel_rows, &a);
}

/* ---- cmp_compact ---- */

typedef struct {
    be_ptr kc, vc, cc; /* layer tables */
    const int32_t *keep;
    size_t esz;
    jobs_view v;
    const be_cparams *p;
} compact_args;

/* One (job, head) walks its kept positions ascending; target j <= keep[j], so with in-place
 * blocks the write never lands on a source still to be read. Heads are disjoint in memory. */
static void compact_rows(void *ctx, size_t begin, size_t end, int tid) {
    compact_args *a = ctx;
    const be_cparams *p = a->p;
    int hkv = p->hkv, bs = p->bs;
    size_t rb = a->esz * (size_t)p->dim;
    for (size_t i = begin; i < end; i++) {
        row_at r = row_of(&a->v, i);
        int b = r.b, h = r.h, layer = a->v.layer0 + r.z;
        uint8_t *kc = layer_base(a->kc, layer), *vc = layer_base(a->vc, layer);
        float *cc = layer_base(a->cc, layer);
        int N = job_positions(&a->v, b, bs), nk = a->v.n_keep[b];
        assert(nk >= 0 && nk <= N && (nk + bs - 1) / bs <= a->v.max_blocks);
        const int32_t *src = a->v.src + (size_t)b * (size_t)a->v.max_blocks;
        const int32_t *dst = a->v.dst + (size_t)b * (size_t)a->v.max_blocks;
        const int32_t *kp = a->keep + r.slab * (size_t)a->v.max_keep;
        for (int t = 0; t < nk; t++) {
            assert(kp[t] >= t && kp[t] < N && (t == 0 || kp[t] > kp[t - 1]));
            size_t s = slot_row(src, kp[t], hkv, h, bs), d = slot_row(dst, t, hkv, h, bs);
            if (s == d) continue;
            memcpy(kc + d * rb, kc + s * rb, rb);
            memcpy(vc + d * rb, vc + s * rb, rb);
            cc[d] = cc[s];
        }
    }
}

void cpu_cmp_compact(backend *be, be_ptr kc, be_ptr vc, be_ptr cc, zp_dtype kvt, be_ptr keep,
                     const be_cjobs *j, int layer0, int n_layers, const be_cparams *p) {
    compact_args a = {kc, vc, cc, ptr(keep), zp_dtype_size(kvt), view(j, layer0, n_layers, p), p};
    cpu_parallel(be->impl, n_rows(j, n_layers, p), 1, compact_rows, &a);
}
