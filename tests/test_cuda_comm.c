/* drv/comm_nccl's communicator on every GPU of the machine (1 to 8), one CUDA backend per GPU,
 * each rank driven from its own thread as the tensor-parallel model drives it (issue 16):
 * 1. all_reduce_sum in place of 4,099 f32 and of 4,099 bf16 elements with known values, every
 *    sum exact whatever order NCCL adds in, compared element by element;
 * 2. all_gather of f32 pieces of uneven width (cols not a multiple of the ranks: pieces differ
 *    by one column), rows `ld` apart in the full buffer, to rank 0 only (the others' full
 *    buffers must stay untouched: poisoned, then checked) and then to every rank;
 * 3. a gather larger than the planned scratch is refused (ZP_EINVAL) before anything is queued;
 * 4. the group abort (engine/tp's answer to a rank failing outside a collective): ranks 1.. queue
 *    an all-reduce and wait on their streams while rank 0 never joins it and aborts the group
 *    instead: their waits return (an alarm fails the test if they hang), and every later call
 *    and comm_nccl_check answer ZP_ESTATE; a second abort does nothing.
 * With one GPU the same runs at size 1 (the gather is then the strided copy alone; the abort has
 * no one waiting).
 * NVLink multicast stays off: nccl_load sets NCCL_NVLS_ENABLE=0 before NCCL is opened.
 * SKIP without a driver, a GPU or NCCL. Threads: ranks record their failures in their slot;
 * only the main thread CHECKs. */
#include "arena/err.h"
#include "drv/comm_nccl.h"
#include "drv/cuda.h"
#include "drv/dtype.h"
#include "tests/nccl_util.h"
#include "tests/testlib.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { N = 4099, ROWS = 5, MAX_ROWS = 8 };

static nccl_lib nc;
static backend *bes[ZP_TP_MAX];
static comm_nccl ranks[ZP_TP_MAX];
static int size, cols, ld;

typedef struct {
    int r;
    char fail[256]; /* the first failure, "" = none */
} rank_job;

static float f32_in(int r, int i) {
    return 0.25f * (float)((i % 97) - 48) * (float)(r + 1);
}
static float bf16_in(int r, int i) {
    return (float)((i % 13) - 6 + r);
}
static float piece_in(int r, int row, int col) {
    return (float)(r * 1000 + row * 100 + col) + 0.5f;
}

#define RFAIL(j, ...)                                                                              \
    do {                                                                                           \
        if (!(j)->fail[0]) snprintf((j)->fail, sizeof(j)->fail, __VA_ARGS__);                      \
    } while (0)

