/*
 * Page sharing in the KV pool (daemon/kv/kv_cache.h): reference counts, so a prefix page the
 * radix tree and several sequences hold returns to the pool only when the last one lets go;
 * and the pool, tree and sequences together over random operations never leak or double-free
 * a page.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kv_cache.h"
#include "kv_test_backend.h"
#include "radix.h"
#include "rng.h"
#include "test.h"

TEST(shared_page_freed_by_the_last_holder)
{
    struct dsd_backend *be = kv_test_backend(DSD_KV_FP8);
    ASSERT_TRUE(be != NULL);
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_kv_cache_new(be, 2, 9, &err);     /* 8 usable pages */
    ASSERT_TRUE(kv != NULL);
    struct dsd_kv_seq a = {0}, b = {0};
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &a, 3 * 64), 0);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 5);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ_INT(dsd_kv_page_refs(kv, a.pages[i]), 1);
    /* the tree adopts the first two, b shares them and grows past them */
    ASSERT_EQ_INT(dsd_kv_page_ref(kv, a.pages[0]), 2);
    ASSERT_EQ_INT(dsd_kv_page_ref(kv, a.pages[1]), 2);
    ASSERT_EQ_INT(dsd_kv_seq_share(kv, &b, a.pages, 2), 0);
    ASSERT_EQ_INT(dsd_kv_page_refs(kv, a.pages[0]), 3);
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &b, 2 * 64 + 10), 0);
    ASSERT_EQ_INT(b.n_pages, 3);
    ASSERT_TRUE(b.pages[2] != a.pages[2]);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 4);
    int32_t p0 = a.pages[0], p1 = a.pages[1], p2 = a.pages[2];
    dsd_kv_seq_release(kv, &a);
    ASSERT_EQ_INT(dsd_kv_page_refs(kv, p0), 2);
    ASSERT_EQ_INT(dsd_kv_page_refs(kv, p2), 0);                       /* a's own page went back */
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 5);
    dsd_kv_seq_release(kv, &b);
    ASSERT_EQ_INT(dsd_kv_page_refs(kv, p0), 1);                       /* the tree's */
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 6);
    ASSERT_EQ_INT(dsd_kv_page_unref(kv, p0), 0);
    ASSERT_EQ_INT(dsd_kv_page_unref(kv, p1), 0);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);
    /* misuse changes nothing */
    ASSERT_EQ_INT(dsd_kv_page_unref(kv, p0), -EINVAL);
    ASSERT_EQ_INT(dsd_kv_page_ref(kv, p0), -EINVAL);
    ASSERT_EQ_INT(dsd_kv_page_ref(kv, 0), -EINVAL);                   /* the scratch page */
    ASSERT_EQ_INT(dsd_kv_seq_share(kv, &b, &p0, 1), -EINVAL);
    ASSERT_EQ_INT(b.n_pages, 0);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);
    /* page_alloc hands out every page once, then -ENOSPC */
    int seen[9] = {0};
    for (int i = 0; i < 8; i++) {
        int32_t p = dsd_kv_page_alloc(kv);
        ASSERT_TRUE(p >= 1 && p <= 8 && !seen[p]);
        if (p >= 1 && p <= 8)
            seen[p] = 1;
    }
    ASSERT_EQ_INT(dsd_kv_page_alloc(kv), -ENOSPC);
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &b, 1), -ENOSPC);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_kv_cache_free(kv);
    dsd_backend_free(be);
}

/* Sequences that start from the tree's longest match, compute the rest, and hand their pages
 * to the tree when they end; the tree evicts when the pool runs short. After every step each
 * page's count equals its holders (sequences + the tree), and free + held = the pool. */
