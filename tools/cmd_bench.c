/* zipage bench accuracy: runs a reasoning data set (JSONL lines with "prompt" and "answer")
 * through the engine, batched, and checks the answers, at full KV and at compressed
 * budgets. Each prompt is rendered as one user message with the model's chat template;
 * decoding is greedy; the answer is the text after the last "answer " up to the end of
 * that line (tools/task/gen_task.py's rule), compared exactly.
 *
 * --budgets LIST: comma-separated: "full" (compression off), "P%" (a budget of P percent of
 * the full-KV run's mean completion length, rounded to whole blocks, at least 1), or "Nb"
 * (N blocks). Percentages need "full" first in the list. Every budget runs in a fresh
 * engine (its own arena, frozen after start-up) on the same problems, with the configured
 * eviction policy (key `eviction`, default score).
 * --baselines LIST: comma-separated eviction policies ("streaming", "random", "oracle"; key
 * `eviction`) run at every compressed budget too, each as a row right after the budget's own,
 * everything else in the configuration unchanged (e.g. sink_len, protect_prompt,
 * eviction_seed). "oracle" needs "full" first in --budgets and the CPU backend: after the
 * full-KV row, every problem runs once more at full KV, limited to its full-KV length, with
 * its attention recorded (be_oracle: per layer, kv head and position, the most attention from
 * each chunk of block_size later queries; its tokens must equal the full-KV row's), and the
 * oracle rows rank tokens by the most attention the queries still to come gave them there.
 * --only-baselines: the compressed budgets run the baselines alone (not the configured policy).
 * Output: a table on stdout, accuracy with its 95% Wilson interval (tools/wilson.h); --md FILE
 * writes it as markdown, --plot FILE.png draws accuracy (with the intervals) against the KV
 * budget with gnuplot, a line per eviction policy; --min-accuracy X exits 1 when any row
 * but the baselines scores below X (CI's regression check).
 */
#include "arena/err.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "tools/cli.h"
#include "tools/wilson.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_BUDGETS 16
#define BENCH_MAX_ROWS    (4 * BENCH_MAX_BUDGETS) /* a budget and three baselines */

typedef struct prob {
    int32_t *ids;
    int32_t n_ids;
    char answer[64];
    int32_t *out;
    int32_t n_out;
    bool done, correct;
    engine_usage usage;
    int32_t full_len;   /* tokens of the full-KV row (the oracle's record covers them) */
    uint64_t full_hash; /* and their hash */
    be_oracle tab;      /* the oracle's record (--baselines oracle) */
} prob;

typedef struct bench_run {
    char label[32];
    int64_t blocks;    /* 0 = full KV */
    double percent;    /* > 0: budget relative to the full-KV mean completion length */
    int eviction;      /* CONF_EVICTION_* of the row's engine */
    bool baseline;     /* a --baselines row (not held to --min-accuracy) */
    bool skip;         /* --only-baselines: the configured policy's row of a budget */
    int32_t n_correct, n_done;
    double mean_len, tok_s, peak_mean, peak_max, compressions, wall;
} bench_run;

typedef struct bench_ctx {
    prob *p;
    int32_t n;
    int32_t max_tokens;
    int32_t done;
    bool recording; /* the oracle's recording run: full KV, each problem to its full length */
} bench_ctx;

static uint64_t hash_ids(const int32_t *ids, int32_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t i = 0; i < n; i++)
        h = (h ^ (uint32_t)ids[i]) * 0x100000001B3ull; /* FNV-1a */
    return h;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void on_event(void *user, const engine_event *ev) {
    bench_ctx *c = user;
    prob *p = &c->p[ev->user_tag];
    if (ev->finish == ENGINE_RUNNING) {
        if (p->n_out < c->max_tokens) p->out[p->n_out++] = ev->token;
        return;
    }
    p->done = true;
    p->usage = ev->usage;
    c->done++;
}

/* The answer rule: text after the last "answer " up to the end of that line, trimmed. */
static bool answer_matches(const char *text, const char *want) {
    const char *last = NULL;
    for (const char *s = text; (s = strstr(s, "answer ")); s++) last = s;
    if (!last) return false;
    last += 7;
    size_t n = strcspn(last, "\n");
    while (n && isspace((unsigned char)last[n - 1])) n--;
    while (n && isspace((unsigned char)*last)) last++, n--;
    return n == strlen(want) && !memcmp(last, want, n);
}

