/* server: the engine side of the shared-memory IPC (see server.h, proto.h, docs/IPC.md).
 *
 * Invariants:
 * - Private state is the truth: each slot's sequence numbers, sizes, pid and generation live
 *   in srv_slot; the shared copies are outputs (E lines) or inputs that are range-checked
 *   against the private ones (C lines) after being read once.
 * - Every request the server takes out of a submission ring gets exactly one FINAL record
 *   while its client is attached: the ring space for it is reserved before the record is
 *   consumed (free entries >= requests in flight), so a FINAL always fits; a TOKEN record
 *   only goes out when it leaves that reserve intact, else the request is cancelled with
 *   ZIPAGE_E_OVERRUN (never a silent drop).
 * - A slot is handed to a new client only after every request of its previous owner has
 *   got its terminal event from the engine; then its generation is bumped, so events of
 *   the old owner can never reach the new one.
 * - The header lines a client could scribble on (layout, model facts, state, stats_seq) are
 *   outputs of private copies (pub, state, stats_seq), re-published on housekeeping.
 * - A claim becomes an attached slot only for a living pid whose /proc/PID/maps lists the
 *   object; false claims are cleared at the next scan (at most HOUSEKEEP_NS later).
 * Threading: one thread (the engine's scheduler); ipc_server_stop() may run in a signal
 * handler and only stores a level and wakes the futex.
 * Memory: the object is mapped at create; all else comes from the arena before start ends.
 */
#include "ipc/server.h"

#include "arena/err.h"
#include "ipc/proto.h"
#include "ipc/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HOUSEKEEP_NS 10000000ull  /* liveness, heartbeat and stats period */
#define SUB_BATCH    32           /* records taken from one slot per pass (fairness) */
#define PIECE_CAP    1024         /* bytes of one token's text piece */
#define STOP_NOW_NS  100000000ull /* IPC_STOP_NOW: longest wait for cancellations */
#define STALL_NS     50000000ull  /* longest engine pause for a client that reads slowly */
#define ATTACH_NS    200000ull    /* attach_seq bumps trigger a claim scan at most this often */
#define CLAIMS_PER_PASS 4         /* claims verified per scan (each reads /proc/PID/maps) */
#define MAPS_CHUNK   4096         /* bytes of /proc/PID/maps read at a time */

_Static_assert((int)ENGINE_FINISH_STOP == ZIPAGE_FINISH_STOP, "finish codes");
_Static_assert((int)ENGINE_FINISH_LENGTH == ZIPAGE_FINISH_LENGTH, "finish codes");
_Static_assert((int)ENGINE_FINISH_CANCELLED == ZIPAGE_FINISH_CANCELLED, "finish codes");
_Static_assert((int)ENGINE_FINISH_ERROR == ZIPAGE_FINISH_ERROR, "finish codes");

typedef struct srv_req {
    uint64_t client_id, engine_id;
    uint32_t slot, gen;
    uint32_t tag;       /* bumped on every reuse; half of the engine's user_tag */
    int32_t prev, next; /* the slot's in-flight list */
    uint8_t in_use, cancel_sent, overrun, logprobs;
} srv_req;

typedef struct srv_slot {
    int state; /* ZPIPC_SLOT_* */
    pid_t pid;
    int pidfd;
    uint32_t gen;
    uint64_t sub_head, cq_tail, cq_head; /* private copies; cq_head = last valid value seen */
    int32_t inflight, list;
    uint64_t full_since; /* when its completion ring last lacked room for a step, or 0 */
    bool dirty, dead;
    zpipc_slot *ctl;
    uint8_t *sub, *cq, *payload;
} srv_slot;

struct ipc_server {
    ipc_server_config cfg;
    char path[260];
    char shm_path[272]; /* /dev/shm/NAME as /proc/PID/maps shows it */
    uint8_t *map;
    size_t map_len;
    zpipc_header *hdr;
    /* The truth for the header's layout and model lines and state; re-published on
     * housekeeping, since any client may scribble on the shared copy. */
    zpipc_header pub;
    uint32_t state, stats_seq;
    int32_t vocab; /* prompt and stop ids must be below it (published as header.vocab) */
    uint32_t sub_entries, cq_entries;
    uint64_t slot_bytes;
    srv_slot *slots;
    int32_t *dirty;
    int32_t ndirty;
    struct pollfd *pfds; /* one per slot, for check_pids */
    /* started */
    bool started;
    ipc_engine_ops ops;
    srv_req *reqs;
    uint8_t *detok_states;
    int32_t *free_reqs;
    uint32_t nreqs, nfree;
    uint8_t *scratch; /* payload copy */
    char *render;     /* chat template output */
    size_t render_cap;
    int32_t *ids;
    size_t ids_cap;
    char piece[PIECE_CAP];
    /* loop */
    int64_t active;     /* requests the engine still owes a terminal event */
    int32_t reclaiming; /* slots in RECLAIMING */
    bool stalled;       /* the last step was held back for a slow reader */
    uint32_t attach_seen;
    uint32_t claim_cursor; /* the free slot whose claim the next scan verifies first */
    uint64_t last_house, last_attach;
    int stop_level, stop_applied;
    uint64_t stop_deadline;
    volatile sig_atomic_t stop_req;
    zpipc_stats st;
};

