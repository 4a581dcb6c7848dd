/*
 * tools/probe/probe_cmds.c: the commands of deepseekd-probe that are one libdeepseekd call
 * or one stream: ping, info, stats, health, tokenize, generate, chat.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int fail(const struct dsd_client_error *e, int rc)
{
    fprintf(stderr, "deepseekd-probe: %s\n", e->message[0] ? e->message : strerror(-rc));
    return probe_exit_for(rc);
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s)
        puts(s);
    free(s);
    fflush(stdout);
    json_decref(j);
}

static json_t *value_json(const struct dsd_client_value *v)
{
    switch (v->type) {
    case DSD_CLIENT_VALUE_INT: return json_integer(v->i);
    case DSD_CLIENT_VALUE_FLOAT: return json_real(v->f);
    case DSD_CLIENT_VALUE_BOOL: return json_boolean(v->b);
    case DSD_CLIENT_VALUE_STRING: return json_string(v->s);
    }
    return json_null();
}

static void print_value(const struct dsd_client_value *v)
{
    switch (v->type) {
    case DSD_CLIENT_VALUE_INT: printf("%-28s %lld\n", v->name, (long long)v->i); break;
    case DSD_CLIENT_VALUE_FLOAT: printf("%-28s %g\n", v->name, v->f); break;
    case DSD_CLIENT_VALUE_BOOL: printf("%-28s %s\n", v->name, v->b ? "true" : "false"); break;
    case DSD_CLIENT_VALUE_STRING: printf("%-28s %s\n", v->name, v->s); break;
    }
}

static int cmd_ping(struct dsd_client *c, struct probe_args *a)
{
    double best = 1e300, sum = 0;
    double *rtt = calloc(a->count, sizeof *rtt);
    if (!rtt)
        return PROBE_EX_FAIL;
    for (uint32_t i = 0; i < a->count; i++) {
        enum dsd_client_health h;
        struct dsd_client_error e;
        double t0 = now_us();
        int rc = dsd_client_get_health(c, &h, NULL, 0, &e);
        rtt[i] = now_us() - t0;
        if (rc < 0) {
            free(rtt);
            return fail(&e, rc);
        }
        if (!a->json && a->count == 1)
            printf("pong from %s (%s): %.1f us\n", dsd_client_get_facts(c)->model_name,
                   dsd_client_health_name(h), rtt[i]);
        best = rtt[i] < best ? rtt[i] : best;
        sum += rtt[i];
    }
    /* Percentiles by sorting (count is small). */
    for (uint32_t i = 1; i < a->count; i++)
        for (uint32_t k = i; k > 0 && rtt[k - 1] > rtt[k]; k--) {
            double t = rtt[k];
            rtt[k] = rtt[k - 1];
            rtt[k - 1] = t;
        }
    double p50 = rtt[(a->count - 1) / 2], p99 = rtt[(uint32_t)((a->count - 1) * 0.99)];
    if (a->json)
        print_json(json_pack("{s:i, s:f, s:f, s:f, s:f}", "count", (json_int_t)a->count,
                             "min_us", best, "mean_us", sum / a->count, "p50_us", p50,
                             "p99_us", p99));
    else if (a->count > 1)
        printf("%u pings: min %.1f us, mean %.1f us, p50 %.1f us, p99 %.1f us\n", a->count,
               best, sum / a->count, p50, p99);
    free(rtt);
    return PROBE_EX_OK;
}

