/* nccl: loading NCCL with NVLink multicast off, and its errors as ours (see nccl.h). */
#include "drv/nccl.h"

#include "arena/err.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const sonames[] = {"libnccl.so.2"};
static const culib_spec spec = {
    .what = "NCCL",
    .sonames = sonames,
    .n_sonames = 1,
    .wheel_dir = "nccl",
    .companion = NULL,
    .key = "nccl_path",
    .env = "ZIPAGE_NCCL",
    .build_venv = "nccl-venv",
    .install_hint = "install NCCL (libnccl2) or `pip install nvidia-nccl-cu13`",
};

#define ENTRY(field) {"nccl" #field, offsetof(nccl_lib, field)}
static const struct {
    const char *name;
    size_t off;
} entries[] = {
    ENTRY(GetVersion),        ENTRY(GetErrorString), ENTRY(GetLastError), ENTRY(GetUniqueId),
    ENTRY(CommInitRank),      ENTRY(CommInitAll),    ENTRY(CommDestroy),  ENTRY(CommAbort),
    ENTRY(CommGetAsyncError), ENTRY(AllReduce),      ENTRY(AllGather),    ENTRY(Broadcast),
    ENTRY(GroupStart),        ENTRY(GroupEnd),
};
#undef ENTRY
enum { N_ENTRIES = sizeof entries / sizeof entries[0] };

/* NCCL_VERSION_CODE as major.minor.patch: X * 1000 + Y * 100 + Z up to 2.8, X * 10000 + Y * 100
 * + Z from 2.9 on (nccl.h's NCCL_VERSION macro). */
static void version_name(int code, char *buf, size_t cap) {
    int scale = code < 10000 ? 1000 : 10000;
    snprintf(buf, cap, "%d.%d.%d", code / scale, code % scale / 100, code % 100);
}

int nccl_check_version(int version, const char *path) {
    if (version >= NCCL_MIN_VERSION) return 0;
    char found[32], needed[32];
    version_name(version, found, sizeof found);
    version_name(NCCL_MIN_VERSION, needed, sizeof needed);
    return err_set(ZP_EUNSUP, "NCCL %s (%s) is too old: zipage needs %s or newer", found, path,
                   needed);
}

/* Multicast off before NCCL can read its environment (see nccl.h). */
static int nvls_off(nccl_lib *l) {
    const char *was = getenv("NCCL_NVLS_ENABLE");
    if (was && strcmp(was, "0"))
        snprintf(l->note, sizeof l->note,
                 "NCCL_NVLS_ENABLE was '%.64s', set to 0: zipage never uses NVLink multicast", was);
    if (setenv("NCCL_NVLS_ENABLE", "0", 1))
        return err_set(ZP_EIO, "cannot set NCCL_NVLS_ENABLE=0 in the environment");
    return 0;
}

int nccl_load(nccl_lib *out, const char *path) {
    memset(out, 0, sizeof *out);
    int rc = nvls_off(out);
    if (!rc) rc = culib_open(&out->lib, &spec, path ? path : "");
    if (rc) return rc;
    const char *names[N_ENTRIES];
    void *fns[N_ENTRIES];
    for (int i = 0; i < N_ENTRIES; i++)
        names[i] = entries[i].name;
    if ((rc = culib_syms(&out->lib, &spec, names, fns, N_ENTRIES))) return rc;
    for (int i = 0; i < N_ENTRIES; i++)
        memcpy((char *)out + entries[i].off, &fns[i], sizeof fns[i]);
    if ((rc = nccl_err(out, out->GetVersion(&out->version), "ncclGetVersion")))
        return err_prefix(rc, "%s", out->lib.path);
    return nccl_check_version(out->version, out->lib.path);
}

int nccl_err(const nccl_lib *l, ncclResult_t r, const char *what) {
    if (r == ncclSuccess) return 0;
    const char *text = l->GetErrorString ? l->GetErrorString(r) : NULL;
    const char *last = l->GetLastError ? l->GetLastError(NULL) : NULL;
    return err_set(ZP_EBACKEND, "%s: NCCL error %d (%s): %s", what, r, text ? text : "unknown",
                   last && *last ? last : "no further detail from NCCL");
}

int nccl_async_err(const nccl_lib *l, ncclComm_t comm, const char *what) {
    ncclResult_t async = ncclSuccess;
    int rc = nccl_err(l, l->CommGetAsyncError(comm, &async), "ncclCommGetAsyncError");
    if (rc) return err_prefix(rc, "%s", what);
    return async == ncclInProgress ? 0 : nccl_err(l, async, what);
}
