/*
 * tests/text/test_tokenizer.c: the tokenizer on small tokenizer.json files built here
 * (test_tokenizer_synth.h): BPE order, added tokens on and off, invalid UTF-8, round
 * trips, UTF-8 rules, threads, and every kind of load error.
 * (Identity with Hugging Face on the real tokenizer: tokenizer_identity.sh.)
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "test_tokenizer_synth.h"
#include "tokenizer.h"
#include "utf8.h"

static struct dsd_tokenizer *tok; /* SYNTH_MERGES, DeepSeek's pre-tokenizer, default added */

#define BOS (SYNTH_FIRST_ADDED + 0)
#define EOS (SYNTH_FIRST_ADDED + 1)
#define USER (SYNTH_FIRST_ADDED + 2)
#define EOT (SYNTH_FIRST_ADDED + 4)
#define USER_STR "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define BOS_STR "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"

static struct dsd_tokenizer *load_text(const char *json, const char *config, struct dsd_err *err)
{
    struct dsd_tokenizer *t = NULL;
    if (dsd_tokenizer_load_json(&t, json, strlen(json), config, config ? strlen(config) : 0, err) < 0)
        return NULL;
    return t;
}

/* Encodes s and compares with the expected ids (terminated by -1). */
static void expect_ids(const struct dsd_tokenizer *t, const char *s, size_t n, unsigned flags,
                       const int32_t *want, const char *what)
{
    struct dsd_tok_ids ids = {0};
    struct dsd_err err = {{0}};
    long r = dsd_tokenizer_encode(t, s, n, flags, &ids, &err);
    size_t nw = 0;
    while (want[nw] >= 0)
        nw++;
    test_checks_total++;
    if (r != (long)nw || ids.len != nw || memcmp(ids.ids, want, nw * sizeof *want) != 0) {
        TEST_FAIL_AT("%s: got %ld ids:", what, r);
        for (size_t i = 0; i < ids.len; i++)
            fprintf(stderr, " %d", ids.ids[i]);
        fprintf(stderr, "\n   want:");
        for (size_t i = 0; i < nw; i++)
            fprintf(stderr, " %d", want[i]);
        fputc('\n', stderr);
    }
    dsd_tok_ids_free(&ids);
}
#define EXPECT_IDS(s, flags, ...)                                                   \
    do {                                                                            \
        static const int32_t want_[] = {__VA_ARGS__, -1};                           \
        expect_ids(tok, (s), sizeof(s) - 1, (flags), want_, #s);                    \
    } while (0)

static int roundtrip(const struct dsd_tokenizer *t, const char *s, size_t n, unsigned flags)
{
    struct dsd_tok_ids ids = {0};
    struct dsd_tok_text back = {0};
    int ok = dsd_tokenizer_encode(t, s, n, flags, &ids, NULL) >= 0 &&
             dsd_tokenizer_decode(t, ids.ids, ids.len, 0, &back, NULL) >= 0 && back.len == n &&
             (n == 0 || memcmp(back.data, s, n) == 0);
    dsd_tok_ids_free(&ids);
    dsd_tok_text_free(&back);
    return ok;
}

/* ------------------------------------------------------------------------------------ */

TEST(bpe_merges_by_rank)
{
    EXPECT_IDS("hello", 0, 259);
    EXPECT_IDS("hello world", 0, 259, 264);
    EXPECT_IDS("helo", 0, 256, 'l', 'o');
    EXPECT_IDS("123456", 0, 270, '4', '5', '6'); /* \p{N}{1,3}: "123" "456" */
    EXPECT_IDS("1234", 0, 270, '4');
    EXPECT_IDS("\xe4\xbd\xa0", 0, 272);         /* 你 */
    EXPECT_IDS("\xf0\x9f\x98\x80", 0, 275);     /* 😀 */
    /* Ties go to the leftmost pair: "aaa" -> "aa" "a", "aaaaa" -> "aaaa" "a". */
    EXPECT_IDS("aaa", 0, 265, 'a');
    EXPECT_IDS("aaaaa", 0, 266, 'a');
    EXPECT_IDS("aaaaaaa", 0, 266, 265, 'a');
}

TEST(bpe_long_piece_uses_same_order)
{
    /* 1001 'a': beyond the small-word loop, the heap loop must give the same answer as
     * the rule: 250 x "aaaa" then "a". */
    char s[1001];
    memset(s, 'a', sizeof s);
    struct dsd_tok_ids ids = {0};
    ASSERT_EQ_INT(dsd_tokenizer_encode(tok, s, sizeof s, 0, &ids, NULL), 251);
    int bad = 0;
    for (size_t i = 0; i < 250 && i < ids.len; i++)
        bad += ids.ids[i] != 266;
    ASSERT_EQ_INT(bad, 0);
    ASSERT_EQ_INT(ids.len == 251 ? ids.ids[250] : -1, 'a');
    /* 27 'a' (just above the small-loop limit): 13 "aa" + "a", then "aaaa" x 6 + "aa" + "a". */
    ids.len = 0;
    ASSERT_EQ_INT(dsd_tokenizer_encode(tok, s, 27, 0, &ids, NULL), 8);
    ASSERT_EQ_INT(ids.len == 8 ? ids.ids[5] : -1, 266);
    ASSERT_EQ_INT(ids.len == 8 ? ids.ids[6] : -1, 265);
    ASSERT_EQ_INT(ids.len == 8 ? ids.ids[7] : -1, 'a');
    dsd_tok_ids_free(&ids);
}

TEST(added_tokens_only_when_asked)
{
    /* Without DSD_TOK_PARSE_SPECIAL the control strings are text: no id of an added token
     * appears, and the text comes back. */
    const char s[] = "x" USER_STR "hello" BOS_STR "<|EOT|>";
    struct dsd_tok_ids ids = {0};
    ASSERT_TRUE(dsd_tokenizer_encode(tok, s, sizeof s - 1, 0, &ids, NULL) > 5);
    int added = 0;
    for (size_t i = 0; i < ids.len; i++)
        added += ids.ids[i] >= SYNTH_FIRST_ADDED;
    ASSERT_EQ_INT(added, 0);
    ASSERT_TRUE(roundtrip(tok, s, sizeof s - 1, 0));
    dsd_tok_ids_free(&ids);
    /* With it, each is one id, special or not. */
    EXPECT_IDS("x" USER_STR "hello" BOS_STR "<|EOT|>", DSD_TOK_PARSE_SPECIAL, 'x', USER, 259, BOS, EOT);
    EXPECT_IDS(BOS_STR BOS_STR, DSD_TOK_PARSE_SPECIAL, BOS, BOS);
    ASSERT_TRUE(roundtrip(tok, s, sizeof s - 1, DSD_TOK_PARSE_SPECIAL));
}

TEST(added_token_flags)
{
    static const struct synth_added added[] = {
        {"[L]", 0, 1, 1, 0, 0}, {"[R]", 1, 0, 0, 1, 0}, {"sw", 0, 1, 0, 0, 1},
        {"<a>", 1, 0, 0, 0, 0}, {"<a><b>", 0, 1, 0, 0, 0},
    };
    char *json = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES, NULL, added, 5);
    struct dsd_err err = {{0}};
    struct dsd_tokenizer *t = load_text(json, NULL, &err);
    ASSERT_TRUE(t != NULL);
    free(json);
    if (!t)
        return;
    int32_t L = SYNTH_FIRST_ADDED, R = L + 1, SW = L + 2, A = L + 3, AB = L + 4;
    /* lstrip swallows the spaces before, rstrip those after. */
    static const int32_t w1[] = {'x', 0, 'y', -1};
    int32_t w1b[4];
    memcpy(w1b, w1, sizeof w1);
    w1b[1] = L;
    expect_ids(t, "x  [L]y", 7, DSD_TOK_PARSE_SPECIAL, w1b, "lstrip");
    w1b[1] = R;
    expect_ids(t, "x[R]  y", 7, DSD_TOK_PARSE_SPECIAL, w1b, "rstrip");
    /* single_word: only between non-word characters. */
    int32_t w2[] = {' ', SW, ' ', -1};
    expect_ids(t, " sw ", 4, DSD_TOK_PARSE_SPECIAL, w2, "single word alone");
    int32_t w3[] = {'x', 's', 'w', -1};
    expect_ids(t, "xsw", 3, DSD_TOK_PARSE_SPECIAL, w3, "single word inside a word");
    /* Non-normalized tokens are cut first: "<a><b>" (normalized) loses to "<a>". */
    int32_t w4[] = {A, '<', 'b', '>', -1};
    expect_ids(t, "<a><b>", 6, DSD_TOK_PARSE_SPECIAL, w4, "non-normalized first");
    (void)AB; /* never matched: "<a>" is always cut out first (Hugging Face agrees) */
    dsd_tokenizer_free(t);
}

