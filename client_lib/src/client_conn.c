/*
 * client_lib/src/client_conn.c: connecting (socket, hello, shared memory), the lifetime of
 * the client and of request handles, and the one-request-one-reply call used by hello,
 * shm_attach, info, stats, health, tokenize and detokenize.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"

#define CLIENT_VERSION_STRING "0.1.0"

DSD_CLIENT_API const char *dsd_client_version(void)
{
    return CLIENT_VERSION_STRING;
}

DSD_CLIENT_API struct dsd_client_params dsd_client_default_params(void)
{
    return (struct dsd_client_params){
        .socket_path = NULL,
        .client_name = NULL,
        .timeout_ms = 30000,
        .max_frame = 0,
        .shm_ring_count = 64,
        .shm_ring_capacity = 4096,
        .shm_prompt_capacity = 262144,
        .shm_prompt_min_tokens = 2048,
        .use_shm = true,
    };
}

/* ---- request handles -------------------------------------------------------------------- */

struct dsd_client_request *client_request_new(struct dsd_client *c, enum client_req_kind kind,
                                              struct dsd_client_error *e)
{
    struct dsd_client_request *r = calloc(1, sizeof *r);
    if (!r) {
        client_seterr(e, -ENOMEM, 0, "out of memory for a request");
        return NULL;
    }
    r->c = c;
    r->kind = kind;
    r->ring = -1;
    pthread_mutex_lock(&c->lock);
    int dead = atomic_load(&c->dead);
    if (dead) {
        client_seterr(e, dead, c->dead_err.daemon_code, "%s", c->dead_err.message);
        pthread_mutex_unlock(&c->lock);
        free(r);
        return NULL;
    }
    r->id = c->next_id++;
    c->refs++;
    client_table_add(c, r);
    pthread_mutex_unlock(&c->lock);
    return r;
}

static void request_scratch_free(struct dsd_client_request *r)
{
    dsd_ipc_msg_free(&r->cur);
    free(r->ids);
    free(r->tools);
    free(r->lps);
    free(r->tops);
}

bool client_request_destroy_locked(struct dsd_client *c, struct dsd_client_request *r)
{
    while (r->qhead) {
        struct client_msg *q = r->qhead;
        r->qhead = q->next;
        client_msg_free(q);
    }
    r->qtail = NULL;
    request_scratch_free(r);
    free(r);
    return --c->refs == 0;
}

