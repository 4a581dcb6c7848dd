/*
 * BPE merges for one pre-tokenized piece: start from the piece's bytes as single-byte
 * tokens and repeatedly merge the adjacent pair with the lowest rank, the leftmost one
 * when ranks tie, until no adjacent pair has a merge. That order is exactly what
 * Hugging Face's heap loop produces (it pops the smallest (rank, position) still valid).
 *
 * Two loops give that result. Pieces are short (a word, a number, a run of punctuation),
 * and for them a rescan of a small array after each merge beats any heap. A long piece (a
 * 100 kB word without spaces) would make that quadratic, so above SMALL_MAX symbols a
 * binary heap of candidate merges over a linked list of symbols takes over.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "tokenizer_internal.h"

#define SMALL_MAX 24

static int ids_reserve(struct dsd_tok_ids *out, size_t extra)
{
    if (out->cap - out->len >= extra)
        return 0;
    size_t cap = out->cap ? out->cap : 64;
    while (cap - out->len < extra) {
        if (cap > SIZE_MAX / 2 / sizeof(int32_t))
            return -ENOMEM;
        cap *= 2;
    }
    int32_t *p = realloc(out->ids, cap * sizeof *p);
    if (!p)
        return -ENOMEM;
    out->ids = p;
    out->cap = cap;
    return 0;
}

static int bpe_small(const struct dsd_tokenizer *tok, const uint8_t *w, size_t n,
                     struct dsd_tok_ids *out)
{
    int32_t ids[SMALL_MAX], merged[SMALL_MAX];
    uint32_t rank[SMALL_MAX]; /* rank[i]: merge of (ids[i], ids[i+1]); UINT32_MAX = none */
    size_t m = n;
    for (size_t i = 0; i < n; i++)
        ids[i] = tok->byte_id[w[i]];
    for (size_t i = 0; i + 1 < m; i++)
        if (!tok_merge_find(tok, ids[i], ids[i + 1], &rank[i], &merged[i]))
            rank[i] = UINT32_MAX;

    while (m > 1) {
        uint32_t best = UINT32_MAX;
        size_t b = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) {
                best = rank[i];
                b = i;
            }
        if (best == UINT32_MAX)
            break;
        ids[b] = merged[b];
        /* Drop symbol b+1 and the pair that started at it. */
        size_t tail = m - b - 2;
        memmove(ids + b + 1, ids + b + 2, tail * sizeof *ids);
        if (tail) {
            memmove(rank + b + 1, rank + b + 2, (tail - 1) * sizeof *rank);
            memmove(merged + b + 1, merged + b + 2, (tail - 1) * sizeof *merged);
        }
        m--;
        if (b > 0 && !tok_merge_find(tok, ids[b - 1], ids[b], &rank[b - 1], &merged[b - 1]))
            rank[b - 1] = UINT32_MAX;
        if (b + 1 < m && !tok_merge_find(tok, ids[b], ids[b + 1], &rank[b], &merged[b]))
            rank[b] = UINT32_MAX;
    }
    if (ids_reserve(out, m) < 0)
        return -ENOMEM;
    memcpy(out->ids + out->len, ids, m * sizeof *ids);
    out->len += m;
    return 0;
}

struct cand {
    uint32_t rank;
    uint32_t pos; /* index of the left symbol */
    int32_t id;   /* what the pair merges into, to recognize stale entries */
};