TEST(invalid_utf8_is_byte_tokens)
{
    /* Each ill-formed part becomes its bytes' tokens (id == byte here), and the text
     * on either side is encoded as if the cut were an end. */
    EXPECT_IDS("hello\xffhello", 0, 259, 0xff, 259);
    EXPECT_IDS("\xe4\xbd", 0, 0xe4, 0xbd);             /* truncated 你: no merge to 271 */
    EXPECT_IDS("\xe4\xbd" "A", 0, 0xe4, 0xbd, 'A');
    EXPECT_IDS("\xed\xa0\x80", 0, 0xed, 0xa0, 0x80);   /* a surrogate */
    EXPECT_IDS("\xc0\xaf", 0, 0xc0, 0xaf);             /* overlong '/' */
    EXPECT_IDS("\xf4\x90\x80\x80", 0, 0xf4, 0x90, 0x80, 0x80); /* above U+10FFFF */
    EXPECT_IDS(" \x80 world", 0, ' ', 0x80, 264);
    static const char s[] = "\xff\xfe hello \xc3\x28 \xe2\x82 \xf0\x9f\x98 end\x80";
    ASSERT_TRUE(roundtrip(tok, s, sizeof s - 1, 0));
    ASSERT_TRUE(roundtrip(tok, s, sizeof s - 1, DSD_TOK_PARSE_SPECIAL));
}

