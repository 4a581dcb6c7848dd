/*
 * GPU host only (tests/gpu/run.sh): the CUDA activation ops of kernels/cuda/cuda_act.cu
 * against the CPU backend (production numerics): from_f32/to_f32, embed (BF16, F32 and FP8
 * tables), rmsnorm (strided, in place, BF16 and F32 weights), add_rmsnorm (with and without
 * delta; the updated residual too), layernorm, rope (MLA interleaved q and kv, indexer
 * half-split q and k), concat, gather_rows. Configs: tiny, "other" (another hidden size, head
 * count, rope dim 32, eps 1e-5) and full V3.2 dims; timings at full dims.
 * Copies and conversions must be exact (gate 0); norms and RoPE differ from the CPU only by
 * the fp32 summation order of a reduction or the device's double cos/sin (gate 1e-3).
 * Exit 0 all passed, 1 a failure, 77 no GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_harness.h"
#include "numeric.h"

#define GATE_EXACT 0.0
#define GATE_NORM 1e-3

/* The same activation buffer on both backends. */
struct pair {
    void *c, *g;
    int T, n;
};

static int pair_alloc(struct gh_ctx *h, struct pair *p, int T, int n)
{
    p->T = T;
    p->n = n;
    p->c = gh_alloc_act(h->cpu, T, n);
    p->g = gh_alloc_act(h->gpu, T, n);
    return p->c && p->g ? 0 : -1;
}

static void pair_free(struct gh_ctx *h, struct pair *p)
{
    if (p->c)
        h->co->release(h->cpu, p->c);
    if (p->g)
        h->go->release(h->gpu, p->g);
    p->c = p->g = NULL;
}

static void pair_put(struct gh_ctx *h, struct pair *p, const float *v)
{
    gh_put(h->cpu, p->c, v, p->T, p->n);
    gh_put(h->gpu, p->g, v, p->T, p->n);
}

static void pair_poison(struct gh_ctx *h, struct pair *p)
{
    gh_poison_act(h->cpu, p->c, p->T, p->n);
    gh_poison_act(h->gpu, p->g, p->T, p->n);
}

/* Downloads both and checks columns [c0, c0+w) of every row (the whole row when w == 0). */
static bool pair_check(struct gh_ctx *h, struct pair *p, const char *op, const char *shape, double gate, int c0,
                       int w)
{
    size_t n = (size_t)p->T * p->n;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    bool ok = false;
    if (a && b && !gh_get(h->gpu, a, p->g, p->T, p->n) && !gh_get(h->cpu, b, p->c, p->T, p->n)) {
        if (w) {
            size_t k = 0;
            for (int t = 0; t < p->T; t++)
                for (int c = c0; c < c0 + w; c++, k++) {
                    a[k] = a[(size_t)t * p->n + c];
                    b[k] = b[(size_t)t * p->n + c];
                }
            n = k;
        }
        ok = gh_check(h, op, shape, a, b, n, gate);
    } else {
        gh_fail("%s %s: download failed", op, shape);
    }
    free(a);
    free(b);
    return ok;
}

/* An int32 array on both backends. */
static void ints_put(struct gh_ctx *h, int32_t **c, int32_t **g, const int32_t *v, int n)
{
    *c = gh_alloc(h->cpu, (size_t)n * 4);
    *g = gh_alloc(h->gpu, (size_t)n * 4);
    if (*c)
        gh_upload(h->cpu, *c, v, (size_t)n * 4);
    if (*g)
        gh_upload(h->gpu, *g, v, (size_t)n * 4);
}

static void ints_free(struct gh_ctx *h, int32_t *c, int32_t *g)
{
    if (c)
        h->co->release(h->cpu, c);
    if (g)
        h->go->release(h->gpu, g);
}

/* One weight prepared on both backends. */
struct wpair {
    struct gh_wset c, g;
};

/* Clones m to both backends and prepares it (one prepare per backend at a time: the CUDA
 * backend holds one weight block); frees m's host weights. */
