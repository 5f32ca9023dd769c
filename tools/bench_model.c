/* bench_model: the model-level harness of the decode and prefill benchmarks (bench_model.h). */
#include "tools/bench_model.h"

#include "arena/err.h"
#include "engine/engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    return t[n / 2];
}

void bench_stage_greedy(model_batch *b, int32_t rows) {
    b->n_seat_jobs = b->n_hist = 0;
    if (!b->sparams) return;
    for (int32_t r = 0; r < rows; r++)
        b->sparams[r] = (zp_sample_params){.top_p = 1.0f, .repetition_penalty = 1.0f, .seat = -1};
}

int bench_check_ids(const model *m, int32_t rows) {
    for (int32_t r = 0; r < rows; r++)
        if (m->host_ids[r] < 0) return zp_sample_error(m->host_ids[r], r);
    return 0;
}

size_t bench_step_weight_bytes(const bench_model *bm) {
    size_t bytes = loader_tensor_bytes(&bm->mw.lm_head);
    for (int l = 0; l < bm->mc.layers; l++) {
        const layer_weights *L = &bm->mw.layers[l];
        const tensor *t[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            bytes += loader_tensor_bytes(t[i]);
    }
    return bytes;
}

typedef struct bw_job {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} bw_job;

/* Sums n words in 8 independent chains (one chain would bound the loop by the add latency). */
static void *bw_read(void *arg) {
    bw_job *j = arg;
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= j->n; i += 8)
        for (int c = 0; c < 8; c++)
            s[c] += j->p[i + (size_t)c];
    for (int c = 0; c < 8; c++)
        j->sum += s[c];
    return NULL;
}

#define BW_BYTES   ((size_t)256 << 20)
#define BW_THREADS 64

/* bench_roofline_bw on the CPU (see bench_model.h). */
static int host_read_bw(bench_model *bm, int threads, double *gbps) {
    uint64_t *buf = arena_alloc_uninit(&bm->a, BW_BYTES, 4096, "bandwidth buffer");
    if (!buf) return ZP_ENOMEM;
    size_t words = BW_BYTES / 8;
    for (size_t i = 0; i < words; i++) /* committed and not a shared zero page */
        buf[i] = i;
    if (threads < 1) threads = 1;
    if (threads > BW_THREADS) threads = BW_THREADS;
    bw_job jobs[BW_THREADS];
    pthread_t tid[BW_THREADS];
    size_t per = words / (size_t)threads / 8 * 8;
    double best = 0;
    for (int pass = 0; pass < 5; pass++) {
        for (int t = 0; t < threads; t++)
            jobs[t] = (bw_job){buf + (size_t)t * per, per, 0};
        int created = 0, rc = 0;
        double t0 = bench_now_s();
        for (int t = 1; t < threads && !rc; t++) {
            if (pthread_create(&tid[t], NULL, bw_read, &jobs[t]))
                rc = err_set(ZP_EIO, "bandwidth: cannot start thread %d", t);
            else
                created = t;
        }
        bw_read(&jobs[0]);
        for (int t = 1; t <= created; t++)
            pthread_join(tid[t], NULL);
        double s = bench_now_s() - t0, g = (double)(per * 8) * threads / s / 1e9;
        if (rc) return rc;
        best = g > best ? g : best;
    }
    *gbps = best;
    return 0;
}

/* bench_roofline_bw on a GPU (see bench_model.h). */
static int gpu_copy_bw(bench_model *bm, double *gbps) {
    backend *be = bm->be;
    if (!bm->copy_src || !bm->copy_dst)
        return err_set(ZP_EINVAL, "copy bandwidth: no buffers reserved (backend %s)", be->name);
    int rc = be->use_queue(be, BE_Q_COMPUTE);
    for (int i = 0; i < 3 && !rc; i++)
        rc = be->copy(be, bm->copy_dst, bm->copy_src, BENCH_COPY_BYTES);
    if (!rc) rc = be->sync(be);
    double best = 0;
    for (int pass = 0; pass < 5 && !rc; pass++) {
        double t0 = bench_now_s();
        for (int i = 0; i < 10 && !rc; i++)
            rc = be->copy(be, bm->copy_dst, bm->copy_src, BENCH_COPY_BYTES);
        if (!rc) rc = be->sync(be);
        double g = 2.0 * BENCH_COPY_BYTES * 10 / (bench_now_s() - t0) / 1e9;
        best = g > best ? g : best;
    }
    if (!rc) *gbps = best;
    return rc;
}

int bench_roofline_bw(bench_model *bm, const conf *cf, double *gbps) {
    int rc;
    if (!strcmp(bm->be->name, "cpu")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int threads = cf->threads ? (int)cf->threads : cores > 0 ? (int)cores : 1;
        if (!(rc = host_read_bw(bm, threads, gbps)))
            printf("memory bandwidth: %.1f GB/s (read, %d threads, measured now)\n", *gbps,
                   threads);
    } else if (!(rc = gpu_copy_bw(bm, gbps))) {
        printf("copy bandwidth: %.1f GB/s (device to device, measured now)\n", *gbps);
    }
    return rc;
}

int bench_measure_bw(const conf *cf, const char *tool, double *gbps) {
    /* one GPU alone: that of rank 0 of a tensor-parallel run (its ranks' GPUs are alike) */
    conf one = *cf;
    one.tensor_parallel_size = 1;
    cf = &one;
    bench_model bm;
    bench_bounds b = {.max_tokens = 1, .max_seqs = 1, .max_blocks = 1, .num_blocks = 1,
                      .copy_bw = true};
    int rc = bench_model_open(&bm, cf, tool, &b, false);
    if (rc) return rc;
    rc = bench_roofline_bw(&bm, cf, gbps);
    bench_model_close(&bm);
    return rc;
}

