/*
 * Oniguruma -> PCRE2 pattern translation for pre-tokenizer Split regexes.
 *
 * tokenizer.json patterns are written for Hugging Face's regex engine, Oniguruma (with
 * Unicode 16.0 tables in tokenizers 0.22), and compiled here by PCRE2 (Unicode 14.0 in
 * Debian 12's 10.42). Two kinds of difference change ids of real text, so patterns are
 * rewritten before compiling:
 *
 *  1. Escapes that mean something else in PCRE2, even with PCRE2_UCP:
 *       \s  Oniguruma: U+0009-000D, U+0085 and General_Category Z. PCRE2 adds U+180E
 *           (MONGOLIAN VOWEL SEPARATOR, a format character since Unicode 6.3).
 *       \w  Oniguruma: Letter, Mark, Number, Connector_Punctuation. PCRE2 10.42: L, N, '_'.
 *       \b  \B follow \w.     \h  Oniguruma: a hex digit. PCRE2: horizontal space.
 *       \uHHHH  Oniguruma's code point escape; PCRE2 spells it \x{HHHH}.
 *  2. Characters assigned after Unicode 14 (10,302 of them, new emoji such as U+1FAE8
 *     among them) are unassigned to PCRE2 10.42, so \p{S} does not match them. Every
 *     General_Category property (\p{L}, \p{So}, \P{N}, \p{Letter}, ...) and \d, \w, \s get
 *     those code points added from tokenizer_unicode_table.h.
 *
 * Shorthands become explicit classes; a negated one inside a class (where a class cannot
 * say "and not") turns the class into an equivalent group:
 *   [a\S] -> (?:[a]|[^<space>])        [^a\S] -> (?:(?![a])[<space>])
 * What PCRE2 cannot express (nested classes, && intersections) is refused with a message.
 * Properties other than General_Category (scripts, \p{C}, \p{Cn}) are passed through with
 * PCRE2's Unicode version. The compile options (tokenizer_load.c) supply the rest of
 * Oniguruma's defaults: ^ and $ at line boundaries, '.' excluding only "\n".
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "utf8.h"

enum gc {
    GC_Lu, GC_Ll, GC_Lt, GC_Lm, GC_Lo, GC_Mn, GC_Mc, GC_Me, GC_Nd, GC_Nl, GC_No, GC_Pc, GC_Pd,
    GC_Ps, GC_Pe, GC_Pi, GC_Pf, GC_Po, GC_Sm, GC_Sc, GC_Sk, GC_So, GC_Zs, GC_Zl, GC_Zp, GC_Cc,
    GC_Cf, GC_Cs, GC_Co, GC_COUNT
};

struct gc_range {
    uint32_t lo, hi;
    enum gc gc;
};

#include "tokenizer_unicode_table.h"

static const char *const gc_short[GC_COUNT] = {
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};

#define M(g) (1u << GC_##g)
#define MASK_L (M(Lu) | M(Ll) | M(Lt) | M(Lm) | M(Lo))
#define MASK_M (M(Mn) | M(Mc) | M(Me))
#define MASK_N (M(Nd) | M(Nl) | M(No))
#define MASK_P (M(Pc) | M(Pd) | M(Ps) | M(Pe) | M(Pi) | M(Pf) | M(Po))
#define MASK_S (M(Sm) | M(Sc) | M(Sk) | M(So))
#define MASK_Z (M(Zs) | M(Zl) | M(Zp))

/* General_Category names as Oniguruma accepts them (compared lowercase, without spaces,
 * '-' and '_'). The C* categories are left out on purpose: Cn shrinks as Unicode grows,
 * which adding code points cannot express. */
