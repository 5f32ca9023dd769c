/* ring: clock, futex and pid-liveness system calls behind ring.h. Linked into both the
 * engine (glibc) and the static musl client, so only raw syscalls that both libcs expose. */
#include "ipc/ring.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Kernel ABI constants (linux/futex.h is not in musl's include path). */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

uint64_t ring_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ring_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    if (timeout_ns < 0) timeout_ns = 0;
    struct timespec ts = {(time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000)};
    /* Errors (EAGAIN: word changed, EINTR, ETIMEDOUT) all mean "re-check". */
    syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

void ring_futex_wake(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

int ring_pidfd_open(pid_t pid) {
    if (pid <= 0) return -1;
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -1 : (int)fd;
}

bool ring_pid_alive(int pidfd, pid_t pid) {
    if (pidfd >= 0) {
        struct pollfd p = {.fd = pidfd, .events = POLLIN};
        return poll(&p, 1, 0) == 0;
    }
    if (pid <= 0) return false;
    return kill(pid, 0) == 0 || errno == EPERM;
}
