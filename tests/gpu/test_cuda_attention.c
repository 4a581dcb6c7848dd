/*
 * tests/gpu/test_cuda_attention.c: the CUDA KV stores, DSA indexer top-k and sparse MLA
 * attention (kernels/cuda/cuda_kv.cu, cuda_indexer.cu, cuda_attention.cu) against the CPU
 * backend (kernels/cpu/cpu_attention.c, cpu_indexer.c) in production numerics.
 *
 *   kv stores:    the KV bytes must be identical (FP8 bytes, scales, k_pe; bf16 layout too)
 *   indexer:      outputs well-formed (ascending, distinct, in range, -1 padded); at small
 *                 contexts every row equal to the CPU's or differing only at near-ties (checked
 *                 with the CPU's own scores, recomputed here); at full dims with a 32K context
 *                 overlap |GPU ∩ CPU| / |CPU| >= 0.99
 *   attention:    relative error against the CPU <= 1e-2 (bf16 probabilities in the second MMA)
 * at the tiny preset, a custom config (other head counts, top-k not a multiple of 64) and full
 * V3.2 dims, plus timings at full dims (decode batch 1/8/32 at 4K and 32K contexts, a prefill
 * chunk). Ragged batches: several sequences, non-contiguous shuffled pages.
 *
 * Activations go to the GPU as raw bf16 (converted here) and come back raw, so the test does
 * not depend on the CUDA conversion ops.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ref.h"
#include "dsd_cuda.h"
#include "gpu_harness.h"
#include "numeric.h"

/* ---- small helpers --------------------------------------------------------------------------- */

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

static uint64_t rs = 0x243f6a8885a308d3ull;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}

/* host floats (bf16 values) -> an activation buffer of either backend */
static int put_act(struct dsd_backend *be, void *dst, const float *src, size_t n)
{
    if (dsd_backend_act_bytes(be) == 4)
        return gh_upload(be, dst, src, n * sizeof(float));
    uint16_t *b = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++)
        b[i] = dsd_f32_to_bf16(src[i]);
    int rc = gh_upload(be, dst, b, n * 2);
    free(b);
    return rc;
}

static int get_act(struct dsd_backend *be, float *dst, const void *src, size_t n)
{
    if (dsd_backend_act_bytes(be) == 4)
        return gh_download(be, dst, src, n * sizeof(float));
    uint16_t *b = xmalloc(n * 2);
    int rc = gh_download(be, b, src, n * 2);
    for (size_t i = 0; i < n; i++)
        dst[i] = dsd_bf16_to_f32(b[i]);
    free(b);
    return rc;
}

static int poison_act(struct dsd_backend *be, void *buf, size_t n)
{
    if (dsd_backend_act_bytes(be) == 4)
        return gh_poison_f32(be, buf, n);
    uint16_t *b = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++)
        b[i] = 0x7fc0;
    int rc = gh_upload(be, buf, b, n * 2);
    free(b);
    return rc;
}

static void *copy_to(struct dsd_backend *be, const void *src, size_t bytes)
{
    void *p = gh_alloc(be, bytes);
    if (p && bytes)
        gh_upload(be, p, src, bytes);
    return p;
}

/* bf16-valued activations with per-128-group magnitudes spread over 2^-6 .. 2^4 */
static void fill_groups(float *x, size_t n, int group)
{
    for (size_t g = 0; g < (n + group - 1) / group; g++) {
        float a = ldexpf(1.0f, (int)(rnd() % 11) - 6);
        for (size_t i = g * group; i < n && i < (g + 1) * group; i++)
            x[i] = dsd_round_bf16(a * gh_frand_normal());
    }
}

/* ---- a ragged batch: sequences with shuffled pages, and tokens --------------------------------- */

struct batch {
    int n_seqs, n_pages_total;      /* pages 1 .. n_pages_total are handed out (0 is scratch) */
    int *len;                       /* tokens cached per sequence */
    int32_t *page_off, *pages;      /* host */
    int T, max_pos;
    int32_t *pos, *seq, *slot, *tokens;
};

static void batch_make(struct batch *b, int n_seqs, const int *len)
{
    memset(b, 0, sizeof *b);
    b->n_seqs = n_seqs;
    b->len = xmalloc((size_t)n_seqs * sizeof(int));
    b->page_off = xmalloc(((size_t)n_seqs + 1) * sizeof(int32_t));
    int total = 0;
    for (int s = 0; s < n_seqs; s++) {
        b->len[s] = len[s];
        b->page_off[s] = total;
        total += (len[s] + 63) / 64;
    }
    b->page_off[n_seqs] = total;
    b->n_pages_total = total;
    /* page ids 1..total in a random order: no sequence gets contiguous pages */
    b->pages = xmalloc((size_t)(total ? total : 1) * sizeof(int32_t));
    for (int i = 0; i < total; i++)
        b->pages[i] = i + 1;
    for (int i = total - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint32_t)(i + 1));
        int32_t t = b->pages[i];
        b->pages[i] = b->pages[j];
        b->pages[j] = t;
    }
}

static int32_t slot_of(const struct batch *b, int s, int p)
{
    return b->pages[b->page_off[s] + p / 64] * 64 + p % 64;
}

/* query tokens: (seq, pos) pairs */
static void batch_tokens(struct batch *b, int T, const int *seq, const int *pos)
{
    free(b->pos), free(b->seq), free(b->slot), free(b->tokens);
    b->T = T;
    b->pos = xmalloc((size_t)T * 4), b->seq = xmalloc((size_t)T * 4);
    b->slot = xmalloc((size_t)T * 4), b->tokens = xmalloc((size_t)T * 4);
    b->max_pos = 0;
    for (int t = 0; t < T; t++) {
        if (seq[t] < 0 || seq[t] >= b->n_seqs || pos[t] < 0 || pos[t] >= b->len[seq[t]]) {
            /* a query past its sequence's cache reads pages it does not own: a broken test */
            fprintf(stderr, "test batch: token %d at sequence %d position %d is outside the cache\n", t, seq[t], pos[t]);
            abort();
        }
        b->seq[t] = seq[t];
        b->pos[t] = pos[t];
        b->slot[t] = slot_of(b, seq[t], pos[t]);
        if (pos[t] > b->max_pos)
            b->max_pos = pos[t];
    }
}

