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
 * Weights: the dtype is decided once per call. One row (AVX-512): the columns one at a time,
 * a one-column tile with the same chain per element; consecutive columns' weights are
 * adjacent, so they stream as one sequential read (prefetched one column ahead), faster than
 * four interleaved rows. With at most MR rows (decode) the tile reads the weight rows
 * directly into vector registers (bf16: widen and shift; f16: vcvtph2ps), prefetching the
 * next tile's rows (its 4 rows are 4 short streams that the hardware prefetcher picks up
 * late: ~10% of a decode matmul's time); with more rows a block of columns
 * is first widened to f32 into the thread's scratch (exact: the same f32 values), sized to stay
 * in L2, and every row tile then reads it from there.
 * bf16 precision (conf cpu_matmul_precision = bf16; bf16 weights only): the caller first
 * rounds each x row to bf16 (round to nearest even, NaN kept) with cpu_gemm_round, once per
 * call, into a staging area, and passes it as xr. With avx512_bf16 ("avx512+bf16" kernels)
 * the tiles multiply those bf16 rows with the bf16 weights by vdpbf16ps: per lane, each step
 * of 32 elements adds two products, x[2l] w[2l] and x[2l+1] w[2l+1] (in the instruction's
 * own order and rounding; it reads bf16 subnormals as zero), the same 16-lane reduction tree,
 * + bias; the weights
 * are read in place (no widening), in L2-sized column blocks when the rows exceed one tile.
 * Every other kernel runs its f32 tiles on the rounded rows (as f32): the same rounded
 * inputs and exact products (a bf16 x bf16 product fits f32), but its own summation, so the
 * kernels agree in the rounding of the inputs, not in the last bits of the sums. Either way
 * an element's chain does not depend on its tile, batch or thread, as in f32.
 * Memory: no allocation; the caller passes the thread's scratch (cpu_gemm_scratch_floats) and,
 * in bf16 precision, the staging area (cpu_gemm_stage_floats).
 * Threading: a call computes the columns [c0, c1) of every row; threads take disjoint ranges.
 */
#ifndef ZP_CPU_GEMM_H
#define ZP_CPU_GEMM_H

#include "drv/dtype.h"

#include <stdbool.h>
#include <stddef.h>

/* Strides let a call read a slice of wider rows in place: k elements of each x row (ldx apart)
 * and of each weight row (ldw apart), e.g. one of a row-parallel layer's K segments (drv/cpu.c)
 * or a tensor-parallel rank's columns of a checkpoint's o_proj. */
typedef struct cpu_gemm_args {
    float *out;       /* column 0 of the output range; rows ldo floats apart */
    const float *x;   /* rows ldx floats apart (>= k) */
    const void *w;    /* rows ldw elements apart (>= k) */
    const void *bias; /* NULL or one element per column, of type bt */
    zp_dtype wt, bt;
    int n, k, ldo, ldx, ldw;
    const void *xr; /* NULL, or x's rows by cpu_gemm_round (bf16 precision; wt must be bf16): k
                     * elements each, in the layout cpu_gemm_round writes (ldx does not apply) */
} cpu_gemm_args;

typedef struct cpu_gemm_kernel cpu_gemm_kernel;

/* The kernels of isa (CPU_ISA_* of drv/backend.h) into *out; ZP_EUNSUP when this CPU cannot run
 * them. bf16: for bf16 precision (the avx512_bf16 dot tiles where isa is AVX-512 and the CPU
 * has them). */
int cpu_gemm_pick(int isa, bool bf16, const cpu_gemm_kernel **out);

/* Its name ("avx512+bf16", "avx512", "avx2", "generic"). */
const char *cpu_gemm_name(const cpu_gemm_kernel *g);

/* Floats of scratch one thread needs for an inner dimension up to max_k. */
size_t cpu_gemm_scratch_floats(int max_k);

/* Floats of staging for rows rounded rows of up to max_k elements (either layout), cut into at
 * most max_segs segments each rounded on its own (cpu_gemm_round of a slice, padded alone). */
size_t cpu_gemm_stage_floats(int rows, int max_k, int max_segs);

/* Floats that cpu_gemm_round writes for rows rows of k elements, rounded up to 64 bytes (where
 * the next slice's rounded rows may start). */
size_t cpu_gemm_round_floats(const cpu_gemm_kernel *g, int rows, int k);

/* The first k elements of rows [r0, r1) of x (rows ldx floats apart) rounded to bf16 into the
 * same rows of dst, in the layout g's tiles read (dot tiles: bf16, rows zero-padded to a
 * multiple of 32 elements; else f32 holding the bf16 values, rows k apart). */
void cpu_gemm_round(const cpu_gemm_kernel *g, void *dst, const float *x, size_t ldx, size_t r0,
                    size_t r1, int k);

/* dst[0..n) = the bf16 or f16 src[0..n) as f32 (exact), in the kernel's vector instructions. */
void cpu_gemm_widen(const cpu_gemm_kernel *g, float *dst, const void *src, zp_dtype t, size_t n);

/* Columns [c0, c1) of every row of a; scratch holds cpu_gemm_scratch_floats(max_k >= k). */
void cpu_gemm_cols(const cpu_gemm_kernel *g, const cpu_gemm_args *a, size_t c0, size_t c1,
                   float *scratch);

#endif
