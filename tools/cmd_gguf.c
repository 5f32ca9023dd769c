/* zipage gguf: a GGUF file's contents (engine/gguf.h), like llama.cpp's gguf-dump.
 *   zipage gguf FILE                       header, every key (type, count, value), every tensor
 *   zipage gguf FILE --dequant NAME OUT    tensor NAME dequantized to raw little-endian f32
 * FILE may also be given as --model FILE. Arrays show their first 8 elements and strings
 * their first 120 bytes (40 inside arrays), escaped. The file is validated in full first, so a
 * damaged one gives the reader's message and exit status 2. Start-up memory only: the tables
 * and a 4 MB buffer of dequantized values (written chunk by chunk) live in an arena. */
#include "arena/err.h"
#include "engine/gguf.h"
#include "tools/cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define ARRAY_SHOWN     8
#define STR_SHOWN       120
#define ARRAY_STR_SHOWN 40
#define CHUNK_FLOATS    (1 << 20)

/* s[0..n) in double quotes, escaped, at most max bytes of it. */
static void put_str(const char *s, size_t n, size_t max) {
    putchar('"');
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", stdout);
        else if (ch == '\t')
            fputs("\\t", stdout);
        else if (ch < 32 || ch == 127)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
    putchar('"');
    if (n > max) printf("... (%zu bytes)", n);
}

/* One value of scalar type t at p. */
static void put_scalar(uint32_t t, const uint8_t *p) {
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        uint64_t u64;
        int64_t i64;
        double f64;
    } v;
    memcpy(&v, p, gguf_vtype_size(t));
    switch ((gguf_vtype)t) {
    case GGUF_V_U8:
        printf("%u", v.u8);
        break;
    case GGUF_V_I8:
        printf("%d", v.i8);
        break;
    case GGUF_V_U16:
        printf("%u", v.u16);
        break;
    case GGUF_V_I16:
        printf("%d", v.i16);
        break;
    case GGUF_V_U32:
        printf("%u", v.u32);
        break;
    case GGUF_V_I32:
        printf("%d", v.i32);
        break;
    case GGUF_V_F32:
        printf("%.9g", (double)v.f32);
        break;
    case GGUF_V_BOOL:
        fputs(v.u8 ? "true" : "false", stdout);
        break;
    case GGUF_V_U64:
        printf("%llu", (unsigned long long)v.u64);
        break;
    case GGUF_V_I64:
        printf("%lld", (long long)v.i64);
        break;
    case GGUF_V_F64:
        printf("%.17g", v.f64);
        break;
    case GGUF_V_STRING:
    case GGUF_V_ARRAY:
        break; /* not scalars: the callers handle them */
    }
}

/* The first elements of an array (an array of arrays shows its inner arrays the same way). */
static void put_array(const gguf_kv *kv) {
    const uint8_t *p = kv->data;
    putchar('[');
    for (uint64_t i = 0; i < kv->n && i < ARRAY_SHOWN; i++) {
        if (i) fputs(", ", stdout);
        if (kv->elem_type == GGUF_V_STRING) {
            const char *s;
            size_t n;
            gguf_str_next(&p, &s, &n);
            put_str(s, n, ARRAY_STR_SHOWN);
        } else if (kv->elem_type == GGUF_V_ARRAY) {
            gguf_kv inner;
            gguf_arr_next(&p, kv, &inner);
            put_array(&inner);
        } else {
            put_scalar(kv->elem_type, p);
            p += gguf_vtype_size(kv->elem_type);
        }
    }
    if (kv->n > ARRAY_SHOWN) fputs(", ...", stdout);
    putchar(']');
}

