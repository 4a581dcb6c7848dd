/*
 * The prefix cache (daemon/kv/prefix_cache.h) on the CPU backend with made-up pages: a
 * prefix handed over, demoted to the host tier under pressure and shared again comes back
 * bit for bit; locked pages never move; pages written to the disk tier are found by a new
 * cache over the same directory (a restart), bit for bit, and a damaged record ends the
 * match there; a running sequence's completed pages are shared at once (publish) and a new
 * sequence waits for a page being computed; random sequences sharing prefixes (publishing
 * pages as they go) never leak or lose a page; a step that fails drops the demotions it never
 * confirmed (an injected synchronize error).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend_impl.h"
#include "disk_tier.h"
#include "kv_cache.h"
#include "kv_test_backend.h"
#include "prefix_cache.h"
#include "test.h"

#define POOL 9          /* 8 usable pages */
#define FP 0x1234abcdULL

static struct dsd_backend *g_be;
static char g_dir[128];

static void tokens_for(int32_t *t, int n, int seed)
{
    for (int i = 0; i < n; i++)
        t[i] = (int32_t)((seed * 31 + i * 7 + 1) % 997);
}

/* A sequence that computed tokens[0..n): pages reserved and filled from (seed, page). */
static void compute(struct dsd_kv_cache *kv, struct dsd_kv_seq *s, int n, int seed)
{
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, s, n), 0);
    for (int p = 0; p < s->n_pages; p++)
        kv_test_fill_page(kv, s->pages[p], (uint32_t)(seed * 100 + p));
}

/* Whether device page `page` holds what compute() wrote for (seed, p). */
static int page_is(struct dsd_kv_cache *kv, int32_t page, int seed, int p)
{
    int32_t ref = dsd_kv_page_alloc(kv);
    if (ref < 0)
        return -1;
    kv_test_fill_page(kv, ref, (uint32_t)(seed * 100 + p));
    int eq = kv_test_pages_equal(kv, page, ref);
    dsd_kv_page_unref(kv, ref);
    return eq;
}

/* What the engine does after acquire: a step, which waits for the host pages reloaded
 * beside it (the backend's side copies) and synchronizes, then step_done. */
static void step(struct dsd_prefix_cache *pc)
{
    struct dsd_err err = {{0}};
    ASSERT_EQ_INT(dsd_backend_ops(g_be)->synchronize(g_be, &err), 0);
    dsd_prefix_cache_step_done(pc, true);
}

static void check_tree(struct dsd_prefix_cache *pc)
{
    struct dsd_err err = {{0}};
    int rc = dsd_radix_check(dsd_prefix_cache_tree(pc), &err);
    if (rc)
        printf("  radix: %s\n", err.msg);
    ASSERT_EQ_INT(rc, 0);
}

/* A pool of POOL pages (2 layers) and a prefix cache over it with a host tier of 8 pages
 * and no disk tier; NULL if either cannot be made. */
static struct dsd_prefix_cache *host_cache(struct dsd_kv_cache **kv)
{
    struct dsd_err err = {{0}};
    if (!(*kv = dsd_kv_cache_new(g_be, 2, POOL, &err)))
        return NULL;
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(dsd_kv_cache_layout(*kv), 2);
    struct dsd_prefix_cache_config c = {.host_bytes = 8 * dsd_kv_page_record_bytes(&g), .fingerprint = FP};
    return dsd_prefix_cache_new(*kv, &c, &err);
}

