/* The tensor list of a V3.2 config and binding a checkpoint to it (contract in weights.h). */
#include "weights.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct spec_list {
    struct dsd_tensor_spec *v;
    size_t n, cap;
    int oom;
};

static void add(struct spec_list *l, struct dsd_weight *dst, enum dsd_tensor_kind kind,
                enum dsd_tensor_role role, enum dsd_dtype official, int layer, int64_t rows,
                int64_t cols, const char *fmt, ...) __attribute__((format(printf, 9, 10)));

/* rows == 0 means a 1-D tensor of cols elements. */
static void add(struct spec_list *l, struct dsd_weight *dst, enum dsd_tensor_kind kind,
                enum dsd_tensor_role role, enum dsd_dtype official, int layer, int64_t rows,
                int64_t cols, const char *fmt, ...)
{
    if (l->oom)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct dsd_tensor_spec *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) {
            l->oom = 1;
            return;
        }
        l->v = nv;
        l->cap = cap;
    }
    struct dsd_tensor_spec *s = &l->v[l->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->kind = kind;
    s->role = role;
    s->official_dtype = official;
    s->layer = layer;
    if (rows == 0) {
        s->ndim = 1;
        s->shape[0] = cols;
    } else {
        s->ndim = 2;
        s->shape[0] = rows;
        s->shape[1] = cols;
    }
    s->dst = dst;
}

#define W(field) (w ? &(field) : NULL)

static void add_swiglu(struct spec_list *l, struct dsd_expert_weights *e, int layer, int64_t hidden,
                       int64_t inter, enum dsd_dtype lin, const char *prefix)
{
    struct dsd_expert_weights *w = e;
    add(l, W(w->gate), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, layer, inter, hidden, "%s.gate_proj.weight", prefix);
    add(l, W(w->up), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, layer, inter, hidden, "%s.up_proj.weight", prefix);
    add(l, W(w->down), DSD_TENSOR_LINEAR, DSD_ROLE_OUT_PROJ, lin, layer, hidden, inter, "%s.down_proj.weight", prefix);
}

int dsd_tensor_specs(const struct dsd_model_config *c, struct dsd_model_weights *w,
                     struct dsd_tensor_spec **out, size_t *n_out)
{
    struct spec_list l = {0};
    const enum dsd_dtype lin = c->fp8_weights ? DSD_DTYPE_F8_E4M3 : DSD_DTYPE_BF16;
    const int64_t D = c->hidden_size, H = c->num_attention_heads;
    const int n_layers = dsd_cfg_total_layers(c);

    if (w) {
        memset(w, 0, sizeof *w);
        w->n_layers = n_layers;
        w->layers = calloc((size_t)n_layers, sizeof *w->layers);
        if (!w->layers)
            return -ENOMEM;
        for (int i = 0; i < n_layers; i++) {
            struct dsd_layer_weights *lw = &w->layers[i];
            lw->index = i;
            lw->is_moe = dsd_cfg_layer_is_moe(c, i);
            lw->is_mtp = i >= c->num_hidden_layers;
            if (lw->is_moe) {
                lw->experts = calloc((size_t)c->n_routed_experts, sizeof *lw->experts);
                if (!lw->experts) {
                    dsd_weights_free(w);
                    return -ENOMEM;
                }
            }
        }
    }

