/* fuzz_tokenizer: tokenizer.json and tokenizer_config.json loading (engine/tokenizer.c,
 * tok_load). The input is tokenizer.json, optionally followed by a NUL byte and
 * tokenizer_config.json (absent when the input holds no NUL).
 *
 * Oracle beyond "no crash, no leak, no hang": loading fails with a negative code and a
 * message, or the tokenizer works: a fixed text (ASCII, added-token spellings, NFC-clean
 * non-ASCII) encodes to ids inside the vocabulary, decodes back to the same bytes (byte-level
 * BPE loses nothing), and the streaming detokenizer agrees with tok_decode.
 */
#include "arena/err.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

static const char text[] =
    "Hello, world! 123 <|im_start|>user\n h\xc3\xa9llo \xe4\xbd\xa0\xe5\xa5\xbd"
    "\t  <|endoftext|>end  \n\n";

static void fail(const char *what) {
    fprintf(stderr, "tokenizer accepted at load fails: %s (%s)\n", what, err_msg());
    abort();
}

static void check_tokenizer(tokenizer *t) {
    int32_t ids[256];
    size_t n, len;
    if (tok_encode(t, text, sizeof text - 1, false, ids, 256, &n)) fail("encode");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_vocab_size(t)) fail("id outside the vocabulary");
    char out[1024];
    if (tok_decode(t, ids, n, false, out, sizeof out, &len)) fail("decode");
    if (len != sizeof text - 1 || memcmp(out, text, len)) fail("decode(encode(text)) != text");
    size_t cap = tok_stream_cap(t), at = 0, k;
    char *buf = malloc(cap);
    if (!buf) abort();
    tok_stream st;
    tok_stream_init(&st, false);
    for (size_t i = 0; i < n; i++) {
        if (tok_stream_push(t, &st, ids[i], buf, cap, &k) || at + k > len ||
            memcmp(out + at, buf, k))
            fail("stream push disagrees with decode");
        at += k;
    }
    if (tok_stream_flush(&st, buf, cap, &k) || at + k != len) fail("stream flush");
    free(buf);
    int32_t with[260];
    if (tok_encode(t, text, sizeof text - 1, true, with, 260, &n)) fail("encode add_special");
}

/* A fresh arena per input: the tokenizer's tables are permanent allocations. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p;
    size_t n;
    fuzz_split(data, size, 0, &p, &n);
    fuzz_write("tokenizer.json", p, n);
    if (fuzz_split(data, size, 1, &p, &n))
        fuzz_write("tokenizer_config.json", p, n);
    else
        fuzz_remove("tokenizer_config.json");
    arena A;
    if (arena_init(&A, "fuzz", 256u << 20)) abort();
    err_set(0, "%s", "");
    tokenizer *t;
    int rc = tok_load(&t, &A, fuzz_dir());
    if (rc) {
        if (rc > 0 || !err_msg()[0]) abort(); /* an error always has a code and a message */
    } else {
        check_tokenizer(t);
    }
    if (arena_temp_mark(&A) != 0) abort(); /* temporary memory all given back */
    arena_release(&A);
    return 0;
}
