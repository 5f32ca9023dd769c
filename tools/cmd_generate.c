/* zipage generate: runs requests through the engine in this process and prints results.
 *
 * One request from the command line (--prompt TEXT, --chat MESSAGES.json or --prompt-ids),
 * or many from a JSONL file (--requests FILE: one object per line with "id", "prompt" |
 * "messages" | "prompt_ids", sampling fields, "compress", "kv_budget_blocks",
 * "protect_prompt" and an optional "arrival_step"; --protect-prompt N is the default of lines
 * that give no "protect_prompt"). Text needs the model's tokenizer (tokenizer.json, or a
 * GGUF file's metadata). Results: the completion text streamed through the detokenizer (ids
 * when the model has no tokenizer), or with --json one JSON object per request; with
 * --requests a summary JSON line goes to stderr at the end.
 *
 * Memory: everything (requests, output buffers) is sized and carved before the arena is
 * frozen; the generation loop allocates nothing.
 */
#include "arena/err.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct gen_req {
    char id[128];
    engine_request rq;
    int64_t arrival_step;
    uint64_t req_id;
    bool submitted, done;
    int32_t *out;       /* completion ids */
    float *lps;         /* their logprobs */
    int32_t n_out, cap; /* completion ids so far, and room for them */
    engine_finish finish;
    char err[256];
    engine_usage usage;
    double t_submit, t_done;
    tok_stream st;
} gen_req;

typedef struct gen_ctx {
    gen_req *reqs;
    int32_t n;
    int32_t n_done;
    tokenizer *tk;   /* NULL when the model has no tokenizer */
    bool stream_out; /* print text pieces as they arrive */
    char *piece;     /* detokenizer output buffer */
    size_t piece_cap;
    char *text, *esc; /* whole-completion text and its JSON escape, for --json */
    size_t text_cap, esc_cap;
} gen_ctx;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Engine output callback: user_tag is the index into ctx->reqs. */
static void on_event(void *user, const engine_event *ev) {
    gen_ctx *c = user;
    gen_req *g = &c->reqs[ev->user_tag];
    if (ev->finish == ENGINE_RUNNING) {
        if (g->n_out < g->cap) {
            g->lps[g->n_out] = ev->logprob;
            g->out[g->n_out++] = ev->token;
        }
        size_t n;
        if (c->stream_out &&
            !tok_stream_push(c->tk, &g->st, ev->token, c->piece, c->piece_cap, &n)) {
            fwrite(c->piece, 1, n, stdout);
            fflush(stdout);
        }
        return;
    }
    if (c->stream_out) {
        size_t n;
        if (!tok_stream_flush(&g->st, c->piece, c->piece_cap, &n)) fwrite(c->piece, 1, n, stdout);
        fputc('\n', stdout);
    }
    g->done = true;
    g->finish = ev->finish;
    g->usage = ev->usage;
    g->t_done = now_s();
    if (ev->err_msg) snprintf(g->err, sizeof g->err, "%s", ev->err_msg);
    c->n_done++;
}

static int parse_ids(const char *s, int32_t *ids, int32_t cap, int32_t *n, const char *what) {
    *n = 0;
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\t')
            s++;
        if (!*s) break;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX)
            return err_set(ZP_EINVAL, "%s: '%s' is not a list of token ids", what, s);
        if (*n >= cap) return err_set(ZP_ELIMIT, "%s: more than %d ids", what, cap);
        ids[(*n)++] = (int32_t)v;
        s = end;
    }
    if (*n == 0) return err_set(ZP_EINVAL, "%s: no token ids", what);
    return 0;
}

static const char *finish_name(engine_finish f) {
    switch (f) {
    case ENGINE_FINISH_STOP:
        return "stop";
    case ENGINE_FINISH_LENGTH:
        return "length";
    case ENGINE_FINISH_CANCELLED:
        return "cancelled";
    case ENGINE_FINISH_ERROR:
        return "error";
    default:
        return "running";
    }
}

