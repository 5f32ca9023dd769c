/* test_attn_record: the oracle baseline's recording op (backend attn_record, CPU) against a
 * direct double-precision softmax on fresh random keys and queries: for every recorded row
 * (full KV: cache index = position), kv head and position p <= the row's index, the cell of
 * the row's layer and query chunk holds max over the group's query heads of the attention
 * probability, within 1e-5 relative; cells of other layers, chunks and rows stay as they
 * were; a row without a record writes nothing; the fold keeps a larger value already there;
 * 1 and 2 threads give the same bits. */
#include "drv/backend.h"
#include "tests/testlib.h"

#include <math.h>
#include <string.h>

enum { LAYERS = 2, LAYER = 1, HKV = 2, G = 2, HQ = HKV * G, D = 16, BS = 4, NBLK = 12, MAXB = 6 };
enum { NT = 3, NPOS = 24, CHUNK = 8, NCH = NPOS / CHUNK };

static const int32_t kv_idx[NT] = {9, 20, 5}; /* = positions */
static float K[NBLK * HKV * BS * D], Q[NT * HQ * D];
static int32_t bt[NT * MAXB];

/* Cell (layer, kv head, position, chunk) of a record. */
static size_t cell(int l, int h, int p, int c) {
    return (((size_t)l * HKV + (size_t)h) * NPOS + (size_t)p) * NCH + (size_t)c;
}

static void record(int threads, float *tab0, float *tab2) {
    backend *be;
    REQUIRE(cpu_backend_create(&be, threads, 64, CPU_ISA_AUTO, CPU_PREC_F32) == 0);
    REQUIRE(be->reserve(be, 1u << 20, 0) == 0);
    be_ptr kc, q, meta;
    int32_t m[4 * NT + NT * MAXB];
    for (int t = 0; t < NT; t++)
        m[t] = t, m[NT + t] = kv_idx[t], m[2 * NT + t] = kv_idx[t];
    memcpy(m + 3 * NT, bt, sizeof bt);
    REQUIRE(be->alloc(be, sizeof K, 64, &kc, "k") == 0 &&
            be->alloc(be, sizeof Q, 64, &q, "q") == 0 &&
            be->alloc(be, sizeof m, 64, &meta, "meta") == 0);
    REQUIRE(be->upload(be, kc, K, sizeof K) == 0 && be->upload(be, q, Q, sizeof Q) == 0 &&
            be->upload(be, meta, m, sizeof m) == 0);
    be_batch b = {.n_tokens = NT,
                  .n_seqs = NT,
                  .max_blocks = MAXB,
                  .tok_seq = meta,
                  .tok_kv_idx = meta + 4 * NT,
                  .positions = meta + 8 * NT,
                  .block_tables = meta + 12 * NT};
    be_oracle o0 = {NPOS, CHUNK, NCH, tab0}, o2 = {NPOS, CHUNK, NCH, tab2};
    const be_oracle *rec[NT] = {&o0, NULL, &o2};
    REQUIRE(be->attn_record != NULL);
    be->attn_record(be, rec, LAYER, q, kc, ZP_F32, &b, HQ, HKV, D, BS, 1.0f / sqrtf((float)D));
    REQUIRE(be->sync(be) == 0);
    be->destroy(be);
}

int main(void) {
    unsigned long long s = 5;
    for (size_t i = 0; i < sizeof K / sizeof *K; i++)
        K[i] = 2 * test_randf(&s);
    for (size_t i = 0; i < sizeof Q / sizeof *Q; i++)
        Q[i] = 2 * test_randf(&s);
    for (int t = 0; t < NT; t++) /* scrambled block tables (rows may share blocks: read only) */
        for (int i = 0; i < MAXB; i++)
            bt[t * MAXB + i] = (4 * t + (MAXB - 1 - i) * 7) % NBLK;
    static float a1[LAYERS * HKV * NPOS * NCH], c1[LAYERS * HKV * NPOS * NCH];
    static float a2[LAYERS * HKV * NPOS * NCH], c2[LAYERS * HKV * NPOS * NCH];
    /* a larger value already in row 0's record survives the fold */
    size_t big = cell(LAYER, 1, 3, kv_idx[0] / CHUNK);
    a1[big] = a2[big] = 2.0f;
    record(1, a1, c1);
    record(2, a2, c2);
    CHECK(!memcmp(a1, a2, sizeof a1) && !memcmp(c1, c2, sizeof c1));
    const float *tabs[NT] = {a1, NULL, c1};
    int checked = 0;
    for (int t = 0; t < NT; t++) {
        if (!tabs[t]) continue;
        const float *a = tabs[t];
        for (int h = 0; h < HKV; h++) {
            double best[NPOS] = {0};
            for (int g = 0; g < G; g++) {
                const float *qg = Q + ((size_t)t * HQ + (size_t)(h * G + g)) * D;
                double z[NPOS], mx = -INFINITY, sum = 0;
                for (int p = 0; p <= kv_idx[t]; p++) {
                    const float *k =
                        K + (((size_t)bt[t * MAXB + p / BS] * HKV + (size_t)h) * BS + p % BS) * D;
                    double dot = 0;
                    for (int j = 0; j < D; j++)
                        dot += (double)qg[j] * k[j];
                    z[p] = dot / sqrt((double)D);
                    mx = fmax(mx, z[p]);
                }
                for (int p = 0; p <= kv_idx[t]; p++)
                    sum += exp(z[p] - mx);
                for (int p = 0; p <= kv_idx[t]; p++)
                    best[p] = fmax(best[p], exp(z[p] - mx) / sum);
            }
            for (int l = 0; l < LAYERS; l++)
                for (int p = 0; p < NPOS; p++)
                    for (int c = 0; c < NCH; c++) {
                        size_t i = cell(l, h, p, c);
                        double want =
                            l == LAYER && c == kv_idx[t] / CHUNK && p <= kv_idx[t] ? best[p] : 0;
                        if (t == 0 && i == big) want = 2.0;
                        CHECKF(fabs(a[i] - want) <= 1e-5 * fmax(want, 1e-3),
                               "row %d h%d l%d p%d c%d: %g, want %g", t, h, l, p, c, a[i], want);
                        checked += want > 0;
                    }
        }
    }
    CHECK(checked == 2 * (10 + 6)); /* positions 0..9 and 0..5, 2 kv heads each */
    return test_done("test_attn_record");
}
