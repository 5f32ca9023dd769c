/* test_preemption: under a deliberately tiny KV pool (heavy preemption by recompute) every
 * request still completes with exactly the output it has when run alone, every block and
 * reference is accounted for after every step, and at the end every block is free. */
#include "tests/harness.h"

#define N 24

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 11;
    for (int i = 0; i < N; i++) {
        th_random_req(&reqs[i], &rng, 5 + (int)(test_rand_u64(&rng) % 60),
                      20 + (int)(test_rand_u64(&rng) % 60), i % 3 == 0);
        reqs[i].rq.user_tag = (uint64_t)i;
    }
    th alone;
    th_open(&alone, N, NULL);
    th_run_alone(&alone, reqs, N);
    /* max_model_len 160 = 10 blocks: the pool holds one longest request and a little more */
    th tiny;
    th_open(&tiny, N, "num_kv_blocks=12", "max_model_len=160", "max_num_seqs=16",
            "max_num_batched_tokens=48", NULL);
    for (int i = 0; i < N; i++) {
        uint64_t id;
        REQUIRE(engine_submit(tiny.e, &reqs[i].rq, &id) == 0);
    }
    th_drain(&tiny, 1);
    engine_stats st;
    engine_get_stats(tiny.e, &st);
    printf("preemptions %lld, steps %lld, peak blocks %d of %d\n", (long long)st.preemptions,
           (long long)st.steps, st.blocks_peak, st.blocks_total);
    CHECK(st.preemptions > 0);
    CHECK(st.blocks_used == 0 && st.blocks_free == st.blocks_total);
    for (int i = 0; i < N; i++) {
        CHECKF(tiny.out[i].finals == 1, "request %d: %d terminal events", i, tiny.out[i].finals);
        CHECKF(th_same(&alone.out[i], &tiny.out[i]), "request %d differs under preemption", i);
    }
    th_close(&alone);
    th_close(&tiny);
    th_model_remove();
    return test_done("preemption");
}
