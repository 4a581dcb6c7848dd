/*
 * The message encoder: struct -> one frame, through msgpack-c's packer writing straight into a
 * struct dsd_ipc_buf.
 *
 * Maps are written with a map16 header whose count is patched when the map is closed, so
 * optional keys can be decided while writing instead of counted in a separate pass. map16 for
 * a small map is legal msgpack (the spec allows any width that fits); it costs 2 bytes per map.
 */
#include <errno.h>
#include <msgpack.h>
#include <string.h>

#include "ipc_msg.h"

struct enc {
    struct dsd_ipc_buf *b;
    msgpack_packer pk;
    bool oom;
};

struct map {
    size_t at;      /* offset of the map16 header */
    uint32_t n;
};

static int buf_write(void *data, const char *buf, size_t len)
{
    struct enc *e = data;
    if (e->oom || dsd_ipc_buf_append(e->b, buf, len) < 0) {
        e->oom = true;
        return -1;
    }
    return 0;
}

static struct map map_open(struct enc *e)
{
    struct map m = {e->b->len, 0};
    static const uint8_t hdr[3] = {0xde, 0, 0};
    buf_write(e, (const char *)hdr, 3);
    return m;
}

static void map_close(struct enc *e, const struct map *m)
{
    if (e->oom)
        return;
    e->b->data[m->at + 1] = (uint8_t)(m->n >> 8);
    e->b->data[m->at + 2] = (uint8_t)m->n;
}

static void key(struct enc *e, struct map *m, const char *k)
{
    size_t n = strlen(k);
    m->n++;
    msgpack_pack_str(&e->pk, n);
    msgpack_pack_str_body(&e->pk, k, n);
}

static void put_str(struct enc *e, struct dsd_ipc_str s)
{
    msgpack_pack_str(&e->pk, s.len);
    if (s.len)
        msgpack_pack_str_body(&e->pk, s.ptr, s.len);
}

static void kv_str(struct enc *e, struct map *m, const char *k, struct dsd_ipc_str s)
{
    if (!s.ptr)
        return;
    key(e, m, k);
    put_str(e, s);
}

static void kv_cstr(struct enc *e, struct map *m, const char *k, const char *s)
{
    kv_str(e, m, k, dsd_ipc_s(s));
}

static void kv_uint(struct enc *e, struct map *m, const char *k, uint64_t v)
{
    key(e, m, k);
    msgpack_pack_uint64(&e->pk, v);
}

static void kv_int(struct enc *e, struct map *m, const char *k, int64_t v)
{
    key(e, m, k);
    msgpack_pack_int64(&e->pk, v);
}

static void kv_num(struct enc *e, struct map *m, const char *k, double v)
{
    key(e, m, k);
    msgpack_pack_double(&e->pk, v);
}

static void kv_bool(struct enc *e, struct map *m, const char *k, bool v)
{
    key(e, m, k);
    if (v)
        msgpack_pack_true(&e->pk);
    else
        msgpack_pack_false(&e->pk);
}

static void put_u32s(struct enc *e, const uint32_t *v, uint32_t n)
{
    msgpack_pack_array(&e->pk, n);
    for (uint32_t i = 0; i < n; i++)
        msgpack_pack_uint32(&e->pk, v[i]);
}

/* ---- requests --------------------------------------------------------------------------- */

static int put_chat_msg(struct enc *e, const struct dsd_ipc_chat_msg *c, struct dsd_err *err)
{
    const char *role = dsd_ipc_role_name(c->role);
    if (!role)
        return dsd_errf(err, -EINVAL, "chat message role %d is not a role", (int)c->role);
    if (c->n_tool_calls > DSD_IPC_MAX_TOOL_CALLS || (c->n_tool_calls && !c->tool_calls))
        return dsd_errf(err, -EINVAL, "chat message has %u tool calls (at most %u)",
                        c->n_tool_calls, DSD_IPC_MAX_TOOL_CALLS);
    struct map m = map_open(e);
    kv_cstr(e, &m, "role", role);
    kv_str(e, &m, "content", c->content);
    kv_str(e, &m, "reasoning_content", c->reasoning);
    if (c->n_tool_calls) {
        key(e, &m, "tool_calls");
        msgpack_pack_array(&e->pk, c->n_tool_calls);
        for (uint32_t i = 0; i < c->n_tool_calls; i++) {
            const struct dsd_ipc_tool_call *t = &c->tool_calls[i];
            struct map cm = map_open(e);
            kv_str(e, &cm, "id", t->id);
            kv_cstr(e, &cm, "type", "function");
            key(e, &cm, "function");
            struct map fm = map_open(e);
            kv_str(e, &fm, "name", t->name.ptr ? t->name : dsd_ipc_s(""));
            kv_str(e, &fm, "arguments", t->arguments.ptr ? t->arguments : dsd_ipc_s(""));
            map_close(e, &fm);
            map_close(e, &cm);
        }
    }
    kv_str(e, &m, "tool_call_id", c->tool_call_id);
    kv_str(e, &m, "name", c->name);
    map_close(e, &m);
    return 0;
}

