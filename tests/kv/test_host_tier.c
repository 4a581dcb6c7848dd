/*
 * The host tier (daemon/kv/host_tier.h) on the CPU backend: slot allocation within the
 * budget, LRU and pins, and copies of whole pages (both arenas, every layer) out of the
 * device pool and back into another page, bit for bit, for the FP8 and bf16 layouts; a slot
 * is a page record in place (daemon/kv/disk_page.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "disk_page.h"
#include "host_tier.h"
#include "kv_cache.h"
#include "kv_test_backend.h"
#include "test.h"

TEST(slots_lru_and_pins)
{
    struct dsd_backend *be = kv_test_backend(DSD_KV_FP8);
    ASSERT_TRUE(be != NULL);
    struct dsd_kv_page_geom g = {.n_layers = 2, .mla_page_bytes = 64 * 328, .index_page_bytes = 64 * 132};
    size_t rec = dsd_kv_page_record_bytes(&g);
    struct dsd_err err = {{0}};
    ASSERT_TRUE(dsd_host_tier_new(be, &g, rec - 1, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "holds 0 pages") != NULL);
    struct dsd_host_tier *ht = dsd_host_tier_new(be, &g, 4 * rec + rec / 2, &err);
    ASSERT_TRUE(ht != NULL);
    ASSERT_EQ_INT(dsd_host_tier_slots(ht), 4);
    int s[4];
    for (int i = 0; i < 4; i++)
        s[i] = dsd_host_tier_alloc(ht);
    ASSERT_EQ_INT(dsd_host_tier_alloc(ht), -ENOSPC);
    ASSERT_EQ_INT(dsd_host_tier_used(ht), 4);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < i; j++)
            ASSERT_TRUE(s[i] != s[j] && s[i] >= 0 && s[i] < 4);
    /* distinct, non-overlapping records */
    ASSERT_EQ_INT((uint8_t *)dsd_host_tier_record(ht, 1) - (uint8_t *)dsd_host_tier_record(ht, 0), (long long)rec);
    ASSERT_TRUE(dsd_host_tier_record(ht, 4) == NULL);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), s[0]);          /* allocated first = least recent */
    ASSERT_EQ_INT(dsd_host_tier_touch(ht, s[0]), 0);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), s[1]);
    ASSERT_EQ_INT(dsd_host_tier_pin(ht, s[1]), 1);
    ASSERT_EQ_INT(dsd_host_tier_pin(ht, s[1]), 2);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), s[2]);
    ASSERT_EQ_INT(dsd_host_tier_pin(ht, s[2]), 1);
    ASSERT_EQ_INT(dsd_host_tier_pin(ht, s[3]), 1);
    ASSERT_EQ_INT(dsd_host_tier_pin(ht, s[0]), 1);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), -ENOENT);        /* everything pinned */
    ASSERT_EQ_INT(dsd_host_tier_unpin(ht, s[1]), 1);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), -ENOENT);
    ASSERT_EQ_INT(dsd_host_tier_unpin(ht, s[1]), 0);
    ASSERT_EQ_INT(dsd_host_tier_unpin(ht, s[1]), -EINVAL);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), s[1]);
    ASSERT_EQ_INT(dsd_host_tier_release(ht, s[1]), 0);
    ASSERT_EQ_INT(dsd_host_tier_release(ht, s[1]), -EINVAL);
    ASSERT_EQ_INT(dsd_host_tier_release(ht, s[2]), 0);       /* pinned slots can be released */
    ASSERT_EQ_INT(dsd_host_tier_used(ht), 2);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), -ENOENT);
    ASSERT_EQ_INT(dsd_host_tier_touch(ht, s[2]), -EINVAL);
    int a = dsd_host_tier_alloc(ht), b = dsd_host_tier_alloc(ht);
    ASSERT_TRUE(a >= 0 && b >= 0 && a != b);
    ASSERT_EQ_INT(dsd_host_tier_victim(ht), a);
    dsd_host_tier_free(ht);
    dsd_backend_free(be);
}

