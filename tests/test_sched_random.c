/* test_sched_random: thousands of steps of random arrivals, cancellations (from outside and
 * from inside the output callback) and a small KV pool, with every engine invariant checked
 * after every step; every accepted request gets exactly one terminal event; at the end the
 * engine is idle with every block free. */
#include "tests/harness.h"

#define N 1200

static uint64_t ids[N];
static unsigned long long cb_rng = 5;

/* Cancels its own request now and then from inside the callback. */
static int cancel_in_callback(th *t, const engine_event *ev) {
    if (test_rand_u64(&cb_rng) % 97 == 0) REQUIRE(engine_cancel(t->e, ev->req_id) == 0);
    return 0;
}

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 2024;
    th t;
    th_open(&t, N, "num_kv_blocks=24", "max_model_len=128", "max_num_seqs=12",
            "max_num_batched_tokens=40", "max_waiting=64", NULL);
    t.on_token = cancel_in_callback;
    int submitted = 0, rejected = 0, cancelled = 0, steps = 0;
    while (submitted < N || engine_step(t.e) > 0) {
        int k = test_rand_u64(&rng) % 3 == 0 ? 1 + (int)(test_rand_u64(&rng) % 2) : 0;
        for (int j = 0; j < k && submitted < N; j++, submitted++) {
            th_random_req(&reqs[submitted], &rng, 1 + (int)(test_rand_u64(&rng) % 100),
                          1 + (int)(test_rand_u64(&rng) % 30), submitted % 2);
            reqs[submitted].rq.user_tag = (uint64_t)submitted;
            if (engine_submit(t.e, &reqs[submitted].rq, &ids[submitted])) {
                rejected++;
                t.out[submitted].finals = 1; /* never accepted: no event expected */
                ids[submitted] = 0;
            }
        }
        if (submitted > 0 && test_rand_u64(&rng) % 5 == 0) {
            int v = (int)(test_rand_u64(&rng) % (uint64_t)submitted);
            if (ids[v] && t.out[v].finals == 0) {
                REQUIRE(engine_cancel(t.e, ids[v]) == 0);
                cancelled++;
                CHECK(t.out[v].finals == 1 && t.out[v].fin == ENGINE_FINISH_CANCELLED);
            } else if (ids[v]) {
                CHECK(engine_cancel(t.e, ids[v]) == ZP_ENOTFOUND);
            }
        }
        REQUIRE(engine_step(t.e) >= 0);
        steps++;
        int rc = engine_check(t.e);
        CHECKF(rc == 0, "step %d: %s", steps, err_msg());
        if (rc) return 1;
        REQUIRE(steps < 200000);
    }
    int done_stop = 0, done_len = 0, done_cancel = 0;
    for (int i = 0; i < N; i++) {
        CHECKF(t.out[i].finals == 1, "request %d: %d terminal events", i, t.out[i].finals);
        done_stop += t.out[i].fin == ENGINE_FINISH_STOP;
        done_len += t.out[i].fin == ENGINE_FINISH_LENGTH;
        done_cancel += t.out[i].fin == ENGINE_FINISH_CANCELLED;
        if (t.out[i].fin == ENGINE_FINISH_LENGTH)
            CHECK(t.out[i].n == reqs[i].rq.sp.max_tokens ||
                  t.out[i].n + reqs[i].rq.n_prompt == 128);
    }
    engine_stats st;
    engine_get_stats(t.e, &st);
    printf("%d steps: %d length, %d stop, %d cancelled (%d from outside), %d rejected, "
           "%lld preemptions\n", steps, done_len, done_stop, done_cancel, cancelled, rejected,
           (long long)st.preemptions);
    CHECK(st.running == 0 && st.waiting == 0 && st.blocks_used == 0);
    CHECK(done_cancel > cancelled && cancelled > 0 && st.preemptions > 0 && steps >= 2000);
    th_close(&t);
    th_model_remove();
    return test_done("sched_random");
}
