/*
 * deepseekd.h: libdeepseekd, the C client library of deepseekd, the local DeepSeek V3.2
 * inference daemon. Link with `pkg-config --libs deepseekd` or CMake
 * `find_package(deepseekd)` + `target_link_libraries(app deepseekd::deepseekd)`.
 *
 * THE CONTRACT
 *
 * - One `struct dsd_client` is one connection to the daemon's Unix socket. Connecting agrees
 *   on a protocol version and, unless you turn it off, sets up shared memory (a sealed memfd
 *   the daemon maps) through which long prompts go in and generated token ids come out. Both
 *   are handled inside the library; the API is the same with and without it.
 * - A generation is a `struct dsd_client_request`. Start it, then either iterate its events
 *   (`dsd_client_request_next()`: token ids, text deltas, reasoning deltas, tool-call deltas,
 *   logprobs, and a final DONE with the finish reason, usage and timings) or call the blocking
 *   `dsd_client_generate()`, which collects the whole result.
 * - Every function returns 0 (or a count) on success and a negative errno on failure. Calls
 *   that can fail for a reason worth reading take an optional `struct dsd_client_error *`,
 *   which receives a message naming what went wrong and, when the daemon refused something,
 *   its wire error code (docs/PROTOCOL.md §6). The library never prints, never exits, never
 *   aborts: bad arguments, a misbehaving daemon and a dead socket are all return codes.
 * - Threads. A client may be shared by any number of threads, each running its own requests
 *   (hundreds at once are fine). A request handle belongs to one thread at a time, except
 *   `dsd_client_request_cancel()`, which any thread may call at any time. There is no
 *   background thread: whichever thread is waiting for an event reads the socket for
 *   everyone and hands each frame to the request it belongs to (docs/CLIENT.md explains why).
 *   Consequence: frames are read only while some thread waits in the library. A request
 *   nobody waits on is paused by the daemon's backpressure, never lost.
 * - The connection dying (daemon stopped, crashed or restarted) ends every pending request:
 *   events that had already arrived are still delivered, then each call fails with
 *   -ECONNRESET and a message saying so. The client cannot be used again; connect anew.
 * - Strings in and out are UTF-8. Memory the library returns is freed with the `*_free()`
 *   function named next to the call; every `*_free()` accepts NULL.
 * - Signals: the library writes with MSG_NOSIGNAL, so a dead daemon never raises SIGPIPE.
 *
 * USAGE
 *
 *   struct dsd_client_params cp = dsd_client_default_params();   // socket from
 *   struct dsd_client *c;                                         // $DEEPSEEKD_SOCKET or
 *   struct dsd_client_error e;                                    // /run/deepseekd/...
 *   if (dsd_client_connect(&cp, &c, &e) < 0) { fprintf(stderr, "%s\n", e.message); ... }
 *
 *   struct dsd_client_message msgs[] = {
 *       {.role = DSD_CLIENT_ROLE_USER, .content = "Why is the sky blue?"},
 *   };
 *   struct dsd_client_generate_params gp = dsd_client_generate_default_params();
 *   gp.messages = msgs;  gp.n_messages = 1;
 *   gp.temperature = 0.6;  gp.max_tokens = 512;  gp.thinking = true;
 *
 *   // streaming:
 *   struct dsd_client_request *r;
 *   if (dsd_client_request_start(c, &gp, &r, &e) < 0) ...;
 *   const struct dsd_client_event *ev;
 *   int rc;
 *   while ((rc = dsd_client_request_next(r, -1, &ev, &e)) > 0) {
 *       if (ev->type == DSD_CLIENT_EVENT_TOKENS) {
 *           fwrite(ev->reasoning, 1, ev->reasoning_len, stderr);
 *           fwrite(ev->text, 1, ev->text_len, stdout);
 *       } else {   // DSD_CLIENT_EVENT_DONE, always the last event
 *           printf("\n[%s, %u tokens]\n", dsd_client_finish_name(ev->done.finish),
 *                  ev->done.usage.completion);
 *       }
 *   }
 *   if (rc < 0) fprintf(stderr, "%s\n", e.message);
 *   dsd_client_request_free(r);
 *
 *   // or blocking:
 *   struct dsd_client_result *res;
 *   if (dsd_client_generate(c, &gp, &res, &e) == 0) puts(res->text);
 *   dsd_client_result_free(res);
 *
 *   dsd_client_free(c);
 *
 * RETURN CODES used throughout (a call's own comment lists the ones it can return):
 *   -EINVAL          a bad argument (the message names it), or the daemon found the request
 *                    invalid (bad_value, wrong_type, missing_field, bad_token)
 *   -ENOMEM          out of memory
 *   -ENOENT, -ECONNREFUSED   no daemon listening on the socket path
 *   -EACCES          not allowed to use the socket (its file permissions): ask to be added
 *                    to the deepseekd group
 *   -EPROTONOSUPPORT the daemon speaks no protocol version this library knows
 *   -EPROTO          the daemon sent something that breaks the protocol (or refused a frame of
 *                    ours as malformed, a library bug); the message says what
 *   -ETIMEDOUT       the call's timeout passed (the request, if any, is still valid)
 *   -ECONNRESET      the daemon closed the connection (also after its fatal frame_timeout or
 *                    idle_timeout error: a frame left half-sent, or a connection left idle)
 *   -ECONNABORTED    dsd_client_free() was called while this request was still held
 *   -EAGAIN          the daemon is still loading its model (not_ready): retry later
 *   -EBUSY           the daemon is overloaded or an in-flight limit was reached: retry later
 *   -ESHUTDOWN       the daemon is draining for shutdown
 *   -E2BIG           the prompt is longer than the daemon allows
 *   -EMSGSIZE        a request or reply does not fit the negotiated frame size
 *   -EOPNOTSUPP      the daemon does not support a requested feature
 *   -EREMOTEIO       the daemon failed internally (or sent an error code this library does
 *                    not know; daemon_code says which)
 */
