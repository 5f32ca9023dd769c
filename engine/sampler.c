/* sampler: one row of logits -> one token (see sampler.h for the order, docs/SAMPLING.md for
 * the full semantics).
 *
 * Candidates are ordered by processed logit descending, then id ascending; that order decides
 * every tie (greedy, the top-k boundary, the top-p cut) so results are a pure function of the
 * logits, the request's ids and (seed, completion index).
 *
 * Cost on a 152k vocabulary: top-k keeps a bounded heap of k candidates while scanning the row
 * (O(n log k)) and heapsorts them; top-p without top-k first bounds the nucleus with a
 * histogram of probabilities by binary exponent and sorts only the tokens at or above the
 * bound, with a stable radix sort on the logit bits (O(n), scratch from init). No qsort: it
 * may allocate. exp is our own 4-lane code (see exp4_nonpos), the rest is a few linear passes.
 *
 * Invariants: between calls seen[] and counts[] are all zero. Memory: arena scratch from
 * sampler_init(), nothing allocated afterwards. Threading: one sampler per thread.
 */
#include "engine/sampler.h"

#include "arena/err.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* Top-p histogram: bucket b holds the unnormalised probabilities (max 1) in [2^-b, 2^(1-b));
 * zero and subnormals share the last bucket. */
#define HIST_BUCKETS 128
/* Relative slack so that the histogram bound also holds for the sorted cumulative sum, whose
 * double rounding differs from the histogram's (~1e-11 relative for 152k terms). */
#define HIST_SLACK 1e-9

/* exp over the row, 4 lanes at a time with GCC vector extensions (SSE2 on x86-64, NEON on
 * arm64, scalar code elsewhere). Every lane is plain IEEE arithmetic (no libm, and -std=c11
 * forbids FMA contraction), so a row gives the same bits on every machine, in vector or in
 * scalar code. */
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

/* exp(y) for y <= 0 (including -inf): Cody-Waite reduction y = k ln2 + r, |r| <= ln2 / 2, and
 * the degree-6 Taylor polynomial; relative error < 3e-7; exp(0) is exactly 1. y < -87 gives 0
 * (true value < 2^-125, far below any probability that matters here). */
static inline f4 exp4_nonpos(f4 y) {
    const f4 lo = {-87.0f, -87.0f, -87.0f, -87.0f};
    i4 under = y < lo;
    y = (f4)(((i4)lo & under) | ((i4)y & ~under));
    f4 k = y * 1.44269504f + 12582912.0f; /* round to nearest integer (1.5 * 2^23 trick) */
    k = k - 12582912.0f;
    f4 r = y - k * 0.693145752f; /* ln 2 high part: k * it is exact */
    r = r - k * 1.42860677e-6f;  /* ln 2 low part */
    f4 q = r * (1.0f / 720.0f) + 1.0f / 120.0f;
    q = q * r + 1.0f / 24.0f;
    q = q * r + 1.0f / 6.0f;
    q = q * r + 0.5f;
    q = q * r + 1.0f;
    q = q * r + 1.0f;
    i4 scale = (__builtin_convertvector(k, i4) + 127) << 23; /* 2^k, k in [-126, 0] */
    return (f4)((i4)(q * (f4)scale) & ~under);
}

static inline f4 load4(const float *p) {
    f4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* out[i] = exp((x[i] - m) / t) for x[i] <= m; out may be x. */
static void exp_shift(const float *x, float *out, int32_t n, float m, float t) {
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f4 e = exp4_nonpos((load4(x + i) - m) / t);
        memcpy(out + i, &e, sizeof e);
    }
    if (i < n) {
        float tail[4] = {m, m, m, m};
        memcpy(tail, x + i, (size_t)(n - i) * sizeof *x);
        f4 e = exp4_nonpos((load4(tail) - m) / t);
        memcpy(tail, &e, sizeof e);
        memcpy(out + i, tail, (size_t)(n - i) * sizeof *x);
    }
}

/* Sum in double, 4 running sums (lane i % 4) added at the end: a fixed order. */
static double sum_row(const float *p, int32_t n) {
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += (double)p[i];
        a1 += (double)p[i + 1];
        a2 += (double)p[i + 2];
        a3 += (double)p[i + 3];
    }
    if (i < n) a0 += (double)p[i++];
    if (i < n) a1 += (double)p[i++];
    if (i < n) a2 += (double)p[i];
    return (a0 + a1) + (a2 + a3);
}

