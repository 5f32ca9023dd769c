/* loader: Hugging Face model directories (see loader.h).
 *
 * Config: config.json is read in either spelling (Hub: torch_dtype, rope_theta, rope_scaling;
 * transformers 5: dtype, rope_parameters{rope_type, rope_theta, ...}); every number is range
 * checked so later size arithmetic cannot overflow. generation_config.json's eos_token_id,
 * when present, replaces config.json's (that is what generate() stops on).
 *
 * Weights: every safetensors file (model.safetensors, or the distinct files of the index's
 * weight_map) is mapped whole. Each header is validated entry by entry (dtype known, shape
 * non-negative, data_offsets inside the data section and equal to shape * dtype size, no two
 * tensors sharing a byte: one tensor's writes or quantisation must never show in another's),
 * and the entries go into a name hash table in the arena's temporary side; then every tensor the
 * architecture needs is looked up and its shape, dtype and alignment checked. Names are kept
 * in the permanent side only for the tensors handed out. The temporary side is released
 * before returning; on error every mapping made so far is undone.
 *
 * Dummy weights (load_format = dummy): one arena buffer of bf16 values from a fixed xorshift
 * seed, as long as the largest tensor; every tensor points at its start. Nothing is mapped,
 * so loader_close has nothing to undo.
 */
#include "engine/loader.h"

#include "arena/err.h"
#include "engine/gguf.h"
#include "engine/ggufmodel.h"
#include "engine/json.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LOADER_PATH_MAX 4096
/* Upper bounds that keep products such as vocab * hidden * 4 far from 64-bit overflow. */
#define DIM_MAX    (1 << 24)
#define LAYERS_MAX 4096
/* safetensors' own limit on the JSON header. */
#define ST_HEADER_MAX (100 * 1000 * 1000)

static const char supported_archs[] = "Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM";

const char *loader_arch_name(model_arch a) {
    return a == MODEL_QWEN3   ? "Qwen3ForCausalLM"
           : a == MODEL_QWEN2 ? "Qwen2ForCausalLM"
                              : "LlamaForCausalLM";
}

