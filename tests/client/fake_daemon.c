/*
 * tests/client/fake_daemon.c: see fake_daemon.h. Written for tests: clarity over speed, and
 * every failure printed, since a fake that misbehaves silently would make tests lie.
 */
#include "fake_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ipc_fd.h"
#include "ipc_frame.h"

#define FAKE_MAX_CONNS 64

struct fake_req {
    uint64_t id;
    uint32_t base;              /* token k is base + k */
    uint32_t produced;          /* tokens generated so far */
    uint32_t max_tokens;
    uint32_t held;              /* tokens generated but not yet in the ring (stalled) */
    uint32_t prompt_tokens;
    int32_t ring;
    bool detok, thinking, tools, logprobs, stalled, notify;
    uint32_t top_logprobs;
};

struct conn {
    struct fake *f;
    int fd;
    pthread_t thread;
    struct dsd_ipc_reader reader;
    struct dsd_ipc_buf out;
    int pending_fd;
    struct dsd_shm shm;
    bool have_shm;
    struct dsd_ring_producer *prod;     /* one per ring */
    struct fake_req *reqs;
    uint32_t n_reqs, cap_reqs;
    uint32_t frames_sent;
    bool closed;
    /* script mode: frames decoded but not yet returned */
    uint8_t rbuf[65536];
    size_t rlen, roff;
};

struct fake {
    struct fake_opts o;
    char dir[64];
    char path[128];
    int lfd;
    pthread_t acceptor;
    atomic_bool stop;
    pthread_mutex_t lock;
    struct conn *conns[FAKE_MAX_CONNS];
    uint32_t n_conns;
    struct fake_stats stats;
    struct conn *script_conn;
};

static void conn_free(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->pending_fd >= 0)
        close(c->pending_fd);
    dsd_ipc_reader_free(&c->reader);
    dsd_ipc_buf_free(&c->out);
    dsd_shm_close(&c->shm);
    free(c->prod);
    free(c->reqs);
    free(c);
}

/* ---- output ------------------------------------------------------------------------------- */

static int queue_msg(struct conn *c, const struct dsd_ipc_msg *m)
{
    struct dsd_err err;
    int rc = dsd_ipc_encode(&c->out, m, DSD_IPC_FRAME_CEIL, &err);
    if (rc < 0)
        fprintf(stderr, "fake: encode %s: %s\n", dsd_ipc_type_name(m->type), err.msg);
    return rc;
}

/* Sends what is queued without blocking (engine) or completely (script). */
static int flush_out(struct conn *c, bool block)
{
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.data, c->out.len,
                         MSG_NOSIGNAL | (block ? 0 : MSG_DONTWAIT));
        if (n > 0) {
            dsd_ipc_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !block)
            return 0;
        return -ECONNRESET;
    }
    return 0;
}

/* ---- input -------------------------------------------------------------------------------- */

/* Reads what the socket has into c->rbuf (script: blocking with timeout). */
static int read_in(struct conn *c, int timeout_ms)
{
    if (c->roff < c->rlen)
        return 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int pr = poll(&p, 1, timeout_ms);
    if (pr == 0)
        return -ETIMEDOUT;
    if (pr < 0)
        return -errno;
    int fd = -1;
    struct dsd_ipc_fail fail;
    ssize_t n = dsd_ipc_recv_fd(c->fd, c->rbuf, sizeof c->rbuf, &fd, &fail);
    if (n == -EAGAIN)
        return 0;
    if (n <= 0)
        return -ECONNRESET;
    if (fd >= 0) {
        if (c->pending_fd >= 0)
            close(c->pending_fd);
        c->pending_fd = fd;
    }
    c->rlen = (size_t)n;
    c->roff = 0;
    return 0;
}

