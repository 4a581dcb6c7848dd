/*
 * Encoding and decoding with a loaded tokenizer (tables: tokenizer_internal.h).
 *
 * Encoding walks the input once, depth first, so nothing but the ids is materialized:
 *   well-formed UTF-8 runs  (ill-formed bytes become byte tokens, see tokenizer.h)
 *   -> added tokens, non-normalized ones first, then normalized ones in what is left
 *      (only with DSD_TOK_PARSE_SPECIAL)
 *   -> each pre-tokenizer Split step cuts every piece of the step before
 *   -> BPE merges per final piece (tokenizer_bpe.c).
 * The order of pieces is the order of the text, so ids come out in order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "utf8.h"

struct enc {
    const struct dsd_tokenizer *tok;
    struct dsd_tok_ids *out;
    struct tok_bpe_scratch bpe;
    pcre2_match_data *md;
    bool parse_special;
    const uint8_t *base;                    /* the whole input (for absolute offsets) */
    const struct dsd_tok_range *allow;      /* marked encoding: where added tokens may match */
    size_t n_allow;
    bool new_unicode; /* this run has code points PCRE2's tables lack: use re_new */
    int pcre_error;   /* with rc == -E2BIG */
    int rc; /* first error; once set, the walk unwinds without doing more */
};

/* ------------------------------------------------------------------------------------ */
/* Pre-tokenizer steps                                                                  */

static void pre_tokenize(struct enc *e, int step, const uint8_t *s, size_t n);

/* Hands one piece of step `step` to the next step (empty pieces vanish, as in HF). */
static inline void next_step(struct enc *e, int step, const uint8_t *s, size_t n)
{
    if (n)
        pre_tokenize(e, step + 1, s, n);
}

/* Applies a split behavior to the stream of (gap | match) segments of one piece. Holding
 * at most one pending segment is enough for all five behaviors. */
struct combiner {
    struct enc *e;
    int step;
    enum tok_split_behavior behavior;
    const uint8_t *base;
    size_t pend_start, pend_end; /* pending output piece */
    bool have_pend, pend_is_match, prev_is_match;
};

static void combine(struct combiner *c, size_t start, size_t end, bool is_match)
{
    switch (c->behavior) {
    case TOK_SPLIT_ISOLATED:
        next_step(c->e, c->step, c->base + start, end - start);
        break;
    case TOK_SPLIT_REMOVED:
        if (!is_match)
            next_step(c->e, c->step, c->base + start, end - start);
        break;
    case TOK_SPLIT_CONTIGUOUS: /* runs of adjacent matches become one piece */
    case TOK_SPLIT_MERGED_WITH_PREVIOUS: /* a match joins the gap before it */
        if (c->have_pend && ((c->behavior == TOK_SPLIT_CONTIGUOUS && is_match == c->prev_is_match) ||
                             (c->behavior == TOK_SPLIT_MERGED_WITH_PREVIOUS && is_match &&
                              !c->prev_is_match))) {
            c->pend_end = end;
        } else {
            if (c->have_pend)
                next_step(c->e, c->step, c->base + c->pend_start, c->pend_end - c->pend_start);
            c->pend_start = start;
            c->pend_end = end;
            c->have_pend = true;
        }
        c->prev_is_match = is_match;
        break;
    case TOK_SPLIT_MERGED_WITH_NEXT: /* a match joins the gap after it */
        if (c->have_pend) {
            if (!is_match) {
                next_step(c->e, c->step, c->base + c->pend_start, end - c->pend_start);
                c->have_pend = false;
                return;
            }
            next_step(c->e, c->step, c->base + c->pend_start, c->pend_end - c->pend_start);
            c->have_pend = false;
        }
        if (is_match) {
            c->pend_start = start;
            c->pend_end = end;
            c->have_pend = true;
        } else {
            next_step(c->e, c->step, c->base + start, end - start);
        }
        break;
    }
}

static void combine_end(struct combiner *c)
{
    if (c->have_pend)
        next_step(c->e, c->step, c->base + c->pend_start, c->pend_end - c->pend_start);
}

