/*
 * client_lib/src/client_result.c: the blocking generation, which runs a stream to its end and
 * assembles ids, text, reasoning, tool calls (from their deltas, by index) and logprobs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

struct text_acc {
    char *p;
    size_t len, cap;
};

static int text_add(struct text_acc *t, const char *s, size_t n)
{
    if (!s)
        return 0;
    if (t->len + n + 1 > t->cap) {
        size_t nc = t->cap ? t->cap : 256;
        while (nc < t->len + n + 1)
            nc *= 2;
        char *q = realloc(t->p, nc);
        if (!q)
            return -ENOMEM;
        t->p = q;
        t->cap = nc;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
    return 0;
}

static char *text_finish(struct text_acc *t, size_t *ret_len)
{
    if (!t->p && text_add(t, "", 0) < 0)
        return NULL;
    *ret_len = t->len;
    char *p = t->p;
    t->p = NULL;
    return p;
}

struct call_acc {
    bool used;
    struct text_acc id, name, args;
};

struct acc {
    uint32_t *ids;
    uint64_t n_ids, ids_cap;
    struct text_acc text, reasoning, tool_errors;
    struct call_acc calls[DSD_IPC_MAX_TOOL_CALLS];
    struct dsd_client_logprob *lps;
    uint64_t n_lps, lps_cap;
};

static void acc_free(struct acc *a)
{
    free(a->ids);
    free(a->text.p);
    free(a->reasoning.p);
    free(a->tool_errors.p);
    for (uint32_t i = 0; i < DSD_IPC_MAX_TOOL_CALLS; i++) {
        free(a->calls[i].id.p);
        free(a->calls[i].name.p);
        free(a->calls[i].args.p);
    }
    for (uint64_t i = 0; i < a->n_lps; i++)
        free((void *)a->lps[i].top);
    free(a->lps);
}

static int acc_event(struct acc *a, const struct dsd_client_event *ev)
{
    if (ev->n_ids) {
        if (a->n_ids + ev->n_ids > a->ids_cap) {
            uint64_t nc = a->ids_cap ? a->ids_cap : 256;
            while (nc < a->n_ids + ev->n_ids)
                nc *= 2;
            if (nc > UINT32_MAX)
                return -EOVERFLOW;
            uint32_t *q = realloc(a->ids, nc * sizeof *q);
            if (!q)
                return -ENOMEM;
            a->ids = q;
            a->ids_cap = nc;
        }
        memcpy(a->ids + a->n_ids, ev->ids, (size_t)ev->n_ids * sizeof *a->ids);
        a->n_ids += ev->n_ids;
    }
    if (text_add(&a->text, ev->text, ev->text_len) < 0 ||
        text_add(&a->reasoning, ev->reasoning, ev->reasoning_len) < 0)
        return -ENOMEM;
    if (ev->tool_call_error_len && ((a->tool_errors.p && text_add(&a->tool_errors, "\n", 1) < 0) ||
                                    text_add(&a->tool_errors, ev->tool_call_error, ev->tool_call_error_len) < 0))
        return -ENOMEM;
    for (uint32_t i = 0; i < ev->n_tool_calls; i++) {
        const struct dsd_client_tool_delta *d = &ev->tool_calls[i];
        if (d->index >= DSD_IPC_MAX_TOOL_CALLS)
            continue;                   /* the decoder already bounds it */
        struct call_acc *k = &a->calls[d->index];
        k->used = true;
        if ((d->id && text_add(&k->id, d->id, strlen(d->id)) < 0) ||
            (d->name && text_add(&k->name, d->name, strlen(d->name)) < 0) ||
            (d->arguments && text_add(&k->args, d->arguments, strlen(d->arguments)) < 0))
            return -ENOMEM;
    }
    if (ev->n_logprobs) {
        if (a->n_lps + ev->n_logprobs > a->lps_cap) {
            uint64_t nc = a->lps_cap ? a->lps_cap : 256;
            while (nc < a->n_lps + ev->n_logprobs)
                nc *= 2;
            struct dsd_client_logprob *q = realloc(a->lps, nc * sizeof *q);
            if (!q)
                return -ENOMEM;
            a->lps = q;
            a->lps_cap = nc;
        }
        for (uint32_t i = 0; i < ev->n_logprobs; i++) {
            struct dsd_client_logprob l = ev->logprobs[i];
            struct dsd_client_top_logprob *top = NULL;
            if (l.n_top) {
                top = malloc(l.n_top * sizeof *top);
                if (!top)
                    return -ENOMEM;
                memcpy(top, l.top, l.n_top * sizeof *top);
            }
            l.top = top;
            a->lps[a->n_lps++] = l;
        }
    }
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

