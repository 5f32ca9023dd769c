/* cuda_be: the CUDA backend (../shared/spec/cuda-backend.md): the op table of drv/backend.h
 * as launches of rtc_kernels/ (NVRTC) and cuBLASLt GEMMs on the device's compute queue.
 *
 * Memory: one cuMemAlloc at reserve() of the planner's bytes plus this backend's own scratch
 * (scratch_bytes: the cuBLASLt workspace, the attention partials, the sampler's seats), carved
 * by alloc() and never freed until destroy(); one pinned staging buffer (cuMemAllocHost at
 * creation) through which weights go up, converted to bf16. Host side: the instance in its own
 * mapping, GEMM plans and NVRTC's temporaries in the backend's arena. Nothing is allocated after
 * start-up: plans, kernels, graphs and staging all exist before the first step.
 * Dtypes: activations, weights and the KV cache are bf16; the residual stream and the logits
 * f32; every kernel accumulates in f32.
 * Errors: ops are void and queued; the first failed launch is kept (code and message) and
 * returned by the next sync(), which also reports the queue's own errors.
 * Threading: the thread that created the backend (the engine's scheduler) owns the context
 * and calls every op.
 */
#include "drv/cuda_be.h"

#include "arena/arena.h"
#include "arena/err.h"
#include "drv/cublaslt.h"
#include "drv/cuda.h"
#include "drv/nvrtc.h"
#include "drv/sample_abi.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

enum {
    CB_STAGING = 64 << 20,   /* pinned staging for weight uploads */
    CB_WORKSPACE = 32 << 20, /* cuBLASLt workspace */
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
    int invariant, chunk;
    CUdeviceptr mem;
    size_t size, used;
    CUdeviceptr ws, part_o, part_ml;
    size_t part_cap; /* (token row, split) pairs the partials hold */
    void *staging;
    CUmodule layer_mod, attn_mod, sample_mod;
    CUfunction embed, add_rmsnorm, qkv, swiglu, gather, argmax, attn_partial, attn_merge;
    CUfunction sample, seat_init;
    CUdeviceptr seen, seat_counts; /* penalty state of the sample_seats seats */
    cublaslt_gemm *plans;
    int n_plans, cap_plans;
    CUgraphExec graphs[CB_MAX_GRAPHS];
    int rc; /* first failed launch since the last sync */
    char err[512];
    char desc[256];
} cuda_be;

static size_t al(size_t v) {
    return (v + CB_ALIGN - 1) & ~(size_t)(CB_ALIGN - 1);
}

/* Keeps the first failure of a queued op for the next sync(). */
static void keep(cuda_be *cb, int rc) {
    if (!rc || cb->rc) return;
    cb->rc = rc;
    snprintf(cb->err, sizeof cb->err, "%s", err_msg());
}