/* Takes the next complete frame out of c->rbuf: 1 and *m decoded, 0 none yet, < 0 bad. */
static int next_frame(struct conn *c, struct dsd_ipc_msg *m, struct dsd_ipc_fail *fail)
{
    while (c->roff < c->rlen) {
        size_t used;
        struct dsd_ipc_frame fr;
        int rc = dsd_ipc_reader_push(&c->reader, c->rbuf + c->roff, c->rlen - c->roff, &used,
                                     &fr, fail);
        c->roff += used;
        if (rc < 0)
            return rc;
        if (rc == 1) {
            rc = dsd_ipc_decode(fr.body, fr.len, DSD_IPC_TO_DAEMON, m, fail);
            return rc < 0 ? rc : 1;
        }
    }
    return 0;
}

/* ---- replies shared by the engine and the scripts ------------------------------------------ */

static void fill_hello_ok(struct fake *f, struct dsd_ipc_msg *r, uint64_t id)
{
    memset(r, 0, sizeof *r);
    r->type = DSD_IPC_HELLO_OK;
    r->id = id;
    struct dsd_ipc_hello_ok *h = &r->hello_ok;
    h->version = 1;
    h->daemon = dsd_ipc_s("fake-0.1");
    h->model.name = dsd_ipc_s("fake-model");
    h->model.vocab_size = 129280;
    h->model.max_context = 163840;
    h->model.n_eos = 1;
    h->model.eos_ids[0] = 1;
    h->model.bos_id = 0;
    h->model.has_bos = true;
    h->model.kv_dtype = dsd_ipc_s("bf16");
    h->model.backend = dsd_ipc_s("cpu");
    h->limits.max_frame = f->o.max_frame ? f->o.max_frame : DSD_IPC_DEFAULT_FRAME;
    h->limits.max_prompt_tokens = 163840;
    h->limits.max_tokens = 32768;
    h->limits.max_inflight = 1024;
    h->limits.max_top_logprobs = 20;
    h->limits.max_shm_bytes = f->o.max_shm_bytes ? f->o.max_shm_bytes : (1ull << 30);
}

static int handle_hello(struct conn *c, const struct dsd_ipc_msg *m)
{
    struct dsd_ipc_msg r;
    fill_hello_ok(c->f, &r, m->id);
    int rc = queue_msg(c, &r);
    dsd_ipc_reader_set_max(&c->reader, r.hello_ok.limits.max_frame);
    return rc;
}

static int send_fail(struct conn *c, uint64_t id, uint32_t code, const char *msg)
{
    struct dsd_ipc_fail fail = {.code = code, .id = id};
    snprintf(fail.err.msg, sizeof fail.err.msg, "%s", msg);
    struct dsd_err err;
    return dsd_ipc_encode_fail(&c->out, &fail, DSD_IPC_FRAME_CEIL, &err);
}

static int handle_shm_attach(struct conn *c, const struct dsd_ipc_msg *m)
{
    struct fake *f = c->f;
    int fd = c->pending_fd;
    c->pending_fd = -1;
    if (f->o.refuse_shm || c->have_shm) {
        if (fd >= 0)
            close(fd);
        return send_fail(c, m->id, DSD_IPC_E_SHM_INVALID, "fake: shm refused by test option");
    }
    struct dsd_ipc_fail fail = {0};
    uint64_t max = f->o.max_shm_bytes ? f->o.max_shm_bytes : (1ull << 30);
    if (dsd_shm_attach(fd, max, &c->shm, &fail) < 0)
        return send_fail(c, m->id, DSD_IPC_E_SHM_INVALID, fail.err.msg);
    c->have_shm = true;
    uint32_t n = c->shm.geo.ring_count;
    c->prod = calloc(n ? n : 1, sizeof *c->prod);
    for (uint32_t k = 0; k < n; k++)
        dsd_ring_producer_init(&c->prod[k], &c->shm, k, 0);
    struct dsd_ipc_msg r = {.type = DSD_IPC_SHM_OK, .id = m->id};
    r.shm_ok = (struct dsd_ipc_shm_ok){.size = c->shm.size,
                                       .prompt_capacity = c->shm.geo.prompt_capacity,
                                       .ring_count = c->shm.geo.ring_count,
                                       .ring_capacity = c->shm.geo.ring_capacity};
    return queue_msg(c, &r);
}

