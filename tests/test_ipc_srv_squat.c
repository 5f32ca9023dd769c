/* An engine never takes over another uid's object under its name (issue 10): that object's
 * header, and the engine pid in it, are whatever its owner wrote. As root: a uid-999 object
 * (empty, or with a zipage header naming a dead pid) makes ipc_server_create fail with a
 * message naming uid 999 and the path, and leaves the object alone; this uid's own object of
 * a dead engine is taken over as before, and one naming a live engine is refused. */
#include "ipc/proto.h"
#include "tests/test_ipc_util.h"

#include <fcntl.h>
#include <sys/stat.h>

#define SQUATTER 999

/* Creates /dev/shm/NAME as the current process; with_header: a zipage header naming pid. */
static int make_object(const char *name, bool with_header, pid_t pid) {
    char path[300];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return -1;
    int rc = 0;
    if (with_header) {
        zpipc_header h;
        memset(&h, 0, sizeof h);
        h.magic = ZPIPC_MAGIC;
        h.version = ZPIPC_VERSION;
        h.engine_pid = (int32_t)pid;
        rc = ftruncate(fd, 8192) || pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h ? -1 : 0;
    }
    close(fd);
    return rc;
}

static pid_t dead_pid(void) {
    pid_t p = ipct_fork(SIGKILL);
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
    return p;
}

/* ipc_server_create on NAME; 0 or the error code (message in err_msg()). */
static int try_create(const char *name) {
    ipc_server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.name, sizeof cfg.name, "%s", name);
    cfg.mode = 0600;
    cfg.max_clients = 2;
    cfg.max_inflight = 4;
    cfg.payload_bytes = 4096;
    arena a;
    REQUIRE(arena_init(&a, "squat test", 64u << 20) == 0);
    ipc_server *s = NULL;
    int rc = ipc_server_create(&s, &a, &cfg);
    if (!rc) ipc_server_destroy(s);
    arena_release(&a);
    return rc;
}

static uid_t owner_of(const char *name) {
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return stat(path, &st) ? (uid_t)-1 : st.st_uid;
}

int main(void) {
    if (geteuid() != 0) return test_skip("needs root to create an object as another uid");
    char name[64], path[300], want[64];
    ipct_name(name, sizeof name, "squat");
    snprintf(path, sizeof path, "/%s", name);
    snprintf(want, sizeof want, "uid %d", SQUATTER);
    for (int with_header = 0; with_header < 2; with_header++) {
        pid_t gone = dead_pid();
        pid_t p = ipct_fork(SIGKILL);
        if (p == 0)
            _exit(setgid(SQUATTER) || setuid(SQUATTER) || make_object(name, with_header, gone) ? 1
                                                                                               : 0);
        int st;
        REQUIRE(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        REQUIRE(owner_of(name) == SQUATTER);
        int rc = try_create(name);
        CHECKF(rc != 0 && strstr(err_msg(), want) && strstr(err_msg(), name),
               "header %d: rc %d, message '%s' (want '%s' and the path)", with_header, rc,
               rc ? err_msg() : "", want);
        CHECKF(owner_of(name) == SQUATTER, "header %d: the squatter's object was replaced",
               with_header);
        shm_unlink(path);
    }
    /* this uid's object left by a dead engine: replaced */
    REQUIRE(make_object(name, true, dead_pid()) == 0);
    int rc = try_create(name);
    CHECKF(rc == 0, "own stale object: rc %d %s", rc, rc ? err_msg() : "");
    /* this uid's object of a live engine: refused, naming the pid */
    REQUIRE(make_object(name, true, getpid()) == 0);
    rc = try_create(name);
    CHECKF(rc != 0 && strstr(err_msg(), "served by pid"), "own live object: rc %d %s", rc,
           rc ? err_msg() : "");
    shm_unlink(path);
    return test_done("ipc_srv_squat");
}
