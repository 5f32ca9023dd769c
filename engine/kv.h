/* kv: the KV block pool: free list, reference counts, and the prefix cache.
 *
 * Blocks are ids 0..num_blocks-1 into the backend's KV cache. A block is free when its
 * ref count is 0. Freed blocks go to the tail of the free list and keep their prefix hash,
 * so a later request with the same prefix can revive them until they are handed out again
 * (allocation takes the head: the least recently freed block).
 *
 * Prefix cache: a full block is registered under a chained hash h = H(prev_hash, its token
 * ids) (xxhash64); lookups verify the stored token ids, so a hash collision is never a hit.
 * A block with ref count > 1 must never be written: the scheduler copies-on-write.
 *
 * Memory: all arrays from the arena at start-up; no allocation afterwards. Single-threaded
 * (the engine's scheduler thread).
 */
#ifndef ZP_KV_H
#define ZP_KV_H

#include "arena/arena.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct kv_pool {
    int32_t num_blocks, block_size, nfree;
    int32_t *ref;
    int32_t *prev, *next;   /* free list links (-1 = none) */
    int32_t free_head, free_tail;
    bool prefix_cache;
    uint64_t *hash;         /* per block; valid when has_hash */
    bool *has_hash;
    int32_t *tokens;        /* [num_blocks][block_size] ids of registered blocks */
    int32_t *bucket;        /* [nbuckets] first block of each hash chain */
    int32_t *chain;         /* next block in the same chain */
    uint32_t nbuckets;
} kv_pool;

int kv_init(kv_pool *p, arena *a, int32_t num_blocks, int32_t block_size, bool prefix_cache);
/* Takes a free block (ref 1), dropping any hash it kept. -1 when none is free. */
int32_t kv_alloc(kv_pool *p);
void kv_ref(kv_pool *p, int32_t b);
/* Drops one reference; at zero the block joins the free list's tail, hash kept. */
void kv_unref(kv_pool *p, int32_t b);
static inline int32_t kv_free_count(const kv_pool *p) { return p->nfree; }
static inline int32_t kv_used_count(const kv_pool *p) { return p->num_blocks - p->nfree; }

uint64_t kv_chain_hash(uint64_t prev, const int32_t *tokens, int32_t n);
/* The block registered under h holding exactly tokens[0..block_size), with one more
 * reference taken (revived from the free list if needed), or -1. */
int32_t kv_lookup(kv_pool *p, uint64_t h, const int32_t *tokens);
/* Registers a full block under h (no-op when prefix caching is off or h is present). */
void kv_register(kv_pool *p, int32_t b, uint64_t h, const int32_t *tokens);
/* Forgets b's hash (its contents are about to change). */
void kv_forget(kv_pool *p, int32_t b);

#endif
