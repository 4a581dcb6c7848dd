/*
 * What each message does (docs/PROTOCOL.md §4-§8), on the io thread: validation, prompt
 * building (token ids, the shm arena, text, chat), limits, the request table, and turning the
 * engine's events into `tokens`/`done` frames or ring writes.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "chat_encoder.h"
#include "log.h"
#include "server_internal.h"

#define DAEMON_VERSION "0.1.0"

/* ---- request table ------------------------------------------------------------------ */

static unsigned slot_of(uint64_t handle)
{
    return (unsigned)(handle * 0x9e3779b97f4a7c15ull >> 54) % REQ_TABLE_SIZE;
}

struct io_request *session_find(struct server *s, uint64_t handle)
{
    for (struct io_request *r = s->req_table[slot_of(handle)]; r; r = r->next_in_table)
        if (r->handle == handle)
            return r;
    return NULL;
}

static struct io_request *find_wire(struct conn *c, uint64_t wire_id)
{
    for (struct io_request *r = c->requests; r; r = r->next_in_conn)
        if (r->wire_id == wire_id)
            return r;
    return NULL;
}

static void unlink_request(struct server *s, struct io_request *r)
{
    struct io_request **pp = &s->req_table[slot_of(r->handle)];
    while (*pp && *pp != r)
        pp = &(*pp)->next_in_table;
    if (*pp)
        *pp = r->next_in_table;
    if (r->conn) {
        struct conn *c = r->conn;
        for (pp = &c->requests; *pp; pp = &(*pp)->next_in_conn)
            if (*pp == r) {
                *pp = r->next_in_conn;
                break;
            }
        c->n_inflight--;
        if (r->use_ring && c->ring_owner && c->ring_owner[r->ring] == r->handle)
            c->ring_owner[r->ring] = 0;
    }
    srv_uid(s, r->uid)->inflight--;
    free(r);
}

int session_inflight_total(const struct server *s)
{
    int n = 0;
    for (int i = 0; i < REQ_TABLE_SIZE; i++)
        for (struct io_request *r = s->req_table[i]; r; r = r->next_in_table)
            n++;
    return n;
}

void session_drain_cancel_all(struct server *s)
{
    for (int i = 0; i < REQ_TABLE_SIZE; i++)
        for (struct io_request *r = s->req_table[i]; r; r = r->next_in_table)
            dsd_engine_cancel(s->p.engine, r->handle);
}

/* A connection is going away: cancel its requests. Their records stay (conn = NULL) until
 * the engine's DONE events arrive, so a handle is never reused while the engine holds it. */
void session_conn_closed(struct server *s, struct conn *c)
{
    for (struct io_request *r = c->requests; r; r = r->next_in_conn) {
        dsd_engine_cancel(s->p.engine, r->handle);
        r->conn = NULL;
        c->n_inflight--;
    }
    c->requests = NULL;
}

/* ---- facts ------------------------------------------------------------------------- */

static int max_prompt(const struct server *s)
{
    int ctx = s->p.max_context;
    int lim = s->p.limits.max_prompt_tokens;
    return lim > 0 && lim < ctx ? lim : ctx;
}

static void fill_facts(const struct server *s, const struct conn *c, struct dsd_ipc_hello_ok *h)
{
    const struct dsd_model_config *m = s->p.model_cfg;
    h->version = DSD_IPC_VERSION;
    h->daemon = dsd_ipc_s("deepseekd " DAEMON_VERSION);
    h->model.name = dsd_ipc_s(s->p.model_name);
    h->model.vocab_size = (uint32_t)m->vocab_size;
    h->model.max_context = (uint32_t)s->p.max_context;
    h->model.n_eos = 1;
    h->model.eos_ids[0] = m->eos_token_id >= 0 ? (uint32_t)m->eos_token_id : 1;
    h->model.has_bos = m->bos_token_id >= 0;
    h->model.bos_id = m->bos_token_id >= 0 ? (uint32_t)m->bos_token_id : 0;
    h->model.kv_dtype = dsd_ipc_s(s->p.kv_dtype_name);
    h->model.backend = dsd_ipc_s(s->p.backend_name ? s->p.backend_name : "cpu");
    h->limits.max_frame = c ? c->max_frame : s->p.limits.max_frame;
    h->limits.max_prompt_tokens = (uint32_t)max_prompt(s);
    h->limits.max_tokens = (uint32_t)s->p.limits.max_tokens;
    h->limits.max_inflight = (uint32_t)s->p.limits.max_inflight;
    h->limits.max_top_logprobs = DSD_IPC_MAX_TOP_LOGPROBS;
    h->limits.max_shm_bytes = s->p.limits.max_shm_bytes;
}

static void on_hello(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    const struct dsd_ipc_hello *h = &m->hello;
    if (c->hello_done) {
        srv_send_error(s, c, m->id, DSD_IPC_E_BAD_VALUE, "hello: a connection says hello once");
        return;
    }
    if (h->min_version > DSD_IPC_VERSION || h->max_version < DSD_IPC_VERSION) {
        srv_send_error(s, c, m->id, DSD_IPC_E_VERSION_UNSUPPORTED,
                       "hello: this daemon speaks protocol version %d only; the client offers %u..%u",
                       DSD_IPC_VERSION, h->min_version, h->max_version);
        return;
    }
    uint32_t mf = s->p.limits.max_frame;
    if (h->max_frame && h->max_frame < mf)
        mf = h->max_frame;
    if (mf < DSD_IPC_HELLO_FRAME)
        mf = DSD_IPC_HELLO_FRAME;
    c->hello_done = true;
    snprintf(c->client_name, sizeof c->client_name, "%.*s", (int)(h->client.len < 63 ? h->client.len : 63),
             h->client.ptr ? h->client.ptr : "");
    struct dsd_ipc_msg r = { .type = DSD_IPC_HELLO_OK, .id = m->id };
    c->max_frame = mf;
    fill_facts(s, c, &r.hello_ok);
    srv_send_msg(s, c, &r);
    dsd_ipc_reader_set_max(&c->reader, mf);
}