static json_t *info_json(const struct dsd_client_info *in)
{
    json_t *eos = json_array();
    for (uint32_t i = 0; i < in->n_eos_ids; i++)
        json_array_append_new(eos, json_integer(in->eos_ids[i]));
    json_t *server = json_object();
    for (uint32_t i = 0; i < in->n_server; i++)
        json_object_set_new(server, in->server[i].name, value_json(&in->server[i]));
    return json_pack("{s:i, s:s, s:{s:s, s:i, s:i, s:o, s:I, s:s, s:s},"
                     " s:{s:i, s:i, s:i, s:i, s:i, s:I}, s:{s:i, s:i, s:I}, s:o}",
                     "version", (json_int_t)in->protocol_version, "daemon", in->daemon_version,
                     "model", "name", in->model_name, "vocab_size", (json_int_t)in->vocab_size,
                     "max_context", (json_int_t)in->max_context, "eos_ids", eos, "bos_id",
                     (json_int_t)in->bos_id, "kv_dtype", in->kv_dtype, "backend", in->backend,
                     "limits", "max_frame", (json_int_t)in->max_frame, "max_prompt_tokens",
                     (json_int_t)in->max_prompt_tokens, "max_tokens",
                     (json_int_t)in->max_tokens, "max_inflight", (json_int_t)in->max_inflight,
                     "max_top_logprobs", (json_int_t)in->max_top_logprobs, "max_shm_bytes",
                     (json_int_t)in->max_shm_bytes, "shm", "ring_count",
                     (json_int_t)in->shm_ring_count, "ring_capacity",
                     (json_int_t)in->shm_ring_capacity, "prompt_capacity",
                     (json_int_t)in->shm_prompt_capacity, "server", server);
}

static int cmd_info(struct dsd_client *c, struct probe_args *a)
{
    struct dsd_client_info *in;
    struct dsd_client_error e;
    int rc = dsd_client_get_info(c, &in, &e);
    if (rc < 0)
        return fail(&e, rc);
    if (a->json) {
        print_json(info_json(in));
    } else {
        printf("daemon        %s (protocol %u)\n", in->daemon_version, in->protocol_version);
        printf("model         %s, vocab %u, context %u, backend %s, kv %s\n", in->model_name,
               in->vocab_size, in->max_context, in->backend, in->kv_dtype);
        printf("limits        frame %u B, prompt %u, tokens %u, in flight %u, top logprobs %u, "
               "shm %llu B\n", in->max_frame, in->max_prompt_tokens, in->max_tokens,
               in->max_inflight, in->max_top_logprobs, (unsigned long long)in->max_shm_bytes);
        /* The shm geometry is this connection's, and one-reply commands set none up. */
        if (in->shm_ring_count)
            printf("this client   shm: %u rings of %u tokens, prompt arena %llu tokens\n",
                   in->shm_ring_count, in->shm_ring_capacity,
                   (unsigned long long)in->shm_prompt_capacity);
        for (uint32_t i = 0; i < in->n_server; i++)
            print_value(&in->server[i]);
    }
    dsd_client_info_free(in);
    return PROBE_EX_OK;
}

static int cmd_stats(struct dsd_client *c, struct probe_args *a)
{
    struct dsd_client_stats *st;
    struct dsd_client_error e;
    int rc = dsd_client_get_stats(c, &st, &e);
    if (rc < 0)
        return fail(&e, rc);
    if (a->prometheus) {
        rc = probe_prometheus(stdout, st->values, st->n_values);
        dsd_client_stats_free(st);
        return rc < 0 ? PROBE_EX_FAIL : PROBE_EX_OK;
    }
    if (a->json) {
        json_t *o = json_object();
        for (uint32_t i = 0; i < st->n_values; i++)
            json_object_set_new(o, st->values[i].name, value_json(&st->values[i]));
        print_json(o);
    } else {
        for (uint32_t i = 0; i < st->n_values; i++)
            print_value(&st->values[i]);
    }
    dsd_client_stats_free(st);
    return PROBE_EX_OK;
}

