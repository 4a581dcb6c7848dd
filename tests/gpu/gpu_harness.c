/* The GPU test harness (contract in gpu_harness.h). */
#include "gpu_harness.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "dsd_cuda.h"
#include "model.h"
#include "numeric.h"
#include "presets.h"

static const char *test_name = "test";
static bool tiny_only, racecheck;
static int iters = 20;
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static int failures, checks;
static bool skipped;
static FILE *csv;

void gh_init(int argc, char **argv, const char *name)
{
    test_name = name;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tiny-only") == 0) {
            tiny_only = true;
        } else if (strcmp(argv[i], "--racecheck") == 0) {
            racecheck = true;
        } else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
            iters = atoi(argv[++i]);
            if (iters < 1)
                iters = 1;
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            rng = strtoull(argv[++i], NULL, 0) | 1;
        } else {
            fprintf(stderr, "usage: %s [--tiny-only] [--iters N] [--seed N] [--racecheck]\n", argv[0]);
            exit(2);
        }
    }
    const char *out = getenv("OUT");
    if (out && *out) {
        char path[4096];
        snprintf(path, sizeof path, "%s/results.csv", out);
        bool fresh = false;
        FILE *probe = fopen(path, "r");
        if (probe)
            fclose(probe);
        else
            fresh = true;
        csv = fopen(path, "a");
        if (csv && fresh)
            fprintf(csv, "test,kind,op,config,shape,rel_err,max_abs,gate,ms,gb_s,tflop_s,result\n");
    }
    printf("# %s%s, %d timing iterations\n", test_name, tiny_only ? " (tiny only)" : "", iters);
}

bool gh_tiny_only(void)
{
    return tiny_only;
}

bool gh_racecheck(void)
{
    return racecheck;
}

enum dsd_cuda_attn_tile gh_attn_tile_auto(void)
{
    return racecheck ? DSD_CUDA_TILE_WGMMA : DSD_CUDA_TILE_AUTO;
}

int gh_iters(void)
{
    return iters;
}

int gh_finish(void)
{
    if (csv)
        fclose(csv);
    csv = NULL;
    if (skipped && !checks) {
        printf("# %s: SKIPPED (no usable CUDA device)\n", test_name);
        return GH_SKIP;
    }
    printf("# %s: %d checks, %d failed: %s\n", test_name, checks, failures, failures ? "FAIL" : "PASS");
    fflush(stdout);
    return failures ? 1 : 0;
}

void gh_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("FAIL  %s: %s\n", test_name, msg);
    fflush(stdout);
    failures++;
    checks++;
    if (csv)
        fprintf(csv, "%s,error,\"%s\",,,,,,,,,FAIL\n", test_name, msg);
}

/* ---- configurations ---- */

int gh_config_preset(struct gh_config *c, const char *preset)
{
    memset(c, 0, sizeof *c);
    int rc = mkmodel_preset(preset, &c->cfg);
    if (rc)
        return rc;
    gh_config_update(c, preset);
    return 0;
}

void gh_config_update(struct gh_config *c, const char *new_name)
{
    if (new_name)
        snprintf(c->name, sizeof c->name, "%s", new_name);
    dsd_model_dims_from_config(&c->cfg, c->inv_freq, &c->dims);
}

/* ---- backends ---- */

bool gh_no_device(const char *msg)
{
    if (!strstr(msg, "no CUDA device"))
        return false;
    printf("# %s: %s\n", test_name, msg);
    skipped = true;
    return true;
}

