/* test_tok_unit: the tokenizer on the byte-level tokenizer.json that `zipage mkmodel` ships
 * (written by tests/test_tok_util.h): loading (pair and legacy merges, TemplateProcessing
 * BOS, tokenizer_config.json), encoding with added tokens, decoding, the streaming
 * detokenizer's UTF-8 hold-back and U+FFFD rules, limits, the NFC window, no allocation
 * after load, fuzzing with random bytes, and clear errors for broken tokenizer.json files. */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/tokenizer.h"
#include "tests/test_tok_util.h"
#include "tests/testlib.h"

#include <string.h>
#include <utf8proc.h>

static arena A;

static tokenizer *load(const char *dir) {
    tokenizer *t = NULL;
    int rc = tok_load(&t, &A, dir);
    if (rc) fprintf(stderr, "tok_load: %s\n", err_msg());
    REQUIRE(rc == 0);
    return t;
}

static size_t enc(tokenizer *t, const char *s, bool special, int32_t *ids, size_t cap) {
    size_t n = 0;
    int rc = tok_encode(t, s, strlen(s), special, ids, cap, &n);
    CHECKF(rc == 0, "encode %s: %s", s, err_msg());
    return n;
}

static bool ids_eq(const int32_t *a, size_t n, const int32_t *b, size_t m) {
    return n == m && !memcmp(a, b, n * sizeof *a);
}

static void test_mini(void) {
    const char *dir = tt_write_mini(&(tt_opts){.merges = true, .bos = "<|endoftext|>", .eos = "<|im_end|>"});
    tokenizer *t = load(dir);
    tt_remove(dir);
    int32_t ids[256];
    CHECK(tok_vocab_size(t) == 264);
    CHECK(tok_token_id(t, "<|im_end|>") == 261);
    CHECK(tok_token_id(t, "Ġthe") == 258);
    CHECK(tok_token_id(t, "a") == 'a');
    CHECK(tok_token_id(t, "nope") == -1);
    CHECK(tok_is_special(t, 261) && !tok_is_special(t, 262) && !tok_is_special(t, 'a'));
    CHECK(tok_bos_id(t) == 259 && tok_eos_id(t) == 261);
    CHECK(tok_chat_template(t) == NULL);
    /* merges: "he" (rank 0) then "Ġt" (1) then "Ġthe" (2) */
    size_t n = enc(t, "the the", false, ids, 256);
    CHECK(ids_eq(ids, n, (int32_t[]){'t', 257, 258}, 3));
    n = enc(t, "<|im_start|>user\nhi<think>x</think><|im_end|>", true, ids, 256);
    CHECK(ids_eq(ids, n, (int32_t[]){260, 'u', 's', 'e', 'r', '\n', 'h', 'i', 262, 'x', 263, 261}, 12));
    /* the longest added token wins; a partial one is plain text */
    n = enc(t, "<|im_end|<|im_end|>", false, ids, 256);
    CHECK(n == 10 && ids[9] == 261);
    /* decoding, skip_special, unknown ids */
    char out[256];
    size_t len;
    CHECK(tok_decode(t, ids, n, false, out, sizeof out, &len) == 0 && !strcmp(out, "<|im_end|<|im_end|>"));
    n = enc(t, "<|im_start|>a<think>b</think>", false, ids, 256);
    CHECK(tok_decode(t, ids, n, true, out, sizeof out, &len) == 0 && !strcmp(out, "a<think>b</think>"));
    CHECK(tok_decode(t, (int32_t[]){264}, 1, false, out, sizeof out, &len) == ZP_EINVAL);
    CHECK(tok_decode(t, (int32_t[]){-1}, 1, false, out, sizeof out, &len) == ZP_EINVAL);
    CHECK(tok_decode(t, (int32_t[]){'a', 'b', 'c'}, 3, false, out, 2, &len) == ZP_ELIMIT);
    /* limits and bad text */
    CHECK(tok_encode(t, "abcdef", 6, false, ids, 3, &n) == ZP_ELIMIT && n == 3);
    CHECK(tok_encode(t, "a\xff", 2, false, ids, 256, &n) == ZP_EINVAL);
    CHECK(strstr(err_msg(), "UTF-8") != NULL);
    CHECK(tok_encode(t, "\xed\xa0\x80", 3, false, ids, 256, &n) == ZP_EINVAL); /* surrogate */
    CHECK(tok_encode(t, "", 0, true, ids, 256, &n) == 0 && n == 0);
    /* NFC: e + U+0301 becomes U+00E9 */
    n = enc(t, "e\xcc\x81", false, ids, 256);
    CHECK(ids_eq(ids, n, (int32_t[]){0xC3, 0xA9}, 2));
}

