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
 */
#ifndef ZP_SAMPLER_H
#define ZP_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
