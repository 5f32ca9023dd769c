/* nccl_util: the start of the GPU tests that use NCCL (test_cuda_comm, test_cuda_tp): NCCL
 * loaded (which forces NCCL_NVLS_ENABLE=0; no communicator is made unless it reads "0"), the
 * driver loaded and the GPUs counted.
 * Header-only, main thread, before any rank thread starts. */
#ifndef ZP_TESTS_NCCL_UTIL_H
#define ZP_TESTS_NCCL_UTIL_H

#include "arena/err.h"
#include "drv/cuda.h"
#include "drv/nccl.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0 with NCCL in *nc and the GPU count (>= min_gpus) in *n_gpus, else the test's exit code after
 * printing SKIP: no driver, fewer than min_gpus GPUs (need: what they are for), or no NCCL. */
static inline int nccl_test_start(nccl_lib *nc, int min_gpus, const char *need, int *n_gpus) {
    int nccl_rc = nccl_load(nc, NULL);
    char why[600];
    snprintf(why, sizeof why, "no NCCL: %s", err_msg());
    const char *v = getenv("NCCL_NVLS_ENABLE");
    REQUIRE(v && !strcmp(v, "0")); /* no communicator is made otherwise */
    cuda_drv drv;
    int rc = cuda_drv_load(&drv, getenv("ZIPAGE_CUDA_DRIVER") ? getenv("ZIPAGE_CUDA_DRIVER") : "");
    if (rc == ZP_ENOTFOUND) return test_skip("no NVIDIA driver (libcuda.so.1)");
    REQUIRE(rc == 0);
    REQUIRE(cuda_err(&drv, drv.DeviceGetCount(n_gpus), "cuDeviceGetCount") == 0);
    if (*n_gpus < min_gpus) return test_skip(need);
    if (nccl_rc == ZP_ENOTFOUND) return test_skip(why);
    REQUIRE(nccl_rc == 0);
    return 0;
}

#endif