static int put_prompt(struct enc *e, struct map *m, const struct dsd_ipc_prompt *p,
                      bool allow_tokens, struct dsd_err *err)
{
    switch (p->kind) {
    case DSD_IPC_PROMPT_TOKENS:
        if (!allow_tokens)
            break;
        if (p->n_tokens > DSD_IPC_MAX_TOKENS || (p->n_tokens && !p->tokens))
            return dsd_errf(err, -EINVAL, "prompt has %u tokens (at most %u)", p->n_tokens,
                            DSD_IPC_MAX_TOKENS);
        key(e, m, "tokens");
        put_u32s(e, p->tokens, p->n_tokens);
        return 0;
    case DSD_IPC_PROMPT_SPAN: {
        if (!allow_tokens)
            break;
        key(e, m, "prompt_span");
        struct map sm = map_open(e);
        kv_uint(e, &sm, "offset", p->span_offset);
        kv_uint(e, &sm, "count", p->span_count);
        map_close(e, &sm);
        return 0;
    }
    case DSD_IPC_PROMPT_TEXT:
        kv_str(e, m, "text", p->text.ptr ? p->text : dsd_ipc_s(""));
        if (!p->add_special)
            kv_bool(e, m, "add_special", false);
        return 0;
    case DSD_IPC_PROMPT_CHAT:
        if (p->n_messages > DSD_IPC_MAX_MESSAGES || (p->n_messages && !p->messages))
            return dsd_errf(err, -EINVAL, "chat has %u messages (at most %u)", p->n_messages,
                            DSD_IPC_MAX_MESSAGES);
        key(e, m, "messages");
        msgpack_pack_array(&e->pk, p->n_messages);
        for (uint32_t i = 0; i < p->n_messages; i++) {
            int rc = put_chat_msg(e, &p->messages[i], err);
            if (rc)
                return rc;
        }
        kv_str(e, m, "tools", p->tools);
        if (p->thinking)
            kv_bool(e, m, "thinking", true);
        return 0;
    default:
        break;
    }
    return dsd_errf(err, -EINVAL, "prompt kind %d cannot be sent here", (int)p->kind);
}

static int put_generate(struct enc *e, struct map *m, const struct dsd_ipc_generate *g,
                        struct dsd_err *err)
{
    int rc = put_prompt(e, m, &g->prompt, true, err);
    if (rc)
        return rc;
    const struct dsd_ipc_sampling *s = &g->sampling;
    if (s->temperature != 1.0)
        kv_num(e, m, "temperature", s->temperature);
    if (s->top_p != 1.0)
        kv_num(e, m, "top_p", s->top_p);
    if (s->top_k)
        kv_uint(e, m, "top_k", s->top_k);
    if (s->min_p != 0.0)
        kv_num(e, m, "min_p", s->min_p);
    if (s->repetition_penalty != 1.0)
        kv_num(e, m, "repetition_penalty", s->repetition_penalty);
    if (s->frequency_penalty != 0.0)
        kv_num(e, m, "frequency_penalty", s->frequency_penalty);
    if (s->presence_penalty != 0.0)
        kv_num(e, m, "presence_penalty", s->presence_penalty);
    if (s->has_seed)
        kv_uint(e, m, "seed", s->seed);
    if (s->max_tokens)
        kv_uint(e, m, "max_tokens", s->max_tokens);
    if (s->ignore_eos)
        kv_bool(e, m, "ignore_eos", true);
    if (s->n_stop) {
        if (s->n_stop > DSD_IPC_MAX_STOP || !s->stop)
            return dsd_errf(err, -EINVAL, "%u stop strings (at most %u)", s->n_stop,
                            DSD_IPC_MAX_STOP);
        key(e, m, "stop");
        msgpack_pack_array(&e->pk, s->n_stop);
        for (uint32_t i = 0; i < s->n_stop; i++)
            put_str(e, s->stop[i]);
    }
    if (s->n_stop_ids) {
        if (s->n_stop_ids > DSD_IPC_MAX_STOP_IDS || !s->stop_ids)
            return dsd_errf(err, -EINVAL, "%u stop token ids (at most %u)", s->n_stop_ids,
                            DSD_IPC_MAX_STOP_IDS);
        key(e, m, "stop_token_ids");
        put_u32s(e, s->stop_ids, s->n_stop_ids);
    }
    if (s->logprobs)
        kv_bool(e, m, "logprobs", true);
    if (s->top_logprobs)
        kv_uint(e, m, "top_logprobs", s->top_logprobs);
    if (s->priority)
        kv_int(e, m, "priority", s->priority);
    if (g->use_ring)
        kv_uint(e, m, "ring", g->ring);
    if (!g->notify)
        kv_bool(e, m, "notify", false);
    bool detok_default = g->prompt.kind == DSD_IPC_PROMPT_TEXT ||
                         g->prompt.kind == DSD_IPC_PROMPT_CHAT;
    if (g->detokenize != detok_default)
        kv_bool(e, m, "detokenize", g->detokenize);
    return 0;
}

