/* The host tier: one alloc_host block of record-sized slots, a free stack, an LRU list. */
#include "host_tier.h"

#include <errno.h>
#include <stdlib.h>

struct dsd_host_tier {
    struct dsd_backend *be;
    struct dsd_kv_page_geom g;
    size_t rec_bytes;
    uint8_t *mem;               /* the slots: block rounded up to DSD_KV_PAGE_ALIGN */
    void *block;                /* alloc_host's */
    int n_slots, n_used;
    int32_t *free_stack;
    int n_free;
    int32_t *prev, *next;       /* [n_slots + 1]: LRU of allocated unpinned slots, sentinel last */
    int32_t *pins;              /* [n_slots]: -1 = free */
    struct dsd_copy *pieces;    /* [HT_COPY_PAGES * 2 * layers]: one copy_many call's pieces */
};

/* Pages per copy_many call of dsd_host_tier_copy_in_many (its pieces are allocated once). */
#define HT_COPY_PAGES 256

struct dsd_host_tier *dsd_host_tier_new(struct dsd_backend *be, const struct dsd_kv_page_geom *g,
                                        uint64_t budget_bytes, struct dsd_err *err)
{
    if (!be || !g || g->n_layers < 1 || !g->mla_page_bytes || !g->index_page_bytes) {
        dsd_errf(err, -EINVAL, "host KV tier: no backend or an empty page geometry");
        return NULL;
    }
    size_t rec = dsd_kv_page_record_bytes(g);
    uint64_t n = budget_bytes / rec;
    if (n < 1 || n > INT32_MAX - 1) {
        dsd_errf(err, -EINVAL, "host KV tier: a budget of %llu bytes holds %llu pages of %zu bytes (need 1 .. %d)",
                 (unsigned long long)budget_bytes, (unsigned long long)n, rec, INT32_MAX - 1);
        return NULL;
    }
    struct dsd_host_tier *ht = calloc(1, sizeof *ht);
    if (!ht)
        goto oom;
    ht->be = be;
    ht->g = *g;
    ht->rec_bytes = rec;
    ht->n_slots = (int)n;
    ht->free_stack = malloc(n * sizeof *ht->free_stack);
    ht->prev = malloc((n + 1) * sizeof *ht->prev);
    ht->next = malloc((n + 1) * sizeof *ht->next);
    ht->pins = malloc(n * sizeof *ht->pins);
    ht->pieces = malloc((size_t)HT_COPY_PAGES * 2 * (size_t)g->n_layers * sizeof *ht->pieces);
    if (!ht->free_stack || !ht->prev || !ht->next || !ht->pins || !ht->pieces)
        goto oom;
    /* Slots aligned for O_DIRECT whatever alloc_host's alignment (the CPU backend's is 64
     * bytes): the disk tier then reads a page straight into its slot, in vectored runs of
     * consecutive slots, as it does into a GPU backend's pinned memory, instead of through a
     * staging record and a copy, one request per page. */
    ht->block = dsd_backend_ops(be)->alloc_host(be, (size_t)n * rec + DSD_KV_PAGE_ALIGN);
    if (!ht->block)
        goto oom;
    ht->mem = (uint8_t *)(((uintptr_t)ht->block + DSD_KV_PAGE_ALIGN - 1) & ~(uintptr_t)(DSD_KV_PAGE_ALIGN - 1));
    for (int s = ht->n_slots - 1; s >= 0; s--) {
        ht->free_stack[ht->n_free++] = s;
        ht->pins[s] = -1;
    }
    ht->prev[n] = ht->next[n] = (int32_t)n;
    return ht;
oom:
    dsd_errf(err, -ENOMEM, "host KV tier: cannot allocate %llu slots of %zu bytes (lower host_cache_gb)",
             (unsigned long long)n, rec);
    dsd_host_tier_free(ht);
    return NULL;
}

void dsd_host_tier_free(struct dsd_host_tier *ht)
{
    if (!ht)
        return;
    if (ht->block)
        dsd_backend_ops(ht->be)->release_host(ht->be, ht->block);
    free(ht->free_stack);
    free(ht->prev);
    free(ht->next);
    free(ht->pins);
    free(ht->pieces);
    free(ht);
}

