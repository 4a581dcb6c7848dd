/*
 * The DeepSeek V3.2 forward graph (docs/MODEL.md §3-§8), written once against kernels/ops.h.
 *
 * Per layer: x = norm(resid); resid += MLA_DSA(x); x = norm(resid); resid += FFN(x).
 * MLA_DSA: q/kv projections, interleaved RoPE, latent KV store; indexer projections,
 * half-split RoPE, index-K store, top-k (or, IndexCache, the top-k of the layer before);
 * sparse absorbed attention; o_proj.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index_cache.h"
#include "model.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The per-op profile (model.h): a timer mark before every op of a step and one at its end;
 * op i took the time from mark i to mark i + 1. Off (m->prof NULL) it costs one branch per op. */
struct dsd_forward_prof {
    void **marks;
    const char **names;
    int *layers;
    int cap, n;
    bool overflow, done;
};

static void prof_mark(struct dsd_model *m, const char *name, int layer)
{
    struct dsd_forward_prof *p = m->prof;
    if (p->n == p->cap) {
        p->overflow = true;
        return;
    }
    p->names[p->n] = name;
    p->layers[p->n] = layer;
    m->ops->timer_mark(m->be, p->marks[p->n++]);
}

static void prof_reset(struct dsd_model *m)
{
    if (m->prof) {
        m->prof->n = 0;
        m->prof->overflow = m->prof->done = false;
    }
}

#define PROF(m, name, layer)                    \
    do {                                        \
        if ((m)->prof)                          \
            prof_mark((m), (name), (layer));    \
    } while (0)

/* The forward pass's memory: backend buffers for the activations of up to cap_tokens
 * tokens, the logits of up to cap_rows rows and the step's metadata, plus pinned host
 * staging for the metadata. Allocated once (dsd_model_reserve, or the first step) and grown
 * only when a step needs more, so a daemon that reserves its batch budget at load never
 * allocates in a step. */
struct dsd_forward_ws {
    int cap_tokens, cap_rows, cap_seqs, cap_pages;
    void *resid, *x, *delta;        /* act [T][D] */
    void *cq;                       /* act [T][q_lora] */
    void *q;                        /* act [T][H*(N+R)] */
    void *kva;                      /* act [T][L+R] */
    void *iq;                       /* act [T][Hi*Di] */
    void *ik, *ikn;                 /* act [T][Di] */
    void *attn;                     /* act [T][H*V] */
    void *cat;                      /* act [T][2D] (MTP input) */
    void *h;                        /* act [rows][D] (rows that need logits) */
    float *iw;                      /* f32 [T][Hi] */
    float *hid32;                   /* f32 [T][D] (hidden states in and out) */
    int32_t *sel;                   /* [T][topk] */
    float *logits;                  /* f32 [rows][vocab] */
    struct dsd_sample_result *samples;  /* [rows] */
    int32_t *meta;                  /* the step's metadata (layout: meta_layout) */
    int32_t *h_meta;                /* host staging of meta */
    size_t meta_words;
    /* recorded decode steps (backends with graph ops), by (tokens bucket, context bucket,
     * layers run: dsd_model_set_active_layers) */
    struct graph_slot {
        int tokens, ctx, layers;    /* key */
        bool sampled;               /* key: the step ends with the sample op */
        int runs;                   /* eager runs so far (the first warms the scratch buffers) */
        void *graph;                /* NULL until recorded */
        bool broken;                /* recording failed: always eager */
    } graphs[32];
    int n_graphs;
    uint64_t graph_launches, eager_steps;
    uint64_t graph_host_ns, eager_host_ns;  /* host time enqueuing those steps */
    size_t graph_kernels;           /* kernel launches in the latest recording */
    size_t bytes;                   /* backend memory of the buffers above */
};

/* Where each array of the step's metadata sits in ws->meta: fixed by the workspace's
 * capacities, so the device addresses the ops see do not move from step to step (a recorded
 * step replays with new contents). The page list is last: a step uploads the prefix it uses. */
struct meta_layout {
    size_t tokens, pos, seq, slot, page_off, lrows, srows, pages;
};

#define SAMPLE_ROW_WORDS (sizeof(struct dsd_sample_row) / sizeof(int32_t))

static struct meta_layout meta_layout(const struct dsd_forward_ws *w)
{
    struct meta_layout l;
    const size_t T = (size_t)w->cap_tokens;
    l.tokens = 0;
    l.pos = T;
    l.seq = 2 * T;
    l.slot = 3 * T;
    l.page_off = 4 * T;
    l.lrows = l.page_off + (size_t)w->cap_seqs + 1;
    l.srows = l.lrows + (size_t)(w->cap_rows > 0 ? w->cap_rows : 1);
    l.pages = l.srows + (size_t)(w->cap_rows > 0 ? w->cap_rows : 1) * SAMPLE_ROW_WORDS;
    return l;
}

/* A step's metadata: host values, and the arrays inside ws->meta (uploaded in one copy). */
struct step_meta {
    struct dsd_step st;
    int n_logit_rows;               /* rows the caller gets */
    int n_rows_computed;            /* rows the LM head computes (padding included) */
    const int32_t *logit_rows;      /* backend memory */
    const struct dsd_sample_row *sample_rows;   /* backend memory, [n_rows_computed] */
};

