/* test_queues: the queues, events and host staging of the op table (drv/backend.h) on every
 * backend present, made by the factory: the CPU always, CUDA when a GPU is there (else that
 * part SKIPs and says why; the rest still runs). Per backend:
 * - ordering: rows written by embed on the compute queue (many passes over the same rows, the
 *   last with other ids) are read by argmax on the compression queue after event_wait on a
 *   compute event, and downloaded on that queue into alloc_host staging: every row must show
 *   the last pass. The same run without the wait is reported (a race is expected on a GPU).
 * - events: a timer across a 30 ms host sleep reads 20 ms .. 5 s; event_sync makes an event
 *   done; event_done is 0 or 1 on a busy queue and 1 after the sync; elapsed >= 0 between the
 *   queues; an event never recorded is done but has no time.
 * - copy: a device-to-device copy queued after a write on the same queue moves that write (the
 *   ids uploaded, copied over the argmax rows, downloaded again); 0 bytes copy nothing.
 * - errors: out-of-range queue and event ids in every call, staging beyond the reservation
 *   and a second reservation are clear errors (the value named), never a crash, and leave no
 *   sticky error behind; on CUDA a capture with the compression queue selected is refused.
 * And the engine (CPU backend): compression batches of a 20-layer model (41 timer marks of the
 * backend's pool each) accumulate score and compaction times that are positive and fit inside
 * the engine's busy time. */
#include "drv/backend.h"
#include "engine/model.h"
#include "tests/harness.h"

#include <stdint.h>
#include <time.h>

enum { V = 16 }; /* embedding rows */
enum { EV_C = 3, EV_D = 4, EV_T0 = 5, EV_T1 = 6, EV_T2 = 7, EV_T3 = 8, EV_NEVER = 40 };

typedef struct rig {
    backend *be;
    int n, dim, passes; /* rows, row width, embed passes before the last */
    be_ptr counts, table, ids_a, ids_b, resid, out;
    zp_dtype table_t;
    int32_t *h_counts, *h_ids_a, *h_ids_b, *h_out;
} rig;

static float table[V * 4096]; /* the CPU backend uses it in place */

static int peak(int v, int dim) { /* the column of row v's maximum (97 is odd: distinct) */
    return (v * 97 + 5) % dim;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts)) /* interrupted: sleep the rest */
        continue;
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_) {                                                                                 \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, err_msg());              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void rig_open(rig *r, backend *be, int n, int dim, int passes) {
    memset(r, 0, sizeof *r);
    r->be = be, r->n = n, r->dim = dim, r->passes = passes;
    size_t rows = (size_t)n * 4, res = (size_t)n * (size_t)dim * 4;
    OK(be->reserve(be, res + 4 * rows + (size_t)V * (size_t)dim * 4 + (16u << 10),
                   3 * rows + 16 + 4 * 256));
    for (int v = 0; v < V; v++)
        for (int j = 0; j < dim; j++)
            table[v * dim + j] = j == peak(v, dim) ? 100.f : (float)((j * 7 + v * 13) % 64 - 32);
    OK(be->alloc(be, 16, 256, &r->counts, "counts"));
    OK(be->map_weight(be, table, ZP_F32, (size_t)V * (size_t)dim, &r->table, &r->table_t, "table"));
    OK(be->alloc(be, rows, 256, &r->ids_a, "ids a"));
    OK(be->alloc(be, rows, 256, &r->ids_b, "ids b"));
    OK(be->alloc(be, res, 256, &r->resid, "rows"));
    OK(be->alloc(be, rows, 256, &r->out, "argmax"));
    void *p[4];
    OK(be->alloc_host(be, 16, &p[0], "counts staging"));
    OK(be->alloc_host(be, rows, &p[1], "ids staging"));
    OK(be->alloc_host(be, rows, &p[2], "ids staging"));
    OK(be->alloc_host(be, rows, &p[3], "argmax staging"));
    for (int i = 0; i < 4; i++)
        CHECKF((uintptr_t)p[i] % 256 == 0, "staging piece %d is not 256-byte aligned", i);
    CHECKF((char *)p[1] - (char *)p[0] >= 256 && (char *)p[2] - (char *)p[1] >= (ptrdiff_t)rows &&
               (char *)p[3] - (char *)p[2] >= (ptrdiff_t)rows,
           "staging pieces overlap");
    r->h_counts = p[0], r->h_ids_a = p[1], r->h_ids_b = p[2], r->h_out = p[3];
    for (int i = 0; i < n; i++)
        r->h_ids_a[i] = i % 8, r->h_ids_b[i] = 8 + (i * 3) % 8;
    r->h_counts[0] = r->h_counts[1] = n, r->h_counts[2] = r->h_counts[3] = 0;
    be->counts = r->counts; /* embed and argmax read their row counts there */
    OK(be->upload(be, r->counts, r->h_counts, 16));
    OK(be->upload(be, r->ids_a, r->h_ids_a, rows));
    OK(be->upload(be, r->ids_b, r->h_ids_b, rows));
    OK(be->sync(be));
}