static void launch(cuda_be *cb, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned block,
                   void **args, const char *what) {
    if (!gx || !gy || !gz) return; /* an empty step launches nothing */
    keep(cb,
         cuda_err(&cb->drv,
                  cb->drv.LaunchKernel(f, gx, gy, gz, block, 1, 1, 0, cb->dev.compute, args, NULL),
                  what));
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

static int cb_reserve(backend *be, size_t bytes) {
    cuda_be *cb = be->impl;
    if (cb->mem) return err_set(ZP_ESTATE, "cuda backend: memory already reserved");
    size_t total = bytes + be->scratch_bytes;
    CUresult r = cb->drv.MemAlloc(&cb->mem, total);
    if (r != CUDA_SUCCESS) {
        size_t fr = 0, tot = 0;
        cb->drv.MemGetInfo(&fr, &tot);
        cuda_err(&cb->drv, r, "cuMemAlloc");
        return err_set(ZP_ENOMEM,
                       "cuda backend: cannot take %.2f GiB of device memory (%.2f GiB "
                       "free of %.2f): %s; lower kv_memory_mb, num_kv_blocks, "
                       "max_num_batched_tokens or gpu_memory_utilization",
                       total / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0, err_msg());
    }
    cb->size = total;
    cb->used = 0;
    be_ptr p = 0;
    size_t D = (size_t)cb->s.head_dim, rows = cb->part_cap * (size_t)cb->s.heads;
    int rc;
    if ((rc = cb_alloc(be, CB_WORKSPACE, CB_ALIGN, &p, "cuBLASLt workspace"))) return rc;
    cb->ws = p;
    if ((rc = cb_alloc(be, al(rows * D * 4), CB_ALIGN, &p, "attention partials"))) return rc;
    cb->part_o = p;
    if ((rc = cb_alloc(be, al(rows * 8), CB_ALIGN, &p, "attention partials"))) return rc;
    cb->part_ml = p;
    size_t words = zp_sample_seat_words(cb->s.vocab), seats = (size_t)be->sample_seats;
    if ((rc = cb_alloc(be, al(seats * words * 8), CB_ALIGN, &p, "sampling seats"))) return rc;
    cb->seen = p;
    if ((rc = cb_alloc(be, al(seats * words * 64 * 2), CB_ALIGN, &p, "sampling seats"))) return rc;
    cb->seat_counts = p;
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
        int rc =
            cuda_err(&cb->drv, cb->drv.MemcpyHtoDAsync(dst + i * 2, st, m * 2, cb->dev.compute),
                     "cuMemcpyHtoDAsync (weights)");
        if (!rc)
            rc = cuda_err(&cb->drv, cb->drv.StreamSynchronize(cb->dev.compute), "weights upload");
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
            if ((rc = put_bf16(cb, (CUdeviceptr)l->w[0] + off * 2, parts[i].w, parts[i].wt, n)))
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
                rc = cuda_err(
                    &cb->drv,
                    cb->drv.MemsetD8Async(d, 0, (size_t)parts[i].rows * 2, cb->dev.compute),
                    "cuMemsetD8Async (bias)");
            if (rc) return rc;
            off += (size_t)parts[i].rows;
        }
    }
    rc = cublaslt_gemm_init(&cb->lt, &cb->plans[cb->n_plans], n_out, k, max_rows,
                            (CUdeviceptr)l->bias[0], cb->invariant, CB_WORKSPACE, out_t == ZP_F32);
    if (rc) return err_set(rc, "linear '%s': %s", what, err_msg());
    l->plan = cb->n_plans++;
    return 0;
}

static int cb_upload(backend *be, be_ptr dst, const void *src, size_t bytes) {
    cuda_be *cb = be->impl;
    if (!bytes) return 0;
    return cuda_err(&cb->drv,
                    cb->drv.MemcpyHtoDAsync((CUdeviceptr)dst, src, bytes, cb->dev.compute),
                    "cuMemcpyHtoDAsync");
}

/* Synchronous: the bytes are in dst on return. */
static int cb_download(backend *be, void *dst, be_ptr src, size_t bytes) {
    cuda_be *cb = be->impl;
    if (!bytes) return 0;
    int rc =
        cuda_err(&cb->drv, cb->drv.MemcpyDtoHAsync(dst, (CUdeviceptr)src, bytes, cb->dev.compute),
                 "cuMemcpyDtoHAsync");
    if (!rc) rc = cuda_err(&cb->drv, cb->drv.StreamSynchronize(cb->dev.compute), "download");
    return rc;
}

static int cb_sync(backend *be) {
    cuda_be *cb = be->impl;
    int rc = cuda_err(&cb->drv, cb->drv.StreamSynchronize(cb->dev.compute), "GPU step");
    if (cb->rc) {
        rc = err_set(cb->rc, "%s", cb->err);
        cb->rc = 0;
    }
    return rc;
}

/* ---- CUDA graphs ---- */

static int cb_capture_begin(backend *be) {
    cuda_be *cb = be->impl;
    cb->rc = 0;
    return cuda_err(
        &cb->drv, cb->drv.StreamBeginCapture(cb->dev.compute, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
        "cuStreamBeginCapture");
}

static int cb_capture_end(backend *be, int slot) {
    cuda_be *cb = be->impl;
    CUgraph g = NULL;
    int rc =
        cuda_err(&cb->drv, cb->drv.StreamEndCapture(cb->dev.compute, &g), "cuStreamEndCapture");
    if (!rc && cb->rc)
        rc = err_set(cb->rc, "capturing a CUDA graph: %s", cb->err); /* a failed op */
    cb->rc = 0;
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
    if (cb->dev.ctx) cb->drv.StreamSynchronize(cb->dev.compute);
    for (int i = 0; i < CB_MAX_GRAPHS; i++)
        if (cb->graphs[i]) cb->drv.GraphExecDestroy(cb->graphs[i]);
    for (int i = 0; i < cb->n_plans; i++)
        cublaslt_gemm_destroy(&cb->lt, &cb->plans[i]);
    if (cb->lt.h) cublaslt_close(&cb->lt);
    if (cb->layer_mod) cb->drv.ModuleUnload(cb->layer_mod);
    if (cb->attn_mod) cb->drv.ModuleUnload(cb->attn_mod);
    if (cb->sample_mod) cb->drv.ModuleUnload(cb->sample_mod);
    if (cb->mem) cb->drv.MemFree(cb->mem);
    if (cb->staging) cb->drv.MemFreeHost(cb->staging);
    cuda_dev_close(&cb->dev);
    if (cb->drv.so) cuda_drv_unload(&cb->drv);
    arena_release(&cb->a);
    munmap(cb, sizeof *cb);
}

/* ---- ops ---- */

#define CB(be) cuda_be *cb = (be)->impl
#define U(x)   ((unsigned)(x))

static void cb_embed(backend *be, be_ptr resid, be_ptr table, zp_dtype wt, be_ptr ids, int n,
                     int dim) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&resid, &table, &ids, &cnt, &dim};
    launch(cb, cb->embed, U(n), 1, 1, 256, a, "zp_embed");
}

