/* engine: request table, scheduler and step loop (see engine.h).
 *
 * Scheduling (one step): running requests first, oldest first, each takes what it still
 * needs (1 token when decoding, the rest of its prompt when prefilling) within the step's
 * token budget (max_num_batched_tokens) — so a long prompt is prefilled in chunks and
 * decodes keep going in the same steps. Then waiting requests are admitted in FIFO order
 * while budget, max_num_seqs and free blocks allow; the head of the queue is never skipped,
 * so nothing starves. When a running request needs a block and none is free, the newest
 * running request is preempted (blocks released, tokens kept, recomputed later).
 *
 * Invariants: a request's K/V cover tokens [0, n_computed) in cache order; kv_len is its
 * logical cache length; blocks[0 .. n_blocks) hold cache indices [0, n_blocks*bs). A block
 * shared through the prefix cache (ref > 1) is always full and never written.
 *
 * Memory: request slots, token arrays and block tables are carved from the arena at open;
 * nothing is allocated per step. Single-threaded (see engine.h).
 *
 * Tensor parallelism (docs/TENSOR_PARALLEL.md): this thread is rank 0 (scheduler, block pool,
 * prefix cache, sampler, model e->m); ranks 1.. are engine/tp's threads, each driving its own
 * backend. At open every rank plans its own KV pool and the block count and query-cache slots are
 * the minimum over ranks, so one block id or slot id means the same on every rank; each step's
 * staged batch and each compression batch are replayed on every rank by tp.
 */
#include "engine/engine.h"

#include "arena/err.h"
#include "arena/plan.h"
#include "drv/attn_tiles.h"
#include "drv/backend.h"
#include "drv/comm_nccl.h"
#include "engine/kv.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "engine/shard.h"
#include "engine/tp.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

_Static_assert((int)CONF_ATTENTION_PREFILL_KERNEL_AUTO == (int)ATTN_PREFILL_AUTO &&
                   (int)CONF_ATTENTION_PREFILL_KERNEL_MMA == (int)ATTN_PREFILL_MMA &&
                   (int)CONF_ATTENTION_PREFILL_KERNEL_WGMMA == (int)ATTN_PREFILL_WGMMA,
               "attention_prefill_kernel's choices are drv/attn_tiles.h's ATTN_PREFILL_*");

typedef enum { RQ_FREE, RQ_WAITING, RQ_RUNNING } rq_state;

typedef struct req {
    uint64_t id, user_tag;
    rq_state state;
    int32_t *tok; /* prompt then completion */
    int32_t n_prompt, n_tok;
    int32_t n_computed, kv_len;
    int32_t *blocks;
    int32_t n_blocks;
    int32_t n_hashed; /* leading blocks registered in the prefix cache */
    uint64_t last_hash;
    sampling_params sp;
    bool logprobs, cancel_pending;
    bool cmp;        /* this request compresses */
    bool compressed; /* at least one compression committed (never preempted then) */
    bool compressing; /* in the compression batch in flight: not scheduled, preempted or
                       * finished until the batch ends (it owns the request's blocks) */
    int32_t budget;  /* M for this request, in blocks */
    int32_t protect; /* leading cache positions never evicted: its first prompt tokens */
    uint64_t evict_key; /* eviction=random: hash of eviction_seed and the prompt tokens */
    be_oracle *record;  /* engine_request.record / .oracle (caller-owned) */
    const be_oracle *oracle;
    const int32_t *forced; /* engine_request.forced (caller-owned), NULL when not forced */
    int32_t qslot;   /* query-cache slot, -1 = none */
    int32_t seat;    /* the backend sampler's penalty-state seat, -1 = none */
    engine_usage usage;
    int32_t prev, next; /* links in the waiting or running list */
} req;

typedef struct rq_list {
    int32_t head, tail, n;
} rq_list;

typedef struct sched_item {
    int32_t r, take;
} sched_item;

