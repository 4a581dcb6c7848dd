/*
 * The radix prefix tree (daemon/kv/radix.h) and the hash index under it: matches over whole
 * pages, partial pages never shared, locks preventing eviction, LRU order, tier order, and
 * thousands of random operations against a brute-force model of the same contract.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "hash_index.h"
#include "page_hash.h"
#include "radix.h"
#include "rng.h"
#include "test.h"

#define P DSD_KV_PAGE_TOKENS
#define MAXD 6

/* A sequence of pages, page k made of symbol syms[k] (tokens sym*1000 + j), plus extra
 * tokens of a partial page. */
static int make_tokens(int32_t *tok, const int *syms, int n_pages, int extra)
{
    for (int k = 0; k < n_pages; k++)
        for (int j = 0; j < P; j++)
            tok[k * P + j] = syms[k] * 1000 + j;
    for (int j = 0; j < extra; j++)
        tok[n_pages * P + j] = 7;
    return n_pages * P + extra;
}

TEST(hash_index_put_get_del)
{
    struct dsd_hash_index *ix = dsd_hash_index_new(100);
    ASSERT_TRUE(ix != NULL);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ_INT(dsd_hash_index_put(ix, (uint64_t)i * 0x100000001ULL, i), 0);
    ASSERT_EQ_INT(dsd_hash_index_put(ix, 12345678, 1), -ENOSPC);
    ASSERT_EQ_INT(dsd_hash_index_put(ix, 0, 5), -EEXIST);
    for (int i = 0; i < 100; i += 3)
        ASSERT_EQ_INT(dsd_hash_index_del(ix, (uint64_t)i * 0x100000001ULL), 0);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ_INT(dsd_hash_index_get(ix, (uint64_t)i * 0x100000001ULL), i % 3 ? i : -ENOENT);
    ASSERT_EQ_INT(dsd_hash_index_count(ix), 66);
    dsd_hash_index_free(ix);

    /* random against a plain array: keys collide on purpose (few distinct low bits) */
    struct dsd_rng r;
    dsd_rng_seed(&r, 42);
    enum { N = 64 };
    uint64_t keys[N];
    int32_t vals[N];
    int present[N] = {0};
    for (int i = 0; i < N; i++)
        keys[i] = (dsd_rng_next(&r) & 0xff) << 40 | (uint64_t)i;
    ix = dsd_hash_index_new(N);
    int bad = 0;
    for (int step = 0; step < 20000; step++) {
        int i = (int)(dsd_rng_next(&r) % N);
        if (dsd_rng_next(&r) & 1) {
            int rc = dsd_hash_index_put(ix, keys[i], step);
            bad += rc != (present[i] ? -EEXIST : 0);
            if (!present[i])
                vals[i] = step, present[i] = 1;
        } else {
            bad += dsd_hash_index_del(ix, keys[i]) != (present[i] ? 0 : -ENOENT);
            present[i] = 0;
        }
        for (int k = 0; k < N; k++)
            bad += dsd_hash_index_get(ix, keys[k]) != (present[k] ? vals[k] : -ENOENT);
    }
    ASSERT_EQ_INT(bad, 0);
    dsd_hash_index_free(ix);
}

TEST(chain_hash_names_the_whole_prefix)
{
    int32_t tok[3 * P];
    make_tokens(tok, (int[]){1, 2, 1}, 3, 0);
    uint64_t h[3];
    ASSERT_EQ_INT(dsd_kv_chain_hashes(tok, 3 * P - 1, h, 3), 2);      /* partial page: no name */
    ASSERT_EQ_INT(dsd_kv_chain_hashes(tok, 3 * P, h, 3), 3);
    ASSERT_TRUE(h[0] != h[2]);                                        /* same tokens, other parent */
    ASSERT_TRUE(h[0] == dsd_kv_chain_hash(DSD_KV_CHAIN_ROOT, tok));
    ASSERT_TRUE(h[1] == dsd_kv_chain_hash(h[0], tok + P));
    tok[P + 5]++;
    ASSERT_TRUE(dsd_kv_chain_hash(h[0], tok + P) != h[1]);
}

