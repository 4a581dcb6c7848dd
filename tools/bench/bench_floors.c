/* The floors of deepseekd-bench (contract in bench.h, formulas in docs/BENCH.md). */
#include "bench.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

double bench_weight_bytes(const struct dsd_weight *w)
{
    double b = (double)w->rows * (double)w->cols * (double)dsd_dtype_size(w->dtype);
    if (w->dtype == DSD_DTYPE_F8_E4M3)
        b += (double)((w->rows + 127) / 128) * (double)((w->cols + 127) / 128) * 4.0;
    return b;
}

static double expert_bytes(const struct dsd_expert_weights *e)
{
    return bench_weight_bytes(&e->gate) + bench_weight_bytes(&e->up) + bench_weight_bytes(&e->down);
}

double bench_expected_experts(int E, int k, int tokens)
{
    if (E <= 0)
        return 0.0;
    return (double)E * (1.0 - pow(1.0 - (double)k / E, tokens));
}

/* The layer whose weights stand for its kind (layer shapes depend only on the kind). */
static const struct dsd_layer_weights *layer_of_kind(const struct dsd_model *m, bool moe)
{
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (m->w.layers[l].is_moe == moe)
            return &m->w.layers[l];
    return NULL;
}

/* Attention, indexer and norm weights of a layer (kv_b as stored: FP8). */
static double attention_weight_bytes(const struct dsd_layer_weights *lw)
{
    const struct dsd_weight *v[] = {
        &lw->attn_norm, &lw->ffn_norm, &lw->q_a, &lw->q_a_norm, &lw->q_b, &lw->kv_a, &lw->kv_a_norm, &lw->kv_b,
        &lw->o_proj, &lw->idx_wq_b, &lw->idx_wk, &lw->idx_k_norm, &lw->idx_k_norm_bias, &lw->idx_weights_proj,
    };
    double b = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        b += bench_weight_bytes(v[i]);
    return b;
}

/* FLOPs of one token's linears in the attention half (projections, absorption, o_proj). */
static double attention_linear_flops(const struct dsd_model_config *c)
{
    const double D = (double)c->hidden_size, QR = c->q_lora_rank, H = c->num_attention_heads;
    const double N = c->qk_nope_head_dim, R = c->qk_rope_head_dim, L = c->kv_lora_rank, V = c->v_head_dim;
    const double Hi = c->index_n_heads, Di = c->index_head_dim;
    double macs = D * QR + QR * H * (N + R) + D * (L + R) + H * V * D   /* q_a, q_b, kv_a, o_proj */
                  + QR * Hi * Di + D * Di + D * Hi                      /* indexer wq_b, wk, weights_proj */
                  + H * N * L + H * L * V;                              /* absorbed q, value projection */
    return 2.0 * macs;
}

/* FLOPs of the attention core and the indexer scores for one token at position p. */
static double attention_context_flops(const struct dsd_model_config *c, double p)
{
    const double H = c->num_attention_heads, L = c->kv_lora_rank, R = c->qk_rope_head_dim;
    const double Hi = c->index_n_heads, Di = c->index_head_dim, topk = c->index_topk;
    const double ctx = p + 1, sel = ctx < topk ? ctx : topk;
    double f = 2.0 * H * sel * ((L + R) + L);       /* scores over [latent | rope], then P V over the latent */
    if (ctx > topk)
        f += 2.0 * Hi * Di * ctx;                   /* indexer: every cached key scored (only past top-k) */
    return f;
}

static double ffn_flops(const struct dsd_model_config *c, bool moe)
{
    const double D = (double)c->hidden_size;
    if (!moe)
        return 2.0 * 3.0 * D * (double)c->intermediate_size;
    return 2.0 * 3.0 * D * (double)c->moe_intermediate_size * (c->num_experts_per_tok + c->n_shared_experts) +
           2.0 * D * c->n_routed_experts;           /* router */
}

static double kv_read_bytes(const struct dsd_model *m, double ctx)
{
    const struct dsd_kv_layout lay = dsd_kv_layout_for(&m->dims, m->params.numerics, m->params.kv_dtype);
    const double topk = m->cfg.index_topk, sel = ctx < topk ? ctx : topk;
    double b = sel * (double)lay.mla_token_bytes;
    if (ctx > topk)
        b += ctx * (double)lay.index_page_bytes / DSD_KV_PAGE_TOKENS;
    return b;
}

