/* cpu_gemm: the CPU backend's matmul kernels and their blocking (cpu_gemm.h). */
#include "drv/cpu_gemm.h"

#include "arena/err.h"
#include "drv/backend.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define GEMM_NR     4           /* columns per tile */
#define GEMM_MR_MAX 6           /* rows per tile, at most (AVX-512: 24 accumulators) */
#define GEMM_PACK   (64 * 1024) /* floats of widened weights per column block: 256 KiB, in L2 */
#define GEMM_XS     32          /* bf16 x rows of the dot tiles: elements a multiple of this */

#define INLINE static inline __attribute__((always_inline))

/* A tile: rows x (MR or fewer) ldx floats apart, k elements each, against columns w, w + ldw,
 * ... (nr of them; a column past nr reads column nr - 1 and is not stored), out rows ldo apart,
 * plus bias[j]. */
typedef void (*tile_fn)(const float *x, size_t ldx, size_t k, const void *w, size_t ldw, int nr,
                        float *out, size_t ldo, const float *bias);
/* dst[0..n) = src[0..n) of type t as f32, exactly as the tiles widen it. */
typedef void (*widen_fn)(float *dst, const void *src, zp_dtype t, size_t n);
/* A bf16-dot tile: x rows xs elements apart (zero-padded to a multiple of 32), bf16 weights
 * ldw elements apart. */
typedef void (*dtile_fn)(const uint16_t *x, size_t xs, size_t k, const uint16_t *w, size_t ldw,
                         int nr, float *out, size_t ldo, const float *bias);

struct cpu_gemm_kernel {
    const char *name;
    int mr;
    tile_fn tile[3][GEMM_MR_MAX]; /* [weight dtype][rows - 1] */
    /* [weight dtype][rows - 5]: 5 to 8 rows x 2 columns read in place (batched decode: the
     * weights stream once, no widening pass), or none ({NULL}) */
    tile_fn wide[3][4];
    widen_fn widen;
    /* bf16 precision, [rows - 1]: tiles of bf16 x rows (cpu_gemm_round, rows GEMM_XS apart in
     * elements rounded up) against bf16 weights, two products per lane per instruction; or none
     * ({NULL}): then the rounded rows are f32 and the f32-x tiles run on them */
    dtile_fn dot[GEMM_MR_MAX];
    /* one row x one column, read in place, per weight dtype, and its dot tile; or none (NULL).
     * A single row takes its columns one by one: consecutive columns' weights are adjacent, so
     * the weights stream as one sequential read that the hardware prefetcher follows (plus a
     * software prefetch one column ahead); the 4-column tile's four interleaved streams took
     * 22-26 ms per 1 x 128 decode step against 18-20 ms (8 columns: 21-24 ms). */
    tile_fn row[3];
    dtile_fn dot_row;
};

/* Column j of a tile's weights, ldw elements apart (the last one repeated past nr). */
INLINE const void *wcol(const void *w, int j, int nr, size_t ldw, zp_dtype t) {
    return (const char *)w + (size_t)(j < nr ? j : nr - 1) * ldw * zp_dtype_size(t);
}

/* ---- generic: 8-lane GCC vectors, multiply then add (ISO C: no contraction) ---- */

typedef float v8f __attribute__((vector_size(32)));

INLINE v8f g_ld(const void *p, zp_dtype t, size_t i) {
    v8f v;
    if (t == ZP_F32) {
        memcpy(&v, (const float *)p + i, sizeof v);
    } else {
        const uint16_t *h = (const uint16_t *)p + i;
        for (int l = 0; l < 8; l++)
            v[l] = t == ZP_BF16 ? zp_bf16_to_f32(h[l]) : zp_f16_to_f32(h[l]);
    }
    return v;
}

/* The k % 8 tail of row p from element i, zero-padded to 8 lanes. */
INLINE v8f g_tail(const void *p, zp_dtype t, size_t i, size_t k) {
    uint16_t h[8] = {0};
    float f[8] = {0};
    if (t == ZP_F32) {
        memcpy(f, (const float *)p + i, (k - i) * sizeof(float));
        return g_ld(f, ZP_F32, 0);
    }
    memcpy(h, (const uint16_t *)p + i, (k - i) * sizeof(uint16_t));
    return g_ld(h, t, 0);
}

INLINE float g_sum(v8f l) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

