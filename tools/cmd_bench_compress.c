/* zipage bench compress: the cost of compression through the whole engine, on any model shape
 * without its checkpoint, with compression batches asynchronous and then synchronous.
 *
 *   zipage bench compress --model DIR [--requests 256] [--prompt 2048] [--spread 512]
 *                         [--gen 1024] [--budget 8] [--backend cuda|cpu] [--json FILE]
 *                         [--set key=value ...]
 *
 * Settings, under -c and --set: load_format = dummy (only DIR/config.json is read; the weights
 * are loader_dummy_weights), compress = true, block_size = 256,
 * max_num_seqs = --requests and max_model_len = the longest request (when not set). Always:
 * max_cache_blocks_per_seq = --budget and, per run, async_compression = true then false.
 *
 * Workload, the same in both runs: --requests requests submitted at once; request i has a
 * prompt of prompt + i * spread / requests random ids in [0, vocab) (xorshift seeded by i, so
 * requests cross block boundaries at different steps), greedy, ignore_eos, max_tokens = --gen.
 * The engine steps until every request has finished. Each run opens its own engine in its own
 * arena and releases both.
 *
 * The decode window starts after the step in which the last request got its first token (no
 * prompt token is left to prefill) and ends with the run; its figures are differences of
 * engine_stats taken at its start and at the end. Reported per run: wall seconds of the whole
 * run and of the window, output tokens per second in the window, compressions, and the
 * compression times of engine_stats (score, compact, device, exposed). Then the two targets:
 * exposed compression (cmp_exposed_seconds) at most 5% of the async run's decode window, and
 * async throughput at least sync's. They are benchmark targets: missing them is not an error.
 * --json FILE appends one object per run. Outputs of the two runs are compared by a hash of
 * every request's tokens.
 */
#include "arena/err.h"
#include "engine/engine.h"
#include "tools/bench_workload.h"
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct bc_params {
    int64_t requests, prompt, spread, gen, budget;
} bc_params;

/* Event state of one run: per request, tokens so far and a hash of them. */
typedef struct bc_ctx {
    int32_t *n_out;
    uint64_t *hash;
    int64_t started, done;
    int err_code;
    char err[256];
} bc_ctx;

typedef struct bc_run {
    const char *mode;
    bool async;
    double open_s, wall_s, decode_s, decode_tok_s;
    int64_t completion_tokens, decode_tokens, decode_steps;
    engine_stats all, win; /* the whole run; the decode window (differences) */
    uint64_t output_hash;
    int32_t max_concurrency;
    char backend[16];
} bc_run;

static void on_event(void *user, const engine_event *ev) {
    bc_ctx *c = user;
    size_t i = (size_t)ev->user_tag;
    if (ev->finish == ENGINE_RUNNING) {
        if (c->n_out[i]++ == 0) c->started++;
        c->hash[i] = (c->hash[i] ^ (uint32_t)ev->token) * 0x100000001B3ull; /* FNV-1a */
        return;
    }
    c->done++;
    if (ev->finish == ENGINE_FINISH_ERROR && !c->err_code) {
        c->err_code = ev->err_code ? ev->err_code : ZP_EBACKEND;
        snprintf(c->err, sizeof c->err, "request %llu: %s", (unsigned long long)ev->user_tag,
                 ev->err_msg ? ev->err_msg : "failed");
    }
}

static int64_t prompt_len(const bc_params *p, int64_t i) {
    return p->prompt + i * p->spread / p->requests;
}

/* The window's share of the counters and times: end - start (gauges such as running keep
 * their end values). */
static void stats_window(engine_stats *w, const engine_stats *end, const engine_stats *start) {
    *w = *end;
    w->steps -= start->steps;
    w->prompt_tokens -= start->prompt_tokens;
    w->completion_tokens -= start->completion_tokens;
    w->preemptions -= start->preemptions;
    w->compressions -= start->compressions;
    w->evicted_tokens -= start->evicted_tokens;
    w->graph_steps -= start->graph_steps;
    w->score_seconds -= start->score_seconds;
    w->compact_seconds -= start->compact_seconds;
    w->forward_seconds -= start->forward_seconds;
    w->busy_seconds -= start->busy_seconds;
    w->cmp_device_seconds -= start->cmp_device_seconds;
    w->cmp_exposed_seconds -= start->cmp_exposed_seconds;
}

