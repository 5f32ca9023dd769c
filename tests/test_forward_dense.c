/* test_forward_dense: the paged forward pass (engine/model.c over the CPU backend) against an
 * independent dense reference written here from the model definitions: plain loops in
 * double precision, no paging, no backend. Random tiny Qwen3, Qwen2 and Llama models (made
 * with `zipage mkmodel`), GQA groups 1/2/4, bf16 and f32 weights.
 *
 * Checked: max |logit difference| <= 1e-4 for every prompt position; block sizes 1, 16 and
 * 256 with shuffled physical blocks; prompt lengths that are not multiples of the block size;
 * the prompt prefilled in one go, token by token, and in uneven chunks (all must match the
 * reference, and chunked/one-go must match each other to 1e-5).
 */
#include "arena/err.h"
#include "drv/backend.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct dense {
    const model_config *c;
    const model_weights *w;
    int n;
    double *K, *V; /* [layer][pos][Hkv*D] */
} dense;

static double ld(const tensor *t, size_t i) { return zp_load(t->data, t->dtype, i); }

static void d_rmsnorm(double *out, const double *x, const tensor *w, int dim, double eps) {
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / dim + eps);
    for (int i = 0; i < dim; i++) out[i] = x[i] * r * ld(w, (size_t)i);
}

static void d_linear(double *out, const double *x, const tensor *w, const tensor *b, int in,
                     int outd) {
    for (int o = 0; o < outd; o++) {
        double s = b && b->data ? ld(b, (size_t)o) : 0;
        for (int i = 0; i < in; i++) s += x[i] * ld(w, (size_t)o * (size_t)in + (size_t)i);
        out[o] = s;
    }
}

/* Inverse frequencies written from the HF definitions (default and llama3). */
static double d_inv_freq(const model_config *c, int j) {
    double inv = 1.0 / pow(c->rope_theta, (double)(2 * j) / c->head_dim);
    if (c->rope != ROPE_LLAMA3) return inv;
    double wl = 2 * M_PI / inv, lo_wl = c->rope_orig_max_pos / c->rope_low_freq_factor,
           hi_wl = c->rope_orig_max_pos / c->rope_high_freq_factor;
    if (wl < hi_wl) return inv;
    if (wl > lo_wl) return inv / c->rope_factor;
    double sm = (c->rope_orig_max_pos / wl - c->rope_low_freq_factor) /
                (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return (1 - sm) * inv / c->rope_factor + sm * inv;
}

static void d_rope(double *x, int heads, int D, int pos, const model_config *c) {
    for (int h = 0; h < heads; h++) {
        double *v = x + h * D;
        for (int j = 0; j < D / 2; j++) {
            /* f32 angle as HF computes it, then the rotation in double */
            float ang = (float)pos * (float)d_inv_freq(c, j);
            double cs = cos(ang), sn = sin(ang), a = v[j], b = v[j + D / 2];
            v[j] = a * cs - b * sn;
            v[j + D / 2] = b * cs + a * sn;
        }
    }
}

/* Logits of every position of ids[0..n) into out[n][vocab]. */
static void dense_forward(const model_config *c, const model_weights *w, const int32_t *ids, int n,
                          double *out) {
    int H = c->hidden, D = c->head_dim, Hq = c->heads, Hkv = c->kv_heads, I = c->intermediate;
    int qd = Hq * D, kd = Hkv * D, g = Hq / Hkv;
    double *x = calloc((size_t)n * H, sizeof *x), *xn = calloc((size_t)H, sizeof *x);
    double *q = calloc((size_t)n * qd, sizeof *x), *K = calloc((size_t)n * kd, sizeof *x);
    double *V = calloc((size_t)n * kd, sizeof *x), *att = calloc((size_t)qd, sizeof *x);
    double *o = calloc((size_t)H, sizeof *x), *gt = calloc((size_t)I, sizeof *x);
    double *up = calloc((size_t)I, sizeof *x), *sc = calloc((size_t)n, sizeof *x);
    double *tmp = calloc((size_t)D, sizeof *x);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < H; i++) x[(size_t)t * H + i] = ld(&w->embed, (size_t)ids[t] * H + (size_t)i);
    for (int l = 0; l < c->layers; l++) {
        const layer_weights *L = &w->layers[l];
        for (int t = 0; t < n; t++) {
            d_rmsnorm(xn, x + (size_t)t * H, &L->in_norm, H, c->rms_eps);
            d_linear(q + (size_t)t * qd, xn, &L->q, &L->q_bias, H, qd);
            d_linear(K + (size_t)t * kd, xn, &L->k, &L->k_bias, H, kd);
            d_linear(V + (size_t)t * kd, xn, &L->v, &L->v_bias, H, kd);
            if (c->qk_norm) {
                for (int h = 0; h < Hq; h++) {
                    memcpy(tmp, q + (size_t)t * qd + h * D, sizeof(double) * D);
                    d_rmsnorm(q + (size_t)t * qd + h * D, tmp, &L->q_norm, D, c->rms_eps);
                }
                for (int h = 0; h < Hkv; h++) {
                    memcpy(tmp, K + (size_t)t * kd + h * D, sizeof(double) * D);
                    d_rmsnorm(K + (size_t)t * kd + h * D, tmp, &L->k_norm, D, c->rms_eps);
                }
            }
            d_rope(q + (size_t)t * qd, Hq, D, t, c);
            d_rope(K + (size_t)t * kd, Hkv, D, t, c);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < Hq; h++) {
                const double *qq = q + (size_t)t * qd + h * D;
                int kh = h / g;
                double mx = -1e300, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double s = 0;
                    for (int j = 0; j < D; j++) s += qq[j] * K[(size_t)p * kd + kh * D + j];
                    sc[p] = s / sqrt((double)D);
                    if (sc[p] > mx) mx = sc[p];
                }
                for (int p = 0; p <= t; p++) sum += (sc[p] = exp(sc[p] - mx));
                for (int j = 0; j < D; j++) {
                    double a = 0;
                    for (int p = 0; p <= t; p++) a += sc[p] * V[(size_t)p * kd + kh * D + j];
                    att[h * D + j] = a / sum;
                }
            }
            d_linear(o, att, &L->o, NULL, qd, H);
            double *xt = x + (size_t)t * H;
            for (int i = 0; i < H; i++) xt[i] += o[i];
            d_rmsnorm(xn, xt, &L->post_norm, H, c->rms_eps);
            d_linear(gt, xn, &L->gate, NULL, H, I);
            d_linear(up, xn, &L->up, NULL, H, I);
            for (int i = 0; i < I; i++) gt[i] = gt[i] / (1 + exp(-gt[i])) * up[i];
            d_linear(o, gt, &L->down, NULL, I, H);
            for (int i = 0; i < H; i++) xt[i] += o[i];
        }
    }
    for (int t = 0; t < n; t++) {
        d_rmsnorm(xn, x + (size_t)t * H, &w->final_norm, H, c->rms_eps);
        d_linear(out + (size_t)t * c->vocab, xn, &w->lm_head, NULL, H, c->vocab);
    }
    free(x), free(xn), free(q), free(K), free(V), free(att), free(o), free(gt), free(up), free(sc);
    free(tmp);
}