static void on_shm_attach(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    /* Only an fd that came with this frame's first bytes (server.c check_fd; PROTOCOL.md §4.2). */
    int fd = c->frame_has_fd ? c->pending_fd : -1;
    if (c->frame_has_fd)
        c->pending_fd = -1;
    if (c->has_shm) {
        if (fd >= 0)
            close(fd);
        srv_send_error(s, c, m->id, DSD_IPC_E_SHM_INVALID, "shm_attach: this connection already has shared memory");
        return;
    }
    struct dsd_ipc_fail fail = { .id = m->id };
    if (dsd_shm_attach(fd, s->p.limits.max_shm_bytes, &c->shm, &fail) != 0) {
        fail.id = m->id;
        srv_send_fail(s, c, &fail);
        return;
    }
    uint32_t rc = c->shm.geo.ring_count;
    c->rings = calloc(rc ? rc : 1, sizeof *c->rings);
    c->ring_owner = calloc(rc ? rc : 1, sizeof *c->ring_owner);
    if (!c->rings || !c->ring_owner) {
        dsd_shm_close(&c->shm);
        srv_send_error(s, c, m->id, DSD_IPC_E_INTERNAL, "out of memory");
        return;
    }
    for (uint32_t k = 0; k < rc; k++)
        dsd_ring_producer_init(&c->rings[k], &c->shm, k, 0);
    c->has_shm = true;
    struct dsd_ipc_msg r = { .type = DSD_IPC_SHM_OK, .id = m->id };
    r.shm_ok.size = c->shm.geo.total_size;
    r.shm_ok.prompt_capacity = c->shm.geo.prompt_capacity;
    r.shm_ok.ring_count = c->shm.geo.ring_count;
    r.shm_ok.ring_capacity = c->shm.geo.ring_capacity;
    srv_send_msg(s, c, &r);
}

/* ---- prompts ------------------------------------------------------------------------ */

/* A JSON request for the chat encoder from the decoded messages (+ tools JSON text). */
static json_t *chat_request(const struct dsd_ipc_prompt *p, struct dsd_err *err)
{
    json_t *req = json_object(), *msgs = json_array();
    json_object_set_new(req, "messages", msgs);
    for (uint32_t i = 0; i < p->n_messages; i++) {
        const struct dsd_ipc_chat_msg *cm = &p->messages[i];
        json_t *o = json_object();
        json_object_set_new(o, "role", json_string(dsd_ipc_role_name(cm->role)));
        json_object_set_new(o, "content", cm->content.ptr ? json_stringn(cm->content.ptr, cm->content.len) : json_null());
        if (cm->reasoning.ptr)
            json_object_set_new(o, "reasoning_content", json_stringn(cm->reasoning.ptr, cm->reasoning.len));
        if (cm->tool_call_id.ptr)
            json_object_set_new(o, "tool_call_id", json_stringn(cm->tool_call_id.ptr, cm->tool_call_id.len));
        if (cm->name.ptr)
            json_object_set_new(o, "name", json_stringn(cm->name.ptr, cm->name.len));
        if (cm->n_tool_calls) {
            json_t *calls = json_array();
            for (uint32_t k = 0; k < cm->n_tool_calls; k++) {
                const struct dsd_ipc_tool_call *tc = &cm->tool_calls[k];
                json_t *fn = json_object();
                json_object_set_new(fn, "name", json_stringn(tc->name.ptr, tc->name.len));
                json_object_set_new(fn, "arguments", json_stringn(tc->arguments.ptr, tc->arguments.len));
                json_t *call = json_object();
                if (tc->id.ptr)
                    json_object_set_new(call, "id", json_stringn(tc->id.ptr, tc->id.len));
                json_object_set_new(call, "type", json_string("function"));
                json_object_set_new(call, "function", fn);
                json_array_append_new(calls, call);
            }
            json_object_set_new(o, "tool_calls", calls);
        }
        json_array_append_new(msgs, o);
    }
    if (p->tools.ptr) {
        json_error_t je;
        json_t *tools = json_loadb(p->tools.ptr, p->tools.len, JSON_REJECT_DUPLICATES, &je);
        if (!tools || !json_is_array(tools)) {
            dsd_errf(err, -EINVAL, "\"tools\" must be a JSON array%s%s", tools ? "" : ": ", tools ? "" : je.text);
            json_decref(tools);
            json_decref(req);
            return NULL;
        }
        json_object_set_new(req, "tools", tools);
    }
    return req;
}

/* TEST ONLY (test_force_trigger / test_force_output, docs/DAEMON.md): a chat whose last
 * message is a user message ending with the trigger text gets test_force_output as the
 * model's output instead of sampled tokens. Off (false) when the trigger is empty. */
static bool forced_output_triggered(const struct server *s, const char *text, size_t len)
{
    const char *trig = s->p.test_force_trigger;
    if (!trig || !*trig || !s->p.test_force_output || !*s->p.test_force_output)
        return false;
    static const char *const tails[] = { "<｜Assistant｜></think>", "<｜Assistant｜><think>" };
    size_t tl = strlen(trig);
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        size_t al = strlen(tails[i]);
        if (len >= tl + al && memcmp(text + len - al, tails[i], al) == 0 &&
            memcmp(text + len - al - tl, trig, tl) == 0)
            return true;
    }
    return false;
}

