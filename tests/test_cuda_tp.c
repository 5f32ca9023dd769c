/* test_cuda_tp: tensor parallelism on GPUs (issue 16): tests/tp_script.h's multi-step script on a
 * random Qwen3-shaped model (as test_tp_cpu's: hidden 256, 8 query heads of 32, 4 kv heads,
 * intermediate 512, vocabulary 1001, 3 layers, f32 checkpoint uploaded as bf16), one CUDA
 * backend per GPU and one thread per rank, joined by drv/comm_nccl: at TP 2 and TP 4 (as many as
 * the machine's GPUs allow) against TP 1 on GPU 0, without and with the compression of one
 * sequence. Checked: the logits of every logits step within bf16 tolerance of TP 1's
 * (|difference| <= 0.05 x the row's largest |logit| + 0.02: NCCL and the GEMMs add in their own
 * orders and the activations are bf16), and the greedy ids equal wherever TP 1's best logit
 * leads its runner-up by more than twice the largest difference seen (a near-tie may flip; the
 * ids are fed back, so a flip would change the rest of that sequence and is counted).
 * SKIP with fewer than 2 GPUs, without a driver or without NCCL; NCCL_NVLS_ENABLE=0 is set by
 * nccl_load. Threads: ranks run the script; only the main thread CHECKs.
 */
#include "arena/err.h"
#include "drv/backend.h"
#include "drv/comm_nccl.h"
#include "drv/cuda.h"
#include "engine/engine.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "engine/shard.h"
#include "tests/nccl_util.h"
#include "tests/testlib.h"
#include "tests/tp_script.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static nccl_lib nc;

typedef struct rank_arg {
    const model_config *c;
    const model_weights *w;
    backend *be;
    comm *cm;
    model_dims d;
    int rank;
    pthread_barrier_t *bar;
    result *out;
    int32_t *next;
} rank_arg;

static void *rank_main(void *p) {
    rank_arg *ra = p;
    arena a;
    REQUIRE(arena_init(&a, "tp rank", (size_t)64 << 20) == 0);
    REQUIRE(ra->be->bind_thread(ra->be) == 0);
    model m;
    if (model_init(&m, &a, ra->be, ra->c, ra->w, &ra->d)) {
        fprintf(stderr, "rank %d: model_init: %s\n", ra->rank, err_msg());
        exit(1);
    }
    tp_script_run(&m, ra->rank, ra->bar, ra->out, ra->next);
    arena_release(&a);
    return NULL;
}

/* The script at size GPUs (1: GPU 0 without a communicator) into *out. */
static void run_tp(const model_config *c, const model_weights *w, int size, bool compress,
                   result *out) {
    memset(out, 0, sizeof *out);
    backend *bes[ZP_TP_MAX];
    static comm_nccl ranks[ZP_TP_MAX];
    rank_arg args[ZP_TP_MAX];
    static int32_t next[SEQS];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)size);
    for (int r = 0; r < size; r++) {
        shard sh;
        REQUIRE(shard_plan(&sh, c, r, size) == 0);
        model_config local;
        shard_config(&sh, c, &local);
        be_shape s;
        engine_be_shape(&local, BS, 64, SEQS, MAXB * BS, &s);
        be_config bc = {.kind = BE_CUDA,
                        .cuda_device = r,
                        .attention_chunk = 512,
                        .attention_prefill_chunk = 512,
                        .gemm_workspace_mb = 4};
        char why[256];
        if (backend_create(&bes[r], &bc, &s, why, sizeof why)) {
            fprintf(stderr, "rank %d: backend: %s\n", r, err_msg());
            exit(1);
        }
        args[r] = (rank_arg){c, w, bes[r], NULL, {0}, r, size > 1 ? &bar : NULL, out, next};
        args[r].d = tp_script_dims(c, &sh, NULL, compress, ZP_BF16);
        if (compress) REQUIRE(bes[r]->check(bes[r], &args[r].d.cp) == 0);
        size_t extra = size > 1 ? comm_nccl_bytes(size, SEQS, c->vocab) : 0;
        REQUIRE(bes[r]->reserve(bes[r], model_device_bytes(c, w, &args[r].d, bes[r]) + extra,
                                model_host_bytes(c, &args[r].d, bes[r])) == 0);
    }
    if (size > 1) {
        if (comm_nccl_open(ranks, &nc, bes, size, SEQS, c->vocab)) {
            fprintf(stderr, "comm_nccl_open: %s\n", err_msg());
            exit(1);
        }
        for (int r = 0; r < size; r++)
            args[r].cm = args[r].d.comm = &ranks[r].c;
    }
    pthread_t tid[ZP_TP_MAX];
    for (int r = 0; r < size; r++)
        REQUIRE(pthread_create(&tid[r], NULL, rank_main, &args[r]) == 0);
    for (int r = 0; r < size; r++)
        pthread_join(tid[r], NULL);
    if (size > 1) comm_nccl_close(ranks, size);
    for (int r = 0; r < size; r++)
        bes[r]->destroy(bes[r]);
    pthread_barrier_destroy(&bar);
}