TEST(decode_lossy_follows_unicode)
{
    /* Unicode 16.0 §3.9 Table 3-8: U+FFFD for each maximal subpart.
     * 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c FFFD FFFD d */
    static const char in[] = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
    static const char want[] = "a" DSD_UTF8_REPLACEMENT DSD_UTF8_REPLACEMENT DSD_UTF8_REPLACEMENT
                               "b" DSD_UTF8_REPLACEMENT "c" DSD_UTF8_REPLACEMENT
                               DSD_UTF8_REPLACEMENT "d";
    struct dsd_tok_ids ids = {0};
    struct dsd_tok_text out = {0};
    dsd_tokenizer_encode(tok, in, sizeof in - 1, 0, &ids, NULL);
    ASSERT_TRUE(dsd_tokenizer_decode(tok, ids.ids, ids.len, DSD_TOK_LOSSY, &out, NULL) > 0);
    ASSERT_EQ_STR(out.data, want);
    /* Without the flag the bytes come back as they were. */
    out.len = 0;
    dsd_tokenizer_decode(tok, ids.ids, ids.len, 0, &out, NULL);
    ASSERT_TRUE(out.len == sizeof in - 1 && memcmp(out.data, in, out.len) == 0);
    /* Skipping special tokens drops BOS/EOS/EOT, never <｜User｜>. */
    int32_t sp[] = {BOS, 259, USER, EOT, EOS};
    out.len = 0;
    dsd_tokenizer_decode(tok, sp, 5, DSD_TOK_SKIP_SPECIAL, &out, NULL);
    ASSERT_EQ_STR(out.data, "hello" USER_STR);
    /* An id outside the vocabulary is an error that names it; out is unchanged. */
    int32_t bad[] = {259, 999999};
    struct dsd_err err = {{0}};
    out.len = 0;
    ASSERT_EQ_INT(dsd_tokenizer_decode(tok, bad, 2, 0, &out, &err), -ERANGE);
    ASSERT_TRUE(strstr(err.msg, "999999") != NULL);
    ASSERT_EQ_INT(out.len, 0);
    int32_t neg[] = {-1};
    ASSERT_EQ_INT(dsd_tokenizer_decode(tok, neg, 1, 0, &out, NULL), -ERANGE);
    dsd_tok_ids_free(&ids);
    dsd_tok_text_free(&out);
}

