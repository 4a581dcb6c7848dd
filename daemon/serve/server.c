/*
 * The io thread's loop (contract in server.h). One io_uring; every operation's user_data is a
 * pointer (connection or server) with the operation kind in its low 3 bits. Completions are
 * handled as they come; everything they ask for (sends, re-arming receives) is queued and
 * submitted together before the next wait, so one loop turn is one io_uring_submit_and_wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "ipc_fd.h"
#include "log.h"
#include "notify.h"
#include "server_internal.h"

#define RING_ENTRIES 512
#define BUF_GROUP 1
#define N_BUFS 64                   /* power of two */
#define BUF_SIZE (64 * 1024)
#define SEND_HIGH (1u << 20)        /* queued output that parks a connection (requests and reading) */
#define SEND_LOW (256u << 10)       /* ... and that lets it run again */
#define BUF_KEEP (64u << 10)        /* an empty send buffer larger than this is freed */
#define HELD_MAX ((size_t)BUF_SIZE) /* received-but-unprocessed bytes: at most one buffer */
#define CLOSE_LINGER_S 5            /* a fatal error frame gets this long to be sent */
#define TIMER_MS 250

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_WAKE, OP_SIGNAL, OP_TIMER, OP_IGNORE };

static uint64_t tag(void *ptr, enum op op)
{
    return (uint64_t)(uintptr_t)ptr | (uint64_t)op;
}

uint64_t srv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* An SQE, flushing the submission queue when it is full (liburing's get_sqe rule). */
static struct io_uring_sqe *get_sqe(struct server *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        io_uring_submit(&s->ring);
        sqe = io_uring_get_sqe(&s->ring);
    }
    DSD_CHECK(sqe != NULL);
    return sqe;
}

/* ---- listening socket --------------------------------------------------------------- */

void dsd_server_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int dsd_server_listen(const char *path, unsigned mode, const char *group, struct dsd_err *err)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path)
        return dsd_errf(err, -ENAMETOOLONG, "socket path %s is longer than %zu bytes", path, sizeof a.sun_path - 1);
    strcpy(a.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return dsd_errf(err, -EEXIST, "%s exists and is not a socket; refusing to replace it", path);
        unlink(path);   /* a stale socket from an earlier run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return dsd_errf(err, -errno, "socket: %s", strerror(errno));
    /* Create it with no permissions for others from the start; then set the mode. */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (rc != 0) {
        int e = errno;
        close(fd);
        return dsd_errf(err, -e, "bind %s: %s", path, strerror(e));
    }
    if (group && *group) {
        struct group *g = getgrnam(group);
        if (!g || chown(path, (uid_t)-1, g->gr_gid) != 0) {
            int e = g ? errno : ENOENT;
            close(fd);
            unlink(path);
            return dsd_errf(err, -e, "socket group %s: %s", group, g ? strerror(e) : "no such group");
        }
    }
    if (chmod(path, mode) != 0 || listen(fd, 512) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return dsd_errf(err, -e, "%s: %s", path, strerror(e));
    }
    return fd;
}

/* ---- connections ------------------------------------------------------------------- */

struct uid_use *srv_uid(struct server *s, uid_t uid)
{
    for (struct uid_use *u = s->uids; u; u = u->next)
        if (u->uid == uid)
            return u;
    struct uid_use *u = calloc(1, sizeof *u);
    DSD_CHECK(u != NULL);
    u->uid = uid;
    u->next = s->uids;
    s->uids = u;
    return u;
}

static bool has_held(const struct conn *c)
{
    return c->held.len > c->held_off;
}

/* One recvmsg at a time per connection, into a provided buffer. Not multishot: a multishot
 * recv cannot be stopped reliably while its peer keeps sending (a cancel by user_data misses
 * it while the kernel has it queued for a retry, -ENOENT; seen on Linux 6.18), and flow
 * control must be able to stop reading a connection at once. With one receive in flight,
 * stopping is not re-arming, and what a connection may have received but not processed is
 * at most the rest of one buffer. */