TEST(host_round_trip_is_bitwise)
{
    struct dsd_kv_cache *kv;
    struct dsd_prefix_cache *pc = host_cache(&kv);
    ASSERT_TRUE(pc != NULL);
    int32_t t[266];
    tokens_for(t, 266, 1);
    struct dsd_kv_seq a = {0};
    compute(kv, &a, 266, 1);                    /* 5 pages, the last partial */
    ASSERT_EQ_INT(dsd_prefix_cache_adopt(pc, t, 266, &a), 4);
    dsd_kv_seq_release(kv, &a);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 4);
    ASSERT_EQ_INT(dsd_prefix_cache_reclaimable(pc), 4);
    /* pressure: everything the tree alone holds goes to the host */
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 8), 8);
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT(st.host_pages, 4);
    ASSERT_EQ_INT(st.device_pages, 0);
    ASSERT_EQ_INT((int)st.demotions[0], 4);
    check_tree(pc);
    /* shared again: copied back into device pages, bit for bit; one token left to compute */
    struct dsd_kv_seq b = {0};
    struct dsd_prefix_hold h = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 256 - 1, &b, &h, &hit), 3);
    ASSERT_EQ_INT(hit.host, 3);
    step(pc);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 265, &b, &h, &hit), 4);
    ASSERT_EQ_INT(hit.device, 3);
    ASSERT_EQ_INT(hit.host, 1);
    /* the host page comes back as a side copy, which the CPU backend makes only when the step
     * waits for it: what the page held meanwhile (stale bytes here) is overwritten then */
    kv_test_fill_page(kv, b.pages[3], 999);
    step(pc);
    for (int p = 0; p < 4; p++)
        ASSERT_EQ_INT(page_is(kv, b.pages[p], 1, p), 1);
    /* locked: make_room cannot take them */
    ASSERT_EQ_INT(dsd_prefix_cache_reclaimable(pc), 0);
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 8), 4);
    check_tree(pc);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_hold_destroy(&h);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)st.hits[DSD_KV_TIER_HOST], 4);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);  /* the cache gave every page back */
    dsd_kv_cache_free(kv);
}

/* A sequence of 256 tokens (seed) computed and handed to the tree: its 4 pages */
static void adopt_computed(struct dsd_prefix_cache *pc, struct dsd_kv_cache *kv, int32_t *t, struct dsd_kv_seq *s,
                           int seed)
{
    tokens_for(t, 256, seed);
    compute(kv, s, 256, seed);
    ASSERT_EQ_INT(dsd_prefix_cache_adopt(pc, t, 256, s), 4);
    dsd_kv_seq_release(kv, s);
}

/* Prefix A (seed 1) on the host tier and prefix C (seed 2) on the device, 4 pages each */
static void a_on_host_c_on_device(struct dsd_prefix_cache *pc, struct dsd_kv_cache *kv, int32_t *ta, int32_t *tc,
                                  struct dsd_kv_seq *a, struct dsd_kv_seq *cs)
{
    adopt_computed(pc, kv, ta, a, 1);
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 8), 8);       /* A's 4 pages on the host */
    adopt_computed(pc, kv, tc, cs, 2);
}

/* A demotion while a hit's pages are still being reloaded beside the step (side copies
 * pending): make_room frees the demoted device pages without a synchronization (one would
 * wait for the reload too, and the step would wait for the whole reload before it starts;
 * the CPU backend makes side copies only when something waits, so a synchronization shows as
 * the reloaded page's stale bytes being replaced early), and the demoted records come back
 * right after the step. */
TEST(demotion_beside_a_reload_does_not_wait_for_it)
{
    struct dsd_kv_cache *kv;
    struct dsd_prefix_cache *pc = host_cache(&kv);
    ASSERT_TRUE(pc != NULL);
    int32_t ta[256], tc[256];
    struct dsd_kv_seq a = {0}, cs = {0}, b = {0};
    a_on_host_c_on_device(pc, kv, ta, tc, &a, &cs);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 4);             /* C's 4 pages on the device */
    /* A's first 3 pages come back beside the next step */
    struct dsd_prefix_hold h = {0}, hc = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, ta, 255, &b, &h, &hit), 3);
    ASSERT_EQ_INT(hit.host, 3);
    kv_test_fill_page(kv, b.pages[0], 999 * 100);              /* stale until the copy is made */
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    uint64_t dem0 = st.demotions[0];
    /* the step needs 4 pages: 3 of C's go to the host, their device pages free at once */
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 4), 4);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)(st.demotions[0] - dem0), 3);
    ASSERT_EQ_INT(page_is(kv, b.pages[0], 999, 0), 1);         /* nothing waited for the reload */
    /* the freed pages are used before the step ends, as a step's new pages would be */
    struct dsd_kv_seq fresh = {0};
    compute(kv, &fresh, 256, 3);
    step(pc);
    dsd_kv_seq_release(kv, &fresh);
    for (int p = 0; p < 3; p++)
        ASSERT_EQ_INT(page_is(kv, b.pages[p], 1, p), 1);
    check_tree(pc);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    /* C's demoted pages come back from the host bit for bit */
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, tc, 255, &b, &hc, &hit), 3);
    ASSERT_EQ_INT(hit.host + hit.device, 3);
    ASSERT_TRUE(hit.host >= 2);
    step(pc);
    for (int p = 0; p < 3; p++)
        ASSERT_EQ_INT(page_is(kv, b.pages[p], 2, p), 1);
    check_tree(pc);
    dsd_prefix_cache_unhold(pc, &hc);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_hold_destroy(&h);
    dsd_prefix_cache_hold_destroy(&hc);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_kv_seq_destroy(&cs);
    dsd_kv_seq_destroy(&fresh);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);
    dsd_kv_cache_free(kv);
}

