/* client: the client library behind ipc/zipage.h (static musl libzipage.a, glibc
 * libzipage.so). Protocol: ipc/proto.h, docs/IPC.md.
 *
 * Invariants:
 * - The client owns one slot: it is the only producer of the submission ring and the only
 *   consumer of the completion ring, and keeps private copies of both sequences.
 * - The payload area is used as a byte ring: a prompt is written at pay_head and its bytes
 *   are free again once the engine's sub_head has passed the record naming them (the
 *   engine copies a payload out before publishing sub_head).
 * - Completion entries handed out by poll stay unreleased (cq_head is published at the next
 *   poll), so event text can point into the ring without a copy.
 * - Request bookkeeping is a power-of-two table indexed by id; ids are sequential, so a
 *   slot is only busy when that many requests are outstanding.
 * Memory: malloc and mmap only in zipage_connect; everything after works in place.
 * Threading: one thread at a time per client; the last-error buffer is per thread.
 */
#include "ipc/zipage.h"

#include "ipc/proto.h"
#include "ipc/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK_PERIOD_NS  1000000ull /* engine liveness check while polling */
#define SLEEP_SLICE_NS   10000000ll /* longest futex sleep between liveness checks */
#define STATS_TIMEOUT_NS 100000000ull

typedef struct creq {
    uint64_t id, user_tag;
    int32_t *out_ids;
    char *out_text;
    size_t ids_cap, text_cap, n_ids, text_len;
    int flags;
    bool stream, in_use;
} creq;

struct zipage_client {
    uint8_t *map;
    size_t map_len;
    zpipc_header *hdr;
    zpipc_slot *ctl;
    uint8_t *sub, *cq, *payload;
    uint32_t slot, gen, sub_entries, cq_entries;
    uint64_t payload_bytes;
    pid_t engine_pid;
    int engine_pidfd;
    int32_t spin_us;
    uint32_t flags; /* header flags, read at connect */
    uint64_t hang_ns, last_check;
    uint64_t sub_tail, sub_head, cq_head, cq_released;
    uint64_t pay_head, pay_released;
    uint64_t *sub_pay_end; /* per submission entry: pay_head after its payload */
    uint64_t next_id;
    creq *reqs;
    uint32_t nreqs;
    int32_t inflight;
    int dead; /* sticky error once the engine or the slot is gone */
};

static _Thread_local char last_err[256];

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return code;
}

const char *zipage_last_error(void) {
    return last_err;
}

const char *zipage_strerror(int code) {
    switch (code) {
    case ZIPAGE_OK:
        return "ok";
    case ZIPAGE_E_INVALID:
        return "invalid argument";
    case ZIPAGE_E_BUSY:
        return "busy (backpressure)";
    case ZIPAGE_E_TOO_LARGE:
        return "too large";
    case ZIPAGE_E_ENGINE_GONE:
        return "engine gone";
    case ZIPAGE_E_NOENT:
        return "no such engine";
    case ZIPAGE_E_PERM:
        return "permission denied";
    case ZIPAGE_E_VERSION:
        return "ABI version mismatch";
    case ZIPAGE_E_FULL:
        return "no free client slot";
    case ZIPAGE_E_PROTOCOL:
        return "protocol violation";
    case ZIPAGE_E_ENGINE:
        return "engine error";
    case ZIPAGE_E_OVERRUN:
        return "completion overrun";
    case ZIPAGE_E_DRAINING:
        return "engine draining";
    case ZIPAGE_E_TIMEOUT:
        return "timeout";
    case ZIPAGE_E_SYS:
        return "system error";
    case ZIPAGE_E_STATE:
        return "wrong state";
    default:
        return "unknown error";
    }
}

const char *zipage_finish_name(int finish) {
    switch (finish) {
    case ZIPAGE_FINISH_STOP:
        return "stop";
    case ZIPAGE_FINISH_LENGTH:
        return "length";
    case ZIPAGE_FINISH_CANCELLED:
        return "cancelled";
    case ZIPAGE_FINISH_ERROR:
        return "error";
    default:
        return "none";
    }
}

void zipage_params_default(zipage_params *p) {
    memset(p, 0, sizeof *p);
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->max_tokens = 256;
    p->compress = -1;
}

void zipage_request_default(zipage_request *r) {
    memset(r, 0, sizeof *r);
    r->kind = ZIPAGE_PROMPT_TEXT;
    r->stream = true;
    zipage_params_default(&r->params);
}

