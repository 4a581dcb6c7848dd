/*
 * DeepSeek V3.2 chat encoder. The rules are those of DeepSeek's encoding_dsv32.py
 * (thinking/chat modes, drop_thinking, BOS); docs/CHAT.md lists them with examples.
 * The prompt is built in one pass over the messages; every check happens just before the
 * text it guards, so an error never leaves a half-built prompt behind (the buffer is freed).
 */
#include "chat_encoder.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "chat_buf.h"
#include "chat_json.h"
#include "chat_markers.h"
#include "json_type.h"

/* The system-prompt block that introduces tools. The model was trained on this exact text
 * (it is part of the official prompt format), so it is reproduced byte for byte; the JSON
 * schemas go between TOOLS_HEAD and TOOLS_TAIL, one per line. */
static const char TOOLS_HEAD[] =
    "## Tools\n"
    "\n"
    "You have access to a set of tools you can use to answer the user's question.\n"
    "You can invoke functions by writing a \"" DSD_CHAT_CALLS_OPEN "\" block like the "
    "following as part of your reply to the user:\n"
    DSD_CHAT_CALLS_OPEN "\n"
    DSD_CHAT_INVOKE_OPEN " name=\"$FUNCTION_NAME\">\n"
    DSD_CHAT_PARAM_OPEN " name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE"
    DSD_CHAT_PARAM_CLOSE "\n"
    "...\n"
    DSD_CHAT_INVOKE_CLOSE "\n"
    DSD_CHAT_INVOKE_OPEN " name=\"$FUNCTION_NAME2\">\n"
    "...\n"
    DSD_CHAT_INVOKE_CLOSE "\n"
    DSD_CHAT_CALLS_CLOSE "\n"
    "\n"
    "String and scalar parameters should be specified as is without any escaping or quotes, "
    "while lists and objects should use JSON format. The \"string\" attribute should be set to "
    "\"true\" for string type parameters and \"false\" for other types (numbers, booleans, "
    "arrays, objects).\n"
    "\n"
    "If the thinking_mode is enabled, then after function results you should strongly consider "
    "outputting a thinking block. Here is an example:\n"
    "\n"
    DSD_CHAT_CALLS_OPEN "\n"
    "...\n"
    DSD_CHAT_CALLS_CLOSE "\n"
    "\n"
    "<function_results>\n"
    "...\n"
    "</function_results>\n"
    "\n"
    DSD_CHAT_THINK_START "...thinking about results" DSD_CHAT_THINK_END "\n"
    "\n"
    "Here are the functions available in JSONSchema format:\n"
    "<functions>\n";
static const char TOOLS_TAIL[] = "\n</functions>\n";

static const char RESPONSE_FORMAT_HEAD[] =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

enum role { ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL };
static const char *const ROLE_NAMES[] = {"system", "developer", "user", "assistant", "tool"};

struct encoder {
    const json_t *messages;
    size_t count;
    bool thinking;
    long last_user;              /* index of the last user/developer message, -1 if none */
    const json_t *req_tools;     /* request-level tools (non-empty array) or NULL */
    const json_t *req_format;    /* request-level response_format or NULL */
    struct dsd_chat_buf out;
    struct dsd_chat_buf parts;   /* scratch: content given as a list of text parts */
    struct dsd_err *err;
    /* Byte ranges of out written from the encoder's own constants (markup), in order; the
     * rest came from the request. Only markup may become special tokens. */
    struct dsd_chat_range *markup;
    size_t n_markup, cap_markup;
};

#define OOM(e) dsd_errf((e)->err, -ENOMEM, "out of memory while encoding the chat")

static int put(struct encoder *e, const char *s, size_t len)
{
    return dsd_chat_buf_put(&e->out, s, len) < 0 ? OOM(e) : 0;
}