DSD_CLIENT_API void dsd_client_result_free(struct dsd_client_result *res)
{
    if (!res)
        return;
    free(res->tokens);
    free(res->text);
    free(res->reasoning);
    free(res->tool_call_errors);
    for (uint32_t i = 0; i < res->n_tool_calls; i++) {
        free((void *)res->tool_calls[i].id);
        free((void *)res->tool_calls[i].name);
        free((void *)res->tool_calls[i].arguments);
    }
    free(res->tool_calls);
    for (uint32_t i = 0; i < res->n_logprobs; i++)
        free((void *)res->logprobs[i].top);
    free(res->logprobs);
    free((void *)res->done.stop_string);
    free((void *)res->done.error_message);
    free(res);
}

/* Moves the accumulated output into a result. */
static int acc_build(struct acc *a, const struct dsd_client_done *done,
                     struct dsd_client_result **ret)
{
    struct dsd_client_result *res = calloc(1, sizeof *res);
    if (!res)
        return -ENOMEM;
    res->tokens = a->ids;
    res->n_tokens = (uint32_t)a->n_ids;
    a->ids = NULL;
    res->logprobs = a->lps;
    res->n_logprobs = (uint32_t)a->n_lps;
    a->lps = NULL;
    a->n_lps = 0;
    res->done = *done;
    res->done.stop_string = dup_or_null(done->stop_string);
    res->done.error_message = dup_or_null(done->error_message);
    res->text = text_finish(&a->text, &res->text_len);
    res->reasoning = text_finish(&a->reasoning, &res->reasoning_len);
    res->tool_call_errors_len = a->tool_errors.len;
    res->tool_call_errors = a->tool_errors.p;     /* NULL when there were none */
    a->tool_errors.p = NULL;
    uint32_t n_calls = 0;
    for (uint32_t i = 0; i < DSD_IPC_MAX_TOOL_CALLS; i++)
        n_calls += a->calls[i].used;
    if (n_calls) {
        res->tool_calls = calloc(n_calls, sizeof *res->tool_calls);
        if (!res->tool_calls) {
            dsd_client_result_free(res);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < DSD_IPC_MAX_TOOL_CALLS; i++) {
            struct call_acc *k = &a->calls[i];
            if (!k->used)
                continue;
            size_t unused;
            struct dsd_client_tool_call *t = &res->tool_calls[res->n_tool_calls++];
            t->id = k->id.p;            /* may stay NULL: the daemon gave no id */
            k->id.p = NULL;
            t->name = text_finish(&k->name, &unused);
            t->arguments = text_finish(&k->args, &unused);
            if (!t->name || !t->arguments) {
                dsd_client_result_free(res);
                return -ENOMEM;
            }
        }
    }
    if (!res->text || !res->reasoning || (done->stop_string && !res->done.stop_string) ||
        (done->error_message && !res->done.error_message)) {
        dsd_client_result_free(res);
        return -ENOMEM;
    }
    *ret = res;
    return 0;
}

static int32_t ms_left(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return -1;
    int64_t left = (deadline - client_now_ns()) / 1000000;
    if (left < 0)
        return 0;
    return left > INT32_MAX ? INT32_MAX : (int32_t)left;
}

DSD_CLIENT_API int dsd_client_generate(struct dsd_client *c,
                                       const struct dsd_client_generate_params *p,
                                       struct dsd_client_result **ret_result,
                                       struct dsd_client_error *e)
{
    if (!ret_result)
        return client_seterr(e, -EINVAL, 0, "dsd_client_generate: ret_result is NULL");
    *ret_result = NULL;
    int64_t deadline = p ? client_deadline(p->timeout_ms) : INT64_MAX;
    struct dsd_client_request *r;
    int rc = dsd_client_request_start(c, p, &r, e);
    if (rc < 0)
        return rc;
    struct acc a = {0};
    const struct dsd_client_event *ev;
    for (;;) {
        rc = dsd_client_request_next(r, ms_left(deadline), &ev, e);
        if (rc < 0) {
            if (rc == -ETIMEDOUT)
                client_seterr(e, rc, 0, "generation did not finish within %d ms; cancelled",
                              p->timeout_ms);
            break;                      /* freeing the request cancels it */
        }
        if (rc == 0) {
            rc = client_seterr(e, -EPROTO, 0, "the stream ended without 'done'");
            break;
        }
        rc = acc_event(&a, ev);
        if (rc < 0) {
            client_seterr(e, rc, 0, "%s collecting the result",
                          rc == -ENOMEM ? "out of memory" : "too many tokens");
            break;
        }
        if (ev->type == DSD_CLIENT_EVENT_DONE) {
            rc = acc_build(&a, &ev->done, ret_result);
            if (rc < 0) {
                client_seterr(e, rc, 0, "out of memory collecting the result");
            } else if (ev->done.finish == DSD_CLIENT_FINISH_ERROR) {
                const char *name = dsd_ipc_code_name(ev->done.error_code);
                rc = client_seterr(e, -EREMOTEIO, ev->done.error_code,
                                   "the generation failed (%s, code %u): %s",
                                   name ? name : "unknown error", ev->done.error_code,
                                   ev->done.error_message);
            }
            break;
        }
    }
    acc_free(&a);
    dsd_client_request_free(r);
    return rc;
}
