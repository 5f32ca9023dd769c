/* test_gguf: the GGUF reader (engine/gguf.c) on images built in memory by a small writer here.
 *
 * A valid file with a key of every value type, arrays (numbers, bools, strings, an array of
 * arrays), general.alignment 64 and a tensor of every supported type parses, and every getter,
 * iterator and lookup gives what was written (the tensors' data pointers at the bytes the
 * writer put there). Each class of damage gives its documented code and a message naming the
 * file and the key or tensor: every truncation of the file, bad magic, versions 1, 2, 0 and
 * big-endian, counts the file cannot hold, strings and arrays past the end, unknown value and
 * tensor types, an unsupported one, bools other than 0/1, nesting two levels deep, empty or
 * over-long names, duplicate keys and tensors, alignment values, ndim 0 and 5, a zero or huge
 * extent, element and byte count overflow, ne[0] not a multiple of the block, misaligned,
 * overlapping and out-of-file tensors; then seeded random byte mutations. Every image is
 * parsed from a malloc'd buffer of exactly its size, so under ASan any read past it fails.
 *
 * Dequantization: the exhaustive f16 and bf16 conversions against ldexp, and random blocks of
 * every quantized type against a per-element formula written here from the block layouts
 * (plus a few values worked out by hand), bit for bit. tests/test_gguf_dequant.sh checks the
 * same against gguf-py. */
#include "arena/err.h"
#include "engine/gguf.h"
#include "tests/gguf_wbuf.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long long seed = 42;

/* ---- the writer --------------------------------------------------------------------------- */

/* The geometry of the supported tensor types, written down here from the format. */
static const struct {
    uint32_t type, block, bytes;
} geo[] = {{GGUF_T_F32, 1, 4},      {GGUF_T_F16, 1, 2},      {GGUF_T_BF16, 1, 2},
           {GGUF_T_Q8_0, 32, 34},   {GGUF_T_Q4_0, 32, 18},   {GGUF_T_Q4_1, 32, 20},
           {GGUF_T_Q4_K, 256, 144}, {GGUF_T_Q5_K, 256, 176}, {GGUF_T_Q6_K, 256, 210}};
#define N_GEO (sizeof geo / sizeof geo[0])

static uint64_t nbytes_of(uint32_t type, const uint64_t *ne, uint32_t ndim) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < ndim; d++)
        n *= ne[d];
    for (size_t i = 0; i < N_GEO; i++)
        if (geo[i].type == type) return n / geo[i].block * geo[i].bytes;
    return 0;
}

#define AUTO UINT64_MAX

typedef struct tdesc {
    char name[80];
    uint32_t type, ndim;
    uint64_t ne[5];
    uint64_t offset; /* AUTO: after the previous tensor, aligned */
} tdesc;

typedef struct gdesc {
    char magic[4];
    uint32_t version;
    uint64_t n_kv_claim, n_t_claim; /* AUTO: the real counts */
    wbuf kv;                        /* encoded pairs */
    uint64_t n_kv;
    tdesc t[16];
    int n_t;
    uint32_t align; /* how the writer lays out the data */
    size_t cut;     /* bytes dropped from the end of the data (0: none) */
    size_t extra;   /* data bytes after the last tensor */
} gdesc;

/* Tensor data: byte i of the data section is data_byte(i), so every tensor's bytes are known. */
static uint8_t data_byte(uint64_t i) {
    return (uint8_t)(i * 131 + (i >> 8) * 7 + 3);
}

