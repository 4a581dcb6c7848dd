/* RMSNorm (with the fused residual add) and LayerNorm, computed in fp32 (docs/MODEL.md §3.2, §4.2). */
#include "cpu_backend.h"

#include <math.h>
#include <stdlib.h>

struct norm_task {
    struct cpu_backend *cb;
    float *out;
    int ldo;
    float *resid;          /* add_rmsnorm: the residual stream, updated in place */
    const float *x;
    int ldx;
    const float *delta;
    const float *w, *b;
    int n;
    float eps;
};

static void rms_row(const struct cpu_backend *cb, float *out, const float *x, const float *w, int n, float eps)
{
    float ss = dsd_ref_dot(x, x, n);
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = cpu_act(cb, w[i] * (x[i] * r));
}

static void rmsnorm_task(void *p, int t, int thread)
{
    (void)thread;
    struct norm_task *nt = p;
    rms_row(nt->cb, nt->out + (size_t)t * nt->ldo, nt->x + (size_t)t * nt->ldx, nt->w, nt->n, nt->eps);
}

void cpu_op_rmsnorm(struct dsd_backend *be, void *out_, int ldo, const void *x_, int ldx, const struct dsd_weight *w, int T, int n)
{
    float *out = out_;
    const float *x = x_;
    struct cpu_backend *cb = cpu(be);
    float *wv = malloc((size_t)n * sizeof *wv);
    if (!wv)
        abort();
    cpu_weight_vector(w, wv);
    struct norm_task nt = { .cb = cb, .out = out, .ldo = ldo, .x = x, .ldx = ldx, .w = wv, .n = n,
                            .eps = (float)cb->base.dims.rms_norm_eps };
    dsd_thread_pool_run(cb->pool, T, rmsnorm_task, &nt);
    free(wv);
}

static void add_rmsnorm_task(void *p, int t, int thread)
{
    (void)thread;
    struct norm_task *nt = p;
    float *r = nt->resid + (size_t)t * nt->n;
    if (nt->delta) {
        const float *d = nt->delta + (size_t)t * nt->n;
        for (int i = 0; i < nt->n; i++)
            r[i] = cpu_act(nt->cb, r[i] + d[i]);
    }
    rms_row(nt->cb, nt->out + (size_t)t * nt->n, r, nt->w, nt->n, nt->eps);
}

void cpu_op_add_rmsnorm(struct dsd_backend *be, void *out_, void *resid_, const void *delta_, const struct dsd_weight *w, int T)
{
    float *out = out_;
    float *resid = resid_;
    const float *delta = delta_;
    struct cpu_backend *cb = cpu(be);
    int n = (int)cb->base.dims.hidden_size;
    float *wv = malloc((size_t)n * sizeof *wv);
    if (!wv)
        abort();
    cpu_weight_vector(w, wv);
    struct norm_task nt = { .cb = cb, .out = out, .resid = resid, .delta = delta, .w = wv, .n = n,
                            .eps = (float)cb->base.dims.rms_norm_eps };
    dsd_thread_pool_run(cb->pool, T, add_rmsnorm_task, &nt);
    free(wv);
}

void cpu_op_layernorm(struct dsd_backend *be, void *out_, const void *x_, const struct dsd_weight *w, const struct dsd_weight *b, int T, int n)
{
    float *out = out_;
    const float *x = x_;
    struct cpu_backend *cb = cpu(be);
    float *wv = malloc((size_t)n * 2 * sizeof *wv);
    if (!wv)
        abort();
    cpu_weight_vector(w, wv);
    cpu_weight_vector(b, wv + n);
    for (int t = 0; t < T; t++) {
        const float *v = x + (size_t)t * n;
        float *o = out + (size_t)t * n;
        float mean = 0.0f;
        for (int i = 0; i < n; i++)
            mean += v[i];
        mean /= (float)n;
        float var = 0.0f;
        for (int i = 0; i < n; i++)
            var += (v[i] - mean) * (v[i] - mean);
        var /= (float)n;
        float r = 1.0f / sqrtf(var + 1e-6f);
        for (int i = 0; i < n; i++)
            o[i] = cpu_act(cb, (v[i] - mean) * r * wv[i] + wv[n + i]);
    }
    free(wv);
}