/* Reads up to max problems into the arena, rendering and encoding each prompt. */
static int load_problems(arena *a, tokenizer *tk, const char *path, int32_t max, int32_t max_len,
                         prob **out, int32_t *n) {
    char *text;
    size_t len;
    int rc = arena_read_file(a, path, &text, &len);
    if (rc) return rc;
    int32_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    if (lines > max) lines = max;
    prob *p = arena_alloc(a, sizeof *p * (size_t)lines, 64, "problems");
    if (!p) return ZP_ENOMEM;
    int32_t count = 0, lineno = 0;
    size_t cap = 1 << 20;
    char *render = arena_alloc(a, cap, 8, "render"), *msgs = arena_alloc(a, 2 * cap + 64, 8, "render");
    int32_t *ids = arena_alloc(a, sizeof(int32_t) * (size_t)max_len, 4, "ids");
    if (!render || !msgs || !ids) return ZP_ENOMEM;
    for (char *line = text; line && *line && count < lines;) {
        char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        lineno++;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        if (ll > 0) {
            size_t mark = arena_temp_mark(a);
            json_doc d;
            if ((rc = json_parse(&d, a, line, ll, where))) return rc;
            int pt = json_get(&d, 0, "prompt"), at = json_get(&d, 0, "answer");
            if (!json_is_str(&d, pt) || !json_is_str(&d, at))
                return err_set(ZP_EINVAL, "%s: needs string fields \"prompt\" and \"answer\"", where);
            size_t pl;
            if ((rc = json_str(&d, at, p[count].answer, sizeof p[count].answer, NULL)) ||
                (rc = json_str(&d, pt, render, cap, &pl)))
                return err_prefix(rc, "%s", where);
            /* one user message, escaped back into a JSON array for the chat renderer */
            static const char head[] = "[{\"role\":\"user\",\"content\":";
            size_t hl = sizeof head - 1;
            long m = json_escape(render, pl, msgs + hl, 2 * cap);
            if (m < 0) return err_set(ZP_ELIMIT, "%s: prompt too long", where);
            memcpy(msgs, head, hl);
            memcpy(msgs + hl + (size_t)m, "}]", 3);
            json_doc md;
            size_t rl, nid;
            if ((rc = json_parse(&md, a, msgs, hl + (size_t)m + 2, where)) ||
                (rc = chat_render(tk, &md, 0, true, true, render, cap, &rl)) ||
                (rc = tok_encode(tk, render, rl, false, ids, (size_t)max_len, &nid)))
                return err_prefix(rc, "%s", where);
            p[count].ids = arena_alloc(a, sizeof(int32_t) * nid, 4, "prompt ids");
            if (!p[count].ids) return ZP_ENOMEM;
            memcpy(p[count].ids, ids, sizeof(int32_t) * nid);
            p[count].n_ids = (int32_t)nid;
            arena_temp_reset(a, mark);
            count++;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (count == 0) return err_set(ZP_EINVAL, "%s: no problems", path);
    *out = p;
    *n = count;
    return 0;
}

/* Runs every problem through a fresh engine configured for one budget. */
static int run_budget(const conf *base, tokenizer *tk, bench_ctx *c, bench_run *run, char *text,
                      size_t text_cap) {
    conf cf = *base;
    cf.compress = run->blocks > 0;
    cf.eviction = run->eviction;
    if (cf.max_waiting < c->n) cf.max_waiting = c->n; /* every problem is queued at once */
    if (run->blocks > 0) {
        cf.max_cache_blocks_per_seq = run->blocks;
        if (cf.max_kv_budget_blocks < run->blocks) cf.max_kv_budget_blocks = run->blocks;
    }
    arena a;
    int rc = arena_init(&a, "host", (size_t)cf.host_arena_mb << 20);
    if (rc) return rc;
    engine *e = NULL;
    int32_t eos = tok_eos_id(tk);
    if ((rc = engine_open(&e, &a, &cf, tok_vocab_size(tk), &eos, eos >= 0, on_event, c))) goto out;
    arena_freeze(&a);
    c->done = 0;
    for (int32_t i = 0; i < c->n; i++) {
        prob *p = &c->p[i];
        p->n_out = 0;
        p->done = p->correct = false;
        engine_request rq = {.user_tag = (uint64_t)i,
                             .prompt_ids = p->ids,
                             .n_prompt = p->n_ids,
                             .compress = -1,
                             .protect_prompt = -1,
                             .record = c->recording ? &p->tab : NULL,
                             .oracle = run->eviction == CONF_EVICTION_ORACLE ? &p->tab : NULL};
        sampler_defaults(&rq.sp);
        rq.sp.max_tokens = c->recording ? p->full_len : c->max_tokens;
        uint64_t id;
        if ((rc = engine_submit(e, &rq, &id))) goto out;
    }
    double t0 = now_s();
    while (c->done < c->n) {
        int left = engine_step(e);
        if (left < 0) { rc = left; goto out; }
    }
    run->wall = now_s() - t0;
    int64_t toks = 0;
    run->n_correct = 0;
    run->peak_mean = run->peak_max = run->compressions = 0;
    for (int32_t i = 0; i < c->n; i++) {
        prob *p = &c->p[i];
        size_t n;
        if (!tok_decode(tk, p->out, (size_t)p->n_out, true, text, text_cap, &n))
            p->correct = answer_matches(text, p->answer);
        run->n_correct += p->correct;
        toks += p->n_out;
        run->peak_mean += p->usage.kv_blocks_peak;
        if (p->usage.kv_blocks_peak > run->peak_max) run->peak_max = p->usage.kv_blocks_peak;
        run->compressions += p->usage.compressions;
    }
    run->n_done = c->n;
    run->mean_len = (double)toks / c->n;
    run->peak_mean /= c->n;
    run->compressions /= c->n;
    run->tok_s = run->wall > 0 ? (double)toks / run->wall : 0;
out:
    engine_close(e);
    arena_release(&a);
    return rc;
}

/* The row's eviction policy as the table names it ("-" at full KV). */
static const char *policy_name(const bench_run *r) {
    return r->blocks ? conf_enum_name("eviction", r->eviction) : "-";
}

static void print_table(FILE *f, const bench_run *runs, int nr, int32_t bs, bool md) {
    const char *sep = md ? " | " : "  ";
    if (md)
        fprintf(f, "| budget | eviction | KV tokens per request | accuracy [95%% interval] | "
                   "mean completion tokens | tokens/s | KV peak blocks (mean / max) | "
                   "compressions per request |\n"
                   "|---|---|---|---|---|---|---|---|\n");
    else
        fprintf(f, "%-10s%s%-9s%s%10s%s%28s%s%10s%s%9s%s%16s%s%12s\n", "budget", sep, "eviction",
                sep, "KV tokens", sep, "accuracy [95% interval]", sep, "mean len", sep, "tok/s",
                sep, "peak mean/max", sep, "compress/req");
    for (int i = 0; i < nr; i++) {
        const bench_run *r = &runs[i];
        char kv[32], acc[64];
        double lo, hi;
        wilson_interval(r->n_correct, r->n_done, WILSON_Z95, &lo, &hi);
        if (r->blocks) snprintf(kv, sizeof kv, "%lld", (long long)(r->blocks * bs));
        else snprintf(kv, sizeof kv, "all");
        snprintf(acc, sizeof acc, "%d/%d = %.1f%% [%.1f, %.1f]", r->n_correct, r->n_done,
                 100.0 * r->n_correct / r->n_done, 100 * lo, 100 * hi);
        if (md)
            fprintf(f, "| %s | %s | %s | %s | %.0f | %.0f | %.1f / %.0f | %.1f |\n", r->label,
                    policy_name(r), kv, acc, r->mean_len, r->tok_s, r->peak_mean, r->peak_max,
                    r->compressions);
        else
            fprintf(f, "%-10s%s%-9s%s%10s%s%28s%s%10.0f%s%9.0f%s%10.1f / %3.0f%s%12.1f\n", r->label,
                    sep, policy_name(r), sep, kv, sep, acc, sep, r->mean_len, sep, r->tok_s, sep,
                    r->peak_mean, r->peak_max, sep, r->compressions);
    }
}

/* Accuracy against KV tokens per request with 95% Wilson error bars, a line per eviction
 * policy (one gnuplot data block each, in CONF_EVICTION_* order) and one for full KV, drawn
 * by gnuplot into a PNG. */
static int plot(const char *png, const bench_run *runs, int nr, int32_t bs) {
    if (strpbrk(png, "'\"\\$`"))
        return err_set(ZP_EINVAL, "--plot: file name '%s' has quotes or shell characters", png);
    char dat[] = "/tmp/zipage-bench-XXXXXX";
    int fd = mkstemp(dat);
    if (fd < 0) return err_set(ZP_EIO, "plot: cannot create a temporary file");
    FILE *f = fdopen(fd, "w");
    if (!f) return err_set(ZP_EIO, "plot: cannot write %s", dat);
    double full = -1;
    char lines[512] = "";
    size_t ll = 0;
    int blocks = 0;
    for (int pol = CONF_EVICTION_SCORE; pol <= CONF_EVICTION_ORACLE; pol++) {
        int rows = 0;
        for (int i = 0; i < nr; i++) {
            const bench_run *r = &runs[i];
            if (!r->blocks || r->eviction != pol) continue;
            double lo, hi;
            wilson_interval(r->n_correct, r->n_done, WILSON_Z95, &lo, &hi);
            fprintf(f, "%lld %.2f %.2f %.2f\n", (long long)(r->blocks * bs),
                    100.0 * r->n_correct / r->n_done, 100 * lo, 100 * hi);
            rows++;
        }
        if (!rows) continue;
        fprintf(f, "\n\n");
        ll += (size_t)snprintf(lines + ll, sizeof lines - ll,
                               "%s'%s' index %d using 1:2:3:4 with yerrorlines lw 2 pt 7 "
                               "title 'compressed, eviction=%s'",
                               blocks ? ", " : "", dat, blocks, conf_enum_name("eviction", pol));
        blocks++;
    }
    for (int i = 0; i < nr; i++)
        if (!runs[i].blocks) full = 100.0 * runs[i].n_correct / runs[i].n_done;
    fclose(f);
    if (full >= 0)
        snprintf(lines + ll, sizeof lines - ll, "%s%.2f with lines dt 2 lw 2 title 'full KV'",
                 blocks ? ", " : "", full);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "gnuplot -e \"set terminal pngcairo size 800,500; set output '%s'; "
             "set title 'zipage-reasoner: accuracy vs KV budget (greedy, 95%% intervals)'; "
             "set xlabel 'KV cache tokens per request'; set ylabel 'accuracy (%%)'; "
             "set yrange [0:105]; set offsets graph 0.05, graph 0.05, 0, 0; set grid; "
             "set key bottom right; plot %s\" 2>&1",
             png, lines);
    int rc = system(cmd);
    remove(dat);
    if (rc) return err_set(ZP_EIO, "plot: gnuplot failed (is gnuplot installed?)");
    return 0;
}

/* The oracle's records: one table per problem sized to its full-KV trace (prompt + the full
 * row's tokens, chunks of block_size queries) in arena ta, filled by a second full-KV run
 * (its tokens must be the full row's: the record is of that trace), then each row turned
 * into suffix maxima over the chunks. */
static int record_oracle(const conf *cf, tokenizer *tk, bench_ctx *c, arena *ta, char *text,
                         size_t text_cap) {
    model_config mc;
    arena ca;
    int rc = arena_init(&ca, "config", (size_t)1 << 20);
    if (rc) return rc;
    rc = loader_config(&mc, &ca, cf->model);
    arena_release(&ca);
    if (rc) return rc;
    size_t rows = (size_t)mc.layers * (size_t)mc.kv_heads, bytes = 0;
    int32_t chunk = (int32_t)cf->block_size;
    for (int32_t i = 0; i < c->n; i++) {
        prob *p = &c->p[i];
        p->full_len = p->n_out;
        p->full_hash = hash_ids(p->out, p->n_out);
        p->tab.n_pos = p->n_ids + p->n_out;
        p->tab.chunk = chunk;
        p->tab.n_chunks = (p->tab.n_pos + chunk - 1) / chunk;
        bytes += rows * (size_t)p->tab.n_pos * (size_t)p->tab.n_chunks * sizeof(float) + 64;
    }
    fprintf(stderr, "  oracle: recording %.1f MiB of attention (%zu layer x kv head rows)\n",
            (double)bytes / (1 << 20), rows);
    if ((rc = arena_init(ta, "oracle records", bytes + 4096))) return rc;
    for (int32_t i = 0; i < c->n; i++) {
        be_oracle *o = &c->p[i].tab;
        size_t n = rows * (size_t)o->n_pos * (size_t)o->n_chunks;
        if (!(o->a = arena_alloc(ta, n * sizeof(float), 64, "oracle record"))) return ZP_ENOMEM;
        memset(o->a, 0, n * sizeof(float));
    }
    bench_run rec = {.label = "record", .eviction = CONF_EVICTION_SCORE};
    c->recording = true;
    rc = run_budget(cf, tk, c, &rec, text, text_cap);
    c->recording = false;
    if (rc) return rc;
    for (int32_t i = 0; i < c->n; i++) {
        prob *p = &c->p[i];
        if (p->n_out != p->full_len || hash_ids(p->out, p->n_out) != p->full_hash)
            return err_set(ZP_ESTATE,
                           "--baselines oracle: problem %d decoded differently when recorded "
                           "(%d tokens against %d at full KV)",
                           i, p->n_out, p->full_len);
        be_oracle *o = &p->tab;
        for (size_t r = 0; r < rows * (size_t)o->n_pos; r++) {
            float *v = o->a + r * (size_t)o->n_chunks;
            for (int32_t k = o->n_chunks - 2; k >= 0; k--)
                if (v[k + 1] > v[k]) v[k] = v[k + 1];
        }
    }
    fprintf(stderr, "  oracle: recorded in %.1f s, tokens equal to the full-KV row\n", rec.wall);
    return 0;
}

static int bench_accuracy(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return rc;
    const char *data = NULL, *budgets = "full", *baselines = "", *md = NULL, *png = NULL;
    int64_t n = 50, max_tokens = 0;
    bool only_baselines = false;
    double min_acc = -1;
    cli c;
    cli_init(&c, "bench accuracy", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--data")) rc = cli_str(&c, &data);
        else if (!strcmp(o, "--n")) rc = cli_int(&c, &n, 1, 1000000);
        else if (!strcmp(o, "--budgets")) rc = cli_str(&c, &budgets);
        else if (!strcmp(o, "--baselines")) rc = cli_str(&c, &baselines);
        else if (!strcmp(o, "--only-baselines")) only_baselines = true;
        else if (!strcmp(o, "--max-tokens")) rc = cli_int(&c, &max_tokens, 1, 1 << 24);
        else if (!strcmp(o, "--md")) rc = cli_str(&c, &md);
        else if (!strcmp(o, "--plot")) rc = cli_str(&c, &png);
        else if (!strcmp(o, "--min-accuracy")) rc = cli_float(&c, &min_acc, 0, 1);
        else rc = cli_unknown(&c, o);
    }
    if (rc) return rc;
    if (!data) return err_set(ZP_EINVAL, "--data FILE.jsonl is required");

    int base_pol[3], nbase = 0;
    bool oracle = false;
    for (const char *s = baselines; *s;) {
        size_t l = strcspn(s, ",");
        int pol = !strncmp(s, "streaming", l) && l == 9 ? CONF_EVICTION_STREAMING
                  : !strncmp(s, "random", l) && l == 6  ? CONF_EVICTION_RANDOM
                  : !strncmp(s, "oracle", l) && l == 6  ? CONF_EVICTION_ORACLE
                                                        : -1;
        if (pol < 0)
            return err_set(ZP_EINVAL, "--baselines: '%.*s' is not streaming, random or oracle",
                           (int)l, s);
        for (int k = 0; k < nbase; k++)
            if (base_pol[k] == pol)
                return err_set(ZP_EINVAL, "--baselines: '%.*s' twice", (int)l, s);
        base_pol[nbase++] = pol;
        oracle |= pol == CONF_EVICTION_ORACLE;
        s += l + (s[l] == ',');
    }
    bench_run runs[BENCH_MAX_ROWS];
    int nr = 0, nbudgets = 0;
    for (const char *s = budgets; *s;) {
        size_t l = strcspn(s, ",");
        if (nbudgets++ == BENCH_MAX_BUDGETS)
            return err_set(ZP_ELIMIT, "--budgets: at most %d", BENCH_MAX_BUDGETS);
        bench_run *r = &runs[nr++];
        memset(r, 0, sizeof *r);
        r->eviction = cf.eviction;
        snprintf(r->label, sizeof r->label, "%.*s", (int)l, s);
        char *end;
        double v = strtod(r->label, &end);
        if (!strcmp(r->label, "full")) r->blocks = 0;
        else if (!strcmp(end, "b") && v >= 1 && v == (int64_t)v) r->blocks = (int64_t)v;
        else if (!strcmp(end, "%") && v > 0 && v <= 1000) r->percent = v;
        else return err_set(ZP_EINVAL, "--budgets: '%s' is not full, P%% or Nb", r->label);
        if (r->percent > 0 && (nr == 1 || runs[0].blocks != 0 || runs[0].percent > 0))
            return err_set(ZP_EINVAL, "--budgets: percentages need 'full' first");
        r->skip = only_baselines && (r->blocks || r->percent > 0);
        for (int k = 0; k < nbase && (r->blocks || r->percent > 0); k++) {
            runs[nr] = *r;
            runs[nr].baseline = true;
            runs[nr].skip = false;
            runs[nr++].eviction = base_pol[k];
        }
        s += l + (s[l] == ',');
    }
    if (oracle && cf.backend == CONF_BACKEND_CUDA)
        return err_set(ZP_EUNSUP, "--baselines oracle: the attention is recorded on the cpu "
                                  "backend only (set backend=cpu or auto without a GPU)");
    if (only_baselines && !nbase)
        return err_set(ZP_EINVAL, "--only-baselines: no --baselines given");
    int kept = 0;
    for (int i = 0; i < nr; i++)
        if (!runs[i].skip) runs[kept++] = runs[i];
    nr = kept;
    if (oracle && (nr < 1 || runs[0].blocks != 0 || runs[0].percent > 0))
        return err_set(ZP_EINVAL, "--baselines oracle: needs 'full' first in --budgets (the "
                                  "full-KV run it records)");

    arena a, ta = {0};
    if ((rc = arena_init(&a, "bench", (size_t)1 << 30))) return rc;
    tokenizer *tk;
    bench_ctx ctx = {0};
    int32_t max_len = cf.max_model_len ? (int32_t)cf.max_model_len : 1 << 16;
    if ((rc = tok_load(&tk, &a, cf.model)) ||
        (rc = load_problems(&a, tk, data, (int32_t)n, max_len, &ctx.p, &ctx.n)))
        goto out;
    ctx.max_tokens = max_tokens ? (int32_t)max_tokens : 4096;
    size_t text_cap = (size_t)ctx.max_tokens * tok_stream_cap(tk) + 16;
    char *text = arena_alloc(&a, text_cap, 8, "text");
    if (!text) { rc = ZP_ENOMEM; goto out; }
    for (int32_t i = 0; i < ctx.n; i++) {
        ctx.p[i].out = arena_alloc(&a, sizeof(int32_t) * (size_t)ctx.max_tokens, 4, "outputs");
        if (!ctx.p[i].out) { rc = ZP_ENOMEM; goto out; }
    }
    fprintf(stderr, "bench accuracy: %d problems from %s, budgets %s, block_size %lld\n", ctx.n,
            data, budgets, (long long)cf.block_size);
    for (int i = 0; i < nr; i++) {
        bench_run *r = &runs[i];
        if (r->percent > 0) {
            double want = r->percent / 100.0 * runs[0].mean_len / (double)cf.block_size;
            r->blocks = (int64_t)(want + 0.5) < 1 ? 1 : (int64_t)(want + 0.5);
        }
        if ((rc = run_budget(&cf, tk, &ctx, r, text, text_cap))) goto out;
        fprintf(stderr, "  %-8s %-9s %d/%d correct, %.0f tokens/s, %.1f s\n", r->label,
                policy_name(r), r->n_correct, r->n_done, r->tok_s, r->wall);
        if (i == 0 && oracle && (rc = record_oracle(&cf, tk, &ctx, &ta, text, text_cap))) goto out;
    }
    print_table(stdout, runs, nr, (int32_t)cf.block_size, false);
    if (md) {
        FILE *f = fopen(md, "w");
        if (!f) { rc = err_set(ZP_EIO, "%s: cannot write", md); goto out; }
        print_table(f, runs, nr, (int32_t)cf.block_size, true);
        fclose(f);
    }
    if (png && (rc = plot(png, runs, nr, (int32_t)cf.block_size))) goto out;
    for (int i = 0; i < nr && min_acc >= 0; i++)
        if (!runs[i].baseline && (double)runs[i].n_correct / runs[i].n_done < min_acc) {
            fprintf(stderr,
                    "bench accuracy: budget %s (eviction %s) scored %.3f, below --min-accuracy "
                    "%.3f\n",
                    runs[i].label, policy_name(&runs[i]),
                    (double)runs[i].n_correct / runs[i].n_done, min_acc);
            rc = 1;
        }
out:
    arena_release(&ta);
    arena_release(&a);
    return rc;
}

int bench_attention(int argc, char **argv);
int bench_decode(int argc, char **argv);
int bench_compress(int argc, char **argv);
int bench_throughput(int argc, char **argv);
int bench_prefill(int argc, char **argv);
int bench_startup(int argc, char **argv);
int bench_ppl(int argc, char **argv);

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "attention")) {
        int rc = bench_attention(argc - 1, argv + 1);
        return rc ? cli_fail("bench attention", rc) : 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "decode")) {
        int rc = bench_decode(argc - 1, argv + 1);
        return rc ? cli_fail("bench decode", rc) : 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "compress")) {
        int rc = bench_compress(argc - 1, argv + 1);
        return rc ? cli_fail("bench compress", rc) : 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "throughput")) {
        int rc = bench_throughput(argc - 1, argv + 1);
        return rc ? cli_fail("bench throughput", rc) : 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "prefill")) {
        int rc = bench_prefill(argc - 1, argv + 1);
        return rc ? cli_fail("bench prefill", rc) : 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "startup")) {
        int rc = bench_startup(argc - 1, argv + 1);
        return rc ? cli_fail("bench startup", rc) : 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "ppl")) {
        int rc = bench_ppl(argc - 1, argv + 1);
        return rc ? cli_fail("bench ppl", rc) : 0;
    }
    if (argc < 2 || strcmp(argv[1], "accuracy"))
        return cli_fail("bench",
                        err_set(ZP_EINVAL,
                                "usage: zipage bench accuracy --model DIR "
                                "--data FILE.jsonl [--n N] [--budgets LIST] "
                                "[--baselines streaming,random,oracle [--only-baselines]] | "
                                "zipage bench attention [--block-sizes L] "
                                "[--contexts L] [--gqa L] [--batch B] "
                                "[--prefill N [--prefix P]] | "
                                "zipage bench decode --model DIR [--points "
                                "BxL,...] [--steps N] | "
                                "zipage bench compress --model DIR "
                                "[--requests N] [--prompt N] [--spread N] "
                                "[--gen N] [--budget M] | "
                                "zipage bench throughput --model DIR "
                                "[--requests N] [--prompt N] [--gen N] "
                                "[--budget M] [--modes full,compressed] "
                                "[--bw GBPS] | "
                                "zipage bench prefill --model DIR "
                                "[--prompts N,...] [--peak-tflops X] | "
                                "zipage bench startup --model DIR [--runs N] "
                                "[--load dummy|auto] | "
                                "zipage bench ppl --model M --text F,... "
                                "[--n N] [--window W] [--budgets LIST] "
                                "[--baselines streaming,random] [--probe]"));
    int rc = bench_accuracy(argc - 1, argv + 1);
    if (rc == 1) return 1;
    return rc ? cli_fail("bench", rc) : 0;
}