/* Appends markup: the encoder's own constant text (role markers, DSML tags, ...). */
static int puts_(struct encoder *e, const char *s)
{
    size_t start = e->out.len, len = strlen(s);
    int rc = put(e, s, len);
    if (rc < 0 || len == 0)
        return rc;
    if (e->n_markup && e->markup[e->n_markup - 1].end == start) {
        e->markup[e->n_markup - 1].end = start + len;
        return 0;
    }
    if (e->n_markup == e->cap_markup) {
        size_t cap = e->cap_markup ? e->cap_markup * 2 : 32;
        struct dsd_chat_range *n = realloc(e->markup, cap * sizeof *n);
        if (!n)
            return OOM(e);
        e->markup = n;
        e->cap_markup = cap;
    }
    e->markup[e->n_markup++] = (struct dsd_chat_range){ start, start + len };
    return 0;
}

static int role_of(struct encoder *e, size_t i, enum role *role)
{
    const json_t *msg = json_array_get(e->messages, i);
    if (!json_is_object(msg))
        return dsd_errf(e->err, -EINVAL, "messages[%zu] is %s, expected an object", i,
                        dsd_json_type_name(msg));
    const json_t *r = json_object_get(msg, "role");
    if (!r)
        return dsd_errf(e->err, -EINVAL, "messages[%zu]: field \"role\" is missing", i);
    if (!json_is_string(r))
        return dsd_errf(e->err, -EINVAL, "messages[%zu]: field \"role\" is %s, expected a string",
                        i, dsd_json_type_name(r));
    for (int k = 0; k < (int)(sizeof ROLE_NAMES / sizeof ROLE_NAMES[0]); k++) {
        if (json_string_length(r) == strlen(ROLE_NAMES[k]) &&
            memcmp(json_string_value(r), ROLE_NAMES[k], json_string_length(r)) == 0) {
            *role = (enum role)k;
            return 0;
        }
    }
    return dsd_errf(e->err, -EINVAL,
                    "messages[%zu]: unknown role \"%.64s\" (expected system, developer, user, "
                    "assistant or tool)", i, json_string_value(r));
}

enum need { OPTIONAL, REQUIRED };

/*
 * The text of msg[field]: a string, or a list of {"type": "text", "text": str} parts joined
 * with one space (what OpenAI-style clients send; SGLang joins them the same way). Missing or
 * null: *s = NULL, an error when the field is REQUIRED.
 */
static int text_field(struct encoder *e, size_t i, enum role role, const char *field,
                      enum need need, const char **s, size_t *len)
{
    const json_t *msg = json_array_get(e->messages, i);
    const json_t *v = json_object_get(msg, field);
    *s = NULL;
    *len = 0;
    if (!v || json_is_null(v)) {
        if (need == REQUIRED)
            return dsd_errf(e->err, -EINVAL, "messages[%zu] (%s): field \"%s\" is %s", i,
                            ROLE_NAMES[role], field, v ? "null" : "missing");
        return 0;
    }
    if (json_is_string(v)) {
        *s = json_string_value(v);
        *len = json_string_length(v);
        return 0;
    }
    if (!json_is_array(v))
        return dsd_errf(e->err, -EINVAL,
                        "messages[%zu] (%s): field \"%s\" is %s, expected a string or a list "
                        "of text parts", i, ROLE_NAMES[role], field, dsd_json_type_name(v));
    e->parts.len = 0;
    size_t k;
    const json_t *part;
    json_array_foreach(v, k, part) {
        const json_t *type = json_object_get(part, "type");
        const json_t *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) ||
            strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
            return dsd_errf(e->err, -EINVAL,
                            "messages[%zu] (%s): %s[%zu] is not a {\"type\": \"text\", \"text\": "
                            "string} part (this model reads text only)", i, ROLE_NAMES[role],
                            field, k);
        if ((k && dsd_chat_buf_put(&e->parts, " ", 1) < 0) ||
            dsd_chat_buf_put(&e->parts, json_string_value(text), json_string_length(text)) < 0)
            return OOM(e);
    }
    *s = e->parts.data ? e->parts.data : "";
    *len = e->parts.len;
    return 0;
}

/* A non-empty list of tools in OpenAI form, or NULL when absent, null or empty. ctx names
 * where the list was found, for errors ("messages[0]", "the request"). */
