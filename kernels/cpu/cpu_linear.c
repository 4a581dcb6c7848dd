/* Linear layers (FP8 block-scaled, BF16, F16, F32 weights), embedding, row gathers. */
#include "cpu_backend.h"

#include <stdlib.h>
#include <string.h>

#define ROWS_PER_TASK 16

bool cpu_linear_quantize_input(const struct cpu_backend *cb, const struct dsd_weight *w, const float *x, int ldx,
                               int T, float *xq, float *xs)
{
    if (!cb->production || w->dtype != DSD_DTYPE_F8_E4M3)
        return false;
    int64_t K = w->cols, KB = K / DSD_QUANT_GROUP;
    for (int t = 0; t < T; t++)
        dsd_ref_act_quant(x + (size_t)t * ldx, (int)K, cb->base.dims.act_scale_ue8m0, NULL, xq + (size_t)t * K,
                          xs + (size_t)t * KB);
    return true;
}

void cpu_linear_rows(const struct cpu_backend *cb, float *y, int ldy, const float *x, int ldx, const float *xq,
                     const float *xs, const struct dsd_weight *w, int T, int64_t n0, int64_t n1, unsigned flags)
{
    const int64_t K = w->cols, KB = (K + DSD_QUANT_GROUP - 1) / DSD_QUANT_GROUP;
    const bool round_out = cb->production && !(flags & DSD_LINEAR_F32_OUT);
    float *wrow = malloc((size_t)K * sizeof *wrow);
    if (!wrow)
        abort(); /* a few KiB: failing here means the process is already lost */
    for (int64_t n = n0; n < n1; n++) {
        dsd_ref_weight_row(w, n, wrow);
        for (int t = 0; t < T; t++) {
            float acc;
            if (w->dtype == DSD_DTYPE_F8_E4M3) {
                /* Per 128-block partial sums, scaled and accumulated in fp32 (docs/MODEL.md §7.3). */
                acc = 0.0f;
                for (int64_t kb = 0; kb < KB; kb++) {
                    int64_t k0 = kb * DSD_QUANT_GROUP;
                    int len = (int)(K - k0 < DSD_QUANT_GROUP ? K - k0 : DSD_QUANT_GROUP);
                    float ws = dsd_ref_weight_scale(w, n, kb);
                    if (xq) {
                        float part = dsd_ref_dot(xq + (size_t)t * K + k0, wrow + k0, len);
                        acc += part * (xs[(size_t)t * KB + kb] * ws);
                    } else {
                        acc += dsd_ref_dot(x + (size_t)t * ldx + k0, wrow + k0, len) * ws;
                    }
                }
            } else {
                acc = dsd_ref_dot(x + (size_t)t * ldx, wrow, (int)K);
            }
            y[(size_t)t * ldy + n] = round_out ? dsd_round_bf16(acc) : acc;
        }
    }
    free(wrow);
}

/* The quantized copy of an FP8 linear's input in production numerics (NULLs otherwise). */
struct quantized_input {
    float *xq, *xs;
};

static struct quantized_input quantize_for(const struct cpu_backend *cb, const struct dsd_weight *w, const float *x,
                                           int ldx, int T)
{
    struct quantized_input q = { NULL, NULL };
    if (!cb->production || w->dtype != DSD_DTYPE_F8_E4M3)
        return q;
    q.xq = malloc((size_t)T * (size_t)w->cols * sizeof *q.xq);
    q.xs = malloc((size_t)T * (size_t)(w->cols / DSD_QUANT_GROUP) * sizeof *q.xs);
    if (!q.xq || !q.xs)
        abort();
    cpu_linear_quantize_input(cb, w, x, ldx, T, q.xq, q.xs);
    return q;
}

static void quantized_free(struct quantized_input *q)
{
    free(q->xq);
    free(q->xs);
}

void cpu_linear_serial(const struct cpu_backend *cb, float *y, const float *x, const struct dsd_weight *w, int T,
                       unsigned flags)
{
    struct quantized_input q = quantize_for(cb, w, x, (int)w->cols, T);
    cpu_linear_rows(cb, y, (int)w->rows, x, (int)w->cols, q.xq, q.xs, w, T, 0, w->rows, flags);
    quantized_free(&q);
}

struct linear_task {
    const struct cpu_backend *cb;
    float *y;
    int ldy;
    const float *x;
    int ldx;
    const float *xq, *xs;
    const struct dsd_weight *w;
    int T;
    unsigned flags;
};

static void linear_task_fn(void *p, int task, int thread)
{
    (void)thread;
    struct linear_task *lt = p;
    int64_t n0 = (int64_t)task * ROWS_PER_TASK, n1 = n0 + ROWS_PER_TASK;
    if (n1 > lt->w->rows)
        n1 = lt->w->rows;
    cpu_linear_rows(lt->cb, lt->y, lt->ldy, lt->x, lt->ldx, lt->xq, lt->xs, lt->w, lt->T, n0, n1, lt->flags);
}

void cpu_op_linear(struct dsd_backend *be, void *out_, int ldo, const void *x_, int ldx, const struct dsd_weight *w, int T, unsigned flags)
{
    float *out = out_;
    const float *x = x_;
    struct cpu_backend *cb = cpu(be);
    struct quantized_input q = quantize_for(cb, w, x, ldx, T);
    struct linear_task lt = { cb, out, ldo, x, ldx, q.xq, q.xs, w, T, flags };
    int tasks = (int)((w->rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK);
    dsd_thread_pool_run(cb->pool, tasks, linear_task_fn, &lt);
    quantized_free(&q);
}

void cpu_op_embed(struct dsd_backend *be, void *out_, const struct dsd_weight *table, const int32_t *tokens, int T)
{
    float *out = out_;
    struct cpu_backend *cb = cpu(be);
    int64_t D = table->cols;
    for (int t = 0; t < T; t++) {
        float *row = out + (size_t)t * D;
        dsd_ref_weight_row_dequant(table, tokens[t], row);
        for (int64_t i = 0; i < D; i++)
            row[i] = cpu_act(cb, row[i]);
    }
}

void cpu_op_concat(struct dsd_backend *be, void *out_, const void *a_, int na, const void *b_, int nb, int T)
{
    float *out = out_;
    const float *a = a_;
    const float *b = b_;
    (void)be;
    for (int t = 0; t < T; t++) {
        memcpy(out + (size_t)t * (na + nb), a + (size_t)t * na, (size_t)na * sizeof *out);
        memcpy(out + (size_t)t * (na + nb) + na, b + (size_t)t * nb, (size_t)nb * sizeof *out);
    }
}

void cpu_op_gather_rows(struct dsd_backend *be, void *out_, const void *x_, int n_cols, const int32_t *rows, int n)
{
    float *out = out_;
    const float *x = x_;
    (void)be;
    for (int i = 0; i < n; i++)
        memmove(out + (size_t)i * n_cols, x + (size_t)rows[i] * n_cols, (size_t)n_cols * sizeof *out);
}
