/* cpu: the reference backend: every op of drv/backend.h in plain C with f32 math (the
 * compression ops are in cpu_compress.c; the thread pool's state is in cpu_impl.h).
 *
 * It is the oracle for the CUDA kernels and what CI runs. Work is split over a fixed pool
 * of worker threads created at start-up; each op partitions its outputs into contiguous
 * ranges, and every output element is computed by exactly one thread in a fixed order, so
 * results do not depend on the thread count or on the other rows of the batch.
 *
 * Memory: the "device" reservation is one anonymous host mapping (MAP_NORESERVE); be_ptr is
 * a host address. Host staging (alloc_host) is a second, ordinary mapping. Weights are aliased
 * (mapped checkpoints used in place); a fused linear keeps its parts apart and runs one matmul
 * per part into its column range of the output.
 * Per-thread scratch (the matmul's widened weights, qkv's head row) is sized at creation from
 * max_k; in bf16 matmul precision one staging area shared by the threads holds up to
 * CPU_STAGE_ROWS activation rows rounded to bf16 (by a parallel pass before each matmul).
 * A row-parallel layer (be_linear.k_segs > 1: o_proj, down_proj) sums its K segments apart into
 * one more area, ZP_TP_MAX x CPU_SEG_ROWS rows of up to max_k columns, then each output element
 * is the pairwise tree of its segment sums (rows in chunks that fit).
 * The matmul kernels (cpu_gemm.c) are picked once, at creation, for the CPU's (or the
 * configured) instruction set.
 * Instances are independent (each with its own workers and reservation).
 * Queues and events: every op has run when it returns, so the two queues are always ordered;
 * use_queue and event_wait only check their arguments, and an event record is a reading of the
 * monotonic clock (a timer mark).
 * Threading: ops are called from one thread (the engine's); workers only run inside ops.
 */
#include "drv/backend.h"
#include "drv/cpu_compress.h"
#include "drv/cpu_gemm.h"
#include "drv/cpu_impl.h"

#include "arena/err.h"

#include <assert.h>
#include <stdbool.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static inline void *P(be_ptr p) {
    return (void *)(uintptr_t)p;
}

/* Thread t's share of [0, items): contiguous ranges, multiples of grain. */
static void share(size_t items, size_t grain, int t, int nt, size_t *b, size_t *e) {
    size_t units = (items + grain - 1) / grain;
    size_t per = units / (size_t)nt, extra = units % (size_t)nt;
    size_t ub = (size_t)t * per + ((size_t)t < extra ? (size_t)t : extra);
    size_t ue = ub + per + ((size_t)t < extra);
    *b = ub * grain < items ? ub * grain : items;
    *e = ue * grain < items ? ue * grain : items;
}

/* How long a waiting side spins: the gaps between the ops of a step are a few microseconds.
 * Longer spins lose when another process shares the cores: the scheduler charges the spinning
 * to this process and preempts its threads in the middle of ops (200 us: 1x128 decode 47 ->
 * 73 ms beside a 2-thread job, docs/BENCHMARKS.md). */
#define CPU_SPIN_NS 20000

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins until done(c, arg) or spin_ns have passed (the clock read every 256 rounds); true when
 * done. */
static bool spin_until(cpu_impl *c, bool (*done)(cpu_impl *, uint64_t), uint64_t arg) {
    if (c->spin_ns <= 0) return done(c, arg);
    int64_t end = now_ns() + c->spin_ns;
    for (unsigned i = 1;; i++) {
        if (done(c, arg)) return true;
        cpu_relax();
        if (!(i & 255) && now_ns() > end) return false;
    }
}

static bool new_job(cpu_impl *c, uint64_t seen) {
    return atomic_load_explicit(&c->gen, memory_order_acquire) != seen;
}

static bool all_done(cpu_impl *c, uint64_t unused) {
    return atomic_load_explicit(&c->pending, memory_order_acquire) == 0;
}

/* The next job's generation (or stop): spin, then sleep announced in sleepers. */
static uint64_t wait_job(cpu_impl *c, uint64_t seen) {
    if (!spin_until(c, new_job, seen)) {
        pthread_mutex_lock(&c->mu);
        atomic_fetch_add(&c->sleepers, 1);
        while (atomic_load(&c->gen) == seen && !atomic_load(&c->stop))
            pthread_cond_wait(&c->go, &c->mu);
        atomic_fetch_sub(&c->sleepers, 1);
        pthread_mutex_unlock(&c->mu);
    }
    return atomic_load_explicit(&c->gen, memory_order_acquire);
}

/* Thread t's part of the current job: its static range, or the ranges it claims. */
static void run_share(cpu_impl *c, int t) {
    size_t b, e;
    if (!c->chunk) {
        share(c->items, c->grain, t, c->nthreads, &b, &e);
        if (b < e) c->fn(c->ctx, b, e, t);
        return;
    }
    /* relaxed: only the counter's own order matters; gen's release / acquire publishes the job */
    while ((b = atomic_fetch_add_explicit(&c->next, c->chunk, memory_order_relaxed)) < c->items) {
        e = c->items - b < c->chunk ? c->items : b + c->chunk;
        c->fn(c->ctx, b, e, t);
    }
}

static void *worker(void *arg) {
    cpu_impl *c = ((cpu_worker_arg *)arg)->c;
    int t = ((cpu_worker_arg *)arg)->t;
    uint64_t seen = 0;
    for (;;) {
        seen = wait_job(c, seen);
        if (atomic_load(&c->stop)) break;
        run_share(c, t);
        if (atomic_fetch_sub(&c->pending, 1) == 1 && atomic_load(&c->waiting)) {
            pthread_mutex_lock(&c->mu);
            pthread_cond_signal(&c->done);
            pthread_mutex_unlock(&c->mu);
        }
    }
    return NULL;
}

/* Runs fn over [0, items) across all threads (claim: in claimed ranges, else one static share
 * each, the caller's share 0). */
