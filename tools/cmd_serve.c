/* zipage serve: runs the engine behind the shared-memory IPC (ipc/server.h) until stopped.
 *
 *   zipage serve -c zipage.conf [--model DIR] [--backend B] [--set K=V] [--echo [--echo-step-us N]]
 *
 * Start-up: configuration -> arena -> IPC object -> engine (serve_engine_create, the one
 * place that knows which engine serves) -> arena frozen -> one ready line on stdout ->
 * serve. SIGTERM drains (finish or cancel per the `sigterm` key); SIGINT drains finishing,
 * a second SIGINT stops at once (running requests cancelled). Exit 0 after a clean stop.
 */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "ipc/echo.h"
#include "ipc/server.h"
#include "tools/cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct serve_opts {
    bool echo;
    int64_t echo_step_us;
} serve_opts;

static ipc_server *g_srv;
static volatile sig_atomic_t g_sigterm_level, g_sigints;

static void on_signal(int sig) {
    if (sig == SIGTERM)
        ipc_server_stop(g_srv, g_sigterm_level);
    else
        ipc_server_stop(g_srv, ++g_sigints >= 2 ? IPC_STOP_NOW : IPC_STOP_FINISH);
}

/* The model engine behind the IPC server: engine.h plus the model's tokenizer for text.
 * Chat messages are parsed into a token array carved at start-up (no allocation later). */
#define SERVE_CHAT_TOKENS 65536

typedef struct serve_model {
    engine *e;
    tokenizer *tk;
    jsmntok_t *jtok;
} serve_model;

static int sm_submit(void *c, const engine_request *r, uint64_t *id) {
    return engine_submit(((serve_model *)c)->e, r, id);
}
static int sm_cancel(void *c, uint64_t id) {
    return engine_cancel(((serve_model *)c)->e, id);
}
static int sm_step(void *c) {
    return engine_step(((serve_model *)c)->e);
}
static void sm_stats(void *c, engine_stats *s) {
    engine_get_stats(((serve_model *)c)->e, s);
}

static int sm_encode(void *c, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n) {
    return tok_encode(((serve_model *)c)->tk, text, len, true, ids, cap, n);
}

static int sm_render_chat(void *c, const char *msgs, size_t len, bool thinking, char *out,
                          size_t cap, size_t *n) {
    serve_model *m = c;
    json_doc d;
    int rc = json_parse_buf(&d, m->jtok, SERVE_CHAT_TOKENS, msgs, len, "messages");
    if (rc) return rc;
    if (!json_is_arr(&d, 0)) return err_set(ZP_EINVAL, "messages: expected a JSON array");
    return chat_render(m->tk, &d, 0, true, thinking, out, cap, n);
}

/* The server zeroes the state at submit; special tokens are not shown to clients. */
static int sm_detok(void *c, void *state, int32_t token, char *out, size_t cap, size_t *n) {
    tok_stream *st = state;
    st->skip_special = true;
    return tok_stream_push(((serve_model *)c)->tk, st, token, out, cap, n);
}

static int sm_detok_flush(void *c, void *state, char *out, size_t cap, size_t *n) {
    return tok_stream_flush(state, out, cap, n);
}

static int serve_model_create(const conf *cf, arena *a, ipc_server *srv, ipc_engine_ops *ops,
                              ipc_model_info *info) {
    serve_model *m = arena_alloc(a, sizeof *m, 64, "serve");
    if (!m) return ZP_ENOMEM;
    m->jtok = arena_alloc(a, sizeof(jsmntok_t) * SERVE_CHAT_TOKENS, 8, "chat messages");
    if (!m->jtok) return ZP_ENOMEM;
    int rc = tok_load(&m->tk, a, cf->model);
    if (rc) return rc;
    int32_t eos = tok_eos_id(m->tk);
    if ((rc = engine_open(&m->e, a, cf, tok_vocab_size(m->tk), &eos, eos >= 0, ipc_server_on_event,
                          srv)))
        return rc;
    *ops = (ipc_engine_ops){
        .ctx = m,
        .submit = sm_submit,
        .cancel = sm_cancel,
        .step = sm_step,
        .stats = sm_stats,
        .encode = sm_encode,
        .render_chat = sm_render_chat,
        .detok = sm_detok,
        .detok_flush = sm_detok_flush,
        .detok_state_size = sizeof(tok_stream),
    };
    engine_info ei;
    engine_get_info(m->e, &ei);
    fprintf(stderr, "zipage serve: backend %s\n", ei.backend_why);
    if (*ei.backend_plans) fprintf(stderr, "zipage serve: %s\n", ei.backend_plans);
    *info = (ipc_model_info){.model = cf->model,
                             .backend = ei.backend,
                             .vocab = ei.vocab, /* engine_submit's bound on ids */
                             .max_model_len = ei.max_model_len,
                             .max_concurrency = ei.max_concurrency,
                             .blocks_total = ei.num_blocks,
                             .block_size = ei.block_size};
    return 0;
}

