/* The layer kernels of rtc_kernels/layer.cu against their CPU twins (drv/cpu.c ops) on fresh
 * random inputs, outputs poisoned with NaN first: embedding (exact), residual add + RMSNorm,
 * q/k RMSNorm + RoPE + KV store, SwiGLU, logit-row gather (exact) and greedy argmax (exact,
 * ties to the lowest id). Tolerances: ||d||/||ref|| <= 1e-5 on fp32 outputs, <= 1e-2 on bf16
 * ones; never a NaN; the norm also at widths of several register chunks and without a branch; rows
 * past the device-side row count and slots < 0 are never written; argmax also on NaN, +inf and all
 * -inf rows and past n_valid, against the CPU twin. Head dims 64 and 128, block sizes 16 and 256.
 * SKIP without a GPU. */
#include "drv/backend.h"
#include "drv/layer_abi.h"
#include "tests/cuda_util.h"

#include <stdlib.h>

static gpu G, *g = &G;
static backend *cpu;
static unsigned long long seed = 0x5eed;

#define P(x) ((be_ptr)(uintptr_t)(x))

static void report(const char *what, cmp c, double tol) {
    printf("  %-34s rel %.3g  max|d| %.3g  NaN %zu\n", what, c.rel, c.max_abs, c.nan);
    CHECKF(c.nan == 0 && c.rel <= tol, "%s: rel %.3g (tol %.0e), %zu NaN", what, c.rel, tol, c.nan);
}

/* Counts bf16 values still holding the 0xFFFF poison. */
static size_t poisoned_u16(const uint16_t *h, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += h[i] == 0xFFFF;
    return k;
}

