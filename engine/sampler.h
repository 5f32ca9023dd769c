/* sampler: turns one row of logits into one token for one request.
 *
 * Order (as HF / vLLM): mask ids the tokenizer never produces -> repetition penalty (HF rule
 * over prompt + completion ids) -> presence / frequency penalties (completion ids) ->
 * temperature 0 = greedy argmax (lowest id wins ties); otherwise temperature -> top-k ->
 * top-p -> min-p -> draw. The logprob reported is log softmax of the processed logits at
 * the chosen id (before top-k/p filtering; temperature applied).
 *
 * Randomness is per request: a counter-based generator keyed by (seed, completion index),
 * so a request's draws do not depend on batching or on other requests.
 * Working memory comes from a caller-owned scratch sized at start-up; no allocation.
 * Threading: a sampler is used by one thread (one per engine thread); no global state.
 * docs/SAMPLING.md states the semantics in full.
 */
#ifndef ZP_SAMPLER_H
#define ZP_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena/arena.h"

#define SAMPLER_MAX_STOP 16

typedef struct sampling_params {
    float temperature;        /* 0 = greedy */
    int32_t top_k;            /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    float presence_penalty;   /* 0 = off */
    float frequency_penalty;  /* 0 = off */
    uint64_t seed;
    int32_t max_tokens;
    bool ignore_eos;
    int32_t n_stop;
    int32_t stop_ids[SAMPLER_MAX_STOP];
} sampling_params;

/* Defaults: greedy, no filters, seed 0, max_tokens 256. */
void sampler_defaults(sampling_params *p);
/* Checks ranges; the message names the parameter. */
int sampler_validate(const sampling_params *p, int vocab);

/* Per-thread sampling state: scratch sized once at init for one row of n_logits logits.
 * Between calls seen[] and counts[] are all zero (each call clears what it set). */
typedef struct sampler {
    int32_t n_logits; /* row length (the model's vocabulary, padding included) */
    int32_t n_valid;  /* ids >= n_valid are never sampled */
    /* After sampler_probs(): the n_kept tokens that may be drawn and their renormalised
     * probabilities, in draw order (best first whenever top-k or top-p is on). During a call
     * probs[] also serves as the sort key array. Both sized n_logits. */
    int32_t *ids;
    float *probs;
    int32_t n_kept;
    uint64_t *seen;            /* repetition-penalty bitmap, one bit per id */
    int32_t *counts;           /* completion counts for presence / frequency penalties */
    uint32_t *keys, *keys_tmp; /* radix-sort scratch for top-p */
    int32_t *ids_tmp;
    float max_logit; /* largest processed logit of the last call */
    float temp;      /* temperature of the last call (1 for greedy): logprob scale */
    double log_z;    /* log sum exp((logit - max_logit) / temp) over valid ids, if has_log_z */
    bool has_log_z;
} sampler;

/* Carves the scratch from the arena (start-up only). 1 <= n_valid <= n_logits <= 2^30. */
int sampler_init(sampler *s, arena *a, int32_t n_logits, int32_t n_valid);

/* Runs every step of sampler_sample() except the draw, on one row of n_logits logits that
 * it modifies in place: on return logits[] holds the processed logits (invalid ids -inf,
 * penalties applied, temperature NOT applied) and s->ids / s->probs / s->n_kept the kept
 * distribution. prompt / completion are the request's ids so far (each id in [0, n_logits));
 * n_completion is also the counter of the random draw. p must have passed sampler_validate().
 * Returns n_kept (>= 1) or a negative ZP_E* code: ZP_EINVAL for an id out of range or all
 * tokens masked, ZP_EBACKEND for a NaN or +inf logit. */
int32_t sampler_probs(sampler *s, const sampling_params *p, float *logits, const int32_t *prompt,
                      int32_t n_prompt, const int32_t *completion, int32_t n_completion);

/* Log-softmax of the processed logits of the last sampler_probs() call at id (temperature
 * applied; 1 for greedy), before top-k / top-p / min-p filtering. logits is that call's row.
 * -inf for a masked or out-of-range id. */
float sampler_logprob(sampler *s, const float *logits, int32_t id);

/* The uniform number in [0, 1) for completion index n of a request with this seed: a pure
 * function of (seed, n) (splitmix64 keyed by the hashed seed). */
double sampler_uniform(uint64_t seed, int64_t n);

/* Samples one token from one row of logits (modified in place as for sampler_probs()).
 * *logprob (if not NULL) gets sampler_logprob() of the chosen token. Returns the token id, or
 * a negative ZP_E* code with the message set. */
int32_t sampler_sample(sampler *s, const sampling_params *p, float *logits, const int32_t *prompt,
                       int32_t n_prompt, const int32_t *completion, int32_t n_completion,
                       float *logprob);

#endif
