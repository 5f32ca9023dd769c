/* nvrtc: loading NVRTC, compiling embedded kernels, the CUBIN cache (see nvrtc.h). */
#include "drv/nvrtc.h"

#include "arena/err.h"
#include "drv/diskcache.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

static const char *const sonames[] = {"libnvrtc.so.13", "libnvrtc.so.12"};
static const culib_spec spec = {
    .what = "NVRTC",
    .sonames = sonames,
    .n_sonames = 2,
    .wheel_dir = "cuda_nvrtc",
    .companion = "libnvrtc-builtins.so.*",
    .key = "nvrtc_path",
    .env = "ZIPAGE_NVRTC",
    .build_venv = "nvrtc-venv",
    .install_hint = "install CUDA 12/13 or `pip install nvidia-cuda-nvrtc`",
};

#define ENTRY(field) {"nvrtc" #field, offsetof(nvrtc_lib, field)}
static const struct {
    const char *name;
    size_t off;
} entries[] = {
    ENTRY(GetErrorString), ENTRY(Version),        ENTRY(GetNumSupportedArchs),
    ENTRY(GetSupportedArchs), ENTRY(CreateProgram), ENTRY(DestroyProgram),
    ENTRY(CompileProgram), ENTRY(GetProgramLogSize), ENTRY(GetProgramLog),
    ENTRY(GetCUBINSize),   ENTRY(GetCUBIN),
};
#undef ENTRY
enum { N_ENTRIES = sizeof entries / sizeof entries[0] };

int nvrtc_load(nvrtc_lib *lib, const char *override) {
    memset(lib, 0, sizeof *lib);
    int rc = culib_open(&lib->lib, &spec, override);
    if (rc) return rc;
    const char *names[N_ENTRIES];
    void *fns[N_ENTRIES];
    for (int i = 0; i < N_ENTRIES; i++) names[i] = entries[i].name;
    if ((rc = culib_syms(&lib->lib, &spec, names, fns, N_ENTRIES))) return rc;
    for (int i = 0; i < N_ENTRIES; i++) memcpy((char *)lib + entries[i].off, &fns[i], sizeof fns[i]);
    if (lib->Version(&lib->major, &lib->minor) != NVRTC_SUCCESS || lib->major < 12)
        return err_set(ZP_EUNSUP, "NVRTC %d.%d (%s) is too old: zipage needs CUDA 12 or 13",
                       lib->major, lib->minor, lib->lib.path);
    return 0;
}

int nvrtc_check_arch(const nvrtc_lib *lib, int arch) {
    int n = 0, archs[64];
    if (lib->GetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0 || n > 64 ||
        lib->GetSupportedArchs(archs) != NVRTC_SUCCESS)
        return err_set(ZP_EBACKEND, "%s: cannot list supported architectures", lib->lib.path);
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        if (archs[i] == arch) return 0;
        int w = snprintf(list + used, sizeof list - used, "%s%d", i ? " " : "", archs[i]);
        if (w > 0 && (size_t)w < sizeof list - used) used += (size_t)w;
    }
    return err_set(ZP_EUNSUP, "NVRTC %d.%d (%s) cannot compile for sm_%d; it supports: %s",
                   lib->major, lib->minor, lib->lib.path, arch, list);
}

void nvrtc_default_cache_dir(char *buf, size_t cap) {
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (x && *x) snprintf(buf, cap, "%s/zipage/kernels", x);
    else if (h && *h) snprintf(buf, cap, "%s/.cache/zipage/kernels", h);
    else if (cap) buf[0] = 0;
}

int nvrtc_consts_used(const rtc_source *src) {
    return (strstr(src->text, "ZP_HEAD_DIM") ? 1 : 0) | (strstr(src->text, "ZP_BLOCK_SIZE") ? 2 : 0) |
           (strstr(src->text, "ZP_GQA") ? 4 : 0);
}

void nvrtc_job_init(nvrtc_job *job, char store[3][32], const char *defs[3], const rtc_source *src,
                    const nvrtc_consts *k, int arch) {
    int used = nvrtc_consts_used(src), n = 0;
    if (used & 1) snprintf(store[n], 32, "ZP_HEAD_DIM=%d", k->head_dim), defs[n] = store[n], n++;
    if (used & 2) snprintf(store[n], 32, "ZP_BLOCK_SIZE=%d", k->block_size), defs[n] = store[n], n++;
    if (used & 4) snprintf(store[n], 32, "ZP_GQA=%d", k->gqa), defs[n] = store[n], n++;
    *job = (nvrtc_job){.src = src, .defines = defs, .n_defines = n, .arch = arch,
                       .feat_a = arch == 90 && strstr(src->text, "__CUDA_ARCH_FEAT_SM90_ALL")};
}

