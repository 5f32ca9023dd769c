/* Hostile client fuzzer (the engine runs under ASan): processes claim a slot and then write
 * random values into everything a client can reach: submission records (random types,
 * kinds, offsets, lengths, parameters, NaNs), the payload, the rings, their indices, the
 * ownership words, and the object header, tens of thousands of times. The engine must never
 * crash, and two well-behaved clients running verified requests meanwhile must see only
 * correct results. At the end every slot is reclaimed and the engine drains cleanly. */
#include "ipc/proto.h"
#include "ipc/ring.h"
#include "tests/test_ipc_util.h"

#include <fcntl.h>

#define ITERS      40000 /* in all; a round ends when the engine quarantines its client */
#define MAX_ROUNDS 1000
#define GOOD       2

static uint32_t rnd32(unsigned long long *s) {
    return (uint32_t)test_rand_u64(s);
}

static float rnd_float(unsigned long long *s) {
    switch (rnd32(s) % 6) {
    case 0:
        return NAN;
    case 1:
        return INFINITY;
    case 2:
        return -1.0f;
    case 3:
        return 1e30f;
    default:
        return (float)(rnd32(s) % 1000) / 100.0f;
    }
}

/* A value the engine must never take as a live pid (above any pid_max), or our own. */
static uint32_t rnd_pid(unsigned long long *s) {
    uint32_t k = rnd32(s) % 3;
    return k == 0 ? 0 : k == 1 ? (uint32_t)getpid() : (rnd32(s) | 0x40000000u);
}

/* One hostile client: fuzzes until the engine detaches it or `iters` are done. Exit status:
 * 0, or 30 when no slot could be claimed; the iterations done go to *done (shared). */
