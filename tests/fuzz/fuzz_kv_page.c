/*
 * tests/fuzz/fuzz_kv_page.c: libFuzzer target for the KV page record (daemon/kv/disk_page.h).
 *
 * Two properties, chosen by the input's first byte:
 *   even: the rest is taken as a record (a small geometry: 1 layer, 64 + 64 bytes per page).
 *         Verification must never crash, and a record it accepts must be exactly what
 *         encode writes for the decoded page (no byte of an accepted record goes unchecked).
 *   odd:  a valid record is built from the input's first bytes, then (offset, xor) pairs
 *         from the rest are applied. Verification must accept it iff no byte changed.
 */
#include "disk_page.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct dsd_kv_page_geom G = {.n_layers = 1, .mla_page_bytes = 64, .index_page_bytes = 64};
static const uint64_t FP = 0x5eedULL;

static _Alignas(4096) uint8_t rec[8192], again[8192];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = dsd_kv_page_record_bytes(&G);
    if (size < 1 || n > sizeof rec)
        return 0;
    struct dsd_kv_page_meta m;
    struct dsd_err err;
    if ((data[0] & 1) == 0) {
        size_t len = size - 1 < n ? size - 1 : n;
        memcpy(rec, data + 1, len);
        if (dsd_kv_page_verify(rec, len, &G, FP, &m, &err) == 0) {
            dsd_kv_page_encode(again, &G, FP, &m, dsd_kv_page_mla(rec), dsd_kv_page_index(rec, &G));
            if (memcmp(again, rec, n) != 0)
                abort();
        }
        return 0;
    }
    memset(&m, 0, sizeof m);
    uint8_t arenas[128] = {0};
    size_t k = 1;
    for (size_t i = 0; i < sizeof arenas && k < size && k < 64; i++)
        arenas[i] = data[k++];
    m.parent_hash = k < size ? data[k++] : 0;
    m.depth = k < size ? data[k++] : 0;
    for (int t = 0; t < DSD_KV_PAGE_TOKENS && k < size && k < 80; t++)
        m.tokens[t] = data[k++];
    dsd_kv_page_encode(rec, &G, FP, &m, arenas, arenas + 64);
    memcpy(again, rec, n);
    while (k + 3 <= size) {
        size_t off = ((size_t)data[k] << 8 | data[k + 1]) % n;
        rec[off] ^= data[k + 2];
        k += 3;
    }
    int changed = memcmp(rec, again, n) != 0;
    int ok = dsd_kv_page_verify(rec, n, &G, FP, NULL, &err) == 0;
    if (ok == changed)
        abort();
    return 0;
}
