/*
 * tests/text/test_detokenizer.c: streaming detokenization on the synthetic tokenizer of
 * test_tokenizer_synth.h (byte b has id b; 259 "hello", 264 " world", 272 "你", 273 F0 9F,
 * 275 "😀", 276 "EN", 277 "END"; added tokens from 279: BOS (special), EOS (special),
 * <｜User｜> (not special), ...).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detokenizer.h"
#include "test.h"
#include "test_tokenizer_synth.h"
#include "tokenizer.h"
#include "utf8.h"

#define BOS (SYNTH_FIRST_ADDED + 0)
#define USER (SYNTH_FIRST_ADDED + 2)
#define USER_STR "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define FFFD DSD_UTF8_REPLACEMENT

static struct dsd_tokenizer *tok;

static struct dsd_detok *make(unsigned flags, const char *const *stops, size_t n)
{
    struct dsd_detok_opts o = {.flags = flags, .stop = stops, .n_stop = n};
    struct dsd_detok *d = NULL;
    struct dsd_err err = {{0}};
    if (dsd_detok_new(&d, tok, &o, &err) < 0)
        fprintf(stderr, "dsd_detok_new: %s\n", err.msg);
    return d;
}

/* Feeds one id; returns the delta as a static string (valid until the next call). */
static const char *feed(struct dsd_detok *d, int32_t id, int *result)
{
    static struct dsd_tok_text delta;
    delta.len = 0;
    dsd_tok_text_append(&delta, "", 0);
    *result = dsd_detok_feed(d, id, &delta, NULL);
    return delta.data;
}

static const char *finish(struct dsd_detok *d, int *result)
{
    static struct dsd_tok_text delta;
    delta.len = 0;
    dsd_tok_text_append(&delta, "", 0);
    *result = dsd_detok_finish(d, &delta, NULL);
    return delta.data;
}

TEST(characters_are_never_split)
{
    struct dsd_detok *d = make(0, NULL, 0);
    int r;
    ASSERT_EQ_STR(feed(d, 0xF0, &r), "");
    ASSERT_EQ_STR(feed(d, 0x9F, &r), "");
    ASSERT_EQ_STR(feed(d, 0x98, &r), "");
    ASSERT_EQ_STR(feed(d, 0x80, &r), "\xf0\x9f\x98\x80");
    ASSERT_EQ_INT(r, DSD_DETOK_MORE);
    /* A token holding the start of one character and another whole one. */
    ASSERT_EQ_STR(feed(d, 259, &r), "hello");
    ASSERT_EQ_STR(feed(d, 273, &r), "");    /* F0 9F */
    ASSERT_EQ_STR(feed(d, 0x98, &r), "");
    ASSERT_EQ_STR(feed(d, 0x80, &r), "\xf0\x9f\x98\x80");
    ASSERT_EQ_STR(feed(d, 0xE4, &r), "");
    ASSERT_EQ_STR(feed(d, 0xBD, &r), "");
    ASSERT_EQ_STR(feed(d, 0xA0, &r), "\xe4\xbd\xa0");
    ASSERT_EQ_STR(finish(d, &r), "");
    dsd_detok_free(d);
}

TEST(ill_formed_bytes_become_replacement_characters)
{
    struct dsd_detok *d = make(0, NULL, 0);
    int r;
    ASSERT_EQ_STR(feed(d, 0xFF, &r), FFFD);        /* can never start a character: at once */
    ASSERT_EQ_STR(feed(d, 0xE4, &r), "");
    ASSERT_EQ_STR(feed(d, 'A', &r), FFFD "A");     /* E4 then 'A': one U+FFFD for E4 */
    ASSERT_EQ_STR(feed(d, 0xE4, &r), "");
    ASSERT_EQ_STR(feed(d, 0xBD, &r), "");
    ASSERT_EQ_STR(finish(d, &r), FFFD);            /* truncated at the end: one U+FFFD */
    ASSERT_EQ_INT(r, DSD_DETOK_MORE);
    dsd_detok_free(d);
}

TEST(stop_string_across_tokens)
{
    const char *stops[] = {"END"};
    struct dsd_detok *d = make(0, stops, 1);
    int r;
    ASSERT_EQ_STR(feed(d, 259, &r), "hello");
    ASSERT_EQ_STR(feed(d, ' ', &r), " ");
    ASSERT_EQ_STR(feed(d, 'E', &r), "");  /* could be the start of "END": held */
    ASSERT_EQ_STR(feed(d, 'N', &r), "");
    ASSERT_EQ_STR(feed(d, 'D', &r), "");
    ASSERT_EQ_INT(r, DSD_DETOK_STOP);
    ASSERT_EQ_INT(dsd_detok_stop_index(d), 0);
    ASSERT_EQ_STR(feed(d, 'x', &r), "");  /* stopped: nothing more */
    ASSERT_EQ_INT(r, DSD_DETOK_STOP);
    ASSERT_EQ_STR(finish(d, &r), "");
    ASSERT_EQ_INT(r, DSD_DETOK_STOP);
    dsd_detok_free(d);

    /* Through merged tokens, and with text before the stop string in the same token. */
    d = make(0, stops, 1);
    ASSERT_EQ_STR(feed(d, 'a', &r), "a");
    ASSERT_EQ_STR(feed(d, 276, &r), ""); /* "EN" */
    ASSERT_EQ_STR(feed(d, 'D', &r), "");
    ASSERT_EQ_INT(r, DSD_DETOK_STOP);
    dsd_detok_free(d);

    const char *mid[] = {"llo w"};
    d = make(0, mid, 1);
    ASSERT_EQ_STR(feed(d, 259, &r), "he");  /* "llo" is held */
    ASSERT_EQ_STR(feed(d, 264, &r), "");    /* " world" completes "llo w" */
    ASSERT_EQ_INT(r, DSD_DETOK_STOP);
    dsd_detok_free(d);
}

