/* zipage bench attention: kernel-level paged attention on the GPU.
 *
 * Decode (default): for each block size x context length x GQA group: B decode rows, each at
 * the given context, over a KV pool of bf16 pages in a shuffled block table (head dim 128
 * unless --head-dim); times zp_attn_partial + zp_attn_merge and zp_attn_decode_mma +
 * zp_attn_merge (the two decode kernels of conf key attention_kernel, simt and mma) with CUDA
 * events (median of --iters after warm-up) and reports the KV bytes read per second of each;
 * --mma-stages N compiles the mma kernel with an N-stage ring instead of drv/attn_abi.h's (for
 * tuning). The split over the KV length is
 * chosen as the backend will: enough CTAs for two waves of the GPU's SMs, chunks of at least
 * 256 tokens. tools/peer_sdpa.py measures torch SDPA on the same shapes over contiguous KV.
 * Prefill (--prefill N [--prefix P]): for each block size (default: the conf's block_size) x
 * GQA group (default 4): one prompt of N rows over a cached prefix of P tokens (row i attends
 * cache indices [0, P+i]), random bf16 data, chunks of the conf's attention_chunk as the
 * backend splits them (the prompt rows of the tensor-core path in splits of the conf's
 * attention_prefill_chunk). Times the old path (every row through zp_attn_partial, then
 * zp_attn_merge) beside the tensor-core one as the backend runs a step of prompt rows alone
 * (the prefill kernel of conf key attention_prefill_kernel over the q-tiles of
 * attn_prefill_tiles in a grid of attn_prefill_splits, zp_attn_merge; no decode kernel) and
 * the prefill kernel alone; reports the prefill
 * kernel's TFLOP/s (4 D flops per query head and attended key) and how far the two outputs
 * differ (||d||/||old||, bf16; above 1e-2 fails).
 * Output: a table, and one JSON object per point with --json FILE. */
#include "arena/err.h"
#include "drv/attn_abi.h"
#include "drv/attn_tiles.h"
#include "drv/cuda.h"
#include "drv/dtype.h"
#include "drv/nvrtc.h"
#include "tools/cli.h"

#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_list(const char *s, int *out, int cap, const char *opt) {
    int n = 0;
    for (const char *p = s; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > (1 << 20) || n >= cap)
            return err_set(ZP_EINVAL, "%s: '%s' is not a list of positive integers", opt, s);
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return err_set(ZP_EINVAL, "%s: bad list '%s'", opt, s);
    }
    return n;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

#define CK(call, what)                                                                             \
    do {                                                                                           \
        if ((rc = cuda_err(drv, (call), what))) goto out;                                          \
    } while (0)

