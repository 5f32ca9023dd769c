/* tp_comm: an in-process communicator (drv/comm.h) for tests: ranks are threads of one process,
 * each with its own CPU backend, whose be_ptr buffers are host addresses every thread can read.
 *
 * all_reduce_sum: every rank publishes its buffer, a barrier, then rank r sums its slice of the
 * elements [r * n / size, (r + 1) * n / size) over all ranks' buffers in the contract's pairwise
 * tree (tp_tree) and writes the sum into every rank's buffer, a barrier (nobody reads on before
 * every slice is written). Slices are disjoint, so no element is read after it is overwritten.
 * all_gather: every rank publishes its piece, a barrier, the receiving rank(s) copy every piece
 * into their full buffer, a barrier. f32 only (the CPU backend's activations and logits).
 * Group abort (as NCCL's abort ends every rank's collective): a rank whose collective fails
 * aborts the group, and so does the abort op (engine/tp calls it for a rank that failed): every
 * rank waiting in a collective's barrier, and every later collective, returns ZP_ESTATE naming
 * the rank that failed (drv/comm.h's convention), so no rank hangs. The tests' fault
 * (tp_group_fail_at: fail_rank's call number fail_call) fails that rank's call WITHOUT aborting,
 * as a failure outside a collective looks to the other ranks: they wait until the rank's caller
 * aborts the group.
 * Invariants: every rank of a group calls the same collectives in the same order.
 * Memory: the group is the caller's; nothing is allocated after tp_group_init.
 * Threading: one thread per rank; the collectives' barrier is a mutex and condition variable
 * (pthread_barrier_wait cannot be woken by an abort); `bar` is a plain barrier for the test's own
 * hand-offs between ranks (tests/tp_script.h).
 */
#ifndef ZP_TESTS_TP_COMM_H
#define ZP_TESTS_TP_COMM_H

#include "arena/err.h"
#include "drv/comm.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef struct tp_group {
    int size;
    pthread_barrier_t bar; /* the test's own hand-offs */
    pthread_mutex_t mu;    /* the collectives' barrier: arrived and phase under mu */
    pthread_cond_t cv;
    int arrived;
    unsigned long phase;
    int failed;               /* -1, or the rank whose failure aborted the group (under mu) */
    int fail_rank, fail_call; /* the fault: that rank's call fail_call (1-based) fails; 0 never */
    int calls[ZP_TP_MAX];     /* collectives each rank has called (its own thread's) */
    float *buf[ZP_TP_MAX];    /* each rank's buffer of the collective in progress */
    comm comms[ZP_TP_MAX];
} tp_group;

/* Aborts the group for rank's failure: every waiting rank wakes. */
static inline void tp_group_abort(tp_group *g, int rank) {
    pthread_mutex_lock(&g->mu);
    if (g->failed < 0) g->failed = rank;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* The error of a rank whose group was aborted (mu held or the group already failed). */
static inline int tp_aborted(const tp_group *g, int rank) {
    return err_set(ZP_ESTATE,
                   "tp_comm: rank %d's collective ended: the group was aborted by rank "
                   "%d's failure",
                   rank, g->failed);
}

/* The collectives' barrier: 0 once every rank has arrived, or the abort's error. */
static inline int tp_group_wait(tp_group *g, int rank) {
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    unsigned long phase = g->phase;
    if (g->failed < 0 && ++g->arrived == g->size) {
        g->arrived = 0;
        g->phase++;
        pthread_cond_broadcast(&g->cv);
    }
    while (g->failed < 0 && g->phase == phase)
        pthread_cond_wait(&g->cv, &g->mu);
    if (g->failed >= 0) rc = tp_aborted(g, rank);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* A collective's start: the fault, or a group already aborted, ends it. */
static inline int tp_group_enter(tp_group *g, int rank) {
    if (++g->calls[rank] == g->fail_call && rank == g->fail_rank)
        return err_set(ZP_EBACKEND, "tp_comm: rank %d made to fail on its collective call %d", rank,
                       g->fail_call);
    pthread_mutex_lock(&g->mu);
    int rc = g->failed >= 0 ? tp_aborted(g, rank) : 0;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* The sum of v[0 .. n) (elements stride apart), halves summed apart then added: the order of
 * drv/comm.h, which a row-parallel layer's segments continue inside each rank. */
static inline float tp_tree(float *const *v, size_t i, int n) {
    if (n == 1) return v[0][i];
    int h = n / 2;
    return tp_tree(v, i, h) + tp_tree(v + h, i, n - h);
}

static inline int tp_all_reduce_sum(comm *c, be_ptr buf, size_t n, zp_dtype t) {
    tp_group *g = c->impl;
    int rc = tp_group_enter(g, c->rank);
    if (rc) return rc;
    if (t != ZP_F32) {
        tp_group_abort(g, c->rank);
        return err_set(ZP_EUNSUP, "tp_comm: all_reduce of %s", zp_dtype_name(t));
    }
    g->buf[c->rank] = (float *)(uintptr_t)buf;
    if ((rc = tp_group_wait(g, c->rank))) return rc;
    size_t b = (size_t)c->rank * n / (size_t)g->size,
           e = (size_t)(c->rank + 1) * n / (size_t)g->size;
    for (size_t i = b; i < e; i++) {
        float s = tp_tree(g->buf, i, g->size);
        for (int r = 0; r < g->size; r++)
            g->buf[r][i] = s;
    }
    return tp_group_wait(g, c->rank);
}

static inline int tp_all_gather(comm *c, be_ptr send, be_ptr full, int rows, int cols, int ld,
                                zp_dtype t, int root) {
    tp_group *g = c->impl;
    int rc = tp_group_enter(g, c->rank);
    if (rc) return rc;
    if (t != ZP_F32) {
        tp_group_abort(g, c->rank);
        return err_set(ZP_EUNSUP, "tp_comm: all_gather of %s", zp_dtype_name(t));
    }
    g->buf[c->rank] = (float *)(uintptr_t)send;
    if ((rc = tp_group_wait(g, c->rank))) return rc;
    if (root < 0 || root == c->rank) {
        float *out = (float *)(uintptr_t)full;
        for (int r = 0; r < g->size; r++) {
            int c0 = (int)((long)r * cols / g->size),
                w = (int)((long)(r + 1) * cols / g->size) - c0;
            for (int i = 0; i < rows; i++)
                memcpy(out + (size_t)i * (size_t)ld + (size_t)c0, g->buf[r] + (size_t)i * (size_t)w,
                       sizeof(float) * (size_t)w);
        }
    }
    return tp_group_wait(g, c->rank);
}

static inline void tp_comm_abort(comm *c) {
    tp_group_abort(c->impl, c->rank);
}

static inline void tp_group_init(tp_group *g, int size) {
    memset(g, 0, sizeof *g);
    g->size = size;
    g->failed = -1;
    pthread_barrier_init(&g->bar, NULL, (unsigned)size);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    for (int r = 0; r < size; r++)
        g->comms[r] = (comm){.rank = r,
                             .size = size,
                             .impl = g,
                             .all_reduce_sum = tp_all_reduce_sum,
                             .all_gather = tp_all_gather,
                             .abort = tp_comm_abort};
}

/* The fault: rank's collective call number call (1-based) fails, leaving the group to its
 * caller's abort. Before the ranks start. */
static inline void tp_group_fail_at(tp_group *g, int rank, int call) {
    g->fail_rank = rank;
    g->fail_call = call;
}

static inline void tp_group_destroy(tp_group *g) {
    pthread_barrier_destroy(&g->bar);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

#endif
