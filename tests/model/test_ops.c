/*
 * Ops of the CPU backend against direct double-precision formulas (docs/MODEL.md §3-§7):
 * the FP8 block-scaled linear (production and exact), both RoPE variants, sparse MLA in
 * the absorbed form against the MHA form, the FP8 KV round trip, the MoE block against a
 * composition of its definition, and the indexer's exact scores.
 *   test_ops TINY_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ref.h"
#include "engine_harness.h"
#include "numeric.h"
#include "test.h"

static const char *g_tiny;

static void fill(float *x, size_t n, double seed, double amp)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(amp * sin(seed + 0.7 * (double)i + 0.013 * (double)(i * i % 97)));
}

TEST(fp8_linear_production_and_exact)
{
    struct dsd_model *mp = harness_load(g_tiny, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 2);
    struct dsd_model *me = harness_load(g_tiny, DSD_NUMERICS_EXACT, DSD_KV_F32, 2);
    ASSERT_TRUE(mp && me);
    const struct dsd_weight *w = &mp->w.layers[0].q_b;     /* FP8 [512][256] with 4x2 blocks */
    const int T = 3, K = (int)w->cols, N = (int)w->rows;
    float x[3 * 256], yp[3 * 512], ye[3 * 512];
    fill(x, (size_t)T * K, 1.0, 2.0);
    for (int i = 0; i < T * K; i++)
        x[i] = dsd_round_bf16(x[i]);                       /* production inputs are bf16 values */
    mp->ops->linear(mp->be, yp, N, x, K, w, T, 0);
    me->ops->linear(me->be, ye, N, x, K, w, T, 0);
    /* errors relative to the row's largest output: fp32 sums of K terms cancel near zero */
    double worst_p = 0, worst_e = 0;
    double *prod = malloc((size_t)N * sizeof *prod), *exact = malloc((size_t)N * sizeof *exact);
    for (int t = 0; t < T; t++) {
        float xq[256], xs[2];
        dsd_ref_act_quant(x + t * K, K, true, NULL, xq, xs);
        double pmax = 0, emax = 0;
        for (int n = 0; n < N; n++) {
            prod[n] = exact[n] = 0;
            for (int kb = 0; kb < K / 128; kb++) {
                double part = 0, ws = dsd_ref_weight_scale(w, n, kb);
                for (int k = kb * 128; k < kb * 128 + 128; k++) {
                    double wv = dsd_e4m3_lut[((const uint8_t *)w->data)[(size_t)n * K + k]];
                    part += (double)xq[k] * wv;
                    exact[n] += (double)x[t * K + k] * wv * ws;
                }
                prod[n] += part * xs[kb] * ws;
            }
            pmax = fmax(pmax, fabs(prod[n]));
            emax = fmax(emax, fabs(exact[n]));
        }
        for (int n = 0; n < N; n++) {
            /* production outputs are bf16: within one bf16 rounding (half an ulp: at most 2^-8 relative, just above a power of two) */
            worst_p = fmax(worst_p, fabs(yp[t * N + n] - prod[n]) / (fabs(prod[n]) + 1e-6 * pmax));
            worst_e = fmax(worst_e, fabs(ye[t * N + n] - exact[n]) / emax);
        }
    }
    free(prod);
    free(exact);
    printf("  FP8 linear: production vs formula %.3g (bf16 output), exact vs fp64 %.3g\n", worst_p, worst_e);
    ASSERT_TRUE(worst_p <= 0x1p-8 * 1.001);
    ASSERT_TRUE(worst_e <= 1e-6);
    dsd_model_free(mp);
    dsd_model_free(me);
}

