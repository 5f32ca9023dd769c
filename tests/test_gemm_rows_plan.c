/* The decode-row GEMM's plan (drv/gemm_abi.h), on the CPU: which weight shapes the kernel takes
 * (whole 128-row tiles, whole 64-wide stages), the variant per launch size, the shared memory
 * of each variant (the first two twice per SM, the third once, within Hopper's 227 KiB), and
 * how K is split: a power of two up to 8 (a portable cluster), every split whole stages of at
 * least 256, the largest with the 64-row tiles times the splits within two CTAs per
 * multiprocessor; the splits of the Qwen3-1.7B and -8B layers on a 132-SM Hopper. The kernel
 * itself is checked against its CPU twin in test_cuda_gemm_rows. */
#include "drv/gemm_abi.h"
#include "tests/testlib.h"

static int ok_split(int n, int k, int sms, int s) {
    return s <= GEMM_ROWS_MAX_SPLITS && (n / 64) * s <= 2 * sms && k % (s * GEMM_ROWS_BK) == 0 &&
           k / s >= GEMM_ROWS_MIN_KSPLIT;
}

static void check_splits(int n, int k, int sms) {
    int s = gemm_rows_splits(n, k, sms);
    CHECKF(s >= 1 && s <= GEMM_ROWS_MAX_SPLITS && !(s & (s - 1)), "%d x %d: %d splits", n, k, s);
    CHECKF(s == 1 || ok_split(n, k, sms, s), "%d x %d on %d SMs: %d splits break a rule", n, k, sms,
           s);
    CHECKF(!ok_split(n, k, sms, 2 * s), "%d x %d on %d SMs: %d splits, more would fit", n, k, sms,
           s);
}

int main(void) {
    CHECK(gemm_rows_fits(4096, 2048));
    CHECK(gemm_rows_fits(151936, 2048)); /* Qwen3's vocabulary: 1,187 tiles of 128 */
    CHECK(!gemm_rows_fits(4096 + 64, 2048));
    CHECK(!gemm_rows_fits(4096, 2048 + 32));
    CHECK(!gemm_rows_fits(0, 2048));
    CHECK(gemm_rows_variant(1) == 0 && gemm_rows_variant(64) == 0 && gemm_rows_variant(65) == 1 &&
          gemm_rows_variant(128) == 1 && gemm_rows_variant(129) == 2 && gemm_rows_variant(512) == 2);
    for (int v = 0; v < GEMM_ROWS_VARIANTS; v++) {
        CHECKF(gemm_rows_tm(v) == 64 * gemm_rows_tiles(v) && gemm_rows_bn(v) % 64 == 0,
               "variant %d: tiles", v);
        /* the f32 epilogue tile [token rows][weight rows + 4] fits the ring */
        CHECKF((size_t)gemm_rows_tm(v) * (size_t)(gemm_rows_bn(v) + 4) * 4 + 1024 <=
                   gemm_rows_smem(v),
               "variant %d: the epilogue tile does not fit", v);
    }
    CHECK(2 * gemm_rows_smem(0) <= 228 * 1024 && 2 * gemm_rows_smem(1) <= 228 * 1024);
    CHECK(gemm_rows_smem(2) <= 227 * 1024);
    /* {n, k, splits on 132 SMs}: Qwen3-1.7B qkv, o, gate_up, down, lm_head; Qwen3-8B */
    static const int want[][3] = {{4096, 2048, 4},    {2048, 2048, 8}, {12288, 2048, 1},
                                  {2048, 6144, 8},    {151936, 2048, 1}, {6144, 4096, 2},
                                  {4096, 4096, 4},    {24576, 4096, 1}, {4096, 12288, 4},
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
