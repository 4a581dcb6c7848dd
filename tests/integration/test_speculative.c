/*
 * Speculative decoding in the real daemon (docs/SPECULATIVE.md), through raw frames, against
 * the in-process engine:
 *   test_speculative DEEPSEEKD MODEL_DIR TOKENIZER_MODEL_DIR
 *  - greedy output with speculative_tokens = 1, 2, 3 is bitwise plain greedy decoding, for
 *    several prompts alone and for 16 concurrent requests of mixed prompt and output lengths
 *    (prompts prefilled in chunks of 16 tokens in the same steps as other requests' verifies),
 *    logprobs included (k = 3), and under preemption (a KV pool too small for the batch);
 *  - test_spec_force = reject (nothing accepted: every draft's KV rolled back) is exact too;
 *  - test_spec_force = accept (everything accepted): each step emits k + 1 tokens, and every
 *    step's last token is the model's own greedy pick after the accepted drafts (the KV the
 *    verify wrote for them is right), and every step's first draft is the pick of the MTP layer
 *    run plainly over the whole sequence (its own KV is consistent); a stop token or a stop
 *    string (the tiny checkpoint with the real tokenizer) completed by a draft in the middle
 *    of a round ends the request at that token;
 *  - sampling (temperature 1, no truncation): seeded requests reproduce, and the second token
 *    (the first one verified) follows the model's distribution: the randomized probability
 *    integral transform of 320 draws (64 in sanitizer builds) against the exact
 *    distribution, chi-square over 10 bins;
 *  - cancel mid-stream frees every page; the spec_* stats count drafts and acceptances.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "engine_harness.h"
#include "model.h"
#include "sample.h"
#include "sampling.h"
#include "test.h"
#include "tokenizer.h"

/* Sanitizer builds run the same tests on fewer and shorter requests (the model's arithmetic
 * is several times slower there). */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_LIGHT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_LIGHT 1
#endif
#endif
#ifndef TEST_LIGHT
#define TEST_LIGHT 0
#endif

static const char *g_bin, *g_model, *g_tok_model;
static struct daemon g_d;
static struct dsd_model *g_m;
static int g_k;

static void make_prompt(uint32_t *p, int n, int seed)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint32_t)((seed * 7919 + i * 104729 + 17) % (g_m->cfg.vocab_size - 2) + 2);
}

static int start(int k, const char *force, const char *kv_pages)
{
    char ks[8];
    snprintf(ks, sizeof ks, "%d", k);
    /* prompts prefill in chunks of 16 over several steps, beside other requests' verifies */
    const char *extra[16] = { "--threads", "2", "--max_inflight", "128", "--speculative-tokens", ks,
                              "--test-spec-force", force, "--prefill_chunk", "16" };
    int n = 10;
    if (kv_pages) {
        extra[n++] = "--kv-pages";
        extra[n++] = kv_pages;
    } else {
        extra[n++] = "--kv_memory_mb";
        extra[n++] = "64";
    }
    extra[n] = NULL;
    g_k = k;
    return daemon_start(&g_d, g_bin, g_model, extra, 120);
}

static void stop(void)
{
    if (test_failures_total)
        daemon_print_log(&g_d);
    ASSERT_EQ_INT(daemon_stop(&g_d), 0);
}

/* Plain greedy tokens of the in-process engine, computed once per (prompt seed, length). */
static const uint32_t *reference(int seed, int np, int nt)
{
    static struct { int seed, np, nt; uint32_t *tok; } cache[64];
    static int n_cache;
    for (int i = 0; i < n_cache; i++)
        if (cache[i].seed == seed && cache[i].np == np && cache[i].nt >= nt)
            return cache[i].tok;
    uint32_t *prompt = malloc((size_t)np * sizeof *prompt), *tok = malloc((size_t)nt * sizeof *tok);
    make_prompt(prompt, np, seed);
    harness_greedy(g_m, (const int32_t *)prompt, np, nt, (int32_t *)tok);
    free(prompt);
    if (n_cache == 64)
        return tok;     /* never freed: a test-sized leak only past 64 entries */
    cache[n_cache].seed = seed;
    cache[n_cache].np = np;
    cache[n_cache].nt = nt;
    cache[n_cache].tok = tok;
    return cache[n_cache++].tok;
}

/* Sends n greedy requests at once (one connection each) and checks each against the
 * in-process engine's plain greedy tokens. Returns how many matched exactly. */
