/* sample.cu: token sampling on the GPU, the twin of engine/sampler.c (docs/SAMPLING.md is the
 * contract, docs/GPU.md "Sampling kernel" the design). One CTA per logit row samples one token;
 * every row of a step is one launch.
 *
 * Invariants:
 * - Same result as sampler_sample() up to summation rounding: the processed logits, the
 *   unnormalised probabilities exp((x - max) / T) (a bit-exact port of the CPU's exp, with
 *   __f*_rn intrinsics so that -fmad=true cannot contract them into FMAs), the renormalised
 *   probabilities and the uniform (splitmix64, in double) are bit-identical; only the sums
 *   differ. Sums are exact fixed point (see fx below), so the GPU's differ from the CPU's double
 *   sums by their rounding (~1e-16 relative) and a token can differ only when the draw or the
 *   top-p target falls that close to a CDF boundary.
 * - No sort: the top-k boundary, the top-p cut and the draw are each one radix select over the
 *   64-bit order key (radix_key(logit) << 32 | id, ascending = best first; id alone for a draw
 *   in id order), 8 bits a pass, with a histogram of counts or of probability mass per digit.
 *   Integer sums make every result independent of thread timing (bit-reproducible).
 * - Row counts are read from device memory (`const int *n_rows`): CTAs past it exit at once, so
 *   a padded CUDA-graph grid serves every batch. Ids >= n_valid are never read or sampled.
 * - Errors go to ids[row] as negative codes (ZP_SAMPLE_E*, also in drv/sample_abi.h, which
 *   turns them into the CPU sampler's ZP_E* codes).
 * Memory: the logit rows are modified in place (penalties applied, as the CPU sampler does);
 * no global scratch; about 22 KiB of static shared memory per CTA. Per-seat penalty state
 * (seen bitmap over prompt + completion, saturating uint16 completion counts) is described
 * at zp_sample_seat_init.
 * Threading: block of ZP_SAMPLE_THREADS (a multiple of 32, at most 1024) threads; the rows of
 * one launch must use distinct seats (each CTA updates its row's seat without locking out the
 * others).
 */
#include "common.cuh"

typedef unsigned long long u64;

/* Per-row parameters: the layout of zp_sample_params in drv/sample_abi.h (asserted there). */
struct zp_sample_params {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
    float repetition_penalty;
    float presence_penalty;
    float frequency_penalty;
    int seat;          /* penalty state index; -1 = none (then every penalty must be off) */
    u64 seed;
    int counter;       /* the draw's index: the request's completion length so far */
    int want_logprob;  /* logprobs[row] is written only when this is non-zero */
};
static_assert(sizeof(zp_sample_params) == 48, "zp_sample_params layout (drv/sample_abi.h)");

#define ZP_SAMPLE_ENAN (-1)
#define ZP_SAMPLE_EINF (-2)
#define ZP_SAMPLE_EMASKED (-3)
#define ZP_SAMPLE_ENOSEAT (-4)

#define COUNT_MAX 0xffffu /* completion counts saturate here */

/* ---- the CPU sampler's arithmetic, bit for bit ------------------------------------------ */

/* exp(y) for y <= 0: exp4_nonpos() of engine/sampler.c, one lane, constants as exact hex. */
__device__ __forceinline__ float exp_nonpos(float y) {
    const bool under = y < -0x1.5cp+6f; /* -87: true value < 2^-125, reported as 0 */
    if (under) y = -0x1.5cp+6f;
    float k = __fadd_rn(__fmul_rn(y, 0x1.715476p+0f), 0x1.8p+23f); /* round to integer */
    k = __fsub_rn(k, 0x1.8p+23f);
    float r = __fsub_rn(y, __fmul_rn(k, 0x1.62e4p-1f)); /* ln 2 high part */
    r = __fsub_rn(r, __fmul_rn(k, 0x1.7f7d1cp-20f));     /* ln 2 low part */
    float q = __fadd_rn(__fmul_rn(r, 0x1.6c16c2p-10f), 0x1.111112p-7f);
    q = __fadd_rn(__fmul_rn(q, r), 0x1.555556p-5f);
    q = __fadd_rn(__fmul_rn(q, r), 0x1.555556p-3f);
    q = __fadd_rn(__fmul_rn(q, r), 0.5f);
    q = __fadd_rn(__fmul_rn(q, r), 1.0f);
    q = __fadd_rn(__fmul_rn(q, r), 1.0f);
    const float scale = __int_as_float(((int)k + 127) << 23); /* 2^k, k in [-126, 0] */
    return under ? 0.0f : __fmul_rn(q, scale);
}

