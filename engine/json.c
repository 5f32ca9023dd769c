/* json: jsmn wrapper, string unescaping and escaping (see json.h). */
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>

#include "engine/json.h"

#include "arena/err.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t skip_ws(const char *s, size_t i, size_t end) {
    while (i < end && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) i++;
    return i;
}

/* Source offset just past token t (strings end before their closing quote). */
static size_t tok_end(const json_doc *d, int t) {
    return (size_t)d->tok[t].end + (d->tok[t].type == JSMN_STRING);
}

static size_t tok_begin(const json_doc *d, int t) {
    return (size_t)d->tok[t].start - (d->tok[t].type == JSMN_STRING);
}

static bool valid_number(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n || s[i] < '0' || s[i] > '9') return false;
    if (s[i] == '0') i++;
    else
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i < n && s[i] == '.') {
        if (++i >= n || s[i] < '0' || s[i] > '9') return false;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return false;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    return i == n;
}

/* jsmn is lenient about separators ("[1,]", "{\"a\":}", "[1 2]") and number syntax; this
 * walk checks the full grammar between tokens. Returns the index after t's subtree or -1. */
#define JSON_MAX_DEPTH 256

static int validate(const json_doc *d, int t, size_t *bad, int depth) {
    const jsmntok_t *k = &d->tok[t];
    if (depth > JSON_MAX_DEPTH) {
        *bad = SIZE_MAX;
        return -1;
    }
    const char *s = d->src;
    if (k->type == JSMN_PRIMITIVE) {
        const char *p = s + k->start;
        size_t n = (size_t)(k->end - k->start);
        bool ok = (n == 4 && !memcmp(p, "true", 4)) || (n == 5 && !memcmp(p, "false", 5)) ||
                  (n == 4 && !memcmp(p, "null", 4)) || valid_number(p, n);
        if (!ok) *bad = (size_t)k->start;
        return ok ? t + 1 : -1;
    }
    if (k->type == JSMN_STRING) return t + 1;
    bool obj = k->type == JSMN_OBJECT;
    size_t pos = (size_t)k->start + 1, end = (size_t)k->end - 1;
    int c = t + 1;
    for (int i = 0; i < k->size; i++) {
        pos = skip_ws(s, pos, end);
        if (i > 0) {
            if (pos >= end || s[pos] != ',') goto fail;
            pos = skip_ws(s, pos + 1, end);
        }
        if (obj) {
            if (c >= d->ntok || d->tok[c].type != JSMN_STRING || tok_begin(d, c) != pos ||
                d->tok[c].size != 1)
                goto fail;
            pos = skip_ws(s, tok_end(d, c), end);
            if (pos >= end || s[pos] != ':') goto fail;
            pos = skip_ws(s, pos + 1, end);
            c++;
        }
        if (c >= d->ntok || tok_begin(d, c) != pos) goto fail;
        pos = tok_end(d, c);
        if ((c = validate(d, c, bad, depth + 1)) < 0) return -1;
    }
    if (skip_ws(s, pos, end) != end) goto fail;
    return c;
fail:
    *bad = pos;
    return -1;
}

/* Checks a parsed token array: one value, full grammar, nothing after it. */
static int finish_parse(json_doc *d, int n, const char *name) {
    d->ntok = n;
    size_t bad = 0;
    if (validate(d, 0, &bad, 0) < 0) {
        if (bad == SIZE_MAX)
            return err_set(ZP_EFORMAT, "%s: JSON nested deeper than %d levels", name, JSON_MAX_DEPTH);
        return err_set(ZP_EFORMAT, "%s: invalid JSON at byte %zu", name, bad);
    }
    /* jsmn accepts several top-level values; a document is exactly one. */
    if (json_skip(d, 0) != n) return err_set(ZP_EFORMAT, "%s: trailing data after JSON value", name);
    for (size_t i = (size_t)d->tok[0].end; i < d->len; i++)
        if (!strchr(" \t\r\n", d->src[i]))
            return err_set(ZP_EFORMAT, "%s: trailing data after JSON value", name);
    return 0;
}

static int jsmn_fail(const char *name, int n, unsigned pos) {
    return err_set(ZP_EFORMAT, "%s: invalid JSON (%s at byte %u)", name,
                   n == JSMN_ERROR_INVAL ? "bad character" : "truncated", pos);
}

int json_parse(json_doc *d, arena *a, const char *src, size_t len, const char *name) {
    memset(d, 0, sizeof *d);
    d->src = src;
    d->len = len;
    d->name = name;
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, src, len, NULL, 0);
    if (n < 0) return jsmn_fail(name, n, p.pos);
    if (n == 0) return err_set(ZP_EFORMAT, "%s: empty JSON document", name);
    d->tok = arena_temp(a, sizeof(jsmntok_t) * (size_t)n, 8, name);
    if (!d->tok) return ZP_ENOMEM;
    jsmn_init(&p);
    int m = jsmn_parse(&p, src, len, d->tok, (unsigned)n);
    if (m != n) return err_set(ZP_EFORMAT, "%s: invalid JSON", name);
    return finish_parse(d, n, name);
}

