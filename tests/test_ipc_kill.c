/* kill -9 of clients mid-stream, 200 times, while two well-behaved clients keep running
 * verified requests: the engine stays up, each dead client's slot is reclaimed (requests
 * cancelled, blocks freed) within 100 ms of its death, and the other clients' outputs are
 * unaffected. */
#include "tests/test_ipc_util.h"

#define KILLS 200
#define GOOD  2

/* Connects, starts long streams, reports the first token, then reads slowly until killed. */
static int victim(const char *name, int wfd, int n) {
    zipage_client *c = ipct_connect(name);
    if (!c) return 20;
    static char prompt[3000];
    memset(prompt, 'v', sizeof prompt);
    for (int i = 0; i < n; i++) {
        zipage_request r;
        zipage_request_default(&r);
        r.text = prompt;
        r.text_len = sizeof prompt;
        r.params.max_tokens = 3000;
        uint64_t id;
        if (zipage_submit(c, &r, &id)) return 21;
    }
    zipage_event ev[8];
    if (zipage_wait(c, ev, 8, 5000) < 1) return 22;
    (void)!write(wfd, "t", 1);
    while (zipage_wait(c, ev, 8, 1000) != ZIPAGE_E_ENGINE_GONE)
        usleep(100);
    return 23;
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "kill");
    const char *sets[] = {"max_clients=8", "max_inflight_per_client=4", NULL};
    pid_t eng = ipct_engine(name, sets, 200);
    volatile int *stop_flag = ipct_shared_flags();
    pid_t good[GOOD];
    for (int i = 0; i < GOOD; i++) /* the pause leaves the 2-core CI machine some room */
        good[i] = ipct_good_client(name, i, stop_flag, -1, 200);
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);
    unsigned long long seed = 5;
    double worst = 0, total = 0, worst_exit = 0;
    int slow = 0;
    for (int k = 0; k < KILLS; k++) {
        int pfd[2];
        REQUIRE(pipe(pfd) == 0);
        pid_t v = ipct_fork(SIGKILL);
        if (!v) {
            close(pfd[0]);
            _exit(victim(name, pfd[1], 1 + (int)(test_rand_u64(&seed) % 4)));
        }
        close(pfd[1]);
        char ch;
        struct pollfd p = {pfd[0], POLLIN, 0};
        CHECKF(poll(&p, 1, 10000) == 1 && read(pfd[0], &ch, 1) == 1, "victim %d never streamed", k);
        close(pfd[0]);
        usleep((useconds_t)(test_rand_u64(&seed) % 3000)); /* somewhere mid-stream */
        double tk = ipct_ms();
        kill(v, SIGKILL);
        REQUIRE(waitpid(v, NULL, 0) == v);
        /* from the moment the process is dead (its pidfd fires at the same time as waitpid):
         * what the kernel spends tearing it down is not the engine's to shorten */
        double t0 = ipct_ms();
        if (t0 - tk > worst_exit) worst_exit = t0 - tk;
        /* reclaimed: back to the good clients + this one */
        double dt = -1;
        for (;;) {
            zipage_stats s;
            REQUIRE(zipage_get_stats(c, &s) == 0);
            if (s.clients == GOOD + 1) {
                dt = ipct_ms() - t0;
                break;
            }
            if (ipct_ms() - t0 > 2000) break;
            usleep(500);
        }
        CHECKF(dt >= 0, "victim %d: slot not reclaimed", k);
        if (dt > worst) worst = dt;
        total += dt;
        slow += dt > 100;
    }
    printf(
        "%d kills: reclaim after death mean %.1f ms, worst %.1f ms; kill -> dead worst %.1f ms\n",
        KILLS, total / KILLS, worst, worst_exit);
    /* The bound is 100 ms; on a loaded 2-core machine the engine process itself is sometimes
     * not scheduled for tens of ms (seen: 60 ms gaps between its loop iterations), so allow
     * 1% of the kills to miss it, but none by more than a second. */
    CHECKF(slow <= KILLS / 100 && worst < 1000, "%d reclaims over 100 ms (worst %.1f ms)", slow,
           worst);
    *stop_flag = 1;
    for (int i = 0; i < GOOD; i++) {
        int st;
        REQUIRE(waitpid(good[i], &st, 0) == good[i]);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "good client %d status %d", i, st);
    }
    CHECK(ipct_wait_idle(c, 1, 2000) >= 0);
    zipage_stats s;
    CHECK(zipage_get_stats(c, &s) == 0);
    CHECKF(s.client_deaths == KILLS && s.protocol_errors == 0, "deaths %lld protocol errors %lld",
           (long long)s.client_deaths, (long long)s.protocol_errors);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
    return test_done("ipc_kill");
}
