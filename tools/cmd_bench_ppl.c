/* zipage bench ppl: what compression costs a real language model on real text.
 *
 * Perplexity (default): the text files are tokenized (no special tokens), joined, and cut
 * into --n windows of --window tokens. Each window is one request: its first --prompt tokens
 * are the prompt, the rest are teacher-forced (engine_request.forced), so every position's
 * next-token distribution is computed with the KV cache as compression left it at that point.
 * A row per budget runs every window at once in a fresh engine: "full" (compression off),
 * then each --budgets entry ("P%" of the window, rounded to whole blocks, or "Nb" blocks) with
 * the configured eviction policy and with each --baselines policy (streaming, random). The
 * streaming rows keep max(sink_len, 4) leading tokens, StreamingLLM's attention sinks.
 * Reported per row: perplexity over every forced token; over the positions past the budget
 * (where the cache has been compressed), the row's perplexity, the full-KV row's perplexity on
 * the same positions, and top-1 agreement with the full-KV row; compressions per window.
 *
 * --probe: a recall probe instead. Each window becomes "The secret number is NNNNN. Remember
 * it." + text + "\n\nWhat is the secret number? The secret number is", answered greedily
 * (8 tokens); correct when the digits appear. Rows as above, each compressed budget run
 * twice: without and with the fact's tokens protected (protect_prompt).
 *
 * --md FILE writes the table as markdown. In-process only (teacher forcing is not an IPC
 * feature).
 */
#include "arena/err.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "tools/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PPL_MAX_ROWS 32
#define PPL_ANSWER   8

typedef struct win {
    int32_t *ids; /* prompt then forced tokens (perplexity), or the probe's prompt */
    int32_t n_ids, n_prompt, protect;
    char secret[8];
    float *lp;      /* forced tokens' log-probabilities */
    int32_t *top1;  /* this row's argmax per forced position */
    int32_t *full1; /* the full-KV row's */
    float *full_lp; /* the full-KV row's lp */
    int32_t out[PPL_ANSWER];
    int32_t n_out;
    int32_t compressions;
    bool done;
} win;

typedef struct ppl_ctx {
    win *w;
    int32_t n, done;
    bool probe;
} ppl_ctx;

typedef struct ppl_row {
    char label[24];
    int64_t blocks; /* 0 = full KV */
    int eviction;
    bool protect, baseline;
    double ppl_all, ppl_past, ppl_full_past, agree, compressions, wall;
    int64_t n_past;
    int correct;
} ppl_row;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_event(void *user, const engine_event *ev) {
    ppl_ctx *c = user;
    win *w = &c->w[ev->user_tag];
    if (ev->finish == ENGINE_RUNNING) {
        if (c->probe) {
            if (w->n_out < PPL_ANSWER) w->out[w->n_out++] = ev->token;
        } else {
            w->lp[w->n_out] = ev->logprob;
            w->top1[w->n_out++] = ev->top1;
        }
        return;
    }
    w->compressions = ev->usage.compressions;
    w->done = true;
    c->done++;
    if (ev->finish == ENGINE_FINISH_ERROR)
        fprintf(stderr, "bench ppl: window %llu failed: %s\n", (unsigned long long)ev->user_tag,
                ev->err_msg ? ev->err_msg : "");
}