int gh_open(struct gh_ctx *h, struct gh_config *c)
{
    memset(h, 0, sizeof *h);
    h->conf = c;
    struct dsd_backend_params p = dsd_backend_default_params();
    p.dims = c->dims;
    p.numerics = DSD_NUMERICS_PRODUCTION;
    p.kv_dtype = DSD_KV_FP8;
    struct dsd_err err = { { 0 } };
    h->gpu = dsd_backend_cuda_new(&p, &err);
    if (!h->gpu) {
        if (gh_no_device(err.msg))
            return GH_SKIP;
        gh_fail("[%s] creating the CUDA backend: %s", c->name, err.msg);
        return -1;
    }
    dsd_backend_cuda_set_attention_tile(h->gpu, gh_attn_tile_auto());
    h->cpu = dsd_backend_cpu_new(&p, &err);
    if (!h->cpu) {
        gh_fail("[%s] creating the CPU backend: %s", c->name, err.msg);
        dsd_backend_free(h->gpu);
        h->gpu = NULL;
        return -1;
    }
    h->co = dsd_backend_ops(h->cpu);
    h->go = dsd_backend_ops(h->gpu);
    printf("# config %s on %s: hidden %lld, heads %d, q_lora %d, kv_lora %d, experts %d top-%d\n", c->name,
           dsd_backend_cuda_device_name(h->gpu), (long long)c->dims.hidden_size, c->dims.num_attention_heads,
           c->dims.q_lora_rank, c->dims.kv_lora_rank, c->dims.n_routed_experts, c->dims.num_experts_per_tok);
    return 0;
}

void gh_close(struct gh_ctx *h)
{
    dsd_backend_free(h->gpu);
    dsd_backend_free(h->cpu);
    h->gpu = h->cpu = NULL;
}

int gh_sync(struct dsd_backend *be, const char *what)
{
    struct dsd_err err = { { 0 } };
    int rc = dsd_backend_ops(be)->synchronize(be, &err);
    if (rc)
        gh_fail("%s (%s backend): %s", what, dsd_backend_ops(be)->name, err.msg);
    return rc;
}

/* ---- random numbers ---- */

static uint64_t next_u64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

float gh_frand(void)
{
    return (float)((next_u64() >> 40) * 0x1p-24) * 2.0f - 1.0f;
}

