/* test_loader: models written by `zipage mkmodel` (qwen3, qwen2, llama; bf16 and f32; tied
 * and not; one file and sharded) load with the right config fields and every tensor's
 * shape, dtype and data; a sharded copy loads byte-identically; config.json in the
 * transformers-5 spelling parses like the Hub spelling; generation_config.json's eos wins;
 * dummy weights (load_format = dummy) take the config's shapes. */
#include "arena/err.h"
#include "engine/loader.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp[256];
static const char *zipage;

static int mkmodel(const char *out, const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s mkmodel %s --out %s/%s", zipage, args, tmp, out);
    return system(cmd);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    REQUIRE(b && fread(b, 1, (size_t)n, f) == (size_t)n);
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static void spit(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fputs(s, f);
    fclose(f);
}

/* Replaces the first occurrence of from with to in file dir/name. */
static void edit(const char *dir, const char *name, const char *from, const char *to) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", tmp, dir, name);
    char *s = slurp(path, NULL), *p = strstr(s, from);
    REQUIRE(p);
    size_t n = strlen(s) + strlen(to) + 1;
    char *o = malloc(n);
    REQUIRE(o);
    snprintf(o, n, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    spit(path, o);
    free(s);
    free(o);
}

static void dir_of(char *out, const char *d) {
    snprintf(out, 512, "%s/%s", tmp, d);
}

static bool in_maps(const model_weights *w, const tensor *t) {
    size_t bytes = loader_tensor_bytes(t);
    for (int i = 0; i < w->nfiles; i++)
        if ((const uint8_t *)t->data >= w->maps[i] &&
            (const uint8_t *)t->data + bytes <= w->maps[i] + w->map_len[i])
            return true;
    return false;
}

/* Mean and standard deviation of a tensor's elements. */
static void stats(const tensor *t, double *mean, double *sd) {
    size_t n = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = zp_load(t->data, t->dtype, i);
        s += x, s2 += x * x;
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
}

static void check_tensor(const model_weights *w, const tensor *t, const char *name, int64_t d0,
                         int64_t d1, zp_dtype dt,
                         int kind /* 0 linear, 1 embed, 2 norm, 3 bias */) {
    CHECKF(t->data && t->name && !strcmp(t->name, name), "%s: got %s", name,
           t->name ? t->name : "(null)");
    if (!t->data) return;
    CHECKF(t->dtype == dt, "%s dtype %d", name, t->dtype);
    CHECKF(t->ndim == (d1 ? 2 : 1) && t->shape[0] == d0 && t->shape[1] == d1,
           "%s shape [%lld,%lld]", name, (long long)t->shape[0], (long long)t->shape[1]);
    CHECKF((uintptr_t)t->data % zp_dtype_size(dt) == 0, "%s misaligned", name);
    CHECKF(in_maps(w, t), "%s data outside the mappings", name);
    /* The init distributions tell tensors apart, so a pointer to the wrong bytes shows. */
    double mean, sd, want_sd = kind == 0 ? 1.0 / sqrt((double)d1) : kind == 1 ? 1.0 : 0.1;
    stats(t, &mean, &sd);
    double want_mean = kind == 2 ? 1.0 : 0.0, n = (double)d0 * (double)(d1 ? d1 : 1);
    CHECKF(fabs(mean - want_mean) < 5 * want_sd / sqrt(n) + 0.01, "%s mean %g want %g", name, mean,
           want_mean);
    CHECKF(fabs(sd / want_sd - 1) < 0.3, "%s sd %g want %g", name, sd, want_sd);
}

typedef struct mcase {
    const char *dir, *arch;
    int hidden, layers, heads, kv, hd, inter, vocab;
    bool f32, tie;
    int shards;
} mcase;

static void check_model(arena *a, const mcase *m) {
    char args[512], dir[512];
    snprintf(args, sizeof args,
             "--arch %s --hidden %d --layers %d --heads %d --kv-heads %d --head-dim %d "
             "--intermediate %d "
             "--vocab %d --seed 7 --max-pos 4096 --dtype %s%s --shards %d",
             m->arch, m->hidden, m->layers, m->heads, m->kv, m->hd, m->inter, m->vocab,
             m->f32 ? "f32" : "bf16", m->tie ? " --tie" : "", m->shards);
    REQUIRE(mkmodel(m->dir, args) == 0);
    dir_of(dir, m->dir);
    model_config c;
    int rc = loader_config(&c, a, dir);
    CHECKF(rc == 0, "%s: %s", m->dir, err_msg());
    if (rc) return;
    bool llama = !strcmp(m->arch, "llama"), qwen3 = !strcmp(m->arch, "qwen3"),
         qwen2 = !strcmp(m->arch, "qwen2");
    CHECK(c.arch == (llama ? MODEL_LLAMA : qwen3 ? MODEL_QWEN3 : MODEL_QWEN2));
    CHECK(c.hidden == m->hidden && c.layers == m->layers && c.heads == m->heads &&
          c.kv_heads == m->kv);
    CHECK(c.head_dim == m->hd && c.intermediate == m->inter && c.vocab == m->vocab &&
          c.max_pos == 4096);
    CHECK(c.rms_eps == 1e-6);
    CHECK(c.tie_embeddings == m->tie && c.attn_bias == qwen2 && c.qk_norm == qwen3);
    CHECK(c.dtype == (m->f32 ? ZP_F32 : ZP_BF16));
    CHECK(c.bos_id == 256);
    if (llama) {
        CHECK(c.rope == ROPE_LLAMA3 && c.rope_theta == 500000.0 && c.rope_factor == 8.0);
        CHECK(c.rope_low_freq_factor == 1.0 && c.rope_high_freq_factor == 4.0 &&
              c.rope_orig_max_pos == 8192);
        CHECK(c.n_eos == 2 && c.eos_ids[0] == 257 && c.eos_ids[1] == 260);
    } else {
        CHECK(c.rope == ROPE_DEFAULT && c.rope_theta == 10000.0);
        /* config.json says 258; generation_config.json's [258, 256] replaces it */
        CHECK(c.n_eos == 2 && c.eos_ids[0] == 258 && c.eos_ids[1] == 256);
    }
    model_weights w;
    rc = loader_weights(&w, &c, a, dir);
    CHECKF(rc == 0, "%s: %s", m->dir, err_msg());
    if (rc) return;
    CHECK(w.nfiles == m->shards);
    zp_dtype dt = m->f32 ? ZP_F32 : ZP_BF16;
    const int64_t H = m->hidden, Q = (int64_t)m->heads * m->hd, KV = (int64_t)m->kv * m->hd,
                  I = m->inter;
    check_tensor(&w, &w.embed, "model.embed_tokens.weight", m->vocab, H, dt, 1);
    check_tensor(&w, &w.final_norm, "model.norm.weight", H, 0, dt, 2);
    if (m->tie)
        CHECK(w.lm_head.data == w.embed.data && w.lm_head.shape[0] == m->vocab);
    else
        check_tensor(&w, &w.lm_head, "lm_head.weight", m->vocab, H, dt, 0);
    for (int l = 0; l < m->layers; l++) {
        const layer_weights *L = &w.layers[l];
        char n[128];
#define T(field, suffix, d0, d1, kind)                                                             \
    snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix),                                        \
        check_tensor(&w, &L->field, n, d0, d1, dt, kind)
        T(in_norm, "input_layernorm.weight", H, 0, 2);
        T(post_norm, "post_attention_layernorm.weight", H, 0, 2);
        T(q, "self_attn.q_proj.weight", Q, H, 0);
        T(k, "self_attn.k_proj.weight", KV, H, 0);
        T(v, "self_attn.v_proj.weight", KV, H, 0);
        T(o, "self_attn.o_proj.weight", H, Q, 0);
        T(gate, "mlp.gate_proj.weight", I, H, 0);
        T(up, "mlp.up_proj.weight", I, H, 0);
        T(down, "mlp.down_proj.weight", H, I, 0);
        if (qwen2) {
            T(q_bias, "self_attn.q_proj.bias", Q, 0, 3);
            T(k_bias, "self_attn.k_proj.bias", KV, 0, 3);
            T(v_bias, "self_attn.v_proj.bias", KV, 0, 3);
        } else
            CHECK(!L->q_bias.data && !L->k_bias.data && !L->v_bias.data);
        if (qwen3) {
            T(q_norm, "self_attn.q_norm.weight", m->hd, 0, 2);
            T(k_norm, "self_attn.k_norm.weight", m->hd, 0, 2);
        } else
            CHECK(!L->q_norm.data && !L->k_norm.data);
#undef T
    }
    loader_close(&w);
    CHECK(w.nfiles == 0);
}