static void run_job(cpu_impl *c, size_t items, size_t grain, bool claim, cpu_par_fn fn,
                    void *ctx) {
    if (items == 0) return;
    if (grain == 0) grain = 1;
    if (c->nthreads == 1 || items <= grain) {
        fn(ctx, 0, items, 0);
        return;
    }
    c->fn = fn;
    c->ctx = ctx;
    c->items = items;
    c->grain = grain;
    size_t units = (items + grain - 1) / grain,
           per = units / ((size_t)c->nthreads * CPU_CLAIMS);
    c->chunk = claim ? (per ? per : 1) * grain : 0;
    atomic_store_explicit(&c->next, 0, memory_order_relaxed);
    atomic_store_explicit(&c->pending, c->nthreads - 1, memory_order_relaxed);
    atomic_fetch_add(&c->gen, 1); /* publishes the job */
    if (atomic_load(&c->sleepers)) {
        pthread_mutex_lock(&c->mu);
        pthread_cond_broadcast(&c->go);
        pthread_mutex_unlock(&c->mu);
    }
    run_share(c, 0);
    if (!spin_until(c, all_done, 0)) {
        pthread_mutex_lock(&c->mu);
        atomic_store(&c->waiting, 1);
        while (atomic_load(&c->pending))
            pthread_cond_wait(&c->done, &c->mu);
        atomic_store(&c->waiting, 0);
        pthread_mutex_unlock(&c->mu);
    }
}

void cpu_parallel(cpu_impl *c, size_t items, size_t grain, cpu_par_fn fn, void *ctx) {
    run_job(c, items, grain, false, fn, ctx);
}

void cpu_parallel_claim(cpu_impl *c, size_t items, size_t grain, cpu_par_fn fn, void *ctx) {
    run_job(c, items, grain, true, fn, ctx);
}

/* ---- memory ---- */

static int cpu_reserve(backend *be, size_t bytes, size_t host_bytes) {
    cpu_impl *c = be->impl;
    if (c->mem) return err_set(ZP_ESTATE, "cpu backend: memory already reserved");
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return err_set(ZP_ENOMEM, "cpu backend: cannot reserve %zu MiB: %s", bytes >> 20,
                       strerror(errno));
    c->mem = p;
    c->size = bytes;
    c->used = 0;
    if (!host_bytes) return 0;
    p = mmap(NULL, host_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return err_set(ZP_ENOMEM, "cpu backend: cannot map %zu MiB of host staging: %s",
                       host_bytes >> 20, strerror(errno));
    c->host = p;
    c->host_size = host_bytes;
    return 0;
}

static int cpu_alloc(backend *be, size_t bytes, size_t align, be_ptr *out, const char *what) {
    cpu_impl *c = be->impl;
    size_t start = (c->used + align - 1) & ~(align - 1);
    if (!c->mem || start > c->size || bytes > c->size - start)
        return err_set(ZP_ENOMEM,
                       "cpu backend: no room for %zu bytes of '%s' (%zu of %zu MiB used)", bytes,
                       what, c->used >> 20, c->size >> 20);
    c->used = start + bytes;
    *out = (be_ptr)(uintptr_t)(c->mem + start);
    return 0;
}

static int cpu_alloc_host(backend *be, size_t bytes, void **out, const char *what) {
    cpu_impl *c = be->impl;
    size_t take = (bytes + 255) & ~(size_t)255;
    if (!c->host || take > c->host_size - c->host_used)
        return err_set(ZP_ENOMEM,
                       "cpu backend: no host staging left for %zu bytes of '%s' (%zu of %zu "
                       "bytes used)",
                       bytes, what, c->host_used, c->host_size);
    *out = c->host + c->host_used;
    c->host_used += take;
    return 0;
}

static int cpu_mem_info(backend *be, size_t *free_bytes, size_t *total_bytes) {
    long page = sysconf(_SC_PAGESIZE), avail = sysconf(_SC_AVPHYS_PAGES),
         all = sysconf(_SC_PHYS_PAGES);
    if (page <= 0 || avail < 0 || all <= 0)
        return err_set(ZP_EBACKEND, "cpu backend: cannot read the memory size");
    *free_bytes = (size_t)avail * (size_t)page;
    *total_bytes = (size_t)all * (size_t)page;
    return 0;
}

static size_t cpu_weight_bytes(backend *be, zp_dtype t, size_t n) {
    return 0;
}

static int cpu_map_weight(backend *be, const void *host, zp_dtype t, size_t n, be_ptr *out,
                          zp_dtype *out_t, const char *what) {
    *out = (be_ptr)(uintptr_t)host;
    *out_t = t;
    return 0;
}

/* Parts stay apart and in place; linear() runs one matmul per part into its column range. */
static int cpu_linear_init(backend *be, be_linear *l, const be_part *parts, int n_parts, int k,
                           int max_rows, zp_dtype out_t, const char *what) {
    cpu_impl *c = be->impl;
    if (n_parts < 1 || n_parts > BE_LINEAR_PARTS || k > c->max_k || out_t != ZP_F32)
        return err_set(ZP_EINVAL, "cpu backend: linear '%s': %d parts, k %d (max %d)", what,
                       n_parts, k, c->max_k);
    memset(l, 0, sizeof *l);
    l->k = k, l->n_parts = n_parts, l->out_t = out_t;
    l->k_segs = 1;
    for (int i = 0; i < n_parts; i++) {
        if (parts[i].ld && parts[i].ld < k)
            return err_set(ZP_EINVAL, "cpu backend: linear '%s': part %d's rows %d apart, k %d",
                           what, i, parts[i].ld, k);
        l->ldw[i] = parts[i].ld ? parts[i].ld : k;
        l->w[i] = parts[i].w ? (be_ptr)(uintptr_t)parts[i].w : parts[i].dev;
        l->bias[i] = (be_ptr)(uintptr_t)parts[i].bias;
        l->wt[i] = parts[i].wt, l->bt[i] = parts[i].bt, l->rows[i] = parts[i].rows;
        l->n_out += parts[i].rows;
    }
    return 0;
}

static int cpu_upload(backend *be, be_ptr dst, const void *src, size_t bytes) {
    if (bytes) memcpy(P(dst), src, bytes);
    return 0;
}

static int cpu_download(backend *be, void *dst, be_ptr src, size_t bytes) {
    if (bytes) memcpy(dst, P(src), bytes);
    return 0;
}

static int cpu_copy(backend *be, be_ptr dst, be_ptr src, size_t bytes) {
    if (bytes) memcpy(P(dst), P(src), bytes);
    return 0;
}

static int cpu_sync(backend *be) {
    return 0;
}

static int cpu_sync_queue(backend *be, int q) {
    return be_check_queue(be, q); /* ops run to completion: nothing is ever pending */
}

/* ---- queues and events ---- */

static int cpu_use_queue(backend *be, int q) {
    return be_check_queue(be, q);
}

static int cpu_event_record(backend *be, int ev, int q) {
    cpu_impl *c = be->impl;
    int rc = be_check_event(be, ev);
    if (!rc) rc = be_check_queue(be, q);
    if (rc) return rc;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    c->ev_ms[ev] = 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
    c->ev_set[ev] = 1;
    return 0;
}

static int cpu_event_wait(backend *be, int q, int ev) {
    int rc = be_check_queue(be, q);
    return rc ? rc : be_check_event(be, ev);
}

static int cpu_event_done(backend *be, int ev) {
    int rc = be_check_event(be, ev);
    return rc ? rc : 1;
}

static int cpu_event_sync(backend *be, int ev) {
    return be_check_event(be, ev);
}

static int cpu_event_elapsed(backend *be, int start, int end, float *ms) {
    cpu_impl *c = be->impl;
    int rc = be_check_event(be, start);
    if (!rc) rc = be_check_event(be, end);
    if (rc) return rc;
    if (!c->ev_set[start] || !c->ev_set[end])
        return err_set(ZP_ESTATE, "cpu backend: timer: event %d was never recorded",
                       c->ev_set[start] ? end : start);
    *ms = (float)(c->ev_ms[end] - c->ev_ms[start]);
    return 0;
}

static void cpu_destroy(backend *be) {
    cpu_impl *c = be->impl;
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->stop, 1);
    atomic_fetch_add(&c->gen, 1); /* spinning workers see it at once */
    pthread_cond_broadcast(&c->go);
    pthread_mutex_unlock(&c->mu);
    for (int t = 1; t < c->nthreads; t++)
        pthread_join(c->tid[t], NULL);
    if (c->mem) munmap(c->mem, c->size);
    if (c->host) munmap(c->host, c->host_size);
    if (c->scratch) munmap(c->scratch, sizeof(float) * c->scratch_floats * (size_t)c->nthreads);
    if (c->stage) munmap(c->stage, sizeof(float) * c->stage_floats);
    if (c->part) munmap(c->part, sizeof(float) * c->part_floats);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->go);
    pthread_cond_destroy(&c->done);
    munmap(c, sizeof *c);
}

