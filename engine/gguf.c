/* gguf: GGUF version 3 files (see gguf.h).
 *
 * Parsing is one bounds-checked cursor over the buffer: every read first checks that its bytes
 * are there, and a failure names the file, the key or tensor being read and the field. The
 * metadata and the tensor infos are each walked twice: the first walk validates the structure
 * and so proves that the counts in the header are really in the file (a header claiming 2^40
 * keys fails as a format error, never as an arena allocation of that size); the second fills
 * the tables sized by the first and finds duplicates through the hash tables. The check for
 * overlapping tensors sorts an index by offset in the arena's temporary side, released before
 * returning.
 *
 * Dequantization: one loop per type over ggml's block layouts, with ggml's reference
 * arithmetic (dequantize_row_* in ggml-quants.c) in the same order. Each value rounds at most
 * once, so it is the exact result correctly rounded whatever the order or a fused
 * multiply-add: an f16 scale (11 significant bits) times the integer sub-block scale and
 * quant (together at most 12 bits: Q6_K's 7-bit scale and 5-bit quant; its extremes -128 and
 * -32 have one) is exact in f32's 24, as is the min's product, and only the final sum or
 * difference rounds. f16 -> f32 is drv/dtype.h's exact conversion (subnormals included).
 */
#include "engine/gguf.h"

#include "arena/err.h"
#include "drv/dtype.h"

#include <assert.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads the little-endian fields of GGUF files with plain loads"
#endif

#define GGUF_VERSION       3
#define GGUF_KEY_MAX       65535 /* the spec's limits on key and tensor name lengths */
#define GGUF_NAME_MAX      64
#define GGUF_DIMS_MAX      4
#define GGUF_ALIGN_DEFAULT 32
#define GGUF_ENTRIES_MAX   ((uint64_t)1 << 31) /* keys or tensors: indices fit the hash slots */
/* The fewest bytes one entry can take: key length + 1-byte key + type + 1-byte value; name
 * length + 1-byte name + ndim + one extent + type + offset; an inner array's type and count. */
#define KV_MIN_BYTES     14
#define TENSOR_MIN_BYTES 33
#define ARRAY_MIN_BYTES  12
#define QK_K             256

/* ---- types ------------------------------------------------------------------------------ */

/* ggml's tensor types by number; block geometry only for the ones zipage reads. */
static const struct {
    const char *name;
    uint16_t block, bytes;
} ttypes[] = {
    [GGUF_T_F32] = {"F32", 1, 4},
    [GGUF_T_F16] = {"F16", 1, 2},
    [GGUF_T_Q4_0] = {"Q4_0", 32, 18},
    [GGUF_T_Q4_1] = {"Q4_1", 32, 20},
    [6] = {"Q5_0", 0, 0},
    [7] = {"Q5_1", 0, 0},
    [GGUF_T_Q8_0] = {"Q8_0", 32, 34},
    [9] = {"Q8_1", 0, 0},
    [10] = {"Q2_K", 0, 0},
    [11] = {"Q3_K", 0, 0},
    [GGUF_T_Q4_K] = {"Q4_K", QK_K, 144},
    [GGUF_T_Q5_K] = {"Q5_K", QK_K, 176},
    [GGUF_T_Q6_K] = {"Q6_K", QK_K, 210},
    [15] = {"Q8_K", 0, 0},
    [16] = {"IQ2_XXS", 0, 0},
    [17] = {"IQ2_XS", 0, 0},
    [18] = {"IQ3_XXS", 0, 0},
    [19] = {"IQ1_S", 0, 0},
    [20] = {"IQ4_NL", 0, 0},
    [21] = {"IQ3_S", 0, 0},
    [22] = {"IQ2_S", 0, 0},
    [23] = {"IQ4_XS", 0, 0},
    [24] = {"I8", 0, 0},
    [25] = {"I16", 0, 0},
    [26] = {"I32", 0, 0},
    [27] = {"I64", 0, 0},
    [28] = {"F64", 0, 0},
    [29] = {"IQ1_M", 0, 0},
    [GGUF_T_BF16] = {"BF16", 1, 2},
    [34] = {"TQ1_0", 0, 0},
    [35] = {"TQ2_0", 0, 0},
    [39] = {"MXFP4", 0, 0},
    [40] = {"NVFP4", 0, 0},
    [41] = {"Q1_0", 0, 0},
};
#define N_TTYPES (sizeof ttypes / sizeof ttypes[0])
static const char supported_types[] = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K";

static const struct {
    const char *name;
    uint8_t size; /* bytes of one value; 0 for string and array */
} vtypes[] = {
    [GGUF_V_U8] = {"u8", 1},       [GGUF_V_I8] = {"i8", 1},     [GGUF_V_U16] = {"u16", 2},
    [GGUF_V_I16] = {"i16", 2},     [GGUF_V_U32] = {"u32", 4},   [GGUF_V_I32] = {"i32", 4},
    [GGUF_V_F32] = {"f32", 4},     [GGUF_V_BOOL] = {"bool", 1}, [GGUF_V_STRING] = {"string", 0},
    [GGUF_V_ARRAY] = {"array", 0}, [GGUF_V_U64] = {"u64", 8},   [GGUF_V_I64] = {"i64", 8},
    [GGUF_V_F64] = {"f64", 8},
};
#define N_VTYPES (sizeof vtypes / sizeof vtypes[0])

