/*
 * The step scheduler (daemon/serve/scheduler.h) driven directly, without a model: admission,
 * chunking, parking, fair shares, page reclaim, preemption, and simulated runs that check
 * the accounting every step and bound how long a client waits.
 */
#include <errno.h>
#include <stdint.h>

#include "scheduler.h"
#include "test.h"

#define MAXS 1024

/* A simulated engine: sequences with a prompt and a generation length, a page pool. */
struct sim {
    struct dsd_sched sc;
    struct dsd_sched_seq seq[MAXS];
    int gen[MAXS], max_gen[MAXS], first_tok_step[MAXS], arrive_step[MAXS];
    bool live[MAXS];
    int n;
    int total_pages;
    uint64_t arrivals;
    int step;
    int finished, ended_out_of_kv;
    int max_running_seen;
};

static void sim_init(struct sim *s, struct dsd_sched_limits lim, int total_pages)
{
    memset(s, 0, sizeof *s);
    ASSERT_EQ_INT(dsd_sched_init(&s->sc, &lim), 0);
    s->total_pages = total_pages;
}

static int sim_add(struct sim *s, uint64_t conn, uint32_t uid, int prompt, int max_gen, int priority)
{
    int i = s->n++;
    s->seq[i] = (struct dsd_sched_seq){ .conn_id = conn, .uid = uid, .priority = priority,
                                        .arrival = ++s->arrivals, .n_tokens = prompt };
    s->max_gen[i] = max_gen;
    s->gen[i] = 0;
    s->first_tok_step[i] = -1;
    s->arrive_step[i] = s->step;
    s->live[i] = true;
    return i;
}

static int sim_used_pages(const struct sim *s)
{
    int used = 0;
    for (int i = 0; i < s->n; i++)
        if (s->live[i])
            used += s->seq[i].n_pages;
    return used;
}

/* One step: plan, check the plan's invariants, run it. Returns the batch size. */
static int sim_step(struct sim *s, struct dsd_sched_step *out)
{
    struct dsd_sched_seq *v[MAXS];
    int map[MAXS], n = 0;
    for (int i = 0; i < s->n; i++)
        if (s->live[i]) {
            map[n] = i;
            v[n++] = &s->seq[i];
        }
    int free_pages = s->total_pages - sim_used_pages(s);
    struct dsd_sched_step st;
    int nb = dsd_sched_plan(&s->sc, v, n, free_pages, &st);
    ASSERT_TRUE(nb >= 0);
    /* accounting: pages held + free after the plan == the pool */
    ASSERT_EQ_INT(sim_used_pages(s) + st.free_pages, s->total_pages);
    ASSERT_TRUE(st.free_pages >= 0);
    int running = 0, batch = 0, tokens = 0;
    for (int j = 0; j < n; j++) {
        struct dsd_sched_seq *q = v[j];
        running += q->running;
        if (q->chunk > 0) {
            batch++;
            tokens += q->chunk;
            ASSERT_TRUE(q->running);
            ASSERT_TRUE(!q->parked);
            ASSERT_TRUE(q->n_computed + q->chunk <= q->n_tokens);
            ASSERT_TRUE(q->n_pages >= dsd_sched_pages_for(q->n_computed + q->chunk, s->sc.lim.page_tokens));
        }
        if (q->parked)
            ASSERT_TRUE(!q->running);
        ASSERT_TRUE(q->n_pages >= dsd_sched_pages_for(q->n_computed, s->sc.lim.page_tokens));
    }
    ASSERT_EQ_INT(batch, nb);
    ASSERT_TRUE(running <= s->sc.lim.max_batch);
    ASSERT_TRUE(tokens <= s->sc.lim.max_batch_tokens);
    if (running > s->max_running_seen)
        s->max_running_seen = running;
    /* run it */
    for (int j = 0; j < n; j++) {
        struct dsd_sched_seq *q = v[j];
        int i = map[j];
        if (q->out_of_kv) {
            s->live[i] = false;
            s->ended_out_of_kv++;
            continue;
        }
        if (q->chunk == 0)
            continue;
        q->n_computed += q->chunk;
        if (q->n_computed == q->n_tokens) {      /* logits: one new token */
            if (s->first_tok_step[i] < 0)
                s->first_tok_step[i] = s->step;
            q->n_tokens++;
            if (++s->gen[i] >= s->max_gen[i]) {
                s->live[i] = false;
                s->finished++;
            }
        }
    }
    s->step++;
    if (out)
        *out = st;
    return nb;
}

