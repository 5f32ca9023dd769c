/* compress_abi: the host side of rtc_kernels/compress_score.cu (zp_qcache_store, zp_cmp_score):
 * their block sizes, the dynamic shared memory zp_cmp_score needs, and the job flag values the
 * kernel reads. docs/GPU.md "Compression kernels" gives the argument lists and grids.
 *
 * Invariants: the numbers equal the kernel's ZP_QC_THREADS, ZP_CS_THREADS, ZP_CS_NQ and its
 * shared-memory sum; zp_cmp_score traps when launched with less dynamic shared memory than
 * it uses, so a formula that drifts from the kernel's fails at the first launch instead of
 * overrunning shared memory. BE_CJ_* have the values the kernel tests (asserted below).
 * Memory and threading: constants only.
 */
#ifndef ZP_COMPRESS_ABI_H
#define ZP_COMPRESS_ABI_H

#include "drv/backend.h"

#include <stddef.h>

/* Threads per CTA of zp_qcache_store (one CTA per token row). */
#define ZP_QC_THREADS 128
/* Threads per CTA of zp_cmp_score (one CTA per layer, job and kv head). */
#define ZP_CS_THREADS 256

/* Most query rows (window query x head) zp_cmp_score holds at once (its ZP_CS_NQ). */
#define ZP_CS_MAX_ROWS 128

/* Dynamic shared memory of zp_cmp_score at head dim d for a query cache of qcl entries and GQA
 * group gqa: nq = min(ZP_CS_MAX_ROWS, qcl * gqa rounded up to 8) query rows and a 64-key tile
 * of 9d/8 + 32 floats each (classed, padded rows), the nq x 65 score tile and 2 x nq softmax
 * statistics. 169,472 bytes at d 128 and nq 128 (the most, zp_cs_smem_bytes(d,
 * ZP_CS_MAX_ROWS, 1): the function's CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, set once
 * per module), 76,160 at d 128, qcl 16, gqa 2. */
static inline size_t zp_cs_smem_bytes(int head_dim, int qcl, int gqa) {
    size_t nq = ((size_t)qcl * (size_t)gqa + 7) / 8 * 8;
    if (nq > ZP_CS_MAX_ROWS) nq = ZP_CS_MAX_ROWS;
    return 4 * ((nq + 64) * (size_t)(head_dim * 9 / 8 + 32) + nq * 65 + 2 * nq);
}

_Static_assert(BE_CJ_GLOBAL == 1 && BE_CJ_POOL == 2, "compress_score.cu's ZP_CJ_* values");

#endif
