/*
 * GPU host only (tests/gpu/run.sh): the CUDA dense MLP and MoE block (kernels/cuda/cuda_moe.cu,
 * cuda_moe_grouped.cu, cuda_moe_lt.c) against the CPU backend (kernels/cpu/cpu_moe.c,
 * dsd_ref_moe_route).
 *  - router logits: bit-exact against the CPU's F32_OUT linear (BF16 and F32 router weights);
 *  - routing: expert ids exact and weights within 2 ulp of dsd_ref_moe_route, on random
 *    logits, logits on a coarse grid (many exact ties in experts and group scores) and all-equal
 *    logits, with and without the correction bias;
 *  - mlp and moe outputs: relative error against the CPU backend (gate 1e-2: FP8 operands,
 *    bf16 rounding points identical, fp32 summation order free), T = 1, 4 (streaming
 *    kernels), 32, 65, 512 and 2500 (T > MOE_STREAM_MAX_T: the grouped kernels, and from 512
 *    up also the cuBLASLt path with experts one after another and spread over the side
 *    streams; at 2500 experts with more pairs than MOE_LT_LANE_ROWS run in row chunks, and
 *    the grouped path's experts span many 128-pair blocks);
 *  - configs: tiny, full V3.2 dims (7168 hidden, 256 experts top-8, 8 groups top-4, moe_inter
 *    2048, 1 shared, inter 18432), and "alt" (64 experts, 4 groups top-2, top-6, 2 shared,
 *    F32 router, no norm_topk_prob);
 *  - timings at full dims per path, with the bytes of the experts actually hit and GB/s, and
 *    every path forced at 8-256 tokens (where the thresholds of cuda_moe.h come from).
 * At full dims 256 experts x 44 MB would take minutes to fill randomly: the experts share 8
 * random FP8 data blocks but each has its own random block scales, so every expert computes
 * something different. Outputs are poisoned (NaN) before every run. Exit 0 / 1 / 77.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ref.h"
#include "cuda_backend.h"
#include "cuda_moe.h"
#include "gpu_harness.h"
#include "numeric.h"

#define N_TEMPLATES 8

/* ---- the test model: one MoE layer and one dense layer ---- */
struct model {
    struct dsd_model_weights w;
    struct dsd_layer_weights layers[2];     /* [0] dense MLP, [1] MoE */
    struct dsd_expert_weights tmpl[N_TEMPLATES];
    float **scales;                         /* per-expert scale copies to free */
    int n_scales;
};

static float *fresh_scales(struct model *m, const struct dsd_weight *w, float amp)
{
    size_t n = (size_t)((w->rows + 127) / 128) * (size_t)((w->cols + 127) / 128);
    float *s = malloc(n * sizeof *s);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++)
        s[i] = amp / DSD_E4M3_MAX * (1.0f + 0.5f * gh_frand());
    m->scales[m->n_scales++] = s;
    return s;
}

static int rand_ffn(struct dsd_expert_weights *e, int64_t D, int64_t I)
{
    float ag = 2.0f / sqrtf((float)D), ad = 2.0f / sqrtf((float)I);
    if (gh_rand_weight(&e->gate, DSD_DTYPE_F8_E4M3, I, D, ag, 0, "gate") ||
        gh_rand_weight(&e->up, DSD_DTYPE_F8_E4M3, I, D, ag, 0, "up") ||
        gh_rand_weight(&e->down, DSD_DTYPE_F8_E4M3, D, I, ad, 0, "down"))
        return -1;
    return 0;
}

