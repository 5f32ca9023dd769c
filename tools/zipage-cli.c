/* zipage-cli: the static (musl) command-line client of a running `zipage serve`, built on
 * libzipage.a only (ipc/zipage.h).
 *
 *   zipage-cli [--name NAME] generate --prompt TEXT | --prompt-ids "1 2 3" [--max-tokens N]
 *              [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed S]
 *              [--ignore-eos] [--json]
 *   zipage-cli [--name NAME] chat [--system TEXT] [--max-tokens N] [--temperature T] [--thinking]
 *   zipage-cli [--name NAME] stats [--json | --prometheus]
 *   zipage-cli [--name NAME] cancel --slot N [--id ID]
 *   zipage-cli [--name NAME] bench-ipc [--requests N] [--window W] [--mode busy|futex|both]
 *
 * --engine-uid UID (anywhere, like --name) trusts an engine run by that user; otherwise only
 * an object owned by our own uid is used (ipc/zipage.h, zipage_options.engine_uid).
 *
 * A tool run before any engine rules apply: it uses libc freely. Exit status: 0 ok, 2 bad
 * input (options, or a request the engine refused as invalid), 1 anything else.
 */
#include "ipc/zipage.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *g_name = "zipage";
static zipage_options g_opts; /* --engine-uid */

static int usage(void) {
    fprintf(stderr,
            "usage: zipage-cli [--name NAME] [--engine-uid UID] COMMAND [options]\n"
            "  generate  --prompt TEXT | --chat-text USER_MESSAGE | --prompt-ids \"1 2 3\"\n"
            "            [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]\n"
            "            [--seed S] [--ignore-eos] [--no-thinking] [--no-compress]\n"
            "            [--kv-budget-blocks N] [--protect-prompt N] [--json] [--usage]\n"
            "  chat      [--system TEXT] [--max-tokens N] [--temperature T] [--thinking]\n"
            "  stats     [--json | --prometheus]\n"
            "  cancel    --slot N [--id ID]   (engine must run with ipc_admin_cancel = true)\n"
            "  bench-ipc [--requests N] [--window W] [--mode busy|futex|both]\n");
    return 2;
}

static int fail(int rc) {
    fprintf(stderr, "zipage-cli: %s: %s\n", zipage_strerror(rc), zipage_last_error());
    return rc == ZIPAGE_E_INVALID || rc == ZIPAGE_E_TOO_LARGE ? 2 : 1;
}

static int bad_opt(const char *fmt, const char *a) {
    fprintf(stderr, "zipage-cli: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Option value parsing: 0 or an exit status. */
static int need(int argc, char **argv, int i) {
    return i + 1 < argc ? 0 : bad_opt("%s needs a value", argv[i]);
}
static int num(const char *opt, const char *s, double lo, double hi, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(*v) || *v < lo || *v > hi) {
        fprintf(stderr, "zipage-cli: %s: '%s' is not a number in [%g, %g]\n", opt, s, lo, hi);
        return 2;
    }
    return 0;
}

/* Writes s as a JSON string literal. */
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch == '\r')
            fputs("\\r", f);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static zipage_client *connect_or_die(int spin_us, int *rc) {
    zipage_client *c = NULL;
    zipage_options o = g_opts;
    o.spin_us = spin_us;
    *rc = zipage_connect(&c, g_name, &o);
    return c;
}