static int sim_live(const struct sim *s)
{
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += s->live[i];
    return n;
}

static struct dsd_sched_limits limits(int max_batch, int tokens, int chunk, enum dsd_fairness f)
{
    return (struct dsd_sched_limits){ .max_batch = max_batch, .max_batch_tokens = tokens, .prefill_chunk = chunk,
                                      .page_tokens = 64, .fairness = f };
}

TEST(bad_input)
{
    struct dsd_sched sc;
    struct dsd_sched_limits l = limits(0, 10, 10, DSD_FAIR_UID);
    ASSERT_EQ_INT(dsd_sched_init(&sc, &l), -EINVAL);
    l = limits(4, 10, 10, (enum dsd_fairness)7);
    ASSERT_EQ_INT(dsd_sched_init(&sc, &l), -EINVAL);
    l = limits(4, 10, 10, DSD_FAIR_UID);
    ASSERT_EQ_INT(dsd_sched_init(&sc, &l), 0);
    struct dsd_sched_seq a = { .n_tokens = 5, .n_computed = 6 }, *v[1] = { &a };
    struct dsd_sched_step st;
    ASSERT_EQ_INT(dsd_sched_plan(&sc, v, 1, 10, &st), -EINVAL);
    a.n_computed = 0;
    ASSERT_EQ_INT(dsd_sched_plan(&sc, v, 1, -1, &st), -EINVAL);
    ASSERT_EQ_INT(a.running, 0);
    dsd_sched_free(&sc);
}

TEST(pages_for)
{
    ASSERT_EQ_INT(dsd_sched_pages_for(0, 64), 0);
    ASSERT_EQ_INT(dsd_sched_pages_for(1, 64), 1);
    ASSERT_EQ_INT(dsd_sched_pages_for(64, 64), 1);
    ASSERT_EQ_INT(dsd_sched_pages_for(65, 64), 2);
    ASSERT_EQ_INT(dsd_sched_pages_for(2147483647, 64), 33554432);
}

/* Admission in priority then arrival order, chunking by prefill_chunk and the token budget. */
TEST(admission_and_chunks)
{
    static struct sim s;
    sim_init(&s, limits(2, 300, 200, DSD_FAIR_OFF), 100);
    int a = sim_add(&s, 1, 1, 500, 4, 0);
    int b = sim_add(&s, 1, 1, 100, 4, 5);
    int c = sim_add(&s, 1, 1, 100, 4, 0);
    struct dsd_sched_step st;
    sim_step(&s, &st);
    /* b first (priority 5): 100 tokens; then a: min(prefill_chunk 200, budget 200) */
    ASSERT_EQ_INT(s.seq[b].chunk, 100);
    ASSERT_EQ_INT(s.seq[a].chunk, 200);
    ASSERT_EQ_INT(s.seq[c].chunk, 0);
    ASSERT_EQ_INT(st.n_tokens, 300);
    ASSERT_EQ_INT(st.admitted, 2);
    /* next: b decodes (1 token), a continues its prompt (200), c waits for a slot */
    sim_step(&s, &st);
    ASSERT_EQ_INT(s.seq[b].chunk, 1);
    ASSERT_EQ_INT(s.seq[a].chunk, 200);
    ASSERT_EQ_INT(s.seq[c].chunk, 0);
    ASSERT_TRUE(!s.seq[c].running);
    dsd_sched_free(&s.sc);
}

/* Speculative drafts (n_draft): a decoding sequence's chunk is 1 + its drafts while the
 * token budget lasts (decodes first, in order), pages counted for them; a sequence still in
 * its prompt ignores n_draft. */
