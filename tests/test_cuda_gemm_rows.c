/* rtc_kernels/gemm_rows.cu (the wgmma GEMM of a step's generated-token rows) against its CPU
 * twin, the CPU backend's matmul, on fresh random bf16 inputs: y = x . W^T (+ bias),
 * ||d||/||ref|| <= 1e-2 (bf16 output; 1e-4 for the logits' f32 output), no NaN, output poisoned
 * first; layer shapes of Qwen3 (1.7B, 8B: fused QKV, o, fused gate/up, down, each at its K split
 * of drv/gemm_abi.h) and a Qwen2 bias, at 1 to 256 rows. Rows: a scattered row list, the
 * unlisted rows left untouched; the count read from device memory (padded launch: row groups
 * past it write nothing). Batch invariance: every row bit-identical computed alone, in a 13-row
 * batch, through each of the three variants and in chunks of 24 rows. SKIP without an sm_90 GPU
 * (the kernel is Hopper's). With ZP_GEMM_ROWS_TIMING=1 it also prints the kernel's time beside
 * cuBLASLt's heuristic plan on the same shapes (information only: nothing is asserted on time). */
#include "drv/backend.h"
#include "drv/cublaslt.h"
#include "drv/gemm_abi.h"
#include "tests/cuda_util.h"

#include <stdlib.h>

static gpu G, *g = &G;
static backend *cpu;
static CUfunction fn[2][GEMM_ROWS_VARIANTS]; /* [f32 out][variant] */
static int f32; /* the shape under test has f32 output (the logits' variant) */
static int pdl; /* timing: launches chained under programmatic dependent launch */
static unsigned long long seed = 0x6e78;
static CUdeviceptr cnt_dev;
enum { CAP = 512 };

#define P(x) ((be_ptr)(uintptr_t)(x))

/* Row r of two outputs of n values differs (bytes per value: f32 ? 4 : 2). */
static int row_differs(const uint16_t *a, const uint16_t *b, int r, int n) {
    size_t es = f32 ? 4 : 2;
    return memcmp((const char *)a + es * (size_t)r * n, (const char *)b + es * (size_t)r * n,
                  es * (size_t)n) != 0;
}

/* The rows of the list (or identity) through variant v: a grid for `launch` rows, `count` of
 * them live (read from device memory), as drv/cuda_be.c launches it. */
static void run(int v, CUdeviceptr y, CUdeviceptr x, CUdeviceptr w, CUdeviceptr bias,
                CUdeviceptr rows, int count, int launch, int n, int k, int splits) {
    CU(g->drv.MemcpyHtoDAsync(cnt_dev, &count, 4, g->dev.compute));
    void *a[] = {&y, &x, &w, &bias, &rows, &cnt_dev, &launch, &n, &k};
    CUlaunchAttribute at[2] = {{.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION},
                               {.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION}};
    at[0].value.clusterDim.x = (unsigned)splits, at[0].value.clusterDim.y = 1;
    at[0].value.clusterDim.z = 1;
    at[1].value.programmaticStreamSerializationAllowed = 1;
    int tm = gemm_rows_tm(v);
    CUlaunchConfig lc = {.gridDimX = (unsigned)splits,
                         .gridDimY = (unsigned)(n / gemm_rows_bn(v)),
                         .gridDimZ = (unsigned)((launch + tm - 1) / tm),
                         .blockDimX = (unsigned)gemm_rows_threads(v),
                         .blockDimY = 1,
                         .blockDimZ = 1,
                         .sharedMemBytes = (unsigned)gemm_rows_smem(v),
                         .hStream = g->dev.compute,
                         .attrs = at,
                         .numAttrs = pdl ? 2 : 1};
    CU(g->drv.LaunchKernelEx(&lc, fn[f32][v], a, NULL));
}

