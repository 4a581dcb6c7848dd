/*
 * The engine thread (contract in engine.h): loads the model, then runs continuous batching.
 *
 * Every step the scheduler (scheduler.h: the whole policy -- slots, fair shares, chunks,
 * whose pages are taken back) plans the batch over the live sequences; this file carries the
 * plan out on the KV pool and the model. A sequence keeps all its tokens (prompt + generated)
 * and how many of them are in the KV cache, so decode is just a prefill chunk of one token,
 * and a sequence whose pages were taken back simply recomputes its tokens when it runs again.
 */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "generation.h"
#include "log.h"
#include "page_hash.h"
#include "disk_page.h"
#include "scheduler.h"
#include "speculative.h"
#include "weights_id.h"
#include "index_cache.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct seq {
    struct dsd_sched_seq sc;    /* the scheduler's view: slot, KV progress, this step's chunk */
    struct dsd_engine_request *req;
    struct dsd_generation *gen;
    struct dsd_kv_seq kv;
    int32_t *tokens;            /* prompt, then generated tokens */
    int n_tokens, cap_tokens;
    uint64_t produced;          /* delivered tokens (ring credit) */
    uint64_t t_sched, t_first, t_last;
    bool cancelled, parked_credit, stalled_sent;
    struct dsd_engine_event *ev;
    int pen_slot;               /* row of the backend's penalty state, -1 = none */
    uint64_t in_step;           /* the last step (e->step_id) this sequence was part of */
    /* the prefix cache: what it holds locked for this sequence, what its first lookup found */
    struct dsd_prefix_hold hold;
    bool looked_up, peeked;
    int n_cached, cached_tier[3];
    int computed_before;        /* n_computed before this step's plan (a release zeroes it) */
    /* speculative decoding (docs/SPECULATIVE.md) */
    bool spec;                  /* this request drafts with the MTP layer */
    int n_draft;                /* drafts at tokens[n_tokens..), valid while n_computed == n_tokens - 1 */
    float *q;                   /* [speculative_tokens][vocab]: the drafts' distributions (temperature > 0;
                                   allocated when it first drafts) */
    struct seq *next;
};

enum cmd_kind { CMD_SUBMIT, CMD_CANCEL, CMD_GRANT, CMD_PAUSE, CMD_RESUME_CONN };

struct cmd {
    enum cmd_kind kind;
    struct dsd_engine_request *req;
    uint64_t handle, value;
    struct cmd *next;
};

struct paused_conn {
    uint64_t conn_id;
    struct paused_conn *next;
};

struct dsd_engine {
    struct dsd_engine_params p;
    char *model_dir;
    int wake_fd;
    pthread_t thread;
    pthread_mutex_t mu;         /* guards cmds, events, stats, state */
    pthread_cond_t cv;
    struct cmd *cmd_head, *cmd_tail;
    struct dsd_engine_event **events;
    int n_events, cap_events;
    atomic_int state;
    _Atomic double progress;
    char failure[DSD_ERR_MSG_MAX];
    bool stop;
    struct dsd_engine_stats stats;

    /* engine thread only */
    struct dsd_model *model;
    struct dsd_kv_cache *kv;
    struct dsd_prefix_cache *pc;    /* NULL: prefix_cache off */
    char *disk_cache_dir;
    struct dsd_hist ttft_step, itl_step;    /* this step's observations (merged under mu) */
    uint64_t cached_step;
    bool sat_out;                   /* the last plan had a sequence sit out (pages fell short) */
    struct seq *seqs;           /* all live sequences (running and waiting) */
    struct paused_conn *paused;
    struct dsd_sched sched;
    struct dsd_sched_seq **plan_v;  /* scratch for the plan, grown with the live count */
    struct seq **plan_s;
    int plan_cap;
    uint64_t arrivals;
    int max_context;
    /* sampling on the backend: one row and one result per sequence of a step (max_batch),
     * and which sequence holds each penalty-state slot (max_batch of them) */
    struct dsd_sample_row *srows;
    struct dsd_sample_result *sres;
    struct seq **pen_owner;
    uint64_t step_id;
    /* speculative decoding (docs/SPECULATIVE.md), allocated at load when spec_k > 0 */
    int spec_k;
    enum dsd_spec_force spec_force;
    float *spec_hid;            /* [max_batch_tokens][hidden]: the main step's post-norm hidden */
    float *spec_mtp_in;         /* [max_batch_tokens][hidden]: the MTP step's hidden input */
    float *spec_mtp_hid;        /* [max_batch_tokens][hidden]: the MTP step's hidden output */
    float *spec_logits;         /* [max_batch * (spec_k + 1)][vocab]: the verify rows' logits */
    float *spec_mtp_logits;     /* [max_batch][vocab] */
    float *spec_p;              /* [spec_k + 1][vocab]: target distributions of one sequence */
    float *spec_resid;          /* [vocab] */
    void *spec_scratch;         /* dsd_sample_scratch_bytes(vocab) */
    struct spec_mtp_seq *spec_list;     /* [max_batch]: who runs the MTP layer after the step */
    struct dsd_batch_seq *spec_bs;      /* [max_batch] */
    char device[256];           /* set before READY */
    uint64_t kv_bytes;
    struct dsd_engine_memory mem;   /* set before READY */
};

/* A sequence whose positions [pos0, pos0 + count) go through the MTP layer after the step:
 * their main hidden states start at row hrow of the step's hidden output. */
struct spec_mtp_seq {
    struct seq *s;
    int pos0, count, hrow;
    int row;                    /* its MTP logits row (drafting), -1 = none */
    int room;                   /* drafts it may make */
};

/* ---- public helpers ------------------------------------------------------------------ */

void dsd_engine_request_free(struct dsd_engine_request *r)
{
    if (!r)
        return;
    free(r->prompt);
    free(r->stop_ids);
    free(r->forced);
    for (int i = 0; i < r->n_stop_strings; i++)
        free(r->stop_strings[i]);
    free(r->stop_strings);
    free(r);
}

void dsd_engine_event_free(struct dsd_engine_event *ev)
{
    if (!ev)
        return;
    free(ev->ids);
    free(ev->text);
    free(ev->reasoning);
    free(ev->tool_error);
    for (int i = 0; i < ev->n_tools; i++) {
        free(ev->tools[i].id);
        free(ev->tools[i].name);
        free(ev->tools[i].arguments);
    }
    free(ev->tools);
    free(ev->logprobs);
    free(ev->stop_string);
    free(ev->error);
    free(ev);
}