static uint32_t pow2_at_least(uint64_t v) {
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

int ipc_server_config_from_conf(ipc_server_config *cfg, const conf *cf) {
    memset(cfg, 0, sizeof *cfg);
    size_t n = strlen(cf->ipc_name);
    if (!n || n >= sizeof cfg->name || strchr(cf->ipc_name, '/'))
        return err_set(ZP_EINVAL, "key 'ipc_name': '%s' must be 1..%zu characters without '/'",
                       cf->ipc_name, sizeof cfg->name - 1);
    memcpy(cfg->name, cf->ipc_name, n + 1);
    if (strlen(cf->ipc_group) >= sizeof cfg->group)
        return err_set(ZP_EINVAL, "key 'ipc_group': name too long");
    strcpy(cfg->group, cf->ipc_group);
    cfg->mode = (uint32_t)cf->ipc_mode;
    cfg->max_clients = (uint32_t)cf->max_clients;
    cfg->max_inflight = (uint32_t)cf->max_inflight_per_client;
    cfg->payload_bytes = (uint64_t)cf->payload_bytes_per_client;
    cfg->spin_us = (uint32_t)cf->spin_us;
    cfg->admin_cancel = cf->ipc_admin_cancel;
    return 0;
}

const char *ipc_server_name(const ipc_server *s) {
    return s->path;
}

/* Maps an existing object's first page to see whether a live engine serves it. */
static pid_t live_owner(const char *path) {
    int fd = shm_open(path, O_RDONLY, 0);
    if (fd < 0) return 0;
    struct stat st;
    pid_t pid = 0;
    if (!fstat(fd, &st) && st.st_size >= (off_t)sizeof(zpipc_header)) {
        void *m = mmap(NULL, sizeof(zpipc_header), PROT_READ, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED) {
            const zpipc_header *h = m;
            if (h->magic == ZPIPC_MAGIC && ring_pid_alive(-1, h->engine_pid)) pid = h->engine_pid;
            munmap(m, sizeof(zpipc_header));
        }
    }
    close(fd);
    return pid;
}

/* Checks an object found under our name: 0 = replace it (left by a dead engine of this
 * uid, or not an engine's object), else the error. An object of another uid is never
 * replaced: its header (and so its pid) is written by whoever owns it, so it proves nothing,
 * and taking it over would hand that owner an object it can write into. */
static int check_existing(const ipc_server *s) {
    struct stat st;
    if (stat(s->shm_path, &st)) return 0; /* gone meanwhile: create it again */
    if (st.st_uid != geteuid())
        return err_set(ZP_EBUSY,
                       "ipc_name '%s': %s is owned by uid %u, not by this engine's uid %u: choose "
                       "another ipc_name, or have uid %u remove it",
                       s->cfg.name, s->shm_path, (unsigned)st.st_uid, (unsigned)geteuid(),
                       (unsigned)st.st_uid);
    pid_t owner = live_owner(s->path);
    if (owner)
        return err_set(ZP_EBUSY, "ipc_name '%s': %s is served by pid %d", s->cfg.name, s->shm_path,
                       (int)owner);
    return 0;
}

/* Writes the private layout and model lines and state over the shared header where a client
 * has changed them (and at every change of state). The other header lines are the loop's. */
static void publish_header(ipc_server *s) {
    const size_t n = offsetof(zpipc_header, state);
    if (memcmp(s->hdr, &s->pub, n)) memcpy(s->hdr, &s->pub, n);
    /* release: layout before state (pairs with connect's acquire of state) */
    if (ring_load_relaxed32(&s->hdr->state) != s->state)
        ring_store_release32(&s->hdr->state, s->state);
}

static void slot_reset_shared(srv_slot *sl) {
    zpipc_slot *c = sl->ctl;
    ring_store_relaxed64(&c->sub_tail, 0);
    ring_store_relaxed64(&c->cq_head, 0);
    ring_store_relaxed32(&c->client_sleeping, 0);
    ring_store_relaxed32(&c->detach, 0);
    ring_store_relaxed64(&c->sub_head, 0);
    ring_store_relaxed64(&c->cq_tail, 0);
    ring_store_relaxed32((uint32_t *)&c->error_code, 0);
    c->error_msg[0] = 0;
    ring_store_relaxed32(&c->slot_state, ZPIPC_SLOT_FREE);
    ring_store_relaxed32(&c->generation, sl->gen);
    sl->sub_head = sl->cq_tail = sl->cq_head = 0;
    sl->state = ZPIPC_SLOT_FREE;
    sl->pid = 0;
    /* release: a client whose CAS (acquire) sees 0 also sees the reset above */
    ring_store_release32(&c->claim_pid, 0);
}

int ipc_server_create(ipc_server **out, arena *a, const ipc_server_config *cfg) {
    ipc_server *s = arena_alloc(a, sizeof *s, 64, "ipc server");
    if (!s) return ZP_ENOMEM;
    s->cfg = *cfg;
    snprintf(s->path, sizeof s->path, "/%s", cfg->name);
    snprintf(s->shm_path, sizeof s->shm_path, "/dev/shm/%s", cfg->name);
    s->sub_entries = pow2_at_least(cfg->max_inflight * 2u < 16 ? 16 : cfg->max_inflight * 2u);
    uint64_t cq = (uint64_t)cfg->max_inflight * 4;
    s->cq_entries = pow2_at_least(cq < 1024 ? 1024 : cq);
    s->cfg.payload_bytes = (cfg->payload_bytes + 63) & ~(uint64_t)63;
    s->slot_bytes = zpipc_slot_bytes(s->sub_entries, s->cq_entries, s->cfg.payload_bytes);
    s->map_len = ZPIPC_SLOTS_OFF + (size_t)cfg->max_clients * s->slot_bytes;

    int fd = -1;
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = shm_open(s->path, O_RDWR | O_CREAT | O_EXCL, (mode_t)cfg->mode);
        if (fd >= 0 || errno != EEXIST) break;
        int rc = check_existing(s);
        if (rc) return rc;
        shm_unlink(s->path); /* left by an engine of ours that died: replace it */
    }
    if (fd < 0)
        return err_set(ZP_EIO, "ipc_name '%s': shm_open(%s): %s", cfg->name, s->path,
                       strerror(errno));
    int rc = 0;
    if (fchmod(fd, (mode_t)cfg->mode)) /* the umask applied at creation */
        rc = err_set(ZP_EIO, "ipc_mode: fchmod(/dev/shm%s): %s", s->path, strerror(errno));
    if (!rc && cfg->group[0]) {
        struct group *g = getgrnam(cfg->group);
        if (!g)
            rc = err_set(ZP_EINVAL, "key 'ipc_group': no group '%s'", cfg->group);
        else if (fchown(fd, (uid_t)-1, g->gr_gid))
            rc = err_set(ZP_EIO, "ipc_group '%s': fchown: %s", cfg->group, strerror(errno));
    }
    /* Every page is reserved now: a sparse object (ftruncate alone) commits tmpfs pages on
     * first touch, and a full /dev/shm then kills the engine with SIGBUS mid-request. */
    int frc = rc ? 0 : posix_fallocate(fd, 0, (off_t)s->map_len);
    if (frc)
        rc = err_set(ZP_ELIMIT,
                     "cannot reserve %zu bytes (%zu MiB) of shared memory for %s: %s; free space "
                     "in /dev/shm or lower max_clients / payload_bytes_per_client / "
                     "max_inflight_per_client",
                     s->map_len, (s->map_len + (1u << 20) - 1) >> 20, s->shm_path, strerror(frc));
    if (!rc) {
        /* The one shared mapping of the process, made at start-up. */
        void *m = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
            rc = err_set(ZP_EIO, "mmap(/dev/shm%s): %s", s->path, strerror(errno));
        else
            s->map = m;
    }
    close(fd);
    if (!rc) {
        s->slots = arena_alloc(a, sizeof(srv_slot) * cfg->max_clients, 64, "ipc slots");
        s->dirty = arena_alloc(a, sizeof(int32_t) * cfg->max_clients, 64, "ipc dirty list");
        s->pfds = arena_alloc(a, sizeof(struct pollfd) * cfg->max_clients, 64, "ipc pidfd polls");
        if (!s->slots || !s->dirty || !s->pfds) rc = ZP_ENOMEM;
    }
    if (rc) {
        if (s->map) munmap(s->map, s->map_len);
        shm_unlink(s->path);
        return rc;
    }
    s->hdr = (zpipc_header *)s->map;
    zpipc_header *h = &s->pub;
    h->magic = ZPIPC_MAGIC;
    h->version = ZPIPC_VERSION;
    h->header_bytes = ZPIPC_HEADER_BYTES;
    h->slot_bytes = (uint32_t)s->slot_bytes;
    h->max_clients = cfg->max_clients;
    h->sub_entries = s->sub_entries;
    h->cq_entries = s->cq_entries;
    h->payload_bytes = s->cfg.payload_bytes;
    h->total_bytes = s->map_len;
    h->max_inflight = cfg->max_inflight;
    h->engine_pid = (int32_t)getpid();
    h->spin_us = cfg->spin_us;
    h->flags = cfg->admin_cancel ? ZPIPC_HF_ADMIN_CANCEL : 0;
    for (uint32_t i = 0; i < cfg->max_clients; i++) {
        srv_slot *sl = &s->slots[i];
        uint8_t *base = s->map + ZPIPC_SLOTS_OFF + (size_t)i * s->slot_bytes;
        sl->ctl = (zpipc_slot *)base;
        sl->sub = base + zpipc_sub_off();
        sl->cq = base + zpipc_cq_off(s->sub_entries);
        sl->payload = base + zpipc_payload_off(s->sub_entries, s->cq_entries);
        sl->pidfd = -1;
        sl->list = -1;
        sl->gen = 1;
        slot_reset_shared(sl);
    }
    s->state = ZPIPC_STARTING;
    publish_header(s);
    *out = s;
    return 0;
}