TEST(tree_and_sequences_share_without_leaks)
{
    enum { PAGES = 24, SEQS = 4, STEPS = 3000 };
    struct dsd_backend *be = kv_test_backend(DSD_KV_FP8);
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_kv_cache_new(be, 1, PAGES + 1, &err);
    struct dsd_radix *t = dsd_radix_new(PAGES, &err);
    ASSERT_TRUE(kv && t);
    struct dsd_rng r;
    dsd_rng_seed(&r, 7);
    struct {
        struct dsd_kv_seq kv;
        struct dsd_radix_ref m[8];
        int n_m, n_tok, live;
        int32_t tok[8 * 64];
    } s[SEQS];
    memset(s, 0, sizeof s);
    int bad = 0, shared_pages = 0, evicted = 0;
    for (int step = 0; step < STEPS && !bad; step++) {
        int i = (int)(dsd_rng_next(&r) % SEQS);
        if (!s[i].live) {                       /* start: a prompt over 3 symbols, 1..7 pages + a bit */
            int n_pages = 1 + (int)(dsd_rng_next(&r) % 7);
            for (int p = 0; p < n_pages; p++) {
                int sym = (int)(dsd_rng_next(&r) % 2);
                for (int j = 0; j < 64; j++)
                    s[i].tok[p * 64 + j] = sym * 100 + j + (p < 2 ? 0 : p);
            }
            s[i].n_tok = n_pages * 64 + (int)(dsd_rng_next(&r) % 64);
            for (int j = n_pages * 64; j < s[i].n_tok; j++)
                s[i].tok[j] = 1;
            s[i].n_m = dsd_radix_match(t, s[i].tok, s[i].n_tok - 1, s[i].m, 8);
            int32_t pages[8];
            for (int k = 0; k < s[i].n_m; k++)
                pages[k] = s[i].m[k].value;
            bad += dsd_kv_seq_share(kv, &s[i].kv, pages, s[i].n_m) != 0;
            shared_pages += s[i].n_m;
            while (dsd_kv_seq_reserve(kv, &s[i].kv, s[i].n_tok) == -ENOSPC) {
                int32_t out[4];
                int n = dsd_radix_evict(t, DSD_KV_TIER_DEVICE, 4, out);
                for (int k = 0; k < n; k++)
                    bad += dsd_kv_page_unref(kv, out[k]) < 0;
                evicted += n;
                if (n == 0)
                    break;
            }
            if (s[i].kv.n_pages * 64 < s[i].n_tok) {        /* no room: give up this one */
                dsd_radix_unlock(t, s[i].m, s[i].n_m);
                dsd_kv_seq_release(kv, &s[i].kv);
                continue;
            }
            s[i].live = 1;
        } else {                                /* finish: the tree adopts its full pages */
            uint8_t taken[8];
            int n = dsd_radix_insert(t, s[i].tok, s[i].n_tok, s[i].kv.pages, DSD_KV_TIER_DEVICE, taken, NULL, NULL);
            bad += n < 0;
            for (int k = 0; k < s[i].n_tok / 64; k++)
                if (taken[k])
                    bad += dsd_kv_page_ref(kv, s[i].kv.pages[k]) < 2;
            dsd_radix_unlock(t, s[i].m, s[i].n_m);
            dsd_kv_seq_release(kv, &s[i].kv);
            s[i].live = 0;
        }
        /* every page's count = its holders */
        int holders[PAGES + 1] = {0}, held = 0;
        for (int k = 0; k < SEQS; k++)
            for (int p = 0; p < s[k].kv.n_pages; p++)
                holders[s[k].kv.pages[p]]++;
        for (int p = 1; p <= PAGES; p++)
            held += dsd_kv_page_refs(kv, p) > 0;
        int tree_refs = 0;
        for (int p = 1; p <= PAGES; p++) {
            int extra = dsd_kv_page_refs(kv, p) - holders[p];
            bad += extra != 0 && extra != 1;                /* at most the tree's one */
            tree_refs += extra;
        }
        bad += tree_refs != dsd_radix_count(t, DSD_KV_TIER_DEVICE);
        bad += held + dsd_kv_cache_free_pages(kv) != PAGES;
        if (bad)
            TEST_FAIL_AT("step %d: page counts disagree with their holders", step);
    }
    printf("  %d pages shared from the tree, %d evicted\n", shared_pages, evicted);
    ASSERT_TRUE(shared_pages > 100);
    ASSERT_TRUE(evicted > 10);
    for (int k = 0; k < SEQS; k++) {
        if (s[k].live) {
            dsd_radix_unlock(t, s[k].m, s[k].n_m);
            dsd_kv_seq_release(kv, &s[k].kv);
        }
        dsd_kv_seq_destroy(&s[k].kv);
    }
    int32_t out[PAGES];
    int n = dsd_radix_evict(t, DSD_KV_TIER_DEVICE, PAGES, out);
    for (int k = 0; k < n; k++)
        dsd_kv_page_unref(kv, out[k]);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), PAGES);
    ASSERT_EQ_INT(dsd_radix_check(t, &err), 0);
    dsd_radix_free(t);
    dsd_kv_cache_free(kv);
    dsd_backend_free(be);
}

int main(void)
{
    RUN(shared_page_freed_by_the_last_holder);
    RUN(tree_and_sequences_share_without_leaks);
    return test_report();
}
