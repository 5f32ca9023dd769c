/* test_compress_protect: per-request protected prompts. With block_size 16, M 4, qcl 4 and
 * protect_prompt_max 48:
 *  - a request protecting its whole 32-token prompt keeps that prompt's K/V through ~20
 *    compressions: after every step the K/V blocks of the prompt (content hashes from a
 *    full-KV engine that prefilled it alone) are all among the request's blocks; the same
 *    request without protection loses them (so the check can fail);
 *  - a 200-token prompt (compressed right after its prefill) with protect_prompt 48 keeps its
 *    first 48 tokens; the engine default (key protect_prompt) applies to requests that do not
 *    set it;
 *  - refusals name the option and the bound: protect_prompt over protect_prompt_max, a
 *    protected length that leaves nothing to evict in a small kv_budget_blocks (only the
 *    prompt's own length counts), and at open protect_prompt_max too large for the budget and
 *    protect_prompt over protect_prompt_max. */
#include "tests/harness.h"

#define BS 16
#define MAXH 8

/* Hashes of the K/V of blocks in use (ref > 0). */
static int used_hashes(th *t, uint64_t *h, int cap) {
    int n = 0;
    for (int32_t b = 0; b < (int32_t)t->cf.num_kv_blocks; b++) {
        int32_t ref;
        uint64_t x;
        REQUIRE(engine_debug_block(t->e, b, &ref, &x) == 0);
        if (ref > 0) {
            REQUIRE(n < cap);
            h[n++] = x;
        }
    }
    return n;
}

/* The hashes of the n_blocks full blocks of prompt[0 .. n_blocks*BS), prefilled alone at full
 * KV (the request has sampled one token, so its blocks are still held). */
static void prompt_hashes(const int32_t *prompt, int n_blocks, uint64_t *h) {
    th t;
    th_open(&t, 1, "max_model_len=256", "num_kv_blocks=16", NULL);
    th_req r;
    unsigned long long rng = 1;
    th_random_req(&r, &rng, n_blocks * BS, 2, 0);
    memcpy(r.prompt, prompt, sizeof(int32_t) * (size_t)(n_blocks * BS));
    uint64_t id;
    REQUIRE(engine_submit(t.e, &r.rq, &id) == 0);
    REQUIRE(engine_step(t.e) == 1);
    REQUIRE(used_hashes(&t, h, MAXH) == n_blocks);
    engine_cancel(t.e, id);
    th_drain(&t, 0);
    th_close(&t);
}

/* Runs r alone; returns the number of steps after which some hash of want was not among the
 * blocks in use. *compressions gets the request's count. */
static int run_checked(th *t, th_req *r, const uint64_t *want, int n_want, int *compressions) {
    uint64_t id, have[16];
    r->rq.user_tag = 0;
    t->out[0] = (th_out){0};
    REQUIRE(engine_submit(t->e, &r->rq, &id) == 0);
    int missing = 0;
    for (;;) {
        int left = engine_step(t->e);
        REQUIRE(left >= 0);
        if (left == 0) break;
        int n = used_hashes(t, have, 16), lost = 0;
        for (int i = 0; i < n_want; i++) {
            int found = 0;
            for (int k = 0; k < n; k++) found |= have[k] == want[i];
            lost |= !found;
        }
        missing += lost;
    }
    CHECK(t->out[0].finals == 1 && t->out[0].fin == ENGINE_FINISH_LENGTH);
    *compressions = t->out[0].usage.compressions;
    return missing;
}

static void expect_submit_error(th *t, th_req *r, const char *what) {
    uint64_t id;
    int rc = engine_submit(t->e, &r->rq, &id);
    CHECKF(rc == ZP_EINVAL && strstr(err_msg(), what), "submit: rc %d '%s', want '%s'", rc,
           err_msg(), what);
    printf("refused: %s\n", err_msg());
}