static void batch_free(struct batch *b)
{
    free(b->len), free(b->page_off), free(b->pages);
    free(b->pos), free(b->seq), free(b->slot), free(b->tokens);
    memset(b, 0, sizeof *b);
}

/* the step's arrays in one backend's memory */
struct dev_step {
    struct dsd_step st;
    void *mem[6];
};

static void step_upload(struct dev_step *d, struct dsd_backend *be, const struct batch *b)
{
    memset(d, 0, sizeof *d);
    d->st.n_tokens = b->T;
    d->st.n_seqs = b->n_seqs;
    d->st.max_pos = b->max_pos;
    d->st.n_pages = b->n_pages_total;
    d->mem[0] = copy_to(be, b->tokens, (size_t)b->T * 4);
    d->mem[1] = copy_to(be, b->pos, (size_t)b->T * 4);
    d->mem[2] = copy_to(be, b->seq, (size_t)b->T * 4);
    d->mem[3] = copy_to(be, b->slot, (size_t)b->T * 4);
    d->mem[4] = copy_to(be, b->page_off, ((size_t)b->n_seqs + 1) * 4);
    d->mem[5] = copy_to(be, b->pages, (size_t)(b->n_pages_total ? b->n_pages_total : 1) * 4);
    d->st.tokens = d->mem[0], d->st.pos = d->mem[1], d->st.seq = d->mem[2], d->st.slot = d->mem[3];
    d->st.page_off = d->mem[4], d->st.pages = d->mem[5];
}

static void step_free(struct dev_step *d, struct dsd_backend *be)
{
    for (int i = 0; i < 6; i++)
        dsd_backend_ops(be)->release(be, d->mem[i]);
    memset(d, 0, sizeof *d);
}

/* one layer's KV arenas on each backend */
struct arenas {
    struct dsd_kv_layout lay;
    size_t mla_bytes, index_bytes;
    struct dsd_kv_layer cpu, gpu;
};

static int arenas_make(struct arenas *a, struct gh_ctx *h, int n_pages)
{
    a->lay = dsd_kv_layout_for(&h->conf->dims, DSD_NUMERICS_PRODUCTION, dsd_backend_params(h->gpu)->kv_dtype);
    a->mla_bytes = (size_t)(n_pages + 1) * 64 * a->lay.mla_token_bytes;
    a->index_bytes = (size_t)(n_pages + 1) * a->lay.index_page_bytes;
    a->cpu.mla = gh_alloc(h->cpu, a->mla_bytes);
    a->cpu.index = gh_alloc(h->cpu, a->index_bytes);
    a->gpu.mla = gh_alloc(h->gpu, a->mla_bytes);
    a->gpu.index = gh_alloc(h->gpu, a->index_bytes);
    return a->cpu.mla && a->cpu.index && a->gpu.mla && a->gpu.index ? 0 : -1;
}

static void arenas_free(struct arenas *a, struct gh_ctx *h)
{
    h->co->release(h->cpu, a->cpu.mla), h->co->release(h->cpu, a->cpu.index);
    h->go->release(h->gpu, a->gpu.mla), h->go->release(h->gpu, a->gpu.index);
}

/* the CPU arenas (host memory) copied to the GPU ones: the indexer/attention checks then read
 * exactly the same cache */
static void arenas_sync_to_gpu(struct arenas *a, struct gh_ctx *h)
{
    gh_upload(h->gpu, a->gpu.mla, a->cpu.mla, a->mla_bytes);
    gh_upload(h->gpu, a->gpu.index, a->cpu.index, a->index_bytes);
}

/* Fills every cached position of every sequence on the CPU (random latent/k_pe and index keys),
 * in chunks of tokens through the CPU's own store ops. */
static void fill_cache_cpu(struct gh_ctx *h, struct arenas *a, const struct batch *b)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int L = d->kv_lora_rank, R = d->qk_rope_head_dim, Di = d->index_head_dim, chunk = 4096;
    float *kv = xmalloc((size_t)chunk * (L + R) * 4), *k = xmalloc((size_t)chunk * Di * 4);
    int32_t *slot = xmalloc((size_t)chunk * 4);
    for (int s = 0; s < b->n_seqs; s++)
        for (int p0 = 0; p0 < b->len[s]; p0 += chunk) {
            int n = b->len[s] - p0 < chunk ? b->len[s] - p0 : chunk;
            for (int i = 0; i < n; i++)
                slot[i] = slot_of(b, s, p0 + i);
            fill_groups(kv, (size_t)n * (L + R), 128);
            gh_fill(k, (size_t)n * Di, 1.0f, true);
            h->co->mla_kv_store(h->cpu, &a->cpu, kv, L + R, slot, n);
            h->co->index_k_store(h->cpu, &a->cpu, k, slot, n);
        }
    gh_sync(h->cpu, "cpu cache fill");
    free(kv), free(k), free(slot);
}

/* ---- 1. KV stores ------------------------------------------------------------------------------ */

static size_t count_diff(const uint8_t *x, const uint8_t *y, size_t n, size_t *first)
{
    size_t d = 0;
    *first = (size_t)-1;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) {
            if (*first == (size_t)-1)
                *first = i;
            d++;
        }
    return d;
}

