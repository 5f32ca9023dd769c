/* NCCL on the GPUs through drv/nccl (issue 16), every GPU of the machine (up to 8):
 * 1. ncclCommInitAll from one thread, then in one group per rank: a sum all-reduce of 4,099 f32
 *    (out of place) and of 4,099 bf16 (in place), an int32 all-gather and an int32 broadcast,
 *    each compared element by element with the expected values (exact: every value and partial
 *    sum is representable, so the order NCCL adds in cannot change a bit);
 * 2. with 2 or more GPUs, the unique-id path: ncclGetUniqueId, then one thread per GPU calling
 *    ncclCommInitRank and a sum all-reduce of f32 on its own communicator.
 * NVLink multicast stays off: nccl_load sets NCCL_NVLS_ENABLE=0 (required here before any
 * communicator is made), and tools/gpu-check.sh exports it for everything it starts.
 * SKIP without a driver, a GPU or NCCL (on the GPU machine NCCL comes from PyTorch's
 * nvidia-nccl wheel, which drv/culib.c finds under /opt/<name>/.venv). Built without sanitizers
 * by `make gpu-tests`; under `make test` it runs with ASan and skips where there is no GPU.
 * Threads: the ranks of part 2 record their results; only the main thread CHECKs. */
#include "arena/err.h"
#include "drv/cuda.h"
#include "drv/dtype.h"
#include "drv/nccl.h"
#include "tests/testlib.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_DEV = 8, N = 4099, N_GATHER = 1000, N_BCAST = 2048, ROOT_SALT = 7 };

static cuda_drv drv;
static cuda_dev devs[MAX_DEV];
static nccl_lib nc;
static int ndev;

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, err_msg());
    exit(1);
}
#define CU(call, what)                                                                             \
    do {                                                                                           \
        if (cuda_err(&drv, (call), what)) die(what);                                               \
    } while (0)
#define NC(call, what)                                                                             \
    do {                                                                                           \
        if (nccl_err(&nc, (call), what)) die(what);                                                \
    } while (0)

/* Rank r's inputs. f32: quarters up to 48 * 8, so sums over 8 ranks stay exact; bf16: small
 * integers, whose sums (|s| <= 104) bf16 holds exactly. */
static float f32_in(int r, int i) {
    return 0.25f * (float)((i % 97) - 48) * (float)(r + 1);
}
static float bf16_in(int r, int i) {
    return (float)((i % 13) - 6 + r);
}
static int32_t gather_in(int r, int i) {
    return r * 100000 + i;
}
static int32_t bcast_in(int i) {
    return i * ROOT_SALT - 5;
}

static float f32_sum(int n_ranks, int i) {
    float s = 0;
    for (int r = 0; r < n_ranks; r++)
        s += f32_in(r, i);
    return s;
}

/* A buffer on GPU d holding src, or 0xFF bytes (NaN, -1) when src is NULL, so unwritten output
 * shows. */
static CUdeviceptr dev_buf(int d, const void *src, size_t bytes) {
    CUdeviceptr p;
    CU(drv.CtxSetCurrent(devs[d].ctx), "cuCtxSetCurrent");
    CU(drv.MemAlloc(&p, bytes), "cuMemAlloc");
    if (src)
        CU(drv.MemcpyHtoDAsync(p, src, bytes, devs[d].compute), "cuMemcpyHtoDAsync");
    else
        CU(drv.MemsetD8Async(p, 0xFF, bytes, devs[d].compute), "cuMemsetD8Async");
    CU(drv.StreamSynchronize(devs[d].compute), "cuStreamSynchronize");
    return p;
}

static void dev_down(int d, void *dst, CUdeviceptr src, size_t bytes) {
    CU(drv.CtxSetCurrent(devs[d].ctx), "cuCtxSetCurrent");
    CU(drv.MemcpyDtoHAsync(dst, src, bytes, devs[d].compute), "cuMemcpyDtoHAsync");
    CU(drv.StreamSynchronize(devs[d].compute), "cuStreamSynchronize");
}

/* Elements of got that differ from the expected f32 sums; the first one into *first. */
static size_t f32_wrong(const float *got, int n_ranks, int *first) {
    size_t bad = 0;
    for (int i = 0; i < N; i++)
        if (got[i] != f32_sum(n_ranks, i) && !bad++) *first = i;
    return bad;
}

typedef struct rank_bufs {
    CUdeviceptr f32_send, f32_recv, bf16, gather_send, gather_recv, bcast;
} rank_bufs;

