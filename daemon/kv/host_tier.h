/*
 * daemon/kv/host_tier.h: the host-RAM tier of the KV cache (docs/KV_CACHE.md §5): a pool of
 * page slots in host memory the backend copies to and from fast (pinned memory on a GPU),
 * sized by a byte budget (`host_cache_gb`). A slot holds one whole page, both arenas of
 * every layer, in the record layout of daemon/kv/disk_page.h (a header block, then the MLA
 * arena, then the index-K arena), so a slot can go to the disk tier as it is.
 *
 *   struct dsd_host_tier *ht = dsd_host_tier_new(be, &geom, host_cache_gb << 30, &err);
 *   int s = dsd_host_tier_alloc(ht);              // -ENOSPC: evict one first
 *   dsd_host_tier_copy_out(ht, kv, page, s);      // device page -> slot (enqueued)
 *   ops->synchronize(be, &err);                   // the slot now holds the page
 *   ...
 *   dsd_host_tier_copy_in(ht, kv, s, page2);      // slot -> device page (enqueued)
 *   ops->synchronize(be, &err);
 *   dsd_host_tier_release(ht, s);
 *
 * Copies go through the backend's copy_many (kernels/ops.h): a page's two arenas of every
 * layer in one operation, a hit's pages in one per 256 pages, so any backend works and a GPU
 * moves them together (docs/KV_CACHE.md §5); they are enqueued on the backend's stream and the slot (or the page) must
 * not be touched until the next synchronize. Eviction: allocated slots are kept in LRU order
 * (alloc and touch count as use); pinned slots (a preempted sequence's pages, a load in
 * flight) are never offered as victims. The radix tree (daemon/kv/radix.h) keeps its own
 * LRU for the prefix pages it places here; the engine decides which one to consult.
 *
 * Single-threaded (the engine thread), like the pool.
 */
#ifndef DSD_KV_HOST_TIER_H
#define DSD_KV_HOST_TIER_H

#include <stdint.h>

#include "disk_page.h"
#include "err.h"
#include "kv_cache.h"
#include "ops.h"

struct dsd_host_tier;

/* As many slots as budget_bytes holds (dsd_kv_page_record_bytes each), in one alloc_host
 * block. Returns NULL with err set: -EINVAL (budget below one slot, bad geometry), -ENOMEM. */
struct dsd_host_tier *dsd_host_tier_new(struct dsd_backend *be, const struct dsd_kv_page_geom *g,
                                        uint64_t budget_bytes, struct dsd_err *err);
void dsd_host_tier_free(struct dsd_host_tier *ht);

int dsd_host_tier_slots(const struct dsd_host_tier *ht);     /* capacity */
int dsd_host_tier_used(const struct dsd_host_tier *ht);      /* allocated now */

/* An unused slot, now the most recently used. Returns the slot (>= 0) or -ENOSPC. */
int dsd_host_tier_alloc(struct dsd_host_tier *ht);
/* Gives a slot back (pinned or not). Returns 0, -EINVAL (not an allocated slot). */
int dsd_host_tier_release(struct dsd_host_tier *ht, int slot);
/* Marks an allocated slot used now. Returns 0 or -EINVAL. */
int dsd_host_tier_touch(struct dsd_host_tier *ht, int slot);
/* Pins/unpins an allocated slot (a count). Returns the new pin count or -EINVAL. */
int dsd_host_tier_pin(struct dsd_host_tier *ht, int slot);
int dsd_host_tier_unpin(struct dsd_host_tier *ht, int slot);
/* The least recently used allocated, unpinned slot (not released: the caller does that after
 * moving its page elsewhere), or -ENOENT. */
int dsd_host_tier_victim(const struct dsd_host_tier *ht);

/* The slot's record buffer (dsd_kv_page_record_bytes bytes; arenas at dsd_kv_page_mla/index),
 * or NULL for a slot out of range. */
void *dsd_host_tier_record(struct dsd_host_tier *ht, int slot);

/* Enqueues the copies of device page `page` of kv into slot (out) or of slot into `page`
 * (in). Returns 0, -EINVAL (slot not allocated, page out of range, kv's layout or layer count
 * not this tier's geometry). */
int dsd_host_tier_copy_out(struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int32_t page, int slot);
/* copy_out for a page being evicted from the device (a demotion): it does not wait for the
 * backend's side copies first. Those write only the pages of a prefix hit, which its sequence
 * holds until it ends (so they are never evicted), from host slots the prefix cache keeps
 * until the step is done. Waiting made the page a hit's own step evicts (a full pool) wait for
 * the hit's whole reload, and undid its overlap with the step. Same returns as copy_out. */
int dsd_host_tier_copy_out_evicted(struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int32_t page, int slot);
int dsd_host_tier_copy_in(struct dsd_host_tier *ht, struct dsd_kv_cache *kv, int slot, int32_t page);
/* copy_in of slots[i] into pages[i] for every i with pages[i] >= 0 (the others skipped), in
 * one copy_many per 256 pages. Returns 0, or -EINVAL with nothing enqueued when any pair is
 * invalid (as copy_in). */
int dsd_host_tier_copy_in_many(struct dsd_host_tier *ht, struct dsd_kv_cache *kv, const int *slots,
                               const int32_t *pages, int n);
/* copy_in_many as the backend's side copies (ops.h side_copy), tagged by layer: they overlap
 * the work enqueued after them, and a reader of the pages waits with side_wait(layer) (the
 * forward pass does, before each layer's attention) or synchronize. The slots must stay
 * allocated and unchanged until a synchronize. Returns 0, -EOPNOTSUPP with nothing enqueued
 * (the backend has no side copies, or does not overlap them now: use copy_in_many), or
 * -EINVAL with nothing enqueued (as copy_in_many). */
int dsd_host_tier_copy_in_side(struct dsd_host_tier *ht, struct dsd_kv_cache *kv, const int *slots,
                               const int32_t *pages, int n);

#endif
