/* ggufmodel: GGUF files as models (see ggufmodel.h).
 *
 * Config keys read (ARCH = general.architecture): ARCH.block_count, .embedding_length,
 * .feed_forward_length, .attention.head_count, .attention.head_count_kv (default: head_count),
 * .attention.key_length and .value_length (default: embedding_length / head_count),
 * .rope.dimension_count (must be the head dim: partial rotary is refused), .context_length,
 * .rope.freq_base (default 10000), .attention.layer_norm_rms_epsilon (required),
 * .rope.scaling.type (none or absent; linear and yarn are refused), and the tokenizer's
 * eos / bos ids. The vocabulary is token_embd.weight's row count; the embeddings are tied when
 * there is no output.weight (llama.cpp writes it only when it differs); qwen2 has q/k/v biases,
 * llama may have them, qwen3 has q/k norms. Every number is range checked like config.json's.
 */
#include "engine/ggufmodel.h"

#include "arena/err.h"
#include "engine/gguf.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#define DIM_MAX    (1 << 24)
#define LAYERS_MAX 4096

typedef struct gm {
    const gguf_file *g;
    const char *arch; /* general.architecture, NUL-terminated */
    const char *path;
} gm;

/* ARCH.suffix as an integer in [lo, hi]; *found false when absent. */
static int arch_int(const gm *m, const char *suffix, int64_t lo, int64_t hi, int *v, bool *found) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch, suffix);
    int64_t x;
    int rc = gguf_get_i64(m->g, key, &x);
    if (found) *found = rc != ZP_ENOTFOUND;
    if (rc == ZP_ENOTFOUND) {
        if (found) return 0;
        return err_set(ZP_EFORMAT, "%s: missing '%s'", m->path, key);
    }
    if (rc) return rc;
    if (x < lo || x > hi)
        return err_set(ZP_EFORMAT, "%s: '%s' = %lld out of range [%lld, %lld]", m->path, key,
                       (long long)x, (long long)lo, (long long)hi);
    *v = (int)x;
    return 0;
}

static int arch_f64(const gm *m, const char *suffix, double lo, double hi, double *v,
                    bool required) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch, suffix);
    double x;
    int rc = gguf_get_f64(m->g, key, &x);
    if (rc == ZP_ENOTFOUND)
        return required ? err_set(ZP_EFORMAT, "%s: missing '%s'", m->path, key) : 0;
    if (rc) return rc;
    if (!(x >= lo && x <= hi))
        return err_set(ZP_EFORMAT, "%s: '%s' = %g out of range [%g, %g]", m->path, key, x, lo, hi);
    *v = x;
    return 0;
}

/* A token id key of the tokenizer: -1 when absent. */
static int token_id(const gm *m, const char *key, int vocab, int32_t *id) {
    uint32_t x;
    int rc = gguf_get_u32(m->g, key, &x);
    *id = -1;
    if (rc == ZP_ENOTFOUND) return 0;
    if (rc) return rc;
    if (x >= (uint32_t)vocab)
        return err_set(ZP_EFORMAT, "%s: '%s' = %u is not a token id (vocabulary of %d)", m->path,
                       key, x, vocab);
    *id = (int32_t)x;
    return 0;
}

/* The tensor name with exactly [ne0] (ne1 < 0) or [ne0, ne1] (GGUF order: ne0 is the row
 * length); NULL and no error when optional and absent. */
static int find(const gm *m, const char *name, int64_t ne0, int64_t ne1, bool optional,
                const gguf_tensor **out) {
    const gguf_tensor *t = gguf_tensor_find(m->g, name);
    *out = t;
    if (!t) return optional ? 0 : err_set(ZP_EFORMAT, "%s: tensor '%s' missing", m->path, name);
    int nd = ne1 < 0 ? 1 : 2;
    bool ok = t->ne[0] == ne0 && (nd == 1 || t->ne[1] == ne1);
    for (int i = nd; i < 4; i++)
        ok = ok && t->ne[i] == 1;
    if (!ok) {
        if (nd == 1)
            return err_set(ZP_EFORMAT,
                           "%s: tensor '%s': dims [%lld,%lld,%lld,%lld], expected [%lld]", m->path,
                           name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                           (long long)t->ne[3], (long long)ne0);
        return err_set(ZP_EFORMAT,
                       "%s: tensor '%s': dims [%lld,%lld,%lld,%lld], expected [%lld,%lld]", m->path,
                       name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                       (long long)t->ne[3], (long long)ne0, (long long)ne1);
    }
    return 0;
}

