/*
 * The disk tier (daemon/kv/disk_tier.h): pages written, the tier closed and reopened (a
 * restarted daemon) and found again, bit for bit, through io_uring + O_DIRECT, buffered
 * I/O and pread/pwrite; LRU within the budget, also across a restart; corruption of either
 * arena or the header on disk, a truncated file, a foreign cache file, other files in the
 * directory, another model; write failures; unusable directories; io_uring without a
 * registered buffer, and no locked memory at all. Scratch directories live
 * in the working directory (the build tree: a disk file system), and in /dev/shm (tmpfs)
 * when it exists.
 *   test_disk_tier
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "disk_page.h"
#include "disk_tier.h"
#include "page_hash.h"
#include "test.h"

static const struct dsd_kv_page_geom G = {.n_layers = 2, .mla_page_bytes = 64 * 328, .index_page_bytes = 64 * 132};
static const uint64_t FP = 0xabcdef0123456789ULL;
static size_t REC;

/* ---- a log that tests can search ---- */
static char g_log[16384];

static void grab_log(void *user, int level, const char *msg)
{
    (void)user;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "<%d>%s\n", level, msg);
}

/* ---- scratch directories ---- */
static char g_base[256];

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static const char *scratch(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_base, name);
    rm_rf(path);
    return path;
}

/* ---- pages: page k of a sequence is made of seed k ---- */
struct page {
    struct dsd_kv_page_meta meta;
    uint8_t *mla, *index;
};

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((seed = seed * 1664525u + 1013904223u) >> 24);
}

/* n pages of one sequence (seq picks the tokens) */
static struct page *make_pages(int n, int seq)
{
    struct page *p = calloc((size_t)n, sizeof *p);
    uint64_t parent = DSD_KV_CHAIN_ROOT;
    for (int k = 0; k < n; k++) {
        p[k].meta.parent_hash = parent;
        p[k].meta.depth = (uint32_t)k;
        for (int t = 0; t < DSD_KV_PAGE_TOKENS; t++)
            p[k].meta.tokens[t] = seq * 100000 + k * 100 + t;
        parent = p[k].meta.chain_hash = dsd_kv_chain_hash(parent, p[k].meta.tokens);
        p[k].mla = malloc(dsd_kv_page_mla_bytes(&G));
        p[k].index = malloc(dsd_kv_page_index_bytes(&G));
        fill(p[k].mla, dsd_kv_page_mla_bytes(&G), (uint32_t)(seq * 1000 + k));
        fill(p[k].index, dsd_kv_page_index_bytes(&G), (uint32_t)(seq * 1000 + k + 500));
    }
    return p;
}

static void free_pages(struct page *p, int n)
{
    for (int k = 0; k < n; k++) {
        free(p[k].mla);
        free(p[k].index);
    }
    free(p);
}

static struct dsd_disk_tier *open_tier(const char *dir, int n_slots, unsigned flags, uint64_t fp, struct dsd_err *err)
{
    struct dsd_disk_tier_config c = {.dir = dir, .budget_bytes = 4096 + (uint64_t)n_slots * REC, .geom = G,
                                     .fingerprint = fp, .flags = flags, .log = grab_log};
    g_log[0] = 0;
    return dsd_disk_tier_open(&c, err);
}

/* Reads page p back and compares both arenas. Returns the get's code (1: bytes differ). */
static int get_and_compare(struct dsd_disk_tier *dt, const struct page *p)
{
    uint8_t *mla = malloc(dsd_kv_page_mla_bytes(&G)), *idx = malloc(dsd_kv_page_index_bytes(&G));
    memset(mla, 0, dsd_kv_page_mla_bytes(&G));
    memset(idx, 0, dsd_kv_page_index_bytes(&G));
    struct dsd_err err = {{0}};
    int rc = dsd_disk_tier_get(dt, p->meta.chain_hash, &p->meta, mla, idx, &err);
    if (rc == 0 && (memcmp(mla, p->mla, dsd_kv_page_mla_bytes(&G)) || memcmp(idx, p->index, dsd_kv_page_index_bytes(&G))))
        rc = 1;
    free(mla);
    free(idx);
    return rc;
}

/* The file offset of the record holding page h, found by reading the headers as the format
 * says (docs/KV_CACHE.md §6: slot i at 4096 + i * record bytes, chain hash at byte 72). */
static long long find_record(const char *path, uint64_t h)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    struct stat st;
    fstat(fd, &st);
    long long found = -1;
    for (long long off = 4096; off + 4096 <= st.st_size && found < 0; off += (long long)REC) {
        uint8_t hdr[80];
        if (pread(fd, hdr, sizeof hdr, off) != (ssize_t)sizeof hdr)
            break;
        uint64_t v = 0;
        for (int b = 7; b >= 0; b--)
            v = v << 8 | hdr[72 + b];
        if (memcmp(hdr, DSD_KV_PAGE_MAGIC, 8) == 0 && v == h)
            found = off;
    }
    close(fd);
    return found;
}

