/* MLA: the latent KV cache (FP8 656-byte, bf16 or fp32 entries) and sparse attention in the
 * absorbed form over the positions the indexer selected (docs/MODEL.md §3.6-3.7, §5). */
#include "cpu_backend.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* kv_b dequantized once, as the reference does for the absorbed form (bf16 values in
 * production numerics, fp32 in exact). */
int cpu_prepare_attention_weights(struct cpu_backend *cb, struct dsd_model_weights *w, struct dsd_err *err)
{
    for (int l = 0; l < w->n_layers; l++) {
        struct dsd_weight *kvb = &w->layers[l].kv_b;
        float *d = malloc((size_t)kvb->rows * (size_t)kvb->cols * sizeof *d);
        if (!d) {
            cpu_release_attention_weights(cb, w);
            return dsd_errf(err, -ENOMEM, "cpu backend: out of memory dequantizing %s", kvb->name);
        }
        for (int64_t r = 0; r < kvb->rows; r++) {
            float *row = d + (size_t)r * kvb->cols;
            dsd_ref_weight_row_dequant(kvb, r, row);
            for (int64_t c = 0; c < kvb->cols; c++)
                row[c] = cpu_act(cb, row[c]);
        }
        kvb->prepared = d;
    }
    return 0;
}

void cpu_release_attention_weights(struct cpu_backend *cb, struct dsd_model_weights *w)
{
    (void)cb;
    for (int l = 0; l < w->n_layers; l++) {
        free(w->layers[l].kv_b.prepared);
        w->layers[l].kv_b.prepared = NULL;
    }
}

void cpu_op_mla_kv_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *kv_in_, int ld, const int32_t *slot, int T)
{
    const float *kv_in = kv_in_;
    struct cpu_backend *cb = cpu(be);
    const struct dsd_kv_layout *lay = &be->kv_layout;
    const int L = lay->kv_lora_rank, R = lay->rope_dim;
    for (int t = 0; t < T; t++) {
        const float *src = kv_in + (size_t)t * ld;
        uint8_t *e = kv->mla + (size_t)slot[t] * lay->mla_token_bytes;
        switch (lay->mla_dtype) {
        case DSD_KV_FP8: {
            float scales[L / DSD_QUANT_GROUP];
            dsd_ref_act_quant(src, L, cb->base.dims.act_scale_ue8m0, e, NULL, scales);
            memcpy(e + L, scales, sizeof scales);
            uint16_t *pe = (uint16_t *)(e + L + sizeof scales);
            for (int i = 0; i < R; i++)
                pe[i] = dsd_f32_to_bf16(src[L + i]);
            break;
        }
        case DSD_KV_BF16: {
            uint16_t *p = (uint16_t *)e;
            for (int i = 0; i < L + R; i++)
                p[i] = dsd_f32_to_bf16(src[i]);
            break;
        }
        case DSD_KV_F32:
            memcpy(e, src, (size_t)(L + R) * sizeof(float));
            break;
        }
    }
}

/* One cached entry back to floats: out[0:L] latent, out[L:L+R] k_pe. */
static void kv_read_entry(const struct dsd_kv_layout *lay, const uint8_t *e, float *out)
{
    const int L = lay->kv_lora_rank, R = lay->rope_dim;
    switch (lay->mla_dtype) {
    case DSD_KV_FP8: {
        float scales[L / DSD_QUANT_GROUP];
        memcpy(scales, e + L, sizeof scales);
        for (int i = 0; i < L; i++)
            out[i] = dsd_e4m3_lut[e[i]] * scales[i / DSD_QUANT_GROUP];
        const uint8_t *pe = e + L + sizeof scales;
        for (int i = 0; i < R; i++) {
            uint16_t h;
            memcpy(&h, pe + 2 * i, 2);
            out[L + i] = dsd_bf16_to_f32(h);
        }
        break;
    }
    case DSD_KV_BF16:
        for (int i = 0; i < L + R; i++) {
            uint16_t h;
            memcpy(&h, e + 2 * i, 2);
            out[i] = dsd_bf16_to_f32(h);
        }
        break;
    case DSD_KV_F32:
        memcpy(out, e, (size_t)(L + R) * sizeof(float));
        break;
    }
}

struct attn_task {
    struct cpu_backend *cb;
    float *out;
    const float *q;
    const float *wkvb;      /* prepared kv_b: [H*(N+V)][L] */
    const struct dsd_kv_layer *kv;
    const int32_t *sel;
    int topk;
    const struct dsd_step *st;
};