/* ---- ops ---- */

typedef struct {
    float *out;
    const void *table;
    zp_dtype wt;
    const int32_t *ids;
    int dim, v0, v1; /* the table's rows are ids [v0, v1) */
} embed_args;

static void embed_rows(void *c, size_t b, size_t e, int tid) {
    embed_args *a = c;
    for (size_t i = b; i < e; i++) {
        float *o = a->out + i * (size_t)a->dim;
        int id = a->ids[i];
        if (id < a->v0 || id >= a->v1) {
            for (int j = 0; j < a->dim; j++)
                o[j] = -0.0f;
            continue;
        }
        size_t base = (size_t)(id - a->v0) * (size_t)a->dim;
        for (int j = 0; j < a->dim; j++)
            o[j] = zp_load(a->table, a->wt, base + (size_t)j);
    }
}

static void cpu_embed(backend *be, be_ptr out, be_ptr table, zp_dtype wt, be_ptr ids, int n,
                      int dim) {
    embed_args a = {P(out), P(table), wt, P(ids), dim, 0, INT32_MAX};
    cpu_parallel(be->impl, (size_t)n, 1, embed_rows, &a);
}

static void cpu_embed_shard(backend *be, be_ptr out, be_ptr table, zp_dtype wt, be_ptr ids, int n,
                            int dim, int v0, int v1) {
    embed_args a = {P(out), P(table), wt, P(ids), dim, v0, v1};
    cpu_parallel(be->impl, (size_t)n, 1, embed_rows, &a);
}

typedef struct {
    float *out, *x, *resid;
    const void *w;
    zp_dtype wt;
    int dim;
    float eps;
} norm_args;

static void norm_row(float *out, const float *x, const void *w, zp_dtype wt, int dim, float eps) {
    float ss = 0;
    for (int j = 0; j < dim; j++)
        ss += x[j] * x[j];
    float r = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int j = 0; j < dim; j++)
        out[j] = x[j] * r * zp_load(w, wt, (size_t)j);
}

static void norm_rows(void *c, size_t b, size_t e, int tid) {
    norm_args *a = c;
    for (size_t i = b; i < e; i++) {
        size_t o = i * (size_t)a->dim;
        if (a->x)
            for (int j = 0; j < a->dim; j++)
                a->resid[o + (size_t)j] += a->x[o + (size_t)j];
        norm_row(a->out + o, a->resid + o, a->w, a->wt, a->dim, a->eps);
    }
}

static void cpu_add_rmsnorm(backend *be, be_ptr resid, be_ptr x, be_ptr out, be_ptr w, zp_dtype wt,
                            int rows, int dim, float eps) {
    norm_args a = {P(out), x ? P(x) : NULL, P(resid), P(w), wt, dim, eps};
    cpu_parallel(be->impl, (size_t)rows, 1, norm_rows, &a);
}

/* 8-lane GCC vectors (one AVX register, or two SSE ones) for attention's dot products. */
typedef float v8f __attribute__((vector_size(32)));

static inline v8f ld8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float lanes_sum(v8f l) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f sel8(v8i m, v8f a, v8f b) { /* m ? a : b per lane (m all ones or zero) */
    return (v8f)((m & (v8i)a) | (~m & (v8i)b));
}

/* e^x per lane: Cephes' expf (x = n ln 2 + r, ln 2 in two parts, a degree-6 polynomial in r,
 * then the exponent bits), within 2 ulp of expf; 0 below -87.3, +inf above 88.7. Plain
 * multiplies and adds (no contraction in ISO C), so every build and clone gives the same bits. */
