/*
 * Speculative decoding's acceptance rule (daemon/serve/speculative.h) on its own: greedy
 * matching and the forced ends, the counter-based uniforms, and the proof that rejection
 * sampling keeps the target's distribution: a small Markov-chain "model" (target P and a
 * different draft Q, both the sampler's transformed distributions of random logits,
 * kernels/sample.h) generates three-token continuations speculatively with k = 1, 2, 3 over
 * many seeds, and a chi-square test compares their joint distribution with the exact one of
 * plain sampling. The same test must reject forced acceptance (the test has power).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sample.h"
#include "speculative.h"
#include "test.h"

TEST(greedy_matching_prefix_then_target)
{
    const int32_t draft[3] = { 5, 7, 9 };
    int32_t out[4];
    int a;
    const int32_t t1[4] = { 5, 7, 2, 4 };   /* third draft wrong */
    ASSERT_EQ_INT(dsd_spec_verify_greedy(draft, 3, t1, DSD_SPEC_FORCE_NONE, out, &a), 3);
    ASSERT_EQ_INT(a, 2);
    ASSERT_EQ_INT(out[0], 5);
    ASSERT_EQ_INT(out[1], 7);
    ASSERT_EQ_INT(out[2], 2);
    const int32_t t2[4] = { 5, 7, 9, 11 };  /* all right: the bonus token too */
    ASSERT_EQ_INT(dsd_spec_verify_greedy(draft, 3, t2, DSD_SPEC_FORCE_NONE, out, &a), 4);
    ASSERT_EQ_INT(a, 3);
    ASSERT_EQ_INT(out[3], 11);
    const int32_t t3[4] = { 6, 7, 9, 11 };  /* first wrong: later matches do not count */
    ASSERT_EQ_INT(dsd_spec_verify_greedy(draft, 3, t3, DSD_SPEC_FORCE_NONE, out, &a), 1);
    ASSERT_EQ_INT(a, 0);
    ASSERT_EQ_INT(out[0], 6);
    /* forced ends */
    ASSERT_EQ_INT(dsd_spec_verify_greedy(draft, 3, t3, DSD_SPEC_FORCE_ACCEPT, out, &a), 4);
    ASSERT_EQ_INT(a, 3);
    ASSERT_EQ_INT(out[0], 5);
    ASSERT_EQ_INT(out[3], 11);
    ASSERT_EQ_INT(dsd_spec_verify_greedy(draft, 3, t2, DSD_SPEC_FORCE_REJECT, out, &a), 1);
    ASSERT_EQ_INT(a, 0);
    ASSERT_EQ_INT(out[0], 5);
    /* no drafts: the target's token */
    ASSERT_EQ_INT(dsd_spec_verify_greedy(draft, 0, t1, DSD_SPEC_FORCE_NONE, out, &a), 1);
    ASSERT_EQ_INT(out[0], 5);
}

TEST(uniform_counter_based)
{
    /* a pure function of its arguments, in [0, 1), different per argument */
    ASSERT_TRUE(dsd_spec_uniform(42, 100, DSD_SPEC_DRAW_ACCEPT) == dsd_spec_uniform(42, 100, DSD_SPEC_DRAW_ACCEPT));
    ASSERT_TRUE(dsd_spec_uniform(42, 100, DSD_SPEC_DRAW_ACCEPT) != dsd_spec_uniform(42, 101, DSD_SPEC_DRAW_ACCEPT));
    ASSERT_TRUE(dsd_spec_uniform(42, 100, DSD_SPEC_DRAW_ACCEPT) != dsd_spec_uniform(43, 100, DSD_SPEC_DRAW_ACCEPT));
    ASSERT_TRUE(dsd_spec_uniform(42, 100, DSD_SPEC_DRAW_ACCEPT) != dsd_spec_uniform(42, 100, DSD_SPEC_DRAW_BONUS));
    double sum = 0, lo = 1, hi = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        double u = dsd_spec_uniform((uint64_t)i / 7, i, DSD_SPEC_DRAW_DRAFT);
        sum += u;
        lo = fmin(lo, u);
        hi = fmax(hi, u);
    }
    ASSERT_TRUE(lo >= 0.0 && hi < 1.0);
    ASSERT_NEAR(sum / n, 0.5, 0.005, 0);
}

