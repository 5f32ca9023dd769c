/* gemm_rows.cu: y[r][:] = x[r][:] . W^T (+ bias) for the generated-token rows of a step (decode
 * rows) and for the logits' rows, on tensor cores: bf16 in, f32 accumulation, bf16 out (the
 * layers) or f32 out (the logits, *_f32). The host (drv/cuda_be.c) sends
 * the prompt rows through cuBLASLt; these rows are few (one per running request) and the weight
 * is read once per step, so the kernel is built to stream W at the copy bandwidth.
 *
 * Shape: y^T = W . x^T with mma.sync m16n8k16: the weight rows are the mma's M (16 per
 * fragment), the token rows its N (8 per tile). A CTA of 8 warps takes ZP_GR_BN = 128 weight
 * rows and a row tile of BM = 64 (warps 8 x 1 over weight rows x token rows) or 128 (4 x 2),
 * over K / splits of the inner dimension, through a cp.async ring of BK = 64 stages (chunk c of
 * row r stored at c ^ (r & 7), so each ldmatrix phase hits 8 bank groups).
 * Grid: (row tiles, splits, n / 128): the CTAs of one weight tile and split are adjacent, so
 * its bytes come from memory once and from L2 for the other row tiles.
 *
 * Rows: compact indices i in [0, cnt) with cnt = *count - r0 (at most the launch's rows);
 * index i is step row rows[r0 + i], or r0 + i when rows is null. Row tiles past cnt exit at once
 * (padded graph launches); rows of a tile past cnt are zero-filled (src-size 0) and not
 * written.
 *
 * Splits (> 1 when n / 128 tiles leave multiprocessors idle): each CTA writes its f32 tile to
 * part[split][i][n]; the CTA that finds the tile's counter at splits - 1 (after a
 * __threadfence, the release of its own partials) is the last, adds the splits in the order
 * 0, 1, ... (reading them through L2, .cg), then the bias, rounds, writes y and resets the
 * counter for the next launch. The splits' order and the row's bits never depend on which
 * CTA finishes last.
 *
 * BATCH INVARIANCE: every output is sum over its split's K in 16-wide mma steps in increasing
 * k, then the splits in order, then + bias: nothing depends on the other rows, the row tile or
 * the grid. The split count comes from the host as a function of (n, k, multiprocessors)
 * (drv/gemm_abi.h).
 */

#include "common.cuh"

#define ZP_GR_BN 128
#define ZP_GR_BK 64
#define ZP_GR_THREADS 256
#define ZP_GR_CPAD 4 /* f32 padding of the epilogue tile's rows: conflict-free stores */

/* Byte offset of 16-byte chunk c of row r in a tile of rows of ZP_GR_BK bf16, swizzled. */
static __device__ __forceinline__ unsigned zp_gr_off(int r, int c) {
    return (unsigned)(r * ZP_GR_BK + ((c ^ (r & 7)) << 3)) * 2u;
}

