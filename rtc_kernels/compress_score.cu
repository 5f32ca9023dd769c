/* compress_score.cu: the query cache and the attention scoring of Compressed PagedAttention
 * (../shared/spec/compressed-paged-attention.md sections 4 and 5.1-5.4), compiled at run time
 * by NVRTC. The CUDA twins of drv/cpu_compress.c's cpu_qcache_store and cpu_cmp_score; the
 * contracts are drv/backend.h's and docs/COMPRESSION.md's "The compression ops". Host-side
 * constants (threads, shared memory size, flag values): drv/compress_abi.h.
 *
 * PURPOSE.
 *   zp_qcache_store: for every token row t < *n_tokens with tok_qslot[t] >= 0, q[t] (bf16,
 *     post-norm, post-RoPE) goes as f32 to ring entry tok_kv_idx[t] % qcl of slot tok_qslot[t],
 *     layer `layer`, unless a later row of the same sequence maps to the same entry (the newest
 *     wins, as on the CPU; so every entry has exactly one writer).
 *   zp_cmp_score: per (layer, job, kv head h), with window query i at cache index
 *     qi = kv_len - qcl + i (queries with qi < 0 do not exist; nq = min(qcl, kv_len) do):
 *       z = (Q[i, h*G+g] . K[p, h]) * scale for p <= qi; a = softmax over those p, per query;
 *       A[p] = (1/nq) * sum_i max_g a[i, g, p];
 *       max_norm: A /= max_p A (when that max is > 0);
 *       BE_CJ_GLOBAL: S[p] = max(A[p], gamma * C[p]) for p < (n_blocks-1)*BS, else S = A;
 *       C[p] := S[p] for every p < kv_len (before pooling);
 *       BE_CJ_POOL and pool > 1: S[p] = max of S over [p - pool/2, p - pool/2 + pool - 1]
 *         clipped to [0, kv_len);
 *       scores[p] = S[p] for p < kv_len, -inf for kv_len <= p < max_pos.
 *
 * COMPILE-TIME CONSTANTS (-D from the driver; the #ifndef defaults are for standalone builds):
 *   ZP_HEAD_DIM D (64 or 128; any multiple of 32 works), ZP_BLOCK_SIZE BS (tokens per KV page),
 *   ZP_GQA G (query heads per kv head, 1..8). zp_qcache_store uses only D.
 *
 * LAYOUT (row-major; device pointers; bf16 stored as unsigned short; every base 16-byte aligned):
 *   q         bf16 [n_tokens][hq][D], hq = hkv*G
 *   qc        f32 [slots][layers][qcl][hq][D]: the query cache (every layer in one array)
 *   K cache   bf16 [num_blocks][hkv][BS][D], one array per layer
 *   C cache   f32 [num_blocks][hkv][BS] (laid out like K), one array per layer
 *   kc_layers, cc_layers  u64 [layers]: the device address of layer l's K / C cache at [l]
 *   scores    f32 [n_layers][layer_stride]: launch layer z's rows [n_jobs][hkv][max_pos] start
 *             at scores + z*layer_stride (layer_stride >= n_jobs*hkv*max_pos, in floats)
 *   job arrays int32 [n_jobs] n_blocks, kv_len, qslot, flags (BE_CJ_GLOBAL 1, BE_CJ_POOL 2), and
 *             src int32 [n_jobs][max_blocks]: position p of job b lives at block
 *             src[b*max_blocks + p/BS], offset p%BS. kv_len <= n_blocks*BS <= max_pos.
 *
 * LAUNCH RULES.
 *   zp_qcache_store(float *qc, const bf16 *q, const int *tok_qslot, const int *tok_kv_idx,
 *                   const int *tok_seq, const int *n_tokens, int layers, int layer, int qcl,
 *                   int hq)
 *     grid (n_rows_cap), block ZP_QC_THREADS (128), no dynamic shared memory. n_tokens is in
 *     device memory (counts[0]): CTAs of rows >= *n_tokens exit at once, read nothing of their
 *     row and write nothing, so a padded grid can be captured in a CUDA graph. Rows of one
 *     sequence are contiguous (be_batch). Run it after the layer's q is written and before any
 *     zp_cmp_score that reads the entries.
 *   zp_cmp_score(float *scores, long long layer_stride, const float *qc,
 *                const unsigned long long *kc_layers, const unsigned long long *cc_layers,
 *                int layer0, int layers, int hkv, int qcl, float scale, int max_norm,
 *                float gamma, int pool, const int *n_blocks, const int *kv_len,
 *                const int *qslot, const int *flags, const int *src, int max_blocks,
 *                int max_pos)
 *     grid (hkv, n_jobs, n_layers): CTA (h, b, z) scores kv head h of job b at layer
 *     layer0 + z (layers: the query cache's layer count; layer0 + n_layers <= layers).
 *     n_jobs, n_layers <= 65535. Block ZP_CS_THREADS (256). Dynamic shared memory (at least)
 *     4 * ((NQ + TP) * RL + NQ * (TP + 1) + 2 * NQ) bytes with NQ = min(128, qcl * G rounded
 *     up to 8) query rows per chunk, TP 64, RL = 9*D/8 + 32: 169,472 bytes at D 128 and NQ 128,
 *     76,160 at D 128, qcl 16 and G 2 (drv/compress_abi.h: zp_cs_smem_bytes); above 48 KiB
 *     for most, so the host sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES once per
 *     module to the largest. A launch with less traps (an error at the next sync) instead of
 *     overrunning shared memory. Plus 32 bytes of static shared memory (the block max). No
 *     global scratch. At most 128 registers (launch bounds of two CTAs per SM; ptxas sm_90 at
 *     D 128: 128 and 28 bytes of spill stores), so a window of qcl * G <= 64 query rows (the
 *     default qcl 16 at G <= 4) puts two CTAs on an SM.
 *     Writes: every scores element of the CTA's row (p < max_pos), C of the job's positions
 *     p < kv_len at this layer, nothing else. Caller rules (as on the CPU): no two jobs of one
 *     launch share a source block (C is written back into the source blocks), and launches
 *     that touch the same C must be ordered on one stream.
 *
 * ALGORITHM (zp_cmp_score). One CTA owns one (layer, job, kv head) row and computes it from
 * start to end: the softmax needs the whole row, max_norm the row's maximum, and pooling its
 * neighbours. Parallelism comes from layers x jobs x kv heads (one launch covers every layer of
 * a compression batch). The window queries are taken in chunks of IC = NQ/G (all G heads of
 * each), NQ query rows in shared memory as f32; each chunk makes two passes over the
 * job's positions in tiles of TP = 64 keys (bf16 -> f32 in shared memory):
 *   pass 1 (softmax statistics): Z = Q K^T for the tile (FMA units, below); then, per query
 *     row, a sequential scan over the tile's visible positions p ascending turns z into
 *     d = z - m (m the running max before p) and updates m; all threads then evaluate
 *     e = expf(d) (d <= 0) or -expf(-d) (d > 0: a new maximum, flagged by the sign bit, also
 *     of -0); a second sequential scan folds them into the sum: l = l*(-e) + 1 for a new
 *     maximum, else l += e. This is the CPU's online update, term by term, with the
 *     exponentials taken off the sequential chain.
 *   pass 2 (probabilities): Z again (bit-identical), then per (window query, position)
 *     best = max_g expf(z - m_g) / l_g, and per position a sequential sum of best over the
 *     window queries ascending; chunks continue the sum through the scores row, and the last
 *     chunk stores sum / nq.
 *   Then the row: max_norm (block max), carried score, C := S, pooling (reads the pre-pool
 *   scores back from C, which holds exactly them), -inf past kv_len.
 * K tiles are double-buffered through registers: each thread loads its 16-byte vectors of the
 * next tile from global memory while the current tile is computed, and stores them to shared
 * memory after the tile's products.
 *
 * Z = Q K^T. Thread lane k = lane % 8 of an 8-lane group owns the dot-product elements
 * d = 8j + k, j = 0 .. D/8-1, and accumulates them in j order with fmaf, then the group adds its
 * 8 partial sums by a reduce-scatter over xor offsets 1, 2, 4: exactly the CPU's dot_f32 (8
 * partial sums s[k] over d = 8j + k, then ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))). Queries are
 * bf16 values (zp_qcache_store stores bf16 q), so every product q*k is exact in f32 and
 * fmaf(q, k, s) rounds like the CPU's s + q*k: z is the CPU's z bit for bit (with queries that
 * are not bf16 values, z differs by fp32 rounding only). A group computes 4 query rows x 8
 * positions (32 accumulators, so the kernel fits the 128 registers of two CTAs per SM; 12
 * float4 shared loads per 4 elements of 32 outputs); the reduce-scatter's tree is the same
 * whatever lane ends with an output, so z does not depend on the block shape. Shared rows
 * are stored by class: element d at k*DC + j, DC = D/8 + 4, so the 8 lanes of a quarter warp
 * read 8 disjoint bank quads; rows are RL = 8*DC + D/8 floats apart so the tile loads' stores
 * spread over all banks too. The 4 groups of a warp always have the same trip count (blocks
 * come in aligned sixteens), so the shuffles see full warps.
 *
 * AGREEMENT WITH THE CPU. Every rounding step of cpu_cmp_score is reproduced in its order with
 * __f*_rn intrinsics (nvrtc runs with -fmad=true, which would otherwise contract them): z, the
 * online max and sum per query in position order, the division, the max over g, the sum over
 * queries in order, the division by nq, max_norm, gamma*C. The only difference is expf (CUDA's
 * is within 2 ulp, glibc's within 0.502 ulp), which then moves the softmax sums by a few ulp:
 * scores agree to about 1e-6 relative (replaying this arithmetic with every exponential moved by
 * up to 2 ulp gave at most 9.6e-7; tests/test_cuda_cmp_score.c measures it on the GPU).
 *
 * THREADING. No atomics; every output element has one writer; a CTA's shared memory phases
 * are separated by __syncthreads. Rows of different CTAs are disjoint (the caller rules above).
 */
