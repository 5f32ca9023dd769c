/* compress_select.cu: the GPU twins of the compression ops cmp_redundancy, cmp_select and
 * cmp_compact (drv/backend.h; spec sections 5.5-6; docs/COMPRESSION.md "The compression ops"),
 * compiled at run time by NVRTC. Their oracle is drv/cpu_compress.c (red_rows, sel_rows,
 * compact_rows); tests/test_cuda_cmp_select.c compares them.
 *
 * COMPILE-TIME CONSTANTS (-D from the driver; the #ifndef defaults are for standalone builds):
 *   ZP_HEAD_DIM D (a multiple of 8, at most 512; zipage compiles 64 and 128) and ZP_BLOCK_SIZE
 *   BS (a power of two >= 16). Nothing here depends on the query-head group.
 *
 * LAYOUT (device pointers; bf16 stored as unsigned short):
 *   K, V caches of a layer   bf16 [num_blocks][hkv][BS][D], one base per layer in kc_layers /
 *                            vc_layers (u64 device addresses, indexed by global layer number)
 *   score cache C            f32 [num_blocks][hkv][BS], bases in cc_layers
 *   scores                   f32 [n_layers][n_jobs_cap][hkv][max_pos]; layer l at
 *                            scores + l * score_lstride (floats)
 *   keep                     int [n_layers][n_jobs_cap][hkv][max_keep]; + l * keep_lstride
 *   work (redundancy only)   f32 [n_layers][n_jobs_cap][hkv][2][max_pos]; + l * work_lstride:
 *                            r[max_pos] then inv[max_pos], the CPU op's layout and contents
 *   n_jobs                   int in device memory: CTAs of jobs >= *n_jobs exit at once and
 *                            touch nothing, so a padded grid serves any batch
 *   n_blocks, kv_len, n_keep int [n_jobs]; src, dst int [n_jobs][max_blocks] (be_cjobs)
 * A job's position p lives at slot src[p / BS] * BS + p % BS (per kv head h: element
 * (src[p / BS] * hkv + h) * BS + p % BS of C, times D for K and V); target index j of a
 * compaction at dst[j / BS] likewise.
 *
 * LAUNCH RULES. Every kernel: grid (hkv, n_jobs_cap, n_layers), block ZP_CS_THREADS (256), no
 * dynamic shared memory (static only, under the 48 KiB default at every D / BS; no opt-in).
 * CTA (h, b, l) owns (layer layer0 + l, job b, kv head h); the grid's z covers layers
 * layer0 .. layer0 + n_layers - 1 (n_layers = 1 is the per-layer call); n_jobs_cap and
 * n_layers <= 65535. Order, per layer or for all layers at once, on one stream: cmp_score
 * (elsewhere), zp_cmp_redundancy, zp_cmp_select, zp_cmp_compact.
 *   zp_cmp_redundancy(scores, score_lstride, work, work_lstride, kc_layers, layer0, n_jobs,
 *     kv_len, src, max_blocks, max_pos, hkv, mode, lambda, temperature, threshold)
 *     mode: be_cparams.redundancy (0 lightning, 1 raw, 2 off: returns at once, so a graph can
 *     launch it unconditionally). Static shared memory 25-34 KiB.
 *   zp_cmp_select(keep, keep_lstride, scores, score_lstride, n_jobs, n_blocks, kv_len, n_keep,
 *     protect, max_pos, max_keep, hkv, qcl, sink_len, recent)   1.1 KiB static shared memory, no
 *     scratch.
 *   zp_cmp_compact(kc_layers, vc_layers, cc_layers, layer0, keep, keep_lstride, n_jobs,
 *     n_keep, src, dst, max_blocks, max_keep, hkv)   no shared memory.
 * Caller rules (the CPU op's): kv_len <= n_blocks * BS <= max_pos, 0 <= n_keep <= n_blocks *
 * BS, n_keep <= max_keep, keep rows strictly ascending (cmp_select's); temperature > 0; no two
 * jobs share a block they write; a block that is both a source and a target of a compaction
 * sits at the SAME index of src and dst (in place, or fresh leading blocks for shared ones).
 *
 * ZP_CMP_REDUNDANCY. R as defined in drv/backend.h (closed form): for each column c,
 *   m*(c) = the largest row m != c (same block for lightning) with Sim[m][c] > threshold,
 *   r[m] = sum of Sim[m][c] over the allowed c != m with m*(c) != m,
 * bit for bit as the CPU computes it, which fixes the rounding of every step:
 *   - 1/|K| and Sim[m][c] = (dot(K[m], K[c]) * inv[max(m,c)]) * inv[min(m,c)] use the CPU's
 *     f32 dot (8 interleaved partial sums s[j] over elements 8t+j, t ascending, combined as
 *     ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))), IEEE sqrt and division, and __f*_rn intrinsics so
 *     -fmad=true cannot fuse a product into a sum (the CPU is built without contraction);
 *   - r[m] is summed sequentially over c descending, the order in which red_rows adds it.
 * So work (r, and inv with the sign bit marking "column resolved") equals the CPU's byte for
 * byte, and so does every threshold decision. The softmax then differs only by expf (CUDA's
 * <= 2 ulp, glibc's <= 1) and the order of its sum (a block tree here, sequential on the CPU;
 * either is within (n - 1) 2^-24 of the exact sum of n positive terms), and S's last rounding
 * may then go either way, so with n = kv_len
 *   |S_gpu - S_cpu| <= (2n + 16) 2^-24 (1 - lambda) R + 2^-22 |S|   (the test's bound).
 * Algorithm: positions are cut into tiles of T = min(BS, 64) (32 / 16 for D > 128 / 256, so
 * shared memory stays under 48 KiB); tile pairs (I, J), J <= I (J in I's block for lightning)
 * run in the order I descending, J descending from I. That is red_rows' pair order at tile
 * granularity: the entries of a column in tile X arrive in descending row order (rows of a
 * higher tile Y through pair (Y, X), "direct"; then the diagonal pair (X, X); then rows of a
 * lower tile J through pair (X, J), "transposed"), so the first pair holding an
 * above-threshold row resolves m*(c) (its largest such row), and likewise every row's entries
 * arrive in descending column order. Per pair: the key tiles are
 * staged in shared memory (bf16 rows padded to D + 2, conflict-free row-strided reads), each
 * of the 16 x 16 threads computes (T/16)^2 dots of the tile (rows ty + 16u, columns tx + 16v),
 * the tile of Sim goes to shared memory over the column keys, then T threads resolve the
 * tile's columns (and T more the row tile's columns, transposed), then T (+ T) threads add
 * their row's entries to r. inv and r live in work (global), so N is unbounded; the
 * __syncthreads between phases order those global accesses inside the CTA. Off-diagonal pairs
 * serve both directions, so the CTA computes about N^2/2 (raw) or N*BS/2 (lightning) dots,
 * like the CPU. Finally the row's softmax: max and sum by block reductions (fixed tree).
 *
 * ZP_CMP_SELECT. Protected keys (+inf for positions 0 .. k - 1, k = max(sink_len, protect[b]),
 * and kv_len - R .. kv_len - 1, R = max(qcl, min(recent, (n_keep - k) / 2)); -inf for
 * p >= kv_len) map to 32-bit order-preserving keys
 * (sel_rows' score_key: -0 == +0, NaN below -inf); a radix select, 4 passes of 8 bits MSB first,
 * finds the threshold key T and how many of the keys equal to T are kept (the latest ones).
 * Histograms are shared-memory atomics aggregated per warp with __match_any_sync (integer counts:
 * the result does not depend on timing); the digit is found by one warp's scan. One ascending pass
 * writes the kept positions: a position's output index is (keys > T before it) + max(0, (keys == T
 * before it) - dropped), counted with ballots and a scan over the 8 warps per tile of 256
 * positions. Exactly the CPU's keep rows on the same scores.
 *
 * ZP_CMP_COMPACT. A CTA walks its keep row in chunks of CH = 4 * floor(1024 / D) kept
 * tokens: every thread loads its 16-byte piece of the chunk's K / V rows (and C) into
 * registers, one __syncthreads, then stores them to their targets (a token that does not move
 * is skipped).
 * Safety: a store to target j lands on a source slot only when that slot is source position j
 * itself (same-index rule), which is kept at an index <= j (keep[i] >= i, ascending): already
 * read, in this chunk (before the barrier) or an earlier one. A later chunk's sources are
 * positions keep[i] > j for every j stored so far, so they are never overwritten before being
 * read. CTAs touch disjoint memory: heads of a block are distinct rows, jobs own the blocks
 * they write, layers have their own caches. Byte for byte the CPU's result.
 *
 * THREADING. One CTA per (layer, job, kv head), each output element written by one thread in
 * a fixed order, so results are deterministic and independent of the grid's padding.
 */
