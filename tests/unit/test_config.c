/* config.json parsing (daemon/model/config.c), the tensor list (weights.c) and the
 * YaRN/softmax constants against docs/MODEL.md's listed values. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "index_cache.h"
#include "test.h"
#include "weights.h"

/* deepseek-ai/DeepSeek-V3.2 config.json as published (docs/MODEL.md §1). */
static const char official[] =
    "{\"architectures\": [\"DeepseekV32ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 0, \"eos_token_id\": 1, \"ep_size\": 1, \"first_k_dense_replace\": 3,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 7168, \"index_head_dim\": 128, \"index_n_heads\": 64,"
    " \"index_topk\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 18432, \"kv_lora_rank\": 512,"
    " \"max_position_embeddings\": 163840, \"model_type\": \"deepseek_v32\", \"moe_intermediate_size\": 2048,"
    " \"moe_layer_freq\": 1, \"n_group\": 8, \"n_routed_experts\": 256, \"n_shared_experts\": 1,"
    " \"norm_topk_prob\": true, \"num_attention_heads\": 128, \"num_experts_per_tok\": 8,"
    " \"num_hidden_layers\": 61, \"num_key_value_heads\": 128, \"num_nextn_predict_layers\": 1,"
    " \"q_lora_rank\": 1536, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64,"
    " \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": \"fp8\","
    " \"scale_fmt\": \"ue8m0\", \"weight_block_size\": [128, 128]}, \"rms_norm_eps\": 1e-06,"
    " \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 1.0,"
    " \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"},"
    " \"rope_theta\": 10000, \"routed_scaling_factor\": 2.5, \"scoring_func\": \"sigmoid\","
    " \"tie_word_embeddings\": false, \"topk_group\": 4, \"topk_method\": \"noaux_tc\","
    " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.44.2\", \"use_cache\": true,"
    " \"v_head_dim\": 128, \"vocab_size\": 129280}";

/* The official text with `from` replaced by `to` (one occurrence, which must exist). */
static char *edit(const char *from, const char *to)
{
    const char *at = strstr(official, from);
    if (!at) {
        fprintf(stderr, "test bug: \"%s\" not in the config\n", from);
        abort();
    }
    size_t n = strlen(official) + strlen(to) + 1;
    char *s = malloc(n);
    snprintf(s, n, "%.*s%s%s", (int)(at - official), official, to, at + strlen(from));
    return s;
}

static int parse(const char *text, struct dsd_model_config *c, struct dsd_err *e)
{
    return dsd_model_config_parse(text, strlen(text), "config.json", c, e);
}

/* Parsing must fail with -EINVAL and a message containing `needle`. */
static void expect_error(const char *from, const char *to, const char *needle)
{
    char *t = edit(from, to);
    struct dsd_model_config c;
    struct dsd_err e = {{0}};
    int rc = parse(t, &c, &e);
    ASSERT_EQ_INT(rc, -EINVAL);
    if (!strstr(e.msg, needle))
        TEST_FAIL_AT("message \"%s\" does not mention \"%s\"", e.msg, needle);
    free(t);
}

TEST(official_v32_config)
{
    struct dsd_model_config c;
    struct dsd_err e = {{0}};
    ASSERT_EQ_INT(parse(official, &c, &e), 0);
    ASSERT_EQ_STR(c.architecture, "DeepseekV32ForCausalLM");
    ASSERT_EQ_INT(c.vocab_size, 129280);
    ASSERT_EQ_INT(c.hidden_size, 7168);
    ASSERT_EQ_INT(c.num_hidden_layers, 61);
    ASSERT_EQ_INT(c.num_nextn_predict_layers, 1);
    ASSERT_EQ_INT(c.first_k_dense_replace, 3);
    ASSERT_EQ_INT(c.n_routed_experts, 256);
    ASSERT_EQ_INT(c.topk_group, 4);
    ASSERT_EQ_INT(c.index_topk, 2048);
    ASSERT_EQ_INT(c.rope.type, DSD_ROPE_YARN);
    ASSERT_NEAR(c.rope.factor, 40.0, 0, 0);
    ASSERT_TRUE(c.fp8_weights && c.act_scale_ue8m0);
    ASSERT_EQ_INT(c.eos_token_id, 1);
    /* docs/MODEL.md §3.5: softmax scale 0.1352337788608801; attention factor 1 */
    ASSERT_NEAR(dsd_cfg_softmax_scale(&c), 0.1352337788608801, 1e-15, 0);
    ASSERT_NEAR(dsd_cfg_rope_attention_factor(&c), 1.0, 0, 0);
}

