/* The sampling reference (contract and semantics in sample.h, docs/SAMPLING.md). */
#include "sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "topk.h"

size_t dsd_sample_scratch_bytes(int64_t V)
{
    return (size_t)V * (sizeof(float) + sizeof(float) + sizeof(int32_t));
}

static int32_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best] || (isnan(v[best]) && !isnan(v[i])))
            best = i;
    return (int32_t)best;
}

/* Sorts ids by probability, descending, ids ascending among equals. */
static _Thread_local const float *tl_sort_prob;

static int cmp_prob_desc(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    float px = tl_sort_prob[x], py = tl_sort_prob[y];
    if (px != py)
        return px > py ? -1 : 1;
    return (x > y) - (x < y);
}

static int cmp_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Logprobs of the raw logits: the pick's and the n_top largest. */
static void raw_logprobs(const float *raw, int64_t V, int n_top, int32_t *ids, struct dsd_sample_result *out)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (raw[i] > mx)
            mx = raw[i];
    double z = 0;
    for (int64_t i = 0; i < V; i++)
        z += exp((double)raw[i] - mx);
    const double lse = mx + log(z);
    /* finite on the wire: -inf (a masked logit) becomes a large negative number */
    out->logprob = (float)fmax((double)raw[out->token] - lse, -1e30);
    int k = n_top < DSD_SAMPLE_MAX_TOP ? n_top : DSD_SAMPLE_MAX_TOP;
    if (k > V)
        k = (int)V;
    if (k <= 0)
        return;
    dsd_topk(raw, (int)V, k, ids);        /* ascending ids */
    for (int i = 1; i < k; i++)           /* by value, descending; stable: lower ids first */
        for (int j = i; j > 0 && raw[ids[j]] > raw[ids[j - 1]]; j--) {
            int32_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    for (int i = 0; i < k; i++) {
        out->top_ids[i] = ids[i];
        out->top_logprobs[i] = (float)fmax((double)raw[ids[i]] - lse, -1e30);
    }
}

/* Penalties, then temperature, into x[]; prob[] = exp(x - max x) (NaN counts as -inf);
 * *z receives the sum of prob[], *mx the max. */
static void transform(const float *raw, int64_t V, const struct dsd_sample_row *p, const uint32_t *pen, float *x,
                      float *prob, float *mx_out, double *z_out)
{
    const bool penalized = pen && dsd_sample_row_penalized(p);
    for (int64_t i = 0; i < V; i++) {
        float v = raw[i];
        if (penalized) {
            const uint32_t s = pen[i], cnt = s & DSD_PEN_COUNT;
            if ((s & DSD_PEN_SEEN) && p->repetition_penalty != 1.0f)
                v = v > 0 ? v / p->repetition_penalty : v * p->repetition_penalty;
            if (cnt)
                v -= p->frequency_penalty * (float)cnt + p->presence_penalty;
        }
        if (p->temperature > 0.0f)
            v /= p->temperature;
        x[i] = v;
    }
    /* log-softmax normalizer over the whole vocabulary (NaN counts as -inf) */
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (x[i] > mx)
            mx = x[i];
    double z = 0.0;
    for (int64_t i = 0; i < V; i++) {
        prob[i] = isnan(x[i]) ? 0.0f : expf(x[i] - mx);
        z += prob[i];
    }
    *mx_out = mx;
    *z_out = z;
}

/* The kept ids (temperature > 0): the shortest prefix of (p desc, id asc) that top-k, min-p
 * and top-p allow, written to cand[] in ascending id order; returns how many (>= 1). prob[]
 * holds exp(x - max): the largest is 1, so min-p compares with min_p. */
