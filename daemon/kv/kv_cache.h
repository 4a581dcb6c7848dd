/*
 * daemon/kv/kv_cache.h: the paged KV pool (docs/KV_CACHE.md §1).
 *
 * One page = 64 consecutive positions of one sequence, in every layer at once: page id p
 * addresses the latent+rope entries (mla arena) and the index-K page (index arena) of each
 * layer. Page 0 is a scratch page that is never handed out. Memory comes from the backend
 * (device memory for CUDA), sized from the exact byte layout (dsd_kv_layout_for()).
 *
 *   struct dsd_kv_cache *kv = dsd_kv_cache_new(be, n_layers, n_pages, &err);
 *   struct dsd_kv_seq seq = {0};
 *   if (dsd_kv_seq_reserve(kv, &seq, 200) < 0) ...   // positions 0..199 now have pages
 *   ... dsd_model_forward(..., &seq, ...) ...
 *   dsd_kv_seq_release(kv, &seq);                      // pages back to the pool
 *   dsd_kv_cache_free(kv);
 *
 * Pages are reference counted so that a prefix page can be shared (docs/KV_CACHE.md §5): a
 * page a sequence reserves starts with one reference (the sequence's); the radix tree
 * (daemon/kv/radix.h) takes its own with dsd_kv_page_ref() when it adopts a page, and
 * another sequence that reuses it appends it with dsd_kv_seq_share(). A page returns to the
 * free stack only when its last reference goes (dsd_kv_seq_release, dsd_kv_page_unref):
 *
 *   dsd_kv_page_ref(kv, seq.pages[0]);          // the tree keeps page 0 after seq ends
 *   dsd_kv_seq_share(kv, &other, seq.pages, 1); // another sequence starts with it
 *   dsd_kv_seq_release(kv, &seq);               // page 0 stays (2 references left)
 *
 * A shared page is read-only by convention: only whole pages are shared, and a sequence
 * writes positions past its shared prefix only.
 *
 * Single-threaded: the engine thread owns the pool.
 */
#ifndef DSD_KV_CACHE_H
#define DSD_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "ops.h"

struct dsd_kv_cache;

/* A sequence's page table: pages[i] holds positions [64i, 64i+63]. */
struct dsd_kv_seq {
    int32_t *pages;
    int n_pages;
    int cap;
};

/* n_pages includes the scratch page 0. Returns NULL with err set (-EINVAL, -ENOMEM). */
struct dsd_kv_cache *dsd_kv_cache_new(struct dsd_backend *be, int n_layers, int n_pages, struct dsd_err *err);
void dsd_kv_cache_free(struct dsd_kv_cache *kv);

/* Bytes one page costs across all layers (both arenas). */
size_t dsd_kv_cache_page_bytes(const struct dsd_kv_layout *layout, int n_layers);

const struct dsd_kv_layer *dsd_kv_cache_layer(const struct dsd_kv_cache *kv, int layer);
int dsd_kv_cache_n_layers(const struct dsd_kv_cache *kv);
int dsd_kv_cache_free_pages(const struct dsd_kv_cache *kv);     /* pages available now */
int dsd_kv_cache_total_pages(const struct dsd_kv_cache *kv);    /* excluding scratch */

const struct dsd_kv_layout *dsd_kv_cache_layout(const struct dsd_kv_cache *kv);
struct dsd_backend *dsd_kv_cache_backend(const struct dsd_kv_cache *kv);

/* Takes one free page with one reference (the caller's). Returns its id (>= 1), or -ENOSPC. */
int32_t dsd_kv_page_alloc(struct dsd_kv_cache *kv);
/* Adds a reference to a page in use. Returns the new count, or -EINVAL (not a page in use). */
int dsd_kv_page_ref(struct dsd_kv_cache *kv, int32_t page);
/* Drops a reference; the last one returns the page to the pool. Returns the count left
 * (0: freed), or -EINVAL (not a page in use: nothing changes). */
int dsd_kv_page_unref(struct dsd_kv_cache *kv, int32_t page);
/* References a page holds now (0: free, -EINVAL: not a page id). */
int dsd_kv_page_refs(const struct dsd_kv_cache *kv, int32_t page);

/* Makes sure positions [0, n_tokens) of seq have pages. Returns 0, or -ENOSPC when the
 * pool is short (seq keeps the pages it had), -ENOMEM. */
int dsd_kv_seq_reserve(struct dsd_kv_cache *kv, struct dsd_kv_seq *seq, int n_tokens);
/* Appends pages (in use, e.g. a radix match's device pages) to the end of seq's page table,
 * one new reference each: share a prefix into a sequence before it reserves its own pages.
 * Returns 0, -EINVAL (a page not in use: seq unchanged), -ENOMEM. */
int dsd_kv_seq_share(struct dsd_kv_cache *kv, struct dsd_kv_seq *seq, const int32_t *pages, int n);
/* Drops seq's reference to each of its pages (a page whose last reference goes returns to
 * the pool) and empties it (its storage is kept for reuse). */
void dsd_kv_seq_release(struct dsd_kv_cache *kv, struct dsd_kv_seq *seq);
/* Frees the page table storage itself (after release). */
void dsd_kv_seq_destroy(struct dsd_kv_seq *seq);

#endif