void sampler_defaults(sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->seed = 0;
    p->max_tokens = 256;
    p->ignore_eos = false;
    p->n_stop = 0;
}

int sampler_validate(const sampling_params *p, int vocab) {
    /* Comparisons are written so that NaN fails them. */
    if (vocab < 1) return err_set(ZP_EINVAL, "sampling: vocabulary size %d must be >= 1", vocab);
    if (!(p->temperature >= 0.0f && isfinite(p->temperature)))
        return err_set(ZP_EINVAL, "sampling: temperature = %g must be finite and >= 0",
                       (double)p->temperature);
    if (p->top_k < 0)
        return err_set(ZP_EINVAL, "sampling: top_k = %d must be >= 0 (0 = off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return err_set(ZP_EINVAL, "sampling: top_p = %g must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return err_set(ZP_EINVAL, "sampling: min_p = %g must be in [0, 1]", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        return err_set(ZP_EINVAL, "sampling: repetition_penalty = %g must be finite and > 0",
                       (double)p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return err_set(ZP_EINVAL, "sampling: presence_penalty = %g must be in [-2, 2]",
                       (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return err_set(ZP_EINVAL, "sampling: frequency_penalty = %g must be in [-2, 2]",
                       (double)p->frequency_penalty);
    if (p->max_tokens < 1)
        return err_set(ZP_EINVAL, "sampling: max_tokens = %d must be >= 1", p->max_tokens);
    if (p->n_stop < 0 || p->n_stop > SAMPLER_MAX_STOP)
        return err_set(ZP_EINVAL, "sampling: n_stop = %d must be in [0, %d]", p->n_stop,
                       SAMPLER_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= vocab)
            return err_set(ZP_EINVAL, "sampling: stop_ids[%d] = %d must be in [0, %d)", i,
                           p->stop_ids[i], vocab);
    return 0;
}

int sampler_init(sampler *s, arena *a, int32_t n_logits, int32_t n_valid) {
    memset(s, 0, sizeof *s);
    if (n_logits < 1 || n_logits > (1 << 30))
        return err_set(ZP_EINVAL, "sampler: n_logits = %d must be in [1, 2^30]", n_logits);
    if (n_valid < 1 || n_valid > n_logits)
        return err_set(ZP_EINVAL, "sampler: n_valid = %d must be in [1, n_logits = %d]", n_valid,
                       n_logits);
    size_t n = (size_t)n_logits;
    s->ids = arena_alloc(a, n * sizeof *s->ids, 64, "sampler ids");
    s->probs = arena_alloc(a, n * sizeof *s->probs, 64, "sampler probs");
    s->seen = arena_alloc(a, (n + 63) / 64 * sizeof *s->seen, 64, "sampler seen bitmap");
    s->counts = arena_alloc(a, n * sizeof *s->counts, 64, "sampler counts");
    s->keys = arena_alloc(a, n * sizeof *s->keys, 64, "sampler sort keys");
    s->keys_tmp = arena_alloc(a, n * sizeof *s->keys_tmp, 64, "sampler sort keys");
    s->ids_tmp = arena_alloc(a, n * sizeof *s->ids_tmp, 64, "sampler sort ids");
    if (!s->ids || !s->probs || !s->seen || !s->counts || !s->keys || !s->keys_tmp || !s->ids_tmp)
        return ZP_ENOMEM;
    s->n_logits = n_logits;
    s->n_valid = n_valid;
    s->temp = 1.0f;
    return 0;
}

/* The candidate order: logit descending, then id ascending (a strict total order). */
static inline bool better(float xa, int32_t ia, float xb, int32_t ib) {
    return xa > xb || (xa == xb && ia < ib);
}

/* Heaps keep the WORST candidate at the root: top-k replaces it, heapsort moves it last. */
static void heap_sift(int32_t *ids, float *keys, int32_t n, int32_t i) {
    float x = keys[i];
    int32_t id = ids[i];
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && better(keys[c], ids[c], keys[c + 1], ids[c + 1])) c++;
        if (!better(x, id, keys[c], ids[c])) break;
        keys[i] = keys[c];
        ids[i] = ids[c];
        i = c;
    }
    keys[i] = x;
    ids[i] = id;
}

static void heap_build(int32_t *ids, float *keys, int32_t n) {
    for (int32_t i = n / 2 - 1; i >= 0; i--)
        heap_sift(ids, keys, n, i);
}

/* Sorts a worst-at-root heap best first. */
static void heap_sort(int32_t *ids, float *keys, int32_t n) {
    for (int32_t end = n - 1; end > 0; end--) {
        float x = keys[0];
        int32_t id = ids[0];
        keys[0] = keys[end];
        ids[0] = ids[end];
        keys[end] = x;
        ids[end] = id;
        heap_sift(ids, keys, end, 0);
    }
}

static int check_ids(const int32_t *ids, int32_t n, int32_t limit, const char *what) {
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= limit)
            return err_set(ZP_EINVAL, "sampler: %s id %d at position %d is outside [0, %d)", what,
                           ids[i], i, limit);
    return 0;
}

static void repetition_mark(sampler *s, float *logits, const int32_t *ids, int32_t n, float r) {
    for (int32_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        uint64_t bit = 1ull << (id & 63);
        if (s->seen[id >> 6] & bit) continue;
        s->seen[id >> 6] |= bit;
        float x = logits[id];
        logits[id] = x > 0.0f ? x / r : x * r;
    }
}

static void seen_clear(sampler *s, const int32_t *ids, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        s->seen[ids[i] >> 6] = 0;
}

static int apply_penalties(sampler *s, const sampling_params *p, float *logits,
                           const int32_t *prompt, int32_t n_prompt, const int32_t *completion,
                           int32_t n_completion) {
    bool rep = p->repetition_penalty != 1.0f;
    bool pf = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!rep && !pf) return 0;
    int rc = check_ids(completion, n_completion, s->n_logits, "completion");
    if (rc == 0 && rep) rc = check_ids(prompt, n_prompt, s->n_logits, "prompt");
    if (rc) return rc;
    if (rep) {
        repetition_mark(s, logits, prompt, n_prompt, p->repetition_penalty);
        repetition_mark(s, logits, completion, n_completion, p->repetition_penalty);
        seen_clear(s, prompt, n_prompt);
        seen_clear(s, completion, n_completion);
    }
    if (pf) {
        for (int32_t i = 0; i < n_completion; i++)
            s->counts[completion[i]]++;
        /* As vLLM: logit - frequency * count, then - presence (once per distinct id). */
        for (int32_t i = 0; i < n_completion; i++) {
            int32_t id = completion[i], c = s->counts[id];
            if (c == 0) continue;
            logits[id] = logits[id] - p->frequency_penalty * (float)c - p->presence_penalty;
            s->counts[id] = 0;
        }
    }
    return 0;
}

/* Keeps the k best finite candidates, sorted best first; returns how many (< k only when
 * fewer tokens are finite). */
static int32_t select_top_k(sampler *s, const float *logits, int32_t k) {
    int32_t *ids = s->ids, n = 0;
    float *keys = s->probs;
    for (int32_t id = 0; id < s->n_valid; id++) {
        float x = logits[id];
        if (x == -INFINITY) continue;
        if (n < k) {
            ids[n] = id;
            keys[n] = x;
            if (++n == k) heap_build(ids, keys, n);
        } else if (better(x, id, keys[0], ids[0])) {
            ids[0] = id;
            keys[0] = x;
            heap_sift(ids, keys, k, 0);
        }
    }
    if (n < k) heap_build(ids, keys, n);
    heap_sort(ids, keys, n);
    return n;
}

/* Histogram bucket of an unnormalised probability in [0, 1] from its float bits: minus its
 * binary exponent (1 -> 0, [0.5, 1) -> 1, ...; zero and subnormals -> 127). */
static inline int32_t hist_bucket(uint32_t p_bits) {
    return 127 - (int32_t)(p_bits >> 23);
}

/* Sort key of a logit: unsigned order = logit descending (-0 and +0 compare equal). */
static inline uint32_t radix_key(float x) {
    float v = x + 0.0f;
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? u : ~(u | 0x80000000u);
}

/* Stable LSD radix sort of ids[0..n) by keys (ascending), 8 bits a pass; a pass whose byte is
 * the same for every key is skipped. Input in id order gives (logit desc, id asc). */
static void radix_sort(sampler *s, int32_t n) {
    uint32_t cnt[4][256];
    memset(cnt, 0, sizeof cnt);
    for (int32_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++)
            cnt[b][(s->keys[i] >> (8 * b)) & 255]++;
    int32_t *id_src = s->ids, *id_dst = s->ids_tmp;
    uint32_t *k_src = s->keys, *k_dst = s->keys_tmp;
    for (int b = 0; b < 4; b++) {
        if (cnt[b][(k_src[0] >> (8 * b)) & 255] == (uint32_t)n) continue;
        uint32_t pos = 0;
        for (int d = 0; d < 256; d++) {
            uint32_t c = cnt[b][d];
            cnt[b][d] = pos;
            pos += c;
        }
        for (int32_t i = 0; i < n; i++) {
            uint32_t at = cnt[b][(k_src[i] >> (8 * b)) & 255]++;
            k_dst[at] = k_src[i];
            id_dst[at] = id_src[i];
        }
        int32_t *ti = id_src;
        id_src = id_dst;
        id_dst = ti;
        uint32_t *tk = k_src;
        k_src = k_dst;
        k_dst = tk;
    }
    if (id_src != s->ids) memcpy(s->ids, id_src, (size_t)n * sizeof *s->ids);
}

/* Top-p over every finite candidate, in id order (ids[], probs[] = logits): bounds the
 * nucleus by whole histogram buckets (the first buckets whose mass reaches target * z, z the
 * candidates' mass, returned in *z), keeps every token whose logit is at least the smallest
 * logit in those buckets (a prefix of the candidate order even if exp were not monotone),
 * sorts them best first with probs[] = logits again, and returns their number. */
static int32_t nucleus_bound(sampler *s, const float *logits, int32_t n, float m, float t,
                             float top_p, double *z) {
    double hist[HIST_BUCKETS] = {0};
    float min_x[HIST_BUCKETS];
    for (int32_t b = 0; b < HIST_BUCKETS; b++)
        min_x[b] = INFINITY;
    float *pr = s->probs;
    exp_shift(pr, pr, n, m, t);
    for (int32_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &pr[i], sizeof bits);
        int32_t b = hist_bucket(bits);
        hist[b] += (double)pr[i];
        float x = logits[s->ids[i]];
        if (x < min_x[b]) min_x[b] = x;
    }
    *z = sum_row(pr, n);
    double target = (double)top_p * *z * (1.0 + HIST_SLACK), cum = 0.0;
    float x_min = INFINITY;
    for (int32_t b = 0; b < HIST_BUCKETS; b++) {
        cum += hist[b];
        if (min_x[b] < x_min) x_min = min_x[b];
        if (cum >= target) break;
    }
    int32_t j = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t id = s->ids[i];
        if (logits[id] < x_min) continue;
        s->ids[j] = id;
        s->keys[j++] = radix_key(logits[id]);
    }
    radix_sort(s, j);
    for (int32_t i = 0; i < j; i++)
        pr[i] = logits[s->ids[i]];
    return j;
}

