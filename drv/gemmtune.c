/* gemmtune: batch-invariant GEMM plans chosen by measurement (see gemmtune.h). */
#include "drv/gemmtune.h"

#include "arena/err.h"
#include "drv/diskcache.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

enum { REPS = 3 }; /* timed runs per (candidate, bucket), after one untimed run */

/* Candidate c at bucket b gives the rows representative r gives at the largest bucket. */
static int same_rows(const gemmtune_table *t, int c, int b, int r) {
    int top = t->n_buckets - 1;
    for (int j = 0; j < t->n_rows; j++)
        if (t->rows[j] < t->bucket_rows[b] && t->hash[c][b][j] != t->hash[r][top][j]) return 0;
    return 1;
}

int gemmtune_choose(const gemmtune_table *t, int choice[CUBLASLT_BUCKETS], double *cost,
                    double *worst_ratio) {
    int top = t->n_buckets - 1, found = 0;
    float best[CUBLASLT_BUCKETS];
    for (int b = 0; b < t->n_buckets; b++) {
        best[b] = INFINITY;
        for (int c = 0; c < t->n_cands; c++)
            if (t->valid[c][b] && t->ms[c][b] < best[b]) best[b] = t->ms[c][b];
    }
    *cost = INFINITY;
    for (int r = 0; r < t->n_cands; r++) {
        if (!t->valid[r][top]) continue;
        int dup = 0; /* a class already named by an earlier representative */
        for (int q = 0; q < r && !dup; q++)
            dup = t->valid[q][top] && same_rows(t, q, top, r);
        if (dup) continue;
        int pick[CUBLASLT_BUCKETS];
        double worst = 0, sum = 0;
        for (int b = 0; b < t->n_buckets && worst < INFINITY; b++) {
            pick[b] = -1;
            for (int c = 0; c < t->n_cands; c++)
                if (t->valid[c][b] && same_rows(t, c, b, r) &&
                    (pick[b] < 0 || t->ms[c][b] < t->ms[pick[b]][b]))
                    pick[b] = c;
            double ratio = pick[b] < 0 ? INFINITY : t->ms[pick[b]][b] / best[b];
            if (ratio > worst) worst = ratio;
            sum += ratio;
        }
        if (worst < INFINITY && sum / t->n_buckets < *cost) {
            *cost = sum / t->n_buckets, *worst_ratio = worst, found = 1;
            memcpy(choice, pick, sizeof pick);
        }
    }
    return found ? 0
                 : err_set(ZP_EUNSUP,
                           "key 'batch_invariant': no cuBLASLt algorithm class gives the same "
                           "rows at every batch size up to %d; set batch_invariant=false",
                           t->bucket_rows[top]);
}

size_t gemmtune_x_bytes(int k, int max_m) {
    return (size_t)k * (size_t)max_m * 2;
}

size_t gemmtune_y_bytes(int n, int max_m, int out_f32) {
    return (size_t)n * (size_t)max_m * (out_f32 ? 4 : 2);
}

/* Random bf16 values in [-1, 1) for x, through the pinned buffer. */
static int fill_x(gemmtune_ctx *c) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    uint16_t *h = c->host;
    size_t per = c->host_bytes / 2, done = 0, total = c->x_bytes / 2;
    while (done < total) {
        size_t n = total - done < per ? total - done : per;
        for (size_t i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float f = (float)(s >> 40) * (1.f / 8388608.f) - 1.f;
            uint32_t u;
            memcpy(&u, &f, 4);
            h[i] = (uint16_t)(u >> 16);
        }
        int rc = cuda_err(c->drv, c->drv->MemcpyHtoDAsync(c->x + done * 2, h, n * 2, c->stream),
                          "cuMemcpyHtoDAsync (GEMM tuning rows)");
        if (!rc)
            rc = cuda_err(c->drv, c->drv->StreamSynchronize(c->stream), "cuStreamSynchronize");
        if (rc) return rc;
        done += n;
    }
    c->x_ready = 1;
    return 0;
}

