/*
 * The KV tiers with the tiny model on the CPU backend (docs/KV_CACHE.md §5-§6): a 3-page
 * prefix computed once, handed to the radix tree, demoted device -> host (and host -> disk,
 * then a "restart": a new tree, host tier and disk tier object), then loaded back into
 * other device pages; the suffix computed on top must give bitwise the logits of one
 * uninterrupted prefill. The pages left behind are overwritten first, so only the restored
 * bytes can produce them; and restoring the latent arena without the index-K arena must
 * change the logits (V3.2's indexer reads the index keys: both arenas travel together).
 *   test_kv_tiers TINY_DIR
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk_page.h"
#include "disk_tier.h"
#include "engine_harness.h"
#include "host_tier.h"
#include "page_hash.h"
#include "radix.h"
#include "test.h"
#include "weights_id.h"

#define P DSD_KV_PAGE_TOKENS
enum { NPRE = 3 * P, NP = NPRE + 20, POOL = 12 };

static const char *g_tiny;
static struct dsd_model *g_m;
static int32_t g_prompt[NP];
static float *g_ref;            /* [NP - NPRE][vocab]: logits of the suffix, one prefill */

/* Overwrites every page of the pool that no one holds, so stale bytes cannot pass. */
static void scribble_free_pages(struct dsd_kv_cache *kv, uint32_t seed)
{
    const struct dsd_kv_layout *l = dsd_kv_cache_layout(kv);
    size_t mp = (size_t)P * l->mla_token_bytes, ip = l->index_page_bytes;
    for (int32_t p = 1; p <= dsd_kv_cache_total_pages(kv); p++) {
        if (dsd_kv_page_refs(kv, p) != 0)
            continue;
        for (int layer = 0; layer < dsd_kv_cache_n_layers(kv); layer++) {
            const struct dsd_kv_layer *lay = dsd_kv_cache_layer(kv, layer);
            uint32_t x = seed + (uint32_t)p * 7919u + (uint32_t)layer;
            for (size_t b = 0; b < mp; b++)
                lay->mla[(size_t)p * mp + b] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
            for (size_t b = 0; b < ip; b++)
                lay->index[(size_t)p * ip + b] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
        }
    }
}

/* Computes the prefix in a sequence and hands its full pages to the tree (which keeps them). */
static void compute_prefix(struct dsd_kv_cache *kv, struct dsd_radix *t)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_seq seq = {0};
    float *logits = malloc((size_t)g_m->cfg.vocab_size * sizeof *logits);
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq, NPRE), 0);
    struct dsd_batch_seq b = {.tokens = g_prompt, .n_tokens = NPRE, .pos0 = 0, .kv = &seq};
    struct dsd_forward_out o = {.logits = logits};
    ASSERT_EQ_INT(dsd_model_forward(g_m, kv, &b, 1, &o, &err), 0);
    uint8_t taken[3];
    ASSERT_EQ_INT(dsd_radix_insert(t, g_prompt, NPRE, seq.pages, DSD_KV_TIER_DEVICE, taken, NULL, NULL), 3);
    for (int k = 0; k < 3; k++)
        ASSERT_EQ_INT(dsd_kv_page_ref(kv, seq.pages[k]), 2);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    free(logits);
}

/* Device -> host: every device node of the tree, leaves first, as a short pool would. */
static void demote_to_host(struct dsd_kv_cache *kv, struct dsd_radix *t, struct dsd_host_tier *ht)
{
    struct dsd_err err = {{0}};
    struct dsd_radix_ref v;
    int n = 0;
    while (dsd_radix_victim(t, DSD_KV_TIER_DEVICE, 0, &v) == 1) {
        int s = dsd_host_tier_alloc(ht);
        ASSERT_TRUE(s >= 0);
        ASSERT_EQ_INT(dsd_host_tier_copy_out(ht, kv, v.value, s), 0);
        ASSERT_EQ_INT(g_m->ops->synchronize(g_m->be, &err), 0);
        ASSERT_EQ_INT(dsd_radix_set(t, v.node, DSD_KV_TIER_HOST, s), 0);
        ASSERT_EQ_INT(dsd_kv_page_unref(kv, v.value), 0);
        n++;
    }
    ASSERT_EQ_INT(n, 3);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), dsd_kv_cache_total_pages(kv));
}

/* The suffix on top of prefix pages[0..3): its logits rows into out. */
static void run_suffix(struct dsd_kv_cache *kv, const int32_t *pages, float *out)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_seq seq = {0};
    ASSERT_EQ_INT(dsd_kv_seq_share(kv, &seq, pages, 3), 0);
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq, NP), 0);
    struct dsd_batch_seq b = {.tokens = g_prompt + NPRE, .n_tokens = NP - NPRE, .pos0 = NPRE, .kv = &seq,
                              .logits_all = true};
    struct dsd_forward_out o = {.logits = out};
    ASSERT_EQ_INT(dsd_model_forward(g_m, kv, &b, 1, &o, &err), 0);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
}

static int same_as_reference(const float *logits)
{
    return memcmp(logits, g_ref, (size_t)(NP - NPRE) * (size_t)g_m->cfg.vocab_size * sizeof *logits) == 0;
}

