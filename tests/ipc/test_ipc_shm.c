/*
 * Shared-memory tests: the client's sealed memfd passes the daemon's checks; every way a memfd
 * or its header can be wrong is refused with its own message; rings deliver a million tokens in
 * order between two threads and between two processes; a hostile consumer position never
 * makes the producer write outside its ring.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc_shm.h"
#include "test.h"

#define MAX_BYTES (1ull << 30)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

TEST(create_layout_and_attach)
{
    struct dsd_shm c, d;
    struct dsd_err err = {{0}};
    struct dsd_shm_params p = {.prompt_capacity = 1000, .ring_count = 3, .ring_capacity = 64};
    ASSERT_EQ_INT(dsd_shm_create(&p, &c, &err), 0);
    /* The documented byte offsets (PROTOCOL.md §7.2), read as raw bytes. */
    const uint8_t *h = c.base;
    ASSERT_TRUE(memcmp(h, "DSD-SHM\0", 8) == 0);
    ASSERT_EQ_INT(rd32(h + 8), 1);
    ASSERT_EQ_INT(rd32(h + 12), 128);
    ASSERT_EQ_INT(rd64(h + 16), c.size);
    ASSERT_EQ_INT(rd64(h + 24), 4096);                   /* prompt arena on its own page */
    ASSERT_EQ_INT(rd64(h + 32), 1000);
    ASSERT_EQ_INT(rd64(h + 40), 8192);                   /* 4000 bytes rounded to a page */
    ASSERT_EQ_INT(rd32(h + 48), 3);
    ASSERT_EQ_INT(rd32(h + 52), 64);
    ASSERT_EQ_INT(rd64(h + 56), 640);                    /* 384 + 256 */
    ASSERT_EQ_INT(c.size, 12288);
    /* Sealed exactly as required: resizing is refused. */
    int seals = fcntl(c.fd, F_GET_SEALS);
    ASSERT_EQ_INT(seals, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    ASSERT_EQ_INT(ftruncate(c.fd, 4096), -1);
    ASSERT_EQ_INT(errno, EPERM);
    ASSERT_EQ_INT(ftruncate(c.fd, 1 << 20), -1);
    ASSERT_EQ_INT(fcntl(c.fd, F_ADD_SEALS, F_SEAL_WRITE), -1);

    struct dsd_ipc_fail fail;
    ASSERT_EQ_INT(dsd_shm_attach(dup(c.fd), MAX_BYTES, &d, &fail), 0);
    ASSERT_EQ_INT(d.fd, -1);                             /* the daemon keeps no fd */
    ASSERT_EQ_INT(d.geo.prompt_capacity, 1000);
    ASSERT_EQ_INT(d.geo.ring_count, 3);
    ASSERT_EQ_INT(d.geo.ring_capacity, 64);
    ASSERT_EQ_INT(d.geo.rings_offset, 8192);
    ASSERT_TRUE(dsd_shm_ring(&d, 2) != NULL);
    ASSERT_TRUE(dsd_shm_ring(&d, 3) == NULL);
    /* Two mappings of one memfd: writes are shared. */
    dsd_shm_prompt(&c)[999] = 0xabcdef;
    ASSERT_EQ_INT(dsd_shm_prompt(&d)[999], 0xabcdef);
    dsd_shm_close(&d);
    dsd_shm_close(&c);

    /* Layout parameters the client may not ask for. */
    struct dsd_shm_params bad[] = {
        {0, 0, 0}, {0, 1, 15}, {0, 1, 100}, {0, 1025, 64}, {0, 1, 1u << 25},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ASSERT_EQ_INT(dsd_shm_create(&bad[i], &c, &err), -EINVAL);
    ASSERT_EQ_INT(c.fd, -1);
    /* Only an arena, only rings. */
    struct dsd_shm_params only_p = {.prompt_capacity = 16}, only_r = {.ring_count = 1,
                                                                       .ring_capacity = 16};
    ASSERT_EQ_INT(dsd_shm_create(&only_p, &c, &err), 0);
    ASSERT_EQ_INT(dsd_shm_attach(dup(c.fd), MAX_BYTES, &d, &fail), 0);
    ASSERT_EQ_INT(d.geo.ring_count, 0);
    dsd_shm_close(&d);
    dsd_shm_close(&c);
    ASSERT_EQ_INT(dsd_shm_create(&only_r, &c, &err), 0);
    ASSERT_EQ_INT(dsd_shm_attach(dup(c.fd), MAX_BYTES, &d, &fail), 0);
    ASSERT_TRUE(dsd_shm_prompt(&d) == NULL);
    dsd_shm_close(&d);
    dsd_shm_close(&c);
}

/* A memfd of size bytes holding hdr (if given), with the given seals. */
static int make_memfd(const struct dsd_shm_header *hdr, size_t size, unsigned flags, int seals)
{
    int fd = memfd_create("test", MFD_CLOEXEC | flags);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) < 0 ||
        (hdr && pwrite(fd, hdr, sizeof *hdr < size ? sizeof *hdr : size, 0) < 0) ||
        (seals && fcntl(fd, F_ADD_SEALS, seals) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

#define GOOD_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static void expect_refused_at(const char *file, int line, int fd, uint64_t max,
                              const char *needle)
{
    struct dsd_shm d;
    struct dsd_ipc_fail fail = {0};
    int rc = dsd_shm_attach(fd, max, &d, &fail);
    test_checks_total++;
    if (rc >= 0 || fail.code != DSD_IPC_E_SHM_INVALID || !strstr(fail.err.msg, needle)) {
        fprintf(stderr, "%s:%d: [%s] expected shm_invalid \"%s\", got rc %d code %u: %s\n", file,
                line, test_current_name, needle, rc, fail.code, fail.err.msg);
        test_current_failed = 1;
        test_failures_total++;
    }
    ASSERT_TRUE(d.base == NULL && d.fd == -1);
    /* The fd was taken over and closed, whatever happened. */
    if (fd >= 0)
        ASSERT_TRUE(fcntl(fd, F_GETFD) == -1 && errno == EBADF);
}
#define EXPECT_REFUSED(fd, max, needle) expect_refused_at(__FILE__, __LINE__, fd, max, needle)

TEST(attach_refuses_bad_fds)
{
    struct dsd_shm_header h;
    struct dsd_shm_params p = {.prompt_capacity = 64, .ring_count = 2, .ring_capacity = 16};
    ASSERT_EQ_INT(dsd_shm_layout(&p, &h, NULL), 0);
    size_t size = h.total_size;

    EXPECT_REFUSED(-1, MAX_BYTES, "no file descriptor");
    /* Unsealed, partly sealed, sealing not allowed at all. */
    EXPECT_REFUSED(make_memfd(&h, size, MFD_ALLOW_SEALING, 0), MAX_BYTES,
                   "not sealed (seals: none)");
    EXPECT_REFUSED(make_memfd(&h, size, MFD_ALLOW_SEALING, F_SEAL_SHRINK | F_SEAL_SEAL),
                   MAX_BYTES, "not sealed (seals: SHRINK SEAL)");
    EXPECT_REFUSED(make_memfd(&h, size, MFD_ALLOW_SEALING, F_SEAL_SHRINK | F_SEAL_GROW),
                   MAX_BYTES, "not sealed");
    EXPECT_REFUSED(make_memfd(&h, size, 0, 0), MAX_BYTES, "not sealed (seals: SEAL)");
    /* Sealed against writes: the daemon could not write the rings. */
    EXPECT_REFUSED(make_memfd(&h, size, MFD_ALLOW_SEALING, GOOD_SEALS | F_SEAL_WRITE), MAX_BYTES,
                   "sealed against writes");
    EXPECT_REFUSED(make_memfd(&h, size, MFD_ALLOW_SEALING, GOOD_SEALS | F_SEAL_FUTURE_WRITE),
                   MAX_BYTES, "FUTURE_WRITE");
    /* Sizes. */
    EXPECT_REFUSED(make_memfd(NULL, 64, MFD_ALLOW_SEALING, GOOD_SEALS), MAX_BYTES,
                   "64 bytes, less than the 128-byte header");
    EXPECT_REFUSED(make_memfd(NULL, 0, MFD_ALLOW_SEALING, GOOD_SEALS), MAX_BYTES,
                   "0 bytes");
    EXPECT_REFUSED(make_memfd(&h, size, MFD_ALLOW_SEALING, GOOD_SEALS), size - 1,
                   "the limit is");
    /* Sealed and sized fine, but smaller than the header claims. */
    EXPECT_REFUSED(make_memfd(&h, size - 4096, MFD_ALLOW_SEALING, GOOD_SEALS), MAX_BYTES,
                   "header says");
    /* Not a memfd at all: a pipe, a plain file. */
    int pfd[2];
    ASSERT_EQ_INT(pipe(pfd), 0);
    EXPECT_REFUSED(pfd[0], MAX_BYTES, "not a memfd");
    close(pfd[1]);
    char path[] = "/tmp/dsd_shm_test_XXXXXX";
    int tfd = mkstemp(path);
    ASSERT_TRUE(tfd >= 0);
    unlink(path);
    ASSERT_EQ_INT(pwrite(tfd, &h, sizeof h, 0), (ssize_t)sizeof h);
    ASSERT_EQ_INT(ftruncate(tfd, (off_t)size), 0);
    EXPECT_REFUSED(tfd, MAX_BYTES, "memfd");
    /* The good one passes (the control for all of the above). */
    struct dsd_shm d;
    ASSERT_EQ_INT(dsd_shm_attach(make_memfd(&h, size, MFD_ALLOW_SEALING, GOOD_SEALS), MAX_BYTES,
                                 &d, NULL), 0);
    dsd_shm_close(&d);
}

/* The racing client of dsd_shm_attach: between the daemon's two reads of the memfd it shrinks
 * the file by one page and then seals it. */
struct race {
    uint64_t shrink_to;
    int calls;
    int truncate_rc;        /* ftruncate's result: 0 = the file really shrank */
};

static void shrink_and_seal(int fd, void *user)
{
    struct race *r = user;
    r->calls++;
    r->truncate_rc = ftruncate(fd, (off_t)r->shrink_to);
    fcntl(fd, F_ADD_SEALS, GOOD_SEALS);
}

TEST(attach_seal_race_is_refused)
{
    /* An unsealed memfd with a good header for its size. If the size were read before the
     * seals, the hook's shrink-then-seal would pass the seal check with a stale size: the
     * daemon would map a page past the end of the file and SIGBUS on a ring write there. */
    struct dsd_shm_header h;
    struct dsd_shm_params p = {.prompt_capacity = 64, .ring_count = 2, .ring_capacity = 1024};
    ASSERT_EQ_INT(dsd_shm_layout(&p, &h, NULL), 0);
    size_t size = h.total_size;
    struct race r = {.shrink_to = size - 4096};
    struct dsd_shm d;
    struct dsd_ipc_fail fail = {0};
    int rc = dsd_shm_attach_hooked(make_memfd(&h, size, MFD_ALLOW_SEALING, 0), MAX_BYTES, &d,
                                   &fail, shrink_and_seal, &r);
    printf("  unsealed, shrunk and sealed in between: rc %d (%s), hook ran %d time(s)\n", rc,
           fail.err.msg, r.calls);
    ASSERT_EQ_INT(rc, -EPROTO);
    ASSERT_EQ_INT(fail.code, DSD_IPC_E_SHM_INVALID);
    ASSERT_TRUE(strstr(fail.err.msg, "not sealed") != NULL);
    if (rc == 0)
        dsd_shm_close(&d);      /* never touch its pages: the last one is past the file */
    /* Control: sealed before sending, the same attempt in between cannot shrink it, and the
     * attach succeeds with the size the seals froze. */
    r = (struct race){.shrink_to = size - 4096};
    rc = dsd_shm_attach_hooked(make_memfd(&h, size, MFD_ALLOW_SEALING, GOOD_SEALS), MAX_BYTES,
                               &d, &fail, shrink_and_seal, &r);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(r.calls, 1);
    ASSERT_TRUE(r.truncate_rc < 0);
    ASSERT_EQ_INT(d.size, size);
    if (rc == 0) {
        /* every ring slot is writable: the mapping is all inside the file */
        struct dsd_shm_ring *last = dsd_shm_ring(&d, 1);
        ((volatile uint8_t *)last)[h.ring_stride - 1] = 1;
        dsd_shm_close(&d);
    }
}

/* Checks a mutated header with the pure validator and, through a real sealed memfd, with
 * dsd_shm_attach; both must refuse with the needle. */
static void header_case_at(const char *file, int line, const struct dsd_shm_header *h,
                           uint64_t file_size, const char *needle)
{
    struct dsd_shm_geometry g;
    struct dsd_ipc_fail fail = {0};
    int rc = dsd_shm_check_header(h, sizeof *h, file_size, &g, &fail);
    test_checks_total++;
    if (rc != -EPROTO || fail.code != DSD_IPC_E_SHM_INVALID || !strstr(fail.err.msg, needle)) {
        fprintf(stderr, "%s:%d: [%s] expected \"%s\", got rc %d: %s\n", file, line,
                test_current_name, needle, rc, fail.err.msg);
        test_current_failed = 1;
        test_failures_total++;
    }
    if (file_size <= (1u << 20)) {
        int fd = make_memfd(h, file_size, MFD_ALLOW_SEALING, GOOD_SEALS);
        ASSERT_TRUE(fd >= 0);
        expect_refused_at(file, line, fd, MAX_BYTES, needle);
    }
}
#define HEADER_CASE(field, value, needle)                                                  \
    do {                                                                                   \
        struct dsd_shm_header h_ = good;                                                   \
        h_.field = value;                                                                  \
        header_case_at(__FILE__, __LINE__, &h_, good.total_size, needle);                  \
    } while (0)

TEST(header_validation)
{
    struct dsd_shm_header good;
    struct dsd_shm_params p = {.prompt_capacity = 1024, .ring_count = 4, .ring_capacity = 32};
    ASSERT_EQ_INT(dsd_shm_layout(&p, &good, NULL), 0);
    struct dsd_shm_geometry g;
    ASSERT_EQ_INT(dsd_shm_check_header(&good, sizeof good, good.total_size, &g, NULL), 0);

    HEADER_CASE(magic[0], 'X', "bad magic");
    HEADER_CASE(version, 2, "layout version 2, this daemon speaks version 1");
    HEADER_CASE(header_size, 256, "header_size 256");
    HEADER_CASE(total_size, good.total_size + 4096, "header says");
    HEADER_CASE(flags, 1, "flags 0x1");
    HEADER_CASE(reserved[59], 1, "reserved header byte 127");
    HEADER_CASE(prompt_offset, 4100, "prompt_offset 4100 must be a multiple of 128");
    HEADER_CASE(prompt_offset, 0, "at least 128");
    HEADER_CASE(prompt_offset, good.total_size - 128, "ends past");
    HEADER_CASE(prompt_offset, 0xffffffffffffff80ull, "ends past");
    HEADER_CASE(prompt_capacity, 1ull << 62, "ends past");
    HEADER_CASE(prompt_capacity, 0xffffffffffffffffull, "ends past");
    HEADER_CASE(ring_count, 1025, "1025 rings, at most 1024");
    HEADER_CASE(ring_count, 0xffffffffu, "rings, at most");
    HEADER_CASE(ring_count, 1000, "end past the region");
    HEADER_CASE(ring_capacity, 48, "power of two");
    HEADER_CASE(ring_capacity, 8, "power of two in [16");
    HEADER_CASE(ring_capacity, 1u << 31, "power of two");
    HEADER_CASE(ring_capacity, 0, "power of two");
    HEADER_CASE(ring_stride, 384 + 4 * 32 - 128, "ring_stride 384 must be");
    HEADER_CASE(ring_stride, 520, "multiple of 128");
    HEADER_CASE(ring_stride, 1ull << 63, "end past the region");
    HEADER_CASE(rings_offset, 100, "rings_offset 100");
    HEADER_CASE(rings_offset, good.total_size, "end past the region");
    HEADER_CASE(rings_offset, 0xffffffffffffff80ull, "end past the region");
    HEADER_CASE(rings_offset, 4096, "overlaps");            /* on top of the prompt arena */
    HEADER_CASE(prompt_offset, good.rings_offset, "overlaps");
    {
        struct dsd_shm_header h = good;
        h.prompt_capacity = 0;
        h.ring_count = 0;
        header_case_at(__FILE__, __LINE__, &h, good.total_size, "neither");
    }
    /* A header bigger than the file, and fewer header bytes than 128. */
    struct dsd_ipc_fail fail;
    ASSERT_EQ_INT(dsd_shm_check_header(&good, 127, good.total_size, &g, &fail), -EPROTO);
    ASSERT_EQ_INT(dsd_shm_check_header(&good, sizeof good, 100, &g, &fail), -EPROTO);
    /* Absent parts are not checked: garbage ring fields with ring_count 0 are fine. */
    struct dsd_shm_header h = good;
    h.ring_count = 0;
    h.ring_capacity = 3;
    h.ring_stride = 1;
    h.rings_offset = 7;
    ASSERT_EQ_INT(dsd_shm_check_header(&h, sizeof h, h.total_size, &g, NULL), 0);
    ASSERT_EQ_INT(g.ring_capacity, 0);
    ASSERT_EQ_INT(g.rings_offset, 0);
}

TEST(prompt_span_copy)
{
    struct dsd_shm c, d;
    struct dsd_shm_params p = {.prompt_capacity = 100, .ring_count = 1, .ring_capacity = 16};
    ASSERT_EQ_INT(dsd_shm_create(&p, &c, NULL), 0);
    ASSERT_EQ_INT(dsd_shm_attach(dup(c.fd), MAX_BYTES, &d, NULL), 0);
    uint32_t *arena = dsd_shm_prompt(&c);
    for (uint32_t i = 0; i < 100; i++)
        arena[i] = i * 7;
    uint32_t out[100];
    struct dsd_ipc_fail fail;
    ASSERT_EQ_INT(dsd_shm_copy_prompt(&d, 90, 10, out, &fail), 0);
    ASSERT_EQ_INT(out[0], 630);
    ASSERT_EQ_INT(out[9], 693);
    arena[90] = 5;      /* changing the arena later does not change the copy */
    ASSERT_EQ_INT(out[0], 630);
    ASSERT_EQ_INT(dsd_shm_copy_prompt(&d, 0, 100, out, &fail), 0);
    ASSERT_EQ_INT(dsd_shm_copy_prompt(&d, 91, 10, out, &fail), -EPROTO);
    ASSERT_EQ_INT(fail.code, DSD_IPC_E_RING_UNAVAILABLE);
    ASSERT_TRUE(strstr(fail.err.msg, "outside the prompt arena of 100 tokens") != NULL);
    ASSERT_EQ_INT(dsd_shm_copy_prompt(&d, 0, 0, out, &fail), -EPROTO);
    ASSERT_EQ_INT(dsd_shm_copy_prompt(&d, 0xffffffffffffffffull, 1, out, &fail), -EPROTO);
    ASSERT_EQ_INT(dsd_shm_copy_prompt(&d, 101, 1, out, &fail), -EPROTO);
    ASSERT_EQ_INT(dsd_shm_copy_prompt(&d, 1, 0xffffffffu, out, &fail), -EPROTO);
    dsd_shm_close(&d);
    dsd_shm_close(&c);
}

TEST(ring_rules_single_thread)
{
    struct dsd_shm c, d;
    struct dsd_shm_params p = {.ring_count = 2, .ring_capacity = 16};
    ASSERT_EQ_INT(dsd_shm_create(&p, &c, NULL), 0);
    ASSERT_EQ_INT(dsd_shm_attach(dup(c.fd), MAX_BYTES, &d, NULL), 0);
    struct dsd_ring_producer pr;
    struct dsd_ring_consumer co;
    dsd_ring_producer_init(&pr, &d, 1, 0);
    dsd_ring_producer_bind(&pr, 77);
    dsd_ring_consumer_init(&co, &c, 1, pr.pos);
    ASSERT_EQ_INT(dsd_ring_request_id(&co), 77);
    ASSERT_EQ_INT(dsd_ring_finish_code(&co), DSD_IPC_FINISH_NONE);
    uint32_t ids[40], out[40];
    for (uint32_t i = 0; i < 40; i++)
        ids[i] = 1000 + i;
    /* Fill: only capacity fits; the rest is the daemon's to hold (backpressure). */
    ASSERT_EQ_INT(dsd_ring_space(&pr), 16);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 20), 16);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids + 16, 4), 0);
    dsd_ring_set_stalled(&pr, true);
    ASSERT_TRUE(dsd_ring_stalled(&co));
    ASSERT_EQ_INT(dsd_ring_available(&co), 16);
    ASSERT_EQ_INT(dsd_ring_consume(&co, out, 5), 5);
    ASSERT_EQ_INT(out[0], 1000);
    ASSERT_EQ_INT(out[4], 1004);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids + 16, 24), 5);   /* wraps around */
    dsd_ring_set_stalled(&pr, false);
    ASSERT_TRUE(!dsd_ring_stalled(&co));
    ASSERT_EQ_INT(dsd_ring_consume(&co, out, 40), 16);
    for (int i = 0; i < 16; i++)
        ASSERT_EQ_INT(out[i], 1005 + i);
    dsd_ring_producer_finish(&pr, DSD_IPC_FINISH_LENGTH);
    ASSERT_EQ_INT(dsd_ring_finish_code(&co), DSD_IPC_FINISH_LENGTH);
    ASSERT_EQ_INT(dsd_ring_available(&co), 0);
    /* The next request on the ring continues at the same position. */
    dsd_ring_producer_bind(&pr, 78);
    ASSERT_EQ_INT(dsd_ring_finish_code(&co), DSD_IPC_FINISH_NONE);
    ASSERT_EQ_INT(pr.pos, 21);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 3), 3);
    ASSERT_EQ_INT(dsd_ring_consume(&co, out, 40), 3);
    ASSERT_EQ_INT(out[2], 1002);

    /* The ring next door was never touched. */
    struct dsd_shm_ring *r0 = dsd_shm_ring(&c, 0);
    ASSERT_EQ_INT(atomic_load(&r0->prod_pos), 0);
    const uint32_t *slots0 = (const uint32_t *)((const uint8_t *)r0 + DSD_SHM_RING_SLOTS_OFFSET);
    for (int i = 0; i < 16; i++)
        ASSERT_EQ_INT(slots0[i], 0);

    /* A hostile consumer position: ahead of the producer, or too far behind. */
    struct dsd_shm_ring *r1 = dsd_shm_ring(&c, 1);
    atomic_store(&r1->cons_pos, pr.pos + 1);
    ASSERT_EQ_INT(dsd_ring_space(&pr), -EPROTO);
    atomic_store(&r1->cons_pos, pr.pos);             /* even a sane value later: still broken */
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 1), -EPROTO);
    dsd_ring_producer_init(&pr, &d, 1, 24);
    atomic_store(&r1->cons_pos, 24 - 17);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 1), -EPROTO);
    dsd_ring_producer_init(&pr, &d, 1, 24);
    atomic_store(&r1->cons_pos, 0xffffffffffffffffull);
    ASSERT_EQ_INT(dsd_ring_space(&pr), -EPROTO);
    /* And a client that scribbles over prod_pos only confuses itself: the producer's own
     * position is what it writes from. */
    dsd_ring_producer_init(&pr, &d, 1, 24);
    atomic_store(&r1->cons_pos, 24);
    atomic_store(&r1->prod_pos, 1ull << 40);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 2), 2);
    ASSERT_EQ_INT(atomic_load(&r1->prod_pos), 26);
    /* The consumer checks the producer's position too. */
    dsd_ring_consumer_init(&co, &c, 1, 0);
    ASSERT_EQ_INT(dsd_ring_available(&co), -EPROTO);
    dsd_shm_close(&d);
    dsd_shm_close(&c);
}

