/*
 * tools/openai/openai.h: deepseekd-openai, the OpenAI-compatible HTTP gateway in front of
 * deepseekd (docs/OPENAI.md). Internal to the gateway; nothing here is installed.
 *
 * Pieces, one concern per file:
 *   openai_config.c   the configuration file and flags (struct oa_config)
 *   openai_pool.c     the connections to deepseekd (libdeepseekd clients) and the token-text
 *                     cache used for logprobs
 *   openai_request.c  an OpenAI request body (JSON) -> dsd_client_generate_params
 *   openai_reply.c    generation events -> OpenAI response objects and SSE chunks
 *   openai_job.c      one HTTP request's generation, run by its own worker thread
 *   openai_http.c     libmicrohttpd: routing, bodies, suspend/resume, the stream callback
 *   openai_error.c    OpenAI-shaped error bodies, errno -> HTTP status
 *   openai_main.c     start-up, listening socket (or systemd's), signals, shutdown
 *
 * Threads: libmicrohttpd's one polling thread runs every HTTP callback; each running
 * generation has one worker thread that waits on libdeepseekd and writes into its job's
 * bounded output buffer. The two meet only under the job's mutex (openai_job.c).
 *
 * Return codes: functions return 0 (or a count) on success and a negative errno on
 * failure, with a message in struct dsd_err; nothing exits outside main().
 */
#ifndef DSD_OPENAI_H
#define DSD_OPENAI_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <deepseekd.h>

#include "err.h"

/* ---- configuration (openai_config.c) ------------------------------------------------------ */

#define OA_PATH_MAX 4096

struct oa_config {
    char socket[108];           /* the daemon's socket ("" = $DEEPSEEKD_SOCKET or the default) */
    char listen[256];           /* HOST:PORT, [V6]:PORT or unix:PATH */
    int64_t max_body_kb;        /* largest request body */
    int64_t max_requests;       /* generations running at once; more get 429 */
    int64_t connections;        /* connections to deepseekd */
    int64_t stream_buffer_kb;   /* per stream: output held for a slow reader */
    int64_t http_timeout_s;     /* an HTTP connection idle this long is closed */
    int64_t threads;            /* libmicrohttpd polling threads */
    int log_level;              /* syslog level */
    char config_path[OA_PATH_MAX];
};

#define OA_CONFIG_HANDLED 1     /* --help or --version printed: exit 0 */

/* Defaults, then the file (--config FILE, else OA_DEFAULT_CONFIG when it exists), then
 * flags. Returns 0, OA_CONFIG_HANDLED, or -EINVAL/-errno with err naming the key and place. */
int oa_config_load(int argc, char **argv, struct oa_config *cfg, struct dsd_err *err);

/* ---- errors (openai_error.c) --------------------------------------------------------------- */

/* An OpenAI error body {"error": {"message", "type", "param", "code"}}; param and code may
 * be NULL (JSON null). Returns a new reference, or NULL when out of memory. */
json_t *oa_error_json(int http_status, const char *message, const char *param, const char *code);
/* The HTTP status for a libdeepseekd return code (400, 413, 429, 503, 500). */
int oa_status_for_errno(int rc);
/* The OpenAI "code" for a libdeepseekd return code, or NULL. */
const char *oa_code_for_errno(int rc);

/* ---- connections to deepseekd (openai_pool.c) --------------------------------------------- */

struct oa_slot {
    struct dsd_client *client;  /* NULL = not connected */
    int users;
    bool dead;
};

struct oa_pool {
    pthread_mutex_t mu;
    char socket[108];
    int n_slots;
    struct oa_slot *slots;
    char model[256];            /* the daemon's model name, once known */
    uint32_t vocab_size;
    pthread_mutex_t text_mu;    /* the token-text cache */
    char **token_text;          /* [vocab_size], filled on demand */
};

int oa_pool_init(struct oa_pool *p, const char *socket, int n_slots);
void oa_pool_free(struct oa_pool *p);
/* A connected client for one request; give it back with oa_pool_release(). Returns the
 * slot index (>= 0), or a negative errno from dsd_client_connect() (err has its message). */
