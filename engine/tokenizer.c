/* tokenizer: HF-exact byte-level BPE (see tokenizer.h for the pipeline and limits).
 *
 * Tokens are stored as the bytes they stand for (the ByteLevel character mapping is undone
 * at load; a GGUF token outside the alphabet stands for its UTF-8 bytes), so BPE starts from
 * one symbol per input byte and decoding is concatenation.
 * Invariants after load: byte_id gives each byte's vocabulary id, or -1 for a byte a GGUF
 * vocabulary lacks (BPE then drops it, as HF does without an unk_token), every merge's
 * result is in the vocabulary, the hash tables are never more than half full, and nothing is
 * allocated again: encode scratch (BPE symbols, heap, NFC window) and the piece cache were
 * carved from the arena at load.
 */
#include "engine/tokenizer.h"

#include "arena/err.h"
#include "engine/gguf.h"
#include "engine/json.h"
#include "engine/unicode_classes.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define MAX_AFFIX 8                /* post-processor ids before/after the sequence */
#define CACHE_SLOTS (1u << 16)     /* piece cache entries (power of two) */
#define CACHE_BYTES (1u << 20)     /* piece cache text pool */
#define CACHE_IDS (1u << 19)       /* piece cache id pool */
#define CACHE_MAX_PIECE 128        /* longer pieces are not cached */
#define NFC_CHUNK 16384            /* raw bytes normalized per utf8proc call */
#define TOKSTR_MAX 4096            /* longest token string accepted in tokenizer.json */

enum { F_PRESENT = 1, F_SPECIAL = 2, F_ADDED = 4 };

/* Pre-tokenizers: the Split regex of Qwen2 or Llama-3 (then ByteLevel without its regex),
 * GPT-2's ByteLevel regex, or each \p{N} character apart and GPT-2's regex between them
 * (Digits(individual_digits) + ByteLevel, SmolLM2). */
typedef enum { PRE_QWEN2, PRE_LLAMA3, PRE_GPT2, PRE_DIGITS_GPT2 } pretok_kind;

typedef struct {
    uint64_t key; /* (left id << 32) | right id; ~0 = empty slot */
    int32_t rank, id;
} merge_ent;

typedef struct {
    uint64_t h; /* 0 = empty */
    uint32_t boff, ioff;
    uint16_t blen, nids;
} cache_ent;

typedef struct {
    int32_t rank, pos, id;
} heap_ent;

typedef struct {
    const uint8_t *s; /* content, matched in the raw text */
    uint32_t len;
    int32_t id;
} added_tok;

struct tokenizer {
    int32_t nids;        /* vocab size: max id + 1 */
    uint8_t *flags;      /* per id: F_* */
    uint32_t *off, *len; /* per id: decoded bytes in blob */
    uint8_t *blob;
    size_t blob_used, blob_cap, max_tok_len;

    uint32_t *vhash; /* model vocabulary bytes -> id + 1 (0 empty) */
    uint32_t vmask;
    merge_ent *mhash;
    uint32_t mmask;
    int32_t byte_id[256];
    int16_t inv[324]; /* ByteLevel character -> byte, -1 outside the mapping */

    added_tok *added; /* sorted by first byte, then longest first */
    int nadded;
    uint16_t abucket[257]; /* added[abucket[b] .. abucket[b+1]) start with byte b */

    bool nfc, ignore_merges;
    pretok_kind pre;
    int32_t prefix[MAX_AFFIX], suffix[MAX_AFFIX];
    int nprefix, nsuffix;
    int32_t bos, eos;
    const char *chat_template;

    /* encode scratch */
    int32_t *sym_id, *sym_prev, *sym_next;
    heap_ent *heap;
    uint8_t *win;
    int32_t *nfc_buf;
    uint8_t *inert_bmp, *second_bits; /* NFC tables (see nfc_build) */
    cache_ent *cache;
    uint8_t *cache_bytes;
    int32_t *cache_ids;
    uint32_t cache_nent, cache_bused, cache_iused;
};

/* ---------------------------------------------------------------- UTF-8 helpers */

/* Checks the UTF-8 sequence at s[0..n): returns its length when it is a complete valid
 * character; otherwise 0 with *sub = the length of its maximal valid prefix (>= 1; the
 * bytes one U+FFFD replaces) and *trunc = whether that prefix was cut only by the end. */
static int utf8_check(const uint8_t *s, size_t n, size_t *sub, bool *trunc) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *sub = 1;
        *trunc = false;
        return 0;
    }
    for (size_t k = 1; k < (size_t)len; k++) {
        if (k >= n) {
            *sub = k;
            *trunc = true;
            return 0;
        }
        uint8_t b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
            *sub = k;
            *trunc = false;
            return 0;
        }
    }
    return len;
}

/* Decodes the character at s[i] of valid UTF-8; *l gets its length. */
static inline uint32_t utf8_dec(const uint8_t *s, size_t i, int *l) {
    uint32_t c = s[i];
    if (c < 0x80) {
        *l = 1;
        return c;
    }
    if (c < 0xE0) {
        *l = 2;
        return ((c & 0x1F) << 6) | (s[i + 1] & 0x3F);
    }
    if (c < 0xF0) {
        *l = 3;
        return ((c & 0x0F) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3F);
    }
    *l = 4;
    return ((c & 0x07) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
           (s[i + 3] & 0x3F);
}

/* Offset of the first invalid UTF-8 byte, or n. */
static size_t utf8_valid_upto(const uint8_t *s, size_t n) {
    size_t i = 0, sub;
    bool trunc;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int l = utf8_check(s + i, n - i, &sub, &trunc);
        if (!l) return i;
        i += (size_t)l;
    }
    return n;
}

/* ---------------------------------------------------------------- ByteLevel mapping */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68
 * bytes for U+0100.. in byte order. */
static uint32_t bl_char_of_byte(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256u + (uint32_t)n;
}

/* Byte a ByteLevel character stands for, or -1. */
static int bl_byte_of_char(const int16_t *inv, uint32_t c) { return c < 324 ? inv[c] : -1; }

/* Undoes the ByteLevel mapping of a UTF-8 token string. Characters outside the mapping are
 * kept as their UTF-8 bytes (like HF's ByteLevel decoder); *strict tells whether there
 * were none (only then can BPE produce the token). */
static size_t bl_unmap(const int16_t *inv, const uint8_t *s, size_t n, uint8_t *o, bool *strict) {
    size_t k = 0;
    *strict = true;
    for (size_t i = 0; i < n;) {
        int l;
        uint32_t c = utf8_dec(s, i, &l);
        int b = bl_byte_of_char(inv, c);
        if (b >= 0) {
            o[k++] = (uint8_t)b;
        } else {
            memcpy(o + k, s + i, (size_t)l);
            k += (size_t)l;
            *strict = false;
        }
        i += (size_t)l;
    }
    return k;
}

/* ---------------------------------------------------------------- hash tables */

static uint32_t pow2_at_least(size_t n) {
    uint32_t p = 1024;
    while (p < n) p <<= 1;
    return p;
}

static int32_t vocab_find(const tokenizer *t, const uint8_t *s, size_t n) {
    uint32_t h = (uint32_t)XXH3_64bits(s, n) & t->vmask;
    for (;; h = (h + 1) & t->vmask) {
        uint32_t e = t->vhash[h];
        if (!e) return -1;
        int32_t id = (int32_t)e - 1;
        if (t->len[id] == n && !memcmp(t->blob + t->off[id], s, n)) return id;
    }
}

static void vocab_insert(tokenizer *t, int32_t id) {
    uint32_t h = (uint32_t)XXH3_64bits(t->blob + t->off[id], t->len[id]) & t->vmask;
    while (t->vhash[h]) h = (h + 1) & t->vmask;
    t->vhash[h] = (uint32_t)id + 1;
}

static inline uint32_t merge_slot(uint64_t key, uint32_t mask) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static inline const merge_ent *merge_find(const tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t h = merge_slot(key, t->mmask);; h = (h + 1) & t->mmask) {
        const merge_ent *m = &t->mhash[h];
        if (m->key == key) return m;
        if (m->key == ~0ull) return NULL;
    }
}

/* ---------------------------------------------------------------- NFC tables */

/* A character is NFC-inert when NFC leaves it alone whatever surrounds it: it has canonical
 * combining class 0, is its own NFC (no decomposition, or one that recomposes, like U+00E9),
 * and is never the second of a composition (combining marks such as U+0301 or U+0B3E, Hangul
 * medial vowels and finals). Text made only of inert characters is already NFC, and a cut
 * before one changes the NFC of neither side. Tables are built at load: a bit per composition
 * second below NFC_SECOND_LIMIT, and a bit per inert BMP character. */
#define NFC_SECOND_LIMIT 0x20000u

static inline bool bit_get(const uint8_t *b, uint32_t c) { return (b[c >> 3] >> (c & 7)) & 1; }
static inline void bit_set(uint8_t *b, uint32_t c) { b[c >> 3] |= (uint8_t)(1u << (c & 7)); }