/* A device that fails: the backend's synchronize reports an error (after making the CPU
 * backend's pending side copies, as a device that ran them and then faulted would have). */
static struct dsd_ops g_failing_ops;
static const struct dsd_ops *g_real_ops;
static int failing_synchronize(struct dsd_backend *be, struct dsd_err *err)
{
    g_real_ops->synchronize(be, err);
    return dsd_errf(err, -EIO, "injected device fault");
}

/* A step that fails while demotions are unconfirmed (make_room freed their device pages
 * beside a hit's pending reload, trusting the next synchronization) and the device cannot
 * synchronize: the demoted pages' nodes leave the tree and their host slots go free (their
 * records were never confirmed); the hit's reloaded pages, which the failed sequence still
 * locks, stay on the device, their host slots free too. Nothing leaks: the second prefix is
 * found no further than its page left on the device, every allocated host slot holds a page
 * of the tree, and the host tier then takes 7 more pages beside the one it holds with a
 * single eviction. */
TEST(failed_step_drops_unconfirmed_demotions)
{
    struct dsd_kv_cache *kv;
    struct dsd_prefix_cache *pc = host_cache(&kv);
    ASSERT_TRUE(pc != NULL);
    int32_t ta[256], tc[256], td[256];
    struct dsd_kv_seq a = {0}, cs = {0}, b = {0};
    a_on_host_c_on_device(pc, kv, ta, tc, &a, &cs);
    struct dsd_prefix_hold h = {0}, hc = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, ta, 255, &b, &h, &hit), 3);
    ASSERT_EQ_INT(hit.host, 3);
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT(st.host_pages, 1);                            /* A's last page */
    /* 3 of C's pages demoted beside the pending reload: unconfirmed */
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 4), 4);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT(st.host_pages, 4);
    /* the step fails, and so does the synchronization after it */
    g_real_ops = dsd_backend_ops(g_be);
    g_failing_ops = *g_real_ops;
    g_failing_ops.synchronize = failing_synchronize;
    g_be->ops = &g_failing_ops;
    dsd_prefix_cache_step_done(pc, false);
    g_be->ops = g_real_ops;
    check_tree(pc);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT(st.host_pages, 1);                            /* C's 3 records left the tree */
    ASSERT_EQ_INT(st.device_pages, 4);                          /* A's 3 (locked), C's first */
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 4);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT(st.host_used, st.host_pages);                 /* no slot kept by a dropped record */
    /* C: only its first page, which stayed on the device */
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, tc, 255, &b, &hc, &hit), 1);
    ASSERT_EQ_INT(hit.device, 1);
    ASSERT_EQ_INT(hit.host, 0);
    ASSERT_EQ_INT(page_is(kv, b.pages[0], 2, 0), 1);
    dsd_prefix_cache_unhold(pc, &hc);
    dsd_kv_seq_release(kv, &b);
    /* every host slot but A's last page's is free: the 4 device pages and 3 of a new prefix's
     * 4 fit, the fourth evicts one */
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 8), 8);
    struct dsd_kv_seq d = {0};
    adopt_computed(pc, kv, td, &d, 4);
    dsd_prefix_cache_stats(pc, &st);
    const uint64_t ev0 = st.evictions[DSD_KV_TIER_HOST];
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 8), 8);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)(st.evictions[DSD_KV_TIER_HOST] - ev0), 1);
    ASSERT_EQ_INT(st.host_pages, 8);
    check_tree(pc);
    dsd_prefix_cache_hold_destroy(&h);
    dsd_prefix_cache_hold_destroy(&hc);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_kv_seq_destroy(&cs);
    dsd_kv_seq_destroy(&d);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);
    dsd_kv_cache_free(kv);
}

