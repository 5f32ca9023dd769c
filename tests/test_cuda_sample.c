/* The sampling kernels of rtc_kernels/sample.cu against the CPU sampler (engine/sampler.c) on
 * fresh random logits, three steps per row so that the seats' penalty state carries over:
 * vocabulary 151,936 (151,669 valid) and 1,000 (997 valid), 40 rows of mixed parameters
 * (greedy with and without ties, temperature, top-k, top-p, min-p, their combinations,
 * repetition / presence / frequency penalties over prompt and completion histories, bf16-rounded
 * logits with many ties, a flat row with a nucleus of thousands, tiny temperature, NaN / +inf /
 * all-masked rows, a penalty without a seat) plus 4 padding rows past the device row count.
 * Outputs are poisoned first. Checks:
 * - the processed logits (penalties in place) are bit-identical to the CPU's;
 * - greedy tokens equal sampler_sample()'s; a seeded draw equals it too, except where the draw
 *   u * total lies within DRAW_TOL (relative) of the CDF boundary between the CPU's token and
 *   the GPU's (the kernel's sums are exact, the CPU's are rounded doubles); every such case is
 *   printed, any other difference fails;
 * - logprobs within 1e-4 of sampler_logprob() at the GPU's token, and not written unless asked;
 * - error rows give the CPU's error code through zp_sample_error();
 * - each seat's bitmap and counts equal those of its prompt + completion (with the sampled
 *   tokens appended);
 * - rows, logits and seats past the row count are untouched.
 * SKIP without a GPU. */
#include "drv/sample_abi.h"
#include "engine/sampler.h"
#include "tests/cuda_util.h"

#include <stdlib.h>

#define DRAW_TOL 1e-9
#define N_ROWS   40
#define CAP      (N_ROWS + 4)
#define N_STEPS  3
#define MAX_HIST 64
#define N_STRONG 8

static gpu G, *g = &G;
static unsigned long long seed = 0x5a3b1e;

enum { K_RAND, K_BF16, K_FLAT, K_TIE, K_NAN, K_INF, K_MASKED };

typedef struct spec {
    sampling_params p;
    int kind, want_lp, seat;
    int32_t strong[N_STRONG];
    int32_t hist[MAX_HIST]; /* prompt, then completion */
    int n_prompt, n_completion;
} spec;

/* temperature, top_k, top_p, min_p, repetition, presence, frequency, want_logprob, kind;
 * top_k -1 / -2 mean n_valid + 5 / n_valid - 1. */
