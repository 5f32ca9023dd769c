/* test_tok_added_ids: an added token (tokenizer.json added_tokens) must not take an id that
 * the vocabulary or another added token already gives to different text: encoding would
 * produce the vocabulary's token and decoding the added one's (found by
 * tests/fuzz/fuzz_tokenizer.c: decode(encode(text)) != text). Restating a vocabulary entry
 * under its own id stays accepted. Edits models/zipage-reasoner/tokenizer.json in a temp dir. */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/tokenizer.h"
#include "tests/testlib.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static arena A;
static char dir[64] = "/tmp/zp_test_tok_added.XXXXXX", path[128];
static char *src;
static size_t src_len;

/* A copy of text with the first `from` replaced by `to` (caller frees). */
static char *edit(const char *text, const char *from, const char *to) {
    const char *p = strstr(text, from);
    REQUIRE(p);
    char *out = malloc(strlen(text) + strlen(to) + 1);
    REQUIRE(out);
    sprintf(out, "%.*s%s%s", (int)(p - text), text, to, p + strlen(from));
    return out;
}

/* Writes text as tokenizer.json, frees it, and loads the directory. */
static int load_text(char *text) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fputs(text, f) >= 0 && fclose(f) == 0);
    free(text);
    tokenizer *t;
    return tok_load(&t, &A, dir);
}

int main(void) {
    FILE *f = fopen("models/zipage-reasoner/tokenizer.json", "rb");
    if (!f) return test_skip("models/zipage-reasoner/tokenizer.json not found");
    REQUIRE(fseek(f, 0, SEEK_END) == 0);
    src_len = (size_t)ftell(f);
    rewind(f);
    src = malloc(src_len + 1);
    REQUIRE(src && fread(src, 1, src_len, f) == src_len);
    src[src_len] = 0;
    fclose(f);
    REQUIRE(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    REQUIRE(arena_init(&A, "test", 256u << 20) == 0);

    /* as shipped: <|im_start|> is added token 282, outside the 281-entry vocabulary */
    int rc = load_text(edit(src, "\"id\": 282", "\"id\": 282"));
    CHECKF(rc == 0, "%s", err_msg());
    /* <|im_start|> claims id 10, the vocabulary's "+" */
    rc = load_text(edit(src, "\"id\": 282", "\"id\": 10"));
    CHECKF(rc == ZP_EFORMAT, "got %d", rc);
    CHECKF(strstr(err_msg(), "tokenizer.json") && strstr(err_msg(), "added token id 10"), "%s",
           err_msg());
    /* <|im_start|> claims <|endoftext|>'s id 281 */
    rc = load_text(edit(src, "\"id\": 282", "\"id\": 281"));
    CHECKF(rc == ZP_EFORMAT, "got %d", rc);
    CHECKF(strstr(err_msg(), "added token id 281"), "%s", err_msg());
    /* an added token restating the vocabulary's own entry (id 0, "!") stays accepted */
    char *t = edit(src, "\"id\": 282", "\"id\": 0");
    rc = load_text(edit(t, "\"content\": \"<|im_start|>\"", "\"content\": \"!\""));
    free(t);
    CHECKF(rc == 0, "%s", err_msg());
    arena_release(&A);
    unlink(path);
    rmdir(dir);
    free(src);
    return test_done("test_tok_added_ids");
}
