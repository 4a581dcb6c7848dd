/* config.json parsing and validation (contract in config.h). */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_cache.h"

/* Generous bounds: they exist so size arithmetic can never overflow, not to second-guess
 * model designers. */
#define DIM_MAX (1 << 20)
#define COUNT_MAX (1 << 16)

struct parse_ctx {
    const char *name;
    json_t *root;
    struct dsd_err *err;
};

static int field_missing(struct parse_ctx *p, const char *key)
{
    return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" is missing (required for DeepSeek V3.2)",
                    p->name, key);
}

/* Integer field within [lo, hi]; required unless dflt_ok. */
static int get_int(struct parse_ctx *p, json_t *obj, const char *key, int64_t lo, int64_t hi,
                   bool required, int64_t dflt, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return field_missing(p, key);
        *out = dflt;
        return 0;
    }
    if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v)) {
        double d = json_real_value(v);
        if (d < (double)lo || d > (double)hi)
            return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" = %g is out of range [%lld, %lld]",
                            p->name, key, d, (long long)lo, (long long)hi);
        *out = (int64_t)d;
        return 0;
    }
    if (!json_is_integer(v))
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" must be an integer", p->name, key);
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" = %lld is out of range [%lld, %lld]",
                        p->name, key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

static int get_i32(struct parse_ctx *p, json_t *obj, const char *key, int64_t lo, int64_t hi,
                   bool required, int64_t dflt, int *out)
{
    int64_t v;
    int rc = get_int(p, obj, key, lo, hi, required, dflt, &v);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

static int get_num(struct parse_ctx *p, json_t *obj, const char *key, double lo, double hi,
                   bool required, double dflt, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return field_missing(p, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v))
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" must be a number", p->name, key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" = %g is out of range [%g, %g]",
                        p->name, key, x, lo, hi);
    *out = x;
    return 0;
}

static int get_bool(struct parse_ctx *p, json_t *obj, const char *key, bool required, bool dflt,
                    bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return field_missing(p, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" must be true or false", p->name, key);
    *out = json_is_true(v);
    return 0;
}

/* Optional string field that, when present, must equal one supported value. */
static int expect_str(struct parse_ctx *p, json_t *obj, const char *key, const char *supported)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" must be a string", p->name, key);
    if (strcmp(json_string_value(v), supported) != 0)
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" = \"%s\" is not supported (DeepSeek V3.2 uses \"%s\")",
                        p->name, key, json_string_value(v), supported);
    return 0;
}

/* Optional boolean field that, when present, must be false. */
static int expect_false(struct parse_ctx *p, json_t *obj, const char *key)
{
    bool b = false;
    int rc = get_bool(p, obj, key, false, false, &b);
    if (rc == 0 && b)
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" = true is not supported (DeepSeek V3.2 uses false)",
                        p->name, key);
    return rc;
}

static int parse_architecture(struct parse_ctx *p, struct dsd_model_config *c)
{
    json_t *arch = json_object_get(p->root, "architectures");
    if (!arch)
        return field_missing(p, "architectures");
    if (!json_is_array(arch) || json_array_size(arch) == 0)
        return dsd_errf(p->err, -EINVAL, "%s: field \"architectures\" must be a non-empty array of strings",
                        p->name);
    bool has_index = json_object_get(p->root, "index_topk") != NULL;
    size_t i;
    json_t *a;
    json_array_foreach(arch, i, a) {
        if (!json_is_string(a))
            return dsd_errf(p->err, -EINVAL, "%s: \"architectures\"[%zu] must be a string", p->name, i);
        const char *s = json_string_value(a);
        if (strcmp(s, "DeepseekV32ForCausalLM") == 0 ||
            (strcmp(s, "DeepseekV3ForCausalLM") == 0 && has_index)) {
            snprintf(c->architecture, sizeof c->architecture, "%s", s);
            return 0;
        }
        if (strcmp(s, "DeepseekV3ForCausalLM") == 0)
            return dsd_errf(p->err, -EINVAL,
                            "%s: DeepseekV3ForCausalLM without the DSA indexer fields (index_topk, "
                            "index_n_heads, index_head_dim) is DeepSeek V3/R1, not V3.2; not supported",
                            p->name);
    }
    return dsd_errf(p->err, -EINVAL,
                    "%s: \"architectures\" names \"%s\"; supported: DeepseekV32ForCausalLM "
                    "(or DeepseekV3ForCausalLM with index_* fields)",
                    p->name, json_string_value(json_array_get(arch, 0)) ? json_string_value(json_array_get(arch, 0)) : "?");
}