static int cmd_health(struct dsd_client *c, struct probe_args *a)
{
    enum dsd_client_health h;
    char detail[1100];
    struct dsd_client_error e;
    int rc = dsd_client_get_health(c, &h, detail, sizeof detail, &e);
    if (rc < 0)
        return fail(&e, rc);
    if (a->json)
        print_json(json_pack("{s:s, s:s}", "status", dsd_client_health_name(h), "detail",
                             detail));
    else
        printf("%s%s%s\n", dsd_client_health_name(h), detail[0] ? ": " : "", detail);
    switch (h) {
    case DSD_CLIENT_HEALTH_OK: return PROBE_EX_OK;
    case DSD_CLIENT_HEALTH_LOADING:
    case DSD_CLIENT_HEALTH_DRAINING: return PROBE_EX_TEMPFAIL;
    default: return PROBE_EX_UNAVAILABLE;
    }
}

static int cmd_tokenize(struct dsd_client *c, struct probe_args *a)
{
    uint32_t *ids, n;
    struct dsd_client_error e;
    int rc = dsd_client_tokenize_text(c, a->text, !a->no_special, &ids, &n, &e);
    if (rc < 0)
        return fail(&e, rc);
    if (a->json) {
        json_t *arr = json_array();
        for (uint32_t i = 0; i < n; i++)
            json_array_append_new(arr, json_integer(ids[i]));
        print_json(json_pack("{s:o}", "tokens", arr));
    } else {
        for (uint32_t i = 0; i < n; i++)
            printf("%s%u", i ? " " : "", ids[i]);
        printf("\n");
    }
    dsd_client_buffer_free(ids);
    return PROBE_EX_OK;
}

static json_t *event_json(const struct dsd_client_event *ev)
{
    json_t *o = json_object();
    if (ev->n_ids) {
        json_t *ids = json_array();
        for (uint32_t i = 0; i < ev->n_ids; i++)
            json_array_append_new(ids, json_integer(ev->ids[i]));
        json_object_set_new(o, "ids", ids);
    }
    if (ev->text)
        json_object_set_new(o, "text", json_stringn(ev->text, ev->text_len));
    if (ev->reasoning)
        json_object_set_new(o, "reasoning", json_stringn(ev->reasoning, ev->reasoning_len));
    if (ev->n_tool_calls) {
        json_t *tc = json_array();
        for (uint32_t i = 0; i < ev->n_tool_calls; i++) {
            const struct dsd_client_tool_delta *d = &ev->tool_calls[i];
            json_t *t = json_pack("{s:i}", "index", (json_int_t)d->index);
            if (d->id)
                json_object_set_new(t, "id", json_string(d->id));
            if (d->name)
                json_object_set_new(t, "name", json_string(d->name));
            if (d->arguments)
                json_object_set_new(t, "arguments", json_string(d->arguments));
            json_array_append_new(tc, t);
        }
        json_object_set_new(o, "tool_calls", tc);
    }
    if (ev->tool_call_error)
        json_object_set_new(o, "tool_call_error", json_stringn(ev->tool_call_error, ev->tool_call_error_len));
    if (ev->n_logprobs) {
        json_t *lp = json_array();
        for (uint32_t i = 0; i < ev->n_logprobs; i++) {
            const struct dsd_client_logprob *l = &ev->logprobs[i];
            json_t *top = json_array();
            for (uint32_t k = 0; k < l->n_top; k++)
                json_array_append_new(top, json_pack("[i, f]", (json_int_t)l->top[k].token,
                                                     l->top[k].logprob));
            json_array_append_new(lp, json_pack("{s:i, s:f, s:o}", "token",
                                                (json_int_t)l->token, "logprob", l->logprob,
                                                "top", top));
        }
        json_object_set_new(o, "logprobs", lp);
    }
    if (ev->type == DSD_CLIENT_EVENT_DONE) {
        const struct dsd_client_done *d = &ev->done;
        json_t *dj = json_pack("{s:s, s:{s:i, s:i, s:i}, s:{s:I, s:I, s:I, s:f}}", "finish",
                               dsd_client_finish_name(d->finish), "usage", "prompt",
                               (json_int_t)d->usage.prompt, "cached",
                               (json_int_t)d->usage.cached, "completion",
                               (json_int_t)d->usage.completion, "timings", "queue_us",
                               (json_int_t)d->timings.queue_us, "first_token_us",
                               (json_int_t)d->timings.first_token_us, "total_us",
                               (json_int_t)d->timings.total_us, "per_token_us",
                               d->timings.per_token_us);
        if (d->usage.cached) {
            json_t *u = json_object_get(dj, "usage");
            json_object_set_new(u, "cached_device", json_integer((json_int_t)ev->cached_tiers.device));
            json_object_set_new(u, "cached_host", json_integer((json_int_t)ev->cached_tiers.host));
            json_object_set_new(u, "cached_disk", json_integer((json_int_t)ev->cached_tiers.disk));
        }
        if (d->stop_token >= 0)
            json_object_set_new(dj, "stop_token", json_integer(d->stop_token));
        if (d->stop_string)
            json_object_set_new(dj, "stop_string", json_string(d->stop_string));
        if (d->error_message)
            json_object_set_new(dj, "error", json_pack("{s:i, s:s}", "code",
                                                       (json_int_t)d->error_code, "msg",
                                                       d->error_message));
        json_object_set_new(o, "done", dj);
    }
    return o;
}

