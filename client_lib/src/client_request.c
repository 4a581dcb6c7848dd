/*
 * client_lib/src/client_request.c: streaming generation. Building and sending `generate`
 * (prompt arena and ring chosen here), turning the daemon's frames into events (token ids
 * read from the shm ring, `resume` after a stall), cancel.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

DSD_CLIENT_API struct dsd_client_generate_params dsd_client_generate_default_params(void)
{
    return (struct dsd_client_generate_params){
        .temperature = 1.0,
        .top_p = 1.0,
        .min_p = 0.0,
        .repetition_penalty = 1.0,
        .frequency_penalty = 0.0,
        .presence_penalty = 0.0,
        .detokenize = -1,
        .timeout_ms = -1,
        .add_special = true,
        .use_shm = true,
    };
}

DSD_CLIENT_API const char *dsd_client_finish_name(enum dsd_client_finish f)
{
    const char *n = dsd_ipc_finish_name((enum dsd_ipc_finish)f);
    return n ? n : "unknown";
}

int client_messages_convert(const struct dsd_client_message *in, uint32_t n,
                            struct dsd_ipc_chat_msg **ret_msgs, struct dsd_client_error *e)
{
    *ret_msgs = NULL;
    if (n > DSD_IPC_MAX_MESSAGES)
        return client_seterr(e, -EINVAL, 0, "%u messages; at most %u", n, DSD_IPC_MAX_MESSAGES);
    size_t n_calls = 0;
    for (uint32_t i = 0; i < n; i++) {
        if ((unsigned)in[i].role > DSD_CLIENT_ROLE_DEVELOPER)
            return client_seterr(e, -EINVAL, 0, "messages[%u]: unknown role %d", i,
                                 (int)in[i].role);
        if (in[i].n_tool_calls && !in[i].tool_calls)
            return client_seterr(e, -EINVAL, 0, "messages[%u]: n_tool_calls %u without "
                                 "tool_calls", i, in[i].n_tool_calls);
        if (in[i].n_tool_calls > DSD_IPC_MAX_TOOL_CALLS)
            return client_seterr(e, -EINVAL, 0, "messages[%u]: %u tool calls; at most %u", i,
                                 in[i].n_tool_calls, DSD_IPC_MAX_TOOL_CALLS);
        for (uint32_t k = 0; k < in[i].n_tool_calls; k++)
            if (!in[i].tool_calls[k].name || !in[i].tool_calls[k].arguments)
                return client_seterr(e, -EINVAL, 0, "messages[%u].tool_calls[%u]: name and "
                                     "arguments are required", i, k);
        n_calls += in[i].n_tool_calls;
    }
    /* One allocation: the messages, then every tool call. */
    struct dsd_ipc_chat_msg *out = calloc(1, n * sizeof *out +
                                                 n_calls * sizeof(struct dsd_ipc_tool_call));
    if (!out)
        return client_seterr(e, -ENOMEM, 0, "out of memory");
    struct dsd_ipc_tool_call *calls = (struct dsd_ipc_tool_call *)(out + n);
    for (uint32_t i = 0; i < n; i++) {
        out[i].role = (enum dsd_ipc_role)in[i].role;
        out[i].content = dsd_ipc_s(in[i].content);
        out[i].reasoning = dsd_ipc_s(in[i].reasoning_content);
        out[i].name = dsd_ipc_s(in[i].name);
        out[i].tool_call_id = dsd_ipc_s(in[i].tool_call_id);
        out[i].n_tool_calls = in[i].n_tool_calls;
        out[i].tool_calls = calls;
        for (uint32_t k = 0; k < in[i].n_tool_calls; k++) {
            calls[k].id = dsd_ipc_s(in[i].tool_calls[k].id);
            calls[k].name = dsd_ipc_s(in[i].tool_calls[k].name);
            calls[k].arguments = dsd_ipc_s(in[i].tool_calls[k].arguments);
        }
        calls += in[i].n_tool_calls;
    }
    *ret_msgs = out;
    return 0;
}

