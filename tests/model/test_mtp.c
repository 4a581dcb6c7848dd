/*
 * The MTP layer by its definition (docs/MODEL.md §8), on inputs whose answer can be worked by
 * hand: with the MTP block's attention and FFN outputs forced to zero the residual stream is
 * z = eh_proj([enorm(embed(t_next)) ; hnorm(h)]), so the logits must equal
 * lm_head(shared_head.norm(z)). Choosing eh_proj = [I | 0] and then [0 | I] checks the
 * concatenation order (embedding half first) and both norms. Then, with the real weights,
 * the MTP step over a prompt at once and token by token must agree bitwise (its own KV).
 *   test_mtp TINY_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_harness.h"
#include "numeric.h"
#include "test.h"

static const char *g_tiny;

static void rmsnorm_d(const double *x, const struct dsd_weight *w, int n, double eps, double *out)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    const float *wf = w->data;      /* the tiny checkpoint stores norms as F32 */
    for (int i = 0; i < n; i++)
        out[i] = wf[i] * x[i] * r;
}

static double bf16_at(const struct dsd_weight *w, int64_t r, int64_t c)
{
    return dsd_bf16_to_f32(((const uint16_t *)w->data)[r * w->cols + c]);
}

/* logits for one token by hand; half = 0: eh_proj = [I|0], half = 1: [0|I] */
static void by_hand(struct dsd_model *m, int32_t next_tok, const float *h, int half, double *logits)
{
    const struct dsd_model_config *c = &m->cfg;
    const int D = (int)c->hidden_size;
    const struct dsd_layer_weights *lw = &m->w.layers[c->num_hidden_layers];
    double e[D], hh[D], z[D], zn[D], tmp[D];
    for (int i = 0; i < D; i++)
        tmp[i] = bf16_at(&m->w.embed, next_tok, i);
    rmsnorm_d(tmp, &lw->enorm, D, c->rms_norm_eps, e);
    for (int i = 0; i < D; i++)
        tmp[i] = h[i];
    rmsnorm_d(tmp, &lw->hnorm, D, c->rms_norm_eps, hh);
    for (int i = 0; i < D; i++)
        z[i] = half == 0 ? e[i] : hh[i];
    rmsnorm_d(z, &lw->head_norm, D, c->rms_norm_eps, zn);
    for (int64_t v = 0; v < c->vocab_size; v++) {
        double s = 0;
        for (int i = 0; i < D; i++)
            s += zn[i] * bf16_at(&m->w.lm_head, v, i);
        logits[v] = s;
    }
}

TEST(mtp_with_silent_block_is_eh_proj_then_head)
{
    struct dsd_model *m = harness_load(g_tiny, DSD_NUMERICS_EXACT, DSD_KV_F32, 2);
    ASSERT_TRUE(m != NULL);
    if (!m)
        return;
    const struct dsd_model_config *c = &m->cfg;
    const int D = (int)c->hidden_size, L = c->num_hidden_layers;
    struct dsd_layer_weights *lw = &m->w.layers[L];
    /* Silence the block: zero FP8 weights (code 0) into the residual stream. */
    uint8_t *zero = calloc(1, (size_t)D * 4096);
    lw->o_proj.data = zero;
    lw->shared.down.data = zero;
    for (int e = 0; e < c->n_routed_experts; e++)
        lw->experts[e].down.data = zero;
    /* eh_proj [D][2D] as BF16 identity blocks */
    uint16_t *eh = calloc((size_t)D * 2 * D, sizeof *eh);
    lw->eh_proj.data = eh;
    lw->eh_proj.dtype = DSD_DTYPE_BF16;

    const int n = 5, pos0 = 3;
    int32_t next[5] = { 7, 100, 3, 2047, 55 };
    float *hidden = malloc((size_t)n * D * sizeof *hidden);
    for (int i = 0; i < n * D; i++)
        hidden[i] = (float)sin(0.1 * i) * 2.0f;
    float *logits = malloc((size_t)n * c->vocab_size * sizeof *logits);
    double *want = malloc((size_t)c->vocab_size * sizeof *want);
    for (int half = 0; half < 2; half++) {
        memset(eh, 0, (size_t)D * 2 * D * sizeof *eh);
        for (int i = 0; i < D; i++)
            eh[(size_t)i * 2 * D + (size_t)half * D + i] = 0x3f80;   /* 1.0 */
        ASSERT_EQ_INT(harness_mtp(m, next, hidden, n, pos0, logits), 0);
        double worst = 0;
        for (int t = 0; t < n; t++) {
            by_hand(m, next[t], hidden + (size_t)t * D, half, want);
            for (int64_t v = 0; v < c->vocab_size; v++)
                worst = fmax(worst, fabs(logits[(size_t)t * c->vocab_size + v] - want[v]) / (1 + fabs(want[v])));
        }
        printf("  eh_proj = %s: max error vs hand-computed logits %.3g\n", half ? "[0|I]" : "[I|0]", worst);
        ASSERT_TRUE(worst < 1e-5);
    }
    free(want);
    free(logits);
    free(hidden);
    free(eh);
    free(zero);
    dsd_model_free(m);
}

