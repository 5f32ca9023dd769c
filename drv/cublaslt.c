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

/* The best algorithm for m rows; with no_split, only those that reduce K inside one CTA. */
static int pick(cublaslt *lt, cublaslt_gemm *g, int m, int no_split, size_t ws,
                cublasLtMatmulAlgo_t *out) {
    int rc = set_cols(lt, g, m);
    if (rc) return rc;
    cublasLtMatmulPreference_t pref;
    if ((rc = lt_err(lt, lt->MatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")))
        return rc;
    uint64_t wsb = ws;
    uint32_t mask = CUBLASLT_REDUCTION_SCHEME_NONE;
    rc = lt_err(lt,
                lt->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &wsb, sizeof wsb),
                "cublasLtMatmulPreferenceSetAttribute");
    if (!rc && no_split)
        rc = lt_err(lt,
                    lt->MatmulPreferenceSetAttribute(
                        pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof mask),
                    "cublasLtMatmulPreferenceSetAttribute");
    cublasLtMatmulHeuristicResult_t res[8];
    int n = 0;
    if (!rc)
        rc = lt_err(
            lt, lt->MatmulAlgoGetHeuristic(lt->h, g->op, g->a, g->b, g->d, g->d, pref, 8, res, &n),
            "cublasLtMatmulAlgoGetHeuristic");
    lt->MatmulPreferenceDestroy(pref);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        int32_t split = 1;
        size_t w = 0;
        if (lt->MatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split,
                                             sizeof split, &w))
            split = 1;
        if (no_split && split > 1) continue;
        *out = res[i].algo;
        if (res[i].workspaceSize > g->workspace_needed) g->workspace_needed = res[i].workspaceSize;
        if (split > g->split_k_max) g->split_k_max = split;
        return 0;
    }
    return err_set(ZP_EUNSUP,
                   "cuBLASLt has no%s algorithm for a bf16 GEMM of %d x %d by %d rows "
                   "within %zu bytes of workspace",
                   no_split ? " split-K-free" : "", g->n, g->k, m, ws);
}

int cublaslt_gemm_init(cublaslt *lt, cublaslt_gemm *g, int n, int k, int max_m, CUdeviceptr bias,
                       int batch_invariant, size_t workspace_bytes, int out_f32) {
    memset(g, 0, sizeof *g);
    g->n = n, g->k = k, g->max_m = max_m, g->invariant = batch_invariant, g->out_f32 = out_f32;
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
    if (batch_invariant) {
        /* One algorithm for every M (so a row's result never depends on its batch): the
         * heuristic's best at batch_invariant rows (split-K allowed: a fixed split reduces every
         * output in the same order at any M), if every other size accepts it within the
         * workspace; else the best split-K-free one at max_m (needs no workspace). */
        int m0 = batch_invariant < max_m ? batch_invariant : max_m;
        for (int attempt = 0; attempt < 2; attempt++) {
            g->workspace_needed = 0, g->split_k_max = 0;
            rc = attempt ? pick(lt, g, max_m, 1, workspace_bytes, &g->algo[0])
                         : pick(lt, g, m0, 0, workspace_bytes, &g->algo[0]);
            for (int b = 0; !rc && b < g->n_buckets; b++) {
                int m = 1 << b < max_m ? 1 << b : max_m;
                cublasLtMatmulHeuristicResult_t r;
                g->algo[b] = g->algo[0];
                if (!(rc = set_cols(lt, g, m)) &&
                    (lt->MatmulAlgoCheck(lt->h, g->op, g->a, g->b, g->d, g->d, &g->algo[0], &r) !=
                         CUBLAS_STATUS_SUCCESS ||
                     r.workspaceSize > workspace_bytes))
                    rc = err_set(ZP_EUNSUP,
                                 "key 'batch_invariant': cuBLASLt's algorithm for %d x %d "
                                 "does not run at %d rows within %zu bytes of workspace; set "
                                 "batch_invariant=false",
                                 n, k, m, workspace_bytes);
            }
            if (!rc) break;
        }
    } else {
        for (int b = 0; !rc && b < g->n_buckets; b++) {
            int m = 1 << b < max_m ? 1 << b : max_m;
            rc = pick(lt, g, m, 0, workspace_bytes, &g->algo[b]);
        }
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

int cublaslt_gemm_run(cublaslt *lt, cublaslt_gemm *g, CUdeviceptr y, CUdeviceptr x, CUdeviceptr w,
                      int m, CUdeviceptr workspace, size_t workspace_bytes, CUstream stream) {
    if (m < 1 || m > g->max_m)
        return err_set(ZP_EINVAL, "GEMM %d x %d: %d rows, planned for 1..%d", g->n, g->k, m,
                       g->max_m);
    int b = 0;
    while ((1 << b) < m)
        b++;
    int rc = set_cols(lt, g, m);
    if (rc) return rc;
    const float one = 1.f, zero = 0.f;
    return lt_err(lt,
                  lt->Matmul(lt->h, g->op, &one, (const void *)(uintptr_t)w, g->a,
                             (const void *)(uintptr_t)x, g->b, &zero, (const void *)(uintptr_t)y,
                             g->d, (void *)(uintptr_t)y, g->d, &g->algo[b],
                             (void *)(uintptr_t)workspace, workspace_bytes, stream),
                  "cublasLtMatmul");
}
