/*
 * tools/probe/probe_raw.c: `deepseekd-probe raw JSON`. Speaks ipc/ directly (not
 * libdeepseekd): it exists to send what the library never would, so the frame goes out
 * exactly as written, and every reply frame is printed as it came, undecoded by the schema.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ipc_frame.h"
#include "ipc_msg.h"
#include "probe.h"

struct raw_conn {
    int fd;
    struct dsd_ipc_reader reader;
    uint8_t buf[65536];
    size_t len, off;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -errno;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_body(int fd, const void *body, size_t n)
{
    uint8_t pre[4];
    dsd_ipc_put_prefix(pre, (uint32_t)n);
    int rc = send_all(fd, pre, 4);
    return rc ? rc : send_all(fd, body, n);
}

/* The next frame body: 1 (frame), -ETIMEDOUT, -ECONNRESET, -EPROTO (msg in err). */
static int recv_frame(struct raw_conn *rc, int64_t deadline, struct dsd_ipc_frame *f, char *err,
                      size_t n)
{
    for (;;) {
        while (rc->off < rc->len) {
            size_t used;
            struct dsd_ipc_fail fail;
            int r = dsd_ipc_reader_push(&rc->reader, rc->buf + rc->off, rc->len - rc->off,
                                        &used, f, &fail);
            rc->off += used;
            if (r < 0) {
                snprintf(err, n, "%s", fail.err.msg);
                return -EPROTO;
            }
            if (r == 1)
                return 1;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = rc->fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr == 0)
            return -ETIMEDOUT;
        if (pr < 0 && errno == EINTR)
            continue;
        ssize_t k = read(rc->fd, rc->buf, sizeof rc->buf);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(err, n, "deepseekd closed the connection");
            return -ECONNRESET;
        }
        rc->len = (size_t)k;
        rc->off = 0;
    }
}

/* The value of key "t" / "id" in a JSON object, for deciding when to stop. */
static const char *jtype(json_t *j)
{
    json_t *t = json_object_get(j, "t");
    return json_is_string(t) ? json_string_value(t) : "";
}

static bool is_final(const char *t)
{
    size_t n = strlen(t);
    return !strcmp(t, "done") || !strcmp(t, "error") || (n > 3 && !strcmp(t + n - 3, "_ok"));
}

