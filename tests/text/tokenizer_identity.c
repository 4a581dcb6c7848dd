/*
 * tests/text/tokenizer_identity.c: our tokenizer against Hugging Face's, on the corpus and
 * reference ids that tokenizer_reference.js wrote (tokenizer_identity.sh runs both).
 *
 *   tokenizer_identity TOKENIZER_JSON REF_DIR [--no-perf-gate]
 *
 * Checks, for every corpus string: our ids equal HF's with added tokens parsed
 * (DSD_TOK_PARSE_SPECIAL) and HF's with added tokens removed from the file (our default);
 * decode(encode(x)) == x in both modes; every reference decode (every single id, random id
 * sequences, with and without skipping special tokens) equals HF's text; invalid UTF-8
 * spliced between corpus strings encodes as the rule in tokenizer.h says. Then measures
 * encode throughput against HF's number from the same run.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test.h"
#include "tokenizer.h"

#define MAX_REPORT 8

static const char *ref_dir;

static char *slurp(const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", ref_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* Splits buf into lines in place (the last newline ends the last line). */
static char **split_lines(char *buf, size_t len, size_t *count)
{
    size_t n = 0, cap = 1024;
    char **lines = malloc(cap * sizeof *lines);
    char *p = buf, *end = buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        *nl = 0;
        if (n == cap)
            lines = realloc(lines, (cap *= 2) * sizeof *lines);
        lines[n++] = p;
        p = nl + 1;
    }
    *count = n;
    return lines;
}

struct str {
    char *s;
    size_t len;
};

static struct str *load_corpus(const char *name, size_t *count)
{
    size_t len;
    char *buf = slurp(name, &len);
    char **lines = split_lines(buf, len, count);
    struct str *c = calloc(*count, sizeof *c);
    for (size_t i = 0; i < *count; i++) {
        json_error_t je;
        json_t *v = json_loads(lines[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!json_is_string(v)) {
            fprintf(stderr, "%s line %zu: %s\n", name, i + 1, je.text);
            exit(1);
        }
        c[i].len = json_string_length(v);
        c[i].s = malloc(c[i].len + 1);
        memcpy(c[i].s, json_string_value(v), c[i].len + 1);
        json_decref(v);
    }
    free(lines);
    free(buf);
    return c;
}

static void parse_ids(const char *line, struct dsd_tok_ids *out)
{
    out->len = 0;
    const char *p = line;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        dsd_tok_ids_push(out, (int32_t)v);
        p = end;
    }
}

/* Prints s escaped (C style), at most max bytes. */
static void print_escaped(FILE *f, const char *s, size_t len, size_t max)
{
    fputc('"', f);
    for (size_t i = 0; i < len && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
    if (len > max)
        fprintf(f, "... (%zu bytes)", len);
}

static void print_ids_around(FILE *f, const struct dsd_tokenizer *tok, const struct dsd_tok_ids *v,
                             size_t at)
{
    size_t from = at > 4 ? at - 4 : 0, to = at + 8 < v->len ? at + 8 : v->len;
    fprintf(f, "[%s", from ? "... " : "");
    for (size_t i = from; i < to; i++) {
        size_t len;
        const char *p = dsd_tokenizer_piece(tok, v->ids[i], &len);
        fprintf(f, "%s%d=", i > from ? ", " : "", v->ids[i]);
        if (p)
            print_escaped(f, p, len, 40);
        else
            fputs("?", f);
    }
    fprintf(f, "%s] (%zu ids)", to < v->len ? " ..." : "", v->len);
}

static size_t first_diff(const struct dsd_tok_ids *a, const struct dsd_tok_ids *b)
{
    size_t i = 0;
    while (i < a->len && i < b->len && a->ids[i] == b->ids[i])
        i++;
    return i;
}

static bool ids_equal(const struct dsd_tok_ids *a, const struct dsd_tok_ids *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->ids, b->ids, a->len * sizeof *a->ids) == 0);
}

static const struct dsd_tokenizer *tok;
static struct str *corpus;
static size_t n_corpus;

/* Compares the ids of every string of c with the reference file; with round_trip also
 * requires decode(encode(x)) == x. */
