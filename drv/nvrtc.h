/* nvrtc: loads NVIDIA's runtime compiler with dlopen and turns the kernel sources embedded in
 * the binary (the .cu files of rtc_kernels/, see drv/rtc_sources.h) into CUBINs for one architecture, with
 * an on-disk cache.
 *
 * Invariants:
 * - Building needs no CUDA toolkit: NVRTC is found at run time (override path, sonames, then
 *   the directories CUDA installs and the PyTorch/NVIDIA wheels use) and a missing library is
 *   an error naming every place searched. NVRTC needs no GPU, so CI compiles every kernel.
 * - A kernel is compiled with its constants (head dim, block size, GQA group, dtype) as -D
 *   options; the cache key hashes the source, every header, the options, NVRTC's version and
 *   the architecture, so a stale CUBIN can never be loaded.
 * - Cache files are written to a temporary name and renamed, so a concurrent start-up or a
 *   crash never leaves a partial CUBIN under a valid key.
 * Memory: the library handle lives in nvrtc_lib; CUBINs and logs go to the arena's temporary
 * side (start-up only; the caller resets the mark once the module is loaded).
 * Threading: start-up only, one thread.
 */
#ifndef ZP_NVRTC_H
#define ZP_NVRTC_H

#include "arena/arena.h"
#include "drv/cuda_api.h"
#include "drv/culib.h"
#include "drv/rtc_sources.h"

#include <stddef.h>

typedef struct nvrtc_lib {
    culib lib;
    int major, minor;
    PFN_nvrtcGetErrorString GetErrorString;
    PFN_nvrtcVersion Version;
    PFN_nvrtcGetNumSupportedArchs GetNumSupportedArchs;
    PFN_nvrtcGetSupportedArchs GetSupportedArchs;
    PFN_nvrtcCreateProgram CreateProgram;
    PFN_nvrtcDestroyProgram DestroyProgram;
    PFN_nvrtcCompileProgram CompileProgram;
    PFN_nvrtcGetProgramLogSize GetProgramLogSize;
    PFN_nvrtcGetProgramLog GetProgramLog;
    PFN_nvrtcGetCUBINSize GetCUBINSize;
    PFN_nvrtcGetCUBIN GetCUBIN;
} nvrtc_lib;

/* Loads libnvrtc. override: a file or directory to try first ("" = none; the conf key
 * nvrtc_path, else the environment variable ZIPAGE_NVRTC). The library then stays loaded for
 * the life of the process: NVRTC frees its static state only at exit, and unloading it early
 * would leave that state unreachable. */
int nvrtc_load(nvrtc_lib *lib, const char *override);

/* Fails (ZP_EUNSUP, naming the supported list) when NVRTC cannot target sm_<arch>. */
int nvrtc_check_arch(const nvrtc_lib *lib, int arch);

/* One compilation: a source, its -D constants and the target architecture (e.g. 90). A source
 * that tests __CUDA_ARCH_FEAT_SM90_ALL (rtc_kernels/prefill_wg.cu: Hopper's wgmma) is compiled
 * for sm_90a on sm_90, the architecture-specific target that alone has wgmma (its CUBIN runs
 * on sm_90 only, as every CUBIN of ours does); the others for plain sm_<arch>. */
typedef struct nvrtc_job {
    const rtc_source *src;
    const char *const *defines; /* "NAME=VALUE" strings, without -D */
    int n_defines;
    int arch;
    int feat_a; /* compile for sm_<arch>a */
} nvrtc_job;

/* The constants a kernel is specialised on. A source is compiled with only those it names
 * (so layer.cu, which does not depend on the GQA group, has one CUBIN per head dim and block
 * size). */
typedef struct nvrtc_consts {
    int head_dim, block_size, gqa;
} nvrtc_consts;
/* Which of ZP_HEAD_DIM / ZP_BLOCK_SIZE / ZP_GQA the source uses, as bits 1 / 2 / 4. */
int nvrtc_consts_used(const rtc_source *src);
/* Fills job (defines point into store) for src at the constants k it uses. */
void nvrtc_job_init(nvrtc_job *job, char store[3][32], const char *defs[3], const rtc_source *src,
                    const nvrtc_consts *k, int arch);

/* Compiles (or takes from cache_dir; "" = no cache) one job into a CUBIN in the arena's
 * temporary memory. *from_cache tells which happened. A compile error returns ZP_EBACKEND with
 * the source name, the options and NVRTC's log in the message. */
int nvrtc_compile(nvrtc_lib *lib, arena *a, const nvrtc_job *job, const char *cache_dir,
                  const void **cubin, size_t *len, int *from_cache);

/* The default cache directory ($XDG_CACHE_HOME or $HOME/.cache, then zipage/kernels) into
 * buf; "" when neither variable is set. */
void nvrtc_default_cache_dir(char *buf, size_t cap);

#endif
