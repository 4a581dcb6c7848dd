/*
 * client_lib/src/client_io.c: the socket. Sending whole frames under the send lock, the
 * reader role that reads for every waiting thread, dispatching each decoded frame to the
 * request it belongs to, and the connection's death.
 *
 * Why a reader role instead of a background thread: a library that starts threads surprises
 * its host (fork, signal masks, thread counts, shutdown order), and a blocking client that
 * only ever waits in the library does not need one. Whichever thread waits first reads for
 * everyone; the others sleep on the condition variable and are woken when their frame
 * arrives or when the role becomes free. See docs/CLIENT.md.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "ipc_fd.h"

int64_t client_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t client_deadline(int32_t timeout_ms)
{
    if (timeout_ms < 0)
        return INT64_MAX;
    return client_now_ns() + (int64_t)timeout_ms * 1000000;
}

/* Milliseconds left until deadline, for poll(): -1 forever, 0 when passed. */
static int poll_ms(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return -1;
    int64_t left = deadline - client_now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > 1000000000 ? 1000000000 : (int)ms;
}

/* ---- the in-flight table --------------------------------------------------------------- */

void client_table_add(struct dsd_client *c, struct dsd_client_request *r)
{
    struct dsd_client_request **b = &c->table[r->id & (CLIENT_TABLE_SIZE - 1)];
    r->hnext = *b;
    *b = r;
    r->in_table = true;
    c->n_inflight++;
}

void client_table_remove(struct dsd_client *c, struct dsd_client_request *r)
{
    if (!r->in_table)
        return;
    struct dsd_client_request **p = &c->table[r->id & (CLIENT_TABLE_SIZE - 1)];
    while (*p && *p != r)
        p = &(*p)->hnext;
    if (*p)
        *p = r->hnext;
    r->hnext = NULL;
    r->in_table = false;
    c->n_inflight--;
}

struct dsd_client_request *client_table_find(struct dsd_client *c, uint64_t id)
{
    struct dsd_client_request *r = c->table[id & (CLIENT_TABLE_SIZE - 1)];
    while (r && r->id != id)
        r = r->hnext;
    return r;
}

void client_msg_free(struct client_msg *q)
{
    if (!q)
        return;
    dsd_ipc_msg_free(&q->m);
    free(q->fail_text);
    free(q);
}

void client_request_fail(struct dsd_client_request *r, int code, uint32_t daemon_code,
                         const char *fmt, ...)
{
    if (r->fail)
        return;
    r->fail = code;
    r->fail_err.code = code;
    r->fail_err.daemon_code = daemon_code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->fail_err.message, sizeof r->fail_err.message, fmt, ap);
    va_end(ap);
}

void client_release_span(struct dsd_client *c, struct dsd_client_request *r)
{
    if (!r->span_held)
        return;
    for (uint32_t i = 0; i < c->n_spans; i++) {
        if (c->spans[i].off == r->span_off) {
            memmove(&c->spans[i], &c->spans[i + 1], (c->n_spans - i - 1) * sizeof *c->spans);
            c->n_spans--;
            break;
        }
    }
    r->span_held = false;
}

void client_ring_settle(struct dsd_client *c, struct dsd_client_request *r)
{
    if (r->ring >= 0 && (r->owner_done || r->zombie) && !r->in_table) {
        c->ring_busy[r->ring] = 0;
        r->ring = -1;
        r->ring_ready = false;
    }
}

void client_request_retire(struct dsd_client *c, struct dsd_client_request *r)
{
    client_table_remove(c, r);
    client_release_span(c, r);
    client_ring_settle(c, r);
    if (r->zombie) {
        /* The caller holds a reference of its own (it is a waiting thread with a request, the
         * user's handle, or the connect path), so this never drops the last one. */
        (void)client_request_destroy_locked(c, r);
    }
}

/* ---- the connection's death ------------------------------------------------------------ */

void client_die(struct dsd_client *c, int code, uint32_t daemon_code, const char *fmt, ...)
{
    if (atomic_load(&c->dead))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->dead_err.message, sizeof c->dead_err.message, fmt, ap);
    va_end(ap);
    c->dead_err.code = code;
    c->dead_err.daemon_code = daemon_code;
    atomic_store(&c->dead, code);
    /* Wakes a reader blocked in poll() and tells the daemon to cancel everything of ours. The
     * fd itself stays open until the client is destroyed, so no other thread can find its
     * number reused under it. */
    shutdown(c->fd, SHUT_RDWR);
    for (uint32_t b = 0; b < CLIENT_TABLE_SIZE; b++) {
        struct dsd_client_request *r = c->table[b];
        while (r) {
            struct dsd_client_request *next = r->hnext;
            client_request_fail(r, code, daemon_code, "%s", c->dead_err.message);
            client_request_retire(c, r);
            r = next;
        }
    }
    pthread_cond_broadcast(&c->cond);
}

