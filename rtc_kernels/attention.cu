/* attention.cu: paged attention over a bf16 KV cache, compiled at run time by NVRTC.
 *
 * PURPOSE. For every token row of a step (decode rows, and prefill rows unless prefill.cu's
 * tensor-core kernel takes them, the launch then naming its rows):
 *   out[t][h][:] = softmax_j(q[t][h]·k_j * scale) · v_j   over the token's cache indices
 *   j in [0, tok_kv_idx[t]] of its sequence (causal in cache order), fp32 accumulation,
 *   online softmax. Two kernels: zp_attn_partial (split-KV partials) and zp_attn_merge
 *   (log-sum-exp merge of the partials, bf16 out). Fast path: decode (one row per sequence).
 *
 * COMPILE-TIME CONSTANTS (-D from the driver; the #ifndef defaults are for standalone builds):
 *   ZP_HEAD_DIM D (64 or 128), ZP_BLOCK_SIZE BS (16..256, power of two; tokens per KV page),
 *   ZP_GQA G (1..8; query heads per kv head). Includes only common.cuh (NVRTC 13 has no
 *   toolkit headers); the cp.async helpers come from there.
 *
 * LAYOUT (row-major, device pointers, all bf16 stored as unsigned short, 16-byte aligned):
 *   q, out       [n_tokens][hq][D], hq = hkv*G; query head h belongs to kv head h / G.
 *   kc, vc       [num_blocks][hkv][BS][D]; cache index i of sequence seq lives in physical
 *                block block_tables[seq*max_blocks + i/BS] at offset i%BS.
 *   tok_seq      int [n_tokens]; < 0 marks a padding row (its output is zeros).
 *   tok_kv_idx   int [n_tokens]; the row attends to cache indices [0, tok_kv_idx] inclusive.
 *   n_tokens     int in device memory, so a padded grid can be captured in a CUDA graph:
 *                CTAs z >= *n_tokens exit at once (and write nothing).
 *   rows         int [grid z], or NULL: CTA z takes row rows[z] (NULL: row z). The backend
 *                lists the rows no q-tile of prefill.cu covers when a step has q-tiles (that
 *                kernel writes the others' partials), so a prompt row costs no CTA here.
 *   part_o       f32 [n_rows_cap][hq][n_split][D]  un-normalised partial o (relative to m)
 *   part_ml      f32 [n_rows_cap][hq][n_split][2]  {m = max of scaled scores, l = sum exp(s-m)}
 *                An empty split (or a padding row) stores m = -inf, l = 0 and no o: the merge
 *                skips a partial by its -inf maximum, so empty CTAs cost no o traffic.
 *
 * LAUNCH RULES.
 *   zp_attn_partial: grid (n_split, hkv, n_rows_cap or the number of rows listed), block
 *     ZP_ATTN_THREADS (128), no dynamic shared memory (static: 32 KiB K/V ring + <= 5.5 KiB, at
 *     most 38400 bytes, under the 48 KiB default for every D/BS/G; no opt-in). CTA (s, g, z)
 *     covers cache indices [s*chunk, min((s+1)*chunk, kv_idx+1)) of its row t.
 *     chunk: multiple of BS (any positive value is in fact correct); n_split*chunk must cover
 *     the longest kv_idx+1 of the step. n_rows_cap <= 65535 (gridDim.z limit).
 *   zp_attn_merge: grid (ceil(hq / ZP_MERGE_HEADS), n_rows_cap), block 32 * ZP_MERGE_HEADS
 *     (drv/attn_abi.h: attn_merge_blocks). Reads only partials written by the same step's zp_attn_partial
 *     and zp_attn_prefill_partial (for the rows of its q-tiles).
 *   Scratch: part_o n_rows_cap*hq*n_split*D*4 bytes, part_ml n_rows_cap*hq*n_split*8 bytes.
 *
 * WHY.
 *   GQA sharing: a CTA owns one (row, kv head) and ALL G query heads of that group, so each K/V
 *   element is fetched from memory once and used for G heads (decode is memory-bound; loading
 *   K/V per query head would multiply traffic by G).
 *   Split-KV: with few decode rows, rows x hkv CTAs under-fill the 132 SMs; splitting the KV
 *   range into chunks adds parallelism. The backend uses one fixed chunk for every row and
 *   step, so a row's splits (and its rounding) depend on its own length only: batch
 *   invariance. The grid covers the step's longest row (or a CUDA graph's length bucket);
 *   splits past a row's length are empty and merge to nothing.
 *
 * THREAD MAPPING (zp_attn_partial). A K/V row of D bf16 is read as TPR = D/8 16-byte vectors by
 * TPR consecutive lanes; the 128 threads form RPI = 128/TPR row groups. A tile is
 * TILE = RPT*RPI rows (RPT 4: 32 for D=128, 64 for D=64), a ring of STAGES = 2 tiles (RPT 2 with
 * 4 stages and RPT 1 with 8 stages measured slower on the H200); thread (r = tid/TPR, c = tid%TPR) copies, with
 * cp.async, exactly the vectors it later reads itself: rows r, r+RPI, r+2RPI, r+3RPI, columns
 * [8c, 8c+8), of K and V. So the ring needs no __syncthreads: the thread's own
 * cp.async.wait_group orders its copies before its reads. Page-table entries are read by each
 * thread for its own rows (spread across threads, prefetched one tile ahead with the data).
 * Scores: partial dots over 8 columns for each of the G heads, summed over the TPR lanes by a
 * halving reduce-scatter of shuffles plus an all-gather through a per-row-group shared row
 * (double-buffered by tile parity, one __syncwarp per tile); ZP_ATTN_RS=0 (or RPT*G not a
 * power of two >= 4) uses a plain xor all-reduce. Each row group keeps its own online-softmax state (m, l, o[G][8]) over the rows
 * it sees; the RPI states are merged through shared memory at the end (exact LSE merge).
 * Rows past the range end are zero-filled by cp.async (src-size 0, no global read), their
 * scores forced to -inf, so their p is exactly 0 and stale shared memory never enters a sum.
 * A state that has seen only -inf uses 0 as its subtraction point (no -inf - -inf = NaN).
 */