static char *slurp(const char *dir, size_t *len);
static char *replace(const char *s, const char *from, const char *to);

static void test_variants(void) {
    const char *dir = tt_write_mini(&(tt_opts){.merges = true, .legacy_merges = true, .bos_template = true});
    tokenizer *t = load(dir);
    tt_remove(dir);
    int32_t ids[64];
    size_t n = enc(t, "the the", true, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){259, 't', 257, 258}, 4));
    n = enc(t, "the the", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){'t', 257, 258}, 3));
    dir = tt_write_mini(&(tt_opts){0});
    size_t len;
    char *text = slurp(dir, &len);
    t = load(dir);
    CHECK(tok_vocab_size(t) == 261 && tok_token_id(t, "</think>") == 260);
    /* normalizer as a Sequence: [] is none, [NFC] is NFC */
    static const char *const norms[] = {"{\"type\":\"Sequence\",\"normalizers\":[]}",
                                        "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"}]}"};
    for (int k = 0; k < 2; k++) {
        char *v = replace(text, "{\"type\":\"NFC\"}", norms[k]);
        char path[512];
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs(v, f);
        fclose(f);
        free(v);
        t = load(dir);
        n = enc(t, "e\xcc\x81", false, ids, 64);
        CHECK(n == (k ? 2u : 3u));
    }
    free(text);
    tt_remove(dir);
    n = enc(t, " the", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){' ', 't', 'h', 'e'}, 4));
}

/* Decodes ids one at a time through the stream; checks every push is valid UTF-8 and the
 * concatenation equals tok_decode. */
static void stream_check(tokenizer *t, const int32_t *ids, size_t n, const char *want) {
    char all[1024], one[64], ref[1024];
    size_t o = 0, k, rl;
    tok_stream st;
    tok_stream_init(&st, false);
    CHECK(tok_stream_cap(t) <= sizeof one);
    for (size_t i = 0; i < n; i++) {
        REQUIRE(tok_stream_push(t, &st, ids[i], one, sizeof one, &k) == 0);
        CHECK(utf8proc_decompose((const utf8proc_uint8_t *)one, (utf8proc_ssize_t)k, NULL, 0, 0) >= 0);
        memcpy(all + o, one, k);
        o += k;
    }
    REQUIRE(tok_stream_flush(&st, one, sizeof one, &k) == 0);
    memcpy(all + o, one, k);
    o += k;
    all[o] = 0;
    CHECKF(!strcmp(all, want), "stream gave '%s', want '%s'", all, want);
    REQUIRE(tok_decode(t, ids, n, false, ref, sizeof ref, &rl) == 0);
    CHECKF(!strcmp(ref, want), "decode gave '%s', want '%s'", ref, want);
}