/* Unnormalised probability of logit x: exp((x - m) / t), as exp_shift() computes it. */
__device__ __forceinline__ float unnorm_prob(float x, float m, float t) {
    return exp_nonpos(__fdiv_rn(__fsub_rn(x, m), t));
}

__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* sampler_uniform(seed, n): integer mixing, then an exact conversion to double in [0, 1). */
__device__ __forceinline__ double uniform(u64 seed, long long n) {
    const u64 gamma = 0x9E3779B97F4A7C15ull;
    const u64 key = mix64(seed ^ 0x5851F42D4C957F2Dull);
    return __dmul_rn(__ull2double_rn(mix64(key + ((u64)n + 1) * gamma) >> 11), 0x1p-53);
}

/* Order key of a logit: unsigned ascending = logit descending; -0 and +0 equal (the CPU's
 * radix_key). */
__device__ __forceinline__ unsigned radix_key(float x) {
    const unsigned u = __float_as_uint(__fadd_rn(x, 0.0f));
    return (u & 0x80000000u) ? u : ~(u | 0x80000000u);
}

/* ---- exact sums -------------------------------------------------------------------------- */

/* A probability mass in fixed point: hi * 2^-40 + lo * 2^-80. A float in [0, 1] converts
 * exactly down to 2^-80 (its 24 significant bits fit for values >= 2^-56; smaller parts are
 * truncated, < 2^-80 each), and integer sums are exact and order-free. Each term adds at most
 * 2^40 to either word, so 2^23 terms cannot overflow (rows are at most 2^23 long). */
struct fx {
    u64 hi, lo;
};
#define FX_BITS 40
#define FX_LOW ((1ull << FX_BITS) - 1)

__device__ __forceinline__ fx fx_of(double v) { /* v >= 0 and < 2^23; truncates below 2^-80 */
    const double d = __dmul_rn(v, 0x1p40);
    const u64 h = __double2ull_rz(d);
    fx r;
    r.hi = h;
    r.lo = __double2ull_rz(__dmul_rn(__dsub_rn(d, __ull2double_rn(h)), 0x1p40));
    return r;
}

__device__ __forceinline__ fx fx_norm(fx a) {
    a.hi += a.lo >> FX_BITS;
    a.lo &= FX_LOW;
    return a;
}

__device__ __forceinline__ fx fx_add(fx a, fx b) {
    a.hi += b.hi;
    a.lo += b.lo;
    return a;
}

__device__ __forceinline__ bool fx_ge(fx a, fx b) {
    a = fx_norm(a);
    b = fx_norm(b);
    return a.hi > b.hi || (a.hi == b.hi && a.lo >= b.lo);
}

__device__ __forceinline__ double fx_double(fx a) {
    a = fx_norm(a);
    return __dadd_rn(__dmul_rn(__ull2double_rn(a.hi), 0x1p-40),
                     __dmul_rn(__ull2double_rn(a.lo), 0x1p-80));
}

/* ---- shared memory and block reductions ------------------------------------------------- */

struct smem {
    unsigned cnt[256]; /* radix histogram: count and mass per digit */
    u64 hi[256], lo[256];
    u64 stage_hi[32][32], stage_lo[32][32]; /* per warp: each lane's mass, for aggregation */
    u64 red_hi[32], red_lo[32];             /* block reductions */
    float red_x[32];
    int red_i[32];
    /* a select pass's outcome, written by one lane of warp 0 */
    int bin;
    unsigned bin_cnt, base_cnt;
    u64 base_hi, base_lo;
    int found_id;
};

/* Block sum of a fixed-point mass; every thread gets it. */
__device__ fx block_sum_fx(smem &S, fx v) {
    for (int o = 16; o > 0; o >>= 1) {
        v.hi += __shfl_xor_sync(0xffffffffu, v.hi, o);
        v.lo += __shfl_xor_sync(0xffffffffu, v.lo, o);
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); /* red_* may still be read by a previous reduction */
    if (!lane) S.red_hi[w] = v.hi, S.red_lo[w] = v.lo;
    __syncthreads();
    fx s;
    s.hi = lane < nw ? S.red_hi[lane] : 0ull;
    s.lo = lane < nw ? S.red_lo[lane] : 0ull;
    for (int o = 16; o > 0; o >>= 1) {
        s.hi += __shfl_xor_sync(0xffffffffu, s.hi, o);
        s.lo += __shfl_xor_sync(0xffffffffu, s.lo, o);
    }
    return s;
}