static const struct {
    const char *name;
    uint32_t mask;
} gc_names[] = {
    {"l", MASK_L}, {"letter", MASK_L}, {"lc", M(Lu) | M(Ll) | M(Lt)},
    {"l&", M(Lu) | M(Ll) | M(Lt)}, {"casedletter", M(Lu) | M(Ll) | M(Lt)},
    {"lu", M(Lu)}, {"uppercaseletter", M(Lu)}, {"ll", M(Ll)}, {"lowercaseletter", M(Ll)},
    {"lt", M(Lt)}, {"titlecaseletter", M(Lt)}, {"lm", M(Lm)}, {"modifierletter", M(Lm)},
    {"lo", M(Lo)}, {"otherletter", M(Lo)},
    {"m", MASK_M}, {"mark", MASK_M}, {"combiningmark", MASK_M}, {"mn", M(Mn)},
    {"nonspacingmark", M(Mn)}, {"mc", M(Mc)}, {"spacingmark", M(Mc)}, {"me", M(Me)},
    {"enclosingmark", M(Me)},
    {"n", MASK_N}, {"number", MASK_N}, {"nd", M(Nd)}, {"decimalnumber", M(Nd)}, {"nl", M(Nl)},
    {"letternumber", M(Nl)}, {"no", M(No)}, {"othernumber", M(No)},
    {"p", MASK_P}, {"punctuation", MASK_P}, {"pc", M(Pc)}, {"connectorpunctuation", M(Pc)},
    {"pd", M(Pd)}, {"dashpunctuation", M(Pd)}, {"ps", M(Ps)}, {"openpunctuation", M(Ps)},
    {"pe", M(Pe)}, {"closepunctuation", M(Pe)}, {"pi", M(Pi)}, {"initialpunctuation", M(Pi)},
    {"pf", M(Pf)}, {"finalpunctuation", M(Pf)}, {"po", M(Po)}, {"otherpunctuation", M(Po)},
    {"s", MASK_S}, {"symbol", MASK_S}, {"sm", M(Sm)}, {"mathsymbol", M(Sm)}, {"sc", M(Sc)},
    {"currencysymbol", M(Sc)}, {"sk", M(Sk)}, {"modifiersymbol", M(Sk)}, {"so", M(So)},
    {"othersymbol", M(So)},
    {"z", MASK_Z}, {"separator", MASK_Z}, {"zs", M(Zs)}, {"spaceseparator", M(Zs)},
    {"zl", M(Zl)}, {"lineseparator", M(Zl)}, {"zp", M(Zp)}, {"paragraphseparator", M(Zp)},
};

static bool put(struct dsd_tok_text *o, const char *s, size_t n)
{
    return dsd_tok_text_append(o, s, n) == 0;
}
#define PUTS(o, s) put((o), (s), strlen(s))

/* Class items (no brackets) for the categories in mask: PCRE2's own property escapes plus
 * the code points PCRE2's Unicode version does not have in them yet. */
static bool gc_items(struct dsd_tok_text *o, uint32_t mask, bool delta)
{
    static const struct {
        uint32_t mask;
        const char *item;
    } majors[] = {{MASK_L, "\\p{L}"}, {MASK_M, "\\p{M}"}, {MASK_N, "\\p{N}"},
                  {MASK_P, "\\p{P}"}, {MASK_S, "\\p{S}"}, {MASK_Z, "\\p{Z}"}};
    uint32_t left = mask;
    bool ok = true;
    for (size_t i = 0; i < sizeof majors / sizeof majors[0]; i++)
        if ((left & majors[i].mask) == majors[i].mask) {
            ok = ok && PUTS(o, majors[i].item);
            left &= ~majors[i].mask;
        }
    for (int g = 0; g < GC_COUNT; g++)
        if (left & (1u << g)) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\p{%s}", gc_short[g]);
            ok = ok && PUTS(o, buf);
        }
    for (size_t i = 0; delta && i < sizeof gc_delta / sizeof gc_delta[0]; i++)
        if (mask & (1u << gc_delta[i].gc)) {
            char buf[40];
            int n = gc_delta[i].lo == gc_delta[i].hi
                        ? snprintf(buf, sizeof buf, "\\x{%X}", (unsigned)gc_delta[i].lo)
                        : snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", (unsigned)gc_delta[i].lo,
                                   (unsigned)gc_delta[i].hi);
            ok = ok && put(o, buf, (size_t)n);
        }
    return ok;
}

/* One escape or property that stands for a set of characters. */
struct set_escape {
    size_t len;       /* pattern bytes it takes */
    uint32_t mask;    /* General_Category part */
    const char *more; /* extra class items */
    bool negated;
};

/* Recognizes \s \S \w \W \d \D \h \H \pX \p{X} \p{^X} \PX \P{X} (X a General_Category) at
 * p[i] == '\\'. */
static bool set_escape(const char *p, size_t len, size_t i, struct set_escape *se)
{
    if (i + 1 >= len)
        return false;
    char e = p[i + 1];
    *se = (struct set_escape){.len = 2, .negated = isupper((unsigned char)e) != 0};
    switch (e) {
    case 's': case 'S': se->mask = MASK_Z; se->more = "\\t\\n\\x0B\\f\\r\\x{85}"; return true;
    case 'w': case 'W': se->mask = MASK_L | MASK_M | MASK_N | M(Pc); return true;
    case 'd': case 'D': se->mask = M(Nd); return true;
    case 'h': case 'H': se->more = "0-9a-fA-F"; return true;
    case 'p': case 'P': break;
    default: return false;
    }
    char name[48];
    size_t n = 0, k = i + 2;
    if (k < len && p[k] == '{') {
        const char *end = memchr(p + k, '}', len - k);
        if (!end)
            return false;
        size_t j = k + 1;
        if (j < (size_t)(end - p) && p[j] == '^') {
            se->negated = !se->negated;
            j++;
        }
        for (; j < (size_t)(end - p); j++) {
            char c = p[j];
            if (c == ' ' || c == '_' || c == '-')
                continue;
            if (n + 1 >= sizeof name)
                return false;
            name[n++] = (char)tolower((unsigned char)c);
        }
        se->len = (size_t)(end - p) + 1 - i;
    } else if (k < len) {
        name[n++] = (char)tolower((unsigned char)p[k]);
        se->len = 3;
    }
    name[n] = 0;
    for (size_t g = 0; g < sizeof gc_names / sizeof gc_names[0]; g++)
        if (strcmp(name, gc_names[g].name) == 0) {
            se->mask = gc_names[g].mask;
            return true;
        }
    return false; /* a script or another property: PCRE2 reads it as written */
}

