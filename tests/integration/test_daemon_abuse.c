/*
 * The real daemon against hostile clients (docs/DAEMON.md "Flow control" and "Timeouts",
 * docs/PROTOCOL.md §4.2, §6, §8.4):
 *   test_daemon_abuse DEEPSEEKD MODEL_DIR      (a model with tokenizer.json)
 *  - a client that sends a flood of small requests and never reads: the daemon stops
 *    reading it, its RSS stays within a stated bound, and every request is still answered,
 *    in order, once the client reads;
 *  - an fd sent with hello, with health, or in the middle of a frame is protocol_violation;
 *    an fd with the start of shm_attach works, also glued behind other frames;
 *  - a user message with content nil is bad_value (PROTOCOL.md §4.3);
 *  - half a frame, then silence: frame_timeout and closed; an idle connection: idle_timeout;
 *  - a request whose connection stops reading is ended by stall_timeout_s (done, error 404),
 *    its KV pages freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "ipc_fd.h"
#include "ipc_shm.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

static const char *g_bin, *g_model;
static struct daemon g_d;       /* default timeouts */
static struct daemon g_t;       /* short timeouts */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One counter of `stats`, over a connection of its own. */
static int64_t stat_value(const struct daemon *d, const char *name)
{
    int fd = raw_connect(d);
    if (fd < 0)
        return -1;
    int64_t v = raw_stat(fd, name);
    close(fd);
    return v;
}

static void encode(struct dsd_ipc_buf *b, const struct dsd_ipc_msg *m)
{
    struct dsd_err err;
    if (dsd_ipc_encode(b, m, DSD_IPC_FRAME_CEIL, &err))
        fprintf(stderr, "encode: %s\n", err.msg);
}

/* Expects an error frame about the connection (id 0) with code, after any replies to
 * earlier frames (fatal: then the connection closes). */
static void expect_error_frame(int fd, uint32_t code, bool fatal, const char *what)
{
    struct dsd_ipc_msg r;
    int rc;
    while ((rc = raw_recv(fd, &r, 10000)) == 0 && r.id != 0)
        dsd_ipc_msg_free(&r);           /* the reply to the frame the fd came with, say */
    if (rc != 0 || r.type != DSD_IPC_ERROR || r.error.code != code) {
        TEST_FAIL_AT("%s: expected error %u, got rc %d type %d code %u", what, code, rc,
                     rc ? -1 : (int)r.type, rc || r.type != DSD_IPC_ERROR ? 0 : r.error.code);
    } else {
        printf("  %-40s -> %s: %s\n", what, dsd_ipc_code_name(code), r.error.msg.ptr);
        ASSERT_EQ_INT(r.error.fatal, fatal);
    }
    if (rc == 0)
        dsd_ipc_msg_free(&r);
    if (fatal) {
        char b;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ASSERT_TRUE(poll(&p, 1, 5000) == 1 && recv(fd, &b, 1, 0) <= 0);     /* closed */
    }
}

/* ---- 1. the flooder ------------------------------------------------------------------ */

/* The bound this test holds the daemon to, in MiB of RSS growth for one connection that
 * never reads (docs/DAEMON.md "Flow control" derives it: queued replies ≤ 1 MiB + one reply,
 * buffers of twice that, held input, allocator slack). The unbounded daemon grew by hundreds
 * of MiB here. */
#define FLOOD_RSS_BOUND_MIB 16
#define FLOOD_BYTES (16u << 20)