static int greedy_batch(int n, const int *np, const int *nt, int seed0)
{
    int fds[n], exact = 0;
    uint32_t *prompts[n];
    for (int i = 0; i < n; i++) {
        prompts[i] = malloc((size_t)np[i] * sizeof(uint32_t));
        make_prompt(prompts[i], np[i], seed0 + i);
        fds[i] = raw_connect(&g_d);
        struct dsd_ipc_msg m = raw_generate_msg(100 + (uint64_t)i, prompts[i], np[i], nt[i]);
        ASSERT_TRUE(fds[i] >= 0 && raw_send(fds[i], &m) == 0);
    }
    for (int i = 0; i < n; i++) {
        const uint32_t *want = reference(seed0 + i, np[i], nt[i]);
        uint32_t *got = malloc((size_t)(nt[i] + 8) * sizeof *got);
        int ng = 0;
        struct dsd_ipc_msg done;
        if (raw_wait_done(fds[i], 100 + (uint64_t)i, &done, got, &ng, nt[i] + 8, 120000) == DSD_IPC_DONE) {
            bool ok = ng == nt[i] && memcmp(got, want, (size_t)nt[i] * sizeof *got) == 0;
            if (!ok) {
                int d = 0;
                while (d < ng && d < nt[i] && got[d] == want[d])
                    d++;
                fprintf(stderr, "  request %d (prompt %d, %d tokens): %d tokens, first difference at %d\n", i, np[i],
                        nt[i], ng, d);
            }
            exact += ok;
            dsd_ipc_msg_free(&done);
        }
        close(fds[i]);
        free(got);
        free(prompts[i]);
    }
    return exact;
}

TEST(greedy_alone_is_plain_greedy)
{
    /* prompt lengths around the 64-token page and the indexer's top-k (24): sparse attention */
    const int np[4] = { 5, 61, 23, 100 }, nt[4] = { 32, 32, 32, 32 }, n_prompts = TEST_LIGHT ? 2 : 4;
    int fd = raw_connect(&g_d);
    int64_t d0 = raw_stat(fd, "spec_draft_tokens_total"), s0 = raw_stat(fd, "spec_steps_total");
    int exact = 0;
    for (int i = 0; i < n_prompts; i++)
        exact += greedy_batch(1, &np[i], &nt[i], 10 + i);
    printf("  k = %d: %d/%d prompts alone exactly plain greedy\n", g_k, exact, n_prompts);
    ASSERT_EQ_INT(exact, n_prompts);
    /* it did speculate: every verify step carried drafts */
    int64_t drafts = raw_stat(fd, "spec_draft_tokens_total") - d0, steps = raw_stat(fd, "spec_steps_total") - s0;
    printf("  %lld verify steps, %lld drafts, %lld accepted\n", (long long)steps, (long long)drafts,
           (long long)raw_stat(fd, "spec_accepted_tokens_total"));
    ASSERT_TRUE(steps > 0 && drafts >= steps);
    close(fd);
}

TEST(greedy_batch_of_16_mixed_lengths)
{
    int np[16], nt[16];
    for (int i = 0; i < 16; i++) {
        np[i] = 3 + (i * 37) % (TEST_LIGHT ? 60 : 120);
        nt[i] = TEST_LIGHT ? 4 + (i * 5) % 12 : 8 + (i * 13) % 40;
    }
    int exact = greedy_batch(16, np, nt, 200);
    printf("  k = %d: %d/16 concurrent requests exactly plain greedy\n", g_k, exact);
    ASSERT_EQ_INT(exact, 16);
    int fd = raw_connect(&g_d);
    ASSERT_EQ_INT(raw_stat(fd, "kv_pages_used"), 0);
    close(fd);
}

/* Logprobs of a greedy request: the same with speculation as the daemon computes them plain
 * (the first ones, before any verify, come from the plain path and are the reference). */
struct lp_run {
    uint32_t ids[64];
    float lp[64], top[64][3];
    uint32_t top_ids[64][3];
    int n;
};

