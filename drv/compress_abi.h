/* compress_abi: the host side of rtc_kernels/compress_score.cu (zp_qcache_store, zp_cmp_score):
 * their block sizes, the dynamic shared memory zp_cmp_score needs, and the job flag values the
 * kernel reads. docs/GPU.md "Compression kernels" gives the argument lists and grids.
 *
 * Invariants: the numbers equal the kernel's ZP_QC_THREADS, ZP_CS_THREADS and
 * 4 * ZP_CS_SMEM_FLOATS; zp_cmp_score traps when launched with less dynamic shared memory than
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

/* Dynamic shared memory of zp_cmp_score at head dim d: 128 query rows and a 64-key tile of
 * 9d/8 + 32 floats each (classed, padded rows), the 128 x 65 score tile and 2 x 128 softmax
 * statistics. 169,472 bytes at d 128, 114,176 at d 64; above 48 KiB, so the function needs
 * CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES set to it (once per module). */
static inline size_t zp_cs_smem_bytes(int head_dim) {
    return 4 * ((size_t)(128 + 64) * (size_t)(head_dim * 9 / 8 + 32) + 128 * 65 + 2 * 128);
}

_Static_assert(BE_CJ_GLOBAL == 1 && BE_CJ_POOL == 2, "compress_score.cu's ZP_CJ_* values");

#endif