int ipc_server_start(ipc_server *s, arena *a, const ipc_engine_ops *ops,
                     const ipc_model_info *info) {
    s->ops = *ops;
    uint64_t n = (uint64_t)s->cfg.max_clients * s->cfg.max_inflight;
    if (n > (1u << 24))
        return err_set(ZP_EINVAL, "max_clients * max_inflight_per_client = %llu exceeds %u",
                       (unsigned long long)n, 1u << 24);
    s->nreqs = s->nfree = (uint32_t)n;
    s->render_cap = s->cfg.payload_bytes + 65536;
    s->ids_cap = s->render_cap;
    size_t dss = (ops->detok_state_size + 15) & ~(size_t)15;
    s->reqs = arena_alloc(a, sizeof(srv_req) * n, 64, "ipc request table");
    s->free_reqs = arena_alloc(a, sizeof(int32_t) * n, 64, "ipc request free list");
    s->detok_states = dss ? arena_alloc(a, dss * n, 64, "ipc detokenizer states") : NULL;
    s->scratch = arena_alloc(a, s->cfg.payload_bytes, 64, "ipc payload scratch");
    s->render = arena_alloc(a, s->render_cap, 64, "ipc chat scratch");
    s->ids = arena_alloc(a, sizeof(int32_t) * s->ids_cap, 64, "ipc prompt ids");
    if (!s->reqs || !s->free_reqs || (dss && !s->detok_states) || !s->scratch || !s->render ||
        !s->ids)
        return ZP_ENOMEM;
    s->ops.detok_state_size = dss;
    for (uint32_t i = 0; i < n; i++)
        s->free_reqs[i] = (int32_t)(n - 1 - i);
    zpipc_header *h = &s->pub;
    snprintf(h->model, sizeof h->model, "%s", info->model ? info->model : "");
    snprintf(h->backend, sizeof h->backend, "%s", info->backend ? info->backend : "");
    h->vocab = info->vocab;
    h->max_model_len = info->max_model_len;
    h->max_concurrency = info->max_concurrency;
    h->blocks_total = info->blocks_total;
    h->block_size = info->block_size;
    s->vocab = info->vocab;
    s->started = true;
    s->last_house = 0;
    for (uint32_t i = 0; i < s->cfg.max_clients; i++)
        ring_store_relaxed32(&s->slots[i].ctl->engine_state, ZPIPC_READY);
    ring_store_relaxed64(&s->hdr->heartbeat_ns, ring_now_ns());
    s->state = ZPIPC_READY;
    publish_header(s);
    return 0;
}

void ipc_server_destroy(ipc_server *s) {
    if (!s || !s->map) return;
    for (uint32_t i = 0; i < s->cfg.max_clients; i++) {
        if (s->slots[i].pidfd >= 0) close(s->slots[i].pidfd);
        /* clients still mapping the object see the end even if run() never got to say it */
        ring_store_release32(&s->slots[i].ctl->engine_state, ZPIPC_STOPPED);
    }
    s->state = ZPIPC_STOPPED;
    publish_header(s);
    munmap(s->map, s->map_len);
    s->map = NULL;
    shm_unlink(s->path);
}

void ipc_server_stop(ipc_server *s, int level) {
    if (level > s->stop_req) s->stop_req = level;
    /* a changed word makes a concurrent futex wait return (the run loop re-checks stop_req) */
    ring_fetch_add32(&s->hdr->engine_futex, 1);
    ring_futex_wake(&s->hdr->engine_futex);
}

/* ---- completion records ---------------------------------------------------------------- */

static uint32_t cq_free(const srv_slot *sl, uint32_t entries) {
    return entries - (uint32_t)(sl->cq_tail - sl->cq_head);
}

static zpipc_cqe *cq_next(ipc_server *s, srv_slot *sl) {
    zpipc_cqe *e = (zpipc_cqe *)(sl->cq + (sl->cq_tail & (s->cq_entries - 1)) * ZPIPC_CQE_BYTES);
    memset(e, 0, sizeof *e);
    sl->cq_tail++;
    if (!sl->dirty) {
        sl->dirty = true;
        s->dirty[s->ndirty++] = (int32_t)(sl - s->slots);
    }
    return e;
}

/* Publishes the completion tails written this pass and wakes sleeping clients. */
static void flush_dirty(ipc_server *s) {
    for (int32_t i = 0; i < s->ndirty; i++) {
        srv_slot *sl = &s->slots[s->dirty[i]];
        sl->dirty = false;
        /* release: the records written by cq_next become visible before the tail (pairs with
         * the client's acquire load of cq_tail) */
        ring_store_release64(&sl->ctl->cq_tail, sl->cq_tail);
        ring_notify(&sl->ctl->client_futex, &sl->ctl->client_sleeping);
    }
    s->ndirty = 0;
}

static void push_final(ipc_server *s, srv_slot *sl, uint64_t req_id, int finish, int error,
                       const char *msg, const engine_usage *u) {
    zpipc_cqe *e = cq_next(s, sl);
    e->req_id = req_id;
    e->type = ZIPAGE_EV_FINAL;
    e->token = -1;
    e->finish = finish;
    e->error = error;
    if (msg) {
        size_t n = strlen(msg);
        e->text_len = (uint32_t)(n < ZPIPC_CQE_TEXT ? n : ZPIPC_CQE_TEXT);
        memcpy(e->text, msg, e->text_len);
    }
    if (u) {
        e->prompt_tokens = u->prompt_tokens;
        e->completion_tokens = u->completion_tokens;
        e->kv_blocks_peak = u->kv_blocks_peak;
        e->compressions = u->compressions;
        e->cached_prompt_tokens = u->cached_prompt_tokens;
        e->evicted_tokens = u->evicted_tokens;
    }
}