static void test_kv_store(struct gh_ctx *h, int T, bool check_index)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int L = d->kv_lora_rank, R = d->qk_rope_head_dim, Di = d->index_head_dim, ld = L + R + 16;
    const int n_pages = (T + 63) / 64 + 3;
    struct arenas a;
    if (arenas_make(&a, h, n_pages))
        return;
    /* distinct random slots over pages 1..n_pages */
    int cap = n_pages * 64;
    int32_t *perm = xmalloc((size_t)cap * 4);
    for (int i = 0; i < cap; i++)
        perm[i] = 64 + i;
    for (int i = cap - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint32_t)(i + 1));
        int32_t x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    float *kv = xmalloc((size_t)T * ld * 4), *k = xmalloc((size_t)T * Di * 4);
    fill_groups(kv, (size_t)T * ld, 128);
    for (int i = 0; i < L + R && T > 1; i++)
        kv[(size_t)1 * ld + i] = (i < 128) ? 0.0f : kv[(size_t)1 * ld + i];    /* a zero group: amax floor */
    fill_groups(k, (size_t)T * Di, 128);
    void *kv_c = gh_alloc_act(h->cpu, T, ld), *kv_g = gh_alloc_act(h->gpu, T, ld);
    void *k_c = gh_alloc_act(h->cpu, T, Di), *k_g = gh_alloc_act(h->gpu, T, Di);
    void *sl_c = copy_to(h->cpu, perm, (size_t)T * 4), *sl_g = copy_to(h->gpu, perm, (size_t)T * 4);
    put_act(h->cpu, kv_c, kv, (size_t)T * ld), put_act(h->gpu, kv_g, kv, (size_t)T * ld);
    put_act(h->cpu, k_c, k, (size_t)T * Di), put_act(h->gpu, k_g, k, (size_t)T * Di);

    h->co->mla_kv_store(h->cpu, &a.cpu, kv_c, ld, sl_c, T);
    h->go->mla_kv_store(h->gpu, &a.gpu, kv_g, ld, sl_g, T);
    if (check_index) {
        h->co->index_k_store(h->cpu, &a.cpu, k_c, sl_c, T);
        h->go->index_k_store(h->gpu, &a.gpu, k_g, sl_g, T);
    }
    char shape[128];
    uint8_t *got = xmalloc(a.mla_bytes > a.index_bytes ? a.mla_bytes : a.index_bytes);
    if (!gh_sync(h->gpu, "kv stores") && !gh_sync(h->cpu, "kv stores (cpu)")) {
        size_t first;
        gh_download(h->gpu, got, a.gpu.mla, a.mla_bytes);
        size_t diff = count_diff(got, a.cpu.mla, a.mla_bytes, &first);
        snprintf(shape, sizeof shape, "T=%d L=%d R=%d ld=%d entry=%zuB %s", T, L, R, ld, a.lay.mla_token_bytes,
                 a.lay.mla_dtype == DSD_KV_FP8 ? "fp8" : "bf16");
        if (diff)
            printf("      mla_kv_store: %zu of %zu bytes differ, first at byte %zu (slot %zu, offset %zu): gpu %02x "
                   "cpu %02x\n", diff, a.mla_bytes, first, first / a.lay.mla_token_bytes,
                   first % a.lay.mla_token_bytes, got[first], a.cpu.mla[first]);
        gh_report(h, "mla_kv_store", shape, (double)diff / (double)a.mla_bytes, (double)diff, 0, diff == 0);
        if (check_index) {
            gh_download(h->gpu, got, a.gpu.index, a.index_bytes);
            diff = count_diff(got, a.cpu.index, a.index_bytes, &first);
            snprintf(shape, sizeof shape, "T=%d Di=%d page=%zuB", T, Di, a.lay.index_page_bytes);
            if (diff)
                printf("      index_k_store: %zu of %zu bytes differ, first at byte %zu: gpu %02x cpu %02x\n", diff,
                       a.index_bytes, first, got[first], a.cpu.index[first]);
            gh_report(h, "index_k_store", shape, (double)diff / (double)a.index_bytes, (double)diff, 0, diff == 0);
        }
    }
    free(got), free(kv), free(k), free(perm);
    h->co->release(h->cpu, kv_c), h->go->release(h->gpu, kv_g);
    h->co->release(h->cpu, k_c), h->go->release(h->gpu, k_g);
    h->co->release(h->cpu, sl_c), h->go->release(h->gpu, sl_g);
    arenas_free(&a, h);
}

/* ---- 2. indexer -------------------------------------------------------------------------------- */

/* the CPU's score of candidate j for token t, recomputed as cpu_indexer.c topk_token does */
static float cpu_score(const struct gh_ctx *h, const struct arenas *a, const struct batch *b, const float *q,
                       const float *w, int t, int j)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int Hi = d->index_n_heads, Di = 128;
    const float head_scale = 1.0f / sqrtf((float)Hi), dim_scale = 1.0f / sqrtf((float)Di);
    int32_t s = slot_of(b, b->seq[t], j);
    const uint8_t *pg = a->cpu.index + (size_t)(s / 64) * a->lay.index_page_bytes;
    float kv[128], ks;
    for (int i = 0; i < Di; i++)
        kv[i] = dsd_e4m3_lut[pg[(s % 64) * Di + i]];
    memcpy(&ks, pg + 64 * Di + (s % 64) * 4, 4);
    float sum = 0.0f;
    for (int hh = 0; hh < Hi; hh++) {
        float rot[128], qv[128], qs;
        memcpy(rot, q + ((size_t)t * Hi + hh) * Di, sizeof rot);
        dsd_ref_hadamard(rot, Di);
        for (int i = 0; i < Di; i++)
            rot[i] = dsd_round_bf16(rot[i]);
        dsd_ref_act_quant(rot, Di, d->act_scale_ue8m0, NULL, qv, &qs);
        float wh = w[(size_t)t * Hi + hh] * head_scale * qs * dim_scale;
        sum += wh * fmaxf(dsd_ref_dot(qv, kv, Di), 0.0f);
    }
    return sum * ks;
}

