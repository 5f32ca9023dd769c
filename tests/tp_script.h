/* tp_script: the tensor-parallel tests' model and script. tp_make_model writes their random
 * model (test_tp_cpu, test_cuda_tp, test_tp_engine). The script is the multi-step one they run on
 * every rank of a model (test_tp_cpu on CPU backends, test_cuda_tp on GPUs): three sequences through steps that mix
 * prefill chunks of uneven sizes with decodes, steps alternating gathered logits and greedy ids,
 * rank 0's chosen ids fed back to every rank, and (when compressing) one sequence compressed to
 * KEEP blocks through model_compress, then more decodes. Rank 0 records what it saw.
 *
 * Invariants: every rank runs the same script on the same batches (each computes it alike; only
 * the chosen ids come from rank 0, handed over between two barriers).
 * Threading: one thread per rank, each driving its own backend and model; `bar` (NULL at one
 * rank) is the ranks' barrier. Header-only; the model and backend are the caller's.
 */
#ifndef ZP_TESTS_TP_SCRIPT_H
#define ZP_TESTS_TP_SCRIPT_H

#include "engine/model.h"
#include "engine/shard.h"
#include "tests/testlib.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEQS  3
#define BS    8
#define MAXB  8 /* blocks per sequence */
#define STEPS 24
#define GEN   10 /* tokens generated per sequence */
#define KEEP  2  /* blocks a compressed sequence keeps */
#define MAXV  1001
#define QCL   4

static const int prompt_len[SEQS] = {29, 11, 21};

/* The tests' random model in dir, made by `zipage mkmodel` (from $ZP_BUILD, else build): hidden
 * 256, 3 layers, 8 query heads of 32, intermediate 512, a vocabulary of MAXV (no rank count
 * divides it), seed 11, 4096 positions; the architecture, kv heads, tied embeddings and the
 * checkpoint's dtype as given. system()'s status: 0 = made. */
static inline int tp_make_model(const char *dir, const char *arch, int kv_heads, bool tie,
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

/* What rank 0 saw: per step, the logits of its logit rows or the ids chosen. */
typedef struct result {
    int steps, n_logits[STEPS], ids_step[STEPS], compressed;
    float logits[STEPS][SEQS][MAXV];
    int32_t ids[STEPS][SEQS];
} result;

/* The model dims of the script for rank sh of c (its kv cache in kv_dtype), with compression
 * when compress; comm NULL at one rank. */
static inline model_dims tp_script_dims(const model_config *c, const shard *sh, comm *cm,
                                        bool compress, zp_dtype kv_dtype) {
    model_dims d = {.max_tokens = 64,
                    .max_logits = SEQS,
                    .max_seqs = SEQS,
                    .max_blocks = MAXB,
                    .block_size = BS,
                    .num_blocks = SEQS * MAXB + 1,
                    .kv_dtype = kv_dtype,
                    .comm = cm};
    if (compress) {
        d.qcache_slots = SEQS, d.qcl = QCL, d.cmp_jobs = 1;
        d.cmp_max_pos = MAXB * BS, d.cmp_max_keep = KEEP * BS;
        d.cp = (be_cparams){.layers = c->layers,
                            .hq = sh->heads,
                            .hkv = sh->kv_heads,
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
    }
    return d;
}

/* The sequence's token at position p: its prompt, then what was chosen. */
static inline int32_t tp_token_at(const int32_t *prompt, const int32_t *gen, int s, int p) {
    return p < prompt_len[s] ? prompt[s * 64 + p] : gen[s * GEN + p - prompt_len[s]];
}

static inline void tp_compress_seq0(model *m, const int32_t *table, int kv_len) {
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

static inline void tp_barrier(pthread_barrier_t *bar) {
    if (bar) pthread_barrier_wait(bar);
}

/* Runs the script on rank `rank`'s initialised model m (compressing when its dims do); rank 0
 * records into out. next: [SEQS] shared by the ranks. */
static inline void tp_script_run(model *m, int rank, pthread_barrier_t *bar, result *out,
                                 int32_t *next) {
    const model_config *c = &m->cfg;
    const int vocab = c->vocab; /* the rank's view keeps the whole vocabulary (shard_config) */
    const bool compress = m->dims.cmp_jobs > 0;
    unsigned long long rng = 5;
    int32_t prompt[SEQS * 64], gen[SEQS * GEN] = {0}, table[SEQS][MAXB];
    for (int i = 0; i < SEQS * 64; i++)
        prompt[i] = (int32_t)(test_rand_u64(&rng) % (unsigned)vocab);
    for (int s = 0; s < SEQS; s++)
        for (int b = 0; b < MAXB; b++)
            table[s][b] = (b * SEQS + (SEQS - 1 - s) + 7 * b) % (SEQS * MAXB); /* scattered */
    int pos[SEQS] = {0}, kv[SEQS] = {0}, done[SEQS] = {0};
    bool compressed = false;
    static const int chunks[] = {7, 3, 5, 9, 2};
    int step = 0;
    for (; step < STEPS; step++) {
        model_batch *b = &m->batch;
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
                b->token_ids[n] = tp_token_at(prompt, gen, s, p);
                b->positions[n] = p;
                b->tok_seq[n] = ns;
                b->tok_kv_idx[n] = ci;
                b->tok_qslot[n] = compress ? s : -1;
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
        b->n_seat_jobs = 0, b->n_hist = 0;
        if (m->be->sample) /* ids sampled on the backend: greedy, no penalties */
            for (int i = 0; i < nl; i++)
                b->sparams[i] =
                    (zp_sample_params){.top_p = 1.0f, .repetition_penalty = 1.0f, .seat = -1};
        REQUIRE(model_forward(m) == 0);
        if (!rank) {
            out->n_logits[step] = nl, out->ids_step[step] = b->want_ids;
            for (int i = 0, s = 0; i < nl; s++) {
                if (done[s] == GEN || pos[s] < prompt_len[s]) continue;
                int32_t id;
                if (b->want_ids) {
                    id = m->host_ids[i];
                } else {
                    const float *lg = m->host_logits + (size_t)i * (size_t)vocab;
                    memcpy(out->logits[step][i], lg, sizeof(float) * (size_t)vocab);
                    id = 0;
                    for (int v = 1; v < vocab; v++)
                        if (lg[v] > lg[id]) id = v;
                }
                out->ids[step][i] = id;
                next[s] = id;
                i++;
            }
        }
        tp_barrier(bar); /* rank 0's ids are in next */
        for (int s = 0; s < SEQS; s++)
            if (done[s] < GEN && pos[s] >= prompt_len[s]) gen[s * GEN + done[s]++] = next[s];
        tp_barrier(bar); /* every rank has read next before rank 0 writes it again */
        if (compress && !compressed && kv[0] >= 4 * BS && done[0] < GEN) {
            tp_compress_seq0(m, table[0], kv[0]);
            kv[0] = KEEP * BS;
            compressed = true;
        }
    }
    if (!rank) out->steps = step, out->compressed = compressed;
}

#endif
