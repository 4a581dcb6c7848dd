/* A job's worker thread and its bounded output buffer (contract in openai_job.h). */
#include "openai_job.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "deadline.h"
#include "log.h"

/* How often a waiting worker looks at `gone` and `cancel` (ms). */
#define OA_POLL_MS 200

struct oa_job *oa_job_new(struct oa_server *s, struct MHD_Connection *conn)
{
    struct oa_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->srv = s;
    j->conn = conn;
    j->refs = 1;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    return j;
}

void oa_job_unref(struct oa_job *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0)
        return;
    if (j->have_req)
        oa_request_free(&j->req);
    free(j->body);
    free(j->answer);
    free(j->buf);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void oa_job_gone(struct oa_job *j)
{
    pthread_mutex_lock(&j->mu);
    j->gone = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* With j->mu held: wakes the HTTP side if it waits for us. */
static void wake_locked(struct oa_job *j)
{
    if (j->suspended && !j->gone) {
        j->suspended = false;
        MHD_resume_connection(j->conn);
    }
}

long oa_job_read(struct oa_job *j, char *out, size_t max)
{
    pthread_mutex_lock(&j->mu);
    long n = 0;
    if (j->buf_len) {
        size_t k = j->buf_len < max ? j->buf_len : max;
        memcpy(out, j->buf + j->buf_off, k);
        j->buf_off += k;
        j->buf_len -= k;
        if (!j->buf_len)
            j->buf_off = 0;
        pthread_cond_broadcast(&j->cv);
        n = (long)k;
    } else if (j->eof) {
        n = -1;
    } else {
        j->suspended = true;
        MHD_suspend_connection(j->conn);
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

static void set_answer_locked(struct oa_job *j, int status, char *body, size_t len)
{
    free(j->answer);
    j->status = status;
    j->answer = body;
    j->answer_len = len;
}

void oa_job_set_error(struct oa_job *j, int status, const char *message, const char *param, const char *code)
{
    json_t *e = oa_error_json(status, message, param, code);
    char *body = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    set_answer_locked(j, body ? status : 500, body, body ? strlen(body) : 0);
}

/* The worker's final word for a non-stream (or a stream that never started). */
static void answer(struct oa_job *j, int status, char *body, size_t len)
{
    pthread_mutex_lock(&j->mu);
    set_answer_locked(j, status, body, len);
    j->state = OA_JOB_ANSWER;
    wake_locked(j);
    pthread_mutex_unlock(&j->mu);
}

static void answer_error(struct oa_job *j, int status, const char *message, const char *param, const char *code)
{
    pthread_mutex_lock(&j->mu);
    oa_job_set_error(j, status, message, param, code);
    j->state = OA_JOB_ANSWER;
    wake_locked(j);
    pthread_mutex_unlock(&j->mu);
}

/* Appends stream bytes (takes data). Waits for room unless last; drops the bytes when
 * the client is gone. Returns false when the client is gone or the gateway stops. */
static bool stream_push(struct oa_job *j, char *data, size_t len, bool last)
{
    size_t cap = (size_t)j->srv->cfg.stream_buffer_kb * 1024;
    pthread_mutex_lock(&j->mu);
    while (!last && !j->gone && !j->cancel && j->buf_len && j->buf_len + len > cap) {
        struct timespec ts = dsd_deadline_ms(OA_POLL_MS);
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    }
    bool ok = !j->gone && !j->cancel;
    if (!j->gone && len) {
        if (j->buf_off + j->buf_len + len > j->buf_cap) {
            if (j->buf_off) {
                memmove(j->buf, j->buf + j->buf_off, j->buf_len);
                j->buf_off = 0;
            }
            if (j->buf_len + len > j->buf_cap) {
                size_t nc = j->buf_cap ? j->buf_cap : 4096;
                while (nc < j->buf_len + len)
                    nc *= 2;
                char *nb = realloc(j->buf, nc);
                if (!nb) {
                    ok = false;
                    len = 0;
                } else {
                    j->buf = nb;
                    j->buf_cap = nc;
                }
            }
        }
        if (len) {
            memcpy(j->buf + j->buf_off + j->buf_len, data, len);
            j->buf_len += len;
        }
    }
    if (last)
        j->eof = true;
    if (j->state == OA_JOB_RUNNING)
        j->state = OA_JOB_STREAMING;
    wake_locked(j);
    pthread_mutex_unlock(&j->mu);
    free(data);
    return ok;
}

static bool should_stop(struct oa_job *j)
{
    pthread_mutex_lock(&j->mu);
    bool stop = j->gone || j->cancel;
    pthread_mutex_unlock(&j->mu);
    return stop;
}

static void run_models(struct oa_job *j)
{
    char model[256];
    struct dsd_err err = {{0}};
    int rc = oa_pool_model(&j->srv->pool, model, sizeof model, &err);
    if (rc < 0) {
        answer_error(j, oa_status_for_errno(rc), err.msg, NULL, oa_code_for_errno(rc));
        return;
    }
    if (j->route == OA_ROUTE_MODEL && strcmp(j->model_id, model) != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "The model '%s' does not exist (this server serves '%s')", j->model_id, model);
        answer_error(j, 404, msg, "model", "model_not_found");
        return;
    }
    json_t *m = json_pack("{s:s, s:s, s:I, s:s}", "id", model, "object", "model", "created", (json_int_t)0,
                          "owned_by", "deepseekd");
    json_t *o = j->route == OA_ROUTE_MODEL ? json_incref(m) : json_pack("{s:s, s:[O]}", "object", "list", "data", m);
    json_decref(m);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        answer_error(j, 500, "out of memory", NULL, NULL);
    else
        answer(j, 200, body, strlen(body));
}

/* Runs one generation and answers or streams it. */
static void run_generation(struct oa_job *j)
{
    struct oa_server *s = j->srv;
    const struct oa_request *req = &j->req;
    struct dsd_err err = {{0}};
    struct dsd_client *c;
    int slot = oa_pool_acquire(&s->pool, &c, &err);
    if (slot < 0) {
        answer_error(j, oa_status_for_errno(slot), err.msg, NULL, oa_code_for_errno(slot));
        return;
    }
    const struct dsd_client_info *facts = dsd_client_get_facts(c);
    const char *model = facts && facts->model_name ? facts->model_name : "";
    if (req->model && strcmp(req->model, model) != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "The model '%s' does not exist (this server serves '%s')", req->model, model);
        answer_error(j, 404, msg, "model", "model_not_found");
        oa_pool_release(&s->pool, slot, 0);
        return;
    }
    struct oa_reply rp;
    if (oa_reply_init(&rp, req, &s->pool, c, model) < 0) {
        answer_error(j, 500, "out of memory", NULL, NULL);
        oa_pool_release(&s->pool, slot, 0);
        return;
    }
    pthread_mutex_lock(&s->mu);
    snprintf(rp.id, sizeof rp.id, "%s-%llx%04x", req->kind == OA_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)++s->next_id, (unsigned)(rand() & 0xffff));
    pthread_mutex_unlock(&s->mu);

    struct dsd_client_error ce = {0};
    struct dsd_client_request *r = NULL;
    int rc = dsd_client_request_start(c, &req->gp, &r, &ce);
    bool streaming = false, cancelled = false;
    while (rc >= 0) {
        const struct dsd_client_event *ev;
        if (!cancelled && should_stop(j)) {
            dsd_client_request_cancel(r);
            cancelled = true;
        }
        rc = dsd_client_request_next(r, OA_POLL_MS, &ev, &ce);
        if (rc == -ETIMEDOUT) {
            rc = 0;
            continue;
        }
        if (rc <= 0)
            break;
        if (ev->type == DSD_CLIENT_EVENT_TOKENS) {
            char *chunk = NULL;
            size_t n = 0;
            if (oa_reply_event(&rp, ev, req->stream ? &chunk : NULL, &n) < 0) {
                dsd_client_request_cancel(r);
                cancelled = true;
            }
            if (chunk) {
                streaming = true;
                if (!stream_push(j, chunk, n, false) && !cancelled) {
                    dsd_client_request_cancel(r);
                    cancelled = true;
                }
            }
            continue;
        }
        /* DONE: always the last event */
        const struct dsd_client_done *d = &ev->done;
        char *out = NULL;
        size_t n = 0;
        if (d->finish == DSD_CLIENT_FINISH_ERROR || d->finish == DSD_CLIENT_FINISH_CANCELLED) {
            char msg[600];
            int status = d->finish == DSD_CLIENT_FINISH_ERROR ? 500 : 503;
            snprintf(msg, sizeof msg, "%s", d->finish == DSD_CLIENT_FINISH_ERROR
                                                ? (d->error_message ? d->error_message : "the generation failed")
                                                : "the request was cancelled (the client left or the gateway is stopping)");
            if (req->stream && streaming) {
                if (oa_reply_stream_error(&rp, status, msg, &out, &n) == 0)
                    stream_push(j, out, n, true);
            } else {
                answer_error(j, status, msg, NULL, NULL);
            }
        } else if (oa_reply_done(&rp, d, &out, &n) < 0) {
            answer_error(j, 500, "out of memory", NULL, NULL);
        } else if (req->stream) {
            stream_push(j, out, n, true);
        } else {
            answer(j, 200, out, n);
        }
        rc = 0;
        break;
    }
    if (rc < 0) {
        int status = oa_status_for_errno(rc);
        if (req->stream && streaming) {
            char *out = NULL;
            size_t n = 0;
            if (oa_reply_stream_error(&rp, status, ce.message, &out, &n) == 0)
                stream_push(j, out, n, true);
        } else {
            const char *param = rc == -EINVAL && strstr(ce.message, "messages") ? "messages" : NULL;
            answer_error(j, status, ce.message[0] ? ce.message : "the request failed", param, oa_code_for_errno(rc));
        }
    }
    dsd_client_request_free(r);
    oa_reply_free(&rp);
    oa_pool_release(&s->pool, slot, rc);
}

