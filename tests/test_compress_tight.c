/* test_compress_tight: compression, hybrid slots and preemption together under pools of 6 to
 * 13 blocks (budget 4+1 blocks, 6 seats), 10 random workloads with staggered arrivals: every
 * invariant holds after every step, a preemption victim that was already scheduled in the
 * same step leaves the batch (the engine asserts no preempted request is computed), and every
 * output equals the request run alone. */
#include "tests/harness.h"

#define N 12

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    int64_t preemptions = 0, compressions = 0;
    for (unsigned long long seed = 0; seed < 10; seed++) {
        unsigned long long rng = seed;
        int arrival[N];
        for (int i = 0; i < N; i++) {
            th_random_req(&reqs[i], &rng, 2 + (int)(test_rand_u64(&rng) % 78),
                          20 + (int)(test_rand_u64(&rng) % 150), i % 2);
            arrival[i] = (int)(test_rand_u64(&rng) % 60);
        }
        char nb[64];
        snprintf(nb, sizeof nb, "num_kv_blocks=%d", 6 + (int)(seed % 8));
        th alone, tight;
        th_open(&alone, N, "compress=true", "max_cache_blocks_per_seq=4", "query_cache_len=4", NULL);
        th_run_alone(&alone, reqs, N);
        th_open(&tight, N, "compress=true", "max_cache_blocks_per_seq=4", "query_cache_len=4", nb,
                "max_num_seqs=6", "max_num_batched_tokens=32", NULL);
        th_run_arrivals(&tight, reqs, N, arrival);
        for (int i = 0; i < N; i++) {
            CHECKF(tight.out[i].finals == 1, "seed %llu request %d: %d terminal events", seed, i,
                   tight.out[i].finals);
            CHECKF(th_same(&alone.out[i], &tight.out[i]), "seed %llu request %d differs", seed, i);
        }
        engine_stats st;
        engine_get_stats(tight.e, &st);
        CHECK(st.blocks_used == 0);
        preemptions += st.preemptions;
        compressions += st.compressions;
        th_close(&alone);
        th_close(&tight);
    }
    printf("10 workloads: %lld preemptions, %lld compressions\n", (long long)preemptions,
           (long long)compressions);
    CHECK(preemptions > 0 && compressions > 0);
    th_model_remove();
    return test_done("compress_tight");
}