/* A growing byte buffer (CLI only). */
typedef struct buf {
    char *p;
    size_t n, cap;
} buf;
static void buf_add(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fputs("zipage-cli: out of memory\n", stderr);
            exit(1);
        }
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* Streams request r to completion: prints pieces unless quiet, collects ids and text. */
static int run_stream(zipage_client *c, const zipage_request *r, bool quiet, buf *text,
                      int32_t **ids, size_t *nids, zipage_event *fin) {
    uint64_t id;
    int rc = zipage_submit(c, r, &id);
    if (rc) return rc;
    size_t cap = 0;
    for (;;) {
        zipage_event ev[64];
        int n = zipage_wait(c, ev, 64, -1);
        if (n < 0) return n;
        for (int i = 0; i < n; i++) {
            if (ev[i].req_id != id) continue;
            if (ev[i].type == ZIPAGE_EV_FINAL) {
                *fin = ev[i];
                if (!quiet) fflush(stdout);
                return 0;
            }
            if (!(ev[i].flags & ZIPAGE_EVF_CONT)) {
                if (*nids == cap) {
                    cap = cap ? cap * 2 : 256;
                    *ids = realloc(*ids, cap * sizeof **ids);
                    if (!*ids) return ZIPAGE_E_SYS;
                }
                (*ids)[(*nids)++] = ev[i].token;
            }
            buf_add(text, ev[i].text, ev[i].text_len);
            if (!quiet) {
                fwrite(ev[i].text, 1, ev[i].text_len, stdout);
                fflush(stdout);
            }
        }
    }
}

