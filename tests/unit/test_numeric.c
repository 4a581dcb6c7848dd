/* Number formats (kernels/numeric.h) and the scalar building blocks (kernels/cpu/cpu_ref.h):
 * e4m3 both ways for all 256 codes, bf16 rounding, ue8m0 scales, act_quant, Hadamard,
 * top-k with ties, MoE routing on hand-worked cases. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_ref.h"
#include "topk.h"
#include "numeric.h"
#include "test.h"

/* e4m3 value of a code from its definition: sign, 4-bit exponent (bias 7), 3-bit mantissa. */
static double e4m3_by_definition(int code)
{
    int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
    double v = e == 0 ? (m / 8.0) * pow(2, -6) : (1 + m / 8.0) * pow(2, e - 7);
    return s ? -v : v;
}

TEST(e4m3_all_256_codes_both_ways)
{
    int nan_codes = 0;
    for (int c = 0; c < 256; c++) {
        float v = dsd_e4m3_to_f32((uint8_t)c);
        if ((c & 0x7f) == 0x7f) {   /* S.1111.111 is NaN in e4m3fn */
            ASSERT_TRUE(isnan(v));
            ASSERT_EQ_INT(dsd_f32_to_e4m3(v) & 0x7f, 0x7f);
            nan_codes++;
            continue;
        }
        ASSERT_NEAR(v, e4m3_by_definition(c), 0, 0);
        ASSERT_EQ_INT(dsd_f32_to_e4m3(v), c);            /* exact values encode to themselves */
        ASSERT_NEAR(dsd_e4m3_lut[c], v, 0, 0);
    }
    ASSERT_EQ_INT(nan_codes, 2);
    ASSERT_NEAR(dsd_e4m3_to_f32(0x7e), 448.0, 0, 0);    /* max finite */
    ASSERT_NEAR(dsd_e4m3_to_f32(0x01), 0x1p-9, 0, 0);   /* min subnormal */
    ASSERT_NEAR(dsd_e4m3_to_f32(0x08), 0x1p-6, 0, 0);   /* min normal */
}

TEST(e4m3_rounds_to_nearest_even_and_saturates)
{
    /* Between 1.0 (0x38) and 1.125 (0x39): the midpoint 1.0625 goes to the even code 0x38. */
    ASSERT_EQ_INT(dsd_f32_to_e4m3(1.0625f), 0x38);
    ASSERT_EQ_INT(dsd_f32_to_e4m3(1.0626f), 0x39);
    /* 1.1875 is the midpoint of 1.125 (0x39, odd) and 1.25 (0x3a): to 0x3a. */
    ASSERT_EQ_INT(dsd_f32_to_e4m3(1.1875f), 0x3a);
    ASSERT_EQ_INT(dsd_f32_to_e4m3(-1.1875f), 0xba);
    /* Subnormal steps of 2^-9: 1.5 * 2^-9 is a tie between codes 1 and 2 -> 2 (even). */
    ASSERT_EQ_INT(dsd_f32_to_e4m3(1.5f * 0x1p-9f), 0x02);
    ASSERT_EQ_INT(dsd_f32_to_e4m3(0.5f * 0x1p-9f), 0x00);   /* tie to even: zero */
    ASSERT_EQ_INT(dsd_f32_to_e4m3(7.5f * 0x1p-9f), 0x08);   /* rounds up into the min normal */
    /* Saturation instead of NaN above 448 (also infinities). */
    ASSERT_EQ_INT(dsd_f32_to_e4m3(460.0f), 0x7e);
    ASSERT_EQ_INT(dsd_f32_to_e4m3(1e30f), 0x7e);
    ASSERT_EQ_INT(dsd_f32_to_e4m3(-INFINITY), 0xfe);
    ASSERT_EQ_INT(dsd_f32_to_e4m3(-0.0f), 0x80);
    /* Every float rounds to the nearest code: check a dense sweep against a brute-force search. */
    for (float x = -500.0f; x <= 500.0f; x += 0.37f) {
        uint8_t c = dsd_f32_to_e4m3(x);
        double best = INFINITY;
        for (int k = 0; k < 256; k++)
            if ((k & 0x7f) != 0x7f)
                best = fmin(best, fabs(e4m3_by_definition(k) - fmin(fmax(x, -448.0), 448.0)));
        ASSERT_NEAR(fabs(dsd_e4m3_to_f32(c) - fmin(fmax(x, -448.0), 448.0)), best, 0, 0);
    }
}