TEST(held_text_is_released_when_the_stop_fails)
{
    const char *stops[] = {"ENDX"};
    struct dsd_detok *d = make(0, stops, 1);
    int r;
    ASSERT_EQ_STR(feed(d, 277, &r), "");       /* "END" might become "ENDX" */
    ASSERT_EQ_STR(feed(d, 'Y', &r), "ENDY");   /* it did not */
    ASSERT_EQ_STR(feed(d, 'E', &r), "");
    ASSERT_EQ_STR(finish(d, &r), "E");         /* at the end held text is just text */
    ASSERT_EQ_INT(r, DSD_DETOK_MORE);
    dsd_detok_free(d);
    /* Holding only what could still match: "EEN" keeps "EN", releases the first "E". */
    d = make(0, stops, 1);
    ASSERT_EQ_STR(feed(d, 'E', &r), "");
    ASSERT_EQ_STR(feed(d, 276, &r), "E");
    dsd_detok_free(d);
}

TEST(first_ending_stop_wins_then_longest)
{
    const char *stops[] = {"abc", "b"};
    struct dsd_detok *d = make(0, stops, 2);
    int r;
    ASSERT_EQ_STR(feed(d, 'a', &r), "");
    ASSERT_EQ_STR(feed(d, 'b', &r), "a");
    ASSERT_EQ_INT(dsd_detok_stop_index(d), 1);
    dsd_detok_free(d);
    const char *same_end[] = {"lo", "hello"};
    d = make(0, same_end, 2);
    ASSERT_EQ_STR(feed(d, 259, &r), "");
    ASSERT_EQ_INT(r, DSD_DETOK_STOP);
    ASSERT_EQ_INT(dsd_detok_stop_index(d), 1);
    dsd_detok_free(d);
}

