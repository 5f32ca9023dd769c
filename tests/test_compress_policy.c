/* test_compress_policy: the baseline eviction policies (be_cparams.policy) on the CPU ops,
 * cmp_score -> cmp_redundancy -> cmp_select as the engine runs them, with redundancy and
 * pooling configured on (a baseline must skip them):
 *   streaming keeps exactly the first k = max(sink_len, protect[b]) positions and the newest
 *   n_keep - k, and writes C := p;
 *   random keeps exactly n_keep positions, among them the protected first k and the qcl
 *   newest; it is the same on a 1- and a 2-thread backend, the same for a job whatever the
 *   other jobs of the batch and its place in it, differs between seeds, layers and heads,
 *   and keeps each unprotected position about equally often over many seeds;
 *   a recent window (be_cparams.recent > qcl, key protect_recent) keeps the newest `recent`
 *   positions in every row under random and score eviction, which drop some of them without
 *   it; a larger window is capped at half of what the protected prefix leaves of n_keep (the
 *   rest is still chosen, the prefix kept);
 *   oracle scores each position by its record (be_oracle) at the token's original position
 *   and the chunk of the next query: original positions come from C below the last block of
 *   a compressed job and from the sequence length above it, C := the original position, 0
 *   past the record; the kept positions are the highest scored (besides the protected and the
 *   qcl newest); the same on 1 and 2 threads. */
#include "arena/err.h"
#include "drv/backend.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

enum { L = 2, HKV = 2, HQ = 4, D = 8, BS = 8, QCL = 4, NJ = 3, NB = 5, POS = NB * BS };
enum { NKEEP = 3 * BS, SINK = 2, NBLK = NJ * NB };

typedef struct {
    backend *be;
    be_ptr kc, cc[L], qc, scores, work, keep, ktab, ctab, meta;
    be_cjobs j;
} dev;

/* Job metadata rows in one buffer: n_blocks, kv_len, n_keep, qslot, flags, protect, seed,
 * then src and dst [NJ][NB]. */
typedef struct {
    int32_t nb[NJ], kvl[NJ], nkeep[NJ], qslot[NJ], flags[NJ], protect[NJ], seed[NJ];
    int32_t src[NJ * NB], dst[NJ * NB];
} jobs;

static void dev_open(dev *d, int threads) {
    REQUIRE(cpu_backend_create(&d->be, threads, 64, CPU_ISA_AUTO, CPU_PREC_F32) == 0);
    backend *be = d->be;
    REQUIRE(be->reserve(be, 4u << 20, 0) == 0);
    size_t rows = (size_t)L * NJ * HKV;
    REQUIRE(be->alloc(be, sizeof(float) * NBLK * HKV * BS * D, 64, &d->kc, "k") == 0);
    for (int l = 0; l < L; l++)
        REQUIRE(be->alloc(be, sizeof(float) * NBLK * HKV * BS, 64, &d->cc[l], "c") == 0);
    REQUIRE(be->alloc(be, sizeof(float) * NJ * L * QCL * HQ * D, 64, &d->qc, "qc") == 0);
    REQUIRE(be->alloc(be, rows * POS * 4, 64, &d->scores, "scores") == 0);
    REQUIRE(be->alloc(be, rows * POS * 8, 64, &d->work, "work") == 0);
    REQUIRE(be->alloc(be, rows * NKEEP * 4, 64, &d->keep, "keep") == 0);
    REQUIRE(be->alloc(be, sizeof(jobs), 64, &d->meta, "jobs") == 0);
    uint64_t kt[L], ct[L];
    for (int l = 0; l < L; l++)
        kt[l] = d->kc, ct[l] = d->cc[l];
    REQUIRE(be->alloc(be, sizeof kt, 64, &d->ktab, "tables") == 0);
    REQUIRE(be->alloc(be, sizeof ct, 64, &d->ctab, "tables") == 0);
    REQUIRE(be->upload(be, d->ktab, kt, sizeof kt) == 0);
    REQUIRE(be->upload(be, d->ctab, ct, sizeof ct) == 0);
    unsigned long long s = 7;
    static float k[NBLK * HKV * BS * D], q[NJ * L * QCL * HQ * D];
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        k[i] = test_randf(&s);
    for (size_t i = 0; i < sizeof q / sizeof *q; i++)
        q[i] = test_randf(&s);
    REQUIRE(be->upload(be, d->kc, k, sizeof k) == 0 && be->upload(be, d->qc, q, sizeof q) == 0);
    be_ptr m = d->meta;
    d->j = (be_cjobs){NJ,
                      NJ,
                      NB,
                      POS,
                      NKEEP,
                      m + offsetof(jobs, nb),
                      m + offsetof(jobs, kvl),
                      m + offsetof(jobs, nkeep),
                      m + offsetof(jobs, qslot),
                      m + offsetof(jobs, flags),
                      m + offsetof(jobs, protect),
                      m + offsetof(jobs, src),
                      m + offsetof(jobs, dst),
                      0,
                      m + offsetof(jobs, seed),
                      NULL,
                      NULL};
}