TEST(bf16_round_to_nearest_even)
{
    ASSERT_EQ_INT(dsd_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0). */
    ASSERT_EQ_INT(dsd_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    ASSERT_EQ_INT(dsd_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    ASSERT_EQ_INT(dsd_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    ASSERT_TRUE(isnan(dsd_bf16_to_f32(dsd_f32_to_bf16(NAN))));
    ASSERT_NEAR(dsd_bf16_to_f32(dsd_f32_to_bf16(-3.5f)), -3.5, 0, 0);
    ASSERT_NEAR(dsd_round_bf16(3.14159265f), 3.140625, 0, 0);
}

TEST(ue8m0_scale_is_the_next_power_of_two)
{
    ASSERT_NEAR(dsd_ue8m0_scale(448.0f), 1.0, 0, 0);         /* exactly 2^0 stays */
    ASSERT_NEAR(dsd_ue8m0_scale(449.0f), 2.0, 0, 0);         /* just above rounds up */
    ASSERT_NEAR(dsd_ue8m0_scale(224.0f), 0.5, 0, 0);
    ASSERT_NEAR(dsd_ue8m0_scale(1.0f), 0x1p-8, 0, 0);        /* 1/448 -> 2^ceil(-8.8) = 2^-8 */
    ASSERT_NEAR(dsd_ue8m0_scale(0.0f), dsd_ue8m0_scale(1e-4f), 0, 0);  /* amax floor 1e-4 */
    ASSERT_NEAR(dsd_ue8m0_scale(1e-4f), 0x1p-22, 0, 0);      /* 1e-4/448 = 2.23e-7 -> 2^-22 */
}

TEST(act_quant_ue8m0_and_plain)
{
    float x[256], q[256], s[2];
    uint8_t b[256];
    for (int i = 0; i < 256; i++)
        x[i] = (float)sin(i * 0.37) * (i < 128 ? 3.0f : 0.01f);
    dsd_ref_act_quant(x, 256, true, b, q, s);
    for (int g = 0; g < 2; g++) {
        float amax = 0;
        for (int i = 0; i < 128; i++)
            amax = fmaxf(amax, fabsf(x[g * 128 + i]));
        int e;
        ASSERT_NEAR(frexpf(s[g], &e), 0.5, 0, 0);            /* a power of two */
        ASSERT_TRUE(amax / s[g] <= 448.0f && amax / s[g] > 224.0f);
        for (int i = 0; i < 128; i++) {
            float v = x[g * 128 + i] / s[g];
            ASSERT_EQ_INT(b[g * 128 + i], dsd_f32_to_e4m3(v));
            ASSERT_NEAR(q[g * 128 + i], dsd_e4m3_to_f32(b[g * 128 + i]), 0, 0);
            ASSERT_TRUE(fabsf(q[g * 128 + i] - v) <= fabsf(v) * 0.0625f + 0x1p-10f);  /* half an e4m3 step */
        }
    }
    dsd_ref_act_quant(x, 128, false, NULL, q, s);
    float amax = 0;
    for (int i = 0; i < 128; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    ASSERT_NEAR(s[0], amax / 448.0f, 0, 1e-6);               /* plain scale: amax maps to 448 */
    float zeros[128] = {0};
    dsd_ref_act_quant(zeros, 128, false, NULL, q, s);
    ASSERT_NEAR(s[0], 1e-4 / 448.0, 0, 1e-6);                /* no division by zero */
    ASSERT_NEAR(q[0], 0.0, 0, 0);
}

TEST(hadamard_matches_the_matrix_definition)
{
    for (int n = 1; n <= 128; n *= 2) {
        float x[128], y[128];
        for (int i = 0; i < n; i++)
            x[i] = (float)cos(i * 1.3 + n);
        memcpy(y, x, sizeof(float) * (size_t)n);
        dsd_ref_hadamard(y, n);
        double norm_x = 0, norm_y = 0;
        for (int i = 0; i < n; i++) {
            double ref = 0;
            for (int j = 0; j < n; j++)
                ref += x[j] * (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0);
            ref /= sqrt((double)n);
            ASSERT_NEAR(y[i], ref, 1e-5, 1e-5);
            norm_x += (double)x[i] * x[i];
            norm_y += (double)y[i] * y[i];
        }
        ASSERT_NEAR(norm_y, norm_x, 1e-5, 1e-5);            /* orthonormal */
        dsd_ref_hadamard(y, n);                              /* H is its own inverse */
        for (int i = 0; i < n; i++)
            ASSERT_NEAR(y[i], x[i], 1e-5, 1e-5);
    }
}

TEST(topk_ties_go_to_the_lower_index)
{
    float s[8] = { 1, 5, 3, 5, 5, 2, NAN, 3 };
    int32_t out[8];
    dsd_topk(s, 8, 2, out);
    ASSERT_EQ_INT(out[0], 1);
    ASSERT_EQ_INT(out[1], 3);
    dsd_topk(s, 8, 4, out);                              /* 5,5,5 then 3 at index 2 (not 7) */
    ASSERT_EQ_INT(out[0], 1);
    ASSERT_EQ_INT(out[1], 2);
    ASSERT_EQ_INT(out[2], 3);
    ASSERT_EQ_INT(out[3], 4);
    dsd_topk(s, 8, 7, out);                              /* NaN ranks last */
    for (int i = 0; i < 7; i++)
        ASSERT_TRUE(out[i] != 6);
    dsd_topk(s, 8, 8, out);                              /* k == n: everything, ascending */
    for (int i = 0; i < 8; i++)
        ASSERT_EQ_INT(out[i], i);
    float big[1000];
    for (int i = 0; i < 1000; i++)
        big[i] = (float)((i * 7919) % 1000);                 /* a permutation of 0..999 */
    int32_t top[10];
    dsd_topk(big, 1000, 10, top);
    for (int i = 0; i < 10; i++) {
        ASSERT_TRUE(big[top[i]] >= 990.0f);
        if (i)
            ASSERT_TRUE(top[i] > top[i - 1]);
    }
}

static float logit_of(double p)
{
    return (float)log(p / (1 - p));
}

TEST(moe_routing_hand_worked)
{
    /* 8 experts in 4 groups of 2, keep 2 groups, pick 2 experts. Sigmoid scores: */
    double sc[8] = { 0.90, 0.10, 0.60, 0.55, 0.50, 0.52, 0.20, 0.30 };
    float logits[8];
    for (int i = 0; i < 8; i++)
        logits[i] = logit_of(sc[i]);
    /* group scores (top-2 sums): g0 1.00, g1 1.15, g2 1.02, g3 0.50 -> keep g1 and g2.
     * Expert 0 has the best single score but its group loses: picks are 2 (0.60), 3 (0.55). */
    int32_t ex[3];
    float w[3];
    dsd_ref_moe_route(logits, NULL, 8, 4, 2, 2, true, 2.5f, ex, w);
    ASSERT_EQ_INT(ex[0], 2);
    ASSERT_EQ_INT(ex[1], 3);
    ASSERT_NEAR(w[0], 2.5 * 0.60 / 1.15, 1e-6, 1e-5);
    ASSERT_NEAR(w[1], 2.5 * 0.55 / 1.15, 1e-6, 1e-5);
    /* A correction bias changes the choice but not the weights (they use the unbiased sigmoid):
     * +0.2 on expert 4 lifts g2 to 1.22 and expert 4 to 0.70. */
    float bias[8] = { 0, 0, 0, 0, 0.2f, 0, 0, 0 };
    dsd_ref_moe_route(logits, bias, 8, 4, 2, 2, true, 2.5f, ex, w);
    ASSERT_EQ_INT(ex[0], 2);
    ASSERT_EQ_INT(ex[1], 4);
    ASSERT_NEAR(w[1], 2.5 * 0.50 / 1.10, 1e-6, 1e-5);
    /* Without normalization the weights are the raw sigmoid times the scale. */
    dsd_ref_moe_route(logits, NULL, 8, 4, 2, 2, false, 2.5f, ex, w);
    ASSERT_NEAR(w[0], 2.5 * 0.60, 1e-6, 1e-5);
    /* One group holding everything: plain top-k. */
    dsd_ref_moe_route(logits, NULL, 8, 1, 1, 3, true, 1.0f, ex, w);
    ASSERT_EQ_INT(ex[0], 0);
}

TEST(dot_is_independent_of_alignment_and_exact_on_small_ints)
{
    float a[37], b[37];
    double ref = 0;
    for (int i = 0; i < 37; i++) {
        a[i] = (float)(i % 5 - 2);
        b[i] = (float)(i % 3);
        ref += (double)a[i] * b[i];
    }
    ASSERT_NEAR(dsd_ref_dot(a, b, 37), ref, 0, 0);
    ASSERT_NEAR(dsd_ref_dot(a + 1, b + 1, 36), ref - (double)a[0] * b[0], 0, 0);
}

int main(void)
{
    RUN(e4m3_all_256_codes_both_ways);
    RUN(e4m3_rounds_to_nearest_even_and_saturates);
    RUN(bf16_round_to_nearest_even);
    RUN(ue8m0_scale_is_the_next_power_of_two);
    RUN(act_quant_ue8m0_and_plain);
    RUN(hadamard_matches_the_matrix_definition);
    RUN(topk_ties_go_to_the_lower_index);
    RUN(moe_routing_hand_worked);
    RUN(dot_is_independent_of_alignment_and_exact_on_small_ints);
    return test_report();
}