/* Reads and joins the comma-separated files into one text in the arena. */
static int read_texts(arena *a, const char *list, char **text, size_t *len) {
    size_t cap = 0, n = 0;
    char path[4096];
    for (const char *s = list; *s;) { /* first pass: sizes */
        size_t l = strcspn(s, ",");
        snprintf(path, sizeof path, "%.*s", (int)l, s);
        FILE *f = fopen(path, "rb");
        if (!f) return err_set(ZP_EIO, "%s: cannot open", path);
        fseek(f, 0, SEEK_END);
        cap += (size_t)ftell(f) + 2;
        fclose(f);
        s += l + (s[l] == ',');
    }
    char *t = arena_alloc(a, cap + 1, 8, "texts");
    if (!t) return ZP_ENOMEM;
    for (const char *s = list; *s;) {
        size_t l = strcspn(s, ",");
        snprintf(path, sizeof path, "%.*s", (int)l, s);
        FILE *f = fopen(path, "rb");
        if (!f) return err_set(ZP_EIO, "%s: cannot open", path);
        n += fread(t + n, 1, cap - n, f);
        fclose(f);
        if (n + 2 <= cap) t[n++] = '\n', t[n++] = '\n';
        s += l + (s[l] == ',');
    }
    t[n] = 0;
    *text = t;
    *len = n;
    return 0;
}

static int encode(tokenizer *tk, const char *s, int32_t *ids, size_t cap, size_t *n) {
    return tok_encode(tk, s, strlen(s), false, ids, cap, n);
}

/* Builds the windows from the joined text's tokens. */
static int make_windows(arena *a, tokenizer *tk, const int32_t *ids, size_t n_ids, ppl_ctx *c,
                        int32_t window, int32_t prompt) {
    if ((size_t)c->n * (size_t)window > n_ids)
        return err_set(ZP_EINVAL, "the texts hold %zu tokens, fewer than --n %d x --window %d",
                       n_ids, c->n, window);
    c->w = arena_alloc(a, sizeof *c->w * (size_t)c->n, 64, "windows");
    if (!c->w) return ZP_ENOMEM;
    for (int32_t i = 0; i < c->n; i++) {
        win *w = &c->w[i];
        const int32_t *src = ids + (size_t)i * (size_t)window;
        int32_t cap = window + 64;
        w->ids = arena_alloc(a, sizeof(int32_t) * (size_t)cap, 4, "window ids");
        w->lp = arena_alloc(a, sizeof(float) * (size_t)window, 4, "logprobs");
        w->top1 = arena_alloc(a, sizeof(int32_t) * (size_t)window, 4, "top1");
        w->full1 = arena_alloc(a, sizeof(int32_t) * (size_t)window, 4, "top1");
        w->full_lp = arena_alloc(a, sizeof(float) * (size_t)window, 4, "logprobs");
        if (!w->ids || !w->lp || !w->top1 || !w->full1 || !w->full_lp) return ZP_ENOMEM;
        if (!c->probe) {
            memcpy(w->ids, src, sizeof(int32_t) * (size_t)window);
            w->n_ids = window;
            w->n_prompt = prompt;
            continue;
        }
        /* The fact, the filler, the question: the filler is cut so the whole is the window. */
        char fact[96];
        snprintf(w->secret, sizeof w->secret, "%05u", (unsigned)((i * 7919u + 12345u) % 100000u));
        snprintf(fact, sizeof fact, "The secret number is %s. Remember it.\n\n", w->secret);
        size_t nf, nq;
        int rc = encode(tk, fact, w->ids, (size_t)cap, &nf);
        int32_t q[64];
        if (!rc) rc = encode(tk, "\n\nWhat is the secret number? The secret number is", q, 64, &nq);
        if (rc) return rc;
        int32_t fill = window - (int32_t)nf - (int32_t)nq;
        if (fill < 1) return err_set(ZP_EINVAL, "--window %d is too short for the probe", window);
        memcpy(w->ids + nf, src, sizeof(int32_t) * (size_t)fill);
        memcpy(w->ids + nf + fill, q, sizeof(int32_t) * nq);
        w->n_ids = w->n_prompt = window;
        w->protect = (int32_t)nf;
    }
    return 0;
}