/* Streams one request to stdout. chat: reasoning and answer under headers. */
static int stream(struct dsd_client *c, struct probe_args *a, bool chat)
{
    struct dsd_client_request *r;
    struct dsd_client_error e;
    int rc = dsd_client_request_start(c, &a->gp, &r, &e);
    if (rc < 0)
        return fail(&e, rc);
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    const struct dsd_client_event *ev;
    bool show_ids = a->gp.detokenize == 0 || (a->gp.detokenize < 0 && a->prompt_tokens);
    int section = 0;                    /* chat: 1 reasoning, 2 answer */
    bool cancelled = false;
    int ex = PROBE_EX_OK;
    /* -t bounds each wait for the daemon's next event (accepted, tokens, done); without it a
     * stream waits as long as the request runs (Ctrl-C cancels). */
    double last_event = now_us();
    for (;;) {
        rc = dsd_client_request_next(r, 200, &ev, &e);
        if (rc == -ETIMEDOUT) {
            if (interrupted && !cancelled) {
                dsd_client_request_cancel(r);
                cancelled = true;
            }
            if (a->timeout_ms > 0 && now_us() - last_event >= a->timeout_ms * 1e3) {
                dsd_client_request_cancel(r);
                snprintf(e.message, sizeof e.message,
                         "no reply from the daemon for %d ms (-t); the request was cancelled",
                         a->timeout_ms);
                break;
            }
            continue;
        }
        last_event = now_us();
        if (rc <= 0)
            break;
        if (a->json) {
            print_json(event_json(ev));
        } else {
            if (show_ids)
                for (uint32_t i = 0; i < ev->n_ids; i++)
                    printf("%u ", ev->ids[i]);
            if (ev->reasoning_len) {
                if (chat && section != 1)
                    printf("%s[reasoning]\n", section ? "\n" : ""), section = 1;
                fwrite(ev->reasoning, 1, ev->reasoning_len, stdout);
            }
            if (ev->text_len && !show_ids) {
                if (chat && section != 2)
                    printf("%s[answer]\n", section ? "\n" : ""), section = 2;
                fwrite(ev->text, 1, ev->text_len, stdout);
            }
            for (uint32_t i = 0; i < ev->n_tool_calls; i++) {
                const struct dsd_client_tool_delta *d = &ev->tool_calls[i];
                if (d->name)
                    printf("\n[tool call %u] %s(", d->index, d->name);
                if (d->arguments)
                    fputs(d->arguments, stdout);
            }
            if (ev->n_tool_calls)
                printf(")");
            if (ev->tool_call_error_len)
                printf("\n[unreadable tool call skipped] %.*s\n", (int)ev->tool_call_error_len, ev->tool_call_error);
            for (uint32_t i = 0; i < ev->n_logprobs; i++) {
                const struct dsd_client_logprob *l = &ev->logprobs[i];
                fprintf(stderr, "[logprob %u %.4f", l->token, l->logprob);
                for (uint32_t k = 0; k < l->n_top; k++)
                    fprintf(stderr, " %u:%.4f", l->top[k].token, l->top[k].logprob);
                fprintf(stderr, "]\n");
            }
            fflush(stdout);
        }
        if (ev->type == DSD_CLIENT_EVENT_DONE) {
            const struct dsd_client_done *d = &ev->done;
            if (!a->json)
                fprintf(stderr, "\n[%s, %u prompt + %u generated tokens, first token %.1f ms, "
                        "%.2f ms/token]\n", dsd_client_finish_name(d->finish), d->usage.prompt,
                        d->usage.completion, d->timings.first_token_us / 1e3,
                        d->timings.per_token_us / 1e3);
            if (d->finish == DSD_CLIENT_FINISH_ERROR) {
                fprintf(stderr, "deepseekd-probe: the request failed: %s\n",
                        d->error_message ? d->error_message : "");
                ex = PROBE_EX_FAIL;
            }
        }
    }
    if (rc < 0)
        ex = fail(&e, rc);
    dsd_client_request_free(r);
    return ex;
}