template <int BM, int STAGES, bool F32>
static __device__ __forceinline__ void zp_gemm_rows(
    void *__restrict__ y, const bf16 *__restrict__ x, const bf16 *__restrict__ w,
    const bf16 *__restrict__ bias, const int *__restrict__ rows, const int *__restrict__ count,
    int r0, int cap, int n, int k, int splits, float *__restrict__ part, int *__restrict__ flags) {
    constexpr int WM = BM / 64;                        /* warps over token rows */
    constexpr int WN = 8 / WM;                         /* warps over weight rows */
    constexpr int FA = ZP_GR_BN / WN / 16;             /* weight fragments per warp: 1 or 2 */
    constexpr int WL = ZP_GR_BN * 8 / ZP_GR_THREADS;   /* 16-byte copies of W per stage */
    constexpr int XL = BM * 8 / ZP_GR_THREADS;         /* of x */
    constexpr int WT = ZP_GR_BN * ZP_GR_BK * 2, ST = (ZP_GR_BN + BM) * ZP_GR_BK * 2;
    static_assert(BM * (ZP_GR_BN + ZP_GR_CPAD) * 4 <= STAGES * ST, "epilogue tile fits");
    extern __shared__ __align__(128) unsigned char zp_gr_smem[];
    unsigned char *sm = zp_gr_smem;
    const unsigned sbase = (unsigned)__cvta_generic_to_shared(sm);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wn = warp % WN, wm = warp / WN;
    const int m0 = blockIdx.x * BM, split = blockIdx.y, n0 = blockIdx.z * ZP_GR_BN;
    int cnt = *count - r0;
    if (cnt > cap) cnt = cap;
    if (m0 >= cnt) return;
    const int mrows = cnt - m0 < BM ? cnt - m0 : BM;
    const int kper = k / splits, kbeg = split * kper, nk = kper / ZP_GR_BK;

    const bf16 *wp[WL], *xp[XL];
    int xb[XL];
#pragma unroll
    for (int i = 0; i < WL; i++) {
        const int v = tid + i * ZP_GR_THREADS;
        wp[i] = w + (size_t)(n0 + v / 8) * (size_t)k + kbeg + (v % 8) * 8;
    }
#pragma unroll
    for (int i = 0; i < XL; i++) {
        const int v = tid + i * ZP_GR_THREADS, r = v / 8;
        xb[i] = r < mrows ? 16 : 0;
        const int row = r < mrows ? (rows ? rows[r0 + m0 + r] : r0 + m0 + r) : 0;
        xp[i] = x + (size_t)row * (size_t)k + kbeg + (v % 8) * 8;
    }
    /* Stage s holds W rows then x rows of k-tile kt. */
    auto load = [&](int s, int kt) {
        unsigned char *st = sm + s * ST;
#pragma unroll
        for (int i = 0; i < WL; i++) {
            const int v = tid + i * ZP_GR_THREADS;
            zp_cp16(st + zp_gr_off(v / 8, v % 8), wp[i] + kt * ZP_GR_BK, 16);
        }
#pragma unroll
        for (int i = 0; i < XL; i++) {
            const int v = tid + i * ZP_GR_THREADS;
            zp_cp16(st + WT + zp_gr_off(v / 8, v % 8), xp[i] + kt * ZP_GR_BK, xb[i]);
        }
    };

    float acc[FA][8][4];
#pragma unroll
    for (int f = 0; f < FA; f++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[f][j][e] = 0.f;
    /* row pairs of 16 this warp has any live row in */
    const int live = mrows - wm * 64;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nk) load(s, s);
        zp_cp_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        zp_cp_wait<STAGES - 2>();
        __syncthreads(); /* stage kt % STAGES landed for all; stage (kt - 1) % STAGES is free */
        if (kt + STAGES - 1 < nk) load((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
        zp_cp_commit();
        const unsigned ws = sbase + (unsigned)((kt % STAGES) * ST), xs = ws + WT;
#pragma unroll
        for (int kk = 0; kk < ZP_GR_BK / 16; kk++) {
            unsigned a[FA][4];
#pragma unroll
            for (int f = 0; f < FA; f++)
                zp_ldm4(a[f], ws + zp_gr_off(wn * 16 * FA + f * 16 + (lane & 15),
                                             kk * 2 + (lane >> 4)));
#pragma unroll
            for (int p = 0; p < 4; p++) {
                if (p * 16 >= live) break;
                unsigned b[4];
                zp_ldm4(b, xs + zp_gr_off(wm * 64 + p * 16 + ((lane >> 4) << 3) + (lane & 7),
                                          kk * 2 + ((lane >> 3) & 1)));
#pragma unroll
                for (int f = 0; f < FA; f++) {
                    zp_mma_bf16(acc[f][2 * p], a[f], b[0], b[1]);
                    zp_mma_bf16(acc[f][2 * p + 1], a[f], b[2], b[3]);
                }
            }
        }
    }
    zp_cp_wait<0>();
    __syncthreads(); /* every warp done with the ring: it becomes the f32 tile c[BM][BN + pad] */
    float *c = (float *)sm;
    constexpr int LD = ZP_GR_BN + ZP_GR_CPAD;
#pragma unroll
    for (int f = 0; f < FA; f++)
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int nn = wn * 16 * FA + f * 16 + (lane >> 2);
            const int mm = wm * 64 + j * 8 + 2 * (lane & 3);
            c[mm * LD + nn] = acc[f][j][0];
            c[(mm + 1) * LD + nn] = acc[f][j][1];
            c[mm * LD + nn + 8] = acc[f][j][2];
            c[(mm + 1) * LD + nn + 8] = acc[f][j][3];
        }
    __syncthreads();
    constexpr int CH = ZP_GR_BN / 8; /* 8-output chunks per row */
    if (splits > 1) {
        float *mine = part + ((size_t)split * (size_t)cap + (size_t)m0) * (size_t)n + n0;
        for (int v = tid; v < mrows * CH * 2; v += ZP_GR_THREADS) {
            const int mm = v / (CH * 2), q = v % (CH * 2);
            *(float4 *)(mine + (size_t)mm * n + q * 4) = *(const float4 *)(c + mm * LD + q * 4);
        }
        __shared__ int last;
        __threadfence(); /* release: this CTA's partials before its count */
        __syncthreads();
        if (!tid) {
            int *fl = flags + blockIdx.z * gridDim.x + blockIdx.x;
            last = atomicAdd(fl, 1) == splits - 1;
            if (last) *fl = 0; /* every split has counted: ready for the next launch */
        }
        __syncthreads();
        if (!last) return;
        __threadfence(); /* acquire: the other splits' partials after their counts */
    }
    for (int v = tid; v < mrows * CH; v += ZP_GR_THREADS) {
        const int mm = v / CH, q = v % CH, nn = n0 + q * 8;
        float o[8];
        if (splits > 1) {
            const float *p0 = part + (size_t)(m0 + mm) * (size_t)n + nn;
#pragma unroll
            for (int e = 0; e < 8; e++) o[e] = 0.f;
            for (int s = 0; s < splits; s++) {
                const float4 lo = __ldcg((const float4 *)(p0 + (size_t)s * cap * n)),
                             hi = __ldcg((const float4 *)(p0 + (size_t)s * cap * n + 4));
                o[0] += lo.x, o[1] += lo.y, o[2] += lo.z, o[3] += lo.w;
                o[4] += hi.x, o[5] += hi.y, o[6] += hi.z, o[7] += hi.w;
            }
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) o[e] = c[mm * LD + q * 8 + e];
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
        const int row = rows ? rows[r0 + m0 + mm] : r0 + m0 + mm;
        const size_t at = (size_t)row * (size_t)n + nn;
        if (F32) {
            *(float4 *)((float *)y + at) = make_float4(o[0], o[1], o[2], o[3]);
            *(float4 *)((float *)y + at + 4) = make_float4(o[4], o[5], o[6], o[7]);
        } else {
            uint4 out;
            out.x = zp_pack_bf16x2(o[0], o[1]), out.y = zp_pack_bf16x2(o[2], o[3]);
            out.z = zp_pack_bf16x2(o[4], o[5]), out.w = zp_pack_bf16x2(o[6], o[7]);
            *(uint4 *)((bf16 *)y + at) = out;
        }
    }
}

/* bf16 out (the layers) and f32 out (the logits), each with row tile 64 and 128. */
#define ZP_GR_KERNEL(name, BM, STAGES, F32)                                                      \
    extern "C" __global__ void __launch_bounds__(ZP_GR_THREADS)                                  \
        name(void *y, const bf16 *x, const bf16 *w, const bf16 *bias, const int *rows,          \
             const int *count, int r0, int cap, int n, int k, int splits, float *part,          \
             int *flags) {                                                                      \
        zp_gemm_rows<BM, STAGES, F32>(y, x, w, bias, rows, count, r0, cap, n, k, splits, part,  \
                                      flags);                                                   \
    }
ZP_GR_KERNEL(zp_gemm_rows64, 64, 4, false)
ZP_GR_KERNEL(zp_gemm_rows128, 128, 3, false)
ZP_GR_KERNEL(zp_gemm_rows64_f32, 64, 4, true)
ZP_GR_KERNEL(zp_gemm_rows128_f32, 128, 3, true)