INLINE void g_tile(const float *x, size_t ldx, size_t k, const void *w, size_t ldw, int nr,
                   float *out, size_t ldo, const float *bias, zp_dtype t, int mr) {
    const void *wc[GEMM_NR];
    for (int j = 0; j < GEMM_NR; j++)
        wc[j] = wcol(w, j, nr, ldw, t);
    v8f acc[GEMM_MR_MAX][GEMM_NR] = {{{0}}};
    size_t i = 0;
    for (; i + 8 <= k; i += 8) {
        v8f wv[GEMM_NR];
        for (int j = 0; j < GEMM_NR; j++)
            wv[j] = g_ld(wc[j], t, i);
        for (int r = 0; r < mr; r++) {
            v8f xv = g_ld(x + (size_t)r * ldx, ZP_F32, i);
            for (int j = 0; j < GEMM_NR; j++)
                acc[r][j] += xv * wv[j];
        }
    }
    if (i < k)
        for (int j = 0; j < GEMM_NR; j++) {
            v8f wv = g_tail(wc[j], t, i, k);
            for (int r = 0; r < mr; r++)
                acc[r][j] += g_tail(x + (size_t)r * ldx, ZP_F32, i, k) * wv;
        }
    float res[GEMM_MR_MAX][GEMM_NR]; /* every lane sum (constant indices keep acc in registers) */
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < GEMM_NR; j++)
            res[r][j] = g_sum(acc[r][j]) + bias[j];
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++)
            out[(size_t)r * ldo + (size_t)j] = res[r][j];
}

static void g_widen(float *dst, const void *src, zp_dtype t, size_t n) {
    const uint16_t *h = src;
    if (t == ZP_BF16)
        for (size_t i = 0; i < n; i++)
            dst[i] = zp_bf16_to_f32(h[i]);
    else
        for (size_t i = 0; i < n; i++)
            dst[i] = zp_f16_to_f32(h[i]);
}

#define TILE_FN(pre, body, t, tn, mr)                                                              \
    static void pre##_##tn##_##mr(const float *x, size_t ldx, size_t k, const void *w, size_t ldw, \
                                  int nr, float *out, size_t ldo, const float *bias) {             \
        body(x, ldx, k, w, ldw, nr, out, ldo, bias, t, mr);                                        \
    }

TILE_FN(g, g_tile, ZP_F32, f32, 1)
TILE_FN(g, g_tile, ZP_F32, f32, 2)
TILE_FN(g, g_tile, ZP_BF16, bf16, 1)
TILE_FN(g, g_tile, ZP_BF16, bf16, 2)
TILE_FN(g, g_tile, ZP_F16, f16, 1)
TILE_FN(g, g_tile, ZP_F16, f16, 2)

static const cpu_gemm_kernel k_generic = {
    "generic", 2,       {{g_f32_1, g_f32_2}, {g_bf16_1, g_bf16_2}, {g_f16_1, g_f16_2}},
    {{NULL}},  g_widen, {NULL},
    {NULL},    NULL,
};

#if defined(__x86_64__)