/* Three jobs on their own blocks (block tables reversed, so positions and slots differ):
 * kv_len 40, 37 (partial last block), 33; protected lengths 0 (the sinks rule), 5, 11. */
static jobs base_jobs(void) {
    jobs J = {.kvl = {40, 37, 33}, .protect = {0, 5, 11}, .seed = {1, 2, 3}};
    for (int b = 0; b < NJ; b++) {
        J.nb[b] = NB, J.nkeep[b] = NKEEP, J.qslot[b] = b, J.flags[b] = BE_CJ_GLOBAL | BE_CJ_POOL;
        for (int i = 0; i < NB; i++)
            J.src[b * NB + i] = J.dst[b * NB + i] = b * NB + (NB - 1 - i);
    }
    return J;
}

static be_cparams params(int policy) {
    return (be_cparams){.layers = L,
                        .hq = HQ,
                        .hkv = HKV,
                        .dim = D,
                        .bs = BS,
                        .qcl = QCL,
                        .scale = 1.0f / sqrtf((float)D),
                        .gamma = 0.8f,
                        .pool = 5,
                        .redundancy = 0,
                        .lambda = 0.2f,
                        .temperature = 0.4f,
                        .threshold = 0.5f,
                        .sink_len = SINK,
                        .policy = policy};
}

/* Runs score, redundancy and select on jobs J; keep rows to keep[L][NJ][HKV][NKEEP]. */
static void run(dev *d, const jobs *J, const be_cparams *p, int32_t *keep, float *scores) {
    backend *be = d->be;
    REQUIRE(be->check(be, p) == 0);
    REQUIRE(be->upload(be, d->meta, J, sizeof *J) == 0);
    be->cmp_score(be, d->scores, d->qc, d->ktab, d->ctab, ZP_F32, &d->j, 0, L, p);
    be->cmp_redundancy(be, d->scores, d->ktab, ZP_F32, d->work, &d->j, 0, L, p);
    be->cmp_select(be, d->keep, d->scores, d->work, &d->j, L, p);
    REQUIRE(be->sync(be) == 0);
    REQUIRE(be->download(be, keep, d->keep, sizeof(int32_t) * L * NJ * HKV * NKEEP) == 0);
    if (scores)
        REQUIRE(be->download(be, scores, d->scores, sizeof(float) * L * NJ * HKV * POS) == 0);
}

static const int32_t *row(const int32_t *keep, int l, int b, int h) {
    return keep + (((size_t)l * NJ + (size_t)b) * HKV + (size_t)h) * NKEEP;
}

static int first_k(const jobs *J, int b) {
    return J->protect[b] > SINK ? J->protect[b] : SINK;
}

static void test_streaming(dev *d) {
    jobs J = base_jobs();
    be_cparams p = params(BE_EVICT_STREAMING);
    static int32_t keep[L * NJ * HKV * NKEEP];
    static float sc[L * NJ * HKV * POS];
    run(d, &J, &p, keep, sc);
    for (int l = 0; l < L; l++)
        for (int b = 0; b < NJ; b++)
            for (int h = 0; h < HKV; h++) {
                const int32_t *k = row(keep, l, b, h);
                int fk = first_k(&J, b), kvl = J.kvl[b];
                for (int t = 0; t < NKEEP; t++) {
                    int want = t < fk ? t : kvl - (NKEEP - t);
                    CHECKF(k[t] == want, "streaming l%d b%d h%d: keep[%d] = %d, want %d", l, b, h,
                           t, k[t], want);
                }
                const float *s = sc + (((size_t)l * NJ + (size_t)b) * HKV + (size_t)h) * POS;
                for (int pos = 0; pos < POS; pos++)
                    CHECK(pos < kvl ? s[pos] == (float)pos : s[pos] == -INFINITY);
                float c[NBLK * HKV * BS];
                REQUIRE(d->be->download(d->be, c, d->cc[l], sizeof c) == 0);
                for (int pos = 0; pos < kvl; pos++) {
                    int slot = (J.src[b * NB + pos / BS] * HKV + h) * BS + pos % BS;
                    CHECKF(c[slot] == (float)pos, "streaming: C of l%d b%d h%d p%d is %g", l, b, h,
                           pos, c[slot]);
                }
            }
}

