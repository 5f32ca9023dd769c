/* json: read-only access to a JSON document parsed with jsmn (parent links on).
 *
 * The token array lives in the arena's temporary side (start-up only); accessors work on
 * token indices and never allocate. Strings are unescaped by json_str() (all JSON escapes,
 * \uXXXX with surrogate pairs, to UTF-8); invalid escapes or lone surrogates are errors.
 * A document is immutable once parsed and can be read from any thread.
 */
#ifndef ZP_JSON_H
#define ZP_JSON_H

#include "arena/arena.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#define JSMN_HEADER
#include <jsmn.h>

typedef struct json_doc {
    const char *src;
    size_t len;
    jsmntok_t *tok;
    int ntok;
    const char *name; /* file name for messages */
} json_doc;

/* Parses src[0..len) (which must outlive the doc); tokens go to the arena's temp side. */
int json_parse(json_doc *d, arena *a, const char *src, size_t len, const char *name);
/* Parses into a caller-owned token array of cap entries (no arena: usable after start-up).
 * ZP_ELIMIT when the document has more than cap tokens. */
int json_parse_buf(json_doc *d, jsmntok_t *tok, int cap, const char *src, size_t len,
                   const char *name);
/* Reads and parses a file (text kept in the arena's temp side). */
int json_load(json_doc *d, arena *a, const char *path);

bool json_is_obj(const json_doc *d, int t);
bool json_is_arr(const json_doc *d, int t);
bool json_is_str(const json_doc *d, int t);
bool json_is_null(const json_doc *d, int t);
/* Index of the token after t's whole subtree. */
int json_skip(const json_doc *d, int t);
/* Value token of key in object obj, or -1. */
int json_get(const json_doc *d, int obj, const char *key);
/* Number of elements/members and the i-th element of an array (-1 when out of range).
 * For iteration prefer: for (int e = t + 1, i = 0; i < n; i++, e = json_skip(d, e)). */
int json_len(const json_doc *d, int t);
int json_at(const json_doc *d, int arr, int i);

/* Unescaped string into out (NUL-terminated); ZP_ELIMIT if it does not fit. */
int json_str(const json_doc *d, int t, char *out, size_t cap, size_t *outlen);
/* True when string token t unescapes to exactly s. */
bool json_str_eq(const json_doc *d, int t, const char *s);
int json_i64(const json_doc *d, int t, int64_t *v);
int json_f64(const json_doc *d, int t, double *v);
int json_bool(const json_doc *d, int t, bool *v);
/* Raw token text (no unescaping), for messages. */
int json_raw(const json_doc *d, int t, const char **s);

/* Unescapes a JSON string body (no quotes) into out; shared with writers' tests. */
int json_unescape(const char *s, size_t n, char *out, size_t cap, size_t *outlen);
/* Writes s as a JSON string literal (with quotes) into out; returns the length or a
 * negative code if cap is too small. Invalid UTF-8 bytes become U+FFFD. */
long json_escape(const char *s, size_t n, char *out, size_t cap);

#endif