static int join(char *out, const char *dir, const char *file) {
    int n = snprintf(out, LOADER_PATH_MAX, "%s/%s", dir, file);
    if (n < 0 || n >= LOADER_PATH_MAX) return err_set(ZP_EINVAL, "%s: path too long", dir);
    return 0;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- config.json ---------------------------------------------------------------------- */

/* Integer key in [lo, hi]; *found false (and *v untouched) when absent or null. */
static int get_int(const json_doc *d, int obj, const char *key, int64_t lo, int64_t hi, int64_t *v,
                   bool *found) {
    int t = json_get(d, obj, key);
    *found = t >= 0 && !json_is_null(d, t);
    if (!*found) return 0;
    int64_t x;
    if (json_i64(d, t, &x)) return err_set(ZP_EFORMAT, "%s: '%s' is not an integer", d->name, key);
    if (x < lo || x > hi)
        return err_set(ZP_EFORMAT, "%s: '%s' = %lld out of range [%lld, %lld]", d->name, key,
                       (long long)x, (long long)lo, (long long)hi);
    *v = x;
    return 0;
}

static int need_int(const json_doc *d, int obj, const char *key, int64_t lo, int64_t hi, int *v) {
    int64_t x;
    bool found;
    int rc = get_int(d, obj, key, lo, hi, &x, &found);
    if (rc) return rc;
    if (!found) return err_set(ZP_EFORMAT, "%s: missing '%s'", d->name, key);
    *v = (int)x;
    return 0;
}

static int get_f64(const json_doc *d, int obj, const char *key, double lo, double hi, double *v,
                   bool *found) {
    int t = json_get(d, obj, key);
    bool f = t >= 0 && !json_is_null(d, t);
    if (found) *found = f;
    if (!f) return 0;
    double x;
    if (json_f64(d, t, &x)) return err_set(ZP_EFORMAT, "%s: '%s' is not a number", d->name, key);
    if (!(x >= lo && x <= hi))
        return err_set(ZP_EFORMAT, "%s: '%s' = %g out of range [%g, %g]", d->name, key, x, lo, hi);
    *v = x;
    return 0;
}

static int get_bool(const json_doc *d, int obj, const char *key, bool *v) {
    int t = json_get(d, obj, key);
    if (t < 0 || json_is_null(d, t)) return 0;
    if (json_bool(d, t, v)) return err_set(ZP_EFORMAT, "%s: '%s' is not a boolean", d->name, key);
    return 0;
}

/* Token ids: an integer or a list of integers (null = none). */
static int get_ids(const json_doc *d, int obj, const char *key, int vocab, int32_t *ids, int *n) {
    int t = json_get(d, obj, key);
    *n = 0;
    if (t < 0 || json_is_null(d, t)) return 0;
    int cnt = json_is_arr(d, t) ? json_len(d, t) : 1;
    if (cnt > LOADER_MAX_EOS)
        return err_set(ZP_ELIMIT, "%s: '%s' lists %d ids (at most %d)", d->name, key, cnt,
                       LOADER_MAX_EOS);
    for (int i = 0, e = json_is_arr(d, t) ? t + 1 : t; i < cnt; i++, e = json_skip(d, e)) {
        int64_t x;
        if (json_i64(d, e, &x) || x < 0 || x >= vocab)
            return err_set(ZP_EFORMAT, "%s: '%s' must be token ids in [0, %d)", d->name, key,
                           vocab);
        ids[(*n)++] = (int32_t)x;
    }
    return 0;
}

static int parse_dtype(const json_doc *d, int t, const char *key, zp_dtype *out) {
    if (!json_is_str(d, t)) return err_set(ZP_EFORMAT, "%s: '%s' is not a string", d->name, key);
    if (json_str_eq(d, t, "bfloat16"))
        *out = ZP_BF16;
    else if (json_str_eq(d, t, "float16"))
        *out = ZP_F16;
    else if (json_str_eq(d, t, "float32"))
        *out = ZP_F32;
    else {
        const char *s;
        int n = json_raw(d, t, &s);
        return err_set(ZP_EUNSUP, "%s: %s '%.*s' is not supported (bfloat16, float16, float32)",
                       d->name, key, n, s);
    }
    return 0;
}

/* rope_scaling (Hub) or rope_parameters (transformers 5): the same keys except that the
 * latter also carries rope_theta. */
static int parse_rope(model_config *c, const json_doc *d, int obj, const char *key) {
    int r = json_get(d, obj, key);
    if (r < 0 || json_is_null(d, r)) return 0;
    if (!json_is_obj(d, r)) return err_set(ZP_EFORMAT, "%s: '%s' is not an object", d->name, key);
    int rc = get_f64(d, r, "rope_theta", 1e-3, 1e12, &c->rope_theta, NULL);
    if (rc) return rc;
    int t = json_get(d, r, "rope_type");
    if (t < 0) t = json_get(d, r, "type");
    if (t < 0 || json_is_null(d, t) || json_str_eq(d, t, "default")) return 0;
    if (!json_str_eq(d, t, "llama3")) {
        const char *s;
        int n = json_raw(d, t, &s);
        return err_set(ZP_EUNSUP, "%s: %s type '%.*s' is not supported (default, llama3)", d->name,
                       key, n, s);
    }
    c->rope = ROPE_LLAMA3;
    bool f1, f2, f3, f4;
    int64_t orig;
    if ((rc = get_f64(d, r, "factor", 1.0, 1e6, &c->rope_factor, &f1)) ||
        (rc = get_f64(d, r, "low_freq_factor", 1e-6, 1e6, &c->rope_low_freq_factor, &f2)) ||
        (rc = get_f64(d, r, "high_freq_factor", 1e-6, 1e6, &c->rope_high_freq_factor, &f3)) ||
        (rc = get_int(d, r, "original_max_position_embeddings", 1, INT_MAX, &orig, &f4)))
        return rc;
    if (!f1 || !f2 || !f3 || !f4)
        return err_set(ZP_EFORMAT,
                       "%s: %s llama3 needs factor, low_freq_factor, high_freq_factor and "
                       "original_max_position_embeddings",
                       d->name, key);
    c->rope_orig_max_pos = (int)orig;
    if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
        return err_set(ZP_EFORMAT, "%s: %s high_freq_factor must exceed low_freq_factor", d->name,
                       key);
    return 0;
}

static int parse_config(model_config *c, const json_doc *d) {
    if (!json_is_obj(d, 0)) return err_set(ZP_EFORMAT, "%s: not a JSON object", d->name);
    memset(c, 0, sizeof *c);
    int t = json_get(d, 0, "architectures");
    int arch = json_is_arr(d, t) && json_len(d, t) > 0 ? t + 1 : -1;
    if (!json_is_str(d, arch)) return err_set(ZP_EFORMAT, "%s: missing 'architectures'", d->name);
    if (json_str_eq(d, arch, "Qwen3ForCausalLM"))
        c->arch = MODEL_QWEN3;
    else if (json_str_eq(d, arch, "Qwen2ForCausalLM"))
        c->arch = MODEL_QWEN2;
    else if (json_str_eq(d, arch, "LlamaForCausalLM"))
        c->arch = MODEL_LLAMA;
    else {
        const char *s;
        int n = json_raw(d, arch, &s);
        return err_set(ZP_EUNSUP, "%s: architecture '%.*s' is not supported (supported: %s)",
                       d->name, n, s, supported_archs);
    }
    int rc;
    if ((rc = need_int(d, 0, "hidden_size", 1, DIM_MAX, &c->hidden)) ||
        (rc = need_int(d, 0, "num_hidden_layers", 1, LAYERS_MAX, &c->layers)) ||
        (rc = need_int(d, 0, "num_attention_heads", 1, 65536, &c->heads)) ||
        (rc = need_int(d, 0, "intermediate_size", 1, DIM_MAX, &c->intermediate)) ||
        (rc = need_int(d, 0, "vocab_size", 1, DIM_MAX, &c->vocab)) ||
        (rc = need_int(d, 0, "max_position_embeddings", 1, INT_MAX, &c->max_pos)))
        return rc;
    int64_t x;
    bool found;
    c->kv_heads = c->heads;
    if ((rc = get_int(d, 0, "num_key_value_heads", 1, 65536, &x, &found))) return rc;
    if (found) c->kv_heads = (int)x;
    if (c->heads % c->kv_heads)
        return err_set(ZP_EFORMAT,
                       "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       d->name, c->heads, c->kv_heads);
    if ((rc = get_int(d, 0, "head_dim", 2, 65536, &x, &found))) return rc;
    if (found)
        c->head_dim = (int)x;
    else if (c->hidden % c->heads)
        return err_set(
            ZP_EFORMAT,
            "%s: no head_dim and hidden_size %d is not a multiple of num_attention_heads %d",
            d->name, c->hidden, c->heads);
    else
        c->head_dim = c->hidden / c->heads;
    if (c->head_dim % 2)
        return err_set(ZP_EFORMAT, "%s: head_dim %d is odd (rotary needs pairs)", d->name,
                       c->head_dim);
    if ((int64_t)c->heads * c->head_dim > DIM_MAX)
        return err_set(ZP_EFORMAT, "%s: num_attention_heads * head_dim too large", d->name);

    c->rms_eps = 1e-6;
    if ((rc = get_f64(d, 0, "rms_norm_eps", 1e-30, 1.0, &c->rms_eps, NULL))) return rc;
    c->rope_theta = 10000.0;
    if ((rc = get_f64(d, 0, "rope_theta", 1e-3, 1e12, &c->rope_theta, NULL))) return rc;
    c->rope = ROPE_DEFAULT;
    c->rope_factor = c->rope_low_freq_factor = c->rope_high_freq_factor = 1.0;
    c->rope_orig_max_pos = c->max_pos;
    if ((rc = parse_rope(c, d, 0, "rope_scaling")) || (rc = parse_rope(c, d, 0, "rope_parameters")))
        return rc;

    c->dtype = ZP_F32; /* transformers' default when the config names none */
    t = json_get(d, 0, "dtype");
    if (t < 0 || json_is_null(d, t)) t = json_get(d, 0, "torch_dtype");
    if (t >= 0 && !json_is_null(d, t) && (rc = parse_dtype(d, t, "dtype", &c->dtype))) return rc;

    c->tie_embeddings = false;
    if ((rc = get_bool(d, 0, "tie_word_embeddings", &c->tie_embeddings))) return rc;
    c->attn_bias = c->arch == MODEL_QWEN2;
    if (c->arch != MODEL_QWEN2 && (rc = get_bool(d, 0, "attention_bias", &c->attn_bias))) return rc;
    c->qk_norm = c->arch == MODEL_QWEN3;

    bool b = false;
    if ((rc = get_bool(d, 0, "mlp_bias", &b))) return rc;
    if (b) return err_set(ZP_EUNSUP, "%s: mlp_bias true is not supported", d->name);
    b = false;
    if ((rc = get_bool(d, 0, "use_sliding_window", &b))) return rc;
    if (b) return err_set(ZP_EUNSUP, "%s: use_sliding_window true is not supported", d->name);
    /* transformers 5 lists each layer's attention kind; only full attention is supported. */
    t = json_get(d, 0, "layer_types");
    if (t >= 0 && !json_is_null(d, t)) {
        if (!json_is_arr(d, t) || json_len(d, t) != c->layers)
            return err_set(ZP_EFORMAT, "%s: 'layer_types' must list %d layer kinds", d->name,
                           c->layers);
        for (int i = 0, e = t + 1; i < c->layers; i++, e = json_skip(d, e))
            if (!json_str_eq(d, e, "full_attention"))
                return err_set(ZP_EUNSUP,
                               "%s: layer_types[%d] is not 'full_attention' (sliding window "
                               "attention is not supported)",
                               d->name, i);
    }
    t = json_get(d, 0, "hidden_act");
    if (t >= 0 && !json_str_eq(d, t, "silu")) {
        const char *s;
        int n = json_raw(d, t, &s);
        return err_set(ZP_EUNSUP, "%s: hidden_act '%.*s' is not supported (silu)", d->name, n, s);
    }

    int32_t ids[LOADER_MAX_EOS];
    int n;
    if ((rc = get_ids(d, 0, "eos_token_id", c->vocab, c->eos_ids, &c->n_eos))) return rc;
    if ((rc = get_ids(d, 0, "bos_token_id", c->vocab, ids, &n))) return rc;
    if (n > 1) return err_set(ZP_EFORMAT, "%s: 'bos_token_id' must be one id", d->name);
    c->bos_id = n ? ids[0] : -1;
    return 0;
}

int loader_config(model_config *c, arena *a, const char *dir) {
    if (gguf_is_file(dir)) return ggufmodel_config(c, a, dir);
    char path[LOADER_PATH_MAX];
    int rc = join(path, dir, "config.json");
    if (rc) return rc;
    size_t mark = arena_temp_mark(a);
    json_doc d;
    rc = json_load(&d, a, path);
    if (!rc) rc = parse_config(c, &d);
    if (!rc && !(rc = join(path, dir, "generation_config.json")) && file_exists(path)) {
        json_doc g;
        rc = json_load(&g, a, path);
        if (!rc && !json_is_obj(&g, 0)) rc = err_set(ZP_EFORMAT, "%s: not a JSON object", path);
        int32_t ids[LOADER_MAX_EOS];
        int n = 0;
        if (!rc) rc = get_ids(&g, 0, "eos_token_id", c->vocab, ids, &n);
        if (!rc && n) {
            memcpy(c->eos_ids, ids, sizeof ids);
            c->n_eos = n;
        }
    }
    arena_temp_reset(a, mark);
    return rc;
}

/* ---- safetensors -------------------------------------------------------------------------- */

/* One header entry, validated; name points into the mapping (or temp memory if escaped). */
typedef struct st_entry {
    const char *name;
    size_t name_len;
    const uint8_t *data;
    uint64_t begin, end; /* data_offsets: [begin, end) in the file's data section */
    int dtype; /* zp_dtype, or -1 for a valid safetensors dtype the engine does not use */
    char dtype_name[8];
    int ndim;
    int64_t shape[8];
    int file;
} st_entry;

typedef struct st_set {
    st_entry *e;
    int n, cap;
    int *hash; /* open addressing, -1 empty */
    int hcap;
    const char *file_name[64];
} st_set;

static const struct {
    const char *name;
    int size, zp;
} st_dtypes[] = {
    {"BF16", 2, ZP_BF16}, {"F16", 2, ZP_F16}, {"F32", 4, ZP_F32}, {"F64", 8, -1},
    {"I8", 1, -1},        {"U8", 1, -1},      {"I16", 2, -1},     {"U16", 2, -1},
    {"I32", 4, -1},       {"U32", 4, -1},     {"I64", 8, -1},     {"U64", 8, -1},
    {"BOOL", 1, -1},      {"F8_E4M3", 1, -1}, {"F8_E5M2", 1, -1},
};

static uint64_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int st_find(const st_set *s, const char *name) {
    size_t n = strlen(name);
    for (int i = (int)(name_hash(name, n) % (uint64_t)s->hcap);; i = (i + 1) % s->hcap) {
        int k = s->hash[i];
        if (k < 0) return -1;
        if (s->e[k].name_len == n && !memcmp(s->e[k].name, name, n)) return k;
    }
}

/* Parses one entry's value object {dtype, shape, data_offsets}. */
static int st_entry_parse(st_entry *e, const json_doc *d, int v, const uint8_t *data, uint64_t dlen,
                          const char *file) {
    char nm[512];
    snprintf(nm, sizeof nm, "%.*s", (int)(e->name_len < 400 ? e->name_len : 400), e->name);
    if (!json_is_obj(d, v))
        return err_set(ZP_EFORMAT, "%s: tensor '%s': entry is not an object", file, nm);
    int t = json_get(d, v, "dtype");
    size_t len;
    if (!json_is_str(d, t) || json_str(d, t, e->dtype_name, sizeof e->dtype_name, &len))
        return err_set(ZP_EFORMAT, "%s: tensor '%s': bad or missing dtype", file, nm);
    int esize = 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(e->dtype_name, st_dtypes[i].name))
            esize = st_dtypes[i].size, e->dtype = st_dtypes[i].zp;
    if (!esize)
        return err_set(ZP_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", file, nm, e->dtype_name);
    int s = json_get(d, v, "shape");
    if (!json_is_arr(d, s) || json_len(d, s) > 8)
        return err_set(ZP_EFORMAT, "%s: tensor '%s': bad or missing shape", file, nm);
    e->ndim = json_len(d, s);
    uint64_t bytes = (uint64_t)esize;
    for (int i = 0, k = s + 1; i < e->ndim; i++, k = json_skip(d, k)) {
        int64_t x;
        if (json_i64(d, k, &x) || x < 0 || x > (int64_t)1 << 40)
            return err_set(ZP_EFORMAT, "%s: tensor '%s': bad shape", file, nm);
        e->shape[i] = x;
        if (x && bytes > UINT64_MAX / (uint64_t)x)
            return err_set(ZP_EFORMAT, "%s: tensor '%s': shape too large", file, nm);
        bytes *= (uint64_t)x;
    }
    int o = json_get(d, v, "data_offsets");
    int64_t b, en;
    if (!json_is_arr(d, o) || json_len(d, o) != 2 || json_i64(d, o + 1, &b) ||
        json_i64(d, json_skip(d, o + 1), &en))
        return err_set(ZP_EFORMAT, "%s: tensor '%s': bad or missing data_offsets", file, nm);
    if (b < 0 || en < b || (uint64_t)en > dlen)
        return err_set(ZP_EFORMAT,
                       "%s: tensor '%s': data_offsets [%lld,%lld] outside the %llu data bytes",
                       file, nm, (long long)b, (long long)en, (unsigned long long)dlen);
    if ((uint64_t)(en - b) != bytes)
        return err_set(ZP_EFORMAT, "%s: tensor '%s': %lld data bytes, shape and dtype %s need %llu",
                       file, nm, (long long)(en - b), e->dtype_name, (unsigned long long)bytes);
    e->data = data + b;
    e->begin = (uint64_t)b, e->end = (uint64_t)en;
    return 0;
}

/* Orders by begin offset; ties by end, then header order, so the error names a fixed pair. */
static int st_by_offset(const void *x, const void *y) {
    const st_entry *a = *(const st_entry *const *)x, *b = *(const st_entry *const *)y;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end) return a->end < b->end ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* Refuses a file in which two tensors share a byte (entries s->e[first..s->n) are its own).
 * Sorted by begin, a tensor overlaps an earlier one exactly when it begins before the largest
 * end seen so far; empty tensors hold no bytes and overlap nothing. */
static int st_check_overlap(st_set *s, arena *a, int first, const char *file) {
    int n = s->n - first;
    if (n < 2) return 0;
    const st_entry **by = arena_temp(a, sizeof *by * (size_t)n, 8, "safetensors offsets");
    if (!by) return ZP_ENOMEM;
    for (int i = 0; i < n; i++)
        by[i] = &s->e[first + i];
    qsort(by, (size_t)n, sizeof *by, st_by_offset);
    const st_entry *last = NULL; /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < n; i++) {
        const st_entry *e = by[i];
        if (e->begin == e->end) continue;
        if (last && e->begin < last->end)
            return err_set(ZP_EFORMAT,
                           "%s: tensors '%.*s' data_offsets [%llu,%llu] and '%.*s' [%llu,%llu] "
                           "overlap (each tensor needs its own bytes)",
                           file, (int)(last->name_len < 400 ? last->name_len : 400), last->name,
                           (unsigned long long)last->begin, (unsigned long long)last->end,
                           (int)(e->name_len < 400 ? e->name_len : 400), e->name,
                           (unsigned long long)e->begin, (unsigned long long)e->end);
        if (!last || e->end > last->end) last = e;
    }
    return 0;
}

/* Validates one mapped file's header and appends its entries to s. */
static int st_parse_file(st_set *s, arena *a, const uint8_t *m, size_t len, int file_idx) {
    const char *file = s->file_name[file_idx];
    if (len < 8)
        return err_set(ZP_EFORMAT, "%s: %zu bytes, too short for a safetensors header", file, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | m[i];
    if (hlen < 2 || hlen > len - 8)
        return err_set(ZP_EFORMAT, "%s: header length %llu past the end of the file (%zu bytes)",
                       file, (unsigned long long)hlen, len);
    if (hlen > ST_HEADER_MAX)
        return err_set(ZP_EFORMAT, "%s: header of %llu bytes (safetensors allows %d)", file,
                       (unsigned long long)hlen, ST_HEADER_MAX);
    json_doc d;
    int rc = json_parse(&d, a, (const char *)m + 8, (size_t)hlen, file);
    if (rc) return rc;
    if (!json_is_obj(&d, 0)) return err_set(ZP_EFORMAT, "%s: header is not a JSON object", file);
    const uint8_t *data = m + 8 + hlen;
    uint64_t dlen = len - 8 - hlen;
    int n = d.tok[0].size;
    if (s->n + n > s->cap) {
        int cap = s->cap * 2 > s->n + n ? s->cap * 2 : s->n + n + 64;
        st_entry *e = arena_temp(a, sizeof *e * (size_t)cap, 8, "safetensors entries");
        if (!e) return ZP_ENOMEM;
        if (s->n) memcpy(e, s->e, sizeof *e * (size_t)s->n);
        s->e = e, s->cap = cap;
    }
    int first = s->n;
    for (int i = 0, k = 1; i < n; i++, k = json_skip(&d, k + 1)) {
        if (json_str_eq(&d, k, "__metadata__")) continue;
        st_entry *e = &s->e[s->n];
        memset(e, 0, sizeof *e);
        e->file = file_idx;
        const jsmntok_t *kt = &d.tok[k];
        e->name = d.src + kt->start;
        e->name_len = (size_t)(kt->end - kt->start);
        if (memchr(e->name, '\\', e->name_len)) {
            char *buf = arena_temp(a, e->name_len + 1, 1, "tensor name");
            if (!buf) return ZP_ENOMEM;
            if (json_str(&d, k, buf, e->name_len + 1, &e->name_len))
                return err_prefix(ZP_EFORMAT, "%s: tensor name", file);
            e->name = buf;
        }
        if ((rc = st_entry_parse(e, &d, k + 1, data, dlen, file))) return rc;
        s->n++;
    }
    return st_check_overlap(s, a, first, file);
}

static int st_build_hash(st_set *s, arena *a) {
    s->hcap = 2 * s->n + 1;
    s->hash = arena_temp(a, sizeof(int) * (size_t)s->hcap, 8, "tensor hash");
    if (!s->hash) return ZP_ENOMEM;
    memset(s->hash, 0xff, sizeof(int) * (size_t)s->hcap);
    for (int k = 0; k < s->n; k++) {
        st_entry *e = &s->e[k];
        int i = (int)(name_hash(e->name, e->name_len) % (uint64_t)s->hcap);
        for (; s->hash[i] >= 0; i = (i + 1) % s->hcap) {
            const st_entry *o = &s->e[s->hash[i]];
            if (o->name_len == e->name_len && !memcmp(o->name, e->name, e->name_len))
                return err_set(ZP_EFORMAT, "%s: tensor '%.*s' appears twice (also in %s)",
                               s->file_name[e->file], (int)(e->name_len < 400 ? e->name_len : 400),
                               e->name, s->file_name[o->file]);
        }
        s->hash[i] = k;
    }
    return 0;
}

typedef struct want_ctx {
    st_set *s;
    arena *a;
    const char *missing_in; /* file named when a tensor is absent */
    const json_doc *index;  /* weight_map object's doc, or NULL */
    int weight_map;
} want_ctx;

/* Finds name with exactly shape [d0] (d1 < 0) or [d0, d1] and a supported dtype. */
static int want(want_ctx *w, tensor *out, const char *name, int64_t d0, int64_t d1, bool optional) {
    int k = st_find(w->s, name);
    if (k < 0) {
        if (optional) return 0;
        if (w->index) {
            int t = json_get(w->index, w->weight_map, name);
            if (t >= 0) {
                char f[256];
                json_str(w->index, t, f, sizeof f, NULL);
                return err_set(
                    ZP_EFORMAT,
                    "%s: tensor '%s' missing (model.safetensors.index.json places it there)", f,
                    name);
            }
        }
        return err_set(ZP_EFORMAT, "%s: tensor '%s' missing", w->missing_in, name);
    }
    const st_entry *e = &w->s->e[k];
    const char *file = w->s->file_name[e->file];
    int nd = d1 < 0 ? 1 : 2;
    if (e->ndim != nd || e->shape[0] != d0 || (nd == 2 && e->shape[1] != d1)) {
        char got[160] = "[", exp[64];
        for (int i = 0; i < e->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
                     (long long)e->shape[i]);
        strcat(got, "]");
        if (nd == 1)
            snprintf(exp, sizeof exp, "[%lld]", (long long)d0);
        else
            snprintf(exp, sizeof exp, "[%lld,%lld]", (long long)d0, (long long)d1);
        return err_set(ZP_EFORMAT, "%s: tensor '%s': shape %s, expected %s", file, name, got, exp);
    }
    if (e->dtype < 0)
        return err_set(ZP_EUNSUP, "%s: tensor '%s': dtype %s is not supported (BF16, F16, F32)",
                       file, name, e->dtype_name);
    size_t align = zp_dtype_size((zp_dtype)e->dtype);
    if ((uintptr_t)e->data % align)
        return err_set(
            ZP_EFORMAT,
            "%s: tensor '%s': data not %zu-byte aligned in the file (re-save it with safetensors)",
            file, name, align);
    out->data = e->data;
    out->dtype = (zp_dtype)e->dtype;
    out->ndim = nd;
    out->shape[0] = d0;
    out->shape[1] = nd == 2 ? d1 : 0;
    out->name = arena_strdup(w->a, name, strlen(name), "tensor name");
    return out->name ? 0 : ZP_ENOMEM;
}

static int want_layer(want_ctx *w, const model_config *c, layer_weights *l, int i) {
    const int64_t H = c->hidden, D = c->head_dim, Q = (int64_t)c->heads * D,
                  KV = (int64_t)c->kv_heads * D, I = c->intermediate;
    char n[128];
    int rc = 0;
#define W(field, suffix, d0, d1)                                                                   \
    do {                                                                                           \
        snprintf(n, sizeof n, "model.layers.%d.%s", i, suffix);                                    \
        if ((rc = want(w, &l->field, n, d0, d1, false))) return rc;                                \
    } while (0)
    W(in_norm, "input_layernorm.weight", H, -1);
    W(post_norm, "post_attention_layernorm.weight", H, -1);
    W(q, "self_attn.q_proj.weight", Q, H);
    W(k, "self_attn.k_proj.weight", KV, H);
    W(v, "self_attn.v_proj.weight", KV, H);
    W(o, "self_attn.o_proj.weight", H, Q);
    if (c->attn_bias) {
        W(q_bias, "self_attn.q_proj.bias", Q, -1);
        W(k_bias, "self_attn.k_proj.bias", KV, -1);
        W(v_bias, "self_attn.v_proj.bias", KV, -1);
    }
    if (c->qk_norm) {
        W(q_norm, "self_attn.q_norm.weight", D, -1);
        W(k_norm, "self_attn.k_norm.weight", D, -1);
    }
    W(gate, "mlp.gate_proj.weight", I, H);
    W(up, "mlp.up_proj.weight", I, H);
    W(down, "mlp.down_proj.weight", H, I);
#undef W
    return rc;
}

/* Maps file (a name inside dir) unless already mapped; *idx gets its slot. */
static int map_one(model_weights *w, st_set *s, arena *a, const char *dir, const char *file,
                   int *idx) {
    for (int i = 0; i < w->nfiles; i++)
        if (!strcmp(s->file_name[i], file)) {
            *idx = i;
            return 0;
        }
    if (w->nfiles >= 64) return err_set(ZP_ELIMIT, "%s: more than 64 safetensors files", dir);
    if (!*file || strchr(file, '/') || !strcmp(file, "..") || !strcmp(file, "."))
        return err_set(ZP_EFORMAT, "model.safetensors.index.json: bad file name '%s'", file);
    char path[LOADER_PATH_MAX];
    int rc = join(path, dir, file);
    if (rc) return rc;
    char *name = arena_strdup(a, file, strlen(file), "file name");
    if (!name) return ZP_ENOMEM;
    if ((rc = arena_map_file(a, path, &w->maps[w->nfiles], &w->map_len[w->nfiles]))) return rc;
    s->file_name[w->nfiles] = name;
    *idx = w->nfiles++;
    return 0;
}

static int load_weights(model_weights *w, const model_config *c, arena *a, const char *dir,
                        st_set *s) {
    char path[LOADER_PATH_MAX];
    int rc = join(path, dir, "model.safetensors.index.json");
    if (rc) return rc;
    want_ctx wc = {.s = s, .a = a, .missing_in = "model.safetensors"};
    json_doc idx;
    int idx_file;
    if (file_exists(path)) {
        if ((rc = json_load(&idx, a, path))) return rc;
        idx.name = "model.safetensors.index.json";
        int wm = json_get(&idx, 0, "weight_map");
        if (!json_is_obj(&idx, wm))
            return err_set(ZP_EFORMAT, "model.safetensors.index.json: missing 'weight_map' object");
        for (int i = 0, k = wm + 1; i < json_len(&idx, wm); i++, k = json_skip(&idx, k + 1)) {
            char f[256];
            if (!json_is_str(&idx, k + 1) || json_str(&idx, k + 1, f, sizeof f, NULL))
                return err_set(
                    ZP_EFORMAT,
                    "model.safetensors.index.json: weight_map values must be file names");
            if ((rc = map_one(w, s, a, dir, f, &idx_file))) return rc;
        }
        if (!w->nfiles)
            return err_set(ZP_EFORMAT, "model.safetensors.index.json: empty weight_map");
        wc.index = &idx;
        wc.weight_map = wm;
        wc.missing_in = "model.safetensors.index.json";
    } else {
        if ((rc = join(path, dir, "model.safetensors"))) return rc;
        if (!file_exists(path))
            return err_set(ZP_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json",
                           dir);
        if ((rc = map_one(w, s, a, dir, "model.safetensors", &idx_file))) return rc;
    }
    for (int i = 0; i < w->nfiles; i++)
        if ((rc = st_parse_file(s, a, w->maps[i], w->map_len[i], i))) return rc;
    if ((rc = st_build_hash(s, a))) return rc;
    if (wc.index) { /* every tensor the index places must be in the file it names */
        for (int i = 0, k = wc.weight_map + 1; i < json_len(&idx, wc.weight_map);
             i++, k = json_skip(&idx, k + 1)) {
            char name[512], f[256];
            if (json_str(&idx, k, name, sizeof name, NULL) ||
                json_str(&idx, k + 1, f, sizeof f, NULL))
                return err_set(ZP_EFORMAT, "model.safetensors.index.json: bad weight_map entry");
            int e = st_find(s, name);
            if (e < 0 || strcmp(s->file_name[s->e[e].file], f))
                return err_set(
                    ZP_EFORMAT,
                    "%s: tensor '%s' missing (model.safetensors.index.json places it there)", f,
                    name);
        }
    }

    const int64_t V = c->vocab, H = c->hidden;
    if ((rc = want(&wc, &w->embed, "model.embed_tokens.weight", V, H, false)) ||
        (rc = want(&wc, &w->final_norm, "model.norm.weight", H, -1, false)) ||
        (rc = want(&wc, &w->lm_head, "lm_head.weight", V, H, c->tie_embeddings)))
        return rc;
    if (!w->lm_head.data) w->lm_head = w->embed;
    w->layers = arena_alloc(a, sizeof *w->layers * (size_t)c->layers, 64, "layer weights");
    if (!w->layers) return ZP_ENOMEM;
    for (int i = 0; i < c->layers; i++)
        if ((rc = want_layer(&wc, c, &w->layers[i], i))) return rc;
    return 0;
}

int loader_weights(model_weights *w, const model_config *c, arena *a, const char *dir) {
    if (gguf_is_file(dir)) return ggufmodel_weights(w, c, a, dir);
    memset(w, 0, sizeof *w);
    size_t mark = arena_temp_mark(a);
    st_set s;
    memset(&s, 0, sizeof s);
    int rc = load_weights(w, c, a, dir, &s);
    arena_temp_reset(a, mark);
    if (rc) loader_close(w);
    return rc;
}

void loader_close(model_weights *w) {
    for (int i = 0; i < w->nfiles; i++)
        arena_unmap_file(w->maps[i], w->map_len[i]);
    memset(w, 0, sizeof *w);
}

static void dummy_tensor(tensor *t, const uint16_t *data, int64_t rows, int64_t cols,
                         const char *name) {
    *t = (tensor){
        .data = data, .dtype = ZP_BF16, .ndim = cols ? 2 : 1, .shape = {rows, cols}, .name = name};
}

int loader_dummy_weights(model_weights *w, const model_config *c, arena *a) {
    memset(w, 0, sizeof *w);
    size_t H = (size_t)c->hidden, D = (size_t)c->head_dim, V = (size_t)c->vocab;
    size_t I = (size_t)c->intermediate, qd = (size_t)c->heads * D, kd = (size_t)c->kv_heads * D;
    size_t most = V * H; /* the largest tensor: every other one is a prefix of the buffer */
    if (I * H > most) most = I * H;
    if (qd * H > most) most = qd * H;
    uint16_t *buf = arena_alloc_uninit(a, most * 2, 64, "dummy weights");
    w->layers = arena_alloc(a, sizeof *w->layers * (size_t)c->layers, 64, "dummy weights");
    if (!buf || !w->layers) return ZP_ENOMEM;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < most; i++) { /* xorshift64, uniform in about +-0.03 */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = zp_f32_to_bf16(((float)(x >> 40) / 16777216.0f - 0.5f) * 0.06f);
    }
    dummy_tensor(&w->embed, buf, (int64_t)V, (int64_t)H, "embed");
    dummy_tensor(&w->final_norm, buf, (int64_t)H, 0, "norm");
    if (c->tie_embeddings)
        w->lm_head = w->embed;
    else
        dummy_tensor(&w->lm_head, buf, (int64_t)V, (int64_t)H, "lm_head");
    for (int l = 0; l < c->layers; l++) {
        layer_weights *L = &w->layers[l];
        memset(L, 0, sizeof *L);
        dummy_tensor(&L->in_norm, buf, (int64_t)H, 0, "in_norm");
        dummy_tensor(&L->post_norm, buf, (int64_t)H, 0, "post_norm");
        dummy_tensor(&L->q, buf, (int64_t)qd, (int64_t)H, "q");
        dummy_tensor(&L->k, buf, (int64_t)kd, (int64_t)H, "k");
        dummy_tensor(&L->v, buf, (int64_t)kd, (int64_t)H, "v");
        dummy_tensor(&L->o, buf, (int64_t)H, (int64_t)qd, "o");
        dummy_tensor(&L->gate, buf, (int64_t)I, (int64_t)H, "gate");
        dummy_tensor(&L->up, buf, (int64_t)I, (int64_t)H, "up");
        dummy_tensor(&L->down, buf, (int64_t)H, (int64_t)I, "down");
        if (c->attn_bias) {
            dummy_tensor(&L->q_bias, buf, (int64_t)qd, 0, "q_bias");
            dummy_tensor(&L->k_bias, buf, (int64_t)kd, 0, "k_bias");
            dummy_tensor(&L->v_bias, buf, (int64_t)kd, 0, "v_bias");
        }
        if (c->qk_norm) {
            dummy_tensor(&L->q_norm, buf, (int64_t)D, 0, "q_norm");
            dummy_tensor(&L->k_norm, buf, (int64_t)D, 0, "k_norm");
        }
    }
    return 0;
}
