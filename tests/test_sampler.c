// LDFLAGS: -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
/* test_sampler: engine/sampler.c against hand-computed cases and a brute-force reference.
 * Kept sets are checked twice: through sampler_probs() (the distribution sampler_sample()
 * draws from) and by drawing many seeds (only kept ids appear, every kept id appears). */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/sampler.h"
#include "tests/testlib.h"

#include <string.h>
#include <time.h>

#define MAXV 160000

/* Allocation calls from zipage code (libc's own calls are not wrapped) after start-up. */
static int alloc_calls, counting;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n) {
    alloc_calls += counting;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
    alloc_calls += counting;
    return __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
    alloc_calls += counting;
    return __real_realloc(p, n);
}

static arena A;
static float row[MAXV];

static sampler make_sampler(int32_t n_logits, int32_t n_valid) {
    sampler s;
    REQUIRE(sampler_init(&s, &A, n_logits, n_valid) == 0);
    return s;
}

static sampling_params params(float temperature) {
    sampling_params p;
    sampler_defaults(&p);
    p.temperature = temperature;
    return p;
}

/* Runs sampler_probs on a copy of logits (row[] keeps the processed result). */
static int32_t probs_of(sampler *s, const sampling_params *p, const float *logits,
                        const int32_t *prompt, int32_t n_prompt, const int32_t *comp,
                        int32_t n_comp) {
    memcpy(row, logits, (size_t)s->n_logits * sizeof *row);
    return sampler_probs(s, p, row, prompt, n_prompt, comp, n_comp);
}

static int32_t sample_of(sampler *s, const sampling_params *p, const float *logits, int32_t n_comp,
                         float *lp) {
    static int32_t comp[64];
    REQUIRE(n_comp <= 64);
    memcpy(row, logits, (size_t)s->n_logits * sizeof *row);
    return sampler_sample(s, p, row, NULL, 0, comp, n_comp, lp);
}

/* The kept ids, in order, must be exactly want[] with probabilities want_p[] (if given). */
static void check_kept(const sampler *s, int32_t n, const int32_t *want, const double *want_p,
                       int32_t n_want, const char *what) {
    CHECKF(n == n_want && s->n_kept == n_want, "%s: kept %d, want %d", what, n, n_want);
    if (n != n_want) return;
    for (int32_t i = 0; i < n; i++) {
        CHECKF(s->ids[i] == want[i], "%s: kept[%d] = %d, want %d", what, i, s->ids[i], want[i]);
        if (want_p)
            CHECKF(fabs(s->probs[i] - want_p[i]) < 1e-6, "%s: p[%d] = %.8f, want %.8f", what, i,
                   (double)s->probs[i], want_p[i]);
    }
}

/* Draws `draws` seeds: ids outside want[] never appear, each id in want[] does. */
static void check_draws(sampler *s, const sampling_params *p0, const float *logits,
                        const int32_t *want, int32_t n_want, int draws, const char *what) {
    static int hits[64];
    REQUIRE(s->n_logits <= 64);
    memset(hits, 0, sizeof hits);
    sampling_params p = *p0;
    for (int i = 0; i < draws; i++) {
        p.seed = (uint64_t)i * 7919u + 1;
        int32_t t = sample_of(s, &p, logits, 0, NULL);
        REQUIRE(t >= 0 && t < s->n_logits);
        hits[t]++;
    }
    for (int32_t id = 0; id < s->n_logits; id++) {
        bool kept = false;
        for (int32_t j = 0; j < n_want; j++)
            kept |= want[j] == id;
        CHECKF(kept ? hits[id] > 0 : hits[id] == 0, "%s: id %d drawn %d times (kept %d)", what, id,
               hits[id], kept);
    }
}

static void log_probs(float *logits, const double *probs, int n) {
    for (int i = 0; i < n; i++)
        logits[i] = (float)log(probs[i]);
}

