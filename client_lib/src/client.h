/*
 * client_lib/src/client.h (internal): the state behind struct dsd_client and
 * struct dsd_client_request, shared by the library's source files.
 *
 * Threading model (docs/CLIENT.md has the reasoning):
 *   - `lock` guards everything in struct dsd_client except the reader, the read buffer and the
 *     fields set once during connect; `cond` (CLOCK_MONOTONIC) is broadcast whenever a request
 *     gets a message or a failure, when the reader role is released, and when the connection
 *     dies.
 *   - The reader role: a waiting thread that finds `reading` false sets it, drops `lock`,
 *     reads and decodes whatever the socket has (poll + read, bounded by its own deadline),
 *     takes `lock` again and dispatches every frame to its request's queue. There is no
 *     background thread.
 *   - `send_lock` serializes whole frames on the socket. Lock order: send_lock, then lock.
 *     Nothing sends while holding `lock` (a send may wait for socket space, and dispatch must
 *     never wait behind it).
 *   - A request handle is used by one thread at a time (its owner); only cancel may come
 *     from elsewhere. The owner converts messages into events outside `lock`; the ring
 *     consumer and the event scratch buffers belong to the owner.
 */
#ifndef DSD_CLIENT_INTERNAL_H
#define DSD_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "deepseekd.h"
#include "ipc_frame.h"
#include "ipc_msg.h"
#include "ipc_shm.h"

#define CLIENT_TABLE_SIZE 1024u          /* hash buckets of in-flight ids (power of two) */
#define CLIENT_READ_CHUNK (64u << 10)    /* bytes per read() of the reader role */

/* One frame from the daemon, decoded (or the reason it did not decode), queued for its
 * request. */
struct client_msg {
    struct client_msg *next;
    struct dsd_ipc_msg m;               /* type NONE when decoding failed */
    uint32_t fail_code;                 /* decoding failure: wire code, */
    uint64_t fail_id;                   /* the frame's id when readable, */
    char *fail_text;                    /* and the decoder's message (malloc'd) */
};

enum client_req_kind {
    CLIENT_REQ_CALL = 0,                /* one request, one reply (hello, info, tokenize...) */
    CLIENT_REQ_GENERATE,
};

struct dsd_client_request {
    struct dsd_client *c;
    uint64_t id;
    enum client_req_kind kind;
    enum dsd_ipc_type expect;           /* CALL: the reply type that answers it */
    struct dsd_client_request *hnext;   /* hash chain of the in-flight table */

    /* guarded by c->lock */
    struct client_msg *qhead, *qtail;   /* frames not yet turned into events */
    bool in_table;                      /* the daemon still owes this id frames */
    bool accepted;
    bool cancel_sent;
    bool zombie;                        /* freed by its owner; gone when the daemon is done */
    bool owner_done;                    /* the owner will not read the ring again */
    int fail;                           /* < 0: the stream ends with this error (after the
                                           queue drains) */
    struct dsd_client_error fail_err;
    int32_t ring;                       /* shm output ring, -1 for frame output */
    bool ring_ready;                    /* consumer initialized at ring_start */
    bool span_held;                     /* the prompt arena span below is reserved */
    uint64_t span_off;
    uint32_t span_n;
    uint32_t prompt_tokens;

    /* owner thread only */
    bool finished;                      /* DONE or the final error was returned */
    struct dsd_ring_consumer cons;
    struct dsd_ipc_msg cur;             /* the message behind the last event */
    struct dsd_client_event ev;
    uint32_t *ids;
    uint32_t ids_cap;
    struct dsd_client_tool_delta *tools;
    uint32_t tools_cap;
    struct dsd_client_logprob *lps;
    uint32_t lps_cap;
    struct dsd_client_top_logprob *tops;
    uint64_t tops_cap;
};

struct client_span {
    uint64_t off;
    uint32_t n;
};

struct dsd_client {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_mutex_t send_lock;
    int fd;

    /* guarded by lock */
    uint32_t refs;                      /* the user's handle + every request not yet freed */
    bool reading;                       /* a thread holds the reader role */
    bool user_freed;
    uint64_t next_id;
    struct dsd_client_request *table[CLIENT_TABLE_SIZE];
    uint32_t n_inflight;
    uint8_t *ring_busy;                 /* one byte per shm ring */
    struct client_span *spans;          /* reserved prompt arena spans, sorted by offset */
    uint32_t n_spans, spans_cap;

    /* the connection's death: 0 while alive, else the errno every call now fails with;
     * written under lock, read without it by the send path */
    _Atomic int dead;
    struct dsd_client_error dead_err;   /* guarded by lock */

    /* reader role only */
    struct dsd_ipc_reader reader;
    uint8_t *rbuf;

