/* test_tp_cpu: tensor parallelism's sharding arithmetic (engine/shard.h, engine/model.c) on the
 * CPU backend, ranks as threads of this process, each with its own 1-thread CPU backend, model
 * shard and arena, joined by the in-process communicator of tests/tp_comm.h.
 *
 * Random Qwen3-shaped models in f32 weights (hidden 256, 8 query heads of 32, intermediate 512,
 * a vocabulary of 1001 that no rank count divides, 3 layers, q/k norm): 4 kv heads, untied;
 * Qwen2-style (q/k/v biases, tied embeddings); 2 kv heads, replicated at TP 4 and 8; and 4 kv
 * heads in bf16 weights with cpu_matmul_precision = bf16 (activations rounded per K segment). Each
 * runs one script of multi-sequence steps (prefill chunks of uneven sizes beside decodes, steps
 * alternating gathered logits and greedy ids, the chosen ids fed back) and, with 4 kv heads, a
 * compression of one sequence to 2 blocks through model_compress (each rank scores and compacts
 * its own kv heads) followed by more decodes. Checked: the logits and ids of every step at TP 2,
 * 4 (and 8 where the heads allow) equal TP 1's bit for bit (memcmp). That the check can fail:
 * TP 1 with one K segment in o_proj and down_proj (the order of the sum before the fixed
 * segments) must not give the same bits. The errors: rank counts the heads or the segments do
 * not divide (ZP_EINVAL naming tensor_parallel_size), and compression with replicated kv heads
 * (ZP_EUNSUP).
 */
#include "arena/err.h"
#include "drv/backend.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "engine/shard.h"
#include "tests/testlib.h"
#include "tests/tp_comm.h"
#include "tests/tp_script.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct rank_arg {
    const model_config *c;
    const model_weights *w;
    tp_group *g; /* NULL: TP 1 without a communicator */
    int rank;
    bool compress;
    int prec;   /* CPU_PREC_* of every rank's backend */
    int k_segs; /* > 0: o_proj's and down_proj's k_segs forced (the sensitivity check) */
    result *out;
    int32_t *next; /* [SEQS] the ids rank 0 chose, shared */
} rank_arg;

static void *rank_main(void *p) {
    rank_arg *ra = p;
    const model_config *c = ra->c;
    comm *cm = ra->g ? &ra->g->comms[ra->rank] : NULL;
    shard sh;
    REQUIRE(shard_plan(&sh, c, ra->rank, ra->g ? ra->g->size : 1) == 0);
    arena a;
    REQUIRE(arena_init(&a, "tp rank", (size_t)16 << 20) == 0);
    backend *be;
    REQUIRE(cpu_backend_create(&be, 1, c->intermediate, CPU_ISA_AUTO, ra->prec) == 0);
    model_dims d = tp_script_dims(c, &sh, cm, ra->compress, ZP_F32);
    if (ra->compress) REQUIRE(be->check(be, &d.cp) == 0);
    REQUIRE(be->reserve(be, model_device_bytes(c, ra->w, &d, be), model_host_bytes(c, &d, be)) ==
            0);
    model m;
    if (model_init(&m, &a, be, c, ra->w, &d)) {
        fprintf(stderr, "rank %d: model_init: %s\n", ra->rank, err_msg());
        exit(1);
    }
    if (ra->k_segs)
        for (int l = 0; l < c->layers; l++)
            m.layers[l].o.k_segs = m.layers[l].down.k_segs = ra->k_segs;
    tp_script_run(&m, ra->rank, ra->g ? &ra->g->bar : NULL, ra->out, ra->next);
    be->destroy(be);
    arena_release(&a);
    return NULL;
}

