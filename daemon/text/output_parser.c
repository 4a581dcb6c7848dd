/*
 * The output parser: bytes -> (UTF-8 repair) -> pending text -> state machine -> events.
 *
 * States, and what moves between them:
 *   TEXT    content or reasoning (p->reasoning). Scans for '<' and classifies what starts
 *           there: a think tag, EOS, a DSML block or invoke start, any other DSML tag (an
 *           error), a proper prefix of one of those (held back), or plain text.
 *   BLOCK   inside a tool block, between invokes: whitespace, an invoke, the block's close.
 *           Other text is an error inside a wrapper; after bare invokes it is text again.
 *   INVOKE  an invoke has started; it is kept whole until its close tag arrives, then parsed
 *           in one go (arguments are only ever emitted complete).
 *   SKIP    after an error inside a block: drops text up to the next invoke, the end of the
 *           broken element, or the end of the block, and resumes there.
 *   DONE    after EOS.
 * Every decision looks only at the text, never at where feed() calls split it; whenever the
 * pending text could still turn into something else, the state waits for more (or for
 * finish(), which settles every such case).
 */
#include "output_parser.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_buf.h"
#include "chat_json.h"
#include "chat_markers.h"

#define DEFAULT_MAX_TOOL_CALL (16u << 20)

enum state { ST_TEXT, ST_BLOCK, ST_INVOKE, ST_SKIP, ST_DONE };

struct dsd_output_parser {
    dsd_output_event_fn on_event;
    void *user;
    size_t max_call;
    enum state st;
    bool reasoning;      /* TEXT is reasoning; a block returns to reasoning */
    bool wrapped;        /* the current block has a function_calls/tool_calls wrapper */
    bool skip_to_param;  /* SKIP may resume after a parameter's close (stray parameter) */
    bool finishing;      /* finish() called: no more text will come */
    bool finished;
    bool eos_trailer_reported;
    int invokes_in_block;
    int tool_calls;
    /* INVOKE bookkeeping, so a large invoke arriving in small pieces is not rescanned */
    size_t open_end;     /* index of the open tag's '>' once found, else 0 */
    size_t close_scan;   /* where the search for the invoke's end resumes */
    size_t tag_scan;     /* where the search for the open tag's '>' resumes */
    bool tag_in_quote;
    /* UTF-8 repair: the start of a character whose continuation bytes are still due */
    unsigned char utf8[4];
    int utf8_len, utf8_need;
    struct dsd_chat_buf buf;     /* repaired text; buf.data[off..len) is not consumed yet */
    size_t off;
    struct dsd_chat_buf scratch; /* arguments JSON text */
    int cb_rc;                   /* first non-zero callback return */
};

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

#define LIT(s) s, (sizeof s - 1)

static bool starts_with(const char *s, size_t n, const char *lit, size_t lit_len)
{
    return n >= lit_len && memcmp(s, lit, lit_len) == 0;
}