/* One ordering trial; returns the rows whose argmax is not the last pass's. */
static int trial(rig *r, int wait) {
    backend *be = r->be;
    for (int i = 0; i < r->n; i++)
        r->h_out[i] = -7;
    /* the rows hold the first ids' values before the compression queue could look */
    be->embed(be, r->resid, r->table, r->table_t, r->ids_a, r->n, r->dim);
    OK(be->sync(be));
    for (int k = 0; k < r->passes; k++)
        be->embed(be, r->resid, r->table, r->table_t, r->ids_a, r->n, r->dim);
    be->embed(be, r->resid, r->table, r->table_t, r->ids_b, r->n, r->dim);
    OK(be->event_record(be, EV_C, BE_Q_COMPUTE));
    if (wait) OK(be->event_wait(be, BE_Q_COMPRESS, EV_C));
    OK(be->use_queue(be, BE_Q_COMPRESS));
    be->argmax(be, r->out, r->resid, r->n, r->dim, r->dim);
    OK(be->download(be, r->h_out, r->out, (size_t)r->n * 4));
    OK(be->event_record(be, EV_D, BE_Q_COMPRESS));
    OK(be->use_queue(be, BE_Q_COMPUTE));
    OK(be->event_sync(be, EV_D));
    int bad = 0;
    for (int i = 0; i < r->n; i++)
        bad += r->h_out[i] != peak(r->h_ids_b[i], r->dim);
    OK(be->sync(be));
    return bad;
}

static void ordering(rig *r, const char *name) {
    int bad = trial(r, 1);
    CHECKF(bad == 0, "%s: %d of %d rows read on the compression queue miss the compute results",
           name, bad, r->n);
    int stale = trial(r, 0);
    printf("  %s: ordered by an event: %d of %d rows stale; without the wait: %d stale%s\n", name,
           bad, r->n, stale, stale ? " (the queues overlap)" : "");
}

static void copies(rig *r, const char *name) {
    backend *be = r->be;
    size_t rows = (size_t)r->n * 4;
    for (int i = 0; i < r->n; i++)
        r->h_out[i] = -7;
    OK(be->upload(be, r->out, r->h_out, rows));
    OK(be->copy(be, r->out, r->ids_a, 0));
    OK(be->download(be, r->h_out, r->out, rows));
    OK(be->sync(be));
    int kept = 0, bad = 0;
    for (int i = 0; i < r->n; i++)
        kept += r->h_out[i] == -7;
    OK(be->upload(be, r->ids_a, r->h_ids_b, rows)); /* ids_a now holds ids_b's values */
    OK(be->copy(be, r->out, r->ids_a, rows));
    OK(be->download(be, r->h_out, r->out, rows));
    OK(be->upload(be, r->ids_a, r->h_ids_a, rows)); /* back for the other checks */
    OK(be->sync(be));
    for (int i = 0; i < r->n; i++)
        bad += r->h_out[i] != r->h_ids_b[i];
    CHECKF(kept == r->n, "%s: a copy of 0 bytes changed %d of %d rows", name, r->n - kept, r->n);
    CHECKF(bad == 0, "%s: %d of %d rows copied device to device differ", name, bad, r->n);
}