static int flip_byte(const char *path, long long off)
{
    int fd = open(path, O_RDWR);
    uint8_t b = 0;
    int ok = fd >= 0 && pread(fd, &b, 1, off) == 1;
    b ^= 0x40;
    ok = ok && pwrite(fd, &b, 1, off) == 1;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* ---- tests ---- */

static void restart_round_trip(const char *dir, unsigned flags, const char *what)
{
    struct dsd_err err = {{0}};
    struct page *p = make_pages(5, 1);
    struct dsd_disk_tier *dt = open_tier(dir, 8, flags, FP, &err);
    ASSERT_TRUE(dt != NULL);
    if (!dt) {
        fprintf(stderr, "  %s\n", err.msg);
        free_pages(p, 5);
        return;
    }
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    printf("  %s: %s I/O%s%s\n", what, st.direct ? "direct" : "buffered", st.uring ? ", io_uring" : ", pread/pwrite",
           st.registered ? " (registered buffer)" : "");
    ASSERT_EQ_INT(st.slots, 8);
    ASSERT_EQ_INT(st.pages, 0);
    for (int k = 0; k < 5; k++) {
        struct dsd_kv_page_meta m = p[k].meta;
        m.chain_hash = 0;
        ASSERT_EQ_INT(dsd_disk_tier_put(dt, &m, p[k].mla, p[k].index, &err), 0);
        ASSERT_TRUE(m.chain_hash == p[k].meta.chain_hash);
    }
    ASSERT_EQ_INT(get_and_compare(dt, &p[2]), 0);
    dsd_disk_tier_close(dt);

    dt = open_tier(dir, 8, flags, FP, &err);                    /* the restart */
    ASSERT_TRUE(dt != NULL);
    if (!dt) {
        free_pages(p, 5);
        return;
    }
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.pages, 5);
    ASSERT_EQ_INT(st.dropped, 0);
    for (int k = 0; k < 5; k++) {
        ASSERT_TRUE(dsd_disk_tier_contains(dt, p[k].meta.chain_hash));
        ASSERT_EQ_INT(get_and_compare(dt, &p[k]), 0);
    }
    /* a name that is not stored, and the right name with other tokens */
    struct page *q = make_pages(1, 2);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, q[0].meta.chain_hash));
    ASSERT_EQ_INT(get_and_compare(dt, &q[0]), -ENOENT);
    struct dsd_kv_page_meta wrong = p[1].meta;
    wrong.tokens[3]++;
    ASSERT_EQ_INT(dsd_disk_tier_get(dt, p[1].meta.chain_hash, &wrong, NULL, NULL, &err), -ENOENT);
    ASSERT_TRUE(dsd_disk_tier_contains(dt, p[1].meta.chain_hash));
    /* drop: gone now and after a restart */
    ASSERT_EQ_INT(dsd_disk_tier_drop(dt, p[4].meta.chain_hash), 0);
    ASSERT_EQ_INT(dsd_disk_tier_drop(dt, p[4].meta.chain_hash), -ENOENT);
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.hits, 5);
    ASSERT_EQ_INT(st.misses, 2);
    dsd_disk_tier_close(dt);
    dt = open_tier(dir, 8, flags, FP, &err);
    ASSERT_TRUE(dt && !dsd_disk_tier_contains(dt, p[4].meta.chain_hash) && dsd_disk_tier_contains(dt, p[3].meta.chain_hash));
    dsd_disk_tier_close(dt);
    free_pages(q, 1);
    free_pages(p, 5);
}

TEST(restart_finds_pages_direct_uring)
{
    restart_round_trip(scratch("rt-direct"), 0, "build tree, default");
}

TEST(restart_finds_pages_buffered_pread)
{
    restart_round_trip(scratch("rt-buffered"), DSD_DISK_TIER_BUFFERED | DSD_DISK_TIER_NO_URING, "build tree, forced");
}

/* io_uring with no registered buffer (registration refused, as a low RLIMIT_MEMLOCK does
 * without CAP_IPC_LOCK): the same round trip through unregistered reads and writes */
TEST(restart_finds_pages_uring_unregistered)
{
    const char *dir = scratch("rt-unregistered");
    restart_round_trip(dir, DSD_DISK_TIER_NO_REGISTER, "build tree, unregistered");
    struct dsd_err err = {{0}};
    struct dsd_disk_tier *dt = open_tier(dir, 8, DSD_DISK_TIER_NO_REGISTER, FP, &err);
    ASSERT_TRUE(dt != NULL);
    if (dt) {
        struct dsd_disk_tier_stats st;
        dsd_disk_tier_stats(dt, &st);
        ASSERT_TRUE(!st.registered);
        dsd_disk_tier_close(dt);
    }
}