static void run_logprobs(uint32_t *prompt, int np, int nt, struct lp_run *r)
{
    int fd = raw_connect(&g_d);
    struct dsd_ipc_msg m = raw_generate_msg(77, prompt, np, nt);
    m.generate.sampling.logprobs = true;
    m.generate.sampling.top_logprobs = 3;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    memset(r, 0, sizeof *r);
    struct dsd_ipc_msg f;
    for (;;) {
        if (raw_recv(fd, &f, 60000) != 0)
            break;
        bool done = f.type == DSD_IPC_DONE || f.type == DSD_IPC_ERROR;
        if (f.type == DSD_IPC_TOKENS)
            for (uint32_t i = 0; i < f.tokens.n_logprobs && r->n < 64; i++, r->n++) {
                const struct dsd_ipc_logprob *l = &f.tokens.logprobs[i];
                r->ids[r->n] = l->token;
                r->lp[r->n] = (float)l->logprob;
                for (uint32_t t = 0; t < 3 && t < l->n_top; t++) {
                    r->top_ids[r->n][t] = l->top[t].token;
                    r->top[r->n][t] = (float)l->top[t].logprob;
                }
            }
        dsd_ipc_msg_free(&f);
        if (done)
            break;
    }
    close(fd);
}

static struct lp_run g_lp_plain;

TEST(logprobs_are_the_plain_ones)
{
    uint32_t prompt[30];
    make_prompt(prompt, 30, 5);
    struct lp_run r;
    run_logprobs(prompt, 30, 24, &r);
    ASSERT_EQ_INT(r.n, 24);
    ASSERT_EQ_INT(g_lp_plain.n, 24);
    ASSERT_TRUE(memcmp(&r, &g_lp_plain, sizeof r) == 0);
}

TEST(cancel_mid_stream_frees_everything)
{
    uint32_t prompt[16];
    make_prompt(prompt, 16, 3);
    int fd = raw_connect(&g_d);
    ASSERT_EQ_INT(raw_cancel_mid_stream(fd, 5, prompt, 16), DSD_IPC_FINISH_CANCELLED);
    ASSERT_EQ_INT(raw_stat(fd, "kv_pages_used"), 0);
    close(fd);
}

/* ---- sampling ---- */

static int sampled(int fd, uint64_t id, const uint32_t *prompt, int np, int nt, uint64_t seed, uint32_t *got)
{
    struct dsd_ipc_msg m = raw_generate_msg(id, prompt, np, nt), done;
    m.generate.sampling.temperature = 1.0;
    m.generate.sampling.has_seed = true;
    m.generate.sampling.seed = seed;
    if (raw_send(fd, &m))
        return -1;
    int n = 0;
    if (raw_wait_done(fd, id, &done, got, &n, nt + 8, 60000) != DSD_IPC_DONE)
        return -1;
    dsd_ipc_msg_free(&done);
    return n;
}