static int cmd_generate(int argc, char **argv) {
    zipage_request r;
    zipage_request_default(&r);
    bool json = false, usage = false, thinking = true;
    const char *prompt = NULL, *pids = NULL, *chat = NULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        double v = 0;
        int rc = 0;
        if (!strcmp(o, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(o, "--usage")) {
            usage = true;
            continue;
        }
        if (!strcmp(o, "--no-compress")) {
            r.params.compress = 0;
            continue;
        }
        if (!strcmp(o, "--no-thinking")) {
            thinking = false;
            continue;
        }
        if (!strcmp(o, "--ignore-eos")) {
            r.params.ignore_eos = true;
            continue;
        }
        if ((rc = need(argc, argv, i))) return rc;
        const char *val = argv[++i];
        if (!strcmp(o, "--prompt"))
            prompt = val;
        else if (!strcmp(o, "--prompt-ids"))
            pids = val;
        else if (!strcmp(o, "--chat-text"))
            chat = val;
        else if (!strcmp(o, "--kv-budget-blocks") && !(rc = num(o, val, 1, 1 << 20, &v)))
            r.params.kv_budget_blocks = (int32_t)v;
        else if (!strcmp(o, "--protect-prompt") && !(rc = num(o, val, 0, 1 << 24, &v)))
            r.params.protect_prompt = (int32_t)v;
        else if (!strcmp(o, "--max-tokens") && !(rc = num(o, val, 1, 1 << 30, &v)))
            r.params.max_tokens = (int32_t)v;
        else if (!strcmp(o, "--temperature") && !(rc = num(o, val, 0, 100, &v)))
            r.params.temperature = (float)v;
        else if (!strcmp(o, "--top-k") && !(rc = num(o, val, 0, 1 << 30, &v)))
            r.params.top_k = (int32_t)v;
        else if (!strcmp(o, "--top-p") && !(rc = num(o, val, 0, 1, &v)))
            r.params.top_p = (float)v;
        else if (!strcmp(o, "--min-p") && !(rc = num(o, val, 0, 1, &v)))
            r.params.min_p = (float)v;
        else if (!strcmp(o, "--seed") && !(rc = num(o, val, 0, 1.8e19, &v)))
            r.params.seed = (uint64_t)v;
        else if (!rc)
            return bad_opt("generate: unknown option '%s'", o);
        if (rc) return rc;
    }
    if (!!prompt + !!pids + !!chat != 1)
        return bad_opt("generate: give exactly one of --prompt, --chat-text and --prompt-ids%s", "");
    int32_t *pv = NULL;
    size_t np = 0;
    if (pids) {
        pv = malloc((strlen(pids) / 2 + 1) * sizeof *pv);
        if (!pv) return 1;
        for (const char *s = pids; *s;) {
            while (*s == ' ' || *s == ',')
                s++;
            if (!*s) break;
            char *end;
            errno = 0;
            long x = strtol(s, &end, 10);
            if (end == s || errno || x < 0 || x > INT32_MAX)
                return bad_opt("--prompt-ids: bad id list '%s'", pids);
            pv[np++] = (int32_t)x;
            s = end;
        }
        r.kind = ZIPAGE_PROMPT_IDS;
        r.ids = pv;
        r.n_ids = np;
    } else if (chat) {
        /* one user message rendered by the model's chat template */
        size_t cap = 6 * strlen(chat) + 64;
        char *m = malloc(cap);
        if (!m) return 1;
        size_t k = (size_t)snprintf(m, cap, "[{\"role\":\"user\",\"content\":\"");
        for (const char *p = chat; *p; p++) {
            unsigned char ch = (unsigned char)*p;
            if (ch == '"' || ch == '\\') k += (size_t)snprintf(m + k, cap - k, "\\%c", ch);
            else if (ch < 0x20) k += (size_t)snprintf(m + k, cap - k, "\\u%04x", ch);
            else m[k++] = (char)ch;
        }
        k += (size_t)snprintf(m + k, cap - k, "\"}]");
        r.kind = ZIPAGE_PROMPT_CHAT;
        r.enable_thinking = thinking;
        r.text = m;
        r.text_len = k;
    } else {
        r.text = prompt;
        r.text_len = strlen(prompt);
    }
    int rc;
    zipage_client *c = connect_or_die(0, &rc);
    if (!c) return fail(rc);
    buf text = {0};
    buf_add(&text, "", 0);
    int32_t *ids = NULL;
    size_t nids = 0;
    zipage_event fin;
    double t0 = now_s();
    rc = run_stream(c, &r, json, &text, &ids, &nids, &fin);
    double dt = now_s() - t0;
    if (rc) {
        zipage_disconnect(c);
        return fail(rc);
    }
    if (json) {
        printf("{\"prompt_tokens\": %d, \"token_ids\": [", fin.prompt_tokens);
        for (size_t i = 0; i < nids; i++)
            printf("%s%d", i ? ", " : "", ids[i]);
        printf("], \"text\": ");
        json_str(stdout, text.p, text.n);
        printf(", \"finish_reason\": \"%s\"", zipage_finish_name(fin.finish));
        if (fin.finish == ZIPAGE_FINISH_ERROR) {
            printf(", \"error\": ");
            json_str(stdout, fin.text, fin.text_len);
        }
        printf(", \"stats\": {\"tokens_per_s\": %.2f, \"kv_blocks_peak\": %d, \"compressions\": %d, "
               "\"evicted_tokens\": %lld}}\n",
               dt > 0 ? (double)fin.completion_tokens / dt : 0.0, fin.kv_blocks_peak,
               fin.compressions, (long long)fin.evicted_tokens);
    } else {
        printf("\n");
        if (usage)
            fprintf(stderr, "[%s: %d prompt + %d completion tokens, KV peak %d blocks, %d "
                    "compressions, %lld tokens evicted, %.1f tokens/s]\n",
                    zipage_finish_name(fin.finish), fin.prompt_tokens, fin.completion_tokens,
                    fin.kv_blocks_peak, fin.compressions, (long long)fin.evicted_tokens,
                    dt > 0 ? (double)fin.completion_tokens / dt : 0.0);
    }
    free(ids);
    free(text.p);
    free(pv);
    rc = 0;
    if (fin.finish == ZIPAGE_FINISH_ERROR) {
        if (!json)
            fprintf(stderr, "zipage-cli: %s: %.*s\n", zipage_strerror(fin.error), (int)fin.text_len,
                    fin.text);
        rc = fin.error == ZIPAGE_E_INVALID ? 2 : 1;
    }
    zipage_disconnect(c); /* fin.text points into the mapping until here */
    return rc;
}

static void add_message(buf *h, const char *role, const char *s, size_t n) {
    FILE *f = NULL;
    char *mem = NULL;
    size_t len = 0;
    f = open_memstream(&mem, &len);
    if (!f) exit(1);
    fprintf(f, "%s{\"role\": \"%s\", \"content\": ", h->n > 1 ? ", " : "", role);
    json_str(f, s, n);
    fputc('}', f);
    fclose(f);
    buf_add(h, mem, len);
    free(mem);
}