struct engine {
    conf cf;
    model_config mc;
    model_weights mw;
    model m;
    backend *be;                     /* rank 0's: bes[0] */
    backend *bes[ZP_TP_MAX];         /* every rank's backend (made and destroyed here) */
    tp *tp;                          /* ranks 1.. under tensor parallelism, else NULL */
    size_t comm_bytes;               /* the communicator's share of each rank's reservation */
    nccl_lib nccl;                   /* on CUDA under tensor parallelism: NCCL and the ranks' */
    comm_nccl nccl_ranks[ZP_TP_MAX]; /* communicators (n_nccl of them open) */
    int n_nccl;
    char backend_why[320];
    double open_weights_s, open_backend_s, open_total_s; /* engine_open's phases (engine_info) */
    char backend_plans[256]; /* what the backend's start-up chose for the GEMMs, or "" */
    kv_pool kv;
    sampler smp;
    engine_output_fn out;
    void *user;
    int32_t n_valid, max_model_len, bs, max_blocks;
    int32_t eos[LOADER_MAX_EOS + 8];
    int n_eos;
    req *reqs;
    int32_t nreqs;
    int32_t *free_slots, nfree_slots;
    rq_list waiting, running;
    sched_item *sched;
    int32_t n_sched;
    uint64_t id_counter;
    bool in_step;
    int32_t n_cancel_pending;
    int32_t M, qcl;           /* default budget (blocks) and query cache length */
    int32_t *qslots, nqslots; /* free query-cache slots */
    int32_t *seats, nseats;   /* free seats of the backend's sampler */
    int32_t *cjob_req;        /* requests of the compression batch being built */
    uint32_t *blk_batch;      /* per block: the compression batch that reads it as shared */
    uint32_t cbatch;          /* id of the batch being built */
    int32_t cmp_n;            /* jobs of the compression batch in flight (0: none) */
    int tp_rc;                /* under tensor parallelism: the failure that stopped the ranks */
    char tp_why[512];         /* its message (0: none) */
    engine_stats st;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- lists ---- */

static void list_push_back(engine *e, rq_list *l, int32_t i) {
    req *r = &e->reqs[i];
    r->prev = l->tail;
    r->next = -1;
    if (l->tail >= 0)
        e->reqs[l->tail].next = i;
    else
        l->head = i;
    l->tail = i;
    l->n++;
}

static void list_push_front(engine *e, rq_list *l, int32_t i) {
    req *r = &e->reqs[i];
    r->prev = -1;
    r->next = l->head;
    if (l->head >= 0)
        e->reqs[l->head].prev = i;
    else
        l->tail = i;
    l->head = i;
    l->n++;
}

static void list_remove(engine *e, rq_list *l, int32_t i) {
    req *r = &e->reqs[i];
    if (r->prev >= 0)
        e->reqs[r->prev].next = r->next;
    else
        l->head = r->next;
    if (r->next >= 0)
        e->reqs[r->next].prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = -1;
    l->n--;
}

/* ---- open / close ---- */

/* The KV (and query cache) budget on a device backend be (a rank's): free memory x
 * gpu_memory_utilization, less everything else the rank's model, its communicator and the backend
 * take. */
static int device_kv_bytes(const engine *e, backend *be, const model_dims *d, size_t *out) {
    const conf *cf = &e->cf;
    size_t fr, tot;
    int rc = be->mem_info(be, &fr, &tot);
    if (rc) return rc;
    model_dims d0 = *d;
    d0.num_blocks = 0;
    size_t fixed = model_device_bytes(&e->mc, &e->mw, &d0, be) + be->scratch_bytes + e->comm_bytes;
    size_t budget = (size_t)((double)fr * cf->gpu_memory_utilization);
    const double gib = 1073741824.0;
    if (budget <= fixed + (64u << 20))
        return err_set(ZP_ENOMEM,
                       "the model and its buffers need %.2f GiB of GPU memory; %.2f GiB "
                       "is free and gpu_memory_utilization %.2f allows %.2f: use a smaller model, "
                       "lower max_num_batched_tokens or max_num_seqs, or raise "
                       "gpu_memory_utilization",
                       fixed / gib, fr / gib, cf->gpu_memory_utilization, budget / gib);
    *out = budget - fixed - (64u << 20); /* 64 MiB for the alignment of the pool's buffers */
    return 0;
}

/* A rank's KV plan: d (its comm naming the rank and size its shard is planned for; NULL at TP 1)
 * gets the rank's own compression heads, and num_blocks and qcache_slots from the rank's own
 * memory. Reads the engine only, so every rank plans at once, each on its own thread. */
static int plan_rank(const engine *e, backend *be, model_dims *d) {
    const conf *cf = &e->cf;
    bool cmp = cf->compress;
    shard sh;
    model_config local; /* the rank's heads, kv heads and MLP rows (the whole model at TP 1) */
    int rc = shard_plan(&sh, &e->mc, d->comm ? d->comm->rank : 0, d->comm ? d->comm->size : 1);
    if (rc) return rc;
    shard_config(&sh, &e->mc, &local);
    d->cp.hq = local.heads, d->cp.hkv = local.kv_heads;
    if ((rc = be->check(be, &d->cp))) return rc;
    size_t kv_bytes = (size_t)(cf->kv_memory_mb ? cf->kv_memory_mb : 1024) << 20;
    if (!cf->kv_memory_mb && be->device_memory && (rc = device_kv_bytes(e, be, d, &kv_bytes)))
        return rc;
    plan_in pin = {
        .kv_bytes = kv_bytes,
        .block_bytes = model_block_bytes(&local, e->bs, d->kv_dtype, cmp),
        .slot_bytes = model_slot_bytes(&local, e->qcl),
        .scratch_bytes = model_cmp_scratch_bytes(&local, d),
        .max_num_seqs = cf->max_num_seqs,
        .budget_blocks = e->M,
        .fixed_blocks = cf->num_kv_blocks,
        .compress = cmp,
    };
    plan_out pout;
    if ((rc = plan_kv(&pin, &pout))) return rc;
    d->num_blocks = (int32_t)pout.num_blocks;
    d->qcache_slots = cmp ? (int32_t)pout.max_concurrency : 0;
    return 0;
}

/* A rank's reservation: its model's buffers and staging, and its communicator's scratch. */
static int reserve_rank(const engine *e, backend *be, const model_dims *d) {
    return be->reserve(be, model_device_bytes(&e->mc, &e->mw, d, be) + e->comm_bytes,
                       model_host_bytes(&e->mc, d, be));
}

/* The open phases of ranks 1.., as tp jobs on their own threads (arg: the engine, read only). */
static int plan_job(tp_rank *r, void *arg) {
    return plan_rank(arg, r->be, &r->d);
}

static int reserve_job(tp_rank *r, void *arg) {
    return reserve_rank(arg, r->be, &r->d);
}

static int init_job(tp_rank *r, void *arg) {
    const engine *e = arg;
    return model_init(&r->m, &r->a, r->be, &e->mc, &e->mw, &r->d);
}

/* Every rank's model on its backend, the dims agreed: each rank plans its KV pool; the block
 * count and query-cache slots are the minimum over ranks; each reserves; on CUDA the NCCL
 * communicators are made (they carve from the reservations, so after them); then every rank
 * initialises its model at once, each on its own thread (CUDA graph capture runs the ranks'
 * collectives, which need every rank). Rank 0's dims into *d, the others' into their tp_rank.
 * comms: the communicators given to engine_open_comms, else NULL. */
static int open_ranks(engine *e, arena *a, comm *const *comms, model_dims *d) {
    tp *t = e->tp;
    int size = t ? t->size : 1, rc;
    comm sizing[ZP_TP_MAX]; /* rank and size alone, for the plans, until NCCL's exist */
    for (int r = 0; r < size && size > 1; r++) {
        sizing[r] = (comm){.rank = r, .size = size};
        model_dims *dr = r ? &t->ranks[r].d : d;
        if (r) *dr = *d;
        dr->comm = comms ? comms[r] : &sizing[r];
    }
    if (t) t->comm0 = d->comm;
    if (size > 1 && !comms) e->comm_bytes = comm_nccl_bytes(size, d->max_logits, e->mc.vocab);
    if (t) tp_run(t, plan_job, e);
    rc = plan_rank(e, e->be, d);
    if (t && (rc = tp_join(t, rc))) return rc;
    if (rc) return rc;
    for (int r = 1; r < size; r++) {
        const model_dims *dr = &t->ranks[r].d;
        if (dr->num_blocks < d->num_blocks) d->num_blocks = dr->num_blocks;
        if (dr->qcache_slots < d->qcache_slots) d->qcache_slots = dr->qcache_slots;
    }
    for (int r = 1; r < size; r++)
        t->ranks[r].d.num_blocks = d->num_blocks, t->ranks[r].d.qcache_slots = d->qcache_slots;
    if (!e->cf.compress && d->num_blocks < e->max_blocks)
        return err_set(ZP_ELIMIT,
                       "KV cache of %d blocks (%lld tokens) cannot hold one request "
                       "of max_model_len %d: raise kv_memory_mb or num_kv_blocks, lower "
                       "max_model_len, or turn compression on",
                       d->num_blocks, (long long)d->num_blocks * e->bs, e->max_model_len);
    if (t) tp_run(t, reserve_job, e);
    rc = reserve_rank(e, e->be, d);
    if (t && (rc = tp_join(t, rc))) return rc;
    if (rc) return rc;
    if (size > 1 && !comms) {
        if ((rc =
                 comm_nccl_open(e->nccl_ranks, &e->nccl, e->bes, size, d->max_logits, e->mc.vocab)))
            return rc;
        e->n_nccl = size;
        /* comm_nccl_open leaves the last rank's context current on this thread */
        if (e->be->bind_thread && (rc = e->be->bind_thread(e->be))) return rc;
        for (int r = 0; r < size; r++)
            (r ? &t->ranks[r].d : d)->comm = &e->nccl_ranks[r].c;
        t->comm0 = d->comm;
    }
    if (t) tp_run(t, init_job, e);
    rc = model_init(&e->m, a, e->be, &e->mc, &e->mw, d);
    return t ? tp_join(t, rc) : rc;
}

/* The part of engine_open that runs on the created backends: memory plan, every rank's model,
 * pools and request table. On failure the caller closes the engine. */
static int open_on_backend(engine *e, arena *a, const conf *cf, comm *const *comms) {
    const model_config *mc = &e->mc;
    int rc;
    zp_dtype kvt = cf->kv_dtype == CONF_KV_DTYPE_BF16  ? ZP_BF16
                   : cf->kv_dtype == CONF_KV_DTYPE_F16 ? ZP_F16
                   : cf->kv_dtype == CONF_KV_DTYPE_F32 ? ZP_F32
                                                       : e->be->act_dtype;
    if (e->be->act_dtype == ZP_BF16 && kvt != ZP_BF16)
        return err_set(ZP_EUNSUP,
                       "key 'kv_dtype': the %s backend keeps the KV cache in bf16 "
                       "(set kv_dtype=auto or bf16)",
                       e->be->name);
    bool cmp = cf->compress;
    e->M = (int32_t)cf->max_cache_blocks_per_seq;
    e->qcl = (int32_t)cf->query_cache_len;
    if (cmp) {
        if (e->qcl > e->bs)
            return err_set(ZP_EINVAL, "key 'query_cache_len': %d exceeds block_size %d", e->qcl,
                           e->bs);
        if ((int64_t)e->M * e->bs < e->qcl + cf->sink_len + 1)
            return err_set(ZP_EINVAL,
                           "key 'max_cache_blocks_per_seq': a budget of %d blocks of "
                           "%d tokens leaves nothing to evict after query_cache_len %d and "
                           "sink_len %lld",
                           e->M, e->bs, e->qcl, (long long)cf->sink_len);
        if ((int64_t)e->M * e->bs < e->qcl + cf->protect_prompt_max + 1)
            return err_set(ZP_EINVAL,
                           "key 'protect_prompt_max': %lld protected tokens leave nothing to "
                           "evict in a budget of %d blocks of %d tokens after query_cache_len %d",
                           (long long)cf->protect_prompt_max, e->M, e->bs, e->qcl);
        if (cf->max_kv_budget_blocks < e->M)
            return err_set(ZP_EINVAL,
                           "key 'max_kv_budget_blocks': %lld is below "
                           "max_cache_blocks_per_seq %d",
                           (long long)cf->max_kv_budget_blocks, e->M);
    }
    if (cf->protect_prompt > cf->protect_prompt_max)
        return err_set(ZP_EINVAL, "key 'protect_prompt': %lld exceeds protect_prompt_max %lld",
                       (long long)cf->protect_prompt, (long long)cf->protect_prompt_max);
    model_dims d = {
        .max_tokens = (int32_t)cf->max_num_batched_tokens,
        .max_logits = (int32_t)cf->max_num_seqs,
        .max_seqs = (int32_t)cf->max_num_seqs,
        .max_blocks = e->max_blocks,
        .block_size = e->bs,
        .kv_dtype = kvt,
        .graphs = cf->cuda_graphs,
        .n_valid = e->n_valid,
    };
    if (cmp) {
        int64_t keep_blocks =
            cf->max_kv_budget_blocks < e->max_blocks ? cf->max_kv_budget_blocks : e->max_blocks;
        d.qcl = e->qcl;
        d.cmp_jobs = (int32_t)(cf->max_num_seqs < cf->compression_batch ? cf->max_num_seqs
                                                                        : cf->compression_batch);
        d.cmp_max_pos = e->max_blocks * e->bs;
        d.cmp_max_keep = (int32_t)keep_blocks * e->bs;
    }
    d.cp = (be_cparams){
        .layers = mc->layers,
        .hq = mc->heads,
        .hkv = mc->kv_heads,
        .dim = mc->head_dim,
        .bs = e->bs,
        .qcl = cmp ? e->qcl : 0,
        .scale = 1.0f / sqrtf((float)mc->head_dim),
        .max_norm = cf->max_norm,
        .gamma = cf->use_global_score ? (float)cf->global_score_decay : 0,
        .pool = (int32_t)cf->pooling_size,
        .redundancy = cf->redundancy,
        .lambda = (float)cf->redundancy_lambda,
        .temperature = (float)cf->redundancy_temperature,
        .threshold = (float)cf->redundancy_threshold,
        .sink_len = (int32_t)cf->sink_len,
        .recent = cmp ? (int32_t)cf->protect_recent : 0,
        .policy = cf->eviction == CONF_EVICTION_STREAMING ? BE_EVICT_STREAMING
                  : cf->eviction == CONF_EVICTION_RANDOM  ? BE_EVICT_RANDOM
                  : cf->eviction == CONF_EVICTION_ORACLE  ? BE_EVICT_ORACLE
                                                          : BE_EVICT_SCORE,
    };
    if ((rc = open_ranks(e, a, comms, &d))) return rc;
    if (cmp) {
        e->qslots = arena_alloc(a, sizeof(int32_t) * (size_t)d.qcache_slots, 8, "query slots");
        e->cjob_req = arena_alloc(a, sizeof(int32_t) * (size_t)d.cmp_jobs, 8, "compression jobs");
        e->blk_batch =
            arena_alloc(a, sizeof(uint32_t) * (size_t)d.num_blocks, 8, "compression jobs");
        if (!e->qslots || !e->cjob_req || !e->blk_batch) return ZP_ENOMEM;
        for (int32_t i = 0; i < d.qcache_slots; i++)
            e->qslots[e->nqslots++] = d.qcache_slots - 1 - i;
    }
    if (e->be->sample) { /* every running request may need a seat */
        if (e->be->sample_seats < cf->max_num_seqs)
            return err_set(ZP_ELIMIT, "%s backend: %d sampling seats for max_num_seqs %lld",
                           e->be->name, e->be->sample_seats, (long long)cf->max_num_seqs);
        e->seats = arena_alloc(a, sizeof(int32_t) * (size_t)cf->max_num_seqs, 8, "sampling seats");
        if (!e->seats) return ZP_ENOMEM;
        for (int32_t i = 0; i < (int32_t)cf->max_num_seqs; i++)
            e->seats[e->nseats++] = (int32_t)cf->max_num_seqs - 1 - i;
    }
    if ((rc = kv_init(&e->kv, a, d.num_blocks, e->bs, cf->enable_prefix_caching))) return rc;
    if ((rc = sampler_init(&e->smp, a, mc->vocab, e->n_valid))) return rc;

    e->nreqs = (int32_t)(cf->max_num_seqs + cf->max_waiting);
    e->reqs = arena_alloc(a, sizeof(req) * (size_t)e->nreqs, 64, "request table");
    e->free_slots = arena_alloc(a, sizeof(int32_t) * (size_t)e->nreqs, 8, "request table");
    e->sched = arena_alloc(a, sizeof(sched_item) * (size_t)cf->max_num_seqs, 8, "schedule");
    if (!e->reqs || !e->free_slots || !e->sched) return ZP_ENOMEM;
    for (int32_t i = 0; i < e->nreqs; i++) {
        req *r = &e->reqs[i];
        r->tok =
            arena_alloc_uninit(a, sizeof(int32_t) * (size_t)e->max_model_len, 64, "request tokens");
        r->blocks = arena_alloc(a, sizeof(int32_t) * (size_t)e->max_blocks, 8, "block tables");
        if (!r->tok || !r->blocks) return ZP_ENOMEM;
        r->prev = r->next = -1;
        e->free_slots[e->nfree_slots++] = e->nreqs - 1 - i;
    }
    e->waiting = e->running = (rq_list){-1, -1, 0};
    e->st.blocks_total = d.num_blocks;
    e->st.max_concurrency = cmp ? d.qcache_slots : (int32_t)cf->max_num_seqs;
    return 0;
}

void engine_be_shape(const model_config *mc, int32_t block_size, int32_t max_tokens,
                     int32_t max_logits, int32_t max_model_len, be_shape *s) {
    *s = (be_shape){.layers = mc->layers,
                    .hidden = mc->hidden,
                    .heads = mc->heads,
                    .kv_heads = mc->kv_heads,
                    .head_dim = mc->head_dim,
                    .intermediate = mc->intermediate,
                    .vocab = mc->vocab,
                    .block_size = block_size,
                    .max_tokens = max_tokens,
                    .max_logits = max_logits,
                    .max_model_len = max_model_len};
}

void engine_be_config(const conf *cf, be_config *bc) {
    *bc = (be_config){
        .kind = cf->backend == CONF_BACKEND_CPU    ? BE_CPU
                : cf->backend == CONF_BACKEND_CUDA ? BE_CUDA
                                                   : BE_AUTO,
        .threads = (int)cf->threads,
        .cpu_isa = cf->cpu_isa == CONF_CPU_ISA_GENERIC  ? CPU_ISA_GENERIC
                   : cf->cpu_isa == CONF_CPU_ISA_AVX2   ? CPU_ISA_AVX2
                   : cf->cpu_isa == CONF_CPU_ISA_AVX512 ? CPU_ISA_AVX512
                                                        : CPU_ISA_AUTO,
        .cpu_prec = cf->cpu_matmul_precision == CONF_CPU_MATMUL_PRECISION_BF16 ? CPU_PREC_BF16
                                                                               : CPU_PREC_F32,
        .cuda_driver_path = cf->cuda_driver_path,
        .nvrtc_path = cf->nvrtc_path,
        .cublaslt_path = cf->cublaslt_path,
        .kernel_cache_dir = cf->kernel_cache_dir,
        .cuda_device = (int)cf->cuda_device,
        .batch_invariant = cf->batch_invariant,
        .attention_chunk = (int)cf->attention_chunk,
        .attention_prefill_chunk = (int)cf->attention_prefill_chunk,
        .attention_mma = cf->attention_kernel == CONF_ATTENTION_KERNEL_MMA,
        .attention_prefill = (int)cf->attention_prefill_kernel,
        .gemm_workspace_mb = (int)cf->gemm_workspace_mb,
        .pdl = cf->cuda_pdl,
    };
}

int engine_check_tp(const conf *cf, const char *alone) {
    long long n = (long long)cf->tensor_parallel_size;
    if (n == 1) return 0;
    if (alone)
        return err_set(ZP_EUNSUP,
                       "key 'tensor_parallel_size': %lld is not for zipage %s, which runs the "
                       "model alone on one device; tensor parallelism runs in the engine (serve, "
                       "generate, bench throughput); set it to 1",
                       n, alone);
    if (cf->backend != CONF_BACKEND_CUDA)
        return err_set(ZP_EUNSUP,
                       "key 'tensor_parallel_size': %lld needs backend=cuda (one GPU per rank); "
                       "on the CPU the ranks exist only in tests; set it to 1 or backend=cuda",
                       n);
    return 0;
}

/* Every rank's backend: at TP 1 the configured one; rank r of a tensor-parallel engine on GPU
 * cuda_device + r, or on the CPU with its share of the threads, each shaped by its shard. Rank
 * 0's is e->be, its line e->backend_why. */
static int make_backends(engine *e, const conf *cf, int size) {
    const model_config *mc = &e->mc;
    be_config bc;
    engine_be_config(cf, &bc);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cf->threads ? (int)cf->threads : cores > 0 ? (int)cores : 1;
    int rc;
    for (int r = 0; r < size; r++) {
        model_config local = *mc;
        if (size > 1) {
            shard sh;
            if ((rc = shard_plan(&sh, mc, r, size))) return rc;
            shard_config(&sh, mc, &local);
            bc.cuda_device = (int)cf->cuda_device + r;
            bc.threads = threads / size > 0 ? threads / size : 1;
        }
        be_shape shape; /* graph context buckets reach whole blocks */
        engine_be_shape(&local, e->bs, (int32_t)cf->max_num_batched_tokens,
                        (int32_t)cf->max_num_seqs, e->max_blocks * e->bs, &shape);
        char why[320];
        rc = r ? backend_create(&e->bes[r], &bc, &shape, why, sizeof why)
               : backend_create(&e->bes[r], &bc, &shape, e->backend_why, sizeof e->backend_why);
        if (rc) return size > 1 ? err_prefix(rc, "tensor-parallel rank %d", r) : rc;
    }
    e->be = e->bes[0];
    /* creating a GPU's backend makes its context current here: rank 0's again */
    if (size > 1 && e->be->bind_thread) return e->be->bind_thread(e->be);
    return 0;
}

/* engine_open and engine_open_comms: comms NULL makes the communicators (NCCL) when
 * tensor_parallel_size > 1. */
static int open_engine(engine **out, arena *a, const conf *cf, comm *const *comms, int32_t n_valid,
                       const int32_t *extra_eos, int n_extra_eos, engine_output_fn out_fn,
                       void *user) {
    int rc;
    double t0 = now_s();
    engine *e = arena_alloc(a, sizeof *e, 64, "engine");
    if (!e) return ZP_ENOMEM;
    e->cf = *cf;
    e->out = out_fn;
    e->user = user;
    if (!cf->model[0])
        return err_set(ZP_EINVAL, "no model: pass --model DIR or set 'model' in zipage.conf");
    if ((rc = loader_config(&e->mc, a, cf->model))) return rc;
    const model_config *mc = &e->mc;

    e->n_valid = n_valid > 0 && n_valid <= mc->vocab ? n_valid : mc->vocab;
    for (int i = 0; i < mc->n_eos; i++)
        e->eos[e->n_eos++] = mc->eos_ids[i];
    for (int i = 0; i < n_extra_eos && e->n_eos < (int)(sizeof e->eos / sizeof e->eos[0]); i++)
        e->eos[e->n_eos++] = extra_eos[i];

    e->max_model_len = cf->max_model_len ? (int32_t)cf->max_model_len : mc->max_pos;
    if (e->max_model_len > mc->max_pos)
        return err_set(ZP_EINVAL,
                       "key 'max_model_len': %d exceeds the model's "
                       "max_position_embeddings %d",
                       e->max_model_len, mc->max_pos);
    e->bs = (int32_t)cf->block_size;
    e->max_blocks = (e->max_model_len + e->bs - 1) / e->bs;
    int size = (int)cf->tensor_parallel_size;
    /* NCCL first: nccl_load sets NCCL_NVLS_ENABLE, before the ranks' threads exist */
    if (size > 1 && !comms && (rc = nccl_load(&e->nccl, cf->nccl_path))) return rc;

    double t1 = now_s();
    rc = cf->load_format == CONF_LOAD_FORMAT_DUMMY ? loader_dummy_weights(&e->mw, mc, a)
                                                   : loader_weights(&e->mw, mc, a, cf->model);
    if (rc) return rc;
    e->open_weights_s = now_s() - t1;
    t1 = now_s();
    rc = make_backends(e, cf, size);
    e->open_backend_s = now_s() - t1;
    if (!rc && size > 1) {
        e->tp = arena_alloc(a, sizeof *e->tp, 64, "tensor-parallel ranks");
        rc = !e->tp ? ZP_ENOMEM : tp_start(e->tp, size, e->bes, 4);
        if (rc) e->tp = NULL; /* tp_start stopped what it started */
    }
    if (!rc) rc = open_on_backend(e, a, cf, comms);
    if (rc) {
        engine_close(e);
        return rc;
    }
    if (e->tp) tp_freeze(e->tp); /* the ranks' start-up is over */
    if (e->be->describe_plans)
        e->be->describe_plans(e->be, e->backend_plans, sizeof e->backend_plans);
    e->open_total_s = now_s() - t0;
    *out = e;
    return 0;
}

int engine_open(engine **out, arena *a, const conf *cf, int32_t n_valid, const int32_t *extra_eos,
                int n_extra_eos, engine_output_fn out_fn, void *user) {
    int rc = engine_check_tp(cf, NULL);
    return rc ? rc : open_engine(out, a, cf, NULL, n_valid, extra_eos, n_extra_eos, out_fn, user);
}

int engine_open_comms(engine **out, arena *a, const conf *cf, comm *const *comms, int32_t n_valid,
                      const int32_t *extra_eos, int n_extra_eos, engine_output_fn out_fn,
                      void *user) {
    int size = (int)cf->tensor_parallel_size;
    for (int r = 0; r < size; r++)
        if (!comms[r] || comms[r]->rank != r || comms[r]->size != size)
            return err_set(ZP_EINVAL,
                           "engine: communicator %d is not rank %d of tensor_parallel_size %d", r,
                           r, size);
    return open_engine(out, a, cf, size > 1 ? comms : NULL, n_valid, extra_eos, n_extra_eos, out_fn,
                       user);
}

void engine_close(engine *e) {
    if (!e) return;
    if (e->tp) tp_stop(e->tp); /* the ranks' threads end before their backends */
    comm_nccl_close(e->nccl_ranks, e->n_nccl);
    for (int r = ZP_TP_MAX - 1; r >= 0; r--) {
        if (!e->bes[r]) continue;
        /* a GPU backend is destroyed with its own context current */
        if (e->bes[1] && e->bes[r]->bind_thread) e->bes[r]->bind_thread(e->bes[r]);
        e->bes[r]->destroy(e->bes[r]);
    }
    loader_close(&e->mw);
}

void engine_get_info(const engine *e, engine_info *info) {
    *info = (engine_info){
        .backend = e->be->name,
        .backend_why = e->backend_why,
        .backend_plans = e->backend_plans,
        .arch = loader_arch_name(e->mc.arch),
        .vocab = e->mc.vocab,
        .n_valid = e->n_valid,
        .layers = e->mc.layers,
        .hidden = e->mc.hidden,
        .max_model_len = e->max_model_len,
        .block_size = e->bs,
        .num_blocks = e->kv.num_blocks,
        .max_num_seqs = (int32_t)e->cf.max_num_seqs,
        .max_concurrency = e->st.max_concurrency,
        .kv_bytes = (size_t)e->kv.num_blocks *
                    model_block_bytes(&e->mc, e->bs, e->m.dims.kv_dtype, e->cf.compress),
        .device_bytes = model_device_bytes(&e->mc, &e->mw, &e->m.dims, e->be),
        .open_s = {e->open_weights_s, e->open_backend_s, e->m.upload_seconds,
                   e->m.capture_seconds, e->open_total_s},
    };
}

/* ---- requests ---- */

static void release_slot(engine *e, req *r) {
    if (r->qslot >= 0) e->qslots[e->nqslots++] = r->qslot;
    r->qslot = -1;
    if (r->seat >= 0) e->seats[e->nseats++] = r->seat;
    r->seat = -1;
}

static void release_blocks(engine *e, req *r) {
    for (int32_t i = 0; i < r->n_blocks; i++)
        kv_unref(&e->kv, r->blocks[i]);
    r->n_blocks = 0;
    r->n_hashed = 0;
    r->last_hash = 0;
    r->n_computed = r->kv_len = 0;
}

static void emit_final(engine *e, req *r, engine_finish f, int code, const char *msg) {
    engine_event ev = {
        .req_id = r->id,
        .user_tag = r->user_tag,
        .token = r->n_tok > r->n_prompt ? r->tok[r->n_tok - 1] : -1,
        .top1 = -1,
        .finish = f,
        .err_code = code,
        .err_msg = msg,
        .usage = r->usage,
    };
    ev.usage.prompt_tokens = r->n_prompt;
    ev.usage.completion_tokens = r->n_tok - r->n_prompt;
    e->out(e->user, &ev);
}

/* Ends a request: terminal event, blocks and slot released. */
static void finish(engine *e, int32_t i, engine_finish f, int code, const char *msg) {
    req *r = &e->reqs[i];
    assert(!r->compressing); /* its blocks are the compression batch's until it ends */
    if (r->state == RQ_RUNNING)
        list_remove(e, &e->running, i);
    else if (r->state == RQ_WAITING)
        list_remove(e, &e->waiting, i);
    release_blocks(e, r);
    release_slot(e, r);
    emit_final(e, r, f, code, msg);
    r->state = RQ_FREE;
    r->id = 0;
    if (r->cancel_pending) {
        r->cancel_pending = false;
        e->n_cancel_pending--;
    }
    e->free_slots[e->nfree_slots++] = i;
}

/* Under tensor parallelism a failed step or compression batch has aborted the ranks' group
 * (engine/tp: a rank failing outside a collective would leave the others waiting in one): its
 * communicators are not usable again (NCCL's are destroyed), so from then on the engine ends every
 * request with that failure and refuses new ones. Restarting the engine is the way back. */
static void tp_stopped(engine *e, int rc) {
    if (!e->tp || e->tp_rc) return;
    e->tp_rc = rc;
    snprintf(e->tp_why, sizeof e->tp_why, "%s", err_msg());
}

static int tp_stopped_err(const engine *e) {
    return err_set(ZP_ESTATE,
                   "engine: the tensor-parallel ranks stopped on an earlier failure (%s); "
                   "restart the engine",
                   e->tp_why);
}

/* The oracle baseline's tables (engine_request.record / .oracle): shapes and where each may
 * be used. */
static int check_oracle(const engine *e, const engine_request *rq, bool cmp) {
    const be_oracle *t[2] = {rq->record, rq->oracle};
    /* a rank records and ranks by its own heads only: the tables are rank 0's alone */
    if (e->tp && (rq->record || rq->oracle))
        return err_set(ZP_EUNSUP,
                       "request: attention records and oracle tables (zipage bench accuracy) "
                       "are not supported under tensor_parallel_size %d",
                       e->tp->size);
    for (int i = 0; i < 2; i++)
        if (t[i] && (t[i]->n_pos < 1 || t[i]->chunk < 1 || !t[i]->a ||
                     t[i]->n_chunks != (t[i]->n_pos + t[i]->chunk - 1) / t[i]->chunk))
            return err_set(ZP_EINVAL,
                           "request: %s table of %d positions, chunk %d, %d chunks is malformed",
                           i ? "oracle" : "record", t[i]->n_pos, t[i]->chunk, t[i]->n_chunks);
    if (rq->record) {
        if (cmp || !e->be->attn_record)
            return err_set(ZP_EUNSUP,
                           "request: recording attention needs full KV (compress off) on a "
                           "backend that records (backend=cpu); here compress is %s on the %s "
                           "backend",
                           cmp ? "on" : "off", e->be->name);
        if ((int64_t)rq->n_prompt + rq->sp.max_tokens > rq->record->n_pos)
            return err_set(ZP_EINVAL,
                           "request: the record holds %d positions, the request may reach %lld",
                           rq->record->n_pos, (long long)rq->n_prompt + rq->sp.max_tokens);
    }
    if (cmp && e->cf.eviction == CONF_EVICTION_ORACLE && !rq->oracle)
        return err_set(ZP_EINVAL, "request: key 'eviction' is oracle but the request has no "
                                  "oracle table (in-process only: zipage bench accuracy "
                                  "--baselines oracle makes them)");
    return 0;
}

int engine_submit(engine *e, const engine_request *rq, uint64_t *req_id) {
    if (e->tp_rc) return tp_stopped_err(e);
    if (rq->n_prompt < 1) return err_set(ZP_EINVAL, "request: empty prompt");
    if (rq->n_prompt >= e->max_model_len)
        return err_set(ZP_EINVAL,
                       "request: prompt of %d tokens leaves no room under "
                       "max_model_len %d",
                       rq->n_prompt, e->max_model_len);
    for (int32_t i = 0; i < rq->n_prompt; i++)
        if (rq->prompt_ids[i] < 0 || rq->prompt_ids[i] >= e->mc.vocab)
            return err_set(ZP_EINVAL,
                           "request: prompt token %d at index %d is outside the "
                           "vocabulary [0, %d)",
                           rq->prompt_ids[i], i, e->mc.vocab);
    int rc = sampler_validate(&rq->sp, e->mc.vocab);
    if (rc) return rc;
    if (rq->kv_budget_blocks < 0 || rq->kv_budget_blocks > e->cf.max_kv_budget_blocks)
        return err_set(ZP_EINVAL, "request: kv_budget_blocks %d out of range [0, %lld]",
                       rq->kv_budget_blocks, (long long)e->cf.max_kv_budget_blocks);
    bool cmp = rq->compress < 0 ? e->cf.compress : rq->compress != 0;
    if (cmp && !e->cf.compress)
        return err_set(ZP_EINVAL, "request: compress requested but compression is off in this "
                                  "engine (key 'compress')");
    int32_t budget = rq->kv_budget_blocks ? rq->kv_budget_blocks : e->M;
    if (cmp && (int64_t)budget * e->bs < e->qcl + e->cf.sink_len + 1)
        return err_set(ZP_EINVAL,
                       "request: kv_budget_blocks %d is too small for "
                       "query_cache_len %d",
                       budget, e->qcl);
    if (rq->protect_prompt < -1 || rq->protect_prompt > e->cf.protect_prompt_max)
        return err_set(ZP_EINVAL,
                       "request: protect_prompt %d out of range [0, %lld] (key "
                       "'protect_prompt_max')",
                       rq->protect_prompt, (long long)e->cf.protect_prompt_max);
    int32_t protect = rq->protect_prompt < 0 ? (int32_t)e->cf.protect_prompt : rq->protect_prompt;
    if (protect > rq->n_prompt) protect = rq->n_prompt;
    if (cmp && (int64_t)budget * e->bs < e->qcl + protect + 1)
        return err_set(ZP_EINVAL,
                       "request: protect_prompt %d leaves nothing to evict in kv_budget_blocks "
                       "%d of %d tokens after query_cache_len %d",
                       protect, budget, e->bs, e->qcl);
    if (cmp && (int64_t)budget + 1 > e->kv.num_blocks && (int64_t)budget * e->bs < e->max_model_len)
        return err_set(ZP_ELIMIT,
                       "request: kv_budget_blocks %d needs %d blocks but the pool has "
                       "%d (raise kv_memory_mb)",
                       budget, budget + 1, e->kv.num_blocks);
    if ((rc = check_oracle(e, rq, cmp))) return rc;
    if (rq->forced && rq->n_forced != rq->sp.max_tokens)
        return err_set(ZP_EINVAL,
                       "request: %d forced tokens for max_tokens %d (they must be equal)",
                       rq->n_forced, rq->sp.max_tokens);
    for (int32_t k = 0; rq->forced && k < rq->n_forced; k++)
        if (rq->forced[k] < 0 || rq->forced[k] >= e->n_valid)
            return err_set(ZP_EINVAL, "request: forced token %d at index %d is outside [0, %d)",
                           rq->forced[k], k, e->n_valid);
    int64_t need_tokens = rq->n_prompt;
    if (!cmp) {
        need_tokens += rq->sp.max_tokens;
        if (need_tokens > e->max_model_len) need_tokens = e->max_model_len;
    }
    if ((need_tokens + e->bs - 1) / e->bs > e->kv.num_blocks)
        return err_set(ZP_ELIMIT,
                       "request: needs %lld tokens of KV cache but the pool holds %lld "
                       "(raise kv_memory_mb%s)",
                       (long long)need_tokens, (long long)e->kv.num_blocks * e->bs,
                       cmp ? "" : " or allow compression");
    if (e->nfree_slots == 0 || e->waiting.n >= e->cf.max_waiting)
        return err_set(ZP_EBUSY, "request: queue full (%d waiting, max_waiting %lld)", e->waiting.n,
                       (long long)e->cf.max_waiting);
    int32_t i = e->free_slots[--e->nfree_slots];
    req *r = &e->reqs[i];
    int32_t *tok = r->tok, *blocks = r->blocks;
    memset(r, 0, sizeof *r);
    r->tok = tok;
    r->blocks = blocks;
    r->prev = r->next = -1;
    memcpy(r->tok, rq->prompt_ids, sizeof(int32_t) * (size_t)rq->n_prompt);
    r->n_prompt = r->n_tok = rq->n_prompt;
    r->sp = rq->sp;
    r->logprobs = rq->logprobs;
    r->user_tag = rq->user_tag;
    r->cmp = cmp;
    r->budget = budget;
    r->protect = protect;
    r->evict_key =
        XXH64(r->tok, sizeof(int32_t) * (size_t)r->n_prompt, (uint64_t)e->cf.eviction_seed);
    r->record = rq->record;
    r->oracle = rq->oracle;
    r->forced = rq->forced;
    r->qslot = -1;
    r->seat = -1;
    r->id = ++e->id_counter * (uint64_t)e->nreqs + (uint64_t)i;
    r->state = RQ_WAITING;
    list_push_back(e, &e->waiting, i);
    *req_id = r->id;
    return 0;
}

static int32_t find(const engine *e, uint64_t id) {
    int32_t i = (int32_t)(id % (uint64_t)e->nreqs);
    return e->reqs[i].state != RQ_FREE && e->reqs[i].id == id ? i : -1;
}

int engine_cancel(engine *e, uint64_t req_id) {
    int32_t i = find(e, req_id);
    if (i < 0)
        return err_set(ZP_ENOTFOUND, "cancel: no request %llu in flight",
                       (unsigned long long)req_id);
    if (e->in_step || e->reqs[i].compressing) { /* finished at the end of a step */
        if (!e->reqs[i].cancel_pending) e->n_cancel_pending++;
        e->reqs[i].cancel_pending = true;
    } else
        finish(e, i, ENGINE_FINISH_CANCELLED, 0, NULL);
    return 0;
}

/* ---- scheduling ---- */

/* Cache length at which r next compresses (INT32_MAX: never). It depends only on the
 * request's own tokens, so chunking, batching and preemption never move it:
 *  - a prompt longer than the budget is prefilled whole, then compressed right after the
 *    prefill (compress_after_prefill) or at its first block boundary;
 *  - otherwise, whenever the budget's M+1 blocks are full. */
static int32_t compress_point(const engine *e, const req *r) {
    if (!r->cmp) return INT32_MAX;
    int32_t full = (r->budget + 1) * e->bs;
    if (!r->compressed && r->n_prompt > full)
        return e->cf.compress_after_prefill ? r->n_prompt
                                            : (r->n_prompt + e->bs - 1) / e->bs * e->bs;
    return full;
}

/* Picks the preemption victim: never a compressed request (its KV cannot be recomputed);
 * requests without a query slot first, then the newest. -1 when none may be taken. */
static int32_t pick_victim(const engine *e) {
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = e->running.tail; i >= 0; i = e->reqs[i].prev) {
            const req *r = &e->reqs[i];
            if (!r->compressed && !r->compressing && (pass == 1 || r->qslot < 0)) return i;
        }
    return -1;
}

