/*
 * The real daemon on a temporary socket, driven through raw frames (ipc/), as a hostile or
 * careless client would (the client library has its own tests against the daemon):
 *   test_daemon DEEPSEEKD MODEL_DIR
 *  - a greedy generation gives exactly the tokens of the in-process engine;
 *  - 64 concurrent streams, each exactly its own in-process result;
 *  - cancel mid-stream; a client process killed mid-stream (its request freed, the KV pages
 *    back, others unaffected);
 *  - bad input of every kind gets its error and the daemon keeps serving everyone;
 *  - shared memory: bad memfds and bad spans refused; ring output equals frame output;
 *  - SIGTERM drains: a running request finishes, the daemon exits 0;
 *  - a checkpoint whose weights make the logits NaN (it loads: the loader does not read weight
 *    bytes): each request ends with an error that says so, no token is emitted, the daemon
 *    keeps serving.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt_variant.h"
#include "daemon_harness.h"
#include "engine_harness.h"
#include "ipc_fd.h"
#include "ipc_shm.h"
#include "model.h"
#include "sampling.h"
#include "test.h"

static const char *g_bin, *g_model;
static struct daemon g_d;
static struct dsd_model *g_m;

/* The reference: greedy generation of n tokens with the in-process engine. */
/* The reference: greedy generation with the in-process engine. */
static void reference(const uint32_t *prompt, int np, int n, uint32_t *out)
{
    harness_greedy(g_m, (const int32_t *)prompt, np, n, (int32_t *)out);
}

static void make_prompt(uint32_t *p, int n, int seed)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint32_t)((seed * 7919 + i * 104729 + 17) % (g_m->cfg.vocab_size - 2) + 2);
}

TEST(greedy_generation_matches_the_engine)
{
    uint32_t prompt[40], want[12], got[64];
    make_prompt(prompt, 40, 1);
    reference(prompt, 40, 12, want);
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    int64_t prefilled0 = raw_stat(fd, "tokens_prefilled_total");
    int64_t generated0 = raw_stat(fd, "tokens_generated_total");
    struct dsd_ipc_msg m = raw_generate_msg(7, prompt, 40, 12), done;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    int n = 0;
    ASSERT_EQ_INT(raw_wait_done(fd, 7, &done, got, &n, 64, 60000), DSD_IPC_DONE);
    ASSERT_EQ_INT(n, 12);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_EQ_INT(done.done.finish, DSD_IPC_FINISH_LENGTH);
    ASSERT_EQ_INT(done.done.usage.prompt, 40);
    ASSERT_EQ_INT(done.done.usage.completion, 12);
    dsd_ipc_msg_free(&done);
    /* The counters an operator reads: every prompt token prefilled once, every token counted. */
    ASSERT_EQ_INT(raw_stat(fd, "tokens_prefilled_total") - prefilled0, 40);
    ASSERT_EQ_INT(raw_stat(fd, "tokens_generated_total") - generated0, 12);
    close(fd);
}

TEST(sixty_four_concurrent_streams)
{
    /* 8 distinct prompts, each on 8 streams: the batch mixes sequences at different
     * positions and repeats, and each stream must still get exactly the single-stream tokens. */
    enum { S = 64, P = 8, NP = 20, NT = 8 };
    uint32_t prompts[S][NP], want[S][NT];
    for (int i = 0; i < S; i++) {
        make_prompt(prompts[i], NP, 100 + i % P);
        if (i < P)
            reference(prompts[i], NP, NT, want[i]);
        else
            memcpy(want[i], want[i % P], sizeof want[i]);
    }
    int fds[S];
    for (int i = 0; i < S; i++) {
        fds[i] = raw_connect(&g_d);
        ASSERT_TRUE(fds[i] >= 0);
        struct dsd_ipc_msg m = raw_generate_msg(10 + (uint64_t)i, prompts[i], NP, NT);
        ASSERT_EQ_INT(raw_send(fds[i], &m), 0);
    }
    int exact = 0;
    for (int i = 0; i < S; i++) {
        uint32_t got[NT + 4];
        int n = 0;
        struct dsd_ipc_msg done;
        if (raw_wait_done(fds[i], 10 + (uint64_t)i, &done, got, &n, NT + 4, 120000) == DSD_IPC_DONE) {
            exact += n == NT && memcmp(got, want[i], sizeof want[i]) == 0;
            dsd_ipc_msg_free(&done);
        }
        if (i > 0)
            close(fds[i]);
    }
    printf("  %d/%d concurrent streams returned exactly their single-stream tokens\n", exact, S);
    ASSERT_EQ_INT(exact, S);
    /* 64 connections is the default max_connections_per_uid: the next test's connection is
     * refused until the daemon has seen these close, so wait for that on the one kept open */
    int64_t open_now = -1;
    for (int i = 0; i < 100 && open_now != 1; i++) {
        open_now = raw_stat(fds[0], "connections");
        if (open_now != 1)
            usleep(50000);
    }
    ASSERT_EQ_INT(open_now, 1);
    close(fds[0]);
}