/* ---- the engine --------------------------------------------------------------------------- */

static struct fake_req *find_req(struct conn *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->n_reqs; i++)
        if (c->reqs[i].id == id)
            return &c->reqs[i];
    return NULL;
}

static int handle_generate(struct conn *c, const struct dsd_ipc_msg *m)
{
    struct fake *f = c->f;
    const struct dsd_ipc_generate *g = &m->generate;
    atomic_fetch_add(&f->stats.generates, 1);
    if (find_req(c, m->id))
        return send_fail(c, m->id, DSD_IPC_E_DUPLICATE_ID, "fake: id in flight");
    if (f->o.refuse_code)
        return send_fail(c, m->id, f->o.refuse_code, "fake: refused by test option");
    struct fake_req q = {.id = m->id, .ring = -1, .notify = g->notify};
    switch (g->prompt.kind) {
    case DSD_IPC_PROMPT_TOKENS:
        for (uint32_t i = 0; i < g->prompt.n_tokens; i++)
            q.base += g->prompt.tokens[i];
        q.prompt_tokens = g->prompt.n_tokens;
        break;
    case DSD_IPC_PROMPT_SPAN: {
        if (!c->have_shm)
            return send_fail(c, m->id, DSD_IPC_E_RING_UNAVAILABLE, "fake: span without shm");
        uint32_t *tmp = malloc((size_t)g->prompt.span_count * 4);
        struct dsd_ipc_fail fail;
        if (!tmp || dsd_shm_copy_prompt(&c->shm, g->prompt.span_offset, g->prompt.span_count,
                                        tmp, &fail) < 0) {
            free(tmp);
            return send_fail(c, m->id, DSD_IPC_E_RING_UNAVAILABLE, "fake: bad span");
        }
        for (uint32_t i = 0; i < g->prompt.span_count; i++)
            q.base += tmp[i];
        free(tmp);
        q.prompt_tokens = g->prompt.span_count;
        atomic_fetch_add(&f->stats.span_prompts, 1);
        break;
    }
    case DSD_IPC_PROMPT_TEXT:
        q.base = g->prompt.text.len;
        q.prompt_tokens = g->prompt.text.len + (g->prompt.add_special ? 1 : 0);
        break;
    case DSD_IPC_PROMPT_CHAT:
        q.base = 1000 * g->prompt.n_messages;
        q.prompt_tokens = 10 * g->prompt.n_messages;
        q.thinking = g->prompt.thinking;
        q.tools = g->prompt.tools.ptr != NULL;
        break;
    default:
        return send_fail(c, m->id, DSD_IPC_E_BAD_VALUE, "fake: no prompt");
    }
    q.max_tokens = g->sampling.max_tokens ? g->sampling.max_tokens
                   : f->o.default_max_tokens ? f->o.default_max_tokens : 8;
    q.detok = g->detokenize;
    q.logprobs = g->sampling.logprobs;
    q.top_logprobs = g->sampling.top_logprobs;
    struct dsd_ipc_msg r = {.type = DSD_IPC_ACCEPTED, .id = m->id};
    r.accepted.prompt_tokens = q.prompt_tokens;
    if (g->use_ring) {
        if (!c->have_shm || g->ring >= c->shm.geo.ring_count)
            return send_fail(c, m->id, DSD_IPC_E_RING_UNAVAILABLE, "fake: no such ring");
        for (uint32_t i = 0; i < c->n_reqs; i++)
            if (c->reqs[i].ring == (int32_t)g->ring)
                return send_fail(c, m->id, DSD_IPC_E_RING_UNAVAILABLE, "fake: ring busy");
        q.ring = (int32_t)g->ring;
        dsd_ring_producer_bind(&c->prod[g->ring], m->id);
        r.accepted.has_ring_start = true;
        r.accepted.ring_start = c->prod[g->ring].pos;
        atomic_fetch_add(&f->stats.ring_requests, 1);
    }
    if (c->n_reqs == c->cap_reqs) {
        c->cap_reqs = c->cap_reqs ? 2 * c->cap_reqs : 16;
        c->reqs = realloc(c->reqs, c->cap_reqs * sizeof *c->reqs);
    }
    c->reqs[c->n_reqs++] = q;
    return queue_msg(c, &r);
}