#include "common.cuh"

#define ZP_CS_THREADS 256
#define ZP_CS_NEG_INF __int_as_float(0xff800000)

static_assert(ZP_HEAD_DIM % 8 == 0 && ZP_HEAD_DIM <= 512, "head dim: a multiple of 8, <= 512");
static_assert(ZP_BLOCK_SIZE >= 16 && (ZP_BLOCK_SIZE & (ZP_BLOCK_SIZE - 1)) == 0,
              "block size must be a power of two >= 16");

/* Element index of (position p, kv head h) in a [blocks][hkv][BS] array through table bt. */
static __device__ __forceinline__ size_t zp_cs_slot(const int *bt, int p, int hkv, int h) {
    return ((size_t)bt[p / ZP_BLOCK_SIZE] * (size_t)hkv + (size_t)h) * ZP_BLOCK_SIZE +
           (size_t)(p % ZP_BLOCK_SIZE);
}

/* ---- zp_cmp_redundancy ---- */

#define ZP_RED_TMAX (ZP_HEAD_DIM <= 128 ? 64 : ZP_HEAD_DIM <= 256 ? 32 : 16)
#define ZP_RED_T (ZP_BLOCK_SIZE < ZP_RED_TMAX ? ZP_BLOCK_SIZE : ZP_RED_TMAX) /* tile positions */
#define ZP_RED_U (ZP_RED_T / 16)      /* rows (and columns) of the tile per thread */
#define ZP_RED_LD (ZP_HEAD_DIM + 2)   /* bf16 per staged key row: odd word stride */
#define ZP_RED_KEYS (ZP_RED_T * ZP_RED_LD * 2)          /* bytes of one key tile */
#define ZP_RED_SIM (ZP_RED_T * (ZP_RED_T + 1) * 4)      /* bytes of one Sim tile */
#define ZP_RED_B (ZP_RED_KEYS > ZP_RED_SIM ? ZP_RED_KEYS : ZP_RED_SIM)