/* Creates the engine that serves srv's requests: fills ops (with ctx) and the facts shown to
 * clients. The engine's output callback is ipc_server_on_event with user = srv. */
static int serve_engine_create(const conf *cf, const serve_opts *o, arena *a, ipc_server *srv,
                               ipc_engine_ops *ops, ipc_model_info *info) {
    if (!o->echo) return serve_model_create(cf, a, srv, ops, info);
    echo_config ec = {
        .max_requests = (int32_t)(cf->max_clients * cf->max_inflight_per_client),
        .max_echo = 4096,
        .step_us = (int32_t)o->echo_step_us,
    };
    echo *e;
    int rc = echo_create(&e, a, &ec, ipc_server_on_event, srv);
    if (rc) return rc;
    echo_ops(e, ops);
    engine_stats st;
    ops->stats(ops->ctx, &st);
    *info = (ipc_model_info){.model = "echo",
                             .backend = "echo",
                             .vocab = 256,
                             .max_model_len = ec.max_echo,
                             .max_concurrency = st.max_concurrency,
                             .blocks_total = st.blocks_total,
                             .block_size = 16};
    return 0;
}

/* Memory that start-up cannot have is a configuration error (exit 2 like every other), not
 * an internal one: the message keeps its cause and names the keys that size it. */
static int startup_memory(int rc, const char *keys) {
    if (rc != ZP_ENOMEM) return rc;
    char why[512];
    snprintf(why, sizeof why, "%s", err_msg());
    return err_set(ZP_ELIMIT, "%s; start-up memory is set by %s", why, keys);
}

int cmd_serve(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("serve", rc);
    serve_opts o = {0};
    cli c;
    cli_init(&c, "serve", argc, argv);
    for (const char *opt; (opt = cli_next(&c));) {
        if (!strcmp(opt, "--echo"))
            o.echo = true;
        else if (!strcmp(opt, "--echo-step-us"))
            rc = cli_int(&c, &o.echo_step_us, 0, 10000000);
        else
            rc = cli_unknown(&c, opt);
        if (rc) return cli_fail("serve", rc);
    }
    ipc_server_config ic;
    if ((rc = ipc_server_config_from_conf(&ic, &cf))) return cli_fail("serve", rc);
    g_sigterm_level = cf.sigterm == CONF_SIGTERM_CANCEL ? IPC_STOP_CANCEL : IPC_STOP_FINISH;

    arena a;
    if ((rc = arena_init(&a, "serve", (size_t)cf.host_arena_mb << 20)))
        return cli_fail("serve", startup_memory(rc, "host_arena_mb (lower it)"));
    ipc_server *srv = NULL;
    ipc_engine_ops ops;
    ipc_model_info info;
    rc = ipc_server_create(&srv, &a, &ic);
    if (!rc) rc = serve_engine_create(&cf, &o, &a, srv, &ops, &info);
    if (!rc) rc = ipc_server_start(srv, &a, &ops, &info);
    rc = startup_memory(rc, "kv_memory_mb, max_clients, max_inflight_per_client and "
                            "payload_bytes_per_client (lower one) or host_arena_mb");
    if (!rc) {
        g_srv = srv;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        arena_freeze(&a);
        printf(
            "zipage serve: ready model=%s backend=%s blocks=%d max_concurrency=%d ipc=/dev/shm%s\n",
            info.model, info.backend, info.blocks_total, info.max_concurrency,
            ipc_server_name(srv));
        fflush(stdout);
        rc = ipc_server_run(srv);
        signal(SIGTERM, SIG_IGN); /* the handlers must not reach the server once it is gone */
        signal(SIGINT, SIG_IGN);
    }
    ipc_server_destroy(srv);
    arena_release(&a);
    if (rc) return cli_fail("serve", rc);
    fprintf(stderr, "zipage serve: stopped\n");
    return 0;
}
