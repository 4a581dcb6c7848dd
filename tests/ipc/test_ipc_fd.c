/*
 * fd passing tests over a real Unix stream socketpair: the memfd arrives (close-on-exec, same
 * file), extra or truncated fds are refused without leaking a descriptor, and a whole client
 * session (hello, shm_attach with its fd, generate from the prompt arena, ring output) runs
 * through the reader, the decoder, shm validation and the rings, as the daemon will run it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipc_fd.h"
#include "ipc_frame.h"
#include "ipc_msg.h"
#include "ipc_shm.h"
#include "test.h"

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

TEST(passes_one_fd)
{
    int sv[2];
    ASSERT_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct dsd_shm shm;
    struct dsd_shm_params p = {.ring_count = 1, .ring_capacity = 16};
    ASSERT_EQ_INT(dsd_shm_create(&p, &shm, NULL), 0);
    ASSERT_EQ_INT(dsd_ipc_send_fd(sv[0], "abc", 3, shm.fd, NULL), 3);
    ASSERT_EQ_INT(dsd_ipc_send_fd(sv[0], "de", 2, -1, NULL), 2);
    char buf[16];
    int fd = -2;
    struct dsd_ipc_fail fail;
    ssize_t n = dsd_ipc_recv_fd(sv[1], buf, sizeof buf, &fd, &fail);
    /* The kernel stops a stream read right after the data that carried an fd. */
    ASSERT_EQ_INT(n, 3);
    ASSERT_TRUE(fd >= 0);
    ASSERT_TRUE(same_file(fd, shm.fd));
    ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
    n = dsd_ipc_recv_fd(sv[1], buf, sizeof buf, &fd, &fail);
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_INT(fd, -1);
    close(sv[0]);
    n = dsd_ipc_recv_fd(sv[1], buf, sizeof buf, &fd, &fail);
    ASSERT_EQ_INT(n, 0);     /* EOF */
    close(sv[1]);
    dsd_shm_close(&shm);
}

/* Sends data with nfds copies of fd in one SCM_RIGHTS message. */
static ssize_t send_fds(int sock, int fd, int nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 4)];
    } cbuf;
    memset(&cbuf, 0, sizeof cbuf);
    int fds[4] = {fd, fd, fd, fd};
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * nfds)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    return sendmsg(sock, &mh, 0);
}

TEST(refuses_extra_fds_without_leaking)
{
    int sv[2];
    ASSERT_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int base = count_open_fds();
    /* Two fds at once. On x86-64 CMSG_SPACE(4) == CMSG_SPACE(8) == 24, so both arrive and
     * are refused as "more than one"; four do not fit and arrive truncated (MSG_CTRUNC). */
    ASSERT_EQ_INT(send_fds(sv[0], sv[0], 2), 1);
    char buf[8];
    int fd = -2;
    struct dsd_ipc_fail fail = {0};
    ssize_t n = dsd_ipc_recv_fd(sv[1], buf, sizeof buf, &fd, &fail);
    ASSERT_EQ_INT(n, -EPROTO);
    ASSERT_EQ_INT(fail.code, DSD_IPC_E_PROTOCOL_VIOLATION);
    ASSERT_TRUE(dsd_ipc_code_fatal(fail.code));
    ASSERT_TRUE(strstr(fail.err.msg, "exactly one fd") != NULL);
    ASSERT_EQ_INT(fd, -1);
    ASSERT_EQ_INT(count_open_fds(), base);
    ASSERT_EQ_INT(send_fds(sv[0], sv[0], 4), 1);
    n = dsd_ipc_recv_fd(sv[1], buf, sizeof buf, &fd, &fail);
    ASSERT_EQ_INT(n, -EPROTO);
    ASSERT_TRUE(strstr(fail.err.msg, "truncated") != NULL);
    ASSERT_EQ_INT(count_open_fds(), base);
    close(sv[0]);
    close(sv[1]);
}