static void finish_req(struct conn *c, uint32_t i, enum dsd_ipc_finish finish)
{
    struct fake_req *q = &c->reqs[i];
    struct dsd_ipc_msg d = {.type = DSD_IPC_DONE, .id = q->id};
    d.done.finish = finish;
    d.done.usage = (struct dsd_ipc_usage){.prompt = q->prompt_tokens, .completion = q->produced};
    d.done.timings = (struct dsd_ipc_timings){10, 100, 1000, 50.0};
    if (q->ring >= 0) {
        dsd_ring_producer_finish(&c->prod[q->ring], finish);
        d.done.has_ring_end = true;
        d.done.ring_end = c->prod[q->ring].pos;
    }
    queue_msg(c, &d);
    c->reqs[i] = c->reqs[--c->n_reqs];
}

/* Puts held tokens into the ring; returns true when all fit. */
static bool ring_push_held(struct conn *c, struct fake_req *q)
{
    struct dsd_ring_producer *p = &c->prod[q->ring];
    while (q->held) {
        uint32_t tok[64];
        uint32_t n = q->held < 64 ? q->held : 64;
        uint32_t first = q->base + q->produced - q->held;
        for (uint32_t k = 0; k < n; k++)
            tok[k] = first + k;
        int64_t w = dsd_ring_produce(p, tok, n);
        if (w < 0) {
            fprintf(stderr, "fake: ring %d corrupt\n", q->ring);
            return false;
        }
        q->held -= (uint32_t)w;
        if ((uint32_t)w < n)
            return false;
    }
    return true;
}