const char *gguf_type_name(uint32_t type) {
    return type < N_TTYPES && ttypes[type].name ? ttypes[type].name : "?";
}

const char *gguf_vtype_name(uint32_t type) {
    return type < N_VTYPES ? vtypes[type].name : "?";
}

size_t gguf_vtype_size(uint32_t type) {
    return type < N_VTYPES ? vtypes[type].size : 0;
}

int64_t gguf_type_block(uint32_t type) {
    return type < N_TTYPES ? ttypes[type].block : 0;
}

size_t gguf_type_block_bytes(uint32_t type) {
    return type < N_TTYPES ? ttypes[type].bytes : 0;
}

static bool vtype_is_int(uint32_t t) {
    return t <= GGUF_V_I32 || t == GGUF_V_U64 || t == GGUF_V_I64;
}

/* ---- the cursor ------------------------------------------------------------------------- */

typedef enum { AT_HEADER, AT_KEY, AT_TENSOR } cur_at;

typedef struct cur {
    const uint8_t *buf;
    size_t len, pos;
    const char *file;
    /* what is being read, for messages: entry idx of the keys or tensors, and its name once
     * read (not NUL-terminated) */
    cur_at at;
    uint64_t idx;
    const uint8_t *name;
    size_t name_len;
} cur;

/* Records "FILE: key 'K': MESSAGE" (or tensor, or nothing at the header); non-printable bytes
 * of the name print as '?'. */
__attribute__((format(printf, 3, 4))) static int fail(const cur *c, int code, const char *fmt,
                                                      ...) {
    char msg[320], who[160] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->at != AT_HEADER) {
        const char *kind = c->at == AT_KEY ? "key" : "tensor";
        if (!c->name) {
            snprintf(who, sizeof who, "%s %llu: ", kind, (unsigned long long)c->idx);
        } else {
            char nm[100];
            size_t n = c->name_len < 96 ? c->name_len : 96;
            for (size_t i = 0; i < n; i++)
                nm[i] = c->name[i] >= 32 && c->name[i] < 127 ? (char)c->name[i] : '?';
            nm[n] = 0;
            snprintf(who, sizeof who, "%s '%s%s': ", kind, nm, n < c->name_len ? "..." : "");
        }
    }
    return err_set(code, "%s: %s%s", c->file, who, msg);
}

static size_t left(const cur *c) {
    return c->len - c->pos;
}

/* The next n bytes in *p, or a message naming field when the file ends first. */
static int take(cur *c, uint64_t n, const char *field, const uint8_t **p) {
    if (n > left(c))
        return fail(c, ZP_EFORMAT,
                    "%s (%llu bytes at offset %zu) runs past the end of the file "
                    "(%zu bytes)",
                    field, (unsigned long long)n, c->pos, c->len);
    *p = c->buf + c->pos;
    c->pos += (size_t)n;
    return 0;
}

static int get_u32(cur *c, const char *field, uint32_t *v) {
    const uint8_t *p = NULL;
    int rc = take(c, 4, field, &p);
    if (!rc) memcpy(v, p, 4);
    return rc;
}

static int get_u64(cur *c, const char *field, uint64_t *v) {
    const uint8_t *p = NULL;
    int rc = take(c, 8, field, &p);
    if (!rc) memcpy(v, p, 8);
    return rc;
}

/* A GGUF string: u64 length, then the bytes. */
static int get_str(cur *c, const char *field, const uint8_t **s, uint64_t *n) {
    int rc = get_u64(c, field, n);
    return rc ? rc : take(c, *n, field, s);
}

static int check_vtype(cur *c, uint32_t t, const char *field) {
    if (t >= N_VTYPES) return fail(c, ZP_EFORMAT, "unknown %s %u", field, t);
    return 0;
}

/* ---- metadata --------------------------------------------------------------------------- */

