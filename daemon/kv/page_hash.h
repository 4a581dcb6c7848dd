/*
 * daemon/kv/page_hash.h: the token-hash chain that names a page of KV by its whole prefix
 * (docs/KV_CACHE.md §5). Page i of a sequence (tokens [64i, 64i+64)) is named
 *
 *   h(i) = XXH64(le64(h(i-1)) || le32(token[64i]) .. le32(token[64i+63]), seed 0),
 *   h(-1) = DSD_KV_CHAIN_ROOT,
 *
 * so two pages have the same name only when their tokens and everything before them agree.
 * The radix tree (radix.h) keys its nodes with it, the disk tier (disk_tier.h) its index, and
 * the disk page record (disk_page.h) stores it with the parent's.
 *
 *   uint64_t h[3];
 *   int n = dsd_kv_chain_hashes(tokens, n_tokens, h, 3);  // names of the first full pages
 */
#ifndef DSD_KV_PAGE_HASH_H
#define DSD_KV_PAGE_HASH_H

#include <stdint.h>

#include "ops.h"

#define DSD_KV_CHAIN_ROOT 0x6473644b56726f6fULL     /* "dsdKVroo": the empty prefix */

/* The name of the page holding tokens[0..63] (exactly DSD_KV_PAGE_TOKENS) after parent. */
uint64_t dsd_kv_chain_hash(uint64_t parent, const int32_t *tokens);

/* Names of the full pages of tokens[0..n_tokens), at most max_pages of them, into out.
 * A partial last page has no name. Returns the number written (>= 0). */
int dsd_kv_chain_hashes(const int32_t *tokens, int n_tokens, uint64_t *out, int max_pages);

#endif