/* Builds the prompt token ids of p. On failure: the wire error code in *code, message in err. */
static int build_prompt(struct server *s, struct conn *c, const struct dsd_ipc_prompt *p, struct dsd_tok_ids *out,
                        bool *opens_reasoning, bool *forced, uint32_t *code, struct dsd_err *err)
{
    const int64_t vocab = s->p.model_cfg->vocab_size;
    *opens_reasoning = false;
    *forced = false;
    switch (p->kind) {
    case DSD_IPC_PROMPT_TOKENS:
    case DSD_IPC_PROMPT_SPAN: {
        uint32_t n = p->kind == DSD_IPC_PROMPT_TOKENS ? p->n_tokens : p->span_count;
        out->ids = malloc((size_t)n * sizeof *out->ids);
        if (!out->ids) {
            *code = DSD_IPC_E_INTERNAL;
            return dsd_errf(err, -ENOMEM, "out of memory");
        }
        out->cap = n;
        if (p->kind == DSD_IPC_PROMPT_TOKENS) {
            memcpy(out->ids, p->tokens, (size_t)n * sizeof *out->ids);
        } else {
            if (!c->has_shm) {
                *code = DSD_IPC_E_RING_UNAVAILABLE;
                return dsd_errf(err, -EINVAL, "\"prompt_span\" needs shared memory: send shm_attach first");
            }
            struct dsd_ipc_fail fail;
            if (dsd_shm_copy_prompt(&c->shm, p->span_offset, p->span_count, (uint32_t *)out->ids, &fail)) {
                *code = fail.code;
                return dsd_errf(err, -EINVAL, "%s", fail.err.msg);
            }
        }
        out->len = n;
        for (uint32_t i = 0; i < n; i++)
            if (out->ids[i] < 0 || out->ids[i] >= vocab) {
                *code = DSD_IPC_E_BAD_TOKEN;
                return dsd_errf(err, -EINVAL, "token %u at prompt position %u is not below vocab_size %lld",
                                (uint32_t)out->ids[i], i, (long long)vocab);
            }
        return 0;
    }
    case DSD_IPC_PROMPT_TEXT:
    case DSD_IPC_PROMPT_CHAT:
        break;
    default:
        *code = DSD_IPC_E_BAD_VALUE;
        return dsd_errf(err, -EINVAL, "no prompt");
    }
    if (!s->p.tokenizer) {
        *code = DSD_IPC_E_UNSUPPORTED;
        return dsd_errf(err, -ENOTSUP, "text and chat prompts need the model's tokenizer.json, which %s lacks; send token ids",
                        s->p.model_name);
    }
    if (p->kind == DSD_IPC_PROMPT_TEXT) {
        int32_t bos = dsd_tokenizer_bos_id(s->p.tokenizer);
        if (bos < 0)
            bos = (int32_t)s->p.model_cfg->bos_token_id;
        if (p->add_special && bos >= 0 && dsd_tok_ids_push(out, bos)) {
            *code = DSD_IPC_E_INTERNAL;
            return dsd_errf(err, -ENOMEM, "out of memory");
        }
        /* user text: special-token strings stay text (prompt-injection safety) */
        if (dsd_tokenizer_encode(s->p.tokenizer, p->text.ptr ? p->text.ptr : "", p->text.len, 0, out, err) < 0) {
            *code = DSD_IPC_E_INTERNAL;
            return -ENOMEM;
        }
        return 0;
    }
    json_t *req = chat_request(p, err);
    if (!req) {
        *code = DSD_IPC_E_BAD_VALUE;
        return -EINVAL;
    }
    struct dsd_chat_options opt = { .thinking = p->thinking };
    struct dsd_chat_prompt cp;
    int rc = dsd_chat_encode_marked(req, &opt, &cp, err);
    json_decref(req);
    if (rc) {
        *code = rc == -ENOMEM ? DSD_IPC_E_INTERNAL : DSD_IPC_E_BAD_VALUE;
        return rc;
    }
    *opens_reasoning = dsd_chat_prompt_opens_reasoning(cp.text, cp.len);
    *forced = forced_output_triggered(s, cp.text, cp.len);
    /* Special tokens are recognized only inside the encoder's own markup: a client's text
     * that spells "<｜Assistant｜>" stays text (prompt-injection safety). */
    struct dsd_tok_range *ranges = malloc((cp.n_markup ? cp.n_markup : 1) * sizeof *ranges);
    long n = -ENOMEM;
    if (ranges) {
        for (size_t i = 0; i < cp.n_markup; i++)
            ranges[i] = (struct dsd_tok_range){ cp.markup[i].start, cp.markup[i].end };
        n = dsd_tokenizer_encode_marked(s->p.tokenizer, cp.text, cp.len, ranges, cp.n_markup, out, err);
        free(ranges);
    }
    dsd_chat_prompt_free(&cp);
    if (n < 0) {
        *code = DSD_IPC_E_INTERNAL;
        return (int)n;
    }
    return 0;
}

/* ---- generate ----------------------------------------------------------------------- */

static char *dupstr(struct dsd_ipc_str v)
{
    char *d = malloc((size_t)v.len + 1);
    if (d) {
        memcpy(d, v.ptr, v.len);
        d[v.len] = 0;
    }
    return d;
}

