/* attn_tiles: q-tiles and tok_tc flags for rtc_kernels/prefill.cu (see attn_tiles.h). */
#include "drv/attn_tiles.h"

int attn_prefill_tiles(int32_t *tok_tc, const int32_t *tok_seq, int n_rows, int gqa,
                       int32_t *qtile) {
    const int qt = attn_tile_rows(gqa);
    int n = 0;
    for (int t = 0; t < n_rows;) {
        if (!tok_tc[t] || tok_seq[t] < 0) {
            tok_tc[t++] = 0;
            continue;
        }
        /* a run: consecutive marked rows of sequence tok_seq[t], cut every qt rows */
        const int seq = tok_seq[t];
        int u = t;
        while (u < n_rows && tok_tc[u] && tok_seq[u] == seq) {
            tok_tc[u] = 1;
            if (++u - t == qt) break;
        }
        qtile[2 * n] = t, qtile[2 * n + 1] = u - t, n++;
        t = u;
    }
    for (int i = 0, j = n - 1; i < j; i++, j--) { /* reverse row order: late rows first */
        int32_t f = qtile[2 * i], c = qtile[2 * i + 1];
        qtile[2 * i] = qtile[2 * j], qtile[2 * i + 1] = qtile[2 * j + 1];
        qtile[2 * j] = f, qtile[2 * j + 1] = c;
    }
    return n;
}