#include "common.cuh"

#define ZP_ATTN_THREADS 128
#define ZP_ATTN_VEC 8                                  /* bf16 per 16-byte vector */
#define ZP_ATTN_TPR (ZP_HEAD_DIM / ZP_ATTN_VEC)        /* lanes per K/V row: 8 or 16 */
#define ZP_ATTN_RPI (ZP_ATTN_THREADS / ZP_ATTN_TPR)    /* row groups: 16 or 8 */
#ifndef ZP_ATTN_RPT
#define ZP_ATTN_RPT 4                                  /* rows per thread per tile */
#endif
#define ZP_ATTN_TILE (ZP_ATTN_RPI * ZP_ATTN_RPT)       /* rows per tile */
#ifndef ZP_ATTN_STAGES
#define ZP_ATTN_STAGES (8 / ZP_ATTN_RPT)               /* cp.async ring depth (32 KiB ring) */
#endif
#ifndef ZP_ATTN_RS
#define ZP_ATTN_RS 1 /* score reduction: 1 reduce-scatter + shared all-gather, 0 xor all-reduce */
#endif

static_assert(ZP_HEAD_DIM % ZP_ATTN_VEC == 0, "head dim must be a multiple of 8");
static_assert(ZP_ATTN_TPR >= 1 && ZP_ATTN_TPR <= 32 && (32 % ZP_ATTN_TPR) == 0,
              "lanes per row must divide a warp");
static_assert(ZP_ATTN_THREADS % ZP_ATTN_TPR == 0, "threads must hold whole rows");
static_assert(ZP_BLOCK_SIZE > 0 && (ZP_BLOCK_SIZE & (ZP_BLOCK_SIZE - 1)) == 0,
              "block size must be a power of two");
static_assert(ZP_GQA >= 1 && ZP_GQA <= 8, "GQA group must be 1..8");
static_assert(ZP_ATTN_RPI * ZP_GQA * ZP_HEAD_DIM * 4 <=
                  ZP_ATTN_STAGES * 2 * ZP_ATTN_TILE * ZP_HEAD_DIM * 2,
              "reduction buffer must fit in the K/V ring");

#define ZP_NEG_INF __int_as_float(0xff800000)

static __device__ __forceinline__ float zp_bf_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float zp_bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

static __device__ __forceinline__ unsigned short zp_f2bf(float x) {
    unsigned short u;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(u) : "f"(x));
    return u;
}

static __device__ __forceinline__ void zp_unpack8(uint4 w, float *f) {
    f[0] = zp_bf_lo(w.x); f[1] = zp_bf_hi(w.x);
    f[2] = zp_bf_lo(w.y); f[3] = zp_bf_hi(w.y);
    f[4] = zp_bf_lo(w.z); f[5] = zp_bf_hi(w.z);
    f[6] = zp_bf_lo(w.w); f[7] = zp_bf_hi(w.w);
}

/* Halving reduce-scatter of v[0..N) over the TPR lanes of a row group (lane index c), step
 * offsets O = TPR/2, TPR/4, .., 1: at offset O the lane keeps the upper half when bit O of c is
 * set and adds the partner's copy of that half. Once one value is left, the remaining steps
 * all-reduce it. Afterwards lane c holds sums [c*N/TPR, (c+1)*N/TPR) (N >= TPR) or sum
 * c/(TPR/N) (N < TPR) in v[0..). Compile-time recursion keeps every index constant. */
