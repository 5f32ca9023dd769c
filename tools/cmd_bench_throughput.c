/* zipage bench throughput: an offline workload through the whole engine, once with full KV and
 * once compressed, on any model shape without its checkpoint: how many requests run at once in
 * the same KV pool and what that does to output throughput.
 *
 *   zipage bench throughput --model DIR [--requests 256] [--prompt 512] [--gen 8192]
 *                           [--budget 4] [--modes full,compressed] [--bw GBPS] [--ipc]
 *                           [--max-wall SECONDS]
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
 *   measured busy seconds of those steps. Without --bw the bandwidth is measured before the
 *   modes run, as `zipage bench decode` measures it (bench_measure_bw: on a GPU its copy
 *   bandwidth, on the CPU the host's read bandwidth; printed).
 * --max-wall S stops a mode's in-process run at its first step that ends S seconds or more
 * after the first submit (the requests still in flight are cancelled with the engine): its
 * figures then cover the steps that ran, its row is marked "stopped", and since the whole
 * workload would have taken longer than S, its output rate over the workload is reported as the
 * bound completion tokens of the workload / S (an upper bound: a workload that needs more than S
 * seconds yields less than that per second; JSON: "stopped", "workload_output_tok_s"). A
 * compressed mode that finished beside a stopped full mode gives the ratio as a lower bound
 * ("> R"). For workloads longer than one device call.
 * After the table, per mode: the decode steps' time split into forward pass, exposed compression
 * and host time, their mean rows, and the compression batches' device time (score, compact).
 * Then, when both modes ran, the ratio compressed / full of output tok/s (target >= 3.5x) and
 * the compressed mode's roofline fraction (target >= 80%). They are benchmark targets: missing
 * them is not an error. --json FILE appends one object per mode. Every run hashes its output
 * tokens (FNV-1a per request, then over the requests in order), as bench compress does.
 *
 * --ipc: after each mode's in-process run, the same workload over the shared-memory IPC: this
 * binary's `zipage serve` (fork and exec of /proc/self/exe) with the mode's configuration, every
 * key passed as one --set, plus what serving needs: an ipc_name of its own
 * (zpbench-PID-MODE), one client slot, max_inflight_per_client >= --requests and a payload area
 * that holds every prompt (up to 64 MiB). Once its ready line is out, the client
 * library connects, submits every request (the same prompt ids and parameters) and drains their
 * streams. Wall: from the first submit to the last final event; output tok/s counts the token
 * events; steps and preemptions are the server's published engine_stats. The in-process run of
 * that mode opens its engine as serve does (logits masked to the tokenizer's ids, its EOS), so
 * the model directory needs a tokenizer. Reported: the IPC run's row, its output tok/s as a
 * percentage of the in-process run's (target >= 98%, not an error either), and whether its
 * output hash equals the in-process run's: when it does not, the command fails. The server is
 * stopped after the run, whatever happened (SIGTERM: it drains and removes its object; SIGKILL
 * after 30 s; a server left over by a killed benchmark gets SIGTERM from PR_SET_PDEATHSIG), and
 * an object it left is removed. --json FILE appends an object per IPC run ("ipc": true).
 */
#include "arena/err.h"
#include "engine/engine.h"
#include "engine/loader.h"
#include "engine/tokenizer.h"
#include "ipc/zipage.h"
#include "tools/bench_model.h"
#include "tools/bench_workload.h"
#include "tools/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TP_MAX_MODES   2
#define TP_FNV_BASIS   0xCBF29CE484222325ull
#define TP_FNV_PRIME   0x100000001B3ull
#define TP_EVENTS      256          /* events taken from the client per wait */
#define TP_PAYLOAD_FIT (64ll << 20) /* payload area raised to hold every prompt up to this */
#define TP_STOP_S      30           /* from SIGTERM until the server is killed */

typedef struct tp_params {
    int64_t requests, prompt, gen, budget;
    double bw; /* GB/s */
    bool ipc;  /* each mode over IPC too */
    double max_wall; /* --max-wall seconds; 0 = none */
} tp_params;