static void preempt(engine *e, int32_t i) {
    req *r = &e->reqs[i];
    assert(!r->compressed && !r->compressing);
    list_remove(e, &e->running, i);
    release_blocks(e, r);
    release_slot(e, r);
    r->state = RQ_WAITING;
    list_push_front(e, &e->waiting, i);
    e->st.preemptions++;
}

/* Grows r's block table to cover cache indices [0, kv_len + take). */
static bool grow(engine *e, req *r, int32_t take) {
    int32_t need = (r->kv_len + take + e->bs - 1) / e->bs;
    if (need - r->n_blocks > kv_free_count(&e->kv)) return false;
    while (r->n_blocks < need)
        r->blocks[r->n_blocks++] = kv_alloc(&e->kv);
    if (r->n_blocks > r->usage.kv_blocks_peak) r->usage.kv_blocks_peak = r->n_blocks;
    return true;
}

/* Frees blocks by preempting others (never `self`) until `want` are free. */
static bool make_room(engine *e, int32_t self, int32_t want, int32_t *next) {
    while (kv_free_count(&e->kv) < want) {
        int32_t v = pick_victim(e);
        if (v < 0 || v == self) return false;
        if (*next == v) *next = e->reqs[v].next;
        preempt(e, v);
    }
    return true;
}

