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

/* resid[t][:] = table[ids[t]][:]. grid (rows_cap), block 256. */
extern "C" __global__ void zp_embed(float *resid, const bf16 *table, const int *ids,
                                    const int *n_rows, int dim) {
    int t = blockIdx.x;
    if (t >= *n_rows) return;
    const bf16 *src = table + (size_t)ids[t] * dim;
    float *dst = resid + (size_t)t * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = bf2f(src[j]);
}

/* resid[t] += x[t] (when x is not null); out[t] = bf16(resid[t] / rms(resid[t]) * w).
 * grid (rows_cap), block 256 (a multiple of 32). */
extern "C" __global__ void zp_add_rmsnorm(float *resid, const bf16 *x, bf16 *out, const bf16 *w,
                                          const int *n_rows, int dim, float eps) {
    int t = blockIdx.x;
    if (t >= *n_rows) return;
    float *r = resid + (size_t)t * dim;
    float ss = 0.f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float v = r[j];
        if (x) v += bf2f(x[(size_t)t * dim + j]), r[j] = v;
        ss += v * v;
    }
    float inv = rsqrtf(block_sum(ss) / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        out[(size_t)t * dim + j] = f2bf(r[j] * inv * bf2f(w[j]));
}

/* One head row of D values in registers, two per thread (rotate-half pairs j, j + D/2):
 * optional RMSNorm over the head (Qwen3's q_norm / k_norm), then RoPE at angle pos * inv_freq[j]. */
__device__ __forceinline__ void norm_rope(float &a, float &b, const bf16 *norm_w, float eps,
                                          float pos, const float *inv_freq) {
    const int j = threadIdx.x, half = ZP_HEAD_DIM / 2;
    if (norm_w) {
        float inv = rsqrtf(block_sum(a * a + b * b) / (float)ZP_HEAD_DIM + eps);
        a = a * inv * bf2f(norm_w[j]);
        b = b * inv * bf2f(norm_w[j + half]);
    }
    float s, c;
    sincosf(pos * inv_freq[j], &s, &c);
    float x1 = a, x2 = b;
    a = x1 * c - x2 * s;
    b = x2 * c + x1 * s;
}

/* The attention prologue on the fused QKV GEMM output qkv[t] = [q (hq heads) | k (hkv) | v (hkv)]:
 * q heads: norm + RoPE -> q_out[t][hq][D]; k heads: norm + RoPE -> K cache at slots[t]; v heads:
 * copied to the V cache. Caches: bf16 [blocks][hkv][ZP_BLOCK_SIZE][D]. q_norm / k_norm null: no
 * per-head norm. grid (rows_cap, hq + hkv), block D/2 (a multiple of 32). */
extern "C" __global__ void zp_qkv_rope_store(const bf16 *qkv, const bf16 *q_norm,
                                             const bf16 *k_norm, const int *positions,
                                             const float *inv_freq, const int *slots,
                                             const int *n_rows, int hq, int hkv, float eps,
                                             bf16 *q_out, bf16 *kc, bf16 *vc) {
    const int t = blockIdx.x, h = blockIdx.y, j = threadIdx.x, half = ZP_HEAD_DIM / 2;
    if (t >= *n_rows) return;
    const size_t row = (size_t)t * (hq + 2 * hkv) * ZP_HEAD_DIM;
    const float pos = (float)positions[t];
    if (h < hq) {
        const bf16 *src = qkv + row + (size_t)h * ZP_HEAD_DIM;
        float a = bf2f(src[j]), b = bf2f(src[j + half]);
        norm_rope(a, b, q_norm, eps, pos, inv_freq);
        bf16 *dst = q_out + ((size_t)t * hq + h) * ZP_HEAD_DIM;
        dst[j] = f2bf(a);
        dst[j + half] = f2bf(b);
        return;
    }
    const int g = h - hq, slot = slots[t];
    const bf16 *ks = qkv + row + (size_t)(hq + g) * ZP_HEAD_DIM;
    const bf16 *vs = qkv + row + (size_t)(hq + hkv + g) * ZP_HEAD_DIM;
    float a = bf2f(ks[j]), b = bf2f(ks[j + half]);
    norm_rope(a, b, k_norm, eps, pos, inv_freq); /* every thread joins the block reduction */
    if (slot < 0) return;
    const size_t dst = (((size_t)(slot / ZP_BLOCK_SIZE) * hkv + g) * ZP_BLOCK_SIZE +
                        slot % ZP_BLOCK_SIZE) * ZP_HEAD_DIM;
    kc[dst + j] = f2bf(a);
    kc[dst + j + half] = f2bf(b);
    vc[dst + j] = vs[j];
    vc[dst + j + half] = vs[j + half];
}

/* out[t][i] = silu(gu[t][i]) * gu[t][inter + i] on the fused gate/up GEMM output.
 * grid (rows_cap, ceil(inter / 256)), block 256. */
extern "C" __global__ void zp_silu_mul(bf16 *out, const bf16 *gu, const int *n_rows, int inter) {
    int t = blockIdx.x, i = blockIdx.y * blockDim.x + threadIdx.x;
    if (t >= *n_rows || i >= inter) return;
    const bf16 *row = gu + (size_t)t * 2 * inter;
    float g = bf2f(row[i]);
    out[(size_t)t * inter + i] = f2bf(g / (1.f + __expf(-g)) * bf2f(row[inter + i]));
}

/* out[i][:] = x[rows[i]][:] for the logit rows. grid (n_cap), block 256. */
extern "C" __global__ void zp_gather_rows(bf16 *out, const bf16 *x, const int *rows,
                                          const int *n, int dim) {
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