float gh_frand_normal(void)
{
    double u1 = ((next_u64() >> 11) + 1) * 0x1p-53, u2 = (next_u64() >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void gh_fill(float *x, size_t n, float a, bool bf16)
{
    for (size_t i = 0; i < n; i++) {
        float v = a * gh_frand_normal();
        x[i] = bf16 ? dsd_round_bf16(v) : v;
    }
}

/* ---- host weights ---- */

static size_t scale_count(const struct dsd_weight *w)
{
    return (size_t)((w->rows + 127) / 128) * (size_t)((w->cols + 127) / 128);
}

int gh_rand_weight(struct dsd_weight *w, enum dsd_dtype dtype, int64_t rows, int64_t cols, float amp, float offset,
                   const char *name)
{
    memset(w, 0, sizeof *w);
    w->dtype = dtype;
    w->rows = rows;
    w->cols = cols;
    w->name = name;
    size_t n = (size_t)rows * (size_t)cols;
    void *data = malloc(n * dsd_dtype_size(dtype) + 1);
    if (!data)
        return -ENOMEM;
    if (dtype == DSD_DTYPE_F8_E4M3) {
        uint8_t *q = data;
        for (size_t i = 0; i < n; i++)
            q[i] = dsd_f32_to_e4m3(gh_frand() * DSD_E4M3_MAX);
        float *s = malloc(scale_count(w) * sizeof *s);
        if (!s) {
            free(data);
            return -ENOMEM;
        }
        for (size_t i = 0; i < scale_count(w); i++)
            s[i] = amp / DSD_E4M3_MAX * (1.0f + 0.5f * gh_frand());
        w->scale = s;
    } else if (dtype == DSD_DTYPE_BF16) {
        /* uniform with standard deviation amp: cheap enough for the 0.9 G entries of an LM head */
        const float a = amp * 1.7320508f;
        uint16_t *b = data;
        for (size_t i = 0; i < n; i++)
            b[i] = dsd_f32_to_bf16(offset + a * gh_frand());
    } else {
        const float a = amp * 1.7320508f;
        float *f = data;
        for (size_t i = 0; i < n; i++)
            f[i] = offset + a * gh_frand();
    }
    w->data = data;
    return 0;
}

void gh_weight_free(struct dsd_weight *w)
{
    free((void *)w->data);
    free((void *)w->scale);
    memset(w, 0, sizeof *w);
}

static void *own(struct gh_wset *s, size_t bytes)
{
    if (s->n_mem == s->cap_mem) {
        size_t cap = s->cap_mem ? 2 * s->cap_mem : 64;
        void **m = realloc(s->mem, cap * sizeof *m);
        if (!m)
            return NULL;
        s->mem = m;
        s->cap_mem = cap;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (p)
        s->mem[s->n_mem++] = p;
    return p;
}

static int copy_weight(struct gh_wset *s, struct dsd_weight *dst, const struct dsd_weight *src)
{
    *dst = *src;
    dst->prepared = NULL;
    if (!src->data)
        return 0;
    size_t bytes = (size_t)src->rows * (size_t)src->cols * dsd_dtype_size(src->dtype);
    void *d = own(s, bytes);
    if (!d)
        return -ENOMEM;
    memcpy(d, src->data, bytes);
    dst->data = d;
    if (src->scale) {
        float *sc = own(s, scale_count(src) * sizeof(float));
        if (!sc)
            return -ENOMEM;
        memcpy(sc, src->scale, scale_count(src) * sizeof(float));
        dst->scale = sc;
    }
    return 0;
}

static int copy_expert(struct gh_wset *s, struct dsd_expert_weights *d, const struct dsd_expert_weights *e)
{
    int rc = copy_weight(s, &d->gate, &e->gate);
    if (!rc)
        rc = copy_weight(s, &d->up, &e->up);
    if (!rc)
        rc = copy_weight(s, &d->down, &e->down);
    return rc;
}

int gh_wset_clone(struct gh_wset *dst, const struct dsd_model_weights *src, int n_routed_experts)
{
    memset(dst, 0, sizeof *dst);
    int rc = copy_weight(dst, &dst->w.embed, &src->embed);
    if (!rc)
        rc = copy_weight(dst, &dst->w.final_norm, &src->final_norm);
    if (!rc)
        rc = copy_weight(dst, &dst->w.lm_head, &src->lm_head);
    dst->w.n_layers = src->n_layers;
    if (!rc && src->n_layers) {
        dst->w.layers = own(dst, (size_t)src->n_layers * sizeof *dst->w.layers);
        if (!dst->w.layers)
            rc = -ENOMEM;
    }
    for (int l = 0; !rc && l < src->n_layers; l++) {
        const struct dsd_layer_weights *a = &src->layers[l];
        struct dsd_layer_weights *b = &dst->w.layers[l];
        *b = *a;
        const struct dsd_weight *sw[] = { &a->attn_norm, &a->ffn_norm, &a->q_a, &a->q_a_norm, &a->q_b, &a->kv_a,
                                          &a->kv_a_norm, &a->kv_b, &a->o_proj, &a->idx_wq_b, &a->idx_wk,
                                          &a->idx_k_norm, &a->idx_k_norm_bias, &a->idx_weights_proj, &a->router,
                                          &a->router_bias, &a->enorm, &a->hnorm, &a->eh_proj, &a->head_norm };
        struct dsd_weight *dw[] = { &b->attn_norm, &b->ffn_norm, &b->q_a, &b->q_a_norm, &b->q_b, &b->kv_a,
                                    &b->kv_a_norm, &b->kv_b, &b->o_proj, &b->idx_wq_b, &b->idx_wk,
                                    &b->idx_k_norm, &b->idx_k_norm_bias, &b->idx_weights_proj, &b->router,
                                    &b->router_bias, &b->enorm, &b->hnorm, &b->eh_proj, &b->head_norm };
        for (size_t i = 0; !rc && i < sizeof sw / sizeof *sw; i++)
            rc = copy_weight(dst, dw[i], sw[i]);
        if (!rc)
            rc = copy_expert(dst, &b->mlp, &a->mlp);
        if (!rc)
            rc = copy_expert(dst, &b->shared, &a->shared);
        b->experts = NULL;
        if (!rc && a->experts) {
            b->experts = own(dst, (size_t)n_routed_experts * sizeof *b->experts);
            if (!b->experts)
                rc = -ENOMEM;
            for (int e = 0; !rc && e < n_routed_experts; e++)
                rc = copy_expert(dst, &b->experts[e], &a->experts[e]);
        }
    }
    if (rc) {
        gh_fail("copying weights: out of memory");
        gh_wset_free(dst);
    }
    return rc;
}

int gh_wset_single(struct gh_wset *dst, const struct dsd_weight *w)
{
    struct dsd_model_weights m = { .lm_head = *w };
    return gh_wset_clone(dst, &m, 0);
}

int gh_wset_prepare(struct gh_wset *s, struct dsd_backend *be)
{
    struct dsd_err err = { { 0 } };
    int rc = dsd_backend_ops(be)->prepare_weights(be, &s->w, &err);
    if (rc) {
        gh_fail("prepare_weights (%s backend): %s", dsd_backend_ops(be)->name, err.msg);
        return rc;
    }
    s->prepared_on = be;
    return 0;
}

void gh_wset_free(struct gh_wset *s)
{
    if (s->prepared_on)
        dsd_backend_ops(s->prepared_on)->release_weights(s->prepared_on, &s->w);
    for (size_t i = 0; i < s->n_mem; i++)
        free(s->mem[i]);
    free(s->mem);
    memset(s, 0, sizeof *s);
}

/* ---- activations ---- */

void *gh_alloc_act(struct dsd_backend *be, int T, int n)
{
    return gh_alloc(be, (size_t)T * (size_t)n * dsd_backend_act_bytes(be));
}

void *gh_alloc(struct dsd_backend *be, size_t bytes)
{
    void *p = dsd_backend_ops(be)->alloc(be, bytes);
    if (!p)
        gh_fail("alloc of %zu bytes on the %s backend failed", bytes, dsd_backend_ops(be)->name);
    return p;
}

int gh_put(struct dsd_backend *be, void *dst, const float *src, int T, int n)
{
    const struct dsd_ops *o = dsd_backend_ops(be);
    size_t bytes = (size_t)T * (size_t)n * sizeof(float);
    float *tmp = o->alloc(be, bytes);
    if (!tmp) {
        gh_fail("gh_put: no %zu bytes on the %s backend", bytes, o->name);
        return -ENOMEM;
    }
    o->upload(be, tmp, src, bytes);
    o->from_f32(be, dst, tmp, T, n);
    int rc = gh_sync(be, "gh_put (upload + from_f32)");
    o->release(be, tmp);
    return rc;
}

int gh_get(struct dsd_backend *be, float *dst, const void *src, int T, int n)
{
    const struct dsd_ops *o = dsd_backend_ops(be);
    size_t bytes = (size_t)T * (size_t)n * sizeof(float);
    float *tmp = o->alloc(be, bytes);
    if (!tmp) {
        gh_fail("gh_get: no %zu bytes on the %s backend", bytes, o->name);
        return -ENOMEM;
    }
    o->to_f32(be, tmp, src, T, n);
    o->download(be, dst, tmp, bytes);
    int rc = gh_sync(be, "gh_get (to_f32 + download)");
    o->release(be, tmp);
    return rc;
}

int gh_upload(struct dsd_backend *be, void *dst, const void *src, size_t bytes)
{
    dsd_backend_ops(be)->upload(be, dst, src, bytes);
    return gh_sync(be, "upload");
}

int gh_download(struct dsd_backend *be, void *dst, const void *src, size_t bytes)
{
    dsd_backend_ops(be)->download(be, dst, src, bytes);
    return gh_sync(be, "download");
}

static float *nan_block(size_t n)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (v)
        for (size_t i = 0; i < n; i++)
            v[i] = NAN;
    return v;
}

int gh_poison_act(struct dsd_backend *be, void *buf, int T, int n)
{
    float *v = nan_block((size_t)T * (size_t)n);
    if (!v)
        return -ENOMEM;
    int rc = gh_put(be, buf, v, T, n);
    free(v);
    return rc;
}

int gh_poison_f32(struct dsd_backend *be, float *buf, size_t n)
{
    float *v = nan_block(n);
    if (!v)
        return -ENOMEM;
    int rc = gh_upload(be, buf, v, n * sizeof(float));
    free(v);
    return rc;
}

/* ---- checks ---- */

double gh_rel_err(const float *got, const float *want, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i]))
            return INFINITY;
        double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

