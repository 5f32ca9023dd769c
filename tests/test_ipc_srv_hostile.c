/* Hostile writers to the shared object cannot lock honest clients out (issue 10):
 * - claims naming pid 1, a live process that never mapped the object, or (left
 *   uncompleted) the claimer itself: the false ones are cleared and counted as protocol
 *   errors, and an honest client still attaches when the false claims covered every slot;
 * - the header's magic, slot_bytes, max_clients and state scribbled over: the engine
 *   re-publishes its own copy and an honest client connects and is served;
 * - a CANCEL record naming request 0 gets an error FINAL (and a protocol error), not silence;
 * - a client bumping attach_seq in a loop does not make the engine run housekeeping (and
 *   publish its stats) on every pass.
 */
#include "ipc/proto.h"
#include "ipc/ring.h"
#include "tests/test_ipc_util.h"

#include <fcntl.h>
#include <sys/stat.h>

#define NSLOTS 4

static uint8_t *map_object(const char *name, size_t *len) {
    char path[300];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    REQUIRE(fd >= 0);
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0);
    *len = (size_t)st.st_size;
    void *m = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    REQUIRE(m != MAP_FAILED);
    return m;
}

static zpipc_slot *slot_at(uint8_t *m, const zpipc_header *layout, uint32_t i) {
    return (zpipc_slot *)(m + ZPIPC_SLOTS_OFF + (size_t)i * layout->slot_bytes);
}

static void nudge(zpipc_header *h) {
    ring_fetch_add32(&h->attach_seq, 1);
    ring_notify(&h->engine_futex, &h->engine_sleeping);
}

/* An honest client connects, runs one echo request and leaves. */
static bool served(const char *name, const char *what) {
    zipage_client *c = ipct_connect(name);
    if (!c) {
        fprintf(stderr, "%s: honest client could not connect\n", what);
        return false;
    }
    char out[16];
    zipage_event fin;
    int rc = ipct_generate(c, "hello", 5, out, sizeof out, &fin);
    bool ok =
        !rc && fin.finish == ZIPAGE_FINISH_STOP && fin.text_len == 5 && !memcmp(out, "hello", 5);
    if (!ok) fprintf(stderr, "%s: request failed: rc %d finish %d\n", what, rc, fin.finish);
    zipage_disconnect(c);
    return ok;
}

static int64_t protocol_errors(const char *name) {
    zipage_client *c = ipct_connect(name);
    zipage_stats s;
    if (!c || zipage_get_stats(c, &s)) s.protocol_errors = -1;
    zipage_disconnect(c);
    return s.protocol_errors;
}

/* Maps NAME's object; *layout gets the engine's header as published at start. */
typedef struct mapped {
    uint8_t *m;
    size_t len;
    zpipc_header *h, layout;
} mapped;

static void map_engine(mapped *o, const char *name) {
    o->m = map_object(name, &o->len);
    o->h = (zpipc_header *)o->m;
    memcpy(&o->layout, o->h, sizeof o->layout);
    REQUIRE(o->layout.max_clients == NSLOTS);
}

/* Claims slot i with pid by hand and waits until the engine attaches it. */
static zpipc_slot *claim_own(mapped *o, uint32_t i) {
    zpipc_slot *sl = slot_at(o->m, &o->layout, i);
    REQUIRE(ring_cas32(&sl->claim_pid, 0, (uint32_t)getpid()));
    nudge(o->h);
    double t0 = ipct_ms();
    while (ring_load_acquire32(&sl->slot_state) != ZPIPC_SLOT_ATTACHED && ipct_ms() - t0 < 2000)
        usleep(1000);
    CHECK(ring_load_acquire32(&sl->slot_state) == ZPIPC_SLOT_ATTACHED);
    return sl;
}

/* 1. false claims on every slot but one, the last one the claimer's own (never used) */
static void false_claims(const char *name) {
    pid_t foreign = ipct_fork(SIGKILL); /* alive, but never maps the object */
    if (foreign == 0) {
        pause();
        _exit(0);
    }
    mapped o;
    map_engine(&o, name);
    pid_t claims[NSLOTS - 1] = {1, foreign, foreign};
    for (uint32_t i = 0; i < NSLOTS - 1; i++)
        CHECK(ring_cas32(&slot_at(o.m, &o.layout, i)->claim_pid, 0, (uint32_t)claims[i]));
    claim_own(&o, NSLOTS - 1);
    for (uint32_t i = 0; i < NSLOTS - 1; i++) {
        zpipc_slot *sl = slot_at(o.m, &o.layout, i);
        CHECKF(ring_load_acquire32(&sl->claim_pid) == 0 &&
                   ring_load_acquire32(&sl->slot_state) == ZPIPC_SLOT_FREE,
               "slot %u (claim by pid %d): claim %u state %u", i, (int)claims[i],
               ring_load_acquire32(&sl->claim_pid), ring_load_acquire32(&sl->slot_state));
    }
    CHECK(served(name, "after false claims"));
    int64_t pe = protocol_errors(name);
    CHECKF(pe == 3, "protocol errors %lld, want 3 (pid 1 and the foreign pid twice)",
           (long long)pe);
    munmap(o.m, o.len);
    kill(foreign, SIGKILL);
    waitpid(foreign, NULL, 0);
}

