/*
 * An OpenAI request body -> libdeepseekd generate parameters (openai.h). docs/OPENAI.md
 * lists the fields; unknown fields are ignored, as OpenAI does. Checks here are the ones
 * OpenAI's API makes (types, ranges of its own parameters); the chat's structure (roles,
 * tool-call pairing) is checked by the daemon's chat encoder, whose message comes back as
 * the 400's message.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "openai.h"

static int bad(struct dsd_err *err, const char **param, const char *name, const char *fmt, const char *detail)
{
    *param = name;
    return dsd_errf(err, -EINVAL, fmt, name, detail ? detail : "");
}

static const char *own(struct oa_request *r, char *s)
{
    if (!s)
        return NULL;
    if (r->n_owned == r->cap_owned) {
        size_t c = r->cap_owned ? r->cap_owned * 2 : 8;
        char **n = realloc(r->owned, c * sizeof *n);
        if (!n) {
            free(s);
            return NULL;
        }
        r->owned = n;
        r->cap_owned = c;
    }
    r->owned[r->n_owned++] = s;
    return s;
}

/* A present, non-null member (NULL when absent or JSON null: OpenAI treats null as unset). */
static json_t *field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_number(json_t *o, const char *key, double lo, double hi, double *out, const char **param,
                      struct dsd_err *err)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return bad(err, param, key, "'%s' must be a number%s", NULL);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) {
        char range[96];
        snprintf(range, sizeof range, " between %g and %g, got %g", lo, hi, d);
        return bad(err, param, key, "'%s' must be%s", range);
    }
    *out = d;
    return 1;
}

static int get_int(json_t *o, const char *key, long long lo, long long hi, long long *out, const char **param,
                   struct dsd_err *err)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return bad(err, param, key, "'%s' must be an integer%s", NULL);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        char range[96];
        snprintf(range, sizeof range, " between %lld and %lld, got %lld", lo, hi, x);
        return bad(err, param, key, "'%s' must be%s", range);
    }
    *out = x;
    return 1;
}

static int get_bool(json_t *o, const char *key, bool *out, const char **param, struct dsd_err *err)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return bad(err, param, key, "'%s' must be a boolean%s", NULL);
    *out = json_is_true(v);
    return 1;
}

/* content: a string, or an array of {"type": "text", "text": ...} parts joined with one
 * space (the daemon's chat encoder does the same, docs/CHAT.md). */
static int content_text(struct oa_request *r, json_t *content, const char **out, const char **param,
                        struct dsd_err *err)
{
    *out = NULL;
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content)) {
        *out = json_string_value(content);
        return 0;
    }
    if (!json_is_array(content))
        return bad(err, param, "messages", "'%s': content must be a string or an array of text parts%s", NULL);
    size_t total = 1, i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
            !json_is_string(text))
            return bad(err, param, "messages",
                       "'%s': only text content parts ({\"type\": \"text\", \"text\": ...}) are supported%s", NULL);
        total += json_string_length(text) + 1;
    }
    char *joined = malloc(total), *w = joined;
    if (!joined)
        return dsd_errf(err, -ENOMEM, "out of memory");
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        if (i)
            *w++ = ' ';
        memcpy(w, json_string_value(text), json_string_length(text));
        w += json_string_length(text);
    }
    *w = 0;
    *out = own(r, joined);
    return *out ? 0 : dsd_errf(err, -ENOMEM, "out of memory");
}

static int parse_role(const char *s, enum dsd_client_role *role)
{
    static const struct { const char *name; enum dsd_client_role role; } roles[] = {
        { "system", DSD_CLIENT_ROLE_SYSTEM }, { "user", DSD_CLIENT_ROLE_USER },
        { "assistant", DSD_CLIENT_ROLE_ASSISTANT }, { "tool", DSD_CLIENT_ROLE_TOOL },
        { "developer", DSD_CLIENT_ROLE_DEVELOPER },
    };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(s, roles[i].name) == 0) {
            *role = roles[i].role;
            return 0;
        }
    return -1;
}