TEST(utf8_scan_rules)
{
    size_t len;
    ASSERT_EQ_INT(dsd_utf8_scan((const uint8_t *)"\xe4\xbd\xa0", 3, &len), DSD_UTF8_CHAR);
    ASSERT_EQ_INT(len, 3);
    ASSERT_EQ_INT(dsd_utf8_scan((const uint8_t *)"\xe4\xbd", 2, &len), DSD_UTF8_TRUNCATED);
    ASSERT_EQ_INT(dsd_utf8_scan((const uint8_t *)"\xe4\xbd" "A", 3, &len), DSD_UTF8_INVALID);
    ASSERT_EQ_INT(len, 2);
    ASSERT_EQ_INT(dsd_utf8_scan((const uint8_t *)"\xe0\x80", 2, &len), DSD_UTF8_INVALID);
    ASSERT_EQ_INT(len, 1); /* E0 needs A0..BF next */
    ASSERT_EQ_INT(dsd_utf8_scan((const uint8_t *)"\xf4\x8f\xbf\xbf", 4, &len), DSD_UTF8_CHAR);
    ASSERT_EQ_INT(dsd_utf8_scan((const uint8_t *)"\xf5", 1, &len), DSD_UTF8_INVALID);
    ASSERT_EQ_INT(dsd_utf8_truncated_tail((const uint8_t *)"ab\xf0\x9f\x98", 5), 3);
    ASSERT_EQ_INT(dsd_utf8_truncated_tail((const uint8_t *)"ab\xf0\x9f\x98\x80", 6), 0);
    ASSERT_EQ_INT(dsd_utf8_truncated_tail((const uint8_t *)"ab\x80", 3), 0);
    ASSERT_EQ_INT(dsd_utf8_valid_prefix((const uint8_t *)"hello w\xc3\xa9rld\xff!", 14), 12);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

TEST(roundtrip_random_text)
{
    /* Random well-formed text from all planes, and random bytes: decode(encode(x)) == x in
     * both modes; lossy decode is well-formed. */
    char buf[512];
    int bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 0;
        int len = (int)(rnd() % 60);
        for (int k = 0; k < len && n + 4 < sizeof buf; k++) {
            uint32_t cp;
            switch (rnd() % 4) {
            case 0: cp = rnd() % 0x80; break;
            case 1: cp = " \t\n\r"[rnd() % 4]; break;
            case 2: cp = rnd() % 0x10000; break;
            default: cp = rnd() % 0x110000; break;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD;
            if (iter % 3 == 2 && rnd() % 5 == 0) {
                buf[n++] = (char)(rnd() & 0xFF); /* a stray byte */
                continue;
            }
            n += dsd_utf8_encode(cp, (uint8_t *)buf + n);
        }
        bad += !roundtrip(tok, buf, n, 0) + !roundtrip(tok, buf, n, DSD_TOK_PARSE_SPECIAL);
    }
    ASSERT_EQ_INT(bad, 0);
}

TEST(huge_inputs)
{
    /* A megabyte without a break: one piece of spaces, one of letters, one of digits and
     * one of CJK; must neither crash nor lose bytes. */
    size_t n = 1 << 20;
    char *s = malloc(n);
    static const char *const fills[] = {" ", "a", "7", "\xe4\xbd\xa0", "\n", "ab"};
    for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
        size_t fl = strlen(fills[f]), m = n / fl * fl;
        for (size_t i = 0; i < m; i += fl)
            memcpy(s + i, fills[f], fl);
        ASSERT_TRUE(roundtrip(tok, s, m, 0));
    }
    free(s);
}

struct thread_arg {
    const char *text;
    size_t len;
    struct dsd_tok_ids want;
    int bad;
};