/* Takes the longest run of full prompt blocks present in the prefix cache. At least one
 * token is always left to compute (for logits), and a compressing request recomputes the
 * tokens whose queries its first compression scores. */
static void prefix_hits(engine *e, req *r) {
    int32_t max_hit = (r->n_tok - 1) / e->bs;
    if (r->cmp) {
        int32_t w = (compress_point(e, r) - e->qcl) / e->bs;
        if (w < max_hit) max_hit = w;
    }
    uint64_t h = 0;
    while (r->n_blocks < max_hit) {
        const int32_t *t = r->tok + (size_t)r->n_blocks * (size_t)e->bs;
        uint64_t nh = kv_chain_hash(h, t, e->bs);
        int32_t b = kv_lookup(&e->kv, nh, t);
        if (b < 0) break;
        r->blocks[r->n_blocks++] = b;
        h = nh;
    }
    r->n_hashed = r->n_blocks;
    r->last_hash = h;
    r->n_computed = r->kv_len = r->n_blocks * e->bs;
}

/* Clips a chunk so that it ends at the compression point and, without a query slot, before
 * the tokens whose queries must be cached (taking a slot when one is free). */
static int32_t clip_take(engine *e, req *r, int32_t take) {
    if (!r->cmp) return take;
    int32_t p = compress_point(e, r);
    if (r->kv_len < p && r->kv_len + take > p) take = p - r->kv_len;
    if (r->qslot < 0 && r->kv_len + take > p - e->qcl) {
        if (e->nqslots > 0)
            r->qslot = e->qslots[--e->nqslots];
        else
            take = p - e->qcl - r->kv_len;
    }
    return take > 0 ? take : 0;
}