/* Runs candidate algo at m rows once, hashing the compared rows, then times REPS runs. */
static int measure(gemmtune_ctx *c, cublaslt_gemm *g, const cublasLtMatmulAlgo_t *algo,
                   CUdeviceptr w, int m, uint64_t *hash, float *ms) {
    gemmtune_table *t = &c->t;
    size_t row = (size_t)g->n * (g->out_f32 ? 4 : 2);
    int rc = cublaslt_gemm_run_algo(c->lt, g, algo, c->y, c->x, w, m, c->ws, c->ws_bytes, c->stream);
    for (int j = 0; !rc && j < t->n_rows; j++)
        if (t->rows[j] < m)
            rc = cuda_err(c->drv,
                          c->drv->MemcpyDtoHAsync((char *)c->host + (size_t)j * row,
                                                  c->y + (size_t)t->rows[j] * row, row, c->stream),
                          "cuMemcpyDtoHAsync (GEMM tuning rows)");
    if (!rc) rc = cuda_err(c->drv, c->drv->StreamSynchronize(c->stream), "cuStreamSynchronize");
    for (int j = 0; !rc && j < t->n_rows; j++)
        hash[j] = t->rows[j] < m ? XXH64((char *)c->host + (size_t)j * row, row, 0) : 0;
    if (!rc) rc = cuda_err(c->drv, c->drv->EventRecord(c->ev[0], c->stream), "cuEventRecord");
    for (int i = 0; !rc && i < REPS; i++)
        rc = cublaslt_gemm_run_algo(c->lt, g, algo, c->y, c->x, w, m, c->ws, c->ws_bytes,
                                    c->stream);
    if (!rc) rc = cuda_err(c->drv, c->drv->EventRecord(c->ev[1], c->stream), "cuEventRecord");
    if (!rc) rc = cuda_err(c->drv, c->drv->EventSynchronize(c->ev[1]), "cuEventSynchronize");
    if (!rc)
        rc = cuda_err(c->drv, c->drv->EventElapsedTime(ms, c->ev[0], c->ev[1]),
                      "cuEventElapsedTime");
    *ms /= REPS;
    return rc;
}

/* The stored choice of a plan: the key in full (a hash collision is caught) and one algorithm
 * per bucket. */
typedef struct stored {
    char magic[8];
    char key[248];
    uint32_t n_buckets;
    float cost, worst;
    uint32_t pad;
    cublasLtMatmulAlgo_t algo[CUBLASLT_BUCKETS];
} stored;

static const char MAGIC[8] = "ZPGEMM1";