static bool pow2(uint32_t v) {
    return v && !(v & (v - 1));
}

/* Checks that the header describes a layout this library can use without going out of
 * the mapping (the engine is trusted, but a stale or foreign object must not crash us). */
static int check_layout(const zpipc_header *h, size_t size) {
    if (h->magic != ZPIPC_MAGIC) return fail(ZIPAGE_E_NOENT, "not a zipage object (bad magic)");
    if (h->version != ZPIPC_VERSION)
        return fail(ZIPAGE_E_VERSION, "engine ABI version %u, library %u", h->version,
                    ZPIPC_VERSION);
    if (h->header_bytes != ZPIPC_HEADER_BYTES || !h->max_clients || !pow2(h->sub_entries) ||
        !pow2(h->cq_entries) || !h->payload_bytes ||
        h->slot_bytes != zpipc_slot_bytes(h->sub_entries, h->cq_entries, h->payload_bytes) ||
        h->total_bytes != ZPIPC_SLOTS_OFF + (uint64_t)h->max_clients * h->slot_bytes ||
        h->total_bytes != size)
        return fail(ZIPAGE_E_VERSION, "inconsistent layout in the header");
    return 0;
}

/* 0 while the engine serves this slot, else the sticky error. The slot's words are checked
 * every time; the engine's process and heartbeat (a syscall) once per CHECK_PERIOD_NS, or at
 * once after a sleep (last_check = 0). */
static int check_engine(zipage_client *c, uint64_t now) {
    if (c->dead) return c->dead;
    zpipc_slot *s = c->ctl;
    /* acquire: these three pair with the engine's release stores of them */
    if (ring_load_acquire32(&s->generation) != c->gen)
        return c->dead = fail(ZIPAGE_E_PROTOCOL, "slot %u was reclaimed by the engine", c->slot);
    if (ring_load_acquire32(&s->slot_state) == ZPIPC_SLOT_QUARANTINED)
        return c->dead = fail(ZIPAGE_E_PROTOCOL, "engine detached this client: %.*s",
                              (int)sizeof s->error_msg, s->error_msg);
    if (ring_load_acquire32(&s->engine_state) == ZPIPC_STOPPED)
        return c->dead = fail(ZIPAGE_E_ENGINE_GONE, "engine stopped");
    if (now - c->last_check < CHECK_PERIOD_NS) return 0;
    c->last_check = now;
    if (!ring_pid_alive(c->engine_pidfd, c->engine_pid))
        return c->dead = fail(ZIPAGE_E_ENGINE_GONE, "engine process %d died", (int)c->engine_pid);
    uint64_t hb = ring_load_relaxed64(&s->engine_heartbeat_ns);
    if (now > hb && now - hb > c->hang_ns)
        return c->dead = fail(ZIPAGE_E_ENGINE_GONE, "engine heartbeat stopped %.1f s ago",
                              (double)(now - hb) * 1e-9);
    return 0;
}