TEST(decode_chunk_carries_drafts)
{
    struct dsd_sched sc;
    struct dsd_sched_limits l = limits(4, 7, 100, DSD_FAIR_OFF);
    ASSERT_EQ_INT(dsd_sched_init(&sc, &l), 0);
    /* a, b decoding with 3 drafts each, c in its prompt with n_draft set (ignored) */
    struct dsd_sched_seq a = { .arrival = 1, .n_tokens = 64, .n_computed = 63, .n_pages = 1, .running = true,
                               .n_draft = 3 };
    struct dsd_sched_seq b = { .arrival = 2, .n_tokens = 10, .n_computed = 9, .n_pages = 1, .running = true,
                               .n_draft = 3 };
    struct dsd_sched_seq c = { .arrival = 3, .n_tokens = 50, .n_computed = 10, .n_pages = 1, .running = true,
                               .n_draft = 2 };
    struct dsd_sched_seq *v[3] = { &a, &b, &c };
    struct dsd_sched_step st;
    ASSERT_EQ_INT(dsd_sched_plan(&sc, v, 3, 10, &st), 2);
    ASSERT_EQ_INT(a.chunk, 4);          /* 1 + 3 drafts */
    ASSERT_EQ_INT(a.n_pages, 2);        /* positions 63..66 cross into a second page */
    ASSERT_EQ_INT(b.chunk, 3);          /* the budget (7) leaves 3: 1 + 2 drafts */
    ASSERT_EQ_INT(c.chunk, 0);          /* nothing left for prefill */
    ASSERT_EQ_INT(st.n_tokens, 7);
    ASSERT_EQ_INT(st.free_pages, 9);
    /* no drafts: one token each, the prompt gets the rest */
    a.n_draft = b.n_draft = 0;
    a.n_pages = 1;
    ASSERT_EQ_INT(dsd_sched_plan(&sc, v, 3, 10, &st), 3);
    ASSERT_EQ_INT(a.chunk, 1);
    ASSERT_EQ_INT(b.chunk, 1);
    ASSERT_EQ_INT(c.chunk, 5);
    a.n_draft = -1;
    ASSERT_EQ_INT(dsd_sched_plan(&sc, v, 3, 10, &st), -EINVAL);
    dsd_sched_free(&sc);
}

/* Admission order: priority, then (long queue only) the longest cached prefix, then arrival. */
TEST(admission_prefers_cached_prefix_when_the_queue_is_long)
{
    struct dsd_sched_seq a = { .priority = 0, .arrival = 1, .cached_pages = 0 };
    struct dsd_sched_seq b = { .priority = 0, .arrival = 2, .cached_pages = 5 };
    struct dsd_sched_seq c = { .priority = 1, .arrival = 3, .cached_pages = 0 };
    ASSERT_TRUE(dsd_sched_admits_before(&a, &b, false));     /* short queue: arrival */
    ASSERT_TRUE(dsd_sched_admits_before(&b, &a, true));      /* long queue: cached prefix */
    ASSERT_TRUE(dsd_sched_admits_before(&c, &b, true));      /* priority still first */
    ASSERT_TRUE(!dsd_sched_admits_before(&b, &c, true));

    /* In a plan: one slot, three waiting; below long_queue arrival decides, at it the
     * cached one goes first. */
    for (int lq = 0; lq < 2; lq++) {
        static struct sim s;
        struct dsd_sched_limits lim = limits(1, 1000, 200, DSD_FAIR_OFF);
        lim.long_queue = lq ? 3 : 4;
        sim_init(&s, lim, 100);
        int x = sim_add(&s, 1, 1, 300, 4, 0);
        int y = sim_add(&s, 1, 1, 300, 4, 0);
        int z = sim_add(&s, 1, 1, 300, 4, 0);
        s.seq[y].cached_pages = 3;
        s.seq[z].cached_pages = 1;
        struct dsd_sched_step st;
        sim_step(&s, &st);
        ASSERT_EQ_INT(st.admitted, 1);
        ASSERT_TRUE(s.seq[lq ? y : x].running);
        ASSERT_TRUE(!s.seq[lq ? x : y].running && !s.seq[z].running);
        dsd_sched_free(&s.sc);
    }
    struct dsd_sched sc;
    struct dsd_sched_limits bad = limits(1, 1, 1, DSD_FAIR_OFF);
    bad.long_queue = -1;
    ASSERT_EQ_INT(dsd_sched_init(&sc, &bad), -EINVAL);
}