/* Where a JSONL request's text prompt or messages are (token indices, -1 = absent). */
typedef struct text_src {
    int prompt, messages;
    bool no_thinking;
} text_src;

/* Encodes a text prompt (the tokenizer's post-processor applied, as HF's
 * add_special_tokens) or the messages array token m of d rendered with the model's chat
 * template, into ids[0..*n). */
static int encode_prompt(gen_ctx *c, arena *a, const char *text, size_t len, const json_doc *d,
                         int m, bool thinking, int32_t *ids, int32_t cap, int32_t *n) {
    if (!c->tk)
        return err_set(ZP_EINVAL, "text prompts need a model with a tokenizer (tokenizer.json or "
                                  "GGUF tokenizer metadata)");
    size_t mark = arena_temp_mark(a), got = 0;
    int rc;
    if (d) {
        size_t bcap = d->len + 4096 + 256 * (size_t)json_len(d, m);
        char *buf = arena_temp(a, bcap, 8, "chat render");
        if (!buf) return ZP_ENOMEM;
        rc = chat_render(c->tk, d, m, true, thinking, buf, bcap, &len);
        if (!rc) rc = tok_encode(c->tk, buf, len, false, ids, (size_t)cap, &got);
    } else {
        rc = tok_encode(c->tk, text, len, true, ids, (size_t)cap, &got);
    }
    arena_temp_reset(a, mark);
    if (rc == ZP_ELIMIT)
        return err_set(ZP_EINVAL, "prompt longer than max_model_len %d tokens", cap);
    *n = (int32_t)got;
    return rc;
}

/* Reads one sampling / request field of a JSONL object into g. */
static int read_field(const json_doc *d, int k, int v, gen_req *g, int32_t *ids, int32_t cap,
                      text_src *ts, const char *where) {
    sampling_params *p = &g->rq.sp;
    double f;
    int64_t i;
    bool b;
    int rc = 0;
#define NUM(name, dst)                                                                             \
    if (json_str_eq(d, k, name)) return (rc = json_f64(d, v, &f)) ? rc : ((dst) = (float)f, 0)
#define INT(name, dst)                                                                             \
    if (json_str_eq(d, k, name)) {                                                                 \
        if ((rc = json_i64(d, v, &i))) return rc;                                                  \
        if (i < 0 || i > INT32_MAX)                                                                \
            return err_set(ZP_EINVAL, "%s: %s %lld out of range", where, name, (long long)i);      \
        (dst) = (int32_t)i;                                                                        \
        return 0;                                                                                  \
    }
    NUM("temperature", p->temperature);
    NUM("top_p", p->top_p);
    NUM("min_p", p->min_p);
    NUM("repetition_penalty", p->repetition_penalty);
    NUM("presence_penalty", p->presence_penalty);
    NUM("frequency_penalty", p->frequency_penalty);
    INT("top_k", p->top_k);
    INT("max_tokens", p->max_tokens);
    INT("kv_budget_blocks", g->rq.kv_budget_blocks);
    INT("protect_prompt", g->rq.protect_prompt);
#undef NUM
#undef INT
    if (json_str_eq(d, k, "seed")) {
        if ((rc = json_i64(d, v, &i))) return rc;
        p->seed = (uint64_t)i;
        return 0;
    }
    if (json_str_eq(d, k, "arrival_step")) return json_i64(d, v, &g->arrival_step);
    if (json_str_eq(d, k, "prompt")) {
        if (!json_is_str(d, v)) return err_set(ZP_EINVAL, "%s: \"prompt\" must be a string", where);
        ts->prompt = v;
        return 0;
    }
    if (json_str_eq(d, k, "messages")) {
        if (!json_is_arr(d, v))
            return err_set(ZP_EINVAL, "%s: \"messages\" must be an array", where);
        ts->messages = v;
        return 0;
    }
    if (json_str_eq(d, k, "enable_thinking"))
        return (rc = json_bool(d, v, &b)) ? rc : (ts->no_thinking = !b, 0);
    if (json_str_eq(d, k, "ignore_eos"))
        return (rc = json_bool(d, v, &b)) ? rc : (p->ignore_eos = b, 0);
    if (json_str_eq(d, k, "logprobs"))
        return (rc = json_bool(d, v, &b)) ? rc : (g->rq.logprobs = b, 0);
    if (json_str_eq(d, k, "compress"))
        return (rc = json_bool(d, v, &b)) ? rc : (g->rq.compress = b, 0);
    if (json_str_eq(d, k, "id")) {
        if (json_is_str(d, v)) return json_str(d, v, g->id, sizeof g->id, NULL);
        if ((rc = json_i64(d, v, &i))) return rc;
        snprintf(g->id, sizeof g->id, "%lld", (long long)i);
        return 0;
    }
    if (json_str_eq(d, k, "prompt_ids") || json_str_eq(d, k, "stop_ids")) {
        bool prompt = json_str_eq(d, k, "prompt_ids");
        if (!json_is_arr(d, v)) return err_set(ZP_EINVAL, "%s: expected an array of ids", where);
        int n = json_len(d, v);
        int32_t lim = prompt ? cap : SAMPLER_MAX_STOP;
        if (n > lim) return err_set(ZP_ELIMIT, "%s: more than %d ids", where, lim);
        int32_t *dst = prompt ? ids : p->stop_ids;
        for (int j = 0, el = v + 1; j < n; j++, el = json_skip(d, el)) {
            if ((rc = json_i64(d, el, &i))) return rc;
            if (i < 0 || i > INT32_MAX)
                return err_set(ZP_EINVAL, "%s: bad token id %lld", where, (long long)i);
            dst[j] = (int32_t)i;
        }
        if (prompt)
            g->rq.n_prompt = n;
        else
            p->n_stop = n;
        return 0;
    }
    const char *raw;
    int len = json_raw(d, k, &raw);
    return err_set(ZP_EINVAL, "%s: unknown field '%.*s'", where, len, raw);
}

