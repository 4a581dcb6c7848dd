/*
 * daemon/model/sampling.h: turning one row of logits into a token, per request.
 *
 *   struct dsd_sampling_params sp = dsd_sampling_default_params();   // greedy
 *   sp.temperature = 0.7f; sp.top_p = 0.95f; sp.seed = 42;
 *   struct dsd_sampler *s;
 *   if (dsd_sampler_new(&sp, vocab, &s, &err) < 0) ...;               // bad params: -EINVAL
 *   dsd_sampler_accept_prompt(s, prompt, n);      // for the repetition penalty
 *   int32_t tok = dsd_sampler_sample(s, logits, &logprob);            // logits are modified
 *   dsd_sampler_accept(s, tok);
 *   dsd_sampler_free(s);
 *
 * Order of application (the common convention of HF/vLLM): repetition penalty (prompt and
 * output tokens: positive logits divided, negative multiplied), frequency and presence
 * penalties (output tokens, OpenAI definition), temperature, then top-k, min-p, top-p
 * filtering, then a draw from the renormalized distribution with the request's own
 * xoshiro256** stream seeded by `seed` (the same seed and logits give the same tokens).
 * temperature 0 is greedy (argmax, ties to the lowest id) and ignores the filters.
 */
#ifndef DSD_MODEL_SAMPLING_H
#define DSD_MODEL_SAMPLING_H

#include <stdint.h>

#include "err.h"

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
/* Picks a token from logits[vocab] (modified in place). *logprob (may be NULL) receives the
 * log-probability of the pick under the final sampling distribution (temperature applied,
 * before filtering; for greedy: of the raw softmax). */
int32_t dsd_sampler_sample(struct dsd_sampler *s, float *logits, float *logprob);

/* Index of the largest value, ties to the lowest index (greedy decoding). */
int32_t dsd_argmax(const float *v, int64_t n);

#endif