TEST(yarn_frequencies_match_model_md)
{
    struct dsd_model_config c;
    struct dsd_err e;
    ASSERT_EQ_INT(parse(official, &c, &e), 0);
    float f[32];
    dsd_cfg_rope_inv_freq(&c, f);
    /* docs/MODEL.md §3.4: i=0 -> 1.0, i=10 -> 0.0562341, i=11 -> 0.0390069, i=23 -> 3.33380e-5,
     * i=31 -> 3.33380e-6; i <= 10 unchanged, i >= 23 divided by 40. */
    ASSERT_NEAR(f[0], 1.0, 0, 1e-7);
    ASSERT_NEAR(f[10], 0.0562341, 0, 1e-5);
    ASSERT_NEAR(f[11], 0.0390069, 0, 1e-5);
    ASSERT_NEAR(f[23], 3.33380e-5, 0, 1e-5);
    ASSERT_NEAR(f[31], 3.33380e-6, 0, 1e-5);
    for (int i = 0; i <= 10; i++)
        ASSERT_NEAR(f[i], pow(10000.0, -2.0 * i / 64), 0, 1e-6);
    for (int i = 23; i < 32; i++)
        ASSERT_NEAR(f[i], pow(10000.0, -2.0 * i / 64) / 40, 0, 1e-6);
    for (int i = 11; i < 23; i++)                           /* the ramp blends monotonically */
        ASSERT_TRUE(f[i] < f[i - 1]);
    /* Without scaling: the plain RoPE frequencies, softmax scale 192^-0.5. */
    char *t = edit("\"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 1.0,"
                   " \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"}",
                   "\"rope_scaling\": null");
    ASSERT_EQ_INT(parse(t, &c, &e), 0);
    dsd_cfg_rope_inv_freq(&c, f);
    ASSERT_NEAR(f[31], pow(10000.0, -62.0 / 64), 0, 1e-6);
    ASSERT_NEAR(dsd_cfg_softmax_scale(&c), 1 / sqrt(192.0), 1e-15, 0);
    free(t);
}

TEST(transformers5_style_config_is_accepted)
{
    /* transformers >= 5 writes rope_parameters (with rope_theta inside) and omits the fields its
     * DeepseekV32Config does not know. */
    char *t = edit("\"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 1.0,"
                   " \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"},"
                   " \"rope_theta\": 10000,",
                   "\"rope_parameters\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40.0, \"mscale\": 1.0,"
                   " \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096, \"rope_theta\": 10000.0,"
                   " \"rope_type\": \"yarn\"},");
    char *u = malloc(strlen(t) + 1);
    /* drop the quantization_config: an unquantized (BF16) export */
    const char *q0 = strstr(t, " \"quantization_config\"");
    const char *q1 = strstr(q0, "]}, ") + 3;
    snprintf(u, strlen(t) + 1, "%.*s%s", (int)(q0 - t), t, q1);
    struct dsd_model_config c;
    struct dsd_err e = {{0}};
    ASSERT_EQ_INT(parse(u, &c, &e), 0);
    ASSERT_EQ_INT(c.rope.type, DSD_ROPE_YARN);
    ASSERT_NEAR(c.rope.theta, 10000.0, 0, 0);
    ASSERT_TRUE(!c.fp8_weights);
    ASSERT_NEAR(dsd_cfg_softmax_scale(&c), 0.1352337788608801, 1e-15, 0);
    free(u);
    free(t);
}