/* With no locked memory allowed at all (RLIMIT_MEMLOCK 0, in a child process): the tier
 * opens and serves its pages through whatever I/O path is left (as root, CAP_IPC_LOCK
 * ignores the limit and nothing changes) */
TEST(no_locked_memory_still_serves_pages)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        struct rlimit none = {0, 0};
        if (setrlimit(RLIMIT_MEMLOCK, &none) != 0)
            _exit(3);
        restart_round_trip(scratch("rt-nomemlock"), 0, "build tree, RLIMIT_MEMLOCK 0");
        fflush(stdout);
        _exit(test_failures_total ? 1 : 0);
    }
    int status = 0;
    ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ_INT(WEXITSTATUS(status), 0);
}

TEST(restart_finds_pages_tmpfs)
{
    struct stat st;
    if (stat("/dev/shm", &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("  no /dev/shm: skipped\n");
        return;
    }
    char dir[64];
    snprintf(dir, sizeof dir, "/dev/shm/dsd-disk-tier-%d", (int)getpid());
    rm_rf(dir);
    if (mkdir(dir, 0755) != 0) {
        printf("  cannot create %s: skipped\n", dir);
        return;
    }
    restart_round_trip(dir, 0, "tmpfs, default");
    if (strstr(g_log, "O_DIRECT"))
        printf("  (tmpfs refused O_DIRECT: the buffered fallback ran)\n");
    rm_rf(dir);
}

TEST(lru_within_the_budget_and_across_restarts)
{
    const char *dir = scratch("lru");
    struct dsd_err err = {{0}};
    struct page *p = make_pages(7, 3);
    struct dsd_disk_tier *dt = open_tier(dir, 4, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    for (int k = 0; k < 4; k++)
        dsd_disk_tier_put(dt, &p[k].meta, p[k].mla, p[k].index, &err);
    ASSERT_EQ_INT(get_and_compare(dt, &p[0]), 0);                   /* page 0 used: page 1 is oldest */
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[1].meta, p[1].mla, p[1].index, &err), 0);   /* stored: a touch */
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[4].meta, p[4].mla, p[4].index, &err), 0);
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.evictions, 1);
    ASSERT_EQ_INT(st.pages, 4);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[2].meta.chain_hash));
    for (int k = 0; k < 5; k++)
        if (k != 2)
            ASSERT_EQ_INT(get_and_compare(dt, &p[k]), 0);
    dsd_disk_tier_close(dt);
    /* after a restart only the write order is known (the serials in the headers): pages 0
     * and 1, written first, go first although they were used after page 3 */
    dt = open_tier(dir, 4, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[5].meta, p[5].mla, p[5].index, &err), 0);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[0].meta.chain_hash));
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[6].meta, p[6].mla, p[6].index, &err), 0);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[1].meta.chain_hash));
    ASSERT_TRUE(dsd_disk_tier_contains(dt, p[3].meta.chain_hash) && dsd_disk_tier_contains(dt, p[4].meta.chain_hash));
    dsd_disk_tier_close(dt);
    /* a smaller budget after a restart keeps the pages that still fit */
    dt = open_tier(dir, 2, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.slots, 2);
    ASSERT_TRUE(st.pages <= 2);
    dsd_disk_tier_close(dt);
    free_pages(p, 7);
}

TEST(corruption_on_disk_is_dropped_never_served)
{
    const char *dir = scratch("corrupt");
    struct dsd_err err = {{0}};
    struct page *p = make_pages(4, 4);
    struct dsd_disk_tier *dt = open_tier(dir, 6, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    for (int k = 0; k < 4; k++)
        dsd_disk_tier_put(dt, &p[k].meta, p[k].mla, p[k].index, &err);
    char path[600];
    snprintf(path, sizeof path, "%s", dsd_disk_tier_path(dt));
    dsd_disk_tier_close(dt);
    long long off[4];
    for (int k = 0; k < 4; k++)
        off[k] = find_record(path, p[k].meta.chain_hash);
    ASSERT_TRUE(off[0] >= 0 && off[1] >= 0 && off[2] >= 0 && off[3] >= 0);
    /* page 0: a latent byte of the last layer; page 1: an index-K byte; page 2: a token in the header */
    ASSERT_TRUE(flip_byte(path, off[0] + 4096 + (long long)dsd_kv_page_mla_bytes(&G) - 5));
    ASSERT_TRUE(flip_byte(path, off[1] + 4096 + (long long)dsd_kv_page_mla_bytes(&G) + 100));
    ASSERT_TRUE(flip_byte(path, off[2] + 112 + 4 * 10));
    dt = open_tier(dir, 6, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.dropped, 1);                                   /* the header, at the scan */
    ASSERT_TRUE(strstr(g_log, "header checksum") != NULL);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[2].meta.chain_hash));
    g_log[0] = 0;
    ASSERT_EQ_INT(get_and_compare(dt, &p[0]), -EBADMSG);            /* the arenas, when read */
    ASSERT_TRUE(strstr(g_log, "MLA arena") != NULL);
    ASSERT_EQ_INT(get_and_compare(dt, &p[1]), -EBADMSG);
    ASSERT_TRUE(strstr(g_log, "index-K arena") != NULL);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[0].meta.chain_hash));
    ASSERT_EQ_INT(get_and_compare(dt, &p[3]), 0);
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.dropped, 3);
    dsd_disk_tier_close(dt);
    /* dropped pages stay dropped after another restart; the good one stays */
    dt = open_tier(dir, 6, 0, FP, &err);
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.pages, 1);
    ASSERT_EQ_INT(st.dropped, 0);
    ASSERT_EQ_INT(get_and_compare(dt, &p[3]), 0);
    dsd_disk_tier_close(dt);
    free_pages(p, 4);
}

