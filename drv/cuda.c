/* cuda: driver loading, device and queues (see cuda.h). */
#include "drv/cuda.h"

#include "arena/err.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* The table: base name -> slot in cuda_drv. */
#define ENTRY(field, name)                                                                         \
    { name, offsetof(cuda_drv, field) }
static const struct {
    const char *name;
    size_t off;
} entries[] = {
    ENTRY(GetErrorString, "cuGetErrorString"),
    ENTRY(GetErrorName, "cuGetErrorName"),
    ENTRY(Init, "cuInit"),
    ENTRY(DriverGetVersion, "cuDriverGetVersion"),
    ENTRY(DeviceGetCount, "cuDeviceGetCount"),
    ENTRY(DeviceGet, "cuDeviceGet"),
    ENTRY(DeviceGetName, "cuDeviceGetName"),
    ENTRY(DeviceGetAttribute, "cuDeviceGetAttribute"),
    ENTRY(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
    ENTRY(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease"),
    ENTRY(CtxSetCurrent, "cuCtxSetCurrent"),
    ENTRY(MemGetInfo, "cuMemGetInfo"),
    ENTRY(MemAlloc, "cuMemAlloc"),
    ENTRY(MemFree, "cuMemFree"),
    ENTRY(MemAllocHost, "cuMemAllocHost"),
    ENTRY(MemFreeHost, "cuMemFreeHost"),
    ENTRY(MemcpyHtoDAsync, "cuMemcpyHtoDAsync"),
    ENTRY(MemcpyDtoHAsync, "cuMemcpyDtoHAsync"),
    ENTRY(MemsetD8Async, "cuMemsetD8Async"),
    ENTRY(MemcpyDtoDAsync, "cuMemcpyDtoDAsync"),
    ENTRY(Memcpy2DAsync, "cuMemcpy2DAsync"),
    ENTRY(ModuleLoadData, "cuModuleLoadData"),
    ENTRY(ModuleUnload, "cuModuleUnload"),
    ENTRY(ModuleGetFunction, "cuModuleGetFunction"),
    ENTRY(FuncSetAttribute, "cuFuncSetAttribute"),
    ENTRY(LaunchKernel, "cuLaunchKernel"),
    ENTRY(LaunchKernelEx, "cuLaunchKernelEx"),
    ENTRY(StreamCreate, "cuStreamCreate"),
    ENTRY(StreamDestroy, "cuStreamDestroy"),
    ENTRY(StreamSynchronize, "cuStreamSynchronize"),
    ENTRY(StreamWaitEvent, "cuStreamWaitEvent"),
    ENTRY(EventCreate, "cuEventCreate"),
    ENTRY(EventDestroy, "cuEventDestroy"),
    ENTRY(EventRecord, "cuEventRecord"),
    ENTRY(EventQuery, "cuEventQuery"),
    ENTRY(EventSynchronize, "cuEventSynchronize"),
    ENTRY(EventElapsedTime, "cuEventElapsedTime"),
    ENTRY(StreamBeginCapture, "cuStreamBeginCapture"),
    ENTRY(StreamEndCapture, "cuStreamEndCapture"),
    ENTRY(GraphInstantiateWithFlags, "cuGraphInstantiateWithFlags"),
    ENTRY(GraphLaunch, "cuGraphLaunch"),
    ENTRY(GraphExecDestroy, "cuGraphExecDestroy"),
    ENTRY(GraphDestroy, "cuGraphDestroy"),
};
#undef ENTRY

int cuda_err(const cuda_drv *d, CUresult r, const char *what) {
    if (r == CUDA_SUCCESS) return 0;
    const char *name = NULL, *text = NULL;
    if (d->GetErrorName) d->GetErrorName(r, &name);
    if (d->GetErrorString) d->GetErrorString(r, &text);
    return err_set(ZP_EBACKEND, "%s: %s (%d): %s", what, name ? name : "CUDA error", r,
                   text ? text : "no description");
}

int cuda_drv_load(cuda_drv *d, const char *override) {
    memset(d, 0, sizeof *d);
    const char *lib = override && *override ? override : "libcuda.so.1";
    d->so = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!d->so)
        return err_set(ZP_ENOTFOUND,
                       "no NVIDIA driver: cannot load %s (%s); install the driver or set key "
                       "'cuda_driver_path'",
                       lib, dlerror());
    snprintf(d->path, sizeof d->path, "%s", lib);
    PFN_cuGetProcAddress_v2 gpa;
    *(void **)&gpa = dlsym(d->so, "cuGetProcAddress_v2");
    if (!gpa) {
        cuda_drv_unload(d);
        return err_set(ZP_EUNSUP,
                       "%s has no cuGetProcAddress_v2: the NVIDIA driver is older "
                       "than CUDA 12; zipage needs driver 525 or newer",
                       lib);
    }
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        void *fn = NULL;
        int status = -1;
        CUresult r =
            gpa(entries[i].name, &fn, ZP_CUDA_API_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &status);
        if (r != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || !fn) {
            cuda_drv_unload(d);
            return err_set(ZP_EUNSUP, "%s: cannot resolve %s for CUDA %d (error %d, status %d)",
                           lib, entries[i].name, ZP_CUDA_API_VERSION, r, status);
        }
        memcpy((char *)d + entries[i].off, &fn, sizeof fn);
    }
    int rc = cuda_err(d, d->Init(0), "cuInit");
    if (!rc) rc = cuda_err(d, d->DriverGetVersion(&d->driver_version), "cuDriverGetVersion");
    if (!rc && d->driver_version < ZP_CUDA_API_VERSION)
        rc = err_set(ZP_EUNSUP, "the NVIDIA driver supports CUDA %d.%d; zipage needs 12.0 or newer",
                     d->driver_version / 1000, d->driver_version % 1000 / 10);
    if (rc) cuda_drv_unload(d);
    return rc;
}

