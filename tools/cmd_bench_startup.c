/* zipage bench startup: how long the engine takes to start: engine_open and engine_close timed
 * with an empty kernel cache (cold), then with the cache that start filled (warm).
 *
 *   zipage bench startup --model DIR [--runs 3] [--load dummy|auto] [--json FILE]
 *                        [--backend cuda|cpu] [--set key=value ...]
 *
 * --runs: warm starts after the cold one, 1..20.
 *
 * Settings: load_format = --load (dummy, the default: random weights, only DIR/config.json read;
 * auto: the checkpoint), and kernel_cache_dir = a fresh directory made by mkdtemp under $TMPDIR
 * or /tmp, whatever -c or --set say; that directory and everything the engine wrote into it are
 * removed at the end. Other keys as configured.
 *
 * Runs: one cold, then --runs warm, each in a fresh process (forked before this one touches a
 * backend), so each pays what the start of a server pays: libraries and the driver loaded, the GPU
 * context made, kernels compiled by NVRTC (cold) or read from the cache (warm), GEMM plans tuned
 * (cold, batch_invariant) or read, weights uploaded, memory planned, CUDA graphs captured. A run
 * times, in order:
 *   dummy weights: loader_config and loader_dummy_weights alone, in an arena of their own released
 *                  before the engine opens (the random buffer, made again inside open when
 *                  load_format = dummy);
 *   auto weights:  with --load auto, the same for loader_weights (the files mapped and checked:
 *                  their bytes are read, from disk or the page cache, while they upload in open);
 *   open:          engine_open, the start-up, and its phases from engine_info.open_s: weights
 *                  (read or made inside open), backend (driver, context, NVRTC kernels), upload
 *                  (the weights' copies, to their end) and graphs (decode-graph capture); the
 *                  rest is the memory plan, the reservation, GEMM plans and buffers;
 *   close:         engine_close.
 * Each run's GEMM-plans line (engine_info.backend_plans, on stderr) says how many plans were
 * tuned and how many came from the cache. Reported: a row per run, the cache's files and bytes
 * after each run, the weight bytes (every tensor as loaded, a tied head once) and the issue's
 * target: warm start-up <= 1 s plus the weight upload, checked as the median warm open less its
 * weights and upload phases (making dummy weights stands in for mapping a checkpoint). A
 * benchmark target: missing it is not an error. --json FILE appends one object per run.
 */
#include "arena/err.h"
#include "engine/engine.h"
#include "engine/loader.h"
#include "tools/cli.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SU_MAX_RUNS 20
#define SU_TARGET_S 1.0

/* What one start-up process sends back through its pipe. */
typedef struct su_run {
    int rc;
    char err[512];
    double dummy_s, auto_s, open_s, close_s;         /* auto_s < 0: not run */
    double weights_s, backend_s, upload_s, graphs_s; /* engine_info.open_s's phases */
    size_t weight_bytes;
    char backend[16];
} su_run;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void on_event(void *user, const engine_event *ev) {}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* "cold" for run 0, "warm N" for run N. */
static const char *run_label(int i, char *buf, size_t cap) {
    if (!i) return "cold";
    snprintf(buf, cap, "warm %d", i);
    return buf;
}

/* Bytes of the model's tensors as loaded, the LM head once when the config ties it to the
 * embedding (dummy tensors all share one buffer, so sharing bytes says nothing there). */
static size_t weights_bytes(const model_weights *w, const model_config *mc) {
    size_t n = loader_tensor_bytes(&w->embed) + loader_tensor_bytes(&w->final_norm);
    if (!mc->tie_embeddings) n += loader_tensor_bytes(&w->lm_head);
    for (int l = 0; l < mc->layers; l++) {
        const layer_weights *L = &w->layers[l];
        const tensor *t[] = {&L->in_norm, &L->post_norm, &L->q,      &L->k,      &L->v,
                             &L->o,       &L->q_bias,    &L->k_bias, &L->v_bias, &L->q_norm,
                             &L->k_norm,  &L->gate,      &L->up,     &L->down};
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            if (t[i]->data) n += loader_tensor_bytes(t[i]);
    }
    return n;
}

/* Seconds to read the config and make the weights of one format alone; their bytes. */
static int time_weights(const conf *cf, bool dummy, double *s, size_t *bytes) {
    arena a;
    int rc = arena_init(&a, "bench weights", (size_t)cf->host_arena_mb << 20);
    if (rc) return rc;
    model_config mc;
    model_weights mw = {0};
    double t0 = now_s();
    if (!(rc = loader_config(&mc, &a, cf->model)))
        rc = dummy ? loader_dummy_weights(&mw, &mc, &a) : loader_weights(&mw, &mc, &a, cf->model);
    *s = now_s() - t0;
    if (!rc) *bytes = weights_bytes(&mw, &mc);
    loader_close(&mw);
    arena_release(&a);
    return rc;
}