static void one_shape(const char *name, int n, int k, int m, int with_bias, int out_f32) {
    f32 = out_f32;
    const size_t es = f32 ? 4 : 2; /* bytes per output */
    int splits = gemm_rows_splits(n, k, g->dev.n_sm), mx = 2 * m; /* x holds 2m rows */
    uint16_t *w = malloc(2 * (size_t)n * k), *x = malloc(2 * (size_t)mx * k),
             *bias = malloc(2 * (size_t)n);
    float *xf = malloc(4 * (size_t)m * k), *ref = malloc(4 * (size_t)m * n),
          *got = malloc(4 * (size_t)m * n);
    uint16_t *yh = malloc(es * (size_t)mx * n), *y2 = malloc(es * (size_t)mx * n);
    int32_t *list = malloc(4 * (size_t)m);
    rand_bf16(w, NULL, (size_t)n * k, 0.05f, &seed);
    rand_bf16(x, NULL, (size_t)mx * k, 1.f, &seed);
    rand_bf16(bias, NULL, (size_t)n, 0.5f, &seed);
    /* the listed rows: odd rows of x, in a shuffled order */
    for (int i = 0; i < m; i++) list[i] = 2 * i + 1;
    for (int i = m - 1; i > 0; i--) {
        int j = (int)(test_rand_u64(&seed) % (uint64_t)(i + 1)), t = list[i];
        list[i] = list[j], list[j] = t;
    }
    for (int i = 0; i < m; i++)
        for (int c = 0; c < k; c++) xf[(size_t)i * k + c] = zp_bf16_to_f32(x[(size_t)list[i] * k + c]);
    CUdeviceptr dw = gpu_up(g, w, 2 * (size_t)n * k), dx = gpu_up(g, x, 2 * (size_t)mx * k),
                db = with_bias ? gpu_up(g, bias, 2 * (size_t)n) : 0,
                dl = gpu_up(g, list, 4 * (size_t)m), dy = gpu_poisoned(g, es * (size_t)mx * n),
                d2 = gpu_poisoned(g, es * (size_t)mx * n);
    int v = gemm_rows_variant(m);
    /* padded launch: the grid covers m + 70 rows, the count says m */
    run(v, dy, dx, dw, db, dl, m, m + 70 > CAP ? CAP : m + 70, n, k, splits);
    gpu_down(g, yh, dy, es * (size_t)mx * n);
    for (int i = 0; i < m; i++)
        if (f32)
            memcpy(got + (size_t)i * n, (float *)yh + (size_t)list[i] * n, 4 * (size_t)n);
        else
            bf16_to_f32(got + (size_t)i * n, yh + (size_t)list[i] * n, (size_t)n);
    size_t untouched = 0; /* 16-bit halves of the unlisted rows still 0xFFFF */
    for (int r = 0; r < mx; r += 2)
        for (size_t c = 0; c < (size_t)n * es / 2; c++)
            untouched += yh[(size_t)r * n * es / 2 + c] == 0xFFFF;
    be_part bp = {.w = w, .wt = ZP_BF16, .bias = with_bias ? bias : NULL, .bt = ZP_BF16, .rows = n};
    be_linear lin;
    REQUIRE(!cpu->linear_init(cpu, &lin, &bp, 1, k, m, ZP_F32, name));
    cpu->linear(cpu, P(ref), P(xf), &lin, m, NULL);
    cmp c = cmp_f32(got, ref, (size_t)m * n);
    /* invariance: alone, 13 rows, every other variant, chunks of 24 */
    size_t alone = 0, r13 = 0, other = 0, chunked = 0;
    for (int i = 0; i < m; i += m / 5 + 1) {
        CU(g->drv.MemsetD8Async(d2, 0xFF, es * (size_t)mx * n, g->dev.compute));
        run(0, d2, dx, dw, db, dl + 4 * (size_t)i, 1, 1, n, k, splits);
        gpu_down(g, y2, d2, es * (size_t)mx * n);
        alone += row_differs(y2, yh, list[i], n);
    }
    if (m >= 13) {
        run(0, d2, dx, dw, db, dl, 13, 13, n, k, splits);
        gpu_down(g, y2, d2, es * (size_t)mx * n);
        for (int i = 0; i < 13; i++)
            r13 += row_differs(y2, yh, list[i], n);
    }
    for (int o = 0; o < GEMM_ROWS_VARIANTS; o++) {
        if (o == v) continue;
        CU(g->drv.MemsetD8Async(d2, 0xFF, es * (size_t)mx * n, g->dev.compute));
        run(o, d2, dx, dw, db, dl, m, m, n, k, splits);
        gpu_down(g, y2, d2, es * (size_t)mx * n);
        for (int i = 0; i < m; i++)
            other += row_differs(y2, yh, list[i], n);
    }
    CU(g->drv.MemsetD8Async(d2, 0xFF, es * (size_t)mx * n, g->dev.compute));
    for (int r0 = 0; r0 < m; r0 += 24) {
        int c24 = m - r0 < 24 ? m - r0 : 24;
        run(0, d2, dx, dw, db, dl + 4 * (size_t)r0, c24, c24, n, k, splits);
    }
    gpu_down(g, y2, d2, es * (size_t)mx * n);
    for (int i = 0; i < m; i++)
        chunked += row_differs(y2, yh, list[i], n);
    printf("  %-12s %5d x %5d, M %3d (variant %d, %d splits): rel %.3g NaN %zu, unlisted rows "
           "written %zu; rows differing alone %zu, 13-row %zu, other variants %zu, chunked %zu\n",
           name, n, k, m, v, splits, c.rel, c.nan, (size_t)(mx / 2) * n * es / 2 - untouched,
           alone, r13, other, chunked);
    /* bf16 output rounds (2^-9 relative); f32 output differs only in the order of the sums */
    double tol = f32 ? 1e-4 : 1e-2;
    CHECKF(c.nan == 0 && c.rel <= tol, "%s: rel %.3g, %zu NaN", name, c.rel, c.nan);
    size_t halves = (size_t)(mx / 2) * n * es / 2;
    CHECKF(untouched == halves, "%s: %zu halves of unlisted rows written", name,
           halves - untouched);
    CHECKF(alone + r13 + other + chunked == 0,
           "%s: not batch invariant: alone %zu, 13-row %zu, other variants %zu, chunked %zu", name,
           alone, r13, other, chunked);
    CU(g->drv.MemFree(dw));
    CU(g->drv.MemFree(dx));
    if (db) CU(g->drv.MemFree(db));
    CU(g->drv.MemFree(dl));
    CU(g->drv.MemFree(dy));
    CU(g->drv.MemFree(d2));
    free(w), free(x), free(bias), free(xf), free(ref), free(got), free(yh), free(y2), free(list);
}