TEST(v3_architecture_needs_the_indexer_fields)
{
    char *t = edit("DeepseekV32ForCausalLM", "DeepseekV3ForCausalLM");
    struct dsd_model_config c;
    struct dsd_err e;
    ASSERT_EQ_INT(parse(t, &c, &e), 0);                     /* index fields present: accepted */
    free(t);
    /* V3 without index_* fields: rejected with a clear reason. */
    char *u = edit("\"index_head_dim\": 128, \"index_n_heads\": 64, \"index_topk\": 2048,", "");
    char *v = malloc(strlen(u) + 8);
    const char *at = strstr(u, "DeepseekV32ForCausalLM");
    snprintf(v, strlen(u) + 8, "%.*sDeepseekV3ForCausalLM%s", (int)(at - u), u, at + strlen("DeepseekV32ForCausalLM"));
    struct dsd_err e2 = {{0}};
    ASSERT_EQ_INT(parse(v, &c, &e2), -EINVAL);
    ASSERT_TRUE(strstr(e2.msg, "V3/R1") != NULL);
    free(u);
    free(v);
}

TEST(each_bad_field_is_named)
{
    expect_error("\"index_topk\": 2048, ", "", "\"index_topk\" is missing");
    expect_error("\"hidden_size\": 7168", "\"hidden_size\": \"7168\"", "\"hidden_size\" must be an integer");
    expect_error("\"hidden_size\": 7168", "\"hidden_size\": 7100", "hidden_size (7100) must be a multiple of 128");
    expect_error("\"num_hidden_layers\": 61", "\"num_hidden_layers\": -1", "\"num_hidden_layers\" = -1 is out of range");
    expect_error("\"scoring_func\": \"sigmoid\"", "\"scoring_func\": \"softmax\"", "\"scoring_func\" = \"softmax\" is not supported");
    expect_error("\"topk_method\": \"noaux_tc\"", "\"topk_method\": \"greedy\"", "topk_method");
    expect_error("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act");
    expect_error("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true", "tie_word_embeddings");
    expect_error("\"n_group\": 8", "\"n_group\": 7", "multiple of n_group");
    expect_error("\"topk_group\": 4", "\"topk_group\": 9", "topk_group (9) exceeds n_group");
    expect_error("\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 200", "num_experts_per_tok");
    expect_error("\"index_head_dim\": 128", "\"index_head_dim\": 192", "index_head_dim (192) must be a power of two");
    expect_error("\"weight_block_size\": [128, 128]", "\"weight_block_size\": [64, 64]", "weight_block_size");
    expect_error("\"quant_method\": \"fp8\"", "\"quant_method\": \"awq\"", "quant_method");
    expect_error("\"type\": \"yarn\"", "\"type\": \"longrope\"", "not supported");
    expect_error("\"factor\": 40", "\"factor\": \"x\"", "\"factor\" must be a number");
    expect_error("\"architectures\": [\"DeepseekV32ForCausalLM\"]", "\"architectures\": [\"LlamaForCausalLM\"]",
                 "LlamaForCausalLM");
    expect_error("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 0", "rms_norm_eps");
    expect_error("\"vocab_size\": 129280}", "\"vocab_size\": 129280,}", "not valid JSON");
    expect_error("\"vocab_size\": 129280}", "\"vocab_size\": 129280, \"vocab_size\": 5}", "not valid JSON");
    expect_error("\"eos_token_id\": 1", "\"eos_token_id\": 999999", "below vocab_size");
}