static void on_generate(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    const struct dsd_ipc_generate *g = &m->generate;
    const struct dsd_ipc_sampling *sp = &g->sampling;
    struct uid_use *u = srv_uid(s, c->uid);
    if (s->draining) {
        srv_send_error(s, c, m->id, DSD_IPC_E_SHUTTING_DOWN, "generate: the daemon is shutting down");
        return;
    }
    if (dsd_engine_state(s->p.engine) != DSD_ENGINE_READY) {
        srv_send_error(s, c, m->id, DSD_IPC_E_NOT_READY, "generate: the model is still loading (%.0f%%); retry later",
                       100.0 * dsd_engine_progress(s->p.engine));
        return;
    }
    if (find_wire(c, m->id)) {
        srv_send_error(s, c, m->id, DSD_IPC_E_DUPLICATE_ID, "generate: id %llu is still in flight",
                       (unsigned long long)m->id);
        return;
    }
    if (c->n_inflight >= s->p.limits.max_inflight || u->inflight >= s->p.limits.max_inflight_per_uid) {
        srv_send_error(s, c, m->id, DSD_IPC_E_TOO_MANY_REQUESTS,
                       "generate: %d requests in flight on this connection and %d for uid %u (limits %d and %d)",
                       c->n_inflight, u->inflight, (unsigned)c->uid, s->p.limits.max_inflight,
                       s->p.limits.max_inflight_per_uid);
        return;
    }
    if (sp->top_logprobs > DSD_IPC_MAX_TOP_LOGPROBS) {
        srv_send_error(s, c, m->id, DSD_IPC_E_UNSUPPORTED, "generate: top_logprobs above %u", DSD_IPC_MAX_TOP_LOGPROBS);
        return;
    }
    if (g->use_ring && (!c->has_shm || g->ring >= c->shm.geo.ring_count || c->ring_owner[g->ring] != 0)) {
        srv_send_error(s, c, m->id, DSD_IPC_E_RING_UNAVAILABLE,
                       !c->has_shm ? "generate: \"ring\" needs shared memory: send shm_attach first"
                       : g->ring >= c->shm.geo.ring_count ? "generate: \"ring\" is past the attached ring_count"
                                                          : "generate: that ring is bound to a request in flight");
        return;
    }
    for (uint32_t i = 0; i < sp->n_stop_ids; i++)
        if (sp->stop_ids[i] >= (uint64_t)s->p.model_cfg->vocab_size) {
            srv_send_error(s, c, m->id, DSD_IPC_E_BAD_TOKEN, "generate: stop_token_ids[%u] = %u is not below vocab_size",
                           i, sp->stop_ids[i]);
            return;
        }
    struct dsd_sampling_params samp = {
        .temperature = (float)sp->temperature, .top_p = (float)sp->top_p, .top_k = (int32_t)sp->top_k,
        .min_p = (float)sp->min_p, .repetition_penalty = (float)sp->repetition_penalty,
        .frequency_penalty = (float)sp->frequency_penalty, .presence_penalty = (float)sp->presence_penalty,
        .seed = sp->has_seed ? sp->seed : (uint64_t)srv_now_ns() ^ m->id,
    };
    if (samp.top_k > s->p.model_cfg->vocab_size)
        samp.top_k = (int32_t)s->p.model_cfg->vocab_size;
    struct dsd_err err = {{0}};
    if (dsd_sampling_params_check(&samp, &err)) {
        srv_send_error(s, c, m->id, DSD_IPC_E_BAD_VALUE, "generate: %s", err.msg);
        return;
    }
    struct dsd_tok_ids ids = {0};
    bool opens = false, forced = false;
    uint32_t code = 0;
    if (build_prompt(s, c, &g->prompt, &ids, &opens, &forced, &code, &err)) {
        dsd_tok_ids_free(&ids);
        srv_send_error(s, c, m->id, code, "generate: %s", err.msg);
        return;
    }
    if (ids.len == 0) {
        srv_send_error(s, c, m->id, DSD_IPC_E_BAD_VALUE, "generate: the prompt is empty");
        dsd_tok_ids_free(&ids);
        return;
    }
    if ((int64_t)ids.len > max_prompt(s) || (int64_t)ids.len >= s->p.max_context) {
        srv_send_error(s, c, m->id, DSD_IPC_E_PROMPT_TOO_LONG,
                       "generate: the prompt has %zu tokens; the limit is %d (max_prompt_tokens and the context)",
                       ids.len, max_prompt(s) < s->p.max_context - 1 ? max_prompt(s) : s->p.max_context - 1);
        dsd_tok_ids_free(&ids);
        return;
    }
    struct dsd_engine_request *r = calloc(1, sizeof *r);
    struct io_request *ir = calloc(1, sizeof *ir);
    if (!r || !ir) {
        free(r);
        free(ir);
        dsd_tok_ids_free(&ids);
        srv_send_error(s, c, m->id, DSD_IPC_E_INTERNAL, "out of memory");
        return;
    }
    r->handle = ++s->next_handle;
    r->conn_id = c->id;
    r->uid = (uint32_t)c->uid;
    r->prompt = ids.ids;
    r->n_prompt = (int)ids.len;
    r->sampling = samp;
    int cap = s->p.limits.max_tokens;
    r->max_tokens = sp->max_tokens && (int64_t)sp->max_tokens < cap ? (int)sp->max_tokens : cap;
    r->priority = sp->priority;
    r->ignore_eos = sp->ignore_eos;
    r->logprobs = sp->logprobs;
    r->top_logprobs = (int)sp->top_logprobs;
    r->detokenize = g->detokenize && s->p.tokenizer;
    r->chat = g->prompt.kind == DSD_IPC_PROMPT_CHAT;
    r->start_in_reasoning = opens;
    r->t_accept_ns = srv_now_ns();
    if (forced) {
        struct dsd_tok_ids f = {0};
        if (dsd_tokenizer_encode(s->p.tokenizer, s->p.test_force_output, strlen(s->p.test_force_output),
                                 DSD_TOK_PARSE_SPECIAL, &f, &err) >= 0) {
            r->forced = f.ids;
            r->n_forced = (int)f.len;
        } else {
            dsd_tok_ids_free(&f);
        }
    }
    if (sp->n_stop_ids) {
        r->stop_ids = malloc(sp->n_stop_ids * sizeof *r->stop_ids);
        for (uint32_t i = 0; r->stop_ids && i < sp->n_stop_ids; i++)
            r->stop_ids[i] = (int32_t)sp->stop_ids[i];
        r->n_stop_ids = r->stop_ids ? (int)sp->n_stop_ids : 0;
    }
    if (sp->n_stop) {
        if (!s->p.tokenizer) {
            free(ir);
            dsd_engine_request_free(r);
            srv_send_error(s, c, m->id, DSD_IPC_E_UNSUPPORTED, "generate: stop strings need the model's tokenizer.json");
            return;
        }
        r->stop_strings = calloc(sp->n_stop, sizeof *r->stop_strings);
        for (uint32_t i = 0; r->stop_strings && i < sp->n_stop; i++)
            r->stop_strings[r->n_stop_strings++] = dupstr(sp->stop[i]);
    }
    ir->handle = r->handle;
    ir->wire_id = m->id;
    ir->conn = c;
    ir->uid = c->uid;
    ir->notify = g->notify;
    struct dsd_ipc_msg acc = { .type = DSD_IPC_ACCEPTED, .id = m->id };
    acc.accepted.prompt_tokens = (uint32_t)ids.len;
    if (g->use_ring) {
        struct dsd_ring_producer *rp = &c->rings[g->ring];
        int64_t space = dsd_ring_space(rp);
        if (space < 0) {
            free(ir);
            dsd_engine_request_free(r);
            srv_send_error(s, c, m->id, DSD_IPC_E_RING_CORRUPT, "generate: ring %u's consumer position is impossible", g->ring);
            return;
        }
        ir->use_ring = true;
        ir->ring = g->ring;
        c->ring_owner[g->ring] = r->handle;
        dsd_ring_producer_bind(rp, m->id);
        acc.accepted.has_ring_start = true;
        acc.accepted.ring_start = rp->pos;
        r->credit_limited = true;
        r->credit = ir->credit = (uint64_t)space;
    }
    ir->next_in_conn = c->requests;
    c->requests = ir;
    c->n_inflight++;
    u->inflight++;
    unsigned slot = slot_of(ir->handle);
    ir->next_in_table = s->req_table[slot];
    s->req_table[slot] = ir;
    s->requests_accepted++;
    srv_send_msg(s, c, &acc);
    dsd_engine_submit(s->p.engine, r);
}

/* ---- the small requests ----------------------------------------------------------- */

static void on_tokenize(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    struct dsd_tok_ids ids = {0};
    bool opens, forced;
    uint32_t code = 0;
    struct dsd_err err = {{0}};
    if (build_prompt(s, c, &m->tokenize.prompt, &ids, &opens, &forced, &code, &err)) {
        srv_send_error(s, c, m->id, code, "tokenize: %s", err.msg);
    } else {
        struct dsd_ipc_msg r = { .type = DSD_IPC_TOKENIZE_OK, .id = m->id };
        r.tokenize_ok.n_tokens = (uint32_t)ids.len;
        r.tokenize_ok.tokens = (const uint32_t *)ids.ids;
        srv_send_msg(s, c, &r);
    }
    dsd_tok_ids_free(&ids);
}