static int tools_field(struct encoder *e, const json_t *v, const char *ctx, const json_t **tools)
{
    *tools = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return dsd_errf(e->err, -EINVAL, "%s: \"tools\" is %s, expected an array", ctx,
                        dsd_json_type_name(v));
    size_t k;
    const json_t *tool;
    json_array_foreach(v, k, tool) {
        const json_t *fn = json_object_get(tool, "function");
        if (!json_is_object(tool) || !json_is_object(fn))
            return dsd_errf(e->err, -EINVAL,
                            "%s: tools[%zu] has no \"function\" object (expected {\"type\": "
                            "\"function\", \"function\": {\"name\": ..., \"parameters\": ...}})",
                            ctx, k);
        if (!json_is_string(json_object_get(fn, "name")))
            return dsd_errf(e->err, -EINVAL,
                            "%s: tools[%zu].function.name is missing or not a string", ctx, k);
    }
    if (json_array_size(v))
        *tools = v;
    return 0;
}

static int render_tools(struct encoder *e, const json_t *tools)
{
    int rc = puts_(e, TOOLS_HEAD);
    size_t k;
    const json_t *tool;
    json_array_foreach(tools, k, tool) {
        if (rc < 0)
            return rc;
        if (k && (rc = put(e, "\n", 1)) < 0)
            return rc;
        rc = dsd_chat_json_dump(&e->out, json_object_get(tool, "function"), e->err);
    }
    return rc < 0 ? rc : puts_(e, TOOLS_TAIL);
}

/* Python renders a response_format only when it is truthy; {} and null add nothing. */
static int format_field(struct encoder *e, size_t i, const json_t *v, const json_t **format)
{
    *format = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return dsd_errf(e->err, -EINVAL,
                        "messages[%zu]: \"response_format\" is %s, expected an object", i,
                        dsd_json_type_name(v));
    if (json_object_size(v))
        *format = v;
    return 0;
}

static int render_format(struct encoder *e, const json_t *format)
{
    int rc = puts_(e, RESPONSE_FORMAT_HEAD);
    return rc < 0 ? rc : dsd_chat_json_dump(&e->out, format, e->err);
}

/* The tools and response format a system/developer message carries, merged with the
 * request-level ones when this message is where those belong (messages[0], a system). */
static int prompt_extras(struct encoder *e, size_t i, enum role role, const json_t **tools,
                         const json_t **format)
{
    const json_t *msg = json_array_get(e->messages, i);
    char ctx[48];
    snprintf(ctx, sizeof ctx, "messages[%zu]", i);
    int rc = tools_field(e, json_object_get(msg, "tools"), ctx, tools);
    if (rc < 0)
        return rc;
    if ((rc = format_field(e, i, json_object_get(msg, "response_format"), format)) < 0)
        return rc;
    if (i == 0 && role == ROLE_SYSTEM) {
        if (e->req_tools && *tools)
            return dsd_errf(e->err, -EINVAL, "messages[0] (system) has \"tools\" and so does the "
                            "request; give them in one place");
        if (e->req_format && *format)
            return dsd_errf(e->err, -EINVAL, "messages[0] (system) has \"response_format\" and "
                            "so does the request; give it in one place");
        if (e->req_tools)
            *tools = e->req_tools;
        if (e->req_format)
            *format = e->req_format;
    }
    return 0;
}

static int render_system(struct encoder *e, size_t i)
{
    const char *content;
    size_t len;
    const json_t *tools, *format;
    int rc = text_field(e, i, ROLE_SYSTEM, "content", OPTIONAL, &content, &len);
    if (rc < 0 || (rc = prompt_extras(e, i, ROLE_SYSTEM, &tools, &format)) < 0)
        return rc;
    if ((rc = put(e, content, len)) < 0)
        return rc;
    if (tools && ((rc = put(e, "\n\n", 2)) < 0 || (rc = render_tools(e, tools)) < 0))
        return rc;
    if (format && ((rc = put(e, "\n\n", 2)) < 0 || (rc = render_format(e, format)) < 0))
        return rc;
    return 0;
}

/* The end of a user turn: "<think>" opens reasoning for the reply to the last user message in
 * thinking mode; every other turn is closed with "</think>" (chat mode / earlier turns). */
static int render_turn_end(struct encoder *e, size_t i)
{
    bool open = e->thinking && (long)i == e->last_user;
    return puts_(e, open ? DSD_CHAT_THINK_START : DSD_CHAT_THINK_END);
}

