/*
 * tests/ipc/ipc_fixtures.h: one fully populated message of every type (every optional field
 * set to a non-default value) and a printer that writes every field of a message as text, so
 * tests compare messages by their dumps. The printer is written from the struct definitions
 * in ipc_msg.h, independently of the encoder and decoder it checks.
 *
 * Used by test_ipc_msg.c and by the corpus writer of the fuzz seeds.
 */
#ifndef DSD_TEST_IPC_FIXTURES_H
#define DSD_TEST_IPC_FIXTURES_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ipc_msg.h"

#define FX_S(lit) {lit, sizeof(lit) - 1}

struct dump {
    char *buf;
    size_t cap, len;
};

static void dp(struct dump *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dp(struct dump *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(d->buf + d->len, d->cap - d->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        d->len += (size_t)n < d->cap - d->len ? (size_t)n : d->cap - d->len - 1;
}

static void ds(struct dump *d, const char *name, struct dsd_ipc_str s)
{
    if (!s.ptr) {
        dp(d, "%s=<absent> ", name);
        return;
    }
    dp(d, "%s=[%u]\"", name, s.len);
    for (uint32_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            dp(d, "%c", c);
        else
            dp(d, "\\x%02x", c);
    }
    dp(d, "\" ");
}

static void du32s(struct dump *d, const char *name, const uint32_t *v, uint32_t n)
{
    dp(d, "%s=%u[", name, n);
    for (uint32_t i = 0; i < n; i++)
        dp(d, "%s%u", i ? "," : "", v[i]);
    dp(d, "] ");
}

static void dump_prompt(struct dump *d, const struct dsd_ipc_prompt *p)
{
    dp(d, "kind=%d ", (int)p->kind);
    switch (p->kind) {
    case DSD_IPC_PROMPT_TOKENS: du32s(d, "tokens", p->tokens, p->n_tokens); break;
    case DSD_IPC_PROMPT_SPAN:
        dp(d, "span=%llu+%u ", (unsigned long long)p->span_offset, p->span_count);
        break;
    case DSD_IPC_PROMPT_TEXT:
        ds(d, "text", p->text);
        dp(d, "add_special=%d ", p->add_special);
        break;
    case DSD_IPC_PROMPT_CHAT:
        for (uint32_t i = 0; i < p->n_messages; i++) {
            const struct dsd_ipc_chat_msg *m = &p->messages[i];
            dp(d, "msg%u{role=%d ", i, (int)m->role);
            ds(d, "content", m->content);
            ds(d, "reasoning", m->reasoning);
            ds(d, "name", m->name);
            ds(d, "tool_call_id", m->tool_call_id);
            for (uint32_t k = 0; k < m->n_tool_calls; k++) {
                dp(d, "call%u{", k);
                ds(d, "id", m->tool_calls[k].id);
                ds(d, "name", m->tool_calls[k].name);
                ds(d, "args", m->tool_calls[k].arguments);
                dp(d, "} ");
            }
            dp(d, "} ");
        }
        ds(d, "tools", p->tools);
        dp(d, "thinking=%d ", p->thinking);
        break;
    default: break;
    }
}

static void dump_kv(struct dump *d, const struct dsd_ipc_kv *kv, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        ds(d, "key", kv[i].key);
        switch (kv[i].kind) {
        case DSD_IPC_KV_INT: dp(d, "int=%lld ", (long long)kv[i].i); break;
        case DSD_IPC_KV_FLOAT: dp(d, "float=%.17g ", kv[i].f); break;
        case DSD_IPC_KV_BOOL: dp(d, "bool=%d ", kv[i].b); break;
        default: ds(d, "str", kv[i].s); break;
        }
    }
}

static void dump_facts(struct dump *d, const struct dsd_ipc_hello_ok *h)
{
    const struct dsd_ipc_model_facts *f = &h->model;
    dp(d, "version=%u ", h->version);
    ds(d, "daemon", h->daemon);
    ds(d, "model", f->name);
    dp(d, "vocab=%u ctx=%u ", f->vocab_size, f->max_context);
    du32s(d, "eos", f->eos_ids, f->n_eos);
    dp(d, "bos=%d/%u ", f->has_bos, f->bos_id);
    ds(d, "kv", f->kv_dtype);
    ds(d, "backend", f->backend);
    const struct dsd_ipc_limits *l = &h->limits;
    dp(d, "limits=%u,%u,%u,%u,%u,%llu ", l->max_frame, l->max_prompt_tokens, l->max_tokens,
       l->max_inflight, l->max_top_logprobs, (unsigned long long)l->max_shm_bytes);
}

/* Writes every field of m into buf (NUL-terminated, cut at cap). */
static const char *dump_msg(const struct dsd_ipc_msg *m, char *buf, size_t cap)
{
    struct dump d = {buf, cap, 0};
    buf[0] = 0;
    dp(&d, "type=%d id=%llu ", (int)m->type, (unsigned long long)m->id);
    switch (m->type) {
    case DSD_IPC_HELLO:
        dp(&d, "v=%u..%u max_frame=%u ", m->hello.min_version, m->hello.max_version,
           m->hello.max_frame);
        ds(&d, "client", m->hello.client);
        break;
    case DSD_IPC_GENERATE: {
        const struct dsd_ipc_generate *g = &m->generate;
        const struct dsd_ipc_sampling *s = &g->sampling;
        dump_prompt(&d, &g->prompt);
        dp(&d, "temp=%.17g top_p=%.17g min_p=%.17g rep=%.17g freq=%.17g pres=%.17g ",
           s->temperature, s->top_p, s->min_p, s->repetition_penalty, s->frequency_penalty,
           s->presence_penalty);
        dp(&d, "top_k=%u max_tokens=%u top_lp=%u prio=%d seed=%d/%llu ignore_eos=%d lp=%d ",
           s->top_k, s->max_tokens, s->top_logprobs, s->priority, s->has_seed,
           (unsigned long long)s->seed, s->ignore_eos, s->logprobs);
        for (uint32_t i = 0; i < s->n_stop; i++)
            ds(&d, "stop", s->stop[i]);
        du32s(&d, "stop_ids", s->stop_ids, s->n_stop_ids);
        dp(&d, "ring=%d/%u notify=%d detok=%d ", g->use_ring, g->ring, g->notify, g->detokenize);
        break;
    }
    case DSD_IPC_TOKENIZE: dump_prompt(&d, &m->tokenize.prompt); break;
    case DSD_IPC_DETOKENIZE:
        du32s(&d, "tokens", m->detokenize.tokens, m->detokenize.n_tokens);
        dp(&d, "skip_special=%d ", m->detokenize.skip_special);
        break;
    case DSD_IPC_HELLO_OK: dump_facts(&d, &m->hello_ok); break;
    case DSD_IPC_INFO_OK:
        dump_facts(&d, &m->info_ok.facts);
        dump_kv(&d, m->info_ok.server, m->info_ok.n_server);
        break;
    case DSD_IPC_SHM_OK:
        dp(&d, "size=%llu prompt=%llu rings=%u cap=%u ", (unsigned long long)m->shm_ok.size,
           (unsigned long long)m->shm_ok.prompt_capacity, m->shm_ok.ring_count,
           m->shm_ok.ring_capacity);
        break;
    case DSD_IPC_ACCEPTED:
        dp(&d, "prompt_tokens=%u ring_start=%d/%llu ", m->accepted.prompt_tokens,
           m->accepted.has_ring_start, (unsigned long long)m->accepted.ring_start);
        break;
    case DSD_IPC_TOKENS: {
        const struct dsd_ipc_tokens *t = &m->tokens;
        du32s(&d, "ids", t->ids, t->n_ids);
        dp(&d, "pos=%d/%llu stalled=%d ", t->has_pos, (unsigned long long)t->pos, t->stalled);
        ds(&d, "text", t->text);
        ds(&d, "reasoning", t->reasoning);
        for (uint32_t i = 0; i < t->n_tool_calls; i++) {
            dp(&d, "delta{index=%u ", t->tool_calls[i].index);
            ds(&d, "id", t->tool_calls[i].id);
            ds(&d, "name", t->tool_calls[i].name);
            ds(&d, "args", t->tool_calls[i].arguments);
            dp(&d, "} ");
        }
        ds(&d, "tool_call_error", t->tool_call_error);
        for (uint32_t i = 0; i < t->n_logprobs; i++) {
            const struct dsd_ipc_logprob *lp = &t->logprobs[i];
            dp(&d, "lp{%u:%.17g", lp->token, lp->logprob);
            for (uint32_t k = 0; k < lp->n_top; k++)
                dp(&d, " %u:%.17g", lp->top[k].token, lp->top[k].logprob);
            dp(&d, "} ");
        }
        break;
    }
    case DSD_IPC_DONE: {
        const struct dsd_ipc_done *dn = &m->done;
        dp(&d, "finish=%d stop_token=%d/%u ", (int)dn->finish, dn->has_stop_token,
           dn->stop_token);
        ds(&d, "stop_string", dn->stop_string);
        dp(&d, "usage=%u,%u,%u tiers=%d/%u,%u,%u timings=%llu,%llu,%llu,%.17g ring_end=%d/%llu ",
           dn->usage.prompt, dn->usage.cached, dn->usage.completion, dn->usage.has_tiers,
           dn->usage.cached_device, dn->usage.cached_host, dn->usage.cached_disk,
           (unsigned long long)dn->timings.queue_us, (unsigned long long)dn->timings.first_token_us,
           (unsigned long long)dn->timings.total_us, dn->timings.per_token_us, dn->has_ring_end,
           (unsigned long long)dn->ring_end);
        dp(&d, "error=%d/%u ", dn->has_error, dn->error_code);
        ds(&d, "error_msg", dn->error_msg);
        break;
    }
    case DSD_IPC_TOKENIZE_OK:
        du32s(&d, "tokens", m->tokenize_ok.tokens, m->tokenize_ok.n_tokens);
        break;
    case DSD_IPC_DETOKENIZE_OK: ds(&d, "text", m->detokenize_ok.text); break;
    case DSD_IPC_STATS_OK: dump_kv(&d, m->stats_ok.stats, m->stats_ok.n_stats); break;
    case DSD_IPC_HEALTH_OK:
        dp(&d, "status=%d ", (int)m->health_ok.status);
        ds(&d, "detail", m->health_ok.detail);
        break;
    case DSD_IPC_ERROR:
        dp(&d, "code=%u fatal=%d ", m->error.code, m->error.fatal);
        ds(&d, "msg", m->error.msg);
        break;
    default: break;
    }
    return buf;
}

/* ---- fixtures --------------------------------------------------------------------------- */

static const uint32_t fx_ids[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 129279, 4294967295u};
static const struct dsd_ipc_str fx_stop[2] = {FX_S("</s>"), FX_S("\xe2\x9c\x93 done")};
static const uint32_t fx_stop_ids[] = {1, 128803};
static const struct dsd_ipc_tool_call fx_calls[2] = {
    {FX_S("call_1"), FX_S("get_weather"), FX_S("{\"city\":\"Tokyo\"}")},
    {{NULL, 0}, FX_S("now"), FX_S("{}")},
};
static const struct dsd_ipc_chat_msg fx_chat[5] = {
    {.role = DSD_IPC_ROLE_SYSTEM, .content = FX_S("You are terse.")},
    {.role = DSD_IPC_ROLE_USER, .content = FX_S("Weather in \xe6\x9d\xb1\xe4\xba\xac?"),
     .name = FX_S("ann")},
    {.role = DSD_IPC_ROLE_ASSISTANT, .reasoning = FX_S("need a tool"), .n_tool_calls = 2,
     .tool_calls = fx_calls},
    {.role = DSD_IPC_ROLE_TOOL, .content = FX_S("sunny"), .tool_call_id = FX_S("call_1")},
    {.role = DSD_IPC_ROLE_DEVELOPER, .content = FX_S("")},
};
static const char fx_tools[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}]";
static const struct dsd_ipc_tool_delta fx_deltas[2] = {
    {0, FX_S("call_1"), FX_S("get_weather"), FX_S("{\"ci")},
    {1, {NULL, 0}, {NULL, 0}, FX_S("ty\"}")},
};
static const struct dsd_ipc_top_logprob fx_top[3] = {{5, -0.25}, {6, -1.5}, {7, -3.0625}};
static const struct dsd_ipc_logprob fx_lps[2] = {
    {5, -0.25, 3, fx_top},
    {9, -12.5, 0, NULL},
};
static const struct dsd_ipc_kv fx_kv[5] = {
    {.key = FX_S("max_batch"), .kind = DSD_IPC_KV_INT, .i = 64},
    {.key = FX_S("offset"), .kind = DSD_IPC_KV_INT, .i = -9000000000ll},
    {.key = FX_S("hit_rate"), .kind = DSD_IPC_KV_FLOAT, .f = 0.75},
    {.key = FX_S("cuda"), .kind = DSD_IPC_KV_BOOL, .b = true},
    {.key = FX_S("kv_dtype"), .kind = DSD_IPC_KV_STR, .s = FX_S("fp8_e4m3")},
};

