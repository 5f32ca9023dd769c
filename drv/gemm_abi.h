/* gemm_abi.h: what the host must know to launch rtc_kernels/gemm_rows.cu (the wgmma GEMM of a
 * step's generated-token rows and of the logits' rows): its variants, their shared memory,
 * which weight shapes it takes and how a shape's K is split. The kernel states the same tile
 * numbers; tests/test_cuda_gemm_rows.c launches it with exactly these, so a mismatch that
 * matters shows there. Header only, no state.
 *
 * Batch invariance: a row's result depends on the shape and the split count only, never on
 * the other rows, the variant or the grid; the split count is a function of (n, k,
 * multiprocessors) alone, so a row gives the same bits alone and in any batch.
 */
#ifndef ZP_GEMM_ABI_H
#define ZP_GEMM_ABI_H

#include <stddef.h>

enum {
    GEMM_ROWS_BK = 64,          /* K per pipeline stage */
    GEMM_ROWS_MAX_SPLITS = 8,   /* a cluster of at most 8 CTAs (the portable size) */
    GEMM_ROWS_MIN_KSPLIT = 256, /* the least K a split runs */
    GEMM_ROWS_VARIANTS = 3,
};

/* Variant v (0, 1, 2: zp_gemm_rows1, 2, 4): warpgroups, 64-row token tiles, ring stages. */
static inline int gemm_rows_wg(int v) {
    return v == 2 ? 2 : 1;
}
static inline int gemm_rows_tiles(int v) {
    return 1 << v;
}
static inline int gemm_rows_stages(int v) {
    return v == 0 ? 6 : 4;
}
/* Weight rows (outputs) per CTA, token rows per CTA, threads per CTA. */
static inline int gemm_rows_bn(int v) {
    return 64 * gemm_rows_wg(v);
}
static inline int gemm_rows_tm(int v) {
    return 64 * gemm_rows_tiles(v);
}
static inline int gemm_rows_threads(int v) {
    return 128 * gemm_rows_wg(v);
}

/* The variant for a launch of up to `rows` rows: one token tile up to 64, two up to 128, else
 * four with two warpgroups (launches of more rows take several row groups). */
static inline int gemm_rows_variant(int rows) {
    return rows <= 64 ? 0 : rows <= 128 ? 1 : 2;
}

/* Dynamic shared memory of variant v: the ring of stages (weight rows, then token rows, 64 bf16
 * of K each) plus 1 KiB to align it to the swizzle's 1,024 bytes (the f32 epilogue tile reuses
 * the ring). 97 KiB for the first two (two CTAs per SM), 193 KiB for the third. */
static inline size_t gemm_rows_smem(int v) {
    return (size_t)gemm_rows_stages(v) * (size_t)(gemm_rows_bn(v) + gemm_rows_tm(v)) *
               GEMM_ROWS_BK * 2 +
           1024;
}

/* K splits for a weight of n x k on a device of sms multiprocessors: the largest power of two up
 * to GEMM_ROWS_MAX_SPLITS with the 64-row output tiles times the splits within two CTAs per
 * multiprocessor, every split whole stages of at least GEMM_ROWS_MIN_KSPLIT; 1 when none is. */
static inline int gemm_rows_splits(int n, int k, int sms) {
    int tiles = n / 64, s = 1;
    while (2 * s <= GEMM_ROWS_MAX_SPLITS && tiles * 2 * s <= 2 * sms &&
           k % (2 * s * GEMM_ROWS_BK) == 0 && k / (2 * s) >= GEMM_ROWS_MIN_KSPLIT)
        s *= 2;
    return s;
}

/* 1 when the kernel takes a weight of n outputs and k inputs (whole 128-row tiles for every
 * variant, whole stages), else 0: the layer then runs every row through cuBLASLt. */
static inline int gemm_rows_fits(int n, int k) {
    return n > 0 && k > 0 && n % 128 == 0 && k % GEMM_ROWS_BK == 0;
}

#endif