/* Runs ids[0..n) through the paged model in chunks of the given sizes (cycled), with a
 * shuffled block table; returns logits of every position in out[n][vocab]. */
static void paged_forward(model *m, const int32_t *ids, int n, const int *chunks, int nchunks,
                          unsigned long long *rng, float *out) {
    int bs = m->dims.block_size, nb = (n + bs - 1) / bs;
    int32_t *table = m->batch.block_tables;
    /* distinct random physical blocks */
    for (int i = 0; i < nb; i++) {
        for (;;) {
            int32_t b = (int32_t)(test_rand_u64(rng) % (unsigned long long)m->dims.num_blocks);
            int dup = 0;
            for (int j = 0; j < i; j++) dup |= table[j] == b;
            if (!dup) {
                table[i] = b;
                break;
            }
        }
    }
    int done = 0, ci = 0;
    while (done < n) {
        int take = chunks[ci++ % nchunks];
        if (take > n - done) take = n - done;
        model_batch *b = &m->batch;
        for (int j = 0; j < take; j++) {
            int p = done + j;
            b->token_ids[j] = ids[p];
            b->positions[j] = p;
            b->tok_seq[j] = 0;
            b->tok_kv_idx[j] = p;
            b->tok_prompt[j] = 1;
            b->slots[j] = table[p / bs] * bs + p % bs;
            b->logit_rows[j] = j;
        }
        b->n_tokens = take;
        b->n_seqs = 1;
        b->n_logits = take;
        REQUIRE(model_forward(m) == 0);
        memcpy(out + (size_t)done * m->cfg.vocab, m->host_logits, sizeof(float) * (size_t)take * m->cfg.vocab);
        done += take;
    }
}

