/* 16 client processes x 200 requests each against one echo engine: every output is the
 * expected echo (prompt capped by max_tokens, finish stop/length), every request gets
 * exactly one FINAL, and the engine ends idle with every request counted. */
#include "tests/test_ipc_util.h"

#define NPROC  16
#define NREQ   200
#define WINDOW 8

typedef struct pending {
    uint64_t id;
    unsigned char prompt[300];
    int len, max_tokens, got, finals;
    bool stream;
    char out[300];
    int32_t ids[300];
} pending;

static int client(const char *name, int who) {
    zipage_client *c = ipct_connect(name);
    if (!c) return 10;
    unsigned long long seed = 1000 + (unsigned long long)who;
    static pending p[WINDOW];
    int submitted = 0, done = 0, bad = 0;
    memset(p, 0, sizeof p);
    while (done < NREQ) {
        for (int w = 0; w < WINDOW && submitted < NREQ; w++) {
            if (p[w].id) continue;
            pending *q = &p[w];
            q->len = 1 + (int)(test_rand_u64(&seed) % 300);
            for (int i = 0; i < q->len; i++)
                q->prompt[i] = (unsigned char)test_rand_u64(&seed);
            q->max_tokens = 1 + (int)(test_rand_u64(&seed) % 320);
            q->stream = test_rand_u64(&seed) & 1;
            q->got = q->finals = 0;
            zipage_request r;
            zipage_request_default(&r);
            r.text = (const char *)q->prompt;
            r.text_len = (size_t)q->len;
            r.params.max_tokens = q->max_tokens;
            r.stream = q->stream;
            r.out_text = q->out;
            r.out_text_cap = sizeof q->out;
            r.out_ids = q->ids;
            r.out_ids_cap = 300;
            r.user_tag = (uint64_t)w;
            int rc = zipage_submit(c, &r, &q->id);
            if (rc == ZIPAGE_E_BUSY) break;
            if (rc) {
                fprintf(stderr, "client %d: submit: %s\n", who, zipage_last_error());
                return 11;
            }
            submitted++;
        }
        zipage_event ev[32];
        int n = zipage_wait(c, ev, 32, 10000);
        if (n < 0) {
            fprintf(stderr, "client %d: wait: %s\n", who, zipage_last_error());
            return 12;
        }
        for (int i = 0; i < n; i++) {
            uint64_t w = ev[i].user_tag;
            if (w >= WINDOW || p[w].id != ev[i].req_id) {
                fprintf(stderr, "client %d: event for unknown request %llu type %d\n", who,
                        (unsigned long long)ev[i].req_id, ev[i].type);
                bad++;
                continue;
            }
            pending *q = &p[w];
            int want = q->len < q->max_tokens ? q->len : q->max_tokens;
            if (ev[i].type == ZIPAGE_EV_TOKEN) {
                if (!q->stream || q->got >= want || ev[i].text_len != 1 ||
                    (unsigned char)ev[i].text[0] != q->prompt[q->got] ||
                    ev[i].token != q->prompt[q->got]) {
                    fprintf(stderr, "client %d: bad token event (stream %d got %d want %d)\n", who,
                            q->stream, q->got, want);
                    bad++;
                }
                q->got++;
                continue;
            }
            if (!q->stream) {
                q->got = (int)ev[i].n_ids;
                if (ev[i].text_len != (size_t)want || memcmp(ev[i].text, q->prompt, (size_t)want))
                    bad++;
                for (int k = 0; k < want && k < (int)ev[i].n_ids; k++)
                    if (q->ids[k] != q->prompt[k]) bad++;
            }
            int fin = q->len <= q->max_tokens ? ZIPAGE_FINISH_STOP : ZIPAGE_FINISH_LENGTH;
            if (q->got != want || ev[i].finish != fin || ev[i].completion_tokens != want ||
                ev[i].prompt_tokens != q->len) {
                fprintf(stderr, "client %d: req %llu got %d want %d finish %d (%d) err %d %.*s\n",
                        who, (unsigned long long)q->id, q->got, want, ev[i].finish, fin,
                        ev[i].error, (int)ev[i].text_len, ev[i].text);
                bad++;
            }
            q->id = 0;
            done++;
        }
    }
    /* nothing more may arrive: every request had its one FINAL */
    zipage_event ev[4];
    if (zipage_wait(c, ev, 4, 50) != ZIPAGE_E_TIMEOUT) bad++;
    if (zipage_inflight(c) != 0) bad++;
    zipage_disconnect(c);
    if (bad) fprintf(stderr, "client %d: %d bad events\n", who, bad);
    return bad ? 13 : 0;
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "many");
    const char *sets[] = {"max_clients=17", "max_inflight_per_client=8", "spin_us=20", NULL};
    pid_t eng = ipct_engine(name, sets, 0);
    double t0 = ipct_ms();
    pid_t kids[NPROC];
    for (int i = 0; i < NPROC; i++) {
        kids[i] = ipct_fork(SIGKILL);
        if (kids[i] == 0) _exit(client(name, i));
    }
    for (int i = 0; i < NPROC; i++) {
        int st;
        REQUIRE(waitpid(kids[i], &st, 0) == kids[i]);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d status %d", i, st);
    }
    printf("%d clients x %d requests in %.0f ms\n", NPROC, NREQ, ipct_ms() - t0);
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);
    CHECK(ipct_wait_idle(c, 1, 2000) >= 0);
    usleep(20000); /* one more stats period so the counters include the last FINALs */
    zipage_stats s;
    CHECK(zipage_get_stats(c, &s) == 0);
    CHECKF(s.submitted == NPROC * NREQ && s.completed == NPROC * NREQ && s.rejected == 0,
           "submitted %lld completed %lld rejected %lld", (long long)s.submitted,
           (long long)s.completed, (long long)s.rejected);
    CHECKF(s.client_deaths == 0 && s.protocol_errors == 0, "deaths %lld protocol errors %lld",
           (long long)s.client_deaths, (long long)s.protocol_errors);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
    return test_done("ipc_many");
}