TEST(config_save_round_trips)
{
    struct dsd_model_config c, back;
    struct dsd_err e = {{0}};
    ASSERT_EQ_INT(parse(official, &c, &e), 0);
    char path[] = "/tmp/dsd_test_config_XXXXXX";
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ_INT(dsd_model_config_save(&c, path, &e), 0);
    ASSERT_EQ_INT(dsd_model_config_load(path, &back, &e), 0);
    ASSERT_TRUE(memcmp(&c, &back, sizeof c) == 0);
    /* IndexCache's keys are written when set (a frequency, then a pattern) */
    c.index_topk_freq = 3;
    ASSERT_EQ_INT(dsd_model_config_save(&c, path, &e), 0);
    ASSERT_EQ_INT(dsd_model_config_load(path, &back, &e), 0);
    ASSERT_TRUE(memcmp(&c, &back, sizeof c) == 0);
    c.index_topk_freq = 1;
    memset(c.index_topk_pattern, 'S', 61);
    c.index_topk_pattern[0] = 'F';
    ASSERT_EQ_INT(dsd_model_config_save(&c, path, &e), 0);
    ASSERT_EQ_INT(dsd_model_config_load(path, &back, &e), 0);
    ASSERT_TRUE(memcmp(&c, &back, sizeof c) == 0);
    remove(path);
    ASSERT_EQ_INT(dsd_model_config_load("/nonexistent/config.json", &back, &e), -ENOENT);
}

TEST(v32_has_exactly_the_published_tensor_count)
{
    /* docs/MODEL.md §2.7: 92,425 tensors (weights plus weight_scale_inv) in the V3.2 checkpoint. */
    struct dsd_model_config c;
    struct dsd_err e;
    ASSERT_EQ_INT(parse(official, &c, &e), 0);
    struct dsd_tensor_spec *s;
    size_t n;
    ASSERT_EQ_INT(dsd_tensor_specs(&c, NULL, &s, &n), 0);
    size_t total = n, fp8 = 0;
    for (size_t i = 0; i < n; i++)
        fp8 += s[i].official_dtype == DSD_DTYPE_F8_E4M3;
    total += fp8;
    ASSERT_EQ_INT(total, 92425);
    /* kv_a_proj is ragged: 576 rows -> 5 scale rows (the loader derives ceil(576/128)). */
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s[i].name, "model.layers.0.self_attn.kv_a_proj_with_mqa.weight")) {
            found = true;
            ASSERT_EQ_INT(s[i].shape[0], 576);
            ASSERT_EQ_INT(s[i].shape[1], 7168);
        }
    ASSERT_TRUE(found);
    free(s);
}


/* IndexCache (daemon/model/index_cache.h): absent = off; freq and pattern from config.json
 * with the same layer rule as SGLang's keys; every bad value named. */
static const char topk_key[] = "\"index_topk\": 2048,";

static char *with_index_cache(const char *keys)
{
    char to[2048];
    snprintf(to, sizeof to, "%s %s", topk_key, keys);
    return edit(topk_key, to);
}

static void plan_of(const struct dsd_model_config *c, char *out)
{
    for (int l = 0; l < c->num_hidden_layers; l++)
        out[l] = dsd_index_cache_computes(c, l) ? 'F' : 'S';
    out[c->num_hidden_layers] = '\0';
}

