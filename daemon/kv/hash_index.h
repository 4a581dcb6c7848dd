/*
 * daemon/kv/hash_index.h: a fixed-capacity map from 64-bit keys to non-negative int32 values
 * (open addressing, linear probing, backward-shift deletion: no tombstones, no rehashing).
 * The radix tree (radix.h) and the disk tier (disk_tier.h) index pages by their chain hash
 * (page_hash.h) with it. One allocation at creation; nothing allocates afterwards.
 *
 *   struct dsd_hash_index *ix = dsd_hash_index_new(1000);   // room for 1000 entries
 *   dsd_hash_index_put(ix, key, 7);      // 0, -EEXIST (key present), -ENOSPC (full)
 *   int32_t v = dsd_hash_index_get(ix, key);                // 7, or -ENOENT
 *   dsd_hash_index_del(ix, key);         // 0 or -ENOENT
 *   dsd_hash_index_free(ix);
 *
 * Keys are arbitrary (0 included). Not thread-safe: its owner serializes access.
 */
#ifndef DSD_KV_HASH_INDEX_H
#define DSD_KV_HASH_INDEX_H

#include <stdint.h>

struct dsd_hash_index;

/* Room for max_entries (>= 1). Returns NULL when out of memory or max_entries < 1. */
struct dsd_hash_index *dsd_hash_index_new(int max_entries);
void dsd_hash_index_free(struct dsd_hash_index *ix);

/* Adds key -> value (value >= 0). Returns 0, -EEXIST when key is present (value unchanged),
 * -ENOSPC when max_entries are stored, -EINVAL for a negative value. */
int dsd_hash_index_put(struct dsd_hash_index *ix, uint64_t key, int32_t value);
/* The value of key, or -ENOENT. */
int32_t dsd_hash_index_get(const struct dsd_hash_index *ix, uint64_t key);
/* Removes key. Returns 0 or -ENOENT. */
int dsd_hash_index_del(struct dsd_hash_index *ix, uint64_t key);
/* Entries stored now. */
int dsd_hash_index_count(const struct dsd_hash_index *ix);

#endif