/* The script at size ranks (0: TP 1 without a communicator) into *out. */
static void run_tp(const model_config *c, const model_weights *w, int size, bool compress, int prec,
                   int k_segs, result *out) {
    memset(out, 0, sizeof *out);
    tp_group g;
    int n = size ? size : 1;
    if (size) tp_group_init(&g, size);
    pthread_t tid[ZP_TP_MAX];
    rank_arg args[ZP_TP_MAX];
    static int32_t next[SEQS];
    for (int r = 0; r < n; r++) {
        args[r] = (rank_arg){c, w, size ? &g : NULL, r, compress, prec, k_segs, out, next};
        REQUIRE(pthread_create(&tid[r], NULL, rank_main, &args[r]) == 0);
    }
    for (int r = 0; r < n; r++)
        pthread_join(tid[r], NULL);
    if (size) tp_group_destroy(&g);
}

/* Every step's logits and ids of a against b, bit for bit. */
static bool same_bits(const result *a, const result *b) {
    return a->steps == b->steps && a->compressed == b->compressed &&
           !memcmp(a->n_logits, b->n_logits, sizeof a->n_logits) &&
           !memcmp(a->logits, b->logits, sizeof a->logits) &&
           !memcmp(a->ids, b->ids, sizeof a->ids);
}

/* The largest |logit difference| of a and b over every step. */
static double max_diff(const result *a, const result *b) {
    double m = 0;
    for (int s = 0; s < STEPS; s++)
        for (int i = 0; i < SEQS; i++)
            for (int v = 0; v < MAXV; v++) {
                double d = fabs((double)a->logits[s][i][v] - b->logits[s][i][v]);
                m = d > m ? d : m;
            }
    return m;
}

static void errors(const model_config *c, const model_weights *w) {
    shard sh;
    model_config bad = *c;
    CHECK(shard_plan(&sh, c, 0, 3) == ZP_EINVAL && strstr(err_msg(), "tensor_parallel_size 3"));
    CHECK(shard_plan(&sh, c, 0, 16) == ZP_EINVAL && strstr(err_msg(), "tensor_parallel_size"));
    CHECK(shard_plan(&sh, c, 0, 0) == ZP_EINVAL);
    bad.kv_heads = 4, bad.heads = 12;
    CHECKF(shard_plan(&sh, &bad, 0, 8) == ZP_EINVAL && strstr(err_msg(), "12 attention heads"),
           "12 heads at TP 8: %s", err_msg());
    bad = *c, bad.heads = 24, bad.kv_heads = 3;
    CHECKF(shard_plan(&sh, &bad, 0, 8) == ZP_EINVAL && strstr(err_msg(), "3 kv heads"),
           "3 kv heads at TP 8: %s", err_msg());
    bad = *c, bad.intermediate = 500;
    CHECKF(shard_plan(&sh, &bad, 1, 2) == ZP_EINVAL && strstr(err_msg(), "multiples of 8"),
           "intermediate 500 at TP 2: %s", err_msg());
    CHECK(shard_plan(&sh, &bad, 0, 1) == 0 && sh.down_segs == 1 && sh.o_segs == 8);
    /* compression with 2 kv heads replicated over 4 ranks */
    tp_group g;
    tp_group_init(&g, 4);
    arena a;
    REQUIRE(arena_init(&a, "errors", (size_t)16 << 20) == 0);
    backend *be;
    REQUIRE(cpu_backend_create(&be, 1, c->intermediate, CPU_ISA_AUTO, CPU_PREC_F32) == 0);
    model_dims d = {.max_tokens = 8,
                    .max_logits = 1,
                    .max_seqs = 1,
                    .max_blocks = 4,
                    .block_size = BS,
                    .num_blocks = 4,
                    .kv_dtype = ZP_F32,
                    .comm = &g.comms[0],
                    .qcache_slots = 1,
                    .qcl = QCL,
                    .cmp_jobs = 1,
                    .cmp_max_pos = 32,
                    .cmp_max_keep = 16};
    REQUIRE(be->reserve(be, (size_t)64 << 20, (size_t)1 << 20) == 0);
    model m;
    CHECKF(model_init(&m, &a, be, c, w, &d) == ZP_EUNSUP && strstr(err_msg(), "replicated"),
           "compression with replicated kv heads: %s", err_msg());
    be->destroy(be);
    arena_release(&a);
    tp_group_destroy(&g);
}

