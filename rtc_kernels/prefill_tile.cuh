/* prefill_tile.cuh: the parts of the prefill attention kernels (prefill.cu on mma.sync,
 * prefill_wg.cu on wgmma) that do not depend on how the products are computed: a thread's two
 * query rows of the CTA's 64, the key range of the split the tile attends, the online softmax
 * of a sub-tile of scores and the partials written at the end. prefill.cu's header states the
 * algorithm and why a row's bits do not depend on its tile.
 *
 * Register layout both kernels give these helpers (mma.sync's m16n8 accumulator, which is also
 * wgmma's per warp): warp w holds query rows m = 16w + gid and 16w + gid + 8 (gid = lane / 4);
 * a sub-tile's scores sc[4 nt + x] are row gid + 8 (x >> 1), key 8 nt + 2 tq + (x & 1)
 * (tq = lane % 4); the output o[4 n + x] is the same row, head-dim column 8 n + 2 tq + (x & 1).
 * Helpers marked "every thread" contain a barrier or shuffles and must be called by the whole
 * CTA or warp.
 */
#ifndef ZP_PREFILL_TILE_CUH
#define ZP_PREFILL_TILE_CUH

#include "common.cuh"

#define ZP_PF_NEG_INF __int_as_float(0xff800000)

/* This thread's two query rows m = 16w + gid + 8h (h = 0, 1) of the tile: m = r*G + j, token
 * row r of the tile (first .. first + nrows - 1), query head g*G + j. */
struct zp_pf_rows {
    int lim[2];     /* last key of this split the row attends; -1 for inert rows (r >= nrows) */
    size_t row[2];  /* the row's index in q: token row * hq + head (row 0's for inert rows) */
    size_t pidx[2]; /* partial index of (row, head, split) */
    bool real[2];   /* r < nrows */
};

template <int G>
static __device__ __forceinline__ zp_pf_rows zp_pf_rows_of(const int *__restrict__ tok_kv_idx,
                                                           int first, int nrows, int lane, int w,
                                                           int hq, int g, int s, int n_split,
                                                           int last) {
    zp_pf_rows t;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int m = 16 * w + (lane >> 2) + 8 * h, r = m / G, j = m % G;
        t.real[h] = r < nrows;
        const int kvi = t.real[h] ? tok_kv_idx[first + r] : -1;
        t.lim[h] = kvi < last ? kvi : last;
        t.row[h] = (size_t)(first + (t.real[h] ? r : 0)) * (size_t)hq + (size_t)(g * G + j);
        t.pidx[h] = t.row[h] * (size_t)n_split + (size_t)s;
    }
    return t;
}

/* Every thread: the CTA's keys [start, end) (end = the last key any row attends + 1, through
 * lim_s[NW] in shared memory); *wlim = the warp's last attended key. */
template <int NW>
static __device__ __forceinline__ int zp_pf_end(const zp_pf_rows &t, int *lim_s, int lane, int w,
                                                int *wlim) {
    int x = t.lim[0] > t.lim[1] ? t.lim[0] : t.lim[1];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const int y = __shfl_xor_sync(0xffffffffu, x, o);
        x = y > x ? y : x;
    }
    *wlim = x;
    if (lane == 0) lim_s[w] = x;
    __syncthreads();
    int end = lim_s[0];
#pragma unroll
    for (int k = 1; k < NW; k++) end = lim_s[k] > end ? lim_s[k] : end;
    return end + 1;
}

/* A split no row of the tile reaches: each real row's partial is empty (m = -inf, l = 0). */
static __device__ __forceinline__ void zp_pf_empty(const zp_pf_rows &t, float *__restrict__ part_ml,
                                                   int tq) {
    if (tq == 0)
#pragma unroll
        for (int h = 0; h < 2; h++)
            if (t.real[h]) {
                part_ml[t.pidx[h] * 2 + 0] = ZP_PF_NEG_INF;
                part_ml[t.pidx[h] * 2 + 1] = 0.0f;
            }
}

/* Splits gridDim.x .. n_split - 1 of the tile's real rows: empty partials, written by split
 * 0's CTA (tq 0 of each row's quad). The host sizes the grid to the splits of chunk keys the
 * step's longest row needs (drv/attn_tiles.h's attn_prefill_splits), while the partials keep
 * the stride n_split of the decode rows' shorter splits that the merge reads for every row:
 * marking the rest here costs a few stores instead of a CTA per empty split. */