int zipage_connect(zipage_client **out, const char *name, const zipage_options *opts) {
    *out = NULL;
    char path[260];
    if (!name) name = "zipage";
    if (!*name || strlen(name) > 250 || strchr(name, '/'))
        return fail(ZIPAGE_E_INVALID, "bad engine name '%s'", name);
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return fail(ZIPAGE_E_NOENT, "no engine named '%s' (/dev/shm%s)", name, path);
        if (e == EACCES || e == EPERM)
            return fail(ZIPAGE_E_PERM, "/dev/shm%s: permission denied", path);
        return fail(ZIPAGE_E_SYS, "shm_open(%s): %s", path, strerror(e));
    }
    struct stat st;
    void *m = MAP_FAILED;
    int rc = 0;
    if (fstat(fd, &st) || st.st_size < (off_t)ZPIPC_SLOTS_OFF)
        rc = fail(ZIPAGE_E_NOENT, "/dev/shm%s is not a zipage object", path);
    if (!rc) {
        m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) rc = fail(ZIPAGE_E_SYS, "mmap(%s): %s", path, strerror(errno));
    }
    close(fd);
    if (rc) return rc;
    zipage_client *c = calloc(1, sizeof *c);
    if (!c) {
        munmap(m, (size_t)st.st_size);
        return fail(ZIPAGE_E_SYS, "out of memory");
    }
    c->map = m;
    c->map_len = (size_t)st.st_size;
    c->hdr = m;
    c->engine_pidfd = -1;
    zpipc_header *h = c->hdr;
    /* acquire: pairs with the engine's release of READY after it wrote the layout */
    uint32_t state = ring_load_acquire32(&h->state);
    rc = check_layout(h, c->map_len);
    if (!rc && state != ZPIPC_READY)
        rc = fail(state == ZPIPC_DRAINING ? ZIPAGE_E_DRAINING : ZIPAGE_E_ENGINE_GONE,
                  "engine '%s' is %s", name,
                  state == ZPIPC_STARTING   ? "starting"
                  : state == ZPIPC_DRAINING ? "draining"
                                            : "stopped");
    if (!rc) {
        c->engine_pid = h->engine_pid;
        c->engine_pidfd = ring_pidfd_open(c->engine_pid);
        if (!ring_pid_alive(c->engine_pidfd, c->engine_pid))
            rc = fail(ZIPAGE_E_ENGINE_GONE, "engine '%s' (pid %d) is not running", name,
                      (int)c->engine_pid);
    }
    if (!rc) {
        c->sub_entries = h->sub_entries;
        c->cq_entries = h->cq_entries;
        c->payload_bytes = h->payload_bytes;
        c->flags = h->flags;
        c->nreqs = 1;
        while (c->nreqs < c->sub_entries + h->max_inflight)
            c->nreqs <<= 1;
        c->reqs = calloc(c->nreqs, sizeof(creq));
        c->sub_pay_end = calloc(c->sub_entries, sizeof(uint64_t));
        if (!c->reqs || !c->sub_pay_end) rc = fail(ZIPAGE_E_SYS, "out of memory");
        c->spin_us = !opts || opts->spin_us == ZIPAGE_SPIN_DEFAULT ? (int32_t)h->spin_us
                     : opts->spin_us == ZIPAGE_SPIN_NONE           ? 0
                                                                   : opts->spin_us;
        c->hang_ns = (uint64_t)(opts && opts->hang_timeout_ms > 0 ? opts->hang_timeout_ms : 10000) *
                     1000000ull;
    }
    uint32_t me = (uint32_t)getpid();
    for (uint32_t i = 0; !rc && !c->ctl && i < h->max_clients; i++) {
        zpipc_slot *s = (zpipc_slot *)(c->map + ZPIPC_SLOTS_OFF + (size_t)i * h->slot_bytes);
        if (ring_load_relaxed32(&s->claim_pid) || !ring_cas32(&s->claim_pid, 0, me)) continue;
        c->slot = i;
        c->ctl = s;
        /* the engine bumped the generation before freeing the slot (acquire in the CAS) */
        c->gen = ring_load_acquire32(&s->generation);
    }
    if (!rc && !c->ctl)
        rc = fail(ZIPAGE_E_FULL, "all %u client slots of '%s' are taken", h->max_clients, name);
    if (!rc) {
        uint8_t *base = (uint8_t *)c->ctl;
        c->sub = base + zpipc_sub_off();
        c->cq = base + zpipc_cq_off(c->sub_entries);
        c->payload = base + zpipc_payload_off(c->sub_entries, c->cq_entries);
        ring_fetch_add32(&h->attach_seq, 1); /* after the claim (engine acquires attach_seq) */
        ring_notify(&h->engine_futex, &h->engine_sleeping);
        /* wait for the engine to take the claim */
        uint64_t t0 = ring_now_ns();
        for (;;) {
            uint32_t v = ring_load_acquire32(&c->ctl->client_futex); /* read before checking */
            /* acquire: pairs with try_attach's release of ATTACHED */
            if (ring_load_acquire32(&c->ctl->slot_state) == ZPIPC_SLOT_ATTACHED) break;
            uint64_t now = ring_now_ns();
            /* the engine attaches between steps: as long as a step may take (hang_timeout) */
            if (!ring_pid_alive(c->engine_pidfd, c->engine_pid) || now - t0 > c->hang_ns) {
                rc = fail(ZIPAGE_E_ENGINE_GONE, "engine '%s' did not accept the client", name);
                break;
            }
            ring_futex_wait(&c->ctl->client_futex, v, SLEEP_SLICE_NS);
        }
        if (rc) ring_cas32(&c->ctl->claim_pid, me, 0); /* give the unanswered claim back */
    }
    if (!rc && (rc = check_engine(c, ring_now_ns())) == 0) {
        c->next_id = 1;
        *out = c;
        return 0;
    }
    if (c->ctl && ring_load_relaxed32(&c->ctl->claim_pid) == me)
        ring_store_release32(&c->ctl->detach, 1); /* attached but unusable: free it at once */
    if (c->engine_pidfd >= 0) close(c->engine_pidfd);
    munmap(c->map, c->map_len);
    free(c->reqs);
    free(c->sub_pay_end);
    free(c);
    return rc;
}

