/* gemm_rows.cu: y[r][:] = x[r][:] . W^T (+ bias) for the generated-token rows of a step (decode
 * rows) and for the logits' rows, on Hopper's warpgroup MMA: bf16 in, f32 accumulation, bf16
 * out (the layers) or f32 out (the logits, *_f32). The host (drv/cuda_be.c) sends prompt rows
 * through cuBLASLt; these rows are few (one per running request) and each step reads the whole
 * weight once, so the kernel is built to have the weight streaming before its inputs exist.
 *
 * WHY NOT cuBLASLt FOR THESE ROWS. At 1-128 rows a layer's GEMM is a read of its weight, and
 * cuBLASLt's kernels start reading it only once the kernel before them has completed: each
 * GEMM pays the memory latency and the ramp of a fresh grid (docs/BENCHMARKS.md: the QKV, o and
 * down GEMMs of a Qwen3-8B step at 64 rows stream 2.1-2.4 of the H100's 3.0 TB/s). Under
 * programmatic dependent launch (conf cuda_pdl) this kernel launches while the kernel before it
 * runs, and every CTA issues the copies of its first weight stages before griddepcontrol.wait:
 * the weight does not depend on the previous kernel, only x, the row list and the count do.
 *
 * SHAPE. y^T = W . x^T as wgmma m64n64k16: 64 weight rows are the wgmma's M (operand A), 64
 * token rows its N (operand B), both K-major in shared memory in the 128-byte-swizzle layout
 * (common.cuh's zp_lay_sw128: a 64-wide K stage is one 128-byte row per matrix row). A CTA of
 * WG warpgroups takes BN = 64 WG weight rows (warpgroup g: rows 64 g .. 64 g + 63) and T tiles
 * of 64 token rows, over its split of K, through a cp.async ring of STAGES stages of
 * [BN weight rows][64] and [64 T token rows][64] bf16. Variants (drv/gemm_abi.h picks by the
 * launch's rows): zp_gemm_rows1 (WG 1, T 1), zp_gemm_rows2 (1, 2), zp_gemm_rows4 (2, 4).
 * Grid: (splits, n / BN, row groups of 64 T); the splits of one output tile form a thread block
 * cluster of gridDim.x CTAs.
 *
 * ROWS. Compact indices i in [0, cnt), cnt = min(*count, cap): index i is step row rows[i], or
 * i when rows is null. Row groups past cnt exit; a tile's rows past cnt are zero-filled
 * (src-size 0) and not written.
 *
 * SPLITS. Each CTA of a cluster (rank s = its split, K range [s k / S, (s + 1) k / S)) leaves
 * its f32 tile in its own shared memory; after a cluster barrier, CTA s sums the chunks
 * s, s + S, ... of every tile over the ranks 0, 1, ..., S - 1 in that order through
 * distributed shared memory (ld.shared::cluster), adds the bias, rounds and writes y; a second
 * barrier keeps every tile alive until the others have read it. No global partials, no atomics.
 *
 * BATCH INVARIANCE. Every output is the same instruction sequence whatever the batch: its 64-row
 * token tile's m64n64k16 wgmmas over its split's K in increasing k (16 at a time), the splits
 * summed in rank order, then + bias. Nothing depends on the other rows, on T, WG or the grid;
 * the split count is a function of (n, k, multiprocessors) alone (drv/gemm_abi.h), so a row
 * gives the same bits alone and in any batch, through any variant.
 *
 * LAUNCH RULES. Block 128 WG threads; dynamic shared memory gemm_rows_smem(variant) (1 KiB of
 * alignment slack included), set as the function's maximum by the host; cluster dimension
 * (gridDim.x, 1, 1) (CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION), gridDim.x a power of two <= 8
 * dividing k / 64; n a multiple of BN. sm_90 only (built for sm_90a; any other build traps).
 */
#include "wgmma.cuh"

#define ZP_GR_BK 64    /* K per stage: one 128-byte swizzle row per matrix row */
#define ZP_GR_TILE 8192 /* a 64-row operand tile of one stage */
#define ZP_GR_PAD 4    /* f32 padding of the epilogue tile's rows: conflict-free stores */

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

static __device__ __forceinline__ void zp_cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n"
                 "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

/* Eight f32 at shared address a of cluster CTA rank r. */
static __device__ __forceinline__ void zp_dsmem_ld8(float *o, unsigned a, unsigned r) {
    unsigned ra;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(a), "r"(r));
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(o[0]), "=f"(o[1]), "=f"(o[2]), "=f"(o[3])
                 : "r"(ra)
                 : "memory");
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(o[4]), "=f"(o[5]), "=f"(o[6]), "=f"(o[7])
                 : "r"(ra + 16u)
                 : "memory");
}

