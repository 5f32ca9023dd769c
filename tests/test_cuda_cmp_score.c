/* Compression scoring on the GPU (rtc_kernels/compress_score.cu: zp_qcache_store, zp_cmp_score)
 * against the CPU backend's qcache_store and cmp_score (drv/cpu_compress.c) on fresh random
 * data, every output poisoned first (0xFF bytes: NaN).
 *
 * zp_qcache_store: decode rows, prefill chunks longer than qcl and than a CTA (the newest row of
 * an entry wins), rows without a slot, padding rows, and rows past the device-side count that
 * would suppress a real row's write if they were read; qcl 4, 16 and 160, two layers. The query
 * cache must equal the CPU's byte for byte (entries nobody writes keep their poison).
 *
 * zp_cmp_score: head dims 64 and 128, block sizes 16 to 256, GQA 1 to 8, 1 to 3 kv heads,
 * qcl 1, 4, 16, 17 x 8 heads, 40 x 4 and 130 x 2 (query rows split into 1 to 3 chunks of 128),
 * max-norm on and off, gamma 0.5 to 1, pooling off and widths 3, 5, 7, on 7 jobs per case with
 * shuffled blocks and distinct query slots: a long job (up to 2304 positions, the reference's
 * (M+1)*bs), a partial last block, kv_len 3 (< qcl: fewer window queries), 1 and 0, a job with an
 * empty extra block (every position carried), one without flags; BE_CJ_GLOBAL and BE_CJ_POOL
 * vary by job. K past kv_len and in unused blocks is NaN, query-cache entries no job reads are
 * NaN, and C there is 1e30, so reading any of them shows. Three layers, launched
 *   - all at once (n_layers 3): compared with the CPU op per layer;
 *   - one layer per launch, and layers 1-2 at once (layer0 1): bit-identical to the first launch
 *     (scores and C), other layers' C untouched.
 * Checks: scores at p < kv_len and C at every written position within TOL relative error of
 * the CPU's (no NaN); scores at kv_len <= p < max_pos exactly -inf; C everywhere else bit-equal
 * to its initial value; the padding between layer rows (layer_stride) still poisoned. A
 * perturbed copy of a correct row must fail the comparison (the check can fail). The largest
 * relative error is printed (expected: about 1e-6; the kernel reproduces the CPU's rounding
 * except that CUDA's expf is within 2 ulp and glibc's within 0.5).
 * SKIP without a GPU. */
#include "drv/backend.h"
#include "drv/compress_abi.h"
#include "tests/cuda_util.h"

#include <stdlib.h>

#define TOL 5e-6 /* relative, per element */

static gpu G, *g = &G;
static backend *cpu;
static unsigned long long seed = 0xc5c0e;
static double worst_score, worst_c;