static int regex_match(struct enc *e, const struct tok_split *sp, const uint8_t *s, size_t n,
                       size_t off)
{
    int rc;
    const pcre2_code *re = e->new_unicode ? sp->re_new : sp->re;
    if (e->new_unicode ? sp->jit_new : sp->jit) {
        rc = pcre2_jit_match(re, s, n, off, 0, e->md, NULL);
        if (rc != PCRE2_ERROR_JIT_STACKLIMIT)
            return rc;
        /* The JIT's own stack ran out (only pathological patterns get there): the
         * interpreter keeps its backtracking frames on the heap instead. */
    }
    return pcre2_match(re, s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
}

static void pre_tokenize(struct enc *e, int step, const uint8_t *s, size_t n)
{
    if (e->rc)
        return;
    const struct dsd_tokenizer *tok = e->tok;
    if (step == tok->n_splits) {
        int rc = tok_bpe_word(tok, s, n, &e->bpe, e->out);
        if (rc < 0)
            e->rc = rc;
        return;
    }
    const struct tok_split *sp = &tok->splits[step];
    struct combiner c = {.e = e, .step = step, .behavior = sp->behavior, .base = s};
    size_t off = 0, prev = 0, last_end = SIZE_MAX;
    while (off <= n) {
        int rc = regex_match(e, sp, s, n, off);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            /* The interpreter's resource limits (only reached after the JIT's stack ran
             * out): refuse this input rather than tokenize it differently. */
            e->rc = -E2BIG;
            e->pcre_error = rc;
            return;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && me == last_end) {
            /* An empty match right where the last one ended would repeat forever: step one
             * character on and search again (what Hugging Face's regex iterator does). */
            if (off >= n)
                break;
            size_t cl;
            dsd_utf8_scan(s + off, n - off, &cl);
            off += cl;
            continue;
        }
        if (prev != ms)
            combine(&c, prev, ms, sp->invert);
        combine(&c, ms, me, !sp->invert);
        prev = last_end = me;
        off = me;
        if (e->rc)
            return;
    }
    if (prev != n)
        combine(&c, prev, n, sp->invert);
    combine_end(&c);
}

/* ------------------------------------------------------------------------------------ */
/* Added tokens                                                                         */