/* PROTOCOL.md §8.1: tokens a client left unread (a cancelled request) do not count against
 * the next request bound to the ring, however far that request then produces. */
TEST(ring_binding_drops_unread_tokens)
{
    struct dsd_shm c, d;
    struct dsd_shm_params p = {.ring_count = 1, .ring_capacity = 16};
    ASSERT_EQ_INT(dsd_shm_create(&p, &c, NULL), 0);
    ASSERT_EQ_INT(dsd_shm_attach(dup(c.fd), MAX_BYTES, &d, NULL), 0);
    struct dsd_shm_ring *r = dsd_shm_ring(&c, 0);
    uint32_t ids[16] = {0};
    struct dsd_ring_producer pr;
    dsd_ring_producer_init(&pr, &d, 0, 0);
    dsd_ring_producer_bind(&pr, 1);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 12), 12);      /* never read: cons_pos stays 0 */
    ASSERT_EQ_INT(dsd_ring_space(&pr), 4);
    dsd_ring_producer_bind(&pr, 2);                         /* ring_start = 12 */
    ASSERT_EQ_INT(dsd_ring_space(&pr), 16);
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 16), 16);      /* pos 28, 28 past cons_pos */
    ASSERT_EQ_INT(dsd_ring_space(&pr), 0);                  /* full, not broken */
    atomic_store(&r->cons_pos, 12);                         /* the client moves to ring_start */
    ASSERT_EQ_INT(dsd_ring_space(&pr), 0);
    atomic_store(&r->cons_pos, 20);
    ASSERT_EQ_INT(dsd_ring_space(&pr), 8);
    /* Further behind the binding point than a ring's worth is impossible: broken. */
    dsd_ring_producer_init(&pr, &d, 0, 100);
    dsd_ring_producer_bind(&pr, 3);
    atomic_store(&r->cons_pos, 100 - 17);
    ASSERT_EQ_INT(dsd_ring_space(&pr), -EPROTO);
    dsd_shm_close(&d);
    dsd_shm_close(&c);
}