/* One job's keep rows (every layer and head) from keep[L][NJ][HKV][NKEEP]. */
static void job_rows(const int32_t *keep, int b, int32_t out[L][HKV][NKEEP]) {
    for (int l = 0; l < L; l++)
        for (int h = 0; h < HKV; h++)
            memcpy(out[l][h], row(keep, l, b, h), sizeof(int32_t) * NKEEP);
}

static void test_random(dev *d1, dev *d2) {
    jobs J = base_jobs();
    be_cparams p = params(BE_EVICT_RANDOM);
    static int32_t a[L * NJ * HKV * NKEEP], b2[L * NJ * HKV * NKEEP];
    run(d1, &J, &p, a, NULL);
    for (int l = 0; l < L; l++)
        for (int b = 0; b < NJ; b++)
            for (int h = 0; h < HKV; h++) {
                const int32_t *k = row(a, l, b, h);
                int fk = first_k(&J, b), kvl = J.kvl[b];
                for (int t = 1; t < NKEEP; t++)
                    CHECK(k[t] > k[t - 1]);
                for (int t = 0; t < fk; t++)
                    CHECKF(k[t] == t, "random l%d b%d h%d: protected %d not kept", l, b, h, t);
                for (int t = 0; t < QCL; t++)
                    CHECKF(k[NKEEP - QCL + t] == kvl - QCL + t,
                           "random l%d b%d h%d: newest %d not kept", l, b, h, kvl - QCL + t);
                CHECK(k[NKEEP - 1] < kvl);
            }
    /* threads */
    run(d2, &J, &p, b2, NULL);
    CHECK(!memcmp(a, b2, sizeof a));
    /* batching: job 1 alone in slot 0, then the jobs in reverse order */
    int32_t want[NJ][L][HKV][NKEEP], got[L][HKV][NKEEP];
    for (int b = 0; b < NJ; b++)
        job_rows(a, b, want[b]);
    jobs R = J;
    for (int b = 0; b < NJ; b++) {
        int o = NJ - 1 - b;
        R.nb[b] = J.nb[o], R.kvl[b] = J.kvl[o], R.protect[b] = J.protect[o], R.seed[b] = J.seed[o];
        memcpy(R.src + b * NB, J.src + o * NB, sizeof(int32_t) * NB);
        memcpy(R.dst + b * NB, J.dst + o * NB, sizeof(int32_t) * NB);
    }
    run(d1, &R, &p, b2, NULL);
    for (int b = 0; b < NJ; b++) {
        job_rows(b2, NJ - 1 - b, got);
        CHECKF(!memcmp(got, want[b], sizeof got), "random: job %d depends on its batch place", b);
    }
    /* seeds, layers and heads give different subsets */
    CHECK(memcmp(row(a, 0, 0, 0), row(a, 1, 0, 0), sizeof(int32_t) * NKEEP));
    CHECK(memcmp(row(a, 0, 0, 0), row(a, 0, 0, 1), sizeof(int32_t) * NKEEP));
    jobs S = J;
    S.seed[0] = 99;
    run(d1, &S, &p, b2, NULL);
    CHECK(memcmp(row(a, 0, 0, 0), row(b2, 0, 0, 0), sizeof(int32_t) * NKEEP));
    job_rows(b2, 1, got);
    CHECK(!memcmp(got, want[1], sizeof got));
    /* uniform: over 400 seeds, each unprotected position of job 0 (k = 2, kv_len 40: 34
     * candidates for 18 places) is kept with frequency 18/34 = 0.53, within 0.1 */
    static int count[POS];
    memset(count, 0, sizeof count);
    int trials = 400;
    for (int s = 0; s < trials; s++) {
        S.seed[0] = 1000 + s;
        run(d1, &S, &p, b2, NULL);
        for (int t = 0; t < NKEEP; t++)
            count[row(b2, 0, 0, 0)[t]]++;
    }
    double expect = (double)(NKEEP - SINK - QCL) / (double)(J.kvl[0] - SINK - QCL);
    for (int pos = SINK; pos < J.kvl[0] - QCL; pos++)
        CHECKF(fabs((double)count[pos] / trials - expect) < 0.1,
               "random: position %d kept %d of %d times (expected %.2f)", pos, count[pos], trials,
               expect);
}