static struct dsd_kv_page_geom geom_of(struct dsd_kv_cache *kv)
{
    return dsd_kv_page_geom_of(dsd_kv_cache_layout(kv), dsd_kv_cache_n_layers(kv));
}

TEST(host_tier_round_trip_is_bitwise)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(g_m, POOL, &err);
    struct dsd_radix *t = dsd_radix_new(32, &err);
    struct dsd_kv_page_geom g = geom_of(kv);
    struct dsd_host_tier *ht = dsd_host_tier_new(g_m->be, &g, 4 * dsd_kv_page_record_bytes(&g), &err);
    ASSERT_TRUE(kv && t && ht);
    compute_prefix(kv, t);
    demote_to_host(kv, t, ht);
    int32_t hold = dsd_kv_page_alloc(kv);               /* so the pages come back elsewhere */
    scribble_free_pages(kv, 1);

    struct dsd_radix_ref m[4];
    ASSERT_EQ_INT(dsd_radix_match(t, g_prompt, NP - 1, m, 4), 3);
    int32_t pages[3];
    for (int k = 0; k < 3; k++) {
        ASSERT_EQ_INT(m[k].tier, DSD_KV_TIER_HOST);
        pages[k] = dsd_kv_page_alloc(kv);
        ASSERT_EQ_INT(dsd_host_tier_copy_in(ht, kv, m[k].value, pages[k]), 0);
    }
    ASSERT_EQ_INT(g_m->ops->synchronize(g_m->be, &err), 0);
    for (int k = 0; k < 3; k++) {                       /* promoted: the tree keeps the new page */
        ASSERT_EQ_INT(dsd_host_tier_release(ht, m[k].value), 0);
        ASSERT_EQ_INT(dsd_radix_set(t, m[k].node, DSD_KV_TIER_DEVICE, pages[k]), 0);
    }
    float *logits = malloc((size_t)(NP - NPRE) * (size_t)g_m->cfg.vocab_size * sizeof *logits);
    run_suffix(kv, pages, logits);
    dsd_radix_unlock(t, m, 3);
    ASSERT_TRUE(same_as_reference(logits));
    ASSERT_EQ_INT(dsd_host_tier_used(ht), 0);
    ASSERT_EQ_INT(dsd_radix_count(t, DSD_KV_TIER_DEVICE), 3);
    for (int k = 0; k < 3; k++)
        ASSERT_EQ_INT(dsd_kv_page_refs(kv, pages[k]), 1);  /* the tree's only: the sequence let go */

    /* the control: the same pages with their index-K arena lost give other logits */
    const struct dsd_kv_layout *l = dsd_kv_cache_layout(kv);
    for (int k = 0; k < 3; k++)
        for (int layer = 0; layer < dsd_kv_cache_n_layers(kv); layer++)
            memset(dsd_kv_cache_layer(kv, layer)->index + (size_t)pages[k] * l->index_page_bytes, 0,
                   l->index_page_bytes);
    run_suffix(kv, pages, logits);
    ASSERT_TRUE(!same_as_reference(logits));
    free(logits);
    dsd_kv_page_unref(kv, hold);
    dsd_host_tier_free(ht);
    dsd_radix_free(t);
    dsd_kv_cache_free(kv);
}

static char g_dir[256];