static void *rank_main(void *p) {
    rank_job *j = p;
    const int r = j->r;
    backend *be = bes[r];
    comm *c = &ranks[r].c;
    if (be->bind_thread(be)) {
        RFAIL(j, "rank %d: bind_thread: %s", r, err_msg());
        return NULL;
    }
    size_t piece_cols = (size_t)((r + 1) * cols / size - r * cols / size);
    /* buffers: f32 [N], bf16 [N], the piece [ROWS][piece_cols], the full [ROWS][ld] */
    be_ptr f, b, pc, full;
    if (be->alloc(be, N * 4, 256, &f, "f32") || be->alloc(be, N * 2, 256, &b, "bf16") ||
        be->alloc(be, (size_t)ROWS * piece_cols * 4, 256, &pc, "piece") ||
        be->alloc(be, (size_t)ROWS * (size_t)ld * 4, 256, &full, "full")) {
        RFAIL(j, "rank %d: alloc: %s", r, err_msg());
        return NULL;
    }
    static float hf[ZP_TP_MAX][N], hfull[ZP_TP_MAX][MAX_ROWS * 512], hp[ZP_TP_MAX][MAX_ROWS * 512];
    static uint16_t hb[ZP_TP_MAX][N];
    for (int i = 0; i < N; i++)
        hf[r][i] = f32_in(r, i), hb[r][i] = zp_f32_to_bf16(bf16_in(r, i));
    for (int row = 0; row < ROWS; row++)
        for (size_t k = 0; k < piece_cols; k++)
            hp[r][row * piece_cols + k] = piece_in(r, row, (int)k);
    for (int i = 0; i < ROWS * ld; i++)
        hfull[r][i] = NAN;
    int rc = be->upload(be, f, hf[r], sizeof hf[r]);
    if (!rc) rc = be->upload(be, b, hb[r], sizeof hb[r]);
    if (!rc) rc = be->upload(be, pc, hp[r], (size_t)ROWS * piece_cols * 4);
    if (!rc) rc = be->upload(be, full, hfull[r], (size_t)ROWS * (size_t)ld * 4);
    if (!rc) rc = c->all_reduce_sum(c, f, N, ZP_F32);
    if (!rc) rc = c->all_reduce_sum(c, b, N, ZP_BF16);
    if (!rc) rc = c->all_gather(c, pc, full, ROWS, cols, ld, ZP_F32, 0);
    if (!rc) rc = be->download(be, hfull[r], full, (size_t)ROWS * (size_t)ld * 4);
    if (!rc) rc = be->sync(be);
    if (rc) {
        RFAIL(j, "rank %d: %s", r, err_msg());
        return NULL;
    }
    /* to root 0: rank 0 holds every piece in place, the others' full buffers are untouched */
    for (int row = 0; row < ROWS; row++)
        for (int col = 0; col < ld; col++) {
            float got = hfull[r][row * ld + col];
            if (r != 0 || col >= cols) {
                if (!isnan(got))
                    RFAIL(j, "rank %d: gather to rank 0 wrote row %d column %d", r, row, col);
                continue;
            }
            int owner = 0;
            while ((owner + 1) * cols / size <= col)
                owner++;
            float want = piece_in(owner, row, col - owner * cols / size);
            if (got != want)
                RFAIL(j, "rank 0: gathered row %d column %d = %g, want %g", row, col, got, want);
        }
    /* to every rank */
    rc = c->all_gather(c, pc, full, ROWS, cols, ld, ZP_F32, -1);
    if (!rc) rc = be->download(be, hfull[r], full, (size_t)ROWS * (size_t)ld * 4);
    if (!rc) rc = be->download(be, hf[r], f, sizeof hf[r]);
    if (!rc) rc = be->download(be, hb[r], b, sizeof hb[r]);
    if (!rc) rc = be->sync(be);
    if (rc) {
        RFAIL(j, "rank %d: %s", r, err_msg());
        return NULL;
    }
    for (int row = 0; row < ROWS; row++)
        for (int col = 0; col < cols; col++) {
            int owner = 0;
            while ((owner + 1) * cols / size <= col)
                owner++;
            float want = piece_in(owner, row, col - owner * cols / size);
            if (hfull[r][row * ld + col] != want)
                RFAIL(j, "rank %d: all-gathered row %d column %d = %g, want %g", r, row, col,
                      hfull[r][row * ld + col], want);
        }
    for (int i = 0; i < N; i++) {
        float wf = 0, wb = 0;
        for (int k = 0; k < size; k++)
            wf += f32_in(k, i), wb += bf16_in(k, i);
        if (hf[r][i] != wf) RFAIL(j, "rank %d: f32 sum [%d] = %g, want %g", r, i, hf[r][i], wf);
        if (zp_bf16_to_f32(hb[r][i]) != wb)
            RFAIL(j, "rank %d: bf16 sum [%d] = %g, want %g", r, i, zp_bf16_to_f32(hb[r][i]), wb);
    }
    /* a gather past the planned scratch: refused, nothing queued */
    rc = c->all_gather(c, pc, full, MAX_ROWS + 1, cols, ld, ZP_F32, 0);
    if (rc != ZP_EINVAL) RFAIL(j, "rank %d: an oversized gather returned %d, not ZP_EINVAL", r, rc);
    return NULL;
}

/* Phase 4 on rank j->r's thread: rank 0 aborts instead of joining the all-reduce the others
 * queued and wait for. */
