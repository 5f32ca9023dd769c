/* attn_tiles: the prefill kernel, q-tiles, tok_tc flags and decode rows for
 * rtc_kernels/prefill.cu, prefill_wg.cu and attention.cu (see attn_tiles.h). */
#include "drv/attn_tiles.h"

#include "arena/err.h"

int attn_prefill_pick(int arch, int choice, attn_prefill_kernel *k) {
    if (choice == ATTN_PREFILL_WGMMA && arch != 90)
        return err_set(ZP_EUNSUP,
                       "key 'attention_prefill_kernel': wgmma needs an sm_90 GPU (Hopper), this "
                       "one is sm_%d; use mma or auto",
                       arch);
    if (choice == ATTN_PREFILL_WGMMA || (choice == ATTN_PREFILL_AUTO && arch == 90))
        *k = (attn_prefill_kernel){"prefill_wg.cu", "zp_attn_prefill_wg", ATTN_PREFILL_WG_SMEM};
    else
        *k = (attn_prefill_kernel){"prefill.cu", "zp_attn_prefill_partial", ATTN_PREFILL_SMEM};
    return 0;
}

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

int attn_decode_rows(const int32_t *tok_tc, int n_rows, int32_t *rows) {
    int n = 0;
    for (int t = 0; t < n_rows; t++)
        if (!tok_tc[t]) rows[n++] = t;
    return n;
}
