/* test_tp_engine: the engine's rank threads (engine/tp.h) through the full engine on the CPU
 * backend: ranks 1.. as the engine's own threads, each with its 1-thread CPU backend, joined by the
 * in-process communicator of tests/tp_comm.h given to engine_open_comms.
 *
 * The model is test_tp_cpu's random Qwen3 (tp_make_model: hidden 256, 8 query heads of 32, 4 kv
 * heads, intermediate 512, vocabulary 1001, 3 layers, f32). The workload: seven greedy requests
 * of 5 to 90 prompt tokens, 24 tokens each, in a pool of 10 blocks of 16 tokens (so requests are
 * preempted), at most 32 tokens a step (so prompts are prefilled in chunks beside decodes); two
 * of them submitted once the third has its first token (or has ended), one of those sharing its
 * first 48 prompt tokens with the third, whose prefill registered them (a prefix-cache hit). It
 * runs without and with compression (a budget of 4 blocks, so the longer requests compress), at TP
 * 1, 2 and 4. Checked: every request's tokens, finish, compressions and prefix-cache hits, and the
 * engine's preemption and compression counts, equal TP 1's (the CPU's sums are exact at every
 * power-of-two size: TENSOR_PARALLEL.md); TP 1 itself preempts, hits the prefix cache and
 * compresses, and every request generates all its tokens (so the comparison is not vacuous). That
 * the comparison can fail: TP 2 with the all-reduce skipped (each rank keeping its own partial
 * sums) must give other tokens. Errors: at TP 4, rank 2's communicator made to fail on its third
 * collective call (the others waiting in it until the rank's thread aborts the group) ends the
 * step's requests with its error, "tensor-parallel rank 2: ...", without a hang (an alarm bounds
 * it); the engine then stops: the requests still queued or running end at the next step, and later
 * submits are refused, both naming that failure; and engine_open_comms refuses communicators out
 * of rank order.
 */
#include "arena/err.h"
#include "engine/conf.h"
#include "engine/engine.h"
#include "tests/testlib.h"
#include "tests/tp_comm.h"
#include "tests/tp_script.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NREQ 7
#define GENT 24 /* tokens each request generates */

static const int plen[NREQ] = {5, 23, 61, 40, 90, 49, 17};
enum { TWIN = 5, TWIN_OF = 2, SHARED = 48, LATE = 5 };

typedef struct req_out {
    int32_t tok[GENT];
    int n, finals;
    engine_finish fin;
    engine_usage usage;
    int err;
    char msg[512];
    bool refused; /* engine_submit refused it (the ranks had stopped) */
} req_out;

typedef struct run {
    req_out o[NREQ];
    int64_t preemptions, compressions, prefix_hits;
} run;

static char model_dir[256];

static void on_event(void *user, const engine_event *ev) {
    run *r = user;
    REQUIRE(ev->user_tag < NREQ);
    req_out *o = &r->o[ev->user_tag];
    if (ev->finish == ENGINE_RUNNING) {
        REQUIRE(o->n < GENT);
        o->tok[o->n++] = ev->token;
        return;
    }
    o->fin = ev->finish, o->usage = ev->usage, o->finals++;
    o->err = ev->err_code;
    snprintf(o->msg, sizeof o->msg, "%s", ev->err_msg ? ev->err_msg : "");
}

/* The skipped all-reduce of the sensitivity run: every rank keeps its own partial sums. */
static int no_reduce(comm *c, be_ptr buf, size_t n, zp_dtype t) {
    (void)c, (void)buf, (void)n, (void)t;
    return 0;
}

typedef struct variant {
    int tp;
    bool compress;
    int fail_rank, fail_call; /* the communicator's fault (fail_call 0: none) */
    bool skip_reduce;
} variant;

static void set(conf *cf, const char *kv) {
    if (conf_set(cf, kv, "test")) {
        fprintf(stderr, "%s\n", err_msg());
        exit(1);
    }
}

