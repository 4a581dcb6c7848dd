/* The radix prefix tree: a node array, a chain-hash index, one LRU list per tier. */
#include "radix.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash_index.h"
#include "page_hash.h"

#define NONE (-1)

struct node {
    uint64_t hash;
    int32_t parent;                     /* NONE: child of the root */
    int32_t value;
    int32_t lock;
    int32_t n_child[DSD_RADIX_TIERS];   /* children per tier */
    int32_t prev, next;                 /* LRU list of its tier (unlocked) or the free list */
    uint8_t tier, used;
};

struct dsd_radix {
    struct node *nodes;                 /* [max + DSD_RADIX_TIERS]: the tail are LRU sentinels */
    int32_t *tokens;                    /* [max][64] */
    struct dsd_hash_index *index;       /* chain hash -> node */
    int max, n_used;
    int32_t free_head;
    int n_tier[DSD_RADIX_TIERS];
    int n_lru[DSD_RADIX_TIERS];         /* unlocked nodes per tier (on its LRU list) */
};

static int32_t sentinel(const struct dsd_radix *t, int tier)
{
    return t->max + tier;
}

static void lru_unlink(struct dsd_radix *t, int32_t i)
{
    struct node *n = &t->nodes[i];
    t->nodes[n->prev].next = n->next;
    t->nodes[n->next].prev = n->prev;
    n->prev = n->next = NONE;
    t->n_lru[n->tier]--;
}

/* Inserts at the front (most recently used). */
static void lru_push_front(struct dsd_radix *t, int32_t i)
{
    int32_t s = sentinel(t, t->nodes[i].tier);
    struct node *n = &t->nodes[i];
    n->prev = s;
    n->next = t->nodes[s].next;
    t->nodes[n->next].prev = i;
    t->nodes[s].next = i;
    t->n_lru[n->tier]++;
}

static void touch(struct dsd_radix *t, int32_t i)
{
    if (t->nodes[i].lock == 0) {
        lru_unlink(t, i);
        lru_push_front(t, i);
    }
}

/* Marks node i and its ancestors used, leaf first, so every parent ends up more recent. */
static void touch_path(struct dsd_radix *t, int32_t i)
{
    for (; i != NONE; i = t->nodes[i].parent)
        touch(t, i);
}

static int valid_node(const struct dsd_radix *t, int32_t i);

static int parent_tier(const struct dsd_radix *t, int32_t parent)
{
    return parent == NONE ? DSD_KV_TIER_DEVICE : t->nodes[parent].tier;
}

struct dsd_radix *dsd_radix_new(int max_nodes, struct dsd_err *err)
{
    if (max_nodes < 1) {
        dsd_errf(err, -EINVAL, "radix tree: need room for at least one node (asked for %d)", max_nodes);
        return NULL;
    }
    struct dsd_radix *t = calloc(1, sizeof *t);
    if (!t)
        goto oom;
    t->max = max_nodes;
    t->nodes = calloc((size_t)max_nodes + DSD_RADIX_TIERS, sizeof *t->nodes);
    t->tokens = malloc((size_t)max_nodes * DSD_KV_PAGE_TOKENS * sizeof *t->tokens);
    t->index = dsd_hash_index_new(max_nodes);
    if (!t->nodes || !t->tokens || !t->index)
        goto oom;
    for (int s = 0; s < DSD_RADIX_TIERS; s++) {
        int32_t k = sentinel(t, s);
        t->nodes[k].prev = t->nodes[k].next = k;
    }
    for (int32_t i = 0; i < max_nodes; i++)
        t->nodes[i].next = i + 1 < max_nodes ? i + 1 : NONE;
    t->free_head = 0;
    return t;
oom:
    dsd_errf(err, -ENOMEM, "radix tree: cannot allocate %d nodes", max_nodes);
    dsd_radix_free(t);
    return NULL;
}

void dsd_radix_free(struct dsd_radix *t)
{
    if (!t)
        return;
    dsd_hash_index_free(t->index);
    free(t->nodes);
    free(t->tokens);
    free(t);
}

static const int32_t *node_tokens(const struct dsd_radix *t, int32_t i)
{
    return t->tokens + (size_t)i * DSD_KV_PAGE_TOKENS;
}

/* The child of parent holding page tok (named h), or NONE; *collision when h names a
 * different page. */
