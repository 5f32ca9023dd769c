/* gemm_abi.h: what the host must know to launch rtc_kernels/gemm_rows.cu (the tensor-core GEMM
 * of a step's generated-token rows): the tile, the shared memory per variant, which layer
 * shapes it takes and how a shape's K is split. The kernel writes the same tile numbers
 * (ZP_GR_*) and checks them against these with static_asserts; tests/test_cuda_gemm_rows.c
 * launches it with exactly these bytes, so a mismatch that matters shows there. Header only, no
 * state.
 *
 * Batch invariance: a row's result depends on the shape and the split count only, never on
 * the other rows, the row tile (64 or 128) or the grid; the split count is a function of
 * (n, k, multiprocessors) alone, so a row gives the same bits alone and in any batch.
 */
#ifndef ZP_GEMM_ABI_H
#define ZP_GEMM_ABI_H

#include <stddef.h>

enum {
    GEMM_ROWS_BN = 128,   /* weight rows (outputs) per CTA */
    GEMM_ROWS_BK = 64,    /* K per pipeline stage */
    GEMM_ROWS_THREADS = 256,
    GEMM_ROWS_MAX_SPLITS = 8,
    GEMM_ROWS_MIN_KSPLIT = 256, /* the least K a split runs */
};

/* The kernel for at most `rows` rows per row tile: 64 (zp_gemm_rows64) up to 64 rows, else 128
 * (zp_gemm_rows128). */
static inline int gemm_rows_bm(int rows) {
    return rows <= 64 ? 64 : 128;
}

/* Pipeline stages of the variant with row tile bm. */
static inline int gemm_rows_stages(int bm) {
    return bm == 64 ? 4 : 3;
}

/* Dynamic shared memory of the variant with row tile bm: the stages of weight and row tiles
 * (the epilogue's f32 tile reuses them). 96 KiB for both, above the 48 KiB a launch may take
 * without CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES. */
static inline size_t gemm_rows_smem(int bm) {
    return (size_t)gemm_rows_stages(bm) * (size_t)(GEMM_ROWS_BN + bm) * GEMM_ROWS_BK * 2;
}

/* 1 when the kernel takes a weight of n outputs and k inputs (whole tiles), else 0: the layer
 * then runs every row through cuBLASLt. */
static inline int gemm_rows_fits(int n, int k) {
    return n > 0 && k > 0 && n % GEMM_ROWS_BN == 0 && k % GEMM_ROWS_BK == 0;
}

/* K splits for a weight of n x k on a device of sms multiprocessors: doubled from 1 while the
 * output tiles times the splits stay below the multiprocessors, each split keeps at least
 * GEMM_ROWS_MIN_KSPLIT of K in whole stages, and at most GEMM_ROWS_MAX_SPLITS. */
static inline int gemm_rows_splits(int n, int k, int sms) {
    int tiles = n / GEMM_ROWS_BN, s = 1;
    while (s < GEMM_ROWS_MAX_SPLITS && tiles * s < sms && k % (2 * s * GEMM_ROWS_BK) == 0 &&
           k / (2 * s) >= GEMM_ROWS_MIN_KSPLIT)
        s *= 2;
    return s;
}

#endif