static void arm_recv(struct server *s, struct conn *c)
{
    /* Never while the output is backed up, nor before what was held is processed. */
    if (c->recv_armed || c->closing || c->paused || has_held(c))
        return;
    memset(&c->rx_msg, 0, sizeof c->rx_msg);
    c->rx_iov = (struct iovec){ .iov_base = NULL, .iov_len = BUF_SIZE };
    c->rx_msg.msg_iov = &c->rx_iov;
    c->rx_msg.msg_iovlen = 1;
    c->rx_msg.msg_control = c->rx_control;
    c->rx_msg.msg_controllen = sizeof c->rx_control;
    struct io_uring_sqe *sqe = get_sqe(s);
    io_uring_prep_recvmsg(sqe, c->fd, &c->rx_msg, MSG_CMSG_CLOEXEC);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
    c->recv_armed = true;
    c->refs++;
}

/* Flow control for every reply: above SEND_HIGH queued bytes the engine parks the
 * connection's requests and the io thread stops reading from it (so no request, of any kind,
 * can add output); below SEND_LOW both resume (held bytes first, main loop). */
static void update_backpressure(struct server *s, struct conn *c)
{
    size_t queued = (c->sbuf.len - c->sent) + c->wbuf.len;
    if (!c->paused && queued > SEND_HIGH) {
        c->paused = true;
        c->paused_since_ns = srv_now_ns();
        s->read_pauses++;
        dsd_engine_pause_conn(s->p.engine, c->id, true);     /* and arm_recv stops */
    } else if (c->paused && queued < SEND_LOW) {
        c->paused = false;
        dsd_engine_pause_conn(s->p.engine, c->id, false);
        /* the time the daemon was not reading does not count against the client */
        uint64_t now = srv_now_ns();
        if (c->frame_start_ns)
            c->frame_start_ns = now;
    }
}

static void flush_conn(struct server *s, struct conn *c)
{
    if (c->send_in_flight || c->fd < 0)
        return;
    if (c->sent == c->sbuf.len && c->wbuf.len > 0) {
        struct dsd_ipc_buf t = c->sbuf;
        c->sbuf = c->wbuf;
        c->wbuf = t;
        c->wbuf.len = 0;
        c->sent = 0;
        if (c->wbuf.cap > BUF_KEEP)         /* a burst is over: give its memory back */
            dsd_ipc_buf_free(&c->wbuf);
    }
    if (c->sbuf.len > c->sent) {
        struct io_uring_sqe *sqe = get_sqe(s);
        io_uring_prep_send(sqe, c->fd, c->sbuf.data + c->sent, c->sbuf.len - c->sent, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
        c->send_in_flight = true;
        c->refs++;
    }
}

void srv_send_msg(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    if (!c || c->fd < 0 || (c->closing && !c->close_after_send))
        return;
    struct dsd_err err;
    int rc = dsd_ipc_encode(&c->wbuf, m, c->max_frame, &err);
    if (rc == -EMSGSIZE && m->id) {
        srv_send_error(s, c, m->id, DSD_IPC_E_RESULT_TOO_LARGE, "%s", err.msg);
        return;
    }
    if (rc) {
        dsd_log(LOG_ERR, "conn %llu: cannot encode %s: %s", (unsigned long long)c->id,
                dsd_ipc_type_name(m->type), err.msg);
        return;
    }
    s->frames_out++;
    update_backpressure(s, c);
}

void srv_send_fail(struct server *s, struct conn *c, const struct dsd_ipc_fail *fail)
{
    if (!c || c->fd < 0 || (c->closing && !c->close_after_send))
        return;
    struct dsd_err err;
    if (dsd_ipc_encode_fail(&c->wbuf, fail, c->max_frame, &err) == 0) {
        s->frames_out++;
        s->errors_sent++;
    }
    if (dsd_ipc_code_fatal(fail->code) && !c->closing) {
        c->close_after_send = true;
        c->close_deadline_ns = srv_now_ns() + CLOSE_LINGER_S * 1000000000ull;
        c->closing = true;
        session_conn_closed(s, c);
    }
    update_backpressure(s, c);              /* error replies count like any other */
}

void srv_send_error(struct server *s, struct conn *c, uint64_t id, uint32_t code, const char *fmt, ...)
{
    struct dsd_ipc_fail f = { .code = code, .id = id };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f.err.msg, sizeof f.err.msg, fmt, ap);
    va_end(ap);
    srv_send_fail(s, c, &f);
}