/* ---- a million tokens across threads and processes -------------------------------------- */

#define STREAM_TOKENS 1000000u

static uint32_t token_at(uint64_t i)
{
    return (uint32_t)(i * 2654435761u) ^ 0x5bd1e995u;
}

/* Produces STREAM_TOKENS tokens in variable batches, stalling (yield) when the ring is full.
 * Returns 0 or -1. */
static int produce_stream(struct dsd_ring_producer *pr)
{
    uint32_t batch[64];
    uint64_t sent = 0;
    unsigned stalls = 0;
    while (sent < STREAM_TOKENS) {
        uint32_t n = 1 + (uint32_t)(sent % 61);
        if (n > STREAM_TOKENS - sent)
            n = (uint32_t)(STREAM_TOKENS - sent);
        for (uint32_t i = 0; i < n; i++)
            batch[i] = token_at(sent + i);
        uint32_t done = 0;
        while (done < n) {
            int64_t k = dsd_ring_produce(pr, batch + done, n - done);
            if (k < 0)
                return -1;
            done += (uint32_t)k;
            if (done < n) {
                stalls++;
                sched_yield();
            }
        }
        sent += n;
    }
    dsd_ring_producer_finish(pr, DSD_IPC_FINISH_LENGTH);
    return 0;
}

/* Consumes until finish is seen and the ring is drained; counts order violations. */
static uint64_t consume_stream(struct dsd_ring_consumer *co, uint64_t *bad)
{
    uint32_t buf[256];
    uint64_t got = 0;
    *bad = 0;
    for (;;) {
        int64_t k = dsd_ring_consume(co, buf, 256);
        if (k < 0) {
            (*bad)++;
            return got;
        }
        for (int64_t i = 0; i < k; i++)
            if (buf[i] != token_at(got + (uint64_t)i))
                (*bad)++;
        got += (uint64_t)k;
        if (k == 0) {
            if (dsd_ring_finish_code(co) != DSD_IPC_FINISH_NONE && dsd_ring_available(co) == 0)
                return got;
            sched_yield();
        }
    }
}

