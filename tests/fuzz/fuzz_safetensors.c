/* fuzz_safetensors: the safetensors header parser and weight checks (engine/loader.c,
 * loader_weights). The input is a whole model.safetensors file: 8-byte little-endian header
 * length, JSON header, data. The config is fixed (written once): the tiny qwen3 model of the
 * seed corpus (hidden 8, 1 layer, 2 heads, 1 kv head, head_dim 4, intermediate 16, vocab 261),
 * so a mutated header can load all the way. Any header is parsed in full (dtypes, shapes,
 * data_offsets, overlaps, duplicate names) before tensors are looked up.
 *
 * Oracle beyond "no crash, no leak, no hang": loading fails with a negative code and a
 * message, or every tensor handed out lies inside the file's data and no two share a byte
 * (lm_head may be embed itself when tied).
 */
#include "arena/err.h"
#include "engine/loader.h"
#include "tests/fuzz/fuzz_util.h"

static const char config_json[] =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"hidden_size\": 8, \"num_hidden_layers\": 1,"
    " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 4,"
    " \"intermediate_size\": 16, \"vocab_size\": 261, \"max_position_embeddings\": 4096,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"eos_token_id\": 258}";

static model_config cfg;

/* Every tensor of w in one list (those the config asks for). */
static int all_tensors(const model_weights *w, const tensor **out) {
    int n = 0;
    out[n++] = &w->embed, out[n++] = &w->final_norm, out[n++] = &w->lm_head;
    for (int i = 0; i < cfg.layers; i++) {
        const layer_weights *l = &w->layers[i];
        const tensor *ts[] = {&l->in_norm, &l->post_norm, &l->q,      &l->k,     &l->v,
                              &l->o,       &l->q_norm,    &l->k_norm, &l->gate,  &l->up,
                              &l->down,    &l->q_bias,    &l->k_bias, &l->v_bias};
        for (size_t j = 0; j < sizeof ts / sizeof ts[0]; j++)
            if (ts[j]->data) out[n++] = ts[j];
    }
    return n;
}

static void check_loaded(const model_weights *w) {
    const tensor *t[64];
    int n = all_tensors(w, t);
    const uint8_t *lo = w->maps[0], *hi = w->maps[0] + w->map_len[0];
    for (int i = 0; i < n; i++) {
        const uint8_t *p = t[i]->data;
        size_t bytes = loader_tensor_bytes(t[i]);
        if (p < lo + 8 || p > hi || bytes > (size_t)(hi - p)) {
            fprintf(stderr, "tensor %s outside the file\n", t[i]->name);
            abort();
        }
        for (int j = 0; j < i; j++) {
            const uint8_t *q = t[j]->data;
            size_t qb = loader_tensor_bytes(t[j]);
            bool tied = t[i] == &w->lm_head && p == w->embed.data && cfg.tie_embeddings;
            if (!tied && bytes && qb && p < q + qb && q < p + bytes) {
                fprintf(stderr, "tensors %s and %s overlap\n", t[i]->name, t[j]->name);
                abort();
            }
        }
    }
}

/* A fresh arena per input (tensor names and layer tables are permanent allocations); a
 * MAP_NORESERVE reservation costs only the pages an input touches. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    arena A;
    if (!cfg.hidden) {
        fuzz_write("config.json", config_json, sizeof config_json - 1);
        if (arena_init(&A, "fuzz", 1u << 20) || loader_config(&cfg, &A, fuzz_dir())) {
            fprintf(stderr, "fuzz_safetensors: setup: %s\n", err_msg());
            abort();
        }
        arena_release(&A);
    }
    fuzz_write("model.safetensors", data, size);
    err_set(0, "%s", "");
    if (arena_init(&A, "fuzz", 64u << 20)) abort();
    model_weights w;
    int rc = loader_weights(&w, &cfg, &A, fuzz_dir());
    if (rc) {
        if (rc > 0 || !err_msg()[0]) abort(); /* an error always has a code and a message */
    } else {
        check_loaded(&w);
        loader_close(&w);
    }
    if (arena_temp_mark(&A) != 0) abort(); /* temporary memory all given back */
    arena_release(&A);
    return 0;
}