template <int O, int N, int TPR>
static __device__ __forceinline__ void zp_reduce_scatter(float *v, int c) {
    if constexpr (O > 0) {
        constexpr int HALF = N * O / TPR;
        if constexpr (HALF >= 1) {
            const bool up = (c & O) != 0;
#pragma unroll
            for (int k = 0; k < HALF; k++) {
                const float send = up ? v[k] : v[k + HALF];
                const float keep = up ? v[k + HALF] : v[k];
                v[k] = keep + __shfl_xor_sync(0xffffffffu, send, O);
            }
        } else {
            v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
        }
        zp_reduce_scatter<O / 2, N, TPR>(v, c);
    }
}

/* Copies this thread's vectors of the tile starting at cache index p0 into stage st. */
static __device__ __forceinline__ void zp_attn_load_tile(
    unsigned short (*kv)[ZP_ATTN_TILE][ZP_HEAD_DIM], const unsigned short *__restrict__ kc,
    const unsigned short *__restrict__ vc, const int *__restrict__ bt, int hkv, int g, int p0,
    int end, int r, int c) {
#pragma unroll
    for (int i = 0; i < ZP_ATTN_RPT; i++) {
        const int row = r + i * ZP_ATTN_RPI, p = p0 + row;
        const unsigned short *ks = kc, *vs = vc;
        int bytes = 0;
        if (p < end) {
            const int blk = bt[p / ZP_BLOCK_SIZE];
            const size_t off = (((size_t)blk * (size_t)hkv + (size_t)g) * ZP_BLOCK_SIZE +
                                (size_t)(p % ZP_BLOCK_SIZE)) * ZP_HEAD_DIM +
                               (size_t)(c * ZP_ATTN_VEC);
            ks = kc + off;
            vs = vc + off;
            bytes = 16;
        }
        zp_cp16(&kv[0][row][c * ZP_ATTN_VEC], ks, bytes);
        zp_cp16(&kv[1][row][c * ZP_ATTN_VEC], vs, bytes);
    }
}