struct thread_arg {
    struct dsd_shm *shm;
    int rc;
};

static void *producer_thread(void *p)
{
    struct thread_arg *a = p;
    struct dsd_ring_producer pr;
    dsd_ring_producer_init(&pr, a->shm, 0, 0);
    dsd_ring_producer_bind(&pr, 1);
    a->rc = produce_stream(&pr);
    return NULL;
}

TEST(ring_two_threads_million_tokens)
{
    struct dsd_shm c, d;
    struct dsd_shm_params p = {.ring_count = 1, .ring_capacity = 1024};
    ASSERT_EQ_INT(dsd_shm_create(&p, &c, NULL), 0);
    ASSERT_EQ_INT(dsd_shm_attach(dup(c.fd), MAX_BYTES, &d, NULL), 0);
    struct dsd_ring_consumer co;
    dsd_ring_consumer_init(&co, &c, 0, 0);
    /* Both threads use the same mapping here, so ThreadSanitizer can see the accesses pair
     * up (two mappings of one memfd are two address ranges to it); the process test below
     * covers two mappings. */
    struct thread_arg a = {&c, -2};
    double t0 = now_s();
    pthread_t th;
    ASSERT_EQ_INT(pthread_create(&th, NULL, producer_thread, &a), 0);
    uint64_t bad;
    uint64_t got = consume_stream(&co, &bad);
    pthread_join(th, NULL);
    double dt = now_s() - t0;
    ASSERT_EQ_INT(a.rc, 0);
    ASSERT_EQ_INT(got, STREAM_TOKENS);
    ASSERT_EQ_INT(bad, 0);
    printf("threads: %u tokens in %.3f s (%.1f M tokens/s)\n", STREAM_TOKENS, dt,
           STREAM_TOKENS / dt / 1e6);
    dsd_shm_close(&d);
    dsd_shm_close(&c);
}