static int model_make(struct model *m, const struct dsd_model_dims *d, enum dsd_dtype router_dtype, bool with_mlp)
{
    memset(m, 0, sizeof *m);
    const int64_t D = d->hidden_size, I = d->moe_intermediate_size;
    const int E = d->n_routed_experts;
    if (E <= 0)
        return -1;
    m->w.n_layers = 2;
    m->w.layers = m->layers;
    m->layers[0].index = 0;
    m->layers[1].index = 1;
    m->layers[1].is_moe = true;
    if (with_mlp && rand_ffn(&m->layers[0].mlp, D, d->intermediate_size))
        return -1;
    struct dsd_layer_weights *l = &m->layers[1];
    if (gh_rand_weight(&l->router, router_dtype, E, D, 1.0f / sqrtf((float)D), 0, "router") ||
        gh_rand_weight(&l->router_bias, DSD_DTYPE_F32, 1, E, 0.05f, 0, "bias"))
        return -1;
    if (d->n_shared_experts > 0 && rand_ffn(&l->shared, D, I * d->n_shared_experts))
        return -1;
    int nt = E < N_TEMPLATES ? E : N_TEMPLATES;
    for (int i = 0; i < nt; i++)
        if (rand_ffn(&m->tmpl[i], D, I))
            return -1;
    l->experts = calloc((size_t)E, sizeof *l->experts);
    m->scales = calloc((size_t)E * 3, sizeof *m->scales);
    if (!l->experts || !m->scales)
        return -1;
    for (int e = 0; e < E; e++) {
        struct dsd_expert_weights *x = &l->experts[e];
        *x = m->tmpl[(e * 5) % nt];     /* neighbours differ */
        float ag = 2.0f / sqrtf((float)D), ad = 2.0f / sqrtf((float)I);
        if (!(x->gate.scale = fresh_scales(m, &x->gate, ag)) || !(x->up.scale = fresh_scales(m, &x->up, ag)) ||
            !(x->down.scale = fresh_scales(m, &x->down, ad)))
            return -1;
    }
    return 0;
}

static void model_free(struct model *m)
{
    for (int i = 0; i < N_TEMPLATES; i++) {
        gh_weight_free(&m->tmpl[i].gate);
        gh_weight_free(&m->tmpl[i].up);
        gh_weight_free(&m->tmpl[i].down);
    }
    for (int i = 0; i < m->n_scales; i++)
        free(m->scales[i]);
    free(m->scales);
    free(m->layers[1].experts);
    struct dsd_weight *ws[] = { &m->layers[0].mlp.gate, &m->layers[0].mlp.up, &m->layers[0].mlp.down,
                                &m->layers[1].router, &m->layers[1].router_bias, &m->layers[1].shared.gate,
                                &m->layers[1].shared.up, &m->layers[1].shared.down };
    for (size_t i = 0; i < sizeof ws / sizeof *ws; i++)
        gh_weight_free(ws[i]);
}

static size_t ffn_bytes(const struct dsd_expert_weights *e)
{
    const struct dsd_weight *w[3] = { &e->gate, &e->up, &e->down };
    size_t b = 0;
    for (int i = 0; i < 3; i++)
        b += (size_t)w[i]->rows * w[i]->cols +
             (size_t)((w[i]->rows + 127) / 128) * ((w[i]->cols + 127) / 128) * sizeof(float);
    return b;
}

/* ---- routing ---- */