static void on_detokenize(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    const struct dsd_ipc_detokenize *d = &m->detokenize;
    if (!s->p.tokenizer) {
        srv_send_error(s, c, m->id, DSD_IPC_E_UNSUPPORTED, "detokenize: %s has no tokenizer.json", s->p.model_name);
        return;
    }
    for (uint32_t i = 0; i < d->n_tokens; i++)
        if (d->tokens[i] >= (uint64_t)s->p.model_cfg->vocab_size) {
            srv_send_error(s, c, m->id, DSD_IPC_E_BAD_TOKEN, "detokenize: tokens[%u] = %u is not below vocab_size", i,
                           d->tokens[i]);
            return;
        }
    struct dsd_tok_text t = {0};
    struct dsd_err err = {{0}};
    unsigned flags = DSD_TOK_LOSSY | (d->skip_special ? DSD_TOK_SKIP_SPECIAL : 0);
    long n = dsd_tokenizer_decode(s->p.tokenizer, (const int32_t *)d->tokens, d->n_tokens, flags, &t, &err);
    if (n < 0) {
        srv_send_error(s, c, m->id, n == -ERANGE ? DSD_IPC_E_BAD_TOKEN : DSD_IPC_E_INTERNAL, "detokenize: %s", err.msg);
    } else {
        struct dsd_ipc_msg r = { .type = DSD_IPC_DETOKENIZE_OK, .id = m->id };
        r.detokenize_ok.text.ptr = t.data ? t.data : "";
        r.detokenize_ok.text.len = (uint32_t)t.len;
        srv_send_msg(s, c, &r);
    }
    dsd_tok_text_free(&t);
}

static struct dsd_ipc_kv kv_int(const char *k, int64_t v)
{
    return (struct dsd_ipc_kv){ .key = dsd_ipc_s(k), .kind = DSD_IPC_KV_INT, .i = v };
}

static struct dsd_ipc_kv kv_float(const char *k, double v)
{
    return (struct dsd_ipc_kv){ .key = dsd_ipc_s(k), .kind = DSD_IPC_KV_FLOAT, .f = v };
}

static struct dsd_ipc_kv kv_str(const char *k, const char *v)
{
    return (struct dsd_ipc_kv){ .key = dsd_ipc_s(k), .kind = DSD_IPC_KV_STR, .s = dsd_ipc_s(v) };
}

static void on_info(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    struct dsd_ipc_kv kv[64];
    int n = 0;
    kv[n++] = kv_str("model_dir", s->p.model_name);
    kv[n++] = kv_int("uptime_s", (int64_t)((srv_now_ns() - s->start_ns) / 1000000000ull));
    kv[n++] = kv_int("kv_pages", dsd_engine_kv_pages(s->p.engine));
    kv[n++] = kv_int("kv_bytes", (int64_t)dsd_engine_kv_bytes(s->p.engine));
    kv[n++] = kv_str("device", dsd_engine_device(s->p.engine));
    struct dsd_engine_memory em;
    dsd_engine_memory(s->p.engine, &em);
    kv[n++] = kv_int("weight_bytes", (int64_t)em.weight_bytes);
    kv[n++] = kv_int("device_weight_bytes", (int64_t)em.device_weight_bytes);
    kv[n++] = kv_int("workspace_bytes", (int64_t)em.workspace_bytes);
    kv[n++] = kv_int("penalty_state_bytes", (int64_t)em.penalty_bytes);
    kv[n++] = kv_int("device_memory_total", (int64_t)em.device_total);
    kv[n++] = kv_int("device_memory_free", (int64_t)em.device_free);
    kv[n++] = kv_float("load_read_s", em.read_s);
    kv[n++] = kv_float("load_place_s", em.place_s);
    kv[n++] = kv_float("load_gb_per_s", em.place_s + em.read_s > 0
                                             ? (double)em.weight_bytes / 1e9 / (em.place_s + em.read_s) : 0.0);
    kv[n++] = kv_int("max_inflight_per_uid", s->p.limits.max_inflight_per_uid);
    kv[n++] = kv_int("max_connections_per_uid", s->p.limits.max_connections_per_uid);
    kv[n++] = kv_int("stall_timeout_s", s->p.limits.stall_timeout_s);
    kv[n++] = kv_int("drain_timeout_s", s->p.limits.drain_timeout_s);
    kv[n++] = kv_int("frame_timeout_s", s->p.limits.frame_timeout_s);
    kv[n++] = kv_int("idle_timeout_s", s->p.limits.idle_timeout_s);
    kv[n++] = kv_str("tokenizer", s->p.tokenizer ? "loaded" : "none");
    for (int i = 0; i < s->p.n_info && n < 64; i++)
        kv[n++] = kv_str(s->p.info_keys[i], s->p.info_values[i]);
    struct dsd_ipc_msg r = { .type = DSD_IPC_INFO_OK, .id = m->id };
    fill_facts(s, c, &r.info_ok.facts);
    r.info_ok.n_server = (uint32_t)n;
    r.info_ok.server = kv;
    srv_send_msg(s, c, &r);
}

/* A histogram as flat stats entries (docs/OPERATIONS.md): NAME_ms_le_BOUND for each bucket
 * (cumulative, the last one NAME_ms_le_inf), NAME_ms_sum and NAME_ms_count. */
#define HIST_ENTRIES (DSD_HIST_BOUNDS + 3)
static int hist_kv(struct dsd_ipc_kv *kv, char (*names)[64], const char *name, const struct dsd_hist *h)
{
    int n = 0;
    for (int i = 0; i <= DSD_HIST_BOUNDS; i++) {
        if (i < DSD_HIST_BOUNDS)
            snprintf(names[n], 64, "%s_ms_le_%g", name, dsd_hist_bound_ms(i));
        else
            snprintf(names[n], 64, "%s_ms_le_inf", name);
        kv[n] = kv_int(names[n], (int64_t)dsd_hist_cumulative(h, i));
        n++;
    }
    snprintf(names[n], 64, "%s_ms_sum", name);
    kv[n] = kv_float(names[n], h->sum_ms);
    n++;
    snprintf(names[n], 64, "%s_ms_count", name);
    kv[n] = kv_int(names[n], (int64_t)h->count);
    return n + 1;
}

