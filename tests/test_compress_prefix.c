/* test_compress_prefix: prefix caching with compression. Requests sharing a long prompt
 * prefix share its blocks; when they compress, shared blocks are copied-on-write into fresh
 * targets and never written (checksums of every block with ref > 1 stay fixed while it is
 * shared), compressed requests register no hashes, and every output equals the run with
 * the prefix cache off. */
#include "tests/harness.h"

#define N 8

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 31;
    int32_t prefix[64];
    for (int i = 0; i < 64; i++) prefix[i] = (int32_t)(test_rand_u64(&rng) % 290);
    for (int i = 0; i < N; i++) {
        th_random_req(&reqs[i], &rng, 64 + 3 + i, 60 + 7 * i, i % 2);
        memcpy(reqs[i].prompt, prefix, sizeof prefix);
    }
    const char *c1 = "compress=true", *c2 = "max_cache_blocks_per_seq=4", *c3 = "query_cache_len=4";
    th off, on;
    th_open(&off, N, c1, c2, c3, "enable_prefix_caching=false", NULL);
    th_run_all(&off, reqs, N, 1);
    th_open(&on, N, c1, c2, c3, "enable_prefix_caching=true", NULL);
    uint64_t id;
    reqs[0].rq.user_tag = 0;
    REQUIRE(engine_submit(on.e, &reqs[0].rq, &id) == 0);
    /* let the first request prefill (registering 4 full prefix blocks), then bring the others
     * while it still runs; prompts stay under the budget so they compress in decode */
    for (int s = 0; s < 3; s++) REQUIRE(engine_step(on.e) >= 0);
    for (int i = 1; i < N; i++) {
        reqs[i].rq.user_tag = (uint64_t)i;
        REQUIRE(engine_submit(on.e, &reqs[i].rq, &id) == 0);
    }
    engine_stats st;
    int max_ref, checks;
    th_drain_watch_shared(&on, &max_ref, &checks);
    engine_get_stats(on.e, &st);
    printf("prefix hits %lld tokens, compressions %lld, max ref %d, %d shared-block checks\n",
           (long long)st.prefix_hit_tokens, (long long)st.compressions, max_ref, checks);
    CHECK(st.prefix_hit_tokens > 0 && st.compressions >= N && max_ref >= 3 && checks > 0);
    for (int i = 0; i < N; i++) {
        int d = 0;
        while (d < off.out[i].n && d < on.out[i].n && off.out[i].tok[d] == on.out[i].tok[d]) d++;
        CHECKF(th_same(&off.out[i], &on.out[i]),
               "request %d differs with the prefix cache (first at token %d of %d; prompt %d)", i, d,
               off.out[i].n, reqs[i].rq.n_prompt);
    }
    CHECK(st.blocks_used == 0);
    th_close(&off);
    th_close(&on);
    th_model_remove();
    return test_done("compress_prefix");
}