extern "C" __global__ void __launch_bounds__(ZP_ATTN_THREADS)
zp_attn_partial(const unsigned short *__restrict__ q, const unsigned short *__restrict__ kc,
                const unsigned short *__restrict__ vc, const int *__restrict__ tok_seq,
                const int *__restrict__ tok_kv_idx, const int *__restrict__ block_tables,
                const int *__restrict__ n_tokens, const int *__restrict__ rows, int max_blocks,
                int hkv, float scale, int chunk, int n_split, float *__restrict__ part_o,
                float *__restrict__ part_ml) {
    zp_grid_dep();
    constexpr int D = ZP_HEAD_DIM, G = ZP_GQA, TPR = ZP_ATTN_TPR, RPI = ZP_ATTN_RPI;
    constexpr int RPT = ZP_ATTN_RPT, TILE = ZP_ATTN_TILE;
    __shared__ __align__(16) unsigned short kv_s[ZP_ATTN_STAGES][2][ZP_ATTN_TILE][ZP_HEAD_DIM];
    __shared__ float red_m[RPI][G], red_l[RPI][G], red_f[RPI][G];
    constexpr int N = RPT * G; /* scores per row group per tile */
    constexpr bool RS = ZP_ATTN_RS && (N & (N - 1)) == 0 && N % 4 == 0; /* float4 gather */
    __shared__ __align__(16) float sc_s[2][RPI][RS ? N : 4]; /* double-buffered by tile parity */

    if ((int)blockIdx.z >= *n_tokens) return;
    const int s = blockIdx.x, g = blockIdx.y, t = rows ? rows[blockIdx.z] : (int)blockIdx.z;
    const int tid = threadIdx.x, c = tid % TPR, r = tid / TPR;
    const int hq = hkv * G;
    const int seq = tok_seq[t];
    const int start = s * chunk;
    int end = start; /* empty unless a real row with indices in this chunk */
    if (seq >= 0) {
        const int len = tok_kv_idx[t] + 1;
        end = len < start + chunk ? len : start + chunk;
    }
    /* (t, h = g*G + j, s) lives at partial index pbase + j*n_split */
    const size_t pbase = ((size_t)t * (size_t)hq + (size_t)g * G) * (size_t)n_split + (size_t)s;

    if (start >= end) { /* the merge skips it by its -inf maximum; its part_o is never read */
        if (tid < G) {
            part_ml[(pbase + (size_t)tid * (size_t)n_split) * 2 + 0] = ZP_NEG_INF;
            part_ml[(pbase + (size_t)tid * (size_t)n_split) * 2 + 1] = 0.0f;
        }
        return;
    }

    const int *bt = block_tables + (size_t)seq * (size_t)max_blocks;
    const int n_tiles = (end - start + TILE - 1) / TILE;
    /* prologue: tiles 0 .. STAGES-2 in flight (one commit group per tile, empty past the end) */
#pragma unroll
    for (int k = 0; k < ZP_ATTN_STAGES - 1; k++) {
        if (k < n_tiles) zp_attn_load_tile(kv_s[k], kc, vc, bt, hkv, g, start + k * TILE, end, r, c);
        zp_cp_commit();
    }

    /* this thread's slice of the G query vectors, fp32 */
    float qf[G][ZP_ATTN_VEC];
#pragma unroll
    for (int j = 0; j < G; j++) {
        const uint4 w = *(const uint4 *)(q + ((size_t)t * (size_t)hq + (size_t)(g * G + j)) * D +
                                         (size_t)(c * ZP_ATTN_VEC));
        zp_unpack8(w, qf[j]);
    }

    float m[G], l[G], acc[G][ZP_ATTN_VEC];
#pragma unroll
    for (int j = 0; j < G; j++) {
        m[j] = ZP_NEG_INF;
        l[j] = 0.0f;
#pragma unroll
        for (int e = 0; e < ZP_ATTN_VEC; e++) acc[j][e] = 0.0f;
    }

    for (int it = 0; it < n_tiles; it++) {
        const int p0 = start + it * TILE;
        {
            /* refill the stage read in the previous iteration (by this thread only) */
            const int nx = it + ZP_ATTN_STAGES - 1;
            if (nx < n_tiles)
                zp_attn_load_tile(kv_s[nx % ZP_ATTN_STAGES], kc, vc, bt, hkv, g, start + nx * TILE, end, r, c);
            zp_cp_commit();
            zp_cp_wait<ZP_ATTN_STAGES - 1>(); /* tile it has landed */
        }
        const unsigned short(*ks)[D] = kv_s[it % ZP_ATTN_STAGES][0];
        const unsigned short(*vs)[D] = kv_s[it % ZP_ATTN_STAGES][1];

        /* scores of this thread's RPT rows for the G heads */
        float sc[RPT][G];
#pragma unroll
        for (int i = 0; i < RPT; i++) {
            float kf[ZP_ATTN_VEC];
            zp_unpack8(*(const uint4 *)&ks[r + i * RPI][c * ZP_ATTN_VEC], kf);
#pragma unroll
            for (int j = 0; j < G; j++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < ZP_ATTN_VEC; e++) d = fmaf(qf[j][e], kf[e], d);
                sc[i][j] = d;
            }
        }
        if constexpr (RS) {
            /* reduce-scatter over the TPR lanes (halving exchange: N/2 + N/4 + ... shuffles
             * instead of N*log2(TPR)), then all-gather through this row group's shared row */
            float *v = &sc[0][0]; /* flat index n = i*G + j */
            zp_reduce_scatter<TPR / 2, N, TPR>(v, c);
            /* lane c now holds elements [base, base + NF) of the row group's N sums */
            constexpr int NF = N >= TPR ? N / TPR : 1;
            const int base = N >= TPR ? c * (N / TPR) : c / (TPR / N);
            float *row = sc_s[it & 1][r];
            if (N >= TPR || c % (TPR / N) == 0) {
#pragma unroll
                for (int k = 0; k < NF; k++) row[base + k] = v[k];
            }
            __syncwarp();
#pragma unroll
            for (int k = 0; k < N; k += 4) {
                const float4 x = *(const float4 *)&row[k];
                v[k] = x.x; v[k + 1] = x.y; v[k + 2] = x.z; v[k + 3] = x.w;
            }
        } else {
#pragma unroll
            for (int o = TPR / 2; o > 0; o >>= 1)
#pragma unroll
                for (int i = 0; i < RPT; i++)
#pragma unroll
                    for (int j = 0; j < G; j++) sc[i][j] += __shfl_xor_sync(0xffffffffu, sc[i][j], o);
        }
#pragma unroll
        for (int i = 0; i < RPT; i++) {
            const bool valid = p0 + r + i * RPI < end;
#pragma unroll
            for (int j = 0; j < G; j++) sc[i][j] = valid ? sc[i][j] * scale : ZP_NEG_INF;
        }

        /* online softmax update, one rescale per head per tile */
#pragma unroll
        for (int j = 0; j < G; j++) {
            float mx = m[j];
#pragma unroll
            for (int i = 0; i < RPT; i++) mx = fmaxf(mx, sc[i][j]);
            const float ms = mx == ZP_NEG_INF ? 0.0f : mx;
            const float corr = __expf(m[j] - ms); /* exp(-inf) = 0 when m was -inf */
            float sum = 0.0f;
#pragma unroll
            for (int i = 0; i < RPT; i++) {
                sc[i][j] = __expf(sc[i][j] - ms); /* masked rows: exactly 0 */
                sum += sc[i][j];
            }
            l[j] = l[j] * corr + sum;
            m[j] = mx;
#pragma unroll
            for (int e = 0; e < ZP_ATTN_VEC; e++) acc[j][e] *= corr;
        }

        /* o += p * v */
#pragma unroll
        for (int i = 0; i < RPT; i++) {
            float vf[ZP_ATTN_VEC];
            zp_unpack8(*(const uint4 *)&vs[r + i * RPI][c * ZP_ATTN_VEC], vf);
#pragma unroll
            for (int j = 0; j < G; j++)
#pragma unroll
                for (int e = 0; e < ZP_ATTN_VEC; e++) acc[j][e] = fmaf(sc[i][j], vf[e], acc[j][e]);
        }
    }

    /* merge the RPI row-group states */
    zp_cp_wait<0>(); /* only empty groups can remain; keep the ring idle before reuse */
    __syncthreads(); /* all reads of kv_s done before it is reused as red_o */
    float *red_o = (float *)&kv_s[0][0][0][0]; /* [RPI][G][D] */
