/* test_cpu_matmul: the CPU backend's linear layer (drv/cpu_gemm.c) for every kernel this CPU
 * runs (generic, AVX2, AVX-512) and weight dtype (f32, bf16, f16), with and without bias, on
 * shapes whose k, columns and rows are not multiples of the lanes or tiles.
 *
 * Checked, per kernel: every output within 1e-5 of a double-precision reference (relative to
 * sum |x w|); the same bits for 1, 2, 3 and 5 threads; each row alone (n = 1) and the first 3
 * rows together give the bits of the same rows in the whole batch (the decode path that reads
 * the weights in place, its column ranges claimed by the threads from a counter, against the
 * prefill path that widens them into scratch in static ranges); a two-part
 * fused layer equals its parts run one by one. Kernels skipped here (the CPU lacks them) are
 * named in the output.
 * Each in both matmul precisions: in bf16 precision the bf16-weight reference takes x rounded
 * to bf16 (nearest even), the same 1e-5 (the products of bf16 values are exact, only the f32
 * sums round; an unrounded x would be ~1e-3 off), f32 and f16 weights the f32 reference; and
 * once a batch of 515 rows, past the backend's 512-row staging chunk.
 * Row strides and the row-parallel path (be_linear.k_segs, drv/cpu.c): weights read from rows
 * wider than k (a rank's column slice) give the packed weights' bits; a layer cut into 2, 4 or 8 K
 * segments (x and the weights read in place at the segment's offset, rows k apart) is within the
 * same 1e-5 of the reference and again the same bits for every thread count and each row alone
 * (515 rows: past both the staging chunk and the segments' 256-row pass).
 */
#include "arena/err.h"
#include "drv/backend.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAXK 300
#define MAXN 70
#define MAXR 40
#define BIGR 515 /* > CPU_STAGE_ROWS */

static float X[BIGR * MAXK];
static uint16_t W16[MAXN * MAXK], B16[MAXN];
static float W32[MAXN * MAXK], B32[MAXN];

static const void *wdata(zp_dtype t) {
    return t == ZP_F32 ? (const void *)W32 : (const void *)W16;
}

static double wval(zp_dtype t, size_t i) {
    return zp_load(wdata(t), t, i);
}

typedef struct run {
    backend *be;
    be_ptr x, y;
} run;

static void run_open(run *r, int threads, int isa, int prec) {
    REQUIRE(cpu_backend_create(&r->be, threads, MAXK, isa, prec) == 0);
    REQUIRE(r->be->reserve(r->be, 4u << 20, 0) == 0);
    REQUIRE(!r->be->alloc(r->be, sizeof X, 64, &r->x, "x"));
    REQUIRE(!r->be->alloc(r->be, sizeof(float) * BIGR * MAXN, 64, &r->y, "y"));
}

/* y[0..rows) of rows x[r0..r0+rows) through a layer of the given parts, its sum cut into segs K
 * segments (be_linear.k_segs). */
static void run_linear_segs(run *r, const be_part *parts, int n_parts, int k, int r0, int rows,
                            float *y, int segs) {
    be_linear l;
    REQUIRE(!r->be->linear_init(r->be, &l, parts, n_parts, k, BIGR, ZP_F32, "test"));
    l.k_segs = segs;
    REQUIRE(!r->be->upload(r->be, r->x, X + (size_t)r0 * (size_t)k,
                           sizeof(float) * (size_t)rows * (size_t)k));
    r->be->linear(r->be, r->y, r->x, &l, rows);
    REQUIRE(!r->be->download(r->be, y, r->y, sizeof(float) * (size_t)rows * (size_t)l.n_out));
}

static void run_linear(run *r, const be_part *parts, int n_parts, int k, int r0, int rows,
                       float *y) {
    run_linear_segs(r, parts, n_parts, k, r0, rows, y, 1);
}

/* The reference of row i, column j: x (rounded to bf16 where the kernel rounds) . w (+ bias),
 * in double, and sum |x w| (the scale of the tolerance). */
static double ref_dot(const be_part *p, int round, int k, int i, int j, double *mag) {
    double ref = 0;
    *mag = 0;
    for (int q = 0; q < k; q++) {
        float xf = X[(size_t)i * (size_t)k + (size_t)q];
        double xv = round ? zp_bf16_to_f32(zp_f32_to_bf16(xf)) : xf;
        double wv = wval(p->wt, (size_t)j * (size_t)k + (size_t)q);
        ref += xv * wv, *mag += fabs(xv * wv);
    }
    if (p->bias)
        ref += zp_load(p->bias, p->bt, (size_t)j), *mag += fabs(zp_load(p->bias, p->bt, (size_t)j));
    return ref;
}