/* Commits the compression batch that ended (rc: its result): new block tables, released
 * blocks (only now: the batch read them until its end), or on failure the loss of the jobs'
 * caches, which end their requests with an error record. */
static void commit_compressions(engine *e, int rc) {
    model_cjobs *j = &e->m.cjobs;
    int32_t n = e->cmp_n;
    e->cmp_n = 0;
    for (int32_t k = 0; k < n; k++) {
        req *r = &e->reqs[e->cjob_req[k]];
        const int32_t *dst = j->dst + (size_t)k * (size_t)e->max_blocks;
        r->compressing = false;
        for (int32_t b = 0; b < r->n_blocks; b++)
            if (b >= r->budget || dst[b] != r->blocks[b]) kv_unref(&e->kv, r->blocks[b]);
        if (rc) {
            /* scoring failed: the request's cache is gone; release every target too */
            for (int32_t b = 0; b < r->budget; b++)
                kv_unref(&e->kv, dst[b]);
            r->n_blocks = 0;
            continue;
        }
        memcpy(r->blocks, dst, sizeof(int32_t) * (size_t)r->budget);
        r->usage.evicted_tokens += r->kv_len - r->budget * e->bs;
        e->st.evicted_tokens += r->kv_len - r->budget * e->bs;
        r->n_blocks = r->budget;
        r->kv_len = r->budget * e->bs;
        r->compressed = true;
        r->usage.compressions++;
        e->st.compressions++;
    }
    e->st.score_seconds = e->m.score_seconds;
    e->st.compact_seconds = e->m.compact_seconds;
    e->st.cmp_device_seconds = e->m.cmp_seconds;
    e->st.cmp_exposed_seconds = e->m.cmp_exposed_seconds;
    if (rc) {
        char msg[256];
        snprintf(msg, sizeof msg, "compression failed: %s", err_msg());
        for (int32_t k = 0; k < n; k++)
            finish(e, e->cjob_req[k], ENGINE_FINISH_ERROR, ZP_EBACKEND, msg);
    }
}