static inline bool cand_less(const struct cand *a, const struct cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct cand *h, size_t *n, struct cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static struct cand heap_pop(struct cand *h, size_t *n)
{
    struct cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c]))
            c++;
        if (!cand_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static int bpe_large(const struct dsd_tokenizer *tok, const uint8_t *w, size_t n,
                     struct tok_bpe_scratch *sc, struct dsd_tok_ids *out)
{
    if (n > UINT32_MAX / 4)
        return -ENOMEM;
    /* Each merge pushes at most two candidates, so 3n bounds the heap. */
    size_t need = n * (3 * sizeof(int32_t)) + 3 * n * sizeof(struct cand);
    if (sc->cap < need) {
        void *p = realloc(sc->mem, need);
        if (!p)
            return -ENOMEM;
        sc->mem = p;
        sc->cap = need;
    }
    struct cand *heap = sc->mem;
    int32_t *ids = (int32_t *)(heap + 3 * n);
    int32_t *prev = ids + n, *next = prev + n; /* -1 = none; ids[i] = -1: merged away */
    size_t hn = 0;

    for (size_t i = 0; i < n; i++) {
        ids[i] = tok->byte_id[w[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        struct cand c = {.pos = (uint32_t)i};
        if (tok_merge_find(tok, ids[i], ids[i + 1], &c.rank, &c.id))
            heap_push(heap, &hn, c);
    }
    size_t m = n;
    while (hn) {
        struct cand c = heap_pop(heap, &hn);
        int32_t r = next[c.pos];
        if (ids[c.pos] < 0 || r < 0)
            continue;
        uint32_t rank;
        int32_t id;
        if (!tok_merge_find(tok, ids[c.pos], ids[r], &rank, &id) || id != c.id || rank != c.rank)
            continue; /* a neighbour changed since this candidate was queued */
        ids[c.pos] = id;
        ids[r] = -1;
        next[c.pos] = next[r];
        if (next[r] >= 0)
            prev[next[r]] = (int32_t)c.pos;
        m--;
        int32_t l = prev[c.pos];
        struct cand nc;
        if (l >= 0 && tok_merge_find(tok, ids[l], ids[c.pos], &nc.rank, &nc.id)) {
            nc.pos = (uint32_t)l;
            heap_push(heap, &hn, nc);
        }
        if (next[c.pos] >= 0 && tok_merge_find(tok, ids[c.pos], ids[next[c.pos]], &nc.rank, &nc.id)) {
            nc.pos = c.pos;
            heap_push(heap, &hn, nc);
        }
    }
    if (ids_reserve(out, m) < 0)
        return -ENOMEM;
    for (int32_t i = 0; i >= 0; i = next[i])
        out->ids[out->len++] = ids[i];
    return 0;
}

int tok_bpe_merge(const struct dsd_tokenizer *tok, const uint8_t *w, size_t n,
                  struct tok_bpe_scratch *scratch, struct dsd_tok_ids *out)
{
    if (n == 1) {
        if (ids_reserve(out, 1) < 0)
            return -ENOMEM;
        out->ids[out->len++] = tok->byte_id[w[0]];
        return 0;
    }
    return n <= SMALL_MAX ? bpe_small(tok, w, n, out) : bpe_large(tok, w, n, scratch, out);
}

/* ------------------------------------------------------------------------------------ */
/* Piece cache                                                                          */

/* Text repeats its pieces (" the", "=", "    ", "ing"), and the merge and vocabulary
 * tables are megabytes that each lookup misses in cache. A small direct-mapped cache of
 * piece -> ids, one 64-byte line per entry, answers most pieces from L2. It is per thread
 * (no locks, and the loaded tokenizer stays read-only); entries carry the generation of the
 * tokenizer that made them, so a tokenizer loaded at a reused address never sees them. */
#define CACHE_SLOTS 4096
#define CACHE_KEY_MAX 22
#define CACHE_IDS_MAX 6

struct cache_entry {
    uint64_t generation; /* 0 = empty */
    uint8_t len, n_ids;
    char key[CACHE_KEY_MAX];
    int32_t ids[CACHE_IDS_MAX];
    uint32_t pad;
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static void cache_key_init(void)
{
    cache_key_ok = pthread_key_create(&cache_key, free) == 0;
}

static struct cache_entry *thread_cache(void)
{
    static _Thread_local struct cache_entry *cache;
    if (cache)
        return cache;
    pthread_once(&cache_once, cache_key_init);
    if (!cache_key_ok)
        return NULL;
    cache = calloc(CACHE_SLOTS, sizeof *cache);
    if (cache)
        pthread_setspecific(cache_key, cache); /* freed when the thread exits */
    return cache;
}

static int bpe_uncached(const struct dsd_tokenizer *tok, const uint8_t *w, size_t n,
                        struct tok_bpe_scratch *scratch, struct dsd_tok_ids *out)
{
    /* Most pieces of ordinary text are whole vocabulary tokens; when the merges of a
     * token's own bytes lead back to it (known since load) one lookup replaces the merge
     * loop. ignore_merges asks for the lookup unconditionally. */
    if (n > 1 && n <= tok->max_piece_len) {
        int32_t id = tok_str_find(tok, &tok->by_bytes, (const char *)w, n);
        if (id >= 0 && (tok->ignore_merges || (tok->pieces[id].flags & TOK_PIECE_BPE_SELF))) {
            if (ids_reserve(out, 1) < 0)
                return -ENOMEM;
            out->ids[out->len++] = id;
            return 0;
        }
    }
    return tok_bpe_merge(tok, w, n, scratch, out);
}

int tok_bpe_word(const struct dsd_tokenizer *tok, const uint8_t *w, size_t n,
                 struct tok_bpe_scratch *scratch, struct dsd_tok_ids *out)
{
    if (n == 1) {
        if (ids_reserve(out, 1) < 0)
            return -ENOMEM;
        out->ids[out->len++] = tok->byte_id[w[0]];
        return 0;
    }
    struct cache_entry *cache = n <= CACHE_KEY_MAX ? thread_cache() : NULL;
    if (!cache)
        return bpe_uncached(tok, w, n, scratch, out);
    struct cache_entry *e = &cache[XXH3_64bits(w, n) & (CACHE_SLOTS - 1)];
    if (e->generation == tok->generation && e->len == n && memcmp(e->key, w, n) == 0) {
        if (ids_reserve(out, e->n_ids) < 0)
            return -ENOMEM;
        memcpy(out->ids + out->len, e->ids, e->n_ids * sizeof *e->ids);
        out->len += e->n_ids;
        return 0;
    }
    size_t before = out->len;
    int rc = bpe_uncached(tok, w, n, scratch, out);
    size_t made = out->len - before;
    if (rc == 0 && made <= CACHE_IDS_MAX) {
        e->generation = tok->generation;
        e->len = (uint8_t)n;
        e->n_ids = (uint8_t)made;
        memcpy(e->key, w, n);
        memcpy(e->ids, out->ids + before, made * sizeof *e->ids);
    }
    return rc;
}