/* Submits every request and steps until all have finished; fills the run's figures. */
static int run_workload(engine *e, const bc_params *p, bc_ctx *c, int32_t *ids, int32_t vocab,
                        bc_run *run) {
    int rc;
    double t0 = bench_now_s(), tw = -1;
    engine_stats start = {0}, end;
    for (int64_t i = 0; i < p->requests; i++) {
        int64_t n = prompt_len(p, i);
        bench_prompt_ids(ids, n, i, vocab);
        engine_request rq = {.user_tag = (uint64_t)i,
                             .prompt_ids = ids,
                             .n_prompt = (int32_t)n,
                             .compress = -1,
                             .protect_prompt = -1};
        sampler_defaults(&rq.sp);
        rq.sp.temperature = 0;
        rq.sp.ignore_eos = true;
        rq.sp.max_tokens = (int32_t)p->gen;
        uint64_t id;
        if ((rc = engine_submit(e, &rq, &id))) return err_prefix(rc, "request %lld", (long long)i);
    }
    while (c->done < p->requests) {
        int left = engine_step(e);
        if (left < 0) return left;
        if (c->err_code) return err_set(c->err_code, "%s", c->err);
        if (tw < 0 && c->started == p->requests) { /* every prompt is prefilled */
            tw = bench_now_s();
            engine_get_stats(e, &start);
        }
    }
    double t1 = bench_now_s();
    engine_get_stats(e, &end);
    run->all = end;
    stats_window(&run->win, &end, &start);
    run->wall_s = t1 - t0;
    run->decode_s = t1 - tw;
    run->completion_tokens = end.completion_tokens;
    run->decode_tokens = run->win.completion_tokens;
    run->decode_steps = run->win.steps;
    run->decode_tok_s = run->decode_s > 0 ? (double)run->decode_tokens / run->decode_s : 0;
    run->output_hash = 0xCBF29CE484222325ull;
    for (int64_t i = 0; i < p->requests; i++)
        run->output_hash = (run->output_hash ^ c->hash[i]) * 0x100000001B3ull;
    return 0;
}

