/* test_compress_compaction: cmp_compact (with keep rows from cmp_select, sinks and per-job
 * protected lengths included, or random masks)
 * against a gather from a snapshot of the caches. Fuzzed over thousands of random block
 * tables, kept sets and head counts, kv dtypes f32/bf16/f16, in three target modes: in place
 * (dst == src), fresh blocks, and copy-on-write (fresh leading blocks, then the job's own
 * blocks in place). Whole K, V and C arrays are compared byte for byte, so the check covers
 * the kept set, its order, the score C moving with its token, in-place safety and every
 * untouched block staying unchanged. Runs on a 1-thread and a 2-thread backend. */
#include "drv/backend.h"
#include "tests/testlib.h"

#include <stdint.h>
#include <string.h>

#define MAXJ 4
#define MAXB 6
#define MAXBS 16
#define MAXPOS (MAXB * MAXBS + 2) /* with room for row padding */
#define MAXHKV 3
#define MAXD 9
#define NBLK (2 * MAXJ * MAXB + 2)
#define KVBYTES (NBLK * MAXHKV * MAXBS * MAXD * 4)
#define NC (NBLK * MAXHKV * MAXBS)

typedef struct {
    backend *be;
    be_ptr kc, vc, cc, keep, scores, work, nb, kvl, nkeep, qslot, flags, protect, src, dst;
    be_ptr tab; /* layer tables of the one layer: K, V, C bases */
} dev;

static void dev_open(dev *d, int threads) {
    REQUIRE(cpu_backend_create(&d->be, threads, 64, CPU_ISA_AUTO, CPU_PREC_F32) == 0);
    backend *be = d->be;
    REQUIRE(be->reserve(be, 4u << 20, 0) == 0);
    size_t pos = (size_t)MAXJ * MAXHKV * MAXPOS;
    REQUIRE(be->alloc(be, KVBYTES, 64, &d->kc, "k") == 0);
    REQUIRE(be->alloc(be, KVBYTES, 64, &d->vc, "v") == 0);
    REQUIRE(be->alloc(be, NC * 4, 64, &d->cc, "c") == 0);
    REQUIRE(be->alloc(be, pos * 4, 64, &d->keep, "keep") == 0);
    REQUIRE(be->alloc(be, pos * 4, 64, &d->scores, "scores") == 0);
    REQUIRE(be->alloc(be, pos * 8, 64, &d->work, "work") == 0);
    be_ptr *arr[] = {&d->nb, &d->kvl, &d->nkeep, &d->qslot, &d->flags, &d->protect};
    for (int i = 0; i < 6; i++) REQUIRE(be->alloc(be, MAXJ * 4, 64, arr[i], "jobs") == 0);
    REQUIRE(be->alloc(be, sizeof(int32_t) * MAXJ * MAXB, 64, &d->src, "src") == 0);
    REQUIRE(be->alloc(be, sizeof(int32_t) * MAXJ * MAXB, 64, &d->dst, "dst") == 0);
    REQUIRE(be->alloc(be, 3 * 8, 64, &d->tab, "layer tables") == 0);
    uint64_t tab[3] = {d->kc, d->vc, d->cc};
    REQUIRE(be->upload(be, d->tab, tab, sizeof tab) == 0);
}

static unsigned long long rng = 99;
static int rnd(int n) { return (int)(test_rand_u64(&rng) % (unsigned long long)n); }

static uint8_t k0[KVBYTES], v0[KVBYTES], kw[KVBYTES], vw[KVBYTES], kg[KVBYTES], vg[KVBYTES];
static float c0[NC], cw[NC], cg[NC], sc[MAXJ * MAXHKV * MAXPOS];
static int32_t keep[MAXJ * MAXHKV * MAXPOS];

static int modes[3], from_select;

