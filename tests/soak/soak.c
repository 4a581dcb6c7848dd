/*
 * The soak test (run by hand, not in CI: tests/soak/run.sh): the real daemon under many
 * clients of every kind at once for minutes, then checks that nothing leaked, no client
 * starved and the daemon's memory stayed bounded.
 *
 *   deepseekd-soak DEEPSEEKD MODEL_DIR [--seconds S] [--readers N] [--report FILE] [--rss-bound-mb M]
 *
 * Client kinds, each a thread with its own connections, all running until the time is up:
 *   reader     generates (random prompt, 8..64 tokens), reads everything; records time to
 *              first token and completion; every request must complete;
 *   slow       like reader, but sleeps between reads (a slow consumer);
 *   nonreader  sends 16 long requests and never reads; after a while closes and starts over;
 *   killed     sends requests, reads a little, then resets the connection mid-stream;
 *   flooder    sends small info/health frames as fast as it can and never reads; reconnects
 *              when the daemon closes it;
 *   slowloris  sends half a frame and waits; reconnects when closed;
 *   garbage    sends random bytes; reconnects when closed.
 * Every 250 ms the daemon's RSS (/proc/PID/status) is sampled. At the end: requests in flight
 * 0, KV pages used 0, the daemon alive and answering; the reader's worst time to first token
 * and its completions are printed (no client starved: every reader request completed).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon_harness.h"

static struct daemon g_d;
static atomic_bool g_stop;
static double g_seconds = 120;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

struct stats {
    atomic_long requests, completed, failed, tokens;
    atomic_long ttft_us_max, ttft_us_sum;
    atomic_long reconnects;
};

static struct stats g_reader, g_slow, g_nonreader, g_killed, g_flooder, g_slowloris, g_garbage;

static void max_into(atomic_long *a, long v)
{
    long cur = atomic_load(a);
    while (v > cur && !atomic_compare_exchange_weak(a, &cur, v)) {
    }
}

/* One full request on fd: first-token time and completion into st. slow_ms between reads. */
static void one_request(int fd, uint64_t id, uint64_t *seed, struct stats *st, int slow_ms)
{
    uint32_t prompt[64];
    int np = 4 + (int)(rnd(seed) % 60);
    for (int i = 0; i < np; i++)
        prompt[i] = (uint32_t)(2 + rnd(seed) % 1000);
    int want = 8 + (int)(rnd(seed) % 57);
    struct dsd_ipc_msg m = raw_generate_msg(id, prompt, np, want);
    atomic_fetch_add(&st->requests, 1);
    if (raw_send(fd, &m)) {
        atomic_fetch_add(&st->failed, 1);
        return;
    }
    double t0 = now_s();
    bool first = false;
    for (;;) {
        struct dsd_ipc_msg r;
        if (raw_recv(fd, &r, 120000)) {
            atomic_fetch_add(&st->failed, 1);
            return;
        }
        if (r.id == id && r.type == DSD_IPC_TOKENS && r.tokens.n_ids > 0) {
            if (!first) {
                long us = (long)((now_s() - t0) * 1e6);
                max_into(&st->ttft_us_max, us);
                atomic_fetch_add(&st->ttft_us_sum, us);
                first = true;
            }
            atomic_fetch_add(&st->tokens, (long)r.tokens.n_ids);
        }
        bool end = r.id == id && (r.type == DSD_IPC_DONE || r.type == DSD_IPC_ERROR);
        bool ok = r.type == DSD_IPC_DONE && r.done.finish == DSD_IPC_FINISH_LENGTH;
        dsd_ipc_msg_free(&r);
        if (end) {
            atomic_fetch_add(ok ? &st->completed : &st->failed, 1);
            return;
        }
        if (slow_ms)
            usleep((useconds_t)slow_ms * 1000);
    }
}

