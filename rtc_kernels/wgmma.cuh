/* wgmma.cuh: Hopper's warpgroup MMA (wgmma, sm_90a) as prefill_wg.cu and gemm_rows.cu use it:
 * the m64nNk16 bf16 -> f32 instructions with operands in shared memory (or A in registers), the
 * shared-memory matrix descriptor of the 128-byte-swizzle layout (common.cuh's zp_lay_sw128),
 * and the fence / commit / wait steps around them. A kernel including it compiles these only
 * when built for sm_90a (its own source names __CUDA_ARCH_FEAT_SM90_ALL, which makes
 * drv/nvrtc.c add the "a"), and traps elsewhere.
 *
 * A wgmma is issued by the whole warpgroup (128 threads, all four warps converged); its
 * accumulators stay owned by the hardware from the issue to the wait, so every access to them
 * outside that window goes through zp_wg_pin. Shared operands written through the generic
 * proxy (st.shared, cp.async) need fence.proxy.async before a wgmma reads them.
 */
#ifndef ZP_WGMMA_CUH
#define ZP_WGMMA_CUH

#include "common.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* The accumulator operands of a wgmma: d[i] .. d[i + 7], read and written. */
#define ZP_WG_F8(i)                                                                            \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
        "+f"(d[i + 6]), "+f"(d[i + 7])
#define ZP_WG_F32 ZP_WG_F8(0), ZP_WG_F8(8), ZP_WG_F8(16), ZP_WG_F8(24)
#define ZP_WG_F64 ZP_WG_F8(0), ZP_WG_F8(8), ZP_WG_F8(16), ZP_WG_F8(24), ZP_WG_F8(32), \
    ZP_WG_F8(40), ZP_WG_F8(48), ZP_WG_F8(56)

/* d (64 x 64, this thread's 32) += A (64 x 16 at descriptor a, K-major) * B (16 x 64 at
 * descriptor b, K-major) */
static __device__ __forceinline__ void zp_wg_ss64(float *d, unsigned long long a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : ZP_WG_F32
                 : "l"(a), "l"(b), "r"(1)
                 : "memory");
}
/* d (64 x 64) += A (64 x 16 in registers: per warp, mma.sync's m16n8k16 A fragment of its
 * 16 rows) * B (16 x 64 at descriptor b, MN-major: the transposed form) */
static __device__ __forceinline__ void zp_wg_rs64(float *d, const unsigned *a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : ZP_WG_F32
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)
                 : "memory");
}

/* d (64 x 128, this thread's 64) += A (64 x 16 at descriptor a, K-major) * B (16 x 128 at
 * descriptor b, K-major) */
static __device__ __forceinline__ void zp_wg_ss128(float *d, unsigned long long a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : ZP_WG_F64
                 : "l"(a), "l"(b), "r"(1)
                 : "memory");
}
/* d (64 x 128) += A (64 x 16 in registers: per warp, mma.sync's m16n8k16 A fragment of its
 * 16 rows) * B (16 x 128 at descriptor b, MN-major: the transposed form) */
static __device__ __forceinline__ void zp_wg_rs128(float *d, const unsigned *a,
                                               unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : ZP_WG_F64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)
                 : "memory");
}
/* A shared-memory matrix descriptor in the 128-byte-swizzle mode: start address, leading and
 * stride byte offsets (16-byte units). K-major operands (Q, K) use only the stride offset,
 * 1,024 bytes between groups of 8 rows; the MN-major V adds the leading offset between its
 * 64-column blocks. A k-step inside a 128-byte row advances the start address by 32 bytes:
 * the swizzle is a function of the address bits, valid as every tile is 1,024-byte aligned. */
static __device__ __forceinline__ unsigned long long zp_wg_desc(unsigned addr, unsigned lbo,
                                                                unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFFu) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}

static __device__ __forceinline__ void zp_wg_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
static __device__ __forceinline__ void zp_wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
static __device__ __forceinline__ void zp_wg_wait0() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
/* The compiler sees a wgmma's accumulators as read and written when the wgmma is issued, so it
 * could move their readers above the wait, or their other writers (zeroing, rescaling) below
 * the issue, where the hardware still owns them (ptxas then serialises the wgmmas). Each
 * register passes through an empty volatile asm, ordered with the wgmma's fence, issue and
 * wait asms; the code after it reads that asm's output. */
template <int N> static __device__ __forceinline__ void zp_wg_pin(float *d) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

#endif
