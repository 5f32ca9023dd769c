/* The batch-invariant GEMM choice (drv/gemmtune.c, gemmtune_choose) on synthetic measurement
 * tables: each bucket runs the fastest member of one class of identical rows; a candidate whose
 * rows change with the batch size leaves the class at that size; the class with the smallest
 * mean slowdown over the buckets wins; no class covering every bucket is a clear error naming the key.
 * Runs on the CPU (the measurement itself is in test_cuda_gemm). */
#include "arena/err.h"
#include "drv/gemmtune.h"
#include "tests/testlib.h"

#include <string.h>

static gemmtune_table T;

/* Buckets 1, 2, 4, ..., 64 rows; compared rows 0..7 and the last of 16, 32, 64. */
static void reset(int n_cands) {
    memset(&T, 0, sizeof T);
    T.n_cands = n_cands, T.n_buckets = 7;
    for (int b = 0; b < T.n_buckets; b++)
        T.bucket_rows[b] = 1 << b;
    for (int r = 0; r < 8; r++)
        T.rows[T.n_rows++] = r;
    for (int b = 4; b < T.n_buckets; b++)
        T.rows[T.n_rows++] = T.bucket_rows[b] - 1;
}

/* Candidate c gives class `cls`'s rows at bucket b, in ms milliseconds. */
static void put(int c, int b, int cls, float ms) {
    T.valid[c][b] = 1, T.ms[c][b] = ms;
    for (int j = 0; j < T.n_rows; j++)
        T.hash[c][b][j] = T.rows[j] < T.bucket_rows[b] ? 1000u * (unsigned)cls + (unsigned)j : 0;
}

int main(void) {
    int choice[CUBLASLT_BUCKETS];
    double cost, worst;

    /* Class 1: candidate 0 (fast at large sizes) and candidate 1 (fast at small sizes);
     * class 2: candidate 2, the fastest everywhere at small sizes but 3x slower at 64 rows. */
    reset(3);
    for (int b = 0; b < 7; b++) {
        put(0, b, 1, b < 4 ? 2.f : 1.f);
        put(1, b, 1, b < 4 ? 1.1f : 3.f);
        put(2, b, 2, b < 4 ? 1.f : 3.f);
    }
    CHECK(gemmtune_choose(&T, choice, &cost, &worst) == 0);
    for (int b = 0; b < 7; b++)
        CHECKF(choice[b] == (b < 4 ? 1 : 0), "bucket %d runs candidate %d", b, choice[b]);
    CHECKF(fabs(cost - 7.4 / 7) < 1e-6 && fabs(worst - 1.1) < 1e-6, "cost %g worst %g", cost,
           worst);

    /* Candidate 1's rows at 32 and 64 rows differ from its own at 16 (a reduction that depends
     * on M): it stays in class 1 below 32 rows only. Class 1 still covers every bucket. */
    put(1, 5, 3, 0.5f);
    put(1, 6, 4, 0.5f);
    CHECK(gemmtune_choose(&T, choice, &cost, &worst) == 0);
    CHECKF(choice[5] == 0 && choice[6] == 0 && choice[0] == 1, "buckets 0/5/6 run %d/%d/%d",
           choice[0], choice[5], choice[6]);
    CHECKF(fabs(cost - 9.4 / 7) < 1e-6 && fabs(worst - 2.0) < 1e-6,
           "cost %g worst %g (best at 32 and 64 rows is now 0.5 ms)", cost, worst);

    /* A candidate invalid at some sizes joins its class where it runs. */
    reset(2);
    for (int b = 0; b < 7; b++)
        put(0, b, 1, 2.f);
    for (int b = 0; b < 3; b++)
        put(1, b, 1, 1.f);
    CHECK(gemmtune_choose(&T, choice, &cost, &worst) == 0);
    CHECKF(choice[0] == 1 && choice[2] == 1 && choice[3] == 0 && choice[6] == 0,
           "buckets run %d %d %d %d", choice[0], choice[2], choice[3], choice[6]);

    /* Identical representatives name one class; the earlier one is kept on a tie. */
    reset(2);
    for (int b = 0; b < 7; b++)
        put(0, b, 1, 1.f), put(1, b, 1, 1.f);
    CHECK(gemmtune_choose(&T, choice, &cost, &worst) == 0);
    CHECKF(choice[0] == 0 && choice[6] == 0 && cost == 1.0, "tie: %d %d cost %g", choice[0],
           choice[6], cost);

    /* The mean decides, not the worst bucket: class 1 is 1.5x slower at one size only, class 2
     * 1.2x slower at every size. */
    reset(3);
    for (int b = 0; b < 7; b++)
        put(0, b, 1, b == 6 ? 1.5f : 1.f), put(1, b, 2, 1.2f), put(2, b, 3, b == 6 ? 1.f : 9.f);
    CHECK(gemmtune_choose(&T, choice, &cost, &worst) == 0);
    CHECKF(choice[0] == 0 && choice[6] == 0 &&
               fabs(cost - 7.5 / 7) < 1e-6 && fabs(worst - 1.5) < 1e-6,
           "picked %d, cost %g worst %g", choice[0], cost, worst);

    /* No class covers every size: each candidate changes its rows at some size. */
    reset(2);
    for (int b = 0; b < 7; b++)
        put(0, b, b < 3 ? 5 : 1, 1.f), put(1, b, b < 5 ? 6 : 2, 1.f);
    CHECK(gemmtune_choose(&T, choice, &cost, &worst) == ZP_EUNSUP);
    CHECKF(strstr(err_msg(), "batch_invariant=false") != NULL, "message: %s", err_msg());
    return test_done("gemmtune");
}