static int cmd_chat(int argc, char **argv) {
    zipage_request r;
    zipage_request_default(&r);
    r.kind = ZIPAGE_PROMPT_CHAT;
    r.params.max_tokens = 1024;
    const char *system = NULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        double v;
        int rc = 0;
        if (!strcmp(o, "--thinking"))
            r.enable_thinking = true;
        else if ((rc = need(argc, argv, i)))
            return rc;
        else if (!strcmp(o, "--system"))
            system = argv[++i];
        else if (!strcmp(o, "--max-tokens")) {
            if ((rc = num(o, argv[++i], 1, 1 << 30, &v))) return rc;
            r.params.max_tokens = (int32_t)v;
        } else if (!strcmp(o, "--temperature")) {
            if ((rc = num(o, argv[++i], 0, 100, &v))) return rc;
            r.params.temperature = (float)v;
        } else
            return bad_opt("chat: unknown option '%s'", o);
    }
    int rc;
    zipage_client *c = connect_or_die(0, &rc);
    if (!c) return fail(rc);
    buf hist = {0};
    buf_add(&hist, "[", 1);
    if (system) add_message(&hist, "system", system, strlen(system));
    static char line[65536];
    for (;;) {
        fputs("> ", stderr);
        if (!fgets(line, sizeof line, stdin)) break;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n) continue;
        add_message(&hist, "user", line, n);
        buf msgs = {0};
        buf_add(&msgs, hist.p, hist.n);
        buf_add(&msgs, "]", 1);
        r.text = msgs.p;
        r.text_len = msgs.n;
        buf reply = {0};
        buf_add(&reply, "", 0);
        int32_t *ids = NULL;
        size_t nids = 0;
        zipage_event fin;
        rc = run_stream(c, &r, false, &reply, &ids, &nids, &fin);
        printf("\n");
        free(msgs.p);
        free(ids);
        if (rc) {
            zipage_disconnect(c);
            return fail(rc);
        }
        if (fin.finish == ZIPAGE_FINISH_ERROR)
            fprintf(stderr, "zipage-cli: %s: %.*s\n", zipage_strerror(fin.error), (int)fin.text_len,
                    fin.text);
        else
            add_message(&hist, "assistant", reply.p, reply.n);
        free(reply.p);
    }
    free(hist.p);
    zipage_disconnect(c);
    return 0;
}