static size_t meta_words(int T, int S, int P, int rows)
{
    return 4 * (size_t)T + (size_t)S + 1 + (size_t)(rows > 0 ? rows : 1) * (1 + SAMPLE_ROW_WORDS) + (size_t)P;
}

static void graphs_free(struct dsd_model *m, struct dsd_forward_ws *w)
{
    for (int i = 0; i < w->n_graphs; i++)
        if (w->graphs[i].graph)
            m->ops->graph_free(m->be, w->graphs[i].graph);
    w->n_graphs = 0;
}

static void ws_release(struct dsd_model *m, struct dsd_forward_ws *w)
{
    graphs_free(m, w);   /* they point at the buffers below */
    void *dev[] = { w->resid, w->x, w->delta, w->cq, w->q, w->kva, w->iq, w->ik, w->ikn, w->attn, w->cat, w->h,
                    w->iw, w->hid32, w->sel, w->logits, w->samples, w->meta };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i])
            m->ops->release(m->be, dev[i]);
    if (w->h_meta)
        m->ops->release_host(m->be, w->h_meta);
    memset(w, 0, sizeof *w);
}

void dsd_forward_ws_free(struct dsd_model *m)
{
    if (!m->ws)
        return;
    if (m->be)
        ws_release(m, m->ws);
    free(m->ws);
    m->ws = NULL;
}

/* Sizes the workspace for T tokens, rows logits rows, S sequences and P pages. */
static int ws_alloc(struct dsd_model *m, struct dsd_forward_ws *w, int T, int rows, int S, int P)
{
    const struct dsd_model_config *c = &m->cfg;
    const size_t t = (size_t)T, a = dsd_backend_act_bytes(m->be), f = sizeof(float);
    const size_t D = (size_t)c->hidden_size, H = (size_t)c->num_attention_heads;
    const size_t r = (size_t)(rows > 0 ? rows : 1);
    const uint64_t launches = w->graph_launches, eager = w->eager_steps;
    const uint64_t ghost = w->graph_host_ns, ehost = w->eager_host_ns;
    memset(w, 0, sizeof *w);
    w->graph_launches = launches;
    w->eager_steps = eager;
    w->graph_host_ns = ghost;
    w->eager_host_ns = ehost;
    bool ok = true;
#define A(field, n) ok &= (w->field = m->ops->alloc(m->be, (n))) != NULL, w->bytes += (n)
    A(resid, t * D * a);
    A(x, t * D * a);
    A(delta, t * D * a);
    A(cq, t * (size_t)c->q_lora_rank * a);
    A(q, t * H * (size_t)dsd_cfg_qk_head_dim(c) * a);
    A(kva, t * (size_t)(c->kv_lora_rank + c->qk_rope_head_dim) * a);
    A(iq, t * (size_t)c->index_n_heads * (size_t)c->index_head_dim * a);
    A(ik, t * (size_t)c->index_head_dim * a);
    A(ikn, t * (size_t)c->index_head_dim * a);
    A(attn, t * H * (size_t)c->v_head_dim * a);
    A(cat, t * 2 * D * a);
    A(h, r * D * a);
    A(iw, t * (size_t)c->index_n_heads * f);
    A(hid32, t * D * f);
    A(sel, t * (size_t)c->index_topk * sizeof(int32_t));
    A(logits, r * (size_t)c->vocab_size * f);
    A(samples, r * sizeof(struct dsd_sample_result));
    w->meta_words = meta_words(T, S, P, rows);
    A(meta, w->meta_words * sizeof(int32_t));
#undef A
    ok &= (w->h_meta = m->ops->alloc_host(m->be, w->meta_words * sizeof(int32_t))) != NULL;
    if (!ok) {
        ws_release(m, w);
        return -ENOMEM;
    }
    w->cap_tokens = T;
    w->cap_rows = rows;
    w->cap_seqs = S;
    w->cap_pages = P;
    return 0;
}

static int imax(int a, int b)
{
    return a > b ? a : b;
}

/* Makes sure the workspace holds a step of T tokens, rows logits rows, S sequences and P
 * pages, growing it (to at least what is asked) when it does not. */