/* One run in a fresh arena and engine, released on return. */
static int run_mode(const conf *base, const bc_params *p, bc_run *run) {
    conf cf = *base;
    cf.async_compression = run->async;
    arena a;
    int rc = arena_init(&a, "bench", (size_t)cf.host_arena_mb << 20);
    if (rc) return rc;
    engine *e = NULL;
    bc_ctx c = {0};
    size_t n = (size_t)p->requests;
    c.n_out = arena_alloc(&a, sizeof(int32_t) * n, 64, "bench counts");
    c.hash = arena_alloc(&a, sizeof(uint64_t) * n, 64, "bench hashes");
    int32_t *ids = arena_alloc(&a, sizeof(int32_t) * (size_t)prompt_len(p, p->requests - 1), 64,
                               "bench prompt");
    if (!c.n_out || !c.hash || !ids) {
        rc = ZP_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        c.hash[i] = 0xCBF29CE484222325ull;
    double t0 = bench_now_s();
    if ((rc = engine_open(&e, &a, &cf, 0, NULL, 0, on_event, &c))) goto out;
    arena_freeze(&a);
    run->open_s = bench_now_s() - t0;
    engine_info info;
    engine_get_info(e, &info);
    run->max_concurrency = info.max_concurrency;
    snprintf(run->backend, sizeof run->backend, "%s", info.backend);
    fprintf(stderr,
            "bench compress: %s: %s, %s, %d layers, %d KV blocks of %d, %d requests at once "
            "(engine opened in %.1f s)\n",
            run->mode, info.backend_why, info.arch, info.layers, info.num_blocks, info.block_size,
            info.max_concurrency, run->open_s);
    rc = run_workload(e, p, &c, ids, info.vocab, run);
out:
    engine_close(e);
    arena_release(&a);
    return rc;
}

static void print_row(const bc_run *r) {
    printf("%-6s %8.2f %9.2f %12.0f %8lld/%-8lld %8.3f %9.3f %9.3f %10.3f\n", r->mode, r->wall_s,
           r->decode_s, r->decode_tok_s, (long long)r->win.compressions,
           (long long)r->all.compressions, r->win.score_seconds, r->win.compact_seconds,
           r->win.cmp_device_seconds, r->win.cmp_exposed_seconds);
}

static void write_json(FILE *f, const bc_run *r, const bc_params *p, const conf *cf) {
    fprintf(f,
            "{\"mode\": \"%s\", \"backend\": \"%s\", \"requests\": %lld, \"prompt\": %lld, "
            "\"spread\": %lld, \"gen\": %lld, \"budget\": %lld, \"block_size\": %lld, "
            "\"max_concurrency\": %d, \"open_s\": %.3f, \"wall_s\": %.4f, \"decode_s\": %.4f, "
            "\"decode_tok_s\": %.1f, \"completion_tokens\": %lld, \"decode_tokens\": %lld, "
            "\"decode_steps\": %lld, \"compressions\": %lld, \"decode_compressions\": %lld, "
            "\"preemptions\": %lld, \"score_s\": %.4f, \"compact_s\": %.4f, "
            "\"cmp_device_s\": %.4f, \"cmp_exposed_s\": %.4f, \"decode_score_s\": %.4f, "
            "\"decode_compact_s\": %.4f, \"decode_cmp_device_s\": %.4f, "
            "\"decode_cmp_exposed_s\": %.4f, \"exposed_fraction\": %.6f, "
            "\"output_hash\": \"%016llx\"}\n",
            r->mode, r->backend, (long long)p->requests, (long long)p->prompt, (long long)p->spread,
            (long long)p->gen, (long long)p->budget, (long long)cf->block_size, r->max_concurrency,
            r->open_s, r->wall_s, r->decode_s, r->decode_tok_s, (long long)r->completion_tokens,
            (long long)r->decode_tokens, (long long)r->decode_steps, (long long)r->all.compressions,
            (long long)r->win.compressions, (long long)r->all.preemptions, r->all.score_seconds,
            r->all.compact_seconds, r->all.cmp_device_seconds, r->all.cmp_exposed_seconds,
            r->win.score_seconds, r->win.compact_seconds, r->win.cmp_device_seconds,
            r->win.cmp_exposed_seconds,
            r->decode_s > 0 ? r->win.cmp_exposed_seconds / r->decode_s : 0,
            (unsigned long long)r->output_hash);
}

/* The configuration: the benchmark's settings under -c and --set. */
/* The workload's configuration, compression always on. */
static int bench_conf(conf *cf, int *argc, char **argv) {
    int rc = bench_workload_conf(cf, argc, argv);
    cf->compress = true;
    return rc;
}

int bench_compress(int argc, char **argv) {
    conf cf;
    int rc = bench_conf(&cf, &argc, argv);
    if (rc) return rc;
    bc_params p = {.requests = 256, .prompt = 2048, .spread = 512, .gen = 1024, .budget = 8};
    const char *json = NULL;
    cli c;
    cli_init(&c, "bench compress", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--requests"))
            rc = cli_int(&c, &p.requests, 1, 65536);
        else if (!strcmp(o, "--prompt"))
            rc = cli_int(&c, &p.prompt, 1, 1 << 22);
        else if (!strcmp(o, "--spread"))
            rc = cli_int(&c, &p.spread, 0, 1 << 22);
        else if (!strcmp(o, "--gen"))
            rc = cli_int(&c, &p.gen, 1, 1 << 22);
        else if (!strcmp(o, "--budget"))
            rc = cli_int(&c, &p.budget, 1, 65536);
        else if (!strcmp(o, "--json"))
            rc = cli_str(&c, &json);
        else
            rc = cli_unknown(&c, o);
    }
    if (rc) return rc;
    if (!cf.model[0]) return err_set(ZP_EINVAL, "--model DIR (with a config.json) is required");
    bench_workload_fit(&cf, p.requests, prompt_len(&p, p.requests - 1) + p.gen, p.budget);
    FILE *jf = json ? fopen(json, "a") : NULL;
    if (json && !jf) return err_set(ZP_EIO, "--json %s: cannot open for appending", json);
    fprintf(stderr,
            "bench compress: %lld requests, prompts of %lld..%lld tokens, %lld generated each, "
            "block_size %lld, budget %lld blocks\n",
            (long long)p.requests, (long long)p.prompt, (long long)prompt_len(&p, p.requests - 1),
            (long long)p.gen, (long long)cf.block_size, (long long)p.budget);
    bc_run runs[2] = {{.mode = "async", .async = true}, {.mode = "sync", .async = false}};
    for (int i = 0; i < 2 && !rc; i++)
        rc = run_mode(&cf, &p, &runs[i]);
    if (!rc) {
        printf("decode window: after the last prefill; compression seconds in that window\n");
        printf("%-6s %8s %9s %12s %17s %8s %9s %9s %10s\n", "mode", "wall s", "decode s",
               "decode tok/s", "compress win/all", "score s", "compact s", "device s", "exposed s");
        for (int i = 0; i < 2; i++) {
            print_row(&runs[i]);
            if (jf) write_json(jf, &runs[i], &p, &cf);
        }
        const bc_run *as = &runs[0], *sy = &runs[1];
        printf("exposed compression: %.2f%% of decode time (target <= 5%%)\n",
               as->decode_s > 0 ? 100 * as->win.cmp_exposed_seconds / as->decode_s : 0);
        printf("async vs sync throughput: %.0f tok/s vs %.0f tok/s (target async >= sync)\n",
               as->decode_tok_s, sy->decode_tok_s);
        printf("outputs of the two runs: %s\n",
               as->output_hash == sy->output_hash ? "identical" : "different");
    }
    if (jf) fclose(jf);
    return rc;
}