/* A tier of n_slots in dir holding pages p[0..n), written in order (NULL: a failed check). */
static struct dsd_disk_tier *tier_holding(const char *dir, struct page *p, int n, int n_slots, unsigned flags)
{
    struct dsd_err err = {{0}};
    struct dsd_disk_tier *dt = open_tier(dir, n_slots, flags, FP, &err);
    ASSERT_TRUE(dt != NULL);
    for (int k = 0; dt && k < n; k++)
        ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[k].meta, p[k].mla, p[k].index, &err), 0);
    return dt;
}

/* Gets of pages p[0..n) in order, each into its own record of one aligned block (returned,
 * NULL on failure: a failed check). */
static uint8_t *gets_in_order(const struct page *p, int n, struct dsd_disk_get *g)
{
    const size_t rb = dsd_kv_page_record_bytes(&G);
    uint8_t *all = aligned_alloc(DSD_KV_PAGE_ALIGN, (size_t)n * rb);
    ASSERT_TRUE(all != NULL);
    for (int k = 0; all && k < n; k++)
        g[k] = (struct dsd_disk_get){.hash = p[k].meta.chain_hash, .expect = &p[k].meta,
                                     .rec = all + (size_t)k * rb, .rc = 1};
    return all;
}

/* dsd_disk_tier_get_many over more pages than one batch holds, with a page corrupted on disk,
 * one never stored and one named twice: each gets its own result, the good ones their bytes. */
