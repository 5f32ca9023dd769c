/* fuzz_gguf: the GGUF reader (engine/gguf.c, gguf_parse) and its dequantization. The input is
 * a whole GGUF file, parsed from libFuzzer's buffer (exactly the input's size, so ASan sees any
 * read past it).
 *
 * Oracle beyond "no crash, no leak, no hang": a refused file has a negative code and a message
 * naming it; an accepted one keeps every promise of gguf.h: each key and tensor is found by
 * its name, array and string values lie inside the input, every tensor has 1..4 extents >= 1
 * whose product is nelem, the first a multiple of its type's block, nbytes from the block
 * geometry, an aligned offset, data inside the data section and no byte shared with another;
 * every getter runs on every key, every string and inner array is walked, and every tensor
 * up to 2^20 elements is dequantized. Then what --model FILE.gguf builds from an accepted
 * file: the model (ggufmodel_parse: config and weights) and the tokenizer (tok_load_gguf),
 * each either refused with a negative code and a message or complete (every weight the
 * config asks for present with its shape; the tokenizer encodes a short text into ids below
 * its vocabulary and decodes them). The arena's temporary side is given back either way.
 */
#include "arena/err.h"
#include "engine/gguf.h"
#include "engine/ggufmodel.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

#define NAME "fuzz.gguf"

static void check(bool ok, const char *what, const char *name) {
    if (ok) return;
    fprintf(stderr, "fuzz_gguf: %s ('%s')\n", what, name);
    abort();
}

/* p[0..n) inside the input. */
static bool inside(const uint8_t *p, uint64_t n, const uint8_t *data, size_t size) {
    return p >= data && p <= data + size && n <= (uint64_t)(data + size - p);
}

/* Walks an array's elements (one level of inner arrays) and checks they lie in the input. */
static void walk_array(const gguf_kv *kv, const uint8_t *data, size_t size) {
    const uint8_t *p = kv->data;
    for (uint64_t i = 0; i < kv->n; i++) {
        if (kv->elem_type == GGUF_V_STRING) {
            const char *s;
            size_t n;
            check(inside(p, 8, data, size), "array string outside the input", kv->key);
            gguf_str_next(&p, &s, &n);
            check(inside((const uint8_t *)s, n, data, size), "array string outside the input",
                  kv->key);
        } else if (kv->elem_type == GGUF_V_ARRAY) {
            gguf_kv in;
            check(inside(p, 12, data, size), "inner array outside the input", kv->key);
            gguf_arr_next(&p, kv, &in);
            check(in.elem_type != GGUF_V_ARRAY, "arrays nested twice", kv->key);
            walk_array(&in, data, size);
        } else {
            size_t sz = gguf_vtype_size(kv->elem_type);
            check(sz && inside(p, sz, data, size), "array element outside the input", kv->key);
            uint32_t t = kv->elem_type;
            if (t != GGUF_V_BOOL) (void)gguf_arr_f64(kv, i);
            if (t != GGUF_V_BOOL && t != GGUF_V_U64 && t != GGUF_V_F32 && t != GGUF_V_F64)
                (void)gguf_arr_int(kv, i);
            p += sz;
        }
    }
    check(p >= data && p <= data + size, "array end outside the input", kv->key);
}

static void check_keys(const gguf_file *g, const uint8_t *data, size_t size) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        check(gguf_find(g, kv->key) == kv, "key not found by its name", kv->key);
        uint32_t u;
        int64_t x;
        double d;
        bool b;
        const char *s;
        size_t n;
        const gguf_kv *arr;
        /* every getter: the value, or an error with a message */
        int rcs[] = {
            gguf_get_u32(g, kv->key, &u),     gguf_get_i64(g, kv->key, &x),
            gguf_get_f64(g, kv->key, &d),     gguf_get_bool(g, kv->key, &b),
            gguf_get_str(g, kv->key, &s, &n), gguf_get_arr(g, kv->key, kv->elem_type, &arr)};
        for (size_t j = 0; j < sizeof rcs / sizeof rcs[0]; j++)
            check(rcs[j] == 0 || rcs[j] == ZP_EFORMAT, "getter code", kv->key);
        if (kv->type == GGUF_V_STRING)
            check(inside(kv->data, kv->n, data, size), "string outside the input", kv->key);
        else if (kv->type == GGUF_V_ARRAY)
            walk_array(kv, data, size);
        else
            check(inside(kv->data, gguf_vtype_size(kv->type), data, size),
                  "value outside the input", kv->key);
    }
}