TEST(sampling_reproduces_and_keeps_the_distribution)
{
    enum { NP = 12, DRAWS = TEST_LIGHT ? 64 : 320, CONC = 32, BINS = 10 };
    uint32_t prompt[NP];
    make_prompt(prompt, NP, 9);
    int fd = raw_connect(&g_d);
    int64_t a0 = raw_stat(fd, "spec_accepted_tokens_total"), d0 = raw_stat(fd, "spec_draft_tokens_total");
    /* the same seed twice: the same tokens; another seed: others */
    uint32_t x[24], y[24];
    ASSERT_EQ_INT(sampled(fd, 1, prompt, NP, 16, 4242, x), 16);
    ASSERT_EQ_INT(sampled(fd, 2, prompt, NP, 16, 4242, y), 16);
    ASSERT_TRUE(memcmp(x, y, 16 * sizeof x[0]) == 0);
    ASSERT_EQ_INT(sampled(fd, 3, prompt, NP, 16, 4243, y), 16);
    ASSERT_TRUE(memcmp(x, y, 16 * sizeof x[0]) != 0);
    /* DRAWS requests of 3 tokens, CONC at a time: token 1 comes from the prefill, token 2 from
     * the first verify (one draft: max_tokens leaves room for one) */
    static uint32_t t1[DRAWS], t2[DRAWS];
    int fds[CONC];
    for (int i = 0; i < CONC; i++)
        fds[i] = raw_connect(&g_d);
    for (int base = 0; base < DRAWS; base += CONC) {
        for (int i = 0; i < CONC && base + i < DRAWS; i++) {
            struct dsd_ipc_msg m = raw_generate_msg(1000 + (uint64_t)(base + i), prompt, NP, 3);
            m.generate.sampling.temperature = 1.0;
            m.generate.sampling.has_seed = true;
            m.generate.sampling.seed = 1000003ull * (uint64_t)(base + i) + 1;
            ASSERT_EQ_INT(raw_send(fds[i], &m), 0);
        }
        for (int i = 0; i < CONC && base + i < DRAWS; i++) {
            uint32_t got[8];
            int n = 0;
            struct dsd_ipc_msg done;
            ASSERT_EQ_INT(raw_wait_done(fds[i], 1000 + (uint64_t)(base + i), &done, got, &n, 8, 60000), DSD_IPC_DONE);
            dsd_ipc_msg_free(&done);
            ASSERT_EQ_INT(n, 3);
            t1[base + i] = got[0];
            t2[base + i] = got[1];
        }
    }
    for (int i = 0; i < CONC; i++)
        close(fds[i]);
    int64_t drafts = raw_stat(fd, "spec_draft_tokens_total") - d0, acc = raw_stat(fd, "spec_accepted_tokens_total") - a0;
    printf("  sampled: %lld drafts, %lld accepted\n", (long long)drafts, (long long)acc);
    ASSERT_TRUE(drafts >= DRAWS);
    ASSERT_TRUE(acc > 0);                   /* both the accept and the reject path ran */
    ASSERT_TRUE(acc < drafts);
    close(fd);
    /* the exact distribution of token 2 given token 1: the model over prompt + t1, the
     * request's transforms (temperature 1) */
    const int64_t V = g_m->cfg.vocab_size;
    float *dist = malloc((size_t)V * sizeof *dist);
    void *scratch = malloc(dsd_sample_scratch_bytes(V));
    struct dsd_sample_row row = { .temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f, .pen_slot = -1,
                                  .n_top = -1 };
    int bins[BINS] = {0};
    /* the prompt once, then each draw's t1 at position NP (rewritten every time) */
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(g_m, 2, &err);
    struct dsd_kv_seq seq = {0};
    ASSERT_TRUE(kv && dsd_kv_seq_reserve(kv, &seq, NP + 1) == 0);
    int32_t ids[NP + 1];
    memcpy(ids, prompt, sizeof prompt);
    struct dsd_batch_seq pb = { .tokens = ids, .n_tokens = NP, .kv = &seq, .no_logits = true };
    struct dsd_forward_out po = {0};
    ASSERT_EQ_INT(dsd_model_forward(g_m, kv, &pb, 1, &po, &err), 0);
    float *logits = malloc((size_t)V * sizeof *logits);
    for (int i = 0; i < DRAWS; i++) {
        ids[NP] = (int32_t)t1[i];
        struct dsd_batch_seq b = { .tokens = ids + NP, .n_tokens = 1, .pos0 = NP, .kv = &seq };
        struct dsd_forward_out o = { .logits = logits };
        ASSERT_EQ_INT(dsd_model_forward(g_m, kv, &b, 1, &o, &err), 0);
        dsd_sample_dist_ref(logits, V, &row, NULL, scratch, dist);
        /* randomized PIT: F(t2 - 1) + v * p(t2) is uniform on [0, 1) when t2 ~ dist */
        double below = 0;
        for (int64_t v = 0; v < (int64_t)t2[i]; v++)
            below += dist[v];
        double v = (double)((i * 2654435761u) % 1000003u) / 1000003.0;
        double u = below + v * dist[t2[i]];
        int bin = (int)(u * BINS);
        bins[bin < 0 ? 0 : bin >= BINS ? BINS - 1 : bin]++;
    }
    double chi2 = 0, e = (double)DRAWS / BINS;
    for (int b = 0; b < BINS; b++)
        chi2 += (bins[b] - e) * (bins[b] - e) / e;
    /* df 9: P(chi2 > 33.7) = 1e-4 */
    printf("  PIT of the first verified token over %d draws: chi2 %.1f (df 9, critical 33.7)\n", DRAWS, chi2);
    ASSERT_TRUE(chi2 < 33.7);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    free(logits);
    free(dist);
    free(scratch);
}

/* ---- forced ends ---- */

TEST(forced_reject_is_exact)
{
    const int np[3] = { 7, 40, 90 }, nt[3] = { 30, 30, 30 };
    int fd = raw_connect(&g_d);
    int64_t d0 = raw_stat(fd, "spec_draft_tokens_total");
    ASSERT_EQ_INT(greedy_batch(3, np, nt, 300), 3);
    ASSERT_TRUE(raw_stat(fd, "spec_draft_tokens_total") - d0 > 3 * 20);
    ASSERT_EQ_INT(raw_stat(fd, "spec_accepted_tokens_total"), 0);
    ASSERT_EQ_INT(raw_stat(fd, "kv_pages_used"), 0);
    close(fd);
}