/* First fit in the prompt arena among the spans reserved by requests not yet accepted
 * (c->lock held). Returns 0 and the offset, or -ENOSPC. */
static int span_reserve(struct dsd_client *c, uint32_t n, uint64_t *ret_off)
{
    uint64_t cap = c->shm.geo.prompt_capacity;
    if (n > cap)
        return -ENOSPC;
    if (c->n_spans == c->spans_cap) {
        uint32_t nc = c->spans_cap ? c->spans_cap * 2 : 16;
        struct client_span *s = realloc(c->spans, nc * sizeof *s);
        if (!s)
            return -ENOSPC;
        c->spans = s;
        c->spans_cap = nc;
    }
    uint64_t at = 0;
    uint32_t i = 0;
    for (; i < c->n_spans; i++) {
        if (c->spans[i].off - at >= n)
            break;
        at = c->spans[i].off + c->spans[i].n;
    }
    if (i == c->n_spans && cap - at < n)
        return -ENOSPC;
    memmove(&c->spans[i + 1], &c->spans[i], (c->n_spans - i) * sizeof *c->spans);
    c->spans[i] = (struct client_span){.off = at, .n = n};
    c->n_spans++;
    *ret_off = at;
    return 0;
}

static int check_params(const struct dsd_client_generate_params *p, struct dsd_client_error *e)
{
    int n_prompts = (p->prompt_tokens != NULL || p->n_prompt_tokens) + (p->prompt_text != NULL) +
                    (p->messages != NULL || p->n_messages);
    if (n_prompts != 1)
        return client_seterr(e, -EINVAL, 0, "give exactly one prompt: prompt_tokens, "
                             "prompt_text or messages (%d given)", n_prompts);
    if ((p->n_prompt_tokens && !p->prompt_tokens) || (p->prompt_tokens && !p->n_prompt_tokens))
        return client_seterr(e, -EINVAL, 0, "prompt_tokens needs n_prompt_tokens >= 1 and "
                             "the array");
    if ((p->n_messages && !p->messages) || (p->messages && !p->n_messages))
        return client_seterr(e, -EINVAL, 0, "messages needs n_messages >= 1 and the array");
    if (p->tools_json && !p->messages)
        return client_seterr(e, -EINVAL, 0, "tools_json is only for chat (messages) prompts");
    if (p->n_stop && !p->stop)
        return client_seterr(e, -EINVAL, 0, "n_stop %u without stop", p->n_stop);
    if (p->n_stop > DSD_IPC_MAX_STOP)
        return client_seterr(e, -EINVAL, 0, "%u stop strings; at most %u", p->n_stop,
                             DSD_IPC_MAX_STOP);
    for (uint32_t i = 0; i < p->n_stop; i++)
        if (!p->stop[i])
            return client_seterr(e, -EINVAL, 0, "stop[%u] is NULL", i);
    if (p->n_stop_token_ids && !p->stop_token_ids)
        return client_seterr(e, -EINVAL, 0, "n_stop_token_ids %u without stop_token_ids",
                             p->n_stop_token_ids);
    if (p->n_stop_token_ids > DSD_IPC_MAX_STOP_IDS)
        return client_seterr(e, -EINVAL, 0, "%u stop token ids; at most %u",
                             p->n_stop_token_ids, DSD_IPC_MAX_STOP_IDS);
    if (p->prompt_text && strlen(p->prompt_text) > UINT32_MAX)
        return client_seterr(e, -EMSGSIZE, 0, "prompt_text is too long");
    return 0;
}

/* Drops a request that never reached the daemon (c->lock not held). */
static void request_abandon(struct dsd_client *c, struct dsd_client_request *r)
{
    pthread_mutex_lock(&c->lock);
    r->owner_done = true;
    client_table_remove(c, r);
    client_release_span(c, r);
    client_ring_settle(c, r);
    bool last = client_request_destroy_locked(c, r);
    pthread_mutex_unlock(&c->lock);
    if (last)
        client_destroy(c);
}

