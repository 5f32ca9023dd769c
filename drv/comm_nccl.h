/* comm_nccl: drv/comm.h's communicator over NCCL, one rank per GPU of one process (issue 16).
 *
 * comm_nccl_open makes the communicators of every rank at once (ncclCommInitAll over the ranks'
 * GPUs, in rank order) from the ranks' CUDA backends, which must already hold their reservations:
 * each rank's gather scratch (comm_nccl_bytes) is carved from its own backend, so the caller adds
 * comm_nccl_bytes to every rank's reservation when it plans it.
 *
 * Collectives are queued on the rank's compute stream in call order with the forward pass's ops
 * (and may be captured in its CUDA graphs); a call returns once they are queued. A failure inside
 * NCCL after a call returned is NCCL's asynchronous error, which comm_nccl_check reports.
 *   abort (drv/comm.h; engine/tp calls it for a rank that failed): marks every rank aborted, so
 *   no later call touches NCCL (they return ZP_ESTATE), then ncclCommAbort on every rank's
 *   communicator, whose abort flag ends the collectives the other ranks' streams wait in. One
 *   limit is NCCL's: a rank thread already inside an NCCL call when the abort frees its
 *   communicator relies on NCCL ending that call (its waits poll the same flag).
 *   all_reduce_sum: ncclAllReduce in place. NCCL chooses its own summation order (ring or tree,
 *   by size and message length), so unlike tests/tp_comm.h's in-process communicator the sum is
 *   not drv/comm.h's fixed pairwise tree: on GPUs tensor parallelism equals TP 1 within the
 *   activations' rounding (bf16), not bit for bit.
 *   all_gather: the vocabulary-parallel pieces differ by up to one column, and NCCL gathers
 *   equal, contiguous pieces: each rank copies its packed piece into the scratch's send half
 *   (rows x wmax elements, wmax = ceil(cols / size)), ncclAllGather fills the receive half
 *   [size][rows x wmax], and the receiving ranks place every piece at its columns of full with
 *   one strided copy (cuMemcpy2DAsync) per rank.
 * Threading: a rank's calls come from the thread that drives its backend (drv/comm.h); each call
 *   makes the rank's context current on that thread first. open and close run on one thread.
 * Memory: NCCL allocates its own buffers inside ncclCommInitAll (start-up); ours come from the
 *   backends' reservations.
 */
#ifndef ZP_COMM_NCCL_H
#define ZP_COMM_NCCL_H

#include "drv/comm.h"
#include "drv/cuda_be.h"
#include "drv/nccl.h"

typedef struct comm_nccl {
    comm c; /* what the rank's model holds (model_dims.comm = &ranks[r].c) */
    const nccl_lib *lib;
    ncclComm_t nc;
    cuda_be_view v;
    be_ptr send, recv;   /* the gather's scratch in the rank's backend memory */
    size_t gather_elems; /* elements a rank's piece may take: max_rows x ceil(cols / size) */
    struct comm_nccl *group; /* ranks[0] of comm_nccl_open's array */
    int aborted;             /* 1 once the group is aborted (__atomic, see comm_nccl.c) */
    int aborting;            /* group[0]'s only: 1 once a rank began the abort (__atomic) */
} comm_nccl;

/* Bytes of backend memory one rank's communicator carves for gathers of at most max_rows rows of
 * cols f32 columns over size ranks. */
size_t comm_nccl_bytes(int size, int max_rows, int cols);

/* Communicators ranks[0 .. size) over the CUDA backends bes[0 .. size) (distinct GPUs, rank
 * order), each carving comm_nccl_bytes(size, max_rows, cols) from its backend. lib stays loaded
 * and outlives them. ZP_EINVAL for a backend that is not CUDA or a GPU named twice; NCCL's
 * failures as nccl_err reports them. On error nothing stays open. */
int comm_nccl_open(comm_nccl *ranks, const nccl_lib *lib, backend *const *bes, int size,
                   int max_rows, int cols);

/* NCCL's asynchronous error on rank's communicator (a collective that failed after it was
 * queued), 0 when none, ZP_ESTATE once the group was aborted: ask after a backend sync that
 * returned an error or hangs are suspected. */
int comm_nccl_check(const comm_nccl *rank);

/* Destroys every rank's NCCL communicator not aborted (the scratch goes with the backends). */
void comm_nccl_close(comm_nccl *ranks, int size);

#endif