TEST(rope_interleaved_and_half_split)
{
    struct dsd_model *m = harness_load(g_tiny, DSD_NUMERICS_EXACT, DSD_KV_F32, 1);
    ASSERT_TRUE(m != NULL);
    const int R = m->cfg.qk_rope_head_dim, half = R / 2;
    float inv[half];
    dsd_cfg_rope_inv_freq(&m->cfg, inv);
    int32_t pos[2] = { 0, 1234 };
    for (int inter = 0; inter < 2; inter++) {
        /* 2 tokens x 2 heads of stride 96, rope dims at offset 16 */
        float x[2 * 192], y[2 * 192];
        fill(x, 2 * 192, 3.0 + inter, 1.0);
        memcpy(y, x, sizeof x);
        m->ops->rope(m->be, y, 192, 2, 96, 16, pos, 2, inter);
        double worst = 0;
        for (int t = 0; t < 2; t++)
            for (int h = 0; h < 2; h++) {
                const float *a = x + t * 192 + h * 96 + 16;
                const float *b = y + t * 192 + h * 96 + 16;
                for (int i = 0; i < half; i++) {
                    double th = (double)(float)((float)pos[t] * inv[i]);
                    int p0 = inter ? 2 * i : i, p1 = inter ? 2 * i + 1 : i + half;
                    double r0 = a[p0] * cos(th) - a[p1] * sin(th), r1 = a[p0] * sin(th) + a[p1] * cos(th);
                    worst = fmax(worst, fmax(fabs(b[p0] - r0), fabs(b[p1] - r1)));
                }
                /* dims outside the rope window are untouched */
                ASSERT_TRUE(memcmp(x + t * 192 + h * 96, y + t * 192 + h * 96, 16 * sizeof(float)) == 0);
            }
        printf("  rope %s: max error %.3g\n", inter ? "interleaved" : "half-split", worst);
        ASSERT_TRUE(worst < 1e-5);
    }
    dsd_model_free(m);
}

/* Absorbed sparse MLA == the MHA form (k_nope = W_UK c, v = W_UV c) over the same set. */
TEST(absorbed_attention_equals_mha_form)
{
    struct dsd_model *m = harness_load(g_tiny, DSD_NUMERICS_EXACT, DSD_KV_F32, 2);
    ASSERT_TRUE(m != NULL);
    const struct dsd_model_config *c = &m->cfg;
    const int H = c->num_attention_heads, N = c->qk_nope_head_dim, R = c->qk_rope_head_dim, V = c->v_head_dim;
    const int L = c->kv_lora_rank, topk = c->index_topk, npos = 100;
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 3, &err);
    struct dsd_kv_seq seq = {0};
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq, npos), 0);
    const struct dsd_kv_layer *layer = dsd_kv_cache_layer(kv, 1);
    float *lat = malloc((size_t)npos * (L + R) * sizeof *lat);
    fill(lat, (size_t)npos * (L + R), 0.5, 1.0);
    int32_t slot[100];
    for (int p = 0; p < npos; p++)
        slot[p] = seq.pages[p / 64] * 64 + p % 64;
    m->ops->mla_kv_store(m->be, layer, lat, L + R, slot, npos);
    /* two query tokens at positions 99 and 70, each with its own selection */
    int32_t qpos[2] = { 99, 70 }, qseq[2] = { 0, 0 }, qslot[2] = { slot[99], slot[70] };
    int32_t sel[2 * 24];
    for (int j = 0; j < topk; j++) {
        sel[j] = j * 4;                    /* 0, 4, ..., 92 */
        sel[topk + j] = j < 20 ? 50 + j : -1;
    }
    float q[2 * 4 * 128], out[2 * 4 * 64];
    fill(q, (size_t)2 * H * (N + R), 2.0, 1.5);
    int32_t page_off[2] = { 0, seq.n_pages };
    struct dsd_step st = { .n_tokens = 2, .pos = qpos, .seq = qseq, .slot = qslot, .n_seqs = 1, .max_pos = 99,
                           .n_pages = seq.n_pages, .page_off = page_off, .pages = seq.pages };
    m->ops->mla_attention(m->be, out, q, &m->w.layers[1].kv_b, layer, sel, topk, &st);

    const struct dsd_weight *kvb = &m->w.layers[1].kv_b;
    float *wrow = malloc((size_t)L * sizeof *wrow);
    double worst = 0, scale = dsd_cfg_softmax_scale(c);
    for (int t = 0; t < 2; t++)
        for (int h = 0; h < H; h++) {
            double s[24], o[64] = {0}, mx = -INFINITY, sum = 0;
            int n = 0;
            for (int j = 0; j < topk && sel[t * topk + j] >= 0; j++, n++) {
                const float *cj = lat + (size_t)sel[t * topk + j] * (L + R);
                double dot = 0;
                for (int d = 0; d < N; d++) {       /* q_nope . (W_UK c) */
                    dsd_ref_weight_row_dequant(kvb, (int64_t)h * (N + V) + d, wrow);
                    double k = 0;
                    for (int i = 0; i < L; i++)
                        k += (double)wrow[i] * cj[i];
                    dot += q[t * H * (N + R) + h * (N + R) + d] * k;
                }
                for (int i = 0; i < R; i++)
                    dot += q[t * H * (N + R) + h * (N + R) + N + i] * cj[L + i];
                s[j] = dot * scale;
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < n; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (int j = 0; j < n; j++) {
                const float *cj = lat + (size_t)sel[t * topk + j] * (L + R);
                for (int d = 0; d < V; d++) {
                    dsd_ref_weight_row_dequant(kvb, (int64_t)h * (N + V) + N + d, wrow);
                    double v = 0;
                    for (int i = 0; i < L; i++)
                        v += (double)wrow[i] * cj[i];
                    o[d] += s[j] / sum * v;
                }
            }
            for (int d = 0; d < V; d++)
                worst = fmax(worst, fabs(out[t * H * V + h * V + d] - o[d]) / (1e-3 + fabs(o[d])));
        }
    printf("  absorbed sparse MLA vs MHA form (fp64): max rel error %.3g\n", worst);
    ASSERT_TRUE(worst < 1e-4);
    free(wrow);
    free(lat);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    dsd_model_free(m);
}

