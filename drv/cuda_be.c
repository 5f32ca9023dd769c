/* cuda_be: the CUDA backend (../shared/spec/cuda-backend.md): the op table of drv/backend.h
 * as launches of rtc_kernels/ (NVRTC) and cuBLASLt GEMMs on the device's queues.
 *
 * Memory: one cuMemAlloc at reserve() of the planner's bytes plus this backend's own scratch
 * (scratch_bytes: the cuBLASLt workspace, the attention partials, the sampler's seats), carved
 * by alloc() and never freed until destroy(); one cuMemAllocHost at reserve() of the planner's
 * host bytes, carved by alloc_host() (the engine's per-step staging: pinned, so its copies are
 * asynchronous and may sit beside graph launches); one pinned staging buffer (cuMemAllocHost at
 * creation) through which weights go up, converted to bf16. Host side: the instance in its own
 * mapping, GEMM plans and NVRTC's temporaries in the backend's arena. Nothing is allocated after
 * start-up: plans, kernels, graphs, events and staging all exist before the first step.
 * Queues: every op, upload and download goes to the stream of the queue use_queue selected
 * (drv/cuda.c's compute and compress streams); graphs are captured and replayed on compute.
 * Events: a pool of BE_EVENTS CUevents with timing, created with the backend; ev_set marks the
 * ones recorded at least once, so the timer can name an event that never was.
 * Dtypes: activations, weights and the KV cache are bf16; the residual stream and the logits
 * f32; every kernel accumulates in f32.
 * Errors: ops are void and queued; the first failed launch is kept (code and message) and
 * returned by the next sync(), which also reports the queues' own errors. The queue and event
 * calls check their ids and every driver status at once.
 * Threading: the thread that created the backend (the engine's scheduler) owns the context
 * and calls every op.
 */
#include "drv/cuda_be.h"

#include "arena/arena.h"
#include "arena/err.h"
#include "drv/cublaslt.h"
#include "drv/cuda.h"
#include "drv/attn_abi.h"
#include "drv/attn_tiles.h"
#include "drv/layer_abi.h"
#include "drv/compress_abi.h"
#include "drv/gemmtune.h"
#include "drv/nvrtc.h"
#include "drv/sample_abi.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

enum {
    CB_STAGING = 64 << 20, /* pinned staging for weight uploads */
    CB_ALIGN = 256,
    CB_MAX_GRAPHS = 256,
};

typedef struct cuda_be {
    backend be;
    cuda_drv drv;
    cuda_dev dev;
    nvrtc_lib nv;
    cublaslt lt;
    arena a; /* NVRTC's temporaries at creation */
    be_shape s;
    int invariant, chunk, pchunk; /* attention splits: decode rows, prompt rows */
    size_t ws_bytes; /* cuBLASLt workspace (key gemm_workspace_mb) */
    CUdeviceptr mem;
    size_t size, used;
    CUdeviceptr ws, part_o, part_ml;
    size_t part_cap; /* (token row, split) pairs the partials hold */
    void *staging;
    CUmodule layer_mod, attn_mod, prefill_mod, sample_mod, cscore_mod, cselect_mod;
    CUfunction embed, add_rmsnorm, qkv, swiglu, gather, argmax, attn_partial, attn_merge;
    CUfunction attn_decode_mma; /* zp_attn_decode_mma when attention_mma, else unused */
    int attention_mma;          /* decode rows through zp_attn_decode_mma (conf attention_kernel) */
    int prefill_choice;         /* conf attention_prefill_kernel (ATTN_PREFILL_*) */
    attn_prefill_kernel prefill; /* the prompt rows' kernel it picks on this GPU */
    unsigned attn_mma_smem;     /* its dynamic shared memory (drv/attn_abi.h) */
    int pdl;                    /* launches with programmatic serialization (conf cuda_pdl) */
    CUfunction attn_prefill, qcache_store, cmp_score, cmp_redundancy, cmp_select, cmp_compact;
    CUfunction sample, seat_init;
    CUdeviceptr seen, seat_counts; /* penalty state of the sample_seats seats */
    cublaslt_gemm *plans;
    int n_plans, cap_plans;
    gemmtune_ctx tune; /* batch-invariant plans: x and y in the partials, the staging buffer */
    size_t tune_x;     /* bytes of the partials region the tuner's random rows take */
    CUgraphExec graphs[CB_MAX_GRAPHS];
    void *host; /* pinned host staging, carved by alloc_host */
    size_t host_size, host_used;
    int q; /* the selected queue (BE_Q_*) */
    CUevent ev[BE_EVENTS];
    uint8_t ev_set[BE_EVENTS];
    int rc[BE_QUEUES]; /* per queue: its first failed op since its last sync */
    char err[BE_QUEUES][512];
    char desc[256];
    char cache_dir[1024]; /* kernels and tuned GEMM plans; "" = none */
} cuda_be;

static size_t al(size_t v) {
    return (v + CB_ALIGN - 1) & ~(size_t)(CB_ALIGN - 1);
}

/* A queue's stream (q checked by the caller), and the selected queue's. */
static CUstream stream_of(const cuda_be *cb, int q) {
    return q == BE_Q_COMPRESS ? cb->dev.compress : cb->dev.compute;
}

static CUstream cur(const cuda_be *cb) {
    return stream_of(cb, cb->q);
}

/* Keeps the first failure of a queued op for the next sync(). */
static void keep(cuda_be *cb, int rc) {
    if (!rc || cb->rc[cb->q]) return;
    cb->rc[cb->q] = rc;
    snprintf(cb->err[cb->q], sizeof cb->err[cb->q], "%s", err_msg());
}

/* With pdl (conf cuda_pdl) every launch carries programmatic stream serialization. Every
 * kernel of rtc_kernels/ starts with zp_grid_dep() (common.cuh): it waits there until the grid
 * before it in the stream has completed and its writes are visible, then lets the next grid
 * launch. So a kernel's launch and block scheduling overlap the previous kernel's last blocks,
 * and nothing it reads or writes does. cuBLASLt's kernels are launched without the attribute,
 * so they start after ours complete; after one of them, our kernel's wait returns once it has
 * completed, whatever it does about dependent launch. Without pdl: cuLaunchKernel, plain order. */
static void launch_smem(cuda_be *cb, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                        unsigned block, unsigned smem, void **args, const char *what) {
    if (!gx || !gy || !gz) return; /* an empty step launches nothing */
    if (!cb->pdl) {
        keep(cb, cuda_err(&cb->drv,
                          cb->drv.LaunchKernel(f, gx, gy, gz, block, 1, 1, smem, cur(cb), args,
                                               NULL),
                          what));
        return;
    }
    CUlaunchAttribute at = {.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION};
    at.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig lc = {.gridDimX = gx, .gridDimY = gy, .gridDimZ = gz, .blockDimX = block,
                         .blockDimY = 1, .blockDimZ = 1, .sharedMemBytes = smem,
                         .hStream = cur(cb), .attrs = &at, .numAttrs = 1};
    keep(cb, cuda_err(&cb->drv, cb->drv.LaunchKernelEx(&lc, f, args, NULL), what));
}

