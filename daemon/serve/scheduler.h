/*
 * daemon/serve/scheduler.h: which sequences run in the next engine step, how many tokens
 * each, and whose KV pages are taken back. Plain functions over plain structs: no model, no
 * KV pool, no threads, so tests drive the policy directly (tests/serve/test_scheduler.c).
 *
 *   struct dsd_sched_seq *v[n];          // the engine's live sequences, any order
 *   ... for each: fill conn_id, uid, priority, arrival, n_tokens, n_computed, n_pages,
 *       parked (out of ring credit, or its connection's socket is backed up);
 *       running and the page state are the scheduler's own and persist between steps ...
 *   struct dsd_sched_limits lim = { .max_batch = 64, .max_batch_tokens = 2048,
 *                                   .prefill_chunk = 512, .page_tokens = 64,
 *                                   .fairness = DSD_FAIR_UID };
 *   struct dsd_sched sc;
 *   dsd_sched_init(&sc, &lim);                       // once
 *   struct dsd_sched_step st;
 *   dsd_sched_plan(&sc, v, n, dsd_kv_cache_free_pages(kv), &st);   // every step
 *   ...
 *   dsd_sched_free(&sc);
 *   for each seq: if (release) give back all its KV pages (the scheduler already set
 *                 n_computed = n_pages = 0: it recomputes its tokens when it runs again);
 *                 if (chunk > 0) reserve pages for [0, n_computed + chunk) -- they are
 *                 there, the plan counted them -- and put it in the batch;
 *                 if (out_of_kv) end it: the pool cannot hold it even alone.
 *
 * The policy (docs/DAEMON.md "Scheduling" says the same for operators):
 *  - A running sequence holds a batch slot; at most max_batch run. A parked sequence holds
 *    no slot: it drops back to waiting and keeps its KV pages, so it resumes without
 *    recomputing when it is admitted again, unless its pages were taken meanwhile.
 *  - Fair shares: the max_batch slots are divided max-min fairly (water filling) among the
 *    uids that have runnable sequences, and each uid's share among its connections
 *    (DSD_FAIR_UID); or among connections directly (DSD_FAIR_CONNECTION). While a runnable
 *    waiting sequence's owner is below its share and no slot is free, the owner furthest
 *    above its share gives up a slot: its lowest-priority, newest running sequence goes back
 *    to waiting with its pages. DSD_FAIR_OFF disables shares (priority, then arrival).
 *  - A step: one token for every running sequence that is decoding (plus its n_draft draft
 *    tokens while the token budget lasts), then prompt chunks (at
 *    most prefill_chunk tokens each) for running sequences still in their prompt, then
 *    admissions of waiting sequences -- owners below their share first, then by priority
 *    (higher first), then, while at least long_queue runnable sequences wait, the longest
 *    cached prefix (cached_pages) first, then arrival -- while slots, tokens
 *    (max_batch_tokens) and pages allow.
 *    An admission keeps one free page per running sequence so decodes can grow.
 *  - Pages: when a sequence needs pages the pool lacks, pages are taken back from waiting
 *    sequences first (parked before runnable; owners above their share first; lower
 *    priority, then newer, first), then -- for a running sequence that must grow -- from a
 *    running sequence not in this step. A sequence that cannot get its page even then is
 *    out_of_kv (the daemon's context capacity is full).
 * Starvation bound: a runnable sequence whose owner is below its share is admitted in the
 * next step unless the pages held by running sequences of owners at or below their share
 * leave no room, which only their completion changes.
 */
#ifndef DSD_SERVE_SCHEDULER_H
#define DSD_SERVE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

enum dsd_fairness {
    DSD_FAIR_UID = 0,           /* shares per uid, then per connection within it */
    DSD_FAIR_CONNECTION,        /* shares per connection */
    DSD_FAIR_OFF,               /* no shares: priority, then arrival */
};

struct dsd_sched_owner;