TEST(cancel_mid_stream)
{
    uint32_t prompt[16];
    make_prompt(prompt, 16, 3);
    int fd = raw_connect(&g_d);
    ASSERT_EQ_INT(raw_cancel_mid_stream(fd, 5, prompt, 16), DSD_IPC_FINISH_CANCELLED);
    ASSERT_EQ_INT(raw_stat(fd, "kv_pages_used"), 0);
    close(fd);
}

TEST(killed_client_is_cleaned_up_and_others_unaffected)
{
    uint32_t prompt[24], want[6], got[16];
    make_prompt(prompt, 24, 4);
    reference(prompt, 24, 6, want);
    int fd = raw_connect(&g_d);
    pid_t child = fork();
    if (child == 0) {           /* a client that starts a long generation and dies */
        int c = raw_connect(&g_d);
        struct dsd_ipc_msg m = raw_generate_msg(1, prompt, 24, 100000), r;
        raw_send(c, &m);
        for (int i = 0; i < 4; i++)
            if (raw_recv(c, &r, 20000) == 0)
                dsd_ipc_msg_free(&r);
        pause();
        _exit(0);
    }
    usleep(300000);
    ASSERT_TRUE(raw_stat(fd, "requests_in_flight") >= 1);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* meanwhile another client is served correctly */
    struct dsd_ipc_msg m = raw_generate_msg(2, prompt, 24, 6), done;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    int n = 0;
    ASSERT_EQ_INT(raw_wait_done(fd, 2, &done, got, &n, 16, 60000), DSD_IPC_DONE);
    ASSERT_TRUE(n == 6 && memcmp(got, want, sizeof want) == 0);
    dsd_ipc_msg_free(&done);
    int64_t inflight = -1, pages = -1;
    for (int i = 0; i < 50 && (inflight != 0 || pages != 0); i++) {
        usleep(100000);
        inflight = raw_stat(fd, "requests_in_flight");
        pages = raw_stat(fd, "kv_pages_used");
    }
    ASSERT_EQ_INT(inflight, 0);
    ASSERT_EQ_INT(pages, 0);
    close(fd);
}

/* Sends bytes (a frame or garbage) and expects an error with `code` (0 = the connection is
 * closed without a frame). Then checks the connection still answers health unless fatal. */
static void expect_error(const char *what, const void *bytes, size_t n, uint32_t code, bool fatal)
{
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ_INT(raw_send_bytes(fd, bytes, n), 0);
    struct dsd_ipc_msg r;
    int rc = raw_recv(fd, &r, 10000);
    if (rc != 0 || r.type != DSD_IPC_ERROR || r.error.code != code) {
        TEST_FAIL_AT("%s: expected error %u, got rc %d type %d code %u", what, code, rc, rc ? -1 : (int)r.type,
                     rc ? 0 : r.error.code);
    } else {
        printf("  %-34s -> %s: %s\n", what, dsd_ipc_code_name(code), r.error.msg.ptr);
    }
    if (rc == 0)
        dsd_ipc_msg_free(&r);
    if (!fatal) {
        struct dsd_ipc_msg h = { .type = DSD_IPC_HEALTH, .id = 3 };
        ASSERT_EQ_INT(raw_send(fd, &h), 0);
        ASSERT_EQ_INT(raw_wait_done(fd, 3, NULL, NULL, NULL, 0, 10000), DSD_IPC_HEALTH_OK);
    } else {
        char b;
        ASSERT_TRUE(recv(fd, &b, 1, 0) <= 0);     /* closed */
    }
    close(fd);
}