static void launch(cuda_be *cb, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned block,
                   void **args, const char *what) {
    launch_smem(cb, f, gx, gy, gz, block, 0, args, what);
}

/* ---- memory ---- */

static int cb_mem_info(backend *be, size_t *free_bytes, size_t *total_bytes) {
    cuda_be *cb = be->impl;
    return cuda_err(&cb->drv, cb->drv.MemGetInfo(free_bytes, total_bytes), "cuMemGetInfo");
}

static int cb_alloc(backend *be, size_t bytes, size_t align, be_ptr *out, const char *what) {
    cuda_be *cb = be->impl;
    size_t start = (cb->used + align - 1) & ~(align - 1);
    if (!cb->mem || start > cb->size || bytes > cb->size - start)
        return err_set(ZP_ENOMEM,
                       "cuda backend: no room for %zu bytes of '%s' (%zu of %zu MiB "
                       "used)",
                       bytes, what, cb->used >> 20, cb->size >> 20);
    cb->used = start + bytes;
    *out = (be_ptr)(cb->mem + start);
    return 0;
}

static int cb_alloc_host(backend *be, size_t bytes, void **out, const char *what) {
    cuda_be *cb = be->impl;
    size_t take = al(bytes);
    if (!cb->host || take > cb->host_size - cb->host_used)
        return err_set(ZP_ENOMEM,
                       "cuda backend: no pinned host staging left for %zu bytes of '%s' (%zu of "
                       "%zu bytes used)",
                       bytes, what, cb->host_used, cb->host_size);
    *out = (char *)cb->host + cb->host_used;
    cb->host_used += take;
    return 0;
}

static int cb_reserve(backend *be, size_t bytes, size_t host_bytes) {
    cuda_be *cb = be->impl;
    if (cb->mem) return err_set(ZP_ESTATE, "cuda backend: memory already reserved");
    size_t total = bytes + be->scratch_bytes;
    CUresult r = cb->drv.MemAlloc(&cb->mem, total);
    if (r != CUDA_SUCCESS) {
        size_t fr = 0, tot = 0;
        cb->drv.MemGetInfo(&fr, &tot);
        cuda_err(&cb->drv, r, "cuMemAlloc");
        char why[256];
        snprintf(why, sizeof why, "%s", err_msg());
        return err_set(ZP_ENOMEM,
                       "cuda backend: cannot take %.2f GiB of device memory (%.2f GiB "
                       "free of %.2f): %s; lower kv_memory_mb, num_kv_blocks, "
                       "max_num_batched_tokens or gpu_memory_utilization",
                       total / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0, why);
    }
    cb->size = total;
    cb->used = 0;
    be_ptr p = 0;
    size_t D = (size_t)cb->s.head_dim, rows = cb->part_cap * (size_t)cb->s.heads;
    int rc;
    if ((rc = cb_alloc(be, cb->ws_bytes, CB_ALIGN, &p, "cuBLASLt workspace"))) return rc;
    cb->ws = p;
    size_t part = al(rows * D * 4);
    if ((rc = cb_alloc(be,
                       part > cb->tune_x + cb->tune.y_bytes ? part : cb->tune_x + cb->tune.y_bytes,
                       CB_ALIGN, &p, "attention partials")))
        return rc;
    cb->part_o = p;
    cb->tune.x = p, cb->tune.y = p + cb->tune_x, cb->tune.ws = cb->ws;
    if ((rc = cb_alloc(be, al(rows * 8), CB_ALIGN, &p, "attention partials"))) return rc;
    cb->part_ml = p;
    size_t words = zp_sample_seat_words(cb->s.vocab), seats = (size_t)be->sample_seats;
    if ((rc = cb_alloc(be, al(seats * words * 8), CB_ALIGN, &p, "sampling seats"))) return rc;
    cb->seen = p;
    if ((rc = cb_alloc(be, al(seats * words * 64 * 2), CB_ALIGN, &p, "sampling seats"))) return rc;
    cb->seat_counts = p;
    if (!host_bytes) return 0;
    if ((rc = cuda_err(&cb->drv, cb->drv.MemAllocHost(&cb->host, host_bytes), "cuMemAllocHost")))
        return err_prefix(rc, "cuda backend: cannot pin %.1f MiB of host staging",
                          host_bytes / 1048576.0);
    cb->host_size = host_bytes;
    return 0;
}

static size_t cb_weight_bytes(backend *be, zp_dtype t, size_t n) {
    return 2 * n;
}

/* Converts n elements of type t at host to bf16 at dst, through the pinned staging buffer. */
static int put_bf16(cuda_be *cb, CUdeviceptr dst, const void *host, zp_dtype t, size_t n) {
    size_t per = CB_STAGING / 2;
    uint16_t *st = cb->staging;
    for (size_t i = 0; i < n; i += per) {
        size_t m = n - i < per ? n - i : per;
        if (t == ZP_BF16)
            memcpy(st, (const uint16_t *)host + i, m * 2);
        else
            for (size_t j = 0; j < m; j++)
                st[j] = zp_f32_to_bf16(zp_load(host, t, i + j));
        int rc = cuda_err(&cb->drv, cb->drv.MemcpyHtoDAsync(dst + i * 2, st, m * 2, cur(cb)),
                          "cuMemcpyHtoDAsync (weights)");
        if (!rc) rc = cuda_err(&cb->drv, cb->drv.StreamSynchronize(cur(cb)), "weights upload");
        if (rc) return rc;
    }
    return 0;
}

/* rows host rows of k elements, ld apart (0: k, packed), packed into dst as bf16: a tensor-parallel
 * rank's column slice of a row-parallel weight (be_part.ld) is gathered here, on the host, a
 * staging-full of rows per copy. */
static int put_bf16_rows(cuda_be *cb, CUdeviceptr dst, const void *host, zp_dtype t, size_t rows,
                         size_t k, size_t ld) {
    if (!ld || ld == k) return put_bf16(cb, dst, host, t, rows * k);
    size_t per = CB_STAGING / 2 / k, es = zp_dtype_size(t);
    if (!per)
        return err_set(ZP_EINVAL,
                       "cuda backend: a weight row of %zu elements exceeds the %d MiB "
                       "upload staging",
                       k, CB_STAGING >> 20);
    uint16_t *st = cb->staging;
    for (size_t r = 0; r < rows; r += per) {
        size_t m = rows - r < per ? rows - r : per;
        for (size_t i = 0; i < m; i++) {
            const uint8_t *src = (const uint8_t *)host + (r + i) * ld * es;
            if (t == ZP_BF16)
                memcpy(st + i * k, src, k * 2);
            else
                for (size_t j = 0; j < k; j++)
                    st[i * k + j] = zp_f32_to_bf16(zp_load(src, t, j));
        }
        int rc =
            cuda_err(&cb->drv, cb->drv.MemcpyHtoDAsync(dst + r * k * 2, st, m * k * 2, cur(cb)),
                     "cuMemcpyHtoDAsync (weights)");
        if (!rc) rc = cuda_err(&cb->drv, cb->drv.StreamSynchronize(cur(cb)), "weights upload");
        if (rc) return rc;
    }
    return 0;
}

