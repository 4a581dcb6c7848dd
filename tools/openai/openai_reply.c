/*
 * Generation events -> OpenAI objects (openai.h): chat.completion / chat.completion.chunk,
 * text_completion (whole or streamed), usage, logprobs, tool calls, SSE framing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "openai.h"

static int add_text(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return -ENOMEM;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

int oa_reply_init(struct oa_reply *rp, const struct oa_request *req, struct oa_pool *pool, struct dsd_client *client,
                  const char *model)
{
    memset(rp, 0, sizeof *rp);
    rp->req = req;
    rp->pool = pool;
    rp->client = client;
    snprintf(rp->model, sizeof rp->model, "%s", model);
    rp->created = (long long)time(NULL);
    rp->tool_calls = json_array();
    if (req->kind == OA_CHAT)
        rp->logprobs = json_array();
    else
        rp->logprobs = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
    if (add_text(&rp->text, &rp->text_len, &rp->text_cap, "", 0) ||
        add_text(&rp->reasoning, &rp->reasoning_len, &rp->reasoning_cap, "", 0) || !rp->tool_calls || !rp->logprobs) {
        oa_reply_free(rp);
        return -ENOMEM;
    }
    return 0;
}

void oa_reply_free(struct oa_reply *rp)
{
    free(rp->text);
    free(rp->reasoning);
    json_decref(rp->tool_calls);
    json_decref(rp->logprobs);
    memset(rp, 0, sizeof *rp);
}

static json_t *token_bytes(const char *t)
{
    json_t *a = json_array();
    for (const unsigned char *p = (const unsigned char *)t; a && *p; p++)
        json_array_append_new(a, json_integer(*p));
    return a;
}

/* Chat logprobs entries for one event: [{token, logprob, bytes, top_logprobs: [...]}]. */
static json_t *chat_logprobs(struct oa_reply *rp, const struct dsd_client_event *ev)
{
    json_t *arr = json_array();
    for (uint32_t i = 0; arr && i < ev->n_logprobs; i++) {
        const struct dsd_client_logprob *lp = &ev->logprobs[i];
        const char *t = oa_pool_token_text(rp->pool, rp->client, lp->token);
        json_t *top = json_array();
        for (uint32_t k = 0; top && k < lp->n_top; k++) {
            const char *tt = oa_pool_token_text(rp->pool, rp->client, lp->top[k].token);
            json_array_append_new(top, json_pack("{s:s, s:f, s:o}", "token", tt, "logprob", lp->top[k].logprob,
                                                 "bytes", token_bytes(tt)));
        }
        json_array_append_new(arr, json_pack("{s:s, s:f, s:o, s:o}", "token", t, "logprob", lp->logprob, "bytes",
                                             token_bytes(t), "top_logprobs", top ? top : json_array()));
    }
    return arr;
}

/* Completions logprobs for one event: {tokens, token_logprobs, top_logprobs, text_offset}. */
static json_t *completion_logprobs(struct oa_reply *rp, const struct dsd_client_event *ev)
{
    json_t *o = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
    for (uint32_t i = 0; o && i < ev->n_logprobs; i++) {
        const struct dsd_client_logprob *lp = &ev->logprobs[i];
        const char *t = oa_pool_token_text(rp->pool, rp->client, lp->token);
        json_array_append_new(json_object_get(o, "tokens"), json_string(t));
        json_array_append_new(json_object_get(o, "token_logprobs"), json_real(lp->logprob));
        json_t *top = json_object();
        for (uint32_t k = 0; top && k < lp->n_top; k++)
            json_object_set_new(top, oa_pool_token_text(rp->pool, rp->client, lp->top[k].token),
                                json_real(lp->top[k].logprob));
        json_array_append_new(json_object_get(o, "top_logprobs"), top ? top : json_null());
        json_array_append_new(json_object_get(o, "text_offset"), json_integer((json_int_t)rp->text_offset));
        rp->text_offset += strlen(t);
    }
    return o;
}

static void extend(json_t *dst, json_t *src)
{
    if (json_is_array(dst)) {
        json_array_extend(dst, src);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(src, k, v)
        json_array_extend(json_object_get(dst, k), v);
}

/* "data: <json>\n\n" appended to out. Steals o. */
static int sse(json_t *o, char **out, size_t *len, size_t *cap)
{
    if (!o)
        return -ENOMEM;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return -ENOMEM;
    int rc = add_text(out, len, cap, "data: ", 6);
    if (!rc)
        rc = add_text(out, len, cap, s, strlen(s));
    if (!rc)
        rc = add_text(out, len, cap, "\n\n", 2);
    free(s);
    return rc;
}

/* The envelope of a stream chunk with one choice. Steals choice. */
static json_t *chunk(struct oa_reply *rp, json_t *choice)
{
    bool chat = rp->req->kind == OA_CHAT;
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", rp->id, "object",
                          chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)rp->created,
                          "model", rp->model, "choices", choice);
    if (o && rp->req->include_usage)
        json_object_set_new(o, "usage", json_null());
    return o;
}

