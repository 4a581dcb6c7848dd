#include "engine_harness.h"

#include "sampling.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum dsd_model_backend g_production_backend = DSD_MODEL_BACKEND_CPU;

void harness_set_production_backend(enum dsd_model_backend b)
{
    g_production_backend = b;
}

struct dsd_model *harness_load(const char *dir, enum dsd_numerics numerics, enum dsd_kv_dtype kv, int threads)
{
    return harness_load_index_cache(dir, numerics, kv, threads, 0, NULL);
}

struct dsd_model *harness_load_index_cache(const char *dir, enum dsd_numerics numerics, enum dsd_kv_dtype kv,
                                           int threads, int index_topk_freq, const char *index_topk_pattern)
{
    struct dsd_model_params p = dsd_model_default_params();
    if (numerics == DSD_NUMERICS_PRODUCTION)
        p.backend = g_production_backend;
    p.numerics = numerics;
    p.kv_dtype = kv;
    p.n_threads = threads;
    p.prefault = false;
    p.index_topk_freq = index_topk_freq;
    p.index_topk_pattern = index_topk_pattern;
    struct dsd_model *m;
    struct dsd_err err;
    if (dsd_model_load(dir, &p, &m, &err)) {
        fprintf(stderr, "load %s: %s\n", dir, err.msg);
        return NULL;
    }
    return m;
}

int harness_run(struct dsd_model *m, const int32_t *ids, int n, int chunk, struct prompt_run *r)
{
    const struct dsd_model_config *c = &m->cfg;
    memset(r, 0, sizeof *r);
    r->n = n;
    r->vocab = c->vocab_size;
    r->layers = c->num_hidden_layers;
    r->topk = c->index_topk;
    r->logits = malloc((size_t)n * (size_t)r->vocab * sizeof(float));
    r->sel = malloc((size_t)r->layers * (size_t)n * (size_t)r->topk * sizeof(int32_t));
    r->hidden = malloc((size_t)n * (size_t)c->hidden_size * sizeof(float));
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, n / DSD_KV_PAGE_TOKENS + 2, &err);
    struct dsd_kv_seq seq = {0};
    if (!r->logits || !r->sel || !r->hidden || !kv || dsd_kv_seq_reserve(kv, &seq, n)) {
        fprintf(stderr, "harness: setup failed\n");
        return -1;
    }
    int32_t *sel_step = malloc((size_t)r->layers * (size_t)chunk * (size_t)r->topk * sizeof(int32_t));
    for (int p0 = 0; p0 < n; p0 += chunk) {
        int len = n - p0 < chunk ? n - p0 : chunk;
        struct dsd_batch_seq b = { .tokens = ids + p0, .n_tokens = len, .pos0 = p0, .kv = &seq, .logits_all = true };
        struct dsd_forward_out out = { .logits = r->logits + (size_t)p0 * r->vocab,
                                       .hidden = r->hidden + (size_t)p0 * c->hidden_size, .topk = sel_step };
        if (dsd_model_forward(m, kv, &b, 1, &out, &err)) {
            fprintf(stderr, "forward: %s\n", err.msg);
            return -1;
        }
        for (int l = 0; l < r->layers; l++)
            memcpy(r->sel + ((size_t)l * n + p0) * r->topk, sel_step + (size_t)l * len * r->topk,
                   (size_t)len * r->topk * sizeof(int32_t));
    }
    free(sel_step);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    return 0;
}

int harness_mtp(struct dsd_model *m, const int32_t *next, const float *hidden, int n, int pos0, float *logits)
{
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, (pos0 + n) / DSD_KV_PAGE_TOKENS + 2, &err);
    struct dsd_kv_seq seq = {0};
    dsd_kv_seq_reserve(kv, &seq, pos0 + n);
    struct dsd_batch_seq b = { .tokens = next, .n_tokens = n, .pos0 = pos0, .kv = &seq, .logits_all = true };
    struct dsd_forward_out out = { .logits = logits };
    int rc = dsd_model_forward_mtp(m, kv, &b, 1, hidden, &out, &err);
    if (rc)
        fprintf(stderr, "mtp: %s\n", err.msg);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    return rc;
}

void harness_free_run(struct prompt_run *r)
{
    free(r->logits);
    free(r->sel);
    free(r->hidden);
    memset(r, 0, sizeof *r);
}

double logits_max_rel_err(const float *a, const float *b, int rows, int64_t cols)
{
    double worst = 0.0;
    for (int r = 0; r < rows; r++) {
        double md = 0.0, mx = 0.0;
        for (int64_t c = 0; c < cols; c++) {
            double d = fabs((double)a[r * cols + c] - (double)b[r * cols + c]);
            if (!(d <= md))
                md = d;     /* NaN propagates as a failure */
            mx = fmax(mx, fabs((double)b[r * cols + c]));
        }
        double rel = md / (mx > 0 ? mx : 1.0);
        if (!(rel <= worst))
            worst = rel;
    }
    return worst;
}

static int64_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

int logits_argmax_agree(const float *a, const float *b, int rows, int64_t cols)
{
    int agree = 0;
    for (int r = 0; r < rows; r++)
        agree += argmax(a + r * cols, cols) == argmax(b + r * cols, cols);
    return agree;
}

double selection_overlap(const int32_t *a, const int32_t *b, int layers, int n, int topk, int *n_sets)
{
    double sum = 0.0;
    int sets = 0;
    for (int l = 0; l < layers; l++)
        for (int p = topk; p < n; p++) {
            const int32_t *sa = a + ((size_t)l * n + p) * topk, *sb = b + ((size_t)l * n + p) * topk;
            int common = 0, nb = 0;
            for (int j = 0; j < topk; j++) {
                if (sb[j] < 0)
                    continue;
                nb++;
                for (int i = 0; i < topk; i++)
                    if (sa[i] == sb[j]) {
                        common++;
                        break;
                    }
            }
            sum += nb ? (double)common / nb : 1.0;
            sets++;
        }
    *n_sets = sets;
    return sets ? sum / sets : 1.0;
}

int harness_greedy(struct dsd_model *m, const int32_t *prompt, int np, int n, int32_t *out)
{
    struct dsd_err err;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, (np + n) / DSD_KV_PAGE_TOKENS + 2, &err);
    struct dsd_kv_seq seq = {0};
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    int32_t *toks = malloc((size_t)(np + n) * sizeof *toks);
    int rc = kv && logits && toks && dsd_kv_seq_reserve(kv, &seq, np + n) == 0 ? 0 : -1;
    if (rc == 0)
        memcpy(toks, prompt, (size_t)np * sizeof *toks);
    for (int k = 0, pos = 0, len = np; rc == 0 && k < n; k++) {
        struct dsd_batch_seq b = { .tokens = toks + pos, .n_tokens = len - pos, .pos0 = pos, .kv = &seq };
        struct dsd_forward_out o = { .logits = logits };
        if (dsd_model_forward(m, kv, &b, 1, &o, &err)) {
            fprintf(stderr, "forward: %s\n", err.msg);
            rc = -1;
        }
        pos = len;
        out[k] = toks[len++] = dsd_argmax(logits, m->cfg.vocab_size);
    }
    free(toks);
    free(logits);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    return rc;
}