TEST(pick_walks_ids_ascending)
{
    const float d[5] = { 0.0f, 0.25f, 0.0f, 0.5f, 0.25f };
    ASSERT_EQ_INT(dsd_spec_pick(d, 5, 0.0), 1);
    ASSERT_EQ_INT(dsd_spec_pick(d, 5, 0.2499), 1);
    ASSERT_EQ_INT(dsd_spec_pick(d, 5, 0.25), 3);
    ASSERT_EQ_INT(dsd_spec_pick(d, 5, 0.7499), 3);
    ASSERT_EQ_INT(dsd_spec_pick(d, 5, 0.75), 4);
    ASSERT_EQ_INT(dsd_spec_pick(d, 5, 0.999999), 4);
}

/* dsd_sample_dist_ref is the distribution dsd_sample_ref draws from: over a fine grid of u
 * the reference picks each id as often as its probability says. */
TEST(dist_is_what_the_sampler_draws)
{
    enum { V = 40, N = 20000 };
    float logits[V], dist[V];
    void *scratch = malloc(dsd_sample_scratch_bytes(V));
    for (int i = 0; i < V; i++)
        logits[i] = (float)(3.0 * sin(1.7 * i + 0.3));
    const struct dsd_sample_row rows[3] = {
        { .temperature = 0.7f, .top_p = 1.0f, .repetition_penalty = 1.0f, .pen_slot = -1, .n_top = -1 },
        { .temperature = 1.3f, .top_p = 0.8f, .top_k = 6, .repetition_penalty = 1.0f, .pen_slot = -1, .n_top = -1 },
        { .temperature = 1.0f, .top_p = 1.0f, .min_p = 0.2f, .repetition_penalty = 1.0f, .pen_slot = -1, .n_top = -1 },
    };
    for (int r = 0; r < 3; r++) {
        dsd_sample_dist_ref(logits, V, &rows[r], NULL, scratch, dist);
        int count[V] = {0};
        for (int i = 0; i < N; i++) {
            struct dsd_sample_row row = rows[r];
            row.u = (float)((i + 0.5) / N);
            struct dsd_sample_result res;
            dsd_sample_ref(logits, V, &row, NULL, scratch, &res, NULL);
            count[res.token]++;
        }
        double worst = 0, total = 0;
        for (int i = 0; i < V; i++) {
            worst = fmax(worst, fabs(count[i] / (double)N - dist[i]));
            total += dist[i];
        }
        ASSERT_NEAR(total, 1.0, 1e-5, 0);
        ASSERT_TRUE(worst <= 2.0 / N);
    }
    /* greedy: all mass on the largest logit */
    struct dsd_sample_row g = { .temperature = 0.0f, .top_p = 1.0f, .repetition_penalty = 1.0f, .pen_slot = -1 };
    dsd_sample_dist_ref(logits, V, &g, NULL, scratch, dist);
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    ASSERT_TRUE(dist[best] == 1.0f);
    free(scratch);
}

/* ---- the distribution proof ---- */

enum { MV = 6, LEN = 3 };

struct chain {
    float P[MV][MV], Q[MV][MV];     /* next-token distributions given the previous token */
};

/* Target and draft: the sampler's transforms (temperature, top-k) of two different random
 * logit tables, so both have ids they never pick and they disagree. */