static int parse_messages(struct oa_request *r, json_t *msgs, const char **param, struct dsd_err *err)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(err, param, "messages", "'%s' must be a non-empty array of messages%s", NULL);
    size_t n = json_array_size(msgs), n_calls = 0, i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *tc = field(m, "tool_calls");
        if (tc && json_is_array(tc))
            n_calls += json_array_size(tc);
    }
    r->msgs = calloc(n, sizeof *r->msgs);
    r->calls = calloc(n_calls ? n_calls : 1, sizeof *r->calls);
    if (!r->msgs || !r->calls)
        return dsd_errf(err, -ENOMEM, "out of memory");
    size_t k = 0;
    json_array_foreach(msgs, i, m) {
        struct dsd_client_message *cm = &r->msgs[i];
        char where[64];
        snprintf(where, sizeof where, "messages[%zu]", i);
        if (!json_is_object(m))
            return bad(err, param, "messages", "'%s': each message must be an object%s", NULL);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role) || parse_role(json_string_value(role), &cm->role) < 0) {
            *param = "messages";
            return dsd_errf(err, -EINVAL, "'%s.role' must be one of system, user, assistant, tool, developer", where);
        }
        int rc = content_text(r, json_object_get(m, "content"), &cm->content, param, err);
        if (rc)
            return rc;
        json_t *v;
        if ((v = field(m, "reasoning_content")) && json_is_string(v))
            cm->reasoning_content = json_string_value(v);
        if ((v = field(m, "name")) && json_is_string(v))
            cm->name = json_string_value(v);
        if ((v = field(m, "tool_call_id"))) {
            if (!json_is_string(v)) {
                *param = "messages";
                return dsd_errf(err, -EINVAL, "'%s.tool_call_id' must be a string", where);
            }
            cm->tool_call_id = json_string_value(v);
        }
        json_t *tc = field(m, "tool_calls");
        if (!tc)
            continue;
        if (!json_is_array(tc)) {
            *param = "messages";
            return dsd_errf(err, -EINVAL, "'%s.tool_calls' must be an array", where);
        }
        cm->tool_calls = &r->calls[k];
        size_t j;
        json_t *call;
        json_array_foreach(tc, j, call) {
            json_t *fn = json_object_get(call, "function");
            json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
            json_t *id = json_object_get(call, "id");
            if (!json_is_object(fn) || !json_is_string(name)) {
                *param = "messages";
                return dsd_errf(err, -EINVAL, "'%s.tool_calls[%zu].function.name' must be a string", where, j);
            }
            struct dsd_client_tool_call *c = &r->calls[k++];
            c->id = json_is_string(id) ? json_string_value(id) : NULL;
            c->name = json_string_value(name);
            if (json_is_string(args)) {
                c->arguments = json_string_value(args);
            } else if (json_is_object(args)) {
                c->arguments = own(r, json_dumps(args, JSON_COMPACT));
                if (!c->arguments)
                    return dsd_errf(err, -ENOMEM, "out of memory");
            } else if (!args || json_is_null(args)) {
                c->arguments = "{}";
            } else {
                *param = "messages";
                return dsd_errf(err, -EINVAL, "'%s.tool_calls[%zu].function.arguments' must be a JSON string", where,
                                j);
            }
            cm->n_tool_calls++;
        }
    }
    r->gp.messages = r->msgs;
    r->gp.n_messages = (uint32_t)n;
    return 0;
}