template <int WG, int T, int STAGES, bool F32>
static __device__ __forceinline__ void zp_gemm_rows(void *__restrict__ y,
                                                    const bf16 *__restrict__ x,
                                                    const bf16 *__restrict__ w,
                                                    const bf16 *__restrict__ bias,
                                                    const int *__restrict__ rows,
                                                    const int *__restrict__ count, int cap,
                                                    int n, int k) {
    constexpr int BN = 64 * WG, NT = 128 * WG, TM = 64 * T;
    constexpr int WST = BN * 128, ST = WST + TM * 128; /* bytes of a stage: W rows, then x rows */
    constexpr int WL = BN * 8 / NT, XL = TM * 8 / NT;  /* 16-byte copies per thread and stage */
    constexpr int LD = BN + ZP_GR_PAD;                 /* f32 epilogue tile [TM][LD] */
    static_assert(WL * NT == BN * 8 && XL * NT == TM * 8, "whole copies per thread");
    static_assert(TM * LD * 4 <= STAGES * ST, "the epilogue tile fits the ring");
    extern __shared__ __align__(16) unsigned char zp_gr_dyn[];
    const unsigned dyn = (unsigned)__cvta_generic_to_shared(zp_gr_dyn);
    unsigned char *sm = zp_gr_dyn + ((1024u - (dyn & 1023u)) & 1023u);
    const unsigned sbase = (unsigned)__cvta_generic_to_shared(sm);

    const int tid = threadIdx.x, S = (int)gridDim.x, split = (int)blockIdx.x;
    const int n0 = (int)blockIdx.y * BN, m0 = (int)blockIdx.z * TM;
    const int kper = k / S, nk = kper / ZP_GR_BK;
    const bf16 *wsrc = w + (size_t)(n0 + tid / 8) * (size_t)k + (size_t)split * kper + (tid % 8) * 8;
    const size_t wstep = (size_t)(NT / 8) * (size_t)k; /* copy i of a thread: NT / 8 rows on */

    auto load_w = [&](int slot, int kt) {
        unsigned char *st = sm + slot * ST;
#pragma unroll
        for (int i = 0; i < WL; i++) {
            const int v = tid + i * NT;
            zp_cp16(st + zp_lay_sw128::off<64>(v / 8, v % 8), wsrc + i * wstep + kt * ZP_GR_BK,
                    16);
        }
    };
    /* the weight's first stages before the wait: nothing the previous kernel writes */
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++)
        if (s < nk) load_w(s, s);
    zp_cp_commit();
    zp_grid_dep();

    int cnt = *count;
    if (cnt > cap) cnt = cap;
    if (m0 >= cnt) { /* the whole cluster shares m0: none of it reaches a barrier */
        zp_cp_wait<0>();
        return;
    }
    const int mrows = cnt - m0 < TM ? cnt - m0 : TM, live = (mrows + 63) / 64;
    const bf16 *xsrc[XL];
    int xb[XL];
