/*
 * The DeepSeek V3.2 forward graph (docs/MODEL.md §3-§8), written once against kernels/ops.h.
 *
 * Per layer: x = norm(resid); resid += MLA_DSA(x); x = norm(resid); resid += FFN(x).
 * MLA_DSA: q/kv projections, interleaved RoPE, latent KV store; indexer projections,
 * half-split RoPE, index-K store, top-k; sparse absorbed attention; o_proj.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* Activation buffers of one step, allocated from the backend and released at the end. */
struct step_bufs {
    float *resid, *x, *delta;       /* [T][D] */
    float *cq;                      /* [T][q_lora] */
    float *q;                       /* [T][H*(N+R)] */
    float *kva;                     /* [T][L+R] */
    float *iq;                      /* [T][Hi*Di] */
    float *ik, *ikn;                /* [T][Di] */
    float *iw;                      /* [T][Hi] */
    float *attn;                    /* [T][H*V] */
    int32_t *sel;                   /* [T][topk] */
    float *cat;                     /* MTP: [T][2D] */
};

struct step_meta {
    struct dsd_step st;
    int32_t *tokens, *pos, *seq, *slot;
    const int32_t **pages;
    int32_t *logit_rows;
    int n_logit_rows;
};

static void release_bufs(struct dsd_model *m, struct step_bufs *b)
{
    void *all[] = { b->resid, b->x, b->delta, b->cq, b->q, b->kva, b->iq, b->ik, b->ikn, b->iw, b->attn,
                    b->sel, b->cat };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            m->ops->release(m->be, all[i]);
    memset(b, 0, sizeof *b);
}

static int alloc_bufs(struct dsd_model *m, int T, bool mtp, struct step_bufs *b)
{
    const struct dsd_model_config *c = &m->cfg;
    const size_t t = (size_t)T, f = sizeof(float);
    const size_t D = (size_t)c->hidden_size, H = (size_t)c->num_attention_heads;
    memset(b, 0, sizeof *b);
    bool ok = true;
#define A(field, bytes) ok &= (b->field = m->ops->alloc(m->be, (bytes))) != NULL
    A(resid, t * D * f);
    A(x, t * D * f);
    A(delta, t * D * f);
    A(cq, t * (size_t)c->q_lora_rank * f);
    A(q, t * H * (size_t)dsd_cfg_qk_head_dim(c) * f);
    A(kva, t * (size_t)(c->kv_lora_rank + c->qk_rope_head_dim) * f);
    A(iq, t * (size_t)c->index_n_heads * (size_t)c->index_head_dim * f);
    A(ik, t * (size_t)c->index_head_dim * f);
    A(ikn, t * (size_t)c->index_head_dim * f);
    A(iw, t * (size_t)c->index_n_heads * f);
    A(attn, t * H * (size_t)c->v_head_dim * f);
    A(sel, t * (size_t)c->index_topk * sizeof(int32_t));
    if (mtp)
        A(cat, t * 2 * D * f);
#undef A
    if (!ok) {
        release_bufs(m, b);
        return -ENOMEM;
    }
    return 0;
}

static void free_meta(struct step_meta *s)
{
    free(s->tokens);
    free(s->pos);
    free(s->seq);
    free(s->slot);
    free(s->pages);
    free(s->logit_rows);
}

/* Flattens the ragged batch and checks everything a caller controls. */
static int build_meta(const struct dsd_model *m, const struct dsd_batch_seq *seqs, int n_seqs, struct step_meta *s,
                      struct dsd_err *err)
{
    memset(s, 0, sizeof *s);
    if (n_seqs <= 0)
        return dsd_errf(err, -EINVAL, "forward: empty batch");
    int T = 0, rows = 0;
    for (int i = 0; i < n_seqs; i++) {
        const struct dsd_batch_seq *q = &seqs[i];
        if (q->n_tokens <= 0 || !q->tokens || !q->kv)
            return dsd_errf(err, -EINVAL, "forward: sequence %d has no tokens or no KV pages", i);
        if (q->pos0 < 0 || (int64_t)q->pos0 + q->n_tokens > m->cfg.max_position_embeddings)
            return dsd_errf(err, -EINVAL, "forward: sequence %d reaches position %lld, past max_position_embeddings %lld",
                            i, (long long)q->pos0 + q->n_tokens - 1, (long long)m->cfg.max_position_embeddings);
        if ((int64_t)q->kv->n_pages * DSD_KV_PAGE_TOKENS < (int64_t)q->pos0 + q->n_tokens)
            return dsd_errf(err, -EINVAL, "forward: sequence %d has KV pages for %d positions, needs %d", i,
                            q->kv->n_pages * DSD_KV_PAGE_TOKENS, q->pos0 + q->n_tokens);
        if (T > INT32_MAX - q->n_tokens)
            return dsd_errf(err, -EINVAL, "forward: batch too large");
        T += q->n_tokens;
        rows += q->no_logits ? 0 : q->logits_all ? q->n_tokens : 1;
    }
    s->tokens = malloc((size_t)T * sizeof(int32_t));
    s->pos = malloc((size_t)T * sizeof(int32_t));
    s->seq = malloc((size_t)T * sizeof(int32_t));
    s->slot = malloc((size_t)T * sizeof(int32_t));
    s->pages = malloc((size_t)n_seqs * sizeof *s->pages);
    s->logit_rows = malloc((size_t)(rows ? rows : 1) * sizeof(int32_t));
    if (!s->tokens || !s->pos || !s->seq || !s->slot || !s->pages || !s->logit_rows) {
        free_meta(s);
        return dsd_errf(err, -ENOMEM, "forward: out of memory");
    }
    int t = 0;
    for (int i = 0; i < n_seqs; i++) {
        const struct dsd_batch_seq *q = &seqs[i];
        s->pages[i] = q->kv->pages;
        for (int j = 0; j < q->n_tokens; j++, t++) {
            int32_t tok = q->tokens[j], p = q->pos0 + j;
            if (tok < 0 || tok >= m->cfg.vocab_size) {
                free_meta(s);
                return dsd_errf(err, -EINVAL, "forward: sequence %d token %d is id %d, outside the vocabulary [0, %lld)",
                                i, j, tok, (long long)m->cfg.vocab_size);
            }
            s->tokens[t] = tok;
            s->pos[t] = p;
            s->seq[t] = i;
            s->slot[t] = q->kv->pages[p / DSD_KV_PAGE_TOKENS] * DSD_KV_PAGE_TOKENS + p % DSD_KV_PAGE_TOKENS;
            if (!q->no_logits && (q->logits_all || j == q->n_tokens - 1))
                s->logit_rows[s->n_logit_rows++] = t;
        }
    }
    s->st = (struct dsd_step){
        .n_tokens = T, .tokens = s->tokens, .pos = s->pos, .seq = s->seq, .slot = s->slot,
        .n_seqs = n_seqs, .page_table = s->pages,
    };
    return 0;
}