static int wpair_model(struct gh_ctx *h, struct wpair *wp, struct dsd_model_weights *m)
{
    memset(wp, 0, sizeof *wp);
    int rc = gh_wset_clone(&wp->c, m, 0) || gh_wset_clone(&wp->g, m, 0);
    gh_weight_free(&m->embed);
    gh_weight_free(&m->final_norm);
    gh_weight_free(&m->lm_head);
    if (rc || gh_wset_prepare(&wp->c, h->cpu) || gh_wset_prepare(&wp->g, h->gpu))
        return -1;
    return 0;
}

/* One random weight, as the lm_head of both copies. */
static int wpair_make(struct gh_ctx *h, struct wpair *wp, enum dsd_dtype dt, int64_t rows, int64_t cols, float amp,
                      float offset, const char *name)
{
    struct dsd_model_weights m;
    memset(&m, 0, sizeof m);
    memset(wp, 0, sizeof *wp);
    if (gh_rand_weight(&m.lm_head, dt, rows, cols, amp, offset, name)) {
        gh_fail("%s: out of host memory", name);
        return -1;
    }
    return wpair_model(h, wp, &m);
}

static void wpair_free(struct wpair *wp)
{
    gh_wset_free(&wp->c);
    gh_wset_free(&wp->g);
}

static float *rand_host(size_t n, float amp, bool bf16)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
        gh_fail("out of host memory (%zu floats)", n);
        return NULL;
    }
    gh_fill(v, n, amp, bf16);
    return v;
}

/* ---- the checks ---- */

static void test_convert(struct gh_ctx *h, int T, int n)
{
    struct pair p;
    char shape[96];
    snprintf(shape, sizeof shape, "T=%d n=%d", T, n);
    float *v = rand_host((size_t)T * n, 3.0f, false);   /* not bf16 values: from_f32 must round */
    if (!v || pair_alloc(h, &p, T, n))
        goto out;
    pair_poison(h, &p);
    pair_put(h, &p, v);
    pair_check(h, &p, "from_f32+to_f32", shape, GATE_EXACT, 0, 0);
out:
    pair_free(h, &p);
    free(v);
}

static void test_embed(struct gh_ctx *h, enum dsd_dtype dt, int T)
{
    const int D = (int)h->conf->dims.hidden_size;
    int64_t V = h->conf->dims.vocab_size < 4096 ? h->conf->dims.vocab_size : 4096;
    struct wpair wp;
    memset(&wp, 0, sizeof wp);
    struct pair o = { 0 };
    int32_t *tok = malloc((size_t)T * 4), *tc = NULL, *tg = NULL;
    char shape[96];
    snprintf(shape, sizeof shape, "T=%d D=%d %s", T, D,
             dt == DSD_DTYPE_BF16 ? "bf16" : dt == DSD_DTYPE_F32 ? "f32" : "fp8");
    if (!tok || wpair_make(h, &wp, dt, V, D, 0.05f, 0.0f, "embed"))
        goto out;
    for (int t = 0; t < T; t++)
        tok[t] = t == 0 ? (int32_t)(V - 1) : (int32_t)((gh_frand() * 0.5f + 0.5f) * (float)(V - 1));
    ints_put(h, &tc, &tg, tok, T);
    if (pair_alloc(h, &o, T, D))
        goto out;
    pair_poison(h, &o);
    h->co->embed(h->cpu, o.c, &wp.c.w.lm_head, tc, T);
    h->go->embed(h->gpu, o.g, &wp.g.w.lm_head, tg, T);
    pair_check(h, &o, "embed", shape, GATE_EXACT, 0, 0);
out:
    wpair_free(&wp);
    pair_free(h, &o);
    ints_free(h, tc, tg);
    free(tok);
}

/* x at column offset xo of rows of width ldx; out at column offset oo of rows of width ldo
 * (in place when ldo == 0: out = x). */
