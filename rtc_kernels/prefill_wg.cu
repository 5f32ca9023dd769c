/* prefill_wg.cu: prefill.cu's attention for prompt rows on Hopper's warpgroup MMA (wgmma),
 * compiled at run time by NVRTC for sm_90a only. Same contract as prefill.cu's
 * zp_attn_prefill_partial (PURPOSE, LAYOUT, the qtile / n_qtiles arrays, the split-KV partials
 * zp_attn_merge finishes, the grid, the order tiles are taken in); only the kernel name, its
 * shared memory and its rounding differ.
 *
 * WHY. prefill.cu's mma.sync loop is latency-bound: 247 registers leave 8 warps per SM, and
 * every mma waits on register fragments loaded by ldmatrix (docs/BENCHMARKS.md, "Where the
 * prefill kernel's time goes": tensor cores mostly idle). wgmma reads both operands of
 * S = Q K^T and the V operand of O += P V straight from shared memory, asynchronously, for a
 * whole warpgroup: no fragment loads and far fewer issued instructions per FLOP.
 *
 * LAUNCH RULES. zp_attn_prefill_wg: grid (n_psplit, hkv, n_qtiles_cap) as prefill.cu, block
 *   ZP_WG_THREADS (128: one warpgroup), dynamic shared memory ZP_WG_SMEM (drv/attn_tiles.h's
 *   ATTN_PREFILL_WG_SMEM, set as the function's maximum by the host), plus 16 bytes static; an
 *   sm_90 GPU only (built for sm_90a; any other build traps).
 *
 * ALGORITHM. As prefill.cu (FlashAttention-2's loop over the split's keys in sub-tiles of KT =
 * 8192 / D keys, a 2-stage cp.async ring, online softmax in base 2, P rounded to bf16 with l
 * summing the rounded values), with the 64 query rows m = r*G + j of the tile as one wgmma M:
 *   Q (64 x D) is copied once into shared memory; per sub-tile
 *   S = Q K^T: D/16 wgmma m64nKTk16, A = Q and B = K from shared memory (both K-major);
 *   the scores land in mma.sync's accumulator layout per warp (warp w: rows 16w + gid and
 *   16w + gid + 8, n8 tile i in registers 4i .. 4i+3), so masking and softmax are prefill.cu's;
 *   O += P V: KT/16 wgmma m64nDk16, A = P from registers (mma.sync's A fragments, packed as in
 *   prefill.cu), B = V from shared memory, MN-major (the wgmma's transposed-B form).
 * Shared tiles (Q, K, V) are in the 128-byte-swizzle canonical layout (common.cuh's
 * zp_lay_sw128), described to the wgmma by zp_wg_desc. cp.async writes through the generic
 * proxy and wgmma reads through the async proxy, so each thread fences (fence.proxy.async)
 * after its copies land and before the barrier that hands the stage to the wgmmas; both wgmma
 * groups of a sub-tile are waited for before the next barrier, so the copies into a stage
 * never overtake the wgmmas reading it. The whole warpgroup walks every sub-tile up to the
 * tile's last attended key (no per-warp skip: a wgmma is issued by all four warps).
 *
 * BATCH INVARIANCE. prefill.cu's argument holds unchanged: a row's scores come from its own q
 * row in a fixed k order, its max / l / O combine only its own values, sub-tiles start at
 * s*chunk + k*KT whatever the tile, and a sub-tile the row does not attend leaves its state
 * bit-exactly unchanged (corr exactly 1, p = +0). The bits differ from prefill.cu's (another
 * accumulation order inside the tensor core), so a device runs one of the two kernels for
 * every prompt row: the backend picks by architecture and conf attention_prefill_kernel,
 * never by batch.
 */
#include "prefill_tile.cuh"

#define ZP_WG_THREADS 128                                 /* one warpgroup */
#define ZP_WG_M 64                                        /* query rows (row, head) per CTA */
#define ZP_WG_KT (8192 / ZP_HEAD_DIM)                     /* keys per KV sub-tile */
#define ZP_WG_TILE (ZP_WG_KT * ZP_HEAD_DIM * 2)           /* one K or V sub-tile: 16 KiB */
#define ZP_WG_QMAX (ZP_WG_M * 128 * 2)                    /* the Q tile at D = 128 */
#define ZP_WG_SMEM (1024 + ZP_WG_QMAX + 2 * 2 * ZP_WG_TILE) /* alignment, Q, 2 stages of K, V */