static void add_tensor(gdesc *g, const char *name, uint32_t type, uint32_t ndim, uint64_t ne0,
                       uint64_t ne1, uint64_t ne2, uint64_t ne3) {
    REQUIRE(g->n_t < 16);
    tdesc *t = &g->t[g->n_t++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->ndim = ndim;
    uint64_t ne[5] = {ne0, ne1, ne2, ne3, 1};
    memcpy(t->ne, ne, sizeof ne);
    t->offset = AUTO;
}

/* Key-value pairs: the key and type, then the caller writes the value into g->kv. */
static wbuf *kv_begin(gdesc *g, const char *key, uint32_t type) {
    put_str(&g->kv, key);
    put_u32(&g->kv, type);
    g->n_kv++;
    return &g->kv;
}
static void kv_u32(gdesc *g, const char *key, uint32_t v) {
    put_u32(kv_begin(g, key, GGUF_V_U32), v);
}
static void kv_str(gdesc *g, const char *key, const char *s) {
    put_str(kv_begin(g, key, GGUF_V_STRING), s);
}

/* The image: header, pairs, tensor infos, padding, data; *len its size (malloc'd, exact). */
static uint8_t *build(gdesc *g, size_t *len) {
    wbuf w = {0};
    put(&w, g->magic, 4);
    put_u32(&w, g->version);
    put_u64(&w, g->n_t_claim == AUTO ? (uint64_t)g->n_t : g->n_t_claim);
    put_u64(&w, g->n_kv_claim == AUTO ? g->n_kv : g->n_kv_claim);
    put(&w, g->kv.b, g->kv.n);
    uint64_t at = 0, end = 0;
    for (int i = 0; i < g->n_t; i++) {
        tdesc *t = &g->t[i];
        if (t->offset == AUTO) {
            t->offset = (at + g->align - 1) / g->align * g->align;
            at = t->offset + nbytes_of(t->type, t->ne, t->ndim);
        }
        put_str(&w, t->name);
        put_u32(&w, t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            put_u64(&w, t->ne[d]);
        put_u32(&w, t->type);
        put_u64(&w, t->offset);
        uint64_t e = t->offset + nbytes_of(t->type, t->ne, t->ndim);
        if (e < (1ull << 20) && e > end) end = e;
    }
    while (w.n % g->align)
        put_u8(&w, 0);
    end += g->extra;
    end = end > g->cut ? end - g->cut : 0;
    for (uint64_t i = 0; i < end; i++)
        put_u8(&w, data_byte(i));
    uint8_t *out = malloc(w.n ? w.n : 1);
    REQUIRE(out);
    memcpy(out, w.b, w.n);
    *len = w.n;
    free(w.b);
    return out;
}

static void gdesc_init(gdesc *g) {
    memset(g, 0, sizeof *g);
    memcpy(g->magic, "GGUF", 4);
    g->version = 3;
    g->n_kv_claim = g->n_t_claim = AUTO;
    g->align = 32;
}

static void gdesc_free(gdesc *g) {
    free(g->kv.b);
}

/* The valid file: every value type, arrays, alignment 64, one tensor of each type. */
static void make_valid(gdesc *g) {
    gdesc_init(g);
    g->align = 64;
    wbuf *w;
    put_u8(kv_begin(g, "t.u8", GGUF_V_U8), 200);
    put_u8(kv_begin(g, "t.i8", GGUF_V_I8), (uint8_t)-5);
    w = kv_begin(g, "t.u16", GGUF_V_U16);
    uint16_t u16 = 60000;
    put(w, &u16, 2);
    w = kv_begin(g, "t.i16", GGUF_V_I16);
    int16_t i16 = -30000;
    put(w, &i16, 2);
    kv_u32(g, "t.u32", 4000000000u);
    w = kv_begin(g, "t.i32", GGUF_V_I32);
    int32_t i32 = -2000000000;
    put(w, &i32, 4);
    w = kv_begin(g, "t.f32", GGUF_V_F32);
    float f32 = 0.15625f;
    put(w, &f32, 4);
    put_u8(kv_begin(g, "t.bool", GGUF_V_BOOL), 1);
    kv_str(g, "general.architecture", "llama");
    put_u64(kv_begin(g, "t.u64", GGUF_V_U64), 18000000000000000000ull);
    put_u64(kv_begin(g, "t.i64", GGUF_V_I64), (uint64_t)-9000000000ll);
    w = kv_begin(g, "t.f64", GGUF_V_F64);
    double f64 = -2.5e-300;
    put(w, &f64, 8);
    kv_u32(g, "general.alignment", 64);
    w = kv_begin(g, "t.arr_u32", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_U32);
    put_u64(w, 3);
    for (uint32_t i = 0; i < 3; i++)
        put_u32(w, 7 * i + 1);
    w = kv_begin(g, "t.arr_i32", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_I32);
    put_u64(w, 2);
    put_u32(w, (uint32_t)-1);
    put_u32(w, 5);
    w = kv_begin(g, "t.arr_f32", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_F32);
    put_u64(w, 2);
    float fs[2] = {1.5f, -0.25f};
    put(w, fs, 8);
    w = kv_begin(g, "t.arr_bool", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_BOOL);
    put_u64(w, 3);
    put_u8(w, 1), put_u8(w, 0), put_u8(w, 1);
    w = kv_begin(g, "t.arr_str", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_STRING);
    put_u64(w, 3);
    put_str(w, "alpha"), put_str(w, ""), put_strn(w, "x\0y", 3);
    w = kv_begin(g, "t.arr_arr", GGUF_V_ARRAY); /* [[10, 20], ["p", "qq"], []] */
    put_u32(w, GGUF_V_ARRAY);
    put_u64(w, 3);
    put_u32(w, GGUF_V_I32), put_u64(w, 2), put_u32(w, 10), put_u32(w, 20);
    put_u32(w, GGUF_V_STRING), put_u64(w, 2), put_str(w, "p"), put_str(w, "qq");
    put_u32(w, GGUF_V_U8), put_u64(w, 0);
    kv_str(g, "t.empty", "");
    add_tensor(g, "f32", GGUF_T_F32, 2, 3, 2, 1, 1);
    add_tensor(g, "f16", GGUF_T_F16, 1, 5, 1, 1, 1);
    add_tensor(g, "bf16", GGUF_T_BF16, 3, 2, 1, 3, 1);
    add_tensor(g, "q8_0", GGUF_T_Q8_0, 2, 64, 2, 1, 1);
    add_tensor(g, "q4_0", GGUF_T_Q4_0, 1, 32, 1, 1, 1);
    add_tensor(g, "q4_1", GGUF_T_Q4_1, 4, 32, 1, 1, 2);
    add_tensor(g, "q4_k", GGUF_T_Q4_K, 1, 256, 1, 1, 1);
    add_tensor(g, "q5_k", GGUF_T_Q5_K, 2, 256, 1, 1, 1);
    add_tensor(g, "blk.0.a_name_of_exactly_sixty_four_bytes.weight_q6_k_xxxxxxxxxxx", GGUF_T_Q6_K,
               1, 256, 1, 1, 1);
}

/* ---- parsing helpers ---------------------------------------------------------------------- */

static arena A;

/* Parses buf in a fresh arena (released by the next call); the temporary side must be back. */
static int parse(gguf_file *g, const uint8_t *buf, size_t len) {
    static bool have;
    if (have) arena_release(&A);
    REQUIRE(arena_init(&A, "test_gguf", 64u << 20) == 0);
    have = true;
    err_set(0, "%s", "");
    int rc = gguf_parse(g, &A, buf, len, "t.gguf");
    CHECKF(arena_temp_mark(&A) == 0, "temporary arena memory not given back");
    return rc;
}

/* Builds g and expects code with every substring in the message (which names the file). */
#define EXPECT(gd, code, ...)                                                                      \
    do {                                                                                           \
        size_t len_;                                                                               \
        uint8_t *buf_ = build(gd, &len_);                                                          \
        gguf_file f_;                                                                              \
        int rc_ = parse(&f_, buf_, len_);                                                          \
        CHECKF(rc_ == (code), "got %d (%s), want %d", rc_, rc_ ? err_msg() : "ok", code);          \
        const char *subs_[] = {"t.gguf: ", __VA_ARGS__};                                           \
        for (size_t i_ = 0; rc_ && i_ < sizeof subs_ / sizeof subs_[0]; i_++)                      \
            CHECKF(strstr(err_msg(), subs_[i_]), "message '%s' lacks '%s'", err_msg(), subs_[i_]); \
        free(buf_);                                                                                \
        gdesc_free(gd);                                                                            \
    } while (0)

/* ---- the valid file ----------------------------------------------------------------------- */

static void test_valid(void) {
    gdesc gd;
    make_valid(&gd);
    size_t len;
    uint8_t *buf = build(&gd, &len);
    gguf_file g;
    int rc = parse(&g, buf, len);
    REQUIRE(rc == 0 || (fprintf(stderr, "%s\n", err_msg()), 0));
    CHECK(g.version == 3 && g.alignment == 64 && g.n_kv == 20 && g.n_tensors == 9);
    CHECK(g.map == buf && g.len == len && !g.mapped && !strcmp(g.path, "t.gguf"));
    CHECK(g.data_offset % 64 == 0 && g.data_offset <= len);

    uint32_t u;
    int64_t i;
    double d;
    bool b;
    const char *s;
    size_t n;
    CHECK(gguf_get_u32(&g, "t.u8", &u) == 0 && u == 200);
    CHECK(gguf_get_i64(&g, "t.u8", &i) == 0 && i == 200);
    CHECK(gguf_get_f64(&g, "t.u8", &d) == 0 && d == 200);
    CHECK(gguf_get_i64(&g, "t.i8", &i) == 0 && i == -5);
    CHECK(gguf_get_u32(&g, "t.i8", &u) == ZP_EFORMAT && strstr(err_msg(), "'t.i8' = -5"));
    CHECK(gguf_get_u32(&g, "t.u16", &u) == 0 && u == 60000);
    CHECK(gguf_get_i64(&g, "t.i16", &i) == 0 && i == -30000);
    CHECK(gguf_get_u32(&g, "t.u32", &u) == 0 && u == 4000000000u);
    CHECK(gguf_get_i64(&g, "t.i32", &i) == 0 && i == -2000000000);
    CHECK(gguf_get_f64(&g, "t.i32", &d) == 0 && d == -2000000000.0);
    CHECK(gguf_get_f64(&g, "t.f32", &d) == 0 && d == 0.15625);
    CHECK(gguf_get_u32(&g, "t.f32", &u) == ZP_EFORMAT && strstr(err_msg(), "t.gguf: key 't.f32'"));
    CHECK(gguf_get_bool(&g, "t.bool", &b) == 0 && b);
    CHECK(gguf_get_u32(&g, "t.bool", &u) == ZP_EFORMAT);
    CHECK(gguf_get_bool(&g, "t.u8", &b) == ZP_EFORMAT);
    CHECK(gguf_get_str(&g, "general.architecture", &s, &n) == 0 && n == 5 &&
          !memcmp(s, "llama", 5));
    CHECK(gguf_get_str(&g, "t.empty", &s, &n) == 0 && n == 0);
    CHECK(gguf_get_str(&g, "t.u32", &s, &n) == ZP_EFORMAT && strstr(err_msg(), "'t.u32' is u32"));
    CHECK(gguf_get_u32(&g, "general.architecture", &u) == ZP_EFORMAT);
    CHECK(gguf_get_i64(&g, "t.u64", &i) == ZP_EFORMAT && strstr(err_msg(), "i64"));
    CHECK(gguf_get_u32(&g, "t.u64", &u) == ZP_EFORMAT);
    CHECK(gguf_get_f64(&g, "t.u64", &d) == 0 && d == 18000000000000000000.0);
    CHECK(gguf_get_i64(&g, "t.i64", &i) == 0 && i == -9000000000ll);
    CHECK(gguf_get_f64(&g, "t.f64", &d) == 0 && d == -2.5e-300);
    CHECK(gguf_get_u32(&g, "general.alignment", &u) == 0 && u == 64);
    err_set(0, "%s", "marker");
    CHECK(gguf_get_u32(&g, "no.such", &u) == ZP_ENOTFOUND && !strcmp(err_msg(), "marker"));
    CHECK(gguf_get_str(&g, "no.such", &s, &n) == ZP_ENOTFOUND);
    CHECK(gguf_get_f64(&g, "t.arr_u32", &d) == ZP_EFORMAT && strstr(err_msg(), "array of u32"));
    const gguf_kv *kv = gguf_find(&g, "t.u16");
    CHECK(kv && kv->type == GGUF_V_U16 && kv->elem_type == GGUF_V_U16 && kv->n == 1);
    CHECK(!gguf_find(&g, "t.u1") && !gguf_find(&g, ""));

    CHECK(gguf_get_arr(&g, "t.arr_u32", GGUF_V_U32, &kv) == 0 && kv->n == 3);
    CHECK(gguf_arr_int(kv, 0) == 1 && gguf_arr_int(kv, 2) == 15 && gguf_arr_f64(kv, 1) == 8);
    CHECK(gguf_get_arr(&g, "t.arr_u32", GGUF_V_I32, &kv) == ZP_EFORMAT &&
          strstr(err_msg(), "'t.arr_u32'"));
    CHECK(gguf_get_arr(&g, "t.u32", GGUF_V_U32, &kv) == ZP_EFORMAT);
    CHECK(gguf_get_arr(&g, "none", GGUF_V_U32, &kv) == ZP_ENOTFOUND);
    CHECK(gguf_get_arr(&g, "t.arr_i32", GGUF_V_I32, &kv) == 0 && kv->n == 2);
    CHECK(gguf_arr_int(kv, 0) == -1 && gguf_arr_int(kv, 1) == 5 && gguf_arr_f64(kv, 0) == -1);
    CHECK(gguf_get_arr(&g, "t.arr_f32", GGUF_V_F32, &kv) == 0 && kv->n == 2);
    CHECK(gguf_arr_f64(kv, 0) == 1.5 && gguf_arr_f64(kv, 1) == -0.25);
    CHECK(gguf_get_arr(&g, "t.arr_bool", GGUF_V_BOOL, &kv) == 0 && kv->n == 3 && kv->data[0] == 1 &&
          kv->data[1] == 0 && kv->data[2] == 1);
    CHECK(gguf_get_arr(&g, "t.arr_str", GGUF_V_STRING, &kv) == 0 && kv->n == 3);
    const uint8_t *p = kv->data;
    gguf_str_next(&p, &s, &n);
    CHECK(n == 5 && !memcmp(s, "alpha", 5));
    gguf_str_next(&p, &s, &n);
    CHECK(n == 0);
    gguf_str_next(&p, &s, &n);
    CHECK(n == 3 && !memcmp(s, "x\0y", 3));
    CHECK(gguf_get_arr(&g, "t.arr_arr", GGUF_V_ARRAY, &kv) == 0 && kv->n == 3);
    gguf_kv in;
    p = kv->data;
    gguf_arr_next(&p, kv, &in);
    CHECK(in.type == GGUF_V_ARRAY && in.elem_type == GGUF_V_I32 && in.n == 2 &&
          gguf_arr_int(&in, 1) == 20 && !strcmp(in.key, "t.arr_arr"));
    gguf_arr_next(&p, kv, &in);
    CHECK(in.elem_type == GGUF_V_STRING && in.n == 2);
    const uint8_t *q = in.data;
    gguf_str_next(&q, &s, &n);
    gguf_str_next(&q, &s, &n);
    CHECK(n == 2 && !memcmp(s, "qq", 2));
    gguf_arr_next(&p, kv, &in);
    CHECK(in.elem_type == GGUF_V_U8 && in.n == 0);
    kv = gguf_find(&g, "t.empty");
    CHECK(kv && p == kv->data - 8 - 4 - 8 - strlen("t.empty")); /* the next pair follows */

    for (int k = 0; k < gd.n_t; k++) {
        const tdesc *t = &gd.t[k];
        const gguf_tensor *gt = gguf_tensor_find(&g, t->name);
        CHECKF(gt && gt == &g.tensors[k], "tensor %s", t->name);
        if (!gt) continue;
        uint64_t nb = nbytes_of(t->type, t->ne, t->ndim), ne = 1;
        for (int dd = 0; dd < 4; dd++)
            ne *= t->ne[dd];
        CHECKF(gt->type == t->type && gt->ndim == (int)t->ndim && gt->nbytes == nb &&
                   gt->nelem == (int64_t)ne && gt->offset == t->offset &&
                   gt->data == buf + g.data_offset + t->offset,
               "tensor %s fields", t->name);
        for (int dd = 0; dd < 4; dd++)
            CHECKF(gt->ne[dd] == (int64_t)t->ne[dd], "tensor %s ne[%d]", t->name, dd);
        for (uint64_t j = 0; j < nb; j++)
            if (gt->data[j] != data_byte(t->offset + j)) {
                CHECKF(0, "tensor %s byte %llu", t->name, (unsigned long long)j);
                break;
            }
        CHECK(gguf_type_block(gt->type) * (int64_t)gguf_type_block_bytes(gt->type) > 0);
    }
    CHECK(!gguf_tensor_find(&g, "f3") && !gguf_tensor_find(&g, "q4_k.weight"));
    CHECK(!strcmp(gguf_type_name(GGUF_T_Q6_K), "Q6_K") && !strcmp(gguf_type_name(6), "Q5_0") &&
          !strcmp(gguf_type_name(4), "?") && gguf_type_block(6) == 0);
    CHECK(!strcmp(gguf_vtype_name(GGUF_V_STRING), "string") && !strcmp(gguf_vtype_name(13), "?"));
    CHECK(gguf_vtype_size(GGUF_V_F64) == 8 && gguf_vtype_size(GGUF_V_STRING) == 0);

    /* gguf_open: the same bytes from a file, mapped and unmapped */
    char path[64];
    snprintf(path, sizeof path, "/tmp/zp_test_gguf_%d.gguf", (int)getpid());
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0);
    CHECK(gguf_is_file(path) && !gguf_is_file("/nonexistent/x.gguf") && !gguf_is_file("/dev/null"));
    gguf_file o;
    CHECK(gguf_open(&o, &A, path) == 0 && o.mapped && o.n_tensors == 9 &&
          gguf_tensor_find(&o, "q8_0") && gguf_find(&o, "t.arr_arr"));
    gguf_close(&o);
    CHECK(!o.mapped && !o.map && o.n_kv == 0 && !gguf_find(&o, "t.u8") &&
          !gguf_tensor_find(&o, "f32"));
    gguf_close(&o); /* safe on a cleared one */
    unlink(path);
    CHECK(gguf_open(&o, &A, "/nonexistent/x.gguf") == ZP_EIO && strstr(err_msg(), "/nonexistent"));
    free(buf);
    gdesc_free(&gd);

    /* no general.alignment: 32; no keys and no tensors at all */
    gdesc_init(&gd);
    add_tensor(&gd, "w", GGUF_T_F32, 1, 3, 1, 1, 1);
    add_tensor(&gd, "v", GGUF_T_F32, 1, 1, 1, 1, 1);
    buf = build(&gd, &len);
    CHECK(parse(&g, buf, len) == 0 && g.alignment == 32 && g.tensors[1].offset == 32);
    free(buf);
    gdesc_free(&gd);
    gdesc_init(&gd);
    buf = build(&gd, &len);
    CHECK(parse(&g, buf, len) == 0 && len == 32 && g.data_offset == 32 && !gguf_find(&g, "a") &&
          !gguf_tensor_find(&g, "a"));
    free(buf);
    gdesc_free(&gd);
}

/* Every proper prefix of the valid file fails with a format error (the last tensor ends the
 * file), from a buffer of exactly that size. */
static void test_truncation(void) {
    gdesc gd;
    make_valid(&gd);
    size_t len;
    uint8_t *full = build(&gd, &len);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *b = malloc(cut ? cut : 1);
        REQUIRE(b);
        memcpy(b, full, cut);
        gguf_file g;
        int rc = parse(&g, b, cut);
        CHECKF(rc == ZP_EFORMAT && !strncmp(err_msg(), "t.gguf: ", 8), "prefix of %zu bytes: %d %s",
               cut, rc, err_msg());
        free(b);
    }
    free(full);
    gdesc_free(&gd);
}