/* Full canonical decomposition of c into buf[8]; 0 when it has none. */
static int canon_decomp(uint32_t c, utf8proc_int32_t *buf) {
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    if (p->decomp_seqindex == UINT16_MAX || p->decomp_type != 0) return 0;
    int last = 0;
    utf8proc_ssize_t k = utf8proc_decompose_char((utf8proc_int32_t)c, buf, 8, UTF8PROC_DECOMPOSE, &last);
    return k > 0 && k <= 8 ? (int)k : 0;
}

static bool recomposes(const utf8proc_int32_t *d, int k, uint32_t c) {
    utf8proc_int32_t b[8];
    memcpy(b, d, sizeof *d * (size_t)k);
    return utf8proc_normalize_utf32(b, k, UTF8PROC_COMPOSE | UTF8PROC_STABLE) == 1 && b[0] == (utf8proc_int32_t)c;
}

static bool nfc_inert_slow(const tokenizer *t, uint32_t c) {
    if ((c >= 0xD800 && c <= 0xDFFF) || (c < NFC_SECOND_LIMIT && bit_get(t->second_bits, c))) return false;
    if (utf8proc_get_property((utf8proc_int32_t)c)->combining_class) return false;
    utf8proc_int32_t buf[8];
    int k = canon_decomp(c, buf);
    return k == 0 || recomposes(buf, k, c);
}

static int nfc_build(tokenizer *t, arena *a) {
    t->second_bits = arena_alloc(a, NFC_SECOND_LIMIT / 8, 8, "nfc tables");
    t->inert_bmp = arena_alloc(a, 0x10000 / 8, 8, "nfc tables");
    if (!t->second_bits || !t->inert_bmp) return ZP_ENOMEM;
    for (uint32_t c = 0x1161; c <= 0x1175; c++) bit_set(t->second_bits, c); /* Hangul V */
    for (uint32_t c = 0x11A8; c <= 0x11C2; c++) bit_set(t->second_bits, c); /* Hangul T */
    utf8proc_int32_t buf[8];
    for (uint32_t c = 0xC0; c < 0x30000; c++) { /* every later part of a composite */
        int k = canon_decomp(c, buf);
        if (k < 2 || !recomposes(buf, k, c)) continue;
        for (int i = 1; i < k; i++) {
            assert((uint32_t)buf[i] < NFC_SECOND_LIMIT);
            bit_set(t->second_bits, (uint32_t)buf[i]);
        }
    }
    for (uint32_t c = 0; c < 0x10000; c++)
        if (nfc_inert_slow(t, c)) bit_set(t->inert_bmp, c);
    return 0;
}

/* ---------------------------------------------------------------- loading */

typedef struct {
    tokenizer *t;
    arena *a;
    const char *name; /* the file, for messages */
    const json_doc *d;
    char sbuf[TOKSTR_MAX];
    uint8_t bbuf[TOKSTR_MAX];
} loader;

static int unsup(const char *what, const json_doc *d, int v) {
    const char *raw = "";
    int n = 0;
    if (v >= 0) {
        json_raw(d, v, &raw);
        n = d->tok[v].end - d->tok[v].start;
        if (n > 80) n = 80;
    }
    return err_set(ZP_EUNSUP, "unsupported tokenizer: %s%s%.*s (%s)", what, v >= 0 ? " " : "", n,
                   raw, d->name);
}

/* String value of key in obj equals s (missing key counts as unequal). */
static bool str_is(const json_doc *d, int obj, const char *key, const char *s) {
    int v = json_get(d, obj, key);
    return json_is_str(d, v) && json_str_eq(d, v, s);
}

/* Boolean value of key: missing or null gives dflt. */
static bool bool_of(const json_doc *d, int obj, const char *key, bool dflt) {
    int v = json_get(d, obj, key);
    bool b = dflt;
    if (v >= 0 && !json_is_null(d, v)) json_bool(d, v, &b);
    return b;
}

/* Reads string token v, undoes the ByteLevel mapping into l->bbuf; returns the length. */
static int tok_string(loader *l, int v, size_t *n, bool *strict, const char *what) {
    size_t sl;
    if (!json_is_str(l->d, v)) return err_set(ZP_EFORMAT, "%s: %s is not a string", l->name, what);
    int rc = json_str(l->d, v, l->sbuf, sizeof l->sbuf, &sl);
    if (rc) return err_prefix(rc, "%s: %s", l->name, what);
    if (utf8_valid_upto((const uint8_t *)l->sbuf, sl) != sl)
        return err_set(ZP_EFORMAT, "%s: %s is not valid UTF-8", l->name, what);
    *n = bl_unmap(l->t->inv, (const uint8_t *)l->sbuf, sl, l->bbuf, strict);
    return 0;
}

static int set_token(loader *l, int64_t id, const uint8_t *b, size_t n, uint8_t flags) {
    tokenizer *t = l->t;
    if (id < 0 || id >= t->nids)
        return err_set(ZP_EFORMAT, "%s: token id %lld out of range", l->name, (long long)id);
    if ((t->flags[id] & F_PRESENT) && !(flags & F_ADDED))
        return err_set(ZP_EFORMAT, "%s: token id %lld appears twice in the vocabulary", l->name,
                       (long long)id);
    /* An added token may restate its own vocabulary entry; under an id that names other text
     * (or another added token), encoding would yield one text's id and decoding the other. */
    if ((t->flags[id] & F_PRESENT) &&
        ((t->flags[id] & F_ADDED) || t->len[id] != n || memcmp(t->blob + t->off[id], b, n)))
        return err_set(ZP_EFORMAT, "%s: added token id %lld already belongs to another token",
                       l->name, (long long)id);
    if (t->blob_used + n > t->blob_cap)
        return err_set(ZP_EFORMAT, "%s: token text larger than the file", l->name);
    memcpy(t->blob + t->blob_used, b, n);
    t->off[id] = (uint32_t)t->blob_used;
    t->len[id] = (uint32_t)n;
    t->blob_used += n;
    t->flags[id] = (uint8_t)(flags | F_PRESENT);
    if (n > t->max_tok_len) t->max_tok_len = n;
    return 0;
}

/* null, NFC, or a Sequence of those (an empty Sequence is null). */
static int check_normalizer(const json_doc *d, int v, bool *nfc) {
    if (v < 0 || json_is_null(d, v)) return 0;
    if (str_is(d, v, "type", "NFC")) {
        *nfc = true;
        return 0;
    }
    int arr = json_get(d, v, "normalizers");
    if (!str_is(d, v, "type", "Sequence") || !json_is_arr(d, arr)) return unsup("normalizer", d, v);
    int n = json_len(d, arr);
    for (int i = 0, e = arr + 1; i < n; i++, e = json_skip(d, e)) {
        if (str_is(d, e, "type", "Sequence")) return unsup("nested normalizer", d, e);
        int rc = check_normalizer(d, e, nfc);
        if (rc) return rc;
    }
    return 0;
}

