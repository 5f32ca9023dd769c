/* zipage bench throughput: an offline workload through the whole engine, once with full KV and
 * once compressed, on any model shape without its checkpoint: how many requests run at once in
 * the same KV pool and what that does to output throughput.
 *
 *   zipage bench throughput --model DIR [--requests 256] [--prompt 512] [--gen 8192]
 *                           [--budget 4] [--modes full,compressed] [--bw GBPS]
 *                           [--backend cuda|cpu] [--json FILE] [--set key=value ...]
 *
 * Settings, under -c and --set: load_format = dummy (only DIR/config.json is read; the weights
 * are loader_dummy_weights), block_size = 256, max_num_seqs = --requests and max_model_len =
 * prompt + gen (when not set); the KV pool is kv_memory_mb as configured (e.g. --set
 * kv_memory_mb=16384). Per mode, always: `full` runs compress = false; `compressed` runs
 * compress = true with max_cache_blocks_per_seq = --budget.
 *
 * Workload, the same in every mode: --requests requests submitted at once, each a prompt of
 * --prompt random ids in [0, vocab) (xorshift seeded by the request's index), greedy,
 * ignore_eos, max_tokens = --gen. The engine steps until every request has finished; the
 * scheduler runs what the pool holds and queues or preempts the rest. Each mode opens its own
 * engine in its own arena and releases both.
 *
 * Figures, per mode (engine_stats is read after every step):
 * - wall: seconds from the first submit to the last finish (the engine's opening excluded);
 *   output tok/s = completion tokens / wall; requests/s = requests / wall.
 * - peak running: the most requests running in a step (engine_stats.running after it plus the
 *   requests that finished in it), beside the planned engine_info.max_concurrency; mean
 *   running: its mean over the steps. With full KV every prompt may be admitted at first and
 *   the running requests preempted as they grow, so the mean is the concurrency the pool
 *   sustained.
 * - KV per request: the KV memory in use per running request, averaged over the steps: sum of
 *   blocks in use after each step x bytes of a block (engine_info.kv_bytes / num_blocks: K, V
 *   and, compressed, the carried scores) / sum of engine_stats.running after each step.
 * - host us/step: (busy_seconds - forward_seconds - cmp_exposed_seconds) / steps, the engine's
 *   time outside the forward pass (scheduling, batch metadata, commit, events) less the
 *   compression time that no forward pass overlapped (the compression wait engine_stats
 *   measures).
 * - roofline fraction of the decode steps: a decode step is one that added no prompt token
 *   (engine_stats.prompt_tokens unchanged: every row computed one token). Their roofline time
 *   is what they would take reading, at --bw GB/s, all weights once per step that ran a forward
 *   pass (bf16, the tied head once: bench decode's count) plus the K and V of every position
 *   they attended (the growth of engine_stats.kv_tokens_read); the fraction is that over the
 *   measured busy seconds of those steps. --bw defaults to bench decode's 4,280 GB/s, the copy
 *   bandwidth measured on the H200 (docs/BENCHMARKS.md).
 * Then, when both modes ran, the ratio compressed / full of output tok/s (target >= 3.5x) and
 * the compressed mode's roofline fraction (target >= 80%). They are benchmark targets: missing
 * them is not an error. --json FILE appends one object per mode.
 */
#include "arena/err.h"
#include "engine/engine.h"
#include "engine/loader.h"
#include "tools/bench_workload.h"
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define TP_MAX_MODES 2

typedef struct tp_params {
    int64_t requests, prompt, gen, budget;
    double bw; /* GB/s */
} tp_params;

/* Event state of one run. */
typedef struct tp_ctx {
    int64_t done;
    int err_code;
    char err[256];
} tp_ctx;

typedef struct tp_run {
    const char *mode;
    bool compress;
    char backend[16];
    double open_s, wall_s, out_tok_s, req_s;
    engine_stats all; /* at the end of the run */
    /* planned: requests at once, KV blocks; bytes of the pool, of the weights (read once per
     * step) and of one position's K and V (all layers) */
    int32_t max_concurrency, num_blocks;
    size_t kv_pool_bytes, weight_bytes, kv_read_token;
    /* requests running in a step (running after it + finished in it): the most, the sum over
     * steps; the sums over steps of running after it and of blocks in use after it */
    int32_t peak_running;
    int64_t sum_running, sum_after, sum_blocks;
    double mean_running, kv_per_request, host_us; /* per step; bytes; us per step */
    /* decode steps (no prompt token added): how many, how many ran a forward pass, the KV
     * positions they read, their busy seconds and their roofline seconds */
    int64_t decode_steps, decode_fwd_steps, decode_kv_tokens;
    double decode_s, roof_s;
} tp_run;

