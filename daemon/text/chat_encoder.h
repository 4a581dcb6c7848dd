/*
 * daemon/text/chat_encoder.h: turns an OpenAI-shaped chat request into the exact prompt text
 * DeepSeek V3.2 was trained on (the rules of DeepSeek's official encoding_dsv32.py; see
 * docs/CHAT.md for every rule and each deliberate difference).
 *
 *   struct dsd_chat_options opt = { .thinking = true };
 *   char *prompt; size_t len;
 *   struct dsd_err err;
 *   if (dsd_chat_encode_json(body, body_len, &opt, &prompt, &len, &err) < 0)
 *       reply_error(err.msg);            // names the message index and the field
 *   ... tokenize prompt[0..len) with special tokens recognised ...
 *   free(prompt);
 *
 * The request is a JSON object:
 *   {"messages": [...], "tools": [...], "response_format": {...}}
 * Other top-level keys (model, temperature, ...) are ignored. Messages:
 *   {"role": "system",    "content": str|null, "tools"?: [...], "response_format"?: {...}}
 *   {"role": "developer", "content": str (non-empty), "tools"?, "response_format"?}
 *   {"role": "user",      "content": str}
 *   {"role": "assistant", "content"?: str|null, "reasoning_content"?: str|null,
 *                         "tool_calls"?: [{"id"?, "type"?, "function": {"name": str,
 *                                          "arguments": JSON-object-text | object}}]}
 *   {"role": "tool",      "content": str, "tool_call_id"?: str|null}
 * "content" may also be a list of {"type": "text", "text": str} parts, joined with one space.
 * Request-level "tools" and "response_format" belong to the system prompt: they are attached
 * to messages[0] when it is a system message, else to an empty system message placed first
 * (which renders as nothing by itself). {"type": "text"} as request-level response_format
 * means "no format" and adds nothing.
 *
 * Everything that the official encoder would reject, render as "None", or silently mis-render
 * is an error here (-EINVAL), never a guess: unknown or missing role, missing content, wrong
 * JSON types, tool-call arguments that are not a JSON object, tool results without a
 * preceding assistant tool call or fewer/more results than calls, an assistant message after
 * the last user message in thinking mode with neither reasoning nor tool calls.
 */
#ifndef DSD_TEXT_CHAT_ENCODER_H
#define DSD_TEXT_CHAT_ENCODER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct dsd_chat_options {
    /* Thinking mode: the prompt for the next reply ends with "<think>" and the reasoning of
     * the current agent loop (assistant turns after the last user message) is kept. Off:
     * chat mode, the prompt ends with "</think>". Reasoning of earlier turns is always
     * dropped, as the official encoder does in both modes. */
    bool thinking;
    /* Leave out the leading "<｜begin▁of▁sentence｜>" (for a tokenizer that adds BOS). */
    bool omit_bos;
};

/*
 * Encodes request (a JSON object as above) into *out_prompt (malloc'd, NUL-terminated,
 * *out_len bytes without the NUL; it may contain NUL bytes when the input did). opt may be
 * NULL (chat mode, with BOS).
 * Returns 0; -EINVAL for a malformed request (err names messages[i] and the field);
 * -ENOMEM.
 */
int dsd_chat_encode(const json_t *request, const struct dsd_chat_options *opt, char **out_prompt,
                    size_t *out_len, struct dsd_err *err);

/* A prompt with the byte ranges that came from the encoder's own markup (role markers,
 * DSML tags, think tags, BOS...), sorted and disjoint. Everything outside them came from the
 * request (message text, tool schemas, arguments). Tokenize with special tokens recognized
 * only inside markup (dsd_tokenizer_encode_marked()): a user who writes "<｜Assistant｜>"
 * in a message gets that text, not the control token (prompt-injection safety), while a
 * benign prompt tokenizes exactly as the official pipeline tokenizes the whole string. */
struct dsd_chat_range {
    size_t start, end;
};

struct dsd_chat_prompt {
    char *text;                  /* malloc'd, NUL-terminated */
    size_t len;
    struct dsd_chat_range *markup;
    size_t n_markup;
};

/* dsd_chat_encode() that also reports the markup ranges. Same returns; free *out with
 * dsd_chat_prompt_free() (also after a failure, which leaves it empty). */
int dsd_chat_encode_marked(const json_t *request, const struct dsd_chat_options *opt,
                           struct dsd_chat_prompt *out, struct dsd_err *err);
void dsd_chat_prompt_free(struct dsd_chat_prompt *p);

/* The same from JSON text. A parse error is -EINVAL with Jansson's line/column. */
int dsd_chat_encode_json(const char *json, size_t json_len, const struct dsd_chat_options *opt,
                         char **out_prompt, size_t *out_len, struct dsd_err *err);

/* True when the prompt ends with "<think>": the model's output then starts inside reasoning
 * (the output parser's start_in_reasoning). */
bool dsd_chat_prompt_opens_reasoning(const char *prompt, size_t len);

#endif
