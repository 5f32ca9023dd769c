/* cublaslt: cuBLASLt loading and GEMM plans (see cublaslt.h). */
#include "drv/cublaslt.h"

#include "arena/err.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const char *const sonames[] = {"libcublasLt.so.13", "libcublasLt.so.12"};
static const culib_spec spec = {
    .what = "cuBLASLt",
    .sonames = sonames,
    .n_sonames = 2,
    .wheel_dir = "cublas",
    .companion = NULL,
    .key = "cublaslt_path",
    .env = "ZIPAGE_CUBLASLT",
    .build_venv = "nvrtc-venv",
    .install_hint = "install CUDA 12/13 or `pip install nvidia-cublas`",
};

#define ENTRY(field)                                                                               \
    { "cublasLt" #field, offsetof(cublaslt, field) }
static const struct {
    const char *name;
    size_t off;
} entries[] = {
    ENTRY(Create),
    ENTRY(Destroy),
    ENTRY(GetVersion),
    ENTRY(GetStatusString),
    ENTRY(MatmulDescCreate),
    ENTRY(MatmulDescDestroy),
    ENTRY(MatmulDescSetAttribute),
    ENTRY(MatrixLayoutCreate),
    ENTRY(MatrixLayoutDestroy),
    ENTRY(MatrixLayoutSetAttribute),
    ENTRY(MatmulPreferenceCreate),
    ENTRY(MatmulPreferenceDestroy),
    ENTRY(MatmulPreferenceSetAttribute),
    ENTRY(MatmulAlgoGetHeuristic),
    ENTRY(MatmulAlgoCheck),
    ENTRY(MatmulAlgoConfigGetAttribute),
    ENTRY(Matmul),
};
#undef ENTRY
enum { N_ENTRIES = sizeof entries / sizeof entries[0] };

static int lt_err(const cublaslt *lt, cublasStatus_t st, const char *what) {
    if (st == CUBLAS_STATUS_SUCCESS) return 0;
    return err_set(ZP_EBACKEND, "%s: cuBLASLt status %d (%s)", what, st,
                   lt->GetStatusString ? lt->GetStatusString(st) : "?");
}

int cublaslt_load(cublaslt *lt, const char *override) {
    memset(lt, 0, sizeof *lt);
    int rc = culib_open(&lt->lib, &spec, override);
    if (rc) return rc;
    const char *names[N_ENTRIES];
    void *fns[N_ENTRIES];
    for (int i = 0; i < N_ENTRIES; i++)
        names[i] = entries[i].name;
    if ((rc = culib_syms(&lt->lib, &spec, names, fns, N_ENTRIES))) return rc;
    for (int i = 0; i < N_ENTRIES; i++)
        memcpy((char *)lt + entries[i].off, &fns[i], sizeof fns[i]);
    lt->version = lt->GetVersion();
    if (lt->version < 120000)
        return err_set(ZP_EUNSUP, "cuBLASLt %zu (%s) is too old: zipage needs CUDA 12 or 13",
                       lt->version, lt->lib.path);
    return lt_err(lt, lt->Create(&lt->h), "cublasLtCreate");
}

void cublaslt_close(cublaslt *lt) {
    if (lt->h) lt->Destroy(lt->h);
    lt->h = NULL;
}

static int set_cols(cublaslt *lt, cublaslt_gemm *g, int m) {
    uint64_t cols = (uint64_t)m;
    int rc = lt_err(
        lt, lt->MatrixLayoutSetAttribute(g->b, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols),
        "cublasLtMatrixLayoutSetAttribute");
    if (!rc)
        rc = lt_err(
            lt, lt->MatrixLayoutSetAttribute(g->d, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols),
            "cublasLtMatrixLayoutSetAttribute");
    return rc;
}

static int split_of(cublaslt *lt, const cublasLtMatmulAlgo_t *algo) {
    int32_t split = 1;
    size_t w = 0;
    if (lt->MatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split,
                                         sizeof split, &w))
        split = 1;
    return split;
}

