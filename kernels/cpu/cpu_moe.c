/* SwiGLU MLPs and the MoE block (docs/MODEL.md §6). Experts run in parallel, each over the rows
 * routed to it; every token then sums its experts in ascending expert order in fp32 (the
 * reference's order), adds the shared expert and rounds once. */
#include "cpu_backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* h = silu(g) * u, rounded like an activation (bf16 before the down projection). */
static void swiglu_rows(const struct cpu_backend *cb, float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = cpu_act(cb, dsd_ref_swiglu(g[i], u[i]));
}

void cpu_op_mlp(struct dsd_backend *be, void *out_, const void *x_, const struct dsd_expert_weights *w, int T)
{
    float *out = out_;
    const float *x = x_;
    struct cpu_backend *cb = cpu(be);
    const int64_t D = cb->base.dims.hidden_size, I = w->gate.rows;
    float *g = xmalloc((size_t)T * I * sizeof *g), *u = xmalloc((size_t)T * I * sizeof *u);
    cpu_op_linear(be, g, (int)I, x, (int)D, &w->gate, T, 0);
    cpu_op_linear(be, u, (int)I, x, (int)D, &w->up, T, 0);
    swiglu_rows(cb, g, u, (size_t)T * I);
    cpu_op_linear(be, out, (int)D, g, (int)I, &w->down, T, 0);
    free(g);
    free(u);
}

/* Runs one SwiGLU expert over m gathered rows in the calling thread. */
static void expert_serial(const struct cpu_backend *cb, float *y, const float *xs, int m,
                          const struct dsd_expert_weights *w)
{
    const int64_t I = w->gate.rows;
    float *g = xmalloc((size_t)m * I * sizeof *g), *u = xmalloc((size_t)m * I * sizeof *u);
    cpu_linear_serial(cb, g, xs, &w->gate, m, 0);
    cpu_linear_serial(cb, u, xs, &w->up, m, 0);
    swiglu_rows(cb, g, u, (size_t)m * I);
    cpu_linear_serial(cb, y, g, &w->down, m, 0);
    free(g);
    free(u);
}

struct moe_ctx {
    struct cpu_backend *cb;
    const struct dsd_layer_weights *lw;
    const float *x;
    int T, k;
    const int32_t *experts;     /* [T][k] ascending per token */
    int32_t *row_start;         /* [E+1]: rows of expert e are rows[row_start[e]..row_start[e+1]) */
    int32_t *rows;              /* token*k + slot */
    float *y;                   /* [T*k][D] routed outputs */
    float *shared;              /* [T][D] */
};

static void moe_task(void *p, int task, int thread)
{
    (void)thread;
    struct moe_ctx *c = p;
    const int64_t D = c->cb->base.dims.hidden_size;
    const int E = c->cb->base.dims.n_routed_experts;
    if (task == E) {                        /* the shared expert sees every token */
        if (c->shared)
            expert_serial(c->cb, c->shared, c->x, c->T, &c->lw->shared);
        return;
    }
    int m = c->row_start[task + 1] - c->row_start[task];
    if (m == 0)
        return;
    float *xs = xmalloc((size_t)m * D * sizeof *xs), *ys = xmalloc((size_t)m * D * sizeof *ys);
    const int32_t *rows = c->rows + c->row_start[task];
    for (int i = 0; i < m; i++)
        memcpy(xs + (size_t)i * D, c->x + (size_t)(rows[i] / c->k) * D, (size_t)D * sizeof *xs);
    expert_serial(c->cb, ys, xs, m, &c->lw->experts[task]);
    for (int i = 0; i < m; i++)
        memcpy(c->y + (size_t)rows[i] * D, ys + (size_t)i * D, (size_t)D * sizeof *ys);
    free(xs);
    free(ys);
}

void cpu_op_moe(struct dsd_backend *be, void *out_, const void *x_, const struct dsd_layer_weights *lw, int T)
{
    float *out = out_;
    const float *x = x_;
    struct cpu_backend *cb = cpu(be);
    const struct dsd_model_dims *c = &cb->base.dims;
    const int64_t D = c->hidden_size;
    const int E = c->n_routed_experts, k = c->num_experts_per_tok;

    float *logits = xmalloc((size_t)T * E * sizeof *logits);
    cpu_op_linear(be, logits, E, x, (int)D, &lw->router, T, DSD_LINEAR_F32_OUT);
    float *bias = NULL;
    if (lw->router_bias.data) {
        bias = xmalloc((size_t)E * sizeof *bias);
        cpu_weight_vector(&lw->router_bias, bias);
    }
    int32_t *experts = xmalloc((size_t)T * k * sizeof *experts);
    float *weights = xmalloc((size_t)T * k * sizeof *weights);
    for (int t = 0; t < T; t++)
        dsd_ref_moe_route(logits + (size_t)t * E, bias, E, c->n_group, c->topk_group, k, c->norm_topk_prob,
                          (float)c->routed_scaling_factor, experts + (size_t)t * k, weights + (size_t)t * k);

    /* Bucket (token, slot) pairs by expert. */
    int32_t *row_start = xmalloc((size_t)(E + 1) * sizeof *row_start), *rows = xmalloc((size_t)T * k * sizeof *rows);
    memset(row_start, 0, (size_t)(E + 1) * sizeof *row_start);
    for (int i = 0; i < T * k; i++)
        row_start[experts[i] + 1]++;
    if (cb->moe_hits)
        for (int e = 0; e < E; e++)
            cb->moe_hits[(size_t)lw->index * E + e] += row_start[e + 1];
    for (int e = 0; e < E; e++)
        row_start[e + 1] += row_start[e];
    int32_t *fill = xmalloc((size_t)E * sizeof *fill);
    memcpy(fill, row_start, (size_t)E * sizeof *fill);
    for (int i = 0; i < T * k; i++)
        rows[fill[experts[i]]++] = i;

    struct moe_ctx ctx = {
        .cb = cb, .lw = lw, .x = x, .T = T, .k = k, .experts = experts, .row_start = row_start, .rows = rows,
        .y = xmalloc((size_t)T * k * D * sizeof(float)),
        .shared = c->n_shared_experts > 0 ? xmalloc((size_t)T * D * sizeof(float)) : NULL,
    };
    dsd_thread_pool_run(cb->pool, E + 1, moe_task, &ctx);

    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * D;
        for (int64_t i = 0; i < D; i++) {
            float acc = 0.0f;
            for (int s = 0; s < k; s++)
                acc += ctx.y[((size_t)t * k + s) * D + i] * weights[(size_t)t * k + s];
            if (ctx.shared)
                acc += ctx.shared[(size_t)t * D + i];
            o[i] = cpu_act(cb, acc);
        }
    }
    free(ctx.y);
    free(ctx.shared);
    free(fill);
    free(rows);
    free(row_start);
    free(weights);
    free(experts);
    free(bias);
    free(logits);
}
