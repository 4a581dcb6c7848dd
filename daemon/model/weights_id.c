/* The weights identity: tensor metadata and data samples, hashed in name order. */
#include "weights_id.h"

#include <string.h>

#define XXH_STATIC_LINKING_ONLY  /* XXH64_state_t on the stack */
#include <xxhash.h>

static void hash_u64(XXH64_state_t *s, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    XXH64_update(s, b, 8);
}

void dsd_weights_id(const struct dsd_st_set *set, uint8_t out[DSD_WEIGHTS_ID_BYTES])
{
    XXH64_state_t s;
    XXH64_reset(&s, 0);
    size_t n = dsd_st_count(set);
    hash_u64(&s, n);
    for (size_t i = 0; i < n; i++) {
        const struct dsd_st_tensor *t = dsd_st_at(set, i);
        size_t len = strlen(t->name);
        hash_u64(&s, len);
        XXH64_update(&s, t->name, len);
        hash_u64(&s, (uint64_t)t->dtype);
        hash_u64(&s, (uint64_t)t->ndim);
        for (int d = 0; d < t->ndim; d++)
            hash_u64(&s, (uint64_t)t->shape[d]);
        hash_u64(&s, t->nbytes);
        const uint8_t *data = t->data;
        uint64_t k = DSD_WEIGHTS_ID_SAMPLE;
        if (t->nbytes <= 3 * k) {
            XXH64_update(&s, data, (size_t)t->nbytes);
        } else {
            XXH64_update(&s, data, k);
            XXH64_update(&s, data + (t->nbytes / 2 - k / 2), k);
            XXH64_update(&s, data + (t->nbytes - k), k);
        }
    }
    uint64_t h = XXH64_digest(&s);
    for (int i = 0; i < DSD_WEIGHTS_ID_BYTES; i++)
        out[i] = (uint8_t)(h >> (8 * i));
}
