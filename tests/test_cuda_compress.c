/* test_cuda_compress: Compressed PagedAttention on the CUDA backend, end to end (a random Qwen3
 * of head dim 64, GQA 2, made with `zipage mkmodel`).
 * - Constant memory: one 16,384-token generation at block size 256, M 8 never holds more than
 *   M + 1 blocks (engine_check after every step) and compresses exactly as often as the spec
 *   predicts (first at length (M+1)*bs+1, then every bs tokens), evicting bs tokens each time.
 * - Batch invariance with compression (small budgets, so every request compresses many times):
 *   24 requests, greedy and seeded, give bit-identical tokens alone, all together with random
 *   arrivals and chunked prefill, and together with synchronous compression
 *   (async_compression=false), so neither the batch nor the overlap of a compression with other
 *   work changes a token.
 * - No allocation after start-up while compressing: the driver's allocation and event-creation
 *   entry points of the backend's own table are counted while the together run serves.
 * SKIP without a GPU (or its driver, NVRTC, cuBLASLt). */
#include "drv/cuda.h"
#include "drv/cuda_be.h"
#include "tests/harness.h"

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

/* 1 when the CUDA backend starts here with compression, 0 (after SKIP) when it cannot. */
static int cuda_usable(void) {
    conf cf;
    conf_defaults(&cf);
    snprintf(cf.model, sizeof cf.model, "%s", th_dir);
    cf.backend = CONF_BACKEND_CUDA;
    cf.gpu_compression = true;
    cf.max_model_len = 256;
    cf.block_size = 16;
    cf.kv_memory_mb = 16;
    cf.max_cache_blocks_per_seq = 4;
    cf.query_cache_len = 4;
    arena a;
    REQUIRE(arena_init(&a, "probe", 512u << 20) == 0);
    engine *e = NULL;
    int rc = engine_open(&e, &a, &cf, 0, NULL, 0, th_event, NULL);
    if (!rc) engine_close(e);
    arena_release(&a);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "no CUDA backend with compression: %s", err_msg());
        test_skip(why);
        return 0;
    }
    return 1;
}

static void constant_memory(void) {
    const int bs = 256, M = 8, plen = 10, total = 16384;
    static th_req r;
    unsigned long long rng = 5;
    th_random_req(&r, &rng, plen, total - plen, 0);
    th t;
    th_open(&t, 1, "backend=cuda", "compress=true", "gpu_compression=true", "block_size=256",
            "max_model_len=16640", "max_cache_blocks_per_seq=8", "query_cache_len=16",
            "kv_memory_mb=64", NULL);
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

static int compare(th *a, th *b, int n, const char *what) {
    int same = 0;
    for (int i = 0; i < n; i++) {
        int s = a->out[i].finals == 1 && b->out[i].finals == 1 && th_same(&a->out[i], &b->out[i]);
        CHECKF(s, "%s: request %d differs", what, i);
        same += s;
    }
    printf("  %-58s %d/%d identical\n", what, same, n);
    return same;
}

static PFN_cuMemAlloc real_alloc;
static PFN_cuMemAllocHost real_alloc_host;
static PFN_cuEventCreate real_event_create;
static long n_allocs;
static CUresult count_alloc(CUdeviceptr *p, size_t bytes) {
    n_allocs++;
    return real_alloc(p, bytes);
}
static CUresult count_alloc_host(void **p, size_t bytes) {
    n_allocs++;
    return real_alloc_host(p, bytes);
}
static CUresult count_event_create(CUevent *ev, unsigned flags) {
    n_allocs++;
    return real_event_create(ev, flags);
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
#define CMP                                                                                        \
    "backend=cuda", "compress=true", "gpu_compression=true", "max_cache_blocks_per_seq=4",         \
        "query_cache_len=4"
    th alone, together, sync;
    th_open(&alone, N, CMP, "max_num_batched_tokens=64", NULL);
    th_run_alone(&alone, reqs, N);
    th_open(&together, N, CMP, "max_num_batched_tokens=64", "max_num_seqs=16", NULL);
    cuda_drv *d = cuda_backend_drv(engine_backend(together.e));
    REQUIRE(d);
    real_alloc = d->MemAlloc, real_alloc_host = d->MemAllocHost;
    real_event_create = d->EventCreate;
    d->MemAlloc = count_alloc, d->MemAllocHost = count_alloc_host;
    d->EventCreate = count_event_create;
    th_run_arrivals(&together, reqs, N, arrival);
    d->MemAlloc = real_alloc, d->MemAllocHost = real_alloc_host;
    d->EventCreate = real_event_create;
    th_open(&sync, N, CMP, "max_num_batched_tokens=64", "max_num_seqs=16",
            "async_compression=false", NULL);
    th_run_arrivals(&sync, reqs, N, arrival);
#undef CMP
    engine_stats sa, st;
    engine_get_stats(alone.e, &sa);
    engine_get_stats(together.e, &st);
    printf("compressing requests: %lld compressions alone, %lld together (%lld steps); %ld "
           "driver allocations after start-up\n",
           (long long)sa.compressions, (long long)st.compressions, (long long)st.steps, n_allocs);
    CHECK(st.compressions >= N && sa.compressions == st.compressions);
    CHECKF(n_allocs == 0, "%ld allocations after start-up", n_allocs);
    compare(&alone, &together, N, "alone vs together (chunked prefill, async compression)");
    compare(&together, &sync, N, "together: async vs synchronous compression");
    th_close(&alone);
    th_close(&together);
    th_close(&sync);
}

int main(void) {
    make_model();
    th_n_valid = 290;
    if (!cuda_usable()) {
        th_model_remove();
        return 77;
    }
    constant_memory();
    invariance();
    th_model_remove();
    return test_done("cuda_compress");
}