static int ws_ensure(struct dsd_model *m, int T, int rows, int S, int P, struct dsd_err *err)
{
    struct dsd_forward_ws *w = m->ws;
    if (w && T <= w->cap_tokens && rows <= w->cap_rows && S <= w->cap_seqs && P <= w->cap_pages)
        return 0;
    if (!w && !(w = m->ws = calloc(1, sizeof *w)))
        return dsd_errf(err, -ENOMEM, "forward: out of memory");
    /* everything enqueued on the old buffers must be done before they go */
    int rc = m->ops->synchronize(m->be, err);
    if (rc)
        return rc;
    if (w->meta && T <= w->cap_tokens && rows <= w->cap_rows && S <= w->cap_seqs) {
        /* only the page list grew (it is last in the metadata): replace the metadata alone */
        size_t words = meta_words(w->cap_tokens, w->cap_seqs, P, w->cap_rows);
        int32_t *meta = m->ops->alloc(m->be, words * sizeof(int32_t));
        int32_t *h_meta = meta ? m->ops->alloc_host(m->be, words * sizeof(int32_t)) : NULL;
        if (!h_meta) {
            if (meta)
                m->ops->release(m->be, meta);
            return dsd_errf(err, -ENOMEM, "forward: out of memory for the metadata of %d KV pages", P);
        }
        graphs_free(m, w);      /* they read the old metadata */
        m->ops->release(m->be, w->meta);
        m->ops->release_host(m->be, w->h_meta);
        w->bytes += (words - w->meta_words) * sizeof(int32_t);
        w->meta = meta;
        w->h_meta = h_meta;
        w->meta_words = words;
        w->cap_pages = P;
        return 0;
    }
    T = imax(T, w->cap_tokens);
    rows = imax(rows, w->cap_rows);
    S = imax(S, w->cap_seqs);
    P = imax(P, w->cap_pages);
    ws_release(m, w);
    if (ws_alloc(m, w, T, rows, S, P))
        return dsd_errf(err, -ENOMEM, "forward: out of memory for a workspace of %d tokens and %d logits rows", T, rows);
    return 0;
}

int dsd_model_reserve(struct dsd_model *m, int max_tokens, int max_rows, int max_seqs, int max_pages,
                      struct dsd_err *err)
{
    if (max_tokens < 1 || max_rows < 0 || max_seqs < 1 || max_pages < 0)
        return dsd_errf(err, -EINVAL, "reserve: bad sizes (%d tokens, %d rows, %d sequences, %d pages)", max_tokens,
                        max_rows, max_seqs, max_pages);
    return ws_ensure(m, max_tokens, max_rows, max_seqs, max_pages, err);
}

/* A decode step that may be recorded: every sequence feeds one token and wants its logits,
 * nothing else is asked for. Its shape is padded up to a bucket of tokens (powers of two up
 * to DSD_GRAPH_MAX_TOKENS) and of context (powers of two from 4096). */
#define DSD_GRAPH_MAX_TOKENS 64
#define DSD_GRAPH_MIN_CTX 4096

static int pow2_at_least(int v, int lo)
{
    int b = lo;
    while (b < v)
        b *= 2;
    return b;
}

static bool graphable(const struct dsd_model *m, const struct dsd_batch_seq *seqs, int n_seqs,
                      const struct dsd_forward_out *out)
{
    if (!m->ops->graph_begin || out->hidden || out->topk || (!out->logits && !out->samples) ||
        n_seqs > DSD_GRAPH_MAX_TOKENS)
        return false;
    if (m->prof || m->counting)     /* profiled and counting steps run op by op */
        return false;
    for (int i = 0; i < n_seqs; i++)
        if (seqs[i].n_tokens != 1 || seqs[i].no_logits)
            return false;
    return true;
}

/* Checks everything a caller controls, flattens the ragged batch into the host staging and
 * uploads it in one copy. pad_to > n_seqs pads a decode step with dummy sequences of one
 * token at position 0 in the scratch page (page 0, never handed out), so a recorded step of
 * pad_to tokens serves it; their logits rows are computed and dropped. */