static void test_validate(void) {
    sampling_params p;
    sampler_defaults(&p);
    CHECK(p.temperature == 0 && p.top_k == 0 && p.top_p == 1 && p.min_p == 0 &&
          p.repetition_penalty == 1 && p.max_tokens == 256 && p.n_stop == 0);
    CHECK(sampler_validate(&p, 100) == 0);
    p.n_stop = 1;
    p.stop_ids[0] = 99;
    CHECK(sampler_validate(&p, 100) == 0);
    /* One bad field at a time; the message must name it. */
    for (int k = 0; k < 15; k++) {
        sampler_defaults(&p);
        const char *name = NULL;
        switch (k) {
        case 0:
            p.temperature = -0.1f, name = "temperature";
            break;
        case 1:
            p.temperature = NAN, name = "temperature";
            break;
        case 2:
            p.temperature = INFINITY, name = "temperature";
            break;
        case 3:
            p.top_k = -1, name = "top_k";
            break;
        case 4:
            p.top_p = 0.0f, name = "top_p";
            break;
        case 5:
            p.top_p = 1.5f, name = "top_p";
            break;
        case 6:
            p.min_p = -0.1f, name = "min_p";
            break;
        case 7:
            p.min_p = 1.01f, name = "min_p";
            break;
        case 8:
            p.repetition_penalty = 0.0f, name = "repetition_penalty";
            break;
        case 9:
            p.presence_penalty = 2.5f, name = "presence_penalty";
            break;
        case 10:
            p.frequency_penalty = NAN, name = "frequency_penalty";
            break;
        case 11:
            p.max_tokens = 0, name = "max_tokens";
            break;
        case 12:
            p.n_stop = SAMPLER_MAX_STOP + 1, name = "n_stop";
            break;
        case 13:
            p.n_stop = 2, p.stop_ids[0] = 3, p.stop_ids[1] = 100, name = "stop_ids[1] = 100";
            break;
        case 14:
            p.n_stop = 1, p.stop_ids[0] = -1, name = "stop_ids[0] = -1";
            break;
        }
        int rc = sampler_validate(&p, 100);
        CHECKF(rc == ZP_EINVAL && strstr(err_msg(), name), "case %d: rc %d msg '%s'", k, rc,
               err_msg());
    }
    sampler_defaults(&p);
    CHECK(sampler_validate(&p, 0) == ZP_EINVAL);
    p.top_k = 1000000; /* larger than the vocabulary = off */
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 2.0f;
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    CHECK(sampler_validate(&p, 100) == 0);
}

static void test_greedy_and_mask(void) {
    sampler s = make_sampler(4, 4);
    sampling_params p = params(0.0f);
    float tie[4] = {1, 5, 5, 2};
    float lp = 0;
    CHECK(sample_of(&s, &p, tie, 0, &lp) == 1); /* lowest id wins the tie */
    double z = exp(1) + 2 * exp(5) + exp(2);
    CHECKF(fabs(lp - (5 - log(z))) < 1e-5, "greedy logprob %g", (double)lp);

    /* Ids >= n_valid are never chosen, even with the largest logit. */
    sampler m = make_sampler(6, 4);
    float big[6] = {0, 1, 2, 0.5f, 9, 10};
    CHECK(sample_of(&m, &p, big, 0, &lp) == 2);
    CHECK(row[4] == -INFINITY && row[5] == -INFINITY && row[2] == 2);
    z = exp(0) + exp(1) + exp(2) + exp(0.5);
    CHECKF(fabs(lp - (2 - log(z))) < 1e-5, "masked greedy logprob %g", (double)lp);
    CHECK(sampler_logprob(&m, row, 4) == -INFINITY);
    sampling_params t = params(1.0f);
    float flat[6] = {0, 0, 0, 0, 10, 10};
    int32_t want[4] = {0, 1, 2, 3};
    check_draws(&m, &t, flat, want, 4, 2000, "mask");
}