static int fuzzer(uint8_t *map, const zpipc_header *lay, uint64_t seed0, int iters,
                  volatile int *done) {
    unsigned long long seed = seed0;
    zpipc_header *h = (zpipc_header *)map;
    /* claim a slot the raw way */
    zpipc_slot *ctl = NULL;
    uint32_t me = (uint32_t)getpid();
    for (int tries = 0; !ctl && tries < 10000; tries++) { /* slots of earlier rounds free up */
        for (uint32_t i = 0; i < lay->max_clients && !ctl; i++) {
            zpipc_slot *s = (zpipc_slot *)(map + ZPIPC_SLOTS_OFF + (size_t)i * lay->slot_bytes);
            if (ring_load_acquire32(&s->slot_state) == ZPIPC_SLOT_FREE &&
                ring_cas32(&s->claim_pid, 0, me))
                ctl = s;
        }
        if (!ctl) usleep(200);
    }
    if (!ctl) return 30;
    ring_fetch_add32(&h->attach_seq, 1);
    ring_futex_wake(&h->engine_futex);
    for (int i = 0; i < 2000 && ring_load_acquire32(&ctl->slot_state) != ZPIPC_SLOT_ATTACHED; i++)
        usleep(100);
    uint8_t *base = (uint8_t *)ctl;
    uint8_t *sub = base + zpipc_sub_off(),
            *pay = base + zpipc_payload_off(lay->sub_entries, lay->cq_entries);
    uint32_t gen = ring_load_acquire32(&ctl->generation);
    uint64_t tail = 0;
    for (int it = 0; it < iters; it++) {
        if (ring_load_acquire32(&ctl->slot_state) != ZPIPC_SLOT_ATTACHED ||
            ring_load_acquire32(&ctl->generation) != gen)
            break; /* detached: nothing more to reach */
        (*done)++;
        uint32_t what = rnd32(&seed) % 200;
        if (what < 140) { /* a plausible but random submission record */
            zpipc_sub q;
            memset(&q, 0, sizeof q);
            q.type = rnd32(&seed) % 8 ? 1 + rnd32(&seed) % 3 : rnd32(&seed);
            q.kind = rnd32(&seed) % 8 ? rnd32(&seed) % 3 : rnd32(&seed);
            q.req_id = test_rand_u64(&seed) % 64;
            q.payload_off =
                rnd32(&seed) % 4 ? rnd32(&seed) % lay->payload_bytes : test_rand_u64(&seed);
            q.payload_len = rnd32(&seed) % 4 ? rnd32(&seed) % 600 : rnd32(&seed);
            q.flags = rnd32(&seed);
            q.temperature = rnd_float(&seed);
            q.top_k = (int32_t)rnd32(&seed);
            q.top_p = rnd_float(&seed);
            q.min_p = rnd_float(&seed);
            q.repetition_penalty = rnd_float(&seed);
            q.presence_penalty = rnd_float(&seed);
            q.frequency_penalty = rnd_float(&seed);
            q.max_tokens = rnd32(&seed) % 4 ? (int32_t)(rnd32(&seed) % 64) : (int32_t)rnd32(&seed);
            q.seed = test_rand_u64(&seed);
            q.n_stop = rnd32(&seed) % 4 ? (int32_t)(rnd32(&seed) % 17) : (int32_t)rnd32(&seed);
            q.kv_budget_blocks = (int32_t)rnd32(&seed) % 100;
            q.compress = (int32_t)(rnd32(&seed) % 5) - 2;
            q.target_slot = rnd32(&seed) % 4 ? rnd32(&seed) % (lay->max_clients + 2) : rnd32(&seed);
            for (int k = 0; k < ZIPAGE_MAX_STOP; k++)
                q.stop_ids[k] = (int32_t)rnd32(&seed);
            if (q.payload_off < lay->payload_bytes) { /* fill what it names with bytes < 256 ids */
                uint64_t n = lay->payload_bytes - q.payload_off;
                if (n > 600) n = 600;
                for (uint64_t k = 0; k < n; k++)
                    pay[q.payload_off + k] = rnd32(&seed) % 3 ? (uint8_t)rnd32(&seed) : 0;
            }
            memcpy(sub + (tail & (lay->sub_entries - 1)) * ZPIPC_SUB_BYTES, &q, sizeof q);
            tail++;
            ring_store_release64(&ctl->sub_tail, tail);
        } else if (what < 165) { /* garbage anywhere in the slot (control block, rings, payload) */
            uint64_t off = test_rand_u64(&seed) % lay->slot_bytes;
            uint32_t n = 1 + rnd32(&seed) % 64;
            if (off < 8) continue; /* claim_pid / detach: below, with values that cannot be pids */
            for (uint32_t k = 0; k < n && off + k < lay->slot_bytes; k++)
                base[off + k] = (uint8_t)rnd32(&seed);
        } else if (what < 168) { /* the indices */
            switch (rnd32(&seed) % 4) {
            case 0:
                tail = test_rand_u64(&seed) % 4 ? tail + rnd32(&seed) % 40 : test_rand_u64(&seed);
                ring_store_release64(&ctl->sub_tail, tail);
                break;
            case 1:
                ring_store_release64(&ctl->cq_head,
                                     test_rand_u64(&seed) % 4
                                         ? ring_load_acquire64(&ctl->cq_tail) - rnd32(&seed) % 8
                                         : test_rand_u64(&seed));
                break;
            case 2:
                ring_store_release32(&ctl->client_sleeping, rnd32(&seed));
                break;
            default:
                ring_store_release64(&ctl->cq_head, ring_load_acquire64(&ctl->cq_tail));
                break;
            }
        } else if (what < 169) { /* ownership words */
            if (rnd32(&seed) % 2)
                ring_store_release32(&ctl->claim_pid, rnd_pid(&seed));
            else
                ring_store_release32(&ctl->detach, rnd32(&seed) % 4 == 0);
        } else { /* the header, all of it */
            uint32_t off = rnd32(&seed) % ZPIPC_HEADER_BYTES;
            uint32_t n = 1 + rnd32(&seed) % 16;
            for (uint32_t k = 0; k < n && off + k < ZPIPC_HEADER_BYTES; k++)
                map[off + k] = (uint8_t)rnd32(&seed);
        }
        ring_fetch_add32(&h->engine_futex, 1);
        ring_futex_wake(&h->engine_futex);
        if (it % 64 == 0) usleep(100); /* let the engine look at the mess */
    }
    return 0;
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "fuzz");
    const char *sets[] = {"max_clients=6", "max_inflight_per_client=8",
                          "payload_bytes_per_client=8192", NULL};
    pid_t eng = ipct_engine(name, sets, 0);
    volatile int *stop_flag = ipct_shared_flags();
    pid_t good[GOOD];
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    for (int i = 0; i < GOOD; i++) { /* connected before the header gets trashed */
        good[i] = ipct_good_client(name, i, stop_flag, pfd[1], 0);
        char ch;
        REQUIRE(read(pfd[0], &ch, 1) == 1);
    }
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    REQUIRE(fd >= 0);
    zpipc_header lay;
    REQUIRE(read(fd, &lay, sizeof lay) == sizeof lay);
    uint8_t *map = mmap(NULL, lay.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(map != MAP_FAILED);
    close(fd);
    volatile int *done = stop_flag + 16;
    int rounds = 0;
    for (; *done < ITERS && rounds < MAX_ROUNDS; rounds++) {
        pid_t f = ipct_fork(SIGKILL);
        if (!f)
            _exit(fuzzer(map, &lay, 1234567ull * (unsigned long long)(rounds + 1), ITERS - *done,
                         done));
        int st;
        REQUIRE(waitpid(f, &st, 0) == f);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fuzzer round %d status %d", rounds, st);
        REQUIRE(kill(eng, 0) == 0);
    }
    CHECKF(*done >= ITERS, "only %d fuzz iterations", *done);
    memcpy(map, &lay, 128); /* restore the layout lines for the checks below */
    munmap(map, lay.total_bytes);
    *stop_flag = 1;
    for (int i = 0; i < GOOD; i++) {
        int st;
        REQUIRE(waitpid(good[i], &st, 0) == good[i]);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "good client %d status %d", i, st);
    }
    CHECK(ipct_wait_idle(c, 1, 3000) >= 0);
    zipage_stats s;
    CHECK(zipage_get_stats(c, &s) == 0);
    printf("%d fuzz iterations in %d rounds: %lld requests submitted, %lld refused, %lld protocol "
           "errors\n",
           *done, rounds, (long long)s.submitted, (long long)s.rejected,
           (long long)s.protocol_errors);
    CHECK(s.rejected > 0 && s.protocol_errors > 0);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
    return test_done("ipc_fuzz");
}