TEST(index_cache_from_config_json)
{
    struct dsd_model_config c;
    struct dsd_err e = {{0}};
    char plan[DSD_CFG_INDEX_PATTERN_MAX + 1];
    ASSERT_EQ_INT(parse(official, &c, &e), 0);
    ASSERT_EQ_INT(c.index_topk_freq, 1);
    ASSERT_EQ_STR(c.index_topk_pattern, "");
    ASSERT_TRUE(!dsd_index_cache_on(&c));
    ASSERT_EQ_INT(dsd_index_cache_computing_layers(&c), 61);
    ASSERT_TRUE(dsd_index_cache_computes(&c, 61));      /* the MTP layer */

    /* freq 4 over 61 layers: 0, 1, 5, 9, ..., 57 compute (16 of 61) */
    char *t = with_index_cache("\"index_topk_freq\": 4, \"index_topk_pattern\": null,");
    ASSERT_EQ_INT(parse(t, &c, &e), 0);
    free(t);
    ASSERT_EQ_INT(c.index_topk_freq, 4);
    ASSERT_EQ_INT(dsd_index_cache_computing_layers(&c), 16);
    plan_of(&c, plan);
    ASSERT_TRUE(strncmp(plan, "FFSSSFSSSF", 10) == 0);
    ASSERT_TRUE(plan[57] == 'F' && plan[58] == 'S' && plan[60] == 'S');
    ASSERT_TRUE(dsd_index_cache_computes(&c, 61));      /* MTP still computes */
    char desc[DSD_CFG_INDEX_PATTERN_MAX + 64];
    dsd_index_cache_describe(&c, desc, sizeof desc);
    ASSERT_TRUE(strncmp(desc, "on: 16 of 61 layers compute the indexer (FFSSSF", 47) == 0);
    char small[8];
    dsd_index_cache_describe(&c, small, sizeof small);  /* truncated, terminated */
    ASSERT_EQ_STR(small, "on: 16 ");

    /* freq 2: layers 0, 1, 3, 5, ... ; the SGLang offset key at its one supported value */
    t = with_index_cache("\"index_topk_freq\": 2, \"index_skip_topk_offset\": 2,");
    ASSERT_EQ_INT(parse(t, &c, &e), 0);
    free(t);
    plan_of(&c, plan);
    ASSERT_TRUE(strncmp(plan, "FFSFSFSF", 8) == 0);

    /* a pattern wins over the frequency */
    char keys[256];
    char pat[62];
    memset(pat, 'S', 61);
    pat[61] = '\0';
    pat[0] = pat[30] = 'F';
    snprintf(keys, sizeof keys, "\"index_topk_freq\": 3, \"index_topk_pattern\": \"%s\",", pat);
    t = with_index_cache(keys);
    ASSERT_EQ_INT(parse(t, &c, &e), 0);
    free(t);
    plan_of(&c, plan);
    ASSERT_EQ_STR(plan, pat);
    ASSERT_EQ_INT(dsd_index_cache_computing_layers(&c), 2);
}

TEST(index_cache_bad_values_are_named)
{
    const char *cases[][2] = {
        { "\"index_topk_freq\": 0,", "index_topk_freq\" = 0 is out of range [1," },
        { "\"index_topk_freq\": -2,", "index_topk_freq" },
        { "\"index_topk_freq\": \"4\",", "index_topk_freq\" must be an integer" },
        { "\"index_skip_topk_offset\": 3,", "index_skip_topk_offset\" = 3 is not supported" },
        { "\"index_topk_pattern\": 5,", "must be a string" },
        { "\"index_topk_pattern\": \"FFS\",", "has 3 characters; the model has 61 main layers" },
        { "\"index_topk_pattern\": \"SF\",", "must start with 'F'" },
        { "\"index_topk_pattern\": \"F1\",", "character 1 is '1'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char to[256];
        snprintf(to, sizeof to, "%s %s", topk_key, cases[i][0]);
        expect_error(topk_key, to, cases[i][1]);
    }
}

/* The daemon's keys over config.json's: either one replaces both; 0 / "" keep them. */
TEST(index_cache_daemon_keys_override_config_json)
{
    struct dsd_model_config c;
    struct dsd_err e = {{0}};
    char plan[DSD_CFG_INDEX_PATTERN_MAX + 1];
    char *t = with_index_cache("\"index_topk_freq\": 2,");
    ASSERT_EQ_INT(parse(t, &c, &e), 0);
    free(t);
    struct dsd_model_config d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 0, NULL, &e), 0);     /* keep */
    ASSERT_EQ_INT(d.index_topk_freq, 2);
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 0, "", &e), 0);       /* keep */
    ASSERT_EQ_INT(d.index_topk_freq, 2);
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 1, "", &e), 0);       /* the daemon turns it off */
    ASSERT_TRUE(!dsd_index_cache_on(&d));
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 5, NULL, &e), 0);
    plan_of(&d, plan);
    ASSERT_TRUE(strncmp(plan, "FFSSSSFSSSSF", 12) == 0);
    /* a daemon pattern replaces config.json's frequency */
    char pat[62];
    memset(pat, 'F', 61);
    pat[61] = '\0';
    pat[7] = 'S';
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 0, pat, &e), 0);
    ASSERT_EQ_INT(d.index_topk_freq, 1);
    plan_of(&d, plan);
    ASSERT_EQ_STR(plan, pat);
    /* the daemon's pattern is checked against the model's layers */
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 0, "FSFS", &e), -EINVAL);
    ASSERT_TRUE(strstr(e.msg, "daemon configuration") && strstr(e.msg, "has 4 characters"));
    /* config.json's pattern is kept while the daemon sets nothing */
    memset(pat, 'S', 61);
    pat[0] = 'F';
    char keys[128];
    snprintf(keys, sizeof keys, "\"index_topk_pattern\": \"%s\",", pat);
    t = with_index_cache(keys);
    ASSERT_EQ_INT(parse(t, &c, &e), 0);
    free(t);
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 0, NULL, &e), 0);
    ASSERT_EQ_INT(dsd_index_cache_computing_layers(&d), 1);
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 1, NULL, &e), 0);     /* ... and dropped when it does */
    ASSERT_EQ_STR(d.index_topk_pattern, "");
    ASSERT_TRUE(!dsd_index_cache_on(&d));
}