TEST(match_whole_pages_only)
{
    struct dsd_err err = {{0}};
    struct dsd_radix *t = dsd_radix_new(16, &err);
    ASSERT_TRUE(t != NULL);
    int32_t tok[8 * P];
    int n = make_tokens(tok, (int[]){1, 2, 3}, 3, 40);             /* 3 pages + 40 tokens */
    int32_t vals[4] = {11, 12, 13, 14};
    uint8_t taken[4] = {9, 9, 9, 9};
    ASSERT_EQ_INT(dsd_radix_insert(t, tok, n, vals, DSD_KV_TIER_DEVICE, taken, NULL, NULL), 3);
    ASSERT_TRUE(taken[0] && taken[1] && taken[2]);
    ASSERT_EQ_INT(dsd_radix_count(t, -1), 3);

    struct dsd_radix_ref m[8];
    ASSERT_EQ_INT(dsd_radix_match(t, tok, n, m, 8), 3);
    ASSERT_EQ_INT(m[0].value, 11);
    ASSERT_EQ_INT(m[2].value, 13);
    ASSERT_EQ_INT(m[2].tier, DSD_KV_TIER_DEVICE);
    dsd_radix_unlock(t, m, 3);
    ASSERT_EQ_INT(dsd_radix_match(t, tok, 3 * P - 1, m, 8), 2);       /* the third page is partial */
    dsd_radix_unlock(t, m, 2);
    ASSERT_EQ_INT(dsd_radix_match(t, tok, n, m, 1), 1);               /* max_out caps */
    dsd_radix_unlock(t, m, 1);

    int32_t other[4 * P];
    make_tokens(other, (int[]){1, 2, 9}, 3, 0);                       /* diverges in page 3 */
    ASSERT_EQ_INT(dsd_radix_match(t, other, 3 * P, m, 8), 2);
    dsd_radix_unlock(t, m, 2);
    other[P + 63] = -5;                                               /* diverges at the last token of page 2 */
    ASSERT_EQ_INT(dsd_radix_match(t, other, 3 * P, m, 8), 1);
    dsd_radix_unlock(t, m, 1);
    make_tokens(other, (int[]){2, 3}, 2, 0);                          /* pages 2, 3 without page 1 */
    ASSERT_EQ_INT(dsd_radix_match(t, other, 2 * P, m, 8), 0);

    /* a longer sequence extends the branch; a shorter one adds nothing */
    n = make_tokens(tok, (int[]){1, 2, 3, 4}, 4, 0);
    int32_t v2[4] = {21, 22, 23, 24};
    ASSERT_EQ_INT(dsd_radix_insert(t, tok, n, v2, DSD_KV_TIER_DEVICE, taken, NULL, NULL), 1);
    ASSERT_TRUE(!taken[0] && !taken[1] && !taken[2] && taken[3]);
    ASSERT_EQ_INT(dsd_radix_match(t, tok, n, m, 8), 4);
    ASSERT_EQ_INT(m[2].value, 13);                                    /* the first copy stays */
    ASSERT_EQ_INT(m[3].value, 24);
    dsd_radix_unlock(t, m, 4);
    ASSERT_EQ_INT(dsd_radix_insert(t, tok, P + 63, v2, DSD_KV_TIER_DEVICE, taken, NULL, NULL), 0);
    ASSERT_EQ_INT(dsd_radix_count(t, -1), 4);
    /* what a disk record of a node needs */
    uint64_t h[4], ph = 0;
    int32_t got[P];
    int depth = -1;
    dsd_kv_chain_hashes(tok, n, h, 4);
    ASSERT_EQ_INT(dsd_radix_match(t, tok, n, m, 8), 4);
    dsd_radix_unlock(t, m, 4);
    ASSERT_EQ_INT(dsd_radix_page(t, m[2].node, &ph, got, &depth), 0);
    ASSERT_TRUE(ph == h[1] && m[2].hash == h[2]);
    ASSERT_EQ_INT(depth, 2);
    ASSERT_TRUE(memcmp(got, tok + 2 * P, sizeof got) == 0);
    ASSERT_EQ_INT(dsd_radix_page(t, m[0].node, &ph, NULL, &depth), 0);
    ASSERT_TRUE(ph == DSD_KV_CHAIN_ROOT);
    ASSERT_EQ_INT(depth, 0);
    ASSERT_EQ_INT(dsd_radix_page(t, 15, &ph, NULL, NULL), -EINVAL);
    ASSERT_EQ_INT(dsd_radix_check(t, &err), 0);
    dsd_radix_free(t);
}