static int build_meta(struct dsd_model *m, const struct dsd_batch_seq *seqs, int n_seqs, int pad_to, int ctx_cap,
                      const struct dsd_sample_row *sample, struct step_meta *s, struct dsd_err *err)
{
    memset(s, 0, sizeof *s);
    if (n_seqs <= 0)
        return dsd_errf(err, -EINVAL, "forward: empty batch");
    int T = 0, rows = 0, P = 0;
    for (int i = 0; i < n_seqs; i++) {
        const struct dsd_batch_seq *q = &seqs[i];
        if (q->n_tokens <= 0 || !q->tokens || !q->kv)
            return dsd_errf(err, -EINVAL, "forward: sequence %d has no tokens or no KV pages", i);
        if (q->pos0 < 0 || (int64_t)q->pos0 + q->n_tokens > m->cfg.max_position_embeddings)
            return dsd_errf(err, -EINVAL, "forward: sequence %d reaches position %lld, past max_position_embeddings %lld",
                            i, (long long)q->pos0 + q->n_tokens - 1, (long long)m->cfg.max_position_embeddings);
        if ((int64_t)q->kv->n_pages * DSD_KV_PAGE_TOKENS < (int64_t)q->pos0 + q->n_tokens)
            return dsd_errf(err, -EINVAL, "forward: sequence %d has KV pages for %d positions, needs %d", i,
                            q->kv->n_pages * DSD_KV_PAGE_TOKENS, q->pos0 + q->n_tokens);
        if (T > INT32_MAX / 8 - q->n_tokens || P > INT32_MAX / 8 - q->kv->n_pages)
            return dsd_errf(err, -EINVAL, "forward: batch too large");
        for (int j = 0; j < q->n_tokens; j++)
            if (q->tokens[j] < 0 || q->tokens[j] >= m->cfg.vocab_size)
                return dsd_errf(err, -EINVAL,
                                "forward: sequence %d token %d is id %d, outside the vocabulary [0, %lld)", i, j,
                                q->tokens[j], (long long)m->cfg.vocab_size);
        T += q->n_tokens;
        P += q->kv->n_pages;
        rows += q->no_logits ? 0 : q->logits_all ? q->n_tokens : 1;
    }
    for (int i = 0; sample && i < rows; i++) {
        const struct dsd_sample_row *r = &sample[i];
        if (r->pen_slot < -1 || r->pen_slot >= m->pen_slots || r->n_top < -1 || r->n_top > DSD_SAMPLE_MAX_TOP ||
            !(r->u >= 0.0f && r->u < 1.0f) || !(r->temperature >= 0.0f) || !(r->top_p > 0.0f && r->top_p <= 1.0f) ||
            !(r->min_p >= 0.0f && r->min_p <= 1.0f) || r->top_k < 0 || !(r->repetition_penalty > 0.0f))
            return dsd_errf(err, -EINVAL,
                            "forward: sampling row %d is out of range (penalty slot %d of %d, n_top %d, u %g)", i,
                            r->pen_slot, m->pen_slots, r->n_top, (double)r->u);
    }
    const int pad = pad_to > n_seqs ? pad_to - n_seqs : 0;
    int rc = ws_ensure(m, T + pad, rows + pad, n_seqs + pad, P + pad, err);
    if (rc)
        return rc;
    struct dsd_forward_ws *w = m->ws;
    const struct meta_layout L = meta_layout(w);
    int32_t *h = w->h_meta;
    int32_t *tokens = h + L.tokens, *pos = h + L.pos, *seq = h + L.seq, *slot = h + L.slot;
    int32_t *page_off = h + L.page_off, *lrows = h + L.lrows, *pages = h + L.pages;
    struct dsd_sample_row *srows = (struct dsd_sample_row *)(h + L.srows);
    int t = 0, p = 0, max_pos = 0;
    for (int i = 0; i < n_seqs; i++) {
        const struct dsd_batch_seq *q = &seqs[i];
        page_off[i] = p;
        memcpy(pages + p, q->kv->pages, (size_t)q->kv->n_pages * sizeof(int32_t));
        p += q->kv->n_pages;
        for (int j = 0; j < q->n_tokens; j++, t++) {
            int32_t ps = q->pos0 + j;
            tokens[t] = q->tokens[j];
            pos[t] = ps;
            seq[t] = i;
            slot[t] = q->kv->pages[ps / DSD_KV_PAGE_TOKENS] * DSD_KV_PAGE_TOKENS + ps % DSD_KV_PAGE_TOKENS;
            if (ps > max_pos)
                max_pos = ps;
            if (!q->no_logits && (q->logits_all || j == q->n_tokens - 1))
                lrows[s->n_logit_rows++] = t;
        }
    }
    for (int i = n_seqs; i < n_seqs + pad; i++, t++) {
        page_off[i] = p;
        pages[p++] = 0;
        tokens[t] = 0;
        pos[t] = 0;
        seq[t] = i;
        slot[t] = 0;
        lrows[s->n_logit_rows + (i - n_seqs)] = t;
        /* padding rows sample greedily and touch no penalty state */
        srows[s->n_logit_rows + (i - n_seqs)] = (struct dsd_sample_row){ .top_p = 1.0f, .repetition_penalty = 1.0f,
                                                                          .pen_slot = -1, .n_top = -1 };
    }
    if (sample)
        memcpy(srows, sample, (size_t)s->n_logit_rows * sizeof *srows);
    page_off[n_seqs + pad] = p;
    m->ops->upload(m->be, w->meta, h, (L.pages + (size_t)p) * sizeof(int32_t));
    const int32_t *d = w->meta;
    s->st = (struct dsd_step){
        .n_tokens = T + pad, .n_seqs = n_seqs + pad,
        .max_pos = ctx_cap > 0 ? ctx_cap - 1 : max_pos,
        .n_pages = ctx_cap > 0 ? w->cap_pages : p,
        .tokens = d + L.tokens, .pos = d + L.pos, .seq = d + L.seq, .slot = d + L.slot,
        .page_off = d + L.page_off, .pages = d + L.pages,
    };
    s->logit_rows = d + L.lrows;
    s->sample_rows = (const struct dsd_sample_row *)(d + L.srows);
    s->n_rows_computed = s->n_logit_rows + pad;
    return 0;
}

/* resid += MLA_DSA(norm(resid)) for one layer; leaves the attention output in b->delta. */
static void attention(struct dsd_model *m, int layer, const struct dsd_kv_layer *kv, const struct dsd_step *st,
                      struct dsd_forward_ws *b, int32_t *topk_trace)
{
    const struct dsd_model_config *c = &m->cfg;
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    const struct dsd_ops *o = m->ops;
    struct dsd_backend *be = m->be;
    const int T = st->n_tokens, D = (int)c->hidden_size, QR = c->q_lora_rank;
    const int H = c->num_attention_heads, N = c->qk_nope_head_dim, R = c->qk_rope_head_dim;
    const int L = c->kv_lora_rank, Hi = c->index_n_heads, Di = c->index_head_dim;
    const int QD = H * (N + R);