static void get_many_round(unsigned flags)
{
    enum { N = 69 };    /* more than one window holds (DSD_DISK_TIER_READ_DEPTH requests) */
    const char *dir = scratch("many");
    struct dsd_err err = {{0}};
    struct page *p = make_pages(N, 7), *absent = make_pages(1, 8);
    struct dsd_disk_tier *dt = tier_holding(dir, p, N, N + 2, flags);
    if (!dt)
        return;
    char path[600];
    snprintf(path, sizeof path, "%s", dsd_disk_tier_path(dt));
    dsd_disk_tier_close(dt);
    long long off = find_record(path, p[3].meta.chain_hash);
    ASSERT_TRUE(off >= 0 && flip_byte(path, off + 4096 + 7));      /* a latent byte of page 3 */
    dt = open_tier(dir, N + 2, flags, FP, &err);
    ASSERT_TRUE(dt != NULL);
    if (!dt)
        return;
    /* pages 0..N-1 in reverse, then the absent page, then page 5 again */
    struct dsd_disk_get g[N + 2];
    const size_t mb = dsd_kv_page_mla_bytes(&G), ib = dsd_kv_page_index_bytes(&G);
    for (int k = 0; k < N + 2; k++) {
        const struct page *q = k < N ? &p[N - 1 - k] : k == N ? absent : &p[5];
        g[k] = (struct dsd_disk_get){.hash = q->meta.chain_hash, .expect = &q->meta, .mla = calloc(1, mb),
                                     .index = calloc(1, ib), .rc = 1};
    }
    dsd_disk_tier_get_many(dt, N + 2, g);
    for (int k = 0; k < N; k++) {
        const struct page *q = &p[N - 1 - k];
        if (q == &p[3]) {
            ASSERT_EQ_INT(g[k].rc, -EBADMSG);
            ASSERT_TRUE(strstr(g[k].err.msg, "MLA arena") != NULL);
        } else {
            ASSERT_EQ_INT(g[k].rc, 0);
            ASSERT_TRUE(memcmp(g[k].mla, q->mla, mb) == 0 && memcmp(g[k].index, q->index, ib) == 0);
        }
    }
    ASSERT_EQ_INT(g[N].rc, -ENOENT);
    ASSERT_EQ_INT(g[N + 1].rc, -ENOENT);    /* page 5 again in the same call: read once */
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.dropped, 1);
    ASSERT_EQ_INT(st.hits, N - 1);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[3].meta.chain_hash));
    /* a page named twice inside one batch is read once; the second is a miss */
    struct dsd_disk_get twice[2] = {{.hash = p[1].meta.chain_hash, .mla = g[0].mla},
                                    {.hash = p[1].meta.chain_hash, .mla = g[1].mla}};
    dsd_disk_tier_get_many(dt, 2, twice);
    ASSERT_EQ_INT(twice[0].rc, 0);
    ASSERT_EQ_INT(twice[1].rc, -ENOENT);
    /* whole records: an aligned one is read into directly, an unaligned one through staging;
     * the arenas are where dsd_kv_page_mla/index say; the corrupted page is gone */
    const size_t rb = dsd_kv_page_record_bytes(&G);
    uint8_t *al = aligned_alloc(DSD_KV_PAGE_ALIGN, 2 * rb), *un_mem = malloc(rb + 16);
    ASSERT_TRUE(al && un_mem);
    if (al && un_mem) {
        uint8_t *un = un_mem + 8;
        struct dsd_disk_get r[3] = {{.hash = p[0].meta.chain_hash, .expect = &p[0].meta, .rec = al},
                                    {.hash = p[6].meta.chain_hash, .expect = &p[6].meta, .rec = un},
                                    {.hash = p[7].meta.chain_hash, .rec = al + rb}};
        dsd_disk_tier_get_many(dt, 3, r);
        const int want[3] = {0, 6, 7};
        for (int k = 0; k < 3; k++) {
            uint8_t *rec = r[k].rec;
            ASSERT_EQ_INT(r[k].rc, 0);
            ASSERT_TRUE(memcmp(dsd_kv_page_mla(rec), p[want[k]].mla, mb) == 0 &&
                        memcmp(dsd_kv_page_index(rec, &G), p[want[k]].index, ib) == 0);
        }
    }
    free(al);
    free(un_mem);
    /* in write order the slots follow each other: the reads go in vectored runs; the dropped
     * page 3 is a miss and its neighbours in the same run are served */
    struct dsd_disk_get f[N];
    uint8_t *all = gets_in_order(p, N, f);
    if (all) {
        struct dsd_disk_tier_stats s0, s1;
        dsd_disk_tier_stats(dt, &s0);
        dsd_disk_tier_get_many(dt, N, f);
        dsd_disk_tier_stats(dt, &s1);
        /* through the ring, consecutive slots share requests; one by one, one each */
        if (s1.uring)
            ASSERT_TRUE(s1.read_requests - s0.read_requests < (uint64_t)N / 2);
        else
            ASSERT_EQ_INT((int)(s1.read_requests - s0.read_requests), N - 1);
        int good = 0;
        for (int k = 0; k < N; k++) {
            if (k == 3) {
                ASSERT_EQ_INT(f[k].rc, -ENOENT);
                continue;
            }
            ASSERT_EQ_INT(f[k].rc, 0);
            good += f[k].rc == 0 && memcmp(dsd_kv_page_mla(f[k].rec), p[k].mla, mb) == 0 &&
                    memcmp(dsd_kv_page_index(f[k].rec, &G), p[k].index, ib) == 0;
        }
        ASSERT_EQ_INT(good, N - 1);
    }
    free(all);
    for (int k = 0; k < N + 2; k++) {
        free(g[k].mla);
        free(g[k].index);
    }
    dsd_disk_tier_close(dt);
    free_pages(p, N);
    free_pages(absent, 1);
}

TEST(get_many_reads_a_batch_and_judges_each_page)
{
    get_many_round(0);
    get_many_round(DSD_DISK_TIER_NO_URING);
}

/* What dsd_disk_tier_get_stream's landed callback sees: the order, and each page's state at
 * the moment it is handed on. */
struct stream_seen {
    struct dsd_disk_get *g;
    const struct page *p;
    int n, calls, out_of_order, not_final, wrong_bytes, last_unread_at_first;
    const int *bad;         /* [2] pages corrupted on disk */
};

static void stream_landed(void *user, int k)
{
    struct stream_seen *s = user;
    s->out_of_order += k != s->calls;
    s->calls++;
    const struct dsd_disk_get *g = &s->g[k];
    s->not_final += g->rc > 0;
    const bool bad = k == s->bad[0] || k == s->bad[1];
    if (bad ? g->rc != -EBADMSG
            : g->rc != 0 || memcmp(dsd_kv_page_mla(g->rec), s->p[k].mla, dsd_kv_page_mla_bytes(&G)) != 0 ||
                  memcmp(dsd_kv_page_index(g->rec, &G), s->p[k].index, dsd_kv_page_index_bytes(&G)) != 0)
        s->wrong_bytes++;
    if (k == 0)
        s->last_unread_at_first = s->g[s->n - 1].rc == 7;   /* still the caller's value */
}