static void on_event(void *user, const engine_event *ev) {
    tp_ctx *c = user;
    if (ev->finish == ENGINE_RUNNING) return;
    c->done++;
    if (ev->finish == ENGINE_FINISH_ERROR && !c->err_code) {
        c->err_code = ev->err_code ? ev->err_code : ZP_EBACKEND;
        snprintf(c->err, sizeof c->err, "request %llu: %s", (unsigned long long)ev->user_tag,
                 ev->err_msg ? ev->err_msg : "failed");
    }
}

/* Bytes every step reads of the weights: bf16 as bench decode counts them (the head once). */
static size_t weight_bytes(const model_config *mc) {
    size_t H = (size_t)mc->hidden, D = (size_t)mc->head_dim, I = (size_t)mc->intermediate;
    size_t qd = (size_t)mc->heads * D, kd = (size_t)mc->kv_heads * D;
    size_t per_layer = (qd + 2 * kd) * H + qd * H + 3 * I * H;
    return 2 * ((size_t)mc->layers * per_layer + (size_t)mc->vocab * H);
}

/* The step's share of the figures: concurrency, KV in use, and the decode steps' time and
 * reads. */
static void track_step(tp_run *run, const engine_stats *prev, const engine_stats *cur,
                       int64_t finished) {
    int32_t ran = cur->running + (int32_t)finished;
    if (ran > run->peak_running) run->peak_running = ran;
    run->sum_running += ran;
    run->sum_after += cur->running;
    run->sum_blocks += cur->blocks_used;
    if (cur->prompt_tokens != prev->prompt_tokens) return;
    run->decode_steps++;
    run->decode_s += cur->busy_seconds - prev->busy_seconds;
    run->decode_kv_tokens += cur->kv_tokens_read - prev->kv_tokens_read;
    run->decode_fwd_steps += cur->kv_tokens_read > prev->kv_tokens_read;
}

/* Submits every request and steps until all have finished; fills the run's figures. */
static int run_workload(engine *e, const tp_params *p, tp_ctx *c, int32_t *ids, int32_t vocab,
                        tp_run *run) {
    int rc;
    double t0 = bench_now_s();
    for (int64_t i = 0; i < p->requests; i++) {
        bench_prompt_ids(ids, p->prompt, i, vocab);
        engine_request rq = {.user_tag = (uint64_t)i,
                             .prompt_ids = ids,
                             .n_prompt = (int32_t)p->prompt,
                             .compress = -1,
                             .protect_prompt = -1};
        sampler_defaults(&rq.sp);
        rq.sp.temperature = 0;
        rq.sp.ignore_eos = true;
        rq.sp.max_tokens = (int32_t)p->gen;
        uint64_t id;
        if ((rc = engine_submit(e, &rq, &id))) return err_prefix(rc, "request %lld", (long long)i);
    }
    engine_stats prev, cur;
    engine_get_stats(e, &prev);
    cur = prev;
    while (c->done < p->requests) {
        int64_t done = c->done;
        int left = engine_step(e);
        if (left < 0) return left;
        if (c->err_code) return err_set(c->err_code, "%s", c->err);
        engine_get_stats(e, &cur);
        track_step(run, &prev, &cur, c->done - done);
        prev = cur;
    }
    run->wall_s = bench_now_s() - t0;
    run->all = cur;
    const engine_stats *s = &run->all;
    run->out_tok_s = (double)s->completion_tokens / run->wall_s;
    run->req_s = (double)p->requests / run->wall_s;
    double host = s->busy_seconds - s->forward_seconds - s->cmp_exposed_seconds;
    run->host_us = s->steps > 0 && host > 0 ? 1e6 * host / (double)s->steps : 0;
    size_t block = run->kv_pool_bytes / (size_t)run->num_blocks;
    run->mean_running = (double)run->sum_running / (double)s->steps;
    run->kv_per_request =
        run->sum_after ? (double)run->sum_blocks * (double)block / (double)run->sum_after : 0;
    run->roof_s = ((double)run->decode_fwd_steps * (double)run->weight_bytes +
                   (double)run->decode_kv_tokens * (double)run->kv_read_token) /
                  (p->bw * 1e9);
    return 0;
}