/* resid += MLA_DSA(norm(resid)) for one layer; leaves the attention output in b->delta. */
static void attention(struct dsd_model *m, int layer, const struct dsd_kv_layer *kv, const struct dsd_step *st,
                      struct step_bufs *b, int32_t *topk_trace)
{
    const struct dsd_model_config *c = &m->cfg;
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    const struct dsd_ops *o = m->ops;
    struct dsd_backend *be = m->be;
    const int T = st->n_tokens, D = (int)c->hidden_size, QR = c->q_lora_rank;
    const int H = c->num_attention_heads, N = c->qk_nope_head_dim, R = c->qk_rope_head_dim;
    const int L = c->kv_lora_rank, Hi = c->index_n_heads, Di = c->index_head_dim;
    const int QD = H * (N + R);

    /* MLA projections; qr (in cq after the norm) also feeds the indexer. */
    o->linear(be, b->cq, QR, b->x, D, &lw->q_a, T, 0);
    o->rmsnorm(be, b->cq, QR, b->cq, QR, &lw->q_a_norm, T, QR);
    o->linear(be, b->q, QD, b->cq, QR, &lw->q_b, T, 0);
    o->linear(be, b->kva, L + R, b->x, D, &lw->kv_a, T, 0);
    o->rmsnorm(be, b->kva, L + R, b->kva, L + R, &lw->kv_a_norm, T, L);
    o->rope(be, b->q, QD, H, N + R, N, st->pos, T, true);
    o->rope(be, b->kva, L + R, 1, 0, L, st->pos, T, true);
    o->mla_kv_store(be, kv, b->kva, L + R, st->slot, T);

    /* DSA indexer: its keys are stored before any token of the step scores (candidates <= pos). */
    o->linear(be, b->iq, Hi * Di, b->cq, QR, &lw->idx_wq_b, T, 0);
    o->linear(be, b->ik, Di, b->x, D, &lw->idx_wk, T, 0);
    o->layernorm(be, b->ikn, b->ik, &lw->idx_k_norm, &lw->idx_k_norm_bias, T, Di);
    o->linear(be, b->iw, Hi, b->x, D, &lw->idx_weights_proj, T, DSD_LINEAR_F32_OUT);
    o->rope(be, b->iq, Hi * Di, Hi, Di, 0, st->pos, T, false);
    o->rope(be, b->ikn, Di, 1, 0, 0, st->pos, T, false);
    o->index_k_store(be, kv, b->ikn, st->slot, T);
    o->indexer_topk(be, b->sel, c->index_topk, b->iq, b->iw, kv, st);
    if (topk_trace)
        o->download(be, topk_trace, b->sel, (size_t)T * c->index_topk * sizeof(int32_t));

    o->mla_attention(be, b->attn, b->q, &lw->kv_b, kv, b->sel, c->index_topk, st);
    o->linear(be, b->delta, D, b->attn, H * c->v_head_dim, &lw->o_proj, T, 0);
}

static void ffn(struct dsd_model *m, int layer, int T, struct step_bufs *b)
{
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    if (lw->is_moe)
        m->ops->moe(m->be, b->delta, b->x, lw, T);
    else
        m->ops->mlp(m->be, b->delta, b->x, &lw->mlp, T);
}