static float WP[MAXN * (MAXK + 8)]; /* the weights' rows k + 8 elements apart (a column slice) */

/* A row-parallel layer: k_segs = segs segments (no bias), the weights read from rows k + 8
 * apart. Within 1e-5 of the reference, the same bits for every thread count, and each row alone
 * as in the batch. Also: the strided weights alone (one segment) give the packed weights' bits. */
static void seg_case(run *runs, int nruns, zp_dtype wt, int k, int n, int rows, int segs,
                     const char *isa, int prec, const float *packed) {
    int round = prec == CPU_PREC_BF16 && wt == ZP_BF16;
    size_t es = zp_dtype_size(wt), ld = (size_t)k + 8;
    for (int j = 0; j < n; j++)
        memcpy((char *)WP + (size_t)j * ld * es,
               (const char *)wdata(wt) + (size_t)j * (size_t)k * es, (size_t)k * es);
    be_part p = {.w = WP, .wt = wt, .rows = n, .ld = (int32_t)ld};
    static float y[BIGR * MAXN], yt[BIGR * MAXN];
    run_linear_segs(&runs[0], &p, 1, k, 0, rows, y, 1);
    CHECKF(!memcmp(y, packed, sizeof(float) * (size_t)rows * (size_t)n),
           "%s %s k %d n %d rows %d: rows %zu apart differ from packed rows", isa,
           zp_dtype_name(wt), k, n, rows, ld);
    run_linear_segs(&runs[0], &p, 1, k, 0, rows, y, segs);
    double worst = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < n; j++) {
            double mag, ref = ref_dot(&p, round, k, i, j, &mag);
            double e = fabs(y[(size_t)i * (size_t)n + (size_t)j] - ref) / (mag + 1e-30);
            worst = e > worst ? e : worst;
        }
    CHECKF(worst <= 1e-5, "%s %s k %d n %d rows %d, %d segments: relative error %.3g", isa,
           zp_dtype_name(wt), k, n, rows, segs, worst);
    for (int t = 1; t < nruns; t++) {
        run_linear_segs(&runs[t], &p, 1, k, 0, rows, yt, segs);
        CHECKF(!memcmp(y, yt, sizeof(float) * (size_t)rows * (size_t)n),
               "%s %s k %d n %d rows %d, %d segments: run %d (threads) differs", isa,
               zp_dtype_name(wt), k, n, rows, segs, t);
    }
    for (int i = 0; i < rows; i += rows > 9 ? 7 : 1) {
        run_linear_segs(&runs[1], &p, 1, k, i, 1, yt, segs);
        CHECKF(!memcmp(yt, y + (size_t)i * (size_t)n, sizeof(float) * (size_t)n),
               "%s %s k %d n %d, %d segments: row %d alone differs", isa, zp_dtype_name(wt), k, n,
               segs, i);
    }
}

static int one_case(run *runs, int nruns, zp_dtype wt, int bias, int k, int n, int rows,
                    const char *isa, int prec) {
    int round = prec == CPU_PREC_BF16 && wt == ZP_BF16; /* x rounded to bf16 */
    int fails = test_failures;
    be_part p = {.w = wdata(wt),
                 .wt = wt,
                 .bias = bias == 1   ? (const void *)B32
                         : bias == 2 ? (const void *)B16
                                     : NULL,
                 .bt = bias == 1 ? ZP_F32 : ZP_BF16,
                 .rows = n};
    static float y[BIGR * MAXN], yt[BIGR * MAXN], yr[BIGR * MAXN];
    run_linear(&runs[0], &p, 1, k, 0, rows, y);
    double worst = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < n; j++) {
            double mag, ref = ref_dot(&p, round, k, i, j, &mag);
            double e = fabs(y[(size_t)i * (size_t)n + (size_t)j] - ref) / (mag + 1e-30);
            worst = e > worst ? e : worst;
        }
    CHECKF(worst <= 1e-5, "%s %s %s bias %d k %d n %d rows %d: relative error %.3g", isa,
           prec == CPU_PREC_BF16 ? "bf16-precision" : "f32-precision", zp_dtype_name(wt), bias, k,
           n, rows, worst);
    for (int t = 1; t < nruns; t++) {
        run_linear(&runs[t], &p, 1, k, 0, rows, yt);
        CHECKF(!memcmp(y, yt, sizeof(float) * (size_t)rows * (size_t)n),
               "%s %s k %d n %d rows %d: run %d (threads) differs", isa, zp_dtype_name(wt), k, n,
               rows, t);
    }
    for (int i = 0; i < rows; i++) { /* each row alone */
        run_linear(&runs[0], &p, 1, k, i, 1, yr);
        CHECKF(!memcmp(yr, y + (size_t)i * (size_t)n, sizeof(float) * (size_t)n),
               "%s %s k %d n %d: row %d alone differs from row %d of %d", isa, zp_dtype_name(wt), k,
               n, i, i, rows);
    }
    if (rows > 3) {
        run_linear(&runs[1], &p, 1, k, rows - 3, 3, yr);
        CHECKF(!memcmp(yr, y + (size_t)(rows - 3) * (size_t)n, sizeof(float) * 3 * (size_t)n),
               "%s %s k %d n %d: the last 3 rows together differ", isa, zp_dtype_name(wt), k, n);
    }
    if (n > 5) { /* two parts: columns [0, 5) and [5, n), into one output */
        be_part two[2] = {p, p};
        two[0].rows = 5;
        two[1].rows = n - 5;
        two[1].w = (const char *)p.w + 5 * (size_t)k * zp_dtype_size(wt);
        if (p.bias) two[1].bias = (const char *)p.bias + 5 * zp_dtype_size(p.bt);
        run_linear(&runs[1], two, 2, k, 0, rows, yt);
        CHECKF(!memcmp(y, yt, sizeof(float) * (size_t)rows * (size_t)n),
               "%s %s k %d n %d rows %d: the fused layer differs", isa, zp_dtype_name(wt), k, n,
               rows);
    }
    if (!bias) /* the row-parallel path: as many segments as k allows, up to 8 */
        for (int segs = 8; segs > 1; segs /= 2)
            if (k % segs == 0) {
                seg_case(runs, nruns, wt, k, n, rows, segs, isa, prec, y);
                break;
            }
    return test_failures == fails;
}