#define P(x) ((be_ptr)(uintptr_t)(x))

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float nan_f32(void) {
    uint32_t u = 0x7fc00000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void dfree(CUdeviceptr p) {
    CU(g->drv.MemFree(p));
}

static double unit(void) {
    return (double)(test_rand_u64(&seed) >> 11) / 9007199254740992.0;
}

/* ---- zp_qcache_store ---- */

static void qstore_case(int D, int hq, int layers, int qcl) {
    /* sequences: {slot, first cache index, rows}; slot -1 = no query cache */
    static const int spec[][3] = {{2, 40, 1}, {0, 100, 300}, {-1, 7, 1}, {3, 0, 9}, {1, 61, 1}};
    const int n_seq = 5, n_pad = 3, n_past = 5, slots = 4;
    int n_real = 0;
    for (int s = 0; s < n_seq; s++)
        n_real += spec[s][2];
    const int n = n_real + n_pad, cap = n + n_past, w = hq * D;
    int32_t *seq = malloc(4 * (size_t)cap), *idx = malloc(4 * (size_t)cap),
            *qs = malloc(4 * (size_t)cap);
    int t = 0;
    for (int s = 0; s < n_seq; s++) {
        if (s == 3) /* padding rows (inside the count), between two sequences */
            for (int r = 0; r < n_pad; r++, t++)
                seq[t] = -1, idx[t] = 0, qs[t] = -1;
        for (int r = 0; r < spec[s][2]; r++, t++)
            seq[t] = s, idx[t] = spec[s][1] + r, qs[t] = spec[s][0];
    }
    for (int r = 0; t < cap; t++, r++) /* newer rows of the last sequence, past the count */
        seq[t] = n_seq - 1, idx[t] = spec[n_seq - 1][1] + (r + 1) * qcl, qs[t] = spec[n_seq - 1][0];
    const size_t q_n = (size_t)cap * w, qc_n = (size_t)slots * layers * qcl * w;
    uint16_t *q = malloc(2 * q_n);
    float *qf = malloc(4 * q_n), *ref = malloc(4 * qc_n), *got = malloc(4 * qc_n);
    memset(ref, 0xFF, 4 * qc_n);

    CUmodule m = gpu_module(g, "compress_score.cu", D, 16, 1);
    CUfunction f = gpu_fn(g, m, "zp_qcache_store");
    int32_t n_dev = n;
    CUdeviceptr d_qc = gpu_poisoned(g, 4 * qc_n), d_seq = gpu_up(g, seq, 4 * (size_t)cap),
                d_idx = gpu_up(g, idx, 4 * (size_t)cap), d_qs = gpu_up(g, qs, 4 * (size_t)cap),
                d_n = gpu_up(g, &n_dev, 4);
    be_cparams p = {.layers = layers, .hq = hq, .hkv = 1, .dim = D, .bs = 16, .qcl = qcl};
    be_batch b = {.n_tokens = n, .tok_seq = P(seq), .tok_kv_idx = P(idx)};
    const int layer_list[2] = {1, layers - 1};
    for (int li = 0; li < 2; li++) {
        int layer = layer_list[li], lay = layers, ql = qcl, h = hq;
        rand_bf16(q, qf, q_n, 3.f, &seed);
        cpu->qcache_store(cpu, P(ref), P(qf), &b, P(qs), layer, &p);
        CUdeviceptr d_q = gpu_up(g, q, 2 * q_n);
        void *args[] = {&d_qc, &d_q, &d_qs, &d_idx, &d_seq, &d_n, &lay, &layer, &ql, &h};
        gpu_launch(g, f, (unsigned)cap, 1, 1, ZP_QC_THREADS, 0, args);
        dfree(d_q);
    }
    gpu_down(g, got, d_qc, 4 * qc_n);
    size_t written = 0, differ = 0;
    for (size_t e = 0; e < qc_n; e += (size_t)w)
        written += bits(ref[e]) != 0xFFFFFFFFu;
    for (size_t e = 0; e < qc_n; e++)
        differ += bits(got[e]) != bits(ref[e]);
    printf("  qcache_store D %3d hq %2d qcl %3d: %zu entries written, %zu values differ\n", D, hq,
           qcl, written, differ);
    CHECKF(written > 0 && differ == 0, "qcache_store D %d qcl %d: %zu values differ", D, qcl,
           differ);
    dfree(d_qc), dfree(d_seq), dfree(d_idx), dfree(d_qs), dfree(d_n);
    CU(g->drv.ModuleUnload(m));
    free(seq), free(idx), free(qs), free(q), free(qf), free(ref), free(got);
}

/* ---- zp_cmp_score ---- */

enum { LAYERS = 3, N_JOBS = 7 };

typedef struct score_case {
    int D, bs, gqa, hkv, qcl, max_norm, pool, long_len;
    float gamma, amp; /* amp: |q| and |k| bound; scores z spread like amp^2 / 3 */
} score_case;

/* Device copies of the job arrays. */
typedef struct djobs {
    CUdeviceptr nb, kvl, qslot, flags, src;
} djobs;

/* Relative error of got against ref, infinite for a NaN. */
static double rel_err(float got, float ref) {
    if (got != got) return INFINITY;
    if (got == ref) return 0;
    return fabs((double)got - ref) / fmax(fabs((double)ref), 1e-30);
}

/* Elements of one layer's score rows outside the contract: p < kv_len further than TOL from the
 * CPU (worst error into *worst), kv_len <= p < max_pos not -inf. */
static size_t score_violations(const float *got, const float *ref, const int32_t *kvl, int n_jobs,
                               int hkv, int max_pos, double *worst) {
    size_t bad = 0;
    for (int b = 0; b < n_jobs; b++)
        for (int h = 0; h < hkv; h++) {
            const float *gr = got + ((size_t)b * hkv + h) * max_pos,
                        *rr = ref + ((size_t)b * hkv + h) * max_pos;
            for (int p = 0; p < max_pos; p++) {
                if (p >= kvl[b]) {
                    bad += bits(gr[p]) != 0xff800000u;
                    continue;
                }
                double e = rel_err(gr[p], rr[p]);
                if (e > *worst) *worst = e;
                bad += !(e <= TOL);
            }
        }
    return bad;
}

static void launch_score(CUfunction f, unsigned smem, CUdeviceptr scores, long long stride,
                         CUdeviceptr qc, CUdeviceptr kcl, CUdeviceptr ccl, int layer0, int n_layers,
                         const score_case *sc, float scale, djobs dj, int max_blocks, int max_pos) {
    int layers = LAYERS, hkv = sc->hkv, qcl = sc->qcl, mn = sc->max_norm, pool = sc->pool;
    float gamma = sc->gamma;
    void *args[] = {&scores, &stride,   &qc,       &kcl,    &ccl,        &layer0, &layers,
                    &hkv,    &qcl,      &scale,    &mn,     &gamma,      &pool,   &dj.nb,
                    &dj.kvl, &dj.qslot, &dj.flags, &dj.src, &max_blocks, &max_pos};
    gpu_launch(g, f, (unsigned)sc->hkv, N_JOBS, (unsigned)n_layers, ZP_CS_THREADS, smem, args);
}

static void score_run(const score_case *sc) {
    const int D = sc->D, bs = sc->bs, hkv = sc->hkv, hq = hkv * sc->gqa, qcl = sc->qcl;
    const float scale = 1.0f / sqrtf((float)D);
    /* the jobs: kv_len, n_blocks, flags */
    int32_t kvl[N_JOBS] = {sc->long_len, 2 * bs + bs / 2 + 1, 3, 1, 0, 3 * bs, qcl + 5};
    int32_t nb[N_JOBS], flags[N_JOBS] = {BE_CJ_GLOBAL | BE_CJ_POOL,
                                         BE_CJ_GLOBAL,
                                         BE_CJ_POOL,
                                         BE_CJ_GLOBAL | BE_CJ_POOL,
                                         0,
                                         BE_CJ_GLOBAL | BE_CJ_POOL,
                                         0};
    int max_blocks = 0, num_blocks = 3; /* block 0 and two spares belong to no job */
    for (int b = 0; b < N_JOBS; b++) {
        nb[b] = kvl[b] ? (kvl[b] + bs - 1) / bs : 1;
        if (b == 5) nb[b]++; /* an empty extra block: every position is carried */
        max_blocks = nb[b] > max_blocks ? nb[b] : max_blocks;
        num_blocks += nb[b];
    }
    const int max_pos = max_blocks * bs + 3;
    int32_t *perm = malloc(4 * (size_t)num_blocks), *src = calloc((size_t)N_JOBS * max_blocks, 4);
    for (int i = 0; i < num_blocks; i++)
        perm[i] = i;
    for (int i = num_blocks - 1; i > 1; i--) {
        int j = 1 + (int)(test_rand_u64(&seed) % (unsigned)i);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int used = 1;
    for (int b = 0; b < N_JOBS; b++)
        for (int i = 0; i < nb[b]; i++)
            src[b * max_blocks + i] = perm[used++];
    const int slots = N_JOBS + 2;
    int32_t qslot[N_JOBS], n_keep[N_JOBS] = {0};
    for (int b = 0; b < N_JOBS; b++)
        qslot[b] = b;
    for (int b = N_JOBS - 1; b > 0; b--) {
        int j = (int)(test_rand_u64(&seed) % (unsigned)(b + 1));
        int32_t t = qslot[b];
        qslot[b] = qslot[j];
        qslot[j] = t;
    }
    for (int b = 0; b < N_JOBS; b++)
        qslot[b] += 1; /* slot 0 and the last one stay unused */

    /* K: random where a job reads it, NaN elsewhere; C: random there, 1e30 elsewhere */
    const size_t kv_n = (size_t)num_blocks * hkv * bs * D, c_n = (size_t)num_blocks * hkv * bs;
    uint16_t *kc[LAYERS];
    float *c0[LAYERS], *cref[LAYERS], *cgot[LAYERS];
    unsigned char *written = calloc(c_n, 1); /* C slots the contract writes (p < kv_len) */
    for (int l = 0; l < LAYERS; l++) {
        kc[l] = malloc(2 * kv_n), c0[l] = malloc(4 * c_n), cref[l] = malloc(4 * c_n),
        cgot[l] = malloc(4 * c_n);
        for (size_t i = 0; i < kv_n; i++)
            kc[l][i] = 0x7fc0;
        for (size_t i = 0; i < c_n; i++)
            c0[l][i] = 1e30f;
        for (int b = 0; b < N_JOBS; b++) {
            const double cmag = sc->max_norm ? 1.0 : 3.0 / (kvl[b] ? kvl[b] : 1);
            for (int h = 0; h < hkv; h++)
                for (int p = 0; p < kvl[b]; p++) {
                    size_t row = ((size_t)src[b * max_blocks + p / bs] * hkv + h) * bs + p % bs;
                    rand_bf16(kc[l] + row * D, NULL, (size_t)D, sc->amp, &seed);
                    c0[l][row] = (float)(unit() * cmag);
                    written[row] = 1;
                }
        }
    }
    /* query cache: bf16 values (what zp_qcache_store stores); entries no job reads are NaN */
    const size_t ent = (size_t)hq * D, qc_n = (size_t)slots * LAYERS * qcl * ent;
    float *qc = malloc(4 * qc_n);
    for (size_t i = 0; i < qc_n; i++)
        qc[i] = nan_f32();
    for (int b = 0; b < N_JOBS; b++)
        for (int l = 0; l < LAYERS; l++)
            for (int e = 0; e < (kvl[b] < qcl ? kvl[b] : qcl); e++) {
                float *dst = qc + (((size_t)qslot[b] * LAYERS + l) * qcl + e) * ent;
                for (size_t i = 0; i < ent; i++)
                    dst[i] = zp_bf16_to_f32(zp_f32_to_bf16((float)(unit() * 2 - 1) * sc->amp));
            }

    /* CPU reference, layer by layer */
    const size_t per_layer = (size_t)N_JOBS * hkv * max_pos;
    const long long stride =
        (long long)per_layer + 37; /* rows of consecutive layers, a gap between */
    float *sref = malloc(4 * per_layer * LAYERS);
    be_cjobs hj = {
        N_JOBS,   N_JOBS, max_blocks, max_pos, 0, P(nb), P(kvl), P(n_keep), P(qslot),
        P(flags), 0,      P(src),     P(src),  0, 0,     NULL,   NULL}; /* protect, seed: unread */
    be_cparams cp = {.layers = LAYERS,
                     .hq = hq,
                     .hkv = hkv,
                     .dim = D,
                     .bs = bs,
                     .qcl = qcl,
                     .scale = scale,
                     .max_norm = sc->max_norm,
                     .gamma = sc->gamma,
                     .pool = sc->pool,
                     .redundancy = 2,
                     .lambda = 0.2f,
                     .temperature = 0.4f,
                     .threshold = 0.5f};
    uint64_t ktab[LAYERS], ctab[LAYERS]; /* one CPU call covers every layer */
    for (int l = 0; l < LAYERS; l++) {
        memcpy(cref[l], c0[l], 4 * c_n);
        ktab[l] = P(kc[l]), ctab[l] = P(cref[l]);
    }
    cpu->cmp_score(cpu, P(sref), P(qc), P(ktab), P(ctab), ZP_BF16, &hj, 0, LAYERS, &cp);

    /* GPU */
    CUmodule m = gpu_module(g, "compress_score.cu", D, bs, sc->gqa);
    CUfunction f = gpu_fn(g, m, "zp_cmp_score");
    /* the attribute at the most the kernel may take, the launch with what this window needs */
    const unsigned smem = (unsigned)zp_cs_smem_bytes(D, qcl, sc->gqa);
    CU(g->drv.FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                               (int)zp_cs_smem_bytes(D, ZP_CS_MAX_ROWS, 1)));
    CUdeviceptr d_k[LAYERS], d_c[LAYERS];
    for (int l = 0; l < LAYERS; l++)
        d_k[l] = gpu_up(g, kc[l], 2 * kv_n), d_c[l] = gpu_up(g, c0[l], 4 * c_n);
    CUdeviceptr d_kcl = gpu_up(g, d_k, sizeof d_k), d_ccl = gpu_up(g, d_c, sizeof d_c);
    CUdeviceptr d_qc = gpu_up(g, qc, 4 * qc_n);
    djobs dj = {gpu_up(g, nb, sizeof nb), gpu_up(g, kvl, sizeof kvl),
                gpu_up(g, qslot, sizeof qslot), gpu_up(g, flags, sizeof flags),
                gpu_up(g, src, 4 * (size_t)N_JOBS * max_blocks)};

    /* 1: every layer in one launch, against the CPU */
    const size_t s_n = (size_t)stride * LAYERS;
    float *s1 = malloc(4 * s_n), *s2 = malloc(4 * s_n);
    CUdeviceptr d_s = gpu_poisoned(g, 4 * s_n);
    launch_score(f, smem, d_s, stride, d_qc, d_kcl, d_ccl, 0, LAYERS, sc, scale, dj, max_blocks,
                 max_pos);
    gpu_down(g, s1, d_s, 4 * s_n);
    double ws = 0, wc = 0;
    size_t bad_s = 0, bad_c = 0, bad_gap = 0, n_cmp = 0;
    for (int l = 0; l < LAYERS; l++) {
        const float *gl = s1 + (size_t)stride * l;
        bad_s += score_violations(gl, sref + per_layer * l, kvl, N_JOBS, hkv, max_pos, &ws);
        for (size_t i = per_layer; i < (size_t)stride; i++)
            bad_gap += bits(gl[i]) != 0xFFFFFFFFu;
        gpu_down(g, cgot[l], d_c[l], 4 * c_n);
        for (size_t i = 0; i < c_n; i++) {
            if (!written[i]) {
                bad_c += bits(cgot[l][i]) != bits(c0[l][i]);
                continue;
            }
            double e = rel_err(cgot[l][i], cref[l][i]);
            wc = e > wc ? e : wc;
            bad_c += !(e <= TOL);
            n_cmp++;
        }
    }
    /* the check can fail: one more violation when a value moves by 20 x TOL */
    double dummy = 0;
    size_t base = score_violations(s1, sref, kvl, N_JOBS, hkv, max_pos, &dummy);
    memcpy(s2, s1, 4 * per_layer);
    s2[kvl[0] / 2] *= (float)(1 + 20 * TOL);
    CHECKF(score_violations(s2, sref, kvl, N_JOBS, hkv, max_pos, &dummy) == base + 1,
           "a perturbed score passes the comparison");
    printf("  D %3d bs %3d gqa %d hkv %d qcl %3d max_norm %d gamma %.2f pool %d long %4d: "
           "max rel err scores %.3g, C %.3g (%zu C values); bad scores %zu, bad C %zu, gap %zu\n",
           D, bs, sc->gqa, hkv, qcl, sc->max_norm, sc->gamma, sc->pool, sc->long_len, ws, wc, n_cmp,
           bad_s, bad_c, bad_gap);
    CHECKF(bad_s == 0 && bad_c == 0 && bad_gap == 0,
           "cmp_score D %d bs %d gqa %d qcl %d: %zu scores, %zu C values, %zu gap values wrong", D,
           bs, sc->gqa, qcl, bad_s, bad_c, bad_gap);
    worst_score = ws > worst_score ? ws : worst_score;
    worst_c = wc > worst_c ? wc : worst_c;
    dfree(d_s);

    /* 2: one layer per launch, and 3: layers 1 .. LAYERS-1 from layer0 1; bit-identical to 1 */
    for (int run = 0; run <= LAYERS; run++) {
        const int layer0 = run < LAYERS ? run : 1, n_layers = run < LAYERS ? 1 : LAYERS - 1;
        for (int l = 0; l < LAYERS; l++) /* fresh C: the launch reads the carried scores */
            CU(g->drv.MemcpyHtoDAsync(d_c[l], c0[l], 4 * c_n, g->dev.compute));
        const size_t n_s = (size_t)stride * n_layers;
        d_s = gpu_poisoned(g, 4 * n_s);
        launch_score(f, smem, d_s, stride, d_qc, d_kcl, d_ccl, layer0, n_layers, sc, scale, dj,
                     max_blocks, max_pos);
        gpu_down(g, s2, d_s, 4 * n_s);
        size_t diff_s = 0, diff_c = 0;
        for (size_t i = 0; i < n_s; i++)
            diff_s += bits(s2[i]) != bits(s1[(size_t)stride * layer0 + i]);
        for (int l = 0; l < LAYERS; l++) {
            const float *want = l >= layer0 && l < layer0 + n_layers ? cgot[l] : c0[l];
            float *c = cref[l]; /* scratch: the reference is no longer needed */
            gpu_down(g, c, d_c[l], 4 * c_n);
            for (size_t i = 0; i < c_n; i++)
                diff_c += bits(c[i]) != bits(want[i]);
        }
        CHECKF(diff_s == 0 && diff_c == 0,
               "layer0 %d n_layers %d differs from the all-layer launch: %zu scores, %zu C values",
               layer0, n_layers, diff_s, diff_c);
        dfree(d_s);
    }

    for (int l = 0; l < LAYERS; l++)
        dfree(d_k[l]), dfree(d_c[l]);
    dfree(d_kcl), dfree(d_ccl), dfree(d_qc);
    dfree(dj.nb), dfree(dj.kvl), dfree(dj.qslot), dfree(dj.flags), dfree(dj.src);
    CU(g->drv.ModuleUnload(m));
    for (int l = 0; l < LAYERS; l++)
        free(kc[l]), free(c0[l]), free(cref[l]), free(cgot[l]);
    free(perm), free(src), free(written), free(qc), free(sref), free(s1), free(s2);
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    REQUIRE(!cpu_backend_create(&cpu, 8, 4096, CPU_ISA_AUTO, CPU_PREC_F32));
    qstore_case(128, 8, 3, 4);
    qstore_case(64, 12, 2, 16);
    qstore_case(128, 4, 2, 160);
    /* D, bs, gqa, hkv, qcl, max_norm, pool, long_len, gamma, amp */
    static const score_case cases[] = {
        {128, 256, 4, 2, 16, 1, 5, 2304, 0.8f, 2.5f}, /* the reference: bs 256, M 8, qcl 16 */
        {128, 16, 4, 2, 16, 0, 5, 700, 0.8f, 2.5f},
        {128, 32, 8, 1, 16, 1, 3, 640, 0.8f, 4.0f},
        {128, 64, 1, 3, 4, 0, 7, 576, 0.5f, 2.5f},
        {128, 128, 2, 2, 1, 1, 1, 896, 1.0f, 2.5f},
        {128, 16, 8, 2, 17, 1, 7, 333, 0.8f, 2.0f}, /* 136 query rows: 2 chunks */
        {64, 16, 8, 2, 17, 0, 5, 401, 0.8f, 2.5f},
        {64, 256, 2, 2, 130, 1, 3, 1024, 0.8f, 2.5f}, /* 260 query rows: 3 chunks */
        {64, 32, 4, 3, 40, 1, 5, 480, 0.9f, 3.0f},    /* 160 query rows: 2 chunks */
        {64, 64, 1, 2, 16, 0, 3, 500, 0.8f, 2.5f},
        {64, 128, 4, 1, 16, 1, 1, 2304, 0.8f, 4.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        score_run(&cases[i]);
    printf("max relative error: scores %.3g, C %.3g (bound %.0e)\n", worst_score, worst_c, TOL);
    cpu->destroy(cpu);
    return test_done("cuda_cmp_score");
}
