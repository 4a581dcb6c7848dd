/* The paged KV pool: two arenas per layer, a free-page stack, a reference count per page. */
#include "kv_cache.h"

#include <errno.h>
#include <stdlib.h>

struct dsd_kv_cache {
    struct dsd_backend *be;
    struct dsd_kv_layout layout;
    int n_layers, n_pages;
    struct dsd_kv_layer *layers;
    int32_t *free_stack;
    int32_t *refs;                  /* [n_pages]: 0 = free (page 0: never handed out) */
    int n_free;
};

size_t dsd_kv_cache_page_bytes(const struct dsd_kv_layout *l, int n_layers)
{
    return ((size_t)DSD_KV_PAGE_TOKENS * l->mla_token_bytes + l->index_page_bytes) * (size_t)n_layers;
}

struct dsd_kv_cache *dsd_kv_cache_new(struct dsd_backend *be, int n_layers, int n_pages, struct dsd_err *err)
{
    if (n_layers < 1 || n_pages < 2) {
        dsd_errf(err, -EINVAL, "kv cache: need at least 1 layer and 2 pages (have %d, %d)", n_layers, n_pages);
        return NULL;
    }
    const struct dsd_ops *ops = dsd_backend_ops(be);
    const struct dsd_backend_params *bp = dsd_backend_params(be);
    struct dsd_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        goto oom;
    kv->be = be;
    kv->layout = dsd_kv_layout_for(&bp->dims, bp->numerics, bp->kv_dtype);
    kv->n_layers = n_layers;
    kv->n_pages = n_pages;
    kv->layers = calloc((size_t)n_layers, sizeof *kv->layers);
    kv->free_stack = malloc((size_t)n_pages * sizeof *kv->free_stack);
    kv->refs = calloc((size_t)n_pages, sizeof *kv->refs);
    if (!kv->layers || !kv->free_stack || !kv->refs)
        goto oom;
    for (int l = 0; l < n_layers; l++) {
        kv->layers[l].mla = ops->alloc(be, (size_t)n_pages * DSD_KV_PAGE_TOKENS * kv->layout.mla_token_bytes);
        kv->layers[l].index = ops->alloc(be, (size_t)n_pages * kv->layout.index_page_bytes);
        if (!kv->layers[l].mla || !kv->layers[l].index)
            goto oom;
    }
    /* Hand out low page ids first (stack top = page 1). */
    for (int p = n_pages - 1; p >= 1; p--)
        kv->free_stack[kv->n_free++] = p;
    return kv;
oom:
    dsd_errf(err, -ENOMEM, "kv cache: cannot allocate %d pages x %d layers (%zu bytes)", n_pages, n_layers,
             kv ? dsd_kv_cache_page_bytes(&kv->layout, n_layers) * (size_t)n_pages : 0);
    dsd_kv_cache_free(kv);
    return NULL;
}

void dsd_kv_cache_free(struct dsd_kv_cache *kv)
{
    if (!kv)
        return;
    const struct dsd_ops *ops = dsd_backend_ops(kv->be);
    if (kv->layers)
        for (int l = 0; l < kv->n_layers; l++) {
            if (kv->layers[l].mla)
                ops->release(kv->be, kv->layers[l].mla);
            if (kv->layers[l].index)
                ops->release(kv->be, kv->layers[l].index);
        }
    free(kv->layers);
    free(kv->free_stack);
    free(kv->refs);
    free(kv);
}

const struct dsd_kv_layer *dsd_kv_cache_layer(const struct dsd_kv_cache *kv, int layer)
{
    return &kv->layers[layer];
}

int dsd_kv_cache_n_layers(const struct dsd_kv_cache *kv)
{
    return kv->n_layers;
}

int dsd_kv_cache_free_pages(const struct dsd_kv_cache *kv)
{
    return kv->n_free;
}

int dsd_kv_cache_total_pages(const struct dsd_kv_cache *kv)
{
    return kv->n_pages - 1;
}

const struct dsd_kv_layout *dsd_kv_cache_layout(const struct dsd_kv_cache *kv)
{
    return &kv->layout;
}

struct dsd_backend *dsd_kv_cache_backend(const struct dsd_kv_cache *kv)
{
    return kv->be;
}

static int in_use(const struct dsd_kv_cache *kv, int32_t page)
{
    return page >= 1 && page < kv->n_pages && kv->refs[page] > 0;
}

int32_t dsd_kv_page_alloc(struct dsd_kv_cache *kv)
{
    if (kv->n_free == 0)
        return -ENOSPC;
    int32_t p = kv->free_stack[--kv->n_free];
    kv->refs[p] = 1;
    return p;
}

int dsd_kv_page_ref(struct dsd_kv_cache *kv, int32_t page)
{
    if (!in_use(kv, page))
        return -EINVAL;
    return ++kv->refs[page];
}

int dsd_kv_page_unref(struct dsd_kv_cache *kv, int32_t page)
{
    if (!in_use(kv, page))
        return -EINVAL;
    if (--kv->refs[page] == 0)
        kv->free_stack[kv->n_free++] = page;
    return kv->refs[page];
}

int dsd_kv_page_refs(const struct dsd_kv_cache *kv, int32_t page)
{
    if (page < 0 || page >= kv->n_pages)
        return -EINVAL;
    return kv->refs[page];
}

static int seq_grow(struct dsd_kv_seq *seq, int need)
{
    if (need <= seq->cap)
        return 0;
    int cap = seq->cap ? seq->cap : 4;
    while (cap < need)
        cap *= 2;
    int32_t *np = realloc(seq->pages, (size_t)cap * sizeof *np);
    if (!np)
        return -ENOMEM;
    seq->pages = np;
    seq->cap = cap;
    return 0;
}

int dsd_kv_seq_share(struct dsd_kv_cache *kv, struct dsd_kv_seq *seq, const int32_t *pages, int n)
{
    for (int i = 0; i < n; i++)
        if (!in_use(kv, pages[i]))
            return -EINVAL;
    if (seq_grow(seq, seq->n_pages + n) < 0)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        kv->refs[pages[i]]++;
        seq->pages[seq->n_pages++] = pages[i];
    }
    return 0;
}

int dsd_kv_seq_reserve(struct dsd_kv_cache *kv, struct dsd_kv_seq *seq, int n_tokens)
{
    int need = (n_tokens + DSD_KV_PAGE_TOKENS - 1) / DSD_KV_PAGE_TOKENS;
    if (need <= seq->n_pages)
        return 0;
    if (need - seq->n_pages > kv->n_free)
        return -ENOSPC;
    if (seq_grow(seq, need) < 0)
        return -ENOMEM;
    while (seq->n_pages < need)
        seq->pages[seq->n_pages++] = dsd_kv_page_alloc(kv);
    return 0;
}

void dsd_kv_seq_release(struct dsd_kv_cache *kv, struct dsd_kv_seq *seq)
{
    while (seq->n_pages > 0)
        dsd_kv_page_unref(kv, seq->pages[--seq->n_pages]);
}

void dsd_kv_seq_destroy(struct dsd_kv_seq *seq)
{
    free(seq->pages);
    seq->pages = NULL;
    seq->n_pages = seq->cap = 0;
}
