/* Forged objects: a /dev/shm object whose header carries hostile values (each layout field at
 * 0, 1, 2^31, 2^32-1, 2^63, 2^64-1, non-powers of two, one past the ABI limit, sizes that
 * wrap the old slot formula back to a consistent-looking layout, a slot area beyond the
 * file, a forged engine pid, ...) makes zipage_connect return a clear error naming the field
 * within 500 ms, without a crash or a hang; and zipage-cli against a forged object exits 1
 * with that error. Each connect runs in a child under alarm(), so a hang or a crash is a
 * failure of its case, not of the whole test.
 *
 * The baseline object is valid (engine pid = this process, which maps it) but has no engine,
 * so connecting to it ends in "did not accept" after hang_timeout: the mutations are what
 * the errors are about. */
#include "tests/test_ipc_util.h"

#include "ipc/proto.h"
#include "ipc/ring.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>

#define HANG_MS     1000
#define FAST_MS     500.0
#define NCLIENTS    2u
#define INFLIGHT    4u
#define SUB         16u
#define CQ          1024u
#define PAYLOAD     4096u
#define SLOT_OFF(i) (ZPIPC_SLOTS_OFF + (uint64_t)(i)*base_slot)

static uint64_t base_slot, base_total;
static zpipc_header base;
static int shm_fd;
static char name[64];

/* The payload that makes the unchecked formula 512 + sub*192 + cq*128 + payload wrap (mod
 * 2^64) to `want` bytes. */
static uint64_t wrapping_payload(uint32_t sub, uint32_t cq, uint64_t want) {
    return want - (ZPIPC_SLOT_CTRL_BYTES + (uint64_t)sub * ZPIPC_SUB_BYTES +
                   (uint64_t)cq * ZPIPC_CQE_BYTES);
}

/* Writes header h into a fresh object of `size` bytes (all slots zero = free); with
 * attached, every slot pretends to be attached already (what an unchecking client accepts). */
static void forge(const zpipc_header *h, uint64_t size, bool attached) {
    REQUIRE(ftruncate(shm_fd, 0) == 0 && ftruncate(shm_fd, (off_t)size) == 0);
    size_t n = size < sizeof *h ? (size_t)size : sizeof *h;
    REQUIRE(pwrite(shm_fd, h, n, 0) == (ssize_t)n);
    for (uint32_t i = 0; attached && i < NCLIENTS; i++) {
        uint32_t st = ZPIPC_SLOT_ATTACHED;
        uint64_t hb = ring_now_ns() + 60000000000ull; /* a heartbeat that stays fresh */
        if (SLOT_OFF(i) + ZPIPC_SLOT_CTRL_BYTES > size) continue;
        REQUIRE(pwrite(shm_fd, &st, 4, (off_t)(SLOT_OFF(i) + offsetof(zpipc_slot, slot_state))) ==
                4);
        REQUIRE(pwrite(shm_fd, &hb, 8,
                       (off_t)(SLOT_OFF(i) + offsetof(zpipc_slot, engine_heartbeat_ns))) == 8);
    }
}

/* zipage_connect in a child: its result, message and time, or a crash / hang. */
static void connect_case(const char *what, const char *expect, bool fast) {
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t k = ipct_fork(SIGKILL);
    if (!k) {
        close(pfd[0]);
        alarm(5);
        zipage_options o = {.hang_timeout_ms = HANG_MS};
        zipage_client *c = NULL;
        double t0 = ipct_ms();
        int rc = zipage_connect(&c, name, &o);
        double dt = ipct_ms() - t0;
        char msg[300];
        snprintf(msg, sizeof msg, "%d %.1f %s", rc, dt, zipage_last_error());
        (void)!write(pfd[1], msg, strlen(msg) + 1);
        zipage_disconnect(c);
        _exit(0);
    }
    close(pfd[1]);
    char msg[300] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof msg - 1 && (r = read(pfd[0], msg + got, sizeof msg - 1 - got)) > 0)
        got += (size_t)r;
    close(pfd[0]);
    int st;
    REQUIRE(waitpid(k, &st, 0) == k);
    if (!WIFEXITED(st)) {
        CHECKF(0, "%s: the client %s", what,
               WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? "hung (5 s)" : "crashed");
        return;
    }
    int rc = 0;
    double dt = 0;
    int off = 0;
    CHECKF(sscanf(msg, "%d %lf %n", &rc, &dt, &off) >= 2, "%s: no result", what);
    printf("%-44s %4d %7.1f ms  %s\n", what, rc, dt, msg + off);
    CHECKF(rc < 0, "%s: connected to a forged object", what);
    CHECKF(strstr(msg + off, expect) != NULL, "%s: error does not name '%s'", what, expect);
    if (fast) CHECKF(dt < FAST_MS, "%s: %.1f ms", what, dt);
}

typedef struct {
    const char *what, *expect;
    size_t off, width; /* the header field */
    uint64_t value;
} field_case;

#define F(field) offsetof(zpipc_header, field), sizeof(((zpipc_header *)0)->field)

