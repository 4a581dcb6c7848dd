/*
 * daemon/text/tokenizer_internal.h: the loaded tokenizer's tables, shared by
 * tokenizer_load.c (builds them), tokenizer_bpe.c (merges) and tokenizer.c (encode,
 * decode). Nothing here is public API.
 */
#ifndef DSD_TEXT_TOKENIZER_INTERNAL_H
#define DSD_TEXT_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenizer.h"

/* Ids above this are refused at load: the per-id tables are dense arrays (and a hostile
 * file must not make us allocate much). Real vocabularies stay below 300,000. */
#define TOK_MAX_ID (1 << 22)

enum tok_split_behavior {
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
};

/* One pre-tokenizer step: every piece from the step before is cut by this regex. It is
 * compiled twice: re_new knows the code points Unicode assigned after PCRE2's tables
 * (tokenizer_regex.c) and is slower, so text without any of them uses re. */
struct tok_split {
    pcre2_code *re, *re_new;
    bool jit, jit_new; /* JIT-compiled (pcre2_jit_match) or interpreted (pcre2_match) */
    bool invert;
    enum tok_split_behavior behavior;
};

/* An entry of "added_tokens". */
struct tok_added {
    int32_t id;
    uint32_t off, len; /* content in tok->blob */
    bool special, normalized, lstrip, rstrip, single_word;
};

/* A byte trie over added-token contents for leftmost-longest matching. Node 0 is the root;
 * children are a sibling list (fan-out is tiny: the contents share long prefixes). */
struct tok_trie_node {
    uint32_t child, sibling; /* 0 = none (the root is never a child or sibling) */
    int32_t added;           /* index into tok->added of the token ending here, or -1 */
    uint8_t byte;
};

struct tok_trie {
    struct tok_trie_node *nodes;
    uint32_t n, cap;
    uint64_t first[4]; /* bitmap of bytes that start some content: a fast skip */
    int only_first;    /* the one byte all contents start with, or -1 */
};

/* Merge rank table: open addressing on the pair (left id, right id). */
struct tok_merge_slot {
    uint64_t key; /* (uint64_t)left << 32 | right; TOK_MERGE_EMPTY when free */
    uint32_t rank;
    int32_t id; /* the merged token */
};
#define TOK_MERGE_EMPTY UINT64_MAX

/* String -> id table (token strings as tokenizer.json writes them, and for
 * ignore_merges the raw bytes of vocabulary tokens). */
struct tok_str_slot {
    uint64_t hash;
    uint32_t off, len; /* key in tok->blob */
    int32_t id;        /* -1 when free */
};

struct tok_str_table {
    struct tok_str_slot *slots;
    size_t mask;
};

#define TOK_PIECE_EXISTS 1u
#define TOK_PIECE_ADDED 2u
#define TOK_PIECE_SPECIAL 4u
#define TOK_PIECE_BPE_SELF 8u    /* a vocabulary token whose own bytes BPE-merge into it */
#define TOK_PIECE_BYTE_LEVEL 16u /* written in the byte-level alphabet (BPE can make it) */

struct tok_piece {
    uint32_t off, len; /* the bytes the id stands for, in tok->blob */
    uint8_t flags;
};

struct dsd_tokenizer {
    uint64_t generation; /* unique per load: tags this tokenizer's piece-cache entries */
    char *blob; /* every string the tables point into */
    size_t blob_len, blob_cap;

    struct tok_piece *pieces; /* indexed by id, n_ids entries */
    int32_t n_ids;

    int32_t byte_id[256]; /* the single-byte token of each byte */

    struct tok_merge_slot *merges;
    size_t merges_mask;
    uint32_t n_merges;
    bool ignore_merges;

    struct tok_str_table by_string; /* tokenizer.json strings -> id */
    struct tok_str_table by_bytes;  /* raw bytes -> vocabulary id (byte-level tokens) */
    size_t max_piece_len;           /* longest key of by_bytes */

    struct tok_split *splits;
    int n_splits;

    struct tok_added *added;
    int n_added;
    struct tok_trie trie_raw;        /* added tokens with "normalized": false */
    struct tok_trie trie_normalized; /* the others, matched in what the first pass left */
    bool any_lstrip_rstrip_single;
    pcre2_code *word_char_re; /* single_word's \w test, compiled only when needed */

    int32_t bos_id, eos_id;
    bool add_bos;
};

/* tokenizer_bpe.c: looks up the merge of (left, right); false when there is none. */
static inline uint64_t tok_pair_key(int32_t left, int32_t right)
{
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static inline size_t tok_pair_slot(uint64_t key, size_t mask)
{
    /* Fibonacci hashing: one multiply spreads the ids' low bits over the high bits. */
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static inline bool tok_merge_find(const struct dsd_tokenizer *tok, int32_t left, int32_t right,
                                  uint32_t *rank, int32_t *id)
{
    uint64_t key = tok_pair_key(left, right);
    for (size_t i = tok_pair_slot(key, tok->merges_mask);; i = (i + 1) & tok->merges_mask) {
        const struct tok_merge_slot *s = &tok->merges[i];
        if (s->key == key) {
            *rank = s->rank;
            *id = s->id;
            return true;
        }
        if (s->key == TOK_MERGE_EMPTY)
            return false;
    }
}

/* Per-call scratch for the merge loop, grown on demand and freed by the caller. */
struct tok_bpe_scratch {
    void *mem;
    size_t cap; /* bytes */
};

/* Appends the BPE ids of the byte string w[0..n) (n >= 1) to out. Returns 0 or -ENOMEM.
 * tok_bpe_merge always runs the merge loop; tok_bpe_word first tries the vocabulary. */
int tok_bpe_merge(const struct dsd_tokenizer *tok, const uint8_t *w, size_t n,
                  struct tok_bpe_scratch *scratch, struct dsd_tok_ids *out);
int tok_bpe_word(const struct dsd_tokenizer *tok, const uint8_t *w, size_t n,
                 struct tok_bpe_scratch *scratch, struct dsd_tok_ids *out);

/* tokenizer_regex.c: rewrites an Oniguruma pattern (what tokenizer.json patterns are
 * written for) into PCRE2 syntax with the same meaning, appending to out. Returns 0, or
 * -EINVAL / -ENOMEM with *why saying what cannot be translated. */
int tok_regex_translate(const char *pattern, size_t len, bool delta, struct dsd_tok_text *out,
                        const char **why);

/* Whether well-formed s[0..n) has a code point whose category PCRE2 may not know (then the
 * splits' re_new must be used). tok_regex_init() must have run once before. */
bool tok_regex_needs_delta(const uint8_t *s, size_t n);
void tok_regex_init(void);

/* tokenizer_load.c helpers shared with tokenizer.c. */
int32_t tok_str_find(const struct dsd_tokenizer *tok, const struct tok_str_table *t,
                     const char *s, size_t len);

#endif