#ifndef DEEPSEEKD_H
#define DEEPSEEKD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DSD_CLIENT_BUILD)
#define DSD_CLIENT_API __attribute__((visibility("default")))
#else
#define DSD_CLIENT_API
#endif
#define DSD_CLIENT_DEPRECATED(decl, hint) decl __attribute__((deprecated(hint)))

#define DSD_CLIENT_VERSION_MAJOR 0
#define DSD_CLIENT_VERSION_MINOR 1
#define DSD_CLIENT_DEFAULT_SOCKET "/run/deepseekd/deepseekd.sock"
#define DSD_CLIENT_SOCKET_ENV "DEEPSEEKD_SOCKET"

/* Opaque handles. */
struct dsd_client;
struct dsd_client_request;

/* The library's version, "MAJOR.MINOR.PATCH". Never NULL. */
DSD_CLIENT_API const char *dsd_client_version(void);

/* ---- errors ------------------------------------------------------------------------------ */

/* What went wrong, for people. Filled by every call that takes one, on failure only. */
struct dsd_client_error {
    int32_t code;               /* the negative errno the call returned */
    uint32_t daemon_code;       /* the daemon's wire error code (PROTOCOL.md §6), or 0 when
                                   the error did not come from the daemon */
    char message[512];          /* NUL-terminated, names the key, limit or path at fault */
};

/* ---- connecting -------------------------------------------------------------------------- */

struct dsd_client_params {
    const char *socket_path;        /* NULL: $DEEPSEEKD_SOCKET, else DSD_CLIENT_DEFAULT_SOCKET */
    const char *client_name;        /* shown in the daemon's logs; NULL: "libdeepseekd" */
    int32_t timeout_ms;             /* connect + hello + shm setup, and each call that waits
                                       for one reply (info, stats, health, tokenize,
                                       detokenize); < 0 waits forever; default 30000 */
    uint32_t max_frame;             /* largest frame accepted, 0 = the daemon's (default) */
    uint32_t shm_ring_count;        /* output rings = requests streaming through shm at once
                                       (others fall back to frames); default 64 */
    uint32_t shm_ring_capacity;     /* tokens per ring, power of two >= 16; default 4096 */
    uint64_t shm_prompt_capacity;   /* prompt arena, tokens; default 262144 (1 MiB) */
    uint32_t shm_prompt_min_tokens; /* token prompts at least this long go through the arena;
                                       shorter ones inline; default 2048 */
    bool use_shm;                   /* default true; false = everything in socket frames */
};