TEST(ring_two_processes_million_tokens)
{
    struct dsd_shm c;
    struct dsd_shm_params p = {.ring_count = 4, .ring_capacity = 256};
    ASSERT_EQ_INT(dsd_shm_create(&p, &c, NULL), 0);
    int fd = dup(c.fd);
    double t0 = now_s();
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        /* The "daemon": validates and maps the fd on its own, then produces into ring 3. */
        struct dsd_shm d;
        if (dsd_shm_attach(fd, MAX_BYTES, &d, NULL) < 0)
            _exit(2);
        struct dsd_ring_producer pr;
        dsd_ring_producer_init(&pr, &d, 3, 0);
        dsd_ring_producer_bind(&pr, 9);
        _exit(produce_stream(&pr) == 0 ? 0 : 3);
    }
    close(fd);
    struct dsd_ring_consumer co;
    dsd_ring_consumer_init(&co, &c, 3, 0);
    uint64_t bad;
    uint64_t got = consume_stream(&co, &bad);
    int status = 0;
    waitpid(pid, &status, 0);
    double dt = now_s() - t0;
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ_INT(got, STREAM_TOKENS);
    ASSERT_EQ_INT(bad, 0);
    ASSERT_EQ_INT(dsd_ring_request_id(&co), 9);
    ASSERT_EQ_INT(dsd_ring_finish_code(&co), DSD_IPC_FINISH_LENGTH);
    printf("processes: %u tokens in %.3f s (%.1f M tokens/s)\n", STREAM_TOKENS, dt,
           STREAM_TOKENS / dt / 1e6);
    dsd_shm_close(&c);
}