/* Starts closing c: its requests are cancelled, no new work is taken; the memory goes once
 * the last io_uring operation on it has completed (shutdown makes them complete). */
void srv_close_conn(struct server *s, struct conn *c)
{
    if (!c->closing) {
        c->closing = true;
        session_conn_closed(s, c);
    }
    c->close_after_send = false;
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
}

static void free_conn(struct server *s, struct conn *c)
{
    struct conn **pp = &s->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    struct uid_use *u = srv_uid(s, c->uid);
    u->conns--;
    if (c->fd >= 0)
        close(c->fd);
    if (c->pending_fd >= 0)
        close(c->pending_fd);
    dsd_ipc_reader_free(&c->reader);
    dsd_ipc_buf_free(&c->held);
    dsd_ipc_buf_free(&c->sbuf);
    dsd_ipc_buf_free(&c->wbuf);
    if (c->has_shm)
        dsd_shm_close(&c->shm);
    free(c->rings);
    free(c->ring_owner);
    if (c->paused)
        dsd_engine_pause_conn(s->p.engine, c->id, false);
    dsd_log(LOG_DEBUG, "conn %llu closed", (unsigned long long)c->id);
    free(c);
}

static void on_accept(struct server *s, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        s->accepting = false;           /* re-armed before the next wait */
    if (cqe->res < 0) {
        if (cqe->res != -ECANCELED)
            dsd_log(LOG_WARNING, "accept: %s", strerror(-cqe->res));
        return;
    }
    int fd = cqe->res;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        close(fd);
        return;
    }
    struct uid_use *u = srv_uid(s, cred.uid);
    if (s->draining || u->conns >= s->p.limits.max_connections_per_uid) {
        /* Say why in a frame, best effort, then close: the connection never starts. */
        struct dsd_ipc_fail f = { .code = s->draining ? DSD_IPC_E_SHUTTING_DOWN : DSD_IPC_E_TOO_MANY_REQUESTS };
        if (s->draining)
            snprintf(f.err.msg, sizeof f.err.msg, "the daemon is shutting down");
        else
            snprintf(f.err.msg, sizeof f.err.msg, "uid %u already has %d connections (max_connections_per_uid)",
                     (unsigned)cred.uid, u->conns);
        struct dsd_ipc_buf b = {0};
        struct dsd_err e;
        if (dsd_ipc_encode_fail(&b, &f, DSD_IPC_HELLO_FRAME, &e) == 0 && send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            /* the client may be gone already */
        }
        dsd_ipc_buf_free(&b);
        close(fd);
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    DSD_CHECK(c != NULL);
    c->id = ++s->next_conn_id;
    c->fd = fd;
    c->uid = cred.uid;
    c->gid = cred.gid;
    c->pid = cred.pid;
    c->pending_fd = -1;
    c->last_io_ns = srv_now_ns();
    c->max_frame = DSD_IPC_HELLO_FRAME;
    dsd_ipc_reader_init(&c->reader, DSD_IPC_HELLO_FRAME);
    c->next = s->conns;
    s->conns = c;
    u->conns++;
    s->conns_total++;
    dsd_log(LOG_DEBUG, "conn %llu from pid %d uid %u", (unsigned long long)c->id, (int)cred.pid, (unsigned)cred.uid);
    arm_recv(s, c);
}

static void recycle_buffer(struct server *s, int bid)
{
    io_uring_buf_ring_add(s->br, s->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(N_BUFS), 0);
    io_uring_buf_ring_advance(s->br, 1);
}

/* After the reader consumed bytes: an fd whose stream bytes are all consumed must have been
 * taken by a shm_attach that started among them, unless the frame still being read started
 * there (it decides when it completes). Otherwise: protocol_violation (PROTOCOL.md §4.2). */