/* Commits the batch in flight once it has ended (wait: block until it has). */
static void poll_compressions(engine *e, bool wait) {
    if (!e->cmp_n) return;
    int done = wait ? 1 : model_compress_done(&e->m);
    if (done == 0) return;
    /* waits for the compression queues (every rank's: the commit reuses the jobs' blocks on all)
     * and reports their errors; done above is rank 0's, a hint for the others */
    int rc = e->tp ? tp_compress_end(e->tp, &e->m) : model_compress_end(&e->m);
    if (rc) tp_stopped(e, rc);
    commit_compressions(e, rc ? rc : done < 0 ? done : 0);
}

/* Starts the staged batch of n jobs on the compression queue; its requests wait for it. With
 * async_compression off (or on the CPU, where it has ended on return) it commits at once. */
static void start_compressions(engine *e, int32_t n) {
    e->m.cjobs.n_jobs = n;
    e->cmp_n = n;
    for (int32_t k = 0; k < n; k++)
        e->reqs[e->cjob_req[k]].compressing = true;
    int rc = e->tp ? tp_compress_begin(e->tp, &e->m) : model_compress_begin(&e->m);
    if (rc) {
        tp_stopped(e, rc);
        commit_compressions(e, rc);
    } else {
        poll_compressions(e, !e->cf.async_compression);
    }
}

/* Stages a compression of r into job slot k; false when its copy-on-write targets cannot
 * be had. Shared leading blocks get fresh targets; private ones are packed in place and
 * lose their prefix hash (their contents change). */
static bool stage_compression(engine *e, int32_t i, int32_t k, int32_t *next) {
    req *r = &e->reqs[i];
    model_cjobs *j = &e->m.cjobs;
    int32_t fresh = 0;
    for (int32_t b = 0; b < r->budget; b++)
        fresh += e->kv.ref[r->blocks[b]] > 1;
    if (!make_room(e, i, fresh, next)) return false;
    int32_t *src = j->src + (size_t)k * (size_t)e->max_blocks,
            *dst = j->dst + (size_t)k * (size_t)e->max_blocks;
    memcpy(src, r->blocks, sizeof(int32_t) * (size_t)r->n_blocks);
    for (int32_t b = 0; b < r->budget; b++) {
        if (e->kv.ref[r->blocks[b]] > 1)
            dst[b] = kv_alloc(&e->kv);
        else {
            kv_forget(&e->kv, r->blocks[b]);
            dst[b] = r->blocks[b];
        }
    }
    j->n_blocks[k] = r->n_blocks;
    j->kv_len[k] = r->kv_len;
    j->n_keep[k] = r->budget * e->bs;
    j->qslot[k] = r->qslot;
    j->protect[k] = r->protect;
    /* a function of the request's own prompt and history: reproducible, whatever the batch */
    j->seed[k] = (int32_t)(uint32_t)XXH64(&r->usage.compressions, sizeof r->usage.compressions,
                                          r->evict_key);
    if (e->m.cjobs.oracle) e->m.cjobs.oracle[k] = r->oracle, e->m.cjobs.seq_len[k] = r->n_computed;
    j->flags[k] =
        (r->compressed ? BE_CJ_GLOBAL : 0) |
        ((!r->compressed || e->cf.continuous_pooling) && e->cf.pooling_size > 1 ? BE_CJ_POOL : 0);
    e->cjob_req[k] = i;
    return true;
}

/* True when r reads a shared (prefix-cached) block that a job of the batch being built
 * reads too. Scoring writes the carried score C := S into the source blocks, so two jobs on
 * one block in one batch would race on it; such jobs go to separate batches (C of a shared
 * block is per-job scratch: K and V of shared blocks are never written). */
static bool shares_with_batch(engine *e, const req *r) {
    for (int32_t b = 0; b < r->n_blocks; b++)
        if (e->kv.ref[r->blocks[b]] > 1 && e->blk_batch[r->blocks[b]] == e->cbatch) return true;
    return false;
}

static void mark_shared(engine *e, const req *r) {
    for (int32_t b = 0; b < r->n_blocks; b++)
        if (e->kv.ref[r->blocks[b]] > 1) e->blk_batch[r->blocks[b]] = e->cbatch;
}

static void flush_compressions(engine *e, int32_t *n) {
    if (*n > 0) start_compressions(e, *n);
    *n = 0;
    e->cbatch++;
}

/* Commits the batch in flight if it has ended; then, while no batch is in flight, compresses
 * the running requests that have reached their compression point and have a token left to
 * compute, in batches of the planned size (one batch in flight at a time: the next is staged
 * into the same host staging once the last has ended). */
static void compress_due(engine *e) {
    poll_compressions(e, false);
    int32_t n = 0;
    e->cbatch++;
    for (int32_t i = e->running.head; i >= 0 && !e->cmp_n;) {
        req *r = &e->reqs[i];
        int32_t next = r->next;
        if (r->cmp && !r->compressing && r->kv_len == compress_point(e, r) &&
            r->n_computed < r->n_tok) {
            assert(r->qslot >= 0);
            if (n == e->m.dims.cmp_jobs || shares_with_batch(e, r)) {
                flush_compressions(e, &n);
                if (e->cmp_n) break; /* in flight: r waits for the next step */
            }
            mark_shared(e, r);
            if (stage_compression(e, i, n, &next)) n++;
        }
        i = next;
    }
    flush_compressions(e, &n);
}

/* Drops i's item from this step's schedule (a victim may be an older request already
 * scheduled); returns the tokens it had taken. */
static int32_t unschedule(engine *e, int32_t i) {
    for (int32_t s = 0; s < e->n_sched; s++)
        if (e->sched[s].r == i) {
            int32_t take = e->sched[s].take;
            e->sched[s] = e->sched[--e->n_sched];
            return take;
        }
    return 0;
}

