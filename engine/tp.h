/* tp: the engine's tensor-parallel rank threads (issue 16, docs/TENSOR_PARALLEL.md).
 *
 * Rank 0 is the engine thread and its model (engine/engine.c); tp holds ranks 1..size-1, each
 * with its backend (made by the engine), its own arena and model shard, and one thread created by
 * tp_start. The thread binds its backend to itself (bind_thread) before anything else, then waits
 * for jobs: at open the engine's own (tp_run with a tp_job: the rank's KV plan, its reservation,
 * its model_init), and per step the ones below, which copy rank 0's staging into every other
 * rank's first. Every rank runs every job on its own thread, so each backend is only ever driven
 * by the thread that owns it.
 *
 * Invariants: one job at a time (tp_run, then tp_join before the next); while no job runs the
 * rank threads touch nothing, so the engine thread may write their staging. Sampling, argmax and
 * the sampler's staging stay on rank 0 (the logits are gathered there).
 * Errors: a rank thread copies its code and message (arena/err.h's text is per thread) into its
 * slot; tp_join raises the first failing rank's error, "tensor-parallel rank R: ...", where the
 * first is the lowest rank whose error is its own, not a communicator's ZP_ESTATE for another
 * rank's failure (drv/comm.h), else the lowest failing rank. A rank that fails (rank 0 in
 * tp_join) aborts the ranks' group through its communicator's abort op first, since the others
 * may be waiting for it in a collective it will not reach; the group is then not usable again
 * (engine.c stops serving).
 * Memory: the tp struct is the caller's (carved at open); each rank's arena is mapped by tp_start
 * and frozen by tp_freeze; the hand-off is a mutex, two condition variables and a generation
 * counter: nothing is allocated after start-up.
 * Threading: every tp_* call comes from the engine thread.
 */
#ifndef ZP_TP_H
#define ZP_TP_H

#include "arena/arena.h"
#include "drv/backend.h"
#include "drv/comm.h"
#include "engine/model.h"

#include <pthread.h>
#include <stdint.h>

typedef struct tp_rank {
    struct tp *owner;
    int rank;
    backend *be;  /* the engine's; driven only by this rank's thread after tp_start */
    arena a;      /* the host tables of this rank's model */
    model m;      /* the rank's shard (model_init from a job) */
    model_dims d; /* the rank's dims: its own plan at open, then the ones agreed */
    int rc;       /* the last job's result, and its message */
    char msg[512];
    pthread_t thread;
} tp_rank;

/* A job run on a rank's thread: 0 or a ZP_E* code with the thread's message. */
typedef int (*tp_job)(tp_rank *r, void *arg);

typedef struct tp {
    int size;                  /* ranks, rank 0 included */
    tp_rank ranks[ZP_TP_MAX];  /* [1 .. size) */
    pthread_mutex_t mu;        /* guards everything below */
    pthread_cond_t work, idle; /* work: gen moved on; idle: busy reached 0 */
    uint64_t gen;              /* the job's generation: a rank runs each one once */
    int busy;                  /* ranks still running the job */
    int started;               /* threads created (tp_stop joins them) */
    comm *comm0;               /* rank 0's communicator (set by the engine), for the abort */
    tp_job job;                /* NULL with gen moved on: the threads end */
    void *arg;
} tp;

/* Starts ranks 1..size-1 on bes[1 .. size): maps each rank's arena (arena_mb MiB), creates its
 * thread and waits until each has bound its backend. On error the started threads are stopped
 * (tp_stop) and the error names the rank. */
int tp_start(tp *t, int size, backend *const *bes, size_t arena_mb);
/* Releases ranks 1.. to run job(rank, arg) on their threads; returns at once. */
void tp_run(tp *t, tp_job job, void *arg);
/* Waits for the job to end on every rank; rc0 is rank 0's result (its message on the calling
 * thread). 0, or the first failing rank's error (above). */
int tp_join(tp *t, int rc0);
/* One step: copies the staged parts of m0->batch into every rank's staging, runs every rank's
 * model_forward (rank 0's, m0, on the calling thread) and joins. */
int tp_forward(tp *t, model *m0);
/* The same for a compression batch: m0->cjobs copied, then model_compress_begin on every rank; if
 * any rank fails to begin, the batches that began are ended before the error returns (their
 * staging and blocks must not be reused while they run). */
int tp_compress_begin(tp *t, model *m0);
/* model_compress_end on every rank, each by its own thread (its backend's queues are its own). */
int tp_compress_end(tp *t, model *m0);
/* Ends start-up: freezes every rank's arena (arena_freeze). */
void tp_freeze(tp *t);
/* Ends the threads (after the job in progress, if any, was joined) and releases the arenas; the
 * backends stay the caller's. Safe on a tp that tp_start did not finish. */
void tp_stop(tp *t);

#endif