DSD_CLIENT_API int dsd_client_request_start(struct dsd_client *c,
                                            const struct dsd_client_generate_params *p,
                                            struct dsd_client_request **ret_request,
                                            struct dsd_client_error *e)
{
    if (!c || !p || !ret_request)
        return client_seterr(e, -EINVAL, 0, "dsd_client_request_start: NULL argument");
    *ret_request = NULL;
    int rc = check_params(p, e);
    if (rc < 0)
        return rc;

    struct dsd_ipc_msg m = {.type = DSD_IPC_GENERATE};
    struct dsd_ipc_generate *g = &m.generate;
    dsd_ipc_generate_default(g);
    struct dsd_ipc_chat_msg *wire = NULL;
    struct dsd_ipc_str *stops = NULL;
    if (p->prompt_tokens) {
        g->prompt.kind = DSD_IPC_PROMPT_TOKENS;
        g->prompt.tokens = p->prompt_tokens;
        g->prompt.n_tokens = p->n_prompt_tokens;
    } else if (p->prompt_text) {
        g->prompt.kind = DSD_IPC_PROMPT_TEXT;
        g->prompt.text = dsd_ipc_s(p->prompt_text);
        g->prompt.add_special = p->add_special;
    } else {
        rc = client_messages_convert(p->messages, p->n_messages, &wire, e);
        if (rc < 0)
            return rc;
        g->prompt.kind = DSD_IPC_PROMPT_CHAT;
        g->prompt.messages = wire;
        g->prompt.n_messages = p->n_messages;
        g->prompt.tools = dsd_ipc_s(p->tools_json);
        g->prompt.thinking = p->thinking;
    }
    struct dsd_ipc_sampling *s = &g->sampling;
    s->temperature = p->temperature;
    s->top_p = p->top_p;
    s->min_p = p->min_p;
    s->repetition_penalty = p->repetition_penalty;
    s->frequency_penalty = p->frequency_penalty;
    s->presence_penalty = p->presence_penalty;
    s->top_k = p->top_k;
    s->max_tokens = p->max_tokens;
    s->top_logprobs = p->top_logprobs;
    s->priority = p->priority;
    s->seed = p->seed;
    s->has_seed = p->has_seed;
    s->ignore_eos = p->ignore_eos;
    s->logprobs = p->logprobs;
    if (p->n_stop) {
        stops = calloc(p->n_stop, sizeof *stops);
        if (!stops) {
            free(wire);
            return client_seterr(e, -ENOMEM, 0, "out of memory");
        }
        for (uint32_t i = 0; i < p->n_stop; i++)
            stops[i] = dsd_ipc_s(p->stop[i]);
        s->stop = stops;
        s->n_stop = p->n_stop;
    }
    s->stop_ids = p->stop_token_ids;
    s->n_stop_ids = p->n_stop_token_ids;
    g->detokenize = p->detokenize < 0 ? g->prompt.kind == DSD_IPC_PROMPT_TEXT ||
                                            g->prompt.kind == DSD_IPC_PROMPT_CHAT
                                      : p->detokenize != 0;