static int cmp_int(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

/* Runs indexer_topk on both backends for the batch's tokens; checks form, exactness (near-ties
 * excused when `exact`) and overlap. The cache must be filled and synced already. */
static void test_indexer_run(struct gh_ctx *h, struct arenas *a, const struct batch *b, bool exact, double gate,
                             enum dsd_cuda_indexer_kernel kern, const char *what)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int T = b->T, Hi = d->index_n_heads, topk = d->index_topk;
    float *q = xmalloc((size_t)T * Hi * 128 * 4), *w = xmalloc((size_t)T * Hi * 4);
    gh_fill(q, (size_t)T * Hi * 128, 1.0f, true);
    gh_fill(w, (size_t)T * Hi, 1.0f, false);
    struct dev_step sc, sg;
    step_upload(&sc, h->cpu, b);
    step_upload(&sg, h->gpu, b);
    void *q_c = gh_alloc_act(h->cpu, T, Hi * 128), *q_g = gh_alloc_act(h->gpu, T, Hi * 128);
    float *w_c = copy_to(h->cpu, w, (size_t)T * Hi * 4), *w_g = copy_to(h->gpu, w, (size_t)T * Hi * 4);
    int32_t *o_c = gh_alloc(h->cpu, (size_t)T * topk * 4), *o_g = gh_alloc(h->gpu, (size_t)T * topk * 4);
    put_act(h->cpu, q_c, q, (size_t)T * Hi * 128);
    put_act(h->gpu, q_g, q, (size_t)T * Hi * 128);
    int32_t *poison = xmalloc((size_t)T * topk * 4);
    for (size_t i = 0; i < (size_t)T * topk; i++)
        poison[i] = 0x7ffffff0;
    gh_upload(h->gpu, o_g, poison, (size_t)T * topk * 4);

    h->co->indexer_topk(h->cpu, o_c, topk, q_c, w_c, &a->cpu, &sc.st);
    /* each tensor-core path of the scores, forced (FP8 is the default) */
    dsd_backend_cuda_set_indexer_kernel(h->gpu, kern);
    h->go->indexer_topk(h->gpu, o_g, topk, q_g, w_g, &a->gpu, &sg.st);
    dsd_backend_cuda_set_indexer_kernel(h->gpu, DSD_CUDA_INDEXER_AUTO);
    int32_t *got = xmalloc((size_t)T * topk * 4), *want = xmalloc((size_t)T * topk * 4);
    if (!gh_sync(h->cpu, "indexer_topk (cpu)") && !gh_sync(h->gpu, "indexer_topk") &&
        !gh_download(h->gpu, got, o_g, (size_t)T * topk * 4)) {
        memcpy(want, o_c, (size_t)T * topk * 4);
        long bad_form = 0, rows_diff = 0, rows_unexplained = 0;
        double inter = 0, total = 0, worst_row = 1.0;
        int *tmp = xmalloc((size_t)topk * 2 * sizeof(int));
        for (int t = 0; t < T; t++) {
            const int32_t *g = got + (size_t)t * topk, *c = want + (size_t)t * topk;
            int n = b->pos[t] + 1, k = n < topk ? n : topk;
            for (int i = 0; i < topk; i++) {
                bool ok = i < k ? (g[i] >= 0 && g[i] < n && (i == 0 || g[i] > g[i - 1])) : g[i] == -1;
                bad_form += !ok;
            }
            /* overlap: both ascending */
            int ia = 0, ib = 0, common = 0;
            while (ia < k && ib < k) {
                if (g[ia] == c[ib])
                    common++, ia++, ib++;
                else if (g[ia] < c[ib])
                    ia++;
                else
                    ib++;
            }
            inter += common, total += k;
            if (k && (double)common / k < worst_row)
                worst_row = (double)common / k;
            if (common == k)
                continue;
            rows_diff++;
            if (!exact)
                continue;
            /* near-tie check: every disagreement within 1e-5 (relative) of the CPU's k-th score */
            float kth = INFINITY, scale = 0.0f;
            for (int i = 0; i < k; i++) {
                float s = cpu_score(h, a, b, q, w, t, c[i]);
                kth = fminf(kth, s);
                scale = fmaxf(scale, fabsf(s));
            }
            int m = 0;
            for (int i = 0; i < k; i++)
                tmp[m++] = g[i];
            for (int i = 0; i < k; i++)
                tmp[m++] = c[i];
            qsort(tmp, (size_t)m, sizeof *tmp, cmp_int);
            bool explained = true;
            for (int i = 0; i < m; i++) {
                bool dup = (i + 1 < m && tmp[i + 1] == tmp[i]) || (i > 0 && tmp[i - 1] == tmp[i]);
                if (dup || tmp[i] < 0 || tmp[i] >= n)
                    continue;
                float s = cpu_score(h, a, b, q, w, t, tmp[i]);
                if (fabsf(s - kth) > 1e-5f * scale)
                    explained = false;
            }
            rows_unexplained += !explained;
        }
        free(tmp);
        char shape[160];
        snprintf(shape, sizeof shape, "%s T=%d Hi=%d topk=%d max_ctx=%d seqs=%d", what, T, Hi, topk, b->max_pos + 1,
                 b->n_seqs);
        double overlap = total ? inter / total : 1.0;
        printf("      indexer_topk %s: %ld malformed entries, %ld/%d rows differ (%ld not near-ties), overlap %.5f, "
               "worst row %.4f\n", what, bad_form, rows_diff, T, rows_unexplained, overlap, worst_row);
        gh_report(h, "indexer_topk form", shape, (double)bad_form, (double)bad_form, 0, bad_form == 0);
        if (exact)
            gh_report(h, "indexer_topk exact", shape, (double)rows_unexplained, (double)rows_diff, 0,
                      rows_unexplained == 0);
        gh_report(h, "indexer_topk overlap", shape, 1.0 - overlap, 1.0 - worst_row, 1.0 - gate, overlap >= gate);
    }
    free(got), free(want), free(poison), free(q), free(w);
    h->co->release(h->cpu, q_c), h->go->release(h->gpu, q_g);
    h->co->release(h->cpu, w_c), h->go->release(h->gpu, w_g);
    h->co->release(h->cpu, o_c), h->go->release(h->gpu, o_g);
    step_free(&sc, h->cpu), step_free(&sg, h->gpu);
}

/* ---- 3. attention ------------------------------------------------------------------------------ */

struct attn_fixture {
    struct gh_wset wc, wg;
    struct dsd_layer_weights layer;
    struct dsd_weight kvb;
};

static int attn_weights(struct gh_ctx *h, struct attn_fixture *f)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int H = d->num_attention_heads, N = d->qk_nope_head_dim, V = d->v_head_dim, L = d->kv_lora_rank;
    memset(f, 0, sizeof *f);
    if (gh_rand_weight(&f->kvb, DSD_DTYPE_F8_E4M3, (int64_t)H * (N + V), L, 0.05f, 0.0f, "kv_b"))
        return -1;
    f->layer.kv_b = f->kvb;
    struct dsd_model_weights m = { .n_layers = 1, .layers = &f->layer };
    if (gh_wset_clone(&f->wc, &m, 0) || gh_wset_clone(&f->wg, &m, 0))
        return -1;
    if (gh_wset_prepare(&f->wc, h->cpu) || gh_wset_prepare(&f->wg, h->gpu))
        return -1;
    return 0;
}