static void *encode_thread(void *p)
{
    struct thread_arg *a = p;
    struct dsd_tok_ids ids = {0};
    for (int i = 0; i < 200; i++) {
        ids.len = 0;
        dsd_tokenizer_encode(tok, a->text, a->len, DSD_TOK_PARSE_SPECIAL, &ids, NULL);
        a->bad += ids.len != a->want.len || (ids.len && memcmp(ids.ids, a->want.ids, ids.len * 4) != 0);
    }
    dsd_tok_ids_free(&ids);
    return NULL;
}

TEST(concurrent_encodes_agree)
{
    static const char *const texts[] = {"hello world hello world 123 aaaa",
                                        USER_STR "hello\xe4\xbd\xa0\xf0\x9f\x98\x80 END\n\n",
                                        "    spaces    and\ttabs\r\n", "\xff\xfe bytes"};
    struct thread_arg args[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct thread_arg){.text = texts[i % 4], .len = strlen(texts[i % 4])};
        dsd_tokenizer_encode(tok, args[i].text, args[i].len, DSD_TOK_PARSE_SPECIAL, &args[i].want, NULL);
    }
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, encode_thread, &args[i]);
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        bad += args[i].bad;
        dsd_tok_ids_free(&args[i].want);
    }
    ASSERT_EQ_INT(bad, 0);
}

TEST(lookups_and_config)
{
    ASSERT_EQ_INT(dsd_tokenizer_token_id(tok, USER_STR, strlen(USER_STR)), USER);
    ASSERT_EQ_INT(dsd_tokenizer_token_id(tok, "\xc4\xa0w", 3), 260); /* "Ġw" = " w" */
    ASSERT_EQ_INT(dsd_tokenizer_token_id(tok, "nope", 4), -1);
    ASSERT_TRUE(dsd_tokenizer_is_special(tok, BOS));
    ASSERT_TRUE(!dsd_tokenizer_is_special(tok, USER));
    ASSERT_TRUE(dsd_tokenizer_is_added(tok, USER));
    ASSERT_TRUE(!dsd_tokenizer_is_added(tok, 259));
    ASSERT_EQ_INT(dsd_tokenizer_n_ids(tok), SYNTH_FIRST_ADDED + 6);
    size_t len;
    const char *p = dsd_tokenizer_piece(tok, 264, &len);
    ASSERT_TRUE(p && len == 6 && memcmp(p, " world", 6) == 0);
    ASSERT_TRUE(dsd_tokenizer_piece(tok, -5, &len) == NULL);
    ASSERT_EQ_INT(dsd_tokenizer_bos_id(tok), -1); /* no tokenizer_config.json */
    ASSERT_TRUE(!dsd_tokenizer_add_bos(tok));

    char *json = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES, NULL, NULL, 0);
    struct dsd_err err = {{0}};
    struct dsd_tokenizer *t = load_text(
        json, "{\"add_bos_token\": true, \"bos_token\": {\"content\": \"" BOS_STR "\"}, "
              "\"eos_token\": \"<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>\"}",
        &err);
    ASSERT_TRUE(t != NULL);
    if (t) {
        ASSERT_EQ_INT(dsd_tokenizer_bos_id(t), BOS);
        ASSERT_EQ_INT(dsd_tokenizer_eos_id(t), EOS);
        ASSERT_TRUE(dsd_tokenizer_add_bos(t));
        dsd_tokenizer_free(t);
    }

    /* From files: a directory holding tokenizer.json + tokenizer_config.json. */
    char dir[] = "/tmp/dsd_tok_XXXXXX";
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    f = fopen(path, "w");
    fputs("{\"bos_token\": \"" BOS_STR "\", \"add_bos_token\": false}", f);
    fclose(f);
    ASSERT_EQ_INT(dsd_tokenizer_load(&t, dir, &err), 0);
    if (t) {
        ASSERT_EQ_INT(dsd_tokenizer_bos_id(t), BOS);
        dsd_tokenizer_free(t);
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ASSERT_EQ_INT(dsd_tokenizer_load(&t, path, &err), 0);
    dsd_tokenizer_free(t);
    /* A broken config next to a good tokenizer.json is an error naming the config. */
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    f = fopen(path, "w");
    fputs("{\"bos_token\": \"<nope>\"}", f);
    fclose(f);
    ASSERT_EQ_INT(dsd_tokenizer_load(&t, dir, &err), -EINVAL);
    ASSERT_TRUE(strstr(err.msg, "tokenizer_config.json") && strstr(err.msg, "<nope>"));
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    unlink(path);
    ASSERT_EQ_INT(dsd_tokenizer_load(&t, dir, &err), -ENOENT);
    ASSERT_TRUE(strstr(err.msg, "tokenizer.json") != NULL);
    rmdir(dir);
    ASSERT_EQ_INT(dsd_tokenizer_load(&t, "/nonexistent/tokenizer.json", &err), -ENOENT);
    free(json);
}