/* Writes the fuzz seeds for fuzz_ipc_shm (tests/data/ipc/shm): valid layouts with the right
 * seals and a few ring/prompt operations, and the same with wrong seals. */
static int write_corpus(const char *dir)
{
    struct dsd_shm_params ps[] = {
        {.prompt_capacity = 1000, .ring_count = 3, .ring_capacity = 64},
        {.ring_count = 1, .ring_capacity = 16},
        {.prompt_capacity = 16},
        {.prompt_capacity = 300, .ring_count = 8, .ring_capacity = 256},
    };
    static const uint8_t seal_flags[] = {0x0f, 0x07, 0x1f, 0x00};
    int files = 0;
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        struct dsd_shm_header h;
        if (dsd_shm_layout(&ps[i], &h, NULL) < 0)
            return 1;
        for (size_t s = 0; s < sizeof seal_flags; s++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/layout%zu-seals%02x", dir, i, seal_flags[s]);
            FILE *f = fopen(path, "wb");
            if (!f)
                return 1;
            fwrite(&seal_flags[s], 1, 1, f);
            fwrite(&h.total_size, 8, 1, f);
            fwrite(&h, sizeof h, 1, f);
            /* ops: ring 0 normal, ring 0 consumer ahead, a prompt span, a span past the end */
            uint8_t op[17];
            uint64_t a[4] = {5, 9, 10, h.prompt_capacity}, b[4] = {8, 8, 20, 1};
            uint8_t k[4] = {0, 0, 0xff, 0xff};
            for (int o = 0; o < 4; o++) {
                op[0] = k[o];
                memcpy(op + 1, &a[o], 8);
                memcpy(op + 9, &b[o], 8);
                fwrite(op, 1, sizeof op, f);
            }
            fclose(f);
            files++;
        }
    }
    printf("wrote %d seeds to %s\n", files, dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    RUN(create_layout_and_attach);
    RUN(attach_refuses_bad_fds);
    RUN(attach_seal_race_is_refused);
    RUN(header_validation);
    RUN(prompt_span_copy);
    RUN(ring_rules_single_thread);
    RUN(ring_binding_drops_unread_tokens);
    RUN(ring_two_threads_million_tokens);
    RUN(ring_two_processes_million_tokens);
    return test_report();
}