void zipage_disconnect(zipage_client *c) {
    if (!c) return;
    /* release: the engine's acquire of detach sees everything this client wrote */
    ring_store_release32(&c->ctl->detach, 1);
    ring_fetch_add32(&c->hdr->attach_seq, 1); /* the client set changed: look now */
    ring_notify(&c->hdr->engine_futex, &c->hdr->engine_sleeping);
    if (c->engine_pidfd >= 0) close(c->engine_pidfd);
    munmap(c->map, c->map_len);
    free(c->reqs);
    free(c->sub_pay_end);
    free(c);
}

int zipage_inflight(const zipage_client *c) {
    return c->inflight;
}
int zipage_slot(const zipage_client *c) {
    return (int)c->slot;
}

/* Refreshes what the engine has consumed: ring entries and payload bytes become free. */
static void refresh_sub_head(zipage_client *c) {
    /* acquire: pairs with the engine's release after copying the records and payloads */
    uint64_t h = ring_load_acquire64(&c->ctl->sub_head);
    if (h <= c->sub_head || h > c->sub_tail) return; /* nothing new (or nonsense: ignore) */
    c->sub_head = h;
    c->pay_released = c->sub_pay_end[(h - 1) & (c->sub_entries - 1)];
}

/* Claims the next submission record and, for len > 0, payload space. NULL when full. */
static zpipc_sub *sub_reserve(zipage_client *c, size_t len, uint64_t *pay_off, int *err) {
    if (c->sub_tail - c->sub_head >= c->sub_entries) refresh_sub_head(c);
    if (c->sub_tail - c->sub_head >= c->sub_entries) {
        *err = fail(ZIPAGE_E_BUSY, "submission ring full (%u records)", c->sub_entries);
        return NULL;
    }
    if (len) {
        if (len > c->payload_bytes) {
            *err =
                fail(ZIPAGE_E_TOO_LARGE, "prompt of %zu bytes exceeds the %llu-byte payload area",
                     len, (unsigned long long)c->payload_bytes);
            return NULL;
        }
        uint64_t start = c->pay_head, pos = start % c->payload_bytes;
        if (pos + len > c->payload_bytes) start += c->payload_bytes - pos; /* no wrapping inside */
        if (start + len - c->pay_released > c->payload_bytes) refresh_sub_head(c);
        if (start + len - c->pay_released > c->payload_bytes) {
            *err = fail(ZIPAGE_E_BUSY, "payload area full (%llu bytes in the engine's queue)",
                        (unsigned long long)(c->pay_head - c->pay_released));
            return NULL;
        }
        *pay_off = start % c->payload_bytes;
        c->pay_head = start + len;
    }
    zpipc_sub *q = (zpipc_sub *)(c->sub + (c->sub_tail & (c->sub_entries - 1)) * ZPIPC_SUB_BYTES);
    memset(q, 0, sizeof *q);
    return q;
}

static void sub_publish(zipage_client *c) {
    c->sub_pay_end[c->sub_tail & (c->sub_entries - 1)] = c->pay_head;
    c->sub_tail++;
    /* release: the record and payload are visible before the tail (engine's acquire) */
    ring_store_release64(&c->ctl->sub_tail, c->sub_tail);
    ring_notify(&c->hdr->engine_futex, &c->hdr->engine_sleeping);
}

static int usable(zipage_client *c) {
    int rc = check_engine(c, ring_now_ns());
    if (rc) return rc;
    if (ring_load_acquire32(&c->ctl->engine_state) == ZPIPC_DRAINING) /* set_engine_state */
        return fail(ZIPAGE_E_DRAINING, "engine is shutting down");
    return 0;
}