/* A parked sequence holds no slot but keeps its pages; another client runs meanwhile. */
TEST(parked_holds_no_slot)
{
    static struct sim s;
    sim_init(&s, limits(4, 2048, 512, DSD_FAIR_UID), 200);
    int a[4];
    for (int i = 0; i < 4; i++)
        a[i] = sim_add(&s, 1, 100, 70, 1000, 0);
    sim_step(&s, NULL);
    sim_step(&s, NULL);
    for (int i = 0; i < 4; i++)
        ASSERT_TRUE(s.seq[a[i]].running);
    int pages_before = sim_used_pages(&s);
    for (int i = 0; i < 4; i++)
        s.seq[a[i]].parked = true;
    int b = sim_add(&s, 2, 200, 10, 1000, 0);
    struct dsd_sched_step st;
    sim_step(&s, &st);
    ASSERT_TRUE(s.seq[b].running);
    ASSERT_EQ_INT(s.seq[b].chunk, 10);
    ASSERT_EQ_INT(st.demoted, 4);
    for (int i = 0; i < 4; i++) {
        ASSERT_TRUE(!s.seq[a[i]].running);
        ASSERT_EQ_INT(s.seq[a[i]].chunk, 0);
        ASSERT_TRUE(!s.seq[a[i]].release);
        ASSERT_EQ_INT(s.seq[a[i]].n_pages, 2);
    }
    ASSERT_EQ_INT(sim_used_pages(&s), pages_before + 1);
    /* unparked, they come back without recomputing (n_computed kept) */
    int computed = s.seq[a[0]].n_computed;
    for (int i = 0; i < 4; i++)
        s.seq[a[i]].parked = false;
    sim_step(&s, &st);
    ASSERT_TRUE(s.seq[a[0]].running);
    ASSERT_EQ_INT(s.seq[a[0]].chunk, 1);
    ASSERT_TRUE(!s.seq[a[0]].release);
    ASSERT_EQ_INT(s.seq[a[0]].n_computed, computed + 1);   /* the step ran its one token */
    dsd_sched_free(&s.sc);
}

/* The fair share moves a slot from a connection holding the whole batch to a newcomer in
 * the very next step. Fails with fairness off (the newcomer waits for a completion). */
static int newcomer_wait(enum dsd_fairness f)
{
    static struct sim s;
    sim_init(&s, limits(8, 2048, 512, f), 1000);
    for (int i = 0; i < 20; i++)
        sim_add(&s, 1, 100, 32, 400, 0);
    for (int i = 0; i < 10; i++)
        sim_step(&s, NULL);
    int b = sim_add(&s, 2, 100, 32, 3, 0);
    int t0 = s.step;
    while (s.first_tok_step[b] < 0 && s.step < t0 + 2000)
        sim_step(&s, NULL);
    dsd_sched_free(&s.sc);
    return s.first_tok_step[b] - t0;
}

TEST(fair_share_newcomer)
{
    ASSERT_EQ_INT(newcomer_wait(DSD_FAIR_UID), 0);
    ASSERT_EQ_INT(newcomer_wait(DSD_FAIR_CONNECTION), 0);
    ASSERT_TRUE(newcomer_wait(DSD_FAIR_OFF) > 100);
}

/* Shares by water filling: small demands are met, the rest split evenly, remainders to the
 * earliest owner; per uid first, then per connection. */