static void test_stream(void) {
    const char *dir = tt_write_mini(&(tt_opts){0});
    tokenizer *t = load(dir);
    tt_remove(dir);
    /* every byte is a token here, so multi-byte characters arrive in pieces */
    int32_t ids[64];
    size_t n = enc(t, "h\xc3\xa9llo \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd!", false, ids, 64);
    CHECK(n == 16);
    tok_stream st;
    tok_stream_init(&st, false);
    char out[64];
    size_t k;
    CHECK(tok_stream_push(t, &st, ids[0], out, sizeof out, &k) == 0 && k == 1);
    CHECK(tok_stream_push(t, &st, ids[1], out, sizeof out, &k) == 0 && k == 0); /* held back */
    CHECK(tok_stream_push(t, &st, ids[2], out, sizeof out, &k) == 0 && k == 2 && !memcmp(out, "\xc3\xa9", 2));
    stream_check(t, ids, n, "h\xc3\xa9llo \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd!");
    /* invalid sequences become U+FFFD like Rust's from_utf8_lossy */
    stream_check(t, (int32_t[]){0xE4, 'A'}, 2, "\xef\xbf\xbd" "A");
    stream_check(t, (int32_t[]){0xF0, 0x9F, 0x98, 'x'}, 4, "\xef\xbf\xbdx");
    stream_check(t, (int32_t[]){0xED, 0xA0, 0x80}, 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    stream_check(t, (int32_t[]){0x80, 0xC0, 0xFF, 'z'}, 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz");
    stream_check(t, (int32_t[]){'a', 0xF0, 0x9F}, 3, "a\xef\xbf\xbd"); /* cut at the end: flush */
    stream_check(t, (int32_t[]){0xE2, 0x82, 0xAC, 0xC3}, 4, "\xe2\x82\xac\xef\xbf\xbd");
    /* skip_special keeps a partial character across a skipped token */
    tok_stream_init(&st, true);
    CHECK(tok_stream_push(t, &st, 0xC3, out, sizeof out, &k) == 0 && k == 0);
    CHECK(tok_stream_push(t, &st, 257, out, sizeof out, &k) == 0 && k == 0);
    CHECK(tok_stream_push(t, &st, 0xA9, out, sizeof out, &k) == 0 && k == 2);
    CHECK(tok_stream_push(t, &st, 999, out, sizeof out, &k) == ZP_EINVAL);
}

/* Text longer than the NFC window, decomposed: must match the already-composed text. */
static void test_window(void) {
    const char *dir = tt_write_mini(&(tt_opts){.merges = true});
    tokenizer *t = load(dir);
    tt_remove(dir);
    const char *unit = "Cafe\xcc\x81 na\xc3\xafve the \xe1\x84\x80\xe1\x85\xa1 word\n"; /* e+U+0301, jamo */
    size_t ul = strlen(unit), reps = (2 * TOK_WINDOW) / ul + 7;
    char *text = malloc(reps * ul + 1);
    REQUIRE(text);
    for (size_t i = 0; i < reps; i++) memcpy(text + i * ul, unit, ul);
    text[reps * ul] = 0;
    char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)text);
    REQUIRE(nfc);
    size_t cap = reps * ul + 16, n1, n2;
    int32_t *a = malloc(cap * 4), *b = malloc(cap * 4);
    REQUIRE(a && b);
    CHECK(tok_encode(t, text, strlen(text), false, a, cap, &n1) == 0);
    CHECK(tok_encode(t, nfc, strlen(nfc), false, b, cap, &n2) == 0);
    CHECK(n1 == n2 && !memcmp(a, b, n1 * 4));
    /* one pre-token longer than TOK_MAX_PIECE: sliced, still lossless */
    size_t big = TOK_MAX_PIECE * 2 + 100;
    char *letters = malloc(big + 1);
    REQUIRE(letters);
    memset(letters, 'x', big);
    letters[big] = 0;
    CHECK(tok_encode(t, letters, big, false, a, cap, &n1) == 0 && n1 == big);
    free(letters);
    free(text);
    free(nfc);
    free(a);
    free(b);
}

static void test_frozen(void) {
    arena fa;
    REQUIRE(arena_init(&fa, "frozen", 64 << 20) == 0);
    const char *dir = tt_write_mini(&(tt_opts){.merges = true});
    tokenizer *t;
    REQUIRE(tok_load(&t, &fa, dir) == 0);
    tt_remove(dir);
    arena_freeze(&fa);
    int32_t ids[256];
    size_t n, len;
    char out[1024];
    for (int i = 0; i < 50; i++) {
        CHECK(tok_encode(t, "the theme of the day, e\xcc\x81t\xc3\xa9 \xf0\x9f\x91\x8b", 22, true, ids, 256, &n) == 0);
        CHECK(tok_decode(t, ids, n, true, out, sizeof out, &len) == 0);
    }
    CHECK(fa.violations == 0);
    arena_release(&fa);
}

static void test_fuzz(void) {
    const char *dir = tt_write_mini(&(tt_opts){.merges = true});
    tokenizer *t = load(dir);
    tt_remove(dir);
    unsigned long long seed = 12345;
    static const uint32_t pool[] = {'a', 'Z', ' ', '\n', '\r', '\t', '\'', 's', '1', '!', 0xA0, 0x85,
                                    0x301, 0x3000, 0x2028, 0x4E2D, 0x1F44B, 0x200D, 0x661, 0xE9, 0x17F,
                                    /* NFC changes these alone: singletons, exclusions, CJK compat */
                                    0x212B, 0x2126, 0x958, 0xF900, 0x2F800, 0x1E9B, 0x344, 0xF73,
                                    /* precomposed, and pieces that compose */
                                    0x304C, 0x304B, 0x3099, 0xAC00, 0x11A8, 0x1161, 0x1100, 0x323,
                                    /* marks of class 0 that compose (U+0B47 U+0B3E) or never do */
                                    0xB47, 0xB3E, 0xBC6, 0xBBE, 0xDD9, 0xDCF, 0x1025, 0x102E, 0xCBF,
                                    0xCD5, 0x1B05, 0x1B35, 0xFE0F, 0x20E3, 0x11131, 0x11127};
    char buf[1024], out[8192];
    int32_t ids[1024];
    size_t n, len;
    for (int it = 0; it < 3000; it++) {
        size_t l = test_rand_u64(&seed) % 300;
        for (size_t i = 0; i < l; i++) buf[i] = (char)test_rand_u64(&seed);
        int rc = tok_encode(t, buf, l, it & 1, ids, 1024, &n);
        CHECK(rc == 0 || rc == ZP_EINVAL);
        /* valid text from a pool of tricky code points: decode gives its NFC back */
        size_t o = 0;
        for (size_t i = 0; i < l / 4; i++)
            o += (size_t)utf8proc_encode_char((utf8proc_int32_t)pool[test_rand_u64(&seed) % (sizeof pool / 4)],
                                              (utf8proc_uint8_t *)buf + o);
        buf[o] = 0;
        CHECKF(tok_encode(t, buf, o, false, ids, 1024, &n) == 0, "%s", err_msg());
        REQUIRE(tok_decode(t, ids, n, false, out, sizeof out, &len) == 0);
        char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)buf);
        CHECK(nfc && !strcmp(nfc, out));
        free(nfc);
    }
}