static int cb_map_weight(backend *be, const void *host, zp_dtype t, size_t n, be_ptr *out,
                         zp_dtype *out_t, const char *what) {
    cuda_be *cb = be->impl;
    int rc = cb_alloc(be, al(2 * n), CB_ALIGN, out, what);
    if (!rc) rc = put_bf16(cb, (CUdeviceptr)*out, host, t, n);
    *out_t = ZP_BF16;
    return rc;
}

static int cb_linear_init(backend *be, be_linear *l, const be_part *parts, int n_parts, int k,
                          int max_rows, zp_dtype out_t, const char *what) {
    cuda_be *cb = be->impl;
    if (n_parts < 1 || n_parts > BE_LINEAR_PARTS || cb->n_plans >= cb->cap_plans)
        return err_set(ZP_EINVAL, "cuda backend: linear '%s': %d parts (%d of %d plans used)", what,
                       n_parts, cb->n_plans, cb->cap_plans);
    memset(l, 0, sizeof *l);
    l->k = k, l->n_parts = 1, l->out_t = out_t, l->wt[0] = l->bt[0] = ZP_BF16;
    int n_out = 0, has_bias = 0, rc;
    for (int i = 0; i < n_parts; i++)
        n_out += parts[i].rows, has_bias |= parts[i].bias != NULL;
    l->n_out = l->rows[0] = n_out;
    if (parts[0].dev && n_parts == 1) {
        if (parts[0].wt != ZP_BF16 || parts[0].bias)
            return err_set(ZP_EINVAL,
                           "cuda backend: linear '%s': a placed weight must be bf16 "
                           "without bias",
                           what);
        l->w[0] = parts[0].dev;
    } else {
        if ((rc = cb_alloc(be, al((size_t)n_out * (size_t)k * 2), CB_ALIGN, &l->w[0], what)))
            return rc;
        size_t off = 0;
        for (int i = 0; i < n_parts; i++) {
            size_t n = (size_t)parts[i].rows * (size_t)k;
            if (!parts[i].w)
                return err_set(ZP_EINVAL, "cuda backend: linear '%s': part %d has no weight", what,
                               i);
            if ((rc = put_bf16_rows(cb, (CUdeviceptr)l->w[0] + off * 2, parts[i].w, parts[i].wt,
                                    (size_t)parts[i].rows, (size_t)k, (size_t)parts[i].ld)))
                return rc;
            off += n;
        }
    }
    if (has_bias) {
        if ((rc = cb_alloc(be, al((size_t)n_out * 2), CB_ALIGN, &l->bias[0], what))) return rc;
        size_t off = 0;
        for (int i = 0; i < n_parts; i++) {
            CUdeviceptr d = (CUdeviceptr)l->bias[0] + off * 2;
            if (parts[i].bias)
                rc = put_bf16(cb, d, parts[i].bias, parts[i].bt, (size_t)parts[i].rows);
            else
                rc = cuda_err(&cb->drv,
                              cb->drv.MemsetD8Async(d, 0, (size_t)parts[i].rows * 2, cur(cb)),
                              "cuMemsetD8Async (bias)");
            if (rc) return rc;
            off += (size_t)parts[i].rows;
        }
    }
    cublaslt_gemm *g = &cb->plans[cb->n_plans];
    rc = cublaslt_gemm_init(&cb->lt, g, n_out, k, max_rows, (CUdeviceptr)l->bias[0], cb->ws_bytes,
                            out_t == ZP_F32);
    if (!rc && cb->invariant) {
        /* layers of one shape share the tuned choice (measured once, on the first) */
        const cublaslt_gemm *same = NULL;
        for (int i = 0; i < cb->n_plans && !same; i++) {
            const cublaslt_gemm *p = &cb->plans[i];
            if (p->n == g->n && p->k == g->k && p->max_m == g->max_m &&
                p->has_bias == g->has_bias && p->out_f32 == g->out_f32)
                same = p;
        }
        if (same) {
            g->workspace_needed = same->workspace_needed, g->split_k_max = same->split_k_max;
            g->invariant = 1;
            memcpy(g->algo, same->algo, sizeof g->algo);
        } else {
            rc = gemmtune_plan(&cb->tune, g, (CUdeviceptr)l->w[0]);
        }
        if (rc) cublaslt_gemm_destroy(&cb->lt, g);
    }
    if (rc) return err_prefix(rc, "linear '%s'", what);
    l->plan = cb->n_plans++;
    return 0;
}

static int cb_upload(backend *be, be_ptr dst, const void *src, size_t bytes) {
    cuda_be *cb = be->impl;
    if (!bytes) return 0;
    return cuda_err(&cb->drv, cb->drv.MemcpyHtoDAsync((CUdeviceptr)dst, src, bytes, cur(cb)),
                    "cuMemcpyHtoDAsync");
}

/* Queued: the bytes are in dst after the next sync (into pageable memory the driver itself
 * returns only when they are). */
static int cb_download(backend *be, void *dst, be_ptr src, size_t bytes) {
    cuda_be *cb = be->impl;
    if (!bytes) return 0;
    return cuda_err(&cb->drv, cb->drv.MemcpyDtoHAsync(dst, (CUdeviceptr)src, bytes, cur(cb)),
                    "cuMemcpyDtoHAsync");
}

static int cb_copy(backend *be, be_ptr dst, be_ptr src, size_t bytes) {
    cuda_be *cb = be->impl;
    if (!bytes) return 0;
    return cuda_err(&cb->drv, cb->drv.MemcpyDtoDAsync((CUdeviceptr)dst, (CUdeviceptr)src, bytes,
                                                      cur(cb)),
                    "cuMemcpyDtoDAsync");
}

static int cb_bind_thread(backend *be) {
    cuda_be *cb = be->impl;
    return cuda_err(&cb->drv, cb->drv.CtxSetCurrent(cb->dev.ctx), "cuCtxSetCurrent (bind_thread)");
}

/* Waits for queue q; returns its stream's error or the first failed op queued on it. */
static int cb_sync_queue(backend *be, int q) {
    cuda_be *cb = be->impl;
    int rc = be_check_queue(be, q);
    if (rc) return rc;
    rc = cuda_err(&cb->drv, cb->drv.StreamSynchronize(stream_of(cb, q)),
                  q == BE_Q_COMPUTE ? "GPU step" : "GPU compression queue");
    if (cb->rc[q]) {
        rc = err_set(cb->rc[q], "%s", cb->err[q]);
        cb->rc[q] = 0;
    }
    return rc;
}

/* Both queues, compute first; a failed launch is reported before the queues' own errors. */
static int cb_sync(backend *be) {
    int rc = cb_sync_queue(be, BE_Q_COMPUTE), rc2 = cb_sync_queue(be, BE_Q_COMPRESS);
    return rc ? rc : rc2;
}

/* ---- queues and events ---- */

static int cb_use_queue(backend *be, int q) {
    cuda_be *cb = be->impl;
    int rc = be_check_queue(be, q);
    if (!rc) cb->q = q;
    return rc;
}