static void on_stats(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    struct dsd_engine_stats es;
    dsd_engine_stats(s->p.engine, &es);
    int conns = 0;
    for (struct conn *k = s->conns; k; k = k->next)
        conns += !k->closing;
    const struct dsd_prefix_cache_stats *cs = &es.cache;
    struct dsd_ipc_kv kv[160];
    char names[2 * HIST_ENTRIES][64];
    const struct dsd_ipc_kv fixed[] = {
        kv_int("requests_running", es.running), kv_int("requests_waiting", es.waiting),
        kv_int("requests_parked", es.parked), kv_int("requests_in_flight", session_inflight_total(s)),
        kv_int("requests_accepted_total", (int64_t)s->requests_accepted),
        kv_int("requests_done_total", (int64_t)es.requests_done),
        kv_int("tokens_generated_total", (int64_t)es.tokens_generated),
        kv_int("tokens_prefilled_total", (int64_t)es.tokens_prefilled), kv_int("steps_total", (int64_t)es.steps),
        kv_int("tokens_cached_total", (int64_t)es.tokens_cached),
        kv_float("last_step_ms", es.last_step_ms), kv_int("preemptions_total", (int64_t)es.preemptions),
        kv_int("steps_graph_total", (int64_t)es.steps_graph), kv_int("steps_eager_total", (int64_t)es.steps_eager),
        kv_float("host_ms_per_graph_step", es.host_ms_graph), kv_float("host_ms_per_eager_step", es.host_ms_eager),
        kv_int("kernels_per_graph_step", (int64_t)es.graph_kernels),
        kv_int("kv_pages_capacity", es.kv_pages_total), kv_int("kv_pages_used", es.kv_pages_used),
        kv_int("connections", conns), kv_int("connections_total", (int64_t)s->conns_total),
        kv_int("frames_in_total", (int64_t)s->frames_in), kv_int("frames_out_total", (int64_t)s->frames_out),
        kv_int("errors_sent_total", (int64_t)s->errors_sent), kv_int("bytes_in_total", (int64_t)s->bytes_in),
        kv_int("bytes_out_total", (int64_t)s->bytes_out),
        kv_int("read_pauses_total", (int64_t)s->read_pauses),
        kv_int("held_input_bytes_max", (int64_t)s->held_max),
        kv_int("connections_timed_out_total", (int64_t)s->conns_timed_out),
        kv_int("socket_stalls_total", (int64_t)s->socket_stalls),
        /* speculative decoding (docs/SPECULATIVE.md) */
        kv_int("spec_steps_total", (int64_t)es.spec_steps),
        kv_int("spec_draft_tokens_total", (int64_t)es.spec_draft_tokens),
        kv_int("spec_accepted_tokens_total", (int64_t)es.spec_accepted_tokens),
        kv_float("spec_mean_accept_length",
                 es.spec_steps ? (double)(es.spec_accepted_tokens + es.spec_steps) / (double)es.spec_steps : 0.0),
    };
    int n = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        kv[n++] = fixed[i];
    if (es.prefix_cache) {
        /* the prefix cache per tier (docs/KV_CACHE.md §7) */
        const struct dsd_ipc_kv cache[] = {
            kv_int("kv_cache_device_pages", cs->device_pages),
            kv_int("kv_cache_host_pages", cs->host_pages), kv_int("kv_cache_host_slots", cs->host_slots),
            kv_int("kv_cache_disk_pages", cs->disk_pages), kv_int("kv_cache_disk_slots", cs->disk_slots),
            kv_int("kv_cache_lookups_total", (int64_t)cs->lookups),
            kv_int("kv_cache_device_hits_total", (int64_t)cs->hits[0]),
            kv_int("kv_cache_host_hits_total", (int64_t)cs->hits[1]),
            kv_int("kv_cache_disk_hits_total", (int64_t)cs->hits[2]),
            kv_int("kv_cache_device_misses_total", (int64_t)cs->misses[0]),
            kv_int("kv_cache_host_misses_total", (int64_t)cs->misses[1]),
            kv_int("kv_cache_disk_misses_total", (int64_t)cs->misses[2]),
            kv_int("kv_cache_device_demotions_total", (int64_t)cs->demotions[0]),
            kv_int("kv_cache_host_demotions_total", (int64_t)cs->demotions[1]),
            kv_int("kv_cache_device_evictions_total", (int64_t)cs->evictions[0]),
            kv_int("kv_cache_host_evictions_total", (int64_t)cs->evictions[1]),
            kv_int("kv_cache_disk_evictions_total", (int64_t)cs->evictions[2]),
            kv_int("kv_cache_disk_writes_total", (int64_t)cs->disk_writes),
            kv_int("kv_cache_disk_errors_total", (int64_t)cs->disk_errors),
            kv_int("kv_cache_disk_dropped_total", (int64_t)cs->disk_dropped),
            kv_int("kv_cache_published_total", (int64_t)cs->published),
            kv_int("kv_cache_waits_total", (int64_t)cs->waits),
            kv_int("kv_cache_reload_pages_total", (int64_t)cs->reload_pages),
            kv_float("kv_cache_reload_seconds_total", cs->reload_seconds),
            kv_int("kv_cache_read_ahead_pages_total", (int64_t)cs->read_ahead_pages),
            kv_float("kv_cache_read_ahead_seconds_total", cs->read_ahead_seconds),
        };
        for (size_t i = 0; i < sizeof cache / sizeof cache[0]; i++)
            kv[n++] = cache[i];
    }
    n += hist_kv(kv + n, names, "time_to_first_token", &es.ttft);
    n += hist_kv(kv + n, names + HIST_ENTRIES, "inter_token_latency", &es.itl);
    struct dsd_ipc_msg r = { .type = DSD_IPC_STATS_OK, .id = m->id };
    r.stats_ok.n_stats = (uint32_t)n;
    r.stats_ok.stats = kv;
    srv_send_msg(s, c, &r);
}

static void on_health(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    struct dsd_ipc_msg r = { .type = DSD_IPC_HEALTH_OK, .id = m->id };
    char detail[256] = "";
    switch (dsd_engine_state(s->p.engine)) {
    case DSD_ENGINE_LOADING:
        r.health_ok.status = DSD_IPC_STATUS_LOADING;
        snprintf(detail, sizeof detail, "loading %s: %.0f%%", s->p.model_name, 100.0 * dsd_engine_progress(s->p.engine));
        break;
    case DSD_ENGINE_READY: {
        struct dsd_engine_stats es;
        dsd_engine_stats(s->p.engine, &es);
        double idle_s = (double)(srv_now_ns() - es.last_step_ns) / 1e9;
        if (s->draining) {
            r.health_ok.status = DSD_IPC_STATUS_DRAINING;
            snprintf(detail, sizeof detail, "draining %d request(s)", session_inflight_total(s));
        } else if (idle_s > 30.0) {
            r.health_ok.status = DSD_IPC_STATUS_UNHEALTHY;
            snprintf(detail, sizeof detail, "the engine has made no progress for %.0f s", idle_s);
        } else {
            r.health_ok.status = DSD_IPC_STATUS_OK;
            snprintf(detail, sizeof detail, "%d running, %d waiting", es.running, es.waiting);
        }
        break;
    }
    default:
        r.health_ok.status = DSD_IPC_STATUS_UNHEALTHY;
        snprintf(detail, sizeof detail, "%s", dsd_engine_failure(s->p.engine));
        break;
    }
    r.health_ok.detail = dsd_ipc_s(detail);
    srv_send_msg(s, c, &r);
}