/* Up to cap successful heuristic results for m rows within ws bytes of workspace, best first. */
static int heuristic(cublaslt *lt, cublaslt_gemm *g, int m, size_t ws,
                     cublasLtMatmulHeuristicResult_t *res, int cap, int *n) {
    *n = 0;
    int rc = set_cols(lt, g, m);
    if (rc) return rc;
    cublasLtMatmulPreference_t pref;
    if ((rc = lt_err(lt, lt->MatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")))
        return rc;
    uint64_t wsb = ws;
    rc = lt_err(lt,
                lt->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &wsb, sizeof wsb),
                "cublasLtMatmulPreferenceSetAttribute");
    if (!rc)
        rc = lt_err(lt,
                    lt->MatmulAlgoGetHeuristic(lt->h, g->op, g->a, g->b, g->d, g->d, pref, cap,
                                               res, n),
                    "cublasLtMatmulAlgoGetHeuristic");
    lt->MatmulPreferenceDestroy(pref);
    int kept = 0;
    for (int i = 0; !rc && i < *n; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS) res[kept++] = res[i];
    *n = kept;
    return rc;
}

int cublaslt_gemm_candidates(cublaslt *lt, cublaslt_gemm *g, int m, size_t ws,
                             cublasLtMatmulAlgo_t *algos, int cap, int *n_algos, int max_new) {
    cublasLtMatmulHeuristicResult_t res[16];
    int n, rc = heuristic(lt, g, m, ws, res, 16, &n), added = 0;
    for (int i = 0; !rc && i < n && *n_algos < cap && added < max_new; i++) {
        int seen = 0;
        for (int j = 0; j < *n_algos && !seen; j++)
            seen = !memcmp(&algos[j], &res[i].algo, sizeof res[i].algo);
        if (!seen) algos[(*n_algos)++] = res[i].algo, added++;
    }
    return rc;
}

int cublaslt_gemm_check(cublaslt *lt, cublaslt_gemm *g, const cublasLtMatmulAlgo_t *algo, int m,
                        size_t ws, size_t *ws_needed) {
    int rc = set_cols(lt, g, m);
    if (rc) return rc;
    cublasLtMatmulHeuristicResult_t r;
    if (lt->MatmulAlgoCheck(lt->h, g->op, g->a, g->b, g->d, g->d, algo, &r) !=
            CUBLAS_STATUS_SUCCESS ||
        r.workspaceSize > ws)
        return 0;
    *ws_needed = r.workspaceSize;
    return 1;
}

void cublaslt_gemm_set(cublaslt *lt, cublaslt_gemm *g, int b, const cublasLtMatmulAlgo_t *algo,
                       size_t ws_needed) {
    g->algo[b] = *algo;
    if (ws_needed > g->workspace_needed) g->workspace_needed = ws_needed;
    int split = split_of(lt, algo);
    if (split > g->split_k_max) g->split_k_max = split;
}

int cublaslt_gemm_init(cublaslt *lt, cublaslt_gemm *g, int n, int k, int max_m, CUdeviceptr bias,
                       size_t workspace_bytes, int out_f32) {
    memset(g, 0, sizeof *g);
    g->n = n, g->k = k, g->max_m = max_m, g->has_bias = bias != 0, g->out_f32 = out_f32;
    if (out_f32 && bias)
        return err_set(ZP_EINVAL, "GEMM %d x %d: a bias needs a bf16 output", n, k);
    while (g->n_buckets < CUBLASLT_BUCKETS && (1 << g->n_buckets) < max_m)
        g->n_buckets++;
    g->n_buckets++;
    if ((1 << (g->n_buckets - 1)) < max_m)
        return err_set(ZP_ELIMIT, "GEMM of %d rows: at most %d", max_m,
                       1 << (CUBLASLT_BUCKETS - 1));
    int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    uint32_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    int rc = lt_err(lt, lt->MatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                    "cublasLtMatmulDescCreate");
    if (!rc)
        rc = lt_err(lt,
                    lt->MatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
                    "TRANSA");
    if (!rc)
        rc = lt_err(lt,
                    lt->MatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
                    "TRANSB");
    if (!rc)
        rc = lt_err(
            lt, lt->MatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
            "EPILOGUE");
    if (!rc && bias)
        rc = lt_err(lt,
                    lt->MatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                               sizeof bias),
                    "BIAS_POINTER");
    if (!rc)
        rc = lt_err(lt, lt->MatrixLayoutCreate(&g->a, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k),
                    "layout A");
    if (!rc)
        rc = lt_err(lt, lt->MatrixLayoutCreate(&g->b, CUDA_R_16BF, (uint64_t)k, (uint64_t)max_m, k),
                    "layout B");
    if (!rc)
        rc = lt_err(lt,
                    lt->MatrixLayoutCreate(&g->d, out_f32 ? CUDA_R_32F : CUDA_R_16BF, (uint64_t)n,
                                           (uint64_t)max_m, n),
                    "layout D");
    if (rc) {
        cublaslt_gemm_destroy(lt, g);
        return rc;
    }
    for (int b = 0; !rc && b < g->n_buckets; b++) {
        cublasLtMatmulHeuristicResult_t res[1];
        int m = cublaslt_bucket_rows(g, b), got;
        rc = heuristic(lt, g, m, workspace_bytes, res, 1, &got);
        if (!rc && !got)
            rc = err_set(ZP_EUNSUP,
                         "cuBLASLt has no algorithm for a bf16 GEMM of %d x %d by %d rows "
                         "within %zu bytes of workspace",
                         n, k, m, workspace_bytes);
        if (!rc) cublaslt_gemm_set(lt, g, b, &res[0].algo, res[0].workspaceSize);
    }
    if (rc) cublaslt_gemm_destroy(lt, g);
    return rc;
}

void cublaslt_gemm_destroy(cublaslt *lt, cublaslt_gemm *g) {
    if (g->a) lt->MatrixLayoutDestroy(g->a);
    if (g->b) lt->MatrixLayoutDestroy(g->b);
    if (g->d) lt->MatrixLayoutDestroy(g->d);
    if (g->op) lt->MatmulDescDestroy(g->op);
    g->a = g->b = g->d = NULL, g->op = NULL;
}

int cublaslt_gemm_run_algo(cublaslt *lt, cublaslt_gemm *g, const cublasLtMatmulAlgo_t *algo,
                           CUdeviceptr y, CUdeviceptr x, CUdeviceptr w, int m,
                           CUdeviceptr workspace, size_t workspace_bytes, CUstream stream) {
    if (m < 1 || m > g->max_m)
        return err_set(ZP_EINVAL, "GEMM %d x %d: %d rows, planned for 1..%d", g->n, g->k, m,
                       g->max_m);
    if (!algo) {
        int b = 0;
        while ((1 << b) < m)
            b++;
        algo = &g->algo[b];
    }
    int rc = set_cols(lt, g, m);
    if (rc) return rc;
    const float one = 1.f, zero = 0.f;
    return lt_err(lt,
                  lt->Matmul(lt->h, g->op, &one, (const void *)(uintptr_t)w, g->a,
                             (const void *)(uintptr_t)x, g->b, &zero, (const void *)(uintptr_t)y,
                             g->d, (void *)(uintptr_t)y, g->d, algo,
                             (void *)(uintptr_t)workspace, workspace_bytes, stream),
                  "cublasLtMatmul");
}

int cublaslt_gemm_run(cublaslt *lt, cublaslt_gemm *g, CUdeviceptr y, CUdeviceptr x, CUdeviceptr w,
                      int m, CUdeviceptr workspace, size_t workspace_bytes, CUstream stream) {
    return cublaslt_gemm_run_algo(lt, g, NULL, y, x, w, m, workspace, workspace_bytes, stream);
}
