/*
 * The HTTP side of deepseekd-openai, on libmicrohttpd: routes, request bodies, answers and
 * streams (openai_job.h explains the job states and the suspend/resume protocol).
 */
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "log.h"
#include "openai_job.h"

static enum MHD_Result queue_body(struct MHD_Connection *conn, int status, const char *body, size_t len,
                                  const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, int status, const char *message, const char *param,
                                   const char *code)
{
    json_t *e = oa_error_json(status, message, param, code);
    char *body = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    enum MHD_Result ok = body ? queue_body(conn, status, body, strlen(body), "application/json") : MHD_NO;
    free(body);
    return ok;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    long n = oa_job_read(cls, buf, max);
    return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : (ssize_t)n;
}

/* The job's answer or stream, once the worker resumed the connection. */
static enum MHD_Result queue_result(struct oa_job *j)
{
    if (j->state == OA_JOB_ANSWER) {
        j->state = OA_JOB_SENT;
        return queue_body(j->conn, j->status, j->answer ? j->answer : "", j->answer_len, "application/json");
    }
    j->state = OA_JOB_SENT;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, j, NULL);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ok = MHD_queue_response(j->conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

static bool route(struct oa_job *j, const char *url, const char *method, int *status, char *msg, size_t size)
{
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    const char *want = NULL;
    if (strcmp(url, "/v1/models") == 0) {
        j->route = OA_ROUTE_MODELS;
        want = "GET";
    } else if (strncmp(url, "/v1/models/", 11) == 0 && url[11] && strlen(url + 11) < sizeof j->model_id) {
        j->route = OA_ROUTE_MODEL;
        snprintf(j->model_id, sizeof j->model_id, "%s", url + 11);
        want = "GET";
    } else if (strcmp(url, "/v1/chat/completions") == 0) {
        j->route = OA_ROUTE_CHAT;
        want = "POST";
    } else if (strcmp(url, "/v1/completions") == 0) {
        j->route = OA_ROUTE_COMPLETIONS;
        want = "POST";
    } else {
        *status = 404;
        snprintf(msg, size, "Unknown request URL: %s %s", method, url);
        return false;
    }
    if ((strcmp(want, "GET") == 0 && !get) || (strcmp(want, "POST") == 0 && !post)) {
        *status = 405;
        snprintf(msg, size, "%s %s is not allowed; use %s", method, url, want);
        return false;
    }
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct oa_server *s = cls;
    struct oa_job *j = *con_cls;
    size_t max_body = (size_t)s->cfg.max_body_kb * 1024;
    if (!j) {
        j = oa_job_new(s, conn);
        if (!j)
            return MHD_NO;
        *con_cls = j;
        int status;
        char msg[512];
        if (!route(j, url, method, &status, msg, sizeof msg))
            return queue_error(conn, status, msg, NULL, status == 404 ? "not_found" : NULL);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > max_body) {
            j->too_big = true;
            snprintf(msg, sizeof msg, "The request body (%s bytes) exceeds the limit of %zu bytes (max_body_kb)", cl,
                     max_body);
            return queue_error(conn, 413, msg, NULL, "request_too_large");
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (j->too_big || j->body_len + n > max_body) {
            j->too_big = true;      /* keep reading (discarding) to answer 413 at the end */
            return MHD_YES;
        }
        if (j->body_len + n + 1 > j->body_cap) {
            size_t c = j->body_cap ? j->body_cap : 4096;
            while (c < j->body_len + n + 1)
                c *= 2;
            char *b = realloc(j->body, c);
            if (!b)
                return MHD_NO;
            j->body = b;
            j->body_cap = c;
        }
        memcpy(j->body + j->body_len, upload_data, n);
        j->body_len += n;
        j->body[j->body_len] = 0;
        return MHD_YES;
    }
    /* The whole body is in (or the worker resumed us). */
    pthread_mutex_lock(&j->mu);
    enum oa_job_state st = j->state;
    pthread_mutex_unlock(&j->mu);
    if (st == OA_JOB_SENT)
        return MHD_YES;
    if (st == OA_JOB_ANSWER || st == OA_JOB_STREAMING) {
        pthread_mutex_lock(&j->mu);
        enum MHD_Result ok = queue_result(j);
        pthread_mutex_unlock(&j->mu);
        return ok;
    }
    if (st == OA_JOB_RUNNING) {     /* resumed before there was anything to send */
        pthread_mutex_lock(&j->mu);
        if (j->state == OA_JOB_RUNNING) {
            j->suspended = true;
            MHD_suspend_connection(conn);
            pthread_mutex_unlock(&j->mu);
            return MHD_YES;
        }
        enum MHD_Result ok = queue_result(j);
        pthread_mutex_unlock(&j->mu);
        return ok;
    }
    /* BODY: parse and start */
    if (j->too_big) {
        char msg[200];
        snprintf(msg, sizeof msg, "The request body exceeds the limit of %zu bytes (max_body_kb)", max_body);
        return queue_error(conn, 413, msg, NULL, "request_too_large");
    }
    if (j->route == OA_ROUTE_CHAT || j->route == OA_ROUTE_COMPLETIONS) {
        const char *param = NULL;
        struct dsd_err err = {{0}};
        int rc = oa_request_parse(j->route == OA_ROUTE_CHAT ? OA_CHAT : OA_COMPLETION, j->body ? j->body : "",
                                  j->body_len, &j->req, &param, &err);
        if (rc < 0)
            return queue_error(conn, 400, err.msg, param, NULL);
        j->have_req = true;
    }
    pthread_mutex_lock(&j->mu);
    int rc = oa_job_start(j);
    if (rc == 0) {
        j->suspended = true;
        MHD_suspend_connection(conn);
        pthread_mutex_unlock(&j->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&j->mu);
    if (rc == -EBUSY) {
        char msg[200];
        snprintf(msg, sizeof msg, "Too many requests: %lld generations are running (max_requests); retry later",
                 (long long)s->cfg.max_requests);
        return queue_error(conn, 429, msg, NULL, "rate_limit_exceeded");
    }
    if (rc == -ESHUTDOWN)
        return queue_error(conn, 503, "The server is shutting down", NULL, NULL);
    return queue_error(conn, 500, "could not start a worker thread", NULL, NULL);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode why)
{
    struct oa_job *j = *con_cls;
    if (!j)
        return;
    *con_cls = NULL;
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        dsd_log(LOG_DEBUG, "request ended early (libmicrohttpd reason %d)", (int)why);
    oa_job_gone(j);
    oa_job_unref(j);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    dsd_log(LOG_INFO, "libmicrohttpd: %s", line);
}

int oa_http_start(struct oa_server *s, int listen_fd, struct dsd_err *err)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    unsigned threads = (unsigned)s->cfg.threads;
    struct MHD_OptionItem opts[] = {
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },
        { MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s },
        { MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)s->cfg.http_timeout_s, NULL },
        { MHD_OPTION_CONNECTION_LIMIT, 4096, NULL },
        { threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)threads, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->mhd)
        return dsd_errf(err, -EIO, "libmicrohttpd did not start on the listening socket");
    return 0;
}

int oa_http_stop(struct oa_server *s)
{
    if (!s->mhd)
        return 0;
    int fd = MHD_quiesce_daemon(s->mhd);
    (void)fd;   /* the listening socket stays ours to close (main) */
    /* Workers resume their connections as they end; libmicrohttpd must not be stopped
     * while one is still suspended, so a worker stuck past the wait (a daemon that no
     * longer answers) leaves it running and the process exits around it. */
    if (!oa_jobs_cancel_all(s, 10000))
        return -ETIMEDOUT;
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    return 0;
}
