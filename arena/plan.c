/* plan: KV memory planning arithmetic (see plan.h). */
#include "arena/plan.h"

#include "arena/err.h"

int plan_kv(const plan_in *in, plan_out *out) {
    size_t scratch = in->compress ? in->scratch_bytes : 0;
    if (in->kv_bytes <= scratch)
        return err_set(ZP_ELIMIT, "KV memory of %zu MiB does not even hold the compression "
                       "scratch (%zu MiB): raise kv_memory_mb", in->kv_bytes >> 20, scratch >> 20);
    size_t avail = in->kv_bytes - scratch;
    int64_t conc = in->max_num_seqs;
    if (in->compress) {
        size_t per = (size_t)(in->budget_blocks + 1) * in->block_bytes + in->slot_bytes;
        int64_t fit = (int64_t)(avail / per);
        if (fit < conc) conc = fit;
        if (conc < 1)
            return err_set(ZP_ELIMIT, "KV memory of %zu MiB cannot hold one request at its "
                           "budget of %lld+1 blocks (%zu MiB): raise kv_memory_mb or lower "
                           "max_cache_blocks_per_seq", in->kv_bytes >> 20,
                           (long long)in->budget_blocks, per >> 20);
    }
    size_t slots = in->compress ? (size_t)conc * in->slot_bytes : 0;
    int64_t blocks = (int64_t)((avail - slots) / in->block_bytes);
    if (in->fixed_blocks > 0) {
        if (in->fixed_blocks > blocks)
            return err_set(ZP_ELIMIT, "num_kv_blocks %lld does not fit in kv_memory_mb (%lld "
                           "blocks fit)", (long long)in->fixed_blocks, (long long)blocks);
        blocks = in->fixed_blocks;
        if (in->compress && blocks < (in->budget_blocks + 1) * conc) {
            conc = blocks / (in->budget_blocks + 1);
            if (conc < 1)
                return err_set(ZP_ELIMIT, "num_kv_blocks %lld is less than one request's "
                               "budget of %lld+1 blocks", (long long)blocks,
                               (long long)in->budget_blocks);
        }
    }
    if (blocks > (1 << 30)) blocks = 1 << 30;
    out->num_blocks = blocks;
    out->max_concurrency = conc;
    out->total_bytes = (size_t)blocks * in->block_bytes + (in->compress ? (size_t)conc * in->slot_bytes : 0) + scratch;
    return 0;
}
