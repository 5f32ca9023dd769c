/* Paged attention (rtc_kernels/attention.cu: zp_attn_partial or zp_attn_decode_mma, then
 * zp_attn_merge) against the CPU backend's attention on fresh random q, K and V (bf16), outputs
 * poisoned first, each partial kernel in turn (the mma one with drv/attn_abi.h's shared memory):
 * decode rows at context lengths from 1 to 4,100, a prefill chunk attending causally in cache
 * order, and padded rows (tok_seq -1, zero output, rows past the device-side count untouched);
 * shuffled block tables; head dims 64 and 128, block sizes 16 to 256, GQA groups 1 to 8; the
 * KV length split 1, 3 and 8 ways. ||d||/||ref|| <= 1e-2 (bf16 output), never a NaN. Each
 * partial kernel again over a list of rows (every third row and the padded ones, as the backend
 * lists the rows no prefill q-tile covers): the listed rows' partials bit-identical to the full
 * grid's, every other row's untouched.
 * SKIP without a GPU. */
#include "drv/attn_abi.h"
#include "drv/backend.h"
#include "tests/cuda_util.h"

#include <stdlib.h>

static gpu G, *g = &G;
static backend *cpu;
static unsigned long long seed = 0xa77e;

#define P(x) ((be_ptr)(uintptr_t)(x))