int main(void) {
    ipct_name(name, sizeof name, "forged");
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    /* an unrelated live process of our uid that does not map the object, and a dead pid */
    pid_t sleeper = ipct_fork(SIGKILL);
    if (!sleeper) {
        pause();
        _exit(0);
    }
    pid_t dead = ipct_fork(SIGKILL);
    if (!dead) _exit(0);
    REQUIRE(waitpid(dead, NULL, 0) == dead);

    shm_fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(shm_fd >= 0);
    base_slot = zpipc_slot_bytes(SUB, CQ, PAYLOAD);
    base_total = ZPIPC_SLOTS_OFF + NCLIENTS * base_slot;
    REQUIRE(ftruncate(shm_fd, (off_t)base_total) == 0);
    /* this process maps the object, so it passes for the engine (pid, uid and mapping) */
    void *keep = mmap(NULL, 4096, PROT_READ, MAP_SHARED, shm_fd, 0);
    REQUIRE(keep != MAP_FAILED);
    base = (zpipc_header){.magic = ZPIPC_MAGIC,
                          .version = ZPIPC_VERSION,
                          .header_bytes = ZPIPC_HEADER_BYTES,
                          .slot_bytes = (uint32_t)base_slot,
                          .max_clients = NCLIENTS,
                          .sub_entries = SUB,
                          .cq_entries = CQ,
                          .payload_bytes = PAYLOAD,
                          .total_bytes = base_total,
                          .max_inflight = INFLIGHT,
                          .engine_pid = (int32_t)getpid(),
                          .spin_us = 50,
                          .state = ZPIPC_READY};

    forge(&base, base_total, false);
    connect_case("baseline (valid, no engine)", "did not accept", false);

    const uint64_t P31 = 1ull << 31, U32 = 0xffffffffull, P63 = 1ull << 63, U64 = ~0ull;
    const field_case cases[] = {
        {"magic 0", "bad magic", F(magic), 0},
        {"magic 2^64-1", "bad magic", F(magic), U64},
        {"version 0", "version 0", F(version), 0},
        {"version 1", "version 1", F(version), 1},
        {"version 3", "version 3", F(version), 3},
        {"version 2^32-1", "version", F(version), U32},
        {"header_bytes 0", "header_bytes", F(header_bytes), 0},
        {"header_bytes 639", "header_bytes", F(header_bytes), 639},
        {"header_bytes 2^32-1", "header_bytes", F(header_bytes), U32},
        {"max_clients 0", "max_clients", F(max_clients), 0},
        {"max_clients 1", "total_bytes", F(max_clients), 1},
        {"max_clients 1025", "max_clients", F(max_clients), 1025},
        {"max_clients 2^31", "max_clients", F(max_clients), P31},
        {"max_clients 2^32-1", "max_clients", F(max_clients), U32},
        {"max_inflight 0", "max_inflight", F(max_inflight), 0},
        {"max_inflight 65537", "max_inflight", F(max_inflight), 65537},
        {"max_inflight 2^31", "max_inflight", F(max_inflight), P31},
        {"max_inflight 2^32-1", "max_inflight", F(max_inflight), U32},
        {"sub_entries 0", "sub_entries", F(sub_entries), 0},
        {"sub_entries 2^17 (the limit)", "slot_bytes", F(sub_entries), 1u << 17},
        {"sub_entries 24 (not a power of two)", "sub_entries", F(sub_entries), 24},
        {"sub_entries 2^18", "sub_entries", F(sub_entries), 1u << 18},
        {"sub_entries 2^31", "sub_entries", F(sub_entries), P31},
        {"sub_entries 2^32-1", "sub_entries", F(sub_entries), U32},
        {"cq_entries 0", "cq_entries", F(cq_entries), 0},
        {"cq_entries 1000", "cq_entries", F(cq_entries), 1000},
        {"cq_entries 2^19", "cq_entries", F(cq_entries), 1u << 19},
        {"cq_entries 2^31", "cq_entries", F(cq_entries), P31},
        {"cq_entries 2^32-1", "cq_entries", F(cq_entries), U32},
        {"payload_bytes 0", "payload_bytes", F(payload_bytes), 0},
        {"payload_bytes 1", "slot_bytes", F(payload_bytes), 1},
        {"payload_bytes 2^30+64", "payload_bytes", F(payload_bytes), (1ull << 30) + 64},
        {"payload_bytes 2^32-1", "payload_bytes", F(payload_bytes), U32},
        {"payload_bytes 2^63", "payload_bytes", F(payload_bytes), P63},
        {"payload_bytes 2^64-1", "payload_bytes", F(payload_bytes), U64},
        {"slot_bytes 0", "slot_bytes", F(slot_bytes), 0},
        {"slot_bytes 1", "slot_bytes", F(slot_bytes), 1},
        {"slot_bytes +4096", "slot_bytes", F(slot_bytes), 0 /* set below */},
        {"slot_bytes 2^31", "slot_bytes", F(slot_bytes), P31},
        {"slot_bytes 2^32-1", "slot_bytes", F(slot_bytes), U32},
        {"total_bytes 0", "total_bytes", F(total_bytes), 0},
        {"total_bytes +4096", "total_bytes", F(total_bytes), 0 /* set below */},
        {"total_bytes 2^63", "total_bytes", F(total_bytes), P63},
        {"total_bytes 2^64-1", "total_bytes", F(total_bytes), U64},
        {"spin_us 2^31", "spin_us", F(spin_us), P31},
        {"spin_us 2^32-1", "spin_us", F(spin_us), U32},
        {"flags 2^31", "flags", F(flags), P31},
        {"state 0 (starting)", "starting", F(state), 0},
        {"state 3 (stopped)", "stopped", F(state), 3},
        {"state 2^32-1", "unknown state", F(state), U32},
        {"engine_pid 0", "pid 0", F(engine_pid), 0},
        {"engine_pid -1", "pid -1", F(engine_pid), U32},
        {"engine_pid 2^31-1", "pid 2147483647", F(engine_pid), 0x7fffffff},
        {"engine_pid 1 (init)", "pid 1", F(engine_pid), 1},
        {"engine_pid of a dead process", "not running", F(engine_pid), (uint64_t)dead},
        {"engine_pid of a live unrelated process", "does not map the object", F(engine_pid),
         (uint64_t)sleeper},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const field_case *fc = &cases[i];
        zpipc_header h = base;
        uint64_t v = fc->value;
        if (!strcmp(fc->what, "slot_bytes +4096")) v = base_slot + 4096;
        if (!strcmp(fc->what, "total_bytes +4096")) v = base_total + 4096;
        memcpy((char *)&h + fc->off, &v, fc->width); /* little-endian: the low bytes */
        forge(&h, base_total, false);
        connect_case(fc->what, fc->expect, true);
    }

    /* Consistent-looking forgeries: the ring sizes at 2^31 / 2^32-1 / 2^17+1.., with a payload
     * that wraps the unchecked slot formula back to the real stride (an unchecked client
     * accepts them and then loops forever or writes outside the mapping). */
    const uint32_t ring_vals[] = {1u << 31, 1u << 30, 1u << 20};
    for (int which = 0; which < 2; which++) {
        for (size_t i = 0; i < sizeof ring_vals / sizeof ring_vals[0]; i++) {
            zpipc_header h = base;
            if (which == 0)
                h.sub_entries = ring_vals[i];
            else
                h.cq_entries = ring_vals[i];
            h.payload_bytes =
                wrapping_payload(h.sub_entries, h.cq_entries, SLOT_OFF(1) - SLOT_OFF(0));
            char what[80];
            snprintf(what, sizeof what, "%s 2^%d + wrapping payload",
                     which ? "cq_entries" : "sub_entries", __builtin_ctz(ring_vals[i]));
            forge(&h, base_total, true);
            connect_case(what, which ? "cq_entries" : "sub_entries", true);
        }
    }
    /* payload_bytes near 2^64 wrapping the formula to one page per slot */
    zpipc_header wrap = base;
    wrap.payload_bytes = wrapping_payload(SUB, CQ, 4096);
    wrap.slot_bytes = 4096;
    wrap.total_bytes = ZPIPC_SLOTS_OFF + NCLIENTS * 4096ull;
    forge(&wrap, wrap.total_bytes, true);
    connect_case("payload_bytes 2^64-130560 (wraps to 4096)", "payload_bytes", true);

    /* the object's real size against the header */
    forge(&base, base_total - base_slot, false);
    connect_case("slot area beyond the file (one slot short)", "the object has", true);
    forge(&base, base_total + 16384, false);
    connect_case("file larger than the header says", "the object has", true);
    forge(&base, 100, false);
    connect_case("file of 100 bytes", "not a zipage object", true);
    forge(&base, 0, false);
    connect_case("empty file", "not a zipage object", true);
    zpipc_header huge = base;
    huge.max_clients = ZPIPC_MAX_CLIENTS;
    huge.total_bytes = ZPIPC_SLOTS_OFF + ZPIPC_MAX_CLIENTS * base_slot;
    forge(&huge, base_total, false);
    connect_case("1024 clients, consistent, file of 2 slots", "the object has", true);

    /* zipage-cli against the wrapping forgery: a clear error and exit status 1 */
    const char *b = getenv("ZP_BUILD");
    char cli[300];
    snprintf(cli, sizeof cli, "%s/zipage-cli", b && *b ? b : "build");
    REQUIRE(access(cli, X_OK) == 0);
    forge(&wrap, wrap.total_bytes, true);
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t k = ipct_fork(SIGKILL);
    if (!k) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        alarm(10); /* kept across exec */
        execl(cli, cli, "--name", name, "generate", "--prompt", "hello", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char err[512] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof err - 1 && (r = read(pfd[0], err + got, sizeof err - 1 - got)) > 0)
        got += (size_t)r;
    close(pfd[0]);
    int st;
    REQUIRE(waitpid(k, &st, 0) == k);
    printf("zipage-cli on a forged object: status %d: %s", st, err);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 1, "zipage-cli status %d", st);
    CHECK(strstr(err, "zipage-cli: ") && strstr(err, "payload_bytes"));

    munmap(keep, 4096);
    close(shm_fd);
    shm_unlink(path);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, NULL, 0);
    return test_done("ipc_cli_forged");
}
