/* A forged engine pid: the header of a live echo engine is made to name another live
 * process of the same uid (one that does not map the object). A client connecting then
 * either refuses (the pid does not map the object) or, if the engine re-published its real
 * pid first, verified that one; either way, when the real engine is killed every connected
 * client sees ZIPAGE_E_ENGINE_GONE within 100 ms (not after the 10 s heartbeat timeout).
 * The validation itself (ring_pid_check) is tested directly: the engine passes, an unrelated
 * live process, a dead pid and a wrong uid do not. */
#include "tests/test_ipc_util.h"

#include "ipc/proto.h"
#include "ipc/ring.h"

#include <fcntl.h>
#include <sys/stat.h>

static void forge_pid(const char *path, pid_t pid) {
    int fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    int32_t v = (int32_t)pid;
    REQUIRE(pwrite(fd, &v, 4, offsetof(zpipc_header, engine_pid)) == 4);
    close(fd);
}

int main(void) {
    char name[64], path[96];
    ipct_name(name, sizeof name, "pid");
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    pid_t sleeper = ipct_fork(SIGKILL); /* forked before anything maps the object */
    if (!sleeper) {
        pause();
        _exit(0);
    }
    pid_t dead = ipct_fork(SIGKILL);
    if (!dead) _exit(0);
    REQUIRE(waitpid(dead, NULL, 0) == dead);

    pid_t eng = ipct_engine(name, NULL, 0);
    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    uint32_t uid = (uint32_t)geteuid(), seen = 0;
    uint64_t dev = (uint64_t)st.st_dev, ino = (uint64_t)st.st_ino;
    CHECK(ring_pid_check(eng, uid, dev, ino, &seen, NULL) == RING_PID_OK);
    CHECK(ring_pid_check(sleeper, uid, dev, ino, NULL, NULL) == RING_PID_NOT_MAPPED);
    CHECK(ring_pid_check(dead, uid, dev, ino, NULL, NULL) == RING_PID_GONE);
    CHECK(ring_pid_check(0, uid, dev, ino, NULL, NULL) == RING_PID_GONE);
    CHECK(ring_pid_check(eng, uid + 1, dev, ino, &seen, NULL) == RING_PID_OTHER_UID && seen == uid);
    CHECK(ring_pid_check(eng, uid, dev, ino + 1, NULL, NULL) == RING_PID_NOT_MAPPED);

    /* connect while the header names the sleeper */
    forge_pid(path, sleeper);
    zipage_client *forged = NULL;
    int rc = zipage_connect(&forged, name, NULL);
    printf("connect with a forged pid: %s: %s\n", zipage_strerror(rc),
           rc ? zipage_last_error() : "connected (the engine re-published its pid first)");
    if (rc)
        CHECKF(rc == ZIPAGE_E_ENGINE_GONE && strstr(zipage_last_error(), "does not map the object"),
               "%d %s", rc, zipage_last_error());
    forge_pid(path, eng);
    zipage_client *honest = ipct_connect(name);
    CHECK(honest != NULL);
    forge_pid(path, sleeper); /* the pid read at connect is what counts, not this one */

    /* the real engine dies: every connected client notices within 100 ms */
    zipage_client *cs[2] = {forged, honest};
    kill(eng, SIGKILL);
    double t0 = ipct_ms();
    REQUIRE(waitpid(eng, NULL, 0) == eng);
    for (int i = 0; i < 2; i++) {
        if (!cs[i]) continue;
        zipage_event ev[4];
        int n;
        while ((n = zipage_wait(cs[i], ev, 4, 2000)) > 0)
            continue;
        double dt = ipct_ms() - t0;
        printf("client %d: %s after %.1f ms\n", i, zipage_strerror(n), dt);
        CHECKF(n == ZIPAGE_E_ENGINE_GONE && dt < 100, "client %d: %d after %.1f ms", i, n, dt);
        zipage_disconnect(cs[i]);
    }
    char shm[96];
    snprintf(shm, sizeof shm, "/%s", name);
    shm_unlink(shm);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, NULL, 0);
    return test_done("ipc_cli_pid");
}