/* One start-up, in the child process: the weights alone, then the engine opened and closed. */
static int run_once(const conf *cf, const char *label, su_run *r) {
    int rc;
    size_t bytes = 0;
    r->auto_s = -1;
    if ((rc = time_weights(cf, true, &r->dummy_s, &bytes))) return rc;
    r->weight_bytes = bytes;
    if (cf->load_format == CONF_LOAD_FORMAT_AUTO) {
        if ((rc = time_weights(cf, false, &r->auto_s, &bytes))) return rc;
        r->weight_bytes = bytes;
    }
    arena a;
    if ((rc = arena_init(&a, "host", (size_t)cf->host_arena_mb << 20))) return rc;
    engine *e = NULL;
    double t0 = now_s();
    rc = engine_open(&e, &a, cf, 0, NULL, 0, on_event, NULL);
    r->open_s = now_s() - t0;
    if (!rc) {
        engine_info info;
        engine_get_info(e, &info);
        snprintf(r->backend, sizeof r->backend, "%s", info.backend);
        r->weights_s = info.open_s.weights, r->backend_s = info.open_s.backend;
        r->upload_s = info.open_s.upload, r->graphs_s = info.open_s.graphs;
        fprintf(stderr, "bench startup: %s: %s; %s\n", label, info.backend_why,
                *info.backend_plans ? info.backend_plans : "no GEMM plans");
        t0 = now_s();
        engine_close(e);
        r->close_s = now_s() - t0;
    }
    arena_release(&a);
    return rc;
}