static bool set_items(struct dsd_tok_text *o, const struct set_escape *se, bool delta)
{
    return gc_items(o, se->mask, delta) && (!se->more || PUTS(o, se->more));
}

/* Copies an escape that needs no rewriting (p[i] == '\\'), rewriting only \uHHHH.
 * Returns the number of pattern bytes consumed, 0 on out of memory. */
static size_t copy_escape(const char *p, size_t len, size_t i, struct dsd_tok_text *o)
{
    if (i + 1 >= len)
        return put(o, p + i, 1) ? 1 : 0;
    if (p[i + 1] == 'u' && i + 6 <= len) {
        bool hex = true;
        for (size_t k = 2; k < 6; k++)
            hex &= isxdigit((unsigned char)p[i + k]) != 0;
        if (hex) {
            char buf[16];
            int n = snprintf(buf, sizeof buf, "\\x{%.4s}", p + i + 2);
            return put(o, buf, (size_t)n) ? 6 : 0;
        }
    }
    /* A multi-byte character after the backslash: its other bytes follow as plain bytes. */
    return put(o, p + i, 2) ? 2 : 0;
}

#define MAX_NEGS 8

/* Translates the class starting at p[i] == '['. Returns bytes consumed, or 0 with *why. */
static size_t translate_class(const char *p, size_t len, size_t i, bool delta,
                              struct dsd_tok_text *o, const char **why)
{
    size_t start = i++;
    bool negated = i < len && p[i] == '^';
    if (negated)
        i++;
    struct dsd_tok_text items = {0}, negs[MAX_NEGS] = {{0}};
    int n_negs = 0;
    bool first = true, ok = true, closed = false;
    while (ok && !closed) {
        if (i >= len) {
            *why = "a character class is not closed";
            ok = false;
            break;
        }
        char c = p[i];
        struct set_escape se;
        if (c == ']' && !first) {
            i++;
            closed = true;
        } else if (c == '\\' && set_escape(p, len, i, &se)) {
            if (!se.negated) {
                ok = set_items(&items, &se, delta);
            } else if (n_negs == MAX_NEGS) {
                *why = "too many negated escapes in one character class";
                ok = false;
            } else {
                ok = set_items(&negs[n_negs++], &se, delta);
            }
            i += se.len;
        } else if (c == '\\') {
            size_t k = copy_escape(p, len, i, &items);
            ok = k > 0;
            i += k;
        } else if (c == '[' && i + 1 < len && p[i + 1] == ':') {
            const char *end = memmem(p + i + 2, len - i - 2, ":]", 2);
            if (!end) {
                *why = "a POSIX bracket [: is not closed";
                ok = false;
            } else {
                size_t n = (size_t)(end + 2 - (p + i));
                ok = put(&items, p + i, n);
                i += n;
            }
        } else if (c == '[') {
            *why = "nested character classes are not supported";
            ok = false;
        } else if (c == '&' && i + 1 < len && p[i + 1] == '&') {
            *why = "character class intersection (&&) is not supported";
            ok = false;
        } else {
            ok = put(&items, p + i, 1);
            i++;
        }
        first = false;
    }
    if (ok) {
        if (n_negs == 0) {
            ok = PUTS(o, negated ? "[^" : "[") && put(o, items.data, items.len) && PUTS(o, "]");
        } else if (!negated) {
            /* [I \S \W] = [I] or not-space or not-word */
            ok = PUTS(o, "(?:");
            if (items.len)
                ok = ok && PUTS(o, "[") && put(o, items.data, items.len) && PUTS(o, "]|");
            for (int k = 0; k < n_negs && ok; k++)
                ok = PUTS(o, k ? "|[^" : "[^") && put(o, negs[k].data, negs[k].len) && PUTS(o, "]");
            ok = ok && PUTS(o, ")");
        } else {
            /* [^I \S \W] = not I, and space, and word */
            ok = PUTS(o, "(?:");
            if (items.len)
                ok = ok && PUTS(o, "(?![") && put(o, items.data, items.len) && PUTS(o, "])");
            for (int k = 1; k < n_negs && ok; k++)
                ok = PUTS(o, "(?=[") && put(o, negs[k].data, negs[k].len) && PUTS(o, "])");
            ok = ok && PUTS(o, "[") && put(o, negs[0].data, negs[0].len) && PUTS(o, "])");
        }
        if (!ok)
            *why = "out of memory";
    }
    dsd_tok_text_free(&items);
    for (int k = 0; k < n_negs; k++)
        dsd_tok_text_free(&negs[k]);
    return ok ? i - start : 0;
}