/* ---- AVX2 + FMA (+ F16C, which every AVX2 CPU has): 8 lanes, 2 rows x 4 columns ---- */

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 INLINE __m256 a2_ld(const void *p, zp_dtype t, size_t i) {
    if (t == ZP_F32) return _mm256_loadu_ps((const float *)p + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (t == ZP_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* The k % 8 tail of row p from element i, zero-padded to 8 lanes. */
AVX2 INLINE __m256 a2_tail(const void *p, zp_dtype t, size_t i, size_t k) {
    uint32_t buf[8] = {0};
    memcpy(buf, (const char *)p + i * zp_dtype_size(t), (k - i) * zp_dtype_size(t));
    return a2_ld(buf, t, 0);
}

AVX2 INLINE float a2_sum(__m256 v) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

/* The tiles keep their accumulators in named variables (c<row><column>): GCC leaves arrays of
 * vectors this large in memory, storing every accumulator on every step. */
#define TILE_ACC(V, z)                                                                             \
    V c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z, c20 = z, c21 = z,    \
      c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z, c40 = z, c41 = z, c42 = z, c43 = z,    \
      c50 = z, c51 = z, c52 = z, c53 = z
/* Row r's four multiply-adds with xv against the columns' w0..w3. */
#define TILE_ROW(fma, r, xload)                                                                    \
    if (mr > r) {                                                                                  \
        xv = xload;                                                                                \
        c##r##0 = fma(xv, w0, c##r##0), c##r##1 = fma(xv, w1, c##r##1);                            \
        c##r##2 = fma(xv, w2, c##r##2), c##r##3 = fma(xv, w3, c##r##3);                            \
    }
/* Row r's sums + bias into res[r]. */
#define TILE_RES(sum, r)                                                                           \
    if (mr > r) {                                                                                  \
        res[r][0] = sum(c##r##0) + bias[0], res[r][1] = sum(c##r##1) + bias[1];                    \
        res[r][2] = sum(c##r##2) + bias[2], res[r][3] = sum(c##r##3) + bias[3];                    \
    }

AVX2 INLINE void a2_tile(const float *x, size_t ldx, size_t k, const void *w, size_t ldw, int nr,
                         float *out, size_t ldo, const float *bias, zp_dtype t, int mr) {
    const void *p0 = wcol(w, 0, nr, ldw, t), *p1 = wcol(w, 1, nr, ldw, t),
               *p2 = wcol(w, 2, nr, ldw, t), *p3 = wcol(w, 3, nr, ldw, t);
    TILE_ACC(__m256, _mm256_setzero_ps());
    __m256 w0, w1, w2, w3, xv;
    size_t es = zp_dtype_size(t);
    size_t i = 0;
    for (; i + 8 <= k; i += 8) {
        w0 = a2_ld(p0, t, i), w1 = a2_ld(p1, t, i), w2 = a2_ld(p2, t, i), w3 = a2_ld(p3, t, i);
        for (int j = 0; j < GEMM_NR; j++) /* the next tile's rows (a prefetch never faults) */
            _mm_prefetch((const char *)w + (size_t)(GEMM_NR + j) * ldw * es + i * es, _MM_HINT_T0);
        TILE_ROW(_mm256_fmadd_ps, 0, _mm256_loadu_ps(x + i))
        TILE_ROW(_mm256_fmadd_ps, 1, _mm256_loadu_ps(x + ldx + i))
    }
    if (i < k) {
        w0 = a2_tail(p0, t, i, k), w1 = a2_tail(p1, t, i, k), w2 = a2_tail(p2, t, i, k);
        w3 = a2_tail(p3, t, i, k);
        TILE_ROW(_mm256_fmadd_ps, 0, a2_tail(x, ZP_F32, i, k))
        TILE_ROW(_mm256_fmadd_ps, 1, a2_tail(x + ldx, ZP_F32, i, k))
    }
    float res[GEMM_MR_MAX][GEMM_NR];
    TILE_RES(a2_sum, 0)
    TILE_RES(a2_sum, 1)
    (void)c20, (void)c21, (void)c22, (void)c23, (void)c30, (void)c31, (void)c32, (void)c33;
    (void)c40, (void)c41, (void)c42, (void)c43, (void)c50, (void)c51, (void)c52, (void)c53;
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++)
            out[(size_t)r * ldo + (size_t)j] = res[r][j];
}

AVX2 static void a2_widen(float *dst, const void *src, zp_dtype t, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, a2_ld(src, t, i));
    if (i < n) {
        float f[8];
        _mm256_storeu_ps(f, a2_tail(src, t, i, n));
        memcpy(dst + i, f, (n - i) * sizeof(float));
    }
}

#define A2_TILE(tn, t, mr)                                                                         \
    AVX2 static void a2_##tn##_##mr(const float *x, size_t ldx, size_t k, const void *w,           \
                                    size_t ldw, int nr, float *out, size_t ldo,                    \
                                    const float *bias) {                                           \
        a2_tile(x, ldx, k, w, ldw, nr, out, ldo, bias, t, mr);                                     \
    }
A2_TILE(f32, ZP_F32, 1)
A2_TILE(f32, ZP_F32, 2)
A2_TILE(bf16, ZP_BF16, 1)
A2_TILE(bf16, ZP_BF16, 2)
A2_TILE(f16, ZP_F16, 1)
A2_TILE(f16, ZP_F16, 2)

static const cpu_gemm_kernel k_avx2 = {
    "avx2",   2,        {{a2_f32_1, a2_f32_2}, {a2_bf16_1, a2_bf16_2}, {a2_f16_1, a2_f16_2}},
    {{NULL}}, a2_widen, {NULL},
    {NULL},   NULL,
};

/* ---- AVX-512 (f, bw, vl): 16 lanes, 6 rows x 4 columns (or 8 x 2, or 1 x 1), masked tails ---- */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

AVX512 INLINE __m512 a5_ld(const void *p, zp_dtype t, size_t i, __mmask16 m) {
    if (t == ZP_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (t == ZP_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

AVX512 INLINE float a5_sum(__m512 v) {
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 a = _mm256_add_ps(lo, hi);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

AVX512 INLINE void a5_tile(const float *x, size_t ldx, size_t k, const void *w, size_t ldw, int nr,
                           float *out, size_t ldo, const float *bias, zp_dtype t, int mr) {
    const void *p0 = wcol(w, 0, nr, ldw, t), *p1 = wcol(w, 1, nr, ldw, t),
               *p2 = wcol(w, 2, nr, ldw, t), *p3 = wcol(w, 3, nr, ldw, t);
    TILE_ACC(__m512, _mm512_setzero_ps());
    __m512 w0, w1, w2, w3, xv;
    size_t es = zp_dtype_size(t);
    for (size_t i = 0; i < k; i += 16) { /* the last step masked */
        __mmask16 m = k - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - i)) - 1);
        w0 = a5_ld(p0, t, i, m), w1 = a5_ld(p1, t, i, m), w2 = a5_ld(p2, t, i, m);
        w3 = a5_ld(p3, t, i, m);
        for (int j = 0; j < GEMM_NR; j++) /* the next tile's rows (a prefetch never faults) */
            _mm_prefetch((const char *)w + (size_t)(GEMM_NR + j) * ldw * es + i * es, _MM_HINT_T0);
        TILE_ROW(_mm512_fmadd_ps, 0, _mm512_maskz_loadu_ps(m, x + i))
        TILE_ROW(_mm512_fmadd_ps, 1, _mm512_maskz_loadu_ps(m, x + ldx + i))
        TILE_ROW(_mm512_fmadd_ps, 2, _mm512_maskz_loadu_ps(m, x + 2 * ldx + i))
        TILE_ROW(_mm512_fmadd_ps, 3, _mm512_maskz_loadu_ps(m, x + 3 * ldx + i))
        TILE_ROW(_mm512_fmadd_ps, 4, _mm512_maskz_loadu_ps(m, x + 4 * ldx + i))
        TILE_ROW(_mm512_fmadd_ps, 5, _mm512_maskz_loadu_ps(m, x + 5 * ldx + i))
    }
    float res[GEMM_MR_MAX][GEMM_NR];
    TILE_RES(a5_sum, 0)
    TILE_RES(a5_sum, 1)
    TILE_RES(a5_sum, 2)
    TILE_RES(a5_sum, 3)
    TILE_RES(a5_sum, 4)
    TILE_RES(a5_sum, 5)
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++)
            out[(size_t)r * ldo + (size_t)j] = res[r][j];
}

AVX512 static void a5_widen(float *dst, const void *src, zp_dtype t, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, a5_ld(src, t, i, 0xFFFF));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, a5_ld(src, t, i, m));
    }
}