static __device__ __forceinline__ void zp_pf_empty_past(const zp_pf_rows &t,
                                                        float *__restrict__ part_ml, int tq, int s,
                                                        int n_split) {
    if (s != 0 || tq != 0) return;
#pragma unroll
    for (int h = 0; h < 2; h++)
        if (t.real[h])
            for (int x = (int)gridDim.x; x < n_split; x++) {
                part_ml[(t.pidx[h] + (size_t)x) * 2 + 0] = ZP_PF_NEG_INF;
                part_ml[(t.pidx[h] + (size_t)x) * 2 + 1] = 0.0f;
            }
}

/* Every warp: the online softmax of a sub-tile of NT n8 tiles of scores at keys p0 ..: masks
 * keys past each row's lim to -inf, scales to base-2 units (c2), updates the running max mr
 * and sum lr, rescales the output o (ND n8 tiles) and leaves P rounded to bf16 in pa[nt][h]
 * (row half h, keys 8nt + 2tq, +1: the A fragments of P V), l summing the same rounded values.
 * A row that attends no key here keeps mr, lr and o bit-exactly (corr exactly 1, p = +0). */
template <int NT, int ND>
static __device__ __forceinline__ void zp_pf_softmax(float *sc, unsigned (*pa)[2], float *o,
                                                     float *mr, float *lr, const int *lim, int p0,
                                                     int tq, float c2) {
    float corr[2], msub[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float mx = ZP_PF_NEG_INF;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int p = p0 + nt * 8 + 2 * tq + e;
                const float x = p <= lim[h] ? sc[4 * nt + 2 * h + e] * c2 : ZP_PF_NEG_INF;
                sc[4 * nt + 2 * h + e] = x;
                mx = fmaxf(mx, x);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(mr[h], mx);
        corr[h] = mn == mr[h] ? 1.0f : zp_ex2(mr[h] - mn); /* exactly 1 when unchanged */
        msub[h] = mn == ZP_PF_NEG_INF ? 0.0f : mn; /* a state that saw only -inf subtracts 0 */
        mr[h] = mn;
    }
    float ls[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const unsigned pk = zp_pack_bf16x2(zp_ex2(sc[4 * nt + 2 * h] - msub[h]),
                                               zp_ex2(sc[4 * nt + 2 * h + 1] - msub[h]));
            pa[nt][h] = pk;
            ls[h] += __uint_as_float(pk << 16);
            ls[h] += __uint_as_float(pk & 0xffff0000u);
        }
#pragma unroll
    for (int h = 0; h < 2; h++) lr[h] = lr[h] * corr[h] + ls[h];
#pragma unroll
    for (int n = 0; n < ND; n++) {
        o[4 * n + 0] *= corr[0];
        o[4 * n + 1] *= corr[0];
        o[4 * n + 2] *= corr[1];
        o[4 * n + 3] *= corr[1];
    }
}

/* Every warp: l summed over the quad (lanes 4gid .. 4gid+3 hold the row's key columns), then
 * each real row's partial: m in natural-log units, l, and o unless the row saw no key. */
template <int ND>
static __device__ __forceinline__ void zp_pf_store(const zp_pf_rows &t, const float *o,
                                                   const float *mr, const float *lr,
                                                   float *__restrict__ part_o,
                                                   float *__restrict__ part_ml, int tq) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float l = lr[h] + __shfl_xor_sync(0xffffffffu, lr[h], 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (!t.real[h]) continue;
        const bool empty = mr[h] == ZP_PF_NEG_INF;
        if (tq == 0) {
            part_ml[t.pidx[h] * 2 + 0] = empty ? ZP_PF_NEG_INF : mr[h] * 0.6931471805599453f;
            part_ml[t.pidx[h] * 2 + 1] = l;
        }
        if (!empty) {
            float *dst = part_o + t.pidx[h] * (ND * 8) + 2 * tq;
#pragma unroll
            for (int n = 0; n < ND; n++)
                *(float2 *)(dst + 8 * n) = make_float2(o[4 * n + 2 * h], o[4 * n + 2 * h + 1]);
        }
    }
}

#endif
