/*
 * daemon/model/sampling.h: turning one row of logits into a token, per request.
 *
 *   struct dsd_sampling_params sp = dsd_sampling_default_params();   // greedy
 *   sp.temperature = 0.7f; sp.top_p = 0.95f; sp.seed = 42;
 *   struct dsd_sampler *s;
 *   if (dsd_sampler_new(&sp, vocab, &s, &err) < 0) ...;               // bad params: -EINVAL
 *   dsd_sampler_accept_prompt(s, prompt, n);      // for the repetition penalty
 *   int32_t tok = dsd_sampler_sample(s, logits, &logprob);
 *   dsd_sampler_accept(s, tok);
 *   dsd_sampler_free(s);
 *
 * The semantics are kernels/sample.h's (docs/SAMPLING.md): this host sampler holds a request's
 * parameters, its own xoshiro256** stream seeded by `seed` (one uniform draw per sampled
 * token; greedy draws none) and its penalty state, and runs the reference dsd_sample_ref.
 * The engine samples on the backend instead: dsd_sampler_row() gives the row (and the draw)
 * the backend's `sample` op takes, so both paths consume the same stream.
 */
#ifndef DSD_MODEL_SAMPLING_H
#define DSD_MODEL_SAMPLING_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "sample.h"

struct dsd_sampling_params {
    float temperature;          /* 0 = greedy; (0, 100] */
    float top_p;                /* (0, 1]; 1 = off */
    int32_t top_k;              /* 0 = off */
    float min_p;                /* [0, 1]; 0 = off */
    float repetition_penalty;   /* (0, 10]; 1 = off */
    float frequency_penalty;    /* [-2, 2]; 0 = off */
    float presence_penalty;     /* [-2, 2]; 0 = off */
    uint64_t seed;
};

struct dsd_sampling_params dsd_sampling_default_params(void);
/* 0 when every field is in range, else -EINVAL with err naming the field. */
int dsd_sampling_params_check(const struct dsd_sampling_params *p, struct dsd_err *err);

struct dsd_sampler;

/* Returns 0, -EINVAL (bad params), -ENOMEM. */
int dsd_sampler_new(const struct dsd_sampling_params *p, int64_t vocab, struct dsd_sampler **out,
                    struct dsd_err *err);
void dsd_sampler_free(struct dsd_sampler *s);
void dsd_sampler_accept_prompt(struct dsd_sampler *s, const int32_t *tokens, int n);
void dsd_sampler_accept(struct dsd_sampler *s, int32_t token);
/* Picks a token from logits[vocab] (not modified). *logprob (may be NULL) receives the
 * log-probability of the pick under the distribution after penalties and temperature,
 * before filtering. */
int32_t dsd_sampler_sample(struct dsd_sampler *s, float *logits, float *logprob);

/* The same, with logprobs of the raw logits (n_top >= 0; see kernels/sample.h) in *out. */
void dsd_sampler_sample_full(struct dsd_sampler *s, const float *logits, int n_top, struct dsd_sample_result *out,
                             float *logprob);
/* The parameters of the next sampled token as a backend row (pen_slot -1: the caller assigns
 * one); draws the token's uniform from the request's stream unless greedy. */
void dsd_sampler_row(struct dsd_sampler *s, int n_top, struct dsd_sample_row *row);
/* The same parameters without a draw (u = 0): speculative decoding's distributions. */
void dsd_sampler_params_row(const struct dsd_sampler *s, int n_top, struct dsd_sample_row *row);
/* The sampler's penalty state (kernels/sample.h format, vocab entries): what a backend's
 * penalty row for this request must equal. */
const uint32_t *dsd_sampler_penalty_state(const struct dsd_sampler *s);
/* True when the request uses penalties (and so a penalty state row on the backend). */
bool dsd_sampler_penalized(const struct dsd_sampler *s);

/* Index of the largest value, ties to the lowest index (greedy decoding). */
int32_t dsd_argmax(const float *v, int64_t n);

#endif
