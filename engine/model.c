/* model: the forward pass over backend ops (see model.h). */
#include "engine/model.h"

#include "arena/err.h"
#include "drv/attn_tiles.h"

#include <math.h>
#include <string.h>
#include <time.h>

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t al(size_t v) {
    return (v + 255) & ~(size_t)255;
}

size_t model_block_bytes(const model_config *c, int32_t block_size, zp_dtype kv_dtype,
                         bool scores) {
    size_t per_token = (size_t)c->kv_heads * (2 * (size_t)c->head_dim * zp_dtype_size(kv_dtype) +
                                              (scores ? sizeof(float) : 0));
    return (size_t)c->layers * (size_t)block_size * per_token;
}

size_t model_slot_bytes(const model_config *c, int32_t qcl) {
    return (size_t)c->layers * (size_t)qcl * (size_t)c->heads * (size_t)c->head_dim * sizeof(float);
}

static size_t meta_words(const model_dims *d) {
    return 8 + 9 * (size_t)d->max_tokens + (size_t)d->max_logits +
           (size_t)d->max_seqs * (size_t)d->max_blocks;
}

static size_t cmeta_words(const model_dims *d) {
    return 4 + 7 * (size_t)d->cmp_jobs + 2 * (size_t)d->cmp_jobs * (size_t)d->max_blocks;
}

/* Rows of the compression scratch: every layer's slab of (job, kv head) rows. */
static size_t cmp_rows(const model_config *c, const model_dims *d) {
    return (size_t)c->layers * (size_t)d->cmp_jobs * (size_t)c->kv_heads;
}

size_t model_cmp_scratch_bytes(const model_config *c, const model_dims *d) {
    if (!d->cmp_jobs) return 0;
    size_t rows = cmp_rows(c, d);
    return al(rows * (size_t)d->cmp_max_pos * 4) + al(rows * (size_t)d->cmp_max_pos * 8) +
           al(rows * (size_t)d->cmp_max_keep * 4) + al(cmeta_words(d) * 4) +
           al(3 * (size_t)c->layers * 8);
}

