/* The engine is killed (SIGKILL) while clients stream, wait idle on the futex, or busy-poll:
 * each of them gets ZIPAGE_E_ENGINE_GONE within 100 ms, and later calls keep failing so. A new
 * engine then replaces the dead one's object under the same name. */
#include "tests/test_ipc_util.h"

enum { STREAMING, IDLE_SLEEPER, BUSY_POLLER, NKIND };
#define PER_KIND 2

/* Writes the monotonic time (ms) at which it saw the engine gone, or a negative code. */
static int client(const char *name, int kind, int wfd) {
    zipage_options o = {.spin_us = kind == BUSY_POLLER ? ZIPAGE_SPIN_FOREVER : ZIPAGE_SPIN_NONE};
    zipage_client *c = NULL;
    if (zipage_connect(&c, name, &o)) return 10;
    if (kind != IDLE_SLEEPER) {
        static char prompt[4000];
        memset(prompt, 's', sizeof prompt);
        zipage_request r;
        zipage_request_default(&r);
        r.text = prompt;
        r.text_len = sizeof prompt;
        r.params.max_tokens = 4000;
        uint64_t id;
        if (zipage_submit(c, &r, &id)) return 11;
        zipage_event ev[8];
        if (zipage_wait(c, ev, 8, 5000) < 1) return 12;
    }
    double msg[2] = {0, 0};
    (void)!write(wfd, msg, sizeof msg); /* ready */
    int rc;
    zipage_event ev[16];
    while ((rc = zipage_wait(c, ev, 16, 5000)) > 0)
        continue;
    msg[0] = ipct_ms();
    msg[1] = rc;
    (void)!write(wfd, msg, sizeof msg);
    uint64_t id;
    zipage_request r;
    zipage_request_default(&r);
    r.text = "x";
    r.text_len = 1;
    int again = zipage_submit(c, &r, &id);
    zipage_disconnect(c);
    return again == ZIPAGE_E_ENGINE_GONE ? 0 : 13;
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "gone");
    const char *sets[] = {"max_clients=8", NULL};
    pid_t eng = ipct_engine(name, sets, 500);
    int n = NKIND * PER_KIND, fds[NKIND * PER_KIND];
    pid_t kids[NKIND * PER_KIND];
    for (int i = 0; i < n; i++) {
        int pfd[2];
        REQUIRE(pipe(pfd) == 0);
        kids[i] = ipct_fork(SIGKILL);
        if (!kids[i]) {
            close(pfd[0]);
            _exit(client(name, i % NKIND, pfd[1]));
        }
        close(pfd[1]);
        fds[i] = pfd[0];
    }
    double msg[2];
    for (int i = 0; i < n; i++)
        REQUIRE(read(fds[i], msg, sizeof msg) == sizeof msg);
    usleep(30000); /* let the idle ones fall asleep on their futex */
    kill(eng, SIGKILL);
    double t0 = ipct_ms();
    REQUIRE(waitpid(eng, NULL, 0) == eng);
    for (int i = 0; i < n; i++) {
        struct pollfd p = {fds[i], POLLIN, 0};
        bool got = poll(&p, 1, 5000) == 1 && read(fds[i], msg, sizeof msg) == sizeof msg;
        CHECKF(got, "client %d reported nothing", i);
        if (!got) continue;
        double dt = msg[0] - t0;
        printf("client %d (kind %d): %s after %.1f ms\n", i, i % NKIND,
               zipage_strerror((int)msg[1]), dt);
        CHECKF((int)msg[1] == ZIPAGE_E_ENGINE_GONE, "client %d: error %d", i, (int)msg[1]);
        CHECKF(dt < 100, "client %d: %.1f ms", i, dt);
        int st;
        REQUIRE(waitpid(kids[i], &st, 0) == kids[i]);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d status %d", i, st);
    }
    /* a killed engine leaves its object behind; the next engine replaces it */
    char path[80];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    CHECK(access(path, F_OK) == 0);
    eng = ipct_engine(name, sets, 0);
    zipage_client *c = ipct_connect(name);
    char out[16];
    zipage_event fin;
    CHECK(c && ipct_generate(c, "again", 10, out, sizeof out, &fin) == 0 && fin.text_len == 5);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
    CHECK(access(path, F_OK) != 0);
    return test_done("ipc_gone");
}
