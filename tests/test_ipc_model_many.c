/* test_ipc_model_many: 16 client processes x 200 requests each through shared memory
 * against `zipage serve` running a tiny model on the CPU backend (compression on): every
 * request's completion equals the engine's own output for the same request (computed here
 * in-process, as `zipage generate` does), and each request gets exactly one FINAL. */
#include "tests/ipc_model.h"

#define NPROC 16
#define NREQ 200
#define WINDOW 6
#define N (NPROC * NREQ)

static th_req reqs[N];

static int client(const char *name, int who, const th *ref) {
    zipage_client *c = ipct_connect(name);
    if (!c) return 10;
    static int32_t out[WINDOW][TH_MAX_OUT];
    int slot_req[WINDOW];
    uint64_t slot_id[WINDOW];
    for (int w = 0; w < WINDOW; w++) slot_req[w] = -1;
    int next = who * NREQ, end = next + NREQ, done = 0, bad = 0;
    while (done < NREQ) {
        for (int w = 0; w < WINDOW && next < end; w++) {
            if (slot_req[w] >= 0) continue;
            int rc = ipcm_submit(c, &reqs[next], out[w], TH_MAX_OUT, (uint64_t)w, false, &slot_id[w]);
            if (rc == ZIPAGE_E_BUSY) break;
            if (rc) {
                fprintf(stderr, "client %d: submit: %s\n", who, zipage_last_error());
                return 11;
            }
            slot_req[w] = next++;
        }
        zipage_event ev[16];
        int n = zipage_wait(c, ev, 16, 20000);
        if (n < 0) {
            fprintf(stderr, "client %d: wait: %s\n", who, zipage_last_error());
            return 12;
        }
        for (int i = 0; i < n; i++) {
            uint64_t w = ev[i].user_tag;
            if (w >= WINDOW || slot_req[w] < 0 || slot_id[w] != ev[i].req_id || ev[i].type != ZIPAGE_EV_FINAL) {
                bad++;
                continue;
            }
            const th_out *want = &ref->out[slot_req[w]];
            if (ev[i].finish != ZIPAGE_FINISH_LENGTH || (int)ev[i].n_ids != want->n ||
                memcmp(out[w], want->tok, sizeof(int32_t) * (size_t)want->n) ||
                ev[i].compressions != want->usage.compressions) {
                int d = 0;
                while (d < want->n && out[w][d] == want->tok[d]) d++;
                fprintf(stderr, "client %d: request %d (prompt %d, %s) differs at token %d of %d "
                        "(%zu ids, finish %d, compressions %d vs %d) %s\n", who, slot_req[w],
                        reqs[slot_req[w]].rq.n_prompt, slot_req[w] % 2 ? "sampled" : "greedy", d,
                        want->n, ev[i].n_ids, ev[i].finish, ev[i].compressions,
                        want->usage.compressions, ev[i].error ? ev[i].text : "");
                bad++;
            }
            slot_req[w] = -1;
            done++;
        }
    }
    zipage_event ev[4];
    if (zipage_wait(c, ev, 4, 50) != ZIPAGE_E_TIMEOUT) bad++; /* exactly one FINAL each */
    zipage_disconnect(c);
    return bad ? 13 : 0;
}

int main(void) {
    th_model(NULL);
    ipcm_match_tokenizer();
    unsigned long long rng = 77;
    for (int i = 0; i < N; i++)
        th_random_req(&reqs[i], &rng, 1 + (int)(test_rand_u64(&rng) % 60),
                      1 + (int)(test_rand_u64(&rng) % 60), i % 2);
    th ref;
    th_open(&ref, N, IPCM_SETS, NULL);
    th_run_all(&ref, reqs, N, 0);
    int compressed = 0;
    for (int i = 0; i < N; i++) compressed += ref.out[i].usage.compressions > 0;
    char name[64];
    ipct_name(name, sizeof name, "mmany");
    pid_t eng = ipcm_serve(name, NULL);
    double t0 = ipct_ms();
    pid_t kids[NPROC];
    for (int i = 0; i < NPROC; i++) {
        kids[i] = ipct_fork(SIGKILL);
        if (kids[i] == 0) _exit(client(name, i, &ref));
    }
    for (int i = 0; i < NPROC; i++) {
        int st;
        REQUIRE(waitpid(kids[i], &st, 0) == kids[i]);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d status %d", i, st);
    }
    printf("%d clients x %d requests (%d compressed) in %.0f ms\n", NPROC, NREQ, compressed,
           ipct_ms() - t0);
    CHECK(compressed > N / 10);
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);
    CHECK(ipct_wait_idle(c, 1, 5000) >= 0);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
    th_close(&ref);
    th_model_remove();
    return test_done("ipc_model_many");
}