#pragma unroll
    for (int j = 0; j < G; j++) {
        float4 *dst = (float4 *)&red_o[(r * G + j) * D + c * ZP_ATTN_VEC];
        dst[0] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
        dst[1] = make_float4(acc[j][4], acc[j][5], acc[j][6], acc[j][7]);
    }
    if (c == 0) {
#pragma unroll
        for (int j = 0; j < G; j++) {
            red_m[r][j] = m[j];
            red_l[r][j] = l[j];
        }
    }
    __syncthreads();
    if (tid < G) {
        const int j = tid;
        float M = ZP_NEG_INF, L = 0.0f;
        for (int k = 0; k < RPI; k++) M = fmaxf(M, red_m[k][j]);
        for (int k = 0; k < RPI; k++) {
            const float mk = red_m[k][j];
            const float f = (mk == ZP_NEG_INF) ? 0.0f : __expf(mk - M);
            red_f[k][j] = f;
            L += red_l[k][j] * f;
        }
        part_ml[(pbase + (size_t)j * (size_t)n_split) * 2 + 0] = M;
        part_ml[(pbase + (size_t)j * (size_t)n_split) * 2 + 1] = L;
    }
    __syncthreads();
    for (int idx = tid; idx < G * D; idx += ZP_ATTN_THREADS) {
        const int j = idx / D, d = idx % D;
        float o = 0.0f;
#pragma unroll
        for (int k = 0; k < RPI; k++) o = fmaf(red_o[(k * G + j) * D + d], red_f[k][j], o);
        part_o[(pbase + (size_t)j * (size_t)n_split) * D + (size_t)d] = o;
    }
}

/* zp_attn_merge: a warp per (row, query head), ZP_MERGE_HEADS heads per block. Lane s holds
 * split s's (m, l) (splits in groups of 32); the maximum, the weights exp(m_s - M) and
 * L = sum l_s * w_s come from warp reductions (fixed trees: an empty split adds 0 and changes no
 * bit), then each lane accumulates D/32 columns of o over the splits in order, an empty one
 * adding 0 * 0. A thread per column looping over the splits left the
 * kernel waiting on one dependent load after another. */
#define ZP_MERGE_HEADS 4 /* drv/attn_abi.h */

extern "C" __global__ void __launch_bounds__(32 * ZP_MERGE_HEADS)
    zp_attn_merge(const float *__restrict__ part_o, const float *__restrict__ part_ml,
                  const int *__restrict__ n_tokens, int hq, int n_split,
                  unsigned short *__restrict__ out) {
    zp_grid_dep();
    constexpr int D = ZP_HEAD_DIM, C = D / 32;
    const int h = blockIdx.x * ZP_MERGE_HEADS + (threadIdx.x >> 5), t = blockIdx.y,
              lane = threadIdx.x & 31;
    if (t >= *n_tokens || h >= hq) return; /* the whole warp */
    const size_t base = ((size_t)t * (size_t)hq + (size_t)h) * (size_t)n_split;
    float M = ZP_NEG_INF;
    for (int s0 = 0; s0 < n_split; s0 += 32)
        if (s0 + lane < n_split) M = fmaxf(M, part_ml[(base + s0 + lane) * 2]);
    M = warp_max(M);
    float o[C];
#pragma unroll
    for (int c = 0; c < C; c++) o[c] = 0.0f;
    float L = 0.0f;
    if (M != ZP_NEG_INF) {
        for (int s0 = 0; s0 < n_split; s0 += 32) {
            const int s = s0 + lane;
            const float ms = s < n_split ? part_ml[(base + s) * 2] : ZP_NEG_INF;
            const float w = ms == ZP_NEG_INF ? 0.0f : __expf(ms - M);
            L += warp_sum(w == 0.0f ? 0.0f : part_ml[(base + s) * 2 + 1] * w);
            const int n = min(32, n_split - s0);
#pragma unroll 4
            for (int k = 0; k < n; k++) {
                const float wk = __shfl_sync(0xffffffffu, w, k);
                const float *po = part_o + (base + s0 + k) * D + lane;
                /* an empty split's o was never written: its load is predicated off, not branched
                 * around, so the loads of consecutive splits are in flight together */
#pragma unroll
                for (int c = 0; c < C; c++) o[c] = fmaf(wk != 0.0f ? po[32 * c] : 0.0f, wk, o[c]);
            }
        }
    }
    unsigned short *dst = out + ((size_t)t * (size_t)hq + (size_t)h) * D + lane;
#pragma unroll
    for (int c = 0; c < C; c++) dst[32 * c] = zp_f2bf(L > 0.0f ? o[c] / L : 0.0f);
}

