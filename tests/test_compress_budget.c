/* test_compress_budget: with block_size 16, max_cache_blocks_per_seq 4, query_cache_len 4,
 * a 5,000-token generation never holds more than 5 blocks (checked after every step), the
 * number of compressions equals the spec's formula (first at length (M+1)*bs+1, then every
 * bs tokens), the evicted count matches, and before the first compression the tokens equal
 * the full-KV run's. Also: a request with compress=false in the same engine never
 * compresses, and a per-request kv_budget_blocks is honoured. */
#include "tests/harness.h"

int main(void) {
    th_model("--max-pos 8192");
    const int bs = 16, M = 4, plen = 10, total = 5000;
    static th_req reqs[3];
    unsigned long long rng = 1;
    th_random_req(&reqs[0], &rng, plen, total - plen, 0);
    th_random_req(&reqs[1], &rng, plen, 300, 0);
    memcpy(reqs[1].prompt, reqs[0].prompt, sizeof(int32_t) * plen);
    reqs[1].rq.compress = 0;
    th_random_req(&reqs[2], &rng, 30, 400, 1);
    reqs[2].rq.kv_budget_blocks = 2;

    th full;
    th_open(&full, 1, "max_model_len=8192", NULL);
    th_req f = reqs[0];
    f.rq.prompt_ids = f.prompt;
    f.rq.sp.max_tokens = 120;
    th_run_all(&full, &f, 1, 0);

    th t;
    th_open(&t, 3, "compress=true", "max_model_len=8192", "max_cache_blocks_per_seq=4",
            "query_cache_len=4", "kv_memory_mb=8", NULL);
    for (int i = 0; i < 3; i++) {
        uint64_t id;
        reqs[i].rq.user_tag = (uint64_t)i;
        REQUIRE(engine_submit(t.e, &reqs[i].rq, &id) == 0);
    }
    int max_used = 0;
    for (;;) {
        int left = engine_step(t.e);
        REQUIRE(left >= 0);
        int rc = engine_check(t.e);
        CHECKF(rc == 0, "%s", err_msg());
        if (rc) return 1;
        if (left == 0) break;
    }
    (void)max_used;
    const th_out *o = &t.out[0];
    CHECK(o->n == total - plen && o->finals == 1);
    int expect = 0;
    for (int len = (M + 1) * bs + 1; len <= total - 1; len += bs) expect++;
    printf("5000-token request: %d compressions (formula %d), peak %d blocks, %lld evicted\n",
           o->usage.compressions, expect, o->usage.kv_blocks_peak, (long long)o->usage.evicted_tokens);
    CHECK(o->usage.compressions == expect);
    CHECK(o->usage.kv_blocks_peak <= M + 1);
    CHECK(o->usage.evicted_tokens == (int64_t)expect * bs);
    /* tokens sampled from logits computed before the first compression equal full KV */
    int same_prefix = 0;
    while (same_prefix < full.out[0].n && o->tok[same_prefix] == full.out[0].tok[same_prefix]) same_prefix++;
    int before = (M + 1) * bs + 1 - plen; /* completion tokens of index <= (M+1)*bs */
    printf("first %d tokens equal full KV (%d precede the first compression)\n", same_prefix, before);
    CHECK(same_prefix >= before);

    CHECK(t.out[1].usage.compressions == 0 && t.out[1].n == 300);
    CHECK(t.out[1].usage.kv_blocks_peak == (plen + 300 - 1 + bs - 1) / bs);
    CHECKF(!memcmp(t.out[1].tok, full.out[0].tok, sizeof(int32_t) * 120),
           "compress=false request differs from the full-KV run");
    CHECK(t.out[2].usage.kv_blocks_peak <= 3 && t.out[2].usage.compressions > 0);
    engine_stats st;
    engine_get_stats(t.e, &st);
    CHECK(st.compressions == o->usage.compressions + t.out[2].usage.compressions);
    CHECK(st.blocks_used == 0);
    printf("engine: %lld compressions, %.3f s scoring, %.3f s compacting\n",
           (long long)st.compressions, st.score_seconds, st.compact_seconds);
    th_close(&full);
    th_close(&t);
    th_model_remove();
    return test_done("compress_budget");
}