static void check_route(struct gh_ctx *h, const char *what, const float *logits, const float *bias, int T)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int E = d->n_routed_experts, k = d->num_experts_per_tok;
    struct cuda_backend *cb = cuda(h->gpu);
    float *dl = gh_alloc(h->gpu, (size_t)T * E * 4), *dw = gh_alloc(h->gpu, (size_t)T * k * 4),
          *db = bias ? gh_alloc(h->gpu, (size_t)E * 4) : NULL;
    int32_t *di = gh_alloc(h->gpu, (size_t)T * k * 4);
    int32_t *gi = malloc((size_t)T * k * 4), *ri = malloc((size_t)T * k * 4);
    float *gw = malloc((size_t)T * k * 4), *rw = malloc((size_t)T * k * 4);
    if (!dl || !dw || !di || (bias && !db) || !gi || !ri || !gw || !rw)
        goto out;
    gh_upload(h->gpu, dl, logits, (size_t)T * E * 4);
    if (bias)
        gh_upload(h->gpu, db, bias, (size_t)E * 4);
    gh_poison_f32(h->gpu, dw, (size_t)T * k);
    memset(gi, 0xff, (size_t)T * k * 4);       /* ids poisoned with -1 */
    gh_upload(h->gpu, di, gi, (size_t)T * k * 4);
    cuda_moe_route(cb, di, dw, dl, db, T);
    if (gh_sync(h->gpu, "moe route"))
        goto out;
    gh_download(h->gpu, gi, di, (size_t)T * k * 4);
    gh_download(h->gpu, gw, dw, (size_t)T * k * 4);
    int id_bad = 0;
    double wmax = 0;
    for (int t = 0; t < T; t++) {
        dsd_ref_moe_route(logits + (size_t)t * E, bias, E, d->n_group, d->topk_group, k, d->norm_topk_prob,
                          (float)d->routed_scaling_factor, ri + (size_t)t * k, rw + (size_t)t * k);
        for (int s = 0; s < k; s++) {
            size_t i = (size_t)t * k + s;
            if (gi[i] != ri[i]) {
                if (id_bad < 3)
                    printf("  route %s: token %d slot %d: gpu expert %d, cpu %d\n", what, t, s, gi[i], ri[i]);
                id_bad++;
            }
            double r = isfinite(gw[i]) ? fabs((double)gw[i] - rw[i]) / fmax(fabs((double)rw[i]), 1e-30) : INFINITY;
            if (r > wmax)
                wmax = r;
        }
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%s T=%d E=%d k=%d", what, T, E, k);
    gh_report(h, "moe_route_ids", shape, (double)id_bad, id_bad, 0, id_bad == 0);
    gh_report(h, "moe_route_weights", shape, wmax, wmax, 2.5e-7, wmax <= 2.5e-7);
out:
    h->go->release(h->gpu, dl);
    h->go->release(h->gpu, dw);
    h->go->release(h->gpu, db);
    h->go->release(h->gpu, di);
    free(gi);
    free(ri);
    free(gw);
    free(rw);
}

static void test_routing(struct gh_ctx *h)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int E = d->n_routed_experts, T = 96;
    float *lg = malloc((size_t)T * E * 4), *bias = malloc((size_t)E * 4);
    if (!lg || !bias) {
        gh_fail("routing: out of memory");
        goto out;
    }
    for (int e = 0; e < E; e++)
        bias[e] = 0.0625f * (float)((int)(gh_frand() * 4));     /* a coarse grid: ties survive */
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            float v = 2.0f * gh_frand_normal();
            if (t % 3 == 1)
                v = 0.5f * floorf(v * 2.0f) * 0.5f;     /* coarse grid: exact ties */
            else if (t % 3 == 2)
                v = t % 2 ? 0.0f : 1.5f;                /* every expert tied */
            lg[(size_t)t * E + e] = v;
        }
    check_route(h, "bias", lg, bias, T);
    check_route(h, "nobias", lg, NULL, T);
out:
    free(lg);
    free(bias);
}

/* Router logits bit-exact against the CPU's F32_OUT linear. */
static void test_logits(struct gh_ctx *h, struct gh_wset *wc, struct gh_wset *wg, const float *x, int T)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int E = d->n_routed_experts, D = (int)d->hidden_size;
    void *xc = gh_alloc_act(h->cpu, T, D), *xg = gh_alloc_act(h->gpu, T, D);
    float *lc = gh_alloc(h->cpu, (size_t)T * E * 4), *lgd = gh_alloc(h->gpu, (size_t)T * E * 4);
    float *a = malloc((size_t)T * E * 4), *b = malloc((size_t)T * E * 4);
    if (!xc || !xg || !lc || !lgd || !a || !b)
        goto out;
    gh_put(h->cpu, xc, x, T, D);
    gh_put(h->gpu, xg, x, T, D);
    gh_poison_f32(h->gpu, lgd, (size_t)T * E);
    h->co->linear(h->cpu, lc, E, xc, D, &wc->w.layers[1].router, T, DSD_LINEAR_F32_OUT);
    cuda_moe_router_logits(cuda(h->gpu), lgd, xg, &wg->w.layers[1].router, T);
    if (gh_sync(h->gpu, "router logits") || gh_sync(h->cpu, "router logits (cpu)"))
        goto out;
    gh_download(h->cpu, a, lc, (size_t)T * E * 4);
    gh_download(h->gpu, b, lgd, (size_t)T * E * 4);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)T * E; i++)
        bad += memcmp(&a[i], &b[i], 4) != 0;
    char shape[96];
    snprintf(shape, sizeof shape, "T=%d E=%d D=%d %s", T, E, D,
             wg->w.layers[1].router.dtype == DSD_DTYPE_F32 ? "f32" : "bf16");
    gh_report(h, "moe_router_logits_bitexact", shape, gh_rel_err(b, a, (size_t)T * E), (double)bad, 0, bad == 0);
