/* cuBLASLt GEMMs (drv/cublaslt.c) against the CPU backend's matmul on fresh random bf16
 * inputs: y = x . W^T (+ bias), ||d||/||ref|| <= 1e-2 (bf16 output), no NaN, output poisoned
 * first; shapes of a Qwen3 layer (fused QKV, o, fused gate/up, down) and a Qwen2 bias. Batch
 * invariance: with plans tuned by drv/gemmtune.c (a class of algorithms measured to give
 * identical rows, possibly a different algorithm per batch-size bucket), every row of an M-row
 * product is bit-identical to the same row computed alone (M = 1) and in a 13-row batch. The
 * tuner's report on the Qwen3-8B and -1.7B shapes prints each bucket's best and class time.
 * SKIP without a GPU. */
#include "drv/backend.h"
#include "drv/cublaslt.h"
#include "drv/gemmtune.h"
#include "tests/cuda_util.h"

#include <stdlib.h>

static gpu G, *g = &G;
static cublaslt lt;
static backend *cpu;
static unsigned long long seed = 0x6e77;
static CUdeviceptr ws;
static const size_t ws_bytes = 256u << 20; /* the engine's default (gemm_workspace_mb) */
static gemmtune_ctx tune; /* no cache directory: every plan is measured */

#define P(x) ((be_ptr)(uintptr_t)(x))

static void one_shape(const char *name, int n, int k, int m, int with_bias) {
    uint16_t *w = malloc(2 * (size_t)n * k), *x = malloc(2 * (size_t)m * k),
             *bias = malloc(2 * (size_t)n);
    float *xf = malloc(4 * (size_t)m * k), *ref = malloc(4 * (size_t)m * n),
          *got = malloc(4 * (size_t)m * n);
    uint16_t *yh = malloc(2 * (size_t)m * n), *row = malloc(2 * (size_t)n);
    rand_bf16(w, NULL, (size_t)n * k, 0.05f, &seed);
    rand_bf16(x, xf, (size_t)m * k, 1.f, &seed);
    rand_bf16(bias, NULL, (size_t)n, 0.5f, &seed);
    CUdeviceptr dw = gpu_up(g, w, 2 * (size_t)n * k), dx = gpu_up(g, x, 2 * (size_t)m * k),
                db = with_bias ? gpu_up(g, bias, 2 * (size_t)n) : 0,
                dy = gpu_poisoned(g, 2 * (size_t)m * n), dr = gpu_poisoned(g, 2 * (size_t)13 * n);
    for (int inv = 1; inv >= 0; inv--) { /* tuned (batch invariant), then the heuristic's */
        cublaslt_gemm plan;
        if (cublaslt_gemm_init(&lt, &plan, n, k, m, db, ws_bytes, 0) ||
            (inv && gemmtune_plan(&tune, &plan, dw))) {
            fprintf(stderr, "%s: %s\n", name, err_msg());
            test_failures++;
            continue;
        }
        CU(g->drv.MemsetD8Async(dy, 0xFF, 2 * (size_t)m * n, g->dev.compute));
        REQUIRE(!cublaslt_gemm_run(&lt, &plan, dy, dx, dw, m, ws, ws_bytes, g->dev.compute));
        gpu_down(g, yh, dy, 2 * (size_t)m * n);
        bf16_to_f32(got, yh, (size_t)m * n);
        be_part part = {
            .w = w, .wt = ZP_BF16, .bias = with_bias ? bias : NULL, .bt = ZP_BF16, .rows = n};
        be_linear lin;
        REQUIRE(!cpu->linear_init(cpu, &lin, &part, 1, k, m, ZP_F32, name));
        cpu->linear(cpu, P(ref), P(xf), &lin, m);
        cmp c = cmp_f32(got, ref, (size_t)m * n);
        size_t diff_alone = 0, diff_13 = 0;
        for (int r = 0; r < m; r += m / 7 + 1) { /* a row alone */
            REQUIRE(!cublaslt_gemm_run(&lt, &plan, dr, dx + 2 * (size_t)r * k, dw, 1, ws, ws_bytes,
                                       g->dev.compute));
            gpu_down(g, row, dr, 2 * (size_t)n);
            diff_alone += memcmp(row, yh + (size_t)r * n, 2 * (size_t)n) != 0;
        }
        if (m >= 13) { /* the first 13 rows together */
            REQUIRE(!cublaslt_gemm_run(&lt, &plan, dr, dx, dw, 13, ws, ws_bytes, g->dev.compute));
            uint16_t *r13 = malloc(2 * (size_t)13 * n);
            gpu_down(g, r13, dr, 2 * (size_t)13 * n);
            diff_13 = memcmp(r13, yh, 2 * (size_t)13 * n) != 0;
            free(r13);
        }
        int distinct = 0; /* algorithms the plan's buckets use */
        for (int b = 0; b < plan.n_buckets; b++) {
            int seen = 0;
            for (int a = 0; a < b && !seen; a++)
                seen = !memcmp(&plan.algo[a], &plan.algo[b], sizeof plan.algo[b]);
            distinct += !seen;
        }
        printf("  %-10s %5d x %5d, M %4d, %s: %d algorithms over %d buckets (%d candidates, "
               "%.1f%% slower than the best on average), rel %.3g NaN %zu, split-K <= %d, ws %zu "
               "B; rows differing alone %zu, 13-row batch %s\n",
               name, n, k, m, inv ? "tuned" : "heuristic", distinct, plan.n_buckets,
               inv ? tune.t.n_cands : 0, inv ? 100.0 * (tune.last_cost - 1) : 0.0, c.rel, c.nan,
               plan.split_k_max, plan.workspace_needed, diff_alone, diff_13 ? "differs" : "same");
        CHECKF(c.nan == 0 && c.rel <= 1e-2, "%s: rel %.3g, %zu NaN", name, c.rel, c.nan);
        if (inv)
            CHECKF(diff_alone == 0 && diff_13 == 0,
                   "%s: tuned plan (split-K <= %d) is not batch invariant: rows alone %zu, "
                   "13-row batch %zu", name, plan.split_k_max, diff_alone, diff_13);
        cublaslt_gemm_destroy(&lt, &plan);
    }
    free(w), free(x), free(bias), free(xf), free(ref), free(got), free(yh), free(row);
}