static void schedule(engine *e) {
    int32_t budget = (int32_t)e->cf.max_num_batched_tokens;
    bool preempted = false;
    e->n_sched = 0;
    if (e->cf.compress) compress_due(e);
    for (int32_t i = e->running.head; i >= 0 && budget > 0;) {
        req *r = &e->reqs[i];
        int32_t next = r->next;
        int32_t take = r->n_tok - r->n_computed;
        if (take > budget) take = budget;
        take = clip_take(e, r, take);
        if (take == 0 || (r->cmp && r->kv_len == compress_point(e, r))) {
            i = next; /* waits for a query slot or for its compression */
            continue;
        }
        bool ok = grow(e, r, take);
        while (!ok) {
            int32_t victim = pick_victim(e);
            if (victim < 0) break;
            if (next == victim) next = e->reqs[victim].next; /* its running-list successor */
            budget += unschedule(e, victim);
            preempt(e, victim);
            preempted = true;
            if (victim == i) break;
            ok = grow(e, r, take);
        }
        if (ok) {
            e->sched[e->n_sched++] = (sched_item){i, take};
            budget -= take;
        }
        i = next;
    }
    while (!preempted && budget > 0 && e->waiting.n > 0 && e->running.n < e->cf.max_num_seqs) {
        int32_t i = e->waiting.head;
        req *r = &e->reqs[i];
        if (r->cmp && !e->cf.hybrid_scheduling && r->qslot < 0) {
            if (e->nqslots == 0) break; /* starts with a slot only: waits for one */
            r->qslot = e->qslots[--e->nqslots];
        }
        if (r->n_blocks == 0) prefix_hits(e, r);
        int32_t take = r->n_tok - r->n_computed;
        if (take > budget) take = budget;
        int32_t room = (r->n_blocks + kv_free_count(&e->kv)) * e->bs - r->kv_len;
        if (take > room) take = room;
        take = clip_take(e, r, take);
        if (take <= 0 || !grow(e, r, take)) {
            release_blocks(e, r); /* give back prefix hits and slot; retried next step */
            release_slot(e, r);
            break;
        }
        if (e->kv.prefix_cache) {
            e->st.prefix_query_tokens += r->n_tok;
            e->st.prefix_hit_tokens += r->n_computed;
            if (r->usage.cached_prompt_tokens < r->n_computed)
                r->usage.cached_prompt_tokens = r->n_computed;
        }
        if (r->n_blocks > r->usage.kv_blocks_peak) r->usage.kv_blocks_peak = r->n_blocks;
        list_remove(e, &e->waiting, i);
        list_push_back(e, &e->running, i);
        r->state = RQ_RUNNING;
        e->sched[e->n_sched++] = (sched_item){i, take};
        budget -= take;
    }
}

/* Fills the model's staging area from the schedule. */
/* A request whose next token is the plain argmax (no penalty, no logprob): the backend can
 * pick it, and only the id comes back. */
static bool plain_greedy(const req *r) {
    const sampling_params *p = &r->sp;
    return p->temperature == 0.0f && p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f &&
           p->frequency_penalty == 0.0f && !r->logprobs;
}

/* The backend sampler's parameters for r's next token; a request with a penalty gets a seat
 * (initialised this step from its ids so far) the first time it samples there. */
static void stage_sampling(engine *e, req *r, int32_t row) {
    model_batch *b = &e->m.batch;
    const sampling_params *p = &r->sp;
    bool penalty = p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
                   p->frequency_penalty != 0.0f;
    if (penalty && r->seat < 0) {
        assert(e->nseats > 0 && b->n_hist + r->n_tok <= b->hist_cap);
        r->seat = e->seats[--e->nseats];
        b->seat_jobs[b->n_seat_jobs++] =
            (zp_sample_seat_job){.seat = r->seat,
                                 .offset = b->n_hist,
                                 .n_prompt = r->n_prompt,
                                 .n_completion = r->n_tok - r->n_prompt};
        memcpy(b->hist + b->n_hist, r->tok, sizeof(int32_t) * (size_t)r->n_tok);
        b->n_hist += r->n_tok;
    }
    b->sparams[row] = (zp_sample_params){.temperature = p->temperature,
                                         .top_k = p->top_k,
                                         .top_p = p->top_p,
                                         .min_p = p->min_p,
                                         .repetition_penalty = p->repetition_penalty,
                                         .presence_penalty = p->presence_penalty,
                                         .frequency_penalty = p->frequency_penalty,
                                         .seat = penalty ? r->seat : -1,
                                         .seed = p->seed,
                                         .counter = r->n_tok - r->n_prompt,
                                         .want_logprob = r->logprobs};
}

static void build_batch(engine *e) {
    model_batch *b = &e->m.batch;
    int32_t t = 0, nl = 0;
    bool dev_sample = e->be->sample != NULL, want_ids = true;
    b->n_seat_jobs = b->n_hist = b->n_rec = 0;
    for (int32_t s = 0; s < e->n_sched; s++) {
        req *r = &e->reqs[e->sched[s].r];
        int32_t take = e->sched[s].take;
        assert(r->state == RQ_RUNNING && take > 0); /* a preempted request left the schedule */
        for (int32_t j = 0; j < take; j++, t++) {
            int32_t pos = r->n_computed + j, ci = r->kv_len + j;
            b->token_ids[t] = r->tok[pos];
            b->positions[t] = pos;
            b->tok_seq[t] = s;
            b->tok_kv_idx[t] = ci;
            b->tok_qslot[t] = r->qslot;
            b->tok_prompt[t] = pos < r->n_prompt; /* the kernel follows the token, not the batch */
            b->slots[t] = r->blocks[ci / e->bs] * e->bs + ci % e->bs;
            /* generated tokens only: a prompt row shares its query chunk with its neighbours */
            if (b->rec) b->n_rec += !!(b->rec[t] = pos >= r->n_prompt ? r->record : NULL);
            /* A block shared through the prefix cache is never written. */
            assert(e->kv.ref[r->blocks[ci / e->bs]] == 1);
        }
        memcpy(b->block_tables + (size_t)s * (size_t)e->max_blocks, r->blocks,
               sizeof(int32_t) * (size_t)r->n_blocks);
        e->st.kv_tokens_read += r->kv_len + take; /* the row's last token reads all of it */
        if (r->n_computed + take == r->n_tok) {
            if (dev_sample) stage_sampling(e, r, nl);
            b->logit_rows[nl++] = t - 1;
            want_ids &= !r->forced && (dev_sample || plain_greedy(r));
        }
    }
    b->want_ids = want_ids;
    b->n_tokens = t;
    b->n_seqs = e->n_sched;
    b->n_logits = nl;
}

static bool is_stop(const engine *e, const req *r, int32_t tok) {
    for (int32_t i = 0; i < r->sp.n_stop; i++)
        if (r->sp.stop_ids[i] == tok) return true;
    if (r->sp.ignore_eos) return false;
    for (int i = 0; i < e->n_eos; i++)
        if (e->eos[i] == tok) return true;
    return false;
}

/* log softmax(logits)[tok] over the first n ids, in double, and the argmax (lowest id of a
 * tie) into *top1: what teacher forcing reports for each forced token. */
static float forced_logprob(const float *logits, int32_t n, int32_t tok, int32_t *top1) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)logits[i] - (double)logits[best]);
    *top1 = best;
    return (float)((double)logits[tok] - (double)logits[best] - log(sum));
}

/* Registers r's newly completed full blocks in the prefix cache. */
static void register_blocks(engine *e, req *r) {
    while ((r->n_hashed + 1) * e->bs <= r->n_computed) {
        const int32_t *t = r->tok + (size_t)r->n_hashed * (size_t)e->bs;
        r->last_hash = kv_chain_hash(r->last_hash, t, e->bs);
        kv_register(&e->kv, r->blocks[r->n_hashed], r->last_hash, t);
        r->n_hashed++;
    }
}

/* engine_step once the ranks stopped: the compression batch in flight ends (its queues hold no
 * collective), then every request ends with the failure. */
static int step_stopped(engine *e) {
    poll_compressions(e, true);
    tp_stopped_err(e);
    char msg[768];
    snprintf(msg, sizeof msg, "%s", err_msg());
    while (e->running.n)
        finish(e, e->running.head, ENGINE_FINISH_ERROR, ZP_ESTATE, msg);
    while (e->waiting.n)
        finish(e, e->waiting.head, ENGINE_FINISH_ERROR, ZP_ESTATE, msg);
    return 0;
}