int json_parse_buf(json_doc *d, jsmntok_t *tok, int cap, const char *src, size_t len,
                   const char *name) {
    memset(d, 0, sizeof *d);
    d->src = src;
    d->len = len;
    d->name = name;
    d->tok = tok;
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, src, len, tok, (unsigned)cap);
    if (n == JSMN_ERROR_NOMEM)
        return err_set(ZP_ELIMIT, "%s: JSON document has more than %d tokens", name, cap);
    if (n < 0) return jsmn_fail(name, n, p.pos);
    if (n == 0) return err_set(ZP_EFORMAT, "%s: empty JSON document", name);
    return finish_parse(d, n, name);
}

int json_load(json_doc *d, arena *a, const char *path) {
    char *text;
    size_t len;
    int rc = arena_read_file(a, path, &text, &len);
    if (rc) return rc;
    return json_parse(d, a, text, len, path);
}

bool json_is_obj(const json_doc *d, int t) { return t >= 0 && d->tok[t].type == JSMN_OBJECT; }
bool json_is_arr(const json_doc *d, int t) { return t >= 0 && d->tok[t].type == JSMN_ARRAY; }
bool json_is_str(const json_doc *d, int t) { return t >= 0 && d->tok[t].type == JSMN_STRING; }
bool json_is_null(const json_doc *d, int t) {
    return t >= 0 && d->tok[t].type == JSMN_PRIMITIVE && d->src[d->tok[t].start] == 'n';
}

int json_skip(const json_doc *d, int t) {
    int end = d->tok[t].end, j = t + 1;
    while (j < d->ntok && d->tok[j].start < end) j++;
    return j;
}

int json_get(const json_doc *d, int obj, const char *key) {
    if (!json_is_obj(d, obj)) return -1;
    int n = d->tok[obj].size, k = obj + 1;
    for (int i = 0; i < n; i++) {
        if (json_str_eq(d, k, key)) return k + 1;
        k = json_skip(d, k + 1);
    }
    return -1;
}

int json_len(const json_doc *d, int t) { return t >= 0 ? d->tok[t].size : 0; }

int json_at(const json_doc *d, int arr, int i) {
    if (!json_is_arr(d, arr) || i < 0 || i >= d->tok[arr].size) return -1;
    int e = arr + 1;
    while (i-- > 0) e = json_skip(d, e);
    return e;
}

static int put_utf8(char *out, size_t cap, size_t *o, uint32_t cp) {
    char b[4];
    int n;
    if (cp < 0x80) b[0] = (char)cp, n = 1;
    else if (cp < 0x800) b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        b[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        b[0] = (char)(0xF0 | cp >> 18), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    if (*o + (size_t)n >= cap) return ZP_ELIMIT;
    memcpy(out + *o, b, (size_t)n);
    *o += (size_t)n;
    return 0;
}

static int hex4(const char *s, size_t n, size_t i, uint32_t *v) {
    if (i + 4 > n) return -1;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[i + (size_t)k];
        int h = c >= '0' && c <= '9' ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (h < 0) return -1;
        *v = *v << 4 | (uint32_t)h;
    }
    return 0;
}

int json_unescape(const char *s, size_t n, char *out, size_t cap, size_t *outlen) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\') {
            if (o + 1 >= cap) return err_set(ZP_ELIMIT, "JSON string longer than %zu bytes", cap);
            out[o++] = c;
            continue;
        }
        if (++i >= n) return err_set(ZP_EFORMAT, "JSON string ends inside an escape");
        uint32_t cp;
        switch (s[i]) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (hex4(s, n, i + 1, &cp)) return err_set(ZP_EFORMAT, "bad \\u escape in JSON string");
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t lo;
                if (i + 2 >= n || s[i + 1] != '\\' || s[i + 2] != 'u' || hex4(s, n, i + 3, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return err_set(ZP_EFORMAT, "lone high surrogate \\u%04X in JSON string", cp);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return err_set(ZP_EFORMAT, "lone low surrogate \\u%04X in JSON string", cp);
            }
            break;
        default: return err_set(ZP_EFORMAT, "bad escape '\\%c' in JSON string", s[i]);
        }
        if (put_utf8(out, cap, &o, cp)) return err_set(ZP_ELIMIT, "JSON string longer than %zu bytes", cap);
    }
    if (o >= cap) return err_set(ZP_ELIMIT, "JSON string longer than %zu bytes", cap);
    out[o] = 0;
    if (outlen) *outlen = o;
    return 0;
}

