/*
 * The step scheduler (policy in scheduler.h). Written for clarity over a few thousand live
 * sequences at most: every pass is a linear scan, owners are found by linear search over the
 * (uid, connection) pairs that have sequences.
 */
#include "scheduler.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct dsd_sched_owner {
    uint64_t conn_id;
    uint32_t uid;
    int uid_first;          /* index of the first owner with this uid (the uid's row) */
    int demand;             /* runnable sequences (not parked) */
    int active;             /* running sequences */
    int waiting;            /* runnable sequences not running */
    int share;              /* fair share of slots */
    int uid_demand;             /* on the uid's first row only */
    uint64_t oldest;        /* earliest arrival among its sequences: ties of the remainder */
};

const char *dsd_fairness_name(enum dsd_fairness f)
{
    switch (f) {
    case DSD_FAIR_UID:
        return "uid";
    case DSD_FAIR_CONNECTION:
        return "connection";
    case DSD_FAIR_OFF:
        return "off";
    }
    return "?";
}

int dsd_sched_pages_for(int n_tokens, int page_tokens)
{
    return n_tokens <= 0 ? 0 : (int)(((int64_t)n_tokens + page_tokens - 1) / page_tokens);
}

int dsd_sched_init(struct dsd_sched *s, const struct dsd_sched_limits *lim)
{
    memset(s, 0, sizeof *s);
    if (lim->max_batch < 1 || lim->max_batch_tokens < 1 || lim->prefill_chunk < 1 || lim->page_tokens < 1 ||
        lim->long_queue < 0 ||
        (lim->fairness != DSD_FAIR_UID && lim->fairness != DSD_FAIR_CONNECTION && lim->fairness != DSD_FAIR_OFF))
        return -EINVAL;
    s->lim = *lim;
    return 0;
}

void dsd_sched_free(struct dsd_sched *s)
{
    free(s->owners);
    free(s->demand);
    memset(s, 0, sizeof *s);
}

static int grow(struct dsd_sched *s, int n)
{
    if (n <= s->cap)
        return 0;
    int cap = s->cap ? s->cap : 64;
    while (cap < n)
        cap *= 2;
    struct dsd_sched_owner *o = realloc(s->owners, (size_t)cap * sizeof *o);
    if (!o)
        return -ENOMEM;
    s->owners = o;
    int *u = realloc(s->demand, (size_t)cap * sizeof *u);
    if (!u)
        return -ENOMEM;
    s->demand = u;
    s->cap = cap;
    return 0;
}

/* Max-min fair division of `slots` among k claimants with demands d[] (water filling): each
 * gets min(demand, level), the level as high as the slots allow; the slots that do not divide
 * evenly go one each to the claimants with the earliest `oldest`. Writes out[]. */
static void water_fill(const int *d, const uint64_t *oldest, int k, int slots, int *out)
{
    int left = slots, open = 0;
    for (int i = 0; i < k; i++) {
        out[i] = 0;
        open += d[i] > 0;
    }
    while (left > 0 && open > 0 && left / open > 0) {
        int q = left / open;
        for (int i = 0; i < k; i++) {
            if (out[i] >= d[i])
                continue;
            int g = d[i] - out[i] < q ? d[i] - out[i] : q;
            out[i] += g;
            left -= g;
            open -= out[i] == d[i];
        }
    }
    /* left < open: one more slot each for the earliest of the claimants still open */
    bool given[k > 0 ? k : 1];
    memset(given, 0, sizeof given);
    for (; left > 0 && open > 0; left--, open--) {
        int best = -1;
        for (int i = 0; i < k; i++)
            if (!given[i] && out[i] < d[i] && (best < 0 || oldest[i] < oldest[best]))
                best = i;
        given[best] = true;
        out[best]++;
    }
}