static size_t frame(uint8_t *out, const void *body, uint32_t n)
{
    dsd_ipc_put_prefix(out, n);
    memcpy(out + 4, body, n);
    return n + 4;
}

TEST(bad_frames_get_errors_and_the_daemon_keeps_serving)
{
    uint8_t buf[256];
    /* bodies in msgpack */
    static const uint8_t c1[] = { 0xc1 };
    static const uint8_t arr[] = { 0x92, 0x01, 0x02 };
    static const uint8_t no_t[] = { 0x81, 0xa2, 'i', 'd', 0x05 };
    static const uint8_t unknown[] = { 0x82, 0xa1, 't', 0xaa, 'f', 'r', 'o', 'b', 'n', 'i', 'c', 'a', 't', 'e', 0xa2, 'i', 'd', 0x05 };
    static const uint8_t huge_arr[] = { 0x83, 0xa1, 't', 0xa8, 'g', 'e', 'n', 'e', 'r', 'a', 't', 'e', 0xa2, 'i', 'd', 0x05,
                                        0xa6, 't', 'o', 'k', 'e', 'n', 's', 0xdd, 0x01, 0x00, 0x00, 0x00 };
    static const uint8_t wrong_type[] = { 0x83, 0xa1, 't', 0xa8, 'g', 'e', 'n', 'e', 'r', 'a', 't', 'e', 0xa2, 'i', 'd', 0x05,
                                          0xa6, 't', 'o', 'k', 'e', 'n', 's', 0xa3, 'a', 'b', 'c' };
    static const uint8_t reply_type[] = { 0x82, 0xa1, 't', 0xa4, 'd', 'o', 'n', 'e', 0xa2, 'i', 'd', 0x05 };
    expect_error("byte 0xc1", buf, frame(buf, c1, sizeof c1), DSD_IPC_E_BAD_MSGPACK, false);
    expect_error("array instead of map", buf, frame(buf, arr, sizeof arr), DSD_IPC_E_NOT_A_MAP, false);
    expect_error("no \"t\"", buf, frame(buf, no_t, sizeof no_t), DSD_IPC_E_MISSING_FIELD, false);
    expect_error("unknown type", buf, frame(buf, unknown, sizeof unknown), DSD_IPC_E_UNKNOWN_TYPE, false);
    expect_error("array32 of 2^24 declared, 0 sent", buf, frame(buf, huge_arr, sizeof huge_arr), DSD_IPC_E_BAD_MSGPACK, false);
    expect_error("tokens as a string", buf, frame(buf, wrong_type, sizeof wrong_type), DSD_IPC_E_WRONG_TYPE, false);
    expect_error("a reply type sent to the daemon", buf, frame(buf, reply_type, sizeof reply_type),
                 DSD_IPC_E_UNKNOWN_TYPE, false);
    expect_error("empty body", buf, frame(buf, "", 0), DSD_IPC_E_BAD_MSGPACK, false);
    uint8_t big[4] = { 0xff, 0xff, 0xff, 0x7f };
    expect_error("length prefix 2 GiB", big, 4, DSD_IPC_E_FRAME_TOO_LARGE, true);
    /* semantic errors */
    uint32_t bad_tok[2] = { 5, (uint32_t)g_m->cfg.vocab_size };
    struct dsd_ipc_msg m = raw_generate_msg(9, bad_tok, 2, 4);
    struct dsd_ipc_buf b = {0};
    struct dsd_err err;
    dsd_ipc_encode(&b, &m, DSD_IPC_FRAME_CEIL, &err);
    expect_error("token id = vocab_size", b.data, b.len, DSD_IPC_E_BAD_TOKEN, false);
    b.len = 0;
    m = raw_generate_msg(9, bad_tok, 1, 4);
    m.generate.use_ring = true;
    m.generate.ring = 0;
    dsd_ipc_encode(&b, &m, DSD_IPC_FRAME_CEIL, &err);
    expect_error("ring without shm", b.data, b.len, DSD_IPC_E_RING_UNAVAILABLE, false);
    dsd_ipc_buf_free(&b);
    /* random bytes, many times, each on its own connection: no crash, never a hang */
    uint64_t x = 12345;
    for (int i = 0; i < 50; i++) {
        int fd = raw_connect(&g_d);
        uint8_t junk[300];
        for (size_t k = 0; k < sizeof junk; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            junk[k] = (uint8_t)(x >> 56);
        }
        raw_send_bytes(fd, junk, sizeof junk);
        struct dsd_ipc_msg r;
        if (raw_recv(fd, &r, 2000) == 0)
            dsd_ipc_msg_free(&r);
        close(fd);
    }
    ASSERT_TRUE(daemon_alive(&g_d));
}

