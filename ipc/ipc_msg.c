/* The schema's small pieces: enum names, defaults, string helpers. */
#include "ipc_msg.h"

#include <string.h>

struct dsd_ipc_str dsd_ipc_s(const char *s)
{
    struct dsd_ipc_str r = {s, s ? (uint32_t)strlen(s) : 0};
    return r;
}

static const char *const finish_names[DSD_IPC_FINISH_COUNT] = {
    [DSD_IPC_FINISH_STOP] = "stop",
    [DSD_IPC_FINISH_LENGTH] = "length",
    [DSD_IPC_FINISH_STOP_STRING] = "stop_string",
    [DSD_IPC_FINISH_TOOL_CALLS] = "tool_calls",
    [DSD_IPC_FINISH_CANCELLED] = "cancelled",
    [DSD_IPC_FINISH_CONTEXT_FULL] = "context_full",
    [DSD_IPC_FINISH_ERROR] = "error",
};

const char *dsd_ipc_finish_name(enum dsd_ipc_finish f)
{
    if ((int)f <= DSD_IPC_FINISH_NONE || f >= DSD_IPC_FINISH_COUNT)
        return NULL;
    return finish_names[f];
}

static const char *const role_names[DSD_IPC_ROLE_COUNT] = {
    "system", "user", "assistant", "tool", "developer",
};

const char *dsd_ipc_role_name(enum dsd_ipc_role r)
{
    if ((int)r < 0 || r >= DSD_IPC_ROLE_COUNT)
        return NULL;
    return role_names[r];
}

static const char *const health_names[DSD_IPC_STATUS_COUNT] = {
    "ok", "loading", "draining", "unhealthy",
};

const char *dsd_ipc_health_name(enum dsd_ipc_health h)
{
    if ((int)h < 0 || h >= DSD_IPC_STATUS_COUNT)
        return NULL;
    return health_names[h];
}

void dsd_ipc_sampling_default(struct dsd_ipc_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 1.0;
    s->top_p = 1.0;
    s->repetition_penalty = 1.0;
}

void dsd_ipc_generate_default(struct dsd_ipc_generate *g)
{
    memset(g, 0, sizeof *g);
    dsd_ipc_sampling_default(&g->sampling);
    g->prompt.add_special = true;
    g->notify = true;
}

/* ---- UTF-8 ---- */

bool dsd_ipc_utf8_valid(const void *str, size_t n)
{
    const unsigned char *s = str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (cc & 0x3f);
        }
        if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
            return false;
        if (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
            return false;
        i += len;
    }
    return true;
}

size_t dsd_ipc_utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t cut = max;
    /* Back off over continuation bytes so the cut lands before a lead byte. */
    while (cut > 0 && max - cut < 4 && ((unsigned char)s[cut] & 0xc0) == 0x80)
        cut--;
    return cut;
}