/* The tuner on a Qwen3-8B layer's shapes at 2,048 rows (no CPU reference: too large for it):
 * per bucket, the best time of any candidate (and its split-K) against the chosen class's. */
static void tune_report(const char *name, int n, int k, int m, int out_f32) {
    uint16_t *w = malloc(2 * (size_t)n * k);
    rand_bf16(w, NULL, (size_t)n * k, 0.05f, &seed);
    CUdeviceptr dw = gpu_up(g, w, 2 * (size_t)n * k);
    cublaslt_gemm plan;
    REQUIRE(!cublaslt_gemm_init(&lt, &plan, n, k, m, 0, ws_bytes, out_f32));
    int rc = gemmtune_plan(&tune, &plan, dw);
    CHECKF(rc == 0, "%s: %s", name, err_msg());
    const gemmtune_table *t = &tune.t;
    int choice[CUBLASLT_BUCKETS];
    double cost, worst;
    if (!rc && !gemmtune_choose(t, choice, &cost, &worst)) {
        printf("  %s %d x %d (%d candidates; the class's split-K <= %d), class cost %.3f (worst "
               "%.3f); per bucket: rows best-ms (= when the class has it) class-ms\n   ",
               name, n, k, t->n_cands, plan.split_k_max, cost, worst);
        for (int b = 0; b < t->n_buckets; b++) {
            int best = -1;
            for (int c = 0; c < t->n_cands; c++)
                if (t->valid[c][b] && (best < 0 || t->ms[c][b] < t->ms[best][b])) best = c;
            printf(" %d:%.4f(%s)%.4f", t->bucket_rows[b], t->ms[best][b],
                   best == choice[b] ? "=" : "x", t->ms[choice[b]][b]);
        }
        printf("\n");
    }
    cublaslt_gemm_destroy(&lt, &plan);
    CU(g->drv.MemFree(dw));
    free(w);
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    if (cublaslt_load(&lt, "")) {
        fprintf(stderr, "%s\n", err_msg());
        return 1;
    }
    printf("cuBLASLt %zu (%s)\n", lt.version, lt.lib.path);
    REQUIRE(!cpu_backend_create(&cpu, 4, 12288, CPU_ISA_AUTO, CPU_PREC_F32));
    CU(g->drv.MemAlloc(&ws, ws_bytes));
    tune = (gemmtune_ctx){.drv = &g->drv, .lt = &lt, .stream = g->dev.compute, .ws = ws,
                          .ws_bytes = ws_bytes, .x_bytes = gemmtune_x_bytes(4096, 256),
                          .y_bytes = gemmtune_y_bytes(6144, 256, 0), .host_bytes = 32u << 20,
                          .cache_dir = ""};
    CU(g->drv.MemAlloc(&tune.x, tune.x_bytes));
    CU(g->drv.MemAlloc(&tune.y, tune.y_bytes));
    CU(g->drv.MemAllocHost(&tune.host, tune.host_bytes));
    CU(g->drv.EventCreate(&tune.ev[0], 0));
    CU(g->drv.EventCreate(&tune.ev[1], 0));
    one_shape("qkv", (16 + 2 * 8) * 128, 1024, 64, 0);
    one_shape("qkv+bias", (16 + 2 * 8) * 128, 1024, 37, 1);
    one_shape("o", 1024, 16 * 128, 256, 0);
    one_shape("gate_up", 2 * 3072, 1024, 64, 0);
    one_shape("down", 1024, 3072, 100, 0);
    one_shape("8B qkv", 6144, 4096, 64, 0);
    CU(g->drv.MemFree(tune.x));
    CU(g->drv.MemFree(tune.y));
    tune.x_bytes = gemmtune_x_bytes(12288, 2048);
    tune.y_bytes = gemmtune_y_bytes(151936, 256, 1);
    tune.x_ready = 0;
    CU(g->drv.MemAlloc(&tune.x, tune.x_bytes));
    CU(g->drv.MemAlloc(&tune.y, tune.y_bytes));
    tune_report("8B qkv", 6144, 4096, 2048, 0);
    tune_report("8B o", 4096, 4096, 2048, 0);
    tune_report("8B gate_up", 24576, 4096, 2048, 0);
    tune_report("8B down", 4096, 12288, 2048, 0);
    tune_report("8B lm_head", 151936, 4096, 256, 1);
    tune_report("1.7B qkv", 4096, 2048, 2048, 0);
    tune_report("1.7B o", 2048, 2048, 2048, 0);
    tune_report("1.7B gate_up", 12288, 2048, 2048, 0);
    tune_report("1.7B down", 2048, 6144, 2048, 0);
    tune_report("1.7B lm_head", 151936, 2048, 256, 1);
    cublaslt_close(&lt);
    cpu->destroy(cpu);
    return test_done("cuda_gemm");
}