struct dsd_sched_seq {
    /* filled by the engine before every plan */
    uint64_t conn_id;
    uint32_t uid;
    int priority;               /* higher runs first */
    uint64_t arrival;           /* unique, increasing with submission */
    int n_tokens;               /* prompt + generated so far */
    bool parked;                /* may not run this step */
    int cached_pages;           /* pages of its prefix cached now (0 = none or not looked up):
                                   read only when the queue is long (limits.long_queue) */
    int n_draft;                /* speculative draft tokens after n_tokens a decoding sequence
                                   would have verified (docs/SPECULATIVE.md): its decode chunk is
                                   up to 1 + n_draft tokens, budget allowing; 0 = plain */
    /* state kept by the scheduler (start zeroed) */
    bool running;               /* holds a batch slot */
    int n_computed;             /* tokens whose KV is cached */
    int n_pages;                /* KV pages held (covering n_computed + chunk after a plan) */
    /* this plan's results */
    int chunk;                  /* tokens in this step, 0 = not in the batch */
    bool admitted;              /* became running in this plan */
    bool release;               /* its pages were taken: release them before the step */
    bool demoted;               /* lost its slot to a fair share or to parking */
    bool out_of_kv;             /* needs a page the pool cannot give even alone: end it */
    /* scratch */
    int owner_;
    bool seen_;
};

struct dsd_sched_limits {
    int max_batch;              /* running sequences, and sequences per step */
    int max_batch_tokens;       /* tokens per step */
    int prefill_chunk;          /* prompt tokens of one sequence per step */
    int page_tokens;            /* tokens per KV page */
    enum dsd_fairness fairness;
    int long_queue;             /* runnable waiting sequences from which admission prefers
                                   the longest cached prefix within a priority; 0 = never */
};

/* The scheduler: its limits and scratch space that grows with the number of sequences (no
 * allocation per step once it has seen the largest count). */
struct dsd_sched {
    struct dsd_sched_limits lim;
    struct dsd_sched_owner *owners;     /* scratch, one per (uid, connection) */
    int *demand;                        /* scratch: demands for the fair division */
    int cap;
};

/* Returns 0, or -EINVAL when a limit is below 1 or fairness is not one of the enum's. */
int dsd_sched_init(struct dsd_sched *s, const struct dsd_sched_limits *lim);
void dsd_sched_free(struct dsd_sched *s);

struct dsd_sched_step {
    int n_batch;                /* sequences with chunk > 0 */
    int n_tokens;               /* sum of chunks */
    int admitted, demoted, released, out_of_kv;
    int free_pages;             /* the pool's free pages after the step's reservations */
};

/* Plans one step over v[0..n) given the pool's free pages. Changes only the scheduler's
 * fields of each sequence. Returns the number of sequences in the batch (st->n_batch), 0 when
 * nothing can run, -EINVAL for impossible input (negative counts or free pages, n_computed
 * above n_tokens, n_tokens below 1) with nothing changed, -ENOMEM when its scratch cannot
 * grow (nothing changed). */
int dsd_sched_plan(struct dsd_sched *s, struct dsd_sched_seq **v, int n, int free_pages,
                   struct dsd_sched_step *st);

/* Admission order without fair shares: higher priority first; then, when long_queue, more
 * cached pages first (they cost the least to start, and their pages are the likeliest to be
 * evicted while they wait); then earlier arrival. True when a goes before b. */
bool dsd_sched_admits_before(const struct dsd_sched_seq *a, const struct dsd_sched_seq *b, bool long_queue);

/* Pages needed to hold tokens [0, n_tokens). */
int dsd_sched_pages_for(int n_tokens, int page_tokens);

/* The fair share (slots) of the owner of each sequence of v under the scheduler's fairness,
 * written to share[i] for v[i] (max_batch for every sequence under DSD_FAIR_OFF); computed
 * from the runnable (not parked) sequences as a plan does. Returns 0, -ENOMEM. */
int dsd_sched_shares(struct dsd_sched *s, struct dsd_sched_seq **v, int n, int *share);

const char *dsd_fairness_name(enum dsd_fairness f);

#endif