TEST(cmsg_validation_by_hand)
{
    /* Two fds in a control buffer big enough to hold both (as an io_uring recvmsg with a
     * larger control area would deliver them): both closed, refused. */
    int a = dup(0), b = dup(0);
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 2)];
    } cbuf;
    memset(&cbuf, 0, sizeof cbuf);
    struct msghdr mh = {.msg_control = cbuf.buf, .msg_controllen = sizeof cbuf.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * 2);
    int two[2] = {a, b};
    memcpy(CMSG_DATA(c), two, sizeof two);
    int fd = -2;
    struct dsd_ipc_fail fail = {0};
    ASSERT_EQ_INT(dsd_ipc_cmsg_take_fd(cbuf.buf, sizeof cbuf.buf, 0, &fd, &fail), -EPROTO);
    ASSERT_TRUE(strstr(fail.err.msg, "more than one") != NULL);
    ASSERT_EQ_INT(fd, -1);
    ASSERT_TRUE(fcntl(a, F_GETFD) == -1 && errno == EBADF);
    ASSERT_TRUE(fcntl(b, F_GETFD) == -1 && errno == EBADF);

    /* One fd but MSG_CTRUNC set: closed, refused. */
    a = dup(0);
    char one[DSD_IPC_CMSG_SPACE] __attribute__((aligned(8)));
    struct msghdr mh1 = {0};
    dsd_ipc_cmsg_put_fd(&mh1, one, a);
    ASSERT_EQ_INT(dsd_ipc_cmsg_take_fd(one, mh1.msg_controllen, MSG_CTRUNC, &fd, &fail), -EPROTO);
    ASSERT_TRUE(fcntl(a, F_GETFD) == -1 && errno == EBADF);

    /* One fd, clean: handed back. */
    a = dup(0);
    dsd_ipc_cmsg_put_fd(&mh1, one, a);
    ASSERT_EQ_INT(dsd_ipc_cmsg_take_fd(one, mh1.msg_controllen, 0, &fd, &fail), 0);
    ASSERT_EQ_INT(fd, a);
    close(a);

    /* A cmsg_len running past the buffer: malformed. */
    dsd_ipc_cmsg_put_fd(&mh1, one, 0);
    ((struct cmsghdr *)one)->cmsg_len = 4096;
    ASSERT_EQ_INT(dsd_ipc_cmsg_take_fd(one, mh1.msg_controllen, 0, &fd, &fail), -EPROTO);
    ASSERT_TRUE(strstr(fail.err.msg, "malformed") != NULL);
    /* No control data at all. */
    ASSERT_EQ_INT(dsd_ipc_cmsg_take_fd(NULL, 0, 0, &fd, &fail), 0);
    ASSERT_EQ_INT(fd, -1);
}

/* ---- a session through every piece, as the daemon will run it ------------------------- */

struct fake_daemon {
    int sock;
    struct dsd_ipc_reader reader;
    int pending_fd;             /* received, waiting for its shm_attach frame */
    struct dsd_shm shm;
    bool attached;
    uint64_t ring_start;
    uint32_t prompt[64];
    uint32_t prompt_len;
};

/* Reads whatever is there in small pieces and handles complete frames; returns the number of
 * frames handled or -1. */
static int daemon_poll(struct fake_daemon *d, int want_frames)
{
    int handled = 0;
    while (handled < want_frames) {
        uint8_t chunk[7];   /* tiny on purpose: frames split across many reads */
        int fd = -1;
        struct dsd_ipc_fail fail;
        ssize_t n = dsd_ipc_recv_fd(d->sock, chunk, sizeof chunk, &fd, &fail);
        if (n <= 0)
            return -1;
        if (fd >= 0) {
            if (d->pending_fd >= 0)
                return -1;  /* a second fd in flight: protocol violation */
            d->pending_fd = fd;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used;
            struct dsd_ipc_frame f;
            int rc = dsd_ipc_reader_push(&d->reader, chunk + off, (size_t)n - off, &used, &f,
                                         &fail);
            off += used;
            if (rc < 0)
                return -1;
            if (rc == 0)
                continue;
            struct dsd_ipc_msg m;
            if (dsd_ipc_decode(f.body, f.len, DSD_IPC_TO_DAEMON, &m, &fail) < 0)
                return -1;
            handled++;
            if (m.type == DSD_IPC_SHM_ATTACH) {
                /* The fd must have arrived no later than the frame it belongs to. */
                int afd = d->pending_fd;
                d->pending_fd = -1;
                if (afd < 0 || dsd_shm_attach(afd, 1ull << 30, &d->shm, &fail) < 0) {
                    dsd_ipc_msg_free(&m);
                    return -1;
                }
                d->attached = true;
            } else if (m.type == DSD_IPC_GENERATE) {
                const struct dsd_ipc_prompt *p = &m.generate.prompt;
                if (p->kind != DSD_IPC_PROMPT_SPAN || p->span_count > 64 ||
                    dsd_shm_copy_prompt(&d->shm, p->span_offset, p->span_count, d->prompt,
                                        &fail) < 0) {
                    dsd_ipc_msg_free(&m);
                    return -1;
                }
                d->prompt_len = p->span_count;
            }
            dsd_ipc_msg_free(&m);
        }
    }
    return handled;
}