static const char QWEN_RE[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_RE[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ByteLevel without add_prefix_space, with or without its own (GPT-2) regex. */
static int check_bytelevel(const json_doc *d, int v, const char *what, bool use_regex) {
    if (!str_is(d, v, "type", "ByteLevel")) return unsup(what, d, v);
    if (bool_of(d, v, "add_prefix_space", false)) return unsup("ByteLevel add_prefix_space", d, v);
    if (bool_of(d, v, "use_regex", true) != use_regex) return unsup("ByteLevel use_regex", d, v);
    return 0;
}

/* ByteLevel(use_regex) alone (GPT-2), Sequence[Digits(individual_digits), ByteLevel(use_regex)]
 * (SmolLM2), or Sequence[Split(Qwen2 or Llama-3 regex), ByteLevel]. */
static int check_pretok(const json_doc *d, int root, pretok_kind *pre) {
    int v = json_get(d, root, "pre_tokenizer");
    if (str_is(d, v, "type", "ByteLevel")) {
        *pre = PRE_GPT2;
        return check_bytelevel(d, v, "pre_tokenizer", true);
    }
    if (!str_is(d, v, "type", "Sequence")) return unsup("pre_tokenizer", d, v);
    int arr = json_get(d, v, "pretokenizers");
    if (!json_is_arr(d, arr) || json_len(d, arr) != 2) return unsup("pre_tokenizer", d, v);
    int sp = json_at(d, arr, 0), bl = json_at(d, arr, 1);
    if (str_is(d, sp, "type", "Digits")) {
        if (!bool_of(d, sp, "individual_digits", false))
            return unsup("pre_tokenizer Digits", d, sp);
        *pre = PRE_DIGITS_GPT2;
        return check_bytelevel(d, bl, "pre_tokenizer", true);
    }
    if (!str_is(d, sp, "type", "Split") || !str_is(d, sp, "behavior", "Isolated") ||
        bool_of(d, sp, "invert", false))
        return unsup("pre_tokenizer split", d, sp);
    int re = json_get(d, json_get(d, sp, "pattern"), "Regex");
    if (json_is_str(d, re) && json_str_eq(d, re, QWEN_RE))
        *pre = PRE_QWEN2;
    else if (json_is_str(d, re) && json_str_eq(d, re, LLAMA3_RE))
        *pre = PRE_LLAMA3;
    else
        return unsup("pre_tokenizer regex", d, re >= 0 ? re : sp);
    return check_bytelevel(d, bl, "pre_tokenizer", false);
}

static int check_decoder(const json_doc *d, int root) {
    int v = json_get(d, root, "decoder");
    if (!str_is(d, v, "type", "ByteLevel")) return unsup("decoder", d, v);
    return 0;
}

/* TemplateProcessing "single": special tokens before/after the one Sequence. */
static int load_template(loader *l, int v) {
    const json_doc *d = l->d;
    tokenizer *t = l->t;
    int single = json_get(d, v, "single"), specials = json_get(d, v, "special_tokens");
    if (!json_is_arr(d, single)) return unsup("post_processor", d, v);
    bool seen_seq = false;
    int n = json_len(d, single);
    for (int i = 0, e = single + 1; i < n; i++, e = json_skip(d, e)) {
        int st = json_get(d, e, "SpecialToken"), sq = json_get(d, e, "Sequence");
        if (sq >= 0) {
            if (seen_seq || !str_is(d, sq, "id", "A")) return unsup("post_processor template", d, e);
            seen_seq = true;
            continue;
        }
        int name = json_get(d, st, "id");
        if (!json_is_str(d, name)) return unsup("post_processor template", d, e);
        char nm[256];
        size_t nl;
        int rc = json_str(d, name, nm, sizeof nm, &nl);
        if (rc) return rc;
        int ids = json_get(d, json_get(d, specials, nm), "ids");
        if (!json_is_arr(d, ids)) return unsup("post_processor template token", d, name);
        int m = json_len(d, ids);
        for (int j = 0, x = ids + 1; j < m; j++, x = json_skip(d, x)) {
            int64_t id;
            if (json_i64(d, x, &id) || id < 0 || id >= t->nids)
                return err_set(ZP_EFORMAT, "%s: bad post_processor id for %s", d->name, nm);
            int32_t *dst = seen_seq ? t->suffix : t->prefix;
            int *cnt = seen_seq ? &t->nsuffix : &t->nprefix;
            if (*cnt >= MAX_AFFIX) return unsup("post_processor with many special tokens", d, v);
            dst[(*cnt)++] = (int32_t)id;
        }
    }
    if (!seen_seq) return unsup("post_processor template without sequence", d, v);
    return 0;
}

static int load_postproc(loader *l, int v) {
    const json_doc *d = l->d;
    if (v < 0 || json_is_null(d, v)) return 0;
    if (str_is(d, v, "type", "ByteLevel")) return 0; /* offsets only */
    if (str_is(d, v, "type", "TemplateProcessing")) return load_template(l, v);
    if (str_is(d, v, "type", "Sequence")) {
        int arr = json_get(d, v, "processors");
        if (!json_is_arr(d, arr)) return unsup("post_processor", d, v);
        int n = json_len(d, arr);
        for (int i = 0, e = arr + 1; i < n; i++, e = json_skip(d, e)) {
            if (str_is(d, e, "type", "Sequence")) return unsup("nested post_processor", d, e);
            int rc = load_postproc(l, e);
            if (rc) return rc;
        }
        return 0;
    }
    return unsup("post_processor", d, v);
}

static int check_model(const json_doc *d, int m, bool *ignore_merges) {
    if (!str_is(d, m, "type", "BPE")) return unsup("model", d, json_get(d, m, "type"));
    if (bool_of(d, m, "byte_fallback", false)) return unsup("BPE byte_fallback", d, -1);
    int dr = json_get(d, m, "dropout");
    if (dr >= 0 && !json_is_null(d, dr)) return unsup("BPE dropout", d, dr);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        int v = json_get(d, m, affixes[i]);
        if (v >= 0 && !json_is_null(d, v) && !(json_is_str(d, v) && json_str_eq(d, v, "")))
            return unsup(affixes[i], d, v);
    }
    *ignore_merges = bool_of(d, m, "ignore_merges", false);
    return 0;
}

static int load_vocab(loader *l, int vocab, int added) {
    const json_doc *d = l->d;
    tokenizer *t = l->t;
    if (!json_is_obj(d, vocab)) return err_set(ZP_EFORMAT, "%s: model.vocab is not an object", d->name);
    int nv = json_len(d, vocab);
    /* pass 1: the id range and an upper bound of the token text */
    int64_t maxid = -1;
    size_t text = 0;
    for (int i = 0, k = vocab + 1; i < nv; i++, k = json_skip(d, k + 1)) {
        int64_t id;
        if (json_i64(d, k + 1, &id) || id < 0 || id > INT32_MAX / 2)
            return err_set(ZP_EFORMAT, "%s: bad id for vocabulary entry %d", d->name, i);
        if (id > maxid) maxid = id;
        text += (size_t)(d->tok[k].end - d->tok[k].start);
    }
    int na = json_is_arr(d, added) ? json_len(d, added) : 0;
    for (int i = 0, e = added + 1; i < na; i++, e = json_skip(d, e)) {
        int64_t id;
        int c = json_get(d, e, "content");
        if (json_i64(d, json_get(d, e, "id"), &id) || id < 0 || id > INT32_MAX / 2 || !json_is_str(d, c))
            return err_set(ZP_EFORMAT, "%s: bad added_tokens entry %d", d->name, i);
        if (id > maxid) maxid = id;
        text += 2 * (size_t)(d->tok[c].end - d->tok[c].start);
    }
    if (maxid < 0) return err_set(ZP_EFORMAT, "%s: empty vocabulary", d->name);
    /* ids are dense in real files; a huge one is corruption, not a reason to reserve GBs */
    if (maxid >= 4 * ((int64_t)nv + na) + 1024)
        return err_set(ZP_EFORMAT, "%s: token id %lld far beyond the %d entries", d->name, (long long)maxid, nv + na);
    if (na > UINT16_MAX) return unsup("more than 65535 added tokens", d, -1);
    t->nids = (int32_t)maxid + 1;
    size_t n = (size_t)t->nids;
    t->flags = arena_alloc(l->a, n, 1, "tokenizer flags");
    t->off = arena_alloc(l->a, n * 4, 4, "tokenizer offsets");
    t->len = arena_alloc(l->a, n * 4, 4, "tokenizer lengths");
    t->blob_cap = text;
    t->blob = arena_alloc(l->a, text + 1, 1, "tokenizer text");
    t->vmask = pow2_at_least(2 * (size_t)nv + 2) - 1;
    t->vhash = arena_alloc(l->a, ((size_t)t->vmask + 1) * 4, 4, "tokenizer vocab hash");
    if (!t->flags || !t->off || !t->len || !t->blob || !t->vhash) return ZP_ENOMEM;
    for (int i = 0, k = vocab + 1; i < nv; i++, k = json_skip(d, k + 1)) {
        int64_t id;
        size_t bl;
        bool strict;
        json_i64(d, k + 1, &id);
        int rc = tok_string(l, k, &bl, &strict, "vocabulary entry");
        if (rc) return rc;
        if ((rc = set_token(l, id, l->bbuf, bl, 0))) return rc;
        if (strict) {
            if (vocab_find(t, l->bbuf, bl) >= 0) return err_set(ZP_EFORMAT, "%s: duplicate vocabulary entry %s", d->name, l->sbuf);
            vocab_insert(t, (int32_t)id);
        }
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        t->byte_id[b] = vocab_find(t, &c, 1);
    }
    /* added tokens: content matched in raw text, decoded through the ByteLevel decoder */
    t->added = arena_alloc(l->a, sizeof(added_tok) * (size_t)(na ? na : 1), 8, "added tokens");
    if (!t->added) return ZP_ENOMEM;
    for (int i = 0, e = added + 1; i < na; i++, e = json_skip(d, e)) {
        int64_t id;
        json_i64(d, json_get(d, e, "id"), &id);
        if (bool_of(d, e, "lstrip", false) || bool_of(d, e, "rstrip", false) ||
            bool_of(d, e, "single_word", false))
            return unsup("added token with lstrip/rstrip/single_word", d, e);
        size_t cl, bl;
        bool strict;
        int rc = json_str(d, json_get(d, e, "content"), l->sbuf, sizeof l->sbuf, &cl);
        if (rc) return err_prefix(rc, "%s: added token", d->name);
        if (!cl) return err_set(ZP_EFORMAT, "%s: empty added token", d->name);
        char *content = arena_strdup(l->a, l->sbuf, cl, "added token");
        if (!content) return ZP_ENOMEM;
        bl = bl_unmap(l->t->inv, (const uint8_t *)content, cl, l->bbuf, &strict);
        if ((rc = set_token(l, id, l->bbuf, bl, (uint8_t)(F_ADDED | (bool_of(d, e, "special", false) ? F_SPECIAL : 0)))))
            return rc;
        t->added[t->nadded++] = (added_tok){(const uint8_t *)content, (uint32_t)cl, (int32_t)id};
    }
    return 0;
}

/* Added tokens grouped by first byte, longest first, so the first match at a position is
 * HF's leftmost-longest. */
static void sort_added(tokenizer *t) {
    for (int i = 1; i < t->nadded; i++) {
        added_tok x = t->added[i];
        uint8_t xb = x.s[0];
        int j = i - 1;
        while (j >= 0) {
            uint8_t yb = t->added[j].s[0];
            if (yb < xb || (yb == xb && t->added[j].len >= x.len)) break;
            t->added[j + 1] = t->added[j];
            j--;
        }
        t->added[j + 1] = x;
    }
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < t->nadded && t->added[k].s[0] < b) k++;
        t->abucket[b] = (uint16_t)k;
    }
    t->abucket[256] = (uint16_t)t->nadded;
}