/* Builds the owner table and each owner's share; seq->owner_ is its row. */
static int owners_build(struct dsd_sched *s, struct dsd_sched_seq **v, int n, int *n_owners)
{
    if (grow(s, n > 0 ? n : 1))
        return -ENOMEM;
    struct dsd_sched_owner *o = s->owners;
    int k = 0;
    for (int i = 0; i < n; i++) {
        struct dsd_sched_seq *q = v[i];
        int j = 0;
        while (j < k && !(o[j].conn_id == q->conn_id && o[j].uid == q->uid))
            j++;
        if (j == k) {
            o[k] = (struct dsd_sched_owner){ .conn_id = q->conn_id, .uid = q->uid, .oldest = q->arrival };
            int u = 0;
            while (u < k && o[u].uid != q->uid)
                u++;
            o[k].uid_first = u < k ? o[u].uid_first : k;
            k++;
        }
        q->owner_ = j;
        if (q->arrival < o[j].oldest)
            o[j].oldest = q->arrival;
        if (!q->parked) {
            o[j].demand++;
            if (q->running)
                o[j].active++;
            else
                o[j].waiting++;
        }
    }
    *n_owners = k;
    const int slots = s->lim.max_batch;
    if (s->lim.fairness == DSD_FAIR_OFF) {
        for (int j = 0; j < k; j++)
            o[j].share = slots;
        return 0;
    }
    /* the demands handed to water_fill (its other arrays are small and on the stack) */
    int *d = s->demand;
    if (s->lim.fairness == DSD_FAIR_CONNECTION) {
        uint64_t oldest[k > 0 ? k : 1];
        int out[k > 0 ? k : 1];
        for (int j = 0; j < k; j++) {
            d[j] = o[j].demand;
            oldest[j] = o[j].oldest;
        }
        water_fill(d, oldest, k, slots, out);
        for (int j = 0; j < k; j++)
            o[j].share = out[j];
        return 0;
    }
    /* DSD_FAIR_UID: uids first (on their first row), then connections within each uid */
    int nu = 0;
    int urow[k > 0 ? k : 1];
    uint64_t uold[k > 0 ? k : 1];
    int uout[k > 0 ? k : 1];
    for (int j = 0; j < k; j++) {
        if (o[j].uid_first == j) {
            urow[nu] = j;
            uold[nu] = o[j].oldest;
            nu++;
        }
    }
    for (int j = 0; j < k; j++) {
        struct dsd_sched_owner *u = &o[o[j].uid_first];
        u->uid_demand += o[j].demand;
    }
    for (int a = 0; a < nu; a++) {
        d[a] = o[urow[a]].uid_demand;
        for (int j = 0; j < k; j++)
            if (o[j].uid_first == urow[a] && o[j].oldest < uold[a])
                uold[a] = o[j].oldest;
    }
    water_fill(d, uold, nu, slots, uout);
    for (int a = 0; a < nu; a++) {
        int m = 0;
        int rows[k];
        uint64_t old[k];
        int out[k];
        for (int j = 0; j < k; j++)
            if (o[j].uid_first == urow[a]) {
                rows[m] = j;
                d[m] = o[j].demand;     /* d's uid entries were consumed by water_fill */
                old[m] = o[j].oldest;
                m++;
            }
        water_fill(d, old, m, uout[a], out);
        for (int b = 0; b < m; b++)
            o[rows[b]].share = out[b];
    }
    return 0;
}

static bool over_share(const struct dsd_sched *s, const struct dsd_sched_seq *q)
{
    const struct dsd_sched_owner *o = &s->owners[q->owner_];
    return o->active > o->share;
}

/* Is a a better victim (pages to take back) than b? Waiting before running, parked before
 * runnable, owners above their share first, lower priority, newer. */
static bool better_victim(const struct dsd_sched *s, const struct dsd_sched_seq *a, const struct dsd_sched_seq *b)
{
    if (a->running != b->running)
        return !a->running;
    if (a->parked != b->parked)
        return a->parked;
    bool oa = over_share(s, a), ob = over_share(s, b);
    if (oa != ob)
        return oa;
    if (a->priority != b->priority)
        return a->priority < b->priority;
    return a->arrival > b->arrival;
}

bool dsd_sched_admits_before(const struct dsd_sched_seq *a, const struct dsd_sched_seq *b, bool long_queue)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    if (long_queue && a->cached_pages != b->cached_pages)
        return a->cached_pages > b->cached_pages;
    return a->arrival < b->arrival;
}

/* Does a come before b in admission (and in getting pages first)? Below its share first,
 * then dsd_sched_admits_before. */
static bool goes_first_q(const struct dsd_sched *s, const struct dsd_sched_seq *a, const struct dsd_sched_seq *b,
                         bool long_queue)
{
    if (s->lim.fairness != DSD_FAIR_OFF) {
        const struct dsd_sched_owner *oa = &s->owners[a->owner_], *ob = &s->owners[b->owner_];
        bool ua = oa->active < oa->share, ub = ob->active < ob->share;
        if (ua != ub)
            return ua;
    }
    return dsd_sched_admits_before(a, b, long_queue);
}

static bool goes_first(const struct dsd_sched *s, const struct dsd_sched_seq *a, const struct dsd_sched_seq *b)
{
    return goes_first_q(s, a, b, false);
}

static void release(struct dsd_sched *s, struct dsd_sched_seq *q, int *free_pages, struct dsd_sched_step *st)
{
    *free_pages += q->n_pages;
    q->n_pages = 0;
    q->n_computed = 0;
    q->release = true;
    if (q->running) {
        q->running = false;
        s->owners[q->owner_].active--;
        if (!q->parked)
            s->owners[q->owner_].waiting++;
    }
    st->released++;
}