static void reject(ipc_server *s, srv_slot *sl, uint64_t req_id, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void reject(ipc_server *s, srv_slot *sl, uint64_t req_id, int code, const char *fmt, ...) {
    char msg[ZPIPC_CQE_TEXT + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->st.rejected++;
    push_final(s, sl, req_id, ZIPAGE_FINISH_ERROR, code, msg, NULL);
}

static int map_engine_error(int zp) {
    switch (zp) {
    case ZP_EINVAL:
    case ZP_ELIMIT:
    case ZP_EUNSUP:
    case ZP_EFORMAT:
        return ZIPAGE_E_INVALID;
    case ZP_EBUSY:
    case ZP_ENOMEM:
        return ZIPAGE_E_BUSY;
    default:
        return ZIPAGE_E_ENGINE;
    }
}

/* ---- request table ----------------------------------------------------------------------- */

static void req_unlink(ipc_server *s, int32_t idx) {
    srv_req *r = &s->reqs[idx];
    srv_slot *sl = &s->slots[r->slot];
    if (r->prev >= 0)
        s->reqs[r->prev].next = r->next;
    else
        sl->list = r->next;
    if (r->next >= 0) s->reqs[r->next].prev = r->prev;
    r->in_use = 0;
    sl->inflight--;
    s->active--;
    s->free_reqs[s->nfree++] = idx;
}

static void req_cancel(ipc_server *s, srv_req *r) {
    if (r->cancel_sent) return;
    r->cancel_sent = 1;
    s->ops.cancel(s->ops.ctx, r->engine_id);
}

static void cancel_slot(ipc_server *s, srv_slot *sl, uint64_t client_id) {
    for (int32_t i = sl->list; i >= 0;) {
        srv_req *r = &s->reqs[i];
        i = r->next; /* cancel may deliver the terminal event at once and unlink r */
        if (!client_id || r->client_id == client_id) req_cancel(s, r);
    }
}

static bool read_cq_head(ipc_server *s, srv_slot *sl);

/* Sends s->piece[0..n) as TOKEN records of request r: the first carries token (or, with
 * token < 0, every record is a CONT of the previous token's text), the rest are CONT
 * records of 64 bytes each. One entry per in-flight request stays free for its FINAL;
 * false (nothing sent) when the records do not fit that way. */
static bool push_text(ipc_server *s, srv_slot *sl, const srv_req *r, int32_t token, float logprob,
                      size_t n) {
    uint32_t need = n <= ZPIPC_CQE_TEXT ? 1 : (uint32_t)((n + ZPIPC_CQE_TEXT - 1) / ZPIPC_CQE_TEXT);
    if (cq_free(sl, s->cq_entries) < need + (uint32_t)sl->inflight &&
        (!read_cq_head(s, sl) || cq_free(sl, s->cq_entries) < need + (uint32_t)sl->inflight))
        return false;
    for (uint32_t k = 0; k < need; k++) {
        zpipc_cqe *e = cq_next(s, sl);
        size_t off = (size_t)k * ZPIPC_CQE_TEXT, len = n - off;
        bool cont = k || token < 0;
        e->req_id = r->client_id;
        e->type = ZIPAGE_EV_TOKEN;
        e->flags = cont ? ZIPAGE_EVF_CONT : 0;
        e->token = cont ? -1 : token;
        e->logprob = r->logprobs && !cont ? logprob : 0.0f;
        e->text_len = (uint32_t)(len < ZPIPC_CQE_TEXT ? len : ZPIPC_CQE_TEXT);
        memcpy(e->text, s->piece + off, e->text_len);
    }
    return true;
}

static void *detok_state(ipc_server *s, uint32_t idx) {
    return s->detok_states ? s->detok_states + (size_t)idx * s->ops.detok_state_size : NULL;
}

/* Every generated token arrives as an ENGINE_RUNNING event (and becomes a TOKEN record); the
 * terminal event's token repeats the last one or is -1 and is not sent again (engine.h).
 * Before the FINAL, the text the detokenizer still holds goes out as a CONT record, so the
 * client's text equals offline decoding of the same ids. */
void ipc_server_on_event(void *srv, const engine_event *ev) {
    ipc_server *s = srv;
    uint32_t idx = (uint32_t)ev->user_tag, tag = (uint32_t)(ev->user_tag >> 32);
    if (idx >= s->nreqs || !s->reqs[idx].in_use || s->reqs[idx].tag != tag) return;
    srv_req *r = &s->reqs[idx];
    srv_slot *sl = &s->slots[r->slot];
    bool live = sl->state == ZPIPC_SLOT_ATTACHED && sl->gen == r->gen;
    size_t n = 0;
    if (ev->finish == ENGINE_RUNNING) {
        if (!live || r->overrun) return;
        if (s->ops.detok(s->ops.ctx, detok_state(s, idx), ev->token, s->piece, sizeof s->piece, &n))
            n = 0; /* a piece that cannot be rendered is sent empty; the id is still right */
        if (!push_text(s, sl, r, ev->token, ev->logprob, n)) {
            r->overrun = 1;
            req_cancel(s, r);
        }
        return;
    }
    if (live && !r->overrun && s->ops.detok_flush &&
        !s->ops.detok_flush(s->ops.ctx, detok_state(s, idx), s->piece, sizeof s->piece, &n) && n &&
        !push_text(s, sl, r, -1, 0.0f, n))
        r->overrun = 1; /* the text's end does not fit: the request fails, it is not cut short */
    if (live) {
        int finish = (int)ev->finish, code = 0;
        const char *msg = NULL;
        if (r->overrun) {
            finish = ZIPAGE_FINISH_ERROR;
            code = ZIPAGE_E_OVERRUN;
            msg = "completion ring full: the client did not read its events";
        } else if (finish == ZIPAGE_FINISH_ERROR) {
            code = map_engine_error(ev->err_code);
            msg = ev->err_msg ? ev->err_msg : "engine error";
        } else if (finish < ZIPAGE_FINISH_STOP || finish > ZIPAGE_FINISH_ERROR) {
            finish = ZIPAGE_FINISH_ERROR;
            code = ZIPAGE_E_ENGINE;
            msg = "engine reported an unknown finish reason";
        }
        push_final(s, sl, r->client_id, finish, code, msg, &ev->usage);
    }
    s->st.completed++;
    req_unlink(s, (int32_t)idx);
}

/* ---- submissions --------------------------------------------------------------------------- */

/* Range checks of the record's own fields (the engine checks the sampler ranges); writes a
 * message naming the field and returns false on the first bad one. */
static bool params_ok(const zpipc_sub *q, char *msg, size_t cap) {
    static const char *fname[] = {
        "temperature",      "top_p", "min_p", "repetition_penalty", "presence_penalty",
        "frequency_penalty"};
    const float fval[] = {
        q->temperature,      q->top_p, q->min_p, q->repetition_penalty, q->presence_penalty,
        q->frequency_penalty};
    for (int i = 0; i < 6; i++)
        if (!isfinite(fval[i]))
            return snprintf(msg, cap, "%s is not a finite number", fname[i]), false;
    if (q->n_stop < 0 || q->n_stop > ZIPAGE_MAX_STOP)
        return snprintf(msg, cap, "n_stop %d outside 0..%d", q->n_stop, ZIPAGE_MAX_STOP), false;
    if (q->compress < -1 || q->compress > 1)
        return snprintf(msg, cap, "compress %d is not -1, 0 or 1", q->compress), false;
    if (q->kv_budget_blocks < 0)
        return snprintf(msg, cap, "kv_budget_blocks %d < 0", q->kv_budget_blocks), false;
    if (q->protect_prompt < -1)
        return snprintf(msg, cap, "protect_prompt %d < -1", q->protect_prompt), false;
    if (q->max_tokens < 1) return snprintf(msg, cap, "max_tokens %d < 1", q->max_tokens), false;
    return true;
}

/* Turns the request's payload into prompt ids in s->ids; *n gets the count. Returns 0, or
 * the ZIPAGE_E_* code with a message in msg. */
static int prompt_ids(ipc_server *s, const zpipc_sub *q, const uint8_t *payload, size_t *n,
                      char *msg, size_t cap) {
    if (q->payload_len == 0 || q->payload_off > s->cfg.payload_bytes ||
        q->payload_len > s->cfg.payload_bytes - q->payload_off) {
        snprintf(msg, cap, "payload [%llu, +%u) outside the %llu-byte area",
                 (unsigned long long)q->payload_off, q->payload_len,
                 (unsigned long long)s->cfg.payload_bytes);
        return ZIPAGE_E_INVALID;
    }
    /* the copy is what gets validated and used: the client may change its payload at will */
    memcpy(s->scratch, payload + q->payload_off, q->payload_len);
    const char *txt = (const char *)s->scratch;
    size_t len = q->payload_len;
    int rc = 0;
    switch (q->kind) {
    case ZIPAGE_PROMPT_IDS:
        if (len % 4) {
            snprintf(msg, cap, "ids payload of %zu bytes is not a multiple of 4", len);
            return ZIPAGE_E_INVALID;
        }
        memcpy(s->ids, s->scratch, len);
        *n = len / 4;
        return 0;
    case ZIPAGE_PROMPT_CHAT:
        rc = s->ops.render_chat(s->ops.ctx, txt, len, q->flags & ZPIPC_SF_THINKING, s->render,
                                s->render_cap, &len);
        txt = s->render;
        if (rc) break;
        /* fallthrough */
    case ZIPAGE_PROMPT_TEXT:
        rc = s->ops.encode(s->ops.ctx, txt, len, s->ids, s->ids_cap, n);
        break;
    default:
        snprintf(msg, cap, "unknown prompt kind %u", q->kind);
        return ZIPAGE_E_INVALID;
    }
    if (rc) {
        snprintf(msg, cap, "%s", err_msg());
        return map_engine_error(rc);
    }
    return 0;
}

int ipc_server_validate_sub(ipc_server *s, const zpipc_sub *q, const uint8_t *payload,
                            engine_request *er, char *msg, size_t cap) {
    if (!params_ok(q, msg, cap)) return ZIPAGE_E_INVALID;
    size_t n = 0;
    int code = prompt_ids(s, q, payload, &n, msg, cap);
    if (code) return code;
    if (n == 0 || n > INT32_MAX) {
        snprintf(msg, cap, "empty prompt");
        return ZIPAGE_E_INVALID;
    }
    /* the bound published as header.vocab, for every engine behind the server */
    for (size_t i = 0; i < n; i++)
        if (s->ids[i] < 0 || s->ids[i] >= s->vocab) {
            snprintf(msg, cap, "prompt id %d at %zu outside the vocabulary [0, %d)", s->ids[i], i,
                     s->vocab);
            return ZIPAGE_E_INVALID;
        }
    for (int32_t i = 0; i < q->n_stop; i++)
        if (q->stop_ids[i] < 0 || q->stop_ids[i] >= s->vocab) {
            snprintf(msg, cap, "stop id %d outside the vocabulary [0, %d)", q->stop_ids[i],
                     s->vocab);
            return ZIPAGE_E_INVALID;
        }
    memset(er, 0, sizeof *er);
    er->prompt_ids = s->ids;
    er->n_prompt = (int32_t)n;
    er->sp.temperature = q->temperature;
    er->sp.top_k = q->top_k;
    er->sp.top_p = q->top_p;
    er->sp.min_p = q->min_p;
    er->sp.repetition_penalty = q->repetition_penalty;
    er->sp.presence_penalty = q->presence_penalty;
    er->sp.frequency_penalty = q->frequency_penalty;
    er->sp.seed = q->seed;
    er->sp.max_tokens = q->max_tokens;
    er->sp.ignore_eos = q->flags & ZPIPC_SF_IGNORE_EOS;
    er->sp.n_stop = q->n_stop;
    memcpy(er->sp.stop_ids, q->stop_ids, sizeof er->sp.stop_ids);
    er->compress = (int8_t)q->compress;
    er->kv_budget_blocks = q->kv_budget_blocks;
    er->protect_prompt = q->protect_prompt;
    er->logprobs = q->flags & ZPIPC_SF_LOGPROBS;
    return 0;
}

static void take_request(ipc_server *s, srv_slot *sl, const zpipc_sub *q) {
    s->st.submitted++;
    if (s->stop_level) {
        reject(s, sl, q->req_id, ZIPAGE_E_DRAINING, "engine is shutting down");
        return;
    }
    if ((uint32_t)sl->inflight >= s->cfg.max_inflight || !s->nfree) {
        reject(s, sl, q->req_id, ZIPAGE_E_BUSY, "%d requests in flight (max_inflight_per_client)",
               sl->inflight);
        return;
    }
    char msg[ZPIPC_CQE_TEXT + 1];
    engine_request er;
    int code = ipc_server_validate_sub(s, q, sl->payload, &er, msg, sizeof msg);
    if (code) {
        reject(s, sl, q->req_id, code, "%s", msg);
        return;
    }
    int32_t idx = s->free_reqs[s->nfree - 1];
    srv_req *r = &s->reqs[idx];
    er.user_tag = ((uint64_t)(r->tag + 1) << 32) | (uint32_t)idx;
    if (s->detok_states) memset(detok_state(s, (uint32_t)idx), 0, s->ops.detok_state_size);
    /* entry ready before submit, so an event delivered from inside submit finds it */
    s->nfree--;
    r->tag++;
    r->client_id = q->req_id;
    r->slot = (uint32_t)(sl - s->slots);
    r->gen = sl->gen;
    r->in_use = 1;
    r->cancel_sent = r->overrun = 0;
    r->logprobs = er.logprobs;
    r->prev = -1;
    r->next = sl->list;
    if (sl->list >= 0) s->reqs[sl->list].prev = idx;
    sl->list = idx;
    sl->inflight++;
    s->active++;
    int rc = s->ops.submit(s->ops.ctx, &er, &r->engine_id);
    if (rc) {
        req_unlink(s, idx);
        reject(s, sl, q->req_id, map_engine_error(rc), "%s", err_msg());
    }
}

/* Marks a client that broke the protocol: its requests are cancelled and its slot is held
 * until its process is gone (it may still write to the slot). */
static void quarantine(ipc_server *s, srv_slot *sl, const char *why) {
    s->st.protocol_errors++;
    snprintf(sl->ctl->error_msg, sizeof sl->ctl->error_msg, "%s", why);
    ring_store_relaxed32((uint32_t *)&sl->ctl->error_code, (uint32_t)ZIPAGE_E_PROTOCOL);
    /* release: error_code/error_msg before the state the client acquires */
    ring_store_release32(&sl->ctl->slot_state, ZPIPC_SLOT_QUARANTINED);
    sl->state = ZPIPC_SLOT_QUARANTINED;
    cancel_slot(s, sl, 0);
    ring_fetch_add32(&sl->ctl->client_futex, 1);
    ring_futex_wake(&sl->ctl->client_futex);
}

/* Reads the client's completion head; false (slot quarantined) when it is impossible. */
static bool read_cq_head(ipc_server *s, srv_slot *sl) {
    /* acquire: pairs with the client's release after it copied the records out */
    uint64_t h = ring_load_acquire64(&sl->ctl->cq_head);
    if (h < sl->cq_head || h > sl->cq_tail) {
        quarantine(s, sl, "completion head out of range");
        return false;
    }
    sl->cq_head = h;
    return true;
}

/* Takes up to SUB_BATCH records from one slot. Returns how many. */
static int poll_slot(ipc_server *s, srv_slot *sl) {
    /* acquire: pairs with the client's release of sub_tail after writing the records */
    uint64_t tail = ring_load_acquire64(&sl->ctl->sub_tail);
    if (tail == sl->sub_head) return 0;
    if (tail < sl->sub_head || tail - sl->sub_head > s->sub_entries) {
        quarantine(s, sl, "submission tail out of range");
        return 0;
    }
    if (!read_cq_head(s, sl)) return 0;
    int done = 0;
    while (sl->sub_head < tail && done < SUB_BATCH && sl->state == ZPIPC_SLOT_ATTACHED) {
        /* a FINAL must fit for this request and every one in flight */
        if (cq_free(sl, s->cq_entries) < (uint32_t)sl->inflight + 1) break;
        zpipc_sub q;
        memcpy(&q, sl->sub + (sl->sub_head & (s->sub_entries - 1)) * ZPIPC_SUB_BYTES, sizeof q);
        switch (q.type) {
        case ZPIPC_SUB_REQUEST:
            take_request(s, sl, &q);
            break;
        case ZPIPC_SUB_CANCEL:
            if (q.req_id) {
                cancel_slot(s, sl, q.req_id);
                break;
            }
            /* 0 names no request (cancel_slot reads it as "all"): a client bug, said so */
            s->st.submitted++;
            s->st.protocol_errors++;
            reject(s, sl, 0, ZIPAGE_E_INVALID, "cancel of request id 0: ids start at 1");
            break;
        case ZPIPC_SUB_CANCEL_CLIENT:
            if (s->cfg.admin_cancel && q.target_slot < s->cfg.max_clients &&
                s->slots[q.target_slot].state == ZPIPC_SLOT_ATTACHED)
                cancel_slot(s, &s->slots[q.target_slot], q.req_id);
            break;
        default:
            s->st.submitted++;
            reject(s, sl, q.req_id, ZIPAGE_E_INVALID, "unknown record type %u", q.type);
        }
        sl->sub_head++;
        done++;
    }
    /* release: the payload of every consumed record has been copied; the client may reuse it */
    ring_store_release64(&sl->ctl->sub_head, sl->sub_head);
    return done;
}

/* ---- slots --------------------------------------------------------------------------------- */

static void publish_stats(ipc_server *s);

/* True when /proc/PID/maps lists the object: the claimer has mapped it, as connect does
 * before it claims. Read in chunks on the stack (no allocation after start-up); a line
 * split across chunks is carried over. */
static bool maps_object(const ipc_server *s, pid_t pid, int *err) {
    char path[64], buf[MAPS_CHUNK + 1];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return false;
    }
    *err = 0;
    size_t plen = strlen(s->shm_path), have = 0;
    bool found = false;
    for (;;) {
        ssize_t k = read(fd, buf + have, MAPS_CHUNK - have);
        if (k <= 0) break;
        have += (size_t)k;
        buf[have] = 0;
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            /* the path is the line's last field: " /dev/shm/NAME" (maybe " (deleted)") */
            char *p = strstr(line, s->shm_path);
            if (p && p > line && p[-1] == ' ' && (!p[plen] || p[plen] == ' ')) found = true;
            line = nl + 1;
        }
        have = (size_t)(buf + have - line);
        if (have == MAPS_CHUNK) have = 0; /* a line longer than a chunk: no path of ours */
        memmove(buf, line, have);
        if (found) break;
    }
    close(fd);
    return found;
}

