/*
 * daemon/serve/speculative.h: the acceptance rule of speculative decoding (docs/SPECULATIVE.md).
 * Plain functions over token ids and probability rows: no model, no engine, so tests drive
 * them directly (tests/serve/test_spec_accept.c).
 *
 *   // greedy: target[j] = the target's pick after feeding the step's token j (j = 0..n)
 *   int a, e = dsd_spec_verify_greedy(draft, n, target, DSD_SPEC_FORCE_NONE, out, &a);
 *   // sampled: p [n+1][V] target distributions, q [n][V] the draft's (dsd_sample_dist_ref)
 *   e = dsd_spec_verify_sample(p, q, draft, n, V, seed, pos, DSD_SPEC_FORCE_NONE, scratch, out, &a);
 *   // out[0..e) are the tokens to emit, a of them accepted drafts, then one more of the target's
 *
 * Greedy: draft j is accepted while it equals the target's pick after the tokens before it;
 * the first mismatch (or the bonus position after n accepted drafts) emits the target's pick.
 * That is the token plain greedy decoding emits, so the output is the same token for token.
 *
 * Sampled (temperature > 0): the standard speculative rejection rule. Draft x at a position
 * was drawn from q; it is accepted with probability min(1, p(x) / q(x)); on rejection the
 * token is drawn from norm(max(0, p - q)) and the run ends; with every draft accepted a bonus
 * token is drawn from p of the next position. Each emitted token is then distributed exactly
 * as p given the tokens before it. Uniforms come from dsd_spec_uniform: a counter-based draw
 * from (seed, absolute position, purpose), so a seed reproduces its output whatever else runs.
 */
#ifndef DSD_SERVE_SPECULATIVE_H
#define DSD_SERVE_SPECULATIVE_H

#include <stdint.h>

#define DSD_SPEC_MAX_TOKENS 3   /* speculative_tokens: 0..3 drafts per step */

/* Test hooks (test_spec_force): every draft accepted as proposed, or none. */
enum dsd_spec_force {
    DSD_SPEC_FORCE_NONE = 0,
    DSD_SPEC_FORCE_ACCEPT,      /* drafts emitted whatever the target says (the speed ceiling) */
    DSD_SPEC_FORCE_REJECT,      /* no draft accepted: the target's own token (the overhead) */
};

/* What a uniform is for: distinct streams per position. */
enum dsd_spec_draw {
    DSD_SPEC_DRAW_DRAFT = 1,    /* the draft's pick from q */
    DSD_SPEC_DRAW_ACCEPT,       /* the acceptance test */
    DSD_SPEC_DRAW_RESIDUAL,     /* the pick from norm(max(0, p - q)) */
    DSD_SPEC_DRAW_BONUS,        /* the pick from p */
};

/* A uniform in [0, 1) from (seed, position, purpose) alone (splitmix64 over the three). */
double dsd_spec_uniform(uint64_t seed, int64_t pos, enum dsd_spec_draw what);

/* The id where the running mass of dist (ids ascending) first exceeds u times its total; the
 * last id with mass when rounding leaves none. dist must have mass somewhere (else 0). */
int32_t dsd_spec_pick(const float *dist, int64_t V, double u);

/* Greedy acceptance of draft[0..n) against target[0..n]. Writes the tokens to emit to out
 * (n + 1 entries at most) and the accepted drafts to *n_accepted; returns how many to emit. */
int dsd_spec_verify_greedy(const int32_t *draft, int n, const int32_t *target, enum dsd_spec_force force,
                           int32_t *out, int *n_accepted);

/* Rejection sampling of draft[0..n) (draft[j] drawn from q row j) against p rows 0..n.
 * pos: the absolute position out[0] will occupy (out[j] occupies pos + j). scratch: V floats.
 * Returns how many tokens to emit (1..n+1), *n_accepted the accepted drafts. */
int dsd_spec_verify_sample(const float *p, const float *q, const int32_t *draft, int n, int64_t V, uint64_t seed,
                           int64_t pos, enum dsd_spec_force force, float *scratch, int32_t *out, int *n_accepted);

#endif