static void check_fd(struct server *s, struct conn *c)
{
    if (c->pending_fd < 0 || c->closing || c->reader.offset < c->fd_hi)
        return;
    if (!dsd_ipc_reader_idle(&c->reader) && c->reader.frame_offset >= c->fd_lo &&
        c->reader.frame_offset < c->fd_hi)
        return;
    close(c->pending_fd);
    c->pending_fd = -1;
    srv_send_error(s, c, 0, DSD_IPC_E_PROTOCOL_VIOLATION,
                   "a file descriptor arrived with bytes that do not start a shm_attach frame; "
                   "send the memfd only on the sendmsg whose data begins with shm_attach's length "
                   "prefix");
}

/* Pushes bytes through c's reader and handles each complete frame, until the bytes run out,
 * the connection closes, or its output backs up (c->paused: the caller holds the rest).
 * Returns the bytes consumed. */
static size_t consume(struct server *s, struct conn *c, const uint8_t *p, size_t n)
{
    size_t done = 0;
    while (done < n && !c->closing && !c->paused) {
        size_t used = 0;
        struct dsd_ipc_frame f;
        struct dsd_ipc_fail fail = {0};
        int rc = dsd_ipc_reader_push(&c->reader, p + done, n - done, &used, &f, &fail);
        done += used;
        if (rc < 0) {
            srv_send_fail(s, c, &fail);     /* frame_too_large: fatal */
            break;
        }
        if (rc == 1) {
            s->frames_in++;
            c->frame_has_fd = c->pending_fd >= 0 && f.offset >= c->fd_lo && f.offset < c->fd_hi;
            session_handle_frame(s, c, &f); /* decodes before the buffer is recycled */
            c->frame_has_fd = false;
        }
    }
    check_fd(s, c);
    /* frame_timeout_s: when did the incomplete frame (if any) begin? */
    if (dsd_ipc_reader_idle(&c->reader))
        c->frame_start_ns = 0;
    else if (!c->frame_start_ns || c->frame_start_off != c->reader.frame_offset) {
        c->frame_start_ns = srv_now_ns();
        c->frame_start_off = c->reader.frame_offset;
    }
    return done;
}

/* Keeps received bytes that may not be processed yet: the rest of the buffer in which the
 * output backed up. Nothing more is received until they are processed, so this is at most one
 * buffer; HELD_MAX only guards that invariant. Returns false (and closes) past it. */
static bool hold(struct server *s, struct conn *c, const uint8_t *p, size_t n)
{
    if (c->held_off == c->held.len)
        c->held.len = c->held_off = 0;
    if (c->held.len - c->held_off + n > HELD_MAX || dsd_ipc_buf_append(&c->held, p, n) != 0) {
        dsd_log(LOG_WARNING, "conn %llu: more than %zu bytes arrived after its output backed up; "
                "closing it", (unsigned long long)c->id, HELD_MAX);
        srv_send_error(s, c, 0, DSD_IPC_E_PROTOCOL_VIOLATION,
                       "more than %zu bytes arrived after the daemon stopped reading this connection "
                       "(over 1 MiB of its replies unread); read your replies", HELD_MAX);
        return false;
    }
    if (c->held.len - c->held_off > s->held_max)
        s->held_max = c->held.len - c->held_off;
    return true;
}

/* Reading may resume (output below SEND_LOW): the held bytes go first. */
static void resume_held(struct server *s, struct conn *c)
{
    size_t used = consume(s, c, c->held.data + c->held_off, c->held.len - c->held_off);
    c->held_off += used;
    if (c->closing || c->held_off == c->held.len) {
        dsd_ipc_buf_free(&c->held);
        c->held_off = 0;
    }
}