static int parse_rope(struct parse_ctx *p, struct dsd_model_config *c)
{
    struct dsd_rope_config *r = &c->rope;
    json_t *rs = json_object_get(p->root, "rope_scaling");
    const char *rs_name = "rope_scaling";
    json_t *rp = json_object_get(p->root, "rope_parameters");
    if ((!rs || json_is_null(rs)) && rp && !json_is_null(rp)) {
        rs = rp;
        rs_name = "rope_parameters";
    }
    if (rs && !json_is_null(rs) && !json_is_object(rs))
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" must be an object or null", p->name, rs_name);

    /* rope_theta: top level (official) or inside rope_parameters (transformers 5). */
    int rc;
    if (json_object_get(p->root, "rope_theta"))
        rc = get_num(p, p->root, "rope_theta", 1.0, 1e12, true, 0, &r->theta);
    else if (rp && json_is_object(rp) && json_object_get(rp, "rope_theta"))
        rc = get_num(p, rp, "rope_theta", 1.0, 1e12, true, 0, &r->theta);
    else
        rc = field_missing(p, "rope_theta");
    if (rc)
        return rc;

    r->type = DSD_ROPE_DEFAULT;
    if (!rs || json_is_null(rs))
        return 0;
    json_t *t = json_object_get(rs, "type");
    if (!t)
        t = json_object_get(rs, "rope_type");
    if (!t || !json_is_string(t))
        return dsd_errf(p->err, -EINVAL, "%s: \"%s\" needs a string \"type\" (or \"rope_type\")",
                        p->name, rs_name);
    const char *ts = json_string_value(t);
    if (strcmp(ts, "default") == 0)
        return 0;
    if (strcmp(ts, "yarn") != 0)
        return dsd_errf(p->err, -EINVAL, "%s: \"%s\".type = \"%s\" is not supported (yarn or default)",
                        p->name, rs_name, ts);
    r->type = DSD_ROPE_YARN;
    struct parse_ctx sub = { .name = p->name, .root = rs, .err = p->err };
    if ((rc = get_num(&sub, rs, "factor", 1.0, 1e6, true, 0, &r->factor)) ||
        (rc = get_int(&sub, rs, "original_max_position_embeddings", 1, INT64_C(1) << 40, true, 0,
                      &r->original_max_position)) ||
        (rc = get_num(&sub, rs, "beta_fast", 0.0, 1e6, false, 32.0, &r->beta_fast)) ||
        (rc = get_num(&sub, rs, "beta_slow", 0.0, 1e6, false, 1.0, &r->beta_slow)) ||
        (rc = get_num(&sub, rs, "mscale", 0.0, 1e6, false, 1.0, &r->mscale)) ||
        (rc = get_num(&sub, rs, "mscale_all_dim", 0.0, 1e6, false, 0.0, &r->mscale_all_dim)))
        return dsd_err_prefix(p->err, rc, "in \"%s\"", rs_name);
    if (json_object_get(rs, "attention_factor") && !json_is_null(json_object_get(rs, "attention_factor")))
        return dsd_errf(p->err, -EINVAL, "%s: \"%s\".attention_factor is not supported", p->name, rs_name);
    return 0;
}