static void test_rmsnorm(struct gh_ctx *h, int T, int n, int ldx, int xo, int ldo, int oo, enum dsd_dtype wdt)
{
    struct wpair wp;
    memset(&wp, 0, sizeof wp);
    struct pair x = { 0 }, o = { 0 };
    char shape[128];
    bool inplace = ldo == 0;
    snprintf(shape, sizeof shape, "T=%d n=%d ldx=%d ldo=%d%s w=%s", T, n, ldx, inplace ? ldx : ldo,
             inplace ? " in-place" : "", wdt == DSD_DTYPE_BF16 ? "bf16" : "f32");
    float *v = rand_host((size_t)T * ldx, 1.5f, true);
    if (!v || wpair_make(h, &wp, wdt, 1, n, 0.2f, 1.0f, "norm.weight") || pair_alloc(h, &x, T, ldx) ||
        (!inplace && pair_alloc(h, &o, T, ldo)))
        goto out;
    pair_put(h, &x, v);
    if (!inplace)
        pair_poison(h, &o);
    size_t ab_c = dsd_backend_act_bytes(h->cpu), ab_g = dsd_backend_act_bytes(h->gpu);
    void *xc = (char *)x.c + xo * ab_c, *xg = (char *)x.g + xo * ab_g;
    void *oc = inplace ? xc : (char *)o.c + oo * ab_c, *og = inplace ? xg : (char *)o.g + oo * ab_g;
    h->co->rmsnorm(h->cpu, oc, inplace ? ldx : ldo, xc, ldx, &wp.c.w.lm_head, T, n);
    h->go->rmsnorm(h->gpu, og, inplace ? ldx : ldo, xg, ldx, &wp.g.w.lm_head, T, n);
    if (inplace) {
        pair_check(h, &x, "rmsnorm", shape, GATE_NORM, 0, 0);     /* the untouched columns too */
    } else {
        pair_check(h, &o, "rmsnorm", shape, GATE_NORM, oo, n);
        /* columns outside [oo, oo+n) must still be NaN on the GPU */
        if (ldo > n) {
            float *a = malloc((size_t)T * ldo * sizeof *a);
            if (a && !gh_get(h->gpu, a, o.g, T, ldo)) {
                size_t touched = 0;
                for (int t = 0; t < T; t++)
                    for (int c = 0; c < ldo; c++)
                        if ((c < oo || c >= oo + n) && !isnan(a[(size_t)t * ldo + c]))
                            touched++;
                gh_report(h, "rmsnorm ldo padding", shape, (double)touched, 0, 0, touched == 0);
            }
            free(a);
        }
    }
out:
    wpair_free(&wp);
    pair_free(h, &x);
    pair_free(h, &o);
    free(v);
}

static void test_add_rmsnorm(struct gh_ctx *h, int T, bool with_delta)
{
    const int D = (int)h->conf->dims.hidden_size;
    struct wpair wp;
    memset(&wp, 0, sizeof wp);
    struct pair r = { 0 }, d = { 0 }, o = { 0 };
    char shape[96];
    snprintf(shape, sizeof shape, "T=%d D=%d%s", T, D, with_delta ? "" : " delta=NULL");
    float *rv = rand_host((size_t)T * D, 2.0f, true), *dv = rand_host((size_t)T * D, 0.5f, true);
    if (!rv || !dv || wpair_make(h, &wp, DSD_DTYPE_BF16, 1, D, 0.2f, 1.0f, "ffn_norm") || pair_alloc(h, &r, T, D) ||
        pair_alloc(h, &d, T, D) || pair_alloc(h, &o, T, D))
        goto out;
    pair_put(h, &r, rv);
    pair_put(h, &d, dv);
    pair_poison(h, &o);
    h->co->add_rmsnorm(h->cpu, o.c, r.c, with_delta ? d.c : NULL, &wp.c.w.lm_head, T);
    h->go->add_rmsnorm(h->gpu, o.g, r.g, with_delta ? d.g : NULL, &wp.g.w.lm_head, T);
    pair_check(h, &o, "add_rmsnorm out", shape, GATE_NORM, 0, 0);
    pair_check(h, &r, "add_rmsnorm resid", shape, GATE_EXACT, 0, 0);
out:
    wpair_free(&wp);
    pair_free(h, &r);
    pair_free(h, &d);
    pair_free(h, &o);
    free(rv);
    free(dv);
}