void cuda_drv_unload(cuda_drv *d) {
    if (d->so) dlclose(d->so);
    memset(d, 0, sizeof *d);
}

int cuda_dev_open(cuda_dev *d, const cuda_drv *drv, int ordinal) {
    memset(d, 0, sizeof *d);
    d->drv = drv;
    d->ordinal = ordinal;
    int n = 0, rc, major = 0, minor = 0, optin = 0;
    if ((rc = cuda_err(drv, drv->DeviceGetCount(&n), "cuDeviceGetCount"))) return rc;
    if (ordinal >= n)
        return err_set(n ? ZP_EINVAL : ZP_ENOTFOUND,
                       "key 'cuda_device': GPU %d requested, %d present", ordinal, n);
    if ((rc = cuda_err(drv, drv->DeviceGet(&d->dev, ordinal), "cuDeviceGet")) ||
        (rc = cuda_err(drv, drv->DeviceGetName(d->name, sizeof d->name, d->dev),
                       "cuDeviceGetName")) ||
        (rc = cuda_err(
             drv,
             drv->DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d->dev),
             "cuDeviceGetAttribute")) ||
        (rc = cuda_err(
             drv,
             drv->DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d->dev),
             "cuDeviceGetAttribute")) ||
        (rc = cuda_err(
             drv,
             drv->DeviceGetAttribute(&d->n_sm, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d->dev),
             "cuDeviceGetAttribute")) ||
        (rc = cuda_err(drv,
                       drv->DeviceGetAttribute(
                           &optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, d->dev),
                       "cuDeviceGetAttribute")))
        return rc;
    d->arch = major * 10 + minor;
    d->smem_optin = (size_t)optin;
    if (d->arch < 80)
        return err_set(ZP_EUNSUP, "GPU %d (%s) is sm_%d; zipage's bf16 kernels need sm_80 or newer",
                       ordinal, d->name, d->arch);
    if ((rc = cuda_err(drv, drv->DevicePrimaryCtxRetain(&d->ctx, d->dev),
                       "cuDevicePrimaryCtxRetain")))
        return rc;
    if ((rc = cuda_err(drv, drv->CtxSetCurrent(d->ctx), "cuCtxSetCurrent")) ||
        (rc = cuda_err(drv, drv->StreamCreate(&d->compute, CU_STREAM_NON_BLOCKING),
                       "cuStreamCreate")) ||
        (rc = cuda_err(drv, drv->StreamCreate(&d->compress, CU_STREAM_NON_BLOCKING),
                       "cuStreamCreate"))) {
        cuda_dev_close(d);
        return rc;
    }
    return 0;
}

void cuda_dev_close(cuda_dev *d) {
    if (!d->drv || !d->ctx) return;
    if (d->compute) d->drv->StreamDestroy(d->compute);
    if (d->compress) d->drv->StreamDestroy(d->compress);
    d->drv->DevicePrimaryCtxRelease(d->dev);
    d->ctx = NULL;
}

int cuda_module_build(const cuda_dev *d, nvrtc_lib *nv, arena *a, const char *file,
                      const nvrtc_consts *k, const char *cache_dir, CUmodule *m) {
    const rtc_source *src = rtc_source_find(file);
    if (!src) return err_set(ZP_ENOTFOUND, "kernel source %s is not embedded", file);
    char store[3][32];
    const char *defs[3];
    nvrtc_job job;
    nvrtc_job_init(&job, store, defs, src, k, d->arch);
    size_t mark = arena_temp_mark(a);
    const void *cubin;
    size_t len;
    int cached;
    int rc = nvrtc_compile(nv, a, &job, cache_dir, &cubin, &len, &cached);
    if (!rc) rc = cuda_err(d->drv, d->drv->ModuleLoadData(m, cubin), file);
    arena_temp_reset(a, mark);
    return rc;
}