static int render_user(struct encoder *e, size_t i)
{
    const char *content;
    size_t len;
    int rc = text_field(e, i, ROLE_USER, "content", REQUIRED, &content, &len);
    if (rc < 0 || (rc = puts_(e, DSD_CHAT_USER)) < 0 || (rc = put(e, content, len)) < 0 ||
        (rc = puts_(e, DSD_CHAT_ASSISTANT)) < 0)
        return rc;
    return render_turn_end(e, i);
}

/* A developer message is a user turn whose text carries the tools and response format. */
static int render_developer(struct encoder *e, size_t i)
{
    const char *content;
    size_t len;
    const json_t *tools, *format;
    int rc = text_field(e, i, ROLE_DEVELOPER, "content", REQUIRED, &content, &len);
    if (rc < 0 || (rc = prompt_extras(e, i, ROLE_DEVELOPER, &tools, &format)) < 0)
        return rc;
    if (len == 0)
        return dsd_errf(e->err, -EINVAL, "messages[%zu] (developer): \"content\" is empty", i);
    if ((rc = puts_(e, DSD_CHAT_USER)) < 0)
        return rc;
    if (tools && ((rc = put(e, "\n\n", 2)) < 0 || (rc = render_tools(e, tools)) < 0))
        return rc;
    if (format && ((rc = put(e, "\n\n", 2)) < 0 || (rc = render_format(e, format)) < 0))
        return rc;
    if ((rc = puts_(e, "\n\n# The user's message is: ")) < 0 || (rc = put(e, content, len)) < 0 ||
        (rc = puts_(e, DSD_CHAT_ASSISTANT)) < 0)
        return rc;
    return render_turn_end(e, i);
}

/* The tool_calls of messages[i] (an assistant): NULL when absent, null or empty. */
static int tool_calls_of(struct encoder *e, size_t i, const json_t **calls)
{
    const json_t *v = json_object_get(json_array_get(e->messages, i), "tool_calls");
    *calls = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return dsd_errf(e->err, -EINVAL,
                        "messages[%zu] (assistant): \"tool_calls\" is %s, expected an array", i,
                        dsd_json_type_name(v));
    if (json_array_size(v))
        *calls = v;
    return 0;
}

/* One tool call as a DSML invoke: each argument becomes a parameter, string="true" with the
 * raw text for JSON strings, string="false" with json.dumps text for everything else. */
static int render_invoke(struct encoder *e, size_t i, size_t k, const json_t *call)
{
    const json_t *fn = json_object_get(call, "function");
    if (!json_is_object(call) || !json_is_object(fn))
        return dsd_errf(e->err, -EINVAL,
                        "messages[%zu] (assistant): tool_calls[%zu] has no \"function\" object", i,
                        k);
    const json_t *name = json_object_get(fn, "name");
    if (!json_is_string(name))
        return dsd_errf(e->err, -EINVAL, "messages[%zu] (assistant): "
                        "tool_calls[%zu].function.name is %s, expected a string", i, k,
                        name ? dsd_json_type_name(name) : "missing");
    const json_t *args = json_object_get(fn, "arguments");
    json_t *parsed = NULL;
    if (json_is_string(args)) {
        json_error_t jerr;
        parsed = json_loadb(json_string_value(args), json_string_length(args),
                            JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!parsed)
            return dsd_errf(e->err, -EINVAL, "messages[%zu] (assistant): "
                            "tool_calls[%zu].function.arguments is not valid JSON: %s (at "
                            "character %d)", i, k, jerr.text, jerr.position);
        args = parsed;
    }
    int rc = 0;
    if (!json_is_object(args)) {
        rc = dsd_errf(e->err, -EINVAL, "messages[%zu] (assistant): "
                      "tool_calls[%zu].function.arguments is %s, expected a JSON object (or its "
                      "text)", i, k, args ? dsd_json_type_name(args) : "missing");
        goto out;
    }
    if ((rc = puts_(e, DSD_CHAT_INVOKE_OPEN " name=\"")) < 0 ||
        (rc = put(e, json_string_value(name), json_string_length(name))) < 0 ||
        (rc = puts_(e, "\">\n")) < 0)
        goto out;
    const char *key;
    size_t key_len;
    json_t *value;
    bool first = true;
    json_object_keylen_foreach((json_t *)args, key, key_len, value) {
        bool is_str = json_is_string(value);
        if ((!first && (rc = put(e, "\n", 1)) < 0) ||
            (rc = puts_(e, DSD_CHAT_PARAM_OPEN " name=\"")) < 0 || (rc = put(e, key, key_len)) < 0 ||
            (rc = puts_(e, is_str ? "\" string=\"true\">" : "\" string=\"false\">")) < 0)
            goto out;
        first = false;
        if (is_str)
            rc = put(e, json_string_value(value), json_string_length(value));
        else
            rc = dsd_chat_json_dump(&e->out, value, e->err);
        if (rc < 0 || (rc = puts_(e, DSD_CHAT_PARAM_CLOSE)) < 0)
            goto out;
    }
    rc = puts_(e, "\n" DSD_CHAT_INVOKE_CLOSE);
out:
    json_decref(parsed);
    return rc;
}

