/* test_compress_invariance: with compression on (block_size 16, M 2, qcl 4, so most
 * requests compress several times), a request's completion (ids and logprobs, bit for bit)
 * is the same alone or among 40 others with random arrivals, prompt lengths (1 to 150,
 * some longer than the budget, compressed right after prefill) and token budgets; invariants
 * hold after every step. Run for both compress_after_prefill settings, and for the eviction
 * baselines (random: its seed comes from the request, not the batch), which must change some
 * completions against score eviction. */
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
    static const char *runs[][2] = {{"compress_after_prefill=false", "eviction=score"},
                                    {"compress_after_prefill=true", "eviction=score"},
                                    {"compress_after_prefill=true", "eviction=streaming"},
                                    {"compress_after_prefill=true", "eviction=random"}};
    static th_out score[N];
    for (int v = 0; v < 4; v++) {
        const char *capset = runs[v][0], *evict = runs[v][1];
        th alone, mixed;
        th_open(&alone, N, "compress=true", "max_cache_blocks_per_seq=2", "query_cache_len=4",
                capset, evict, NULL);
        th_run_alone(&alone, reqs, N);
        th_open(&mixed, N, "compress=true", "max_cache_blocks_per_seq=2", "query_cache_len=4",
                "max_num_batched_tokens=50", "max_num_seqs=16", capset, evict, NULL);
        th_run_arrivals(&mixed, reqs, N, arrival);
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
        int changed = 0;
        for (int i = 0; i < N && v >= 2; i++)
            changed += !th_same(&alone.out[i], &score[i]);
        printf("%s %s: %d/%d identical, %d requests compressed, %lld compressions, %lld "
               "preemptions, %d differ from score eviction\n",
               capset, evict, same, N, compressed, (long long)st.compressions,
               (long long)st.preemptions, changed);
        if (v == 1) memcpy(score, alone.out, sizeof score);
        CHECK(v < 2 || changed > 0);
        CHECK(compressed >= N / 2);
        CHECK(st.blocks_used == 0);
        th_close(&alone);
        th_close(&mixed);
    }
    th_model_remove();
    return test_done("compress_invariance");
}
