/* test_cuda_cmp_select: the compression kernels of rtc_kernels/compress_select.cu
 * (zp_cmp_redundancy, zp_cmp_select, zp_cmp_compact) against the CPU backend's cmp_redundancy,
 * cmp_select and cmp_compact run on host copies of the same data. Fresh random inputs, GPU
 * outputs poisoned (0xFF bytes) first and the CPU's host outputs likewise, whole buffers
 * compared, so a stray write, a skipped row or a padding CTA that runs shows.
 *
 * Shapes: head dims 64 and 128, block sizes 16 to 256, kv heads 1 to 8 (query-head groups 1 to
 * 8: the kernels do not depend on the group), 1 to 4 jobs of 1 to 40 blocks behind shuffled
 * block tables, full and partial last blocks, a grid two job rows larger than the device-side
 * job count. Every launch covers LAYERS layers at layer0 = 1 (the cache bases are a device
 * array) and is repeated as LAYERS per-layer launches, which must give the same bytes.
 *
 * Redundancy (lightning, raw, off; lambda 0-1, temperature 0.05-2, threshold -1 to 1) on keys
 * built from a few directions plus noise, exact copies and zero rows, so similarities cross
 * every threshold: the work rows (r and 1/|K| with the "column resolved" sign) must equal the
 * CPU's byte for byte (so every similarity decision is the CPU's); scores within
 *   |S_gpu - S_cpu| <= (2 kv_len + 16) 2^-24 (1 - lambda) R + 2^-22 |S_cpu|  (+1e-37),
 * for expf (<= 3 ulp apart between CUDA and glibc), a sum of kv_len positive terms in two
 * orders and the last roundings (an ulp of S either way), R the CPU's softmax recomputed in
 * double; unused positions and "off" bit-identical. The largest error seen, as a fraction of
 * this bound, is printed.
 * Selection then runs on each side's own scores: kept positions that differ are counted and
 * each must lie within 2 * delta of the CPU's selection threshold (delta: the row's largest
 * score difference; the k-th largest value moves by at most delta). On the CPU's scores the
 * GPU's keep rows must be the CPU's exactly.
 * Selection edge cases: ties, -0 / +0, +-inf and NaN scores, qcl 1 / 4 / 16 / bs, 0-5 sinks,
 * per-job protected lengths (0 .. n_blocks * bs), recent windows (protect_recent 0, 40, 128 and
 * one larger than every cap, half of what the protected prefix leaves of n_keep),
 * jobs shorter than qcl, n_keep 0, 1, kv_len, n_blocks * bs, past kv_len (unused positions
 * fill up), multiples of bs and random: keep buffers equal byte for byte.
 * Compaction in place, into fresh blocks and mixed (fresh leading blocks, then the job's own
 * blocks at their own indices), keep rows random per layer or from the selection: K, V and C
 * of every layer equal the CPU's byte for byte.
 * SKIP (77) without a GPU. */
#include "drv/backend.h"
#include "tests/cuda_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXJ 4
#define CAP (MAXJ + 2) /* job rows of the grid; rows past the device-side count are padding */
#define MAXB 40
#define LAYERS 3 /* layers of a launch; the caches have LAYERS + 1 layers, launches start at 1 */
#define THREADS 256

static gpu G, *g = &G;
static backend *cpu;
static unsigned long long seed = 0xc5e1ec7ull;
static CUfunction f_red, f_sel, f_cmp;

#define P(x) ((be_ptr)(uintptr_t)(x))

static int rnd(int n) { return (int)(test_rand_u64(&seed) % (unsigned long long)n); }
static float unif(void) { return (float)((test_rand_u64(&seed) >> 40) * (1.0 / (1ull << 24))); }

/* One configuration: the jobs (host copies) and every buffer on both sides. */
typedef struct {
    int D, bs, hkv, hq, n_jobs, max_blocks, max_pos, max_keep, nblk, pool0;
    int32_t nb[CAP], kvl[CAP], nkeep[CAP], prot[CAP], src[CAP * MAXB], dst[CAP * MAXB];
    size_t kv_n, c_n, sc_n, kp_n; /* elements per layer: K (or V), C, scores, keep */
    uint16_t *k[LAYERS + 1], *v[LAYERS + 1];
    float *c[LAYERS + 1];
    CUdeviceptr dk[LAYERS + 1], dv[LAYERS + 1], dc[LAYERS + 1], kcl, vcl, ccl;
    CUdeviceptr njobs, dnb, dkvl, dnkeep, dprot, dsrc, ddst, dsc, dwork, dkeep;
} cfg;

static void up(CUdeviceptr d, const void *h, size_t bytes) {
    CU(g->drv.MemcpyHtoDAsync(d, h, bytes, g->dev.compute));
    CU(g->drv.StreamSynchronize(g->dev.compute));
}