TEST(disk_tier_survives_a_new_cache_and_damage_ends_the_match)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_kv_cache_new(g_be, 2, POOL, &err);
    ASSERT_TRUE(kv != NULL);
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(dsd_kv_cache_layout(kv), 2);
    size_t rec = dsd_kv_page_record_bytes(&g);
    struct dsd_prefix_cache_config c = {.disk_dir = g_dir, .disk_bytes = 4096 + 16 * rec, .fingerprint = FP,
                                        .disk_flags = DSD_DISK_TIER_BUFFERED | DSD_DISK_TIER_NO_URING};
    struct dsd_prefix_cache *pc = dsd_prefix_cache_new(kv, &c, &err);
    ASSERT_TRUE(pc != NULL);
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_TRUE(st.disk_tier);
    int32_t t[200];
    tokens_for(t, 200, 2);
    struct dsd_kv_seq a = {0};
    compute(kv, &a, 200, 2);
    ASSERT_EQ_INT(dsd_prefix_cache_adopt(pc, t, 200, &a), 3);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)st.disk_writes, 3);
    dsd_kv_seq_release(kv, &a);
    dsd_prefix_cache_free(pc);                  /* "the daemon stops" */
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);

    pc = dsd_prefix_cache_new(kv, &c, &err);
    ASSERT_TRUE(pc != NULL);
    struct dsd_kv_seq b = {0};
    struct dsd_prefix_hold h = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 199, &b, &h, &hit), 3);
    ASSERT_EQ_INT(hit.disk, 3);
    for (int p = 0; p < 3; p++)
        ASSERT_EQ_INT(page_is(kv, b.pages[p], 2, p), 1);
    check_tree(pc);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_free(pc);

    /* damage the index-K arena of the second page's record on disk */
    char cmd[300], path[300] = "";
    snprintf(cmd, sizeof cmd, "ls %s/kv-*.dsdkv", g_dir);
    FILE *p = popen(cmd, "r");
    ASSERT_TRUE(p && fgets(path, sizeof path, p));
    pclose(p);
    path[strcspn(path, "\n")] = 0;
    int f = open(path, O_RDWR);
    ASSERT_TRUE(f >= 0);
    int damaged = 0;
    for (int slot = 0; slot < 16; slot++) {
        off_t off = (off_t)(4096 + (size_t)slot * rec);
        uint8_t hdr[92];
        if (pread(f, hdr, sizeof hdr, off) != (ssize_t)sizeof hdr || memcmp(hdr, "DSDKVPAG", 8) != 0)
            continue;
        uint32_t depth;
        memcpy(&depth, hdr + 88, 4);
        if (depth != 1)
            continue;
        off_t at = off + 4096 + (off_t)dsd_kv_page_mla_bytes(&g) + 5;
        uint8_t x;
        ASSERT_EQ_INT((int)pread(f, &x, 1, at), 1);
        x ^= 1;
        ASSERT_EQ_INT((int)pwrite(f, &x, 1, at), 1);
        damaged++;
    }
    close(f);
    ASSERT_EQ_INT(damaged, 1);
    pc = dsd_prefix_cache_new(kv, &c, &err);
    ASSERT_TRUE(pc != NULL);
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 199, &b, &h, &hit), 1);
    ASSERT_EQ_INT(hit.disk, 1);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)st.disk_dropped, 1);
    ASSERT_EQ_INT(page_is(kv, b.pages[0], 2, 0), 1);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_hold_destroy(&h);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);
    dsd_kv_cache_free(kv);
}