static inline v8f exp8(v8f x) {
    v8i under = x < -87.3365f, over = x > 88.7228f;
    x = sel8(under | over, (v8f){0}, x);
    v8f y = x * 1.44269504088896341f + 0.5f;
    v8i t = __builtin_convertvector(y, v8i); /* toward zero, then floor */
    t += __builtin_convertvector(t, v8f) > y;
    v8f n = __builtin_convertvector(t, v8f);
    v8f r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    v8f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    v8f e = (p * (r * r) + r + 1.0f) * (v8f)((t + 127) << 23);
    return sel8(under, (v8f){0}, sel8(over, (v8f){0} + INFINITY, e));
}

typedef struct {
    const cpu_gemm_kernel *g;
    cpu_gemm_args a;
    float *scratch; /* [threads][scratch_floats] */
    size_t scratch_floats;
} mm_args;

static void mm_cols(void *c, size_t b, size_t e, int tid) {
    mm_args *m = c;
    cpu_gemm_cols(m->g, &m->a, b, e, m->scratch + (size_t)tid * m->scratch_floats);
}

/* segs slices of k elements of each x row (ldx apart), slice s at x + s * k, each rounded on its
 * own into dst[s] (one slice: the whole row). */
typedef struct {
    const cpu_gemm_kernel *g;
    void *dst[ZP_TP_MAX];
    const float *x;
    size_t ldx;
    int k, segs;
} round_args;

static void round_rows(void *c, size_t b, size_t e, int tid) {
    round_args *r = c;
    for (int s = 0; s < r->segs; s++)
        cpu_gemm_round(r->g, r->dst[s], r->x + (size_t)s * (size_t)r->k, r->ldx, b, e, r->k);
}

/* A matmul's columns [0, cols) over the threads in multiples of 16: claimed ranges for n <=
 * CPU_CLAIM_ROWS rows (the weights streamed once), static shares for more (drv/cpu_impl.h). */
static void par_cols(cpu_impl *c, int n, size_t cols, cpu_par_fn fn, void *ctx) {
    if (n <= CPU_CLAIM_ROWS)
        cpu_parallel_claim(c, cols, 16, fn, ctx);
    else
        cpu_parallel(c, cols, 16, fn, ctx);
}

/* n rows of x through every part into o; xr: the same rows rounded (bf16 precision) or NULL. */
static void linear_rows(cpu_impl *c, float *o, const float *x, const be_linear *l, int n,
                        const void *xr) {
    for (int p = 0; p < l->n_parts; p++) {
        mm_args a = {c->gemm,
                     {.out = o,
                      .x = x,
                      .w = P(l->w[p]),
                      .bias = l->bias[p] ? P(l->bias[p]) : NULL,
                      .wt = l->wt[p],
                      .bt = l->bt[p],
                      .n = n,
                      .k = l->k,
                      .ldo = l->n_out,
                      .ldx = l->k,
                      .ldw = l->ldw[p],
                      .xr = l->wt[p] == ZP_BF16 ? xr : NULL},
                     c->scratch,
                     c->scratch_floats};
        par_cols(c, n, (size_t)l->rows[p], mm_cols, &a);
        o += l->rows[p];
    }
}

/* A row-parallel layer's K segments: segment s's sums of the columns into part[s] (rows n_out
 * apart), then each element the pairwise tree of its segments. */
typedef struct {
    const cpu_gemm_kernel *g;
    cpu_gemm_args seg[ZP_TP_MAX];
    int segs;
    float *out;
    float *scratch;
    size_t scratch_floats;
} seg_args;

/* ((p[0] + p[1]) + (p[2] + p[3])) + ...: halves summed apart, then added (segs a power of two) */
static float seg_tree(const float *p, size_t stride, int segs) {
    if (segs == 1) return p[0];
    int h = segs / 2;
    return seg_tree(p, stride, h) + seg_tree(p + (size_t)h * stride, stride, h);
}

/* Columns [b, e) in blocks of CPU_SEG_COLS, every segment of a block before the next block, so
 * a block's weight rows are read whole, once. */
static void seg_cols(void *c, size_t b, size_t e, int tid) {
    seg_args *m = c;
    size_t ldo = (size_t)m->seg[0].ldo, slab = (size_t)m->seg[0].n * ldo;
    float *scratch = m->scratch + (size_t)tid * m->scratch_floats;
    for (size_t cb = b; cb < e; cb += CPU_SEG_COLS) {
        size_t ce = e - cb < CPU_SEG_COLS ? e : cb + CPU_SEG_COLS;
        for (int s = 0; s < m->segs; s++)
            cpu_gemm_cols(m->g, &m->seg[s], cb, ce, scratch);
        for (size_t r = 0; r < (size_t)m->seg[0].n; r++)
            for (size_t col = cb; col < ce; col++)
                m->out[r * ldo + col] = seg_tree(m->seg[0].out + r * ldo + col, slab, m->segs);
    }
}

/* n rows of a row-parallel layer (one part, no bias, k_segs segments of x and W). */
static void seg_rows(cpu_impl *c, float *o, const float *x, const be_linear *l, int n, bool round) {
    int segs = l->k_segs, seg = l->k / segs;
    seg_args a = {.g = c->gemm,
                  .segs = segs,
                  .out = o,
                  .scratch = c->scratch,
                  .scratch_floats = c->scratch_floats};
    round_args ra = {c->gemm, {NULL}, x, (size_t)l->k, seg, segs};
    size_t es = zp_dtype_size(l->wt[0]), slab = (size_t)n * (size_t)l->n_out;
    for (int s = 0; s < segs; s++) {
        ra.dst[s] = c->stage + (size_t)s * cpu_gemm_round_floats(c->gemm, n, seg);
        a.seg[s] = (cpu_gemm_args){.out = c->part + (size_t)s * slab,
                                   .x = x + (size_t)s * (size_t)seg,
                                   .w = (const char *)P(l->w[0]) + (size_t)s * (size_t)seg * es,
                                   .wt = l->wt[0],
                                   .n = n,
                                   .k = seg,
                                   .ldo = l->n_out,
                                   .ldx = l->k,
                                   .ldw = l->ldw[0],
                                   .xr = round ? ra.dst[s] : NULL};
    }
    if (round) cpu_parallel(c, (size_t)n, 1, round_rows, &ra);
    par_cols(c, n, (size_t)l->n_out, seg_cols, &a);
}

