/* test_cpu_attention: the CPU backend's paged attention (vectorised exp, K/V rows widened from
 * their own dtype) against a double-precision softmax, for f32, bf16 and f16 caches, GQA group 2,
 * scrambled block tables and contexts that end inside and across the 64-position chunks of the
 * online softmax (1 to 150 positions).
 *
 * Checked: every output within 1e-5 of the reference (relative to sum p |v|); the same bits for
 * 1, 2 and 3 threads; each token alone gives the bits it has in the whole batch.
 */
#include "drv/backend.h"
#include "tests/testlib.h"

#include <math.h>
#include <string.h>

enum { HKV = 2, G = 2, HQ = HKV * G, D = 40, BS = 16, NBLK = 24, MAXB = 10, NT = 6 };

static const int32_t kv_idx[NT] = {0, 7, 63, 64, 100, 149};
static float Kf[NBLK * HKV * BS * D], Vf[NBLK * HKV * BS * D], Q[NT * HQ * D];
static uint16_t K16[NBLK * HKV * BS * D], V16[NBLK * HKV * BS * D];
static int32_t bt[NT * MAXB];

static size_t row(int t, int h, int p) {
    int blk = bt[t * MAXB + p / BS];
    return (((size_t)blk * HKV + (size_t)h) * BS + (size_t)(p % BS)) * D;
}

/* out[rows][HQ][D] for tokens [t0, t0 + rows). */
static void attend(int threads, zp_dtype kvt, int t0, int rows, float *out) {
    backend *be;
    REQUIRE(cpu_backend_create(&be, threads, 64, CPU_ISA_AUTO, CPU_PREC_F32) == 0);
    REQUIRE(be->reserve(be, 4u << 20, 0) == 0);
    size_t es = zp_dtype_size(kvt), cache = sizeof Kf / sizeof *Kf * es;
    be_ptr kc, vc, q, o, meta;
    int32_t m[2 * NT + NT * MAXB];
    for (int t = 0; t < rows; t++)
        m[t] = t, m[NT + t] = kv_idx[t0 + t];
    memcpy(m + 2 * NT, bt + t0 * MAXB, sizeof(int32_t) * (size_t)rows * MAXB);
    REQUIRE(!be->alloc(be, cache, 64, &kc, "k") && !be->alloc(be, cache, 64, &vc, "v") &&
            !be->alloc(be, sizeof Q, 64, &q, "q") && !be->alloc(be, sizeof Q, 64, &o, "o") &&
            !be->alloc(be, sizeof m, 64, &meta, "meta"));
    REQUIRE(!be->upload(be, kc, kvt == ZP_F32 ? (const void *)Kf : K16, cache) &&
            !be->upload(be, vc, kvt == ZP_F32 ? (const void *)Vf : V16, cache) &&
            !be->upload(be, q, Q + (size_t)t0 * HQ * D, sizeof(float) * (size_t)rows * HQ * D) &&
            !be->upload(be, meta, m, sizeof m));
    be_batch b = {.n_tokens = rows,
                  .n_seqs = rows,
                  .max_blocks = MAXB,
                  .tok_seq = meta,
                  .tok_kv_idx = meta + 4 * NT,
                  .block_tables = meta + 8 * NT};
    be->attention(be, o, q, kc, vc, kvt, &b, HQ, HKV, D, BS, 1.0f / sqrtf((float)D));
    REQUIRE(be->sync(be) == 0);
    REQUIRE(!be->download(be, out, o, sizeof(float) * (size_t)rows * HQ * D));
    be->destroy(be);
}

int main(void) {
    unsigned long long s = 11;
    for (size_t i = 0; i < sizeof Kf / sizeof *Kf; i++)
        Kf[i] = 2 * test_randf(&s), Vf[i] = test_randf(&s);
    for (size_t i = 0; i < sizeof Q / sizeof *Q; i++)
        Q[i] = 2 * test_randf(&s);
    for (int t = 0; t < NT; t++) /* scrambled block tables (rows may share blocks: read only) */
        for (int i = 0; i < MAXB; i++)
            bt[t * MAXB + i] = (5 * t + (MAXB - 1 - i) * 7) % NBLK;
    static float out[NT * HQ * D], other[NT * HQ * D];
    for (int kt = 0; kt < 3; kt++) {
        zp_dtype kvt = (zp_dtype)kt;
        if (kvt != ZP_F32) /* the caches in kvt; the reference reads the same values */
            for (size_t i = 0; i < sizeof Kf / sizeof *Kf; i++) {
                K16[i] = kvt == ZP_BF16 ? zp_f32_to_bf16(Kf[i]) : zp_f32_to_f16(Kf[i]);
                V16[i] = kvt == ZP_BF16 ? zp_f32_to_bf16(Vf[i]) : zp_f32_to_f16(Vf[i]);
            }
        const void *kd = kvt == ZP_F32 ? (const void *)Kf : K16;
        const void *vd = kvt == ZP_F32 ? (const void *)Vf : V16;
        attend(2, kvt, 0, NT, out);
        double worst = 0;
        for (int t = 0; t < NT; t++)
            for (int h = 0; h < HQ; h++) {
                const float *qh = Q + ((size_t)t * HQ + (size_t)h) * D;
                int kh = h / G, n = kv_idx[t] + 1;
                double z[150], mx = -INFINITY, sum = 0;
                for (int p = 0; p < n; p++) {
                    double d = 0;
                    for (int j = 0; j < D; j++)
                        d += (double)qh[j] * zp_load(kd, kvt, row(t, kh, p) + (size_t)j);
                    z[p] = d / sqrt((double)D);
                    mx = z[p] > mx ? z[p] : mx;
                }
                for (int p = 0; p < n; p++)
                    sum += z[p] = exp(z[p] - mx);
                for (int j = 0; j < D; j++) {
                    double ref = 0, mag = 0;
                    for (int p = 0; p < n; p++) {
                        double v = zp_load(vd, kvt, row(t, kh, p) + (size_t)j);
                        ref += z[p] / sum * v, mag += z[p] / sum * fabs(v);
                    }
                    double e = fabs(out[((size_t)t * HQ + (size_t)h) * D + (size_t)j] - ref) / mag;
                    worst = e > worst ? e : worst;
                }
            }
        CHECKF(worst <= 1e-5, "%s cache: relative error %.3g", zp_dtype_name(kvt), worst);
        for (int th = 1; th <= 3; th += 2) {
            attend(th, kvt, 0, NT, other);
            CHECKF(!memcmp(out, other, sizeof out), "%s cache: %d threads differ from 2",
                   zp_dtype_name(kvt), th);
        }
        for (int t = 0; t < NT; t++) {
            attend(1, kvt, t, 1, other);
            CHECKF(!memcmp(out + (size_t)t * HQ * D, other, sizeof(float) * HQ * D),
                   "%s cache: token %d alone differs from the batch", zp_dtype_name(kvt), t);
        }
        printf("%s cache: max relative error %.3g\n", zp_dtype_name(kvt), worst);
    }
    return test_done("cpu_attention");
}