static int parse_quantization(struct parse_ctx *p, struct dsd_model_config *c)
{
    json_t *q = json_object_get(p->root, "quantization_config");
    c->fp8_weights = false;
    c->act_scale_ue8m0 = false;
    if (!q || json_is_null(q))
        return 0;
    if (!json_is_object(q))
        return dsd_errf(p->err, -EINVAL, "%s: field \"quantization_config\" must be an object", p->name);
    struct parse_ctx sub = { .name = p->name, .root = q, .err = p->err };
    int rc;
    json_t *m = json_object_get(q, "quant_method");
    if (!m)
        return dsd_errf(p->err, -EINVAL, "%s: quantization_config.quant_method is missing", p->name);
    if ((rc = expect_str(&sub, q, "quant_method", "fp8")) || (rc = expect_str(&sub, q, "fmt", "e4m3")) ||
        (rc = expect_str(&sub, q, "activation_scheme", "dynamic")))
        return dsd_err_prefix(p->err, rc, "in quantization_config");
    json_t *bs = json_object_get(q, "weight_block_size");
    if (!bs || !json_is_array(bs) || json_array_size(bs) != 2 ||
        json_integer_value(json_array_get(bs, 0)) != 128 || json_integer_value(json_array_get(bs, 1)) != 128)
        return dsd_errf(p->err, -EINVAL, "%s: quantization_config.weight_block_size must be [128, 128]", p->name);
    json_t *sf = json_object_get(q, "scale_fmt");
    if (sf && !json_is_null(sf)) {
        if (!json_is_string(sf) || strcmp(json_string_value(sf), "ue8m0") != 0)
            return dsd_errf(p->err, -EINVAL, "%s: quantization_config.scale_fmt must be \"ue8m0\" or null", p->name);
        c->act_scale_ue8m0 = true;
    }
    c->fp8_weights = true;
    return 0;
}

static int parse_token_id(struct parse_ctx *p, const char *key, int64_t *out)
{
    json_t *v = json_object_get(p->root, key);
    *out = -1;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_array(v)) /* transformers allows a list of eos ids: the first is the canonical one */
        v = json_array_get(v, 0);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return dsd_errf(p->err, -EINVAL, "%s: field \"%s\" must be a non-negative integer", p->name, key);
    *out = json_integer_value(v);
    return 0;
}

/* Cross-field rules: what the kernels and the checkpoint format need. */
static int validate(struct parse_ctx *p, const struct dsd_model_config *c)
{
#define NEED(cond, ...)                                                      \
    do {                                                                     \
        if (!(cond))                                                         \
            return dsd_errf(p->err, -EINVAL, __VA_ARGS__);                   \
    } while (0)
    const char *n = p->name;
    NEED(c->hidden_size % 128 == 0, "%s: hidden_size (%lld) must be a multiple of 128 (1x128 FP8 activation groups)",
         n, (long long)c->hidden_size);
    NEED(c->q_lora_rank % 128 == 0, "%s: q_lora_rank (%d) must be a multiple of 128", n, c->q_lora_rank);
    NEED(c->kv_lora_rank % 128 == 0, "%s: kv_lora_rank (%d) must be a multiple of 128 (FP8 KV tiles)", n,
         c->kv_lora_rank);
    NEED((int64_t)c->num_attention_heads * c->v_head_dim % 128 == 0,
         "%s: num_attention_heads * v_head_dim (%lld) must be a multiple of 128 (o_proj input)", n,
         (long long)c->num_attention_heads * c->v_head_dim);
    NEED(c->intermediate_size % 128 == 0, "%s: intermediate_size must be a multiple of 128", n);
    NEED(c->moe_intermediate_size % 128 == 0, "%s: moe_intermediate_size must be a multiple of 128", n);
    NEED(c->qk_rope_head_dim % 2 == 0, "%s: qk_rope_head_dim (%d) must be even", n, c->qk_rope_head_dim);
    NEED((c->index_head_dim & (c->index_head_dim - 1)) == 0 && c->index_head_dim % 128 == 0,
         "%s: index_head_dim (%d) must be a power of two and a multiple of 128 (Hadamard, FP8 groups)", n,
         c->index_head_dim);
    NEED(c->qk_rope_head_dim <= c->index_head_dim,
         "%s: qk_rope_head_dim (%d) must not exceed index_head_dim (%d)", n, c->qk_rope_head_dim, c->index_head_dim);
    NEED(c->first_k_dense_replace <= c->num_hidden_layers,
         "%s: first_k_dense_replace (%d) exceeds num_hidden_layers (%d)", n, c->first_k_dense_replace,
         c->num_hidden_layers);
    NEED(c->n_routed_experts % c->n_group == 0,
         "%s: n_routed_experts (%d) must be a multiple of n_group (%d)", n, c->n_routed_experts, c->n_group);
    int per_group = c->n_routed_experts / c->n_group;
    NEED(per_group >= 2, "%s: each expert group needs at least 2 experts (group score = top-2 sum); have %d",
         n, per_group);
    NEED(c->topk_group <= c->n_group, "%s: topk_group (%d) exceeds n_group (%d)", n, c->topk_group, c->n_group);
    NEED(c->num_experts_per_tok <= c->topk_group * per_group,
         "%s: num_experts_per_tok (%d) exceeds the experts of topk_group groups (%d)", n,
         c->num_experts_per_tok, c->topk_group * per_group);
    NEED(c->bos_token_id < c->vocab_size && c->eos_token_id < c->vocab_size,
         "%s: bos_token_id/eos_token_id must be below vocab_size", n);
    if (c->rope.type == DSD_ROPE_YARN)
        NEED(c->rope.beta_fast > 0 && c->rope.beta_slow > 0, "%s: rope beta_fast/beta_slow must be positive", n);
#undef NEED
    return 0;
}