static size_t tensor_bytes(const tensor *t) {
    if (!t->data) return 0;
    size_t n = zp_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

void model_rope_inv_freq(const model_config *c, float *out) {
    int half = c->head_dim / 2;
    for (int j = 0; j < half; j++) {
        /* As HF: base ** (arange(0, dim, 2) / dim) in f32, then the reciprocal. */
        float e = (float)(2 * j) / (float)c->head_dim;
        float inv = 1.0f / powf((float)c->rope_theta, e);
        if (c->rope == ROPE_LLAMA3) {
            double factor = c->rope_factor, lo = c->rope_low_freq_factor,
                   hi = c->rope_high_freq_factor, old = c->rope_orig_max_pos;
            double wavelen = 2 * M_PI / inv, low_wl = old / lo, high_wl = old / hi;
            double v = inv;
            if (wavelen > low_wl) v = inv / factor;
            if (!(wavelen < high_wl) && !(wavelen > low_wl)) {
                double smooth = (old / wavelen - lo) / (hi - lo);
                v = (1 - smooth) * (inv / factor) + smooth * inv;
            }
            inv = (float)v;
        }
        if (c->rope_factors) inv /= c->rope_factors[j]; /* as llama.cpp applies rope_freqs */
        out[j] = inv;
    }
}

/* The one walk over every buffer the model takes from the backend: weights (when the backend
 * copies them), activations, logits, the KV and score caches, compression scratch and batch
 * metadata; and the one walk over its host staging (place_staging). model_device_bytes() and
 * model_host_bytes() run them counting, model_init() carving, so the reservations and the
 * carving cannot disagree. Every buffer takes al(bytes) at 256-byte alignment, so the totals
 * are exact for reservations that start aligned. */
typedef struct carver {
    backend *be;
    bool carve; /* false: count only */
    size_t bytes;
} carver;

static int place(carver *cv, be_ptr *out, size_t bytes, const char *what) {
    cv->bytes += al(bytes);
    *out = 0;
    return cv->carve ? cv->be->alloc(cv->be, al(bytes), 256, out, what) : 0;
}

static int place_host(carver *cv, void **out, size_t bytes, const char *what) {
    cv->bytes += al(bytes);
    *out = NULL;
    return cv->carve ? cv->be->alloc_host(cv->be, bytes, out, what) : 0;
}

static int place_weight(carver *cv, const tensor *t, be_w *out) {
    out->t = t->dtype;
    out->p = 0;
    if (!t->data) return 0;
    size_t n = tensor_bytes(t) / zp_dtype_size(t->dtype);
    cv->bytes += al(cv->be->weight_bytes(cv->be, t->dtype, n));
    return cv->carve ? cv->be->map_weight(cv->be, t->data, t->dtype, n, &out->p, &out->t,
                                          t->name ? t->name : "weight")
                     : 0;
}

/* A view of rows [r0, r0 + rows) of a tensor (a 1-D one: elements), or t itself when absent. */
static tensor rows_of(const tensor *t, int r0, int rows) {
    tensor v = *t;
    if (!t->data) return v;
    size_t width = t->ndim == 2 ? (size_t)t->shape[1] : 1;
    v.data = (const char *)t->data + (size_t)r0 * width * zp_dtype_size(t->dtype);
    v.shape[0] = rows;
    return v;
}

/* A linear layer of up to three weights (with their biases) fused row-wise, reading columns
 * [c0, c0 + k) of every weight row (a row-parallel rank's slice; c0 0 and k the full row
 * otherwise). dev: a weight already placed (tied LM head), used instead of w[0]. */
static int place_linear(carver *cv, be_linear *out, const tensor *const *w, const tensor *const *b,
                        int n, const be_w *dev, int max_rows, zp_dtype out_t, int c0, int k) {
    be_part parts[BE_LINEAR_PARTS];
    size_t wb = 0, bias_rows = 0, rows = 0;
    zp_dtype bt = ZP_F32;
    for (int i = 0; i < n; i++) {
        int full = (int)w[i]->shape[1];
        size_t elems = (size_t)w[i]->shape[0] * (size_t)k;
        parts[i] = (be_part){
            .w = dev ? NULL : (const char *)w[i]->data + (size_t)c0 * zp_dtype_size(w[i]->dtype),
            .dev = dev ? dev->p : 0,
            .wt = dev ? dev->t : w[i]->dtype,
            .rows = (int32_t)w[i]->shape[0],
            .ld = full != k ? full : 0};
        if (!dev) wb += cv->be->weight_bytes(cv->be, w[i]->dtype, elems);
        rows += (size_t)w[i]->shape[0];
        if (b && b[i]->data) {
            parts[i].bias = b[i]->data;
            parts[i].bt = bt = b[i]->dtype;
            bias_rows = rows; /* a fused bias covers every part (zeros where a part has none) */
        }
    }
    cv->bytes += al(wb) + al(bias_rows ? cv->be->weight_bytes(cv->be, bt, rows) : 0);
    return cv->carve ? cv->be->linear_init(cv->be, out, parts, n, k, max_rows, out_t,
                                           w[0]->name ? w[0]->name : "linear")
                     : 0;
}

/* The rank's shard of the weights (engine/shard.h; all of them at TP 1): row slices of the
 * column-parallel layers and the vocabulary, column slices of the row-parallel ones, which also
 * get their K segments. c: the full config. */
static int place_weights(carver *cv, model *m, const model_config *c, const model_weights *w,
                         const model_dims *d, const shard *sh) {
    int rc;
    zp_dtype act = cv->be->act_dtype;
    int D = c->head_dim, H = c->hidden;
    tensor embed = rows_of(&w->embed, sh->v0, sh->vocab),
           lm = rows_of(&w->lm_head, sh->v0, sh->vocab);
    if ((rc = place_weight(cv, &embed, &m->embed)) ||
        (rc = place_weight(cv, &w->final_norm, &m->final_norm)))
        return rc;
    const tensor *head[] = {&lm};
    bool tied = w->lm_head.data == w->embed.data; /* stored once */
    if ((rc = place_linear(cv, &m->lm_head, head, NULL, 1, tied ? &m->embed : NULL, d->max_logits,
                           ZP_F32, 0, H)))
        return rc;
    model_layer scratch;
    for (int l = 0; l < c->layers; l++) {
        const layer_weights *lw = &w->layers[l];
        model_layer *ml = cv->carve ? &m->layers[l] : &scratch;
        int q0 = sh->q0 * D, nq = sh->heads * D, k0 = sh->kv0 * D, nk = sh->kv_heads * D;
        tensor q = rows_of(&lw->q, q0, nq), k = rows_of(&lw->k, k0, nk),
               v = rows_of(&lw->v, k0, nk), qb = rows_of(&lw->q_bias, q0, nq),
               kb = rows_of(&lw->k_bias, k0, nk), vb = rows_of(&lw->v_bias, k0, nk),
               gate = rows_of(&lw->gate, sh->i0, sh->inter),
               up = rows_of(&lw->up, sh->i0, sh->inter);
        const tensor *qkv[] = {&q, &k, &v}, *qkvb[] = {&qb, &kb, &vb};
        const tensor *o[] = {&lw->o}, *gu[] = {&gate, &up}, *down[] = {&lw->down};
        if ((rc = place_weight(cv, &lw->in_norm, &ml->in_norm)) ||
            (rc = place_weight(cv, &lw->post_norm, &ml->post_norm)) ||
            (rc = place_weight(cv, &lw->q_norm, &ml->qn)) ||
            (rc = place_weight(cv, &lw->k_norm, &ml->kn)) ||
            (rc = place_linear(cv, &ml->qkv, qkv, qkvb, 3, NULL, d->max_tokens, act, 0, H)) ||
            (rc = place_linear(cv, &ml->o, o, NULL, 1, NULL, d->max_tokens, act, q0, nq)) ||
            (rc = place_linear(cv, &ml->gu, gu, NULL, 2, NULL, d->max_tokens, act, 0, H)) ||
            (rc = place_linear(cv, &ml->down, down, NULL, 1, NULL, d->max_tokens, act, sh->i0,
                               sh->inter)))
            return rc;
        ml->o.k_segs = sh->o_segs, ml->down.k_segs = sh->down_segs;
    }
    return 0;
}

static int place_buffers(carver *cv, model *m, const model_config *c, const model_dims *d) {
    size_t T = (size_t)d->max_tokens, H = (size_t)c->hidden, D = (size_t)c->head_dim;
    size_t qd = (size_t)c->heads * D, kd = (size_t)c->kv_heads * D, I = (size_t)c->intermediate;
    size_t f = sizeof(float), L = (size_t)d->max_logits, a = zp_dtype_size(cv->be->act_dtype);
    int rc;
    if ((rc = place(cv, &m->x, T * H * f, "activations")) ||
        (rc = place(cv, &m->xn, T * H * a, "activations")) ||
        (rc = place(cv, &m->qkv, T * (qd + 2 * kd) * a, "activations")) ||
        (rc = place(cv, &m->q, T * qd * a, "activations")) ||
        (rc = place(cv, &m->att, T * qd * a, "activations")) ||
        (rc = place(cv, &m->gu, T * 2 * I * a, "activations")) ||
        (rc = place(cv, &m->h, T * I * a, "activations")) ||
        (rc = place(cv, &m->sel, L * H * a, "activations")) ||
        (rc = place(cv, &m->logits, L * (size_t)c->vocab * f, "logits")) ||
        (m->sh.size > 1 &&
         (rc = place(cv, &m->logits_piece, L * (size_t)m->sh.vocab * f, "logits (own rows)"))) ||
        (rc = place(cv, &m->ids, L * 4, "sampled ids")) ||
        (rc = place(cv, &m->inv_freq, D / 2 * f, "rope")))
        return rc;
    if (cv->be->sample &&
        ((rc = place(cv, &m->smeta, L * (sizeof(zp_sample_params) + sizeof(zp_sample_seat_job)),
                     "sampling")) ||
         (rc = place(cv, &m->shist, L * (size_t)d->max_blocks * (size_t)d->block_size * 4,
                     "sampling")) ||
         (rc = place(cv, &m->logprobs, L * 4, "sampling"))))
        return rc;
    size_t layer_cache = (size_t)d->num_blocks *
                         model_block_bytes(c, d->block_size, d->kv_dtype, false) /
                         (2 * (size_t)c->layers);
    size_t layer_scores = (size_t)d->num_blocks * (size_t)d->block_size * (size_t)c->kv_heads * 4;
    model_layer scratch;
    for (int l = 0; l < c->layers; l++) {
        model_layer *ml = cv->carve ? &m->layers[l] : &scratch;
        if ((rc = place(cv, &ml->kc, layer_cache, "KV cache")) ||
            (rc = place(cv, &ml->vc, layer_cache, "KV cache")) ||
            (d->cmp_jobs && (rc = place(cv, &ml->cc, layer_scores, "score cache"))))
            return rc;
    }
    if (d->cmp_jobs) {
        size_t rows = cmp_rows(c, d);
        if ((rc = place(cv, &m->qc, (size_t)d->qcache_slots * model_slot_bytes(c, d->qcl),
                        "query cache")) ||
            (rc =
                 place(cv, &m->scores, rows * (size_t)d->cmp_max_pos * 4, "compression scratch")) ||
            (rc = place(cv, &m->work, rows * (size_t)d->cmp_max_pos * 8, "compression scratch")) ||
            (rc = place(cv, &m->keep, rows * (size_t)d->cmp_max_keep * 4, "compression scratch")) ||
            (rc = place(cv, &m->cmeta, cmeta_words(d) * 4, "compression metadata")) ||
            (rc = place(cv, &m->ctab, 3 * (size_t)c->layers * 8, "compression layer tables")))
            return rc;
    }
    return place(cv, &m->meta, meta_words(d) * 4, "batch metadata");
}

/* Host staging, each piece copied to or from the backend every step (pinned on CUDA): the
 * batch metadata, the sampling parameters and seat jobs with the ids they read, the logits or
 * ids and logprobs that come back, and the compression jobs. */
static int place_staging(carver *cv, model *m, const model_config *c, const model_dims *d) {
    size_t L = (size_t)d->max_logits, hist = L * (size_t)d->max_blocks * (size_t)d->block_size;
    void *meta, *logits, *ids, *sp = NULL, *hi = NULL, *lp = NULL, *cmeta = NULL;
    int rc;
    /* the metadata uploaded each step, then the prompt flags read on the host only */
    if ((rc = place_host(cv, &meta, (meta_words(d) + (size_t)d->max_tokens) * 4,
                         "batch staging")) ||
        (rc = place_host(cv, &logits, L * (size_t)c->vocab * sizeof(float), "host logits")) ||
        (rc = place_host(cv, &ids, L * 4, "host ids")))
        return rc;
    if (cv->be->sample &&
        ((rc = place_host(cv, &sp, L * (sizeof(zp_sample_params) + sizeof(zp_sample_seat_job)),
                          "sampling staging")) ||
         (rc = place_host(cv, &hi, hist * 4, "sampling staging")) ||
         (rc = place_host(cv, &lp, L * 4, "host logprobs"))))
        return rc;
    if (d->cmp_jobs && (rc = place_host(cv, &cmeta, cmeta_words(d) * 4, "compression staging")))
        return rc;
    void *rec = NULL, *orc = NULL, *sl = NULL; /* the oracle baseline's host arrays */
    if (cv->be->attn_record &&
        ((rc = place_host(cv, &rec, (size_t)d->max_tokens * sizeof(void *), "attention records")) ||
         (d->cmp_jobs &&
          ((rc = place_host(cv, &orc, (size_t)d->cmp_jobs * sizeof(void *), "oracle tables")) ||
           (rc = place_host(cv, &sl, (size_t)d->cmp_jobs * 4, "oracle lengths"))))))
        return rc;
    m->batch.rec = rec, m->cjobs.oracle = orc, m->cjobs.seq_len = sl;
    m->host_meta = meta, m->host_logits = logits, m->host_ids = ids, m->host_logprobs = lp;
    m->batch.sparams = sp, m->batch.hist = hi, m->host_cmeta = cmeta;
    return 0;
}

/* The rank's shard (the whole model without a communicator) and its view of the config. */
static int plan_shard(const model_config *c, const model_dims *d, shard *sh, model_config *local) {
    int rc = shard_plan(sh, c, d->comm ? d->comm->rank : 0, d->comm ? d->comm->size : 1);
    if (!rc) shard_config(sh, c, local);
    return rc;
}

size_t model_device_bytes(const model_config *c, const model_weights *w, const model_dims *d,
                          backend *be) {
    model scratch;
    memset(&scratch, 0, sizeof scratch);
    model_config local;
    if (plan_shard(c, d, &scratch.sh, &local)) return 0;
    carver cv = {.be = be, .carve = false};
    place_weights(&cv, &scratch, c, w, d, &scratch.sh);
    place_buffers(&cv, &scratch, &local, d);
    return cv.bytes;
}

size_t model_host_bytes(const model_config *c, const model_dims *d, backend *be) {
    model scratch;
    memset(&scratch, 0, sizeof scratch);
    model_config local;
    if (plan_shard(c, d, &scratch.sh, &local)) return 0;
    carver cv = {.be = be, .carve = false};
    place_staging(&cv, &scratch, &local, d);
    return cv.bytes;
}

/* What tensor parallelism needs beyond the shard's arithmetic (engine/shard.h). */
static int check_tp(const model *m, const model_dims *d) {
    const shard *sh = &m->sh;
    if (sh->size == 1) return 0;
    if (d->cmp_jobs && sh->kv_heads * sh->size > m->full_kv_heads)
        return err_set(ZP_EUNSUP,
                       "model: compression with kv heads replicated over ranks (%d kv heads, "
                       "tensor_parallel_size %d): the ranks sharing a kv head would score it "
                       "from different query heads; lower tensor_parallel_size to at most %d",
                       m->full_kv_heads, sh->size, m->full_kv_heads);
    if (d->cmp_jobs && (d->cp.hq != sh->heads || d->cp.hkv != sh->kv_heads))
        return err_set(ZP_EINVAL,
                       "model: the compression parameters' heads (%d, %d kv) are not the rank's "
                       "(%d, %d kv)",
                       d->cp.hq, d->cp.hkv, sh->heads, sh->kv_heads);
    return 0;
}

static int capture_graphs(model *m);

int model_init(model *m, arena *a, backend *be, const model_config *c, const model_weights *w,
               const model_dims *d) {
    memset(m, 0, sizeof *m);
    m->dims = *d;
    m->be = be;
    m->comm = d->comm;
    m->full_kv_heads = c->kv_heads;
    int rc;
    if ((rc = plan_shard(c, d, &m->sh, &m->cfg)) || (rc = check_tp(m, d))) return rc;
    if (c->head_dim > 512 || c->head_dim % 2)
        return err_set(ZP_EUNSUP, "model: head_dim %d unsupported (even, at most 512)",
                       c->head_dim);
    _Static_assert(MODEL_EV_MARK + 3 <= MODEL_EV_STEP, "model events overlap");
    if (d->cmp_jobs && MODEL_EV_STEP + 2 * MODEL_STEP_RING > BE_EVENTS)
        return err_set(ZP_EUNSUP, "model: compression needs %d events, the backend has %d",
                       MODEL_EV_STEP + 2 * MODEL_STEP_RING, BE_EVENTS);
    m->layers = arena_alloc(a, sizeof(model_layer) * (size_t)c->layers, 64, "model layers");
    if (!m->layers) return ZP_ENOMEM;
    carver cv = {.be = be, .carve = true}, hv = {.be = be, .carve = true};
    double t0 = wall_seconds();
    if ((rc = place_weights(&cv, m, c, w, d, &m->sh)) || (rc = be->sync(be))) return rc;
    m->upload_seconds = wall_seconds() - t0;
    c = &m->cfg; /* from here on the rank's own heads, kv heads and intermediate rows */
    if ((rc = place_buffers(&cv, m, c, d)) || (rc = place_staging(&hv, m, c, d))) return rc;
    m->n_valid =
        d->n_valid > 0 && d->n_valid <= c->vocab ? d->n_valid : c->vocab; /* before capture */
    size_t T = (size_t)d->max_tokens, D = (size_t)c->head_dim, f = sizeof(float);
    if (d->cmp_jobs) {
        m->cmeta_words = cmeta_words(d);
        memset(m->host_cmeta, 0, m->cmeta_words * 4);
        int32_t *h = m->host_cmeta;
        be_ptr p = m->cmeta;
        model_cjobs *j = &m->cjobs;
        be_cjobs *bj = &m->bcj;
        bj->count = p, h += 4, p += 16; /* n_jobs for kernels (padded grids) */
#define CARVE(field, count) j->field = h, bj->field = p, h += (count), p += (be_ptr)(count) * 4
        CARVE(n_blocks, (size_t)d->cmp_jobs);
        CARVE(kv_len, (size_t)d->cmp_jobs);
        CARVE(n_keep, (size_t)d->cmp_jobs);
        CARVE(qslot, (size_t)d->cmp_jobs);
        CARVE(flags, (size_t)d->cmp_jobs);
        CARVE(protect, (size_t)d->cmp_jobs);
        CARVE(seed, (size_t)d->cmp_jobs);
        CARVE(src, (size_t)d->cmp_jobs * (size_t)d->max_blocks);
        CARVE(dst, (size_t)d->cmp_jobs * (size_t)d->max_blocks);
#undef CARVE
        bj->oracle = j->oracle, bj->seq_len = j->seq_len;
        bj->max_jobs = d->cmp_jobs;
        bj->max_blocks = d->max_blocks;
        bj->max_pos = d->cmp_max_pos;
        bj->max_keep = d->cmp_max_keep;
        /* the layer tables the compression ops read every layer's caches through */
        size_t L = (size_t)c->layers;
        uint64_t *tab = arena_alloc(a, 3 * L * 8, 64, "compression layer tables");
        if (!tab) return ZP_ENOMEM;
        for (size_t l = 0; l < L; l++)
            tab[l] = m->layers[l].kc, tab[L + l] = m->layers[l].vc,
            tab[2 * L + l] = m->layers[l].cc;
        if ((rc = be->upload(be, m->ctab, tab, 3 * L * 8))) return rc;
    }
    m->meta_words = meta_words(d);
    memset(m->host_meta, 0, m->meta_words * 4);
    if (be->sample) {
        model_batch *mb = &m->batch;
        mb->hist_cap = d->max_logits * d->max_blocks * d->block_size;
        memset(mb->sparams, 0,
               (sizeof(zp_sample_params) + sizeof(zp_sample_seat_job)) * (size_t)d->max_logits);
        mb->seat_jobs = (zp_sample_seat_job *)(mb->sparams + d->max_logits);
    }
    float *inv = arena_temp(a, D / 2 * f, 8, "rope");
    if (!inv) return ZP_ENOMEM;
    model_rope_inv_freq(c, inv);
    if ((rc = be->upload(be, m->inv_freq, inv, D / 2 * f))) return rc;

    /* Staging and device metadata share one layout, so one upload moves a step's metadata. */
    int32_t *h = m->host_meta;
    be_ptr p = m->meta;
    model_batch *b = &m->batch;
    be_batch *bb = &m->bb;
    bb->counts = be->counts = p, h += 8, p += 32;
#define CARVE(field, count) b->field = h, bb->field = p, h += (count), p += (be_ptr)(count) * 4
    CARVE(token_ids, T);
    CARVE(positions, T);
    CARVE(slots, T);
    CARVE(tok_seq, T);
    CARVE(tok_kv_idx, T);
    b->tok_qslot = h, m->tok_qslot = p, h += T, p += (be_ptr)T * 4;
    CARVE(qtile, 2 * (size_t)T);
    CARVE(dec_rows, T);
    CARVE(logit_rows, (size_t)d->max_logits);
    CARVE(block_tables, (size_t)d->max_seqs * (size_t)d->max_blocks);
#undef CARVE
    b->tok_prompt = m->host_meta + m->meta_words; /* past the upload: read on the host only */
    bb->max_blocks = d->max_blocks;
    if (!d->graphs || !be->capture_begin) return 0;
    t0 = wall_seconds();
    rc = capture_graphs(m);
    m->capture_seconds = wall_seconds() - t0;
    return rc;
}

/* Under tensor parallelism: buf[0 .. n) (type t) := its sum over the ranks; the first error
 * stays in comm_rc (model_forward returns it) and stops later collectives. */
static void all_reduce(model *m, be_ptr buf, size_t n, zp_dtype t) {
    if (m->comm && !m->comm_rc) m->comm_rc = m->comm->all_reduce_sum(m->comm, buf, n, t);
}

/* The ops of one step after its metadata is on the backend: n token rows, n_logits of them
 * with logits (or ids); bb's host fields size the grids. Under tensor parallelism every rank
 * runs them on its shard: the embedding rows of other ranks' tokens are -0.0f, so the sum over
 * the ranks is the owner's row; o_proj and down_proj give each rank's part of the sum over
 * their inner dimension, summed over the ranks before the residual add; the logits of the
 * rank's vocabulary rows are gathered on rank 0, which alone picks ids. */
static void forward_ops(model *m, int n, int n_logits, bool want_ids) {
    const model_config *c = &m->cfg;
    backend *be = m->be;
    be_batch *bb = &m->bb;
    int H = c->hidden, D = c->head_dim, Hq = c->heads, Hkv = c->kv_heads;
    int I = c->intermediate, bs = m->dims.block_size;
    float eps = (float)c->rms_eps;
    size_t nh = (size_t)n * (size_t)H;
    if (m->comm) {
        be->embed_shard(be, m->x, m->embed.p, m->embed.t, bb->token_ids, n, H, m->sh.v0,
                        m->sh.v0 + m->sh.vocab);
        all_reduce(m, m->x, nh, ZP_F32);
    } else {
        be->embed(be, m->x, m->embed.p, m->embed.t, bb->token_ids, n, H);
    }
    for (int l = 0; l < c->layers; l++) {
        const model_layer *L = &m->layers[l];
        /* layer 0 normalises the embedding; later layers first add the MLP branch in xn */
        be->add_rmsnorm(be, m->x, l ? m->xn : 0, m->xn, L->in_norm.p, L->in_norm.t, n, H, eps);
        be->linear(be, m->qkv, m->xn, &L->qkv, n);
        be->qkv_rope_store(be, m->q, m->qkv, L->qn.p, L->kn.p, L->qn.t, eps, bb->positions,
                           m->inv_freq, bb->slots, L->kc, L->vc, m->dims.kv_dtype, n, Hq, Hkv, D,
                           bs);
        if (m->qc) be->qcache_store(be, m->qc, m->q, bb, m->tok_qslot, l, &m->dims.cp);
        be->attention(be, m->att, m->q, L->kc, L->vc, m->dims.kv_dtype, bb, Hq, Hkv, D, bs,
                      1.0f / sqrtf((float)D));
        if (m->batch.n_rec)
            be->attn_record(be, m->batch.rec, l, m->q, L->kc, m->dims.kv_dtype, bb, Hq, Hkv, D, bs,
                            1.0f / sqrtf((float)D));
        /* xn <- o_proj(att); then resid x += xn and xn <- post_norm(x) */
        be->linear(be, m->xn, m->att, &L->o, n);
        all_reduce(m, m->xn, nh, be->act_dtype);
        be->add_rmsnorm(be, m->x, m->xn, m->xn, L->post_norm.p, L->post_norm.t, n, H, eps);
        be->linear(be, m->gu, m->xn, &L->gu, n);
        be->swiglu(be, m->h, m->gu, n, I);
        be->linear(be, m->xn, m->h, &L->down, n);
        all_reduce(m, m->xn, nh, be->act_dtype);
    }
    if (n_logits > 0) {
        be->add_rmsnorm(be, m->x, m->xn, m->xn, m->final_norm.p, m->final_norm.t, n, H, eps);
        be->gather_rows(be, m->sel, m->xn, bb->logit_rows, n_logits, H);
        if (m->comm) {
            be->linear(be, m->logits_piece, m->sel, &m->lm_head, n_logits);
            if (!m->comm_rc)
                m->comm_rc = m->comm->all_gather(m->comm, m->logits_piece, m->logits, n_logits,
                                                 c->vocab, c->vocab, ZP_F32, 0);
            if (m->sh.rank) return;
        } else {
            be->linear(be, m->logits, m->sel, &m->lm_head, n_logits);
        }
        if (want_ids && be->sample) {
            be->seat_init(be, m->smeta + (be_ptr)m->dims.max_logits * sizeof(zp_sample_params),
                          m->shist, n_logits, c->vocab);
            be->sample(be, m->ids, m->logprobs, m->logits, m->smeta, n_logits, m->n_valid,
                       c->vocab);
        } else if (want_ids) {
            be->argmax(be, m->ids, m->logits, n_logits, m->n_valid, c->vocab);
        }
    }
}

static int bucket_of(const int32_t *b, int32_t n, int32_t v) {
    for (int32_t i = 0; i < n; i++)
        if (v <= b[i]) return i;
    return -1;
}

/* Captures one graph per (batch bucket, length bucket) of decode steps: batch buckets are
 * powers of two up to the most rows a decode step can have, length buckets the attention's
 * split sizes times powers of two up to the longest context. Each bucket first runs once
 * eagerly with zero counts (every kernel exits at once; the GEMMs run on whatever the
 * buffers hold), so libraries load their kernels before any capture. */
static int capture_graphs(model *m) {
    backend *be = m->be;
    int32_t max_b = m->dims.max_seqs < m->dims.max_tokens ? m->dims.max_seqs : m->dims.max_tokens;
    if (max_b > m->dims.max_logits) max_b = m->dims.max_logits;
    int32_t max_len = m->dims.max_blocks * m->dims.block_size;
    for (int32_t v = 1;; v *= 2) {
        m->batch_bucket[m->n_batch_buckets++] = v < max_b ? v : max_b;
        if (v >= max_b) break;
    }
    for (int32_t v = 1024;; v *= 2) {
        m->len_bucket[m->n_len_buckets++] = v < max_len ? v : max_len;
        if (v >= max_len || m->n_len_buckets == 32) break;
    }
    if (m->n_batch_buckets * m->n_len_buckets > be->max_graphs) {
        int rc = err_set(ZP_ELIMIT,
                         "model: %d x %d CUDA graphs exceed the backend's %d; lower "
                         "max_num_seqs or max_model_len, or set cuda_graphs=false",
                         m->n_batch_buckets, m->n_len_buckets, be->max_graphs);
        m->n_batch_buckets = m->n_len_buckets = 0;
        return rc;
    }
    memset(m->host_meta, 0, m->meta_words * 4);
    int rc = be->upload(be, m->meta, m->host_meta, m->meta_words * 4);
    for (int32_t bi = 0; !rc && bi < m->n_batch_buckets; bi++) {
        int32_t B = m->batch_bucket[bi];
        for (int32_t li = 0; !rc && li < m->n_len_buckets; li++) {
            m->bb.n_tokens = m->bb.n_seqs = m->bb.n_logits = B;
            m->bb.max_kv_len = m->len_bucket[li];
            m->bb.n_qtiles = 0; /* decode graphs: every row in the decode kernel */
            m->bb.n_dec_rows = B;
            if (li == 0) {
                forward_ops(m, B, B, true);
                if ((rc = be->sync(be))) break;
            }
            if ((rc = be->capture_begin(be))) break;
            forward_ops(m, B, B, true);
            rc = be->capture_end(be, bi * m->n_len_buckets + li);
        }
    }
    if (rc) m->n_batch_buckets = m->n_len_buckets = 0;
    return rc;
}

/* The device time between mark `from` and event `ev`, in seconds (negative when ev came
 * first). */
static int since_mark(model *m, int from, int ev, double *sec) {
    float ms = 0;
    int rc = m->be->event_elapsed(m->be, MODEL_EV_MARK + from, ev, &ms);
    *sec = 1e-3 * ms;
    return rc;
}

/* Step ring: forward pass s records MODEL_EV_STEP + 2 * (s % MODEL_STEP_RING) at its start
 * and that + 1 at its end, on the compute queue. */
static int step_event(int64_t s, int end) {
    return MODEL_EV_STEP + 2 * (int)(s % MODEL_STEP_RING) + end;
}

int model_forward(model *m) {
    const model_config *c = &m->cfg;
    backend *be = m->be;
    model_batch *b = &m->batch;
    be_batch *bb = &m->bb;
    int n = b->n_tokens;
    if (n < 1 || n > m->dims.max_tokens || b->n_seqs > m->dims.max_seqs ||
        b->n_logits > m->dims.max_logits)
        return err_set(ZP_EINVAL,
                       "model: batch of %d tokens / %d seqs / %d logit rows exceeds "
                       "the plan",
                       n, b->n_seqs, b->n_logits);
    bb->n_tokens = n;
    bb->n_seqs = b->n_seqs;
    bb->n_logits = b->n_logits;
    bb->max_kv_len = 0;
    for (int i = 0; i < n; i++)
        if (b->tok_kv_idx[i] + 1 > bb->max_kv_len) bb->max_kv_len = b->tok_kv_idx[i] + 1;
    /* prompt rows become q-tiles of the prefill kernel (flags of padding rows cleared) */
    bb->n_qtiles = be->prefill_tiles ? attn_prefill_tiles(b->tok_prompt, b->tok_seq, n,
                                                          c->heads / c->kv_heads, b->qtile)
                                     : 0;
    bb->n_dec_rows = bb->n_qtiles ? attn_decode_rows(b->tok_prompt, n, b->dec_rows) : n;
    bool dev_sample = b->want_ids && be->sample && b->n_logits > 0;
    m->host_meta[4] = bb->n_qtiles;
    m->host_meta[0] = n, m->host_meta[1] = b->n_logits, m->host_meta[2] = b->n_seqs;
    m->host_meta[3] = dev_sample ? b->n_seat_jobs : 0;
    bool timed = m->dims.cmp_jobs > 0; /* the step ring, for compression overlap */
    int rc = timed ? be->event_record(be, step_event(m->fwd_steps, 0), BE_Q_COMPUTE) : 0;
    if (!rc) rc = be->upload(be, m->meta, m->host_meta, m->meta_words * 4);
    if (rc) return rc;
    if (dev_sample) {
        size_t L = (size_t)m->dims.max_logits;
        if (b->n_seat_jobs < 0 || b->n_seat_jobs > b->n_logits || b->n_hist < 0 ||
            b->n_hist > b->hist_cap)
            return err_set(ZP_EINVAL, "model: %d seat jobs over %d ids exceed the plan",
                           b->n_seat_jobs, b->n_hist);
        if ((rc = be->upload(be, m->smeta, b->sparams,
                             (size_t)b->n_logits * sizeof(zp_sample_params))) ||
            (b->n_seat_jobs &&
             (rc = be->upload(be, m->smeta + L * sizeof(zp_sample_params), b->seat_jobs,
                              (size_t)b->n_seat_jobs * sizeof(zp_sample_seat_job)))) ||
            (b->n_hist && (rc = be->upload(be, m->shist, b->hist, (size_t)b->n_hist * 4))))
            return rc;
    }
    int bi = -1, li = -1;
    if (m->n_batch_buckets && b->want_ids && b->n_seqs == n && b->n_logits == n &&
        !bb->n_qtiles) { /* graphs hold no prefill kernel */
        bi = bucket_of(m->batch_bucket, m->n_batch_buckets, n);
        li = bucket_of(m->len_bucket, m->n_len_buckets, bb->max_kv_len);
    }
    if (bi >= 0 && li >= 0) {
        if ((rc = be->graph_launch(be, bi * m->n_len_buckets + li))) return rc;
        m->graph_steps++;
    } else {
        forward_ops(m, n, b->n_logits, b->want_ids);
    }
    if (m->comm_rc) return m->comm_rc;
    if (b->n_logits > 0 && !m->sh.rank) { /* rank 0 alone has the gathered logits */
        if (b->want_ids) {
            rc = be->download(be, m->host_ids, m->ids, (size_t)b->n_logits * 4);
            if (!rc && dev_sample)
                rc = be->download(be, m->host_logprobs, m->logprobs, (size_t)b->n_logits * 4);
        } else {
            rc = be->download(be, m->host_logits, m->logits,
                              (size_t)b->n_logits * (size_t)c->vocab * sizeof(float));
        }
        if (rc) return rc;
    }
    if (timed && (rc = be->event_record(be, step_event(m->fwd_steps, 1), BE_Q_COMPUTE))) return rc;
    rc = be->sync_queue(be, BE_Q_COMPUTE); /* a compression batch may still be running */
    if (!rc && timed) m->fwd_steps++;
    return rc;
}

int model_compress_begin(model *m) {
    backend *be = m->be;
    const model_cjobs *j = &m->cjobs;
    const be_cparams *cp = &m->dims.cp;
    if (m->cmp_marks) return err_set(ZP_ESTATE, "model: a compression batch is already in flight");
    if (j->n_jobs < 1 || j->n_jobs > m->dims.cmp_jobs)
        return err_set(ZP_EINVAL, "model: %d compression jobs (plan: %d)", j->n_jobs,
                       m->dims.cmp_jobs);
    m->bcj.n_jobs = m->host_cmeta[0] = j->n_jobs;
    /* after the forward passes queued so far (they stored the K/V and queries it reads) */
    int rc = be->event_record(be, MODEL_EV_COMPUTED, BE_Q_COMPUTE);
    if (!rc) rc = be->event_wait(be, BE_Q_COMPRESS, MODEL_EV_COMPUTED);
    if (!rc) rc = be->use_queue(be, BE_Q_COMPRESS);
    if (rc) return rc;
    /* every layer in one call per op; marks bound the two phases */
    int L = m->cfg.layers;
    zp_dtype kvt = m->dims.kv_dtype;
    be_ptr kc = m->ctab, vc = kc + 8 * (be_ptr)L, cc = vc + 8 * (be_ptr)L;
    rc = be->upload(be, m->cmeta, m->host_cmeta, m->cmeta_words * 4);
    if (!rc) rc = be->event_record(be, MODEL_EV_MARK + 0, BE_Q_COMPRESS);
    if (!rc) {
        be->cmp_score(be, m->scores, m->qc, kc, cc, kvt, &m->bcj, 0, L, cp);
        be->cmp_redundancy(be, m->scores, kc, kvt, m->work, &m->bcj, 0, L, cp);
        be->cmp_select(be, m->keep, m->scores, m->work, &m->bcj, L, cp);
        rc = be->event_record(be, MODEL_EV_MARK + 1, BE_Q_COMPRESS);
    }
    if (!rc) {
        be->cmp_compact(be, kc, vc, cc, kvt, m->keep, &m->bcj, 0, L, cp);
        rc = be->event_record(be, MODEL_EV_MARK + 2, BE_Q_COMPRESS);
    }
    int back = be->use_queue(be, BE_Q_COMPUTE);
    if (!rc) rc = back;
    if (rc) { /* what was queued must finish before the staging or the jobs' blocks are reused */
        be->sync(be);
        return rc;
    }
    m->cmp_marks = 3;
    m->cmp_step0 = m->fwd_steps;
    return 0;
}

int model_compress_done(model *m) {
    if (!m->cmp_marks) return err_set(ZP_ESTATE, "model: no compression batch in flight");
    return m->be->event_done(m->be, MODEL_EV_MARK + m->cmp_marks - 1);
}

/* Adds the finished batch's phase times, its device time and the part of it that no forward
 * pass of the ring overlapped (the forward passes are serial on the compute queue, so their
 * overlaps with the batch add up). */
static int compress_times(model *m) {
    double score, end;
    int rc = since_mark(m, 0, MODEL_EV_MARK + 1, &score);
    if (!rc) rc = since_mark(m, 0, MODEL_EV_MARK + 2, &end);
    if (rc) return rc;
    m->score_seconds += score, m->compact_seconds += end - score, m->cmp_seconds += end;
    double covered = 0;
    int64_t first = m->fwd_steps - MODEL_STEP_RING;
    for (int64_t s = m->cmp_step0 > first ? m->cmp_step0 : first; s < m->fwd_steps; s++) {
        double a, b;
        if ((rc = since_mark(m, 0, step_event(s, 0), &a)) ||
            (rc = since_mark(m, 0, step_event(s, 1), &b)))
            return rc;
        a = a > 0 ? a : 0, b = b < end ? b : end;
        if (b > a) covered += b - a;
    }
    m->cmp_exposed_seconds += end - covered;
    return 0;
}

int model_compress_end(model *m) {
    if (!m->cmp_marks) return err_set(ZP_ESTATE, "model: no compression batch in flight");
    int rc = m->be->sync_queue(m->be, BE_Q_COMPRESS);
    m->cmp_marks = 0;
    return rc ? rc : compress_times(m);
}

int model_compress(model *m) {
    int rc = model_compress_begin(m);
    return rc ? rc : model_compress_end(m);
}