static void cb_add_rmsnorm(backend *be, be_ptr resid, be_ptr x, be_ptr out, be_ptr w, zp_dtype wt,
                           int rows, int dim, float eps) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&resid, &x, &out, &w, &cnt, &dim, &eps};
    launch(cb, cb->add_rmsnorm, U(rows), 1, 1, 256, a, "zp_add_rmsnorm");
}

static void cb_linear(backend *be, be_ptr out, be_ptr x, const be_linear *l, int n) {
    CB(be);
    keep(cb, cublaslt_gemm_run(&cb->lt, &cb->plans[l->plan], (CUdeviceptr)out, (CUdeviceptr)x,
                               (CUdeviceptr)l->w[0], n, cb->ws, CB_WORKSPACE, cb->dev.compute));
}

static void cb_qkv_rope_store(backend *be, be_ptr q_out, be_ptr qkv, be_ptr qn, be_ptr kn,
                              zp_dtype nt, float eps, be_ptr positions, be_ptr inv_freq,
                              be_ptr slots, be_ptr kc, be_ptr vc, zp_dtype kvt, int n, int hq,
                              int hkv, int dim, int bs) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&qkv, &qn,  &kn,  &positions, &inv_freq, &slots, &cnt,
                 &hq,  &hkv, &eps, &q_out,     &kc,       &vc};
    launch(cb, cb->qkv, U(n), U(hq + hkv), 1, U(dim / 2), a, "zp_qkv_rope_store");
}

/* Every row's KV range is split into chunks of attention_chunk positions, whatever the batch,
 * so a row's result depends on its own length only (batch invariance); the grid covers the
 * step's longest row, and splits past a shorter row's length are empty. */
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
    be_ptr tc = 0; /* no tok_tc: every row runs in zp_attn_partial */
    int mb = b->max_blocks;
    void *pa[] = {&q,  &kc,  &vc,    &seq,   &idx,     &bt, &cnt, &tc,
                  &mb, &hkv, &scale, &chunk, &n_split, &po, &pml};
    launch(cb, cb->attn_partial, U(n_split), U(hkv), U(n), 128, pa, "zp_attn_partial");
    void *ma[] = {&po, &pml, &cnt, &hq, &n_split, &out};
    launch(cb, cb->attn_merge, U(hq), U(n), 1, U(dim), ma, "zp_attn_merge");
}