static void check_mode(const struct dsd_tokenizer *t, const struct str *c, size_t n_c,
                       const char *ref_file, unsigned flags, const char *mode, bool round_trip)
{
    size_t len, n;
    char *buf = slurp(ref_file, &len);
    char **lines = split_lines(buf, len, &n);
    ASSERT_EQ_INT(n, n_c);
    struct dsd_tok_ids ours = {0}, ref = {0};
    struct dsd_tok_text back = {0};
    size_t mismatches = 0, roundtrip_bad = 0, ids_total = 0;
    for (size_t i = 0; i < n && i < n_c; i++) {
        ours.len = 0;
        struct dsd_err err = {{0}};
        long r = dsd_tokenizer_encode(t, c[i].s, c[i].len, flags, &ours, &err);
        if (r < 0) {
            TEST_FAIL_AT("%s: encode of string %zu failed: %s", mode, i, err.msg);
            continue;
        }
        parse_ids(lines[i], &ref);
        ids_total += ref.len;
        test_checks_total++;
        if (!ids_equal(&ours, &ref)) {
            if (mismatches++ < MAX_REPORT) {
                size_t d = first_diff(&ours, &ref);
                fprintf(stderr, "MISMATCH (%s) string %zu (line %zu of the corpus) ", mode, i, i + 1);
                print_escaped(stderr, c[i].s, c[i].len, 300);
                fprintf(stderr, "\n  first difference at id index %zu\n  ours: ", d);
                print_ids_around(stderr, t, &ours, d);
                fprintf(stderr, "\n  HF:   ");
                print_ids_around(stderr, t, &ref, d);
                fputc('\n', stderr);
            }
        }
        if (!round_trip)
            continue;
        back.len = 0;
        test_checks_total++;
        if (dsd_tokenizer_decode(t, ours.ids, ours.len, 0, &back, &err) < 0 ||
            back.len != c[i].len || memcmp(back.data, c[i].s, back.len) != 0) {
            if (roundtrip_bad++ < MAX_REPORT) {
                fprintf(stderr, "ROUND TRIP (%s) string %zu: decode(encode(x)) != x for x = ", mode, i);
                print_escaped(stderr, c[i].s, c[i].len, 200);
                fputc('\n', stderr);
            }
        }
    }
    printf("identity (%s): %zu strings, %zu HF ids, %zu mismatches", mode, n_c, ids_total, mismatches);
    if (round_trip)
        printf(", %zu round-trip failures", roundtrip_bad);
    printf("\n");
    if (mismatches || roundtrip_bad) {
        test_failures_total++;
        test_current_failed = 1;
    }
    dsd_tok_ids_free(&ours);
    dsd_tok_ids_free(&ref);
    dsd_tok_text_free(&back);
    free(lines);
    free(buf);
}

TEST(identity_parse_special)
{
    check_mode(tok, corpus, n_corpus, "ref_special.txt", DSD_TOK_PARSE_SPECIAL,
               "DeepSeek V3, added tokens parsed", true);
}

TEST(identity_plain_text)
{
    check_mode(tok, corpus, n_corpus, "ref_plain.txt", 0, "DeepSeek V3, added tokens as text", true);
}

/* Small tokenizers with the features DeepSeek's file does not use (tokenizer_reference.js
 * says which), against HF on their own corpus. */
TEST(identity_synthetic_tokenizers)
{
    size_t len, n_names, n_c;
    char *names_buf = slurp("synth_names.txt", &len);
    char **names = split_lines(names_buf, len, &n_names);
    struct str *c = load_corpus("synth_corpus.jsonl", &n_c);
    ASSERT_TRUE(n_names >= 4);
    for (size_t k = 0; k < n_names; k++) {
        char path[4096], file[256], mode[128];
        snprintf(path, sizeof path, "%s/synth_%s.json", ref_dir, names[k]);
        struct dsd_err err = {{0}};
        struct dsd_tokenizer *t;
        if (dsd_tokenizer_load(&t, path, &err) < 0) {
            TEST_FAIL_AT("cannot load %s: %s", path, err.msg);
            continue;
        }
        /* "Removed" drops text, lstrip/rstrip tokens absorb spaces: no round trip there. */
        bool lossless = strcmp(names[k], "behaviors") != 0;
        snprintf(file, sizeof file, "synth_%s_special.txt", names[k]);
        snprintf(mode, sizeof mode, "synthetic %s, added tokens parsed", names[k]);
        check_mode(t, c, n_c, file, DSD_TOK_PARSE_SPECIAL, mode, false);
        snprintf(file, sizeof file, "synth_%s_plain.txt", names[k]);
        snprintf(mode, sizeof mode, "synthetic %s, added tokens as text", names[k]);
        check_mode(t, c, n_c, file, 0, mode, lossless);
        dsd_tokenizer_free(t);
    }
    for (size_t i = 0; i < n_c; i++)
        free(c[i].s);
    free(c);
    free(names);
    free(names_buf);
}

