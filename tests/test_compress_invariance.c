/* test_compress_invariance: with compression on (block_size 16, M 2, qcl 4, so most
 * requests compress several times), a request's completion (ids and logprobs, bit for bit)
 * is the same alone or among 40 others with random arrivals, prompt lengths (1 to 150,
 * some longer than the budget, compressed right after prefill) and token budgets; invariants
 * hold after every step. Run for both compress_after_prefill settings. */
#include "tests/harness.h"

#define N 40

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 17;
    int arrival[N];
    for (int i = 0; i < N; i++) {
        th_random_req(&reqs[i], &rng, 1 + (int)(test_rand_u64(&rng) % 150),
                      1 + (int)(test_rand_u64(&rng) % 90), i % 2);
        arrival[i] = (int)(test_rand_u64(&rng) % 50);
    }
    for (int cap = 0; cap < 2; cap++) {
        const char *capset = cap ? "compress_after_prefill=true" : "compress_after_prefill=false";
        th alone, mixed;
        th_open(&alone, N, "compress=true", "max_cache_blocks_per_seq=2", "query_cache_len=4",
                capset, NULL);
        for (int i = 0; i < N; i++) {
            uint64_t id;
            reqs[i].rq.user_tag = (uint64_t)i;
            REQUIRE(engine_submit(alone.e, &reqs[i].rq, &id) == 0);
            th_drain(&alone, 0);
        }
        th_open(&mixed, N, "compress=true", "max_cache_blocks_per_seq=2", "query_cache_len=4",
                "max_num_batched_tokens=50", "max_num_seqs=16", capset, NULL);
        int submitted = 0;
        for (int step = 0; submitted < N || engine_step(mixed.e) > 0; step++) {
            for (int i = 0; i < N; i++)
                if (arrival[i] == step) {
                    uint64_t id;
                    REQUIRE(engine_submit(mixed.e, &reqs[i].rq, &id) == 0);
                    submitted++;
                }
            if (submitted < N) REQUIRE(engine_step(mixed.e) >= 0);
            int rc = engine_check(mixed.e);
            CHECKF(rc == 0, "%s", err_msg());
            if (rc) return 1;
            REQUIRE(step < 100000);
        }
        int same = 0, compressed = 0;
        for (int i = 0; i < N; i++) {
            int s = th_same(&alone.out[i], &mixed.out[i]);
            CHECKF(s, "%s: request %d (prompt %d) differs alone vs batched", capset, i,
                   reqs[i].rq.n_prompt);
            same += s;
            compressed += alone.out[i].usage.compressions > 0;
            CHECK(alone.out[i].usage.compressions == mixed.out[i].usage.compressions);
            CHECK(alone.out[i].usage.kv_blocks_peak <= 3 || reqs[i].rq.n_prompt > 48);
        }
        engine_stats st;
        engine_get_stats(mixed.e, &st);
        printf("%s: %d/%d identical, %d requests compressed, %lld compressions, %lld preemptions\n",
               capset, same, N, compressed, (long long)st.compressions, (long long)st.preemptions);
        CHECK(compressed >= N / 2);
        CHECK(st.blocks_used == 0);
        th_close(&alone);
        th_close(&mixed);
    }
    th_model_remove();
    return test_done("compress_invariance");
}