static int merges_alloc(loader *l, size_t nm) {
    tokenizer *t = l->t;
    t->mmask = pow2_at_least(2 * nm + 2) - 1;
    t->mhash = arena_alloc(l->a, ((size_t)t->mmask + 1) * sizeof(merge_ent), 8, "tokenizer merges");
    if (!t->mhash) return ZP_ENOMEM;
    memset(t->mhash, 0xff, ((size_t)t->mmask + 1) * sizeof(merge_ent));
    return 0;
}

/* Enters merge `rank` of the tokens side[0..1] whose bytes, joined, are both[0..nb). */
static int merge_add(loader *l, int rank, const int32_t side[2], const uint8_t *both, size_t nb,
                     const char *what) {
    tokenizer *t = l->t;
    int32_t res = vocab_find(t, both, nb);
    if (side[0] < 0 || side[1] < 0 || res < 0)
        return err_set(ZP_EFORMAT, "%s: %s %d uses a token missing from the vocabulary", l->name,
                       what, rank);
    uint64_t key = ((uint64_t)(uint32_t)side[0] << 32) | (uint32_t)side[1];
    uint32_t h = merge_slot(key, t->mmask);
    while (t->mhash[h].key != ~0ull && t->mhash[h].key != key)
        h = (h + 1) & t->mmask;
    if (t->mhash[h].key == key) return 0; /* HF keeps the first rank of a duplicate */
    t->mhash[h] = (merge_ent){key, rank, res};
    return 0;
}

/* A merge written "a b" (both in the ByteLevel spelling): s[0..sl), sl <= TOKSTR_MAX. */
static int merge_add_str(loader *l, int rank, const char *s, size_t sl, const char *what) {
    uint8_t both[TOKSTR_MAX];
    int32_t side[2];
    size_t nb = 0;
    bool strict;
    const char *sp = memchr(s, ' ', sl);
    if (!sp || memchr(sp + 1, ' ', sl - (size_t)(sp + 1 - s)))
        return err_set(ZP_EFORMAT, "%s: %s %d (\"%.*s\") is not two tokens", l->name, what, rank,
                       (int)sl, s);
    if (utf8_valid_upto((const uint8_t *)s, sl) != sl)
        return err_set(ZP_EFORMAT, "%s: %s %d is not valid UTF-8", l->name, what, rank);
    const char *part[2] = {s, sp + 1};
    size_t plen[2] = {(size_t)(sp - s), sl - (size_t)(sp + 1 - s)};
    for (int k = 0; k < 2; k++) {
        size_t bl = bl_unmap(l->t->inv, (const uint8_t *)part[k], plen[k], both + nb, &strict);
        side[k] = strict ? vocab_find(l->t, both + nb, bl) : -1;
        nb += bl;
    }
    return merge_add(l, rank, side, both, nb, what);
}

static int load_merges(loader *l, int merges) {
    const json_doc *d = l->d;
    tokenizer *t = l->t;
    int nm = json_is_arr(d, merges) ? json_len(d, merges) : 0;
    if (merges >= 0 && !json_is_arr(d, merges)) return err_set(ZP_EFORMAT, "%s: model.merges is not an array", d->name);
    int rc = merges_alloc(l, (size_t)nm);
    if (rc) return rc;
    for (int i = 0, e = merges + 1; i < nm; i++, e = json_skip(d, e)) {
        if (json_is_str(d, e)) {
            size_t sl;
            if ((rc = json_str(d, e, l->sbuf, sizeof l->sbuf, &sl))) return err_prefix(rc, "%s: merge %d", d->name, i);
            if ((rc = merge_add_str(l, i, l->sbuf, sl, "merge"))) return rc;
            continue;
        }
        if (!json_is_arr(d, e) || json_len(d, e) != 2)
            return err_set(ZP_EFORMAT, "%s: merge %d is neither [\"a\",\"b\"] nor \"a b\"", d->name, i);
        int32_t side[2];
        uint8_t both[2 * TOKSTR_MAX];
        size_t nb = 0, bl;
        bool strict;
        for (int k = 0, x = e + 1; k < 2; k++, x = json_skip(d, x)) {
            if ((rc = tok_string(l, x, &bl, &strict, "merge"))) return rc;
            side[k] = strict ? vocab_find(t, l->bbuf, bl) : -1;
            memcpy(both + nb, l->bbuf, bl);
            nb += bl;
        }
        if ((rc = merge_add(l, i, side, both, nb, "merge"))) return rc;
    }
    return 0;
}

/* bos_token / eos_token: a string or {"content": ...}. */
static int32_t config_token(const json_doc *d, int root, const char *key, const tokenizer *t) {
    int v = json_get(d, root, key);
    if (json_is_obj(d, v)) v = json_get(d, v, "content");
    char s[256];
    size_t n;
    if (!json_is_str(d, v) || json_str(d, v, s, sizeof s, &n)) return -1;
    return tok_token_id(t, s);
}

static int load_config(loader *l, const char *path) {
    tokenizer *t = l->t;
    json_doc cd;
    int rc = json_load(&cd, l->a, path);
    if (rc) return rc;
    if (!json_is_obj(&cd, 0)) return err_set(ZP_EFORMAT, "%s: not a JSON object", path);
    t->bos = config_token(&cd, 0, "bos_token", t);
    t->eos = config_token(&cd, 0, "eos_token", t);
    int ct = json_get(&cd, 0, "chat_template");
    if (json_is_arr(&cd, ct)) { /* [{"name": "default", "template": "..."}, ...] */
        int n = json_len(&cd, ct), pick = -1;
        for (int i = 0, e = ct + 1; i < n; i++, e = json_skip(&cd, e))
            if (str_is(&cd, e, "name", "default")) pick = json_get(&cd, e, "template");
        ct = pick;
    }
    if (json_is_str(&cd, ct)) {
        size_t cap = (size_t)(cd.tok[ct].end - cd.tok[ct].start) + 1, n;
        char *s = arena_alloc(l->a, cap, 1, "chat template");
        if (!s) return ZP_ENOMEM;
        if ((rc = json_str(&cd, ct, s, cap, &n))) return err_prefix(rc, "%s: chat_template", path);
        t->chat_template = s;
    }
    return 0;
}

static int alloc_scratch(tokenizer *t, arena *a) {
    t->sym_id = arena_alloc(a, 4 * TOK_MAX_PIECE, 4, "bpe symbols");
    t->sym_prev = arena_alloc(a, 4 * TOK_MAX_PIECE, 4, "bpe symbols");
    t->sym_next = arena_alloc(a, 4 * TOK_MAX_PIECE, 4, "bpe symbols");
    t->heap = arena_alloc(a, sizeof(heap_ent) * 3 * TOK_MAX_PIECE, 4, "bpe heap");
    t->win = arena_alloc(a, TOK_WINDOW, 8, "nfc window");
    t->nfc_buf = arena_alloc(a, 4 * 2 * NFC_CHUNK, 4, "nfc buffer");
    t->cache = arena_alloc(a, sizeof(cache_ent) * CACHE_SLOTS, 8, "piece cache");
    t->cache_bytes = arena_alloc(a, CACHE_BYTES, 1, "piece cache");
    t->cache_ids = arena_alloc(a, 4 * CACHE_IDS, 4, "piece cache");
    if (!t->sym_id || !t->sym_prev || !t->sym_next || !t->heap || !t->win || !t->nfc_buf ||
        !t->cache || !t->cache_bytes || !t->cache_ids)
        return ZP_ENOMEM;
    return t->nfc ? nfc_build(t, a) : 0;
}

static int load_all(loader *l, const char *dir) {
    tokenizer *t = l->t;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/tokenizer_config.json", dir) >= (int)sizeof path)
        return err_set(ZP_EINVAL, "model directory path too long");
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_doc d;
    int rc = json_load(&d, l->a, path);
    if (rc) return rc;
    l->d = &d;
    l->name = path;
    if (!json_is_obj(&d, 0)) return err_set(ZP_EFORMAT, "%s: not a JSON object", path);
    int model = json_get(&d, 0, "model");
    if (!json_is_obj(&d, model)) return err_set(ZP_EFORMAT, "%s: no \"model\" object", path);
    if ((rc = check_normalizer(&d, json_get(&d, 0, "normalizer"), &t->nfc)) ||
        (rc = check_pretok(&d, 0, &t->pre)) || (rc = check_decoder(&d, 0)) ||
        (rc = check_model(&d, model, &t->ignore_merges)))
        return rc;
    int added = json_get(&d, 0, "added_tokens");
    if (added >= 0 && !json_is_arr(&d, added)) return err_set(ZP_EFORMAT, "%s: added_tokens is not an array", path);
    if ((rc = load_vocab(l, json_get(&d, model, "vocab"), added))) return rc;
    /* HF drops a byte without a token (see bpe); tokenizer.json files must have them all, so
     * that decode(encode(text)) == text holds for every tokenizer tok_load accepts */
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0) return unsup("vocabulary without a token for byte", &d, -1);
    sort_added(t);
    if ((rc = load_merges(l, json_get(&d, model, "merges")))) return rc;
    if ((rc = load_postproc(l, json_get(&d, 0, "post_processor")))) return rc;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (access(path, F_OK) == 0 && (rc = load_config(l, path))) return rc;
    return alloc_scratch(t, l->a);
}