/* Weights of a layer's FFN side (MoE: router, shared expert, the experts used). */
static void ffn_weights(const struct dsd_model *m, const struct dsd_layer_weights *lw, bool moe, int tokens,
                       double experts, struct bench_need *n)
{
    const struct dsd_model_config *c = &m->cfg;
    if (!moe) {
        n->weight_bytes += expert_bytes(&lw->mlp);
        return;
    }
    n->experts_measured = experts >= 0;
    n->experts_hit = experts >= 0 ? experts : bench_expected_experts(c->n_routed_experts, c->num_experts_per_tok, tokens);
    n->weight_bytes += bench_weight_bytes(&lw->router) + bench_weight_bytes(&lw->router_bias) +
                       (c->n_shared_experts > 0 ? expert_bytes(&lw->shared) : 0.0) +
                       n->experts_hit * expert_bytes(&lw->experts[0]);
}

struct bench_need bench_decode_need(const struct dsd_model *m, bool moe, int batch, int context, double experts)
{
    struct bench_need n = {0};
    const struct dsd_layer_weights *lw = layer_of_kind(m, moe);
    const struct dsd_model_config *c = &m->cfg;
    if (!lw)
        return n;
    n.weight_bytes = attention_weight_bytes(lw);
    ffn_weights(m, lw, moe, batch, experts, &n);
    n.kv_bytes = (double)batch * kv_read_bytes(m, (double)context + 1);
    n.flops = (double)batch * (attention_linear_flops(c) + attention_context_flops(c, context) + ffn_flops(c, moe));
    return n;
}

struct bench_need bench_prefill_need(const struct dsd_model *m, bool moe, int tokens, int pos0, double experts)
{
    struct bench_need n = {0};
    const struct dsd_layer_weights *lw = layer_of_kind(m, moe);
    const struct dsd_model_config *c = &m->cfg;
    if (!lw)
        return n;
    n.weight_bytes = attention_weight_bytes(lw);
    ffn_weights(m, lw, moe, tokens, experts, &n);
    /* the chunk reads the keys of the whole sequence once (its own tokens included) */
    n.kv_bytes = kv_read_bytes(m, (double)pos0 + tokens);
    double f = 0;
    for (int t = 0; t < tokens; t++)
        f += attention_context_flops(c, (double)pos0 + t);
    n.flops = f + (double)tokens * (attention_linear_flops(c) + ffn_flops(c, moe));
    return n;
}

struct bench_need bench_head_need(const struct dsd_model *m, int tokens, int rows)
{
    struct bench_need n = {0};
    const double D = (double)m->cfg.hidden_size;
    n.weight_bytes = bench_weight_bytes(&m->w.final_norm) + bench_weight_bytes(&m->w.lm_head) +
                     (double)tokens * D * (double)dsd_dtype_size(m->w.embed.dtype);
    n.flops = 2.0 * (double)rows * D * (double)m->cfg.vocab_size;
    return n;
}

/* ---- per-op floors (the per-op profile) ---- */

enum op_kind { OP_LINEAR, OP_NORM, OP_ATTENTION, OP_INDEXER, OP_FFN, OP_HEAD, OP_EMBED };

/* One row per op of the forward pass that has a floor: its profile name, what kind of work
 * it is, for linears and norms which weight of the layer it reads, and whether it runs
 * outside the layers (the head's ops, profiled with layer -1). */
#define LAYER_W(f) offsetof(struct dsd_layer_weights, f)
static const struct op_floor {
    const char *op;
    enum op_kind kind;
    size_t w;
    bool head;
} op_floors[] = {
    { .op = "q_a", .kind = OP_LINEAR, .w = LAYER_W(q_a) },
    { .op = "q_b", .kind = OP_LINEAR, .w = LAYER_W(q_b) },
    { .op = "kv_a", .kind = OP_LINEAR, .w = LAYER_W(kv_a) },
    { .op = "o_proj", .kind = OP_LINEAR, .w = LAYER_W(o_proj) },
    { .op = "idx_wq_b", .kind = OP_LINEAR, .w = LAYER_W(idx_wq_b) },
    { .op = "idx_wk", .kind = OP_LINEAR, .w = LAYER_W(idx_wk) },
    { .op = "idx_weights_proj", .kind = OP_LINEAR, .w = LAYER_W(idx_weights_proj) },
    { .op = "attn_norm", .kind = OP_NORM, .w = LAYER_W(attn_norm) },
    { .op = "ffn_norm", .kind = OP_NORM, .w = LAYER_W(ffn_norm) },
    { .op = "q_a_norm", .kind = OP_NORM, .w = LAYER_W(q_a_norm) },
    { .op = "kv_a_norm", .kind = OP_NORM, .w = LAYER_W(kv_a_norm) },
    { .op = "idx_k_norm", .kind = OP_NORM, .w = LAYER_W(idx_k_norm) },
    { .op = "mla_attention", .kind = OP_ATTENTION },
    { .op = "indexer_topk", .kind = OP_INDEXER },
    { .op = "mlp", .kind = OP_FFN },
    { .op = "moe", .kind = OP_FFN },
    { .op = "lm_head", .kind = OP_HEAD, .head = true },
    { .op = "embed", .kind = OP_EMBED, .head = true },
    { .op = "final_norm", .kind = OP_NORM, .head = true },
};
#undef LAYER_W

