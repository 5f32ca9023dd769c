/* ring: clock, futex, pid-liveness and pid-identity system calls behind ring.h. Linked into
 * both the engine (glibc) and the static musl client, so only raw syscalls and stdio string
 * functions that both libcs expose. */
#include "ipc/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
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

/* The effective uid on the "Uid:" line of /proc/PID/status (real, effective, saved, fs). */
static int status_euid(pid_t pid, uint32_t *euid, int *sys_err) {
    char path[48], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *sys_err = errno;
        return errno == ENOENT || errno == ESRCH ? RING_PID_GONE : RING_PID_UNREADABLE;
    }
    size_t n = 0; /* the Uid line is in the first few hundred bytes */
    for (;;) {
        ssize_t k = read(fd, buf + n, sizeof buf - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
        if (n == sizeof buf - 1) break;
    }
    close(fd);
    buf[n] = 0;
    const char *u = strstr(buf, "\nUid:");
    unsigned long r, e;
    if (!u || sscanf(u + 5, "%lu %lu", &r, &e) != 2) {
        *sys_err = n ? EINVAL : ESRCH; /* empty: the process went away while we read */
        return n ? RING_PID_UNREADABLE : RING_PID_GONE;
    }
    *euid = (uint32_t)e;
    return RING_PID_OK;
}

/* One line of /proc/PID/maps ("lo-hi perms offset MAJ:MIN inode path"): a mapping of the
 * file (dev, ino)? Only the fields before the path are parsed, so long paths do not matter. */
static bool maps_line_is(const char *line, uint64_t dev, uint64_t ino) {
    unsigned long lo, hi, off;
    unsigned maj, min;
    unsigned long long inode;
    char perms[8];
    return sscanf(line, "%lx-%lx %7s %lx %x:%x %llu", &lo, &hi, perms, &off, &maj, &min, &inode) ==
               7 &&
           maj == major((dev_t)dev) && min == minor((dev_t)dev) && inode == ino;
}

int ring_pid_check(pid_t pid, uint32_t uid, uint64_t dev, uint64_t ino, uint32_t *seen_uid,
                   int *sys_err) {
    int e = 0;
    uint32_t euid = 0;
    if (!sys_err) sys_err = &e;
    if (pid <= 0) return RING_PID_GONE;
    int rc = status_euid(pid, &euid, sys_err);
    if (rc) return rc;
    if (seen_uid) *seen_uid = euid;
    if (euid != uid) return RING_PID_OTHER_UID;
    char path[48];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *sys_err = errno;
        return errno == ENOENT || errno == ESRCH ? RING_PID_GONE : RING_PID_UNREADABLE;
    }
    char buf[4096], line[128];
    size_t len = 0;
    bool found = false;
    ssize_t k;
    while (!found && (k = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < k && !found; i++) {
            if (buf[i] != '\n') {
                if (len < sizeof line - 1) line[len++] = buf[i];
                continue;
            }
            line[len] = 0;
            len = 0;
            found = maps_line_is(line, dev, ino);
        }
    }
    if (!found && k < 0) {
        *sys_err = errno;
        close(fd);
        return RING_PID_UNREADABLE;
    }
    close(fd);
    return found ? RING_PID_OK : RING_PID_NOT_MAPPED;
}