static void cpu_linear(backend *be, be_ptr out, be_ptr x, const be_linear *l, int n) {
    cpu_impl *c = be->impl;
    assert(l->k <= c->max_k);
    bool round = false;
    for (int p = 0; p < l->n_parts; p++)
        round |= c->stage && l->wt[p] == ZP_BF16;
    int segs = l->k_segs > 1 ? l->k_segs : 1, chunk = round ? CPU_STAGE_ROWS : n;
    if (segs > 1) {
        assert(segs <= ZP_TP_MAX && !(segs & (segs - 1)) && l->k % segs == 0);
        assert(l->n_parts == 1 && !l->bias[0]);
        size_t fit = c->part_floats / ((size_t)segs * (size_t)l->n_out);
        assert(fit >= 1);
        if ((size_t)chunk > fit) chunk = (int)fit;
    }
    /* rows in chunks: the staging area (bf16 precision) and the segments' slabs bound them */
    for (int r = 0; r < n; r += chunk) {
        int m = n - r < chunk ? n - r : chunk;
        const float *xs = (const float *)P(x) + (size_t)r * (size_t)l->k;
        float *os = (float *)P(out) + (size_t)r * (size_t)l->n_out;
        if (segs > 1) {
            seg_rows(c, os, xs, l, m, round);
            continue;
        }
        if (round) {
            round_args ra = {c->gemm, {c->stage}, xs, (size_t)l->k, l->k, 1};
            cpu_parallel(c, (size_t)m, 1, round_rows, &ra);
        }
        linear_rows(c, os, xs, l, m, round ? c->stage : NULL);
    }
}

/* Rotate-half RoPE of one head row in place at angle p * inv_freq[j]. */
static void rope_head(float *v, float p, const float *inv_freq, int dim) {
    int half = dim / 2;
    for (int j = 0; j < half; j++) {
        float ang = p * inv_freq[j], cs = cosf(ang), sn = sinf(ang);
        float x1 = v[j], x2 = v[j + half];
        v[j] = x1 * cs - x2 * sn;
        v[j + half] = x2 * cs + x1 * sn;
    }
}

static inline void kv_put(void *cache, zp_dtype t, size_t i, float v) {
    if (t == ZP_F32)
        ((float *)cache)[i] = v;
    else
        ((uint16_t *)cache)[i] = t == ZP_BF16 ? zp_f32_to_bf16(v) : zp_f32_to_f16(v);
}

typedef struct {
    float *q_out;
    const float *qkv;
    const void *qn, *kn;
    zp_dtype nt;
    float eps;
    const int32_t *pos, *slots;
    const float *inv_freq;
    void *kc, *vc;
    zp_dtype kvt;
    int hq, hkv, dim, bs;
    float *scratch; /* [threads][scratch_floats]: one k head row */
    size_t scratch_floats;
} qkv_args;

static void qkv_rows(void *c, size_t b, size_t e, int tid) {
    qkv_args *a = c;
    size_t D = (size_t)a->dim, width = (size_t)(a->hq + 2 * a->hkv) * D;
    float *k = a->scratch + (size_t)tid * a->scratch_floats;
    for (size_t i = b; i < e; i++) {
        const float *row = a->qkv + i * width;
        float p = (float)a->pos[i];
        for (int h = 0; h < a->hq; h++) {
            float *q = a->q_out + (i * (size_t)a->hq + (size_t)h) * D;
            memcpy(q, row + (size_t)h * D, D * sizeof(float));
            if (a->qn) norm_row(q, q, a->qn, a->nt, a->dim, a->eps);
            rope_head(q, p, a->inv_freq, a->dim);
        }
        if (a->slots[i] < 0) continue;
        size_t blk = (size_t)a->slots[i] / (size_t)a->bs, off = (size_t)a->slots[i] % (size_t)a->bs;
        for (int g = 0; g < a->hkv; g++) {
            memcpy(k, row + (size_t)(a->hq + g) * D, D * sizeof(float));
            if (a->kn) norm_row(k, k, a->kn, a->nt, a->dim, a->eps);
            rope_head(k, p, a->inv_freq, a->dim);
            const float *v = row + (size_t)(a->hq + a->hkv + g) * D;
            size_t dst = ((blk * (size_t)a->hkv + (size_t)g) * (size_t)a->bs + off) * D;
            for (size_t j = 0; j < D; j++) {
                kv_put(a->kc, a->kvt, dst + j, k[j]);
                kv_put(a->vc, a->kvt, dst + j, v[j]);
            }
        }
    }
}

static void cpu_qkv_rope_store(backend *be, be_ptr q_out, be_ptr qkv, be_ptr qn, be_ptr kn,
                               zp_dtype nt, float eps, be_ptr positions, be_ptr inv_freq,
                               be_ptr slots, be_ptr kc, be_ptr vc, zp_dtype kvt, int n, int hq,
                               int hkv, int dim, int bs) {
    cpu_impl *c = be->impl;
    assert(dim <= c->max_k);
    qkv_args a = {P(q_out),
                  P(qkv),
                  qn ? P(qn) : NULL,
                  kn ? P(kn) : NULL,
                  nt,
                  eps,
                  P(positions),
                  P(slots),
                  P(inv_freq),
                  P(kc),
                  P(vc),
                  kvt,
                  hq,
                  hkv,
                  dim,
                  bs,
                  c->scratch,
                  c->scratch_floats};
    cpu_parallel(c, (size_t)n, 1, qkv_rows, &a);
}

typedef struct {
    float *out;
    const float *q;
    const void *kc, *vc;
    zp_dtype kvt;
    const int32_t *tok_seq, *tok_kv_idx, *bt;
    int max_blocks, hq, hkv, dim, bs, n_tokens;
    float scale;
    const cpu_gemm_kernel *g; /* widens bf16/f16 cache rows */
} attn_args;