TEST(pages_are_shared_as_soon_as_they_complete)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_kv_cache_new(g_be, 2, 16, &err);
    ASSERT_TRUE(kv != NULL);
    struct dsd_prefix_cache_config c = {.fingerprint = FP};
    struct dsd_prefix_cache *pc = dsd_prefix_cache_new(kv, &c, &err);
    ASSERT_TRUE(pc != NULL);
    int32_t t[200], other[200];
    tokens_for(t, 200, 3);
    tokens_for(other, 200, 4);
    /* A is running: 4 pages reserved, the first two computed so far */
    struct dsd_kv_seq a = {0}, b = {0}, c2 = {0};
    struct dsd_prefix_hold ha = {0}, hb = {0}, hc = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 199, &a, &ha, &hit), 0);
    compute(kv, &a, 200, 3);
    /* this step A computes [64, 130): page 1 completes, and a sequence wanting it waits */
    dsd_prefix_cache_step_begin(pc);
    dsd_prefix_cache_computing(pc, t, 200, 64, 130, &ha);
    ASSERT_TRUE(!dsd_prefix_cache_wait_for(pc, t, 199));    /* page 0 is its first missing one */
    ASSERT_EQ_INT(dsd_prefix_cache_publish(pc, t, 64, &a, &ha), 1);
    ASSERT_TRUE(dsd_prefix_cache_wait_for(pc, t, 199));     /* now page 1 is: being computed */
    ASSERT_TRUE(!dsd_prefix_cache_wait_for(pc, other, 199));
    ASSERT_EQ_INT(dsd_prefix_cache_publish(pc, t, 130, &a, &ha), 1);
    ASSERT_EQ_INT(dsd_prefix_cache_publish(pc, t, 130, &a, &ha), 0);  /* nothing new */
    dsd_prefix_cache_step_begin(pc);
    ASSERT_TRUE(!dsd_prefix_cache_wait_for(pc, t, 199));
    /* published pages are A's, locked: not reclaimable while A runs */
    ASSERT_EQ_INT(dsd_prefix_cache_reclaimable(pc), 0);
    check_tree(pc);
    /* B, same prompt, arrives while A still runs: shares A's two pages, bit for bit */
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 199, &b, &hb, &hit), 2);
    ASSERT_EQ_INT(hit.device, 2);
    ASSERT_EQ_INT(b.pages[0], a.pages[0]);
    ASSERT_EQ_INT(b.pages[1], a.pages[1]);
    ASSERT_EQ_INT(page_is(kv, b.pages[1], 3, 1), 1);
    /* C computed the same pages itself (arrived together with A): nothing taken, its hold
     * locks A's nodes, its own pages stay its own */
    compute(kv, &c2, 200, 3);
    ASSERT_EQ_INT(dsd_prefix_cache_publish(pc, t, 192, &c2, &hc), 1);  /* page 2 is new */
    ASSERT_EQ_INT(hc.n, 3);
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)st.published, 3);
    ASSERT_EQ_INT(st.device_pages, 3);
    ASSERT_EQ_INT((int)st.waits, 1);
    /* A ends (adopt finds its pages in the tree already), then B and C: all unlocked */
    ASSERT_EQ_INT(dsd_prefix_cache_adopt(pc, t, 200, &a), 0);         /* page 2: C published it */
    dsd_prefix_cache_unhold(pc, &ha);
    dsd_kv_seq_release(kv, &a);
    ASSERT_EQ_INT(dsd_prefix_cache_reclaimable(pc), 0);
    dsd_prefix_cache_unhold(pc, &hb);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_unhold(pc, &hc);
    dsd_kv_seq_release(kv, &c2);
    ASSERT_EQ_INT(dsd_prefix_cache_reclaimable(pc), 3);
    check_tree(pc);
    dsd_prefix_cache_hold_destroy(&ha);
    dsd_prefix_cache_hold_destroy(&hb);
    dsd_prefix_cache_hold_destroy(&hc);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_kv_seq_destroy(&c2);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 15);
    dsd_kv_cache_free(kv);
}