static int parse_config(model_config *c, arena *a, const gm *m) {
    memset(c, 0, sizeof *c);
    if (!strcmp(m->arch, "llama"))
        c->arch = MODEL_LLAMA;
    else if (!strcmp(m->arch, "qwen2"))
        c->arch = MODEL_QWEN2;
    else if (!strcmp(m->arch, "qwen3"))
        c->arch = MODEL_QWEN3;
    else
        return err_set(ZP_EUNSUP,
                       "%s: general.architecture '%s' is not supported (llama, qwen2, qwen3)",
                       m->path, m->arch);
    int rc;
    bool found;
    if ((rc = arch_int(m, "block_count", 1, LAYERS_MAX, &c->layers, NULL)) ||
        (rc = arch_int(m, "embedding_length", 1, DIM_MAX, &c->hidden, NULL)) ||
        (rc = arch_int(m, "feed_forward_length", 1, DIM_MAX, &c->intermediate, NULL)) ||
        (rc = arch_int(m, "attention.head_count", 1, 65536, &c->heads, NULL)) ||
        (rc = arch_int(m, "context_length", 1, INT_MAX, &c->max_pos, NULL)))
        return rc;
    c->kv_heads = c->heads;
    if ((rc = arch_int(m, "attention.head_count_kv", 1, 65536, &c->kv_heads, &found))) return rc;
    if (c->heads % c->kv_heads)
        return err_set(ZP_EFORMAT,
                       "%s: %s.attention.head_count %d is not a multiple of head_count_kv %d",
                       m->path, m->arch, c->heads, c->kv_heads);
    if ((rc = arch_int(m, "attention.key_length", 2, 65536, &c->head_dim, &found))) return rc;
    if (!found) {
        if (c->hidden % c->heads)
            return err_set(ZP_EFORMAT,
                           "%s: no %s.attention.key_length and embedding_length %d is not a "
                           "multiple of head_count %d",
                           m->path, m->arch, c->hidden, c->heads);
        c->head_dim = c->hidden / c->heads;
    }
    int vlen, rot;
    if ((rc = arch_int(m, "attention.value_length", 1, 65536, &vlen, &found))) return rc;
    if (found && vlen != c->head_dim)
        return err_set(ZP_EUNSUP, "%s: %s.attention.value_length %d differs from key_length %d",
                       m->path, m->arch, vlen, c->head_dim);
    if (c->head_dim % 2)
        return err_set(ZP_EFORMAT, "%s: head dim %d is odd (rotary needs pairs)", m->path,
                       c->head_dim);
    if ((int64_t)c->heads * c->head_dim > DIM_MAX)
        return err_set(ZP_EFORMAT, "%s: head_count * head dim too large", m->path);
    if ((rc = arch_int(m, "rope.dimension_count", 1, 65536, &rot, &found))) return rc;
    if (found && rot != c->head_dim)
        return err_set(ZP_EUNSUP,
                       "%s: %s.rope.dimension_count %d is not the head dim %d (partial rotary is "
                       "not supported)",
                       m->path, m->arch, rot, c->head_dim);
    c->rope_theta = 10000.0;
    if ((rc = arch_f64(m, "rope.freq_base", 1e-3, 1e12, &c->rope_theta, false)) ||
        (rc = arch_f64(m, "attention.layer_norm_rms_epsilon", 1e-30, 1.0, &c->rms_eps, true)))
        return rc;
    char key[128];
    const char *s;
    size_t n;
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch);
    rc = gguf_get_str(m->g, key, &s, &n);
    if (rc && rc != ZP_ENOTFOUND) return rc;
    if (!rc && !(n == 4 && !memcmp(s, "none", 4)))
        return err_set(ZP_EUNSUP, "%s: '%s' = '%.*s' is not supported (none)", m->path, key,
                       (int)(n < 64 ? n : 64), s);
    c->rope = ROPE_DEFAULT;
    c->rope_factor = c->rope_low_freq_factor = c->rope_high_freq_factor = 1.0;
    c->rope_orig_max_pos = c->max_pos;

    const gguf_tensor *t, *out;
    /* Only the row length is known here: the row count is the vocabulary. */
    t = gguf_tensor_find(m->g, "token_embd.weight");
    if (!t || t->ndim != 2 || t->ne[0] != c->hidden)
        return err_set(ZP_EFORMAT, "%s: tensor 'token_embd.weight' missing or not [%d, vocab]",
                       m->path, c->hidden);
    if (t->ne[1] > DIM_MAX)
        return err_set(ZP_EFORMAT, "%s: token_embd.weight has %lld rows", m->path,
                       (long long)t->ne[1]);
    c->vocab = (int)t->ne[1];
    if ((rc = find(m, "output.weight", c->hidden, c->vocab, true, &out))) return rc;
    c->tie_embeddings = !out;
    c->qk_norm = c->arch == MODEL_QWEN3;
    c->attn_bias = c->arch == MODEL_QWEN2 || gguf_tensor_find(m->g, "blk.0.attn_q.bias");
    c->dtype = ZP_F32;

    /* Llama-3.1-style rope scaling: llama.cpp stores the per-frequency divisors. */
    if ((rc = find(m, "rope_freqs.weight", c->head_dim / 2, -1, true, &t))) return rc;
    if (t) {
        if (t->type != GGUF_T_F32)
            return err_set(ZP_EFORMAT, "%s: rope_freqs.weight is %s, not F32", m->path,
                           gguf_type_name(t->type));
        float *f = arena_alloc(a, sizeof(float) * (size_t)(c->head_dim / 2), 64, "rope factors");
        if (!f) return ZP_ENOMEM;
        memcpy(f, t->data, sizeof(float) * (size_t)(c->head_dim / 2));
        for (int i = 0; i < c->head_dim / 2; i++)
            if (!(f[i] >= 1e-6f && f[i] <= 1e6f))
                return err_set(ZP_EFORMAT, "%s: rope_freqs.weight[%d] = %g out of range", m->path,
                               i, (double)f[i]);
        c->rope_factors = f;
    }

    int32_t eos, bos;
    if ((rc = token_id(m, "tokenizer.ggml.eos_token_id", c->vocab, &eos)) ||
        (rc = token_id(m, "tokenizer.ggml.bos_token_id", c->vocab, &bos)))
        return rc;
    if (eos >= 0) c->eos_ids[c->n_eos++] = eos;
    c->bos_id = bos;
    return 0;
}