static int cmd_stats(int argc, char **argv) {
    int fmt = 0; /* 0 text, 1 json, 2 prometheus */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            fmt = 1;
        else if (!strcmp(argv[i], "--prometheus"))
            fmt = 2;
        else
            return bad_opt("stats: unknown option '%s'", argv[i]);
    }
    int rc;
    zipage_client *c = connect_or_die(0, &rc);
    if (!c) return fail(rc);
    zipage_stats s;
    rc = zipage_get_stats(c, &s);
    zipage_disconnect(c);
    if (rc) return fail(rc);
    /* one table drives all three formats */
    struct {
        const char *key, *help;
        double v;
        bool counter;
    } m[] = {
        {"running", "requests running", s.running, false},
        {"waiting", "requests waiting", s.waiting, false},
        {"max_concurrency", "most requests at once", s.max_concurrency, false},
        {"blocks_total", "KV blocks in the pool", s.blocks_total, false},
        {"blocks_used", "KV blocks in use", s.blocks_used, false},
        {"blocks_free", "KV blocks free", s.blocks_free, false},
        {"steps", "engine steps", (double)s.steps, true},
        {"prompt_tokens", "prompt tokens processed", (double)s.prompt_tokens, true},
        {"completion_tokens", "tokens generated", (double)s.completion_tokens, true},
        {"preemptions", "requests preempted", (double)s.preemptions, true},
        {"prefix_hit_tokens", "prompt tokens served from the prefix cache",
         (double)s.prefix_hit_tokens, true},
        {"compressions", "KV compressions", (double)s.compressions, true},
        {"evicted_tokens", "tokens evicted by compression", (double)s.evicted_tokens, true},
        {"busy_seconds", "seconds spent in engine steps", s.busy_seconds, true},
        {"tokens_per_s", "completion tokens per busy second", s.tokens_per_s, false},
        {"clients", "attached clients", s.clients, false},
        {"inflight", "requests in flight over IPC", s.inflight, false},
        {"max_clients", "client slots", s.max_clients, false},
        {"submitted", "requests submitted over IPC", (double)s.submitted, true},
        {"completed", "requests completed", (double)s.completed, true},
        {"rejected", "requests refused (invalid or backpressure)", (double)s.rejected, true},
        {"client_deaths", "clients that died attached", (double)s.client_deaths, true},
        {"protocol_errors", "clients detached for protocol violations", (double)s.protocol_errors,
         true},
    };
    size_t n = sizeof m / sizeof m[0];
    if (fmt == 1) {
        printf("{\"model\": ");
        json_str(stdout, s.model, strlen(s.model));
        printf(", \"backend\": ");
        json_str(stdout, s.backend, strlen(s.backend));
        printf(", \"engine_pid\": %d", s.engine_pid);
        for (size_t i = 0; i < n; i++)
            printf(", \"%s\": %.17g", m[i].key, m[i].v);
        printf("}\n");
    } else if (fmt == 2) {
        printf("# HELP zipage_info engine identity\n# TYPE zipage_info gauge\n"
               "zipage_info{model=\"%s\",backend=\"%s\",name=\"%s\"} 1\n",
               s.model, s.backend, g_name);
        for (size_t i = 0; i < n; i++)
            printf("# HELP zipage_%s%s %s\n# TYPE zipage_%s%s %s\nzipage_%s%s %.17g\n", m[i].key,
                   m[i].counter ? "_total" : "", m[i].help, m[i].key, m[i].counter ? "_total" : "",
                   m[i].counter ? "counter" : "gauge", m[i].key, m[i].counter ? "_total" : "",
                   m[i].v);
    } else {
        printf("engine %s: model %s, backend %s, pid %d\n", g_name, s.model, s.backend,
               s.engine_pid);
        for (size_t i = 0; i < n; i++)
            printf("  %-18s %.10g\n", m[i].key, m[i].v);
    }
    return 0;
}