/* Owner uid of a process (of its /proc entry), or (uid_t)-1. */
static uid_t proc_uid(pid_t pid) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    return stat(path, &st) ? (uid_t)-1 : st.st_uid;
}

/* A claim is honoured only for a living process that has mapped this object. When the
 * engine may not read the claimer's maps (another uid, an engine that is not root), the
 * claim is honoured only if the object's mode lets other uids in at all and the claimer is
 * not root (every system daemon a squatter could name is root, and a root engine can read
 * any maps). Returns NULL when valid, else why not. */
static const char *claim_invalid(const ipc_server *s, pid_t pid, int pidfd) {
    if (pid <= 0 || !ring_pid_alive(pidfd, pid)) return "no living process";
    int err;
    if (maps_object(s, pid, &err)) return NULL;
    if (err != EACCES && err != EPERM) return "the process has not mapped the object";
    uid_t uid = proc_uid(pid);
    if (!(s->cfg.mode & 077) || uid == 0 || uid == (uid_t)-1)
        return "the engine may not inspect the process";
    return NULL;
}

static void try_attach(ipc_server *s, srv_slot *sl) {
    /* acquire: pairs with the claimer's CAS (release) */
    pid_t pid = (pid_t)ring_load_acquire32(&sl->ctl->claim_pid);
    if (!pid) return;
    int fd = ring_pidfd_open(pid);
    if (claim_invalid(s, pid, fd)) { /* a claim no client of ours made: cleared at once */
        if (fd >= 0) close(fd);
        s->st.protocol_errors += ring_pid_alive(-1, pid); /* a live pid was named falsely */
        sl->gen++;
        slot_reset_shared(sl);
        return;
    }
    sl->pid = pid;
    sl->pidfd = fd;
    sl->state = ZPIPC_SLOT_ATTACHED;
    sl->inflight = 0;
    sl->list = -1;
    ring_store_relaxed64(&sl->ctl->engine_heartbeat_ns, ring_now_ns());
    ring_store_relaxed32(&sl->ctl->engine_state, s->stop_level ? ZPIPC_DRAINING : ZPIPC_READY);
    publish_stats(s); /* a client that sees itself attached also finds itself counted */
    /* release: pairs with connect's acquire wait for ATTACHED */
    ring_store_release32(&sl->ctl->slot_state, ZPIPC_SLOT_ATTACHED);
    ring_fetch_add32(&sl->ctl->client_futex, 1);
    ring_futex_wake(&sl->ctl->client_futex);
}

