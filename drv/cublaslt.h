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
 * - Batch-invariant plans use one algorithm for every M (tile shape, split-K count and reduction
 *   scheme fixed), so a row's result does not depend on how many rows run with it.
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
    int n, k, max_m, n_buckets, invariant, split_k_max, out_f32;
    size_t workspace_needed;
} cublaslt_gemm;

/* Plans the GEMM of one weight W[n][k] (bias: device pointer of n bf16, or 0) for up to max_m
 * rows. batch_invariant > 0: one algorithm for every M, the heuristic's best at that many rows
 * (split-K allowed); 0: the best per M bucket. workspace_bytes: the most the
 * algorithms may use. out_f32: y is f32 (no bias then), else bf16. */
int cublaslt_gemm_init(cublaslt *lt, cublaslt_gemm *g, int n, int k, int max_m, CUdeviceptr bias,
                       int batch_invariant, size_t workspace_bytes, int out_f32);
void cublaslt_gemm_destroy(cublaslt *lt, cublaslt_gemm *g);

/* y[m][n] = x[m][k] . W^T (+ bias), queued on stream. 1 <= m <= max_m. */
int cublaslt_gemm_run(cublaslt *lt, cublaslt_gemm *g, CUdeviceptr y, CUdeviceptr x, CUdeviceptr w,
                      int m, CUdeviceptr workspace, size_t workspace_bytes, CUstream stream);

#endif