static void poison(CUdeviceptr d, size_t bytes) {
    CU(g->drv.MemsetD8Async(d, 0xFF, bytes, g->dev.compute));
    CU(g->drv.StreamSynchronize(g->dev.compute));
}

/* A host layer table of the LAYERS + 1 caches in per_layer (the CPU ops read bases from it). */
static uint64_t *layer_table(void **per_layer) {
    static uint64_t t[LAYERS + 1];
    for (int l = 0; l <= LAYERS; l++) t[l] = P(per_layer[l]);
    return t;
}

static be_cjobs host_jobs(cfg *c) {
    static int32_t zero[CAP]; /* qslot and flags: not read by these ops */
    return (be_cjobs){c->n_jobs,  CAP,       c->max_blocks, c->max_pos, c->max_keep,
                      P(c->nb),   P(c->kvl), P(c->nkeep),   P(zero),    P(zero),
                      P(c->prot), P(c->src), P(c->dst),     0,          0,
                      NULL,       NULL};
}

/* Padding rows repeat job 0, so a CTA past the device-side count would write real data. */
static void upload_jobs(cfg *c) {
    for (int b = c->n_jobs; b < CAP; b++) {
        c->nb[b] = c->nb[0], c->kvl[b] = c->kvl[0], c->nkeep[b] = c->nkeep[0];
        c->prot[b] = c->prot[0];
        memcpy(c->src + b * MAXB, c->src, sizeof(int32_t) * MAXB);
        memcpy(c->dst + b * MAXB, c->dst, sizeof(int32_t) * MAXB);
    }
    up(c->njobs, &c->n_jobs, 4);
    up(c->dnb, c->nb, sizeof c->nb);
    up(c->dkvl, c->kvl, sizeof c->kvl);
    up(c->dnkeep, c->nkeep, sizeof c->nkeep);
    up(c->dprot, c->prot, sizeof c->prot);
    up(c->dsrc, c->src, sizeof c->src);
    up(c->ddst, c->dst, sizeof c->dst);
}

static void upload_caches(cfg *c) {
    for (int l = 0; l <= LAYERS; l++) {
        up(c->dk[l], c->k[l], 2 * c->kv_n);
        up(c->dv[l], c->v[l], 2 * c->kv_n);
        up(c->dc[l], c->c[l], 4 * c->c_n);
    }
}

/* Keys from 4 directions times 0.5-1.5 plus noise of 0-1.2, one row in 16 an exact copy of an
 * earlier row and one in 16 zero: cosines spread over [-1, 1] with ties and degenerate rows. */
static void gen_keys(uint16_t *k, size_t rows, int D) {
    float dir[4][128];
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < D; e++) dir[i][e] = 2 * unif() - 1;
    for (size_t r = 0; r < rows; r++) {
        uint16_t *o = k + r * (size_t)D;
        int u = rnd(16);
        if (u == 0 && r > 0) {
            memcpy(o, k + (size_t)rnd((int)r) * (size_t)D, 2 * (size_t)D);
        } else if (u == 1) {
            memset(o, 0, 2 * (size_t)D);
        } else {
            int d = rnd(4);
            float a = 0.5f + unif(), s = 1.2f * unif();
            for (int e = 0; e < D; e++) o[e] = zp_f32_to_bf16(a * dir[d][e] + s * (2 * unif() - 1));
        }
    }
}

static void launch_red(cfg *c, CUdeviceptr sc, int64_t sl, CUdeviceptr w, int64_t wl, int layer0,
                       int n_layers, const be_cparams *p) {
    int mb = c->max_blocks, mp = c->max_pos, hk = c->hkv, mode = p->redundancy;
    float lam = p->lambda, tem = p->temperature, thr = p->threshold;
    void *a[] = {&sc, &sl, &w,  &wl,   &c->kcl, &layer0, &c->njobs, &c->dkvl,
                 &c->dsrc, &mb, &mp, &hk, &mode, &lam,    &tem,    &thr};
    gpu_launch(g, f_red, (unsigned)c->hkv, CAP, (unsigned)n_layers, THREADS, 0, a);
}

static void launch_sel(cfg *c, CUdeviceptr kp, int64_t kl, CUdeviceptr sc, int64_t sl,
                       int n_layers, const be_cparams *p) {
    int mp = c->max_pos, mk = c->max_keep, hk = c->hkv, qcl = p->qcl, sink = p->sink_len;
    int recent = p->recent;
    void *a[] = {&kp,        &kl,       &sc, &sl, &c->njobs, &c->dnb, &c->dkvl,
                 &c->dnkeep, &c->dprot, &mp, &mk, &hk,       &qcl,    &sink, &recent};
    gpu_launch(g, f_sel, (unsigned)c->hkv, CAP, (unsigned)n_layers, THREADS, 0, a);
}

