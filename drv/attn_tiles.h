/* attn_tiles: the host side of rtc_kernels/prefill.cu and prefill_wg.cu (tensor-core attention
 * for prefill rows): picks which of the two kernels a GPU runs, cuts a step's prefill rows into
 * the q-tiles the kernel takes, sets the tok_tc flags of the rows they cover and lists the
 * other rows for the decode kernel (zp_attn_partial or zp_attn_decode_mma), so each row's
 * partials have exactly one writer and one zp_attn_merge finishes every row.
 *
 * Invariants: a tile is {first row, n} with 1 <= n <= attn_tile_rows(gqa) consecutive step
 * rows of one sequence; every flagged row lies in exactly one tile and no other row does.
 * Which rows go through the prefill kernel is the caller's choice and must depend on the row
 * alone (e.g. "a prompt token": cache index < the request's prompt length), never on the
 * batch: the two kernels round differently. How the rows are tiled is free: a row's result
 * does not depend on its tile (prefill.cu, BATCH INVARIANCE), only the speed does.
 * Memory: the caller's arrays; nothing is allocated. Threading: no state.
 */
#ifndef ZP_ATTN_TILES_H
#define ZP_ATTN_TILES_H

#include <stdint.h>

/* Query rows (token row x query head of one kv head) per CTA: ZP_PF_M in prefill.cu. */
#define ATTN_PREFILL_MROWS 64

/* Dynamic shared memory of zp_attn_prefill_partial (ZP_PF_SMEM in prefill.cu, which checks the
 * two agree): its K/V ring, 64 KiB for every head dim. Above the 48 KiB a launch may take
 * without asking, so whoever loads the kernel sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
 * to it once, and every launch passes it. */
#define ATTN_PREFILL_SMEM 65536

/* The same for rtc_kernels/prefill_wg.cu's zp_attn_prefill_wg (ZP_WG_SMEM there, sm_90 only):
 * 1 KiB of slack to align its tiles to 1,024 bytes, the 16 KiB Q tile and 2 stages of 16 KiB K
 * and V sub-tiles, for every head dim. */
#define ATTN_PREFILL_WG_SMEM 82944

/* The two prefill kernels take the same arguments, grid and q-tiles, and write the same
 * partials; they differ in rounding, so a device runs one of them for every prompt row. */
/* conf attention_prefill_kernel's choices, in its order */
enum { ATTN_PREFILL_AUTO, ATTN_PREFILL_MMA, ATTN_PREFILL_WGMMA };
typedef struct attn_prefill_kernel {
    const char *file, *fn; /* kernel source and function */
    int smem;              /* its dynamic shared memory: ATTN_PREFILL_SMEM or _WG_SMEM */
} attn_prefill_kernel;

/* The kernel a GPU of sm_<arch> runs for choice (ATTN_PREFILL_*): AUTO is wgmma on sm_90 and
 * mma.sync elsewhere; WGMMA on another architecture fails (ZP_EUNSUP, naming the key). */
int attn_prefill_pick(int arch, int choice, attn_prefill_kernel *k);

/* Token rows per q-tile for gqa (1, 2, 4 or 8) query heads per kv head: 64, 32, 16 or 8. */
static inline int attn_tile_rows(int gqa) {
    return ATTN_PREFILL_MROWS / gqa;
}

/* The prefill kernels' grid x for a step whose longest row attends max_kv_len keys: its
 * splits of pchunk (attention_prefill_chunk) keys. The partials keep the decode rows' stride
 * n_split (splits of attention_chunk <= pchunk keys); the kernel marks the splits past its
 * grid empty, so a 4,096-token prompt runs 1 split of CTAs instead of 8. */
static inline int attn_prefill_splits(int max_kv_len, int pchunk) {
    return max_kv_len > pchunk ? (max_kv_len + pchunk - 1) / pchunk : 1;
}

/* Builds the q-tiles of a step of n_rows token rows. tok_tc [n_rows]: on entry nonzero marks
 * the rows to run through zp_attn_prefill_partial; on return 1 exactly for the rows the tiles
 * cover (a marked row with tok_seq < 0, a padding row, is cleared) and 0 elsewhere. A run of
 * consecutive marked rows of one sequence is cut into tiles of attn_tile_rows(gqa) rows from
 * its first row (the last tile of a run may be shorter). qtile [2 * n_rows] gets
 * {first row, n} per tile, listed in reverse row order: a prompt's late rows attend the most
 * keys, so their CTAs start first and the short ones fill the tail. Returns the tile count
 * (<= n_rows). */
int attn_prefill_tiles(int32_t *tok_tc, const int32_t *tok_seq, int n_rows, int gqa,
                       int32_t *qtile);

/* The rows attn_prefill_tiles left unflagged (tok_tc[t] == 0), in order, into rows: the
 * decode kernel's grid of a step with q-tiles, so a prompt row costs no decode CTA. Returns
 * their count (0 .. n_rows). */
int attn_decode_rows(const int32_t *tok_tc, int n_rows, int32_t *rows);

#endif
