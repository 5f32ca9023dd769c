/* zipage kernels: compiles every GPU kernel (rtc_kernels/, embedded in the binary) with NVRTC
 * for one architecture, over every head dim, block size and GQA group zipage supports, and
 * loads each CUBIN on the GPU unless --compile-only. NVRTC needs no GPU, so CI runs
 *   zipage kernels --compile-only --arch sm_90
 * to prove every kernel compiles. Compiled CUBINs land in the kernel cache (key
 * kernel_cache_dir), so a later start-up at the same configuration skips NVRTC. */
#include "arena/err.h"
#include "drv/cuda.h"
#include "drv/nvrtc.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const int head_dims[] = {64, 128};
static const int block_sizes[] = {16, 32, 64, 128, 256};
static const int gqas[] = {1, 2, 4, 8};
#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

typedef struct run {
    nvrtc_lib *nv;
    arena *a;
    const cuda_dev *dev; /* NULL with --compile-only */
    const char *cache_dir;
    int arch, quiet, n_compiled, n_cached;
} run;

static int one(run *r, const rtc_source *src, const nvrtc_consts *k) {
    char store[3][32];
    const char *defs[3];
    nvrtc_job job;
    nvrtc_job_init(&job, store, defs, src, k, r->arch);
    size_t mark = arena_temp_mark(r->a);
    const void *cubin;
    size_t len;
    int cached, rc;
    double t0 = now_s();
    if ((rc = nvrtc_compile(r->nv, r->a, &job, r->cache_dir, &cubin, &len, &cached))) return rc;
    double dt = now_s() - t0;
    if (r->dev) {
        CUmodule mod;
        if ((rc = cuda_err(r->dev->drv, r->dev->drv->ModuleLoadData(&mod, cubin), src->name)))
            return rc;
        r->dev->drv->ModuleUnload(mod);
    }
    arena_temp_reset(r->a, mark);
    cached ? r->n_cached++ : r->n_compiled++;
    if (!r->quiet) {
        printf("%-14s sm_%d", src->name, r->arch);
        for (int i = 0; i < job.n_defines; i++) printf(" %s", defs[i]);
        printf(": %zu bytes, %.2f s%s\n", len, dt, cached ? " (cache)" : "");
    }
    return 0;
}

static int every(run *r, const char *only) {
    for (int s = 0; s < rtc_n_sources; s++) {
        const rtc_source *src = &rtc_sources[s];
        size_t nl = strlen(src->name);
        if (nl < 4 || strcmp(src->name + nl - 3, ".cu")) continue;
        if (only && strcmp(only, src->name)) continue;
        int used = nvrtc_consts_used(src);
        for (int d = 0; d < ((used & 1) ? COUNT(head_dims) : 1); d++)
            for (int b = 0; b < ((used & 2) ? COUNT(block_sizes) : 1); b++)
                for (int g = 0; g < ((used & 4) ? COUNT(gqas) : 1); g++) {
                    nvrtc_consts k = {head_dims[d], block_sizes[b], gqas[g]};
                    int rc = one(r, src, &k);
                    if (rc) return rc;
                }
    }
    return 0;
}

int cmd_kernels(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("kernels", rc);
    int compile_only = 0, quiet = 0;
    int64_t arch = 0;
    const char *arch_s = NULL, *only = NULL;
    cli c;
    cli_init(&c, "kernels", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--compile-only")) compile_only = 1;
        else if (!strcmp(o, "--quiet")) quiet = 1;
        else if (!strcmp(o, "--arch")) rc = cli_str(&c, &arch_s);
        else if (!strcmp(o, "--only")) rc = cli_str(&c, &only);
        else rc = cli_unknown(&c, o);
    }
    if (!rc && arch_s) {
        char *end;
        const char *p = !strncmp(arch_s, "sm_", 3) ? arch_s + 3 : arch_s;
        arch = strtol(p, &end, 10);
        if (end == p || *end || arch < 50 || arch > 200)
            rc = err_set(ZP_EINVAL, "--arch: '%s' is not an architecture like sm_90", arch_s);
    }
    if (!rc && only && !rtc_source_find(only))
        rc = err_set(ZP_EINVAL, "--only: no kernel source '%s' in this build", only);
    if (rc) return cli_fail("kernels", rc);

    char cache[512];
    if (!strcmp(cf.kernel_cache_dir, "off")) cache[0] = 0;
    else if (cf.kernel_cache_dir[0]) snprintf(cache, sizeof cache, "%s", cf.kernel_cache_dir);
    else nvrtc_default_cache_dir(cache, sizeof cache);

    arena a;
    nvrtc_lib nv;
    cuda_drv drv;
    cuda_dev dev;
    run r = {.nv = &nv, .a = &a, .cache_dir = cache, .quiet = quiet};
    if ((rc = arena_init(&a, "host", 256u << 20))) return cli_fail("kernels", rc);
    if (!compile_only) {
        if ((rc = cuda_drv_load(&drv, cf.cuda_driver_path)) ||
            (rc = cuda_dev_open(&dev, &drv, (int)cf.cuda_device)))
            return cli_fail("kernels", err_prefix(rc, "no GPU (use --compile-only to compile without one)"));
        if (arch && arch != dev.arch)
            return cli_fail("kernels", err_set(ZP_EINVAL, "--arch sm_%d, but GPU %d (%s) is sm_%d",
                                               (int)arch, dev.ordinal, dev.name, dev.arch));
        arch = dev.arch;
        r.dev = &dev;
    } else if (!arch) {
        arch = 90;
    }
    r.arch = (int)arch;
    if ((rc = nvrtc_load(&nv, cf.nvrtc_path)) || (rc = nvrtc_check_arch(&nv, r.arch)))
        return cli_fail("kernels", rc);
    printf("NVRTC %d.%d (%s), sm_%d, cache %s%s\n", nv.major, nv.minor, nv.lib.path, r.arch,
           *cache ? cache : "off", r.dev ? "" : ", compile only");
    double t0 = now_s();
    rc = every(&r, only);
    if (rc) return cli_fail("kernels", rc);
    printf("%d kernels compiled, %d from the cache, %.1f s\n", r.n_compiled, r.n_cached, now_s() - t0);
    if (r.dev) cuda_dev_close(&dev), cuda_drv_unload(&drv);
    arena_release(&a);
    return 0;
}