static int cb_event_record(backend *be, int ev, int q) {
    cuda_be *cb = be->impl;
    int rc = be_check_event(be, ev);
    if (!rc) rc = be_check_queue(be, q);
    if (!rc)
        rc = cuda_err(&cb->drv, cb->drv.EventRecord(cb->ev[ev], stream_of(cb, q)), "cuEventRecord");
    if (!rc) cb->ev_set[ev] = 1;
    return rc;
}

static int cb_event_wait(backend *be, int q, int ev) {
    cuda_be *cb = be->impl;
    int rc = be_check_queue(be, q);
    if (!rc) rc = be_check_event(be, ev);
    if (rc) return rc;
    return cuda_err(&cb->drv, cb->drv.StreamWaitEvent(stream_of(cb, q), cb->ev[ev], 0),
                    "cuStreamWaitEvent");
}

static int cb_event_done(backend *be, int ev) {
    cuda_be *cb = be->impl;
    int rc = be_check_event(be, ev);
    if (rc) return rc;
    CUresult r = cb->drv.EventQuery(cb->ev[ev]);
    return r == CUDA_ERROR_NOT_READY ? 0
           : r == CUDA_SUCCESS       ? 1
                                     : cuda_err(&cb->drv, r, "cuEventQuery");
}

static int cb_event_sync(backend *be, int ev) {
    cuda_be *cb = be->impl;
    int rc = be_check_event(be, ev);
    return rc ? rc : cuda_err(&cb->drv, cb->drv.EventSynchronize(cb->ev[ev]), "cuEventSynchronize");
}

static int cb_event_elapsed(backend *be, int start, int end, float *ms) {
    cuda_be *cb = be->impl;
    int rc = be_check_event(be, start);
    if (!rc) rc = be_check_event(be, end);
    if (rc) return rc;
    if (!cb->ev_set[start] || !cb->ev_set[end])
        return err_set(ZP_ESTATE, "cuda backend: timer: event %d was never recorded",
                       cb->ev_set[start] ? end : start);
    return cuda_err(&cb->drv, cb->drv.EventElapsedTime(ms, cb->ev[start], cb->ev[end]),
                    "cuEventElapsedTime");
}

/* ---- CUDA graphs ---- */

static int cb_capture_begin(backend *be) {
    cuda_be *cb = be->impl;
    if (cb->q != BE_Q_COMPUTE)
        return err_set(ZP_ESTATE, "cuda backend: graphs are captured on the compute queue, but "
                                  "the compression queue is selected");
    cb->rc[BE_Q_COMPUTE] = 0;
    return cuda_err(
        &cb->drv, cb->drv.StreamBeginCapture(cb->dev.compute, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
        "cuStreamBeginCapture");
}

static int cb_capture_end(backend *be, int slot) {
    cuda_be *cb = be->impl;
    CUgraph g = NULL;
    int rc =
        cuda_err(&cb->drv, cb->drv.StreamEndCapture(cb->dev.compute, &g), "cuStreamEndCapture");
    if (!rc && cb->rc[BE_Q_COMPUTE]) /* a failed op */
        rc = err_set(cb->rc[BE_Q_COMPUTE], "capturing a CUDA graph: %s", cb->err[BE_Q_COMPUTE]);
    cb->rc[BE_Q_COMPUTE] = 0;
    if (!rc && (slot < 0 || slot >= CB_MAX_GRAPHS || cb->graphs[slot]))
        rc = err_set(ZP_EINVAL, "cuda backend: graph slot %d is taken or out of range", slot);
    if (!rc)
        rc = cuda_err(&cb->drv, cb->drv.GraphInstantiateWithFlags(&cb->graphs[slot], g, 0),
                      "cuGraphInstantiateWithFlags");
    if (g) cb->drv.GraphDestroy(g);
    return rc;
}

static int cb_graph_launch(backend *be, int slot) {
    cuda_be *cb = be->impl;
    if (slot < 0 || slot >= CB_MAX_GRAPHS || !cb->graphs[slot])
        return err_set(ZP_EINVAL, "cuda backend: no CUDA graph in slot %d", slot);
    return cuda_err(&cb->drv, cb->drv.GraphLaunch(cb->graphs[slot], cb->dev.compute),
                    "cuGraphLaunch");
}

static void cb_destroy(backend *be) {
    cuda_be *cb = be->impl;
    if (cb->dev.ctx) {
        cb->drv.StreamSynchronize(cb->dev.compute);
        cb->drv.StreamSynchronize(cb->dev.compress);
    }
    for (int i = 0; i < BE_EVENTS; i++)
        if (cb->ev[i]) cb->drv.EventDestroy(cb->ev[i]);
    for (int i = 0; i < CB_MAX_GRAPHS; i++)
        if (cb->graphs[i]) cb->drv.GraphExecDestroy(cb->graphs[i]);
    for (int i = 0; i < cb->n_plans; i++)
        cublaslt_gemm_destroy(&cb->lt, &cb->plans[i]);
    if (cb->lt.h) cublaslt_close(&cb->lt);
    if (cb->layer_mod) cb->drv.ModuleUnload(cb->layer_mod);
    if (cb->attn_mod) cb->drv.ModuleUnload(cb->attn_mod);
    if (cb->prefill_mod) cb->drv.ModuleUnload(cb->prefill_mod);
    if (cb->cscore_mod) cb->drv.ModuleUnload(cb->cscore_mod);
    if (cb->cselect_mod) cb->drv.ModuleUnload(cb->cselect_mod);
    if (cb->sample_mod) cb->drv.ModuleUnload(cb->sample_mod);
    if (cb->mem) cb->drv.MemFree(cb->mem);
    for (int i = 0; i < 2; i++)
        if (cb->tune.ev[i]) cb->drv.EventDestroy(cb->tune.ev[i]);
    if (cb->staging) cb->drv.MemFreeHost(cb->staging);
    if (cb->host) cb->drv.MemFreeHost(cb->host);
    cuda_dev_close(&cb->dev);
    if (cb->drv.so) cuda_drv_unload(&cb->drv);
    arena_release(&cb->a);
    munmap(cb, sizeof *cb);
}

/* ---- ops ---- */

#define CB(be) cuda_be *cb = (be)->impl
#define U(x)   ((unsigned)(x))

static void cb_embed_shard(backend *be, be_ptr resid, be_ptr table, zp_dtype wt, be_ptr ids, int n,
                           int dim, int v0, int v1) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&resid, &table, &ids, &cnt, &dim, &v0, &v1};
    launch(cb, cb->embed, U(n), 1, 1, 256, a, "zp_embed");
}

/* The whole vocabulary is the shard [0, INT32_MAX): every id is in range. */
static void cb_embed(backend *be, be_ptr resid, be_ptr table, zp_dtype wt, be_ptr ids, int n,
                     int dim) {
    cb_embed_shard(be, resid, table, wt, ids, n, dim, 0, INT32_MAX);
}