/* ------------------------------------------------------------------------------------ */
/* Load errors: each broken file is refused with a message naming what is wrong.        */

/* Replaces the first occurrence of `from` in the synthetic JSON by `to`. */
static char *edited(const char *from, const char *to)
{
    char *json = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES, NULL, NULL, 0);
    char *at = strstr(json, from);
    if (!at) {
        fprintf(stderr, "edit target not found: %s\n", from);
        return json;
    }
    size_t fl = strlen(from), tl = strlen(to), n = strlen(json);
    char *out = malloc(n - fl + tl + 1);
    size_t pre = (size_t)(at - json);
    memcpy(out, json, pre);
    memcpy(out + pre, to, tl);
    memcpy(out + pre + tl, at + fl, n - pre - fl + 1);
    free(json);
    return out;
}

static void expect_load_error(const char *json, const char *config, const char *needle,
                              const char *what)
{
    struct dsd_err err = {{0}};
    struct dsd_tokenizer *t = NULL;
    int rc = dsd_tokenizer_load_json(&t, json, strlen(json), config, config ? strlen(config) : 0, &err);
    test_checks_total++;
    if (rc != -EINVAL || t != NULL || !strstr(err.msg, needle))
        TEST_FAIL_AT("%s: rc %d, message \"%s\" (wanted -EINVAL naming \"%s\")", what, rc, err.msg, needle);
    dsd_tokenizer_free(t);
}

#define EXPECT_EDIT_ERROR(from, to, needle)                                        \
    do {                                                                           \
        char *j_ = edited(from, to);                                               \
        expect_load_error(j_, NULL, needle, from " -> " to);                       \
        free(j_);                                                                  \
    } while (0)