/* One random case on backend d; returns 0 when it matches the snapshot gather. */
static int run_case(dev *d, int id) {
    backend *be = d->be;
    int n_jobs = 1 + rnd(MAXJ), hkv = 1 + rnd(MAXHKV), dim = 1 + rnd(MAXD);
    int bs = rnd(2) ? 4 : MAXBS, qcl = rnd(2) ? 1 : 4;
    zp_dtype kvt = (zp_dtype)rnd(3);
    size_t esz = zp_dtype_size(kvt);
    int32_t nb[MAXJ], kvl[MAXJ], nkeep[MAXJ], protect[MAXJ], zero[MAXJ] = {0}, src[MAXJ * MAXB], dst[MAXJ * MAXB];
    int perm[NBLK], nblk = NBLK, used = 0, max_pos = 0, max_keep = 0;
    for (int i = 0; i < nblk; i++) perm[i] = i;
    for (int i = nblk - 1; i > 0; i--) {
        int k = rnd(i + 1), t = perm[i];
        perm[i] = perm[k], perm[k] = t;
    }
    for (int b = 0; b < n_jobs; b++) {
        nb[b] = 1 + rnd(MAXB);
        int N = nb[b] * bs;
        kvl[b] = rnd(2) ? N : (nb[b] - 1) * bs + 1 + rnd(bs);
        /* the engine keeps whole blocks (M * bs); any count up to N must work */
        nkeep[b] = rnd(2) ? rnd(nb[b]) * bs : rnd(N + 1);
        protect[b] = rnd(2) ? rnd(N + 1) : 0;
        for (int i = 0; i < MAXB; i++) src[b * MAXB + i] = dst[b * MAXB + i] = -1;
        for (int i = 0; i < nb[b]; i++) src[b * MAXB + i] = perm[used++];
        if (N > max_pos) max_pos = N;
        if (nkeep[b] > max_keep) max_keep = nkeep[b];
    }
    max_pos += rnd(3), max_keep += rnd(3); /* row strides of their own */
    for (int b = 0; b < n_jobs; b++) {
        int mode = rnd(3), need = (nkeep[b] + bs - 1) / bs, fresh = mode == 1 ? need : mode == 2 ? rnd(need + 1) : 0;
        modes[mode]++;
        for (int i = 0; i < need; i++) dst[b * MAXB + i] = i < fresh ? perm[used++] : src[b * MAXB + i];
    }
    size_t kvb = (size_t)nblk * (size_t)hkv * (size_t)bs * (size_t)dim * esz;
    size_t nc = (size_t)nblk * (size_t)hkv * (size_t)bs;
    for (size_t i = 0; i < kvb; i++) k0[i] = (uint8_t)test_rand_u64(&rng), v0[i] = (uint8_t)test_rand_u64(&rng);
    for (size_t i = 0; i < nc; i++) c0[i] = test_randf(&rng);
    be->upload(be, d->kc, k0, kvb);
    be->upload(be, d->vc, v0, kvb);
    be->upload(be, d->cc, c0, nc * 4);
    be->upload(be, d->nb, nb, sizeof nb);
    be->upload(be, d->kvl, kvl, sizeof kvl);
    be->upload(be, d->nkeep, nkeep, sizeof nkeep);
    be->upload(be, d->qslot, zero, sizeof zero);
    be->upload(be, d->flags, zero, sizeof zero);
    be->upload(be, d->protect, protect, sizeof protect);
    be->upload(be, d->src, src, sizeof src);
    be->upload(be, d->dst, dst, sizeof dst);
    be_cjobs j = {n_jobs, n_jobs, MAXB, max_pos, max_keep, d->nb, d->kvl, d->nkeep, d->qslot, d->flags, d->protect, d->src, d->dst, 0, 0, NULL, NULL};
    be_cparams p = {.layers = 1, .hq = hkv, .hkv = hkv, .dim = dim, .bs = bs, .qcl = qcl,
                    .sink_len = rnd(2) ? 2 : 0, .redundancy = 2};
    int fails = 0;
    if (rnd(2)) {
        /* keep rows from cmp_select on scores with many ties; checked against a naive rank */
        from_select++;
        for (int i = 0; i < n_jobs * hkv * max_pos; i++) sc[i] = (float)rnd(5);
        be->upload(be, d->scores, sc, sizeof sc);
        be->cmp_select(be, d->keep, d->scores, d->work, &j, 1, &p);
        be->download(be, keep, d->keep, sizeof keep);
        for (int b = 0; b < n_jobs; b++)
            for (int h = 0; h < hkv; h++) {
                size_t o = ((size_t)b * (size_t)hkv + (size_t)h) * (size_t)max_pos;
                size_t ko = ((size_t)b * (size_t)hkv + (size_t)h) * (size_t)max_keep;
                float key[MAXPOS];
                int N = nb[b] * bs, n = 0;
                for (int q = 0; q < N; q++)
                    key[q] = q >= kvl[b] ? -INFINITY : q >= kvl[b] - qcl || q < p.sink_len || q < protect[b] ? INFINITY : sc[o + (size_t)q];
                for (int q = 0; q < N; q++) {
                    int better = 0;
                    for (int r = 0; r < N; r++) better += key[r] > key[q] || (key[r] == key[q] && r > q);
                    if (better < nkeep[b]) fails += n >= nkeep[b] || keep[ko + (size_t)n++] != q;
                }
                fails += n != nkeep[b];
            }
        CHECKF(fails == 0, "case %d: cmp_select kept set differs from the naive selection", id);
    } else {
        /* random masks: a uniform subset of nkeep positions, ascending */
        for (int b = 0; b < n_jobs; b++)
            for (int h = 0; h < hkv; h++) {
                int N = nb[b] * bs, k = nkeep[b], n = 0;
                for (int q = 0; q < N && n < k; q++)
                    if (rnd(N - q) < k - n) keep[((size_t)b * (size_t)hkv + (size_t)h) * (size_t)max_keep + (size_t)n++] = q;
            }
        be->upload(be, d->keep, keep, sizeof keep);
    }
    be->cmp_compact(be, d->tab, d->tab + 8, d->tab + 16, kvt, d->keep, &j, 0, 1, &p);
    be->download(be, kg, d->kc, kvb);
    be->download(be, vg, d->vc, kvb);
    be->download(be, cg, d->cc, nc * 4);
    /* expected: the snapshot, with every target slot j gathered from source keep[j] */
    memcpy(kw, k0, kvb);
    memcpy(vw, v0, kvb);
    memcpy(cw, c0, nc * 4);
    size_t rb = (size_t)dim * esz;
    for (int b = 0; b < n_jobs; b++)
        for (int h = 0; h < hkv; h++)
            for (int t = 0; t < nkeep[b]; t++) {
                int s = keep[((size_t)b * (size_t)hkv + (size_t)h) * (size_t)max_keep + (size_t)t];
                size_t si = ((size_t)src[b * MAXB + s / bs] * (size_t)hkv + (size_t)h) * (size_t)bs + (size_t)(s % bs);
                size_t di = ((size_t)dst[b * MAXB + t / bs] * (size_t)hkv + (size_t)h) * (size_t)bs + (size_t)(t % bs);
                memcpy(kw + di * rb, k0 + si * rb, rb);
                memcpy(vw + di * rb, v0 + si * rb, rb);
                cw[di] = c0[si];
            }
    int ok = memcmp(kg, kw, kvb) == 0 && memcmp(vg, vw, kvb) == 0 && memcmp(cg, cw, nc * 4) == 0;
    CHECKF(ok, "case %d: caches after compaction differ from the gather (%d jobs, hkv %d, bs %d, %s)",
           id, n_jobs, hkv, bs, zp_dtype_name(kvt));
    return ok && fails == 0;
}

int main(void) {
    dev d[2];
    dev_open(&d[0], 1);
    dev_open(&d[1], 2);
    int n = 0;
    for (; n < 4000 && test_failures < 10; n++) run_case(&d[n % 2], n);
    printf("%d cases (in place %d, fresh %d, copy-on-write %d job compactions; %d from cmp_select)\n",
           n, modes[0], modes[1], modes[2], from_select);
    d[0].be->destroy(d[0].be);
    d[1].be->destroy(d[1].be);
    return test_done("compress_compaction");
}
