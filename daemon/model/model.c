/* Loading a checkpoint directory into a backend (contract in model.h). */
#include "model.h"

#include "index_cache.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct dsd_model_params dsd_model_default_params(void)
{
    return (struct dsd_model_params){
        .numerics = DSD_NUMERICS_PRODUCTION,
        .kv_dtype = DSD_KV_FP8,
        .n_threads = 0,
        .prefault = true,
    };
}

void dsd_model_dims_from_config(const struct dsd_model_config *c, float *inv_freq, struct dsd_model_dims *out)
{
    dsd_cfg_rope_inv_freq(c, inv_freq);
    *out = (struct dsd_model_dims){
        .vocab_size = c->vocab_size,
        .hidden_size = c->hidden_size,
        .intermediate_size = c->intermediate_size,
        .moe_intermediate_size = c->moe_intermediate_size,
        .num_attention_heads = c->num_attention_heads,
        .q_lora_rank = c->q_lora_rank,
        .kv_lora_rank = c->kv_lora_rank,
        .qk_nope_head_dim = c->qk_nope_head_dim,
        .qk_rope_head_dim = c->qk_rope_head_dim,
        .v_head_dim = c->v_head_dim,
        .index_n_heads = c->index_n_heads,
        .index_head_dim = c->index_head_dim,
        .index_topk = c->index_topk,
        .n_routed_experts = c->n_routed_experts,
        .n_shared_experts = c->n_shared_experts,
        .num_experts_per_tok = c->num_experts_per_tok,
        .n_group = c->n_group,
        .topk_group = c->topk_group,
        .norm_topk_prob = c->norm_topk_prob,
        .routed_scaling_factor = c->routed_scaling_factor,
        .rms_norm_eps = c->rms_norm_eps,
        .act_scale_ue8m0 = c->act_scale_ue8m0,
        .softmax_scale = (float)dsd_cfg_softmax_scale(c),
        .rope_attention_factor = (float)dsd_cfg_rope_attention_factor(c),
        .rope_inv_freq = inv_freq,
        .max_position_embeddings = c->max_position_embeddings,
    };
}

/* The backend p names, with m->dims derived from m->cfg. */
static int model_backend(struct dsd_model *m, struct dsd_err *err)
{
    m->rope_inv_freq = malloc((size_t)(m->cfg.qk_rope_head_dim / 2 > 0 ? m->cfg.qk_rope_head_dim / 2 : 1) *
                              sizeof(float));
    if (!m->rope_inv_freq)
        return dsd_errf(err, -ENOMEM, "out of memory");
    dsd_model_dims_from_config(&m->cfg, m->rope_inv_freq, &m->dims);
    struct dsd_backend_params bp = dsd_backend_default_params();
    bp.dims = m->dims;
    bp.numerics = m->params.numerics;
    bp.kv_dtype = m->params.kv_dtype;
    bp.n_threads = m->params.n_threads;
    bp.device = m->params.device;
    bp.progress = m->params.progress;
    bp.progress_user = m->params.progress_user;
    m->be = dsd_model_backend_new(m->params.backend, &bp, err);
    if (!m->be)
        return m->params.backend == DSD_MODEL_BACKEND_CUDA ? -ENODEV : -EINVAL;
    m->ops = dsd_backend_ops(m->be);
    return 0;
}

int dsd_model_load(const char *dir, const struct dsd_model_params *p, struct dsd_model **out,
                   struct dsd_err *err)
{
    struct dsd_model *m = calloc(1, sizeof *m);
    if (!m)
        return dsd_errf(err, -ENOMEM, "out of memory");
    m->params = p ? *p : dsd_model_default_params();
    char path[PATH_MAX];
    int rc;
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path) {
        rc = dsd_errf(err, -ENAMETOOLONG, "%s: path too long", dir);
        goto fail;
    }
    if ((rc = dsd_model_config_load(path, &m->cfg, err)) ||
        (rc = dsd_index_cache_apply(&m->cfg, m->params.index_topk_freq, m->params.index_topk_pattern, err)))
        goto fail;
    m->params.index_topk_pattern = NULL;    /* applied: m->cfg holds it; the caller's string may go */
    if ((rc = dsd_st_open_dir(dir, &m->set, err)))
        goto fail;
    if ((rc = dsd_weights_bind(&m->cfg, m->set, &m->w, err))) {
        dsd_err_prefix(err, rc, "%s", dir);
        goto fail;
    }
    m->load.weight_bytes = dsd_weights_bytes(&m->w, &m->cfg);
    /* The CPU backend computes from the mmap: read it all now. A GPU backend's copy reads the
     * files itself, overlapped with its copies to the device: reading ahead would only add a
     * pass over the disk. */
    double t = now_s();
    if (m->params.prefault && m->params.backend == DSD_MODEL_BACKEND_CPU &&
        (rc = dsd_st_prefault(m->set, m->params.n_threads > 0 ? m->params.n_threads : 4, err)))
        goto fail;
    m->load.read_s = now_s() - t;
    if ((rc = model_backend(m, err)))
        goto fail;
    t = now_s();
    if ((rc = m->ops->prepare_weights(m->be, &m->w, err)))
        goto fail;
    m->load.place_s = now_s() - t;
    *out = m;
    return 0;
fail:
    dsd_model_free(m);
    return rc;
}

int dsd_model_new_generated(const struct dsd_model_config *cfg, const struct dsd_model_params *p, uint64_t seed,
                            struct dsd_model **out, struct dsd_err *err)
{
    struct dsd_model *m = calloc(1, sizeof *m);
    if (!m)
        return dsd_errf(err, -ENOMEM, "out of memory");
    m->cfg = *cfg;
    m->params = p ? *p : dsd_model_default_params();
    struct dsd_weight_init *init = NULL;
    size_t n_init = 0;
    int rc = dsd_index_cache_apply(&m->cfg, m->params.index_topk_freq, m->params.index_topk_pattern, err);
    m->params.index_topk_pattern = NULL;
    if (!rc)
        rc = dsd_weights_describe(&m->cfg, &m->w, &m->gen_specs, &init, &n_init, err);
    if (rc)
        goto fail;
    if ((rc = model_backend(m, err)))
        goto fail;
    if (!m->ops->generate_weights) {
        rc = dsd_errf(err, -ENOTSUP, "the %s backend cannot generate weights", m->ops->name);
        goto fail;
    }
    if ((rc = m->ops->generate_weights(m->be, &m->w, init, n_init, seed, err)))
        goto fail;
    free(init);
    *out = m;
    return 0;
fail:
    free(init);
    dsd_model_free(m);
    return rc;
}

void dsd_model_free(struct dsd_model *m)
{
    if (!m)
        return;
    if (m->be && m->w.layers)
        m->ops->release_weights(m->be, &m->w);
    if (m->be)
        dsd_model_penalty_free(m);
    dsd_model_profile_end(m);
    dsd_forward_ws_free(m);
    dsd_backend_free(m->be);
    dsd_weights_free(&m->w);
    free(m->gen_specs);
    free(m->rope_inv_freq);
    dsd_st_close(m->set);
    free(m);
}

struct dsd_kv_cache *dsd_model_kv_cache_new(struct dsd_model *m, int n_pages, struct dsd_err *err)
{
    return dsd_kv_cache_new(m->be, dsd_cfg_total_layers(&m->cfg), n_pages, err);
}
