/* arena: one host mapping, permanent + temporary sides, pools (see arena.h). */
#include "arena/arena.h"

#include "arena/err.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int arena_init(arena *a, const char *name, size_t size) {
    memset(a, 0, sizeof *a);
    a->name = name;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return err_set(ZP_ENOMEM, "arena %s: cannot reserve %zu MiB: %s", name, size >> 20,
                       strerror(errno));
    a->base = p;
    a->size = size;
    return 0;
}

void arena_release(arena *a) {
    if (a->base) munmap(a->base, a->size);
    a->base = NULL;
}

static int frozen_fail(arena *a, const char *what) {
    a->violations++;
    return err_set(ZP_ESTATE, "arena %s: allocation of '%s' after start-up", a->name, what);
}

static size_t align_up(size_t v, size_t align) { return (v + align - 1) & ~(align - 1); }

void *arena_alloc(arena *a, size_t size, size_t align, const char *what) {
    void *p = arena_alloc_uninit(a, size, align, what);
    if (p) memset(p, 0, size);
    return p;
}

void *arena_alloc_uninit(arena *a, size_t size, size_t align, const char *what) {
    assert(align && (align & (align - 1)) == 0);
    if (a->frozen) {
        frozen_fail(a, what);
        return NULL;
    }
    size_t start = align_up(a->lo, align);
    if (start > a->size - a->hi || size > a->size - a->hi - start) {
        err_set(ZP_ENOMEM, "arena %s: out of memory allocating %zu bytes for '%s' (%zu MiB used "
                "of %zu MiB; raise host_arena_mb)", a->name, size, what, arena_used(a) >> 20,
                a->size >> 20);
        return NULL;
    }
    a->lo = start + size;
    return a->base + start;
}

char *arena_strdup(arena *a, const char *s, size_t len, const char *what) {
    char *p = arena_alloc(a, len + 1, 1, what);
    if (p) memcpy(p, s, len);
    return p;
}

void *arena_temp(arena *a, size_t size, size_t align, const char *what) {
    assert(align && (align & (align - 1)) == 0);
    if (a->frozen) {
        frozen_fail(a, what);
        return NULL;
    }
    size_t avail = a->size - a->hi;
    if (size > avail || avail - size < a->lo) goto full;
    size_t top = (avail - size) & ~(align - 1);
    if (top < a->lo) goto full;
    a->hi = a->size - top;
    if (a->hi > a->peak_hi) a->peak_hi = a->hi;
    return a->base + top;
full:
    err_set(ZP_ENOMEM, "arena %s: out of scratch memory allocating %zu bytes for '%s' (raise "
            "host_arena_mb)", a->name, size, what);
    return NULL;
}

size_t arena_temp_mark(const arena *a) { return a->hi; }

void arena_temp_reset(arena *a, size_t mark) {
    assert(mark <= a->hi);
    a->hi = mark;
}

void arena_freeze(arena *a) { a->frozen = 1; }

size_t arena_used(const arena *a) { return a->lo + a->hi; }

static const uint8_t empty_file[1];

int arena_map_file(arena *a, const char *path, const uint8_t **data, size_t *len) {
    if (a->frozen) return frozen_fail(a, path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(ZP_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(ZP_EIO, "%s: not a regular file", path);
    }
    *len = (size_t)st.st_size;
    if (*len == 0) {
        close(fd);
        *data = empty_file;
        return 0;
    }
    void *p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return err_set(ZP_EIO, "%s: mmap: %s", path, strerror(errno));
    *data = p;
    return 0;
}

void arena_unmap_file(const uint8_t *data, size_t len) {
    if (data && data != empty_file && len) munmap((void *)data, len);
}

int arena_read_file(arena *a, const char *path, char **data, size_t *len) {
    const uint8_t *m;
    size_t n;
    int rc = arena_map_file(a, path, &m, &n);
    if (rc) return rc;
    char *buf = arena_temp(a, n + 1, 8, path);
    if (!buf) {
        arena_unmap_file(m, n);
        return ZP_ENOMEM;
    }
    memcpy(buf, m, n);
    buf[n] = 0;
    arena_unmap_file(m, n);
    *data = buf;
    *len = n;
    return 0;
}

int arena_pool_init(arena_pool *p, arena *a, const char *name, size_t obj_size, uint32_t count) {
    memset(p, 0, sizeof *p);
    p->name = name;
    p->obj_size = align_up(obj_size ? obj_size : 1, 16);
    p->mem = arena_alloc(a, p->obj_size * count, 64, name);
    p->free_list = arena_alloc(a, sizeof(uint32_t) * (count ? count : 1), 8, name);
    if (!p->mem || !p->free_list) return ZP_ENOMEM;
    p->cap = p->nfree = count;
    /* Hand out low indices first: free_list is a stack popped from the end. */
    for (uint32_t i = 0; i < count; i++) p->free_list[i] = count - 1 - i;
    return 0;
}

int64_t arena_pool_get(arena_pool *p) {
    if (p->nfree == 0) {
        err_set(ZP_ELIMIT, "pool %s: all %u entries in use", p->name, p->cap);
        return -1;
    }
    return p->free_list[--p->nfree];
}

void arena_pool_put(arena_pool *p, uint32_t idx) {
    assert(idx < p->cap && p->nfree < p->cap);
    p->free_list[p->nfree++] = idx;
}
