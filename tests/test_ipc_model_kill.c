/* test_ipc_model_kill: kill -9 of 200 clients in the middle of streaming from a real model
 * (`zipage serve`, CPU backend, compression on): the engine stays up, every request of the
 * dead clients is cancelled and every KV block, query slot and client slot comes back (stats
 * idle at the end), and two well-behaved clients running meanwhile get exactly the outputs
 * the engine gives those requests in-process. */
#include "tests/ipc_model.h"

#define NGOOD 2
#define NKILL 200
#define NREF 64

static th_req reqs[NREF];

static pid_t good_client(const char *name, int who, volatile int *stop, const th *ref) {
    pid_t pid = ipct_fork(SIGKILL);
    if (pid) return pid;
    zipage_client *c = ipct_connect(name);
    if (!c) _exit(10);
    static int32_t out[TH_MAX_OUT];
    int bad = 0, done = 0;
    for (int k = who; !*stop; k = (k + NGOOD) % NREF) {
        uint64_t id;
        if (ipcm_submit(c, &reqs[k], out, TH_MAX_OUT, 0, false, &id)) {
            fprintf(stderr, "good client %d: submit: %s\n", who, zipage_last_error());
            _exit(11);
        }
        zipage_event ev;
        int n;
        while ((n = zipage_wait(c, &ev, 1, 20000)) == 0) {}
        if (n < 0 || ev.type != ZIPAGE_EV_FINAL || (int)ev.n_ids != ref->out[k].n ||
            memcmp(out, ref->out[k].tok, sizeof(int32_t) * (size_t)ref->out[k].n)) {
            fprintf(stderr, "good client %d: request %d wrong (n %d)\n", who, k, n);
            bad++;
        }
        done++;
    }
    zipage_disconnect(c);
    fprintf(stderr, "good client %d: %d requests, %d bad\n", who, done, bad);
    _exit(bad ? 12 : 0);
}

/* Streams two long requests and tells the parent after its first token; then waits. */
static pid_t victim(const char *name, int who, int wfd) {
    pid_t pid = ipct_fork(SIGKILL);
    if (pid) return pid;
    zipage_client *c = ipct_connect(name);
    if (!c) _exit(10);
    static int32_t out[TH_MAX_OUT];
    for (int j = 0; j < 2; j++) {
        th_req q = reqs[(who + j) % NREF];
        q.rq.prompt_ids = q.prompt;
        q.rq.sp.max_tokens = 150;
        uint64_t id;
        if (ipcm_submit(c, &q, out, TH_MAX_OUT, (uint64_t)j, true, &id)) _exit(11);
    }
    bool told = false;
    for (;;) {
        zipage_event ev[8];
        int n = zipage_wait(c, ev, 8, 20000);
        if (n < 0) _exit(12);
        if (n > 0 && !told) {
            (void)!write(wfd, "t", 1);
            told = true;
        }
    }
}

int main(void) {
    th_model(NULL);
    ipcm_match_tokenizer();
    unsigned long long rng = 5;
    for (int i = 0; i < NREF; i++)
        th_random_req(&reqs[i], &rng, 1 + (int)(test_rand_u64(&rng) % 50),
                      1 + (int)(test_rand_u64(&rng) % 40), i % 2);
    th ref;
    th_open(&ref, NREF, IPCM_SETS, NULL);
    th_run_all(&ref, reqs, NREF, 0);
    char name[64];
    ipct_name(name, sizeof name, "mkill");
    pid_t eng = ipcm_serve(name, NULL);
    volatile int *stop = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(stop != MAP_FAILED);
    pid_t good[NGOOD];
    for (int i = 0; i < NGOOD; i++) good[i] = good_client(name, i, stop, &ref);
    int killed_mid = 0;
    double t0 = ipct_ms();
    for (int k = 0; k < NKILL; k++) {
        int pfd[2];
        REQUIRE(pipe(pfd) == 0);
        pid_t v = victim(name, k, pfd[1]);
        close(pfd[1]);
        struct pollfd p = {pfd[0], POLLIN, 0};
        char ch;
        if (poll(&p, 1, 20000) == 1 && read(pfd[0], &ch, 1) == 1) killed_mid++;
        close(pfd[0]);
        kill(v, SIGKILL);
        REQUIRE(waitpid(v, NULL, 0) == v);
    }
    printf("%d clients killed mid-stream (%d after their first token) in %.0f ms\n", NKILL,
           killed_mid, ipct_ms() - t0);
    CHECK(killed_mid == NKILL);
    *stop = 1;
    for (int i = 0; i < NGOOD; i++) {
        int st;
        REQUIRE(waitpid(good[i], &st, 0) == good[i]);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "good client %d status %d", i, st);
    }
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);
    CHECK(ipct_wait_idle(c, 1, 5000) >= 0);
    zipage_stats s;
    CHECK(zipage_get_stats(c, &s) == 0);
    CHECKF(s.client_deaths >= NKILL, "client deaths %lld", (long long)s.client_deaths);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
    th_close(&ref);
    th_model_remove();
    return test_done("ipc_model_kill");
}