static void test_header(void) {
    gdesc g;
    make_valid(&g);
    memcpy(g.magic, "GGUG", 4);
    EXPECT(&g, ZP_EFORMAT, "not a GGUF file");
    for (uint32_t v = 1; v <= 2; v++) {
        make_valid(&g);
        g.version = v;
        char want[32];
        snprintf(want, sizeof want, "GGUF version %u is not supported", v);
        EXPECT(&g, ZP_EUNSUP, want);
    }
    make_valid(&g);
    g.version = 4;
    EXPECT(&g, ZP_EUNSUP, "version 4");
    make_valid(&g);
    g.version = 0;
    EXPECT(&g, ZP_EFORMAT, "version 0");
    make_valid(&g);
    g.version = 3u << 24;
    EXPECT(&g, ZP_EUNSUP, "big-endian");
    make_valid(&g);
    g.n_kv_claim = 1ull << 62;
    EXPECT(&g, ZP_EFORMAT, "claims 4611686018427387904 keys");
    make_valid(&g);
    g.n_t_claim = UINT64_MAX - 1;
    EXPECT(&g, ZP_EFORMAT, "claims");
    make_valid(&g);
    g.n_kv_claim = 100; /* passes the count test, then reads tensor infos and data as pairs */
    EXPECT(&g, ZP_EFORMAT);
    make_valid(&g);
    g.n_kv_claim = g.n_kv + 1; /* reads the first tensor info as a key */
    EXPECT(&g, ZP_EFORMAT);
    make_valid(&g);
    g.n_kv_claim = g.n_kv - 1; /* reads the last pair as a tensor info */
    EXPECT(&g, ZP_EFORMAT);
    make_valid(&g);
    g.n_t_claim = (uint64_t)g.n_t + 3;
    EXPECT(&g, ZP_EFORMAT, "tensor 9: ");
}

