/* test_json: the jsmn wrapper: lookups, skipping, numbers, strict errors, and string
 * unescaping (all escapes, surrogate pairs, lone surrogates rejected) and escaping. */
#include "arena/err.h"
#include "engine/json.h"
#include "tests/testlib.h"

#include <string.h>

int main(void) {
    arena a;
    REQUIRE(arena_init(&a, "test", 1 << 24) == 0);
    json_doc d;
    const char *src = "{\"a\": [1, {\"x\": [2, 3]}, \"s\"], \"b\": -12, \"c\": 1.5e2, \"d\": true,"
                      " \"e\": null, \"u\": \"\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\"}";
    REQUIRE(json_parse(&d, &a, src, strlen(src), "t") == 0);
    int arr = json_get(&d, 0, "a");
    CHECK(json_is_arr(&d, arr) && json_len(&d, arr) == 3);
    CHECK(json_is_str(&d, json_at(&d, arr, 2)) && json_str_eq(&d, json_at(&d, arr, 2), "s"));
    int64_t i;
    double f;
    bool b;
    CHECK(json_i64(&d, json_get(&d, 0, "b"), &i) == 0 && i == -12);
    CHECK(json_f64(&d, json_get(&d, 0, "c"), &f) == 0 && f == 150.0);
    CHECK(json_i64(&d, json_get(&d, 0, "c"), &i) == 0 && i == 150);
    CHECK(json_bool(&d, json_get(&d, 0, "d"), &b) == 0 && b);
    CHECK(json_is_null(&d, json_get(&d, 0, "e")));
    CHECK(json_get(&d, 0, "missing") == -1);
    CHECK(json_i64(&d, json_get(&d, 0, "d"), &i) == ZP_EFORMAT);
    char buf[64];
    size_t n;
    CHECK(json_str(&d, json_get(&d, 0, "u"), buf, sizeof buf, &n) == 0);
    CHECK(n == 2 + 4 + 4 && !memcmp(buf, "\xc3\xa9\xf0\x9f\x98\x80\n\"\\/", n));
    CHECK(json_str(&d, json_get(&d, 0, "u"), buf, 5, &n) == ZP_ELIMIT);

    static const char *bad[] = {"{", "{\"a\":}", "[1,]", "{\"a\" 1}", "\"\\ud800\"", "1 2",
                                "{} x", "", "tru", "[1 2]", "{\"a\":1,}", "01", "1.", "-", "[1,,2]", "{\"a\":1 \"b\":2}",
                                "{1:2}"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int rc = json_parse(&d, &a, bad[k], strlen(bad[k]), "bad.json");
        if (rc == 0 && json_is_str(&d, 0)) rc = json_str(&d, 0, buf, sizeof buf, NULL);
        CHECKF(rc != 0, "accepted '%s'", bad[k]);
    }
    static char deep[100001];
    memset(deep, '[', 100000);
    CHECK(json_parse(&d, &a, deep, 100000, "deep.json") == ZP_EFORMAT);
    memset(deep, '[', 50000);
    memset(deep + 50000, ']', 50000);
    CHECK(json_parse(&d, &a, deep, 100000, "deep.json") == ZP_EFORMAT);
    CHECK(json_unescape("\\udc00", 6, buf, sizeof buf, NULL) == ZP_EFORMAT);
    CHECK(json_unescape("\\ud800\\u0041", 12, buf, sizeof buf, NULL) == ZP_EFORMAT);
    CHECK(json_unescape("\\x", 2, buf, sizeof buf, NULL) == ZP_EFORMAT);

    jsmntok_t toks[8];
    CHECK(json_parse_buf(&d, toks, 8, "[1,2,3]", 7, "buf") == 0 && json_len(&d, 0) == 3);
    CHECK(json_parse_buf(&d, toks, 2, "[1,2,3]", 7, "buf") == ZP_ELIMIT);
    CHECK(json_parse_buf(&d, toks, 8, "[1,]", 4, "buf") == ZP_EFORMAT);
    char out[64];
    long m = json_escape("a\"\n\x01\xff\xc3\xa9", 7, out, sizeof out);
    CHECK(m > 0 && !strcmp(out, "\"a\\\"\\n\\u0001\xef\xbf\xbd\xc3\xa9\""));
    CHECK(json_escape("abcdef", 6, out, 4) < 0);
    arena_release(&a);
    return test_done("json");
}
