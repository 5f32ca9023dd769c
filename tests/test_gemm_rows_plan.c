/* The decode-row GEMM's plan (drv/gemm_abi.h), on the CPU: which weight shapes the kernel takes
 * (whole 128 x 64 tiles) and how K is split: a power of two up to 8, every split whole stages of
 * at least 256, doubled exactly while output tiles x splits leave multiprocessors idle; the
 * splits of the Qwen3-1.7B and -8B layers on a 132-SM Hopper as docs/GPU.md states them; the
 * shared memory of both row tiles within what one SM gives two CTAs (2 x 96 KiB). The kernel
 * itself is checked against its CPU twin in test_cuda_gemm_rows. */
#include "drv/gemm_abi.h"
#include "tests/testlib.h"

static void check_splits(int n, int k, int sms) {
    int s = gemm_rows_splits(n, k, sms), tiles = n / GEMM_ROWS_BN;
    CHECKF(s >= 1 && s <= GEMM_ROWS_MAX_SPLITS && !(s & (s - 1)), "%d x %d: %d splits", n, k, s);
    CHECKF(k % (s * GEMM_ROWS_BK) == 0, "%d x %d: %d splits leave a partial stage", n, k, s);
    CHECKF(s == 1 || k / s >= GEMM_ROWS_MIN_KSPLIT, "%d x %d: split of %d", n, k, k / s);
    /* maximal: one more doubling would break a rule or fill the machine already */
    int more = s < GEMM_ROWS_MAX_SPLITS && tiles * s < sms && k % (4 * s * GEMM_ROWS_BK) == 0 &&
               k / (2 * s) >= GEMM_ROWS_MIN_KSPLIT;
    CHECKF(!more, "%d x %d on %d SMs: %d splits, more would fit", n, k, sms, s);
}

int main(void) {
    CHECK(gemm_rows_fits(4096, 2048));
    CHECK(gemm_rows_fits(151936, 2048)); /* Qwen3's vocabulary: 1,187 tiles */
    CHECK(!gemm_rows_fits(4096 + 64, 2048));
    CHECK(!gemm_rows_fits(4096, 2048 + 32));
    CHECK(!gemm_rows_fits(0, 2048));
    CHECK(gemm_rows_bm(1) == 64 && gemm_rows_bm(64) == 64 && gemm_rows_bm(65) == 128);
    CHECK(gemm_rows_smem(64) <= 114 * 1024 && gemm_rows_smem(128) <= 114 * 1024);
    /* {n, k, splits on 132 SMs}: Qwen3-1.7B qkv, o, gate_up, down, lm_head; Qwen3-8B */
    static const int want[][3] = {{4096, 2048, 8},   {2048, 2048, 8},  {12288, 2048, 2},
                                  {2048, 6144, 8},   {151936, 2048, 1}, {6144, 4096, 4},
                                  {4096, 4096, 8},   {24576, 4096, 1}, {4096, 12288, 8},
                                  {1024, 1024, 4}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECKF(gemm_rows_splits(want[i][0], want[i][1], 132) == want[i][2],
               "%d x %d: %d splits, want %d", want[i][0], want[i][1],
               gemm_rows_splits(want[i][0], want[i][1], 132), want[i][2]);
    for (int sms = 1; sms <= 264; sms += 7)
        for (int n = 128; n <= 32768; n += 128 * 5)
            for (int k = 64; k <= 16384; k += 64 * 3) check_splits(n, k, sms);
    return test_done("gemm_rows_plan");
}