#include "common.cuh"

#define ZP_QC_THREADS 128
#define ZP_CS_THREADS 256
#define ZP_CS_NQ 128 /* most query rows (window query x head) per chunk: NQ = min(this, qcl*G) */
#define ZP_CS_TP 64                             /* key positions per tile */
#define ZP_CS_DJ (ZP_HEAD_DIM / 8)              /* elements per class (d = 8j + k) */
#define ZP_CS_DC (ZP_CS_DJ + 4)                 /* class stride inside a shared row */
#define ZP_CS_RL (8 * ZP_CS_DC + ZP_CS_DJ)      /* shared row stride of Q and K (floats) */
#define ZP_CS_ZL (ZP_CS_TP + 1)                 /* Z row stride: column reads hit 32 banks */
#define ZP_CS_KV (ZP_CS_TP * ZP_CS_DJ / ZP_CS_THREADS) /* 16-byte K vectors per thread per tile */

#define ZP_CJ_GLOBAL 1 /* BE_CJ_GLOBAL of drv/backend.h */
#define ZP_CJ_POOL 2   /* BE_CJ_POOL */

static_assert(ZP_HEAD_DIM % 32 == 0, "a class row must be whole float4s");
static_assert(ZP_GQA >= 1 && ZP_GQA <= 8 && ZP_CS_NQ % ZP_GQA == 0, "GQA group must be 1..8");
static_assert(ZP_CS_TP * ZP_CS_DJ % ZP_CS_THREADS == 0, "K tile vectors must split evenly");
static_assert(ZP_CS_TP % 32 == 0, "position blocks of a warp must share their query block");