TEST(forced_accept_emits_whole_runs_with_the_right_bonus)
{
    enum { NP = 10, R = 10 };
    const int nt = 1 + (g_k + 1) * R;   /* the prefill's token, then R full verify steps */
    uint32_t prompt[NP], got[64];
    make_prompt(prompt, NP, 21);
    int fd = raw_connect(&g_d);
    int64_t s0 = raw_stat(fd, "spec_steps_total"), d0 = raw_stat(fd, "spec_draft_tokens_total");
    int64_t a0 = raw_stat(fd, "spec_accepted_tokens_total");
    struct dsd_ipc_msg m = raw_generate_msg(9, prompt, NP, nt), done;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    int n = 0;
    ASSERT_EQ_INT(raw_wait_done(fd, 9, &done, got, &n, 64, 60000), DSD_IPC_DONE);
    dsd_ipc_msg_free(&done);
    ASSERT_EQ_INT(n, nt);
    ASSERT_EQ_INT(raw_stat(fd, "spec_steps_total") - s0, R);
    ASSERT_EQ_INT(raw_stat(fd, "spec_draft_tokens_total") - d0, g_k * R);
    ASSERT_EQ_INT(raw_stat(fd, "spec_accepted_tokens_total") - a0, g_k * R);
    /* every step's last token (output index (k+1) r) is the model's greedy pick after all the
     * tokens before it, drafts included: teacher-forced over the whole output at once */
    int32_t ids[NP + 64];
    for (int i = 0; i < NP; i++)
        ids[i] = (int32_t)prompt[i];
    for (int i = 0; i < n; i++)
        ids[NP + i] = (int32_t)got[i];
    struct prompt_run r;
    ASSERT_EQ_INT(harness_run(g_m, ids, NP + n, NP + n, &r), 0);
    int right = 0, plain_elsewhere = 0;
    for (int i = 0; i < n; i++) {
        bool pick = dsd_argmax(r.logits + (size_t)(NP - 1 + i) * r.vocab, r.vocab) == (int32_t)got[i];
        if (i % (g_k + 1) == 0)
            right += pick;
        else
            plain_elsewhere += pick;
    }
    /* every step's first draft (output index (k+1) r + 1) is the MTP layer's greedy pick at
     * the position before it, computed over the whole committed sequence at once: the MTP
     * layer's own KV at the committed positions is what plain MTP holds (docs/SPECULATIVE.md §3) */
    const int N = NP + n;
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(g_m, N / DSD_KV_PAGE_TOKENS + 2, &err);
    struct dsd_kv_seq seq = {0};
    ASSERT_TRUE(kv && dsd_kv_seq_reserve(kv, &seq, N) == 0);
    float *mtp = malloc((size_t)(N - 1) * (size_t)r.vocab * sizeof *mtp);
    struct dsd_batch_seq b = { .tokens = ids + 1, .n_tokens = N - 1, .pos0 = 0, .kv = &seq, .logits_all = true };
    struct dsd_forward_out o = { .logits = mtp };
    ASSERT_EQ_INT(dsd_model_forward_mtp(g_m, kv, &b, 1, r.hidden, &o, &err), 0);
    int mtp_right = 0;
    for (int j = 1; j < n; j += g_k + 1)
        mtp_right += dsd_argmax(mtp + (size_t)(NP + j - 2) * r.vocab, r.vocab) == (int32_t)got[j];
    free(mtp);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    harness_free_run(&r);
    printf("  k = %d forced accept: %d/%d step-final tokens are the model's pick, %d/%d first drafts the plain MTP's "
           "(other drafts the model's pick: %d/%d)\n", g_k, right, R + 1, mtp_right, R, plain_elsewhere, n - R - 1);
    ASSERT_EQ_INT(right, R + 1);
    ASSERT_EQ_INT(mtp_right, R);
    /* random weights: the MTP drafts are not what the model would say */
    ASSERT_TRUE(plain_elsewhere < (n - R - 1) / 2);

    /* a stop token on a draft position ends the request at that token */
    int idx = -1;
    for (int i = g_k + 2; i < n && idx < 0; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen |= got[j] == got[i];
        if (i % (g_k + 1) != 0 && !seen)
            idx = i;
    }
    ASSERT_TRUE(idx > 0);
    uint32_t stop_id = got[idx], got2[64];
    m = raw_generate_msg(10, prompt, NP, nt);
    m.generate.sampling.n_stop_ids = 1;
    m.generate.sampling.stop_ids = &stop_id;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    n = 0;
    ASSERT_EQ_INT(raw_wait_done(fd, 10, &done, got2, &n, 64, 60000), DSD_IPC_DONE);
    ASSERT_EQ_INT(done.done.finish, DSD_IPC_FINISH_STOP);
    ASSERT_TRUE(done.done.has_stop_token && done.done.stop_token == stop_id);
    ASSERT_EQ_INT(done.done.usage.completion, idx + 1);
    dsd_ipc_msg_free(&done);
    ASSERT_EQ_INT(n, idx);
    ASSERT_TRUE(memcmp(got2, got, (size_t)idx * sizeof got[0]) == 0);
    ASSERT_EQ_INT(raw_stat(fd, "kv_pages_used"), 0);
    close(fd);
}