/* ---- replies ---------------------------------------------------------------------------- */

static void put_kv_list(struct enc *e, const struct dsd_ipc_kv *kv, uint32_t n)
{
    struct map m = map_open(e);
    for (uint32_t i = 0; i < n; i++) {
        m.n++;
        put_str(e, kv[i].key.ptr ? kv[i].key : dsd_ipc_s(""));
        switch (kv[i].kind) {
        case DSD_IPC_KV_INT: msgpack_pack_int64(&e->pk, kv[i].i); break;
        case DSD_IPC_KV_FLOAT: msgpack_pack_double(&e->pk, kv[i].f); break;
        case DSD_IPC_KV_BOOL:
            if (kv[i].b)
                msgpack_pack_true(&e->pk);
            else
                msgpack_pack_false(&e->pk);
            break;
        default: put_str(e, kv[i].s.ptr ? kv[i].s : dsd_ipc_s("")); break;
        }
    }
    map_close(e, &m);
}

static int put_facts(struct enc *e, struct map *m, const struct dsd_ipc_hello_ok *h,
                     struct dsd_err *err)
{
    const struct dsd_ipc_model_facts *f = &h->model;
    if (f->n_eos > DSD_IPC_MAX_EOS)
        return dsd_errf(err, -EINVAL, "%u eos ids (at most %u)", f->n_eos, DSD_IPC_MAX_EOS);
    kv_uint(e, m, "version", h->version);
    kv_str(e, m, "daemon", h->daemon);
    key(e, m, "model");
    struct map mm = map_open(e);
    kv_str(e, &mm, "name", f->name);
    kv_uint(e, &mm, "vocab_size", f->vocab_size);
    kv_uint(e, &mm, "max_context", f->max_context);
    key(e, &mm, "eos_ids");
    put_u32s(e, f->eos_ids, f->n_eos);
    if (f->has_bos)
        kv_uint(e, &mm, "bos_id", f->bos_id);
    kv_str(e, &mm, "kv_dtype", f->kv_dtype);
    kv_str(e, &mm, "backend", f->backend);
    map_close(e, &mm);
    const struct dsd_ipc_limits *l = &h->limits;
    key(e, m, "limits");
    struct map lm = map_open(e);
    kv_uint(e, &lm, "max_frame", l->max_frame);
    if (l->max_prompt_tokens)
        kv_uint(e, &lm, "max_prompt_tokens", l->max_prompt_tokens);
    if (l->max_tokens)
        kv_uint(e, &lm, "max_tokens", l->max_tokens);
    if (l->max_inflight)
        kv_uint(e, &lm, "max_inflight", l->max_inflight);
    if (l->max_top_logprobs)
        kv_uint(e, &lm, "max_top_logprobs", l->max_top_logprobs);
    if (l->max_shm_bytes)
        kv_uint(e, &lm, "max_shm_bytes", l->max_shm_bytes);
    map_close(e, &lm);
    return 0;
}