    /* set during connect, then read-only */
    int32_t timeout_ms;
    uint32_t max_frame;
    bool shm_on;
    struct dsd_shm shm;
    uint32_t shm_prompt_min;
    struct dsd_ipc_msg hello;           /* the hello_ok, owning the strings facts points to */
    struct dsd_client_info facts;
};

/* ---- client_error.c ---------------------------------------------------------------------- */

/* Fills e (may be NULL) and returns code. */
int client_seterr(struct dsd_client_error *e, int code, uint32_t daemon_code, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));
/* The negative errno for a daemon error code (PROTOCOL.md §6). */
int client_errno_for_code(uint32_t code);
/* Fills e from an `error` frame and returns the mapped errno. */
int client_error_from_msg(struct dsd_client_error *e, const struct dsd_ipc_error *err);

/* ---- client_io.c ------------------------------------------------------------------------- */

int64_t client_now_ns(void);
/* The absolute CLOCK_MONOTONIC deadline timeout_ms from now; INT64_MAX for < 0. */
int64_t client_deadline(int32_t timeout_ms);

/* Sends one whole frame (fd >= 0 travels with its first byte), waiting at most the client's
 * timeout for socket space. A frame cut in the middle kills the connection. Must be called
 * without c->lock. Returns 0 or a negative errno (e filled). */
int client_send(struct dsd_client *c, const struct dsd_ipc_buf *frame, int fd,
                struct dsd_client_error *e);
/* Encodes m and sends it. */
int client_send_msg(struct dsd_client *c, const struct dsd_ipc_msg *m, int fd,
                    struct dsd_client_error *e);
/* Sends a `cancel` or `resume` for id; errors are recorded on the connection only. */
int client_send_simple(struct dsd_client *c, enum dsd_ipc_type type, uint64_t id);

/* With c->lock held: waits until r has a queued message or a failure, reading the socket in
 * the reader role when nobody else does. Returns 0 or -ETIMEDOUT. */
int client_wait(struct dsd_client *c, struct dsd_client_request *r, int64_t deadline);

/* With c->lock held: ends the connection with code and message (first death wins): fails
 * every in-flight request, frees zombies, shuts the socket down, wakes every waiter. */
void client_die(struct dsd_client *c, int code, uint32_t daemon_code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* With c->lock held. */
void client_table_add(struct dsd_client *c, struct dsd_client_request *r);
void client_table_remove(struct dsd_client *c, struct dsd_client_request *r);
struct dsd_client_request *client_table_find(struct dsd_client *c, uint64_t id);
/* Marks r failed with e's code and message (the owner sees it after the queued messages). */
void client_request_fail(struct dsd_client_request *r, int code, uint32_t daemon_code,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Gives back r's prompt arena span (once the daemon has copied it, or never will). */
void client_release_span(struct dsd_client *c, struct dsd_client_request *r);
/* Gives back r's ring once both sides are finished with it: the daemon (r is out of the
 * table) and the owner (owner_done). Ring reuse before that would mix two streams. */
void client_ring_settle(struct dsd_client *c, struct dsd_client_request *r);
/* r leaves the in-flight table; a zombie is freed. */
void client_request_retire(struct dsd_client *c, struct dsd_client_request *r);

void client_msg_free(struct client_msg *q);

/* ---- client_conn.c ----------------------------------------------------------------------- */

/* A new request registered in the table (c->lock must NOT be held). NULL on ENOMEM or a
 * dead connection (e filled). */
struct dsd_client_request *client_request_new(struct dsd_client *c, enum client_req_kind kind,
                                              struct dsd_client_error *e);
/* Frees a request that is out of the table (c->lock held); returns true when the client's
 * last reference went away (the caller then destroys it after unlocking). */
bool client_request_destroy_locked(struct dsd_client *c, struct dsd_client_request *r);
/* Frees the client's memory (no lock held, refs 0). */
void client_destroy(struct dsd_client *c);

/* One request, one reply: sends m (with its id set here) and waits for the reply of type
 * expect within the client's timeout. On success *ret_msg owns the reply (free it with
 * dsd_ipc_msg_free()). fd >= 0 travels with the frame. */
int client_call(struct dsd_client *c, struct dsd_ipc_msg *m, enum dsd_ipc_type expect, int fd,
                struct dsd_ipc_msg *ret_msg, struct dsd_client_error *e);

/* ---- client_calls.c ---------------------------------------------------------------------- */

/* Converts hello_ok/info_ok facts into the public struct (strings point into the message). */
void client_facts_fill(struct dsd_client_info *info, const struct dsd_ipc_hello_ok *h);

/* ---- client_request.c -------------------------------------------------------------------- */

/* Converts the public chat messages into the wire form; *ret_msgs and the tool-call arrays
 * are one allocation freed with free(). */
int client_messages_convert(const struct dsd_client_message *in, uint32_t n,
                            struct dsd_ipc_chat_msg **ret_msgs, struct dsd_client_error *e);

#endif