static_assert(ZP_RED_KEYS + ZP_RED_B + ZP_RED_T * 16 + 128 <= 48 * 1024,
              "redundancy tiles must fit the 48 KiB of static shared memory");

static __device__ __forceinline__ float zp_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float zp_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

/* The CPU's 8-partial f32 dot of a row with itself (dot_f32 order, no fused multiply-add). */
static __device__ float zp_self_dot(const bf16 *row) {
    float s[8];
#pragma unroll
    for (int j = 0; j < 8; j++) s[j] = 0.f;
    for (int t = 0; t < ZP_HEAD_DIM / 8; t++) {
        const uint4 w = ((const uint4 *)row)[t];
        const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float a = zp_lo(u[i]), b = zp_hi(u[i]);
            s[2 * i] = __fadd_rn(s[2 * i], __fmul_rn(a, a));
            s[2 * i + 1] = __fadd_rn(s[2 * i + 1], __fmul_rn(b, b));
        }
    }
    return __fadd_rn(__fadd_rn(__fadd_rn(s[0], s[1]), __fadd_rn(s[2], s[3])),
                     __fadd_rn(__fadd_rn(s[4], s[5]), __fadd_rn(s[6], s[7])));
}

/* Stages the keys of positions p0 .. p0+T-1 (zeros at and past kvl) into a tile, and their
 * |inv| into iv. */
