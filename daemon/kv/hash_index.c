/* Open addressing with linear probing; deletion shifts the following run back. */
#include "hash_index.h"

#include <errno.h>
#include <stdlib.h>

struct slot {
    uint64_t key;
    int32_t value;          /* -1 = empty */
};

struct dsd_hash_index {
    struct slot *slots;
    uint64_t mask;
    int count, max;
};

static uint64_t mix(uint64_t k)
{
    /* splitmix64's finalizer: keys may be chain hashes (already uniform) or small ints */
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ULL;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebULL;
    k ^= k >> 31;
    return k;
}

struct dsd_hash_index *dsd_hash_index_new(int max_entries)
{
    if (max_entries < 1)
        return NULL;
    uint64_t cap = 16;
    while (cap < (uint64_t)max_entries * 2)     /* load factor <= 1/2 */
        cap *= 2;
    struct dsd_hash_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return NULL;
    ix->slots = malloc(cap * sizeof *ix->slots);
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    for (uint64_t i = 0; i < cap; i++)
        ix->slots[i].value = -1;
    ix->mask = cap - 1;
    ix->max = max_entries;
    return ix;
}

void dsd_hash_index_free(struct dsd_hash_index *ix)
{
    if (!ix)
        return;
    free(ix->slots);
    free(ix);
}

static uint64_t find(const struct dsd_hash_index *ix, uint64_t key)
{
    uint64_t i = mix(key) & ix->mask;
    while (ix->slots[i].value >= 0 && ix->slots[i].key != key)
        i = (i + 1) & ix->mask;
    return i;
}

int dsd_hash_index_put(struct dsd_hash_index *ix, uint64_t key, int32_t value)
{
    if (value < 0)
        return -EINVAL;
    uint64_t i = find(ix, key);
    if (ix->slots[i].value >= 0)
        return -EEXIST;
    if (ix->count >= ix->max)
        return -ENOSPC;
    ix->slots[i].key = key;
    ix->slots[i].value = value;
    ix->count++;
    return 0;
}

int32_t dsd_hash_index_get(const struct dsd_hash_index *ix, uint64_t key)
{
    uint64_t i = find(ix, key);
    return ix->slots[i].value >= 0 ? ix->slots[i].value : -ENOENT;
}

int dsd_hash_index_del(struct dsd_hash_index *ix, uint64_t key)
{
    uint64_t i = find(ix, key);
    if (ix->slots[i].value < 0)
        return -ENOENT;
    /* Backward shift: move each later entry of the run into the hole when its home slot
     * does not lie cyclically in (hole, j]. */
    uint64_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & ix->mask;
        if (ix->slots[j].value < 0)
            break;
        uint64_t home = mix(ix->slots[j].key) & ix->mask;
        if (((j - home) & ix->mask) >= ((j - hole) & ix->mask)) {
            ix->slots[hole] = ix->slots[j];
            hole = j;
        }
    }
    ix->slots[hole].value = -1;
    ix->count--;
    return 0;
}

int dsd_hash_index_count(const struct dsd_hash_index *ix)
{
    return ix->count;
}
