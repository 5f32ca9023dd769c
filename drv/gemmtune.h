/* gemmtune: batch-invariant GEMM plans chosen by measurement at start-up.
 *
 * A row's result is batch invariant when the algorithm that computes it at M rows reduces
 * every output in the same order as the one used at any other M. One algorithm for every M
 * gives that, but costs speed (the best algorithm for 1 row is not the best for 2,048). Yet
 * several cuBLASLt algorithms (different tile widths, rasterisations, cluster shapes) give
 * bit-identical rows. So for each weight shape the tuner runs every candidate the heuristic
 * proposes at every M bucket on the same random rows, hashes the rows it gets, groups
 * (algorithm, bucket) pairs into classes of identical rows, times them, and keeps the class
 * whose time, relative to the best any algorithm achieves at each bucket, is smallest on
 * average over the buckets (every batch size counts the same); each bucket then runs the
 * fastest member of that class. Membership is decided on bits, not on algorithm
 * attributes, so a kernel whose reduction depends on M (stream-K, split-K sized from M)
 * simply lands in no class with the others.
 *
 * Invariants:
 * - Rows compared: 0..7 and the last row of every bucket, each at every bucket holding it;
 *   a class is named by the rows its representative gives at the largest bucket.
 * - The choice is stored in the cache directory under a key of the device, cuBLASLt's version
 *   and the plan's shape, so every later start (and every engine on the machine) makes the
 *   same choice; a stored choice is re-checked with cublasLtMatmulAlgoCheck before use.
 * Threading: the scheduler thread, at start-up only. Memory: the context's device scratch (x,
 * y) and pinned host buffer are the caller's; the table lives in the context.
 */
#ifndef ZP_GEMMTUNE_H
#define ZP_GEMMTUNE_H

#include "drv/cublaslt.h"
#include "drv/cuda.h"

#include <stdint.h>

enum {
    GEMMTUNE_CANDS = 48,                       /* candidate algorithms per shape */
    GEMMTUNE_ROWS = 8 + CUBLASLT_BUCKETS       /* rows compared per (candidate, bucket) */
};

/* What was measured for one shape: valid[c][b] (candidate c runs bucket b), its time in ms and
 * the hashes of the compared rows (rows[j] < the bucket's rows). */
typedef struct gemmtune_table {
    int n_cands, n_buckets, n_rows;
    int bucket_rows[CUBLASLT_BUCKETS];
    int rows[GEMMTUNE_ROWS];
    uint8_t valid[GEMMTUNE_CANDS][CUBLASLT_BUCKETS];
    float ms[GEMMTUNE_CANDS][CUBLASLT_BUCKETS];
    uint64_t hash[GEMMTUNE_CANDS][CUBLASLT_BUCKETS][GEMMTUNE_ROWS];
} gemmtune_table;

/* The choice on a table: choice[b] = the candidate bucket b runs, all from one class whose
 * members cover every bucket; *cost = the mean over buckets of the ratio of the class's time to
 * the best time of any candidate (the smallest of all classes; ties to the earlier
 * representative), *worst_ratio its largest ratio. Returns 0, or ZP_EUNSUP when no class covers
 * every bucket. Pure: tested on the CPU. */
int gemmtune_choose(const gemmtune_table *t, int choice[CUBLASLT_BUCKETS], double *cost,
                    double *worst_ratio);

/* The tuner's context, filled by the backend at start-up. */
typedef struct gemmtune_ctx {
    const cuda_drv *drv;
    cublaslt *lt;
    CUstream stream;
    CUdeviceptr x, y, ws; /* x: random bf16 rows, filled by the first gemmtune_plan */
    size_t x_bytes, y_bytes, ws_bytes;
    void *host; /* pinned, host_bytes */
    size_t host_bytes;
    CUevent ev[2];
    const char *cache_dir; /* "" = no cache */
    char device[160];      /* device name, architecture, cuBLASLt version: part of the key */
    int x_ready;
    int tuned, cached; /* shapes measured and shapes taken from the cache so far */
    double worst_cost;   /* the largest class cost (mean ratio) among the plans */
    double worst_bucket; /* the largest ratio of any plan's bucket */
    double last_cost, last_worst; /* the last plan's cost and largest ratio */
    gemmtune_table t;
} gemmtune_ctx;

/* Bytes of x and y the tuner needs for a plan of n outputs, k inputs, max_m rows. */
size_t gemmtune_x_bytes(int k, int max_m);
size_t gemmtune_y_bytes(int n, int max_m, int out_f32);

/* Makes g batch invariant: its buckets' algorithms from the cache or from a measurement of W
 * (device pointer w, g's shape) on the context's random rows. */
int gemmtune_plan(gemmtune_ctx *c, cublaslt_gemm *g, CUdeviceptr w);

#endif