    struct dsd_client_request *r = client_request_new(c, CLIENT_REQ_GENERATE, e);
    if (!r) {
        free(wire);
        free(stops);
        return e ? e->code : -ENOMEM;
    }
    m.id = r->id;
    if (c->shm_on && p->use_shm) {
        pthread_mutex_lock(&c->lock);
        for (uint32_t k = 0; k < c->shm.geo.ring_count; k++) {
            if (!c->ring_busy[k]) {
                c->ring_busy[k] = 1;
                r->ring = (int32_t)k;
                break;
            }
        }
        uint64_t off;
        if (g->prompt.kind == DSD_IPC_PROMPT_TOKENS && g->prompt.n_tokens >= c->shm_prompt_min &&
            span_reserve(c, g->prompt.n_tokens, &off) == 0) {
            r->span_held = true;
            r->span_off = off;
            r->span_n = g->prompt.n_tokens;
        }
        pthread_mutex_unlock(&c->lock);
        if (r->span_held) {
            /* The span is ours until the daemon's `accepted` or `error`: write it unlocked. */
            memcpy(dsd_shm_prompt(&c->shm) + r->span_off, p->prompt_tokens,
                   (size_t)r->span_n * sizeof(uint32_t));
            g->prompt.kind = DSD_IPC_PROMPT_SPAN;
            g->prompt.span_offset = r->span_off;
            g->prompt.span_count = r->span_n;
            g->prompt.tokens = NULL;
            g->prompt.n_tokens = 0;
        }
        if (r->ring >= 0) {
            g->use_ring = true;
            g->ring = (uint32_t)r->ring;
        }
    }
    rc = client_send_msg(c, &m, -1, e);
    free(wire);
    free(stops);
    if (rc < 0) {
        if (rc == -EMSGSIZE && e)
            client_seterr(e, rc, 0, "%s (the generate request is larger than the negotiated "
                          "frame size %u: send a long token prompt through shm or shorten it)",
                          e->message, c->max_frame);
        request_abandon(c, r);
        return rc;
    }
    *ret_request = r;
    return 0;
}

/* ---- events ------------------------------------------------------------------------------ */