static void check_tensors(const gguf_file *g, const uint8_t *data, size_t size) {
    const uint8_t *lo = data + g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        check(gguf_tensor_find(g, t->name) == t, "tensor not found by its name", t->name);
        int64_t n = 1, block = gguf_type_block(t->type);
        check(t->ndim >= 1 && t->ndim <= 4 && block > 0, "ndim or type", t->name);
        for (int d = 0; d < 4; d++) {
            check(t->ne[d] >= 1 && (d < t->ndim || t->ne[d] == 1), "extent", t->name);
            n *= t->ne[d];
        }
        check(n == t->nelem && t->ne[0] % block == 0, "element count", t->name);
        check(t->nbytes == (uint64_t)(n / block) * gguf_type_block_bytes(t->type), "byte count",
              t->name);
        check(t->offset % g->alignment == 0 && t->data == lo + t->offset &&
                  inside(t->data, t->nbytes, data, size),
              "data outside the data section", t->name);
        for (int64_t j = 0; j < i; j++) {
            const gguf_tensor *o = &g->tensors[j];
            check(t->data >= o->data + o->nbytes || o->data >= t->data + t->nbytes,
                  "tensors overlap", t->name);
        }
        if (n <= 1 << 20) {
            float *out = malloc(sizeof(float) * (size_t)n);
            if (!out) abort();
            check(gguf_dequant(t->type, t->data, n, out) == 0, "dequantization failed", t->name);
            free(out);
        }
    }
}

static void check_refusal(int rc, const char *what) {
    check(rc < 0 && err_msg()[0], "refusal without a code or message", what);
}

static void check_tensor(const tensor *t, int64_t rows, int64_t cols, const char *what) {
    check(t->data && t->name, "weight missing", what);
    check(rows < 0 ? t->ndim == 1 && t->shape[0] == cols
                   : t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols,
          "weight shape", t->name);
}

static void check_model(arena *a, const gguf_file *g) {
    model_config c;
    model_weights w;
    err_set(0, "%s", "");
    int rc = ggufmodel_parse(&c, &w, a, g);
    if (rc) {
        check_refusal(rc, "ggufmodel_parse");
        return;
    }
    int64_t H = c.hidden, Q = (int64_t)c.heads * c.head_dim, KV = (int64_t)c.kv_heads * c.head_dim;
    check(c.layers > 0 && H > 0 && c.heads % c.kv_heads == 0 && c.head_dim % 2 == 0, "config",
          "model");
    check_tensor(&w.embed, c.vocab, H, "embed");
    check_tensor(&w.lm_head, c.vocab, H, "lm_head");
    check_tensor(&w.final_norm, -1, H, "final_norm");
    for (int i = 0; i < c.layers; i++) {
        const layer_weights *l = &w.layers[i];
        check_tensor(&l->q, Q, H, "q");
        check_tensor(&l->k, KV, H, "k");
        check_tensor(&l->v, KV, H, "v");
        check_tensor(&l->o, H, Q, "o");
        check_tensor(&l->gate, c.intermediate, H, "gate");
        check_tensor(&l->up, c.intermediate, H, "up");
        check_tensor(&l->down, H, c.intermediate, "down");
        if (c.attn_bias) check_tensor(&l->q_bias, -1, Q, "q_bias");
        if (c.qk_norm) check_tensor(&l->k_norm, -1, c.head_dim, "k_norm");
    }
}

static void check_tokenizer(arena *a, const gguf_file *g) {
    tokenizer *t;
    err_set(0, "%s", "");
    int rc = tok_load_gguf(&t, a, g);
    if (rc) {
        check_refusal(rc, "tok_load_gguf");
        return;
    }
    static const char text[] = "Hello, world! 123 <|im_end|> caf\xc3\xa9";
    int32_t ids[256];
    size_t n;
    err_set(0, "%s", "");
    rc = tok_encode(t, text, sizeof text - 1, true, ids, 256, &n);
    if (rc) {
        check_refusal(rc, "tok_encode");
        return;
    }
    for (size_t i = 0; i < n; i++)
        check(ids[i] >= 0 && ids[i] < tok_vocab_size(t), "id outside the vocabulary", "encode");
    char out[1024];
    size_t len;
    rc = tok_decode(t, ids, n, false, out, sizeof out, &len);
    if (rc) check_refusal(rc, "tok_decode");
}

/* A fresh arena per input; a MAP_NORESERVE reservation costs only the pages an input touches. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    arena A;
    if (arena_init(&A, "fuzz", 64u << 20)) abort();
    err_set(0, "%s", "");
    gguf_file g;
    int rc = gguf_parse(&g, &A, data, size, NAME);
    if (rc) {
        check(rc < 0 && !strncmp(err_msg(), NAME ": ", strlen(NAME) + 2), "error without message",
              err_msg());
    } else {
        check(g.alignment && !(g.alignment & (g.alignment - 1)), "alignment", "general.alignment");
        check_keys(&g, data, size);
        check_tensors(&g, data, size);
        check_model(&A, &g);
        check_tokenizer(&A, &g);
    }
    if (arena_temp_mark(&A) != 0) abort(); /* temporary memory all given back */
    arena_release(&A);
    return 0;
}
