/* The DSA lightning indexer: index-K cache and top-k selection (docs/MODEL.md §4).
 * Production numerics: Hadamard-rotated, FP8 (ue8m0) q and k, q scale folded into the head
 * weights, ReLU-weighted head sum times the k scale. Exact numerics: fp32 q.k without
 * rotation or quantization, which is what transformers computes (docs/MODEL.md §4.9). */
#include "cpu_backend.h"
#include "topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void cpu_op_index_k_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *k_, const int32_t *slot, int T)
{
    const float *k = k_;
    struct cpu_backend *cb = cpu(be);
    const struct dsd_kv_layout *lay = &be->kv_layout;
    const int Di = lay->index_dim;
    for (int t = 0; t < T; t++) {
        size_t page = (size_t)slot[t] / DSD_KV_PAGE_TOKENS, off = (size_t)slot[t] % DSD_KV_PAGE_TOKENS;
        uint8_t *pg = kv->index + page * lay->index_page_bytes;
        const float *src = k + (size_t)t * Di;
        if (lay->index_fp8) {
            float rot[Di], scale;
            memcpy(rot, src, sizeof rot);
            dsd_ref_hadamard(rot, Di);
            for (int i = 0; i < Di; i++)
                rot[i] = cpu_act(cb, rot[i]);
            dsd_ref_act_quant(rot, Di, cb->base.dims.act_scale_ue8m0, pg + off * Di, NULL, &scale);
            memcpy(pg + DSD_KV_PAGE_TOKENS * (size_t)Di + off * 4, &scale, 4);
        } else {
            memcpy(pg + off * Di * 4, src, (size_t)Di * 4);
        }
    }
}

struct topk_task {
    struct cpu_backend *cb;
    int32_t *out;
    int topk;
    const float *q, *w;
    const struct dsd_kv_layer *kv;
    const struct dsd_step *st;
};

static void topk_token(void *p, int t, int thread)
{
    (void)thread;
    struct topk_task *a = p;
    struct cpu_backend *cb = a->cb;
    const struct dsd_kv_layout *lay = &cb->base.kv_layout;
    const int Hi = cb->base.dims.index_n_heads, Di = lay->index_dim;
    const int32_t pos = a->st->pos[t];
    const int32_t *pages = a->st->pages + a->st->page_off[a->st->seq[t]];
    int32_t *out = a->out + (size_t)t * a->topk;
    int n_cand = pos + 1, k = n_cand < a->topk ? n_cand : a->topk;

    for (int i = k; i < a->topk; i++)
        out[i] = -1;
    if (n_cand <= a->topk) {            /* every causal position is selected: no scoring */
        for (int i = 0; i < k; i++)
            out[i] = i;
        return;
    }
    float *qv = malloc(((size_t)Hi * Di + (size_t)Hi + (size_t)n_cand + (size_t)Di) * sizeof(float));
    if (!qv)
        abort();
    float *wh = qv + (size_t)Hi * Di, *score = wh + Hi, *kv = score + n_cand;
    const float *qt = a->q + (size_t)t * Hi * Di, *wt = a->w + (size_t)t * Hi;
    const float head_scale = 1.0f / sqrtf((float)Hi), dim_scale = 1.0f / sqrtf((float)Di);
    if (lay->index_fp8) {
        for (int h = 0; h < Hi; h++) {
            float rot[Di], qs;
            memcpy(rot, qt + (size_t)h * Di, sizeof rot);
            dsd_ref_hadamard(rot, Di);
            for (int i = 0; i < Di; i++)
                rot[i] = cpu_act(cb, rot[i]);
            dsd_ref_act_quant(rot, Di, cb->base.dims.act_scale_ue8m0, NULL, qv + (size_t)h * Di, &qs);
            wh[h] = wt[h] * head_scale * qs * dim_scale;
        }
    } else {
        memcpy(qv, qt, (size_t)Hi * Di * sizeof(float));
        for (int h = 0; h < Hi; h++)
            wh[h] = wt[h] * head_scale;
    }
    for (int j = 0; j < n_cand; j++) {
        size_t page = (size_t)pages[j / DSD_KV_PAGE_TOKENS], off = (size_t)(j % DSD_KV_PAGE_TOKENS);
        const uint8_t *pg = a->kv->index + page * lay->index_page_bytes;
        float s = 0.0f;
        if (lay->index_fp8) {
            const uint8_t *kb = pg + off * Di;
            for (int i = 0; i < Di; i++)
                kv[i] = dsd_e4m3_lut[kb[i]];
            float ks;
            memcpy(&ks, pg + DSD_KV_PAGE_TOKENS * (size_t)Di + off * 4, 4);
            for (int h = 0; h < Hi; h++)
                s += wh[h] * fmaxf(dsd_ref_dot(qv + (size_t)h * Di, kv, Di), 0.0f);
            s *= ks;
        } else {
            memcpy(kv, pg + off * Di * 4, (size_t)Di * 4);
            for (int h = 0; h < Hi; h++)
                s += wh[h] * fmaxf(dsd_ref_dot(qv + (size_t)h * Di, kv, Di) * dim_scale, 0.0f);
        }
        score[j] = s;
    }
    dsd_topk(score, n_cand, k, out);
    free(qv);
}

void cpu_op_indexer_topk(struct dsd_backend *be, int32_t *out, int topk, const void *q_, const float *w, const struct dsd_kv_layer *kv, const struct dsd_step *st)
{
    const float *q = q_;
    struct cpu_backend *cb = cpu(be);
    struct topk_task a = { cb, out, topk, q, w, kv, st };
    dsd_thread_pool_run(cb->pool, st->n_tokens, topk_token, &a);
}