static_assert(ZP_HEAD_DIM == 64 || ZP_HEAD_DIM == 128, "head dim must be 64 or 128");
static_assert(ZP_GQA == 1 || ZP_GQA == 2 || ZP_GQA == 4 || ZP_GQA == 8,
              "GQA group must be 1, 2, 4 or 8");
static_assert(ZP_BLOCK_SIZE > 0 && (ZP_BLOCK_SIZE & (ZP_BLOCK_SIZE - 1)) == 0,
              "block size must be a power of two");
static_assert(ZP_WG_SMEM == 82944, "drv/attn_tiles.h: ATTN_PREFILL_WG_SMEM");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

/* The accumulator operands of a wgmma: d[i] .. d[i + 7], read and written. */
#define ZP_WG_F8(i)                                                                            \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
        "+f"(d[i + 6]), "+f"(d[i + 7])
#define ZP_WG_F32 ZP_WG_F8(0), ZP_WG_F8(8), ZP_WG_F8(16), ZP_WG_F8(24)
#define ZP_WG_F64 ZP_WG_F8(0), ZP_WG_F8(8), ZP_WG_F8(16), ZP_WG_F8(24), ZP_WG_F8(32), \
    ZP_WG_F8(40), ZP_WG_F8(48), ZP_WG_F8(56)

/* d (64 x 64, this thread's 32) += A (64 x 16 at descriptor a, K-major) * B (16 x 64 at
 * descriptor b, K-major) */
static __device__ __forceinline__ void zp_wg_ss64(float *d, unsigned long long a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : ZP_WG_F32
                 : "l"(a), "l"(b), "r"(1)
                 : "memory");
}
/* d (64 x 64) += A (64 x 16 in registers: per warp, mma.sync's m16n8k16 A fragment of its
 * 16 rows) * B (16 x 64 at descriptor b, MN-major: the transposed form) */
static __device__ __forceinline__ void zp_wg_rs64(float *d, const unsigned *a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : ZP_WG_F32
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)
                 : "memory");
}

/* d (64 x 128, this thread's 64) += A (64 x 16 at descriptor a, K-major) * B (16 x 128 at
 * descriptor b, K-major) */
static __device__ __forceinline__ void zp_wg_ss128(float *d, unsigned long long a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : ZP_WG_F64
                 : "l"(a), "l"(b), "r"(1)
                 : "memory");
}
/* d (64 x 128) += A (64 x 16 in registers: per warp, mma.sync's m16n8k16 A fragment of its
 * 16 rows) * B (16 x 128 at descriptor b, MN-major: the transposed form) */
static __device__ __forceinline__ void zp_wg_rs128(float *d, const unsigned *a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : ZP_WG_F64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)
                 : "memory");
}
/* A shared-memory matrix descriptor in the 128-byte-swizzle mode: start address, leading and
 * stride byte offsets (16-byte units). K-major operands (Q, K) use only the stride offset,
 * 1,024 bytes between groups of 8 rows; the MN-major V adds the leading offset between its
 * 64-column blocks. A k-step inside a 128-byte row advances the start address by 32 bytes:
 * the swizzle is a function of the address bits, valid as every tile is 1,024-byte aligned. */
static __device__ __forceinline__ unsigned long long zp_wg_desc(unsigned addr, unsigned lbo,
                                                                unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFFu) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}

static __device__ __forceinline__ void zp_wg_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
static __device__ __forceinline__ void zp_wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
static __device__ __forceinline__ void zp_wg_wait0() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
/* The compiler sees a wgmma's accumulators as read and written when the wgmma is issued, so it
 * could move their readers above the wait, or their other writers (zeroing, rescaling) below
 * the issue, where the hardware still owns them (ptxas then serialises the wgmmas). Each
 * register passes through an empty volatile asm, ordered with the wgmma's fence, issue and
 * wait asms; the code after it reads that asm's output. */
