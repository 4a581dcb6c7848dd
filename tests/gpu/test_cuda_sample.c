/* GPU sampling (kernels/cuda/cuda_sample.cu) against the CPU backend's sample op (the
 * reference, kernels/sample_ref.c): rows of logits of several shapes (normal, peaked, many
 * ties, -inf and NaN entries) at vocabularies of 1000, 2048, 12,289 and 129,280 ids (one slice
 * of the kernel's 4,096 ids, several, a last slice of one id, V3.2's), each row with its
 * own parameters (greedy, temperature, top-k, top-p, min-p, all three, penalties from a
 * penalty state loaded by penalty_mark, logprobs with 0..20 top entries).
 *
 * Checks: the status (DSD_SAMPLE_NONFINITE for the rows with no finite logit, two of each
 * "masked" case) equal; greedy picks equal; sampled picks equal, or else explained by the draw sitting at
 * a boundary of the cumulative mass (the reference with u moved by 2e-5 gives the GPU's pick:
 * the GPU sums masses in fixed point, the reference in double); the penalty state after the
 * step byte-equal (picks counted); logprobs within 1e-4 and the same top ids. Every case runs
 * on both engines of the sample op (dsd_backend_cuda_set_sampler: one CTA per row, a row in
 * slices), named in each check. Timings at the V3.2 vocabulary, 1 and 64 rows, both engines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_harness.h"

static uint32_t rng_state = 12345;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static float urand(void)
{
    return (float)((rnd() >> 8) * (1.0 / 16777216.0));
}

enum shape { NORMAL, PEAKED, TIES, MASKED, N_SHAPES };
static const char *shape_name[] = { "normal", "peaked", "ties", "masked" };

static void make_row(float *l, int64_t V, enum shape s)
{
    for (int64_t i = 0; i < V; i++) {
        float v = 3.0f * gh_frand_normal();
        if (s == TIES)
            v = roundf(v);                          /* a handful of distinct values */
        l[i] = v;
    }
    if (s == PEAKED) {
        l[rnd() % V] = 25.0f;
        l[rnd() % V] = 22.0f;
    }
    if (s == MASKED) {
        for (int64_t i = 0; i < V; i += 3)
            l[i] = -INFINITY;
        l[rnd() % V] = NAN;
    }
}

/* The parameter sets rows cycle through. */
static struct dsd_sample_row param_set(int k, int64_t V)
{
    struct dsd_sample_row r = { .temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f, .pen_slot = -1,
                                .n_top = -1 };
    switch (k % 12) {
    case 0: r.temperature = 0.0f; break;
    case 1: r.temperature = 0.0f; r.repetition_penalty = 1.5f; r.presence_penalty = 0.5f; r.n_top = 5; break;
    case 2: break;
    case 3: r.temperature = 0.7f; r.top_k = 50; break;
    case 4: r.top_p = 0.9f; r.n_top = 20; break;
    case 5: r.min_p = 0.05f; break;
    case 6: r.top_k = 1; break;
    case 7: r.top_p = 0.5f; r.top_k = 40; r.min_p = 0.02f; r.n_top = 0; break;
    case 8: r.temperature = 1.3f; r.repetition_penalty = 1.3f; r.frequency_penalty = 0.5f; r.presence_penalty = 0.3f; break;
    case 9: r.top_k = (int32_t)V; r.top_p = 0.999f; break;
    case 10: r.temperature = 0.5f; r.top_p = 0.3f; r.frequency_penalty = -0.5f; r.n_top = 3; break;
    default: r.temperature = 2.0f; r.top_k = 1000; r.min_p = 0.001f; break;
    }
    return r;
}

/* the engine under test, in every check's name */
static const char *g_engine = "block";

