/* plan: the memory planner shared by every backend. Given the bytes the KV side may use
 * and the per-block / per-slot / scratch sizes, it decides how many query-cache slots
 * (max_concurrency) and KV blocks to carve (spec section 8):
 *   max_concurrency = min(max_num_seqs, avail / ((M+1) * block_bytes + slot_bytes))
 *   num_blocks      = (avail - max_concurrency * slot_bytes) / block_bytes
 * where avail is the KV budget minus the compression scratch. Without compression there
 * are no slots and max_concurrency = max_num_seqs. Pure arithmetic, no state. */
#ifndef ZP_PLAN_H
#define ZP_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct plan_in {
    size_t kv_bytes;      /* memory for KV blocks + query slots + compression scratch */
    size_t block_bytes;   /* one block, all layers (K, V and carried scores) */
    size_t slot_bytes;    /* one query-cache slot, all layers */
    size_t scratch_bytes; /* compression scratch for one batch of jobs */
    int64_t max_num_seqs;
    int64_t budget_blocks;   /* M */
    int64_t fixed_blocks;    /* > 0: exact block count requested by the user */
    bool compress;
} plan_in;

typedef struct plan_out {
    int64_t num_blocks, max_concurrency;
    size_t total_bytes; /* blocks + slots + scratch */
} plan_out;

/* Fails with ZP_ELIMIT (message naming kv_memory_mb / num_kv_blocks) when not even one
 * request at full budget fits. */
int plan_kv(const plan_in *in, plan_out *out);

#endif