static void run_case(int D, int bs, int gqa, int hkv) {
    const int hq = hkv * gqa;
    static const int dec_len[] = {1, 2, 15, 16, 17, 100, 255, 256, 257, 1000, 2048, 4100};
    const int n_dec = (int)(sizeof dec_len / sizeof dec_len[0]), pre_len = 45, pre_ctx = 300;
    const int n_seqs = n_dec + 1, n_tok = n_dec + pre_len, n_pad = 3, cap = n_tok + n_pad + 4;
    int max_len = pre_ctx;
    for (int i = 0; i < n_dec; i++) max_len = dec_len[i] > max_len ? dec_len[i] : max_len;
    const int max_blocks = (max_len + bs - 1) / bs;
    int nblocks = 1;
    for (int i = 0; i < n_dec; i++) nblocks += (dec_len[i] + bs - 1) / bs;
    nblocks += (pre_ctx + bs - 1) / bs;
    /* a shuffled permutation of physical blocks (block 0 unused: the null block) */
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)nblocks);
    for (int i = 0; i < nblocks; i++) perm[i] = i;
    for (int i = nblocks - 1; i > 1; i--) {
        int j = 1 + (int)(test_rand_u64(&seed) % (unsigned)i);
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    int32_t *bt = calloc((size_t)n_seqs * max_blocks, sizeof(int32_t));
    int used = 1;
    for (int s = 0; s < n_seqs; s++) {
        int len = s < n_dec ? dec_len[s] : pre_ctx;
        for (int b = 0; b < (len + bs - 1) / bs; b++) bt[s * max_blocks + b] = perm[used++];
    }
    int32_t *tok_seq = malloc(sizeof(int32_t) * (size_t)cap), *tok_idx = malloc(sizeof(int32_t) * (size_t)cap);
    for (int t = 0; t < n_dec; t++) tok_seq[t] = t, tok_idx[t] = dec_len[t] - 1;
    for (int t = 0; t < pre_len; t++) /* the last pre_len positions of a 300-token context */
        tok_seq[n_dec + t] = n_dec, tok_idx[n_dec + t] = pre_ctx - pre_len + t;
    for (int t = n_tok; t < cap; t++) tok_seq[t] = -1, tok_idx[t] = 0;
    const size_t cache_n = (size_t)nblocks * hkv * bs * D, q_n = (size_t)cap * hq * D;
    uint16_t *kc = malloc(2 * cache_n), *vc = malloc(2 * cache_n), *q = malloc(2 * q_n);
    float *qf = malloc(4 * q_n);
    rand_bf16(kc, NULL, cache_n, 2.f, &seed);
    rand_bf16(vc, NULL, cache_n, 1.f, &seed);
    rand_bf16(q, qf, q_n, 1.f, &seed);
    const float scale = 1.f / sqrtf((float)D);

    /* CPU reference over the real rows */
    float *ref = malloc(4 * (size_t)n_tok * hq * D);
    be_batch b = {.n_tokens = n_tok, .n_seqs = n_seqs, .max_blocks = max_blocks,
                  .tok_seq = P(tok_seq), .tok_kv_idx = P(tok_idx), .block_tables = P(bt)};
    cpu->attention(cpu, P(ref), P(qf), P(kc), P(vc), ZP_BF16, &b, hq, hkv, D, bs, scale);

    CUmodule m = gpu_module(g, "attention.cu", D, bs, gqa);
    static const char *const kname[2] = {"zp_attn_partial", "zp_attn_decode_mma"};
    const unsigned ksmem[2] = {0, (unsigned)attn_mma_smem_bytes(D, attn_mma_stages(D))};
    CUfunction fps[2] = {gpu_fn(g, m, kname[0]), gpu_fn(g, m, kname[1])};
    CU(g->drv.FuncSetAttribute(fps[1], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                               (int)ksmem[1]));
    CUfunction fm = gpu_fn(g, m, "zp_attn_merge");
    int32_t n_rows = n_tok + n_pad; /* padded rows are counted; rows past the count are not */
    CUdeviceptr d_q = gpu_up(g, q, 2 * q_n), d_kc = gpu_up(g, kc, 2 * cache_n), d_vc = gpu_up(g, vc, 2 * cache_n),
                d_seq = gpu_up(g, tok_seq, 4 * (size_t)cap), d_idx = gpu_up(g, tok_idx, 4 * (size_t)cap),
                d_bt = gpu_up(g, bt, 4 * (size_t)n_seqs * max_blocks), d_n = gpu_up(g, &n_rows, 4);
    static const int splits[] = {1, 3, 8};
    for (int kk = 0; kk < 2; kk++)
        for (int si = 0; si < 3; si++) {
            CUfunction fp = fps[kk];
            int n_split = splits[si];
            int chunk = (max_len + n_split - 1) / n_split;
            chunk = (chunk + bs - 1) / bs * bs;
            CUdeviceptr d_po = gpu_poisoned(g, 4 * (size_t)cap * hq * n_split * D),
                        d_pml = gpu_poisoned(g, 4 * (size_t)cap * hq * n_split * 2),
                        d_out = gpu_poisoned(g, 2 * q_n);
            int mb = max_blocks, hk = hkv, hqv = hq;
            float sc = scale;
            CUdeviceptr no_rows = 0; /* every row of the grid */
            void *pa[] = {&d_q, &d_kc, &d_vc, &d_seq, &d_idx,   &d_bt, &d_n,  &no_rows,
                          &mb,  &hk,   &sc,   &chunk, &n_split, &d_po, &d_pml};
            gpu_launch(g, fp, (unsigned)n_split, (unsigned)hkv, (unsigned)cap, 128, ksmem[kk], pa);
            size_t listed_differ = 0, unlisted_written = 0;
            {
                const size_t po_row = (size_t)hq * n_split * D, ml_row = (size_t)hq * n_split * 2;
                int32_t *rows = malloc(4 * (size_t)cap), n_listed = 0;
                for (int t = 0; t < n_rows; t++)
                    if (t % 3 == 1 || t >= n_tok) rows[n_listed++] = t;
                CUdeviceptr d_rows = gpu_up(g, rows, 4 * (size_t)n_listed),
                            d_po2 = gpu_poisoned(g, 4 * (size_t)cap * po_row),
                            d_pml2 = gpu_poisoned(g, 4 * (size_t)cap * ml_row);
                void *pl[] = {&d_q, &d_kc, &d_vc,  &d_seq,   &d_idx, &d_bt,  &d_n,   &d_rows,
                              &mb,  &hk,   &sc,    &chunk,   &n_split, &d_po2, &d_pml2};
                gpu_launch(g, fp, (unsigned)n_split, (unsigned)hkv, (unsigned)n_listed, 128,
                           ksmem[kk], pl);
                const size_t on = (size_t)cap * po_row, mn = (size_t)cap * ml_row;
                uint32_t *o1 = malloc(4 * on), *o2 = malloc(4 * on), *m1 = malloc(4 * mn),
                         *m2 = malloc(4 * mn);
                gpu_down(g, o1, d_po, 4 * on);
                gpu_down(g, o2, d_po2, 4 * on);
                gpu_down(g, m1, d_pml, 4 * mn);
                gpu_down(g, m2, d_pml2, 4 * mn);
                for (int t = 0, k = 0; t < cap; t++) {
                    const size_t ot = (size_t)t * po_row, mt = (size_t)t * ml_row;
                    const int listed = k < n_listed && rows[k] == t;
                    k += listed;
                    if (listed) {
                        listed_differ += memcmp(o1 + ot, o2 + ot, 4 * po_row) != 0;
                        listed_differ += memcmp(m1 + mt, m2 + mt, 4 * ml_row) != 0;
                        continue;
                    }
                    for (size_t i = 0; i < po_row; i++) unlisted_written += o2[ot + i] != ~0u;
                    for (size_t i = 0; i < ml_row; i++) unlisted_written += m2[mt + i] != ~0u;
                }
                CU(g->drv.MemFree(d_rows));
                CU(g->drv.MemFree(d_po2));
                CU(g->drv.MemFree(d_pml2));
                free(rows), free(o1), free(o2), free(m1), free(m2);
            }
            CHECKF(listed_differ == 0 && unlisted_written == 0,
                   "%s split %d over listed rows: %zu listed rows differ, %zu values of other rows "
                   "written",
                   kname[kk], n_split, listed_differ, unlisted_written);
            void *ma[] = {&d_po, &d_pml, &d_n, &hqv, &n_split, &d_out};
            gpu_launch(g, fm, attn_merge_blocks(hq), (unsigned)cap, 1, 32 * ZP_MERGE_HEADS, 0, ma);
            uint16_t *oh = malloc(2 * q_n);
            float *of = malloc(4 * q_n);
            gpu_down(g, oh, d_out, 2 * q_n);
            bf16_to_f32(of, oh, q_n);
            cmp c = cmp_f32(of, ref, (size_t)n_tok * hq * D);
            size_t pad_nonzero = 0, past_written = 0;
            for (size_t i = (size_t)n_tok * hq * D; i < (size_t)(n_tok + n_pad) * hq * D; i++)
                pad_nonzero += oh[i] != 0;
            for (size_t i = (size_t)(n_tok + n_pad) * hq * D; i < q_n; i++)
                past_written += oh[i] != 0xFFFF;
            /* the worst token row, to localise a failure */
            double worst = 0;
            int worst_t = -1;
            for (int t = 0; t < n_tok; t++) {
                cmp r = cmp_f32(of + (size_t)t * hq * D, ref + (size_t)t * hq * D, (size_t)hq * D);
                if (r.nan || r.rel > worst) worst = r.nan ? INFINITY : r.rel, worst_t = t;
            }
            printf("  %-18s D %3d bs %3d gqa %d hkv %d split %d (chunk %4d): rel %.3g NaN %zu, "
                   "worst row %d (%.3g); "
                   "pad rows nonzero %zu, rows past count written %zu\n",
                   kname[kk], D, bs, gqa, hkv, n_split, chunk, c.rel, c.nan, worst_t, worst,
                   pad_nonzero, past_written);
            CHECKF(c.nan == 0 && c.rel <= 1e-2, "%s D %d bs %d gqa %d split %d: rel %.3g, %zu NaN",
                   kname[kk], D, bs, gqa, n_split, c.rel, c.nan);
            CHECKF(pad_nonzero == 0 && past_written == 0, "padding contract broken");
            free(oh), free(of);
        }
    CU(g->drv.ModuleUnload(m));
    free(perm), free(bt), free(tok_seq), free(tok_idx), free(kc), free(vc), free(q), free(qf), free(ref);
}

int main(void) {
    int rc = gpu_open(g);
    if (rc) return rc;
    REQUIRE(!cpu_backend_create(&cpu, 8, 4096, CPU_ISA_AUTO, CPU_PREC_F32));
    run_case(128, 16, 4, 8);
    run_case(128, 16, 1, 4);
    run_case(128, 32, 2, 4);
    run_case(128, 64, 8, 2);
    run_case(128, 128, 4, 2);
    run_case(64, 256, 1, 4);
    run_case(64, 16, 8, 1);
    cpu->destroy(cpu);
    return test_done("cuda_attention");
}