/* What both loaders start from: no bos/eos, the ByteLevel character table. */
static void tok_init(tokenizer *t) {
    t->bos = t->eos = -1;
    for (int c = 0; c < 324; c++)
        t->inv[c] = -1;
    for (int b = 0; b < 256; b++)
        t->inv[bl_char_of_byte(b)] = (int16_t)b;
}

static int load_dir(tokenizer **out, arena *a, const char *dir) {
    *out = NULL;
    size_t mark = arena_temp_mark(a);
    loader *l = arena_temp(a, sizeof *l, 8, "tokenizer loader");
    tokenizer *t = arena_alloc(a, sizeof *t, 8, "tokenizer");
    if (!l || !t) {
        arena_temp_reset(a, mark);
        return ZP_ENOMEM;
    }
    l->t = t;
    l->a = a;
    tok_init(t);
    int rc = load_all(l, dir);
    arena_temp_reset(a, mark);
    if (rc) return err_prefix(rc, "loading tokenizer from %s", dir);
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------- loading from GGUF */

/* tokenizer.ggml.pre -> pre-tokenizer, as transformers maps it (absent: GPT-2's regex), except
 * smollm: transformers gives it GPT-2's regex, SmolLM2's tokenizer.json (and llama.cpp)
 * split every number character off first. */
static const struct {
    const char *name;
    pretok_kind pre;
} GGUF_PRE[] = {
    {"gpt2", PRE_GPT2},
    {"default", PRE_GPT2},
    {"smollm", PRE_DIGITS_GPT2},
    {"llama-bpe", PRE_LLAMA3},
    {"llama3", PRE_LLAMA3},
    {"llama-v3", PRE_LLAMA3},
    {"smaug-bpe", PRE_LLAMA3},
    {"dbrx", PRE_LLAMA3},
    {"falcon3", PRE_LLAMA3},
    {"qwen2", PRE_QWEN2},
    {"deepseek-r1-qwen", PRE_QWEN2},
};

enum { TT_CONTROL = 3, TT_USER_DEFINED = 4 }; /* tokenizer.ggml.token_type values */

static bool bytes_eq(const char *s, size_t n, const char *lit) {
    return n == strlen(lit) && !memcmp(s, lit, n);
}

/* tokenizer.ggml.<key>_token_id, or -1 when absent; an id outside the vocabulary is an error. */
static int gguf_token_id(const gguf_file *g, const char *key, int32_t n, int32_t *id) {
    uint32_t v;
    *id = -1;
    int rc = gguf_get_u32(g, key, &v);
    if (rc == ZP_ENOTFOUND) return 0;
    if (rc) return rc;
    if (v >= (uint32_t)n)
        return err_set(ZP_EFORMAT, "%s: %s = %u is not a token id (tokenizer.ggml.tokens has %d)",
                       g->path, key, v, n);
    *id = (int32_t)v;
    return 0;
}

static int gguf_check_model(const gguf_file *g, pretok_kind *pre) {
    const char *s;
    size_t n;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &s, &n);
    if (rc == ZP_ENOTFOUND) return err_set(ZP_EFORMAT, "%s: no tokenizer.ggml.model", g->path);
    if (rc) return rc;
    if (!bytes_eq(s, n, "gpt2"))
        return err_set(ZP_EUNSUP,
                       "%s: unsupported tokenizer.ggml.model '%.*s' (only byte-level BPE, 'gpt2')",
                       g->path, (int)(n > 80 ? 80 : n), s);
    rc = gguf_get_str(g, "tokenizer.ggml.pre", &s, &n);
    *pre = PRE_GPT2;
    if (rc == ZP_ENOTFOUND) return 0;
    if (rc) return rc;
    for (size_t i = 0; i < sizeof GGUF_PRE / sizeof GGUF_PRE[0]; i++) {
        if (bytes_eq(s, n, GGUF_PRE[i].name)) {
            *pre = GGUF_PRE[i].pre;
            return 0;
        }
    }
    return err_set(ZP_EUNSUP, "%s: unsupported tokenizer.ggml.pre '%.*s'", g->path,
                   (int)(n > 80 ? 80 : n), s);
}

typedef struct {
    const gguf_kv *tokens, *types; /* types may be NULL */
    int32_t n, special[4];         /* bos, eos, unk, pad ids (or -1) */
} gguf_vocab;

/* Whether id becomes an added token, as transformers builds it: control tokens, the bos, eos,
 * unk and pad tokens and <|endoftext|> (GPT2Tokenizer's default) are special; user-defined
 * ones are not. Only tokens spelled in the ByteLevel alphabet can be added tokens. */
static uint8_t gguf_added_flags(const gguf_vocab *v, int32_t id, const char *s, size_t n,
                                bool strict) {
    if (!strict) return 0;
    int64_t type = v->types ? gguf_arr_int(v->types, (uint64_t)id) : 1;
    bool named = bytes_eq(s, n, "<|endoftext|>");
    for (int k = 0; k < 4; k++)
        named |= v->special[k] == id;
    if (type == TT_CONTROL || named) return F_ADDED | F_SPECIAL;
    return type == TT_USER_DEFINED ? F_ADDED : 0;
}

/* First pass: checks every token and sizes the tables. */
static int gguf_vocab_size(loader *l, const gguf_vocab *v, size_t *text, int *nadded) {
    const uint8_t *p = v->tokens->data;
    *text = 0;
    *nadded = 0;
    for (int32_t i = 0; i < v->n; i++) {
        const char *s;
        size_t n;
        bool strict;
        gguf_str_next(&p, &s, &n);
        if (n == 0 || n > TOKSTR_MAX)
            return err_set(ZP_EFORMAT, "%s: tokenizer.ggml.tokens[%d] is %s", l->name, i,
                           n ? "longer than 4096 bytes" : "empty");
        if (utf8_valid_upto((const uint8_t *)s, n) != n)
            return err_set(ZP_EFORMAT, "%s: tokenizer.ggml.tokens[%d] is not valid UTF-8", l->name,
                           i);
        bl_unmap(l->t->inv, (const uint8_t *)s, n, l->bbuf, &strict);
        *text += n;
        *nadded += gguf_added_flags(v, i, s, n, strict) != 0;
    }
    if (*nadded > UINT16_MAX)
        return err_set(ZP_EUNSUP, "%s: more than 65535 added tokens", l->name);
    return 0;
}

/* Second pass: token bytes, the vocabulary hash and the added tokens. A token spelled in the
 * ByteLevel alphabet stands for the bytes it spells; any other token for its own UTF-8 bytes
 * (transformers respells it into the alphabet). */
static int gguf_vocab_load(loader *l, const gguf_vocab *v) {
    tokenizer *t = l->t;
    size_t text;
    int nadded;
    int rc = gguf_vocab_size(l, v, &text, &nadded);
    if (rc) return rc;
    size_t n = (size_t)v->n;
    t->nids = v->n;
    t->flags = arena_alloc(l->a, n, 1, "tokenizer flags");
    t->off = arena_alloc(l->a, n * 4, 4, "tokenizer offsets");
    t->len = arena_alloc(l->a, n * 4, 4, "tokenizer lengths");
    t->blob_cap = text;
    t->blob = arena_alloc(l->a, text + 1, 1, "tokenizer text");
    t->vmask = pow2_at_least(2 * n + 2) - 1;
    t->vhash = arena_alloc(l->a, ((size_t)t->vmask + 1) * 4, 4, "tokenizer vocab hash");
    t->added =
        arena_alloc(l->a, sizeof(added_tok) * (size_t)(nadded ? nadded : 1), 8, "added tokens");
    if (!t->flags || !t->off || !t->len || !t->blob || !t->vhash || !t->added) return ZP_ENOMEM;
    const uint8_t *p = v->tokens->data;
    for (int32_t i = 0; i < v->n; i++) {
        const char *s;
        size_t sl, bl;
        bool strict;
        gguf_str_next(&p, &s, &sl);
        bl = bl_unmap(t->inv, (const uint8_t *)s, sl, l->bbuf, &strict);
        const uint8_t *b = strict ? l->bbuf : (const uint8_t *)s;
        if (!strict) bl = sl;
        int32_t dup = vocab_find(t, b, bl);
        if (dup >= 0)
            return err_set(ZP_EFORMAT, "%s: tokenizer.ggml.tokens[%d] ('%.*s') repeats token %d",
                           l->name, i, (int)(sl > 80 ? 80 : sl), s, dup);
        uint8_t flags = gguf_added_flags(v, i, s, sl, strict);
        if ((rc = set_token(l, i, b, bl, 0))) return rc;
        t->flags[i] |= flags;
        vocab_insert(t, i);
        if (!flags) continue;
        char *content = arena_strdup(l->a, s, sl, "added token");
        if (!content) return ZP_ENOMEM;
        t->added[t->nadded++] = (added_tok){(const uint8_t *)content, (uint32_t)sl, i};
    }
    for (int b = 0; b < 256; b++) { /* may be missing (see bpe) */
        uint8_t c = (uint8_t)b;
        t->byte_id[b] = vocab_find(t, &c, 1);
    }
    return 0;
}