static void on_recv(struct server *s, struct conn *c, struct io_uring_cqe *cqe)
{
    c->recv_armed = false;
    c->refs--;
    if (cqe->res < 0) {
        if (cqe->res == -ENOBUFS) {
            /* All provided buffers in use: re-armed before the next wait, after they return. */
            return;
        }
        if (!c->closing && cqe->res != -ECANCELED)
            dsd_log(LOG_DEBUG, "conn %llu recv: %s", (unsigned long long)c->id, strerror(-cqe->res));
        srv_close_conn(s, c);
        return;
    }
    if (!(cqe->flags & IORING_CQE_F_BUFFER)) {
        srv_close_conn(s, c);
        return;
    }
    int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    uint8_t *payload = s->bufs + (size_t)bid * BUF_SIZE;
    size_t n = (size_t)cqe->res;
    if (n > BUF_SIZE) {
        recycle_buffer(s, bid);
        srv_close_conn(s, c);
        return;
    }
    struct dsd_ipc_fail fail = {0};
    int fd = -1;
    size_t clen = c->rx_msg.msg_controllen <= sizeof c->rx_control ? c->rx_msg.msg_controllen : 0;
    if (dsd_ipc_cmsg_take_fd(clen ? c->rx_control : NULL, clen, c->rx_msg.msg_flags, &fd, &fail) < 0) {
        recycle_buffer(s, bid);
        srv_send_fail(s, c, &fail);
        return;
    }
    if (fd >= 0) {
        if (c->pending_fd >= 0 || c->closing) {
            close(fd);
            recycle_buffer(s, bid);
            srv_send_error(s, c, 0, DSD_IPC_E_PROTOCOL_VIOLATION,
                           "a second file descriptor arrived before shm_attach took the first");
            return;
        }
        c->pending_fd = fd;
        c->fd_lo = c->rx_bytes;             /* the stream bytes that came with it */
        c->fd_hi = c->rx_bytes + n;
    }
    if (n == 0 && fd < 0) {                 /* end of stream */
        recycle_buffer(s, bid);
        if (!dsd_ipc_reader_idle(&c->reader) || has_held(c))
            dsd_log(LOG_DEBUG, "conn %llu closed in the middle of a frame", (unsigned long long)c->id);
        srv_close_conn(s, c);
        return;
    }
    s->bytes_in += n;
    c->rx_bytes += n;
    c->last_io_ns = srv_now_ns();
    if (c->closing) {
        recycle_buffer(s, bid);
        return;
    }
    /* In order: while bytes are held (or the output is backed up), new bytes queue behind. */
    size_t used = c->paused || has_held(c) ? 0 : consume(s, c, payload, n);
    if (used < n && !c->closing)
        hold(s, c, payload + used, n - used);
    recycle_buffer(s, bid);
}

static void on_send(struct server *s, struct conn *c, struct io_uring_cqe *cqe)
{
    c->send_in_flight = false;
    c->refs--;
    if (cqe->res < 0) {
        srv_close_conn(s, c);
        return;
    }
    c->sent += (size_t)cqe->res;
    s->bytes_out += (uint64_t)cqe->res;
    if (cqe->res > 0)
        c->last_io_ns = srv_now_ns();
    if (c->sent >= c->sbuf.len) {
        c->sbuf.len = 0;
        c->sent = 0;
        if (c->sbuf.cap > BUF_KEEP)
            dsd_ipc_buf_free(&c->sbuf);
    }
    update_backpressure(s, c);
}

/* ---- engine wakeups, signals, timer --------------------------------------------------- */

static void arm_poll(struct server *s, int fd, enum op op)
{
    struct io_uring_sqe *sqe = get_sqe(s);
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag(s, op));
}

static void arm_accept(struct server *s)
{
    if (s->accepting || s->draining || s->listen_fd < 0)
        return;
    struct io_uring_sqe *sqe = get_sqe(s);
    io_uring_prep_multishot_accept(sqe, s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(s, OP_ACCEPT));
    s->accepting = true;
}