TEST(shares)
{
    struct dsd_sched sc;
    struct dsd_sched_limits l = limits(64, 4096, 512, DSD_FAIR_CONNECTION);
    ASSERT_EQ_INT(dsd_sched_init(&sc, &l), 0);
    static struct dsd_sched_seq q[300];
    struct dsd_sched_seq *v[300];
    int n = 0, share[300];
    uint64_t arr = 0;
    /* conn 1: 100 seqs, conn 2: 3, conn 3: 50 (conn 3 arrived first) */
    for (int i = 0; i < 50; i++)
        q[n] = (struct dsd_sched_seq){ .conn_id = 3, .uid = 7, .arrival = ++arr, .n_tokens = 1 }, v[n] = &q[n], n++;
    for (int i = 0; i < 100; i++)
        q[n] = (struct dsd_sched_seq){ .conn_id = 1, .uid = 7, .arrival = ++arr, .n_tokens = 1 }, v[n] = &q[n], n++;
    for (int i = 0; i < 3; i++)
        q[n] = (struct dsd_sched_seq){ .conn_id = 2, .uid = 8, .arrival = ++arr, .n_tokens = 1 }, v[n] = &q[n], n++;
    ASSERT_EQ_INT(dsd_sched_shares(&sc, v, n, share), 0);
    ASSERT_EQ_INT(share[0], 31);      /* conn 3: (64-3)/2 rounded up, the earliest */
    ASSERT_EQ_INT(share[50], 30);     /* conn 1 */
    ASSERT_EQ_INT(share[150], 3);     /* conn 2: its whole demand */
    /* parked sequences are no demand */
    for (int i = 150; i < 153; i++)
        q[i].parked = true;
    ASSERT_EQ_INT(dsd_sched_shares(&sc, v, n, share), 0);
    ASSERT_EQ_INT(share[0], 32);
    ASSERT_EQ_INT(share[50], 32);
    for (int i = 150; i < 153; i++)
        q[i].parked = false;
    dsd_sched_free(&sc);

    /* per uid: uid 7 has conns 1 and 3 (150 seqs), uid 8 has conn 2 (3 seqs) and conn 4 (40) */
    for (int i = 0; i < 40; i++)
        q[n] = (struct dsd_sched_seq){ .conn_id = 4, .uid = 8, .arrival = ++arr, .n_tokens = 1 }, v[n] = &q[n], n++;
    l.fairness = DSD_FAIR_UID;
    ASSERT_EQ_INT(dsd_sched_init(&sc, &l), 0);
    ASSERT_EQ_INT(dsd_sched_shares(&sc, v, n, share), 0);
    ASSERT_EQ_INT(share[0] + share[50], 32);          /* uid 7 */
    ASSERT_EQ_INT(share[0], 16);
    ASSERT_EQ_INT(share[150], 3);                     /* uid 8: conn 2 its demand ... */
    ASSERT_EQ_INT(share[153], 29);                    /* ... conn 4 the rest of 32 */
    /* per connection instead: 4 connections, conn 2 needs 3, the others (64-3)/3 */
    l.fairness = DSD_FAIR_CONNECTION;
    dsd_sched_free(&sc);
    ASSERT_EQ_INT(dsd_sched_init(&sc, &l), 0);
    ASSERT_EQ_INT(dsd_sched_shares(&sc, v, n, share), 0);
    ASSERT_EQ_INT(share[150], 3);
    ASSERT_EQ_INT(share[0] + share[50] + share[153], 61);
    ASSERT_EQ_INT(share[0], 21);
    ASSERT_EQ_INT(share[50], 20);
    ASSERT_EQ_INT(share[153], 20);
    dsd_sched_free(&sc);
}

/* Two users, one with 5 connections and many requests, one with a single connection: the
 * single user gets half the batch in steady state (fairness per uid); per connection it gets
 * a sixth. */