static void attn_weights_free(struct attn_fixture *f)
{
    gh_wset_free(&f->wc);
    gh_wset_free(&f->wg);
    gh_weight_free(&f->kvb);
}

/* random selections: every causal position when pos+1 <= topk, else topk distinct ascending
 * positions; row `cut` (if >= 0) gets a -1 in the middle (the CPU stops there) */
static void make_sel(const struct batch *b, int topk, int32_t *sel, int cut)
{
    for (int t = 0; t < b->T; t++) {
        int32_t *s = sel + (size_t)t * topk;
        int n = b->pos[t] + 1;
        if (n <= topk) {
            for (int i = 0; i < topk; i++)
                s[i] = i < n ? i : -1;
        } else {
            /* reservoir sampling over the positions, then sorted */
            for (int i = 0; i < topk; i++)
                s[i] = i;
            for (int j = topk; j < n; j++) {
                int r = (int)(rnd() % (uint32_t)(j + 1));
                if (r < topk)
                    s[r] = j;
            }
            qsort(s, (size_t)topk, sizeof *s, cmp_int);
        }
        if (t == cut && topk > 4)
            s[topk / 2] = -1;
    }
}

struct attn_timing {
    struct gh_ctx *h;
    void *out, *q;
    const struct dsd_weight *kvb;
    const struct dsd_kv_layer *kv;
    const int32_t *sel;
    int topk;
    const struct dsd_step *st;
    /* indexer */
    int32_t *idx_out;
    const float *w;
};

static void run_attn(void *u)
{
    struct attn_timing *a = u;
    a->h->go->mla_attention(a->h->gpu, a->out, a->q, a->kvb, a->kv, a->sel, a->topk, a->st);
}

static void run_indexer(void *u)
{
    struct attn_timing *a = u;
    a->h->go->indexer_topk(a->h->gpu, a->idx_out, a->topk, a->q, a->w, a->kv, a->st);
}

/* The sparse attention's kernels as tests and timings force them: the automatic choice, the
 * per-token kernel, and the tiled one with each source of an FP8 cache's rows (a bf16 cache
 * is read in place) on each engine (mma.sync, wgmma, warp-specialized wgmma). */
static const struct attn_run {
    enum dsd_cuda_attn_kernel kern;
    enum dsd_cuda_attn_tile tile;
    const char *name;
    bool fp8_only;      /* a second source only an FP8 cache has */
} attn_runs[] = {
    { DSD_CUDA_ATTN_AUTO, DSD_CUDA_TILE_AUTO, "", false },
    { DSD_CUDA_ATTN_PER_TOKEN, DSD_CUDA_TILE_AUTO, "per-token", false },
    { DSD_CUDA_ATTN_TILED_PAGES, DSD_CUDA_TILE_MMA, "tiled-pages mma", false },
    { DSD_CUDA_ATTN_TILED_PAGES, DSD_CUDA_TILE_WGMMA, "tiled-pages wgmma", false },
    { DSD_CUDA_ATTN_TILED_GATHER, DSD_CUDA_TILE_MMA, "tiled-gather mma", true },
    { DSD_CUDA_ATTN_TILED_GATHER, DSD_CUDA_TILE_WGMMA, "tiled-gather wgmma", true },
    { DSD_CUDA_ATTN_TILED_PAGES, DSD_CUDA_TILE_WS, "tiled-pages ws", false },
    { DSD_CUDA_ATTN_TILED_GATHER, DSD_CUDA_TILE_WS, "tiled-gather ws", true },
    /* the FP8 cache read in place by the producer (a bf16 cache: the same as tiled-pages ws) */
    { DSD_CUDA_ATTN_TILED_PAGES, DSD_CUDA_TILE_WS_FP8, "tiled ws-fp8", true },
};
#define N_ATTN_RUNS ((int)(sizeof attn_runs / sizeof attn_runs[0]))

static void attn_force(struct gh_ctx *h, const struct attn_run *r)
{
    dsd_backend_cuda_set_attention_kernel(h->gpu, r->kern);
    dsd_backend_cuda_set_attention_tile(h->gpu, r->tile);
}

/* Under racecheck (--racecheck) the warp-specialized engine is left out, AUTO included: its
 * warpgroups hand data over on named barriers (bar.arrive / bar.sync among 256 of the 384
 * threads) and mbarriers, which racecheck does not follow, so it reports those handoffs as
 * hazards (docs/KERNELS.md, "Sparse MLA"; memcheck and the checks cover the engine). */
static bool attn_run_skipped(const struct attn_run *r)
{
    return gh_racecheck() && (r->tile == DSD_CUDA_TILE_WS || r->tile == DSD_CUDA_TILE_WS_FP8);
}

static void attn_auto(struct gh_ctx *h)
{
    dsd_backend_cuda_set_attention_kernel(h->gpu, DSD_CUDA_ATTN_AUTO);
    dsd_backend_cuda_set_attention_tile(h->gpu, gh_attn_tile_auto());
}