static void run_case(struct gh_ctx *h, int64_t V, enum shape sh, int R)
{
    const size_t lb = (size_t)R * (size_t)V * sizeof(float), pb = (size_t)R * (size_t)V * sizeof(uint32_t);
    float *logits = malloc(lb);
    struct dsd_sample_row *rows = malloc((size_t)R * sizeof *rows);
    int32_t *hist = malloc(4096 * sizeof *hist);
    for (int r = 0; r < R; r++) {
        make_row(logits + (size_t)r * V, V, sh);
        if (sh == MASKED && r < 2)      /* no finite logit at all: all NaN, all -inf */
            for (int64_t i = 0; i < V; i++)
                logits[(size_t)r * V + i] = r == 0 ? NAN : -INFINITY;
        rows[r] = param_set(r, V);
        rows[r].u = urand();
        rows[r].pen_slot = r;                       /* every row keeps its own penalty row */
    }
    /* both backends: logits, rows, penalty state from a random history per row */
    float *l_c = gh_alloc(h->cpu, lb), *l_g = gh_alloc(h->gpu, lb);
    uint32_t *p_c = gh_alloc(h->cpu, pb), *p_g = gh_alloc(h->gpu, pb);
    struct dsd_sample_row *r_c = gh_alloc(h->cpu, (size_t)R * sizeof *rows), *r_g = gh_alloc(h->gpu, (size_t)R * sizeof *rows);
    struct dsd_sample_result *o_c = gh_alloc(h->cpu, (size_t)R * sizeof *o_c), *o_g = gh_alloc(h->gpu, (size_t)R * sizeof *o_g);
    int32_t *t_c = gh_alloc(h->cpu, 4096 * sizeof(int32_t)), *t_g = gh_alloc(h->gpu, 4096 * sizeof(int32_t));
    gh_upload(h->cpu, l_c, logits, lb);
    gh_upload(h->gpu, l_g, logits, lb);
    gh_upload(h->cpu, r_c, rows, (size_t)R * sizeof *rows);
    gh_upload(h->gpu, r_g, rows, (size_t)R * sizeof *rows);
    for (int r = 0; r < R; r++) {
        int n = 1 + (int)(rnd() % 4000), from = (int)(rnd() % (unsigned)n);
        for (int i = 0; i < n; i++)
            hist[i] = (i % 7 == 0) ? (int32_t)(rnd() % 16) : (int32_t)(rnd() % V);   /* repeats */
        gh_upload(h->cpu, t_c, hist, (size_t)n * sizeof *hist);
        gh_upload(h->gpu, t_g, hist, (size_t)n * sizeof *hist);
        h->co->penalty_mark(h->cpu, p_c + (size_t)r * V, t_c, n, from, true, V);
        h->go->penalty_mark(h->gpu, p_g + (size_t)r * V, t_g, n, from, true, V);
        gh_sync(h->cpu, "penalty_mark (cpu)");
        gh_sync(h->gpu, "penalty_mark");
    }
    uint32_t *pen_before = malloc(pb);
    gh_download(h->cpu, pen_before, p_c, pb);
    {
        uint32_t *pg = malloc(pb);
        gh_download(h->gpu, pg, p_g, pb);
        long diff = 0;
        for (size_t i = 0; i < (size_t)R * (size_t)V; i++)
            diff += pg[i] != pen_before[i];
        char shape[96];
        snprintf(shape, sizeof shape, "%s V=%lld rows=%d", g_engine, (long long)V, R);
        gh_report(h, "penalty_mark", shape, (double)diff, (double)diff, 0, diff == 0);
        free(pg);
    }
    /* poison the GPU results, run both */
    {
        struct dsd_sample_result *poison = malloc((size_t)R * sizeof *poison);
        memset(poison, 0xa5, (size_t)R * sizeof *poison);
        gh_upload(h->gpu, o_g, poison, (size_t)R * sizeof *poison);
        free(poison);
    }
    h->co->sample(h->cpu, o_c, l_c, r_c, R, p_c, V);
    h->go->sample(h->gpu, o_g, l_g, r_g, R, p_g, V);
    struct dsd_sample_result *got = malloc((size_t)R * sizeof *got), *want = malloc((size_t)R * sizeof *want);
    uint32_t *pen_got = malloc(pb), *pen_want = malloc(pb);
    if (gh_sync(h->cpu, "sample (cpu)") || gh_sync(h->gpu, "sample") ||
        gh_download(h->gpu, got, o_g, (size_t)R * sizeof *got) || gh_download(h->cpu, want, o_c, (size_t)R * sizeof *want) ||
        gh_download(h->gpu, pen_got, p_g, pb) || gh_download(h->cpu, pen_want, p_c, pb))
        goto out;
    {
        long greedy_bad = 0, exact = 0, explained = 0, unexplained = 0, lp_bad = 0, status_bad = 0;
        double lp_max = 0;
        void *scratch = malloc(dsd_sample_scratch_bytes(V));
        for (int r = 0; r < R; r++) {
            const struct dsd_sample_row *p = &rows[r];
            const struct dsd_sample_result *g = &got[r], *w = &want[r];
            status_bad += g->status != w->status;
            if (g->token == w->token) {
                exact += p->temperature > 0;
            } else if (p->temperature == 0.0f) {
                greedy_bad++;
                printf("      greedy row %d (%s): gpu %d cpu %d\n", r, shape_name[sh], g->token, w->token);
            } else {
                /* the reference with the draw moved a little either way, on the penalty state
                 * as it was before the step */
                bool ok = false;
                for (int d = -1; d <= 1 && !ok; d += 2) {
                    struct dsd_sample_row q = *p;
                    q.u = fminf(fmaxf(p->u + d * 2e-5f, 0.0f), 0.99999994f);
                    q.pen_slot = -1;
                    struct dsd_sample_result alt;
                    dsd_sample_ref(logits + (size_t)r * V, V, &q, pen_before + (size_t)r * V, scratch, &alt, NULL);
                    ok = alt.token == g->token;
                }
                explained += ok;
                unexplained += !ok;
                if (!ok)
                    printf("      sampled row %d (%s, T %.2f top-k %d top-p %.3f min-p %.3f u %.6f): gpu %d cpu %d\n", r,
                           shape_name[sh], (double)p->temperature, p->top_k, (double)p->top_p, (double)p->min_p,
                           (double)p->u, g->token, w->token);
                /* the penalty state counted the GPU's pick: make the comparison below fair */
                pen_want[(size_t)r * V + w->token] = pen_before[(size_t)r * V + w->token];
                uint32_t c = pen_before[(size_t)r * V + g->token];
                pen_want[(size_t)r * V + g->token] = DSD_PEN_SEEN | ((c & DSD_PEN_COUNT) + 1);
            }
            if (p->n_top >= 0 && g->token == w->token) {
                double e = fabs((double)g->logprob - (double)w->logprob);
                bool bad = !(e <= 1e-4);
                for (int i = 0; i < (p->n_top < 20 ? p->n_top : 20); i++) {
                    bad |= g->top_ids[i] != w->top_ids[i];
                    double ei = fabs((double)g->top_logprobs[i] - (double)w->top_logprobs[i]);
                    bad |= !(ei <= 1e-4);
                    e = fmax(e, ei);
                }
                lp_max = fmax(lp_max, e);
                lp_bad += bad;
            }
        }
        free(scratch);
        long pen_diff = 0;
        for (size_t i = 0; i < (size_t)R * (size_t)V; i++)
            pen_diff += pen_got[i] != pen_want[i];
        char shape[128];
        snprintf(shape, sizeof shape, "%s V=%lld rows=%d %s", g_engine, (long long)V, R, shape_name[sh]);
        printf("      sample %s: sampled rows exact %ld, at a boundary %ld, unexplained %ld\n", shape, exact, explained,
               unexplained);
        gh_report(h, "sample greedy", shape, (double)greedy_bad, (double)greedy_bad, 0, greedy_bad == 0);
        gh_report(h, "sample status (no finite logit)", shape, (double)status_bad, (double)status_bad, 0,
                  status_bad == 0);
        gh_report(h, "sample draw", shape, (double)unexplained, (double)explained, 0, unexplained == 0);
        gh_report(h, "sample logprobs", shape, lp_max, (double)lp_bad, 1e-4, lp_bad == 0);
        gh_report(h, "sample penalty state", shape, (double)pen_diff, (double)pen_diff, 0, pen_diff == 0);
    }
out:
    free(got), free(want), free(pen_got), free(pen_want), free(pen_before);
    free(logits), free(rows), free(hist);
    h->co->release(h->cpu, l_c), h->go->release(h->gpu, l_g);
    h->co->release(h->cpu, p_c), h->go->release(h->gpu, p_g);
    h->co->release(h->cpu, r_c), h->go->release(h->gpu, r_g);
    h->co->release(h->cpu, o_c), h->go->release(h->gpu, o_g);
    h->co->release(h->cpu, t_c), h->go->release(h->gpu, t_g);
}