/* Writes text as DIR/tokenizer.json and expects tok_load to fail with code and a message
 * containing msg. */
static void expect_bad(const char *json, size_t len, int code, const char *msg) {
    const char *dir = tt_write_mini(&(tt_opts){0});
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fwrite(json, 1, len, f);
    fclose(f);
    tokenizer *t;
    int rc = tok_load(&t, &A, dir);
    if (code) {
        CHECKF(rc == code, "want %d, got %d (%s)", code, rc, err_msg());
        CHECKF(strstr(err_msg(), msg) != NULL, "message '%s' lacks '%s'", err_msg(), msg);
    } else {
        CHECKF(rc == 0 || rc == ZP_EFORMAT || rc == ZP_EUNSUP, "rc %d (%s)", rc, err_msg());
    }
    tt_remove(dir);
}

static char *slurp(const char *dir, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    char *b = malloc(1 << 20);
    REQUIRE(b);
    *len = fread(b, 1, 1 << 20, f);
    fclose(f);
    b[*len] = 0;
    return b;
}

static char *replace(const char *s, const char *from, const char *to) {
    const char *p = strstr(s, from);
    REQUIRE(p);
    char *r = malloc(strlen(s) + strlen(to) + 1);
    REQUIRE(r);
    sprintf(r, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    return r;
}

static void test_corrupt(void) {
    const char *dir = tt_write_mini(&(tt_opts){.merges = true});
    size_t len;
    char *good = slurp(dir, &len);
    tt_remove(dir);
    expect_bad(good, len / 2, ZP_EFORMAT, "tokenizer.json");
    expect_bad("[1,2]", 5, ZP_EFORMAT, "not a JSON object");
    struct {
        const char *from, *to;
        int code;
        const char *msg;
    } edits[] = {
        {"\"type\":\"BPE\"", "\"type\":\"WordPiece\"", ZP_EUNSUP, "unsupported tokenizer: model"},
        {"{\"type\":\"NFC\"}", "{\"type\":\"NFKC\"}", ZP_EUNSUP, "unsupported tokenizer: normalizer"},
        {"\\\\p{N}|", "\\\\p{N}{1,2}|", ZP_EUNSUP, "unsupported tokenizer: pre_tokenizer regex"},
        {"\"byte_fallback\":false", "\"byte_fallback\":true", ZP_EUNSUP, "byte_fallback"},
        {"[\"h\",\"e\"]", "[\"h\",\"q\"]", ZP_EFORMAT, "merge 0"},
        {"[\"h\",\"e\"]", "[\"h\"]", ZP_EFORMAT, "merge 0"},
        {"\"Ġt\":256", "\"Ġt\":\"x\"", ZP_EFORMAT, "bad id"},
        {"\"decoder\":{\"type\":\"ByteLevel\"", "\"decoder\":{\"type\":\"WordPiece\"", ZP_EUNSUP, "decoder"},
        {"\"lstrip\":false", "\"lstrip\":true", ZP_EUNSUP, "lstrip"},
        {"\"Ġt\":256", "\"Ġt\":900000000", ZP_EFORMAT, "far beyond"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *bad = replace(good, edits[i].from, edits[i].to);
        expect_bad(bad, strlen(bad), edits[i].code, edits[i].msg);
        free(bad);
    }
    /* random byte flips: an error or a working tokenizer, never a crash */
    unsigned long long seed = 99;
    char *buf = malloc(len + 1);
    REQUIRE(buf);
    for (int it = 0; it < 150; it++) {
        memcpy(buf, good, len);
        for (int k = 0; k < 3; k++) buf[test_rand_u64(&seed) % len] = (char)test_rand_u64(&seed);
        expect_bad(buf, len, 0, "");
    }
    free(buf);
    free(good);
}

int main(void) {
    REQUIRE(arena_init(&A, "test", (size_t)1 << 32) == 0);
    test_mini();
    test_variants();
    test_stream();
    test_window();
    test_frozen();
    test_fuzz();
    test_corrupt();
    arena_release(&A);
    return test_done("test_tok_unit");
}