    /* this layer's KV pages of a tier hit, reloaded beside the step (side copies), are in
     * before anything of the layer runs (the pages this step writes are others) */
    dsd_backend_side_wait(be, layer);

    /* MLA projections; qr (in cq after the norm) also feeds the indexer. */
    PROF(m, "q_a", layer);
    o->linear(be, b->cq, QR, b->x, D, &lw->q_a, T, 0);
    PROF(m, "q_a_norm", layer);
    o->rmsnorm(be, b->cq, QR, b->cq, QR, &lw->q_a_norm, T, QR);
    PROF(m, "q_b", layer);
    o->linear(be, b->q, QD, b->cq, QR, &lw->q_b, T, 0);
    PROF(m, "kv_a", layer);
    o->linear(be, b->kva, L + R, b->x, D, &lw->kv_a, T, 0);
    PROF(m, "kv_a_norm", layer);
    o->rmsnorm(be, b->kva, L + R, b->kva, L + R, &lw->kv_a_norm, T, L);
    PROF(m, "rope", layer);
    o->rope(be, b->q, QD, H, N + R, N, st->pos, T, true);
    o->rope(be, b->kva, L + R, 1, 0, L, st->pos, T, true);
    PROF(m, "mla_kv_store", layer);
    o->mla_kv_store(be, kv, b->kva, L + R, st->slot, T);

    /* DSA indexer: its keys are stored before any token of the step scores (candidates <= pos).
     * A layer IndexCache marks shared (index_cache.h) skips it whole, its index-K store
     * included (nothing ever reads that layer's index-K under the same plan), and attends to
     * b->sel as the last computing layer of this step left it. */
    if (dsd_index_cache_computes(c, layer)) {
        PROF(m, "idx_wq_b", layer);
        o->linear(be, b->iq, Hi * Di, b->cq, QR, &lw->idx_wq_b, T, 0);
        PROF(m, "idx_wk", layer);
        o->linear(be, b->ik, Di, b->x, D, &lw->idx_wk, T, 0);
        PROF(m, "idx_k_norm", layer);
        o->layernorm(be, b->ikn, b->ik, &lw->idx_k_norm, &lw->idx_k_norm_bias, T, Di);
        PROF(m, "idx_weights_proj", layer);
        o->linear(be, b->iw, Hi, b->x, D, &lw->idx_weights_proj, T, DSD_LINEAR_F32_OUT);
        PROF(m, "rope", layer);
        o->rope(be, b->iq, Hi * Di, Hi, Di, 0, st->pos, T, false);
        o->rope(be, b->ikn, Di, 1, 0, 0, st->pos, T, false);
        PROF(m, "index_k_store", layer);
        o->index_k_store(be, kv, b->ikn, st->slot, T);
        PROF(m, "indexer_topk", layer);
        o->indexer_topk(be, b->sel, c->index_topk, b->iq, b->iw, kv, st);
    }
    if (topk_trace)
        o->download(be, topk_trace, b->sel, (size_t)T * c->index_topk * sizeof(int32_t));

    PROF(m, "mla_attention", layer);
    o->mla_attention(be, b->attn, b->q, &lw->kv_b, kv, b->sel, c->index_topk, st);
    PROF(m, "o_proj", layer);
    o->linear(be, b->delta, D, b->attn, H * c->v_head_dim, &lw->o_proj, T, 0);
}

static void ffn(struct dsd_model *m, int layer, int T, struct dsd_forward_ws *b)
{
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    PROF(m, lw->is_moe ? "moe" : "mlp", layer);
    if (lw->is_moe)
        m->ops->moe(m->be, b->delta, b->x, lw, T);
    else
        m->ops->mlp(m->be, b->delta, b->x, &lw->mlp, T);
}

/* One decoder layer on the residual stream b->resid; `first` when resid has no pending delta. */
static void decoder_layer(struct dsd_model *m, int layer, struct dsd_kv_cache *kv, const struct dsd_step *st,
                          struct dsd_forward_ws *b, bool first, int32_t *topk_trace)
{
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    PROF(m, "attn_norm", layer);
    m->ops->add_rmsnorm(m->be, b->x, b->resid, first ? NULL : b->delta, &lw->attn_norm, st->n_tokens);
    attention(m, layer, dsd_kv_cache_layer(kv, layer), st, b, topk_trace);
    PROF(m, "ffn_norm", layer);
    m->ops->add_rmsnorm(m->be, b->x, b->resid, b->delta, &lw->ffn_norm, st->n_tokens);
    ffn(m, layer, st->n_tokens, b);
}

/* Final norm (into b->x), optional hidden download, LM head over the rows that need logits
 * (padding rows included), all enqueued. */
