/* cpu_gemm: the CPU backend's matmul, y[n][cols] = x[n][k] . W^T (+ bias), W rows [cols][k] in
 * f32, bf16 or f16 read in place, x and y f32.
 *
 * Kernels: one per instruction set (AVX-512: avx512f+bw+vl, 16 lanes; AVX2+FMA, 8 lanes; a
 * generic one in 8-lane GCC vectors without FMA), chosen once when the backend is created
 * (cpu_gemm_pick). Each computes a tile of up to MR rows x NR columns with one vector
 * accumulator per output element: acc = fma(x[i][k..], w[j][k..], acc) along k in lane-width
 * steps (the last one masked or zero-padded), then one fixed reduction tree of the lanes, then
 * + bias. That chain is the same for an element whatever the tile it sits in, its neighbours,
 * the number of rows or the thread that runs it, so a row's result is bit-identical alone or
 * in any batch and for any thread count. Kernels of different instruction sets differ in lane
 * count and FMA, hence in the last bits (drv/backend.h).
 *
 * Weights: the dtype is decided once per call. With at most MR rows (decode) the tile reads
 * the weight rows directly into vector registers (bf16: widen and shift; f16: vcvtph2ps),
 * prefetching the next tile's rows (its 4 rows are 4 short streams that the hardware
 * prefetcher picks up late: ~10% of a decode matmul's time); with more rows a block of columns
 * is first widened to f32 into the thread's scratch (exact: the same f32 values), sized to stay
 * in L2, and every row tile then reads it from there.
 * Memory: no allocation; the caller passes the thread's scratch (cpu_gemm_scratch_floats).
 * Threading: a call computes the columns [c0, c1) of every row; threads take disjoint ranges.
 */
#ifndef ZP_CPU_GEMM_H
#define ZP_CPU_GEMM_H

#include "drv/dtype.h"

#include <stddef.h>

typedef struct cpu_gemm_args {
    float *out;       /* column 0 of the output range; rows ldo floats apart */
    const float *x;   /* rows k floats apart */
    const void *w;    /* rows k elements apart */
    const void *bias; /* NULL or one element per column, of type bt */
    zp_dtype wt, bt;
    int n, k, ldo;
} cpu_gemm_args;

typedef struct cpu_gemm_kernel cpu_gemm_kernel;

/* The kernels of isa (CPU_ISA_* of drv/backend.h) into *out; ZP_EUNSUP when this CPU cannot run
 * them. */
int cpu_gemm_pick(int isa, const cpu_gemm_kernel **out);

/* Its name ("avx512", "avx2", "generic"). */
const char *cpu_gemm_name(const cpu_gemm_kernel *g);

/* Floats of scratch one thread needs for an inner dimension up to max_k. */
size_t cpu_gemm_scratch_floats(int max_k);

/* dst[0..n) = the bf16 or f16 src[0..n) as f32 (exact), in the kernel's vector instructions. */
void cpu_gemm_widen(const cpu_gemm_kernel *g, float *dst, const void *src, zp_dtype t, size_t n);

/* Columns [c0, c1) of every row of a; scratch holds cpu_gemm_scratch_floats(max_k >= k). */
void cpu_gemm_cols(const cpu_gemm_kernel *g, const cpu_gemm_args *a, size_t c0, size_t c1,
                   float *scratch);

#endif
