/* tp: the engine's rank threads (see tp.h). */
#include "engine/tp.h"

#include "arena/err.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* A rank's own failure (not ZP_ESTATE, which is a collective ended by another rank's) may have
 * come before a collective the other ranks wait in: the group is aborted so that they return
 * (drv/comm.h). c is the failing rank's communicator; NULL or one without abort: nothing. */
static void abort_group(comm *c, int rc) {
    if (rc && rc != ZP_ESTATE && c && c->abort) c->abort(c);
}

/* The rank's result into its slot (the engine thread cannot read this thread's err_msg()), then
 * the group's abort if the rank failed. */
static void report(tp_rank *r, int rc) {
    r->rc = rc;
    if (!rc) return;
    snprintf(r->msg, sizeof r->msg, "%s", err_msg());
    abort_group(r->d.comm, rc);
}

static void *rank_main(void *p) {
    tp_rank *r = p;
    tp *t = r->owner;
    uint64_t seen = 0;
    report(r, r->be->bind_thread ? r->be->bind_thread(r->be) : 0); /* before any other op */
    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (--t->busy == 0) pthread_cond_signal(&t->idle);
        while (t->gen == seen)
            pthread_cond_wait(&t->work, &t->mu);
        seen = t->gen;
        tp_job job = t->job;
        void *arg = t->arg;
        if (!job) break;
        pthread_mutex_unlock(&t->mu);
        report(r, job(r, arg));
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int tp_start(tp *t, int size, backend *const *bes, size_t arena_mb) {
    assert(size > 1 && size <= ZP_TP_MAX);
    memset(t, 0, sizeof *t);
    t->size = size;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->work, NULL);
    pthread_cond_init(&t->idle, NULL);
    int rc = 0;
    for (int r = 1; r < size && !rc; r++) {
        tp_rank *rk = &t->ranks[r];
        rk->rank = r, rk->be = bes[r], rk->owner = t;
        if ((rc = arena_init(&rk->a, "tensor-parallel rank", arena_mb << 20)))
            rc = err_prefix(rc, "tensor-parallel rank %d", r);
    }
    if (!rc) t->busy = size - 1; /* each thread counts itself done once its backend is bound */
    for (int r = 1; r < size && !rc; r++) {
        if (pthread_create(&t->ranks[r].thread, NULL, rank_main, &t->ranks[r])) {
            pthread_mutex_lock(&t->mu);
            t->busy -= size - r; /* the threads never made */
            pthread_mutex_unlock(&t->mu);
            rc = err_set(ZP_EIO, "tensor-parallel rank %d: cannot create its thread", r);
            break;
        }
        t->started = r;
    }
    if (t->started) {
        int jrc = tp_join(t, 0);
        if (!rc) rc = jrc;
    }
    if (rc) tp_stop(t);
    return rc;
}

void tp_run(tp *t, tp_job job, void *arg) {
    assert(job);
    pthread_mutex_lock(&t->mu);
    assert(t->busy == 0); /* the last job was joined */
    t->job = job, t->arg = arg;
    t->busy = t->size - 1;
    t->gen++;
    pthread_cond_broadcast(&t->work);
    pthread_mutex_unlock(&t->mu);
}

int tp_join(tp *t, int rc0) {
    abort_group(t->comm0, rc0); /* before waiting: the others may wait for rank 0 */
    pthread_mutex_lock(&t->mu);
    while (t->busy)
        pthread_cond_wait(&t->idle, &t->mu);
    pthread_mutex_unlock(&t->mu);
    int first = -1, own = -1;
    for (int r = 0; r < t->size; r++) {
        int rc = r ? t->ranks[r].rc : rc0;
        if (!rc) continue;
        if (first < 0) first = r;
        if (own < 0 && rc != ZP_ESTATE) own = r; /* ZP_ESTATE: ended by another's failure */
    }
    int r = own >= 0 ? own : first;
    if (r < 0) return 0;
    if (r == 0) return err_prefix(rc0, "tensor-parallel rank 0");
    return err_set(t->ranks[r].rc, "tensor-parallel rank %d: %s", r, t->ranks[r].msg);
}

/* Rank 0's staged step into dst, in the same layout: the counts and want_ids; per token the ids,
 * positions, slots, sequences, cache indices, query slots and prompt flags; the block tables of
 * the step's sequences; the logit rows. qtile and dec_rows are left out (model_forward builds
 * them); the sampler's parts stay on rank 0 (no seat jobs elsewhere), and attention records are
 * refused under tensor parallelism (engine_submit), so none is copied. */
