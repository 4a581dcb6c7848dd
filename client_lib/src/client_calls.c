/*
 * client_lib/src/client_calls.c: the calls that send one request and wait for one reply:
 * info, stats, health, tokenize, detokenize; and the public names of enums.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

static const char *str_or_empty(struct dsd_ipc_str s)
{
    return s.ptr ? s.ptr : "";
}

void client_facts_fill(struct dsd_client_info *info, const struct dsd_ipc_hello_ok *h)
{
    info->protocol_version = h->version;
    info->daemon_version = str_or_empty(h->daemon);
    info->model_name = str_or_empty(h->model.name);
    info->vocab_size = h->model.vocab_size;
    info->max_context = h->model.max_context;
    info->n_eos_ids = h->model.n_eos > 8 ? 8 : h->model.n_eos;
    memcpy(info->eos_ids, h->model.eos_ids, info->n_eos_ids * sizeof(uint32_t));
    info->bos_id = h->model.has_bos ? (int64_t)h->model.bos_id : -1;
    info->kv_dtype = str_or_empty(h->model.kv_dtype);
    info->backend = str_or_empty(h->model.backend);
    info->max_frame = h->limits.max_frame;
    info->max_prompt_tokens = h->limits.max_prompt_tokens;
    info->max_tokens = h->limits.max_tokens;
    info->max_inflight = h->limits.max_inflight;
    info->max_top_logprobs = h->limits.max_top_logprobs;
    info->max_shm_bytes = h->limits.max_shm_bytes;
}

/* A name -> value list that points into a decoded message, which it owns. The public struct
 * comes first so its pointer is the allocation's. */
struct info_box {
    struct dsd_client_info info;
    struct dsd_ipc_msg msg;
};

struct stats_box {
    struct dsd_client_stats stats;
    struct dsd_ipc_msg msg;
};

static struct dsd_client_value *values_convert(const struct dsd_ipc_kv *kv, uint32_t n)
{
    struct dsd_client_value *v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        v[i].name = str_or_empty(kv[i].key);
        switch (kv[i].kind) {
        case DSD_IPC_KV_INT: v[i].type = DSD_CLIENT_VALUE_INT; v[i].i = kv[i].i; break;
        case DSD_IPC_KV_FLOAT: v[i].type = DSD_CLIENT_VALUE_FLOAT; v[i].f = kv[i].f; break;
        case DSD_IPC_KV_BOOL: v[i].type = DSD_CLIENT_VALUE_BOOL; v[i].b = kv[i].b; break;
        case DSD_IPC_KV_STR:
            v[i].type = DSD_CLIENT_VALUE_STRING;
            v[i].s = str_or_empty(kv[i].s);
            break;
        }
    }
    return v;
}

DSD_CLIENT_API int dsd_client_get_info(struct dsd_client *c, struct dsd_client_info **ret_info,
                                       struct dsd_client_error *e)
{
    if (!c || !ret_info)
        return client_seterr(e, -EINVAL, 0, "dsd_client_get_info: NULL argument");
    *ret_info = NULL;
    struct info_box *b = calloc(1, sizeof *b);
    if (!b)
        return client_seterr(e, -ENOMEM, 0, "out of memory");
    struct dsd_ipc_msg m = {.type = DSD_IPC_INFO};
    int rc = client_call(c, &m, DSD_IPC_INFO_OK, -1, &b->msg, e);
    if (rc < 0) {
        free(b);
        return rc;
    }
    client_facts_fill(&b->info, &b->msg.info_ok.facts);
    b->info.shm_ring_count = c->facts.shm_ring_count;
    b->info.shm_ring_capacity = c->facts.shm_ring_capacity;
    b->info.shm_prompt_capacity = c->facts.shm_prompt_capacity;
    struct dsd_client_value *v = values_convert(b->msg.info_ok.server, b->msg.info_ok.n_server);
    if (!v) {
        dsd_ipc_msg_free(&b->msg);
        free(b);
        return client_seterr(e, -ENOMEM, 0, "out of memory");
    }
    b->info.server = v;
    b->info.n_server = b->msg.info_ok.n_server;
    *ret_info = &b->info;
    return 0;
}

DSD_CLIENT_API void dsd_client_info_free(struct dsd_client_info *info)
{
    if (!info)
        return;
    struct info_box *b = (struct info_box *)info;
    free((void *)b->info.server);
    dsd_ipc_msg_free(&b->msg);
    free(b);
}