struct timing {
    struct gh_ctx *h;
    struct dsd_sample_result *out;
    const float *logits;
    const struct dsd_sample_row *rows;
    int R;
    int64_t V;
};

static void run_sample(void *u)
{
    struct timing *t = u;
    t->h->go->sample(t->h->gpu, t->out, t->logits, t->rows, t->R, NULL, t->V);
}

static void time_case(struct gh_ctx *h, int64_t V, int R, const char *what, struct dsd_sample_row p)
{
    const size_t lb = (size_t)R * (size_t)V * sizeof(float);
    float *logits = malloc(lb);
    struct dsd_sample_row *rows = malloc((size_t)R * sizeof *rows);
    for (int r = 0; r < R; r++) {
        make_row(logits + (size_t)r * V, V, NORMAL);
        rows[r] = p;
        rows[r].u = urand();
    }
    float *l_g = gh_alloc(h->gpu, lb);
    struct dsd_sample_row *r_g = gh_alloc(h->gpu, (size_t)R * sizeof *rows);
    struct dsd_sample_result *o_g = gh_alloc(h->gpu, (size_t)R * sizeof *o_g);
    gh_upload(h->gpu, l_g, logits, lb);
    gh_upload(h->gpu, r_g, rows, (size_t)R * sizeof *rows);
    struct timing t = { h, o_g, l_g, r_g, R, V };
    double ms = gh_time_gpu(h, run_sample, &t);
    char shape[96];
    snprintf(shape, sizeof shape, "%s: %s V=%lld rows=%d", g_engine, what, (long long)V, R);
    if (ms >= 0)
        gh_report_time(h, "sample", shape, ms, (double)lb, 0);
    free(logits), free(rows);
    h->go->release(h->gpu, l_g), h->go->release(h->gpu, r_g), h->go->release(h->gpu, o_g);
}