/* The 656-byte FP8 entry layout: latent e4m3 bytes, fp32 scales, bf16 k_pe. */
TEST(fp8_kv_entry_layout)
{
    struct dsd_model *m = harness_load(g_tiny, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 1);
    ASSERT_TRUE(m != NULL);
    const int L = m->cfg.kv_lora_rank, R = m->cfg.qk_rope_head_dim;
    struct dsd_kv_layout lay = dsd_kv_layout_for(&m->dims, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8);
    ASSERT_EQ_INT(lay.mla_token_bytes, (size_t)L + (size_t)L / 128 * 4 + (size_t)R * 2);
    struct dsd_model_dims real = m->dims;
    real.kv_lora_rank = 512;
    ASSERT_EQ_INT(dsd_kv_layout_for(&real, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8).mla_token_bytes, 656);
    ASSERT_EQ_INT(dsd_kv_layout_for(&real, DSD_NUMERICS_PRODUCTION, DSD_KV_BF16).mla_token_bytes, 1152);
    ASSERT_EQ_INT(dsd_kv_layout_for(&real, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8).index_page_bytes, 8448);
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 2, &err);
    float ent[256 + 64];
    fill(ent, (size_t)(L + R), 9.0, 3.0);
    int32_t slot = 64 + 5;
    m->ops->mla_kv_store(m->be, dsd_kv_cache_layer(kv, 0), ent, L + R, &slot, 1);
    const uint8_t *e = dsd_kv_cache_layer(kv, 0)->mla + (size_t)slot * lay.mla_token_bytes;
    float scales[2], q[256], s2[2];
    memcpy(scales, e + L, sizeof scales);
    dsd_ref_act_quant(ent, L, m->cfg.act_scale_ue8m0, NULL, q, s2);
    ASSERT_NEAR(scales[0], s2[0], 0, 0);
    ASSERT_NEAR(scales[1], s2[1], 0, 0);
    for (int i = 0; i < L; i++)
        ASSERT_NEAR(dsd_e4m3_lut[e[i]] * scales[i / 128], q[i] * s2[i / 128], 0, 0);
    for (int i = 0; i < R; i++) {
        uint16_t h;
        memcpy(&h, e + L + 8 + 2 * i, 2);
        ASSERT_EQ_INT(h, dsd_f32_to_bf16(ent[L + i]));
    }
    dsd_kv_cache_free(kv);
    dsd_model_free(m);
}