static void test_layernorm(struct gh_ctx *h, int T, int n, enum dsd_dtype wdt)
{
    struct wpair w;
    struct dsd_model_weights m;
    memset(&w, 0, sizeof w);
    memset(&m, 0, sizeof m);
    struct pair x = { 0 }, o = { 0 };
    char shape[96];
    snprintf(shape, sizeof shape, "T=%d n=%d w=%s", T, n, wdt == DSD_DTYPE_BF16 ? "bf16" : "f32");
    float *v = rand_host((size_t)T * n, 2.0f, true);
    if (v)
        for (size_t i = 0; i < (size_t)T * n; i++)
            v[i] = dsd_round_bf16(v[i] + 0.7f);     /* a mean to subtract */
    if (!v || gh_rand_weight(&m.lm_head, wdt, 1, n, 0.2f, 1.0f, "k_norm.weight") ||
        gh_rand_weight(&m.final_norm, wdt, 1, n, 0.1f, 0.0f, "k_norm.bias") || wpair_model(h, &w, &m) ||
        pair_alloc(h, &x, T, n) || pair_alloc(h, &o, T, n))
        goto out;
    pair_put(h, &x, v);
    pair_poison(h, &o);
    h->co->layernorm(h->cpu, o.c, x.c, &w.c.w.lm_head, &w.c.w.final_norm, T, n);
    h->go->layernorm(h->gpu, o.g, x.g, &w.g.w.lm_head, &w.g.w.final_norm, T, n);
    pair_check(h, &o, "layernorm", shape, GATE_NORM, 0, 0);
out:
    gh_weight_free(&m.lm_head);
    gh_weight_free(&m.final_norm);
    wpair_free(&w);
    pair_free(h, &x);
    pair_free(h, &o);
    free(v);
}

static void test_rope(struct gh_ctx *h, const char *what, int T, int ld, int n_heads, int head_stride, int offset,
                      bool interleaved)
{
    struct pair x = { 0 };
    int32_t *pos = malloc((size_t)T * 4), *pc = NULL, *pg = NULL;
    char shape[128];
    snprintf(shape, sizeof shape, "%s T=%d ld=%d heads=%d stride=%d off=%d", what, T, ld, n_heads, head_stride,
             offset);
    float *v = rand_host((size_t)T * ld, 1.0f, true);
    if (!v || !pos || pair_alloc(h, &x, T, ld))
        goto out;
    int64_t maxp = h->conf->dims.max_position_embeddings;
    for (int t = 0; t < T; t++)
        pos[t] = t < 3 ? (int32_t)(t == 2 ? maxp - 1 : t) : (int32_t)((gh_frand() * 0.5f + 0.5f) * (float)(maxp - 1));
    ints_put(h, &pc, &pg, pos, T);
    pair_put(h, &x, v);
    h->co->rope(h->cpu, x.c, ld, n_heads, head_stride, offset, pc, T, interleaved);
    h->go->rope(h->gpu, x.g, ld, n_heads, head_stride, offset, pg, T, interleaved);
    pair_check(h, &x, interleaved ? "rope interleaved" : "rope half-split", shape, GATE_NORM, 0, 0);
out:
    pair_free(h, &x);
    ints_free(h, pc, pg);
    free(pos);
    free(v);
}

static void test_concat_gather(struct gh_ctx *h, int T)
{
    const int D = (int)h->conf->dims.hidden_size;
    struct pair a = { 0 }, b = { 0 }, o = { 0 }, g = { 0 };
    int32_t *rows = malloc((size_t)T * 4), *rc = NULL, *rg = NULL;
    char shape[96];
    float *av = rand_host((size_t)T * D, 1.0f, true), *bv = rand_host((size_t)T * D, 1.0f, true);
    if (!av || !bv || !rows || pair_alloc(h, &a, T, D) || pair_alloc(h, &b, T, D) || pair_alloc(h, &o, T, 2 * D) ||
        pair_alloc(h, &g, T, D))
        goto out;
    pair_put(h, &a, av);
    pair_put(h, &b, bv);
    pair_poison(h, &o);
    pair_poison(h, &g);
    h->co->concat(h->cpu, o.c, a.c, D, b.c, D, T);
    h->go->concat(h->gpu, o.g, a.g, D, b.g, D, T);
    snprintf(shape, sizeof shape, "T=%d %d+%d", T, D, D);
    pair_check(h, &o, "concat", shape, GATE_EXACT, 0, 0);
    for (int i = 0; i < T; i++)
        rows[i] = (int32_t)((gh_frand() * 0.5f + 0.5f) * (float)(T - 1));
    rows[T - 1] = T - 1;
    ints_put(h, &rc, &rg, rows, T);
    h->co->gather_rows(h->cpu, g.c, a.c, D, rc, T);
    h->go->gather_rows(h->gpu, g.g, a.g, D, rg, T);
    snprintf(shape, sizeof shape, "n=%d cols=%d", T, D);
    pair_check(h, &g, "gather_rows", shape, GATE_EXACT, 0, 0);
out:
    pair_free(h, &a);
    pair_free(h, &b);
    pair_free(h, &o);
    pair_free(h, &g);
    ints_free(h, rc, rg);
    free(rows);
    free(av);
    free(bv);
}