/* Mean time of reps launches of f (events), in microseconds. */
static double time_us(void (*f)(void *), void *arg, int reps) {
    CUevent e0, e1;
    CU(g->drv.EventCreate(&e0, 0));
    CU(g->drv.EventCreate(&e1, 0));
    for (int i = 0; i < 3; i++) f(arg);
    CU(g->drv.EventRecord(e0, g->dev.compute));
    for (int i = 0; i < reps; i++) f(arg);
    CU(g->drv.EventRecord(e1, g->dev.compute));
    CU(g->drv.EventSynchronize(e1));
    float ms = 0;
    CU(g->drv.EventElapsedTime(&ms, e0, e1));
    CU(g->drv.EventDestroy(e0));
    CU(g->drv.EventDestroy(e1));
    return 1e3 * ms / reps;
}

/* A timed shape: each launch reads the next of `copies` weights laid end to end in w (over
 * twice the L2 together), so the weight comes from memory as in a decode step. */
typedef struct tcase {
    int n, k, m, splits, f32, copies, next;
    CUdeviceptr y, x, w, ws;
    cublaslt *lt;
    cublaslt_gemm *plan;
} tcase;

static CUdeviceptr next_w(tcase *t) {
    CUdeviceptr w = t->w + (size_t)t->next * 2 * (size_t)t->n * (size_t)t->k;
    t->next = (t->next + 1) % t->copies;
    return w;
}
static void t_rows(void *p) {
    tcase *t = p;
    f32 = t->f32;
    run(gemm_rows_variant(t->m), t->y, t->x, next_w(t), 0, 0, t->m, t->m, t->n, t->k, t->splits);
}
static void t_lt(void *p) {
    tcase *t = p;
    REQUIRE(!cublaslt_gemm_run(t->lt, t->plan, t->y, t->x, next_w(t), t->m, t->ws, 32u << 20,
                               g->dev.compute));
}