static void test_values(void) {
    gdesc g;
    wbuf *w;
    make_valid(&g);
    put_u64(&g.kv, 1ull << 40); /* a key longer than the file */
    g.n_kv++;
    EXPECT(&g, ZP_EFORMAT, "key 20: key (1099511627776 bytes at offset", "runs past the end");
    make_valid(&g);
    put_str(kv_begin(&g, "big.string", GGUF_V_STRING), "");
    g.kv.n -= 8; /* the string's length field becomes huge */
    put_u64(&g.kv, UINT64_MAX - 3);
    EXPECT(&g, ZP_EFORMAT, "key 'big.string': string value");
    make_valid(&g);
    put_u32(kv_begin(&g, "odd.type", 13), 0);
    EXPECT(&g, ZP_EFORMAT, "key 'odd.type': unknown value type 13");
    make_valid(&g);
    w = kv_begin(&g, "odd.elem", GGUF_V_ARRAY);
    put_u32(w, 99), put_u64(w, 0);
    EXPECT(&g, ZP_EFORMAT, "key 'odd.elem': unknown array element type 99");
    make_valid(&g);
    w = kv_begin(&g, "big.array", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_U64), put_u64(w, 1ull << 61);
    EXPECT(&g, ZP_EFORMAT, "key 'big.array': array of 2305843009213693952 u64 values");
    make_valid(&g);
    w = kv_begin(&g, "big.strings", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_STRING), put_u64(w, 3), put_str(w, "a"), put_str(w, "b");
    put_u64(w, 1ull << 40);
    EXPECT(&g, ZP_EFORMAT, "key 'big.strings': array string (1099511627776 bytes");
    make_valid(&g);
    put_u8(kv_begin(&g, "bad.bool", GGUF_V_BOOL), 2);
    EXPECT(&g, ZP_EFORMAT, "key 'bad.bool': bool value 2");
    make_valid(&g);
    w = kv_begin(&g, "bad.bools", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_BOOL), put_u64(w, 2), put_u8(w, 0), put_u8(w, 255);
    EXPECT(&g, ZP_EFORMAT, "key 'bad.bools': bool element 1 is 255");
    make_valid(&g);
    w = kv_begin(&g, "deep", GGUF_V_ARRAY); /* [[[ ]]] */
    put_u32(w, GGUF_V_ARRAY), put_u64(w, 1), put_u32(w, GGUF_V_ARRAY), put_u64(w, 0);
    EXPECT(&g, ZP_EUNSUP, "key 'deep': arrays nested more than one level");
    make_valid(&g);
    w = kv_begin(&g, "many.arrays", GGUF_V_ARRAY);
    put_u32(w, GGUF_V_ARRAY), put_u64(w, 1ull << 40);
    EXPECT(&g, ZP_EFORMAT, "key 'many.arrays': array of 1099511627776 arrays");
    make_valid(&g);
    put_u32(kv_begin(&g, "", GGUF_V_U32), 1);
    EXPECT(&g, ZP_EFORMAT, "key 20: empty key");
    make_valid(&g);
    put_strn(&g.kv, "a\0b", 3), put_u32(&g.kv, GGUF_V_U8), put_u8(&g.kv, 0), g.n_kv++;
    EXPECT(&g, ZP_EFORMAT, "key 'a?b': key holds a NUL byte");
    make_valid(&g);
    kv_u32(&g, "t.u32", 5);
    EXPECT(&g, ZP_EFORMAT, "key 't.u32': duplicate key (entries 4 and 20)");
    make_valid(&g);
    put_u32(kv_begin(&g, "general.alignment", GGUF_V_U32), 64); /* two of them */
    EXPECT(&g, ZP_EFORMAT, "duplicate key");
    uint32_t bad_align[] = {0, 3, 48, 0x80000001u};
    for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        gdesc_init(&g);
        kv_u32(&g, "general.alignment", bad_align[i]);
        add_tensor(&g, "w", GGUF_T_F32, 1, 8, 1, 1, 1);
        g.align = 64;
        char want[64];
        snprintf(want, sizeof want, "'general.alignment' = %u is not a power of two", bad_align[i]);
        EXPECT(&g, ZP_EFORMAT, want);
    }
    gdesc_init(&g);
    put_u64(kv_begin(&g, "general.alignment", GGUF_V_U64), 32);
    EXPECT(&g, ZP_EFORMAT, "'general.alignment' is u64 (must be u32)");
    gdesc_init(&g); /* alignment 1 and 2^31 are powers of two */
    kv_u32(&g, "general.alignment", 1u << 31);
    add_tensor(&g, "w", GGUF_T_F32, 1, 8, 1, 1, 1);
    g.t[0].offset = 0;
    g.align = 1;
    {
        size_t len;
        uint8_t *buf = build(&g, &len);
        gguf_file f;
        CHECK(parse(&f, buf, len) == ZP_EFORMAT && strstr(err_msg(), "starts at 2147483648"));
        free(buf);
        gdesc_free(&g);
    }
}