int zipage_submit(zipage_client *c, const zipage_request *r, uint64_t *req_id) {
    int rc = usable(c);
    if (rc) return rc;
    const void *src;
    size_t len;
    switch (r->kind) {
    case ZIPAGE_PROMPT_TEXT:
    case ZIPAGE_PROMPT_CHAT:
        src = r->text;
        len = r->text_len;
        break;
    case ZIPAGE_PROMPT_IDS:
        src = r->ids;
        len = r->n_ids * sizeof(int32_t);
        if (r->n_ids > SIZE_MAX / 8) return fail(ZIPAGE_E_TOO_LARGE, "too many prompt ids");
        break;
    default:
        return fail(ZIPAGE_E_INVALID, "unknown prompt kind %d", r->kind);
    }
    if (!src || !len) return fail(ZIPAGE_E_INVALID, "empty prompt");
    const zipage_params *p = &r->params;
    if (p->n_stop < 0 || p->n_stop > ZIPAGE_MAX_STOP || p->max_tokens < 1)
        return fail(ZIPAGE_E_INVALID, "n_stop must be 0..%d and max_tokens >= 1", ZIPAGE_MAX_STOP);
    uint64_t id = c->next_id;
    creq *e = &c->reqs[id & (c->nreqs - 1)];
    if (e->in_use) return fail(ZIPAGE_E_BUSY, "%d requests outstanding", c->inflight);
    uint64_t off = 0;
    zpipc_sub *q = sub_reserve(c, len, &off, &rc);
    if (!q) return rc;
    memcpy(c->payload + off, src, len);
    q->type = ZPIPC_SUB_REQUEST;
    q->kind = (uint32_t)r->kind;
    q->req_id = id;
    q->payload_off = off;
    q->payload_len = (uint32_t)len;
    q->flags = (p->ignore_eos ? ZPIPC_SF_IGNORE_EOS : 0) | (p->logprobs ? ZPIPC_SF_LOGPROBS : 0) |
               (r->enable_thinking ? ZPIPC_SF_THINKING : 0);
    q->temperature = p->temperature;
    q->top_k = p->top_k;
    q->top_p = p->top_p;
    q->min_p = p->min_p;
    q->repetition_penalty = p->repetition_penalty;
    q->presence_penalty = p->presence_penalty;
    q->frequency_penalty = p->frequency_penalty;
    q->max_tokens = p->max_tokens;
    q->seed = p->seed;
    q->n_stop = p->n_stop;
    memcpy(q->stop_ids, p->stop_ids, sizeof q->stop_ids);
    q->kv_budget_blocks = p->kv_budget_blocks;
    q->compress = p->compress;
    memset(e, 0, sizeof *e);
    e->id = id;
    e->user_tag = r->user_tag;
    e->stream = r->stream;
    e->out_ids = r->out_ids;
    e->ids_cap = r->out_ids ? r->out_ids_cap : 0;
    e->out_text = r->out_text;
    e->text_cap = r->out_text ? r->out_text_cap : 0;
    e->in_use = true;
    c->next_id++;
    c->inflight++;
    sub_publish(c);
    *req_id = id;
    return 0;
}

static int push_cancel(zipage_client *c, uint32_t type, uint32_t slot, uint64_t req_id) {
    int rc = check_engine(c, ring_now_ns());
    if (rc) return rc;
    zpipc_sub *q = sub_reserve(c, 0, NULL, &rc);
    if (!q) return rc;
    q->type = type;
    q->req_id = req_id;
    q->target_slot = slot;
    sub_publish(c);
    return 0;
}

int zipage_cancel(zipage_client *c, uint64_t req_id) {
    creq *e = &c->reqs[req_id & (c->nreqs - 1)];
    if (!req_id || !e->in_use || e->id != req_id)
        return fail(ZIPAGE_E_INVALID, "no request %llu in flight", (unsigned long long)req_id);
    return push_cancel(c, ZPIPC_SUB_CANCEL, 0, req_id);
}

int zipage_cancel_client(zipage_client *c, uint32_t slot, uint64_t req_id) {
    if (!(c->flags & ZPIPC_HF_ADMIN_CANCEL))
        return fail(ZIPAGE_E_PERM, "the engine does not allow cancelling other clients' requests "
                                   "(ipc_admin_cancel = false)");
    return push_cancel(c, ZPIPC_SUB_CANCEL_CLIENT, slot, req_id);
}