/* The workload through an engine opened as v says, into *out. */
static void run_engine(const variant *v, run *out) {
    memset(out, 0, sizeof *out);
    conf cf;
    conf_defaults(&cf);
    snprintf(cf.model, sizeof cf.model, "%s", model_dir);
    static const char *keys[] = {"backend=cpu",
                                 "block_size=16",
                                 "max_model_len=128",
                                 "kv_memory_mb=16",
                                 "num_kv_blocks=10",
                                 "max_num_seqs=4",
                                 "max_num_batched_tokens=32",
                                 "threads=2",
                                 "enable_prefix_caching=true"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        set(&cf, keys[i]);
    set(&cf, v->compress ? "compress=true" : "compress=false");
    if (v->compress) set(&cf, "max_cache_blocks_per_seq=4"), set(&cf, "query_cache_len=4");
    char kv[64];
    snprintf(kv, sizeof kv, "tensor_parallel_size=%d", v->tp);
    set(&cf, kv);
    tp_group g;
    comm *comms[ZP_TP_MAX];
    tp_group_init(&g, v->tp);
    if (v->fail_call) tp_group_fail_at(&g, v->fail_rank, v->fail_call);
    for (int r = 0; r < v->tp; r++) {
        if (v->skip_reduce) g.comms[r].all_reduce_sum = no_reduce;
        comms[r] = &g.comms[r];
    }
    arena a;
    REQUIRE(arena_init(&a, "host", (size_t)256 << 20) == 0);
    engine *e;
    int rc = v->tp > 1 ? engine_open_comms(&e, &a, &cf, comms, 0, NULL, 0, on_event, out)
                       : engine_open(&e, &a, &cf, 0, NULL, 0, on_event, out);
    if (rc) {
        fprintf(stderr, "engine at TP %d: %s\n", v->tp, err_msg());
        exit(1);
    }
    arena_freeze(&a);
    static int32_t prompts[NREQ][128];
    unsigned long long rng = 17;
    for (int i = 0; i < NREQ; i++)
        for (int p = 0; p < plen[i]; p++)
            prompts[i][p] = (int32_t)(test_rand_u64(&rng) % MAXV);
    memcpy(prompts[TWIN], prompts[TWIN_OF], SHARED * sizeof(int32_t));
    for (int i = 0, steps = 0;; steps++) {
        for (; i < NREQ && (i < LATE || out->o[TWIN_OF].n > 0 || out->o[TWIN_OF].finals); i++) {
            engine_request rq = {.user_tag = (uint64_t)i,
                                 .prompt_ids = prompts[i],
                                 .n_prompt = plen[i],
                                 .compress = -1,
                                 .protect_prompt = -1};
            sampler_defaults(&rq.sp);
            rq.sp.max_tokens = GENT;
            rq.sp.ignore_eos = true;
            uint64_t id;
            int src = engine_submit(e, &rq, &id);
            if (src) { /* only once the fault has stopped the ranks, and saying so */
                CHECKF(v->fail_call && src == ZP_ESTATE &&
                           strstr(err_msg(), "stopped on an earlier failure (tensor-parallel rank"),
                       "TP %d: request %d refused: %d %s", v->tp, i, src, err_msg());
                out->o[i].refused = true;
                snprintf(out->o[i].msg, sizeof out->o[i].msg, "%s", err_msg());
            }
        }
        int left = engine_step(e);
        REQUIRE(left >= 0);
        int crc = engine_check(e);
        CHECKF(crc == 0, "TP %d: %s", v->tp, err_msg());
        if (left == 0 && i == NREQ) break;
        REQUIRE(steps < 4000);
    }
    engine_stats st;
    engine_get_stats(e, &st);
    out->preemptions = st.preemptions, out->compressions = st.compressions;
    out->prefix_hits = st.prefix_hit_tokens;
    engine_close(e);
    arena_release(&a);
    tp_group_destroy(&g);
}

/* Every request's outcome and the engine's counts of a against b. */
static bool same_run(const run *a, const run *b, char *why, size_t len) {
    if (a->preemptions != b->preemptions || a->compressions != b->compressions) {
        snprintf(why, len, "preemptions %lld vs %lld, compressions %lld vs %lld",
                 (long long)b->preemptions, (long long)a->preemptions, (long long)b->compressions,
                 (long long)a->compressions);
        return false;
    }
    for (int i = 0; i < NREQ; i++) {
        const req_out *x = &a->o[i], *y = &b->o[i];
        if (x->n != y->n || memcmp(x->tok, y->tok, sizeof x->tok) || x->fin != y->fin ||
            x->usage.compressions != y->usage.compressions ||
            x->usage.cached_prompt_tokens != y->usage.cached_prompt_tokens) {
            int d = 0;
            while (d < x->n && d < y->n && x->tok[d] == y->tok[d])
                d++;
            snprintf(why, len, "request %d: %d tokens vs %d, first difference at %d", i, y->n, x->n,
                     d);
            return false;
        }
    }
    return true;
}

/* engine_open_comms refuses communicators out of rank order. */
static void misordered(void) {
    conf cf;
    conf_defaults(&cf);
    snprintf(cf.model, sizeof cf.model, "%s", model_dir);
    set(&cf, "backend=cpu");
    set(&cf, "tensor_parallel_size=2");
    tp_group g;
    tp_group_init(&g, 2);
    comm *comms[2] = {&g.comms[1], &g.comms[0]};
    arena a;
    REQUIRE(arena_init(&a, "host", (size_t)16 << 20) == 0);
    engine *e;
    int rc = engine_open_comms(&e, &a, &cf, comms, 0, NULL, 0, on_event, NULL);
    CHECKF(rc == ZP_EINVAL && strstr(err_msg(), "communicator 0 is not rank 0"),
           "communicators out of rank order: %d %s", rc, err_msg());
    arena_release(&a);
    tp_group_destroy(&g);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL: the engine hung after a rank's communicator failed\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(1);
    _exit(1);
}

int main(void) {
    snprintf(model_dir, sizeof model_dir, "/tmp/zp_test_tp_engine_%d", (int)getpid());
    REQUIRE(tp_make_model(model_dir, "qwen3", 4, false, "f32") == 0);
    static run ref, got;
    char why[256];
    for (int cmp = 0; cmp <= 1; cmp++) {
        const char *what = cmp ? "with compression" : "full KV";
        run_engine(&(variant){.tp = 1, .compress = cmp}, &ref);
        bool all = true;
        for (int i = 0; i < NREQ; i++)
            all &=
                ref.o[i].n == GENT && ref.o[i].finals == 1 && ref.o[i].fin == ENGINE_FINISH_LENGTH;
        CHECKF(all, "%s: TP 1 did not generate every request's %d tokens", what, GENT);
        CHECKF(ref.prefix_hits > 0 && ref.o[TWIN].usage.cached_prompt_tokens > 0,
               "%s: TP 1's workload hit no prefix", what);
        CHECKF(cmp ? ref.compressions > 0 : ref.preemptions > 0, "%s: TP 1's workload %s", what,
               cmp ? "compressed nothing" : "preempted nothing");
        printf("%s: TP 1: %lld preemptions, %lld compressions, %lld prefix-hit tokens\n", what,
               (long long)ref.preemptions, (long long)ref.compressions, (long long)ref.prefix_hits);
        for (int tp = 2; tp <= 4; tp *= 2) {
            run_engine(&(variant){.tp = tp, .compress = cmp}, &got);
            bool same = same_run(&ref, &got, why, sizeof why);
            CHECKF(same, "%s: TP %d differs from TP 1: %s", what, tp, why);
            printf("%s: TP %d: %s\n", what, tp,
                   same ? "every request's tokens and the counts equal TP 1's" : "DIFFERS");
        }
    }
    /* the comparison can fail: without the all-reduce the ranks' partial sums give other tokens */
    run_engine(&(variant){.tp = 2, .skip_reduce = true}, &got);
    run_engine(&(variant){.tp = 1}, &ref);
    CHECKF(!same_run(&ref, &got, why, sizeof why),
           "TP 2 without the all-reduce equals TP 1: the comparison cannot fail");
    printf("TP 2 with the all-reduce skipped: %s (the comparison is sensitive)\n", why);

    signal(SIGALRM, on_alarm);
    alarm(300);
    run_engine(&(variant){.tp = 4, .fail_rank = 2, .fail_call = 3}, &got);
    alarm(0);
    int first = -1, errors = 0, later = 0;
    for (int i = 0; i < NREQ; i++) {
        const req_out *o = &got.o[i];
        errors += o->refused ? o->finals == 0
                             : o->fin == ENGINE_FINISH_ERROR && o->finals == 1 && o->err < 0;
        if (first < 0 && !o->refused && o->fin == ENGINE_FINISH_ERROR) first = i;
        /* after the failing step: ended (or refused) as the engine stopped, naming rank 2 */
        later += strstr(o->msg, "stopped on an earlier failure (tensor-parallel rank 2: ") != NULL;
    }
    CHECKF(errors == NREQ, "a failing rank ended %d of %d requests with an error", errors, NREQ);
    CHECKF(later > 0, "no request ended after the failing step: the engine's stop is untested");
    REQUIRE(first >= 0);
    CHECKF(strstr(got.o[first].msg, "tensor-parallel rank 2: ") &&
               strstr(got.o[first].msg, "made to fail on its collective call 3") &&
               got.o[first].err == ZP_EBACKEND,
           "the step's error does not name rank 2's failure: %d %s", got.o[first].err,
           got.o[first].msg);
    printf("rank 2's communicator failing on its third call: every request ended with an error, "
           "the first: %s\n",
           got.o[first].msg);
    misordered();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", model_dir);
    REQUIRE(system(cmd) == 0);
    return test_done("tp_engine");
}