/* ---- sending --------------------------------------------------------------------------- */

int client_send(struct dsd_client *c, const struct dsd_ipc_buf *frame, int fd,
                struct dsd_client_error *e)
{
    int64_t deadline = client_deadline(c->timeout_ms);
    size_t off = 0;
    int rc = 0;
    pthread_mutex_lock(&c->send_lock);
    while (off < frame->len) {
        int dead = atomic_load(&c->dead);
        if (dead) {
            pthread_mutex_lock(&c->lock);
            rc = client_seterr(e, dead, c->dead_err.daemon_code, "%s", c->dead_err.message);
            pthread_mutex_unlock(&c->lock);
            break;
        }
        ssize_t n;
        if (off == 0 && fd >= 0) {
            struct dsd_err err;
            n = dsd_ipc_send_fd(c->fd, frame->data, frame->len, fd, &err);
            if (n < 0) {
                errno = (int)-n;
                n = -1;
            }
        } else {
            n = send(c->fd, frame->data + off, frame->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int pr = poll(&p, 1, poll_ms(deadline));
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr == 0) {
                if (off == 0) {
                    rc = client_seterr(e, -ETIMEDOUT, 0,
                                       "sending to deepseekd: the socket stayed full for %d ms "
                                       "(the daemon is not reading)", c->timeout_ms);
                    break;
                }
                /* Half a frame is on the wire: the stream cannot be continued. */
                pthread_mutex_lock(&c->lock);
                client_die(c, -ETIMEDOUT, 0,
                           "sending to deepseekd stalled for %d ms in the middle of a frame; "
                           "the connection was closed", c->timeout_ms);
                pthread_mutex_unlock(&c->lock);
                rc = client_seterr(e, -ETIMEDOUT, 0, "%s", c->dead_err.message);
                break;
            }
            continue;
        }
        int err = n < 0 ? errno : EPIPE;
        pthread_mutex_lock(&c->lock);
        client_die(c, -ECONNRESET, 0, "deepseekd closed the connection (send: %s)",
                   strerror(err));
        rc = client_seterr(e, -ECONNRESET, 0, "%s", c->dead_err.message);
        pthread_mutex_unlock(&c->lock);
        break;
    }
    pthread_mutex_unlock(&c->send_lock);
    return rc;
}

int client_send_msg(struct dsd_client *c, const struct dsd_ipc_msg *m, int fd,
                    struct dsd_client_error *e)
{
    struct dsd_ipc_buf buf = {0};
    struct dsd_err err;
    int rc = dsd_ipc_encode(&buf, m, c->max_frame, &err);
    if (rc < 0) {
        dsd_ipc_buf_free(&buf);
        return client_seterr(e, rc, 0, "%s", err.msg);
    }
    rc = client_send(c, &buf, fd, e);
    dsd_ipc_buf_free(&buf);
    return rc;
}

int client_send_simple(struct dsd_client *c, enum dsd_ipc_type type, uint64_t id)
{
    struct dsd_ipc_msg m = {.type = type, .id = id};
    return client_send_msg(c, &m, -1, NULL);
}

/* ---- dispatch: one frame to its request (c->lock held) ----------------------------------- */

static bool is_terminal(const struct dsd_client_request *r, enum dsd_ipc_type t)
{
    return t == DSD_IPC_ERROR || (r->kind == CLIENT_REQ_GENERATE ? t == DSD_IPC_DONE
                                                                 : t == r->expect);
}

static void enqueue(struct dsd_client_request *r, struct client_msg *q)
{
    q->next = NULL;
    if (r->qtail)
        r->qtail->next = q;
    else
        r->qhead = q;
    r->qtail = q;
}

