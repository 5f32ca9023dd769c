/* arena: the host memory of a zipage process.
 *
 * One anonymous mapping is reserved at start-up (MAP_NORESERVE: pages cost memory only when
 * touched) and carved two ways: permanent allocations grow up from the bottom, temporary
 * start-up scratch (JSON token arrays, parse buffers) grows down from the top and is released
 * LIFO with arena_temp_mark()/arena_temp_reset(). Fixed-size pools are carved from the
 * permanent side and keep working after start-up.
 *
 * arena_freeze() ends start-up: from then on every arena allocation, temp allocation and
 * file mapping fails with ZP_ESTATE and a message naming the caller, and bumps a violation
 * counter that tests check. Nothing in the engine calls malloc/free/mmap after freezing.
 *
 * Threading: an arena is used from one thread during start-up; pools are not thread-safe
 * (the engine's scheduler thread owns them).
 */
#ifndef ZP_ARENA_H
#define ZP_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct arena {
    uint8_t *base;
    size_t size;
    size_t lo;  /* permanent bytes used from the bottom */
    size_t hi;  /* temporary bytes used from the top */
    size_t peak_hi;
    int frozen;
    unsigned violations; /* allocation attempts after freeze */
    const char *name;
} arena;

int arena_init(arena *a, const char *name, size_t size);
void arena_release(arena *a);

/* Permanent allocation, zeroed. NULL (with err set) when full or frozen. */
void *arena_alloc(arena *a, size_t size, size_t align, const char *what);
/* Permanent allocation left as the mapping has it (not zeroed): for large buffers that are
 * always written before being read, so untouched pages cost no memory. */
void *arena_alloc_uninit(arena *a, size_t size, size_t align, const char *what);
/* Copies a string into the arena. */
char *arena_strdup(arena *a, const char *s, size_t len, const char *what);

/* Temporary allocation from the top, not zeroed. */
void *arena_temp(arena *a, size_t size, size_t align, const char *what);
size_t arena_temp_mark(const arena *a);
void arena_temp_reset(arena *a, size_t mark);

void arena_freeze(arena *a);
size_t arena_used(const arena *a);

/* Maps a whole file read-only (start-up only). *len gets its size. An empty file maps to a
 * static empty buffer. Mappings live until arena_unmap_file(). */
int arena_map_file(arena *a, const char *path, const uint8_t **data, size_t *len);
void arena_unmap_file(const uint8_t *data, size_t len);
/* Reads a whole small file into temporary arena memory, NUL-terminated. */
int arena_read_file(arena *a, const char *path, char **data, size_t *len);

/* A pool of fixed-size objects with a free list, carved at start-up. */
typedef struct arena_pool {
    uint8_t *mem;
    uint32_t *free_list;
    uint32_t nfree, cap;
    size_t obj_size;
    const char *name;
} arena_pool;

int arena_pool_init(arena_pool *p, arena *a, const char *name, size_t obj_size, uint32_t count);
/* Index of a free object, or -1 (err set) when empty. */
int64_t arena_pool_get(arena_pool *p);
void arena_pool_put(arena_pool *p, uint32_t idx);
static inline void *arena_pool_ptr(const arena_pool *p, uint32_t idx) {
    return p->mem + (size_t)idx * p->obj_size;
}

#endif