#define ZP_CS_NEG_INF __int_as_float(0xff800000)

static __device__ __forceinline__ float zp_cs_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float zp_cs_hi(unsigned w) {
    return __uint_as_float(w & 0xffff0000u);
}

extern "C" __global__ void __launch_bounds__(ZP_QC_THREADS)
zp_qcache_store(float *__restrict__ qc, const bf16 *__restrict__ q,
                const int *__restrict__ tok_qslot, const int *__restrict__ tok_kv_idx,
                const int *__restrict__ tok_seq, const int *__restrict__ n_tokens, int layers,
                int layer, int qcl, int hq) {
    zp_grid_dep();
    const int t = blockIdx.x, n = *n_tokens;
    if (t >= n) return;
    const int s = tok_qslot[t];
    if (s < 0) return;
    const int idx = tok_kv_idx[t], seq = tok_seq[t];
    /* The later rows of this sequence, a block's width at a time, until the sequence ends: one
     * of them at a cache index idx + k*qcl owns the entry. */
    for (int base = t + 1;; base += ZP_QC_THREADS) {
        const int u = base + (int)threadIdx.x;
        const bool in = u < n && tok_seq[u] == seq;
        const bool newer = in && tok_qslot[u] == s && tok_kv_idx[u] > idx &&
                           (tok_kv_idx[u] - idx) % qcl == 0;
        if (__syncthreads_or(newer)) return;
        if (__syncthreads_or(!in)) break;
    }
    const int w = hq * ZP_HEAD_DIM;
    const uint4 *src = (const uint4 *)(q + (size_t)t * (size_t)w);
    float4 *dst = (float4 *)(qc + (((size_t)s * (size_t)layers + (size_t)layer) * (size_t)qcl +
                                   (size_t)(idx % qcl)) * (size_t)w);
    for (int v = threadIdx.x; v < w / 8; v += ZP_QC_THREADS) {
        const uint4 x = src[v];
        dst[2 * v] = make_float4(zp_cs_lo(x.x), zp_cs_hi(x.x), zp_cs_lo(x.y), zp_cs_hi(x.y));
        dst[2 * v + 1] = make_float4(zp_cs_lo(x.z), zp_cs_hi(x.z), zp_cs_lo(x.w), zp_cs_hi(x.w));
    }
}

