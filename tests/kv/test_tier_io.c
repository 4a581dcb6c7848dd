/*
 * The tier I/O thread (daemon/kv/tier_io.h) and the prefix cache over it, on the CPU backend
 * with made-up pages:
 *  - slow disk writes (a test delay on the thread) do not slow the caller: handing over 4
 *    pages returns at once, the writes land later;
 *  - pages whose write is still in flight, gone from the device and host tiers, are served
 *    again from their staging record, bit for bit;
 *  - pages on disk are read ahead into the host tier while the sequence waits, then reported
 *    as disk hits, bit for bit;
 *  - a write cut short (the process killed between a record's arenas and its header) leaves
 *    no page behind: a reopened tier finds the pages written before it and not the torn one.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "disk_tier.h"
#include "kv_cache.h"
#include "kv_test_backend.h"
#include "page_hash.h"
#include "prefix_cache.h"
#include "test.h"

#define FP 0x5eed1234ULL

static struct dsd_backend *g_be;
static char g_dir[128];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void tokens_for(int32_t *t, int n, int seed)
{
    for (int i = 0; i < n; i++)
        t[i] = (int32_t)((seed * 131 + i * 11 + 3) % 1009);
}

static int page_is(struct dsd_kv_cache *kv, int32_t page, uint32_t seed)
{
    int32_t ref = dsd_kv_page_alloc(kv);
    if (ref < 0)
        return -1;
    kv_test_fill_page(kv, ref, seed);
    int eq = kv_test_pages_equal(kv, page, ref);
    dsd_kv_page_unref(kv, ref);
    return eq;
}

/* Waits (up to 10 s) until the cache has written `want` pages to disk. */
static int writes_settle(struct dsd_prefix_cache *pc, int want)
{
    struct dsd_prefix_cache_stats st;
    for (int i = 0; i < 1000; i++) {
        dsd_prefix_cache_io_wait(pc, 10);
        dsd_prefix_cache_stats(pc, &st);
        if ((int)st.disk_writes >= want)
            return (int)st.disk_writes;
    }
    return (int)st.disk_writes;
}

static struct dsd_prefix_cache *cache(struct dsd_kv_cache *kv, const char *sub, int host_pages, int delay_ms)
{
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(dsd_kv_cache_layout(kv), 2);
    size_t rec = dsd_kv_page_record_bytes(&g);
    static char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, sub);
    struct dsd_prefix_cache_config c = {.host_bytes = (uint64_t)host_pages * rec, .disk_dir = dir,
                                        .disk_bytes = 4096 + 32 * rec, .fingerprint = FP,
                                        .disk_flags = DSD_DISK_TIER_BUFFERED, .test_io_delay_ms = delay_ms};
    struct dsd_err err = {{0}};
    struct dsd_prefix_cache *pc = dsd_prefix_cache_new(kv, &c, &err);
    if (!pc)
        printf("  %s\n", err.msg);
    return pc;
}

TEST(slow_disk_writes_do_not_block_and_pages_in_flight_are_served)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_kv_cache_new(g_be, 2, 9, &err);     /* 8 usable pages */
    ASSERT_TRUE(kv != NULL);
    struct dsd_prefix_cache *pc = cache(kv, "inflight", 2, 400);
    ASSERT_TRUE(pc != NULL);
    int32_t t[300];
    tokens_for(t, 300, 1);
    struct dsd_kv_seq a = {0};
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &a, 300), 0);
    for (int p = 0; p < a.n_pages; p++)
        kv_test_fill_page(kv, a.pages[p], 500u + (uint32_t)p);
    /* 4 full pages handed over: 4 writes of >= 400 ms each are queued, none waited for */
    uint64_t t0 = now_ms();
    ASSERT_EQ_INT(dsd_prefix_cache_adopt(pc, t, 300, &a), 4);
    uint64_t took = now_ms() - t0;
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    printf("  adopt with 4 slow writes queued took %llu ms; %llu written so far\n", (unsigned long long)took,
           (unsigned long long)st.disk_writes);
    ASSERT_TRUE(took < 200);
    ASSERT_EQ_INT((int)st.disk_writes, 0);
    dsd_kv_seq_release(kv, &a);
    /* pressure: the device pages go to the 2 host slots, and from there out of the tree
     * (their disk writes still in flight) */
    ASSERT_EQ_INT(dsd_prefix_cache_make_room(pc, 8), 8);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT(st.device_pages, 0);
    ASSERT_TRUE(st.host_pages <= 2);
    ASSERT_TRUE((int)st.disk_writes < 4);
    /* the prefix again: host pages come back, the rest from the records being written */
    struct dsd_kv_seq b = {0};
    struct dsd_prefix_hold h = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 299, &b, &h, &hit), 4);
    printf("  served: %d host, %d in flight to disk\n", hit.host, hit.disk);
    ASSERT_EQ_INT(hit.host + hit.disk, 4);
    ASSERT_TRUE(hit.disk >= 2);
    for (int p = 0; p < 4; p++)
        ASSERT_EQ_INT(page_is(kv, b.pages[p], 500u + (uint32_t)p), 1);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    ASSERT_EQ_INT(writes_settle(pc, 4), 4);
    dsd_prefix_cache_hold_destroy(&h);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);
    dsd_kv_cache_free(kv);
}

