/*
 * daemon/text/tokenizer.h: DeepSeek's byte-level BPE tokenizer, read from the
 * tokenizer.json the model hub ships, giving the same ids as Hugging Face's tokenizers.
 *
 *   struct dsd_err err = {0};
 *   struct dsd_tokenizer *tok;
 *   if (dsd_tokenizer_load(&tok, "/models/V3.2/tokenizer.json", &err) < 0)
 *       die("%s", err.msg);                      // names what is wrong with the file
 *
 *   struct dsd_tok_ids ids = {0};                  // caller-owned, grows as needed
 *   if (dsd_tokenizer_bos_id(tok) >= 0 && dsd_tokenizer_add_bos(tok))
 *       dsd_tok_ids_push(&ids, dsd_tokenizer_bos_id(tok));
 *   dsd_tokenizer_encode(tok, user_text, strlen(user_text), 0, &ids, &err);   // text only
 *   dsd_tokenizer_encode(tok, "<｜Assistant｜>", 17, DSD_TOK_PARSE_SPECIAL, &ids, &err);
 *
 *   struct dsd_tok_text text = {0};
 *   dsd_tokenizer_decode(tok, ids.ids, ids.len, DSD_TOK_LOSSY, &text, &err);
 *   printf("%s\n", text.data);
 *   dsd_tok_text_free(&text); dsd_tok_ids_free(&ids); dsd_tokenizer_free(tok);
 *
 * Special-token strings are text unless asked (prompt-injection safety). Encoding never
 * turns a piece of the input into an added token (ids like <｜User｜>, <｜end▁of▁sentence｜>
 * and every other entry of "added_tokens", special or not) unless the caller passes
 * DSD_TOK_PARSE_SPECIAL. Without the flag "<｜User｜>" in a user message is encoded as the
 * ordinary text it is, so a client cannot forge turns, tool results or end of sequence;
 * the chat encoder adds the real control tokens itself. With the flag, added tokens are
 * matched before any splitting exactly as Hugging Face does by default (leftmost-longest,
 * non-normalized tokens first, then normalized ones; lstrip/rstrip/single_word honored),
 * and the ids equal Hugging Face's `encode(text, add_special_tokens=False)`.
 *
 * Invalid UTF-8 is encoded, never refused, and comes back byte for byte. Each maximal
 * ill-formed part (utf8.h) is cut out of the text; the well-formed text on either side is
 * encoded as if the cut were the end and the start of the input, and each byte of the cut
 * becomes that byte's own byte-level token (the 256 single-byte tokens every byte-level
 * vocabulary has). So decode(encode(x)) == x for every byte string x, and the encoding of
 * a well-formed string never changes. Decoding returns the exact bytes, or with
 * DSD_TOK_LOSSY valid UTF-8 with each ill-formed part replaced by U+FFFD (Hugging Face's
 * decode does the same).
 *
 * Threads: a loaded tokenizer is never modified; any number of threads may encode and
 * decode with it at once. Each call allocates its own scratch space, and each thread that
 * encodes keeps a 256 KiB cache of recent pieces (freed when the thread exits).
 *
 * What is supported (anything else is a load error naming it): model BPE with byte-level
 * symbols (all 256 present), merges as "a b" strings or ["a", "b"] pairs, optional
 * ignore_merges; normalizer null or an empty Sequence; pre_tokenizer Split (Regex or String
 * pattern, any behavior, invert) steps and a final ByteLevel (add_prefix_space false,
 * use_regex either), alone or in a Sequence; decoder ByteLevel or null. The post_processor
 * is ignored: BOS is the caller's (dsd_tokenizer_add_bos()).
 */
#ifndef DSD_TEXT_TOKENIZER_H
#define DSD_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct dsd_tokenizer;

/* A growable id array; zero-initialize, encode appends, free with dsd_tok_ids_free(). */
struct dsd_tok_ids {
    int32_t *ids;
    size_t len, cap;
};

/* A growable byte string, always NUL-terminated once data != NULL (the bytes themselves
 * may contain NULs: use len). Zero-initialize; free with dsd_tok_text_free(). */
struct dsd_tok_text {
    char *data;
    size_t len, cap;
};

/* Encode flags. */
#define DSD_TOK_PARSE_SPECIAL 1u /* match added-token strings in the input (see above) */

/* Decode flags. */
#define DSD_TOK_SKIP_SPECIAL 1u /* drop added tokens marked "special": true */
#define DSD_TOK_LOSSY 2u        /* ill-formed UTF-8 becomes U+FFFD: output is valid UTF-8 */

