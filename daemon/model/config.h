/*
 * daemon/model/config.h: config.json of a DeepSeek V3.2 checkpoint.
 *
 *   struct dsd_model_config cfg;
 *   struct dsd_err err;
 *   if (dsd_model_config_load("/models/DeepSeek-V3.2/config.json", &cfg, &err) < 0)
 *       die(err.msg);          // e.g. "config.json: field \"index_topk\" is missing"
 *
 * Accepted: architectures containing "DeepseekV32ForCausalLM", or "DeepseekV3ForCausalLM"
 * when the DSA indexer fields (index_topk, index_n_heads, index_head_dim) are present.
 * Field rules (docs/MODEL_LOADING.md has the table):
 *   - every dimension, count and constant the forward pass uses is required; a missing one
 *     is an error naming it; wrong JSON types and out-of-range values are errors naming it;
 *   - fields that transformers' own DeepseekV32Config does not write (num_nextn_predict_layers,
 *     moe_layer_freq, topk_method, scoring_func, quantization_config) may be absent and then
 *     take the V3.2 meaning (0 MTP layers, 1, noaux_tc, sigmoid, unquantized weights); when
 *     present they must have a supported value;
 *   - RoPE scaling comes from "rope_scaling" (the official file) or "rope_parameters"
 *     (transformers >= 5); rope_theta from the top level or from rope_parameters;
 *   - index_topk_freq and index_topk_pattern (IndexCache, daemon/model/index_cache.h) may be
 *     absent (off); when present they are checked against num_hidden_layers;
 *   - unknown extra fields are ignored (hub configs carry many).
 * Dimensions are cross-checked (multiples of 128 where FP8 activation groups need them,
 * expert groups, indexer head dim a power of two, ...): a violation names the fields.
 */
#ifndef DSD_MODEL_CONFIG_H
#define DSD_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

/* The longest index_topk_pattern: one character per main layer (num_hidden_layers <= 1024). */
#define DSD_CFG_INDEX_PATTERN_MAX 1024

enum dsd_rope_type { DSD_ROPE_DEFAULT = 0, DSD_ROPE_YARN };

struct dsd_rope_config {
    enum dsd_rope_type type;
    double theta;
    double factor;                  /* yarn only */
    int64_t original_max_position;  /* yarn only */
    double beta_fast, beta_slow;    /* yarn only */
    double mscale, mscale_all_dim;  /* yarn only; 0 = absent */
};

struct dsd_model_config {
    char architecture[64];          /* as found in "architectures" */
    int64_t vocab_size;
    int64_t hidden_size;
    int64_t intermediate_size;      /* dense MLP */
    int64_t moe_intermediate_size;  /* per routed and per shared expert */
    int num_hidden_layers;          /* main layers 0..n-1 */
    int num_nextn_predict_layers;   /* MTP layers, ids n..n+k-1 (V3.2: 1) */
    int first_k_dense_replace;      /* layers below this use the dense MLP */
    int n_routed_experts;
    int n_shared_experts;
    int num_experts_per_tok;
    int n_group;
    int topk_group;
    bool norm_topk_prob;
    double routed_scaling_factor;
    int num_attention_heads;
    int q_lora_rank;
    int kv_lora_rank;
    int qk_nope_head_dim;
    int qk_rope_head_dim;
    int v_head_dim;
    int index_n_heads;
    int index_head_dim;
    int index_topk;
    int64_t max_position_embeddings;
    double rms_norm_eps;
    struct dsd_rope_config rope;
    int64_t bos_token_id;           /* -1 when absent */
    int64_t eos_token_id;           /* -1 when absent */
    bool fp8_weights;               /* quantization_config present: FP8 e4m3 128x128 blocks */
    bool act_scale_ue8m0;           /* quantization_config.scale_fmt == "ue8m0" */
    /* IndexCache (docs/INDEXCACHE.md, daemon/model/index_cache.h): which main layers compute
     * the DSA indexer and which reuse the top-k of the computing layer before them. Optional
     * in config.json; 1 and "" (every layer computes) when absent. */
    int index_topk_freq;            /* >= 1 */
    char index_topk_pattern[DSD_CFG_INDEX_PATTERN_MAX + 1];    /* 'F'/'S' per main layer, or "" */
};

/* Loads and validates path. Returns 0; -ENOENT/-EACCES (cannot read), -EINVAL (malformed
 * or unsupported, err names the field), -ENOMEM. */
int dsd_model_config_load(const char *path, struct dsd_model_config *cfg, struct dsd_err *err);
/* Same, from JSON text (len bytes); name is used in messages. */
int dsd_model_config_parse(const char *json, size_t len, const char *name,
                           struct dsd_model_config *cfg, struct dsd_err *err);

/* Derived quantities, one definition each. */
static inline int dsd_cfg_qk_head_dim(const struct dsd_model_config *c)
{
    return c->qk_nope_head_dim + c->qk_rope_head_dim;
}
static inline bool dsd_cfg_layer_is_moe(const struct dsd_model_config *c, int layer)
{
    return layer >= c->first_k_dense_replace;
}
/* Layers the engine runs: main layers plus MTP layers. */
static inline int dsd_cfg_total_layers(const struct dsd_model_config *c)
{
    return c->num_hidden_layers + c->num_nextn_predict_layers;
}
/* MLA softmax scale: qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN. */
double dsd_cfg_softmax_scale(const struct dsd_model_config *c);
/* YaRN cos/sin multiplier ("attention factor"); 1.0 for V3.2. */
double dsd_cfg_rope_attention_factor(const struct dsd_model_config *c);
/* The qk_rope_head_dim/2 inverse frequencies (YaRN-corrected when configured), fp32 as the
 * reference computes them. out must hold qk_rope_head_dim/2 floats. */
void dsd_cfg_rope_inv_freq(const struct dsd_model_config *c, float *out);

/* Writes cfg as a config.json in the official DeepSeek V3.2 layout (every field, the
 * quantization_config when fp8_weights, rope_scaling). Returns 0 or a negative errno. */
int dsd_model_config_save(const struct dsd_model_config *cfg, const char *path, struct dsd_err *err);

#endif