int32_t sampler_probs(sampler *s, const sampling_params *p, float *logits, const int32_t *prompt,
                      int32_t n_prompt, const int32_t *completion, int32_t n_completion) {
    assert(p->temperature >= 0.0f && p->top_k >= 0 && p->top_p > 0.0f && p->top_p <= 1.0f &&
           p->min_p >= 0.0f && p->min_p <= 1.0f && p->repetition_penalty > 0.0f);
    s->n_kept = 0;
    s->has_log_z = false;
    if (n_prompt < 0 || n_completion < 0 || (n_prompt > 0 && !prompt) ||
        (n_completion > 0 && !completion))
        return err_set(ZP_EINVAL, "sampler: bad id list (n_prompt %d, n_completion %d)", n_prompt,
                       n_completion);
    for (int32_t i = s->n_valid; i < s->n_logits; i++)
        logits[i] = -INFINITY;
    int rc = apply_penalties(s, p, logits, prompt, n_prompt, completion, n_completion);
    if (rc) return rc;

    float m = -INFINITY;
    int32_t arg = -1;
    for (int32_t id = 0; id < s->n_valid; id++) {
        float x = logits[id];
        if (x > m) {
            m = x;
            arg = id;
        } else if (isnan(x)) {
            return err_set(ZP_EBACKEND, "sampler: logit of token %d is NaN", id);
        }
    }
    if (arg < 0) return err_set(ZP_EINVAL, "sampler: every token is masked (all logits -inf)");
    if (m == INFINITY) return err_set(ZP_EBACKEND, "sampler: logit of token %d is +inf", arg);
    s->max_logit = m;

    if (p->temperature == 0.0f) { /* the first maximum in id order: lowest id wins ties */
        s->temp = 1.0f;
        s->ids[0] = arg;
        s->probs[0] = 1.0f;
        s->n_kept = 1;
        return 1;
    }
    float t = p->temperature;
    s->temp = t;
    int32_t *ids = s->ids;
    float *pr = s->probs; /* logits (sort keys) until converted to probabilities below */
    int32_t n = 0;
    bool all = !(p->top_k > 0 && p->top_k < s->n_valid);
    if (!all) {
        n = select_top_k(s, logits, p->top_k);
    } else {
        for (int32_t id = 0; id < s->n_valid; id++) {
            if (logits[id] == -INFINITY) continue;
            ids[n] = id;
            pr[n++] = logits[id];
        }
    }

    /* Unnormalised probabilities exp((x - m) / t): the best candidate has exactly 1. z_cand is
     * the mass of all candidates (the top-k set, or every finite valid token). */
    double z_cand = -1.0;
    if (p->top_p < 1.0f && all) {
        n = nucleus_bound(s, logits, n, m, t, p->top_p, &z_cand);
    }
    exp_shift(pr, pr, n, m, t);
    double z = sum_row(pr, n);
    if (z_cand < 0.0) z_cand = z;
    if (all) { /* the logprob normaliser comes for free */
        s->log_z = log(z_cand);
        s->has_log_z = true;
    }
    if (p->top_p < 1.0f) { /* the shortest sorted prefix holding top_p of the candidates' mass */
        double target = (double)p->top_p * z_cand, cum = 0.0;
        int32_t i = 0;
        while (i < n) {
            cum += (double)pr[i++];
            if (cum >= target) break;
        }
        n = i;
    }
    if (p->min_p > 0.0f) { /* p >= min_p * p_max, and p_max is 1 here */
        int32_t j = 0;
        for (int32_t i = 0; i < n; i++) {
            if (pr[i] < p->min_p) continue;
            ids[j] = ids[i];
            pr[j++] = pr[i];
        }
        n = j;
    }
    double inv_z = 1.0 / sum_row(pr, n);
    for (int32_t i = 0; i < n; i++)
        pr[i] = (float)((double)pr[i] * inv_z);
    assert(n >= 1);
    s->n_kept = n;
    return n;
}

