/* comm_nccl: drv/comm.h's communicator over NCCL (see comm_nccl.h). */
#include "drv/comm_nccl.h"

#include "arena/err.h"
#include "drv/cuda.h"

#include <string.h>

static size_t al256(size_t v) {
    return (v + 255) & ~(size_t)255;
}

static size_t piece_max(int size, int cols) {
    return (size_t)((cols + size - 1) / size);
}

size_t comm_nccl_bytes(int size, int max_rows, int cols) {
    size_t piece = (size_t)max_rows * piece_max(size, cols) * sizeof(float);
    return al256(piece) + al256(piece * (size_t)size);
}

static int nccl_type(zp_dtype t, ncclDataType_t *out) {
    switch (t) {
    case ZP_F32:
        *out = ncclFloat32;
        return 0;
    case ZP_BF16:
        *out = ncclBfloat16;
        return 0;
    case ZP_F16:
        *out = ncclFloat16;
        return 0;
    default:
        return err_set(ZP_EINVAL, "comm_nccl: no NCCL type for dtype %d", (int)t);
    }
}

/* The rank's context current on the calling thread (rank threads are not the opening thread). */
static int bind(const comm_nccl *r) {
    return cuda_err(r->v.drv, r->v.drv->CtxSetCurrent(r->v.ctx), "cuCtxSetCurrent (comm_nccl)");
}

/* 0 while the group stands, else ZP_ESTATE: after an abort no call touches NCCL. The acquire
 * pairs with the release in abort_group. */
static int live(const comm_nccl *r) {
    if (!__atomic_load_n(&r->aborted, __ATOMIC_ACQUIRE)) return 0;
    return err_set(ZP_ESTATE, "comm_nccl: rank %d's group was aborted by a rank's failure",
                   r->c.rank);
}

/* drv/comm.h's abort: the first rank to call it aborts every rank's communicator (a second
 * caller finds it begun and returns). NCCL makes each communicator's device current as it aborts
 * it, so the caller's context is made current again. */
static void abort_group(comm *c) {
    comm_nccl *self = (comm_nccl *)c, *g = self->group;
    if (__atomic_exchange_n(&g[0].aborting, 1, __ATOMIC_ACQ_REL)) return;
    for (int i = 0; i < c->size; i++) /* release: pairs with live()'s acquire */
        __atomic_store_n(&g[i].aborted, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < c->size; i++)
        if (g[i].nc) {
            g[i].lib->CommAbort(g[i].nc);
            g[i].nc = NULL;
        }
    (void)bind(self); /* on failure the next op on this thread reports the context */
}

static int all_reduce_sum(comm *c, be_ptr buf, size_t n, zp_dtype t) {
    comm_nccl *r = (comm_nccl *)c;
    ncclDataType_t nt = ncclFloat32;
    int rc = live(r);
    if (!rc) rc = nccl_type(t, &nt);
    if (!rc) rc = bind(r);
    if (rc) return rc;
    return nccl_err(
        r->lib,
        r->lib->AllReduce((const void *)buf, (void *)buf, n, nt, ncclSum, r->nc, r->v.compute),
        "ncclAllReduce");
}

/* Columns [c0, c1) of cols over size ranks for rank i (drv/comm.h's pieces). */
static void piece(int i, int size, int cols, int *c0, int *w) {
    *c0 = (int)((long long)i * cols / size);
    *w = (int)((long long)(i + 1) * cols / size) - *c0;
}