static int gm_init(gm *m, arena *a, const gguf_file *g) {
    const char *s;
    size_t n;
    *m = (gm){.g = g, .path = g->path};
    int rc = gguf_get_str(g, "general.architecture", &s, &n);
    if (rc == ZP_ENOTFOUND)
        return err_set(ZP_EFORMAT, "%s: missing 'general.architecture'", g->path);
    if (!rc && !(m->arch = arena_strdup(a, s, n, "architecture"))) rc = ZP_ENOMEM;
    return rc;
}

int ggufmodel_config(model_config *c, arena *a, const char *path) {
    gguf_file g = {0};
    int rc = gguf_open(&g, a, path);
    if (!rc) rc = ggufmodel_parse(c, NULL, a, &g);
    gguf_close(&g);
    return rc;
}

/* ---- weights ---------------------------------------------------------------------------- */

/* Row r of a tensor of rows of ne0 elements. */
static const uint8_t *row_ptr(const gguf_tensor *t, int64_t r) {
    size_t row = (size_t)(t->ne[0] / gguf_type_block(t->type)) * gguf_type_block_bytes(t->type);
    return t->data + (size_t)r * row;
}

/* llama.cpp's converter stores each head's rows of a llama q or k projection interleaved:
 * file row h*D + 2*i + s holds Hugging Face row h*D + s*D/2 + i. */
static int64_t hf_to_file_row(int64_t r, int D) {
    int64_t h = r / D, j = r % D, s = j / (D / 2), i = j % (D / 2);
    return h * D + 2 * i + s;
}

