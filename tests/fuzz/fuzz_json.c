/* fuzz_json: the JSON layer (engine/json.c) on its own: json_parse_buf on the input (the
 * token array is malloc'd at the exact size, so ASan sees any overrun), then every accessor
 * on every token: type tests, json_skip, json_len/json_at, json_get, json_str/json_str_eq,
 * json_i64/json_f64/json_bool, json_raw; and json_escape/json_unescape on the input's bytes.
 *
 * Oracle beyond "no crash, no leak, no hang": the subtree walk with json_skip ends exactly at
 * the token count; each string unescapes into a buffer as large as its source (unescaping
 * never grows text); json_escape of any bytes is a literal whose body unescapes back to a
 * valid UTF-8 string U2 with json_escape(U2) == the same literal (invalid bytes become
 * U+FFFD once, and nothing else changes).
 */
#include "arena/err.h"
#include "engine/json.h"
#include "tests/fuzz/fuzz_util.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_json: %s (%s)\n", what, err_msg());
    abort();
}

static void walk(const json_doc *d) {
    if (json_skip(d, 0) != d->ntok) fail("json_skip of the root is not the token count");
    for (int t = 0; t < d->ntok; t++) {
        const char *s;
        int rl = json_raw(d, t, &s);
        if (rl < 0 || s < d->src || s + rl > d->src + d->len) fail("json_raw outside the text");
        int len = json_len(d, t);
        if (json_is_arr(d, t)) {
            for (int i = 0, e = t + 1; i < len; i++, e = json_skip(d, e))
                if (json_at(d, t, i) != e) fail("json_at disagrees with json_skip");
            if (json_at(d, t, len) != -1) fail("json_at past the end");
        }
        if (json_is_obj(d, t)) {
            char key[256];
            size_t kl;
            for (int i = 0, k = t + 1; i < len; i++, k = json_skip(d, k + 1))
                if (!json_str(d, k, key, sizeof key, &kl) && !memchr(key, 0, kl) &&
                    json_get(d, t, key) < 0)
                    fail("json_get misses a key of the object");
        }
        if (json_is_str(d, t)) {
            size_t cap = (size_t)rl + 1, n;
            char *out = malloc(cap);
            if (!out) abort();
            if (!json_str(d, t, out, cap, &n) && !memchr(out, 0, n) && !json_str_eq(d, t, out) &&
                n < 255)
                fail("json_str_eq disagrees with json_str");
            free(out);
        } else {
            int64_t i;
            double f;
            bool b;
            (void)json_i64(d, t, &i);
            (void)json_f64(d, t, &f);
            (void)json_bool(d, t, &b);
            (void)json_is_null(d, t);
        }
    }
}

static void escape_roundtrip(const uint8_t *data, size_t size) {
    size_t cap = 6 * size + 3; /* the worst case: \u00XX per byte, quotes, NUL */
    char *lit = malloc(cap), *u2 = malloc(cap), *lit2 = malloc(cap);
    if (!lit || !u2 || !lit2) abort();
    long l = json_escape((const char *)data, size, lit, cap);
    size_t n2;
    if (l < 2) fail("json_escape failed with room");
    if (json_unescape(lit + 1, (size_t)l - 2, u2, cap, &n2)) fail("escaped text does not unescape");
    long l2 = json_escape(u2, n2, lit2, cap);
    if (l2 != l || memcmp(lit, lit2, (size_t)l)) fail("escape(unescape(escape(x))) changed");
    /* Too small a buffer is an error, never an overrun. */
    if (size && json_escape((const char *)data, size, lit, (size_t)data[0] % (size_t)l) >= 0)
        fail("json_escape fitted in a buffer too small");
    free(lit), free(u2), free(lit2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* jsmn makes at most one token per input byte (plus one): cap = size + 1 always fits, a
     * smaller cap exercises the ZP_ELIMIT path. */
    int cap = (int)size + 1;
    jsmntok_t *tok = malloc(sizeof *tok * (size_t)cap);
    if (!tok) abort();
    json_doc d;
    err_set(0, "%s", "");
    int rc = json_parse_buf(&d, tok, cap, (const char *)data, size, "fuzz.json");
    if (rc) {
        if (rc > 0 || !err_msg()[0]) abort();
        if (rc == ZP_ELIMIT) fail("ran out of tokens with one per byte");
    } else {
        walk(&d);
        int ntok = d.ntok;
        if (ntok > 1 &&
            json_parse_buf(&d, tok, ntok - 1, (const char *)data, size, "fuzz.json") != ZP_ELIMIT)
            fail("one token short is not ZP_ELIMIT");
    }
    free(tok);
    escape_roundtrip(data, size);
    return 0;
}