static int all_gather(comm *c, be_ptr send, be_ptr full, int rows, int cols, int ld, zp_dtype t,
                      int root) {
    comm_nccl *r = (comm_nccl *)c;
    const cuda_drv *d = r->v.drv;
    const int size = c->size;
    const size_t es = zp_dtype_size(t), wmax = piece_max(size, cols);
    const size_t count = (size_t)rows * wmax;
    if (count * es > r->gather_elems * sizeof(float))
        return err_set(ZP_EINVAL,
                       "comm_nccl: gather of %d rows x %d columns exceeds the %zu elements "
                       "planned per rank",
                       rows, cols, r->gather_elems);
    ncclDataType_t nt = ncclFloat32;
    int rc = live(r);
    if (!rc) rc = nccl_type(t, &nt);
    if (!rc) rc = bind(r);
    if (rc) return rc;
    int c0, w;
    piece(c->rank, size, cols, &c0, &w);
    if ((rc = cuda_err(
             d, d->MemcpyDtoDAsync(r->send, send, (size_t)rows * (size_t)w * es, r->v.compute),
             "cuMemcpyDtoDAsync (comm_nccl gather)")) ||
        (rc = nccl_err(r->lib,
                       r->lib->AllGather((const void *)r->send, (void *)r->recv, count, nt, r->nc,
                                         r->v.compute),
                       "ncclAllGather")))
        return rc;
    if (root >= 0 && root != c->rank) return 0;
    for (int i = 0; i < size; i++) {
        piece(i, size, cols, &c0, &w);
        CUDA_MEMCPY2D cp = {0};
        cp.srcMemoryType = cp.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        cp.srcDevice = r->recv + (CUdeviceptr)((size_t)i * count * es);
        cp.srcPitch = (size_t)w * es;
        cp.dstDevice = full + (CUdeviceptr)((size_t)c0 * es);
        cp.dstPitch = (size_t)ld * es;
        cp.WidthInBytes = (size_t)w * es;
        cp.Height = (size_t)rows;
        if ((rc = cuda_err(d, d->Memcpy2DAsync(&cp, r->v.compute),
                           "cuMemcpy2DAsync (comm_nccl gather)")))
            return rc;
    }
    return 0;
}

int comm_nccl_open(comm_nccl *ranks, const nccl_lib *lib, backend *const *bes, int size,
                   int max_rows, int cols) {
    if (size < 1 || size > ZP_TP_MAX || cols < size || max_rows < 1)
        return err_set(ZP_EINVAL, "comm_nccl: %d ranks (1..%d), %d columns, %d rows", size,
                       ZP_TP_MAX, cols, max_rows);
    int devs[ZP_TP_MAX], rc;
    ncclComm_t ncs[ZP_TP_MAX];
    for (int i = 0; i < size; i++) {
        memset(&ranks[i], 0, sizeof ranks[i]);
        if ((rc = cuda_backend_view(bes[i], &ranks[i].v))) return rc;
        devs[i] = ranks[i].v.ordinal;
        for (int j = 0; j < i; j++)
            if (devs[j] == devs[i])
                return err_set(ZP_EINVAL, "comm_nccl: ranks %d and %d on the same GPU %d", j, i,
                               devs[i]);
    }
    if ((rc = nccl_err(lib, lib->CommInitAll(ncs, size, devs), "ncclCommInitAll"))) return rc;
    const size_t elems = (size_t)max_rows * piece_max(size, cols);
    for (int i = 0; i < size && !rc; i++) {
        comm_nccl *r = &ranks[i];
        r->lib = lib, r->nc = ncs[i], r->gather_elems = elems, r->group = ranks;
        r->c = (comm){.rank = i,
                      .size = size,
                      .impl = r,
                      .all_reduce_sum = all_reduce_sum,
                      .all_gather = all_gather,
                      .abort = abort_group};
        if (!(rc = bind(r)) && !(rc = bes[i]->alloc(bes[i], al256(elems * sizeof(float)), 256,
                                                    &r->send, "comm_nccl send")))
            rc = bes[i]->alloc(bes[i], al256(elems * sizeof(float) * (size_t)size), 256, &r->recv,
                               "comm_nccl receive");
    }
    if (rc)
        for (int i = 0; i < size; i++)
            lib->CommDestroy(ncs[i]);
    return rc;
}

int comm_nccl_check(const comm_nccl *rank) {
    int rc = live(rank);
    return rc ? rc : nccl_async_err(rank->lib, rank->nc, "NCCL communicator");
}

void comm_nccl_close(comm_nccl *ranks, int size) {
    for (int i = 0; i < size; i++)
        if (ranks[i].nc) {
            ranks[i].lib->CommDestroy(ranks[i].nc);
            ranks[i].nc = NULL;
        }
}
