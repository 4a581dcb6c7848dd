/*
 * Loading checkpoints (daemon/model/weights.c + model.c) on good and bad directories:
 *   test_loader TINY_DIR SHARDED_DIR
 * Bad variants are written from the good tiny checkpoint with one thing changed each; every
 * one must fail with -EINVAL and a message naming the tensor and what was expected.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_variant.h"
#include "model.h"
#include "test.h"

static const char *g_tiny, *g_sharded;
static char g_tmp[PATH_MAX];

/* the tiny checkpoint with one thing changed (ckpt_variant.h) */
static char *variant(const char *name, const char *victim, const char *how, bool keep_quant_config)
{
    return ckpt_variant(g_tiny, g_tmp, name, victim, how, keep_quant_config);
}

static struct dsd_model *load(const char *dir, struct dsd_err *err, int *rc)
{
    struct dsd_model_params p = dsd_model_default_params();
    p.n_threads = 2;
    struct dsd_model *m = NULL;
    *rc = dsd_model_load(dir, &p, &m, err);
    return m;
}

static void expect_load_error(const char *dir, const char *needle1, const char *needle2)
{
    struct dsd_err err = {{0}};
    int rc;
    struct dsd_model *m = load(dir, &err, &rc);
    ASSERT_EQ_INT(rc, -EINVAL);
    ASSERT_TRUE(m == NULL);
    if (!strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
        TEST_FAIL_AT("message \"%s\" lacks \"%s\" / \"%s\"", err.msg, needle1, needle2 ? needle2 : "");
}

TEST(good_single_file_and_sharded)
{
    struct dsd_err err = {{0}};
    int rc;
    struct dsd_model *a = load(g_tiny, &err, &rc), *b;
    ASSERT_EQ_INT(rc, 0);
    b = load(g_sharded, &err, &rc);
    ASSERT_EQ_INT(rc, 0);
    if (!a || !b)
        return;
    ASSERT_TRUE(dsd_st_file_count(b->set) > 1);
    /* Same content either way: every bound weight identical. */
    ASSERT_EQ_INT(dsd_st_count(a->set), dsd_st_count(b->set));
    for (size_t i = 0; i < dsd_st_count(a->set); i++) {
        const struct dsd_st_tensor *x = dsd_st_at(a->set, i), *y = dsd_st_find(b->set, x->name);
        ASSERT_TRUE(y && y->nbytes == x->nbytes && memcmp(x->data, y->data, x->nbytes) == 0);
    }
    ASSERT_TRUE(a->w.layers[2].is_moe && !a->w.layers[1].is_moe && a->w.layers[4].is_mtp);
    ASSERT_TRUE(a->w.layers[0].kv_a.scale != NULL);
    ASSERT_EQ_INT(a->w.layers[0].kv_a.rows, a->cfg.kv_lora_rank + a->cfg.qk_rope_head_dim);
    ASSERT_TRUE(dsd_weights_bytes(&a->w, &a->cfg) > 10u << 20);
    dsd_model_free(a);
    dsd_model_free(b);
}

TEST(each_bad_tensor_is_named)
{
    expect_load_error(variant("missing", "model.layers.2.mlp.experts.7.up_proj.weight", "drop", true),
                      "model.layers.2.mlp.experts.7.up_proj.weight is missing", "F8_E4M3");
    expect_load_error(variant("shape", "model.layers.1.self_attn.q_b_proj.weight", "shape", true),
                      "model.layers.1.self_attn.q_b_proj.weight", "[512, 256]");
    expect_load_error(variant("dtype", "model.norm.weight", "dtype", true), "model.norm.weight", "found I32");
    expect_load_error(variant("noscale", "model.layers.0.self_attn.o_proj.weight", "scale_drop", true),
                      "without its scale tensor", "o_proj.weight_scale_inv");
    expect_load_error(variant("scaleshape", "model.layers.3.mlp.shared_experts.down_proj.weight", "scale_shape", true),
                      "down_proj.weight_scale_inv", "expected F32 [2, 1]");
    expect_load_error(variant("scaleneg", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "scale_neg", true),
                      "kv_a_proj_with_mqa.weight_scale_inv", "finite and positive");
    expect_load_error(variant("noquant", "nothing", "none", false), "no quantization_config", NULL);
    expect_load_error(variant("mtp", "model.layers.4.eh_proj.weight", "drop", true), "model.layers.4.eh_proj.weight",
                      "BF16 [256, 512]");
}

TEST(unquantized_linear_weights_are_accepted)
{
    /* A linear stored as BF16 (some tools keep layers unquantized) loads and runs. */
    const char *dir = variant("bf16lin", "model.layers.0.self_attn.q_a_proj.weight", "bf16", true);
    struct dsd_err err = {{0}};
    int rc;
    struct dsd_model *m = load(dir, &err, &rc);
    ASSERT_EQ_INT(rc, 0);
    if (!m)
        return;
    ASSERT_EQ_INT(m->w.layers[0].q_a.dtype, DSD_DTYPE_BF16);
    ASSERT_TRUE(m->w.layers[0].q_a.scale == NULL);
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 2, &err);
    struct dsd_kv_seq seq = {0};
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq, 3), 0);
    int32_t ids[3] = { 0, 5, 9 };
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    struct dsd_batch_seq b = { .tokens = ids, .n_tokens = 3, .kv = &seq };
    struct dsd_forward_out out = { .logits = logits };
    ASSERT_EQ_INT(dsd_model_forward(m, kv, &b, 1, &out, &err), 0);
    ASSERT_TRUE(isfinite(logits[0]));
    free(logits);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    dsd_model_free(m);
}