static void dispatch(struct dsd_client *c, struct client_msg *q)
{
    struct dsd_ipc_msg *m = &q->m;
    if (m->type == DSD_IPC_NONE) {
        struct dsd_client_request *r = q->fail_id ? client_table_find(c, q->fail_id) : NULL;
        if (r && !r->zombie) {
            /* The request fails now but stays in the table, its ring bound, until the
             * daemon's own end arrives; its owner sends the cancel (owner_finish). */
            client_request_fail(r, -EPROTO, 0, "deepseekd sent a malformed frame for this "
                                "request (%s): %s", dsd_ipc_code_name(q->fail_code),
                                q->fail_text ? q->fail_text : "");
        } else if (!r) {
            client_die(c, -EPROTO, 0, "deepseekd sent a malformed frame (%s): %s",
                       dsd_ipc_code_name(q->fail_code), q->fail_text ? q->fail_text : "");
        }
        client_msg_free(q);
        return;
    }
    if (m->id == 0) {
        /* Errors about the connection. A non-fatal one still means a frame of ours was lost
         * without an id to pin it on, so some request would wait forever: end them all. */
        if (m->type == DSD_IPC_ERROR) {
            const char *name = dsd_ipc_code_name(m->error.code);
            client_die(c, client_errno_for_code(m->error.code), m->error.code,
                       "deepseekd ended the connection (%s, code %u): %s",
                       name ? name : "unknown error", m->error.code,
                       m->error.msg.ptr ? m->error.msg.ptr : "");
        } else {
            client_die(c, -EPROTO, 0, "deepseekd sent a '%s' frame with id 0",
                       dsd_ipc_type_name(m->type));
        }
        client_msg_free(q);
        return;
    }
    struct dsd_client_request *r = client_table_find(c, m->id);
    if (!r) {                               /* a request already given up on: drop it */
        client_msg_free(q);
        return;
    }
    bool terminal = is_terminal(r, m->type);
    bool fatal = m->type == DSD_IPC_ERROR && (m->error.fatal || dsd_ipc_code_fatal(m->error.code));
    uint32_t ecode = m->type == DSD_IPC_ERROR ? m->error.code : 0;
    unsigned long long mid = (unsigned long long)m->id;
    if (r->zombie || r->fail) {
        /* Nobody will read it: wait only for the daemon's end of the request. */
        if (terminal)
            client_request_retire(c, r);
        client_msg_free(q);
        if (fatal)
            client_die(c, client_errno_for_code(ecode), ecode,
                       "deepseekd closed the connection after a fatal error on request %llu",
                       mid);
        return;
    }
    if (r->kind == CLIENT_REQ_CALL) {
        if (!terminal) {
            client_request_fail(r, -EPROTO, 0, "deepseekd answered a '%s' request with '%s'",
                                dsd_ipc_type_name(r->expect == DSD_IPC_HELLO_OK ? DSD_IPC_HELLO
                                                                                 : r->expect),
                                dsd_ipc_type_name(m->type));
            client_request_retire(c, r);
            client_msg_free(q);
            return;
        }
        enqueue(r, q);
        client_request_retire(c, r);
    } else {
        switch (m->type) {
        case DSD_IPC_ACCEPTED:
            if (r->accepted) {
                client_request_fail(r, -EPROTO, 0, "deepseekd sent 'accepted' twice");
                break;
            }
            r->accepted = true;
            r->prompt_tokens = m->accepted.prompt_tokens;
            client_release_span(c, r);      /* the daemon has its copy of the prompt now */
            if (r->ring >= 0) {
                if (!m->accepted.has_ring_start) {
                    client_request_fail(r, -EPROTO, 0, "deepseekd accepted ring output "
                                        "without 'ring_start'");
                        break;
                }
                dsd_ring_consumer_init(&r->cons, &c->shm, (uint32_t)r->ring,
                                       m->accepted.ring_start);
                /* Everything before ring_start belongs to earlier requests (a cancelled one
                 * may have left tokens unread): publish it as consumed now, or the daemon
                 * would count them against this request's room and stall it for good. */
                atomic_store_explicit(&r->cons.ring->cons_pos, m->accepted.ring_start,
                                      memory_order_release);
                r->ring_ready = true;
            }
            break;
        case DSD_IPC_TOKENS:
        case DSD_IPC_DONE:
            if (!r->accepted) {
                client_request_fail(r, -EPROTO, 0, "deepseekd sent '%s' before 'accepted'",
                                    dsd_ipc_type_name(m->type));
                if (terminal)
                    client_request_retire(c, r);
                break;
            }
            enqueue(r, q);
            q = NULL;
            if (terminal)
                client_request_retire(c, r);    /* the ring stays until its owner is done */
            break;
        case DSD_IPC_ERROR:
            if (r->accepted) {
                /* After accepted every request ends with `done` (PROTOCOL.md §4.3). */
                client_request_fail(r, client_errno_for_code(m->error.code), m->error.code,
                                    "deepseekd: %s", m->error.msg.ptr ? m->error.msg.ptr : "");
                client_request_retire(c, r);
                break;
            }
            enqueue(r, q);
            q = NULL;
            client_request_retire(c, r);
            break;
        default:
            client_request_fail(r, -EPROTO, 0, "deepseekd sent '%s' for a generate request",
                                dsd_ipc_type_name(m->type));
            break;
        }
        client_msg_free(q);
    }
    if (fatal)
        client_die(c, client_errno_for_code(ecode), ecode,
                   "deepseekd closed the connection after a fatal error on request %llu", mid);
}