static void enqueue_head(struct dsd_model *m, const struct dsd_weight *norm, const struct step_meta *s,
                         struct dsd_forward_ws *b, const struct dsd_forward_out *out)
{
    const struct dsd_model_config *c = &m->cfg;
    const int T = s->st.n_tokens, D = (int)c->hidden_size;
    PROF(m, "final_norm", -1);
    m->ops->add_rmsnorm(m->be, b->x, b->resid, b->delta, norm, T);
    if (out->hidden) {
        m->ops->to_f32(m->be, b->hid32, b->x, T, D);
        m->ops->download(m->be, out->hidden, b->hid32, (size_t)T * D * sizeof(float));
    }
    if ((out->logits || out->samples) && s->n_rows_computed > 0) {
        const int rows = s->n_rows_computed;
        PROF(m, "gather_rows", -1);
        m->ops->gather_rows(m->be, b->h, b->x, D, s->logit_rows, rows);
        PROF(m, "lm_head", -1);
        m->ops->linear(m->be, b->logits, (int)c->vocab_size, b->h, D, &m->w.lm_head, rows, DSD_LINEAR_F32_OUT);
        if (out->samples)
            m->ops->sample(m->be, b->samples, b->logits, s->sample_rows, rows, m->pen, c->vocab_size);
    }
}

/* The logits the caller asked for, then the one wait of the step. */
static int complete(struct dsd_model *m, const struct step_meta *s, struct dsd_forward_ws *b,
                    struct dsd_forward_out *out, struct dsd_err *err)
{
    out->n_rows = s->n_logit_rows;
    PROF(m, "logits_download", -1);
    if (out->logits && s->n_logit_rows > 0)
        m->ops->download(m->be, out->logits, b->logits,
                         (size_t)s->n_logit_rows * (size_t)m->cfg.vocab_size * sizeof(float));
    if (out->samples && s->n_logit_rows > 0)
        m->ops->download(m->be, out->samples, b->samples, (size_t)s->n_logit_rows * sizeof *out->samples);
    PROF(m, "end", -1);
    int rc = m->ops->synchronize(m->be, err);
    if (m->prof)
        m->prof->done = rc == 0;
    if (rc)
        dsd_err_prefix(err, rc, "forward");
    return rc;
}

static void enqueue_main(struct dsd_model *m, struct dsd_kv_cache *kv, const struct step_meta *s,
                         struct dsd_forward_ws *b, const struct dsd_forward_out *out)
{
    const int T = s->st.n_tokens;
    const int n_layers = m->limit_layers ? m->active_layers : m->cfg.num_hidden_layers;
    PROF(m, "embed", -1);
    m->ops->embed(m->be, b->resid, &m->w.embed, s->st.tokens, T);
    for (int l = 0; l < n_layers; l++)
        decoder_layer(m, l, kv, &s->st, b, l == 0, out->topk ? out->topk + (size_t)l * T * m->cfg.index_topk : NULL);
    enqueue_head(m, &m->w.final_norm, s, b, out);
}

static struct graph_slot *graph_slot(struct dsd_forward_ws *w, int tokens, int ctx, int layers, bool sampled)
{
    for (int i = 0; i < w->n_graphs; i++)
        if (w->graphs[i].tokens == tokens && w->graphs[i].ctx == ctx && w->graphs[i].layers == layers &&
            w->graphs[i].sampled == sampled)
            return &w->graphs[i];
    if (w->n_graphs == (int)(sizeof w->graphs / sizeof w->graphs[0]))
        return NULL;
    struct graph_slot *g = &w->graphs[w->n_graphs++];
    *g = (struct graph_slot){ .tokens = tokens, .ctx = ctx, .layers = layers, .sampled = sampled };
    return g;
}

int dsd_model_forward(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs, int n_seqs,
                      struct dsd_forward_out *out, struct dsd_err *err)
{
    /* A decode step on a backend that records steps runs as a replay of a recorded step of
     * its bucket: the first step of a bucket runs eagerly (it sizes every scratch buffer),
     * the second is recorded, every later one replays. */
    if (out->samples && !out->sample)
        return dsd_errf(err, -EINVAL, "forward: samples asked for without sampling rows");
    const uint64_t t0 = now_ns();
    bool g = n_seqs > 0 && !m->params.no_graphs && graphable(m, seqs, n_seqs, out);
    int bucket = 0, ctx = 0;
    if (g) {
        int max_pos = 0;
        for (int i = 0; i < n_seqs; i++)
            if (seqs[i].pos0 > max_pos)
                max_pos = seqs[i].pos0;
        bucket = pow2_at_least(n_seqs, 1);
        ctx = pow2_at_least(max_pos + 1, DSD_GRAPH_MIN_CTX);
    }
    struct step_meta s;
    int rc = build_meta(m, seqs, n_seqs, bucket, ctx, out->samples ? out->sample : NULL, &s, err);
    if (rc)
        return rc;
    prof_reset(m);
    struct dsd_forward_ws *b = m->ws;
    struct graph_slot *gs =
        g ? graph_slot(b, bucket, ctx, m->limit_layers ? m->active_layers : -1, out->samples != NULL) : NULL;
    /* a recorded step cannot wait layer by layer for KV pages still being reloaded beside it
     * (side copies): it starts after all of them */
    if (gs)
        dsd_backend_side_wait(m->be, -1);
    if (gs && !gs->graph && !gs->broken && gs->runs >= 1) {
        struct dsd_err gerr;
        if (m->ops->graph_begin(m->be, &gerr) == 0) {
            enqueue_main(m, kv, &s, b, out);
            if (m->ops->graph_end(m->be, &gs->graph, &b->graph_kernels, &gerr))
                gs->broken = true;      /* recorded nothing usable: run this step eagerly */
        } else {
            gs->broken = true;
        }
    }
    if (gs && gs->graph) {
        m->ops->graph_launch(m->be, gs->graph);
        b->graph_launches++;
        b->graph_host_ns += now_ns() - t0;
    } else {
        enqueue_main(m, kv, &s, b, out);
        b->eager_steps++;
        b->eager_host_ns += now_ns() - t0;
        if (gs)
            gs->runs++;
    }
    return complete(m, &s, b, out, err);
}