TEST(flood_without_reading_is_bounded_and_answered)
{
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    /* A block of alternating info / health frames (info first), ids 1..N within the block. */
    enum { PER_BLOCK = 4096 };
    struct dsd_ipc_buf blk = {0};
    for (int i = 0; i < PER_BLOCK; i++) {
        struct dsd_ipc_msg m = { .type = i % 2 ? DSD_IPC_HEALTH : DSD_IPC_INFO, .id = (uint64_t)i + 1 };
        encode(&blk, &m);
    }
    long rss0 = daemon_rss_kib(&g_d), rss_max = rss0;
    ASSERT_TRUE(rss0 > 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    size_t sent = 0, off = 0;
    double blocked_since = 0;
    while (sent < FLOOD_BYTES) {
        ssize_t w = send(fd, blk.data + off, blk.len - off, MSG_NOSIGNAL);
        long r = daemon_rss_kib(&g_d);
        if (r > rss_max)
            rss_max = r;
        if (w > 0) {
            sent += (size_t)w;
            off = (off + (size_t)w) % blk.len;
            blocked_since = 0;
            continue;
        }
        ASSERT_TRUE(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        if (!blocked_since)
            blocked_since = now_s();
        else if (now_s() - blocked_since > 1.5)
            break;                      /* the daemon stopped reading: as it should */
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        poll(&p, 1, 100);
    }
    /* Let whatever the daemon still does settle, sampling its RSS. */
    for (int i = 0; i < 10; i++) {
        usleep(50000);
        long r = daemon_rss_kib(&g_d);
        if (r > rss_max)
            rss_max = r;
    }
    size_t frames;
    {
        /* whole frames sent: whole blocks, then walk the block for the partial one */
        size_t whole = sent / blk.len, rest = sent % blk.len, k = 0, at = 0;
        while (at < rest) {
            uint32_t len = (uint32_t)blk.data[at] | (uint32_t)blk.data[at + 1] << 8 |
                           (uint32_t)blk.data[at + 2] << 16 | (uint32_t)blk.data[at + 3] << 24;
            if (at + 4 + len > rest)
                break;
            at += 4 + len;
            k++;
        }
        frames = whole * PER_BLOCK + k;
    }
    long grew_kib = rss_max - rss0;
    printf("  sent %.2f MiB (%zu whole frames) without reading; daemon RSS %ld -> max %ld KiB "
           "(+%.1f MiB, bound %d MiB); held input max %lld bytes, read pauses %lld\n",
           sent / 1048576.0, frames, rss0, rss_max, grew_kib / 1024.0, FLOOD_RSS_BOUND_MIB,
           (long long)stat_value(&g_d, "held_input_bytes_max"),
           (long long)stat_value(&g_d, "read_pauses_total"));
    ASSERT_TRUE(grew_kib < FLOOD_RSS_BOUND_MIB * 1024);
    ASSERT_TRUE(sent < FLOOD_BYTES);    /* it stopped reading, so the client could not send it all */
    /* Now read: every whole frame sent is answered, in order, none twice, none lost. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    size_t answered = 0;
    bool in_order = true;
    double t0 = now_s();
    while (answered < frames && now_s() - t0 < 60) {
        struct dsd_ipc_msg r;
        if (raw_recv(fd, &r, 10000) != 0)
            break;
        uint64_t want_id = answered % PER_BLOCK + 1;
        enum dsd_ipc_type want = (want_id - 1) % 2 ? DSD_IPC_HEALTH_OK : DSD_IPC_INFO_OK;
        if (r.id != want_id || r.type != want) {
            if (in_order)
                fprintf(stderr, "reply %zu: type %d id %llu, expected type %d id %llu\n", answered,
                        (int)r.type, (unsigned long long)r.id, (int)want, (unsigned long long)want_id);
            in_order = false;
        }
        dsd_ipc_msg_free(&r);
        answered++;
    }
    printf("  then read %zu replies for %zu frames in %.2f s\n", answered, frames, now_s() - t0);
    ASSERT_EQ_INT(answered, frames);
    ASSERT_TRUE(in_order);
    /* and the connection still works */
    struct dsd_ipc_msg h = { .type = DSD_IPC_HEALTH, .id = 1u << 20 };
    ASSERT_EQ_INT(raw_send(fd, &h), 0);
    ASSERT_EQ_INT(raw_wait_done(fd, 1u << 20, NULL, NULL, NULL, 0, 10000), DSD_IPC_HEALTH_OK);
    dsd_ipc_buf_free(&blk);
    close(fd);
    ASSERT_TRUE(daemon_alive(&g_d));
}

/* ---- 2. file descriptors ------------------------------------------------------------- */

static int good_memfd(void)
{
    struct dsd_shm shm;
    struct dsd_shm_params sp = { .prompt_capacity = 64, .ring_count = 1, .ring_capacity = 16 };
    struct dsd_err err;
    if (dsd_shm_create(&sp, &shm, &err))
        return -1;
    int fd = dup(shm.fd);
    dsd_shm_close(&shm);
    return fd;
}

TEST(fd_with_the_wrong_frame_is_a_protocol_violation)
{
    struct dsd_err err;
    struct dsd_ipc_buf b = {0};
    struct dsd_ipc_msg health = { .type = DSD_IPC_HEALTH, .id = 5 };
    struct dsd_ipc_msg attach = { .type = DSD_IPC_SHM_ATTACH, .id = 6 };
    /* with health */
    int fd = raw_connect(&g_d), mfd = good_memfd();
    ASSERT_TRUE(fd >= 0 && mfd >= 0);
    encode(&b, &health);
    ASSERT_TRUE(dsd_ipc_send_fd(fd, b.data, b.len, mfd, &err) == (ssize_t)b.len);
    expect_error_frame(fd, DSD_IPC_E_PROTOCOL_VIOLATION, true, "fd with health");
    close(fd);
    /* with hello, the first frame */
    fd = raw_socket(&g_d);
    struct dsd_ipc_msg hello = { .type = DSD_IPC_HELLO, .id = 1 };
    hello.hello.min_version = hello.hello.max_version = DSD_IPC_VERSION;
    b.len = 0;
    encode(&b, &hello);
    ASSERT_TRUE(dsd_ipc_send_fd(fd, b.data, b.len, mfd, &err) == (ssize_t)b.len);
    expect_error_frame(fd, DSD_IPC_E_PROTOCOL_VIOLATION, true, "fd with hello");
    close(fd);
    /* in the middle of a shm_attach frame: 3 bytes plain, the rest with the fd */
    fd = raw_connect(&g_d);
    b.len = 0;
    encode(&b, &attach);
    ASSERT_EQ_INT(raw_send_bytes(fd, b.data, 3), 0);
    usleep(100000);                     /* two reads on the daemon's side */
    ASSERT_TRUE(dsd_ipc_send_fd(fd, b.data + 3, b.len - 3, mfd, &err) == (ssize_t)(b.len - 3));
    expect_error_frame(fd, DSD_IPC_E_PROTOCOL_VIOLATION, true, "fd in the middle of shm_attach");
    close(fd);
    /* with health, then a shm_attach without one: the stray fd must not be used by it */
    fd = raw_connect(&g_d);
    b.len = 0;
    encode(&b, &health);
    ASSERT_TRUE(dsd_ipc_send_fd(fd, b.data, b.len, mfd, &err) == (ssize_t)b.len);
    usleep(100000);
    b.len = 0;
    encode(&b, &attach);
    raw_send_bytes(fd, b.data, b.len);
    struct dsd_ipc_msg r;
    int type = raw_wait_done(fd, 6, &r, NULL, NULL, 0, 10000);     /* id 6 or id 0 */
    ASSERT_EQ_INT(type, DSD_IPC_ERROR);
    if (type == DSD_IPC_ERROR) {
        printf("  stray fd, then shm_attach without one  -> %s\n", r.error.msg.ptr);
        ASSERT_EQ_INT(r.error.code, DSD_IPC_E_PROTOCOL_VIOLATION);
        dsd_ipc_msg_free(&r);
    }
    close(fd);
    /* The right ways: health then shm_attach+fd in two sends (the daemon may read them as
     * one), and shm_attach+health in one send with the fd. */
    fd = raw_connect(&g_d);
    b.len = 0;
    encode(&b, &health);
    ASSERT_EQ_INT(raw_send_bytes(fd, b.data, b.len), 0);
    b.len = 0;
    encode(&b, &attach);
    ASSERT_TRUE(dsd_ipc_send_fd(fd, b.data, b.len, mfd, &err) == (ssize_t)b.len);
    ASSERT_EQ_INT(raw_wait_done(fd, 5, NULL, NULL, NULL, 0, 10000), DSD_IPC_HEALTH_OK);
    ASSERT_EQ_INT(raw_wait_done(fd, 6, NULL, NULL, NULL, 0, 10000), DSD_IPC_SHM_OK);
    close(fd);
    fd = raw_connect(&g_d);
    b.len = 0;
    encode(&b, &attach);
    encode(&b, &health);
    ASSERT_TRUE(dsd_ipc_send_fd(fd, b.data, b.len, mfd, &err) == (ssize_t)b.len);
    ASSERT_EQ_INT(raw_wait_done(fd, 6, NULL, NULL, NULL, 0, 10000), DSD_IPC_SHM_OK);
    ASSERT_EQ_INT(raw_wait_done(fd, 5, NULL, NULL, NULL, 0, 10000), DSD_IPC_HEALTH_OK);
    close(fd);
    close(mfd);
    dsd_ipc_buf_free(&b);
    ASSERT_TRUE(daemon_alive(&g_d));
}

/* ---- 3. content nil ------------------------------------------------------------------ */

static int tokenize_chat(int fd, const struct dsd_ipc_chat_msg *msgs, uint32_t n, struct dsd_ipc_msg *r)
{
    struct dsd_ipc_msg m = { .type = DSD_IPC_TOKENIZE, .id = 40 };
    m.tokenize.prompt.kind = DSD_IPC_PROMPT_CHAT;
    m.tokenize.prompt.messages = msgs;
    m.tokenize.prompt.n_messages = n;
    if (raw_send(fd, &m))
        return -1;
    return raw_wait_done(fd, 40, r, NULL, NULL, 0, 10000);
}

TEST(content_nil_is_refused_where_a_turn_needs_text)
{
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    struct dsd_ipc_msg r;
    /* user, tool and developer turns need text: nil (or absent) is bad_value naming it */
    const enum dsd_ipc_role need[] = { DSD_IPC_ROLE_USER, DSD_IPC_ROLE_DEVELOPER };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        struct dsd_ipc_chat_msg m[1] = { { .role = need[i] } };       /* content nil */
        ASSERT_EQ_INT(tokenize_chat(fd, m, 1, &r), DSD_IPC_ERROR);
        ASSERT_EQ_INT(r.error.code, DSD_IPC_E_BAD_VALUE);
        ASSERT_TRUE(strstr(r.error.msg.ptr, "\"content\"") != NULL);
        printf("  %s content nil -> %s\n", dsd_ipc_role_name(need[i]), r.error.msg.ptr);
        dsd_ipc_msg_free(&r);
    }
    /* system and assistant turns may have none; an empty user string is text */
    struct dsd_ipc_chat_msg ok[3] = {
        { .role = DSD_IPC_ROLE_SYSTEM },
        { .role = DSD_IPC_ROLE_USER, .content = dsd_ipc_s("") },
        { .role = DSD_IPC_ROLE_ASSISTANT },
    };
    ASSERT_EQ_INT(tokenize_chat(fd, ok, 3, &r), DSD_IPC_TOKENIZE_OK);
    ASSERT_TRUE(r.tokenize_ok.n_tokens > 0);
    dsd_ipc_msg_free(&r);
    close(fd);
}

/* ---- 4. timeouts (the daemon with short ones) ----------------------------------------- */

TEST(half_a_frame_then_silence_is_closed_after_frame_timeout)
{
    int fd = raw_connect(&g_t);
    ASSERT_TRUE(fd >= 0);
    uint8_t half[7] = { 100, 0, 0, 0, 0x82, 0xa1, 't' };
    ASSERT_EQ_INT(raw_send_bytes(fd, half, sizeof half), 0);
    double t0 = now_s();
    expect_error_frame(fd, DSD_IPC_E_FRAME_TIMEOUT, true, "7 of 104 bytes, then nothing");
    double dt = now_s() - t0;
    printf("  closed after %.2f s (frame_timeout_s 1)\n", dt);
    ASSERT_TRUE(dt >= 0.9 && dt < 4.0);
    close(fd);
    /* before hello, two bytes of a length prefix */
    fd = raw_socket(&g_t);
    ASSERT_EQ_INT(raw_send_bytes(fd, half, 2), 0);
    expect_error_frame(fd, DSD_IPC_E_FRAME_TIMEOUT, true, "2 bytes of a prefix before hello");
    close(fd);
    ASSERT_TRUE(daemon_alive(&g_t));
}

TEST(idle_connection_is_closed_after_idle_timeout)
{
    /* one that keeps talking stays open past the timeout ... */
    int busy = raw_connect(&g_t);
    int idle = raw_connect(&g_t);
    ASSERT_TRUE(busy >= 0 && idle >= 0);
    double t0 = now_s();
    for (int i = 0; i < 8; i++) {
        usleep(500000);
        struct dsd_ipc_msg h = { .type = DSD_IPC_HEALTH, .id = 10 + (uint64_t)i };
        ASSERT_EQ_INT(raw_send(busy, &h), 0);
        ASSERT_EQ_INT(raw_wait_done(busy, 10 + (uint64_t)i, NULL, NULL, NULL, 0, 5000), DSD_IPC_HEALTH_OK);
    }
    /* ... the silent one got idle_timeout (idle_timeout_s 3) meanwhile */
    expect_error_frame(idle, DSD_IPC_E_IDLE_TIMEOUT, true, "no request, no bytes");
    printf("  idle connection closed; the busy one answered for %.1f s\n", now_s() - t0);
    close(idle);
    close(busy);
}

TEST(request_of_a_connection_that_stops_reading_ends_with_stall_timeout)
{
    int fd = raw_connect(&g_t);
    ASSERT_TRUE(fd >= 0);
    uint32_t prompt[8] = { 3, 4, 5, 6, 7, 8, 9, 10 };
    struct dsd_ipc_msg g = { .type = DSD_IPC_GENERATE, .id = 77 };
    dsd_ipc_generate_default(&g.generate);
    g.generate.prompt.kind = DSD_IPC_PROMPT_TOKENS;
    g.generate.prompt.tokens = prompt;
    g.generate.prompt.n_tokens = 8;
    g.generate.sampling.max_tokens = 4096;
    g.generate.sampling.ignore_eos = true;
    ASSERT_EQ_INT(raw_send(fd, &g), 0);
    /* Back the socket up with replies the client does not read (the daemon stops reading
     * it, and the engine parks the request). */
    struct dsd_ipc_buf b = {0};
    for (int i = 0; i < 8192; i++) {
        struct dsd_ipc_msg m = { .type = DSD_IPC_INFO, .id = 1000 + (uint64_t)i };
        encode(&b, &m);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    size_t off = 0;
    double t0 = now_s();
    while (off < b.len && now_s() - t0 < 1.0) {
        ssize_t w = send(fd, b.data + off, b.len - off, MSG_NOSIGNAL);
        if (w > 0)
            off += (size_t)w;
        else
            usleep(10000);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    sleep(2);                           /* stall_timeout_s is 1 */
    /* Now read everything: the request must have ended with stall_timeout. */
    struct dsd_ipc_msg done;
    int type = raw_wait_done(fd, 77, &done, NULL, NULL, 0, 30000);
    ASSERT_EQ_INT(type, DSD_IPC_DONE);
    if (type == DSD_IPC_DONE) {
        printf("  done: finish %s, %u tokens, error %u: %s\n", dsd_ipc_finish_name(done.done.finish),
               done.done.usage.completion, done.done.error_code,
               done.done.error_msg.ptr ? done.done.error_msg.ptr : "");
        ASSERT_EQ_INT(done.done.finish, DSD_IPC_FINISH_ERROR);
        ASSERT_TRUE(done.done.has_error);
        ASSERT_EQ_INT(done.done.error_code, DSD_IPC_E_STALL_TIMEOUT);
        ASSERT_TRUE(done.done.usage.completion < 4096);
        dsd_ipc_msg_free(&done);
    }
    close(fd);
    dsd_ipc_buf_free(&b);
    int64_t pages = -1;
    for (int i = 0; i < 50 && pages != 0; i++) {
        pages = stat_value(&g_t, "kv_pages_used");
        if (pages)
            usleep(100000);
    }
    ASSERT_EQ_INT(pages, 0);
    ASSERT_TRUE(stat_value(&g_t, "socket_stalls_total") >= 1);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_daemon_abuse DEEPSEEKD MODEL_DIR\n");
        return 2;
    }
    g_bin = argv[1];
    g_model = argv[2];
#ifdef TEST_ASAN
    /* The sanitizer tree's daemon inherits this: ASan's quarantine (256 MiB by default) keeps
     * every freed reply buffer resident, which is the sanitizer's memory, not the daemon's.
     * A small quarantine keeps the RSS bound meaningful there too. */
    {
        char opts[512];
        const char *old = getenv("ASAN_OPTIONS");
        snprintf(opts, sizeof opts, "%s%squarantine_size_mb=4", old ? old : "", old && *old ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
#endif
    static const char *const plain[] = { "--threads", "1", "--kv_memory_mb", "64", NULL };
    static const char *const quick[] = { "--threads", "1", "--kv_memory_mb", "64", "--frame_timeout_s", "1",
                                         "--idle_timeout_s", "3", "--stall_timeout_s", "1", NULL };
    if (daemon_start(&g_d, g_bin, g_model, plain, 120))
        return 1;
    RUN(flood_without_reading_is_bounded_and_answered);
    RUN(fd_with_the_wrong_frame_is_a_protocol_violation);
    RUN(content_nil_is_refused_where_a_turn_needs_text);
    if (test_failures_total)
        daemon_print_log(&g_d);
    /* exits 0 on SIGTERM; anything else (a sanitizer report, say) fails the test */
    ASSERT_EQ_INT(daemon_stop(&g_d), 0);
    int before = test_failures_total;
    if (daemon_start(&g_t, g_bin, g_model, quick, 120))
        return 1;
    RUN(half_a_frame_then_silence_is_closed_after_frame_timeout);
    RUN(idle_connection_is_closed_after_idle_timeout);
    RUN(request_of_a_connection_that_stops_reading_ends_with_stall_timeout);
    if (test_failures_total > before)
        daemon_print_log(&g_t);
    ASSERT_EQ_INT(daemon_stop(&g_t), 0);
    return test_report();
}