int main(void) {
    static const struct {
        const char *name, *arch, *dtype;
        int kv_heads;
        bool tie, compress;
        int prec;
        int tps[3];
    } variants[] = {
        {"qwen3, 4 kv heads, compression", "qwen3", "f32", 4, false, true, CPU_PREC_F32, {2, 4, 0}},
        {"qwen2 (qkv bias, tied), compression",
         "qwen2",
         "f32",
         4,
         true,
         true,
         CPU_PREC_F32,
         {2, 4, 0}},
        {"qwen3, 2 kv heads (replicated at 4, 8)",
         "qwen3",
         "f32",
         2,
         false,
         false,
         CPU_PREC_F32,
         {2, 4, 8}},
        {"qwen3, bf16 weights, bf16 matmul precision",
         "qwen3",
         "bf16",
         4,
         false,
         true,
         CPU_PREC_BF16,
         {2, 4, 0}},
    };
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/zp_test_tp_%d", (int)getpid());
    static result ref, got;
    for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
        REQUIRE(tp_make_model(dir, variants[vi].arch, variants[vi].kv_heads, variants[vi].tie,
                           variants[vi].dtype) == 0);
        arena a;
        REQUIRE(arena_init(&a, "model", (size_t)256 << 20) == 0);
        model_config c;
        model_weights w;
        if (loader_config(&c, &a, dir) || loader_weights(&w, &c, &a, dir)) {
            fprintf(stderr, "load: %s\n", err_msg());
            return 1;
        }
        REQUIRE(c.vocab == MAXV);
        bool cmp = variants[vi].compress;
        int prec = variants[vi].prec;
        run_tp(&c, &w, 0, cmp, prec, 0, &ref);
        CHECKF(ref.compressed == cmp, "%s: the script compressed %d", variants[vi].name,
               ref.compressed);
        printf("%s: TP 1: %d steps%s\n", variants[vi].name, ref.steps,
               ref.compressed ? ", one sequence compressed" : "");
        for (int t = 0; t < 3 && variants[vi].tps[t]; t++) {
            int tp = variants[vi].tps[t];
            run_tp(&c, &w, tp, cmp, prec, 0, &got);
            bool same = same_bits(&ref, &got);
            CHECKF(same, "%s: TP %d differs from TP 1 (max |logit difference| %.3g)",
                   variants[vi].name, tp, max_diff(&ref, &got));
            printf("%s: TP %d: %s\n", variants[vi].name, tp,
                   same ? "logits and ids equal to TP 1 bit for bit" : "DIFFERS");
        }
        if (vi == 0) {
            run_tp(&c, &w, 0, cmp, prec, 1, &got);
            double md = max_diff(&ref, &got);
            CHECKF(!same_bits(&ref, &got) && md > 0,
                   "TP 1 with one K segment gave the segmented bits: the check cannot fail");
            printf("%s: TP 1 with one K segment: differs by up to %.3g (the check is sensitive)\n",
                   variants[vi].name, md);
        }
        if (vi == 2) {
            errors(&c, &w);
            shard sh; /* the 2-kv-head model's rank 3 of 4: kv head 1, replicated */
            REQUIRE(shard_plan(&sh, &c, 3, 4) == 0);
            CHECK(sh.kv_heads == 1 && sh.kv0 == 1 && sh.q0 == 6 && sh.heads == 2);
            CHECK(sh.v0 == 750 && sh.vocab == 251); /* 3 * 1001 / 4 .. 1001 */
        }
        loader_close(&w);
        arena_release(&a);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    REQUIRE(system(cmd) == 0);
    return test_done("tp_cpu");
}
