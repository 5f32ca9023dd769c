/* test_compress_hybrid: with fewer query-cache slots than running requests (hybrid
 * scheduling), more requests run at once than there are slots, requests wait for a slot
 * when they need one, no compressed request is ever preempted (the engine asserts it and
 * the invariant check verifies budgets), and every output equals the request run alone.
 * With hybrid_scheduling=false on the same workload: a compressing request is admitted only
 * with a free slot, so no more run at once than there are slots, none is preempted (the plan
 * gives every slot holder its M+1 blocks), and every output again equals the run alone. */
#include "tests/harness.h"

#define N 16

/* Runs reqs on an open engine step by step, checking its invariants; the most requests
 * running at once, and the final stats in *st. */
static int run_all(th *t, th_req *reqs, engine_stats *st) {
    int max_running = 0;
    for (int i = 0; i < N; i++) {
        uint64_t id;
        REQUIRE(engine_submit(t->e, &reqs[i].rq, &id) == 0);
    }
    for (;;) {
        int left = engine_step(t->e);
        REQUIRE(left >= 0);
        int rc = engine_check(t->e);
        CHECKF(rc == 0, "%s", err_msg());
        if (rc) return -1;
        engine_get_stats(t->e, st);
        if (st->running > max_running) max_running = st->running;
        if (left == 0) break;
    }
    return max_running;
}

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 23;
    for (int i = 0; i < N; i++)
        th_random_req(&reqs[i], &rng, 5 + (int)(test_rand_u64(&rng) % 30),
                      20 + (int)(test_rand_u64(&rng) % 100), i % 2);
    /* 30 blocks in the pool, slot holders planned at (M+1)=3 blocks each; 12 may run */
    const char *cfg[] = {"compress=true",     "max_cache_blocks_per_seq=2",
                         "query_cache_len=4", "num_kv_blocks=30",
                         "max_num_seqs=12",   "max_num_batched_tokens=64"};
    th alone, hy, slot;
    th_open(&alone, N, cfg[0], cfg[1], cfg[2], NULL);
    th_run_alone(&alone, reqs, N);
    th_open(&hy, N, cfg[0], cfg[1], cfg[2], cfg[3], cfg[4], cfg[5], NULL);
    engine_stats st;
    engine_get_stats(hy.e, &st);
    int slots = st.max_concurrency, max_running = run_all(&hy, reqs, &st);
    if (max_running < 0) return 1;
    printf("hybrid: slots %d, most running at once %d, preemptions %lld, compressions %lld\n",
           slots, max_running, (long long)st.preemptions, (long long)st.compressions);
    CHECK(slots >= 1 && slots < 12);
    CHECK(max_running > slots);
    CHECK(st.compressions > 0);
    for (int i = 0; i < N; i++) {
        CHECKF(hy.out[i].finals == 1, "request %d terminal events %d", i, hy.out[i].finals);
        CHECKF(th_same(&alone.out[i], &hy.out[i]), "request %d differs under hybrid scheduling", i);
    }

    th_open(&slot, N, cfg[0], cfg[1], cfg[2], cfg[3], cfg[4], cfg[5], "hybrid_scheduling=false",
            NULL);
    engine_get_stats(slot.e, &st);
    CHECK(st.max_concurrency == slots);
    max_running = run_all(&slot, reqs, &st);
    if (max_running < 0) return 1;
    printf("slot holders only: most running at once %d, preemptions %lld, compressions %lld\n",
           max_running, (long long)st.preemptions, (long long)st.compressions);
    CHECKF(max_running == slots, "%d running at once with %d slots", max_running, slots);
    CHECKF(st.preemptions == 0, "%lld preemptions", (long long)st.preemptions);
    CHECK(st.compressions > 0);
    for (int i = 0; i < N; i++) {
        CHECKF(slot.out[i].finals == 1, "request %d terminal events %d", i, slot.out[i].finals);
        CHECKF(th_same(&alone.out[i], &slot.out[i]),
               "request %d differs with hybrid_scheduling=false", i);
    }
    th_close(&alone);
    th_close(&hy);
    th_close(&slot);
    th_model_remove();
    return test_done("compress_hybrid");
}
