/* zipage bench attention: kernel-level paged decode attention on the GPU.
 *
 * For each block size x context length x GQA group: B decode rows, each at the given
 * context, over a KV pool of bf16 pages in a shuffled block table (head dim 128 unless
 * --head-dim); times zp_attn_partial + zp_attn_merge with CUDA events (median of --iters
 * after warm-up) and reports the KV bytes read per second. The split over the KV length is
 * chosen as the backend will: enough CTAs for two waves of the GPU's SMs, chunks of at least
 * 256 tokens. tools/peer_sdpa.py measures torch SDPA on the same shapes over contiguous KV.
 * Output: a table, and one JSON object per point with --json FILE. */
#include "arena/err.h"
#include "drv/cuda.h"
#include "drv/nvrtc.h"
#include "tools/cli.h"

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

int bench_attention(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return rc;
    const char *bs_s = "16,32,64,128,256", *ctx_s = "2048,8192,16384", *gqa_s = "4,8", *json = NULL;
    int64_t batch = 64, head_dim = 128, kv_heads = 8, iters = 20;
    cli c;
    cli_init(&c, "bench attention", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--block-sizes")) rc = cli_str(&c, &bs_s);
        else if (!strcmp(o, "--contexts")) rc = cli_str(&c, &ctx_s);
        else if (!strcmp(o, "--gqa")) rc = cli_str(&c, &gqa_s);
        else if (!strcmp(o, "--batch")) rc = cli_int(&c, &batch, 1, 4096);
        else if (!strcmp(o, "--head-dim")) rc = cli_int(&c, &head_dim, 64, 128);
        else if (!strcmp(o, "--kv-heads")) rc = cli_int(&c, &kv_heads, 1, 64);
        else if (!strcmp(o, "--iters")) rc = cli_int(&c, &iters, 1, 10000);
        else if (!strcmp(o, "--json")) rc = cli_str(&c, &json);
        else rc = cli_unknown(&c, o);
    }
    if (rc) return rc;
    if (head_dim != 64 && head_dim != 128) return err_set(ZP_EINVAL, "--head-dim: 64 or 128");
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
    printf("paged decode attention, %s (%d SMs), batch %d, head dim %d, %d kv heads\n", dev.name,
           dev.n_sm, (int)batch, (int)head_dim, (int)kv_heads);
    printf("%6s %6s %4s %6s %6s %10s %9s\n", "block", "ctx", "gqa", "split", "chunk", "time (us)", "GB/s");
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
                char store[3][32];
                const char *defs[3];
                nvrtc_job job;
                nvrtc_job_init(&job, store, defs, src, &k, dev.arch);
                const void *cubin;
                size_t len;
                int cached;
                char cache_dir[512];
                nvrtc_default_cache_dir(cache_dir, sizeof cache_dir);
                if ((rc = nvrtc_compile(&nv, &a, &job, cache_dir, &cubin, &len, &cached))) goto out;
                CUmodule mod;
                CUfunction fp, fm;
                CK(drv->ModuleLoadData(&mod, cubin), "cuModuleLoadData");
                arena_temp_reset(&a, 0);
                CK(drv->ModuleGetFunction(&fp, mod, "zp_attn_partial"), "zp_attn_partial");
                CK(drv->ModuleGetFunction(&fm, mod, "zp_attn_merge"), "zp_attn_merge");
                CUdeviceptr d_seq = meta, d_idx = meta + (size_t)B * 4, d_n = meta + (size_t)2 * B * 4,
                            d_bt = meta + (size_t)(2 * B + 1) * 4;
                float sc = 0.0883883f;
                CUdeviceptr no_tc = 0;
                void *pa[] = {&q, &kc, &vc, &d_seq, &d_idx, &d_bt, &d_n, &no_tc, &per_seq, &hkv, &sc, &chunk, &n_split, &po, &pml};
                void *ma[] = {&po, &pml, &d_n, &hq, &n_split, &out};
                float ms[10000];
                for (int it = -3; it < (int)iters; it++) {
                    CK(drv->EventRecord(e0, dev.compute), "cuEventRecord");
                    CK(drv->LaunchKernel(fp, (unsigned)n_split, (unsigned)hkv, (unsigned)B, 128, 1, 1, 0, dev.compute, pa, NULL), "zp_attn_partial");
                    CK(drv->LaunchKernel(fm, (unsigned)hq, (unsigned)B, 1, (unsigned)D, 1, 1, 0, dev.compute, ma, NULL), "zp_attn_merge");
                    CK(drv->EventRecord(e1, dev.compute), "cuEventRecord");
                    CK(drv->EventSynchronize(e1), "cuEventSynchronize");
                    if (it >= 0) CK(drv->EventElapsedTime(&ms[it], e0, e1), "cuEventElapsedTime");
                }
                qsort(ms, (size_t)iters, sizeof ms[0], cmpf);
                double med = ms[iters / 2] * 1e-3, bytes = (double)B * L * hkv * D * 2 * 2;
                printf("%6d %6d %4d %6d %6d %10.1f %9.0f\n", bs, L, G, n_split, chunk, med * 1e6, bytes / med / 1e9);
                if (jf)
                    fprintf(jf, "{\"block_size\": %d, \"context\": %d, \"gqa\": %d, \"batch\": %d, \"head_dim\": %d, "
                                "\"kv_heads\": %d, \"split\": %d, \"us\": %.2f, \"gbps\": %.1f}\n",
                            bs, L, G, B, D, hkv, n_split, med * 1e6, bytes / med / 1e9);
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