TEST(locks_prevent_eviction)
{
    struct dsd_err err = {{0}};
    struct dsd_radix *t = dsd_radix_new(8, &err);
    int32_t tok[4 * P];
    int n = make_tokens(tok, (int[]){1, 2}, 2, 0);
    ASSERT_EQ_INT(dsd_radix_insert(t, tok, n, (int32_t[]){5, 6}, DSD_KV_TIER_DEVICE, NULL, NULL, NULL), 2);
    struct dsd_radix_ref m[4], m2[4], v;
    ASSERT_EQ_INT(dsd_radix_match(t, tok, n, m, 4), 2);
    ASSERT_EQ_INT(dsd_radix_match(t, tok, P, m2, 4), 1);               /* page 1 locked twice */
    ASSERT_EQ_INT(dsd_radix_locks(t, m[0].node), 2);
    ASSERT_EQ_INT(dsd_radix_victim(t, DSD_KV_TIER_DEVICE, 0, &v), 0);
    int32_t out[4];
    ASSERT_EQ_INT(dsd_radix_evict(t, DSD_KV_TIER_DEVICE, 4, out), 0);
    ASSERT_EQ_INT(dsd_radix_remove(t, m[1].node), -EBUSY);
    ASSERT_EQ_INT(dsd_radix_set(t, m[1].node, DSD_KV_TIER_HOST, 99), -EBUSY);
    dsd_radix_unlock(t, m, 2);
    /* page 2 is free now, page 1 still locked by m2 (and has a child) */
    ASSERT_EQ_INT(dsd_radix_evict(t, DSD_KV_TIER_DEVICE, 4, out), 1);
    ASSERT_EQ_INT(out[0], 6);
    ASSERT_EQ_INT(dsd_radix_evict(t, DSD_KV_TIER_DEVICE, 4, out), 0);
    dsd_radix_unlock(t, m2, 1);
    ASSERT_EQ_INT(dsd_radix_evict(t, DSD_KV_TIER_DEVICE, 4, out), 1);
    ASSERT_EQ_INT(out[0], 5);
    ASSERT_EQ_INT(dsd_radix_count(t, -1), 0);
    ASSERT_EQ_INT(dsd_radix_check(t, &err), 0);
    dsd_radix_free(t);
}

TEST(lru_order_and_leaves_first)
{
    struct dsd_err err = {{0}};
    struct dsd_radix *t = dsd_radix_new(16, &err);
    int32_t a[3 * P], b[P], c[P];
    make_tokens(a, (int[]){1, 2, 3}, 3, 0);
    make_tokens(b, (int[]){4}, 1, 0);
    make_tokens(c, (int[]){5}, 1, 0);
    dsd_radix_insert(t, a, 3 * P, (int32_t[]){1, 2, 3}, DSD_KV_TIER_DEVICE, NULL, NULL, NULL);
    dsd_radix_insert(t, b, P, (int32_t[]){4}, DSD_KV_TIER_DEVICE, NULL, NULL, NULL);
    dsd_radix_insert(t, c, P, (int32_t[]){5}, DSD_KV_TIER_DEVICE, NULL, NULL, NULL);
    struct dsd_radix_ref m[4];
    ASSERT_EQ_INT(dsd_radix_match(t, b, P, m, 4), 1);                  /* b used last */
    dsd_radix_unlock(t, m, 1);
    int32_t out[8];
    ASSERT_EQ_INT(dsd_radix_evict(t, DSD_KV_TIER_DEVICE, 8, out), 5);
    /* a's chain is oldest, leaf first; then c; b last */
    int want[5] = {3, 2, 1, 5, 4};
    for (int i = 0; i < 5; i++)
        ASSERT_EQ_INT(out[i], want[i]);
    dsd_radix_free(t);
}