/* The defaults listed above. */
DSD_CLIENT_API struct dsd_client_params dsd_client_default_params(void);

/*
 * Connects, agrees on the protocol version and sets up shared memory (params->use_shm).
 * params may be NULL (defaults). On success *ret_client is a new client; free it with
 * dsd_client_free().
 *   0                 connected
 *   -EINVAL           a bad parameter (socket path too long, ring capacity not a power of two)
 *   -ENOENT, -ECONNREFUSED   nothing listens at the path
 *   -EACCES           the socket's permissions refuse this user
 *   -EPROTONOSUPPORT  no common protocol version
 *   -EPROTO           the daemon's reply to hello was malformed
 *   -ETIMEDOUT        no reply within params->timeout_ms
 *   -ECONNRESET       the daemon closed the connection during the handshake
 *   -ENOMEM, or another negative errno from socket()/connect()
 * If the daemon refuses the shared memory (or it cannot be created), the client still
 * connects and runs on frames only; dsd_client_get_facts() reports shm_ring_count 0.
 */
DSD_CLIENT_API int dsd_client_connect(const struct dsd_client_params *params,
                                      struct dsd_client **ret_client,
                                      struct dsd_client_error *ret_error);

/* Closes the connection (the daemon cancels this connection's requests) and frees the client.
 * Request handles still held stay valid to free; their calls fail with -ECONNABORTED. NULL is
 * fine. Must not race with other calls on this client except on other requests' handles. */
DSD_CLIENT_API void dsd_client_free(struct dsd_client *client);

/* ---- what the daemon is ------------------------------------------------------------------ */

enum dsd_client_value_type {
    DSD_CLIENT_VALUE_INT = 0,
    DSD_CLIENT_VALUE_FLOAT,
    DSD_CLIENT_VALUE_BOOL,
    DSD_CLIENT_VALUE_STRING,
};

/* One named value of the daemon's configuration or counters. */
struct dsd_client_value {
    const char *name;
    enum dsd_client_value_type type;
    int64_t i;                      /* INT */
    double f;                       /* FLOAT */
    const char *s;                  /* STRING, else NULL */
    bool b;                         /* BOOL */
};

/* Model facts and limits; the `server` list is filled only by dsd_client_get_info(). The
 * library allocates these, so fields may be added at the end in later minor versions. */
struct dsd_client_info {
    uint32_t protocol_version;
    const char *daemon_version;         /* "" when the daemon did not say */
    const char *model_name;             /* "" when the daemon did not say */
    uint32_t vocab_size;
    uint32_t max_context;
    uint32_t n_eos_ids;
    uint32_t eos_ids[8];
    int64_t bos_id;                     /* -1 when the model has none */
    const char *kv_dtype;               /* informational ("fp8_e4m3", "bf16"), maybe "" */
    const char *backend;                /* informational ("cpu", "cuda"), maybe "" */
    uint32_t max_frame;                 /* negotiated frame limit, bytes */
    uint32_t max_prompt_tokens;         /* limits: 0 = not stated */
    uint32_t max_tokens;
    uint32_t max_inflight;
    uint32_t max_top_logprobs;
    uint64_t max_shm_bytes;
    uint32_t shm_ring_count;            /* this connection's shm: 0 = frames only */
    uint32_t shm_ring_capacity;
    uint64_t shm_prompt_capacity;
    uint32_t n_server;                  /* the daemon's running configuration */
    const struct dsd_client_value *server;
};

/* The facts the daemon sent when this client connected (no round trip). Valid until
 * dsd_client_free(). Never NULL for a connected client; NULL for NULL. */
DSD_CLIENT_API const struct dsd_client_info *dsd_client_get_facts(const struct dsd_client *client);

/*
 * Asks the daemon for its facts and running configuration (`info`). Free with
 * dsd_client_info_free().
 *   0, or -EINVAL (NULL argument), -ETIMEDOUT, -ECONNRESET, -ECONNABORTED, -EPROTO, -ENOMEM,
 *   or a daemon refusal mapped as listed at the top of this header.
 */