static void dump(const gguf_file *g) {
    printf("%s: GGUF version %u, %lld keys, %lld tensors, alignment %u, data section at byte "
           "%llu (%llu bytes)\n",
           g->path, g->version, (long long)g->n_kv, (long long)g->n_tensors, g->alignment,
           (unsigned long long)g->data_offset,
           (unsigned long long)(g->len > g->data_offset ? g->len - g->data_offset : 0));
    printf("\n%5s  %-10s %8s  %s\n", "#", "type", "count", "key = value");
    for (int64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        char type[24];
        bool arr = kv->type == GGUF_V_ARRAY;
        snprintf(type, sizeof type, arr ? "[%s]" : "%s", gguf_vtype_name(kv->elem_type));
        printf("%5lld  %-10s %8llu  %s = ", (long long)i + 1, type,
               (unsigned long long)(kv->type == GGUF_V_STRING ? 1 : kv->n), kv->key);
        if (arr)
            put_array(kv);
        else if (kv->type == GGUF_V_STRING)
            put_str((const char *)kv->data, kv->n, STR_SHOWN);
        else
            put_scalar(kv->type, kv->data);
        putchar('\n');
    }
    printf("\n%5s  %-6s %-28s %12s %12s  %s\n", "#", "type", "dims (ne0 first)", "offset", "bytes",
           "name");
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char dims[96];
        int n = 0;
        for (int d = 0; d < t->ndim; d++)
            n += snprintf(dims + n, sizeof dims - (size_t)n, d ? " x %lld" : "%lld",
                          (long long)t->ne[d]);
        printf("%5lld  %-6s %-28s %12llu %12llu  %s\n", (long long)i + 1, gguf_type_name(t->type),
               dims, (unsigned long long)t->offset, (unsigned long long)t->nbytes, t->name);
    }
}

/* Writes tensor name of g dequantized to out, CHUNK_FLOATS values (whole blocks) at a time. */
static int dequant(const gguf_file *g, arena *a, const char *name, const char *out) {
    const gguf_tensor *t = gguf_tensor_find(g, name);
    if (!t) return err_set(ZP_ENOTFOUND, "%s: no tensor '%s'", g->path, name);
    int64_t block = gguf_type_block(t->type), chunk = CHUNK_FLOATS / block * block;
    size_t bb = gguf_type_block_bytes(t->type);
    float *buf = arena_alloc_uninit(a, sizeof(float) * (size_t)chunk, 64, "dequantized values");
    if (!buf) return ZP_ENOMEM;
    FILE *f = fopen(out, "wb");
    if (!f) return err_set(ZP_EIO, "%s: cannot create: %s", out, strerror(errno));
    int rc = 0;
    for (int64_t at = 0; !rc && at < t->nelem; at += chunk) {
        int64_t n = t->nelem - at < chunk ? t->nelem - at : chunk;
        rc = gguf_dequant(t->type, t->data + (size_t)(at / block) * bb, n, buf);
        if (!rc && fwrite(buf, sizeof(float), (size_t)n, f) != (size_t)n)
            rc = err_set(ZP_EIO, "%s: write failed", out);
    }
    if (fclose(f) && !rc) rc = err_set(ZP_EIO, "%s: write failed", out);
    if (!rc)
        printf("%s: %lld values of %s (%s) written as f32\n", out, (long long)t->nelem, name,
               gguf_type_name(t->type));
    return rc;
}

int cmd_gguf(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("gguf", rc);
    cli c;
    cli_init(&c, "gguf", argc, argv);
    const char *file = cf.model[0] ? cf.model : NULL, *name = NULL, *out = NULL, *o;
    while (!rc && (o = cli_next(&c))) {
        if (!strcmp(o, "--dequant")) {
            if (c.i + 2 > c.argc)
                rc = err_set(ZP_EINVAL, "--dequant needs a tensor name and an output file");
            else
                name = c.argv[c.i++], out = c.argv[c.i++];
        } else if (o[0] != '-' && !file)
            file = o;
        else
            rc = cli_unknown(&c, o);
    }
    if (!rc && !file) rc = err_set(ZP_EINVAL, "usage: zipage gguf FILE [--dequant NAME OUT]");
    if (rc) return cli_fail("gguf", rc);
    arena a;
    gguf_file g;
    if ((rc = arena_init(&a, "gguf", (size_t)4 << 30))) return cli_fail("gguf", rc);
    if (!(rc = gguf_open(&g, &a, file))) {
        if (name)
            rc = dequant(&g, &a, name, out);
        else
            dump(&g);
        gguf_close(&g);
    }
    arena_release(&a);
    return rc ? cli_fail("gguf", rc) : 0;
}