/* Checks n elements of type t (not an array) at the cursor and moves past them. */
static int skip_elems(cur *c, uint32_t t, uint64_t n) {
    if (t == GGUF_V_STRING) {
        if (n > left(c) / 8)
            return fail(c, ZP_EFORMAT, "array of %llu strings runs past the end of the file",
                        (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *s;
            uint64_t len;
            int rc = get_str(c, "array string", &s, &len);
            if (rc) return rc;
        }
        return 0;
    }
    const uint8_t *p = NULL;
    if (n > left(c) / vtypes[t].size)
        return fail(c, ZP_EFORMAT, "array of %llu %s values runs past the end of the file",
                    (unsigned long long)n, vtypes[t].name);
    int rc = take(c, n * vtypes[t].size, "array", &p);
    if (rc) return rc;
    if (t == GGUF_V_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (p[i] > 1)
                return fail(c, ZP_EFORMAT, "bool element %llu is %u (must be 0 or 1)",
                            (unsigned long long)i, p[i]);
    return 0;
}

/* An array's element type, count and elements (nested: inside an array of arrays). */
static int read_array(cur *c, bool nested, gguf_kv *kv) {
    uint32_t et;
    uint64_t n;
    int rc;
    if ((rc = get_u32(c, "array type", &et)) || (rc = check_vtype(c, et, "array element type")) ||
        (rc = get_u64(c, "array length", &n)))
        return rc;
    kv->type = GGUF_V_ARRAY;
    kv->elem_type = et;
    kv->n = n;
    kv->data = c->buf + c->pos;
    if (et != GGUF_V_ARRAY) return skip_elems(c, et, n);
    if (nested) return fail(c, ZP_EUNSUP, "arrays nested more than one level are not supported");
    if (n > left(c) / ARRAY_MIN_BYTES)
        return fail(c, ZP_EFORMAT, "array of %llu arrays runs past the end of the file",
                    (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        gguf_kv inner;
        if ((rc = read_array(c, true, &inner))) return rc;
    }
    return 0;
}

/* Key-value pair i at the cursor into *kv (key not copied: *key, *key_len). */
static int read_kv(cur *c, uint64_t i, gguf_kv *kv, const uint8_t **key, uint64_t *key_len) {
    c->at = AT_KEY, c->idx = i, c->name = NULL;
    uint32_t t;
    int rc = get_str(c, "key", key, key_len);
    if (rc) return rc;
    if (*key_len == 0) return fail(c, ZP_EFORMAT, "empty key");
    c->name = *key, c->name_len = (size_t)*key_len;
    if (*key_len > GGUF_KEY_MAX)
        return fail(c, ZP_EFORMAT, "key of %llu bytes (GGUF allows %d)",
                    (unsigned long long)*key_len, GGUF_KEY_MAX);
    if (memchr(*key, 0, (size_t)*key_len)) return fail(c, ZP_EFORMAT, "key holds a NUL byte");
    if ((rc = get_u32(c, "value type", &t)) || (rc = check_vtype(c, t, "value type"))) return rc;
    kv->type = kv->elem_type = t;
    if (t == GGUF_V_ARRAY) return read_array(c, false, kv);
    if (t == GGUF_V_STRING) return get_str(c, "string value", &kv->data, &kv->n);
    kv->n = 1;
    if ((rc = take(c, vtypes[t].size, "value", &kv->data))) return rc;
    if (t == GGUF_V_BOOL && kv->data[0] > 1)
        return fail(c, ZP_EFORMAT, "bool value %u (must be 0 or 1)", kv->data[0]);
    return 0;
}

static uint64_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

/* A table of at least 2n slots (a power of two), all empty; NULL table for n = 0. */
static int hash_alloc(arena *a, uint64_t n, uint32_t **table, uint64_t *mask, const char *what) {
    *table = NULL, *mask = 0;
    if (!n) return 0;
    uint64_t cap = 1;
    while (cap < 2 * n)
        cap <<= 1;
    if (!(*table = arena_alloc(a, cap * sizeof **table, 64, what))) return ZP_ENOMEM;
    *mask = cap - 1;
    return 0;
}

/* The slot of name in a table over the entries at base, stride bytes apart, whose first
 * member is their NUL-terminated name: the slot holding it, or the empty one where it goes. */
static uint64_t hash_slot(const uint32_t *table, uint64_t mask, const void *base, size_t stride,
                          const char *name, size_t len) {
    uint64_t s = name_hash(name, len) & mask;
    for (; table[s]; s = (s + 1) & mask) {
        const char *other;
        memcpy(&other, (const char *)base + (size_t)(table[s] - 1) * stride, sizeof other);
        if (!strcmp(other, name)) break;
    }
    return s;
}
_Static_assert(offsetof(gguf_kv, key) == 0 && offsetof(gguf_tensor, name) == 0,
               "hash_slot reads the name first");

static int parse_kvs(gguf_file *g, arena *a, cur *c) {
    size_t start = c->pos;
    gguf_kv kv;
    const uint8_t *key;
    uint64_t key_len;
    int rc;
    for (int64_t i = 0; i < g->n_kv; i++) /* first walk: validate */
        if ((rc = read_kv(c, (uint64_t)i, &kv, &key, &key_len))) return rc;
    if (g->n_kv) {
        g->kv = arena_alloc(a, sizeof *g->kv * (size_t)g->n_kv, 64, "gguf keys");
        if (!g->kv) return ZP_ENOMEM;
    }
    if ((rc = hash_alloc(a, (uint64_t)g->n_kv, &g->kv_hash, &g->kv_mask, "gguf key hash")))
        return rc;
    c->pos = start;
    for (int64_t i = 0; i < g->n_kv; i++) { /* second walk: fill, find duplicates */
        gguf_kv *e = &g->kv[i];
        rc = read_kv(c, (uint64_t)i, e, &key, &key_len);
        assert(rc == 0); /* the first walk read the same bytes */
        if (!(e->key = arena_strdup(a, (const char *)key, (size_t)key_len, "gguf key")))
            return ZP_ENOMEM;
        uint64_t s =
            hash_slot(g->kv_hash, g->kv_mask, g->kv, sizeof *g->kv, e->key, (size_t)key_len);
        if (g->kv_hash[s])
            return fail(c, ZP_EFORMAT, "duplicate key (entries %u and %lld)", g->kv_hash[s] - 1,
                        (long long)i);
        g->kv_hash[s] = (uint32_t)i + 1;
    }
    c->at = AT_HEADER;
    return 0;
}

/* general.alignment: a u32 power of two when present, else 32. */
static int parse_alignment(gguf_file *g, cur *c) {
    const gguf_kv *kv = gguf_find(g, "general.alignment");
    g->alignment = GGUF_ALIGN_DEFAULT;
    if (!kv) return 0;
    if (kv->type != GGUF_V_U32)
        return err_set(ZP_EFORMAT, "%s: key 'general.alignment' is %s (must be u32)", c->file,
                       gguf_vtype_name(kv->type));
    uint32_t v;
    memcpy(&v, kv->data, 4);
    if (v == 0 || (v & (v - 1)))
        return err_set(ZP_EFORMAT, "%s: key 'general.alignment' = %u is not a power of two",
                       c->file, v);
    g->alignment = v;
    return 0;
}

/* ---- tensor infos ----------------------------------------------------------------------- */

/* Tensor info i at the cursor into *t (name not copied: *name, *name_len; data not set). */
static int read_tensor(cur *c, uint64_t i, uint32_t align, gguf_tensor *t, const uint8_t **name,
                       uint64_t *name_len) {
    c->at = AT_TENSOR, c->idx = i, c->name = NULL;
    uint32_t ndim;
    int rc = get_str(c, "name", name, name_len);
    if (rc) return rc;
    if (*name_len == 0) return fail(c, ZP_EFORMAT, "empty name");
    c->name = *name, c->name_len = (size_t)*name_len;
    if (*name_len > GGUF_NAME_MAX)
        return fail(c, ZP_EFORMAT, "name of %llu bytes (GGUF allows %d)",
                    (unsigned long long)*name_len, GGUF_NAME_MAX);
    if (memchr(*name, 0, (size_t)*name_len)) return fail(c, ZP_EFORMAT, "name holds a NUL byte");
    if ((rc = get_u32(c, "dimension count", &ndim))) return rc;
    if (ndim < 1 || ndim > GGUF_DIMS_MAX)
        return fail(c, ZP_EFORMAT, "%u dimensions (1 to %d allowed)", ndim, GGUF_DIMS_MAX);
    t->ndim = (int)ndim;
    t->nelem = 1;
    for (int d = 0; d < GGUF_DIMS_MAX; d++) {
        uint64_t ne = 1;
        if (d < t->ndim && (rc = get_u64(c, "dimension", &ne))) return rc;
        if (ne == 0) return fail(c, ZP_EFORMAT, "dimension %d is 0", d);
        if (ne > (uint64_t)INT64_MAX)
            return fail(c, ZP_EFORMAT, "dimension %d is %llu (more than 2^63 - 1)", d,
                        (unsigned long long)ne);
        if ((int64_t)ne > INT64_MAX / t->nelem)
            return fail(c, ZP_EFORMAT, "element count overflows 64 bits");
        t->ne[d] = (int64_t)ne;
        t->nelem *= (int64_t)ne;
    }
    if ((rc = get_u32(c, "type", &t->type))) return rc;
    if (t->type >= N_TTYPES || !ttypes[t->type].name)
        return fail(c, ZP_EFORMAT, "unknown tensor type %u", t->type);
    if (!ttypes[t->type].block)
        return fail(c, ZP_EUNSUP, "type %s (%u) is not supported (%s)", ttypes[t->type].name,
                    t->type, supported_types);
    uint64_t block = ttypes[t->type].block, bytes = ttypes[t->type].bytes;
    if ((uint64_t)t->ne[0] % block)
        return fail(c, ZP_EFORMAT, "first dimension %lld is not a multiple of %s's block of %llu",
                    (long long)t->ne[0], ttypes[t->type].name, (unsigned long long)block);
    uint64_t blocks = (uint64_t)t->nelem / block;
    if (blocks > UINT64_MAX / bytes) return fail(c, ZP_EFORMAT, "byte count overflows 64 bits");
    t->nbytes = blocks * bytes;
    if ((rc = get_u64(c, "offset", &t->offset))) return rc;
    if (t->offset % align)
        return fail(c, ZP_EFORMAT, "offset %llu is not a multiple of the alignment %u",
                    (unsigned long long)t->offset, align);
    return 0;
}

typedef struct placed {
    uint64_t offset;
    uint32_t idx;
} placed;

/* By offset, ties by index (so the message names a fixed pair). */
static int by_offset(const void *x, const void *y) {
    const placed *a = x, *b = y;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Every tensor inside the data section, no two sharing a byte (none is empty). */
static int check_layout(gguf_file *g, arena *a, cur *c) {
    if (!g->n_tensors) return 0;
    if (g->data_offset > c->len)
        return err_set(ZP_EFORMAT,
                       "%s: the data section starts at %llu, past the end of the file "
                       "(%zu bytes)",
                       c->file, (unsigned long long)g->data_offset, c->len);
    uint64_t dlen = c->len - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset > dlen || t->nbytes > dlen - t->offset)
            return err_set(ZP_EFORMAT,
                           "%s: tensor '%s': data [%llu, +%llu) lies outside the data "
                           "section (%llu bytes from offset %llu)",
                           c->file, t->name, (unsigned long long)t->offset,
                           (unsigned long long)t->nbytes, (unsigned long long)dlen,
                           (unsigned long long)g->data_offset);
        t->data = c->buf + g->data_offset + t->offset;
    }
    placed *by = arena_temp(a, sizeof *by * (size_t)g->n_tensors, 8, "gguf tensor order");
    if (!by) return ZP_ENOMEM;
    for (int64_t i = 0; i < g->n_tensors; i++)
        by[i] = (placed){g->tensors[i].offset, (uint32_t)i};
    qsort(by, (size_t)g->n_tensors, sizeof *by, by_offset);
    const gguf_tensor *last = &g->tensors[by[0].idx]; /* the one reaching furthest so far */
    for (int64_t i = 1; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[by[i].idx];
        if (t->offset < last->offset + last->nbytes)
            return err_set(ZP_EFORMAT,
                           "%s: tensors '%s' [%llu, +%llu) and '%s' [%llu, +%llu) "
                           "overlap",
                           c->file, last->name, (unsigned long long)last->offset,
                           (unsigned long long)last->nbytes, t->name, (unsigned long long)t->offset,
                           (unsigned long long)t->nbytes);
        if (t->offset + t->nbytes > last->offset + last->nbytes) last = t;
    }
    return 0;
}

static int parse_tensors(gguf_file *g, arena *a, cur *c) {
    size_t start = c->pos;
    gguf_tensor t;
    const uint8_t *name;
    uint64_t name_len;
    int rc;
    for (int64_t i = 0; i < g->n_tensors; i++) /* first walk: validate */
        if ((rc = read_tensor(c, (uint64_t)i, g->alignment, &t, &name, &name_len))) return rc;
    if (g->n_tensors) {
        g->tensors = arena_alloc(a, sizeof *g->tensors * (size_t)g->n_tensors, 64, "gguf tensors");
        if (!g->tensors) return ZP_ENOMEM;
    }
    if ((rc = hash_alloc(a, (uint64_t)g->n_tensors, &g->t_hash, &g->t_mask, "gguf tensor hash")))
        return rc;
    c->pos = start;
    for (int64_t i = 0; i < g->n_tensors; i++) { /* second walk: fill, find duplicates */
        gguf_tensor *e = &g->tensors[i];
        rc = read_tensor(c, (uint64_t)i, g->alignment, e, &name, &name_len);
        assert(rc == 0); /* the first walk read the same bytes */
        if (!(e->name = arena_strdup(a, (const char *)name, (size_t)name_len, "gguf tensor name")))
            return ZP_ENOMEM;
        uint64_t s = hash_slot(g->t_hash, g->t_mask, g->tensors, sizeof *g->tensors, e->name,
                               (size_t)name_len);
        if (g->t_hash[s])
            return fail(c, ZP_EFORMAT, "duplicate tensor name (entries %u and %lld)",
                        g->t_hash[s] - 1, (long long)i);
        g->t_hash[s] = (uint32_t)i + 1;
    }
    c->at = AT_HEADER;
    g->data_offset = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
    return check_layout(g, a, c);
}

/* ---- the file --------------------------------------------------------------------------- */

static int parse_header(gguf_file *g, cur *c) {
    const uint8_t *magic;
    uint64_t nt, nkv;
    int rc;
    if (c->len < 4 || memcmp(c->buf, "GGUF", 4))
        return err_set(ZP_EFORMAT, "%s: not a GGUF file (it does not start with 'GGUF')", c->file);
    if ((rc = take(c, 4, "magic", &magic)) || (rc = get_u32(c, "version", &g->version))) return rc;
    if (g->version == (uint32_t)GGUF_VERSION << 24)
        return err_set(ZP_EUNSUP, "%s: big-endian GGUF files are not supported", c->file);
    if (g->version == 0 || g->version > 0xFFFF)
        return err_set(ZP_EFORMAT, "%s: GGUF version %u is not a valid version", c->file,
                       g->version);
    if (g->version != GGUF_VERSION)
        return err_set(ZP_EUNSUP, "%s: GGUF version %u is not supported (zipage reads version %d)",
                       c->file, g->version, GGUF_VERSION);
    if ((rc = get_u64(c, "tensor count", &nt)) || (rc = get_u64(c, "key count", &nkv))) return rc;
    /* Each entry takes some bytes, so no file holds more than this many (the walks then prove
     * the counts); the products below cannot overflow after the first two tests. */
    if (nkv > left(c) / KV_MIN_BYTES || nt > left(c) / TENSOR_MIN_BYTES ||
        nkv * KV_MIN_BYTES + nt * TENSOR_MIN_BYTES > left(c) || nkv >= GGUF_ENTRIES_MAX ||
        nt >= GGUF_ENTRIES_MAX)
        return err_set(ZP_EFORMAT,
                       "%s: the header claims %llu keys and %llu tensors, more than "
                       "the file's %zu bytes can hold",
                       c->file, (unsigned long long)nkv, (unsigned long long)nt, c->len);
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    return 0;
}

int gguf_parse(gguf_file *g, arena *a, const uint8_t *buf, size_t len, const char *name) {
    memset(g, 0, sizeof *g);
    cur c = {.buf = buf, .len = len, .file = name};
    size_t mark = arena_temp_mark(a);
    int rc;
    if (!(g->path = arena_strdup(a, name, strlen(name), "gguf path"))) return ZP_ENOMEM;
    g->map = buf, g->len = len;
    if ((rc = parse_header(g, &c)) || (rc = parse_kvs(g, a, &c)) || (rc = parse_alignment(g, &c)) ||
        (rc = parse_tensors(g, a, &c)))
        memset(g, 0, sizeof *g);
    arena_temp_reset(a, mark);
    return rc;
}

int gguf_open(gguf_file *g, arena *a, const char *path) {
    const uint8_t *m;
    size_t len;
    memset(g, 0, sizeof *g);
    int rc = arena_map_file(a, path, &m, &len);
    if (rc) return rc;
    if ((rc = gguf_parse(g, a, m, len, path))) {
        arena_unmap_file(m, len);
        return rc;
    }
    g->mapped = true;
    return 0;
}

void gguf_close(gguf_file *g) {
    if (g->mapped) arena_unmap_file(g->map, g->len);
    memset(g, 0, sizeof *g);
}

bool gguf_is_file(const char *path) {
    char magic[4];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool is = read(fd, magic, 4) == 4 && !memcmp(magic, "GGUF", 4);
    close(fd);
    return is;
}

/* ---- lookups and getters ---------------------------------------------------------------- */

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    if (!g->kv_hash) return NULL;
    uint64_t s = hash_slot(g->kv_hash, g->kv_mask, g->kv, sizeof *g->kv, key, strlen(key));
    return g->kv_hash[s] ? &g->kv[g->kv_hash[s] - 1] : NULL;
}

const gguf_tensor *gguf_tensor_find(const gguf_file *g, const char *name) {
    if (!g->t_hash) return NULL;
    uint64_t s =
        hash_slot(g->t_hash, g->t_mask, g->tensors, sizeof *g->tensors, name, strlen(name));
    return g->t_hash[s] ? &g->tensors[g->t_hash[s] - 1] : NULL;
}

/* The integer of type t at p: true with *u when it is not negative, false with *s when it is. */
static bool int_at(uint32_t t, const uint8_t *p, uint64_t *u, int64_t *s) {
    int64_t v;
    switch (t) {
    case GGUF_V_U8:
        *u = p[0];
        return true;
    case GGUF_V_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        *u = x;
        return true;
    }
    case GGUF_V_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        *u = x;
        return true;
    }
    case GGUF_V_U64:
        memcpy(u, p, 8);
        return true;
    case GGUF_V_I8:
        v = (int8_t)p[0];
        break;
    case GGUF_V_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        v = x;
        break;
    }
    case GGUF_V_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        v = x;
        break;
    }
    default:
        assert(t == GGUF_V_I64);
        memcpy(&v, p, 8);
    }
    if (v >= 0)
        *u = (uint64_t)v;
    else
        *s = v;
    return v >= 0;
}