static void chain_make(struct chain *c)
{
    void *scratch = malloc(dsd_sample_scratch_bytes(MV));
    const struct dsd_sample_row rp = { .temperature = 0.9f, .top_p = 1.0f, .top_k = 4, .repetition_penalty = 1.0f,
                                       .pen_slot = -1, .n_top = -1 };
    const struct dsd_sample_row rq = { .temperature = 1.2f, .top_p = 1.0f, .top_k = 3, .repetition_penalty = 1.0f,
                                       .pen_slot = -1, .n_top = -1 };
    for (int a = 0; a < MV; a++) {
        float lp[MV], lq[MV];
        for (int b = 0; b < MV; b++) {
            lp[b] = (float)(2.0 * sin(0.9 * a + 1.3 * b + 0.2));
            lq[b] = (float)(2.0 * cos(0.5 * a - 1.1 * b + 0.7));
        }
        dsd_sample_dist_ref(lp, MV, &rp, NULL, scratch, c->P[a]);
        dsd_sample_dist_ref(lq, MV, &rq, NULL, scratch, c->Q[a]);
    }
    free(scratch);
}

/* LEN tokens after start, speculatively with k drafts per round, the draws keyed by seed. */
static void chain_generate(const struct chain *c, int start, int k, uint64_t seed, enum dsd_spec_force force,
                           int *out)
{
    int n = 0, prev = start;
    float p[(3 + 1) * MV], q[3 * MV], scratch[MV];
    int32_t draft[3], emit[4];
    while (n < LEN) {
        const int64_t pos = 1 + n;      /* the position the next token occupies */
        int d = prev;
        for (int j = 0; j < k; j++) {
            memcpy(q + j * MV, c->Q[d], sizeof c->Q[d]);
            draft[j] = dsd_spec_pick(c->Q[d], MV, dsd_spec_uniform(seed, pos + j, DSD_SPEC_DRAW_DRAFT));
            d = draft[j];
        }
        memcpy(p, c->P[prev], sizeof c->P[prev]);
        for (int j = 0; j < k; j++)
            memcpy(p + (j + 1) * MV, c->P[draft[j]], sizeof c->P[0]);
        int a, ne = dsd_spec_verify_sample(p, q, draft, k, MV, seed, pos, force, scratch, emit, &a);
        for (int j = 0; j < ne && n < LEN; j++)
            out[n++] = emit[j];
        prev = out[n - 1];
    }
}

/* Chi-square statistic of the LEN-token joint over `draws` seeds against the exact plain
 * distribution; *df receives the degrees of freedom. A cell the exact distribution never
 * produces but the draws did makes the statistic infinite. */
static double chain_chi2(const struct chain *c, int k, enum dsd_spec_force force, int draws, int *df)
{
    enum { CELLS = MV * MV * MV };
    static int count[CELLS];
    memset(count, 0, sizeof count);
    const int start = 2;
    for (int s = 0; s < draws; s++) {
        int t[LEN];
        chain_generate(c, start, k, 1000003ull * (uint64_t)s + 17, force, t);
        count[(t[0] * MV + t[1]) * MV + t[2]]++;
    }
    double chi2 = 0;
    int cells = 0;
    for (int x = 0; x < CELLS; x++) {
        const int a = x / (MV * MV), b = (x / MV) % MV, d = x % MV;
        const double e = (double)draws * c->P[start][a] * c->P[a][b] * c->P[b][d];
        if (e <= 0) {
            if (count[x])
                return INFINITY;
            continue;
        }
        chi2 += (count[x] - e) * (count[x] - e) / e;
        cells++;
    }
    *df = cells - 1;
    return chi2;
}

/* The chi-square quantile at 1 - 1e-4 (Wilson-Hilferty): a correct sampler fails 1 in 10^4. */
static double chi2_crit(int df)
{
    const double z = 3.719, h = 2.0 / (9.0 * df);
    return df * pow(1 - h + z * sqrt(h), 3);
}