#define ATTN_MAX_GROUP_DIM 8192 /* query heads per kv head x head dim */
#define ATTN_CHUNK         64   /* positions scored per online-softmax update */

/* Row p of a K or V cache as f32: the row itself for f32 caches, else widened into buf by the
 * matmul's vector conversion (exact: the same values as zp_load). */
static inline const float *cache_row(const cpu_gemm_kernel *g, const void *cache, zp_dtype t,
                                     size_t off, int dim, float *buf) {
    if (t == ZP_F32) return (const float *)cache + off;
    cpu_gemm_widen(g, buf, (const uint16_t *)cache + off, t, (size_t)dim);
    return buf;
}

/* y *= a and y += a * x over n floats, 8 lanes at a time (same arithmetic per element in
 * either clone). */
static inline void scale_row(float *y, float a, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v8f v = ld8(y + j) * a;
        memcpy(y + j, &v, sizeof v);
    }
    for (; j < n; j++)
        y[j] *= a;
}

static inline void axpy_row(float *y, float a, const float *x, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v8f v = ld8(y + j) + a * ld8(x + j);
        memcpy(y + j, &v, sizeof v);
    }
    for (; j < n; j++)
        y[j] += a * x[j];
}

/* q . k * scale, in attention's fixed order: the recording reproduces its logits (8 lanes, then the
 * tail). */
static inline float attn_logit(const float *q, const float *k, int D, float scale) {
    v8f d8 = {0};
    int j = 0;
    for (; j + 8 <= D; j += 8)
        d8 += ld8(q + j) * ld8(k + j);
    float dot = lanes_sum(d8);
    for (; j < D; j++)
        dot += q[j] * k[j];
    return dot * scale;
}

/* One (token, kv head): every query head of the group attends over the token's cache
 * indices [0, idx], in chunks of positions with an online softmax; K and V rows are read
 * once per group. The order of operations is fixed, so results do not depend on the
 * batch. */
__attribute__((target_clones("avx2", "default"))) static void attn_items(void *c, size_t b,
                                                                         size_t e, int tid) {
    attn_args *a = c;
    int group = a->hq / a->hkv, D = a->dim;
    float acc[ATTN_MAX_GROUP_DIM], mx[64], sum[64], s[64][ATTN_CHUNK], kbuf[512], vbuf[512];
    assert(group * D <= ATTN_MAX_GROUP_DIM && group <= 64 && D <= 512);
    for (size_t it = b; it < e; it++) {
        /* items head-major: a thread's consecutive items reread one head's K and V (from L2,
         * where token-major order read every head's from L3 for each token) */
        size_t t = it % (size_t)a->n_tokens;
        int kh = (int)(it / (size_t)a->n_tokens);
        const float *q = a->q + (t * (size_t)a->hq + (size_t)kh * (size_t)group) * (size_t)D;
        const int32_t *bt = a->bt + (size_t)a->tok_seq[t] * (size_t)a->max_blocks;
        int len = a->tok_kv_idx[t] + 1;
        for (int g = 0; g < group; g++)
            mx[g] = -INFINITY, sum[g] = 0;
        memset(acc, 0, sizeof(float) * (size_t)(group * D));
        for (int p0 = 0; p0 < len; p0 += ATTN_CHUNK) {
            int n = len - p0 < ATTN_CHUNK ? len - p0 : ATTN_CHUNK;
            for (int i = 0; i < n; i++) {
                int p = p0 + i;
                size_t base =
                    (((size_t)bt[p / a->bs] * (size_t)a->hkv + (size_t)kh) * (size_t)a->bs +
                     (size_t)(p % a->bs)) *
                    (size_t)D;
                const float *k = cache_row(a->g, a->kc, a->kvt, base, D, kbuf);
                for (int g = 0; g < group; g++)
                    s[g][i] = attn_logit(q + (size_t)g * (size_t)D, k, D, a->scale);
            }
            for (int g = 0; g < group; g++) {
                float m = mx[g];
                for (int i = 0; i < n; i++)
                    m = s[g][i] > m ? s[g][i] : m;
                float corr = expf(mx[g] - m), *ag = acc + (size_t)g * (size_t)D;
                sum[g] *= corr;
                if (corr != 1.0f) scale_row(ag, corr, D);
                for (int i = n; i % 8; i++) /* the last vector's padding: e^-inf = 0 */
                    s[g][i] = -INFINITY;
                for (int i = 0; i < n; i += 8) {
                    v8f ev = exp8(ld8(s[g] + i) - m);
                    memcpy(s[g] + i, &ev, sizeof ev);
                }
                for (int i = 0; i < n; i++)
                    sum[g] += s[g][i];
                mx[g] = m;
            }
            for (int i = 0; i < n; i++) {
                int p = p0 + i;
                size_t base =
                    (((size_t)bt[p / a->bs] * (size_t)a->hkv + (size_t)kh) * (size_t)a->bs +
                     (size_t)(p % a->bs)) *
                    (size_t)D;
                const float *v = cache_row(a->g, a->vc, a->kvt, base, D, vbuf);
                for (int g = 0; g < group; g++)
                    axpy_row(acc + (size_t)g * (size_t)D, s[g][i], v, D);
            }
        }
        float *o = a->out + (t * (size_t)a->hq + (size_t)kh * (size_t)group) * (size_t)D;
        for (int g = 0; g < group; g++)
            for (int j = 0; j < D; j++)
                o[(size_t)g * (size_t)D + (size_t)j] =
                    acc[(size_t)g * (size_t)D + (size_t)j] / sum[g];
    }
}

static void cpu_attention(backend *be, be_ptr out, be_ptr q, be_ptr kc, be_ptr vc, zp_dtype kvt,
                          const be_batch *bb, int hq, int hkv, int dim, int bs, float scale) {
    attn_args a = {P(out),
                   P(q),
                   P(kc),
                   P(vc),
                   kvt,
                   P(bb->tok_seq),
                   P(bb->tok_kv_idx),
                   P(bb->block_tables),
                   bb->max_blocks,
                   hq,
                   hkv,
                   dim,
                   bs,
                   bb->n_tokens,
                   scale,
                   ((cpu_impl *)be->impl)->gemm};
    cpu_parallel(be->impl, (size_t)bb->n_tokens * (size_t)hkv, 1, attn_items, &a);
}