/* 2. CANCEL of request 0 on a slot claimed by hand */
static void cancel_zero(const char *name) {
    mapped o;
    map_engine(&o, name);
    zpipc_slot *own = claim_own(&o, 0);
    zpipc_sub q;
    memset(&q, 0, sizeof q);
    q.type = ZPIPC_SUB_CANCEL;
    q.req_id = 0;
    memcpy((uint8_t *)own + zpipc_sub_off(), &q, sizeof q);
    ring_store_release64(&own->sub_tail, 1); /* record before the tail (engine acquires) */
    ring_notify(&o.h->engine_futex, &o.h->engine_sleeping);
    double t0 = ipct_ms();
    while (ring_load_acquire64(&own->cq_tail) < 1 && ipct_ms() - t0 < 1000)
        usleep(1000);
    CHECK(ring_load_acquire64(&own->cq_tail) == 1);
    zpipc_cqe e;
    memcpy(&e, (uint8_t *)own + zpipc_cq_off(o.layout.sub_entries), sizeof e);
    CHECKF(e.type == ZIPAGE_EV_FINAL && e.req_id == 0 && e.error == ZIPAGE_E_INVALID &&
               e.finish == ZIPAGE_FINISH_ERROR,
           "cancel 0: type %u req %llu error %d finish %d", e.type, (unsigned long long)e.req_id,
           e.error, e.finish);
    CHECK(protocol_errors(name) == 1);
    ring_store_release64(&own->cq_head, ring_load_acquire64(&own->cq_tail));
    ring_store_release32(&own->detach, 1); /* give the hand-claimed slot back */
    nudge(o.h);
    munmap(o.m, o.len);
}

/* 3. each layout field and the state scribbled: re-published within housekeeping */
static void scribbled_header(const char *name) {
    mapped o;
    map_engine(&o, name);
    zpipc_header *h = o.h;
    struct {
        const char *what;
        void *field;
        size_t size;
    } fields[] = {
        {"magic", &h->magic, sizeof h->magic},
        {"slot_bytes", &h->slot_bytes, sizeof h->slot_bytes},
        {"max_clients", &h->max_clients, sizeof h->max_clients},
        {"state", &h->state, sizeof h->state},
    };
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        memset(fields[f].field, 0x5a, fields[f].size);
        usleep(50000); /* > HOUSEKEEP_NS (10 ms) */
        CHECKF(served(name, fields[f].what), "scribbled header.%s", fields[f].what);
        /* put it back by hand, so each field is judged alone */
        memcpy(fields[f].field, (uint8_t *)&o.layout + ((uint8_t *)fields[f].field - o.m),
               fields[f].size);
    }
    munmap(o.m, o.len);
}

/* 4. attach_seq spam: housekeeping (one stats publication each) stays on its period */
static void attach_spam(const char *name) {
    mapped o;
    map_engine(&o, name);
    uint32_t seq0 = ring_load_acquire32(&o.h->stats_seq);
    double t0 = ipct_ms();
    long bumps = 0;
    while (ipct_ms() - t0 < 300) {
        nudge(o.h);
        bumps++;
    }
    uint32_t pubs = (ring_load_acquire32(&o.h->stats_seq) - seq0) / 2;
    fprintf(stderr, "attach_seq spam: %ld bumps in 300 ms, %u stats publications\n", bumps, pubs);
    CHECKF(pubs < 100, "%u stats publications in 300 ms of attach_seq spam (period 10 ms)", pubs);
    CHECK(served(name, "after the spam"));
    munmap(o.m, o.len);
}

int main(void) {
    const char *sets[] = {"max_clients=4", NULL};
    _Static_assert(NSLOTS == 4, "sets above");
    struct {
        const char *tag;
        void (*run)(const char *name);
    } parts[] = {{"claims", false_claims},
                 {"cancel0", cancel_zero},
                 {"header", scribbled_header},
                 {"spam", attach_spam}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char name[64];
        ipct_name(name, sizeof name, parts[i].tag);
        pid_t eng = ipct_engine(name, sets, 0);
        parts[i].run(name);
        CHECKF(ipct_stop(eng, name) == 0, "%s: engine exit", parts[i].tag);
    }
    return test_done("ipc_srv_hostile");
}