TEST(session_hello_attach_generate)
{
    int sv[2];
    ASSERT_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct fake_daemon d = {.sock = sv[1], .pending_fd = -1};
    dsd_ipc_reader_init(&d.reader, DSD_IPC_HELLO_FRAME);

    /* Client: hello, then shm_attach with the memfd on its first byte, then generate from
     * the arena; hello and attach written before the daemon reads anything. */
    struct dsd_shm shm;
    struct dsd_shm_params p = {.prompt_capacity = 256, .ring_count = 2, .ring_capacity = 32};
    ASSERT_EQ_INT(dsd_shm_create(&p, &shm, NULL), 0);
    struct dsd_ipc_buf out = {0};
    struct dsd_ipc_msg hello = {.type = DSD_IPC_HELLO, .id = 1};
    hello.hello = (struct dsd_ipc_hello){1, 1, dsd_ipc_s("test"), 0};
    ASSERT_EQ_INT(dsd_ipc_encode(&out, &hello, DSD_IPC_HELLO_FRAME, NULL), 0);
    ASSERT_EQ_INT(dsd_ipc_send_fd(sv[0], out.data, out.len, -1, NULL), (ssize_t)out.len);
    out.len = 0;
    struct dsd_ipc_msg attach = {.type = DSD_IPC_SHM_ATTACH, .id = 2};
    ASSERT_EQ_INT(dsd_ipc_encode(&out, &attach, DSD_IPC_HELLO_FRAME, NULL), 0);
    ASSERT_EQ_INT(dsd_ipc_send_fd(sv[0], out.data, out.len, shm.fd, NULL), (ssize_t)out.len);
    out.len = 0;
    uint32_t *arena = dsd_shm_prompt(&shm);
    for (uint32_t i = 0; i < 10; i++)
        arena[100 + i] = 500 + i;
    struct dsd_ipc_msg gen = {.type = DSD_IPC_GENERATE, .id = 3};
    dsd_ipc_generate_default(&gen.generate);
    gen.generate.prompt.kind = DSD_IPC_PROMPT_SPAN;
    gen.generate.prompt.span_offset = 100;
    gen.generate.prompt.span_count = 10;
    gen.generate.use_ring = true;
    gen.generate.ring = 1;
    ASSERT_EQ_INT(dsd_ipc_encode(&out, &gen, DSD_IPC_HELLO_FRAME, NULL), 0);
    ASSERT_EQ_INT(dsd_ipc_send_fd(sv[0], out.data, out.len, -1, NULL), (ssize_t)out.len);

    ASSERT_EQ_INT(daemon_poll(&d, 3), 3);
    ASSERT_TRUE(d.attached);
    ASSERT_EQ_INT(d.prompt_len, 10);
    ASSERT_EQ_INT(d.prompt[0], 500);
    ASSERT_EQ_INT(d.prompt[9], 509);
    ASSERT_EQ_INT(d.pending_fd, -1);

    /* Daemon produces into ring 1; the client reads its own mapping. */
    struct dsd_ring_producer pr;
    dsd_ring_producer_init(&pr, &d.shm, 1, 0);
    dsd_ring_producer_bind(&pr, 3);
    uint32_t ids[3] = {7, 8, 9};
    ASSERT_EQ_INT(dsd_ring_produce(&pr, ids, 3), 3);
    dsd_ring_producer_finish(&pr, DSD_IPC_FINISH_STOP);
    struct dsd_ring_consumer co;
    dsd_ring_consumer_init(&co, &shm, 1, 0);
    uint32_t got[8];
    ASSERT_EQ_INT(dsd_ring_finish_code(&co), DSD_IPC_FINISH_STOP);
    ASSERT_EQ_INT(dsd_ring_consume(&co, got, 8), 3);
    ASSERT_EQ_INT(got[2], 9);
    ASSERT_EQ_INT(dsd_ring_request_id(&co), 3);

    dsd_ipc_buf_free(&out);
    dsd_ipc_reader_free(&d.reader);
    dsd_shm_close(&d.shm);
    dsd_shm_close(&shm);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    RUN(passes_one_fd);
    RUN(refuses_extra_fds_without_leaking);
    RUN(cmsg_validation_by_hand);
    RUN(session_hello_attach_generate);
    return test_report();
}