__device__ int block_sum_int(smem &S, int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (!lane) S.red_i[w] = v;
    __syncthreads();
    v = lane < nw ? S.red_i[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block maximum of (x, id) in the candidate order (larger x, then lower id); every thread
 * gets it. */
__device__ void block_best(smem &S, float &x, int &id) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ox = __shfl_xor_sync(0xffffffffu, x, o);
        const int oi = __shfl_xor_sync(0xffffffffu, id, o);
        if (ox > x || (ox == x && oi < id)) x = ox, id = oi;
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (!lane) S.red_x[w] = x, S.red_i[w] = id;
    __syncthreads();
    x = lane < nw ? S.red_x[lane] : -__int_as_float(0x7f800000);
    id = lane < nw ? S.red_i[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        const float ox = __shfl_xor_sync(0xffffffffu, x, o);
        const int oi = __shfl_xor_sync(0xffffffffu, id, o);
        if (ox > x || (ox == x && oi < id)) x = ox, id = oi;
    }
}

/* ---- the element view shared by every pass ---------------------------------------------- */

enum { MASS_COUNT = 0, MASS_P = 1, MASS_Q = 2 };

/* Which tokens a pass sees and what each weighs. */
struct view {
    const float *x;
    int n_valid;
    float m, t;     /* largest processed logit, temperature */
    u64 limit;      /* keep order keys <= limit (top-k / top-p); ~0 = all */
    float min_p;    /* keep p >= min_p; 0 = all */
    double inv_z;   /* MASS_Q: q = (float)(p * inv_z), the CPU's renormalisation */
    int mass;       /* MASS_* */
    bool by_logit;  /* order key (radix_key << 32 | id) rather than the id alone */
};

/* Token i (< n_valid): whether the view keeps it, its order key and its mass. -inf is never
 * kept. p is computed only for kept tokens, so passes over a small set are cheap. */
__device__ __forceinline__ bool view_elem(const view &v, int i, u64 &key, fx &mass) {
    const float x = v.x[i];
    if (x == -__int_as_float(0x7f800000)) return false;
    const u64 full = (u64)radix_key(x) << 32 | (unsigned)i;
    if (full > v.limit) return false;
    key = v.by_logit ? full : (u64)i;
    mass.hi = mass.lo = 0;
    if (v.mass == MASS_COUNT && v.min_p == 0.0f) return true;
    const float p = unnorm_prob(x, v.m, v.t);
    if (p < v.min_p) return false;
    if (v.mass == MASS_P) mass = fx_of((double)p);
    if (v.mass == MASS_Q) mass = fx_of((double)__double2float_rn(__dmul_rn((double)p, v.inv_z)));
    return true;
}

/* Total mass of the view's tokens; every thread gets it. */
__device__ fx view_sum(smem &S, const view &v) {
    fx s = {0ull, 0ull};
    for (int i = threadIdx.x; i < v.n_valid; i += blockDim.x) {
        u64 key;
        fx m;
        if (view_elem(v, i, key, m)) s = fx_add(s, m);
    }
    return block_sum_fx(S, s);
}

/* Radix select: the first token in order-key order at which the running total (count for
 * MASS_COUNT, else mass) reaches target, i.e. total(<= it) >= target > total(< it). Returns
 * the limit that keeps exactly the tokens up to it (order key prefix, low bits all ones) and,
 * in *id when id is not null, its id. 8 bits a pass, high to low; it stops early once the digit's bin holds only
 * that token (or, counting, once the whole bin is needed). Every thread calls it and gets the
 * same result. */
__device__ u64 radix_select(smem &S, const view &v, fx target, int *id) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const bool counting = v.mass == MASS_COUNT;
    u64 prefix = 0, mask = v.by_logit ? 0ull : 0xffffffff00000000ull;
    unsigned base_cnt = 0;
    fx base = {0ull, 0ull};
    for (int shift = v.by_logit ? 56 : 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) S.cnt[b] = 0, S.hi[b] = S.lo[b] = 0;
        __syncthreads();
        /* Trip count is uniform per warp (base steps by whole warps) so the lanes of a warp
         * aggregate equal digits before touching shared memory. */
        for (int i0 = threadIdx.x & ~31; i0 < v.n_valid; i0 += blockDim.x) {
            const int i = i0 + lane;
            int bin = -1;
            u64 key;
            fx m = {0ull, 0ull};
            if (i < v.n_valid && view_elem(v, i, key, m) && (key & mask) == prefix)
                bin = (int)((key >> shift) & 255);
            const unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (!counting) S.stage_hi[w][lane] = m.hi, S.stage_lo[w][lane] = m.lo;
            __syncwarp();
            if (bin >= 0 && lane == __ffs(peers) - 1) {
                atomicAdd(&S.cnt[bin], (unsigned)__popc(peers));
                if (!counting) {
                    u64 h = 0, l = 0;
                    for (unsigned p = peers; p; p &= p - 1) {
                        const int j = __ffs(p) - 1;
                        h += S.stage_hi[w][j];
                        l += S.stage_lo[w][j];
                    }
                    if (h) atomicAdd(&S.hi[bin], h);
                    if (l) atomicAdd(&S.lo[bin], l);
                }
            }
            __syncwarp(); /* the stage is rewritten next iteration */
        }
        __syncthreads();
        if (w == 0) { /* lane l scans bins 8l..8l+7 */
            unsigned c = 0;
            u64 h = 0, l = 0;
            for (int k = 0; k < 8; k++) {
                c += S.cnt[lane * 8 + k];
                h += S.hi[lane * 8 + k];
                l += S.lo[lane * 8 + k];
            }
            unsigned ci = c;
            u64 hi = h, li = l;
            for (int o = 1; o < 32; o <<= 1) { /* inclusive scan over lanes */
                const unsigned c2 = __shfl_up_sync(0xffffffffu, ci, o);
                const u64 h2 = __shfl_up_sync(0xffffffffu, hi, o);
                const u64 l2 = __shfl_up_sync(0xffffffffu, li, o);
                if (lane >= o) ci += c2, hi += h2, li += l2;
            }
            fx incl = {base.hi + hi, base.lo + li};
            const bool reach = counting ? (u64)base_cnt + ci >= target.lo : fx_ge(incl, target);
            const unsigned hit = __ballot_sync(0xffffffffu, reach);
            const unsigned nonempty = __ballot_sync(0xffffffffu, c > 0);
            /* Not reached at all cannot happen for the callers' targets; take the last token
             * then, so a broken invariant gives the worst kept token, not garbage. */
            const int owner = hit ? __ffs(hit) - 1 : (nonempty ? 31 - __clz(nonempty) : 0);
            if (lane == owner) {
                unsigned cc = base_cnt + ci - c;
                fx run = {base.hi + hi - h, base.lo + li - l};
                int pick = lane * 8;
                for (int k = 0; k < 8; k++) {
                    const int b = lane * 8 + k;
                    const unsigned nc = cc + S.cnt[b];
                    const fx nr = {run.hi + S.hi[b], run.lo + S.lo[b]};
                    const bool ok = counting ? (u64)nc >= target.lo : fx_ge(nr, target);
                    pick = b;
                    if (hit ? ok : (S.cnt[b] > 0 && nc == base_cnt + ci)) break;
                    cc = nc, run = nr;
                }
                S.bin = pick;
                S.bin_cnt = S.cnt[pick];
                S.base_cnt = cc;
                S.base_hi = run.hi;
                S.base_lo = run.lo;
            }
        }
        __syncthreads();
        const int b = S.bin;
        const unsigned bin_cnt = S.bin_cnt;
        base_cnt = S.base_cnt;
        base.hi = S.base_hi;
        base.lo = S.base_lo;
        prefix |= (u64)b << shift;
        mask |= 255ull << shift;
        /* The pass's shared outcome is next overwritten after the next pass's histogram sync,
         * which every thread reaches only after reading it here. */
        if (bin_cnt <= 1 || (counting && (u64)base_cnt + bin_cnt == target.lo)) break;
    }
    if (id && ~mask == 0ull) {
        *id = (int)(prefix & 0xffffffffull);
    } else if (id) { /* stopped early: the bin holds one token; find it */
        if (!threadIdx.x) S.found_id = -1;
        __syncthreads();
        for (int i = threadIdx.x; i < v.n_valid; i += blockDim.x) {
            u64 key;
            fx m;
            if (view_elem(v, i, key, m) && (key & mask) == prefix) S.found_id = i;
        }
        __syncthreads();
        *id = S.found_id;
        __syncthreads(); /* found_id is rewritten by a later select */
    }
    return v.by_logit ? (prefix | ~mask) : ~0ull;
}