static unsigned long long lcg(unsigned long long *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* n random bf16 values in [-amp, amp) into device memory, through host scratch. */
static int rand_up(cuda_drv *drv, cuda_dev *dev, arena *a, CUdeviceptr dst, size_t n, float amp,
                   unsigned long long *s) {
    uint16_t *h = arena_temp(a, n * 2, 64, "bench data");
    if (!h) return ZP_ENOMEM;
    for (size_t i = 0; i < n; i++)
        h[i] = zp_f32_to_bf16(((float)lcg(s) / 2147483648.0f - 1.0f) * amp);
    int rc = cuda_err(drv, drv->MemcpyHtoDAsync(dst, h, n * 2, dev->compute), "upload");
    if (!rc) rc = cuda_err(drv, drv->StreamSynchronize(dev->compute), "upload");
    arena_temp_reset(a, 0);
    return rc;
}

/* Median milliseconds of `iters` runs (after 3 warm-up runs) of n launches on the queue. */
typedef struct launch_spec {
    CUfunction f;
    unsigned gx, gy, gz, block;
    void **args;
    unsigned smem; /* dynamic shared memory */
} launch_spec;

static int time_launches(cuda_drv *drv, cuda_dev *dev, CUevent e0, CUevent e1,
                         const launch_spec *l, int n, int iters, float *ms, float *med) {
    int rc = 0;
    for (int it = -3; it < iters; it++) {
        CK(drv->EventRecord(e0, dev->compute), "cuEventRecord");
        for (int i = 0; i < n; i++)
            CK(drv->LaunchKernel(l[i].f, l[i].gx, l[i].gy, l[i].gz, l[i].block, 1, 1, l[i].smem,
                                 dev->compute, l[i].args, NULL),
               "attention launch");
        CK(drv->EventRecord(e1, dev->compute), "cuEventRecord");
        CK(drv->EventSynchronize(e1), "cuEventSynchronize");
        if (it >= 0) CK(drv->EventElapsedTime(&ms[it], e0, e1), "cuEventElapsedTime");
    }
    qsort(ms, (size_t)iters, sizeof ms[0], cmpf);
    *med = ms[iters / 2];
out:
    return rc;
}

/* ||a - b|| / ||b|| over n bf16 values in device memory, downloaded a piece at a time. */
static int rel_diff(cuda_drv *drv, cuda_dev *dev, arena *a, CUdeviceptr da, CUdeviceptr db,
                    size_t n, double *rel) {
    const size_t piece = (size_t)4 << 20;
    uint16_t *h = arena_temp(a, piece * 4, 64, "bench check");
    if (!h) return ZP_ENOMEM;
    double d2 = 0, r2 = 0;
    int rc = 0;
    for (size_t i0 = 0; !rc && i0 < n; i0 += piece) {
        size_t m = n - i0 < piece ? n - i0 : piece;
        rc = cuda_err(drv, drv->MemcpyDtoHAsync(h, da + i0 * 2, m * 2, dev->compute), "download");
        if (!rc)
            rc = cuda_err(drv, drv->MemcpyDtoHAsync(h + piece, db + i0 * 2, m * 2, dev->compute),
                          "download");
        if (!rc) rc = cuda_err(drv, drv->StreamSynchronize(dev->compute), "download");
        for (size_t i = 0; !rc && i < m; i++) {
            double x = zp_bf16_to_f32(h[i]), y = zp_bf16_to_f32(h[piece + i]);
            d2 += (x - y) * (x - y), r2 += y * y;
        }
    }
    *rel = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    arena_temp_reset(a, 0);
    return rc;
}

static int bench_prefill(cuda_drv *drv, cuda_dev *dev, nvrtc_lib *nv, arena *a, FILE *jf,
                         const int *bss, int nbs, const int *gqas, int ngqa, int N, int P, int D,
                         int hkv, int chunk, int pf_chunk, int pf_choice, int iters) {
    attn_prefill_kernel pk;
    int rc = attn_prefill_pick(dev->arch, pf_choice, &pk);
    if (rc) return rc;
    CUevent e0 = NULL, e1 = NULL;
    CUmodule ma = NULL, mp = NULL;
    CUdeviceptr kc = 0, vc = 0, q = 0, out_old = 0, out_new = 0, po = 0, pml = 0, meta = 0;
    const int L = P + N, n_split = (L + chunk - 1) / chunk;
    if (pf_chunk < chunk)
        return err_set(ZP_EINVAL, "key 'attention_prefill_chunk': %d is below attention_chunk %d",
                       pf_chunk, chunk);
    double keys = (double)N * P + (double)N * (N + 1) / 2; /* attended keys over the rows */
    char cache_dir[512];
    nvrtc_default_cache_dir(cache_dir, sizeof cache_dir);
    printf("paged prefill attention, %s (%d SMs): %d rows over a prefix of %d, head dim %d, %d kv "
           "heads, chunk %d (%d splits), prompt rows' chunk %d, %s\n",
           dev->name, dev->n_sm, N, P, D, hkv, chunk, n_split, pf_chunk, pk.fn);
    printf("%6s %4s %6s %12s %12s %12s %8s %9s %10s\n", "block", "gqa", "tiles", "old (us)",
           "new (us)", "kernel (us)", "speedup", "TFLOP/s", "rel diff");
    CK(drv->EventCreate(&e0, CU_EVENT_DEFAULT), "cuEventCreate");
    CK(drv->EventCreate(&e1, CU_EVENT_DEFAULT), "cuEventCreate");
    for (int ib = 0; ib < nbs; ib++)
        for (int ig = 0; ig < ngqa; ig++) {
            const int bs = bss[ib], G = gqas[ig], hq = hkv * G, per_seq = (L + bs - 1) / bs;
            const size_t cache = (size_t)(per_seq + 1) * hkv * bs * D, qn = (size_t)N * hq * D,
                         pn = (size_t)N * hq * n_split;
            /* meta: tok_seq, tok_kv_idx, the tile flags (host), counts {N, n_tiles}, block
             * table, q-tiles */
            const size_t meta_ints = (size_t)3 * N + 2 + (size_t)per_seq + (size_t)2 * N;
            int32_t *h = arena_temp(a, meta_ints * 4, 4, "bench meta");
            if (!h) { rc = ZP_ENOMEM; goto out; }
            int32_t *seq = h, *idx = h + N, *tc = h + 2 * N, *cnt = h + 3 * N, *bt = cnt + 2,
                    *qt = bt + per_seq;
            for (int i = 0; i < N; i++) seq[i] = 0, idx[i] = P + i, tc[i] = 1;
            for (int i = 0; i < per_seq; i++) bt[i] = 1 + i;
            unsigned long long s = 42;
            for (int i = per_seq - 1; i > 0; i--) {
                int j = (int)(lcg(&s) % (unsigned long long)(i + 1));
                int32_t t = bt[i]; bt[i] = bt[j]; bt[j] = t;
            }
            const int n_tiles = attn_prefill_tiles(tc, seq, N, G, qt);
            cnt[0] = N, cnt[1] = n_tiles;
            CK(drv->MemAlloc(&kc, cache * 2), "cuMemAlloc K");
            CK(drv->MemAlloc(&vc, cache * 2), "cuMemAlloc V");
            CK(drv->MemAlloc(&q, qn * 2), "cuMemAlloc q");
            CK(drv->MemAlloc(&out_old, qn * 2), "cuMemAlloc out");
            CK(drv->MemAlloc(&out_new, qn * 2), "cuMemAlloc out");
            CK(drv->MemAlloc(&po, pn * D * 4), "cuMemAlloc partials");
            CK(drv->MemAlloc(&pml, pn * 8), "cuMemAlloc partials");
            CK(drv->MemAlloc(&meta, meta_ints * 4), "cuMemAlloc meta");
            CK(drv->MemcpyHtoDAsync(meta, h, meta_ints * 4, dev->compute), "upload");
            CK(drv->StreamSynchronize(dev->compute), "sync");
            arena_temp_reset(a, 0);
            if ((rc = rand_up(drv, dev, a, kc, cache, 2.f, &s)) ||
                (rc = rand_up(drv, dev, a, vc, cache, 1.f, &s)) ||
                (rc = rand_up(drv, dev, a, q, qn, 1.f, &s)))
                goto out;
            nvrtc_consts k = {D, bs, G};
            if ((rc = cuda_module_build(dev, nv, a, "attention.cu", &k, cache_dir, &ma)) ||
                (rc = cuda_module_build(dev, nv, a, pk.file, &k, cache_dir, &mp)))
                goto out;
            CUfunction fp, fm, ft;
            CK(drv->ModuleGetFunction(&fp, ma, "zp_attn_partial"), "zp_attn_partial");
            CK(drv->ModuleGetFunction(&fm, ma, "zp_attn_merge"), "zp_attn_merge");
            CK(drv->ModuleGetFunction(&ft, mp, pk.fn), pk.fn);
            CK(drv->FuncSetAttribute(ft, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, pk.smem),
               "cuFuncSetAttribute (prefill attention shared memory)");
            CUdeviceptr d_seq = meta, d_idx = meta + (size_t)N * 4, d_n = meta + (size_t)3 * N * 4,
                        d_nt = d_n + 4, d_bt = d_n + 8, d_qt = d_bt + (size_t)per_seq * 4,
                        no_rows = 0;
            float sc = 1.0f / sqrtf((float)D);
            int ns = n_split, mb = per_seq, hqv = hq;
            void *pa_old[] = {&q,  &kc,  &vc, &d_seq, &d_idx, &d_bt, &d_n, &no_rows,
                              &mb, &hkv, &sc, &chunk, &ns,    &po,   &pml};
            int pchunk = pf_chunk; /* prompt rows' splits: attention_prefill_chunk */
            void *fa[] = {&q, &kc, &vc, &d_seq, &d_idx, &d_bt, &d_qt, &d_nt, &mb, &hkv, &sc, &pchunk, &ns, &po, &pml};
            void *ma_old[] = {&po, &pml, &d_n, &hqv, &ns, &out_old};
            void *ma_new[] = {&po, &pml, &d_n, &hqv, &ns, &out_new};
            const launch_spec old_path[] = {
                {fp, (unsigned)ns, (unsigned)hkv, (unsigned)N, 128, pa_old, 0},
                {fm, attn_merge_blocks(hq), (unsigned)N, 1, 32 * ZP_MERGE_HEADS, ma_old, 0}};
            /* as drv/cuda_be.c runs a step of prompt rows alone: no decode kernel, the
             * prefill grid over the splits of pchunk keys */
            const unsigned psplit = (unsigned)attn_prefill_splits(P + N, pchunk);
            const launch_spec new_path[] = {
                {ft, psplit, (unsigned)hkv, (unsigned)n_tiles, 128, fa, (unsigned)pk.smem},
                {fm, attn_merge_blocks(hq), (unsigned)N, 1, 32 * ZP_MERGE_HEADS, ma_new, 0}};
            float *ms = arena_temp(a, sizeof(float) * (size_t)iters, 4, "bench times"), t_old, t_new, t_k;
            if (!ms) { rc = ZP_ENOMEM; goto out; }
            double rel = 0;
            if ((rc = time_launches(drv, dev, e0, e1, old_path, 2, iters, ms, &t_old)) ||
                (rc = time_launches(drv, dev, e0, e1, new_path, 2, iters, ms, &t_new)) ||
                (rc = time_launches(drv, dev, e0, e1, new_path, 1, iters, ms, &t_k)))
                goto out;
            arena_temp_reset(a, 0);
            if ((rc = rel_diff(drv, dev, a, out_new, out_old, qn, &rel))) goto out;
            const double tflops = 4.0 * D * hq * keys / (t_k * 1e-3) / 1e12; /* the kernel's */
            printf("%6d %4d %6d %12.1f %12.1f %12.1f %7.1fx %9.1f %10.2e\n", bs, G, n_tiles,
                   t_old * 1e3, t_new * 1e3, t_k * 1e3, t_old / t_new, tflops, rel);
            if (jf)
                fprintf(jf, "{\"mode\": \"prefill\", \"block_size\": %d, \"gqa\": %d, \"rows\": %d, "
                            "\"prefix\": %d, \"head_dim\": %d, \"kv_heads\": %d, \"chunk\": %d, "
                            "\"split\": %d, \"tiles\": %d, \"old_us\": %.2f, \"new_us\": %.2f, "
                            "\"kernel_us\": %.2f, \"tflops\": %.1f, \"rel_diff\": %.3e, "
                            "\"kernel\": \"%s\"}\n",
                        bs, G, N, P, D, hkv, chunk, ns, n_tiles, t_old * 1e3, t_new * 1e3,
                        t_k * 1e3, tflops, rel, pk.fn);
            drv->ModuleUnload(ma), drv->ModuleUnload(mp);
            ma = mp = NULL;
            drv->MemFree(kc), drv->MemFree(vc), drv->MemFree(q), drv->MemFree(out_old);
            drv->MemFree(out_new), drv->MemFree(po), drv->MemFree(pml), drv->MemFree(meta);
            kc = vc = q = out_old = out_new = po = pml = meta = 0;
            if (rel > 1e-2) {
                rc = err_set(ZP_EBACKEND, "prefill kernel output differs from zp_attn_partial's "
                                          "by %.3g (bs %d, gqa %d)", rel, bs, G);
                goto out;
            }
        }
out:
    if (ma) drv->ModuleUnload(ma);
    if (mp) drv->ModuleUnload(mp);
    CUdeviceptr bufs[] = {kc, vc, q, out_old, out_new, po, pml, meta};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) drv->MemFree(bufs[i]);
    if (e0) drv->EventDestroy(e0);
    if (e1) drv->EventDestroy(e1);
    return rc;
}