/* s[0..n) is a proper prefix of lit (shorter than lit and equal so far). */
static bool proper_prefix(const char *s, size_t n, const char *lit, size_t lit_len)
{
    return n < lit_len && memcmp(s, lit, n) == 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Consuming only moves an offset; feed() compacts once per call, so a large feed with many
 * markers stays linear. */
static const char *pending(const struct dsd_output_parser *p)
{
    return p->buf.data ? p->buf.data + p->off : "";
}

static size_t pending_len(const struct dsd_output_parser *p)
{
    return p->buf.len - p->off;
}

static void consume(struct dsd_output_parser *p, size_t n)
{
    p->off += n;
}

/* ----------------------------------------------------------------------------------- events */

static int emit(struct dsd_output_parser *p, const struct dsd_output_event *ev)
{
    if (p->cb_rc)
        return p->cb_rc;
    int rc = p->on_event(p->user, ev);
    if (rc)
        p->cb_rc = rc;
    return rc;
}

static int emit_text(struct dsd_output_parser *p, const char *s, size_t n)
{
    if (!n)
        return 0;
    struct dsd_output_event ev = {
        .kind = p->reasoning ? DSD_OUTPUT_REASONING : DSD_OUTPUT_CONTENT, .text = s, .len = n};
    return emit(p, &ev);
}

static int emit_error(struct dsd_output_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int emit_error(struct dsd_output_parser *p, const char *fmt, ...)
{
    char msg[DSD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct dsd_output_event ev = {.kind = DSD_OUTPUT_ERROR, .text = msg, .len = strlen(msg)};
    return emit(p, &ev);
}

/* --------------------------------------------------------------------------- invoke parsing */

/* An element's attributes: name="value" pairs separated by whitespace. */
struct attr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Parses s[0..n) (the part of an open tag after its element name, without '>' or "/>").
 * Returns the number of attributes (at most max), or -1 when malformed. */
static int parse_attrs(const char *s, size_t n, struct attr *out, int max)
{
    size_t i = 0;
    int count = 0;
    for (;;) {
        size_t ws = i;
        while (i < n && is_space(s[i]))
            i++;
        if (i == n)
            return count;
        if (i == ws || count == max) /* attributes need whitespace before them */
            return -1;
        size_t name = i;
        while (i < n && s[i] != '=' && !is_space(s[i]) && s[i] != '"')
            i++;
        if (i == name || i + 1 >= n || s[i] != '=' || s[i + 1] != '"')
            return -1;
        out[count].name = s + name;
        out[count].name_len = i - name;
        i += 2;
        size_t value = i;
        while (i < n && s[i] != '"')
            i++;
        if (i == n)
            return -1;
        out[count].value = s + value;
        out[count].value_len = i - value;
        count++;
        i++;
    }
}

static const struct attr *find_attr(const struct attr *a, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (a[i].name_len == strlen(name) && memcmp(a[i].name, name, a[i].name_len) == 0)
            return &a[i];
    return NULL;
}

/* Quote-aware search for the '>' that ends an open tag, from s[from]. */
static bool find_tag_end(const char *s, size_t n, size_t *pos, bool *in_quote)
{
    for (size_t i = *pos; i < n; i++) {
        if (s[i] == '"')
            *in_quote = !*in_quote;
        else if (s[i] == '>' && !*in_quote) {
            *pos = i;
            return true;
        }
    }
    *pos = n;
    return false;
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_space(**s))
        (*s)++, (*n)--;
    while (*n && is_space((*s)[*n - 1]))
        (*n)--;
}

/* Names (of calls and parameters) are identifiers: a control character in one is garbage,
 * and a NUL would cut the name short for C callers. */
static bool has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20)
            return true;
    return false;
}

/* Short, printable name for error messages (at most 64 bytes, cut on a UTF-8 boundary). */
static int name_for_msg(const char *name, size_t len)
{
    if (len <= 64)
        return (int)len;
    size_t n = 64;
    while (n && ((unsigned char)name[n] & 0xC0) == 0x80)
        n--;
    return (int)n;
}

/*
 * The parameters of an invoke body: <｜DSML｜parameter name="K" string="true|false">V
 * </｜DSML｜parameter>, separated by whitespace. Fills args; on a problem, writes a message
 * into why and returns -EINVAL.
 */