#define A5_TILE(tn, t, mr)                                                                         \
    AVX512 static void a5_##tn##_##mr(const float *x, size_t ldx, size_t k, const void *w,         \
                                      size_t ldw, int nr, float *out, size_t ldo,                  \
                                      const float *bias) {                                         \
        a5_tile(x, ldx, k, w, ldw, nr, out, ldo, bias, t, mr);                                     \
    }
#define A5_TILES(tn, t)                                                                            \
    A5_TILE(tn, t, 1)                                                                              \
    A5_TILE(tn, t, 2)                                                                              \
    A5_TILE(tn, t, 3) A5_TILE(tn, t, 4) A5_TILE(tn, t, 5) A5_TILE(tn, t, 6)
A5_TILES(f32, ZP_F32)
A5_TILES(bf16, ZP_BF16)
A5_TILES(f16, ZP_F16)

/* The one-column tile (one row): the same chain as an element of a5_tile. */
AVX512 INLINE void a5_row(const float *x, size_t k, const void *w, size_t ldw, float *out,
                          const float *bias, zp_dtype t) {
    size_t es = zp_dtype_size(t);
    __m512 c = _mm512_setzero_ps();
    for (size_t i = 0; i < k; i += 16) { /* the last step masked */
        __mmask16 m = k - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - i)) - 1);
        _mm_prefetch((const char *)w + (ldw + i) * es, _MM_HINT_T0); /* the next column */
        c = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), a5_ld(w, t, i, m), c);
    }
    out[0] = a5_sum(c) + bias[0];
}

#define A5_ROW(tn, t)                                                                              \
    AVX512 static void a5r_##tn(const float *x, size_t ldx, size_t k, const void *w, size_t ldw,   \
                                int nr, float *out, size_t ldo, const float *bias) {               \
        (void)ldx, (void)nr, (void)ldo;                                                            \
        a5_row(x, k, w, ldw, out, bias, t);                                                        \
    }
A5_ROW(f32, ZP_F32)
A5_ROW(bf16, ZP_BF16)
A5_ROW(f16, ZP_F16)

/* The wide tile: up to 8 rows x 2 columns, the same chain per element as a5_tile. */
#define WIDE_ROW(r)                                                                                \
    if (mr > r) {                                                                                  \
        xv = _mm512_maskz_loadu_ps(m, x + (size_t)(r) * ldx + i);                                  \
        c##r##0 = _mm512_fmadd_ps(xv, w0, c##r##0), c##r##1 = _mm512_fmadd_ps(xv, w1, c##r##1);    \
    }