TEST(mtp_chunking_and_own_cache)
{
    struct dsd_model *m = harness_load(g_tiny, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 2);
    ASSERT_TRUE(m != NULL);
    if (!m)
        return;
    const struct dsd_model_config *c = &m->cfg;
    const int D = (int)c->hidden_size, n = 40;
    int32_t ids[41];
    for (int i = 0; i < 41; i++)
        ids[i] = (int32_t)((i * 37 + 11) % c->vocab_size);
    /* Main model over ids[0..n): post-norm hidden h_i; the MTP input at i is (h_i, ids[i+1]). */
    struct prompt_run r;
    ASSERT_EQ_INT(harness_run(m, ids, n, n, &r), 0);
    float *all = malloc((size_t)n * c->vocab_size * sizeof *all);
    float *one = malloc((size_t)c->vocab_size * sizeof *one);
    ASSERT_EQ_INT(harness_mtp(m, ids + 1, r.hidden, n, 0, all), 0);
    /* Token by token over one cache: same logits bitwise. */
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 3, &err);
    struct dsd_kv_seq seq = {0};
    dsd_kv_seq_reserve(kv, &seq, n);
    int same = 1;
    for (int i = 0; i < n; i++) {
        struct dsd_batch_seq b = { .tokens = ids + 1 + i, .n_tokens = 1, .pos0 = i, .kv = &seq };
        struct dsd_forward_out out = { .logits = one };
        ASSERT_EQ_INT(dsd_model_forward_mtp(m, kv, &b, 1, r.hidden + (size_t)i * D, &out, &err), 0);
        same &= memcmp(one, all + (size_t)i * c->vocab_size, (size_t)c->vocab_size * sizeof(float)) == 0;
    }
    ASSERT_TRUE(same);
    /* The MTP attention reads earlier positions: changing an early hidden state changes later logits. */
    float *h2 = malloc((size_t)n * D * sizeof *h2);
    memcpy(h2, r.hidden, (size_t)n * D * sizeof *h2);
    for (int i = 0; i < D; i++)
        h2[i] = -h2[i];
    float *all2 = malloc((size_t)n * c->vocab_size * sizeof *all2);
    ASSERT_EQ_INT(harness_mtp(m, ids + 1, h2, n, 0, all2), 0);
    ASSERT_TRUE(memcmp(all + (size_t)(n - 1) * c->vocab_size, all2 + (size_t)(n - 1) * c->vocab_size,
                       (size_t)c->vocab_size * sizeof(float)) != 0);
    free(all2);
    free(h2);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    free(one);
    free(all);
    harness_free_run(&r);
    dsd_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_mtp TINY_DIR\n");
        return 2;
    }
    g_tiny = argv[1];
    RUN(mtp_with_silent_block_is_eh_proj_then_head);
    RUN(mtp_chunking_and_own_cache);
    return test_report();
}