TEST(tiers_stay_ordered)
{
    struct dsd_err err = {{0}};
    struct dsd_radix *t = dsd_radix_new(16, &err);
    int32_t tok[3 * P];
    int n = make_tokens(tok, (int[]){1, 2, 3}, 3, 0);
    dsd_radix_insert(t, tok, n, (int32_t[]){1, 2, 3}, DSD_KV_TIER_DEVICE, NULL, NULL, NULL);
    struct dsd_radix_ref v, m[4];
    /* demote from the leaf up, as an engine short of device pages would */
    ASSERT_EQ_INT(dsd_radix_victim(t, DSD_KV_TIER_DEVICE, 0, &v), 1);
    ASSERT_EQ_INT(v.value, 3);
    ASSERT_EQ_INT(dsd_radix_set(t, v.node, DSD_KV_TIER_HOST, 103), 0);
    ASSERT_EQ_INT(dsd_radix_victim(t, DSD_KV_TIER_DEVICE, 0, &v), 1);  /* page 2: its child is on the host */
    ASSERT_EQ_INT(v.value, 2);
    ASSERT_EQ_INT(dsd_radix_victim(t, DSD_KV_TIER_DEVICE, DSD_RADIX_LEAF_ONLY, &v), 0);
    ASSERT_EQ_INT(dsd_radix_count(t, DSD_KV_TIER_HOST), 1);
    ASSERT_EQ_INT(dsd_radix_match(t, tok, n, m, 4), 3);
    ASSERT_EQ_INT(m[1].tier, DSD_KV_TIER_DEVICE);
    ASSERT_EQ_INT(m[2].tier, DSD_KV_TIER_HOST);
    ASSERT_EQ_INT(m[2].value, 103);
    /* page 1 to the host under a device child of it would break the order, locked or not */
    ASSERT_EQ_INT(dsd_radix_set(t, m[0].node, DSD_KV_TIER_HOST, 101), -EINVAL);
    dsd_radix_unlock(t, m, 3);
    ASSERT_EQ_INT(dsd_radix_set(t, m[0].node, DSD_KV_TIER_HOST, 101), -EINVAL);
    /* loading the host page back: a promotion is allowed while locked */
    ASSERT_EQ_INT(dsd_radix_match(t, tok, n, m, 4), 3);
    ASSERT_EQ_INT(dsd_radix_set(t, m[2].node, DSD_KV_TIER_DEVICE, 33), 0);
    dsd_radix_unlock(t, m, 3);
    ASSERT_EQ_INT(dsd_radix_count(t, DSD_KV_TIER_HOST), 0);

    /* an insert replaces a host copy with a device one, and reports the host slot */
    ASSERT_EQ_INT(dsd_radix_victim(t, DSD_KV_TIER_DEVICE, 0, &v), 1);
    ASSERT_EQ_INT(dsd_radix_set(t, v.node, DSD_KV_TIER_HOST, 203), 0);
    uint8_t taken[8];
    struct dsd_radix_ref old[3];
    int n_old = -1;
    ASSERT_EQ_INT(dsd_radix_insert(t, tok, n, (int32_t[]){7, 8, 9}, DSD_KV_TIER_DEVICE, taken, old, &n_old), 1);
    ASSERT_EQ_INT(n_old, 1);
    ASSERT_EQ_INT(old[0].value, 203);
    ASSERT_EQ_INT(old[0].tier, DSD_KV_TIER_HOST);
    ASSERT_TRUE(!taken[0] && !taken[1] && taken[2]);
    /* a host insert below a device page is fine, a device one below a host page is not */
    int32_t tok2[4 * P];
    make_tokens(tok2, (int[]){1, 2, 3, 4, 5}, 4, 0);
    ASSERT_EQ_INT(dsd_radix_insert(t, tok2, 4 * P, (int32_t[]){0, 0, 0, 300}, DSD_KV_TIER_HOST, taken, NULL, NULL), 1);
    int32_t tok3[5 * P];
    make_tokens(tok3, (int[]){1, 2, 3, 4, 5}, 5, 0);
    ASSERT_EQ_INT(dsd_radix_insert(t, tok3, 5 * P, (int32_t[]){0, 0, 0, 0, 400}, DSD_KV_TIER_DEVICE, taken, NULL, NULL), 0);
    ASSERT_EQ_INT(dsd_radix_check(t, &err), 0);
    dsd_radix_free(t);
}