static int32_t child(const struct dsd_radix *t, int32_t parent, uint64_t h, const int32_t *tok, int *collision)
{
    int32_t i = dsd_hash_index_get(t->index, h);
    *collision = 0;
    if (i < 0)
        return NONE;
    if (t->nodes[i].parent != parent ||
        memcmp(node_tokens(t, i), tok, DSD_KV_PAGE_TOKENS * sizeof *tok) != 0) {
        *collision = 1;
        return NONE;
    }
    return i;
}

static struct dsd_radix_ref ref_of(const struct dsd_radix *t, int32_t i)
{
    return (struct dsd_radix_ref){.node = i, .value = t->nodes[i].value, .tier = t->nodes[i].tier,
                                  .hash = t->nodes[i].hash};
}

/* The longest prefix walk; with lock, each node found is locked (and leaves its LRU list). */
static int walk(struct dsd_radix *t, const int32_t *tokens, int n_tokens, struct dsd_radix_ref *out, int max_out,
                int lock)
{
    if (n_tokens < 0 || max_out < 0)
        return -EINVAL;
    int n_full = n_tokens / DSD_KV_PAGE_TOKENS, n = 0, collision;
    int32_t parent = NONE;
    uint64_t h = DSD_KV_CHAIN_ROOT;
    while (n < n_full && n < max_out) {
        const int32_t *tok = tokens + (size_t)n * DSD_KV_PAGE_TOKENS;
        h = dsd_kv_chain_hash(h, tok);
        int32_t i = child(t, parent, h, tok, &collision);
        if (i == NONE)
            break;
        if (lock && t->nodes[i].lock++ == 0)
            lru_unlink(t, i);
        out[n++] = ref_of(t, i);
        parent = i;
    }
    return n;
}

int dsd_radix_match(struct dsd_radix *t, const int32_t *tokens, int n_tokens, struct dsd_radix_ref *out,
                    int max_out)
{
    return walk(t, tokens, n_tokens, out, max_out, 1);
}

int dsd_radix_peek(const struct dsd_radix *t, const int32_t *tokens, int n_tokens, struct dsd_radix_ref *out,
                   int max_out)
{
    return walk((struct dsd_radix *)t, tokens, n_tokens, out, max_out, 0);
}

void dsd_radix_unlock(struct dsd_radix *t, const struct dsd_radix_ref *refs, int n)
{
    /* leaf first, so the parents end up more recent */
    for (int k = n - 1; k >= 0; k--) {
        int32_t i = refs[k].node;
        if (i < 0 || i >= t->max || !t->nodes[i].used || t->nodes[i].lock <= 0)
            continue;
        if (--t->nodes[i].lock == 0)
            lru_push_front(t, i);
    }
}

static int32_t node_new(struct dsd_radix *t, int32_t parent, uint64_t h, const int32_t *tok, int tier,
                        int32_t value)
{
    int32_t i = t->free_head;
    if (i == NONE || dsd_hash_index_put(t->index, h, i) < 0)
        return NONE;
    t->free_head = t->nodes[i].next;
    struct node *n = &t->nodes[i];
    memset(n, 0, sizeof *n);
    n->hash = h;
    n->parent = parent;
    n->value = value;
    n->tier = (uint8_t)tier;
    n->used = 1;
    memcpy(t->tokens + (size_t)i * DSD_KV_PAGE_TOKENS, tok, DSD_KV_PAGE_TOKENS * sizeof *tok);
    lru_push_front(t, i);
    if (parent != NONE)
        t->nodes[parent].n_child[tier]++;
    t->n_tier[tier]++;
    t->n_used++;
    return i;
}

/* Moves node i to tier (the caller has checked the order), keeping every count right. */
static void move_tier(struct dsd_radix *t, int32_t i, int tier, int32_t value)
{
    struct node *n = &t->nodes[i];
    if (n->parent != NONE) {
        t->nodes[n->parent].n_child[n->tier]--;
        t->nodes[n->parent].n_child[tier]++;
    }
    t->n_tier[n->tier]--;
    t->n_tier[tier]++;
    if (n->lock == 0)
        lru_unlink(t, i);
    n->tier = (uint8_t)tier;
    n->value = value;
    if (n->lock == 0)
        lru_push_front(t, i);
}