static __device__ __forceinline__ void zp_red_load(bf16 *tile, float *iv, const bf16 *kc,
                                                   const int *bt, int hkv, int h,
                                                   const float *inv, int p0, int kvl) {
    constexpr int V = ZP_HEAD_DIM / 8;
    for (int i = threadIdx.x; i < ZP_RED_T * V; i += ZP_CS_THREADS) {
        const int rl = i / V, c = i % V, p = p0 + rl;
        uint4 w = {0u, 0u, 0u, 0u};
        if (p < kvl) w = *(const uint4 *)(kc + zp_cs_slot(bt, p, hkv, h) * ZP_HEAD_DIM + c * 8);
        unsigned *d = (unsigned *)(tile + rl * ZP_RED_LD + c * 8); /* rows are 4-byte aligned */
        d[0] = w.x, d[1] = w.y, d[2] = w.z, d[3] = w.w;
    }
    for (int i = threadIdx.x; i < ZP_RED_T; i += ZP_CS_THREADS)
        iv[i] = p0 + i < kvl ? fabsf(inv[p0 + i]) : 0.f;
}

/* dot(A row ty + 16u, B row tx + 16v) for the thread's U x U outputs, in the CPU's order: the
 * partials s[2q] and s[2q+1] (elements 8t+2q, 8t+2q+1: one 32-bit load) run together, then
 * fold into ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)) as they complete, so 4 values per output are
 * live instead of 8. */
static __device__ __forceinline__ void zp_red_dots(const bf16 *A, const bf16 *B, int ty, int tx,
                                                   float out[ZP_RED_U][ZP_RED_U]) {
    constexpr int U = ZP_RED_U;
    float e0[U][U], e1[U][U];
#pragma unroll
    for (int q = 0; q < 4; q++) {
        float sa[U][U], sb[U][U];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int v = 0; v < U; v++) sa[u][v] = 0.f, sb[u][v] = 0.f;
#pragma unroll 4
        for (int t = 0; t < ZP_HEAD_DIM / 8; t++) {
            const int k = 8 * t + 2 * q;
            unsigned a[U], b[U];
#pragma unroll
            for (int u = 0; u < U; u++) a[u] = *(const unsigned *)(A + (ty + 16 * u) * ZP_RED_LD + k);
#pragma unroll
            for (int v = 0; v < U; v++) b[v] = *(const unsigned *)(B + (tx + 16 * v) * ZP_RED_LD + k);
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int v = 0; v < U; v++) {
                    sa[u][v] = __fadd_rn(sa[u][v], __fmul_rn(zp_lo(a[u]), zp_lo(b[v])));
                    sb[u][v] = __fadd_rn(sb[u][v], __fmul_rn(zp_hi(a[u]), zp_hi(b[v])));
                }
        }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int v = 0; v < U; v++) {
                const float p = __fadd_rn(sa[u][v], sb[u][v]);
                if (q == 0) e0[u][v] = p;
                else if (q == 1) e0[u][v] = __fadd_rn(e0[u][v], p);
                else if (q == 2) e1[u][v] = p;
                else out[u][v] = __fadd_rn(e0[u][v], __fadd_rn(e1[u][v], p));
            }
    }
}

static __device__ __forceinline__ float zp_block_max(float v) {
    __shared__ float part[32];
    v = warp_max(v);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (!lane) part[w] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : ZP_CS_NEG_INF;
    return warp_max(v);
}