TEST(pages_on_disk_are_read_ahead_while_the_sequence_waits)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_kv_cache_new(g_be, 2, 9, &err);
    ASSERT_TRUE(kv != NULL);
    int32_t t[300];
    tokens_for(t, 300, 2);
    struct dsd_prefix_cache *pc = cache(kv, "ahead", 8, 0);
    ASSERT_TRUE(pc != NULL);
    struct dsd_kv_seq a = {0};
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &a, 300), 0);
    for (int p = 0; p < a.n_pages; p++)
        kv_test_fill_page(kv, a.pages[p], 700u + (uint32_t)p);
    ASSERT_EQ_INT(dsd_prefix_cache_adopt(pc, t, 300, &a), 4);
    dsd_kv_seq_release(kv, &a);
    dsd_prefix_cache_free(pc);                          /* drains: all 4 on disk */
    /* a new cache (a restart) with slow reads: the sequence waits, never blocks (a blocking
     * call would take at least one read's 1,000 ms; the bound leaves a loaded 2-core machine
     * with sanitizers half of that) */
    pc = cache(kv, "ahead", 8, 1000);
    ASSERT_TRUE(pc != NULL);
    uint64_t t0 = now_ms();
    ASSERT_TRUE(dsd_prefix_cache_wait_for(pc, t, 299));
    ASSERT_TRUE(now_ms() - t0 < 500);
    int rounds = 0;
    while (dsd_prefix_cache_wait_for(pc, t, 299) && rounds < 1000) {
        dsd_prefix_cache_io_wait(pc, 20);
        rounds++;
    }
    ASSERT_TRUE(rounds < 1000);
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)st.prefetched, 4);
    ASSERT_EQ_INT(st.host_pages, 4);
    struct dsd_kv_seq b = {0};
    struct dsd_prefix_hold h = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, 299, &b, &h, &hit), 4);
    ASSERT_EQ_INT(hit.disk, 4);                         /* read ahead: disk hits */
    ASSERT_EQ_INT(hit.host, 0);
    for (int p = 0; p < 4; p++)
        ASSERT_EQ_INT(page_is(kv, b.pages[p], 700u + (uint32_t)p), 1);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_hold_destroy(&h);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 8);
    dsd_kv_cache_free(kv);
}

static char g_log[1 << 16];

static void log_to_buffer(void *user, int level, const char *msg)
{
    (void)user;
    (void)level;
    size_t len = strlen(g_log);
    snprintf(g_log + len, sizeof g_log - len, "%s\n", msg);
}

/* A cache with room for host_pages in the host tier and disk_pages on disk, direct I/O where
 * the file system takes it, io_depth staging records, its log in g_log. */
static struct dsd_prefix_cache *cache_sized(struct dsd_kv_cache *kv, const char *sub, int host_pages, int disk_pages,
                                            int io_depth)
{
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(dsd_kv_cache_layout(kv), 2);
    size_t rec = dsd_kv_page_record_bytes(&g);
    static char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, sub);
    struct dsd_prefix_cache_config c = {.host_bytes = (uint64_t)host_pages * rec, .disk_dir = dir,
                                        .disk_bytes = 4096 + (uint64_t)disk_pages * rec, .fingerprint = FP,
                                        .io_depth = io_depth, .log = log_to_buffer};
    struct dsd_err err = {{0}};
    g_log[0] = 0;
    struct dsd_prefix_cache *pc = dsd_prefix_cache_new(kv, &c, &err);
    if (!pc)
        printf("  %s\n", err.msg);
    return pc;
}

/* Flips a byte of the MLA arena of the record of page `hash` in the cache file of dir. */
static int corrupt_page(const char *sub, size_t rec, uint64_t hash)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s/kv-%016llx.dsdkv", g_dir, sub, (unsigned long long)FP);
    FILE *f = fopen(path, "r+b");
    if (!f)
        return -1;
    int rc = -1;
    uint8_t h[8];
    /* slot i's header at 4096 + i * rec, its chain hash at byte 72 (docs/KV_CACHE.md §6.2) */
    for (long long off = 4096; rc < 0; off += (long long)rec) {
        if (fseek(f, off + 72, SEEK_SET) != 0 || fread(h, 1, 8, f) != 8)
            break;
        uint64_t v = 0;
        for (int b = 7; b >= 0; b--)
            v = v << 8 | h[b];
        if (v != hash)
            continue;
        const long long at = off + 4096 + 5;    /* a byte of the MLA arena */
        int c;
        if (fseek(f, at, SEEK_SET) == 0 && (c = fgetc(f)) != EOF && fseek(f, at, SEEK_SET) == 0 &&
            fputc(c ^ 0x40, f) != EOF)
            rc = 0;
    }
    fclose(f);
    return rc;
}