/* A prefix several windows long, read as one stream: every page is handed on once, in order,
 * already judged (its record usable), the first before the last is even read; two pages
 * corrupted on disk, in different windows, are dropped and their neighbours served. */
static void stream_round(unsigned flags)
{
    enum { N = 400 };       /* 400 records of 64 KiB: 26 MB, past the 16 MiB a window holds */
    const char *dir = scratch("stream");
    struct page *p = make_pages(N, 11);
    struct dsd_disk_tier *dt = tier_holding(dir, p, N, N + 4, flags);
    if (!dt)
        return;
    char path[600];
    snprintf(path, sizeof path, "%s", dsd_disk_tier_path(dt));
    dsd_disk_tier_close(dt);
    static const int bad[2] = {150, 330};
    for (int b = 0; b < 2; b++) {
        long long off = find_record(path, p[bad[b]].meta.chain_hash);
        ASSERT_TRUE(off >= 0 && flip_byte(path, off + 4096 + (long long)dsd_kv_page_mla_bytes(&G) + 3 * b));
    }
    struct dsd_err err = {{0}};
    dt = open_tier(dir, N + 4, flags, FP, &err);
    ASSERT_TRUE(dt != NULL);
    struct dsd_disk_get *g = calloc(N, sizeof *g);
    uint8_t *all = g ? gets_in_order(p, N, g) : NULL;
    if (dt && all) {
        for (int k = 0; k < N; k++)
            g[k].rc = 7;
        struct stream_seen seen = {.g = g, .p = p, .n = N, .bad = bad};
        dsd_disk_tier_get_stream(dt, N, g, stream_landed, &seen);
        ASSERT_EQ_INT(seen.calls, N);
        ASSERT_EQ_INT(seen.out_of_order, 0);
        ASSERT_EQ_INT(seen.not_final, 0);
        ASSERT_EQ_INT(seen.wrong_bytes, 0);
        ASSERT_TRUE(seen.last_unread_at_first);
        for (int b = 0; b < 2; b++)
            ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[bad[b]].meta.chain_hash));
        struct dsd_disk_tier_stats st;
        dsd_disk_tier_stats(dt, &st);
        ASSERT_EQ_INT(st.dropped, 2);
        ASSERT_EQ_INT((int)st.hits, N - 2);
        if (st.uring)       /* consecutive slots in vectored runs, across the windows */
            ASSERT_TRUE(st.read_requests < (uint64_t)N / 16);
    }
    free(all);
    free(g);
    dsd_disk_tier_close(dt);
    free_pages(p, N);
}

TEST(a_stream_hands_each_page_on_in_order_as_it_lands)
{
    stream_round(0);
    stream_round(DSD_DISK_TIER_NO_URING);
}

TEST(truncated_file)
{
    const char *dir = scratch("truncated");
    struct dsd_err err = {{0}};
    struct page *p = make_pages(3, 5);
    struct dsd_disk_tier *dt = open_tier(dir, 6, 0, FP, &err);
    for (int k = 0; k < 3; k++)
        dsd_disk_tier_put(dt, &p[k].meta, p[k].mla, p[k].index, &err);
    char path[600];
    snprintf(path, sizeof path, "%s", dsd_disk_tier_path(dt));
    dsd_disk_tier_close(dt);
    long long off1 = find_record(path, p[1].meta.chain_hash);
    ASSERT_TRUE(off1 > 0);
    ASSERT_EQ_INT(truncate(path, off1 + (long long)REC / 2), 0);    /* page 1 cut in its arenas */
    dt = open_tier(dir, 6, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    int before = find_record(path, p[0].meta.chain_hash) < off1;    /* page 0 before the cut? */
    ASSERT_EQ_INT(st.pages, before ? 1 : 0);
    ASSERT_TRUE(st.dropped >= 1);
    ASSERT_TRUE(strstr(g_log, "truncated") != NULL);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[1].meta.chain_hash));
    if (before)
        ASSERT_EQ_INT(get_and_compare(dt, &p[0]), 0);
    /* the file has its full size again and takes new pages */
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[1].meta, p[1].mla, p[1].index, &err), 0);
    ASSERT_EQ_INT(get_and_compare(dt, &p[1]), 0);
    dsd_disk_tier_close(dt);
    /* a file cut inside its own header starts over */
    ASSERT_EQ_INT(truncate(path, 100), 0);
    dt = open_tier(dir, 6, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.pages, 0);
    ASSERT_TRUE(strstr(g_log, "starting it over") != NULL);
    dsd_disk_tier_close(dt);
    free_pages(p, 3);
}