/* Runs one start-up in a fresh process and reads its figures back. */
static int run_forked(const conf *cf, const char *label, su_run *r) {
    int fd[2];
    if (pipe(fd)) return err_set(ZP_EIO, "bench startup: pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]), close(fd[1]);
        return err_set(ZP_EIO, "bench startup: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fd[0]);
        su_run mine = {0};
        if ((mine.rc = run_once(cf, label, &mine)))
            snprintf(mine.err, sizeof mine.err, "%s", err_msg());
        ssize_t n = write(fd[1], &mine, sizeof mine);
        _exit(n == (ssize_t)sizeof mine ? 0 : 1);
    }
    close(fd[1]);
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t n = read(fd[0], (char *)r + got, sizeof *r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got != sizeof *r) {
        if (WIFSIGNALED(status))
            return err_set(ZP_EIO, "%s start-up: the process died of signal %d", label,
                           WTERMSIG(status));
        return err_set(ZP_EIO, "%s start-up: the process ended (status %d) without its figures",
                       label, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    if (r->rc) return err_set(r->rc, "%s start-up: %s", label, r->err);
    return 0;
}

/* nftw walks the cache directory: counting files and bytes, or removing everything. */
static size_t walk_files, walk_bytes;

static int count_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    if (flag == FTW_F) walk_files++, walk_bytes += (size_t)st->st_size;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    return remove(path) ? -1 : 0;
}

static void count_cache(const char *dir, size_t *files, size_t *bytes) {
    walk_files = walk_bytes = 0;
    nftw(dir, count_entry, 16, FTW_PHYS);
    *files = walk_files, *bytes = walk_bytes;
}

static void write_json(FILE *f, const su_run *r, const char *label, int index, const conf *cf,
                       size_t files, size_t bytes) {
    fprintf(f,
            "{\"run\": \"%s\", \"index\": %d, \"backend\": \"%s\", \"load_format\": \"%s\", "
            "\"open_s\": %.4f, \"close_s\": %.4f, \"dummy_weights_s\": %.4f, "
            "\"open_weights_s\": %.4f, \"open_backend_s\": %.4f, \"open_upload_s\": %.4f, "
            "\"open_graphs_s\": %.4f, ",
            label, index, r->backend, conf_enum_name("load_format", (int)cf->load_format),
            r->open_s, r->close_s, r->dummy_s, r->weights_s, r->backend_s, r->upload_s,
            r->graphs_s);
    if (r->auto_s >= 0) fprintf(f, "\"auto_weights_s\": %.4f, ", r->auto_s);
    fprintf(f, "\"weight_bytes\": %zu, \"cache_files\": %zu, \"cache_bytes\": %zu}\n",
            r->weight_bytes, files, bytes);
}

/* The configuration: load_format dummy unless -c, --set or --load say otherwise. */
static int bench_conf(conf *cf, int *argc, char **argv) {
    conf_defaults(cf);
    cf->load_format = CONF_LOAD_FORMAT_DUMMY;
    return conf_from_args(cf, argc, argv);
}

/* The runs, their table and the target, with the cache in cf->kernel_cache_dir. */
static int run_all(const conf *cf, int64_t warm, FILE *jf) {
    su_run runs[SU_MAX_RUNS + 1];
    size_t files[SU_MAX_RUNS + 1] = {0}, bytes[SU_MAX_RUNS + 1] = {0};
    int rc = 0;
    for (int i = 0; i <= warm && !rc; i++) {
        char buf[16];
        memset(&runs[i], 0, sizeof runs[i]);
        if (!(rc = run_forked(cf, run_label(i, buf, sizeof buf), &runs[i])))
            count_cache(cf->kernel_cache_dir, &files[i], &bytes[i]);
    }
    if (rc) return rc;
    printf("%-8s %10s %10s %10s %10s %10s %10s %10s %10s %12s\n", "run", "dummy (s)", "auto (s)",
           "open (s)", "weights", "backend", "upload", "graphs", "close (s)", "cache files");
    double warm_open[SU_MAX_RUNS]; /* less the weights and their upload */
    for (int i = 0; i <= warm; i++) {
        const su_run *r = &runs[i];
        char buf[16], auto_s[16] = "-";
        if (r->auto_s >= 0) snprintf(auto_s, sizeof auto_s, "%.3f", r->auto_s);
        printf("%-8s %10.3f %10s %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f %12zu\n",
               run_label(i, buf, sizeof buf), r->dummy_s, auto_s, r->open_s, r->weights_s,
               r->backend_s, r->upload_s, r->graphs_s, r->close_s, files[i]);
        if (i) warm_open[i - 1] = r->open_s - r->weights_s - r->upload_s;
        if (jf) write_json(jf, r, i ? "warm" : "cold", i, cf, files[i], bytes[i]);
    }
    qsort(warm_open, (size_t)warm, sizeof(double), cmp_d);
    double w = warm_open[warm / 2], gib = runs[0].weight_bytes / 1073741824.0;
    printf("kernel cache after the cold start: %zu files, %.1f MiB\n", files[0],
           bytes[0] / 1048576.0);
    printf("weights: %.2f GiB (load_format %s)\n", gib,
           conf_enum_name("load_format", (int)cf->load_format));
    printf("warm start-up besides reading / making and uploading the weights: %.3f s (median; "
           "target <= %.0f s: %s); cold start-up %.3f s in all\n",
           w, SU_TARGET_S, w <= SU_TARGET_S ? "met" : "missed", runs[0].open_s);
    return 0;
}

int bench_startup(int argc, char **argv) {
    conf cf;
    int rc = bench_conf(&cf, &argc, argv);
    if (rc) return rc;
    const char *json = NULL, *load = NULL;
    int64_t warm = 3;
    cli c;
    cli_init(&c, "bench startup", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--runs"))
            rc = cli_int(&c, &warm, 1, SU_MAX_RUNS);
        else if (!strcmp(o, "--load"))
            rc = cli_str(&c, &load);
        else if (!strcmp(o, "--json"))
            rc = cli_str(&c, &json);
        else
            rc = cli_unknown(&c, o);
    }
    if (rc) return rc;
    if (load && strcmp(load, "dummy") && strcmp(load, "auto"))
        return err_set(ZP_EINVAL, "--load '%s': want dummy or auto", load);
    if (load)
        cf.load_format = strcmp(load, "auto") ? CONF_LOAD_FORMAT_DUMMY : CONF_LOAD_FORMAT_AUTO;
    if (!cf.model[0]) return err_set(ZP_EINVAL, "--model DIR (with a config.json) is required");
    FILE *jf = json ? fopen(json, "a") : NULL;
    if (json && !jf) return err_set(ZP_EIO, "--json %s: cannot open for appending", json);
    const char *tmp = getenv("TMPDIR");
    int len = snprintf(cf.kernel_cache_dir, sizeof cf.kernel_cache_dir, "%s/zipage-startup-XXXXXX",
                       tmp && *tmp ? tmp : "/tmp");
    if (len < 0 || (size_t)len >= sizeof cf.kernel_cache_dir)
        rc = err_set(ZP_ELIMIT, "bench startup: TMPDIR '%s' is too long for kernel_cache_dir", tmp);
    else if (!mkdtemp(cf.kernel_cache_dir))
        rc = err_set(ZP_EIO, "bench startup: cannot make %s: %s", cf.kernel_cache_dir,
                     strerror(errno));
    if (rc) {
        if (jf) fclose(jf);
        return rc;
    }
    fprintf(stderr, "bench startup: kernel cache %s (removed at the end), load_format %s\n",
            cf.kernel_cache_dir, conf_enum_name("load_format", (int)cf.load_format));
    rc = run_all(&cf, warm, jf);
    if (jf) fclose(jf);
    if (nftw(cf.kernel_cache_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) && !rc)
        rc = err_set(ZP_EIO, "bench startup: cannot remove %s: %s", cf.kernel_cache_dir,
                     strerror(errno));
    return rc;
}