DSD_CLIENT_API int dsd_client_get_info(struct dsd_client *client,
                                       struct dsd_client_info **ret_info,
                                       struct dsd_client_error *ret_error);
DSD_CLIENT_API void dsd_client_info_free(struct dsd_client_info *info);

struct dsd_client_stats {
    uint32_t n_values;
    const struct dsd_client_value *values;  /* requests_running, tokens_generated_total, ... */
};

/* Asks for the daemon's counters and gauges (`stats`). Free with dsd_client_stats_free().
 * Returns as dsd_client_get_info(). Names are the daemon's; expect new ones. */
DSD_CLIENT_API int dsd_client_get_stats(struct dsd_client *client,
                                        struct dsd_client_stats **ret_stats,
                                        struct dsd_client_error *ret_error);
DSD_CLIENT_API void dsd_client_stats_free(struct dsd_client_stats *stats);

enum dsd_client_health {
    DSD_CLIENT_HEALTH_OK = 0,       /* serving */
    DSD_CLIENT_HEALTH_LOADING,      /* loading the model: retry */
    DSD_CLIENT_HEALTH_DRAINING,     /* shutting down */
    DSD_CLIENT_HEALTH_UNHEALTHY,
};

/* "ok", "loading", "draining", "unhealthy"; "unknown" for other values. */
DSD_CLIENT_API const char *dsd_client_health_name(enum dsd_client_health health);

/*
 * Asks whether the daemon is ready (`health`: cheap, no engine work; what a ping times).
 * detail (may be NULL when detail_size is 0) receives the daemon's explanation, cut to
 * detail_size - 1 bytes and NUL-terminated.
 *   0 with *ret_health set, or the errors of dsd_client_get_info().
 */
DSD_CLIENT_API int dsd_client_get_health(struct dsd_client *client,
                                         enum dsd_client_health *ret_health,
                                         char *detail, size_t detail_size,
                                         struct dsd_client_error *ret_error);

/* ---- prompts ----------------------------------------------------------------------------- */

enum dsd_client_role {
    DSD_CLIENT_ROLE_SYSTEM = 0,
    DSD_CLIENT_ROLE_USER,
    DSD_CLIENT_ROLE_ASSISTANT,
    DSD_CLIENT_ROLE_TOOL,
    DSD_CLIENT_ROLE_DEVELOPER,
};

/* A function call (OpenAI shape): in an assistant message you send back, or assembled in a
 * blocking result. */
struct dsd_client_tool_call {
    const char *id;                 /* may be NULL */
    const char *name;               /* required when sent */
    const char *arguments;          /* JSON text; required when sent */
};

/* A chat message (OpenAI chat shape). NULL strings are absent. */
struct dsd_client_message {
    enum dsd_client_role role;
    const char *content;
    const char *reasoning_content;  /* assistant: earlier reasoning */
    const char *name;
    const char *tool_call_id;       /* tool: which call this answers */
    const struct dsd_client_tool_call *tool_calls;  /* assistant */
    uint32_t n_tool_calls;
};

/*
 * Tokenizes text (+ BOS when add_special) the way `generate` would. *ret_tokens is allocated
 * (free with dsd_client_buffer_free()); it may be NULL when *ret_n_tokens is 0.
 *   0, -EINVAL (NULL argument or invalid UTF-8, reported by the daemon), -EMSGSIZE (the
 *   text or the reply does not fit a frame), or the errors of dsd_client_get_info().
 */
DSD_CLIENT_API int dsd_client_tokenize_text(struct dsd_client *client, const char *text,
                                            bool add_special, uint32_t **ret_tokens,
                                            uint32_t *ret_n_tokens,
                                            struct dsd_client_error *ret_error);

/* Tokenizes a chat as the daemon's chat encoder renders it (the prompt `generate` would use
 * for the same messages, tools and thinking flag). tools_json may be NULL. Returns as
 * dsd_client_tokenize_text(). */
DSD_CLIENT_API int dsd_client_tokenize_chat(struct dsd_client *client,
                                            const struct dsd_client_message *messages,
                                            uint32_t n_messages, const char *tools_json,
                                            bool thinking, uint32_t **ret_tokens,
                                            uint32_t *ret_n_tokens,
                                            struct dsd_client_error *ret_error);