double gh_max_abs(const float *got, const float *want, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i]))
            return INFINITY;
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > m)
            m = d;
    }
    return m;
}

bool gh_report(const struct gh_ctx *h, const char *op, const char *shape, double rel, double max_abs, double gate,
               bool pass)
{
    const char *cfg = h && h->conf ? h->conf->name : "-";
    printf("%s  %-22s %-12s %-40s rel=%.3e max_abs=%.3e gate=%.1e\n", pass ? "PASS" : "FAIL", op, cfg, shape, rel,
           max_abs, gate);
    fflush(stdout);
    checks++;
    if (!pass)
        failures++;
    if (csv)
        fprintf(csv, "%s,check,%s,%s,\"%s\",%.6e,%.6e,%.3e,,,,%s\n", test_name, op, cfg, shape, rel, max_abs, gate,
                pass ? "PASS" : "FAIL");
    return pass;
}

bool gh_check(const struct gh_ctx *h, const char *op, const char *shape, const float *got, const float *want,
              size_t n, double gate)
{
    double rel = gh_rel_err(got, want, n), mx = gh_max_abs(got, want, n);
    bool pass = isfinite(rel) && rel <= gate;
    return gh_report(h, op, shape, rel, mx, gate, pass);
}

/* ---- timing ---- */

