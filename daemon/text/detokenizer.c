/*
 * Streaming detokenizer (contract in detokenizer.h). Two holding stages:
 *   tail     0..3 bytes that begin a character the next token may complete
 *   pending  valid UTF-8 not yet sent, only ever the part that could be the beginning of a
 *            stop string (so it stays shorter than the longest stop string)
 * A token's bytes go: tail + bytes -> well-formed text (ill-formed parts as U+FFFD, a new
 * incomplete end back into tail) -> pending -> stop-string check -> release.
 */
#include "detokenizer.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

struct dsd_detok {
    const struct dsd_tokenizer *tok;
    unsigned flags;
    char **stop;
    size_t *stop_len;
    size_t n_stop;
    uint8_t tail[4];
    size_t tail_len;
    struct dsd_tok_text pending;
    struct dsd_tok_text scratch; /* tail + the token being fed */
    int stop_index;
    bool stopped;
};

int dsd_detok_new(struct dsd_detok **out, const struct dsd_tokenizer *tok,
                  const struct dsd_detok_opts *opts, struct dsd_err *err)
{
    *out = NULL;
    struct dsd_detok *d = calloc(1, sizeof *d);
    if (!d)
        return dsd_errf(err, -ENOMEM, "out of memory");
    d->tok = tok;
    d->stop_index = -1;
    size_t n = opts ? opts->n_stop : 0;
    d->flags = opts ? opts->flags : 0;
    if (n) {
        d->stop = calloc(n, sizeof *d->stop);
        d->stop_len = calloc(n, sizeof *d->stop_len);
        if (!d->stop || !d->stop_len)
            goto nomem;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = opts->stop[i];
        size_t len = s ? strlen(s) : 0;
        if (len == 0) {
            dsd_detok_free(d);
            return dsd_errf(err, -EINVAL, "stop string %zu is empty", i);
        }
        if (dsd_utf8_valid_prefix((const uint8_t *)s, len) != len) {
            dsd_detok_free(d);
            return dsd_errf(err, -EINVAL, "stop string %zu is not valid UTF-8", i);
        }
        if (!(d->stop[i] = strdup(s)))
            goto nomem;
        d->stop_len[i] = len;
        d->n_stop = i + 1;
    }
    *out = d;
    return 0;
nomem:
    dsd_detok_free(d);
    return dsd_errf(err, -ENOMEM, "out of memory");
}

void dsd_detok_free(struct dsd_detok *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_stop; i++)
        free(d->stop[i]);
    free(d->stop);
    free(d->stop_len);
    dsd_tok_text_free(&d->pending);
    dsd_tok_text_free(&d->scratch);
    free(d);
}

int dsd_detok_stop_index(const struct dsd_detok *d)
{
    return d->stop_index;
}

/* Appends bytes to pending as well-formed text; an incomplete end goes to d->tail unless
 * final. */
static int absorb(struct dsd_detok *d, const uint8_t *s, size_t n, bool final)
{
    size_t i = 0;
    while (i < n) {
        size_t run = dsd_utf8_valid_prefix(s + i, n - i);
        if (dsd_tok_text_append(&d->pending, (const char *)s + i, run) < 0)
            return -ENOMEM;
        i += run;
        if (i >= n)
            break;
        size_t len;
        if (dsd_utf8_scan(s + i, n - i, &len) == DSD_UTF8_TRUNCATED && !final) {
            memcpy(d->tail, s + i, len); /* len <= 3: only the very end can be truncated */
            d->tail_len = len;
            return 0;
        }
        if (dsd_tok_text_append(&d->pending, DSD_UTF8_REPLACEMENT, 3) < 0)
            return -ENOMEM;
        i += len;
    }
    return 0;
}

/* Looks for a stop string ending in pending[from+1 .. len]; the first end wins, then the
 * longest. Returns its index or -1, and where it starts. */