static void begin_reclaim(ipc_server *s, srv_slot *sl) {
    sl->state = ZPIPC_SLOT_RECLAIMING;
    ring_store_relaxed32(&sl->ctl->slot_state, ZPIPC_SLOT_RECLAIMING);
    s->reclaiming++;
    cancel_slot(s, sl, 0);
}

/* Frees reclaiming slots whose requests have all ended, and says so in the stats at once. */
static void finish_reclaims(ipc_server *s) {
    bool freed = false;
    for (uint32_t i = 0; i < s->cfg.max_clients && s->reclaiming; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->state != ZPIPC_SLOT_RECLAIMING || sl->inflight) continue;
        if (sl->pidfd >= 0) close(sl->pidfd);
        sl->pidfd = -1;
        sl->gen++;
        s->reclaiming--;
        slot_reset_shared(sl);
        freed = true;
    }
    if (freed) publish_stats(s);
}

static void publish_stats(ipc_server *s) {
    engine_stats es;
    memset(&es, 0, sizeof es);
    s->ops.stats(s->ops.ctx, &es);
    zpipc_stats *o = &s->st;
    o->running = es.running;
    o->waiting = es.waiting;
    o->max_concurrency = es.max_concurrency;
    o->blocks_total = es.blocks_total;
    o->blocks_used = es.blocks_used;
    o->blocks_free = es.blocks_free;
    o->steps = es.steps;
    o->prompt_tokens = es.prompt_tokens;
    o->completion_tokens = es.completion_tokens;
    o->preemptions = es.preemptions;
    o->prefix_hit_tokens = es.prefix_hit_tokens;
    o->prefix_query_tokens = es.prefix_query_tokens;
    o->compressions = es.compressions;
    o->evicted_tokens = es.evicted_tokens;
    o->busy_seconds = es.busy_seconds;
    o->tokens_per_s = es.tokens_per_s;
    o->clients = 0;
    for (uint32_t i = 0; i < s->cfg.max_clients; i++)
        o->clients += s->slots[i].state != ZPIPC_SLOT_FREE;
    o->inflight = (int32_t)s->active;
    zpipc_header *h = s->hdr;
    /* the private sequence, not the shared one a client may have changed */
    ring_store_relaxed32(&h->stats_seq, ++s->stats_seq);
    ring_fence_release(); /* odd sequence before the data (pairs with the reader's acquire fence) */
    memcpy(&h->stats, o, sizeof *o);
    ring_store_release32(&h->stats_seq, ++s->stats_seq); /* data before the even sequence */
}