#define WIDE_RES(r)                                                                                \
    if (mr > r) res[r][0] = a5_sum(c##r##0) + bias[0], res[r][1] = a5_sum(c##r##1) + bias[1];

AVX512 INLINE void a5_wide(const float *x, size_t ldx, size_t k, const void *w, size_t ldw, int nr,
                           float *out, size_t ldo, const float *bias, zp_dtype t, int mr) {
    size_t es = zp_dtype_size(t);
    const void *p0 = wcol(w, 0, nr, ldw, t), *p1 = wcol(w, 1, nr, ldw, t);
    __m512 z = _mm512_setzero_ps(), c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z,
           c31 = z, c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z, w0, w1,
           xv;
    for (size_t i = 0; i < k; i += 16) { /* the last step masked */
        __mmask16 m = k - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - i)) - 1);
        w0 = a5_ld(p0, t, i, m), w1 = a5_ld(p1, t, i, m);
        for (int j = 0; j < 2; j++) /* the next tile's rows */
            _mm_prefetch((const char *)w + (size_t)(2 + j) * ldw * es + i * es, _MM_HINT_T0);
        WIDE_ROW(0)
        WIDE_ROW(1) WIDE_ROW(2) WIDE_ROW(3) WIDE_ROW(4) WIDE_ROW(5) WIDE_ROW(6) WIDE_ROW(7)
    }
    float res[8][2];
    WIDE_RES(0)
    WIDE_RES(1)
    WIDE_RES(2) WIDE_RES(3) WIDE_RES(4) WIDE_RES(5) WIDE_RES(6)
        WIDE_RES(7) for (int r = 0; r < mr; r++) for (int j = 0; j < nr; j++)
            out[(size_t)r * ldo + (size_t)j] = res[r][j];
}

#define A5_WIDE(tn, t, mr)                                                                         \
    AVX512 static void a5w_##tn##_##mr(const float *x, size_t ldx, size_t k, const void *w,        \
                                       size_t ldw, int nr, float *out, size_t ldo,                 \
                                       const float *bias) {                                        \
        a5_wide(x, ldx, k, w, ldw, nr, out, ldo, bias, t, mr);                                     \
    }
#define A5_WIDES(tn, t) A5_WIDE(tn, t, 5) A5_WIDE(tn, t, 6) A5_WIDE(tn, t, 7) A5_WIDE(tn, t, 8)
A5_WIDES(f32, ZP_F32)
A5_WIDES(bf16, ZP_BF16)
A5_WIDES(f16, ZP_F16)

#define A5_KERNEL(name, ...)                                                                       \
    {                                                                                              \
        name,                                                                                      \
        6,                                                                                         \
        {{a5_f32_1, a5_f32_2, a5_f32_3, a5_f32_4, a5_f32_5, a5_f32_6},                             \
         {a5_bf16_1, a5_bf16_2, a5_bf16_3, a5_bf16_4, a5_bf16_5, a5_bf16_6},                       \
         {a5_f16_1, a5_f16_2, a5_f16_3, a5_f16_4, a5_f16_5, a5_f16_6}},                            \
        {{a5w_f32_5, a5w_f32_6, a5w_f32_7, a5w_f32_8},                                             \
         {a5w_bf16_5, a5w_bf16_6, a5w_bf16_7, a5w_bf16_8},                                         \
         {a5w_f16_5, a5w_f16_6, a5w_f16_7, a5w_f16_8}},                                            \
        a5_widen,                                                                                  \
        __VA_ARGS__,                                                                               \
    }

static const cpu_gemm_kernel k_avx512 =
    A5_KERNEL("avx512", {NULL}, {a5r_f32, a5r_bf16, a5r_f16}, NULL);

/* ---- AVX-512 + avx512_bf16 (bf16 precision): vdpbf16ps, 6 rows x 4 columns (or 1 x 1) ---- */

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

/* Per lane l and step of 32 elements: acc = acc + x[2l] w[2l] + x[2l+1] w[2l+1] (the
 * instruction's own rounding), then the lanes summed by a5_sum's tree. */
/* TILE_ROW's fma(x, w, acc) */
#define B5_DOT(xv, wv, acc) _mm512_dpbf16_ps(acc, xv, wv)