static void test_top_k(void) {
    sampler s = make_sampler(6, 6);
    sampling_params p = params(1.0f);
    float l[6] = {1, 3, 2, 3, 0, -1};
    p.top_k = 2;
    int32_t k2[] = {1, 3};
    double k2p[] = {0.5, 0.5};
    check_kept(&s, probs_of(&s, &p, l, NULL, 0, NULL, 0), k2, k2p, 2, "top_k 2");
    check_draws(&s, &p, l, k2, 2, 2000, "top_k 2");
    p.top_k = 3;
    int32_t k3[] = {1, 3, 2};
    double z = 2 * exp(3) + exp(2);
    double k3p[] = {exp(3) / z, exp(3) / z, exp(2) / z};
    check_kept(&s, probs_of(&s, &p, l, NULL, 0, NULL, 0), k3, k3p, 3, "top_k 3");
    check_draws(&s, &p, l, k3, 3, 2000, "top_k 3");
    /* Ties at the boundary keep the lower ids. */
    float t[6] = {5, 2, 2, 2, 1, 2};
    p.top_k = 2;
    int32_t b2[] = {0, 1};
    check_kept(&s, probs_of(&s, &p, t, NULL, 0, NULL, 0), b2, NULL, 2, "tie k 2");
    check_draws(&s, &p, t, b2, 2, 3000, "tie k 2");
    p.top_k = 4;
    int32_t b4[] = {0, 1, 2, 3};
    check_kept(&s, probs_of(&s, &p, t, NULL, 0, NULL, 0), b4, NULL, 4, "tie k 4");
    /* k larger than the finite tokens keeps the finite ones. */
    float inf[6] = {1, -INFINITY, 2, -INFINITY, -INFINITY, -INFINITY};
    p.top_k = 5;
    int32_t f2[] = {2, 0};
    double f2p[] = {exp(2) / (exp(1) + exp(2)), exp(1) / (exp(1) + exp(2))};
    check_kept(&s, probs_of(&s, &p, inf, NULL, 0, NULL, 0), f2, f2p, 2, "k > finite");
    CHECK(fabs(sampler_logprob(&s, row, 0) - (1 - log(exp(1) + exp(2)))) < 1e-6);
    CHECK(sampler_logprob(&s, row, 1) == -INFINITY);
    /* Far below the maximum the probability is exactly 0 (exp of < -87). */
    float far[6] = {0, -100, -86, -INFINITY, -1000, 0};
    p.top_k = 0;
    REQUIRE(probs_of(&s, &p, far, NULL, 0, NULL, 0) == 5);
    CHECK(s.ids[1] == 1 && s.probs[1] == 0 && s.ids[4] == 5 && s.probs[4] == 0.5f);
    CHECK(s.probs[2] > 0 && fabs(s.probs[2] / (exp(-86) / 2) - 1) < 1e-6);
    /* Temperature scales before the filter: k = 2 of {0, ln 2, -1} at T = 0.5. */
    float tl[6] = {0, (float)log(2.0), -1, -5, -5, -5};
    p.top_k = 2;
    p.temperature = 0.5f;
    int32_t tk[] = {1, 0};
    double tkp[] = {0.8, 0.2};
    check_kept(&s, probs_of(&s, &p, tl, NULL, 0, NULL, 0), tk, tkp, 2, "T 0.5 k 2");
}

