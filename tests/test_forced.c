/* test_forced: teacher forcing (engine_request.forced, zipage bench ppl). Forcing a greedy
 * run's own tokens reproduces them with the same log-probabilities and top1 = the token;
 * forcing other tokens makes each step's top1 the greedy next token of the forced prefix (a
 * fresh request whose prompt is that prefix); an end-of-sequence id does not stop a forced
 * request; forcing works under compression; bad forced arrays are refused at submit. */
#include "tests/harness.h"

#include <math.h>

#define N 4
#define T 40

static int32_t top1[N][T];

static int on_token(th *t, const engine_event *ev) {
    th_out *o = &t->out[ev->user_tag];
    top1[ev->user_tag][o->n - 1] = ev->top1;
    return 0;
}

int main(void) {
    th_model(NULL);
    static th_req reqs[N], forced[N];
    static int32_t want[N][T];
    unsigned long long rng = 7;
    for (int i = 0; i < N; i++)
        th_random_req(&reqs[i], &rng, 6 + 5 * i, T, 0);

    th g; /* greedy with log-probabilities */
    th_open(&g, N, NULL);
    th_run_all(&g, reqs, N, 0);

    /* 1. Forcing the greedy tokens gives them back, with their log-probabilities. */
    for (int i = 0; i < N; i++) {
        forced[i] = reqs[i];
        forced[i].rq.prompt_ids = forced[i].prompt;
        memcpy(want[i], g.out[i].tok, sizeof want[i]);
        forced[i].rq.forced = want[i];
        forced[i].rq.n_forced = T;
        forced[i].rq.sp.ignore_eos = false;
    }
    th f;
    th_open(&f, N, NULL);
    f.on_token = on_token;
    th_run_all(&f, forced, N, 1);
    for (int i = 0; i < N; i++) {
        CHECKF(f.out[i].n == T && f.out[i].fin == ENGINE_FINISH_LENGTH, "request %d: %d tokens", i,
               f.out[i].n);
        for (int k = 0; k < T && k < f.out[i].n; k++) {
            CHECKF(f.out[i].tok[k] == want[i][k], "request %d token %d", i, k);
            CHECKF(top1[i][k] == want[i][k], "request %d: top1 %d at %d, greedy %d", i, top1[i][k],
                   k, want[i][k]);
            CHECKF(fabsf(f.out[i].lp[k] - g.out[i].lp[k]) < 1e-4f && f.out[i].lp[k] <= 0,
                   "request %d: logprob %g at %d, sampler's %g", i, f.out[i].lp[k], k,
                   g.out[i].lp[k]);
        }
    }
    th_close(&f);

    /* 2. Random forced tokens (with the model's eos among them): top1 at step k is the greedy
     * first token of prompt + forced[0..k). */
    static int32_t rnd[N][T];
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < T; k++)
            rnd[i][k] = (int32_t)(test_rand_u64(&rng) % 290);
        rnd[i][T / 2] = 258; /* an eos id of mkmodel's qwen3 (TOK_BASE + 2) */
        forced[i].rq.forced = rnd[i];
    }
    th_open(&f, N, NULL);
    f.on_token = on_token;
    th_run_all(&f, forced, N, 1);
    for (int i = 0; i < N; i++) {
        CHECKF(f.out[i].n == T && f.out[i].fin == ENGINE_FINISH_LENGTH,
               "request %d: %d tokens, finish %d (eos must not stop a forced request)", i,
               f.out[i].n, f.out[i].fin);
        for (int k = 0; k < T; k += 13) {
            th_req p = reqs[i];
            int plen = reqs[i].rq.n_prompt;
            memcpy(p.prompt + plen, rnd[i], sizeof(int32_t) * (size_t)k);
            p.rq.prompt_ids = p.prompt;
            p.rq.n_prompt = plen + k;
            p.rq.sp.max_tokens = 1;
            th one;
            th_open(&one, 1, NULL);
            th_run_all(&one, &p, 1, 0);
            CHECKF(one.out[0].n == 1 && top1[i][k] == one.out[0].tok[0],
                   "request %d step %d: top1 %d, greedy after the forced prefix %d", i, k,
                   top1[i][k], one.out[0].tok[0]);
            th_close(&one);
        }
    }
    th_close(&f);

    /* 3. Under compression (budget of 2 blocks of 16: requests past 48 tokens compress)
     * forced requests complete. */
    th c;
    th_open(&c, N, "compress=true", "max_cache_blocks_per_seq=2", NULL);
    th_run_all(&c, forced, N, 1);
    for (int i = 0; i < N; i++)
        CHECKF(
            c.out[i].n == T && (reqs[i].rq.n_prompt + T <= 48 || c.out[i].usage.compressions > 0),
            "request %d: %d tokens, %d compressions", i, c.out[i].n, c.out[i].usage.compressions);

    /* 4. Refusals. */
    uint64_t id;
    engine_request bad = forced[0].rq;
    bad.n_forced = T - 1;
    CHECK(engine_submit(c.e, &bad, &id) == ZP_EINVAL && strstr(err_msg(), "forced"));
    int32_t out_of_range[T] = {0};
    out_of_range[3] = 100000;
    bad = forced[0].rq;
    bad.forced = out_of_range;
    CHECK(engine_submit(c.e, &bad, &id) == ZP_EINVAL && strstr(err_msg(), "index 3"));
    th_close(&c);
    th_close(&g);
    th_model_remove();
    return test_done("forced");
}
