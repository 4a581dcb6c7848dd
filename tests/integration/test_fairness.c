/*
 * No client can starve another (daemon/serve/scheduler.h's policy, through the real daemon):
 *   test_fairness DEEPSEEKD MODEL_DIR
 *  - a client that keeps more requests in flight than max_batch (and reads them) cannot
 *    hold the batch: a second client's request gets its first token within a bound;
 *  - a client that stops reading, with more requests in flight than max_batch, cannot keep
 *    another client's request from starting;
 *  - requests stalled on full shared-memory rings park and hold no batch slot, so another
 *    client is served even with fair shares off; after their client goes, every page is free.
 * Each scenario starts its own daemon with a small max_batch.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "ipc_fd.h"
#include "ipc_shm.h"
#include "test.h"

static const char *g_bin, *g_model;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A greedy request; with top_logprobs > 0 its frames carry that many alternatives (large). */
static struct dsd_ipc_msg gen_msg(uint64_t id, const uint32_t *prompt, int np, int max_tokens, int top_logprobs)
{
    struct dsd_ipc_msg m = raw_generate_msg(id, prompt, np, max_tokens);
    if (top_logprobs) {
        m.generate.sampling.logprobs = true;
        m.generate.sampling.top_logprobs = (uint32_t)top_logprobs;
    }
    return m;
}

/* Polls a `stats` counter until it equals want (10 s at most); returns the last value. */
static int64_t wait_stat(int fd, const char *name, int64_t want)
{
    int64_t v = raw_stat(fd, name);
    for (int i = 0; i < 200 && v != want; i++) {
        usleep(50 * 1000);
        v = raw_stat(fd, name);
    }
    return v;
}

/* A daemon with `extra` options and two connections to it; false when either failed. */
static bool start_two(struct daemon *d, const char *const *extra, int *a, int *b)
{
    *a = *b = -1;
    if (daemon_start(d, g_bin, g_model, extra, 120))
        return false;
    *a = raw_connect(d);
    *b = raw_connect(d);
    return *a >= 0 && *b >= 0;
}

static void finish(struct daemon *d, int a, int b)
{
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    if (test_current_failed)
        daemon_print_log(d);
    ASSERT_EQ_INT(daemon_stop(d), 0);
}

/* Reads and drops whatever fd has ready, for up to ms. */
static void drain(int fd, int ms)
{
    struct dsd_ipc_msg m;
    while (raw_recv(fd, &m, ms) == 0) {
        dsd_ipc_msg_free(&m);
        ms = 0;
    }
}

/* Seconds until the request `id` on fd gets a token frame with ids (or done), reading the
 * `other` connection meanwhile when other >= 0. -1 on timeout or error. */
static double time_to_first_token(int fd, uint64_t id, int other, double timeout_s)
{
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        if (other >= 0)
            drain(other, 1);
        struct dsd_ipc_msg m;
        int rc = raw_recv(fd, &m, other >= 0 ? 5 : 100);
        if (rc == -ETIMEDOUT)
            continue;
        if (rc)
            return -1;
        bool first = m.id == id && ((m.type == DSD_IPC_TOKENS && m.tokens.n_ids > 0) || m.type == DSD_IPC_DONE);
        bool failed = m.id == id && m.type == DSD_IPC_ERROR;
        dsd_ipc_msg_free(&m);
        if (failed)
            return -1;
        if (first)
            return now_s() - t0;
    }
    return -1;
}

static const uint32_t prompt_a[16] = { 5, 9, 11, 23, 42, 17, 3, 8, 99, 64, 12, 7, 31, 2, 4, 6 };
static const uint32_t prompt_b[8] = { 77, 13, 21, 34, 55, 89, 44, 10 };

/* Client A keeps 16 requests of 8000 tokens in flight with max_batch 4 and reads them all;
 * client B's request must start within 3 s (one step is milliseconds on the tiny model;
 * without fair shares B waits for A's requests to finish: 4 rounds of 8000 steps). */
TEST(busy_client_cannot_hold_the_batch)
{
    struct daemon d = {0};
    static const char *const extra[] = { "--threads", "1", "--max_batch", "4", "--max_tokens", "100000",
                                         "--kv_memory_mb", "64", "--fairness", "uid", NULL };
    int a, b;
    if (!start_two(&d, extra, &a, &b)) {
        ASSERT_TRUE(false);
        if (d.pid > 0)
            finish(&d, a, b);
        return;
    }
    for (int i = 0; i < 16; i++) {
        struct dsd_ipc_msg m = gen_msg((uint64_t)(i + 1), prompt_a, 16, 8000, 0);
        ASSERT_EQ_INT(raw_send(a, &m), 0);
    }
    ASSERT_TRUE(time_to_first_token(a, 1, -1, 30) >= 0);
    drain(a, 200);
    struct dsd_ipc_msg m = gen_msg(1, prompt_b, 8, 4, 0);
    ASSERT_EQ_INT(raw_send(b, &m), 0);
    double t = time_to_first_token(b, 1, a, 60);
    printf("  busy client: second client's first token after %.3f s\n", t);
    ASSERT_TRUE(t >= 0 && t < 3.0);
    ASSERT_EQ_INT(raw_stat(b, "requests_running"), 4);
    finish(&d, a, b);
}

