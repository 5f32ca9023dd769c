/* Tensor-core prefill attention (rtc_kernels/prefill.cu's zp_attn_prefill_partial and, on an
 * sm_90 GPU, prefill_wg.cu's zp_attn_prefill_wg: every case below runs for each) beside
 * zp_attn_partial over the other rows (attn_decode_rows) and one zp_attn_merge, against the CPU
 * backend's attention
 * on fresh random q, K and V (bf16), outputs and partials poisoned first.
 * One step mixes decode rows (contexts 1, 100, 2,049) with prompts of 600, 1, 45, 130, 17, 77
 * and 1 rows over cached prefixes of 0 to 1,500 tokens (a row's kv_idx = prefix + its index),
 * shuffled block tables, padding rows and rows past the device-side count; q-tiles from
 * attn_prefill_tiles() (drv/attn_tiles.h) in shuffled order, with garbage tile entries past the
 * device-side tile count; every head dim (64, 128), block size (16..256) and GQA group (1..8);
 * the KV length split 1, 3 and 8 ways (decode rows; the prompt rows' kernel gets splits twice as
 * long, as the backend gives it attention_prefill_chunk >= attention_chunk). Checks:
 * - ||d||/||ref|| <= 1e-2 over the decode rows and over the prompt rows (bf16 output), no NaN;
 * - zp_attn_partial over the listed rows leaves the flagged rows' partials untouched and gives
 *   every other row the bits it gives over all rows; zp_attn_prefill_partial writes every
 *   partial of its rows and nothing else; padding rows come out zero, rows past the count
 *   untouched;
 * - batch invariance: the 600-row prompt again as chunks of 1, 7, 64, ... rows, each chunk its
 *   own step behind two decode rows, in tiles of random sizes, with the split count of the
 *   chunk's own longest row: every row's partials (m, l, o) and output bit-identical to the
 *   one-step run.
 * SKIP without a GPU. */
#include "drv/attn_tiles.h"
#include "drv/attn_abi.h"
#include "drv/backend.h"
#include "tests/cuda_util.h"

#include <stdlib.h>

static gpu G, *g = &G;
static backend *cpu;
static unsigned long long seed = 0x9f111e;

#define P(x)   ((be_ptr)(uintptr_t)(x))
#define POISON 0xFFFFFFFFu

typedef struct cfg {
    int D, bs, gqa, hkv, hq, max_blocks;
    attn_prefill_kernel pk; /* the prefill kernel under test */
    CUfunction part, pre, merge;
    CUdeviceptr kc, vc, bt;
} cfg;

/* One step: rows [0, n) counted (real and padding), [n, cap) past the count. */
typedef struct step {
    int n, cap;
    const uint16_t *q;               /* [cap][hq][D] */
    const int32_t *seq, *idx, *tc;   /* [cap]; tc NULL: no flags, no tiles */
    const int32_t *qtile;            /* [tile_cap][2] */
    int n_tiles, tile_cap, n_split, chunk;
    int max_kv; /* the longest row's keys: the prefill grid covers them, as in drv/cuda_be.c */
} step;

/* What a step leaves (bits): partials after zp_attn_partial alone (dec_*) and after both
 * kernels, and the merged output. */
typedef struct result {
    uint32_t *dec_o, *dec_ml, *o, *ml;
    uint16_t *out;
} result;

static void result_free(result *r) {
    free(r->dec_o), free(r->dec_ml), free(r->o), free(r->ml), free(r->out);
}

