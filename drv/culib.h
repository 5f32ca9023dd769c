/* culib: finding and loading one of NVIDIA's user-space libraries (NVRTC, cuBLASLt, NCCL) with
 * dlopen, in the order ../shared/spec/cuda-backend.md gives: a conf key or environment override,
 * the usual sonames on the loader path, then the directories where CUDA installs and where pip's
 * NVIDIA wheels (PyTorch's dependencies) put them. A library not found is an error naming
 * every place searched and how to fix it.
 * Start-up only; glob() and dlopen allocate inside libc, before the arenas freeze.
 */
#ifndef ZP_CULIB_H
#define ZP_CULIB_H

#include <stddef.h>

typedef struct culib_spec {
    const char *what;            /* "NVRTC", "cuBLASLt" */
    const char *const *sonames;  /* newest first, e.g. libnvrtc.so.13, libnvrtc.so.12 */
    int n_sonames;
    const char *wheel_dir;       /* the per-library wheel directory (nvidia/X/lib): CUDA 12, NCCL */
    const char *companion;       /* glob of a library to preload from the same directory, or NULL */
    const char *key, *env;       /* conf key and environment variable naming an override */
    const char *build_venv;      /* the venv the Makefile installs beside the binary */
    const char *install_hint;
} culib_spec;

typedef struct culib {
    void *so, *companion;
    char path[512];
} culib;

/* override: the conf key's value ("" = none). On success lib->so is open (RTLD_LOCAL). */
int culib_open(culib *lib, const culib_spec *spec, const char *override);
/* Resolves each name into fns[i] (names[i] with no prefix added); ZP_EUNSUP naming the first
 * missing symbol. */
int culib_syms(const culib *lib, const culib_spec *spec, const char *const *names, void **fns,
               int n);

#endif