static int cmd_generate(struct dsd_client *c, struct probe_args *a)
{
    if (a->prompt_tokens) {
        a->gp.prompt_tokens = a->prompt_tokens;
        a->gp.n_prompt_tokens = a->n_prompt_tokens;
    } else {
        a->gp.prompt_text = a->prompt;
        a->gp.add_special = !a->no_special;
    }
    return stream(c, a, false);
}

static int cmd_chat(struct dsd_client *c, struct probe_args *a)
{
    struct dsd_client_message m[2];
    uint32_t n = 0;
    if (a->system)
        m[n++] = (struct dsd_client_message){.role = DSD_CLIENT_ROLE_SYSTEM,
                                             .content = a->system};
    m[n++] = (struct dsd_client_message){.role = DSD_CLIENT_ROLE_USER, .content = a->message};
    a->gp.messages = m;
    a->gp.n_messages = n;
    a->gp.tools_json = a->tools_json;
    return stream(c, a, true);
}

int probe_run(struct probe_args *a)
{
    if (a->cmd == PROBE_RAW)
        return probe_raw(a);
    struct dsd_client_params cp = dsd_client_default_params();
    cp.socket_path = a->socket;
    cp.client_name = "deepseekd-probe";
    if (a->timeout_ms > 0)
        cp.timeout_ms = a->timeout_ms;
    cp.use_shm = !a->no_shm;
    if (a->cmd == PROBE_BENCH && a->concurrency > cp.shm_ring_count)
        cp.shm_ring_count = a->concurrency;
    if (a->cmd != PROBE_GENERATE && a->cmd != PROBE_CHAT && a->cmd != PROBE_BENCH)
        cp.use_shm = false;             /* one-reply commands never use it: skip the setup */
    struct dsd_client *c;
    struct dsd_client_error e;
    int rc = dsd_client_connect(&cp, &c, &e);
    if (rc < 0)
        return fail(&e, rc);
    int ex;
    switch (a->cmd) {
    case PROBE_PING: ex = cmd_ping(c, a); break;
    case PROBE_INFO: ex = cmd_info(c, a); break;
    case PROBE_STATS: ex = cmd_stats(c, a); break;
    case PROBE_HEALTH: ex = cmd_health(c, a); break;
    case PROBE_TOKENIZE: ex = cmd_tokenize(c, a); break;
    case PROBE_GENERATE: ex = cmd_generate(c, a); break;
    case PROBE_CHAT: ex = cmd_chat(c, a); break;
    case PROBE_BENCH: ex = probe_bench(c, a); break;
    default: ex = PROBE_EX_USAGE; break;
    }
    dsd_client_free(c);
    return ex;
}