static void test_top_p_min_p(void) {
    sampler s = make_sampler(4, 4);
    sampling_params p = params(1.0f);
    /* p = {0.1, 0.5, 0.15, 0.25} by id: sorted 1 (0.5), 3 (0.25), 2 (0.15), 0 (0.1). */
    double pr[4] = {0.1, 0.5, 0.15, 0.25};
    float l[4];
    log_probs(l, pr, 4);
    struct {
        float top_p;
        int32_t n;
        int32_t ids[4];
    } cases[] = {
        {0.4f, 1, {1}},           {0.7f, 2, {1, 3}}, {0.8f, 3, {1, 3, 2}},
        {0.95f, 4, {1, 3, 2, 0}}, {0.05f, 1, {1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        p.top_p = cases[c].top_p;
        double want_p[4], mass = 0;
        for (int i = 0; i < cases[c].n; i++)
            mass += pr[cases[c].ids[i]];
        for (int i = 0; i < cases[c].n; i++)
            want_p[i] = pr[cases[c].ids[i]] / mass;
        char what[64];
        snprintf(what, sizeof what, "top_p %g", (double)p.top_p);
        check_kept(&s, probs_of(&s, &p, l, NULL, 0, NULL, 0), cases[c].ids, want_p, cases[c].n,
                   what);
        check_draws(&s, &p, l, cases[c].ids, cases[c].n, 2000, what);
    }
    /* -0 and +0 are a tie, which the lower id wins. */
    float zeros[4] = {-0.0f, 0.0f, -1, -1};
    p.top_p = 0.3f;
    int32_t z0[1] = {0};
    check_kept(&s, probs_of(&s, &p, zeros, NULL, 0, NULL, 0), z0, NULL, 1, "-0 tie");
    float zeros2[4] = {-1, 0.0f, -0.0f, -1};
    int32_t z1[1] = {1};
    check_kept(&s, probs_of(&s, &p, zeros2, NULL, 0, NULL, 0), z1, NULL, 1, "+0 tie");
    /* The cut lands right after a histogram bucket: {1, 1, .5, .5} with top_p just above 2/3
     * needs the third token, just below it only two. */
    float edge[4] = {0, 0, -0.6931472f, -0.6931472f};
    p.top_p = 2.0f / 3.0f;
    int32_t e3[3] = {0, 1, 2}, e2[2] = {0, 1};
    check_kept(&s, probs_of(&s, &p, edge, NULL, 0, NULL, 0), e3, NULL, 3, "top_p 2/3");
    p.top_p = 0.66f;
    check_kept(&s, probs_of(&s, &p, edge, NULL, 0, NULL, 0), e2, NULL, 2, "top_p .66");
    /* top_p = 1 is off: every token, in id order. */
    p.top_p = 1.0f;
    int32_t all[4] = {0, 1, 2, 3};
    check_kept(&s, probs_of(&s, &p, l, NULL, 0, NULL, 0), all, pr, 4, "top_p 1");

    /* top-p works on the top-k renormalised distribution: {0.4, 0.3, 0.2, 0.1}. */
    double q[4] = {0.4, 0.3, 0.2, 0.1};
    float lq[4];
    log_probs(lq, q, 4);
    p.top_p = 0.55f;
    int32_t two[2] = {0, 1}, one[1] = {0};
    check_kept(&s, probs_of(&s, &p, lq, NULL, 0, NULL, 0), two, NULL, 2, "top_p .55");
    p.top_k = 2; /* 0.4 / 0.7 = 0.571 >= 0.55 */
    check_kept(&s, probs_of(&s, &p, lq, NULL, 0, NULL, 0), one, NULL, 1, "top_k 2 top_p .55");
    check_draws(&s, &p, lq, one, 1, 200, "top_k 2 top_p .55");

    /* min-p: drop p < min_p * p_max. */
    p = params(1.0f);
    double mp[4] = {0.5, 0.25, 0.15, 0.1};
    float lm[4];
    log_probs(lm, mp, 4);
    p.min_p = 0.25f; /* threshold 0.125 */
    int32_t m3[] = {0, 1, 2};
    double m3p[] = {0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9};
    check_kept(&s, probs_of(&s, &p, lm, NULL, 0, NULL, 0), m3, m3p, 3, "min_p .25");
    check_draws(&s, &p, lm, m3, 3, 2000, "min_p .25");
    p.min_p = 0.4f; /* threshold 0.2 */
    int32_t m2[] = {0, 1};
    check_kept(&s, probs_of(&s, &p, lm, NULL, 0, NULL, 0), m2, NULL, 2, "min_p .4");
    check_draws(&s, &p, lm, m2, 2, 2000, "min_p .4");
    p.min_p = 1.0f;
    check_kept(&s, probs_of(&s, &p, lm, NULL, 0, NULL, 0), one, NULL, 1, "min_p 1");
    /* min-p after top-p and top-k: the smaller prefix wins. */
    p.min_p = 0.25f;
    p.top_p = 0.7f; /* {0, 1} */
    check_kept(&s, probs_of(&s, &p, lm, NULL, 0, NULL, 0), m2, NULL, 2, "top_p .7 min_p .25");
    p.top_p = 0.95f; /* all four, min-p cuts to three */
    p.top_k = 3;
    check_kept(&s, probs_of(&s, &p, lm, NULL, 0, NULL, 0), m3, m3p, 3, "k3 top_p .95 min_p .25");
}

/* Brute force: full sort by (logit desc, id asc), the same float probabilities, cut. */
static int32_t ref_ids[MAXV];
static float ref_x[MAXV];
static int ref_cmp(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (ref_x[i] != ref_x[j]) return ref_x[i] > ref_x[j] ? -1 : 1;
    return (i > j) - (i < j);
}
static int32_t reference(const float *x, int32_t v, const sampling_params *p, double *prob) {
    memcpy(ref_x, x, (size_t)v * sizeof *x);
    for (int32_t i = 0; i < v; i++)
        ref_ids[i] = i;
    qsort(ref_ids, (size_t)v, sizeof *ref_ids, ref_cmp);
    int32_t n = p->top_k > 0 && p->top_k < v ? p->top_k : v;
    float m = x[ref_ids[0]];
    double z = 0;
    for (int32_t i = 0; i < n; i++)
        z += expf((x[ref_ids[i]] - m) / p->temperature);
    if (p->top_p < 1.0f) {
        double cum = 0;
        int32_t i = 0;
        while (i < n) {
            cum += expf((x[ref_ids[i++]] - m) / p->temperature);
            if (cum >= p->top_p * z) break;
        }
        n = i;
    }
    int32_t j = 0;
    for (int32_t i = 0; i < n; i++) {
        float e = expf((x[ref_ids[i]] - m) / p->temperature);
        if (e >= p->min_p) ref_ids[j++] = ref_ids[i];
    }
    z = 0;
    for (int32_t i = 0; i < j; i++)
        z += expf((x[ref_ids[i]] - m) / p->temperature);
    for (int32_t i = 0; i < j; i++)
        prob[i] = expf((x[ref_ids[i]] - m) / p->temperature) / z;
    return j;
}

static void test_reference(void) {
    enum { V = 50000 };
    static float x[V];
    static double want_p[V], by_id[V];
    sampler s = make_sampler(V, V);
    unsigned long long r = 12345;
    const float temps[] = {0.7f, 1.0f, 3.0f, 50.0f};
    const float tops[] = {0.5f, 0.9f, 0.99f, 1.0f};
    const int32_t ks[] = {0, 1, 40, 1000};
    const float mins[] = {0.0f, 0.05f};
    int cases = 0;
    for (int ti = 0; ti < 4; ti++)
        for (int pi = 0; pi < 4; pi++)
            for (int ki = 0; ki < 4; ki++)
                for (int mi = 0; mi < 2; mi++) {
                    for (int32_t i = 0; i < V; i++) /* a peaked head, a long tail, some ties */
                        x[i] = i % 97 == 0 ? 4.0f : (float)(int)(test_randf(&r) * 600) / 100;
                    sampling_params p = params(temps[ti]);
                    p.top_p = tops[pi];
                    p.top_k = ks[ki];
                    p.min_p = mins[mi];
                    int32_t n = probs_of(&s, &p, x, NULL, 0, NULL, 0);
                    int32_t nw = reference(x, V, &p, want_p);
                    bool ordered = p.top_k > 0 || p.top_p < 1.0f;
                    int bad = n != nw;
                    if (!bad && ordered) /* best first, exactly the reference order */
                        for (int32_t i = 0; i < n; i++)
                            bad |= s.ids[i] != ref_ids[i] ||
                                   fabs(s.probs[i] - want_p[i]) > 1e-5 * want_p[i];
                    if (!bad && !ordered) { /* id order */
                        for (int32_t i = 0; i < V; i++)
                            by_id[i] = -1;
                        for (int32_t i = 0; i < nw; i++)
                            by_id[ref_ids[i]] = want_p[i];
                        for (int32_t i = 0; i < n; i++)
                            bad |= by_id[s.ids[i]] < 0 ||
                                   fabs(s.probs[i] - by_id[s.ids[i]]) > 1e-5 * by_id[s.ids[i]] ||
                                   (i > 0 && s.ids[i] <= s.ids[i - 1]);
                    }
                    CHECKF(!bad, "T %g top_p %g top_k %d min_p %g: kept %d, reference %d",
                           (double)p.temperature, (double)p.top_p, p.top_k, (double)p.min_p, n, nw);
                    cases++;
                }
    CHECK(cases == 128);
}

static void test_penalties(void) {
    sampler s = make_sampler(6, 6);
    sampling_params p = params(0.0f);
    /* Repetition (HF): every distinct id of prompt + completion once; x > 0 divides, else
     * multiplies. Presence / frequency are off here. */
    p.repetition_penalty = 2.0f;
    float l[6] = {2, -2, 1, 0.5f, 3, 0};
    int32_t prompt[] = {0, 1, 0, 5}, comp[] = {0, 3, 0};
    CHECK(probs_of(&s, &p, l, prompt, 4, comp, 3) == 1);
    float want[6] = {1, -4, 1, 0.25f, 3, 0};
    for (int i = 0; i < 6; i++)
        CHECKF(row[i] == want[i], "rep: row[%d] = %g", i, (double)row[i]);
    CHECK(s.ids[0] == 4);
    p.repetition_penalty = 0.5f; /* < 1 favours repeats */
    CHECK(probs_of(&s, &p, l, prompt, 4, comp, 3) == 1);
    CHECK(row[0] == 4 && row[1] == -1 && row[3] == 1 && row[2] == 1);
    CHECK(s.ids[0] == 0);

    /* Presence once per distinct completion id, frequency per occurrence; prompt ids exempt. */
    p = params(0.0f);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    float one[6] = {1, 1, 1, 1, 1, 1};
    int32_t pr2[] = {0, 1, 1}, c2[] = {2, 2, 3, 2};
    CHECK(probs_of(&s, &p, one, pr2, 3, c2, 4) == 1);
    float w2[6] = {1, 1, 1 - 0.75f - 0.5f, 1 - 0.25f - 0.5f, 1, 1};
    for (int i = 0; i < 6; i++)
        CHECKF(row[i] == w2[i], "pf: row[%d] = %g", i, (double)row[i]);
    CHECK(s.ids[0] == 0);
    /* Negative penalties reward. */
    p.presence_penalty = -1.0f;
    p.frequency_penalty = 0.0f;
    CHECK(probs_of(&s, &p, one, pr2, 3, c2, 4) == 1);
    CHECK(row[2] == 2 && row[3] == 2 && row[0] == 1 && s.ids[0] == 2);

    /* All three: repetition first, then frequency, then presence. */
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    float l3[6] = {2, 2, 2, 2, 2, 2};
    int32_t c3[] = {0, 0};
    CHECK(probs_of(&s, &p, l3, pr2, 3, c3, 2) == 1);
    CHECK(row[0] == 1 - 0.5f - 0.5f && row[1] == 1 && row[2] == 2);

    /* The scratch is clean afterwards: no history leaves the row unchanged, the same history
     * gives the same row. */
    CHECK(probs_of(&s, &p, l3, NULL, 0, NULL, 0) == 1);
    for (int i = 0; i < 6; i++)
        CHECK(row[i] == 2);
    CHECK(probs_of(&s, &p, l3, pr2, 3, c3, 2) == 1);
    CHECK(row[0] == 0 && row[1] == 1);

    /* Ids out of range are an error, not a crash, and leave the scratch clean. */
    int32_t badp[] = {1, 6}, badc[] = {-1};
    CHECK(probs_of(&s, &p, l3, badp, 2, c3, 2) == ZP_EINVAL && strstr(err_msg(), "prompt"));
    CHECK(probs_of(&s, &p, l3, pr2, 3, badc, 1) == ZP_EINVAL && strstr(err_msg(), "completion"));
    CHECK(probs_of(&s, &p, l3, NULL, 0, NULL, 0) == 1 && row[1] == 2);
    /* Penalties change the choice: greedy picks 1 once 0 was generated. */
    p = params(0.0f);
    p.presence_penalty = 0.5f;
    float close[6] = {3, 2.9f, 0, 0, 0, 0};
    int32_t c4[] = {0};
    memcpy(row, close, sizeof close);
    CHECK(sampler_sample(&s, &p, row, NULL, 0, c4, 1, NULL) == 1);
}

static void test_seeds(void) {
    enum { V = 100, N = 64 };
    static float x[V];
    sampler s = make_sampler(V, V);
    unsigned long long r = 99;
    for (int i = 0; i < V; i++)
        x[i] = test_randf(&r) * 2;
    sampling_params p = params(1.0f);
    p.seed = 42;
    int32_t a[N], b[N], c[N];
    for (int n = 0; n < N; n++)
        a[n] = sample_of(&s, &p, x, n, NULL);
    for (int n = 0; n < N; n++)
        b[n] = sample_of(&s, &p, x, n, NULL);
    p.seed = 43;
    int differ = 0;
    for (int n = 0; n < N; n++)
        differ += (c[n] = sample_of(&s, &p, x, n, NULL)) != a[n];
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECKF(differ > N / 2, "seeds 42 and 43 differ at %d of %d draws", differ, N);
    /* The draw for index n is a pure function of (seed, n): a fresh sampler, in reverse order,
     * interleaved with another request, gives the same tokens. */
    sampler t = make_sampler(V, V);
    sampling_params q = params(0.8f);
    q.seed = 7;
    q.top_k = 10;
    for (int n = N - 1; n >= 0; n--) {
        p.seed = 42;
        CHECK(sample_of(&t, &p, x, n, NULL) == a[n]);
        sample_of(&t, &q, x, N - 1 - n, NULL);
    }
    /* The uniforms themselves. */
    double sum = 0;
    for (int n = 0; n < 1000; n++) {
        double u = sampler_uniform(5, n);
        CHECK(u >= 0 && u < 1 && u == sampler_uniform(5, n));
        CHECK(u != sampler_uniform(6, n) && u != sampler_uniform(5, n + 1));
        sum += u;
    }
    CHECKF(fabs(sum / 1000 - 0.5) < 0.03, "mean of uniforms %g", sum / 1000);
    /* 100 equal bins over 100000 uniforms, across seeds and across indices; 148.2 is the 0.1%
     * point of chi-square with 99 degrees of freedom. */
    for (int mode = 0; mode < 2; mode++) {
        static int bins[100];
        memset(bins, 0, sizeof bins);
        for (int i = 0; i < 100000; i++)
            bins[(int)(100 * (mode ? sampler_uniform(9, i) : sampler_uniform((uint64_t)i, 3)))]++;
        double c2 = 0;
        for (int b = 0; b < 100; b++)
            c2 += (bins[b] - 1000.0) * (bins[b] - 1000.0) / 1000.0;
        CHECKF(c2 < 148.2, "uniforms mode %d: chi-square %.1f over 100 bins", mode, c2);
    }
}

static void test_logprob(void) {
    sampler s = make_sampler(5, 4);
    float l[5] = {1, 2, 3, 0, 50};
    double z = 0;
    for (int i = 0; i < 4; i++)
        z += exp((l[i] - 3) / 0.5);
    for (int k = 0; k < 3; k++) {
        sampling_params p = params(0.5f);
        p.top_k = k == 1 ? 2 : 0;       /* lazy normaliser (top-k) */
        p.top_p = k == 2 ? 0.9f : 1.0f; /* normaliser cached by the top-p pass */
        for (uint64_t seed = 0; seed < 20; seed++) {
            p.seed = seed;
            float lp = 1;
            int32_t t = sample_of(&s, &p, l, 3, &lp);
            REQUIRE(t >= 0 && t < 4);
            double want = (l[t] - 3) / 0.5 - log(z);
            CHECKF(fabs(lp - want) < 1e-5, "k %d: logprob of %d = %g, want %g", k, t, (double)lp,
                   want);
            CHECK(fabs(sampler_logprob(&s, row, 0) - ((1 - 3) / 0.5 - log(z))) < 1e-5);
        }
    }
}

static double chi_square(const int *hits, const double *prob, int n, int draws) {
    double c = 0;
    for (int i = 0; i < n; i++) {
        double e = prob[i] * draws;
        c += (hits[i] - e) * (hits[i] - e) / e;
    }
    return c;
}

static void test_distribution(void) {
    enum { D = 20000 };
    sampler s = make_sampler(4, 4);
    double pr[4] = {0.1, 0.2, 0.3, 0.4};
    float l[4];
    log_probs(l, pr, 4);
    sampling_params p = params(1.0f);
    /* Across seeds at one index, and across indices of one seed. The test is deterministic;
     * 16.27 is the 0.1% point of chi-square with 3 degrees of freedom. */
    for (int mode = 0; mode < 4; mode++) {
        int hits[4] = {0};
        /* Modes 2 (top-k heap) and 3 (top-p radix sort) keep {0.4, 0.3, 0.2} / 0.9, best first. */
        bool three = mode >= 2;
        p.top_k = mode == 2 ? 3 : 0;
        p.top_p = mode == 3 ? 0.85f : 1.0f;
        static int32_t comp[D];
        for (int i = 0; i < D; i++) {
            p.seed = mode == 1 ? 12345 : (uint64_t)i;
            memcpy(row, l, sizeof l);
            int32_t t = sampler_sample(&s, &p, row, NULL, 0, comp, mode == 1 ? i : 0, NULL);
            REQUIRE(t >= 0 && t < 4);
            hits[t]++;
        }
        /* Modes 2 and 3 never draw id 0 and check the three kept ids (2 degrees of freedom). */
        int first = three ? 1 : 0;
        double q[4];
        for (int i = 0; i < 4; i++)
            q[i] = pr[i] / (three ? 0.9 : 1.0);
        CHECK(!three || hits[0] == 0);
        double c = chi_square(hits + first, q + first, 4 - first, D);
        CHECKF(c < 16.27, "mode %d: chi-square %.2f (hits %d %d %d %d)", mode, c, hits[0], hits[1],
               hits[2], hits[3]);
    }
}

static void test_bad_logits(void) {
    sampler s = make_sampler(4, 3);
    sampling_params p = params(1.0f);
    float nan_[4] = {0, NAN, 1, 0};
    CHECK(probs_of(&s, &p, nan_, NULL, 0, NULL, 0) == ZP_EBACKEND && strstr(err_msg(), "NaN"));
    float pinf[4] = {0, 1, INFINITY, 0};
    CHECK(probs_of(&s, &p, pinf, NULL, 0, NULL, 0) == ZP_EBACKEND && strstr(err_msg(), "inf"));
    float ninf[4] = {-INFINITY, -INFINITY, -INFINITY, 5};
    p.temperature = 0;
    CHECK(probs_of(&s, &p, ninf, NULL, 0, NULL, 0) == ZP_EINVAL && strstr(err_msg(), "masked"));
    /* A NaN past n_valid is masked, not an error. */
    float tail[4] = {0, 1, 0, NAN};
    CHECK(probs_of(&s, &p, tail, NULL, 0, NULL, 0) == 1 && s.ids[0] == 1);
    CHECK(probs_of(&s, &p, tail, NULL, -1, NULL, 0) == ZP_EINVAL);
    sampler bad;
    CHECK(sampler_init(&bad, &A, 4, 5) == ZP_EINVAL && strstr(err_msg(), "n_valid"));
    CHECK(sampler_init(&bad, &A, 0, 0) == ZP_EINVAL && strstr(err_msg(), "n_logits"));
}

/* Timing on a Qwen-sized row (printed, not asserted; docs/SAMPLING.md quotes an -O2 run). */
enum { SPEED_V = 152064, SPEED_NV = 151646 };
static void test_speed(sampler *sp) {
    enum { V = SPEED_V, NV = SPEED_NV, R = 20 };
    static float x[V];
    sampler s = *sp;
    unsigned long long r = 5;
    struct {
        const char *name;
        float t, top_p, min_p;
        int32_t k;
        bool logprob;
    } cfg[] = {{"greedy, no logprob", 0, 1, 0, 0, false},
               {"greedy", 0, 1, 0, 0, true},
               {"temperature 1", 1, 1, 0, 0, true},
               {"top_k 50", 1, 1, 0, 50, true},
               {"top_p 0.9", 1, 0.9f, 0, 0, true},
               {"top_p 0.95 T 0.7", 0.7f, 0.95f, 0, 0, true},
               {"k 50 p 0.9 min_p .05", 1, 0.9f, 0.05f, 50, true}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        sampling_params p = params(cfg[c].t);
        p.top_p = cfg[c].top_p;
        p.min_p = cfg[c].min_p;
        p.top_k = cfg[c].k;
        double total = 0;
        int32_t kept = 0;
        for (int i = 0; i < R; i++) {
            /* A language-model-like row: a few strong candidates over a wide noise floor. */
            for (int32_t j = 0; j < V; j++)
                x[j] = test_randf(&r) * 4;
            for (int j = 0; j < 8; j++)
                x[test_rand_u64(&r) % NV] = 12 + test_randf(&r) * 3;
            p.seed = (uint64_t)i;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            float lp = 0;
            int32_t t = sampler_sample(&s, &p, x, NULL, 0, NULL, 0, cfg[c].logprob ? &lp : NULL);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            CHECK(t >= 0 && t < NV && lp <= 0);
            kept += s.n_kept;
            total += (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        }
        printf("speed V=%d %-22s %7.3f ms/sample (mean kept %d)\n", V, cfg[c].name, total / R * 1e3,
               kept / R);
    }
}

int main(void) {
    REQUIRE(arena_init(&A, "test_sampler", 64u << 20) == 0);
    test_validate();
    test_greedy_and_mask();
    test_top_k();
    test_top_p_min_p();
    test_reference();
    test_penalties();
    test_seeds();
    test_logprob();
    test_distribution();
    test_bad_logits();
    sampler speed = make_sampler(SPEED_V, SPEED_NV);
    arena_freeze(&A); /* sampling allocates nothing */
    counting = 1;
    test_speed(&speed);
    counting = 0;
    CHECK(A.violations == 0 && alloc_calls == 0);
    arena_release(&A);
    return test_done("test_sampler");
}