static int gguf_merges_load(loader *l, const gguf_file *g) {
    const gguf_kv *kv;
    int rc = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_V_STRING, &kv);
    if (rc == ZP_ENOTFOUND)
        return err_set(
            ZP_EUNSUP,
            "%s: no tokenizer.ggml.merges (merges derived from scores are not supported)", l->name);
    if (rc) return rc;
    if (kv->n > INT32_MAX / 4)
        return err_set(ZP_EFORMAT, "%s: too many tokenizer.ggml.merges", l->name);
    if ((rc = merges_alloc(l, (size_t)kv->n))) return rc;
    const uint8_t *p = kv->data;
    for (int i = 0; i < (int)kv->n; i++) {
        const char *s;
        size_t n;
        gguf_str_next(&p, &s, &n);
        if (n > TOKSTR_MAX)
            return err_set(ZP_EFORMAT, "%s: tokenizer.ggml.merges[%d] is longer than 4096 bytes",
                           l->name, i);
        if ((rc = merge_add_str(l, i, s, n, "tokenizer.ggml.merges entry"))) return rc;
    }
    return 0;
}

static int gguf_load_all(loader *l, const gguf_file *g) {
    tokenizer *t = l->t;
    gguf_vocab v = {.types = NULL};
    int rc = gguf_check_model(g, &t->pre);
    if (rc) return rc;
    rc = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_V_STRING, &v.tokens);
    if (rc == ZP_ENOTFOUND) return err_set(ZP_EFORMAT, "%s: no tokenizer.ggml.tokens", g->path);
    if (rc) return rc;
    if (v.tokens->n == 0 || v.tokens->n > INT32_MAX / 4)
        return err_set(ZP_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries", g->path,
                       (unsigned long long)v.tokens->n);
    v.n = (int32_t)v.tokens->n;
    rc = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_V_I32, &v.types);
    if (rc == ZP_ENOTFOUND)
        v.types = NULL;
    else if (rc)
        return rc;
    if (v.types && v.types->n != v.tokens->n)
        return err_set(ZP_EFORMAT,
                       "%s: tokenizer.ggml.token_type has %llu entries, tokenizer.ggml.tokens %d",
                       g->path, (unsigned long long)v.types->n, v.n);
    static const char *const keys[4] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    for (int k = 0; k < 4; k++)
        if ((rc = gguf_token_id(g, keys[k], v.n, &v.special[k]))) return rc;
    if ((rc = gguf_vocab_load(l, &v))) return rc;
    sort_added(t);
    if ((rc = gguf_merges_load(l, g))) return rc;
    t->bos = v.special[0];
    t->eos = v.special[1];
    /* transformers' post-processor: BOS / EOS when the file asks and names the token */
    bool add_bos = false, add_eos = false;
    if ((rc = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos)) && rc != ZP_ENOTFOUND)
        return rc;
    if ((rc = gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos)) && rc != ZP_ENOTFOUND)
        return rc;
    if (add_bos && t->bos >= 0) t->prefix[t->nprefix++] = t->bos;
    if (add_eos && t->eos >= 0) t->suffix[t->nsuffix++] = t->eos;
    const char *s;
    size_t n;
    rc = gguf_get_str(g, "tokenizer.chat_template", &s, &n);
    if (rc && rc != ZP_ENOTFOUND) return rc;
    if (!rc) {
        if (memchr(s, 0, n))
            return err_set(ZP_EFORMAT, "%s: tokenizer.chat_template holds a NUL byte", g->path);
        if (!(t->chat_template = arena_strdup(l->a, s, n, "chat template"))) return ZP_ENOMEM;
    }
    return alloc_scratch(t, l->a);
}

int tok_load_gguf(tokenizer **out, arena *a, const gguf_file *g) {
    *out = NULL;
    size_t mark = arena_temp_mark(a);
    loader *l = arena_temp(a, sizeof *l, 8, "tokenizer loader");
    tokenizer *t = arena_alloc(a, sizeof *t, 8, "tokenizer");
    if (!l || !t) {
        arena_temp_reset(a, mark);
        return ZP_ENOMEM;
    }
    *l = (loader){.t = t, .a = a, .name = g->path};
    tok_init(t);
    int rc = gguf_load_all(l, g);
    arena_temp_reset(a, mark);
    if (rc) return err_prefix(rc, "loading tokenizer from %s", g->path);
    *out = t;
    return 0;
}

int tok_load(tokenizer **out, arena *a, const char *model) {
    if (!gguf_is_file(model)) return load_dir(out, a, model);
    gguf_file g = {0};
    int rc = gguf_open(&g, a, model);
    if (!rc) rc = tok_load_gguf(out, a, &g);
    gguf_close(&g);
    return rc;
}

int tok_present(arena *a, const char *model, bool *present) {
    *present = false;
    if (!gguf_is_file(model)) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", model);
        *present = access(path, F_OK) == 0;
        return 0;
    }
    gguf_file g = {0};
    int rc = gguf_open(&g, a, model);
    if (!rc) {
        const char *s;
        size_t n;
        rc = gguf_get_str(&g, "tokenizer.ggml.model", &s, &n);
        *present = rc == 0;
        if (rc == ZP_ENOTFOUND) rc = 0;
    }
    gguf_close(&g);
    return rc;
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    int32_t *ids;
    size_t cap, n;
} sink;

static inline int emit(sink *o, int32_t id) {
    if (o->n >= o->cap) return err_set(ZP_ELIMIT, "token buffer full (%zu ids)", o->cap);
    o->ids[o->n++] = id;
    return 0;
}

static inline bool heap_less(heap_ent a, heap_ent b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(heap_ent *h, int *n, heap_ent e) {
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!heap_less(e, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_ent heap_pop(heap_ent *h, int *n) {
    heap_ent top = h[0], e = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], e)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = e;
    return top;
}

static void push_pair(tokenizer *t, int *nh, int32_t pos) {
    int32_t nx = t->sym_next[pos];
    if (nx < 0) return;
    const merge_ent *m = merge_find(t, t->sym_id[pos], t->sym_id[nx]);
    if (m) heap_push(t->heap, nh, (heap_ent){m->rank, pos, m->id});
}

/* BPE over one piece of at most TOK_MAX_PIECE bytes, as HF's word merge: repeatedly apply
 * the lowest-rank pair, leftmost first. A byte the vocabulary has no token for is dropped
 * (HF's BPE without unk_token), its neighbours becoming adjacent. */
static int bpe(tokenizer *t, const uint8_t *s, size_t n, sink *o) {
    if (n == 1) return t->byte_id[s[0]] >= 0 ? emit(o, t->byte_id[s[0]]) : 0;
    if (t->ignore_merges) {
        int32_t id = vocab_find(t, s, n);
        if (id >= 0) return emit(o, id);
    }
    int nh = 0;
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->byte_id[s[i]] < 0) continue;
        t->sym_id[m] = t->byte_id[s[i]];
        t->sym_prev[m] = m - 1;
        t->sym_next[m] = m + 1;
        m++;
    }
    if (!m) return 0;
    t->sym_next[m - 1] = -1;
    for (int32_t i = 0; i + 1 < m; i++)
        push_pair(t, &nh, i);
    while (nh) {
        heap_ent top = heap_pop(t->heap, &nh);
        int32_t p = top.pos, q = t->sym_next[p];
        if (t->sym_id[p] < 0 || q < 0) continue;
        const merge_ent *m = merge_find(t, t->sym_id[p], t->sym_id[q]);
        if (!m || m->id != top.id) continue; /* stale: a neighbour changed */
        t->sym_id[p] = top.id;
        t->sym_id[q] = -1;
        int32_t r = t->sym_next[q];
        t->sym_next[p] = r;
        if (r >= 0) t->sym_prev[r] = p;
        if (t->sym_prev[p] >= 0) push_pair(t, &nh, t->sym_prev[p]);
        push_pair(t, &nh, p);
    }
    for (int32_t i = 0; i >= 0; i = t->sym_next[i]) {
        int rc = emit(o, t->sym_id[i]);
        if (rc) return rc;
    }
    return 0;
}

static void cache_reset(tokenizer *t) {
    memset(t->cache, 0, sizeof(cache_ent) * CACHE_SLOTS);
    t->cache_nent = t->cache_bused = t->cache_iused = 0;
}