/* ---- penalty state ---------------------------------------------------------------------- */

/* completion count += 1, saturating; u16 counts updated through their aligned 32-bit word
 * (the count arrays are 4-byte aligned; see zp_sample_seat_init). */
__device__ __forceinline__ void count_add(unsigned short *c) {
    unsigned *word = (unsigned *)((size_t)c & ~(size_t)3);
    const unsigned sh = ((size_t)c & 2) ? 16 : 0;
    unsigned old = *word, seen;
    do {
        seen = old;
        if (((seen >> sh) & 0xffffu) == COUNT_MAX) return;
        old = atomicCAS(word, seen, seen + (1u << sh));
    } while (old != seen);
}

/* Seat layout for a row stride S: words = ceil(S / 64); seen[seat][words] (u64, bit id % 64 of
 * word id / 64: the id occurs in the prompt or the completion) and counts[seat][words * 64]
 * (u16: occurrences in the completion, saturating at 65535). 8 + 128 bytes per 64 ids:
 * 322,864 bytes per seat at S = 151,936. Both arrays must be 4-byte aligned.
 *
 * zp_sample_seat_init: job j (< *n_jobs) is jobs[j] = {seat, offset, n_prompt, n_completion}:
 * the seat is cleared, then marked with hist_ids[offset .. offset + n_prompt) (prompt) and the
 * n_completion ids after them (completion: marked and counted). Ids outside [0, stride) are
 * skipped (the host validates histories). grid (jobs_cap), block ZP_SAMPLE_THREADS; the jobs
 * of one launch name distinct seats. */
