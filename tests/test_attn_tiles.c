/* attn_prefill_tiles (drv/attn_tiles.c), the host side of the tensor-core prefill attention:
 * a fixed step (decode rows, prompts of 37 and 5 rows, a marked padding row, one sequence in
 * two runs) against its expected tiles, then random steps at GQA 1, 2, 4 and 8: every marked
 * row of a real sequence in exactly one tile and no other row, tiles of 1..64/G consecutive
 * rows of one sequence, cut from each run's first row, listed in reverse row order, tok_tc
 * returned as exactly the covered rows and attn_decode_rows listing exactly the others in
 * order. attn_prefill_splits: the splits of the prefill chunk covering the longest row.
 * attn_prefill_pick: auto is wgmma on sm_90 only, mma
 * everywhere, wgmma elsewhere refused naming the key. */
#include "arena/err.h"
#include "drv/attn_tiles.h"
#include "tests/testlib.h"

#include <string.h>

enum { MAXR = 700 };

static void fixed_step(void) {
    /* rows: 0 decode (seq 0), 1..37 prompt of seq 1, 38 padding (marked), 39..43 prompt of
     * seq 2, 44 decode (seq 3), 45..47 more prompt rows of seq 1 (a second run) */
    int32_t seq[48], tc[48], qt[2 * 48];
    for (int t = 0; t < 48; t++) {
        seq[t] = t == 0 ? 0 : t <= 37 ? 1 : t == 38 ? -1 : t <= 43 ? 2 : t == 44 ? 3 : 1;
        tc[t] = t != 0 && t != 44;
    }
    int n = attn_prefill_tiles(tc, seq, 48, 4, qt);
    static const int32_t want[][2] = {{45, 3}, {39, 5}, {33, 5}, {17, 16}, {1, 16}};
    CHECKF(n == 5, "%d tiles", n);
    for (int i = 0; i < 5 && i < n; i++)
        CHECKF(qt[2 * i] == want[i][0] && qt[2 * i + 1] == want[i][1], "tile %d = {%d, %d}", i,
               qt[2 * i], qt[2 * i + 1]);
    for (int t = 0; t < 48; t++)
        CHECKF(tc[t] == (t != 0 && t != 38 && t != 44), "tok_tc[%d] = %d", t, tc[t]);
    int32_t rows[48];
    int nd = attn_decode_rows(tc, 48, rows);
    CHECKF(nd == 3 && rows[0] == 0 && rows[1] == 38 && rows[2] == 44, "decode rows: %d", nd);
}

static void random_step(unsigned long long *rs, int gqa) {
    int32_t seq[MAXR], tc[MAXR], in[MAXR], qt[2 * MAXR], cover[MAXR];
    int n_rows = 1 + (int)(test_rand_u64(rs) % MAXR), t = 0;
    while (t < n_rows) { /* runs of rows of random sequences, marked or not */
        int len = 1 + (int)(test_rand_u64(rs) % 150), s = (int)(test_rand_u64(rs) % 6) - 1;
        int mark = (int)(test_rand_u64(rs) % 3);
        for (int i = 0; i < len && t < n_rows; i++, t++)
            seq[t] = s, in[t] = tc[t] = mark == 2 ? (int)(test_rand_u64(rs) % 2) * 7 : mark;
    }
    int n = attn_prefill_tiles(tc, seq, n_rows, gqa, qt), Q = attn_tile_rows(gqa);
    memset(cover, 0, sizeof cover);
    CHECK(n >= 0 && n <= n_rows);
    for (int i = 0; i < n; i++) {
        int f = qt[2 * i], c = qt[2 * i + 1];
        CHECKF(f >= 0 && c >= 1 && c <= Q && f + c <= n_rows, "tile {%d, %d}", f, c);
        if (!(f >= 0 && c >= 1 && f + c <= n_rows)) continue;
        for (int r = f; r < f + c; r++) {
            cover[r]++;
            CHECKF(seq[r] == seq[f], "tile {%d, %d} spans sequences", f, c);
        }
        if (i > 0) CHECKF(f < qt[2 * i - 2], "tiles not in reverse row order");
        /* cut from the run's first row: a tile starts a run or follows a full tile */
        int starts_run = f == 0 || !in[f - 1] || seq[f - 1] != seq[f];
        CHECKF(starts_run || (i + 1 < n && qt[2 * i + 2] + qt[2 * i + 3] == f &&
                              qt[2 * i + 3] == Q),
               "tile {%d, %d} does not start a run or follow a full tile", f, c);
    }
    int32_t rows[MAXR];
    int nd = attn_decode_rows(tc, n_rows, rows), k = 0;
    CHECK(nd >= 0 && nd <= n_rows);
    for (int r = 0; r < n_rows; r++) {
        int want = in[r] && seq[r] >= 0;
        CHECKF(cover[r] == want, "row %d covered %d times (marked %d, seq %d)", r, cover[r], in[r],
               seq[r]);
        CHECKF(tc[r] == want, "tok_tc[%d] = %d, want %d", r, tc[r], want);
        if (!want) { /* the next listed decode row */
            CHECKF(k < nd && rows[k] == r, "decode row %d: listed %d", r, k < nd ? rows[k] : -1);
            k++;
        }
    }
    CHECKF(k == nd, "%d decode rows listed, %d uncovered", nd, k);
}

static void splits(void) {
    static const int32_t v[][3] = {{1, 4096, 1},    {4096, 4096, 1}, {4097, 4096, 2},
                                   {8192, 4096, 2}, {8193, 4096, 3}, {100, 64, 2}};
    for (int i = 0; i < 6; i++)
        CHECKF(attn_prefill_splits(v[i][0], v[i][1]) == v[i][2], "attn_prefill_splits(%d, %d) = %d",
               v[i][0], v[i][1], attn_prefill_splits(v[i][0], v[i][1]));
}

static void pick(void) {
    attn_prefill_kernel k;
    CHECK(attn_prefill_pick(90, ATTN_PREFILL_AUTO, &k) == 0 &&
          !strcmp(k.fn, "zp_attn_prefill_wg") && !strcmp(k.file, "prefill_wg.cu") &&
          k.smem == ATTN_PREFILL_WG_SMEM);
    CHECK(attn_prefill_pick(90, ATTN_PREFILL_WGMMA, &k) == 0 && k.smem == ATTN_PREFILL_WG_SMEM);
    CHECK(attn_prefill_pick(90, ATTN_PREFILL_MMA, &k) == 0 &&
          !strcmp(k.fn, "zp_attn_prefill_partial") && k.smem == ATTN_PREFILL_SMEM);
    static const int others[] = {80, 86, 89, 100, 120};
    for (int i = 0; i < 5; i++) {
        CHECK(attn_prefill_pick(others[i], ATTN_PREFILL_AUTO, &k) == 0 &&
              !strcmp(k.file, "prefill.cu"));
        CHECK(attn_prefill_pick(others[i], ATTN_PREFILL_MMA, &k) == 0 &&
              !strcmp(k.file, "prefill.cu"));
        CHECKF(attn_prefill_pick(others[i], ATTN_PREFILL_WGMMA, &k) == ZP_EUNSUP &&
                   strstr(err_msg(), "attention_prefill_kernel"),
               "%s", err_msg());
    }
}

int main(void) {
    pick();
    fixed_step();
    splits();
    unsigned long long rs = 0x7111e5;
    static const int gqas[] = {1, 2, 4, 8};
    for (int i = 0; i < 400; i++) random_step(&rs, gqas[i % 4]);
    return test_done("attn_tiles");
}