/* ---- timing at full dims ---- */

struct timed {
    struct gh_ctx *h;
    int kind, T, n;
    void *o, *x, *r;
    const struct dsd_weight *w, *b;
    const int32_t *ints;
};

static void timed_call(void *p)
{
    struct timed *a = p;
    struct dsd_backend *g = a->h->gpu;
    const struct dsd_ops *o = a->h->go;
    const struct dsd_model_dims *d = &a->h->conf->dims;
    const int H = d->num_attention_heads, N = d->qk_nope_head_dim, R = d->qk_rope_head_dim;
    switch (a->kind) {
    case 0: o->rmsnorm(g, a->o, a->n, a->x, a->n, a->w, a->T, a->n); break;
    case 1: o->add_rmsnorm(g, a->o, a->r, a->x, a->w, a->T); break;
    case 2: o->rope(g, a->x, H * (N + R), H, N + R, N, a->ints, a->T, true); break;
    case 3: o->embed(g, a->o, a->w, a->ints, a->T); break;
    case 4: o->layernorm(g, a->o, a->x, a->w, a->b, a->T, a->n); break;
    }
}

static void time_ops(struct gh_ctx *h, int T)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int D = (int)d->hidden_size, H = d->num_attention_heads, QD = H * (d->qk_nope_head_dim + d->qk_rope_head_dim);
    struct wpair wp;
    struct dsd_model_weights m;
    memset(&wp, 0, sizeof wp);
    memset(&m, 0, sizeof m);
    void *o = gh_alloc_act(h->gpu, T, QD > 2 * D ? QD : 2 * D), *x = gh_alloc_act(h->gpu, T, QD > D ? QD : D),
         *r = gh_alloc_act(h->gpu, T, D);
    int32_t *ints = gh_alloc(h->gpu, (size_t)T * 4);
    char shape[96];
    if (!o || !x || !r || !ints || gh_rand_weight(&m.lm_head, DSD_DTYPE_BF16, 1, D, 0.2f, 1.0f, "norm") ||
        gh_rand_weight(&m.embed, DSD_DTYPE_BF16, 4096, D, 0.05f, 0.0f, "embed") ||
        gh_rand_weight(&m.final_norm, DSD_DTYPE_BF16, 1, 128, 0.05f, 1.0f, "k_norm") || wpair_model(h, &wp, &m))
        goto out;
    struct timed a = { .h = h, .T = T, .n = D, .o = o, .x = x, .r = r, .w = &wp.g.w.lm_head, .ints = ints };
    double act = (double)T * D * 2;
    snprintf(shape, sizeof shape, "T=%d n=%d", T, D);
    a.kind = 0;
    gh_report_time(h, "rmsnorm", shape, gh_time_gpu(h, timed_call, &a), 2 * act, 0);
    a.kind = 1;
    gh_report_time(h, "add_rmsnorm", shape, gh_time_gpu(h, timed_call, &a), 4 * act, 0);
    a.kind = 2;
    snprintf(shape, sizeof shape, "q T=%d heads=%d", T, H);
    gh_report_time(h, "rope interleaved", shape, gh_time_gpu(h, timed_call, &a), (double)T * H * 64 * 2 * 2, 0);
    a.kind = 3;
    a.w = &wp.g.w.embed;
    snprintf(shape, sizeof shape, "T=%d D=%d", T, D);
    gh_report_time(h, "embed", shape, gh_time_gpu(h, timed_call, &a), 2 * act, 0);
    a.kind = 4;
    a.n = 128;
    a.w = &wp.g.w.final_norm;
    a.b = &wp.g.w.final_norm;
    snprintf(shape, sizeof shape, "T=%d n=128", T);
    gh_report_time(h, "layernorm", shape, gh_time_gpu(h, timed_call, &a), (double)T * 128 * 4, 0);
