/* fuzz_util: helpers shared by the libFuzzer targets tests/fuzz/fuzz_*.c (header-only).
 *
 * The loaders read files from a directory, so a target writes each input into a private
 * temporary directory made once per process (mkdtemp under $TMPDIR or /tmp; removed at exit)
 * and calls the loader on it: no fork and no new directory per input, so a target runs
 * thousands of inputs per second. Inputs that carry several files are split at NUL bytes
 * (fuzz_split), which no JSON or zipage.conf text can hold, so each part stays a plain file
 * and the seed corpus stays readable.
 *
 * Memory: a target allocates with malloc per input and frees it before returning (leaks are
 * findings under LeakSanitizer). Threading: libFuzzer calls a target from one thread.
 */
#ifndef ZP_FUZZ_UTIL_H
#define ZP_FUZZ_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_tmp[256];

static inline void fuzz_rmdir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_tmp);
    if (system(cmd)) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_tmp);
}

/* The per-process directory, made on first use. A harness failure aborts: libFuzzer then
 * reports it as a crash rather than fuzzing nothing. */
static inline const char *fuzz_dir(void) {
    if (fuzz_tmp[0]) return fuzz_tmp;
    const char *t = getenv("TMPDIR");
    snprintf(fuzz_tmp, sizeof fuzz_tmp, "%s/zp_fuzz.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(fuzz_tmp)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_rmdir);
    return fuzz_tmp;
}

/* Writes n bytes as file name in the directory (replacing it). */
static inline void fuzz_write(const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f)) {
        perror(path);
        abort();
    }
}

/* Removes file name from the directory if it is there. */
static inline void fuzz_remove(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    unlink(path);
}

/* Part i (0-based) of data split at NUL bytes in *p and *n; false when there are fewer. */
static inline bool fuzz_split(const uint8_t *data, size_t size, int i, const uint8_t **p,
                              size_t *n) {
    size_t at = 0;
    for (; i > 0; i--) {
        const uint8_t *z = memchr(data + at, 0, size - at);
        if (!z) return false;
        at = (size_t)(z - data) + 1;
    }
    const uint8_t *z = memchr(data + at, 0, size - at);
    *p = data + at;
    *n = z ? (size_t)(z - (data + at)) : size - at;
    return true;
}

#endif