TEST(load_errors)
{
    expect_load_error("{\"model\": ", NULL, "not JSON", "truncated");
    expect_load_error("not json at all", NULL, "not JSON", "garbage");
    expect_load_error("[1, 2]", NULL, "expected an object", "an array");
    expect_load_error("{}", NULL, "\"model\" is missing", "empty object");
    EXPECT_EDIT_ERROR("\"type\":\"BPE\"", "\"type\":\"Unigram\"", "Unigram");
    EXPECT_EDIT_ERROR("\"type\":\"BPE\"", "\"type\":\"WordPiece\"", "WordPiece");
    EXPECT_EDIT_ERROR("\"vocab\":", "\"vocabulary\":", "model.vocab is missing");
    EXPECT_EDIT_ERROR("\"merges\":", "\"mergers\":", "model.merges is missing");
    EXPECT_EDIT_ERROR("\"merges\":[", "\"merges\":[7,", "model.merges[0]");
    EXPECT_EDIT_ERROR("\"merges\":[\"h e\"", "\"merges\":[\"h e x\"", "not two tokens");
    EXPECT_EDIT_ERROR("\"merges\":[\"h e\"", "\"merges\":[\"h \xe2\x82\xac\"", "not in model.vocab");
    EXPECT_EDIT_ERROR("\"merges\":[\"h e\"", "\"merges\":[\"h e\",\"E D\"", "makes \"ED\"");
    EXPECT_EDIT_ERROR("\"!\":33", "\"!\":\"33\"", "model.vocab[\"!\"]");
    EXPECT_EDIT_ERROR("\"!\":33,", "", "no token for byte 0x21");
    EXPECT_EDIT_ERROR("\"normalizer\":null", "\"normalizer\":{\"type\":\"NFC\"}", "normalizer \"NFC\"");
    EXPECT_EDIT_ERROR("\"pre_tokenizer\":{", "\"pre_tokenizer\":null,\"x\":{", "pre_tokenizer is missing");
    EXPECT_EDIT_ERROR("{\"type\":\"Split\"", "{\"type\":\"Whitespace\"},{\"type\":\"Split\"", "Whitespace");
    EXPECT_EDIT_ERROR("\"add_prefix_space\":false", "\"add_prefix_space\":true", "add_prefix_space");
    EXPECT_EDIT_ERROR("\\\\p{N}{1,3}", "(\\\\p{N}", "does not compile");
    EXPECT_EDIT_ERROR("\\\\p{N}{1,3}", "[a[b]]", "nested character classes");
    EXPECT_EDIT_ERROR("\"behavior\":\"Isolated\"", "\"behavior\":\"Sideways\"", "behavior");
    EXPECT_EDIT_ERROR("\"decoder\":{\"type\":\"ByteLevel\"}", "\"decoder\":{\"type\":\"WordPiece\"}", "decoder \"WordPiece\"");
    EXPECT_EDIT_ERROR("\"added_tokens\":[", "\"added_tokens\":7,\"x\":[", "added_tokens is");
    EXPECT_EDIT_ERROR("\"added_tokens\":[", "\"added_tokens\":[{\"id\":5},", "added_tokens[0]");
    EXPECT_EDIT_ERROR("\"added_tokens\":[", "\"added_tokens\":[{\"id\":300,\"content\":\"<think>\"},", "appears twice");
    EXPECT_EDIT_ERROR("\"model\":{", "\"model\":{\"dropout\":0.1,", "dropout");
    EXPECT_EDIT_ERROR("\"model\":{", "\"model\":{\"continuing_subword_prefix\":\"##\",", "continuing_subword_prefix");
    EXPECT_EDIT_ERROR("\"version\":\"1.0\"", "\"version\":\"2.0\"", "version");

    /* ByteLevel that is not the last step. */
    char *j = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES,
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\",\"add_prefix_space\":false},"
        "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\",\"invert\":false}]}",
        NULL, 0);
    expect_load_error(j, NULL, "must be the last", "ByteLevel first");
    free(j);
    j = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES,
        "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\",\"invert\":false}", NULL, 0);
    expect_load_error(j, NULL, "no ByteLevel", "no ByteLevel");
    free(j);
    /* Config errors. */
    expect_load_error(j = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES, NULL, NULL, 0),
                      "{oops", "tokenizer_config.json is not JSON", "bad config");
    expect_load_error(j, "{\"eos_token\": 5}", "eos_token", "eos not a string");
    expect_load_error(j, "{\"add_bos_token\": \"yes\"}", "add_bos_token", "add_bos not a bool");
    free(j);
}

int main(void)
{
    char *json = synth_tokenizer_json(SYNTH_MERGES, SYNTH_N_MERGES, NULL, NULL, 0);
    struct dsd_err err = {{0}};
    tok = json ? load_text(json, NULL, &err) : NULL;
    free(json);
    if (!tok) {
        fprintf(stderr, "cannot load the synthetic tokenizer: %s\n", err.msg);
        return 1;
    }
    RUN(bpe_merges_by_rank);
    RUN(bpe_long_piece_uses_same_order);
    RUN(added_tokens_only_when_asked);
    RUN(added_token_flags);
    RUN(invalid_utf8_is_byte_tokens);
    RUN(decode_lossy_follows_unicode);
    RUN(utf8_scan_rules);
    RUN(roundtrip_random_text);
    RUN(huge_inputs);
    RUN(concurrent_encodes_agree);
    RUN(lookups_and_config);
    RUN(load_errors);
    dsd_tokenizer_free(tok);
    return test_report();
}
