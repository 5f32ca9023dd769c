/* cuda_api: the few CUDA Driver API, NVRTC and cuBLASLt declarations zipage uses, written here
 * so that building needs no CUDA toolkit (../shared/spec/cuda-backend.md section 3).
 *
 * Invariants:
 * - Types and enum values are the ABI of CUDA 13.0 (cuda.h, nvrtc.h, cublasLt.h,
 *   library_types.h), which 12.x drivers and libraries share for everything declared here.
 * - Driver functions are resolved through cuGetProcAddress_v2 with base names and
 *   ZP_CUDA_API_VERSION, so a base name like cuMemAlloc gets its 64-bit (_v2) ABI; the
 *   prototypes below are those of the versions that call returns.
 * - Only function-pointer types are declared, never functions: every library is dlopen'ed.
 * Header-only, no state.
 */
#ifndef ZP_CUDA_API_H
#define ZP_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

#define ZP_CUDA_API_VERSION 12000 /* the ABI asked of cuGetProcAddress; keeps 12.x drivers */

/* ---- Driver API (cuda.h) ---- */
typedef int CUresult;
typedef int CUdevice;
typedef uint64_t CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;
enum { CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1 }; /* CUstreamCaptureMode */

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_NOT_READY = 600,
};
enum {
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
};
enum { CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8 };
enum { CU_STREAM_NON_BLOCKING = 1 };
enum { CU_EVENT_DEFAULT = 0, CU_EVENT_DISABLE_TIMING = 2 };
enum { CU_GET_PROC_ADDRESS_DEFAULT = 0, CU_GET_PROC_ADDRESS_SUCCESS = 0 };

typedef CUresult (*PFN_cuGetProcAddress_v2)(const char *symbol, void **pfn, int cudaVersion,
                                            uint64_t flags, int *symbolStatus);