TEST(random_sequences_never_leak_a_page)
{
    struct dsd_err err = {{0}};
    enum { PAGES = 25, SEQS = 6 };
    struct dsd_kv_cache *kv = dsd_kv_cache_new(g_be, 2, PAGES, &err);
    ASSERT_TRUE(kv != NULL);
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(dsd_kv_cache_layout(kv), 2);
    struct dsd_prefix_cache_config c = {.host_bytes = 6 * dsd_kv_page_record_bytes(&g), .fingerprint = FP};
    struct dsd_prefix_cache *pc = dsd_prefix_cache_new(kv, &c, &err);
    ASSERT_TRUE(pc != NULL);
    struct dsd_kv_seq s[SEQS] = {{0}};
    struct dsd_prefix_hold h[SEQS] = {{0}};
    int n[SEQS] = {0}, seed[SEQS] = {0};
    static int32_t t[SEQS][320];
    uint32_t r = 12345;
    int wrong = 0, unchecked = 0;
    for (int it = 0; it < 3000; it++) {
        r = r * 1664525u + 1013904223u;
        int i = (int)((r >> 8) % SEQS);
        if (n[i] == 0) {
            /* start: one of 8 prompt families, 1..5 pages long, shared prefix first */
            seed[i] = (int)((r >> 16) % 8);
            n[i] = 64 + (int)((r >> 4) % 256);
            tokens_for(t[i], n[i], seed[i]);
            struct dsd_prefix_hit hit;
            int m = dsd_prefix_cache_acquire(pc, t[i], n[i] - 1, &s[i], &h[i], &hit);
            ASSERT_TRUE(m >= 0);
            step(pc);
            if (dsd_kv_cache_free_pages(kv) < 1)
                dsd_prefix_cache_make_room(pc, 1);
            for (int p = 0; p < m; p++) {
                int eq = page_is(kv, s[i].pages[p], seed[i], p);
                wrong += eq == 0;
                unchecked += eq < 0;
            }
            if (dsd_kv_cache_free_pages(kv) < 5)
                dsd_prefix_cache_make_room(pc, 5);
            if (dsd_kv_seq_reserve(kv, &s[i], n[i]) < 0) {
                dsd_prefix_cache_unhold(pc, &h[i]);
                dsd_kv_seq_release(kv, &s[i]);
                n[i] = 0;
                continue;
            }
            for (int p = m; p < s[i].n_pages; p++)
                kv_test_fill_page(kv, s[i].pages[p], (uint32_t)(seed[i] * 100 + p));
        } else if ((r >> 20) % 3 == 0) {
            /* still running: publish the pages computed so far (a random point) */
            ASSERT_TRUE(dsd_prefix_cache_publish(pc, t[i], (int)((r >> 4) % (unsigned)(n[i] + 1)), &s[i], &h[i]) >= 0);
        } else {
            /* end (or preempted): hand over, unlock, release */
            dsd_prefix_cache_adopt(pc, t[i], n[i], &s[i]);
            dsd_prefix_cache_unhold(pc, &h[i]);
            dsd_kv_seq_release(kv, &s[i]);
            n[i] = 0;
        }
        if (it % 50 == 0)
            check_tree(pc);
    }
    ASSERT_EQ_INT(wrong, 0);
    ASSERT_TRUE(unchecked < 100);       /* checked while the pool had a page to compare in */
    for (int i = 0; i < SEQS; i++) {
        dsd_prefix_cache_unhold(pc, &h[i]);
        dsd_kv_seq_release(kv, &s[i]);
        dsd_kv_seq_destroy(&s[i]);
        dsd_prefix_cache_hold_destroy(&h[i]);
    }
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    printf("  hits device %llu host %llu, demotions %llu, evictions %llu/%llu\n", (unsigned long long)st.hits[0],
           (unsigned long long)st.hits[1], (unsigned long long)st.demotions[0], (unsigned long long)st.evictions[0],
           (unsigned long long)st.evictions[1]);
    ASSERT_TRUE(st.hits[0] > 0 && st.hits[1] > 0 && st.demotions[0] > 0);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv) + dsd_prefix_cache_reclaimable(pc), PAGES - 1);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), PAGES - 1);
    dsd_kv_cache_free(kv);
}

int main(void)
{
    g_be = kv_test_backend(DSD_KV_FP8);
    if (!g_be)
        return 1;
    snprintf(g_dir, sizeof g_dir, "/tmp/dsd-test-prefix-cache-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    RUN(host_round_trip_is_bitwise);
    RUN(demotion_beside_a_reload_does_not_wait_for_it);
    RUN(failed_step_drops_unconfirmed_demotions);
    RUN(disk_tier_survives_a_new_cache_and_damage_ends_the_match);
    RUN(pages_are_shared_as_soon_as_they_complete);
    RUN(random_sequences_never_leak_a_page);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", g_dir);
    dsd_backend_free(g_be);
    return test_report();
}
