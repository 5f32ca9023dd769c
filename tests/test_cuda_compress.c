/* test_cuda_compress: Compressed PagedAttention on the CUDA backend, end to end (a random Qwen3
 * of head dim 64, GQA 2, made with `zipage mkmodel`).
 * - Constant memory: one 16,384-token generation at block size 256, M 8 never holds more than
 *   M + 1 blocks (engine_check after every step) and compresses exactly as often as the spec
 *   predicts (first at length (M+1)*bs+1, then every bs tokens), evicting bs tokens each time.
 * - Batch invariance with compression (small budgets, so every request compresses many times):
 *   24 requests, greedy and seeded, give bit-identical tokens alone, all together with random
 *   arrivals and chunked prefill, and together with synchronous compression
 *   (async_compression=false) and op by op (cuda_graphs=false), so neither the batch, nor the
 *   overlap of a compression with other work, nor a graph replay changes a token.
 * - No allocation after start-up while compressing: the driver's allocation and event-creation
 *   entry points of the backend's own table are counted while the together run serves.
 * SKIP without a GPU (or its driver, NVRTC, cuBLASLt). */
#include "tests/cuda_engine_util.h"

#define N 24

static void make_model(void) {
    snprintf(th_dir, sizeof th_dir, "/tmp/zp_cuda_compress_%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && %s/zipage mkmodel --arch qwen3 --hidden 256 --layers 3 --heads 4 "
             "--kv-heads 2 --head-dim 64 --intermediate 512 --vocab 300 --max-pos 17000 "
             "--seed 12 --out %s >/dev/null",
             th_dir, getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build", th_dir);
    REQUIRE(system(cmd) == 0);
}

static void constant_memory(void) {
    const int bs = 256, M = 8, plen = 10, total = 16384;
    static th_req r;
    unsigned long long rng = 5;
    th_random_req(&r, &rng, plen, total - plen, 0);
    th t;
    th_open(&t, 1, "backend=cuda", "compress=true", "block_size=256", "max_model_len=16640",
            "max_cache_blocks_per_seq=8", "query_cache_len=16", "kv_memory_mb=64", NULL);
    th_run_all(&t, &r, 1, 1); /* engine_check after every step: at most budget + 1 blocks */
    const th_out *o = &t.out[0];
    int expect = 0;
    for (int len = (M + 1) * bs + 1; len <= total - 1; len += bs)
        expect++;
    engine_stats st;
    engine_get_stats(t.e, &st);
    printf("16,384-token generation at bs %d, M %d: %d compressions (spec %d), peak %d blocks, "
           "%lld evicted; %.3f s scoring, %.3f s compacting\n",
           bs, M, o->usage.compressions, expect, o->usage.kv_blocks_peak,
           (long long)o->usage.evicted_tokens, st.score_seconds, st.compact_seconds);
    CHECK(o->finals == 1 && o->n == total - plen);
    CHECK(o->usage.compressions == expect);
    CHECK(o->usage.kv_blocks_peak <= M + 1);
    CHECK(o->usage.evicted_tokens == (int64_t)expect * bs);
    th_close(&t);
}

static th_req reqs[N];
static int arrival[N];

static void invariance(void) {
    unsigned long long rng = 77;
    for (int i = 0; i < N; i++) {
        th_random_req(&reqs[i], &rng, 1 + (int)(test_rand_u64(&rng) % 70),
                      200 + (int)(test_rand_u64(&rng) % 200), i % 2);
        arrival[i] = (int)(test_rand_u64(&rng) % 80);
    }
#define CMP "backend=cuda", "compress=true", "max_cache_blocks_per_seq=4", "query_cache_len=4"
    th alone, together, sync, eager;
    /* one configuration throughout (GEMM plans are tuned per row bound: see test_cuda_engine) */
    th_open(&alone, N, CMP, "max_num_batched_tokens=64", "max_num_seqs=16", NULL);
    th_run_alone(&alone, reqs, N);
    th_open(&together, N, CMP, "max_num_batched_tokens=64", "max_num_seqs=16", NULL);
    cuda_alloc_count_begin(together.e);
    th_run_arrivals(&together, reqs, N, arrival);
    long n_allocs = cuda_alloc_count_end();
    th_open(&sync, N, CMP, "max_num_batched_tokens=64", "max_num_seqs=16",
            "async_compression=false", NULL);
    th_run_arrivals(&sync, reqs, N, arrival);
    /* decode graphs are captured at start-up with the compression parameters (qcache_store) */
    th_open(&eager, N, CMP, "max_num_batched_tokens=64", "max_num_seqs=16", "cuda_graphs=false",
            NULL);
    th_run_arrivals(&eager, reqs, N, arrival);
#undef CMP
    engine_stats sa, st;
    engine_get_stats(alone.e, &sa);
    engine_get_stats(together.e, &st);
    printf("compressing requests: %lld compressions alone, %lld together (%lld steps); %ld "
           "driver allocations after start-up\n",
           (long long)sa.compressions, (long long)st.compressions, (long long)st.steps, n_allocs);
    CHECK(st.compressions >= N && sa.compressions == st.compressions);
    CHECKF(n_allocs == 0, "%ld allocations after start-up", n_allocs);
    cuda_compare(&alone, &together, N, "alone vs together (chunked prefill, async compression)");
    cuda_compare(&together, &sync, N, "together: async vs synchronous compression");
    cuda_compare(&together, &eager, N, "together: CUDA graphs vs op by op");
    th_close(&alone);
    th_close(&together);
    th_close(&sync);
    th_close(&eager);
}

int main(void) {
    make_model();
    th_n_valid = 290;
    if (!cuda_engine_usable(1)) {
        th_model_remove();
        return 77;
    }
    constant_memory();
    invariance();
    th_model_remove();
    return test_done("cuda_compress");
}