static void cb_add_rmsnorm(backend *be, be_ptr resid, be_ptr x, be_ptr out, be_ptr w, zp_dtype wt,
                           int rows, int dim, float eps) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&resid, &x, &out, &w, &cnt, &dim, &eps};
    launch(cb, cb->add_rmsnorm, U(rows), 1, 1, ZP_NORM_THREADS, a, "zp_add_rmsnorm");
}

static void cb_linear(backend *be, be_ptr out, be_ptr x, const be_linear *l, int n) {
    CB(be);
    keep(cb, cublaslt_gemm_run(&cb->lt, &cb->plans[l->plan], (CUdeviceptr)out, (CUdeviceptr)x,
                               (CUdeviceptr)l->w[0], n, cb->ws, cb->ws_bytes, cur(cb)));
}

static void cb_qkv_rope_store(backend *be, be_ptr q_out, be_ptr qkv, be_ptr qn, be_ptr kn,
                              zp_dtype nt, float eps, be_ptr positions, be_ptr inv_freq,
                              be_ptr slots, be_ptr kc, be_ptr vc, zp_dtype kvt, int n, int hq,
                              int hkv, int dim, int bs) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&qkv, &qn,  &kn,  &positions, &inv_freq, &slots, &cnt,
                 &hq,  &hkv, &eps, &q_out,     &kc,       &vc};
    launch(cb, cb->qkv, U(n), layer_rope_blocks(hq + hkv), 1, 32 * ZP_ROPE_HEADS, a,
           "zp_qkv_rope_store");
}

/* Every row's KV range is split into chunks of attention_chunk positions, whatever the batch,
 * so a row's result depends on its own length only (batch invariance); the grid covers the
 * step's longest row, and splits past a shorter row's length are empty. Prompt rows (q-tiles)
 * are split the same way in chunks of attention_prefill_chunk. */
static void cb_attention(backend *be, be_ptr out, be_ptr q, be_ptr kc, be_ptr vc, zp_dtype kvt,
                         const be_batch *b, int hq, int hkv, int dim, int bs, float scale) {
    CB(be);
    int n = b->n_tokens, L = b->max_kv_len > 0 ? b->max_kv_len : 1, chunk = cb->chunk;
    int n_split = (L + chunk - 1) / chunk;
    if ((size_t)n * (size_t)n_split > cb->part_cap) {
        keep(cb, err_set(ZP_ELIMIT,
                         "cuda backend: attention over %d rows of up to %d positions "
                         "exceeds the partials planned for max_model_len %d",
                         n, L, cb->s.max_model_len));
        return;
    }
    be_ptr cnt = be->counts, seq = b->tok_seq, idx = b->tok_kv_idx, bt = b->block_tables;
    be_ptr po = cb->part_o, pml = cb->part_ml;
    be_ptr qt = b->qtile, nqt = be->counts + 16; /* counts[4]: n_qtiles */
    be_ptr rows = b->n_qtiles ? b->dec_rows : 0; /* the rows no q-tile covers, or every row */
    int n_dec = b->n_qtiles ? b->n_dec_rows : n;
    int mb = b->max_blocks;
    /* decode rows (and any row no q-tile covers) here, prompt rows in the tensor-core kernel;
     * both write the same partials, one merge finishes every row. The decode kernel's grid
     * (a CTA per split, kv head and row) takes only its rows: none for a prompt alone. */
    void *pa[] = {&q,  &kc,  &vc,    &seq,   &idx,     &bt, &cnt, &rows,
                  &mb, &hkv, &scale, &chunk, &n_split, &po, &pml};
    if (cb->attention_mma)
        launch_smem(cb, cb->attn_decode_mma, U(n_split), U(hkv), U(n_dec), 128,
                    cb->attn_mma_smem, pa, "zp_attn_decode_mma");
    else
        launch(cb, cb->attn_partial, U(n_split), U(hkv), U(n_dec), 128, pa, "zp_attn_partial");
    /* prompt rows in splits of pchunk >= chunk (fewer f32 partials written and merged per
     * row; q-tiles x kv heads give the parallelism): a grid of their splits only; the
     * partials keep the decode rows' stride n_split, and the kernel marks a prompt row's
     * splits past its grid (gridDim.x .. n_split - 1) empty */
    int pchunk = cb->pchunk;
    void *pp[] = {&q,  &kc,  &vc,     &seq,   &idx,     &bt, &qt, &nqt,
                  &mb, &hkv, &scale, &pchunk, &n_split, &po, &pml};
    launch_smem(cb, cb->attn_prefill, U(attn_prefill_splits(L, pchunk)), U(hkv),
                U(b->n_qtiles), 128, (unsigned)cb->prefill.smem, pp, cb->prefill.fn);
    void *ma[] = {&po, &pml, &cnt, &hq, &n_split, &out};
    launch(cb, cb->attn_merge, attn_merge_blocks(hq), U(n), 1, 32 * ZP_MERGE_HEADS, ma,
           "zp_attn_merge");
}

static void cb_swiglu(backend *be, be_ptr out, be_ptr gu, int n, int inter) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&out, &gu, &cnt, &inter};
    launch(cb, cb->swiglu, U(n), layer_silu_blocks(inter), 1, ZP_SILU_THREADS, a, "zp_silu_mul");
}

static void cb_gather_rows(backend *be, be_ptr out, be_ptr x, be_ptr rows, int n, int dim) {
    CB(be);
    be_ptr cnt = be->counts + 4; /* n_logits */
    void *a[] = {&out, &x, &rows, &cnt, &dim};
    launch(cb, cb->gather, U(n), 1, 1, 256, a, "zp_gather_rows");
}

static void cb_argmax(backend *be, be_ptr ids, be_ptr logits, int n, int n_valid, int stride) {
    CB(be);
    be_ptr cnt = be->counts + 4; /* n_logits */
    void *a[] = {&ids, &logits, &cnt, &n_valid, &stride};
    launch(cb, cb->argmax, U(n), 1, 1, 1024, a, "zp_argmax");
}

static void cb_seat_init(backend *be, be_ptr jobs, be_ptr hist, int n_jobs, int stride) {
    CB(be);
    be_ptr cnt = be->counts + 12; /* n_seat_jobs */
    void *a[] = {&cb->seen, &cb->seat_counts, &jobs, &hist, &cnt, &stride};
    launch(cb, cb->seat_init, U(n_jobs), 1, 1, ZP_SAMPLE_THREADS, a, "zp_sample_seat_init");
}

static void cb_sample(backend *be, be_ptr ids, be_ptr logprobs, be_ptr logits, be_ptr params, int n,
                      int n_valid, int stride) {
    CB(be);
    be_ptr cnt = be->counts + 4; /* n_logits */
    void *a[] = {&ids,    &logprobs, &logits,   &params,         &cnt,
                 &stride, &n_valid,  &cb->seen, &cb->seat_counts};
    launch(cb, cb->sample, U(n), 1, 1, ZP_SAMPLE_THREADS, a, "zp_sample");
}

/* ---- compression (rtc_kernels/compress_score.cu, compress_select.cu) ----
 * One launch per op covers the call's layers (grid z); the kernels read each layer's cache
 * base from the caller's layer tables and its scratch slab at layer_stride per z. */