int oa_pool_acquire(struct oa_pool *p, struct dsd_client **client, struct dsd_err *err);
/* rc: the last libdeepseekd result of the request; a dead connection is closed once unused. */
void oa_pool_release(struct oa_pool *p, int slot, int rc);
/* The daemon's model name (connecting if need be). Returns 0 or a negative errno. */
int oa_pool_model(struct oa_pool *p, char *out, size_t size, struct dsd_err *err);
/* The text of one token id (special tokens kept), cached; "" when unknown. The pointer stays
 * valid until oa_pool_free(). */
const char *oa_pool_token_text(struct oa_pool *p, struct dsd_client *c, uint32_t id);

/* ---- requests (openai_request.c) ----------------------------------------------------------- */

enum oa_kind { OA_CHAT = 1, OA_COMPLETION };

/* A parsed request. Everything gp points to is owned here (or by root). */
struct oa_request {
    enum oa_kind kind;
    json_t *root;
    struct dsd_client_generate_params gp;
    struct dsd_client_message *msgs;
    struct dsd_client_tool_call *calls;
    char **owned;               /* strings built here (joined parts, dumped arguments) */
    size_t n_owned, cap_owned;
    const char *stops[16];
    char *tools_json;
    uint32_t *prompt_tokens;
    const char *model;          /* as the client named it */
    bool stream;
    bool include_usage;
    int completion_logprobs;    /* /v1/completions: the integer `logprobs`, -1 = none */
};

/* Parses and checks an OpenAI body. Returns 0, or -EINVAL with err naming the field and
 * *param set to the field's name (static string) for the error body. */
int oa_request_parse(enum oa_kind kind, const char *body, size_t len, struct oa_request *r,
                     const char **param, struct dsd_err *err);
void oa_request_free(struct oa_request *r);

/* ---- replies (openai_reply.c) -------------------------------------------------------------- */

/* What the events of one generation add up to, and how to render them. */
struct oa_reply {
    const struct oa_request *req;
    struct oa_pool *pool;
    struct dsd_client *client;  /* for token texts */
    char id[64];
    char model[256];
    long long created;
    /* accumulated (non-streaming, and usage) */
    char *text, *reasoning;
    size_t text_len, text_cap, reasoning_len, reasoning_cap;
    json_t *tool_calls;         /* array of {id, type, function {name, arguments}} */
    json_t *logprobs;           /* chat: array of content entries; completions: object */
    size_t text_offset;         /* completions logprobs */
    bool sent_role;
};

int oa_reply_init(struct oa_reply *rp, const struct oa_request *req, struct oa_pool *pool,
                  struct dsd_client *client, const char *model);
void oa_reply_free(struct oa_reply *rp);
/* Adds one TOKENS event. For streams, *chunk (may stay NULL: nothing to send) receives the
 * SSE bytes to send ("data: {...}\n\n"), malloc'd. Returns 0 or -ENOMEM. */
int oa_reply_event(struct oa_reply *rp, const struct dsd_client_event *ev, char **chunk, size_t *chunk_len);
/* The end (DONE). Streams: the final chunks and "data: [DONE]". Otherwise the whole response
 * object as JSON text. Returns 0 or -ENOMEM. */
int oa_reply_done(struct oa_reply *rp, const struct dsd_client_done *done, char **out, size_t *out_len);
/* A stream's error event (a request that failed after it started) + [DONE]. */
int oa_reply_stream_error(struct oa_reply *rp, int status, const char *message, char **out, size_t *out_len);

/* ---- jobs and HTTP (openai_job.c, openai_http.c) ------------------------------------------- */

struct oa_server;
struct oa_job;

struct oa_server {
    struct oa_config cfg;
    struct oa_pool pool;
    struct MHD_Daemon *mhd;
    pthread_mutex_t mu;         /* jobs list, counters */
    pthread_cond_t idle;        /* signalled when running reaches 0 */
    struct oa_job *jobs;        /* running generations (for shutdown) */
    int running;
    bool stopping;
    uint64_t next_id;
};

/* Starts libmicrohttpd on listen_fd. Returns 0 or a negative errno. */
int oa_http_start(struct oa_server *s, int listen_fd, struct dsd_err *err);
/* Refuses new connections, cancels every running generation, waits (10 s at most) for the
 * workers and stops libmicrohttpd. Returns 0, or -ETIMEDOUT when workers were still
 * running (libmicrohttpd is then left as it is: exit the process). */
int oa_http_stop(struct oa_server *s);

#endif