/* Reads ahead until the sequence no longer waits; fails a check past 2,000 rounds. Returns the
 * most host pages seen at once. */
static int read_ahead_all(struct dsd_prefix_cache *pc, const int32_t *t, int n)
{
    int rounds = 0, most = 0;
    struct dsd_prefix_cache_stats st;
    while (dsd_prefix_cache_wait_for(pc, t, n) && rounds < 2000) {
        dsd_prefix_cache_io_wait(pc, 20);
        dsd_prefix_cache_stats(pc, &st);
        if (st.host_pages > most)
            most = st.host_pages;
        rounds++;
    }
    ASSERT_TRUE(rounds < 2000);
    return most;
}

/* A disk hit longer than the old read batches (64 pages, 128 queued): the whole prefix is
 * queued in one call and read in one window, every page lands in chain order and joins the
 * tree; a page corrupted on disk in the middle is dropped (the match ends before it, the rest is
 * computed); the read-ahead counters count the pages read; and at most half the host tier is
 * read ahead for one prefix. */
TEST(a_long_prefix_is_read_ahead_in_one_window_within_half_the_host_tier)
{
    enum { P = 150, BAD = 100 };
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_kv_cache_new(g_be, 2, P + 11, &err);
    ASSERT_TRUE(kv != NULL);
    if (!kv)
        return;
    const int n_tok = P * DSD_KV_PAGE_TOKENS + 20;
    int32_t *t = malloc((size_t)n_tok * sizeof *t);
    ASSERT_TRUE(t != NULL);
    tokens_for(t, n_tok, 4);
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(dsd_kv_cache_layout(kv), 2);
    size_t rec = dsd_kv_page_record_bytes(&g);
    /* the prefix on disk: every page written (a staging record each) */
    struct dsd_prefix_cache *pc = cache_sized(kv, "long", 2 * P + 8, P + 8, P + 4);
    ASSERT_TRUE(pc != NULL);
    if (!pc)
        return;
    struct dsd_kv_seq a = {0};
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &a, n_tok), 0);
    for (int p = 0; p < a.n_pages; p++)
        kv_test_fill_page(kv, a.pages[p], 900u + (uint32_t)p);
    ASSERT_EQ_INT(dsd_prefix_cache_adopt(pc, t, n_tok, &a), P);
    dsd_kv_seq_release(kv, &a);
    dsd_prefix_cache_free(pc);                          /* drains: all P on disk */
    uint64_t hashes[P];
    dsd_kv_chain_hashes(t, P * DSD_KV_PAGE_TOKENS, hashes, P);
    ASSERT_EQ_INT(corrupt_page("long", rec, hashes[BAD]), 0);

    /* a restart whose host tier holds the whole prefix twice over */
    pc = cache_sized(kv, "long", 2 * P + 8, P + 8, 0);
    ASSERT_TRUE(pc != NULL);
    if (!pc)
        return;
    ASSERT_TRUE(dsd_prefix_cache_wait_for(pc, t, n_tok - 1));
    char want[64];
    snprintf(want, sizeof want, "KV read-ahead: %d pages queued", P);
    ASSERT_TRUE(strstr(g_log, want) != NULL);           /* all of them at once */
    read_ahead_all(pc, t, n_tok - 1);
    struct dsd_prefix_cache_stats st;
    dsd_prefix_cache_stats(pc, &st);
    printf("  %d pages read ahead in %.3f ms; %llu joined the tree, %llu dropped\n", (int)st.read_ahead_pages,
           st.read_ahead_seconds * 1e3, (unsigned long long)st.prefetched, (unsigned long long)st.disk_dropped);
    ASSERT_EQ_INT((int)st.prefetched, BAD);             /* in chain order, up to the bad page */
    ASSERT_EQ_INT(st.host_pages, BAD);
    ASSERT_EQ_INT((int)st.disk_dropped, 1);
    ASSERT_EQ_INT((int)st.read_ahead_pages, P - 1);     /* read and verified: all but the bad one */
    ASSERT_TRUE(st.read_ahead_seconds > 0);
    struct dsd_kv_seq b = {0};
    struct dsd_prefix_hold h = {0};
    struct dsd_prefix_hit hit;
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, n_tok - 1, &b, &h, &hit), BAD);
    ASSERT_EQ_INT(hit.disk, BAD);
    int same = 0;
    for (int p = 0; p < BAD; p++)
        same += page_is(kv, b.pages[p], 900u + (uint32_t)p) == 1;
    ASSERT_EQ_INT(same, BAD);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_free(pc);

    /* a host tier of 40 slots: 20 pages read ahead for the prefix, never more */
    pc = cache_sized(kv, "long", 40, P + 8, 0);
    ASSERT_TRUE(pc != NULL);
    if (!pc)
        return;
    int most = read_ahead_all(pc, t, n_tok - 1);
    dsd_prefix_cache_stats(pc, &st);
    ASSERT_EQ_INT((int)st.prefetched, 20);
    ASSERT_TRUE(most <= 20);
    ASSERT_EQ_INT(dsd_prefix_cache_acquire(pc, t, n_tok - 1, &b, &h, &hit), 20);
    ASSERT_EQ_INT(hit.disk, 20);
    dsd_prefix_cache_unhold(pc, &h);
    dsd_kv_seq_release(kv, &b);
    dsd_prefix_cache_hold_destroy(&h);
    dsd_kv_seq_destroy(&a);
    dsd_kv_seq_destroy(&b);
    dsd_prefix_cache_free(pc);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), P + 10);
    dsd_kv_cache_free(kv);
    free(t);
}