TEST(special_tokens)
{
    int r;
    struct dsd_detok *d = make(DSD_DETOK_SKIP_SPECIAL, NULL, 0);
    ASSERT_EQ_STR(feed(d, BOS, &r), "");
    ASSERT_EQ_STR(feed(d, USER, &r), USER_STR);
    /* A skipped token between the bytes of a character does not split it. */
    ASSERT_EQ_STR(feed(d, 0xE4, &r), "");
    ASSERT_EQ_STR(feed(d, BOS, &r), "");
    ASSERT_EQ_STR(feed(d, 271 /* E4 BD */ - 271 + 0xBD, &r), "");
    ASSERT_EQ_STR(feed(d, 0xA0, &r), "\xe4\xbd\xa0");
    dsd_detok_free(d);
    d = make(0, NULL, 0);
    ASSERT_EQ_STR(feed(d, BOS, &r), "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    dsd_detok_free(d);
}

TEST(bad_ids_and_options)
{
    int r;
    struct dsd_detok *d = make(0, NULL, 0);
    ASSERT_EQ_STR(feed(d, 0xF0, &r), "");
    ASSERT_EQ_STR(feed(d, 999999, &r), "");
    ASSERT_EQ_INT(r, -ERANGE);
    ASSERT_EQ_STR(feed(d, -3, &r), "");
    ASSERT_EQ_INT(r, -ERANGE);
    ASSERT_EQ_STR(feed(d, 0x9F, &r), ""); /* the held byte survived the bad ids */
    ASSERT_EQ_STR(feed(d, 0x98, &r), "");
    ASSERT_EQ_STR(feed(d, 0x80, &r), "\xf0\x9f\x98\x80");
    dsd_detok_free(d);

    struct dsd_err err = {{0}};
    const char *empty[] = {"ok", ""};
    struct dsd_detok_opts o = {.stop = empty, .n_stop = 2};
    ASSERT_EQ_INT(dsd_detok_new(&d, tok, &o, &err), -EINVAL);
    ASSERT_TRUE(strstr(err.msg, "stop string 1") != NULL);
    const char *bad[] = {"\xff"};
    o.stop = bad;
    o.n_stop = 1;
    ASSERT_EQ_INT(dsd_detok_new(&d, tok, &o, &err), -EINVAL);
    ASSERT_TRUE(strstr(err.msg, "UTF-8") != NULL);
    ASSERT_EQ_INT(dsd_detok_new(&d, tok, NULL, &err), 0);
    dsd_detok_free(d);
}

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

/* Where the deltas must end for text t and these stops: before the stop string that ends
 * first (the longest of those), found by trying every end and every stop. */
static size_t brute_stop(const char *t, size_t n, const char *const *stops, size_t ns, int *which)
{
    for (size_t end = 1; end <= n; end++) {
        int best = -1;
        for (size_t k = 0; k < ns; k++) {
            size_t l = strlen(stops[k]);
            if (l <= end && memcmp(t + end - l, stops[k], l) == 0 &&
                (best < 0 || l > strlen(stops[best])))
                best = (int)k;
        }
        if (best >= 0) {
            *which = best;
            return end - strlen(stops[best]);
        }
    }
    *which = -1;
    return n;
}

TEST(random_streams_match_one_shot_decode)
{
    /* Ids drawn from byte tokens (whole and partial characters, ill-formed bytes), merged
     * tokens and added tokens; stops drawn from short strings. Every delta is valid UTF-8,
     * and the deltas add up to the lossy one-shot decode, cut at the brute-force stop. */
    static const int32_t pool[] = {'a', 'b', 'c', 'E', 'N', 'D', ' ', 0xE4, 0xBD, 0xA0, 0xF0,
                                   0x9F, 0x98, 0x80, 0xFF, 259, 264, 272, 273, 275, 276, 277,
                                   BOS, USER};
    static const char *const stop_pool[] = {"ab", "bca", "END", "c c", "\xe4\xbd\xa0", "lo w",
                                            (FFFD "a"), "aaaa", ("D" USER_STR)};
    int bad_utf8 = 0, bad_text = 0, bad_index = 0;
    for (int iter = 0; iter < 4000; iter++) {
        int32_t ids[40];
        size_t n = 1 + rnd() % 40;
        for (size_t i = 0; i < n; i++)
            ids[i] = pool[rnd() % (sizeof pool / sizeof pool[0])];
        const char *stops[3];
        size_t ns = rnd() % 4;
        for (size_t k = 0; k < ns; k++)
            stops[k] = stop_pool[rnd() % (sizeof stop_pool / sizeof stop_pool[0])];
        unsigned flags = rnd() % 2 ? DSD_DETOK_SKIP_SPECIAL : 0;

        struct dsd_tok_text full = {0}, got = {0}, delta = {0};
        dsd_tokenizer_decode(tok, ids, n, DSD_TOK_LOSSY | (flags ? DSD_TOK_SKIP_SPECIAL : 0), &full, NULL);
        int which;
        size_t cut = brute_stop(full.data, full.len, stops, ns, &which);

        struct dsd_detok *d = make(flags, stops, ns);
        int r = DSD_DETOK_MORE;
        for (size_t i = 0; i < n && r == DSD_DETOK_MORE; i++) {
            delta.len = 0;
            r = dsd_detok_feed(d, ids[i], &delta, NULL);
            bad_utf8 += dsd_utf8_valid_prefix((const uint8_t *)delta.data, delta.len) != delta.len;
            dsd_tok_text_append(&got, delta.data ? delta.data : "", delta.len);
        }
        if (r == DSD_DETOK_MORE) {
            delta.len = 0;
            r = dsd_detok_finish(d, &delta, NULL);
            bad_utf8 += dsd_utf8_valid_prefix((const uint8_t *)delta.data, delta.len) != delta.len;
            dsd_tok_text_append(&got, delta.data ? delta.data : "", delta.len);
        }
        if (got.len != cut || (cut && memcmp(got.data, full.data, cut) != 0)) {
            if (bad_text++ < 5)
                fprintf(stderr, "stream \"%.*s\" != expected \"%.*s\" (iteration %d)\n",
                        (int)got.len, got.data ? got.data : "", (int)cut, full.data, iter);
        }
        bad_index += dsd_detok_stop_index(d) != which || (which >= 0) != (r == DSD_DETOK_STOP);
        dsd_detok_free(d);
        dsd_tok_text_free(&full);
        dsd_tok_text_free(&got);
        dsd_tok_text_free(&delta);
    }
    ASSERT_EQ_INT(bad_utf8, 0);
    ASSERT_EQ_INT(bad_text, 0);
    ASSERT_EQ_INT(bad_index, 0);
}

int main(void)
{
    char *json = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES, NULL, NULL, 0);
    struct dsd_err err = {{0}};
    if (!json || dsd_tokenizer_load_json(&tok, json, strlen(json), NULL, 0, &err) < 0) {
        fprintf(stderr, "cannot load the synthetic tokenizer: %s\n", err.msg);
        return 1;
    }
    free(json);
    RUN(characters_are_never_split);
    RUN(ill_formed_bytes_become_replacement_characters);
    RUN(stop_string_across_tokens);
    RUN(held_text_is_released_when_the_stop_fails);
    RUN(first_ending_stop_wins_then_longest);
    RUN(special_tokens);
    RUN(bad_ids_and_options);
    RUN(random_streams_match_one_shot_decode);
    dsd_tokenizer_free(tok);
    return test_report();
}