/* Turns token ids back into text (invalid UTF-8 comes back as U+FFFD). *ret_text is
 * NUL-terminated, allocated (free with dsd_client_buffer_free()); *ret_len (may be NULL) is
 * its length. Returns 0, -EINVAL (an id >= vocab size, reported by the daemon), or the
 * errors of dsd_client_tokenize_text(). */
DSD_CLIENT_API int dsd_client_detokenize(struct dsd_client *client, const uint32_t *tokens,
                                         uint32_t n_tokens, bool skip_special, char **ret_text,
                                         size_t *ret_len, struct dsd_client_error *ret_error);

/* Frees memory returned by dsd_client_tokenize_*() and dsd_client_detokenize(). NULL is
 * fine. */
DSD_CLIENT_API void dsd_client_buffer_free(void *buffer);

/* ---- generating -------------------------------------------------------------------------- */

/* Exactly one prompt: prompt_tokens, prompt_text or messages. Sampling defaults are the
 * protocol's (PROTOCOL.md §4.3); the daemon checks bounds and names the key it refuses. */
struct dsd_client_generate_params {
    const uint32_t *prompt_tokens;  /* token ids, used as given (no BOS added) */
    uint32_t n_prompt_tokens;
    const char *prompt_text;        /* raw text, tokenized by the daemon */
    const struct dsd_client_message *messages;  /* a chat, rendered by the daemon */
    uint32_t n_messages;
    const char *tools_json;         /* chat only: the OpenAI `tools` array as JSON text */

    double temperature;             /* 0..100, default 1; 0 = greedy */
    double top_p;                   /* (0, 1], default 1 */
    double min_p;                   /* [0, 1], default 0 */
    double repetition_penalty;      /* (0, 10], default 1 */
    double frequency_penalty;       /* [-2, 2], default 0 */
    double presence_penalty;        /* [-2, 2], default 0 */
    uint32_t top_k;                 /* 0 = off */
    uint32_t max_tokens;            /* 0 = the daemon's limit */
    uint32_t top_logprobs;          /* 0..20 alternatives per token; needs logprobs */
    int32_t priority;               /* -1000..1000, higher first; default 0 */
    uint64_t seed;                  /* used when has_seed: same seed, same tokens */
    const char *const *stop;        /* stop strings (<= 16 of 1..256 bytes) */
    uint32_t n_stop;
    const uint32_t *stop_token_ids; /* extra stop tokens (<= 64) */
    uint32_t n_stop_token_ids;
    int32_t detokenize;             /* text deltas: 1 on, 0 off, -1 (default) = on for text
                                       and chat prompts, off for token prompts */
    int32_t timeout_ms;             /* dsd_client_generate() only: the whole call; < 0
                                       (default) waits forever */

    bool add_special;               /* prompt_text: prepend BOS; default true */
    bool thinking;                  /* chat: thinking mode, reasoning comes separately */
    bool has_seed;
    bool ignore_eos;                /* keep going past EOS (benchmarks) */
    bool logprobs;                  /* each token's logprob (+ top_logprobs alternatives) */
    bool use_shm;                   /* default true: shm ring/arena when the client has them */
};

DSD_CLIENT_API struct dsd_client_generate_params dsd_client_generate_default_params(void);

enum dsd_client_finish {
    DSD_CLIENT_FINISH_STOP = 1,         /* EOS or a stop token id (done.stop_token) */
    DSD_CLIENT_FINISH_LENGTH,           /* max_tokens */
    DSD_CLIENT_FINISH_STOP_STRING,      /* a stop string (done.stop_string; not in the text) */
    DSD_CLIENT_FINISH_TOOL_CALLS,       /* the model ended a tool-call block */
    DSD_CLIENT_FINISH_CANCELLED,        /* dsd_client_request_cancel() */
    DSD_CLIENT_FINISH_CONTEXT_FULL,     /* the context window is full */
    DSD_CLIENT_FINISH_ERROR,            /* failed after it started: done.error_* */
};