typedef CUresult (*PFN_cuGetErrorString)(CUresult error, const char **str);
typedef CUresult (*PFN_cuGetErrorName)(CUresult error, const char **str);
typedef CUresult (*PFN_cuInit)(unsigned flags);
typedef CUresult (*PFN_cuDriverGetVersion)(int *version);
typedef CUresult (*PFN_cuDeviceGetCount)(int *count);
typedef CUresult (*PFN_cuDeviceGet)(CUdevice *dev, int ordinal);
typedef CUresult (*PFN_cuDeviceGetName)(char *name, int len, CUdevice dev);
typedef CUresult (*PFN_cuDeviceGetAttribute)(int *value, int attrib, CUdevice dev);
typedef CUresult (*PFN_cuDevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
typedef CUresult (*PFN_cuDevicePrimaryCtxRelease)(CUdevice dev);
typedef CUresult (*PFN_cuCtxSetCurrent)(CUcontext ctx);
typedef CUresult (*PFN_cuMemGetInfo)(size_t *free_bytes, size_t *total_bytes);
typedef CUresult (*PFN_cuMemAlloc)(CUdeviceptr *dptr, size_t bytes);
typedef CUresult (*PFN_cuMemFree)(CUdeviceptr dptr);
typedef CUresult (*PFN_cuMemAllocHost)(void **p, size_t bytes);
typedef CUresult (*PFN_cuMemFreeHost)(void *p);
typedef CUresult (*PFN_cuMemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t bytes,
                                          CUstream s);
typedef CUresult (*PFN_cuMemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t bytes, CUstream s);
typedef CUresult (*PFN_cuMemcpyDtoDAsync)(CUdeviceptr dst, CUdeviceptr src, size_t bytes,
                                          CUstream s);
/* A strided copy (cuMemcpy2DAsync): Height rows of WidthInBytes, rows srcPitch / dstPitch bytes
 * apart. Only device-to-device is used (memory types CU_MEMORYTYPE_DEVICE, arrays NULL). */
enum { CU_MEMORYTYPE_HOST = 1, CU_MEMORYTYPE_DEVICE = 2 }; /* CUmemorytype */
typedef struct CUDA_MEMCPY2D {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;
_Static_assert(sizeof(CUDA_MEMCPY2D) == 128 && offsetof(CUDA_MEMCPY2D, dstXInBytes) == 56 &&
                   offsetof(CUDA_MEMCPY2D, WidthInBytes) == 112,
               "CUDA_MEMCPY2D as cuda.h lays it out (64-bit)");
typedef CUresult (*PFN_cuMemcpy2DAsync)(const CUDA_MEMCPY2D *copy, CUstream s);
typedef CUresult (*PFN_cuMemsetD8Async)(CUdeviceptr dst, unsigned char v, size_t n, CUstream s);
typedef CUresult (*PFN_cuModuleLoadData)(CUmodule *mod, const void *image);
typedef CUresult (*PFN_cuModuleUnload)(CUmodule mod);
typedef CUresult (*PFN_cuModuleGetFunction)(CUfunction *fn, CUmodule mod, const char *name);
typedef CUresult (*PFN_cuFuncSetAttribute)(CUfunction fn, int attrib, int value);
typedef CUresult (*PFN_cuLaunchKernel)(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                       unsigned bx, unsigned by, unsigned bz, unsigned smem,
                                       CUstream s, void **params, void **extra);
/* cuLaunchKernelEx and the one launch attribute zipage sets: programmatic stream
 * serialization (CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION), which lets a kernel
 * start while the one before it in the stream finishes; it then waits with griddepcontrol.wait
 * (rtc_kernels/common.cuh). The value is a 64-byte union of which zipage uses the first int. */
enum { CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };
typedef struct CUlaunchAttribute {
    int id;
    char pad[4];
    union {
        char pad[64];
        int programmaticStreamSerializationAllowed;
    } value;
} CUlaunchAttribute;
_Static_assert(sizeof(CUlaunchAttribute) == 72 && offsetof(CUlaunchAttribute, value) == 8,
               "CUlaunchAttribute as cuda.h lays it out");
typedef struct CUlaunchConfig {
    unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
    CUstream hStream;
    CUlaunchAttribute *attrs;
    unsigned numAttrs;
} CUlaunchConfig;
_Static_assert(sizeof(CUlaunchConfig) == 56 && offsetof(CUlaunchConfig, hStream) == 32 &&
                   offsetof(CUlaunchConfig, numAttrs) == 48,
               "CUlaunchConfig as cuda.h lays it out (64-bit)");
typedef CUresult (*PFN_cuLaunchKernelEx)(const CUlaunchConfig *config, CUfunction f,
                                         void **params, void **extra);
typedef CUresult (*PFN_cuStreamCreate)(CUstream *s, unsigned flags);
typedef CUresult (*PFN_cuStreamDestroy)(CUstream s);
typedef CUresult (*PFN_cuStreamSynchronize)(CUstream s);
typedef CUresult (*PFN_cuStreamWaitEvent)(CUstream s, CUevent ev, unsigned flags);
typedef CUresult (*PFN_cuEventCreate)(CUevent *ev, unsigned flags);
typedef CUresult (*PFN_cuEventDestroy)(CUevent ev);
typedef CUresult (*PFN_cuEventRecord)(CUevent ev, CUstream s);
typedef CUresult (*PFN_cuEventQuery)(CUevent ev);
typedef CUresult (*PFN_cuEventSynchronize)(CUevent ev);
typedef CUresult (*PFN_cuEventElapsedTime)(float *ms, CUevent start, CUevent end);
/* base name cuStreamBeginCapture at CUDA 12.0 is the _v2 entry point (with a mode) */
typedef CUresult (*PFN_cuStreamBeginCapture)(CUstream s, int mode);
typedef CUresult (*PFN_cuStreamEndCapture)(CUstream s, CUgraph *g);
typedef CUresult (*PFN_cuGraphInstantiateWithFlags)(CUgraphExec *exec, CUgraph g,
                                                    unsigned long long flags);
typedef CUresult (*PFN_cuGraphLaunch)(CUgraphExec exec, CUstream s);
typedef CUresult (*PFN_cuGraphExecDestroy)(CUgraphExec exec);
typedef CUresult (*PFN_cuGraphDestroy)(CUgraph g);

/* ---- NVRTC (nvrtc.h) ---- */
typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;
enum { NVRTC_SUCCESS = 0, NVRTC_ERROR_COMPILATION = 6 };

typedef const char *(*PFN_nvrtcGetErrorString)(nvrtcResult r);
typedef nvrtcResult (*PFN_nvrtcVersion)(int *major, int *minor);
typedef nvrtcResult (*PFN_nvrtcGetNumSupportedArchs)(int *n);
typedef nvrtcResult (*PFN_nvrtcGetSupportedArchs)(int *archs);
typedef nvrtcResult (*PFN_nvrtcCreateProgram)(nvrtcProgram *prog, const char *src, const char *name,
                                              int n_headers, const char *const *headers,
                                              const char *const *include_names);
typedef nvrtcResult (*PFN_nvrtcDestroyProgram)(nvrtcProgram *prog);
typedef nvrtcResult (*PFN_nvrtcCompileProgram)(nvrtcProgram prog, int n_opts,
                                               const char *const *opts);
typedef nvrtcResult (*PFN_nvrtcGetProgramLogSize)(nvrtcProgram prog, size_t *n);
typedef nvrtcResult (*PFN_nvrtcGetProgramLog)(nvrtcProgram prog, char *log);
typedef nvrtcResult (*PFN_nvrtcGetCUBINSize)(nvrtcProgram prog, size_t *n);
typedef nvrtcResult (*PFN_nvrtcGetCUBIN)(nvrtcProgram prog, char *cubin);

/* ---- cuBLASLt (cublasLt.h, cublas_api.h, library_types.h) ---- */
typedef int cublasStatus_t;
typedef struct cublasLtContext *cublasLtHandle_t;
typedef struct cublasLtMatmulDescOpaque *cublasLtMatmulDesc_t;
typedef struct cublasLtMatrixLayoutOpaque *cublasLtMatrixLayout_t;
typedef struct cublasLtMatmulPreferenceOpaque *cublasLtMatmulPreference_t;
typedef struct {
    uint64_t data[8];
} cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

enum { CUBLAS_STATUS_SUCCESS = 0 };
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 }; /* cudaDataType */
enum { CUBLAS_COMPUTE_32F = 68 };          /* cublasComputeType_t */
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 }; /* cublasOperation_t */
enum {                                     /* cublasLtMatmulDescAttributes_t */
       CUBLASLT_MATMUL_DESC_TRANSA = 3,
       CUBLASLT_MATMUL_DESC_TRANSB = 4,
       CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
       CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
};
enum { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4 };
enum { CUBLASLT_MATRIX_LAYOUT_ROWS = 2, CUBLASLT_MATRIX_LAYOUT_COLS = 3 };
enum { /* cublasLtMatmulPreferenceAttributes_t */
       CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
       CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK = 3,
};
enum { CUBLASLT_REDUCTION_SCHEME_NONE = 0 };
enum { CUBLASLT_ALGO_CONFIG_SPLITK_NUM = 2 }; /* cublasLtMatmulAlgoConfigAttributes_t */

