/*
 * deepseekd-indexcache: what IndexCache (daemon/model/index_cache.h, docs/INDEXCACHE.md)
 * costs in fidelity and saves in indexer time, on a model with a preset's shapes and
 * generated weights (the same weights for every setting: one seed).
 *
 * For each setting (off first: the reference) it prefills a context of --context tokens,
 * the last --positions of them as one chunk with every position's logits and indexer
 * selections, then, in --reps rounds that take every setting in turn, times that chunk
 * again and --decode steps of fixed tokens with the per-op profile on, keeping each figure's
 * fastest round (the machine may be shared: interference only slows a run down). It prints one markdown row per setting: the indexer's time (the ops from idx_wq_b to
 * indexer_topk of every layer) in the final prefill chunk and per decode step, beside the
 * whole step's; the top-k overlap of every reusing layer with the selection that layer makes
 * in the unmodified model, over the positions where the selection is sparse; and the logits'
 * error against the unmodified model (per position ||d||/||ref||, mean and max) with the
 * share of positions whose argmax agrees.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index_cache.h"
#include "model.h"
#include "presets.h"

#define MAX_SETTINGS 16
#define MAX_PROFILE_OPS 8192
#define PREFILL_CHUNK 512

static const char usage[] =
    "usage: deepseekd-indexcache [--preset tiny|small] [--context N] [--positions N] [--decode N]\n"
    "                            [--settings LIST] [--reps N] [--threads N] [--seed S]\n"
    "IndexCache's trade-off on generated weights: indexer time saved, top-k overlap with the\n"
    "unmodified model's selections, logit error against it (docs/INDEXCACHE.md).\n"
    "  --preset     model shapes (default tiny)\n"
    "  --context N  tokens of context (default 1024); the selection is sparse past index_topk\n"
    "  --positions N  last positions compared, one prefill chunk (default 256)\n"
    "  --decode N   decode steps timed after the context (default 16), the median reported\n"
    "  --reps N     timing rounds, every setting in turn; each figure's fastest round is kept\n"
    "               (a shared machine only slows runs down; default 3)\n"
    "  --settings   comma-separated: a number is index_topk_freq, F/S letters a pattern\n"
    "               (default 2,3,4); the unmodified model always runs first\n";

struct setting {
    int freq;                   /* 0 with a pattern */
    char pattern[DSD_CFG_INDEX_PATTERN_MAX + 1];
};