/* Rows of keep[L][NJ][HKV][NKEEP] summed: how many of each job's newest R positions are
 * missing (kept positions are ascending, so they are the row's last entries when kept). */
static int missing_newest(const int32_t *keep, const jobs *J, int R) {
    int miss = 0;
    for (int l = 0; l < L; l++)
        for (int b = 0; b < NJ; b++)
            for (int h = 0; h < HKV; h++) {
                const int32_t *k = row(keep, l, b, h);
                int n = 0;
                for (int t = 0; t < NKEEP; t++)
                    n += k[t] >= J->kvl[b] - R && k[t] < J->kvl[b];
                miss += J->nkeep[b] ? R - n : 0;
            }
    return miss;
}

static void test_recent(dev *d) {
    enum { R = 6 }; /* > QCL, below every job's cap (NKEEP - k) / 2 */
    jobs J = base_jobs();
    static int32_t keep[L * NJ * HKV * NKEEP];
    const int policies[] = {BE_EVICT_RANDOM, BE_EVICT_SCORE};
    for (int i = 0; i < 2; i++) {
        be_cparams p = params(policies[i]);
        run(d, &J, &p, keep, NULL);
        int without = missing_newest(keep, &J, R);
        CHECKF(without > 0, "policy %d without a recent window keeps all %d newest", policies[i], R);
        CHECK(missing_newest(keep, &J, QCL) == 0);
        p.recent = R;
        run(d, &J, &p, keep, NULL);
        CHECKF(missing_newest(keep, &J, R) == 0,
               "policy %d, recent %d: %d of the newest positions evicted", policies[i], R,
               missing_newest(keep, &J, R));
    }
    /* a window larger than the cap, half of what the protected prefix leaves of n_keep: the
     * newest (NKEEP - k) / 2 are kept (random: the rest still varies), the prefix too */
    be_cparams p = params(BE_EVICT_RANDOM);
    p.recent = 1000;
    for (int b = 0; b < NJ; b++) {
        jobs one = J;
        for (int o = 0; o < NJ; o++)
            one.nkeep[o] = o == b ? NKEEP : 0; /* this job's rows only */
        one.protect[2] = 20; /* k + NKEEP / 2 > NKEEP: a window capped at n_keep / 2 would win */
        int k = first_k(&one, b), cap = (NKEEP - k) / 2;
        run(d, &one, &p, keep, NULL);
        CHECKF(missing_newest(keep, &one, cap) == 0, "job %d: the capped window %d lost", b, cap);
        if (NKEEP - k > 2 * QCL) /* room beyond the qcl newest: random leaves some of it */
            CHECKF(missing_newest(keep, &one, NKEEP - k) > 0, "job %d: window not capped", b);
        for (int l = 0; l < L; l++)
            for (int h = 0; h < HKV; h++)
                for (int t = 0; t < k; t++)
                    CHECKF(row(keep, l, b, h)[t] == t, "job %d: protected %d lost", b, t);
    }
}

/* Oracle: job b has sequence length SL[b] (> kv_len: tokens were evicted before), its C
 * below the last block holds original positions 3 p + b (ascending, as compaction keeps
 * them); the record of job 2 is shorter than its sequence, so its newest positions score 0. */