/* Tensor-by-tensor byte equality of two loads (same seed, different file layout). */
static void check_same_bytes(arena *a, const char *d1, const char *d2) {
    char p1[512], p2[512];
    dir_of(p1, d1), dir_of(p2, d2);
    model_config c1, c2;
    model_weights w1, w2;
    REQUIRE(loader_config(&c1, a, p1) == 0 && loader_config(&c2, a, p2) == 0);
    REQUIRE(loader_weights(&w1, &c1, a, p1) == 0);
    REQUIRE(loader_weights(&w2, &c2, a, p2) == 0);
    CHECK(w1.nfiles == 1 && w2.nfiles > 1);
    const tensor *t1 = &w1.embed, *t2 = &w2.embed;
    size_t per_layer = sizeof(layer_weights) / sizeof(tensor);
    for (int i = -3; i < (int)(per_layer * (size_t)c1.layers); i++) {
        if (i == -3)
            t1 = &w1.embed, t2 = &w2.embed;
        else if (i == -2)
            t1 = &w1.final_norm, t2 = &w2.final_norm;
        else if (i == -1)
            t1 = &w1.lm_head, t2 = &w2.lm_head;
        else
            t1 = (const tensor *)w1.layers + i, t2 = (const tensor *)w2.layers + i;
        CHECK(!t1->data == !t2->data);
        if (!t1->data) continue;
        size_t n = loader_tensor_bytes(t1);
        CHECKF(t1->shape[0] == t2->shape[0] && t1->shape[1] == t2->shape[1] &&
                   !memcmp(t1->data, t2->data, n),
               "%s differs between %s and %s", t1->name, d1, d2);
    }
    loader_close(&w1);
    loader_close(&w2);
}