int tok_regex_translate(const char *p, size_t len, bool delta, struct dsd_tok_text *o,
                        const char **why)
{
    *why = NULL;
    size_t i = 0;
    bool ok = true;
    while (i < len && ok) {
        char c = p[i];
        struct set_escape se;
        if (c == '[') {
            size_t k = translate_class(p, len, i, delta, o, why);
            if (!k)
                return strcmp(*why, "out of memory") == 0 ? -ENOMEM : -EINVAL;
            i += k;
        } else if (c != '\\') {
            ok = put(o, p + i, 1);
            i++;
        } else if (set_escape(p, len, i, &se)) {
            ok = PUTS(o, se.negated ? "[^" : "[") && set_items(o, &se, delta) && PUTS(o, "]");
            i += se.len;
        } else if (i + 1 < len && (p[i + 1] == 'b' || p[i + 1] == 'B')) {
            /* A word boundary by Oniguruma's \w: (?<=w)(?!w)|(?<!w)(?=w), or for \B
             * (?<=w)(?=w)|(?<!w)(?!w). */
            struct dsd_tok_text w = {0};
            ok = PUTS(&w, "[") && gc_items(&w, MASK_L | MASK_M | MASK_N | M(Pc), delta) && PUTS(&w, "]");
            bool b = p[i + 1] == 'b';
            static const char *const look[2][4] = {{"(?<=", "(?=", "(?<!", "(?!"},
                                                   {"(?<=", "(?!", "(?<!", "(?="}};
            ok = ok && PUTS(o, "(?:");
            for (int k = 0; k < 4 && ok; k++)
                ok = PUTS(o, k == 2 ? "|" : "") && PUTS(o, look[b][k]) && put(o, w.data, w.len) &&
                     PUTS(o, ")");
            ok = ok && PUTS(o, ")");
            dsd_tok_text_free(&w);
            i += 2;
        } else if (i + 1 < len && p[i + 1] == 'Q') {
            /* Quoted text runs to \E (or the end) and is copied untouched. */
            const char *end = memmem(p + i + 2, len - i - 2, "\\E", 2);
            size_t n = end ? (size_t)(end + 2 - (p + i)) : len - i;
            ok = put(o, p + i, n);
            i += n;
        } else {
            size_t k = copy_escape(p, len, i, o);
            ok = k > 0;
            i += k;
        }
    }
    if (!ok) {
        *why = "out of memory";
        return -ENOMEM;
    }
    return 0;
}

/* 256-code-point blocks holding any code point of gc_delta: a quick no for most text. */
static uint64_t delta_blocks[0x110000 / 256 / 64];
static pthread_once_t delta_once = PTHREAD_ONCE_INIT;

static void delta_blocks_init(void)
{
    for (size_t i = 0; i < sizeof gc_delta / sizeof gc_delta[0]; i++)
        for (uint32_t b = gc_delta[i].lo >> 8; b <= gc_delta[i].hi >> 8; b++)
            delta_blocks[b >> 6] |= 1ull << (b & 63);
}

void tok_regex_init(void)
{
    pthread_once(&delta_once, delta_blocks_init);
}

bool tok_regex_needs_delta(const uint8_t *s, size_t n)
{
    uint32_t first = gc_delta[0].lo;
    for (size_t i = 0; i < n;) {
        uint64_t w;
        if (i + 8 <= n && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080ull))) {
            i += 8; /* eight ASCII bytes */
            continue;
        }
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2; /* s is well-formed */
        uint32_t cp = dsd_utf8_decode(s + i, len);
        i += len;
        if (cp < first || !(delta_blocks[cp >> 14] >> (cp >> 8 & 63) & 1))
            continue;
        size_t lo = 0, hi = sizeof gc_delta / sizeof gc_delta[0];
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (cp > gc_delta[mid].hi)
                lo = mid + 1;
            else if (cp < gc_delta[mid].lo)
                hi = mid;
            else
                return true;
        }
    }
    return false;
}