int bench_attention(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return rc;
    const char *bs_s = "16,32,64,128,256", *ctx_s = "2048,8192,16384", *gqa_s = "4,8", *json = NULL;
    int64_t batch = 64, head_dim = 128, kv_heads = 8, iters = 20, prefill = 0, prefix = 0;
    int64_t mma_stages = 0; /* 0: drv/attn_abi.h's */
    int bs_given = 0, gqa_given = 0;
    cli c;
    cli_init(&c, "bench attention", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--block-sizes")) rc = cli_str(&c, &bs_s), bs_given = 1;
        else if (!strcmp(o, "--contexts")) rc = cli_str(&c, &ctx_s);
        else if (!strcmp(o, "--gqa")) rc = cli_str(&c, &gqa_s), gqa_given = 1;
        else if (!strcmp(o, "--prefill")) rc = cli_int(&c, &prefill, 1, 65535);
        else if (!strcmp(o, "--prefix")) rc = cli_int(&c, &prefix, 0, 1 << 20);
        else if (!strcmp(o, "--batch")) rc = cli_int(&c, &batch, 1, 4096);
        else if (!strcmp(o, "--head-dim")) rc = cli_int(&c, &head_dim, 64, 128);
        else if (!strcmp(o, "--kv-heads")) rc = cli_int(&c, &kv_heads, 1, 64);
        else if (!strcmp(o, "--iters")) rc = cli_int(&c, &iters, 1, 10000);
        else if (!strcmp(o, "--mma-stages"))
            rc = cli_int(&c, &mma_stages, 2, 8);
        else if (!strcmp(o, "--json")) rc = cli_str(&c, &json);
        else rc = cli_unknown(&c, o);
    }
    if (rc) return rc;
    if (head_dim != 64 && head_dim != 128) return err_set(ZP_EINVAL, "--head-dim: 64 or 128");
    char conf_bs[24];
    if (prefill && !bs_given) snprintf(conf_bs, sizeof conf_bs, "%d", (int)cf.block_size), bs_s = conf_bs;
    if (prefill && !gqa_given) gqa_s = "4";
    int bss[8], ctxs[16], gqas[8];
    int nbs = parse_list(bs_s, bss, 8, "--block-sizes"), nctx = parse_list(ctx_s, ctxs, 16, "--contexts"),
        ngqa = parse_list(gqa_s, gqas, 8, "--gqa");
    if (nbs < 0) return nbs;
    if (nctx < 0) return nctx;
    if (ngqa < 0) return ngqa;

    cuda_drv drvs, *drv = &drvs;
    cuda_dev dev;
    nvrtc_lib nv;
    arena a;
    if ((rc = cuda_drv_load(drv, cf.cuda_driver_path)) || (rc = cuda_dev_open(&dev, drv, (int)cf.cuda_device)) ||
        (rc = nvrtc_load(&nv, cf.nvrtc_path)) || (rc = arena_init(&a, "bench", 64u << 20)))
        return rc;
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && !jf) return err_set(ZP_EIO, "%s: cannot write", json);
    if (prefill) {
        rc = bench_prefill(drv, &dev, &nv, &a, jf, bss, nbs, gqas, ngqa, (int)prefill, (int)prefix,
                           (int)head_dim, (int)kv_heads, (int)cf.attention_chunk,
                           (int)cf.attention_prefill_chunk, (int)cf.attention_prefill_kernel,
                           (int)iters);
        if (jf) fclose(jf);
        cuda_dev_close(&dev);
        arena_release(&a);
        return rc;
    }
    printf("paged decode attention, %s (%d SMs), batch %d, head dim %d, %d kv heads\n", dev.name,
           dev.n_sm, (int)batch, (int)head_dim, (int)kv_heads);
    if (!mma_stages) mma_stages = attn_mma_stages((int)head_dim);
    const unsigned mma_smem = (unsigned)attn_mma_smem_bytes((int)head_dim, (int)mma_stages);
    printf("mma kernel: %d-stage ring, %u bytes of shared memory\n", (int)mma_stages, mma_smem);
    printf("%6s %6s %4s %6s %6s %10s %9s %10s %9s\n", "block", "ctx", "gqa", "split", "chunk",
           "simt (us)", "GB/s", "mma (us)", "GB/s");
    CUdeviceptr kc = 0, vc = 0, q = 0, out = 0, po = 0, pml = 0, meta = 0;
    CUevent e0 = NULL, e1 = NULL;
    CK(drv->EventCreate(&e0, CU_EVENT_DEFAULT), "cuEventCreate");
    CK(drv->EventCreate(&e1, CU_EVENT_DEFAULT), "cuEventCreate");
    for (int ib = 0; ib < nbs; ib++)
        for (int ic = 0; ic < nctx; ic++)
            for (int ig = 0; ig < ngqa; ig++) {
                int bs = bss[ib], L = ctxs[ic], G = gqas[ig], D = (int)head_dim, hkv = (int)kv_heads,
                    hq = hkv * G, B = (int)batch;
                int per_seq = (L + bs - 1) / bs, nblocks = B * per_seq + 1;
                size_t cache = (size_t)nblocks * hkv * bs * D * 2;
                int n_split = (2 * dev.n_sm + B * hkv - 1) / (B * hkv);
                int max_split = (L + 255) / 256;
                if (n_split > max_split) n_split = max_split;
                if (n_split < 1) n_split = 1;
                int chunk = ((L + n_split - 1) / n_split + bs - 1) / bs * bs;
                size_t meta_ints = (size_t)B * 2 + 1 + (size_t)B * per_seq;
                int32_t *h = arena_temp(&a, meta_ints * 4, 4, "bench meta");
                if (!h) { rc = ZP_ENOMEM; goto out; }
                /* tok_seq, tok_kv_idx, n_rows, then block tables over a shuffled pool */
                for (int i = 0; i < B; i++) h[i] = i, h[B + i] = L - 1;
                h[2 * B] = B;
                int32_t *bt = h + 2 * B + 1;
                for (int i = 0; i < B * per_seq; i++) bt[i] = 1 + i;
                unsigned long long s = 42;
                for (int i = B * per_seq - 1; i > 0; i--) {
                    s = s * 6364136223846793005ull + 1442695040888963407ull;
                    int j = (int)((s >> 33) % (unsigned long long)(i + 1));
                    int32_t t = bt[i]; bt[i] = bt[j]; bt[j] = t;
                }
                CK(drv->MemAlloc(&kc, cache), "cuMemAlloc K");
                CK(drv->MemAlloc(&vc, cache), "cuMemAlloc V");
                CK(drv->MemAlloc(&q, (size_t)B * hq * D * 2), "cuMemAlloc q");
                CK(drv->MemAlloc(&out, (size_t)B * hq * D * 2), "cuMemAlloc out");
                CK(drv->MemAlloc(&po, (size_t)B * hq * n_split * D * 4), "cuMemAlloc partials");
                CK(drv->MemAlloc(&pml, (size_t)B * hq * n_split * 8), "cuMemAlloc partials");
                CK(drv->MemAlloc(&meta, meta_ints * 4), "cuMemAlloc meta");
                CK(drv->MemsetD8Async(kc, 0x3c, cache, dev.compute), "memset");
                CK(drv->MemsetD8Async(vc, 0x3b, cache, dev.compute), "memset");
                CK(drv->MemsetD8Async(q, 0x3c, (size_t)B * hq * D * 2, dev.compute), "memset");
                CK(drv->MemcpyHtoDAsync(meta, h, meta_ints * 4, dev.compute), "upload");
                CK(drv->StreamSynchronize(dev.compute), "sync");
                arena_temp_reset(&a, 0);

                const rtc_source *src = rtc_source_find("attention.cu");
                if (!src) { rc = err_set(ZP_ENOTFOUND, "attention.cu is not in this build"); goto out; }
                nvrtc_consts k = {D, bs, G};
                char store[4][32];
                const char *defs[4];
                nvrtc_job job;
                nvrtc_job_init(&job, store, defs, src, &k, dev.arch);
                snprintf(store[3], sizeof store[3], "ZP_DM_STAGES=%d", (int)mma_stages);
                defs[job.n_defines++] = store[3];
                const void *cubin;
                size_t len;
                int cached;
                char cache_dir[512];
                nvrtc_default_cache_dir(cache_dir, sizeof cache_dir);
                if ((rc = nvrtc_compile(&nv, &a, &job, cache_dir, &cubin, &len, &cached))) goto out;
                CUmodule mod;
                CUfunction fk[2], fm;
                CK(drv->ModuleLoadData(&mod, cubin), "cuModuleLoadData");
                arena_temp_reset(&a, 0);
                CK(drv->ModuleGetFunction(&fk[0], mod, "zp_attn_partial"), "zp_attn_partial");
                CK(drv->ModuleGetFunction(&fk[1], mod, "zp_attn_decode_mma"), "zp_attn_decode_mma");
                CK(drv->FuncSetAttribute(fk[1], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                         (int)mma_smem),
                   "cuFuncSetAttribute (zp_attn_decode_mma shared memory)");
                CK(drv->ModuleGetFunction(&fm, mod, "zp_attn_merge"), "zp_attn_merge");
                CUdeviceptr d_seq = meta, d_idx = meta + (size_t)B * 4, d_n = meta + (size_t)2 * B * 4,
                            d_bt = meta + (size_t)(2 * B + 1) * 4;
                float sc = 0.0883883f;
                CUdeviceptr no_rows = 0;
                void *pa[] = {&q,       &kc,  &vc, &d_seq, &d_idx,   &d_bt, &d_n, &no_rows,
                              &per_seq, &hkv, &sc, &chunk, &n_split, &po,   &pml};
                void *ma[] = {&po, &pml, &d_n, &hq, &n_split, &out};
                float ms[10000];
                double med[2], bytes = (double)B * L * hkv * D * 2 * 2;
                for (int kk = 0; kk < 2; kk++) {
                    for (int it = -3; it < (int)iters; it++) {
                        CK(drv->EventRecord(e0, dev.compute), "cuEventRecord");
                        CK(drv->LaunchKernel(fk[kk], (unsigned)n_split, (unsigned)hkv, (unsigned)B,
                                             128, 1, 1, kk ? mma_smem : 0, dev.compute, pa, NULL),
                           kk ? "zp_attn_decode_mma" : "zp_attn_partial");
                        CK(drv->LaunchKernel(fm, attn_merge_blocks(hq), (unsigned)B, 1,
                                             32 * ZP_MERGE_HEADS, 1, 1, 0, dev.compute, ma, NULL),
                           "zp_attn_merge");
                        CK(drv->EventRecord(e1, dev.compute), "cuEventRecord");
                        CK(drv->EventSynchronize(e1), "cuEventSynchronize");
                        if (it >= 0)
                            CK(drv->EventElapsedTime(&ms[it], e0, e1), "cuEventElapsedTime");
                    }
                    qsort(ms, (size_t)iters, sizeof ms[0], cmpf);
                    med[kk] = ms[iters / 2] * 1e-3;
                }
                printf("%6d %6d %4d %6d %6d %10.1f %9.0f %10.1f %9.0f\n", bs, L, G, n_split, chunk,
                       med[0] * 1e6, bytes / med[0] / 1e9, med[1] * 1e6, bytes / med[1] / 1e9);
                if (jf)
                    fprintf(jf,
                            "{\"block_size\": %d, \"context\": %d, \"gqa\": %d, \"batch\": %d, "
                            "\"head_dim\": %d, "
                            "\"kv_heads\": %d, \"split\": %d, \"us\": %.2f, \"gbps\": %.1f, "
                            "\"mma_stages\": %d, \"mma_us\": %.2f, \"mma_gbps\": %.1f}\n",
                            bs, L, G, B, D, hkv, n_split, med[0] * 1e6, bytes / med[0] / 1e9,
                            (int)mma_stages, med[1] * 1e6, bytes / med[1] / 1e9);
                drv->ModuleUnload(mod);
                drv->MemFree(kc), drv->MemFree(vc), drv->MemFree(q), drv->MemFree(out);
                drv->MemFree(po), drv->MemFree(pml), drv->MemFree(meta);
                kc = vc = q = out = po = pml = meta = 0;
            }
out:
    if (kc) drv->MemFree(kc);
    if (vc) drv->MemFree(vc);
    if (jf) fclose(jf);
    cuda_dev_close(&dev);
    arena_release(&a);
    return rc;
}