out:
    h->co->release(h->cpu, xc);
    h->go->release(h->gpu, xg);
    h->co->release(h->cpu, lc);
    h->go->release(h->gpu, lgd);
    free(a);
    free(b);
}

/* ---- mlp and moe outputs ---- */

struct timed {
    struct gh_ctx *h;
    void *out;
    const void *x;
    const struct dsd_layer_weights *lw;
    int T;
    bool moe;
};

static void timed_call(void *u)
{
    struct timed *t = u;
    if (t->moe)
        t->h->go->moe(t->h->gpu, t->out, t->x, t->lw, t->T);
    else
        t->h->go->mlp(t->h->gpu, t->out, t->x, &t->lw->mlp, t->T);
}

/* Distinct experts the CPU routing picks for x (through the CPU logits). */
static int experts_hit(struct gh_ctx *h, struct gh_wset *wc, const void *xc, int T)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int E = d->n_routed_experts, k = d->num_experts_per_tok, D = (int)d->hidden_size;
    float *lc = gh_alloc(h->cpu, (size_t)T * E * 4), *lg = malloc((size_t)T * E * 4);
    float *bias = malloc((size_t)E * 4), wt[64];
    int32_t ids[64];
    char *hit = calloc((size_t)E, 1);
    int n = 0;
    if (!lc || !lg || !bias || !hit || k > 64)
        goto out;
    h->co->linear(h->cpu, lc, E, xc, D, &wc->w.layers[1].router, T, DSD_LINEAR_F32_OUT);
    gh_download(h->cpu, lg, lc, (size_t)T * E * 4);
    memcpy(bias, wc->w.layers[1].router_bias.data, (size_t)E * 4);
    for (int t = 0; t < T; t++) {
        dsd_ref_moe_route(lg + (size_t)t * E, bias, E, d->n_group, d->topk_group, k, d->norm_topk_prob,
                          (float)d->routed_scaling_factor, ids, wt);
        for (int s = 0; s < k; s++) {
            n += !hit[ids[s]];
            hit[ids[s]] = 1;
        }
    }
out:
    h->co->release(h->cpu, lc);
    free(lg);
    free(bias);
    free(hit);
    return n;
}