/* Fills out from t: in place when the data can be used as it is, else a copy in the arena
 * (dequantized to f32, or rows permuted when perm_d > 0: heads of perm_d rows). */
static int take(const gm *m, arena *a, tensor *out, const gguf_tensor *t, bool two_d, int perm_d,
                const char *hf_name) {
    int64_t cols = t->ne[0], rows = two_d ? t->ne[1] : 1;
    bool plain = t->type == GGUF_T_F32 || t->type == GGUF_T_F16 || t->type == GGUF_T_BF16;
    zp_dtype dt = t->type == GGUF_T_F16 ? ZP_F16 : t->type == GGUF_T_BF16 ? ZP_BF16 : ZP_F32;
    *out = two_d ? (tensor){.dtype = dt, .ndim = 2, .shape = {rows, cols}}
                 : (tensor){.dtype = dt, .ndim = 1, .shape = {cols, 0}};
    if (!(out->name = arena_strdup(a, hf_name, strlen(hf_name), "tensor name"))) return ZP_ENOMEM;
    if (perm_d && (two_d ? rows : cols) % perm_d)
        return err_set(ZP_EFORMAT, "%s: tensor '%s' is not a whole number of heads", m->path,
                       t->name);
    if (plain && !perm_d) {
        if ((uintptr_t)t->data % zp_dtype_size(dt))
            return err_set(ZP_EFORMAT, "%s: tensor '%s': data not %zu-byte aligned", m->path,
                           t->name, zp_dtype_size(dt));
        out->data = t->data;
        return 0;
    }
    size_t esz = zp_dtype_size(dt);
    uint8_t *dst = arena_alloc_uninit(a, (size_t)rows * (size_t)cols * esz, 64, t->name);
    if (!dst) return ZP_ENOMEM;
    if (!two_d) { /* a bias or norm (F-types only): permute its elements */
        for (int64_t r = 0; r < cols; r++)
            memcpy(dst + (size_t)r * esz, t->data + (size_t)hf_to_file_row(r, perm_d) * esz, esz);
        out->data = dst;
        return 0;
    }
    for (int64_t r = 0; r < rows; r++) {
        int64_t src = perm_d ? hf_to_file_row(r, perm_d) : r;
        uint8_t *d = dst + (size_t)r * (size_t)cols * esz;
        if (plain)
            memcpy(d, row_ptr(t, src), (size_t)cols * esz);
        else {
            int rc = gguf_dequant(t->type, row_ptr(t, src), cols, (float *)d);
            if (rc) return err_prefix(rc, "%s: tensor '%s'", m->path, t->name);
        }
    }
    out->data = dst;
    return 0;
}

static int want(const gm *m, arena *a, tensor *out, const char *name, int64_t ne0, int64_t ne1,
                int perm_d, const char *hf_name) {
    const gguf_tensor *t;
    int rc = find(m, name, ne0, ne1, false, &t);
    if (rc) return rc;
    if (ne1 < 0 && t->type != GGUF_T_F32 && t->type != GGUF_T_F16 && t->type != GGUF_T_BF16)
        return err_set(ZP_EUNSUP, "%s: tensor '%s' is %s (1-D tensors must be F32, F16 or BF16)",
                       m->path, name, gguf_type_name(t->type));
    return take(m, a, out, t, ne1 >= 0, perm_d, hf_name);
}

