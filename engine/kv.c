/* kv: block pool, reference counts, prefix cache (see kv.h). */
#include "engine/kv.h"

#include "arena/err.h"

#include <assert.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

static void list_remove(kv_pool *p, int32_t b) {
    if (p->prev[b] >= 0) p->next[p->prev[b]] = p->next[b];
    else p->free_head = p->next[b];
    if (p->next[b] >= 0) p->prev[p->next[b]] = p->prev[b];
    else p->free_tail = p->prev[b];
    p->prev[b] = p->next[b] = -1;
    p->nfree--;
}

static void list_append(kv_pool *p, int32_t b) {
    p->prev[b] = p->free_tail;
    p->next[b] = -1;
    if (p->free_tail >= 0) p->next[p->free_tail] = b;
    else p->free_head = b;
    p->free_tail = b;
    p->nfree++;
}

int kv_init(kv_pool *p, arena *a, int32_t num_blocks, int32_t block_size, bool prefix_cache) {
    memset(p, 0, sizeof *p);
    if (num_blocks < 1) return err_set(ZP_EINVAL, "kv: need at least one block");
    p->num_blocks = num_blocks;
    p->block_size = block_size;
    p->prefix_cache = prefix_cache;
    size_t n = (size_t)num_blocks;
    p->ref = arena_alloc(a, n * 4, 8, "kv ref counts");
    p->prev = arena_alloc(a, n * 4, 8, "kv free list");
    p->next = arena_alloc(a, n * 4, 8, "kv free list");
    if (!p->ref || !p->prev || !p->next) return ZP_ENOMEM;
    if (prefix_cache) {
        p->nbuckets = 1;
        while (p->nbuckets < 2 * n) p->nbuckets <<= 1;
        p->hash = arena_alloc(a, n * 8, 8, "kv hashes");
        p->has_hash = arena_alloc(a, n, 8, "kv hashes");
        p->tokens = arena_alloc(a, n * (size_t)block_size * 4, 8, "kv prefix tokens");
        p->bucket = arena_alloc(a, (size_t)p->nbuckets * 4, 8, "kv hash buckets");
        p->chain = arena_alloc(a, n * 4, 8, "kv hash chains");
        if (!p->hash || !p->has_hash || !p->tokens || !p->bucket || !p->chain) return ZP_ENOMEM;
        memset(p->bucket, 0xFF, (size_t)p->nbuckets * 4);
    }
    p->free_head = p->free_tail = -1;
    for (int32_t b = 0; b < num_blocks; b++) list_append(p, b);
    return 0;
}

void kv_forget(kv_pool *p, int32_t b) {
    if (!p->prefix_cache || !p->has_hash[b]) return;
    int32_t *link = &p->bucket[p->hash[b] & (p->nbuckets - 1)];
    while (*link != b) {
        assert(*link >= 0);
        link = &p->chain[*link];
    }
    *link = p->chain[b];
    p->has_hash[b] = false;
}

int32_t kv_alloc(kv_pool *p) {
    int32_t b = p->free_head;
    if (b < 0) return -1;
    list_remove(p, b);
    kv_forget(p, b);
    assert(p->ref[b] == 0);
    p->ref[b] = 1;
    return b;
}

void kv_ref(kv_pool *p, int32_t b) {
    assert(p->ref[b] > 0);
    p->ref[b]++;
}

void kv_unref(kv_pool *p, int32_t b) {
    assert(p->ref[b] > 0);
    if (--p->ref[b] == 0) list_append(p, b);
}

uint64_t kv_chain_hash(uint64_t prev, const int32_t *tokens, int32_t n) {
    return XXH64(tokens, (size_t)n * sizeof *tokens, prev ^ 0x9E3779B97F4A7C15ull);
}

int32_t kv_lookup(kv_pool *p, uint64_t h, const int32_t *tokens) {
    if (!p->prefix_cache) return -1;
    size_t bs = (size_t)p->block_size;
    for (int32_t b = p->bucket[h & (p->nbuckets - 1)]; b >= 0; b = p->chain[b]) {
        if (p->hash[b] != h || memcmp(p->tokens + (size_t)b * bs, tokens, bs * 4)) continue;
        if (p->ref[b] == 0) list_remove(p, b);
        p->ref[b]++;
        return b;
    }
    return -1;
}

void kv_register(kv_pool *p, int32_t b, uint64_t h, const int32_t *tokens) {
    if (!p->prefix_cache || p->has_hash[b]) return;
    size_t bs = (size_t)p->block_size;
    for (int32_t o = p->bucket[h & (p->nbuckets - 1)]; o >= 0; o = p->chain[o])
        if (p->hash[o] == h && !memcmp(p->tokens + (size_t)o * bs, tokens, bs * 4)) return;
    memcpy(p->tokens + (size_t)b * bs, tokens, bs * 4);
    p->hash[b] = h;
    p->has_hash[b] = true;
    uint32_t k = (uint32_t)(h & (p->nbuckets - 1));
    p->chain[b] = p->bucket[k];
    p->bucket[k] = b;
}