size_t bench_layer_linear_params(const model_config *mc) {
    size_t H = (size_t)mc->hidden, D = (size_t)mc->head_dim, I = (size_t)mc->intermediate;
    size_t qd = (size_t)mc->heads * D, kd = (size_t)mc->kv_heads * D;
    return (qd + 2 * kd) * H + qd * H + 3 * I * H;
}

/* The backend for the bounds, then the model on it; the caller destroys the backend on failure. */
static int place_model(bench_model *bm, const conf *cf, const char *tool, const bench_bounds *b) {
    int32_t bs = (int32_t)cf->block_size;
    be_shape shape;
    engine_be_shape(&bm->mc, bs, b->max_tokens, b->max_seqs, b->max_blocks * bs, &shape);
    be_config bc;
    engine_be_config(cf, &bc);
    char why[320];
    int rc = engine_check_tp(cf, tool);
    if (!rc) rc = backend_create(&bm->be, &bc, &shape, why, sizeof why);
    if (rc) return rc;
    backend *be = bm->be;
    fprintf(stderr, "%s: backend %s\n", tool, why);
    model_dims d = {.max_tokens = b->max_tokens,
                    .max_logits = b->max_seqs,
                    .max_seqs = b->max_seqs,
                    .max_blocks = b->max_blocks,
                    .block_size = bs,
                    .num_blocks = b->num_blocks,
                    .kv_dtype = be->act_dtype,
                    .graphs = cf->cuda_graphs};
    double t0 = bench_now_s();
    size_t device_bytes = model_device_bytes(&bm->mc, &bm->mw, &d, be);
    /* bench_roofline_bw's two buffers after the model's memory (512 bytes for their alignment) */
    bool copy_bw = b->copy_bw && strcmp(be->name, "cpu") != 0;
    size_t copy_bytes = copy_bw ? 2 * (size_t)BENCH_COPY_BYTES + 512 : 0;
    if (!(bm->m = arena_alloc(&bm->a, sizeof *bm->m, 64, "model"))) return ZP_ENOMEM;
    if ((rc = be->reserve(be, device_bytes + copy_bytes, model_host_bytes(&bm->mc, &d, be))) ||
        (rc = model_init(bm->m, &bm->a, be, &bm->mc, &bm->mw, &d)))
        return rc;
    if (copy_bw &&
        ((rc = be->alloc(be, BENCH_COPY_BYTES, 256, &bm->copy_src, "copy bandwidth source")) ||
         (rc = be->alloc(be, BENCH_COPY_BYTES, 256, &bm->copy_dst, "copy bandwidth target"))))
        return rc;
    fprintf(stderr, "%s: model of %d layers placed in %.1f s (%.2f GiB), %d CUDA graphs\n", tool,
            bm->mc.layers, bench_now_s() - t0, device_bytes / 1073741824.0,
            bm->m->n_batch_buckets * bm->m->n_len_buckets);
    if (be->describe_plans) {
        char plans[256];
        be->describe_plans(be, plans, sizeof plans);
        fprintf(stderr, "%s: %s\n", tool, plans);
    }
    return 0;
}

int bench_model_open(bench_model *bm, const conf *cf, const char *tool, const bench_bounds *b,
                     bool real_weights) {
    memset(bm, 0, sizeof *bm);
    int rc = arena_init(&bm->a, "bench", (size_t)cf->host_arena_mb << 20);
    if (rc) return rc;
    if ((rc = loader_config(&bm->mc, &bm->a, cf->model)) ||
        (rc = real_weights ? loader_weights(&bm->mw, &bm->mc, &bm->a, cf->model)
                           : loader_dummy_weights(&bm->mw, &bm->mc, &bm->a)) ||
        (rc = place_model(bm, cf, tool, b)))
        bench_model_close(bm);
    return rc;
}

void bench_model_close(bench_model *bm) {
    if (bm->be) bm->be->destroy(bm->be);
    bm->be = NULL;
    loader_close(&bm->mw);
    arena_release(&bm->a);
}

int bench_prefill_step(bench_model *bm, int32_t P, double *median_s) {
    model *m = bm->m;
    model_batch *b = &m->batch;
    int32_t bs = m->dims.block_size, blocks = (P + bs - 1) / bs;
    for (int32_t j = 0; j < blocks; j++)
        b->block_tables[j] = j;
    double t[5];
    int rc = 0;
    for (int it = -1; it < 5 && !rc; it++) {
        for (int32_t i = 0; i < P; i++) {
            b->token_ids[i] = (i * 7919) % bm->mc.vocab;
            b->positions[i] = b->tok_kv_idx[i] = b->slots[i] = i;
            b->tok_seq[i] = 0;
            b->tok_qslot[i] = -1;
            b->tok_prompt[i] = 1;
        }
        b->logit_rows[0] = P - 1;
        b->n_tokens = P, b->n_seqs = b->n_logits = 1;
        b->want_ids = true;
        bench_stage_greedy(b, 1);
        double s0 = bench_now_s();
        rc = model_forward(m);
        if (it >= 0) t[it] = bench_now_s() - s0;
        if (!rc) rc = bench_check_ids(m, 1);
    }
    if (!rc) *median_s = bench_median(t, 5);
    return rc;
}