static void events(rig *r, const char *name) {
    backend *be = r->be;
    float ms = -1;
    OK(be->event_record(be, EV_T0, BE_Q_COMPUTE));
    sleep_ms(30);
    OK(be->event_record(be, EV_T1, BE_Q_COMPUTE));
    OK(be->event_sync(be, EV_T1));
    CHECKF(be->event_done(be, EV_T1) == 1, "%s: event not done after event_sync", name);
    OK(be->event_elapsed(be, EV_T0, EV_T1, &ms));
    CHECKF(ms >= 20 && ms < 5000, "%s: timer across a 30 ms sleep reads %.3f ms", name, ms);
    float sleep_ms_read = ms;
    /* across the queues: the compression queue passes its mark after the compute one */
    OK(be->event_record(be, EV_T2, BE_Q_COMPRESS));
    OK(be->event_sync(be, EV_T2));
    OK(be->event_elapsed(be, EV_T1, EV_T2, &ms));
    CHECKF(ms >= 0, "%s: elapsed between the queues %.3f ms", name, ms);
    /* a busy queue */
    for (int k = 0; k < r->passes + 1; k++)
        be->embed(be, r->resid, r->table, r->table_t, r->ids_a, r->n, r->dim);
    OK(be->event_record(be, EV_T3, BE_Q_COMPUTE));
    int busy = be->event_done(be, EV_T3);
    CHECKF(busy == 0 || busy == 1, "%s: event_done on a busy queue returned %d (%s)", name, busy,
           busy < 0 ? err_msg() : "");
    OK(be->event_sync(be, EV_T3));
    CHECKF(be->event_done(be, EV_T3) == 1, "%s: event not done after event_sync", name);
    OK(be->event_elapsed(be, EV_T1, EV_T3, &ms));
    CHECKF(ms >= 0, "%s: elapsed over the busy queue %.3f ms", name, ms);
    printf("  %s: timer over a 30 ms sleep %.3f ms; %d embed passes %.3f ms (pending right after "
           "the record: %s)\n",
           name, sleep_ms_read, r->passes + 1, ms, busy == 0 ? "yes" : "no");
    /* never recorded: nothing pending, no time */
    CHECKF(be->event_done(be, EV_NEVER) == 1, "%s: an event never recorded is not done", name);
    CHECK(be->event_sync(be, EV_NEVER) == 0);
    int rc = be->event_elapsed(be, EV_T0, EV_NEVER, &ms);
    CHECKF(rc == ZP_ESTATE && strstr(err_msg(), "event 40"),
           "%s: timer on an event never recorded: %d (%s)", name, rc, err_msg());
    OK(be->sync(be));
}

/* rc must be ZP_EINVAL with a message containing `names`. */
static void bad(const char *name, const char *call, int rc, const char *names) {
    CHECKF(rc == ZP_EINVAL && strstr(err_msg(), names),
           "%s: %s returned %d (%s), want ZP_EINVAL naming '%s'", name, call, rc,
           rc ? err_msg() : "", names);
}

static void errors(rig *r, const char *name) {
    backend *be = r->be;
    char ev_hi[32], q_hi[32];
    snprintf(ev_hi, sizeof ev_hi, "event %d", BE_EVENTS);
    snprintf(q_hi, sizeof q_hi, "queue %d", BE_QUEUES);
    float ms;
    bad(name, "use_queue(-1)", be->use_queue(be, -1), "queue -1");
    bad(name, "use_queue(BE_QUEUES)", be->use_queue(be, BE_QUEUES), q_hi);
    bad(name, "event_record(BE_EVENTS)", be->event_record(be, BE_EVENTS, BE_Q_COMPUTE), ev_hi);
    bad(name, "event_record(-1)", be->event_record(be, -1, BE_Q_COMPUTE), "event -1");
    bad(name, "event_record(queue 2)", be->event_record(be, 0, BE_QUEUES), q_hi);
    bad(name, "event_wait(queue -2)", be->event_wait(be, -2, 0), "queue -2");
    bad(name, "event_wait(event 1000)", be->event_wait(be, BE_Q_COMPRESS, 1000), "event 1000");
    bad(name, "event_done(BE_EVENTS)", be->event_done(be, BE_EVENTS), ev_hi);
    bad(name, "event_sync(-5)", be->event_sync(be, -5), "event -5");
    bad(name, "event_elapsed(0, BE_EVENTS)", be->event_elapsed(be, 0, BE_EVENTS, &ms), ev_hi);
    bad(name, "event_elapsed(-1, 0)", be->event_elapsed(be, -1, 0, &ms), "event -1");
    void *p;
    int rc = be->alloc_host(be, 1u << 30, &p, "too much staging");
    CHECKF(rc == ZP_ENOMEM && strstr(err_msg(), "too much staging"),
           "%s: staging beyond the reservation: %d (%s)", name, rc, err_msg());
    rc = be->reserve(be, 1, 1);
    CHECKF(rc == ZP_ESTATE, "%s: a second reservation: %d (%s)", name, rc, err_msg());
    if (be->capture_begin) {
        OK(be->use_queue(be, BE_Q_COMPRESS));
        rc = be->capture_begin(be);
        CHECKF(rc == ZP_ESTATE, "%s: capture with the compression queue selected: %d (%s)", name,
               rc, err_msg());
        OK(be->use_queue(be, BE_Q_COMPUTE));
    }
    /* the errors were immediate: nothing sticks to the next sync, and the queues still work */
    rc = be->sync(be);
    CHECKF(rc == 0, "%s: sync after the argument errors: %d (%s)", name, rc, err_msg());
    CHECKF(trial(r, 1) == 0, "%s: ordering after the argument errors", name);
}