/* Parses a JSONL requests file into g[0..*n), prompts into the arena. */
static int load_requests(gen_ctx *c, arena *a, const char *path, const sampling_params *defaults,
                         int32_t max_prompt, gen_req **out, int32_t *n) {
    char *text;
    size_t len;
    int rc = arena_read_file(a, path, &text, &len);
    if (rc) return rc;
    int32_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    lines++;
    gen_req *g = arena_alloc(a, sizeof *g * (size_t)lines, 64, "requests");
    if (!g) return ZP_ENOMEM;
    int32_t count = 0, lineno = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        lineno++;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        bool blank = true;
        for (size_t i = 0; i < ll; i++)
            blank &= line[i] == ' ' || line[i] == '\t' || line[i] == '\r';
        if (!blank) {
            size_t mark = arena_temp_mark(a);
            json_doc d;
            if ((rc = json_parse(&d, a, line, ll, where))) return rc;
            if (!json_is_obj(&d, 0)) return err_set(ZP_EINVAL, "%s: expected a JSON object", where);
            gen_req *r = &g[count];
            r->rq.sp = *defaults;
            r->rq.compress = -1;
            r->rq.protect_prompt = -1;
            snprintf(r->id, sizeof r->id, "%d", count);
            int32_t *ids = arena_temp(a, sizeof(int32_t) * (size_t)max_prompt, 4, "prompt");
            if (!ids) return ZP_ENOMEM;
            text_src ts = {-1, -1, false};
            for (int j = 0, k = 1; j < d.tok[0].size; j++, k = json_skip(&d, k + 1))
                if ((rc = read_field(&d, k, k + 1, r, ids, max_prompt, &ts, where))) return rc;
            if ((ts.prompt >= 0) + (ts.messages >= 0) + (r->rq.n_prompt > 0) != 1)
                return err_set(ZP_EINVAL, "%s: give exactly one of prompt, messages, prompt_ids",
                               where);
            if (ts.prompt >= 0) {
                size_t tl = (size_t)(d.tok[ts.prompt].end - d.tok[ts.prompt].start);
                char *txt = arena_temp(a, tl + 1, 8, "prompt text");
                if (!txt) return ZP_ENOMEM;
                if ((rc = json_str(&d, ts.prompt, txt, tl + 1, &tl)) ||
                    (rc = encode_prompt(c, a, txt, tl, NULL, 0, true, ids, max_prompt,
                                        &r->rq.n_prompt)))
                    return err_prefix(rc, "%s", where);
            } else if (ts.messages >= 0) {
                if ((rc = encode_prompt(c, a, NULL, 0, &d, ts.messages, !ts.no_thinking, ids,
                                        max_prompt, &r->rq.n_prompt)))
                    return err_prefix(rc, "%s", where);
            }
            int32_t *keep = arena_alloc(a, sizeof(int32_t) * (size_t)r->rq.n_prompt, 4, "prompt");
            if (!keep) return ZP_ENOMEM;
            memcpy(keep, ids, sizeof(int32_t) * (size_t)r->rq.n_prompt);
            r->rq.prompt_ids = keep;
            arena_temp_reset(a, mark);
            count++;
        }
        line = nl ? nl + 1 : NULL;
    }
    *out = g;
    *n = count;
    return 0;
}

