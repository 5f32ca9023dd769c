/* test_tok_gguf: tokenizers built from GGUF metadata (tok_load_gguf) on images written in
 * memory by a small writer here and parsed with gguf_parse from a malloc'd buffer of exactly
 * their size (freed, poisoned, right after the load: the tokenizer keeps nothing of it).
 *
 * Pre-tokenizers: hand-written cases for GPT-2's ByteLevel regex (contractions, their case,
 * digits, spaces before a newline or a word, trailing and leading spaces, tabs, NBSP, Unicode
 * letters and numbers), SmolLM2's digits-apart form and the Qwen2/Llama-3 names. The split is
 * made visible by a vocabulary holding every substring of every case with a merge for every
 * way to cut it, so each pre-token comes out as exactly one id. The expected splits are HF
 * tokenizers' own (pre_tokenize_str). The same vocabularies written as tokenizer.json check
 * tok_load's ByteLevel(use_regex) and Digits + ByteLevel pre-tokenizers.
 *
 * Metadata: control, user-defined and named (bos/eos/unk/pad, <|endoftext|>) tokens become
 * added tokens only when spelled in the ByteLevel alphabet (as transformers builds them),
 * other tokens stand for their UTF-8 bytes, add_bos/add_eos, a byte missing from the
 * vocabulary is dropped (and refused in tokenizer.json); and each kind of corrupted or unsupported
 * metadata gives its code and a message naming the file and the key. tests/test_tok_gguf_hf.sh
 * compares real files with transformers. */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "tests/test_tok_util.h"
#include "tests/gguf_wbuf.h"
#include "tests/testlib.h"

#include <string.h>

static arena A;

/* ---- the GGUF writer ----------------------------------------------------------------------- */

static void key(wbuf *w, const char *k, uint32_t type) {
    put_strn(w, k, strlen(k));
    put_u32(w, type);
    w->nkv++;
}
static void kv_str(wbuf *w, const char *k, const char *s, size_t n) {
    key(w, k, GGUF_V_STRING);
    put_strn(w, s, n);
}
static void kv_u32(wbuf *w, const char *k, uint32_t v) {
    key(w, k, GGUF_V_U32);
    put_u32(w, v);
}
static void kv_bool(wbuf *w, const char *k, bool v) {
    key(w, k, GGUF_V_BOOL);
    uint8_t b = v;
    put(w, &b, 1);
}
static void kv_arr_begin(wbuf *w, const char *k, uint32_t elem, uint64_t n) {
    key(w, k, GGUF_V_ARRAY);
    put_u32(w, elem);
    put_u64(w, n);
}

/* The file: header, the pairs, padding to the default alignment; malloc'd, *len exact. */
static uint8_t *gw_image(const wbuf *w, size_t *len) {
    size_t n = 24 + w->n;
    *len = (n + 31) / 32 * 32;
    uint8_t *b = calloc(1, *len);
    REQUIRE(b);
    uint32_t version = 3;
    uint64_t counts[2] = {0, w->nkv};
    memcpy(b, "GGUF", 4);
    memcpy(b + 4, &version, 4);
    memcpy(b + 8, counts, 16);
    memcpy(b + 24, w->b, w->n);
    return b;
}

/* ---- a tokenizer's metadata ---------------------------------------------------------------- */

typedef struct {
    char **s;
    int n, cap;
} strv;

static void strv_push(strv *v, const char *s, size_t n) {
    if (v->n == v->cap) {
        v->cap = v->cap * 2 + 64;
        REQUIRE((v->s = realloc(v->s, sizeof *v->s * (size_t)v->cap)));
    }
    REQUIRE((v->s[v->n] = malloc(n + 1)));
    memcpy(v->s[v->n], s, n);
    v->s[v->n++][n] = 0;
}
static void strv_free(strv *v) {
    for (int i = 0; i < v->n; i++)
        free(v->s[i]);
    free(v->s);
    memset(v, 0, sizeof *v);
}
static int strv_find(const strv *v, const char *s) {
    for (int i = v->n - 1; i >= 0; i--)
        if (!strcmp(v->s[i], s)) return i;
    return -1;
}

/* bytes b[0..n) in the ByteLevel spelling, NUL-terminated */
static void spell(const uint8_t *b, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)tt_bl_char(b[i], out + k);
    out[k] = 0;
}

enum { ABSENT = -1 };

