/* nccl: NVIDIA's collective communication library (NCCL), loaded with dlopen, for tensor
 * parallelism: the few declarations zipage uses, written here so that building needs no CUDA
 * toolkit or NCCL headers, and the loader that finds libnccl.so.2 and resolves them.
 *
 * Invariants:
 * - Types and enum values below are NCCL's ABI as its public nccl.h declares them (checked
 *   against 2.32.6, the nvidia-nccl-cu13 wheel, and 2.16.2, NCCL_MIN_VERSION).
 *   Enums are passed as int, which is their size in C. cudaStream_t is the driver's CUstream.
 * - NVLink multicast (NVLS) is never used: nccl_load sets NCCL_NVLS_ENABLE=0 in the process
 *   environment, overwriting any other value, before libnccl is opened, because on the shared
 *   multi-GPU hosts we run on a program using multicast can put every GPU of the host out of
 *   service for a day or more (the device machines' KINDS.md). NCCL reads its variables when it
 *   initialises (on the first call that needs it), and its configuration files
 *   (NCCL_CONF_FILE, ~/.nccl.conf, /etc/nccl.conf) never overwrite a variable already set.
 * - The library is found like NVRTC (drv/culib.h): the override (key nccl_path, else the
 *   environment variable ZIPAGE_NCCL), libnccl.so.2 on the loader path, the CUDA and system
 *   library directories, then pip's wheels (nvidia/nccl/lib), among them build/nccl-venv beside
 *   the binary, where the Makefile installs nvidia-nccl-cu13 for the tests.
 * - Every function is resolved at load; a missing one is an error naming the symbol and the file,
 *   and a version older than NCCL_MIN_VERSION is refused naming the found and needed versions.
 * Errors: 0 or a negative ZP_E* code with the message in err_msg(); NCCL failures become
 *   ZP_EBACKEND with ncclGetErrorString's and ncclGetLastError's text.
 * Memory: no allocation of ours; setenv, dlopen and NCCL allocate inside their libraries.
 * Threading: nccl_load runs at start-up, before other threads exist (setenv is not thread-safe).
 *   The library then stays loaded for the life of the process: NCCL keeps global state and
 *   threads that outlive any one communicator, so there is no unload (a file refused for a
 *   missing symbol or its version stays mapped too, as NVRTC's and cuBLASLt's do: a start-up
 *   error ends the process).
 */
#ifndef ZP_NCCL_H
#define ZP_NCCL_H

#include "drv/cuda_api.h"
#include "drv/culib.h"

#include <stddef.h>

/* The oldest NCCL accepted, as NCCL_VERSION_CODE (major * 10000 + minor * 100 + patch): 2.16.2,
 * the first version of the nvidia-nccl-cu12 wheel (NCCL for CUDA 12, the oldest CUDA zipage runs
 * on). Every declaration below is in its nccl.h with the same values and signatures. */
#define NCCL_MIN_VERSION 21602

/* ---- NCCL's ABI (nccl.h) ---- */
typedef int ncclResult_t;
enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
};
typedef int ncclDataType_t;
enum { ncclInt32 = 2, ncclFloat16 = 6, ncclFloat32 = 7, ncclBfloat16 = 9 };
typedef int ncclRedOp_t;
enum { ncclSum = 0 };

/* The opaque bootstrap address one rank makes and every rank of a communicator receives. */
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;
_Static_assert(sizeof(ncclUniqueId) == 128, "ncclUniqueId is NCCL_UNIQUE_ID_BYTES (128) bytes");
typedef struct ncclComm *ncclComm_t;

typedef ncclResult_t (*PFN_ncclGetVersion)(int *version);
typedef const char *(*PFN_ncclGetErrorString)(ncclResult_t result);
/* comm is unused by NCCL (NULL is allowed): the text is the library's latest error. */
typedef const char *(*PFN_ncclGetLastError)(ncclComm_t comm);
typedef ncclResult_t (*PFN_ncclGetUniqueId)(ncclUniqueId *id);
typedef ncclResult_t (*PFN_ncclCommInitRank)(ncclComm_t *comm, int nranks, ncclUniqueId id,
                                             int rank);
typedef ncclResult_t (*PFN_ncclCommInitAll)(ncclComm_t *comms, int ndev, const int *devlist);
typedef ncclResult_t (*PFN_ncclCommDestroy)(ncclComm_t comm);
typedef ncclResult_t (*PFN_ncclCommAbort)(ncclComm_t comm);
typedef ncclResult_t (*PFN_ncclCommGetAsyncError)(ncclComm_t comm, ncclResult_t *async_error);
typedef ncclResult_t (*PFN_ncclAllReduce)(const void *send, void *recv, size_t count,
                                          ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                                          CUstream stream);
typedef ncclResult_t (*PFN_ncclAllGather)(const void *send, void *recv, size_t send_count,
                                          ncclDataType_t type, ncclComm_t comm, CUstream stream);
typedef ncclResult_t (*PFN_ncclBroadcast)(const void *send, void *recv, size_t count,
                                          ncclDataType_t type, int root, ncclComm_t comm,
                                          CUstream stream);
typedef ncclResult_t (*PFN_ncclGroupStart)(void);
typedef ncclResult_t (*PFN_ncclGroupEnd)(void);

/* ---- the loader ---- */
typedef struct nccl_lib {
    culib lib;      /* lib.path: the file loaded */
    int version;    /* NCCL_VERSION_CODE of the loaded library, e.g. 23206 for 2.32.6 */
    char note[192]; /* what nccl_load changed that the user set, for the caller to print; "" */
    PFN_ncclGetVersion GetVersion;
    PFN_ncclGetErrorString GetErrorString;
    PFN_ncclGetLastError GetLastError;
    PFN_ncclGetUniqueId GetUniqueId;
    PFN_ncclCommInitRank CommInitRank;
    PFN_ncclCommInitAll CommInitAll;
    PFN_ncclCommDestroy CommDestroy;
    PFN_ncclCommAbort CommAbort;
    PFN_ncclCommGetAsyncError CommGetAsyncError;
    PFN_ncclAllReduce AllReduce;
    PFN_ncclAllGather AllGather;
    PFN_ncclBroadcast Broadcast;
    PFN_ncclGroupStart GroupStart;
    PFN_ncclGroupEnd GroupEnd;
} nccl_lib;

/* Sets NCCL_NVLS_ENABLE=0 (a different value the user set is named in out->note), then loads
 * libnccl.so.2 from path (a file or a directory; NULL or "" = search), resolves every function
 * and checks the version. ZP_ENOTFOUND naming what was searched, ZP_EUNSUP naming a missing
 * symbol and the file or a version too old. */
int nccl_load(nccl_lib *out, const char *path);

/* 0 when version (an NCCL_VERSION_CODE read from the library at path) is at least
 * NCCL_MIN_VERSION, else ZP_EUNSUP naming both as major.minor.patch and the file. */
int nccl_check_version(int version, const char *path);

/* Turns a failed NCCL call into ZP_EBACKEND: "<what>: NCCL error <r> (<error string>): <last
 * error>"; 0 for ncclSuccess. The last error is NCCL's latest warning text, process-wide: the
 * failing call's own reason when it gave one, else possibly an earlier failure's. */
int nccl_err(const nccl_lib *l, ncclResult_t r, const char *what);

/* A communicator's asynchronous error (a failure inside a collective that already returned) as
 * nccl_err would report it; 0 when there is none. ncclInProgress (a non-blocking operation
 * still running) is not an error. */
int nccl_async_err(const nccl_lib *l, ncclComm_t comm, const char *what);

#endif