/* ---- zp_attn_decode_mma: zp_attn_partial on tensor cores ----
 *
 * The same contract as zp_attn_partial (signature, grid (n_split, hkv, n_rows_cap or the
 * number of rows listed), 128 threads, rows, the partials it writes), for the backend's
 * decode rows when the configuration selects it (conf key attention_kernel); one engine uses
 * one of the two for every such row, so a row's bits never depend on the batch. Dynamic shared memory:
 * ZP_DM_STAGES * 2 * ZP_DM_SK * D * 2 bytes (drv/attn_abi.h: 96 KiB at D 128, 48 KiB at D 64),
 * above 48 KiB, so the function needs CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
 *
 * WHY. zp_attn_partial spends a score FMA and a P·V FMA per head on every K/V element and
 * reduces each score across lanes: with G = 8 heads per CTA that CUDA-core work, not memory,
 * bounds it (docs/BENCHMARKS.md: 1.8x GQA 4's time at the same bytes). Here the G query
 * heads are the M rows of mma.sync m16n8k16 (rows G..15 zero), so both products cost a few
 * tensor-core instructions per 16 keys whatever G is, and the kernel is left with moving
 * bytes: a CTA-wide cp.async ring of ZP_DM_STAGES stages of SK = 64 keys keeps
 * (STAGES - 1) * 64 K and V rows in flight per CTA.
 *
 * ALGORITHM. Stage i holds keys [start + 64i, start + 64i + 64) of the CTA's split (K and V
 * rows swizzled as in prefill.cu); warp w computes keys 16w .. 16w+15 of every stage with its
 * own online softmax state (FlashAttention-2's loop, base 2, P rounded to bf16 for the mma
 * and l summed from the same rounded values, as prefill.cu); one __syncthreads per stage
 * both publishes the stage's copies and frees the slot the next copies overwrite. Keys past
 * the range end are zero-filled and their scores -inf (p exactly 0). At the end the four warp
 * states merge through shared memory (exact log-sum-exp) into the partial, m in natural-log
 * units. Rounding differs from zp_attn_partial's (bf16 P, ex2.approx): the two kernels are
 * alternatives, never mixed for one row. */

#define ZP_DM_WARPS 4
#define ZP_DM_KW 16                               /* keys per warp per stage (one mma k-step) */
#define ZP_DM_SK (ZP_DM_WARPS * ZP_DM_KW)         /* keys per stage */
#ifndef ZP_DM_STAGES
#define ZP_DM_STAGES (ZP_HEAD_DIM == 128 ? 3 : 4) /* drv/attn_abi.h: attn_mma_stages */
#endif

static_assert(ZP_HEAD_DIM == 64 || ZP_HEAD_DIM == 128, "tensor-core decode: head dim 64 or 128");
static_assert(ZP_DM_STAGES >= 2, "the ring needs two stages");
static_assert(ZP_DM_WARPS * ZP_GQA * ZP_HEAD_DIM * 4 <= ZP_DM_STAGES * 2 * ZP_DM_SK * ZP_HEAD_DIM * 2,
              "the warp states must fit in the ring");