static void step_req(struct conn *c, uint32_t i)
{
    struct fake *f = c->f;
    struct fake_req *q = &c->reqs[i];
    if (q->stalled)
        return;
    uint32_t n = f->o.tokens_per_step ? f->o.tokens_per_step : 1;
    if (n > 256)
        n = 256;
    if (n > q->max_tokens - q->produced)
        n = q->max_tokens - q->produced;
    uint32_t first = q->base + q->produced;
    q->produced += n;
    struct dsd_ipc_msg t = {.type = DSD_IPC_TOKENS, .id = q->id};
    uint32_t ids[256];
    char text[4096] = "", reasoning[4096] = "";
    size_t tl = 0, rl = 0;
    struct dsd_ipc_logprob lps[256];
    struct dsd_ipc_top_logprob tops[256][4];
    for (uint32_t k = 0; k < n && k < 256; k++) {
        ids[k] = first + k;
        uint32_t idx = q->produced - n + k;     /* index of the token in the request */
        if (q->detok) {
            if (q->thinking && idx < 2)
                rl += (size_t)snprintf(reasoning + rl, sizeof reasoning - rl, "r%u ", ids[k]);
            else
                tl += (size_t)snprintf(text + tl, sizeof text - tl, "t%u ", ids[k]);
        }
        if (q->logprobs) {
            uint32_t nt = q->top_logprobs < 4 ? q->top_logprobs : 4;
            for (uint32_t j = 0; j < nt; j++)
                tops[k][j] = (struct dsd_ipc_top_logprob){ids[k] + j, -(double)(j + 1)};
            lps[k] = (struct dsd_ipc_logprob){ids[k], -0.5 * idx, nt, tops[k]};
        }
    }
    if (q->ring >= 0) {
        q->held += n;
        if (!ring_push_held(c, q)) {
            q->stalled = true;
            dsd_ring_set_stalled(&c->prod[q->ring], true);
            t.tokens.stalled = true;
            atomic_fetch_add(&f->stats.stalls, 1);
        }
        t.tokens.has_pos = true;
        t.tokens.pos = c->prod[q->ring].pos;
    } else {
        t.tokens.ids = ids;
        t.tokens.n_ids = n;
    }
    if (tl)
        t.tokens.text = (struct dsd_ipc_str){text, (uint32_t)tl};
    if (rl)
        t.tokens.reasoning = (struct dsd_ipc_str){reasoning, (uint32_t)rl};
    if (q->logprobs) {
        t.tokens.logprobs = lps;
        t.tokens.n_logprobs = n;
    }
    struct dsd_ipc_tool_delta td[2];
    bool last = q->produced == q->max_tokens && !q->stalled;
    if (last && q->tools) {
        td[0] = (struct dsd_ipc_tool_delta){.index = 0, .id = dsd_ipc_s("call_0"),
                                            .name = dsd_ipc_s("get_weather"),
                                            .arguments = dsd_ipc_s("{\"city\":")};
        td[1] = (struct dsd_ipc_tool_delta){.index = 0, .arguments = dsd_ipc_s("\"Paris\"}")};
        t.tokens.tool_calls = td;
        t.tokens.n_tool_calls = 2;
    }
    /* With tools, the model also "writes" two unreadable calls: in the step that ends at the
     * 4th token and in the last step. */
    char tool_error[64];
    if (q->tools && (q->produced == 4 || last)) {
        snprintf(tool_error, sizeof tool_error, "dropped at %u", q->produced);
        t.tokens.tool_call_error = dsd_ipc_s(tool_error);
    }
    queue_msg(c, &t);
    c->frames_sent++;
    if (last)
        finish_req(c, i, q->tools ? DSD_IPC_FINISH_TOOL_CALLS : DSD_IPC_FINISH_LENGTH);
}

static void handle_resume(struct conn *c, uint64_t id)
{
    struct fake_req *q = find_req(c, id);
    atomic_fetch_add(&c->f->stats.resumes, 1);
    if (!q || !q->stalled)
        return;
    if (ring_push_held(c, q)) {
        q->stalled = false;
        dsd_ring_set_stalled(&c->prod[q->ring], false);
        if (q->produced == q->max_tokens)
            finish_req(c, (uint32_t)(q - c->reqs), q->tools ? DSD_IPC_FINISH_TOOL_CALLS
                                                           : DSD_IPC_FINISH_LENGTH);
    } else {
        struct dsd_ipc_msg t = {.type = DSD_IPC_TOKENS, .id = id};
        t.tokens.stalled = true;
        t.tokens.has_pos = true;
        t.tokens.pos = c->prod[q->ring].pos;
        queue_msg(c, &t);
    }
}

