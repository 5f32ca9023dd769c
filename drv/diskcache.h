/* diskcache: small files kept between starts (NVRTC's CUBINs, tuned GEMM plans) under a cache
 * directory.
 *
 * Invariants: a file is written under a temporary name and renamed into place, so a reader
 * sees a whole file or none, even with several engines starting at once. A cache that cannot
 * be written or read only costs the next start its work: these functions never fail a caller.
 * Threading: any thread; no shared state. Memory: the caller's buffers only.
 */
#ifndef ZP_DISKCACHE_H
#define ZP_DISKCACHE_H

#include <stddef.h>

/* Creates dir (and its parents) when missing and stores len bytes as dir/name. */
void diskcache_store(const char *dir, const char *name, const void *data, size_t len);

/* Reads dir/name into buf when it exists and holds exactly len bytes: 1 when read, else 0. */
int diskcache_load(const char *dir, const char *name, void *buf, size_t len);

#endif
