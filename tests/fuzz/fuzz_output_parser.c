/*
 * libFuzzer target for the output parser (and, on inputs flagged for it, the chat encoder).
 *
 * Input: byte 0 = flags (bit 0: start in reasoning; bit 1: treat the rest as a chat request
 * for the encoder instead), byte 1 = seed for the split sizes, then the text.
 * The text is parsed twice, whole and in pseudo-random pieces; the merged events must be
 * identical, every delta must be valid UTF-8 without DSML markup, and every tool call's
 * arguments_json must read back as its arguments object. Any violation traps.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat_buf.h"
#include "chat_encoder.h"
#include "chat_markers.h"
#include "output_parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct events {
    struct dsd_chat_buf text; /* kind byte, length, bytes ... merged */
    char last;
};

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 2;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3;
        else
            return false;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            unsigned char d = s[i + k];
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF))
                return false;
        }
        i += need + 1;
    }
    return true;
}

static int on_event(void *user, const struct dsd_output_event *ev)
{
    struct events *e = user;
    char kind = (char)('0' + ev->kind);
    if (ev->kind == DSD_OUTPUT_CONTENT || ev->kind == DSD_OUTPUT_REASONING) {
        if (!ev->len || !valid_utf8((const unsigned char *)ev->text, ev->len) ||
            memmem(ev->text, ev->len, DSD_CHAT_DSML_OPEN, strlen(DSD_CHAT_DSML_OPEN)) ||
            memmem(ev->text, ev->len, DSD_CHAT_DSML_CLOSE, strlen(DSD_CHAT_DSML_CLOSE)))
            __builtin_trap();
        if (e->last != kind)
            dsd_chat_buf_put(&e->text, "\n#", 2), dsd_chat_buf_put(&e->text, &kind, 1);
        dsd_chat_buf_put(&e->text, ev->text, ev->len);
        e->last = kind;
        return 0;
    }
    e->last = kind;
    dsd_chat_buf_put(&e->text, "\n#", 2);
    dsd_chat_buf_put(&e->text, &kind, 1);
    if (ev->kind == DSD_OUTPUT_TOOL_CALL) {
        json_error_t jerr;
        json_t *back = json_loadb(ev->arguments_json, ev->arguments_len, JSON_ALLOW_NUL, &jerr);
        if (!json_is_object(ev->arguments) || !back || !json_equal(back, ev->arguments) ||
            !valid_utf8((const unsigned char *)ev->name, ev->name_len))
            __builtin_trap();
        json_decref(back);
        dsd_chat_buf_put(&e->text, ev->name, ev->name_len);
        dsd_chat_buf_put(&e->text, ev->arguments_json, ev->arguments_len);
    } else {
        dsd_chat_buf_put(&e->text, ev->text, ev->len);
    }
    return 0;
}

static void parse(const uint8_t *text, size_t len, bool reasoning, unsigned seed,
                  struct events *out)
{
    struct dsd_output_parser_options opt = {.start_in_reasoning = reasoning};
    struct dsd_output_parser *p;
    struct dsd_err err;
    if (dsd_output_parser_create(&opt, on_event, out, &p, &err) < 0)
        return;
    for (size_t off = 0; off < len;) {
        size_t n = len;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 16) % 16;
        }
        if (n > len - off)
            n = len - off;
        if (dsd_output_parser_feed(p, (const char *)text + off, n, &err) < 0)
            __builtin_trap();
        off += n;
    }
    if (dsd_output_parser_finish(p, &err) < 0)
        __builtin_trap();
    dsd_output_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    unsigned seed = data[1] | 0x100u;
    data += 2;
    size -= 2;
    if (flags & 2) {
        struct dsd_chat_options opt = {.thinking = flags & 1, .omit_bos = flags & 4};
        char *prompt;
        size_t len;
        struct dsd_err err;
        if (dsd_chat_encode_json((const char *)data, size, &opt, &prompt, &len, &err) == 0)
            free(prompt);
        return 0;
    }
    struct events whole, pieces;
    memset(&whole, 0, sizeof whole);
    memset(&pieces, 0, sizeof pieces);
    parse(data, size, flags & 1, 0, &whole);
    parse(data, size, flags & 1, seed, &pieces);
    if (whole.text.len != pieces.text.len ||
        (whole.text.len && memcmp(whole.text.data, pieces.text.data, whole.text.len) != 0))
        __builtin_trap();
    dsd_chat_buf_free(&whole.text);
    dsd_chat_buf_free(&pieces.text);
    return 0;
}
