/* Sampling (daemon/model/sampling.c): greedy, reproducible seeds, each filter, penalties,
 * parameter validation. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include <stdlib.h>

#include "sample.h"
#include "sampling.h"
#include "test.h"

#define V 1000

static void make_logits(float *l)
{
    for (int i = 0; i < V; i++)
        l[i] = (float)(-0.01 * i);        /* token 0 most likely, smoothly decreasing */
    l[500] = 3.0f;                        /* a clear winner */
    l[501] = 2.5f;
}

static int32_t draw(struct dsd_sampler *s)
{
    float l[V];
    make_logits(l);
    return dsd_sampler_sample(s, l, NULL);
}

TEST(greedy_is_argmax_with_lowest_id_on_ties)
{
    float l[V];
    make_logits(l);
    l[700] = 3.0f;                        /* tie with 500: lowest id wins */
    struct dsd_sampling_params p = dsd_sampling_default_params();
    struct dsd_sampler *s;
    struct dsd_err e;
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp((double)l[i]);
    float lp;
    ASSERT_EQ_INT(dsd_sampler_sample(s, l, &lp), 500);
    ASSERT_NEAR(lp, 3.0 - log(z), 1e-5, 0);           /* log-softmax of the pick */
    dsd_sampler_free(s);
    ASSERT_EQ_INT(dsd_argmax(l, V), 500);
}

TEST(same_seed_same_tokens_other_seed_other_tokens)
{
    struct dsd_sampling_params p = dsd_sampling_default_params();
    p.temperature = 1.5f;
    p.seed = 42;
    struct dsd_sampler *a, *b, *c;
    struct dsd_err e;
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &a, &e), 0);
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &b, &e), 0);
    p.seed = 43;
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &c, &e), 0);
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 50; i++) {
        int32_t x = draw(a), y = draw(b), z = draw(c);
        same_ab &= x == y;
        same_ac &= x == z;
    }
    ASSERT_TRUE(same_ab);
    ASSERT_TRUE(!same_ac);
    dsd_sampler_free(a);
    dsd_sampler_free(b);
    dsd_sampler_free(c);
}

TEST(filters_restrict_the_candidates)
{
    struct dsd_err e;
    struct dsd_sampler *s;
    struct dsd_sampling_params p = dsd_sampling_default_params();
    p.temperature = 1.0f;
    p.top_k = 2;                          /* only 500 and 501 */
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    int n500 = 0;
    for (int i = 0; i < 2000; i++) {
        int32_t t = draw(s);
        ASSERT_TRUE(t == 500 || t == 501);
        n500 += t == 500;
    }
    /* p(500 | {500, 501}) = 1 / (1 + e^-0.5) = 0.622 */
    ASSERT_NEAR(n500 / 2000.0, 0.6225, 0.04, 0);
    dsd_sampler_free(s);

    p = dsd_sampling_default_params();
    p.temperature = 1.0f;
    p.top_p = 0.01f;                      /* the top token alone covers 1% */
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ_INT(draw(s), 500);
    dsd_sampler_free(s);

    p = dsd_sampling_default_params();
    p.temperature = 1.0f;
    p.min_p = 0.5f;                       /* keeps tokens with p >= 0.5 * p(500): 500 and 501 (0.61) */
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    for (int i = 0; i < 200; i++) {
        int32_t t = draw(s);
        ASSERT_TRUE(t == 500 || t == 501);
    }
    dsd_sampler_free(s);

    /* No filter: the long tail is reachable and frequencies follow the softmax. */
    p = dsd_sampling_default_params();
    p.temperature = 1.0f;
    p.seed = 7;
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    float l[V];
    make_logits(l);
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(l[i]);
    int hits = 0, tail = 0;
    for (int i = 0; i < 20000; i++) {
        int32_t t = draw(s);
        hits += t == 500;
        tail += t > 501;
    }
    ASSERT_NEAR(hits / 20000.0, exp(3.0) / z, 0.01, 0);
    ASSERT_TRUE(tail > 0);
    dsd_sampler_free(s);
}

TEST(penalties)
{
    struct dsd_err e;
    struct dsd_sampler *s;
    struct dsd_sampling_params p = dsd_sampling_default_params();
    p.presence_penalty = 2.0f;            /* greedy: 500 (3.0) once used drops to 1.0 < 2.5 */
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    ASSERT_EQ_INT(draw(s), 500);
    dsd_sampler_accept(s, 500);
    ASSERT_EQ_INT(draw(s), 501);
    dsd_sampler_free(s);

    p = dsd_sampling_default_params();
    p.repetition_penalty = 2.0f;          /* prompt tokens count: 3.0 -> 1.5 < 2.5 */
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    int32_t prompt[1] = { 500 };
    dsd_sampler_accept_prompt(s, prompt, 1);
    ASSERT_EQ_INT(draw(s), 501);
    dsd_sampler_free(s);

    p = dsd_sampling_default_params();
    p.frequency_penalty = 0.3f;           /* 3.0 - 0.3 n: below 2.5 after two uses */
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), 0);
    dsd_sampler_accept(s, 500);
    ASSERT_EQ_INT(draw(s), 500);
    dsd_sampler_accept(s, 500);
    ASSERT_EQ_INT(draw(s), 501);
    dsd_sampler_free(s);
}