static int parse_stop(struct oa_request *r, json_t *root, const char **param, struct dsd_err *err)
{
    json_t *stop = field(root, "stop");
    if (!stop)
        return 0;
    if (json_is_string(stop)) {
        if (json_string_length(stop) == 0)
            return 0;
        r->stops[0] = json_string_value(stop);
        r->gp.n_stop = 1;
    } else if (json_is_array(stop)) {
        if (json_array_size(stop) > 16)
            return bad(err, param, "stop", "'%s' takes at most 16 strings%s", NULL);
        size_t i;
        json_t *s;
        json_array_foreach(stop, i, s) {
            if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > 256)
                return bad(err, param, "stop", "'%s' must hold strings of 1 to 256 bytes%s", NULL);
            r->stops[r->gp.n_stop++] = json_string_value(s);
        }
    } else {
        return bad(err, param, "stop", "'%s' must be a string or an array of strings%s", NULL);
    }
    r->gp.stop = r->stops;
    return 0;
}

/* tools, tool_choice: "none" leaves the tools out of the prompt; "auto" (the default with
 * tools) renders them; forcing a call ("required", a named function) needs constrained
 * decoding, which deepseekd does not have: refused rather than silently ignored. */
static int parse_tools(struct oa_request *r, json_t *root, const char **param, struct dsd_err *err)
{
    json_t *tools = field(root, "tools");
    json_t *choice = field(root, "tool_choice");
    bool none = false;
    if (choice) {
        if (json_is_string(choice) && strcmp(json_string_value(choice), "none") == 0)
            none = true;
        else if (!(json_is_string(choice) && strcmp(json_string_value(choice), "auto") == 0))
            return bad(err, param, "tool_choice",
                       "'%s': only \"auto\" and \"none\" are supported (forcing a tool call needs constrained "
                       "decoding, which this server does not have)%s", NULL);
    }
    if (!tools)
        return 0;
    if (!json_is_array(tools))
        return bad(err, param, "tools", "'%s' must be an array%s", NULL);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *type = json_object_get(t, "type");
        if (!json_is_object(t) || (type && !(json_is_string(type) && strcmp(json_string_value(type), "function") == 0)))
            return bad(err, param, "tools", "'%s': only tools of type \"function\" are supported%s", NULL);
    }
    if (none || json_array_size(tools) == 0)
        return 0;
    r->tools_json = json_dumps(tools, JSON_COMPACT);
    if (!r->tools_json)
        return dsd_errf(err, -ENOMEM, "out of memory");
    r->gp.tools_json = r->tools_json;
    return 0;
}

/* Thinking mode: chat_template_kwargs.thinking (SGLang's and vLLM's convention for
 * DeepSeek) or "thinking": {"type": "enabled"|"disabled"} (DeepSeek's API), or a bool. */
static int parse_thinking(struct oa_request *r, json_t *root, const char **param, struct dsd_err *err)
{
    json_t *kw = field(root, "chat_template_kwargs");
    if (kw) {
        if (!json_is_object(kw))
            return bad(err, param, "chat_template_kwargs", "'%s' must be an object%s", NULL);
        bool b;
        int rc = get_bool(kw, "thinking", &b, param, err);
        if (rc < 0)
            return rc;
        if (rc)
            r->gp.thinking = b;
    }
    json_t *t = field(root, "thinking");
    if (!t)
        return 0;
    if (json_is_boolean(t)) {
        r->gp.thinking = json_is_true(t);
        return 0;
    }
    json_t *type = json_object_get(t, "type");
    if (json_is_object(t) && json_is_string(type)) {
        const char *v = json_string_value(type);
        if (strcmp(v, "enabled") == 0 || strcmp(v, "disabled") == 0) {
            r->gp.thinking = strcmp(v, "enabled") == 0;
            return 0;
        }
    }
    return bad(err, param, "thinking", "'%s' must be {\"type\": \"enabled\"} or {\"type\": \"disabled\"}%s", NULL);
}