static void attention_token(void *p, int t, int thread)
{
    (void)thread;
    struct attn_task *a = p;
    struct cpu_backend *cb = a->cb;
    const struct dsd_model_dims *c = &cb->base.dims;
    const struct dsd_kv_layout *lay = &cb->base.kv_layout;
    const int H = c->num_attention_heads, N = c->qk_nope_head_dim, R = c->qk_rope_head_dim, V = c->v_head_dim;
    const int L = c->kv_lora_rank, E = L + R;
    const int32_t *sel = a->sel + (size_t)t * a->topk;
    const int32_t *pages = a->st->pages + a->st->page_off[a->st->seq[t]];
    const int32_t n_pos = (a->st->page_off[a->st->seq[t] + 1] - a->st->page_off[a->st->seq[t]]) * DSD_KV_PAGE_TOKENS;
    float *o = a->out + (size_t)t * H * V;

    /* the selection ends at its first -1; a position past the sequence's pages is not one of
     * its tokens and is skipped (as the CUDA kernel does) */
    int n = 0;
    while (n < a->topk && sel[n] >= 0)
        n++;
    int32_t *own = malloc((size_t)(n ? n : 1) * sizeof *own);
    if (!own)
        abort();
    int m_own = 0;
    for (int j = 0; j < n; j++)
        if (sel[j] < n_pos)
            own[m_own++] = sel[j];
    sel = own;
    n = m_own;
    float *ent = malloc(((size_t)n * E + (size_t)n + 2 * (size_t)L) * sizeof(float));
    if (!ent)
        abort();
    float *score = ent + (size_t)n * E, *qabs = score + n, *olat = qabs + L;
    for (int j = 0; j < n; j++) {
        int32_t pos = sel[j];
        size_t s = (size_t)pages[pos / DSD_KV_PAGE_TOKENS] * DSD_KV_PAGE_TOKENS + (size_t)(pos % DSD_KV_PAGE_TOKENS);
        kv_read_entry(lay, a->kv->mla + s * lay->mla_token_bytes, ent + (size_t)j * E);
    }
    for (int h = 0; h < H; h++) {
        const float *qn = a->q + (size_t)t * H * (N + R) + (size_t)h * (N + R), *qp = qn + N;
        const float *wuk = a->wkvb + (size_t)h * (N + V) * L, *wuv = wuk + (size_t)N * L;
        /* q_abs = W_UK[h]^T q_nope */
        for (int i = 0; i < L; i++)
            qabs[i] = 0.0f;
        for (int d = 0; d < N; d++) {
            float qd = qn[d];
            const float *row = wuk + (size_t)d * L;
            for (int i = 0; i < L; i++)
                qabs[i] += qd * row[i];
        }
        for (int i = 0; i < L; i++)
            qabs[i] = cpu_act(cb, qabs[i]);
        float m = -INFINITY;
        for (int j = 0; j < n; j++) {
            const float *e = ent + (size_t)j * E;
            score[j] = cb->softmax_scale * (dsd_ref_dot(qabs, e, L) + dsd_ref_dot(qp, e + L, R));
            m = fmaxf(m, score[j]);
        }
        float sum = 0.0f;
        for (int j = 0; j < n; j++) {
            score[j] = expf(score[j] - m);
            sum += score[j];
        }
        for (int i = 0; i < L; i++)
            olat[i] = 0.0f;
        for (int j = 0; j < n; j++) {
            float pj = score[j] / sum;
            const float *e = ent + (size_t)j * E;
            for (int i = 0; i < L; i++)
                olat[i] += pj * e[i];
        }
        for (int i = 0; i < L; i++)
            olat[i] = cpu_act(cb, olat[i]);
        for (int d = 0; d < V; d++)
            o[h * V + d] = n ? cpu_act(cb, dsd_ref_dot(olat, wuv + (size_t)d * L, L)) : 0.0f;
    }
    free(ent);
    free(own);
}

void cpu_op_mla_attention(struct dsd_backend *be, void *out_, const void *q_, const struct dsd_weight *kv_b, const struct dsd_kv_layer *kv, const int32_t *sel, int topk, const struct dsd_step *st)
{
    float *out = out_;
    const float *q = q_;
    struct cpu_backend *cb = cpu(be);
    DSD_CHECK(kv_b->prepared != NULL);
    struct attn_task a = { cb, out, q, kv_b->prepared, kv, sel, topk, st };
    dsd_thread_pool_run(cb->pool, st->n_tokens, attention_token, &a);
}