static int cmd_cancel(int argc, char **argv) {
    double slot = -1, id = 0;
    for (int i = 1; i < argc; i++) {
        int rc = need(argc, argv, i);
        if (rc) return rc;
        if (!strcmp(argv[i], "--slot"))
            rc = num(argv[i], argv[i + 1], 0, 1 << 20, &slot);
        else if (!strcmp(argv[i], "--id"))
            rc = num(argv[i], argv[i + 1], 1, 1.8e19, &id);
        else
            return bad_opt("cancel: unknown option '%s'", argv[i]);
        if (rc) return rc;
        i++;
    }
    if (slot < 0) return bad_opt("cancel: --slot is required%s", "");
    int rc;
    zipage_client *c = connect_or_die(0, &rc);
    if (!c) return fail(rc);
    rc = zipage_cancel_client(c, (uint32_t)slot, (uint64_t)id);
    zipage_disconnect(c);
    return rc ? fail(rc) : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Round trips of 1-token requests, then a window of 16-token streams. */
static int bench_mode(const char *mode, int spin_us, int n, int window) {
    int rc;
    zipage_client *c = connect_or_die(spin_us, &rc);
    if (!c) return fail(rc);
    double *lat = malloc((size_t)n * sizeof *lat);
    if (!lat) return 1;
    zipage_request r;
    zipage_request_default(&r);
    r.text = "x";
    r.text_len = 1;
    r.params.max_tokens = 1;
    zipage_event ev[64];
    for (int i = 0; i < n; i++) {
        uint64_t id;
        double t0 = now_s();
        if ((rc = zipage_submit(c, &r, &id))) return fail(rc);
        for (bool done = false; !done;) {
            int k = zipage_wait(c, ev, 64, 5000);
            if (k < 0) return fail(k);
            for (int j = 0; j < k; j++)
                done |= ev[j].type == ZIPAGE_EV_FINAL;
        }
        lat[i] = (now_s() - t0) * 1e6;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    double p50 = lat[n / 2], p99 = lat[(size_t)(n * 0.99)], p999 = lat[(size_t)(n * 0.999)];
    /* throughput */
    static const char prompt[16] = "0123456789abcdef";
    r.text = prompt;
    r.text_len = 16;
    r.params.max_tokens = 16;
    long msgs = 0;
    int submitted = 0, finished = 0;
    double t0 = now_s();
    while (finished < n) {
        while (submitted < n && zipage_inflight(c) < window) {
            uint64_t id;
            rc = zipage_submit(c, &r, &id);
            if (rc == ZIPAGE_E_BUSY) break;
            if (rc) return fail(rc);
            submitted++;
        }
        int k = zipage_wait(c, ev, 64, 5000);
        if (k < 0) return fail(k);
        msgs += k;
        for (int j = 0; j < k; j++)
            finished += ev[j].type == ZIPAGE_EV_FINAL;
    }
    double dt = now_s() - t0;
    printf("bench-ipc mode=%-5s requests=%d round-trip us: p50=%.1f p99=%.1f p99.9=%.1f | "
           "window=%d x 16-token streams: %.0f msgs/s, %.0f req/s\n",
           mode, n, p50, p99, p999, window, (double)msgs / dt, (double)n / dt);
    fflush(stdout);
    free(lat);
    zipage_disconnect(c);
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    double n = 20000, window = 32;
    const char *mode = "both";
    for (int i = 1; i < argc; i++) {
        int rc = need(argc, argv, i);
        if (rc) return rc;
        if (!strcmp(argv[i], "--requests"))
            rc = num(argv[i], argv[i + 1], 10, 1e8, &n);
        else if (!strcmp(argv[i], "--window"))
            rc = num(argv[i], argv[i + 1], 1, 65536, &window);
        else if (!strcmp(argv[i], "--mode"))
            mode = argv[i + 1];
        else
            return bad_opt("bench-ipc: unknown option '%s'", argv[i]);
        if (rc) return rc;
        i++;
    }
    bool busy = !strcmp(mode, "busy") || !strcmp(mode, "both");
    bool futex = !strcmp(mode, "futex") || !strcmp(mode, "both");
    if (!busy && !futex) return bad_opt("bench-ipc: --mode '%s' is not busy, futex or both", mode);
    int rc = 0;
    if (busy) rc = bench_mode("busy", ZIPAGE_SPIN_FOREVER, (int)n, (int)window);
    if (!rc && futex) rc = bench_mode("futex", ZIPAGE_SPIN_NONE, (int)n, (int)window);
    return rc;
}

int main(int argc, char **argv) {
    /* --name and --engine-uid may stand before or after the command */
    int k = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--name")) {
            if (i + 1 >= argc) return bad_opt("--name needs a value%s", "");
            g_name = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--engine-uid")) {
            double uid;
            if (i + 1 >= argc) return bad_opt("--engine-uid needs a value%s", "");
            if (num(argv[i], argv[i + 1], 0, 4294967294.0, &uid)) return 2;
            if (uid != floor(uid)) return bad_opt("--engine-uid: '%s' is not a uid", argv[i + 1]);
            g_opts.engine_uid_set = 1;
            g_opts.engine_uid = (uint32_t)uid;
            i++;
            continue;
        }
        argv[k++] = argv[i];
    }
    argc = k;
    if (argc < 2) return usage();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "chat")) return cmd_chat(argc - 1, argv + 1);
    if (!strcmp(cmd, "stats")) return cmd_stats(argc - 1, argv + 1);
    if (!strcmp(cmd, "cancel")) return cmd_cancel(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench-ipc")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage();
        return 0;
    }
    fprintf(stderr, "zipage-cli: unknown command '%s'\n", cmd);
    return usage();
}