    add(&l, W(w->embed), DSD_TENSOR_FLOAT, DSD_ROLE_EMBED, DSD_DTYPE_BF16, -1, c->vocab_size, D,
        "model.embed_tokens.weight");
    add(&l, W(w->final_norm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, -1, 0, D, "model.norm.weight");
    add(&l, W(w->lm_head), DSD_TENSOR_FLOAT, DSD_ROLE_LM_HEAD, DSD_DTYPE_BF16, -1, c->vocab_size, D,
        "lm_head.weight");

    for (int i = 0; i < n_layers; i++) {
        struct dsd_layer_weights *lw = w ? &w->layers[i] : NULL;
        char p[64];
        snprintf(p, sizeof p, "model.layers.%d", i);
#define LW(field) (lw ? &lw->field : NULL)
        add(&l, LW(attn_norm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, D, "%s.input_layernorm.weight", p);
        add(&l, LW(ffn_norm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, D,
            "%s.post_attention_layernorm.weight", p);
        add(&l, LW(q_a), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, i, c->q_lora_rank, D, "%s.self_attn.q_a_proj.weight", p);
        add(&l, LW(q_a_norm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, c->q_lora_rank,
            "%s.self_attn.q_a_layernorm.weight", p);
        add(&l, LW(q_b), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, i, H * dsd_cfg_qk_head_dim(c), c->q_lora_rank,
            "%s.self_attn.q_b_proj.weight", p);
        add(&l, LW(kv_a), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, i, c->kv_lora_rank + c->qk_rope_head_dim, D,
            "%s.self_attn.kv_a_proj_with_mqa.weight", p);
        add(&l, LW(kv_a_norm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, c->kv_lora_rank,
            "%s.self_attn.kv_a_layernorm.weight", p);
        add(&l, LW(kv_b), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, i, H * (c->qk_nope_head_dim + c->v_head_dim),
            c->kv_lora_rank, "%s.self_attn.kv_b_proj.weight", p);
        add(&l, LW(o_proj), DSD_TENSOR_LINEAR, DSD_ROLE_OUT_PROJ, lin, i, D, H * c->v_head_dim,
            "%s.self_attn.o_proj.weight", p);
        add(&l, LW(idx_wq_b), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, i, (int64_t)c->index_n_heads * c->index_head_dim,
            c->q_lora_rank, "%s.self_attn.indexer.wq_b.weight", p);
        add(&l, LW(idx_wk), DSD_TENSOR_LINEAR, DSD_ROLE_PROJ, lin, i, c->index_head_dim, D,
            "%s.self_attn.indexer.wk.weight", p);
        add(&l, LW(idx_k_norm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, c->index_head_dim,
            "%s.self_attn.indexer.k_norm.weight", p);
        add(&l, LW(idx_k_norm_bias), DSD_TENSOR_FLOAT, DSD_ROLE_NORM_BIAS, DSD_DTYPE_F32, i, 0, c->index_head_dim,
            "%s.self_attn.indexer.k_norm.bias", p);
        add(&l, LW(idx_weights_proj), DSD_TENSOR_FLOAT, DSD_ROLE_PROJ, DSD_DTYPE_BF16, i, c->index_n_heads, D,
            "%s.self_attn.indexer.weights_proj.weight", p);
        char q[96];
        if (!dsd_cfg_layer_is_moe(c, i)) {
            snprintf(q, sizeof q, "%s.mlp", p);
            add_swiglu(&l, LW(mlp), i, D, c->intermediate_size, lin, q);
        } else {
            add(&l, LW(router), DSD_TENSOR_FLOAT, DSD_ROLE_ROUTER, DSD_DTYPE_BF16, i, c->n_routed_experts, D,
                "%s.mlp.gate.weight", p);
            add(&l, LW(router_bias), DSD_TENSOR_FLOAT, DSD_ROLE_ROUTER_BIAS, DSD_DTYPE_F32, i, 0, c->n_routed_experts,
                "%s.mlp.gate.e_score_correction_bias", p);
            if (c->n_shared_experts > 0) {
                snprintf(q, sizeof q, "%s.mlp.shared_experts", p);
                add_swiglu(&l, LW(shared), i, D, c->moe_intermediate_size * c->n_shared_experts, lin, q);
            }
            for (int e = 0; e < c->n_routed_experts; e++) {
                snprintf(q, sizeof q, "%s.mlp.experts.%d", p, e);
                add_swiglu(&l, lw ? &lw->experts[e] : NULL, i, D, c->moe_intermediate_size, lin, q);
            }
        }
        if (i >= c->num_hidden_layers) {
            add(&l, LW(enorm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, D, "%s.enorm.weight", p);
            add(&l, LW(hnorm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, D, "%s.hnorm.weight", p);
            add(&l, LW(eh_proj), DSD_TENSOR_FLOAT, DSD_ROLE_PROJ, DSD_DTYPE_BF16, i, D, 2 * D, "%s.eh_proj.weight", p);
            add(&l, LW(head_norm), DSD_TENSOR_FLOAT, DSD_ROLE_NORM, DSD_DTYPE_F32, i, 0, D,
                "%s.shared_head.norm.weight", p);
            /* Copies of the main embedding and LM head ("shared" with the main model): checked
             * when present, never used. */
            add(&l, NULL, DSD_TENSOR_FLOAT, DSD_ROLE_EMBED, DSD_DTYPE_BF16, i, c->vocab_size, D,
                "%s.embed_tokens.weight", p);
            l.v[l.n - 1].optional = true;
            add(&l, NULL, DSD_TENSOR_FLOAT, DSD_ROLE_LM_HEAD, DSD_DTYPE_BF16, i, c->vocab_size, D,
                "%s.shared_head.head.weight", p);
            l.v[l.n - 1].optional = true;
        }
#undef LW
    }
    if (l.oom) {
        free(l.v);
        if (w)
            dsd_weights_free(w);
        return -ENOMEM;
    }
    *out = l.v;
    *n_out = l.n;
    return 0;
}
#undef W

static int shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    int off = snprintf(buf, len, "[");
    for (int i = 0; i < ndim && off < (int)len; i++)
        off += snprintf(buf + off, len - (size_t)off, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (off < (int)len)
        snprintf(buf + off, len - (size_t)off, "]");
    return 0;
}

static int check_scale(const struct dsd_tensor_spec *s, const struct dsd_st_set *set, struct dsd_weight *out,
                       struct dsd_err *err)
{
    char sname[sizeof s->name + 16];
    size_t base = strlen(s->name) - strlen(".weight");
    snprintf(sname, sizeof sname, "%.*s.weight_scale_inv", (int)base, s->name);
    const struct dsd_st_tensor *t = dsd_st_find(set, sname);
    int64_t er = (out->rows + 127) / 128, ec = (out->cols + 127) / 128;
    if (!t)
        return dsd_errf(err, -EINVAL, "%s: F8_E4M3 weight without its scale tensor %s (expected F32 [%lld, %lld])",
                        s->name, sname, (long long)er, (long long)ec);
    if (t->dtype != DSD_DTYPE_F32 || t->ndim != 2 || t->shape[0] != er || t->shape[1] != ec) {
        char got[96];
        shape_str(got, sizeof got, t->ndim, t->shape);
        return dsd_errf(err, -EINVAL, "%s: expected F32 [%lld, %lld], found %s %s", sname, (long long)er,
                        (long long)ec, dsd_dtype_name(t->dtype), got);
    }
    const float *sc = t->data;
    for (int64_t i = 0; i < er * ec; i++)
        if (!(sc[i] > 0.0f) || !isfinite(sc[i]))
            return dsd_errf(err, -EINVAL, "%s: entry %lld is %g; block scales must be finite and positive",
                            sname, (long long)i, (double)sc[i]);
    out->scale = sc;
    return 0;
}

static int bind_one(const struct dsd_model_config *cfg, const struct dsd_tensor_spec *s,
                    const struct dsd_st_set *set, struct dsd_err *err)
{
    const struct dsd_st_tensor *t = dsd_st_find(set, s->name);
    char want[96], got[96];
    shape_str(want, sizeof want, s->ndim, s->shape);
    if (!t) {
        if (s->optional)
            return 0;
        return dsd_errf(err, -EINVAL, "tensor %s is missing (expected %s %s)", s->name,
                        dsd_dtype_name(s->official_dtype), want);
    }
    shape_str(got, sizeof got, t->ndim, t->shape);
    bool shape_ok = t->ndim == s->ndim;
    for (int i = 0; shape_ok && i < s->ndim; i++)
        shape_ok = t->shape[i] == s->shape[i];
    bool dtype_ok = t->dtype == DSD_DTYPE_BF16 || t->dtype == DSD_DTYPE_F16 || t->dtype == DSD_DTYPE_F32 ||
                    (t->dtype == DSD_DTYPE_F8_E4M3 && s->kind == DSD_TENSOR_LINEAR);
    if (!shape_ok || !dtype_ok)
        return dsd_errf(err, -EINVAL, "tensor %s: expected %s%s %s, found %s %s", s->name,
                        dsd_dtype_name(s->official_dtype),
                        s->kind == DSD_TENSOR_LINEAR ? " (or BF16/F16/F32)" : " (or BF16/F16)", want,
                        dsd_dtype_name(t->dtype), got);
    if (t->dtype == DSD_DTYPE_F8_E4M3 && !cfg->fp8_weights)
        return dsd_errf(err, -EINVAL, "tensor %s is F8_E4M3 but config.json has no quantization_config "
                        "(expected {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128], ...})", s->name);
    struct dsd_weight tmp = {
        .dtype = t->dtype,
        .rows = s->ndim == 2 ? s->shape[0] : 1,
        .cols = s->ndim == 2 ? s->shape[1] : s->shape[0],
        .data = t->data,
        .name = t->name,
    };
    if (t->dtype == DSD_DTYPE_F8_E4M3) {
        int rc = check_scale(s, set, &tmp, err);
        if (rc)
            return rc;
    }
    if (s->dst)
        *s->dst = tmp;
    return 0;
}

int dsd_weights_bind(const struct dsd_model_config *cfg, const struct dsd_st_set *set,
                     struct dsd_model_weights *w, struct dsd_err *err)
{
    struct dsd_tensor_spec *specs;
    size_t n;
    int rc = dsd_tensor_specs(cfg, w, &specs, &n);
    if (rc)
        return dsd_errf(err, rc, "out of memory listing tensors");
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = bind_one(cfg, &specs[i], set, err);
    free(specs);
    if (rc)
        dsd_weights_free(w);
    return rc;
}

void dsd_weight_init_range(const struct dsd_tensor_spec *s, float *center, float *half)
{
    const float inv = 1.0f / sqrtf((float)(s->ndim == 2 ? s->shape[1] : 1)), sq3 = sqrtf(3.0f);
    *center = 0.0f;
    switch (s->role) {
    case DSD_ROLE_NORM:
        *center = 1.0f;
        *half = 0.25f;
        break;
    case DSD_ROLE_NORM_BIAS:
        *half = 0.1f;
        break;
    case DSD_ROLE_ROUTER_BIAS:
        *half = 0.05f;
        break;
    case DSD_ROLE_EMBED:
        *half = sq3;
        break;
    case DSD_ROLE_LM_HEAD:
        *half = 3.0f * inv * sq3;       /* logits with std ~3: argmax comparisons mean something */
        break;
    case DSD_ROLE_ROUTER:
        *half = 2.0f * inv * sq3;
        break;
    case DSD_ROLE_OUT_PROJ:
        /* Small enough that FP8 noise does not snowball through the layers of a random
         * model (production vs exact stays comparable), large enough that a wrong attention
         * or MoE output moves the logits far beyond the golden tolerance (1e-3). */
        *half = 0.2f * inv * sq3;
        break;
    case DSD_ROLE_PROJ:
    default:
        *half = inv * sq3;
        break;
    }
}

int dsd_weights_describe(const struct dsd_model_config *cfg, struct dsd_model_weights *w,
                         struct dsd_tensor_spec **specs_out, struct dsd_weight_init **init_out, size_t *n_init,
                         struct dsd_err *err)
{
    struct dsd_tensor_spec *specs;
    size_t n;
    if (dsd_tensor_specs(cfg, w, &specs, &n))
        return dsd_errf(err, -ENOMEM, "out of memory listing tensors");
    struct dsd_weight_init *init = calloc(n ? n : 1, sizeof *init);
    if (!init) {
        free(specs);
        dsd_weights_free(w);
        return dsd_errf(err, -ENOMEM, "out of memory listing tensors");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct dsd_tensor_spec *s = &specs[i];
        if (!s->dst)
            continue;       /* checked-only copies (the MTP layer's embedding and head) */
        *s->dst = (struct dsd_weight){
            .dtype = s->official_dtype,
            .rows = s->ndim == 2 ? s->shape[0] : 1,
            .cols = s->ndim == 2 ? s->shape[1] : s->shape[0],
            .name = s->name,
        };
        float center, half;
        dsd_weight_init_range(s, &center, &half);
        init[k++] = (struct dsd_weight_init){ .w = s->dst, .center = center, .half = half };
    }
    *specs_out = specs;
    *init_out = init;
    *n_init = k;
    return 0;
}

void dsd_weights_free(struct dsd_model_weights *w)
{
    if (!w || !w->layers)
        return;
    for (int i = 0; i < w->n_layers; i++)
        free(w->layers[i].experts);
    free(w->layers);
    w->layers = NULL;
}

static uint64_t weight_bytes(const struct dsd_weight *x)
{
    if (!x->data)
        return 0;
    uint64_t b = (uint64_t)x->rows * (uint64_t)x->cols * dsd_dtype_size(x->dtype);
    if (x->scale)
        b += (uint64_t)((x->rows + 127) / 128) * (uint64_t)((x->cols + 127) / 128) * 4;
    return b;
}

uint64_t dsd_weights_bytes(const struct dsd_model_weights *w, const struct dsd_model_config *cfg)
{
    uint64_t total = weight_bytes(&w->embed) + weight_bytes(&w->final_norm) + weight_bytes(&w->lm_head);
    for (int i = 0; i < w->n_layers; i++) {
        const struct dsd_layer_weights *l = &w->layers[i];
        const struct dsd_weight *list[] = {
            &l->attn_norm, &l->ffn_norm, &l->q_a, &l->q_a_norm, &l->q_b, &l->kv_a, &l->kv_a_norm, &l->kv_b,
            &l->o_proj, &l->idx_wq_b, &l->idx_wk, &l->idx_k_norm, &l->idx_k_norm_bias, &l->idx_weights_proj,
            &l->mlp.gate, &l->mlp.up, &l->mlp.down, &l->router, &l->router_bias, &l->shared.gate, &l->shared.up,
            &l->shared.down, &l->enorm, &l->hnorm, &l->eh_proj, &l->head_norm,
        };
        for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
            total += weight_bytes(list[k]);
        if (l->experts)
            for (int e = 0; e < cfg->n_routed_experts; e++)
                total += weight_bytes(&l->experts[e].gate) + weight_bytes(&l->experts[e].up) +
                         weight_bytes(&l->experts[e].down);
    }
    return total;
}