/* Elements between the per-layer slabs of a scratch buffer whose rows are `row` long. */
static long long slab(const be_cjobs *j, const be_cparams *p, int row) {
    return (long long)j->max_jobs * p->hkv * row;
}

static void cb_qcache_store(backend *be, be_ptr qc, be_ptr q, const be_batch *b, be_ptr tok_qslot,
                            int layer, const be_cparams *p) {
    CB(be);
    be_ptr cnt = be->counts, idx = b->tok_kv_idx, seq = b->tok_seq;
    int layers = p->layers, qcl = p->qcl, hq = p->hq;
    void *a[] = {&qc, &q, &tok_qslot, &idx, &seq, &cnt, &layers, &layer, &qcl, &hq};
    launch(cb, cb->qcache_store, U(b->n_tokens), 1, 1, ZP_QC_THREADS, a, "zp_qcache_store");
}

static void cb_cmp_score(backend *be, be_ptr scores, be_ptr qc, be_ptr kc, be_ptr cc, zp_dtype kvt,
                         const be_cjobs *j, int layer0, int n_layers, const be_cparams *p) {
    CB(be);
    long long stride = slab(j, p, j->max_pos);
    int layers = p->layers, hkv = p->hkv, qcl = p->qcl, mn = p->max_norm, pool = p->pool;
    int mb = j->max_blocks, mp = j->max_pos;
    float scale = p->scale, gamma = p->gamma;
    be_ptr nb = j->n_blocks, kl = j->kv_len, qs = j->qslot, fl = j->flags, src = j->src;
    void *a[] = {&scores, &stride, &qc,   &kc, &cc, &layer0, &layers, &hkv, &qcl, &scale,
                 &mn,     &gamma,  &pool, &nb, &kl, &qs,     &fl,     &src, &mb,  &mp};
    launch_smem(cb, cb->cmp_score, U(hkv), U(j->n_jobs), U(n_layers), ZP_CS_THREADS,
                (unsigned)zp_cs_smem_bytes(cb->s.head_dim, qcl, cb->s.heads / cb->s.kv_heads), a,
                "zp_cmp_score");
}

static void cb_cmp_redundancy(backend *be, be_ptr scores, be_ptr kc, zp_dtype kvt, be_ptr work,
                              const be_cjobs *j, int layer0, int n_layers, const be_cparams *p) {
    CB(be);
    long long stride = slab(j, p, j->max_pos), wstride = 2 * stride;
    int mb = j->max_blocks, mp = j->max_pos, hkv = p->hkv, mode = p->redundancy;
    float lambda = p->lambda, temp = p->temperature, thr = p->threshold;
    be_ptr n = j->count, kl = j->kv_len, src = j->src;
    void *a[] = {&scores, &stride, &work, &wstride, &kc,   &layer0, &n,    &kl,
                 &src,    &mb,     &mp,   &hkv,     &mode, &lambda, &temp, &thr};
    launch(cb, cb->cmp_redundancy, U(hkv), U(j->n_jobs), U(n_layers), ZP_CS_THREADS, a,
           "zp_cmp_redundancy");
}

static void cb_cmp_select(backend *be, be_ptr keep_rows, be_ptr scores, be_ptr work,
                          const be_cjobs *j, int n_layers, const be_cparams *p) {
    CB(be);
    long long kstride = slab(j, p, j->max_keep), stride = slab(j, p, j->max_pos);
    int mp = j->max_pos, mk = j->max_keep, hkv = p->hkv, qcl = p->qcl, sink = p->sink_len;
    int recent = p->recent;
    be_ptr n = j->count, nb = j->n_blocks, kl = j->kv_len, nk = j->n_keep, pr = j->protect;
    void *a[] = {&keep_rows, &kstride, &scores, &stride, &n,   &nb,  &kl,    &nk,
                 &pr,        &mp,      &mk,     &hkv,    &qcl, &sink, &recent};
    launch(cb, cb->cmp_select, U(hkv), U(j->n_jobs), U(n_layers), ZP_CS_THREADS, a,
           "zp_cmp_select");
}

static void cb_cmp_compact(backend *be, be_ptr kc, be_ptr vc, be_ptr cc, zp_dtype kvt,
                           be_ptr keep_rows, const be_cjobs *j, int layer0, int n_layers,
                           const be_cparams *p) {
    CB(be);
    long long stride = slab(j, p, j->max_keep);
    int mb = j->max_blocks, mk = j->max_keep, hkv = p->hkv;
    be_ptr n = j->count, nk = j->n_keep, src = j->src, dst = j->dst;
    void *a[] = {&kc, &vc, &cc, &layer0, &keep_rows, &stride, &n, &nk, &src, &dst, &mb, &mk, &hkv};
    launch(cb, cb->cmp_compact, U(hkv), U(j->n_jobs), U(n_layers), ZP_CS_THREADS, a,
           "zp_cmp_compact");
}

/* What the kernels support (the model's shape was checked at creation: head dim 64 / 128,
 * GQA 1-8, block size 16-256, bf16 KV). */
static int cb_check(backend *be, const be_cparams *p) {
    cuda_be *cb = be->impl;
    if (p->qcl <= 0) return 0;
    if (p->dim != cb->s.head_dim || p->bs != cb->s.block_size || p->hq != cb->s.heads ||
        p->hkv != cb->s.kv_heads)
        return err_set(ZP_EINVAL, "cuda backend: compression parameters do not match the model");
    if (p->policy != BE_EVICT_SCORE)
        return err_set(ZP_EUNSUP,
                       "key 'eviction': the GPU compresses by score only; the streaming and "
                       "random baselines run on the cpu backend (set eviction=score or "
                       "backend=cpu)");
    if (p->pool > 1 && p->pool % 2 == 0)
        return err_set(ZP_EUNSUP, "key 'pooling_size': %d is even; the GPU pools odd widths",
                       p->pool);
    return 0;
}

/* ---- creation ---- */

static int load_module(cuda_be *cb, const char *file, int gqa, const char *cache, CUmodule *m) {
    nvrtc_consts k = {cb->s.head_dim, cb->s.block_size, gqa};
    return cuda_module_build(&cb->dev, &cb->nv, &cb->a, file, &k, cache, m);
}

static int get_fn(cuda_be *cb, CUmodule m, const char *name, CUfunction *f) {
    return cuda_err(&cb->drv, cb->drv.ModuleGetFunction(f, m, name), name);
}

/* The GEMM tuner's context (batch_invariant): its random rows and outputs borrow the attention
 * partials before the first step, so the partials are sized for the largest plan of the shape. */
