/* test_cuda_engine: the whole engine on the CUDA backend (a random Qwen3 of head dim 64, GQA 2,
 * made with `zipage mkmodel`).
 * - Batch invariance in the default configuration (batch_invariant=true, GEMM plans tuned at
 *   start-up by drv/gemmtune.c): 64 requests give bit-identical tokens (and
 *   logprobs) alone and all together with random arrivals and chunked prefill; greedy id-only
 *   requests and greedy / seeded requests with logprobs and penalties (sampled on the GPU,
 *   penalty state in the sampler's seats), decode steps from CUDA graphs on and off, and every
 *   kernel launched with programmatic dependent launch (cuda_pdl) and without.
 * - No allocation after start-up: the driver's allocation and event-creation entry points in
 *   the backend's own function table are wrapped to count calls while the engine serves 1,000
 *   requests; the count must stay 0.
 * SKIP without a GPU (or its driver, NVRTC, cuBLASLt). */
#include "tests/cuda_engine_util.h"

#define N 64
#define PDL_OTHER "cuda_pdl=false" /* the setting of cuda_pdl that is not the default */

static void make_model(void) {
    snprintf(th_dir, sizeof th_dir, "/tmp/zp_cuda_engine_%d", (int)getpid());
    char cmd[1024];
    snprintf(
        cmd, sizeof cmd,
        "rm -rf %s && %s/zipage mkmodel --arch qwen3 --hidden 256 --layers 3 --heads 4 "
        "--kv-heads 2 --head-dim 64 --intermediate 512 --vocab 300 --seed 11 --out %s >/dev/null",
        th_dir, getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build", th_dir);
    REQUIRE(system(cmd) == 0);
}

static void gen_reqs(th_req *reqs, int n, unsigned long long seed, int mixed, int *arrival) {
    unsigned long long rng = seed;
    for (int i = 0; i < n; i++) {
        th_random_req(&reqs[i], &rng, 1 + (int)(test_rand_u64(&rng) % 70),
                      1 + (int)(test_rand_u64(&rng) % 40), mixed && i % 2);
        reqs[i].rq.logprobs = mixed;
        if (mixed && i % 4 == 3) { /* penalties: seats of the GPU sampler */
            reqs[i].rq.sp.repetition_penalty = 1.15f;
            reqs[i].rq.sp.presence_penalty = 0.3f;
            reqs[i].rq.sp.frequency_penalty = 0.2f;
        }
        if (arrival) arrival[i] = (int)(test_rand_u64(&rng) % 60);
    }
}

/* Every token must be one the tokenizer can produce (ids < th_n_valid), in graph steps too. */
static void check_valid(th *t, int n, const char *what) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < t->out[i].n; j++)
            bad += t->out[i].tok[j] >= th_n_valid;
    CHECKF(bad == 0, "%s: %d tokens past n_valid %d", what, bad, th_n_valid);
}

static th_req reqs[1000];
static int arrival[1000];

static void invariance(int mixed) {
    gen_reqs(reqs, N, mixed ? 99 : 7, mixed, arrival);
    const char *bk = "backend=cuda";
    th alone, together, eager, other;
    /* one configuration throughout: GEMM plans are tuned per row bound (max_num_seqs bounds the
     * LM head's rows), so the bits belong to a configuration, and invariance is within one */
    th_open(&alone, N, bk, "max_num_batched_tokens=64", "max_num_seqs=32", NULL);
    th_run_alone(&alone, reqs, N);
    th_open(&together, N, bk, "max_num_batched_tokens=64", "max_num_seqs=32", NULL);
    th_run_arrivals(&together, reqs, N, arrival);
    th_open(&eager, N, bk, "max_num_batched_tokens=64", "max_num_seqs=32", "cuda_graphs=false",
            NULL);
    th_run_arrivals(&eager, reqs, N, arrival);
    th_open(&other, N, bk, "max_num_batched_tokens=64", "max_num_seqs=32", PDL_OTHER, NULL);
    th_run_arrivals(&other, reqs, N, arrival);
    engine_info oi; /* the default (cuda_pdl = true) is the configuration that may use it */
    engine_get_info(together.e, &oi);
    if (!strstr(oi.backend_why, "programmatic dependent launch")) /* the backend's line */
        printf("note: programmatic dependent launch is not active here (sm_90 and driver CUDA "
               "12.3+ needed): the cuda_pdl comparison runs plain launches both ways\n");
    engine_stats sa, st, se;
    engine_get_stats(alone.e, &sa);
    engine_get_stats(together.e, &st);
    engine_get_stats(eager.e, &se);
    printf(
        "%s requests: graph steps alone %lld, together %lld (of %lld), graphs off %lld\n",
        mixed ? "greedy + seeded, with logprobs:" : "greedy, ids only:", (long long)sa.graph_steps,
        (long long)st.graph_steps, (long long)st.steps, (long long)se.graph_steps);
    check_valid(&alone, N, "alone");
    check_valid(&together, N, "together");
    cuda_compare(&alone, &together, N, "alone vs together (chunked prefill, graphs)");
    cuda_compare(&together, &eager, N, "together: graphs vs no graphs");
    cuda_compare(&together, &other, N, "together: cuda_pdl default vs " PDL_OTHER);
    if (!mixed) CHECKF(st.graph_steps > 0 && sa.graph_steps > 0, "no decode step used a graph");
    CHECK(se.graph_steps == 0);
    th_close(&alone);
    th_close(&together);
    th_close(&eager);
    th_close(&other);
}

static void no_alloc(void) {
    gen_reqs(reqs, 1000, 2024, 1, NULL);
    for (int i = 0; i < 1000; i++)
        reqs[i].rq.logprobs = i % 3 == 0;
    th t;
    th_open(&t, 1000, "backend=cuda", "max_num_seqs=64", "max_waiting=1000", NULL);
    cuda_alloc_count_begin(t.e);
    th_run_all(&t, reqs, 1000, 0);
    long n_allocs = cuda_alloc_count_end();
    engine_stats st;
    engine_get_stats(t.e, &st);
    int done = 0;
    for (int i = 0; i < 1000; i++)
        done += t.out[i].finals == 1;
    printf("1000 requests served (%lld tokens, %lld steps, %lld from graphs): %ld driver "
           "allocations after start-up\n",
           (long long)st.completion_tokens, (long long)st.steps, (long long)st.graph_steps,
           n_allocs);
    CHECK(done == 1000);
    CHECKF(n_allocs == 0, "%ld allocations after start-up", n_allocs);
    th_close(&t);
}

int main(void) {
    make_model();
    th_n_valid = 290; /* ids 290..299 are never produced: padded vocabulary, as real models have */
    if (!cuda_engine_usable(0)) {
        th_model_remove();
        return 77;
    }
    invariance(0);
    invariance(1);
    no_alloc();
    th_model_remove();
    return test_done("cuda_engine");
}