/* Liveness of every client process in one poll() over their pidfds (readable = exited);
 * sets sl->dead. Slots without a pidfd fall back to kill(pid, 0). */
static void check_pids(ipc_server *s) {
    nfds_t n = 0;
    for (uint32_t i = 0; i < s->cfg.max_clients; i++) {
        srv_slot *sl = &s->slots[i];
        sl->dead = false;
        if (sl->state != ZPIPC_SLOT_ATTACHED && sl->state != ZPIPC_SLOT_QUARANTINED) continue;
        if (sl->pidfd < 0)
            sl->dead = !ring_pid_alive(-1, sl->pid);
        else
            s->pfds[n++] = (struct pollfd){.fd = sl->pidfd, .events = POLLIN};
    }
    if (!n || poll(s->pfds, n, 0) <= 0) return;
    nfds_t k = 0;
    for (uint32_t i = 0; i < s->cfg.max_clients && k < n; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->pidfd >= 0 &&
            (sl->state == ZPIPC_SLOT_ATTACHED || sl->state == ZPIPC_SLOT_QUARANTINED))
            sl->dead = s->pfds[k++].revents != 0;
    }
}

/* Claims on free slots. Verifying one reads the claimer's /proc/PID/maps, which a hostile
 * writer can make several MB long by naming a process of its own with many mappings, so a
 * scan verifies at most CLAIMS_PER_PASS claims, starting after the last slot it verified, and
 * when it stops early it asks for another scan (after ATTACH_NS): false claims on every slot
 * cannot multiply the cost of one scan, and honest claims still attach within a few scans. */
static void scan_claims(ipc_server *s) {
    uint32_t n = s->cfg.max_clients, verified = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (s->claim_cursor + k) % n;
        srv_slot *sl = &s->slots[i];
        if (sl->state != ZPIPC_SLOT_FREE || !ring_load_relaxed32(&sl->ctl->claim_pid)) continue;
        if (verified == CLAIMS_PER_PASS) {
            s->attach_seen--; /* differs from attach_seq: the loop scans again */
            return;
        }
        try_attach(s, sl);
        verified++;
        s->claim_cursor = (i + 1) % n;
    }
}

/* What an attach_seq bump asks for: claims on free slots and detaches. At most every
 * ATTACH_NS, so a client bumping attach_seq in a loop cannot keep the engine scanning. */
static void attach_scan(ipc_server *s, uint64_t now) {
    s->last_attach = now;
    /* acquire: pairs with the client's fetch-add after its claim; then the claims are scanned */
    s->attach_seen = ring_load_acquire32(&s->hdr->attach_seq);
    scan_claims(s);
    for (uint32_t i = 0; i < s->cfg.max_clients; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->state == ZPIPC_SLOT_ATTACHED && ring_load_acquire32(&sl->ctl->detach))
            begin_reclaim(s, sl); /* acquire: pairs with disconnect's release */
    }
    finish_reclaims(s);
}

