/* cuda_be: the CUDA backend: the op table of drv/backend.h on one NVIDIA GPU (drv/cuda.c for
 * the driver, drv/nvrtc.c for rtc_kernels/, drv/cublaslt.c for the GEMMs). */
#ifndef ZP_CUDA_BE_H
#define ZP_CUDA_BE_H

#include "drv/backend.h"
#include "drv/cuda_api.h"

/* Opens the GPU, loads NVRTC and cuBLASLt, compiles (or takes from the kernel cache) every
 * kernel for the shape's head dim, block size and GQA group. Errors name what to change. */
int cuda_backend_create(backend **out, const be_config *c, const be_shape *s);
/* One line: the GPU, its architecture, the driver and libraries in use. */
const char *cuda_backend_describe(const backend *be);
/* The driver function table every call of this backend goes through (NULL when be is not the
 * CUDA backend): tests wrap its entries, e.g. to count allocations. */
struct cuda_drv *cuda_backend_drv(backend *be);
/* What a communicator on this backend's GPU needs (drv/nccl.c): the driver table, the GPU's
 * ordinal and context, and the compute queue's stream, where collectives are queued in order with
 * the forward pass's ops. ZP_EINVAL when be is not the CUDA backend. */
typedef struct cuda_be_view {
    const struct cuda_drv *drv;
    int ordinal;
    CUcontext ctx;
    CUstream compute;
} cuda_be_view;
int cuda_backend_view(backend *be, cuda_be_view *out);

#endif
