/* The chain hash over little-endian bytes, so the names on disk do not depend on the host. */
#include "page_hash.h"

#include <xxhash.h>

uint64_t dsd_kv_chain_hash(uint64_t parent, const int32_t *tokens)
{
    uint8_t buf[8 + 4 * DSD_KV_PAGE_TOKENS];
    for (int b = 0; b < 8; b++)
        buf[b] = (uint8_t)(parent >> (8 * b));
    for (int t = 0; t < DSD_KV_PAGE_TOKENS; t++) {
        uint32_t v = (uint32_t)tokens[t];
        for (int b = 0; b < 4; b++)
            buf[8 + 4 * t + b] = (uint8_t)(v >> (8 * b));
    }
    return XXH64(buf, sizeof buf, 0);
}

int dsd_kv_chain_hashes(const int32_t *tokens, int n_tokens, uint64_t *out, int max_pages)
{
    int n = n_tokens > 0 ? n_tokens / DSD_KV_PAGE_TOKENS : 0;
    if (n > max_pages)
        n = max_pages;
    uint64_t h = DSD_KV_CHAIN_ROOT;
    for (int i = 0; i < n; i++)
        out[i] = h = dsd_kv_chain_hash(h, tokens + (size_t)i * DSD_KV_PAGE_TOKENS);
    return n < 0 ? 0 : n;
}