/* Client A sends 16 long requests with top-20 logprobs (large frames) and never reads, with
 * fair shares on (the default): client B's request starts at once (within 10 s even under
 * the sanitizers), whatever A holds. The previous engine never served B: A held every slot
 * until its socket backed up, and then its parked requests still counted against max_batch. */
TEST(non_reader_cannot_block)
{
    struct daemon d = {0};
    static const char *const extra[] = { "--threads", "1", "--max_batch", "4", "--max_tokens", "100000",
                                         "--kv_memory_mb", "64", "--stall_timeout_s", "600", NULL };
    int a, b;
    if (!start_two(&d, extra, &a, &b)) {
        ASSERT_TRUE(false);
        if (d.pid > 0)
            finish(&d, a, b);
        return;
    }
    for (int i = 0; i < 16; i++) {
        struct dsd_ipc_msg m = gen_msg((uint64_t)(i + 1), prompt_a, 16, 100000, 20);
        ASSERT_EQ_INT(raw_send(a, &m), 0);
    }
    usleep(200 * 1000);     /* A's requests run and hold the batch */
    struct dsd_ipc_msg m = gen_msg(1, prompt_b, 8, 4, 0);
    ASSERT_EQ_INT(raw_send(b, &m), 0);
    double t = time_to_first_token(b, 1, -1, 60);
    printf("  non-reader: second client's first token after %.3f s\n", t);
    ASSERT_TRUE(t >= 0 && t < 10.0);
    ASSERT_EQ_INT(raw_wait_done(b, 1, NULL, NULL, NULL, 0, 30000), DSD_IPC_DONE);
    close(a);
    ASSERT_EQ_INT(wait_stat(b, "kv_pages_used", 0), 0);
    finish(&d, -1, b);
}

/* Client A sends 16 requests through 16-slot shared-memory rings and never consumes: each
 * stalls after 16 tokens and parks. With fair shares off, only "a parked request holds no
 * slot" lets client B run; the old rule (parked requests counted against max_batch) left B
 * waiting for as long as A stayed. After B, all 16 of A's are parked, none running; when A
 * goes, every page comes back. */
TEST(stalled_requests_hold_no_slot)
{
    struct daemon d = {0};
    static const char *const extra[] = { "--threads", "1", "--max_batch", "4", "--max_tokens", "100000",
                                         "--kv_memory_mb", "64", "--fairness", "off", "--stall_timeout_s", "600",
                                         NULL };
    int a, b;
    if (!start_two(&d, extra, &a, &b)) {
        ASSERT_TRUE(false);
        if (d.pid > 0)
            finish(&d, a, b);
        return;
    }
    struct dsd_shm shm;
    struct dsd_shm_params sp = { .prompt_capacity = 4096, .ring_count = 16, .ring_capacity = 16 };
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_shm_create(&sp, &shm, &err), 0);
    uint32_t code;
    ASSERT_EQ_INT(raw_shm_attach(a, shm.fd, &code), DSD_IPC_SHM_OK);
    for (int i = 0; i < 16; i++) {
        struct dsd_ipc_msg m = gen_msg((uint64_t)(i + 1), prompt_a, 16, 1000, 0);
        m.generate.use_ring = true;
        m.generate.ring = (uint32_t)i;
        ASSERT_EQ_INT(raw_send(a, &m), 0);
    }
    usleep(100 * 1000);
    struct dsd_ipc_msg m = gen_msg(1, prompt_b, 8, 4, 0);
    ASSERT_EQ_INT(raw_send(b, &m), 0);
    double t = time_to_first_token(b, 1, -1, 90);
    printf("  stalled rings: second client's first token after %.3f s\n", t);
    ASSERT_TRUE(t >= 0);
    ASSERT_EQ_INT(raw_wait_done(b, 1, NULL, NULL, NULL, 0, 30000), DSD_IPC_DONE);
    ASSERT_EQ_INT(wait_stat(b, "requests_parked", 16), 16);
    ASSERT_EQ_INT(raw_stat(b, "requests_running"), 0);
    close(a);
    ASSERT_EQ_INT(wait_stat(b, "kv_pages_used", 0), 0);
    ASSERT_EQ_INT(raw_stat(b, "requests_in_flight"), 0);
    dsd_shm_close(&shm);
    finish(&d, -1, b);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DEEPSEEKD MODEL_DIR\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    g_model = argv[2];
    RUN(busy_client_cannot_hold_the_batch);
    RUN(non_reader_cannot_block);
    RUN(stalled_requests_hold_no_slot);
    return test_report();
}