static void wake_io(struct dsd_engine *e)
{
    uint64_t one = 1;
    if (write(e->wake_fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is already non-zero, the io thread will wake anyway */
    }
}

static void push_cmd(struct dsd_engine *e, struct cmd *c)
{
    pthread_mutex_lock(&e->mu);
    if (e->cmd_tail)
        e->cmd_tail->next = c;
    else
        e->cmd_head = c;
    e->cmd_tail = c;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void send_cmd(struct dsd_engine *e, enum cmd_kind k, struct dsd_engine_request *r, uint64_t handle,
                     uint64_t value)
{
    struct cmd *c = calloc(1, sizeof *c);
    if (!c) {
        /* Out of memory for a 40-byte command: the daemon is lost; fail loudly. */
        DSD_CHECK(c != NULL);
    }
    c->kind = k;
    c->req = r;
    c->handle = handle;
    c->value = value;
    push_cmd(e, c);
}

void dsd_engine_submit(struct dsd_engine *e, struct dsd_engine_request *r)
{
    send_cmd(e, CMD_SUBMIT, r, r->handle, 0);
}

void dsd_engine_cancel(struct dsd_engine *e, uint64_t handle)
{
    send_cmd(e, CMD_CANCEL, NULL, handle, 0);
}

void dsd_engine_grant(struct dsd_engine *e, uint64_t handle, uint64_t credit_total)
{
    send_cmd(e, CMD_GRANT, NULL, handle, credit_total);
}

void dsd_engine_pause_conn(struct dsd_engine *e, uint64_t conn_id, bool paused)
{
    send_cmd(e, paused ? CMD_PAUSE : CMD_RESUME_CONN, NULL, conn_id, 0);
}

int dsd_engine_take_events(struct dsd_engine *e, struct dsd_engine_event ***out)
{
    pthread_mutex_lock(&e->mu);
    int n = e->n_events;
    *out = e->events;
    e->events = NULL;
    e->n_events = e->cap_events = 0;
    pthread_mutex_unlock(&e->mu);
    return n;
}

enum dsd_engine_state dsd_engine_state(const struct dsd_engine *e)
{
    return (enum dsd_engine_state)atomic_load(&e->state);
}

double dsd_engine_progress(const struct dsd_engine *e)
{
    return atomic_load(&e->progress);
}

const char *dsd_engine_failure(const struct dsd_engine *e)
{
    return e->failure;
}

const struct dsd_model_config *dsd_engine_model_config(const struct dsd_engine *e)
{
    return dsd_engine_state(e) == DSD_ENGINE_READY ? &e->model->cfg : NULL;
}

int dsd_engine_kv_pages(const struct dsd_engine *e)
{
    return dsd_engine_state(e) == DSD_ENGINE_READY ? dsd_kv_cache_total_pages(e->kv) : 0;
}

const char *dsd_engine_device(const struct dsd_engine *e)
{
    return dsd_engine_state(e) == DSD_ENGINE_READY ? e->device : "";
}

void dsd_engine_memory(const struct dsd_engine *e, struct dsd_engine_memory *out)
{
    if (dsd_engine_state(e) == DSD_ENGINE_READY)
        *out = e->mem;
    else
        memset(out, 0, sizeof *out);
}

uint64_t dsd_engine_kv_bytes(const struct dsd_engine *e)
{
    return dsd_engine_state(e) == DSD_ENGINE_READY ? e->kv_bytes : 0;
}

void dsd_engine_stats(struct dsd_engine *e, struct dsd_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}

/* ---- engine thread --------------------------------------------------------------------- */

static struct dsd_engine_event *new_event(struct seq *s, enum dsd_engine_event_kind kind)
{
    struct dsd_engine_event *ev = calloc(1, sizeof *ev);
    DSD_CHECK(ev != NULL);
    ev->kind = kind;
    ev->handle = s->req->handle;
    ev->conn_id = s->req->conn_id;
    ev->stop_token = -1;
    return ev;
}

static void emit(struct dsd_engine *e, struct dsd_engine_event *ev)
{
    pthread_mutex_lock(&e->mu);
    if (e->n_events == e->cap_events) {
        int cap = e->cap_events ? e->cap_events * 2 : 16;
        struct dsd_engine_event **n = realloc(e->events, (size_t)cap * sizeof *n);
        DSD_CHECK(n != NULL);
        e->events = n;
        e->cap_events = cap;
    }
    e->events[e->n_events++] = ev;
    pthread_mutex_unlock(&e->mu);
}

static void fill_done(struct seq *s, struct dsd_engine_event *ev)
{
    uint64_t t = now_ns(), acc = s->req->t_accept_ns;
    ev->kind = DSD_EV_DONE;
    ev->n_prompt = s->req->n_prompt;
    ev->n_cached = s->n_cached;
    for (int k = 0; k < 3; k++)
        ev->cached_tier[k] = s->cached_tier[k];
    ev->n_generated = s->gen ? dsd_generation_count(s->gen) : 0;
    ev->queue_us = s->t_sched ? (s->t_sched - acc) / 1000 : (t - acc) / 1000;
    ev->first_token_us = s->t_first ? (s->t_first - acc) / 1000 : 0;
    ev->total_us = (t - acc) / 1000;
    ev->per_token_us = ev->n_generated > 1 ? (double)(s->t_last - s->t_first) / 1000.0 / (ev->n_generated - 1) : 0.0;
}

/* Gives back s's KV pages: its full computed pages (n_computed tokens) go to the prefix cache
 * first when adopt (their KV is good), and what it held locked there is unlocked. */
static void drop_pages(struct dsd_engine *e, struct seq *s, int n_computed, bool adopt)
{
    if (e->pc) {
        if (adopt && n_computed >= DSD_KV_PAGE_TOKENS)
            dsd_prefix_cache_adopt(e->pc, s->tokens, n_computed, &s->kv);
        dsd_prefix_cache_unhold(e->pc, &s->hold);
    }
    dsd_kv_seq_release(e->kv, &s->kv);
    s->peeked = false;
}

/* Removes s from the live list, returns its pages, emits its DONE event. */
static void retire(struct dsd_engine *e, struct seq *s, struct dsd_engine_event *ev)
{
    fill_done(s, ev);
    emit(e, ev);
    struct seq **pp = &e->seqs;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    drop_pages(e, s, s->sc.n_computed, ev->finish != DSD_FINISH_ERROR);
    dsd_prefix_cache_hold_destroy(&s->hold);
    dsd_kv_seq_destroy(&s->kv);
    if (s->pen_slot >= 0)
        e->pen_owner[s->pen_slot] = NULL;
    dsd_generation_free(s->gen);
    dsd_engine_request_free(s->req);
    free(s->tokens);
    free(s->q);
    free(s);
    pthread_mutex_lock(&e->mu);
    e->stats.requests_done++;
    pthread_mutex_unlock(&e->mu);
}

/* A sampled row whose logits have no finite value (DSD_SAMPLE_NONFINITE): the request ends
 * with this error instead of emitting the meaningless pick. */
#define NONFINITE_MSG                                                                          \
    "the model's logits for the next token are not finite numbers (NaN or infinite): its "    \
    "weights or scales are likely corrupt, or a value overflowed; nothing more is generated"

/* Whether rows row..row+n of the step's samples all had finite logits. */
static bool rows_finite(const struct dsd_engine *e, int row, int n)
{
    for (int j = 0; j < n; j++)
        if (e->sres[row + j].status != DSD_SAMPLE_OK)
            return false;
    return true;
}

static void fail_seq(struct dsd_engine *e, struct seq *s, const char *msg)
{
    struct dsd_engine_event *ev = s->ev ? s->ev : new_event(s, DSD_EV_DONE);
    s->ev = NULL;
    if (s->gen)
        dsd_generation_end(s->gen, DSD_FINISH_ERROR, ev);
    ev->kind = DSD_EV_DONE;
    ev->finish = DSD_FINISH_ERROR;
    ev->error = strdup(msg);
    retire(e, s, ev);
}

static struct seq *find_seq(struct dsd_engine *e, uint64_t handle)
{
    for (struct seq *s = e->seqs; s; s = s->next)
        if (s->req->handle == handle)
            return s;
    return NULL;
}

static bool conn_paused(const struct dsd_engine *e, uint64_t conn_id)
{
    for (struct paused_conn *p = e->paused; p; p = p->next)
        if (p->conn_id == conn_id)
            return true;
    return false;
}

static void admit_request(struct dsd_engine *e, struct dsd_engine_request *r)
{
    struct seq *s = calloc(1, sizeof *s);
    DSD_CHECK(s != NULL);
    s->req = r;
    s->pen_slot = -1;
    s->sc = (struct dsd_sched_seq){ .conn_id = r->conn_id, .uid = r->uid, .priority = r->priority,
                                    .arrival = e->arrivals++, .n_tokens = r->n_prompt };
    s->cap_tokens = r->n_prompt + 16 + e->spec_k;
    s->tokens = malloc((size_t)s->cap_tokens * sizeof *s->tokens);
    DSD_CHECK(s->tokens != NULL);
    memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof *s->tokens);
    s->n_tokens = r->n_prompt;
    s->next = e->seqs;
    e->seqs = s;
    struct dsd_err err = {{0}};
    if (dsd_generation_new(r, e->p.tokenizer, &e->model->cfg, &s->gen, &err)) {
        fail_seq(e, s, err.msg);
        return;
    }
    /* Speculation keeps the output exact (docs/SPECULATIVE.md); requests with penalties (whose
     * target distributions would depend on the drafts) and forced test output decode plainly. */
    s->spec = e->spec_k > 0 && !r->forced && !dsd_generation_penalized(s->gen);
    /* Fits at all? A sequence longer than the whole pool can never run. */
    int64_t need_pages = ((int64_t)r->n_prompt + 1 + DSD_KV_PAGE_TOKENS - 1) / DSD_KV_PAGE_TOKENS;
    if (need_pages > dsd_kv_cache_total_pages(e->kv)) {
        char msg[256];
        snprintf(msg, sizeof msg, "the prompt (%d tokens) does not fit in the KV cache (%d pages of %d tokens)",
                 r->n_prompt, dsd_kv_cache_total_pages(e->kv), DSD_KV_PAGE_TOKENS);
        fail_seq(e, s, msg);
    }
}

static void handle_cmds(struct dsd_engine *e, struct cmd *c)
{
    while (c) {
        struct cmd *next = c->next;
        struct seq *s;
        switch (c->kind) {
        case CMD_SUBMIT:
            admit_request(e, c->req);
            break;
        case CMD_CANCEL:
            if ((s = find_seq(e, c->handle)))
                s->cancelled = true;
            break;
        case CMD_GRANT:
            if ((s = find_seq(e, c->handle)) && c->value > s->req->credit) {
                s->req->credit = c->value;
                if (s->parked_credit && s->produced < s->req->credit) {
                    s->parked_credit = false;
                    s->stalled_sent = false;
                }
            }
            break;
        case CMD_PAUSE:
            if (!conn_paused(e, c->handle)) {
                struct paused_conn *p = malloc(sizeof *p);
                DSD_CHECK(p != NULL);
                p->conn_id = c->handle;
                p->next = e->paused;
                e->paused = p;
            }
            break;
        case CMD_RESUME_CONN:
            for (struct paused_conn **pp = &e->paused; *pp; pp = &(*pp)->next)
                if ((*pp)->conn_id == c->handle) {
                    struct paused_conn *d = *pp;
                    *pp = d->next;
                    free(d);
                    break;
                }
            break;
        }
        free(c);
        c = next;
    }
}

/* Ends the sequences marked cancelled, or out of KV pages (the pool cannot hold them even
 * after preempting everything else: the daemon's context capacity is full). */
static void cancel_marked(struct dsd_engine *e)
{
    struct seq *s = e->seqs;
    while (s) {
        struct seq *next = s->next;
        if (s->cancelled || s->sc.out_of_kv) {
            enum dsd_finish why = s->cancelled ? DSD_FINISH_CANCELLED : DSD_FINISH_CONTEXT_FULL;
            struct dsd_engine_event *ev = new_event(s, DSD_EV_DONE);
            dsd_generation_end(s->gen, why, ev);
            ev->finish = why;
            retire(e, s, ev);
        }
        s = next;
    }
}

/* May s run this step (not parked by credit or a backed-up connection)? */
static bool schedulable(struct dsd_engine *e, struct seq *s)
{
    if (s->req->credit_limited && s->produced >= s->req->credit) {
        if (!s->parked_credit) {
            s->parked_credit = true;
            if (!s->stalled_sent) {
                emit(e, new_event(s, DSD_EV_STALLED));
                s->stalled_sent = true;
            }
        }
        return false;
    }
    return !conn_paused(e, s->req->conn_id);
}

static bool grow_plan_scratch(struct dsd_engine *e, int n)
{
    if (n <= e->plan_cap)
        return true;
    int cap = e->plan_cap ? e->plan_cap : 64;
    while (cap < n)
        cap *= 2;
    struct dsd_sched_seq **v = realloc(e->plan_v, (size_t)cap * sizeof *v);
    if (v)
        e->plan_v = v;
    struct seq **q = realloc(e->plan_s, (size_t)cap * sizeof *q);
    if (q)
        e->plan_s = q;
    if (!v || !q)
        return false;
    e->plan_cap = cap;
    return true;
}

/* With the prefix cache: a sequence starting from nothing first shares its longest cached
 * prefix (its chunk starts after it, never longer than planned), then its pages are
 * reserved, the cache making room. Shared pages make the plan's count of free pages
 * approximate (a preempted sequence's pages another one shares free nothing), so a
 * reservation may still fall short: the chunk shrinks to what fits, or the sequence sits
 * this step out (the next plan sees the pool as it is). Returns whether s runs. */
static bool reserve_cached(struct dsd_engine *e, struct seq *s)
{
    bool fresh = s->kv.n_pages == 0 && s->sc.n_computed == 0 && s->n_tokens > DSD_KV_PAGE_TOKENS;
    if (fresh && dsd_prefix_cache_wait_for(e->pc, s->tokens, s->n_tokens - 1)) {
        /* its next page is being computed by a sequence of this step: share it next step */
        s->sc.chunk = 0;
        s->sc.n_pages = 0;
        return false;
    }
    if (fresh) {
        struct dsd_prefix_hit hit;
        int m = dsd_prefix_cache_acquire(e->pc, s->tokens, s->n_tokens - 1, &s->kv, &s->hold, &hit);
        if (m > 0) {
            s->sc.n_computed = m * DSD_KV_PAGE_TOKENS;
            int rem = s->n_tokens - s->sc.n_computed;
            if (s->sc.chunk > rem)
                s->sc.chunk = rem;
        }
        if (!s->looked_up) {
            /* usage reports what the first admission found (of the prompt) */
            s->looked_up = true;
            int cap = s->req->n_prompt;
            int tiers[3] = { hit.device, hit.host, hit.disk };
            for (int t = 0; t < 3; t++) {
                int tok = tiers[t] * DSD_KV_PAGE_TOKENS;
                if (tok > cap - s->n_cached)
                    tok = cap - s->n_cached;
                s->cached_tier[t] = tok > 0 ? tok : 0;
                s->n_cached += s->cached_tier[t];
            }
            e->cached_step += (uint64_t)s->n_cached;
        }
    }
    s->looked_up = true;
    const int pt = DSD_KV_PAGE_TOKENS;
    int need = dsd_sched_pages_for(s->sc.n_computed + s->sc.chunk, pt) - s->kv.n_pages;
    if (need > dsd_kv_cache_free_pages(e->kv))
        dsd_prefix_cache_make_room(e->pc, need);
    if (dsd_kv_seq_reserve(e->kv, &s->kv, s->sc.n_computed + s->sc.chunk) < 0) {
        int fit = (s->kv.n_pages + dsd_kv_cache_free_pages(e->kv)) * pt - s->sc.n_computed;
        if (fit < 1 || dsd_kv_seq_reserve(e->kv, &s->kv, s->sc.n_computed + (fit < s->sc.chunk ? fit : s->sc.chunk)) < 0) {
            s->sc.chunk = 0;
            s->sc.n_pages = s->kv.n_pages;
            return false;
        }
        if (fit < s->sc.chunk)
            s->sc.chunk = fit;
    }
    s->sc.n_pages = s->kv.n_pages;
    dsd_prefix_cache_computing(e->pc, s->tokens, s->n_tokens, s->sc.n_computed, s->sc.n_computed + s->sc.chunk,
                               &s->hold);
    return true;
}

/* The pages this step's sequences under way will complete: a new sequence whose next page
 * is one of them waits a step for it (reserve_cached). */
static void cache_step_begin(struct dsd_engine *e, int n)
{
    dsd_prefix_cache_step_begin(e->pc);
    for (int i = 0; i < n; i++) {
        struct seq *s = e->plan_s[i];
        if (s->sc.chunk > 0 && s->kv.n_pages > 0)
            dsd_prefix_cache_computing(e->pc, s->tokens, s->n_tokens, s->sc.n_computed,
                                       s->sc.n_computed + s->sc.chunk, &s->hold);
    }
}

/* Plans the step (scheduler.h) and carries the plan out on the KV pool: pages taken back
 * first, then the reservations the plan counted. Fills batch[] and returns its size. */
static int build_step(struct dsd_engine *e, struct seq **batch, int max)
{
    int n = 0;
    for (struct seq *s = e->seqs; s; s = s->next)
        n++;
    if (n == 0 || !grow_plan_scratch(e, n))
        return 0;           /* out of memory for the scratch: nothing runs, try next step */
    int i = 0, queued = 0;
    for (struct seq *s = e->seqs; s; s = s->next, i++) {
        s->sc.n_tokens = s->n_tokens;
        s->sc.n_draft = s->spec && s->sc.n_computed == s->n_tokens - 1 ? s->n_draft : 0;
        s->sc.parked = !schedulable(e, s);
        s->computed_before = s->sc.n_computed;
        queued += !s->sc.running && !s->sc.parked;
        e->plan_v[i] = &s->sc;
        e->plan_s[i] = s;
    }
    /* A long queue is ranked by cached prefix (scheduler.h): look each waiting one up. */
    if (e->pc && e->p.long_queue > 0 && queued >= e->p.long_queue)
        for (i = 0; i < n; i++) {
            struct seq *s = e->plan_s[i];
            if (!s->sc.running && !s->sc.parked && s->kv.n_pages == 0 && !s->peeked) {
                /* once per wait (a walk hashes the whole prompt): a stale rank is harmless */
                s->sc.cached_pages = dsd_prefix_cache_peek(e->pc, s->tokens, s->n_tokens - 1);
                s->peeked = true;
            }
        }
    /* Pages the prefix cache alone holds count as free: make_room frees them on demand. */
    int reclaimable = e->pc ? dsd_prefix_cache_reclaimable(e->pc) : 0;
    struct dsd_sched_step st;
    if (dsd_sched_plan(&e->sched, e->plan_v, n, dsd_kv_cache_free_pages(e->kv) + reclaimable, &st) < 0)
        return 0;
    /* Preempted: the computed pages go to the prefix cache (and from there to the host tier
     * when the device needs the room), so the sequence resumes from its cached prefix. */
    for (i = 0; i < n; i++)
        if (e->plan_v[i]->release)
            drop_pages(e, e->plan_s[i], e->plan_s[i]->computed_before, true);
    int nb = 0;
    e->sat_out = false;
    if (e->pc)
        cache_step_begin(e, n);
    for (i = 0; i < n; i++) {
        struct seq *s = e->plan_s[i];
        if (s->sc.chunk <= 0)
            continue;
        if (e->pc && !reserve_cached(e, s)) {
            e->sat_out = true;
            continue;
        }
        if (!e->pc) {
            /* The plan counted these pages against the pool's free count: a failure here is a
             * bookkeeping bug, and running on would write KV into pages we do not own. */
            DSD_CHECK(dsd_kv_seq_reserve(e->kv, &s->kv, s->sc.n_computed + s->sc.chunk) == 0);
            DSD_CHECK(s->kv.n_pages == s->sc.n_pages);
        }
        if (!s->t_sched)
            s->t_sched = now_ns();
        DSD_CHECK(nb < max);
        batch[nb++] = s;
    }
    if (st.released) {
        pthread_mutex_lock(&e->mu);
        e->stats.preemptions += (uint64_t)st.released;
        pthread_mutex_unlock(&e->mu);
    }
    return nb;
}

/* The penalty-state slot of s for this step: its own, a free one, or one whose sequence is
 * not in this step (that sequence reloads its state when it next samples). A step samples
 * at most max_batch sequences and there are max_batch slots, so one is always found. The
 * slot is loaded from the sequence's tokens (prompt seen, generated counted). */
static int pen_slot_for(struct dsd_engine *e, struct seq *s, struct dsd_err *err)
{
    if (s->pen_slot >= 0)
        return 0;
    int slot = -1;
    for (int i = 0; i < e->p.max_batch && slot < 0; i++)
        if (!e->pen_owner[i])
            slot = i;
    for (int i = 0; i < e->p.max_batch && slot < 0; i++)
        if (e->pen_owner[i]->in_step != e->step_id) {
            e->pen_owner[i]->pen_slot = -1;
            slot = i;
        }
    DSD_CHECK(slot >= 0);
    e->pen_owner[slot] = s;
    s->pen_slot = slot;
    return dsd_model_penalty_load(e->model, slot, s->tokens, s->n_tokens, s->req->n_prompt, err);
}

/* ---- speculative decoding (docs/SPECULATIVE.md) ---------------------------------------- */

static void ensure_tokens(struct seq *s, int n)
{
    if (n <= s->cap_tokens)
        return;
    int cap = s->cap_tokens * 2 > n ? s->cap_tokens * 2 : n;
    int32_t *nt = realloc(s->tokens, (size_t)cap * sizeof *nt);
    DSD_CHECK(nt != NULL);
    s->tokens = nt;
    s->cap_tokens = cap;
}

/* How many drafts s may make after this step: speculative_tokens, within the KV pages it
 * holds (the draft chain writes the MTP layer's KV up to position n_tokens + n - 3), the
 * context, its max_tokens and its ring credit (a draft past them could never be emitted). */
static int spec_room(const struct dsd_engine *e, struct seq *s)
{
    int room = e->spec_k;
    const int held = s->kv.n_pages * DSD_KV_PAGE_TOKENS;
    if (room > held - s->n_tokens + 2)
        room = held - s->n_tokens + 2;
    if (room > e->max_context - s->n_tokens)
        room = e->max_context - s->n_tokens;
    if (room > s->req->max_tokens - dsd_generation_count(s->gen) - 1)
        room = s->req->max_tokens - dsd_generation_count(s->gen) - 1;
    if (s->req->credit_limited && (int64_t)room > (int64_t)s->req->credit - (int64_t)s->produced - 1)
        room = (int)((int64_t)s->req->credit - (int64_t)s->produced - 1);
    if (room < 0)
        room = 0;
    /* a sampled request keeps its drafts' distributions: allocated when it first drafts */
    if (room > 0 && !s->q && s->req->sampling.temperature > 0.0f &&
        !(s->q = malloc((size_t)e->spec_k * (size_t)e->model->cfg.vocab_size * sizeof *s->q)))
        room = 0;
    ensure_tokens(s, s->n_tokens + room);
    return room;
}

/* Draft j (0-based) of s from the MTP layer's logits: greedy takes the largest, sampling
 * draws from the request's transformed distribution q (kept in s->q for the verify). */
static int32_t spec_pick_draft(struct dsd_engine *e, struct seq *s, const float *logits, int j)
{
    const int64_t V = e->model->cfg.vocab_size;
    struct dsd_sample_row r;
    dsd_generation_params_row(s->gen, &r);
    if (r.temperature == 0.0f)
        return dsd_argmax(logits, V);
    float *q = s->q + (size_t)j * (size_t)V;
    dsd_sample_dist_ref(logits, V, &r, NULL, e->spec_scratch, q);
    return dsd_spec_pick(q, V, dsd_spec_uniform(s->req->sampling.seed, s->n_tokens + j, DSD_SPEC_DRAW_DRAFT));
}

/* Draft j (1-based) of each listed sequence with an MTP logits row (L[i].row); those with
 * room for more keep their MTP hidden output (row L[i].hrow) as the next draft step's input,
 * row k of spec_mtp_in, and stay listed at k. Returns how many stay. */
static int spec_take_drafts(struct dsd_engine *e, struct spec_mtp_seq *L, int n, int j)
{
    const size_t D = (size_t)e->model->cfg.hidden_size, V = (size_t)e->model->cfg.vocab_size;
    int k = 0;
    for (int i = 0; i < n; i++) {
        struct seq *s = L[i].s;
        if (L[i].row < 0)
            continue;
        s->tokens[s->n_tokens + j - 1] = spec_pick_draft(e, s, e->spec_mtp_logits + (size_t)L[i].row * V, j - 1);
        s->n_draft = j;
        if (L[i].room > j) {
            memcpy(e->spec_mtp_in + (size_t)k * D, e->spec_mtp_hid + (size_t)L[i].hrow * D, D * sizeof(float));
            L[k] = L[i];
            L[k].row = L[k].hrow = k;
            k++;
        }
    }
    return k;
}

/* After the main step: the MTP layer over the positions each listed sequence just committed
 * (its own KV for them is then what plain decoding's MTP would hold), and for sequences now
 * decoding, up to speculative_tokens drafts: the first from that step's last position, each
 * further one from the MTP layer fed its own previous hidden state and draft. A failure here
 * costs only the drafts. */
static void spec_draft(struct dsd_engine *e, int n)
{
    if (n == 0)
        return;
    struct dsd_model *m = e->model;
    const size_t D = (size_t)m->cfg.hidden_size;
    struct spec_mtp_seq *L = e->spec_list;
    struct dsd_batch_seq *bs = e->spec_bs;
    int T = 0, rows = 0;
    for (int i = 0; i < n; i++) {
        struct seq *s = L[i].s;
        s->n_draft = 0;
        memcpy(e->spec_mtp_in + (size_t)T * D, e->spec_hid + (size_t)L[i].hrow * D, (size_t)L[i].count * D * sizeof(float));
        L[i].room = s->sc.n_computed == s->n_tokens - 1 ? spec_room(e, s) : 0;
        L[i].row = L[i].room > 0 ? rows++ : -1;
        bs[i] = (struct dsd_batch_seq){ .tokens = s->tokens + L[i].pos0 + 1, .n_tokens = L[i].count,
                                        .pos0 = L[i].pos0, .kv = &s->kv, .no_logits = L[i].row < 0 };
        T += L[i].count;
        L[i].hrow = T - 1;      /* from here on: its last row in the MTP output */
    }
    struct dsd_err err = {{0}};
    struct dsd_forward_out out = { .logits = e->spec_mtp_logits, .hidden = e->spec_mtp_hid };
    if (dsd_model_forward_mtp(m, e->kv, bs, n, e->spec_mtp_in, &out, &err)) {
        dsd_log(LOG_WARNING, "speculative: MTP step failed, decoding without drafts: %s", err.msg);
        return;
    }
    int k = spec_take_drafts(e, L, n, 1);
    for (int j = 2; j <= e->spec_k && k > 0; j++) {
        for (int i = 0; i < k; i++) {
            struct seq *s = L[i].s;
            bs[i] = (struct dsd_batch_seq){ .tokens = s->tokens + s->n_tokens + j - 2, .n_tokens = 1,
                                            .pos0 = s->n_tokens - 3 + j, .kv = &s->kv };
        }
        out = (struct dsd_forward_out){ .logits = e->spec_mtp_logits, .hidden = e->spec_mtp_hid };
        if (dsd_model_forward_mtp(m, e->kv, bs, k, e->spec_mtp_in, &out, &err)) {
            dsd_log(LOG_WARNING, "speculative: MTP draft step failed: %s", err.msg);
            return;
        }
        k = spec_take_drafts(e, L, k, j);
    }
}

/* The verify of s's nd drafts: rows row..row+nd of the step hold the target's logits (and its
 * greedy picks in e->sres) after t_{n-1}, d_1, ..., d_nd. Decides the tokens to emit
 * (speculative.h) and writes them to out; *accepted receives the accepted drafts. */
static int spec_verify(struct dsd_engine *e, struct seq *s, int row, int nd, int32_t *out, int *accepted)
{
    const int64_t V = e->model->cfg.vocab_size;
    struct dsd_sample_row pr;
    dsd_generation_params_row(s->gen, &pr);
    if (pr.temperature == 0.0f) {
        int32_t target[DSD_SPEC_MAX_TOKENS + 1];
        for (int j = 0; j <= nd; j++)
            target[j] = e->sres[row + j].token;
        return dsd_spec_verify_greedy(s->tokens + s->n_tokens, nd, target, e->spec_force, out, accepted);
    }
    for (int j = 0; j <= nd; j++)
        dsd_sample_dist_ref(e->spec_logits + (size_t)(row + j) * (size_t)V, V, &pr, NULL, e->spec_scratch,
                            e->spec_p + (size_t)j * (size_t)V);
    return dsd_spec_verify_sample(e->spec_p, s->q, s->tokens + s->n_tokens, nd, V, s->req->sampling.seed, s->n_tokens,
                                  e->spec_force, e->spec_resid, out, accepted);
}

/* ---- the step ------------------------------------------------------------------------- */

/* Appends a token s's generation took to its tokens (their array grows as needed). */
static void append_token(struct seq *s, int32_t tok)
{
    ensure_tokens(s, s->n_tokens + 1);
    s->tokens[s->n_tokens++] = tok;
}

/* A step's event for s is about to go out: time to first token or between deliveries, and
 * the tokens it delivers (ring credit). */
static void note_delivery(struct dsd_engine *e, struct seq *s, struct dsd_engine_event *ev)
{
    uint64_t t = now_ns();
    if (!s->t_first) {
        s->t_first = t;
        dsd_hist_add(&e->ttft_step, (double)(t - s->req->t_accept_ns) / 1e6);
    } else {
        dsd_hist_add(&e->itl_step, (double)(t - s->t_last) / 1e6);
    }
    s->t_last = t;
    s->produced += (uint64_t)ev->n_ids;
}

/* A sequence's pages completed by this step are shared at once (docs/KV_CACHE.md §7): only
 * committed positions count, so a speculative step's rejected drafts never enter the tree. */
static void publish_pages(struct dsd_engine *e, struct seq *s)
{
    if (e->pc)
        dsd_prefix_cache_publish(e->pc, s->tokens, s->sc.n_computed, &s->kv, &s->hold);
}

static int run_step(struct dsd_engine *e)
{
    int max = e->p.max_batch;
    struct seq *batch[max];
    int n = build_step(e, batch, max);
    if (n == 0) {
        /* sequences waiting on disk reads: let them land. 5 ms at a time: the wait takes the
         * pages in as they land and ends early only when the last has, and a request that
         * arrives meanwhile is planned only after it (the wait does not see the engine's
         * commands), so another client's long read-ahead holds a new request back 5 ms at most */
        if (e->sat_out && e->pc)
            dsd_prefix_cache_io_wait(e->pc, 5);
        return e->sat_out ? -1 : 0;
    }
    e->step_id++;
    for (int i = 0; i < n; i++)
        batch[i]->in_step = e->step_id;
    struct dsd_batch_seq bs[n];
    int used[n];                /* drafts verified this step */
    struct dsd_err err = {{0}};
    int rows = 0, rc = 0;
    bool verify = false;
    for (int i = 0; i < n && !rc; i++) {
        struct seq *s = batch[i];
        const int end = s->sc.n_computed + s->sc.chunk;
        bool ends = end >= s->n_tokens;
        used[i] = end > s->n_tokens ? end - s->n_tokens : 0;
        bs[i] = (struct dsd_batch_seq){
            .tokens = s->tokens + s->sc.n_computed, .n_tokens = s->sc.chunk, .pos0 = s->sc.n_computed,
            .kv = &s->kv, .no_logits = !ends, .logits_all = used[i] > 0,
        };
        if (used[i] > 0) {
            /* a verify: every row's greedy pick (the target's token under greedy decoding)
             * and logprobs on the backend, the logits for the rest (spec_verify) */
            verify = true;
            for (int j = 0; j <= used[i]; j++) {
                struct dsd_sample_row *sr = &e->srows[rows++];
                dsd_generation_params_row(s->gen, sr);
                if (sr->temperature > 0.0f)
                    sr->n_top = -1;
                sr->temperature = 0.0f;
            }
        } else if (ends) {
            /* the token is sampled on the backend: its parameters and draw go with the step */
            struct dsd_sample_row *sr = &e->srows[rows++];
            dsd_generation_sample_row(s->gen, sr);
            if (dsd_generation_penalized(s->gen) && !(rc = pen_slot_for(e, s, &err)))
                sr->pen_slot = s->pen_slot;
        }
    }
    struct dsd_forward_out out = { .sample = e->srows, .samples = e->sres, .logits = verify ? e->spec_logits : NULL,
                                   .hidden = e->spec_k > 0 ? e->spec_hid : NULL };
    uint64_t t0 = now_ns();
    if (!rc)
        rc = dsd_model_forward(e->model, e->kv, bs, n, &out, &err);
    /* host hits reloaded beside this step: their host slots free now, or their pages go back
     * to them if the step failed */
    dsd_prefix_cache_step_done(e->pc, rc == 0);
    uint64_t t1 = now_ns();
    if (rc) {
        /* A request the checks let through but the model refuses: fail those requests, keep
         * serving the rest. */
        for (int i = 0; i < n; i++)
            fail_seq(e, batch[i], err.msg);
        return n;
    }
    const int64_t V = e->model->cfg.vocab_size;
    int row = 0, hrow = 0, n_mtp = 0;
    uint64_t prefilled = 0, generated = 0;   /* stats change only under mu (io thread reads) */
    uint64_t spec_steps = 0, spec_drafted = 0, spec_acc = 0;
    for (int i = 0; i < n; i++) {
        struct seq *s = batch[i];
        const int chunk = s->sc.chunk, pos0 = s->sc.n_computed;
        bool alive = true;
        if (bs[i].no_logits) {
            prefilled += (uint64_t)chunk;
            s->sc.n_computed += chunk;
            publish_pages(e, s);
        } else if (used[i] == 0 && e->sres[row].status != DSD_SAMPLE_OK) {
            row++;
            fail_seq(e, s, NONFINITE_MSG);
            alive = false;
        } else if (used[i] == 0) {
            /* Everything fed except a freshly generated token is prefill work: the prompt and,
             * after a preemption, the generated tokens being recomputed. */
            bool decode = s->n_tokens > s->req->n_prompt;
            prefilled += (uint64_t)(chunk - (decode ? 1 : 0));
            s->sc.n_computed += chunk;
            publish_pages(e, s);
            struct dsd_engine_event *ev = new_event(s, DSD_EV_TOKENS);
            int32_t tok = dsd_generation_step_sampled(s->gen, &e->sres[row], s->n_tokens, e->max_context, ev);
            row++;
            note_delivery(e, s, ev);
            generated++;
            append_token(s, tok);
            alive = !dsd_generation_finished(s->gen);
            if (alive)
                emit(e, ev);
            else
                retire(e, s, ev);
        } else if (!rows_finite(e, row, used[i] + 1)) {
            row += used[i] + 1;
            fail_seq(e, s, NONFINITE_MSG);
            alive = false;
        } else {
            const int nd = used[i];
            int32_t toks[DSD_SPEC_MAX_TOKENS + 1];
            int a = 0, ne = spec_verify(e, s, row, nd, toks, &a);
            if (s->req->credit_limited && (uint64_t)ne > s->req->credit - s->produced)
                ne = (int)(s->req->credit - s->produced);
            struct dsd_engine_event *ev = new_event(s, DSD_EV_TOKENS);
            int emitted = 0;
            for (; emitted < ne && !dsd_generation_finished(s->gen); emitted++) {
                const int r = row + emitted;
                const struct dsd_sample_result *res = &e->sres[r];
                struct dsd_sample_result own;
                if (res->token != toks[emitted] || s->req->sampling.temperature > 0.0f) {
                    /* not the backend's greedy pick: the token's logprobs from the logits */
                    if (s->req->logprobs)
                        dsd_sample_logprobs_ref(e->spec_logits + (size_t)r * (size_t)V, V, toks[emitted],
                                                s->req->top_logprobs, e->spec_scratch, &own);
                    else
                        own = (struct dsd_sample_result){ .token = toks[emitted] };
                    res = &own;
                }
                append_token(s, dsd_generation_step_sampled(s->gen, res, s->n_tokens, e->max_context, ev));
            }
            row += nd + 1;
            /* the positions fed a token now committed: t_{n-1} and the emitted drafts */
            s->sc.n_computed = pos0 + emitted;
            publish_pages(e, s);
            generated += (uint64_t)emitted;
            spec_steps++;
            spec_drafted += (uint64_t)nd;
            spec_acc += (uint64_t)a;
            note_delivery(e, s, ev);
            alive = !dsd_generation_finished(s->gen);
            if (alive)
                emit(e, ev);
            else
                retire(e, s, ev);
        }
        if (alive && s->spec) {
            s->n_draft = 0;
            if (s->sc.n_computed > pos0)
                e->spec_list[n_mtp++] = (struct spec_mtp_seq){ .s = s, .pos0 = pos0,
                                                               .count = s->sc.n_computed - pos0, .hrow = hrow };
        }
        hrow += chunk;
    }
    spec_draft(e, n_mtp);
    struct dsd_step_stats ss;
    dsd_model_step_stats(e->model, &ss);
    pthread_mutex_lock(&e->mu);
    e->stats.steps_graph = ss.graph_steps;
    e->stats.steps_eager = ss.eager_steps;
    e->stats.host_ms_graph = ss.graph_steps ? (double)ss.graph_host_ns / 1e6 / (double)ss.graph_steps : 0.0;
    e->stats.host_ms_eager = ss.eager_steps ? (double)ss.eager_host_ns / 1e6 / (double)ss.eager_steps : 0.0;
    e->stats.graph_kernels = (uint64_t)ss.graph_kernels;
    e->stats.tokens_prefilled += prefilled;
    e->stats.tokens_cached += e->cached_step;
    dsd_hist_merge(&e->stats.ttft, &e->ttft_step);
    dsd_hist_merge(&e->stats.itl, &e->itl_step);
    e->stats.tokens_generated += generated;
    e->stats.spec_steps += spec_steps;
    e->stats.spec_draft_tokens += spec_drafted;
    e->stats.spec_accepted_tokens += spec_acc;
    e->stats.steps++;
    e->stats.last_step_ns = t1;
    e->stats.last_step_ms = (double)(t1 - t0) / 1e6;
    pthread_mutex_unlock(&e->mu);
    e->ttft_step = e->itl_step = (struct dsd_hist){0};
    e->cached_step = 0;
    return n;
}

static void publish_counts(struct dsd_engine *e)
{
    int running = 0, waiting = 0, parked = 0;
    for (struct seq *s = e->seqs; s; s = s->next) {
        if (s->parked_credit || conn_paused(e, s->req->conn_id))
            parked++;
        else if (s->sc.running)
            running++;
        else
            waiting++;
    }
    struct dsd_prefix_cache_stats cs = {0};
    if (e->pc)
        dsd_prefix_cache_stats(e->pc, &cs);
    pthread_mutex_lock(&e->mu);
    e->stats.running = running;
    e->stats.waiting = waiting;
    e->stats.parked = parked;
    e->stats.kv_pages_total = dsd_kv_cache_total_pages(e->kv);
    /* used: held by sequences; the prefix cache's unlocked pages are free on demand */
    e->stats.kv_pages_used = e->stats.kv_pages_total - dsd_kv_cache_free_pages(e->kv) - (e->pc ? cs.device_reclaimable : 0);
    e->stats.prefix_cache = e->pc != NULL;
    if (e->pc)
        e->stats.cache = cs;
    pthread_mutex_unlock(&e->mu);
}

/* Weights placed on the device: loading progress from 5% to 90%. */
static void load_progress(void *user, double fraction)
{
    struct dsd_engine *e = user;
    atomic_store(&e->progress, 0.05 + 0.85 * fraction);
}

static void cache_log(void *user, int level, const char *msg)
{
    (void)user;
    dsd_log(level, "%s", msg);
}

/* The prefix cache and its tiers. Never fatal: a tier that cannot be had is logged and left
 * out, and without memory for the tree the daemon runs without the cache. */
static void prefix_cache_open(struct dsd_engine *e, const struct dsd_kv_layout *l, int n_layers)
{
    uint8_t wid[DSD_WEIGHTS_ID_BYTES];
    dsd_weights_id(e->model->set, wid);
    dsd_index_cache_mix_id(&e->model->cfg, wid, sizeof wid);
    struct dsd_prefix_cache_config pcc = {
        .host_bytes = e->p.host_cache_bytes,
        .disk_dir = e->disk_cache_dir,
        .disk_bytes = e->p.disk_cache_bytes,
        .test_write_delay_ms = e->p.test_disk_write_delay_ms,
        .fingerprint = dsd_kv_fingerprint(&e->model->dims, l, n_layers, wid, sizeof wid),
        .log = cache_log,
    };
    struct dsd_err err = {{0}};
    e->pc = dsd_prefix_cache_new(e->kv, &pcc, &err);
    if (!e->pc) {
        dsd_log(LOG_WARNING, "prefix cache disabled: %s", err.msg);
        return;
    }
    struct dsd_prefix_cache_stats cs;
    dsd_prefix_cache_stats(e->pc, &cs);
    dsd_log(LOG_INFO, "prefix cache: %d device pages, host tier %d pages, disk tier %d pages (%d stored)",
            dsd_kv_cache_total_pages(e->kv), cs.host_slots, cs.disk_slots, cs.disk_pages);
}

/* Host buffers the device copies into or out of every step (the sampled tokens; the
 * speculative hidden states and logits): the backend's alloc_host memory, pinned on a GPU, so
 * that those copies run at the link's rate (pageable memory is staged through the driver's
 * own buffer, at a fraction of it: docs/SPECULATIVE.md). Zeroed. Released before the model. */
static void *xfer_alloc(struct dsd_engine *e, size_t bytes)
{
    return e->model->ops->alloc_host(e->model->be, bytes);
}

static void xfer_free(struct dsd_engine *e, void *p)
{
    if (p)
        e->model->ops->release_host(e->model->be, p);
}

/* The speculative buffers (sizes in struct dsd_engine), when speculation is on. */
static int spec_alloc(struct dsd_engine *e)
{
    if (e->spec_k == 0)
        return 0;
    const size_t D = (size_t)e->model->cfg.hidden_size, V = (size_t)e->model->cfg.vocab_size;
    const size_t T = (size_t)e->p.max_batch_tokens, B = (size_t)e->p.max_batch, K = (size_t)e->spec_k;
    e->spec_hid = xfer_alloc(e, T * D * sizeof(float));
    e->spec_mtp_in = xfer_alloc(e, T * D * sizeof(float));
    e->spec_mtp_hid = xfer_alloc(e, T * D * sizeof(float));
    e->spec_logits = xfer_alloc(e, B * (K + 1) * V * sizeof(float));
    e->spec_mtp_logits = xfer_alloc(e, B * V * sizeof(float));
    e->spec_p = malloc((K + 1) * V * sizeof(float));
    e->spec_resid = malloc(V * sizeof(float));
    e->spec_scratch = malloc(dsd_sample_scratch_bytes((int64_t)V));
    e->spec_list = malloc(B * sizeof *e->spec_list);
    e->spec_bs = malloc(B * sizeof *e->spec_bs);
    return e->spec_hid && e->spec_mtp_in && e->spec_mtp_hid && e->spec_logits && e->spec_mtp_logits && e->spec_p &&
                   e->spec_resid && e->spec_scratch && e->spec_list && e->spec_bs
               ? 0 : -ENOMEM;
}

static void spec_free(struct dsd_engine *e)
{
    xfer_free(e, e->spec_hid);
    xfer_free(e, e->spec_mtp_in);
    xfer_free(e, e->spec_mtp_hid);
    xfer_free(e, e->spec_logits);
    xfer_free(e, e->spec_mtp_logits);
    free(e->spec_p);
    free(e->spec_resid);
    free(e->spec_scratch);
    free(e->spec_list);
    free(e->spec_bs);
}

static int load(struct dsd_engine *e)
{
    struct dsd_err err = {{0}};
    /* test only: stay in LOADING a while (a stop request waits for it, as for a load) */
    if (e->p.test_load_delay_ms > 0) {
        struct timespec ts = { e->p.test_load_delay_ms / 1000, (long)(e->p.test_load_delay_ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    atomic_store(&e->progress, 0.05);
    e->p.model.progress = load_progress;
    e->p.model.progress_user = e;
    int rc = dsd_model_load(e->model_dir, &e->p.model, &e->model, &err);
    if (rc) {
        snprintf(e->failure, sizeof e->failure, "%s", err.msg);
        return rc;
    }
    atomic_store(&e->progress, 0.9);
    const struct dsd_model_config *c = &e->model->cfg;
    e->max_context = e->p.max_context > 0 && e->p.max_context < c->max_position_embeddings
                         ? e->p.max_context : (int)(c->max_position_embeddings < INT32_MAX ? c->max_position_embeddings : INT32_MAX);
    const struct dsd_kv_layout l = dsd_kv_layout_for(&e->model->dims, e->p.model.numerics, e->p.model.kv_dtype);
    const uint64_t per = dsd_kv_cache_page_bytes(&l, dsd_cfg_total_layers(c));
    if (e->spec_k > 0 && c->num_nextn_predict_layers < 1) {
        dsd_log(LOG_WARNING, "speculative_tokens = %d: the checkpoint has no MTP layer, decoding without drafts",
                e->spec_k);
        e->spec_k = 0;
    }
    /* logits rows per step: one per sequence, or 1 + drafts for a verify */
    const int max_rows = e->p.max_batch * (e->spec_k + 1);
    /* The step's workspace first (its size does not depend on the pool's but for the page
     * list), so that a GPU's KV pool is what is left after weights and workspace. */
    if ((rc = dsd_model_reserve(e->model, e->p.max_batch_tokens, max_rows, e->p.max_batch, 1, &err)) ||
        (rc = dsd_model_penalty_reserve(e->model, e->p.max_batch, &err))) {
        snprintf(e->failure, sizeof e->failure, "%s", err.msg);
        return rc;
    }
    e->srows = calloc((size_t)max_rows, sizeof *e->srows);
    e->sres = xfer_alloc(e, (size_t)max_rows * sizeof *e->sres);
    e->pen_owner = calloc((size_t)e->p.max_batch, sizeof *e->pen_owner);
    if (!e->srows || !e->sres || !e->pen_owner || spec_alloc(e)) {
        snprintf(e->failure, sizeof e->failure, "out of memory");
        return -ENOMEM;
    }
    int pages = e->p.kv_pages;
    size_t dev_free = 0, dev_total = 0;
    const bool on_device = e->model->ops->mem_info && e->model->ops->mem_info(e->model->be, &dev_free, &dev_total) == 0;
    if (pages <= 0 && on_device && e->p.kv_gpu_fraction > 0) {
        double b = (double)dev_free * e->p.kv_gpu_fraction / (double)per;
        pages = b > INT32_MAX / 2 ? INT32_MAX / 2 : (int)b;
    } else if (pages <= 0) {
        pages = (int)(e->p.kv_memory_bytes / per);
    }
    if (pages < 2) {
        snprintf(e->failure, sizeof e->failure,
                 "no room for a KV cache: %d page(s) of %llu bytes (free device memory %zu of %zu bytes); "
                 "lower max_batch_tokens or set kv_pages / kv_memory_mb",
                 pages, (unsigned long long)per, dev_free, dev_total);
        return -ENOMEM;
    }
    e->kv_bytes = (uint64_t)pages * per;
    snprintf(e->device, sizeof e->device, "%s", dsd_model_device_name(e->model));
    e->kv = dsd_model_kv_cache_new(e->model, pages, &err);
    if (!e->kv) {
        snprintf(e->failure, sizeof e->failure, "%s", err.msg);
        return -ENOMEM;
    }
    /* The forward pass's memory for the largest step the scheduler can plan: a step never
     * allocates (every page of the pool may belong to the step's sequences). */
    if ((rc = dsd_model_reserve(e->model, e->p.max_batch_tokens, max_rows, e->p.max_batch, pages, &err))) {
        snprintf(e->failure, sizeof e->failure, "%s", err.msg);
        return rc;
    }
    if (e->p.prefix_cache)
        prefix_cache_open(e, &l, dsd_cfg_total_layers(c));
    struct dsd_step_stats ss;
    dsd_model_step_stats(e->model, &ss);
    e->mem = (struct dsd_engine_memory){
        .weight_bytes = e->model->load.weight_bytes,
        .device_weight_bytes = dsd_model_device_weight_bytes(e->model),
        .workspace_bytes = ss.workspace_bytes,
        .penalty_bytes = (uint64_t)e->model->pen_slots * (uint64_t)c->vocab_size * sizeof(uint32_t),
        .kv_bytes = e->kv_bytes,
        .read_s = e->model->load.read_s, .place_s = e->model->load.place_s,
    };
    size_t fr = 0, tot = 0;
    if (e->model->ops->mem_info && e->model->ops->mem_info(e->model->be, &fr, &tot) == 0) {
        e->mem.device_free = fr;
        e->mem.device_total = tot;
    }
    /* Warm-up: one real forward step before saying READY (docs/DAEMON.md, Lifecycle). */
    struct dsd_kv_seq ws = {0};
    int32_t tok = c->bos_token_id >= 0 ? (int32_t)c->bos_token_id : 0;
    if ((rc = dsd_kv_seq_reserve(e->kv, &ws, 1)) == 0) {
        struct dsd_batch_seq b = { .tokens = &tok, .n_tokens = 1, .kv = &ws, .no_logits = true };
        struct dsd_forward_out out = {0};
        rc = dsd_model_forward(e->model, e->kv, &b, 1, &out, &err);
    }
    dsd_kv_seq_release(e->kv, &ws);
    dsd_kv_seq_destroy(&ws);
    if (rc) {
        snprintf(e->failure, sizeof e->failure, "warm-up step failed: %s", err.msg[0] ? err.msg : "no KV pages");
        return rc;
    }
    return 0;
}

static void *engine_main(void *arg)
{
    struct dsd_engine *e = arg;
    if (load(e)) {
        atomic_store(&e->state, DSD_ENGINE_FAILED);
        wake_io(e);
        return NULL;
    }
    atomic_store(&e->progress, 1.0);
    /* Health and the watchdog measure "no progress" from here until the first step. */
    pthread_mutex_lock(&e->mu);
    e->stats.last_step_ns = now_ns();
    pthread_mutex_unlock(&e->mu);
    atomic_store(&e->state, DSD_ENGINE_READY);
    publish_counts(e);
    wake_io(e);
    for (;;) {
        pthread_mutex_lock(&e->mu);
        struct cmd *cmds = e->cmd_head;
        e->cmd_head = e->cmd_tail = NULL;
        bool stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        handle_cmds(e, cmds);
        cancel_marked(e);
        if (stop)
            break;
        /* -1: the plan ran nothing because shared pages made it short: plan again at once
         * (the pool is what it is now), never sleep on runnable work */
        int ran = run_step(e);
        publish_counts(e);
        pthread_mutex_lock(&e->mu);
        bool have_events = e->n_events > 0;
        if (!ran && !e->cmd_head && !e->stop) {
            /* Idle: sleep until the io thread sends something. Bounded so the watchdog's
             * "last progress" stays meaningful even if a wakeup were lost. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (have_events) {
                pthread_mutex_unlock(&e->mu);
                wake_io(e);
                pthread_mutex_lock(&e->mu);
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
            e->stats.last_step_ns = now_ns();   /* idle counts as progress */
            have_events = e->n_events > 0;
        }
        pthread_mutex_unlock(&e->mu);
        if (have_events)
            wake_io(e);
    }
    /* Shutdown: everything still live ends as cancelled (the io thread drained first). */
    while (e->seqs) {
        struct seq *s = e->seqs;
        struct dsd_engine_event *ev = new_event(s, DSD_EV_DONE);
        dsd_generation_end(s->gen, DSD_FINISH_CANCELLED, ev);
        ev->finish = DSD_FINISH_CANCELLED;
        retire(e, s, ev);
    }
    /* the cache's pages go back to the pool before it goes (dsd_engine_stop frees both) */
    dsd_prefix_cache_free(e->pc);
    e->pc = NULL;
    atomic_store(&e->state, DSD_ENGINE_STOPPED);
    wake_io(e);
    return NULL;
}

int dsd_engine_start(const struct dsd_engine_params *p, int wake_fd, struct dsd_engine **out, struct dsd_err *err)
{
    struct dsd_engine *e = calloc(1, sizeof *e);
    if (!e)
        return dsd_errf(err, -ENOMEM, "out of memory");
    e->p = *p;
    if (e->p.max_batch < 1)
        e->p.max_batch = 1;
    if (e->p.max_batch_tokens < 1)
        e->p.max_batch_tokens = 1;
    if (e->p.prefill_chunk < 1)
        e->p.prefill_chunk = 1;
    e->spec_k = e->p.speculative_tokens < 0 ? 0
                : e->p.speculative_tokens > DSD_SPEC_MAX_TOKENS ? DSD_SPEC_MAX_TOKENS : e->p.speculative_tokens;
    e->spec_force = (enum dsd_spec_force)e->p.test_spec_force;
    struct dsd_sched_limits lim = {
        .max_batch = e->p.max_batch, .max_batch_tokens = e->p.max_batch_tokens,
        .prefill_chunk = e->p.prefill_chunk, .page_tokens = DSD_KV_PAGE_TOKENS, .fairness = e->p.fairness,
        .long_queue = e->p.long_queue > 0 ? e->p.long_queue : 0,
    };
    if (dsd_sched_init(&e->sched, &lim)) {
        free(e);
        return dsd_errf(err, -EINVAL, "fairness: unknown policy %d", (int)p->fairness);
    }
    e->model_dir = strdup(p->model_dir);
    e->disk_cache_dir = p->disk_cache_dir ? strdup(p->disk_cache_dir) : NULL;
    e->p.disk_cache_dir = NULL;
    e->wake_fd = wake_fd;
    atomic_init(&e->state, DSD_ENGINE_LOADING);
    atomic_init(&e->progress, 0.0);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    int rc = pthread_create(&e->thread, NULL, engine_main, e);
    if (rc) {
        free(e->model_dir);
        free(e->disk_cache_dir);
        dsd_sched_free(&e->sched);
        free(e);
        return dsd_errf(err, -rc, "cannot start the engine thread: %s", strerror(rc));
    }
    *out = e;
    return 0;
}

void dsd_engine_stop(struct dsd_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    struct dsd_engine_event **evs;
    int n = dsd_engine_take_events(e, &evs);
    for (int i = 0; i < n; i++)
        dsd_engine_event_free(evs[i]);
    free(evs);
    struct cmd *c = e->cmd_head;
    while (c) {
        struct cmd *next = c->next;
        if (c->kind == CMD_SUBMIT)
            dsd_engine_request_free(c->req);
        free(c);
        c = next;
    }
    while (e->paused) {
        struct paused_conn *p = e->paused;
        e->paused = p->next;
        free(p);
    }
    dsd_prefix_cache_free(e->pc);
    free(e->disk_cache_dir);
    dsd_kv_cache_free(e->kv);
    xfer_free(e, e->sres);          /* the transfer buffers before the backend that made them */
    spec_free(e);
    dsd_model_free(e->model);
    free(e->srows);
    free(e->pen_owner);
    free(e->plan_v);
    free(e->plan_s);
    dsd_sched_free(&e->sched);
    free(e->model_dir);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