static void fx_sampling(struct dsd_ipc_sampling *s)
{
    dsd_ipc_sampling_default(s);
    s->temperature = 0.6;
    s->top_p = 0.95;
    s->min_p = 0.05;
    s->repetition_penalty = 1.1;
    s->frequency_penalty = -0.5;
    s->presence_penalty = 1.5;
    s->top_k = 40;
    s->max_tokens = 1000;
    s->top_logprobs = 5;
    s->priority = -7;
    s->seed = 18446744073709551615ull;
    s->has_seed = true;
    s->n_stop = 2;
    s->stop = fx_stop;
    s->n_stop_ids = 2;
    s->stop_ids = fx_stop_ids;
    s->ignore_eos = true;
    s->logprobs = true;
}

static void fx_facts(struct dsd_ipc_hello_ok *h)
{
    h->version = 1;
    h->daemon = dsd_ipc_s("0.1.0");
    h->model.name = dsd_ipc_s("DeepSeek-V3.2");
    h->model.vocab_size = 129280;
    h->model.max_context = 163840;
    h->model.n_eos = 2;
    h->model.eos_ids[0] = 1;
    h->model.eos_ids[1] = 128803;
    h->model.has_bos = true;
    h->model.bos_id = 0;
    h->model.kv_dtype = dsd_ipc_s("fp8_e4m3");
    h->model.backend = dsd_ipc_s("cuda");
    h->limits = (struct dsd_ipc_limits){4u << 20, 163840, 32768, 256, 20, 1ull << 33};
}