int dsd_model_set_active_layers(struct dsd_model *m, int n, struct dsd_err *err)
{
    if (n < 0 || n > m->cfg.num_hidden_layers)
        return dsd_errf(err, -EINVAL, "active layers: %d is outside [0, %d]", n, m->cfg.num_hidden_layers);
    /* recordings are kept per layer count (graph_slot): switching back and forth is free */
    m->limit_layers = n < m->cfg.num_hidden_layers;
    m->active_layers = n;
    return 0;
}

int dsd_model_forward_count_experts(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs,
                                    int n_seqs, struct dsd_forward_out *out, int32_t *hits, struct dsd_err *err)
{
    const struct dsd_ops *o = m->ops;
    if (!o->moe_count)
        return dsd_errf(err, -ENOTSUP, "the %s backend cannot count expert use", o->name);
    const size_t n = (size_t)m->cfg.num_hidden_layers * (size_t)m->cfg.n_routed_experts;
    int32_t *d = o->alloc(m->be, (n ? n : 1) * sizeof(int32_t));   /* zeroed */
    if (!d)
        return dsd_errf(err, -ENOMEM, "count experts: out of backend memory");
    o->moe_count(m->be, d);
    m->counting = true;
    int rc = dsd_model_forward(m, kv, seqs, n_seqs, out, err);
    m->counting = false;
    o->moe_count(m->be, NULL);
    if (!rc) {
        o->download(m->be, hits, d, n * sizeof(int32_t));
        rc = o->synchronize(m->be, err);
    }
    o->release(m->be, d);
    return rc;
}

int dsd_model_profile_begin(struct dsd_model *m, int max_ops, struct dsd_err *err)
{
    const struct dsd_ops *o = m->ops;
    if (!o->timer_new || !o->timer_mark || !o->timer_ms || !o->timer_free)
        return dsd_errf(err, -ENOTSUP, "profile: the %s backend has no timers", o->name);
    if (max_ops < 2)
        return dsd_errf(err, -EINVAL, "profile: %d ops", max_ops);
    dsd_model_profile_end(m);
    struct dsd_forward_prof *p = calloc(1, sizeof *p);
    if (!p)
        return dsd_errf(err, -ENOMEM, "profile: out of memory");
    p->marks = calloc((size_t)max_ops, sizeof *p->marks);
    p->names = calloc((size_t)max_ops, sizeof *p->names);
    p->layers = calloc((size_t)max_ops, sizeof *p->layers);
    bool ok = p->marks && p->names && p->layers;
    for (int i = 0; ok && i < max_ops; i++)
        ok = (p->marks[i] = o->timer_new(m->be)) != NULL;
    p->cap = max_ops;
    m->prof = p;
    if (!ok) {
        dsd_model_profile_end(m);
        return dsd_errf(err, -ENOMEM, "profile: no memory for %d timers", max_ops);
    }
    if (m->ws)
        graphs_free(m, m->ws);      /* recordings hold no marks: profiled steps run op by op */
    return 0;
}

int dsd_model_profile_read(struct dsd_model *m, struct dsd_op_time *out, int max)
{
    struct dsd_forward_prof *p = m->prof;
    if (!p || !p->done || p->n < 2)
        return -EINVAL;
    if (p->overflow || p->n - 1 > max)
        return -ENOSPC;
    for (int i = 0; i + 1 < p->n; i++)
        out[i] = (struct dsd_op_time){
            .op = p->names[i],
            .layer = p->layers[i],
            .ms = m->ops->timer_ms(m->be, p->marks[i], p->marks[i + 1]),
        };
    return p->n - 1;
}

void dsd_model_profile_end(struct dsd_model *m)
{
    struct dsd_forward_prof *p = m->prof;
    if (!p)
        return;
    if (p->marks)
        for (int i = 0; i < p->cap; i++)
            if (p->marks[i])
                m->ops->timer_free(m->be, p->marks[i]);
    free(p->marks);
    free(p->names);
    free(p->layers);
    free(p);
    m->prof = NULL;
}