AVX512BF16 INLINE void b5_tile(const uint16_t *x, size_t xs, size_t k, const uint16_t *w,
                               size_t ldw, int nr, float *out, size_t ldo, const float *bias,
                               int mr) {
    const uint16_t *p0 = wcol(w, 0, nr, ldw, ZP_BF16), *p1 = wcol(w, 1, nr, ldw, ZP_BF16),
                   *p2 = wcol(w, 2, nr, ldw, ZP_BF16), *p3 = wcol(w, 3, nr, ldw, ZP_BF16);
    TILE_ACC(__m512, _mm512_setzero_ps());
    __m512bh w0, w1, w2, w3, xv;
    for (size_t i = 0; i < k; i += 32) { /* the weights' last step masked; x is zero-padded */
        __mmask32 m = k - i >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (k - i)) - 1);
        w0 = (__m512bh)_mm512_maskz_loadu_epi16(m, p0 + i);
        w1 = (__m512bh)_mm512_maskz_loadu_epi16(m, p1 + i);
        w2 = (__m512bh)_mm512_maskz_loadu_epi16(m, p2 + i);
        w3 = (__m512bh)_mm512_maskz_loadu_epi16(m, p3 + i);
        for (int j = 0; j < GEMM_NR; j++) /* the next tile's rows (a prefetch never faults) */
            _mm_prefetch((const char *)(w + (size_t)(GEMM_NR + j) * ldw + i), _MM_HINT_T0);
        TILE_ROW(B5_DOT, 0, (__m512bh)_mm512_loadu_si512(x + i))
        TILE_ROW(B5_DOT, 1, (__m512bh)_mm512_loadu_si512(x + xs + i))
        TILE_ROW(B5_DOT, 2, (__m512bh)_mm512_loadu_si512(x + 2 * xs + i))
        TILE_ROW(B5_DOT, 3, (__m512bh)_mm512_loadu_si512(x + 3 * xs + i))
        TILE_ROW(B5_DOT, 4, (__m512bh)_mm512_loadu_si512(x + 4 * xs + i))
        TILE_ROW(B5_DOT, 5, (__m512bh)_mm512_loadu_si512(x + 5 * xs + i))
    }
    float res[GEMM_MR_MAX][GEMM_NR];
    TILE_RES(a5_sum, 0)
    TILE_RES(a5_sum, 1)
    TILE_RES(a5_sum, 2)
    TILE_RES(a5_sum, 3)
    TILE_RES(a5_sum, 4)
    TILE_RES(a5_sum, 5)
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++)
            out[(size_t)r * ldo + (size_t)j] = res[r][j];
}

/* The one-column dot tile (one row; xs, nr, ldw and ldo unused): the same chain as an element
 * of b5_tile, in steps of two vectors without masks or prefetches: a single row is one
 * sequential weight stream, which the hardware prefetcher follows; the per-step prefetch and
 * mask cost 10-13% of a 1 x 128 decode step (docs/BENCHMARKS.md, issue 17). */
AVX512BF16 static void b5_row(const uint16_t *x, size_t xs, size_t k, const uint16_t *w, size_t ldw,
                              int nr, float *out, size_t ldo, const float *bias) {
    (void)xs, (void)nr, (void)ldo, (void)ldw;
    __m512 c = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= k; i += 64) {
        c = _mm512_dpbf16_ps(c, (__m512bh)_mm512_loadu_si512(x + i),
                             (__m512bh)_mm512_loadu_si512(w + i));
        c = _mm512_dpbf16_ps(c, (__m512bh)_mm512_loadu_si512(x + i + 32),
                             (__m512bh)_mm512_loadu_si512(w + i + 32));
    }
    for (; i < k; i += 32) {
        __mmask32 m = k - i >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (k - i)) - 1);
        c = _mm512_dpbf16_ps(c, (__m512bh)_mm512_loadu_si512(x + i),
                             (__m512bh)_mm512_maskz_loadu_epi16(m, w + i));
    }
    out[0] = a5_sum(c) + bias[0];
}

#define B5_TILE(mr)                                                                                \
    AVX512BF16 static void b5_##mr(const uint16_t *x, size_t xs, size_t k, const uint16_t *w,      \
                                   size_t ldw, int nr, float *out, size_t ldo,                     \
                                   const float *bias) {                                            \
        b5_tile(x, xs, k, w, ldw, nr, out, ldo, bias, mr);                                         \
    }
B5_TILE(1)
B5_TILE(2)
B5_TILE(3)
B5_TILE(4)
B5_TILE(5)
B5_TILE(6)

static const cpu_gemm_kernel k_avx512_bf16 = A5_KERNEL(
    "avx512+bf16", {b5_1, b5_2, b5_3, b5_4, b5_5, b5_6}, {a5r_f32, a5r_bf16, a5r_f16}, b5_row);

static bool has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
}

static bool has_avx512_bf16(void) {
    return has_avx512() && __builtin_cpu_supports("avx512bf16");
}

static bool has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#endif

int cpu_gemm_pick(int isa, bool bf16, const cpu_gemm_kernel **out) {
    *out = &k_generic;
#if defined(__x86_64__)
    if (isa == CPU_ISA_AVX512 || (isa == CPU_ISA_AUTO && has_avx512())) {
        if (!has_avx512())
            return err_set(ZP_EUNSUP,
                           "cpu backend: this CPU lacks AVX-512 (avx512f, avx512bw, avx512vl)");
        *out = bf16 && has_avx512_bf16() ? &k_avx512_bf16 : &k_avx512;
    } else if (isa == CPU_ISA_AVX2 || (isa == CPU_ISA_AUTO && has_avx2())) {
        if (!has_avx2()) return err_set(ZP_EUNSUP, "cpu backend: this CPU lacks AVX2 and FMA");
        *out = &k_avx2;
    }
#else
    (void)bf16;
    if (isa == CPU_ISA_AVX512 || isa == CPU_ISA_AVX2)
        return err_set(ZP_EUNSUP, "cpu backend: the AVX kernels exist on x86-64 only");
#endif
    return 0;
}