int dsd_host_tier_slots(const struct dsd_host_tier *ht)
{
    return ht->n_slots;
}

int dsd_host_tier_used(const struct dsd_host_tier *ht)
{
    return ht->n_used;
}

static void lru_unlink(struct dsd_host_tier *ht, int s)
{
    ht->next[ht->prev[s]] = ht->next[s];
    ht->prev[ht->next[s]] = ht->prev[s];
}

static void lru_front(struct dsd_host_tier *ht, int s)
{
    int head = ht->n_slots;
    ht->prev[s] = head;
    ht->next[s] = ht->next[head];
    ht->prev[ht->next[head]] = s;
    ht->next[head] = s;
}

static int allocated(const struct dsd_host_tier *ht, int s)
{
    return s >= 0 && s < ht->n_slots && ht->pins[s] >= 0;
}

int dsd_host_tier_alloc(struct dsd_host_tier *ht)
{
    if (ht->n_free == 0)
        return -ENOSPC;
    int s = ht->free_stack[--ht->n_free];
    ht->pins[s] = 0;
    ht->n_used++;
    lru_front(ht, s);
    return s;
}

int dsd_host_tier_release(struct dsd_host_tier *ht, int slot)
{
    if (!allocated(ht, slot))
        return -EINVAL;
    if (ht->pins[slot] == 0)
        lru_unlink(ht, slot);
    ht->pins[slot] = -1;
    ht->free_stack[ht->n_free++] = slot;
    ht->n_used--;
    return 0;
}

int dsd_host_tier_touch(struct dsd_host_tier *ht, int slot)
{
    if (!allocated(ht, slot))
        return -EINVAL;
    if (ht->pins[slot] == 0) {
        lru_unlink(ht, slot);
        lru_front(ht, slot);
    }
    return 0;
}

int dsd_host_tier_pin(struct dsd_host_tier *ht, int slot)
{
    if (!allocated(ht, slot))
        return -EINVAL;
    if (ht->pins[slot]++ == 0)
        lru_unlink(ht, slot);
    return ht->pins[slot];
}

int dsd_host_tier_unpin(struct dsd_host_tier *ht, int slot)
{
    if (!allocated(ht, slot) || ht->pins[slot] == 0)
        return -EINVAL;
    if (--ht->pins[slot] == 0)
        lru_front(ht, slot);
    return ht->pins[slot];
}

int dsd_host_tier_victim(const struct dsd_host_tier *ht)
{
    int tail = ht->prev[ht->n_slots];
    return tail == ht->n_slots ? -ENOENT : tail;
}

void *dsd_host_tier_record(struct dsd_host_tier *ht, int slot)
{
    if (slot < 0 || slot >= ht->n_slots)
        return NULL;
    return ht->mem + (size_t)slot * ht->rec_bytes;
}

static int check_copy(const struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int32_t page, int slot)
{
    const struct dsd_kv_layout *l = dsd_kv_cache_layout(kv);
    if (!allocated(ht, slot) || page < 1 || page > dsd_kv_cache_total_pages(kv) ||
        dsd_kv_cache_n_layers(kv) != ht->g.n_layers ||
        (size_t)DSD_KV_PAGE_TOKENS * l->mla_token_bytes != ht->g.mla_page_bytes ||
        l->index_page_bytes != ht->g.index_page_bytes)
        return -EINVAL;
    return 0;
}

/* The 2 pieces of one page's copy in layer l (its MLA and index-K arenas; out: device ->
 * record, in: record -> device). */
static void layer_pieces(struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int l, int32_t page, int slot,
                         bool in, struct dsd_copy *p)
{
    uint8_t *rec = dsd_host_tier_record(ht, slot);
    const struct dsd_kv_layer *lay = dsd_kv_cache_layer(kv, l);
    uint8_t *dm = lay->mla + (size_t)page * ht->g.mla_page_bytes;
    uint8_t *di = lay->index + (size_t)page * ht->g.index_page_bytes;
    uint8_t *hm = dsd_kv_page_mla(rec) + (size_t)l * ht->g.mla_page_bytes;
    uint8_t *hi = dsd_kv_page_index(rec, &ht->g) + (size_t)l * ht->g.index_page_bytes;
    p[0] = (struct dsd_copy){.dst = in ? dm : hm, .src = in ? hm : dm, .bytes = ht->g.mla_page_bytes};
    p[1] = (struct dsd_copy){.dst = in ? di : hi, .src = in ? hi : di, .bytes = ht->g.index_page_bytes};
}

