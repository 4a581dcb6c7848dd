/* One request's token-by-token output processing (contract in generation.h). */
#include "generation.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "topk.h"
#include "detokenizer.h"
#include "output_parser.h"
#include "sampling.h"

struct dsd_generation {
    const struct dsd_engine_request *req;
    const struct dsd_tokenizer *tok;
    struct dsd_sampler *sampler;
    struct dsd_detok *detok;
    struct dsd_output_parser *parser;
    struct dsd_engine_event *ev;    /* where parser callbacks write during a step */
    struct dsd_tok_text delta;
    int32_t eos;
    int64_t vocab;
    int n_generated;
    int n_tool_calls;
    bool finished;
};

int dsd_event_add_id(struct dsd_engine_event *ev, int32_t id)
{
    if (ev->n_ids == ev->cap_ids) {
        int cap = ev->cap_ids ? ev->cap_ids * 2 : 8;
        int32_t *n = realloc(ev->ids, (size_t)cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        ev->ids = n;
        ev->cap_ids = cap;
    }
    ev->ids[ev->n_ids++] = id;
    return 0;
}

int dsd_event_add_text(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + n + 1)
            c *= 2;
        char *nb = realloc(*buf, c);
        if (!nb)
            return -ENOMEM;
        *buf = nb;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static int on_parser_event(void *user, const struct dsd_output_event *pe)
{
    struct dsd_generation *g = user;
    struct dsd_engine_event *ev = g->ev;
    switch (pe->kind) {
    case DSD_OUTPUT_CONTENT:
        return dsd_event_add_text(&ev->text, &ev->text_len, &ev->text_cap, pe->text, pe->len);
    case DSD_OUTPUT_REASONING:
        return dsd_event_add_text(&ev->reasoning, &ev->reasoning_len, &ev->reasoning_cap, pe->text, pe->len);
    case DSD_OUTPUT_TOOL_CALL: {
        struct dsd_engine_tool_item *t = realloc(ev->tools, (size_t)(ev->n_tools + 1) * sizeof *t);
        if (!t)
            return -ENOMEM;
        ev->tools = t;
        struct dsd_engine_tool_item *it = &ev->tools[ev->n_tools++];
        char id[32];
        snprintf(id, sizeof id, "call_%d", g->n_tool_calls);
        it->index = pe->tool_index;
        g->n_tool_calls++;
        it->id = strdup(id);
        it->name = dup_n(pe->name, pe->name_len);
        it->arguments = dup_n(pe->arguments_json, pe->arguments_len);
        return it->id && it->name && it->arguments ? 0 : -ENOMEM;
    }
    case DSD_OUTPUT_ERROR: {
        /* A malformed tool call from the model: the parser has failed closed (no raw DSML
         * reaches the user) and the stream goes on; the client still learns what was lost. */
        int rc = 0;
        if (ev->tool_error_len)
            rc = dsd_event_add_text(&ev->tool_error, &ev->tool_error_len, &ev->tool_error_cap, "\n", 1);
        return rc ? rc : dsd_event_add_text(&ev->tool_error, &ev->tool_error_len, &ev->tool_error_cap, pe->text, pe->len);
    }
    default:
        return 0;
    }
}

int dsd_generation_new(const struct dsd_engine_request *req, const struct dsd_tokenizer *tok,
                       const struct dsd_model_config *cfg, struct dsd_generation **out, struct dsd_err *err)
{
    struct dsd_generation *g = calloc(1, sizeof *g);
    if (!g)
        return dsd_errf(err, -ENOMEM, "out of memory");
    g->req = req;
    g->tok = tok;
    g->vocab = cfg->vocab_size;
    g->eos = (int32_t)cfg->eos_token_id;
    int rc = dsd_sampler_new(&req->sampling, cfg->vocab_size, &g->sampler, err);
    if (rc)
        goto fail;
    dsd_sampler_accept_prompt(g->sampler, req->prompt, req->n_prompt);
    if (req->detokenize || req->n_stop_strings > 0 || req->chat) {
        if (!tok) {
            rc = dsd_errf(err, -EINVAL, "text output needs the model's tokenizer.json, which this daemon has not loaded");
            goto fail;
        }
        struct dsd_detok_opts o = {
            .flags = req->chat ? 0 : DSD_DETOK_SKIP_SPECIAL,
            .stop = (const char *const *)req->stop_strings,
            .n_stop = (size_t)req->n_stop_strings,
        };
        if ((rc = dsd_detok_new(&g->detok, tok, &o, err)))
            goto fail;
    }
    if (req->chat) {
        struct dsd_output_parser_options po = { .start_in_reasoning = req->start_in_reasoning };
        if ((rc = dsd_output_parser_create(&po, on_parser_event, g, &g->parser, err)))
            goto fail;
    }
    *out = g;
    return 0;
fail:
    dsd_generation_free(g);
    return rc;
}

void dsd_generation_free(struct dsd_generation *g)
{
    if (!g)
        return;
    dsd_sampler_free(g->sampler);
    dsd_detok_free(g->detok);
    dsd_output_parser_free(g->parser);
    dsd_tok_text_free(&g->delta);
    free(g);
}

bool dsd_generation_finished(const struct dsd_generation *g)
{
    return g->finished;
}

int dsd_generation_count(const struct dsd_generation *g)
{
    return g->n_generated;
}

/* Routes a text delta: to the chat parser, or straight into the event's text. */
static void emit_text(struct dsd_generation *g, struct dsd_engine_event *ev, const char *s, size_t n)
{
    if (!n || (!g->req->detokenize && !g->req->chat))
        return;
    if (g->parser) {
        struct dsd_err e;
        g->ev = ev;
        dsd_output_parser_feed(g->parser, s, n, &e);
    } else {
        dsd_event_add_text(&ev->text, &ev->text_len, &ev->text_cap, s, n);
    }
}

/* Flushes everything held back (incomplete characters, possible stop-string prefixes,
 * possible marker prefixes) into ev. */
static void flush(struct dsd_generation *g, struct dsd_engine_event *ev, bool stopped_by_string)
{
    struct dsd_err e;
    if (g->detok && !stopped_by_string) {
        g->delta.len = 0;
        if (dsd_detok_finish(g->detok, &g->delta, &e) >= 0)
            emit_text(g, ev, g->delta.data, g->delta.len);
    }
    if (g->parser) {
        g->ev = ev;
        dsd_output_parser_finish(g->parser, &e);
    }
}

static void finish(struct dsd_generation *g, struct dsd_engine_event *ev, enum dsd_finish why, bool by_string)
{
    flush(g, ev, by_string);
    if (why == DSD_FINISH_STOP && g->n_tool_calls > 0)
        why = DSD_FINISH_TOOL_CALLS;
    ev->kind = DSD_EV_DONE;
    ev->finish = why;
    g->finished = true;
}

static void record_logprobs(const struct dsd_generation *g, const struct dsd_sample_result *r,
                            struct dsd_engine_event *ev)
{
    if (ev->n_logprobs == ev->cap_logprobs) {
        int cap = ev->cap_logprobs ? ev->cap_logprobs * 2 : 4;
        struct dsd_engine_logprob *n = realloc(ev->logprobs, (size_t)cap * sizeof *n);
        if (!n)
            return;
        ev->logprobs = n;
        ev->cap_logprobs = cap;
    }
    struct dsd_engine_logprob *lp = &ev->logprobs[ev->n_logprobs++];
    memset(lp, 0, sizeof *lp);
    lp->token = r->token;
    lp->logprob = r->logprob;
    int k = g->req->top_logprobs < DSD_SAMPLE_MAX_TOP ? g->req->top_logprobs : DSD_SAMPLE_MAX_TOP;
    for (int i = 0; i < k && r->top_ids[i] >= 0; i++) {
        lp->top_ids[i] = r->top_ids[i];
        lp->top_logprobs[i] = r->top_logprobs[i];
        lp->n_top = i + 1;
    }
}

int dsd_generation_n_top(const struct dsd_generation *g)
{
    return g->req->logprobs ? g->req->top_logprobs : -1;
}

void dsd_generation_sample_row(struct dsd_generation *g, struct dsd_sample_row *row)
{
    dsd_sampler_row(g->sampler, dsd_generation_n_top(g), row);
}

void dsd_generation_params_row(const struct dsd_generation *g, struct dsd_sample_row *row)
{
    dsd_sampler_params_row(g->sampler, dsd_generation_n_top(g), row);
}

bool dsd_generation_penalized(const struct dsd_generation *g)
{
    return dsd_sampler_penalized(g->sampler);
}

int32_t dsd_generation_step(struct dsd_generation *g, const float *logits, int64_t next_pos, int64_t max_context,
                            struct dsd_engine_event *ev)
{
    struct dsd_sample_result r;
    dsd_sampler_sample_full(g->sampler, logits, dsd_generation_n_top(g), &r, NULL);
    dsd_sampler_accept(g->sampler, r.token);
    return dsd_generation_step_sampled(g, &r, next_pos, max_context, ev);
}

int32_t dsd_generation_step_sampled(struct dsd_generation *g, const struct dsd_sample_result *res, int64_t next_pos,
                                    int64_t max_context, struct dsd_engine_event *ev)
{
    const struct dsd_engine_request *r = g->req;
    int32_t tok = res->token;
    struct dsd_sample_result forced;
    if (r->forced) {    /* test only: the configured output, then EOS (engine.h) */
        tok = g->n_generated < r->n_forced ? r->forced[g->n_generated] : g->eos;
        /* the logprobs stay the model's (its top entries); the forced id's own logprob is
         * known only when it is among them, else it reads as -1e30 */
        forced = *res;
        forced.token = tok;
        forced.logprob = -1e30f;
        for (int i = 0; i < DSD_SAMPLE_MAX_TOP && res->top_ids[i] >= 0; i++)
            if (res->top_ids[i] == tok)
                forced.logprob = res->top_logprobs[i];
        if (tok == res->token)
            forced.logprob = res->logprob;
        res = &forced;
    }
    g->n_generated++;

    bool stop = (!r->ignore_eos && tok == g->eos);
    for (int i = 0; i < r->n_stop_ids && !stop; i++)
        stop = tok == r->stop_ids[i];
    if (stop) {
        ev->stop_token = tok;
        finish(g, ev, DSD_FINISH_STOP, false);
        return tok;
    }
    dsd_event_add_id(ev, tok);
    if (r->logprobs)
        record_logprobs(g, res, ev);
    if (g->detok) {
        struct dsd_err e;
        g->delta.len = 0;
        int rc = dsd_detok_feed(g->detok, tok, &g->delta, &e);
        if (rc >= 0)
            emit_text(g, ev, g->delta.data, g->delta.len);
        if (rc == DSD_DETOK_STOP) {
            int idx = dsd_detok_stop_index(g->detok);
            if (idx >= 0 && idx < r->n_stop_strings)
                ev->stop_string = strdup(r->stop_strings[idx]);
            finish(g, ev, DSD_FINISH_STOP_STRING, true);
            return tok;
        }
    }
    if (g->n_generated >= r->max_tokens)
        finish(g, ev, DSD_FINISH_LENGTH, false);
    else if (next_pos + 1 >= max_context)
        finish(g, ev, DSD_FINISH_CONTEXT_FULL, false);
    return tok;
}

void dsd_generation_end(struct dsd_generation *g, enum dsd_finish why, struct dsd_engine_event *ev)
{
    if (g->finished)
        return;
    finish(g, ev, why, false);
}
