/*
 * daemon/kv/radix.h: the radix prefix tree over whole pages of tokens (docs/KV_CACHE.md §5).
 *
 * A node is one full page of 64 tokens under its parent (the root is the empty prefix); its
 * value is where that page's KV sits: a page id of the device pool (daemon/kv/kv_cache.h) or a
 * slot of the host tier (daemon/kv/host_tier.h), with a tier tag saying which. Tiers only get
 * slower from parent to child (device, then host), so a match is a run of device pages
 * followed by a run of host pages. Nodes are found by the page's chain hash
 * (daemon/kv/page_hash.h) and their tokens compared, so a hash collision never shares a page.
 * The tree never shares a partial page: a sequence writes its own last page. Node memory is
 * allocated once, at creation, for max_nodes nodes (size it device pages + host slots: every
 * node holds exactly one page); nothing allocates afterwards.
 *
 *   struct dsd_radix *t = dsd_radix_new(n_device_pages + n_host_slots, &err);
 *
 *   // a request arrives: share its longest cached prefix, leaving >= 1 token to compute
 *   struct dsd_radix_ref m[MAX];
 *   int n = dsd_radix_match(t, prompt, n_prompt - 1, m, MAX);   // locks m[0..n)
 *   ... host-tier pages among them: load each into a fresh device page, then
 *       dsd_radix_set(t, m[i].node, DSD_KV_TIER_DEVICE, page) (in order, root first) ...
 *   dsd_kv_seq_share(kv, &seq, device pages of m, n);           // the sequence's refs
 *
 *   // it finishes (or a page completes): hand its full pages to the tree
 *   uint8_t taken[N]; struct dsd_radix_ref old[N]; int n_old;
 *   dsd_radix_insert(t, tokens, n_tokens, seq.pages, DSD_KV_TIER_DEVICE, taken, old, &n_old);
 *   ... dsd_kv_page_ref() each page with taken[i]; free each old[] in its tier ...
 *   dsd_radix_unlock(t, m, n);
 *
 *   // device pages short: demote or drop least recently used unlocked leaves
 *   struct dsd_radix_ref v;
 *   while (short && dsd_radix_victim(t, DSD_KV_TIER_DEVICE, 0, &v) == 1) {
 *       copy page v.value to a host slot s, then dsd_radix_set(t, v.node, DSD_KV_TIER_HOST, s);
 *       (or, with no host room: dsd_radix_remove(t, v.node) when it has no children)
 *       dsd_kv_page_unref(kv, v.value);
 *   }
 *   // or, with no host tier at all: n = dsd_radix_evict(t, DSD_KV_TIER_DEVICE, want, out);
 *
 * Locks (reference counts per node) keep a node in place: a locked node is never a victim,
 * never removed and never demoted. Every node of a match is locked separately and unlocked
 * by dsd_radix_unlock with the same refs. LRU: each tier keeps its unlocked nodes in order
 * of last use (a match counts as use when it is unlocked; an insert touches its whole path);
 * a parent always counts as used no earlier than the child it was reached through.
 *
 * Single-threaded: the engine thread owns the tree, like the pool.
 */
#ifndef DSD_KV_RADIX_H
#define DSD_KV_RADIX_H

#include <stdint.h>

#include "err.h"

/* Where a page's KV sits, fastest first. Radix nodes are only ever DEVICE or HOST; the disk
 * tier is found by chain hash after the tree's match ends (daemon/kv/disk_tier.h). */
enum dsd_kv_tier {
    DSD_KV_TIER_DEVICE = 0,
    DSD_KV_TIER_HOST = 1,
    DSD_KV_TIER_DISK = 2,
};
#define DSD_RADIX_TIERS 2       /* tiers a node can be in: DEVICE, HOST */

/* One node as the caller sees it. */
struct dsd_radix_ref {
    int32_t node;               /* handle for set/remove/unlock */
    int32_t value;              /* page id (DEVICE) or host slot (HOST) */
    int tier;                   /* enum dsd_kv_tier */
    uint64_t hash;              /* the page's chain hash (page_hash.h) */
};

struct dsd_radix;

/* Room for max_nodes pages. Returns NULL with err set: -EINVAL (max_nodes < 1), -ENOMEM. */
struct dsd_radix *dsd_radix_new(int max_nodes, struct dsd_err *err);
void dsd_radix_free(struct dsd_radix *t);

/* The longest cached prefix of tokens[0..n_tokens) in whole pages, at most max_out pages:
 * out[i] describes page i, root first. Every returned node is locked. Returns the number of
 * pages matched (0 .. n_tokens/64), or -EINVAL (negative n_tokens or max_out). */
int dsd_radix_match(struct dsd_radix *t, const int32_t *tokens, int n_tokens, struct dsd_radix_ref *out,
                    int max_out);
/* The same walk without locking or marking anything used (e.g. the scheduler ranking the
 * queue by cached prefix). Returns what dsd_radix_match would. */
int dsd_radix_peek(const struct dsd_radix *t, const int32_t *tokens, int n_tokens, struct dsd_radix_ref *out,
                   int max_out);
/* Drops one lock of each of refs[0..n) (as a match returned them) and marks them used now. */
void dsd_radix_unlock(struct dsd_radix *t, const struct dsd_radix_ref *refs, int n);

