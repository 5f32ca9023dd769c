/* Claims race with reclaims: for ~6 s a victim client attaches, starts a long stream, gets its
 * claim word zeroed by a hostile process of the same uid (this test) and is SIGKILLed, while
 * three honest clients keep connecting, running one verified request and disconnecting, on
 * an engine with one slot more than they need. A client that claimed the zeroed slot of the
 * dying victim would be served as the victim and lose its request when the engine reclaims
 * the victim; every honest request must get its right final record, and every victim episode
 * must end with the victim's slot free again. */
#include "tests/test_ipc_util.h"

#include "ipc/proto.h"
#include "ipc/ring.h"

#include <fcntl.h>
#include <sys/stat.h>

#define HONEST  3
#define SECONDS 6.0

/* Connects, retrying while every slot is taken (not an error here: the victims come and go). */
static zipage_client *connect_retry(const char *name, int *bad) {
    for (int tries = 0; tries < 20000; tries++) {
        zipage_client *c = NULL;
        int rc = zipage_connect(&c, name, NULL);
        if (!rc) return c;
        if (rc != ZIPAGE_E_FULL) {
            fprintf(stderr, "connect: %s: %s\n", zipage_strerror(rc), zipage_last_error());
            (*bad)++;
            return NULL;
        }
        usleep(200);
    }
    (*bad)++;
    return NULL;
}

static pid_t honest(const char *name, int who, volatile int *stop) {
    pid_t pid = ipct_fork(SIGKILL);
    if (pid) return pid;
    unsigned long long seed = 77 + (unsigned long long)who;
    int bad = 0, done = 0;
    while (!*stop && bad < 5) {
        zipage_client *c = connect_retry(name, &bad);
        if (!c) continue;
        bad += ipct_echo_once(c, &seed, 5000, "honest", who);
        done++;
        zipage_disconnect(c);
    }
    fprintf(stderr, "honest %d: %d requests, %d lost\n", who, done, bad);
    _exit(bad || !done ? 11 : 0);
}

int main(void) {
    char name[64], path[96];
    ipct_name(name, sizeof name, "claim");
    snprintf(path, sizeof path, "/%s", name);
    const char *sets[] = {"max_clients=4", NULL};
    pid_t eng = ipct_engine(name, sets, 200);
    int fd = shm_open(path, O_RDWR, 0);
    REQUIRE(fd >= 0);
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0);
    uint8_t *map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(map != MAP_FAILED);
    close(fd);
    const zpipc_header *h = (const zpipc_header *)map;

    volatile int *stop = ipct_shared_flags();
    pid_t kids[HONEST];
    for (int i = 0; i < HONEST; i++)
        kids[i] = honest(name, i, stop);

    unsigned long long seed = 5;
    int episodes = 0, victim_fail = 0;
    double t0 = ipct_ms();
    while (ipct_ms() - t0 < SECONDS * 1000) {
        int pfd[2];
        REQUIRE(pipe(pfd) == 0);
        pid_t v = ipct_fork(SIGKILL);
        if (!v) {
            close(pfd[0]);
            int bad = 0;
            zipage_client *c = connect_retry(name, &bad);
            if (!c) _exit(12);
            static char prompt[600];
            memset(prompt, 'v', sizeof prompt);
            zipage_request r;
            zipage_request_default(&r);
            r.text = prompt;
            r.text_len = sizeof prompt;
            uint64_t id;
            if (zipage_submit(c, &r, &id)) _exit(13);
            int slot = zipage_slot(c);
            (void)!write(pfd[1], &slot, sizeof slot);
            zipage_event ev[16];
            while (zipage_wait(c, ev, 16, 5000) >= 0)
                continue;
            _exit(0);
        }
        close(pfd[1]);
        int slot = -1;
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, 10000) == 1 && read(pfd[0], &slot, sizeof slot) == sizeof slot &&
            slot >= 0 && (uint32_t)slot < h->max_clients) {
            zpipc_slot *s = (zpipc_slot *)(map + ZPIPC_SLOTS_OFF + (size_t)slot * h->slot_bytes);
            usleep((useconds_t)(test_rand_u64(&seed) % 3000));
            ring_store_release32(&s->claim_pid, 0); /* the hostile part: the slot looks free */
            usleep((useconds_t)(test_rand_u64(&seed) % 2000));
            episodes++;
        } else {
            victim_fail++;
        }
        close(pfd[0]);
        kill(v, SIGKILL);
        waitpid(v, NULL, 0);
    }
    *stop = 1;
    for (int i = 0; i < HONEST; i++) {
        int ks;
        REQUIRE(waitpid(kids[i], &ks, 0) == kids[i]);
        CHECKF(WIFEXITED(ks) && WEXITSTATUS(ks) == 0, "honest client %d: status %d", i, ks);
    }
    printf("%d victim episodes (%d victims could not start)\n", episodes, victim_fail);
    CHECK(episodes >= 50 && victim_fail == 0);
    /* the engine recovers every slot: only this test's own client remains */
    zipage_client *c = ipct_connect(name);
    CHECK(c && ipct_wait_idle(c, 1, 3000) >= 0);
    zipage_disconnect(c);
    munmap(map, (size_t)st.st_size);
    CHECK(ipct_stop(eng, name) == 0);
    return test_done("ipc_cli_claim");
}