/* One decoder layer on the residual stream b->resid; `first` when resid has no pending delta. */
static void decoder_layer(struct dsd_model *m, int layer, struct dsd_kv_cache *kv, const struct dsd_step *st,
                          struct step_bufs *b, bool first, int32_t *topk_trace)
{
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    m->ops->add_rmsnorm(m->be, b->x, b->resid, first ? NULL : b->delta, &lw->attn_norm, st->n_tokens);
    attention(m, layer, dsd_kv_cache_layer(kv, layer), st, b, topk_trace);
    m->ops->add_rmsnorm(m->be, b->x, b->resid, b->delta, &lw->ffn_norm, st->n_tokens);
    ffn(m, layer, st->n_tokens, b);
}

/* Final norm (into b->x), optional hidden download, LM head over the rows that need logits. */
static int finish(struct dsd_model *m, const struct dsd_weight *norm, struct step_meta *s, struct step_bufs *b,
                  struct dsd_forward_out *out, struct dsd_err *err)
{
    const struct dsd_model_config *c = &m->cfg;
    const int T = s->st.n_tokens, D = (int)c->hidden_size;
    m->ops->add_rmsnorm(m->be, b->x, b->resid, b->delta, norm, T);
    if (out->hidden)
        m->ops->download(m->be, out->hidden, b->x, (size_t)T * D * sizeof(float));
    out->n_rows = s->n_logit_rows;
    if (!out->logits || s->n_logit_rows == 0)
        return 0;
    size_t rows = (size_t)s->n_logit_rows;
    float *h = m->ops->alloc(m->be, rows * D * sizeof(float));
    float *logits = m->ops->alloc(m->be, rows * (size_t)c->vocab_size * sizeof(float));
    if (!h || !logits) {
        if (h)
            m->ops->release(m->be, h);
        if (logits)
            m->ops->release(m->be, logits);
        return dsd_errf(err, -ENOMEM, "forward: out of memory for %zu logits rows", rows);
    }
    m->ops->gather_rows(m->be, h, b->x, D, s->logit_rows, (int)rows);
    m->ops->linear(m->be, logits, (int)c->vocab_size, h, D, &m->w.lm_head, (int)rows, DSD_LINEAR_F32_OUT);
    m->ops->download(m->be, out->logits, logits, rows * (size_t)c->vocab_size * sizeof(float));
    m->ops->release(m->be, h);
    m->ops->release(m->be, logits);
    return 0;
}

int dsd_model_forward(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs, int n_seqs,
                      struct dsd_forward_out *out, struct dsd_err *err)
{
    struct step_meta s;
    struct step_bufs b;
    int rc = build_meta(m, seqs, n_seqs, &s, err);
    if (rc)
        return rc;
    const int T = s.st.n_tokens;
    if ((rc = alloc_bufs(m, T, false, &b))) {
        free_meta(&s);
        return dsd_errf(err, rc, "forward: out of memory for %d tokens", T);
    }
    m->ops->embed(m->be, b.resid, &m->w.embed, s.st.tokens, T);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        decoder_layer(m, l, kv, &s.st, &b, l == 0,
                      out->topk ? out->topk + (size_t)l * T * m->cfg.index_topk : NULL);
    rc = finish(m, &m->w.final_norm, &s, &b, out, err);
    release_bufs(m, &b);
    free_meta(&s);
    return rc;
}

int dsd_model_forward_mtp(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs,
                          int n_seqs, const float *hidden_in, struct dsd_forward_out *out, struct dsd_err *err)
{
    const struct dsd_model_config *c = &m->cfg;
    if (c->num_nextn_predict_layers < 1)
        return dsd_errf(err, -EINVAL, "this checkpoint has no MTP layer (num_nextn_predict_layers = 0)");
    struct step_meta s;
    struct step_bufs b;
    int rc = build_meta(m, seqs, n_seqs, &s, err);
    if (rc)
        return rc;
    const int T = s.st.n_tokens, D = (int)c->hidden_size, layer = c->num_hidden_layers;
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    if ((rc = alloc_bufs(m, T, true, &b))) {
        free_meta(&s);
        return dsd_errf(err, rc, "forward: out of memory for %d tokens", T);
    }
    /* z = eh_proj([enorm(embed(t_{i+1})) ; hnorm(h_i)]), embedding half first (docs/MODEL.md §8). */
    m->ops->embed(m->be, b.delta, &m->w.embed, s.st.tokens, T);
    m->ops->rmsnorm(m->be, b.x, D, b.delta, D, &lw->enorm, T, D);
    m->ops->upload(m->be, b.delta, hidden_in, (size_t)T * D * sizeof(float));
    m->ops->rmsnorm(m->be, b.delta, D, b.delta, D, &lw->hnorm, T, D);
    m->ops->concat(m->be, b.cat, b.x, D, b.delta, D, T);
    m->ops->linear(m->be, b.resid, D, b.cat, 2 * D, &lw->eh_proj, T, 0);
    decoder_layer(m, layer, kv, &s.st, &b, true, out->topk);
    rc = finish(m, &lw->head_norm, &s, &b, out, err);
    release_bufs(m, &b);
    free_meta(&s);
    return rc;
}