TEST(decode_identity)
{
    size_t len, n;
    char *buf = slurp("ref_decode.jsonl", &len);
    char **lines = split_lines(buf, len, &n);
    struct dsd_tok_ids ids = {0};
    struct dsd_tok_text text = {0};
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        json_error_t je;
        json_t *o = json_loads(lines[i], JSON_ALLOW_NUL, &je);
        json_t *arr = json_object_get(o, "ids");
        ids.len = 0;
        for (size_t k = 0; k < json_array_size(arr); k++)
            dsd_tok_ids_push(&ids, (int32_t)json_integer_value(json_array_get(arr, k)));
        static const char *const keys[2] = {"text", "skip"};
        for (int skip = 0; skip < 2; skip++) {
            json_t *want = json_object_get(o, keys[skip]);
            text.len = 0;
            struct dsd_err err = {{0}};
            long r = dsd_tokenizer_decode(tok, ids.ids, ids.len,
                                          DSD_TOK_LOSSY | (skip ? DSD_TOK_SKIP_SPECIAL : 0), &text, &err);
            test_checks_total++;
            if (r < 0 || !json_is_string(want) || text.len != json_string_length(want) ||
                memcmp(text.data, json_string_value(want), text.len) != 0) {
                if (bad++ < MAX_REPORT) {
                    fprintf(stderr, "DECODE MISMATCH line %zu (%s): ids %s\n  ours: ", i + 1, keys[skip],
                            json_dumps(arr, JSON_COMPACT));
                    if (r < 0)
                        fprintf(stderr, "error %s", err.msg);
                    else
                        print_escaped(stderr, text.data, text.len, 200);
                    fprintf(stderr, "\n  HF:   ");
                    if (json_is_string(want))
                        print_escaped(stderr, json_string_value(want), json_string_length(want), 200);
                    fputc('\n', stderr);
                }
            }
        }
        json_decref(o);
    }
    printf("decode: %zu id sequences x 2 (special kept / skipped), %zu mismatches\n", n, bad);
    if (bad) {
        test_failures_total++;
        test_current_failed = 1;
    }
    dsd_tok_ids_free(&ids);
    dsd_tok_text_free(&text);
    free(lines);
    free(buf);
}

/* GPT-2's byte -> character convention, written out again here so the expected ids for
 * invalid bytes do not come from the code under test. */
static int32_t byte_token(uint8_t b)
{
    int code = b, extra = 0;
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    if (!printable) {
        for (int x = 0; x < b; x++) {
            bool p = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
            extra += !p;
        }
        code = 256 + extra;
    }
    char s[4];
    size_t n;
    if (code < 0x80) {
        s[0] = (char)code;
        n = 1;
    } else {
        s[0] = (char)(0xC0 | code >> 6);
        s[1] = (char)(0x80 | (code & 0x3F));
        n = 2;
    }
    return dsd_tokenizer_token_id(tok, s, n);
}

TEST(invalid_utf8_between_corpus_strings)
{
    /* Each is ill-formed on its own and next to any well-formed text. */
    static const struct {
        const char *b;
        size_t n;
    } bad[] = {{"\xFF", 1},         {"\x80", 1},         {"\xC3", 1},         {"\xE4\xBD", 2},
               {"\xF0\x9F\x98", 3}, {"\xC0\xAF", 2},     {"\xED\xA0\x80", 3}, {"\xF4\x90\x80\x80", 4},
               {"\xFE\xFE\xFF", 3}, {"\xE0\x80\x80", 3}, {"\xF8\x88\x80\x80\x80", 5}};
    struct dsd_tok_ids got = {0}, want = {0};
    struct dsd_tok_text back = {0}, in = {0};
    size_t failures = 0, cases = 0;
    for (size_t i = 0; i + 1 < n_corpus && cases < 6000; i += 7) {
        const struct str *a = &corpus[i], *b = &corpus[(i * 31 + 17) % n_corpus];
        if (a->len > 2000 || b->len > 2000)
            continue;
        for (unsigned mode = 0; mode < 2; mode++) {
            unsigned flags = mode ? DSD_TOK_PARSE_SPECIAL : 0;
            size_t k = (i / 7 + mode) % (sizeof bad / sizeof bad[0]);
            in.len = 0;
            dsd_tok_text_append(&in, a->s, a->len);
            dsd_tok_text_append(&in, bad[k].b, bad[k].n);
            dsd_tok_text_append(&in, b->s, b->len);
            got.len = want.len = 0;
            dsd_tokenizer_encode(tok, in.data, in.len, flags, &got, NULL);
            dsd_tokenizer_encode(tok, a->s, a->len, flags, &want, NULL);
            for (size_t j = 0; j < bad[k].n; j++)
                dsd_tok_ids_push(&want, byte_token((uint8_t)bad[k].b[j]));
            dsd_tokenizer_encode(tok, b->s, b->len, flags, &want, NULL);
            back.len = 0;
            dsd_tokenizer_decode(tok, got.ids, got.len, 0, &back, NULL);
            cases++;
            test_checks_total += 2;
            bool ok_ids = ids_equal(&got, &want);
            bool ok_back = back.len == in.len && memcmp(back.data, in.data, in.len) == 0;
            if ((!ok_ids || !ok_back) && failures++ < MAX_REPORT) {
                fprintf(stderr, "INVALID UTF-8 case corpus[%zu] + bad #%zu + corpus[%zu]: %s\n", i, k,
                        (i * 31 + 17) % n_corpus, !ok_ids ? "ids differ from enc(a) + byte tokens + enc(b)"
                                                         : "decode does not give the bytes back");
                size_t d = first_diff(&got, &want);
                fprintf(stderr, "  got:  ");
                print_ids_around(stderr, tok, &got, d);
                fprintf(stderr, "\n  want: ");
                print_ids_around(stderr, tok, &want, d);
                fputc('\n', stderr);
            }
        }
    }
    printf("invalid UTF-8: %zu spliced strings, %zu failures\n", cases, failures);
    if (failures) {
        test_failures_total++;
        test_current_failed = 1;
    }
    dsd_tok_ids_free(&got);
    dsd_tok_ids_free(&want);
    dsd_tok_text_free(&back);
    dsd_tok_text_free(&in);
}