/* A numeric value of type t at p (integers or floats) as a double. */
static double f64_at(uint32_t t, const uint8_t *p) {
    if (t == GGUF_V_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (t == GGUF_V_F64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    uint64_t u;
    int64_t s;
    return int_at(t, p, &u, &s) ? (double)u : (double)s;
}

static int wrong_type(const gguf_file *g, const gguf_kv *kv, const char *want) {
    return err_set(ZP_EFORMAT, "%s: key '%s' is %s%s%s, expected %s", g->path, kv->key,
                   kv->type == GGUF_V_ARRAY ? "an array of " : "", gguf_vtype_name(kv->elem_type),
                   kv->type == GGUF_V_ARRAY ? " values" : "", want);
}

/* The key's integer value (any integer type): *u (true) or *s (false, negative). */
static int get_int(const gguf_file *g, const char *key, const gguf_kv **kv, uint64_t *u, int64_t *s,
                   bool *nonneg) {
    if (!(*kv = gguf_find(g, key))) return ZP_ENOTFOUND;
    if (!vtype_is_int((*kv)->type)) return wrong_type(g, *kv, "an integer");
    *nonneg = int_at((*kv)->type, (*kv)->data, u, s);
    return 0;
}

int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out) {
    const gguf_kv *kv;
    uint64_t u;
    int64_t s;
    bool nonneg;
    int rc = get_int(g, key, &kv, &u, &s, &nonneg);
    if (rc) return rc;
    if (!nonneg || u > UINT32_MAX)
        return err_set(ZP_EFORMAT, "%s: key '%s' = %s%llu does not fit in u32", g->path, key,
                       nonneg ? "" : "-", nonneg ? (unsigned long long)u : 0ull - (uint64_t)s);
    *out = (uint32_t)u;
    return 0;
}

int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out) {
    const gguf_kv *kv;
    uint64_t u;
    int64_t s;
    bool nonneg;
    int rc = get_int(g, key, &kv, &u, &s, &nonneg);
    if (rc) return rc;
    if (nonneg && u > (uint64_t)INT64_MAX)
        return err_set(ZP_EFORMAT, "%s: key '%s' = %llu does not fit in i64", g->path, key,
                       (unsigned long long)u);
    *out = nonneg ? (int64_t)u : s;
    return 0;
}