static int put_tokens(struct enc *e, struct map *m, const struct dsd_ipc_tokens *t,
                      struct dsd_err *err)
{
    if (t->n_ids > DSD_IPC_MAX_TOKENS || (t->n_ids && !t->ids) ||
        t->n_logprobs > DSD_IPC_MAX_TOKENS || (t->n_logprobs && !t->logprobs) ||
        t->n_tool_calls > DSD_IPC_MAX_TOOL_CALLS || (t->n_tool_calls && !t->tool_calls))
        return dsd_errf(err, -EINVAL, "tokens event with bad counts (%u ids, %u logprobs, %u "
                        "tool calls)", t->n_ids, t->n_logprobs, t->n_tool_calls);
    if (t->n_ids) {
        key(e, m, "ids");
        put_u32s(e, t->ids, t->n_ids);
    }
    if (t->has_pos)
        kv_uint(e, m, "pos", t->pos);
    kv_str(e, m, "text", t->text);
    kv_str(e, m, "reasoning", t->reasoning);
    if (t->n_tool_calls) {
        key(e, m, "tool_calls");
        msgpack_pack_array(&e->pk, t->n_tool_calls);
        for (uint32_t i = 0; i < t->n_tool_calls; i++) {
            const struct dsd_ipc_tool_delta *d = &t->tool_calls[i];
            struct map dm = map_open(e);
            kv_uint(e, &dm, "index", d->index);
            kv_str(e, &dm, "id", d->id);
            kv_str(e, &dm, "name", d->name);
            kv_str(e, &dm, "arguments", d->arguments);
            map_close(e, &dm);
        }
    }
    kv_str(e, m, "tool_call_error", t->tool_call_error);
    if (t->n_logprobs) {
        key(e, m, "logprobs");
        msgpack_pack_array(&e->pk, t->n_logprobs);
        for (uint32_t i = 0; i < t->n_logprobs; i++) {
            const struct dsd_ipc_logprob *lp = &t->logprobs[i];
            if (lp->n_top > DSD_IPC_MAX_TOP_LOGPROBS || (lp->n_top && !lp->top))
                return dsd_errf(err, -EINVAL, "logprob entry with %u top entries (at most %u)",
                                lp->n_top, DSD_IPC_MAX_TOP_LOGPROBS);
            struct map lm = map_open(e);
            kv_uint(e, &lm, "token", lp->token);
            kv_num(e, &lm, "logprob", lp->logprob);
            if (lp->n_top) {
                key(e, &lm, "top");
                msgpack_pack_array(&e->pk, lp->n_top);
                for (uint32_t k = 0; k < lp->n_top; k++) {
                    msgpack_pack_array(&e->pk, 2);
                    msgpack_pack_uint32(&e->pk, lp->top[k].token);
                    msgpack_pack_double(&e->pk, lp->top[k].logprob);
                }
            }
            map_close(e, &lm);
        }
    }
    if (t->stalled)
        kv_bool(e, m, "stalled", true);
    return 0;
}

static int put_done(struct enc *e, struct map *m, const struct dsd_ipc_done *d,
                    struct dsd_err *err)
{
    const char *finish = dsd_ipc_finish_name(d->finish);
    if (!finish)
        return dsd_errf(err, -EINVAL, "done needs a finish reason (got %d)", (int)d->finish);
    kv_cstr(e, m, "finish", finish);
    if (d->has_stop_token)
        kv_uint(e, m, "stop_token", d->stop_token);
    kv_str(e, m, "stop_string", d->stop_string);
    key(e, m, "usage");
    struct map um = map_open(e);
    kv_uint(e, &um, "prompt", d->usage.prompt);
    kv_uint(e, &um, "cached", d->usage.cached);
    kv_uint(e, &um, "completion", d->usage.completion);
    if (d->usage.has_tiers) {
        kv_uint(e, &um, "cached_device", d->usage.cached_device);
        kv_uint(e, &um, "cached_host", d->usage.cached_host);
        kv_uint(e, &um, "cached_disk", d->usage.cached_disk);
    }
    map_close(e, &um);
    key(e, m, "timings");
    struct map tm = map_open(e);
    kv_uint(e, &tm, "queue_us", d->timings.queue_us);
    kv_uint(e, &tm, "first_token_us", d->timings.first_token_us);
    kv_uint(e, &tm, "total_us", d->timings.total_us);
    kv_num(e, &tm, "per_token_us", d->timings.per_token_us);
    map_close(e, &tm);
    if (d->has_ring_end)
        kv_uint(e, m, "ring_end", d->ring_end);
    if (d->has_error) {
        key(e, m, "error");
        struct map em = map_open(e);
        kv_uint(e, &em, "code", d->error_code);
        kv_str(e, &em, "msg", d->error_msg.ptr ? d->error_msg : dsd_ipc_s(""));
        map_close(e, &em);
    }
    return 0;
}