/* Takes pages back until `want` are free: from sequences other than `keep` that are not in
 * this step's batch, running ones only when allow_running. Returns whether want are free. */
static bool take_pages(struct dsd_sched *s, struct dsd_sched_seq **v, int n, const struct dsd_sched_seq *keep,
                       int want, bool allow_running, int *free_pages, struct dsd_sched_step *st)
{
    while (*free_pages < want) {
        struct dsd_sched_seq *victim = NULL;
        for (int i = 0; i < n; i++) {
            struct dsd_sched_seq *q = v[i];
            if (q == keep || q->n_pages == 0 || q->chunk > 0 || (q->running && !allow_running))
                continue;
            if (!victim || better_victim(s, q, victim))
                victim = q;
        }
        if (!victim)
            return false;
        release(s, victim, free_pages, st);
    }
    return true;
}

/* Gives running sequence q up to `want` tokens this step, finding pages for them. Returns the
 * chunk (0: not this step; q may have given up its own pages or be out_of_kv). */
static int grow_running(struct dsd_sched *s, struct dsd_sched_seq **v, int n, struct dsd_sched_seq *q, int want,
                        int *free_pages, struct dsd_sched_step *st)
{
    const int pt = s->lim.page_tokens;
    int remaining = q->n_tokens - q->n_computed;
    if (remaining == 1 && q->n_draft > 0)
        remaining += q->n_draft;        /* a decode step verifies its drafts too */
    int chunk = remaining < want ? remaining : want;
    if (chunk <= 0)
        return 0;
    int need = dsd_sched_pages_for(q->n_computed + chunk, pt) - q->n_pages;
    if (need > *free_pages)
        take_pages(s, v, n, q, need, true, free_pages, st);
    if (need > *free_pages) {
        /* a shorter chunk into the pages there are */
        int fits = (q->n_pages + *free_pages) * pt - q->n_computed;
        if (fits >= 1) {
            chunk = fits < chunk ? fits : chunk;
            need = dsd_sched_pages_for(q->n_computed + chunk, pt) - q->n_pages;
        } else {
            /* Nothing left to take: every other page belongs to this step's batch. If any
             * other sequence holds pages, q yields its own and waits (it recomputes later);
             * alone, the pool cannot hold it at all. */
            bool others = false;
            for (int i = 0; i < n && !others; i++)
                others = v[i] != q && v[i]->n_pages > 0;
            if (others) {
                release(s, q, free_pages, st);
            } else {
                q->out_of_kv = true;
                st->out_of_kv++;
            }
            return 0;
        }
    }
    if (need > 0) {
        *free_pages -= need;
        q->n_pages += need;
    }
    q->chunk = chunk;
    return chunk;
}

static int check(const struct dsd_sched_seq *const *v, int n, int free_pages)
{
    if (n < 0 || free_pages < 0)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (!v[i] || v[i]->n_tokens < 1 || v[i]->n_computed < 0 || v[i]->n_computed > v[i]->n_tokens ||
            v[i]->n_pages < 0 || v[i]->n_draft < 0)
            return -EINVAL;
    return 0;
}

int dsd_sched_shares(struct dsd_sched *s, struct dsd_sched_seq **v, int n, int *share)
{
    int rc = check((const struct dsd_sched_seq *const *)v, n, 0), k;
    if (rc)
        return rc;
    if ((rc = owners_build(s, v, n, &k)))
        return rc;
    for (int i = 0; i < n; i++)
        share[i] = s->owners[v[i]->owner_].share;
    return 0;
}