/* IndexCache's keys (index_cache.h): optional; the pattern is a string or null. A later
 * frameworks' offset key is accepted only with the value that keeps this freq rule. */
static int parse_index_cache(struct parse_ctx *p, struct dsd_model_config *c)
{
    int64_t freq, offset;
    int rc;
    if ((rc = get_int(p, p->root, "index_topk_freq", 1, COUNT_MAX, false, 1, &freq)) ||
        (rc = get_int(p, p->root, "index_skip_topk_offset", INT32_MIN, INT32_MAX, false, 2, &offset)))
        return rc;
    if (offset != 2)
        return dsd_errf(p->err, -EINVAL,
                        "%s: field \"index_skip_topk_offset\" = %lld is not supported (only 2: layers 0 and 1 "
                        "compute the indexer, then every index_topk_freq-th; use index_topk_pattern for others)",
                        p->name, (long long)offset);
    c->index_topk_freq = (int)freq;
    json_t *v = json_object_get(p->root, "index_topk_pattern");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return dsd_errf(p->err, -EINVAL, "%s: field \"index_topk_pattern\" must be a string of 'F' and 'S'",
                            p->name);
        if (json_string_length(v) > DSD_CFG_INDEX_PATTERN_MAX)
            return dsd_errf(p->err, -EINVAL, "%s: field \"index_topk_pattern\" is longer than %d characters",
                            p->name, DSD_CFG_INDEX_PATTERN_MAX);
        snprintf(c->index_topk_pattern, sizeof c->index_topk_pattern, "%s", json_string_value(v));
    }
    return dsd_index_cache_check(c->index_topk_freq, c->index_topk_pattern, c->num_hidden_layers, p->name, p->err);
}