static bool is_white_space(uint32_t cp)
{
    /* Unicode's White_Space property (what Hugging Face's \s is). */
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Start of the character that ends at s[end] (s is well-formed). */
static size_t char_start_before(const uint8_t *s, size_t end)
{
    size_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

static bool is_word_char(struct enc *e, const uint8_t *c, size_t len)
{
    return pcre2_match(e->tok->word_char_re, c, len, 0, PCRE2_NO_UTF_CHECK, e->md, NULL) >= 0;
}

/* Longest added token of trie tr that starts at s[i]: its index, and *end; -1 if none. */
static int trie_longest(const struct tok_trie *tr, const uint8_t *s, size_t n, size_t i,
                        size_t *end)
{
    int found = -1;
    uint32_t node = 0;
    for (size_t j = i; j < n; j++) {
        uint32_t c = tr->nodes[node].child;
        while (c && tr->nodes[c].byte != s[j])
            c = tr->nodes[c].sibling;
        if (!c)
            break;
        node = c;
        if (tr->nodes[node].added >= 0) {
            found = tr->nodes[node].added;
            *end = j + 1;
        }
    }
    return found;
}

static void pass_added(struct enc *e, int pass, const uint8_t *s, size_t n);

/* Is [start, end) inside one of the allowed ranges (sorted, disjoint)? */
static bool in_allowed(const struct enc *e, size_t start, size_t end)
{
    size_t lo = 0, hi = e->n_allow;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (e->allow[mid].end <= start)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < e->n_allow && e->allow[lo].start <= start && end <= e->allow[lo].end;
}

static void after_pass(struct enc *e, int pass, const uint8_t *s, size_t n)
{
    if (!n)
        return;
    if (pass == 0)
        pass_added(e, 1, s, n);
    else
        pre_tokenize(e, 0, s, n);
}

/* Cuts the added tokens of one pass (0: non-normalized, 1: normalized) out of s with
 * leftmost-longest, non-overlapping matching and hands the rest on. */
static void pass_added(struct enc *e, int pass, const uint8_t *s, size_t n)
{
    const struct dsd_tokenizer *tok = e->tok;
    const struct tok_trie *tr = pass == 0 ? &tok->trie_raw : &tok->trie_normalized;
    if (tr->n == 0) {
        after_pass(e, pass, s, n);
        return;
    }
    size_t done = 0, i = 0;
    while (i < n && !e->rc) {
        if (tr->only_first >= 0) {
            /* All contents start with one byte (DeepSeek's all start with '<'). */
            const uint8_t *hit = memchr(s + i, tr->only_first, n - i);
            if (!hit)
                break;
            i = (size_t)(hit - s);
        } else if (!(tr->first[s[i] >> 6] >> (s[i] & 63) & 1)) {
            i++;
            continue;
        }
        size_t end;
        int a = trie_longest(tr, s, n, i, &end);
        if (a < 0) {
            i++;
            continue;
        }
        if (e->allow && !in_allowed(e, (size_t)(s - e->base) + i, (size_t)(s - e->base) + end)) {
            i++;    /* an added token's text outside the markup: it stays text */
            continue;
        }
        const struct tok_added *t = &tok->added[a];
        size_t start = i, stop = end;
        i = end; /* the next search starts after this match, whether or not it is kept */
        if (t->single_word) {
            bool before = start > 0 && is_word_char(e, s + char_start_before(s, start),
                                                    start - char_start_before(s, start));
            size_t cl = 0;
            if (stop < n)
                dsd_utf8_scan(s + stop, n - stop, &cl);
            bool after = stop < n && is_word_char(e, s + stop, cl);
            if (before || after)
                continue;
        }
        if (t->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t cs = char_start_before(s, ns);
                if (!is_white_space(dsd_utf8_decode(s + cs, ns - cs)))
                    break;
                ns = cs;
            }
            start = ns > done ? ns : done;
        }
        if (t->rstrip) {
            while (stop < n) {
                size_t cl;
                dsd_utf8_scan(s + stop, n - stop, &cl);
                if (!is_white_space(dsd_utf8_decode(s + stop, cl)))
                    break;
                stop += cl;
            }
        }
        /* As Hugging Face does, even in its odd corner: a match that starts inside
         * whitespace an rstrip token before it absorbed is kept (no gap before it), and
         * where it ends is where the rest resumes. */
        if (done < start)
            after_pass(e, pass, s + done, start - done);
        if (e->rc)
            return;
        if (dsd_tok_ids_push(e->out, t->id) < 0) {
            e->rc = -ENOMEM;
            return;
        }
        done = stop;
    }
    if (!e->rc)
        after_pass(e, pass, s + done, n - done);
}

/* ------------------------------------------------------------------------------------ */

static long encode(const struct dsd_tokenizer *tok, const char *text, size_t len, unsigned flags,
                   const struct dsd_tok_range *allow, size_t n_allow, struct dsd_tok_ids *out,
                   struct dsd_err *err)
{
    size_t start_len = out->len;
    struct enc e = {.tok = tok, .out = out, .parse_special = flags & DSD_TOK_PARSE_SPECIAL,
                    .base = (const uint8_t *)text, .allow = allow, .n_allow = n_allow};
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md)
        return dsd_errf(err, -ENOMEM, "out of memory encoding %zu bytes", len);
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len && !e.rc) {
        size_t run = dsd_utf8_valid_prefix(s + i, len - i);
        if (run) {
            e.new_unicode = tok->n_splits && tok_regex_needs_delta(s + i, run);
            if (e.parse_special && tok->n_added)
                pass_added(&e, 0, s + i, run);
            else
                pre_tokenize(&e, 0, s + i, run);
            i += run;
        }
        if (i < len && !e.rc) {
            size_t bad;
            dsd_utf8_scan(s + i, len - i, &bad);
            for (size_t k = 0; k < bad && !e.rc; k++)
                if (dsd_tok_ids_push(out, tok->byte_id[s[i + k]]) < 0)
                    e.rc = -ENOMEM;
            i += bad;
        }
    }
    pcre2_match_data_free(e.md);
    free(e.bpe.mem);
    if (e.rc) {
        out->len = start_len;
        if (e.rc == -E2BIG) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(e.pcre_error, msg, sizeof msg);
            return dsd_errf(err, e.rc, "the pre-tokenizer regex gave up on this %zu-byte input: %s",
                            len, (const char *)msg);
        }
        return dsd_errf(err, e.rc, "out of memory encoding %zu bytes", len);
    }
    return (long)(out->len - start_len);
}

long dsd_tokenizer_encode(const struct dsd_tokenizer *tok, const char *text, size_t len,
                          unsigned flags, struct dsd_tok_ids *out, struct dsd_err *err)
{
    return encode(tok, text, len, flags, NULL, 0, out, err);
}

long dsd_tokenizer_encode_marked(const struct dsd_tokenizer *tok, const char *text, size_t len,
                                 const struct dsd_tok_range *special, size_t n_special,
                                 struct dsd_tok_ids *out, struct dsd_err *err)
{
    static const struct dsd_tok_range none;
    return encode(tok, text, len, DSD_TOK_PARSE_SPECIAL, special ? special : &none, n_special, out, err);
}