extern "C" __global__ void __launch_bounds__(ZP_CS_THREADS, 2)
zp_cmp_redundancy(float *__restrict__ scores, long long score_lstride, float *__restrict__ work,
                  long long work_lstride, const unsigned long long *__restrict__ kc_layers,
                  int layer0, const int *__restrict__ n_jobs, const int *__restrict__ kv_len,
                  const int *__restrict__ src, int max_blocks,
                  int max_pos, int hkv, int mode, float lambda, float temperature,
                  float threshold) {
    zp_grid_dep();
    constexpr int T = ZP_RED_T, U = ZP_RED_U, TP = ZP_RED_T + 1;
    __shared__ __align__(16) bf16 s_a[ZP_RED_T * ZP_RED_LD];      /* keys of row tile I */
    __shared__ __align__(16) unsigned char s_b[ZP_RED_B];         /* keys of J, then Sim */
    __shared__ float inv_a[ZP_RED_T], inv_b[ZP_RED_T];
    __shared__ int mst_a[ZP_RED_T], mst_b[ZP_RED_T]; /* m* found in this pair (-1: none) */

    const int h = blockIdx.x, b = blockIdx.y, l = blockIdx.z, tid = threadIdx.x;
    if (mode == 2 || b >= *n_jobs) return;
    const int kvl = kv_len[b];
    if (kvl <= 0) return;
    const bf16 *kc = (const bf16 *)kc_layers[layer0 + l];
    const int *bt = src + (size_t)b * (size_t)max_blocks;
    const size_t row = (size_t)b * (size_t)hkv + (size_t)h;
    float *S = scores + (size_t)l * (size_t)score_lstride + row * (size_t)max_pos;
    float *r = work + (size_t)l * (size_t)work_lstride + row * 2 * (size_t)max_pos;
    float *inv = r + max_pos;
    bf16 *kb = (bf16 *)s_b;
    float *sim = (float *)s_b;

    for (int p = tid; p < kvl; p += ZP_CS_THREADS) {
        const float nrm = __fsqrt_rn(
            zp_self_dot(kc + zp_cs_slot(bt, p, hkv, h) * ZP_HEAD_DIM));
        inv[p] = __fdiv_rn(1.0f, nrm > 1e-6f ? nrm : 1e-6f);
        r[p] = 0.f;
    }
    __syncthreads();

    const int tx = tid % 16, ty = tid / 16, nt = (kvl + T - 1) / T;
    for (int I = nt - 1; I >= 0; I--) {
        const int lo = mode == 1 ? 0 : I * T / ZP_BLOCK_SIZE * (ZP_BLOCK_SIZE / T);
        zp_red_load(s_a, inv_a, kc, bt, hkv, h, inv, I * T, kvl);
        for (int J = I; J >= lo; J--) {
            const bool diag = J == I;
            if (!diag) zp_red_load(kb, inv_b, kc, bt, hkv, h, inv, J * T, kvl);
            __syncthreads();
            float d[U][U];
            zp_red_dots(s_a, diag ? s_a : kb, ty, tx, d);
            const float *ib = diag ? inv_a : inv_b;
            __syncthreads(); /* every thread is done with the keys of J: Sim goes over them */
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int v = 0; v < U; v++) {
                    const int xl = ty + 16 * u, cl = tx + 16 * v;
                    const bool x_hi = I * T + xl > J * T + cl;
                    sim[xl * TP + cl] = __fmul_rn(__fmul_rn(d[u][v], x_hi ? inv_a[xl] : ib[cl]),
                                                  x_hi ? ib[cl] : inv_a[xl]);
                }
            __syncthreads();
            /* Resolve: column c of J takes its largest above-threshold row of I (direct);
             * column c of I (off the diagonal) its largest one of J (transposed: Sim is
             * symmetric bit for bit). Only a column no earlier pair resolved. */
            if (tid < T) {
                const int c = J * T + tid;
                int m = -1;
                if (c < kvl && !(__float_as_uint(inv[c]) >> 31))
                    for (int xl = min(T - 1, kvl - 1 - I * T); xl >= 0 && m < 0; xl--)
                        if (I * T + xl != c && sim[xl * TP + tid] > threshold) m = xl;
                if (m >= 0) inv[c] = -inv[c];
                mst_b[tid] = m;
            } else if (!diag && tid < 2 * T) {
                const int il = tid - T, c = I * T + il;
                int m = -1;
                if (c < kvl && !(__float_as_uint(inv[c]) >> 31))
                    for (int yl = T - 1; yl >= 0 && m < 0; yl--)
                        if (sim[il * TP + yl] > threshold) m = yl;
                if (m >= 0) inv[c] = -inv[c];
                mst_a[il] = m;
            }
            __syncthreads();
            /* Accumulate: each row adds its entries of the pair, columns descending, leaving
             * out the entry that resolved its column. */
            if (tid < T) {
                const int x = I * T + tid;
                if (x < kvl) {
                    float acc = r[x];
                    for (int cl = min(T - 1, kvl - 1 - J * T); cl >= 0; cl--)
                        if (J * T + cl != x && mst_b[cl] != tid)
                            acc = __fadd_rn(acc, sim[tid * TP + cl]);
                    r[x] = acc;
                }
            } else if (!diag && tid < 2 * T) {
                const int yl = tid - T, y = J * T + yl;
                float acc = r[y];
                for (int il = min(T - 1, kvl - 1 - I * T); il >= 0; il--)
                    if (mst_a[il] != yl) acc = __fadd_rn(acc, sim[il * TP + yl]);
                r[y] = acc;
            }
            __syncthreads();
        }
    }

    /* R = softmax(r / den); S := lambda*S - (1-lambda)*R, with the CPU's operation order. */
    const float den = __fmul_rn(temperature, (float)(mode == 0 ? ZP_BLOCK_SIZE : kvl));
    float mx = ZP_CS_NEG_INF;
    for (int p = tid; p < kvl; p += ZP_CS_THREADS) mx = fmaxf(mx, __fdiv_rn(r[p], den));
    mx = zp_block_max(mx);
    float sum = 0.f;
    for (int p = tid; p < kvl; p += ZP_CS_THREADS)
        sum = __fadd_rn(sum, expf(__fsub_rn(__fdiv_rn(r[p], den), mx)));
    sum = block_sum(sum);
    const float w_r = __fsub_rn(1.0f, lambda);
    for (int p = tid; p < kvl; p += ZP_CS_THREADS) {
        const float e = expf(__fsub_rn(__fdiv_rn(r[p], den), mx));
        S[p] = __fsub_rn(__fmul_rn(lambda, S[p]), __fmul_rn(w_r, __fdiv_rn(e, sum)));
    }
}