int probe_raw(struct probe_args *a)
{
    json_error_t jerr;
    json_t *req = json_loads(a->raw_json, 0, &jerr);
    if (!req || !json_is_object(req)) {
        fprintf(stderr, "deepseekd-probe: raw: %s (the argument must be one JSON object)\n",
                req ? "not an object" : jerr.text);
        json_decref(req);
        return PROBE_EX_USAGE;
    }
    if (!json_object_get(req, "id"))
        json_object_set_new(req, "id", json_integer(2));
    const char *t = jtype(req);
    bool replies = strcmp(t, "cancel") && strcmp(t, "resume");
    int32_t timeout = a->timeout_ms > 0 ? a->timeout_ms : replies ? 5000 : 300;

    const char *path = a->socket;
    if (!path || !*path)
        path = getenv(DSD_CLIENT_SOCKET_ENV);
    if (!path || !*path)
        path = DSD_CLIENT_DEFAULT_SOCKET;
    struct raw_conn *rc = calloc(1, sizeof *rc);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!rc || strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "deepseekd-probe: socket path \"%s\" is too long\n", path);
        free(rc);
        json_decref(req);
        return PROBE_EX_USAGE;
    }
    strcpy(sa.sun_path, path);
    rc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rc->fd < 0 || connect(rc->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        fprintf(stderr, "deepseekd-probe: connecting to %s: %s\n", path, strerror(e));
        if (rc->fd >= 0)
            close(rc->fd);
        free(rc);
        json_decref(req);
        return probe_exit_for(-e);
    }
    dsd_ipc_reader_init(&rc->reader, DSD_IPC_HELLO_FRAME);
    int ex = PROBE_EX_OK;
    char err[512] = "";
    struct dsd_ipc_frame f;
    int64_t deadline = now_ms() + timeout;

    if (!a->no_hello && strcmp(t, "hello") != 0) {
        struct dsd_ipc_msg h = {.type = DSD_IPC_HELLO, .id = 1};
        h.hello = (struct dsd_ipc_hello){1, 1, dsd_ipc_s("deepseekd-probe raw"), 0};
        struct dsd_ipc_buf b = {0};
        struct dsd_err e;
        int r = dsd_ipc_encode(&b, &h, DSD_IPC_HELLO_FRAME, &e);
        if (r == 0)
            r = send_all(rc->fd, b.data, b.len);
        dsd_ipc_buf_free(&b);
        if (r == 0)
            r = recv_frame(rc, deadline, &f, err, sizeof err);
        struct dsd_ipc_msg m = {0};
        struct dsd_ipc_fail fail;
        if (r == 1 && dsd_ipc_decode(f.body, f.len, DSD_IPC_TO_CLIENT, &m, &fail) == 0 &&
            m.type == DSD_IPC_HELLO_OK) {
            dsd_ipc_reader_set_max(&rc->reader, m.hello_ok.limits.max_frame);
        } else {
            json_t *j = r == 1 ? probe_msgpack_to_json(f.body, f.len, err, sizeof err) : NULL;
            fprintf(stderr, "deepseekd-probe: raw: hello failed: %s\n",
                    j ? "the reply follows" : err[0] ? err : "no reply");
            if (j) {
                char *s = json_dumps(j, JSON_COMPACT);
                if (s)
                    puts(s);
                free(s);
                json_decref(j);
            }
            ex = r == -ETIMEDOUT ? PROBE_EX_TEMPFAIL : PROBE_EX_PROTOCOL;
        }
        dsd_ipc_msg_free(&m);
    }

    if (ex == PROBE_EX_OK) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        if (probe_json_to_msgpack(req, &sb, err, sizeof err) < 0) {
            fprintf(stderr, "deepseekd-probe: raw: %s\n", err);
            ex = PROBE_EX_USAGE;
        } else if (send_body(rc->fd, sb.data, sb.size) < 0) {
            fprintf(stderr, "deepseekd-probe: raw: sending: %s\n", strerror(errno));
            ex = PROBE_EX_UNAVAILABLE;
        }
        msgpack_sbuffer_destroy(&sb);
    }
    deadline = now_ms() + timeout;
    json_int_t want_id = json_integer_value(json_object_get(req, "id"));
    while (ex == PROBE_EX_OK) {
        int r = recv_frame(rc, deadline, &f, err, sizeof err);
        if (r == -ETIMEDOUT) {
            if (replies) {
                fprintf(stderr, "deepseekd-probe: raw: no final reply within %d ms\n", timeout);
                ex = PROBE_EX_TEMPFAIL;
            }
            break;
        }
        if (r < 0) {
            fprintf(stderr, "deepseekd-probe: raw: %s\n", err);
            ex = r == -ECONNRESET ? PROBE_EX_UNAVAILABLE : PROBE_EX_PROTOCOL;
            break;
        }
        json_t *j = probe_msgpack_to_json(f.body, f.len, err, sizeof err);
        if (!j) {
            fprintf(stderr, "deepseekd-probe: raw: undecodable frame of %u bytes: %s\n", f.len,
                    err);
            continue;
        }
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (s)
            puts(s);
        free(s);
        fflush(stdout);
        json_t *id = json_object_get(j, "id");
        bool mine = json_is_integer(id) && (json_integer_value(id) == want_id ||
                                            json_integer_value(id) == 0);
        bool stop = mine && is_final(jtype(j));
        if (stop && !strcmp(jtype(j), "error"))
            ex = PROBE_EX_FAIL;
        json_decref(j);
        if (stop)
            break;
    }
    dsd_ipc_reader_free(&rc->reader);
    close(rc->fd);
    free(rc);
    json_decref(req);
    return ex;
}