static void run_step(const cfg *c, const step *s, result *r) {
    const size_t qn = (size_t)s->cap * c->hq * c->D, pn = (size_t)s->cap * c->hq * s->n_split;
    int32_t counts[2] = {s->n, s->n_tiles};
    CUdeviceptr d_q = gpu_up(g, s->q, 2 * qn), d_seq = gpu_up(g, s->seq, 4 * (size_t)s->cap),
                d_idx = gpu_up(g, s->idx, 4 * (size_t)s->cap), d_n = gpu_up(g, counts, 8),
                d_nt = d_n + 4, d_rows = 0, d_qt = 0;
    unsigned dec_grid = (unsigned)s->cap; /* every row, those past the count exiting */
    if (s->tc) { /* the rows no tile covers, as drv/cuda_be.c launches them */
        int32_t *rows = malloc(4 * (size_t)s->n + 4);
        dec_grid = (unsigned)attn_decode_rows(s->tc, s->n, rows);
        d_rows = gpu_up(g, rows, 4 * (size_t)s->n + 4);
        free(rows);
        d_qt = gpu_up(g, s->qtile, 8 * (size_t)s->tile_cap);
    }
    CUdeviceptr d_po = gpu_poisoned(g, 4 * pn * c->D), d_pml = gpu_poisoned(g, 8 * pn),
                d_out = gpu_poisoned(g, 2 * qn);
    int mb = c->max_blocks, hkv = c->hkv, hq = c->hq, chunk = s->chunk, ns = s->n_split;
    float sc = 1.f / sqrtf((float)c->D);
    void *pa[] = {&d_q, (void *)&c->kc, (void *)&c->vc, &d_seq, &d_idx, (void *)&c->bt, &d_n,
                  &d_rows, &mb, &hkv, &sc, &chunk, &ns, &d_po, &d_pml};
    if (dec_grid) gpu_launch(g, c->part, (unsigned)ns, (unsigned)hkv, dec_grid, 128, 0, pa);
    r->dec_o = malloc(4 * pn * c->D), r->dec_ml = malloc(8 * pn);
    gpu_down(g, r->dec_o, d_po, 4 * pn * c->D);
    gpu_down(g, r->dec_ml, d_pml, 8 * pn);
    if (s->tc) {
        /* prompt rows in longer splits than decode rows, as drv/cuda_be.c launches them
         * (attention_prefill_chunk >= attention_chunk): a grid of those splits only, the
         * kernel marks the rest of the n_split partials empty */
        int pchunk = 2 * chunk;
        void *fa[] = {&d_q, (void *)&c->kc, (void *)&c->vc, &d_seq, &d_idx, (void *)&c->bt, &d_qt, &d_nt,
                      &mb,  &hkv, &sc, &pchunk, &ns, &d_po, &d_pml};
        gpu_launch(g, c->pre, (unsigned)attn_prefill_splits(s->max_kv, pchunk), (unsigned)hkv,
                   (unsigned)s->tile_cap, 128, (unsigned)c->pk.smem, fa);
    }
    r->o = malloc(4 * pn * c->D), r->ml = malloc(8 * pn), r->out = malloc(2 * qn);
    gpu_down(g, r->o, d_po, 4 * pn * c->D);
    gpu_down(g, r->ml, d_pml, 8 * pn);
    void *ma[] = {&d_po, &d_pml, &d_n, &hq, &ns, &d_out};
    gpu_launch(g, c->merge, attn_merge_blocks(hq), (unsigned)s->cap, 1, 32 * ZP_MERGE_HEADS, 0, ma);
    gpu_down(g, r->out, d_out, 2 * qn);
    CUdeviceptr bufs[] = {d_q, d_seq, d_idx, d_n, d_rows, d_qt, d_po, d_pml, d_out};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) CU(g->drv.MemFree(bufs[i]));
}

static int is_neg_inf(uint32_t bits) {
    return bits == 0xff800000u;
}

static void shuffle_tiles(int32_t *qt, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(test_rand_u64(&seed) % (unsigned)(i + 1));
        int32_t f = qt[2 * i], k = qt[2 * i + 1];
        qt[2 * i] = qt[2 * j], qt[2 * i + 1] = qt[2 * j + 1], qt[2 * j] = f, qt[2 * j + 1] = k;
    }
}