static void check_engine_state(struct server *s)
{
    enum dsd_engine_state st = dsd_engine_state(s->p.engine);
    if (st == DSD_ENGINE_READY && !s->ready_notified) {
        s->ready_notified = true;
        const struct dsd_model_config *c = dsd_engine_model_config(s->p.engine);
        dsd_log(LOG_NOTICE, "ready: %s, %d+%d layers, %d KV pages, serving", s->p.model_name,
                c->num_hidden_layers, c->num_nextn_predict_layers, dsd_engine_kv_pages(s->p.engine));
        dsd_notify_ready("serving %s", s->p.model_name);
    } else if (st == DSD_ENGINE_FAILED && !s->stop) {
        dsd_log(LOG_ERR, "loading %s failed: %s", s->p.model_name, dsd_engine_failure(s->p.engine));
        dsd_notify_status("failed: %s", dsd_engine_failure(s->p.engine));
        s->stop = true;
    }
}

static void start_drain(struct server *s, const char *why)
{
    if (s->draining)
        return;
    s->draining = true;
    s->drain_deadline_ns = srv_now_ns() + (uint64_t)s->p.limits.drain_timeout_s * 1000000000ull;
    dsd_log(LOG_NOTICE, "%s: draining %d request(s), at most %d s", why, session_inflight_total(s),
            s->p.limits.drain_timeout_s);
    dsd_notify_stopping("draining: %d request(s) in flight", session_inflight_total(s));
    if (s->listen_fd >= 0) {
        struct io_uring_sqe *sqe = get_sqe(s);
        io_uring_prep_cancel64(sqe, tag(s, OP_ACCEPT), 0);
        io_uring_sqe_set_data64(sqe, tag(NULL, OP_IGNORE));
    }
}

