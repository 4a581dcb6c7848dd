/*
 * daemon/text/detokenizer.h: token ids in, text deltas out, one token at a time, for
 * streaming a generation to a client.
 *
 *   const char *stops[] = {"\n\nUser:", "###"};
 *   struct dsd_detok_opts o = {.flags = DSD_DETOK_SKIP_SPECIAL, .stop = stops, .n_stop = 2};
 *   struct dsd_detok *d;
 *   if (dsd_detok_new(&d, tok, &o, &err) < 0) ...
 *   struct dsd_tok_text delta = {0};
 *   for each sampled id:
 *       delta.len = 0;
 *       int r = dsd_detok_feed(d, id, &delta, &err);
 *       if (r < 0) ...                    // id outside the vocabulary; d is unchanged
 *       if (delta.len) send(delta.data, delta.len);
 *       if (r == DSD_DETOK_STOP) break;   // stop string stops[dsd_detok_stop_index(d)]
 *   at the end of generation (EOS, length limit), unless stopped:
 *       delta.len = 0; dsd_detok_finish(d, &delta, &err); send what it gives
 *   dsd_detok_free(d); dsd_tok_text_free(&delta);
 *
 * What the deltas promise:
 *  - Each delta is valid UTF-8 and never splits a character: bytes of a character that
 *    the tokens so far leave incomplete are held back until a later token completes it.
 *  - Ill-formed bytes (a token sequence the model should not produce, but can) become
 *    U+FFFD, one per maximal ill-formed part, as soon as they cannot become a character;
 *    dsd_detok_finish() turns a still incomplete tail into U+FFFD. So without stop
 *    strings the concatenated deltas equal dsd_tokenizer_decode(all ids, DSD_TOK_LOSSY)
 *    exactly, however the ids are split across calls.
 *  - Stop strings are matched in the text, across token boundaries. Text is held back only
 *    while its end could still be the start of a stop string; the moment that is no longer
 *    possible it is released. When a stop string completes, the deltas end exactly where
 *    it starts (the stop string itself is never sent) and the detokenizer is stopped. When
 *    several stop strings complete, the one ending first wins, and of those the longest.
 *  - With DSD_DETOK_SKIP_SPECIAL, added tokens marked "special" (begin/end of sentence,
 *    padding, ...) produce no text, as if they were not there; other added tokens
 *    (<｜User｜>, tool-call markers) always produce their text.
 *
 * A detokenizer belongs to one generation; it is not thread-safe (use one per stream).
 * Each holds a pointer to the tokenizer, which must outlive it.
 */
#ifndef DSD_TEXT_DETOKENIZER_H
#define DSD_TEXT_DETOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "tokenizer.h"

#define DSD_DETOK_SKIP_SPECIAL 1u

struct dsd_detok_opts {
    unsigned flags;          /* DSD_DETOK_SKIP_SPECIAL */
    const char *const *stop; /* n_stop NUL-terminated UTF-8 stop strings; copied */
    size_t n_stop;
};

struct dsd_detok;

/* feed/finish results */
#define DSD_DETOK_MORE 0 /* keep feeding */
#define DSD_DETOK_STOP 1 /* a stop string matched; nothing more will be emitted */

/* Creates a detokenizer. opts may be NULL (no flags, no stop strings).
 * Returns 0, -EINVAL (a stop string is empty or not valid UTF-8; err names it) or -ENOMEM. */
int dsd_detok_new(struct dsd_detok **out, const struct dsd_tokenizer *tok,
                  const struct dsd_detok_opts *opts, struct dsd_err *err);

/* Feeds one id and appends whatever text became final to delta (possibly nothing).
 * Returns DSD_DETOK_MORE, DSD_DETOK_STOP (now or earlier: once stopped every call returns
 * it and appends nothing), -ERANGE (id is not in the vocabulary: nothing changed) or
 * -ENOMEM (the detokenizer may have lost text; do not reuse it). */
int dsd_detok_feed(struct dsd_detok *d, int32_t id, struct dsd_tok_text *delta,
                   struct dsd_err *err);

/* The generation is over: appends all held text (an incomplete character as U+FFFD, the
 * start of a stop string as the text it is). Returns DSD_DETOK_MORE, DSD_DETOK_STOP (a
 * stop string ended in that last U+FFFD, or the detokenizer had stopped before) or
 * -ENOMEM. Feeding after finish starts a new text after what was flushed. */
int dsd_detok_finish(struct dsd_detok *d, struct dsd_tok_text *delta, struct dsd_err *err);

/* Index into opts->stop of the stop string that matched, or -1. */
int dsd_detok_stop_index(const struct dsd_detok *d);

void dsd_detok_free(struct dsd_detok *d);

#endif
