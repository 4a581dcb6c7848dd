/*
 * tools/openai/openai_job.h: one HTTP request of the gateway from the body's first byte to
 * the last byte of its answer, and the worker thread that runs its generation.
 *
 * Life of a job (openai_http.c drives it, openai_job.c runs the worker):
 *   BODY       libmicrohttpd hands the body in pieces (bounded by max_body_kb)
 *   RUNNING    the worker talks to deepseekd; the HTTP connection is suspended
 *   ANSWER     the worker left a complete answer (status + JSON body): the connection is
 *              resumed and the HTTP thread queues it
 *   STREAMING  a stream's first bytes are ready: the HTTP thread queues a chunked
 *              text/event-stream response whose reader callback drains the job's buffer
 *   SENT       the response is queued
 *
 * Locking: job->mu guards every field below the line "shared". Both MHD_suspend_connection()
 * (HTTP thread) and MHD_resume_connection() (worker) are called with job->mu held, so a
 * resume can never overtake the suspend it answers. libmicrohttpd never calls our callbacks
 * while holding a lock of its own that resume takes, so this cannot deadlock.
 *
 * Backpressure: a stream's buffer holds at most stream_buffer_kb; a worker whose reader is
 * slow waits for room instead of reading on from deepseekd, so the daemon pauses that one
 * request (its flow control) and nothing else waits. A client that goes away (libmicrohttpd
 * reports the request completed or aborted) marks the job gone; the worker then cancels the
 * request in the daemon.
 *
 * References: the HTTP side holds one (dropped when libmicrohttpd reports the request
 * completed), the worker one while it runs; the last drop frees the job.
 */
#ifndef DSD_OPENAI_JOB_H
#define DSD_OPENAI_JOB_H

#include "openai.h"

struct MHD_Connection;

enum oa_route { OA_ROUTE_MODELS = 1, OA_ROUTE_MODEL, OA_ROUTE_CHAT, OA_ROUTE_COMPLETIONS };

enum oa_job_state { OA_JOB_BODY = 0, OA_JOB_RUNNING, OA_JOB_ANSWER, OA_JOB_STREAMING, OA_JOB_SENT };

struct oa_job {
    struct oa_server *srv;
    struct MHD_Connection *conn;
    enum oa_route route;
    char model_id[256];         /* OA_ROUTE_MODEL: the id in the URL */
    char *body;
    size_t body_len, body_cap;
    bool too_big;
    struct oa_request req;
    bool have_req;
    struct oa_job *next, *prev; /* srv->jobs, under srv->mu */

    pthread_mutex_t mu;
    pthread_cond_t cv;          /* room in buf, or gone */
    /* ---- shared (job->mu) ---- */
    int refs;
    enum oa_job_state state;
    int status;                 /* ANSWER */
    char *answer;
    size_t answer_len;
    char *buf;                  /* STREAMING: bytes not yet handed to libmicrohttpd */
    size_t buf_off, buf_len, buf_cap;
    bool eof;                   /* the worker wrote the last bytes */
    bool suspended;             /* the connection is suspended (by us) */
    bool gone;                  /* the HTTP side is finished with the job */
    bool cancel;                /* the gateway is stopping */
};

/* A new job (refs 1, state BODY) or NULL. */
struct oa_job *oa_job_new(struct oa_server *s, struct MHD_Connection *conn);
void oa_job_unref(struct oa_job *j);

/* Starts the worker; the caller holds j->mu and suspends the connection after a 0 return.
 * Returns 0, -EBUSY (max_requests generations already run), -ESHUTDOWN, -ENOMEM/-EAGAIN. */
int oa_job_start(struct oa_job *j);

/* The HTTP side is done with the job (completed, aborted, timed out). Does not unref. */
void oa_job_gone(struct oa_job *j);

/* libmicrohttpd's content reader for a stream: copies up to max bytes (> 0), returns 0
 * after suspending the connection when nothing is buffered yet, or -1 at the end. */
long oa_job_read(struct oa_job *j, char *out, size_t max);

/* Sets j's answer to an OpenAI error body (state ANSWER is set by the caller). */
void oa_job_set_error(struct oa_job *j, int status, const char *message, const char *param, const char *code);

/* Asks every running worker to stop (shutdown); waits up to timeout_ms for them. Returns
 * true when none is left. */
bool oa_jobs_cancel_all(struct oa_server *s, int timeout_ms);

#endif