static void timing(void) {
    static cublaslt lt;
    if (cublaslt_load(&lt, "")) {
        printf("timing: no cuBLASLt (%s)\n", err_msg());
        return;
    }
    static const struct { const char *name; int n, k, f32; } shp[] = {
        {"1.7B qkv", 4096, 2048, 0},   {"1.7B o", 2048, 2048, 0},
        {"1.7B gate_up", 12288, 2048, 0}, {"1.7B down", 2048, 6144, 0},
        {"1.7B lm_head", 151936, 2048, 1}, {"8B qkv", 6144, 4096, 0},
        {"8B o", 4096, 4096, 0},       {"8B gate_up", 24576, 4096, 0},
        {"8B down", 4096, 12288, 0},   {"8B lm_head", 151936, 4096, 1}};
    static const int ms[] = {1, 16, 64, 96, 128, 256};
    CUdeviceptr x, y, w, ws;
    CU(g->drv.MemAlloc(&x, 2 * (size_t)256 * 12288));
    CU(g->drv.MemAlloc(&y, 4 * (size_t)256 * 151936));
    CU(g->drv.MemAlloc(&w, 2 * (size_t)151936 * 4096));
    CU(g->drv.MemAlloc(&ws, 32u << 20));
    CU(g->drv.MemsetD8Async(x, 0x3c, 2 * (size_t)256 * 12288, g->dev.compute));
    CU(g->drv.MemsetD8Async(w, 0x3c, 2 * (size_t)151936 * 4096, g->dev.compute));
    const size_t wbytes = 2 * (size_t)151936 * 4096;
    printf("timing (us per launch, 50 back to back, weights cold; GB/s of weight + x + y bytes): "
           "shape, M, gemm_rows plain, gemm_rows chained under PDL, cuBLASLt heuristic\n");
    for (size_t s = 0; s < sizeof shp / sizeof shp[0]; s++) {
        cublaslt_gemm plan;
        REQUIRE(!cublaslt_gemm_init(&lt, &plan, shp[s].n, shp[s].k, 256, 0, 32u << 20,
                                    shp[s].f32));
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
            tcase t = {shp[s].n, shp[s].k, ms[i], gemm_rows_splits(shp[s].n, shp[s].k, g->dev.n_sm),
                       shp[s].f32, (int)(wbytes / (2 * (size_t)shp[s].n * shp[s].k)), 0,
                       y, x, w, ws, &lt, &plan};
            pdl = 0;
            double a = time_us(t_rows, &t, 50);
            pdl = 1;
            double c = time_us(t_rows, &t, 50);
            pdl = 0;
            double b = time_us(t_lt, &t, 50);
            double bytes = 2.0 * ((double)t.n * t.k + (double)t.m * t.k) +
                           (t.f32 ? 4.0 : 2.0) * t.m * t.n;
            printf("  %-13s M %3d splits %d: %7.2f us %5.0f GB/s | PDL %7.2f us %5.0f GB/s | "
                   "%7.2f us %5.0f GB/s  (cuBLASLt / PDL %.2fx)\n",
                   shp[s].name, t.m, t.splits, a, bytes / a / 1e3, c, bytes / c / 1e3, b,
                   bytes / b / 1e3, b / c);
        }
        cublaslt_gemm_destroy(&lt, &plan);
    }
    CU(g->drv.MemFree(x));
    CU(g->drv.MemFree(y));
    CU(g->drv.MemFree(w));
    CU(g->drv.MemFree(ws));
    cublaslt_close(&lt);
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    if (g->dev.arch != 90) return test_skip("the kernel is sm_90's (wgmma)");
    CUmodule mod = gpu_module(g, "gemm_rows.cu", 128, 16, 4);
    static const char *names[2][GEMM_ROWS_VARIANTS] = {
        {"zp_gemm_rows1", "zp_gemm_rows2", "zp_gemm_rows4"},
        {"zp_gemm_rows1_f32", "zp_gemm_rows2_f32", "zp_gemm_rows4_f32"}};
    for (int i = 0; i < 2 * GEMM_ROWS_VARIANTS; i++) {
        CUfunction *f = &fn[i / GEMM_ROWS_VARIANTS][i % GEMM_ROWS_VARIANTS];
        *f = gpu_fn(g, mod, names[i / GEMM_ROWS_VARIANTS][i % GEMM_ROWS_VARIANTS]);
        CU(g->drv.FuncSetAttribute(*f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                   (int)gemm_rows_smem(i % GEMM_ROWS_VARIANTS)));
    }
    REQUIRE(!cpu_backend_create(&cpu, 8, 12288, CPU_ISA_AUTO, CPU_PREC_F32));
    CU(g->drv.MemAlloc(&cnt_dev, 4));
    one_shape("qkv", (16 + 2 * 8) * 128, 1024, 1, 0, 0);
    one_shape("qkv", (16 + 2 * 8) * 128, 1024, 300, 0, 0); /* two row groups of variant 2 */
    one_shape("qkv+bias", (16 + 2 * 8) * 128, 1024, 37, 1, 0);
    one_shape("1.7B qkv", 4096, 2048, 96, 0, 0);
    one_shape("1.7B o", 2048, 2048, 128, 0, 0);
    one_shape("1.7B gate_up", 12288, 2048, 64, 0, 0);
    one_shape("1.7B down", 2048, 6144, 200, 1, 0);
    one_shape("8B qkv", 6144, 4096, 256, 0, 0);
    one_shape("8B down", 4096, 12288, 17, 0, 0);
    one_shape("small lm_head", 1024, 1024, 9, 0, 1);  /* f32 out, split K */
    one_shape("1.7B lm_head", 151936, 2048, 70, 0, 1); /* f32 out, 1187 tiles */
    const char *tm = getenv("ZP_GEMM_ROWS_TIMING");
    if (tm && *tm == '1') timing();
    CU(g->drv.MemFree(cnt_dev));
    cpu->destroy(cpu);
    return test_done("cuda_gemm_rows");
}