static void test_oracle(dev *d1, dev *d2) {
    enum { CHUNK = 8 };
    static const int32_t SL[NJ] = {150, 140, 130}, NPOS[NJ] = {150, 140, 129};
    static float tab[NJ][L * HKV * 150 * 19];
    be_oracle o[NJ];
    const be_oracle *op[NJ];
    unsigned long long seed = 11;
    for (int b = 0; b < NJ; b++) {
        o[b] = (be_oracle){NPOS[b], CHUNK, (NPOS[b] + CHUNK - 1) / CHUNK, tab[b]};
        for (size_t i = 0; i < (size_t)L * HKV * (size_t)NPOS[b] * (size_t)o[b].n_chunks; i++)
            tab[b][i] = 0.5f + 0.5f * test_randf(&seed);
        op[b] = &o[b];
    }
    jobs J = base_jobs();
    int carried = (NB - 1) * BS;
    for (int l = 0; l < L; l++) {
        static float c[NBLK * HKV * BS];
        REQUIRE(d1->be->download(d1->be, c, d1->cc[l], sizeof c) == 0);
        for (int b = 0; b < NJ; b++)
            for (int h = 0; h < HKV; h++)
                for (int pos = 0; pos < carried; pos++)
                    c[(J.src[b * NB + pos / BS] * HKV + h) * BS + pos % BS] = (float)(3 * pos + b);
        REQUIRE(d1->be->upload(d1->be, d1->cc[l], c, sizeof c) == 0);
        REQUIRE(d2->be->upload(d2->be, d2->cc[l], c, sizeof c) == 0);
    }
    d1->j.oracle = d2->j.oracle = op;
    d1->j.seq_len = d2->j.seq_len = SL;
    be_cparams p = params(BE_EVICT_ORACLE);
    static int32_t keep[L * NJ * HKV * NKEEP], keep2[L * NJ * HKV * NKEEP];
    static float sc[L * NJ * HKV * POS];
    run(d1, &J, &p, keep, sc);
    run(d2, &J, &p, keep2, NULL);
    CHECK(!memcmp(keep, keep2, sizeof keep));
    int past = 0;
    for (int l = 0; l < L; l++) {
        static float c[NBLK * HKV * BS];
        REQUIRE(d1->be->download(d1->be, c, d1->cc[l], sizeof c) == 0);
        for (int b = 0; b < NJ; b++)
            for (int h = 0; h < HKV; h++) {
                const float *s = sc + (((size_t)l * NJ + (size_t)b) * HKV + (size_t)h) * POS;
                int kvl = J.kvl[b], col = SL[b] / CHUNK;
                float lo_kept = INFINITY, hi_evicted = -INFINITY;
                const int32_t *k = row(keep, l, b, h);
                for (int pos = 0; pos < kvl; pos++) {
                    int orig = pos < carried ? 3 * pos + b : SL[b] - kvl + pos;
                    float want =
                        orig < NPOS[b]
                            ? tab[b]
                                 [(((size_t)l * HKV + (size_t)h) * (size_t)NPOS[b] + (size_t)orig) *
                                      (size_t)o[b].n_chunks +
                                  (size_t)col]
                            : 0.0f;
                    past += orig >= NPOS[b];
                    CHECKF(s[pos] == want, "oracle l%d b%d h%d p%d: score %g, want %g", l, b, h,
                           pos, s[pos], want);
                    int slot = (J.src[b * NB + pos / BS] * HKV + h) * BS + pos % BS;
                    CHECKF(c[slot] == (float)orig, "oracle: C of l%d b%d h%d p%d is %g, want %d", l,
                           b, h, pos, c[slot], orig);
                    if (pos < first_k(&J, b) || pos >= kvl - QCL) continue;
                    bool kept = false;
                    for (int t = 0; t < NKEEP; t++)
                        kept |= k[t] == pos;
                    if (kept)
                        lo_kept = fminf(lo_kept, s[pos]);
                    else
                        hi_evicted = fmaxf(hi_evicted, s[pos]);
                }
                CHECKF(lo_kept >= hi_evicted, "oracle l%d b%d h%d: kept %g below evicted %g", l, b,
                       h, lo_kept, hi_evicted);
            }
    }
    CHECK(past > 0); /* job 2's record ends before its sequence */
    d1->j.oracle = d2->j.oracle = NULL;
    d1->j.seq_len = d2->j.seq_len = NULL;
}

int main(void) {
    dev d1, d2;
    dev_open(&d1, 1);
    dev_open(&d2, 2);
    test_streaming(&d1);
    test_random(&d1, &d2);
    test_recent(&d1);
    test_oracle(&d1, &d2);
    /* the score policy is what it was: a different selection from both baselines */
    static int32_t s[L * NJ * HKV * NKEEP], r[L * NJ * HKV * NKEEP];
    jobs J = base_jobs();
    be_cparams p = params(BE_EVICT_SCORE);
    run(&d1, &J, &p, s, NULL);
    p.policy = BE_EVICT_STREAMING;
    run(&d1, &J, &p, r, NULL);
    CHECK(memcmp(s, r, sizeof s));
    p.policy = 9;
    CHECK(d1.be->check(d1.be, &p) == ZP_EINVAL);
    d1.be->destroy(d1.be);
    d2.be->destroy(d2.be);
    return test_done("test_compress_policy");
}
