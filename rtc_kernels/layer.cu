/* layer.cu: the per-token ops of a transformer layer around the GEMMs, bf16 storage and fp32
 * math, each the twin of a CPU backend op (drv/cpu.c) and tested against it
 * (tests/test_cuda_ops.c).
 *
 * Invariants:
 * - The residual stream is fp32 ([rows][dim]); activations handed to GEMMs are bf16.
 * - Row counts are read from device memory (`const int *n_rows`), so one launch with a
 *   padded grid serves every batch of a CUDA-graph bucket: blocks past the count exit at once.
 * - Padding contract: a token whose KV slot is negative writes no KV.
 * - Each output element is computed by one thread in a fixed order, and reductions use a
 *   fixed tree, so a row's result never depends on the batch it runs in.
 * Constants: ZP_HEAD_DIM (head dim D), ZP_BLOCK_SIZE (tokens per KV page).
 */
#include "common.cuh"

/* resid[t][:] = table[ids[t] - v0][:] for a token of the table's vocabulary rows [v0, v1), else
 * -0.0f (a tensor-parallel rank's vocabulary-parallel embedding: IEEE's additive identity, so the
 * all-reduce over the ranks gives the owner's row bit for bit; the whole table: v0 0, v1 the
 * largest int). grid (rows_cap), block 256. */
extern "C" __global__ void zp_embed(float *resid, const bf16 *table, const int *ids,
                                    const int *n_rows, int dim, int v0, int v1) {
    zp_grid_dep();
    int t = blockIdx.x;
    if (t >= *n_rows) return;
    const int id = ids[t];
    float *dst = resid + (size_t)t * dim;
    if (id < v0 || id >= v1) {
        for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = -0.0f;
        return;
    }
    const bf16 *src = table + (size_t)(id - v0) * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = bf2f(src[j]);
}

/* resid[t] += x[t] (when x is not null); out[t] = bf16(resid[t] / rms(resid[t]) * w).
 * grid (rows_cap), block ZP_NORM_THREADS; dim a multiple of 4, at most ZP_NORM_MAX_DIM (the host
 * checks both: drv/layer_abi.h). A thread moves 16 bytes of the fp32 row per access and keeps
 * what it read in registers for the scaling pass (one read of the row, not two): the kernel is
 * a few microseconds of latency per layer, so the loads are issued back to back. The sum of
 * squares of a row is a fixed tree (per-thread chunks in order, then block_sum). */
#define ZP_NORM_THREADS 256 /* drv/layer_abi.h */
#define ZP_NORM_CHUNKS 16

__device__ __forceinline__ float4 bf4_to_f4(uint2 u) {
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                       __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
}

__device__ __forceinline__ uint2 f4_to_bf4(float a, float b, float c, float d) {
    return make_uint2((unsigned)f2bf(a) | ((unsigned)f2bf(b) << 16),
                      (unsigned)f2bf(c) | ((unsigned)f2bf(d) << 16));
}

extern "C" __global__ void __launch_bounds__(ZP_NORM_THREADS)
    zp_add_rmsnorm(float *__restrict__ resid, const bf16 *__restrict__ x, bf16 *__restrict__ out,
                   const bf16 *__restrict__ w, const int *n_rows, int dim, float eps) {
    zp_grid_dep();
    const int t = blockIdx.x, n4 = dim >> 2;
    if (t >= *n_rows) return;
    float4 *r = (float4 *)(resid + (size_t)t * dim);
    const uint2 *xs = x ? (const uint2 *)(x + (size_t)t * dim) : 0, *ws = (const uint2 *)w;
    /* every load first (restrict: none waits behind a store), then the sums and the stores */
    float4 v[ZP_NORM_CHUNKS];
    uint2 xb[ZP_NORM_CHUNKS], wb[ZP_NORM_CHUNKS];
#pragma unroll
    for (int c = 0; c < ZP_NORM_CHUNKS; c++) {
        const int i = c * ZP_NORM_THREADS + threadIdx.x;
        if (i < n4) {
            v[c] = r[i];
            xb[c] = xs ? xs[i] : make_uint2(0u, 0u);
            wb[c] = ws[i];
        }
    }
    float ss = 0.f;
#pragma unroll
    for (int c = 0; c < ZP_NORM_CHUNKS; c++) {
        const int i = c * ZP_NORM_THREADS + threadIdx.x;
        if (i < n4) {
            if (xs) {
                const float4 b = bf4_to_f4(xb[c]);
                v[c].x += b.x, v[c].y += b.y, v[c].z += b.z, v[c].w += b.w;
                r[i] = v[c];
            }
            ss += v[c].x * v[c].x + v[c].y * v[c].y + v[c].z * v[c].z + v[c].w * v[c].w;
        }
    }
    const float inv = rsqrtf(block_sum(ss) / (float)dim + eps);
    uint2 *o = (uint2 *)(out + (size_t)t * dim);
#pragma unroll
    for (int c = 0; c < ZP_NORM_CHUNKS; c++) {
        const int i = c * ZP_NORM_THREADS + threadIdx.x;
        if (i < n4) {
            const float4 g = bf4_to_f4(wb[c]);
            o[i] = f4_to_bf4(v[c].x * inv * g.x, v[c].y * inv * g.y, v[c].z * inv * g.z,
                             v[c].w * inv * g.w);
        }
    }
}