extern "C" __global__ void zp_sample_seat_init(u64 *seen, unsigned short *counts, const int *jobs,
                                               const int *hist_ids, const int *n_jobs,
                                               int stride) {
    zp_grid_dep();
    const int j = blockIdx.x;
    if (j >= *n_jobs) return;
    const int seat = jobs[4 * j], off = jobs[4 * j + 1], np = jobs[4 * j + 2],
              nc = jobs[4 * j + 3], words = (stride + 63) >> 6;
    u64 *bits = seen + (size_t)seat * words;
    unsigned short *cnt = counts + (size_t)seat * words * 64;
    unsigned *cnt32 = (unsigned *)cnt; /* 128 bytes per word of ids: 4-byte aligned */
    for (int i = threadIdx.x; i < words; i += blockDim.x) bits[i] = 0;
    for (int i = threadIdx.x; i < words * 32; i += blockDim.x) cnt32[i] = 0;
    __syncthreads(); /* clears before marks, within the block */
    for (int i = threadIdx.x; i < np + nc; i += blockDim.x) {
        const int id = hist_ids[off + i];
        if (id < 0 || id >= stride) continue;
        atomicOr(&bits[id >> 6], 1ull << (id & 63));
        if (i >= np) count_add(&cnt[id]);
    }
}

/* Repetition penalty (HF rule) on every seen id, then frequency / presence on every id with a
 * completion count, in place; the same float operations as the CPU's apply_penalties(). */
__device__ void apply_penalties(float *x, int n_valid, const u64 *bits, const unsigned short *cnt,
                                int words, const zp_sample_params &P) {
    const bool rep = P.repetition_penalty != 1.0f;
    const bool pf = P.presence_penalty != 0.0f || P.frequency_penalty != 0.0f;
    for (int wd = threadIdx.x; wd < words; wd += blockDim.x) {
        for (u64 b = bits[wd]; b; b &= b - 1) {
            const int id = wd * 64 + __ffsll((long long)b) - 1;
            if (id >= n_valid) break; /* ids grow within a word */
            float v = x[id];
            if (rep)
                v = v > 0.0f ? __fdiv_rn(v, P.repetition_penalty)
                             : __fmul_rn(v, P.repetition_penalty);
            const unsigned c = cnt[id];
            if (pf && c)
                v = __fsub_rn(__fsub_rn(v, __fmul_rn(P.frequency_penalty, (float)c)),
                              P.presence_penalty);
            x[id] = v;
        }
    }
}

/* ---- the sampler ------------------------------------------------------------------------ */

/* ids[r] = the token sampled from logits row r (fp32 [rows][stride], modified in place) with
 * params[r], or a negative ZP_SAMPLE_E* code; logprobs[r] = log-softmax at it (temperature
 * applied, before top-k/p/min-p; temperature 1 for greedy) when params[r].want_logprob. A row
 * with a seat has its token added to the seat (seen bit, count) after sampling. Rows
 * r >= *n_rows are not touched. grid (rows_cap), block ZP_SAMPLE_THREADS. */