/* One pre-token: from the piece cache when seen before, else BPE (and cached). */
static int encode_piece(tokenizer *t, const uint8_t *s, size_t n, sink *o) {
    if (n == 1) return bpe(t, s, n, o);
    if (n > CACHE_MAX_PIECE) {
        for (size_t i = 0; i < n;) { /* slices end on character boundaries */
            size_t e = n - i <= TOK_MAX_PIECE ? n : i + TOK_MAX_PIECE;
            while (e < n && (s[e] & 0xC0) == 0x80) e--;
            int rc = bpe(t, s + i, e - i, o);
            if (rc) return rc;
            i = e;
        }
        return 0;
    }
    uint64_t h = XXH3_64bits(s, n) | 1;
    uint32_t slot = (uint32_t)h & (CACHE_SLOTS - 1);
    for (;; slot = (slot + 1) & (CACHE_SLOTS - 1)) {
        cache_ent *c = &t->cache[slot];
        if (!c->h) break;
        if (c->h == h && c->blen == n && !memcmp(t->cache_bytes + c->boff, s, n)) {
            if (o->cap - o->n < c->nids) return err_set(ZP_ELIMIT, "token buffer full (%zu ids)", o->cap);
            memcpy(o->ids + o->n, t->cache_ids + c->ioff, 4 * (size_t)c->nids);
            o->n += c->nids;
            return 0;
        }
    }
    size_t start = o->n;
    int rc = bpe(t, s, n, o);
    if (rc) return rc;
    size_t k = o->n - start;
    if (t->cache_nent >= CACHE_SLOTS / 2 || t->cache_bused + n > CACHE_BYTES || t->cache_iused + k > CACHE_IDS) {
        cache_reset(t);
        slot = (uint32_t)h & (CACHE_SLOTS - 1);
    }
    memcpy(t->cache_bytes + t->cache_bused, s, n);
    memcpy(t->cache_ids + t->cache_iused, o->ids + start, 4 * k);
    t->cache[slot] = (cache_ent){h, t->cache_bused, t->cache_iused, (uint16_t)n, (uint16_t)k};
    t->cache_bused += (uint32_t)n;
    t->cache_iused += (uint32_t)k;
    t->cache_nent++;
    return 0;
}

static inline unsigned cls_at(const uint8_t *s, size_t i, uint32_t *c, int *l) {
    *c = utf8_dec(s, i, l);
    return uc_class(*c);
}

static inline bool is_nl(uint32_t c) { return c == '\r' || c == '\n'; }

/* End of the \p{L}+ run starting at i (s[i] is a letter). */
static size_t run_letters(const uint8_t *s, size_t n, size_t i, bool *hit_end) {
    uint32_t c;
    int l;
    while (i < n && (cls_at(s, i, &c, &l) & UC_LETTER)) i += (size_t)l;
    if (i == n) *hit_end = true;
    return i;
}

/* The Split regex of Qwen2/Qwen3 (digits3 = false) or Llama-3 (digits3 = true), with
 * Oniguruma's leftmost-first alternation, as a scanner. Returns the end of the match that
 * starts at i; *hit_end is set when the match depends on text past n. */
static size_t scan(const uint8_t *s, size_t n, size_t i, bool digits3, bool *hit_end) {
    uint32_t c, c2;
    int l, l2;
    unsigned k = cls_at(s, i, &c, &l);
    size_t j = i + (size_t)l;
    /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
    if (c == '\'') {
        if (j >= n) {
            *hit_end = true;
        } else {
            uint8_t a = s[j] | 0x20;
            if (a == 's' || a == 't' || a == 'm' || a == 'd') return j + 1;
            if (s[j] == 0xC5 && j + 1 < n && s[j + 1] == 0xBF) return j + 2; /* U+017F long s */
            if (a == 'r' || a == 'v' || a == 'l') {
                if (j + 1 >= n) {
                    *hit_end = true;
                } else {
                    uint8_t b = s[j + 1] | 0x20;
                    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return j + 2;
                }
            }
        }
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (k & UC_LETTER) return run_letters(s, n, j, hit_end);
    if (!(k & UC_NUMBER) && !is_nl(c)) {
        if (j >= n) {
            *hit_end = true;
        } else if (cls_at(s, j, &c2, &l2) & UC_LETTER) {
            return run_letters(s, n, j + (size_t)l2, hit_end);
        }
    }
    /* \p{N} or \p{N}{1,3} */
    if (k & UC_NUMBER) {
        for (int m = 1; digits3 && m < 3; m++) {
            if (j >= n) {
                *hit_end = true;
                break;
            }
            if (!(cls_at(s, j, &c2, &l2) & UC_NUMBER)) break;
            j += (size_t)l2;
        }
        return j;
    }
    /* ' '?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t p = c == ' ' ? j : i;
    if (p >= n) {
        *hit_end = true;
    } else if (!cls_at(s, p, &c2, &l2)) {
        p += (size_t)l2;
        while (p < n && !cls_at(s, p, &c2, &l2)) p += (size_t)l2;
        while (p < n && is_nl(s[p])) p++;
        if (p == n) *hit_end = true;
        return p;
    }
    /* c is whitespace: \s*[\r\n]+ | \s+(?!\S) | \s+ */
    size_t e = i, nl_end = 0, last = i;
    while (e < n && (cls_at(s, e, &c2, &l2) & UC_SPACE)) {
        last = e;
        e += (size_t)l2;
        if (is_nl(c2)) nl_end = e;
    }
    if (e == n) *hit_end = true;
    if (nl_end) return nl_end;
    if (e == n || last == i) return e;
    return last;
}

/* End of the run of characters starting at i whose class, masked by mask, is want. */
static size_t run_class(const uint8_t *s, size_t n, size_t i, unsigned mask, unsigned want,
                        bool *hit_end) {
    uint32_t c;
    int l;
    while (i < n && (cls_at(s, i, &c, &l) & mask) == want)
        i += (size_t)l;
    if (i == n) *hit_end = true;
    return i;
}

/* GPT-2's ByteLevel regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
 * ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ (Oniguruma, leftmost-first, contractions case-sensitive) as a
 * scanner; same contract as scan(). */
static size_t scan_gpt2(const uint8_t *s, size_t n, size_t i, bool *hit_end) {
    const unsigned CLS = UC_LETTER | UC_NUMBER | UC_SPACE;
    uint32_t c, c2;
    int l, l2;
    unsigned k = cls_at(s, i, &c, &l);
    size_t j = i + (size_t)l;
    /* 's|'t|'re|'ve|'m|'ll|'d */
    if (c == '\'') {
        if (j >= n) {
            *hit_end = true;
        } else {
            uint8_t a = s[j];
            if (a == 's' || a == 't' || a == 'm' || a == 'd') return j + 1;
            if (a == 'r' || a == 'v' || a == 'l') {
                if (j + 1 >= n) {
                    *hit_end = true;
                } else {
                    uint8_t b = s[j + 1];
                    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
                        return j + 2;
                }
            }
        }
    }
    /* ' ?' takes the space when the next character starts one of the three runs */
    unsigned want = k & CLS;
    size_t p = j;
    if (c == ' ') {
        if (j >= n) {
            *hit_end = true;
            return j;
        }
        want = cls_at(s, j, &c2, &l2) & CLS;
        p = j + (size_t)l2;
    }
    /*  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ */
    if (want == UC_LETTER || want == UC_NUMBER || want == 0)
        return run_class(s, n, p, CLS, want, hit_end);
    /* c is whitespace: \s+(?!\S) | \s+ -- the run, less its last character when a
     * non-space follows and the run is longer than one character */
    size_t e = i, last = i;
    while (e < n && (cls_at(s, e, &c2, &l2) & UC_SPACE)) {
        last = e;
        e += (size_t)l2;
    }
    if (e == n) *hit_end = true;
    if (e == n || last == i) return e;
    return last;
}

/* First \p{N} character at or after i, or n. */
static size_t next_number(const uint8_t *s, size_t n, size_t i) {
    uint32_t c;
    int l;
    while (i < n && !(cls_at(s, i, &c, &l) & UC_NUMBER))
        i += (size_t)l;
    return i;
}

/* Splits buf[0..n) into pre-tokens and encodes them; returns how many bytes were consumed
 * (all of them when final, else up to the first pre-token that may continue past n). */
static int pretok(tokenizer *t, const uint8_t *s, size_t n, bool final, sink *o, size_t *used) {
    size_t i = 0; /* PRE_DIGITS_GPT2: num is the first number character at or after i */
    size_t num = t->pre == PRE_DIGITS_GPT2 ? next_number(s, n, 0) : n;
    while (i < n) {
        bool hit_end = false;
        size_t j;
        if (t->pre == PRE_GPT2) {
            j = scan_gpt2(s, n, i, &hit_end);
        } else if (t->pre == PRE_DIGITS_GPT2) {
            if (num < i) num = next_number(s, n, i);
            if (num == i) { /* a number character is a pre-token of its own */
                int l;
                utf8_dec(s, i, &l);
                j = i + (size_t)l;
            } else {
                j = scan_gpt2(s, num, i, &hit_end);
                if (num < n) hit_end = false; /* the match ends at the number whatever follows */
            }
        } else {
            j = scan(s, n, i, t->pre == PRE_LLAMA3, &hit_end);
        }
        if (hit_end && !final) break;
        int rc = encode_piece(t, s + i, j - i, o);
        if (rc) return rc;
        i = j;
    }
    *used = i;
    return 0;
}

static inline bool nfc_inert(const tokenizer *t, uint32_t c) {
    if (c < 0x300) return true;
    if (c < 0x10000) return bit_get(t->inert_bmp, c);
    return nfc_inert_slow(t, c);
}

static bool nfc_quick(const tokenizer *t, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int l;
        if (!nfc_inert(t, utf8_dec(s, i, &l))) return false;
        i += (size_t)l;
    }
    return true;
}

