/* gguf: reads GGUF version 3 files (llama.cpp's model format): header, metadata and tensor
 * directory, every field validated before use, and the dequantization of the tensor types
 * zipage loads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) into f32.
 *
 * Validation (gguf_parse): magic and version 3 (1 and 2 are refused by name), counts that fit
 * in the file, every string and array inside the file, known value types, bools 0 or 1, no
 * nested arrays deeper than one level (an array of arrays of scalars or strings is read; one
 * more level is refused), keys of 1..65535 bytes and tensor names of 1..64 bytes (the spec's
 * limits) without NUL bytes, no duplicate keys or tensor names, general.alignment a u32 power
 * of two (default 32), tensor dims 1..4 with every extent >= 1 and no overflow of the element
 * or byte count, the first extent a multiple of the type's block, known tensor types, offsets
 * aligned and relative to the data section (which starts at the aligned end of the tensor
 * infos), every tensor's bytes inside the data section and no two tensors overlapping.
 * Anything else is a ZP_EFORMAT (ZP_EUNSUP for a valid but unsupported type, version or
 * nesting) whose message names the file and the key or tensor at fault; a corrupted file is
 * never read out of bounds.
 *
 * Memory: the key and tensor tables (with NUL-terminated copies of keys and names, and a hash
 * table of each for the lookups) live in the arena; values and tensor data stay in the mapping
 * (gguf_open maps the file read-only, gguf_parse reads a caller's buffer, which must outlive
 * the gguf_file). The arena's temporary side is used during parsing and given back. Start-up
 * only; the result is read-only and may be shared by threads.
 */
#ifndef ZP_GGUF_H
#define ZP_GGUF_H

#include "arena/arena.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Metadata value types (the file's numbering). */
typedef enum {
    GGUF_V_U8 = 0,
    GGUF_V_I8 = 1,
    GGUF_V_U16 = 2,
    GGUF_V_I16 = 3,
    GGUF_V_U32 = 4,
    GGUF_V_I32 = 5,
    GGUF_V_F32 = 6,
    GGUF_V_BOOL = 7,
    GGUF_V_STRING = 8,
    GGUF_V_ARRAY = 9,
    GGUF_V_U64 = 10,
    GGUF_V_I64 = 11,
    GGUF_V_F64 = 12,
} gguf_vtype;

/* Tensor types (ggml's numbering); only these are accepted. */
typedef enum {
    GGUF_T_F32 = 0,
    GGUF_T_F16 = 1,
    GGUF_T_Q4_0 = 2,
    GGUF_T_Q4_1 = 3,
    GGUF_T_Q8_0 = 8,
    GGUF_T_Q4_K = 12,
    GGUF_T_Q5_K = 13,
    GGUF_T_Q6_K = 14,
    GGUF_T_BF16 = 30,
} gguf_ttype;

typedef struct gguf_kv {
    const char *key;     /* NUL-terminated copy */
    uint32_t type;       /* gguf_vtype */
    uint32_t elem_type;  /* arrays: the element type, else = type */
    uint64_t n;          /* arrays: element count; strings: byte length; else 1 */
    const uint8_t *data; /* scalars: the value; strings: the bytes; arrays: the first element */
} gguf_kv;

typedef struct gguf_tensor {
    const char *name; /* NUL-terminated copy */
    uint32_t type;    /* gguf_ttype */
    int ndim;
    int64_t ne[4]; /* ne[0] is the innermost (contiguous) extent; unused ones are 1 */
    int64_t nelem;
    uint64_t nbytes;
    uint64_t offset; /* as in the file: relative to the data section */
    const uint8_t *data;
} gguf_tensor;

typedef struct gguf_file {
    const char *path; /* for messages */
    const uint8_t *map;
    size_t len;
    bool mapped; /* gguf_close unmaps */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset; /* where the data section starts in the file */
    int64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    /* Open-addressing hash tables of index + 1 (0 = empty slot), mask + 1 slots each; NULL
     * when there is nothing to find. */
    uint32_t *kv_hash, *t_hash;
    uint64_t kv_mask, t_mask;
} gguf_file;

/* Maps path read-only and parses it. */
int gguf_open(gguf_file *g, arena *a, const char *path);
/* Parses buf[0..len) (not copied); name is used in messages. */
int gguf_parse(gguf_file *g, arena *a, const uint8_t *buf, size_t len, const char *name);
/* Unmaps what gguf_open mapped and clears g; safe on a cleared g. */
void gguf_close(gguf_file *g);

/* True when the first bytes of path are GGUF's magic (a missing file gives false). */
bool gguf_is_file(const char *path);

const gguf_kv *gguf_find(const gguf_file *g, const char *key);
/* Typed getters: ZP_ENOTFOUND when the key is absent (no message set), ZP_EFORMAT naming the
 * key when its type does not fit (an integer getter takes any integer type whose value fits;
 * gguf_get_f64 takes F32/F64 and integers). */
int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out);
int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out);
int gguf_get_f64(const gguf_file *g, const char *key, double *out);
int gguf_get_bool(const gguf_file *g, const char *key, bool *out);
/* A string value (not NUL-terminated in the file: s[0..*n)). */
int gguf_get_str(const gguf_file *g, const char *key, const char **s, size_t *n);
/* An array of elem_type (any other element type is ZP_EFORMAT naming the key). */
int gguf_get_arr(const gguf_file *g, const char *key, uint32_t elem_type, const gguf_kv **kv);

/* Iterates the strings of a validated string array: *p starts at kv->data; each call gives
 * the next string s[0..*n) and advances *p. The caller counts kv->n calls. */
void gguf_str_next(const uint8_t **p, const char **s, size_t *n);
/* Iterates the inner arrays of a validated array of arrays the same way: each call fills
 * *inner (key = the outer key; type ARRAY, elem_type, n, data as for a top-level array). */
void gguf_arr_next(const uint8_t **p, const gguf_kv *outer, gguf_kv *inner);
/* Element i < kv->n of a validated numeric array, widened: gguf_arr_int takes the integer
 * element types but U64 (every value fits), gguf_arr_f64 any integer or float element type.
 * Another element type is a caller's bug (assert). */
int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i);
double gguf_arr_f64(const gguf_kv *kv, uint64_t i);

const gguf_tensor *gguf_tensor_find(const gguf_file *g, const char *name);

/* Block geometry of a tensor type: elements and bytes per block (0 for a type zipage does not
 * read). */
int64_t gguf_type_block(uint32_t type);
size_t gguf_type_block_bytes(uint32_t type);
/* ggml's name of a tensor type ("Q4_K"; also for the types zipage does not read), "?" for a
 * number ggml does not use; and a value type's name ("u32", "string", ...; "?" if unknown). */
const char *gguf_type_name(uint32_t type);
const char *gguf_vtype_name(uint32_t type);
/* Bytes of one value of a scalar value type (0 for string, array and unknown types). */
size_t gguf_vtype_size(uint32_t type);

/* Dequantizes n elements (a multiple of the type's block) from src into dst, exactly as ggml's
 * reference dequantization does (same f32 arithmetic, so the values are bit-identical; f16
 * NaNs keep their payload as in gguf-py, where ggml on x86 would quiet a signalling one).
 * ZP_EUNSUP for a type zipage does not read, ZP_EINVAL for a partial block. */
int gguf_dequant(uint32_t type, const void *src, int64_t n, float *dst);

#endif