static void test_tensors(void) {
    gdesc g;
    make_valid(&g);
    g.t[2].type = 99;
    EXPECT(&g, ZP_EFORMAT, "tensor 'bf16': unknown tensor type 99");
    make_valid(&g);
    g.t[2].type = 4; /* a number ggml retired */
    EXPECT(&g, ZP_EFORMAT, "unknown tensor type 4");
    make_valid(&g);
    g.t[4].type = 6;
    EXPECT(&g, ZP_EUNSUP, "tensor 'q4_0': type Q5_0 (6) is not supported", "Q6_K");
    make_valid(&g);
    g.t[4].type = GGUF_T_Q4_K; /* 32 elements: not a whole block of 256 */
    EXPECT(&g, ZP_EFORMAT,
           "tensor 'q4_0': first dimension 32 is not a multiple of Q4_K's block of 256");
    make_valid(&g);
    g.t[3].ne[0] = 48;
    EXPECT(&g, ZP_EFORMAT, "tensor 'q8_0': first dimension 48", "block of 32");
    make_valid(&g);
    g.t[1].offset = 6400 + 32; /* aligned to 32, not to the file's 64 */
    EXPECT(&g, ZP_EFORMAT, "tensor 'f16': offset 6432 is not a multiple of the alignment 64");
    make_valid(&g);
    g.t[1].offset = 0; /* onto f32's bytes */
    EXPECT(&g, ZP_EFORMAT, "tensors 'f32' [0, +24) and 'f16' [0, +10) overlap");
    make_valid(&g);
    add_tensor(&g, "late", GGUF_T_Q8_0, 1, 32, 1, 1, 1);
    g.t[9].offset = 128; /* where bf16 is */
    EXPECT(&g, ZP_EFORMAT, "tensors 'bf16' [128, +12) and 'late' [128, +34) overlap");
    for (uint64_t at = 3; at <= 4; at++) { /* alignment 1: one byte shared, then touching */
        gdesc_init(&g);
        kv_u32(&g, "general.alignment", 1);
        g.align = 1;
        add_tensor(&g, "a", GGUF_T_F32, 1, 1, 1, 1, 1);
        add_tensor(&g, "b", GGUF_T_Q8_0, 1, 32, 1, 1, 1);
        g.t[0].offset = 0, g.t[1].offset = at;
        if (at == 3)
            EXPECT(&g, ZP_EFORMAT, "tensors 'a' [0, +4) and 'b' [3, +34) overlap");
        else
            EXPECT(&g, 0);
    }
    make_valid(&g);
    g.t[0].offset = 1ull << 20; /* past the end */
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': data [1048576, +24) lies outside the data section");
    make_valid(&g);
    g.t[0].offset = UINT64_MAX / 64 * 64; /* offset + bytes would overflow */
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': data", "outside the data section");
    make_valid(&g);
    g.cut = 1; /* the last tensor loses its last byte */
    EXPECT(&g, ZP_EFORMAT, "_q6_k_xxxxxxxxxxx': data");
    make_valid(&g);
    snprintf(g.t[5].name, sizeof g.t[5].name, "q8_0");
    EXPECT(&g, ZP_EFORMAT, "tensor 'q8_0': duplicate tensor name (entries 3 and 5)");
    make_valid(&g);
    snprintf(g.t[5].name, sizeof g.t[5].name, "%065d", 0);
    EXPECT(&g, ZP_EFORMAT, "name of 65 bytes (GGUF allows 64)");
    make_valid(&g);
    g.t[5].name[0] = 0;
    EXPECT(&g, ZP_EFORMAT, "tensor 5: empty name");
    make_valid(&g);
    g.t[0].ndim = 0;
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': 0 dimensions (1 to 4 allowed)");
    make_valid(&g);
    g.t[0].ndim = 5;
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': 5 dimensions (1 to 4 allowed)");
    make_valid(&g);
    g.t[0].ne[1] = 0;
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': dimension 1 is 0");
    make_valid(&g);
    g.t[0].ne[0] = 1ull << 63;
    EXPECT(&g, ZP_EFORMAT, "dimension 0 is 9223372036854775808 (more than 2^63 - 1)");
    make_valid(&g);
    g.t[0].ndim = 4;
    g.t[0].ne[0] = g.t[0].ne[1] = g.t[0].ne[2] = 1ull << 21, g.t[0].ne[3] = 4;
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': element count overflows 64 bits");
    make_valid(&g);
    g.t[0].ne[0] = g.t[0].ne[1] = 1ull << 31; /* 2^62 f32: 2^64 bytes */
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': byte count overflows 64 bits");
    make_valid(&g);
    g.t[0].ne[0] = g.t[0].ne[1] = 1ull << 30; /* counts fine, bytes not in the file */
    EXPECT(&g, ZP_EFORMAT, "tensor 'f32': data", "outside the data section");
}