/* NFC-normalizes raw[0..n) and appends it to the window. */
static int nfc_append(tokenizer *t, const uint8_t *raw, size_t n, size_t *wn) {
    utf8proc_ssize_t k = utf8proc_decompose(raw, (utf8proc_ssize_t)n, t->nfc_buf, 2 * NFC_CHUNK,
                                            UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (k < 0 || k > 2 * NFC_CHUNK) return err_set(ZP_EINVAL, "NFC normalization failed: %s", k < 0 ? utf8proc_errmsg(k) : "too long");
    k = utf8proc_reencode(t->nfc_buf, k, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (k < 0) return err_set(ZP_EINVAL, "NFC normalization failed: %s", utf8proc_errmsg(k));
    memcpy(t->win + *wn, t->nfc_buf, (size_t)k);
    *wn += (size_t)k;
    return 0;
}

/* A text segment between added tokens: normalized (through the window when NFC changes
 * something), pre-tokenized and merged. */
static int encode_segment(tokenizer *t, const uint8_t *s, size_t n, sink *o) {
    size_t used;
    if (!t->nfc || nfc_quick(t, s, n)) return pretok(t, s, n, true, o, &used);
    size_t r = 0, wn = 0;
    for (;;) {
        while (r < n && TOK_WINDOW - wn >= 4 * NFC_CHUNK) {
            size_t e = n;
            if (n - r > NFC_CHUNK) { /* cut before an inert character so NFC is unaffected */
                e = r + NFC_CHUNK;
                while (e > r && (s[e] & 0xC0) == 0x80) e--;
                size_t cut = e;
                for (int l; cut > r; cut--) {
                    if ((s[cut] & 0xC0) != 0x80 && nfc_inert(t, utf8_dec(s, cut, &l))) break;
                }
                if (cut > r) e = cut;
            }
            int rc = nfc_append(t, s + r, e - r, &wn);
            if (rc) return rc;
            r = e;
        }
        bool final = r == n;
        int rc = pretok(t, t->win, wn, final, o, &used);
        if (rc) return rc;
        if (final) return 0;
        if (!used && (rc = pretok(t, t->win, wn, true, o, &used))) return rc; /* piece > window */
        memmove(t->win, t->win + used, wn - used);
        wn -= used;
    }
}

int tok_encode(tokenizer *t, const char *text, size_t len, bool add_special, int32_t *ids,
               size_t cap, size_t *n) {
    const uint8_t *s = (const uint8_t *)text;
    sink o = {ids, cap, 0};
    *n = 0;
    size_t bad = utf8_valid_upto(s, len);
    if (bad != len) return err_set(ZP_EINVAL, "text is not valid UTF-8 (byte %zu)", bad);
    int rc = 0;
    for (int i = 0; add_special && !rc && i < t->nprefix; i++) rc = emit(&o, t->prefix[i]);
    size_t seg = 0;
    for (size_t i = 0; !rc && i < len; i++) {
        int lo = t->abucket[s[i]], hi = t->abucket[s[i] + 1];
        for (int k = lo; k < hi; k++) {
            const added_tok *a = &t->added[k];
            if (a->len > len - i || memcmp(a->s, s + i, a->len)) continue;
            if (i > seg && (rc = encode_segment(t, s + seg, i - seg, &o))) break;
            if ((rc = emit(&o, a->id))) break;
            seg = i + a->len;
            i = seg - 1;
            break;
        }
    }
    if (!rc && seg < len) rc = encode_segment(t, s + seg, len - seg, &o);
    for (int i = 0; add_special && !rc && i < t->nsuffix; i++) rc = emit(&o, t->suffix[i]);
    *n = o.n;
    return rc;
}

/* ---------------------------------------------------------------- decoding */

static const uint8_t REPLACEMENT[3] = {0xEF, 0xBF, 0xBD};

static inline int put(char *out, size_t cap, size_t *o, const uint8_t *b, size_t n) {
    if (cap - *o < n) return err_set(ZP_ELIMIT, "output buffer too small (%zu bytes)", cap);
    memcpy(out + *o, b, n);
    *o += n;
    return 0;
}

void tok_stream_init(tok_stream *st, bool skip_special) {
    memset(st, 0, sizeof *st);
    st->skip_special = skip_special;
}

size_t tok_stream_cap(const tokenizer *t) { return 3 * (t->max_tok_len + 4) + 1; }

int tok_stream_push(const tokenizer *t, tok_stream *st, int32_t id, char *out, size_t cap, size_t *len) {
    const char *tb;
    size_t nb, o = 0, sub;
    bool trunc;
    *len = 0;
    int rc = tok_token_bytes(t, id, &tb, &nb);
    if (rc) return rc;
    if (st->skip_special && (t->flags[id] & F_SPECIAL)) return 0;
    const uint8_t *b = (const uint8_t *)tb;
    size_t i = 0;
    while (st->npend) { /* finish the held-back character first */
        int l = utf8_check(st->pend, st->npend, &sub, &trunc);
        if (!l && trunc) {
            if (i >= nb) break;
            st->pend[st->npend++] = b[i++];
            continue;
        }
        size_t drop = l ? (size_t)l : sub;
        if ((rc = l ? put(out, cap, &o, st->pend, drop) : put(out, cap, &o, REPLACEMENT, 3))) return rc;
        memmove(st->pend, st->pend + drop, st->npend - drop);
        st->npend = (uint8_t)(st->npend - drop);
    }
    while (i < nb) {
        if (b[i] < 0x80) {
            size_t j = i + 1;
            while (j < nb && b[j] < 0x80) j++;
            if ((rc = put(out, cap, &o, b + i, j - i))) return rc;
            i = j;
            continue;
        }
        int l = utf8_check(b + i, nb - i, &sub, &trunc);
        if (!l && trunc) {
            memcpy(st->pend, b + i, nb - i);
            st->npend = (uint8_t)(nb - i);
            break;
        }
        if ((rc = l ? put(out, cap, &o, b + i, (size_t)l) : put(out, cap, &o, REPLACEMENT, 3))) return rc;
        i += l ? (size_t)l : sub;
    }
    *len = o;
    return 0;
}

int tok_stream_flush(tok_stream *st, char *out, size_t cap, size_t *len) {
    size_t o = 0;
    *len = 0;
    if (st->npend) {
        int rc = put(out, cap, &o, REPLACEMENT, 3);
        if (rc) return rc;
        st->npend = 0;
    }
    *len = o;
    return 0;
}

int tok_decode(const tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char *out,
               size_t cap, size_t *len) {
    tok_stream st;
    tok_stream_init(&st, skip_special);
    size_t o = 0, k;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = tok_stream_push(t, &st, ids[i], out + o, cap - o, &k);
        if (rc) return rc;
        o += k;
    }
    int rc = tok_stream_flush(&st, out + o, cap - o, &k);
    if (rc) return rc;
    o += k;
    if (o < cap) out[o] = 0;
    *len = o;
    return 0;
}

/* ---------------------------------------------------------------- queries */

int32_t tok_vocab_size(const tokenizer *t) { return t->nids; }

int32_t tok_token_id(const tokenizer *t, const char *text) {
    size_t n = strlen(text);
    for (int i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].s, text, n)) return t->added[i].id;
    /* vocabulary entries are stored as bytes: map the ByteLevel characters back */
    uint8_t b[TOKSTR_MAX];
    bool strict;
    const uint8_t *s = (const uint8_t *)text;
    if (n > sizeof b || utf8_valid_upto(s, n) != n) return -1;
    size_t k = bl_unmap(t->inv, s, n, b, &strict);
    return strict ? vocab_find(t, b, k) : -1;
}

bool tok_is_special(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->nids && (t->flags[id] & F_SPECIAL);
}

int tok_token_bytes(const tokenizer *t, int32_t id, const char **s, size_t *len) {
    if (id < 0 || id >= t->nids || !(t->flags[id] & F_PRESENT))
        return err_set(ZP_EINVAL, "token id %d is not in the vocabulary (size %d)", id, t->nids);
    *s = (const char *)t->blob + t->off[id];
    *len = t->len[id];
    return 0;
}

int32_t tok_bos_id(const tokenizer *t) { return t->bos; }
int32_t tok_eos_id(const tokenizer *t) { return t->eos; }
const char *tok_chat_template(const tokenizer *t) { return t->chat_template; }