static void init_all_path(void) {
    ncclComm_t comms[MAX_DEV];
    int list[MAX_DEV];
    for (int d = 0; d < ndev; d++)
        list[d] = d;
    NC(nc.CommInitAll(comms, ndev, list), "ncclCommInitAll");

    static float hf[N];
    static uint16_t hb[N];
    static int32_t hg[N_GATHER * MAX_DEV], hc[N_BCAST];
    rank_bufs b[MAX_DEV];
    const int root = ndev - 1;
    for (int d = 0; d < ndev; d++) {
        for (int i = 0; i < N; i++)
            hf[i] = f32_in(d, i), hb[i] = zp_f32_to_bf16(bf16_in(d, i));
        for (int i = 0; i < N_GATHER; i++)
            hg[i] = gather_in(d, i);
        for (int i = 0; i < N_BCAST; i++)
            hc[i] = bcast_in(i);
        b[d] = (rank_bufs){
            .f32_send = dev_buf(d, hf, sizeof hf),
            .f32_recv = dev_buf(d, NULL, sizeof hf),
            .bf16 = dev_buf(d, hb, sizeof hb),
            .gather_send = dev_buf(d, hg, N_GATHER * sizeof(int32_t)),
            .gather_recv = dev_buf(d, NULL, (size_t)ndev * N_GATHER * sizeof(int32_t)),
            .bcast = dev_buf(d, d == root ? hc : NULL, sizeof hc),
        };
    }
    /* One thread drives every rank, so each rank's calls go in one group (NCCL would wait in
     * the first rank's call for the others otherwise). */
    NC(nc.GroupStart(), "ncclGroupStart");
    for (int d = 0; d < ndev; d++) {
        CUstream s = devs[d].compute;
        NC(nc.AllReduce((void *)b[d].f32_send, (void *)b[d].f32_recv, N, ncclFloat32, ncclSum,
                        comms[d], s),
           "ncclAllReduce f32");
        NC(nc.AllReduce((void *)b[d].bf16, (void *)b[d].bf16, N, ncclBfloat16, ncclSum, comms[d],
                        s),
           "ncclAllReduce bf16");
        NC(nc.AllGather((void *)b[d].gather_send, (void *)b[d].gather_recv, N_GATHER, ncclInt32,
                        comms[d], s),
           "ncclAllGather");
        NC(nc.Broadcast((void *)b[d].bcast, (void *)b[d].bcast, N_BCAST, ncclInt32, root, comms[d],
                        s),
           "ncclBroadcast");
    }
    NC(nc.GroupEnd(), "ncclGroupEnd");
    for (int d = 0; d < ndev; d++) {
        CU(drv.CtxSetCurrent(devs[d].ctx), "cuCtxSetCurrent");
        CU(drv.StreamSynchronize(devs[d].compute), "cuStreamSynchronize");
        int rc = nccl_async_err(&nc, comms[d], "collectives");
        CHECKF(rc == 0, "rank %d: %s", d, err_msg());
    }

    for (int d = 0; d < ndev; d++) {
        int first = 0;
        dev_down(d, hf, b[d].f32_recv, sizeof hf);
        size_t bad = f32_wrong(hf, ndev, &first);
        CHECKF(bad == 0, "rank %d f32 all-reduce: %zu of %d wrong, first [%d] = %g, want %g", d,
               bad, N, first, hf[first], f32_sum(ndev, first));

        dev_down(d, hb, b[d].bf16, sizeof hb);
        bad = 0;
        for (int i = 0; i < N; i++) {
            float want = 0;
            for (int r = 0; r < ndev; r++)
                want += bf16_in(r, i);
            if (zp_bf16_to_f32(hb[i]) != want && !bad++) first = i;
        }
        CHECKF(bad == 0, "rank %d bf16 all-reduce: %zu of %d wrong, first at [%d]", d, bad, N,
               first);

        dev_down(d, hg, b[d].gather_recv, (size_t)ndev * N_GATHER * sizeof(int32_t));
        bad = 0;
        for (int r = 0; r < ndev; r++)
            for (int i = 0; i < N_GATHER; i++)
                bad += hg[r * N_GATHER + i] != gather_in(r, i);
        CHECKF(bad == 0, "rank %d all-gather: %zu of %d wrong", d, bad, ndev * N_GATHER);

        dev_down(d, hc, b[d].bcast, sizeof hc);
        bad = 0;
        for (int i = 0; i < N_BCAST; i++)
            bad += hc[i] != bcast_in(i);
        CHECKF(bad == 0, "rank %d broadcast from %d: %zu of %d wrong", d, root, bad, N_BCAST);
    }
    for (int d = 0; d < ndev; d++) {
        CU(drv.CtxSetCurrent(devs[d].ctx), "cuCtxSetCurrent");
        CU(drv.MemFree(b[d].f32_send), "cuMemFree");
        CU(drv.MemFree(b[d].f32_recv), "cuMemFree");
        CU(drv.MemFree(b[d].bf16), "cuMemFree");
        CU(drv.MemFree(b[d].gather_send), "cuMemFree");
        CU(drv.MemFree(b[d].gather_recv), "cuMemFree");
        CU(drv.MemFree(b[d].bcast), "cuMemFree");
        NC(nc.CommDestroy(comms[d]), "ncclCommDestroy");
    }
    printf("ncclCommInitAll over %d GPU(s): all-reduce f32 and bf16, all-gather, broadcast\n",
           ndev);
}