int gguf_get_f64(const gguf_file *g, const char *key, double *out) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) return ZP_ENOTFOUND;
    if (!vtype_is_int(kv->type) && kv->type != GGUF_V_F32 && kv->type != GGUF_V_F64)
        return wrong_type(g, kv, "a number");
    *out = f64_at(kv->type, kv->data);
    return 0;
}

int gguf_get_bool(const gguf_file *g, const char *key, bool *out) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) return ZP_ENOTFOUND;
    if (kv->type != GGUF_V_BOOL) return wrong_type(g, kv, "a bool");
    *out = kv->data[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *g, const char *key, const char **s, size_t *n) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) return ZP_ENOTFOUND;
    if (kv->type != GGUF_V_STRING) return wrong_type(g, kv, "a string");
    *s = (const char *)kv->data;
    *n = (size_t)kv->n;
    return 0;
}

int gguf_get_arr(const gguf_file *g, const char *key, uint32_t elem_type, const gguf_kv **kv) {
    const gguf_kv *e = gguf_find(g, key);
    if (!e) return ZP_ENOTFOUND;
    if (e->type != GGUF_V_ARRAY || e->elem_type != elem_type) {
        char want[32];
        snprintf(want, sizeof want, "an array of %s values", gguf_vtype_name(elem_type));
        return wrong_type(g, e, want);
    }
    *kv = e;
    return 0;
}

