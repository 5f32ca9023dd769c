/* cuda_engine_util: shared parts of the engine-level GPU tests (test_cuda_engine,
 * test_cuda_compress): whether the CUDA backend starts here, and counting the driver's
 * allocation and event-creation calls made through the backend's own function table, and
 * comparing two runs' outputs request by request.
 * Header-only, single-threaded; the counters are the test's. */
#ifndef ZP_CUDA_ENGINE_UTIL_H
#define ZP_CUDA_ENGINE_UTIL_H

#include "drv/cuda.h"
#include "drv/cuda_be.h"
#include "tests/harness.h"

/* 1 when the CUDA backend starts on th_dir's model (with compression when compress), 0 after
 * printing SKIP with the reason. */
static inline int cuda_engine_usable(int compress) {
    conf cf;
    conf_defaults(&cf);
    snprintf(cf.model, sizeof cf.model, "%s", th_dir);
    cf.backend = CONF_BACKEND_CUDA;
    cf.compress = compress;
    cf.max_model_len = 256;
    cf.block_size = 16;
    cf.kv_memory_mb = 16;
    cf.max_cache_blocks_per_seq = 4;
    cf.query_cache_len = 4;
    arena a;
    REQUIRE(arena_init(&a, "probe", 512u << 20) == 0);
    engine *e = NULL;
    int rc = engine_open(&e, &a, &cf, 0, NULL, 0, th_event, NULL);
    if (!rc) engine_close(e);
    arena_release(&a);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "no CUDA backend%s: %s", compress ? " with compression" : "",
                 err_msg());
        test_skip(why);
        return 0;
    }
    return 1;
}

static PFN_cuMemAlloc cet_alloc;
static PFN_cuMemAllocHost cet_alloc_host;
static PFN_cuEventCreate cet_event_create;
static cuda_drv *cet_drv;
static long cet_calls; /* allocations and event creations counted */
static CUresult cet_count_alloc(CUdeviceptr *p, size_t bytes) {
    cet_calls++;
    return cet_alloc(p, bytes);
}
static CUresult cet_count_alloc_host(void **p, size_t bytes) {
    cet_calls++;
    return cet_alloc_host(p, bytes);
}
static CUresult cet_count_event_create(CUevent *ev, unsigned flags) {
    cet_calls++;
    return cet_event_create(ev, flags);
}

/* Counts e's driver allocations and event creations until cuda_alloc_count_end. */
static inline void cuda_alloc_count_begin(engine *e) {
    cet_drv = cuda_backend_drv(engine_backend(e));
    REQUIRE(cet_drv);
    cet_alloc = cet_drv->MemAlloc, cet_alloc_host = cet_drv->MemAllocHost;
    cet_event_create = cet_drv->EventCreate;
    cet_drv->MemAlloc = cet_count_alloc, cet_drv->MemAllocHost = cet_count_alloc_host;
    cet_drv->EventCreate = cet_count_event_create;
}

/* Restores the driver table; returns the calls counted since cuda_alloc_count_begin. */
static inline long cuda_alloc_count_end(void) {
    cet_drv->MemAlloc = cet_alloc, cet_drv->MemAllocHost = cet_alloc_host;
    cet_drv->EventCreate = cet_event_create;
    return cet_calls;
}

/* Counts requests whose whole output (tokens, logprobs, finish) is identical in a and b,
 * failing the test for each that differs; prints one line. */
static inline int cuda_compare(th *a, th *b, int n, const char *what) {
    int same = 0;
    for (int i = 0; i < n; i++) {
        int s = a->out[i].finals == 1 && b->out[i].finals == 1 && th_same(&a->out[i], &b->out[i]);
        CHECKF(s, "%s: request %d differs", what, i);
        same += s;
    }
    printf("  %-58s %d/%d identical\n", what, same, n);
    return same;
}

#endif