template <int N> static __device__ __forceinline__ void zp_wg_pin(float *d) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* S (64 x KT) = Q K^T over the head dim. */
template <int KT>
static __device__ __forceinline__ void zp_wg_scores(float *sc, unsigned qs, unsigned ks) {
    constexpr int D = ZP_HEAD_DIM;
#pragma unroll
    for (int k = 0; k < D / 16; k++) {
        const unsigned in_row = (unsigned)(k & 3) * 32; /* 16 columns of a 64-column block */
        const unsigned long long a = zp_wg_desc(qs + (k >> 2) * ZP_WG_M * 128 + in_row, 0, 1024);
        const unsigned long long b = zp_wg_desc(ks + (k >> 2) * KT * 128 + in_row, 0, 1024);
        if constexpr (KT == 64) zp_wg_ss64(sc, a, b);
        else zp_wg_ss128(sc, a, b);
    }
}

/* O (64 x D) += P (64 x KT, bf16 pairs pa[n8 tile][row half]) V. */
template <int KT>
static __device__ __forceinline__ void zp_wg_pv(float *o, const unsigned (*pa)[2], unsigned vs) {
#pragma unroll
    for (int kk = 0; kk < KT / 16; kk++) {
        const unsigned a[4] = {pa[2 * kk][0], pa[2 * kk][1], pa[2 * kk + 1][0], pa[2 * kk + 1][1]};
        const unsigned long long b = zp_wg_desc(vs + kk * 16 * 128, KT * 128, 1024);
        if constexpr (ZP_HEAD_DIM == 64) zp_wg_rs64(o, a, b);
        else zp_wg_rs128(o, a, b);
    }
}

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