/* (rows x heads x splits) partials of row t compared bit for bit; o only where m is finite. */
static size_t partial_diff(const cfg *c, const uint32_t *o1, const uint32_t *ml1, size_t t1, int ns1,
                           const uint32_t *o2, const uint32_t *ml2, size_t t2, int ns2, int n_s) {
    size_t bad = 0;
    for (int h = 0; h < c->hq; h++)
        for (int s = 0; s < n_s; s++) {
            size_t i1 = (t1 * c->hq + h) * ns1 + s, i2 = (t2 * c->hq + h) * ns2 + s;
            if (ml1[2 * i1] != ml2[2 * i2] || ml1[2 * i1 + 1] != ml2[2 * i2 + 1]) {
                bad++;
                continue;
            }
            if (!is_neg_inf(ml1[2 * i1]))
                bad += memcmp(o1 + i1 * c->D, o2 + i2 * c->D, 4 * (size_t)c->D) != 0;
        }
    return bad;
}

enum { N_DEC = 3, N_PRE = 7 };
static const int dec_len[N_DEC] = {1, 100, 2049};
static const int pre_prefix[N_PRE] = {0, 37, 300, 1000, 5, 1500, 0};
static const int pre_rows[N_PRE] = {600, 1, 45, 130, 17, 77, 1};

/* Chunked prefill of prompt 0 (rows a0 .. a0+599 of the one-step run r): each chunk its own
 * step behind two decode rows (contexts 1 and 100). */
static void check_invariance(const cfg *c, const step *one, const result *r, int a0) {
    static const int chunks[] = {1, 7, 64, 3, 100, 16, 41, 9, 64, 5};
    const int qt_rows = attn_tile_rows(c->gqa), row_q = c->hq * c->D;
    size_t bad_part = 0, bad_out = 0, bad_empty = 0, steps = 0;
    int32_t seq[128], idx[128], tc[128], qtile[2 * 128];
    uint16_t *q = malloc(2 * (size_t)128 * row_q);
    for (int p = 0, k = 0; p < pre_rows[0]; k++) {
        int len = chunks[k % (int)(sizeof chunks / sizeof chunks[0])];
        if (len > pre_rows[0] - p) len = pre_rows[0] - p;
        const int n = 2 + len, cap = n + 2;
        int longest = 0;
        for (int t = 0; t < cap; t++) {
            /* the row of `one`: decode rows 0 and a0+600 (contexts 1, 100), then the chunk */
            int ref = t == 0 ? 0 : t == 1 ? a0 + pre_rows[0] : t < n ? a0 + p + t - 2 : -1;
            seq[t] = ref >= 0 ? one->seq[ref] : -1;
            idx[t] = ref >= 0 ? one->idx[ref] : 0;
            tc[t] = t >= 2 && t < n;
            if (ref >= 0) memcpy(q + (size_t)t * row_q, one->q + (size_t)ref * row_q, 2 * (size_t)row_q);
            else memset(q + (size_t)t * row_q, 0xFF, 2 * (size_t)row_q);
            if (ref >= 0 && idx[t] + 1 > longest) longest = idx[t] + 1;
        }
        int nt = 0; /* tiles of random sizes from the chunk's first row */
        for (int f = 2; f < n; nt++) {
            int sz = 1 + (int)(test_rand_u64(&seed) % (unsigned)qt_rows);
            if (sz > n - f) sz = n - f;
            qtile[2 * nt] = f, qtile[2 * nt + 1] = sz, f += sz;
        }
        shuffle_tiles(qtile, nt);
        step s = {.n = n, .cap = cap, .q = q, .seq = seq, .idx = idx, .tc = tc, .qtile = qtile,
                  .n_tiles = nt, .tile_cap = nt, .chunk = one->chunk,
                  .n_split = (longest + one->chunk - 1) / one->chunk, .max_kv = longest};
        result v;
        run_step(c, &s, &v);
        for (int t = 2; t < n; t++) {
            size_t ref = (size_t)(a0 + p + t - 2);
            bad_part += partial_diff(c, v.o, v.ml, (size_t)t, s.n_split, r->o, r->ml, ref,
                                     one->n_split, s.n_split);
            bad_out += memcmp(v.out + (size_t)t * row_q, r->out + ref * row_q, 2 * (size_t)row_q) != 0;
            for (int h = 0; h < c->hq; h++) /* splits past this step's grid: empty in `one` */
                for (int sp = s.n_split; sp < one->n_split; sp++)
                    bad_empty += !is_neg_inf(r->ml[2 * ((ref * c->hq + h) * one->n_split + sp)]);
        }
        result_free(&v);
        p += len, steps++;
    }
    printf("    invariance: %zu chunked steps, %zu partials and %zu rows differ, %zu splits past a "
           "chunk's grid not empty\n",
           steps, bad_part, bad_out, bad_empty);
    CHECKF(bad_part == 0 && bad_out == 0 && bad_empty == 0,
           "batch invariance %s D %d bs %d gqa %d split %d", c->pk.fn, c->D, c->bs, c->gqa,
           one->n_split);
    free(q);
}