TEST(bad_directories)
{
    struct dsd_err err = {{0}};
    int rc;
    ASSERT_TRUE(load("/nonexistent-model-dir", &err, &rc) == NULL);
    ASSERT_EQ_INT(rc, -ENOENT);
    /* config.json without safetensors */
    char dir[PATH_MAX], p[PATH_MAX + 32], src[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/configonly", g_tmp);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/config.json", dir);
    snprintf(src, sizeof src, "%s/config.json", g_tiny);
    ckpt_copy_file(src, p);
    ASSERT_TRUE(load(dir, &err, &rc) == NULL);
    ASSERT_EQ_INT(rc, -ENOENT);
    ASSERT_TRUE(strstr(err.msg, "model.safetensors") != NULL);
    /* a truncated model file */
    snprintf(src, sizeof src, "%s/model.safetensors", g_tiny);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    ckpt_copy_file(src, p);
    ASSERT_EQ_INT(truncate(p, 100000), 0);
    ASSERT_TRUE(load(dir, &err, &rc) == NULL);
    ASSERT_EQ_INT(rc, -EINVAL);
}

TEST(forward_rejects_bad_requests)
{
    struct dsd_err err = {{0}};
    int rc;
    struct dsd_model *m = load(g_tiny, &err, &rc);
    ASSERT_TRUE(m != NULL);
    if (!m)
        return;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 3, &err);
    struct dsd_kv_seq seq = {0};
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq, 64), 0);
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    int32_t ids[2] = { 5, (int32_t)m->cfg.vocab_size };
    struct dsd_batch_seq b = { .tokens = ids, .n_tokens = 2, .kv = &seq };
    struct dsd_forward_out out = { .logits = logits };
    ASSERT_EQ_INT(dsd_model_forward(m, kv, &b, 1, &out, &err), -EINVAL);
    ASSERT_TRUE(strstr(err.msg, "outside the vocabulary") != NULL);
    ids[1] = 7;
    b.pos0 = 63;                        /* position 64 has no page */
    ASSERT_EQ_INT(dsd_model_forward(m, kv, &b, 1, &out, &err), -EINVAL);
    ASSERT_TRUE(strstr(err.msg, "KV pages") != NULL);
    ASSERT_EQ_INT(dsd_model_forward(m, kv, &b, 0, &out, &err), -EINVAL);
    /* the pool runs dry: -ENOSPC, the sequence keeps what it had */
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq, 64 * 10), -ENOSPC);
    ASSERT_EQ_INT(seq.n_pages, 1);
    dsd_kv_seq_release(kv, &seq);
    ASSERT_EQ_INT(dsd_kv_cache_free_pages(kv), 2);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    free(logits);
    dsd_model_free(m);
}

/* One greedy token of a one-token prompt, sampled on the backend: its result. */
static struct dsd_sample_result sample_one(struct dsd_model *m)
{
    struct dsd_sample_result res = { .token = -1, .status = -1 };
    struct dsd_err err = {{0}};
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 2, &err);
    struct dsd_kv_seq seq = {0};
    ASSERT_TRUE(kv != NULL);
    if (!kv)
        return res;
    ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq, 1), 0);
    int32_t tok = 5;
    const struct dsd_sample_row row = { .temperature = 0.0f, .top_p = 1.0f, .repetition_penalty = 1.0f,
                                        .pen_slot = -1, .n_top = -1 };
    struct dsd_batch_seq b = { .tokens = &tok, .n_tokens = 1, .kv = &seq };
    struct dsd_forward_out out = { .sample = &row, .samples = &res };
    ASSERT_EQ_INT(dsd_model_forward(m, kv, &b, 1, &out, &err), 0);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    return res;
}

/* A checkpoint the loader takes (it checks shapes, dtypes and scales, not every weight byte)
 * whose attention output weight is all NaN bytes: its logits are not numbers, and the sample
 * says so (DSD_SAMPLE_NONFINITE: the engine ends such a request with an error) where the same
 * step on the good checkpoint gives DSD_SAMPLE_OK. */
TEST(non_finite_logits_are_flagged_at_sampling)
{
    struct dsd_err err = {{0}};
    int rc;
    struct dsd_model *good = load(g_tiny, &err, &rc);
    ASSERT_TRUE(good != NULL);
    if (!good)
        return;
    struct dsd_sample_result r = sample_one(good);
    ASSERT_EQ_INT(r.status, DSD_SAMPLE_OK);
    dsd_model_free(good);
    struct dsd_model *bad = load(variant("nanweight", "model.layers.0.self_attn.o_proj.weight", "fp8_nan", true),
                                 &err, &rc);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_TRUE(bad != NULL);
    if (!bad)
        return;
    r = sample_one(bad);
    ASSERT_EQ_INT(r.status, DSD_SAMPLE_NONFINITE);
    dsd_model_free(bad);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_loader TINY_DIR SHARDED_DIR\n");
        return 2;
    }
    g_tiny = argv[1];
    g_sharded = argv[2];
    snprintf(g_tmp, sizeof g_tmp, "/tmp/dsd_test_loader_XXXXXX");
    if (!mkdtemp(g_tmp))
        return 1;
    RUN(good_single_file_and_sharded);
    RUN(each_bad_tensor_is_named);
    RUN(unquantized_linear_weights_are_accepted);
    RUN(bad_directories);
    RUN(forward_rejects_bad_requests);
    RUN(non_finite_logits_are_flagged_at_sampling);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmp);
    return test_report();
}