/* ---- zp_cmp_select ---- */

#define ZP_KEY_POS_INF 0xff800000u /* zp_score_key(+inf) */
#define ZP_KEY_NEG_INF 0x007fffffu /* zp_score_key(-inf) */

/* sel_rows' order-preserving map of an f32 score to 32 bits: -0 == +0, NaN ranks below -inf. */
static __device__ __forceinline__ unsigned zp_score_key(float f) {
    unsigned u = __float_as_uint(f);
    if ((u << 1) == 0) u = 0;
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0;
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

extern "C" __global__ void __launch_bounds__(ZP_CS_THREADS)
zp_cmp_select(int *__restrict__ keep, long long keep_lstride, const float *__restrict__ scores,
              long long score_lstride, const int *__restrict__ n_jobs,
              const int *__restrict__ n_blocks, const int *__restrict__ kv_len,
              const int *__restrict__ n_keep, const int *__restrict__ protect, int max_pos,
              int max_keep, int hkv, int qcl, int sink_len, int recent) {
    zp_grid_dep();
    constexpr int NW = ZP_CS_THREADS / 32;
    __shared__ unsigned hist[256];
    __shared__ unsigned sel[3]; /* digit, keys of it still to keep, keys with it */
    __shared__ unsigned w_gt[NW], w_eq[NW];

    const int h = blockIdx.x, b = blockIdx.y, l = blockIdx.z, tid = threadIdx.x;
    const int lane = tid & 31, wid = tid >> 5;
    if (b >= *n_jobs) return;
    const int N = n_blocks[b] * ZP_BLOCK_SIZE, kvl = kv_len[b], nk = n_keep[b];
    if (nk <= 0) return;
    const size_t row = (size_t)b * (size_t)hkv + (size_t)h;
    const float *S = scores + (size_t)l * (size_t)score_lstride + row * (size_t)max_pos;
    int *out = keep + (size_t)l * (size_t)keep_lstride + row * (size_t)max_keep;
    const int sink = max(sink_len, protect[b]);
    const int newest = kvl - max(qcl, min(recent, (nk - sink) / 2));
#define ZP_SEL_KEY(p)                                                                              \
    ((p) >= kvl ? ZP_KEY_NEG_INF                                                                   \
     : (p) >= newest || (p) < sink ? ZP_KEY_POS_INF                                                \
                                   : zp_score_key(S[p]))

    /* Radix select: after the pass at `shift`, prefix holds the threshold's digits down to it
     * and need the number of keys equal to that prefix still to keep (>= 1). */
    unsigned prefix = 0, mask = 0, need = (unsigned)nk, n_eq = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += ZP_CS_THREADS) hist[i] = 0;
        __syncthreads();
        for (int p0 = 0; p0 < N; p0 += ZP_CS_THREADS) {
            const int p = p0 + tid;
            unsigned bin = 256; /* not counted */
            if (p < N) {
                const unsigned k = ZP_SEL_KEY(p);
                if ((k & mask) == prefix) bin = (k >> shift) & 255u;
            }
            const unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (bin < 256 && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned)__popc(peers));
        }
        __syncthreads();
        if (wid == 0) {
            /* lane owns bins 255-8*lane down to 248-8*lane; counts from the top are scanned
             * across lanes, and the lane where the running count reaches need holds the digit */
            const int top = 255 - 8 * lane;
            unsigned c = 0;
#pragma unroll
            for (int i = 0; i < 8; i++) c += hist[top - i];
            unsigned incl = c;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned y = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += y;
            }
            unsigned run = incl - c;
            if (run < need && need <= incl)
                for (int i = 0; i < 8; i++) {
                    const unsigned hc = hist[top - i];
                    if (run + hc >= need) {
                        sel[0] = (unsigned)(top - i), sel[1] = need - run, sel[2] = hc;
                        break;
                    }
                    run += hc;
                }
        }
        __syncthreads();
        prefix |= sel[0] << shift;
        mask |= 255u << shift;
        need = sel[1];
        n_eq = sel[2];
    }

    /* The keys equal to the threshold that are dropped are the earliest n_eq - need. */
    const unsigned drop = n_eq - need, lt = (1u << lane) - 1u;
    unsigned gt_base = 0, eq_base = 0;
    for (int p0 = 0; p0 < N; p0 += ZP_CS_THREADS) {
        const int p = p0 + tid;
        const unsigned k = p < N ? ZP_SEL_KEY(p) : 0u;
        const bool gt = p < N && k > prefix, eq = p < N && k == prefix;
        const unsigned bg = __ballot_sync(0xffffffffu, gt), be = __ballot_sync(0xffffffffu, eq);
        if (!lane) w_gt[wid] = (unsigned)__popc(bg), w_eq[wid] = (unsigned)__popc(be);
        __syncthreads();
        unsigned g_before = gt_base + (unsigned)__popc(bg & lt), e_before = eq_base + (unsigned)__popc(be & lt);
        for (int w = 0; w < NW; w++) {
            if (w < wid) g_before += w_gt[w], e_before += w_eq[w];
            gt_base += w_gt[w], eq_base += w_eq[w];
        }
        if (gt || (eq && e_before >= drop))
            out[g_before + (e_before > drop ? e_before - drop : 0u)] = p;
        __syncthreads(); /* w_gt / w_eq are rewritten by the next tile */
    }