/* Event state of one run: per request, a hash of its tokens so far. */
typedef struct tp_ctx {
    int64_t done;
    uint64_t *hash;
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
     * positions they read, the rows they computed (tokens), their busy seconds, the parts of
     * those in the forward pass and in exposed compression waits, and their roofline seconds */
    int64_t decode_steps, decode_fwd_steps, decode_kv_tokens, decode_rows;
    double decode_s, decode_fwd_s, decode_cmp_s, roof_s;
    bool stopped;         /* --max-wall ended the run before every request finished */
    int32_t vocab;        /* prompt ids are in [0, vocab) */
    uint64_t output_hash; /* every request's tokens */
} tp_run;

/* A mode's run over IPC, beside its in-process run. */
typedef struct tp_ipc_run {
    const tp_run *local; /* the in-process run of the same mode */
    char name[64];       /* the server's ipc_name */
    double wall_s, out_tok_s, req_s;
    int64_t completion_tokens; /* token events received */
    zipage_stats st;           /* the server's, after the last final event */
    uint64_t output_hash;
} tp_ipc_run;

static uint64_t fnv(uint64_t h, uint64_t v) {
    return (h ^ v) * TP_FNV_PRIME;
}

/* The hash of a run's output: the requests' hashes in request order. */
static uint64_t output_hash(const uint64_t *hash, int64_t n) {
    uint64_t h = TP_FNV_BASIS;
    for (int64_t i = 0; i < n; i++)
        h = fnv(h, hash[i]);
    return h;
}

