/* shard: what one tensor-parallel rank holds of a model (issue 16, the Megatron split).
 *
 * Of size ranks, rank r holds: query heads [q0, q0 + heads) (heads / size each) with their q_proj
 * rows (and bias); kv heads [kv0, kv0 + kv_heads): kv_heads / size each when the model has at
 * least size kv heads, else the one kv head of the rank's query heads (replicated: size a
 * multiple of kv_heads) with its k_proj / v_proj rows (and bias); the same columns of o_proj (row
 * parallel); rows [i0, i0 + inter) of gate_proj and up_proj and those columns of down_proj (row
 * parallel); vocabulary rows [v0, v0 + vocab) of the embedding and the LM head (r * V / size to
 * (r + 1) * V / size: pieces differ by at most one row). Norm weights are shared.
 * A row-parallel layer's sum over its inner dimension K is cut into ZP_TP_MAX equal segments at
 * every power-of-two size (segs = ZP_TP_MAX / size per rank; drv/backend.h be_linear.k_segs),
 * so TP 1, 2, 4 and 8 add the same products in the same order; a size that does not divide
 * ZP_TP_MAX (3, 5, 6, 7) takes one segment per rank and equals TP 1 only within rounding. At
 * TP 1 a K that 8 does not divide keeps one segment.
 * Errors name the key tensor_parallel_size and the dimension that does not divide.
 * Memory and threading: plain values, no state.
 */
#ifndef ZP_SHARD_H
#define ZP_SHARD_H

#include "engine/loader.h"

typedef struct shard {
    int rank, size;
    int q0, heads;         /* query heads */
    int kv0, kv_heads;     /* kv heads (replicated: kv_heads 1 on every rank of its group) */
    int i0, inter;         /* intermediate rows */
    int v0, vocab;         /* vocabulary rows */
    int o_segs, down_segs; /* K segments per rank of o_proj and down_proj (be_linear.k_segs) */
} shard;

/* Rank rank's shard of c over size ranks, or ZP_EINVAL naming tensor_parallel_size and what does
 * not divide (1 <= size <= ZP_TP_MAX; heads % size; kv_heads % size or size % kv_heads; the
 * intermediate size and heads * head_dim split into size * segments; at least one vocabulary row
 * per rank). */
int shard_plan(shard *s, const model_config *c, int rank, int size);

/* c as the rank sees it: heads, kv_heads and intermediate its own (the KV cache, the query cache
 * and every activation are sized from these); everything else c's. */
void shard_config(const shard *s, const model_config *c, model_config *local);

#endif
