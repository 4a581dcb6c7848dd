/* Per-request sampling (contract in sampling.h). */
#include "sampling.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "topk.h"
#include "rng.h"

struct dsd_sampler {
    struct dsd_sampling_params p;
    int64_t vocab;
    struct dsd_rng rng;
    uint32_t *out_count;        /* output-token counts (frequency/presence penalties) */
    uint8_t *seen;              /* prompt or output token seen (repetition penalty) */
    int32_t *cand;              /* candidate ids scratch */
    float *prob;                /* scratch */
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

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(struct dsd_sampler *s)
{
    return dsd_rng_uniform(&s->rng);
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
    s->out_count = calloc((size_t)vocab, sizeof *s->out_count);
    s->seen = calloc((size_t)vocab, 1);
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    if (!s->out_count || !s->seen || !s->cand || !s->prob) {
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
    free(s->out_count);
    free(s->seen);
    free(s->cand);
    free(s->prob);
    free(s);
}

void dsd_sampler_accept_prompt(struct dsd_sampler *s, const int32_t *tokens, int n)
{
    for (int i = 0; i < n; i++)
        if (tokens[i] >= 0 && tokens[i] < s->vocab)
            s->seen[tokens[i]] = 1;
}

void dsd_sampler_accept(struct dsd_sampler *s, int32_t token)
{
    if (token < 0 || token >= s->vocab)
        return;
    s->seen[token] = 1;
    s->out_count[token]++;
}

int32_t dsd_argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best] || (isnan(v[best]) && !isnan(v[i])))
            best = i;
    return (int32_t)best;
}

static void apply_penalties(const struct dsd_sampler *s, float *logits)
{
    const struct dsd_sampling_params *p = &s->p;
    if (p->repetition_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f)
        return;
    for (int64_t i = 0; i < s->vocab; i++) {
        if (s->seen[i] && p->repetition_penalty != 1.0f)
            logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty : logits[i] * p->repetition_penalty;
        if (s->out_count[i])
            logits[i] -= p->frequency_penalty * (float)s->out_count[i] + p->presence_penalty;
    }
}

/* Sorts ids by probability, descending, ids ascending among equals (deterministic). */
static _Thread_local const float *tl_sort_prob;

static int cmp_prob_desc(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    float px = tl_sort_prob[x], py = tl_sort_prob[y];
    if (px != py)
        return px > py ? -1 : 1;
    return (x > y) - (x < y);
}

static void sort_by_prob_desc(int32_t *ids, int64_t n, const float *prob)
{
    tl_sort_prob = prob;
    qsort(ids, (size_t)n, sizeof *ids, cmp_prob_desc);
}

static int32_t draw(struct dsd_sampler *s, int n, const float *logits, float mx, double z, float *logprob);

int32_t dsd_sampler_sample(struct dsd_sampler *s, float *logits, float *logprob)
{
    const struct dsd_sampling_params *p = &s->p;
    const int64_t V = s->vocab;
    apply_penalties(s, logits);
    if (p->temperature > 0.0f)
        for (int64_t i = 0; i < V; i++)
            logits[i] /= p->temperature;

    /* log-softmax normalizer over the whole vocabulary (NaN logits count as -inf) */
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double z = 0.0;
    for (int64_t i = 0; i < V; i++) {
        s->prob[i] = isnan(logits[i]) ? 0.0f : expf(logits[i] - mx);
        z += s->prob[i];
    }
    if (p->temperature == 0.0f) {
        int32_t best = dsd_argmax(logits, V);
        if (logprob)
            *logprob = (float)((double)logits[best] - mx - log(z));
        return best;
    }

    int64_t want = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    const float pmax = 1.0f; /* prob[] holds exp(logit - max): the largest is 1 */
    int n;
    if (p->top_p >= 1.0f) {
        /* No nucleus cut: top-k and min-p define a set, and a draw from a set needs no
         * order. Sorting 129k candidates per token cost ~70 ms on a flat distribution. */
        n = 0;
        if (want < V) {
            dsd_topk(s->prob, (int)V, (int)want, s->cand);
            for (int64_t i = 0; i < want; i++)
                if (!(p->min_p > 0.0f && s->prob[s->cand[i]] < p->min_p * pmax))
                    s->cand[n++] = s->cand[i];
        } else {
            for (int64_t i = 0; i < V; i++)
                if (!(p->min_p > 0.0f && s->prob[i] < p->min_p * pmax))
                    s->cand[n++] = (int32_t)i;
        }
        return draw(s, n, logits, mx, z, logprob);
    }

    /* Nucleus: candidates in descending probability, found with growing top-k selections
     * so a peaked distribution over 129k ids is never fully sorted; a flat one jumps to
     * one full sort instead of many growing ones. */
    int64_t k = want < 64 ? want : 64;
    double mass;
    for (;;) {
        dsd_topk(s->prob, (int)V, (int)k, s->cand);
        sort_by_prob_desc(s->cand, k, s->prob);
        mass = 0.0;
        n = 0;
        for (int64_t i = 0; i < k; i++) {
            float pi = s->prob[s->cand[i]];
            if (p->min_p > 0.0f && pi < p->min_p * pmax)
                break;
            mass += pi;
            n++;
            if (mass >= p->top_p * z)
                break;
        }
        bool done = n < k || k == want || mass >= p->top_p * z;
        if (done)
            break;
        k = k * 4 < want && k * 4 < V / 8 ? k * 4 : want;
    }
    return draw(s, n, logits, mx, z, logprob);
}

/* Draws one of cand[0..n) in proportion to prob[]. Min-p and top-p always keep the most
 * likely token, so n == 0 only happens on degenerate (NaN) logits: take the argmax. */
static int32_t draw(struct dsd_sampler *s, int n, const float *logits, float mx, double z, float *logprob)
{
    if (n == 0) {
        s->cand[0] = dsd_argmax(logits, s->vocab);
        n = 1;
    }
    double kept = 0.0;
    for (int i = 0; i < n; i++)
        kept += s->prob[s->cand[i]];
    double r = uniform01(s) * kept, acc = 0.0;
    int32_t pick = s->cand[n - 1];
    for (int i = 0; i < n; i++) {
        acc += s->prob[s->cand[i]];
        if (r < acc) {
            pick = s->cand[i];
            break;
        }
    }
    if (logprob)
        *logprob = (float)((double)logits[pick] - mx - log(z));
    return pick;
}