typedef struct {
    const be_oracle *const *rec;
    const float *q;
    const void *kc;
    zp_dtype kvt;
    const int32_t *tok_seq, *tok_kv_idx, *positions, *bt;
    int layer, max_blocks, hq, hkv, dim, bs;
    float scale;
    const cpu_gemm_kernel *g; /* widens bf16/f16 cache rows */
} record_args;

/* One (token, kv head) of a recorded row: pass 1 finds each query head's softmax maximum and
 * sum over the cache indices [0, i], pass 2 folds max over the group of exp(s - max) / sum
 * into the row's column of the record. Items of one request never meet (one row each). */
static void record_items(void *c, size_t b, size_t e, int tid) {
    record_args *a = c;
    int group = a->hq / a->hkv, D = a->dim;
    float mx[64], sum[64], kbuf[512];
    assert(group <= 64 && D <= 512);
    for (size_t it = b; it < e; it++) {
        size_t t = it / (size_t)a->hkv;
        int kh = (int)(it % (size_t)a->hkv);
        const be_oracle *o = a->rec[t];
        if (!o) continue;
        const float *q = a->q + (t * (size_t)a->hq + (size_t)kh * (size_t)group) * (size_t)D;
        const int32_t *bt = a->bt + (size_t)a->tok_seq[t] * (size_t)a->max_blocks;
        int len = a->tok_kv_idx[t] + 1, col = a->positions[t] / o->chunk;
        assert(len <= o->n_pos && col < o->n_chunks && a->tok_kv_idx[t] == a->positions[t]);
        for (int g = 0; g < group; g++)
            mx[g] = -INFINITY, sum[g] = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int p = 0; p < len; p++) {
                size_t base =
                    (((size_t)bt[p / a->bs] * (size_t)a->hkv + (size_t)kh) * (size_t)a->bs +
                     (size_t)(p % a->bs)) *
                    (size_t)D;
                const float *k = cache_row(a->g, a->kc, a->kvt, base, D, kbuf);
                float best = 0;
                for (int g = 0; g < group; g++) {
                    float z = attn_logit(q + (size_t)g * (size_t)D, k, D, a->scale);
                    if (pass == 0) {
                        if (z > mx[g])
                            sum[g] = sum[g] * expf(mx[g] - z) + 1.0f, mx[g] = z;
                        else
                            sum[g] += expf(z - mx[g]);
                    } else {
                        float pr = expf(z - mx[g]) / sum[g];
                        best = pr > best ? pr : best;
                    }
                }
                if (pass == 0) continue;
                float *cell = o->a +
                              (((size_t)a->layer * (size_t)a->hkv + (size_t)kh) * (size_t)o->n_pos +
                               (size_t)p) *
                                  (size_t)o->n_chunks +
                              (size_t)col;
                if (best > *cell) *cell = best;
            }
    }
}

static void cpu_attn_record(backend *be, const be_oracle *const *rec, int layer, be_ptr q,
                            be_ptr kc, zp_dtype kvt, const be_batch *bb, int hq, int hkv, int dim,
                            int bs, float scale) {
    record_args a = {rec,
                     P(q),
                     P(kc),
                     kvt,
                     P(bb->tok_seq),
                     P(bb->tok_kv_idx),
                     P(bb->positions),
                     P(bb->block_tables),
                     layer,
                     bb->max_blocks,
                     hq,
                     hkv,
                     dim,
                     bs,
                     scale,
                     ((cpu_impl *)be->impl)->gemm};
    cpu_parallel(be->impl, (size_t)bb->n_tokens * (size_t)hkv, 1, record_items, &a);
}

typedef struct {
    float *out;
    const float *gu;
    int inter;
} swiglu_args;

/* silu(g) * u over 8 lanes (a tail of the row zero-padded: the same arithmetic per element). */
static inline v8f swiglu8(v8f g, v8f u) {
    return g / (1.0f + exp8(-g)) * u;
}

__attribute__((target_clones("avx2", "default"))) static void swiglu_rows(void *c, size_t b,
                                                                          size_t e, int tid) {
    swiglu_args *a = c;
    size_t I = (size_t)a->inter;
    for (size_t t = b; t < e; t++) {
        const float *g = a->gu + t * 2 * I, *u = g + I;
        float *o = a->out + t * I;
        size_t i = 0;
        for (; i + 8 <= I; i += 8) {
            v8f r = swiglu8(ld8(g + i), ld8(u + i));
            memcpy(o + i, &r, sizeof r);
        }
        if (i < I) {
            float gb[8] = {0}, ub[8] = {0}, ob[8];
            memcpy(gb, g + i, (I - i) * sizeof(float));
            memcpy(ub, u + i, (I - i) * sizeof(float));
            v8f r = swiglu8(ld8(gb), ld8(ub));
            memcpy(ob, &r, sizeof r);
            memcpy(o + i, ob, (I - i) * sizeof(float));
        }
    }
}

static void cpu_swiglu(backend *be, be_ptr out, be_ptr gu, int n, int inter) {
    swiglu_args a = {P(out), P(gu), inter};
    cpu_parallel(be->impl, (size_t)n, 1, swiglu_rows, &a);
}

typedef struct {
    int32_t *ids;
    const float *logits;
    int n_valid, stride;
} argmax_args;

/* As the CPU sampler's greedy path, with the error codes of drv/sample_abi.h: -1 a NaN,
 * -2 a +inf, -3 every logit -inf. */
static void argmax_rows(void *c, size_t b, size_t e, int tid) {
    argmax_args *a = c;
    for (size_t r = b; r < e; r++) {
        const float *row = a->logits + r * (size_t)a->stride;
        int32_t best = -3;
        float bv = -INFINITY;
        bool nan = false, inf = false;
        for (int i = 0; i < a->n_valid; i++) {
            float v = row[i];
            nan |= isnan(v);
            inf |= v == INFINITY;
            if (v > bv) bv = v, best = i;
        }
        a->ids[r] = nan ? -1 : inf ? -2 : best;
    }
}