static int grow(void **p, uint64_t *cap, uint64_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint64_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

static int grow32(void **p, uint32_t *cap, uint64_t need, size_t elem)
{
    uint64_t c64 = *cap;
    int rc = grow(p, &c64, need, elem);
    *cap = (uint32_t)(c64 > UINT32_MAX ? UINT32_MAX : c64);
    return rc;
}

/* Appends the ring's tokens up to position upto to the event's ids. */
static int ring_take(struct dsd_client_request *r, uint64_t upto, struct dsd_client_error *e)
{
    if (!r->ring_ready)
        return client_seterr(e, -EPROTO, 0, "deepseekd sent a ring position for a request "
                             "without ring output");
    uint64_t n = upto - r->cons.pos;
    if (upto < r->cons.pos || n > r->cons.cap)
        return client_seterr(e, -EPROTO, 0, "deepseekd sent ring position %llu, impossible "
                             "after %llu with a ring of %u tokens", (unsigned long long)upto,
                             (unsigned long long)r->cons.pos, r->cons.cap);
    int64_t avail = dsd_ring_available(&r->cons);
    if (avail < 0 || (uint64_t)avail < n)
        return client_seterr(e, -EPROTO, 0, "deepseekd announced ring position %llu but the "
                             "ring holds only up to %llu", (unsigned long long)upto,
                             (unsigned long long)(r->cons.pos + (avail < 0 ? 0 : avail)));
    if (n == 0)
        return 0;
    if (grow32((void **)&r->ids, &r->ids_cap, (uint64_t)r->ev.n_ids + n, sizeof *r->ids) < 0)
        return client_seterr(e, -ENOMEM, 0, "out of memory for %llu tokens",
                             (unsigned long long)n);
    int64_t got = dsd_ring_consume(&r->cons, r->ids + r->ev.n_ids, (uint32_t)n);
    if (got != (int64_t)n)
        return client_seterr(e, -EPROTO, 0, "the ring position moved backwards");
    r->ev.n_ids += (uint32_t)n;
    return 0;
}

static int tokens_event(struct dsd_client_request *r, const struct dsd_ipc_tokens *t,
                        struct dsd_client_error *e)
{
    struct dsd_client_event *ev = &r->ev;
    if (t->n_ids) {
        if (grow32((void **)&r->ids, &r->ids_cap, t->n_ids, sizeof *r->ids) < 0)
            return client_seterr(e, -ENOMEM, 0, "out of memory");
        memcpy(r->ids, t->ids, (size_t)t->n_ids * sizeof *r->ids);
        ev->n_ids = t->n_ids;
    }
    if (t->has_pos) {
        int rc = ring_take(r, t->pos, e);
        if (rc < 0)
            return rc;
    }
    ev->ids = ev->n_ids ? r->ids : NULL;
    ev->text = t->text.ptr;
    ev->text_len = t->text.ptr ? t->text.len : 0;
    ev->reasoning = t->reasoning.ptr;
    ev->reasoning_len = t->reasoning.ptr ? t->reasoning.len : 0;
    ev->tool_call_error = t->tool_call_error.ptr;
    ev->tool_call_error_len = t->tool_call_error.ptr ? t->tool_call_error.len : 0;
    if (t->n_tool_calls) {
        if (grow32((void **)&r->tools, &r->tools_cap, t->n_tool_calls, sizeof *r->tools) < 0)
            return client_seterr(e, -ENOMEM, 0, "out of memory");
        for (uint32_t i = 0; i < t->n_tool_calls; i++)
            r->tools[i] = (struct dsd_client_tool_delta){
                .index = t->tool_calls[i].index,
                .id = t->tool_calls[i].id.ptr,
                .name = t->tool_calls[i].name.ptr,
                .arguments = t->tool_calls[i].arguments.ptr,
            };
        ev->tool_calls = r->tools;
        ev->n_tool_calls = t->n_tool_calls;
    }
    if (t->n_logprobs) {
        uint64_t n_top = 0;
        for (uint32_t i = 0; i < t->n_logprobs; i++)
            n_top += t->logprobs[i].n_top;
        if (grow32((void **)&r->lps, &r->lps_cap, t->n_logprobs, sizeof *r->lps) < 0 ||
            grow((void **)&r->tops, &r->tops_cap, n_top ? n_top : 1, sizeof *r->tops) < 0)
            return client_seterr(e, -ENOMEM, 0, "out of memory");
        struct dsd_client_top_logprob *top = r->tops;
        for (uint32_t i = 0; i < t->n_logprobs; i++) {
            const struct dsd_ipc_logprob *l = &t->logprobs[i];
            r->lps[i] = (struct dsd_client_logprob){.token = l->token, .logprob = l->logprob,
                                                    .n_top = l->n_top, .top = top};
            for (uint32_t k = 0; k < l->n_top; k++)
                top[k] = (struct dsd_client_top_logprob){l->top[k].token, l->top[k].logprob};
            top += l->n_top;
        }
        ev->logprobs = r->lps;
        ev->n_logprobs = t->n_logprobs;
    }
    return 0;
}

static int done_event(struct dsd_client_request *r, const struct dsd_ipc_done *d,
                      struct dsd_client_error *e)
{
    struct dsd_client_event *ev = &r->ev;
    if (d->has_ring_end) {
        int rc = ring_take(r, d->ring_end, e);
        if (rc < 0)
            return rc;
        ev->ids = ev->n_ids ? r->ids : NULL;
    }
    ev->done = (struct dsd_client_done){
        .finish = (enum dsd_client_finish)d->finish,
        .stop_token = d->has_stop_token ? (int64_t)d->stop_token : -1,
        .stop_string = d->stop_string.ptr,
        .usage = {d->usage.prompt, d->usage.cached, d->usage.completion},
        .timings = {d->timings.queue_us, d->timings.first_token_us, d->timings.total_us,
                    d->timings.per_token_us},
        .error_code = d->has_error ? d->error_code : 0,
        .error_message = d->has_error ? d->error_msg.ptr : NULL,
    };
    ev->cached_tiers = (struct dsd_client_cached_tiers){0};
    if (d->usage.has_tiers)
        ev->cached_tiers = (struct dsd_client_cached_tiers){d->usage.cached_device, d->usage.cached_host,
                                                            d->usage.cached_disk};
    if (d->finish == DSD_IPC_FINISH_ERROR && !ev->done.error_message)
        ev->done.error_message = "deepseekd reported an error without a message";
    return 0;
}

/* The stream is over for the owner: give the ring back once the daemon is done with it, and
 * say whether a cancel must go out (a local failure while the daemon still runs it). */
static bool owner_finish(struct dsd_client_request *r)
{
    struct dsd_client *c = r->c;
    r->finished = true;
    pthread_mutex_lock(&c->lock);
    r->owner_done = true;
    bool cancel = r->in_table && !r->cancel_sent && r->kind == CLIENT_REQ_GENERATE;
    if (cancel)
        r->cancel_sent = true;
    client_ring_settle(c, r);
    pthread_mutex_unlock(&c->lock);
    return cancel;
}

DSD_CLIENT_API int dsd_client_request_next(struct dsd_client_request *r, int32_t timeout_ms,
                                           const struct dsd_client_event **ret_event,
                                           struct dsd_client_error *e)
{
    struct dsd_client_error local;
    if (!e)
        e = &local;                     /* the message also goes into the request's failure */
    if (!r || !ret_event)
        return client_seterr(e, -EINVAL, 0, "dsd_client_request_next: NULL argument");
    *ret_event = NULL;
    dsd_ipc_msg_free(&r->cur);
    if (r->finished)
        return 0;
    struct dsd_client *c = r->c;
    int64_t deadline = client_deadline(timeout_ms);
    pthread_mutex_lock(&c->lock);
    int rc = client_wait(c, r, deadline);
    if (rc == -ETIMEDOUT) {
        pthread_mutex_unlock(&c->lock);
        return client_seterr(e, rc, 0, "no event from deepseekd within %d ms", timeout_ms);
    }
    struct client_msg *q = r->qhead;
    if (!q) {
        struct dsd_client_error fe = r->fail_err;
        rc = r->fail;
        pthread_mutex_unlock(&c->lock);
        if (owner_finish(r))
            client_send_simple(c, DSD_IPC_CANCEL, r->id);
        *e = fe;
        return rc;
    }
    r->qhead = q->next;
    if (!r->qhead)
        r->qtail = NULL;
    pthread_mutex_unlock(&c->lock);

    r->cur = q->m;                      /* the event points into it until the next call */
    memset(&q->m, 0, sizeof q->m);
    client_msg_free(q);
    memset(&r->ev, 0, sizeof r->ev);
    switch (r->cur.type) {
    case DSD_IPC_ERROR:
        rc = client_error_from_msg(e, &r->cur.error);
        owner_finish(r);
        return rc;
    case DSD_IPC_TOKENS:
        r->ev.type = DSD_CLIENT_EVENT_TOKENS;
        rc = tokens_event(r, &r->cur.tokens, e);
        if (rc == 0 && r->cur.tokens.stalled)
            client_send_simple(c, DSD_IPC_RESUME, r->id);   /* room was made just above */
        break;
    case DSD_IPC_DONE:
        r->ev.type = DSD_CLIENT_EVENT_DONE;
        rc = done_event(r, &r->cur.done, e);
        if (rc == 0) {
            owner_finish(r);
            *ret_event = &r->ev;
            return 1;
        }
        break;
    default:                            /* dispatch queues nothing else for a generate */
        rc = client_seterr(e, -EPROTO, 0, "unexpected '%s' frame",
                           dsd_ipc_type_name(r->cur.type));
        break;
    }
    if (rc < 0) {
        pthread_mutex_lock(&c->lock);
        client_request_fail(r, rc, 0, "%s", e->message);
        pthread_mutex_unlock(&c->lock);
        if (owner_finish(r))
            client_send_simple(c, DSD_IPC_CANCEL, r->id);
        return rc;
    }
    *ret_event = &r->ev;
    return 1;
}

DSD_CLIENT_API int dsd_client_request_cancel(struct dsd_client_request *r)
{
    if (!r)
        return -EINVAL;
    struct dsd_client *c = r->c;
    pthread_mutex_lock(&c->lock);
    if (!r->in_table || r->cancel_sent || r->kind != CLIENT_REQ_GENERATE) {
        pthread_mutex_unlock(&c->lock);   /* finished, dead, or already asked */
        return 0;
    }
    r->cancel_sent = true;
    uint64_t id = r->id;
    pthread_mutex_unlock(&c->lock);
    return client_send_simple(c, DSD_IPC_CANCEL, id);
}
