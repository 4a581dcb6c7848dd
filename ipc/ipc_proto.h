/*
 * ipc/ipc_proto.h: the constants of the deepseekd wire protocol (docs/PROTOCOL.md): version,
 * frame limits, message types, error codes, and the failure record every decoder fills.
 *
 * The rest of ipc/ builds on this:
 *   ipc_frame.h  the length-prefixed framing (incremental reader, growable buffer)
 *   ipc_scan.h   the bounded msgpack pre-scan that runs before msgpack-c sees any byte
 *   ipc_msg.h    message structs, encoder and decoder
 *   ipc_shm.h    the shared-memory region and its token rings
 *   ipc_fd.h     passing the memfd with SCM_RIGHTS
 *
 * A decoding failure is never a crash and never an abort: it is a struct dsd_ipc_fail with a
 * wire error code (DSD_IPC_E_*, PROTOCOL.md §6), the request id when it could be read (else
 * 0, meaning "about the connection") and a message fit to send back in an `error` frame:
 *
 *   struct dsd_ipc_fail fail;
 *   if (dsd_ipc_decode(body, len, DSD_IPC_TO_DAEMON, &msg, &fail) < 0) {
 *       send_error(conn, fail.id, fail.code, fail.err.msg);
 *       if (dsd_ipc_code_fatal(fail.code)) close_connection(conn);
 *   }
 */
#ifndef DSD_IPC_PROTO_H
#define DSD_IPC_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define DSD_IPC_VERSION 1           /* the protocol version this code speaks */

/* Frame limits (PROTOCOL.md §2). Before hello completes both sides use DSD_IPC_HELLO_FRAME;
 * hello negotiates a value in [DSD_IPC_HELLO_FRAME, DSD_IPC_FRAME_CEIL]. */
#define DSD_IPC_HELLO_FRAME   (64u << 10)
#define DSD_IPC_DEFAULT_FRAME (4u << 20)
#define DSD_IPC_FRAME_CEIL    (64u << 20)
#define DSD_IPC_PREFIX_BYTES  4

/* Decoder limits (PROTOCOL.md §10). */
#define DSD_IPC_MAX_DEPTH      8
#define DSD_IPC_MAX_OBJECTS    (1u << 20)

/* Schema bounds (PROTOCOL.md §4, §5). */
#define DSD_IPC_MAX_TOKENS        (1u << 24)  /* entries of any token-id array */
#define DSD_IPC_MAX_MESSAGES      65536u
#define DSD_IPC_MAX_TOOL_CALLS    128u
#define DSD_IPC_MAX_STOP          16u
#define DSD_IPC_MAX_STOP_LEN      256u
#define DSD_IPC_MAX_STOP_IDS      64u
#define DSD_IPC_MAX_TOP_LOGPROBS  20u
#define DSD_IPC_MAX_EOS           8u
#define DSD_IPC_MAX_KV            256u
#define DSD_IPC_MAX_KV_KEY        64u
#define DSD_IPC_MAX_NAME          256u        /* tool names, ids, model name */
#define DSD_IPC_MAX_SHORT         32u         /* kv_dtype, backend */
#define DSD_IPC_MAX_CLIENT        128u        /* hello.client, hello_ok.daemon */
#define DSD_IPC_MAX_MSG           1024u       /* error msg, health detail, kv string values */
#define DSD_IPC_MAX_PRIORITY      1000

/* Message types; the wire carries the names from dsd_ipc_type_name(). */
enum dsd_ipc_type {
    DSD_IPC_NONE = 0,
    /* client -> daemon */
    DSD_IPC_HELLO,
    DSD_IPC_SHM_ATTACH,
    DSD_IPC_GENERATE,
    DSD_IPC_CANCEL,
    DSD_IPC_RESUME,
    DSD_IPC_TOKENIZE,
    DSD_IPC_DETOKENIZE,
    DSD_IPC_INFO,
    DSD_IPC_STATS,
    DSD_IPC_HEALTH,
    /* daemon -> client */
    DSD_IPC_HELLO_OK,
    DSD_IPC_SHM_OK,
    DSD_IPC_ACCEPTED,
    DSD_IPC_TOKENS,
    DSD_IPC_DONE,
    DSD_IPC_TOKENIZE_OK,
    DSD_IPC_DETOKENIZE_OK,
    DSD_IPC_INFO_OK,
    DSD_IPC_STATS_OK,
    DSD_IPC_HEALTH_OK,
    DSD_IPC_ERROR,
    DSD_IPC_TYPE_COUNT
};