static void test_attention_run(struct gh_ctx *h, struct attn_fixture *f, struct arenas *a, const struct batch *b,
                               double gate, const char *what)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int T = b->T, H = d->num_attention_heads, N = d->qk_nope_head_dim, R = d->qk_rope_head_dim;
    const int V = d->v_head_dim, topk = d->index_topk, nq = H * (N + R);
    float *q = xmalloc((size_t)T * nq * 4);
    gh_fill(q, (size_t)T * nq, 1.0f, true);
    int32_t *sel = xmalloc((size_t)T * topk * 4);
    make_sel(b, topk, sel, T > 1 ? 1 : -1);
    struct dev_step sc, sg;
    step_upload(&sc, h->cpu, b);
    step_upload(&sg, h->gpu, b);
    void *q_c = gh_alloc_act(h->cpu, T, nq), *q_g = gh_alloc_act(h->gpu, T, nq);
    void *o_c = gh_alloc_act(h->cpu, T, H * V), *o_g = gh_alloc_act(h->gpu, T, H * V);
    int32_t *s_c = copy_to(h->cpu, sel, (size_t)T * topk * 4), *s_g = copy_to(h->gpu, sel, (size_t)T * topk * 4);
    put_act(h->cpu, q_c, q, (size_t)T * nq);
    put_act(h->gpu, q_g, q, (size_t)T * nq);

    h->co->mla_attention(h->cpu, o_c, q_c, &f->wc.w.layers[0].kv_b, &a->cpu, s_c, topk, &sc.st);
    float *got = xmalloc((size_t)T * H * V * 4), *want = xmalloc((size_t)T * H * V * 4);
    if (gh_sync(h->cpu, "mla_attention (cpu)") || get_act(h->cpu, want, o_c, (size_t)T * H * V))
        goto done;
    /* every forced kernel (the automatic choice takes the tiled one only for many tokens) */
    for (int k = 1; k < N_ATTN_RUNS; k++) {
        const struct attn_run *run = &attn_runs[k];
        if ((run->fp8_only && a->lay.mla_dtype != DSD_KV_FP8) || attn_run_skipped(run))
            continue;
        poison_act(h->gpu, o_g, (size_t)T * H * V);
        attn_force(h, run);
        h->go->mla_attention(h->gpu, o_g, q_g, &f->wg.w.layers[0].kv_b, &a->gpu, s_g, topk, &sg.st);
        attn_auto(h);
        if (gh_sync(h->gpu, "mla_attention") || get_act(h->gpu, got, o_g, (size_t)T * H * V))
            break;
        char shape[160];
        snprintf(shape, sizeof shape, "%s %s T=%d H=%d L=%d R=%d topk=%d max_ctx=%d kv=%s", what, run->name, T, H,
                 d->kv_lora_rank, d->qk_rope_head_dim, topk, b->max_pos + 1,
                 a->lay.mla_dtype == DSD_KV_FP8 ? "fp8" : "bf16");
        if (!gh_check(h, "mla_attention", shape, got, want, (size_t)T * H * V, gate)) {
            /* where it goes wrong: per token (its sequence, position, selection length) and head */
            for (int t = 0; t < T; t++) {
                int n = 0;
                while (n < topk && sel[(size_t)t * topk + n] >= 0)
                    n++;
                printf("      token %2d seq %d pos %4d n_sel %4d:", t, b->seq[t], b->pos[t], n);
                for (int hh = 0; hh < H && hh < 8; hh++) {
                    const size_t o = ((size_t)t * H + hh) * V;
                    printf(" h%d %.2e", hh, gh_rel_err(got + o, want + o, (size_t)V));
                }
                printf("\n");
            }
        }
    }
done:
    free(got), free(want), free(q), free(sel);
    h->co->release(h->cpu, q_c), h->go->release(h->gpu, q_g);
    h->co->release(h->cpu, o_c), h->go->release(h->gpu, o_g);
    h->co->release(h->cpu, s_c), h->go->release(h->gpu, s_g);
    step_free(&sc, h->cpu), step_free(&sg, h->gpu);
}

/* `copies` sequences that each own the pages of src's sequence s (the same page ids: reads
 * only), so a decode batch has as many long contexts as tokens without their memory */
static void batch_alias(struct batch *dst, const struct batch *src, int s, int copies)
{
    const int np = src->page_off[s + 1] - src->page_off[s];
    memset(dst, 0, sizeof *dst);
    dst->n_seqs = copies;
    dst->n_pages_total = np * copies;
    dst->len = xmalloc((size_t)copies * sizeof(int));
    dst->page_off = xmalloc(((size_t)copies + 1) * sizeof(int32_t));
    dst->pages = xmalloc((size_t)(np * copies > 0 ? np * copies : 1) * sizeof(int32_t));
    for (int c = 0; c <= copies; c++)
        dst->page_off[c] = c * np;
    for (int c = 0; c < copies; c++) {
        dst->len[c] = src->len[s];
        memcpy(dst->pages + (size_t)c * np, src->pages + src->page_off[s], (size_t)np * sizeof(int32_t));
    }
}

/* GPU-only timings at a batch of B tokens: prefill, B tokens at the end of one long sequence
 * (ctx positions cached); decode, one token at ~ctx in each of B sequences (batch_alias) */
