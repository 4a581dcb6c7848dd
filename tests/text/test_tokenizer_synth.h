/*
 * tests/text/test_tokenizer_synth.h: small tokenizer.json files built in memory, for unit
 * tests and the fuzzer (which cannot use npm).
 *
 * The vocabulary is the 256 byte tokens with id == byte value, then one token per merge in
 * order (ids 256, 257, ...), then the added tokens. Merges are given as raw byte strings
 * ({"a", "b"} makes "ab"); this file writes them in the byte-level alphabet itself, so a
 * test's expected ids never come from the code under test.
 */
#ifndef TEST_TOKENIZER_SYNTH_H
#define TEST_TOKENIZER_SYNTH_H

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* DeepSeek V3's pre-tokenizer, as its tokenizer.json has it. */
#define SYNTH_DEEPSEEK_PRE                                                                   \
    "{\"type\":\"Sequence\",\"pretokenizers\":["                                              \
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\",\"invert\":false}," \
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+\"},\"behavior\":\"Isolated\",\"invert\":false}," \
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[!\\\"#$%&'()*+,\\\\-./:;<=>?@\\\\[\\\\\\\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\\\p{L}\\\\p{P}\\\\p{S}]?[\\\\p{L}\\\\p{M}]+| ?[\\\\p{P}\\\\p{S}]+[\\r\\n]*|\\\\s*[\\r\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false}," \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}"

/* Added tokens after the merges: {"content", special, normalized} in id order. */
struct synth_added {
    const char *content;
    int special, normalized, lstrip, rstrip, single_word;
};

static const struct synth_added SYNTH_DEFAULT_ADDED[] = {
    {"<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", 1, 0, 0, 0, 0},
    {"<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", 1, 0, 0, 0, 0},
    {"<\xef\xbd\x9cUser\xef\xbd\x9c>", 0, 1, 0, 0, 0},
    {"<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>", 0, 1, 0, 0, 0},
    {"<|EOT|>", 1, 1, 0, 0, 0},
    {"<think>", 0, 1, 0, 0, 0},
};

/* The byte-level form of raw bytes s[0..n) (GPT-2's byte -> character table, written out
 * here independently of the tokenizer's own). */
static char *synth_byte_level(const char *s, size_t n)
{
    char *out = malloc(2 * n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned b = (unsigned char)s[i];
        unsigned cp = b;
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
            unsigned k = 0;
            for (unsigned x = 0; x < b; x++)
                k += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
            cp = 256 + k;
        }
        if (cp < 0x80) {
            out[w++] = (char)cp;
        } else {
            out[w++] = (char)(0xC0 | cp >> 6);
            out[w++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[w] = 0;
    return out;
}

/* A tokenizer.json text (malloc'd). pre_tokenizer: JSON text, NULL = DeepSeek's. added:
 * NULL = SYNTH_DEFAULT_ADDED. Returns NULL if a merge's parts are not earlier tokens. */
static char *synth_tokenizer_json(const char *const (*merges)[2], size_t n_merges,
                                  const char *pre_tokenizer, const struct synth_added *added,
                                  size_t n_added)
{
    if (!added) {
        added = SYNTH_DEFAULT_ADDED;
        n_added = sizeof SYNTH_DEFAULT_ADDED / sizeof SYNTH_DEFAULT_ADDED[0];
    }
    json_t *vocab = json_object(), *mlist = json_array(), *alist = json_array();
    int id = 0;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        char *bl = synth_byte_level(&c, 1);
        json_object_set_new(vocab, bl, json_integer(id++));
        free(bl);
    }
    for (size_t i = 0; i < n_merges; i++) {
        char *a = synth_byte_level(merges[i][0], strlen(merges[i][0]));
        char *b = synth_byte_level(merges[i][1], strlen(merges[i][1]));
        size_t la = strlen(a), lb = strlen(b);
        char *ab = malloc(la + lb + 2);
        memcpy(ab, a, la);
        memcpy(ab + la, b, lb + 1);
        if (!json_object_get(vocab, ab))
            json_object_set_new(vocab, ab, json_integer(id++));
        ab[la] = ' ';
        memcpy(ab + la + 1, b, lb + 1);
        json_array_append_new(mlist, json_string(ab));
        free(a);
        free(b);
        free(ab);
    }
    for (size_t i = 0; i < n_added; i++) {
        json_t *o = json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id++, "content",
                              added[i].content, "special", added[i].special, "normalized",
                              added[i].normalized, "lstrip", added[i].lstrip, "rstrip",
                              added[i].rstrip, "single_word", added[i].single_word);
        json_array_append_new(alist, o);
    }
    json_t *pre = json_loads(pre_tokenizer ? pre_tokenizer : SYNTH_DEEPSEEK_PRE, 0, NULL);
    json_t *root = json_pack("{s:s, s:o, s:n, s:o, s:{s:s}, s:{s:s, s:o, s:o}}", "version", "1.0",
                             "added_tokens", alist, "normalizer", "pre_tokenizer", pre, "decoder",
                             "type", "ByteLevel", "model", "type", "BPE", "vocab", vocab, "merges",
                             mlist);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return text;
}

/* Merges for "hello world"-ish text, digits, and a few multi-byte characters. */
static const char *const SYNTH_MERGES[][2] = {
    {"h", "e"},       {"l", "l"},         {"he", "ll"},           {"hell", "o"},
    {" ", "w"},       {"o", "r"},         {" w", "or"},           {"l", "d"},
    {" wor", "ld"},   {"a", "a"},         {"aa", "aa"},           {" ", " "},
    {"  ", "  "},     {"1", "2"},         {"12", "3"},            {"\xe4", "\xbd"},
    {"\xe4\xbd", "\xa0"}, {"\xf0", "\x9f"}, {"\xf0\x9f", "\x98"}, {"\xf0\x9f\x98", "\x80"},
    {"E", "N"},       {"EN", "D"},        {"\n", "\n"},
};
#define SYNTH_N_MERGES (sizeof SYNTH_MERGES / sizeof SYNTH_MERGES[0])
/* ids: 256 "he", 257 "ll", 258 "hell", 259 "hello", 260 " w", 261 "or", 262 " wor",
 * 263 "ld", 264 " world", 265 "aa", 266 "aaaa", 267 "  ", 268 "    ", 269 "12", 270 "123",
 * 271 "\xe4\xbd", 272 "你", 273 "\xf0\x9f", 274 "\xf0\x9f\x98", 275 "😀", 276 "EN",
 * 277 "END", 278 "\n\n"; added tokens from 279 in SYNTH_DEFAULT_ADDED's order. */
#define SYNTH_FIRST_ADDED 279

#endif