float sampler_logprob(sampler *s, const float *logits, int32_t id) {
    if (id < 0 || id >= s->n_valid || logits[id] == -INFINITY) return -INFINITY;
    float m = s->max_logit, t = s->temp;
    if (!s->has_log_z) { /* the same lanes and order as exp_shift() + sum_row() */
        double a[4] = {0, 0, 0, 0};
        int32_t i = 0;
        for (; i + 4 <= s->n_valid; i += 4) {
            f4 e = exp4_nonpos((load4(logits + i) - m) / t);
            for (int l = 0; l < 4; l++)
                a[l] += (double)e[l];
        }
        for (; i < s->n_valid; i++) {
            f4 e = exp4_nonpos(((f4){logits[i], m, m, m} - m) / t);
            a[i & 3] += (double)e[0];
        }
        s->log_z = log((a[0] + a[1]) + (a[2] + a[3]));
        s->has_log_z = true;
    }
    return (float)((double)((logits[id] - m) / t) - s->log_z);
}

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double sampler_uniform(uint64_t seed, int64_t n) {
    const uint64_t gamma = 0x9E3779B97F4A7C15ull;
    uint64_t key = mix64(seed ^ 0x5851F42D4C957F2Dull);
    return (double)(mix64(key + ((uint64_t)n + 1) * gamma) >> 11) * 0x1.0p-53;
}

int32_t sampler_sample(sampler *s, const sampling_params *p, float *logits, const int32_t *prompt,
                       int32_t n_prompt, const int32_t *completion, int32_t n_completion,
                       float *logprob) {
    int32_t n = sampler_probs(s, p, logits, prompt, n_prompt, completion, n_completion);
    if (n < 0) return n;
    int32_t tok = s->ids[0];
    if (n > 1) {
        double target = sampler_uniform(p->seed, n_completion) * sum_row(s->probs, n), cum = 0.0;
        /* The running sum adds in another order than sum_row(): when rounding leaves it at or
         * below target after the last token, that last token with mass is the draw. */
        for (int32_t i = 0; i < n; i++) {
            if (s->probs[i] <= 0.0f) continue;
            tok = s->ids[i];
            cum += (double)s->probs[i];
            if (cum > target) break;
        }
    }
    if (logprob) *logprob = sampler_logprob(s, logits, tok);
    return tok;
}
