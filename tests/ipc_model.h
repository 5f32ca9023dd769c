/* ipc_model: helpers for the IPC tests that run a real model (header-only): the requests'
 * expected outputs computed in-process by the engine (tests/harness.h), and `zipage serve`
 * started as a separate process on the same model and configuration. */
#ifndef ZP_TEST_IPC_MODEL_H
#define ZP_TEST_IPC_MODEL_H

#include "engine/tokenizer.h"
#include "tests/harness.h"
#include "tests/test_ipc_util.h"

/* Engine settings shared by the in-process reference and the served engine: small blocks and
 * budget so requests compress, and enough seats for every client. */
#define IPCM_SETS "block_size=16", "compress=true", "max_cache_blocks_per_seq=2", \
                  "query_cache_len=4", "max_num_seqs=32", "max_model_len=256"

/* The served engine masks ids its tokenizer never produces: the in-process reference must
 * sample from the same ids. */
static inline void ipcm_match_tokenizer(void) {
    arena a;
    REQUIRE(arena_init(&a, "tok", 64u << 20) == 0);
    tokenizer *tk;
    REQUIRE(tok_load(&tk, &a, th_dir) == 0);
    th_n_valid = tok_vocab_size(tk);
    arena_release(&a);
}

/* Starts `zipage serve` (the ASan build) on th_dir as ipc NAME; returns its pid once the
 * ready line is out. */
static inline pid_t ipcm_serve(const char *name, const char *extra) {
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t pid = ipct_fork(SIGTERM);
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        char bin[300], nm[300];
        snprintf(bin, sizeof bin, "%s/asan/zipage", getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build");
        snprintf(nm, sizeof nm, "ipc_name=%s", name);
        const char *sets[] = {IPCM_SETS};
        char *argv[40];
        int k = 0;
        argv[k++] = bin, argv[k++] = "serve", argv[k++] = "--model", argv[k++] = th_dir;
        argv[k++] = "--set", argv[k++] = nm;
        argv[k++] = "--set", argv[k++] = "max_clients=24";
        argv[k++] = "--set", argv[k++] = "threads=1";
        for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) argv[k++] = "--set", argv[k++] = (char *)sets[i];
        if (extra) argv[k++] = "--set", argv[k++] = (char *)extra;
        argv[k] = NULL;
        execv(bin, argv);
        _exit(127);
    }
    close(pfd[1]);
    char line[512];
    FILE *f = fdopen(pfd[0], "r");
    REQUIRE(f && fgets(line, sizeof line, f) && strstr(line, "ready"));
    fclose(f);
    return pid;
}

/* Submits ids with the request's sampling settings, collecting ids (not streamed). */
static inline int ipcm_submit(zipage_client *c, const th_req *q, int32_t *out, size_t cap,
                              uint64_t tag, bool stream, uint64_t *id) {
    zipage_request r;
    zipage_request_default(&r);
    r.kind = ZIPAGE_PROMPT_IDS;
    r.ids = q->rq.prompt_ids;
    r.n_ids = (size_t)q->rq.n_prompt;
    r.params.max_tokens = q->rq.sp.max_tokens;
    r.params.temperature = q->rq.sp.temperature;
    r.params.top_p = q->rq.sp.top_p;
    r.params.top_k = q->rq.sp.top_k;
    r.params.seed = q->rq.sp.seed;
    r.params.ignore_eos = q->rq.sp.ignore_eos;
    r.stream = stream;
    r.out_ids = out;
    r.out_ids_cap = cap;
    r.user_tag = tag;
    return zipage_submit(c, &r, id);
}

#endif