static void time_ops(struct gh_ctx *h, struct attn_fixture *f, struct arenas *a, struct batch *b0, int long_seq,
                     int ctx, int B, bool prefill)
{
    const struct dsd_model_dims *d = &h->conf->dims;
    const int H = d->num_attention_heads, N = d->qk_nope_head_dim, R = d->qk_rope_head_dim, V = d->v_head_dim;
    const int L = d->kv_lora_rank, Hi = d->index_n_heads, topk = d->index_topk;
    struct batch alias, *b = b0;
    if (!prefill) {
        batch_alias(&alias, b0, long_seq, B);
        b = &alias;
    }
    int *seq = xmalloc((size_t)B * sizeof(int)), *pos = xmalloc((size_t)B * sizeof(int));
    for (int i = 0; i < B; i++) {
        seq[i] = prefill ? long_seq : i;
        pos[i] = prefill ? ctx - B + i : ctx - 1 - (i % 8);
    }
    batch_tokens(b, B, seq, pos);
    struct dev_step sg;
    step_upload(&sg, h->gpu, b);
    float *q = xmalloc((size_t)B * H * (N + R) * 4), *w = xmalloc((size_t)B * Hi * 4);
    gh_fill(q, (size_t)B * H * (N + R), 1.0f, true);
    gh_fill(w, (size_t)B * Hi, 1.0f, false);
    void *q_g = gh_alloc_act(h->gpu, B, H * (N + R)), *qi_g = gh_alloc_act(h->gpu, B, Hi * 128);
    void *o_g = gh_alloc_act(h->gpu, B, H * V);
    float *w_g = copy_to(h->gpu, w, (size_t)B * Hi * 4);
    int32_t *sel_g = gh_alloc(h->gpu, (size_t)B * topk * 4);
    put_act(h->gpu, q_g, q, (size_t)B * H * (N + R));
    put_act(h->gpu, qi_g, q, (size_t)B * Hi * 128);
    struct attn_timing t = { .h = h, .out = o_g, .q = qi_g, .kvb = &f->wg.w.layers[0].kv_b, .kv = &a->gpu,
                             .sel = sel_g, .topk = topk, .st = &sg.st, .idx_out = sel_g, .w = w_g };
    char shape[128];
    snprintf(shape, sizeof shape, "%s B=%d ctx=%d", prefill ? "prefill" : "decode", B, ctx);
    /* the indexer's selection feeds the attention timing (the default path runs last) */
    double ms = 0, keys = 0;
    for (int i = 0; i < B; i++)
        keys += pos[i] + 1;
    static const enum dsd_cuda_indexer_kernel ikern[3] = { DSD_CUDA_INDEXER_BF16, DSD_CUDA_INDEXER_FP8,
                                                           DSD_CUDA_INDEXER_WGMMA };
    static const char *iname[3] = { "bf16-mma", "fp8-mma", "fp8-wgmma" };
    for (int k = 0; k < 3; k++) {
        char shape_k[160];
        snprintf(shape_k, sizeof shape_k, "%s %s", shape, iname[k]);
        dsd_backend_cuda_set_indexer_kernel(h->gpu, ikern[k]);
        ms = gh_time_gpu(h, run_indexer, &t);
        dsd_backend_cuda_set_indexer_kernel(h->gpu, DSD_CUDA_INDEXER_AUTO);
        if (ms >= 0)
            gh_report_time(h, "indexer_topk", shape_k, ms, keys * 132.0 + (double)B * Hi * 128 * 2,
                           keys * Hi * 128 * 2.0);
    }
    t.q = q_g;
    /* the automatic choice, then each kernel forced */
    for (int k = 0; k < N_ATTN_RUNS; k++) {
        /* dequantizing every page of B long contexts is not a candidate at decode (ws-fp8
         * dequantizes nothing first) */
        if ((!prefill && attn_runs[k].kern == DSD_CUDA_ATTN_TILED_PAGES && attn_runs[k].tile != DSD_CUDA_TILE_WS_FP8) ||
            attn_run_skipped(&attn_runs[k]))
            continue;
        attn_force(h, &attn_runs[k]);
        ms = gh_time_gpu(h, run_attn, &t);
        attn_auto(h);
        if (ms >= 0) {
            /* FLOPs as FlashMLA counts sparse attention (docs/KERNELS.md) plus the two absorption GEMMs */
            double entries = (double)B * (topk < ctx ? topk : ctx);
            double flops = (double)B * H * (2.0 * N * L + 2.0 * L * V) + entries * H * 2.0 * (L + R + L);
            char shape_k[160];
            snprintf(shape_k, sizeof shape_k, "%s%s%s", shape, k ? " " : "", attn_runs[k].name);
            gh_report_time(h, "mla_attention", shape_k, ms,
                           entries * a->lay.mla_token_bytes + (double)H * (N + V) * L * 2, flops);
        }
    }
    free(seq), free(pos), free(q), free(w);
    h->go->release(h->gpu, q_g), h->go->release(h->gpu, qi_g), h->go->release(h->gpu, o_g);
    h->go->release(h->gpu, w_g), h->go->release(h->gpu, sel_g);
    step_free(&sg, h->gpu);
    if (!prefill)
        batch_free(&alias);
}

/* ---- configurations ---------------------------------------------------------------------------- */

struct run_spec {
    int n_seqs;
    const int *len;         /* cached tokens per sequence */
    int T;
    const int *seq, *pos;   /* query tokens */
    bool exact;             /* indexer: exact up to near-ties */
    bool timings;
};

static void run_config(struct gh_config *c, const struct run_spec *r, enum dsd_kv_dtype kv_dtype)
{
    struct gh_ctx h;
    if (kv_dtype == DSD_KV_FP8) {
        if (gh_open(&h, c))
            return;
    } else {
        /* gh_open makes FP8-KV backends; the bf16 layout needs its own pair */
        memset(&h, 0, sizeof h);
        h.conf = c;
        struct dsd_backend_params p = dsd_backend_default_params();
        p.dims = c->dims;
        p.kv_dtype = kv_dtype;
        struct dsd_err err = { { 0 } };
        h.gpu = dsd_backend_cuda_new(&p, &err);
        if (h.gpu)
            h.cpu = dsd_backend_cpu_new(&p, &err);
        if (!h.gpu && gh_no_device(err.msg))
            return;
        if (!h.gpu || !h.cpu) {
            gh_fail("[%s] backends with bf16 KV: %s", c->name, err.msg);
            if (h.gpu)
                dsd_backend_free(h.gpu);
            return;
        }
        h.co = dsd_backend_ops(h.cpu);
        h.go = dsd_backend_ops(h.gpu);
    }
    attn_auto(&h);
    printf("# config %s: H=%d L=%d R=%d N=%d V=%d Hi=%d topk=%d kv=%s\n", c->name, c->dims.num_attention_heads,
           c->dims.kv_lora_rank, c->dims.qk_rope_head_dim, c->dims.qk_nope_head_dim, c->dims.v_head_dim,
           c->dims.index_n_heads, c->dims.index_topk, kv_dtype == DSD_KV_FP8 ? "fp8" : "bf16");
    fflush(stdout);

    /* 1. stores */
    test_kv_store(&h, 1, kv_dtype == DSD_KV_FP8);
    test_kv_store(&h, 77, kv_dtype == DSD_KV_FP8);
    if (!gh_tiny_only())
        test_kv_store(&h, 1000, kv_dtype == DSD_KV_FP8);

    /* 2./3. a cache filled on the CPU and copied, then indexer and attention */
    struct batch b;
    batch_make(&b, r->n_seqs, r->len);
    struct arenas a;
    if (!arenas_make(&a, &h, b.n_pages_total)) {
        fill_cache_cpu(&h, &a, &b);
        arenas_sync_to_gpu(&a, &h);
        batch_tokens(&b, r->T, r->seq, r->pos);
        if (kv_dtype == DSD_KV_FP8) {
            test_indexer_run(&h, &a, &b, r->exact, r->exact ? 0.999 : 0.99, DSD_CUDA_INDEXER_FP8, "ragged fp8-mma");
            test_indexer_run(&h, &a, &b, r->exact, r->exact ? 0.999 : 0.99, DSD_CUDA_INDEXER_WGMMA,
                             "ragged fp8-wgmma");
            test_indexer_run(&h, &a, &b, r->exact, r->exact ? 0.999 : 0.99, DSD_CUDA_INDEXER_BF16, "ragged bf16-mma");
        }
        struct attn_fixture f;
        if (!attn_weights(&h, &f)) {
            test_attention_run(&h, &f, &a, &b, 1e-2, "ragged");
            if (r->timings && !gh_tiny_only()) {
                /* the longest sequence carries the timings */
                int longest = 0;
                for (int s = 1; s < b.n_seqs; s++)
                    if (b.len[s] > b.len[longest])
                        longest = s;
                const int ctxs[2] = { 4096, 32768 }, Bs[5] = { 1, 8, 32, 64, 128 };
                for (int ci = 0; ci < 2; ci++)
                    for (int bi = 0; bi < 5; bi++)
                        if (ctxs[ci] <= b.len[longest])
                            time_ops(&h, &f, &a, &b, longest, ctxs[ci], Bs[bi], false);
                time_ops(&h, &f, &a, &b, longest, b.len[longest], 1024, true);
            }
        }
        attn_weights_free(&f);
    }
    arenas_free(&a, &h);
    batch_free(&b);
    gh_close(&h);
}

