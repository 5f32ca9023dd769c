/* attn_abi.h: what the host must know to launch rtc_kernels/attention.cu's zp_attn_decode_mma
 * (the tensor-core decode attention: its ring depth and dynamic shared memory) and zp_attn_merge
 * (its block shape). The kernel
 * writes the same numbers (ZP_DM_STAGES, ZP_DM_SK); tests/test_cuda_attention.c launches it
 * with exactly these bytes, so a mismatch that matters shows there as wrong output. Header
 * only, no state. */
#ifndef ZP_ATTN_ABI_H
#define ZP_ATTN_ABI_H

#include <stddef.h>

/* Keys per ring stage: 4 warps x 16 keys (one mma k-step each). */
#define ZP_DM_STAGE_KEYS 64

/* Stages of the K/V ring at a head dim (64 or 128): 96 KiB at D 128, 64 KiB at D 64. */
static inline int attn_mma_stages(int head_dim) {
    return head_dim == 128 ? 3 : 4;
}

/* Dynamic shared memory of zp_attn_decode_mma: the ring of K and V rows of head_dim bf16.
 * Above 48 KiB, so the function needs CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES. */
static inline size_t attn_mma_smem_bytes(int head_dim, int stages) {
    return (size_t)stages * 2 * ZP_DM_STAGE_KEYS * (size_t)head_dim * 2;
}

/* zp_attn_merge: a warp per (row, query head), ZP_MERGE_HEADS heads per block; grid
 * (attn_merge_blocks(hq), rows), block 32 * ZP_MERGE_HEADS. */
#define ZP_MERGE_HEADS 4

static inline unsigned attn_merge_blocks(int hq) {
    return (unsigned)((hq + ZP_MERGE_HEADS - 1) / ZP_MERGE_HEADS);
}

#endif
