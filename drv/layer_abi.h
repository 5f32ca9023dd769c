/* layer_abi.h: what the host must know to launch rtc_kernels/layer.cu's row kernels
 * (zp_add_rmsnorm, zp_silu_mul, zp_qkv_rope_store): their block sizes, the elements one thread
 * moves per access and the widths they accept. The kernel file writes the same numbers (ZP_NORM_*,
 * ZP_SILU_*, ZP_ROPE_HEADS);
 * drv/cuda_be.c and tests/test_cuda_layer.c launch with these, and cuda_be checks a model's
 * widths against layer_widths_ok() at start-up, so an unsupported width is an error there,
 * never a wrong result. Header only, no state. */
#ifndef ZP_LAYER_ABI_H
#define ZP_LAYER_ABI_H

/* zp_add_rmsnorm: one block of ZP_NORM_THREADS per row; each thread keeps up to ZP_NORM_CHUNKS
 * float4 of its row in registers between the sum of squares and the scaling. */
#define ZP_NORM_THREADS 256
#define ZP_NORM_CHUNKS  16
#define ZP_NORM_MAX_DIM (ZP_NORM_THREADS * ZP_NORM_CHUNKS * 4)

/* zp_silu_mul: grid (rows, layer_silu_blocks(inter)), block ZP_SILU_THREADS; 8 bf16 (16 bytes)
 * per thread. */
#define ZP_SILU_THREADS 256
#define ZP_SILU_VEC     8

static inline unsigned layer_silu_blocks(int inter) {
    return (unsigned)((inter + ZP_SILU_THREADS * ZP_SILU_VEC - 1) /
                      (ZP_SILU_THREADS * ZP_SILU_VEC));
}

/* zp_qkv_rope_store: a warp per head, ZP_ROPE_HEADS heads per block, grid (rows,
 * layer_rope_blocks(heads)) over the q and k heads. */
#define ZP_ROPE_HEADS 4

static inline unsigned layer_rope_blocks(int heads) {
    return (unsigned)((heads + ZP_ROPE_HEADS - 1) / ZP_ROPE_HEADS);
}

/* The norm reads rows as float4 / 4 x bf16 and SwiGLU as 8 x bf16: hidden a multiple of 4 up
 * to ZP_NORM_MAX_DIM, intermediate a multiple of 8. */
static inline int layer_widths_ok(int hidden, int inter) {
    return hidden > 0 && hidden % 4 == 0 && hidden <= ZP_NORM_MAX_DIM && inter > 0 &&
           inter % 8 == 0;
}

#endif