static void launch_cmp(cfg *c, CUdeviceptr kp, int64_t kl, int layer0, int n_layers) {
    int mb = c->max_blocks, mk = c->max_keep, hk = c->hkv;
    void *a[] = {&c->kcl, &c->vcl, &c->ccl, &layer0,  &kp,      &kl, &c->njobs,
                 &c->dnkeep, &c->dsrc, &c->ddst, &mb, &mk, &hk};
    gpu_launch(g, f_cmp, (unsigned)c->hkv, CAP, (unsigned)n_layers, THREADS, 0, a);
}

static be_cparams params(const cfg *c, int qcl, int sink) {
    return (be_cparams){.layers = LAYERS + 1, .hq = c->hq, .hkv = c->hkv, .dim = c->D, .bs = c->bs,
                        .qcl = qcl, .scale = 1.f / sqrtf((float)c->D), .redundancy = 2,
                        .sink_len = sink};
}

/* Protected score of position p as cmp_select ranks it. */
static float protect(const cfg *c, const be_cparams *p, int b, int pos, float s) {
    if (pos >= c->kvl[b]) return -INFINITY;
    int k = p->sink_len > c->prot[b] ? p->sink_len : c->prot[b];
    int rec = p->recent < (c->nkeep[b] - k) / 2 ? p->recent : (c->nkeep[b] - k) / 2;
    rec = rec > p->qcl ? rec : p->qcl;
    return pos >= c->kvl[b] - rec || pos < p->sink_len || pos < c->prot[b] ? INFINITY : s;
}

static long n_red_rows, n_sel_diff, n_sel_rows;
static double worst_ratio; /* largest |S_gpu - S_cpu| / tolerance seen */

/* The selection on each side's own post-redundancy scores (scg GPU, scc CPU, LAYERS layers):
 * counts differing kept positions and checks each lies within 2 delta of the threshold. */
static void select_after(cfg *c, const be_cparams *p, const float *scg, const float *scc,
                         const char *what) {
    size_t kb = 4 * c->kp_n * LAYERS;
    int32_t *kg = malloc(kb), *kc = malloc(kb);
    poison(c->dkeep, kb);
    launch_sel(c, c->dkeep, (int64_t)c->kp_n, c->dsc, (int64_t)c->sc_n, LAYERS, p);
    gpu_down(g, kg, c->dkeep, kb);
    memset(kc, 0xFF, kb);
    be_cjobs j = host_jobs(c);
    float *wk = malloc(8 * c->sc_n * LAYERS);
    cpu->cmp_select(cpu, P(kc), P(scc), P(wk), &j, LAYERS, p); /* layer l's slab at l * kp_n */
    char *in_g = malloc((size_t)c->max_pos), *in_c = malloc((size_t)c->max_pos);
    long diff = 0, bad = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int b = 0; b < c->n_jobs; b++)
            for (int h = 0; h < c->hkv; h++) {
                size_t row = (size_t)b * (size_t)c->hkv + (size_t)h;
                const float *sg = scg + (size_t)l * c->sc_n + row * (size_t)c->max_pos;
                const float *sc = scc + (size_t)l * c->sc_n + row * (size_t)c->max_pos;
                const int32_t *rg = kg + (size_t)l * c->kp_n + row * (size_t)c->max_keep;
                const int32_t *rc = kc + (size_t)l * c->kp_n + row * (size_t)c->max_keep;
                memset(in_g, 0, (size_t)c->max_pos), memset(in_c, 0, (size_t)c->max_pos);
                double delta = 0, thr = INFINITY;
                int ok = 1;
                for (int i = 0; i < c->nkeep[b]; i++) {
                    ok &= rg[i] >= 0 && rg[i] < c->nb[b] * c->bs && (i == 0 || rg[i] > rg[i - 1]);
                    if (!ok) break;
                    in_g[rg[i]] = 1, in_c[rc[i]] = 1;
                    double v = protect(c, p, b, rc[i], sc[rc[i]]);
                    if (v < thr) thr = v;
                }
                CHECKF(ok, "%s: layer %d job %d head %d: GPU keep row not ascending in range", what, l, b, h);
                if (!ok) continue;
                for (int q = 0; q < c->kvl[b]; q++) {
                    double d = fabs((double)sg[q] - sc[q]);
                    if (!(d <= delta)) delta = d;
                }
                n_sel_rows++;
                for (int q = 0; q < c->nb[b] * c->bs; q++) {
                    if (in_g[q] == in_c[q]) continue;
                    diff++;
                    double s = protect(c, p, b, q, sc[q]);
                    if (!(isfinite(thr) && isfinite(s) && fabs(s - thr) <= 2 * delta)) {
                        bad++;
                        fprintf(stderr, "  %s: layer %d job %d head %d position %d differs: S %.9g, "
                                "threshold %.9g, delta %.3g\n", what, l, b, h, q, s, thr, delta);
                    }
                }
            }
    n_sel_diff += diff;
    printf("      %s: %ld kept positions differ (GPU vs CPU scores), %ld of them away from the "
           "threshold\n", what, diff, bad);
    CHECKF(bad == 0, "%s: %ld kept positions differ away from the threshold", what, bad);
    /* the same scores on both sides: exactly the CPU's rows */
    up(c->dsc, scc, 4 * c->sc_n * LAYERS);
    poison(c->dkeep, kb);
    launch_sel(c, c->dkeep, (int64_t)c->kp_n, c->dsc, (int64_t)c->sc_n, LAYERS, p);
    gpu_down(g, kg, c->dkeep, kb);
    CHECKF(!memcmp(kg, kc, kb), "%s: keep rows on the CPU's scores differ from the CPU's", what);
    free(kg), free(kc), free(wk), free(in_g), free(in_c);
}