TEST(node_memory_is_bounded)
{
    struct dsd_err err = {{0}};
    ASSERT_TRUE(dsd_radix_new(0, &err) == NULL);
    struct dsd_radix *t = dsd_radix_new(4, &err);
    int32_t tok[6 * P];
    int n = make_tokens(tok, (int[]){1, 2, 3, 4, 5, 6}, 6, 0);
    uint8_t taken[6];
    ASSERT_EQ_INT(dsd_radix_insert(t, tok, n, (int32_t[]){1, 2, 3, 4, 5, 6}, 0, taken, NULL, NULL), 4);
    ASSERT_TRUE(taken[3] && !taken[4] && !taken[5]);
    int32_t out[2];
    ASSERT_EQ_INT(dsd_radix_evict(t, 0, 2, out), 2);
    ASSERT_EQ_INT(dsd_radix_insert(t, tok, n, (int32_t[]){1, 2, 3, 4, 5, 6}, 0, taken, NULL, NULL), 2);
    ASSERT_TRUE(taken[2] && taken[3] && !taken[4]);
    ASSERT_EQ_INT(dsd_radix_check(t, &err), 0);
    dsd_radix_free(t);
}

/* ---- random operations against a brute-force model ---- */

struct mnode {
    int used;
    int depth, syms[MAXD];
    int parent;                 /* model index, -1: root */
    int32_t value, handle;
    int tier, lock;
    uint64_t stamp;
};

#define MAXM 2048
static struct mnode M[MAXM];
static uint64_t clock_;

static int m_find(const int *syms, int depth)
{
    for (int i = 0; i < MAXM; i++)
        if (M[i].used && M[i].depth == depth && memcmp(M[i].syms, syms, (size_t)depth * sizeof *syms) == 0)
            return i;
    return -1;
}

static int m_count(void)
{
    int n = 0;
    for (int i = 0; i < MAXM; i++)
        n += M[i].used;
    return n;
}

static int m_kids(int i, int tier)
{
    int n = 0;
    for (int k = 0; k < MAXM; k++)
        n += M[k].used && M[k].parent == i && (tier < 0 || M[k].tier == tier);
    return n;
}

static int m_ptier(int i)
{
    return M[i].parent < 0 ? 0 : M[M[i].parent].tier;
}

static void m_touch(int i)
{
    if (M[i].lock == 0)
        M[i].stamp = ++clock_;
}

static void m_touch_path(int i)
{
    for (; i >= 0; i = M[i].parent)
        m_touch(i);
}

static int m_victim(int tier, unsigned flags)
{
    int best = -1;
    for (int i = 0; i < MAXM; i++) {
        if (!M[i].used || M[i].tier != tier || M[i].lock || m_kids(i, tier))
            continue;
        if ((flags & DSD_RADIX_LEAF_ONLY) && m_kids(i, -1))
            continue;
        if (best < 0 || M[i].stamp < M[best].stamp)
            best = i;
    }
    return best;
}

static int m_by_handle(int32_t h)
{
    for (int i = 0; i < MAXM; i++)
        if (M[i].used && M[i].handle == h)
            return i;
    return -1;
}

struct held {
    struct dsd_radix_ref refs[MAXD];
    int n;
};

