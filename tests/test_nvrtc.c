/* NVRTC module (drv/nvrtc.c), no GPU needed: a kernel compiles to a CUBIN; a compile error
 * returns NVRTC's log naming the source and line; the cache returns the same CUBIN for the
 * same job and a different key for different constants or architecture; a source that tests
 * __CUDA_ARCH_FEAT_SM90_ALL (wgmma) is compiled for sm_90a on sm_90, the others for sm_90; a
 * missing library and an unsupported architecture are clear errors. SKIP when no NVRTC can be
 * found (the Makefile installs the nvidia-cuda-nvrtc wheel into $ZP_BUILD/nvrtc-venv). */
#include "arena/err.h"
#include "drv/nvrtc.h"
#include "tests/testlib.h"

#include <glob.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int load(nvrtc_lib *lib) {
    if (!nvrtc_load(lib, "")) return 0;
    const char *b = getenv("ZP_BUILD");
    char pat[512];
    snprintf(pat, sizeof pat, "%s/nvrtc-venv/lib/python3*/site-packages/nvidia/cu13/lib",
             b ? b : "build");
    glob_t g;
    int rc = -1;
    if (!glob(pat, 0, NULL, &g)) {
        if (g.gl_pathc) rc = nvrtc_load(lib, g.gl_pathv[0]);
        globfree(&g);
    }
    return rc;
}

static int count_files(const char *dir) {
    char pat[600];
    snprintf(pat, sizeof pat, "%s/*.cubin", dir);
    glob_t g;
    int n = glob(pat, 0, NULL, &g) ? 0 : (int)g.gl_pathc;
    if (n) globfree(&g);
    return n;
}

int main(void) {
    nvrtc_lib bad;
    CHECK(nvrtc_load(&bad, "/nonexistent/libnvrtc.so.13") == ZP_ENOTFOUND);
    CHECK(strstr(err_msg(), "nvrtc_path") && strstr(err_msg(), "/nonexistent"));

    nvrtc_lib lib;
    if (load(&lib)) return test_skip("no NVRTC (no CUDA install, no nvidia-cuda-nvrtc wheel)");
    arena a;
    REQUIRE(!arena_init(&a, "test", 64u << 20));
    char dir[] = "/tmp/zp-nvrtc-XXXXXX";
    REQUIRE(mkdtemp(dir));

    CHECK(nvrtc_check_arch(&lib, 90) == 0);
    CHECK(nvrtc_check_arch(&lib, 12) == ZP_EUNSUP && strstr(err_msg(), "sm_12"));

    rtc_source good = {"probe.cu", "#include \"common.cuh\"\n"
                                   "extern \"C\" __global__ void probe(bf16 *o) {\n"
                                   "    o[threadIdx.x] = f2bf((float)ZP_HEAD_DIM);\n}\n"};
    nvrtc_consts k = {128, 16, 4};
    char store[3][32];
    const char *defs[3];
    nvrtc_job job;
    nvrtc_job_init(&job, store, defs, &good, &k, 90);
    CHECK(job.n_defines == 1 && !strcmp(defs[0], "ZP_HEAD_DIM=128"));
    const void *c1, *c2;
    size_t n1, n2;
    int cached = -1;
    CHECK(nvrtc_compile(&lib, &a, &job, dir, &c1, &n1, &cached) == 0 && cached == 0);
    CHECK(n1 > 16 && !memcmp(c1, "\x7f" "ELF", 4)); /* a CUBIN is an ELF image */
    CHECK(nvrtc_compile(&lib, &a, &job, dir, &c2, &n2, &cached) == 0 && cached == 1);
    CHECK(n1 == n2 && !memcmp(c1, c2, n1));
    CHECK(count_files(dir) == 1);
    k.head_dim = 64; /* a different constant is a different key */
    nvrtc_job_init(&job, store, defs, &good, &k, 90);
    CHECK(nvrtc_compile(&lib, &a, &job, dir, &c2, &n2, &cached) == 0 && cached == 0);
    k.gqa = 8; /* ... but a constant the source does not use is not */
    nvrtc_job_init(&job, store, defs, &good, &k, 90);
    CHECK(nvrtc_compile(&lib, &a, &job, dir, &c2, &n2, &cached) == 0 && cached == 1);
    nvrtc_job_init(&job, store, defs, &good, &k, 80); /* nor is another architecture */
    CHECK(nvrtc_compile(&lib, &a, &job, dir, &c2, &n2, &cached) == 0 && cached == 0);
    CHECK(count_files(dir) == 3);

    rtc_source broken = {"broken.cu", "extern \"C\" __global__ void f(int *o) {\n"
                                      "    o[0] = not_declared;\n}\n"};
    nvrtc_job_init(&job, store, defs, &broken, &k, 90);
    CHECK(nvrtc_compile(&lib, &a, &job, dir, &c2, &n2, &cached) == ZP_EBACKEND);
    CHECKF(strstr(err_msg(), "broken.cu") && strstr(err_msg(), "not_declared") &&
               strstr(err_msg(), "-arch=sm_90"),
           "%s", err_msg());
    CHECK(count_files(dir) == 3);

    /* A source that tests __CUDA_ARCH_FEAT_SM90_ALL is compiled for sm_90a on sm_90 (the
     * branch that would not compile is the other one), every other source for plain sm_90. */
    rtc_source feat = {"feat.cu", "extern \"C\" __global__ void f(int *o) {\n"
                                  "#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n"
                                  "    o[0] = 1;\n#else\n    o[0] = only_on_sm90a;\n#endif\n}\n"};
    CHECK(job.feat_a == 0); /* the last job: "good" for sm_80 */
    nvrtc_job_init(&job, store, defs, &good, &k, 90);
    CHECK(job.feat_a == 0);
    nvrtc_job_init(&job, store, defs, &feat, &k, 90);
    CHECK(job.feat_a == 1);
    CHECK(nvrtc_compile(&lib, &a, &job, "", &c2, &n2, &cached) == 0);
    nvrtc_job_init(&job, store, defs, &feat, &k, 80);
    CHECK(job.feat_a == 0);
    CHECKF(nvrtc_compile(&lib, &a, &job, "", &c2, &n2, &cached) == ZP_EBACKEND &&
               strstr(err_msg(), "only_on_sm90a"),
           "%s", err_msg());
    nvrtc_job_init(&job, store, defs, rtc_source_find("prefill_wg.cu"), &k, 90);
    CHECK(job.feat_a == 1);
    nvrtc_job_init(&job, store, defs, rtc_source_find("prefill.cu"), &k, 90);
    CHECK(job.feat_a == 0);

    /* Every embedded kernel source is found by name. */
    CHECK(rtc_n_sources >= 2 && rtc_source_find("common.cuh") && rtc_source_find("layer.cu"));
    CHECK(!rtc_source_find("nope.cu"));

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    arena_release(&a);
    return test_done("nvrtc");
}
