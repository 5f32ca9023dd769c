/* cublaslt: the GEMMs of the GPU backend through cuBLASLt, loaded with dlopen
 * (../shared/spec/cuda-backend.md section 3).
 *
 * One plan per weight: y[M,N] = x[M,K] . W[N,K]^T (+ bias[N]), bf16 in, bf16 out (f32 out for
 * the logits), fp32 accumulation, row-major as Hugging Face stores weights; in cuBLAS's
 * column-major terms y^T = W . x^T (A = W transposed, B = x, D = y).
 *
 * Invariants:
 * - Algorithms are chosen at start-up, for every M bucket (powers of two up to max_m), and
 *   never again: the heuristic query fails under graph capture and may allocate.
 * - By default each bucket takes the heuristic's best. drv/gemmtune.c may instead set the
 *   buckets' algorithms from one class of measured, bit-identical results (batch invariance).
 * - The workspace is the caller's (carved from the device arena), the same for every call.
 * Threading: the scheduler thread; plans share the handle's layouts only inside a call.
 */
#ifndef ZP_CUBLASLT_H
#define ZP_CUBLASLT_H

#include "drv/cuda_api.h"
#include "drv/culib.h"

typedef struct cublaslt {
    culib lib;
    cublasLtHandle_t h;
    size_t version;
    PFN_cublasLtCreate Create;
    PFN_cublasLtDestroy Destroy;
    PFN_cublasLtGetVersion GetVersion;
    PFN_cublasLtGetStatusString GetStatusString;
    PFN_cublasLtMatmulDescCreate MatmulDescCreate;
    PFN_cublasLtMatmulDescDestroy MatmulDescDestroy;
    PFN_cublasLtMatmulDescSetAttribute MatmulDescSetAttribute;
    PFN_cublasLtMatrixLayoutCreate MatrixLayoutCreate;
    PFN_cublasLtMatrixLayoutDestroy MatrixLayoutDestroy;
    PFN_cublasLtMatrixLayoutSetAttribute MatrixLayoutSetAttribute;
    PFN_cublasLtMatmulPreferenceCreate MatmulPreferenceCreate;
    PFN_cublasLtMatmulPreferenceDestroy MatmulPreferenceDestroy;
    PFN_cublasLtMatmulPreferenceSetAttribute MatmulPreferenceSetAttribute;
    PFN_cublasLtMatmulAlgoGetHeuristic MatmulAlgoGetHeuristic;
    PFN_cublasLtMatmulAlgoCheck MatmulAlgoCheck;
    PFN_cublasLtMatmulAlgoConfigGetAttribute MatmulAlgoConfigGetAttribute;
    PFN_cublasLtMatmul Matmul;
} cublaslt;

/* Loads libcublasLt (override: key cublaslt_path, "" = search) and creates the handle on the
 * current context. */
int cublaslt_load(cublaslt *lt, const char *override);
void cublaslt_close(cublaslt *lt);

enum { CUBLASLT_BUCKETS = 16 }; /* M buckets 1, 2, 4, ..., 32768 */

typedef struct cublaslt_gemm {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo[CUBLASLT_BUCKETS];
    int n, k, max_m, n_buckets, has_bias, out_f32;
    int invariant;   /* the buckets' algorithms give bit-identical rows (set by gemmtune) */
    int split_k_max; /* the largest split-K count of the buckets' algorithms */
    size_t workspace_needed;
} cublaslt_gemm;

/* The rows of bucket b: 2^b, the last bucket capped at max_m. */
static inline int cublaslt_bucket_rows(const cublaslt_gemm *g, int b) {
    return 1 << b < g->max_m ? 1 << b : g->max_m;
}

/* Plans the GEMM of one weight W[n][k] (bias: device pointer of n bf16, or 0) for up to max_m
 * rows, each bucket with the heuristic's best algorithm within workspace_bytes. out_f32: y is
 * f32 (no bias then), else bf16. */
int cublaslt_gemm_init(cublaslt *lt, cublaslt_gemm *g, int n, int k, int max_m, CUdeviceptr bias,
                       size_t workspace_bytes, int out_f32);
void cublaslt_gemm_destroy(cublaslt *lt, cublaslt_gemm *g);

/* Appends to algos[*n_algos .. cap) at most max_new of the heuristic's algorithms for m rows
 * within ws bytes of workspace (its 16 best, in its order) that are not there yet. */
int cublaslt_gemm_candidates(cublaslt *lt, cublaslt_gemm *g, int m, size_t ws,
                             cublasLtMatmulAlgo_t *algos, int cap, int *n_algos, int max_new);

/* 1 when algo runs this GEMM at m rows within ws bytes of workspace (*ws_needed: its
 * workspace), 0 when not, < 0 on error. */
int cublaslt_gemm_check(cublaslt *lt, cublaslt_gemm *g, const cublasLtMatmulAlgo_t *algo, int m,
                        size_t ws, size_t *ws_needed);

/* Sets bucket b's algorithm (checked by the caller), updating workspace_needed, split_k_max. */
void cublaslt_gemm_set(cublaslt *lt, cublaslt_gemm *g, int b, const cublasLtMatmulAlgo_t *algo,
                       size_t ws_needed);

/* y[m][n] = x[m][k] . W^T (+ bias), queued on stream, with the algorithm of m's bucket (or
 * algo when not NULL). 1 <= m <= max_m. */
int cublaslt_gemm_run(cublaslt *lt, cublaslt_gemm *g, CUdeviceptr y, CUdeviceptr x, CUdeviceptr w,
                      int m, CUdeviceptr workspace, size_t workspace_bytes, CUstream stream);
int cublaslt_gemm_run_algo(cublaslt *lt, cublaslt_gemm *g, const cublasLtMatmulAlgo_t *algo,
                           CUdeviceptr y, CUdeviceptr x, CUdeviceptr w, int m,
                           CUdeviceptr workspace, size_t workspace_bytes, CUstream stream);

#endif