void gguf_str_next(const uint8_t **p, const char **s, size_t *n) {
    uint64_t len;
    memcpy(&len, *p, 8);
    *s = (const char *)*p + 8;
    *n = (size_t)len;
    *p += 8 + len;
}

void gguf_arr_next(const uint8_t **p, const gguf_kv *outer, gguf_kv *inner) {
    assert(outer->type == GGUF_V_ARRAY && outer->elem_type == GGUF_V_ARRAY);
    *inner = (gguf_kv){.key = outer->key, .type = GGUF_V_ARRAY};
    memcpy(&inner->elem_type, *p, 4);
    memcpy(&inner->n, *p + 4, 8);
    inner->data = *p += 12;
    if (inner->elem_type != GGUF_V_STRING) {
        *p += inner->n * vtypes[inner->elem_type].size;
        return;
    }
    const char *s;
    size_t n;
    for (uint64_t i = 0; i < inner->n; i++)
        gguf_str_next(p, &s, &n);
}

int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i) {
    uint32_t t = kv->elem_type;
    assert(kv->type == GGUF_V_ARRAY && i < kv->n && vtype_is_int(t) && t != GGUF_V_U64);
    uint64_t u;
    int64_t s;
    return int_at(t, kv->data + i * vtypes[t].size, &u, &s) ? (int64_t)u : s;
}