bool bench_op_need(const struct dsd_model *m, const char *op, int layer, const struct bench_step *s,
                   struct bench_need *n)
{
    const struct op_floor *f = NULL;
    for (size_t i = 0; i < sizeof op_floors / sizeof op_floors[0] && !f; i++)
        if (!strcmp(op_floors[i].op, op))
            f = &op_floors[i];
    *n = (struct bench_need){0};
    if (!f || s->seqs < 1 || s->tokens < s->seqs || layer >= m->w.n_layers)
        return false;
    if (f->head != (layer < 0))
        return false;
    const struct dsd_model_config *c = &m->cfg;
    const struct dsd_layer_weights *lw = layer >= 0 ? &m->w.layers[layer] : NULL;
    const double T = s->tokens, per_seq = (double)s->tokens / s->seqs, act = 2.0;     /* bf16 activations */
    const double D = (double)c->hidden_size, H = c->num_attention_heads, L = c->kv_lora_rank;
    const double R = c->qk_rope_head_dim, N = c->qk_nope_head_dim, V = c->v_head_dim, topk = c->index_topk;
    const double ctx_end = s->pos0 + per_seq;   /* positions every sequence holds after the step */
    const struct dsd_kv_layout lay = dsd_kv_layout_for(&m->dims, m->params.numerics, m->params.kv_dtype);
    switch (f->kind) {
    case OP_LINEAR: {
        const struct dsd_weight *w = (const struct dsd_weight *)((const char *)lw + f->w);
        if (!w->data && !w->rows)
            return false;
        n->weight_bytes = bench_weight_bytes(w);
        n->kv_bytes = T * (double)(w->rows + w->cols) * act;    /* activations in and out */
        n->flops = 2.0 * T * (double)w->rows * (double)w->cols;
        return true;
    }
    case OP_NORM: {
        const struct dsd_weight *w = lw ? (const struct dsd_weight *)((const char *)lw + f->w) : &m->w.final_norm;
        const double width = w->rows * w->cols > 0 ? (double)(w->rows * w->cols) : D;
        n->weight_bytes = bench_weight_bytes(w);
        n->kv_bytes = 2.0 * T * width * act;
        return true;
    }
    case OP_ATTENTION: {
        /* the entries a sequence's tokens select, each read once (at most every position),
         * the absorption weights as stored (kv_b), q and the output; FLOPs as docs/KERNELS.md */
        const double sel = ctx_end < per_seq * topk ? ctx_end : per_seq * topk;
        n->weight_bytes = bench_weight_bytes(&lw->kv_b);
        n->kv_bytes = s->seqs * sel * (double)lay.mla_token_bytes + T * H * ((N + R) + V) * act;
        for (int t = 0; t < (int)per_seq; t++) {
            const double p = s->pos0 + t + 1, k = p < topk ? p : topk;
            n->flops += s->seqs * 2.0 * H * k * ((L + R) + L);
        }
        n->flops += T * 2.0 * H * (N * L + L * V);
        return true;
    }
    case OP_INDEXER: {
        /* every cached index key of a sequence read once; scores only where context > top-k */
        const double Hi = c->index_n_heads, Di = c->index_head_dim;
        n->kv_bytes = s->seqs * ctx_end * (double)lay.index_page_bytes / DSD_KV_PAGE_TOKENS;
        for (int t = 0; t < (int)per_seq; t++) {
            const double p = s->pos0 + t + 1;
            if (p > topk)
                n->flops += s->seqs * 2.0 * Hi * Di * p;
        }
        return n->flops > 0;
    }
    case OP_FFN:
        ffn_weights(m, lw, lw->is_moe, s->tokens, -1.0, n);
        n->kv_bytes = 2.0 * T * D * act;
        n->flops = T * ffn_flops(c, lw->is_moe);
        return true;
    case OP_HEAD:
        n->weight_bytes = bench_weight_bytes(&m->w.lm_head);
        n->kv_bytes = s->rows * (D * act + (double)c->vocab_size * 4.0);
        n->flops = 2.0 * s->rows * D * (double)c->vocab_size;
        return true;
    case OP_EMBED:
        n->kv_bytes = 2.0 * T * D * (double)dsd_dtype_size(m->w.embed.dtype);
        return true;
    }
    return false;
}