static void test_shape(int D, int bs) {
    const int n = 37, cap = 48, H = 1024, hq = 16, hkv = 8, inter = 3072, vocab = 4099;
    const int qkv_w = (hq + 2 * hkv) * D, nblocks = (n + bs - 1) / bs + 2;
    const float eps = 1e-6f;
    printf("D %d, block size %d\n", D, bs);
    CUmodule m = gpu_module(g, "layer.cu", D, bs, 1);
    int32_t n_dev = n;
    CUdeviceptr d_n = gpu_up(g, &n_dev, 4);

    /* embedding */
    uint16_t *table = malloc(sizeof(uint16_t) * (size_t)vocab * H);
    rand_bf16(table, NULL, (size_t)vocab * H, 1.f, &seed);
    int32_t ids[48];
    for (int i = 0; i < cap; i++)
        ids[i] = (int32_t)(test_rand_u64(&seed) % (unsigned)vocab);
    CUdeviceptr d_table = gpu_up(g, table, sizeof(uint16_t) * (size_t)vocab * H);
    CUdeviceptr d_ids = gpu_up(g, ids, sizeof ids);
    CUdeviceptr d_resid = gpu_poisoned(g, sizeof(float) * (size_t)cap * H);
    int dim = H;
    int v_all0 = 0, v_all1 = INT32_MAX;
    void *ea[] = {&d_resid, &d_table, &d_ids, &d_n, &dim, &v_all0, &v_all1};
    gpu_launch(g, gpu_fn(g, m, "zp_embed"), cap, 1, 1, 256, 0, ea);
    float *resid = malloc(sizeof(float) * (size_t)cap * H),
          *ref = malloc(sizeof(float) * (size_t)cap * H);
    gpu_down(g, resid, d_resid, sizeof(float) * (size_t)cap * H);
    cpu->embed(cpu, P(ref), P(table), ZP_BF16, P(ids), n, H);
    report("embed", cmp_f32(resid, ref, (size_t)n * H), 0);
    size_t untouched = 0;
    for (size_t i = (size_t)n * H; i < (size_t)cap * H; i++)
        untouched += isnan(resid[i]);
    CHECKF(untouched == (size_t)(cap - n) * H, "embed wrote padded rows");
    /* a tensor-parallel rank's vocabulary rows [v0, v1) (its table starts at row v0): other
     * tokens' rows are -0.0f, so the comparison is of bits */
    int v0 = vocab / 3, v1 = 2 * vocab / 3;
    CUdeviceptr d_piece = d_table + (CUdeviceptr)v0 * (CUdeviceptr)H * 2;
    void *pa[] = {&d_resid, &d_piece, &d_ids, &d_n, &dim, &v0, &v1};
    gpu_launch(g, gpu_fn(g, m, "zp_embed"), cap, 1, 1, 256, 0, pa);
    gpu_down(g, resid, d_resid, sizeof(float) * (size_t)cap * H);
    cpu->embed_shard(cpu, P(ref), P(table + (size_t)v0 * H), ZP_BF16, P(ids), n, H, v0, v1);
    size_t owned = 0;
    for (int i = 0; i < n; i++)
        owned += ids[i] >= v0 && ids[i] < v1;
    CHECKF(owned > 0 && owned < (size_t)n, "the shard test owns %zu of %d tokens", owned, n);
    CHECKF(!memcmp(resid, ref, sizeof(float) * (size_t)n * H),
           "embed of vocabulary rows [%d, %d) = the CPU's bit for bit", v0, v1);

    /* residual add + RMSNorm: resid (fp32, from the embedding) += x; out = norm(resid) * w */
    uint16_t *x = malloc(sizeof(uint16_t) * (size_t)n * H), *w = malloc(sizeof(uint16_t) * H);
    float *xf = malloc(sizeof(float) * (size_t)n * H);
    rand_bf16(x, xf, (size_t)n * H, 2.f, &seed);
    rand_bf16(w, NULL, (size_t)H, 1.5f, &seed);
    CUdeviceptr d_x = gpu_up(g, x, sizeof(uint16_t) * (size_t)n * H),
                d_w = gpu_up(g, w, sizeof(uint16_t) * H);
    CUdeviceptr d_out = gpu_poisoned(g, sizeof(uint16_t) * (size_t)cap * H);
    float epsv = eps;
    void *na[] = {&d_resid, &d_x, &d_out, &d_w, &d_n, &dim, &epsv};
    gpu_launch(g, gpu_fn(g, m, "zp_add_rmsnorm"), cap, 1, 1, ZP_NORM_THREADS, 0, na);
    float *normed = malloc(sizeof(float) * (size_t)n * H);
    cpu->add_rmsnorm(cpu, P(ref), P(xf), P(normed), P(w), ZP_BF16, n, H, eps);
    uint16_t *outh = malloc(sizeof(uint16_t) * (size_t)cap * H);
    gpu_down(g, outh, d_out, sizeof(uint16_t) * (size_t)cap * H);
    gpu_down(g, resid, d_resid, sizeof(float) * (size_t)n * H);
    float *outf = malloc(sizeof(float) * (size_t)n * H);
    bf16_to_f32(outf, outh, (size_t)n * H);
    report("add_rmsnorm: residual (fp32)", cmp_f32(resid, ref, (size_t)n * H), 1e-5);
    report("add_rmsnorm: normed (bf16)", cmp_f32(outf, normed, (size_t)n * H), 1e-2);
    CHECKF(poisoned_u16(outh + (size_t)n * H, (size_t)(cap - n) * H) == (size_t)(cap - n) * H,
           "add_rmsnorm wrote padded rows");

    /* q/k RMSNorm + RoPE + KV store, on a fused QKV row [q | k | v] */
    uint16_t *qkv = malloc(sizeof(uint16_t) * (size_t)n * qkv_w), *qn = malloc(2 * (size_t)D),
             *kn = malloc(2 * (size_t)D);
    float *qkvf = malloc(sizeof(float) * (size_t)n * qkv_w);
    rand_bf16(qkv, qkvf, (size_t)n * qkv_w, 3.f, &seed);
    rand_bf16(qn, NULL, (size_t)D, 1.5f, &seed);
    rand_bf16(kn, NULL, (size_t)D, 1.5f, &seed);
    int32_t pos[48], slots[48];
    for (int i = 0; i < n; i++) {
        pos[i] = (int32_t)(test_rand_u64(&seed) % 40000);
        slots[i] = i % 5 == 3 ? -1 : i; /* padding rows write no KV */
    }
    float *inv_freq = malloc(sizeof(float) * (size_t)D / 2);
    for (int j = 0; j < D / 2; j++)
        inv_freq[j] = powf(1e6f, -2.f * (float)j / (float)D);
    const size_t cache_n = (size_t)nblocks * hkv * bs * D;
    CUdeviceptr d_qkv = gpu_up(g, qkv, sizeof(uint16_t) * (size_t)n * qkv_w),
                d_qn = gpu_up(g, qn, 2 * (size_t)D), d_kn = gpu_up(g, kn, 2 * (size_t)D),
                d_pos = gpu_up(g, pos, sizeof pos),
                d_if = gpu_up(g, inv_freq, sizeof(float) * (size_t)D / 2),
                d_slots = gpu_up(g, slots, sizeof slots),
                d_q = gpu_poisoned(g, sizeof(uint16_t) * (size_t)cap * hq * D),
                d_kc = gpu_poisoned(g, 2 * cache_n), d_vc = gpu_poisoned(g, 2 * cache_n);
    int hqv = hq, hkvv = hkv;
    void *ra[] = {&d_qkv, &d_qn, &d_kn, &d_pos, &d_if, &d_slots, &d_n,
                  &hqv,   &hkvv, &epsv, &d_q,   &d_kc, &d_vc};
    gpu_launch(g, gpu_fn(g, m, "zp_qkv_rope_store"), cap, layer_rope_blocks(hq + hkv), 1,
               32 * ZP_ROPE_HEADS, 0, ra);
    /* CPU twin: the same op on f32 caches */
    float *q = malloc(sizeof(float) * (size_t)n * hq * D);
    float *kcr = malloc(sizeof(float) * cache_n), *vcr = malloc(sizeof(float) * cache_n);
    for (size_t i = 0; i < cache_n; i++)
        kcr[i] = vcr[i] = NAN;
    cpu->qkv_rope_store(cpu, P(q), P(qkvf), P(qn), P(kn), ZP_BF16, eps, P(pos), P(inv_freq),
                        P(slots), P(kcr), P(vcr), ZP_F32, n, hq, hkv, D, bs);
    uint16_t *qh = malloc(sizeof(uint16_t) * (size_t)n * hq * D), *kch = malloc(2 * cache_n),
             *vch = malloc(2 * cache_n);
    gpu_down(g, qh, d_q, sizeof(uint16_t) * (size_t)n * hq * D);
    gpu_down(g, kch, d_kc, 2 * cache_n);
    gpu_down(g, vch, d_vc, 2 * cache_n);
    float *qg = malloc(sizeof(float) * (size_t)n * hq * D), *kcg = malloc(sizeof(float) * cache_n),
          *vcg = malloc(sizeof(float) * cache_n);
    bf16_to_f32(qg, qh, (size_t)n * hq * D);
    bf16_to_f32(kcg, kch, cache_n);
    bf16_to_f32(vcg, vch, cache_n);
    report("qk norm + rope: q (bf16)", cmp_f32(qg, q, (size_t)n * hq * D), 1e-2);
    /* compare written cache entries; the unwritten must still be poison on both sides */
    size_t mismatch_written = 0;
    for (size_t i = 0; i < cache_n; i++) {
        if (isnan(kcr[i]) != isnan(kcg[i]) || isnan(vcr[i]) != isnan(vcg[i])) mismatch_written++;
        if (isnan(kcr[i])) kcr[i] = kcg[i] = vcr[i] = vcg[i] = 0;
    }
    CHECKF(mismatch_written == 0, "%zu cache entries written on one side only", mismatch_written);
    report("kv store: K cache (bf16)", cmp_f32(kcg, kcr, cache_n), 1e-2);
    report("kv store: V cache (bf16, exact)", cmp_f32(vcg, vcr, cache_n), 0);

    /* SwiGLU on a fused gate/up row */
    uint16_t *gu = malloc(sizeof(uint16_t) * (size_t)n * 2 * inter);
    float *guf = malloc(sizeof(float) * (size_t)n * 2 * inter),
          *gate = malloc(sizeof(float) * (size_t)n * inter);
    rand_bf16(gu, guf, (size_t)n * 2 * inter, 6.f, &seed);
    CUdeviceptr d_gu = gpu_up(g, gu, sizeof(uint16_t) * (size_t)n * 2 * inter),
                d_act = gpu_poisoned(g, sizeof(uint16_t) * (size_t)cap * inter);
    int interv = inter;
    void *sa[] = {&d_act, &d_gu, &d_n, &interv};
    gpu_launch(g, gpu_fn(g, m, "zp_silu_mul"), cap, layer_silu_blocks(inter), 1, ZP_SILU_THREADS, 0,
               sa);
    cpu->swiglu(cpu, P(gate), P(guf), n, inter);
    uint16_t *acth = malloc(sizeof(uint16_t) * (size_t)n * inter);
    float *actf = malloc(sizeof(float) * (size_t)n * inter);
    gpu_down(g, acth, d_act, sizeof(uint16_t) * (size_t)n * inter);
    bf16_to_f32(actf, acth, (size_t)n * inter);
    report("silu_mul (bf16)", cmp_f32(actf, gate, (size_t)n * inter), 1e-2);

    /* gather + argmax (ties to the lowest id) */
    int32_t rows[48], nl = 11, nl_dev = nl;
    for (int i = 0; i < nl; i++)
        rows[i] = (int32_t)(test_rand_u64(&seed) % (unsigned)n);
    CUdeviceptr d_rows = gpu_up(g, rows, sizeof rows), d_nl = gpu_up(g, &nl_dev, 4),
                d_gath = gpu_poisoned(g, sizeof(uint16_t) * (size_t)nl * H);
    void *ga[] = {&d_gath, &d_x, &d_rows, &d_nl, &dim};
    gpu_launch(g, gpu_fn(g, m, "zp_gather_rows"), 16, 1, 1, 256, 0, ga);
    uint16_t *gath = malloc(sizeof(uint16_t) * (size_t)nl * H);
    gpu_down(g, gath, d_gath, sizeof(uint16_t) * (size_t)nl * H);
    size_t bad = 0;
    for (int i = 0; i < nl; i++)
        bad += memcmp(gath + (size_t)i * H, x + (size_t)rows[i] * H, 2 * (size_t)H) != 0;
    CHECKF(bad == 0, "gather: %zu rows differ", bad);

    const int V = 151936;
    float *logits = malloc(sizeof(float) * (size_t)nl * V);
    int32_t want[48];
    for (int r = 0; r < nl; r++) {
        float *row = logits + (size_t)r * V;
        for (int i = 0; i < V; i++)
            row[i] = (float)((double)(test_rand_u64(&seed) >> 11) / 9007199254740992.0 * 20 - 10);
        int a = (int)(test_rand_u64(&seed) % (unsigned)(V - 1)),
            b = (int)(test_rand_u64(&seed) % (unsigned)(V - 1));
        row[a] = row[b] = 50.f; /* a tie: the lower id wins */
        want[r] = a < b ? a : b;
        if (r == 0) row[V - 2] = 60.f, want[r] = V - 2;
        if (r == 1) row[b] = NAN, want[r] = -1; /* the sampler's errors */
        if (r == 2) row[a] = INFINITY, want[r] = -2;
        if (r == 3)
            for (int i = 0; i < V; i++)
                row[i] = -INFINITY, want[r] = -3;
        if (r == 4) row[V - 1] = 70.f, want[r] = a < b ? a : b; /* past n_valid: never chosen */
    }
    CUdeviceptr d_logits = gpu_up(g, logits, sizeof(float) * (size_t)nl * V),
                d_ids2 = gpu_poisoned(g, sizeof want);
    int Vv = V, n_valid = V - 1;
    void *aa[] = {&d_ids2, &d_logits, &d_nl, &n_valid, &Vv};
    gpu_launch(g, gpu_fn(g, m, "zp_argmax"), 16, 1, 1, 1024, 0, aa);
    int32_t got[48];
    gpu_down(g, got, d_ids2, sizeof(int32_t) * (size_t)nl);
    int32_t cpu_ids[48];
    cpu->argmax(cpu, P(cpu_ids), P(logits), nl, n_valid, V);
    bad = 0;
    for (int r = 0; r < nl; r++)
        if (got[r] != want[r] || cpu_ids[r] != want[r]) {
            printf("  argmax row %d: GPU %d, CPU %d, expected %d\n", r, got[r], cpu_ids[r],
                   want[r]);
            bad++;
        }
    CHECKF(bad == 0, "argmax: %zu of %d rows differ (GPU or CPU twin)", bad, nl);
    printf("  gather, argmax: %s\n", bad ? "DIFFER" : "identical");
    CU(g->drv.ModuleUnload(m));
}