void dsd_model_step_stats(const struct dsd_model *m, struct dsd_step_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!m->ws)
        return;
    out->graph_steps = m->ws->graph_launches;
    out->eager_steps = m->ws->eager_steps;
    out->graph_host_ns = m->ws->graph_host_ns;
    out->eager_host_ns = m->ws->eager_host_ns;
    out->graph_kernels = m->ws->graph_kernels;
    out->workspace_bytes = m->ws->bytes;
}

int dsd_model_forward_mtp(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs,
                          int n_seqs, const float *hidden_in, struct dsd_forward_out *out, struct dsd_err *err)
{
    const struct dsd_model_config *c = &m->cfg;
    if (c->num_nextn_predict_layers < 1)
        return dsd_errf(err, -EINVAL, "this checkpoint has no MTP layer (num_nextn_predict_layers = 0)");
    if (out->samples && !out->sample)
        return dsd_errf(err, -EINVAL, "forward: samples asked for without sampling rows");
    struct step_meta s;
    int rc = build_meta(m, seqs, n_seqs, 0, 0, out->samples ? out->sample : NULL, &s, err);
    if (rc)
        return rc;
    prof_reset(m);
    struct dsd_forward_ws *b = m->ws;
    const int T = s.st.n_tokens, D = (int)c->hidden_size, layer = c->num_hidden_layers;
    const struct dsd_layer_weights *lw = &m->w.layers[layer];
    /* z = eh_proj([enorm(embed(t_{i+1})) ; hnorm(h_i)]), embedding half first (docs/MODEL.md §8). */
    m->ops->embed(m->be, b->delta, &m->w.embed, s.st.tokens, T);
    m->ops->rmsnorm(m->be, b->x, D, b->delta, D, &lw->enorm, T, D);
    m->ops->upload(m->be, b->hid32, hidden_in, (size_t)T * D * sizeof(float));
    m->ops->from_f32(m->be, b->delta, b->hid32, T, D);
    m->ops->rmsnorm(m->be, b->delta, D, b->delta, D, &lw->hnorm, T, D);
    m->ops->concat(m->be, b->cat, b->x, D, b->delta, D, T);
    m->ops->linear(m->be, b->resid, D, b->cat, 2 * D, &lw->eh_proj, T, 0);
    decoder_layer(m, layer, kv, &s.st, b, true, out->topk);
    enqueue_head(m, &lw->head_norm, &s, b, out);
    b->eager_steps++;
    return complete(m, &s, b, out, err);
}

/* ---- the penalty state of sampling on the backend ---- */

#define PEN_CHUNK 16384     /* tokens per penalty_mark call (the device staging buffer) */

void dsd_model_penalty_free(struct dsd_model *m)
{
    if (m->pen)
        m->ops->release(m->be, m->pen);
    if (m->pen_tok)
        m->ops->release(m->be, m->pen_tok);
    m->pen = NULL;
    m->pen_tok = NULL;
    m->pen_slots = 0;
}

int dsd_model_penalty_reserve(struct dsd_model *m, int n_slots, struct dsd_err *err)
{
    if (n_slots < 0 || n_slots > 1 << 20)
        return dsd_errf(err, -EINVAL, "penalty state: %d slots is out of range", n_slots);
    if (n_slots <= m->pen_slots)
        return 0;
    /* the old rows may still be read by enqueued steps */
    int rc = m->ops->synchronize(m->be, err);
    if (rc)
        return rc;
    /* recorded steps read the old state's address */
    if (m->ws)
        graphs_free(m, m->ws);
    dsd_model_penalty_free(m);
    const size_t bytes = (size_t)n_slots * (size_t)m->cfg.vocab_size * sizeof(uint32_t);
    m->pen = m->ops->alloc(m->be, bytes);
    m->pen_tok = m->pen ? m->ops->alloc(m->be, PEN_CHUNK * sizeof(int32_t)) : NULL;
    if (!m->pen_tok) {
        dsd_model_penalty_free(m);
        return dsd_errf(err, -ENOMEM, "penalty state: out of backend memory for %d slots (%.1f MiB)", n_slots,
                        (double)bytes / (1 << 20));
    }
    m->pen_slots = n_slots;
    return 0;
}

int dsd_model_penalty_load(struct dsd_model *m, int slot, const int32_t *tokens, int n, int count_from,
                           struct dsd_err *err)
{
    if (slot < 0 || slot >= m->pen_slots || n < 0 || (n > 0 && !tokens))
        return dsd_errf(err, -EINVAL, "penalty state: slot %d of %d, %d tokens", slot, m->pen_slots, n);
    uint32_t *row = m->pen + (size_t)slot * (size_t)m->cfg.vocab_size;
    m->ops->penalty_mark(m->be, row, NULL, 0, 0, true, m->cfg.vocab_size);
    for (int i = 0; i < n; i += PEN_CHUNK) {
        const int k = n - i < PEN_CHUNK ? n - i : PEN_CHUNK;
        /* stream order: this upload waits for the previous chunk's marks */
        m->ops->upload(m->be, m->pen_tok, tokens + i, (size_t)k * sizeof(int32_t));
        m->ops->penalty_mark(m->be, row, m->pen_tok, k, count_from - i, false, m->cfg.vocab_size);
    }
    return 0;
}