/* The 2 x layers pieces of one page's copy, layer 0 first. */
static int page_pieces(struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int32_t page, int slot, bool in,
                       struct dsd_copy *p)
{
    for (int l = 0; l < ht->g.n_layers; l++)
        layer_pieces(ht, kv, l, page, slot, in, p + 2 * l);
    return 2 * ht->g.n_layers;
}

static int copy_out(struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int32_t page, int slot, bool wait_side)
{
    if (check_copy(ht, kv, page, slot))
        return -EINVAL;
    int n = page_pieces(ht, kv, page, slot, false, ht->pieces);
    if (wait_side)
        dsd_backend_side_wait(ht->be, -1);  /* a reload beside the compute may still be landing */
    dsd_backend_copy_many(ht->be, ht->pieces, n, false);
    return 0;
}

int dsd_host_tier_copy_out(struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int32_t page, int slot)
{
    return copy_out(ht, kv, page, slot, true);
}

int dsd_host_tier_copy_out_evicted(struct dsd_host_tier *ht, const struct dsd_kv_cache *kv, int32_t page, int slot)
{
    return copy_out(ht, kv, page, slot, false);
}

int dsd_host_tier_copy_in(struct dsd_host_tier *ht, struct dsd_kv_cache *kv, int slot, int32_t page)
{
    return dsd_host_tier_copy_in_many(ht, kv, &slot, &page, 1);
}

int dsd_host_tier_copy_in_side(struct dsd_host_tier *ht, struct dsd_kv_cache *kv, const int *slots,
                               const int32_t *pages, int n)
{
    const struct dsd_ops *o = dsd_backend_ops(ht->be);
    if (!o->side_copy || !o->side_wait || ht->g.n_layers > DSD_SIDE_LAYERS)
        return -EOPNOTSUPP;
    for (int i = 0; i < n; i++)
        if (pages[i] >= 0 && check_copy(ht, kv, pages[i], slots[i]))
            return -EINVAL;
    /* layer by layer (layer 0 first, the order the forward pass needs them), each layer's
     * pages in side_copy calls of up to HT_COPY_PAGES pages */
    for (int l = 0; l < ht->g.n_layers; l++) {
        int np = 0;
        for (int i = 0; i < n; i++) {
            if (pages[i] < 0)
                continue;
            layer_pieces(ht, kv, l, pages[i], slots[i], true, ht->pieces + np);
            np += 2;
            if (np == 2 * HT_COPY_PAGES) {
                int rc = o->side_copy(ht->be, ht->pieces, np, l);
                if (rc)
                    return rc;      /* -EOPNOTSUPP comes on the first call, nothing enqueued */
                np = 0;
            }
        }
        if (np) {
            int rc = o->side_copy(ht->be, ht->pieces, np, l);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int dsd_host_tier_copy_in_many(struct dsd_host_tier *ht, struct dsd_kv_cache *kv, const int *slots,
                               const int32_t *pages, int n)
{
    for (int i = 0; i < n; i++)
        if (pages[i] >= 0 && check_copy(ht, kv, pages[i], slots[i]))
            return -EINVAL;
    int np = 0, in_batch = 0;
    for (int i = 0; i < n; i++) {
        if (pages[i] < 0)
            continue;
        np += page_pieces(ht, kv, pages[i], slots[i], true, ht->pieces + np);
        if (++in_batch == HT_COPY_PAGES) {
            dsd_backend_copy_many(ht->be, ht->pieces, np, true);
            np = in_batch = 0;
        }
    }
    dsd_backend_copy_many(ht->be, ht->pieces, np, true);
    return 0;
}