TEST(first_frame_must_be_hello_and_truncation_is_harmless)
{
    int fd = raw_socket(&g_d);
    struct dsd_ipc_msg h = { .type = DSD_IPC_HEALTH, .id = 4 }, r;
    ASSERT_EQ_INT(raw_send(fd, &h), 0);
    ASSERT_EQ_INT(raw_recv(fd, &r, 10000), 0);
    ASSERT_TRUE(r.type == DSD_IPC_ERROR && r.error.code == DSD_IPC_E_HELLO_REQUIRED && r.error.fatal);
    dsd_ipc_msg_free(&r);
    close(fd);
    /* a frame cut in the middle, then the client goes away */
    fd = raw_connect(&g_d);
    uint8_t half[10] = { 100, 0, 0, 0, 0x82, 0xa1, 't' };
    raw_send_bytes(fd, half, 7);
    close(fd);
    /* hello with no common version */
    fd = raw_socket(&g_d);
    struct dsd_ipc_msg hv = { .type = DSD_IPC_HELLO, .id = 1 };
    hv.hello.min_version = 2;
    hv.hello.max_version = 9;
    raw_send(fd, &hv);
    ASSERT_EQ_INT(raw_recv(fd, &r, 10000), 0);
    ASSERT_TRUE(r.type == DSD_IPC_ERROR && r.error.code == DSD_IPC_E_VERSION_UNSUPPORTED);
    dsd_ipc_msg_free(&r);
    close(fd);
    ASSERT_TRUE(daemon_alive(&g_d));
}

