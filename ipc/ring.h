/* ring: the few atomic and wake-up primitives both sides of the shared-memory protocol use
 * (ipc/proto.h). Everything that touches a shared word concurrently goes through these
 * named helpers, so each use can say what it pairs with:
 *   - a producer writes a record, then ring_store_release64(tail); the consumer
 *     ring_load_acquire64(tail) and only then reads the record (and symmetrically for the
 *     head the consumer publishes, which frees entries for the producer);
 *   - "needs wakeup": the sleeper sets its flag, ring_fence(), re-checks for work, then
 *     futex-waits; the waker publishes work, ring_fence(), and calls FUTEX_WAKE only when
 *     the flag is set (ring_notify). The two fences make a missed wake-up impossible.
 * Futexes are process-shared (no FUTEX_PRIVATE_FLAG): the words live in a MAP_SHARED object.
 * No allocation; thread-safe as far as the words themselves are.
 */
#ifndef ZP_IPC_RING_H
#define ZP_IPC_RING_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

static inline uint64_t ring_load_acquire64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline uint32_t ring_load_acquire32(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void ring_store_release64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void ring_store_release32(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
/* Relaxed access: single words read for information only (heartbeats, stats hints). */
static inline uint64_t ring_load_relaxed64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline uint32_t ring_load_relaxed32(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void ring_store_relaxed64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline void ring_store_relaxed32(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
/* Slot claim: acquire pairs with the engine's release store of 0 when it freed the slot
 * (so the claimer sees the reset rings); release publishes the claim. */
static inline bool ring_cas32(uint32_t *p, uint32_t expect, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expect, desired, false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}
static inline uint32_t ring_fetch_add32(uint32_t *p, uint32_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
}
/* Seqlock fences (published statistics): the writer's release fence orders its odd
 * sequence store before the data; the reader's acquire fence orders its data copy before it
 * re-reads the sequence. */
static inline void ring_fence_release(void) {
    __atomic_thread_fence(__ATOMIC_RELEASE);
}
static inline void ring_fence_acquire(void) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
}
/* Full barrier of the needs-wakeup handshake (see the header comment). */
static inline void ring_fence(void) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
static inline void ring_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* CLOCK_MONOTONIC in nanoseconds (shared by all processes of the host). */
uint64_t ring_now_ns(void);

/* Sleeps while *word == expected, at most timeout_ns (>= 0). Returns early on a wake, a
 * signal or a changed word; the caller re-checks its condition either way. */
void ring_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);
void ring_futex_wake(uint32_t *word);

/* Waker side of the handshake: after publishing work, wakes the other side only if its
 * needs-wakeup flag is set. Async-signal-safe. */
static inline void ring_notify(uint32_t *futex_word, const uint32_t *sleeping) {
    ring_fence(); /* pairs with the sleeper's fence between setting its flag and re-checking */
    if (ring_load_relaxed32(sleeping)) {
        ring_fetch_add32(futex_word, 1);
        ring_futex_wake(futex_word);
    }
}

/* A pidfd for pid (-1 when the kernel or the pid does not allow one). */
int ring_pidfd_open(pid_t pid);
/* True while the process lives: pidfd readable = exited (zombies included); without a
 * pidfd, kill(pid, 0). */
bool ring_pid_alive(int pidfd, pid_t pid);

/* Whether pid is a process that serves (or uses) a shared-memory object, from what the
 * kernel says rather than what the object says: /proc/PID/status (effective uid) and
 * /proc/PID/maps (a mapping of the file with device dev and inode ino). A pid written into
 * an object by anyone who can write it is only trusted once this passes. */
enum {
    RING_PID_OK = 0,
    RING_PID_GONE = -1,       /* no such process (or a zombie: it maps nothing) */
    RING_PID_OTHER_UID = -2,  /* its effective uid is not uid (*seen_uid says which) */
    RING_PID_NOT_MAPPED = -3, /* it does not map the object */
    RING_PID_UNREADABLE = -4, /* /proc/PID/maps could not be read (*sys_err = errno) */
};
/* Returns RING_PID_*. seen_uid (the process's effective uid) and sys_err may be NULL.
 * Reads with open/read into stack buffers: no allocation. */
int ring_pid_check(pid_t pid, uint32_t uid, uint64_t dev, uint64_t ino, uint32_t *seen_uid,
                   int *sys_err);

#endif
