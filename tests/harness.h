/* harness: helpers shared by the engine-level tests (header-only): make a random model with
 * `zipage mkmodel`, open an engine on it with config overrides, submit requests and collect
 * every event per request. Outputs are indexed by the request's user_tag. */
#ifndef ZP_TEST_HARNESS_H
#define ZP_TEST_HARNESS_H

#include "arena/err.h"
#include "engine/engine.h"
#include "tests/testlib.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TH_MAX_OUT 16384 /* test_cuda_compress: one 16,374-token generation */

typedef struct th_out {
    int32_t tok[TH_MAX_OUT];
    float lp[TH_MAX_OUT];
    int32_t n;
    engine_finish fin;
    int32_t finals; /* terminal events seen: must end at exactly 1 */
    engine_usage usage;
} th_out;

typedef struct th {
    arena a;
    engine *e;
    conf cf;
    th_out *out;
    int nout;
    int (*on_token)(struct th *, const engine_event *); /* optional hook */
    void *user;
} th;

static char th_dir[256];
static int32_t th_n_valid; /* ids the engine may sample (0 = the model's vocab) */

/* A small random Qwen3 model in /tmp, removed at exit. */
static inline void th_model(const char *extra) {
    snprintf(th_dir, sizeof th_dir, "/tmp/zp_test_%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && %s/zipage mkmodel --arch qwen3 --hidden 64 --layers 2 --heads 4 "
             "--kv-heads 2 --head-dim 16 --intermediate 96 --vocab 300 --seed 5 --out %s %s "
             ">/dev/null",
             th_dir, getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build", th_dir, extra ? extra : "");
    REQUIRE(system(cmd) == 0);
}

static inline void th_model_remove(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", th_dir);
    if (system(cmd)) fprintf(stderr, "cannot remove %s\n", th_dir);
}

static inline void th_event(void *user, const engine_event *ev) {
    th *t = user;
    REQUIRE(ev->user_tag < (uint64_t)t->nout);
    th_out *o = &t->out[ev->user_tag];
    CHECKF(o->finals == 0, "event after the terminal event for request %llu",
           (unsigned long long)ev->user_tag);
    if (ev->finish == ENGINE_RUNNING) {
        REQUIRE(o->n < TH_MAX_OUT);
        o->tok[o->n] = ev->token;
        o->lp[o->n++] = ev->logprob;
        if (t->on_token) t->on_token(t, ev);
        return;
    }
    o->fin = ev->finish;
    o->usage = ev->usage;
    o->finals++;
}

/* Opens an engine on th_dir; overrides are "key=value" strings, NULL-terminated. */
static inline void th_open(th *t, int nout, ...) {
    memset(t, 0, sizeof *t);
    conf_defaults(&t->cf);
    snprintf(t->cf.model, sizeof t->cf.model, "%s", th_dir);
    t->cf.block_size = 16;
    t->cf.max_model_len = 256;
    t->cf.kv_memory_mb = 16;
    t->cf.host_arena_mb = 512;
    t->cf.threads = 2;
    t->cf.compress = false; /* full-KV unless a test turns compression on */
    va_list ap;
    va_start(ap, nout);
    for (const char *kv; (kv = va_arg(ap, const char *));)
        if (conf_set(&t->cf, kv, "test")) {
            fprintf(stderr, "%s\n", err_msg());
            exit(1);
        }
    va_end(ap);
    t->nout = nout;
    t->out = calloc((size_t)nout, sizeof *t->out);
    REQUIRE(arena_init(&t->a, "host", (size_t)t->cf.host_arena_mb << 20) == 0);
    if (engine_open(&t->e, &t->a, &t->cf, th_n_valid, NULL, 0, th_event, t)) {
        fprintf(stderr, "engine_open: %s\n", err_msg());
        exit(1);
    }
    arena_freeze(&t->a);
}

static inline void th_close(th *t) {
    engine_close(t->e);
    arena_release(&t->a);
    free(t->out);
}

/* A random request: prompt of plen ids, greedy or seeded sampling. */
typedef struct th_req {
    int32_t prompt[256];
    engine_request rq;
} th_req;

static inline void th_random_req(th_req *r, unsigned long long *rng, int plen, int max_tokens, int sampled) {
    for (int i = 0; i < plen; i++) r->prompt[i] = (int32_t)(test_rand_u64(rng) % 290);
    memset(&r->rq, 0, sizeof r->rq);
    r->rq.prompt_ids = r->prompt;
    r->rq.n_prompt = plen;
    r->rq.compress = -1;
    r->rq.protect_prompt = -1;
    r->rq.logprobs = true;
    sampler_defaults(&r->rq.sp);
    r->rq.sp.max_tokens = max_tokens;
    r->rq.sp.ignore_eos = true;
    if (sampled) {
        r->rq.sp.temperature = 0.9f;
        r->rq.sp.top_p = 0.95f;
        r->rq.sp.top_k = 50;
        r->rq.sp.seed = test_rand_u64(rng);
    }
}

/* Runs steps until idle, checking invariants after each when check is set. */
static inline void th_drain(th *t, int check) {
    for (;;) {
        int left = engine_step(t->e);
        REQUIRE(left >= 0);
        if (check) {
            int rc = engine_check(t->e);
            CHECKF(rc == 0, "%s", err_msg());
            if (rc) exit(1);
        }
        if (left == 0) break;
    }
}

/* Submits every request (user_tag = index) and runs to idle, optionally checking. */
static inline void th_run_all(th *t, th_req *reqs, int n, int check) {
    for (int i = 0; i < n; i++) {
        uint64_t id;
        reqs[i].rq.user_tag = (uint64_t)i;
        if (engine_submit(t->e, &reqs[i].rq, &id)) {
            fprintf(stderr, "submit %d: %s\n", i, err_msg());
            exit(1);
        }
    }
    th_drain(t, check);
}

static inline int th_same(const th_out *a, const th_out *b) {
    return a->n == b->n && a->fin == b->fin && !memcmp(a->tok, b->tok, sizeof(int32_t) * (size_t)a->n) &&
           !memcmp(a->lp, b->lp, sizeof(float) * (size_t)a->n);
}


/* Runs each request alone, one after the other (user_tag = index). */
static inline void th_run_alone(th *t, th_req *reqs, int n) {
    for (int i = 0; i < n; i++) {
        uint64_t id;
        reqs[i].rq.user_tag = (uint64_t)i;
        REQUIRE(engine_submit(t->e, &reqs[i].rq, &id) == 0);
        th_drain(t, 0);
    }
}

/* Submits request i at step arrival[i] (user_tag = index) and runs until all are done,
 * checking every invariant after every step. */
static inline void th_run_arrivals(th *t, th_req *reqs, int n, const int *arrival) {
    int submitted = 0;
    for (int step = 0; submitted < n || engine_step(t->e) > 0; step++) {
        for (int i = 0; i < n; i++)
            if (arrival[i] == step) {
                uint64_t id;
                reqs[i].rq.user_tag = (uint64_t)i;
                REQUIRE(engine_submit(t->e, &reqs[i].rq, &id) == 0);
                submitted++;
            }
        if (submitted < n) REQUIRE(engine_step(t->e) >= 0);
        int rc = engine_check(t->e);
        CHECKF(rc == 0, "%s", err_msg());
        if (rc) exit(1);
        REQUIRE(step < 1000000);
    }
}

/* Runs to idle checking invariants every step and that no block is written while it is
 * shared (ref > 1): a block's K/V checksum is taken when it becomes shared and compared at
 * every later step while it stays shared. Reports the largest ref count seen and how many
 * shared-block comparisons were made. */
static inline void th_drain_watch_shared(th *t, int *max_ref, int *checks) {
    static uint64_t sum_at[1 << 14];
    static unsigned char shared[1 << 14];
    engine_stats st;
    engine_get_stats(t->e, &st);
    REQUIRE(st.blocks_total <= (1 << 14));
    memset(shared, 0, sizeof shared);
    *max_ref = *checks = 0;
    for (;;) {
        int left = engine_step(t->e);
        REQUIRE(left >= 0);
        int rc = engine_check(t->e);
        CHECKF(rc == 0, "%s", err_msg());
        if (rc) exit(1);
        for (int32_t b = 0; b < st.blocks_total; b++) {
            int32_t ref;
            uint64_t sum;
            REQUIRE(engine_debug_block(t->e, b, &ref, &sum) == 0);
            if (ref > *max_ref) *max_ref = ref;
            if (ref <= 1) shared[b] = 0;
            else if (!shared[b]) shared[b] = 1, sum_at[b] = sum;
            else {
                CHECKF(sum == sum_at[b], "shared block %d was written", b);
                (*checks)++;
            }
        }
        if (left == 0) break;
    }
}

#endif