void client_destroy(struct dsd_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    dsd_shm_close(&c->shm);
    dsd_ipc_reader_free(&c->reader);
    dsd_ipc_msg_free(&c->hello);
    free(c->rbuf);
    free(c->ring_busy);
    free(c->spans);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->send_lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

DSD_CLIENT_API void dsd_client_request_free(struct dsd_client_request *r)
{
    if (!r)
        return;
    struct dsd_client *c = r->c;
    pthread_mutex_lock(&c->lock);
    r->owner_done = true;
    if (r->in_table) {
        /* The daemon still owes frames for this id (and may write its ring): keep the record
         * until its end arrives, so the id and the ring are not reused too early. */
        bool send_cancel = r->kind == CLIENT_REQ_GENERATE && !r->cancel_sent;
        r->cancel_sent = true;
        r->zombie = true;
        while (r->qhead) {
            struct client_msg *q = r->qhead;
            r->qhead = q->next;
            client_msg_free(q);
        }
        r->qtail = NULL;
        uint64_t id = r->id;
        /* The zombie's reference may go (its `done` arriving, or dsd_client_free() from
         * another thread) while we send: hold one of our own until the send is over. */
        c->refs++;
        pthread_mutex_unlock(&c->lock);
        if (send_cancel)
            client_send_simple(c, DSD_IPC_CANCEL, id);
        pthread_mutex_lock(&c->lock);
        bool last = --c->refs == 0;
        pthread_mutex_unlock(&c->lock);
        if (last)
            client_destroy(c);
        return;
    }
    client_release_span(c, r);
    client_ring_settle(c, r);
    bool last = client_request_destroy_locked(c, r);
    pthread_mutex_unlock(&c->lock);
    if (last)
        client_destroy(c);
}

/* ---- one request, one reply ------------------------------------------------------------- */

int client_call(struct dsd_client *c, struct dsd_ipc_msg *m, enum dsd_ipc_type expect, int fd,
                struct dsd_ipc_msg *ret_msg, struct dsd_client_error *e)
{
    memset(ret_msg, 0, sizeof *ret_msg);
    struct dsd_client_request *r = client_request_new(c, CLIENT_REQ_CALL, e);
    if (!r)
        return e ? e->code : -ENOMEM;
    r->expect = expect;
    m->id = r->id;
    int64_t deadline = client_deadline(c->timeout_ms);
    int rc = client_send_msg(c, m, fd, e);
    if (rc == 0) {
        pthread_mutex_lock(&c->lock);
        rc = client_wait(c, r, deadline);
        if (rc == -ETIMEDOUT) {
            client_seterr(e, rc, 0, "no reply from deepseekd to '%s' within %d ms",
                          dsd_ipc_type_name(m->type), c->timeout_ms);
        } else if (r->qhead) {
            struct client_msg *q = r->qhead;
            r->qhead = q->next;
            if (!r->qhead)
                r->qtail = NULL;
            if (q->m.type == DSD_IPC_ERROR) {
                rc = client_error_from_msg(e, &q->m.error);
            } else {
                *ret_msg = q->m;            /* the message moves out with its arena */
                memset(&q->m, 0, sizeof q->m);
            }
            client_msg_free(q);
        } else {
            rc = client_seterr(e, r->fail, r->fail_err.daemon_code, "%s", r->fail_err.message);
        }
        pthread_mutex_unlock(&c->lock);
    }
    dsd_client_request_free(r);
    return rc;
}

/* ---- connecting ------------------------------------------------------------------------- */

static int open_socket(const char *path, struct dsd_client_error *e)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof sa.sun_path)
        return client_seterr(e, -EINVAL, 0, "socket path \"%s\" is %s (at most %zu bytes)",
                             path, len ? "too long" : "empty", sizeof sa.sun_path - 1);
    memcpy(sa.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return client_seterr(e, -errno, 0, "socket(): %s", strerror(errno));
    int rc;
    do
        rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        int err = errno;
        close(fd);
        if (err == ENOENT || err == ECONNREFUSED)
            return client_seterr(e, -err, 0, "no deepseekd listening on %s (%s): is the daemon "
                                 "running? (set $%s or the socket path to another socket)",
                                 path, strerror(err), DSD_CLIENT_SOCKET_ENV);
        if (err == EACCES || err == EPERM)
            return client_seterr(e, -EACCES, 0, "not allowed to connect to %s: %s (is this "
                                 "user in the deepseekd group?)", path, strerror(err));
        return client_seterr(e, -err, 0, "connecting to %s: %s", path, strerror(err));
    }
    /* Non-blocking from here on: every wait goes through poll() with the caller's deadline. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int err = errno;
        close(fd);
        return client_seterr(e, -err, 0, "fcntl(O_NONBLOCK): %s", strerror(err));
    }
    return fd;
}

static int client_init(struct dsd_client *c, const struct dsd_client_params *p)
{
    c->fd = -1;
    c->shm.fd = -1;
    c->refs = 1;
    c->next_id = 1;
    c->timeout_ms = p->timeout_ms;
    c->max_frame = DSD_IPC_HELLO_FRAME;
    dsd_ipc_reader_init(&c->reader, DSD_IPC_HELLO_FRAME);
    c->rbuf = malloc(CLIENT_READ_CHUNK);
    if (!c->rbuf)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    return 0;
}

/* Creates the shared memory within the daemon's limit and attaches it. Any failure leaves
 * the client on frames only: shared memory is an optimization, never a requirement. */
static void setup_shm(struct dsd_client *c, const struct dsd_client_params *p)
{
    struct dsd_shm_params sp = {
        .prompt_capacity = p->shm_prompt_capacity,
        .ring_count = p->shm_ring_count > DSD_SHM_MAX_RINGS ? DSD_SHM_MAX_RINGS
                                                             : p->shm_ring_count,
        .ring_capacity = p->shm_ring_capacity,
    };
    uint64_t limit = c->facts.max_shm_bytes;
    struct dsd_shm_header hdr;
    for (;;) {
        if (sp.prompt_capacity == 0 && sp.ring_count == 0)
            return;
        if (dsd_shm_layout(&sp, &hdr, NULL) < 0)
            return;
        if (limit == 0 || hdr.total_size <= limit)
            break;
        /* Halve the larger part until it fits the daemon's max_shm_bytes. */
        uint64_t rings = hdr.total_size - sp.prompt_capacity * 4;
        if (sp.prompt_capacity * 4 >= rings)
            sp.prompt_capacity /= 2;
        else
            sp.ring_count /= 2;
    }
    c->ring_busy = calloc(sp.ring_count ? sp.ring_count : 1, 1);
    if (!c->ring_busy || dsd_shm_create(&sp, &c->shm, NULL) < 0)
        return;
    struct dsd_ipc_msg m = {.type = DSD_IPC_SHM_ATTACH};
    struct dsd_ipc_msg reply;
    int rc = client_call(c, &m, DSD_IPC_SHM_OK, c->shm.fd, &reply, NULL);
    /* The daemon mapped its own copy; ours stays mapped, the fd is no longer needed. */
    close(c->shm.fd);
    c->shm.fd = -1;
    if (rc == 0 && reply.shm_ok.size == c->shm.size &&
        reply.shm_ok.ring_count == c->shm.geo.ring_count &&
        reply.shm_ok.ring_capacity == c->shm.geo.ring_capacity &&
        reply.shm_ok.prompt_capacity == c->shm.geo.prompt_capacity) {
        c->shm_on = true;
        c->facts.shm_ring_count = c->shm.geo.ring_count;
        c->facts.shm_ring_capacity = c->shm.geo.ring_capacity;
        c->facts.shm_prompt_capacity = c->shm.geo.prompt_capacity;
        c->shm_prompt_min = p->shm_prompt_min_tokens ? p->shm_prompt_min_tokens : 1;
    } else {
        /* Refused, or echoed something else than we made: never write into it. */
        dsd_shm_close(&c->shm);
    }
    dsd_ipc_msg_free(&reply);
}