static int load_layer(const gm *m, arena *a, const model_config *c, layer_weights *l, int i) {
    const int64_t H = c->hidden, D = c->head_dim, Q = (int64_t)c->heads * D,
                  KV = (int64_t)c->kv_heads * D, I = c->intermediate;
    /* llama.cpp permutes llama's q and k (weights and biases) for its interleaved rotary. */
    int pd = c->arch == MODEL_LLAMA ? c->head_dim : 0;
    char n[96], h[96];
    int rc = 0;
#define W(field, gg, hf, ne0, ne1, perm)                                                           \
    do {                                                                                           \
        snprintf(n, sizeof n, "blk.%d.%s", i, gg);                                                 \
        snprintf(h, sizeof h, "model.layers.%d.%s", i, hf);                                        \
        if ((rc = want(m, a, &l->field, n, ne0, ne1, perm, h))) return rc;                         \
    } while (0)
    memset(l, 0, sizeof *l);
    W(in_norm, "attn_norm.weight", "input_layernorm.weight", H, -1, 0);
    W(post_norm, "ffn_norm.weight", "post_attention_layernorm.weight", H, -1, 0);
    W(q, "attn_q.weight", "self_attn.q_proj.weight", H, Q, pd);
    W(k, "attn_k.weight", "self_attn.k_proj.weight", H, KV, pd);
    W(v, "attn_v.weight", "self_attn.v_proj.weight", H, KV, 0);
    W(o, "attn_output.weight", "self_attn.o_proj.weight", Q, H, 0);
    if (c->attn_bias) {
        W(q_bias, "attn_q.bias", "self_attn.q_proj.bias", Q, -1, pd);
        W(k_bias, "attn_k.bias", "self_attn.k_proj.bias", KV, -1, pd);
        W(v_bias, "attn_v.bias", "self_attn.v_proj.bias", KV, -1, 0);
    }
    if (c->qk_norm) {
        W(q_norm, "attn_q_norm.weight", "self_attn.q_norm.weight", D, -1, 0);
        W(k_norm, "attn_k_norm.weight", "self_attn.k_norm.weight", D, -1, 0);
    }
    W(gate, "ffn_gate.weight", "mlp.gate_proj.weight", H, I, 0);
    W(up, "ffn_up.weight", "mlp.up_proj.weight", H, I, 0);
    W(down, "ffn_down.weight", "mlp.down_proj.weight", I, H, 0);
#undef W
    return rc;
}

static int load_weights(model_weights *w, const model_config *c, arena *a, const gm *m) {
    const int64_t V = c->vocab, H = c->hidden;
    int rc;
    if ((rc = want(m, a, &w->embed, "token_embd.weight", H, V, 0, "model.embed_tokens.weight")) ||
        (rc = want(m, a, &w->final_norm, "output_norm.weight", H, -1, 0, "model.norm.weight")))
        return rc;
    if (c->tie_embeddings)
        w->lm_head = w->embed;
    else if ((rc = want(m, a, &w->lm_head, "output.weight", H, V, 0, "lm_head.weight")))
        return rc;
    w->layers = arena_alloc(a, sizeof *w->layers * (size_t)c->layers, 64, "layer weights");
    if (!w->layers) return ZP_ENOMEM;
    for (int i = 0; i < c->layers; i++)
        if ((rc = load_layer(m, a, c, &w->layers[i], i))) return rc;
    return 0;
}

int ggufmodel_parse(model_config *c, model_weights *w, arena *a, const gguf_file *g) {
    gm m;
    int rc = gm_init(&m, a, g);
    if (!rc) rc = parse_config(c, a, &m);
    if (!rc && w) {
        memset(w, 0, sizeof *w);
        if ((rc = load_weights(w, c, a, &m))) memset(w, 0, sizeof *w);
    }
    return rc;
}

int ggufmodel_weights(model_weights *w, const model_config *c, arena *a, const char *path) {
    memset(w, 0, sizeof *w);
    gguf_file g = {0};
    model_config fc;
    int rc = gguf_open(&g, a, path);
    if (rc) return rc;
    /* The file must still describe the config the caller was given (it may have changed). */
    if (!(rc = ggufmodel_parse(&fc, w, a, &g)) &&
        (fc.arch != c->arch || fc.hidden != c->hidden || fc.layers != c->layers ||
         fc.heads != c->heads || fc.kv_heads != c->kv_heads || fc.head_dim != c->head_dim ||
         fc.intermediate != c->intermediate || fc.vocab != c->vocab ||
         fc.tie_embeddings != c->tie_embeddings || fc.attn_bias != c->attn_bias))
        rc = err_set(ZP_EFORMAT, "%s: the file changed since its config was read", path);
    if (rc) {
        gguf_close(&g);
        memset(w, 0, sizeof *w);
        return rc;
    }
    w->maps[0] = g.map; /* loader_close unmaps it */
    w->map_len[0] = g.len;
    w->nfiles = g.mapped ? 1 : 0;
    return 0;
}
