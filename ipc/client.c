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
 * - The object is hostile until proven otherwise: it must belong to our uid (or the one the
 *   caller names), its header is checked on a private copy (ABI limits, overflow-free sizes,
 *   the real file size) and only that copy is used; the engine pid must be a live process of
 *   the owner that maps the object (ring_pid_check); a slot is claimed only while FREE.
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
    uint32_t max_clients, slot_bytes, max_inflight; /* checked copies of the header's */
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
    p->protect_prompt = -1;
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

static int bad_field(const char *path, const char *field, uint64_t v, const char *want) {
    return fail(ZIPAGE_E_VERSION,
                "/dev/shm%s: header field %s = %llu, expected %s (not an engine of this "
                "library's ABI, or a damaged or forged object)",
                path, field, (unsigned long long)v, want);
}

/* Checks a private copy of the header: every layout field within the ABI limits of proto.h
 * (so no arithmetic below can wrap), the sizes equal to the formulas, and the total equal to
 * the object's real size. Only values checked here are ever used as sizes or offsets. */
static int check_layout(const zpipc_header *h, uint64_t size, const char *path) {
    if (h->magic != ZPIPC_MAGIC)
        return fail(ZIPAGE_E_NOENT, "/dev/shm%s is not a zipage object (bad magic)", path);
    if (h->version != ZPIPC_VERSION)
        return fail(ZIPAGE_E_VERSION, "/dev/shm%s: engine ABI version %u, library %u", path,
                    h->version, ZPIPC_VERSION);
    if (h->header_bytes != ZPIPC_HEADER_BYTES)
        return bad_field(path, "header_bytes", h->header_bytes, "640");
    if (!h->max_clients || h->max_clients > ZPIPC_MAX_CLIENTS)
        return bad_field(path, "max_clients", h->max_clients, "1..1024");
    if (!h->max_inflight || h->max_inflight > ZPIPC_MAX_INFLIGHT)
        return bad_field(path, "max_inflight", h->max_inflight, "1..65536");
    if (!pow2(h->sub_entries) || h->sub_entries > ZPIPC_MAX_SUB_ENTRIES)
        return bad_field(path, "sub_entries", h->sub_entries, "a power of two up to 131072");
    if (!pow2(h->cq_entries) || h->cq_entries > ZPIPC_MAX_CQ_ENTRIES)
        return bad_field(path, "cq_entries", h->cq_entries, "a power of two up to 262144");
    if (!h->payload_bytes || h->payload_bytes > ZPIPC_MAX_PAYLOAD)
        return bad_field(path, "payload_bytes", h->payload_bytes, "1..1073741824");
    uint64_t slot = zpipc_slot_bytes(h->sub_entries, h->cq_entries, h->payload_bytes);
    if (h->slot_bytes != slot)
        return bad_field(path, "slot_bytes", h->slot_bytes, "the stride of the rings and payload");
    uint64_t total = ZPIPC_SLOTS_OFF + (uint64_t)h->max_clients * slot; /* < 2^42 */
    if (h->total_bytes != total)
        return bad_field(path, "total_bytes", h->total_bytes, "4096 + max_clients x slot_bytes");
    if (total != size)
        return fail(ZIPAGE_E_VERSION,
                    "/dev/shm%s: the header describes %llu bytes but the object has %llu", path,
                    (unsigned long long)total, (unsigned long long)size);
    if (h->spin_us > ZPIPC_MAX_SPIN_US) return bad_field(path, "spin_us", h->spin_us, "0..1000000");
    if (h->flags & ~(uint32_t)ZPIPC_HF_ADMIN_CANCEL)
        return bad_field(path, "flags", h->flags, "bit 0 only");
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

/* Opens /dev/shm/NAME and checks who owns it before anything in it is read: only an object
 * of this process's effective uid, or of the uid the caller names, can be an engine it
 * trusts (another user could otherwise squat the name with an object of its own). */
static int open_object(const char *path, const char *name, const zipage_options *opts, int *fd,
                       struct stat *st) {
    *fd = shm_open(path, O_RDWR, 0);
    if (*fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return fail(ZIPAGE_E_NOENT, "no engine named '%s' (/dev/shm%s)", name, path);
        if (e == EACCES || e == EPERM)
            return fail(ZIPAGE_E_PERM, "/dev/shm%s: permission denied", path);
        return fail(ZIPAGE_E_SYS, "shm_open(%s): %s", path, strerror(e));
    }
    uint32_t me = (uint32_t)geteuid();
    int rc = 0;
    if (fstat(*fd, st))
        rc = fail(ZIPAGE_E_SYS, "fstat(/dev/shm%s): %s", path, strerror(errno));
    else if (!S_ISREG(st->st_mode))
        rc = fail(ZIPAGE_E_NOENT, "/dev/shm%s is not a zipage object (not a file)", path);
    else if ((uint32_t)st->st_uid != me &&
             !(opts && opts->engine_uid_set && (uint32_t)st->st_uid == opts->engine_uid))
        rc = fail(ZIPAGE_E_PERM,
                  "/dev/shm%s is owned by uid %u, not by this process's uid %u: refusing it "
                  "(an engine of another user must be named: engine_uid, zipage-cli "
                  "--engine-uid %u)",
                  path, (unsigned)st->st_uid, (unsigned)me, (unsigned)st->st_uid);
    else if (me == 0 && st->st_uid != 0)
        /* The engine verifies a claimer through its /proc/PID/maps, which a non-root engine
         * cannot read for a root process; it refuses such claims (docs/IPC.md). */
        rc = fail(ZIPAGE_E_PERM,
                  "/dev/shm%s is served by uid %u, which cannot verify a root client's claim: "
                  "run the client as a non-root user",
                  path, (unsigned)st->st_uid);
    else if (st->st_size < (off_t)ZPIPC_SLOTS_OFF ||
             (uint64_t)st->st_size > ZPIPC_SLOTS_OFF + (uint64_t)ZPIPC_MAX_CLIENTS *
                                                           zpipc_slot_bytes(ZPIPC_MAX_SUB_ENTRIES,
                                                                            ZPIPC_MAX_CQ_ENTRIES,
                                                                            ZPIPC_MAX_PAYLOAD))
        rc = fail(ZIPAGE_E_NOENT, "/dev/shm%s is not a zipage object (%lld bytes)", path,
                  (long long)st->st_size);
    if (rc) close(*fd);
    return rc;
}

/* Derives the engine's identity from what the kernel says, not from the header alone: the
 * header's pid must be a live process of the object's owner that has this very object
 * (device and inode) mapped. A pidfd is opened first and checked again last, so a pid that
 * dies and is reused during the check is not taken for the engine. */
static int verify_engine(zipage_client *c, pid_t pid, const struct stat *st, const char *path) {
    c->engine_pid = pid;
    c->engine_pidfd = ring_pidfd_open(pid);
    uint32_t seen = 0;
    int e = 0;
    int v = ring_pid_check(pid, (uint32_t)st->st_uid, (uint64_t)st->st_dev, (uint64_t)st->st_ino,
                           &seen, &e);
    /* A process of another user (an engine named with engine_uid) keeps its maps from us
     * unless we are root: its uid, which only it and root can have, is then the proof. */
    if (v == RING_PID_UNREADABLE && (e == EACCES || e == EPERM) && st->st_uid != geteuid())
        v = RING_PID_OK;
    if (v == RING_PID_OK && !ring_pid_alive(c->engine_pidfd, pid)) v = RING_PID_GONE;
    switch (v) {
    case RING_PID_OK:
        return 0;
    case RING_PID_GONE:
        return fail(ZIPAGE_E_ENGINE_GONE, "/dev/shm%s: its engine (pid %d) is not running", path,
                    (int)pid);
    case RING_PID_OTHER_UID:
        return fail(ZIPAGE_E_ENGINE_GONE,
                    "/dev/shm%s: pid %d in its header runs as uid %u, not as the object's owner "
                    "uid %u: not its engine (forged or stale header)",
                    path, (int)pid, (unsigned)seen, (unsigned)st->st_uid);
    case RING_PID_NOT_MAPPED:
        return fail(ZIPAGE_E_ENGINE_GONE,
                    "/dev/shm%s: pid %d in its header does not map the object: not its engine "
                    "(forged or stale header)",
                    path, (int)pid);
    default:
        return fail(ZIPAGE_E_SYS, "/dev/shm%s: cannot verify its engine pid %d: /proc/%d/maps: %s",
                    path, (int)pid, (int)pid, strerror(e));
    }
}

/* Gives a claim back. If the engine attached it meanwhile (ATTACHED, our generation, the claim
 * still ours, so nobody else can have claimed it), the slot is ours: it is detached, so the
 * engine frees it now instead of holding it until this process exits. */
static void give_back(zipage_client *c, zpipc_slot *s, uint32_t me, uint32_t gen) {
    if (ring_load_acquire32(&s->slot_state) == ZPIPC_SLOT_ATTACHED &&
        ring_load_acquire32(&s->generation) == gen && ring_load_acquire32(&s->claim_pid) == me) {
        ring_store_release32(&s->detach, 1); /* pairs with the engine's acquire of detach */
        ring_fetch_add32(&c->hdr->attach_seq, 1);
        ring_notify(&c->hdr->engine_futex, &c->hdr->engine_sleeping);
        return;
    }
    ring_cas32(&s->claim_pid, me, 0);
}

/* Claims a slot the engine shows FREE. A claim word of 0 alone does not make a slot free: a
 * crashed or hostile process may have zeroed it while the engine still serves (or reclaims)
 * the old owner, whose reclaim would then reset the slot under the new client and drop its
 * requests. So the state is checked before the CAS and re-checked after it, with the
 * generation unchanged; ATTACHED then is the engine's answer to this claim (it scans on its
 * own, so it may answer before the re-check). A claim that fails the re-check is given back. */
static int claim_free_slot(zipage_client *c, uint32_t me) {
    for (uint32_t i = 0; i < c->max_clients; i++) {
        zpipc_slot *s = (zpipc_slot *)(c->map + ZPIPC_SLOTS_OFF + (size_t)i * c->slot_bytes);
        /* acquire: pairs with the engine's release of claim_pid = 0 after it reset the slot
         * (state FREE and the new generation are stored before it) */
        if (ring_load_acquire32(&s->claim_pid)) continue;
        if (ring_load_acquire32(&s->slot_state) != ZPIPC_SLOT_FREE) continue;
        uint32_t gen = ring_load_acquire32(&s->generation);
        if (!ring_cas32(&s->claim_pid, 0, me)) continue;
        /* acquire (the CAS too): a reset or reclaim that raced with the claim shows here */
        uint32_t state = ring_load_acquire32(&s->slot_state);
        if ((state != ZPIPC_SLOT_FREE && state != ZPIPC_SLOT_ATTACHED) ||
            ring_load_acquire32(&s->generation) != gen) {
            give_back(c, s, me, gen);
            continue;
        }
        c->slot = i;
        c->ctl = s;
        c->gen = gen;
        return 0;
    }
    return fail(ZIPAGE_E_FULL, "all %u client slots are taken", c->max_clients);
}

/* Claims a slot and waits until the engine attaches this process to it (it looks at each
 * wake-up and every 10 ms). A claim lost while waiting (the engine reset the slot, storing
 * claim_pid = 0 over ours, or the word was overwritten) means claiming again; everything is
 * bounded by hang_timeout, the longest a step may take. */
static int claim_slot(zipage_client *c, const char *name) {
    uint32_t me = (uint32_t)getpid();
    uint64_t t0 = ring_now_ns();
    for (;;) {
        int rc = claim_free_slot(c, me);
        if (rc) return rc;
        zpipc_slot *s = c->ctl;
        ring_fetch_add32(&c->hdr->attach_seq, 1); /* after the claim (engine acquires attach_seq) */
        ring_notify(&c->hdr->engine_futex, &c->hdr->engine_sleeping);
        bool lost = false;
        while (!lost) {
            uint32_t v = ring_load_acquire32(&s->client_futex); /* read before checking */
            /* acquire: pairs with try_attach's release of ATTACHED; FREE was seen after our
             * claim, so this ATTACHED is the engine's answer to it */
            bool attached = ring_load_acquire32(&s->slot_state) == ZPIPC_SLOT_ATTACHED;
            lost = ring_load_acquire32(&s->claim_pid) != me ||
                   ring_load_acquire32(&s->generation) != c->gen;
            if (attached && !lost) return 0;
            uint64_t now = ring_now_ns();
            if (!ring_pid_alive(c->engine_pidfd, c->engine_pid) || now - t0 > c->hang_ns) {
                give_back(c, s, me, c->gen); /* the unanswered claim (or a late answer) */
                return fail(ZIPAGE_E_ENGINE_GONE, "engine '%s' did not accept the client", name);
            }
            if (!lost) ring_futex_wait(&s->client_futex, v, SLEEP_SLICE_NS);
        }
        give_back(c, s, me, c->gen); /* ours no more, or given back if still ours */
        c->ctl = NULL;
    }
}

int zipage_connect(zipage_client **out, const char *name, const zipage_options *opts) {
    *out = NULL;
    char path[260];
    if (!name) name = "zipage";
    if (!*name || strlen(name) > 250 || strchr(name, '/'))
        return fail(ZIPAGE_E_INVALID, "bad engine name '%s'", name);
    snprintf(path, sizeof path, "/%s", name);
    int fd;
    struct stat st;
    int rc = open_object(path, name, opts, &fd, &st);
    if (rc) return rc;
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return fail(ZIPAGE_E_SYS, "mmap(%s): %s", path, strerror(errno));
    zipage_client *c = calloc(1, sizeof *c);
    if (!c) {
        munmap(m, (size_t)st.st_size);
        return fail(ZIPAGE_E_SYS, "out of memory");
    }
    c->map = m;
    c->map_len = (size_t)st.st_size;
    c->hdr = m;
    c->engine_pidfd = -1;
    /* acquire: pairs with the engine's release of READY after it wrote the layout */
    uint32_t state = ring_load_acquire32(&c->hdr->state);
    /* Everything below uses this private copy: the shared header may change under us. */
    zpipc_header h;
    memcpy(&h, c->hdr, sizeof h);
    rc = check_layout(&h, (uint64_t)st.st_size, path);
    if (!rc && state != ZPIPC_READY)
        rc = fail(state == ZPIPC_DRAINING ? ZIPAGE_E_DRAINING : ZIPAGE_E_ENGINE_GONE,
                  "engine '%s' is %s", name,
                  state == ZPIPC_STARTING   ? "starting"
                  : state == ZPIPC_DRAINING ? "draining"
                  : state == ZPIPC_STOPPED  ? "stopped"
                                            : "in an unknown state");
    if (!rc) rc = verify_engine(c, (pid_t)h.engine_pid, &st, path);
    if (!rc) {
        c->max_clients = h.max_clients;
        c->slot_bytes = h.slot_bytes;
        c->max_inflight = h.max_inflight;
        c->sub_entries = h.sub_entries;
        c->cq_entries = h.cq_entries;
        c->payload_bytes = h.payload_bytes;
        c->flags = h.flags;
        c->nreqs = 1; /* <= 2^18 within the ABI limits */
        while (c->nreqs < c->sub_entries + c->max_inflight)
            c->nreqs <<= 1;
        c->reqs = calloc(c->nreqs, sizeof(creq));
        c->sub_pay_end = calloc(c->sub_entries, sizeof(uint64_t));
        if (!c->reqs || !c->sub_pay_end) rc = fail(ZIPAGE_E_SYS, "out of memory");
        c->spin_us = !opts || opts->spin_us == ZIPAGE_SPIN_DEFAULT ? (int32_t)h.spin_us
                     : opts->spin_us == ZIPAGE_SPIN_NONE           ? 0
                                                                   : opts->spin_us;
        c->hang_ns = (uint64_t)(opts && opts->hang_timeout_ms > 0 ? opts->hang_timeout_ms : 10000) *
                     1000000ull;
    }
    if (!rc) rc = claim_slot(c, name);
    if (!rc) {
        uint8_t *base = (uint8_t *)c->ctl;
        c->sub = base + zpipc_sub_off();
        c->cq = base + zpipc_cq_off(c->sub_entries);
        c->payload = base + zpipc_payload_off(c->sub_entries, c->cq_entries);
        rc = check_engine(c, ring_now_ns());
    }
    if (!rc) {
        c->next_id = 1;
        *out = c;
        return 0;
    }
    if (c->ctl && ring_load_relaxed32(&c->ctl->claim_pid) == (uint32_t)getpid())
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
    q->protect_prompt = p->protect_prompt;
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

/* Turns completion record ring into *ev (true) or folds it into a non-streamed request. The
 * record's fields are copied out once before use (another writer of the object could change
 * them between two reads); only the text is read in place. */
static bool take_cqe(zipage_client *c, const zpipc_cqe *ring, zipage_event *ev) {
    zpipc_cqe rec;
    memcpy(&rec, ring, offsetof(zpipc_cqe, text));
    const zpipc_cqe *q = &rec;
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
        if (k) memcpy(e->out_text + e->text_len, ring->text, k);
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
    ev->text = ring->text;
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
    s->max_clients = (int32_t)c->max_clients;
    s->max_inflight_per_client = (int32_t)c->max_inflight;
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
