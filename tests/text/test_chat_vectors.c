/*
 * DeepSeek's own test vectors for the V3.2 encoder (tests/data/chat/official, see the README
 * there): each input, encoded in thinking mode with BOS, must equal the expected prompt byte
 * for byte. The official test strips the expected file (Python str.strip()), so trailing
 * whitespace of the file is not part of the prompt.
 * Also checks the encoder and the output parser against each other: the assistant turns of
 * the vectors, parsed back, give their reasoning, content and tool calls.
 */
#include <errno.h>
#include <stdbool.h>

#include "chat_buf.h"
#include "chat_encoder.h"
#include "output_parser.h"
#include "test.h"

static const char *data_dir = ".";

static char *read_file(const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    struct dsd_chat_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        dsd_chat_buf_put(&b, chunk, n);
    fclose(f);
    return dsd_chat_buf_take(&b, len);
}

static void check_vector(const char *input, const char *output)
{
    size_t in_len, want_len;
    char *in = read_file(input, &in_len);
    char *want = read_file(output, &want_len);
    ASSERT_TRUE(in && want);
    if (!in || !want)
        goto out;
    while (want_len && (want[want_len - 1] == '\n' || want[want_len - 1] == ' '))
        want_len--;
    struct dsd_chat_options opt = {.thinking = true};
    char *got = NULL;
    size_t got_len = 0;
    struct dsd_err err = {{0}};
    int rc = dsd_chat_encode_json(in, in_len, &opt, &got, &got_len, &err);
    if (rc)
        fprintf(stderr, "%s: %s\n", input, err.msg);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(got_len, want_len);
    bool same = got && got_len == want_len && memcmp(got, want, want_len) == 0;
    if (!same && got) {
        size_t i = 0;
        while (i < got_len && i < want_len && got[i] == want[i])
            i++;
        fprintf(stderr, "%s: first difference at byte %zu\n", input, i);
    }
    ASSERT_TRUE(same);
    free(got);
out:
    free(in);
    free(want);
}

TEST(official_vector_tool_loop) { check_vector("test_input.json", "test_output.txt"); }
TEST(official_vector_search_with_date)
{
    check_vector("test_input_search_w_date.json", "test_output_search_w_date.txt");
}
TEST(official_vector_search_without_date)
{
    check_vector("test_input_search_wo_date.json", "test_output_search_wo_date.txt");
}

/* ----------------------------------------------------- encoder -> parser round trip */

struct collected {
    struct dsd_chat_buf reasoning, content;
    json_t *calls; /* array of {"name", "arguments"} */
    int errors;
};

static int collect(void *user, const struct dsd_output_event *ev)
{
    struct collected *c = user;
    switch (ev->kind) {
    case DSD_OUTPUT_REASONING: dsd_chat_buf_put(&c->reasoning, ev->text, ev->len); break;
    case DSD_OUTPUT_CONTENT: dsd_chat_buf_put(&c->content, ev->text, ev->len); break;
    case DSD_OUTPUT_TOOL_CALL:
        json_array_append_new(c->calls, json_pack("{s:s,s:O}", "name", ev->name, "arguments",
                                                  ev->arguments));
        break;
    case DSD_OUTPUT_ERROR: c->errors++; break;
    }
    return 0;
}

static char *encode_prefix(json_t *messages, size_t n, size_t *len)
{
    json_t *req = json_object();
    json_t *part = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(part, json_array_get(messages, i));
    json_object_set_new(req, "messages", part);
    struct dsd_chat_options opt = {.thinking = true};
    char *prompt = NULL;
    struct dsd_err err;
    if (dsd_chat_encode(req, &opt, &prompt, len, &err) < 0)
        fprintf(stderr, "encode: %s\n", err.msg);
    json_decref(req);
    return prompt;
}

/* For each assistant message after the last user message: its text is what the prompt with
 * it adds to the prompt without it; parsing that text (it starts inside reasoning) must give
 * back the message. Fed one byte at a time. */
static void round_trip(const char *input)
{
    size_t len;
    char *text = read_file(input, &len);
    json_error_t jerr;
    json_t *req = text ? json_loadb(text, len, 0, &jerr) : NULL;
    free(text);
    ASSERT_TRUE(req != NULL);
    if (!req)
        return;
    json_t *messages = json_object_get(req, "messages");
    size_t last_user = 0, checked = 0;
    for (size_t i = 0; i < json_array_size(messages); i++) {
        const char *role = json_string_value(json_object_get(json_array_get(messages, i), "role"));
        if (!strcmp(role, "user") || !strcmp(role, "developer"))
            last_user = i;
    }
    for (size_t i = last_user + 1; i < json_array_size(messages); i++) {
        json_t *msg = json_array_get(messages, i);
        if (strcmp(json_string_value(json_object_get(msg, "role")), "assistant") != 0)
            continue;
        size_t before_len, after_len;
        char *before = encode_prefix(messages, i, &before_len);
        char *after = encode_prefix(messages, i + 1, &after_len);
        ASSERT_TRUE(before && after && after_len > before_len &&
                    memcmp(before, after, before_len) == 0);
        ASSERT_TRUE(before && dsd_chat_prompt_opens_reasoning(before, before_len));
        struct collected c = {.calls = json_array()};
        struct dsd_output_parser_options opt = {.start_in_reasoning = true};
        struct dsd_output_parser *p;
        struct dsd_err err;
        ASSERT_EQ_INT(dsd_output_parser_create(&opt, collect, &c, &p, &err), 0);
        for (size_t k = before_len; k < after_len; k++)
            ASSERT_EQ_INT(dsd_output_parser_feed(p, after + k, 1, &err), 0);
        ASSERT_EQ_INT(dsd_output_parser_finish(p, &err), 0);
        dsd_output_parser_free(p);

        ASSERT_EQ_INT(c.errors, 0);
        const char *reasoning = json_string_value(json_object_get(msg, "reasoning_content"));
        const char *content = json_string_value(json_object_get(msg, "content"));
        ASSERT_EQ_STR(c.reasoning.data ? c.reasoning.data : "", reasoning ? reasoning : "");
        ASSERT_EQ_STR(c.content.data ? c.content.data : "", content ? content : "");
        json_t *calls = json_object_get(msg, "tool_calls");
        ASSERT_EQ_INT(json_array_size(c.calls), json_array_size(calls));
        for (size_t k = 0; k < json_array_size(calls) && k < json_array_size(c.calls); k++) {
            json_t *fn = json_object_get(json_array_get(calls, k), "function");
            json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0,
                                      &jerr);
            json_t *got = json_array_get(c.calls, k);
            ASSERT_EQ_STR(json_string_value(json_object_get(got, "name")),
                          json_string_value(json_object_get(fn, "name")));
            ASSERT_TRUE(json_equal(json_object_get(got, "arguments"), args));
            json_decref(args);
        }
        checked++;
        json_decref(c.calls);
        dsd_chat_buf_free(&c.reasoning);
        dsd_chat_buf_free(&c.content);
        free(before);
        free(after);
    }
    ASSERT_TRUE(checked > 0);
    json_decref(req);
}

TEST(parser_reads_back_the_encoded_assistant_turns)
{
    round_trip("test_input.json");
    round_trip("test_input_search_w_date.json");
    round_trip("test_input_search_wo_date.json");
}

int main(int argc, char **argv)
{
    if (argc > 1)
        data_dir = argv[1];
    RUN(official_vector_tool_loop);
    RUN(official_vector_search_with_date);
    RUN(official_vector_search_without_date);
    RUN(parser_reads_back_the_encoded_assistant_turns);
    return test_report();
}