static int find_stop(const struct dsd_detok *d, size_t from, size_t *start)
{
    const char *p = d->pending.data;
    for (size_t end = from + 1; end <= d->pending.len; end++) {
        int best = -1;
        for (size_t k = 0; k < d->n_stop; k++) {
            size_t len = d->stop_len[k];
            if (len > end || p[end - 1] != d->stop[k][len - 1])
                continue;
            if (memcmp(p + end - len, d->stop[k], len) == 0 &&
                (best < 0 || len > d->stop_len[best]))
                best = (int)k;
        }
        if (best >= 0) {
            *start = end - d->stop_len[best];
            return best;
        }
    }
    return -1;
}

/* Length of the longest suffix of pending that is a proper prefix of a stop string. */
static size_t held_suffix(const struct dsd_detok *d)
{
    size_t longest = 0;
    for (size_t k = 0; k < d->n_stop; k++) {
        size_t max = d->stop_len[k] - 1;
        if (max > d->pending.len)
            max = d->pending.len;
        for (size_t len = max; len > longest; len--)
            if (memcmp(d->pending.data + d->pending.len - len, d->stop[k], len) == 0) {
                longest = len;
                break;
            }
    }
    return longest;
}

/* Moves pending[0..n) to delta and keeps the rest. */
static int release(struct dsd_detok *d, size_t n, struct dsd_tok_text *delta)
{
    if (n == 0)
        return 0;
    if (dsd_tok_text_append(delta, d->pending.data, n) < 0)
        return -ENOMEM;
    memmove(d->pending.data, d->pending.data + n, d->pending.len - n);
    d->pending.len -= n;
    d->pending.data[d->pending.len] = 0;
    return 0;
}

/* After text was appended to pending from offset `from`: stop, or release what is safe. */
static int settle(struct dsd_detok *d, size_t from, bool final, struct dsd_tok_text *delta)
{
    if (d->n_stop) {
        size_t start;
        int k = find_stop(d, from, &start);
        if (k >= 0) {
            d->stopped = true;
            d->stop_index = k;
            int rc = release(d, start, delta);
            dsd_tok_text_free(&d->pending);
            d->tail_len = 0;
            return rc < 0 ? rc : DSD_DETOK_STOP;
        }
    }
    size_t hold = final ? 0 : held_suffix(d);
    if (release(d, d->pending.len - hold, delta) < 0)
        return -ENOMEM;
    return DSD_DETOK_MORE;
}

int dsd_detok_feed(struct dsd_detok *d, int32_t id, struct dsd_tok_text *delta,
                   struct dsd_err *err)
{
    if (d->stopped)
        return DSD_DETOK_STOP;
    size_t len;
    const char *piece = dsd_tokenizer_piece(d->tok, id, &len);
    if (!piece)
        return dsd_errf(err, -ERANGE, "token id %d is not in the vocabulary", id);
    if ((d->flags & DSD_DETOK_SKIP_SPECIAL) && dsd_tokenizer_is_special(d->tok, id))
        return DSD_DETOK_MORE;

    /* Re-reading the held tail together with the new bytes gives exactly what reading the
     * whole byte stream at once would: UTF-8 decisions never look further back than the
     * start of the character being decided. */
    d->scratch.len = 0;
    if (dsd_tok_text_append(&d->scratch, (const char *)d->tail, d->tail_len) < 0 ||
        dsd_tok_text_append(&d->scratch, piece, len) < 0)
        return dsd_errf(err, -ENOMEM, "out of memory");
    d->tail_len = 0;
    size_t from = d->pending.len;
    int rc = absorb(d, (const uint8_t *)d->scratch.data, d->scratch.len, false);
    if (rc >= 0)
        rc = settle(d, from, false, delta);
    if (rc < 0)
        return dsd_errf(err, -ENOMEM, "out of memory");
    return rc;
}

int dsd_detok_finish(struct dsd_detok *d, struct dsd_tok_text *delta, struct dsd_err *err)
{
    if (d->stopped)
        return DSD_DETOK_STOP;
    size_t from = d->pending.len;
    uint8_t tail[4];
    size_t n = d->tail_len;
    memcpy(tail, d->tail, n);
    d->tail_len = 0;
    int rc = absorb(d, tail, n, true);
    if (rc >= 0)
        rc = settle(d, from, true, delta);
    if (rc < 0)
        return dsd_errf(err, -ENOMEM, "out of memory");
    return rc;
}