static void print_ids(FILE *f, const int32_t *ids, int32_t n) {
    fputc('[', f);
    for (int32_t i = 0; i < n; i++)
        fprintf(f, i ? ",%d" : "%d", ids[i]);
    fputc(']', f);
}

static void print_result(gen_ctx *c, const gen_req *g, bool json, bool with_id) {
    if (!json) {
        if (c->stream_out) return; /* already printed */
        print_ids(stdout, g->out, g->n_out);
        fputc('\n', stdout);
        return;
    }
    double dt = g->t_done - g->t_submit;
    printf("{");
    if (with_id) {
        char esc[300];
        json_escape(g->id, strlen(g->id), esc, sizeof esc);
        printf("\"id\":%s,", esc);
    }
    printf("\"prompt_tokens\":%d,\"token_ids\":", g->rq.n_prompt);
    print_ids(stdout, g->out, g->n_out);
    printf(",\"finish_reason\":\"%s\"", finish_name(g->finish));
    if (c->tk) {
        /* the completion text (special tokens skipped), escaped through the piece buffer */
        size_t n;
        if (!tok_decode(c->tk, g->out, (size_t)g->n_out, true, c->text, c->text_cap, &n)) {
            long m = json_escape(c->text, n, c->esc, c->esc_cap);
            if (m > 0) printf(",\"text\":%s", c->esc);
        }
    }
    if (g->rq.logprobs) {
        printf(",\"logprobs\":[");
        for (int32_t i = 0; i < g->n_out; i++)
            printf(i ? ",%.6g" : "%.6g", (double)g->lps[i]);
        printf("]");
    }
    if (g->finish == ENGINE_FINISH_ERROR) {
        char esc[600];
        json_escape(g->err, strlen(g->err), esc, sizeof esc);
        printf(",\"error\":%s", esc);
    }
    printf(",\"stats\":{\"tokens_per_s\":%.2f,\"kv_blocks_peak\":%d,\"compressions\":%d,"
           "\"evicted_tokens\":%lld,\"cached_prompt_tokens\":%d}}\n",
           dt > 0 ? g->n_out / dt : 0.0, g->usage.kv_blocks_peak, g->usage.compressions,
           (long long)g->usage.evicted_tokens, g->usage.cached_prompt_tokens);
}