static const struct {
    float t;
    int k;
    float p, minp, rep, pres, freq;
    int lp, kind;
} table[N_ROWS] = {
    {0, 0, 1, 0, 1, 0, 0, 1, K_RAND},         {0, 0, 1, 0, 1, 0, 0, 1, K_TIE},
    {0, 0, 1, 0, 1, 0, 0, 1, K_BF16},         {0, 0, 1, 0, 1.3f, 0, 0.5f, 1, K_RAND},
    {1, 0, 1, 0, 1, 0, 0, 1, K_RAND},         {0.7f, 0, 1, 0, 1, 0, 0, 0, K_RAND},
    {1.5f, 0, 1, 0, 1, 0, 0, 1, K_FLAT},      {0.3f, 0, 1, 0, 1, 0, 0, 1, K_BF16},
    {1, 1, 1, 0, 1, 0, 0, 1, K_RAND},         {0.8f, 5, 1, 0, 1, 0, 0, 1, K_RAND},
    {1, 50, 1, 0, 1, 0, 0, 1, K_RAND},        {1, 3, 1, 0, 1, 0, 0, 1, K_BF16},
    {1, 2000, 1, 0, 1, 0, 0, 1, K_FLAT},      {1, 0, 0.9f, 0, 1, 0, 0, 1, K_RAND},
    {0.7f, 0, 0.5f, 0, 1, 0, 0, 0, K_RAND},   {1, 0, 0.99f, 0, 1, 0, 0, 1, K_FLAT},
    {1, 0, 0.2f, 0, 1, 0, 0, 1, K_BF16},      {1, 0, 1, 0.05f, 1, 0, 0, 1, K_RAND},
    {1, 0, 1, 0.2f, 1, 0, 0, 1, K_FLAT},      {1.3f, 0, 1, 0.5f, 1, 0, 0, 1, K_RAND},
    {1, 50, 0.9f, 0.05f, 1, 0, 0, 1, K_RAND}, {1, 40, 0.8f, 0, 1, 0, 0, 1, K_FLAT},
    {1, 0, 0.95f, 0.1f, 1, 0, 0, 1, K_BF16},  {1, 20, 1, 0.3f, 1, 0, 0, 1, K_RAND},
    {1, 0, 1, 0, 1.3f, 0, 0, 1, K_RAND},      {1, 10, 1, 0, 0.8f, 0, 0, 1, K_RAND},
    {1, 0, 1, 0, 1, 0.5f, 0, 1, K_RAND},      {1, 0, 0.9f, 0, 1, 0, 0.7f, 1, K_RAND},
    {0.8f, 0, 1, 0, 1, 1, -1, 1, K_RAND},     {1, 50, 0.9f, 0.02f, 1.2f, 0.3f, 0.4f, 1, K_BF16},
    {1, 0, 1, 0, 1, 0, 0, 1, K_NAN},          {1, 0, 1, 0, 1, 0, 0, 1, K_INF},
    {1, 0, 1, 0, 1, 0, 0, 1, K_MASKED},       {1, 0, 1, 0, 1.3f, 0, 0, 1, K_RAND},
    {1, -1, 1, 0, 1, 0, 0, 1, K_RAND},        {1, -2, 1, 0, 1, 0, 0, 1, K_FLAT},
    {1e-3f, 0, 0.9f, 0, 1, 0, 0, 1, K_RAND},  {0, 0, 1, 0, 1, 0, 0, 1, K_NAN},
    {1, 0, 1, 0, 1, 0, 0, 1, K_RAND},         {2, 100, 1, 0, 1, 0, 0, 1, K_FLAT},
};
#define ROW_NOSEAT_PENALTY 33 /* a penalty without a seat: ZP_SAMPLE_ENOSEAT */
#define ROW_NOSEAT         38 /* no penalty, no seat */

static int32_t rand_id(int n) {
    return (int32_t)(test_rand_u64(&seed) % (unsigned)n);
}
static float rand_unit(void) {
    return (float)((double)(test_rand_u64(&seed) >> 11) * 0x1p-53);
}

static void make_spec(spec *s, int r, int n_valid) {
    memset(s, 0, sizeof *s);
    sampler_defaults(&s->p);
    int i = r < N_ROWS ? r : (int)(test_rand_u64(&seed) % 30); /* padding rows: any normal row */
    s->p.temperature = table[i].t;
    s->p.top_k = table[i].k == -1 ? n_valid + 5 : table[i].k == -2 ? n_valid - 1 : table[i].k;
    s->p.top_p = table[i].p;
    s->p.min_p = table[i].minp;
    s->p.repetition_penalty = table[i].rep;
    s->p.presence_penalty = table[i].pres;
    s->p.frequency_penalty = table[i].freq;
    s->p.seed = test_rand_u64(&seed);
    s->kind = table[i].kind;
    s->want_lp = table[i].lp;
    s->seat = r == ROW_NOSEAT_PENALTY || r == ROW_NOSEAT ? -1 : r;
    for (int j = 0; j < N_STRONG; j++)
        s->strong[j] = rand_id(n_valid);
    /* histories hit the strong tokens, some of them several times */
    s->n_prompt = 12 + (int)(test_rand_u64(&seed) % 9);
    s->n_completion = (int)(test_rand_u64(&seed) % 13);
    for (int j = 0; j < s->n_prompt + s->n_completion; j++)
        s->hist[j] = test_rand_u64(&seed) % 3 ? s->strong[rand_id(N_STRONG)] : rand_id(n_valid);
}

static void make_logits(float *row, const spec *s, int V, int n_valid) {
    for (int i = 0; i < V; i++) {
        float amp = s->kind == K_FLAT ? 1.f : 4.f;
        row[i] = (rand_unit() * 2 - 1) * amp;
    }
    if (s->kind != K_FLAT)
        for (int j = 0; j < N_STRONG; j++)
            row[s->strong[j]] = 4.f + 6.f * rand_unit();
    if (s->kind == K_BF16)
        for (int i = 0; i < V; i++)
            row[i] = zp_bf16_to_f32(zp_f32_to_bf16(row[i]));
    if (s->kind == K_TIE) row[s->strong[1]] = row[s->strong[0]] = 20.f;
    if (s->kind == K_NAN) row[rand_id(n_valid)] = NAN;
    if (s->kind == K_INF) row[rand_id(n_valid)] = INFINITY;
    if (s->kind == K_MASKED)
        for (int i = 0; i < n_valid; i++)
            row[i] = -INFINITY;
}