static int tune_setup(cuda_be *cb, const be_shape *s, const char *cache) {
    gemmtune_ctx *t = &cb->tune;
    size_t qkv = (size_t)(s->heads + 2 * s->kv_heads) * (size_t)s->head_dim;
    int k = s->hidden;
    if (s->heads * s->head_dim > k) k = s->heads * s->head_dim;
    if (s->intermediate > k) k = s->intermediate;
    size_t n = qkv > (size_t)s->hidden ? qkv : (size_t)s->hidden;
    if ((size_t)2 * (size_t)s->intermediate > n) n = (size_t)2 * (size_t)s->intermediate;
    size_t y = gemmtune_y_bytes((int)n, s->max_tokens, 0),
           yl = gemmtune_y_bytes(s->vocab, s->max_logits, 1);
    t->drv = &cb->drv, t->lt = &cb->lt, t->stream = cb->dev.compute;
    t->x_bytes = gemmtune_x_bytes(k, s->max_tokens);
    t->y_bytes = al(y > yl ? y : yl);
    cb->tune_x = al(t->x_bytes);
    t->ws_bytes = cb->ws_bytes;
    t->host = cb->staging, t->host_bytes = CB_STAGING;
    t->cache_dir = cache;
    snprintf(t->device, sizeof t->device, "%s sm_%d cuBLASLt %zu", cb->dev.name, cb->dev.arch,
             cb->lt.version);
    for (int i = 0; i < 2; i++) {
        int rc = cuda_err(&cb->drv, cb->drv.EventCreate(&t->ev[i], 0), "cuEventCreate");
        if (rc) return rc;
    }
    return 0;
}

static int setup(cuda_be *cb, const be_config *c, const be_shape *s) {
    int rc;
    if (s->head_dim != 64 && s->head_dim != 128)
        return err_set(ZP_EUNSUP, "cuda backend: head_dim %d is not supported (64 or 128)",
                       s->head_dim);
    int gqa = s->heads / s->kv_heads;
    if (s->heads % s->kv_heads || gqa < 1 || gqa > 8 || (gqa & (gqa - 1)))
        return err_set(ZP_EUNSUP,
                       "cuda backend: %d query heads per kv head is not supported (1, "
                       "2, 4 or 8)",
                       gqa);
    if (cb->pchunk < cb->chunk)
        return err_set(ZP_EINVAL,
                       "key 'attention_prefill_chunk': %d is below attention_chunk %d (the step's "
                       "splits, sized for decode rows, must cover the prompt rows' splits)",
                       cb->pchunk, cb->chunk);
    if (!layer_widths_ok(s->hidden, s->intermediate))
        return err_set(
            ZP_EUNSUP,
            "cuda backend: hidden size %d / intermediate size %d not supported (hidden a "
            "multiple of 4 up to %d, intermediate a multiple of 8)",
            s->hidden, s->intermediate, ZP_NORM_MAX_DIM);
    if (s->block_size < 16 || s->block_size > 256 || (s->block_size & (s->block_size - 1)))
        return err_set(ZP_EUNSUP,
                       "key 'block_size': %d is not supported on the GPU (16, 32, 64, "
                       "128 or 256)",
                       s->block_size);
    if ((rc = cuda_drv_load(&cb->drv, c->cuda_driver_path ? c->cuda_driver_path : "")) ||
        (rc = cuda_dev_open(&cb->dev, &cb->drv, c->cuda_device)))
        return rc;
    /* griddepcontrol is sm_90's; graphs capture the programmatic edges from CUDA 12.3 on */
    cb->pdl = cb->pdl && cb->dev.arch >= 90 && cb->drv.driver_version >= 12030;
    if ((rc = nvrtc_load(&cb->nv, c->nvrtc_path ? c->nvrtc_path : "")) ||
        (rc = nvrtc_check_arch(&cb->nv, cb->dev.arch)) ||
        (rc = cublaslt_load(&cb->lt, c->cublaslt_path ? c->cublaslt_path : "")))
        return rc;
    if ((rc = arena_init(&cb->a, "cuda backend", 256u << 20))) return rc;
    const char *kc = c->kernel_cache_dir ? c->kernel_cache_dir : "";
    if (!strcmp(kc, "off"))
        cb->cache_dir[0] = 0;
    else if (*kc)
        snprintf(cb->cache_dir, sizeof cb->cache_dir, "%s", kc);
    else
        nvrtc_default_cache_dir(cb->cache_dir, sizeof cb->cache_dir);
    if ((rc = load_module(cb, "layer.cu", 1, cb->cache_dir, &cb->layer_mod)) ||
        (rc = load_module(cb, "attention.cu", gqa, cb->cache_dir, &cb->attn_mod)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_embed", &cb->embed)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_add_rmsnorm", &cb->add_rmsnorm)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_qkv_rope_store", &cb->qkv)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_silu_mul", &cb->swiglu)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_gather_rows", &cb->gather)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_argmax", &cb->argmax)) ||
        (rc = get_fn(cb, cb->attn_mod, "zp_attn_partial", &cb->attn_partial)) ||
        (rc = get_fn(cb, cb->attn_mod, "zp_attn_merge", &cb->attn_merge)) ||
        (rc = get_fn(cb, cb->attn_mod, "zp_attn_decode_mma", &cb->attn_decode_mma)) ||
        (rc = attn_prefill_pick(cb->dev.arch, cb->prefill_choice, &cb->prefill)) ||
        (rc = load_module(cb, cb->prefill.file, gqa, cb->cache_dir, &cb->prefill_mod)) ||
        (rc = get_fn(cb, cb->prefill_mod, cb->prefill.fn, &cb->attn_prefill)) ||
        (rc = load_module(cb, "sample.cu", 1, cb->cache_dir, &cb->sample_mod)) ||
        (rc = get_fn(cb, cb->sample_mod, "zp_sample", &cb->sample)) ||
        (rc = get_fn(cb, cb->sample_mod, "zp_sample_seat_init", &cb->seat_init)) ||
        (rc = load_module(cb, "compress_score.cu", gqa, cb->cache_dir, &cb->cscore_mod)) ||
        (rc = get_fn(cb, cb->cscore_mod, "zp_qcache_store", &cb->qcache_store)) ||
        (rc = get_fn(cb, cb->cscore_mod, "zp_cmp_score", &cb->cmp_score)) ||
        (rc = load_module(cb, "compress_select.cu", 1, cb->cache_dir, &cb->cselect_mod)) ||
        (rc = get_fn(cb, cb->cselect_mod, "zp_cmp_redundancy", &cb->cmp_redundancy)) ||
        (rc = get_fn(cb, cb->cselect_mod, "zp_cmp_select", &cb->cmp_select)) ||
        (rc = get_fn(cb, cb->cselect_mod, "zp_cmp_compact", &cb->cmp_compact)))
        return rc;
    if ((rc = cuda_err(&cb->drv,
                       cb->drv.FuncSetAttribute(
                           cb->cmp_score, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                           (int)zp_cs_smem_bytes(s->head_dim, ZP_CS_MAX_ROWS, 1)),
                       "cuFuncSetAttribute (zp_cmp_score shared memory)")))
        return rc;
    if ((rc = cuda_err(&cb->drv,
                       cb->drv.FuncSetAttribute(cb->attn_prefill,
                                                CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                cb->prefill.smem),
                       "cuFuncSetAttribute (prefill attention shared memory)")))
        return rc;
    cb->attn_mma_smem = (unsigned)attn_mma_smem_bytes(s->head_dim, attn_mma_stages(s->head_dim));
    if (cb->attention_mma &&
        (rc = cuda_err(&cb->drv,
                       cb->drv.FuncSetAttribute(cb->attn_decode_mma,
                                                CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                (int)cb->attn_mma_smem),
                       "cuFuncSetAttribute (zp_attn_decode_mma shared memory)")))
        return rc;
    if ((rc = cuda_err(&cb->drv, cb->drv.MemAllocHost(&cb->staging, CB_STAGING), "cuMemAllocHost")))
        return rc;
    for (int i = 0; i < BE_EVENTS; i++) /* timing enabled: event_elapsed reads them */
        if ((rc = cuda_err(&cb->drv, cb->drv.EventCreate(&cb->ev[i], CU_EVENT_DEFAULT),
                           "cuEventCreate")))
            return rc;
    if (cb->invariant && (rc = tune_setup(cb, s, cb->cache_dir))) return rc;
    cb->cap_plans = 4 * s->layers + 1;
    cb->plans = arena_alloc(&cb->a, sizeof *cb->plans * (size_t)cb->cap_plans, 64, "GEMM plans");
    if (!cb->plans) return ZP_ENOMEM;
    /* the worst step: max_tokens rows, each split into max_model_len / chunk partials */
    cb->part_cap = (size_t)s->max_tokens * (size_t)((s->max_model_len + cb->chunk - 1) / cb->chunk);
    cb->be.sample_seats = s->max_logits;
    size_t words = zp_sample_seat_words(s->vocab);
    size_t part = al(cb->part_cap * (size_t)s->heads * (size_t)s->head_dim * 4);
    if (cb->tune_x + cb->tune.y_bytes > part) part = cb->tune_x + cb->tune.y_bytes;
    cb->be.scratch_bytes = cb->ws_bytes + part + al(cb->part_cap * (size_t)s->heads * 8) +
                           al((size_t)s->max_logits * words * 8) +
                           al((size_t)s->max_logits * words * 64 * 2) + 5 * CB_ALIGN;
    snprintf(cb->desc, sizeof cb->desc,
             "%s (sm_%d, %d SMs), driver CUDA %d.%d, NVRTC %d.%d, "
             "cuBLASLt %zu%s, prompt attention %s",
             cb->dev.name, cb->dev.arch, cb->dev.n_sm, cb->drv.driver_version / 1000,
             cb->drv.driver_version % 1000 / 10, cb->nv.major, cb->nv.minor, cb->lt.version,
             cb->pdl ? ", programmatic dependent launch" : "",
             cb->prefill.smem == ATTN_PREFILL_WG_SMEM ? "wgmma" : "mma.sync");
    return 0;
}

