/* loader: reads a model: a GGUF file (handed to engine/ggufmodel.h) or a Hugging Face model
 * directory: config.json (Qwen3ForCausalLM,
 * Qwen2ForCausalLM, LlamaForCausalLM; Hub and transformers-5 spellings), the optional
 * generation_config.json, and the weights (model.safetensors or shards listed in
 * model.safetensors.index.json), mapped read-only and checked tensor by tensor for presence,
 * shape and dtype against the config, and for tensors sharing bytes. Errors name the file and
 * the key or tensor. loader_dummy_weights() stands in for the weights when only the shape
 * matters (benchmarks: key load_format = dummy).
 *
 * Memory: tensor tables live in the arena; weight bytes stay in the file mappings until
 * loader_close(), or, for dummy weights, in the arena. Start-up only; the result is read-only
 * and may be shared by threads.
 */
#ifndef ZP_LOADER_H
#define ZP_LOADER_H

#include "arena/arena.h"
#include "drv/dtype.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { MODEL_QWEN3, MODEL_QWEN2, MODEL_LLAMA } model_arch;
typedef enum { ROPE_DEFAULT, ROPE_LLAMA3 } rope_kind;

#define LOADER_MAX_EOS 16

typedef struct model_config {
    model_arch arch;
    int hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, max_pos;
    double rope_theta, rms_eps;
    rope_kind rope;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    const float *rope_factors; /* NULL, or head_dim/2 divisors of the rotary frequencies
                                  (GGUF rope_freqs.weight), in the config's arena */
    bool tie_embeddings, attn_bias, qk_norm;
    zp_dtype dtype; /* declared torch dtype */
    int32_t eos_ids[LOADER_MAX_EOS];
    int n_eos;
    int32_t bos_id; /* -1 when none */
} model_config;

/* One weight: dims as stored ([out, in] for linear layers; shape[1] = 0 when 1-D), data in a
 * file mapping, aligned to its element size. Each tensor carries its own dtype: a checkpoint
 * may mix BF16/F16/F32 (e.g. F32 norms), whatever config.dtype says. */
typedef struct tensor {
    const void *data;
    zp_dtype dtype;
    int ndim;
    int64_t shape[2];
    const char *name;
} tensor;

/* Bytes of a tensor's data (shape[1] is 0 for a 1-D tensor). */
static inline size_t loader_tensor_bytes(const tensor *t) {
    return (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1) * zp_dtype_size(t->dtype);
}

typedef struct layer_weights {
    tensor in_norm, post_norm;
    tensor q, k, v, o;
    tensor q_bias, k_bias, v_bias; /* data NULL unless attn_bias */
    tensor q_norm, k_norm;         /* data NULL unless qk_norm */
    tensor gate, up, down;
} layer_weights;

typedef struct model_weights {
    tensor embed, final_norm, lm_head; /* lm_head aliases embed when tied */
    layer_weights *layers;
    int nfiles;
    const uint8_t *maps[64];
    size_t map_len[64];
} model_weights;

int loader_config(model_config *c, arena *a, const char *dir);
int loader_weights(model_weights *w, const model_config *c, arena *a, const char *dir);
/* Random weights of the config's shapes, deterministic: every tensor (bf16) points into one
 * arena buffer of small values (uniform in about +-0.03), so tensors share bytes and any
 * config.json runs without its checkpoint. No file is read or mapped. */
int loader_dummy_weights(model_weights *w, const model_config *c, arena *a);
/* Unmaps the files of loader_weights (none for dummy weights) and clears w; safe on a
 * cleared w. */
void loader_close(model_weights *w);
const char *loader_arch_name(model_arch a);

#endif