/* ---- dispatch --------------------------------------------------------------------------- */

static int put_body(struct enc *e, struct map *m, const struct dsd_ipc_msg *msg,
                    struct dsd_err *err)
{
    switch (msg->type) {
    case DSD_IPC_HELLO:
        kv_uint(e, m, "min_version", msg->hello.min_version);
        kv_uint(e, m, "max_version", msg->hello.max_version);
        kv_str(e, m, "client", msg->hello.client);
        if (msg->hello.max_frame)
            kv_uint(e, m, "max_frame", msg->hello.max_frame);
        return 0;
    case DSD_IPC_GENERATE:
        return put_generate(e, m, &msg->generate, err);
    case DSD_IPC_TOKENIZE:
        return put_prompt(e, m, &msg->tokenize.prompt, false, err);
    case DSD_IPC_DETOKENIZE:
        if (msg->detokenize.n_tokens > DSD_IPC_MAX_TOKENS ||
            (msg->detokenize.n_tokens && !msg->detokenize.tokens))
            return dsd_errf(err, -EINVAL, "detokenize of %u tokens (at most %u)",
                            msg->detokenize.n_tokens, DSD_IPC_MAX_TOKENS);
        key(e, m, "tokens");
        put_u32s(e, msg->detokenize.tokens, msg->detokenize.n_tokens);
        if (msg->detokenize.skip_special)
            kv_bool(e, m, "skip_special", true);
        return 0;
    case DSD_IPC_SHM_ATTACH:
    case DSD_IPC_CANCEL:
    case DSD_IPC_RESUME:
    case DSD_IPC_INFO:
    case DSD_IPC_STATS:
    case DSD_IPC_HEALTH:
        return 0;
    case DSD_IPC_HELLO_OK:
        return put_facts(e, m, &msg->hello_ok, err);
    case DSD_IPC_INFO_OK: {
        int rc = put_facts(e, m, &msg->info_ok.facts, err);
        if (rc)
            return rc;
        if (msg->info_ok.n_server) {
            if (msg->info_ok.n_server > DSD_IPC_MAX_KV || !msg->info_ok.server)
                return dsd_errf(err, -EINVAL, "%u server entries (at most %u)",
                                msg->info_ok.n_server, DSD_IPC_MAX_KV);
            key(e, m, "server");
            put_kv_list(e, msg->info_ok.server, msg->info_ok.n_server);
        }
        return 0;
    }
    case DSD_IPC_SHM_OK:
        kv_uint(e, m, "size", msg->shm_ok.size);
        kv_uint(e, m, "prompt_capacity", msg->shm_ok.prompt_capacity);
        kv_uint(e, m, "ring_count", msg->shm_ok.ring_count);
        kv_uint(e, m, "ring_capacity", msg->shm_ok.ring_capacity);
        return 0;
    case DSD_IPC_ACCEPTED:
        kv_uint(e, m, "prompt_tokens", msg->accepted.prompt_tokens);
        if (msg->accepted.has_ring_start)
            kv_uint(e, m, "ring_start", msg->accepted.ring_start);
        return 0;
    case DSD_IPC_TOKENS:
        return put_tokens(e, m, &msg->tokens, err);
    case DSD_IPC_DONE:
        return put_done(e, m, &msg->done, err);
    case DSD_IPC_TOKENIZE_OK:
        if (msg->tokenize_ok.n_tokens > DSD_IPC_MAX_TOKENS ||
            (msg->tokenize_ok.n_tokens && !msg->tokenize_ok.tokens))
            return dsd_errf(err, -EINVAL, "tokenize_ok of %u tokens (at most %u)",
                            msg->tokenize_ok.n_tokens, DSD_IPC_MAX_TOKENS);
        key(e, m, "tokens");
        put_u32s(e, msg->tokenize_ok.tokens, msg->tokenize_ok.n_tokens);
        return 0;
    case DSD_IPC_DETOKENIZE_OK:
        kv_str(e, m, "text", msg->detokenize_ok.text.ptr ? msg->detokenize_ok.text
                                                         : dsd_ipc_s(""));
        return 0;
    case DSD_IPC_STATS_OK:
        if (msg->stats_ok.n_stats > DSD_IPC_MAX_KV || (msg->stats_ok.n_stats && !msg->stats_ok.stats))
            return dsd_errf(err, -EINVAL, "%u stats entries (at most %u)", msg->stats_ok.n_stats,
                            DSD_IPC_MAX_KV);
        key(e, m, "stats");
        put_kv_list(e, msg->stats_ok.stats, msg->stats_ok.n_stats);
        return 0;
    case DSD_IPC_HEALTH_OK: {
        const char *st = dsd_ipc_health_name(msg->health_ok.status);
        if (!st)
            return dsd_errf(err, -EINVAL, "health status %d is not a status",
                            (int)msg->health_ok.status);
        kv_cstr(e, m, "status", st);
        kv_str(e, m, "detail", msg->health_ok.detail);
        return 0;
    }
    case DSD_IPC_ERROR: {
        kv_uint(e, m, "code", msg->error.code);
        kv_cstr(e, m, "name", dsd_ipc_code_name(msg->error.code));
        kv_str(e, m, "msg", msg->error.msg.ptr ? msg->error.msg : dsd_ipc_s(""));
        if (msg->error.fatal)
            kv_bool(e, m, "fatal", true);
        return 0;
    }
    default:
        return dsd_errf(err, -EINVAL, "message type %d cannot be encoded", (int)msg->type);
    }
}