extern "C" __global__ void __launch_bounds__(ZP_WG_THREADS, 2)
zp_attn_prefill_wg(const bf16 *__restrict__ q, const bf16 *__restrict__ kc,
                   const bf16 *__restrict__ vc, const int *__restrict__ tok_seq,
                   const int *__restrict__ tok_kv_idx, const int *__restrict__ block_tables,
                   const int *__restrict__ qtile, const int *__restrict__ n_qtiles, int max_blocks,
                   int hkv, float scale, int chunk, int n_split, float *__restrict__ part_o,
                   float *__restrict__ part_ml) {
    zp_grid_dep();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int D = ZP_HEAD_DIM, G = ZP_GQA, KT = ZP_WG_KT, CH = D / 8;
    constexpr int NT = KT / 8; /* n8 score tiles per sub-tile */
    constexpr int ND = D / 8;  /* n8 output tiles over the head dim */
    extern __shared__ __align__(16) unsigned char zp_wg_dyn[]; /* ZP_WG_SMEM bytes */
    __shared__ int lim_s[ZP_WG_THREADS / 32];
    /* Q at the first 1,024-byte boundary, then [stage][K, V] */
    const unsigned dyn = (unsigned)__cvta_generic_to_shared(zp_wg_dyn);
    unsigned char *sm = zp_wg_dyn + ((1024u - (dyn & 1023u)) & 1023u);
    /* stage st's K (x = 0) or V (x = 1) sub-tile */
    auto kv_s = [sm](int st, int x) {
        return reinterpret_cast<bf16 *>(sm + ZP_WG_QMAX + (2 * st + x) * ZP_WG_TILE);
    };
    const unsigned qs = (unsigned)__cvta_generic_to_shared(sm);

    const int s = blockIdx.x, g = blockIdx.y, tile = (int)(gridDim.z - 1 - blockIdx.z);
    if (tile >= *n_qtiles) return;
    const int first = qtile[2 * tile], nrows = qtile[2 * tile + 1];
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int tq = lane & 3; /* accumulator column pair (row groups: zp_pf_rows) */
    const int hq = hkv * G, start = s * chunk, last = start + chunk - 1;

    /* this thread's two query rows and the CTA's keys */
    const zp_pf_rows t =
        zp_pf_rows_of<G>(tok_kv_idx, first, nrows, lane, w, hq, g, s, n_split, last);
    zp_pf_empty_past(t, part_ml, tq, s, n_split);
    int wlim;
    const int end = zp_pf_end<ZP_WG_THREADS / 32>(t, lim_s, lane, w, &wlim);
    if (start >= end) { /* no row of the tile reaches this split */
        zp_pf_empty(t, part_ml, tq);
        return;
    }

    /* Q rows m = r*G + j of the tile (zero for inert rows), with the first sub-tile */
#pragma unroll
    for (int i = 0; i < ZP_WG_M * CH / ZP_WG_THREADS; i++) {
        const int v = tid + i * ZP_WG_THREADS, m = v / CH, c = v % CH, r = m / G, j = m % G;
        const bool ok = r < nrows;
        const size_t row = (size_t)(first + (ok ? r : 0)) * (size_t)hq + (size_t)(g * G + j);
        const bf16 *src = q + (ok ? row * D + (size_t)c * 8 : 0);
        zp_cp16(sm + zp_lay_sw128::off<ZP_WG_M>(m, c), src, ok ? 16 : 0);
    }
    const int *bt = block_tables + (size_t)tok_seq[first] * (size_t)max_blocks;
    const int n_sub = (end - start + KT - 1) / KT;
    int blk[zp_kv_tile<KT, ZP_WG_THREADS>::LPT];
    zp_kv_blocks<KT, ZP_WG_THREADS>(blk, bt, start, end, tid);
    zp_kv_load<KT, ZP_WG_THREADS, zp_lay_sw128>(kv_s(0, 0), kv_s(0, 1), kc, vc, blk, hkv, g, start,
                                                end, tid);
    zp_cp_commit();
    if (n_sub > 1) zp_kv_blocks<KT, ZP_WG_THREADS>(blk, bt, start + KT, end, tid);

    float o[D / 2], mr[2] = {ZP_PF_NEG_INF, ZP_PF_NEG_INF}, lr[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < D / 2; n++) o[n] = 0.0f;
    const float c2 = scale * 1.4426950408889634f; /* scores in base-2 units */

    for (int it = 0; it < n_sub; it++) {
        const int p0 = start + it * KT;
        /* sub-tile it (and Q) landed for every thread and is visible to the async proxy; every
         * wgmma of iteration it-1 was waited for, so the stage the next copies overwrite is free */
        zp_cp_wait<0>();
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        if (it + 1 < n_sub) {
            const int nb = (it + 1) & 1;
            zp_kv_load<KT, ZP_WG_THREADS, zp_lay_sw128>(kv_s(nb, 0), kv_s(nb, 1), kc, vc, blk, hkv,
                                                        g, p0 + KT, end, tid);
            if (it + 2 < n_sub) zp_kv_blocks<KT, ZP_WG_THREADS>(blk, bt, p0 + 2 * KT, end, tid);
        }
        zp_cp_commit();
        const unsigned ks = (unsigned)__cvta_generic_to_shared(kv_s(it & 1, 0));
        const unsigned vs = (unsigned)__cvta_generic_to_shared(kv_s(it & 1, 1));

        float sc[NT * 4];
#pragma unroll
        for (int x = 0; x < NT * 4; x++) sc[x] = 0.0f;
        zp_wg_pin<NT * 4>(sc);
        zp_wg_fence();
        zp_wg_scores<KT>(sc, qs, ks);
        zp_wg_commit();
        zp_wg_wait0();
        zp_wg_pin<NT * 4>(sc);

        unsigned pa[NT][2];
        zp_pf_softmax<NT, ND>(sc, pa, o, mr, lr, t.lim, p0, tq, c2);
        zp_wg_pin<D / 2>(o); /* rescaled before the wgmmas are issued */
        zp_wg_fence();
        zp_wg_pv<KT>(o, pa, vs);
        zp_wg_commit();
        zp_wg_wait0();
        zp_wg_pin<D / 2>(o);
    }

    zp_pf_store<ND>(t, o, mr, lr, part_o, part_ml, tq);
#else
    __trap(); /* built for another architecture: the backend never launches it there */
#endif
}