const char *cpu_gemm_name(const cpu_gemm_kernel *g) {
    return g->name;
}

void cpu_gemm_widen(const cpu_gemm_kernel *g, float *dst, const void *src, zp_dtype t, size_t n) {
    g->widen(dst, src, t, n);
}

size_t cpu_gemm_scratch_floats(int max_k) {
    size_t one = (size_t)GEMM_NR * (size_t)max_k;
    return one > GEMM_PACK ? one : GEMM_PACK;
}

size_t cpu_gemm_stage_floats(int rows, int max_k, int max_segs) {
    /* segs segments of ceil(max_k / segs) each padded to GEMM_XS take at most max_k + segs *
     * GEMM_XS */
    return (size_t)rows *
           (((size_t)max_k + GEMM_XS - 1) / GEMM_XS * GEMM_XS + (size_t)GEMM_XS * (size_t)max_segs);
}

size_t cpu_gemm_round_floats(const cpu_gemm_kernel *g, int rows, int k) {
    size_t kk = (size_t)k, xs = (kk + GEMM_XS - 1) / GEMM_XS * GEMM_XS;
    size_t f = (size_t)rows * (g->dot[0] ? xs / 2 : kk); /* bf16 rows: two per float */
    return (f + 15) & ~(size_t)15;
}

/* f32 bits to bf16, round to nearest even, a NaN kept quiet: zp_f32_to_bf16's result, written
 * with a select instead of an early return so that the loops below can be vectorised. */
static inline uint16_t round_bf16(uint32_t u) {
    uint16_t r = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)((u >> 16) | 0x40u) : r;
}

void cpu_gemm_round(const cpu_gemm_kernel *g, void *dst, const float *x, size_t ldx, size_t r0,
                    size_t r1, int k) {
    size_t kk = (size_t)k;
    for (size_t r = r0; r < r1; r++) {
        const uint32_t *u = (const uint32_t *)(const void *)(x + r * ldx);
        if (g->dot[0]) {
            size_t xs = (kk + GEMM_XS - 1) / GEMM_XS * GEMM_XS;
            uint16_t *d = (uint16_t *)dst + r * xs;
            for (size_t i = 0; i < kk; i++)
                d[i] = round_bf16(u[i]);
            memset(d + kk, 0, (xs - kk) * sizeof *d);
        } else {
            uint32_t *d = (uint32_t *)dst + r * kk;
            for (size_t i = 0; i < kk; i++)
                d[i] = (uint32_t)round_bf16(u[i]) << 16;
        }
    }
}

/* One row, columns [c0, c1) one by one: f, or d on the rounded row when d is given. */
static void run_row(const cpu_gemm_args *a, tile_fn f, dtile_fn d, size_t c0, size_t c1) {
    size_t k = (size_t)a->k, ldw = (size_t)a->ldw, es = zp_dtype_size(a->wt);
    for (size_t col = c0; col < c1; col++) {
        float bias = a->bias ? zp_load(a->bias, a->bt, col) : 0.0f;
        const void *w = (const char *)a->w + col * ldw * es;
        if (d)
            d(a->xr, 0, k, w, ldw, 1, a->out + col, 0, &bias);
        else
            f(a->x, (size_t)a->ldx, k, w, ldw, 1, a->out + col, 0, &bias);
    }
}

/* bf16 x rows xs elements apart against bf16 weights: columns [c0, c1) in blocks of L2's size
 * read in place (one block when the rows fit one tile), each read by every row tile. */
static void run_dot(const cpu_gemm_kernel *g, const cpu_gemm_args *a, size_t c0, size_t c1) {
    size_t k = (size_t)a->k, ldw = (size_t)a->ldw, xs = (k + GEMM_XS - 1) / GEMM_XS * GEMM_XS;
    size_t nc = a->n <= g->mr ? c1 - c0 : 2 * GEMM_PACK / k / GEMM_NR * GEMM_NR;
    if (nc < GEMM_NR) nc = GEMM_NR;
    const uint16_t *xr = a->xr, *w = a->w;
    for (size_t cb = c0; cb < c1; cb += nc) {
        size_t ce = c1 - cb < nc ? c1 : cb + nc;
        for (int r = 0; r < a->n; r += g->mr) {
            int m = a->n - r < g->mr ? a->n - r : g->mr;
            dtile_fn f = g->dot[m - 1];
            float *out = a->out + (size_t)r * (size_t)a->ldo;
            for (size_t col = cb; col < ce; col += GEMM_NR) {
                int nr = ce - col < GEMM_NR ? (int)(ce - col) : GEMM_NR;
                float bias[GEMM_NR] = {0};
                if (a->bias)
                    for (int j = 0; j < nr; j++)
                        bias[j] = zp_load(a->bias, a->bt, col + (size_t)j);
                f(xr + (size_t)r * xs, xs, k, w + col * ldw, ldw, nr, out + col, (size_t)a->ldo,
                  bias);
            }
        }
    }
}