static void cb_swiglu(backend *be, be_ptr out, be_ptr gu, int n, int inter) {
    CB(be);
    be_ptr cnt = be->counts;
    void *a[] = {&out, &gu, &cnt, &inter};
    launch(cb, cb->swiglu, U(n), U((inter + 255) / 256), 1, 256, a, "zp_silu_mul");
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

static int cb_check(backend *be, const be_cparams *p) {
    if (p->qcl > 0)
        return err_set(ZP_EUNSUP, "cuda backend: compression does not run on the GPU yet; set "
                                  "compress=false");
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
    if (s->block_size < 16 || s->block_size > 256 || (s->block_size & (s->block_size - 1)))
        return err_set(ZP_EUNSUP,
                       "key 'block_size': %d is not supported on the GPU (16, 32, 64, "
                       "128 or 256)",
                       s->block_size);
    if ((rc = cuda_drv_load(&cb->drv, c->cuda_driver_path ? c->cuda_driver_path : "")) ||
        (rc = cuda_dev_open(&cb->dev, &cb->drv, c->cuda_device)))
        return rc;
    if ((rc = nvrtc_load(&cb->nv, c->nvrtc_path ? c->nvrtc_path : "")) ||
        (rc = nvrtc_check_arch(&cb->nv, cb->dev.arch)) ||
        (rc = cublaslt_load(&cb->lt, c->cublaslt_path ? c->cublaslt_path : "")))
        return rc;
    if ((rc = arena_init(&cb->a, "cuda backend", 256u << 20))) return rc;
    char cache[1024];
    const char *kc = c->kernel_cache_dir ? c->kernel_cache_dir : "";
    if (!strcmp(kc, "off"))
        cache[0] = 0;
    else if (*kc)
        snprintf(cache, sizeof cache, "%s", kc);
    else
        nvrtc_default_cache_dir(cache, sizeof cache);
    if ((rc = load_module(cb, "layer.cu", 1, cache, &cb->layer_mod)) ||
        (rc = load_module(cb, "attention.cu", gqa, cache, &cb->attn_mod)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_embed", &cb->embed)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_add_rmsnorm", &cb->add_rmsnorm)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_qkv_rope_store", &cb->qkv)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_silu_mul", &cb->swiglu)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_gather_rows", &cb->gather)) ||
        (rc = get_fn(cb, cb->layer_mod, "zp_argmax", &cb->argmax)) ||
        (rc = get_fn(cb, cb->attn_mod, "zp_attn_partial", &cb->attn_partial)) ||
        (rc = get_fn(cb, cb->attn_mod, "zp_attn_merge", &cb->attn_merge)) ||
        (rc = load_module(cb, "sample.cu", 1, cache, &cb->sample_mod)) ||
        (rc = get_fn(cb, cb->sample_mod, "zp_sample", &cb->sample)) ||
        (rc = get_fn(cb, cb->sample_mod, "zp_sample_seat_init", &cb->seat_init)))
        return rc;
    if ((rc = cuda_err(&cb->drv, cb->drv.MemAllocHost(&cb->staging, CB_STAGING), "cuMemAllocHost")))
        return rc;
    cb->cap_plans = 4 * s->layers + 1;
    cb->plans = arena_alloc(&cb->a, sizeof *cb->plans * (size_t)cb->cap_plans, 64, "GEMM plans");
    if (!cb->plans) return ZP_ENOMEM;
    /* the worst step: max_tokens rows, each split into max_model_len / chunk partials */
    cb->part_cap = (size_t)s->max_tokens * (size_t)((s->max_model_len + cb->chunk - 1) / cb->chunk);
    cb->be.sample_seats = s->max_logits;
    size_t words = zp_sample_seat_words(s->vocab);
    cb->be.scratch_bytes =
        CB_WORKSPACE + al(cb->part_cap * (size_t)s->heads * (size_t)s->head_dim * 4) +
        al(cb->part_cap * (size_t)s->heads * 8) + al((size_t)s->max_logits * words * 8) +
        al((size_t)s->max_logits * words * 64 * 2) + 4 * CB_ALIGN;
    snprintf(cb->desc, sizeof cb->desc,
             "%s (sm_%d, %d SMs), driver CUDA %d.%d, NVRTC %d.%d, "
             "cuBLASLt %zu",
             cb->dev.name, cb->dev.arch, cb->dev.n_sm, cb->drv.driver_version / 1000,
             cb->drv.driver_version % 1000 / 10, cb->nv.major, cb->nv.minor, cb->lt.version);
    return 0;
}

int cuda_backend_create(backend **out, const be_config *c, const be_shape *s) {
    /* The instance lives in its own mapping (zeroed): backends are made at start-up only. */
    cuda_be *cb =
        mmap(NULL, sizeof *cb, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (cb == MAP_FAILED) return err_set(ZP_ENOMEM, "cuda backend: %s", strerror(errno));
    cb->s = *s;
    cb->invariant = c->batch_invariant;
    cb->chunk = c->attention_chunk > 0 ? c->attention_chunk : 512;
    cb->be = (backend){
        .name = "cuda",
        .impl = cb,
        .act_dtype = ZP_BF16,
        .device_memory = 1,
        .mem_info = cb_mem_info,
        .reserve = cb_reserve,
        .alloc = cb_alloc,
        .weight_bytes = cb_weight_bytes,
        .map_weight = cb_map_weight,
        .linear_init = cb_linear_init,
        .upload = cb_upload,
        .download = cb_download,
        .sync = cb_sync,
        .destroy = cb_destroy,
        .embed = cb_embed,
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
        .max_graphs = CB_MAX_GRAPHS,
        .capture_begin = cb_capture_begin,
        .capture_end = cb_capture_end,
        .graph_launch = cb_graph_launch,
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
