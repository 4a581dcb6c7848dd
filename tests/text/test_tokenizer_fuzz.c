/*
 * tests/text/test_tokenizer_fuzz.c: libFuzzer target for the tokenizer and detokenizer
 * (registered by tests/fuzz/tokenizer.cmake). Uses the synthetic tokenizer of
 * test_tokenizer_synth.h with DeepSeek's pre-tokenizer and a few lstrip/rstrip/single_word
 * added tokens; npm is not available to fuzzers.
 *
 * Input byte 0 picks the mode:
 *   even   encode the rest (flags from bit 1); decode must give the bytes back, the lossy
 *          decode must be valid UTF-8, and streaming the ids through a detokenizer (stop
 *          strings from bit 2) must give that lossy text, cut where a stop string ends;
 *   odd    the rest is a tokenizer.json: loading it must fail cleanly or give a tokenizer
 *          that can encode it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "detokenizer.h"
#include "test_tokenizer_synth.h"
#include "tokenizer.h"
#include "utf8.h"

static struct dsd_tokenizer *tok;

static const struct synth_added FUZZ_ADDED[] = {
    {"<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", 1, 0, 0, 0, 0},
    {"<\xef\xbd\x9cUser\xef\xbd\x9c>", 0, 1, 0, 0, 0},
    {"[L]", 0, 1, 1, 0, 0}, {"[R]", 1, 0, 0, 1, 0}, {"sw", 0, 1, 0, 0, 1}, {" sp", 0, 0, 0, 1, 0},
};

#define CHECK(c)                                                                          \
    do {                                                                                  \
        if (!(c))                                                                         \
            __builtin_trap();                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok) {
        char *json = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES, NULL, FUZZ_ADDED,
                                          sizeof FUZZ_ADDED / sizeof FUZZ_ADDED[0]);
        CHECK(json && dsd_tokenizer_load_json(&tok, json, strlen(json), NULL, 0, NULL) == 0);
        free(json);
    }
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;

    if (mode & 1) {
        struct dsd_tokenizer *t = NULL;
        struct dsd_err err = {{0}};
        if (dsd_tokenizer_load_json(&t, text, n, NULL, 0, &err) == 0) {
            struct dsd_tok_ids ids = {0};
            CHECK(dsd_tokenizer_encode(t, text, n, DSD_TOK_PARSE_SPECIAL, &ids, NULL) >= 0);
            dsd_tok_ids_free(&ids);
            dsd_tokenizer_free(t);
        } else {
            CHECK(t == NULL && err.msg[0] != 0);
        }
        return 0;
    }

    unsigned flags = (mode & 2) ? DSD_TOK_PARSE_SPECIAL : 0;
    struct dsd_tok_ids ids = {0};
    struct dsd_tok_text back = {0}, lossy = {0}, stream = {0}, delta = {0};
    CHECK(dsd_tokenizer_encode(tok, text, n, flags, &ids, NULL) >= 0);
    CHECK(dsd_tokenizer_decode(tok, ids.ids, ids.len, 0, &back, NULL) >= 0);
    /* lstrip/rstrip tokens swallow spaces, so only plain text must come back exactly. */
    if (!flags)
        CHECK(back.len == n && (n == 0 || memcmp(back.data, text, n) == 0));
    CHECK(dsd_tokenizer_decode(tok, ids.ids, ids.len, DSD_TOK_LOSSY, &lossy, NULL) >= 0);
    CHECK(dsd_utf8_valid_prefix((const uint8_t *)lossy.data, lossy.len) == lossy.len);

    static const char *const stops[] = {"ab", "\xe4\xbd\xa0", "ll"};
    size_t n_stops = (mode & 4) ? 3 : 0;
    struct dsd_detok_opts o = {.stop = stops, .n_stop = n_stops};
    struct dsd_detok *d;
    CHECK(dsd_detok_new(&d, tok, &o, NULL) == 0);
    int r = DSD_DETOK_MORE;
    for (size_t i = 0; i < ids.len && r == DSD_DETOK_MORE; i++) {
        delta.len = 0;
        r = dsd_detok_feed(d, ids.ids[i], &delta, NULL);
        CHECK(r >= 0);
        CHECK(dsd_utf8_valid_prefix((const uint8_t *)delta.data, delta.len) == delta.len);
        dsd_tok_text_append(&stream, delta.data ? delta.data : "", delta.len);
    }
    if (r == DSD_DETOK_MORE) {
        delta.len = 0;
        r = dsd_detok_finish(d, &delta, NULL);
        dsd_tok_text_append(&stream, delta.data ? delta.data : "", delta.len);
    }
    /* The stream is a prefix of the lossy text, all of it unless a stop string ended. */
    CHECK(stream.len <= lossy.len && (stream.len == 0 || memcmp(stream.data, lossy.data, stream.len) == 0));
    if (r == DSD_DETOK_MORE)
        CHECK(stream.len == lossy.len);
    else
        CHECK(n_stops > 0 && dsd_detok_stop_index(d) >= 0);
    dsd_detok_free(d);
    dsd_tok_ids_free(&ids);
    dsd_tok_text_free(&back);
    dsd_tok_text_free(&lossy);
    dsd_tok_text_free(&stream);
    dsd_tok_text_free(&delta);
    return 0;
}