/* One head row of D values held by one warp, ZP_ROPE_P rotate-half pairs (j, j + D/2) per lane
 * (j = lane * ZP_ROPE_P + p): optional RMSNorm over the head (Qwen3's q_norm / k_norm; a warp
 * reduction, a fixed tree), then RoPE at angle pos * inv_freq[j]. */
#define ZP_ROPE_P (ZP_HEAD_DIM / 64)
#define ZP_ROPE_HEADS 4 /* warps (heads) per block: drv/layer_abi.h */

__device__ __forceinline__ void norm_rope(float *a, float *b, const bf16 *norm_w, float eps,
                                          float pos, const float *inv_freq, int j0) {
    const int half = ZP_HEAD_DIM / 2;
    if (norm_w) {
        float ss = 0.f;
#pragma unroll
        for (int p = 0; p < ZP_ROPE_P; p++)
            ss += a[p] * a[p] + b[p] * b[p];
        const float inv = rsqrtf(warp_sum(ss) / (float)ZP_HEAD_DIM + eps);
#pragma unroll
        for (int p = 0; p < ZP_ROPE_P; p++) {
            a[p] = a[p] * inv * bf2f(norm_w[j0 + p]);
            b[p] = b[p] * inv * bf2f(norm_w[j0 + p + half]);
        }
    }
#pragma unroll
    for (int p = 0; p < ZP_ROPE_P; p++) {
        float sn, cs;
        sincosf(pos * inv_freq[j0 + p], &sn, &cs);
        const float x1 = a[p], x2 = b[p];
        a[p] = x1 * cs - x2 * sn;
        b[p] = x2 * cs + x1 * sn;
    }
}

/* The attention prologue on the fused QKV GEMM output qkv[t] = [q (hq heads) | k (hkv) | v (hkv)]:
 * q heads: norm + RoPE -> q_out[t][hq][D]; k heads: norm + RoPE -> K cache at slots[t]; v heads:
 * copied to the V cache. Caches: bf16 [blocks][hkv][ZP_BLOCK_SIZE][D]. q_norm / k_norm null: no
 * per-head norm. grid (rows_cap, ceil((hq + hkv) / ZP_ROPE_HEADS)), block 32 * ZP_ROPE_HEADS: a
 * warp per head, so the head's norm needs no shared memory or block barrier (a block per head
 * of D/2 threads made this a latency-bound kernel of many tiny blocks). */
extern "C" __global__ void __launch_bounds__(32 * ZP_ROPE_HEADS)
    zp_qkv_rope_store(const bf16 *qkv, const bf16 *q_norm, const bf16 *k_norm,
                      const int *positions, const float *inv_freq, const int *slots,
                      const int *n_rows, int hq, int hkv, float eps, bf16 *q_out, bf16 *kc,
                      bf16 *vc) {
    zp_grid_dep();
    const int t = blockIdx.x, h = blockIdx.y * ZP_ROPE_HEADS + (threadIdx.x >> 5);
    const int j0 = (threadIdx.x & 31) * ZP_ROPE_P, half = ZP_HEAD_DIM / 2;
    if (t >= *n_rows || h >= hq + hkv) return; /* the whole warp: its reduction stays complete */
    const size_t row = (size_t)t * (hq + 2 * hkv) * ZP_HEAD_DIM;
    const float pos = (float)positions[t];
    const bf16 *src = qkv + row + (size_t)h * ZP_HEAD_DIM; /* q head h, or k head h - hq */
    float a[ZP_ROPE_P], b[ZP_ROPE_P];
#pragma unroll
    for (int p = 0; p < ZP_ROPE_P; p++)
        a[p] = bf2f(src[j0 + p]), b[p] = bf2f(src[j0 + p + half]);
    norm_rope(a, b, h < hq ? q_norm : k_norm, eps, pos, inv_freq, j0);
    bf16 *dst;
    if (h < hq) {
        dst = q_out + ((size_t)t * hq + h) * ZP_HEAD_DIM;
    } else {
        const int g = h - hq, slot = slots[t];
        if (slot < 0) return;
        const size_t off = (((size_t)(slot / ZP_BLOCK_SIZE) * hkv + g) * ZP_BLOCK_SIZE +
                            slot % ZP_BLOCK_SIZE) * ZP_HEAD_DIM;
        const bf16 *vs = qkv + row + (size_t)(hq + hkv + g) * ZP_HEAD_DIM;
#pragma unroll
        for (int p = 0; p < ZP_ROPE_P; p++)
            vc[off + j0 + p] = vs[j0 + p], vc[off + j0 + p + half] = vs[j0 + p + half];
        dst = kc + off;
    }
#pragma unroll
    for (int p = 0; p < ZP_ROPE_P; p++)
        dst[j0 + p] = f2bf(a[p]), dst[j0 + p + half] = f2bf(b[p]);
}