/* One rank of the unique-id path, on its own thread and GPU. */
typedef struct rank_job {
    pthread_t thread;
    int rank;
    ncclUniqueId id;
    int rc;
    char msg[512];
    size_t wrong;
    int first;
    float first_got;
} rank_job;

static void rank_run(rank_job *j) {
    float h[N];
    ncclComm_t comm = NULL;
    CU(drv.CtxSetCurrent(devs[j->rank].ctx), "cuCtxSetCurrent"); /* NCCL takes the current GPU */
    j->rc = nccl_err(&nc, nc.CommInitRank(&comm, ndev, j->id, j->rank), "ncclCommInitRank");
    if (j->rc) return;
    for (int i = 0; i < N; i++)
        h[i] = f32_in(j->rank, i);
    CUdeviceptr send = dev_buf(j->rank, h, sizeof h), recv = dev_buf(j->rank, NULL, sizeof h);
    j->rc = nccl_err(&nc,
                     nc.AllReduce((void *)send, (void *)recv, N, ncclFloat32, ncclSum, comm,
                                  devs[j->rank].compute),
                     "ncclAllReduce");
    if (!j->rc) {
        CU(drv.StreamSynchronize(devs[j->rank].compute), "cuStreamSynchronize");
        j->rc = nccl_async_err(&nc, comm, "ncclAllReduce");
    }
    if (!j->rc) {
        dev_down(j->rank, h, recv, sizeof h);
        j->wrong = f32_wrong(h, ndev, &j->first);
        j->first_got = h[j->first];
    }
    CU(drv.MemFree(send), "cuMemFree");
    CU(drv.MemFree(recv), "cuMemFree");
    if (!j->rc) j->rc = nccl_err(&nc, nc.CommDestroy(comm), "ncclCommDestroy");
}

static void *rank_main(void *arg) {
    rank_job *j = arg;
    rank_run(j);
    if (j->rc) snprintf(j->msg, sizeof j->msg, "%s", err_msg()); /* this thread's message */
    return NULL;
}

static void unique_id_path(void) {
    ncclUniqueId id;
    NC(nc.GetUniqueId(&id), "ncclGetUniqueId");
    static rank_job jobs[MAX_DEV];
    for (int d = 0; d < ndev; d++) {
        jobs[d] = (rank_job){.rank = d, .id = id};
        REQUIRE(!pthread_create(&jobs[d].thread, NULL, rank_main, &jobs[d]));
    }
    for (int d = 0; d < ndev; d++) {
        pthread_join(jobs[d].thread, NULL);
        CHECKF(jobs[d].rc == 0, "rank %d: %s", d, jobs[d].msg);
        CHECKF(jobs[d].wrong == 0,
               "rank %d f32 all-reduce: %zu of %d wrong, first [%d] = %g, want %g", d,
               jobs[d].wrong, N, jobs[d].first, jobs[d].first_got, f32_sum(ndev, jobs[d].first));
    }
    printf("ncclGetUniqueId + ncclCommInitRank, one thread per GPU over %d GPUs: all-reduce f32\n",
           ndev);
}

int main(void) {
    /* NCCL first, before the driver starts threads of its own (nccl_load calls setenv). Unlike
     * test_nccl_load, this test never sets NCCL_NVLS_ENABLE=1 to see it overridden: were the
     * loader broken, NCCL would then run with multicast on a shared host. */
    int nccl_rc = nccl_load(&nc, NULL);
    char nccl_why[600];
    snprintf(nccl_why, sizeof nccl_why, "no NCCL: %s", err_msg());
    const char *v = getenv("NCCL_NVLS_ENABLE");
    REQUIRE(v && !strcmp(v, "0")); /* no communicator is made otherwise */

    int rc = cuda_drv_load(&drv, getenv("ZIPAGE_CUDA_DRIVER") ? getenv("ZIPAGE_CUDA_DRIVER") : "");
    if (rc == ZP_ENOTFOUND) return test_skip("no NVIDIA driver (libcuda.so.1)");
    if (rc) die("CUDA driver");
    CU(drv.DeviceGetCount(&ndev), "cuDeviceGetCount");
    if (ndev == 0) return test_skip("no GPU");
    if (nccl_rc == ZP_ENOTFOUND) return test_skip(nccl_why);
    if (nccl_rc) {
        fprintf(stderr, "%s\n", nccl_why);
        return 1;
    }
    if (nc.note[0]) printf("%s\n", nc.note);
    if (ndev > MAX_DEV) ndev = MAX_DEV;
    for (int d = 0; d < ndev; d++)
        if (cuda_dev_open(&devs[d], &drv, d)) die("cuda_dev_open");
    printf("NCCL %d from %s; %d GPU(s), first %s\n", nc.version, nc.lib.path, ndev, devs[0].name);

    init_all_path();
    if (ndev >= 2)
        unique_id_path();
    else
        printf("one GPU: the unique-id path (one thread per GPU) needs 2 or more\n");

    for (int d = 0; d < ndev; d++)
        cuda_dev_close(&devs[d]);
    return test_done("test_cuda_nccl");
}