/* One mode in a fresh arena and engine, released on return. */
static int run_mode(const conf *base, const tp_params *p, tp_run *run) {
    conf cf = *base;
    cf.compress = run->compress;
    arena a;
    int rc = arena_init(&a, "bench", (size_t)cf.host_arena_mb << 20);
    if (rc) return rc;
    engine *e = NULL;
    tp_ctx c = {0};
    model_config mc;
    int32_t *ids = arena_alloc(&a, sizeof(int32_t) * (size_t)p->prompt, 64, "bench prompt");
    if (!ids) {
        rc = ZP_ENOMEM;
        goto out;
    }
    if ((rc = loader_config(&mc, &a, cf.model))) goto out;
    double t0 = bench_now_s();
    if ((rc = engine_open(&e, &a, &cf, 0, NULL, 0, on_event, &c))) goto out;
    arena_freeze(&a);
    run->open_s = bench_now_s() - t0;
    engine_info info;
    engine_get_info(e, &info);
    snprintf(run->backend, sizeof run->backend, "%s", info.backend);
    run->max_concurrency = info.max_concurrency;
    run->num_blocks = info.num_blocks;
    run->kv_pool_bytes = info.kv_bytes;
    run->weight_bytes = weight_bytes(&mc);
    /* a position's K and V in every layer: the pool's bytes per position less the scores */
    size_t scores = cf.compress ? (size_t)mc.layers * (size_t)mc.kv_heads * sizeof(float) : 0;
    run->kv_read_token =
        info.kv_bytes / ((size_t)info.num_blocks * (size_t)info.block_size) - scores;
    fprintf(stderr,
            "bench throughput: %s: %s, %s, %d layers, %d KV blocks of %d (%.0f MiB), %d requests "
            "at once planned (engine opened in %.1f s)\n",
            run->mode, info.backend_why, info.arch, info.layers, info.num_blocks, info.block_size,
            (double)info.kv_bytes / 1048576.0, info.max_concurrency, run->open_s);
    rc = run_workload(e, p, &c, ids, info.vocab, run);
out:
    engine_close(e);
    arena_release(&a);
    return rc;
}

static double roof_fraction(const tp_run *r) {
    return r->decode_s > 0 ? r->roof_s / r->decode_s : 0;
}

static void print_row(const tp_run *r) {
    printf("%-10s %8.2f %10.0f %7.2f %6d/%-6d %8.1f %9.2f %8lld %7lld %9.1f %7.1f%%\n", r->mode,
           r->wall_s, r->out_tok_s, r->req_s, r->peak_running, r->max_concurrency, r->mean_running,
           r->kv_per_request / 1048576.0, (long long)r->all.preemptions, (long long)r->all.steps,
           r->host_us, 100 * roof_fraction(r));
}

static void write_json(FILE *f, const tp_run *r, const tp_params *p, const conf *cf) {
    const engine_stats *s = &r->all;
    fprintf(f,
            "{\"mode\": \"%s\", \"backend\": \"%s\", \"compress\": %s, \"requests\": %lld, "
            "\"prompt\": %lld, \"gen\": %lld, \"budget\": %lld, \"block_size\": %lld, "
            "\"kv_pool_bytes\": %zu, \"num_blocks\": %d, \"max_concurrency\": %d, "
            "\"peak_running\": %d, \"mean_running\": %.2f, \"blocks_peak\": %d, "
            "\"kv_bytes_per_request\": %.0f, \"open_s\": %.3f, \"wall_s\": %.4f, "
            "\"output_tok_s\": %.1f, \"requests_s\": %.4f, \"prompt_tokens\": %lld, "
            "\"completion_tokens\": %lld, \"preemptions\": %lld, \"compressions\": %lld, "
            "\"steps\": %lld, \"busy_s\": %.4f, \"forward_s\": %.4f, \"cmp_exposed_s\": %.4f, "
            "\"host_us_per_step\": %.2f, \"kv_tokens_read\": %lld, \"decode_steps\": %lld, "
            "\"decode_s\": %.4f, \"decode_kv_tokens_read\": %lld, \"weight_bytes\": %zu, "
            "\"kv_read_bytes_per_token\": %zu, \"bw_gbps\": %.1f, \"roofline_s\": %.6g, "
            "\"roofline_fraction\": %.6g}\n",
            r->mode, r->backend, r->compress ? "true" : "false", (long long)p->requests,
            (long long)p->prompt, (long long)p->gen, (long long)p->budget,
            (long long)cf->block_size, r->kv_pool_bytes, r->num_blocks, r->max_concurrency,
            r->peak_running, r->mean_running, s->blocks_peak, r->kv_per_request, r->open_s,
            r->wall_s, r->out_tok_s, r->req_s, (long long)s->prompt_tokens,
            (long long)s->completion_tokens, (long long)s->preemptions, (long long)s->compressions,
            (long long)s->steps, s->busy_seconds, s->forward_seconds, s->cmp_exposed_seconds,
            r->host_us, (long long)s->kv_tokens_read, (long long)r->decode_steps, r->decode_s,
            (long long)r->decode_kv_tokens, r->weight_bytes, r->kv_read_token, p->bw, r->roof_s,
            roof_fraction(r));
}