int dsd_radix_insert(struct dsd_radix *t, const int32_t *tokens, int n_tokens, const int32_t *values, int tier,
                     uint8_t *taken, struct dsd_radix_ref *displaced, int *n_displaced)
{
    if (n_tokens < 0 || tier < 0 || tier >= DSD_RADIX_TIERS)
        return -EINVAL;
    int n_full = n_tokens / DSD_KV_PAGE_TOKENS, n_taken = 0, nd = 0, collision;
    if (taken)
        memset(taken, 0, (size_t)n_full);
    int32_t parent = NONE;
    uint64_t h = DSD_KV_CHAIN_ROOT;
    for (int p = 0; p < n_full; p++) {
        const int32_t *tok = tokens + (size_t)p * DSD_KV_PAGE_TOKENS;
        h = dsd_kv_chain_hash(h, tok);
        int32_t i = child(t, parent, h, tok, &collision);
        if (collision)
            break;
        if (i != NONE) {
            struct node *n = &t->nodes[i];
            /* A slower copy is replaced by this faster one when nothing pins it there: no
             * lock, a parent no slower than tier (children are no faster than the node). */
            if (displaced && n->tier > tier && n->lock == 0 && parent_tier(t, parent) <= tier) {
                displaced[nd++] = ref_of(t, i);
                move_tier(t, i, tier, values[p]);
                if (taken)
                    taken[p] = 1;
                n_taken++;
            }
        } else {
            if (parent_tier(t, parent) > tier)
                break;
            i = node_new(t, parent, h, tok, tier, values[p]);
            if (i == NONE)
                break;
            if (taken)
                taken[p] = 1;
            n_taken++;
        }
        parent = i;
    }
    if (parent != NONE)
        touch_path(t, parent);
    if (n_displaced)
        *n_displaced = nd;
    return n_taken;
}

/* The node a page goes below: parent's (NULL: the root), and its chain hash. Returns 0 or
 * -EINVAL (no such node). */
static int below(const struct dsd_radix *t, const struct dsd_radix_ref *parent, int32_t *p, uint64_t *ph)
{
    *p = NONE;
    *ph = DSD_KV_CHAIN_ROOT;
    if (!parent)
        return 0;
    if (!valid_node(t, parent->node))
        return -EINVAL;
    *p = parent->node;
    *ph = t->nodes[*p].hash;
    return 0;
}

int dsd_radix_extend(struct dsd_radix *t, const struct dsd_radix_ref *parent, const int32_t *tokens, int tier,
                     int32_t value, struct dsd_radix_ref *out)
{
    int32_t p;
    uint64_t ph;
    if (tier < 0 || tier >= DSD_RADIX_TIERS || !tokens || below(t, parent, &p, &ph) < 0)
        return -EINVAL;
    if (parent_tier(t, p) > tier)
        return 0;
    uint64_t h = dsd_kv_chain_hash(ph, tokens);
    int collision;
    if (child(t, p, h, tokens, &collision) != NONE || collision || dsd_hash_index_get(t->index, h) >= 0)
        return 0;
    int32_t i = node_new(t, p, h, tokens, tier, value);
    if (i == NONE)
        return 0;
    lru_unlink(t, i);
    t->nodes[i].lock = 1;
    *out = ref_of(t, i);
    return 1;
}

int dsd_radix_publish(struct dsd_radix *t, const struct dsd_radix_ref *parent, const int32_t *tokens, int tier,
                      int32_t value, struct dsd_radix_ref *out, struct dsd_radix_ref *displaced)
{
    int32_t p;
    uint64_t ph;
    if (tier < 0 || tier >= DSD_RADIX_TIERS || !tokens || below(t, parent, &p, &ph) < 0)
        return -EINVAL;
    if (parent_tier(t, p) > tier)
        return -EAGAIN;
    uint64_t h = dsd_kv_chain_hash(ph, tokens);
    int collision, rc = 1;
    int32_t i = child(t, p, h, tokens, &collision);
    if (collision)
        return -EAGAIN;
    if (i == NONE) {
        if ((i = node_new(t, p, h, tokens, tier, value)) == NONE)
            return -EAGAIN;
    } else if (t->nodes[i].tier > tier) {
        if (t->nodes[i].lock > 0 || !displaced)
            return -EAGAIN;
        *displaced = ref_of(t, i);
        move_tier(t, i, tier, value);
        rc = 2;
    } else {
        rc = 0;
    }
    if (t->nodes[i].lock++ == 0)
        lru_unlink(t, i);
    *out = ref_of(t, i);
    return rc;
}

