/* test_batch_invariance: a request's completion (ids and logprobs, bit for bit) is the same
 * whether it runs alone or among 64 others with random arrival steps, prompt lengths (1 to
 * several blocks), max_tokens, greedy or seeded sampling; with invariants checked every step.
 * Both CPU matmul precisions (the model's weights are bf16): f32, and bf16, whose completions
 * must differ from f32's somewhere (the rounded activations are in effect). */
#include "tests/harness.h"

#define N 65

/* Alone against batched under one precision; the alone run's outputs stay in *alone. */
static void one_precision(th *alone, th_req *reqs, const int *arrival, const char *prec) {
    th_open(alone, N, "max_num_batched_tokens=64", prec, NULL);
    th_run_alone(alone, reqs, N);
    th mixed;
    th_open(&mixed, N, "max_num_batched_tokens=64", "max_num_seqs=32", prec, NULL);
    th_run_arrivals(&mixed, reqs, N, arrival);
    int same = 0;
    for (int i = 0; i < N; i++) {
        CHECKF(alone->out[i].finals == 1 && mixed.out[i].finals == 1,
               "%s: request %d terminal events", prec, i);
        CHECKF(alone->out[i].n == reqs[i].rq.sp.max_tokens, "%s: request %d: %d tokens", prec, i,
               alone->out[i].n);
        int s = th_same(&alone->out[i], &mixed.out[i]);
        CHECKF(s, "%s: request %d (prompt %d, %s) differs alone vs batched", prec, i,
               reqs[i].rq.n_prompt, i % 2 ? "sampled" : "greedy");
        same += s;
    }
    engine_stats st;
    engine_get_stats(mixed.e, &st);
    printf("%s: %d/%d requests identical; batched run: %lld steps, peak %d blocks\n", prec, same, N,
           (long long)st.steps, st.blocks_peak);
    CHECK(st.blocks_used == 0);
    th_close(&mixed);
}

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
    th f32, bf16;
    one_precision(&f32, reqs, arrival, "cpu_matmul_precision=f32");
    one_precision(&bf16, reqs, arrival, "cpu_matmul_precision=bf16");
    int differ = 0;
    for (int i = 0; i < N; i++)
        differ += !th_same(&f32.out[i], &bf16.out[i]);
    printf("%d/%d requests differ between f32 and bf16 precision\n", differ, N);
    CHECKF(differ > 0, "bf16 precision gave f32's completions for all %d requests", N);
    th_close(&f32);
    th_close(&bf16);
    th_model_remove();
    return test_done("batch_invariance");
}
