/* cuda: the CUDA Driver API for zipage, loaded with dlopen: the function table, one device's
 * primary context, its queues (streams) and kernel modules.
 *
 * Invariants:
 * - Every driver entry point is resolved once, through cuGetProcAddress_v2 with base names and
 *   ZP_CUDA_API_VERSION (../shared/spec/cuda-backend.md section 3), into cuda_drv; nothing
 *   calls the driver except through this table, so a test can count or fail any call (the
 *   no-allocation test counts MemAlloc / MemAllocHost through it).
 * - The primary context is used (cuBLASLt uses whatever context is current) and made current
 *   on the thread that opens the device; that thread (the engine's scheduler) owns it.
 * - Two non-blocking queues: compute (forward passes) and compress (compression), ordered with
 *   events only.
 * Errors: every failing call becomes err_set(ZP_EBACKEND, "<what>: <CUDA error name>: <text>").
 * Memory: no allocation here besides the driver's own; device memory is taken once by the
 * backend's arena (cuda_dev_alloc_arena) and carved by the planner.
 */
#ifndef ZP_CUDA_H
#define ZP_CUDA_H

#include "drv/cuda_api.h"
#include "drv/nvrtc.h"

#include <stddef.h>

typedef struct cuda_drv {
    void *so;
    char path[256];
    int driver_version; /* e.g. 13000 */
    PFN_cuGetErrorString GetErrorString;
    PFN_cuGetErrorName GetErrorName;
    PFN_cuInit Init;
    PFN_cuDriverGetVersion DriverGetVersion;
    PFN_cuDeviceGetCount DeviceGetCount;
    PFN_cuDeviceGet DeviceGet;
    PFN_cuDeviceGetName DeviceGetName;
    PFN_cuDeviceGetAttribute DeviceGetAttribute;
    PFN_cuDevicePrimaryCtxRetain DevicePrimaryCtxRetain;
    PFN_cuDevicePrimaryCtxRelease DevicePrimaryCtxRelease;
    PFN_cuCtxSetCurrent CtxSetCurrent;
    PFN_cuMemGetInfo MemGetInfo;
    PFN_cuMemAlloc MemAlloc;
    PFN_cuMemFree MemFree;
    PFN_cuMemAllocHost MemAllocHost;
    PFN_cuMemFreeHost MemFreeHost;
    PFN_cuMemcpyHtoDAsync MemcpyHtoDAsync;
    PFN_cuMemcpyDtoHAsync MemcpyDtoHAsync;
    PFN_cuMemsetD8Async MemsetD8Async;
    PFN_cuMemcpyDtoDAsync MemcpyDtoDAsync;
    PFN_cuMemcpy2DAsync Memcpy2DAsync;
    PFN_cuModuleLoadData ModuleLoadData;
    PFN_cuModuleUnload ModuleUnload;
    PFN_cuModuleGetFunction ModuleGetFunction;
    PFN_cuFuncSetAttribute FuncSetAttribute;
    PFN_cuLaunchKernel LaunchKernel;
    PFN_cuLaunchKernelEx LaunchKernelEx;
    PFN_cuStreamCreate StreamCreate;
    PFN_cuStreamDestroy StreamDestroy;
    PFN_cuStreamSynchronize StreamSynchronize;
    PFN_cuStreamWaitEvent StreamWaitEvent;
    PFN_cuEventCreate EventCreate;
    PFN_cuEventDestroy EventDestroy;
    PFN_cuEventRecord EventRecord;
    PFN_cuEventQuery EventQuery;
    PFN_cuEventSynchronize EventSynchronize;
    PFN_cuEventElapsedTime EventElapsedTime;
    PFN_cuStreamBeginCapture StreamBeginCapture;
    PFN_cuStreamEndCapture StreamEndCapture;
    PFN_cuGraphInstantiateWithFlags GraphInstantiateWithFlags;
    PFN_cuGraphLaunch GraphLaunch;
    PFN_cuGraphExecDestroy GraphExecDestroy;
    PFN_cuGraphDestroy GraphDestroy;
} cuda_drv;

/* Loads libcuda (override: a file path, "" = libcuda.so.1 on the loader path), resolves the
 * table and runs cuInit. ZP_ENOTFOUND when there is no driver, ZP_EUNSUP when it is older than
 * CUDA 12. */
int cuda_drv_load(cuda_drv *d, const char *override);
void cuda_drv_unload(cuda_drv *d);

/* Turns a failed driver call into an error naming what was attempted; 0 for CUDA_SUCCESS. */
int cuda_err(const cuda_drv *d, CUresult r, const char *what);

typedef struct cuda_dev {
    const cuda_drv *drv;
    CUdevice dev;
    CUcontext ctx;
    int ordinal, arch, n_sm; /* arch: 10 * major + minor, e.g. 90 */
    size_t smem_optin;       /* largest dynamic shared memory a kernel may opt in to */
    char name[128];
    CUstream compute, compress;
} cuda_dev;

/* Opens GPU `ordinal`: primary context made current, the two queues. */
int cuda_dev_open(cuda_dev *d, const cuda_drv *drv, int ordinal);
void cuda_dev_close(cuda_dev *d);

/* Compiles the embedded kernel source `file` with NVRTC at constants k for d's architecture (or
 * takes it from cache_dir, "" = none) and loads it on d. NVRTC's temporaries come from a's
 * temporary side and are released before return. */
int cuda_module_build(const cuda_dev *d, nvrtc_lib *nv, arena *a, const char *file,
                      const nvrtc_consts *k, const char *cache_dir, CUmodule *m);

#endif
