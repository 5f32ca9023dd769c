/* test_batch_invariance: a request's completion (ids and logprobs, bit for bit) is the same
 * whether it runs alone or among 64 others with random arrival steps, prompt lengths (1 to
 * several blocks), max_tokens, greedy or seeded sampling; with invariants checked every step. */
#include "tests/harness.h"

#define N 65

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 7;
    int arrival[N];
    for (int i = 0; i < N; i++) {
        th_random_req(&reqs[i], &rng, 1 + (int)(test_rand_u64(&rng) % 70),
                      1 + (int)(test_rand_u64(&rng) % 40), i % 2);
        reqs[i].rq.user_tag = (uint64_t)i;
        arrival[i] = (int)(test_rand_u64(&rng) % 60);
    }
    th alone;
    th_open(&alone, N, "max_num_batched_tokens=64", NULL);
    th_run_alone(&alone, reqs, N);
    th mixed;
    th_open(&mixed, N, "max_num_batched_tokens=64", "max_num_seqs=32", NULL);
    th_run_arrivals(&mixed, reqs, N, arrival);
    int same = 0;
    for (int i = 0; i < N; i++) {
        CHECKF(alone.out[i].finals == 1 && mixed.out[i].finals == 1, "request %d terminal events", i);
        CHECKF(alone.out[i].n == reqs[i].rq.sp.max_tokens, "request %d: %d tokens", i, alone.out[i].n);
        int s = th_same(&alone.out[i], &mixed.out[i]);
        CHECKF(s, "request %d (prompt %d, %s) differs alone vs batched", i, reqs[i].rq.n_prompt,
               i % 2 ? "sampled" : "greedy");
        same += s;
    }
    engine_stats st;
    engine_get_stats(mixed.e, &st);
    printf("%d/%d requests identical; batched run: %lld steps, peak %d blocks\n", same, N,
           (long long)st.steps, st.blocks_peak);
    CHECK(st.blocks_used == 0);
    th_close(&alone);
    th_close(&mixed);
    th_model_remove();
    return test_done("batch_invariance");
}
