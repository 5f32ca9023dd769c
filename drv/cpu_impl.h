/* cpu_impl: internals shared by the CPU backend's translation units (cpu.c: memory and the
 * forward ops; cpu_compress.c: the compression ops). Not a public interface.
 *
 * cpu_parallel splits [0, items) into one contiguous range per thread (multiples of grain);
 * the calling thread runs range 0 and waits for the others. cpu_parallel_claim instead lets
 * every thread claim ranges of 1/CPU_CLAIMS of a thread's share from an atomic counter until
 * none is left, so a thread slowed by another process on its core takes fewer (matmuls of 1-4
 * rows: their time is all streaming weights, in ranges that cost the same). An op stays
 * independent of the thread count and of the split as long as every output element is written
 * by the item that owns it, in a fixed order (then a range may also come in several calls).
 * Ops are called from one thread only; workers run only inside cpu_parallel*.
 *
 * Hand-off: a step runs ~130 ops a few microseconds apart, so a worker that finished one
 * spins on `gen` (bounded: spin_ns) before it sleeps on the condition variable, and the caller
 * spins on `pending` the same way; waking a sleeper costs a futex call per op, which used to
 * be most of a small op. A side that goes to sleep first announces it (sleepers, waiting) and
 * re-checks, and the other side reads that announcement after its own store; all four are
 * sequentially consistent atomics, so one of the two always sees the other (no lost wake-up).
 * With more threads than online cores spinning would steal the cores of the threads it waits
 * for: spin_ns is then 0.
 */

#ifndef ZP_CPU_IMPL_H
#define ZP_CPU_IMPL_H

#include "drv/backend.h"
#include "drv/cpu_gemm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CPU_MAX_THREADS 256
/* Rows rounded per staging pass in bf16 precision: a larger batch runs in chunks of this many
 * rows, each reading the weights again (estimated, not measured: ~8 ms for the ~250 MB of layer
 * weights of the docs/BENCHMARKS.md model at 30 GB/s, against ~1.5 s for 1,024 tokens). */
#define CPU_STAGE_ROWS 512
/* Rows per pass of a row-parallel layer's segment sums (be_linear.k_segs): a batched decode step
 * fits one pass; a longer prefill chunk takes several, each reading the layer's weights again. */
#define CPU_SEG_ROWS 256
/* Columns whose segments a thread sums before the next columns: their weight rows are read
 * whole while in L2 (64 rows of 4,096 bf16 weights: 512 KiB). */
#define CPU_SEG_COLS 64
/* Ranges per thread that cpu_parallel_claim cuts a job into (each a multiple of grain), and the
 * most rows a matmul may have to be split that way: with more rows the static ranges keep each
 * thread's weight block in L2 across its row tiles. 32 measured against static ranges on the
 * 2-vCPU VM: docs/BENCHMARKS.md, issue 17. */
#define CPU_CLAIMS 32
#define CPU_CLAIM_ROWS 4

typedef void (*cpu_par_fn)(void *ctx, size_t begin, size_t end, int tid);

typedef struct cpu_impl cpu_impl;
typedef struct cpu_worker_arg {
    cpu_impl *c;
    int t;
} cpu_worker_arg;

struct cpu_impl {
    backend be;
    uint8_t *mem;
    size_t size, used;
    uint8_t *host; /* host staging (alloc_host) */
    size_t host_size, host_used;
    double ev_ms[BE_EVENTS]; /* monotonic clock at each event's latest record */
    uint8_t ev_set[BE_EVENTS];
    int nthreads, max_k;
    const cpu_gemm_kernel *gemm;
    char describe[64];     /* cpu_backend_describe */
    float *scratch;        /* [nthreads][scratch_floats] */
    size_t scratch_floats; /* >= 4 * max_k and cpu_gemm_scratch_floats(max_k) */
    float *stage;          /* bf16 precision: CPU_STAGE_ROWS x rows rounded (cpu_gemm_round) */
    size_t stage_floats;   /* cpu_gemm_stage_floats(CPU_STAGE_ROWS, max_k, ZP_TP_MAX); 0 in f32 */
    float *part;           /* segment sums: [k_segs][rows][n_out], part_floats in all */
    size_t part_floats;    /* ZP_TP_MAX * CPU_SEG_ROWS * max_k */
    pthread_t tid[CPU_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    _Atomic uint64_t gen; /* bumped per parallel job (release); workers wait for a new value */
    atomic_int pending;   /* workers still running the current job */
    atomic_int sleepers;  /* workers asleep on go: a new job must broadcast */
    atomic_int waiting;   /* 1 while the caller sleeps on done */
    atomic_int stop;
    int64_t spin_ns; /* how long a waiting side spins before it sleeps */
    cpu_par_fn fn;   /* the job: written before gen is bumped, read after */
    void *ctx;
    size_t items, grain;
    size_t chunk;         /* cpu_parallel_claim's range (0: cpu_parallel's static shares) */
    _Atomic size_t next;  /* its next unclaimed item (relaxed: gen publishes the job) */
    cpu_worker_arg warg[CPU_MAX_THREADS];
};

/* Runs fn over [0, items) split across all threads of c; returns when all are done. */
void cpu_parallel(cpu_impl *c, size_t items, size_t grain, cpu_par_fn fn, void *ctx);
/* The same with ranges claimed from a counter (see the top of this file). */
void cpu_parallel_claim(cpu_impl *c, size_t items, size_t grain, cpu_par_fn fn, void *ctx);

#endif