static int run_row(const conf *base, tokenizer *tk, ppl_ctx *c, ppl_row *row) {
    conf cf = *base;
    cf.compress = row->blocks > 0;
    cf.eviction = row->eviction;
    if (row->eviction == CONF_EVICTION_STREAMING && cf.sink_len < 4) cf.sink_len = 4;
    if (cf.max_waiting < c->n) cf.max_waiting = c->n;
    if (row->blocks > 0) {
        cf.max_cache_blocks_per_seq = row->blocks;
        if (cf.max_kv_budget_blocks < row->blocks) cf.max_kv_budget_blocks = row->blocks;
    }
    if (row->protect && cf.protect_prompt_max < c->w[0].protect)
        cf.protect_prompt_max = c->w[0].protect;
    arena a;
    int rc = arena_init(&a, "host", (size_t)cf.host_arena_mb << 20);
    if (rc) return rc;
    engine *e = NULL;
    int32_t eos = tok_eos_id(tk);
    if ((rc = engine_open(&e, &a, &cf, tok_vocab_size(tk), &eos, eos >= 0, on_event, c))) goto out;
    arena_freeze(&a);
    c->done = 0;
    for (int32_t i = 0; i < c->n; i++) {
        win *w = &c->w[i];
        w->n_out = 0;
        w->done = false;
        engine_request rq = {.user_tag = (uint64_t)i,
                             .prompt_ids = w->ids,
                             .n_prompt = w->n_prompt,
                             .compress = -1,
                             .protect_prompt = row->protect ? w->protect : 0};
        sampler_defaults(&rq.sp);
        if (c->probe) {
            rq.sp.max_tokens = PPL_ANSWER;
        } else {
            rq.forced = w->ids + w->n_prompt;
            rq.n_forced = rq.sp.max_tokens = w->n_ids - w->n_prompt;
        }
        uint64_t id;
        if ((rc = engine_submit(e, &rq, &id))) goto out;
    }
    double t0 = now_s();
    while (c->done < c->n) {
        int left = engine_step(e);
        if (left < 0) {
            rc = left;
            goto out;
        }
    }
    row->wall = now_s() - t0;
    double nll_all = 0, nll_past = 0, nll_full_past = 0;
    int64_t n_all = 0, agree = 0;
    row->n_past = row->correct = 0;
    row->compressions = 0;
    int64_t budget_tok = row->blocks * cf.block_size;
    char text[256];
    for (int32_t i = 0; i < c->n; i++) {
        win *w = &c->w[i];
        row->compressions += (double)w->compressions / c->n;
        if (c->probe) {
            size_t n;
            if (!tok_decode(tk, w->out, (size_t)w->n_out, true, text, sizeof text, &n))
                row->correct += strstr(text, w->secret) != NULL;
            continue;
        }
        for (int32_t k = 0; k < w->n_out; k++) {
            int32_t pos = w->n_prompt + k; /* the cache holds pos tokens when predicting */
            nll_all -= w->lp[k];
            n_all++;
            if (!row->blocks) {
                w->full1[k] = w->top1[k];
                w->full_lp[k] = w->lp[k];
            } else if (pos > budget_tok) {
                nll_past -= w->lp[k];
                nll_full_past -= w->full_lp[k];
                row->n_past++;
                agree += w->top1[k] == w->full1[k];
            }
        }
    }
    if (!c->probe) {
        row->ppl_all = exp(nll_all / (double)(n_all ? n_all : 1));
        row->ppl_past = row->n_past ? exp(nll_past / (double)row->n_past) : 0;
        row->ppl_full_past = row->n_past ? exp(nll_full_past / (double)row->n_past) : 0;
        row->agree = row->n_past ? (double)agree / (double)row->n_past : 0;
    }
out:
    engine_close(e);
    arena_release(&a);
    return rc;
}

static const char *pol_name(int ev) {
    return ev == CONF_EVICTION_STREAMING ? "streaming"
           : ev == CONF_EVICTION_RANDOM  ? "random"
                                         : "score";
}