/* Adds the full pages of tokens[0..n_tokens): page i's KV is values[i] in tier `tier`.
 * For page i, taken[i] (may be NULL) says whether the tree now holds values[i] (the caller
 * takes a reference for it, e.g. dsd_kv_page_ref()); a page already cached in the same or a
 * faster tier is not taken. A page cached in a slower tier, unlocked, is replaced by
 * values[i] and its old place reported in displaced[] (may be NULL: then nothing is
 * replaced; room for n_tokens/64 entries), *n_displaced (may be NULL) counting them: the
 * caller frees those slots. Insertion stops early when the tree is full (max_nodes), where a
 * page would sit below a slower tier, or at a hash collision. Touches the whole path.
 * Returns the number of pages taken (>= 0), or -EINVAL (bad tier or n_tokens). */
int dsd_radix_insert(struct dsd_radix *t, const int32_t *tokens, int n_tokens, const int32_t *values, int tier,
                     uint8_t *taken, struct dsd_radix_ref *displaced, int *n_displaced);

/* Adds one page below parent (NULL: a first page), its 64 tokens, in tier/value, locked once
 * for the caller (unlock it with the rest of its match): a page found elsewhere (the disk
 * tier) extending a match. Returns 1 with *out filled; 0 when nothing was added (the page is
 * already cached or its name collides, parent is slower than tier, the tree is full; the
 * caller keeps value); -EINVAL (bad tier, no such parent). */
int dsd_radix_extend(struct dsd_radix *t, const struct dsd_radix_ref *parent, const int32_t *tokens, int tier,
                     int32_t value, struct dsd_radix_ref *out);

/* A running sequence's page i, just computed, published below parent (NULL: a first page;
 * otherwise the ref this function or a match returned for page i-1), its 64 tokens, in
 * tier/value; the node returned is locked once for the caller (unlock it with the rest).
 *   1: added: the tree took value (the caller takes a reference for it).
 *   2: the page was cached in a slower tier, unlocked: replaced by value (taken, as for 1),
 *      its old place in *displaced, which the caller frees.
 *   0: the page was cached already in the same or a faster tier (another sequence computed
 *      it): that node is locked and returned; the caller keeps value.
 *  -EAGAIN: nothing added or locked (the tree is full, the name collides, the cached copy
 *      is slower but locked, or parent is slower than tier): publishing stops here for now.
 *  -EINVAL: bad tier or tokens, no such parent. */
int dsd_radix_publish(struct dsd_radix *t, const struct dsd_radix_ref *parent, const int32_t *tokens, int tier,
                      int32_t value, struct dsd_radix_ref *out, struct dsd_radix_ref *displaced);

/* The node named hash (a chain hash), changing nothing. Returns 1 with *out filled, or 0. */
int dsd_radix_lookup(const struct dsd_radix *t, uint64_t hash, struct dsd_radix_ref *out);

#define DSD_RADIX_LEAF_ONLY 1u  /* dsd_radix_victim: only nodes with no children at all */

/* The least recently used unlocked node of `tier` with no child in the same tier (with
 * DSD_RADIX_LEAF_ONLY: no child at all, so it can be removed). Changes nothing. Returns 1
 * with *out filled, 0 when there is none, -EINVAL (bad tier). */
int dsd_radix_victim(const struct dsd_radix *t, int tier, unsigned flags, struct dsd_radix_ref *out);
/* Moves node to tier/value (a demotion after copying the page out, or a promotion after
 * loading it). Returns 0, -EINVAL (no such node, bad tier, or the move would put it in a
 * faster tier than its parent or a slower one than a child), -EBUSY (demoting a locked node). */
int dsd_radix_set(struct dsd_radix *t, int32_t node, int tier, int32_t value);
/* Removes a node that has no children and no locks; the caller frees its value. Returns 0,
 * -EINVAL (no such node), -EBUSY (locked), -ENOTEMPTY (has children). */
int dsd_radix_remove(struct dsd_radix *t, int32_t node);
/* Removes up to `want` LRU unlocked leaves of `tier` (a leaf's parent may follow it), writing
 * their values to out: what to free when nothing slower can take them. Returns how many
 * (>= 0), or -EINVAL. */
int dsd_radix_evict(struct dsd_radix *t, int tier, int want, int32_t *out);

/* What a disk record of node's page needs (daemon/kv/disk_page.h): its parent's chain hash
 * (DSD_KV_CHAIN_ROOT for a first page), its 64 tokens (tokens may be NULL) and its depth
 * (page index in the sequence). Returns 0 or -EINVAL (no such node). */
int dsd_radix_page(const struct dsd_radix *t, int32_t node, uint64_t *parent_hash, int32_t *tokens, int *depth);

/* Nodes in a tier (-1: all), and the capacity. */
int dsd_radix_count(const struct dsd_radix *t, int tier);
int dsd_radix_capacity(const struct dsd_radix *t);
/* Unlocked nodes in a tier: what eviction could move or drop there (no walk: a count). */
int dsd_radix_unlocked(const struct dsd_radix *t, int tier);
/* Whether node is locked (lock count), -EINVAL when there is no such node. */
int dsd_radix_locks(const struct dsd_radix *t, int32_t node);
/* Checks every internal invariant (counts, LRU lists, the hash index, tier order). Returns
 * 0, or -EFAULT with err saying which (tests). */
int dsd_radix_check(const struct dsd_radix *t, struct dsd_err *err);

#endif