#undef ZP_SEL_KEY
}

/* ---- zp_cmp_compact ---- */

#define ZP_CC_VEC (ZP_HEAD_DIM / 8)                 /* 16-byte pieces per K (or V) row */
#define ZP_CC_TOK (ZP_CS_THREADS / (2 * ZP_CC_VEC)) /* tokens per round: a K and a V row each */
#define ZP_CC_ROUNDS 4                              /* rounds per chunk (registers per thread) */

static_assert(ZP_CC_TOK >= 1, "a round must hold a whole token");

extern "C" __global__ void __launch_bounds__(ZP_CS_THREADS)
zp_cmp_compact(const unsigned long long *__restrict__ kc_layers,
               const unsigned long long *__restrict__ vc_layers,
               const unsigned long long *__restrict__ cc_layers, int layer0,
               const int *__restrict__ keep, long long keep_lstride,
               const int *__restrict__ n_jobs, const int *__restrict__ n_keep,
               const int *__restrict__ src, const int *__restrict__ dst, int max_blocks,
               int max_keep, int hkv) {
    zp_grid_dep();
    constexpr int CH = ZP_CC_TOK * ZP_CC_ROUNDS;
    const int h = blockIdx.x, b = blockIdx.y, l = blockIdx.z, tid = threadIdx.x;
    if (b >= *n_jobs) return;
    const int nk = n_keep[b];
    /* threads past the last whole token of a round (when 2 * D / 8 does not divide 256)
     * move nothing but still meet the barrier */
    const int tok = tid / (2 * ZP_CC_VEC), part = tid % (2 * ZP_CC_VEC), vec = part % ZP_CC_VEC;
    /* the first ZP_CC_VEC threads of a token move K (the first of them also C), the rest V */
    uint4 *cache = (uint4 *)(part < ZP_CC_VEC ? kc_layers[layer0 + l] : vc_layers[layer0 + l]);
    float *cc = (float *)cc_layers[layer0 + l];
    const int *kp = keep + (size_t)l * (size_t)keep_lstride +
                    ((size_t)b * (size_t)hkv + (size_t)h) * (size_t)max_keep;
    const int *st = src + (size_t)b * (size_t)max_blocks, *dt = dst + (size_t)b * (size_t)max_blocks;
    for (int j0 = 0; j0 < nk; j0 += CH) {
        uint4 val[ZP_CC_ROUNDS];
        float cv[ZP_CC_ROUNDS];
        size_t to[ZP_CC_ROUNDS];
        bool mv[ZP_CC_ROUNDS];
#pragma unroll
        for (int i = 0; i < ZP_CC_ROUNDS; i++) {
            const int j = j0 + i * ZP_CC_TOK + tok;
            mv[i] = false;
            if (tok < ZP_CC_TOK && j < nk) {
                const size_t from = zp_cs_slot(st, kp[j], hkv, h);
                to[i] = zp_cs_slot(dt, j, hkv, h);
                mv[i] = from != to[i];
                if (mv[i]) {
                    val[i] = cache[from * ZP_CC_VEC + vec];
                    if (part == 0) cv[i] = cc[from];
                }
            }
        }
        __syncthreads(); /* every source of the chunk is read before any target is written */
#pragma unroll
        for (int i = 0; i < ZP_CC_ROUNDS; i++)
            if (mv[i]) {
                cache[to[i] * ZP_CC_VEC + vec] = val[i];
                if (part == 0) cc[to[i]] = cv[i];
            }
    }
}
