/*
 * daemon/text/chat_json.h: JSON text exactly as Python's json.dumps(value, ensure_ascii=False)
 * writes it.
 *
 * DeepSeek's official V3.2 encoder renders tool schemas, response formats and non-string
 * tool-call arguments with Python's json.dumps, and the model was trained on that text, so
 * the prompt must match it byte for byte. Jansson's own encoder differs (separators, float
 * formatting, escapes), which is why this file exists. The rules reproduced here:
 *   - separators ", " between items and ": " after keys, no newlines, keys in insertion
 *     order (Jansson keeps it; a duplicate key keeps its first position, last value, as a
 *     Python dict does);
 *   - strings: \" \\ \n \r \t \b \f as two-character escapes, other bytes below 0x20 as
 *     \u00xx (lower-case hex), everything else (DEL and all non-ASCII) written raw;
 *   - integers in decimal; reals as Python's repr(float): the shortest digits that read
 *     back to the same double, fixed notation when the decimal exponent is in [-4, 16),
 *     else d.ddde+XX, and a ".0" on integral values ("1.0", "1e+16", "1e-05").
 *
 *   struct dsd_chat_buf out = {0};
 *   if (dsd_chat_json_dump(&out, schema, &err) < 0) ...;
 *
 * Jansson cannot hold integers beyond int64 or NaN/Infinity, so those never reach here
 * (Python would accept them; the caller's JSON parse rejects them first).
 */
#ifndef DSD_TEXT_CHAT_JSON_H
#define DSD_TEXT_CHAT_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "chat_buf.h"
#include "err.h"

/* Appends the text of v. Returns 0, -EINVAL (nesting deeper than 2048, or a value of an
 * unknown type), or -ENOMEM; err says which. */
int dsd_chat_json_dump(struct dsd_chat_buf *out, const json_t *v, struct dsd_err *err);

/* Appends s[0..len) as a quoted, escaped JSON string. 0 or -ENOMEM. */
int dsd_chat_json_dump_string(struct dsd_chat_buf *out, const char *s, size_t len);

/* Writes Python's repr(x) for a double into out (always fits in 32 bytes, NUL-terminated);
 * returns its length. NaN and infinities are written as json.dumps does: NaN, Infinity. */
int dsd_chat_json_format_real(double x, char out[32]);

#endif
