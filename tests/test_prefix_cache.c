/* test_prefix_cache: requests that share a long prompt prefix share its KV blocks (hits
 * reported), produce exactly the outputs of a run with the cache off, and blocks shared by
 * several requests are never written (their K/V checksums never change while shared, and
 * the engine asserts on any write to a block with ref > 1). Freed blocks keep their hash and
 * are revived by a later identical prefix. */
#include "tests/harness.h"

#define N 10

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 99;
    int32_t prefix[100];
    for (int i = 0; i < 100; i++) prefix[i] = (int32_t)(test_rand_u64(&rng) % 290);
    for (int i = 0; i < N; i++) {
        th_random_req(&reqs[i], &rng, 100 + 1 + i * 3, 12, i % 2);
        memcpy(reqs[i].prompt, prefix, sizeof prefix); /* 6 full blocks of 16 shared */
        reqs[i].rq.user_tag = (uint64_t)i;
    }
    th off, on;
    th_open(&off, N, "enable_prefix_caching=false", NULL);
    th_open(&on, N, "enable_prefix_caching=true", NULL);
    uint64_t id;
    for (int i = 0; i < N; i++) REQUIRE(engine_submit(off.e, &reqs[i].rq, &id) == 0);
    th_drain(&off, 1);

    /* first request alone fills the cache; then the rest run concurrently */
    REQUIRE(engine_submit(on.e, &reqs[0].rq, &id) == 0);
    th_drain(&on, 1);
    for (int i = 1; i < N; i++) REQUIRE(engine_submit(on.e, &reqs[i].rq, &id) == 0);
    engine_stats st;
    int max_ref, checked;
    th_drain_watch_shared(&on, &max_ref, &checked);
    engine_get_stats(on.e, &st);
    double rate = (double)st.prefix_hit_tokens / (double)st.prefix_query_tokens;
    printf("prefix hit rate %.3f (%lld of %lld tokens), max ref count %d, %d shared-block checks\n",
           rate, (long long)st.prefix_hit_tokens, (long long)st.prefix_query_tokens, max_ref, checked);
    CHECK(st.prefix_hit_tokens >= (N - 1) * 96);
    CHECK(max_ref >= 3 && checked > 0);
    for (int i = 0; i < N; i++) {
        CHECKF(th_same(&off.out[i], &on.out[i]), "request %d differs with the prefix cache", i);
        if (i > 0) CHECKF(on.out[i].usage.cached_prompt_tokens == 96, "request %d cached %d", i,
                          on.out[i].usage.cached_prompt_tokens);
    }
    /* all requests finished: blocks are free but keep their hashes; a new request revives them */
    CHECK(st.blocks_used == 0);
    int64_t hits_before = st.prefix_hit_tokens;
    REQUIRE(engine_submit(on.e, &reqs[3].rq, &id) == 0);
    on.out[3].finals = 0, on.out[3].n = 0;
    th_drain(&on, 1);
    engine_get_stats(on.e, &st);
    CHECKF(st.prefix_hit_tokens - hits_before == 96, "revival hit %lld tokens",
           (long long)(st.prefix_hit_tokens - hits_before));
    CHECK(th_same(&off.out[3], &on.out[3]));
    th_close(&off);
    th_close(&on);
    th_model_remove();
    return test_done("prefix_cache");
}