/* Attaches the memfd fd with shm_attach; returns the reply type (and error code in *code). */
TEST(shared_memory_checks_and_ring_output)
{
    uint32_t code;
    /* an unsealed memfd */
    int fd = raw_connect(&g_d);
    int mfd = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_EQ_INT(ftruncate(mfd, 1 << 16), 0);
    ASSERT_EQ_INT(raw_shm_attach(fd, mfd, &code), DSD_IPC_ERROR);
    ASSERT_EQ_INT(code, DSD_IPC_E_SHM_INVALID);
    close(mfd);
    /* no fd at all */
    ASSERT_EQ_INT(raw_shm_attach(fd, -1, &code), DSD_IPC_ERROR);
    ASSERT_EQ_INT(code, DSD_IPC_E_SHM_INVALID);
    /* sealed but with a garbage header */
    mfd = memfd_create("y", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_EQ_INT(ftruncate(mfd, 1 << 16), 0);
    ASSERT_TRUE(write(mfd, "not a deepseekd shm header", 26) == 26);
    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    ASSERT_EQ_INT(raw_shm_attach(fd, mfd, &code), DSD_IPC_ERROR);
    ASSERT_EQ_INT(code, DSD_IPC_E_SHM_INVALID);
    close(mfd);
    /* a good region: prompt from the arena, output through ring 1, equal to frame output */
    struct dsd_shm shm;
    struct dsd_shm_params sp = { .prompt_capacity = 4096, .ring_count = 2, .ring_capacity = 16 };
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_shm_create(&sp, &shm, &err), 0);
    ASSERT_EQ_INT(raw_shm_attach(fd, shm.fd, &code), DSD_IPC_SHM_OK);
    uint32_t prompt[30], want[40];
    make_prompt(prompt, 30, 8);
    reference(prompt, 30, 40, want);
    memcpy(dsd_shm_prompt(&shm) + 100, prompt, sizeof prompt);
    /* a span past the arena */
    struct dsd_ipc_msg m = raw_generate_msg(60, prompt, 30, 40);
    m.generate.prompt.kind = DSD_IPC_PROMPT_SPAN;
    m.generate.prompt.span_offset = 4090;
    m.generate.prompt.span_count = 30;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    struct dsd_ipc_msg r;
    ASSERT_EQ_INT(raw_wait_done(fd, 60, &r, NULL, NULL, 0, 10000), DSD_IPC_ERROR);
    ASSERT_EQ_INT(r.error.code, DSD_IPC_E_RING_UNAVAILABLE);
    dsd_ipc_msg_free(&r);
    /* the real one: 40 tokens through a 16-slot ring: the daemon must stall and resume */
    m.generate.prompt.span_offset = 100;
    m.generate.use_ring = true;
    m.generate.ring = 1;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    /* The client does not consume until the daemon says it stalled: the ring (16 slots) must
     * fill exactly, never overflow; after consuming and `resume` the rest arrives. */
    struct dsd_ring_consumer rc;
    uint32_t got[64];
    int n = 0, stalls = 0;
    uint64_t start = 0;
    bool done = false, consuming = false;
    while (!done) {
        ASSERT_EQ_INT(raw_recv(fd, &r, 20000), 0);
        if (r.type == DSD_IPC_ACCEPTED) {
            ASSERT_TRUE(r.accepted.has_ring_start);
            start = r.accepted.ring_start;
            dsd_ring_consumer_init(&rc, &shm, 1, start);
        } else if (r.type == DSD_IPC_TOKENS || r.type == DSD_IPC_DONE) {
            if (r.type == DSD_IPC_TOKENS && r.tokens.stalled) {
                stalls++;
                if (!consuming)
                    ASSERT_EQ_INT(dsd_ring_available(&rc), 16);     /* full, not more */
                consuming = true;
            }
            if (consuming) {
                int64_t k = dsd_ring_consume(&rc, got + n, (uint32_t)(64 - n));
                ASSERT_TRUE(k >= 0);
                n += (int)k;
            }
            if (r.type == DSD_IPC_TOKENS && r.tokens.stalled) {
                struct dsd_ipc_msg res = { .type = DSD_IPC_RESUME, .id = 60 };
                raw_send(fd, &res);
            }
            if (r.type == DSD_IPC_DONE) {
                ASSERT_EQ_INT(r.done.finish, DSD_IPC_FINISH_LENGTH);
                ASSERT_TRUE(r.done.has_ring_end && r.done.ring_end == start + 40);
                int64_t k = dsd_ring_consume(&rc, got + n, (uint32_t)(64 - n));
                n += k > 0 ? (int)k : 0;
                done = true;
            }
        } else {
            TEST_FAIL_AT("unexpected reply type %d", (int)r.type);
            done = true;
        }
        dsd_ipc_msg_free(&r);
    }
    printf("  ring output: %d tokens through a 16-slot ring, %d stall(s)\n", n, stalls);
    ASSERT_EQ_INT(n, 40);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_TRUE(stalls >= 1);
    dsd_shm_close(&shm);
    close(fd);
}