/* The largest distance, relative to the total, between the CPU's draw target and the CDF
 * boundaries separating its token from gpu_tok in its kept list; INFINITY when gpu_tok was not
 * kept. */
static double boundary_gap(const sampler *s, const sampling_params *p, int32_t n_completion,
                           int32_t cpu_tok, int32_t gpu_tok) {
    int pc = -1, pg = -1;
    double total = 0;
    for (int i = 0; i < s->n_kept; i++) {
        if (s->ids[i] == cpu_tok) pc = i;
        if (s->ids[i] == gpu_tok) pg = i;
        total += (double)s->probs[i];
    }
    if (pc < 0 || pg < 0) return INFINITY;
    double target = sampler_uniform(p->seed, n_completion) * total, cum = 0, gap = 0;
    int lo = pc < pg ? pc : pg, hi = pc < pg ? pg : pc;
    for (int i = 0; i < hi; i++) {
        cum += (double)s->probs[i];
        if (i >= lo && fabs(target - cum) / total > gap) gap = fabs(target - cum) / total;
    }
    return gap;
}

static void seat_expect(uint64_t *bits, uint16_t *cnt, const spec *s, int words) {
    memset(bits, 0, sizeof *bits * (size_t)words);
    memset(cnt, 0, sizeof *cnt * (size_t)words * 64);
    for (int j = 0; j < s->n_prompt + s->n_completion; j++) {
        int32_t id = s->hist[j];
        bits[id >> 6] |= 1ull << (id & 63);
        if (j >= s->n_prompt) cnt[id]++;
    }
}