/* ------------------------------------------------------------------------------------ */

static int text_reserve(struct dsd_tok_text *t, size_t extra)
{
    if (t->data && t->cap - t->len > extra)
        return 0;
    size_t cap = t->cap ? t->cap : 64;
    while (cap - t->len <= extra) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    char *p = realloc(t->data, cap);
    if (!p)
        return -ENOMEM;
    t->data = p;
    t->cap = cap;
    return 0;
}

int dsd_tok_text_append(struct dsd_tok_text *t, const char *s, size_t n)
{
    if (text_reserve(t, n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = 0;
    return 0;
}

int dsd_tok_ids_push(struct dsd_tok_ids *v, int32_t id)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->ids, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->len++] = id;
    return 0;
}

void dsd_tok_ids_free(struct dsd_tok_ids *v)
{
    free(v->ids);
    *v = (struct dsd_tok_ids){0};
}

void dsd_tok_text_free(struct dsd_tok_text *t)
{
    free(t->data);
    *t = (struct dsd_tok_text){0};
}

const char *dsd_tokenizer_piece(const struct dsd_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_ids || !(tok->pieces[id].flags & TOK_PIECE_EXISTS))
        return NULL;
    *len = tok->pieces[id].len;
    return tok->blob + tok->pieces[id].off;
}

long dsd_tokenizer_decode(const struct dsd_tokenizer *tok, const int32_t *ids, size_t n,
                          unsigned flags, struct dsd_tok_text *out, struct dsd_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        if (!dsd_tokenizer_piece(tok, ids[i], &len))
            return dsd_errf(err, -ERANGE, "token id %d (at %zu) is not in the vocabulary", ids[i], i);
        if (!((flags & DSD_TOK_SKIP_SPECIAL) && (tok->pieces[ids[i]].flags & TOK_PIECE_SPECIAL)))
            total += len;
    }
    size_t start = out->len;
    if (text_reserve(out, total) < 0)
        return dsd_errf(err, -ENOMEM, "out of memory decoding %zu ids", n);
    for (size_t i = 0; i < n; i++) {
        const struct tok_piece *p = &tok->pieces[ids[i]];
        if ((flags & DSD_TOK_SKIP_SPECIAL) && (p->flags & TOK_PIECE_SPECIAL))
            continue;
        memcpy(out->data + out->len, tok->blob + p->off, p->len);
        out->len += p->len;
    }
    out->data[out->len] = 0;
    if (flags & DSD_TOK_LOSSY) {
        const uint8_t *raw = (const uint8_t *)out->data + start;
        if (dsd_utf8_valid_prefix(raw, total) != total) {
            size_t lossy = dsd_utf8_lossy_len(raw, total);
            char *tmp = malloc(lossy + 1);
            if (!tmp || text_reserve(out, lossy) < 0) {
                free(tmp);
                out->len = start;
                out->data[start] = 0;
                return dsd_errf(err, -ENOMEM, "out of memory decoding %zu ids", n);
            }
            raw = (const uint8_t *)out->data + start; /* the reserve may have moved it */
            dsd_utf8_lossy_copy(tmp, raw, total);
            memcpy(out->data + start, tmp, lossy);
            free(tmp);
            out->len = start + lossy;
            out->data[out->len] = 0;
        }
    }
    return (long)(out->len - start);
}

int32_t dsd_tokenizer_token_id(const struct dsd_tokenizer *tok, const char *str, size_t len)
{
    return tok_str_find(tok, &tok->by_string, str, len);
}

int32_t dsd_tokenizer_n_ids(const struct dsd_tokenizer *tok) { return tok->n_ids; }

bool dsd_tokenizer_is_added(const struct dsd_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_ids && (tok->pieces[id].flags & TOK_PIECE_ADDED);
}

bool dsd_tokenizer_is_special(const struct dsd_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_ids && (tok->pieces[id].flags & TOK_PIECE_SPECIAL);
}

int32_t dsd_tokenizer_bos_id(const struct dsd_tokenizer *tok) { return tok->bos_id; }
int32_t dsd_tokenizer_eos_id(const struct dsd_tokenizer *tok) { return tok->eos_id; }
bool dsd_tokenizer_add_bos(const struct dsd_tokenizer *tok) { return tok->add_bos; }