/* The real vocabulary with a flat distribution (what a random-weight model produces): the
 * nucleus keeps exactly the lowest ids that cover top_p (ties go to the lowest id), and a
 * draw stays cheap (it once sorted the vocabulary many times: ~70 ms per token). */
TEST(nucleus_over_a_flat_real_sized_vocabulary)
{
    enum { BIG = 129280 };
    static float l[BIG];
    struct dsd_err e;
    struct dsd_sampler *s;
    struct dsd_sampling_params p = dsd_sampling_default_params();
    p.temperature = 1.0f;
    p.top_p = 0.25f;
    p.seed = 3;
    ASSERT_EQ_INT(dsd_sampler_new(&p, BIG, &s, &e), 0);
    int32_t hi = 0;
    for (int i = 0; i < 50; i++) {
        for (int j = 0; j < BIG; j++)
            l[j] = 0.0f;
        int32_t t = dsd_sampler_sample(s, l, NULL);
        ASSERT_TRUE(t >= 0 && t < BIG / 4 + 1);
        hi = t > hi ? t : hi;
    }
    ASSERT_TRUE(hi > BIG / 8);            /* spread over the whole nucleus, not its head */
    dsd_sampler_free(s);

    p.top_p = 1.0f;
    p.top_k = 1000;
    ASSERT_EQ_INT(dsd_sampler_new(&p, BIG, &s, &e), 0);
    for (int i = 0; i < 50; i++) {
        for (int j = 0; j < BIG; j++)
            l[j] = 0.0f;
        ASSERT_TRUE(dsd_sampler_sample(s, l, NULL) < 1000);
    }
    dsd_sampler_free(s);
}

/* A row with no finite maximum after penalties and temperature (all NaN, all -inf, one +inf)
 * is flagged DSD_SAMPLE_NONFINITE, greedy or sampled; a row with some finite values (NaN and
 * -inf among them) is not. */
TEST(rows_without_a_finite_logit_are_flagged)
{
    void *scratch = malloc(dsd_sample_scratch_bytes(V));
    ASSERT_TRUE(scratch != NULL);
    if (!scratch)
        return;
    float l[V];
    const struct dsd_sample_row greedy = { .temperature = 0.0f, .top_p = 1.0f, .repetition_penalty = 1.0f,
                                           .pen_slot = -1, .n_top = -1 };
    const struct dsd_sample_row sampled = { .temperature = 0.8f, .top_p = 0.9f, .repetition_penalty = 1.0f,
                                            .pen_slot = -1, .u = 0.5f, .n_top = 3 };
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < V; i++)
            l[i] = k == 0 ? NAN : k == 1 ? -INFINITY : k == 2 ? (float)(-0.01 * i) : k == 3 ? NAN : -INFINITY;
        if (k == 2)
            l[7] = INFINITY;
        if (k >= 3)
            l[400] = 1.5f;      /* one finite value among NaN (3) or -inf (4) */
        const bool bad = k < 3;
        for (int m = 0; m < 2; m++) {
            struct dsd_sample_result r;
            dsd_sample_ref(l, V, m ? &sampled : &greedy, NULL, scratch, &r, NULL);
            ASSERT_EQ_INT(r.status, bad ? DSD_SAMPLE_NONFINITE : DSD_SAMPLE_OK);
            ASSERT_TRUE(r.token >= 0 && r.token < V);
            if (!bad)
                ASSERT_EQ_INT(r.token, 400);
        }
    }
    free(scratch);
}

TEST(bad_parameters_are_named)
{
    struct dsd_sampling_params p = dsd_sampling_default_params();
    struct dsd_err e = {{0}};
    p.top_p = 0.0f;
    ASSERT_EQ_INT(dsd_sampling_params_check(&p, &e), -EINVAL);
    ASSERT_TRUE(strstr(e.msg, "top_p") != NULL);
    p = dsd_sampling_default_params();
    p.temperature = NAN;
    ASSERT_EQ_INT(dsd_sampling_params_check(&p, &e), -EINVAL);
    ASSERT_TRUE(strstr(e.msg, "temperature") != NULL);
    p = dsd_sampling_default_params();
    p.top_k = -1;
    struct dsd_sampler *s = NULL;
    ASSERT_EQ_INT(dsd_sampler_new(&p, V, &s, &e), -EINVAL);
    ASSERT_TRUE(s == NULL);
}

int main(void)
{
    RUN(greedy_is_argmax_with_lowest_id_on_ties);
    RUN(same_seed_same_tokens_other_seed_other_tokens);
    RUN(filters_restrict_the_candidates);
    RUN(penalties);
    RUN(nucleus_over_a_flat_real_sized_vocabulary);
    RUN(rows_without_a_finite_logit_are_flagged);
    RUN(bad_parameters_are_named);
    return test_report();
}