static void test_vocab(int V, int n_valid) {
    printf("vocabulary %d (%d valid), %d rows + %d padding, %d steps\n", V, n_valid, N_ROWS,
           CAP - N_ROWS, N_STEPS);
    CUmodule m = gpu_module(g, "sample.cu", 0, 0, 0);
    CUfunction f_init = gpu_fn(g, m, "zp_sample_seat_init"), f_sample = gpu_fn(g, m, "zp_sample");
    const int words = (int)zp_sample_seat_words(V);
    REQUIRE(zp_sample_seat_bytes(V) == (size_t)words * 136);
    static spec specs[CAP];
    for (int r = 0; r < CAP; r++)
        make_spec(&specs[r], r, n_valid);

    /* seats, initialised from every row's history (padding rows' seats included) */
    zp_sample_seat_job jobs[CAP];
    int32_t hist[CAP * MAX_HIST], n_hist = 0, n_jobs = 0;
    for (int r = 0; r < CAP; r++) {
        if (specs[r].seat < 0) continue;
        int n = specs[r].n_prompt + specs[r].n_completion;
        jobs[n_jobs++] =
            (zp_sample_seat_job){specs[r].seat, n_hist, specs[r].n_prompt, specs[r].n_completion};
        memcpy(hist + n_hist, specs[r].hist, sizeof(int32_t) * (size_t)n);
        n_hist += n;
    }
    const size_t seen_bytes = sizeof(uint64_t) * (size_t)CAP * words,
                 cnt_bytes = sizeof(uint16_t) * (size_t)CAP * words * 64;
    CUdeviceptr d_seen = gpu_poisoned(g, seen_bytes), d_cnt = gpu_poisoned(g, cnt_bytes);
    CUdeviceptr d_jobs = gpu_up(g, jobs, sizeof jobs), d_hist = gpu_up(g, hist, sizeof hist),
                d_njobs = gpu_up(g, &n_jobs, 4);
    int stride = V, nv = n_valid;
    void *ia[] = {&d_seen, &d_cnt, &d_jobs, &d_hist, &d_njobs, &stride};
    gpu_launch(g, f_init, CAP, 1, 1, ZP_SAMPLE_THREADS, 0, ia);

    sampler smp; /* its scratch stays in the arena until exit (two vocabularies, 4.4 MB) */
    REQUIRE(!sampler_init(&smp, &g->a, V, n_valid));
    const size_t row_bytes = sizeof(float) * (size_t)V;
    float *logits = malloc(row_bytes * CAP), *got = malloc(row_bytes * CAP),
          *cpu_row = malloc(row_bytes);
    uint64_t *seen = malloc(seen_bytes), *bits = malloc(sizeof(uint64_t) * (size_t)words);
    uint16_t *cnt = malloc(cnt_bytes), *cexp = malloc(sizeof(uint16_t) * (size_t)words * 64);
    REQUIRE(logits && got && cpu_row && seen && bits && cnt && cexp);
    CUdeviceptr d_logits = gpu_poisoned(g, row_bytes * CAP),
                d_params = gpu_poisoned(g, sizeof(zp_sample_params) * CAP),
                d_ids = gpu_poisoned(g, sizeof(int32_t) * CAP),
                d_lp = gpu_poisoned(g, sizeof(float) * CAP);
    int32_t n_dev = N_ROWS;
    CUdeviceptr d_n = gpu_up(g, &n_dev, 4);
    /* the padding rows' seats, as initialised: they must not change */
    gpu_down(g, seen, d_seen, seen_bytes);
    gpu_down(g, cnt, d_cnt, cnt_bytes);
    const size_t pad_seen_bytes = sizeof(uint64_t) * (size_t)(CAP - N_ROWS) * words,
                 pad_cnt_bytes = sizeof(uint16_t) * (size_t)(CAP - N_ROWS) * words * 64;
    uint64_t *pad_seen = malloc(pad_seen_bytes);
    uint16_t *pad_cnt = malloc(pad_cnt_bytes);
    REQUIRE(pad_seen && pad_cnt);
    memcpy(pad_seen, seen + (size_t)N_ROWS * words, pad_seen_bytes);
    memcpy(pad_cnt, cnt + (size_t)N_ROWS * words * 64, pad_cnt_bytes);

    int exact = 0, boundary = 0, hard = 0, errors = 0;
    double worst_lp = 0;
    for (int step = 0; step < N_STEPS; step++) {
        zp_sample_params prm[CAP];
        for (int r = 0; r < CAP; r++) {
            spec *s = &specs[r];
            make_logits(logits + (size_t)r * V, s, V, n_valid);
            prm[r] = (zp_sample_params){s->p.temperature,
                                        s->p.top_k,
                                        s->p.top_p,
                                        s->p.min_p,
                                        s->p.repetition_penalty,
                                        s->p.presence_penalty,
                                        s->p.frequency_penalty,
                                        s->seat,
                                        s->p.seed,
                                        s->n_completion,
                                        s->want_lp};
        }
        CU(g->drv.MemcpyHtoDAsync(d_logits, logits, row_bytes * CAP, g->dev.compute));
        CU(g->drv.MemcpyHtoDAsync(d_params, prm, sizeof prm, g->dev.compute));
        CU(g->drv.MemsetD8Async(d_ids, 0x7F, sizeof(int32_t) * CAP, g->dev.compute));
        CU(g->drv.MemsetD8Async(d_lp, 0xFF, sizeof(float) * CAP, g->dev.compute));
        void *sa[] = {&d_ids, &d_lp, &d_logits, &d_params, &d_n, &stride, &nv, &d_seen, &d_cnt};
        gpu_launch(g, f_sample, CAP, 1, 1, ZP_SAMPLE_THREADS, 0, sa);
        int32_t ids[CAP];
        float lps[CAP];
        gpu_down(g, ids, d_ids, sizeof ids);
        gpu_down(g, lps, d_lp, sizeof lps);
        gpu_down(g, got, d_logits, row_bytes * CAP);
        gpu_down(g, seen, d_seen, seen_bytes);
        gpu_down(g, cnt, d_cnt, cnt_bytes);

        for (int r = 0; r < N_ROWS; r++) {
            spec *s = &specs[r];
            const float *orig = logits + (size_t)r * V, *gr = got + (size_t)r * V;
            int32_t tok = ids[r];
            if (r == ROW_NOSEAT_PENALTY) {
                CHECKF(tok == ZP_SAMPLE_ENOSEAT, "row %d: %d, want ZP_SAMPLE_ENOSEAT", r, tok);
                CHECKF(zp_sample_error(tok, r) == ZP_EINVAL, "row %d: error mapping", r);
                CHECKF(!memcmp(gr, orig, row_bytes), "row %d: logits changed", r);
                continue;
            }
            memcpy(cpu_row, orig, row_bytes);
            float cpu_lp = 0;
            int32_t want = sampler_sample(&smp, &s->p, cpu_row, s->hist, s->n_prompt,
                                          s->hist + s->n_prompt, s->n_completion, &cpu_lp);
            CHECKF(!memcmp(gr, cpu_row, sizeof(float) * (size_t)n_valid),
                   "row %d step %d: processed logits differ from the CPU's", r, step);
            if (want < 0) {
                errors++;
                CHECKF(tok < 0 && zp_sample_error(tok, r) == want,
                       "row %d step %d: GPU %d, CPU error %d", r, step, tok, want);
                CHECKF(isnan(lps[r]), "row %d: logprob written on error", r);
                continue;
            }
            if (tok < 0 || tok >= n_valid) {
                hard++;
                CHECKF(0, "row %d step %d: GPU gave %d, CPU %d", r, step, tok, want);
                continue;
            }
            if (tok == want) {
                exact++;
            } else if (s->p.temperature == 0.0f) {
                hard++;
                CHECKF(0, "row %d step %d: greedy GPU %d, CPU %d", r, step, tok, want);
            } else {
                double gap = boundary_gap(&smp, &s->p, s->n_completion, want, tok);
                printf("  row %d step %d: GPU %d, CPU %d, draw %.3g from the boundary%s\n", r, step,
                       tok, want, gap, gap <= DRAW_TOL ? "" : " (too far)");
                gap <= DRAW_TOL ? boundary++ : hard++;
                CHECKF(gap <= DRAW_TOL, "row %d step %d: draw differs", r, step);
            }
            if (s->want_lp) {
                double d = fabs((double)lps[r] - (double)sampler_logprob(&smp, cpu_row, tok));
                if (d > worst_lp) worst_lp = d;
                CHECKF(d <= 1e-4, "row %d step %d: logprob %g, CPU %g", r, step, (double)lps[r],
                       (double)sampler_logprob(&smp, cpu_row, tok));
            } else {
                CHECKF(isnan(lps[r]), "row %d: logprob written without want_logprob", r);
            }
            /* the GPU's token joins the history, on both sides */
            REQUIRE(s->n_prompt + s->n_completion < MAX_HIST);
            s->hist[s->n_prompt + s->n_completion++] = tok;
        }
        /* seats: every row's history; the padding rows' seats as initialised */
        size_t bad_seats = 0;
        for (int r = 0; r < N_ROWS; r++) {
            if (specs[r].seat < 0) continue;
            seat_expect(bits, cexp, &specs[r], words);
            bad_seats += memcmp(seen + (size_t)specs[r].seat * words, bits,
                                sizeof(uint64_t) * (size_t)words) != 0;
            bad_seats += memcmp(cnt + (size_t)specs[r].seat * words * 64, cexp,
                                sizeof(uint16_t) * (size_t)words * 64) != 0;
        }
        CHECKF(bad_seats == 0, "step %d: %zu seat arrays differ from the histories", step,
               bad_seats);
        for (int r = N_ROWS; r < CAP; r++) {
            CHECKF(ids[r] == 0x7F7F7F7F && isnan(lps[r]), "padding row %d written", r);
            CHECKF(!memcmp(got + (size_t)r * V, logits + (size_t)r * V, row_bytes),
                   "padding row %d: logits changed", r);
        }
        CHECKF(!memcmp(seen + (size_t)N_ROWS * words, pad_seen, pad_seen_bytes) &&
                   !memcmp(cnt + (size_t)N_ROWS * words * 64, pad_cnt, pad_cnt_bytes),
               "step %d: a padding row's seat changed", step);
    }
    printf("  %d tokens identical, %d at a CDF boundary (tolerance %.0e), %d other differences; "
           "%d error rows as the CPU; logprob max |d| %.3g\n",
           exact, boundary, DRAW_TOL, hard, errors, worst_lp);
    CHECK(exact > 0 && errors == N_STEPS * 4); /* 2 NaN rows, +inf, all masked */
    free(logits), free(got), free(cpu_row), free(seen), free(bits), free(cnt), free(cexp);
    free(pad_seen), free(pad_cnt);
    CU(g->drv.ModuleUnload(m));
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    test_vocab(151936, 151669);
    test_vocab(1000, 997);
    return test_done("cuda_sample");
}
