// LDFLAGS: -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup,--wrap=mmap,--wrap=posix_memalign,--wrap=aligned_alloc
/* test_noalloc: after start-up the engine never allocates. Every call our code makes to
 * malloc/calloc/realloc/free/strdup/mmap/posix_memalign/aligned_alloc goes through a
 * counting wrapper (-Wl,--wrap). The engine is opened (allocation allowed), the arena frozen,
 * then generations of 16 and of 200 tokens run: the count must stay at zero for both (so it
 * cannot grow with the number of tokens), and the arena must report no attempt either.
 * The wrapper itself is checked to count (a direct malloc in this file). */
#include "arena/err.h"
#include "engine/engine.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile long n_alloc; /* volatile: the compiler assumes malloc leaves globals alone */
void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);
void __real_free(void *);
char *__real_strdup(const char *);
void *__real_mmap(void *, size_t, int, int, int, off_t);
int __real_posix_memalign(void **, size_t, size_t);
void *__real_aligned_alloc(size_t, size_t);
void *__wrap_malloc(size_t n) { n_alloc++; return __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { n_alloc++; return __real_calloc(a, b); }
void *__wrap_realloc(void *p, size_t n) { n_alloc++; return __real_realloc(p, n); }
void __wrap_free(void *p) { n_alloc++; __real_free(p); }
char *__wrap_strdup(const char *s) { n_alloc++; return __real_strdup(s); }
void *__wrap_mmap(void *a, size_t n, int p, int f, int fd, off_t o) {
    n_alloc++;
    return __real_mmap(a, n, p, f, fd, o);
}
int __wrap_posix_memalign(void **p, size_t a, size_t n) { n_alloc++; return __real_posix_memalign(p, a, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { n_alloc++; return __real_aligned_alloc(a, n); }

static int n_tokens, finished;
static void on_event(void *u, const engine_event *ev) {
    if (ev->finish == ENGINE_RUNNING) n_tokens++;
    else finished++;
}

static long run(engine *e, int max_tokens) {
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = (i * 7 + 3) % 250;
    engine_request rq = {.prompt_ids = prompt,
                         .n_prompt = 40,
                         .compress = -1,
                         .protect_prompt = -1,
                         .logprobs = true};
    sampler_defaults(&rq.sp);
    rq.sp.max_tokens = max_tokens;
    rq.sp.ignore_eos = true;
    rq.sp.temperature = 0.8f;
    rq.sp.top_p = 0.9f;
    rq.sp.repetition_penalty = 1.1f;
    long before = n_alloc;
    uint64_t id;
    finished = n_tokens = 0;
    REQUIRE(engine_submit(e, &rq, &id) == 0);
    while (engine_step(e) > 0) {}
    CHECK(finished == 1 && n_tokens == max_tokens);
    return n_alloc - before;
}

int main(void) {
    char dir[128], cmd[512];
    snprintf(dir, sizeof dir, "/tmp/zp_test_noalloc_%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "%s/zipage mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 "
             "--head-dim 16 --intermediate 96 --vocab 300 --seed 3 --out %s >/dev/null",
             getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build", dir);
    REQUIRE(system(cmd) == 0);

    long c0 = n_alloc;
    void *volatile p = malloc(16);
    free(p);
    CHECKF(n_alloc == c0 + 2, "the wrapper does not count (%ld)", n_alloc - c0);

    conf cf;
    conf_defaults(&cf);
    snprintf(cf.model, sizeof cf.model, "%s", dir);
    cf.block_size = 16;
    cf.max_model_len = 512;
    cf.kv_memory_mb = 8;
    cf.host_arena_mb = 256;
    arena a;
    long c1 = n_alloc;
    REQUIRE(arena_init(&a, "host", (size_t)cf.host_arena_mb << 20) == 0);
    engine *e;
    if (engine_open(&e, &a, &cf, 0, NULL, 0, on_event, NULL)) {
        fprintf(stderr, "engine_open: %s\n", err_msg());
        return 1;
    }
    /* start-up maps memory through the library: proves the library's calls are counted */
    CHECKF(n_alloc > c1, "start-up made no counted call (%ld)", n_alloc - c1);
    arena_freeze(&a);
    long short_run = run(e, 16), long_run = run(e, 200);
    printf("allocation calls after start-up: %ld (16 tokens), %ld (200 tokens)\n", short_run, long_run);
    CHECK(short_run == 0);
    CHECK(long_run == 0);
    CHECK(a.violations == 0);
    /* and the freeze really refuses */
    CHECK(arena_alloc(&a, 8, 8, "late") == NULL && a.violations == 1);
    engine_close(e);
    arena_release(&a);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    REQUIRE(system(cmd) == 0);
    return test_done("noalloc");
}