static void copies_round_trip(enum dsd_kv_dtype dt)
{
    struct dsd_backend *be = kv_test_backend(dt);
    struct dsd_err err = {{0}};
    enum { LAYERS = 3 };
    struct dsd_kv_cache *kv = dsd_kv_cache_new(be, LAYERS, 8, &err);
    ASSERT_TRUE(kv != NULL);
    const struct dsd_kv_layout *l = dsd_kv_cache_layout(kv);
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(l, LAYERS);
    struct dsd_host_tier *ht = dsd_host_tier_new(be, &g, 3 * dsd_kv_page_record_bytes(&g), &err);
    ASSERT_TRUE(ht != NULL);
    const struct dsd_ops *ops = dsd_backend_ops(be);
    for (int32_t p = 1; p <= 7; p++)
        kv_test_fill_page(kv, p, (uint32_t)(p * 10 + dt));
    int s1 = dsd_host_tier_alloc(ht), s2 = dsd_host_tier_alloc(ht);
    ASSERT_EQ_INT(dsd_host_tier_copy_out(ht, kv, 2, s1), 0);
    ASSERT_EQ_INT(dsd_host_tier_copy_out(ht, kv, 5, s2), 0);
    ASSERT_EQ_INT(ops->synchronize(be, &err), 0);
    /* the slot's arenas are the layers' pages, layer after layer */
    uint8_t *rec = dsd_host_tier_record(ht, s1);
    int same = 1;
    for (int layer = 0; layer < LAYERS; layer++) {
        const struct dsd_kv_layer *lay = dsd_kv_cache_layer(kv, layer);
        same &= !memcmp(dsd_kv_page_mla(rec) + layer * g.mla_page_bytes, lay->mla + 2 * g.mla_page_bytes,
                        g.mla_page_bytes);
        same &= !memcmp(dsd_kv_page_index(rec, &g) + layer * g.index_page_bytes, lay->index + 2 * g.index_page_bytes,
                        g.index_page_bytes);
    }
    ASSERT_TRUE(same);
    /* back into other pages: bit for bit */
    ASSERT_TRUE(!kv_test_pages_equal(kv, 2, 6));
    ASSERT_EQ_INT(dsd_host_tier_copy_in(ht, kv, s1, 6), 0);
    ASSERT_EQ_INT(dsd_host_tier_copy_in(ht, kv, s2, 7), 0);
    ASSERT_EQ_INT(ops->synchronize(be, &err), 0);
    ASSERT_TRUE(kv_test_pages_equal(kv, 2, 6));
    ASSERT_TRUE(kv_test_pages_equal(kv, 5, 7));
    ASSERT_TRUE(!kv_test_pages_equal(kv, 2, 7));
    /* a slot is a page record once its header is written in place */
    struct dsd_kv_page_meta m = {.parent_hash = 1};
    dsd_kv_page_encode(rec, &g, 42, &m, NULL, NULL);
    ASSERT_EQ_INT(dsd_kv_page_verify(rec, dsd_kv_page_record_bytes(&g), &g, 42, NULL, &err), 0);
    ASSERT_EQ_INT(dsd_host_tier_copy_in(ht, kv, s1, 3), 0);
    ASSERT_EQ_INT(ops->synchronize(be, &err), 0);
    ASSERT_TRUE(kv_test_pages_equal(kv, 2, 3));
    /* what does not fit is refused */
    ASSERT_EQ_INT(dsd_host_tier_copy_out(ht, kv, 0, s1), -EINVAL);     /* the scratch page */
    ASSERT_EQ_INT(dsd_host_tier_copy_out(ht, kv, 8, s1), -EINVAL);
    ASSERT_EQ_INT(dsd_host_tier_copy_out(ht, kv, 1, 2), -EINVAL);      /* slot 2 not allocated */
    struct dsd_kv_cache *kv2 = dsd_kv_cache_new(be, LAYERS + 1, 4, &err);
    ASSERT_EQ_INT(dsd_host_tier_copy_in(ht, kv2, s1, 1), -EINVAL);
    dsd_kv_cache_free(kv2);
    /* many at once: -1 pages are skipped, and one bad pair refuses the whole call before
     * anything is copied */
    kv_test_fill_page(kv, 1, 91);
    kv_test_fill_page(kv, 4, 94);
    ASSERT_TRUE(!kv_test_pages_equal(kv, 1, 2) && !kv_test_pages_equal(kv, 4, 5));
    int bad_slots[3] = {s1, s2, s1};
    int32_t bad_pages[3] = {1, 4, 8};
    ASSERT_EQ_INT(dsd_host_tier_copy_in_many(ht, kv, bad_slots, bad_pages, 3), -EINVAL);
    ASSERT_EQ_INT(ops->synchronize(be, &err), 0);
    ASSERT_TRUE(!kv_test_pages_equal(kv, 1, 2) && !kv_test_pages_equal(kv, 4, 5));
    int slots[3] = {s1, 1234567, s2};
    int32_t pages[3] = {1, -1, 4};
    ASSERT_EQ_INT(dsd_host_tier_copy_in_many(ht, kv, slots, pages, 3), 0);
    ASSERT_EQ_INT(ops->synchronize(be, &err), 0);
    ASSERT_TRUE(kv_test_pages_equal(kv, 1, 2));
    ASSERT_TRUE(kv_test_pages_equal(kv, 4, 5));
    dsd_host_tier_free(ht);
    dsd_kv_cache_free(kv);
    dsd_backend_free(be);
}

TEST(copies_round_trip_fp8)
{
    copies_round_trip(DSD_KV_FP8);
}

TEST(copies_round_trip_bf16)
{
    copies_round_trip(DSD_KV_BF16);
}

int main(void)
{
    RUN(slots_lru_and_pins);
    RUN(copies_round_trip_fp8);
    RUN(copies_round_trip_bf16);
    return test_report();
}