static int render_assistant(struct encoder *e, size_t i)
{
    const char *content, *reasoning;
    size_t content_len, reasoning_len;
    const json_t *calls;
    int rc = text_field(e, i, ROLE_ASSISTANT, "reasoning_content", OPTIONAL, &reasoning,
                        &reasoning_len);
    if (rc < 0 || (rc = tool_calls_of(e, i, &calls)) < 0)
        return rc;
    /* Reasoning is part of the prompt only inside the current agent loop (after the last
     * user message) in thinking mode; older reasoning is dropped. */
    if (e->thinking && (long)i > e->last_user) {
        if (reasoning_len == 0 && !calls)
            return dsd_errf(e->err, -EINVAL,
                            "messages[%zu] (assistant): in thinking mode an assistant message "
                            "after the last user message needs \"reasoning_content\" or "
                            "\"tool_calls\"", i);
        if ((rc = put(e, reasoning ? reasoning : "", reasoning_len)) < 0 ||
            (rc = puts_(e, DSD_CHAT_THINK_END)) < 0)
            return rc;
    }
    /* Read content last: text_field's scratch buffer may back only one text at a time. */
    if ((rc = text_field(e, i, ROLE_ASSISTANT, "content", OPTIONAL, &content, &content_len)) < 0 ||
        (rc = put(e, content ? content : "", content_len)) < 0)
        return rc;
    if (calls) {
        if ((rc = puts_(e, "\n\n" DSD_CHAT_CALLS_OPEN "\n")) < 0)
            return rc;
        size_t k;
        const json_t *call;
        json_array_foreach(calls, k, call) {
            if ((k && (rc = put(e, "\n", 1)) < 0) || (rc = render_invoke(e, i, k, call)) < 0)
                return rc;
        }
        if ((rc = puts_(e, "\n" DSD_CHAT_CALLS_CLOSE)) < 0)
            return rc;
    }
    return puts_(e, DSD_CHAT_EOS);
}

static bool json_string_eq(const json_t *a, const json_t *b)
{
    return json_is_string(a) && json_is_string(b) &&
           json_string_length(a) == json_string_length(b) &&
           memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
}

/*
 * Tool results answer the calls of the nearest assistant message before them, in order: the
 * first opens "<function_results>", the one answering the last call closes it and reopens
 * reasoning ("<think>" in thinking mode) or closes it ("</think>"). No User/Assistant markers
 * surround results.
 */