int dsd_model_config_parse(const char *text, size_t len, const char *name,
                           struct dsd_model_config *c, struct dsd_err *err)
{
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return dsd_errf(err, -EINVAL, "%s: not valid JSON (line %d, column %d: %s)", name, jerr.line,
                        jerr.column, jerr.text);
    struct parse_ctx p = { .name = name, .root = root, .err = err };
    int rc = 0;
    if (!json_is_object(root)) {
        rc = dsd_errf(err, -EINVAL, "%s: the top level must be a JSON object", name);
        goto out;
    }
    if ((rc = parse_architecture(&p, c)))
        goto out;
    {   /* model_type is informative: V3-typed files with index fields are accepted too */
        json_t *mt = json_object_get(root, "model_type");
        if (mt && (!json_is_string(mt) || (strcmp(json_string_value(mt), "deepseek_v32") != 0 &&
                                           strcmp(json_string_value(mt), "deepseek_v3") != 0))) {
            rc = dsd_errf(err, -EINVAL, "%s: model_type must be \"deepseek_v32\" (or \"deepseek_v3\" with index fields)",
                          name);
            goto out;
        }
    }
    double eps = 0;
    if ((rc = get_int(&p, root, "vocab_size", 1, 1 << 24, true, 0, &c->vocab_size)) ||
        (rc = get_int(&p, root, "hidden_size", 128, DIM_MAX, true, 0, &c->hidden_size)) ||
        (rc = get_int(&p, root, "intermediate_size", 128, DIM_MAX, true, 0, &c->intermediate_size)) ||
        (rc = get_int(&p, root, "moe_intermediate_size", 128, DIM_MAX, true, 0, &c->moe_intermediate_size)) ||
        (rc = get_i32(&p, root, "num_hidden_layers", 1, 1024, true, 0, &c->num_hidden_layers)) ||
        (rc = get_i32(&p, root, "num_nextn_predict_layers", 0, 8, false, 0, &c->num_nextn_predict_layers)) ||
        (rc = get_i32(&p, root, "first_k_dense_replace", 0, 1024, true, 0, &c->first_k_dense_replace)) ||
        (rc = get_i32(&p, root, "n_routed_experts", 2, COUNT_MAX, true, 0, &c->n_routed_experts)) ||
        (rc = get_i32(&p, root, "n_shared_experts", 0, 64, true, 0, &c->n_shared_experts)) ||
        (rc = get_i32(&p, root, "num_experts_per_tok", 1, 1024, true, 0, &c->num_experts_per_tok)) ||
        (rc = get_i32(&p, root, "n_group", 1, COUNT_MAX, true, 0, &c->n_group)) ||
        (rc = get_i32(&p, root, "topk_group", 1, COUNT_MAX, true, 0, &c->topk_group)) ||
        (rc = get_bool(&p, root, "norm_topk_prob", true, false, &c->norm_topk_prob)) ||
        (rc = get_num(&p, root, "routed_scaling_factor", 0.0, 1e6, true, 0, &c->routed_scaling_factor)) ||
        (rc = get_i32(&p, root, "num_attention_heads", 1, 4096, true, 0, &c->num_attention_heads)) ||
        (rc = get_i32(&p, root, "q_lora_rank", 128, DIM_MAX, true, 0, &c->q_lora_rank)) ||
        (rc = get_i32(&p, root, "kv_lora_rank", 128, DIM_MAX, true, 0, &c->kv_lora_rank)) ||
        (rc = get_i32(&p, root, "qk_nope_head_dim", 1, 4096, true, 0, &c->qk_nope_head_dim)) ||
        (rc = get_i32(&p, root, "qk_rope_head_dim", 2, 4096, true, 0, &c->qk_rope_head_dim)) ||
        (rc = get_i32(&p, root, "v_head_dim", 1, 4096, true, 0, &c->v_head_dim)) ||
        (rc = get_i32(&p, root, "index_n_heads", 1, 4096, true, 0, &c->index_n_heads)) ||
        (rc = get_i32(&p, root, "index_head_dim", 128, 4096, true, 0, &c->index_head_dim)) ||
        (rc = get_i32(&p, root, "index_topk", 1, 1 << 20, true, 0, &c->index_topk)) ||
        (rc = get_int(&p, root, "max_position_embeddings", 1, INT64_C(1) << 32, true, 0,
                      &c->max_position_embeddings)) ||
        (rc = get_num(&p, root, "rms_norm_eps", 1e-12, 0.1, true, 0, &eps)))
        goto out;
    c->rms_norm_eps = eps;
    {
        int64_t freq;
        if ((rc = get_int(&p, root, "moe_layer_freq", 1, 1, false, 1, &freq)))
            goto out;
        int64_t kvh;
        if ((rc = get_int(&p, root, "num_key_value_heads", 1, 4096, false, c->num_attention_heads, &kvh)))
            goto out;
    }
    if ((rc = expect_str(&p, root, "topk_method", "noaux_tc")) || (rc = expect_str(&p, root, "scoring_func", "sigmoid")) ||
        (rc = expect_str(&p, root, "hidden_act", "silu")) || (rc = expect_false(&p, root, "attention_bias")) ||
        (rc = expect_false(&p, root, "tie_word_embeddings")) || (rc = parse_rope(&p, c)) ||
        (rc = parse_quantization(&p, c)) || (rc = parse_token_id(&p, "bos_token_id", &c->bos_token_id)) ||
        (rc = parse_token_id(&p, "eos_token_id", &c->eos_token_id)) || (rc = validate(&p, c)) ||
        (rc = parse_index_cache(&p, c)))
        goto out;
out:
    json_decref(root);
    return rc;
}