static void handle_msg(struct conn *c, const struct dsd_ipc_msg *m)
{
    struct dsd_ipc_msg r = {.id = m->id};
    switch (m->type) {
    case DSD_IPC_HELLO: handle_hello(c, m); break;
    case DSD_IPC_SHM_ATTACH: handle_shm_attach(c, m); break;
    case DSD_IPC_GENERATE: handle_generate(c, m); break;
    case DSD_IPC_CANCEL: {
        struct fake_req *q = find_req(c, m->id);
        atomic_fetch_add(&c->f->stats.cancels, 1);
        if (q)                          /* ends at once, stalled or not */
            finish_req(c, (uint32_t)(q - c->reqs), DSD_IPC_FINISH_CANCELLED);
        break;
    }
    case DSD_IPC_RESUME: handle_resume(c, m->id); break;
    case DSD_IPC_HEALTH:
        r.type = DSD_IPC_HEALTH_OK;
        r.health_ok.status = DSD_IPC_STATUS_OK;
        r.health_ok.detail = dsd_ipc_s("fake is fine");
        queue_msg(c, &r);
        break;
    case DSD_IPC_INFO: {
        struct dsd_ipc_msg h;
        fill_hello_ok(c->f, &h, m->id);
        struct dsd_ipc_kv kv[3] = {
            {.key = dsd_ipc_s("max_batch"), .kind = DSD_IPC_KV_INT, .i = 64},
            {.key = dsd_ipc_s("backend_name"), .kind = DSD_IPC_KV_STR, .s = dsd_ipc_s("cpu")},
            {.key = dsd_ipc_s("prefix_cache"), .kind = DSD_IPC_KV_BOOL, .b = true},
        };
        r.type = DSD_IPC_INFO_OK;
        r.info_ok.facts = h.hello_ok;
        r.info_ok.server = kv;
        r.info_ok.n_server = 3;
        queue_msg(c, &r);
        break;
    }
    case DSD_IPC_STATS: {
        struct dsd_ipc_kv kv[2] = {
            {.key = dsd_ipc_s("requests_running"), .kind = DSD_IPC_KV_INT, .i = c->n_reqs},
            {.key = dsd_ipc_s("cache_hit_rate"), .kind = DSD_IPC_KV_FLOAT, .f = 0.25},
        };
        r.type = DSD_IPC_STATS_OK;
        r.stats_ok.stats = kv;
        r.stats_ok.n_stats = 2;
        queue_msg(c, &r);
        break;
    }
    case DSD_IPC_TOKENIZE: {
        /* text: one token per byte (+ BOS 0); chat: 10 per message */
        uint32_t ids[4096];
        uint32_t n = 0;
        const struct dsd_ipc_prompt *p = &m->tokenize.prompt;
        if (p->kind == DSD_IPC_PROMPT_TEXT) {
            if (p->add_special)
                ids[n++] = 0;
            for (uint32_t i = 0; i < p->text.len && n < 4096; i++)
                ids[n++] = (uint8_t)p->text.ptr[i];
        } else {
            for (uint32_t i = 0; i < 10 * p->n_messages && n < 4096; i++)
                ids[n++] = 100 + i;
        }
        r.type = DSD_IPC_TOKENIZE_OK;
        r.tokenize_ok.tokens = ids;
        r.tokenize_ok.n_tokens = n;
        queue_msg(c, &r);
        break;
    }
    case DSD_IPC_DETOKENIZE: {
        char text[4096];
        uint32_t n = 0;
        /* Inverts tokenize for printable ASCII ids; other ids become letters. */
        for (uint32_t i = 0; i < m->detokenize.n_tokens && n < sizeof text; i++) {
            uint32_t id = m->detokenize.tokens[i];
            text[n++] = (char)(id >= 32 && id < 127 ? id : 'a' + id % 26);
        }
        r.type = DSD_IPC_DETOKENIZE_OK;
        r.detokenize_ok.text = (struct dsd_ipc_str){text, n};
        queue_msg(c, &r);
        break;
    }
    default:
        send_fail(c, m->id, DSD_IPC_E_UNKNOWN_TYPE, "fake: unexpected type");
        break;
    }
}