static int render_tool(struct encoder *e, size_t i)
{
    const char *content;
    size_t len;
    size_t a = i;
    enum role role = ROLE_TOOL;
    int rc;
    while (a > 0 && role == ROLE_TOOL) {
        a--;
        if ((rc = role_of(e, a, &role)) < 0)
            return rc;
    }
    const json_t *calls = NULL;
    if (role == ROLE_ASSISTANT && (rc = tool_calls_of(e, a, &calls)) < 0)
        return rc;
    if (role != ROLE_ASSISTANT || !calls)
        return dsd_errf(e->err, -EINVAL, "messages[%zu] (tool): a tool result must follow an "
                        "assistant message with \"tool_calls\"", i);
    size_t order = i - a; /* 1-based position among this assistant's results */
    size_t n_calls = json_array_size(calls);
    if (order > n_calls)
        return dsd_errf(e->err, -EINVAL, "messages[%zu] (tool): messages[%zu] made %zu tool "
                        "call%s but this is tool result number %zu", i, a, n_calls,
                        n_calls == 1 ? "" : "s", order);
    if (order < n_calls) {
        enum role next = ROLE_USER;
        if (i + 1 < e->count && (rc = role_of(e, i + 1, &next)) < 0)
            return rc;
        if (i + 1 >= e->count || next != ROLE_TOOL)
            return dsd_errf(e->err, -EINVAL, "messages[%zu] (assistant) made %zu tool calls "
                            "but only %zu tool result%s follow%s", a, n_calls, order,
                            order == 1 ? "" : "s", order == 1 ? "s" : "");
    }
    const json_t *msg = json_array_get(e->messages, i);
    const json_t *id = json_object_get(msg, "tool_call_id");
    if (id && !json_is_null(id)) {
        if (!json_is_string(id))
            return dsd_errf(e->err, -EINVAL, "messages[%zu] (tool): \"tool_call_id\" is %s, "
                            "expected a string", i, dsd_json_type_name(id));
        /* Results are matched to calls by order, as the official encoder does; an id that
         * names none of the calls means the client mixed up its conversation. */
        bool any_ids = false, found = false;
        size_t k;
        const json_t *call;
        json_array_foreach(calls, k, call) {
            const json_t *call_id = json_object_get(call, "id");
            any_ids |= json_is_string(call_id);
            found |= json_string_eq(call_id, id);
        }
        if (any_ids && !found)
            return dsd_errf(e->err, -EINVAL, "messages[%zu] (tool): \"tool_call_id\" \"%.64s\" "
                            "matches none of the tool calls of messages[%zu]", i,
                            json_string_value(id), a);
    }
    if ((rc = text_field(e, i, ROLE_TOOL, "content", REQUIRED, &content, &len)) < 0)
        return rc;
    if (order == 1 && (rc = puts_(e, "\n\n<function_results>")) < 0)
        return rc;
    if ((rc = puts_(e, "\n<result>")) < 0 || (rc = put(e, content, len)) < 0 ||
        (rc = puts_(e, "</result>")) < 0)
        return rc;
    if (order == n_calls) {
        bool open = e->thinking && (long)i >= e->last_user;
        if ((rc = puts_(e, "\n</function_results>\n\n")) < 0 ||
            (rc = puts_(e, open ? DSD_CHAT_THINK_START : DSD_CHAT_THINK_END)) < 0)
            return rc;
    }
    return 0;
}

/* Request-level fields, checked before any message is rendered. */
static int read_request(struct encoder *e, const json_t *request)
{
    if (!json_is_object(request))
        return dsd_errf(e->err, -EINVAL, "the chat request is %s, expected a JSON object with "
                        "\"messages\"", request ? dsd_json_type_name(request) : "missing");
    e->messages = json_object_get(request, "messages");
    if (!e->messages)
        return dsd_errf(e->err, -EINVAL, "the chat request has no \"messages\"");
    if (!json_is_array(e->messages))
        return dsd_errf(e->err, -EINVAL, "\"messages\" is %s, expected an array",
                        dsd_json_type_name(e->messages));
    e->count = json_array_size(e->messages);
    if (e->count == 0)
        return dsd_errf(e->err, -EINVAL, "\"messages\" is empty");
    int rc = tools_field(e, json_object_get(request, "tools"), "the request", &e->req_tools);
    if (rc < 0)
        return rc;
    const json_t *format = json_object_get(request, "response_format");
    if (format && !json_is_null(format)) {
        if (!json_is_object(format))
            return dsd_errf(e->err, -EINVAL, "\"response_format\" is %s, expected an object",
                            dsd_json_type_name(format));
        const json_t *type = json_object_get(format, "type");
        bool plain_text = json_object_size(format) == 1 && json_is_string(type) &&
                          strcmp(json_string_value(type), "text") == 0;
        if (json_object_size(format) && !plain_text)
            e->req_format = format;
    }
    e->last_user = -1;
    for (size_t i = 0; i < e->count; i++) {
        enum role role;
        if ((rc = role_of(e, i, &role)) < 0)
            return rc;
        if (role == ROLE_USER || role == ROLE_DEVELOPER)
            e->last_user = (long)i;
    }
    return 0;
}

