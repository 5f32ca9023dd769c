/* culib: locating NVIDIA libraries (see culib.h). */
#include "drv/culib.h"

#include "arena/err.h"

#include <dlfcn.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tries dir/<soname> for each soname, after preloading the companion from dir by absolute path
 * (NVRTC loads its builtins by soname and has no RUNPATH). */
static int try_dir(culib *lib, const culib_spec *s, const char *dir) {
    for (int i = 0; i < s->n_sonames; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, s->sonames[i]);
        if (access(p, R_OK)) continue;
        if (s->companion) {
            char pat[600];
            snprintf(pat, sizeof pat, "%s/%s", dir, s->companion);
            glob_t g;
            if (!glob(pat, 0, NULL, &g)) {
                if (g.gl_pathc) lib->companion = dlopen(g.gl_pathv[0], RTLD_NOW | RTLD_GLOBAL);
                globfree(&g);
            }
        }
        lib->so = dlopen(p, RTLD_NOW | RTLD_LOCAL);
        if (lib->so) {
            snprintf(lib->path, sizeof lib->path, "%s", p);
            return 1;
        }
        if (lib->companion) dlclose(lib->companion), lib->companion = NULL;
    }
    return 0;
}

/* A file, or a directory holding the library. */
static int try_path(culib *lib, const culib_spec *s, const char *path) {
    struct stat st;
    if (stat(path, &st)) return 0;
    if (S_ISDIR(st.st_mode)) return try_dir(lib, s, path);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        if (try_dir(lib, s, dir)) return 1; /* a usual file name: companion found too */
    }
    lib->so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib->so) snprintf(lib->path, sizeof lib->path, "%s", path);
    return lib->so != NULL;
}

static int try_glob(culib *lib, const culib_spec *s, const char *pattern) {
    glob_t g;
    if (glob(pattern, GLOB_ONLYDIR, NULL, &g)) return 0;
    int ok = 0;
    for (size_t k = 0; k < g.gl_pathc && !ok; k++) ok = try_dir(lib, s, g.gl_pathv[k]);
    globfree(&g);
    return ok;
}

int culib_open(culib *lib, const culib_spec *s, const char *override) {
    memset(lib, 0, sizeof *lib);
    const char *env = getenv(s->env);
    if (override && *override) {
        if (try_path(lib, s, override)) return 0;
        return err_set(ZP_ENOTFOUND, "key '%s': no usable %s at '%s'", s->key, s->what, override);
    }
    if (env && *env) {
        if (try_path(lib, s, env)) return 0;
        return err_set(ZP_ENOTFOUND, "%s: no usable %s at '%s'", s->env, s->what, env);
    }
    for (int i = 0; i < s->n_sonames; i++) {
        lib->so = dlopen(s->sonames[i], RTLD_NOW | RTLD_LOCAL);
        if (lib->so) {
            snprintf(lib->path, sizeof lib->path, "%s", s->sonames[i]);
            return 0;
        }
    }
    static const char *const roots[] = {
        "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
        "/usr/local/cuda-1[23]*/lib64", "/usr/lib/x86_64-linux-gnu"};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++)
        if (try_glob(lib, s, roots[i])) return 0;
    /* pip's wheels: nvidia/cu13/lib (CUDA 13) or nvidia/<wheel_dir>/lib (CUDA 12), in the
     * active venv, the venv the Makefile installs beside the binary (build/nvrtc-venv for
     * compile-only use without CUDA, build/nccl-venv for the NCCL loader's tests), system
     * site-packages and the usual venv places. */
    const char *venv = getenv("VIRTUAL_ENV");
    char own[600] = "";
    ssize_t n = readlink("/proc/self/exe", own, sizeof own - 32);
    char *slash = n > 0 ? (own[n] = 0, strrchr(own, '/')) : NULL;
    if (slash) snprintf(slash, sizeof own - (size_t)(slash - own), "/%s", s->build_venv);
    const char *const sites[] = {venv && *venv ? venv : NULL, slash ? own : NULL, "/usr/local",
                                 "/usr", "/opt/*/.venv", "/root/.pyenv/versions/*"};
    const char *subs[] = {"cu13", "cu12", s->wheel_dir};
    for (size_t i = 0; i < sizeof sites / sizeof sites[0]; i++) {
        if (!sites[i]) continue;
        for (size_t k = 0; k < sizeof subs / sizeof subs[0]; k++) {
            char pat[600];
            snprintf(pat, sizeof pat, "%s/lib/python3*/*-packages/nvidia/%s/lib", sites[i], subs[k]);
            if (try_glob(lib, s, pat)) return 0;
        }
    }
    return err_set(ZP_ENOTFOUND,
                   "%s not found: tried %s on the loader path, /usr/local/cuda*/lib64 and the pip "
                   "wheels' nvidia/{cu13,cu12,%s}/lib directories; %s, or set key '%s' (or %s) to "
                   "the library or its directory",
                   s->what, s->sonames[0], s->wheel_dir, s->install_hint, s->key, s->env);
}

int culib_syms(const culib *lib, const culib_spec *s, const char *const *names, void **fns, int n) {
    for (int i = 0; i < n; i++) {
        fns[i] = dlsym(lib->so, names[i]);
        if (!fns[i])
            return err_set(ZP_EUNSUP, "%s (%s) lacks %s: too old a version", s->what, lib->path,
                           names[i]);
    }
    return 0;
}