struct result {
    float *logits;              /* [P][vocab] */
    int32_t *sel;               /* [layers][P][topk] */
    double chunk_ms, chunk_idx_ms;  /* the final prefill chunk */
    double step_ms, step_idx_ms;    /* decode, medians */
    int computing;
    struct dsd_model_config cfg;    /* as loaded: the plan */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Milliseconds of the indexer's ops in the last profiled step, and of the whole step. */
static double indexer_ms(struct dsd_model *m, struct dsd_op_time *ops, double *total)
{
    int n = dsd_model_profile_read(m, ops, MAX_PROFILE_OPS);
    double sum = 0.0, all = 0.0;
    bool in = false;
    for (int i = 0; i < n; i++) {
        all += ops[i].ms;
        if (!strcmp(ops[i].op, "idx_wq_b"))
            in = true;
        if (in)
            sum += ops[i].ms;
        if (!strcmp(ops[i].op, "indexer_topk"))
            in = false;
    }
    if (total)
        *total = all;
    return n < 0 ? NAN : sum;
}

/* One setting's model, prefilled: the figures are taken from it in interleaved rounds. */
struct run {
    struct dsd_model *m;
    struct dsd_kv_cache *kv;
    struct dsd_kv_seq seq;
    struct dsd_op_time *ops;
    float *one;                 /* a decode step's logits */
    double *step, *step_idx;    /* [D] per decode step, the fastest over the rounds */
};

static void run_close(struct run *u)
{
    if (u->kv) {
        dsd_kv_seq_release(u->kv, &u->seq);
        dsd_kv_seq_destroy(&u->seq);
        dsd_kv_cache_free(u->kv);
    }
    dsd_model_free(u->m);
    free(u->ops);
    free(u->one);
    free(u->step);
    free(u->step_idx);
    memset(u, 0, sizeof *u);
}

/* Builds the model of setting s, prefills ids[0, C - P) and runs the last P positions as one
 * chunk with their logits and selections (into r), the per-op profile on from then. */
static int run_open(struct run *u, const struct dsd_model_config *base, const struct setting *s, uint64_t seed,
                    int threads, const int32_t *ids, int C, int P, int D, struct result *r, struct dsd_err *err)
{
    memset(u, 0, sizeof *u);
    struct dsd_model_params mp = dsd_model_default_params();
    mp.backend = DSD_MODEL_BACKEND_CPU;
    mp.n_threads = threads;
    mp.index_topk_freq = s->freq;
    mp.index_topk_pattern = s->pattern;
    int rc = dsd_model_new_generated(base, &mp, seed, &u->m, err);
    if (rc)
        return rc;
    r->cfg = u->m->cfg;
    r->computing = dsd_index_cache_computing_layers(&u->m->cfg);
    r->chunk_ms = r->chunk_idx_ms = INFINITY;
    const int64_t V = u->m->cfg.vocab_size;
    const int L = u->m->cfg.num_hidden_layers, K = u->m->cfg.index_topk;
    u->kv = dsd_model_kv_cache_new(u->m, (C + D) / DSD_KV_PAGE_TOKENS + 2, err);
    u->ops = malloc(MAX_PROFILE_OPS * sizeof *u->ops);
    u->one = malloc((size_t)V * sizeof(float));
    u->step = malloc((size_t)(D > 0 ? D : 1) * sizeof *u->step);
    u->step_idx = malloc((size_t)(D > 0 ? D : 1) * sizeof *u->step_idx);
    r->logits = malloc((size_t)P * (size_t)V * sizeof(float));
    r->sel = malloc((size_t)L * (size_t)P * (size_t)K * sizeof(int32_t));
    if (!u->kv || !u->ops || !u->one || !u->step || !u->step_idx || !r->logits || !r->sel)
        return u->kv ? dsd_errf(err, -ENOMEM, "out of memory") : -ENOMEM;
    for (int i = 0; i < D; i++)
        u->step[i] = u->step_idx[i] = INFINITY;
    if (dsd_kv_seq_reserve(u->kv, &u->seq, C + D))
        return dsd_errf(err, -ENOMEM, "no KV pages for %d positions", C + D);
    for (int p0 = 0; p0 < C - P; p0 += PREFILL_CHUNK) {
        int n = C - P - p0 < PREFILL_CHUNK ? C - P - p0 : PREFILL_CHUNK;
        struct dsd_batch_seq b = { .tokens = ids + p0, .n_tokens = n, .pos0 = p0, .kv = &u->seq, .no_logits = true };
        struct dsd_forward_out o = { 0 };
        if ((rc = dsd_model_forward(u->m, u->kv, &b, 1, &o, err)))
            return rc;
    }
    if ((rc = dsd_model_profile_begin(u->m, MAX_PROFILE_OPS, err)))
        return rc;
    struct dsd_batch_seq b = { .tokens = ids + C - P, .n_tokens = P, .pos0 = C - P, .kv = &u->seq, .logits_all = true };
    struct dsd_forward_out o = { .logits = r->logits, .topk = r->sel };
    return dsd_model_forward(u->m, u->kv, &b, 1, &o, err);
}

/* One timing round: the final chunk again and D decode steps (each rerun writes the same KV
 * as before), every figure kept when faster than in earlier rounds: a shared machine only
 * ever slows a run down, and rounds of all settings interleave. */
static int run_round(struct run *u, const int32_t *ids, int C, int P, int D, struct result *r, struct dsd_err *err)
{
    struct dsd_batch_seq b = { .tokens = ids + C - P, .n_tokens = P, .pos0 = C - P, .kv = &u->seq, .no_logits = true };
    struct dsd_forward_out o = { 0 };
    double t = now_ms();
    int rc = dsd_model_forward(u->m, u->kv, &b, 1, &o, err);
    if (rc)
        return rc;
    r->chunk_ms = fmin(r->chunk_ms, now_ms() - t);
    r->chunk_idx_ms = fmin(r->chunk_idx_ms, indexer_ms(u->m, u->ops, NULL));
    for (int i = 0; i < D; i++) {
        struct dsd_batch_seq d = { .tokens = ids + C + i, .n_tokens = 1, .pos0 = C + i, .kv = &u->seq };
        struct dsd_forward_out od = { .logits = u->one };
        t = now_ms();
        if ((rc = dsd_model_forward(u->m, u->kv, &d, 1, &od, err)))
            return rc;
        u->step[i] = fmin(u->step[i], now_ms() - t);
        u->step_idx[i] = fmin(u->step_idx[i], indexer_ms(u->m, u->ops, NULL));
    }
    return 0;
}

/* The decode figures: medians over the steps of each step's fastest round. */
static void run_finish(struct run *u, int D, struct result *r)
{
    qsort(u->step, (size_t)D, sizeof *u->step, cmp_double);
    qsort(u->step_idx, (size_t)D, sizeof *u->step_idx, cmp_double);
    r->step_ms = D > 0 ? u->step[D / 2] : NAN;
    r->step_idx_ms = D > 0 ? u->step_idx[D / 2] : NAN;
}

/* |A ∩ B| / |B| for two selections of k ids (-1 = none); a and b are sorted in place. */
static double overlap(int32_t *a, int32_t *b, int k)
{
    qsort(a, (size_t)k, sizeof *a, cmp_i32);
    qsort(b, (size_t)k, sizeof *b, cmp_i32);
    int i = 0, j = 0, both = 0, nb = 0;
    for (int t = 0; t < k; t++)
        nb += b[t] >= 0;
    while (i < k && j < k) {
        if (a[i] < 0 || a[i] < b[j])
            i++;
        else if (b[j] < 0 || b[j] < a[i])
            j++;
        else {
            both++;
            i++;
            j++;
        }
    }
    return nb ? (double)both / nb : 1.0;
}

static void report(const char *preset, int C, int P, const struct setting *s, const struct result *r,
                   const struct result *ref)
{
    const struct dsd_model_config *c = &r->cfg;
    const int L = c->num_hidden_layers, K = c->index_topk;
    const int64_t V = c->vocab_size;
    /* top-k overlap of the reusing layers, over sparse positions */
    double ov = 0.0, chance = 0.0;
    int sets = 0;
    int32_t *a = malloc((size_t)K * sizeof *a), *b = malloc((size_t)K * sizeof *b);
    for (int l = 0; l < L && a && b; l++) {
        if (dsd_index_cache_computes(c, l))
            continue;
        for (int p = 0; p < P; p++) {
            if (C - P + p + 1 <= K)
                continue;   /* dense: every candidate is selected */
            size_t at = ((size_t)l * P + (size_t)p) * (size_t)K;
            memcpy(a, r->sel + at, (size_t)K * sizeof *a);
            memcpy(b, ref->sel + at, (size_t)K * sizeof *b);
            ov += overlap(a, b, K);
            chance += (double)K / (C - P + p + 1);  /* a random selection's expected overlap */
            sets++;
        }
    }
    free(a);
    free(b);
    double err_sum = 0.0, err_max = 0.0;
    int agree = 0;
    for (int p = 0; p < P; p++) {
        const float *x = r->logits + (size_t)p * V, *y = ref->logits + (size_t)p * V;
        double dd = 0.0, yy = 0.0;
        int64_t ax = 0, ay = 0;
        for (int64_t v = 0; v < V; v++) {
            double d = (double)x[v] - y[v];
            dd += d * d;
            yy += (double)y[v] * y[v];
            if (x[v] > x[ax])
                ax = v;
            if (y[v] > y[ay])
                ay = v;
        }
        double e = sqrt(dd) / (yy > 0 ? sqrt(yy) : 1.0);
        err_sum += e;
        err_max = fmax(err_max, e);
        agree += ax == ay;
    }
    char name[DSD_CFG_INDEX_PATTERN_MAX + 16], plan[DSD_CFG_INDEX_PATTERN_MAX + 1];
    if (s == NULL)
        snprintf(name, sizeof name, "off");
    else if (s->freq > 0)
        snprintf(name, sizeof name, "freq %d", s->freq);
    else
        snprintf(name, sizeof name, "pattern %s", s->pattern);
    for (int l = 0; l < L; l++)
        plan[l] = dsd_index_cache_computes(c, l) ? 'F' : 'S';
    plan[L] = '\0';
    char ovs[64];
    if (sets)
        snprintf(ovs, sizeof ovs, "%.3f (chance %.3f)", ov / sets, chance / sets);
    else
        snprintf(ovs, sizeof ovs, "-");
    printf("| %s | %d | %s | %s | %.1f (%.1f) | %.2f (%.2f) | %.0f%% / %.0f%% | %s | %.4f / %.4f | %d/%d |\n", preset,
           C, name, plan, r->chunk_ms, r->chunk_idx_ms, r->step_ms, r->step_idx_ms,
           100.0 * (1.0 - r->chunk_idx_ms / ref->chunk_idx_ms), 100.0 * (1.0 - r->step_idx_ms / ref->step_idx_ms), ovs,
           err_sum / P, err_max, agree, P);
    fflush(stdout);
}

static int parse_settings(const char *list, struct setting *out, int *n)
{
    *n = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (*n == MAX_SETTINGS || len == 0 || len > DSD_CFG_INDEX_PATTERN_MAX)
            return -EINVAL;
        struct setting *s = &out[(*n)++];
        memset(s, 0, sizeof *s);
        char *end;
        long f = strtol(p, &end, 10);
        if (end == p + len) {
            if (f < 1 || f > 65536)
                return -EINVAL;
            s->freq = (int)f;
        } else {
            memcpy(s->pattern, p, len);
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return *n > 0 ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
    const char *preset = "tiny", *settings = "2,3,4";
    int C = 1024, P = 256, D = 16, threads = 0, reps = 3;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "deepseekd-indexcache: %s needs a value\n%s", a, usage);
            return 2;
        }
        i++;
        if (!strcmp(a, "--preset"))
            preset = v;
        else if (!strcmp(a, "--settings"))
            settings = v;
        else if (!strcmp(a, "--context"))
            C = atoi(v);
        else if (!strcmp(a, "--positions"))
            P = atoi(v);
        else if (!strcmp(a, "--decode"))
            D = atoi(v);
        else if (!strcmp(a, "--reps"))
            reps = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "deepseekd-indexcache: unknown option %s\n%s", a, usage);
            return 2;
        }
    }
    struct dsd_model_config base;
    struct setting set[MAX_SETTINGS];
    int n_set;
    if (mkmodel_preset(preset, &base)) {
        fprintf(stderr, "deepseekd-indexcache: no preset \"%s\" (tiny, small, full-dims)\n", preset);
        return 2;
    }
    if (P < 1 || P > C || D < 0 || reps < 1 || C < 1 || (int64_t)C + D > base.max_position_embeddings || threads < 0) {
        fprintf(stderr, "deepseekd-indexcache: need 1 <= --positions <= --context, --decode >= 0\n");
        return 2;
    }
    if (parse_settings(settings, set, &n_set)) {
        fprintf(stderr, "deepseekd-indexcache: bad --settings \"%s\"\n", settings);
        return 2;
    }
    int32_t *ids = malloc((size_t)(C + D) * sizeof *ids);
    if (!ids)
        return 1;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int i = 0; i < C + D; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)base.vocab_size);
    }
    printf("deepseekd-indexcache: preset %s (%d layers, index_topk %d), context %d, last %d positions compared, "
           "%d decode steps, seed %llu\n\n",
           preset, base.num_hidden_layers, base.index_topk, C, P, D, seed);
    printf("| preset | context | setting | plan | prefill chunk ms (indexer) | decode step ms (indexer) | "
           "indexer time saved, prefill / decode | top-k overlap, reused layers | logit rel. error mean / max | "
           "argmax agree |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    struct dsd_err err = { { 0 } };
    /* [0] is the unmodified model, the reference */
    struct setting all[MAX_SETTINGS + 1] = { { 0 } };
    memcpy(all + 1, set, (size_t)n_set * sizeof *set);
    const int n_all = n_set + 1;
    struct run *runs = calloc((size_t)n_all, sizeof *runs);
    struct result *res = calloc((size_t)n_all, sizeof *res);
    int rc = runs && res ? 0 : -ENOMEM;
    for (int i = 0; !rc && i < n_all; i++)
        rc = run_open(&runs[i], &base, &all[i], seed, threads, ids, C, P, D, &res[i], &err);
    for (int k = 0; !rc && k < reps; k++)
        for (int i = 0; !rc && i < n_all; i++)
            rc = run_round(&runs[i], ids, C, P, D, &res[i], &err);
    for (int i = 0; !rc && i < n_all; i++) {
        run_finish(&runs[i], D, &res[i]);
        report(preset, C, P, i ? &all[i] : NULL, &res[i], &res[0]);
    }
    for (int i = 0; runs && res && i < n_all; i++) {
        run_close(&runs[i]);
        free(res[i].logits);
        free(res[i].sel);
    }
    free(runs);
    free(res);
    free(ids);
    if (rc) {
        fprintf(stderr, "deepseekd-indexcache: %s\n", err.msg);
        return 1;
    }
    return 0;
}