static int make_model(const char *dir, const char *arch, int heads, int kv_heads, const char *dtype,
                      int seed) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && %s/zipage mkmodel --arch %s --hidden 64 --layers 2 --heads %d "
             "--kv-heads %d --head-dim 16 --intermediate 96 --vocab 320 --seed %d --dtype %s "
             "--max-pos 4096 --out %s",
             dir, getenv("ZP_BUILD") ? getenv("ZP_BUILD") : "build", arch, heads, kv_heads, seed,
             dtype, dir);
    return system(cmd);
}

int main(void) {
    static const struct {
        const char *arch, *dtype;
        int heads, kv_heads;
    } cases[] = {
        {"qwen3", "f32", 4, 2}, {"qwen3", "bf16", 4, 1}, {"qwen2", "f32", 4, 4},
        {"qwen2", "bf16", 4, 2}, {"llama", "f32", 4, 1}, {"llama", "bf16", 8, 2},
    };
    static const int block_sizes[] = {1, 16, 256};
    arena a;
    REQUIRE(arena_init(&a, "test", (size_t)1 << 30) == 0);
    backend *be;
    REQUIRE(cpu_backend_create(&be, 2, 256, CPU_ISA_AUTO, CPU_PREC_F32) == 0);
    /* every model_init below carves from these: 18 models, ~0.1 MiB of host staging each */
    REQUIRE(be->reserve(be, (size_t)1 << 30, 8u << 20) == 0);
    unsigned long long rng = 42;
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/zp_test_dense_%d", (int)getpid());
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        REQUIRE(make_model(dir, cases[ci].arch, cases[ci].heads, cases[ci].kv_heads,
                           cases[ci].dtype, (int)ci + 7) == 0);
        model_config c;
        model_weights w;
        if (loader_config(&c, &a, dir) || loader_weights(&w, &c, &a, dir)) {
            fprintf(stderr, "load: %s\n", err_msg());
            return 1;
        }
        int n = 20 + (int)(test_rand_u64(&rng) % 30); /* never a multiple of 16 by design below */
        if (n % 16 == 0) n++;
        int32_t ids[64];
        for (int i = 0; i < n; i++) ids[i] = (int32_t)(test_rand_u64(&rng) % (unsigned)c.vocab);
        double *ref = calloc((size_t)n * c.vocab, sizeof *ref);
        float *got = calloc((size_t)n * c.vocab, sizeof *got);
        float *one = calloc((size_t)n * c.vocab, sizeof *one);
        dense_forward(&c, &w, ids, n, ref);
        for (size_t bi = 0; bi < 3; bi++) {
            model m;
            model_dims d = {.max_tokens = 64, .max_logits = 64, .max_seqs = 4,
                            .max_blocks = 64, .block_size = block_sizes[bi],
                            .num_blocks = 64 / block_sizes[bi] + 8, .kv_dtype = ZP_F32};
            if (model_init(&m, &a, be, &c, &w, &d)) {
                fprintf(stderr, "model_init: %s\n", err_msg());
                return 1;
            }
            static const int whole[] = {64}, single[] = {1}, uneven[] = {5, 1, 13, 2};
            const int *modes[] = {whole, single, uneven};
            const int nmodes[] = {1, 1, 4};
            for (int mi = 0; mi < 3; mi++) {
                paged_forward(&m, ids, n, modes[mi], nmodes[mi], &rng, got);
                double md = 0, mc = 0;
                for (size_t i = 0; i < (size_t)n * c.vocab; i++) {
                    double dd = fabs(got[i] - ref[i]);
                    if (dd > md) md = dd;
                    if (mi == 0) one[i] = got[i];
                    else if (fabs(got[i] - one[i]) > mc) mc = fabs(got[i] - one[i]);
                }
                CHECKF(md <= 1e-4, "%s %s Hq=%d Hkv=%d bs=%d mode=%d: max |dlogit| %.3g",
                       cases[ci].arch, cases[ci].dtype, cases[ci].heads, cases[ci].kv_heads,
                       block_sizes[bi], mi, md);
                CHECKF(mc <= 1e-5, "%s bs=%d mode=%d vs one-go: %.3g", cases[ci].arch,
                       block_sizes[bi], mi, mc);
                printf("%-6s %-4s Hq=%d Hkv=%d bs=%-3d mode=%d n=%d: max|d| vs dense %.2e, vs one-go %.2e\n",
                       cases[ci].arch, cases[ci].dtype, cases[ci].heads, cases[ci].kv_heads,
                       block_sizes[bi], mi, n, md, mc);
            }
        }
        free(ref), free(got), free(one);
        loader_close(&w);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    REQUIRE(system(cmd) == 0);
    be->destroy(be);
    arena_release(&a);
    return test_done("forward_dense");
}