DSD_CLIENT_API int dsd_client_get_stats(struct dsd_client *c, struct dsd_client_stats **ret_stats,
                                        struct dsd_client_error *e)
{
    if (!c || !ret_stats)
        return client_seterr(e, -EINVAL, 0, "dsd_client_get_stats: NULL argument");
    *ret_stats = NULL;
    struct stats_box *b = calloc(1, sizeof *b);
    if (!b)
        return client_seterr(e, -ENOMEM, 0, "out of memory");
    struct dsd_ipc_msg m = {.type = DSD_IPC_STATS};
    int rc = client_call(c, &m, DSD_IPC_STATS_OK, -1, &b->msg, e);
    if (rc < 0) {
        free(b);
        return rc;
    }
    struct dsd_client_value *v = values_convert(b->msg.stats_ok.stats, b->msg.stats_ok.n_stats);
    if (!v) {
        dsd_ipc_msg_free(&b->msg);
        free(b);
        return client_seterr(e, -ENOMEM, 0, "out of memory");
    }
    b->stats.values = v;
    b->stats.n_values = b->msg.stats_ok.n_stats;
    *ret_stats = &b->stats;
    return 0;
}

DSD_CLIENT_API void dsd_client_stats_free(struct dsd_client_stats *stats)
{
    if (!stats)
        return;
    struct stats_box *b = (struct stats_box *)stats;
    free((void *)b->stats.values);
    dsd_ipc_msg_free(&b->msg);
    free(b);
}

DSD_CLIENT_API const char *dsd_client_health_name(enum dsd_client_health h)
{
    switch (h) {
    case DSD_CLIENT_HEALTH_OK: return "ok";
    case DSD_CLIENT_HEALTH_LOADING: return "loading";
    case DSD_CLIENT_HEALTH_DRAINING: return "draining";
    case DSD_CLIENT_HEALTH_UNHEALTHY: return "unhealthy";
    }
    return "unknown";
}

DSD_CLIENT_API int dsd_client_get_health(struct dsd_client *c, enum dsd_client_health *ret_health,
                                         char *detail, size_t detail_size,
                                         struct dsd_client_error *e)
{
    if (!c || !ret_health || (detail_size && !detail))
        return client_seterr(e, -EINVAL, 0, "dsd_client_get_health: NULL argument");
    struct dsd_ipc_msg m = {.type = DSD_IPC_HEALTH};
    struct dsd_ipc_msg reply;
    int rc = client_call(c, &m, DSD_IPC_HEALTH_OK, -1, &reply, e);
    if (rc < 0)
        return rc;
    switch (reply.health_ok.status) {
    case DSD_IPC_STATUS_OK: *ret_health = DSD_CLIENT_HEALTH_OK; break;
    case DSD_IPC_STATUS_LOADING: *ret_health = DSD_CLIENT_HEALTH_LOADING; break;
    case DSD_IPC_STATUS_DRAINING: *ret_health = DSD_CLIENT_HEALTH_DRAINING; break;
    default: *ret_health = DSD_CLIENT_HEALTH_UNHEALTHY; break;
    }
    if (detail_size) {
        size_t n = reply.health_ok.detail.ptr ? reply.health_ok.detail.len : 0;
        if (n >= detail_size)
            n = dsd_ipc_utf8_cut(reply.health_ok.detail.ptr, n, detail_size - 1);
        if (n)
            memcpy(detail, reply.health_ok.detail.ptr, n);
        detail[n] = '\0';
    }
    dsd_ipc_msg_free(&reply);
    return 0;
}

static int tokens_out(struct dsd_ipc_msg *reply, uint32_t **ret_tokens, uint32_t *ret_n,
                      struct dsd_client_error *e)
{
    uint32_t n = reply->tokenize_ok.n_tokens;
    uint32_t *t = NULL;
    if (n) {
        t = malloc((size_t)n * sizeof *t);
        if (!t) {
            dsd_ipc_msg_free(reply);
            return client_seterr(e, -ENOMEM, 0, "out of memory for %u tokens", n);
        }
        memcpy(t, reply->tokenize_ok.tokens, (size_t)n * sizeof *t);
    }
    dsd_ipc_msg_free(reply);
    *ret_tokens = t;
    *ret_n = n;
    return 0;
}