typedef struct {
    const char *model, *pre; /* NULL: key absent */
    strv tokens, merges;
    bool no_tokens, no_merges;
    int32_t *types;
    int ntypes; /* ABSENT: no token_type */
    int64_t bos, eos, unk, pad;
    int add_bos, add_eos; /* ABSENT or 0/1 */
    const char *tmpl;
    size_t tmpl_len;
} spec;

static spec spec_new(const char *pre) {
    spec s = {.model = "gpt2", .pre = pre, .ntypes = ABSENT};
    s.bos = s.eos = s.unk = s.pad = ABSENT;
    s.add_bos = s.add_eos = ABSENT;
    for (int b = 0; b < 256; b++) { /* ids 0..255: the bytes in order */
        char c[4] = {0};
        tt_bl_char(b, c);
        strv_push(&s.tokens, c, strlen(c));
    }
    return s;
}

static void spec_free(spec *s) {
    strv_free(&s->tokens);
    strv_free(&s->merges);
    free(s->types);
}

static void spec_type(spec *s, int id, int32_t type) {
    if (s->ntypes < s->tokens.n) {
        REQUIRE((s->types = realloc(s->types, sizeof *s->types * (size_t)s->tokens.n)));
        for (int i = s->ntypes < 0 ? 0 : s->ntypes; i < s->tokens.n; i++)
            s->types[i] = 1;
        s->ntypes = s->tokens.n;
    }
    s->types[id] = type;
}

static uint8_t *spec_image(const spec *s, size_t *len) {
    wbuf w = {0};
    kv_str(&w, "general.architecture", "llama", 5);
    if (s->model) kv_str(&w, "tokenizer.ggml.model", s->model, strlen(s->model));
    if (s->pre) kv_str(&w, "tokenizer.ggml.pre", s->pre, strlen(s->pre));
    if (!s->no_tokens) {
        kv_arr_begin(&w, "tokenizer.ggml.tokens", GGUF_V_STRING, (uint64_t)s->tokens.n);
        for (int i = 0; i < s->tokens.n; i++)
            put_strn(&w, s->tokens.s[i], strlen(s->tokens.s[i]));
    }
    if (s->ntypes != ABSENT) {
        kv_arr_begin(&w, "tokenizer.ggml.token_type", GGUF_V_I32, (uint64_t)s->ntypes);
        put(&w, s->types, 4 * (size_t)s->ntypes);
    }
    if (!s->no_merges) {
        kv_arr_begin(&w, "tokenizer.ggml.merges", GGUF_V_STRING, (uint64_t)s->merges.n);
        for (int i = 0; i < s->merges.n; i++)
            put_strn(&w, s->merges.s[i], strlen(s->merges.s[i]));
    }
    static const char *const ids[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                       "tokenizer.ggml.unknown_token_id",
                                       "tokenizer.ggml.padding_token_id"};
    const int64_t v[4] = {s->bos, s->eos, s->unk, s->pad};
    for (int k = 0; k < 4; k++)
        if (v[k] != ABSENT) kv_u32(&w, ids[k], (uint32_t)v[k]);
    if (s->add_bos != ABSENT) kv_bool(&w, "tokenizer.ggml.add_bos_token", s->add_bos);
    if (s->add_eos != ABSENT) kv_bool(&w, "tokenizer.ggml.add_eos_token", s->add_eos);
    if (s->tmpl) kv_str(&w, "tokenizer.chat_template", s->tmpl, s->tmpl_len);
    uint8_t *img = gw_image(&w, len);
    free(w.b);
    return img;
}

/* Parses and loads the spec's image; the image is poisoned and freed before returning. */
static int load(const spec *s, tokenizer **t) {
    size_t len;
    uint8_t *img = spec_image(s, &len);
    gguf_file g = {0};
    int rc = gguf_parse(&g, &A, img, len, "test.gguf");
    CHECKF(rc == 0, "gguf_parse: %s", err_msg());
    if (!rc) rc = tok_load_gguf(t, &A, &g);
    gguf_close(&g);
    memset(img, 0xA5, len);
    free(img);
    return rc;
}

/* ---- pre-tokenizers ------------------------------------------------------------------------ */

typedef struct {
    const char *text, *pieces; /* pieces: the pre-tokens joined by '|' */
} split_case;