static void expect_open_error(const char *a, const char *b, const char *what) {
    conf cf;
    conf_defaults(&cf);
    snprintf(cf.model, sizeof cf.model, "%s", th_dir);
    const char *kv[] = {"block_size=16", "max_model_len=1024", "kv_memory_mb=16", "threads=2",
                        "host_arena_mb=512", "compress=true", "max_cache_blocks_per_seq=4",
                        "query_cache_len=4", a, b};
    for (int i = 0; i < 10; i++) REQUIRE(conf_set(&cf, kv[i], "test") == 0);
    arena ar;
    REQUIRE(arena_init(&ar, "host", (size_t)cf.host_arena_mb << 20) == 0);
    engine *e = NULL;
    int rc = engine_open(&e, &ar, &cf, 0, NULL, 0, th_event, NULL);
    CHECKF(rc == ZP_EINVAL && strstr(err_msg(), what), "open with %s %s: rc %d '%s', want '%s'",
           a, b, rc, err_msg(), what);
    printf("refused at open: %s\n", err_msg());
    if (!rc) engine_close(e);
    arena_release(&ar);
}

int main(void) {
    th_model("--max-pos 2048");
    unsigned long long rng = 7;
    static th_req shortp, longp;
    th_random_req(&shortp, &rng, 32, 400, 0);
    th_random_req(&longp, &rng, 200, 300, 0);
    uint64_t hs[MAXH], hl[MAXH];
    prompt_hashes(shortp.prompt, 2, hs);
    prompt_hashes(longp.prompt, 3, hl);

    th t;
    th_open(&t, 1, "compress=true", "max_cache_blocks_per_seq=4", "query_cache_len=4",
            "protect_prompt_max=48", "max_model_len=1024", "num_kv_blocks=16", NULL);
    int cmp_on, cmp_off, cmp_long;
    shortp.rq.protect_prompt = 32;
    int lost_on = run_checked(&t, &shortp, hs, 2, &cmp_on);
    shortp.rq.protect_prompt = 0;
    int lost_off = run_checked(&t, &shortp, hs, 2, &cmp_off);
    longp.rq.protect_prompt = 48;
    int lost_long = run_checked(&t, &longp, hl, 3, &cmp_long);
    printf("32-token prompt protected: %d compressions, lost after %d steps; unprotected: %d "
           "compressions, lost after %d steps\n",
           cmp_on, lost_on, cmp_off, lost_off);
    printf("200-token prompt, first 48 protected: %d compressions, lost after %d steps\n",
           cmp_long, lost_long);
    CHECK(cmp_on >= 15 && cmp_off == cmp_on && cmp_long >= 10);
    CHECK(lost_on == 0 && lost_long == 0);
    CHECKF(lost_off > 0, "an unprotected prompt kept every token: the check cannot fail");

    /* refusals at submit */
    shortp.rq.protect_prompt = 49;
    expect_submit_error(&t, &shortp, "protect_prompt_max");
    shortp.rq.protect_prompt = 32;
    shortp.rq.kv_budget_blocks = 2; /* 32 tokens: 32 protected + 4 newest leave nothing */
    expect_submit_error(&t, &shortp, "protect_prompt 32 leaves nothing to evict");
    shortp.rq.n_prompt = 20; /* only the prompt's own 20 tokens are protected: fits */
    uint64_t id;
    t.out[0] = (th_out){0};
    CHECKF(engine_submit(t.e, &shortp.rq, &id) == 0, "%s", err_msg());
    th_drain(&t, 1);
    CHECK(t.out[0].finals == 1 && t.out[0].usage.compressions > 0);
    th_close(&t);

    /* the engine default applies to requests that do not set protect_prompt */
    th_open(&t, 1, "compress=true", "max_cache_blocks_per_seq=4", "query_cache_len=4",
            "protect_prompt_max=48", "protect_prompt=48", "max_model_len=1024",
            "num_kv_blocks=16", NULL);
    longp.rq.protect_prompt = -1;
    int cmp_def, lost_def = run_checked(&t, &longp, hl, 3, &cmp_def);
    printf("engine default protect_prompt 48: %d compressions, lost after %d steps\n", cmp_def,
           lost_def);
    CHECK(cmp_def == cmp_long && lost_def == 0);
    th_close(&t);

    /* refusals at open: 59 + qcl 4 < 64 fits, 60 does not */
    expect_open_error("protect_prompt_max=60", "protect_prompt=0", "'protect_prompt_max'");
    expect_open_error("protect_prompt_max=59", "protect_prompt=60", "'protect_prompt'");
    th_model_remove();
    return test_done("compress_protect");
}