/* The KV cache's model identity changes with the plan, and only with the plan. */
TEST(index_cache_changes_the_kv_identity)
{
    struct dsd_model_config c;
    struct dsd_err e = {{0}};
    ASSERT_EQ_INT(parse(official, &c, &e), 0);
    const uint8_t wid[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    uint8_t off[8], f2[8], f3[8], p3[8], f2b[8];
    memcpy(off, wid, 8);
    dsd_index_cache_mix_id(&c, off, 8);
    ASSERT_TRUE(memcmp(off, wid, 8) == 0);              /* off: existing caches stay valid */
    struct dsd_model_config d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 2, NULL, &e), 0);
    memcpy(f2, wid, 8);
    dsd_index_cache_mix_id(&d, f2, 8);
    ASSERT_TRUE(memcmp(f2, wid, 8) != 0);
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 3, NULL, &e), 0);
    memcpy(f3, wid, 8);
    dsd_index_cache_mix_id(&d, f3, 8);
    ASSERT_TRUE(memcmp(f3, f2, 8) != 0);
    /* the same plan written as a pattern is the same KV content: the same identity */
    char pat[62];
    for (int l = 0; l < 61; l++)
        pat[l] = dsd_index_cache_computes(&d, l) ? 'F' : 'S';
    pat[61] = '\0';
    struct dsd_model_config q = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&q, 0, pat, &e), 0);
    memcpy(p3, wid, 8);
    dsd_index_cache_mix_id(&q, p3, 8);
    ASSERT_TRUE(memcmp(p3, f3, 8) == 0);
    /* other weights under the same plan: another identity */
    d = c;
    ASSERT_EQ_INT(dsd_index_cache_apply(&d, 2, NULL, &e), 0);
    const uint8_t wid2[8] = { 9, 2, 3, 4, 5, 6, 7, 8 };
    memcpy(f2b, wid2, 8);
    dsd_index_cache_mix_id(&d, f2b, 8);
    ASSERT_TRUE(memcmp(f2b, f2, 8) != 0);
}

int main(void)
{
    RUN(official_v32_config);
    RUN(yarn_frequencies_match_model_md);
    RUN(transformers5_style_config_is_accepted);
    RUN(v3_architecture_needs_the_indexer_fields);
    RUN(each_bad_field_is_named);
    RUN(config_save_round_trips);
    RUN(v32_has_exactly_the_published_tensor_count);
    RUN(index_cache_from_config_json);
    RUN(index_cache_bad_values_are_named);
    RUN(index_cache_daemon_keys_override_config_json);
    RUN(index_cache_changes_the_kv_identity);
    return test_report();
}