/* Columns [c0, c1) step NR, rows [0, n) in tiles of mr; w the weights of column c0 in dtype t,
 * rows ldw elements apart. */
static void run_tiles(const cpu_gemm_kernel *g, const cpu_gemm_args *a, const void *w, size_t ldw,
                      zp_dtype t, size_t c0, size_t c1) {
    size_t k = (size_t)a->k, ldx = (size_t)a->ldx, es = zp_dtype_size(t);
    for (int r = 0; r < a->n; r += g->mr) {
        int m = a->n - r < g->mr ? a->n - r : g->mr;
        tile_fn f = g->tile[t][m - 1];
        const float *x = a->x + (size_t)r * ldx;
        float *out = a->out + (size_t)r * (size_t)a->ldo;
        for (size_t col = c0; col < c1; col += GEMM_NR) {
            int nr = c1 - col < GEMM_NR ? (int)(c1 - col) : GEMM_NR;
            float bias[GEMM_NR] = {0};
            if (a->bias)
                for (int j = 0; j < nr; j++)
                    bias[j] = zp_load(a->bias, a->bt, col + (size_t)j);
            f(x, ldx, k, (const char *)w + (col - c0) * ldw * es, ldw, nr, out + col,
              (size_t)a->ldo, bias);
        }
    }
}

void cpu_gemm_cols(const cpu_gemm_kernel *g, const cpu_gemm_args *in, size_t c0, size_t c1,
                   float *scratch) {
    assert(in->ldx >= in->k && in->ldw >= in->k);
    if (in->xr && g->dot[0]) {
        if (in->n == 1 && g->dot_row)
            run_row(in, NULL, g->dot_row, c0, c1);
        else
            run_dot(g, in, c0, c1);
        return;
    }
    cpu_gemm_args rounded; /* without dot tiles: the f32 tiles on the rounded rows (k apart) */
    const cpu_gemm_args *a = in;
    if (in->xr) {
        rounded = *in;
        rounded.x = in->xr;
        rounded.ldx = in->k;
        a = &rounded;
    }
    size_t k = (size_t)a->k, ldw = (size_t)a->ldw, es = zp_dtype_size(a->wt);
    const char *w = a->w;
    /* rows enough for one tile: the weights are read in place, once */
    if (a->n == 1 && g->row[a->wt]) {
        run_row(a, g->row[a->wt], NULL, c0, c1);
        return;
    }
    /* 5 to 8 rows: the wide tiles (also where 5 or 6 rows fit one 6-row tile, whose speed for
     * them was not measured) */
    if (a->n >= 5 && a->n <= 8 && g->wide[a->wt][0]) {
        tile_fn f = g->wide[a->wt][a->n - 5];
        for (size_t col = c0; col < c1; col += 2) {
            int nr = c1 - col < 2 ? (int)(c1 - col) : 2;
            float bias[2] = {0};
            if (a->bias)
                for (int j = 0; j < nr; j++)
                    bias[j] = zp_load(a->bias, a->bt, col + (size_t)j);
            f(a->x, (size_t)a->ldx, k, w + col * ldw * es, ldw, nr, a->out + col, (size_t)a->ldo,
              bias);
        }
        return;
    }
    if (a->n <= g->mr) {
        run_tiles(g, a, w + c0 * ldw * es, ldw, a->wt, c0, c1);
        return;
    }
    /* else blocks of columns of L2's size (f32: in place; else widened once into scratch, rows
     * k apart), each read by every row tile */
    size_t nc = GEMM_PACK / k / GEMM_NR * GEMM_NR;
    if (nc < GEMM_NR) nc = GEMM_NR;
    for (size_t cb = c0; cb < c1; cb += nc) {
        size_t ce = c1 - cb < nc ? c1 : cb + nc;
        if (a->wt == ZP_F32) {
            run_tiles(g, a, w + cb * ldw * es, ldw, ZP_F32, cb, ce);
            continue;
        }
        if (ldw == k)
            g->widen(scratch, w + cb * k * es, a->wt, (ce - cb) * k);
        else
            for (size_t col = cb; col < ce; col++)
                g->widen(scratch + (col - cb) * k, w + col * ldw * es, a->wt, k);
        run_tiles(g, a, scratch, k, ZP_F32, cb, ce);
    }
}