static void run_case(const attn_prefill_kernel *pk, int D, int bs, int gqa, int hkv) {
    cfg c = {.D = D, .bs = bs, .gqa = gqa, .hkv = hkv, .hq = hkv * gqa, .pk = *pk};
    const int hq = c.hq, n_seqs = N_DEC + N_PRE, n_pad = 3;
    int seq_len[N_DEC + N_PRE], max_len = 0, n_tok = 0;
    for (int i = 0; i < N_DEC; i++) seq_len[i] = dec_len[i], n_tok++;
    for (int i = 0; i < N_PRE; i++) seq_len[N_DEC + i] = pre_prefix[i] + pre_rows[i], n_tok += pre_rows[i];
    for (int i = 0; i < n_seqs; i++) max_len = seq_len[i] > max_len ? seq_len[i] : max_len;
    const int n = n_tok + n_pad, cap = n + 4;
    c.max_blocks = (max_len + bs - 1) / bs;
    int nblocks = 1;
    for (int i = 0; i < n_seqs; i++) nblocks += (seq_len[i] + bs - 1) / bs;
    /* shuffled physical blocks (block 0 unused: the null block) */
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)nblocks), *bt = calloc((size_t)n_seqs * c.max_blocks, 4);
    for (int i = 0; i < nblocks; i++) perm[i] = i;
    for (int i = nblocks - 1; i > 1; i--) {
        int j = 1 + (int)(test_rand_u64(&seed) % (unsigned)i);
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    for (int s = 0, used = 1; s < n_seqs; s++)
        for (int b = 0; b < (seq_len[s] + bs - 1) / bs; b++) bt[s * c.max_blocks + b] = perm[used++];

    /* rows: decode 0, prompt 0, decode 1, prompts 1..2, decode 2, prompts 3..6, padding */
    int32_t *seq = malloc(4 * (size_t)cap), *idx = malloc(4 * (size_t)cap), *tc = malloc(4 * (size_t)cap);
    int t = 0, a0 = 0;
    for (int part = 0; part < N_DEC + N_PRE; part++) {
        static const int order[N_DEC + N_PRE] = {0, 3, 1, 4, 5, 2, 6, 7, 8, 9}; /* sequence ids */
        int s = order[part];
        if (s == 3) a0 = t;
        if (s < N_DEC) {
            seq[t] = s, idx[t] = dec_len[s] - 1, tc[t++] = 0;
            continue;
        }
        for (int i = 0; i < pre_rows[s - N_DEC]; i++) seq[t] = s, idx[t] = pre_prefix[s - N_DEC] + i, tc[t++] = 1;
    }
    for (; t < cap; t++) seq[t] = -1, idx[t] = 0, tc[t] = t < n; /* marked padding: never tiled */
    int32_t *qtile = malloc(8 * (size_t)(n + 5));
    int n_tiles = attn_prefill_tiles(tc, seq, n, gqa, qtile);
    shuffle_tiles(qtile, n_tiles);
    for (int i = n_tiles; i < n_tiles + 5; i++) qtile[2 * i] = 0x7fffff00, qtile[2 * i + 1] = 999;

    const size_t cache_n = (size_t)nblocks * hkv * bs * D, q_n = (size_t)cap * hq * D;
    uint16_t *kc = malloc(2 * cache_n), *vc = malloc(2 * cache_n), *q = malloc(2 * q_n);
    float *qf = malloc(4 * q_n), *ref = malloc(4 * (size_t)n_tok * hq * D);
    rand_bf16(kc, NULL, cache_n, 2.f, &seed);
    rand_bf16(vc, NULL, cache_n, 1.f, &seed);
    rand_bf16(q, qf, q_n, 1.f, &seed);
    be_batch b = {.n_tokens = n_tok, .n_seqs = n_seqs, .max_blocks = c.max_blocks,
                  .tok_seq = P(seq), .tok_kv_idx = P(idx), .block_tables = P(bt)};
    cpu->attention(cpu, P(ref), P(qf), P(kc), P(vc), ZP_BF16, &b, hq, hkv, D, bs, 1.f / sqrtf((float)D));

    CUmodule ma = gpu_module(g, "attention.cu", D, bs, gqa);
    CUmodule mp = gpu_module(g, pk->file, D, bs, gqa);
    c.part = gpu_fn(g, ma, "zp_attn_partial"), c.merge = gpu_fn(g, ma, "zp_attn_merge");
    c.pre = gpu_fn(g, mp, pk->fn);
    CU(g->drv.FuncSetAttribute(c.pre, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, pk->smem));
    c.kc = gpu_up(g, kc, 2 * cache_n), c.vc = gpu_up(g, vc, 2 * cache_n);
    c.bt = gpu_up(g, bt, 4 * (size_t)n_seqs * c.max_blocks);
    static const int splits[] = {1, 3, 8};
    for (int si = 0; si < 3; si++) {
        int n_split = splits[si], chunk = ((max_len + n_split - 1) / n_split + bs - 1) / bs * bs;
        step plain = {.n = n, .cap = cap, .q = q, .seq = seq, .idx = idx, .n_split = n_split,
                      .chunk = chunk, .max_kv = max_len};
        step mixed = plain;
        mixed.tc = tc, mixed.qtile = qtile, mixed.n_tiles = n_tiles, mixed.tile_cap = n_tiles + 5;
        result r0, r1;
        run_step(&c, &plain, &r0);
        run_step(&c, &mixed, &r1);

        /* partials: decode kernel bits kept, flagged rows left to the prefill kernel, which
         * writes exactly those */
        size_t dec_changed = 0, dec_wrote = 0, pre_missing = 0, pre_strayed = 0, past = 0;
        const size_t per_row = (size_t)hq * n_split;
        for (int row = 0; row < cap; row++) {
            const size_t p0 = (size_t)row * per_row;
            if (row < n && !tc[row]) {
                dec_changed += partial_diff(&c, r1.dec_o, r1.dec_ml, (size_t)row, n_split, r0.dec_o,
                                            r0.dec_ml, (size_t)row, n_split, n_split);
                pre_strayed += memcmp(r1.o + p0 * D, r1.dec_o + p0 * D, 4 * per_row * D) != 0 ||
                               memcmp(r1.ml + 2 * p0, r1.dec_ml + 2 * p0, 8 * per_row) != 0;
                continue;
            }
            for (size_t i = 2 * p0; i < 2 * (p0 + per_row); i++) {
                if (row < n) {
                    dec_wrote += r1.dec_ml[i] != POISON;
                    pre_missing += r1.ml[i] == POISON;
                } else {
                    past += r1.ml[i] != POISON;
                }
            }
            for (size_t i = p0 * D; i < (p0 + per_row) * D; i++) {
                if (row < n) dec_wrote += r1.dec_o[i] != POISON;
                else past += r1.o[i] != POISON;
            }
        }
        /* outputs: decode rows and prompt rows against the CPU; padding and past rows */
        float *of = malloc(4 * q_n);
        bf16_to_f32(of, r1.out, q_n);
        const size_t rq = (size_t)hq * D;
        double dd2 = 0, dr2 = 0, pd2 = 0, pr2 = 0, worst = 0;
        size_t nan = 0, pad_nonzero = 0, past_written = 0;
        int worst_t = -1;
        for (int row = 0; row < n_tok; row++) {
            cmp e = cmp_f32(of + row * rq, ref + row * rq, rq);
            nan += e.nan;
            double d2 = 0, r2 = 0;
            for (size_t i = 0; i < rq; i++) {
                double d = (double)of[row * rq + i] - ref[row * rq + i];
                d2 += d * d, r2 += (double)ref[row * rq + i] * ref[row * rq + i];
            }
            if (tc[row]) pd2 += d2, pr2 += r2;
            else dd2 += d2, dr2 += r2;
            if (e.nan || e.rel > worst) worst = e.nan ? INFINITY : e.rel, worst_t = row;
        }
        for (size_t i = (size_t)n_tok * rq; i < (size_t)n * rq; i++) pad_nonzero += r1.out[i] != 0;
        for (size_t i = (size_t)n * rq; i < q_n; i++) past_written += r1.out[i] != 0xFFFF;
        /* the old path (every row through zp_attn_partial), for scale */
        bf16_to_f32(of, r0.out, q_n);
        double od2 = 0;
        for (int row = 0; row < n_tok; row++)
            if (tc[row])
                for (size_t i = 0; i < rq; i++) {
                    double d = (double)of[row * rq + i] - ref[row * rq + i];
                    od2 += d * d;
                }
        double dec_rel = sqrt(dd2 / dr2), pre_rel = sqrt(pd2 / pr2);
        printf("  %s D %3d bs %3d gqa %d hkv %d split %d (chunk %4d), %d tiles: decode rows rel "
               "%.3g, prompt rows rel %.3g (zp_attn_partial alone %.3g), NaN %zu, worst row %d "
               "(%.3g)\n",
               pk->fn, D, bs, gqa, hkv, n_split, chunk, n_tiles, dec_rel, pre_rel, sqrt(od2 / pr2),
               nan, worst_t, worst);
        CHECKF(nan == 0 && dec_rel <= 1e-2 && pre_rel <= 1e-2,
               "accuracy %s D %d bs %d gqa %d split %d", pk->fn, D, bs, gqa, n_split);
        CHECKF(dec_changed == 0 && dec_wrote == 0,
               "zp_attn_partial over the listed rows: %zu partials of other rows changed, "
               "%zu values of flagged rows written",
               dec_changed, dec_wrote);
        CHECKF(pre_missing == 0 && pre_strayed == 0 && past == 0,
               "%s: %zu partials of its rows missing, %zu other rows touched, "
               "%zu values past the count written", pk->fn, pre_missing, pre_strayed, past);
        CHECKF(pad_nonzero == 0 && past_written == 0, "padding contract: %zu, %zu", pad_nonzero,
               past_written);
        free(of);
        result_free(&r0);
        check_invariance(&c, &mixed, &r1, a0);
        result_free(&r1);
    }
    CU(g->drv.MemFree(c.kc));
    CU(g->drv.MemFree(c.vc));
    CU(g->drv.MemFree(c.bt));
    CU(g->drv.ModuleUnload(ma));
    CU(g->drv.ModuleUnload(mp));
    free(perm), free(bt), free(seq), free(idx), free(tc), free(qtile);
    free(kc), free(vc), free(q), free(qf), free(ref);
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    REQUIRE(!cpu_backend_create(&cpu, 0, 4096, CPU_ISA_AUTO, CPU_PREC_F32));
    static const int dims[] = {64, 128}, bss[] = {16, 32, 64, 128, 256}, gqas[] = {1, 2, 4, 8};
    static const int kinds[] = {ATTN_PREFILL_MMA, ATTN_PREFILL_WGMMA};
    for (int i = 0; i < 2; i++) {
        attn_prefill_kernel pk;
        if (attn_prefill_pick(g->dev.arch, kinds[i], &pk)) { /* wgmma: sm_90 only */
            printf("  SKIP %s: %s\n", kinds[i] == ATTN_PREFILL_WGMMA ? "wgmma" : "mma", err_msg());
            continue;
        }
        for (int d = 0; d < 2; d++)
            for (int b = 0; b < 5; b++)
                for (int k = 0; k < 4; k++) /* 8 kv heads at the Qwen3-8B shape, else 2 */
                    run_case(&pk, dims[d], bss[b], gqas[k],
                             dims[d] == 128 && gqas[k] == 4 && b % 4 == 0 ? 8 : 2);
    }
    cpu->destroy(cpu);
    return test_done("cuda_prefill");
}
