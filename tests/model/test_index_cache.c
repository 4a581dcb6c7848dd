/*
 * IndexCache in the forward pass (daemon/model/index_cache.h, docs/INDEXCACHE.md), on the
 * tiny checkpoint (4 main layers, index_topk 24) with a prompt long enough that every
 * selection past position 24 is truly sparse:
 *   - freq 1 and an all-'F' pattern are bitwise the model without IndexCache;
 *   - a reusing layer's selection is bitwise the computing layer's before it, layers before
 *     the first reuse are untouched, and the outputs do change;
 *   - chunked prefill still computes exactly what one prefill does;
 *   - the MTP layer computes its own indexer whatever the main layers do.
 *   test_index_cache TINY_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_harness.h"
#include "index_cache.h"
#include "test.h"

static const char *g_tiny;

#define N 96        /* prompt tokens: positions 24..95 select sparsely */

static int32_t g_ids[N + 1];

static struct dsd_model *load(int freq, const char *pattern)
{
    return harness_load_index_cache(g_tiny, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 2, freq, pattern);
}

/* Runs the prompt (in chunks of `chunk`); the model is freed. 0 or -1. */
static int run(int freq, const char *pattern, int chunk, struct prompt_run *r)
{
    struct dsd_model *m = load(freq, pattern);
    if (!m)
        return -1;
    int rc = harness_run(m, g_ids, N, chunk, r);
    dsd_model_free(m);
    return rc;
}

static const int32_t *layer_sel(const struct prompt_run *r, int layer)
{
    return r->sel + (size_t)layer * r->n * r->topk;
}

static bool same_sel(const struct prompt_run *a, int la, const struct prompt_run *b, int lb)
{
    return memcmp(layer_sel(a, la), layer_sel(b, lb), (size_t)a->n * a->topk * sizeof(int32_t)) == 0;
}

static bool same_logits(const struct prompt_run *a, const struct prompt_run *b)
{
    return memcmp(a->logits, b->logits, (size_t)a->n * a->vocab * sizeof(float)) == 0;
}

static struct prompt_run g_off;     /* the unmodified model */

TEST(off_freq1_and_all_full_pattern_are_bitwise_the_model)
{
    ASSERT_EQ_INT(run(0, NULL, N, &g_off), 0);
    ASSERT_TRUE(g_off.layers == 4 && g_off.topk == 24);
    /* not vacuous: the exact selections differ from layer to layer */
    ASSERT_TRUE(!same_sel(&g_off, 1, &g_off, 2));
    ASSERT_TRUE(!same_sel(&g_off, 0, &g_off, 3));
    struct prompt_run r;
    ASSERT_EQ_INT(run(1, NULL, N, &r), 0);
    ASSERT_TRUE(same_logits(&r, &g_off));
    ASSERT_TRUE(memcmp(r.sel, g_off.sel, (size_t)4 * N * 24 * sizeof(int32_t)) == 0);
    harness_free_run(&r);
    ASSERT_EQ_INT(run(0, "FFFF", N, &r), 0);
    ASSERT_TRUE(same_logits(&r, &g_off));
    ASSERT_TRUE(memcmp(r.sel, g_off.sel, (size_t)4 * N * 24 * sizeof(int32_t)) == 0);
    harness_free_run(&r);
}

/* freq 2 on 4 layers: F F S F. */
TEST(freq2_reuses_the_computing_layers_selection)
{
    struct prompt_run r;
    ASSERT_EQ_INT(run(2, NULL, N, &r), 0);
    ASSERT_TRUE(same_sel(&r, 0, &g_off, 0));        /* before the first reuse: unchanged */
    ASSERT_TRUE(same_sel(&r, 1, &g_off, 1));
    ASSERT_TRUE(same_sel(&r, 2, &r, 1));            /* layer 2 reuses layer 1's */
    ASSERT_TRUE(!same_sel(&r, 3, &r, 2));           /* layer 3 computes its own */
    ASSERT_TRUE(!same_logits(&r, &g_off));          /* and the outputs change */
    int sets = 0;
    double ov = selection_overlap(layer_sel(&r, 2), layer_sel(&g_off, 2), 1, N, 24, &sets);
    printf("  layer 2 reused vs exact selection: overlap %.3f over %d sparse positions\n", ov, sets);
    ASSERT_TRUE(sets == N - 24 && ov < 1.0);
    /* any chunking computes the same, as without IndexCache */
    struct prompt_run c;
    ASSERT_EQ_INT(run(2, NULL, 7, &c), 0);
    ASSERT_TRUE(same_logits(&c, &r));
    ASSERT_TRUE(memcmp(c.sel, r.sel, (size_t)4 * N * 24 * sizeof(int32_t)) == 0);
    harness_free_run(&c);
    harness_free_run(&r);
}

TEST(pattern_reuses_the_nearest_full_layer_before)
{
    struct prompt_run r;
    ASSERT_EQ_INT(run(0, "FSSF", N, &r), 0);
    ASSERT_TRUE(same_sel(&r, 0, &g_off, 0));
    ASSERT_TRUE(same_sel(&r, 1, &r, 0));
    ASSERT_TRUE(same_sel(&r, 2, &r, 0));
    ASSERT_TRUE(!same_sel(&r, 3, &r, 0));
    harness_free_run(&r);
    /* a bad daemon pattern fails the load with the rule named */
    ASSERT_TRUE(load(0, "FSS") == NULL);
    ASSERT_TRUE(load(0, "SFFF") == NULL);
}

/* The MTP step after a main step: it computes its own indexer, so it must not see the
 * selection the main layers left behind (layer 0's under FSSS, layer 3's without). */
TEST(mtp_layer_computes_its_own_indexer)
{
    const int64_t V = g_off.vocab;
    float *want = malloc((size_t)N * V * sizeof(float)), *got = malloc((size_t)N * V * sizeof(float));
    struct prompt_run r;
    struct dsd_model *m = load(0, NULL);
    ASSERT_TRUE(m != NULL);
    if (!m)
        return;
    ASSERT_EQ_INT(harness_run(m, g_ids, N, N, &r), 0);
    ASSERT_EQ_INT(harness_mtp(m, g_ids + 1, g_off.hidden, N, 0, want), 0);
    harness_free_run(&r);
    dsd_model_free(m);
    m = load(0, "FSSS");
    ASSERT_TRUE(m != NULL);
    if (!m)
        return;
    ASSERT_TRUE(dsd_index_cache_computes(&m->cfg, m->cfg.num_hidden_layers));
    ASSERT_EQ_INT(harness_run(m, g_ids, N, N, &r), 0);
    ASSERT_EQ_INT(harness_mtp(m, g_ids + 1, g_off.hidden, N, 0, got), 0);
    ASSERT_TRUE(memcmp(got, want, (size_t)N * V * sizeof(float)) == 0);
    harness_free_run(&r);
    dsd_model_free(m);
    free(want);
    free(got);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TINY_DIR\n", argv[0]);
        return 2;
    }
    g_tiny = argv[1];
    for (int i = 0; i <= N; i++)
        g_ids[i] = (int32_t)((i * 131 + 17) % 2048);
    RUN(off_freq1_and_all_full_pattern_are_bitwise_the_model);
    RUN(freq2_reuses_the_computing_layers_selection);
    RUN(pattern_reuses_the_nearest_full_layer_before);
    RUN(mtp_layer_computes_its_own_indexer);
    harness_free_run(&g_off);
    return test_report();
}