static void cpu_argmax(backend *be, be_ptr ids, be_ptr logits, int n, int n_valid, int stride) {
    argmax_args a = {P(ids), P(logits), n_valid, stride};
    cpu_parallel(be->impl, (size_t)n, 1, argmax_rows, &a);
}

static void cpu_gather_rows(backend *be, be_ptr out, be_ptr x, be_ptr rows, int n, int dim) {
    float *o = P(out);
    const float *src = P(x);
    const int32_t *r = P(rows);
    for (int i = 0; i < n; i++)
        memcpy(o + (size_t)i * (size_t)dim, src + (size_t)r[i] * (size_t)dim,
               sizeof(float) * (size_t)dim);
}

static int cpu_check(backend *be, const be_cparams *p) {
    int group = p->hq / p->hkv;
    if (p->dim > 512 || group > 64 || group * p->dim > ATTN_MAX_GROUP_DIM)
        return err_set(ZP_EUNSUP,
                       "cpu backend: attention needs head_dim <= 512 and (query heads "
                       "per kv head) x head_dim <= %d (model: %d x %d)",
                       ATTN_MAX_GROUP_DIM, group, p->dim);
    return p->qcl > 0 ? cpu_cmp_check(be, p) : 0;
}

const char *cpu_backend_describe(const backend *be) {
    const cpu_impl *c = be->impl;
    return c->describe;
}

int cpu_backend_create(backend **out, int threads, int max_k, int isa, int prec) {
    const cpu_gemm_kernel *gemm;
    if (prec != CPU_PREC_F32 && prec != CPU_PREC_BF16)
        return err_set(ZP_EINVAL, "cpu backend: matmul precision %d", prec);
    int rc = cpu_gemm_pick(isa, prec == CPU_PREC_BF16, &gemm);
    if (rc) return rc;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > CPU_MAX_THREADS) threads = CPU_MAX_THREADS;
    if (max_k < 1) max_k = 1;
    /* The instance lives in its own mapping: backends are made at start-up only. */
    cpu_impl *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED) return err_set(ZP_ENOMEM, "cpu backend: %s", strerror(errno));
    c->nthreads = threads;
    c->max_k = max_k;
    cpu_set_t online;
    int cores = sched_getaffinity(0, sizeof online, &online) ? 1 : CPU_COUNT(&online);
    c->spin_ns = threads <= cores ? CPU_SPIN_NS : 0;
    c->gemm = gemm;
    snprintf(c->describe, sizeof c->describe, "%d threads, %s kernels, %s matmul", threads,
             cpu_gemm_name(gemm), prec == CPU_PREC_BF16 ? "bf16" : "f32");
    c->scratch_floats = (cpu_gemm_scratch_floats(max_k) + 15) & ~(size_t)15; /* 64-byte rows */
    size_t sb = sizeof(float) * c->scratch_floats * (size_t)threads;
    void *s = mmap(NULL, sb, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        munmap(c, sizeof *c);
        return err_set(ZP_ENOMEM, "cpu backend: scratch: %s", strerror(errno));
    }
    c->scratch = s;
    c->part_floats = (size_t)ZP_TP_MAX * CPU_SEG_ROWS * (size_t)max_k;
    s = mmap(NULL, sizeof(float) * c->part_floats, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) {
        munmap(c->scratch, sb);
        munmap(c, sizeof *c);
        return err_set(ZP_ENOMEM, "cpu backend: segment sums: %s", strerror(errno));
    }
    c->part = s;
    if (prec == CPU_PREC_BF16) {
        c->stage_floats = cpu_gemm_stage_floats(CPU_STAGE_ROWS, max_k, ZP_TP_MAX);
        s = mmap(NULL, sizeof(float) * c->stage_floats, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (s == MAP_FAILED) {
            munmap(c->part, sizeof(float) * c->part_floats);
            munmap(c->scratch, sb);
            munmap(c, sizeof *c);
            return err_set(ZP_ENOMEM, "cpu backend: bf16 staging: %s", strerror(errno));
        }
        c->stage = s;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->go, NULL);
    pthread_cond_init(&c->done, NULL);
    c->be = (backend){
        .name = "cpu",
        .impl = c,
        .act_dtype = ZP_F32,
        .mem_info = cpu_mem_info,
        .reserve = cpu_reserve,
        .alloc = cpu_alloc,
        .alloc_host = cpu_alloc_host,
        .weight_bytes = cpu_weight_bytes,
        .map_weight = cpu_map_weight,
        .linear_init = cpu_linear_init,
        .upload = cpu_upload,
        .download = cpu_download,
        .copy = cpu_copy,
        .sync = cpu_sync,
        .sync_queue = cpu_sync_queue,
        .destroy = cpu_destroy,
        .use_queue = cpu_use_queue,
        .event_record = cpu_event_record,
        .event_wait = cpu_event_wait,
        .event_done = cpu_event_done,
        .event_sync = cpu_event_sync,
        .event_elapsed = cpu_event_elapsed,
        .embed = cpu_embed,
        .embed_shard = cpu_embed_shard,
        .add_rmsnorm = cpu_add_rmsnorm,
        .linear = cpu_linear,
        .qkv_rope_store = cpu_qkv_rope_store,
        .attention = cpu_attention,
        .attn_record = cpu_attn_record,
        .swiglu = cpu_swiglu,
        .gather_rows = cpu_gather_rows,
        .argmax = cpu_argmax,
        .qcache_store = cpu_qcache_store,
        .cmp_score = cpu_cmp_score,
        .cmp_redundancy = cpu_cmp_redundancy,
        .cmp_select = cpu_cmp_select,
        .cmp_compact = cpu_cmp_compact,
        .check = cpu_check,
    };
    for (int t = 1; t < threads; t++) {
        c->warg[t] = (cpu_worker_arg){c, t};
        rc = pthread_create(&c->tid[t], NULL, worker, &c->warg[t]);
        if (rc) {
            c->nthreads = t;
            cpu_destroy(&c->be);
            return err_set(ZP_EBACKEND, "cpu backend: cannot start thread %d: %s", t, strerror(rc));
        }
    }
    *out = &c->be;
    return 0;
}
