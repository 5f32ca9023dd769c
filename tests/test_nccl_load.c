/* NCCL loader (drv/nccl.c), no GPU needed: a missing library and a library lacking NCCL's
 * symbols are clear errors naming the path and the symbol; the real libnccl.so.2 loads, its
 * version is read and is at least NCCL_MIN_VERSION; versions are named major.minor.patch in both
 * of NCCL's encodings; NCCL_NVLS_ENABLE is "0" after every load, failed or not, also when it was
 * "1" before (which the loader's note reports); NCCL's failures become ZP_EBACKEND with NCCL's
 * own text; ncclGetUniqueId succeeds without a GPU (it only opens a bootstrap socket) and gives
 * a fresh id each call.
 * NCCL comes from the system when installed, else from the nvidia-nccl-cu13 wheel that the
 * Makefile installs into $ZP_BUILD/nccl-venv; SKIP only when that wheel is absent. */
#include "arena/err.h"
#include "drv/nccl.h"
#include "tests/testlib.h"

#include <dlfcn.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The wheel's library directory under $ZP_BUILD/nccl-venv into dir; 0 when it is not there. */
static int wheel_dir(char *dir, size_t cap) {
    const char *b = getenv("ZP_BUILD");
    char pat[512];
    snprintf(pat, sizeof pat, "%s/nccl-venv/lib/python3*/site-packages/nvidia/nccl/lib",
             b ? b : "build");
    glob_t g;
    int found = 0;
    if (!glob(pat, 0, NULL, &g)) {
        if (g.gl_pathc) found = 1, snprintf(dir, cap, "%s", g.gl_pathv[0]);
        globfree(&g);
    }
    return found;
}

static int env_is_zero(void) {
    const char *v = getenv("NCCL_NVLS_ENABLE");
    return v && !strcmp(v, "0");
}

static void check_version_names(void) {
    CHECK(nccl_check_version(NCCL_MIN_VERSION, "x") == 0);
    CHECK(nccl_check_version(23206, "x") == 0);
    CHECK(nccl_check_version(21505, "/lib/libnccl.so.2") == ZP_EUNSUP);
    CHECKF(strstr(err_msg(), "NCCL 2.15.5 (/lib/libnccl.so.2)") &&
               strstr(err_msg(), "needs 2.16.2 or newer"),
           "%s", err_msg());
    CHECK(nccl_check_version(2708, "old") == ZP_EUNSUP); /* before 2.9: X * 1000 + Y * 100 + Z */
    CHECKF(strstr(err_msg(), "NCCL 2.7.8 (old)"), "%s", err_msg());
}

/* A real shared library that is not NCCL (libc, through a link of another name in a fresh
 * directory, so no libnccl.so.2 beside it can be picked up instead). */
static void check_missing_symbol(void) {
    Dl_info info;
    REQUIRE(dladdr((void *)&printf, &info) && info.dli_fname && info.dli_fname[0] == '/');
    char dir[] = "/tmp/zp-nccl-XXXXXX", link[64];
    REQUIRE(mkdtemp(dir));
    snprintf(link, sizeof link, "%s/libnotnccl.so", dir);
    REQUIRE(!symlink(info.dli_fname, link));
    nccl_lib l;
    setenv("NCCL_NVLS_ENABLE", "1", 1);
    CHECK(nccl_load(&l, link) == ZP_EUNSUP);
    CHECKF(strstr(err_msg(), "ncclGetVersion") && strstr(err_msg(), link), "%s", err_msg());
    CHECK(env_is_zero());
    CHECKF(strstr(l.note, "NCCL_NVLS_ENABLE was '1'"), "note: '%s'", l.note);
    unlink(link);
    rmdir(dir);
}

static void check_unique_id(const nccl_lib *l) {
    ncclUniqueId a, b;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    int rc = nccl_err(l, l->GetUniqueId(&a), "ncclGetUniqueId");
    CHECKF(rc == 0, "%s", err_msg());
    rc = nccl_err(l, l->GetUniqueId(&b), "ncclGetUniqueId");
    CHECKF(rc == 0, "%s", err_msg());
    static const ncclUniqueId zero;
    CHECK(memcmp(&a, &zero, sizeof a) != 0);
    CHECK(memcmp(&a, &b, sizeof a) != 0); /* a random magic number in each bootstrap handle */
}

/* Failures as our errors with NCCL's text: an error code alone, and calls NCCL refuses with a
 * reason of its own (ncclGetLastError). */
static void check_errors(const nccl_lib *l) {
    CHECK(nccl_err(l, ncclSuccess, "none") == 0);
    const char *text = l->GetErrorString(ncclInvalidArgument);
    REQUIRE(text && *text);
    CHECK(nccl_err(l, l->GetUniqueId(NULL), "ncclGetUniqueId") == ZP_EBACKEND);
    CHECKF(strstr(err_msg(), "ncclGetUniqueId: NCCL error 4 (") && strstr(err_msg(), text) &&
               strstr(err_msg(), "out argument is NULL"),
           "%s", err_msg());
    CHECK(nccl_async_err(l, NULL, "all-reduce") == ZP_EBACKEND);
    CHECKF(strstr(err_msg(), "all-reduce: ncclCommGetAsyncError: NCCL error 4") &&
               strstr(err_msg(), "comm argument is NULL"),
           "%s", err_msg());
}

int main(void) {
    check_version_names();

    nccl_lib l;
    unsetenv("NCCL_NVLS_ENABLE");
    CHECK(nccl_load(&l, "/nonexistent/libnccl.so.2") == ZP_ENOTFOUND);
    CHECKF(strstr(err_msg(), "nccl_path") && strstr(err_msg(), "/nonexistent/libnccl.so.2"), "%s",
           err_msg());
    CHECK(env_is_zero() && l.note[0] == 0); /* set before the library is even looked for */

    check_missing_symbol();

    setenv("NCCL_NVLS_ENABLE", "1", 1);
    int rc = nccl_load(&l, NULL);
    char dir[512];
    if (rc == ZP_ENOTFOUND) {
        if (!wheel_dir(dir, sizeof dir))
            return test_skip("no NCCL: none on this system and the nvidia-nccl-cu13 wheel is not "
                             "installed in $ZP_BUILD/nccl-venv (pip failed or PyPI unreachable)");
        setenv("NCCL_NVLS_ENABLE", "1", 1);
        rc = nccl_load(&l, dir);
    }
    if (rc) {
        fprintf(stderr, "NCCL load: %s\n", err_msg());
        return 1;
    }
    printf("NCCL %d from %s\n", l.version, l.lib.path);
    CHECK(strstr(l.lib.path, "libnccl.so.2") != NULL);
    CHECK(l.version >= NCCL_MIN_VERSION);
    int direct = 0;
    CHECK(l.GetVersion(&direct) == ncclSuccess && direct == l.version);
    CHECK(env_is_zero());
    CHECKF(strstr(l.note, "NCCL_NVLS_ENABLE was '1', set to 0"), "note: '%s'", l.note);

    check_errors(&l);
    check_unique_id(&l);
    CHECK(env_is_zero()); /* NCCL itself left it alone */
    return test_done("test_nccl_load");
}