static void run_ffn(struct gh_ctx *h, struct gh_wset *wc, struct gh_wset *wg, bool moe, int T, bool timing,
                    enum dsd_cuda_ffn_path path)
{
    dsd_backend_cuda_set_ffn_path(h->gpu, path);
    const struct dsd_model_dims *d = &h->conf->dims;
    const int D = (int)d->hidden_size;
    const char *op = moe ? "moe" : "mlp";
    float *x = malloc((size_t)T * D * 4), *got = malloc((size_t)T * D * 4), *want = malloc((size_t)T * D * 4);
    void *xc = gh_alloc_act(h->cpu, T, D), *xg = gh_alloc_act(h->gpu, T, D);
    void *oc = gh_alloc_act(h->cpu, T, D), *og = gh_alloc_act(h->gpu, T, D);
    if (!x || !got || !want || !xc || !xg || !oc || !og) {
        gh_fail("%s T=%d: out of memory", op, T);
        goto out;
    }
    gh_fill(x, (size_t)T * D, 1.0f, true);
    if (gh_put(h->cpu, xc, x, T, D) || gh_put(h->gpu, xg, x, T, D) || gh_poison_act(h->gpu, og, T, D))
        goto out;
    const struct dsd_layer_weights *lc = &wc->w.layers[moe ? 1 : 0], *lg = &wg->w.layers[moe ? 1 : 0];
    if (moe) {
        h->co->moe(h->cpu, oc, xc, lc, T);
        h->go->moe(h->gpu, og, xg, lg, T);
    } else {
        h->co->mlp(h->cpu, oc, xc, &lc->mlp, T);
        h->go->mlp(h->gpu, og, xg, &lg->mlp, T);
    }
    if (gh_sync(h->cpu, op) || gh_sync(h->gpu, op))
        goto out;
    if (gh_get(h->cpu, want, oc, T, D) || gh_get(h->gpu, got, og, T, D))
        goto out;
    char shape[128];
    const bool streams = path == DSD_CUDA_FFN_STREAM ||
                         (path == DSD_CUDA_FFN_AUTO && T <= (moe ? MOE_STREAM_MAX_T : MLP_STREAM_MAX_T));
    const enum dsd_cuda_moe_prefill mp = cuda(h->gpu)->moe_prefill;
    const bool grouped = moe && !streams && (mp == DSD_CUDA_MOE_PREFILL_AUTO || mp == DSD_CUDA_MOE_PREFILL_GROUPED);
    const bool lanes = moe && !streams && !grouped && cuda_moe_lt_lanes(cuda(h->gpu)) > 1;
    snprintf(shape, sizeof shape, "T=%d D=%d I=%lld %s%s%s", T, D,
             (long long)(moe ? d->moe_intermediate_size : d->intermediate_size),
             streams ? "stream" : grouped ? "grouped" : "cublaslt", lanes ? " lanes" : "",
             path == DSD_CUDA_FFN_AUTO ? "" : " (forced)");
    gh_check(h, op, shape, got, want, (size_t)T * D, 1e-2);
    /* run again on a poisoned output: deterministic (same bits) */
    if (gh_poison_act(h->gpu, og, T, D))
        goto out;
    timed_call(&(struct timed){ h, og, xg, lg, T, moe });
    float *again = want;    /* reuse */
    if (!gh_sync(h->gpu, op) && !gh_get(h->gpu, again, og, T, D)) {
        size_t diff = 0;
        for (size_t i = 0; i < (size_t)T * D; i++)
            diff += memcmp(&again[i], &got[i], 4) != 0;
        char s2[160];
        snprintf(s2, sizeof s2, "%s rerun", shape);
        gh_report(h, moe ? "moe_deterministic" : "mlp_deterministic", s2, (double)diff, (double)diff, 0, diff == 0);
    }
    if (timing) {
        struct timed tc = { h, og, xg, lg, T, moe };
        double ms = gh_time_gpu(h, timed_call, &tc);
        double bytes;
        char s3[192];
        if (moe) {
            int n_hit = experts_hit(h, wc, xc, T);
            bytes = (double)n_hit * (double)ffn_bytes(&lc->experts[0]) +
                    (d->n_shared_experts > 0 ? (double)ffn_bytes(&lc->shared) : 0.0) +
                    (double)d->n_routed_experts * D * (lc->router.dtype == DSD_DTYPE_F32 ? 4 : 2);
            snprintf(s3, sizeof s3, "%s, %d experts hit + shared, %.1f MB of weights", shape, n_hit, bytes / 1e6);
        } else {
            bytes = (double)ffn_bytes(&lc->mlp);
            snprintf(s3, sizeof s3, "%s, %.1f MB of weights", shape, bytes / 1e6);
        }
        if (ms > 0)
            gh_report_time(h, op, s3, ms, bytes, 0);
    }
out:
    dsd_backend_cuda_set_ffn_path(h->gpu, DSD_CUDA_FFN_AUTO);
    free(x);
    free(got);
    free(want);
    h->co->release(h->cpu, xc);
    h->go->release(h->gpu, xg);
    h->co->release(h->cpu, oc);
    h->go->release(h->gpu, og);
}