/* Redundancy with parameters p on fresh scores, multi-layer and per layer, then selection. */
static void check_redundancy(cfg *c, be_cparams *p) {
    const size_t sn = c->sc_n * LAYERS, wn = 2 * c->sc_n * LAYERS;
    float *s0 = malloc(4 * sn), *sg = malloc(4 * sn), *sc = malloc(4 * sn), *s1 = malloc(4 * sn);
    float *wg = malloc(4 * wn), *wc = malloc(4 * wn), *w1 = malloc(4 * wn);
    for (size_t i = 0; i < sn; i++) s0[i] = -INFINITY;
    for (int l = 0; l < LAYERS; l++)
        for (int b = 0; b < CAP; b++)
            for (int h = 0; h < c->hkv; h++)
                for (int q = 0; q < c->kvl[b]; q++) {
                    int u = rnd(8);
                    s0[(size_t)l * c->sc_n + ((size_t)b * (size_t)c->hkv + (size_t)h) * (size_t)c->max_pos + (size_t)q] =
                        u == 0 ? (float)rnd(8) / 8 : u == 1 ? -0.f : unif();
                }
    up(c->dsc, s0, 4 * sn);
    poison(c->dwork, 4 * wn);
    launch_red(c, c->dsc, (int64_t)c->sc_n, c->dwork, (int64_t)(2 * c->sc_n), 1, LAYERS, p);
    gpu_down(g, sg, c->dsc, 4 * sn);
    gpu_down(g, wg, c->dwork, 4 * wn);
    /* per-layer launches must give the same bytes */
    up(c->dsc, s0, 4 * sn);
    poison(c->dwork, 4 * wn);
    for (int l = 0; l < LAYERS; l++)
        launch_red(c, c->dsc + 4 * c->sc_n * (size_t)l, 0, c->dwork + 8 * c->sc_n * (size_t)l, 0, l + 1, 1, p);
    gpu_down(g, s1, c->dsc, 4 * sn);
    gpu_down(g, w1, c->dwork, 4 * wn);
    CHECKF(!memcmp(s1, sg, 4 * sn) && !memcmp(w1, wg, 4 * wn),
           "redundancy %d: per-layer launches differ from the multi-layer launch", p->redundancy);

    memcpy(sc, s0, 4 * sn);
    memset(wc, 0xFF, 4 * wn);
    be_cjobs j = host_jobs(c);
    cpu->cmp_redundancy(cpu, P(sc), P(layer_table((void **)c->k)), ZP_BF16, P(wc), &j, 1, LAYERS,
                        p);
    CHECKF(!memcmp(wg, wc, 4 * wn), "redundancy %d lambda %g T %g threshold %g: work (r, 1/|K|) "
           "differs from the CPU's", p->redundancy, p->lambda, p->temperature, p->threshold);
    long bad = 0, nan = 0;
    double worst = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int b = 0; b < CAP; b++)
            for (int h = 0; h < c->hkv; h++) {
                size_t row = (size_t)b * (size_t)c->hkv + (size_t)h;
                size_t o = (size_t)l * c->sc_n + row * (size_t)c->max_pos;
                const float *r = wc + 2 * c->sc_n * (size_t)l + row * 2 * (size_t)c->max_pos;
                int kvl = b < c->n_jobs && p->redundancy != 2 ? c->kvl[b] : 0;
                double den = (double)p->temperature * (p->redundancy == 0 ? c->bs : c->kvl[b]), mx = -INFINITY, sum = 0;
                for (int q = 0; q < kvl; q++) mx = r[q] / den > mx ? r[q] / den : mx;
                for (int q = 0; q < kvl; q++) sum += exp(r[q] / den - mx);
                for (int q = 0; q < c->max_pos; q++) {
                    if (q >= kvl) {
                        bad += memcmp(&sg[o + (size_t)q], &sc[o + (size_t)q], 4) != 0;
                        continue;
                    }
                    double R = exp(r[q] / den - mx) / sum;
                    double tol = ldexp((2.0 * kvl + 16) * (1 - p->lambda) * R, -24) +
                                 ldexp(fabs(sc[o + (size_t)q]), -22) + 1e-37;
                    double d = fabs((double)sg[o + (size_t)q] - sc[o + (size_t)q]);
                    nan += isnan(sg[o + (size_t)q]);
                    if (!(d <= tol)) bad++;
                    if (d / tol > worst) worst = d / tol;
                }
                n_red_rows += kvl > 0;
            }
    if (worst > worst_ratio) worst_ratio = worst;
    printf("    redundancy %d lambda %.2f T %.2f threshold %+.2f: work %s, |dS|/tol <= %.3g, %ld "
           "outside, %ld NaN\n", p->redundancy, p->lambda, p->temperature, p->threshold,
           memcmp(wg, wc, 4 * wn) ? "DIFFERS" : "bit-identical", worst, bad, nan);
    CHECKF(bad == 0 && nan == 0, "redundancy %d: %ld scores outside the tolerance, %ld NaN", p->redundancy, bad, nan);

    /* selection on each side's scores: the engine's qcl 16 and n_keep (n_blocks - 1) * bs */
    be_cparams ps = *p;
    ps.qcl = 16, ps.sink_len = rnd(2) ? 4 : 0, ps.recent = rnd(2) ? 128 : 0;
    int max_keep = 0;
    for (int b = 0; b < c->n_jobs; b++) {
        c->nkeep[b] = c->nb[b] > 1 ? (c->nb[b] - 1) * c->bs : c->bs / 2;
        c->prot[b] = rnd(2) ? rnd(c->nkeep[b] + 1) : 0; /* the engine's: below n_keep */
        max_keep = c->nkeep[b] > max_keep ? c->nkeep[b] : max_keep;
    }
    c->max_keep = max_keep;
    c->kp_n = (size_t)CAP * (size_t)c->hkv * (size_t)c->max_keep;
    upload_jobs(c);
    up(c->dsc, sg, 4 * sn);
    select_after(c, &ps, sg, sc, "selection");
    free(s0), free(sg), free(sc), free(s1), free(wg), free(wc), free(w1);
}