static void *engine_main(void *arg)
{
    struct conn *c = arg;
    struct fake *f = c->f;
    int fl = fcntl(c->fd, F_GETFL);
    fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
    uint32_t step_us = f->o.step_us ? f->o.step_us : 200;
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    while (!atomic_load(&f->stop) && !c->closed) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (c->out.len ? POLLOUT : 0)};
        int wait_ms = c->n_reqs && !f->o.mute ? (int)(step_us / 1000) : 20;
        if (wait_ms < 1)
            wait_ms = 1;                /* no busy loop: the tests share 2 cores */
        poll(&p, 1, wait_ms);
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            int rc = read_in(c, 0);
            if (rc == -ECONNRESET)
                break;
            for (;;) {
                struct dsd_ipc_msg m;
                struct dsd_ipc_fail fail = {0};
                rc = next_frame(c, &m, &fail);
                if (rc == 0)
                    break;
                if (rc < 0) {
                    struct dsd_err err;
                    dsd_ipc_encode_fail(&c->out, &fail, DSD_IPC_FRAME_CEIL, &err);
                    dsd_ipc_msg_free(&m);
                    if (dsd_ipc_code_fatal(fail.code))
                        c->closed = true;
                    continue;
                }
                handle_msg(c, &m);
                dsd_ipc_msg_free(&m);
            }
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t since = (now.tv_sec - last.tv_sec) * 1000000 + (now.tv_nsec - last.tv_nsec) / 1000;
        /* Backpressure: like the daemon, stop producing while the client does not read. */
        if (!f->o.mute && since >= step_us && c->out.len < (1u << 20)) {
            last = now;
            for (uint32_t i = c->n_reqs; i-- > 0;)
                step_req(c, i);
        }
        if (flush_out(c, false) < 0)
            break;
        if (f->o.die_after_frames && c->frames_sent >= f->o.die_after_frames) {
            flush_out(c, true);
            break;
        }
    }
    shutdown(c->fd, SHUT_RDWR);
    return NULL;
}

/* ---- script mode -------------------------------------------------------------------------- */

int fake_recv(struct fake *f, struct dsd_ipc_msg *m, int timeout_ms)
{
    struct conn *c = f->script_conn;
    memset(m, 0, sizeof *m);
    for (;;) {
        struct dsd_ipc_fail fail = {0};
        int rc = next_frame(c, m, &fail);
        if (rc == 1)
            return 0;
        if (rc < 0) {
            fprintf(stderr, "fake: undecodable frame from the client: %s\n", fail.err.msg);
            return -EPROTO;
        }
        rc = read_in(c, timeout_ms);
        if (rc < 0)
            return rc;
    }
}

int fake_send(struct fake *f, const struct dsd_ipc_msg *m)
{
    struct conn *c = f->script_conn;
    int rc = queue_msg(c, m);
    return rc < 0 ? rc : flush_out(c, true);
}

int fake_send_raw(struct fake *f, const void *bytes, size_t n)
{
    struct conn *c = f->script_conn;
    if (dsd_ipc_buf_append(&c->out, bytes, n) < 0)
        return -ENOMEM;
    return flush_out(c, true);
}

int fake_send_body(struct fake *f, const void *body, uint32_t n)
{
    uint8_t pre[4];
    dsd_ipc_put_prefix(pre, n);
    int rc = fake_send_raw(f, pre, 4);
    return rc < 0 ? rc : fake_send_raw(f, body, n);
}

void fake_hangup(struct fake *f)
{
    shutdown(f->script_conn->fd, SHUT_RDWR);
}

int fake_handshake(struct fake *f, bool with_shm)
{
    struct conn *c = f->script_conn;
    struct dsd_ipc_msg m;
    int rc = fake_recv(f, &m, 5000);
    if (rc < 0 || m.type != DSD_IPC_HELLO) {
        fprintf(stderr, "fake: expected hello (rc %d, type %d)\n", rc, (int)m.type);
        dsd_ipc_msg_free(&m);
        return -EPROTO;
    }
    handle_hello(c, &m);
    dsd_ipc_msg_free(&m);
    if (flush_out(c, true) < 0)
        return -ECONNRESET;
    if (with_shm) {
        rc = fake_recv(f, &m, 5000);
        if (rc < 0 || m.type != DSD_IPC_SHM_ATTACH) {
            fprintf(stderr, "fake: expected shm_attach\n");
            dsd_ipc_msg_free(&m);
            return -EPROTO;
        }
        handle_shm_attach(c, &m);
        dsd_ipc_msg_free(&m);
    }
    return flush_out(c, true);
}

struct dsd_shm *fake_shm(struct fake *f)
{
    return f->script_conn->have_shm ? &f->script_conn->shm : NULL;
}

