/*
 * What the daemon makes of a chat model's output (daemon/serve/generation.c), with the real
 * DeepSeek tokenizer: a model with random weights never writes a tool call, so each test
 * forces the model's output token by token (greedy sampling over one-hot logits) and checks
 * the events the engine would send: reasoning and content apart, tool calls assembled, an
 * unreadable tool call reported without leaking raw DSML, and the finish reason.
 *   test_generation TOKENIZER_JSON
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine.h"
#include "generation.h"
#include "sampling.h"
#include "test.h"
#include "tokenizer.h"

static struct dsd_tokenizer *g_tok;

struct output {
    char reasoning[4096], content[4096], tool_error[4096];
    char tool_name[64], tool_args[1024];
    int n_tool_items, n_ids, n_events;
    enum dsd_finish finish;
};

static void append(char *dst, size_t cap, const char *s, size_t n)
{
    size_t l = strlen(dst);
    if (l + n < cap) {
        memcpy(dst + l, s, n);
        dst[l + n] = 0;
    }
}

/* Feeds `model_text` (then EOS) as the model's greedy choices and collects the events. */
static int run_forced(const char *model_text, bool start_in_reasoning, struct output *o)
{
    memset(o, 0, sizeof *o);
    struct dsd_err err = {{0}};
    struct dsd_tok_ids ids = {0};
    if (dsd_tokenizer_encode(g_tok, model_text, strlen(model_text), DSD_TOK_PARSE_SPECIAL, &ids, &err) < 0)
        return -1;
    static const char eos_str[] = "<｜end▁of▁sentence｜>";    /* the fixture has no tokenizer_config.json */
    int32_t eos = dsd_tokenizer_token_id(g_tok, eos_str, sizeof eos_str - 1);
    if (eos < 0 || dsd_tok_ids_push(&ids, eos) < 0)
        return -1;
    struct dsd_model_config cfg = {0};
    cfg.vocab_size = dsd_tokenizer_n_ids(g_tok);
    cfg.eos_token_id = eos;
    struct dsd_engine_request req = {
        .sampling = dsd_sampling_default_params(),   /* greedy */
        .max_tokens = 100000,
        .chat = true,
        .start_in_reasoning = start_in_reasoning,
    };
    struct dsd_generation *g;
    if (dsd_generation_new(&req, g_tok, &cfg, &g, &err) < 0) {
        fprintf(stderr, "generation: %s\n", err.msg);
        return -1;
    }
    float *logits = calloc((size_t)cfg.vocab_size, sizeof *logits);
    for (size_t i = 0; i < ids.len && !dsd_generation_finished(g); i++) {
        struct dsd_engine_event *ev = calloc(1, sizeof *ev);
        ev->kind = DSD_EV_TOKENS;
        ev->stop_token = -1;
        memset(logits, 0, (size_t)cfg.vocab_size * sizeof *logits);
        logits[ids.ids[i]] = 10.0f;
        int32_t tok = dsd_generation_step(g, logits, (int64_t)i + 1, 1 << 20, ev);
        if (tok != ids.ids[i])
            fprintf(stderr, "step %zu sampled %d, forced %d\n", i, tok, ids.ids[i]);
        o->n_events++;
        o->n_ids += ev->n_ids;
        append(o->reasoning, sizeof o->reasoning, ev->reasoning ? ev->reasoning : "", ev->reasoning_len);
        append(o->content, sizeof o->content, ev->text ? ev->text : "", ev->text_len);
        if (ev->tool_error_len) {
            if (o->tool_error[0])
                append(o->tool_error, sizeof o->tool_error, "\n", 1);
            append(o->tool_error, sizeof o->tool_error, ev->tool_error, ev->tool_error_len);
        }
        for (int k = 0; k < ev->n_tools; k++) {
            o->n_tool_items++;
            append(o->tool_name, sizeof o->tool_name, ev->tools[k].name, strlen(ev->tools[k].name));
            append(o->tool_args, sizeof o->tool_args, ev->tools[k].arguments, strlen(ev->tools[k].arguments));
        }
        if (ev->kind == DSD_EV_DONE)
            o->finish = ev->finish;
        dsd_engine_event_free(ev);
    }
    int rc = dsd_generation_finished(g) ? 0 : -1;
    free(logits);
    dsd_generation_free(g);
    dsd_tok_ids_free(&ids);
    return rc;
}

#define CALL(name, param, value)                                                               \
    "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"" name "\">\n"                       \
    "<｜DSML｜parameter name=\"" param "\" string=\"true\">" value "</｜DSML｜parameter>\n"      \
    "</｜DSML｜invoke>\n</｜DSML｜function_calls>"

TEST(reasoning_content_and_a_tool_call)
{
    struct output o;
    ASSERT_EQ_INT(run_forced("The user wants the weather.</think>Let me look.",
                             true, &o), 0);
    ASSERT_EQ_STR(o.reasoning, "The user wants the weather.");
    ASSERT_EQ_STR(o.content, "Let me look.");
    ASSERT_EQ_INT(o.finish, DSD_FINISH_STOP);

    ASSERT_EQ_INT(run_forced("Checking.</think>Sure." CALL("get_weather", "city", "Paris"), true, &o), 0);
    ASSERT_EQ_STR(o.reasoning, "Checking.");
    ASSERT_TRUE(strncmp(o.content, "Sure.", 5) == 0);
    ASSERT_TRUE(strstr(o.content, "DSML") == NULL);
    ASSERT_EQ_INT(o.n_tool_items, 1);
    ASSERT_EQ_STR(o.tool_name, "get_weather");
    ASSERT_EQ_STR(o.tool_args, "{\"city\": \"Paris\"}");
    ASSERT_EQ_STR(o.tool_error, "");
    ASSERT_EQ_INT(o.finish, DSD_FINISH_TOOL_CALLS);
}

TEST(an_unreadable_tool_call_is_reported_and_never_leaks)
{
    struct output o;
    /* string="false" promises JSON; "{oops" is not. */
    ASSERT_EQ_INT(run_forced("Sure.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
                             "<｜DSML｜parameter name=\"n\" string=\"false\">{oops</｜DSML｜parameter>\n"
                             "</｜DSML｜invoke>\n</｜DSML｜function_calls>",
                             false, &o), 0);
    printf("  content %s | tool error: %s\n", o.content, o.tool_error);
    ASSERT_TRUE(o.tool_error[0] != 0);
    ASSERT_TRUE(strstr(o.content, "DSML") == NULL && strstr(o.content, "oops") == NULL);
    ASSERT_TRUE(strncmp(o.content, "Sure.", 5) == 0);
    ASSERT_EQ_INT(o.n_tool_items, 0);
    ASSERT_EQ_INT(o.finish, DSD_FINISH_STOP);

    /* Cut off inside a call (max_tokens would do the same): reported at the end. */
    ASSERT_EQ_INT(run_forced("a<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter",
                             false, &o), 0);
    ASSERT_TRUE(o.tool_error[0] != 0);
    ASSERT_EQ_STR(o.content, "a");
    ASSERT_EQ_INT(o.n_tool_items, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s TOKENIZER_JSON\n", argv[0]);
        return 2;
    }
    struct dsd_err err = {{0}};
    if (dsd_tokenizer_load(&g_tok, argv[1], &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(reasoning_content_and_a_tool_call);
    RUN(an_unreadable_tool_call_is_reported_and_never_leaks);
    dsd_tokenizer_free(g_tok);
    return test_report();
}