TEST(uid_share_in_steady_state)
{
    for (int mode = 0; mode < 2; mode++) {
        static struct sim s;
        sim_init(&s, limits(12, 4096, 512, mode == 0 ? DSD_FAIR_UID : DSD_FAIR_CONNECTION), 4000);
        for (int c = 0; c < 5; c++)
            for (int i = 0; i < 10; i++)
                sim_add(&s, (uint64_t)(10 + c), 1, 16, 1000, 0);
        for (int i = 0; i < 20; i++)
            sim_add(&s, 99, 2, 16, 1000, 0);
        for (int i = 0; i < 20; i++)
            sim_step(&s, NULL);
        int uid2 = 0, total = 0;
        for (int i = 0; i < s.n; i++)
            if (s.live[i] && s.seq[i].running) {
                total++;
                uid2 += s.seq[i].uid == 2;
            }
        ASSERT_EQ_INT(total, 12);
        ASSERT_EQ_INT(uid2, mode == 0 ? 6 : 2);
        dsd_sched_free(&s.sc);
    }
}

/* Pages: a running sequence that must grow takes pages from parked waiting ones first,
 * then runnable waiting ones, and only then from a running one not in the step. */
TEST(reclaim_order)
{
    static struct sim s;
    sim_init(&s, limits(4, 2048, 512, DSD_FAIR_OFF), 8);
    int a = sim_add(&s, 1, 1, 64, 100, 0);     /* 1 page, decodes next into page 2 */
    sim_step(&s, NULL);                         /* a prefilled, has 65 tokens, 1 page */
    ASSERT_EQ_INT(s.seq[a].n_pages, 1);
    /* fabricate waiting holders: p parked with 3 pages, w runnable waiting with 4 pages */
    int p = sim_add(&s, 2, 2, 192, 10, 0);
    s.seq[p].n_computed = 192, s.seq[p].n_pages = 3, s.seq[p].parked = true;
    int w = sim_add(&s, 3, 3, 256, 10, 0);
    s.seq[w].n_computed = 255, s.seq[w].n_pages = 4;
    s.seq[w].priority = -1;                     /* not admitted before a's decode */
    /* pool: 8 = 1 + 3 + 4, none free; a needs its 2nd page: p's go first */
    struct dsd_sched_step st;
    sim_step(&s, &st);
    ASSERT_EQ_INT(s.seq[a].chunk, 1);
    ASSERT_TRUE(s.seq[p].release);
    ASSERT_EQ_INT(s.seq[p].n_pages, 0);
    ASSERT_EQ_INT(s.seq[p].n_computed, 0);
    ASSERT_TRUE(!s.seq[w].release);
    dsd_sched_free(&s.sc);
}

/* Alone and out of pages: out_of_kv. With another holder in the step: it yields instead. */
TEST(out_of_kv_and_yield)
{
    static struct sim s;
    sim_init(&s, limits(4, 2048, 512, DSD_FAIR_OFF), 1);
    int a = sim_add(&s, 1, 1, 64, 100, 0);
    sim_step(&s, NULL);
    struct dsd_sched_step st;
    sim_step(&s, &st);
    ASSERT_TRUE(s.seq[a].out_of_kv);
    ASSERT_EQ_INT(st.out_of_kv, 1);
    dsd_sched_free(&s.sc);

    sim_init(&s, limits(4, 2048, 512, DSD_FAIR_OFF), 3);
    int x = sim_add(&s, 1, 1, 64, 100, 0);
    int y = sim_add(&s, 1, 1, 64, 100, 0);
    sim_step(&s, NULL);                         /* both prefilled: 2 pages used, 1 free */
    sim_step(&s, &st);                          /* both need a second page: x gets it */
    ASSERT_EQ_INT(s.seq[x].chunk, 1);
    ASSERT_TRUE(s.seq[y].release);
    ASSERT_TRUE(!s.seq[y].out_of_kv);
    ASSERT_TRUE(!s.seq[y].running);
    /* y comes back once x is done, recomputing its tokens */
    while (s.live[x])
        sim_step(&s, NULL);
    while (s.live[y] && s.step < 1000)
        sim_step(&s, NULL);
    ASSERT_TRUE(!s.live[y]);
    ASSERT_EQ_INT(s.ended_out_of_kv, 0);
    dsd_sched_free(&s.sc);
}

