/* comm: the communicator a tensor-parallel rank's model reduces and gathers through (issue 16).
 * An interface only: drv/comm_nccl.c implements it over NCCL (one GPU per rank); tests/tp_comm.h
 * has an in-process one (ranks as threads of one process, CPU backends) that the sharding test
 * runs on.
 *
 * Every rank calls the same collectives in the same order, each from the thread that owns the
 * rank's backend; a call returns once the rank's result is in its buffer (or, on a backend with
 * queues, once it is queued on the compute queue after the ops before it). Buffers are backend
 * memory of the calling rank.
 *
 * The order of the sum is part of the in-process contract, because it makes tensor parallelism
 * exact (NCCL adds in an order of its own, so on GPUs TP equals TP 1 within rounding only): the
 * ranks' values are added in the pairwise tree over rank order, the two halves of the ranks
 * summed apart and then added (size 4: (r0 + r1) + (r2 + r3); size 8: ((r0 + r1) + (r2 + r3)) +
 * ((r4 + r5) + (r6 + r7)); an odd half's middle rank goes to the second half), every element in
 * f32 whatever its storage type, rounded to the buffer's type once at the end. A row-parallel
 * layer's own K segments (be_linear.k_segs) continue the same tree inside each rank, so a sum
 * over the full K comes out the same at every power-of-two size (docs/TENSOR_PARALLEL.md).
 * Errors: 0 or a negative ZP_E* code with the per-thread message (arena/err.h); after an error
 * the communicator is not usable (the ranks may disagree on how far they got). A communicator
 * that can abort its group (tests/tp_comm.h) ends the other ranks' collectives with ZP_ESTATE,
 * naming the rank that failed, so that the rank's own error can be told apart from theirs
 * (engine/tp.h raises it). A rank that fails outside a collective would leave the others waiting
 * in their next one; engine/tp therefore aborts the group (the abort op) for it.
 * Memory and threading: the communicator's own; none of its calls allocates.
 */
#ifndef ZP_COMM_H
#define ZP_COMM_H

#include "drv/backend.h"

#include <stddef.h>

typedef struct comm comm;

struct comm {
    int rank, size; /* 0 <= rank < size <= ZP_TP_MAX */
    void *impl;
    /* In place: buf[0 .. n) (type t) := the sum of every rank's buf in the tree order above. */
    int (*all_reduce_sum)(comm *c, be_ptr buf, size_t n, zp_dtype t);
    /* The vocabulary-parallel gather: rows rows of cols columns, rank r owning the columns
     * [r * cols / size, (r + 1) * cols / size) (integer division: pieces differ by at most one
     * column), its piece in send (rows as wide as the piece, packed). Every rank's piece lands
     * at its columns of full's rows (ld elements apart) on rank root, or on every rank when root
     * < 0; full is untouched elsewhere. */
    int (*all_gather)(comm *c, be_ptr send, be_ptr full, int rows, int cols, int ld, zp_dtype t,
                      int root);
    /* Aborts the group for rank c->rank's failure: every rank's collective in progress (on a
     * backend with queues, queued) ends, and every later call returns ZP_ESTATE; the group is
     * not usable again. Called from c's rank's thread, after its own calls have returned; other
     * ranks may be waiting in theirs, which is what it ends. */
    void (*abort)(comm *c);
};

#endif