/* Compares b with the reference a; prints one line. */
static void compare(const result *a, const result *b, const char *what) {
    CHECKF(a->steps == b->steps && a->compressed == b->compressed, "%s: %d steps vs %d", what,
           b->steps, a->steps);
    double worst = 0; /* the largest |difference| over the row's tolerance */
    double maxd = 0;
    for (int s = 0; s < a->steps; s++) {
        if (a->ids_step[s]) continue;
        for (int i = 0; i < a->n_logits[s]; i++) {
            double big = 0, d = 0;
            for (int v = 0; v < MAXV; v++) {
                big = fmax(big, fabs(a->logits[s][i][v]));
                d = fmax(d, fabs((double)a->logits[s][i][v] - b->logits[s][i][v]));
            }
            maxd = fmax(maxd, d);
            worst = fmax(worst, d / (0.05 * big + 0.02));
        }
    }
    CHECKF(worst <= 1.0, "%s: logits off by %.3g of the tolerance", what, worst);
    int agree = 0, total = 0, flips = 0;
    for (int s = 0; s < a->steps; s++)
        for (int i = 0; i < a->n_logits[s]; i++) {
            total++;
            if (a->ids[s][i] == b->ids[s][i]) {
                agree++;
                continue;
            }
            double lead = INFINITY; /* TP 1's margin, on logits steps */
            if (!a->ids_step[s]) {
                const float *lg = a->logits[s][i];
                float best = lg[a->ids[s][i]], second = -INFINITY;
                for (int v = 0; v < MAXV; v++)
                    if (v != a->ids[s][i] && lg[v] > second) second = lg[v];
                lead = best - second;
            }
            if (lead > 2 * maxd) flips++;
        }
    CHECKF(flips == 0, "%s: %d greedy ids differ where TP 1 led clearly", what, flips);
    printf("  %-44s logits within %.2f of the tolerance (max |diff| %.3g), ids %d/%d equal\n", what,
           worst, maxd, agree, total);
}

int main(void) {
    int n = 0, rc = nccl_test_start(&nc, 2, "tensor parallelism needs 2 or more GPUs", &n);
    if (rc) return rc;

    char dir[256], cmd[300];
    snprintf(dir, sizeof dir, "/tmp/zp_test_cuda_tp_%d", (int)getpid());
    REQUIRE(tp_make_model(dir, "qwen3", 4, false, "f32") == 0);
    arena a;
    REQUIRE(arena_init(&a, "model", (size_t)256 << 20) == 0);
    model_config c;
    model_weights w;
    if (loader_config(&c, &a, dir) || loader_weights(&w, &c, &a, dir)) {
        fprintf(stderr, "load: %s\n", err_msg());
        return 1;
    }
    static result ref, got;
    for (int compress = 0; compress <= 1; compress++) {
        run_tp(&c, &w, 1, compress, &ref);
        printf("TP 1 on GPU 0%s: %d steps\n", compress ? ", one sequence compressed" : "",
               ref.steps);
        for (int tp = 2; tp <= 4 && tp <= n; tp *= 2) {
            run_tp(&c, &w, tp, compress, &got);
            char what[80];
            snprintf(what, sizeof what, "TP %d%s", tp, compress ? " with compression" : "");
            compare(&ref, &got, what);
        }
    }
    loader_close(&w);
    arena_release(&a);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    REQUIRE(system(cmd) == 0);
    return test_done("test_cuda_tp");
}