int dsd_model_config_load(const char *path, struct dsd_model_config *cfg, struct dsd_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return dsd_errf(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= (16u << 20)) {
                free(buf);
                fclose(f);
                return dsd_errf(err, -EINVAL, "%s: larger than 16 MiB; not a config.json", path);
            }
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return dsd_errf(err, -ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int rderr = ferror(f);
    fclose(f);
    if (rderr) {
        free(buf);
        return dsd_errf(err, -EIO, "%s: read error", path);
    }
    int rc = dsd_model_config_parse(buf, len, path, cfg, err);
    free(buf);
    return rc;
}

static double yarn_mscale(double scale, double mscale)
{
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

double dsd_cfg_softmax_scale(const struct dsd_model_config *c)
{
    double s = 1.0 / sqrt((double)dsd_cfg_qk_head_dim(c));
    if (c->rope.type == DSD_ROPE_YARN && c->rope.mscale_all_dim != 0) {
        double m = yarn_mscale(c->rope.factor, c->rope.mscale_all_dim);
        s *= m * m;
    }
    return s;
}

double dsd_cfg_rope_attention_factor(const struct dsd_model_config *c)
{
    if (c->rope.type != DSD_ROPE_YARN)
        return 1.0;
    if (c->rope.mscale != 0 && c->rope.mscale_all_dim != 0)
        return yarn_mscale(c->rope.factor, c->rope.mscale) / yarn_mscale(c->rope.factor, c->rope.mscale_all_dim);
    return yarn_mscale(c->rope.factor, 1.0);
}

static double yarn_correction_dim(double rotations, int dim, double base, double max_pos)
{
    return dim * log(max_pos / (rotations * 2.0 * M_PI)) / (2.0 * log(base));
}

void dsd_cfg_rope_inv_freq(const struct dsd_model_config *c, float *out)
{
    int dim = c->qk_rope_head_dim, half = dim / 2;
    for (int i = 0; i < half; i++)
        out[i] = (float)(1.0 / pow(c->rope.theta, (2.0 * i) / dim));
    if (c->rope.type != DSD_ROPE_YARN)
        return;
    double low = floor(yarn_correction_dim(c->rope.beta_fast, dim, c->rope.theta,
                                           (double)c->rope.original_max_position));
    double high = ceil(yarn_correction_dim(c->rope.beta_slow, dim, c->rope.theta,
                                           (double)c->rope.original_max_position));
    if (low < 0)
        low = 0;
    if (high > dim - 1)
        high = dim - 1;
    if (low == high)
        high += 0.001;
    for (int i = 0; i < half; i++) {
        double ramp = (i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double f = 1.0 / pow(c->rope.theta, (2.0 * i) / dim);
        out[i] = (float)(f / c->rope.factor * ramp + f * (1.0 - ramp));
    }
}

int dsd_model_config_save(const struct dsd_model_config *c, const char *path, struct dsd_err *err)
{
    json_t *o = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string(c->architecture[0] ? c->architecture : "DeepseekV32ForCausalLM"));
    json_object_set_new(o, "architectures", arch);
    json_object_set_new(o, "attention_bias", json_false());
    json_object_set_new(o, "attention_dropout", json_real(0.0));
    json_object_set_new(o, "bos_token_id", json_integer(c->bos_token_id >= 0 ? c->bos_token_id : 0));
    json_object_set_new(o, "eos_token_id", json_integer(c->eos_token_id >= 0 ? c->eos_token_id : 1));
    json_object_set_new(o, "ep_size", json_integer(1));
    json_object_set_new(o, "first_k_dense_replace", json_integer(c->first_k_dense_replace));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(o, "index_head_dim", json_integer(c->index_head_dim));
    json_object_set_new(o, "index_n_heads", json_integer(c->index_n_heads));
    json_object_set_new(o, "index_topk", json_integer(c->index_topk));
    if (c->index_topk_freq > 1)
        json_object_set_new(o, "index_topk_freq", json_integer(c->index_topk_freq));
    if (c->index_topk_pattern[0])
        json_object_set_new(o, "index_topk_pattern", json_string(c->index_topk_pattern));
    json_object_set_new(o, "initializer_range", json_real(0.02));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(o, "kv_lora_rank", json_integer(c->kv_lora_rank));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "model_type", json_string("deepseek_v32"));
    json_object_set_new(o, "moe_intermediate_size", json_integer(c->moe_intermediate_size));
    json_object_set_new(o, "moe_layer_freq", json_integer(1));
    json_object_set_new(o, "n_group", json_integer(c->n_group));
    json_object_set_new(o, "n_routed_experts", json_integer(c->n_routed_experts));
    json_object_set_new(o, "n_shared_experts", json_integer(c->n_shared_experts));
    json_object_set_new(o, "norm_topk_prob", json_boolean(c->norm_topk_prob));
    json_object_set_new(o, "num_attention_heads", json_integer(c->num_attention_heads));
    json_object_set_new(o, "num_experts_per_tok", json_integer(c->num_experts_per_tok));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->num_hidden_layers));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->num_attention_heads));
    json_object_set_new(o, "num_nextn_predict_layers", json_integer(c->num_nextn_predict_layers));
    json_object_set_new(o, "q_lora_rank", json_integer(c->q_lora_rank));
    json_object_set_new(o, "qk_nope_head_dim", json_integer(c->qk_nope_head_dim));
    json_object_set_new(o, "qk_rope_head_dim", json_integer(c->qk_rope_head_dim));
    if (c->fp8_weights) {
        json_t *q = json_object();
        json_object_set_new(q, "activation_scheme", json_string("dynamic"));
        json_object_set_new(q, "fmt", json_string("e4m3"));
        json_object_set_new(q, "quant_method", json_string("fp8"));
        if (c->act_scale_ue8m0)
            json_object_set_new(q, "scale_fmt", json_string("ue8m0"));
        json_object_set_new(q, "weight_block_size", json_pack("[ii]", 128, 128));
        json_object_set_new(o, "quantization_config", q);
    }
    json_object_set_new(o, "rms_norm_eps", json_real(c->rms_norm_eps));
    if (c->rope.type == DSD_ROPE_YARN) {
        json_t *r = json_object();
        json_object_set_new(r, "beta_fast", json_integer((json_int_t)c->rope.beta_fast));
        json_object_set_new(r, "beta_slow", json_integer((json_int_t)c->rope.beta_slow));
        json_object_set_new(r, "factor", json_real(c->rope.factor));
        json_object_set_new(r, "mscale", json_real(c->rope.mscale));
        json_object_set_new(r, "mscale_all_dim", json_real(c->rope.mscale_all_dim));
        json_object_set_new(r, "original_max_position_embeddings", json_integer(c->rope.original_max_position));
        json_object_set_new(r, "type", json_string("yarn"));
        json_object_set_new(o, "rope_scaling", r);
    } else {
        json_object_set_new(o, "rope_scaling", json_null());
    }
    json_object_set_new(o, "rope_theta", json_real(c->rope.theta));
    json_object_set_new(o, "routed_scaling_factor", json_real(c->routed_scaling_factor));
    json_object_set_new(o, "scoring_func", json_string("sigmoid"));
    json_object_set_new(o, "tie_word_embeddings", json_false());
    json_object_set_new(o, "topk_group", json_integer(c->topk_group));
    json_object_set_new(o, "topk_method", json_string("noaux_tc"));
    json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(o, "transformers_version", json_string("4.44.2"));
    json_object_set_new(o, "use_cache", json_true());
    json_object_set_new(o, "v_head_dim", json_integer(c->v_head_dim));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    int rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (rc != 0)
        return dsd_errf(err, -EIO, "%s: cannot write", path);
    return 0;
}