/* Fills out[] with every fixture (at most 32); returns how many. */
static int fx_all(struct dsd_ipc_msg *out)
{
    int n = 0;
    struct dsd_ipc_msg *m;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_HELLO, .id = 1};
    m->hello = (struct dsd_ipc_hello){1, 3, FX_S("probe \xf0\x9f\x94\x8d"), 1u << 20};

    m = &out[n++];  /* generate, inline tokens, every sampling field, ring output */
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_GENERATE, .id = 2};
    dsd_ipc_generate_default(&m->generate);
    m->generate.prompt.kind = DSD_IPC_PROMPT_TOKENS;
    m->generate.prompt.tokens = fx_ids;
    m->generate.prompt.n_tokens = sizeof fx_ids / sizeof fx_ids[0];
    fx_sampling(&m->generate.sampling);
    m->generate.use_ring = true;
    m->generate.ring = 63;
    m->generate.notify = false;
    m->generate.detokenize = true;

    m = &out[n++];  /* generate, shm span */
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_GENERATE, .id = 18446744073709551615ull};
    dsd_ipc_generate_default(&m->generate);
    m->generate.prompt.kind = DSD_IPC_PROMPT_SPAN;
    m->generate.prompt.span_offset = 1ull << 40;
    m->generate.prompt.span_count = 4096;

    m = &out[n++];  /* generate, text without BOS, detokenize off */
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_GENERATE, .id = 4};
    dsd_ipc_generate_default(&m->generate);
    m->generate.prompt.kind = DSD_IPC_PROMPT_TEXT;
    m->generate.prompt.text = dsd_ipc_s("Once upon a time");
    m->generate.prompt.add_special = false;
    m->generate.detokenize = false;
    m->generate.sampling.temperature = 0;

    m = &out[n++];  /* generate, chat with every message field, tools, thinking */
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_GENERATE, .id = 5};
    dsd_ipc_generate_default(&m->generate);
    m->generate.prompt.kind = DSD_IPC_PROMPT_CHAT;
    m->generate.prompt.messages = fx_chat;
    m->generate.prompt.n_messages = 5;
    m->generate.prompt.tools = dsd_ipc_s(fx_tools);
    m->generate.prompt.thinking = true;
    m->generate.detokenize = true;
    m->generate.sampling.priority = 1000;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_SHM_ATTACH, .id = 6};
    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_CANCEL, .id = 2};
    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_RESUME, .id = 2};

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_TOKENIZE, .id = 7};
    m->tokenize.prompt.kind = DSD_IPC_PROMPT_TEXT;
    m->tokenize.prompt.text = dsd_ipc_s("hello\0world");
    m->tokenize.prompt.text.len = 11;   /* an embedded NUL survives */
    m->tokenize.prompt.add_special = false;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_TOKENIZE, .id = 8};
    m->tokenize.prompt.kind = DSD_IPC_PROMPT_CHAT;
    m->tokenize.prompt.add_special = true;
    m->tokenize.prompt.messages = fx_chat;
    m->tokenize.prompt.n_messages = 2;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_DETOKENIZE, .id = 9};
    m->detokenize.tokens = fx_ids;
    m->detokenize.n_tokens = 3;
    m->detokenize.skip_special = true;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_INFO, .id = 10};
    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_STATS, .id = 11};
    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_HEALTH, .id = 12};

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_HELLO_OK, .id = 1};
    fx_facts(&m->hello_ok);

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_SHM_OK, .id = 6};
    m->shm_ok = (struct dsd_ipc_shm_ok){1ull << 32, 1u << 20, 64, 4096};

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_ACCEPTED, .id = 2};
    m->accepted = (struct dsd_ipc_accepted){17, 1ull << 50, true};

    m = &out[n++];  /* tokens: every field */
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_TOKENS, .id = 2};
    m->tokens.ids = fx_ids;
    m->tokens.n_ids = 2;
    m->tokens.has_pos = true;
    m->tokens.pos = 123456789012ull;
    m->tokens.text = dsd_ipc_s("Hel\xc3\xa9");
    m->tokens.reasoning = dsd_ipc_s("think");
    m->tokens.tool_calls = fx_deltas;
    m->tokens.n_tool_calls = 2;
    m->tokens.tool_call_error = dsd_ipc_s("tool call \"f\" was dropped\nanother");
    m->tokens.logprobs = fx_lps;
    m->tokens.n_logprobs = 2;
    m->tokens.stalled = true;

    m = &out[n++];  /* done with an error */
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_DONE, .id = 2};
    m->done.finish = DSD_IPC_FINISH_ERROR;
    m->done.has_stop_token = true;
    m->done.stop_token = 128803;
    m->done.stop_string = dsd_ipc_s("</s>");
    m->done.usage = (struct dsd_ipc_usage){100, 64, 4294967295u, true, 0, 64, 4000000000u};
    m->done.timings = (struct dsd_ipc_timings){1, 2000, 18446744073709551615ull, 1234.5};
    m->done.has_ring_end = true;
    m->done.ring_end = 1ull << 50;
    m->done.has_error = true;
    m->done.error_code = DSD_IPC_E_RING_CORRUPT;
    m->done.error_msg = dsd_ipc_s("consumer position is ahead of the producer");

    m = &out[n++];  /* done, plain */
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_DONE, .id = 3};
    m->done.finish = DSD_IPC_FINISH_STOP_STRING;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_TOKENIZE_OK, .id = 7};
    m->tokenize_ok.tokens = fx_ids;
    m->tokenize_ok.n_tokens = sizeof fx_ids / sizeof fx_ids[0];

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_TOKENIZE_OK, .id = 8};  /* empty result */

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_DETOKENIZE_OK, .id = 9};
    m->detokenize_ok.text = dsd_ipc_s("\xef\xbf\xbd ok");

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_INFO_OK, .id = 10};
    fx_facts(&m->info_ok.facts);
    m->info_ok.server = fx_kv;
    m->info_ok.n_server = 5;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_STATS_OK, .id = 11};
    m->stats_ok.stats = fx_kv;
    m->stats_ok.n_stats = 3;

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_HEALTH_OK, .id = 12};
    m->health_ok.status = DSD_IPC_STATUS_DRAINING;
    m->health_ok.detail = dsd_ipc_s("draining 3 requests");

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_ERROR, .id = 0};
    m->error = (struct dsd_ipc_error){DSD_IPC_E_FRAME_TOO_LARGE, FX_S("too big"), true};

    m = &out[n++];
    *m = (struct dsd_ipc_msg){.type = DSD_IPC_ERROR, .id = 77};
    m->error = (struct dsd_ipc_error){DSD_IPC_E_BAD_VALUE, FX_S(""), false};
    return n;
}

#endif