static void rm_rf(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

TEST(disk_tier_survives_a_restart_bitwise)
{
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(g_m, POOL, &err);
    struct dsd_kv_page_geom g = geom_of(kv);
    const struct dsd_backend_params *bp = dsd_backend_params(g_m->be);
    uint8_t wid[DSD_WEIGHTS_ID_BYTES];
    dsd_weights_id(g_m->set, wid);
    uint64_t fp = dsd_kv_fingerprint(&bp->dims, dsd_kv_cache_layout(kv), g.n_layers, wid, sizeof wid);
    struct dsd_disk_tier_config c = {.dir = g_dir, .budget_bytes = 4096 + 8 * dsd_kv_page_record_bytes(&g),
                                     .geom = g, .fingerprint = fp};
    uint64_t h[3];
    ASSERT_EQ_INT(dsd_kv_chain_hashes(g_prompt, NP - 1, h, 3), 3);

    /* the first daemon: compute, demote to the host, write the host pages to disk */
    {
        struct dsd_radix *t = dsd_radix_new(32, &err);
        struct dsd_host_tier *ht = dsd_host_tier_new(g_m->be, &g, 4 * dsd_kv_page_record_bytes(&g), &err);
        struct dsd_disk_tier *dt = dsd_disk_tier_open(&c, &err);
        ASSERT_TRUE(t && ht && dt);
        if (!dt)
            fprintf(stderr, "  %s\n", err.msg);
        compute_prefix(kv, t);
        demote_to_host(kv, t, ht);
        struct dsd_radix_ref v;
        while (dt && dsd_radix_victim(t, DSD_KV_TIER_HOST, DSD_RADIX_LEAF_ONLY, &v) == 1) {
            struct dsd_kv_page_meta meta = {0};
            int depth = 0;
            ASSERT_EQ_INT(dsd_radix_page(t, v.node, &meta.parent_hash, meta.tokens, &depth), 0);
            meta.depth = (uint32_t)depth;
            void *rec = dsd_host_tier_record(ht, v.value);
            ASSERT_EQ_INT(dsd_disk_tier_put(dt, &meta, dsd_kv_page_mla(rec), dsd_kv_page_index(rec, &g), &err), 0);
            ASSERT_TRUE(meta.chain_hash == v.hash);
            ASSERT_EQ_INT(dsd_radix_remove(t, v.node), 0);
            ASSERT_EQ_INT(dsd_host_tier_release(ht, v.value), 0);
        }
        ASSERT_EQ_INT(dsd_radix_count(t, -1), 0);
        dsd_disk_tier_close(dt);
        dsd_host_tier_free(ht);
        dsd_radix_free(t);
    }
    scribble_free_pages(kv, 2);
    int32_t hold = dsd_kv_page_alloc(kv);

    /* the restarted daemon: an empty tree; the disk has the prefix */
    struct dsd_radix *t = dsd_radix_new(32, &err);
    struct dsd_host_tier *ht = dsd_host_tier_new(g_m->be, &g, 4 * dsd_kv_page_record_bytes(&g), &err);
    struct dsd_disk_tier *dt = dsd_disk_tier_open(&c, &err);
    ASSERT_TRUE(t && ht && dt);
    if (!dt) {
        dsd_kv_cache_free(kv);
        return;
    }
    struct dsd_radix_ref m[4];
    ASSERT_EQ_INT(dsd_radix_match(t, g_prompt, NP - 1, m, 4), 0);
    int32_t pages[3];
    for (int k = 0; k < 3; k++) {
        ASSERT_TRUE(dsd_disk_tier_contains(dt, h[k]));
        struct dsd_kv_page_meta expect = {.parent_hash = k ? h[k - 1] : DSD_KV_CHAIN_ROOT};
        memcpy(expect.tokens, g_prompt + k * P, sizeof expect.tokens);
        int s = dsd_host_tier_alloc(ht);
        void *rec = dsd_host_tier_record(ht, s);
        ASSERT_EQ_INT(dsd_disk_tier_get(dt, h[k], &expect, dsd_kv_page_mla(rec), dsd_kv_page_index(rec, &g), &err), 0);
        pages[k] = dsd_kv_page_alloc(kv);
        ASSERT_EQ_INT(dsd_host_tier_copy_in(ht, kv, s, pages[k]), 0);
        ASSERT_EQ_INT(g_m->ops->synchronize(g_m->be, &err), 0);
        dsd_host_tier_release(ht, s);
    }
    uint8_t taken[3];
    ASSERT_EQ_INT(dsd_radix_insert(t, g_prompt, NPRE, pages, DSD_KV_TIER_DEVICE, taken, NULL, NULL), 3);
    float *logits = malloc((size_t)(NP - NPRE) * (size_t)g_m->cfg.vocab_size * sizeof *logits);
    run_suffix(kv, pages, logits);
    ASSERT_TRUE(same_as_reference(logits));
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    ASSERT_EQ_INT(st.hits, 3);
    ASSERT_EQ_INT(st.dropped, 0);
    /* a model with other weights (another fingerprint) finds nothing */
    dsd_disk_tier_close(dt);
    c.fingerprint = fp + 1;
    dt = dsd_disk_tier_open(&c, &err);
    ASSERT_TRUE(dt && !dsd_disk_tier_contains(dt, h[0]));
    dsd_disk_tier_close(dt);
    free(logits);
    for (int k = 0; k < 3; k++)
        dsd_kv_page_unref(kv, pages[k]);
    dsd_kv_page_unref(kv, hold);
    dsd_host_tier_free(ht);
    dsd_radix_free(t);
    dsd_kv_cache_free(kv);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_kv_tiers TINY_DIR\n");
        return 2;
    }
    g_tiny = argv[1];
    g_m = harness_load(g_tiny, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 2);
    if (!g_m)
        return 1;
    for (int i = 0; i < NP; i++)
        g_prompt[i] = (int32_t)((i * 37 + 11) % g_m->cfg.vocab_size);
    struct prompt_run ref;
    if (harness_run(g_m, g_prompt, NP, NP, &ref) != 0)
        return 1;
    size_t row = (size_t)g_m->cfg.vocab_size;
    g_ref = malloc((size_t)(NP - NPRE) * row * sizeof *g_ref);
    memcpy(g_ref, ref.logits + (size_t)NPRE * row, (size_t)(NP - NPRE) * row * sizeof *g_ref);
    harness_free_run(&ref);
    char cwd[200];
    if (!getcwd(cwd, sizeof cwd))
        return 1;
    snprintf(g_dir, sizeof g_dir, "%s/kv-tiers-scratch-%d", cwd, (int)getpid());
    rm_rf(g_dir);

    RUN(host_tier_round_trip_is_bitwise);
    RUN(disk_tier_survives_a_restart_bitwise);
    int rc = test_report();
    rm_rf(g_dir);
    free(g_ref);
    dsd_model_free(g_m);
    return rc;
}