int gemmtune_plan(gemmtune_ctx *c, cublaslt_gemm *g, CUdeviceptr w) {
    stored st;
    memset(&st, 0, sizeof st);
    memcpy(st.magic, MAGIC, sizeof MAGIC);
    snprintf(st.key, sizeof st.key, "%s|n %d k %d m %d bias %d f32 %d ws %zu", c->device, g->n,
             g->k, g->max_m, g->has_bias, g->out_f32, c->ws_bytes);
    st.n_buckets = (uint32_t)g->n_buckets;
    char name[64];
    snprintf(name, sizeof name, "gemm-%016llx.plan",
             (unsigned long long)XXH64(st.key, strlen(st.key), 0));
    size_t wsn[GEMMTUNE_CANDS][CUBLASLT_BUCKETS];

    stored got;
    int ok = diskcache_load(c->cache_dir, name, &got, sizeof got) &&
             !memcmp(got.magic, st.magic, sizeof st.magic) &&
             !memcmp(got.key, st.key, sizeof st.key) && got.n_buckets == st.n_buckets;
    for (int b = 0; ok && b < g->n_buckets; b++) {
        int r = cublaslt_gemm_check(c->lt, g, &got.algo[b], cublaslt_bucket_rows(g, b),
                                    c->ws_bytes, &wsn[0][b]);
        if (r < 0) return r;
        ok = r;
    }
    if (ok) {
        g->workspace_needed = 0, g->split_k_max = 0, g->invariant = 1;
        for (int b = 0; b < g->n_buckets; b++)
            cublaslt_gemm_set(c->lt, g, b, &got.algo[b], wsn[0][b]);
        c->last_cost = got.cost, c->last_worst = got.worst;
        if (got.cost > c->worst_cost) c->worst_cost = got.cost;
        if (got.worst > c->worst_bucket) c->worst_bucket = got.worst;
        c->cached++;
        return 0;
    }

    gemmtune_table *t = &c->t;
    size_t row = (size_t)g->n * (g->out_f32 ? 4 : 2);
    if (c->x_bytes < gemmtune_x_bytes(g->k, g->max_m) ||
        c->y_bytes < gemmtune_y_bytes(g->n, g->max_m, g->out_f32) ||
        c->host_bytes < GEMMTUNE_ROWS * row)
        return err_set(ZP_ELIMIT,
                       "GEMM tuning of %d x %d at %d rows: scratch too small (x %zu, y %zu, "
                       "host %zu bytes)",
                       g->n, g->k, g->max_m, c->x_bytes, c->y_bytes, c->host_bytes);
    int rc = c->x_ready ? 0 : fill_x(c);
    if (rc) return rc;
    memset(t, 0, sizeof *t);
    t->n_buckets = g->n_buckets;
    for (int b = 0; b < g->n_buckets; b++)
        t->bucket_rows[b] = cublaslt_bucket_rows(g, b);
    for (int r = 0; r < 8 && r < g->max_m; r++)
        t->rows[t->n_rows++] = r;
    for (int b = 0; b < g->n_buckets; b++)
        if (t->bucket_rows[b] > 8) t->rows[t->n_rows++] = t->bucket_rows[b] - 1;
    cublasLtMatmulAlgo_t algos[GEMMTUNE_CANDS];
    /* every bucket's four favourites first, then the rest of each bucket's list */
    for (int pass = 0; pass < 2; pass++)
        for (int b = g->n_buckets - 1; !rc && b >= 0; b--)
            rc = cublaslt_gemm_candidates(c->lt, g, t->bucket_rows[b], c->ws_bytes, algos,
                                          GEMMTUNE_CANDS, &t->n_cands, pass ? 16 : 4);
    for (int a = 0; !rc && a < t->n_cands; a++)
        for (int b = 0; !rc && b < g->n_buckets; b++) {
            int v = cublaslt_gemm_check(c->lt, g, &algos[a], t->bucket_rows[b], c->ws_bytes,
                                        &wsn[a][b]);
            if (v < 0) rc = v;
            t->valid[a][b] = v > 0;
            if (v > 0) rc = measure(c, g, &algos[a], w, t->bucket_rows[b], t->hash[a][b],
                                    &t->ms[a][b]);
        }
    int choice[CUBLASLT_BUCKETS];
    double cost, worst;
    if (!rc) rc = gemmtune_choose(t, choice, &cost, &worst);
    if (rc) return err_prefix(rc, "GEMM %d x %d (%d rows)", g->n, g->k, g->max_m);
    g->workspace_needed = 0, g->split_k_max = 0, g->invariant = 1;
    for (int b = 0; b < g->n_buckets; b++) {
        cublaslt_gemm_set(c->lt, g, b, &algos[choice[b]], wsn[choice[b]][b]);
        st.algo[b] = algos[choice[b]];
    }
    st.cost = (float)cost, st.worst = (float)worst;
    c->last_cost = cost, c->last_worst = worst;
    if (cost > c->worst_cost) c->worst_cost = cost;
    if (worst > c->worst_bucket) c->worst_bucket = worst;
    c->tuned++;
    diskcache_store(c->cache_dir, name, &st, sizeof st);
    return 0;
}