static void progress(const gen_ctx *c, const engine_stats *s) {
    fprintf(stderr, "\r[%d/%d done] running %d waiting %d blocks %d/%d  %.1f tok/s   ", c->n_done,
            c->n, s->running, s->waiting, s->blocks_used, s->blocks_total, s->tokens_per_s);
}

int cmd_generate(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("generate", rc);
    sampling_params sp;
    sampler_defaults(&sp);
    const char *prompt_ids = NULL, *requests = NULL, *prompt = NULL, *chat = NULL;
    bool json = false, logprobs = false, show_progress = false, no_thinking = false;
    int32_t protect = -1; /* --protect-prompt: -1 = the engine's default */
    cli c;
    cli_init(&c, "generate", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        int64_t iv;
        double fv;
        const char *sv;
        if (!strcmp(o, "--prompt-ids"))
            rc = cli_str(&c, &prompt_ids);
        else if (!strcmp(o, "--prompt"))
            rc = cli_str(&c, &prompt);
        else if (!strcmp(o, "--chat"))
            rc = cli_str(&c, &chat);
        else if (!strcmp(o, "--no-thinking"))
            no_thinking = true;
        else if (!strcmp(o, "--requests"))
            rc = cli_str(&c, &requests);
        else if (!strcmp(o, "--json"))
            json = true;
        else if (!strcmp(o, "--logprobs"))
            logprobs = true;
        else if (!strcmp(o, "--progress"))
            show_progress = true;
        else if (!strcmp(o, "--ignore-eos"))
            sp.ignore_eos = true;
        else if (!strcmp(o, "--max-tokens"))
            rc = cli_int(&c, &iv, 1, INT32_MAX), sp.max_tokens = (int32_t)iv;
        else if (!strcmp(o, "--protect-prompt"))
            rc = cli_int(&c, &iv, 0, INT32_MAX), protect = (int32_t)iv;
        else if (!strcmp(o, "--top-k"))
            rc = cli_int(&c, &iv, 0, INT32_MAX), sp.top_k = (int32_t)iv;
        else if (!strcmp(o, "--seed"))
            rc = cli_int(&c, &iv, 0, INT64_MAX), sp.seed = (uint64_t)iv;
        else if (!strcmp(o, "--temperature"))
            rc = cli_float(&c, &fv, 0, 1e6), sp.temperature = (float)fv;
        else if (!strcmp(o, "--top-p"))
            rc = cli_float(&c, &fv, 0, 1), sp.top_p = (float)fv;
        else if (!strcmp(o, "--min-p"))
            rc = cli_float(&c, &fv, 0, 1), sp.min_p = (float)fv;
        else if (!strcmp(o, "--repetition-penalty"))
            rc = cli_float(&c, &fv, 0, 1e6), sp.repetition_penalty = (float)fv;
        else if (!strcmp(o, "--presence-penalty"))
            rc = cli_float(&c, &fv, -2, 2), sp.presence_penalty = (float)fv;
        else if (!strcmp(o, "--frequency-penalty"))
            rc = cli_float(&c, &fv, -2, 2), sp.frequency_penalty = (float)fv;
        else if (!strcmp(o, "--stop-ids")) {
            if (!(rc = cli_str(&c, &sv)))
                rc = parse_ids(sv, sp.stop_ids, SAMPLER_MAX_STOP, &sp.n_stop, "--stop-ids");
        } else
            rc = cli_unknown(&c, o);
    }
    if (rc) return cli_fail("generate", rc);
    if (!!prompt_ids + !!requests + !!prompt + !!chat != 1)
        return cli_fail("generate", err_set(ZP_EINVAL, "give exactly one of --prompt, --chat, "
                                                       "--prompt-ids or --requests"));

    arena a;
    if ((rc = arena_init(&a, "host", (size_t)cf.host_arena_mb << 20)))
        return cli_fail("generate", rc);
    gen_ctx ctx = {0};
    engine *e = NULL;
    int32_t eos = -1;
    bool has_tok = false;
    if (cf.model[0] && (rc = tok_present(&a, cf.model, &has_tok))) goto out;
    if (has_tok) {
        if ((rc = tok_load(&ctx.tk, &a, cf.model))) goto out;
        eos = tok_eos_id(ctx.tk);
        ctx.piece_cap = tok_stream_cap(ctx.tk);
        ctx.piece = arena_alloc(&a, ctx.piece_cap, 8, "detokenizer");
        if (!ctx.piece) {
            rc = ZP_ENOMEM;
            goto out;
        }
    }
    if ((rc = engine_open(&e, &a, &cf, ctx.tk ? tok_vocab_size(ctx.tk) : 0, &eos, eos >= 0,
                          on_event, &ctx)))
        goto out;
    engine_info info;
    engine_get_info(e, &info);
    fprintf(stderr, "zipage generate: backend %s\n", info.backend_why);
    if (*info.backend_plans) fprintf(stderr, "zipage generate: %s\n", info.backend_plans);
    if (requests) {
        if ((rc = load_requests(&ctx, &a, requests, &sp, info.max_model_len, &ctx.reqs, &ctx.n)))
            goto out;
    } else if (prompt || chat) {
        ctx.n = 1;
        ctx.reqs = arena_alloc(&a, sizeof *ctx.reqs, 64, "request");
        int32_t *ids = arena_alloc(&a, sizeof(int32_t) * (size_t)info.max_model_len, 4, "prompt");
        if (!ctx.reqs || !ids) {
            rc = ZP_ENOMEM;
            goto out;
        }
        if (prompt) {
            rc = encode_prompt(&ctx, &a, prompt, strlen(prompt), NULL, 0, true, ids,
                               info.max_model_len, &ctx.reqs[0].rq.n_prompt);
        } else {
            json_doc d;
            rc = json_load(&d, &a, chat);
            if (!rc && !json_is_arr(&d, 0))
                rc = err_set(ZP_EINVAL, "%s: expected a JSON array of {role, content}", chat);
            if (!rc)
                rc = encode_prompt(&ctx, &a, NULL, 0, &d, 0, !no_thinking, ids, info.max_model_len,
                                   &ctx.reqs[0].rq.n_prompt);
        }
        if (rc) goto out;
        ctx.reqs[0].rq.prompt_ids = ids;
        ctx.reqs[0].rq.sp = sp;
        ctx.reqs[0].rq.compress = -1;
        ctx.reqs[0].rq.protect_prompt = -1;
    } else {
        ctx.n = 1;
        ctx.reqs = arena_alloc(&a, sizeof *ctx.reqs, 64, "request");
        int32_t *ids = arena_alloc(&a, sizeof(int32_t) * (size_t)info.max_model_len, 4, "prompt");
        if (!ctx.reqs || !ids) {
            rc = ZP_ENOMEM;
            goto out;
        }
        if ((rc = parse_ids(prompt_ids, ids, info.max_model_len, &ctx.reqs[0].rq.n_prompt,
                            "--prompt-ids")))
            goto out;
        ctx.reqs[0].rq.prompt_ids = ids;
        ctx.reqs[0].rq.sp = sp;
        ctx.reqs[0].rq.compress = -1;
        ctx.reqs[0].rq.protect_prompt = -1;
    }
    for (int32_t i = 0; i < ctx.n; i++) {
        gen_req *g = &ctx.reqs[i];
        g->rq.logprobs |= logprobs;
        if (g->rq.protect_prompt < 0) g->rq.protect_prompt = protect;
        g->rq.user_tag = (uint64_t)i;
        /* a request never generates past max_model_len */
        int32_t mt = g->rq.sp.max_tokens > 0 ? g->rq.sp.max_tokens : 1;
        if (mt > info.max_model_len) mt = info.max_model_len;
        g->cap = mt;
        g->out = arena_alloc_uninit(&a, sizeof(int32_t) * (size_t)mt, 4, "outputs");
        g->lps = arena_alloc_uninit(&a, sizeof(float) * (size_t)mt, 4, "outputs");
        if (!g->out || !g->lps) {
            rc = ZP_ENOMEM;
            goto out;
        }
    }
    for (int32_t i = 0; i < ctx.n; i++)
        tok_stream_init(&ctx.reqs[i].st, true);
    if (ctx.tk) {
        int32_t most = 1;
        for (int32_t i = 0; i < ctx.n; i++)
            if (ctx.reqs[i].rq.sp.max_tokens > most) most = ctx.reqs[i].rq.sp.max_tokens;
        if (most > info.max_model_len) most = info.max_model_len;
        ctx.text_cap = (size_t)most * ctx.piece_cap + 16;
        ctx.esc_cap = 6 * ctx.text_cap + 3;
        ctx.text = arena_alloc_uninit(&a, ctx.text_cap, 8, "completion text");
        ctx.esc = arena_alloc_uninit(&a, ctx.esc_cap, 8, "completion text");
        if (!ctx.text || !ctx.esc) {
            rc = ZP_ENOMEM;
            goto out;
        }
    }
    ctx.stream_out = ctx.tk && !json && !requests;
    arena_freeze(&a);

    bool tty = show_progress && isatty(2);
    double t0 = now_s();
    int64_t step = 0;
    int32_t submitted = 0;
    while (ctx.n_done < ctx.n) {
        for (int32_t i = 0; i < ctx.n; i++) {
            gen_req *g = &ctx.reqs[i];
            if (g->submitted || g->arrival_step > step) continue;
            g->submitted = true;
            g->t_submit = now_s();
            submitted++;
            if (engine_submit(e, &g->rq, &g->req_id)) {
                /* Rejected at once: report it like a finished request. */
                g->done = true;
                g->finish = ENGINE_FINISH_ERROR;
                g->t_done = g->t_submit;
                snprintf(g->err, sizeof g->err, "%s", err_msg());
                ctx.n_done++;
                if (!requests) {
                    rc = ZP_EINVAL;
                    goto out;
                }
            }
        }
        int left = engine_step(e);
        if (left < 0) {
            rc = left;
            goto out;
        }
        step++;
        if (tty && step % 8 == 0) {
            engine_stats s;
            engine_get_stats(e, &s);
            progress(&ctx, &s);
        }
    }
    double wall = now_s() - t0;
    if (tty) fputc('\n', stderr);
    int64_t ptoks = 0, ctoks = 0;
    for (int32_t i = 0; i < ctx.n; i++) {
        print_result(&ctx, &ctx.reqs[i], json || requests, requests != NULL);
        ptoks += ctx.reqs[i].rq.n_prompt;
        ctoks += ctx.reqs[i].n_out;
    }
    if (requests) {
        engine_stats s;
        engine_get_stats(e, &s);
        fprintf(stderr,
                "{\"requests\":%d,\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                "\"tokens_per_s\":%.2f,\"wall_s\":%.3f,\"steps\":%lld,\"peak_blocks\":%d,"
                "\"preemptions\":%lld,\"prefix_cache_hit_rate\":%.4f}\n",
                ctx.n, (long long)ptoks, (long long)ctoks, wall > 0 ? ctoks / wall : 0.0, wall,
                (long long)s.steps, s.blocks_peak, (long long)s.preemptions,
                s.prefix_query_tokens ? (double)s.prefix_hit_tokens / (double)s.prefix_query_tokens
                                      : 0.0);
    }
out:
    if (rc && !requests && ctx.n == 1 && ctx.reqs && ctx.reqs[0].err[0])
        err_set(rc, "%s", ctx.reqs[0].err);
    engine_close(e);
    arena_release(&a);
    return rc ? cli_fail("generate", rc) : 0;
}
