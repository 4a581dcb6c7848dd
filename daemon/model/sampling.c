/* Per-request sampling (contract in sampling.h). */
#include "sampling.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

struct dsd_sampler {
    struct dsd_sampling_params p;
    int64_t vocab;
    struct dsd_rng rng;
    uint32_t *pen;              /* penalty state, kernels/sample.h format */
    void *scratch;              /* dsd_sample_ref's */
};

struct dsd_sampling_params dsd_sampling_default_params(void)
{
    return (struct dsd_sampling_params){
        .temperature = 0.0f, .top_p = 1.0f, .top_k = 0, .min_p = 0.0f,
        .repetition_penalty = 1.0f, .frequency_penalty = 0.0f, .presence_penalty = 0.0f, .seed = 0,
    };
}

int dsd_sampling_params_check(const struct dsd_sampling_params *p, struct dsd_err *err)
{
#define RANGE(field, ok, what)                                                                   \
    if (!(ok))                                                                                   \
        return dsd_errf(err, -EINVAL, "sampling: " #field " = %g is out of range (%s)", (double)p->field, what)
    RANGE(temperature, p->temperature >= 0.0f && p->temperature <= 100.0f, "0 = greedy, up to 100");
    RANGE(top_p, p->top_p > 0.0f && p->top_p <= 1.0f, "(0, 1]");
    RANGE(top_k, p->top_k >= 0, ">= 0, 0 = off");
    RANGE(min_p, p->min_p >= 0.0f && p->min_p <= 1.0f, "[0, 1]");
    RANGE(repetition_penalty, p->repetition_penalty > 0.0f && p->repetition_penalty <= 10.0f, "(0, 10]");
    RANGE(frequency_penalty, p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f, "[-2, 2]");
    RANGE(presence_penalty, p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f, "[-2, 2]");
#undef RANGE
    return 0;
}

int dsd_sampler_new(const struct dsd_sampling_params *p, int64_t vocab, struct dsd_sampler **out,
                    struct dsd_err *err)
{
    int rc = dsd_sampling_params_check(p, err);
    if (rc)
        return rc;
    struct dsd_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return dsd_errf(err, -ENOMEM, "sampling: out of memory");
    s->p = *p;
    s->vocab = vocab;
    dsd_rng_seed(&s->rng, p->seed);
    s->pen = calloc((size_t)vocab, sizeof *s->pen);
    s->scratch = malloc(dsd_sample_scratch_bytes(vocab));
    if (!s->pen || !s->scratch) {
        dsd_sampler_free(s);
        return dsd_errf(err, -ENOMEM, "sampling: out of memory");
    }
    *out = s;
    return 0;
}

void dsd_sampler_free(struct dsd_sampler *s)
{
    if (!s)
        return;
    free(s->pen);
    free(s->scratch);
    free(s);
}

void dsd_sampler_accept_prompt(struct dsd_sampler *s, const int32_t *tokens, int n)
{
    for (int i = 0; i < n; i++)
        if (tokens[i] >= 0 && tokens[i] < s->vocab)
            s->pen[tokens[i]] |= DSD_PEN_SEEN;
}

void dsd_sampler_accept(struct dsd_sampler *s, int32_t token)
{
    if (token < 0 || token >= s->vocab)
        return;
    uint32_t c = s->pen[token] & DSD_PEN_COUNT;
    s->pen[token] = DSD_PEN_SEEN | (c < DSD_PEN_COUNT ? c + 1 : c);
}

int32_t dsd_argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best] || (isnan(v[best]) && !isnan(v[i])))
            best = i;
    return (int32_t)best;
}

void dsd_sampler_params_row(const struct dsd_sampler *s, int n_top, struct dsd_sample_row *row)
{
    const struct dsd_sampling_params *p = &s->p;
    *row = (struct dsd_sample_row){
        .temperature = p->temperature, .top_p = p->top_p, .min_p = p->min_p,
        .repetition_penalty = p->repetition_penalty, .frequency_penalty = p->frequency_penalty,
        .presence_penalty = p->presence_penalty, .top_k = p->top_k, .pen_slot = -1, .u = 0.0f, .n_top = n_top,
    };
}

void dsd_sampler_row(struct dsd_sampler *s, int n_top, struct dsd_sample_row *row)
{
    dsd_sampler_params_row(s, n_top, row);
    /* greedy draws nothing: a request's stream advances once per sampled token */
    row->u = s->p.temperature > 0.0f ? (float)dsd_rng_uniform(&s->rng) : 0.0f;
    /* (float) of a double in [0, 1) may round up to 1.0: keep it below */
    if (row->u >= 1.0f)
        row->u = nextafterf(1.0f, 0.0f);
}

const uint32_t *dsd_sampler_penalty_state(const struct dsd_sampler *s)
{
    return s->pen;
}

bool dsd_sampler_penalized(const struct dsd_sampler *s)
{
    const struct dsd_sample_row r = { .repetition_penalty = s->p.repetition_penalty,
                                      .frequency_penalty = s->p.frequency_penalty,
                                      .presence_penalty = s->p.presence_penalty };
    return dsd_sample_row_penalized(&r);
}

void dsd_sampler_sample_full(struct dsd_sampler *s, const float *logits, int n_top, struct dsd_sample_result *out,
                             float *logprob)
{
    struct dsd_sample_row row;
    dsd_sampler_row(s, n_top, &row);
    dsd_sample_ref(logits, s->vocab, &row, s->pen, s->scratch, out, logprob);
}

int32_t dsd_sampler_sample(struct dsd_sampler *s, float *logits, float *logprob)
{
    struct dsd_sample_result r;
    dsd_sampler_sample_full(s, logits, -1, &r, logprob);
    return r.token;
}