int dsd_sched_plan(struct dsd_sched *s, struct dsd_sched_seq **v, int n, int free_pages, struct dsd_sched_step *st)
{
    *st = (struct dsd_sched_step){0};
    int rc = check((const struct dsd_sched_seq *const *)v, n, free_pages);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        struct dsd_sched_seq *q = v[i];
        q->chunk = 0;
        q->admitted = q->release = q->demoted = q->out_of_kv = q->seen_ = false;
        /* a parked sequence holds no slot; it keeps its pages */
        if (q->running && q->parked) {
            q->running = false;
            q->demoted = true;
            st->demoted++;
        }
    }
    int k;
    if ((rc = owners_build(s, v, n, &k)))
        return rc;
    struct dsd_sched_owner *o = s->owners;
    const struct dsd_sched_limits *L = &s->lim;

    int running = 0;
    for (int i = 0; i < n; i++)
        running += v[i]->running;
    /* Over max_batch (a lower limit after a reload, say): the last in order wait. */
    while (running > L->max_batch) {
        struct dsd_sched_seq *last = NULL;
        for (int i = 0; i < n; i++)
            if (v[i]->running && (!last || goes_first(s, last, v[i])))
                last = v[i];
        last->running = false;
        last->demoted = true;
        o[last->owner_].active--;
        o[last->owner_].waiting++;
        st->demoted++;
        running--;
    }

    /* 1. Fair shares: free as many slots as owners below their share have waiting
     * sequences to fill, taking them from owners above their share. */
    if (L->fairness != DSD_FAIR_OFF) {
        int deficit = 0;
        for (int j = 0; j < k; j++)
            if (o[j].active < o[j].share) {
                int gap = o[j].share - o[j].active;
                deficit += o[j].waiting < gap ? o[j].waiting : gap;
            }
        while (L->max_batch - running < deficit) {
            int over = -1;
            for (int j = 0; j < k; j++)
                if (o[j].active > o[j].share &&
                    (over < 0 || o[j].active - o[j].share > o[over].active - o[over].share ||
                     (o[j].active - o[j].share == o[over].active - o[over].share && o[j].oldest > o[over].oldest)))
                    over = j;
            if (over < 0)
                break;
            struct dsd_sched_seq *victim = NULL;
            for (int i = 0; i < n; i++) {
                struct dsd_sched_seq *q = v[i];
                if (q->running && q->owner_ == over &&
                    (!victim || q->priority < victim->priority ||
                     (q->priority == victim->priority && q->arrival > victim->arrival)))
                    victim = q;
            }
            victim->running = false;
            victim->demoted = true;
            o[over].active--;
            o[over].waiting++;
            st->demoted++;
            running--;
        }
    }

    int budget = L->max_batch_tokens, nb = 0;
    /* 2. decoding sequences, one token each, in order (the last ones yield pages first) */
    /* 3. running sequences still in their prompt */
    for (int phase = 0; phase < 2; phase++) {
        for (;;) {
            if (nb >= L->max_batch || budget <= 0)
                break;
            struct dsd_sched_seq *q = NULL;
            for (int i = 0; i < n; i++) {
                struct dsd_sched_seq *c = v[i];
                int rem = c->n_tokens - c->n_computed;
                if (!c->running || c->seen_)
                    continue;
                if (phase == 0 ? rem != 1 : rem <= 1)
                    continue;
                if (!q || goes_first(s, c, q))
                    q = c;
            }
            if (!q)
                break;
            int want = phase == 0 ? 1 + (q->n_draft > 0 ? q->n_draft : 0)
                                  : (budget < L->prefill_chunk ? budget : L->prefill_chunk);
            if (want > budget)
                want = budget;
            q->seen_ = true;
            int got = grow_running(s, v, n, q, want, &free_pages, st);
            if (got > 0) {
                nb++;
                budget -= got;
            }
        }
    }

    /* 4. admissions */
    running = 0;
    int queued = 0;
    for (int i = 0; i < n; i++) {
        running += v[i]->running;
        queued += !v[i]->running && !v[i]->parked && !v[i]->out_of_kv;
    }
    const bool long_queue = L->long_queue > 0 && queued >= L->long_queue;
    while (nb < L->max_batch && budget > 0 && running < L->max_batch) {
        struct dsd_sched_seq *q = NULL;
        for (int i = 0; i < n; i++) {
            struct dsd_sched_seq *c = v[i];
            if (c->running || c->parked || c->out_of_kv || c->chunk > 0)
                continue;
            if (!q || goes_first_q(s, c, q, long_queue))
                q = c;
        }
        if (!q)
            break;
        int want = budget < L->prefill_chunk ? budget : L->prefill_chunk;
        int remaining = q->n_tokens - q->n_computed;
        int chunk = remaining < want ? remaining : want;
        int need = dsd_sched_pages_for(q->n_computed + chunk, L->page_tokens) - q->n_pages;
        if (need < 0)
            need = 0;
        /* keep one free page per running sequence so they can grow */
        if (need + running > free_pages)
            take_pages(s, v, n, q, need + running, false, &free_pages, st);
        if (need + running > free_pages && (running > 0 || need > free_pages))
            break;
        free_pages -= need;
        q->n_pages += need;
        q->chunk = chunk;
        q->running = true;
        q->admitted = true;
        q->demoted = false;
        o[q->owner_].active++;
        o[q->owner_].waiting--;
        running++;
        nb++;
        budget -= chunk;
        st->admitted++;
    }
    st->n_batch = nb;
    st->n_tokens = L->max_batch_tokens - budget;
    st->free_pages = free_pages;
    return nb;
}
