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

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEQS  3
#define BS    8
#define MAXB  8 /* blocks per sequence */
#define STEPS 24
#define GEN   10 /* tokens generated per sequence */
#define KEEP  2  /* blocks a compressed sequence keeps */
#define MAXV  1001
#define QCL   4

static const int prompt_len[SEQS] = {29, 11, 21};

/* What rank 0 saw: per step, the logits of its logit rows or the ids chosen. */
typedef struct result {
    int steps, n_logits[STEPS], ids_step[STEPS], compressed;
    float logits[STEPS][SEQS][MAXV];
    int32_t ids[STEPS][SEQS];
} result;

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

static void sync_ranks(tp_group *g) {
    if (g) tp_group_sync(g);
}

/* The sequence's token at position p: its prompt, then what was chosen. */
static int32_t token_at(const int32_t *prompt, const int32_t *gen, int s, int p) {
    return p < prompt_len[s] ? prompt[s * 64 + p] : gen[s * GEN + p - prompt_len[s]];
}

static void compress_seq0(model *m, const int32_t *table, int kv_len) {
    model_cjobs *j = &m->cjobs;
    j->n_jobs = 1;
    j->n_blocks[0] = (kv_len + BS - 1) / BS;
    j->kv_len[0] = kv_len;
    j->n_keep[0] = KEEP * BS;
    j->qslot[0] = 0;
    j->flags[0] = BE_CJ_POOL;
    j->protect[0] = 0;
    j->seed[0] = 1;
    memcpy(j->src, table, sizeof(int32_t) * MAXB);
    memcpy(j->dst, table, sizeof(int32_t) * MAXB); /* in place: the first KEEP blocks */
    REQUIRE(model_compress(m) == 0);
}

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
    model_dims d = {.max_tokens = 64,
                    .max_logits = SEQS,
                    .max_seqs = SEQS,
                    .max_blocks = MAXB,
                    .block_size = BS,
                    .num_blocks = SEQS * MAXB + 1,
                    .kv_dtype = ZP_F32,
                    .comm = cm};
    if (ra->compress) {
        d.qcache_slots = SEQS, d.qcl = QCL, d.cmp_jobs = 1;
        d.cmp_max_pos = MAXB * BS, d.cmp_max_keep = KEEP * BS;
        d.cp = (be_cparams){.layers = c->layers,
                            .hq = sh.heads,
                            .hkv = sh.kv_heads,
                            .dim = c->head_dim,
                            .bs = BS,
                            .qcl = QCL,
                            .scale = 1.0f / sqrtf((float)c->head_dim),
                            .max_norm = 1,
                            .pool = 3,
                            .redundancy = 0,
                            .lambda = 0.5f,
                            .temperature = 1.0f,
                            .threshold = 0.5f,
                            .sink_len = 2,
                            .policy = BE_EVICT_SCORE};
        REQUIRE(be->check(be, &d.cp) == 0);
    }
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
    /* the script: every rank computes it alike; only the chosen ids come from rank 0 */
    unsigned long long rng = 5;
    int32_t prompt[SEQS * 64], gen[SEQS * GEN] = {0}, table[SEQS][MAXB];
    for (int i = 0; i < SEQS * 64; i++)
        prompt[i] = (int32_t)(test_rand_u64(&rng) % (unsigned)c->vocab);
    for (int s = 0; s < SEQS; s++)
        for (int b = 0; b < MAXB; b++)
            table[s][b] = (b * SEQS + (SEQS - 1 - s) + 7 * b) % (SEQS * MAXB); /* scattered */
    int pos[SEQS] = {0}, kv[SEQS] = {0}, done[SEQS] = {0};
    bool compressed = false;
    result *out = ra->out;
    static const int chunks[] = {7, 3, 5, 9, 2};
    int step = 0;
    for (; step < STEPS; step++) {
        model_batch *b = &m.batch;
        int n = 0, ns = 0, nl = 0;
        for (int s = 0; s < SEQS; s++) {
            if (done[s] == GEN) continue;
            int take = pos[s] < prompt_len[s] ? chunks[(step + s) % 5] : 1;
            if (pos[s] < prompt_len[s] && take > prompt_len[s] - pos[s])
                take = prompt_len[s] - pos[s];
            memcpy(b->block_tables + (size_t)ns * MAXB, table[s], sizeof table[s]);
            for (int t = 0; t < take; t++, n++) {
                int p = pos[s] + t, ci = kv[s] + t;
                REQUIRE(ci < MAXB * BS);
                b->token_ids[n] = token_at(prompt, gen, s, p);
                b->positions[n] = p;
                b->tok_seq[n] = ns;
                b->tok_kv_idx[n] = ci;
                b->tok_qslot[n] = ra->compress ? s : -1;
                b->tok_prompt[n] = p < prompt_len[s];
                b->slots[n] = table[s][ci / BS] * BS + ci % BS;
            }
            pos[s] += take, kv[s] += take;
            if (pos[s] >= prompt_len[s]) b->logit_rows[nl++] = n - 1; /* its prompt is in */
            ns++;
        }
        if (!ns) break;
        b->n_tokens = n, b->n_seqs = ns, b->n_logits = nl;
        b->want_ids = step % 2;
        REQUIRE(model_forward(&m) == 0);
        if (!ra->rank) {
            out->n_logits[step] = nl, out->ids_step[step] = b->want_ids;
            for (int i = 0, s = 0; i < nl; s++) {
                if (done[s] == GEN || pos[s] < prompt_len[s]) continue;
                int32_t id;
                if (b->want_ids) {
                    id = m.host_ids[i];
                } else {
                    const float *lg = m.host_logits + (size_t)i * (size_t)c->vocab;
                    memcpy(out->logits[step][i], lg, sizeof(float) * (size_t)c->vocab);
                    id = 0;
                    for (int v = 1; v < c->vocab; v++)
                        if (lg[v] > lg[id]) id = v;
                }
                out->ids[step][i] = id;
                ra->next[s] = id;
                i++;
            }
        }
        sync_ranks(ra->g); /* rank 0's ids are in next */
        for (int s = 0; s < SEQS; s++)
            if (done[s] < GEN && pos[s] >= prompt_len[s]) gen[s * GEN + done[s]++] = ra->next[s];
        sync_ranks(ra->g); /* every rank has read next before rank 0 writes it again */
        if (ra->compress && !compressed && kv[0] >= 4 * BS && done[0] < GEN) {
            compress_seq0(&m, table[0], kv[0]);
            kv[0] = KEEP * BS;
            compressed = true;
        }
    }
    if (!ra->rank) out->steps = step, out->compressed = compressed;
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

static int make_model(const char *dir, const char *arch, int kv_heads, bool tie,
                      const char *dtype) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && %s/zipage mkmodel --arch %s --hidden 256 --layers 3 --heads 8 "
             "--kv-heads %d --head-dim 32 --intermediate 512 --vocab %d --seed 11 --dtype %s "
             "--max-pos 4096 %s --out %s >/dev/null",
             dir, getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build", arch, kv_heads, MAXV, dtype,
             tie ? "--tie" : "", dir);
    return system(cmd);
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
        REQUIRE(make_model(dir, variants[vi].arch, variants[vi].kv_heads, variants[vi].tie,
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
