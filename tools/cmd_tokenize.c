/* zipage tokenize: the tokenizer from the command line.
 *   zipage tokenize --model DIR|FILE.gguf (--text T | --file F) [--special] [--decode]
 *                   [--skip-special] [--chat [--render] [--no-thinking] [--no-gen-prompt]]
 *                   [--batch] [--bench SECONDS]
 * Encodes the text and prints a JSON array of ids; with --decode the input is a JSON array
 * of ids and the text is printed. With --chat the input is a JSON array of {role, content}
 * messages, rendered with the model's chat template (engine/chat.h) and encoded; --render
 * prints the prompt text instead. With --batch the input is a JSON array of strings, each
 * encoded and printed as a JSON array of ids on a line of its own. --bench encodes the input
 * repeatedly for about SECONDS and prints MB/s and tokens/s per CPU-second of the encoding
 * thread (one core) and the first, cold-cache pass's MB/s. DIR needs only tokenizer.json
 * (+ optional tokenizer_config.json); a GGUF file gives its tokenizer metadata
 * (tok_load_gguf). Runs before any engine start-up, so it uses libc memory freely (the input
 * file is read into the arena). */
#include "arena/err.h"
#include "engine/chat.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int decode(tokenizer *t, arena *a, const char *in, size_t len, bool skip) {
    json_doc d;
    int rc = json_parse(&d, a, in, len, "--decode input");
    if (rc) return rc;
    if (!json_is_arr(&d, 0)) return err_set(ZP_EINVAL, "--decode input must be a JSON array of ids");
    size_t n = (size_t)json_len(&d, 0), cap = 16, out_len, tl;
    const char *ts;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    if (!ids) rc = err_set(ZP_ENOMEM, "out of memory");
    for (int i = 0, e = 1; !rc && (size_t)i < n; i++, e = json_skip(&d, e)) {
        int64_t v;
        if ((rc = json_i64(&d, e, &v))) break;
        if (v < INT32_MIN || v > INT32_MAX) rc = err_set(ZP_EINVAL, "id %lld out of range", (long long)v);
        ids[i] = (int32_t)v;
        if (!rc && !(rc = tok_token_bytes(t, ids[i], &ts, &tl))) cap += 3 * tl; /* U+FFFD: 3 per byte */
    }
    char *out = rc ? NULL : malloc(cap);
    if (!rc && !out) rc = err_set(ZP_ENOMEM, "out of memory");
    if (!rc) rc = tok_decode(t, ids, n, skip, out, cap, &out_len);
    if (!rc) fwrite(out, 1, out_len, stdout);
    free(ids);
    free(out);
    return rc;
}

/* Prints the ids of in[0..len) as a JSON array, or with bench > 0 the encode speed. */
static int encode(tokenizer *t, const char *in, size_t len, bool special, double bench) {
    size_t cap = len + 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return err_set(ZP_ENOMEM, "out of memory");
    /* CPU time of this thread, so other processes on a shared machine do not count */
    double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID), cold, el = 0, cpu;
    int rc = tok_encode(t, in, len, special, ids, cap, &n);
    cold = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    if (!rc && bench > 0) {
        long iters = 0;
        double t0 = clock_s(CLOCK_MONOTONIC);
        c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        do {
            rc = tok_encode(t, in, len, special, ids, cap, &n);
            iters++;
        } while (!rc && (el = clock_s(CLOCK_MONOTONIC) - t0) < bench);
        cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
        if (!rc)
            printf("{\"bytes\": %zu, \"tokens\": %zu, \"iterations\": %ld, \"cpu_seconds\": %.3f, "
                   "\"wall_seconds\": %.3f, \"MB_per_s\": %.2f, \"tokens_per_s\": %.0f, "
                   "\"first_pass_MB_per_s\": %.2f}\n",
                   len, n, iters, cpu, el, (double)len * iters / cpu / 1e6, (double)n * iters / cpu,
                   (double)len / cold / 1e6);
    } else if (!rc) {
        putchar('[');
        for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        puts("]");
    }
    free(ids);
    return rc;
}

