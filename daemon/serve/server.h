/*
 * daemon/serve/server.h: the io thread. One io_uring drives the listening socket
 * (multishot accept), every client connection (one recvmsg at a time into a provided-buffer
 * ring, not re-armed while the connection's replies are backed up; one send in flight), the engine's eventfd, a signalfd and a timerfd;
 * all work that results is batched and submitted once per loop turn (redis's before-sleep).
 *
 *   struct dsd_server_params sp = { .listen_fd = fd, .engine = e, ... };
 *   int rc = dsd_server_run(&sp, &err);        // returns after SIGTERM/SIGINT and the drain
 *
 * The io thread never touches model or KV memory: generation requests go to the engine
 * (engine.h) and come back as events.
 */
#ifndef DSD_SERVE_SERVER_H
#define DSD_SERVE_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "err.h"
#include "tokenizer.h"

/* Limits and knobs the io thread applies; reloadable ones are re-read on SIGHUP through
 * the reload callback. */
struct dsd_server_limits {
    uint32_t max_frame;             /* negotiated down in hello */
    uint64_t max_shm_bytes;
    int max_prompt_tokens;          /* 0 = the model's context */
    int max_tokens;                 /* per-request generation cap */
    int max_inflight;               /* per connection */
    int max_inflight_per_uid;
    int max_connections_per_uid;
    int stall_timeout_s;            /* a ring full or the socket backed up this long ends requests */
    int drain_timeout_s;
    int frame_timeout_s;            /* a started frame must complete within this */
    int idle_timeout_s;             /* no request and no bytes this long closes; 0 = never */
};

struct dsd_server_params {
    int listen_fd;                  /* a listening SOCK_STREAM unix socket */
    int wake_fd;                    /* the eventfd the engine writes (dsd_engine_start) */
    struct dsd_engine *engine;
    const struct dsd_tokenizer *tokenizer;  /* NULL: text and chat requests are refused */
    const struct dsd_model_config *model_cfg;  /* parsed config.json: facts for hello */
    const char *model_name;
    const char *kv_dtype_name;      /* "fp8_e4m3", "bf16", "f32" */
    const char *backend_name;       /* "cpu", "cuda" (NULL: "cpu") */
    struct dsd_server_limits limits;
    int max_context;
    /* SIGHUP: re-read the configuration and return the new limits (0) or fail (-errno, the
     * old limits stay). May be NULL. */
    int (*reload)(void *user, struct dsd_server_limits *limits, struct dsd_err *err);
    void *reload_user;
    /* TEST ONLY (test_force_trigger, test_force_output): NULL or "" = off */
    const char *test_force_trigger;
    const char *test_force_output;
    /* extra name/value pairs for info_ok.server */
    const char *const *info_keys;
    const char *const *info_values;
    int n_info;
};

/* Serves until SIGTERM or SIGINT, then drains (refuses new requests, lets running ones
 * finish for at most drain_timeout_s, cancels the rest) and returns 0. Errors setting up
 * the ring return a negative errno. SIGTERM, SIGINT and SIGHUP must be blocked in every
 * thread before any thread starts (dsd_server_block_signals()). */
int dsd_server_run(const struct dsd_server_params *p, struct dsd_err *err);
void dsd_server_block_signals(void);

/* Creates, binds and listens on a unix socket at path (a stale socket file there is
 * replaced; anything else is an error), with the given mode and group (NULL/"" = keep).
 * Returns the fd or a negative errno. */
int dsd_server_listen(const char *path, unsigned mode, const char *group, struct dsd_err *err);

#endif