static void housekeeping(ipc_server *s, uint64_t now) {
    s->last_house = s->last_attach = now;
    publish_header(s);
    ring_store_relaxed64(&s->hdr->heartbeat_ns, now);
    /* acquire: pairs with the client's fetch-add after its claim; then the claims are scanned */
    s->attach_seen = ring_load_acquire32(&s->hdr->attach_seq);
    check_pids(s);
    scan_claims(s);
    for (uint32_t i = 0; i < s->cfg.max_clients; i++) {
        srv_slot *sl = &s->slots[i];
        switch (sl->state) {
        case ZPIPC_SLOT_ATTACHED:
            ring_store_relaxed64(&sl->ctl->engine_heartbeat_ns, now);
            if (ring_load_acquire32(&sl->ctl->detach)) { /* pairs with disconnect's release */
                begin_reclaim(s, sl);
            } else if (sl->dead) {
                s->st.client_deaths++;
                begin_reclaim(s, sl);
            }
            break;
        case ZPIPC_SLOT_QUARANTINED:
            if (sl->dead) begin_reclaim(s, sl);
            break;
        default:
            break;
        }
    }
    finish_reclaims(s);
    publish_stats(s);
}

/* True when an attach_seq bump is waiting and its scan is due. */
static bool attach_due(ipc_server *s, uint64_t now) {
    /* relaxed: a hint; attach_scan() acquires it again before scanning */
    return ring_load_relaxed32(&s->hdr->attach_seq) != s->attach_seen &&
           now - s->last_attach >= ATTACH_NS;
}

/* True when a client has published something the loop must look at. */
static bool work_pending(ipc_server *s) {
    if (s->stop_req != s->stop_applied) return true;
    /* the same pairings as in attach_scan() and poll_slot() */
    if (attach_due(s, ring_now_ns())) return true;
    for (uint32_t i = 0; i < s->cfg.max_clients; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->state != ZPIPC_SLOT_ATTACHED) continue;
        if (ring_load_acquire64(&sl->ctl->sub_tail) != sl->sub_head ||
            ring_load_relaxed32(&sl->ctl->detach) ||
            (s->stalled && ring_load_relaxed64(&sl->ctl->cq_head) != sl->cq_head))
            return true;
    }
    return false;
}

static void set_engine_state(ipc_server *s, uint32_t st) {
    for (uint32_t i = 0; i < s->cfg.max_clients; i++) {
        srv_slot *sl = &s->slots[i];
        ring_store_release32(&sl->ctl->engine_state,
                             st); /* after the last records (client acquires) */
        if (sl->state != ZPIPC_SLOT_FREE) {
            ring_fetch_add32(&sl->ctl->client_futex, 1);
            ring_futex_wake(&sl->ctl->client_futex);
        }
    }
    s->state = st;
    publish_header(s);
}

static void apply_stop(ipc_server *s, uint64_t now) {
    int level = s->stop_req;
    s->stop_applied = level;
    if (level <= s->stop_level) return;
    if (!s->stop_level) set_engine_state(s, ZPIPC_DRAINING);
    s->stop_level = level;
    if (level >= IPC_STOP_CANCEL)
        for (uint32_t i = 0; i < s->cfg.max_clients; i++)
            cancel_slot(s, &s->slots[i], 0);
    if (level == IPC_STOP_NOW) s->stop_deadline = now + STOP_NOW_NS;
}

/* Flow control: a step emits at most one token per running request, so it may run when
 * every attached client has room for one token plus the reserved FINAL of each of its
 * requests. A client short of room holds the engine back for at most STALL_NS; after that
 * the step runs and that client's requests that do not fit end with ZIPAGE_E_OVERRUN. */
static bool may_step(ipc_server *s, uint64_t now) {
    s->stalled = false;
    for (uint32_t i = 0; i < s->cfg.max_clients; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->state != ZPIPC_SLOT_ATTACHED || !sl->inflight) continue;
        uint32_t need = 2 * (uint32_t)sl->inflight;
        if (cq_free(sl, s->cq_entries) >= need ||
            (read_cq_head(s, sl) && cq_free(sl, s->cq_entries) >= need)) {
            sl->full_since = 0;
            continue;
        }
        if (sl->state != ZPIPC_SLOT_ATTACHED) continue; /* just quarantined */
        if (!sl->full_since) sl->full_since = now;
        if (now - sl->full_since < STALL_NS) s->stalled = true;
    }
    return !s->stalled;
}

int ipc_server_run(ipc_server *s) {
    if (!s->started) return err_set(ZP_ESTATE, "ipc_server_run before ipc_server_start");
    uint64_t spin_ns = (uint64_t)s->cfg.spin_us * 1000, idle_since = 0;
    for (;;) {
        uint64_t now = ring_now_ns();
        if (s->stop_req != s->stop_applied) apply_stop(s, now);
        if (now - s->last_house >= HOUSEKEEP_NS)
            housekeeping(s, now);
        else if (attach_due(s, now))
            attach_scan(s, now);
        int work = 0;
        for (uint32_t i = 0; i < s->cfg.max_clients; i++)
            if (s->slots[i].state == ZPIPC_SLOT_ATTACHED) work += poll_slot(s, &s->slots[i]);
        flush_dirty(s);
        if (s->active > 0 && may_step(s, now)) {
            int rc = s->ops.step(s->ops.ctx);
            if (rc < 0) return err_prefix(rc, "engine step");
            work = 1;
            flush_dirty(s);
        }
        if (s->reclaiming) finish_reclaims(s);
        if (s->stop_level &&
            (s->active == 0 || (s->stop_level == IPC_STOP_NOW && now >= s->stop_deadline))) {
            publish_stats(s);
            set_engine_state(s, ZPIPC_STOPPED);
            return 0;
        }
        if (work) {
            idle_since = 0;
            continue;
        }
        if (!idle_since) idle_since = now;
        if (now - idle_since < spin_ns) {
            ring_cpu_relax();
            continue;
        }
        /* sleep until a client signals, or the next housekeeping tick */
        uint32_t val = ring_load_acquire32(&s->hdr->engine_futex); /* read before re-checking */
        ring_store_relaxed32(&s->hdr->engine_sleeping, 1);
        ring_fence(); /* pairs with ring_notify's fence in the client */
        if (!work_pending(s)) {
            uint64_t t = ring_now_ns();
            int64_t left = (int64_t)(HOUSEKEEP_NS - (t - s->last_house));
            /* a bump seen before its scan is due: wake when it is */
            if (ring_load_relaxed32(&s->hdr->attach_seq) != s->attach_seen) {
                int64_t a = (int64_t)(ATTACH_NS - (t - s->last_attach));
                if (a < left) left = a;
            }
            if (left > 0) ring_futex_wait(&s->hdr->engine_futex, val, left);
        }
        ring_store_relaxed32(&s->hdr->engine_sleeping, 0);
        idle_since = 0;
    }
}