/* --modes LIST: "full" and "compressed", comma-separated, each at most once. */
static int parse_modes(const char *s, tp_run *runs, int *n) {
    *n = 0;
    for (const char *t = s; *t;) {
        size_t len = strcspn(t, ",");
        bool full = len == 4 && !strncmp(t, "full", 4);
        bool cmp = len == 10 && !strncmp(t, "compressed", 10);
        for (int i = 0; i < *n; i++)
            if (runs[i].compress == cmp) full = cmp = false; /* twice */
        if (!full && !cmp) break;
        runs[(*n)++] = (tp_run){.mode = full ? "full" : "compressed", .compress = cmp};
        if (!t[len]) return 0;
        t += len + 1;
    }
    return err_set(ZP_EINVAL, "--modes '%s': want full, compressed or full,compressed", s);
}

/* The configuration: the benchmark's settings under -c and --set. */
int bench_throughput(int argc, char **argv) {
    conf cf;
    int rc = bench_workload_conf(&cf, &argc, argv);
    if (rc) return rc;
    tp_params p = {.requests = 256, .prompt = 512, .gen = 8192, .budget = 4, .bw = 4280};
    const char *json = NULL, *modes = "full,compressed";
    cli c;
    cli_init(&c, "bench throughput", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--requests"))
            rc = cli_int(&c, &p.requests, 1, 65536);
        else if (!strcmp(o, "--prompt"))
            rc = cli_int(&c, &p.prompt, 1, 1 << 22);
        else if (!strcmp(o, "--gen"))
            rc = cli_int(&c, &p.gen, 1, 1 << 22);
        else if (!strcmp(o, "--budget"))
            rc = cli_int(&c, &p.budget, 1, 65536);
        else if (!strcmp(o, "--modes"))
            rc = cli_str(&c, &modes);
        else if (!strcmp(o, "--bw"))
            rc = cli_float(&c, &p.bw, 1, 1e6);
        else if (!strcmp(o, "--json"))
            rc = cli_str(&c, &json);
        else
            rc = cli_unknown(&c, o);
    }
    tp_run runs[TP_MAX_MODES];
    int nr = 0;
    if (rc || (rc = parse_modes(modes, runs, &nr))) return rc;
    if (!cf.model[0]) return err_set(ZP_EINVAL, "--model DIR (with a config.json) is required");
    bench_workload_fit(&cf, p.requests, p.prompt + p.gen, p.budget);
    FILE *jf = json ? fopen(json, "a") : NULL;
    if (json && !jf) return err_set(ZP_EIO, "--json %s: cannot open for appending", json);
    fprintf(stderr,
            "bench throughput: %lld requests, prompts of %lld tokens, %lld generated each, "
            "block_size %lld, budget %lld blocks, roofline at %.0f GB/s\n",
            (long long)p.requests, (long long)p.prompt, (long long)p.gen, (long long)cf.block_size,
            (long long)p.budget, p.bw);
    for (int i = 0; i < nr && !rc; i++)
        rc = run_mode(&cf, &p, &runs[i]);
    if (!rc) {
        printf("%-10s %8s %10s %7s %13s %8s %9s %8s %7s %9s %8s\n", "mode", "wall s", "out tok/s",
               "req/s", "peak/planned", "mean run", "KV MiB/rq", "preempt", "steps", "host us",
               "roofline");
        const tp_run *full = NULL, *cmp = NULL;
        for (int i = 0; i < nr; i++) {
            print_row(&runs[i]);
            if (jf) write_json(jf, &runs[i], &p, &cf);
            if (runs[i].compress)
                cmp = &runs[i];
            else
                full = &runs[i];
        }
        if (full && cmp)
            printf("compressed vs full: %.2fx output tok/s (target >= 3.5x)\n",
                   full->out_tok_s > 0 ? cmp->out_tok_s / full->out_tok_s : 0);
        if (cmp)
            printf("compressed roofline fraction: %.0f%% (target >= 80%%)\n",
                   100 * roof_fraction(cmp));
    }
    if (jf) fclose(jf);
    return rc;
}