/* Loads this thread's vectors of K tile `tile` (positions tile*TP ..) into registers; positions
 * at or past kv_len are zeros (never read). */
static __device__ __forceinline__ void zp_cs_load_k(uint4 (&r)[ZP_CS_KV],
                                                    const bf16 *__restrict__ kc,
                                                    const int *__restrict__ bt, int hkv, int h,
                                                    int tile, int kvl) {
#pragma unroll
    for (int v = 0; v < ZP_CS_KV; v++) {
        const int e = (int)threadIdx.x + v * ZP_CS_THREADS, pp = e / ZP_CS_DJ, jj = e % ZP_CS_DJ;
        const int pos = tile * ZP_CS_TP + pp;
        r[v] = make_uint4(0u, 0u, 0u, 0u);
        if (pos < kvl) {
            const size_t row = ((size_t)bt[pos / ZP_BLOCK_SIZE] * (size_t)hkv + (size_t)h) *
                                   ZP_BLOCK_SIZE + (size_t)(pos % ZP_BLOCK_SIZE);
            r[v] = *(const uint4 *)(kc + row * ZP_HEAD_DIM + (size_t)(8 * jj));
        }
    }
}

/* Stores the registers of zp_cs_load_k as f32 into the K tile, element 8jj+k at k*DC + jj. */
static __device__ __forceinline__ void zp_cs_store_k(float *Ks, const uint4 (&r)[ZP_CS_KV]) {
#pragma unroll
    for (int v = 0; v < ZP_CS_KV; v++) {
        const int e = (int)threadIdx.x + v * ZP_CS_THREADS, pp = e / ZP_CS_DJ, jj = e % ZP_CS_DJ;
        float *row = Ks + pp * ZP_CS_RL + jj;
        row[0 * ZP_CS_DC] = zp_cs_lo(r[v].x);
        row[1 * ZP_CS_DC] = zp_cs_hi(r[v].x);
        row[2 * ZP_CS_DC] = zp_cs_lo(r[v].y);
        row[3 * ZP_CS_DC] = zp_cs_hi(r[v].y);
        row[4 * ZP_CS_DC] = zp_cs_lo(r[v].z);
        row[5 * ZP_CS_DC] = zp_cs_hi(r[v].z);
        row[6 * ZP_CS_DC] = zp_cs_lo(r[v].w);
        row[7 * ZP_CS_DC] = zp_cs_hi(r[v].w);
    }
}

/* Loads the chunk's query rows r < nrows (window query ic0 + r/G, head h*G + r%G, from ring
 * entry qi % qcl) into Qs by class; rows nrows .. up to the next multiple of 8 are zeros (a
 * query block computes them, nothing reads their results). */