static json_t *tool_call_delta(struct oa_reply *rp, const struct dsd_client_tool_delta *t)
{
    json_t *fn = json_object();
    json_t *d = json_pack("{s:I}", "index", (json_int_t)t->index);
    if (!fn || !d) {
        json_decref(fn);
        json_decref(d);
        return NULL;
    }
    if (t->id || t->name) {
        char id[128];
        const char *dash = strchr(rp->id, '-');     /* unique per request: call_<request>_<index> */
        snprintf(id, sizeof id, "call_%s_%u", dash ? dash + 1 : rp->id, t->index);
        json_object_set_new(d, "id", json_string(id));
        json_object_set_new(d, "type", json_string("function"));
    }
    if (t->name)
        json_object_set_new(fn, "name", json_string(t->name));
    if (t->arguments)
        json_object_set_new(fn, "arguments", json_string(t->arguments));
    json_object_set_new(d, "function", fn);
    return d;
}

/* Merges a tool delta into the assembled calls (by index). */
static void accumulate_tool(struct oa_reply *rp, json_t *delta)
{
    json_int_t idx = json_integer_value(json_object_get(delta, "index"));
    json_t *call = NULL, *c;
    size_t i;
    json_array_foreach(rp->tool_calls, i, c)
        if (json_integer_value(json_object_get(c, "index")) == idx)
            call = c;
    if (!call) {
        call = json_pack("{s:I, s:s, s:s, s:{s:s, s:s}}", "index", idx, "id", "", "type", "function", "function",
                         "name", "", "arguments", "");
        if (!call)
            return;
        json_array_append_new(rp->tool_calls, call);
    }
    json_t *id = json_object_get(delta, "id");
    if (id)
        json_object_set(call, "id", id);
    json_t *fn = json_object_get(delta, "function"), *cfn = json_object_get(call, "function");
    json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
    if (name)
        json_object_set(cfn, "name", name);
    if (args) {
        const char *old = json_string_value(json_object_get(cfn, "arguments"));
        size_t n = strlen(old) + json_string_length(args) + 1;
        char *joined = malloc(n);
        if (joined) {
            snprintf(joined, n, "%s%s", old, json_string_value(args));
            json_object_set_new(cfn, "arguments", json_string(joined));
            free(joined);
        }
    }
}

int oa_reply_event(struct oa_reply *rp, const struct dsd_client_event *ev, char **out, size_t *out_len)
{
    bool chat = rp->req->kind == OA_CHAT;
    if (add_text(&rp->text, &rp->text_len, &rp->text_cap, ev->text ? ev->text : "", ev->text_len) ||
        add_text(&rp->reasoning, &rp->reasoning_len, &rp->reasoning_cap, ev->reasoning ? ev->reasoning : "",
                 ev->reasoning_len))
        return -ENOMEM;
    json_t *lp = NULL;
    if (rp->req->gp.logprobs && ev->n_logprobs) {
        lp = chat ? chat_logprobs(rp, ev) : completion_logprobs(rp, ev);
        if (!lp)
            return -ENOMEM;
        extend(rp->logprobs, lp);
    }
    json_t *tools = NULL;
    if (ev->n_tool_calls) {
        tools = json_array();
        for (uint32_t i = 0; tools && i < ev->n_tool_calls; i++) {
            json_t *d = tool_call_delta(rp, &ev->tool_calls[i]);
            if (d) {
                accumulate_tool(rp, d);
                json_array_append_new(tools, d);
            }
        }
    }
    int rc = 0;
    if (out) {
        size_t cap = 0;
        *out = NULL;
        *out_len = 0;
        if (chat && !rp->sent_role) {
            rp->sent_role = true;
            rc = sse(chunk(rp, json_pack("{s:I, s:{s:s, s:s}, s:n, s:n}", "index", (json_int_t)0, "delta", "role",
                                         "assistant", "content", "", "logprobs", "finish_reason")),
                     out, out_len, &cap);
        }
        bool any = ev->text_len || ev->reasoning_len || tools || lp;
        if (!rc && any) {
            json_t *choice;
            if (chat) {
                json_t *delta = json_object();
                if (ev->reasoning_len)
                    json_object_set_new(delta, "reasoning_content", json_stringn(ev->reasoning, ev->reasoning_len));
                if (ev->text_len)
                    json_object_set_new(delta, "content", json_stringn(ev->text, ev->text_len));
                if (tools)
                    json_object_set(delta, "tool_calls", tools);
                choice = json_pack("{s:I, s:o, s:o, s:n}", "index", (json_int_t)0, "delta", delta, "logprobs",
                                   lp ? json_pack("{s:O}", "content", lp) : json_null(), "finish_reason");
            } else {
                choice = json_pack("{s:I, s:s%, s:O?, s:n}", "index", (json_int_t)0, "text",
                                   ev->text ? ev->text : "", ev->text_len, "logprobs", lp, "finish_reason");
            }
            rc = sse(chunk(rp, choice), out, out_len, &cap);
        }
        if (rc) {
            free(*out);
            *out = NULL;
        }
    }
    json_decref(tools);
    json_decref(lp);
    return rc;
}