static int parse_params(const char *s, size_t n, json_t *args, char *why, size_t why_len)
{
    size_t i = 0;
    for (;;) {
        while (i < n && is_space(s[i]))
            i++;
        if (i == n)
            return 0;
        if (!starts_with(s + i, n - i, LIT(DSD_CHAT_PARAM_OPEN))) {
            snprintf(why, why_len, "unexpected text among its parameters");
            return -EINVAL;
        }
        size_t attrs = i + strlen(DSD_CHAT_PARAM_OPEN), end = attrs;
        bool q = false;
        if (!find_tag_end(s, n, &end, &q)) {
            snprintf(why, why_len, "a parameter tag is not closed with '>'");
            return -EINVAL;
        }
        struct attr a[4];
        int na = parse_attrs(s + attrs, end - attrs, a, 4);
        const struct attr *name = na > 0 ? find_attr(a, na, "name") : NULL;
        const struct attr *str = na > 0 ? find_attr(a, na, "string") : NULL;
        if (!name || !str || na != 2 || name->value_len == 0 ||
            has_control(name->value, name->value_len)) {
            snprintf(why, why_len, "a parameter tag needs exactly name=\"...\" and "
                     "string=\"true|false\"");
            return -EINVAL;
        }
        bool is_string;
        if (str->value_len == 4 && memcmp(str->value, "true", 4) == 0)
            is_string = true;
        else if (str->value_len == 5 && memcmp(str->value, "false", 5) == 0)
            is_string = false;
        else {
            snprintf(why, why_len, "parameter \"%.*s\" has string=\"%.*s\", expected true or false",
                     name_for_msg(name->value, name->value_len), name->value,
                     name_for_msg(str->value, str->value_len), str->value);
            return -EINVAL;
        }
        const char *value = s + end + 1;
        const char *close = memmem(value, (size_t)(s + n - value), LIT(DSD_CHAT_PARAM_CLOSE));
        if (!close) {
            snprintf(why, why_len, "parameter \"%.*s\" is not closed",
                     name_for_msg(name->value, name->value_len), name->value);
            return -EINVAL;
        }
        size_t value_len = (size_t)(close - value);
        if (json_object_getn(args, name->value, name->value_len)) {
            snprintf(why, why_len, "parameter \"%.*s\" appears twice",
                     name_for_msg(name->value, name->value_len), name->value);
            return -EINVAL;
        }
        json_t *v;
        if (is_string) {
            v = json_stringn(value, value_len);
        } else {
            json_error_t jerr;
            v = json_loadb(value, value_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
            if (!v) {
                snprintf(why, why_len, "parameter \"%.*s\" (string=\"false\") is not valid "
                         "JSON: %s", name_for_msg(name->value, name->value_len), name->value,
                         jerr.text);
                return -EINVAL;
            }
        }
        if (!v || json_object_setn_new(args, name->value, name->value_len, v) < 0) {
            snprintf(why, why_len, "out of memory");
            return -ENOMEM;
        }
        i = (size_t)(close - s) + strlen(DSD_CHAT_PARAM_CLOSE);
    }
}

/*
 * A complete invoke: s[0..open_end] is the open tag ('>' at open_end), s[body..body_end) the
 * body (empty for a self-closing tag). Emits a TOOL_CALL or an ERROR event.
 */
static int finish_invoke(struct dsd_output_parser *p, const char *s, size_t open_end,
                         size_t body_end)
{
    size_t attrs = strlen(DSD_CHAT_INVOKE_OPEN);
    bool self_closing = open_end > attrs && s[open_end - 1] == '/';
    struct attr a[4];
    int na = parse_attrs(s + attrs, open_end - attrs - (self_closing ? 1 : 0), a, 4);
    const struct attr *name = na == 1 ? find_attr(a, na, "name") : NULL;
    if (!name || name->value_len == 0)
        return emit_error(p, "a tool call was dropped: its invoke tag needs exactly "
                          "name=\"...\"");
    if (has_control(name->value, name->value_len))
        return emit_error(p, "a tool call was dropped: its name has a control character");
    char why[256];
    json_t *args = NULL;
    const char *body = s + open_end + 1;
    size_t body_len = self_closing ? 0 : body_end - (open_end + 1);
    trim(&body, &body_len);
    int rc = 0;
    if (body_len && (body[0] == '{' || body[0] == '[')) {
        json_error_t jerr;
        args = json_loadb(body, body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!args || !json_is_object(args)) {
            snprintf(why, sizeof why, "its JSON body is %s%s",
                     args ? "not an object" : "not valid JSON: ", args ? "" : jerr.text);
            rc = -EINVAL;
        }
    } else {
        args = json_object();
        if (!args)
            return -ENOMEM;
        rc = parse_params(body, body_len, args, why, sizeof why);
    }
    if (rc == -ENOMEM) {
        json_decref(args);
        return -ENOMEM;
    }
    char *name_z = strndup(name->value, name->value_len);
    if (!name_z) {
        json_decref(args);
        return -ENOMEM;
    }
    if (rc < 0) {
        rc = emit_error(p, "tool call \"%.*s\" was dropped: %s",
                        name_for_msg(name->value, name->value_len), name->value, why);
    } else {
        struct dsd_err jerr;
        p->scratch.len = 0;
        rc = dsd_chat_json_dump(&p->scratch, args, &jerr);
        if (rc == 0) {
            struct dsd_output_event ev = {
                .kind = DSD_OUTPUT_TOOL_CALL, .tool_index = p->tool_calls++, .name = name_z,
                .name_len = name->value_len, .arguments = args, .arguments_json = p->scratch.data,
                .arguments_len = p->scratch.len};
            rc = emit(p, &ev);
        } else if (rc != -ENOMEM) {
            rc = emit_error(p, "tool call \"%.*s\" was dropped: %s",
                            name_for_msg(name->value, name->value_len), name->value, jerr.msg);
        }
    }
    free(name_z);
    json_decref(args);
    return rc;
}

/* ------------------------------------------------------------------------------- the states */

enum mark {
    M_NONE,      /* plain text */
    M_PARTIAL,   /* a proper prefix of a marker: wait for more */
    M_THINK_START,
    M_THINK_END,
    M_EOS,
    M_CALLS_OPEN,
    M_INVOKE,
    M_CALLS_CLOSE, /* any DSML close tag out of place: dropped */
    M_OTHER_DSML,
    M_CUT_DSML,  /* finish() came in the middle of a DSML tag */
};

static const struct {
    const char *lit;
    enum mark mark;
} TEXT_MARKERS[] = {
    {DSD_CHAT_THINK_START, M_THINK_START},
    {DSD_CHAT_THINK_END, M_THINK_END},
    {DSD_CHAT_EOS, M_EOS},
    {DSD_CHAT_CALLS_OPEN, M_CALLS_OPEN},
    {DSD_CHAT_TOOL_CALLS_OPEN, M_CALLS_OPEN},
    {DSD_CHAT_INVOKE_OPEN, M_INVOKE},
    {DSD_CHAT_CALLS_CLOSE, M_CALLS_CLOSE},
    {DSD_CHAT_TOOL_CALLS_CLOSE, M_CALLS_CLOSE},
    {DSD_CHAT_INVOKE_CLOSE, M_CALLS_CLOSE},
    {DSD_CHAT_PARAM_CLOSE, M_CALLS_CLOSE},
    /* any other tag in the DSML namespace; listed last so the specific ones win */
    {DSD_CHAT_DSML_OPEN, M_OTHER_DSML},
    {DSD_CHAT_DSML_CLOSE, M_OTHER_DSML},
};

/* What starts at s[0] ('<'), given that s[0..n) is all the text there is for now (final: and
 * all there will be). */
static enum mark classify(const char *s, size_t n, bool final, size_t *mark_len)
{
    size_t count = sizeof TEXT_MARKERS / sizeof TEXT_MARKERS[0];
    bool partial = false;
    for (size_t k = 0; k < count; k++) {
        size_t len = strlen(TEXT_MARKERS[k].lit);
        if (TEXT_MARKERS[k].mark == M_OTHER_DSML)
            continue;
        if (starts_with(s, n, TEXT_MARKERS[k].lit, len)) {
            *mark_len = len;
            return TEXT_MARKERS[k].mark;
        }
        partial |= proper_prefix(s, n, TEXT_MARKERS[k].lit, len);
    }
    bool dsml = starts_with(s, n, LIT(DSD_CHAT_DSML_OPEN)) ||
                starts_with(s, n, LIT(DSD_CHAT_DSML_CLOSE));
    if (partial) /* a specific marker may still complete: wait, or it was cut off */
        return !final ? M_PARTIAL : dsml ? M_CUT_DSML : M_NONE;
    if (dsml) {
        *mark_len = starts_with(s, n, LIT(DSD_CHAT_DSML_OPEN)) ? strlen(DSD_CHAT_DSML_OPEN)
                                                                : strlen(DSD_CHAT_DSML_CLOSE);
        return M_OTHER_DSML;
    }
    bool generic = proper_prefix(s, n, LIT(DSD_CHAT_DSML_OPEN)) ||
                   proper_prefix(s, n, LIT(DSD_CHAT_DSML_CLOSE));
    return generic && !final ? M_PARTIAL : M_NONE;
}

/* The newlines right before a tool block belong to the format ("\n\n" precedes it), not to the
 * text: up to two of them are dropped there, and held back at the end of pending text. */
static size_t trailing_newlines(const char *s, size_t n)
{
    size_t k = 0;
    while (k < 2 && k < n && s[n - 1 - k] == '\n')
        k++;
    return k;
}

static int step_text(struct dsd_output_parser *p, bool *progress)
{
    const char *s = pending(p);
    size_t n = pending_len(p), i = 0;
    for (;;) {
        const char *lt = i < n ? memchr(s + i, '<', n - i) : NULL;
        size_t j = lt ? (size_t)(lt - s) : n;
        size_t mark_len = 0;
        enum mark m = lt ? classify(s + j, n - j, p->finishing, &mark_len) : M_NONE;
        if (lt && m == M_NONE) {
            i = j + 1;
            continue;
        }
        if (!lt || m == M_PARTIAL) {
            /* Emit what cannot be a marker; keep a possible marker start and the newlines
             * that could precede a block. At finish() nothing is held back. */
            size_t keep = p->finishing ? 0 : (n - j) + trailing_newlines(s, j);
            int rc = emit_text(p, s, n - keep);
            consume(p, n - keep);
            *progress = keep != n;
            return rc;
        }
        size_t text_len = j;
        if (m == M_CALLS_OPEN || m == M_INVOKE || m == M_OTHER_DSML || m == M_CUT_DSML)
            text_len -= trailing_newlines(s, j);
        int rc = emit_text(p, s, text_len);
        if (rc)
            return rc;
        *progress = true;
        switch (m) {
        case M_THINK_START:
            p->reasoning = true;
            break;
        case M_THINK_END:
            p->reasoning = false;
            break;
        case M_EOS:
            p->st = ST_DONE;
            break;
        case M_CALLS_OPEN:
            p->st = ST_BLOCK;
            p->wrapped = true;
            p->invokes_in_block = 0;
            break;
        case M_INVOKE:
            /* A bare invoke: the block is implied. The tag stays in the buffer for INVOKE. */
            p->st = ST_INVOKE;
            p->wrapped = false;
            p->invokes_in_block = 0;
            p->open_end = 0;
            p->tag_scan = mark_len;
            p->tag_in_quote = false;
            mark_len = 0;
            break;
        case M_CALLS_CLOSE:
            break; /* a stray close tag: nothing to do but not show it */
        case M_OTHER_DSML:
            p->st = ST_SKIP;
            p->wrapped = false;
            p->skip_to_param = true;
            rc = emit_error(p, "unexpected DSML markup outside a tool call was dropped");
            break;
        case M_CUT_DSML:
            p->st = ST_DONE;
            mark_len = n - j;
            rc = emit_error(p, "the output ended inside a tool call tag");
            break;
        case M_NONE:
        case M_PARTIAL:
            break;
        }
        consume(p, j + mark_len);
        return rc;
    }
}

/* What may come between invokes. */
static const char *const BLOCK_MARKERS[] = {
    DSD_CHAT_INVOKE_OPEN, DSD_CHAT_CALLS_CLOSE, DSD_CHAT_TOOL_CALLS_CLOSE, DSD_CHAT_EOS};

static void start_invoke(struct dsd_output_parser *p)
{
    p->st = ST_INVOKE;
    p->open_end = 0;
    p->tag_scan = strlen(DSD_CHAT_INVOKE_OPEN);
    p->tag_in_quote = false;
}

static int step_block(struct dsd_output_parser *p, bool *progress)
{
    size_t ws = 0;
    while (ws < pending_len(p) && is_space(pending(p)[ws]))
        ws++;
    if (ws) {
        consume(p, ws);
        *progress = true;
    }
    const char *s = pending(p);
    size_t n = pending_len(p);
    if (n == 0) {
        if (p->finishing && p->wrapped && p->invokes_in_block == 0) {
            p->st = ST_DONE;
            *progress = true;
            return emit_error(p, "the output ended inside a tool call block with no call in it");
        }
        return 0;
    }
    if (starts_with(s, n, LIT(DSD_CHAT_INVOKE_OPEN))) {
        start_invoke(p);
        *progress = true;
        return 0;
    }
    if (starts_with(s, n, LIT(DSD_CHAT_CALLS_CLOSE)) ||
        starts_with(s, n, LIT(DSD_CHAT_TOOL_CALLS_CLOSE))) {
        consume(p, starts_with(s, n, LIT(DSD_CHAT_CALLS_CLOSE))
                                          ? strlen(DSD_CHAT_CALLS_CLOSE)
                                          : strlen(DSD_CHAT_TOOL_CALLS_CLOSE));
        p->st = ST_TEXT;
        *progress = true;
        return 0;
    }
    if (starts_with(s, n, LIT(DSD_CHAT_EOS))) {
        consume(p, strlen(DSD_CHAT_EOS));
        p->st = ST_DONE;
        *progress = true;
        return 0;
    }
    bool partial = false;
    for (size_t k = 0; k < sizeof BLOCK_MARKERS / sizeof BLOCK_MARKERS[0]; k++)
        partial |= proper_prefix(s, n, BLOCK_MARKERS[k], strlen(BLOCK_MARKERS[k]));
    if (partial && !p->finishing)
        return 0;
    *progress = true;
    if (partial) { /* finish() in the middle of a tag */
        bool in_invoke = proper_prefix(s, n, LIT(DSD_CHAT_INVOKE_OPEN));
        consume(p, n);
        p->st = ST_DONE;
        return in_invoke ? emit_error(p, "the output ended inside a tool call tag") : 0;
    }
    if (!p->wrapped) { /* after bare invokes, other text is just text again */
        p->st = ST_TEXT;
        return 0;
    }
    p->st = ST_SKIP;
    p->skip_to_param = false;
    return emit_error(p, "unexpected text inside a tool call block was dropped");
}

static int step_invoke(struct dsd_output_parser *p, bool *progress)
{
    const char *s = pending(p);
    size_t n = pending_len(p);
    if (n > p->max_call) {
        consume(p, strlen(DSD_CHAT_INVOKE_OPEN));
        p->st = ST_SKIP;
        p->skip_to_param = false;
        *progress = true;
        return emit_error(p, "a tool call longer than %zu bytes was dropped", p->max_call);
    }
    if (!p->open_end) {
        size_t pos = p->tag_scan;
        if (!find_tag_end(s, n, &pos, &p->tag_in_quote)) {
            p->tag_scan = pos;
            if (!p->finishing)
                return 0;
            consume(p, n);
            p->st = ST_DONE;
            *progress = true;
            return emit_error(p, "the output ended inside a tool call tag");
        }
        p->open_end = pos;
        p->close_scan = pos + 1;
        if (s[pos - 1] == '/') { /* self-closing: the invoke is complete */
            int rc = finish_invoke(p, s, pos, pos + 1);
            consume(p, pos + 1);
            p->invokes_in_block++;
            p->st = ST_BLOCK;
            *progress = true;
            return rc;
        }
    }
    /* The invoke ends at its close tag. A block close or EOS first means the close tag is
     * missing: report it and let BLOCK handle what follows. */
    static const char *const ENDS[] = {DSD_CHAT_INVOKE_CLOSE, DSD_CHAT_CALLS_CLOSE,
                                       DSD_CHAT_TOOL_CALLS_CLOSE, DSD_CHAT_EOS};
    size_t best = n;
    int which = -1;
    for (int k = 0; k < 4; k++) {
        const char *hit = memmem(s + p->close_scan, n - p->close_scan, ENDS[k], strlen(ENDS[k]));
        if (hit && (size_t)(hit - s) < best) {
            best = (size_t)(hit - s);
            which = k;
        }
    }
    char name[80];
    struct attr a[4];
    size_t attrs = strlen(DSD_CHAT_INVOKE_OPEN);
    int na = parse_attrs(s + attrs, p->open_end - attrs, a, 4);
    const struct attr *nm = na > 0 ? find_attr(a, na, "name") : NULL;
    snprintf(name, sizeof name, "%s%.*s%s", nm ? "\"" : "", nm ? name_for_msg(nm->value, nm->value_len) : 0,
             nm ? nm->value : "", nm ? "\" " : "");
    if (which < 0) {
        /* Resume the search where an end marker could still begin. */
        size_t longest = 0;
        for (int k = 0; k < 4; k++)
            if (strlen(ENDS[k]) > longest)
                longest = strlen(ENDS[k]);
        if (n - p->close_scan >= longest)
            p->close_scan = n - longest + 1;
        if (!p->finishing)
            return 0;
        consume(p, n);
        p->st = ST_DONE;
        *progress = true;
        return emit_error(p, "tool call %swas dropped: the output ended before it was complete",
                          name);
    }
    *progress = true;
    p->invokes_in_block++;
    if (which == 0) {
        int rc = finish_invoke(p, s, p->open_end, best);
        consume(p, best + strlen(DSD_CHAT_INVOKE_CLOSE));
        p->st = ST_BLOCK;
        return rc;
    }
    consume(p, best);
    p->st = ST_BLOCK;
    return emit_error(p, "tool call %swas dropped: it is not closed", name);
}

/* Where SKIP can resume. */
static const char *const SKIP_MARKERS[] = {
    DSD_CHAT_INVOKE_OPEN, DSD_CHAT_INVOKE_CLOSE, DSD_CHAT_CALLS_CLOSE, DSD_CHAT_TOOL_CALLS_CLOSE,
    DSD_CHAT_EOS, DSD_CHAT_PARAM_CLOSE};

static int step_skip(struct dsd_output_parser *p, bool *progress)
{
    const char *s = pending(p);
    size_t n = pending_len(p), best = n;
    int which = -1;
    size_t count = sizeof SKIP_MARKERS / sizeof SKIP_MARKERS[0];
    for (size_t k = 0; k < count; k++) {
        if (k == 5 && !p->skip_to_param) /* only a stray parameter ends at its close */
            continue;
        const char *hit = memmem(s, n, SKIP_MARKERS[k], strlen(SKIP_MARKERS[k]));
        if (hit && (size_t)(hit - s) < best) {
            best = (size_t)(hit - s);
            which = (int)k;
        }
    }
    if (which < 0) {
        /* Drop everything except a tail that may be the start of a resync marker. */
        size_t keep = 0;
        if (!p->finishing) {
            for (size_t k = 0; k < count; k++) {
                size_t len = strlen(SKIP_MARKERS[k]);
                for (size_t t = len - 1 < n ? len - 1 : n; t > keep; t--)
                    if (memcmp(s + n - t, SKIP_MARKERS[k], t) == 0) {
                        keep = t;
                        break;
                    }
            }
        }
        *progress = keep != n;
        consume(p, n - keep);
        if (p->finishing)
            p->st = ST_DONE;
        return 0;
    }
    *progress = true;
    size_t len = strlen(SKIP_MARKERS[which]);
    switch (which) {
    case 0:
        consume(p, best);
        start_invoke(p);
        break;
    case 1:
    case 5:
        consume(p, best + len);
        p->st = ST_BLOCK;
        break;
    case 2:
    case 3:
        consume(p, best + len);
        p->st = ST_TEXT;
        break;
    default:
        consume(p, best + len);
        p->st = ST_DONE;
    }
    return 0;
}

static int step_done(struct dsd_output_parser *p, bool *progress)
{
    bool text = false;
    for (size_t i = 0; i < pending_len(p) && !text; i++)
        text = !is_space(pending(p)[i]);
    *progress = pending_len(p) != 0;
    consume(p, pending_len(p));
    if (text && !p->eos_trailer_reported) {
        p->eos_trailer_reported = true;
        return emit_error(p, "text after the end-of-sentence marker was dropped");
    }
    return 0;
}

static int run(struct dsd_output_parser *p)
{
    bool progress = true;
    while (progress) {
        progress = false;
        int rc = 0;
        switch (p->st) {
        case ST_TEXT: rc = step_text(p, &progress); break;
        case ST_BLOCK: rc = step_block(p, &progress); break;
        case ST_INVOKE: rc = step_invoke(p, &progress); break;
        case ST_SKIP: rc = step_skip(p, &progress); break;
        case ST_DONE: rc = step_done(p, &progress); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------------ UTF-8 repair */

/* Allowed range of the second byte after lead byte c (Unicode Table 3-7). */
static void second_byte_range(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c == 0xE0)
        *lo = 0xA0;
    else if (c == 0xED)
        *hi = 0x9F;
    else if (c == 0xF0)
        *lo = 0x90;
    else if (c == 0xF4)
        *hi = 0x8F;
}

static int repair_utf8(struct dsd_output_parser *p, const unsigned char *b, size_t n)
{
    size_t run_start = 0; /* ASCII runs are copied in one go */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        if (p->utf8_len == 0 && c < 0x80)
            continue;
        if (dsd_chat_buf_put(&p->buf, b + run_start, i - run_start) < 0)
            return -ENOMEM;
        run_start = i + 1;
        if (p->utf8_len > 0) {
            unsigned char lo = 0x80, hi = 0xBF;
            if (p->utf8_len == 1)
                second_byte_range(p->utf8[0], &lo, &hi);
            if (c >= lo && c <= hi) {
                p->utf8[p->utf8_len++] = c;
                if (p->utf8_len == p->utf8_need + 1) {
                    if (dsd_chat_buf_put(&p->buf, p->utf8, (size_t)p->utf8_len) < 0)
                        return -ENOMEM;
                    p->utf8_len = 0;
                }
                continue;
            }
            /* The sequence broke off: one U+FFFD for it, then c starts afresh. */
            p->utf8_len = 0;
            if (dsd_chat_buf_put(&p->buf, REPLACEMENT, 3) < 0)
                return -ENOMEM;
            if (c < 0x80) {
                run_start = i;
                continue;
            }
        }
        int need = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
                 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
        if (!need) {
            if (dsd_chat_buf_put(&p->buf, REPLACEMENT, 3) < 0)
                return -ENOMEM;
            continue;
        }
        p->utf8[0] = c;
        p->utf8_len = 1;
        p->utf8_need = need;
    }
    if (dsd_chat_buf_put(&p->buf, b + run_start, n - run_start) < 0)
        return -ENOMEM;
    return 0;
}

/* --------------------------------------------------------------------------------- the API */

int dsd_output_parser_create(const struct dsd_output_parser_options *opt,
                             dsd_output_event_fn on_event, void *user,
                             struct dsd_output_parser **out, struct dsd_err *err)
{
    *out = NULL;
    struct dsd_output_parser *p = calloc(1, sizeof *p);
    if (!p)
        return dsd_errf(err, -ENOMEM, "out of memory creating the output parser");
    p->on_event = on_event;
    p->user = user;
    p->max_call = opt && opt->max_tool_call_bytes ? opt->max_tool_call_bytes
                                                  : DEFAULT_MAX_TOOL_CALL;
    p->reasoning = opt && opt->start_in_reasoning;
    p->st = ST_TEXT;
    *out = p;
    return 0;
}

static int result(struct dsd_output_parser *p, int rc, struct dsd_err *err)
{
    if (rc == -ENOMEM)
        return dsd_errf(err, -ENOMEM, "out of memory in the output parser");
    if (rc)
        return dsd_errf(err, rc, "the output parser's event callback returned %d", rc);
    return 0;
}

int dsd_output_parser_feed(struct dsd_output_parser *p, const char *bytes, size_t len,
                           struct dsd_err *err)
{
    if (p->cb_rc)
        return result(p, p->cb_rc, err);
    if (p->finished)
        return dsd_errf(err, -EINVAL, "the output parser was fed after finish()");
    dsd_chat_buf_consume(&p->buf, p->off);
    p->off = 0;
    if (repair_utf8(p, (const unsigned char *)bytes, len) < 0)
        return result(p, -ENOMEM, err);
    return result(p, run(p), err);
}

int dsd_output_parser_finish(struct dsd_output_parser *p, struct dsd_err *err)
{
    if (p->cb_rc)
        return result(p, p->cb_rc, err);
    if (p->finished)
        return 0;
    p->finished = p->finishing = true;
    if (p->utf8_len) { /* a character cut off at the very end */
        p->utf8_len = 0;
        if (dsd_chat_buf_put(&p->buf, REPLACEMENT, 3) < 0)
            return result(p, -ENOMEM, err);
    }
    return result(p, run(p), err);
}

int dsd_output_parser_tool_calls(const struct dsd_output_parser *p)
{
    return p->tool_calls;
}

void dsd_output_parser_free(struct dsd_output_parser *p)
{
    if (!p)
        return;
    dsd_chat_buf_free(&p->buf);
    dsd_chat_buf_free(&p->scratch);
    free(p);
}