/* The case, simulated: one connection with more requests than max_batch whose
 * requests park (it stops reading) after a while; another connection's request must get its
 * first token within a few steps, and all requests end (none starves, nothing leaks). */
TEST(non_reader_cannot_block)
{
    static struct sim s;
    sim_init(&s, limits(16, 2048, 512, DSD_FAIR_UID), 600);
    for (int i = 0; i < 64; i++)
        sim_add(&s, 1, 1000, 40, 300, 0);
    for (int i = 0; i < 30; i++)
        sim_step(&s, NULL);
    for (int i = 0; i < s.n; i++)
        s.seq[i].parked = true;                 /* the non-reader's output backs up */
    int b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = sim_add(&s, 2, 1001, 100, 20, 0);
        sim_step(&s, NULL);
    }
    while ((s.live[b[0]] || s.live[b[7]]) && s.step < 2000)
        sim_step(&s, NULL);
    for (int i = 0; i < 8; i++) {
        ASSERT_TRUE(s.first_tok_step[b[i]] >= 0);
        ASSERT_TRUE(s.first_tok_step[b[i]] - s.arrive_step[b[i]] <= 1);
        ASSERT_TRUE(!s.live[b[i]]);
    }
    /* the non-reader reads again: everything completes */
    for (int i = 0; i < 64; i++)
        s.seq[i].parked = false;
    while (sim_live(&s) > 0 && s.step < 100000)
        sim_step(&s, NULL);
    ASSERT_EQ_INT(sim_live(&s), 0);
    ASSERT_EQ_INT(s.finished, 72);
    ASSERT_EQ_INT(s.ended_out_of_kv, 0);
    ASSERT_EQ_INT(sim_used_pages(&s), 0);
    dsd_sched_free(&s.sc);
}

/* Random load: arrivals from several uids and connections, random parking, a small pool.
 * Every step's accounting is checked in sim_step; at the end everything finished, and no
 * request of an owner below its share waited longer than the bound while pages were free. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

TEST(random_load)
{
    for (int f = 0; f < 3; f++) {
        static struct sim s;
        sim_init(&s, limits(1 + (int)rnd(24), 64 + (int)rnd(2000), 1 + (int)rnd(600), (enum dsd_fairness)f),
                 40 + (int)rnd(200));
        for (int step = 0; step < 3000; step++) {
            if (s.n < MAXS - 4 && rnd(3) == 0) {
                int prompt = 1 + (int)rnd(700);
                if (dsd_sched_pages_for(prompt + 1, 64) <= s.total_pages / 2)
                    sim_add(&s, 1 + rnd(6), rnd(3), prompt, 1 + (int)rnd(80), (int)rnd(3) - 1);
            }
            for (int i = 0; i < s.n; i++)
                if (s.live[i] && rnd(50) == 0)
                    s.seq[i].parked = !s.seq[i].parked;
            sim_step(&s, NULL);
        }
        for (int i = 0; i < s.n; i++)
            s.seq[i].parked = false;
        while (sim_live(&s) > 0 && s.step < 200000)
            sim_step(&s, NULL);
        ASSERT_EQ_INT(sim_live(&s), 0);
        ASSERT_EQ_INT(sim_used_pages(&s), 0);
        ASSERT_EQ_INT(s.ended_out_of_kv, 0);
        ASSERT_TRUE(s.max_running_seen <= s.sc.lim.max_batch);
        dsd_sched_free(&s.sc);
    }
}

int main(void)
{
    RUN(bad_input);
    RUN(pages_for);
    RUN(admission_and_chunks);
    RUN(decode_chunk_carries_drafts);
    RUN(admission_prefers_cached_prefix_when_the_queue_is_long);
    RUN(parked_holds_no_slot);
    RUN(fair_share_newcomer);
    RUN(shares);
    RUN(uid_share_in_steady_state);
    RUN(reclaim_order);
    RUN(out_of_kv_and_yield);
    RUN(non_reader_cannot_block);
    RUN(random_load);
    return test_report();
}
