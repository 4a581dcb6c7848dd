#include "ipc_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const type_names[DSD_IPC_TYPE_COUNT] = {
    [DSD_IPC_HELLO] = "hello",
    [DSD_IPC_SHM_ATTACH] = "shm_attach",
    [DSD_IPC_GENERATE] = "generate",
    [DSD_IPC_CANCEL] = "cancel",
    [DSD_IPC_RESUME] = "resume",
    [DSD_IPC_TOKENIZE] = "tokenize",
    [DSD_IPC_DETOKENIZE] = "detokenize",
    [DSD_IPC_INFO] = "info",
    [DSD_IPC_STATS] = "stats",
    [DSD_IPC_HEALTH] = "health",
    [DSD_IPC_HELLO_OK] = "hello_ok",
    [DSD_IPC_SHM_OK] = "shm_ok",
    [DSD_IPC_ACCEPTED] = "accepted",
    [DSD_IPC_TOKENS] = "tokens",
    [DSD_IPC_DONE] = "done",
    [DSD_IPC_TOKENIZE_OK] = "tokenize_ok",
    [DSD_IPC_DETOKENIZE_OK] = "detokenize_ok",
    [DSD_IPC_INFO_OK] = "info_ok",
    [DSD_IPC_STATS_OK] = "stats_ok",
    [DSD_IPC_HEALTH_OK] = "health_ok",
    [DSD_IPC_ERROR] = "error",
};

const char *dsd_ipc_type_name(enum dsd_ipc_type type)
{
    if ((int)type <= DSD_IPC_NONE || type >= DSD_IPC_TYPE_COUNT)
        return NULL;
    return type_names[type];
}

enum dsd_ipc_dir dsd_ipc_type_dir(enum dsd_ipc_type type)
{
    return type >= DSD_IPC_HELLO_OK ? DSD_IPC_TO_CLIENT : DSD_IPC_TO_DAEMON;
}

enum dsd_ipc_type dsd_ipc_type_from_name(const char *name, uint32_t len)
{
    for (int t = DSD_IPC_NONE + 1; t < DSD_IPC_TYPE_COUNT; t++)
        if (strlen(type_names[t]) == len && memcmp(type_names[t], name, len) == 0)
            return (enum dsd_ipc_type)t;
    return DSD_IPC_NONE;
}

static const struct {
    uint32_t code;
    const char *name;
    bool fatal;
} codes[] = {
    {DSD_IPC_E_FRAME_TOO_LARGE, "frame_too_large", true},
    {DSD_IPC_E_BAD_MSGPACK, "bad_msgpack", false},
    {DSD_IPC_E_TOO_COMPLEX, "too_complex", false},
    {DSD_IPC_E_NOT_A_MAP, "not_a_map", false},
    {DSD_IPC_E_PROTOCOL_VIOLATION, "protocol_violation", true},
    {DSD_IPC_E_FRAME_TIMEOUT, "frame_timeout", true},
    {DSD_IPC_E_MISSING_FIELD, "missing_field", false},
    {DSD_IPC_E_WRONG_TYPE, "wrong_type", false},
    {DSD_IPC_E_BAD_VALUE, "bad_value", false},
    {DSD_IPC_E_UNKNOWN_TYPE, "unknown_type", false},
    {DSD_IPC_E_HELLO_REQUIRED, "hello_required", true},
    {DSD_IPC_E_VERSION_UNSUPPORTED, "version_unsupported", true},
    {DSD_IPC_E_DUPLICATE_ID, "duplicate_id", false},
    {DSD_IPC_E_TOO_MANY_REQUESTS, "too_many_requests", false},
    {DSD_IPC_E_SHM_INVALID, "shm_invalid", false},
    {DSD_IPC_E_RING_UNAVAILABLE, "ring_unavailable", false},
    {DSD_IPC_E_IDLE_TIMEOUT, "idle_timeout", true},
    {DSD_IPC_E_PROMPT_TOO_LONG, "prompt_too_long", false},
    {DSD_IPC_E_BAD_TOKEN, "bad_token", false},
    {DSD_IPC_E_UNSUPPORTED, "unsupported", false},
    {DSD_IPC_E_RING_CORRUPT, "ring_corrupt", false},
    {DSD_IPC_E_STALL_TIMEOUT, "stall_timeout", false},
    {DSD_IPC_E_RESULT_TOO_LARGE, "result_too_large", false},
    {DSD_IPC_E_OVERLOADED, "overloaded", false},
    {DSD_IPC_E_NOT_READY, "not_ready", false},
    {DSD_IPC_E_SHUTTING_DOWN, "shutting_down", false},
    {DSD_IPC_E_INTERNAL, "internal", false},
};

const char *dsd_ipc_code_name(uint32_t code)
{
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].code == code)
            return codes[i].name;
    return NULL;
}

bool dsd_ipc_code_fatal(uint32_t code)
{
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].code == code)
            return codes[i].fatal;
    return true;
}

int dsd_ipc_failf(struct dsd_ipc_fail *fail, int ret, uint32_t code, const char *fmt, ...)
{
    if (!fail)
        return ret;
    fail->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail->err.msg, sizeof fail->err.msg, fmt, ap);
    va_end(ap);
    return ret;
}