/* A file cut short while the tier has it open (another process, a full disk's repair): a
 * vectored read of consecutive slots comes back short; the pages it covered are served, the
 * rest judged one by one and refused, never served from a partial record. */
static void cut_while_open_round(unsigned flags)
{
    enum { N = 6 };
    const char *dir = scratch("cut-open");
    struct page *p = make_pages(N, 9);
    struct dsd_disk_tier *dt = tier_holding(dir, p, N, N + 2, flags);
    if (!dt)
        return;
    long long off3 = find_record(dsd_disk_tier_path(dt), p[3].meta.chain_hash);
    ASSERT_TRUE(off3 > 0);
    bool in_order = true;           /* slots handed out from the start: 0..2 before the cut */
    for (int k = 0; k < 3; k++)
        in_order &= find_record(dsd_disk_tier_path(dt), p[k].meta.chain_hash) < off3;
    ASSERT_TRUE(in_order);
    ASSERT_EQ_INT(truncate(dsd_disk_tier_path(dt), off3 + (long long)REC / 3), 0);
    struct dsd_disk_get g[N];
    uint8_t *all = gets_in_order(p, N, g);
    if (all) {
        dsd_disk_tier_get_many(dt, N, g);
        for (int k = 0; k < N; k++) {
            if (k < 3) {
                ASSERT_EQ_INT(g[k].rc, 0);
                ASSERT_TRUE(memcmp(dsd_kv_page_mla(g[k].rec), p[k].mla, dsd_kv_page_mla_bytes(&G)) == 0);
            } else {
                ASSERT_TRUE(g[k].rc < 0);
                ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[k].meta.chain_hash));
            }
        }
    }
    free(all);
    dsd_disk_tier_close(dt);
    free_pages(p, N);
}

TEST(file_cut_while_open_refuses_the_pages_past_the_cut)
{
    cut_while_open_round(0);
    cut_while_open_round(DSD_DISK_TIER_NO_URING);
}

static int file_is(const char *path, const char *content)
{
    char buf[256] = {0};
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == strlen(content) && memcmp(buf, content, n) == 0;
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
}

TEST(foreign_files_and_other_models)
{
    const char *dir0 = scratch("foreign");
    char dir[512];
    snprintf(dir, sizeof dir, "%s", dir0);
    ASSERT_EQ_INT(mkdir(dir, 0755), 0);
    char notes[600], other[600];
    snprintf(notes, sizeof notes, "%s/notes.txt", dir);
    snprintf(other, sizeof other, "%s/kv-0000000000000001.dsdkv", dir);
    write_file(notes, "hello\n");
    write_file(other, "someone else's pages\n");
    struct dsd_err err = {{0}};
    struct page *p = make_pages(2, 6);
    struct dsd_disk_tier *dt = open_tier(dir, 4, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    ASSERT_TRUE(strstr(g_log, "notes.txt is not a deepseekd cache file") != NULL);
    ASSERT_TRUE(strstr(g_log, "kv-0000000000000001.dsdkv belongs to another model") != NULL);
    for (int k = 0; k < 2; k++)
        dsd_disk_tier_put(dt, &p[k].meta, p[k].mla, p[k].index, &err);
    char path[600];
    snprintf(path, sizeof path, "%s", dsd_disk_tier_path(dt));
    dsd_disk_tier_close(dt);
    ASSERT_TRUE(file_is(notes, "hello\n"));                         /* never touched */
    ASSERT_TRUE(file_is(other, "someone else's pages\n"));

    /* another model opening the same directory: its own file, none of our pages */
    dt = open_tier(dir, 4, 0, FP + 1, &err);
    ASSERT_TRUE(dt != NULL);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[0].meta.chain_hash));
    ASSERT_TRUE(strcmp(dsd_disk_tier_path(dt), path) != 0);
    char theirs[600];
    snprintf(theirs, sizeof theirs, "%s", dsd_disk_tier_path(dt));
    dsd_disk_tier_close(dt);
    /* our file renamed to that model's name: its header says whose it is */
    ASSERT_EQ_INT(rename(path, theirs), 0);
    dt = open_tier(dir, 4, 0, FP + 1, &err);
    ASSERT_TRUE(dt != NULL);
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.pages, 0);
    ASSERT_TRUE(strstr(g_log, "another model") != NULL);
    dsd_disk_tier_close(dt);
    /* a foreign file under our name is started over */
    write_file(path, "not a cache file at all, but long enough to have a header? no\n");
    dt = open_tier(dir, 4, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.pages, 0);
    ASSERT_TRUE(strstr(g_log, "starting it over") != NULL);
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[0].meta, p[0].mla, p[0].index, &err), 0);
    dsd_disk_tier_close(dt);
    free_pages(p, 2);
}