static bool same_config(const model_config *x, const model_config *y) {
    return x->arch == y->arch && x->hidden == y->hidden && x->layers == y->layers &&
           x->heads == y->heads && x->kv_heads == y->kv_heads && x->head_dim == y->head_dim &&
           x->intermediate == y->intermediate && x->vocab == y->vocab && x->max_pos == y->max_pos &&
           x->rope_theta == y->rope_theta && x->rms_eps == y->rms_eps && x->rope == y->rope &&
           x->rope_factor == y->rope_factor && x->rope_low_freq_factor == y->rope_low_freq_factor &&
           x->rope_high_freq_factor == y->rope_high_freq_factor &&
           x->rope_orig_max_pos == y->rope_orig_max_pos && x->tie_embeddings == y->tie_embeddings &&
           x->attn_bias == y->attn_bias && x->qk_norm == y->qk_norm && x->dtype == y->dtype &&
           x->n_eos == y->n_eos && !memcmp(x->eos_ids, y->eos_ids, sizeof x->eos_ids) &&
           x->bos_id == y->bos_id;
}

/* The same model described in transformers 5's spelling parses identically. */
static void check_tf5(arena *a, const char *src, const char *dst, const char *rope_from,
                      const char *rope_to) {
    char cmd[1200], p1[512], p2[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s/%s && cp -r %s/%s %s/%s", tmp, dst, tmp, src, tmp, dst);
    REQUIRE(system(cmd) == 0);
    edit(dst, "config.json", "\"torch_dtype\"", "\"dtype\"");
    edit(dst, "config.json", rope_from, rope_to);
    dir_of(p1, src), dir_of(p2, dst);
    model_config c1, c2;
    memset(&c1, 0, sizeof c1), memset(&c2, 0xAB, sizeof c2);
    REQUIRE(loader_config(&c1, a, p1) == 0);
    int rc = loader_config(&c2, a, p2);
    CHECKF(rc == 0, "%s: %s", dst, err_msg());
    CHECKF(same_config(&c1, &c2), "%s parses differently from %s", dst, src);
}

static void check_dummy_tensor(const tensor *t, const void *buf, int64_t d0, int64_t d1) {
    CHECKF(t->data == buf && t->dtype == ZP_BF16 && t->ndim == (d1 ? 2 : 1) && t->shape[0] == d0 &&
               t->shape[1] == d1,
           "dummy %s: [%lld,%lld]", t->name, (long long)t->shape[0], (long long)t->shape[1]);
}

/* Dummy weights of a directory's config: every tensor in the config's shape, bf16, in one
 * shared buffer of small values that is the same at every call; nothing mapped, so
 * loader_close only clears. */
static void check_dummy(arena *a, const char *d) {
    char p[512];
    dir_of(p, d);
    model_config c;
    model_weights w, w2;
    REQUIRE(loader_config(&c, a, p) == 0);
    REQUIRE(loader_dummy_weights(&w, &c, a) == 0 && loader_dummy_weights(&w2, &c, a) == 0);
    const void *buf = w.embed.data;
    int64_t H = c.hidden, D = c.head_dim, qd = (int64_t)c.heads * D, kd = (int64_t)c.kv_heads * D;
    CHECK(w.nfiles == 0 && (c.tie_embeddings ? w.lm_head.data == buf : !!w.lm_head.data));
    check_dummy_tensor(&w.embed, buf, c.vocab, H);
    check_dummy_tensor(&w.lm_head, buf, c.vocab, H);
    check_dummy_tensor(&w.final_norm, buf, H, 0);
    for (int l = 0; l < c.layers; l++) {
        const layer_weights *L = &w.layers[l];
        check_dummy_tensor(&L->in_norm, buf, H, 0);
        check_dummy_tensor(&L->post_norm, buf, H, 0);
        check_dummy_tensor(&L->q, buf, qd, H);
        check_dummy_tensor(&L->k, buf, kd, H);
        check_dummy_tensor(&L->v, buf, kd, H);
        check_dummy_tensor(&L->o, buf, H, qd);
        check_dummy_tensor(&L->gate, buf, c.intermediate, H);
        check_dummy_tensor(&L->up, buf, c.intermediate, H);
        check_dummy_tensor(&L->down, buf, H, c.intermediate);
        CHECK(!L->q_bias.data == !c.attn_bias && !L->q_norm.data == !c.qk_norm);
        if (c.attn_bias) check_dummy_tensor(&L->v_bias, buf, kd, 0);
        if (c.qk_norm) check_dummy_tensor(&L->k_norm, buf, D, 0);
    }
    double most = 0;
    size_t n = (size_t)c.vocab * (size_t)H;
    for (size_t i = 0; i < n; i++)
        most = fmax(most, fabs(zp_load(buf, ZP_BF16, i)));
    CHECKF(most > 0.02 && most < 0.031, "dummy values up to %g", most);
    CHECK(!memcmp(buf, w2.embed.data, n * 2));
    loader_close(&w);
    CHECK(w.nfiles == 0 && !w.layers && !w.embed.data);
}

int main(void) {
    const char *b = getenv("ZP_BUILD");
    static char zp[512];
    snprintf(zp, sizeof zp, "%s/asan/zipage", b ? b : "build");
    zipage = zp;
    if (access(zipage, X_OK)) return test_skip("zipage binary not built");
    snprintf(tmp, sizeof tmp, "/tmp/zp_test_loader.XXXXXX");
    REQUIRE(mkdtemp(tmp));
    arena a;
    REQUIRE(arena_init(&a, "test", 256u << 20) == 0);

    static const mcase cases[] = {
        {"q3", "qwen3", 64, 2, 4, 2, 32, 128, 300, false, false, 1},
        {"q3t32", "qwen3", 32, 1, 2, 1, 24, 64, 261, true, true, 1},
        {"q2", "qwen2", 64, 2, 4, 2, 16, 96, 320, false, true, 1},
        {"q2f32", "qwen2", 48, 3, 6, 3, 8, 64, 300, true, false, 3},
        {"ll", "llama", 64, 2, 4, 1, 16, 128, 400, false, false, 1},
        {"llt", "llama", 128, 1, 2, 2, 64, 256, 1000, true, true, 2},
        {"q3s", "qwen3", 64, 2, 4, 2, 32, 128, 300, false, false, 4},
    };
    size_t mark = arena_temp_mark(&a);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_model(&a, &cases[i]);
    CHECK(arena_temp_mark(&a) == mark); /* scratch released */
    check_same_bytes(&a, "q3", "q3s");

    check_dummy(&a, "q3");
    check_dummy(&a, "q2");

    /* Determinism: same arguments, same bytes; another seed, other bytes. */
    char cmd[1200];
    REQUIRE(mkmodel("q3again",
                    "--arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 32 "
                    "--intermediate 128 --vocab 300 --seed 7 --max-pos 4096 --dtype bf16") == 0);
    snprintf(cmd, sizeof cmd, "cmp -s %s/q3/model.safetensors %s/q3again/model.safetensors", tmp,
             tmp);
    CHECK(system(cmd) == 0);
    REQUIRE(mkmodel("q3seed8",
                    "--arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 32 "
                    "--intermediate 128 --vocab 300 --seed 8 --max-pos 4096") == 0);
    snprintf(cmd, sizeof cmd, "cmp -s %s/q3/model.safetensors %s/q3seed8/model.safetensors", tmp,
             tmp);
    CHECK(system(cmd) != 0);

    /* tied in config but lm_head.weight present anyway: it is used. */
    snprintf(cmd, sizeof cmd, "cp -r %s/q3 %s/q3tiedhead", tmp, tmp);
    REQUIRE(system(cmd) == 0);
    edit("q3tiedhead", "config.json", "\"tie_word_embeddings\": false",
         "\"tie_word_embeddings\": true");
    {
        char p[512];
        dir_of(p, "q3tiedhead");
        model_config c;
        model_weights w;
        REQUIRE(loader_config(&c, &a, p) == 0);
        CHECK(c.tie_embeddings);
        REQUIRE(loader_weights(&w, &c, &a, p) == 0);
        CHECK(w.lm_head.data && w.lm_head.data != w.embed.data &&
              !strcmp(w.lm_head.name, "lm_head.weight"));
        loader_close(&w);
    }

    /* transformers 5 spelling */
    check_tf5(
        &a, "ll", "ll5",
        "\"rope_scaling\": {\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
        "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},\n  "
        "\"rope_theta\": 500000.0,",
        "\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": "
        "8.0, "
        "\"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
        "\"original_max_position_embeddings\": 8192},");
    check_tf5(&a, "q3", "q35", "\"rope_scaling\": null,\n  \"rope_theta\": 10000.0,",
              "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0},");
    check_tf5(&a, "q2", "q25", "\"rope_scaling\": null,\n  \"rope_theta\": 10000.0,",
              "\"rope_parameters\": {\"rope_theta\": 10000.0, \"rope_type\": \"default\"},");

    /* Without generation_config.json, config.json's eos (an int) stands; no bos -> -1. */
    {
        char p[512];
        snprintf(cmd, sizeof cmd, "cp -r %s/q3 %s/q3nogen && rm %s/q3nogen/generation_config.json",
                 tmp, tmp, tmp);
        REQUIRE(system(cmd) == 0);
        edit("q3nogen", "config.json", "\"bos_token_id\": 256,", "");
        dir_of(p, "q3nogen");
        model_config c;
        REQUIRE(loader_config(&c, &a, p) == 0);
        CHECK(c.n_eos == 1 && c.eos_ids[0] == 258 && c.bos_id == -1);
    }
    /* Llama without generation_config.json: config.json's list stands. */
    {
        char p[512];
        snprintf(cmd, sizeof cmd, "cp -r %s/ll %s/llnogen && rm %s/llnogen/generation_config.json",
                 tmp, tmp, tmp);
        REQUIRE(system(cmd) == 0);
        edit("llnogen", "config.json", "\"eos_token_id\": [257, 260]",
             "\"eos_token_id\": [260, 257, 258]");
        dir_of(p, "llnogen");
        model_config c;
        REQUIRE(loader_config(&c, &a, p) == 0);
        CHECK(c.n_eos == 3 && c.eos_ids[0] == 260 && c.eos_ids[1] == 257 && c.eos_ids[2] == 258 &&
              c.bos_id == 256);
    }
    /* head_dim derived when absent (the qwen2 configs have none): covered by "q2" above. */

    arena_release(&a);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (!test_failures) REQUIRE(system(cmd) == 0);
    return test_done("test_loader");
}