static void *reader(void *arg)
{
    int slow = (int)(intptr_t)arg;
    struct stats *st = slow ? &g_slow : &g_reader;
    uint64_t seed = 0x1234567ull + (uint64_t)pthread_self();
    int fd = raw_connect(&g_d);
    uint64_t id = 1;
    while (!atomic_load(&g_stop) && fd >= 0)
        one_request(fd, id++, &seed, st, slow);
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void *nonreader(void *arg)
{
    (void)arg;
    uint32_t prompt[16] = { 5, 9, 11, 23, 42, 17, 3, 8, 99, 64, 12, 7, 31, 2, 4, 6 };
    while (!atomic_load(&g_stop)) {
        int fd = raw_connect(&g_d);
        if (fd < 0) {
            usleep(100000);
            continue;
        }
        for (int i = 0; i < 16; i++) {
            struct dsd_ipc_msg m = raw_generate_msg((uint64_t)i + 1, prompt, 16, 4000);
            m.generate.sampling.logprobs = true;
            m.generate.sampling.top_logprobs = 20;
            if (raw_send(fd, &m) == 0)
                atomic_fetch_add(&g_nonreader.requests, 1);
        }
        for (int i = 0; i < 100 && !atomic_load(&g_stop); i++)
            usleep(100000);             /* 10 s of not reading */
        close(fd);
        atomic_fetch_add(&g_nonreader.reconnects, 1);
    }
    return NULL;
}

static void *killed(void *arg)
{
    (void)arg;
    uint64_t seed = 99;
    while (!atomic_load(&g_stop)) {
        int fd = raw_connect(&g_d);
        if (fd < 0) {
            usleep(100000);
            continue;
        }
        uint32_t prompt[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
        for (int i = 0; i < 4; i++) {
            struct dsd_ipc_msg m = raw_generate_msg((uint64_t)i + 1, prompt, 8, 500);
            if (raw_send(fd, &m) == 0)
                atomic_fetch_add(&g_killed.requests, 1);
        }
        for (int i = 0; i < (int)(rnd(&seed) % 20); i++) {
            struct dsd_ipc_msg r;
            if (raw_recv(fd, &r, 2000) == 0)
                dsd_ipc_msg_free(&r);
        }
        struct linger lg = { 1, 0 };    /* RST, as a killed process's socket */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        atomic_fetch_add(&g_killed.reconnects, 1);
        usleep(50000);
    }
    return NULL;
}

static void *flooder(void *arg)
{
    (void)arg;
    struct dsd_ipc_buf b = {0};
    struct dsd_err err;
    for (int i = 0; i < 1024; i++) {
        struct dsd_ipc_msg m = { .type = i % 2 ? DSD_IPC_INFO : DSD_IPC_HEALTH, .id = (uint64_t)i + 1 };
        dsd_ipc_encode(&b, &m, DSD_IPC_FRAME_CEIL, &err);
    }
    while (!atomic_load(&g_stop)) {
        int fd = raw_connect(&g_d);
        if (fd < 0) {
            usleep(100000);
            continue;
        }
        struct timeval tv = { 0, 200000 };
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        while (!atomic_load(&g_stop)) {
            ssize_t w = send(fd, b.data, b.len, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                break;  /* closed by the daemon */
            if (w > 0)
                atomic_fetch_add(&g_flooder.requests, 1);
        }
        close(fd);
        atomic_fetch_add(&g_flooder.reconnects, 1);
    }
    dsd_ipc_buf_free(&b);
    return NULL;
}

static void *slowloris(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        int fd = raw_connect(&g_d);
        if (fd < 0) {
            usleep(100000);
            continue;
        }
        const unsigned char half[6] = { 100, 0, 0, 0, 0x82, 0xa1 };    /* 100-byte frame, 2 bytes of it */
        raw_send_bytes(fd, half, sizeof half);
        atomic_fetch_add(&g_slowloris.requests, 1);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        while (!atomic_load(&g_stop)) {
            if (poll(&p, 1, 200) > 0) {
                char buf[4096];
                if (recv(fd, buf, sizeof buf, 0) <= 0)
                    break;      /* the daemon gave up on us: good */
            }
        }
        close(fd);
        atomic_fetch_add(&g_slowloris.reconnects, 1);
    }
    return NULL;
}

static void *garbage(void *arg)
{
    (void)arg;
    uint64_t seed = 7;
    while (!atomic_load(&g_stop)) {
        int fd = raw_socket(&g_d);
        if (fd < 0) {
            usleep(100000);
            continue;
        }
        unsigned char buf[512];
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (unsigned char)rnd(&seed);
        raw_send_bytes(fd, buf, sizeof buf);
        atomic_fetch_add(&g_garbage.requests, 1);
        usleep(20000);
        close(fd);
    }
    return NULL;
}

static void print_kind(FILE *f, const char *name, struct stats *s)
{
    long n = atomic_load(&s->completed);
    fprintf(f, "%-10s requests %6ld completed %6ld failed %5ld tokens %8ld reconnects %5ld", name,
            atomic_load(&s->requests), n, atomic_load(&s->failed), atomic_load(&s->tokens),
            atomic_load(&s->reconnects));
    if (n)
        fprintf(f, "  ttft mean %.1f ms max %.1f ms", atomic_load(&s->ttft_us_sum) / 1e3 / (double)n,
                atomic_load(&s->ttft_us_max) / 1e3);
    fputc('\n', f);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DEEPSEEKD MODEL_DIR [--seconds S] [--readers N] [--report FILE]\n", argv[0]);
        return 2;
    }
    int readers = 8;
    long rss_bound_mb = 512;
    const char *report = NULL;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            g_seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--readers"))
            readers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--report"))
            report = argv[i + 1];
        else if (!strcmp(argv[i], "--rss-bound-mb"))
            rss_bound_mb = atol(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    static const char *const extra[] = { "--threads", "2", "--max_batch", "16", "--max_tokens", "100000",
                                         "--kv_memory_mb", "256", "--stall_timeout_s", "5", NULL };
    if (daemon_start(&g_d, argv[1], argv[2], extra, 120))
        return 1;
    long rss0 = daemon_rss_kib(&g_d), rss_max = rss0;
    pthread_t th[64];
    int n = 0;
    for (int i = 0; i < readers && n < 40; i++)
        pthread_create(&th[n++], NULL, reader, (void *)(intptr_t)0);
    for (int i = 0; i < 2; i++)
        pthread_create(&th[n++], NULL, reader, (void *)(intptr_t)20);
    for (int i = 0; i < 2; i++)
        pthread_create(&th[n++], NULL, nonreader, NULL);
    pthread_create(&th[n++], NULL, killed, NULL);
    for (int i = 0; i < 2; i++)
        pthread_create(&th[n++], NULL, flooder, NULL);
    pthread_create(&th[n++], NULL, slowloris, NULL);
    pthread_create(&th[n++], NULL, garbage, NULL);
    double t0 = now_s();
    while (now_s() - t0 < g_seconds) {
        usleep(250000);
        long r = daemon_rss_kib(&g_d);
        if (r > rss_max)
            rss_max = r;
        if (!daemon_alive(&g_d)) {
            fprintf(stderr, "the daemon died\n");
            break;
        }
    }
    atomic_store(&g_stop, true);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    /* quiesce: every connection is gone; the daemon must get back to zero */
    int fd = raw_connect(&g_d);
    int64_t inflight = -1, used = -1;
    for (int i = 0; i < 600 && (inflight != 0 || used != 0); i++) {
        usleep(100000);
        inflight = raw_stat(fd, "requests_in_flight");
        used = raw_stat(fd, "kv_pages_used");
    }
    long rss_end = daemon_rss_kib(&g_d);
    bool alive = daemon_alive(&g_d);
    FILE *out = report ? fopen(report, "w") : stdout;
    if (!out)
        out = stdout;
    fprintf(out, "soak: %.0f s, %d readers + 2 slow, 2 non-readers, 1 killer, 2 flooders, 1 slowloris, 1 garbage\n",
            g_seconds, readers);
    print_kind(out, "reader", &g_reader);
    print_kind(out, "slow", &g_slow);
    print_kind(out, "nonreader", &g_nonreader);
    print_kind(out, "killed", &g_killed);
    print_kind(out, "flooder", &g_flooder);
    print_kind(out, "slowloris", &g_slowloris);
    print_kind(out, "garbage", &g_garbage);
    fprintf(out, "daemon RSS: start %ld kB, max %ld kB, end %ld kB; after: %lld in flight, %lld KV pages used, %s\n",
            rss0, rss_max, rss_end, (long long)inflight, (long long)used, alive ? "alive" : "DEAD");
    /* The bound: what the daemon documents per connection (docs/DAEMON.md, flow control) times
     * the clients here, with room for the allocator; a flooder that is read without bound
     * grows it by gigabytes. */
    bool rss_ok = rss_max - rss0 <= rss_bound_mb * 1024;
    fprintf(out, "daemon RSS growth %ld kB, bound %ld MiB: %s\n", rss_max - rss0, rss_bound_mb, rss_ok ? "ok" : "EXCEEDED");
    bool ok = alive && inflight == 0 && used == 0 && atomic_load(&g_reader.failed) == 0 &&
              atomic_load(&g_reader.completed) > 0 && atomic_load(&g_slow.failed) == 0 && rss_ok;
    fprintf(out, "%s\n", ok ? "soak: PASS" : "soak: FAIL");
    if (out != stdout)
        fclose(out);
    if (fd >= 0)
        close(fd);
    if (!ok)
        daemon_print_log(&g_d);
    daemon_stop(&g_d);
    return ok ? 0 : 1;
}