double gh_time_gpu(struct gh_ctx *h, void (*fn)(void *user), void *user)
{
    struct cuda_backend *cb = (struct cuda_backend *)h->gpu;
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        gh_fail("cudaEventCreate failed");
        if (e0)
            cudaEventDestroy(e0);
        return -1;
    }
    fn(user);   /* warm-up: first-call costs (heuristics, scratch growth) are not timed */
    if (gh_sync(h->gpu, "timing warm-up")) {
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        return -1;
    }
    cudaEventRecord(e0, cb->stream);
    for (int i = 0; i < iters; i++)
        fn(user);
    cudaEventRecord(e1, cb->stream);
    double ms = -1;
    if (!gh_sync(h->gpu, "timed calls")) {
        float f = 0;
        if (cudaEventElapsedTime(&f, e0, e1) == cudaSuccess)
            ms = f / iters;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return ms;
}

void gh_report_time(const struct gh_ctx *h, const char *op, const char *shape, double ms, double bytes,
                    double flops)
{
    const char *cfg = h && h->conf ? h->conf->name : "-";
    double gbs = ms > 0 && bytes > 0 ? bytes / (ms * 1e-3) / 1e9 : 0;
    double tfs = ms > 0 && flops > 0 ? flops / (ms * 1e-3) / 1e12 : 0;
    printf("TIME  %-22s %-12s %-40s %9.4f ms", op, cfg, shape, ms);
    if (gbs > 0)
        printf("  %8.1f GB/s", gbs);
    if (tfs > 0)
        printf("  %7.2f TFLOP/s", tfs);
    printf("\n");
    fflush(stdout);
    if (csv)
        fprintf(csv, "%s,time,%s,%s,\"%s\",,,,%.6f,%.2f,%.3f,\n", test_name, op, cfg, shape, ms, gbs, tfs);
}