static void *abort_main(void *p) {
    rank_job *j = p;
    const int r = j->r;
    backend *be = bes[r];
    comm *c = &ranks[r].c;
    be_ptr f;
    if (be->bind_thread(be) || be->alloc(be, N * 4, 256, &f, "abort f32")) {
        RFAIL(j, "rank %d: %s", r, err_msg());
        return NULL;
    }
    if (r == 0) {
        struct timespec ts = {0, 300 * 1000 * 1000}; /* the others are waiting by then */
        nanosleep(&ts, NULL);
        c->abort(c);
        c->abort(c); /* begun already: returns */
    } else {
        int rc = c->all_reduce_sum(c, f, N, ZP_F32);
        if (!rc) be->sync(be); /* returns once the abort ended the collective, error or not */
    }
    int rc = c->all_reduce_sum(c, f, N, ZP_F32);
    if (rc != ZP_ESTATE)
        RFAIL(j, "rank %d: an all-reduce after the abort returned %d, not ZP_ESTATE", r, rc);
    if ((rc = comm_nccl_check(&ranks[r])) != ZP_ESTATE)
        RFAIL(j, "rank %d: comm_nccl_check after the abort returned %d, not ZP_ESTATE", r, rc);
    return NULL;
}

static void run_ranks(void *(*fn)(void *), rank_job *jobs) {
    pthread_t th[ZP_TP_MAX];
    for (int r = 0; r < size; r++) {
        jobs[r] = (rank_job){.r = r};
        REQUIRE(pthread_create(&th[r], NULL, fn, &jobs[r]) == 0);
    }
    for (int r = 0; r < size; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < size; r++)
        CHECKF(!jobs[r].fail[0], "%s", jobs[r].fail);
}

int main(void) {
    int n = 0, rc = nccl_test_start(&nc, 1, "no GPU", &n);
    if (rc) return rc;
    size = n < ZP_TP_MAX ? n : ZP_TP_MAX;
    cols = 37 * size + 3, ld = cols + 5; /* uneven pieces, rows wider than the data */
    for (int r = 0; r < size; r++) {
        be_config bc = {.kind = BE_CUDA,
                        .cuda_device = r,
                        .attention_chunk = 512,
                        .attention_prefill_chunk = 512,
                        .gemm_workspace_mb = 1};
        be_shape s = {.layers = 1,
                      .hidden = 64,
                      .heads = 2,
                      .kv_heads = 2,
                      .head_dim = 64,
                      .intermediate = 128,
                      .vocab = 64,
                      .block_size = 16,
                      .max_tokens = 8,
                      .max_logits = 8,
                      .max_model_len = 512};
        char why[256];
        REQUIRE(backend_create(&bes[r], &bc, &s, why, sizeof why) == 0);
        REQUIRE(bes[r]->reserve(bes[r], comm_nccl_bytes(size, MAX_ROWS, cols) + (8u << 20),
                                1u << 20) == 0);
    }
    rc = comm_nccl_open(ranks, &nc, bes, size, MAX_ROWS, cols);
    CHECKF(rc == 0, "comm_nccl_open over %d GPUs: %s", size, rc ? err_msg() : "");
    if (!rc) {
        static rank_job jobs[ZP_TP_MAX];
        run_ranks(rank_main, jobs);
        for (int r = 0; r < size; r++)
            CHECKF(comm_nccl_check(&ranks[r]) == 0, "rank %d: asynchronous error %s", r, err_msg());
        printf("  %d rank(s): all-reduce f32 + bf16, gathers of %d columns (ld %d) checked\n", size,
               cols, ld);
        alarm(120); /* a hang after the abort ends the test (SIGALRM) instead of CI */
        run_ranks(abort_main, jobs);
        alarm(0);
        printf("  %d rank(s): the group abort ended the waiting ranks' all-reduce\n", size);
        comm_nccl_close(ranks, size);
    }
    for (int r = 0; r < size; r++)
        bes[r]->destroy(bes[r]);
    return test_done("test_cuda_comm");
}