static void on_signal(struct server *s)
{
    struct signalfd_siginfo si;
    while (read(s->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            dsd_notify_reloading();
            struct dsd_server_limits l = s->p.limits;
            struct dsd_err err = {{0}};
            if (!s->p.reload)
                dsd_log(LOG_NOTICE, "SIGHUP: nothing to reload");
            else if (s->p.reload(s->p.reload_user, &l, &err) == 0) {
                l.max_frame = s->p.limits.max_frame;        /* not reloadable */
                l.max_shm_bytes = s->p.limits.max_shm_bytes;
                s->p.limits = l;
                dsd_log(LOG_NOTICE, "configuration reloaded");
            } else {
                dsd_log(LOG_ERR, "reload failed, keeping the running configuration: %s", err.msg);
            }
            dsd_notify_ready("serving %s", s->p.model_name);
        } else {
            start_drain(s, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        }
    }
}

/* The per-connection clocks (every TIMER_MS): a fatal error frame that could not be sent,
 * a socket backed up past stall_timeout_s, a frame started and not finished within
 * frame_timeout_s, a connection idle for idle_timeout_s. */
static void check_conn_timeouts(struct server *s, uint64_t now)
{
    const struct dsd_server_limits *l = &s->p.limits;
    uint64_t stall = (uint64_t)l->stall_timeout_s * 1000000000ull;
    uint64_t frame = (uint64_t)l->frame_timeout_s * 1000000000ull;
    uint64_t idle = (uint64_t)l->idle_timeout_s * 1000000000ull;
    for (struct conn *c = s->conns; c; c = c->next) {
        if (c->close_after_send) {
            if (now > c->close_deadline_ns) {
                dsd_log(LOG_DEBUG, "conn %llu: its last error frame was not read in %d s; closing",
                        (unsigned long long)c->id, CLOSE_LINGER_S);
                srv_close_conn(s, c);
            }
            continue;
        }
        if (c->closing)
            continue;
        if (c->paused && c->requests && now - c->paused_since_ns > stall) {
            dsd_log(LOG_NOTICE, "conn %llu: replies unread for %d s (stall_timeout_s); cancelling its "
                    "requests", (unsigned long long)c->id, l->stall_timeout_s);
            s->socket_stalls++;
            session_socket_stalled(s, c);
        }
        if (!c->paused && c->frame_start_ns && frame && now - c->frame_start_ns > frame) {
            const struct dsd_ipc_reader *r = &c->reader;
            s->conns_timed_out++;
            if (r->hdr_have < DSD_IPC_PREFIX_BYTES)
                srv_send_error(s, c, 0, DSD_IPC_E_FRAME_TIMEOUT,
                               "a frame was started and only %u of its 4 length bytes arrived in %d s "
                               "(frame_timeout_s); closing", r->hdr_have, l->frame_timeout_s);
            else
                srv_send_error(s, c, 0, DSD_IPC_E_FRAME_TIMEOUT,
                               "a frame was started and only %u of its %u bytes arrived in %d s "
                               "(frame_timeout_s); closing", r->have, r->need, l->frame_timeout_s);
            continue;
        }
        if (idle && c->n_inflight == 0 && now - c->last_io_ns > idle) {
            s->conns_timed_out++;
            srv_send_error(s, c, 0, DSD_IPC_E_IDLE_TIMEOUT,
                           "no request and no bytes either way for %d s (idle_timeout_s); closing",
                           l->idle_timeout_s);
        }
    }
}

static void on_timer(struct server *s)
{
    uint64_t expirations;
    if (read(s->timer_fd, &expirations, sizeof expirations) < 0) {
        /* nothing to read: spurious wakeup */
    }
    uint64_t now = srv_now_ns();
    enum dsd_engine_state st = dsd_engine_state(s->p.engine);
    if (st == DSD_ENGINE_LOADING) {
        /* keep pushing the start timeout while loading makes progress */
        dsd_notify_progress((unsigned)(100.0 * dsd_engine_progress(s->p.engine)), 30000000ull, "loading %s",
                            s->p.model_name);
    }
    /* WATCHDOG=1 only while the engine makes progress (a step finished, or it is idle and
     * says so) within the watchdog interval: a wedged engine gets the unit restarted. */
    if (s->watchdog_usec) {
        struct dsd_engine_stats es;
        dsd_engine_stats(s->p.engine, &es);
        bool alive = st != DSD_ENGINE_READY || now - es.last_step_ns < s->watchdog_usec * 1000ull / 2;
        if (alive && now - s->last_watchdog_ns > s->watchdog_usec * 1000ull / 4) {
            dsd_notify_watchdog();
            s->last_watchdog_ns = now;
        }
    }
    session_check_stalls(s);
    check_conn_timeouts(s, now);
    if (s->draining) {
        int n = session_inflight_total(s);
        if (n == 0)
            s->stop = true;
        else if (now >= s->drain_deadline_ns) {
            dsd_log(LOG_WARNING, "drain timeout: cancelling %d request(s)", n);
            session_drain_cancel_all(s);
            s->drain_deadline_ns = UINT64_MAX;      /* their DONE events end the drain */
        }
    }
}

/* ---- the loop ----------------------------------------------------------------------- */

static int setup(struct server *s, struct dsd_err *err)
{
    struct io_uring_params up = { .flags = IORING_SETUP_SUBMIT_ALL };
    int rc = io_uring_queue_init_params(RING_ENTRIES, &s->ring, &up);
    if (rc < 0)
        return dsd_errf(err, rc, "io_uring_queue_init: %s", strerror(-rc));
    /* Provided-buffer ring set up by hand: Debian 12's liburing 2.3 has no io_uring_setup_buf_ring. */
    size_t ring_bytes = N_BUFS * sizeof(struct io_uring_buf);
    if (posix_memalign((void **)&s->br, 4096, ring_bytes < 4096 ? 4096 : ring_bytes) != 0 ||
        posix_memalign((void **)&s->bufs, 4096, (size_t)N_BUFS * BUF_SIZE) != 0)
        return dsd_errf(err, -ENOMEM, "out of memory for receive buffers");
    struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)s->br, .ring_entries = N_BUFS, .bgid = BUF_GROUP };
    if ((rc = io_uring_register_buf_ring(&s->ring, &reg, 0)) < 0)
        return dsd_errf(err, rc, "io_uring_register_buf_ring: %s", strerror(-rc));
    io_uring_buf_ring_init(s->br);
    for (int i = 0; i < N_BUFS; i++)
        io_uring_buf_ring_add(s->br, s->bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(N_BUFS), i);
    io_uring_buf_ring_advance(s->br, N_BUFS);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    s->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->signal_fd < 0 || s->timer_fd < 0)
        return dsd_errf(err, -errno, "signalfd/timerfd: %s", strerror(errno));
    struct itimerspec its = { .it_interval = { 0, TIMER_MS * 1000000L }, .it_value = { 0, TIMER_MS * 1000000L } };
    timerfd_settime(s->timer_fd, 0, &its, NULL);
    arm_poll(s, s->wake_fd, OP_WAKE);
    arm_poll(s, s->signal_fd, OP_SIGNAL);
    arm_poll(s, s->timer_fd, OP_TIMER);
    arm_accept(s);
    return 0;
}

