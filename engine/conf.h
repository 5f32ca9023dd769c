/* conf: zipage's configuration, one table of keys (conf_keys.h) with defaults, ranges and docs.
 *
 * Sources, in order: built-in defaults, the file given with -c (zipage.conf format:
 * `key = value`, `# comments`, optional `[section]` headers that must match the key's section),
 * then every --set key=value in command-line order. Errors name the source, line and key:
 * `zipage.conf:12: key 'block_size': value 0 out of range [1, 4096]`, code ZP_EINVAL (exit 2).
 *
 * The struct is filled once at start-up and read-only afterwards; nothing reads files or the
 * environment later. No allocation: strings live in fixed arrays inside the struct.
 */
#ifndef ZP_CONF_H
#define ZP_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CONF_STR_MAX 512

typedef struct conf {
#define CONF_INT(sec, name, def, lo, hi, doc) int64_t name;
#define CONF_FLOAT(sec, name, def, lo, hi, doc) double name;
#define CONF_BOOL(sec, name, def, doc) bool name;
#define CONF_STR(sec, name, def, doc) char name[CONF_STR_MAX];
#define CONF_ENUM(sec, name, def, choices, doc) int name;
#include "engine/conf_keys.h"
#undef CONF_INT
#undef CONF_FLOAT
#undef CONF_BOOL
#undef CONF_STR
#undef CONF_ENUM
} conf;

/* Enum values: index into the key's '|'-separated choices, in the order written there. */
enum { CONF_BACKEND_AUTO, CONF_BACKEND_CPU, CONF_BACKEND_CUDA };
enum { CONF_LOAD_FORMAT_AUTO, CONF_LOAD_FORMAT_DUMMY };
enum { CONF_ATTENTION_KERNEL_SIMT, CONF_ATTENTION_KERNEL_MMA };
enum { CONF_ATTENTION_PREFILL_KERNEL_AUTO, CONF_ATTENTION_PREFILL_KERNEL_MMA,
       CONF_ATTENTION_PREFILL_KERNEL_WGMMA }; /* drv/attn_tiles.h's ATTN_PREFILL_* */
enum { CONF_CPU_ISA_AUTO, CONF_CPU_ISA_GENERIC, CONF_CPU_ISA_AVX2, CONF_CPU_ISA_AVX512 };
enum { CONF_CPU_MATMUL_PRECISION_F32, CONF_CPU_MATMUL_PRECISION_BF16 };
enum { CONF_REDUNDANCY_LIGHTNING, CONF_REDUNDANCY_RAW, CONF_REDUNDANCY_OFF };
enum { CONF_EVICTION_SCORE, CONF_EVICTION_STREAMING, CONF_EVICTION_RANDOM, CONF_EVICTION_ORACLE };
enum { CONF_KV_DTYPE_AUTO, CONF_KV_DTYPE_F32, CONF_KV_DTYPE_BF16, CONF_KV_DTYPE_F16 };
enum { CONF_SIGTERM_FINISH, CONF_SIGTERM_CANCEL };

void conf_defaults(conf *c);
/* Reads a zipage.conf file into c (over what is there). */
int conf_load_file(conf *c, const char *path);
/* Applies one `key=value` (key may be `section.key`); src names the origin for messages. */
int conf_set(conf *c, const char *assignment, const char *src);
/* Handles the options every command accepts: -c FILE, --set k=v, --model DIR, --backend B.
 * Removes them from argv (argc updated) and leaves the rest in order. */
int conf_from_args(conf *c, int *argc, char **argv);
/* Writes a documented zipage.conf holding c's values; with c at its defaults this is the
 * shipped file (a test checks they agree). */
void conf_write(FILE *f, const conf *c);
/* Name of the chosen value of an enum key. */
const char *conf_enum_name(const char *key, int value);

#endif
