/*
 * daemon/text/output_parser.h: one streaming state machine that splits DeepSeek V3.2's output
 * text into content, reasoning and DSML tool calls.
 *
 *   static int on_event(void *user, const struct dsd_output_event *ev) {
 *       switch (ev->kind) {
 *       case DSD_OUTPUT_CONTENT:   send_content(ev->text, ev->len); break;
 *       case DSD_OUTPUT_REASONING: send_reasoning(ev->text, ev->len); break;
 *       case DSD_OUTPUT_TOOL_CALL: send_call(ev->tool_index, ev->name, ev->arguments_json); break;
 *       case DSD_OUTPUT_ERROR:     send_error(ev->text); break;
 *       }
 *       return 0;                  // non-zero stops the parser and is returned by feed/finish
 *   }
 *   struct dsd_output_parser_options opt = {
 *       .start_in_reasoning = dsd_chat_prompt_opens_reasoning(prompt, prompt_len) };
 *   struct dsd_output_parser *p;
 *   dsd_output_parser_create(&opt, on_event, ctx, &p, &err);
 *   while (more text)  dsd_output_parser_feed(p, delta, delta_len, &err);   // any split
 *   dsd_output_parser_finish(p, &err);                                       // end of output
 *   dsd_output_parser_free(p);
 *
 * What it recognises (docs/CHAT.md has the full grammar and examples):
 *   - "<think>" ... "</think>": reasoning. start_in_reasoning says the prompt already opened it.
 *     The tags themselves never appear in deltas (a stray one is dropped).
 *   - "<｜DSML｜function_calls>" invokes "</｜DSML｜function_calls>": tool calls; each
 *     "<｜DSML｜invoke name=\"N\">" holds "<｜DSML｜parameter name=\"K\" string=\"true|false\">V
 *     </｜DSML｜parameter>" elements (raw text or JSON), or one JSON object, or nothing
 *     ("<｜DSML｜invoke name=\"N\"/>"). Invokes without the wrapper are accepted, and so is
 *     a wrapper that is never closed once its invokes are complete; V4's "tool_calls" block
 *     name is accepted too. The "\n\n" the format puts before a block is not content.
 *   - A tool block interrupts reasoning (V3.2 sometimes calls tools before "</think>"); after
 *     the block the text is reasoning again until "</think>".
 *   - "<｜end▁of▁sentence｜>" ends the output; text after it is an error and dropped.
 * Guarantees:
 *   - A TOOL_CALL event comes once, when its invoke is closed, with complete arguments (a JSON
 *     object). Nothing of a call is streamed before that.
 *   - Raw DSML never reaches content or reasoning: a malformed or unterminated call is an
 *     ERROR event (fail closed) and parsing resumes after it, so the stream never wedges.
 *   - Text that might be the start of a marker is held back only while it still can become
 *     one; finish() releases it.
 *   - Deltas are valid UTF-8 and never split a character. Invalid input bytes become U+FFFD
 *     (one per maximal invalid subsequence, as Python's errors="replace" does).
 *   - The events, with adjacent deltas of one kind merged, do not depend on how the text was
 *     split across feed() calls.
 */
#ifndef DSD_TEXT_OUTPUT_PARSER_H
#define DSD_TEXT_OUTPUT_PARSER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

enum dsd_output_event_kind {
    DSD_OUTPUT_CONTENT = 1,
    DSD_OUTPUT_REASONING,
    DSD_OUTPUT_TOOL_CALL,
    DSD_OUTPUT_ERROR,
};

/* Everything a callback sees is borrowed and valid only during the callback. */
struct dsd_output_event {
    enum dsd_output_event_kind kind;
    const char *text;            /* CONTENT/REASONING: the delta; ERROR: the message (NUL-ended) */
    size_t len;
    int tool_index;              /* TOOL_CALL: 0 for the first call of the output, 1, ... */
    const char *name;            /* TOOL_CALL: the function name (NUL-terminated) */
    size_t name_len;
    const json_t *arguments;     /* TOOL_CALL: a JSON object */
    const char *arguments_json;  /* TOOL_CALL: the same as JSON text, json.dumps style */
    size_t arguments_len;
};

typedef int (*dsd_output_event_fn)(void *user, const struct dsd_output_event *ev);

struct dsd_output_parser_options {
    /* The prompt ended with "<think>": output starts as reasoning. */
    bool start_in_reasoning;
    /* Largest single tool call (open tag to close tag) kept while waiting for its end;
     * 0 = 16 MiB. A larger one is an ERROR event and is skipped. */
    size_t max_tool_call_bytes;
};

struct dsd_output_parser;

/* opt may be NULL (defaults). 0 or -ENOMEM. */
int dsd_output_parser_create(const struct dsd_output_parser_options *opt,
                             dsd_output_event_fn on_event, void *user,
                             struct dsd_output_parser **out, struct dsd_err *err);

/* Feeds the next bytes of output (any split, even inside a UTF-8 character). Returns 0,
 * -ENOMEM, -EINVAL after finish(), or the first non-zero value a callback returned (after
 * which only free() may be called). */
int dsd_output_parser_feed(struct dsd_output_parser *p, const char *bytes, size_t len,
                           struct dsd_err *err);

/* The output is complete: releases held-back text and reports anything left unterminated.
 * Same returns as feed(). */
int dsd_output_parser_finish(struct dsd_output_parser *p, struct dsd_err *err);

/* How many TOOL_CALL events were emitted so far (for finish_reason "tool_calls"). */
int dsd_output_parser_tool_calls(const struct dsd_output_parser *p);

void dsd_output_parser_free(struct dsd_output_parser *p);

#endif