/* Random damage: a few bytes of the valid file changed; anything may happen but a crash, an
 * out-of-bounds read (ASan), an error without a message, or a tensor outside the buffer. */
static void test_mutations(void) {
    gdesc gd;
    make_valid(&gd);
    size_t len;
    uint8_t *full = build(&gd, &len);
    gguf_file g;
    REQUIRE(parse(&g, full, len) == 0);
    size_t meta = (size_t)g.data_offset; /* damage the header, pairs and tensor infos */
    uint8_t *b = malloc(len);
    REQUIRE(b);
    int ok = 0;
    for (int it = 0; it < 4000; it++) {
        memcpy(b, full, len);
        int k = 1 + (int)(test_rand_u64(&seed) % 4);
        for (int j = 0; j < k; j++) {
            size_t at = (size_t)(test_rand_u64(&seed) % meta);
            uint64_t r = test_rand_u64(&seed);
            b[at] = r & 256 ? (uint8_t)r : (uint8_t)(b[at] ^ (1u << (r % 8)));
        }
        int rc = parse(&g, b, len);
        if (rc) {
            CHECKF(rc < 0 && !strncmp(err_msg(), "t.gguf: ", 8), "mutation %d: %d %s", it, rc,
                   err_msg());
            continue;
        }
        ok++;
        for (int64_t i = 0; i < g.n_tensors; i++) {
            const gguf_tensor *t = &g.tensors[i];
            CHECKF(t->data >= b + g.data_offset && t->nbytes <= (size_t)(b + len - t->data),
                   "mutation %d: tensor %lld outside the data", it, (long long)i);
        }
    }
    CHECKF(ok > 50 && ok < 3950, "%d of 4000 mutations parsed", ok);
    free(b);
    free(full);
    gdesc_free(&gd);
}