static __device__ __forceinline__ void zp_cs_load_q(float *Qs, const float *__restrict__ qbase,
                                                    int ic0, int nrows, int kvl, int qcl, int hq,
                                                    int h) {
    constexpr int D = ZP_HEAD_DIM, V4 = D / 4;
    const int rows = (nrows + 7) / 8 * 8;
    for (int e = threadIdx.x; e < rows * V4; e += ZP_CS_THREADS) {
        const int r = e / V4, v = e % V4; /* elements 4v .. 4v+3: classes 4(v&1) .., j = v/2 */
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < nrows) {
            const int ent = (kvl - qcl + ic0 + r / ZP_GQA) % qcl;
            const size_t head = (size_t)h * ZP_GQA + (size_t)(r % ZP_GQA);
            x = *(const float4 *)(qbase + ((size_t)ent * (size_t)hq + head) * D + (size_t)(4 * v));
        }
        float *row = Qs + r * ZP_CS_RL + (v >> 1) + (v & 1) * 4 * ZP_CS_DC;
        row[0 * ZP_CS_DC] = x.x;
        row[1 * ZP_CS_DC] = x.y;
        row[2 * ZP_CS_DC] = x.z;
        row[3 * ZP_CS_DC] = x.w;
    }
}

/* One xor step of the reduce-scatter: of v[0 .. 2*HALF), a lane whose bit O is set keeps the
 * upper half, the other the lower, and adds its partner's copy of the half it keeps. */
template <int O, int HALF>
static __device__ __forceinline__ void zp_cs_rs_step(float *v, int k) {
    const bool up = (k & O) != 0;
#pragma unroll
    for (int j = 0; j < HALF; j++) {
        const float send = up ? v[j] : v[j + HALF];
        const float keep = up ? v[j + HALF] : v[j];
        v[j] = __fadd_rn(keep, __shfl_xor_sync(0xffffffffu, send, O));
    }
}

/* Zs[r][p - p0] = (Q[r] . K[p]) * scale for the query rows of nrows' 8-row blocks and the TP
 * positions of the tile (see "Z = Q K^T" at the top). */
static __device__ __forceinline__ void zp_cs_dot_tile(float *Zs, const float *Qs, const float *Ks,
                                                      int nrows, float scale) {
    constexpr int PB = ZP_CS_TP / 8, GROUPS = ZP_CS_THREADS / 8;
    const int k = threadIdx.x & 7, grp = threadIdx.x >> 3;
    /* 4-row blocks of the 8-row-padded rows x 8-position blocks: a multiple of 16, so whole
     * warps share a trip count */
    const int n_blk = (nrows + 7) / 8 * 2 * PB;
    for (int bi = grp; bi < n_blk; bi += GROUPS) {
        const int qb = bi / PB, pb = bi % PB;
        const float *qs = Qs + qb * 4 * ZP_CS_RL + k * ZP_CS_DC;
        const float *ks = Ks + pb * 8 * ZP_CS_RL + k * ZP_CS_DC;
        float a[32];
#pragma unroll
        for (int x = 0; x < 32; x++) a[x] = 0.f;
#pragma unroll
        for (int m = 0; m < ZP_CS_DJ; m += 4) {
            float4 qv[4];
#pragma unroll
            for (int r = 0; r < 4; r++) qv[r] = *(const float4 *)(qs + r * ZP_CS_RL + m);
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const float4 kv = *(const float4 *)(ks + c * ZP_CS_RL + m);
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    float x = a[r * 8 + c];
                    x = fmaf(qv[r].x, kv.x, x);
                    x = fmaf(qv[r].y, kv.y, x);
                    x = fmaf(qv[r].z, kv.z, x);
                    x = fmaf(qv[r].w, kv.w, x);
                    a[r * 8 + c] = x;
                }
            }
        }
        /* a[r*8 + c] (r < 4) -> lane k holds the full dots of row ((k & 1) << 1 | (k >> 1) & 1),
         * positions 4 * (k >> 2) .. + 3 */
        zp_cs_rs_step<1, 16>(a, k);
        zp_cs_rs_step<2, 8>(a, k);
        zp_cs_rs_step<4, 4>(a, k);
        const int ro = ((k & 1) << 1) | ((k >> 1) & 1);
        float *z = Zs + (qb * 4 + ro) * ZP_CS_ZL + pb * 8 + 4 * (k >> 2);
#pragma unroll
        for (int c = 0; c < 4; c++) z[c] = __fmul_rn(a[c], scale);
    }
}

/* Max over the block of v (every thread gets it). */
static __device__ __forceinline__ float zp_cs_block_max(float v) {
    __shared__ float part[ZP_CS_THREADS / 32];
    v = warp_max(v);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = part[0];
#pragma unroll
    for (int w = 1; w < ZP_CS_THREADS / 32; w++) m = fmaxf(m, part[w]);
    return m;
}