/* Turns completion record q into *ev (true) or folds it into a non-streamed request. */
static bool take_cqe(zipage_client *c, const zpipc_cqe *q, zipage_event *ev) {
    creq *e = &c->reqs[q->req_id & (c->nreqs - 1)];
    if (!e->in_use || e->id != q->req_id)
        return false; /* not ours (cannot happen unless the
                          engine is broken): skip */
    size_t tl = q->text_len < ZPIPC_CQE_TEXT ? q->text_len : ZPIPC_CQE_TEXT;
    if (q->type == ZIPAGE_EV_TOKEN && !e->stream) {
        if (!(q->flags & ZIPAGE_EVF_CONT)) {
            if (e->n_ids < e->ids_cap)
                e->out_ids[e->n_ids] = q->token;
            else
                e->flags |= ZIPAGE_EVF_IDS_TRUNCATED;
            e->n_ids++;
        }
        size_t room = e->text_cap - (e->text_len < e->text_cap ? e->text_len : e->text_cap);
        size_t k = tl < room ? tl : room;
        if (k) memcpy(e->out_text + e->text_len, q->text, k);
        if (k < tl) e->flags |= ZIPAGE_EVF_TEXT_TRUNCATED;
        e->text_len += k;
        return false;
    }
    memset(ev, 0, sizeof *ev);
    ev->req_id = q->req_id;
    ev->user_tag = e->user_tag;
    ev->type = q->type == ZIPAGE_EV_FINAL ? ZIPAGE_EV_FINAL : ZIPAGE_EV_TOKEN;
    ev->flags = (int)(q->flags & ZIPAGE_EVF_CONT);
    ev->token = q->token;
    ev->logprob = q->logprob;
    ev->text = q->text;
    ev->text_len = tl;
    if (ev->type == ZIPAGE_EV_TOKEN) return true;
    ev->finish = q->finish;
    ev->error = q->error;
    ev->prompt_tokens = q->prompt_tokens;
    ev->completion_tokens = q->completion_tokens;
    ev->kv_blocks_peak = q->kv_blocks_peak;
    ev->compressions = q->compressions;
    ev->cached_prompt_tokens = q->cached_prompt_tokens;
    ev->evicted_tokens = q->evicted_tokens;
    if (!e->stream) {
        ev->flags |= e->flags;
        ev->n_ids = e->n_ids < e->ids_cap ? e->n_ids : e->ids_cap;
        if (q->finish != ZIPAGE_FINISH_ERROR) {
            ev->text = e->out_text;
            ev->text_len = e->text_len;
        }
    }
    e->in_use = false;
    c->inflight--;
    return true;
}

int zipage_poll(zipage_client *c, zipage_event *evs, int max) {
    if (c->cq_released != c->cq_head) {
        /* release: the entries handed out by the previous poll are free again (engine's
         * acquire of cq_head) */
        ring_store_release64(&c->ctl->cq_head, c->cq_head);
        c->cq_released = c->cq_head;
        /* an engine held back by this client's full ring sleeps until it has room */
        ring_notify(&c->hdr->engine_futex, &c->hdr->engine_sleeping);
    }
    /* acquire: pairs with the engine's release of cq_tail after writing the records */
    uint64_t tail = ring_load_acquire64(&c->ctl->cq_tail);
    if (tail - c->cq_head > c->cq_entries) tail = c->cq_head; /* slot was reset: see check */
    int n = 0;
    while (c->cq_head < tail && n < max) {
        const zpipc_cqe *q =
            (const zpipc_cqe *)(c->cq + (c->cq_head & (c->cq_entries - 1)) * ZPIPC_CQE_BYTES);
        c->cq_head++;
        if (take_cqe(c, q, &evs[n])) n++;
    }
    if (n) return n;
    return check_engine(c, ring_now_ns());
}

int zipage_wait(zipage_client *c, zipage_event *evs, int max, int timeout_ms) {
    uint64_t t0 = ring_now_ns();
    uint64_t spin_end = c->spin_us < 0 ? UINT64_MAX : t0 + (uint64_t)c->spin_us * 1000;
    for (;;) {
        int n = zipage_poll(c, evs, max);
        if (n) return n;
        uint64_t now = ring_now_ns();
        int64_t left =
            timeout_ms < 0 ? INT64_MAX : (int64_t)timeout_ms * 1000000 - (int64_t)(now - t0);
        if (left <= 0) return fail(ZIPAGE_E_TIMEOUT, "no event within %d ms", timeout_ms);
        if (now < spin_end) {
            ring_cpu_relax();
            continue;
        }
        uint32_t v = ring_load_acquire32(&c->ctl->client_futex); /* read before re-checking */
        ring_store_relaxed32(&c->ctl->client_sleeping, 1);
        ring_fence(); /* pairs with ring_notify's fence in the engine */
        if (ring_load_acquire64(&c->ctl->cq_tail) == c->cq_head) /* as in zipage_poll */
            ring_futex_wait(&c->ctl->client_futex, v,
                            left < SLEEP_SLICE_NS ? left : SLEEP_SLICE_NS);
        ring_store_relaxed32(&c->ctl->client_sleeping, 0);
        c->last_check = 0; /* check the engine after every sleep */
    }
}

