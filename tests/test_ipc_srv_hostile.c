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
    bool ok = !rc && fin.finish == ZIPAGE_FINISH_STOP && fin.text_len == 5 && !memcmp(out, "hello", 5);
    if (!ok) fprintf(stderr, "%s: request failed: rc %d finish %d\n", what, rc, fin.finish);
    zipage_disconnect(c);
    return ok;
}

static int64_t protocol_errors(const char *name) {
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);
    zipage_stats s;
    REQUIRE(zipage_get_stats(c, &s) == 0);
    zipage_disconnect(c);
    return s.protocol_errors;
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "hostile");
    const char *sets[] = {"max_clients=" "4", NULL};
    _Static_assert(NSLOTS == 4, "sets above");
    pid_t foreign = ipct_fork(SIGKILL); /* alive, but never maps the object */
    if (foreign == 0) {
        pause();
        _exit(0);
    }
    pid_t eng = ipct_engine(name, sets, 0);
    size_t len;
    uint8_t *m = map_object(name, &len);
    zpipc_header *h = (zpipc_header *)m, layout;
    memcpy(&layout, h, sizeof layout);
    REQUIRE(layout.max_clients == NSLOTS);

    /* 1. false claims on every slot but one, the last one the claimer's own (never used) */
    pid_t claims[NSLOTS] = {1, foreign, foreign, getpid()};
    for (uint32_t i = 0; i < NSLOTS; i++)
        CHECK(ring_cas32(&slot_at(m, &layout, i)->claim_pid, 0, (uint32_t)claims[i]));
    nudge(h);
    zpipc_slot *own = slot_at(m, &layout, NSLOTS - 1);
    double t0 = ipct_ms();
    while (ring_load_acquire32(&own->slot_state) != ZPIPC_SLOT_ATTACHED && ipct_ms() - t0 < 2000)
        usleep(1000);
    CHECK(ring_load_acquire32(&own->slot_state) == ZPIPC_SLOT_ATTACHED);
    for (uint32_t i = 0; i < NSLOTS - 1; i++) {
        zpipc_slot *sl = slot_at(m, &layout, i);
        CHECKF(ring_load_acquire32(&sl->claim_pid) == 0 &&
                   ring_load_acquire32(&sl->slot_state) == ZPIPC_SLOT_FREE,
               "slot %u (claim by pid %d): claim %u state %u", i, (int)claims[i],
               ring_load_acquire32(&sl->claim_pid), ring_load_acquire32(&sl->slot_state));
    }
    CHECK(served(name, "after false claims"));
    int64_t pe = protocol_errors(name);
    CHECKF(pe == 3, "protocol errors %lld, want 3 (pid 1 and the foreign pid twice)",
           (long long)pe);

    /* 2. CANCEL of request 0 on the slot claimed by hand */
    zpipc_sub q;
    memset(&q, 0, sizeof q);
    q.type = ZPIPC_SUB_CANCEL;
    q.req_id = 0;
    memcpy((uint8_t *)own + zpipc_sub_off(), &q, sizeof q);
    ring_store_release64(&own->sub_tail, 1); /* record before the tail (engine acquires) */
    ring_notify(&h->engine_futex, &h->engine_sleeping);
    t0 = ipct_ms();
    while (ring_load_acquire64(&own->cq_tail) < 1 && ipct_ms() - t0 < 2000)
        usleep(1000);
    CHECK(ring_load_acquire64(&own->cq_tail) == 1);
    zpipc_cqe e;
    memcpy(&e, (uint8_t *)own + zpipc_cq_off(layout.sub_entries), sizeof e);
    CHECKF(e.type == ZIPAGE_EV_FINAL && e.req_id == 0 && e.error == ZIPAGE_E_INVALID &&
               e.finish == ZIPAGE_FINISH_ERROR,
           "cancel 0: type %u req %llu error %d finish %d", e.type, (unsigned long long)e.req_id,
           e.error, e.finish);
    CHECK(protocol_errors(name) == pe + 1);
    ring_store_release64(&own->cq_head, 1);
    ring_store_release32(&own->detach, 1); /* give the hand-claimed slot back */
    nudge(h);

    /* 3. each layout field and the state scribbled: re-published within housekeeping */
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
    }
    CHECK(!memcmp(h, &layout, offsetof(zpipc_header, state)));

    /* 4. attach_seq spam: housekeeping (one stats publication each) stays on its period */
    uint32_t seq0 = ring_load_acquire32(&h->stats_seq);
    t0 = ipct_ms();
    long bumps = 0;
    while (ipct_ms() - t0 < 300) {
        nudge(h);
        bumps++;
    }
    uint32_t pubs = (ring_load_acquire32(&h->stats_seq) - seq0) / 2;
    fprintf(stderr, "attach_seq spam: %ld bumps in 300 ms, %u stats publications\n", bumps, pubs);
    CHECKF(pubs < 100, "%u stats publications in 300 ms of attach_seq spam (period 10 ms)", pubs);
    CHECK(served(name, "after the spam"));

    munmap(m, len);
    kill(foreign, SIGKILL);
    waitpid(foreign, NULL, 0);
    CHECK(ipct_stop(eng, name) == 0);
    return test_done("ipc_srv_hostile");
}
