/* test_loader_fuzz: broken model directories give a clear error (right code, message naming
 * the file and the tensor or key) and never crash: truncated files, garbage headers, header
 * lengths past the end, wrong shapes and dtypes, missing or duplicated tensors, bad or
 * overlapping offsets, misaligned data, inconsistent shard indexes, bad config.json; then a
 * seeded mutation fuzzer over safetensors header bytes and config.json text (run under
 * ASan+UBSan). tests/fuzz/fuzz_safetensors.c and fuzz_config.c are the coverage-guided
 * complements. */
#include "arena/err.h"
#include "engine/loader.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp[256], base[300], work[300];
static arena A;

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    REQUIRE(b && fread(b, 1, (size_t)n, f) == (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spit(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    REQUIRE(fwrite(p, 1, n, f) == n);
    fclose(f);
}

/* work := fresh copy of base (config, generation config, model.safetensors). */
static void reset_work(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", work, base, work);
    REQUIRE(system(cmd) == 0);
}

static void rm_work(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", work, name);
    REQUIRE(unlink(path) == 0);
}

/* Loads config + weights from work; returns the first error code (0 when both load). */
static int load_work(void) {
    model_config c;
    model_weights w;
    int rc = loader_config(&c, &A, work);
    if (rc) return rc;
    rc = loader_weights(&w, &c, &A, work);
    if (!rc) loader_close(&w);
    return rc;
}

#define EXPECT(code, ...)                                                                          \
    do {                                                                                           \
        int rc_ = load_work();                                                                     \
        CHECKF(rc_ == (code), "got %d (%s), want %d", rc_, rc_ ? err_msg() : "ok", code);          \
        const char *subs_[] = {"", __VA_ARGS__};                                                   \
        for (size_t i_ = 0; i_ < sizeof subs_ / sizeof subs_[0]; i_++)                             \
            CHECKF(strstr(err_msg(), subs_[i_]), "message '%s' lacks '%s'", err_msg(), subs_[i_]); \
    } while (0)

/* ---- a safetensors writer with knobs for breaking things ---- */

typedef struct st_t {
    char name[96];
    const char *dtype;
    int esize, ndim;
    int64_t shape[2];
    int file;
} st_t;

/* The base model: qwen3, hidden 32, 2 layers, 2 heads, 1 kv head, head_dim 16, inter 64,
 * vocab 261, bf16, untied. */
enum { H = 32, LAYERS = 2, Q = 32, KV = 16, D = 16, I = 64, V = 261 };

static void add(st_t *t, int *n, const char *name, int64_t d0, int64_t d1) {
    st_t *x = &t[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->dtype = "BF16", x->esize = 2, x->ndim = d1 ? 2 : 1;
    x->shape[0] = d0, x->shape[1] = d1;
}

static int base_list(st_t *t) {
    int n = 0;
    add(t, &n, "model.embed_tokens.weight", V, H);
    for (int l = 0; l < LAYERS; l++) {
        char p[96];
#define L(s, d0, d1) snprintf(p, sizeof p, "model.layers.%d.%s", l, s), add(t, &n, p, d0, d1)
        L("input_layernorm.weight", H, 0);
        L("post_attention_layernorm.weight", H, 0);
        L("self_attn.q_proj.weight", Q, H);
        L("self_attn.k_proj.weight", KV, H);
        L("self_attn.v_proj.weight", KV, H);
        L("self_attn.o_proj.weight", H, Q);
        L("self_attn.q_norm.weight", D, 0);
        L("self_attn.k_norm.weight", D, 0);
        L("mlp.gate_proj.weight", I, H);
        L("mlp.up_proj.weight", I, H);
        L("mlp.down_proj.weight", H, I);
#undef L
    }
    add(t, &n, "model.norm.weight", H, 0);
    add(t, &n, "lm_head.weight", V, H);
    return n;
}

static int find(st_t *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return i;
    REQUIRE(!"tensor not in list");
    return -1;
}

typedef struct wopts {
    int bad_size_idx; /* tensor whose data_offsets span one element too few, or -1 */
    int past_end_idx; /* tensor whose end offset is past the data, or -1 */
    bool odd_header;  /* header length odd: data misaligned */
    int overlap_idx;  /* tensor whose data_offsets move back one element into the previous
                       * tensor's bytes (same length), or -1 */
    int alias_idx;    /* tensor whose data_offsets are the previous tensor's (same length), or
                       * -1 */
} wopts;

static void write_file(const char *name, const st_t *t, int n, int file, wopts o) {
    char *h = malloc(65536);
    REQUIRE(h);
    size_t len = 0;
    uint64_t off = 0;
    len += (size_t)sprintf(h + len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        if (t[i].file != file) continue;
        uint64_t bytes = (uint64_t)t[i].esize * (uint64_t)t[i].shape[0] *
                         (uint64_t)(t[i].ndim == 2 ? t[i].shape[1] : 1);
        uint64_t begin = off, end = off + bytes - (i == o.bad_size_idx ? (uint64_t)t[i].esize : 0);
        if (i == o.past_end_idx) end = off + (1u << 30);
        if (i == o.overlap_idx) begin -= (uint64_t)t[i].esize, end -= (uint64_t)t[i].esize;
        if (i == o.alias_idx) begin -= bytes, end -= bytes;
        len += (size_t)sprintf(h + len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", t[i].name,
                               t[i].dtype, (long long)t[i].shape[0]);
        if (t[i].ndim == 2) len += (size_t)sprintf(h + len, ",%lld", (long long)t[i].shape[1]);
        len += (size_t)sprintf(h + len, "],\"data_offsets\":[%llu,%llu]}",
                               (unsigned long long)begin, (unsigned long long)end);
        off += bytes;
    }
    h[len++] = '}';
    while (len % 8 != (o.odd_header ? 1 : 0))
        h[len++] = ' ';
    size_t total = 8 + len + off;
    uint8_t *f = calloc(1, total);
    REQUIRE(f);
    for (int b = 0; b < 8; b++)
        f[b] = (uint8_t)((uint64_t)len >> (8 * b));
    memcpy(f + 8, h, len);
    spit(work, name, f, total);
    free(f);
    free(h);
}

static const wopts W0 = {-1, -1, false, -1, -1};

/* Writes the list as model.safetensors (nfiles 1) or shards + index (placing each tensor
 * in the file its .file says; index_override places one tensor elsewhere in the index). */
static void write_model(st_t *t, int n, int nfiles, wopts o, int index_idx, int index_file) {
    if (nfiles == 1) {
        write_file("model.safetensors", t, n, 0, o);
        return;
    }
    rm_work("model.safetensors");
    char name[64];
    for (int f = 0; f < nfiles; f++) {
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", f + 1, nfiles);
        write_file(name, t, n, f, o);
    }
    char *ix = malloc(65536);
    REQUIRE(ix);
    size_t len = (size_t)sprintf(ix, "{\"metadata\":{},\"weight_map\":{");
    for (int i = 0; i < n; i++) {
        int f = i == index_idx ? index_file : t[i].file;
        len += (size_t)sprintf(ix + len, "%s\"%s\":\"model-%05d-of-%05d.safetensors\"",
                               i ? "," : "", t[i].name, f + 1, nfiles);
    }
    len += (size_t)sprintf(ix + len, "}}");
    spit(work, "model.safetensors.index.json", ix, len);
    free(ix);
}

/* Replaces the first occurrence of from in work/config.json. */
static void edit_config(const char *from, const char *to) {
    char path[512];
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", work);
    char *s = (char *)slurp(path, &n), *p = strstr(s, from);
    REQUIRE(p);
    char *o = malloc(n + strlen(to) + 1);
    REQUIRE(o);
    int m = sprintf(o, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    spit(work, "config.json", o, (size_t)m);
    free(s);
    free(o);
}

static void structured_cases(void) {
    st_t t[64];
    int n = base_list(t);

    reset_work(); /* the writer itself produces a loadable model */
    write_model(t, n, 1, W0, -1, 0);
    EXPECT(0);

    reset_work();
    t[find(t, n, "model.layers.1.mlp.up_proj.weight")].shape[0] = 32;
    write_model(t, n, 1, W0, -1, 0);
    EXPECT(ZP_EFORMAT, "model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight': shape "
                       "[32,32], expected [64,32]");
    n = base_list(t);

    reset_work(); /* the same in the second of three shards */
    for (int i = 0; i < n; i++)
        t[i].file = i < 9 ? 0 : i < 22 ? 1 : 2;
    int up = find(t, n, "model.layers.1.mlp.up_proj.weight");
    REQUIRE(t[up].file == 1);
    t[up].shape[0] = 32;
    write_model(t, n, 3, W0, -1, 0);
    EXPECT(ZP_EFORMAT, "model-00002-of-00003.safetensors: tensor "
                       "'model.layers.1.mlp.up_proj.weight': shape [32,32], expected [64,32]");
    t[up].shape[0] = 64;

    reset_work(); /* sharded and correct: loads */
    write_model(t, n, 3, W0, -1, 0);
    EXPECT(0);

    reset_work(); /* the index places a tensor in a file that lacks it */
    write_model(t, n, 3, W0, up, 2);
    EXPECT(ZP_EFORMAT, "model-00003-of-00003.safetensors", "model.layers.1.mlp.up_proj.weight",
           "missing");

    reset_work(); /* a tensor in two shards */
    {
        st_t t2[65];
        memcpy(t2, t, sizeof(st_t) * (size_t)n);
        t2[n] = t[up];
        t2[n].file = 0;
        write_model(t2, n + 1, 3, W0, -1, 0);
        EXPECT(ZP_EFORMAT, "model.layers.1.mlp.up_proj.weight", "appears twice");
    }

    reset_work(); /* the index names a file that does not exist */
    write_model(t, n, 3, W0, -1, 0);
    rm_work("model-00003-of-00003.safetensors");
    EXPECT(ZP_EIO, "model-00003-of-00003.safetensors");
    n = base_list(t);

    reset_work(); /* 1-D where 2-D was expected */
    t[find(t, n, "model.layers.0.self_attn.q_proj.weight")].ndim = 1;
    t[find(t, n, "model.layers.0.self_attn.q_proj.weight")].shape[1] = 0;
    write_model(t, n, 1, W0, -1, 0);
    EXPECT(ZP_EFORMAT,
           "tensor 'model.layers.0.self_attn.q_proj.weight': shape [32], expected [32,32]");
    n = base_list(t);

    reset_work(); /* an unsupported (valid) dtype */
    int kn = find(t, n, "model.layers.0.self_attn.k_norm.weight");
    t[kn].dtype = "I32", t[kn].esize = 4;
    write_model(t, n, 1, W0, -1, 0);
    EXPECT(ZP_EUNSUP, "model.safetensors: tensor 'model.layers.0.self_attn.k_norm.weight': dtype "
                      "I32 is not supported");

    reset_work(); /* an unknown dtype */
    t[kn].dtype = "Q4_K", t[kn].esize = 2;
    write_model(t, n, 1, W0, -1, 0);
    EXPECT(ZP_EFORMAT, "tensor 'model.layers.0.self_attn.k_norm.weight': unknown dtype 'Q4_K'");
    n = base_list(t);

    reset_work(); /* F32 and F16 tensors are accepted as such */
    t[kn].dtype = "F32", t[kn].esize = 4;
    t[find(t, n, "model.norm.weight")].dtype = "F16";
    write_model(t, n, 1, W0, -1, 0);
    EXPECT(0);
    n = base_list(t);

    reset_work(); /* a missing tensor */
    memmove(&t[kn], &t[kn + 1], sizeof(st_t) * (size_t)(n - kn - 1));
    write_model(t, n - 1, 1, W0, -1, 0);
    EXPECT(ZP_EFORMAT,
           "model.safetensors: tensor 'model.layers.0.self_attn.k_norm.weight' missing");
    n = base_list(t);

    reset_work(); /* lm_head missing, not tied */
    write_model(t, n - 1, 1, W0, -1, 0);
    EXPECT(ZP_EFORMAT, "tensor 'lm_head.weight' missing");

    reset_work(); /* lm_head missing but tied: fine */
    edit_config("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true");
    write_model(t, n - 1, 1, W0, -1, 0);
    EXPECT(0);

    reset_work(); /* data_offsets one element short */
    write_model(t, n, 1,
                (wopts){find(t, n, "model.layers.1.mlp.down_proj.weight"), -1, false, -1, -1}, -1,
                0);
    EXPECT(ZP_EFORMAT, "tensor 'model.layers.1.mlp.down_proj.weight'", "data bytes");

    reset_work(); /* data_offsets past the data */
    write_model(t, n, 1, (wopts){-1, find(t, n, "model.norm.weight"), false, -1, -1}, -1, 0);
    EXPECT(ZP_EFORMAT, "tensor 'model.norm.weight': data_offsets");

    reset_work(); /* misaligned data section */
    write_model(t, n, 1, (wopts){-1, -1, true, -1, -1}, -1, 0);
    EXPECT(ZP_EFORMAT, "model.safetensors: tensor 'model.embed_tokens.weight'", "aligned");

    /* Overlapping data_offsets: each tensor's size and bounds are right, but writing one
     * would change the other (issue 10). Both tensors are named, whichever the header lists
     * first. */
    reset_work(); /* k_proj's first element is q_proj's last */
    write_model(t, n, 1,
                (wopts){-1, -1, false, find(t, n, "model.layers.0.self_attn.k_proj.weight"), -1},
                -1, 0);
    EXPECT(ZP_EFORMAT, "model.safetensors: tensors", "'model.layers.0.self_attn.q_proj.weight'",
           "'model.layers.0.self_attn.k_proj.weight'", "overlap");
    reset_work(); /* k_norm is q_norm: the same bytes */
    write_model(t, n, 1,
                (wopts){-1, -1, false, -1, find(t, n, "model.layers.1.self_attn.k_norm.weight")},
                -1, 0);
    EXPECT(ZP_EFORMAT, "model.safetensors: tensors", "'model.layers.1.self_attn.q_norm.weight'",
           "'model.layers.1.self_attn.k_norm.weight'", "overlap");
    reset_work(); /* the same in the second of three shards */
    for (int i = 0; i < n; i++)
        t[i].file = i < 9 ? 0 : i < 22 ? 1 : 2;
    write_model(t, n, 3,
                (wopts){-1, -1, false, -1, find(t, n, "model.layers.1.self_attn.k_norm.weight")},
                -1, 0);
    EXPECT(ZP_EFORMAT, "model-00002-of-00003.safetensors: tensors",
           "'model.layers.1.self_attn.q_norm.weight'", "'model.layers.1.self_attn.k_norm.weight'",
           "overlap");
    n = base_list(t);

    reset_work(); /* no weights at all */
    rm_work("model.safetensors");
    EXPECT(ZP_ENOTFOUND, "no model.safetensors");

    /* config.json */
    reset_work();
    edit_config("\"vocab_size\": 261\n}", "\"vocab_size\": 261\n");
    EXPECT(ZP_EFORMAT, "config.json", "invalid JSON");
    reset_work(); /* jsmn alone would take these; the accessors must not see them */
    edit_config("\"hidden_size\": 32,", "\"hidden_size\": 32 \"x\",");
    EXPECT(ZP_EFORMAT, "config.json: invalid JSON at byte");
    reset_work();
    edit_config("\"vocab_size\": 261", "\"vocab_size\": 261, \"dangling\"");
    EXPECT(ZP_EFORMAT, "config.json: invalid JSON at byte");
    reset_work();
    edit_config("Qwen3ForCausalLM", "MistralForCausalLM");
    EXPECT(ZP_EUNSUP, "config.json: architecture 'MistralForCausalLM' is not supported (supported: "
                      "Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)");
    reset_work();
    edit_config("\"hidden_size\": 32,", "");
    EXPECT(ZP_EFORMAT, "config.json: missing 'hidden_size'");
    reset_work();
    edit_config("\"num_key_value_heads\": 1,", "\"num_key_value_heads\": 3,");
    EXPECT(ZP_EFORMAT, "num_attention_heads 2 is not a multiple of num_key_value_heads 3");
    reset_work();
    edit_config("\"head_dim\": 16,", "\"head_dim\": 15,");
    EXPECT(ZP_EFORMAT, "head_dim 15 is odd");
    reset_work();
    edit_config("\"rope_scaling\": null",
                "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
    EXPECT(ZP_EUNSUP, "rope_scaling type 'yarn' is not supported");
    reset_work();
    edit_config("\"rope_scaling\": null",
                "\"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 8.0}");
    EXPECT(ZP_EFORMAT, "rope_parameters llama3 needs");
    reset_work();
    edit_config("\"torch_dtype\": \"bfloat16\"", "\"torch_dtype\": \"int8\"");
    EXPECT(ZP_EUNSUP, "dtype 'int8' is not supported");
    reset_work();
    edit_config("\"eos_token_id\": 258", "\"eos_token_id\": 9999");
    EXPECT(ZP_EFORMAT, "config.json: 'eos_token_id' must be token ids in [0, 261)");
    reset_work();
    edit_config("\"eos_token_id\": 258", "\"eos_token_id\": \"x\"");
    EXPECT(ZP_EFORMAT, "'eos_token_id'");
    reset_work();
    edit_config("\"hidden_size\": 32", "\"hidden_size\": -4");
    EXPECT(ZP_EFORMAT, "'hidden_size' = -4 out of range");
    reset_work();
    edit_config("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"");
    EXPECT(ZP_EUNSUP, "hidden_act 'gelu' is not supported");
    reset_work();
    edit_config("\"use_sliding_window\": false", "\"use_sliding_window\": true");
    EXPECT(ZP_EUNSUP, "use_sliding_window");
    reset_work();
    edit_config("\"use_sliding_window\": false",
                "\"layer_types\": [\"full_attention\", \"sliding_attention\"]");
    EXPECT(ZP_EUNSUP, "layer_types[1] is not 'full_attention'");
    reset_work();
    edit_config("\"use_sliding_window\": false", "\"layer_types\": [\"full_attention\"]");
    EXPECT(ZP_EFORMAT, "'layer_types' must list 2 layer kinds");
    reset_work();
    edit_config("\"use_sliding_window\": false",
                "\"layer_types\": [\"full_attention\", \"full_attention\"]");
    EXPECT(0);
    reset_work();
    edit_config("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 3");
    EXPECT(ZP_EFORMAT, "'tie_word_embeddings' is not a boolean");
    reset_work();
    spit(work, "generation_config.json", "[1,2]", 5);
    EXPECT(ZP_EFORMAT, "generation_config.json: not a JSON object");
    reset_work();
    rm_work("config.json");
    EXPECT(ZP_EIO, "config.json");
}

/* ---- truncation and header damage of a real mkmodel file ---- */

static void damage_cases(void) {
    char path[512];
    size_t len;
    snprintf(path, sizeof path, "%s/model.safetensors", base);
    uint8_t *f = slurp(path, &len), *g = malloc(len);
    REQUIRE(g);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f[i];
    size_t cuts[] = {
        0, 3, 7, 8, 9, 8 + (size_t)hlen / 2, 8 + (size_t)hlen - 1, 8 + (size_t)hlen, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        reset_work();
        spit(work, "model.safetensors", f, cuts[i]);
        int rc = load_work();
        CHECKF(rc == ZP_EFORMAT && strstr(err_msg(), "model.safetensors"), "cut at %zu: %d %s",
               cuts[i], rc, err_msg());
    }
    reset_work(); /* header length past the end of the file */
    memcpy(g, f, len);
    g[5] = 1;
    spit(work, "model.safetensors", g, len);
    EXPECT(ZP_EFORMAT, "model.safetensors: header length", "past the end");
    reset_work(); /* garbage header */
    memcpy(g, f, len);
    unsigned long long s = 99;
    for (size_t i = 8; i < 8 + hlen; i++)
        g[i] = (uint8_t)test_rand_u64(&s);
    spit(work, "model.safetensors", g, len);
    EXPECT(ZP_EFORMAT, "model.safetensors");
    reset_work(); /* header is JSON but not an object */
    memcpy(g, f, len);
    memset(g + 8, ' ', hlen);
    memcpy(g + 8, "[1,2,3]", 7);
    spit(work, "model.safetensors", g, len);
    EXPECT(ZP_EFORMAT, "model.safetensors: header is not a JSON object");
    free(f);
    free(g);
}

/* ---- mutation fuzzing ---- */

/* Mutates file name of the model in dir src (copied to work) iters times; weights_only: the
 * file is safetensors (mutate its length and header) and loader_weights runs, else the file
 * is JSON and both loader_config and (for an index) loader_weights run. */
static void fuzz_file(const char *src, const char *name, int iters, unsigned long long seed,
                      bool weights_only) {
    char path[512], cmd[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", src, name);
    uint8_t *f = slurp(path, &len), *g = malloc(len);
    REQUIRE(g);
    /* Mutations go where parsing happens: the length and the JSON header (or all of a JSON file).
     */
    size_t span = len;
    if (weights_only) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | f[i];
        span = 8 + (size_t)hlen;
    }
    model_config c;
    REQUIRE(loader_config(&c, &A, src) == 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", work, src, work);
    REQUIRE(system(cmd) == 0);
    bool index = !strcmp(name, "model.safetensors.index.json");
    int ok = 0, failed = 0;
    static const char interesting[] = "{}[]\",:0123456789-.e\\ \x00\xff";
    for (int it = 0; it < iters; it++) {
        memcpy(g, f, len);
        size_t n = len;
        int muts = 1 + (int)(test_rand_u64(&seed) % 4);
        for (int m = 0; m < muts; m++) {
            size_t at = (size_t)(test_rand_u64(&seed) % span);
            switch (test_rand_u64(&seed) % 4) {
            case 0:
                g[at] = (uint8_t)test_rand_u64(&seed);
                break;
            case 1:
                g[at] = (uint8_t)interesting[test_rand_u64(&seed) % (sizeof interesting - 1)];
                break;
            case 2:
                g[at] ^= (uint8_t)(1u << (test_rand_u64(&seed) % 8));
                break;
            default: /* swap in a digit change to shift offsets/shapes a little */
                if (g[at] >= '0' && g[at] <= '9')
                    g[at] = (uint8_t)('0' + test_rand_u64(&seed) % 10);
                else if (test_rand_u64(&seed) % 8 == 0)
                    n = at; /* truncate */
            }
        }
        spit(work, name, g, n);
        err_set(0, "%s", "");
        int rc;
        if (weights_only || index) {
            model_weights w;
            rc = loader_weights(&w, &c, &A, work);
            if (!rc) loader_close(&w);
        } else {
            model_config c2;
            rc = loader_config(&c2, &A, work);
            if (!rc)
                CHECK(c2.hidden > 0 && c2.head_dim % 2 == 0 && c2.heads % c2.kv_heads == 0 &&
                      c2.n_eos >= 0);
        }
        if (rc) {
            failed++;
            CHECKF(rc < 0 && err_msg()[0], "iteration %d: code %d with empty message", it, rc);
        } else
            ok++;
    }
    printf("fuzz %s: %d loaded, %d rejected\n", name, ok, failed);
    CHECK(failed > 0);
    free(f);
    free(g);
}

int main(void) {
    const char *b = getenv("ZP_BUILD");
    char zipage[512], cmd[2048];
    snprintf(zipage, sizeof zipage, "%s/asan/zipage", b ? b : "build");
    if (access(zipage, X_OK)) return test_skip("zipage binary not built");
    snprintf(tmp, sizeof tmp, "/tmp/zp_test_loader_fuzz.XXXXXX");
    REQUIRE(mkdtemp(tmp));
    snprintf(base, sizeof base, "%s/base", tmp);
    snprintf(work, sizeof work, "%s/work", tmp);
    snprintf(cmd, sizeof cmd,
             "%s mkmodel --arch qwen3 --hidden %d --layers %d --heads 2 --kv-heads 1 --head-dim %d "
             "--intermediate %d --vocab %d --seed 3 --out %s && rm %s/tokenizer*.json",
             zipage, H, LAYERS, D, I, V, base, base);
    REQUIRE(system(cmd) == 0);
    snprintf(
        cmd, sizeof cmd,
        "%s mkmodel --arch qwen2 --hidden %d --layers %d --heads 2 --kv-heads 1 --intermediate %d "
        "--vocab %d --seed 4 --shards 3 --out %s/sharded",
        zipage, H, LAYERS, I, V, tmp);
    REQUIRE(system(cmd) == 0);
    REQUIRE(arena_init(&A, "fuzz", 64u << 20) == 0);
    size_t mark = arena_temp_mark(&A);

    structured_cases();
    damage_cases();
    fuzz_file(base, "model.safetensors", 8000, 12345, true);
    fuzz_file(base, "config.json", 4000, 777, false);
    snprintf(cmd, sizeof cmd, "%s/sharded", tmp);
    fuzz_file(cmd, "model.safetensors.index.json", 3000, 4242, false);
    CHECK(arena_temp_mark(&A) == mark);

    arena_release(&A);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (!test_failures) REQUIRE(system(cmd) == 0);
    return test_done("test_loader_fuzz");
}