/* Loads path, a tokenizer.json or a directory holding one, and tokenizer_config.json
 * from the same directory when it exists (bos/eos tokens, add_bos_token).
 * Returns 0 and sets *out, or:
 *   -ENOENT / -EACCES / -EIO  a file cannot be read
 *   -EINVAL   the file is not JSON or not a tokenizer we support; err names the field
 *   -ENOMEM   out of memory */
int dsd_tokenizer_load(struct dsd_tokenizer **out, const char *path, struct dsd_err *err);

/* Same, from tokenizer.json text in memory (config_json may be NULL). For tests, fuzzers
 * and files the caller already read. */
int dsd_tokenizer_load_json(struct dsd_tokenizer **out, const char *json, size_t len,
                            const char *config_json, size_t config_len, struct dsd_err *err);

void dsd_tokenizer_free(struct dsd_tokenizer *tok);

/* Appends the ids of text[0..len) to out (no BOS/EOS). flags: DSD_TOK_PARSE_SPECIAL.
 * Returns the number of ids appended, or (out keeping what it had before the call):
 *   -ENOMEM   out of memory
 *   -E2BIG    a pre-tokenizer regex hit PCRE2's resource limits on this input (not seen
 *             with DeepSeek's patterns, even on megabyte-long runs; err says which limit) */
long dsd_tokenizer_encode(const struct dsd_tokenizer *tok, const char *text, size_t len,
                          unsigned flags, struct dsd_tok_ids *out, struct dsd_err *err);

/* A byte range [start, end) of an input. */
struct dsd_tok_range {
    size_t start, end;
};

/* Encodes like DSD_TOK_PARSE_SPECIAL, but an added token is matched only where it lies
 * entirely inside one of the n_special ranges (sorted by start, disjoint): the parts of a
 * prompt its builder wrote itself (the chat encoder's markup). Anywhere else its string is
 * ordinary text. For an input whose added-token strings all lie in the ranges this gives
 * exactly the ids of DSD_TOK_PARSE_SPECIAL on the whole input. Same returns. */
long dsd_tokenizer_encode_marked(const struct dsd_tokenizer *tok, const char *text, size_t len,
                                 const struct dsd_tok_range *special, size_t n_special,
                                 struct dsd_tok_ids *out, struct dsd_err *err);

/* Appends the text of ids to out. flags: DSD_TOK_SKIP_SPECIAL, DSD_TOK_LOSSY.
 * Returns the number of bytes appended, or:
 *   -ERANGE   an id is not in the vocabulary (err names it; out is unchanged)
 *   -ENOMEM */
long dsd_tokenizer_decode(const struct dsd_tokenizer *tok, const int32_t *ids, size_t n,
                          unsigned flags, struct dsd_tok_text *out, struct dsd_err *err);

/* The bytes id stands for (not NUL-terminated), or NULL when id is not in the vocabulary.
 * A vocabulary token may be part of a UTF-8 character; an added token is its content. */
const char *dsd_tokenizer_piece(const struct dsd_tokenizer *tok, int32_t id, size_t *len);

/* The id of a token by its string as written in tokenizer.json: an added token by its
 * content, a vocabulary entry in byte-level form ("Ġhello"); -1 when there is none. */
int32_t dsd_tokenizer_token_id(const struct dsd_tokenizer *tok, const char *str, size_t len);

/* One past the largest id (ids below it may be unused: dsd_tokenizer_piece() says). */
int32_t dsd_tokenizer_n_ids(const struct dsd_tokenizer *tok);

bool dsd_tokenizer_is_added(const struct dsd_tokenizer *tok, int32_t id);
bool dsd_tokenizer_is_special(const struct dsd_tokenizer *tok, int32_t id);

/* From tokenizer_config.json; -1 / false when it is absent or does not say. */
int32_t dsd_tokenizer_bos_id(const struct dsd_tokenizer *tok);
int32_t dsd_tokenizer_eos_id(const struct dsd_tokenizer *tok);
bool dsd_tokenizer_add_bos(const struct dsd_tokenizer *tok);

/* Buffer helpers; both return 0 or -ENOMEM. */
int dsd_tok_ids_push(struct dsd_tok_ids *v, int32_t id);
int dsd_tok_text_append(struct dsd_tok_text *t, const char *s, size_t n);
void dsd_tok_ids_free(struct dsd_tok_ids *v);
void dsd_tok_text_free(struct dsd_tok_text *t);

#endif