int json_str(const json_doc *d, int t, char *out, size_t cap, size_t *outlen) {
    if (!json_is_str(d, t)) return err_set(ZP_EFORMAT, "%s: expected a string", d->name);
    const jsmntok_t *k = &d->tok[t];
    return json_unescape(d->src + k->start, (size_t)(k->end - k->start), out, cap, outlen);
}

bool json_str_eq(const json_doc *d, int t, const char *s) {
    if (!json_is_str(d, t)) return false;
    const jsmntok_t *k = &d->tok[t];
    size_t n = (size_t)(k->end - k->start), sl = strlen(s);
    const char *p = d->src + k->start;
    if (!memchr(p, '\\', n)) return n == sl && memcmp(p, s, n) == 0;
    char buf[256];
    size_t bl;
    if (sl >= sizeof buf || json_unescape(p, n, buf, sizeof buf, &bl)) return false;
    return bl == sl && memcmp(buf, s, sl) == 0;
}

static int prim(const json_doc *d, int t, char *buf, size_t cap) {
    if (t < 0 || d->tok[t].type != JSMN_PRIMITIVE)
        return err_set(ZP_EFORMAT, "%s: expected a number or literal", d->name);
    size_t n = (size_t)(d->tok[t].end - d->tok[t].start);
    if (n >= cap) return err_set(ZP_EFORMAT, "%s: number too long", d->name);
    memcpy(buf, d->src + d->tok[t].start, n);
    buf[n] = 0;
    return 0;
}

int json_i64(const json_doc *d, int t, int64_t *v) {
    char buf[64], *end;
    if (prim(d, t, buf, sizeof buf)) return ZP_EFORMAT;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (*end == '.' || *end == 'e' || *end == 'E') {
        double f = strtod(buf, &end);
        if (*end || f != floor(f) || fabs(f) > 9e15)
            return err_set(ZP_EFORMAT, "%s: '%s' is not an integer", d->name, buf);
        x = (long long)f;
    } else if (*end || errno || end == buf) {
        return err_set(ZP_EFORMAT, "%s: '%s' is not an integer", d->name, buf);
    }
    *v = x;
    return 0;
}

int json_f64(const json_doc *d, int t, double *v) {
    char buf[64], *end;
    if (prim(d, t, buf, sizeof buf)) return ZP_EFORMAT;
    errno = 0;
    double x = strtod(buf, &end);
    if (*end || end == buf || errno || !isfinite(x))
        return err_set(ZP_EFORMAT, "%s: '%s' is not a number", d->name, buf);
    *v = x;
    return 0;
}

int json_bool(const json_doc *d, int t, bool *v) {
    char buf[8];
    if (prim(d, t, buf, sizeof buf)) return ZP_EFORMAT;
    if (!strcmp(buf, "true")) *v = true;
    else if (!strcmp(buf, "false")) *v = false;
    else return err_set(ZP_EFORMAT, "%s: '%s' is not a boolean", d->name, buf);
    return 0;
}

int json_raw(const json_doc *d, int t, const char **s) {
    if (t < 0) return ZP_EINVAL;
    *s = d->src + d->tok[t].start;
    return d->tok[t].end - d->tok[t].start;
}

/* Length of a valid UTF-8 sequence at s (1..4) or 0 if invalid. */
static int utf8_valid(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (!len || c > 0xF4 || (size_t)len > n) return 0;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;
    if (c == 0xED && s[1] > 0x9F) return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;
    if (c == 0xF4 && s[1] > 0x8F) return 0;
    return len;
}

long json_escape(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
#define PUT(str, l)                                                                                \
    do {                                                                                           \
        if (o + (l) >= cap) return ZP_ELIMIT;                                                      \
        memcpy(out + o, str, l);                                                                   \
        o += (l);                                                                                  \
    } while (0)
    PUT("\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        if (c == '"' || c == '\\') {
            e[0] = '\\', e[1] = (char)c;
            PUT(e, 2);
            i++;
        } else if (c < 0x20) {
            const char *m = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            if (m) PUT(m, 2);
            else {
                static const char hx[] = "0123456789abcdef";
                char u[6] = {'\\', 'u', '0', '0', hx[c >> 4], hx[c & 15]};
                PUT(u, 6);
            }
            i++;
        } else {
            int l = utf8_valid((const unsigned char *)s + i, n - i);
            if (l) {
                PUT(s + i, (size_t)l);
                i += (size_t)l;
            } else {
                PUT("\xEF\xBF\xBD", 3);
                i++;
            }
        }
    }
    PUT("\"", 1);
#undef PUT
    out[o] = 0;
    return (long)o;
}