extern "C" __global__ void __launch_bounds__(ZP_ATTN_THREADS)
zp_attn_decode_mma(const bf16 *__restrict__ q, const bf16 *__restrict__ kc,
                   const bf16 *__restrict__ vc, const int *__restrict__ tok_seq,
                   const int *__restrict__ tok_kv_idx, const int *__restrict__ block_tables,
                   const int *__restrict__ n_tokens, const int *__restrict__ rows, int max_blocks,
                   int hkv, float scale, int chunk, int n_split, float *__restrict__ part_o,
                   float *__restrict__ part_ml) {
    zp_grid_dep();
    constexpr int D = ZP_HEAD_DIM, G = ZP_GQA, SK = ZP_DM_SK, ST = ZP_DM_STAGES;
    constexpr int KQ = D / 16; /* k16 steps over the head dim */
    constexpr int ND = D / 8;  /* n8 output tiles over the head dim */
    extern __shared__ __align__(128) bf16 dm_s[]; /* [stage][K, V][key row, swizzled] */
    __shared__ float red_m[ZP_DM_WARPS][G], red_l[ZP_DM_WARPS][G], red_f[ZP_DM_WARPS][G];

    if ((int)blockIdx.z >= *n_tokens) return;
    const int s = blockIdx.x, g = blockIdx.y, t = rows ? rows[blockIdx.z] : (int)blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int gid = lane >> 2, tq = lane & 3; /* mma fragment row group and column pair */
    const int hq = hkv * G, seq = tok_seq[t], start = s * chunk;
    int end = start; /* empty unless a real row with indices in this chunk */
    if (seq >= 0) {
        const int len = tok_kv_idx[t] + 1;
        end = len < start + chunk ? len : start + chunk;
    }
    /* (t, h = g*G + j, s) lives at partial index pbase + j*n_split */
    const size_t pbase = ((size_t)t * (size_t)hq + (size_t)g * G) * (size_t)n_split + (size_t)s;
    if (start >= end) { /* the merge skips it by its -inf maximum; its part_o is never read */
        if (tid < G) {
            part_ml[(pbase + (size_t)tid * (size_t)n_split) * 2 + 0] = ZP_NEG_INF;
            part_ml[(pbase + (size_t)tid * (size_t)n_split) * 2 + 1] = 0.0f;
        }
        return;
    }

    const int *bt = block_tables + (size_t)seq * (size_t)max_blocks;
    const int n_st = (end - start + SK - 1) / SK;
    int blk[zp_kv_tile<SK, ZP_ATTN_THREADS>::LPT];
    zp_kv_blocks<SK, ZP_ATTN_THREADS>(blk, bt, start, end, tid);
    /* prologue: stages 0 .. ST-2 in flight (one commit group each, empty past the end) */
#pragma unroll
    for (int k = 0; k < ST - 1; k++) {
        if (k < n_st) {
            bf16 *st = dm_s + (size_t)k * 2 * SK * D;
            zp_kv_load<SK, ZP_ATTN_THREADS>(st, st + SK * D, kc, vc, blk, hkv, g, start + k * SK, end, tid);
            zp_kv_blocks<SK, ZP_ATTN_THREADS>(blk, bt, start + (k + 1) * SK, end, tid);
        }
        zp_cp_commit();
    }

    /* q fragments (A operand): row gid is head gid of the group (zero for gid >= G), rows
     * gid+8 are unused (zero) */
    unsigned qa[KQ][4];
    const bf16 *qr = gid < G ? q + ((size_t)t * (size_t)hq + (size_t)(g * G + gid)) * D : nullptr;
#pragma unroll
    for (int k = 0; k < KQ; k++) {
        qa[k][0] = qr ? *(const unsigned *)(qr + 16 * k + 2 * tq) : 0u;
        qa[k][2] = qr ? *(const unsigned *)(qr + 16 * k + 8 + 2 * tq) : 0u;
        qa[k][1] = qa[k][3] = 0u;
    }

    float o[ND][4], mr = ZP_NEG_INF, lr = 0.0f;
#pragma unroll
    for (int n = 0; n < ND; n++)
#pragma unroll
        for (int x = 0; x < 4; x++) o[n][x] = 0.0f;
    const float c2 = scale * 1.4426950408889634f; /* scores in base-2 units */
    const int l7 = lane & 7, mat = lane >> 3;      /* ldmatrix: row in matrix, matrix */

    for (int it = 0; it < n_st; it++) {
        zp_cp_wait<ST - 2>(); /* this thread's copies of stage it have landed */
        __syncthreads();      /* everyone's have, and stage it-1's slot is free */
        const int nx = it + ST - 1;
        if (nx < n_st) {
            bf16 *st = dm_s + (size_t)(nx % ST) * 2 * SK * D;
            zp_kv_load<SK, ZP_ATTN_THREADS>(st, st + SK * D, kc, vc, blk, hkv, g, start + nx * SK, end, tid);
            if (nx + 1 < n_st) zp_kv_blocks<SK, ZP_ATTN_THREADS>(blk, bt, start + (nx + 1) * SK, end, tid);
        }
        zp_cp_commit();
        const int p0 = start + it * SK + ZP_DM_KW * w; /* this warp's first key */
        if (p0 >= end) continue;

        const bf16 *st = dm_s + (size_t)(it % ST) * 2 * SK * D;
        const unsigned ks = (unsigned)__cvta_generic_to_shared(st);
        const unsigned vs = (unsigned)__cvta_generic_to_shared(st + SK * D);
        const int r0 = ZP_DM_KW * w; /* this warp's first key row in the stage */

        /* S = Q K^T over the warp's 16 keys: two n8 tiles, each summed over the head dim in
         * two accumulators (even and odd k-steps) so the dependent mma chains are half as long */
        float sc[2][4], sc2[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
#pragma unroll
            for (int x = 0; x < 4; x++) sc[nt][x] = sc2[nt][x] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KQ / 2; kk++) {
                unsigned b[4];
                zp_ldm4(b, ks + zp_swz_off(r0 + nt * 8 + l7, 4 * kk + mat));
                zp_mma_bf16(sc[nt], qa[2 * kk], b[0], b[1]);
                zp_mma_bf16(sc2[nt], qa[2 * kk + 1], b[2], b[3]);
            }
#pragma unroll
            for (int x = 0; x < 2; x++) sc[nt][x] += sc2[nt][x];
        }
        /* mask, scale, online softmax of row gid (registers 0, 1 of each tile) */
        float mx = ZP_NEG_INF;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float x = p0 + nt * 8 + 2 * tq + e < end ? sc[nt][e] * c2 : ZP_NEG_INF;
                sc[nt][e] = x;
                mx = fmaxf(mx, x);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(mr, mx);
        const float corr = mn == mr ? 1.0f : zp_ex2(mr - mn); /* exactly 1 when unchanged */
        const float msub = mn == ZP_NEG_INF ? 0.0f : mn;
        mr = mn;
        /* P in bf16 as the A operand of P V (rows gid+8 zero) */
        unsigned pa[4] = {0u, 0u, 0u, 0u};
        float ls = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            const unsigned pk = zp_pack_bf16x2(zp_ex2(sc[nt][0] - msub), zp_ex2(sc[nt][1] - msub));
            pa[2 * nt] = pk;
            ls += __uint_as_float(pk << 16);
            ls += __uint_as_float(pk & 0xffff0000u);
        }
        lr = lr * corr + ls;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            o[n][0] *= corr;
            o[n][1] *= corr;
        }
        /* O += P V: ldmatrix.trans x4 gives the B fragments of two n8 tiles of D */