static void copy_batch(model_batch *dst, const model_batch *src, int32_t max_blocks) {
    assert(src->n_rec == 0);
    size_t n = (size_t)src->n_tokens * sizeof(int32_t);
    dst->n_tokens = src->n_tokens, dst->n_seqs = src->n_seqs, dst->n_logits = src->n_logits;
    dst->want_ids = src->want_ids;
    dst->n_seat_jobs = dst->n_hist = dst->n_rec = 0;
    memcpy(dst->token_ids, src->token_ids, n);
    memcpy(dst->positions, src->positions, n);
    memcpy(dst->slots, src->slots, n);
    memcpy(dst->tok_seq, src->tok_seq, n);
    memcpy(dst->tok_kv_idx, src->tok_kv_idx, n);
    memcpy(dst->tok_qslot, src->tok_qslot, n);
    memcpy(dst->tok_prompt, src->tok_prompt, n);
    memcpy(dst->block_tables, src->block_tables,
           (size_t)src->n_seqs * (size_t)max_blocks * sizeof(int32_t));
    memcpy(dst->logit_rows, src->logit_rows, (size_t)src->n_logits * sizeof(int32_t));
}

/* Rank 0's staged compression jobs into dst, in the same layout. Oracle tables are refused under
 * tensor parallelism (engine_submit), so none is copied. */
static void copy_cjobs(model_cjobs *dst, const model_cjobs *src, int32_t max_blocks) {
    size_t n = (size_t)src->n_jobs * sizeof(int32_t);
    dst->n_jobs = src->n_jobs;
    memcpy(dst->n_blocks, src->n_blocks, n);
    memcpy(dst->kv_len, src->kv_len, n);
    memcpy(dst->n_keep, src->n_keep, n);
    memcpy(dst->qslot, src->qslot, n);
    memcpy(dst->flags, src->flags, n);
    memcpy(dst->protect, src->protect, n);
    memcpy(dst->seed, src->seed, n);
    memcpy(dst->src, src->src, n * (size_t)max_blocks);
    memcpy(dst->dst, src->dst, n * (size_t)max_blocks);
}

static int forward_job(tp_rank *r, void *arg) {
    (void)arg;
    return model_forward(&r->m);
}

static int compress_begin_job(tp_rank *r, void *arg) {
    (void)arg;
    return model_compress_begin(&r->m);
}

static int compress_end_job(tp_rank *r, void *arg) {
    (void)arg;
    return model_compress_end(&r->m);
}

int tp_forward(tp *t, model *m0) {
    for (int r = 1; r < t->size; r++)
        copy_batch(&t->ranks[r].m.batch, &m0->batch, m0->dims.max_blocks);
    tp_run(t, forward_job, NULL);
    return tp_join(t, model_forward(m0));
}

int tp_compress_begin(tp *t, model *m0) {
    for (int r = 1; r < t->size; r++)
        copy_cjobs(&t->ranks[r].m.cjobs, &m0->cjobs, m0->dims.max_blocks);
    tp_run(t, compress_begin_job, NULL);
    int rc = tp_join(t, model_compress_begin(m0));
    if (!rc) return 0;
    /* The ranks that began end their batch; the others answer ZP_ESTATE (none in flight). */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", err_msg());
    tp_run(t, compress_end_job, NULL);
    tp_join(t, model_compress_end(m0));
    return err_set(rc, "%s", msg);
}

int tp_compress_end(tp *t, model *m0) {
    tp_run(t, compress_end_job, NULL);
    return tp_join(t, model_compress_end(m0));
}

void tp_freeze(tp *t) {
    for (int r = 1; r < t->size; r++)
        arena_freeze(&t->ranks[r].a);
}

void tp_stop(tp *t) {
    if (!t->size) return;
    pthread_mutex_lock(&t->mu);
    assert(t->busy == 0);
    t->job = NULL, t->arg = NULL;
    t->gen++;
    pthread_cond_broadcast(&t->work);
    pthread_mutex_unlock(&t->mu);
    for (int r = 1; r <= t->started; r++)
        pthread_join(t->ranks[r].thread, NULL);
    for (int r = 1; r < t->size; r++)
        arena_release(&t->ranks[r].a);
    pthread_cond_destroy(&t->idle);
    pthread_cond_destroy(&t->work);
    pthread_mutex_destroy(&t->mu);
    t->size = 0;
}