/* Selection edge cases on crafted scores; keep buffers must equal the CPU's byte for byte. */
static void check_select(cfg *c, int round) {
    static const int qcls[] = {1, 4, 16, 0};
    be_cparams p = params(c, qcls[round % 4] ? qcls[round % 4] : c->bs, (int[]){0, 2, 5}[round % 3]);
    p.recent = (int[]){0, 0, 40, 128, 100000}[round % 5]; /* protect_recent: off, or capped */
    int max_keep = 1;
    for (int b = 0; b < c->n_jobs; b++) {
        int N = c->nb[b] * c->bs;
        c->kvl[b] = round % 5 == 4 ? 1 + rnd(3 < N ? 3 : N) : (c->nb[b] - 1) * c->bs + 1 + rnd(c->bs);
        int e = rnd(9), kvl = c->kvl[b], past = kvl + 1 + rnd(c->bs);
        c->nkeep[b] = e == 0 ? 0 : e == 1 ? 1 : e == 2 ? kvl : e == 3 ? N
                    : e == 4 ? (past < N ? past : N) : e == 5 ? (c->nb[b] - 1) * c->bs : 1 + rnd(N);
        c->prot[b] = rnd(3) ? 0 : rnd(N + 1); /* also past n_keep: the latest protected win */
        max_keep = c->nkeep[b] > max_keep ? c->nkeep[b] : max_keep;
    }
    c->max_keep = max_keep + rnd(3);
    c->kp_n = (size_t)CAP * (size_t)c->hkv * (size_t)c->max_keep;
    upload_jobs(c);
    const size_t sn = c->sc_n * LAYERS, kb = 4 * c->kp_n * LAYERS;
    float *s = malloc(4 * sn), *wk = malloc(8 * c->sc_n * LAYERS);
    int32_t *kg = malloc(kb), *k1 = malloc(kb), *kc = malloc(kb);
    static const float special[] = {-1.f, 0.f, -0.f, 0.25f, 0.5f, 1.f, INFINITY, -INFINITY, NAN};
    int ties = rnd(2); /* few distinct values (long runs of ties) or mostly distinct ones */
    for (size_t i = 0; i < sn; i++) {
        int u = rnd(ties ? 2 : 16);
        s[i] = u == 0 ? special[rnd(9)] : ties ? (float)rnd(4) / 4 : unif();
    }
    up(c->dsc, s, 4 * sn);
    poison(c->dkeep, kb);
    launch_sel(c, c->dkeep, (int64_t)c->kp_n, c->dsc, (int64_t)c->sc_n, LAYERS, &p);
    gpu_down(g, kg, c->dkeep, kb);
    poison(c->dkeep, kb);
    for (int l = 0; l < LAYERS; l++)
        launch_sel(c, c->dkeep + 4 * c->kp_n * (size_t)l, 0, c->dsc + 4 * c->sc_n * (size_t)l, 0, 1, &p);
    gpu_down(g, k1, c->dkeep, kb);
    memset(kc, 0xFF, kb);
    be_cjobs j = host_jobs(c);
    cpu->cmp_select(cpu, P(kc), P(s), P(wk), &j, LAYERS, &p);
    n_sel_rows += (long)LAYERS * c->n_jobs * c->hkv;
    CHECKF(!memcmp(kg, kc, kb),
           "selection round %d (qcl %d, recent %d, sinks %d, protect %d.., %s): keep rows "
           "differ from the CPU's",
           round, p.qcl, p.recent, p.sink_len, c->prot[0], ties ? "ties" : "distinct");
    CHECKF(!memcmp(k1, kg, kb), "selection round %d: per-layer launches differ", round);
    free(s), free(wk), free(kg), free(k1), free(kc);
}