/* Text output (the tiny checkpoint with the real tokenizer, forced acceptance): a stop string
 * that a draft in the middle of a round completes ends the request at that token; the text
 * delivered is everything before the stop string. */
struct text_run {
    uint32_t ids[64];
    int n;
    char text[4096];
    size_t len;
    struct dsd_ipc_msg done;
};

static int text_request(int fd, uint64_t id, const uint32_t *prompt, int np, int nt, const char *stop,
                        struct text_run *r)
{
    struct dsd_ipc_msg m = raw_generate_msg(id, prompt, np, nt);
    m.generate.detokenize = true;
    struct dsd_ipc_str st = dsd_ipc_s(stop ? stop : "");
    if (stop) {
        m.generate.sampling.n_stop = 1;
        m.generate.sampling.stop = &st;
    }
    memset(r, 0, sizeof *r);
    if (raw_send(fd, &m))
        return -1;
    for (;;) {
        struct dsd_ipc_msg f;
        if (raw_recv(fd, &f, 60000))
            return -1;
        if (f.type == DSD_IPC_TOKENS && f.id == id) {
            for (uint32_t i = 0; i < f.tokens.n_ids && r->n < 64; i++)
                r->ids[r->n++] = f.tokens.ids[i];
            if (f.tokens.text.ptr && r->len + f.tokens.text.len < sizeof r->text) {
                memcpy(r->text + r->len, f.tokens.text.ptr, f.tokens.text.len);
                r->len += f.tokens.text.len;
            }
        }
        if ((f.type == DSD_IPC_DONE || f.type == DSD_IPC_ERROR) && f.id == id) {
            int t = f.type;
            r->done = f;
            return t;
        }
        dsd_ipc_msg_free(&f);
    }
}