int dsd_ipc_encode(struct dsd_ipc_buf *out, const struct dsd_ipc_msg *msg, uint32_t max_frame,
                   struct dsd_err *err)
{
    size_t start = out->len;
    const char *tname = dsd_ipc_type_name(msg->type);
    if (!tname)
        return dsd_errf(err, -EINVAL, "message type %d cannot be encoded", (int)msg->type);
    struct enc e = {.b = out};
    msgpack_packer_init(&e.pk, &e, buf_write);
    static const uint8_t zero[DSD_IPC_PREFIX_BYTES] = {0};
    buf_write(&e, (const char *)zero, sizeof zero);
    struct map m = map_open(&e);
    kv_cstr(&e, &m, "t", tname);
    kv_uint(&e, &m, "id", msg->id);
    int rc = put_body(&e, &m, msg, err);
    map_close(&e, &m);
    if (rc == 0 && e.oom)
        rc = dsd_errf(err, -ENOMEM, "out of memory encoding a %s frame", tname);
    size_t body = out->len - start - DSD_IPC_PREFIX_BYTES;
    if (rc == 0 && (body > max_frame || body > DSD_IPC_FRAME_CEIL))
        rc = dsd_errf(err, -EMSGSIZE, "%s frame of %zu bytes exceeds the frame limit of %u bytes",
                      tname, body, max_frame);
    if (rc) {
        out->len = start;
        return rc;
    }
    dsd_ipc_put_prefix(out->data + start, (uint32_t)body);
    return 0;
}

/* Replaces every byte that does not start a valid UTF-8 sequence with '?': error messages
 * quote peer input cut at a byte limit, which may split a character. */
static void utf8_sanitize(char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (len <= n - i && dsd_ipc_utf8_valid(s + i, len)) {
            i += len;
            continue;
        }
        s[i++] = '?';
    }
}

int dsd_ipc_encode_fail(struct dsd_ipc_buf *out, const struct dsd_ipc_fail *fail,
                        uint32_t max_frame, struct dsd_err *err)
{
    struct dsd_ipc_msg m = {.type = DSD_IPC_ERROR, .id = fail->id};
    char msg[sizeof fail->err.msg];
    size_t n = strnlen(fail->err.msg, sizeof fail->err.msg);
    memcpy(msg, fail->err.msg, n);
    utf8_sanitize(msg, n);
    m.error.code = fail->code;
    m.error.msg.ptr = msg;
    m.error.msg.len = (uint32_t)dsd_ipc_utf8_cut(msg, n, DSD_IPC_MAX_MSG);
    m.error.fatal = dsd_ipc_code_fatal(fail->code);
    return dsd_ipc_encode(out, &m, max_frame, err);
}
