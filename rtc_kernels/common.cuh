/* common.cuh: what every zipage kernel shares, written here because NVRTC has no toolkit
 * headers (no cuda_bf16.h, no stdint.h).
 *
 * - bf16 is stored as `unsigned short`; bf16 -> f32 is exact (a shift), f32 -> bf16 rounds to
 *   nearest even through the hardware conversion, as PyTorch and the CPU backend's
 *   zp_f32_to_bf16 do (NaN stays NaN).
 * - Reductions over a block go through warp shuffles and one shared array; every block-level
 *   helper is called by all threads of the block.
 * - cp.async (sm_80+): 16-byte copies global -> shared that bypass registers (and L1: .cg);
 *   a thread's own cp.async.wait_group orders only its own copies, so data another thread
 *   copied needs a __syncthreads after the wait.
 * Compile-time constants come as -D options from drv/nvrtc.c (the defaults below serve only a
 * file compiled by hand); kernels are extern "C" so the host finds them by name.
 */
#ifndef ZP_COMMON_CUH
#define ZP_COMMON_CUH

#ifndef ZP_HEAD_DIM
#define ZP_HEAD_DIM 128
#endif
#ifndef ZP_BLOCK_SIZE
#define ZP_BLOCK_SIZE 16
#endif
#ifndef ZP_GQA
#define ZP_GQA 4
#endif

typedef unsigned short bf16;

__device__ __forceinline__ float bf2f(bf16 u) { return __uint_as_float((unsigned)u << 16); }

__device__ __forceinline__ bf16 f2bf(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
    v = warp_sum(v);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (!lane) part[w] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.f;
    return warp_sum(v);
}

/* Programmatic dependent launch (sm_90+; drv/cuda_be.c's launch_smem sets the launch
 * attribute): waits until the grid before this one in the stream has completed and its writes
 * are visible, then lets the grid after this one launch, whose blocks wait in their own call.
 * The first statement of every kernel, in every block, before any early return: a grid that
 * skipped the wait could complete before its predecessor, and its successor would then wait on
 * nothing. Launched without the attribute, both instructions return at once. */
static __device__ __forceinline__ void zp_grid_dep() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* 16-byte async copy global -> shared; src_bytes 0 zero-fills without reading global. */
static __device__ __forceinline__ void zp_cp16(void *smem, const void *gmem, int src_bytes) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes)
                 : "memory");
}
static __device__ __forceinline__ void zp_cp_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
/* Waits until at most N of this thread's commit groups are still in flight. */
template <int N> static __device__ __forceinline__ void zp_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* ---- tensor cores (sm_80+): prefill.cu and attention.cu's zp_attn_decode_mma ---- */

/* 2^x; ex2.approx(-inf) = +0 exactly. */
static __device__ __forceinline__ float zp_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* {lo, hi} rounded to bf16 (nearest even) in one register, lo in the low half. */
static __device__ __forceinline__ unsigned zp_pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* d += a (16x16, row) * b (16x8, col): bf16 operands, fp32 accumulators. */
static __device__ __forceinline__ void zp_mma_bf16(float *d, const unsigned *a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 bf16 matrices from shared memory; lanes 8i..8i+7 give the row addresses of
 * matrix i; register i gets matrix i (.trans: transposed). */
static __device__ __forceinline__ void zp_ldm4(unsigned *r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
static __device__ __forceinline__ void zp_ldm4t(unsigned *r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* Byte offset in a shared K or V tile of rows of ZP_HEAD_DIM bf16 of 16-byte chunk c of key
 * row r, swizzled: chunk c is stored at c ^ (r & 7), so the 8 rows an ldmatrix phase reads hit
 * 8 different bank groups. */
static __device__ __forceinline__ unsigned zp_swz_off(int r, int c) {
    return (unsigned)(r * ZP_HEAD_DIM + ((c ^ (r & 7)) << 3)) * 2u;
}

/* The shared layouts a K/V sub-tile of KEYS rows can take (zp_kv_load's L::off, bytes):
 * zp_lay_rows: whole rows of ZP_HEAD_DIM bf16, swizzled by zp_swz_off (ldmatrix readers);
 * zp_lay_sw128: Hopper's 128-byte-swizzle canonical layout (prefill_wg.cu's wgmma operands):
 *   the head dim cut in 64-element (128-byte) column blocks, block b a [KEYS][128 B] array at
 *   b * KEYS * 128, 16-byte chunk c of row r at (c ^ (r & 7)) within its row; with the tile
 *   1024-byte aligned this is the hardware's swizzle of address bits 4-6 by bits 7-9. */
struct zp_lay_rows {
    template <int KEYS> static __device__ __forceinline__ unsigned off(int r, int c) {
        return zp_swz_off(r, c);
    }
};
struct zp_lay_sw128 {
    template <int KEYS> static __device__ __forceinline__ unsigned off(int r, int c) {
        return (unsigned)((c >> 3) * KEYS * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
    }
};

/* Paged K/V sub-tiles for the tensor-core attention kernels (attention.cu's zp_attn_decode_mma,
 * prefill.cu, prefill_wg.cu): NT threads copy KEYS key rows of ZP_HEAD_DIM bf16 in 16-byte
 * chunks, thread tid taking copies tid, tid + NT, ... (LPT = KEYS * ZP_HEAD_DIM / 8 / NT of
 * them, whole).
 * zp_kv_blocks reads this thread's physical blocks of the sub-tile at key p0 from the sequence's
 * block table bt (0 for keys >= end); zp_kv_load issues its cp.async copies of K and V of kv
 * head g (of hkv) into the tiles ks / vs in layout L, zero-filling keys >= end (src-size 0), so
 * stale shared memory never meets a zero probability. Separate, so the block-table reads can
 * run a sub-tile ahead of the copies. */
template <int KEYS, int NT> struct zp_kv_tile {
    static constexpr int CH = ZP_HEAD_DIM / 8, LPT = KEYS * CH / NT;
    static_assert(LPT * NT == KEYS * CH, "whole copies per thread");
};

template <int KEYS, int NT>
static __device__ __forceinline__ void zp_kv_blocks(int *blk, const int *__restrict__ bt, int p0,
                                                    int end, int tid) {
    typedef zp_kv_tile<KEYS, NT> T;
#pragma unroll
    for (int i = 0; i < T::LPT; i++) {
        const int p = p0 + (tid + i * NT) / T::CH;
        blk[i] = p < end ? bt[p / ZP_BLOCK_SIZE] : 0;
    }
}

template <int KEYS, int NT, class L = zp_lay_rows>
static __device__ __forceinline__ void zp_kv_load(bf16 *ks, bf16 *vs, const bf16 *__restrict__ kc,
                                                  const bf16 *__restrict__ vc, const int *blk,
                                                  int hkv, int g, int p0, int end, int tid) {
    typedef zp_kv_tile<KEYS, NT> T;
#pragma unroll
    for (int i = 0; i < T::LPT; i++) {
        const int v = tid + i * NT, row = v / T::CH, c = v % T::CH, p = p0 + row;
        size_t off = 0;
        int bytes = 0;
        if (p < end) {
            off = (((size_t)blk[i] * (size_t)hkv + (size_t)g) * ZP_BLOCK_SIZE +
                   (size_t)(p % ZP_BLOCK_SIZE)) * ZP_HEAD_DIM + (size_t)(c * 8);
            bytes = 16;
        }
        const unsigned o = L::template off<KEYS>(row, c) / 2u;
        zp_cp16(ks + o, kc + off, bytes);
        zp_cp16(vs + o, vc + off, bytes);
    }
}

#endif