/* A page record for the disk tier from a seed. */
static void meta_for(struct dsd_kv_page_meta *m, uint64_t parent, int seed)
{
    memset(m, 0, sizeof *m);
    m->parent_hash = parent;
    tokens_for(m->tokens, DSD_KV_PAGE_TOKENS, seed);
}

TEST(a_write_cut_short_leaves_no_page)
{
    const struct dsd_kv_page_geom g = {.n_layers = 2, .mla_page_bytes = 64 * 328, .index_page_bytes = 64 * 132};
    size_t rec = dsd_kv_page_record_bytes(&g);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/torn", g_dir);
    struct dsd_disk_tier_config c = {.dir = dir, .budget_bytes = 4096 + 4 * rec, .geom = g, .fingerprint = FP};
    uint8_t *mla = malloc(g.n_layers * g.mla_page_bytes), *idx = malloc(g.n_layers * g.index_page_bytes);
    ASSERT_TRUE(mla && idx);
    memset(mla, 0x5a, g.n_layers * g.mla_page_bytes);
    memset(idx, 0xa5, g.n_layers * g.index_page_bytes);
    struct dsd_kv_page_meta m1, m2;
    meta_for(&m1, DSD_KV_CHAIN_ROOT, 1);
    meta_for(&m2, DSD_KV_CHAIN_ROOT, 2);
    uint64_t h1 = dsd_kv_chain_hash(m1.parent_hash, m1.tokens), h2 = dsd_kv_chain_hash(m2.parent_hash, m2.tokens);
    pid_t child = fork();
    if (child == 0) {
        struct dsd_err e = {{0}};
        struct dsd_disk_tier *dt = dsd_disk_tier_open(&c, &e);
        if (!dt || dsd_disk_tier_put(dt, &m1, mla, idx, &e) < 0)
            _exit(1);
        dsd_disk_tier_close(dt);
        c.test_write_delay_ms = 5000;           /* the second write stops before its header */
        dt = dsd_disk_tier_open(&c, &e);
        if (!dt)
            _exit(1);
        dsd_disk_tier_put(dt, &m2, mla, idx, &e);
        _exit(2);
    }
    ASSERT_TRUE(child > 0);
    usleep(1000 * 1000);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    struct dsd_err err = {{0}};
    struct dsd_disk_tier *dt = dsd_disk_tier_open(&c, &err);
    ASSERT_TRUE(dt != NULL);
    ASSERT_TRUE(dsd_disk_tier_contains(dt, h1));
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, h2));       /* torn: not a page */
    ASSERT_EQ_INT(dsd_disk_tier_get(dt, h1, &m1, mla, idx, &err), 0);
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.pages, 1);
    dsd_disk_tier_close(dt);
    free(mla);
    free(idx);
}

int main(void)
{
    g_be = kv_test_backend(DSD_KV_FP8);
    if (!g_be)
        return 1;
    snprintf(g_dir, sizeof g_dir, "/tmp/dsd-test-tier-io-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    RUN(slow_disk_writes_do_not_block_and_pages_in_flight_are_served);
    RUN(pages_on_disk_are_read_ahead_while_the_sequence_waits);
    RUN(a_long_prefix_is_read_ahead_in_one_window_within_half_the_host_tier);
    RUN(a_write_cut_short_leaves_no_page);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", g_dir);
    dsd_backend_free(g_be);
    return test_report();
}