/* The options of a job: fixed flags, the architecture, then the job's constants. */
enum { MAX_OPTS = 40 };
static int job_options(const nvrtc_job *job, char store[MAX_OPTS][96], const char *opts[MAX_OPTS]) {
    int n = 0;
    snprintf(store[n], sizeof store[n], "-arch=sm_%d%s", job->arch, job->feat_a ? "a" : "");
    opts[n] = store[n], n++;
    opts[n++] = "-std=c++17";
    opts[n++] = "-default-device";
    opts[n++] = "-fmad=true";
    if (job->n_defines > MAX_OPTS - n)
        return err_set(ZP_EINVAL, "%s: %d constants, at most %d", job->src->name, job->n_defines,
                       MAX_OPTS - n);
    for (int i = 0; i < job->n_defines; i++) {
        snprintf(store[n], sizeof store[n], "-D%s", job->defines[i]);
        opts[n] = store[n], n++;
    }
    return n;
}

static uint64_t cache_key(const nvrtc_lib *lib, const nvrtc_job *job, const char *const *opts,
                          int n_opts) {
    XXH64_state_t st;
    XXH64_reset(&st, 0x7a69706167650001ull);
    for (int i = 0; i < rtc_n_sources; i++) {
        const rtc_source *s = &rtc_sources[i];
        size_t nl = strlen(s->name);
        int is_header = nl > 4 && !strcmp(s->name + nl - 4, ".cuh");
        if (s != job->src && !is_header) continue;
        XXH64_update(&st, s->name, nl + 1);
        XXH64_update(&st, s->text, strlen(s->text));
    }
    for (int i = 0; i < n_opts; i++)
        XXH64_update(&st, opts[i], strlen(opts[i]) + 1);
    char ver[64];
    int n = snprintf(ver, sizeof ver, "nvrtc %d.%d sm_%d", lib->major, lib->minor, job->arch);
    XXH64_update(&st, ver, (size_t)n);
    return XXH64_digest(&st);
}

int nvrtc_compile(nvrtc_lib *lib, arena *a, const nvrtc_job *job, const char *cache_dir,
                  const void **cubin, size_t *len, int *from_cache) {
    char store[MAX_OPTS][96];
    const char *opts[MAX_OPTS];
    int n_opts = job_options(job, store, opts);
    if (n_opts < 0) return n_opts;
    *from_cache = 0;

    char path[600] = "";
    if (cache_dir && *cache_dir) {
        snprintf(path, sizeof path, "%s/%.*s-sm%d-%016llx.cubin", cache_dir,
                 (int)(strcspn(job->src->name, ".")), job->src->name, job->arch,
                 (unsigned long long)cache_key(lib, job, opts, n_opts));
        if (!access(path, R_OK)) {
            char *data;
            size_t n;
            if (!arena_read_file(a, path, &data, &n) && n > 0) {
                *cubin = data, *len = n, *from_cache = 1;
                return 0;
            }
        }
    }

    const char *hdr_text[16], *hdr_name[16];
    int n_hdr = 0;
    for (int i = 0; i < rtc_n_sources && n_hdr < 16; i++) {
        size_t nl = strlen(rtc_sources[i].name);
        if (nl > 4 && !strcmp(rtc_sources[i].name + nl - 4, ".cuh")) {
            hdr_text[n_hdr] = rtc_sources[i].text;
            hdr_name[n_hdr++] = rtc_sources[i].name;
        }
    }
    nvrtcProgram prog;
    nvrtcResult r = lib->CreateProgram(&prog, job->src->text, job->src->name, n_hdr, hdr_text,
                                       hdr_name);
    if (r != NVRTC_SUCCESS)
        return err_set(ZP_EBACKEND, "nvrtcCreateProgram(%s): %s", job->src->name,
                       lib->GetErrorString(r));
    r = lib->CompileProgram(prog, n_opts, opts);
    if (r != NVRTC_SUCCESS) {
        size_t log_n = 0;
        char *log = NULL;
        if (lib->GetProgramLogSize(prog, &log_n) == NVRTC_SUCCESS && log_n &&
            (log = arena_temp(a, log_n + 1, 1, "nvrtc log")) &&
            lib->GetProgramLog(prog, log) == NVRTC_SUCCESS)
            log[log_n] = 0;
        else
            log = NULL;
        char optline[256] = "";
        size_t used = 0;
        for (int i = 0; i < n_opts && used < sizeof optline; i++) {
            int w = snprintf(optline + used, sizeof optline - used, "%s%s", i ? " " : "", opts[i]);
            if (w > 0) used += (size_t)w;
        }
        lib->DestroyProgram(&prog);
        return err_set(ZP_EBACKEND, "NVRTC %d.%d failed to compile %s (%s): %s\n%s", lib->major,
                       lib->minor, job->src->name, optline, lib->GetErrorString(r),
                       log ? log : "(no log)");
    }
    size_t n = 0;
    char *out = NULL;
    if (lib->GetCUBINSize(prog, &n) != NVRTC_SUCCESS || !n ||
        !(out = arena_temp(a, n, 16, "cubin")) || lib->GetCUBIN(prog, out) != NVRTC_SUCCESS) {
        lib->DestroyProgram(&prog);
        return out || !n ? err_set(ZP_EBACKEND, "%s: NVRTC gave no CUBIN for sm_%d",
                                   job->src->name, job->arch)
                         : ZP_ENOMEM;
    }
    lib->DestroyProgram(&prog);
    if (*path) diskcache_store(cache_dir, strrchr(path, '/') + 1, out, n);
    *cubin = out, *len = n;
    return 0;
}