out:
    gh_weight_free(&m.lm_head);
    gh_weight_free(&m.embed);
    gh_weight_free(&m.final_norm);
    wpair_free(&wp);
    h->go->release(h->gpu, o);
    h->go->release(h->gpu, x);
    h->go->release(h->gpu, r);
    h->go->release(h->gpu, ints);
}

/* ---- configs ---- */

static int make_config(struct gh_config *c, int which)
{
    switch (which) {
    case 0:
        return gh_config_preset(c, "tiny");
    case 1:
        /* another shape: hidden 1536, 12 heads, rope dim 32, eps 1e-5, non-ue8m0 scales */
        if (gh_config_preset(c, "small"))
            return -1;
        c->cfg.hidden_size = 1536;
        c->cfg.num_attention_heads = 12;
        c->cfg.qk_rope_head_dim = 32;
        c->cfg.rms_norm_eps = 1e-5;
        c->cfg.act_scale_ue8m0 = false;
        c->cfg.index_n_heads = 12;
        gh_config_update(c, "other");
        return 0;
    default:
        return gh_config_preset(c, "full-dims");
    }
}

int main(int argc, char **argv)
{
    gh_init(argc, argv, "test_cuda_act");
    for (int which = 0; which < 3; which++) {
        if (which > 0 && gh_tiny_only())
            break;
        struct gh_config c;
        if (make_config(&c, which)) {
            gh_fail("config %d: preset failed", which);
            continue;
        }
        struct gh_ctx h;
        int rc = gh_open(&h, &c);
        if (rc == GH_SKIP)
            return gh_finish();
        if (rc)
            continue;
        const struct dsd_model_dims *d = &c.dims;
        const int D = (int)d->hidden_size, H = d->num_attention_heads, N = d->qk_nope_head_dim,
                  R = d->qk_rope_head_dim, L = d->kv_lora_rank, Hi = d->index_n_heads, Di = d->index_head_dim;
        const int Ts[] = { 1, 7, 300 };
        for (size_t i = 0; i < 3; i++) {
            int T = Ts[i];
            test_convert(&h, T, D);
            test_embed(&h, DSD_DTYPE_BF16, T);
            test_rmsnorm(&h, T, D, D, 0, D, 0, DSD_DTYPE_BF16);
            test_rmsnorm(&h, T, d->q_lora_rank, d->q_lora_rank, 0, d->q_lora_rank, 0, DSD_DTYPE_F32);
            /* kv_a output: the latent is the first L of L+R columns, normalized into a compact buffer */
            test_rmsnorm(&h, T, L, L + R, 0, L, 0, DSD_DTYPE_BF16);
            /* both strided, offsets inside wider rows */
            test_rmsnorm(&h, T, L, L + R + 64, 32, L + 96, 48, DSD_DTYPE_BF16);
            /* in place on the kv_a output (the latent part only) */
            test_rmsnorm(&h, T, L, L + R, 0, 0, 0, DSD_DTYPE_BF16);
            test_add_rmsnorm(&h, T, true);
            test_add_rmsnorm(&h, T, false);
            test_layernorm(&h, T, Di, DSD_DTYPE_BF16);
            test_layernorm(&h, T, Di, DSD_DTYPE_F32);
            test_rope(&h, "mla q", T, H * (N + R), H, N + R, N, true);
            test_rope(&h, "mla kv", T, L + R, 1, 0, L, true);
            test_rope(&h, "index q", T, Hi * Di, Hi, Di, 0, false);
            test_rope(&h, "index k", T, Di, 1, 0, 0, false);
            test_concat_gather(&h, T);
        }
        test_embed(&h, DSD_DTYPE_F32, 7);
        test_embed(&h, DSD_DTYPE_F8_E4M3, 7);
        if (which == 2) {
            time_ops(&h, 1);
            time_ops(&h, 4096);
        }
        gh_close(&h);
    }
    return gh_finish();
}