/* --batch: every string of the JSON array in[0..len) encoded, one line of ids each. */
static int encode_batch(tokenizer *t, arena *a, const char *in, size_t len, bool special) {
    json_doc d;
    int rc = json_parse(&d, a, in, len, "--batch input");
    if (rc) return rc;
    if (!json_is_arr(&d, 0))
        return err_set(ZP_EINVAL, "--batch input must be a JSON array of strings");
    char *text = malloc(len + 1);
    if (!text) return err_set(ZP_ENOMEM, "out of memory");
    int n = json_len(&d, 0);
    for (int i = 0, e = 1; !rc && i < n; i++, e = json_skip(&d, e)) {
        size_t tl;
        if (!json_is_str(&d, e))
            rc = err_set(ZP_EINVAL, "--batch input: entry %d is not a string", i);
        if (!rc) rc = json_str(&d, e, text, len + 1, &tl);
        if (!rc) rc = encode(t, text, tl, special, 0);
    }
    free(text);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("tokenize", rc);
    cli c;
    cli_init(&c, "tokenize", argc, argv);
    const char *text = NULL, *file = NULL, *o;
    bool special = false, dec = false, skip = false, chat = false, show = false, think = true,
         gen = true, batch = false;
    double bench = 0;
    while (!rc && (o = cli_next(&c))) {
        if (!strcmp(o, "--text")) rc = cli_str(&c, &text);
        else if (!strcmp(o, "--file")) rc = cli_str(&c, &file);
        else if (!strcmp(o, "--special")) special = true;
        else if (!strcmp(o, "--decode")) dec = true;
        else if (!strcmp(o, "--skip-special")) skip = true;
        else if (!strcmp(o, "--chat")) chat = true;
        else if (!strcmp(o, "--render")) show = true;
        else if (!strcmp(o, "--no-thinking")) think = false;
        else if (!strcmp(o, "--no-gen-prompt")) gen = false;
        else if (!strcmp(o, "--batch"))
            batch = true;
        else if (!strcmp(o, "--bench")) rc = cli_float(&c, &bench, 0.01, 600);
        else rc = cli_unknown(&c, o);
    }
    if (!rc && !cf.model[0])
        rc = err_set(ZP_EINVAL, "--model DIR or --model FILE.gguf is required");
    if (!rc && !text == !file) rc = err_set(ZP_EINVAL, "give exactly one of --text and --file");
    if (!rc && chat && dec) rc = err_set(ZP_EINVAL, "--chat and --decode exclude each other");
    if (!rc && show && !chat) rc = err_set(ZP_EINVAL, "--render needs --chat");
    if (!rc && batch && (chat || dec || bench > 0))
        rc = err_set(ZP_EINVAL, "--batch excludes --chat, --decode and --bench");
    if (rc) return cli_fail("tokenize", rc);
    arena a;
    tokenizer *t = NULL;
    char *buf = NULL;
    size_t len = text ? strlen(text) : 0;
    bool have_arena = !(rc = arena_init(&a, "tokenize", (size_t)4 << 30));
    if (have_arena && file) rc = arena_read_file(&a, file, &buf, &len);
    if (!rc) rc = tok_load(&t, &a, cf.model);
    const char *in = text ? text : buf;
    char *prompt = NULL;
    if (!rc && chat) { /* the rendered prompt replaces the input */
        json_doc d;
        size_t cap = 4 * len + 65536;
        rc = json_parse(&d, &a, in, len, "--chat messages");
        if (!rc && !(prompt = malloc(cap))) rc = err_set(ZP_ENOMEM, "out of memory");
        if (!rc) rc = chat_render(t, &d, 0, gen, think, prompt, cap, &len);
        in = prompt;
    }
    if (!rc && dec)
        rc = decode(t, &a, in, len, skip);
    else if (!rc && batch)
        rc = encode_batch(t, &a, in, len, special);
    else if (!rc && show)
        fwrite(in, 1, len, stdout);
    else if (!rc)
        rc = encode(t, in, len, special, bench);
    if (have_arena) arena_release(&a);
    free(prompt);
    return rc ? cli_fail("tokenize", rc) : 0;
}