DSD_CLIENT_API int dsd_client_connect(const struct dsd_client_params *params,
                                      struct dsd_client **ret_client,
                                      struct dsd_client_error *e)
{
    if (!ret_client)
        return client_seterr(e, -EINVAL, 0, "dsd_client_connect: ret_client is NULL");
    *ret_client = NULL;
    struct dsd_client_params p = params ? *params : dsd_client_default_params();
    if (p.use_shm && p.shm_ring_count > 0 &&
        (p.shm_ring_capacity < DSD_SHM_MIN_RING_CAP || p.shm_ring_capacity > DSD_SHM_MAX_RING_CAP ||
         (p.shm_ring_capacity & (p.shm_ring_capacity - 1))))
        return client_seterr(e, -EINVAL, 0, "shm_ring_capacity %u must be a power of two in "
                             "[%u, %u]", p.shm_ring_capacity, DSD_SHM_MIN_RING_CAP,
                             DSD_SHM_MAX_RING_CAP);
    if (p.max_frame && (p.max_frame < DSD_IPC_HELLO_FRAME || p.max_frame > DSD_IPC_FRAME_CEIL))
        return client_seterr(e, -EINVAL, 0, "max_frame %u must be 0 or in [%u, %u]",
                             p.max_frame, DSD_IPC_HELLO_FRAME, DSD_IPC_FRAME_CEIL);
    const char *path = p.socket_path;
    if (!path || !*path)
        path = getenv(DSD_CLIENT_SOCKET_ENV);
    if (!path || !*path)
        path = DSD_CLIENT_DEFAULT_SOCKET;

    struct dsd_client *c = calloc(1, sizeof *c);
    if (!c)
        return client_seterr(e, -ENOMEM, 0, "out of memory");
    int rc = client_init(c, &p);
    if (rc < 0) {
        free(c->rbuf);
        free(c);
        return client_seterr(e, rc, 0, "out of memory");
    }
    rc = open_socket(path, e);
    if (rc < 0)
        goto fail;
    c->fd = rc;

    struct dsd_ipc_msg hello = {.type = DSD_IPC_HELLO};
    hello.hello = (struct dsd_ipc_hello){
        .min_version = DSD_IPC_VERSION,
        .max_version = DSD_IPC_VERSION,
        .client = dsd_ipc_s(p.client_name ? p.client_name : "libdeepseekd"),
        .max_frame = p.max_frame,
    };
    if (hello.hello.client.len > DSD_IPC_MAX_CLIENT)
        hello.hello.client.len = (uint32_t)dsd_ipc_utf8_cut(hello.hello.client.ptr,
                                                           hello.hello.client.len,
                                                           DSD_IPC_MAX_CLIENT);
    rc = client_call(c, &hello, DSD_IPC_HELLO_OK, -1, &c->hello, e);
    if (rc < 0)
        goto fail;
    const struct dsd_ipc_hello_ok *h = &c->hello.hello_ok;
    if (h->version != DSD_IPC_VERSION) {
        rc = client_seterr(e, -EPROTONOSUPPORT, 0, "deepseekd chose protocol version %u; this "
                           "library speaks only %u", h->version, DSD_IPC_VERSION);
        goto fail;
    }
    uint32_t mf = h->limits.max_frame;
    if (mf < DSD_IPC_HELLO_FRAME || mf > DSD_IPC_FRAME_CEIL) {
        rc = client_seterr(e, -EPROTO, 0, "deepseekd negotiated max_frame %u, outside [%u, %u]",
                           mf, DSD_IPC_HELLO_FRAME, DSD_IPC_FRAME_CEIL);
        goto fail;
    }
    /* No other thread can use the client yet and no reader role is held: safe to change. */
    c->max_frame = mf;
    dsd_ipc_reader_set_max(&c->reader, mf);
    client_facts_fill(&c->facts, h);
    if (p.use_shm)
        setup_shm(c, &p);
    int dead = atomic_load(&c->dead);
    if (dead) {
        rc = client_seterr(e, dead, c->dead_err.daemon_code, "%s", c->dead_err.message);
        goto fail;
    }
    *ret_client = c;
    return 0;

fail:
    pthread_mutex_lock(&c->lock);
    client_die(c, -ECONNABORTED, 0, "connect failed");
    pthread_mutex_unlock(&c->lock);
    client_destroy(c);
    return rc;
}

DSD_CLIENT_API void dsd_client_free(struct dsd_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->user_freed = true;
    client_die(c, -ECONNABORTED, 0, "the client was freed (dsd_client_free)");
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->lock);
    if (last)
        client_destroy(c);
}

DSD_CLIENT_API const struct dsd_client_info *dsd_client_get_facts(const struct dsd_client *c)
{
    return c ? &c->facts : NULL;
}
