/*
 * kernels/sample.h: turning rows of logits into tokens on the backend, and the reference
 * every backend's `sample` op (kernels/ops.h) must agree with.
 *
 *   struct dsd_sample_row row = { .temperature = 0.7f, .top_p = 0.95f, .top_k = 0, .min_p = 0,
 *                                 .repetition_penalty = 1, .pen_slot = -1,
 *                                 .u = next_uniform(), .n_top = 5 };
 *   // on a backend: rows in backend memory, results in backend memory, one row per logits row
 *   ops->sample(be, results, logits, rows, n_rows, pen, vocab);
 *   // the reference, one row on the host (scratch of dsd_sample_scratch_bytes(vocab) bytes):
 *   dsd_sample_ref(logits_row, vocab, &row, pen_row, scratch, &result, NULL);
 *
 * The semantics (docs/SAMPLING.md): penalties from the penalty state (repetition on every id
 * seen in the prompt or the output: positive logits divided, negative multiplied; frequency
 * and presence on ids generated, OpenAI's definition), then temperature; temperature 0 is
 * greedy: the largest logit, ties to the lowest id. Otherwise p_i = exp(x_i - max x) and the
 * ids in the order (p descending, id ascending) are cut to their shortest prefix allowed by
 * top-k (k ids), min-p (p_i >= min_p) and top-p (the prefix's mass reaches top_p times the
 * mass of the whole vocabulary); the pick is the first id, in ascending id order, at which the
 * running mass of the kept ids exceeds u times their total. The same u and logits give the
 * same token (up to float rounding at a boundary, which the GPU tests bound).
 *
 * Logprobs (n_top >= 0) are those of the raw logits (before penalties and temperature): the
 * pick's log-softmax and the n_top largest, by value descending, ties to the lower id.
 */
#ifndef DSD_KERNELS_SAMPLE_H
#define DSD_KERNELS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#define DSD_SAMPLE_MAX_TOP 20

/* The sampling parameters of one logits row (40 bytes; an array of them is part of a step's
 * metadata in backend memory). */
struct dsd_sample_row {
    float temperature;          /* 0 = greedy */
    float top_p;                /* (0, 1]; 1 = off */
    float min_p;                /* [0, 1]; 0 = off */
    float repetition_penalty;   /* 1 = off */
    float frequency_penalty;    /* 0 = off */
    float presence_penalty;     /* 0 = off */
    int32_t top_k;              /* 0 = off */
    int32_t pen_slot;           /* row of the penalty state this row reads and updates; -1 = none */
    float u;                    /* the request's next uniform draw in [0, 1) (ignored when greedy) */
    int32_t n_top;              /* logprobs: -1 = none, else the pick's and n_top (<= 20) more */
};

/* dsd_sample_result.status */
#define DSD_SAMPLE_OK 0
/* The row's logits, after penalties and temperature, have no finite maximum (every one NaN or
 * -inf, or one +inf): the model is numerically broken for this token (a corrupt checkpoint, an
 * overflow). token is then still the reference's pick (the arg-max, NaN last), but a caller
 * that serves text must not emit it: the engine ends the request with an error. */
#define DSD_SAMPLE_NONFINITE 1

/* What a row produced (172 bytes). */
struct dsd_sample_result {
    int32_t token;
    float logprob;              /* raw log-softmax of token, >= -1e30 (when n_top >= 0) */
    int32_t top_ids[DSD_SAMPLE_MAX_TOP];
    float top_logprobs[DSD_SAMPLE_MAX_TOP];
    int32_t status;             /* DSD_SAMPLE_OK or DSD_SAMPLE_NONFINITE */
};

/* The penalty state: one uint32 per vocabulary id and slot. */
#define DSD_PEN_SEEN 0x80000000u    /* seen in the prompt or the output */
#define DSD_PEN_COUNT 0x7fffffffu   /* times generated */

/* True when a row's parameters use the penalty state at all (host code and the CUDA kernel). */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int dsd_sample_row_penalized(const struct dsd_sample_row *r)
{
    return r->repetition_penalty != 1.0f || r->frequency_penalty != 0.0f || r->presence_penalty != 0.0f;
}

/* Bytes of scratch dsd_sample_ref needs for a vocabulary of V ids. */
size_t dsd_sample_scratch_bytes(int64_t V);

/* The reference: samples logits[V] with p. pen (NULL = no penalties) is read, and the pick
 * counted in it (seen, count + 1) when p->pen_slot >= 0. *sample_logprob (may be NULL)
 * receives the pick's log-probability after penalties and temperature, before filtering. */
void dsd_sample_ref(const float *logits, int64_t V, const struct dsd_sample_row *p, uint32_t *pen, void *scratch,
                    struct dsd_sample_result *out, float *sample_logprob);

/* The distribution the reference draws from for row p (u ignored): the kept ids' probabilities
 * after penalties and temperature, renormalized, 0 elsewhere; greedy is all mass on the pick.
 * dist[V]; scratch as for dsd_sample_ref. Speculative decoding compares two of them. */
void dsd_sample_dist_ref(const float *logits, int64_t V, const struct dsd_sample_row *p, const uint32_t *pen,
                         void *scratch, float *dist);

/* The logprobs a row with n_top would report (n_top < 0: the token's alone) for `token`,
 * whoever picked it: out->token = token. */
void dsd_sample_logprobs_ref(const float *logits, int64_t V, int32_t token, int n_top, void *scratch,
                             struct dsd_sample_result *out);

#endif