static double now(void)
{
    struct timespec ts;
    /* CPU time of this thread: the machine is shared, and HF's number is CPU time too. */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bool perf_gate = true;

TEST(throughput_vs_hf)
{
    size_t len;
    char *buf = slurp("hf_bench.json", &len);
    json_t *hf = json_loads(buf, 0, NULL);
    free(buf);
    double hf_batch = json_number_value(json_object_get(hf, "batch_mbps"));
    double hf_single = json_number_value(json_object_get(hf, "single_mbps"));
    json_decref(hf);

    size_t bytes = 0;
    for (size_t i = 0; i < n_corpus; i++)
        bytes += corpus[i].len;
    struct dsd_tok_ids ids = {0};
    double best = 1e30, start = now();
    for (int rep = 0; rep < 20; rep++) {
        double t = now();
        for (size_t i = 0; i < n_corpus; i++) {
            ids.len = 0;
            dsd_tokenizer_encode(tok, corpus[i].s, corpus[i].len, DSD_TOK_PARSE_SPECIAL, &ids, NULL);
        }
        t = now() - t;
        if (t < best)
            best = t;
        if (rep >= 2 && now() - start > 2.0)
            break;
    }
    dsd_tok_ids_free(&ids);
    double ours = (double)bytes / best / 1e6;
    printf("throughput (one thread, %zu bytes): ours %.2f MB/s, HF encodeBatch %.2f MB/s, "
           "HF encode per string %.2f MB/s; ours / HF batch = %.2fx\n",
           bytes, ours, hf_batch, hf_single, ours / hf_batch);
    if (perf_gate) {
        /* Ours is many times faster on an idle machine; demanding only parity keeps a busy
         * CI box from failing the test while still catching a real regression. */
        test_checks_total++;
        if (!(ours >= hf_batch))
            TEST_FAIL_AT("ours (%.2f MB/s) is slower than Hugging Face (%.2f MB/s)", ours, hf_batch);
    } else {
        printf("(sanitizer build: throughput not gated)\n");
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tokenizer_identity TOKENIZER_JSON REF_DIR [--no-perf-gate]\n");
        return 2;
    }
    ref_dir = argv[2];
    perf_gate = !(argc > 3 && strcmp(argv[3], "--no-perf-gate") == 0);
    struct dsd_err err = {{0}};
    struct dsd_tokenizer *t;
    if (dsd_tokenizer_load(&t, argv[1], &err) < 0) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], err.msg);
        return 1;
    }
    tok = t;
    corpus = load_corpus("corpus.jsonl", &n_corpus);
    RUN(identity_parse_special);
    RUN(identity_plain_text);
    RUN(identity_synthetic_tokenizers);
    RUN(decode_identity);
    RUN(invalid_utf8_between_corpus_strings);
    RUN(throughput_vs_hf);
    for (size_t i = 0; i < n_corpus; i++)
        free(corpus[i].s);
    free(corpus);
    dsd_tokenizer_free(t);
    return test_report();
}
