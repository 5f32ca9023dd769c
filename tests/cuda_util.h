/* cuda_util: what the GPU tests share (header-only): open the GPU or SKIP, compile and load a
 * kernel source at given constants, device buffers, launches, and the comparison metrics of
 * DEVELOPERS' rule "every CUDA kernel has its CPU twin": ||d||/||ref|| and NaN counts.
 * Tests allocate device memory freely (cuMemAlloc per buffer); the engine never does. */
#ifndef ZP_TEST_CUDA_UTIL_H
#define ZP_TEST_CUDA_UTIL_H

#include "arena/err.h"
#include "drv/cuda.h"
#include "drv/dtype.h"
#include "drv/nvrtc.h"
#include "tests/testlib.h"

#include <glob.h>
#include <math.h>
#include <string.h>

typedef struct gpu {
    cuda_drv drv;
    cuda_dev dev;
    nvrtc_lib nv;
    arena a;
} gpu;

/* 0 ready; 77 after printing SKIP (no driver, no GPU or no NVRTC); exits on other failures. */
static inline int gpu_open(gpu *g) {
    int rc =
        cuda_drv_load(&g->drv, getenv("ZIPAGE_CUDA_DRIVER") ? getenv("ZIPAGE_CUDA_DRIVER") : "");
    if (rc == ZP_ENOTFOUND) return test_skip("no NVIDIA driver (libcuda.so.1)");
    if (!rc) rc = cuda_dev_open(&g->dev, &g->drv, 0);
    if (rc == ZP_ENOTFOUND) return test_skip("no GPU");
    if (rc) {
        fprintf(stderr, "GPU open: %s\n", err_msg());
        exit(1);
    }
    if (nvrtc_load(&g->nv, "")) {
        fprintf(stderr, "NVRTC: %s\n", err_msg());
        exit(1);
    }
    REQUIRE(!arena_init(&g->a, "gpu-test", 256u << 20));
    printf("GPU %s sm_%d, %d SMs; NVRTC %d.%d\n", g->dev.name, g->dev.arch, g->dev.n_sm,
           g->nv.major, g->nv.minor);
    return 0;
}

#define CU(call)                                                                                   \
    do {                                                                                           \
        CUresult r_ = (call);                                                                      \
        if (r_ != CUDA_SUCCESS) {                                                                  \
            cuda_err(&g->drv, r_, #call);                                                          \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, err_msg());                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static inline CUmodule gpu_module(gpu *g, const char *file, int head_dim, int block_size, int gqa) {
    nvrtc_consts k = {head_dim, block_size, gqa};
    CUmodule m;
    if (cuda_module_build(&g->dev, &g->nv, &g->a, file, &k, "", &m)) {
        fprintf(stderr, "%s\n", err_msg());
        exit(1);
    }
    return m;
}

static inline CUfunction gpu_fn(gpu *g, CUmodule m, const char *name) {
    CUfunction f;
    CU(g->drv.ModuleGetFunction(&f, m, name));
    return f;
}

/* A device buffer filled with 0xFF bytes (NaN as f32 and bf16), so unwritten output shows. */
static inline CUdeviceptr gpu_poisoned(gpu *g, size_t bytes) {
    CUdeviceptr p;
    CU(g->drv.MemAlloc(&p, bytes ? bytes : 16));
    CU(g->drv.MemsetD8Async(p, 0xFF, bytes, g->dev.compute));
    return p;
}

static inline CUdeviceptr gpu_up(gpu *g, const void *src, size_t bytes) {
    CUdeviceptr p = gpu_poisoned(g, bytes);
    CU(g->drv.MemcpyHtoDAsync(p, src, bytes, g->dev.compute));
    CU(g->drv.StreamSynchronize(g->dev.compute));
    return p;
}

static inline void gpu_down(gpu *g, void *dst, CUdeviceptr src, size_t bytes) {
    CU(g->drv.MemcpyDtoHAsync(dst, src, bytes, g->dev.compute));
    CU(g->drv.StreamSynchronize(g->dev.compute));
}

static inline void gpu_launch(gpu *g, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                              unsigned block, unsigned smem, void **args) {
    CU(g->drv.LaunchKernel(f, gx, gy, gz, block, 1, 1, smem, g->dev.compute, args, NULL));
    CU(g->drv.StreamSynchronize(g->dev.compute));
}

/* Comparison of n values (got as f32) with a reference: relative L2 error and NaN count. */
typedef struct cmp {
    double rel, max_abs;
    size_t nan;
} cmp;

static inline cmp cmp_f32(const float *got, const float *ref, size_t n) {
    double d2 = 0, r2 = 0;
    cmp c = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) {
            c.nan++;
            continue;
        }
        double d = (double)got[i] - ref[i];
        d2 += d * d, r2 += (double)ref[i] * ref[i];
        if (fabs(d) > c.max_abs) c.max_abs = fabs(d);
    }
    c.rel = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    return c;
}

static inline void bf16_to_f32(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = zp_bf16_to_f32(src[i]);
}

/* Random bf16 values in [-amp, amp), and their exact f32 copy. */
static inline void rand_bf16(uint16_t *h, float *f, size_t n, float amp, unsigned long long *s) {
    for (size_t i = 0; i < n; i++) {
        float v = (float)((double)(test_rand_u64(s) >> 11) / 9007199254740992.0 * 2 - 1) * amp;
        h[i] = zp_f32_to_bf16(v);
        if (f) f[i] = zp_bf16_to_f32(h[i]);
    }
}

#endif