TEST(rejection_sampling_keeps_the_target_distribution)
{
    struct chain c;
    chain_make(&c);
    const int draws = 60000;
    for (int k = 1; k <= 3; k++) {
        int df;
        double chi2 = chain_chi2(&c, k, DSD_SPEC_FORCE_NONE, draws, &df);
        printf("  k = %d: chi2 %.1f, df %d, critical %.1f\n", k, chi2, df, chi2_crit(df));
        ASSERT_TRUE(df > 10);
        ASSERT_TRUE(chi2 < chi2_crit(df));
        /* forced rejection samples the target itself: exact too */
        chi2 = chain_chi2(&c, k, DSD_SPEC_FORCE_REJECT, draws, &df);
        ASSERT_TRUE(chi2 < chi2_crit(df));
    }
    /* power: emitting the drafts unchecked (forced acceptance) is a different distribution,
     * and so is sampling from the draft alone; the test must see it */
    int df;
    double bad = chain_chi2(&c, 2, DSD_SPEC_FORCE_ACCEPT, draws, &df);
    printf("  forced acceptance: chi2 %g (must fail)\n", bad);
    ASSERT_TRUE(!(bad < chi2_crit(df)));
}

TEST(sampled_forced_ends_and_reproducibility)
{
    struct chain c;
    chain_make(&c);
    int a1[LEN], a2[LEN], differ = 0;
    for (int s = 0; s < 50; s++) {
        chain_generate(&c, 1, 3, (uint64_t)s, DSD_SPEC_FORCE_NONE, a1);
        chain_generate(&c, 1, 3, (uint64_t)s, DSD_SPEC_FORCE_NONE, a2);
        ASSERT_TRUE(memcmp(a1, a2, sizeof a1) == 0);
        chain_generate(&c, 1, 3, (uint64_t)s + 1000, DSD_SPEC_FORCE_NONE, a2);
        differ += memcmp(a1, a2, sizeof a1) != 0;
    }
    ASSERT_TRUE(differ > 10);
    /* forced acceptance emits every draft and one more; forced rejection one token */
    float p[4 * MV], q[3 * MV], scratch[MV];
    for (int j = 0; j < 4; j++)
        memcpy(p + j * MV, c.P[j], sizeof c.P[0]);
    for (int j = 0; j < 3; j++)
        memcpy(q + j * MV, c.Q[j], sizeof c.Q[0]);
    const int32_t draft[3] = { 0, 1, 2 };
    int32_t out[4];
    int a;
    ASSERT_EQ_INT(dsd_spec_verify_sample(p, q, draft, 3, MV, 7, 10, DSD_SPEC_FORCE_ACCEPT, scratch, out, &a), 4);
    ASSERT_EQ_INT(a, 3);
    ASSERT_TRUE(out[0] == 0 && out[1] == 1 && out[2] == 2);
    ASSERT_TRUE(c.P[3][out[3]] > 0);
    ASSERT_EQ_INT(dsd_spec_verify_sample(p, q, draft, 3, MV, 7, 10, DSD_SPEC_FORCE_REJECT, scratch, out, &a), 1);
    ASSERT_EQ_INT(a, 0);
    ASSERT_TRUE(c.P[0][out[0]] > 0);
    /* a draft the target never picks is always rejected, for the residual's token */
    int32_t never = -1;
    for (int i = 0; i < MV && never < 0; i++)
        if (c.P[0][i] == 0.0f)
            never = i;
    ASSERT_TRUE(never >= 0);
    for (uint64_t s = 0; s < 20; s++) {
        const int32_t d1[1] = { never };
        ASSERT_EQ_INT(dsd_spec_verify_sample(p, q, d1, 1, MV, s, 10, DSD_SPEC_FORCE_NONE, scratch, out, &a), 1);
        ASSERT_EQ_INT(a, 0);
        ASSERT_TRUE(out[0] != never && c.P[0][out[0]] > 0);
    }
}

int main(void)
{
    RUN(greedy_matching_prefix_then_target);
    RUN(uniform_counter_based);
    RUN(pick_walks_ids_ascending);
    RUN(dist_is_what_the_sampler_draws);
    RUN(rejection_sampling_keeps_the_target_distribution);
    RUN(sampled_forced_ends_and_reproducibility);
    return test_report();
}