/* ---- ring credit ------------------------------------------------------------------- */

/* Tells the engine how many tokens the request may have produced in total: what it has
 * delivered plus the ring's free space now. */
static void refresh_credit(struct server *s, struct io_request *r)
{
    struct conn *c = r->conn;
    if (!c || !r->use_ring || r->corrupt)
        return;
    int64_t space = dsd_ring_space(&c->rings[r->ring]);
    if (space < 0) {
        r->corrupt = true;
        dsd_engine_cancel(s->p.engine, r->handle);
        return;
    }
    uint64_t credit = r->delivered + (uint64_t)space;
    if (credit > r->credit) {
        r->credit = credit;
        dsd_engine_grant(s->p.engine, r->handle, credit);
        if (r->stalled && space > 0) {
            r->stalled = false;
            dsd_ring_set_stalled(&c->rings[r->ring], false);
        }
    }
}

static void on_cancel(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    struct io_request *r = find_wire(c, m->id);
    if (r)
        dsd_engine_cancel(s->p.engine, r->handle);
}

static void on_resume(struct server *s, struct conn *c, const struct dsd_ipc_msg *m)
{
    struct io_request *r = find_wire(c, m->id);
    if (!r || !r->use_ring)
        return;
    refresh_credit(s, r);
    if (r->stalled) {               /* still no room: say so again */
        struct dsd_ipc_msg t = { .type = DSD_IPC_TOKENS, .id = r->wire_id };
        t.tokens.stalled = true;
        t.tokens.has_pos = true;
        t.tokens.pos = c->rings[r->ring].pos;
        srv_send_msg(s, c, &t);
    }
}

void session_check_stalls(struct server *s)
{
    uint64_t now = srv_now_ns(), bound = (uint64_t)s->p.limits.stall_timeout_s * 1000000000ull;
    for (int i = 0; i < REQ_TABLE_SIZE; i++)
        for (struct io_request *r = s->req_table[i]; r; r = r->next_in_table) {
            if (!r->stalled || r->stall_timed_out)
                continue;
            refresh_credit(s, r);   /* the client may have made room without saying so */
            if (r->stalled && now - r->stall_since_ns > bound) {
                r->stall_timed_out = true;
                dsd_engine_cancel(s->p.engine, r->handle);
            }
        }
}

/* c's socket has been backed up (replies unread, reading stopped) for stall_timeout_s: its
 * requests end with done/error stall_timeout; the engine frees their KV pages. */
void session_socket_stalled(struct server *s, struct conn *c)
{
    for (struct io_request *r = c->requests; r; r = r->next_in_conn)
        if (!r->stall_timed_out) {
            r->stall_timed_out = true;
            r->socket_stall = true;
            dsd_engine_cancel(s->p.engine, r->handle);
        }
}

/* ---- frames in -------------------------------------------------------------------- */

void session_handle_frame(struct server *s, struct conn *c, const struct dsd_ipc_frame *f)
{
    struct dsd_ipc_msg m;
    struct dsd_ipc_fail fail = {0};
    int rc = dsd_ipc_decode(f->body, f->len, DSD_IPC_TO_DAEMON, &m, &fail);
    if (rc < 0) {
        if (!c->hello_done && fail.code != DSD_IPC_E_INTERNAL) {
            fail.code = DSD_IPC_E_HELLO_REQUIRED;   /* the first frame must be a valid hello */
        }
        srv_send_fail(s, c, &fail);
        dsd_ipc_msg_free(&m);
        return;
    }
    if (!c->hello_done && m.type != DSD_IPC_HELLO) {
        srv_send_error(s, c, m.id, DSD_IPC_E_HELLO_REQUIRED, "the first frame must be hello (got %s)",
                       dsd_ipc_type_name(m.type));
        dsd_ipc_msg_free(&m);
        return;
    }
    switch (m.type) {
    case DSD_IPC_HELLO:
        on_hello(s, c, &m);
        break;
    case DSD_IPC_SHM_ATTACH:
        on_shm_attach(s, c, &m);
        break;
    case DSD_IPC_GENERATE:
        on_generate(s, c, &m);
        break;
    case DSD_IPC_CANCEL:
        on_cancel(s, c, &m);
        break;
    case DSD_IPC_RESUME:
        on_resume(s, c, &m);
        break;
    case DSD_IPC_TOKENIZE:
        on_tokenize(s, c, &m);
        break;
    case DSD_IPC_DETOKENIZE:
        on_detokenize(s, c, &m);
        break;
    case DSD_IPC_INFO:
        on_info(s, c, &m);
        break;
    case DSD_IPC_STATS:
        on_stats(s, c, &m);
        break;
    case DSD_IPC_HEALTH:
        on_health(s, c, &m);
        break;
    default:
        srv_send_error(s, c, m.id, DSD_IPC_E_UNKNOWN_TYPE, "%s is not a request", dsd_ipc_type_name(m.type));
        break;
    }
    dsd_ipc_msg_free(&m);
}

/* ---- engine events out -------------------------------------------------------------- */

static enum dsd_ipc_finish wire_finish(enum dsd_finish f)
{
    switch (f) {
    case DSD_FINISH_STOP: return DSD_IPC_FINISH_STOP;
    case DSD_FINISH_LENGTH: return DSD_IPC_FINISH_LENGTH;
    case DSD_FINISH_STOP_STRING: return DSD_IPC_FINISH_STOP_STRING;
    case DSD_FINISH_TOOL_CALLS: return DSD_IPC_FINISH_TOOL_CALLS;
    case DSD_FINISH_CANCELLED: return DSD_IPC_FINISH_CANCELLED;
    case DSD_FINISH_CONTEXT_FULL: return DSD_IPC_FINISH_CONTEXT_FULL;
    default: return DSD_IPC_FINISH_ERROR;
    }
}

/* Writes ev's ids into the ring (credit guarantees room) or leaves them for the frame. */
static void deliver_to_ring(struct server *s, struct io_request *r, const struct dsd_engine_event *ev)
{
    struct conn *c = r->conn;
    if (!ev->n_ids || r->corrupt)
        return;
    int64_t n = dsd_ring_produce(&c->rings[r->ring], (const uint32_t *)ev->ids, (uint32_t)ev->n_ids);
    if (n < 0 || n < ev->n_ids) {
        /* impossible consumer position, or a client that moved it backwards: ring_corrupt */
        r->corrupt = true;
        dsd_engine_cancel(s->p.engine, r->handle);
        return;
    }
    r->delivered += (uint64_t)n;
}