/* out[t][i] = silu(gu[t][i]) * gu[t][inter + i] on the fused gate/up GEMM output.
 * grid (rows_cap, ceil(inter / (ZP_SILU_THREADS * ZP_SILU_VEC))), block ZP_SILU_THREADS; inter a
 * multiple of ZP_SILU_VEC (drv/layer_abi.h). Each thread does 8 outputs with 16-byte accesses:
 * one element per thread left the kernel bound by instruction latency, not bytes. */
#define ZP_SILU_THREADS 256 /* drv/layer_abi.h */
#define ZP_SILU_VEC 8

__device__ __forceinline__ float silu_mul1(unsigned g2, unsigned u2, int hi) {
    const float g = __uint_as_float(hi ? g2 & 0xffff0000u : g2 << 16),
                u = __uint_as_float(hi ? u2 & 0xffff0000u : u2 << 16);
    return g / (1.f + __expf(-g)) * u;
}

extern "C" __global__ void __launch_bounds__(ZP_SILU_THREADS)
    zp_silu_mul(bf16 *out, const bf16 *gu, const int *n_rows, int inter) {
    zp_grid_dep();
    const int t = blockIdx.x, i = (blockIdx.y * ZP_SILU_THREADS + threadIdx.x) * ZP_SILU_VEC;
    if (t >= *n_rows || i >= inter) return;
    const bf16 *row = gu + (size_t)t * 2 * inter;
    const uint4 g = *(const uint4 *)(row + i), u = *(const uint4 *)(row + inter + i);
    const unsigned gs[4] = {g.x, g.y, g.z, g.w}, us[4] = {u.x, u.y, u.z, u.w};
    unsigned o[4];
#pragma unroll
    for (int k = 0; k < 4; k++)
        o[k] = (unsigned)f2bf(silu_mul1(gs[k], us[k], 0)) |
               ((unsigned)f2bf(silu_mul1(gs[k], us[k], 1)) << 16);
    *(uint4 *)(out + (size_t)t * inter + i) = make_uint4(o[0], o[1], o[2], o[3]);
}

/* out[i][:] = x[rows[i]][:] for the logit rows. grid (n_cap), block 256. */
extern "C" __global__ void zp_gather_rows(bf16 *out, const bf16 *x, const int *rows,
                                          const int *n, int dim) {
    zp_grid_dep();
    int i = blockIdx.x;
    if (i >= *n) return;
    const bf16 *src = x + (size_t)rows[i] * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) out[(size_t)i * dim + j] = src[j];
}

/* Greedy sampling: ids[r] = argmax of logits row r over ids [0, n_valid) (fp32, rows `stride`
 * apart), ties to the lowest id, as the CPU sampler; the error codes of drv/sample_abi.h: -1 a
 * NaN, -2 a +inf, -3 every logit -inf. grid (rows_cap), block 1024. */
extern "C" __global__ void zp_argmax(int *ids, const float *logits, const int *n_rows, int n_valid,
                                     int stride) {
    zp_grid_dep();
    __shared__ float bv[32];
    __shared__ int bi[32], bad_s;
    int r = blockIdx.x;
    if (r >= *n_rows) return;
    if (threadIdx.x == 0) bad_s = 0;
    __syncthreads();
    const float *row = logits + (size_t)r * stride;
    const float inf = __int_as_float(0x7f800000);
    float best = -inf;
    int arg = 0x7fffffff, bad = 0;
    for (int i = threadIdx.x; i < n_valid; i += blockDim.x) {
        float v = row[i];
        bad |= (v != v) | ((v == inf) << 1);
        if (v > best) best = v, arg = i; /* i grows: the first maximum is kept */
    }
    if (bad) atomicOr(&bad_s, bad);
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, arg, o);
        if (ov > best || (ov == best && oi < arg)) best = ov, arg = oi;
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (!lane) bv[w] = best, bi[w] = arg;
    __syncthreads();
    if (w) return;
    int nw = blockDim.x >> 5;
    best = lane < nw ? bv[lane] : -inf;
    arg = lane < nw ? bi[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, arg, o);
        if (ov > best || (ov == best && oi < arg)) best = ov, arg = oi;
    }
    if (!lane) ids[r] = (bad_s & 1) ? -1 : (bad_s & 2) ? -2 : arg == 0x7fffffff ? -3 : arg;
}
