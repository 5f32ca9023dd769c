/* prefill.cu: tensor-core paged attention for prompt (prefill) rows, compiled at run time by
 * NVRTC. It writes the same split-KV partials as attention.cu's zp_attn_partial, so
 * attention.cu's zp_attn_merge finishes both kinds of rows in one launch.
 *
 * PURPOSE. For the token rows of a step that the host groups into q-tiles:
 *   out[t][h][:] = softmax_j(q[t][h]·k_j * scale) · v_j   over cache indices j in
 *   [0, tok_kv_idx[t]] of the row's sequence (causal in cache order).
 * zp_attn_partial reads a row's K/V once per row: a prompt of n rows costs O(n^2) K/V traffic
 * and runs on FMA units. Here a CTA takes up to QT consecutive rows of one sequence and all G
 * query heads of one kv head, so every K/V element loaded serves QT*G = 64 query rows, and both
 * products (S = Q K^T and O += P V) run on tensor cores (mma.sync m16n8k16, bf16 in, fp32 out).
 *
 * COMPILE-TIME CONSTANTS (-D from the driver; the #ifndef defaults are for standalone builds):
 *   ZP_HEAD_DIM D (64 or 128), ZP_BLOCK_SIZE BS (16..256, power of two; tokens per KV page),
 *   ZP_GQA G (1, 2, 4 or 8; query heads per kv head). sm_80 or newer (mma.sync bf16, ldmatrix,
 *   cp.async); zipage compiles for sm_90.
 *
 * LAYOUT: q, kc, vc, tok_seq, tok_kv_idx, block_tables, part_o, part_ml exactly as in
 * attention.cu (q [n_tokens][hq][D] bf16; K/V [num_blocks][hkv][BS][D] bf16 through
 * block_tables[seq*max_blocks + i/BS]; part_o f32 [rows][hq][n_split][D] un-normalised
 * relative to m; part_ml f32 [rows][hq][n_split][2] = {m, l}, m the max of the scaled scores
 * (natural-log units), l = sum exp(s - m); an empty split stores m = -inf, l = 0 and no o).
 *   qtile      int [n_qtiles_cap][2] = {first row, number of rows n}: rows first .. first+n-1
 *              of the step, 1 <= n <= QT = 64 / G, all of ONE sequence (tok_seq[first] >= 0 is
 *              read for the tile). Rows need not be consecutive positions, only rows of one
 *              sequence; each row is masked by its own tok_kv_idx.
 *   n_qtiles   int in device memory: CTAs of tiles >= *n_qtiles exit at once (padded grids,
 *              CUDA graphs) and read nothing of their qtile entry.
 * No row of a tile may be in zp_attn_partial's grid (its rows list), so each (row, head, split)
 * partial has exactly one writer. drv/attn_tiles.h builds the tiles and that list.
 *
 * LAUNCH RULES. zp_attn_prefill_partial: grid (n_psplit, hkv, n_qtiles_cap), block
 *   ZP_PF_THREADS (128), dynamic shared memory ZP_PF_SMEM = 64 KiB for every D/BS/G (the K/V
 *   ring; drv/attn_tiles.h's ATTN_PREFILL_SMEM, which the host sets as the function's
 *   CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, above the 48 KiB default), plus 16 bytes
 *   static. CTA (s, g, i) covers cache indices
 *   [s*chunk, min((s+1)*chunk, max over the tile's rows of tok_kv_idx + 1)) for the tile's
 *   rows and the query heads g*G .. g*G+G-1, and writes the partials of those (row, head, s).
 *   n_split: the same as the step's zp_attn_partial launch (the partials' stride, which the
 *   merge reads); chunk: a multiple of KT with n_split*chunk covering the longest row. The
 *   backend passes attention_prefill_chunk (>= the decode rows' chunk, default 4,096): split
 *   partials of a prompt row cost f32 traffic (writes here, reads in the merge) that q-tiles x
 *   kv heads CTAs do not need for parallelism; CTAs of splits past the tile's range only mark
 *   their split empty. n_psplit (1 .. n_split): splits of chunk keys covering the longest row
 *   (drv/attn_tiles.h's attn_prefill_splits); split 0's CTA marks splits n_psplit .. n_split-1
 *   empty (zp_pf_empty_past). n_qtiles_cap <= 65535. Run it on the same
 *   stream as zp_attn_partial (either order) and before zp_attn_merge. Tiles are taken from the
 *   last one down (blockIdx.z = 0 is tile n_qtiles_cap - 1): the later rows of a prompt attend
 *   the most keys, so the longest CTAs start first instead of forming the tail.
 *
 * ALGORITHM (FlashAttention-2's forward loop on split-KV ranges). 4 warps; warp w owns the 16
 * query rows m = 16w .. 16w+15 of the tile's 64 (m = r*G + j: tile row r = m / G, head j = m % G;
 * rows r >= n are inert: zero q, never written). Its q fragments stay in registers (bf16 A
 * operands, loaded once). The KV range is walked in sub-tiles of KT = 8192/D keys (64 for D
 * 128, 128 for D 64; half that costs 15-19% more kernel time on an H100, docs/BENCHMARKS.md:
 * each sub-tile pays a barrier, a max shuffle and the rescaling of O) starting at s*chunk: K
 * and V of sub-tile k+1 are copied by cp.async into one half of a 2-stage shared ring while
 * sub-tile k is computed from the other (one __syncthreads per sub-tile; each thread's
 * block-table reads run one sub-tile ahead). Keys
 * past the range end are zero-filled (src-size 0), so stale or garbage data never meets a
 * zero probability in P·V. Per sub-tile and warp:
 *   S = Q K^T: mma m16n8k16, K fragments by ldmatrix (K rows are the "col" operand as stored);
 *   scores * scale * log2(e), masked to -inf where the key > min(row's kv_idx, split end - 1);
 *   online softmax in fp32 in base 2 (ex2.approx): per row m (the quad's shuffle max),
 *   corr = 2^(m_old - m_new), p = 2^(s - m_new);
 *   P is rounded to bf16 for the P·V mma (FlashAttention's choice: the mma takes bf16 A
 *   operands); l sums the same bf16-rounded p, so numerator and denominator use equal weights;
 *   O += P V: mma with V fragments by ldmatrix.trans, fp32 accumulators in registers.
 * A warp whose 16 rows all end before the sub-tile skips it (causal triangle). At the end l is
 * summed over the quad, m converted to natural-log units (m * ln 2) and the partials stored.
 * Shared memory rows are D bf16 (128 or 256 bytes); the 16-byte chunk c of key row r is stored
 * at chunk c ^ (r & 7), so the 8 rows an ldmatrix phase reads hit 8 different bank groups.
 *
 * BATCH INVARIANCE. A row's bits depend only on its q, its tok_kv_idx, its sequence's K/V,
 * chunk and s, never on the other rows of its tile, the tile's size or first row:
 * - its scores are mma outputs of its own q row against K rows, over D in a fixed k order;
 *   its max, its l (each lane's fixed key columns, then a fixed quad shuffle order) and its O
 *   row (the mma's fixed key order within a sub-tile) combine only its own values;
 * - sub-tiles start at s*chunk + k*KT whatever the tile, and are visited in order;
 * - a sub-tile whose keys the row does not attend (past its kv_idx, but visited or skipped
 *   because of other rows) leaves its state bit-exactly unchanged: m_new == m_old selects
 *   corr = 1 exactly (no exponential), every p is ex2(-inf) = +0, so l*1 + 0 = l and O*1 + 0·V
 *   = O (V finite: keys below the range end are written cache entries, those past it zeros).
 * The same row through zp_attn_partial gives different rounding: a row must always take the
 * same kernel (the host decides by row kind, e.g. prompt tokens, never by batch).
 * A state that has seen only -inf subtracts 0 (no -inf - -inf = NaN); an empty row stores
 * m = -inf, l = 0 and no o, like zp_attn_partial.
 */