int dsd_chat_encode_marked(const json_t *request, const struct dsd_chat_options *opt,
                           struct dsd_chat_prompt *out, struct dsd_err *err)
{
    struct encoder e = {.thinking = opt && opt->thinking, .err = err};
    memset(out, 0, sizeof *out);
    int rc = read_request(&e, request);
    if (rc < 0)
        goto fail;
    if (!(opt && opt->omit_bos) && (rc = puts_(&e, DSD_CHAT_BOS)) < 0)
        goto fail;
    enum role first;
    role_of(&e, 0, &first);
    /* Request-level tools/response_format with no system message first: they go into an
     * empty system prompt of their own. */
    if (first != ROLE_SYSTEM) {
        if (e.req_tools && ((rc = put(&e, "\n\n", 2)) < 0 || (rc = render_tools(&e, e.req_tools)) < 0))
            goto fail;
        if (e.req_format &&
            ((rc = put(&e, "\n\n", 2)) < 0 || (rc = render_format(&e, e.req_format)) < 0))
            goto fail;
    }
    for (size_t i = 0; i < e.count; i++) {
        enum role role;
        role_of(&e, i, &role);
        switch (role) {
        case ROLE_SYSTEM: rc = render_system(&e, i); break;
        case ROLE_DEVELOPER: rc = render_developer(&e, i); break;
        case ROLE_USER: rc = render_user(&e, i); break;
        case ROLE_ASSISTANT: rc = render_assistant(&e, i); break;
        case ROLE_TOOL: rc = render_tool(&e, i); break;
        }
        if (rc < 0)
            goto fail;
    }
    dsd_chat_buf_free(&e.parts);
    out->text = dsd_chat_buf_take(&e.out, &out->len);
    if (!out->text) {
        free(e.markup);
        return dsd_errf(err, -ENOMEM, "out of memory while encoding the chat");
    }
    out->markup = e.markup;
    out->n_markup = e.n_markup;
    return 0;
fail:
    dsd_chat_buf_free(&e.parts);
    dsd_chat_buf_free(&e.out);
    free(e.markup);
    return rc;
}

void dsd_chat_prompt_free(struct dsd_chat_prompt *p)
{
    if (!p)
        return;
    free(p->text);
    free(p->markup);
    memset(p, 0, sizeof *p);
}

int dsd_chat_encode(const json_t *request, const struct dsd_chat_options *opt, char **out_prompt,
                    size_t *out_len, struct dsd_err *err)
{
    struct dsd_chat_prompt p;
    *out_prompt = NULL;
    if (out_len)
        *out_len = 0;
    int rc = dsd_chat_encode_marked(request, opt, &p, err);
    if (rc < 0)
        return rc;
    free(p.markup);
    *out_prompt = p.text;
    if (out_len)
        *out_len = p.len;
    return 0;
}



int dsd_chat_encode_json(const char *json, size_t json_len, const struct dsd_chat_options *opt,
                         char **out_prompt, size_t *out_len, struct dsd_err *err)
{
    json_error_t jerr;
    *out_prompt = NULL;
    if (out_len)
        *out_len = 0;
    json_t *request = json_loadb(json, json_len, JSON_ALLOW_NUL, &jerr);
    if (!request)
        return dsd_errf(err, -EINVAL, "the chat request is not valid JSON: %s (line %d, column "
                        "%d)", jerr.text, jerr.line, jerr.column);
    int rc = dsd_chat_encode(request, opt, out_prompt, out_len, err);
    json_decref(request);
    return rc;
}

bool dsd_chat_prompt_opens_reasoning(const char *prompt, size_t len)
{
    size_t n = strlen(DSD_CHAT_THINK_START);
    return len >= n && memcmp(prompt + len - n, DSD_CHAT_THINK_START, n) == 0;
}