int dsd_radix_lookup(const struct dsd_radix *t, uint64_t hash, struct dsd_radix_ref *out)
{
    int32_t i = dsd_hash_index_get(t->index, hash);
    if (i < 0 || !valid_node(t, i))
        return 0;
    *out = ref_of(t, i);
    return 1;
}

int dsd_radix_victim(const struct dsd_radix *t, int tier, unsigned flags, struct dsd_radix_ref *out)
{
    if (tier < 0 || tier >= DSD_RADIX_TIERS)
        return -EINVAL;
    int32_t s = sentinel(t, tier);
    for (int32_t i = t->nodes[s].prev; i != s; i = t->nodes[i].prev) {
        const struct node *n = &t->nodes[i];
        if (n->n_child[tier] != 0)
            continue;
        if (flags & DSD_RADIX_LEAF_ONLY) {
            int any = 0;
            for (int k = 0; k < DSD_RADIX_TIERS; k++)
                any |= n->n_child[k] != 0;
            if (any)
                continue;
        }
        *out = ref_of(t, i);
        return 1;
    }
    return 0;
}

static int valid_node(const struct dsd_radix *t, int32_t i)
{
    return i >= 0 && i < t->max && t->nodes[i].used;
}

int dsd_radix_set(struct dsd_radix *t, int32_t node, int tier, int32_t value)
{
    if (!valid_node(t, node) || tier < 0 || tier >= DSD_RADIX_TIERS)
        return -EINVAL;
    struct node *n = &t->nodes[node];
    if (parent_tier(t, n->parent) > tier)
        return -EINVAL;
    for (int k = 0; k < tier; k++)
        if (n->n_child[k])
            return -EINVAL;
    if (n->lock > 0 && tier > n->tier)
        return -EBUSY;
    move_tier(t, node, tier, value);
    return 0;
}

int dsd_radix_remove(struct dsd_radix *t, int32_t node)
{
    if (!valid_node(t, node))
        return -EINVAL;
    struct node *n = &t->nodes[node];
    if (n->lock > 0)
        return -EBUSY;
    for (int k = 0; k < DSD_RADIX_TIERS; k++)
        if (n->n_child[k])
            return -ENOTEMPTY;
    lru_unlink(t, node);
    dsd_hash_index_del(t->index, n->hash);
    if (n->parent != NONE)
        t->nodes[n->parent].n_child[n->tier]--;
    t->n_tier[n->tier]--;
    t->n_used--;
    n->used = 0;
    n->next = t->free_head;
    t->free_head = node;
    return 0;
}

int dsd_radix_evict(struct dsd_radix *t, int tier, int want, int32_t *out)
{
    if (tier < 0 || tier >= DSD_RADIX_TIERS || want < 0)
        return -EINVAL;
    int n = 0;
    struct dsd_radix_ref v;
    while (n < want && dsd_radix_victim(t, tier, DSD_RADIX_LEAF_ONLY, &v) == 1) {
        if (dsd_radix_remove(t, v.node) < 0)
            break;
        out[n++] = v.value;
    }
    return n;
}

int dsd_radix_page(const struct dsd_radix *t, int32_t node, uint64_t *parent_hash, int32_t *tokens, int *depth)
{
    if (!valid_node(t, node))
        return -EINVAL;
    int32_t parent = t->nodes[node].parent;
    if (parent_hash)
        *parent_hash = parent == NONE ? DSD_KV_CHAIN_ROOT : t->nodes[parent].hash;
    if (tokens)
        memcpy(tokens, node_tokens(t, node), DSD_KV_PAGE_TOKENS * sizeof *tokens);
    if (depth) {
        int d = 0;
        for (int32_t i = parent; i != NONE; i = t->nodes[i].parent)
            d++;
        *depth = d;
    }
    return 0;
}

int dsd_radix_count(const struct dsd_radix *t, int tier)
{
    if (tier < 0)
        return t->n_used;
    return tier < DSD_RADIX_TIERS ? t->n_tier[tier] : 0;
}

int dsd_radix_unlocked(const struct dsd_radix *t, int tier)
{
    return tier >= 0 && tier < DSD_RADIX_TIERS ? t->n_lru[tier] : 0;
}

int dsd_radix_capacity(const struct dsd_radix *t)
{
    return t->max;
}

int dsd_radix_locks(const struct dsd_radix *t, int32_t node)
{
    return valid_node(t, node) ? t->nodes[node].lock : -EINVAL;
}

