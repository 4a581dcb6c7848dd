/*
 * client_lib/src/client_error.c: error records, and the mapping from the daemon's wire error
 * codes (PROTOCOL.md §6) to the errno values the API documents.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "client.h"

int client_seterr(struct dsd_client_error *e, int code, uint32_t daemon_code, const char *fmt,
                  ...)
{
    if (!e)
        return code;
    e->code = code;
    e->daemon_code = daemon_code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return code;
}

int client_errno_for_code(uint32_t code)
{
    switch (code) {
    case DSD_IPC_E_MISSING_FIELD:
    case DSD_IPC_E_WRONG_TYPE:
    case DSD_IPC_E_BAD_VALUE:
    case DSD_IPC_E_BAD_TOKEN:
        return -EINVAL;
    case DSD_IPC_E_UNKNOWN_TYPE:
    case DSD_IPC_E_UNSUPPORTED:
        return -EOPNOTSUPP;
    case DSD_IPC_E_VERSION_UNSUPPORTED:
        return -EPROTONOSUPPORT;
    /* The daemon closed an idle or stalled-mid-frame connection (fatal, PROTOCOL.md §6). */
    case DSD_IPC_E_FRAME_TIMEOUT:
    case DSD_IPC_E_IDLE_TIMEOUT:
        return -ECONNRESET;
    case DSD_IPC_E_TOO_MANY_REQUESTS:
    case DSD_IPC_E_OVERLOADED:
        return -EBUSY;
    case DSD_IPC_E_NOT_READY:
        return -EAGAIN;
    case DSD_IPC_E_SHUTTING_DOWN:
        return -ESHUTDOWN;
    case DSD_IPC_E_PROMPT_TOO_LONG:
        return -E2BIG;
    case DSD_IPC_E_RESULT_TOO_LARGE:
    case DSD_IPC_E_FRAME_TOO_LARGE:
        return -EMSGSIZE;
    case DSD_IPC_E_STALL_TIMEOUT:
        return -ETIMEDOUT;
    /* Codes that mean the daemon found our frames malformed or our shm use impossible: a
     * protocol disagreement between this library and the daemon. */
    case DSD_IPC_E_BAD_MSGPACK:
    case DSD_IPC_E_TOO_COMPLEX:
    case DSD_IPC_E_NOT_A_MAP:
    case DSD_IPC_E_PROTOCOL_VIOLATION:
    case DSD_IPC_E_HELLO_REQUIRED:
    case DSD_IPC_E_DUPLICATE_ID:
    case DSD_IPC_E_SHM_INVALID:
    case DSD_IPC_E_RING_UNAVAILABLE:
    case DSD_IPC_E_RING_CORRUPT:
        return -EPROTO;
    default:
        return -EREMOTEIO;              /* internal, and codes newer than this library */
    }
}

int client_error_from_msg(struct dsd_client_error *e, const struct dsd_ipc_error *err)
{
    int code = client_errno_for_code(err->code);
    const char *name = dsd_ipc_code_name(err->code);
    return client_seterr(e, code, err->code, "deepseekd refused the request (%s, code %u): %s",
                         name ? name : "unknown error", err->code,
                         err->msg.ptr ? err->msg.ptr : "(no message)");
}