static void send_step(struct server *s, struct io_request *r, const struct dsd_engine_event *ev)
{
    struct conn *c = r->conn;
    struct dsd_ipc_msg t = { .type = DSD_IPC_TOKENS, .id = r->wire_id };
    struct dsd_ipc_tokens *tk = &t.tokens;
    bool extra = ev->text_len || ev->reasoning_len || ev->n_tools || ev->tool_error_len || ev->n_logprobs;
    if (r->use_ring) {
        deliver_to_ring(s, r, ev);
        tk->has_pos = true;
        tk->pos = c->rings[r->ring].pos;
        if (!extra && (!r->notify || !ev->n_ids))
            return;
    } else {
        tk->n_ids = (uint32_t)ev->n_ids;
        tk->ids = (const uint32_t *)ev->ids;
        if (!extra && !ev->n_ids)
            return;
    }
    if (ev->text_len)
        tk->text = (struct dsd_ipc_str){ ev->text, (uint32_t)ev->text_len };
    if (ev->reasoning_len)
        tk->reasoning = (struct dsd_ipc_str){ ev->reasoning, (uint32_t)ev->reasoning_len };
    if (ev->tool_error_len)
        tk->tool_call_error = (struct dsd_ipc_str){ ev->tool_error, (uint32_t)ev->tool_error_len };
    struct dsd_ipc_tool_delta td[ev->n_tools ? ev->n_tools : 1];
    for (int i = 0; i < ev->n_tools; i++)
        td[i] = (struct dsd_ipc_tool_delta){ .index = (uint32_t)ev->tools[i].index, .id = dsd_ipc_s(ev->tools[i].id),
                                            .name = dsd_ipc_s(ev->tools[i].name),
                                            .arguments = dsd_ipc_s(ev->tools[i].arguments) };
    tk->n_tool_calls = (uint32_t)ev->n_tools;
    tk->tool_calls = td;
    struct dsd_ipc_logprob lp[ev->n_logprobs ? ev->n_logprobs : 1];
    struct dsd_ipc_top_logprob top[ev->n_logprobs ? ev->n_logprobs : 1][DSD_IPC_MAX_TOP_LOGPROBS];
    for (int i = 0; i < ev->n_logprobs; i++) {
        const struct dsd_engine_logprob *e = &ev->logprobs[i];
        for (int k = 0; k < e->n_top; k++)
            top[i][k] = (struct dsd_ipc_top_logprob){ (uint32_t)e->top_ids[k], e->top_logprobs[k] };
        lp[i] = (struct dsd_ipc_logprob){ .token = (uint32_t)e->token, .logprob = e->logprob,
                                          .n_top = (uint32_t)e->n_top, .top = top[i] };
    }
    tk->n_logprobs = (uint32_t)ev->n_logprobs;
    tk->logprobs = lp;
    srv_send_msg(s, c, &t);
}

static void send_done(struct server *s, struct io_request *r, const struct dsd_engine_event *ev)
{
    struct conn *c = r->conn;
    struct dsd_ipc_msg d = { .type = DSD_IPC_DONE, .id = r->wire_id };
    struct dsd_ipc_done *dn = &d.done;
    dn->finish = wire_finish(ev->finish);
    if (ev->stop_token >= 0 && ev->finish == DSD_FINISH_STOP) {
        dn->has_stop_token = true;
        dn->stop_token = (uint32_t)ev->stop_token;
    }
    if (ev->stop_string)
        dn->stop_string = dsd_ipc_s(ev->stop_string);
    dn->usage = (struct dsd_ipc_usage){ (uint32_t)ev->n_prompt, (uint32_t)ev->n_cached, (uint32_t)ev->n_generated,
                                        ev->n_cached > 0, (uint32_t)ev->cached_tier[0], (uint32_t)ev->cached_tier[1],
                                        (uint32_t)ev->cached_tier[2] };
    dn->timings = (struct dsd_ipc_timings){ ev->queue_us, ev->first_token_us, ev->total_us, ev->per_token_us };
    if (r->corrupt || r->stall_timed_out) {
        dn->finish = DSD_IPC_FINISH_ERROR;
        dn->has_error = true;
        dn->error_code = r->corrupt ? DSD_IPC_E_RING_CORRUPT : DSD_IPC_E_STALL_TIMEOUT;
        dn->error_msg = dsd_ipc_s(r->corrupt ? "the ring's consumer position is impossible (moved backwards or ahead)"
                                  : r->socket_stall ? "the connection's replies stayed unread (over 1 MiB queued) longer "
                                                      "than stall_timeout_s"
                                                    : "the output ring stayed full longer than stall_timeout_s");
    } else if (ev->finish == DSD_FINISH_ERROR) {
        dn->has_error = true;
        dn->error_code = DSD_IPC_E_INTERNAL;
        dn->error_msg = dsd_ipc_s(ev->error ? ev->error : "generation failed");
    }
    if (r->use_ring) {
        struct dsd_ring_producer *rp = &c->rings[r->ring];
        dsd_ring_set_stalled(rp, false);
        dsd_ring_producer_finish(rp, dn->finish);
        dn->has_ring_end = true;
        dn->ring_end = rp->pos;
    }
    srv_send_msg(s, c, &d);
}

void session_handle_engine_events(struct server *s)
{
    struct dsd_engine_event **evs;
    int n = dsd_engine_take_events(s->p.engine, &evs);
    for (int i = 0; i < n; i++) {
        struct dsd_engine_event *ev = evs[i];
        struct io_request *r = session_find(s, ev->handle);
        if (r && r->conn && !r->conn->closing) {
            if (ev->kind == DSD_EV_STALLED) {
                if (r->use_ring && !r->stalled) {
                    r->stalled = true;
                    r->stall_since_ns = srv_now_ns();
                    dsd_ring_set_stalled(&r->conn->rings[r->ring], true);
                    struct dsd_ipc_msg t = { .type = DSD_IPC_TOKENS, .id = r->wire_id };
                    t.tokens.stalled = true;
                    t.tokens.has_pos = true;
                    t.tokens.pos = r->conn->rings[r->ring].pos;
                    srv_send_msg(s, r->conn, &t);
                    refresh_credit(s, r);   /* room may already be there */
                }
            } else {
                send_step(s, r, ev);
                if (ev->kind == DSD_EV_DONE)
                    send_done(s, r, ev);
                else if (r->use_ring)
                    refresh_credit(s, r);
            }
        }
        if (r && ev->kind == DSD_EV_DONE)
            unlink_request(s, r);
        dsd_engine_event_free(ev);
    }
    free(evs);
}
