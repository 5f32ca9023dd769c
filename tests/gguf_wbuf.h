/* gguf_wbuf: the growable buffer the GGUF tests (test_gguf, test_tok_gguf) write files into:
 * raw bytes, little-endian u8/u32/u64 and GGUF strings (u64 length, then the bytes, no NUL).
 * nkv counts the keys a writer has put, for the header it writes last. Test-only: REQUIRE
 * stops the test when memory runs out; the caller frees b. */
#ifndef ZP_TESTS_GGUF_WBUF_H
#define ZP_TESTS_GGUF_WBUF_H

#include "tests/testlib.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct wbuf {
    uint8_t *b;
    size_t n, cap;
    uint64_t nkv;
} wbuf;

static inline void put(wbuf *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 256;
        REQUIRE((w->b = realloc(w->b, w->cap)));
    }
    if (n) memcpy(w->b + w->n, p, n);
    w->n += n;
}
static inline void put_u8(wbuf *w, uint8_t v) {
    put(w, &v, 1);
}
static inline void put_u32(wbuf *w, uint32_t v) {
    put(w, &v, 4);
}
static inline void put_u64(wbuf *w, uint64_t v) {
    put(w, &v, 8);
}
static inline void put_strn(wbuf *w, const char *s, size_t n) {
    put_u64(w, n);
    put(w, s, n);
}
static inline void put_str(wbuf *w, const char *s) {
    put_strn(w, s, strlen(s));
}

#endif