static const split_case GPT2_CASES[] = {
    {"it's I'M we'll they've", "it|'s| I|'|M| we|'ll| they|'ve"},
    {"x're'd's't'm", "x|'re|'d|'s|'t|'m"},
    {"'S 'LL 'Re", "'|S| '|LL| '|Re"},
    {"abc 123 4x", "abc| 123| 4|x"},
    {"12ab 3.5", "12|ab| 3|.|5"},
    {"a  b", "a| | b"},
    {"x  \ny", "x|  |\n|y"},
    {"line\n\n\nnext \n", "line|\n\n|\n|next| \n"},
    {"trailing   ", "trailing|   "},
    {"  lead", " | lead"},
    {"\t\tx", "\t|\t|x"},
    {"a\u00a0b", "a|\u00a0|b"},
    {"héllo wörld", "héllo| wörld"},
    {"x² Ⅻ ½ ٣٤٥", "x|²| Ⅻ| ½| ٣٤٥"},
    {"日本語テスト123", "日本語テスト|123"},
    {"!!! ... ?!x", "!!!| ...| ?!|x"},
    {"a'", "a|'"},
};

static const split_case SMOLLM_CASES[] = {
    {"abc 123 4x", "abc| |1|2|3| |4|x"}, {"x  1", "x|  |1"},         {"x² y ½z", "x|²| y| |½|z"},
    {"a1b'22", "a|1|b|'|2|2"},           {"  \n2 \n", "  \n|2| \n"}, {"it's 2nd", "it|'s| |2|nd"},
};

static const split_case QWEN2_CASES[] = {{"abc 12345 I'M\n\n x", "abc| |1|2|3|4|5| I|'M|\n\n| x"}};
static const split_case LLAMA3_CASES[] = {{"abc 12345 I'M\n\n x", "abc| |123|45| I|'M|\n\n| x"}};

/* Every substring of every case a token, with a merge for each way to cut it in two. */
static void split_vocab(spec *s, const split_case *cases, int n) {
    char sp[512], left[512], right[512], m[1024];
    for (int c = 0; c < n; c++) {
        const uint8_t *t = (const uint8_t *)cases[c].text;
        size_t len = strlen(cases[c].text);
        for (size_t l = 2; l <= len; l++) {
            for (size_t i = 0; i + l <= len; i++) {
                spell(t + i, l, sp);
                if (strv_find(&s->tokens, sp) >= 0) continue;
                strv_push(&s->tokens, sp, strlen(sp));
                for (size_t k = 1; k < l; k++) {
                    spell(t + i, k, left);
                    spell(t + i + k, l - k, right);
                    snprintf(m, sizeof m, "%s %s", left, right);
                    strv_push(&s->merges, m, strlen(m));
                }
            }
        }
    }
}

static void check_splits(tokenizer *t, const char *what, const split_case *cases, int n) {
    for (int c = 0; c < n; c++) {
        int32_t ids[256];
        size_t nid, k = 0;
        char got[1024];
        int rc = tok_encode(t, cases[c].text, strlen(cases[c].text), false, ids, 256, &nid);
        CHECKF(rc == 0, "%s", err_msg());
        for (size_t i = 0; !rc && i < nid; i++) {
            const char *b;
            size_t bl;
            REQUIRE(tok_token_bytes(t, ids[i], &b, &bl) == 0 && k + bl + 2 < sizeof got);
            if (i) got[k++] = '|';
            memcpy(got + k, b, bl);
            k += bl;
        }
        got[k] = 0;
        CHECKF(!strcmp(got, cases[c].pieces), "%s case %d: got \"%s\" want \"%s\"", what, c, got,
               cases[c].pieces);
    }
}