int dsd_radix_check(const struct dsd_radix *t, struct dsd_err *err)
{
    int n_used = 0, n_tier[DSD_RADIX_TIERS] = {0};
    int32_t *kids = calloc((size_t)t->max * DSD_RADIX_TIERS, sizeof *kids);
    if (!kids)
        return dsd_errf(err, -ENOMEM, "radix check: out of memory");
    int rc = 0;
    for (int32_t i = 0; i < t->max && !rc; i++) {
        const struct node *n = &t->nodes[i];
        if (!n->used)
            continue;
        n_used++;
        if (n->tier >= DSD_RADIX_TIERS) {
            rc = dsd_errf(err, -EFAULT, "node %d: tier %d", i, n->tier);
            break;
        }
        n_tier[n->tier]++;
        if (n->lock < 0)
            rc = dsd_errf(err, -EFAULT, "node %d: lock count %d", i, n->lock);
        else if (n->parent != NONE && !valid_node(t, n->parent))
            rc = dsd_errf(err, -EFAULT, "node %d: parent %d is not a node", i, n->parent);
        else if (parent_tier(t, n->parent) > n->tier)
            rc = dsd_errf(err, -EFAULT, "node %d: tier %d below a parent of tier %d", i, n->tier,
                          parent_tier(t, n->parent));
        else if (dsd_hash_index_get(t->index, n->hash) != i)
            rc = dsd_errf(err, -EFAULT, "node %d: not indexed under its hash", i);
        else {
            uint64_t ph = n->parent == NONE ? DSD_KV_CHAIN_ROOT : t->nodes[n->parent].hash;
            if (dsd_kv_chain_hash(ph, node_tokens(t, i)) != n->hash)
                rc = dsd_errf(err, -EFAULT, "node %d: hash does not match its tokens and parent", i);
        }
        if (!rc && n->parent != NONE)
            kids[(size_t)n->parent * DSD_RADIX_TIERS + n->tier]++;
    }
    for (int32_t i = 0; i < t->max && !rc; i++)
        for (int k = 0; k < DSD_RADIX_TIERS && !rc; k++)
            if (t->nodes[i].used && kids[(size_t)i * DSD_RADIX_TIERS + k] != t->nodes[i].n_child[k])
                rc = dsd_errf(err, -EFAULT, "node %d: %d children in tier %d, counted %d", i,
                              t->nodes[i].n_child[k], k, kids[(size_t)i * DSD_RADIX_TIERS + k]);
    free(kids);
    if (rc)
        return rc;
    if (n_used != t->n_used || dsd_hash_index_count(t->index) != n_used)
        return dsd_errf(err, -EFAULT, "%d nodes in use, counted %d, indexed %d", n_used, t->n_used,
                        dsd_hash_index_count(t->index));
    int n_listed = 0;
    for (int k = 0; k < DSD_RADIX_TIERS; k++) {
        if (n_tier[k] != t->n_tier[k])
            return dsd_errf(err, -EFAULT, "tier %d: %d nodes, counted %d", k, n_tier[k], t->n_tier[k]);
        int32_t s = sentinel(t, k), steps = 0;
        for (int32_t i = t->nodes[s].next; i != s; i = t->nodes[i].next) {
            if (!valid_node(t, i) || t->nodes[i].tier != k || t->nodes[i].lock != 0 ||
                t->nodes[t->nodes[i].next].prev != i || ++steps > t->max)
                return dsd_errf(err, -EFAULT, "tier %d: LRU list broken at node %d", k, i);
        }
        if (steps != t->n_lru[k])
            return dsd_errf(err, -EFAULT, "tier %d: %d nodes on the LRU list, counted %d", k, steps, t->n_lru[k]);
        n_listed += steps;
    }
    int n_unlocked = 0;
    for (int32_t i = 0; i < t->max; i++)
        n_unlocked += t->nodes[i].used && t->nodes[i].lock == 0;
    if (n_listed != n_unlocked)
        return dsd_errf(err, -EFAULT, "%d unlocked nodes, %d on LRU lists", n_unlocked, n_listed);
    int n_free = 0;
    for (int32_t i = t->free_head; i != NONE && n_free <= t->max; i = t->nodes[i].next, n_free++)
        if (i < 0 || i >= t->max || t->nodes[i].used)
            return dsd_errf(err, -EFAULT, "free list holds node %d", i);
    if (n_free != t->max - n_used)
        return dsd_errf(err, -EFAULT, "free list: %d nodes, expected %d", n_free, t->max - n_used);
    return 0;
}