/* ---- dequantization ----------------------------------------------------------------------- */

/* f16 and bf16 from their fields, with ldexp. */
static float h2f(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0   ? ldexpf((float)m, -24)
              : e < 31 ? ldexpf((float)(m + 1024), e - 25)
              : m      ? NAN
                       : INFINITY;
    return h & 0x8000 ? -v : v;
}
static float b2f(uint16_t h) {
    int e = (h >> 7) & 255, m = h & 127;
    float v = e == 0    ? ldexpf((float)m, -133)
              : e < 255 ? ldexpf((float)(m + 128), e - 134)
              : m       ? NAN
                        : INFINITY;
    return h & 0x8000 ? -v : v;
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_f16_bf16(void) {
    static uint16_t h[65536];
    static float out[65536];
    for (int i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t type = pass ? GGUF_T_BF16 : GGUF_T_F16;
        CHECK(gguf_dequant(type, h, 65536, out) == 0);
        int bad = 0;
        for (int i = 0; i < 65536; i++) {
            float want = pass ? b2f(h[i]) : h2f(h[i]);
            uint32_t got = bits(out[i]),
                     mant = pass ? (uint32_t)(i & 127) << 16 : (uint32_t)(i & 1023) << 13;
            bool ok = isnan(want) ? isnan(out[i]) && (got & 0x7FFFFF) == mant &&
                                        (got >> 31) == (uint32_t)(i >> 15)
                                  : got == bits(want);
            if (!ok && bad++ < 5) CHECKF(0, "%s 0x%04x: got 0x%08x", pass ? "bf16" : "f16", i, got);
        }
    }
    float f[3] = {1.5f, -0.0f, 3e38f}, g[3];
    CHECK(gguf_dequant(GGUF_T_F32, f, 3, g) == 0 && !memcmp(f, g, sizeof f));
}

/* A random finite f16 (scales): any sign, exponent below 31; subnormal when tiny. */
static void put_f16(uint8_t *p, bool tiny) {
    uint16_t h = (uint16_t)(test_rand_u64(&seed) & 0xFFFF);
    if (((h >> 10) & 31) == 31) h &= 0xBFFF;
    if (tiny) h &= 0x83FF;
    memcpy(p, &h, 2);
}
static float rd16(const uint8_t *p) {
    return h2f((uint16_t)(p[0] | p[1] << 8));
}

/* The expected value of element k of one block at b, from the layouts:
 *   Q8_0  d | 32 x int8                       d * q
 *   Q4_0  d | 16 bytes: k < 16 low nibbles    d * (q - 8)
 *   Q4_1  d m | 16 bytes                      d * q + m
 *   Q4_K  d dmin | 12 scale bytes | 128 bytes: sub-block k/32 in the low (even) or high (odd)
 *         nibbles of bytes 32*(k/64)..: (d * sc) * q - dmin * mn, with 6-bit scales and mins
 *         packed as sc0..3 = bytes 0..3 & 63, mn0..3 = bytes 4..7 & 63, sc4..7 = bytes 8..11
 *         & 15 | (bytes 0..3 >> 6) << 4, mn4..7 = bytes 8..11 >> 4 | (bytes 4..7 >> 6) << 4
 *   Q5_K  as Q4_K, 32 bytes qh after the scales: bit k/32 of qh[k%32] adds 16 to q
 *   Q6_K  ql[128] qh[64] int8 sc[16] d: half h = k/128, quarter r = k%128/32, l = k%32:
 *         q = ((ql[64h + l + 32(r&1)] >> 4(r>>1)) & 15 | ((qh[32h + l] >> 2r) & 3) << 4) - 32,
 *         (d * sc[8h + 2r + l/16]) * q */
static float expect(uint32_t type, const uint8_t *b, int k) {
    switch (type) {
    case GGUF_T_Q8_0:
        return (float)(int8_t)b[2 + k] * rd16(b);
    case GGUF_T_Q4_0: {
        int q = k < 16 ? b[2 + k] & 15 : b[2 + k - 16] >> 4;
        return (float)(q - 8) * rd16(b);
    }
    case GGUF_T_Q4_1: {
        int q = k < 16 ? b[4 + k] & 15 : b[4 + k - 16] >> 4;
        return (float)q * rd16(b) + rd16(b + 2);
    }
    case GGUF_T_Q4_K:
    case GGUF_T_Q5_K: {
        const uint8_t *s = b + 4;
        int j = k / 32, l = k % 32, sc, mn;
        if (j < 4)
            sc = s[j] % 64, mn = s[4 + j] % 64;
        else
            sc = (s[8 + j - 4] % 16) + (s[j - 4] / 64) * 16,
            mn = (s[8 + j - 4] / 16) + (s[j] / 64) * 16;
        const uint8_t *qs = b + (type == GGUF_T_Q4_K ? 16 : 48) + 32 * (j / 2);
        int q = j % 2 ? qs[l] / 16 : qs[l] % 16;
        if (type == GGUF_T_Q5_K && (b[16 + l] >> j) & 1) q += 16;
        return rd16(b) * (float)sc * (float)q - rd16(b + 2) * (float)mn;
    }
    default: {
        int h = k / 128, r = k % 128 / 32, l = k % 32;
        int lo = (b[64 * h + l + 32 * (r % 2)] >> (4 * (r / 2))) % 16;
        int hi = (b[128 + 32 * h + l] >> (2 * r)) % 4;
        int sc = (int8_t)b[192 + 8 * h + 2 * r + l / 16];
        return rd16(b + 208) * (float)sc * (float)(lo + 16 * hi - 32);
    }
    }
}

static void test_quants(void) {
    static const uint32_t types[] = {GGUF_T_Q8_0, GGUF_T_Q4_0, GGUF_T_Q4_1,
                                     GGUF_T_Q4_K, GGUF_T_Q5_K, GGUF_T_Q6_K};
    enum { NB = 24 };
    static uint8_t blocks[NB * 256];
    static float out[NB * 256];
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t t = types[ti];
        int64_t blk = gguf_type_block(t);
        size_t bb = gguf_type_block_bytes(t);
        for (size_t i = 0; i < NB * bb; i++)
            blocks[i] = (uint8_t)test_rand_u64(&seed);
        for (int i = 0; i < NB; i++) { /* finite scales, subnormal in every fourth block */
            uint8_t *b = blocks + (size_t)i * bb;
            bool tiny = i % 4 == 0;
            if (t == GGUF_T_Q6_K)
                put_f16(b + 208, tiny);
            else
                put_f16(b, tiny);
            if (t == GGUF_T_Q4_1 || t == GGUF_T_Q4_K || t == GGUF_T_Q5_K) put_f16(b + 2, tiny);
        }
        CHECK(gguf_dequant(t, blocks, NB * blk, out) == 0);
        int bad = 0;
        for (int i = 0; i < NB; i++)
            for (int k = 0; k < blk; k++) {
                float want = expect(t, blocks + (size_t)i * bb, k), got = out[i * blk + k];
                if (bits(got) != bits(want) && bad++ < 5)
                    CHECKF(0, "%s block %d element %d: got %a want %a", gguf_type_name(t), i, k,
                           (double)got, (double)want);
            }
        CHECK(gguf_dequant(t, blocks, blk + 1, out) == ZP_EINVAL && strstr(err_msg(), "block"));
        CHECK(gguf_dequant(t, blocks, 0, out) == 0);
    }
    CHECK(gguf_dequant(6, blocks, 32, out) == ZP_EUNSUP && strstr(err_msg(), "Q5_0"));

    /* Values worked out by hand (f16 0x3C00 = 1, 0x3800 = 0.5, 0xC000 = -2). */
    uint8_t q8[34] = {0x00, 0x38, (uint8_t)-3, 127};
    CHECK(gguf_dequant(GGUF_T_Q8_0, q8, 32, out) == 0 && out[0] == -1.5f && out[1] == 63.5f &&
          out[2] == 0);
    uint8_t q41[20] = {0x00, 0x38, 0x00, 0xC0, 0xF3};
    CHECK(gguf_dequant(GGUF_T_Q4_1, q41, 32, out) == 0 && out[0] == -0.5f && out[16] == 5.5f &&
          out[1] == -2);
    uint8_t q40[18] = {0x00, 0xC0, 0x0F};
    CHECK(gguf_dequant(GGUF_T_Q4_0, q40, 32, out) == 0 && out[0] == -14 && out[16] == 16 &&
          out[1] == 16);
    /* Q4_K: d 1, dmin 0.5; sub-block 5: scale = (s[9] & 15) | (s[1] >> 6) << 4 = 5 | 32 = 37,
     * min = (s[9] >> 4) | (s[5] >> 6) << 4 = 9 | 0 = 9; element 5*32+3: high nibble of
     * qs[64 + 3] = 7: 37 * 7 - 0.5 * 9 = 254.5. */
    static uint8_t q4k[144];
    memset(q4k, 0, sizeof q4k);
    q4k[0] = 0x00, q4k[1] = 0x3C, q4k[2] = 0x00, q4k[3] = 0x38;
    q4k[4 + 1] = 0x80, q4k[4 + 9] = 0x95, q4k[16 + 64 + 3] = 0x72;
    CHECK(gguf_dequant(GGUF_T_Q4_K, q4k, 256, out) == 0 && out[5 * 32 + 3] == 254.5f &&
          out[4 * 32 + 3] == 0 && out[1 * 32 + 3] == 0);
    /* Q6_K: d -2; element 200 = half 1, quarter 2, l 8: ql[64 + 8] >> 4 = 0xA, qh[32 + 8]
     * bits 4..5 = 2: q = 10 + 32 - 32 = 10, scale sc[8 + 4 + 0] = -3: (-2 * -3) * 10 = 60. */
    static uint8_t q6k[210];
    memset(q6k, 0, sizeof q6k);
    q6k[64 + 8] = 0xA0, q6k[128 + 32 + 8] = 0x20, q6k[192 + 12] = (uint8_t)-3;
    q6k[208] = 0x00, q6k[209] = 0xC0;
    CHECK(gguf_dequant(GGUF_T_Q6_K, q6k, 256, out) == 0 && out[200] == 60 && out[8] == 0);
}

int main(void) {
    test_valid();
    test_truncation();
    test_header();
    test_values();
    test_tensors();
    test_mutations();
    test_f16_bf16();
    test_quants();
    arena_release(&A);
    return test_done("test_gguf");
}
