/* test_ipc_util: shared helpers of the IPC tests (header-only; not a test itself).
 * ipct_engine() forks a child that serves an echo engine under a unique object name (the
 * child runs the same engine-side code as `zipage serve --echo`, under ASan); clients are
 * the test process or its forked children. Every helper cleans up /dev/shm on its way out. */
#ifndef ZP_TEST_IPC_UTIL_H
#define ZP_TEST_IPC_UTIL_H

#include "arena/arena.h"
#include "arena/err.h"
#include "engine/conf.h"
#include "ipc/echo.h"
#include "ipc/server.h"
#include "ipc/zipage.h"
#include "tests/testlib.h"

#include <errno.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static ipc_server *ipct_srv;
static void ipct_on_term(int sig) {
    ipc_server_stop(ipct_srv, IPC_STOP_FINISH);
}

/* fork() for test children: a child dies with the test (signal sig), so a failing test never
 * leaves an engine or a client behind holding /dev/shm. */
static inline pid_t ipct_fork(int sig) {
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) prctl(PR_SET_PDEATHSIG, sig);
    return pid;
}

/* A unique object name for this test run. */
static inline void ipct_name(char *buf, size_t cap, const char *tag) {
    snprintf(buf, cap, "zpt-%s-%d", tag, (int)getpid());
}

static inline double ipct_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Forks an echo engine serving NAME with the given `key=value` overrides (NULL-terminated)
 * and waits until it is ready; hook (may be NULL) may replace some of its ops first. Returns
 * its pid. SIGTERM stops it (exit 0 after a drain). */
static inline pid_t ipct_engine_with(const char *name, const char *const *sets, int step_us,
                                     void (*hook)(ipc_engine_ops *ops)) {
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t pid = ipct_fork(SIGTERM); /* SIGTERM: drain and remove the object */
    if (pid == 0) {
        close(pfd[0]);
        conf cf;
        conf_defaults(&cf);
        char nm[300];
        snprintf(nm, sizeof nm, "ipc_name=%s", name);
        int rc = conf_set(&cf, nm, "test");
        for (int i = 0; !rc && sets && sets[i]; i++)
            rc = conf_set(&cf, sets[i], "test");
        ipc_server_config ic;
        arena a = {0};
        if (!rc) rc = ipc_server_config_from_conf(&ic, &cf);
        if (!rc) rc = arena_init(&a, "test engine", 512u << 20);
        ipc_server *s = NULL;
        if (!rc) rc = ipc_server_create(&s, &a, &ic);
        echo *e = NULL;
        echo_config ec = {(int32_t)(cf.max_clients * cf.max_inflight_per_client), 4096, step_us};
        if (!rc) rc = echo_create(&e, &a, &ec, ipc_server_on_event, s);
        ipc_engine_ops ops;
        if (!rc) {
            echo_ops(e, &ops);
            if (hook) hook(&ops);
            ipc_model_info info = {"echo", "echo", 256, 4096, ec.max_requests, 1024, 16};
            rc = ipc_server_start(s, &a, &ops, &info);
        }
        if (rc) {
            fprintf(stderr, "test engine: %s\n", err_msg());
            _exit(3);
        }
        ipct_srv = s;
        signal(SIGTERM, ipct_on_term);
        arena_freeze(&a);
        (void)!write(pfd[1], "r", 1);
        close(pfd[1]);
        rc = ipc_server_run(s);
        signal(SIGTERM, SIG_IGN); /* the server is going away */
        if (rc) fprintf(stderr, "test engine: run: %s\n", err_msg());
        ipc_server_destroy(s);
        unsigned viol = a.violations;
        arena_release(&a);
        exit(rc || viol ? 4 : 0);
    }
    close(pfd[1]);
    struct pollfd p = {pfd[0], POLLIN, 0};
    char ch = 0;
    REQUIRE(poll(&p, 1, 20000) == 1 && read(pfd[0], &ch, 1) == 1 && ch == 'r');
    close(pfd[0]);
    return pid;
}

static inline pid_t ipct_engine(const char *name, const char *const *sets, int step_us) {
    return ipct_engine_with(name, sets, step_us, NULL);
}