double gguf_arr_f64(const gguf_kv *kv, uint64_t i) {
    uint32_t t = kv->elem_type;
    assert(kv->type == GGUF_V_ARRAY && i < kv->n &&
           (vtype_is_int(t) || t == GGUF_V_F32 || t == GGUF_V_F64));
    return f64_at(t, kv->data + i * vtypes[t].size);
}

/* ---- dequantization --------------------------------------------------------------------- */

static float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return zp_f16_to_f32(h);
}

/* Q8_0: f16 scale d, 32 int8 q: d * q. */
static void dq_q8_0(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const float d = f16_at(b);
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* Q4_0: f16 scale d, 16 bytes; element j < 16 is byte j's low nibble, j + 16 its high one:
 * (nibble - 8) * d. */
static void dq_q4_0(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const float d = f16_at(b);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[2 + j] & 15) - 8) * d;
            y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
        }
    }
}

/* Q4_1: f16 scale d and offset m, nibbles as Q4_0: nibble * d + m. */
static void dq_q4_1(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32) {
        const float d = f16_at(b), m = f16_at(b + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[4 + j] & 15) * d + m;
            y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
        }
    }
}

/* The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes s of a Q4_K or Q5_K
 * block: bytes 0..3 hold scales 0..3 and bytes 4..7 mins 0..3 in their low 6 bits; scales and
 * mins 4..7 take their low 4 bits from bytes 8..11 and their top 2 bits from the top bits of
 * bytes 0..3 (scales) and 4..7 (mins). */