static void cb_describe_plans(backend *be, char *buf, size_t cap) {
    cuda_be *cb = be->impl;
    const gemmtune_ctx *t = &cb->tune;
    if (!cb->invariant)
        snprintf(buf, cap,
                 "GEMMs: cuBLASLt's heuristic per batch-size bucket (not batch invariant)");
    else
        snprintf(buf, cap,
                 "GEMMs: batch invariant, %d shapes measured and %d from the cache (%s); "
                 "time over the best algorithm per batch size: %.1f%% more on average for the "
                 "worst shape, %.1f%% more at the worst size",
                 t->tuned, t->cached, *t->cache_dir ? t->cache_dir : "no cache",
                 100.0 * (t->worst_cost - 1), 100.0 * (t->worst_bucket - 1));
}

int cuda_backend_create(backend **out, const be_config *c, const be_shape *s) {
    /* The instance lives in its own mapping (zeroed): backends are made at start-up only. */
    cuda_be *cb =
        mmap(NULL, sizeof *cb, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (cb == MAP_FAILED) return err_set(ZP_ENOMEM, "cuda backend: %s", strerror(errno));
    cb->s = *s;
    cb->invariant = c->batch_invariant;
    cb->chunk = c->attention_chunk > 0 ? c->attention_chunk : 512;
    cb->pchunk = c->attention_prefill_chunk > 0 ? c->attention_prefill_chunk : 4096;
    cb->attention_mma = c->attention_mma;
    cb->prefill_choice = c->attention_prefill;
    cb->pdl = c->pdl;
    cb->ws_bytes = (size_t)(c->gemm_workspace_mb > 0 ? c->gemm_workspace_mb : 256) << 20;
    cb->be = (backend){
        .name = "cuda",
        .impl = cb,
        .act_dtype = ZP_BF16,
        .device_memory = 1,
        .prefill_tiles = 1,
        .mem_info = cb_mem_info,
        .reserve = cb_reserve,
        .alloc = cb_alloc,
        .alloc_host = cb_alloc_host,
        .weight_bytes = cb_weight_bytes,
        .map_weight = cb_map_weight,
        .linear_init = cb_linear_init,
        .upload = cb_upload,
        .download = cb_download,
        .copy = cb_copy,
        .sync = cb_sync,
        .sync_queue = cb_sync_queue,
        .bind_thread = cb_bind_thread,
        .destroy = cb_destroy,
        .use_queue = cb_use_queue,
        .event_record = cb_event_record,
        .event_wait = cb_event_wait,
        .event_done = cb_event_done,
        .event_sync = cb_event_sync,
        .event_elapsed = cb_event_elapsed,
        .embed = cb_embed,
        .embed_shard = cb_embed_shard,
        .add_rmsnorm = cb_add_rmsnorm,
        .linear = cb_linear,
        .qkv_rope_store = cb_qkv_rope_store,
        .attention = cb_attention,
        .swiglu = cb_swiglu,
        .gather_rows = cb_gather_rows,
        .argmax = cb_argmax,
        .seat_init = cb_seat_init,
        .sample = cb_sample,
        .check = cb_check,
        .qcache_store = cb_qcache_store,
        .cmp_score = cb_cmp_score,
        .cmp_redundancy = cb_cmp_redundancy,
        .cmp_select = cb_cmp_select,
        .cmp_compact = cb_cmp_compact,
        .max_graphs = CB_MAX_GRAPHS,
        .capture_begin = cb_capture_begin,
        .capture_end = cb_capture_end,
        .graph_launch = cb_graph_launch,
        .describe_plans = cb_describe_plans,
    };
    int rc = setup(cb, c, s);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err_msg());
        cb_destroy(&cb->be);
        return err_set(rc, "%s", msg);
    }
    *out = &cb->be;
    return 0;
}

const char *cuda_backend_describe(const backend *be) {
    return ((const cuda_be *)be->impl)->desc;
}

cuda_drv *cuda_backend_drv(backend *be) {
    return be && be->destroy == cb_destroy ? &((cuda_be *)be->impl)->drv : NULL;
}

int cuda_backend_view(backend *be, cuda_be_view *out) {
    cuda_drv *drv = cuda_backend_drv(be);
    if (!drv)
        return err_set(ZP_EINVAL, "backend %s: not the CUDA backend", be ? be->name : "(none)");
    const cuda_be *cb = be->impl;
    *out = (cuda_be_view){drv, cb->dev.ordinal, cb->dev.ctx, cb->dev.compute};
    return 0;
}