/* prefill_tile.cuh: rows, key range, online softmax and partials, shared with prefill_wg.cu */
#include "prefill_tile.cuh"

#define ZP_PF_THREADS 128                                      /* 4 warps */
#define ZP_PF_M 64                                             /* query rows (row, head) per CTA */
#define ZP_PF_QT (ZP_PF_M / ZP_GQA)                            /* token rows per q-tile */
#define ZP_PF_KT (8192 / ZP_HEAD_DIM)                          /* keys per KV sub-tile */
#define ZP_PF_SMEM (2 * 2 * ZP_PF_KT * ZP_HEAD_DIM * 2)        /* 2 stages of K and V, bf16 */

static_assert(ZP_HEAD_DIM == 64 || ZP_HEAD_DIM == 128, "head dim must be 64 or 128");
static_assert(ZP_GQA == 1 || ZP_GQA == 2 || ZP_GQA == 4 || ZP_GQA == 8, "GQA group must be 1, 2, 4 or 8");
static_assert(ZP_BLOCK_SIZE > 0 && (ZP_BLOCK_SIZE & (ZP_BLOCK_SIZE - 1)) == 0,
              "block size must be a power of two");
static_assert(ZP_PF_KT % 16 == 0, "a sub-tile is whole mma k-steps");
static_assert(ZP_PF_SMEM == 65536, "drv/attn_tiles.h: ATTN_PREFILL_SMEM");
static_assert(ZP_PF_M == 16 * (ZP_PF_THREADS / 32), "each warp owns 16 query rows");