int main(void) {
    unsigned long long seed = 17;
    for (size_t i = 0; i < BIGR * MAXK; i++)
        X[i] = test_randf(&seed);
    for (size_t i = 0; i < MAXN * MAXK; i++)
        W32[i] = 0.1f * test_randf(&seed);
    for (size_t i = 0; i < MAXN; i++)
        B32[i] = test_randf(&seed);
    static const struct {
        int isa;
        const char *name;
    } isas[] = {{CPU_ISA_GENERIC, "generic"}, {CPU_ISA_AVX2, "avx2"}, {CPU_ISA_AVX512, "avx512"}};
    static const int ks[] = {1, 7, 16, 37, 130, 296}, ns[] = {1, 5, 16, 67},
                     rs[] = {1, 2, 5, 8, 9, 40};
    static const int threads[] = {1, 2, 3, 5};
    int ran = 0;
    for (size_t s = 0; s < sizeof isas / sizeof isas[0]; s++) {
        backend *probe;
        if (cpu_backend_create(&probe, 1, 1, isas[s].isa, CPU_PREC_F32)) {
            printf("kernel %s: not on this CPU (%s)\n", isas[s].name, err_msg());
            continue;
        }
        probe->destroy(probe);
        for (int prec = CPU_PREC_F32; prec <= CPU_PREC_BF16; prec++) {
            run runs[4];
            for (int t = 0; t < 4; t++)
                run_open(&runs[t], threads[t], isas[s].isa, prec);
            int cases = 0, ok = 0;
            for (int wt = 0; wt < 3; wt++) {
                for (size_t i = 0; i < MAXN * MAXK; i++) /* f16 weights span subnormals to ~0.1 */
                    W16[i] = wt == ZP_BF16 ? zp_f32_to_bf16(W32[i])
                                           : zp_f32_to_f16(W32[i] * (i % 7 ? 1.0f : 1e-4f));
                for (size_t i = 0; i < MAXN; i++)
                    B16[i] = zp_f32_to_bf16(B32[i]);
                for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
                    for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
                        for (size_t c = 0; c < sizeof rs / sizeof rs[0]; c++)
                            for (int bias = 0; bias < 3; bias++, cases++)
                                ok += one_case(runs, 4, (zp_dtype)wt, bias, ks[a], ns[b], rs[c],
                                               isas[s].name, prec);
                if (prec == CPU_PREC_BF16) /* several staging chunks */
                    cases += 2,
                        ok += one_case(runs, 4, (zp_dtype)wt, 1, 130, 16, BIGR, isas[s].name, prec),
                        ok += one_case(runs, 4, (zp_dtype)wt, 0, 296, 16, BIGR, isas[s].name, prec);
            }
            printf("kernel %s (%s), %s precision: %d/%d cases\n", isas[s].name,
                   cpu_backend_describe(runs[0].be), prec == CPU_PREC_BF16 ? "bf16" : "f32", ok,
                   cases);
            for (int t = 0; t < 4; t++)
                runs[t].be->destroy(runs[t].be);
        }
        ran++;
    }
    CHECK(ran > 0);
    return test_done("cpu_matmul");
}