/* Compaction with random keep rows (odd rounds: the GPU selection's), each job in target mode
 * (round + job) % 3: 0 in place, 1 fresh blocks, 2 fresh leading blocks then the job's own. */
static void check_compact(cfg *c, int round) {
    int fresh_used = 0, modes[3] = {0};
    be_cparams p = params(c, 4, 0);
    int max_keep = 1;
    for (int b = 0; b < c->n_jobs; b++) {
        int N = c->nb[b] * c->bs;
        c->kvl[b] = (c->nb[b] - 1) * c->bs + 1 + rnd(c->bs);
        c->nkeep[b] = rnd(3) ? (c->nb[b] - 1) * c->bs : rnd(N + 1);
        if (round == 0 && b == 0) c->nkeep[b] = N; /* everything kept: nothing moves in place */
        max_keep = c->nkeep[b] > max_keep ? c->nkeep[b] : max_keep;
        int need = (c->nkeep[b] + c->bs - 1) / c->bs, mode = (round + b) % 3;
        int fresh = mode == 1 ? need : mode == 2 ? rnd(need + 1) : 0;
        modes[mode]++;
        for (int i = 0; i < MAXB; i++) c->dst[b * MAXB + i] = -1;
        for (int i = 0; i < need; i++)
            c->dst[b * MAXB + i] = i < fresh ? c->pool0 + fresh_used++ : c->src[b * MAXB + i];
    }
    c->max_keep = max_keep + rnd(3);
    c->kp_n = (size_t)CAP * (size_t)c->hkv * (size_t)c->max_keep;
    upload_jobs(c);
    const size_t kb = 4 * c->kp_n * LAYERS;
    int32_t *keep = malloc(kb);
    memset(keep, 0xFF, kb);
    if (round % 2) {
        /* keep rows from the GPU selection on random scores */
        const size_t sn = c->sc_n * LAYERS;
        float *s = malloc(4 * sn);
        for (size_t i = 0; i < sn; i++) s[i] = unif();
        up(c->dsc, s, 4 * sn);
        poison(c->dkeep, kb);
        launch_sel(c, c->dkeep, (int64_t)c->kp_n, c->dsc, (int64_t)c->sc_n, LAYERS, &p);
        gpu_down(g, keep, c->dkeep, kb);
        free(s);
    } else {
        for (int l = 0; l < LAYERS; l++)
            for (int b = 0; b < c->n_jobs; b++)
                for (int h = 0; h < c->hkv; h++) {
                    int N = c->nb[b] * c->bs, k = c->nkeep[b], n = 0;
                    int32_t *o = keep + (size_t)l * c->kp_n + ((size_t)b * (size_t)c->hkv + (size_t)h) * (size_t)c->max_keep;
                    for (int q = 0; q < N && n < k; q++)
                        if (rnd(N - q) < k - n) o[n++] = q;
                }
        up(c->dkeep, keep, kb);
    }
    for (int l = 0; l <= LAYERS; l++) {
        rand_bf16(c->k[l], NULL, c->kv_n, 2.f, &seed);
        rand_bf16(c->v[l], NULL, c->kv_n, 1.f, &seed);
        for (size_t i = 0; i < c->c_n; i++) c->c[l][i] = unif();
    }
    upload_caches(c);
    launch_cmp(c, c->dkeep, (int64_t)c->kp_n, 1, LAYERS);
    uint16_t *kg = malloc(2 * c->kv_n * (LAYERS + 1)), *vg = malloc(2 * c->kv_n * (LAYERS + 1));
    float *cg = malloc(4 * c->c_n * (LAYERS + 1));
    for (int l = 0; l <= LAYERS; l++) {
        gpu_down(g, kg + c->kv_n * (size_t)l, c->dk[l], 2 * c->kv_n);
        gpu_down(g, vg + c->kv_n * (size_t)l, c->dv[l], 2 * c->kv_n);
        gpu_down(g, cg + c->c_n * (size_t)l, c->dc[l], 4 * c->c_n);
    }
    /* per-layer launches from the same caches */
    upload_caches(c);
    for (int l = 0; l < LAYERS; l++) launch_cmp(c, c->dkeep + 4 * c->kp_n * (size_t)l, 0, l + 1, 1);
    be_cjobs j = host_jobs(c);
    static uint64_t tabs[3][LAYERS + 1];
    for (int l = 0; l <= LAYERS; l++)
        tabs[0][l] = P(c->k[l]), tabs[1][l] = P(c->v[l]), tabs[2][l] = P(c->c[l]);
    cpu->cmp_compact(cpu, P(tabs[0]), P(tabs[1]), P(tabs[2]), ZP_BF16, P(keep), &j, 1, LAYERS, &p);
    int same = 1, same1 = 1;
    uint16_t *t16 = malloc(2 * c->kv_n);
    float *t32 = malloc(4 * c->c_n);
    for (int l = 0; l <= LAYERS; l++) {
        same &= !memcmp(kg + c->kv_n * (size_t)l, c->k[l], 2 * c->kv_n) &&
                !memcmp(vg + c->kv_n * (size_t)l, c->v[l], 2 * c->kv_n) &&
                !memcmp(cg + c->c_n * (size_t)l, c->c[l], 4 * c->c_n);
        gpu_down(g, t16, c->dk[l], 2 * c->kv_n);
        same1 &= !memcmp(t16, c->k[l], 2 * c->kv_n);
        gpu_down(g, t16, c->dv[l], 2 * c->kv_n);
        same1 &= !memcmp(t16, c->v[l], 2 * c->kv_n);
        gpu_down(g, t32, c->dc[l], 4 * c->c_n);
        same1 &= !memcmp(t32, c->c[l], 4 * c->c_n);
    }
    printf("    compaction round %d (in place %d, fresh %d, mixed %d jobs; keep from %s): %s\n",
           round, modes[0], modes[1], modes[2], round % 2 ? "selection" : "random masks",
           same && same1 ? "K, V, C bit-identical" : "DIFFER");
    CHECKF(same, "compaction round %d: caches differ from the CPU's", round);
    CHECKF(same1, "compaction round %d: per-layer launches differ from the CPU's", round);
    free(keep), free(kg), free(vg), free(cg), free(t16), free(t32);
}