/* Which way a frame travels; a type of the other direction is DSD_IPC_E_UNKNOWN_TYPE. */
enum dsd_ipc_dir {
    DSD_IPC_TO_DAEMON = 0,
    DSD_IPC_TO_CLIENT = 1,
};

/* Wire error codes (PROTOCOL.md §6). */
enum dsd_ipc_code {
    DSD_IPC_E_FRAME_TOO_LARGE = 100,
    DSD_IPC_E_BAD_MSGPACK = 101,
    DSD_IPC_E_TOO_COMPLEX = 102,
    DSD_IPC_E_NOT_A_MAP = 103,
    DSD_IPC_E_PROTOCOL_VIOLATION = 104,
    DSD_IPC_E_FRAME_TIMEOUT = 105,
    DSD_IPC_E_MISSING_FIELD = 200,
    DSD_IPC_E_WRONG_TYPE = 201,
    DSD_IPC_E_BAD_VALUE = 202,
    DSD_IPC_E_UNKNOWN_TYPE = 203,
    DSD_IPC_E_HELLO_REQUIRED = 300,
    DSD_IPC_E_VERSION_UNSUPPORTED = 301,
    /* 302 is reserved: it was `permission_denied`, which no daemon ever sent (access is the
     * socket file's mode, PROTOCOL.md §1); the number is never given another meaning. */
    DSD_IPC_E_DUPLICATE_ID = 303,
    DSD_IPC_E_TOO_MANY_REQUESTS = 304,
    DSD_IPC_E_SHM_INVALID = 305,
    DSD_IPC_E_RING_UNAVAILABLE = 306,
    DSD_IPC_E_IDLE_TIMEOUT = 307,
    DSD_IPC_E_PROMPT_TOO_LONG = 400,
    DSD_IPC_E_BAD_TOKEN = 401,
    DSD_IPC_E_UNSUPPORTED = 402,
    DSD_IPC_E_RING_CORRUPT = 403,
    DSD_IPC_E_STALL_TIMEOUT = 404,
    DSD_IPC_E_RESULT_TOO_LARGE = 405,
    DSD_IPC_E_OVERLOADED = 500,
    DSD_IPC_E_NOT_READY = 501,
    DSD_IPC_E_SHUTTING_DOWN = 502,
    DSD_IPC_E_INTERNAL = 503,
};

/* What went wrong with one frame (or one shm/fd check): the code for the `error` frame, the
 * id it answers (0 when unknown or about the connection) and the message. */
struct dsd_ipc_fail {
    uint32_t code;          /* enum dsd_ipc_code */
    uint64_t id;
    struct dsd_err err;
};

/* Fills fail (may be NULL) and returns ret, so failures are one line:
 *   return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_VALUE, "\"top_p\" is %g, ...", v); */
int dsd_ipc_failf(struct dsd_ipc_fail *fail, int ret, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The wire name of a type ("generate"), or NULL for DSD_IPC_NONE and out-of-range values. */
const char *dsd_ipc_type_name(enum dsd_ipc_type type);
/* The direction a type travels in. */
enum dsd_ipc_dir dsd_ipc_type_dir(enum dsd_ipc_type type);
/* The type whose name is the len bytes at name, or DSD_IPC_NONE. */
enum dsd_ipc_type dsd_ipc_type_from_name(const char *name, uint32_t len);

/* The name of an error code ("bad_value"), or NULL for a code not in the table. */
const char *dsd_ipc_code_name(uint32_t code);
/* Whether the daemon closes the connection after an error with this code. Unknown codes are
 * reported as fatal (a client that does not know a code cannot know the connection's state). */
bool dsd_ipc_code_fatal(uint32_t code);

#endif
