/*
 * The systemd interface without systemd: a datagram socket of the test stands in for the
 * service manager's $NOTIFY_SOCKET (path and abstract forms) and receives exactly what
 * systemd would, credentials included; children started with a socket on fd 3 and
 * LISTEN_FDS/LISTEN_PID stand in for socket activation.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"
#include "test.h"

static char tmpdir[256];
static int manager = -1;        /* our $NOTIFY_SOCKET */

static int bind_manager(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    socklen_t len;
    if (name[0] == '@') {
        /* Abstract: sun_path[0] = 0, the name after it, length without a terminator. */
        size_t n = strlen(name);
        memcpy(a.sun_path + 1, name + 1, n - 1);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        snprintf(a.sun_path, sizeof a.sun_path, "%s", name);
        len = sizeof a;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, len) < 0) {
        perror("bind");
        exit(1);
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", name, 1);
    return fd;
}

/* Receives one datagram; *pid gets the sender's pid from SCM_CREDENTIALS. */
static const char *receive(pid_t *pid)
{
    static char buf[4096];
    char control[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = { buf, sizeof buf - 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control };
    ssize_t n = recvmsg(manager, &mh, 0);
    if (n < 0)
        return "(nothing received)";
    buf[n] = 0;
    if (pid) {
        *pid = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
                *pid = ((struct ucred *)CMSG_DATA(c))->pid;
    }
    return buf;
}

static uint64_t now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

TEST(messages_arrive_as_sent)
{
    char name[300];
    snprintf(name, sizeof name, "%s/notify", tmpdir);
    manager = bind_manager(name);
    pid_t pid;

    ASSERT_EQ_INT(dsd_notify_progress(37, 30000000ull, "loading weights: shard %d/%d", 61, 163), 1);
    ASSERT_EQ_STR(receive(&pid), "STATUS=loading weights: shard 61/163 (37%)\n"
                                 "EXTEND_TIMEOUT_USEC=30000000");
    ASSERT_EQ_INT(pid, getpid());
    ASSERT_EQ_INT(dsd_notify_progress(250, 0, "warming up"), 1);
    ASSERT_EQ_STR(receive(NULL), "STATUS=warming up (100%)");

    ASSERT_EQ_INT(dsd_notify_ready("serving %s on %s", "tiny", "/run/x.sock"), 1);
    ASSERT_EQ_STR(receive(NULL), "READY=1\nSTATUS=serving tiny on /run/x.sock");
    ASSERT_EQ_INT(dsd_notify_ready(NULL), 1);
    ASSERT_EQ_STR(receive(NULL), "READY=1");

    ASSERT_EQ_INT(dsd_notify_status("two\nlines\r"), 1);
    ASSERT_EQ_STR(receive(NULL), "STATUS=two lines ");

    uint64_t before = now_usec();
    ASSERT_EQ_INT(dsd_notify_reloading(), 1);
    uint64_t after = now_usec();
    const char *m = receive(NULL);
    unsigned long long mono = 0;
    int off = 0;
    ASSERT_EQ_INT(sscanf(m, "RELOADING=1\nMONOTONIC_USEC=%llu%n", &mono, &off), 1);
    ASSERT_TRUE(mono >= before && mono <= after);
    ASSERT_EQ_STR(m + off, "\nSTATUS=reloading configuration");

    ASSERT_EQ_INT(dsd_notify_stopping("draining %d requests", 3), 1);
    ASSERT_EQ_STR(receive(NULL), "STOPPING=1\nSTATUS=draining 3 requests");
    ASSERT_EQ_INT(dsd_notify_stopping(NULL), 1);
    ASSERT_EQ_STR(receive(NULL), "STOPPING=1");

    ASSERT_EQ_INT(dsd_notify_watchdog(), 1);
    ASSERT_EQ_STR(receive(NULL), "WATCHDOG=1");

    /* A very long status is cut, still one line, still a valid message. */
    char big[3000];
    memset(big, 's', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ASSERT_EQ_INT(dsd_notify_progress(5, 1000, "%s", big), 1);
    m = receive(NULL);
    ASSERT_TRUE(strncmp(m, "STATUS=sss", 10) == 0);
    ASSERT_TRUE(strlen(m) < 1100);
    close(manager);
    unlink(name);
}

static void *watchdog_thread(void *arg)
{
    *(int *)arg = dsd_notify_watchdog();
    return NULL;
}

/* The engine thread pings the watchdog: systemd must see the main pid (NotifyAccess=main). */
TEST(pings_from_a_thread_carry_the_main_pid)
{
    char name[64];
    snprintf(name, sizeof name, "@dsd-notify-test-%d", (int)getpid());
    manager = bind_manager(name);
    int rc = 0;
    pthread_t th;
    pthread_create(&th, NULL, watchdog_thread, &rc);
    pthread_join(th, NULL);
    ASSERT_EQ_INT(rc, 1);
    pid_t pid;
    ASSERT_EQ_STR(receive(&pid), "WATCHDOG=1");
    ASSERT_EQ_INT(pid, getpid());
    close(manager);
}

TEST(nothing_outside_systemd)
{
    unsetenv("NOTIFY_SOCKET");
    ASSERT_EQ_INT(dsd_notify_ready("x"), 0);
    ASSERT_EQ_INT(dsd_notify_status("x"), 0);
    ASSERT_EQ_INT(dsd_notify_progress(1, 1, "x"), 0);
    ASSERT_EQ_INT(dsd_notify_reloading(), 0);
    ASSERT_EQ_INT(dsd_notify_stopping(NULL), 0);
    ASSERT_EQ_INT(dsd_notify_watchdog(), 0);
    /* A manager that went away is an error the caller can log, not a crash. */
    char name[300];
    snprintf(name, sizeof name, "%s/gone", tmpdir);
    setenv("NOTIFY_SOCKET", name, 1);
    ASSERT_TRUE(dsd_notify_watchdog() < 0);
    unsetenv("NOTIFY_SOCKET");
}

TEST(watchdog_usec)
{
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    ASSERT_EQ_INT(dsd_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "2000000", 1);
    setenv("WATCHDOG_PID", pid, 1);
    ASSERT_EQ_INT(dsd_notify_watchdog_usec(), 2000000);
    setenv("WATCHDOG_PID", "1", 1);         /* meant for another process */
    ASSERT_EQ_INT(dsd_notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_PID");
    ASSERT_EQ_INT(dsd_notify_watchdog_usec(), 2000000);
    setenv("WATCHDOG_USEC", "garbage", 1);
    ASSERT_EQ_INT(dsd_notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_USEC");
}

/* ---- socket activation ---- */

enum fd3_kind { FD3_UNIX_LISTEN, FD3_TWO_FDS, FD3_UNIX_DGRAM, FD3_UNIX_UNLISTENED, FD3_PIPE,
                FD3_TCP_LISTEN, FD3_NO_ENV, FD3_OTHER_PID };

struct child_result {
    int rc, fd, cloexec, env_cleared, accepted;
    char msg[DSD_ERR_MSG_MAX];
};

static int unix_listener(const char *path)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    unlink(path);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 8) < 0)
        _exit(90);
    return s;
}

/* In the child: puts the kind's descriptor on fd 3 (as systemd would), sets the
 * environment, calls dsd_listen_socket, and reports through `out`. */
static void child(enum fd3_kind kind, int out)
{
    char path[300];
    snprintf(path, sizeof path, "%s/listen.sock", tmpdir);
    int s = -1, extra = -1;
    switch (kind) {
    case FD3_UNIX_LISTEN:
    case FD3_NO_ENV:
    case FD3_OTHER_PID:
        s = unix_listener(path);
        break;
    case FD3_TWO_FDS:
        s = unix_listener(path);
        extra = socket(AF_UNIX, SOCK_STREAM, 0);
        break;
    case FD3_UNIX_DGRAM:
        s = socket(AF_UNIX, SOCK_DGRAM, 0);
        break;
    case FD3_UNIX_UNLISTENED:
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        break;
    case FD3_PIPE: {
        int p[2];
        if (pipe(p) < 0)
            _exit(91);
        s = p[0];
        break;
    }
    case FD3_TCP_LISTEN: {
        s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 1) < 0)
            _exit(92);
        break;
    }
    }
    if (dup2(s, 3) < 0)
        _exit(93);
    if (extra >= 0 && dup2(extra, 4) < 0)
        _exit(94);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", kind == FD3_OTHER_PID ? 1 : (int)getpid());
    if (kind != FD3_NO_ENV) {
        setenv("LISTEN_FDS", extra >= 0 ? "2" : "1", 1);
        setenv("LISTEN_PID", pid, 1);
        setenv("LISTEN_FDNAMES", "deepseekd", 1);
    }
    struct child_result r = { 0 };
    struct dsd_err err = { { 0 } };
    r.rc = dsd_listen_socket(&r.fd, &err);
    snprintf(r.msg, sizeof r.msg, "%s", err.msg);
    r.cloexec = r.fd >= 0 ? (fcntl(r.fd, F_GETFD) & FD_CLOEXEC) != 0 : 0;
    r.env_cleared = !getenv("LISTEN_FDS") && !getenv("LISTEN_PID");
    if (r.rc == 1) {
        /* The descriptor works: a client connects and is accepted through it. */
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        r.accepted = connect(c, (struct sockaddr *)&a, sizeof a) == 0 && accept(r.fd, NULL, NULL) >= 0;
    }
    if (write(out, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(95);
    _exit(0);
}

static struct child_result run_child(enum fd3_kind kind)
{
    int p[2];
    struct child_result r;
    memset(&r, 0, sizeof r);
    r.rc = 12345;
    if (pipe(p) < 0)
        return r;
    /* Keep our pipe clear of fds 3 and 4, which the child overwrites. */
    int rd = fcntl(p[0], F_DUPFD_CLOEXEC, 10), wr = fcntl(p[1], F_DUPFD_CLOEXEC, 10);
    close(p[0]);
    close(p[1]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(rd);
        child(kind, wr);
    }
    close(wr);
    if (read(rd, &r, sizeof r) != (ssize_t)sizeof r)
        r.rc = 12345;
    close(rd);
    int status;
    waitpid(pid, &status, 0);
    test_checks_total++;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL_AT("child for case %d exited with status 0x%x", (int)kind, status);
    return r;
}

TEST(listen_socket_inherited)
{
    struct child_result r = run_child(FD3_UNIX_LISTEN);
    ASSERT_EQ_INT(r.rc, 1);
    ASSERT_EQ_INT(r.fd, 3);
    ASSERT_TRUE(r.cloexec);
    ASSERT_TRUE(r.env_cleared);
    ASSERT_TRUE(r.accepted);
}

TEST(listen_socket_none)
{
    struct child_result r = run_child(FD3_NO_ENV);
    ASSERT_EQ_INT(r.rc, 0);
    ASSERT_EQ_INT(r.fd, -1);
    r = run_child(FD3_OTHER_PID);       /* $LISTEN_PID names another process: not ours */
    ASSERT_EQ_INT(r.rc, 0);
    ASSERT_EQ_INT(r.fd, -1);
}

TEST(listen_socket_wrong)
{
    static const struct { enum fd3_kind kind; const char *needle; } bad[] = {
        { FD3_TWO_FDS, "systemd passed 2 file descriptors" },
        { FD3_UNIX_DGRAM, "not a listening Unix stream socket" },
        { FD3_UNIX_UNLISTENED, "not a listening Unix stream socket" },
        { FD3_PIPE, "not a listening Unix stream socket" },
        { FD3_TCP_LISTEN, "not a listening Unix stream socket" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct child_result r = run_child(bad[i].kind);
        ASSERT_EQ_INT(r.rc, -EINVAL);
        ASSERT_EQ_INT(r.fd, -1);
        test_checks_total++;
        if (!strstr(r.msg, bad[i].needle))
            TEST_FAIL_AT("case %d: \"%s\" lacks \"%s\"", (int)bad[i].kind, r.msg, bad[i].needle);
    }
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/dsd-notify-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(messages_arrive_as_sent);
    RUN(pings_from_a_thread_carry_the_main_pid);
    RUN(nothing_outside_systemd);
    RUN(watchdog_usec);
    RUN(listen_socket_inherited);
    RUN(listen_socket_none);
    RUN(listen_socket_wrong);
    char sock[300];
    snprintf(sock, sizeof sock, "%s/listen.sock", tmpdir);
    unlink(sock);
    rmdir(tmpdir);
    return test_report();
}