#pragma unroll
    for (int i = 0; i < XL; i++) {
        const int r = (tid + i * NT) / 8;
        xb[i] = r < mrows ? 16 : 0;
        const int row = r < mrows ? (rows ? rows[m0 + r] : m0 + r) : 0;
        xsrc[i] = x + (size_t)row * (size_t)k + (size_t)split * kper + ((tid + i * NT) % 8) * 8;
    }
    auto load_x = [&](int slot, int kt) {
        unsigned char *st = sm + slot * ST + WST;
#pragma unroll
        for (int i = 0; i < XL; i++) {
            const int v = tid + i * NT;
            zp_cp16(st + zp_lay_sw128::off<64>(v / 8, v % 8), xsrc[i] + kt * ZP_GR_BK, xb[i]);
        }
    };
    /* group 0 holds the weight's first stages; groups 1 .. STAGES - 1 the rows' */
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nk) load_x(s, s);
        zp_cp_commit();
    }

    float acc[T][32];
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
        for (int e = 0; e < 32; e++) acc[t][e] = 0.0f;
    const int wg = tid / 128;
    for (int kt = 0; kt < nk; kt++) {
        /* stage kt landed for every thread and is visible to the async proxy; every wgmma of
         * stage kt - 1 was waited for, so the slot the next copies overwrite is free */
        zp_cp_wait<STAGES - 2>();
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        if (kt + STAGES - 1 < nk) {
            load_w((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
            load_x((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
        }
        zp_cp_commit();
        const unsigned ws = sbase + (unsigned)((kt % STAGES) * ST), xs = ws + WST;
#pragma unroll
        for (int t = 0; t < T; t++) zp_wg_pin<32>(acc[t]);
        zp_wg_fence();
#pragma unroll
        for (int kk = 0; kk < ZP_GR_BK / 16; kk++) {
            const unsigned long long a = zp_wg_desc(ws + wg * ZP_GR_TILE + kk * 32, 0, 1024);
#pragma unroll
            for (int t = 0; t < T; t++)
                if (t < live) zp_wg_ss64(acc[t], a, zp_wg_desc(xs + t * ZP_GR_TILE + kk * 32, 0, 1024));
        }
        zp_wg_commit();
        zp_wg_wait0();
#pragma unroll
        for (int t = 0; t < T; t++) zp_wg_pin<32>(acc[t]);
    }
    zp_cp_wait<0>();
    __syncthreads(); /* every warp done with the ring: it becomes the f32 tile c[TM][LD] */

    /* accumulator e of tile t: weight row 64 wg + 16 warp + lane / 4 (+ 8 for e & 2), token
     * row 64 t + 8 (e / 4) + 2 (lane % 4) (+ 1 for e & 1) */
    float *c = (float *)sm;
    const int lane = tid & 31, wr = wg * 64 + ((tid / 32) & 3) * 16 + lane / 4;
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
        for (int e = 0; e < 32; e++) {
            const int mm = t * 64 + (e / 4) * 8 + 2 * (lane % 4) + (e & 1);
            c[mm * LD + wr + ((e & 2) ? 8 : 0)] = acc[t][e];
        }
    zp_cluster_sync(); /* every split's tile written and visible to the cluster */

    constexpr int CH = BN / 8; /* 8-output chunks per row */
    for (int v = split * NT + tid; v < mrows * CH; v += S * NT) {
        const int mm = v / CH, q = v % CH, nn = n0 + q * 8;
        const unsigned at = sbase + (unsigned)((mm * LD + q * 8) * 4);
        float o[8], p[8];
        zp_dsmem_ld8(o, at, 0);
        for (int s = 1; s < S; s++) {
            zp_dsmem_ld8(p, at, (unsigned)s);
#pragma unroll
            for (int e = 0; e < 8; e++) o[e] += p[e];
        }
        if (bias) {
            const uint4 bv = *(const uint4 *)(bias + nn);
            const unsigned bw[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                o[2 * e] += __uint_as_float(bw[e] << 16);
                o[2 * e + 1] += __uint_as_float(bw[e] & 0xffff0000u);
            }
        }
        const int row = rows ? rows[m0 + mm] : m0 + mm;
        const size_t off = (size_t)row * (size_t)n + nn;
        if (F32) {
            *(float4 *)((float *)y + off) = make_float4(o[0], o[1], o[2], o[3]);
            *(float4 *)((float *)y + off + 4) = make_float4(o[4], o[5], o[6], o[7]);
        } else {
            uint4 u;
            u.x = zp_pack_bf16x2(o[0], o[1]), u.y = zp_pack_bf16x2(o[2], o[3]);
            u.z = zp_pack_bf16x2(o[4], o[5]), u.w = zp_pack_bf16x2(o[6], o[7]);
            *(uint4 *)((bf16 *)y + off) = u;
        }
    }
    zp_cluster_sync(); /* no CTA leaves while another still reads its tile */
}

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

/* (warpgroups, token tiles, stages): 96 KiB of ring for the first two (two CTAs per SM), 192
 * KiB for the third; bf16 out (the layers) and f32 out (the logits). */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ZP_GR_BODY(WG, T, STAGES, F32)                                                          \
    zp_gemm_rows<WG, T, STAGES, F32>(y, x, w, bias, rows, count, cap, n, k)
#else
#define ZP_GR_BODY(WG, T, STAGES, F32) __trap() /* the backend never launches it there */
#endif
#define ZP_GR_KERNEL(name, WG, T, STAGES, F32)                                                  \
    extern "C" __global__ void __launch_bounds__(128 * WG)                                      \
        name(void *y, const bf16 *x, const bf16 *w, const bf16 *bias, const int *rows,          \
             const int *count, int cap, int n, int k) {                                         \
        ZP_GR_BODY(WG, T, STAGES, F32);                                                         \
    }
ZP_GR_KERNEL(zp_gemm_rows1, 1, 1, 6, false)
ZP_GR_KERNEL(zp_gemm_rows2, 1, 2, 4, false)
ZP_GR_KERNEL(zp_gemm_rows4, 2, 4, 4, false)
ZP_GR_KERNEL(zp_gemm_rows1_f32, 1, 1, 6, true)
ZP_GR_KERNEL(zp_gemm_rows2_f32, 1, 2, 4, true)
ZP_GR_KERNEL(zp_gemm_rows4_f32, 2, 4, 4, true)