int dsd_server_run(const struct dsd_server_params *p, struct dsd_err *err)
{
    struct server *s = calloc(1, sizeof *s);
    if (!s)
        return dsd_errf(err, -ENOMEM, "out of memory");
    s->p = *p;
    s->listen_fd = p->listen_fd;
    s->wake_fd = p->wake_fd;
    s->signal_fd = s->timer_fd = -1;
    s->start_ns = srv_now_ns();
    s->watchdog_usec = dsd_notify_watchdog_usec();
    int rc = setup(s, err);
    if (rc) {
        free(s);
        return rc;
    }
    dsd_log(LOG_INFO, "listening; loading %s", p->model_name);
    check_engine_state(s);
    while (!s->stop) {
        /* before sleeping: re-arm what ended, queue every pending send */
        arm_accept(s);
        for (struct conn *c = s->conns, *next; c; c = next) {
            next = c->next;
            if (c->closing && !c->close_after_send && c->refs == 0) {
                free_conn(s, c);
                continue;
            }
            if (c->close_after_send && !c->send_in_flight && c->sbuf.len == c->sent && c->wbuf.len == 0) {
                srv_close_conn(s, c);
                continue;
            }
            if (!c->closing && !c->paused && has_held(c))
                resume_held(s, c);
            flush_conn(s, c);
            arm_recv(s, c);
        }
        rc = io_uring_submit_and_wait(&s->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -ETIME) {
            dsd_log(LOG_ERR, "io_uring_submit_and_wait: %s", strerror(-rc));
            break;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&s->ring, head, cqe) {
            seen++;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            enum op op = (enum op)(ud & 7);
            void *ptr = (void *)(uintptr_t)(ud & ~(uint64_t)7);
            switch (op) {
            case OP_ACCEPT:
                on_accept(s, cqe);
                break;
            case OP_RECV:
                on_recv(s, ptr, cqe);
                break;
            case OP_SEND:
                on_send(s, ptr, cqe);
                break;
            case OP_WAKE: {
                uint64_t v;
                if (read(s->wake_fd, &v, sizeof v) < 0) {
                    /* already drained by an earlier completion */
                }
                check_engine_state(s);
                session_handle_engine_events(s);
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    arm_poll(s, s->wake_fd, OP_WAKE);
                break;
            }
            case OP_SIGNAL:
                on_signal(s);
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    arm_poll(s, s->signal_fd, OP_SIGNAL);
                break;
            case OP_TIMER:
                on_timer(s);
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    arm_poll(s, s->timer_fd, OP_TIMER);
                break;
            default:
                break;
            }
        }
        io_uring_cq_advance(&s->ring, seen);
    }
    dsd_log(LOG_NOTICE, "stopped serving");
    /* Close what is left; the engine is stopped by the caller. */
    for (struct conn *c = s->conns; c; c = c->next)
        if (!c->closing) {
            c->closing = true;
            session_conn_closed(s, c);
        }
    while (s->conns)
        free_conn(s, s->conns);
    for (int i = 0; i < REQ_TABLE_SIZE; i++)
        while (s->req_table[i]) {
            struct io_request *r = s->req_table[i];
            s->req_table[i] = r->next_in_table;
            free(r);
        }
    while (s->uids) {
        struct uid_use *u = s->uids;
        s->uids = u->next;
        free(u);
    }
    io_uring_queue_exit(&s->ring);
    close(s->signal_fd);
    close(s->timer_fd);
    free(s->br);
    free(s->bufs);
    free(s);
    return 0;
}
