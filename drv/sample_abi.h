/* sample_abi: the host side of rtc_kernels/sample.cu (GPU sampling): the per-row parameter
 * record, the seat-initialisation job, the error codes the kernel leaves in ids[], and the
 * size of the per-seat penalty state. docs/GPU.md "Sampling kernel" describes the kernels.
 *
 * Invariants: zp_sample_params and zp_sample_seat_job have exactly the layout the kernel
 * declares (asserted below, and the kernel asserts the size); the error codes are the kernel's.
 * Memory: plain records the caller stages in device memory; nothing is allocated here.
 * Threading: no state.
 */
#ifndef ZP_SAMPLE_ABI_H
#define ZP_SAMPLE_ABI_H

#include "arena/err.h"

#include <stddef.h>
#include <stdint.h>

/* Threads per CTA of zp_sample and zp_sample_seat_init (one CTA per row / job). */
#define ZP_SAMPLE_THREADS 1024

/* One logit row's sampling parameters (sampling_params of engine/sampler.h, already
 * validated, plus where the request's state lives and which draw this is). */
typedef struct zp_sample_params {
    float temperature; /* 0 = greedy */
    int32_t top_k;     /* 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
    float repetition_penalty;
    float presence_penalty;
    float frequency_penalty;
    int32_t seat;         /* penalty state index; -1 = none (every penalty must then be off) */
    uint64_t seed;        /* the request's seed */
    int32_t counter;      /* n_completion: the uniform is sampler_uniform(seed, counter) */
    int32_t want_logprob; /* non-zero: logprobs[row] is written */
} zp_sample_params;

_Static_assert(offsetof(zp_sample_params, temperature) == 0, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, top_k) == 4, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, top_p) == 8, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, min_p) == 12, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, repetition_penalty) == 16, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, presence_penalty) == 20, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, frequency_penalty) == 24, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, seat) == 28, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, seed) == 32, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, counter) == 40, "sample.cu layout");
_Static_assert(offsetof(zp_sample_params, want_logprob) == 44, "sample.cu layout");
_Static_assert(sizeof(zp_sample_params) == 48, "sample.cu layout");

/* zp_sample_seat_init's job: clear the seat, then mark hist_ids[offset ..) as n_prompt prompt
 * ids followed by n_completion completion ids (marked and counted). */
typedef struct zp_sample_seat_job {
    int32_t seat, offset, n_prompt, n_completion;
} zp_sample_seat_job;
_Static_assert(sizeof(zp_sample_seat_job) == 16, "sample.cu reads jobs as int[4]");

/* Codes zp_sample leaves in ids[row] instead of a token. */
enum {
    ZP_SAMPLE_ENAN = -1,    /* a valid logit is NaN (after penalties) */
    ZP_SAMPLE_EINF = -2,    /* the largest valid logit is +inf */
    ZP_SAMPLE_EMASKED = -3, /* every valid logit is -inf */
    ZP_SAMPLE_ENOSEAT = -4, /* a penalty is on but the row has no seat (a host bug) */
};

/* Penalty state of one seat for rows of `stride` logits: a seen bitmap of ceil(stride / 64)
 * u64 words and 64 uint16 completion counts per word (322,864 bytes at stride 151,936). The
 * kernels take the two arrays separately: seen[seats][words], counts[seats][words * 64]. */
static inline size_t zp_sample_seat_words(int32_t stride) {
    return ((size_t)stride + 63) / 64;
}
static inline size_t zp_sample_seat_bytes(int32_t stride) {
    return zp_sample_seat_words(stride) * (8 + 64 * 2);
}

/* Turns a negative ids[row] into the CPU sampler's error: ZP_EBACKEND for NaN / +inf logits,
 * ZP_EINVAL for everything masked or a penalty without a seat, with the message set. */
static inline int zp_sample_error(int32_t code, int row) {
    switch (code) {
    case ZP_SAMPLE_ENAN:
        return err_set(ZP_EBACKEND, "sampler (backend): row %d has a NaN logit", row);
    case ZP_SAMPLE_EINF:
        return err_set(ZP_EBACKEND, "sampler (backend): row %d has a +inf logit", row);
    case ZP_SAMPLE_EMASKED:
        return err_set(ZP_EINVAL,
                       "sampler (backend): every token of row %d is masked (all logits -inf)", row);
    case ZP_SAMPLE_ENOSEAT:
        return err_set(ZP_EINVAL, "sampler (backend): row %d asks for a penalty but has no seat", row);
    default:
        return err_set(ZP_EBACKEND, "sampler (backend): row %d: unknown result %d", row, code);
    }
}

#endif
