/* Overload: submissions far beyond the quotas get backpressure errors at once (ZIPAGE_E_BUSY
 * from submit when the ring or payload area is full, FINAL errors with ZIPAGE_E_BUSY beyond
 * max_inflight_per_client), never a silent drop: every accepted submission gets exactly one
 * FINAL, and those the engine ran are correct. Also: no free slot -> ZIPAGE_E_FULL. */
#include "tests/test_ipc_util.h"

#define N 3000

static uint64_t ids[N];
static int finals[N], lens[N];
static int nfinal, remote_busy, ran;

/* Accounts the FINAL events among ev[0..n): each must belong to an accepted submission;
 * those the engine ran must be complete echoes. */
static void take(const zipage_event *ev, int n) {
    for (int k = 0; k < n; k++) {
        if (ev[k].type != ZIPAGE_EV_FINAL) continue;
        uint64_t t = ev[k].user_tag;
        REQUIRE(t < N && ids[t] == ev[k].req_id);
        finals[t]++;
        nfinal++;
        if (ev[k].error == ZIPAGE_E_BUSY) {
            remote_busy++;
            continue;
        }
        CHECKF(ev[k].finish == ZIPAGE_FINISH_STOP && ev[k].completion_tokens == lens[t],
               "request %llu: finish %d error %d", (unsigned long long)t, ev[k].finish,
               ev[k].error);
        ran++;
    }
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "overload");
    const char *sets[] = {"max_clients=2", "max_inflight_per_client=4",
                          "payload_bytes_per_client=4096", NULL};
    pid_t eng = ipct_engine(name, sets, 50);
    zipage_client *c = ipct_connect(name), *c2 = ipct_connect(name), *c3 = NULL;
    REQUIRE(c && c2);
    CHECK(zipage_connect(&c3, name, NULL) == ZIPAGE_E_FULL && !c3);
    zipage_disconnect(c2);

    static char big[8192];
    memset(big, 'b', sizeof big);
    zipage_request r;
    zipage_request_default(&r);
    r.text = big;
    r.text_len = 5000;
    uint64_t id;
    CHECK(zipage_submit(c, &r, &id) == ZIPAGE_E_TOO_LARGE);

    int accepted = 0, local_busy = 0;
    unsigned long long seed = 9;
    for (int i = 0; i < N; i++) {
        lens[i] = 1 + (int)(test_rand_u64(&seed) % 400);
        zipage_request_default(&r);
        r.text = big;
        r.text_len = (size_t)lens[i];
        r.params.max_tokens = 400;
        r.user_tag = (uint64_t)i;
        int rc = zipage_submit(c, &r, &ids[i]);
        if (rc == 0)
            accepted++;
        else if (rc == ZIPAGE_E_BUSY) {
            local_busy++;
            ids[i] = 0;
        } else
            CHECKF(0, "submit %d: %s", i, zipage_last_error());
        if (i % 16 == 15) { /* read a little now and then, far slower than we submit */
            zipage_event ev[16];
            int n = zipage_poll(c, ev, 16);
            REQUIRE(n >= 0);
            take(ev, n);
        }
    }
    while (zipage_inflight(c) > 0) { /* drain: everything accepted must end */
        zipage_event ev[64];
        int n = zipage_wait(c, ev, 64, 5000);
        REQUIRE(n > 0);
        take(ev, n);
    }
    printf("%d submitted: %d accepted (%d ran, %d refused by the engine), %d refused by the ring\n",
           N, accepted, ran, remote_busy, local_busy);
    CHECK(nfinal == accepted && ran + remote_busy == accepted);
    for (int i = 0; i < N; i++)
        CHECKF(finals[i] == (ids[i] ? 1 : 0), "request %d: %d finals", i, finals[i]);
    CHECK(local_busy > 0 && remote_busy > 0 && ran >= 4);
    zipage_event ev[4];
    CHECK(zipage_wait(c, ev, 4, 50) == ZIPAGE_E_TIMEOUT);
    CHECK(ipct_wait_idle(c, 1, 2000) >= 0);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
    return test_done("ipc_overload");
}