/* ---- the reader role --------------------------------------------------------------------- */

/* Decodes one frame body into a queued message (never fails: a bad frame becomes a message
 * of type NONE carrying the reason; only ENOMEM leaves NULL). */
static struct client_msg *decode_frame(const struct dsd_ipc_frame *f)
{
    struct client_msg *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    struct dsd_ipc_fail fail = {0};
    int rc = dsd_ipc_decode(f->body, f->len, DSD_IPC_TO_CLIENT, &q->m, &fail);
    if (rc == -ENOMEM) {
        free(q);
        return NULL;
    }
    if (rc < 0) {
        q->m.type = DSD_IPC_NONE;
        q->fail_code = fail.code;
        q->fail_id = fail.id;
        q->fail_text = strdup(fail.err.msg);
    }
    return q;
}

/* Called with c->lock held and the role taken; drops the lock while it reads. */
static int read_round(struct dsd_client *c, int64_t deadline)
{
    int fd = c->fd;
    pthread_mutex_unlock(&c->lock);

    struct client_msg *head = NULL, **tail = &head;
    int rc = 0;
    char why[DSD_ERR_MSG_MAX] = "";
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, poll_ms(deadline));
    if (pr == 0) {
        rc = -ETIMEDOUT;
    } else if (pr > 0) {
        ssize_t n = read(fd, c->rbuf, CLIENT_READ_CHUNK);
        if (n == 0) {
            rc = -ECONNRESET;
            snprintf(why, sizeof why, "deepseekd closed the connection%s",
                     dsd_ipc_reader_idle(&c->reader) ? "" : " in the middle of a frame");
        } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
            rc = -ECONNRESET;
            snprintf(why, sizeof why, "reading from deepseekd: %s", strerror(errno));
        }
        size_t off = 0;
        while (n > 0 && off < (size_t)n && rc == 0) {
            size_t used;
            struct dsd_ipc_frame f;
            struct dsd_ipc_fail fail;
            int fr = dsd_ipc_reader_push(&c->reader, c->rbuf + off, (size_t)n - off, &used, &f,
                                         &fail);
            off += used;
            if (fr < 0) {
                rc = fr == -ENOMEM ? -ENOMEM : -EPROTO;
                if (fail.code == DSD_IPC_E_FRAME_TOO_LARGE)
                    snprintf(why, sizeof why, "deepseekd announced a frame of %u bytes, above "
                             "the negotiated limit of %u: protocol violation, connection "
                             "closed", c->reader.dead_len, c->reader.max_frame);
                else
                    snprintf(why, sizeof why, "reading from deepseekd: %s", fail.err.msg);
            } else if (fr == 1) {
                struct client_msg *q = decode_frame(&f);
                if (!q) {
                    rc = -ENOMEM;
                    snprintf(why, sizeof why, "out of memory decoding a frame from deepseekd");
                    break;
                }
                *tail = q;
                tail = &q->next;
            }
        }
    }

    pthread_mutex_lock(&c->lock);
    c->reading = false;
    while (head) {
        struct client_msg *q = head;
        head = q->next;
        q->next = NULL;
        if (atomic_load(&c->dead))
            client_msg_free(q);
        else
            dispatch(c, q);
    }
    if (rc < 0 && rc != -ETIMEDOUT)
        client_die(c, rc, 0, "%s", why);
    pthread_cond_broadcast(&c->cond);
    return rc == -ETIMEDOUT ? -ETIMEDOUT : 0;
}

int client_wait(struct dsd_client *c, struct dsd_client_request *r, int64_t deadline)
{
    for (;;) {
        if (r->qhead || r->fail)
            return 0;
        if (!r->in_table && !r->fail) {
            /* Cannot happen for a live request; guard against waiting forever anyway. */
            client_request_fail(r, -EPROTO, 0, "internal: waiting on a request that is not "
                                "in flight");
            return 0;
        }
        if (!c->reading) {
            c->reading = true;
            if (read_round(c, deadline) == -ETIMEDOUT && !r->qhead && !r->fail)
                return -ETIMEDOUT;
            continue;
        }
        if (deadline == INT64_MAX) {
            pthread_cond_wait(&c->cond, &c->lock);
        } else {
            struct timespec ts = {.tv_sec = deadline / 1000000000,
                                  .tv_nsec = deadline % 1000000000};
            if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT &&
                !r->qhead && !r->fail)
                return -ETIMEDOUT;
        }
    }
}