static int parse_common(struct oa_request *r, json_t *root, const char **param, struct dsd_err *err)
{
    struct dsd_client_generate_params *gp = &r->gp;
    double d;
    long long x;
    int rc;
    json_t *model = json_object_get(root, "model");
    if (!json_is_string(model))
        return bad(err, param, "model", "'%s' is required and must be a string (GET /v1/models lists it)%s", NULL);
    r->model = json_string_value(model);
    if ((rc = get_bool(root, "stream", &r->stream, param, err)) < 0)
        return rc;
    json_t *so = field(root, "stream_options");
    if (so) {
        if (!json_is_object(so))
            return bad(err, param, "stream_options", "'%s' must be an object%s", NULL);
        if ((rc = get_bool(so, "include_usage", &r->include_usage, param, err)) < 0)
            return rc;
    }
    if ((rc = get_int(root, "max_tokens", 1, 2147483647LL, &x, param, err)) < 0)
        return rc;
    if (rc)
        gp->max_tokens = (uint32_t)x;
    if ((rc = get_int(root, "max_completion_tokens", 1, 2147483647LL, &x, param, err)) < 0)
        return rc;
    if (rc)
        gp->max_tokens = (uint32_t)x;
    if ((rc = get_number(root, "temperature", 0, 2, &d, param, err)) < 0)
        return rc;
    if (rc)
        gp->temperature = d;
    if ((rc = get_number(root, "top_p", 0, 1, &d, param, err)) < 0)
        return rc;
    if (rc) {
        if (d == 0)
            return bad(err, param, "top_p", "'%s' must be above 0%s", NULL);
        gp->top_p = d;
    }
    if ((rc = get_number(root, "presence_penalty", -2, 2, &d, param, err)) < 0)
        return rc;
    if (rc)
        gp->presence_penalty = d;
    if ((rc = get_number(root, "frequency_penalty", -2, 2, &d, param, err)) < 0)
        return rc;
    if (rc)
        gp->frequency_penalty = d;
    /* extensions vLLM and SGLang accept too */
    if ((rc = get_int(root, "top_k", -1, 1 << 30, &x, param, err)) < 0)
        return rc;
    if (rc)
        gp->top_k = x < 0 ? 0 : (uint32_t)x;
    if ((rc = get_number(root, "min_p", 0, 1, &d, param, err)) < 0)
        return rc;
    if (rc)
        gp->min_p = d;
    if ((rc = get_number(root, "repetition_penalty", 1e-6, 10, &d, param, err)) < 0)
        return rc;
    if (rc)
        gp->repetition_penalty = d;
    bool ig = false;
    if ((rc = get_bool(root, "ignore_eos", &ig, param, err)) < 0)
        return rc;
    gp->ignore_eos = ig;
    json_t *seed = field(root, "seed");
    if (seed) {
        if (!json_is_integer(seed))
            return bad(err, param, "seed", "'%s' must be an integer%s", NULL);
        gp->seed = (uint64_t)json_integer_value(seed);
        gp->has_seed = true;
    }
    if ((rc = get_int(root, "n", 1, 1, &x, param, err)) < 0) {
        dsd_errf(err, -EINVAL, "'n' must be 1: this server returns one choice per request");
        return rc;
    }
    json_t *lb = field(root, "logit_bias");
    if (lb && (!json_is_object(lb) || json_object_size(lb) > 0))
        return bad(err, param, "logit_bias", "'%s' is not supported%s", NULL);
    return parse_stop(r, root, param, err);
}

static int parse_chat(struct oa_request *r, json_t *root, const char **param, struct dsd_err *err)
{
    int rc = parse_common(r, root, param, err);
    if (rc)
        return rc;
    bool lp = false;
    if ((rc = get_bool(root, "logprobs", &lp, param, err)) < 0)
        return rc;
    long long top = 0;
    if ((rc = get_int(root, "top_logprobs", 0, 20, &top, param, err)) < 0)
        return rc;
    if (rc && !lp && top > 0)
        return bad(err, param, "top_logprobs", "'%s' needs 'logprobs': true%s", NULL);
    r->gp.logprobs = lp;
    r->gp.top_logprobs = (uint32_t)top;
    json_t *rf = field(root, "response_format");
    if (rf) {
        json_t *type = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return bad(err, param, "response_format",
                       "'%s': only {\"type\": \"text\"} is supported (no constrained decoding)%s", NULL);
    }
    if ((rc = parse_tools(r, root, param, err)))
        return rc;
    if ((rc = parse_thinking(r, root, param, err)))
        return rc;
    return parse_messages(r, field(root, "messages"), param, err);
}