static void *worker(void *arg)
{
    struct oa_job *j = arg;
    struct oa_server *s = j->srv;
    if (j->route == OA_ROUTE_MODELS || j->route == OA_ROUTE_MODEL)
        run_models(j);
    else
        run_generation(j);
    /* Whatever happened, the connection must not stay suspended. */
    pthread_mutex_lock(&j->mu);
    if (j->state == OA_JOB_RUNNING) {
        oa_job_set_error(j, 500, "internal error: the request ended without an answer", NULL, NULL);
        j->state = OA_JOB_ANSWER;
    }
    if (j->state == OA_JOB_STREAMING)
        j->eof = true;
    wake_locked(j);
    pthread_mutex_unlock(&j->mu);

    pthread_mutex_lock(&s->mu);
    if (j->prev)
        j->prev->next = j->next;
    else
        s->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    if (--s->running == 0)
        pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
    oa_job_unref(j);
    return NULL;
}

int oa_job_start(struct oa_job *j)
{
    struct oa_server *s = j->srv;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return -ESHUTDOWN;
    }
    bool generation = j->route == OA_ROUTE_CHAT || j->route == OA_ROUTE_COMPLETIONS;
    if (generation && s->running >= s->cfg.max_requests) {
        pthread_mutex_unlock(&s->mu);
        return -EBUSY;
    }
    j->refs++;      /* the worker's (caller holds j->mu) */
    j->state = OA_JOB_RUNNING;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    pthread_t t;
    int rc = pthread_create(&t, &a, worker, j);
    pthread_attr_destroy(&a);
    if (rc) {
        j->refs--;
        j->state = OA_JOB_BODY;
        pthread_mutex_unlock(&s->mu);
        return -rc;
    }
    s->running++;
    j->next = s->jobs;
    j->prev = NULL;
    if (s->jobs)
        s->jobs->prev = j;
    s->jobs = j;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

bool oa_jobs_cancel_all(struct oa_server *s, int timeout_ms)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (struct oa_job *j = s->jobs; j; j = j->next) {
        pthread_mutex_lock(&j->mu);
        j->cancel = true;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
    struct timespec ts = dsd_deadline_ms(timeout_ms);
    while (s->running > 0)
        if (pthread_cond_timedwait(&s->idle, &s->mu, &ts) == ETIMEDOUT)
            break;
    int left = s->running;
    pthread_mutex_unlock(&s->mu);
    if (left > 0)
        dsd_log(LOG_WARNING, "%d requests still running %d ms after they were cancelled", left, timeout_ms);
    return left == 0;
}
