/*
 * daemon/serve/generation.h: what happens to one request's logits, token by token: sampling
 * (with penalties, seeded), logprobs, stop tokens and strings, max_tokens, streaming text
 * (never a split UTF-8 character) and, for chat, reasoning and tool calls. No model, no
 * threads: the engine calls it once per generated token.
 *
 *   struct dsd_generation *g;
 *   dsd_generation_new(req, tokenizer, cfg, &g, &err);
 *   for each step with logits for this request:
 *       int32_t tok = dsd_generation_step(g, logits_row, next_pos, ev);  // fills ev
 *       // or, sampled on the backend: dsd_generation_sample_row(g, &row) before the step,
 *       // dsd_generation_step_sampled(g, &result, next_pos, ev) after it
 *       if (dsd_generation_finished(g)) break;                          // ev->finish set
 *   dsd_generation_cancel(g, ev) / dsd_generation_free(g);
 *
 * Which tokens are delivered (PROTOCOL.md §5.5): every generated token except the one that
 * triggered `stop` (EOS or a stop token id), which is reported as stop_token instead.
 */
#ifndef DSD_SERVE_GENERATION_H
#define DSD_SERVE_GENERATION_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "err.h"
#include "sample.h"
#include "tokenizer.h"

struct dsd_generation;

/* Returns 0, -EINVAL (bad sampling parameters, text output without a tokenizer), -ENOMEM. */
int dsd_generation_new(const struct dsd_engine_request *req, const struct dsd_tokenizer *tok,
                       const struct dsd_model_config *cfg, struct dsd_generation **out, struct dsd_err *err);
void dsd_generation_free(struct dsd_generation *g);

/* Samples the next token from logits (vocab floats) on the host and records the result in
 * ev. next_pos: the position the sampled token would occupy; at max_context the request ends
 * with CONTEXT_FULL. Returns the sampled token. */
int32_t dsd_generation_step(struct dsd_generation *g, const float *logits, int64_t next_pos, int64_t max_context,
                            struct dsd_engine_event *ev);
/* The same for a token sampled on the backend (the engine's path): res comes from the
 * backend's sample op run with the row dsd_generation_sample_row() gave for this token. */
int32_t dsd_generation_step_sampled(struct dsd_generation *g, const struct dsd_sample_result *res, int64_t next_pos,
                                    int64_t max_context, struct dsd_engine_event *ev);
/* The sampling row of the request's next token (draws its uniform; pen_slot -1, the caller
 * assigns one when dsd_generation_penalized()). */
void dsd_generation_sample_row(struct dsd_generation *g, struct dsd_sample_row *row);
bool dsd_generation_penalized(const struct dsd_generation *g);
/* The request's sampling parameters as a row, drawing nothing (u = 0, pen_slot -1, n_top as
 * the request wants): what speculative decoding turns logits into distributions with. */
void dsd_generation_params_row(const struct dsd_generation *g, struct dsd_sample_row *row);
/* The top logprobs the request wants per token, -1 for no logprobs. */
int dsd_generation_n_top(const struct dsd_generation *g);
bool dsd_generation_finished(const struct dsd_generation *g);
/* Ends the request from outside (cancel, error): flushes held text into ev, sets ev->finish. */
void dsd_generation_end(struct dsd_generation *g, enum dsd_finish why, struct dsd_engine_event *ev);
int dsd_generation_count(const struct dsd_generation *g);   /* tokens generated so far */

/* Event building helpers (shared with the engine). Return 0 or -ENOMEM. */
int dsd_event_add_id(struct dsd_engine_event *ev, int32_t id);
int dsd_event_add_text(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

#endif