int engine_step(engine *e) {
    if (e->tp_rc) return step_stopped(e);
    double t0 = now_s();
    e->in_step = true;
    schedule(e);
    if (e->n_sched == 0 && e->cmp_n) { /* everything runnable waits on the batch in flight */
        poll_compressions(e, true);
        schedule(e);
    }
    if (kv_used_count(&e->kv) > e->st.blocks_peak) e->st.blocks_peak = kv_used_count(&e->kv);
    if (e->n_sched == 0 && e->running.n == 0 && e->waiting.n > 0) {
        /* Nothing can run although the pool is idle: the head request cannot fit at all. */
        int32_t i = e->waiting.head;
        err_set(ZP_ELIMIT, "request needs more KV blocks than the pool's %d", e->kv.num_blocks);
        finish(e, i, ENGINE_FINISH_ERROR, ZP_ELIMIT, err_msg());
    }
    if (e->n_sched > 0) {
        build_batch(e);
        double f0 = now_s();
        int rc = e->tp ? tp_forward(e->tp, &e->m) : model_forward(&e->m);
        e->st.forward_seconds += now_s() - f0;
        if (rc) {
            /* A backend failure fails the step's requests, never the engine (under tensor
             * parallelism it stops the ranks: tp_stopped). */
            tp_stopped(e, rc);
            const char *msg = err_msg();
            for (int32_t s = 0; s < e->n_sched; s++)
                finish(e, e->sched[s].r, ENGINE_FINISH_ERROR, rc, msg);
            e->n_sched = 0;
        }
    }
    int32_t row = 0;
    for (int32_t s = 0; s < e->n_sched; s++) {
        int32_t i = e->sched[s].r;
        req *r = &e->reqs[i];
        r->n_computed += e->sched[s].take;
        r->kv_len += e->sched[s].take;
        if (e->kv.prefix_cache && !r->compressed) register_blocks(e, r);
        if (r->n_computed < r->n_tok) {
            e->st.prompt_tokens += e->sched[s].take;
            continue;
        }
        e->st.prompt_tokens += e->sched[s].take - 1;
        float lp = 0;
        int32_t tok, top1 = -1;
        if (r->forced) {
            const float *logits = e->m.host_logits + (size_t)row++ * (size_t)e->mc.vocab;
            tok = r->forced[r->n_tok - r->n_prompt];
            lp = forced_logprob(logits, e->n_valid, tok, &top1);
        } else if (e->m.batch.want_ids) { /* argmax or the backend's sampler chose it */
            tok = e->m.host_ids[row];
            if (tok < 0)
                tok = zp_sample_error(tok, row);
            else if (r->logprobs && e->be->sample)
                lp = e->m.host_logprobs[row];
            row++;
        } else {
            float *logits = e->m.host_logits + (size_t)row++ * (size_t)e->mc.vocab;
            tok = sampler_sample(&e->smp, &r->sp, logits, r->tok, r->n_prompt, r->tok + r->n_prompt,
                                 r->n_tok - r->n_prompt, r->logprobs ? &lp : NULL);
        }
        if (tok < 0) {
            finish(e, i, ENGINE_FINISH_ERROR, tok, err_msg());
            continue;
        }
        r->tok[r->n_tok++] = tok;
        e->st.completion_tokens++;
        engine_event ev = {.req_id = r->id,
                           .user_tag = r->user_tag,
                           .token = tok,
                           .logprob = lp,
                           .top1 = top1,
                           .finish = ENGINE_RUNNING};
        e->out(e->user, &ev);
        int32_t gen = r->n_tok - r->n_prompt;
        if (!r->forced && is_stop(e, r, tok))
            finish(e, i, ENGINE_FINISH_STOP, 0, NULL);
        else if (gen >= r->sp.max_tokens || r->n_tok >= e->max_model_len)
            finish(e, i, ENGINE_FINISH_LENGTH, 0, NULL);
    }
    /* Cancellations requested from inside callbacks (requests that finished meanwhile
     * were freed and are skipped). */
    for (int32_t i = 0; e->n_cancel_pending > 0 && i < e->nreqs; i++) {
        if (!e->reqs[i].cancel_pending || e->reqs[i].compressing) continue;
        e->reqs[i].cancel_pending = false;
        e->n_cancel_pending--;
        if (e->reqs[i].state != RQ_FREE) finish(e, i, ENGINE_FINISH_CANCELLED, 0, NULL);
    }
    e->in_step = false;
    e->st.steps++;
    e->st.busy_seconds += now_s() - t0;
    return e->running.n + e->waiting.n;
}

void engine_get_stats(const engine *e, engine_stats *s) {
    *s = e->st;
    s->graph_steps = e->m.graph_steps;
    s->running = e->running.n;
    s->waiting = e->waiting.n;
    s->blocks_total = e->kv.num_blocks;
    s->blocks_free = kv_free_count(&e->kv);
    s->blocks_used = kv_used_count(&e->kv);
    s->tokens_per_s = s->busy_seconds > 0 ? (double)s->completion_tokens / s->busy_seconds : 0;
}

/* ---- introspection ---- */

backend *engine_backend(const engine *e) {
    return e->be;
}

static int broken(const char *what, int32_t a, int32_t b) {
    return err_set(ZP_ESTATE, "engine invariant broken: %s (%d vs %d)", what, a, b);
}

static int check_list(const engine *e, const rq_list *l, rq_state st, const char *name) {
    int32_t n = 0, prev = -1;
    for (int32_t i = l->head; i >= 0; prev = i, i = e->reqs[i].next) {
        if (e->reqs[i].state != st) return broken(name, e->reqs[i].state, st);
        if (e->reqs[i].prev != prev) return broken("list back link", e->reqs[i].prev, prev);
        if (++n > e->nreqs) return broken("list cycle", n, e->nreqs);
    }
    if (n != l->n || prev != l->tail) return broken(name, n, l->n);
    return 0;
}

int engine_check(const engine *e) {
    const kv_pool *kv = &e->kv;
    int rc;
    if ((rc = check_list(e, &e->running, RQ_RUNNING, "running list")) ||
        (rc = check_list(e, &e->waiting, RQ_WAITING, "waiting list")))
        return rc;
    if (e->running.n > e->cf.max_num_seqs)
        return broken("running > max_num_seqs", e->running.n, (int32_t)e->cf.max_num_seqs);
    int64_t refs = 0, owned = 0;
    int32_t used = 0, nfree = 0, live = 0;
    for (int32_t b = 0; b < kv->num_blocks; b++) {
        if (kv->ref[b] < 0) return broken("negative ref count", b, kv->ref[b]);
        refs += kv->ref[b];
        used += kv->ref[b] > 0;
    }
    for (int32_t b = kv->free_head; b >= 0; b = kv->next[b]) {
        if (kv->ref[b] != 0) return broken("free block with references", b, kv->ref[b]);
        if (++nfree > kv->num_blocks) return broken("free list cycle", nfree, kv->num_blocks);
    }
    if (nfree != kv->nfree || used != kv->num_blocks - kv->nfree)
        return broken("free list count", nfree, kv->nfree);
    for (int32_t i = 0; i < e->nreqs; i++) {
        const req *r = &e->reqs[i];
        if (r->state == RQ_FREE) continue;
        live++;
        owned += r->n_blocks;
        if (r->n_computed > r->n_tok || r->n_tok > e->max_model_len)
            return broken("token counts", r->n_computed, r->n_tok);
        if (r->compressed ? r->kv_len > r->n_computed : r->kv_len != r->n_computed)
            return broken("kv_len vs n_computed", r->kv_len, r->n_computed);
        if (r->compressed && r->n_blocks > r->budget + 1)
            return broken("compressed request over its budget", r->n_blocks, r->budget + 1);
        if (r->cmp && r->kv_len > compress_point(e, r))
            return broken("request past its compression point", r->kv_len, compress_point(e, r));
        if (r->state == RQ_WAITING && r->n_blocks != 0)
            return broken("waiting request holds blocks", i, r->n_blocks);
        if (r->state == RQ_RUNNING && r->n_blocks != (r->kv_len + e->bs - 1) / e->bs)
            return broken("block table does not match kv_len", r->n_blocks, r->kv_len);
        for (int32_t j = 0; j < r->n_blocks; j++) {
            if (r->blocks[j] < 0 || r->blocks[j] >= kv->num_blocks || kv->ref[r->blocks[j]] < 1)
                return broken("request holds a free or bad block", i, r->blocks[j]);
            for (int32_t k = 0; k < j; k++)
                if (r->blocks[k] == r->blocks[j])
                    return broken("block twice in one table", i, r->blocks[j]);
        }
    }
    if (refs != owned)
        return broken("sum of ref counts != blocks held", (int32_t)refs, (int32_t)owned);
    if (live + e->nfree_slots != e->nreqs)
        return broken("request slots", live + e->nfree_slots, e->nreqs);
    if (live != e->running.n + e->waiting.n)
        return broken("live requests", live, e->running.n + e->waiting.n);
    return 0;
}

int engine_debug_block(engine *e, int32_t block, int32_t *ref, uint64_t *contents) {
    if (block < 0 || block >= e->kv.num_blocks) return err_set(ZP_EINVAL, "no block %d", block);
    *ref = e->kv.ref[block];
    size_t per_layer = /* rank 0's kv heads (the whole model at TP 1) */
        model_block_bytes(&e->m.cfg, e->bs, e->m.dims.kv_dtype, false) / (2 * (size_t)e->mc.layers);
    uint8_t buf[1 << 14];
    XXH64_state_t st;
    XXH64_reset(&st, 0);
    for (int l = 0; l < e->mc.layers; l++) {
        be_ptr bases[2] = {e->m.layers[l].kc, e->m.layers[l].vc};
        for (int kv = 0; kv < 2; kv++) {
            for (size_t off = 0; off < per_layer; off += sizeof buf) {
                size_t n = per_layer - off < sizeof buf ? per_layer - off : sizeof buf;
                int rc = e->be->download(e->be, buf,
                                         bases[kv] + (be_ptr)((size_t)block * per_layer + off), n);
                if (!rc) rc = e->be->sync(e->be); /* the bytes are in buf once synced */
                if (rc) return rc;
                XXH64_update(&st, buf, n);
            }
        }
    }
    *contents = XXH64_digest(&st);
    return 0;
}