static void print_table(FILE *f, const ppl_row *rows, int nr, int32_t window, int32_t bs,
                        bool probe, int32_t n, bool md) {
    const char *sep = md ? " | " : "  ";
    if (md)
        fprintf(f, probe
                       ? "| budget | blocks | policy | protected | recalled | compressions |\n"
                         "|---|---|---|---|---|---|\n"
                       : "| budget | blocks | policy | ppl (all) | ppl (past budget) | full-KV ppl "
                         "(past budget) | top-1 agreement | compressions |\n"
                         "|---|---|---|---|---|---|---|---|\n");
    else
        fprintf(f, probe ? "budget    blocks        policy     protected  recalled  compressions\n"
                         : "budget    blocks        policy     ppl(all)  ppl(past)  full(past)  "
                           "top1-agree  compressions\n");
    for (int i = 0; i < nr; i++) {
        const ppl_row *r = &rows[i];
        char blocks[32];
        snprintf(blocks, sizeof blocks, "%lld (%.1f%%)", (long long)r->blocks,
                 100.0 * (double)(r->blocks * bs) / window);
        const char *pol = r->blocks ? pol_name(r->eviction) : "-";
        if (md) fputs("| ", f);
        if (probe)
            fprintf(f,
                    md ? "%s%s%s%s%s%s%s%s%d/%d%s%.1f" : "%-8s%s%-12s%s%-9s%s%-9s%s%3d/%-5d%s%.1f",
                    r->label, sep, r->blocks ? blocks : "all", sep, pol, sep,
                    r->blocks ? (r->protect ? "yes" : "no") : "-", sep, r->correct, n, sep,
                    r->compressions);
        else if (!r->blocks)
            fprintf(f,
                    md ? "%s%s%s%s%s%s%.3f%s%s%s%s%s%s%s%.1f"
                       : "%-8s%s%-12s%s%-9s%s%8.3f%s%9s%s%10s%s%10s%s%.1f",
                    r->label, sep, "all", sep, pol, sep, r->ppl_all, sep, "-", sep, "-", sep, "-",
                    sep, r->compressions);
        else
            fprintf(f,
                    md ? "%s%s%s%s%s%s%.3f%s%.3f%s%.3f%s%.4f%s%.1f"
                       : "%-8s%s%-12s%s%-9s%s%8.3f%s%9.3f%s%10.3f%s%10.4f%s%.1f",
                    r->label, sep, blocks, sep, pol, sep, r->ppl_all, sep, r->ppl_past, sep,
                    r->ppl_full_past, sep, r->agree, sep, r->compressions);
        fputs(md ? " |\n" : "\n", f);
    }
}