extern "C" __global__ void __launch_bounds__(1024)
    zp_sample(int *ids, float *logprobs, float *logits, const zp_sample_params *params,
              const int *n_rows, int stride, int n_valid, u64 *seen, unsigned short *counts) {
    zp_grid_dep();
    __shared__ smem S;
    const int r = blockIdx.x;
    if (r >= *n_rows) return;
    const zp_sample_params P = params[r];
    float *x = logits + (size_t)r * stride;
    const int words = (stride + 63) >> 6;
    const bool penalties = P.repetition_penalty != 1.0f || P.presence_penalty != 0.0f ||
                           P.frequency_penalty != 0.0f;
    u64 *bits = P.seat >= 0 ? seen + (size_t)P.seat * words : 0;
    unsigned short *cnt = P.seat >= 0 ? counts + (size_t)P.seat * words * 64 : 0;
    if (penalties) {
        if (!bits) {
            if (!threadIdx.x) ids[r] = ZP_SAMPLE_ENOSEAT;
            return;
        }
        apply_penalties(x, n_valid, bits, cnt, words, P);
        __syncthreads(); /* the processed row is read by every thread below */
    }

    /* The largest logit (first in id order), NaN, and the number of finite tokens. */
    float best = -__int_as_float(0x7f800000);
    int arg = 0x7fffffff, finite = 0, nan = 0;
    for (int i = threadIdx.x; i < n_valid; i += blockDim.x) {
        const float v = x[i];
        if (v > best) best = v, arg = i;
        nan |= v != v;
        finite += v != -__int_as_float(0x7f800000);
    }
    nan = __syncthreads_or(nan);
    finite = block_sum_int(S, finite);
    block_best(S, best, arg);
    int err = 0;
    if (nan) err = ZP_SAMPLE_ENAN; /* the CPU's order: NaN, then all masked, then +inf */
    else if (finite == 0) err = ZP_SAMPLE_EMASKED;
    else if (best == __int_as_float(0x7f800000)) err = ZP_SAMPLE_EINF;
    if (err) {
        if (!threadIdx.x) ids[r] = err;
        return;
    }
    const float m = best;
    const bool greedy = P.temperature == 0.0f;
    view v = {x, n_valid, m, greedy ? 1.0f : P.temperature, ~0ull, 0.0f, 0.0, MASS_P, true};
    int tok = arg;
    /* Mass of every finite token: the logprob normaliser and the top-p base without top-k. */
    fx z_all = {0ull, 0ull};
    if (P.want_logprob || (!greedy && P.top_p < 1.0f)) z_all = view_sum(S, v);

    if (!greedy) {
        const bool top_k = P.top_k > 0 && P.top_k < n_valid;
        if (top_k && P.top_k < finite) { /* the k-th best token bounds the candidates */
            v.mass = MASS_COUNT;
            const fx rank = {0ull, (u64)P.top_k};
            v.limit = radix_select(S, v, rank, 0);
        }
        if (P.top_p < 1.0f) { /* the shortest best-first prefix holding top_p of their mass */
            v.mass = MASS_P;
            const fx z_cand = v.limit == ~0ull ? z_all : view_sum(S, v);
            const fx target = fx_of(__dmul_rn((double)P.top_p, fx_double(z_cand)));
            v.limit = radix_select(S, v, target, 0);
        }
        v.min_p = P.min_p;
        v.mass = MASS_P;
        v.inv_z = __ddiv_rn(1.0, fx_double(view_sum(S, v)));
        v.mass = MASS_Q;
        const fx q_sum = fx_norm(view_sum(S, v));
        /* The first kept token whose running sum exceeds u * total, walking best first when
         * top-k or top-p is on and in id order otherwise (the CPU's stored order). When
         * rounding puts u * total at the total, the last token with mass. */
        const fx drawn = fx_of(__dmul_rn(uniform(P.seed, P.counter), fx_double(q_sum)));
        fx target = q_sum;
        if (!fx_ge(drawn, q_sum)) target = fx_add(drawn, fx{0ull, 1ull});
        v.by_logit = top_k || P.top_p < 1.0f;
        radix_select(S, v, target, &tok);
    }
    if (threadIdx.x) return;
    ids[r] = tok;
    if (P.want_logprob)
        logprobs[r] = __double2float_rn(
            __dsub_rn((double)__fdiv_rn(__fsub_rn(x[tok], m), v.t), log(fx_double(z_all))));
    if (bits) { /* every other thread's read of the seat ended at the syncs above */
        atomicOr(&bits[tok >> 6], 1ull << (tok & 63));
        count_add(&cnt[tok]);
    }
}