TEST(random_operations_against_a_model)
{
    enum { CAP = 40, STEPS = 6000, NSYM = 3 };
    struct dsd_err err = {{0}};
    struct dsd_radix *t = dsd_radix_new(CAP, &err);
    struct dsd_rng r;
    dsd_rng_seed(&r, 20261206);
    memset(M, 0, sizeof M);
    struct held held[8];
    int n_held = 0, bad = 0, checks_failed = 0;
    int32_t next_value = 1000;
    int32_t tok[(MAXD + 1) * P];
    int ops_seen[8] = {0};
    for (int step = 0; step < STEPS && bad < 5; step++) {
        int syms[MAXD], depth = 1 + (int)(dsd_rng_next(&r) % MAXD);
        for (int k = 0; k < depth; k++)
            syms[k] = (int)(dsd_rng_next(&r) % NSYM);
        int extra = (int)(dsd_rng_next(&r) % 3) * 31;
        int n_tok = make_tokens(tok, syms, depth, extra);
        int op = (int)(dsd_rng_next(&r) % 8);
        ops_seen[op]++;
        if (op <= 1) {                                  /* insert */
            int tier = (int)(dsd_rng_next(&r) % DSD_RADIX_TIERS), with_disp = (int)(dsd_rng_next(&r) & 1);
            int32_t vals[MAXD];
            for (int k = 0; k < depth; k++)
                vals[k] = next_value++;
            /* the model's answer first */
            uint8_t want_taken[MAXD] = {0};
            int want_n = 0, want_nd = 0, parent = -1;
            int32_t want_disp[MAXD];
            int created[MAXD], n_created = 0;
            for (int k = 0; k < depth; k++) {
                int i = m_find(syms, k + 1);
                int pt = parent < 0 ? 0 : M[parent].tier;
                if (i >= 0) {
                    if (with_disp && M[i].tier > tier && M[i].lock == 0 && pt <= tier) {
                        want_disp[want_nd++] = M[i].value;
                        M[i].tier = tier;
                        M[i].value = vals[k];
                        M[i].stamp = ++clock_;
                        want_taken[k] = 1;
                        want_n++;
                    }
                } else {
                    if (pt > tier || m_count() >= CAP)
                        break;
                    for (i = 0; M[i].used; i++)
                        ;
                    M[i] = (struct mnode){.used = 1, .depth = k + 1, .parent = parent, .value = vals[k],
                                          .tier = tier, .handle = -1, .stamp = ++clock_};
                    memcpy(M[i].syms, syms, sizeof syms[0] * (size_t)(k + 1));
                    created[n_created++] = i;
                    want_taken[k] = 1;
                    want_n++;
                }
                parent = i;
            }
            if (parent >= 0)
                m_touch_path(parent);
            uint8_t taken[MAXD];
            struct dsd_radix_ref disp[MAXD];
            int nd = -1;
            int got = dsd_radix_insert(t, tok, n_tok, vals, tier, taken, with_disp ? disp : NULL, &nd);
            bad += got != want_n || nd != want_nd;
            for (int k = 0; k < depth; k++)
                bad += taken[k] != want_taken[k];
            for (int k = 0; k < want_nd && k < nd; k++)
                bad += disp[k].value != want_disp[k];
            /* learn the handles of the new nodes */
            struct dsd_radix_ref pk[MAXD];
            int np = dsd_radix_peek(t, tok, n_tok, pk, MAXD);
            for (int c = 0; c < n_created; c++) {
                int d = M[created[c]].depth;
                if (d <= np)
                    M[created[c]].handle = pk[d - 1].node;
                else
                    bad++;
            }
        } else if (op == 2) {                           /* match (locks) */
            if (n_held == 8)
                continue;
            struct held *h = &held[n_held];
            h->n = dsd_radix_match(t, tok, n_tok, h->refs, MAXD);
            int want = 0;
            while (want < n_tok / P && m_find(syms, want + 1) >= 0)
                want++;
            bad += h->n != want;
            for (int k = 0; k < h->n && k < want; k++) {
                int i = m_find(syms, k + 1);
                bad += h->refs[k].value != M[i].value || h->refs[k].tier != M[i].tier || h->refs[k].node != M[i].handle;
                M[i].lock++;
            }
            n_held++;
        } else if (op == 3) {                           /* unlock the oldest held match */
            if (!n_held)
                continue;
            struct held *h = &held[0];
            dsd_radix_unlock(t, h->refs, h->n);
            for (int k = h->n - 1; k >= 0; k--) {
                int i = m_by_handle(h->refs[k].node);
                if (i >= 0 && --M[i].lock == 0)
                    M[i].stamp = ++clock_;
            }
            memmove(held, held + 1, (size_t)(n_held - 1) * sizeof held[0]);
            n_held--;
        } else if (op == 4) {                           /* victim */
            int tier = (int)(dsd_rng_next(&r) % DSD_RADIX_TIERS);
            unsigned flags = dsd_rng_next(&r) & 1 ? DSD_RADIX_LEAF_ONLY : 0;
            struct dsd_radix_ref v;
            int got = dsd_radix_victim(t, tier, flags, &v), want = m_victim(tier, flags);
            bad += got != (want >= 0);
            if (got == 1 && want >= 0)
                bad += v.node != M[want].handle || v.value != M[want].value;
        } else if (op == 5) {                           /* set a random node's tier */
            int i = (int)(dsd_rng_next(&r) % MAXM), tries = 0;
            while (!M[i].used && tries++ < MAXM)
                i = (i + 1) % MAXM;
            if (!M[i].used)
                continue;
            int tier = (int)(dsd_rng_next(&r) % DSD_RADIX_TIERS);
            int want = 0;
            if (m_ptier(i) > tier)
                want = -EINVAL;
            for (int k = 0; k < tier && !want; k++)
                if (m_kids(i, k))
                    want = -EINVAL;
            if (!want && M[i].lock && tier > M[i].tier)
                want = -EBUSY;
            int32_t v = next_value++;
            int got = dsd_radix_set(t, M[i].handle, tier, v);
            bad += got != want;
            if (!want) {
                M[i].tier = tier;
                M[i].value = v;
                m_touch(i);
            }
        } else if (op == 6) {                           /* remove a random node */
            int i = (int)(dsd_rng_next(&r) % MAXM), tries = 0;
            while (!M[i].used && tries++ < MAXM)
                i = (i + 1) % MAXM;
            if (!M[i].used)
                continue;
            int want = M[i].lock ? -EBUSY : m_kids(i, -1) ? -ENOTEMPTY : 0;
            bad += dsd_radix_remove(t, M[i].handle) != want;
            if (!want)
                M[i].used = 0;
        } else {                                        /* evict a few */
            int tier = (int)(dsd_rng_next(&r) % DSD_RADIX_TIERS), want_n = (int)(dsd_rng_next(&r) % 4);
            int32_t out[4];
            int got = dsd_radix_evict(t, tier, want_n, out);
            int k = 0;
            for (; k < want_n; k++) {
                int i = m_victim(tier, DSD_RADIX_LEAF_ONLY);
                if (i < 0)
                    break;
                bad += k >= got || out[k] != M[i].value;
                M[i].used = 0;
            }
            bad += got != k;
        }
        for (int tier = -1; tier < DSD_RADIX_TIERS; tier++) {
            int n = 0;
            for (int i = 0; i < MAXM; i++)
                n += M[i].used && (tier < 0 || M[i].tier == tier);
            bad += dsd_radix_count(t, tier) != n;
        }
        if (dsd_radix_check(t, &err) < 0 && checks_failed++ < 3)
            TEST_FAIL_AT("step %d: %s", step, err.msg);
        if (bad && bad < 5) {
            TEST_FAIL_AT("step %d (op %d): the tree disagrees with the model (%d)", step, op, bad);
            bad = 5;
        }
    }
    while (n_held > 0) {
        n_held--;
        dsd_radix_unlock(t, held[n_held].refs, held[n_held].n);
    }
    ASSERT_EQ_INT(bad, 0);
    ASSERT_EQ_INT(checks_failed, 0);
    for (int op = 0; op < 8; op++)
        ASSERT_TRUE(ops_seen[op] > 100);
    printf("  %d nodes at the end, %d on the host\n", dsd_radix_count(t, -1), dsd_radix_count(t, DSD_KV_TIER_HOST));
    ASSERT_EQ_INT(dsd_radix_check(t, &err), 0);
    dsd_radix_free(t);
}

int main(void)
{
    RUN(hash_index_put_get_del);
    RUN(chain_hash_names_the_whole_prefix);
    RUN(match_whole_pages_only);
    RUN(locks_prevent_eviction);
    RUN(lru_order_and_leaves_first);
    RUN(tiers_stay_ordered);
    RUN(node_memory_is_bounded);
    RUN(random_operations_against_a_model);
    return test_report();
}