static void on_event(void *user, const engine_event *ev) {
    tp_ctx *c = user;
    if (ev->finish == ENGINE_RUNNING) {
        uint64_t *h = &c->hash[ev->user_tag];
        *h = fnv(*h, (uint32_t)ev->token);
        return;
    }
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
    run->decode_rows += cur->completion_tokens - prev->completion_tokens;
    run->decode_fwd_s += cur->forward_seconds - prev->forward_seconds;
    run->decode_cmp_s += cur->cmp_exposed_seconds - prev->cmp_exposed_seconds;
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
        if (p->max_wall > 0 && c->done < p->requests && bench_now_s() - t0 >= p->max_wall) {
            run->stopped = true;
            break;
        }
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
    run->output_hash = output_hash(c->hash, p->requests);
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
    c.hash = arena_alloc(&a, sizeof(uint64_t) * (size_t)p->requests, 64, "bench hashes");
    if (!ids || !c.hash) {
        rc = ZP_ENOMEM;
        goto out;
    }
    for (int64_t i = 0; i < p->requests; i++)
        c.hash[i] = TP_FNV_BASIS;
    if ((rc = loader_config(&mc, &a, cf.model))) goto out;
    /* beside an IPC run, open the engine as zipage serve does: the tokenizer's ids, its EOS */
    int32_t n_valid = 0, eos = -1;
    if (p->ipc) {
        tokenizer *tk;
        if ((rc = tok_load(&tk, &a, cf.model))) {
            rc = err_prefix(rc, "--ipc: zipage serve needs the model's tokenizer");
            goto out;
        }
        n_valid = tok_vocab_size(tk);
        eos = tok_eos_id(tk);
    }
    double t0 = bench_now_s();
    if ((rc = engine_open(&e, &a, &cf, n_valid, &eos, eos >= 0, on_event, &c))) goto out;
    arena_freeze(&a);
    run->open_s = bench_now_s() - t0;
    engine_info info;
    engine_get_info(e, &info);
    snprintf(run->backend, sizeof run->backend, "%s", info.backend);
    run->max_concurrency = info.max_concurrency;
    run->num_blocks = info.num_blocks;
    run->vocab = info.vocab;
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

/* ---- the workload over IPC ----------------------------------------------------------------- */

/* The configuration's keys (engine/conf_keys.h), counted: each is one --set of the server. */
enum {
#define CONF_INT(sec, nm, ...)   TP_KEY_##nm,
#define CONF_FLOAT(sec, nm, ...) TP_KEY_##nm,
#define CONF_BOOL(sec, nm, ...)  TP_KEY_##nm,
#define CONF_STR(sec, nm, ...)   TP_KEY_##nm,
#define CONF_ENUM(sec, nm, ...)  TP_KEY_##nm,
#include "engine/conf_keys.h"
#undef CONF_INT
#undef CONF_FLOAT
#undef CONF_BOOL
#undef CONF_STR
#undef CONF_ENUM
    TP_NKEYS
};

/* `zipage serve --set key=value ...`: argv and the storage of its settings. */
typedef struct tp_serve_argv {
    char set[TP_NKEYS][CONF_STR_MAX + 64];
    char *argv[2 + 2 * TP_NKEYS + 1];
    int argc, nset;
} tp_serve_argv;

/* A server started by the benchmark: its pid (-1: none), the read end of its stdout, and its
 * object's name for shm_unlink ("/" + ipc_name). */
typedef struct tp_serve {
    pid_t pid;
    int out_fd;
    char shm[80];
} tp_serve;

static int serve_set(tp_serve_argv *sa, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int serve_set(tp_serve_argv *sa, const char *fmt, ...) {
    char *s = sa->set[sa->nset++];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s, sizeof sa->set[0], fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof sa->set[0])
        return err_set(ZP_ELIMIT, "--ipc: the server's setting '%.64s...' is too long", s);
    sa->argv[sa->argc++] = "--set";
    sa->argv[sa->argc++] = s;
    return 0;
}

static int serve_set_int(tp_serve_argv *sa, const char *key, int64_t v) {
    size_t n = strlen(key);
    if (n > 5 && !strcmp(key + n - 5, "_mode")) /* conf reads the *_mode keys in octal */
        return serve_set(sa, "%s=0%llo", key, (unsigned long long)v);
    return serve_set(sa, "%s=%lld", key, (long long)v);
}

/* The server's command line: every key of cf, exactly (floats in 17 digits, strings quoted), so
 * it runs what the in-process run ran whatever -c and --set said. */
static int serve_argv(const conf *cf, tp_serve_argv *sa) {
    sa->argc = sa->nset = 0;
    sa->argv[sa->argc++] = "zipage";
    sa->argv[sa->argc++] = "serve";
    int rc = 0;
#define CONF_INT(sec, nm, ...)                                                                     \
    if (!rc) rc = serve_set_int(sa, #nm, cf->nm);
#define CONF_FLOAT(sec, nm, ...)                                                                   \
    if (!rc) rc = serve_set(sa, "%s=%.17g", #nm, cf->nm);
#define CONF_BOOL(sec, nm, ...)                                                                    \
    if (!rc) rc = serve_set(sa, "%s=%s", #nm, cf->nm ? "true" : "false");
#define CONF_STR(sec, nm, ...)                                                                     \
    if (!rc) rc = serve_set(sa, "%s=\"%s\"", #nm, cf->nm);
#define CONF_ENUM(sec, nm, ...)                                                                    \
    if (!rc) rc = serve_set(sa, "%s=%s", #nm, conf_enum_name(#nm, cf->nm));
#include "engine/conf_keys.h"
#undef CONF_INT
#undef CONF_FLOAT
#undef CONF_BOOL
#undef CONF_STR
#undef CONF_ENUM
    sa->argv[sa->argc] = NULL;
    return rc;
}

/* What serving the workload needs beyond the in-process run's settings: an object name of its
 * own, one client slot, every request in flight at once, and a payload area that holds every
 * prompt, up to TP_PAYLOAD_FIT (/dev/shm may be small; beyond, a submit waits for room). */
static void serve_fit(conf *cf, const tp_params *p, tp_ipc_run *run) {
    snprintf(run->name, sizeof run->name, "zpbench-%d-%s", (int)getpid(), run->local->mode);
    snprintf(cf->ipc_name, sizeof cf->ipc_name, "%s", run->name);
    cf->max_clients = 1;
    if (cf->max_inflight_per_client < p->requests) cf->max_inflight_per_client = p->requests;
    int64_t need = (p->requests + 1) * p->prompt * (int64_t)sizeof(int32_t);
    if (need > TP_PAYLOAD_FIT) need = TP_PAYLOAD_FIT;
    if (cf->payload_bytes_per_client < need) cf->payload_bytes_per_client = need;
}

/* "exited with status N" / "was killed by signal N" into buf. */
static const char *exit_text(int st, char *buf, size_t cap) {
    if (WIFEXITED(st))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "was killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, cap, "ended with wait status %d", st);
    return buf;
}

/* Waits up to limit_s seconds for pid to exit: returns pid (its wait status in *st), 0 while it
 * still runs, or -1 (errno set). */
static pid_t wait_exit(pid_t pid, double limit_s, int *st) {
    double t0 = bench_now_s();
    for (;;) {
        pid_t w = waitpid(pid, st, WNOHANG);
        if (w > 0 || (w < 0 && errno != EINTR)) return w;
        if (bench_now_s() - t0 > limit_s) return 0;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
}

/* A server whose stdout ended before its ready line: reaps it and says how it ended (one that
 * still runs is left to serve_stop). */
static int serve_failed(tp_serve *sv) {
    int st = 0;
    pid_t pid = sv->pid, w = wait_exit(pid, TP_STOP_S, &st);
    if (w == 0)
        return err_set(ZP_EBACKEND,
                       "--ipc: zipage serve (pid %d) closed its stdout before it was ready",
                       (int)pid);
    sv->pid = -1;
    if (w < 0)
        return err_set(ZP_EIO, "--ipc: waiting for zipage serve (pid %d): %s", (int)pid,
                       strerror(errno));
    char why[64];
    return err_set(ZP_EBACKEND,
                   "--ipc: zipage serve (pid %d) %s before it was ready (its messages are above)",
                   (int)pid, exit_text(st, why, sizeof why));
}

/* Starts `zipage serve` with cf (fork and exec of this binary) and waits for its ready line,
 * the one thing it prints on stdout. sv->pid and sv->out_fd are set while it runs. */
static int serve_start(const conf *cf, tp_serve *sv) {
    tp_serve_argv sa;
    int rc = serve_argv(cf, &sa);
    if (rc) return rc;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC)) return err_set(ZP_EIO, "--ipc: pipe: %s", strerror(errno));
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return err_set(ZP_EIO, "--ipc: fork: %s", strerror(errno));
    }
    if (pid == 0) { /* async-signal-safe calls only until exec */
        static const char msg[] = "zipage bench throughput: --ipc: cannot exec /proc/self/exe\n";
        /* the benchmark gone (even by SIGKILL): the server drains and removes its object */
        if (dup2(fds[1], STDOUT_FILENO) >= 0 && !prctl(PR_SET_PDEATHSIG, SIGTERM) &&
            getppid() == parent) {
            execv("/proc/self/exe", sa.argv);
            ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
            (void)w;
        }
        _exit(127);
    }
    close(fds[1]);
    sv->pid = pid;
    sv->out_fd = fds[0];
    char line[512];
    size_t n = 0;
    for (;;) {
        ssize_t k = read(sv->out_fd, line + n, sizeof line - 1 - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) /* serve_stop stops it */
            return err_set(ZP_EIO, "--ipc: reading the output of zipage serve (pid %d): %s",
                           (int)pid, strerror(errno));
        if (k == 0) return serve_failed(sv);
        n += (size_t)k;
        line[n] = 0;
        if (strstr(line, "zipage serve: ready")) return 0;
        if (n == sizeof line - 1) n = 0; /* not a line of serve's: drop it */
    }
}

/* Stops a started server: SIGTERM (it drains, finishing or cancelling per the sigterm key, and
 * removes its object), SIGKILL after TP_STOP_S, then removes an object it left. Returns rc, or
 * when rc is 0 an error if the server did not exit 0 or the object could not be removed. */
static int serve_stop(tp_serve *sv, int rc) {
    if (sv->pid > 0) {
        pid_t pid = sv->pid, w;
        int st = 0;
        kill(pid, SIGTERM);
        if (!(w = wait_exit(pid, TP_STOP_S, &st))) {
            kill(pid, SIGKILL);
            w = wait_exit(pid, TP_STOP_S, &st);
            if (!rc)
                rc = err_set(ZP_EBACKEND,
                             "--ipc: zipage serve (pid %d) did not stop within %d s of SIGTERM; "
                             "killed",
                             (int)pid, TP_STOP_S);
        }
        sv->pid = -1;
        char why[64];
        if (w < 0 && !rc)
            rc = err_set(ZP_EIO, "--ipc: waiting for zipage serve (pid %d): %s", (int)pid,
                         strerror(errno));
        else if (w > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !rc)
            rc = err_set(ZP_EBACKEND, "--ipc: zipage serve (pid %d) %s after SIGTERM", (int)pid,
                         exit_text(st, why, sizeof why));
    }
    if (sv->out_fd >= 0) close(sv->out_fd);
    sv->out_fd = -1;
    if (sv->shm[0] && shm_unlink(sv->shm) && errno != ENOENT && !rc)
        rc = err_set(ZP_EIO, "--ipc: cannot remove /dev/shm%s: %s", sv->shm, strerror(errno));
    return rc;
}

/* A failing client call: its message and code name. */
static int ipc_fail(int zrc, const char *what, long long i) {
    int code = zrc == ZIPAGE_E_INVALID ? ZP_EINVAL : ZP_EBACKEND;
    if (i >= 0)
        return err_set(code, "--ipc: %s %lld: %s (%s)", what, i, zipage_last_error(),
                       zipage_strerror(zrc));
    return err_set(code, "--ipc: %s: %s (%s)", what, zipage_last_error(), zipage_strerror(zrc));
}

/* Submits every request through the client and drains their streams until every final event
 * is in; fills the run's figures. */
static int ipc_workload(zipage_client *cl, const tp_params *p, int32_t *ids, uint64_t *hash,
                        tp_ipc_run *run) {
    zipage_request rq;
    zipage_request_default(&rq);
    rq.kind = ZIPAGE_PROMPT_IDS;
    rq.ids = ids;
    rq.n_ids = (size_t)p->prompt;
    rq.params.temperature = 0;
    rq.params.ignore_eos = true;
    rq.params.max_tokens = (int32_t)p->gen;
    zipage_event ev[TP_EVENTS];
    int64_t next = 0, made = -1, done = 0, tokens = 0;
    double t0 = bench_now_s();
    while (done < p->requests) {
        for (; next < p->requests; next++) {
            if (made != next) { /* once per request, however often the submit is retried */
                bench_prompt_ids(ids, p->prompt, next, run->local->vocab);
                made = next;
            }
            rq.user_tag = (uint64_t)next;
            uint64_t id;
            int zrc = zipage_submit(cl, &rq, &id);
            if (zrc == ZIPAGE_E_BUSY) break; /* a ring or the payload area is full: drain */
            if (zrc) return ipc_fail(zrc, "submitting request", (long long)next);
        }
        int n = zipage_wait(cl, ev, TP_EVENTS, next < p->requests ? 1 : -1);
        if (n == ZIPAGE_E_TIMEOUT) continue;
        if (n < 0) return ipc_fail(n, "waiting for events", -1);
        for (int k = 0; k < n; k++) {
            const zipage_event *e = &ev[k];
            if (e->user_tag >= (uint64_t)next)
                return err_set(ZP_ESTATE, "--ipc: an event for request %llu, of %lld submitted",
                               (unsigned long long)e->user_tag, (long long)next);
            if (e->type == ZIPAGE_EV_TOKEN) {
                if (e->flags & ZIPAGE_EVF_CONT) continue; /* more text of the token before */
                hash[e->user_tag] = fnv(hash[e->user_tag], (uint32_t)e->token);
                tokens++;
                continue;
            }
            done++;
            if (e->finish != ZIPAGE_FINISH_LENGTH)
                return err_set(ZP_EBACKEND, "--ipc: request %llu ended %s (%s): %.*s",
                               (unsigned long long)e->user_tag, zipage_finish_name(e->finish),
                               zipage_strerror(e->error), (int)e->text_len, e->text ? e->text : "");
        }
    }
    run->wall_s = bench_now_s() - t0;
    run->completion_tokens = tokens;
    run->out_tok_s = (double)tokens / run->wall_s;
    run->req_s = (double)p->requests / run->wall_s;
    run->output_hash = output_hash(hash, p->requests);
    /* the server publishes its statistics every 10 ms: wait for the ones counting every final */
    double ts = bench_now_s();
    for (;;) {
        int zrc = zipage_get_stats(cl, &run->st);
        if (zrc) return ipc_fail(zrc, "reading the server's statistics", -1);
        if (run->st.completed >= p->requests || bench_now_s() - ts > 1) break;
        nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
    }
    return 0;
}

/* The mode of run->local over IPC: a server of its own, then the workload through the client;
 * the server is stopped and its object removed on every path. */
static int run_ipc(const conf *base, const tp_params *p, tp_ipc_run *run) {
    conf cf = *base;
    cf.compress = run->local->compress;
    serve_fit(&cf, p, run);
    tp_serve sv = {.pid = -1, .out_fd = -1};
    snprintf(sv.shm, sizeof sv.shm, "/%s", run->name);
    size_t n = (size_t)p->requests;
    arena a;
    int rc = arena_init(&a, "bench ipc",
                        sizeof(uint64_t) * n + sizeof(int32_t) * (size_t)p->prompt + (1 << 20));
    if (rc) return rc;
    zipage_client *cl = NULL;
    uint64_t *hash = arena_alloc(&a, sizeof(uint64_t) * n, 64, "bench hashes");
    int32_t *ids = arena_alloc(&a, sizeof(int32_t) * (size_t)p->prompt, 64, "bench prompt");
    if (!hash || !ids) {
        rc = ZP_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        hash[i] = TP_FNV_BASIS;
    arena_freeze(&a);
    fprintf(stderr, "bench throughput: %s over IPC: starting zipage serve (ipc_name %s)\n",
            run->local->mode, cf.ipc_name);
    double t0 = bench_now_s();
    if ((rc = serve_start(&cf, &sv))) goto out;
    int zrc = zipage_connect(&cl, cf.ipc_name, NULL);
    if (zrc) {
        rc = ipc_fail(zrc, "connecting to the server", -1);
        goto out;
    }
    fprintf(stderr,
            "bench throughput: %s over IPC: zipage serve (pid %d) ready, connected in %.1f s\n",
            run->local->mode, (int)sv.pid, bench_now_s() - t0);
    rc = ipc_workload(cl, p, ids, hash, run);
out:
    zipage_disconnect(cl); /* before the stop: the server cancels what is still in flight */
    rc = serve_stop(&sv, rc);
    arena_release(&a);
    return rc;
}

/* Output tok/s over the whole workload: measured, or for a stopped run the upper bound the
 * workload's tokens over --max-wall give. */
static double workload_tok_s(const tp_run *r, const tp_params *p) {
    return r->stopped ? (double)(p->requests * p->gen) / p->max_wall : r->out_tok_s;
}

static double roof_fraction(const tp_run *r) {
    return r->decode_s > 0 ? r->roof_s / r->decode_s : 0;
}

static void print_row(const tp_run *r) {
    char label[32];
    snprintf(label, sizeof label, "%s%s", r->mode, r->stopped ? " stopped" : "");
    printf("%-19s %8.2f %10.0f %7.2f %6d/%-6d %8.1f %9.2f %8lld %7lld %9.1f %7.1f%%\n", label,
           r->wall_s, r->out_tok_s, r->req_s, r->peak_running, r->max_concurrency, r->mean_running,
           r->kv_per_request / 1048576.0, (long long)r->all.preemptions, (long long)r->all.steps,
           r->host_us, 100 * roof_fraction(r));
}

/* Where the decode steps' time went, and the compression batches' device time (the causes the
 * roofline fraction names). */
static void print_breakdown(const tp_run *r) {
    const engine_stats *s = &r->all;
    printf("%s: %lld decode steps, %.1f rows each; %.2f s = forward %.2f + exposed compression "
           "%.2f + host %.2f; roofline %.2f s. compression batches: %lld jobs, device %.2f s "
           "(score %.2f, compact %.2f)\n",
           r->mode, (long long)r->decode_steps,
           r->decode_steps ? (double)r->decode_rows / (double)r->decode_steps : 0, r->decode_s,
           r->decode_fwd_s, r->decode_cmp_s, r->decode_s - r->decode_fwd_s - r->decode_cmp_s,
           r->roof_s, (long long)s->compressions, s->cmp_device_seconds, s->score_seconds,
           s->compact_seconds);
}

/* The IPC run's row: what the client measures and the server's published counters. */
static void print_ipc_row(const tp_ipc_run *r) {
    char label[32];
    snprintf(label, sizeof label, "%s ipc", r->local->mode);
    printf("%-19s %8.2f %10.0f %7.2f %13s %8s %9s %8lld %7lld %9s %8s\n", label, r->wall_s,
           r->out_tok_s, r->req_s, "-", "-", "-", (long long)r->st.preemptions,
           (long long)r->st.steps, "-", "-");
}

static bool ipc_same(const tp_ipc_run *r) {
    return r->output_hash == r->local->output_hash &&
           r->completion_tokens == r->local->all.completion_tokens;
}

static double ipc_fraction(const tp_ipc_run *r) {
    return r->local->out_tok_s > 0 ? r->out_tok_s / r->local->out_tok_s : 0;
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
            "\"decode_s\": %.4f, \"decode_forward_s\": %.4f, \"decode_cmp_exposed_s\": %.4f, "
            "\"decode_rows\": %lld, \"cmp_device_s\": %.4f, \"score_s\": %.4f, "
            "\"compact_s\": %.4f, \"decode_kv_tokens_read\": %lld, \"weight_bytes\": %zu, "
            "\"kv_read_bytes_per_token\": %zu, \"bw_gbps\": %.1f, \"roofline_s\": %.6g, "
            "\"roofline_fraction\": %.6g, \"stopped\": %s, \"max_wall_s\": %.1f, "
            "\"workload_output_tok_s\": %.1f, \"ipc\": false, \"output_hash\": \"%016llx\"}\n",
            r->mode, r->backend, r->compress ? "true" : "false", (long long)p->requests,
            (long long)p->prompt, (long long)p->gen, (long long)p->budget,
            (long long)cf->block_size, r->kv_pool_bytes, r->num_blocks, r->max_concurrency,
            r->peak_running, r->mean_running, s->blocks_peak, r->kv_per_request, r->open_s,
            r->wall_s, r->out_tok_s, r->req_s, (long long)s->prompt_tokens,
            (long long)s->completion_tokens, (long long)s->preemptions, (long long)s->compressions,
            (long long)s->steps, s->busy_seconds, s->forward_seconds, s->cmp_exposed_seconds,
            r->host_us, (long long)s->kv_tokens_read, (long long)r->decode_steps, r->decode_s,
            r->decode_fwd_s, r->decode_cmp_s, (long long)r->decode_rows, s->cmp_device_seconds,
            s->score_seconds, s->compact_seconds, (long long)r->decode_kv_tokens, r->weight_bytes,
            r->kv_read_token, p->bw, r->roof_s,
            roof_fraction(r), r->stopped ? "true" : "false", p->max_wall, workload_tok_s(r, p),
            (unsigned long long)r->output_hash);
}

static void write_ipc_json(FILE *f, const tp_ipc_run *r, const tp_params *p, const conf *cf) {
    const zipage_stats *s = &r->st;
    fprintf(f,
            "{\"mode\": \"%s\", \"ipc\": true, \"ipc_name\": \"%s\", \"backend\": \"%.8s\", "
            "\"compress\": %s, \"requests\": %lld, \"prompt\": %lld, \"gen\": %lld, "
            "\"budget\": %lld, \"block_size\": %lld, \"wall_s\": %.4f, \"output_tok_s\": %.1f, "
            "\"requests_s\": %.4f, \"completion_tokens\": %lld, \"prompt_tokens\": %lld, "
            "\"steps\": %lld, \"preemptions\": %lld, \"compressions\": %lld, \"busy_s\": %.4f, "
            "\"output_hash\": \"%016llx\", \"outputs_match\": %s, "
            "\"in_process_output_tok_s\": %.1f, \"ipc_vs_in_process\": %.6g}\n",
            r->local->mode, r->name, s->backend, r->local->compress ? "true" : "false",
            (long long)p->requests, (long long)p->prompt, (long long)p->gen, (long long)p->budget,
            (long long)cf->block_size, r->wall_s, r->out_tok_s, r->req_s,
            (long long)r->completion_tokens, (long long)s->prompt_tokens, (long long)s->steps,
            (long long)s->preemptions, (long long)s->compressions, s->busy_seconds,
            (unsigned long long)r->output_hash, ipc_same(r) ? "true" : "false", r->local->out_tok_s,
            ipc_fraction(r));
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
    tp_params p = {.requests = 256, .prompt = 512, .gen = 8192, .budget = 4}; /* bw 0: measure */
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
        else if (!strcmp(o, "--ipc"))
            p.ipc = true;
        else if (!strcmp(o, "--max-wall"))
            rc = cli_float(&c, &p.max_wall, 1, 1e7);
        else
            rc = cli_unknown(&c, o);
    }
    tp_run runs[TP_MAX_MODES];
    tp_ipc_run ipc[TP_MAX_MODES];
    int nr = 0;
    if (rc || (rc = parse_modes(modes, runs, &nr))) return rc;
    if (!cf.model[0]) return err_set(ZP_EINVAL, "--model DIR (with a config.json) is required");
    if (p.ipc && p.max_wall > 0)
        return err_set(ZP_EINVAL, "--max-wall and --ipc do not combine (the IPC run compares "
                                  "whole workloads)");
    bench_workload_fit(&cf, p.requests, p.prompt + p.gen, p.budget);
    if (p.bw == 0 && (rc = bench_measure_bw(&cf, "bench throughput", &p.bw))) return rc;
    FILE *jf = json ? fopen(json, "a") : NULL;
    if (json && !jf) return err_set(ZP_EIO, "--json %s: cannot open for appending", json);
    fprintf(stderr,
            "bench throughput: %lld requests, prompts of %lld tokens, %lld generated each, "
            "block_size %lld, budget %lld blocks, roofline at %.0f GB/s\n",
            (long long)p.requests, (long long)p.prompt, (long long)p.gen, (long long)cf.block_size,
            (long long)p.budget, p.bw);
    for (int i = 0; i < nr && !rc; i++) {
        rc = run_mode(&cf, &p, &runs[i]);
        ipc[i] = (tp_ipc_run){.local = &runs[i]};
        if (!rc && p.ipc) rc = run_ipc(&cf, &p, &ipc[i]);
    }
    if (!rc) {
        printf("%-19s %8s %10s %7s %13s %8s %9s %8s %7s %9s %8s\n", "mode", "wall s", "out tok/s",
               "req/s", "peak/planned", "mean run", "KV MiB/rq", "preempt", "steps", "host us",
               "roofline");
        const tp_run *full = NULL, *cmp = NULL;
        for (int i = 0; i < nr; i++) {
            print_row(&runs[i]);
            if (jf) write_json(jf, &runs[i], &p, &cf);
            if (p.ipc) print_ipc_row(&ipc[i]);
            if (p.ipc && jf) write_ipc_json(jf, &ipc[i], &p, &cf);
            if (runs[i].compress)
                cmp = &runs[i];
            else
                full = &runs[i];
        }
        for (int i = 0; i < nr; i++)
            print_breakdown(&runs[i]);
        for (int i = 0; i < nr; i++)
            if (runs[i].stopped)
                printf("%s: stopped by --max-wall %.0f s with %lld of %lld tokens: output tok/s "
                       "over the workload < %.0f\n",
                       runs[i].mode, p.max_wall, (long long)runs[i].all.completion_tokens,
                       (long long)(p.requests * p.gen), workload_tok_s(&runs[i], &p));
        if (full && cmp && cmp->stopped)
            printf("compressed vs full: undecided (the compressed run was stopped by --max-wall) "
                   "(target >= 3.5x)\n");
        else if (full && cmp)
            printf("compressed vs full: %s%.2fx output tok/s (target >= 3.5x)\n",
                   full->stopped ? "> " : "",
                   workload_tok_s(full, &p) > 0 ? cmp->out_tok_s / workload_tok_s(full, &p) : 0);
        if (cmp)
            printf("compressed roofline fraction: %.0f%% (target >= 80%%)\n",
                   100 * roof_fraction(cmp));
        for (int i = 0; i < nr && p.ipc; i++) {
            const tp_ipc_run *r = &ipc[i];
            printf("ipc vs in-process (%s): %.1f%% of in-process output tok/s (target >= 98%%)\n",
                   r->local->mode, 100 * ipc_fraction(r));
            printf("outputs over ipc (%s): %s the in-process run's (hash %016llx, %lld tokens)\n",
                   r->local->mode, ipc_same(r) ? "identical to" : "DIFFERENT from",
                   (unsigned long long)r->output_hash, (long long)r->completion_tokens);
        }
        for (int i = 0; i < nr && p.ipc && !rc; i++)
            if (!ipc_same(&ipc[i]))
                rc = err_set(ZP_ESTATE,
                             "--ipc: %s: the output over IPC differs from the in-process run's "
                             "(hash %016llx, %lld tokens vs %016llx, %lld tokens)",
                             ipc[i].local->mode, (unsigned long long)ipc[i].output_hash,
                             (long long)ipc[i].completion_tokens,
                             (unsigned long long)ipc[i].local->output_hash,
                             (long long)ipc[i].local->all.completion_tokens);
    }
    if (jf) fclose(jf);
    return rc;
}
