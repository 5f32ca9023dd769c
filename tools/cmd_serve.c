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

/* Creates the engine that serves srv's requests: fills ops (with ctx) and the facts shown to
 * clients. The engine's output callback is ipc_server_on_event with user = srv. */
static int serve_engine_create(const conf *cf, const serve_opts *o, arena *a, ipc_server *srv,
                               ipc_engine_ops *ops, ipc_model_info *info) {
    if (!o->echo)
        return err_set(ZP_EUNSUP, "serving a model is not available in this build; use --echo");
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
        return cli_fail("serve", rc);
    ipc_server *srv = NULL;
    ipc_engine_ops ops;
    ipc_model_info info;
    rc = ipc_server_create(&srv, &a, &ic);
    if (!rc) rc = serve_engine_create(&cf, &o, &a, srv, &ops, &info);
    if (!rc) rc = ipc_server_start(srv, &a, &ops, &info);
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