#pragma unroll
        for (int n2 = 0; n2 < ND / 2; n2++) {
            unsigned b[4];
            zp_ldm4t(b, vs + zp_swz_off(r0 + 8 * (mat & 1) + l7, 2 * n2 + (mat >> 1)));
            zp_mma_bf16(o[2 * n2], pa, b[0], b[1]);
            zp_mma_bf16(o[2 * n2 + 1], pa, b[2], b[3]);
        }
    }

    /* merge the warp states: l over the quad, then through shared memory (the ring) */
    float l = lr + __shfl_xor_sync(0xffffffffu, lr, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    zp_cp_wait<0>(); /* only empty groups can remain; keep the ring idle before reuse */
    __syncthreads(); /* every warp's reads of the ring done */
    float *red_o = (float *)dm_s; /* [WARPS][G][D] */
    if (gid < G) {
        float *dst = red_o + (size_t)(w * G + gid) * D + 2 * tq;
#pragma unroll
        for (int n = 0; n < ND; n++) *(float2 *)(dst + 8 * n) = make_float2(o[n][0], o[n][1]);
        if (tq == 0) {
            red_m[w][gid] = mr;
            red_l[w][gid] = l;
        }
    }
    __syncthreads();
    if (tid < G) {
        const int j = tid;
        float M = ZP_NEG_INF, L = 0.0f;
        for (int k = 0; k < ZP_DM_WARPS; k++) M = fmaxf(M, red_m[k][j]);
        for (int k = 0; k < ZP_DM_WARPS; k++) {
            const float mk = red_m[k][j];
            const float f = mk == ZP_NEG_INF ? 0.0f : zp_ex2(mk - M);
            red_f[k][j] = f;
            L += red_l[k][j] * f;
        }
        part_ml[(pbase + (size_t)j * (size_t)n_split) * 2 + 0] =
            M == ZP_NEG_INF ? ZP_NEG_INF : M * 0.6931471805599453f;
        part_ml[(pbase + (size_t)j * (size_t)n_split) * 2 + 1] = L;
    }
    __syncthreads();
    for (int idx = tid; idx < G * D; idx += ZP_ATTN_THREADS) {
        const int j = idx / D, d = idx % D;
        float acc = 0.0f;
#pragma unroll
        for (int k = 0; k < ZP_DM_WARPS; k++) acc = fmaf(red_o[(k * G + j) * D + d], red_f[k][j], acc);
        part_o[(pbase + (size_t)j * (size_t)n_split) * D + (size_t)d] = acc;
    }
}