int zipage_get_stats(zipage_client *c, zipage_stats *s) {
    int rc = check_engine(c, ring_now_ns());
    if (rc) return rc;
    const zpipc_header *h = c->hdr;
    zpipc_stats st;
    uint64_t t0 = ring_now_ns();
    for (;;) {
        /* the engine holds the sequence odd for a copy's time; longer means the header was
         * scribbled on, which the engine repairs at its next publication (10 ms) */
        if (ring_now_ns() - t0 > STATS_TIMEOUT_NS)
            return fail(ZIPAGE_E_BUSY, "statistics kept changing");
        /* acquire: pairs with the engine's final release of an even sequence */
        uint32_t s1 = ring_load_acquire32(&h->stats_seq);
        if (s1 & 1) {
            ring_cpu_relax();
            continue;
        }
        memcpy(&st, &h->stats, sizeof st);
        ring_fence_acquire(); /* the copy happens before the re-read (seqlock) */
        if (ring_load_relaxed32(&h->stats_seq) == s1) break;
    }
    memset(s, 0, sizeof *s);
    s->running = st.running;
    s->waiting = st.waiting;
    s->max_concurrency = st.max_concurrency;
    s->blocks_total = st.blocks_total;
    s->blocks_used = st.blocks_used;
    s->blocks_free = st.blocks_free;
    s->steps = st.steps;
    s->prompt_tokens = st.prompt_tokens;
    s->completion_tokens = st.completion_tokens;
    s->preemptions = st.preemptions;
    s->prefix_hit_tokens = st.prefix_hit_tokens;
    s->prefix_query_tokens = st.prefix_query_tokens;
    s->compressions = st.compressions;
    s->evicted_tokens = st.evicted_tokens;
    s->busy_seconds = st.busy_seconds;
    s->tokens_per_s = st.tokens_per_s;
    s->clients = st.clients;
    s->inflight = st.inflight;
    s->submitted = st.submitted;
    s->completed = st.completed;
    s->rejected = st.rejected;
    s->client_deaths = st.client_deaths;
    s->protocol_errors = st.protocol_errors;
    s->max_clients = (int32_t)h->max_clients;
    s->max_inflight_per_client = (int32_t)h->max_inflight;
    s->engine_pid = c->engine_pid;
    s->state = (int32_t)ring_load_acquire32(&c->ctl->engine_state); /* set_engine_state */
    memcpy(s->model, h->model, sizeof s->model);
    s->model[sizeof s->model - 1] = 0;
    memcpy(s->backend, h->backend, sizeof s->backend);
    s->backend[sizeof s->backend - 1] = 0;
    return 0;
}

int zipage_generate(zipage_client *c, const zipage_request *r, zipage_event *final,
                    int timeout_ms) {
    if (c->inflight) return fail(ZIPAGE_E_STATE, "%d other requests in flight", c->inflight);
    zipage_request q = *r;
    q.stream = false;
    uint64_t id;
    int rc = zipage_submit(c, &q, &id);
    if (rc) return rc;
    uint64_t t0 = ring_now_ns();
    bool cancelled = false;
    for (;;) {
        int left = -1;
        if (timeout_ms >= 0) {
            int64_t ms = timeout_ms - (int64_t)((ring_now_ns() - t0) / 1000000);
            left = ms > 0 ? (int)ms : 0;
        }
        if (cancelled) left = 1000;
        rc = zipage_wait(c, final, 1, left);
        if (rc == 1 && final->type == ZIPAGE_EV_FINAL && final->req_id == id) {
            if (cancelled) return fail(ZIPAGE_E_TIMEOUT, "no result within %d ms", timeout_ms);
            return 0;
        }
        if (rc == ZIPAGE_E_TIMEOUT && !cancelled) {
            cancelled = true;
            if ((rc = zipage_cancel(c, id))) return rc;
            continue;
        }
        if (rc < 0) return rc;
    }
}