TEST(sigterm_drains_running_requests)
{
    uint32_t prompt[16];
    make_prompt(prompt, 16, 9);
    int fd = raw_connect(&g_d);
    struct dsd_ipc_msg m = raw_generate_msg(70, prompt, 16, 60);
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    struct dsd_ipc_msg r;
    ASSERT_EQ_INT(raw_recv(fd, &r, 20000), 0);   /* accepted */
    dsd_ipc_msg_free(&r);
    kill(g_d.pid, SIGTERM);
    int n = 0;
    uint32_t got[80];
    ASSERT_EQ_INT(raw_wait_done(fd, 70, &r, got, &n, 80, 60000), DSD_IPC_DONE);
    ASSERT_EQ_INT(r.done.finish, DSD_IPC_FINISH_LENGTH);    /* it finished, not cancelled */
    ASSERT_EQ_INT(n, 60);
    dsd_ipc_msg_free(&r);
    close(fd);
    ASSERT_EQ_INT(daemon_stop(&g_d), 0);                    /* exit status 0 */
}

TEST(non_finite_logits_end_each_request_with_an_error)
{
    char tmp[] = "/tmp/dsd-test-nan-XXXXXX", dir[PATH_MAX];
    ASSERT_TRUE(mkdtemp(tmp) != NULL);
    snprintf(dir, sizeof dir, "%s",
             ckpt_variant(g_model, tmp, "nanweight", "model.layers.0.self_attn.o_proj.weight", "fp8_nan", true));
    struct daemon d;
    memset(&d, 0, sizeof d);
    static const char *const extra[] = { "--threads", "2", "--kv_memory_mb", "64", NULL };
    ASSERT_EQ_INT(daemon_start(&d, g_bin, dir, extra, 120), 0);
    uint32_t prompt[12];
    make_prompt(prompt, 12, 5);
    int fd = raw_connect(&d);
    ASSERT_TRUE(fd >= 0);
    /* twice on one connection: the first failure leaves the daemon and the connection serving */
    for (int k = 0; k < 2; k++) {
        struct dsd_ipc_msg m = raw_generate_msg(90 + (uint64_t)k, prompt, 12, 16), r;
        ASSERT_EQ_INT(raw_send(fd, &m), 0);
        uint32_t got[32];
        int n = 0;
        ASSERT_EQ_INT(raw_wait_done(fd, 90 + (uint64_t)k, &r, got, &n, 32, 60000), DSD_IPC_DONE);
        ASSERT_EQ_INT(r.done.finish, DSD_IPC_FINISH_ERROR);
        ASSERT_EQ_INT(n, 0);
        char msg[512];
        snprintf(msg, sizeof msg, "%.*s", (int)r.done.error_msg.len, r.done.error_msg.ptr ? r.done.error_msg.ptr : "");
        if (!strstr(msg, "not finite"))
            fprintf(stderr, "  error message: \"%s\"\n", msg);
        ASSERT_TRUE(r.done.has_error && strstr(msg, "not finite") != NULL);
        dsd_ipc_msg_free(&r);
    }
    close(fd);
    ASSERT_TRUE(daemon_alive(&d));
    if (test_failures_total)
        daemon_print_log(&d);
    ASSERT_EQ_INT(daemon_stop(&d), 0);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
    rmdir(tmp);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_daemon DEEPSEEKD MODEL_DIR\n");
        return 2;
    }
    g_bin = argv[1];
    g_model = argv[2];
    /* the in-process engine the daemon's output is compared with */
    if (!(g_m = harness_load(g_model, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 1)))
        return 1;
    static const char *const extra[] = { "--threads", "2", "--kv_memory_mb", "64", "--max_inflight", "128",
                                         "--stall_timeout_s", "30", NULL };
    if (daemon_start(&g_d, g_bin, g_model, extra, 120))
        return 1;
    RUN(greedy_generation_matches_the_engine);
    RUN(sixty_four_concurrent_streams);
    RUN(cancel_mid_stream);
    RUN(killed_client_is_cleaned_up_and_others_unaffected);
    RUN(bad_frames_get_errors_and_the_daemon_keeps_serving);
    RUN(first_frame_must_be_hello_and_truncation_is_harmless);
    RUN(shared_memory_checks_and_ring_output);
    RUN(non_finite_logits_end_each_request_with_an_error);
    RUN(sigterm_drains_running_requests);
    if (test_failures_total)
        daemon_print_log(&g_d);
    if (g_d.pid > 0)
        daemon_stop(&g_d);
    dsd_model_free(g_m);
    return test_report();
}