/* Index of (position p, kv head h) in a [blocks][hkv][BS] array through block table bt. */
static __device__ __forceinline__ size_t zp_cs_slot(const int *__restrict__ bt, int p, int hkv,
                                                    int h) {
    return ((size_t)bt[p / ZP_BLOCK_SIZE] * (size_t)hkv + (size_t)h) * ZP_BLOCK_SIZE +
           (size_t)(p % ZP_BLOCK_SIZE);
}

extern "C" __global__ void __launch_bounds__(ZP_CS_THREADS, 2)
zp_cmp_score(float *__restrict__ scores, long long layer_stride, const float *__restrict__ qc,
             const unsigned long long *__restrict__ kc_layers,
             const unsigned long long *__restrict__ cc_layers, int layer0, int layers, int hkv,
             int qcl, float scale, int max_norm, float gamma, int pool,
             const int *__restrict__ n_blocks, const int *__restrict__ kv_len,
             const int *__restrict__ qslot, const int *__restrict__ flags,
             const int *__restrict__ src, int max_blocks, int max_pos) {
    zp_grid_dep();
    constexpr int G = ZP_GQA, TP = ZP_CS_TP, ZL = ZP_CS_ZL;
    /* query rows per chunk: the window's rows rounded up to 8 (a multiple of G), at most 128 */
    const int NQ = min(ZP_CS_NQ, (qcl * G + 7) / 8 * 8), IC = NQ / G;
    extern __shared__ __align__(16) float zp_cs_smem[];
    unsigned dyn;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
    if (dyn < 4u * (unsigned)((NQ + TP) * ZP_CS_RL + NQ * ZL + 2 * NQ)) __trap();
    float *Qs = zp_cs_smem, *Ks = Qs + NQ * ZP_CS_RL, *Zs = Ks + TP * ZP_CS_RL;
    float *Ms = Zs + NQ * ZL, *Ls = Ms + NQ;

    const int h = blockIdx.x, b = blockIdx.y, layer = layer0 + (int)blockIdx.z;
    const int tid = threadIdx.x, hq = hkv * G;
    const int kvl = kv_len[b], fl = flags[b];
    const int *bt = src + (size_t)b * (size_t)max_blocks;
    const bf16 *kc = (const bf16 *)kc_layers[layer];
    float *cc = (float *)cc_layers[layer];
    float *S = scores + (long long)blockIdx.z * layer_stride +
               ((size_t)b * (size_t)hkv + (size_t)h) * (size_t)max_pos;
    for (int p = kvl + tid; p < max_pos; p += ZP_CS_THREADS) S[p] = ZP_CS_NEG_INF;
    if (kvl == 0) return;

    const float *qbase = qc + ((size_t)qslot[b] * (size_t)layers + (size_t)layer) * (size_t)qcl *
                                  (size_t)hq * ZP_HEAD_DIM;
    const int i_first = qcl > kvl ? qcl - kvl : 0, nq = qcl - i_first;
    const int n_chunks = (nq + IC - 1) / IC, n_tiles = (kvl + TP - 1) / TP;
    const int total = n_chunks * 2 * n_tiles; /* tiles visited: chunk x pass x tile */

    /* K tile stream: tile (s % n_tiles) at step s; Ks holds step s's, kr step s+1's */
    uint4 kr[ZP_CS_KV];
    zp_cs_load_k(kr, kc, bt, hkv, h, 0, kvl);
    zp_cs_store_k(Ks, kr);
    if (n_tiles > 1) zp_cs_load_k(kr, kc, bt, hkv, h, 1, kvl);

    int step = 0;
    for (int c = 0; c < n_chunks; c++) {
        const int ic0 = i_first + c * IC, ic1 = min(qcl, ic0 + IC), nrows = (ic1 - ic0) * G;
        const int qi0 = kvl - qcl + ic0; /* cache index of the chunk's first window query */
        /* Qs is free: every read of the previous chunk's ended before its last tile's second
         * barrier; the first tile's first barrier publishes these stores */
        zp_cs_load_q(Qs, qbase, ic0, nrows, kvl, qcl, hq, h);
        /* this thread's query row in pass 1: its running max m and sum l */
        const bool has_q = tid < nrows;
        const int my_qi = qi0 + tid / G;
        float m = ZP_CS_NEG_INF, l = 0.f;
        for (int pass = 0; pass < 2; pass++) {
            for (int t = 0; t < n_tiles; t++, step++) {
                const int p0 = t * TP;
                __syncthreads(); /* Ks and Qs stored; every read of Zs done */
                zp_cs_dot_tile(Zs, Qs, Ks, nrows, scale);
                __syncthreads(); /* Zs complete; every read of Ks done */
                if (n_tiles > 1 && step + 1 < total) {
                    zp_cs_store_k(Ks, kr);
                    if (step + 2 < total)
                        zp_cs_load_k(kr, kc, bt, hkv, h, (step + 2) % n_tiles, kvl);
                }
                if (pass == 0) {
                    /* visible positions of this row in the tile: p <= my_qi (< kv_len) */
                    const int vis = has_q ? min(TP, my_qi + 1 - p0) : 0;
                    float *zr = Zs + tid * ZL;
                    for (int j = 0; j < vis; j++) {
                        const float z = zr[j];
                        zr[j] = __fsub_rn(z, m);
                        if (z > m) m = z;
                    }
                    __syncthreads();
                    for (int e = tid; e < nrows * TP; e += ZP_CS_THREADS) {
                        const int r = e / TP, j = e % TP;
                        if (p0 + j <= qi0 + r / G) {
                            const float d = Zs[r * ZL + j];
                            Zs[r * ZL + j] = d > 0.f ? -expf(-d) : expf(d);
                        }
                    }
                    __syncthreads();
                    for (int j = 0; j < vis; j++) {
                        const float e = zr[j];
                        l = signbit(e) ? __fadd_rn(__fmul_rn(l, -e), 1.0f) : __fadd_rn(l, e);
                    }
                } else {
                    /* best over the group's heads, into the row of head 0 of the query */
                    for (int e = tid; e < (ic1 - ic0) * TP; e += ZP_CS_THREADS) {
                        const int il = e / TP, j = e % TP;
                        if (p0 + j <= qi0 + il) {
                            float best = 0.f;
#pragma unroll
                            for (int g = 0; g < G; g++) {
                                const int r = il * G + g;
                                const float pr =
                                    __fdiv_rn(expf(__fsub_rn(Zs[r * ZL + j], Ms[r])), Ls[r]);
                                if (pr > best) best = pr;
                            }
                            Zs[il * G * ZL + j] = best;
                        }
                    }
                    __syncthreads();
                    const int p = p0 + tid;
                    if (tid < TP && p < kvl) {
                        float acc = c == 0 ? 0.f : S[p];
                        for (int il = max(0, p - qi0); il < ic1 - ic0; il++)
                            acc = __fadd_rn(acc, Zs[il * G * ZL + tid]);
                        S[p] = c == n_chunks - 1 ? __fdiv_rn(acc, (float)nq) : acc;
                    }
                }
            }
            if (pass == 0 && has_q) Ms[tid] = m, Ls[tid] = l;
        }
    }
    __syncthreads(); /* the scores row is complete */

    float mx = 0.f;
    if (max_norm) {
        for (int p = tid; p < kvl; p += ZP_CS_THREADS) mx = fmaxf(mx, S[p]);
        mx = zp_cs_block_max(mx);
    }
    const int carried = fl & ZP_CJ_GLOBAL ? (n_blocks[b] - 1) * ZP_BLOCK_SIZE : 0;
    const bool pooling = (fl & ZP_CJ_POOL) && pool > 1;
    for (int p = tid; p < kvl; p += ZP_CS_THREADS) {
        float v = S[p];
        if (mx > 0.f) v = __fdiv_rn(v, mx);
        float *cp = cc + zp_cs_slot(bt, p, hkv, h);
        if (p < carried) {
            const float gc = __fmul_rn(gamma, *cp);
            if (gc > v) v = gc;
        }
        *cp = v;
        if (!pooling) S[p] = v;
    }
    if (pooling) {
        __syncthreads(); /* C holds the whole pre-pool row */
        const int left = pool / 2, right = pool - 1 - left;
        for (int p = tid; p < kvl; p += ZP_CS_THREADS) {
            float v = ZP_CS_NEG_INF;
            for (int k = max(0, p - left); k <= min(kvl - 1, p + right); k++) {
                const float o = cc[zp_cs_slot(bt, k, hkv, h)];
                if (o > v) v = o;
            }
            S[p] = v;
        }
    }
}
