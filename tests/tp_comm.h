/* tp_comm: an in-process communicator (drv/comm.h) for tests: ranks are threads of one process,
 * each with its own CPU backend, whose be_ptr buffers are host addresses every thread can read.
 *
 * all_reduce_sum: every rank publishes its buffer, a barrier, then rank r sums its slice of the
 * elements [r * n / size, (r + 1) * n / size) over all ranks' buffers in the contract's pairwise
 * tree (tp_tree) and writes the sum into every rank's buffer, a barrier (nobody reads on before
 * every slice is written). Slices are disjoint, so no element is read after it is overwritten.
 * all_gather: every rank publishes its piece, a barrier, the receiving rank(s) copy every piece
 * into their full buffer, a barrier. f32 only (the CPU backend's activations and logits).
 * Invariants: every rank of a group calls the same collectives in the same order.
 * Memory: the group is the caller's; nothing is allocated after tp_group_init.
 * Threading: one thread per rank; tp_group_sync is the group's barrier, for the test's own
 * hand-offs between ranks.
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
    pthread_barrier_t bar;
    float *buf[ZP_TP_MAX]; /* each rank's buffer of the collective in progress */
    comm comms[ZP_TP_MAX];
} tp_group;

static inline void tp_group_sync(tp_group *g) {
    pthread_barrier_wait(&g->bar);
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
    if (t != ZP_F32) return err_set(ZP_EUNSUP, "tp_comm: all_reduce of %s", zp_dtype_name(t));
    g->buf[c->rank] = (float *)(uintptr_t)buf;
    tp_group_sync(g);
    size_t b = (size_t)c->rank * n / (size_t)g->size,
           e = (size_t)(c->rank + 1) * n / (size_t)g->size;
    for (size_t i = b; i < e; i++) {
        float s = tp_tree(g->buf, i, g->size);
        for (int r = 0; r < g->size; r++)
            g->buf[r][i] = s;
    }
    tp_group_sync(g);
    return 0;
}

static inline int tp_all_gather(comm *c, be_ptr send, be_ptr full, int rows, int cols, int ld,
                                zp_dtype t, int root) {
    tp_group *g = c->impl;
    if (t != ZP_F32) return err_set(ZP_EUNSUP, "tp_comm: all_gather of %s", zp_dtype_name(t));
    g->buf[c->rank] = (float *)(uintptr_t)send;
    tp_group_sync(g);
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
    tp_group_sync(g);
    return 0;
}

static inline void tp_group_init(tp_group *g, int size) {
    memset(g, 0, sizeof *g);
    g->size = size;
    pthread_barrier_init(&g->bar, NULL, (unsigned)size);
    for (int r = 0; r < size; r++)
        g->comms[r] = (comm){.rank = r,
                             .size = size,
                             .impl = g,
                             .all_reduce_sum = tp_all_reduce_sum,
                             .all_gather = tp_all_gather};
}

static inline void tp_group_destroy(tp_group *g) {
    pthread_barrier_destroy(&g->bar);
}

#endif