static void run_config(struct gh_config *c, enum dsd_dtype router_dtype, const int *Ts, int nT, bool timing)
{
    struct gh_ctx h;
    if (gh_open(&h, c))
        return;
    test_routing(&h);
    struct model m;
    struct gh_wset wc = { 0 }, wg = { 0 };
    printf("# %s: making random weights\n", c->name);
    fflush(stdout);
    if (model_make(&m, &c->dims, router_dtype, true)) {
        gh_fail("[%s] making weights: out of memory", c->name);
        goto out;
    }
    if (gh_wset_clone(&wc, &m.w, c->dims.n_routed_experts) || gh_wset_clone(&wg, &m.w, c->dims.n_routed_experts) ||
        gh_wset_prepare(&wc, h.cpu) || gh_wset_prepare(&wg, h.gpu))
        goto out;
    {
        const int T = 37, D = (int)c->dims.hidden_size;
        float *x = malloc((size_t)T * D * 4);
        if (x) {
            gh_fill(x, (size_t)T * D, 1.0f, true);
            test_logits(&h, &wc, &wg, x, T);
        }
        free(x);
    }
    for (int i = 0; i < nT; i++) {
        run_ffn(&h, &wc, &wg, false, Ts[i], timing, DSD_CUDA_FFN_AUTO);
        run_ffn(&h, &wc, &wg, true, Ts[i], timing, DSD_CUDA_FFN_AUTO);
        if (Ts[i] > MOE_STREAM_MAX_T) {
            /* cuBLASLt per expert, one after another on the main stream: the same values */
            dsd_backend_cuda_set_moe_prefill(h.gpu, DSD_CUDA_MOE_PREFILL_SERIAL);
            run_ffn(&h, &wc, &wg, true, Ts[i], timing, DSD_CUDA_FFN_AUTO);
            /* cuBLASLt per expert over the side streams (the default is the grouped kernels) */
            dsd_backend_cuda_set_moe_prefill(h.gpu, DSD_CUDA_MOE_PREFILL_LANES);
            run_ffn(&h, &wc, &wg, true, Ts[i], timing, DSD_CUDA_FFN_AUTO);
            dsd_backend_cuda_set_moe_prefill(h.gpu, DSD_CUDA_MOE_PREFILL_AUTO);
        }
    }
    if (timing) {
        /* both paths forced around the thresholds (cuda_moe.h): checked and timed */
        static const int Tw[] = { 8, 16, 32, 64, 128, 256 };
        for (int i = 0; i < (int)(sizeof Tw / sizeof Tw[0]); i++)
            for (int pth = 0; pth < 2; pth++) {
                const enum dsd_cuda_ffn_path p = pth ? DSD_CUDA_FFN_GEMM : DSD_CUDA_FFN_STREAM;
                run_ffn(&h, &wc, &wg, false, Tw[i], true, p);
                run_ffn(&h, &wc, &wg, true, Tw[i], true, p);
                if (pth) {
                    /* cuBLASLt per expert at the same sizes (GEMM forced is the grouped kernels) */
                    dsd_backend_cuda_set_moe_prefill(h.gpu, DSD_CUDA_MOE_PREFILL_LANES);
                    run_ffn(&h, &wc, &wg, true, Tw[i], true, p);
                    dsd_backend_cuda_set_moe_prefill(h.gpu, DSD_CUDA_MOE_PREFILL_AUTO);
                }
            }
    }
out:
    gh_wset_free(&wg);
    gh_wset_free(&wc);
    model_free(&m);
    gh_close(&h);
}

int main(int argc, char **argv)
{
    gh_init(argc, argv, "test_cuda_moe");
    /* 2500: experts with more pairs than a prefill lane's buffers (MOE_LT_LANE_ROWS) run in chunks */
    _Static_assert(2500 > MOE_LT_LANE_ROWS, "T = 2500 must exceed a lane's rows");
    static const int Ts[] = { 1, 4, 32, 65, 512, 2500 };
    struct gh_config c;

    if (gh_config_preset(&c, "tiny"))
        return 2;
    run_config(&c, DSD_DTYPE_BF16, Ts, 6, false);
    if (gh_tiny_only())
        return gh_finish();

    /* another config: 64 experts in 4 groups, top-2 groups, top-6, 2 shared, F32 router */
    if (gh_config_preset(&c, "small"))
        return 2;
    c.cfg.n_routed_experts = 64;
    c.cfg.n_group = 4;
    c.cfg.topk_group = 2;
    c.cfg.num_experts_per_tok = 6;
    c.cfg.n_shared_experts = 2;
    c.cfg.norm_topk_prob = false;
    c.cfg.routed_scaling_factor = 1.5;
    gh_config_update(&c, "alt-64e-top6");
    run_config(&c, DSD_DTYPE_F32, Ts, 6, false);

    if (gh_config_preset(&c, "full-dims"))
        return 2;
    static const int Tf[] = { 1, 4, 32, 512 };
    run_config(&c, DSD_DTYPE_BF16, Tf, 4, true);
    return gh_finish();
}