extern "C" __global__ void __launch_bounds__(ZP_PF_THREADS)
zp_attn_prefill_partial(const bf16 *__restrict__ q, const bf16 *__restrict__ kc,
                        const bf16 *__restrict__ vc, const int *__restrict__ tok_seq,
                        const int *__restrict__ tok_kv_idx, const int *__restrict__ block_tables,
                        const int *__restrict__ qtile, const int *__restrict__ n_qtiles,
                        int max_blocks, int hkv, float scale, int chunk, int n_split,
                        float *__restrict__ part_o, float *__restrict__ part_ml) {
    zp_grid_dep();
    constexpr int D = ZP_HEAD_DIM, G = ZP_GQA, KT = ZP_PF_KT;
    constexpr int NT = KT / 8;  /* n8 score tiles per sub-tile */
    constexpr int KQ = D / 16;  /* k16 steps over the head dim */
    constexpr int ND = D / 8;   /* n8 output tiles over the head dim */
    extern __shared__ __align__(128) unsigned char zp_pf_dyn[]; /* ZP_PF_SMEM bytes */
    /* [stage][K, V][key row, swizzled] */
    bf16(*kv_s)[2][KT * D] = reinterpret_cast<bf16(*)[2][KT * D]>(zp_pf_dyn);
    __shared__ int lim_s[ZP_PF_THREADS / 32];

    const int s = blockIdx.x, g = blockIdx.y, tile = (int)(gridDim.z - 1 - blockIdx.z);
    if (tile >= *n_qtiles) return;
    const int first = qtile[2 * tile], nrows = qtile[2 * tile + 1];
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int tq = lane & 3; /* mma fragment column pair (row groups: zp_pf_rows) */
    const int hq = hkv * G, start = s * chunk, last = start + chunk - 1;

    /* this thread's two query rows, the warp's last attended key and the CTA's keys */
    const zp_pf_rows t =
        zp_pf_rows_of<G>(tok_kv_idx, first, nrows, lane, w, hq, g, s, n_split, last);
    const bf16 *qr[2] = {t.real[0] ? q + t.row[0] * D : nullptr,
                         t.real[1] ? q + t.row[1] * D : nullptr};
    zp_pf_empty_past(t, part_ml, tq, s, n_split);
    int wlim;
    const int end = zp_pf_end<ZP_PF_THREADS / 32>(t, lim_s, lane, w, &wlim);
    if (start >= end) { /* no row of the tile reaches this split */
        zp_pf_empty(t, part_ml, tq);
        return;
    }

    const int *bt = block_tables + (size_t)tok_seq[first] * (size_t)max_blocks;
    const int n_sub = (end - start + KT - 1) / KT;
    int blk[zp_kv_tile<KT, ZP_PF_THREADS>::LPT];
    zp_kv_blocks<KT, ZP_PF_THREADS>(blk, bt, start, end, tid);
    zp_kv_load<KT, ZP_PF_THREADS>(kv_s[0][0], kv_s[0][1], kc, vc, blk, hkv, g, start, end, tid);
    zp_cp_commit();
    if (n_sub > 1) zp_kv_blocks<KT, ZP_PF_THREADS>(blk, bt, start + KT, end, tid);

    /* q fragments (A operand, row-major 16x16 per k-step): registers 0/1 rows gid / gid+8 at
     * columns 2tq, 2tq+1; registers 2/3 the same 8 columns on */
    unsigned qa[KQ][4];
#pragma unroll
    for (int k = 0; k < KQ; k++)
#pragma unroll
        for (int x = 0; x < 4; x++) {
            const bf16 *p = qr[x & 1];
            qa[k][x] = p ? *(const unsigned *)(p + 16 * k + 8 * (x >> 1) + 2 * tq) : 0u;
        }

    float o[ND][4], mr[2] = {ZP_PF_NEG_INF, ZP_PF_NEG_INF}, lr[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < ND; n++)
#pragma unroll
        for (int x = 0; x < 4; x++) o[n][x] = 0.0f;
    const float c2 = scale * 1.4426950408889634f; /* scores in base-2 units */
    const int l7 = lane & 7, mat = lane >> 3;      /* ldmatrix: row in matrix, matrix */

    for (int it = 0; it < n_sub; it++) {
        const int p0 = start + it * KT;
        /* sub-tile it has landed for every thread, and every warp is done with the stage the
         * next copies overwrite (read in iteration it-1) */
        zp_cp_wait<0>();
        __syncthreads();
        if (it + 1 < n_sub) {
            const int nb = (it + 1) & 1;
            zp_kv_load<KT, ZP_PF_THREADS>(kv_s[nb][0], kv_s[nb][1], kc, vc, blk, hkv, g, p0 + KT, end, tid);
            if (it + 2 < n_sub) zp_kv_blocks<KT, ZP_PF_THREADS>(blk, bt, p0 + 2 * KT, end, tid);
        }
        zp_cp_commit();
        if (p0 > wlim) continue; /* no row of this warp attends a key here */

        const unsigned ks = (unsigned)__cvta_generic_to_shared(kv_s[it & 1][0]);
        const unsigned vs = (unsigned)__cvta_generic_to_shared(kv_s[it & 1][1]);

        /* S = Q K^T: per n8 tile of keys, ldmatrix x4 gives the B fragments of two k-steps
         * (matrix i = key rows nt*8.., chunk 4kk+i) */
        float sc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int x = 0; x < 4; x++) sc[nt][x] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KQ / 2; kk++) {
                unsigned b[4];
                zp_ldm4(b, ks + zp_swz_off(nt * 8 + l7, 4 * kk + mat));
                zp_mma_bf16(sc[nt], qa[2 * kk], b[0], b[1]);
                zp_mma_bf16(sc[nt], qa[2 * kk + 1], b[2], b[3]);
            }
        }

        /* mask, scale, online softmax; P in bf16 as the A operand of P V (k-step kk is score
         * tiles 2kk, 2kk+1) */
        unsigned pa[NT][2];
        zp_pf_softmax<NT, ND>(&sc[0][0], pa, &o[0][0], mr, lr, t.lim, p0, tq, c2);

        /* O += P V: ldmatrix.trans x4 gives the B fragments of two n8 tiles of D (matrix i =
         * key rows 16kk + 8(i&1).., chunk 2n2 + (i>>1)) */
#pragma unroll
        for (int kk = 0; kk < KT / 16; kk++) {
            const unsigned a[4] = {pa[2 * kk][0], pa[2 * kk][1], pa[2 * kk + 1][0], pa[2 * kk + 1][1]};
#pragma unroll
            for (int n2 = 0; n2 < ND / 2; n2++) {
                unsigned b[4];
                zp_ldm4t(b, vs + zp_swz_off(16 * kk + 8 * (mat & 1) + l7, 2 * n2 + (mat >> 1)));
                zp_mma_bf16(o[2 * n2], a, b[0], b[1]);
                zp_mma_bf16(o[2 * n2 + 1], a, b[2], b[3]);
            }
        }
    }

    zp_pf_store<ND>(t, &o[0][0], mr, lr, part_o, part_ml, tq);
}