/* The MoE op against its definition built from reference pieces, in exact numerics. */
TEST(moe_block_matches_its_definition)
{
    struct dsd_model *m = harness_load(g_tiny, DSD_NUMERICS_EXACT, DSD_KV_F32, 2);
    ASSERT_TRUE(m != NULL);
    const struct dsd_model_config *c = &m->cfg;
    const struct dsd_layer_weights *lw = &m->w.layers[2];
    const int D = (int)c->hidden_size, E = c->n_routed_experts, k = c->num_experts_per_tok, T = 5;
    const int I = (int)c->moe_intermediate_size;
    float *x = malloc((size_t)T * D * sizeof *x), *y = malloc((size_t)T * D * sizeof *y);
    fill(x, (size_t)T * D, 4.0, 1.0);
    m->ops->moe(m->be, y, x, lw, T);
    float *row = malloc((size_t)(D > I ? D : I) * 2 * sizeof *row);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        float logits[64];
        for (int e = 0; e < E; e++) {
            dsd_ref_weight_row(&lw->router, e, row);
            double s = 0;
            for (int i = 0; i < D; i++)
                s += (double)row[i] * xt[i];
            logits[e] = (float)s;
        }
        int32_t ex[8];
        float wt[8];
        dsd_ref_moe_route(logits, lw->router_bias.data, E, c->n_group, c->topk_group, k, c->norm_topk_prob,
                          (float)c->routed_scaling_factor, ex, wt);
        double out[256] = {0};
        for (int j = 0; j <= k; j++) {            /* k routed experts, then the shared one */
            const struct dsd_expert_weights *ew = j < k ? &lw->experts[ex[j]] : &lw->shared;
            double wj = j < k ? wt[j] : 1.0, h[128];
            for (int i = 0; i < I; i++) {
                double g = 0, u = 0;
                dsd_ref_weight_row_dequant(&ew->gate, i, row);
                for (int d = 0; d < D; d++)
                    g += (double)row[d] * xt[d];
                dsd_ref_weight_row_dequant(&ew->up, i, row);
                for (int d = 0; d < D; d++)
                    u += (double)row[d] * xt[d];
                h[i] = g / (1 + exp(-g)) * u;
            }
            for (int d = 0; d < D; d++) {
                dsd_ref_weight_row_dequant(&ew->down, d, row);
                double s = 0;
                for (int i = 0; i < I; i++)
                    s += (double)row[i] * h[i];
                out[d] += wj * s;
            }
        }
        for (int d = 0; d < D; d++)
            worst = fmax(worst, fabs(y[(size_t)t * D + d] - out[d]) / (1e-3 + fabs(out[d])));
    }
    printf("  MoE block vs definition (fp64): max rel error %.3g\n", worst);
    ASSERT_TRUE(worst < 1e-4);
    free(row);
    free(x);
    free(y);
    dsd_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_ops TINY_DIR\n");
        return 2;
    }
    g_tiny = argv[1];
    RUN(fp8_linear_production_and_exact);
    RUN(rope_interleaved_and_half_split);
    RUN(absorbed_attention_equals_mha_form);
    RUN(fp8_kv_entry_layout);
    RUN(moe_block_matches_its_definition);
    return test_report();
}