/* The same vocabulary as tokenizer.json with the given pre_tokenizer JSON. */
static const char *write_json(const spec *s, const char *pretok) {
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/zp_tokg_XXXXXX");
    REQUIRE(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fprintf(f,
            "{\"version\":\"1.0\",\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":%s,"
            "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":"
            "\"BPE\",\"dropout\":null,\"unk_token\":null,\"vocab\":{",
            pretok);
    for (int i = 0; i < s->tokens.n; i++) {
        fputs(i ? "," : "", f);
        tt_put_str(f, s->tokens.s[i]);
        fprintf(f, ":%d", i);
    }
    fprintf(f, "},\"merges\":[");
    for (int i = 0; i < s->merges.n; i++) {
        fputs(i ? "," : "", f);
        tt_put_str(f, s->merges.s[i]);
    }
    fprintf(f, "]}}\n");
    fclose(f);
    return dir;
}

static const char BL_REGEX[] =
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":"
    "true,\"use_regex\":true}";

static void test_splits(const char *pre, const split_case *cases, int n, const char *json_pretok) {
    spec s = spec_new(pre);
    split_vocab(&s, cases, n);
    tokenizer *t;
    int rc = load(&s, &t);
    CHECKF(rc == 0, "%s: %s", pre, err_msg());
    if (!rc) check_splits(t, pre, cases, n);
    if (json_pretok) {
        const char *dir = write_json(&s, json_pretok);
        rc = tok_load(&t, &A, dir);
        CHECKF(rc == 0, "tokenizer.json for %s: %s", pre, err_msg());
        if (!rc) check_splits(t, json_pretok, cases, n);
        tt_remove(dir);
    }
    spec_free(&s);
}

static void test_pretokenizers(void) {
    char smollm[256];
    snprintf(smollm, sizeof smollm,
             "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":"
             "true},%s]}",
             BL_REGEX);
#define N(a) ((int)(sizeof a / sizeof a[0]))
    test_splits("gpt2", GPT2_CASES, N(GPT2_CASES), BL_REGEX);
    test_splits(NULL, GPT2_CASES, 3, NULL); /* no tokenizer.ggml.pre: GPT-2's regex */
    test_splits("default", GPT2_CASES, 3, NULL);
    test_splits("smollm", SMOLLM_CASES, N(SMOLLM_CASES), smollm);
    test_splits("qwen2", QWEN2_CASES, 1, NULL);
    test_splits("deepseek-r1-qwen", QWEN2_CASES, 1, NULL);
    test_splits("llama-bpe", LLAMA3_CASES, 1, NULL);
    test_splits("smaug-bpe", LLAMA3_CASES, 1, NULL);
    /* Digits without individual_digits is another pre-tokenizer */
    spec s = spec_new("gpt2");
    const char *dir =
        write_json(&s, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
                       "\"individual_digits\":false},{\"type\":\"ByteLevel\"}]}");
    tokenizer *t;
    CHECK(tok_load(&t, &A, dir) == ZP_EUNSUP && strstr(err_msg(), "Digits"));
    tt_remove(dir);
    spec_free(&s);
}

/* ---- added tokens, specials, templates ----------------------------------------------------- */

static void push(spec *s, const char *tok, int32_t type) {
    strv_push(&s->tokens, tok, strlen(tok));
    if (type != 1 || s->ntypes != ABSENT) spec_type(s, s->tokens.n - 1, type);
}

static size_t enc(tokenizer *t, const char *s, bool special, int32_t *ids) {
    size_t n = 0;
    int rc = tok_encode(t, s, strlen(s), special, ids, 64, &n);
    CHECKF(rc == 0, "encode %s: %s", s, err_msg());
    return n;
}

static bool ids_are(const int32_t *a, size_t n, const int32_t *b, size_t m) {
    if (n != m || memcmp(a, b, n * sizeof *a)) {
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", a[i]);
        fprintf(stderr, " (got)\n");
        return false;
    }
    return true;
}
#define IDS(...) (int32_t[]){__VA_ARGS__}, sizeof((int32_t[]){__VA_ARGS__}) / 4

static const char *decode1(const tokenizer *t, int32_t id) {
    static char out[64];
    size_t len;
    CHECK(tok_decode(t, &id, 1, false, out, sizeof out, &len) == 0);
    return out;
}

/* ids 256.. of the metadata test: */
enum { EOT = 256, IM_START, THINK, USER_FW, A_SP_B, AB, PAD262, PAD_NAMED, G_X };

static spec meta_spec(void) {
    spec s = spec_new("gpt2");
    push(&s, "<|endoftext|>", 1); /* GPT2Tokenizer's default specials: special */
    push(&s, "<|im_start|>", 3);  /* control */
    push(&s, "<think>", 4);       /* user-defined: added, not special */
    push(&s, "<｜User｜>", 3);    /* control outside the alphabet: a plain token */
    push(&s, "a b", 4);           /* user-defined outside the alphabet: a plain token */
    push(&s, "ab", 1);            /* merge "a b" */
    push(&s, "[PAD262]", 5);      /* unused */
    push(&s, "<pad>", 1);         /* named by padding_token_id: special */
    push(&s, "Ġx", 3);            /* control spelled with Ġ: matched as "Ġx", decodes " x" */
    strv_push(&s.merges, "a b", 3);
    s.bos = IM_START;
    s.eos = EOT;
    s.pad = PAD_NAMED;
    s.add_bos = 1;
    s.tmpl = "<|im_start|>{{ m }}<|im_end|>";
    s.tmpl_len = strlen(s.tmpl);
    return s;
}

static void test_metadata(void) {
    spec s = meta_spec();
    tokenizer *t;
    int32_t ids[64];
    size_t n;
    REQUIRE(load(&s, &t) == 0);
    CHECK(tok_vocab_size(t) == G_X + 1);
    CHECK(tok_bos_id(t) == IM_START && tok_eos_id(t) == EOT);
    CHECK(tok_chat_template(t) && !strcmp(tok_chat_template(t), s.tmpl));
    CHECK(tok_is_special(t, EOT) && tok_is_special(t, IM_START) && tok_is_special(t, PAD_NAMED) &&
          tok_is_special(t, G_X));
    CHECK(!tok_is_special(t, THINK) && !tok_is_special(t, USER_FW) && !tok_is_special(t, A_SP_B) &&
          !tok_is_special(t, 'a'));
    CHECK(tok_token_id(t, "<think>") == THINK && tok_token_id(t, "ab") == AB);
    n = enc(t, "<|im_start|>ab<think><|endoftext|><pad>", false, ids);
    CHECK(ids_are(ids, n, IDS(IM_START, AB, THINK, EOT, PAD_NAMED)));
    n = enc(t, "ab", true, ids); /* add_bos_token */
    CHECK(ids_are(ids, n, IDS(IM_START, AB)));
    n = enc(t, "<｜User｜>", false, ids); /* not an added token: its bytes, no merges */
    CHECK(n == strlen("<｜User｜>") && ids[0] == '<' && ids[1] == 0xEF);
    CHECK(!strcmp(decode1(t, USER_FW), "<｜User｜>") && !strcmp(decode1(t, A_SP_B), "a b"));
    n = enc(t, "a b", false, ids); /* GPT-2's regex: "a", " b" */
    CHECK(ids_are(ids, n, IDS('a', ' ', 'b')));
    n = enc(t, "zĠx x", false, ids);
    CHECK(ids_are(ids, n, IDS('z', G_X, ' ', 'x')));
    CHECK(!strcmp(decode1(t, G_X), " x") && !strcmp(decode1(t, PAD262), "[PAD262]"));
    char out[64];
    size_t len;
    CHECK(tok_decode(t, IDS(IM_START, 'h', THINK, EOT), true, out, sizeof out, &len) == 0 &&
          !strcmp(out, "h<think>"));
    /* add_eos_token; add_bos_token without a bos id adds nothing */
    s.add_eos = 1;
    s.bos = ABSENT;
    REQUIRE(load(&s, &t) == 0);
    n = enc(t, "ab", true, ids);
    CHECK(ids_are(ids, n, IDS(AB, EOT)));
    CHECK(tok_bos_id(t) == -1);
    /* no token_type at all: only the named tokens and <|endoftext|> are added */
    free(s.types);
    s.types = NULL;
    s.ntypes = ABSENT;
    REQUIRE(load(&s, &t) == 0);
    n = enc(t, "<think><pad><|endoftext|>", false, ids);
    CHECK(n == 9 && ids[7] == PAD_NAMED && ids[8] == EOT);
    spec_free(&s);
}

/* A byte without a token is dropped and its neighbours in the pre-token merge (HF's BPE
 * without unk_token): "!\x04!" is one pre-token, "!" "!" merge into "!!". tokenizer.json
 * files without it are refused. */
static void test_missing_byte(void) {
    spec s = spec_new("gpt2");
    char c[4] = {0};
    tt_bl_char(4, c);
    strv_free(&s.tokens);
    for (int b = 0; b < 256; b++) {
        char x[4] = {0};
        tt_bl_char(b, x);
        if (b != 4) strv_push(&s.tokens, x, strlen(x));
    }
    strv_push(&s.tokens, "!!", 2);
    strv_push(&s.merges, "! !", 3);
    tokenizer *t;
    int32_t ids[64];
    REQUIRE(load(&s, &t) == 0);
    size_t n = enc(t, "!\x04!", false, ids);
    CHECK(ids_are(ids, n, IDS(255)));
    n = enc(t,
            "a\x04"
            "b",
            false, ids); /* three pre-tokens */
    CHECK(ids_are(ids, n, IDS('a' - 1, 'b' - 1)));
    CHECK(enc(t, "\x04", false, ids) == 0);
    CHECK(tok_token_id(t, c) == -1);
    /* tok_load keeps decode(encode(text)) == text: its files must have every byte */
    const char *dir = write_json(&s, BL_REGEX);
    CHECK(tok_load(&t, &A, dir) == ZP_EUNSUP && strstr(err_msg(), "without a token for byte"));
    tt_remove(dir);
    spec_free(&s);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void expect_error(spec *s, int code, const char *needle) {
    tokenizer *t = NULL;
    int rc = load(s, &t);
    CHECKF(rc == code && strstr(err_msg(), needle) && strstr(err_msg(), "test.gguf"),
           "rc %d want %d, message \"%s\" should name \"%s\"", rc, code, err_msg(), needle);
    CHECK(t == NULL);
    spec_free(s);
}

static void test_errors(void) {
    spec s = meta_spec();
    s.no_tokens = true;
    expect_error(&s, ZP_EFORMAT, "no tokenizer.ggml.tokens");
    s = meta_spec();
    s.model = "llama";
    expect_error(&s, ZP_EUNSUP, "tokenizer.ggml.model 'llama'");
    s = meta_spec();
    s.model = NULL;
    expect_error(&s, ZP_EFORMAT, "no tokenizer.ggml.model");
    s = meta_spec();
    s.pre = "starcoder";
    expect_error(&s, ZP_EUNSUP, "unsupported tokenizer.ggml.pre 'starcoder'");
    s = meta_spec();
    strv_push(&s.merges, "a zz", 4);
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.merges entry 1 uses a token missing");
    s = meta_spec();
    strv_push(&s.merges, "ab b", 4); /* "abb" is not a token */
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.merges entry 1 uses a token missing");
    s = meta_spec();
    strv_push(&s.merges, "abc", 3);
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.merges entry 1 (\"abc\") is not two tokens");
    s = meta_spec();
    s.no_merges = true;
    expect_error(&s, ZP_EUNSUP, "no tokenizer.ggml.merges");
    s = meta_spec();
    s.ntypes = 3;
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.token_type has 3 entries");
    s = meta_spec();
    s.bos = 999;
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.bos_token_id = 999 is not a token id");
    s = meta_spec();
    s.pad = G_X + 1;
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.padding_token_id");
    s = meta_spec();
    push(&s, "ab", 1);
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.tokens[265] ('ab') repeats token 261");
    s = meta_spec();
    push(&s, "\xff", 1);
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.tokens[265] is not valid UTF-8");
    s = meta_spec();
    push(&s, "", 1);
    expect_error(&s, ZP_EFORMAT, "tokenizer.ggml.tokens[265] is empty");
    s = meta_spec();
    s.tmpl = "a\0b";
    s.tmpl_len = 3;
    expect_error(&s, ZP_EFORMAT, "tokenizer.chat_template holds a NUL byte");
    /* a key of the wrong type: the reader's message names it */
    wbuf w = {0};
    kv_str(&w, "general.architecture", "llama", 5);
    kv_str(&w, "tokenizer.ggml.model", "gpt2", 4);
    kv_arr_begin(&w, "tokenizer.ggml.tokens", GGUF_V_U32, 1);
    put_u32(&w, 7);
    size_t len;
    uint8_t *img = gw_image(&w, &len);
    gguf_file g = {0};
    tokenizer *t;
    REQUIRE(gguf_parse(&g, &A, img, len, "test.gguf") == 0);
    CHECK(tok_load_gguf(&t, &A, &g) == ZP_EFORMAT && strstr(err_msg(), "tokenizer.ggml.tokens"));
    gguf_close(&g);
    free(img);
    free(w.b);
}

int main(void) {
    REQUIRE(arena_init(&A, "test", (size_t)4 << 30) == 0);
    test_pretokenizers();
    test_metadata();
    test_missing_byte();
    test_errors();
    arena_release(&A);
    return test_done("test_tok_gguf");
}