static int64_t kept_ids(const float *x, const float *prob, double z, int64_t V, const struct dsd_sample_row *p,
                        int32_t *cand)
{
    const int64_t want = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    int64_t n = 0;
    if (p->top_p >= 1.0f) {
        /* no nucleus: a set, which needs no order (dsd_topk writes ascending ids) */
        if (want < V) {
            dsd_topk(prob, (int)V, (int)want, cand);
            for (int64_t i = 0; i < want; i++)
                if (!(p->min_p > 0.0f && prob[cand[i]] < p->min_p))
                    cand[n++] = cand[i];
        } else {
            for (int64_t i = 0; i < V; i++)
                if (!(p->min_p > 0.0f && prob[i] < p->min_p))
                    cand[n++] = (int32_t)i;
        }
    } else {
        /* nucleus: candidates in order, found with growing top-k selections so a peaked
         * distribution over 129k ids is never fully sorted */
        int64_t k = want < 64 ? want : 64;
        for (;;) {
            dsd_topk(prob, (int)V, (int)k, cand);
            tl_sort_prob = prob;
            qsort(cand, (size_t)k, sizeof *cand, cmp_prob_desc);
            double mass = 0.0;
            n = 0;
            for (int64_t i = 0; i < k; i++) {
                const float pi = prob[cand[i]];
                if (p->min_p > 0.0f && pi < p->min_p)
                    break;
                mass += pi;
                n++;
                if (mass >= p->top_p * z)
                    break;
            }
            if (n < k || k == want || mass >= p->top_p * z)
                break;
            k = k * 4 < want && k * 4 < V / 8 ? k * 4 : want;
        }
        qsort(cand, (size_t)n, sizeof *cand, cmp_id);     /* the draw walks ids ascending */
    }
    /* min-p and top-p always keep the most likely id: n == 0 only on NaN logits */
    if (n == 0) {
        cand[0] = argmax(x, V);
        n = 1;
    }
    return n;
}

void dsd_sample_ref(const float *raw, int64_t V, const struct dsd_sample_row *p, uint32_t *pen, void *scratch,
                    struct dsd_sample_result *out, float *sample_logprob)
{
    float *x = scratch, *prob = x + V;
    int32_t *cand = (int32_t *)(prob + V);
    memset(out, 0, sizeof *out);
    for (int i = 0; i < DSD_SAMPLE_MAX_TOP; i++)
        out->top_ids[i] = -1;
    float mx;
    double z;
    transform(raw, V, p, pen, x, prob, &mx, &z);

    int32_t pick;
    if (p->temperature == 0.0f) {
        pick = argmax(x, V);
    } else {
        const int64_t n = kept_ids(x, prob, z, V, p, cand);
        double kept = 0.0;
        for (int64_t i = 0; i < n; i++)
            kept += prob[cand[i]];
        const double r = (double)p->u * kept;
        double acc = 0.0;
        pick = cand[n - 1];
        for (int64_t i = 0; i < n; i++) {
            acc += prob[cand[i]];
            if (r < acc) {
                pick = cand[i];
                break;
            }
        }
    }
    out->token = pick;
    out->status = isfinite(mx) ? DSD_SAMPLE_OK : DSD_SAMPLE_NONFINITE;
    if (sample_logprob)
        *sample_logprob = (float)((double)x[pick] - mx - log(z));
    if (p->n_top >= 0)
        raw_logprobs(raw, V, p->n_top, cand, out);
    if (pen && p->pen_slot >= 0) {
        uint32_t s = pen[pick];
        pen[pick] = DSD_PEN_SEEN | ((s & DSD_PEN_COUNT) < DSD_PEN_COUNT ? (s & DSD_PEN_COUNT) + 1 : DSD_PEN_COUNT);
    }
}

void dsd_sample_dist_ref(const float *raw, int64_t V, const struct dsd_sample_row *p, const uint32_t *pen,
                         void *scratch, float *dist)
{
    float *x = scratch, *prob = x + V;
    int32_t *cand = (int32_t *)(prob + V);
    float mx;
    double z;
    transform(raw, V, p, pen, x, prob, &mx, &z);
    memset(dist, 0, (size_t)V * sizeof *dist);
    if (p->temperature == 0.0f) {
        dist[argmax(x, V)] = 1.0f;
        return;
    }
    const int64_t n = kept_ids(x, prob, z, V, p, cand);
    double kept = 0.0;
    for (int64_t i = 0; i < n; i++)
        kept += prob[cand[i]];
    for (int64_t i = 0; i < n; i++)
        dist[cand[i]] = (float)((double)prob[cand[i]] / kept);
}

void dsd_sample_logprobs_ref(const float *raw, int64_t V, int32_t token, int n_top, void *scratch,
                             struct dsd_sample_result *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < DSD_SAMPLE_MAX_TOP; i++)
        out->top_ids[i] = -1;
    out->token = token;
    int32_t *ids = (int32_t *)((float *)scratch + 2 * V);
    raw_logprobs(raw, V, n_top < 0 ? 0 : n_top, ids, out);
}
