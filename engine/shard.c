/* shard: a tensor-parallel rank's share of a model (shard.h). */
#include "engine/shard.h"

#include "arena/err.h"
#include "drv/backend.h"

/* K segments per rank of a row-parallel layer of inner dimension k over size ranks: the
 * ZP_TP_MAX-way cut where size divides ZP_TP_MAX and k allows it, else one per rank. */
static int segs_of(int k, int size) {
    if (ZP_TP_MAX % size || k % ZP_TP_MAX) return 1;
    return ZP_TP_MAX / size;
}

int shard_plan(shard *s, const model_config *c, int rank, int size) {
    if (size < 1 || size > ZP_TP_MAX || rank < 0 || rank >= size)
        return err_set(ZP_EINVAL, "tensor_parallel_size %d (rank %d): must be 1..%d", size, rank,
                       ZP_TP_MAX);
    if (c->heads % size)
        return err_set(ZP_EINVAL,
                       "tensor_parallel_size %d does not divide the model's %d attention heads",
                       size, c->heads);
    if (c->kv_heads % size && size % c->kv_heads)
        return err_set(ZP_EINVAL,
                       "tensor_parallel_size %d: the model's %d kv heads neither split over the "
                       "ranks nor replicate evenly (one must divide the other)",
                       size, c->kv_heads);
    int qk = c->heads * c->head_dim, o_segs = segs_of(qk, size),
        d_segs = segs_of(c->intermediate, size);
    if (size > 1 && ZP_TP_MAX % size == 0 && (qk % ZP_TP_MAX || c->intermediate % ZP_TP_MAX))
        return err_set(ZP_EINVAL,
                       "tensor_parallel_size %d: heads x head_dim (%d) and intermediate_size (%d) "
                       "must be multiples of %d (the row-parallel layers' fixed segments)",
                       size, qk, c->intermediate, ZP_TP_MAX);
    if (c->intermediate % size)
        return err_set(ZP_EINVAL, "tensor_parallel_size %d does not divide intermediate_size %d",
                       size, c->intermediate);
    if (c->vocab < size)
        return err_set(ZP_EINVAL, "tensor_parallel_size %d exceeds the vocabulary (%d)", size,
                       c->vocab);
    s->rank = rank, s->size = size;
    s->heads = c->heads / size, s->q0 = rank * s->heads;
    if (c->kv_heads >= size) {
        s->kv_heads = c->kv_heads / size, s->kv0 = rank * s->kv_heads;
    } else { /* the kv head of the rank's query heads, which all lie in its group */
        s->kv_heads = 1, s->kv0 = s->q0 / (c->heads / c->kv_heads);
    }
    s->inter = c->intermediate / size, s->i0 = rank * s->inter;
    s->v0 = (int)((long)rank * c->vocab / size);
    s->vocab = (int)((long)(rank + 1) * c->vocab / size) - s->v0;
    s->o_segs = o_segs, s->down_segs = d_segs;
    return 0;
}

void shard_config(const shard *s, const model_config *c, model_config *local) {
    *local = *c;
    local->heads = s->heads;
    local->kv_heads = s->kv_heads;
    local->intermediate = s->inter;
}