static void run_config(int D, int bs, int hkv, int G, int max_nb) {
    cfg *c = calloc(1, sizeof *c);
    c->D = D, c->bs = bs, c->hkv = hkv, c->hq = hkv * G, c->n_jobs = 1 + rnd(MAXJ);
    int total = 0, longest = 0;
    for (int b = 0; b < c->n_jobs; b++) {
        c->nb[b] = b == 0 ? max_nb : 1 + rnd(max_nb);
        c->kvl[b] = rnd(2) ? c->nb[b] * bs : (c->nb[b] - 1) * bs + 1 + rnd(bs);
        total += c->nb[b];
        longest = c->nb[b] > longest ? c->nb[b] : longest;
    }
    c->max_blocks = MAXB;
    c->max_pos = longest * bs + rnd(3);
    /* block 0 unused; the jobs' blocks are a shuffle of 1 .. total; fresh targets follow */
    c->pool0 = 1 + total, c->nblk = 1 + 2 * total;
    int *perm = malloc(sizeof(int) * (size_t)total);
    for (int i = 0; i < total; i++) perm[i] = 1 + i;
    for (int i = total - 1; i > 0; i--) {
        int k = rnd(i + 1), t = perm[i];
        perm[i] = perm[k], perm[k] = t;
    }
    for (int b = 0, used = 0; b < c->n_jobs; b++) {
        for (int i = 0; i < MAXB; i++) c->src[b * MAXB + i] = c->dst[b * MAXB + i] = -1;
        for (int i = 0; i < c->nb[b]; i++) c->src[b * MAXB + i] = c->dst[b * MAXB + i] = perm[used++];
    }
    free(perm);
    c->kv_n = (size_t)c->nblk * (size_t)hkv * (size_t)bs * (size_t)D;
    c->c_n = (size_t)c->nblk * (size_t)hkv * (size_t)bs;
    c->sc_n = (size_t)CAP * (size_t)hkv * (size_t)c->max_pos;
    unsigned long long kcl[LAYERS + 1], vcl[LAYERS + 1], ccl[LAYERS + 1];
    for (int l = 0; l <= LAYERS; l++) {
        c->k[l] = malloc(2 * c->kv_n), c->v[l] = malloc(2 * c->kv_n), c->c[l] = malloc(4 * c->c_n);
        gen_keys(c->k[l], c->kv_n / (size_t)D, D);
        rand_bf16(c->v[l], NULL, c->kv_n, 1.f, &seed);
        for (size_t i = 0; i < c->c_n; i++) c->c[l][i] = unif();
        c->dk[l] = gpu_up(g, c->k[l], 2 * c->kv_n);
        c->dv[l] = gpu_up(g, c->v[l], 2 * c->kv_n);
        c->dc[l] = gpu_up(g, c->c[l], 4 * c->c_n);
        kcl[l] = c->dk[l], vcl[l] = c->dv[l], ccl[l] = c->dc[l];
    }
    c->kcl = gpu_up(g, kcl, sizeof kcl);
    c->vcl = gpu_up(g, vcl, sizeof vcl);
    c->ccl = gpu_up(g, ccl, sizeof ccl);
    c->njobs = gpu_poisoned(g, 4);
    c->dnb = gpu_poisoned(g, sizeof c->nb);
    c->dkvl = gpu_poisoned(g, sizeof c->kvl);
    c->dnkeep = gpu_poisoned(g, sizeof c->nkeep);
    c->dprot = gpu_poisoned(g, sizeof c->prot);
    c->dsrc = gpu_poisoned(g, sizeof c->src);
    c->ddst = gpu_poisoned(g, sizeof c->dst);
    c->dsc = gpu_poisoned(g, 4 * c->sc_n * LAYERS);
    c->dwork = gpu_poisoned(g, 8 * c->sc_n * LAYERS);
    c->dkeep = gpu_poisoned(g, 4 * (size_t)CAP * (size_t)hkv * (size_t)(c->max_pos + 3) * LAYERS);
    c->max_keep = 1;
    upload_jobs(c);
    printf("  D %3d bs %3d hkv %d (G %d): %d jobs of", D, bs, hkv, G, c->n_jobs);
    for (int b = 0; b < c->n_jobs; b++) printf(" %d/%d", c->kvl[b], c->nb[b] * bs);
    printf(" positions\n");

    /* redundancy settings (mode, lambda, temperature, threshold); threshold 0 meets the zero
     * rows' similarities exactly (a > that must stay a >) */
    static const float red[][4] = {{0, 0.2f, 0.4f, 0.5f}, {1, 0.2f, 0.4f, 0.5f},
                                   {0, 0.8f, 0.1f, 0.0f}, {2, 0.2f, 0.4f, 0.5f},
                                   {1, 0.9f, 0.05f, 0.1f}, {0, 0.5f, 1.0f, 0.9f},
                                   {0, 0.0f, 2.0f, -1.0f}, {1, 1.0f, 0.4f, 1.0f}};
    for (size_t k = 0; k < sizeof red / sizeof red[0]; k++) {
        be_cparams p = params(c, 16, 0);
        p.redundancy = (int)red[k][0], p.lambda = red[k][1], p.temperature = red[k][2], p.threshold = red[k][3];
        check_redundancy(c, &p);
    }
    for (int r = 0; r < 10; r++) check_select(c, r);
    for (int r = 0; r < 4; r++) check_compact(c, r);

    for (int l = 0; l <= LAYERS; l++) {
        CU(g->drv.MemFree(c->dk[l]));
        CU(g->drv.MemFree(c->dv[l]));
        CU(g->drv.MemFree(c->dc[l]));
        free(c->k[l]), free(c->v[l]), free(c->c[l]);
    }
    CUdeviceptr bufs[] = {c->kcl,   c->vcl,  c->ccl,  c->njobs, c->dnb,   c->dkvl, c->dnkeep,
                          c->dprot, c->dsrc, c->ddst, c->dsc,   c->dwork, c->dkeep};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) CU(g->drv.MemFree(bufs[i]));
    free(c);
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    REQUIRE(!cpu_backend_create(&cpu, 0, 4096, CPU_ISA_AUTO, CPU_PREC_F32));
    static const int shapes[][5] = {
        /* D, bs, hkv, G, blocks of the longest job */
        {128, 16, 8, 1, 40}, {128, 32, 4, 2, 20}, {128, 64, 2, 4, 12}, {128, 128, 1, 8, 9},
        {128, 256, 4, 2, 9}, {64, 16, 1, 4, 33},  {64, 64, 8, 1, 9},   {64, 256, 2, 8, 5},
        {128, 256, 8, 1, 5},
    };
    CUmodule mods[sizeof shapes / sizeof shapes[0]];
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *s = shapes[i];
        mods[i] = gpu_module(g, "compress_select.cu", s[0], s[1], 1);
        f_red = gpu_fn(g, mods[i], "zp_cmp_redundancy");
        f_sel = gpu_fn(g, mods[i], "zp_cmp_select");
        f_cmp = gpu_fn(g, mods[i], "zp_cmp_compact");
        run_config(s[0], s[1], s[2], s[3], s[4]);
        CU(g->drv.ModuleUnload(mods[i]));
    }
    printf("%ld redundancy rows, score error <= %.3g of the bound; %ld selection rows, %ld kept "
           "positions differ after GPU vs CPU redundancy\n", n_red_rows, worst_ratio, n_sel_rows,
           n_sel_diff);
    cpu->destroy(cpu);
    return test_done("cuda_cmp_select");
}