int fake_send_accepted(struct fake *f, uint64_t id, uint32_t prompt_tokens, bool ring,
                       uint64_t ring_start)
{
    struct dsd_ipc_msg m = {.type = DSD_IPC_ACCEPTED, .id = id};
    m.accepted = (struct dsd_ipc_accepted){prompt_tokens, ring_start, ring};
    return fake_send(f, &m);
}

int fake_send_ids(struct fake *f, uint64_t id, const uint32_t *ids, uint32_t n, const char *text)
{
    struct dsd_ipc_msg m = {.type = DSD_IPC_TOKENS, .id = id};
    m.tokens.ids = ids;
    m.tokens.n_ids = n;
    m.tokens.text = dsd_ipc_s(text);
    return fake_send(f, &m);
}

int fake_send_done(struct fake *f, uint64_t id, enum dsd_ipc_finish finish, uint32_t completion)
{
    struct dsd_ipc_msg m = {.type = DSD_IPC_DONE, .id = id};
    m.done.finish = finish;
    m.done.usage.completion = completion;
    return fake_send(f, &m);
}

int fake_send_error(struct fake *f, uint64_t id, uint32_t code, const char *msg, bool fatal)
{
    struct dsd_ipc_msg m = {.type = DSD_IPC_ERROR, .id = id};
    m.error = (struct dsd_ipc_error){code, dsd_ipc_s(msg), fatal};
    return fake_send(f, &m);
}

/* ---- lifetime ----------------------------------------------------------------------------- */

static void *script_main(void *arg)
{
    struct conn *c = arg;
    c->f->o.script(c->f, c->f->o.arg);
    shutdown(c->fd, SHUT_RDWR);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&f->lock);
        if (f->n_conns == FAKE_MAX_CONNS || (f->o.script && f->n_conns == 1)) {
            pthread_mutex_unlock(&f->lock);
            close(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        c->f = f;
        c->fd = fd;
        c->pending_fd = -1;
        c->shm.fd = -1;
        dsd_ipc_reader_init(&c->reader, DSD_IPC_HELLO_FRAME);
        f->conns[f->n_conns++] = c;
        atomic_fetch_add(&f->stats.connections, 1);
        if (f->o.script)
            f->script_conn = c;
        pthread_create(&c->thread, NULL, f->o.script ? script_main : engine_main, c);
        pthread_mutex_unlock(&f->lock);
    }
    return NULL;
}

struct fake *fake_start(const struct fake_opts *o)
{
    struct fake *f = calloc(1, sizeof *f);
    f->o = *o;
    pthread_mutex_init(&f->lock, NULL);
    if (o->path) {
        snprintf(f->path, sizeof f->path, "%s", o->path);
    } else {
        snprintf(f->dir, sizeof f->dir, "/tmp/dsd-client-test-XXXXXX");
        if (!mkdtemp(f->dir)) {
            perror("fake: mkdtemp");
            free(f);
            return NULL;
        }
        snprintf(f->path, sizeof f->path, "%s/sock", f->dir);
    }
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    if (bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(f->lfd, 128) < 0) {
        perror("fake: bind/listen");
        close(f->lfd);
        if (f->dir[0])
            rmdir(f->dir);
        free(f);
        return NULL;
    }
    pthread_create(&f->acceptor, NULL, acceptor_main, f);
    return f;
}

const char *fake_path(const struct fake *f)
{
    return f->path;
}

struct fake_stats *fake_stats(struct fake *f)
{
    return &f->stats;
}

void fake_stop(struct fake *f)
{
    if (!f)
        return;
    atomic_store(&f->stop, true);
    pthread_join(f->acceptor, NULL);
    for (uint32_t i = 0; i < f->n_conns; i++) {
        shutdown(f->conns[i]->fd, SHUT_RDWR);
        pthread_join(f->conns[i]->thread, NULL);
        conn_free(f->conns[i]);
    }
    close(f->lfd);
    unlink(f->path);
    if (f->dir[0])
        rmdir(f->dir);
    pthread_mutex_destroy(&f->lock);
    free(f);
}