TEST(unusable_directories_disable_the_tier)
{
    struct dsd_err err = {{0}};
    char dir[600];
    snprintf(dir, sizeof dir, "%s/no/such/parent", scratch("missing"));
    ASSERT_TRUE(open_tier(dir, 4, 0, FP, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "disk KV tier disabled") != NULL);
    ASSERT_TRUE(strstr(err.msg, "No such file") != NULL);
    /* a missing leaf is created */
    snprintf(dir, sizeof dir, "%s", scratch("created"));
    struct dsd_disk_tier *dt = open_tier(dir, 4, 0, FP, &err);
    ASSERT_TRUE(dt != NULL);
    dsd_disk_tier_close(dt);
    /* a file where the directory should be */
    char file[600];
    snprintf(file, sizeof file, "%s/plain", dir);
    write_file(file, "x");
    ASSERT_TRUE(open_tier(file, 4, 0, FP, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "not a directory") != NULL);
    /* a budget below one page */
    struct dsd_disk_tier_config c = {.dir = dir, .budget_bytes = REC, .geom = G, .fingerprint = FP};
    ASSERT_TRUE(dsd_disk_tier_open(&c, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "raise disk_cache_gb") != NULL);
    c.dir = NULL;
    ASSERT_TRUE(dsd_disk_tier_open(&c, &err) == NULL);
    /* read-only: permissions bind only a non-root user */
    char ro[600];
    snprintf(ro, sizeof ro, "%s", scratch("readonly"));
    ASSERT_EQ_INT(mkdir(ro, 0555), 0);
    if (geteuid() != 0) {
        ASSERT_TRUE(open_tier(ro, 4, 0, FP, &err) == NULL);
        ASSERT_TRUE(strstr(err.msg, "disk KV tier disabled") != NULL);
        printf("  read-only directory: %s\n", err.msg);
    } else {
        printf("  running as root: the read-only directory case is not observable\n");
    }
    chmod(ro, 0755);
}

TEST(failed_writes_leave_the_page_uncached)
{
    const char *dir = scratch("efbig");
    struct dsd_err err = {{0}};
    struct page *p = make_pages(3, 7);
    struct dsd_disk_tier *dt = open_tier(dir, 4, DSD_DISK_TIER_NO_URING, FP, &err);
    ASSERT_TRUE(dt != NULL);
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[0].meta, p[0].mla, p[0].index, &err), 0);
    /* writes past slot 1 now fail (EFBIG), as a full or failing disk would */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096 + REC + REC / 2;
    ASSERT_EQ_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[1].meta, p[1].mla, p[1].index, &err), -EIO);
    ASSERT_TRUE(strstr(err.msg, "not cached") != NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    ASSERT_TRUE(!dsd_disk_tier_contains(dt, p[1].meta.chain_hash));
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    ASSERT_TRUE(st.io_errors >= 1);
    ASSERT_EQ_INT(st.pages, 1);
    ASSERT_EQ_INT(get_and_compare(dt, &p[0]), 0);                   /* the tier still works */
    ASSERT_EQ_INT(dsd_disk_tier_put(dt, &p[2].meta, p[2].mla, p[2].index, &err), 0);
    ASSERT_EQ_INT(get_and_compare(dt, &p[2]), 0);
    dsd_disk_tier_close(dt);
    free_pages(p, 3);
}

int main(void)
{
    REC = dsd_kv_page_record_bytes(&G);
    char cwd[200];
    if (!getcwd(cwd, sizeof cwd))
        return 1;
    snprintf(g_base, sizeof g_base, "%s/disk-tier-scratch-%d", cwd, (int)getpid());
    if (mkdir(g_base, 0755) != 0)
        return 1;
    RUN(restart_finds_pages_direct_uring);
    RUN(restart_finds_pages_buffered_pread);
    RUN(restart_finds_pages_uring_unregistered);
    RUN(no_locked_memory_still_serves_pages);
    RUN(restart_finds_pages_tmpfs);
    RUN(lru_within_the_budget_and_across_restarts);
    RUN(corruption_on_disk_is_dropped_never_served);
    RUN(get_many_reads_a_batch_and_judges_each_page);
    RUN(a_stream_hands_each_page_on_in_order_as_it_lands);
    RUN(truncated_file);
    RUN(file_cut_while_open_refuses_the_pages_past_the_cut);
    RUN(foreign_files_and_other_models);
    RUN(unusable_directories_disable_the_tier);
    RUN(failed_writes_leave_the_page_uncached);
    int rc = test_report();
    if (rc == 0)
        rm_rf(g_base);
    return rc;
}