int main(int argc, char **argv)
{
    gh_init(argc, argv, "test_cuda_attention");
    struct gh_config c;

    /* tiny: H=4, L=256, Hi=8, topk=24; contexts around topk (trivial and scored rows) */
    {
        static const int len[] = { 1, 24, 25, 100, 300, 777 };
        static const int seq[] = { 0, 1, 1, 2, 4, 4, 4, 3, 4, 5, 5, 5, 3 };
        static const int pos[] = { 0, 23, 10, 24, 297, 298, 299, 50, 150, 776, 700, 64, 99 };
        struct run_spec r = { 6, len, 13, seq, pos, true, false };
        if (!gh_config_preset(&c, "tiny")) {
            run_config(&c, &r, DSD_KV_FP8);
            gh_config_update(&c, "tiny-kvbf16");
            run_config(&c, &r, DSD_KV_BF16);
        }
    }
    /* tiny variants that separate the kernel's paths: top-k 128 at L = 256 (several splits of
     * the selection per token: the combine kernel), L = 512 with top-k 24 (one split: o_lat
     * written directly), N = V = 128 at L = 256, R = 32 */
    {
        static const int len[] = { 1, 24, 25, 100, 300, 777 };
        static const int seq[] = { 0, 1, 1, 2, 4, 4, 4, 3, 4, 5, 5, 5, 3 };
        static const int pos[] = { 0, 23, 10, 24, 297, 298, 299, 50, 150, 776, 700, 64, 99 };
        struct run_spec r = { 6, len, 13, seq, pos, true, false };
        if (!gh_config_preset(&c, "tiny")) {
            c.cfg.index_topk = 128;
            gh_config_update(&c, "tiny-top128");
            run_config(&c, &r, DSD_KV_FP8);
        }
        if (!gh_config_preset(&c, "tiny")) {
            c.cfg.kv_lora_rank = 512;
            gh_config_update(&c, "tiny-l512");
            run_config(&c, &r, DSD_KV_FP8);
        }
        if (!gh_config_preset(&c, "tiny")) {
            c.cfg.num_attention_heads = 16;
            gh_config_update(&c, "tiny-h16");
            run_config(&c, &r, DSD_KV_FP8);
        }
        if (!gh_config_preset(&c, "small")) {
            c.cfg.num_attention_heads = 4;
            c.cfg.index_topk = 24;
            gh_config_update(&c, "small-h4-top24");
            run_config(&c, &r, DSD_KV_FP8);
        }
        if (!gh_config_preset(&c, "tiny")) {
            c.cfg.qk_nope_head_dim = 128;
            c.cfg.v_head_dim = 128;
            gh_config_update(&c, "tiny-n128");
            run_config(&c, &r, DSD_KV_FP8);
        }
        /* R = 32: entries of L + R = 288 values, a last column block half full (wgmma engine) */
        if (!gh_config_preset(&c, "tiny")) {
            c.cfg.qk_rope_head_dim = 32;
            gh_config_update(&c, "tiny-r32");
            run_config(&c, &r, DSD_KV_FP8);
        }
    }
    if (gh_tiny_only())
        return gh_finish();

    /* another config: 40 heads (not a multiple of 32), 24 indexer heads, top-k 100 (not a multiple
     * of 64), L = 384 */
    {
        static const int len[] = { 90, 1000, 4000, 130 };
        static const int seq[] = { 0, 1, 1, 1, 2, 2, 2, 2, 3, 3 };
        static const int pos[] = { 89, 999, 500, 63, 3999, 3998, 2048, 1, 129, 128 };
        struct run_spec r = { 4, len, 10, seq, pos, true, false };
        if (!gh_config_preset(&c, "small")) {
            c.cfg.num_attention_heads = 40;
            c.cfg.kv_lora_rank = 384;
            c.cfg.index_n_heads = 24;
            c.cfg.index_topk = 100;
            gh_config_update(&c, "h40-l384-hi24-top100");
            run_config(&c, &r, DSD_KV_FP8);
        }
    }
    /* small preset: H=16, Hi=16, topk=256 */
    {
        static const int len[] = { 300, 2500, 257 };
        static const int seq[] = { 0, 1, 1, 1, 2, 2 };
        static const int pos[] = { 299, 2499, 2000, 255, 256, 100 };
        struct run_spec r = { 3, len, 6, seq, pos, true, false };
        if (!gh_config_preset(&c, "small"))
            run_config(&c, &r, DSD_KV_FP8);
    }
    /* full V3.2 dims: 128 heads, Hi=64, topk 2048; a 32K context among a ragged batch */
    {
        static const int len[] = { 32768, 5000, 2049, 100 };
        static const int seq[] = { 0, 0, 0, 0, 0, 1, 1, 2, 2, 3 };
        static const int pos[] = { 32767, 32766, 20000, 4095, 2047, 4999, 3000, 2048, 2047, 99 };
        struct run_spec r = { 4, len, 10, seq, pos, false, true };
        if (!gh_config_preset(&c, "full-dims"))
            run_config(&c, &r, DSD_KV_FP8);
    }
    return gh_finish();
}