/* "stop", "length", "stop_string", "tool_calls", "cancelled", "context_full", "error";
 * "unknown" for other values. */
DSD_CLIENT_API const char *dsd_client_finish_name(enum dsd_client_finish finish);

struct dsd_client_usage {
    uint32_t prompt;                /* prompt tokens */
    uint32_t cached;                /* of which served from the daemon's prefix cache */
    uint32_t completion;            /* generated tokens (a stop token included) */
};

struct dsd_client_timings {         /* measured by the daemon */
    uint64_t queue_us;              /* waiting before scheduling */
    uint64_t first_token_us;        /* accepted -> first token */
    uint64_t total_us;              /* accepted -> done */
    double per_token_us;            /* mean time between generated tokens */
};

struct dsd_client_done {
    enum dsd_client_finish finish;
    int64_t stop_token;             /* FINISH_STOP: the token that stopped (not delivered);
                                       else -1 */
    const char *stop_string;        /* FINISH_STOP_STRING: the string that matched; else NULL */
    struct dsd_client_usage usage;
    struct dsd_client_timings timings;
    uint32_t error_code;            /* FINISH_ERROR: the daemon's wire code, else 0 */
    const char *error_message;      /* FINISH_ERROR: why, else NULL */
};

struct dsd_client_top_logprob {
    uint32_t token;
    double logprob;
};

struct dsd_client_logprob {
    uint32_t token;                 /* the sampled token */
    double logprob;
    uint32_t n_top;
    const struct dsd_client_top_logprob *top;   /* most likely first */
};

/* A streamed piece of a tool call: id and name come in the first piece of an index,
 * arguments is a JSON fragment to append. NULL = nothing of that kind in this piece. */
struct dsd_client_tool_delta {
    uint32_t index;
    const char *id;
    const char *name;
    const char *arguments;
};

enum dsd_client_event_type {
    DSD_CLIENT_EVENT_TOKENS = 1,    /* output of one or more engine steps */
    DSD_CLIENT_EVENT_DONE,          /* the end; always the last event */
};

/* One event of a stream. Everything it points to stays valid until the next
 * dsd_client_request_next() or dsd_client_request_free() on that request. Strings are
 * NUL-terminated and never split a UTF-8 character; absent = NULL with length 0. */
struct dsd_client_event {
    enum dsd_client_event_type type;
    const uint32_t *ids;            /* generated token ids, in order (also in DONE: ids that
                                       arrived with it) */
    uint32_t n_ids;
    const char *text;               /* text delta */
    size_t text_len;
    const char *reasoning;          /* reasoning delta (chat with thinking) */
    size_t reasoning_len;
    const struct dsd_client_tool_delta *tool_calls;
    uint32_t n_tool_calls;
    const struct dsd_client_logprob *logprobs;  /* one per id of this event, when requested */
    uint32_t n_logprobs;
    struct dsd_client_done done;    /* DONE only */
    /* chat: the model wrote a tool call that could not be read (malformed or unterminated);
     * it was skipped, none of its raw text is in text/reasoning/tool_calls, and the stream
     * goes on. One message per line. */
    const char *tool_call_error;
    size_t tool_call_error_len;
    /* DONE only: of done.usage.cached, the tokens each tier of the daemon's prefix cache
     * served (all 0 when nothing was cached or the daemon does not say). Added in 0.1 at the
     * end of the struct, which the library allocates. */
    struct dsd_client_cached_tiers {
        uint32_t device, host, disk;
    } cached_tiers;
};

/*
 * Sends a generation request and returns without waiting for the daemon. Long token prompts
 * go through the shm prompt arena, and the output through an shm ring, when the client has
 * them and params->use_shm is set (requests beyond the free rings use frames; nothing
 * changes for the caller). Free the handle with dsd_client_request_free().
 *   0            sent; *ret_request is the handle
 *   -EINVAL      no prompt or more than one, a NULL string where one is needed, a count
 *                without its array, an unknown role
 *   -EMSGSIZE    the request does not fit the negotiated frame size (put a long token
 *                prompt through shm, or shorten it)
 *   -ECONNRESET, -ECONNABORTED, -ETIMEDOUT (sending stalled beyond the client's timeout;
 *                the connection is then closed, since half a frame was written), -ENOMEM
 * Refusals by the daemon (bad values, limits, not ready) arrive through the first
 * dsd_client_request_next().
 */
