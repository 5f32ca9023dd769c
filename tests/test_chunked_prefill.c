/* test_chunked_prefill: prompts split across steps (tiny token budgets, odd sizes) give the
 * same completions and logprobs, bit for bit, as whole-prompt prefill, while other requests
 * keep decoding in the same steps (mixed batches are observed). */
#include "tests/harness.h"

#define N 8

static int decode_steps_during_prefill;

int main(void) {
    th_model(NULL);
    static th_req reqs[N];
    unsigned long long rng = 3;
    for (int i = 0; i < N; i++) {
        th_random_req(&reqs[i], &rng, 40 + (int)(test_rand_u64(&rng) % 150), 24, i % 2);
        reqs[i].rq.user_tag = (uint64_t)i;
    }
    th whole;
    th_open(&whole, N, "max_num_batched_tokens=1024", NULL);
    for (int i = 0; i < N; i++) {
        uint64_t id;
        REQUIRE(engine_submit(whole.e, &reqs[i].rq, &id) == 0);
    }
    th_drain(&whole, 1);
    static const char *budgets[] = {"max_num_batched_tokens=7", "max_num_batched_tokens=33",
                                    "max_num_batched_tokens=100"};
    for (int b = 0; b < 3; b++) {
        th ch;
        th_open(&ch, N, budgets[b], NULL);
        int submitted = 0;
        for (int step = 0;; step++) {
            if (step % 5 == 0 && submitted < N) {
                uint64_t id;
                REQUIRE(engine_submit(ch.e, &reqs[submitted].rq, &id) == 0);
                submitted++;
            }
            int before = 0;
            for (int i = 0; i < N; i++) before += ch.out[i].n;
            engine_stats s0;
            engine_get_stats(ch.e, &s0);
            int left = engine_step(ch.e);
            REQUIRE(left >= 0);
            engine_stats s1;
            engine_get_stats(ch.e, &s1);
            int after = 0;
            for (int i = 0; i < N; i++) after += ch.out[i].n;
            /* a step that advanced prompt tokens and also produced tokens was mixed */
            if (s1.prompt_tokens > s0.prompt_tokens && after > before) decode_steps_during_prefill++;
            CHECK(engine_check(ch.e) == 0);
            if (left == 0 && submitted == N) break;
        }
        for (int i = 0; i < N; i++)
            CHECKF(th_same(&whole.out[i], &ch.out[i]), "%s: request %d differs", budgets[b], i);
        th_close(&ch);
    }
    printf("mixed prefill+decode steps observed: %d\n", decode_steps_during_prefill);
    CHECK(decode_steps_during_prefill > 0);
    th_close(&whole);
    th_model_remove();
    return test_done("chunked_prefill");
}