int main(int argc, char **argv)
{
    gh_init(argc, argv, "test_cuda_sample");
    struct gh_config c;
    if (gh_config_preset(&c, "tiny"))
        return gh_finish();
    struct gh_ctx h;
    if (gh_open(&h, &c))
        return gh_finish();
    static const int64_t vocabs[] = { 1000, 2048, 12289, 129280 };
    static const struct {
        const char *name;
        enum dsd_cuda_sampler s;
    } engines[] = { { "block", DSD_CUDA_SAMPLER_BLOCK }, { "slices", DSD_CUDA_SAMPLER_SLICES } };
    for (int e = 0; e < 2; e++) {
        g_engine = engines[e].name;
        dsd_backend_cuda_set_sampler(h.gpu, engines[e].s);
        for (int vi = 0; vi < 4; vi++) {
            if (gh_tiny_only() && vocabs[vi] > 16384)
                continue;
            for (int s = 0; s < N_SHAPES; s++)
                run_case(&h, vocabs[vi], (enum shape)s, vocabs[vi] > 2048 ? 48 : 96);
        }
        if (!gh_tiny_only()) {
            struct dsd_sample_row greedy = { .top_p = 1.0f, .repetition_penalty = 1.0f, .pen_slot = -1, .n_top = -1 };
            struct dsd_sample_row nucleus = { .temperature = 0.8f, .top_p = 0.9f, .repetition_penalty = 1.0f,
                                              .pen_slot = -1, .n_top = 5 };
            struct dsd_sample_row topk = { .temperature = 0.8f, .top_p = 1.0f, .top_k = 50,
                                           .repetition_penalty = 1.0f, .pen_slot = -1, .n_top = -1 };
            for (int R = 1; R <= 64; R *= 64) {
                time_case(&h, 129280, R, "greedy", greedy);
                time_case(&h, 129280, R, "top-k 50", topk);
                time_case(&h, 129280, R, "top-p 0.9 + 5 logprobs", nucleus);
            }
        }
    }
    dsd_backend_cuda_set_sampler(h.gpu, DSD_CUDA_SAMPLER_AUTO);
    gh_close(&h);
    return gh_finish();
}