static void on_backend(int kind, const char *name, int n, int dim, int passes) {
    be_config bc = {.kind = kind, .threads = 2, .attention_chunk = 512};
    be_shape s = {.layers = 1,
                  .hidden = dim,
                  .heads = 2,
                  .kv_heads = 2,
                  .head_dim = 64,
                  .intermediate = 128,
                  .vocab = 64,
                  .block_size = 16,
                  .max_tokens = n,
                  .max_logits = n,
                  .max_model_len = 512};
    char why[512];
    backend *be;
    if (backend_create(&be, &bc, &s, why, sizeof why)) {
        printf("SKIP %s part: %s\n", name, err_msg());
        return;
    }
    printf("%s: %s\n", name, why);
    rig r;
    rig_open(&r, be, n, dim, passes);
    ordering(&r, name);
    copies(&r, name);
    events(&r, name);
    errors(&r, name);
    be->destroy(be);
}

/* model_compress's phase times on a model with more layers than its ring of timer marks. */
static void compress_times(void) {
    snprintf(th_dir, sizeof th_dir, "/tmp/zp_test_queues_%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && %s/zipage mkmodel --arch qwen3 --hidden 64 --layers 20 --heads 4 "
             "--kv-heads 2 --head-dim 16 --intermediate 96 --vocab 300 --seed 9 --out %s "
             ">/dev/null",
             th_dir, getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build", th_dir);
    REQUIRE(system(cmd) == 0);
    REQUIRE(MODEL_EV_MARK + 2 * 20 + 1 <= BE_EVENTS);
    static th_req req;
    unsigned long long rng = 3;
    th_random_req(&req, &rng, 40, 200, 0);
    th t;
    th_open(&t, 1, "backend=cpu", "compress=true", "max_model_len=1024",
            "max_cache_blocks_per_seq=4", "query_cache_len=4", NULL);
    th_run_all(&t, &req, 1, 1);
    engine_stats st;
    engine_get_stats(t.e, &st);
    printf("engine, 20 layers: %lld compressions, %.6f s scoring, %.6f s compacting, %.6f s busy\n",
           (long long)st.compressions, st.score_seconds, st.compact_seconds, st.busy_seconds);
    CHECK(t.out[0].finals == 1 && t.out[0].n == 200);
    CHECK(st.compressions > 0);
    CHECKF(st.score_seconds > 0 && st.compact_seconds > 0, "phase times %.9f / %.9f s",
           st.score_seconds, st.compact_seconds);
    CHECKF(st.score_seconds + st.compact_seconds <= st.busy_seconds,
           "phase times %.6f + %.6f s exceed the engine's busy time %.6f s", st.score_seconds,
           st.compact_seconds, st.busy_seconds);
    th_close(&t);
    th_model_remove();
}

int main(void) {
    on_backend(BE_CPU, "cpu", 64, 512, 2);
    on_backend(BE_CUDA, "cuda", 2048, 4096, 40);
    compress_times();
    return test_done("queues");
}