DSD_CLIENT_API int dsd_client_request_start(struct dsd_client *client,
                                            const struct dsd_client_generate_params *params,
                                            struct dsd_client_request **ret_request,
                                            struct dsd_client_error *ret_error);

/*
 * Waits for the request's next event, up to timeout_ms (< 0: forever, 0: only what already
 * arrived). While it waits, this thread may read the socket for every request of the
 * client.
 *   1            *ret_event is the next event (DSD_CLIENT_EVENT_DONE is the last)
 *   0            the stream ended: DONE was already returned
 *   -ETIMEDOUT   nothing arrived in time; call again
 *   -EINVAL, -EBUSY, -EAGAIN, -ESHUTDOWN, -E2BIG, -EOPNOTSUPP, ...
 *                the daemon refused the request before it started (see the top of this
 *                header; ret_error has its code and message); the stream is over
 *   -EPROTO      the daemon sent a malformed or impossible event for this request (a frame
 *                that does not decode, tokens before accepted, a ring position out of
 *                bounds); the library cancels the request; the stream is over
 *   -ECONNRESET  the connection died (after every event that had arrived was returned)
 *   -ECONNABORTED  the client was freed
 *   -ENOMEM
 * A request that failed after it started is not an error here: it ends with a DONE whose
 * finish is DSD_CLIENT_FINISH_ERROR.
 */
DSD_CLIENT_API int dsd_client_request_next(struct dsd_client_request *request, int32_t timeout_ms,
                                           const struct dsd_client_event **ret_event,
                                           struct dsd_client_error *ret_error);

/*
 * Asks the daemon to stop the request. The stream goes on to a DONE with finish CANCELLED
 * (tokens already produced stay valid), unless it finished first. Safe from any thread, at
 * any time, more than once.
 *   0            sent, or nothing to do (already finished, already cancelled)
 *   -EINVAL      request is NULL
 *   -ECONNRESET, -ECONNABORTED, -ETIMEDOUT  as dsd_client_request_start()
 */
DSD_CLIENT_API int dsd_client_request_cancel(struct dsd_client_request *request);

/* Frees the handle. A request still running is cancelled first; the library drops the rest
 * of its output. NULL is fine. */
DSD_CLIENT_API void dsd_client_request_free(struct dsd_client_request *request);

/* The whole output of a generation, assembled. */
struct dsd_client_result {
    uint32_t *tokens;               /* every delivered token id */
    uint32_t n_tokens;
    char *text;                     /* NUL-terminated, "" when there is none */
    size_t text_len;
    char *reasoning;                /* NUL-terminated, "" when there is none */
    size_t reasoning_len;
    struct dsd_client_tool_call *tool_calls;    /* assembled from the deltas, by index */
    uint32_t n_tool_calls;
    struct dsd_client_logprob *logprobs;        /* with params->logprobs */
    uint32_t n_logprobs;
    struct dsd_client_done done;
    char *tool_call_errors;         /* every event's tool_call_error, one per line; NULL
                                       when the model wrote no unreadable tool call */
    size_t tool_call_errors_len;
};

/*
 * Runs a generation to the end and collects it (dsd_client_request_start() + next() until
 * DONE). Free *ret_result with dsd_client_result_free().
 *   0            finished: result->done.finish says how (stop, length, cancelled, ...)
 *   -EREMOTEIO   the request failed after it started (finish ERROR): *ret_result is
 *                still set, with what was produced, done.error_code and done.error_message
 *   -ETIMEDOUT   params->timeout_ms passed: the request is cancelled, *ret_result is NULL
 *   any error of dsd_client_request_start() or _next(): *ret_result is NULL
 */
DSD_CLIENT_API int dsd_client_generate(struct dsd_client *client,
                                       const struct dsd_client_generate_params *params,
                                       struct dsd_client_result **ret_result,
                                       struct dsd_client_error *ret_error);
DSD_CLIENT_API void dsd_client_result_free(struct dsd_client_result *result);

#ifdef __cplusplus
}
#endif

#endif