typedef cublasStatus_t (*PFN_cublasLtCreate)(cublasLtHandle_t *h);
typedef cublasStatus_t (*PFN_cublasLtDestroy)(cublasLtHandle_t h);
typedef size_t (*PFN_cublasLtGetVersion)(void);
typedef const char *(*PFN_cublasLtGetStatusString)(cublasStatus_t s);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescCreate)(cublasLtMatmulDesc_t *d, int compute,
                                                       int scale_type);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescDestroy)(cublasLtMatmulDesc_t d);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescSetAttribute)(cublasLtMatmulDesc_t d, int attr,
                                                             const void *buf, size_t n);
typedef cublasStatus_t (*PFN_cublasLtMatrixLayoutCreate)(cublasLtMatrixLayout_t *l, int type,
                                                         uint64_t rows, uint64_t cols, int64_t ld);
typedef cublasStatus_t (*PFN_cublasLtMatrixLayoutDestroy)(cublasLtMatrixLayout_t l);
typedef cublasStatus_t (*PFN_cublasLtMatrixLayoutSetAttribute)(cublasLtMatrixLayout_t l, int attr,
                                                               const void *buf, size_t n);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceCreate)(cublasLtMatmulPreference_t *p);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceDestroy)(cublasLtMatmulPreference_t p);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceSetAttribute)(cublasLtMatmulPreference_t p,
                                                                   int attr, const void *buf,
                                                                   size_t n);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoGetHeuristic)(
    cublasLtHandle_t h, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
    cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref, int n_req,
    cublasLtMatmulHeuristicResult_t *results, int *n_ret);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoCheck)(
    cublasLtHandle_t h, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
    cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo,
    cublasLtMatmulHeuristicResult_t *result);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoConfigGetAttribute)(const cublasLtMatmulAlgo_t *algo,
                                                                   int attr, void *buf, size_t n,
                                                                   size_t *written);
typedef cublasStatus_t (*PFN_cublasLtMatmul)(
    cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha, const void *a,
    cublasLtMatrixLayout_t ad, const void *b, cublasLtMatrixLayout_t bd, const void *beta,
    const void *c, cublasLtMatrixLayout_t cd, void *d, cublasLtMatrixLayout_t dd,
    const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes, CUstream stream);

#endif