static void k_scale_min(const uint8_t *s, int j, float *sc, float *mn) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *mn = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 15) | (s[j - 4] >> 6) << 4);
        *mn = (float)((s[j + 4] >> 4) | (s[j] >> 6) << 4);
    }
}

/* Q4_K: f16 d and dmin, 12 scale bytes, 128 bytes of nibbles: 8 sub-blocks of 32, sub-block j
 * in the low (j even) or high (j odd) nibbles of bytes 32*(j/2) .. +31:
 * (d * scale_j) * q - (dmin * min_j). */
static void dq_q4_k(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 144) {
        const float d = f16_at(b), dmin = f16_at(b + 2);
        for (int j = 0; j < 8; j++, y += 32) {
            float sc, mn;
            k_scale_min(b + 4, j, &sc, &mn);
            const float ds = d * sc, dm = dmin * mn;
            const uint8_t *q = b + 16 + 32 * (j / 2);
            const int sh = 4 * (j % 2);
            for (int l = 0; l < 32; l++)
                y[l] = ds * (float)((q[l] >> sh) & 15) - dm;
        }
    }
}

/* Q5_K: Q4_K's layout with 32 more bytes qh (after the scales, before the nibbles): bit j of
 * qh[l] is the fifth bit (16) of element l of sub-block j. */
static void dq_q5_k(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 176) {
        const float d = f16_at(b), dmin = f16_at(b + 2);
        const uint8_t *qh = b + 16;
        for (int j = 0; j < 8; j++, y += 32) {
            float sc, mn;
            k_scale_min(b + 4, j, &sc, &mn);
            const float ds = d * sc, dm = dmin * mn;
            const uint8_t *q = b + 48 + 32 * (j / 2);
            const int sh = 4 * (j % 2);
            for (int l = 0; l < 32; l++)
                y[l] = ds * (float)(((q[l] >> sh) & 15) | ((qh[l] >> j) & 1) << 4) - dm;
        }
    }
}

/* Q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales, f16 d. Each
 * half h of 128 elements uses ql[64h..], qh[32h..] and scales[8h..]; its quarter r (0..3),
 * element l (0..31) is ql[l + 32*(r%2)] >> 4*(r/2) (4 bits) with bits 2r..2r+1 of qh[l] on
 * top, minus 32, scaled by scales[l/16 + 2r]: (d * scale) * q. */
static void dq_q6_k(const uint8_t *b, int64_t nb, float *y) {
    for (int64_t i = 0; i < nb; i++, b += 210) {
        const float d = f16_at(b + 208);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
            for (int r = 0; r < 4; r++, y += 32)
                for (int l = 0; l < 32; l++) {
                    int q = ((ql[l + 32 * (r % 2)] >> 4 * (r / 2)) & 15) | ((qh[l] >> 2 * r) & 3)
                                                                               << 4;
                    y[l] = d * (float)sc[l / 16 + 2 * r] * (float)(q - 32);
                }
        }
    }
}

int gguf_dequant(uint32_t type, const void *src, int64_t n, float *dst) {
    int64_t block = gguf_type_block(type);
    if (!block)
        return err_set(ZP_EUNSUP, "cannot dequantize tensor type %s (%u) (%s)",
                       gguf_type_name(type), type, supported_types);
    if (n < 0 || n % block)
        return err_set(ZP_EINVAL, "dequantize %s: %lld elements, not a multiple of the block %lld",
                       gguf_type_name(type), (long long)n, (long long)block);
    const uint8_t *b = src;
    int64_t nb = n / block;
    switch ((gguf_ttype)type) {
    case GGUF_T_F32:
        memcpy(dst, b, (size_t)n * 4);
        break;
    case GGUF_T_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = f16_at(b + 2 * i);
        break;
    case GGUF_T_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, b + 2 * i, 2);
            dst[i] = zp_bf16_to_f32(h);
        }
        break;
    case GGUF_T_Q8_0:
        dq_q8_0(b, nb, dst);
        break;
    case GGUF_T_Q4_0:
        dq_q4_0(b, nb, dst);
        break;
    case GGUF_T_Q4_1:
        dq_q4_1(b, nb, dst);
        break;
    case GGUF_T_Q4_K:
        dq_q4_k(b, nb, dst);
        break;
    case GGUF_T_Q5_K:
        dq_q5_k(b, nb, dst);
        break;
    case GGUF_T_Q6_K:
        dq_q6_k(b, nb, dst);
        break;
    }
    return 0;
}