static const char *finish_reason(enum dsd_client_finish f)
{
    switch (f) {
    case DSD_CLIENT_FINISH_LENGTH:
    case DSD_CLIENT_FINISH_CONTEXT_FULL:
        return "length";
    case DSD_CLIENT_FINISH_TOOL_CALLS:
        return "tool_calls";
    default:
        return "stop";
    }
}

static json_t *usage(const struct dsd_client_done *d)
{
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)d->usage.prompt, "completion_tokens",
                     (json_int_t)d->usage.completion, "total_tokens",
                     (json_int_t)d->usage.prompt + (json_int_t)d->usage.completion, "prompt_tokens_details",
                     "cached_tokens", (json_int_t)d->usage.cached);
}

int oa_reply_done(struct oa_reply *rp, const struct dsd_client_done *d, char **out, size_t *out_len)
{
    bool chat = rp->req->kind == OA_CHAT;
    const char *reason = finish_reason(d->finish);
    if (chat && json_array_size(rp->tool_calls) > 0)
        reason = "tool_calls";
    *out = NULL;
    *out_len = 0;
    size_t cap = 0;
    if (rp->req->stream) {
        int rc = 0;
        if (chat && !rp->sent_role) {
            rp->sent_role = true;
            rc = sse(chunk(rp, json_pack("{s:I, s:{s:s, s:s}, s:n, s:n}", "index", (json_int_t)0, "delta", "role",
                                         "assistant", "content", "", "logprobs", "finish_reason")),
                     out, out_len, &cap);
        }
        if (!rc)
            rc = sse(chunk(rp, chat ? json_pack("{s:I, s:{}, s:n, s:s}", "index", (json_int_t)0, "delta", "logprobs",
                                                "finish_reason", reason)
                                    : json_pack("{s:I, s:s, s:n, s:s}", "index", (json_int_t)0, "text", "", "logprobs",
                                                "finish_reason", reason)),
                     out, out_len, &cap);
        if (!rc && rp->req->include_usage) {
            json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", rp->id, "object",
                                  chat ? "chat.completion.chunk" : "text_completion", "created",
                                  (json_int_t)rp->created, "model", rp->model, "choices", "usage", usage(d));
            rc = sse(o, out, out_len, &cap);
        }
        if (!rc)
            rc = add_text(out, out_len, &cap, "data: [DONE]\n\n", 14);
        if (rc) {
            free(*out);
            *out = NULL;
        }
        return rc;
    }
    json_t *choice;
    if (chat) {
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        if (!msg)
            return -ENOMEM;
        bool calls = json_array_size(rp->tool_calls) > 0;
        json_object_set_new(msg, "content", rp->text_len || !calls ? json_stringn(rp->text, rp->text_len) : json_null());
        if (rp->reasoning_len)
            json_object_set_new(msg, "reasoning_content", json_stringn(rp->reasoning, rp->reasoning_len));
        if (calls) {
            size_t i;
            json_t *c;
            json_array_foreach(rp->tool_calls, i, c)
                json_object_del(c, "index");
            json_object_set(msg, "tool_calls", rp->tool_calls);
        }
        choice = json_pack("{s:I, s:o, s:o, s:s}", "index", (json_int_t)0, "message", msg, "logprobs",
                           rp->req->gp.logprobs ? json_pack("{s:O}", "content", rp->logprobs) : json_null(),
                           "finish_reason", reason);
    } else {
        choice = json_pack("{s:I, s:s%, s:o, s:s}", "index", (json_int_t)0, "text", rp->text, rp->text_len, "logprobs",
                           rp->req->completion_logprobs >= 0 ? json_incref(rp->logprobs) : json_null(),
                           "finish_reason", reason);
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", rp->id, "object",
                          chat ? "chat.completion" : "text_completion", "created", (json_int_t)rp->created, "model",
                          rp->model, "choices", choice, "usage", usage(d));
    if (!o)
        return -ENOMEM;
    *out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!*out)
        return -ENOMEM;
    *out_len = strlen(*out);
    return 0;
}

int oa_reply_stream_error(struct oa_reply *rp, int status, const char *message, char **out, size_t *out_len)
{
    size_t cap = 0;
    *out = NULL;
    *out_len = 0;
    int rc = sse(oa_error_json(status, message, NULL, NULL), out, out_len, &cap);
    if (!rc)
        rc = add_text(out, out_len, &cap, "data: [DONE]\n\n", 14);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}