int bench_ppl(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return rc;
    const char *texts = NULL, *budgets = "50%,25%,12.5%", *baselines = "streaming", *md = NULL;
    int64_t n = 2, window = 4096, prompt = 16;
    bool probe = false;
    cli c;
    cli_init(&c, "bench ppl", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--text"))
            rc = cli_str(&c, &texts);
        else if (!strcmp(o, "--n"))
            rc = cli_int(&c, &n, 1, 4096);
        else if (!strcmp(o, "--window"))
            rc = cli_int(&c, &window, 64, 1 << 20);
        else if (!strcmp(o, "--prompt"))
            rc = cli_int(&c, &prompt, 1, 1 << 20);
        else if (!strcmp(o, "--budgets"))
            rc = cli_str(&c, &budgets);
        else if (!strcmp(o, "--baselines"))
            rc = cli_str(&c, &baselines);
        else if (!strcmp(o, "--probe"))
            probe = true;
        else if (!strcmp(o, "--md"))
            rc = cli_str(&c, &md);
        else
            rc = cli_unknown(&c, o);
    }
    if (rc) return rc;
    if (!texts) return err_set(ZP_EINVAL, "--text FILE[,FILE...] is required");
    if (prompt >= window)
        return err_set(ZP_EINVAL, "--prompt %lld must be below --window %lld", (long long)prompt,
                       (long long)window);
    int base_pol[2], nbase = 0;
    for (const char *s = baselines; *s;) {
        size_t l = strcspn(s, ",");
        int pol = l == 9 && !strncmp(s, "streaming", l) ? CONF_EVICTION_STREAMING
                  : l == 6 && !strncmp(s, "random", l)  ? CONF_EVICTION_RANDOM
                                                        : -1;
        if (pol < 0 || nbase == 2)
            return err_set(ZP_EINVAL, "--baselines: '%.*s' is not streaming or random", (int)l, s);
        base_pol[nbase++] = pol;
        s += l + (s[l] == ',');
    }
    ppl_row rows[PPL_MAX_ROWS];
    int nr = 0;
    rows[nr++] = (ppl_row){.label = "full"};
    for (const char *s = budgets; *s;) {
        size_t l = strcspn(s, ",");
        ppl_row r = {0};
        snprintf(r.label, sizeof r.label, "%.*s", (int)l, s);
        char *end;
        double v = strtod(r.label, &end);
        if (!strcmp(end, "b") && v >= 1 && v == (int64_t)v)
            r.blocks = (int64_t)v;
        else if (!strcmp(end, "%") && v > 0 && v < 100)
            r.blocks = (int64_t)(v / 100.0 * (double)window / (double)cf.block_size + 0.5);
        else
            return err_set(ZP_EINVAL, "--budgets: '%s' is not P%% or Nb", r.label);
        if (r.blocks < 1) r.blocks = 1;
        for (int p = 0; p < (probe ? 2 : 1); p++)
            for (int k = -1; k < nbase; k++) {
                if (nr == PPL_MAX_ROWS) return err_set(ZP_ELIMIT, "--budgets: too many rows");
                rows[nr] = r;
                rows[nr].eviction = k < 0 ? cf.eviction : base_pol[k];
                rows[nr].baseline = k >= 0;
                rows[nr++].protect = p;
            }
        s += l + (s[l] == ',');
    }

    arena a;
    if ((rc = arena_init(&a, "bench", (size_t)1 << 30))) return rc;
    tokenizer *tk;
    char *text = NULL;
    size_t len = 0, n_ids;
    ppl_ctx ctx = {.n = (int32_t)n, .probe = probe};
    if ((rc = tok_load(&tk, &a, cf.model)) || (rc = read_texts(&a, texts, &text, &len))) goto out;
    int32_t *ids = arena_alloc(&a, sizeof(int32_t) * (len + 1), 4, "text ids");
    if (!ids) {
        rc = ZP_ENOMEM;
        goto out;
    }
    if ((rc = tok_encode(tk, text, len, false, ids, len + 1, &n_ids)) ||
        (rc = make_windows(&a, tk, ids, n_ids, &ctx, (int32_t)window, (int32_t)prompt)))
        goto out;
    fprintf(stderr, "bench ppl: %d windows of %lld tokens (%zu in the texts), block_size %lld%s\n",
            ctx.n, (long long)window, n_ids, (long long)cf.block_size,
            probe ? ", recall probe" : "");
    for (int i = 0; i < nr; i++) {
        if ((rc = run_row(&cf, tk, &ctx, &rows[i]))) goto out;
        fprintf(stderr, "  %-8s %-9s%s %.1f s\n", rows[i].label,
                rows[i].blocks ? pol_name(rows[i].eviction) : "-",
                rows[i].protect ? " protected" : "", rows[i].wall);
    }
    print_table(stdout, rows, nr, (int32_t)window, (int32_t)cf.block_size, probe, ctx.n, false);
    if (md) {
        FILE *f = fopen(md, "w");
        if (!f) {
            rc = err_set(ZP_EIO, "%s: cannot write", md);
            goto out;
        }
        print_table(f, rows, nr, (int32_t)window, (int32_t)cf.block_size, probe, ctx.n, true);
        fclose(f);
    }
out:
    arena_release(&a);
    return rc;
}