/* Residual add + RMSNorm at a width of several register chunks per thread (a last one partly
 * filled, or exactly the largest width the kernel takes), with and without the branch x. */
static void test_norm(int dim, int with_x) {
    const int n = 5, cap = 8;
    const float eps = 1e-6f;
    printf("add_rmsnorm: dim %d, %s\n", dim, with_x ? "resid += x" : "no x");
    CUmodule m = gpu_module(g, "layer.cu", 128, 16, 1);
    int32_t n_dev = n;
    CUdeviceptr d_n = gpu_up(g, &n_dev, 4);
    const size_t nd = (size_t)n * dim;
    uint16_t *x = malloc(2 * nd), *w = malloc(2 * (size_t)dim),
             *outh = malloc(2 * (size_t)cap * dim);
    float *xf = malloc(4 * nd), *resid = malloc(4 * nd), *ref = malloc(4 * nd),
          *normed = malloc(4 * nd), *outf = malloc(4 * nd);
    for (size_t i = 0; i < nd; i++)
        ref[i] = (float)((double)(test_rand_u64(&seed) >> 11) / 9007199254740992.0 * 4 - 2);
    rand_bf16(x, xf, nd, 2.f, &seed);
    rand_bf16(w, NULL, (size_t)dim, 1.5f, &seed);
    CUdeviceptr d_resid = gpu_up(g, ref, 4 * nd), d_x = with_x ? gpu_up(g, x, 2 * nd) : 0,
                d_w = gpu_up(g, w, 2 * (size_t)dim), d_out = gpu_poisoned(g, 2 * (size_t)cap * dim);
    float epsv = eps;
    void *na[] = {&d_resid, &d_x, &d_out, &d_w, &d_n, &dim, &epsv};
    gpu_launch(g, gpu_fn(g, m, "zp_add_rmsnorm"), cap, 1, 1, ZP_NORM_THREADS, 0, na);
    cpu->add_rmsnorm(cpu, P(ref), with_x ? P(xf) : 0, P(normed), P(w), ZP_BF16, n, dim, eps);
    gpu_down(g, outh, d_out, 2 * (size_t)cap * dim);
    gpu_down(g, resid, d_resid, 4 * nd);
    bf16_to_f32(outf, outh, nd);
    report("residual (fp32)", cmp_f32(resid, ref, nd), 1e-6);
    report("normed (bf16)", cmp_f32(outf, normed, nd), 1e-2);
    CHECKF(poisoned_u16(outh + nd, (size_t)(cap - n) * dim) == (size_t)(cap - n) * dim,
           "add_rmsnorm wrote padded rows");
    free(x), free(w), free(outh), free(xf), free(resid), free(ref), free(normed), free(outf);
    CU(g->drv.ModuleUnload(m));
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    REQUIRE(!cpu_backend_create(&cpu, 1, 4096, CPU_ISA_AUTO, CPU_PREC_F32));
    test_shape(128, 16);
    test_shape(64, 256);
    test_norm(4100, 1);
    test_norm(ZP_NORM_MAX_DIM, 0);
    cpu->destroy(cpu);
    return test_done("cuda_layer");
}