DSD_CLIENT_API int dsd_client_tokenize_text(struct dsd_client *c, const char *text,
                                            bool add_special, uint32_t **ret_tokens,
                                            uint32_t *ret_n_tokens, struct dsd_client_error *e)
{
    if (!c || !text || !ret_tokens || !ret_n_tokens)
        return client_seterr(e, -EINVAL, 0, "dsd_client_tokenize_text: NULL argument");
    *ret_tokens = NULL;
    *ret_n_tokens = 0;
    size_t len = strlen(text);
    if (len > UINT32_MAX)
        return client_seterr(e, -EMSGSIZE, 0, "text of %zu bytes is too long", len);
    struct dsd_ipc_msg m = {.type = DSD_IPC_TOKENIZE};
    m.tokenize.prompt.kind = DSD_IPC_PROMPT_TEXT;
    m.tokenize.prompt.text = (struct dsd_ipc_str){text, (uint32_t)len};
    m.tokenize.prompt.add_special = add_special;
    struct dsd_ipc_msg reply;
    int rc = client_call(c, &m, DSD_IPC_TOKENIZE_OK, -1, &reply, e);
    if (rc < 0)
        return rc;
    return tokens_out(&reply, ret_tokens, ret_n_tokens, e);
}

DSD_CLIENT_API int dsd_client_tokenize_chat(struct dsd_client *c,
                                            const struct dsd_client_message *messages,
                                            uint32_t n_messages, const char *tools_json,
                                            bool thinking, uint32_t **ret_tokens,
                                            uint32_t *ret_n_tokens, struct dsd_client_error *e)
{
    if (!c || !messages || !n_messages || !ret_tokens || !ret_n_tokens)
        return client_seterr(e, -EINVAL, 0, "dsd_client_tokenize_chat: NULL argument or no "
                             "messages");
    *ret_tokens = NULL;
    *ret_n_tokens = 0;
    struct dsd_ipc_chat_msg *wire;
    int rc = client_messages_convert(messages, n_messages, &wire, e);
    if (rc < 0)
        return rc;
    struct dsd_ipc_msg m = {.type = DSD_IPC_TOKENIZE};
    m.tokenize.prompt.kind = DSD_IPC_PROMPT_CHAT;
    m.tokenize.prompt.messages = wire;
    m.tokenize.prompt.n_messages = n_messages;
    m.tokenize.prompt.tools = dsd_ipc_s(tools_json);
    m.tokenize.prompt.thinking = thinking;
    struct dsd_ipc_msg reply;
    rc = client_call(c, &m, DSD_IPC_TOKENIZE_OK, -1, &reply, e);
    free(wire);
    if (rc < 0)
        return rc;
    return tokens_out(&reply, ret_tokens, ret_n_tokens, e);
}

DSD_CLIENT_API int dsd_client_detokenize(struct dsd_client *c, const uint32_t *tokens,
                                         uint32_t n_tokens, bool skip_special, char **ret_text,
                                         size_t *ret_len, struct dsd_client_error *e)
{
    if (!c || (n_tokens && !tokens) || !ret_text)
        return client_seterr(e, -EINVAL, 0, "dsd_client_detokenize: NULL argument");
    *ret_text = NULL;
    if (ret_len)
        *ret_len = 0;
    struct dsd_ipc_msg m = {.type = DSD_IPC_DETOKENIZE};
    m.detokenize = (struct dsd_ipc_detokenize){.n_tokens = n_tokens, .tokens = tokens,
                                               .skip_special = skip_special};
    struct dsd_ipc_msg reply;
    int rc = client_call(c, &m, DSD_IPC_DETOKENIZE_OK, -1, &reply, e);
    if (rc < 0)
        return rc;
    size_t len = reply.detokenize_ok.text.len;
    char *t = malloc(len + 1);
    if (!t) {
        dsd_ipc_msg_free(&reply);
        return client_seterr(e, -ENOMEM, 0, "out of memory");
    }
    if (len)
        memcpy(t, reply.detokenize_ok.text.ptr, len);
    t[len] = '\0';
    dsd_ipc_msg_free(&reply);
    *ret_text = t;
    if (ret_len)
        *ret_len = len;
    return 0;
}

DSD_CLIENT_API void dsd_client_buffer_free(void *buffer)
{
    free(buffer);
}