TEST(stop_string_inside_an_accepted_run)
{
    struct dsd_tokenizer *tok;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_tokenizer_load(&tok, g_tok_model, &err), 0);
    enum { NP = 10 };
    const int nt = 1 + (g_k + 1) * 10;
    uint32_t prompt[NP];
    make_prompt(prompt, NP, 31);
    int fd = raw_connect(&g_d);
    static struct text_run a, b;
    ASSERT_EQ_INT(text_request(fd, 1, prompt, NP, nt, NULL, &a), DSD_IPC_DONE);
    dsd_ipc_msg_free(&a.done);
    ASSERT_EQ_INT(a.n, nt);
    a.text[a.len] = 0;
    /* a draft position (not a round's last token) whose text is new: the stop string */
    int idx = -1;
    size_t plen = 0;
    char stop[8] = "";
    for (int i = g_k + 2; i < a.n && idx < 0; i++) {
        if (i % (g_k + 1) == 0)
            continue;
        struct dsd_tok_text p = {0}, f = {0};
        dsd_tokenizer_decode(tok, (const int32_t *)a.ids, (size_t)i, DSD_TOK_LOSSY | DSD_TOK_SKIP_SPECIAL, &p, &err);
        dsd_tokenizer_decode(tok, (const int32_t *)a.ids, (size_t)i + 1, DSD_TOK_LOSSY | DSD_TOK_SKIP_SPECIAL, &f, &err);
        if (f.len >= p.len + 2 && p.len < a.len && memcmp(f.data, p.data, p.len) == 0 &&
            memcmp(a.text, p.data, p.len) == 0 && (f.data[p.len] & 0xc0) != 0x80) {
            size_t sl = f.len - p.len < 5 ? f.len - p.len : 5;
            while (sl > 1 && p.len + sl < f.len && (f.data[p.len + sl] & 0xc0) == 0x80)
                sl--;           /* end at a character boundary */
            memcpy(stop, f.data + p.len, sl);
            stop[sl] = 0;
            const char *first = strstr(a.text, stop);
            if (strlen(stop) == sl && first == a.text + p.len) {
                idx = i;
                plen = p.len;
            }
        }
        dsd_tok_text_free(&p);
        dsd_tok_text_free(&f);
    }
    printf("  stop string \"%s\" completed by output token %d (a draft of verify round %d)\n", stop, idx,
           idx > 0 ? (idx - 1) / (g_k + 1) + 1 : 0);
    ASSERT_TRUE(idx > 0);
    if (idx > 0) {
        ASSERT_EQ_INT(text_request(fd, 2, prompt, NP, nt, stop, &b), DSD_IPC_DONE);
        ASSERT_EQ_INT(b.done.done.finish, DSD_IPC_FINISH_STOP_STRING);
        ASSERT_EQ_INT(b.n, idx + 1);
        ASSERT_TRUE(memcmp(b.ids, a.ids, (size_t)(idx + 1) * sizeof a.ids[0]) == 0);
        ASSERT_TRUE(b.len == plen && memcmp(b.text, a.text, plen) == 0);
        dsd_ipc_msg_free(&b.done);
    }
    ASSERT_EQ_INT(raw_stat(fd, "kv_pages_used"), 0);
    close(fd);
    dsd_tokenizer_free(tok);
}

TEST(preemption_keeps_greedy_exact)
{
    /* 8 requests of 20..41 + 50 tokens in a pool of 6 pages (384 tokens): they cannot all hold
     * their pages, so some are preempted and resume (recomputing or from the prefix cache) */
    int np[8], nt[8];
    for (int i = 0; i < 8; i++) {
        np[i] = 20 + i * 3;
        nt[i] = 50;
    }
    int fd = raw_connect(&g_d);
    int64_t p0 = raw_stat(fd, "preemptions_total");
    ASSERT_EQ_INT(greedy_batch(8, np, nt, 400), 8);
    int64_t pre = raw_stat(fd, "preemptions_total") - p0;
    printf("  %lld preemptions\n", (long long)pre);
    ASSERT_TRUE(pre > 0);
    ASSERT_EQ_INT(raw_stat(fd, "kv_pages_used"), 0);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_speculative DEEPSEEKD MODEL_DIR TOKENIZER_MODEL_DIR\n");
        return 2;
    }
    g_bin = argv[1];
    g_model = argv[2];
    g_tok_model = argv[3];
    if (!(g_m = harness_load(g_model, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 1)))
        return 1;
    uint32_t lp_prompt[30];
    make_prompt(lp_prompt, 30, 5);
    /* the plain daemon's logprobs: the reference of logprobs_are_the_plain_ones */
    if (start(0, "none", NULL))
        return 1;
    run_logprobs(lp_prompt, 30, 24, &g_lp_plain);
    stop();
    for (int k = 1; k <= 3; k++) {
        if (start(k, "none", NULL))
            return 1;
        RUN(greedy_alone_is_plain_greedy);
        RUN(greedy_batch_of_16_mixed_lengths);
        if (k == 3) {
            RUN(logprobs_are_the_plain_ones);
            RUN(cancel_mid_stream_frees_everything);
            RUN(sampling_reproduces_and_keeps_the_distribution);
        }
        stop();
    }
    if (start(3, "reject", NULL))
        return 1;
    RUN(forced_reject_is_exact);
    stop();
    for (int k = 1; k <= 3; k += 2) {
        if (start(k, "accept", NULL))
            return 1;
        RUN(forced_accept_emits_whole_runs_with_the_right_bonus);
        stop();
    }
    if (start(2, "none", "6"))
        return 1;
    RUN(preemption_keeps_greedy_exact);
    stop();
    /* the same random weights with the real tokenizer: text output */
    const char *model = g_model;
    g_model = g_tok_model;
    if (start(3, "accept", NULL))
        return 1;
    RUN(stop_string_inside_an_accepted_run);
    stop();
    g_model = model;
    dsd_model_free(g_m);
    return test_report();
}