/* SIGTERMs the engine and returns its exit status (0 = clean drain), or -1 if it crashed. */
static inline int ipct_stop(pid_t pid, const char *name) {
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    char path[300];
    snprintf(path, sizeof path, "/%s", name);
    shm_unlink(path); /* no-op after a clean stop */
    if (WIFSIGNALED(st)) fprintf(stderr, "engine killed by signal %d\n", WTERMSIG(st));
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline zipage_client *ipct_connect(const char *name) {
    zipage_client *c = NULL;
    int rc = zipage_connect(&c, name, NULL);
    if (rc) fprintf(stderr, "connect %s: %s: %s\n", name, zipage_strerror(rc), zipage_last_error());
    return c;
}

/* Runs one request to completion through zipage_generate; returns the FINAL event. */
static inline int ipct_generate(zipage_client *c, const char *text, int max_tokens, char *out,
                                size_t cap, zipage_event *fin) {
    zipage_request r;
    zipage_request_default(&r);
    r.text = text;
    r.text_len = strlen(text);
    r.params.max_tokens = max_tokens;
    r.out_text = out;
    r.out_text_cap = cap;
    return zipage_generate(c, &r, fin, 10000);
}

/* Polls the engine's published stats until `clients` and nothing in flight; returns the
 * milliseconds it took, or -1 after timeout_ms. */
static inline double ipct_wait_idle(zipage_client *c, int clients, double timeout_ms) {
    double t0 = ipct_ms();
    for (;;) {
        zipage_stats s;
        if (zipage_get_stats(c, &s)) return -1;
        if (s.clients == clients && s.inflight == 0 && s.running == 0 && s.blocks_used == 0)
            return ipct_ms() - t0;
        if (ipct_ms() - t0 > timeout_ms) {
            fprintf(stderr, "not idle: clients %d inflight %d running %d blocks_used %d\n",
                    s.clients, s.inflight, s.running, s.blocks_used);
            return -1;
        }
        usleep(200);
    }
}

/* One request of random bytes (1-80) to an echo engine: 0 when it came back whole with
 * finish STOP, else 1 after printing what went wrong, prefixed with `label who`. */
static inline int ipct_echo_once(zipage_client *c, unsigned long long *seed, int timeout_ms,
                                 const char *label, int who) {
    char prompt[80], out[80];
    int len = 1 + (int)(test_rand_u64(seed) % sizeof prompt);
    for (int i = 0; i < len; i++)
        prompt[i] = (char)(test_rand_u64(seed) & 0xff);
    zipage_request r;
    zipage_request_default(&r);
    r.text = prompt;
    r.text_len = (size_t)len;
    r.out_text = out;
    r.out_text_cap = sizeof out;
    zipage_event fin;
    int rc = zipage_generate(c, &r, &fin, timeout_ms);
    if (!rc && fin.finish == ZIPAGE_FINISH_STOP && fin.text_len == (size_t)len &&
        !memcmp(out, prompt, (size_t)len))
        return 0;
    fprintf(stderr, "%s %d (slot %d): request lost or wrong: rc %d (%s), finish %d, len %zu/%d\n",
            label, who, zipage_slot(c), rc, rc ? zipage_last_error() : "ok", rc ? -1 : fin.finish,
            rc ? (size_t)0 : fin.text_len, len);
    return 1;
}

/* Forks a well-behaved client that runs verified echo requests (random bytes, collected with
 * zipage_generate) until *stop becomes nonzero, pausing pause_us between requests. It writes
 * one byte to wfd once connected (wfd < 0: none). Exit status 0 when every output was right. */
static inline pid_t ipct_good_client(const char *name, int who, volatile int *stop, int wfd,
                                     int pause_us) {
    pid_t pid = ipct_fork(SIGKILL);
    if (pid) return pid;
    zipage_client *c = ipct_connect(name);
    if (!c) _exit(10);
    if (wfd >= 0) (void)!write(wfd, "c", 1);
    unsigned long long seed = 300 + (unsigned long long)who;
    int bad = 0, done = 0;
    while (!*stop) {
        bad += ipct_echo_once(c, &seed, 20000, "good client", who);
        done++;
        if (pause_us) usleep((useconds_t)pause_us);
    }
    zipage_disconnect(c);
    fprintf(stderr, "good client %d: %d requests, %d bad\n", who, done, bad);
    _exit(bad || !done ? 11 : 0);
}

/* A page of MAP_SHARED memory for flags shared with forked children. */
static inline volatile int *ipct_shared_flags(void) {
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    return m;
}

#endif