static int parse_completion(struct oa_request *r, json_t *root, const char **param, struct dsd_err *err)
{
    int rc = parse_common(r, root, param, err);
    if (rc)
        return rc;
    long long lp = -1;
    if ((rc = get_int(root, "logprobs", 0, 20, &lp, param, err)) < 0)
        return rc;
    r->completion_logprobs = rc ? (int)lp : -1;
    if (rc) {
        r->gp.logprobs = true;
        r->gp.top_logprobs = (uint32_t)lp;
    }
    bool echo = false;
    if ((rc = get_bool(root, "echo", &echo, param, err)) < 0)
        return rc;
    if (echo)
        return bad(err, param, "echo", "'%s' is not supported%s", NULL);
    json_t *suffix = field(root, "suffix");
    if (suffix && !(json_is_string(suffix) && json_string_length(suffix) == 0))
        return bad(err, param, "suffix", "'%s' is not supported%s", NULL);
    long long best_of = 1;
    if ((rc = get_int(root, "best_of", 1, 1, &best_of, param, err)) < 0)
        return rc;
    json_t *p = field(root, "prompt");
    if (p && json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (p && json_is_string(p)) {
        r->gp.prompt_text = json_string_value(p);
        return 0;
    }
    if (p && json_is_array(p) && json_array_size(p) > 0) {
        size_t n = json_array_size(p), i;
        json_t *t;
        r->prompt_tokens = malloc(n * sizeof *r->prompt_tokens);
        if (!r->prompt_tokens)
            return dsd_errf(err, -ENOMEM, "out of memory");
        json_array_foreach(p, i, t) {
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > UINT32_MAX)
                return bad(err, param, "prompt",
                           "'%s' must be a string, an array of one string, or an array of token ids%s", NULL);
            r->prompt_tokens[i] = (uint32_t)json_integer_value(t);
        }
        r->gp.prompt_tokens = r->prompt_tokens;
        r->gp.n_prompt_tokens = (uint32_t)n;
        r->gp.detokenize = 1;
        return 0;
    }
    return bad(err, param, "prompt",
               "'%s' is required: a string, an array of one string, or an array of token ids (one prompt per request)%s",
               NULL);
}

int oa_request_parse(enum oa_kind kind, const char *body, size_t len, struct oa_request *r, const char **param,
                     struct dsd_err *err)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->completion_logprobs = -1;
    r->gp = dsd_client_generate_default_params();
    *param = NULL;
    json_error_t je;
    r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!r->root)
        return dsd_errf(err, -EINVAL, "We could not parse the JSON body of your request: %s (line %d, column %d)",
                        json_error_code(&je) == json_error_null_character ? "strings may not contain U+0000" : je.text,
                        je.line, je.column);
    if (!json_is_object(r->root)) {
        oa_request_free(r);
        return dsd_errf(err, -EINVAL, "The request body must be a JSON object");
    }
    int rc = kind == OA_CHAT ? parse_chat(r, r->root, param, err) : parse_completion(r, r->root, param, err);
    if (rc)
        oa_request_free(r);
    return rc;
}

void oa_request_free(struct oa_request *r)
{
    for (size_t i = 0; i < r->n_owned; i++)
        free(r->owned[i]);
    free(r->owned);
    free(r->msgs);
    free(r->calls);
    free(r->tools_json);
    free(r->prompt_tokens);
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}
