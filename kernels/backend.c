/* Backend-independent parts of kernels/ops.h. */
#include "backend_impl.h"

struct dsd_backend_params dsd_backend_default_params(void)
{
    return (struct dsd_backend_params){
        .cfg = NULL,
        .numerics = DSD_NUMERICS_PRODUCTION,
        .kv_dtype = DSD_KV_FP8,
        .n_threads = 0,
    };
}

const struct dsd_ops *dsd_backend_ops(const struct dsd_backend *be)
{
    return be->ops;
}

const struct dsd_backend_params *dsd_backend_params(const struct dsd_backend *be)
{
    return &be->params;
}

void dsd_backend_free(struct dsd_backend *be)
{
    if (be)
        be->destroy(be);
}

struct dsd_kv_layout dsd_kv_layout_for(const struct dsd_model_config *cfg, enum dsd_numerics numerics,
                                       enum dsd_kv_dtype kv_dtype)
{
    struct dsd_kv_layout l = {
        .mla_dtype = numerics == DSD_NUMERICS_EXACT ? DSD_KV_F32 : kv_dtype,
        .index_fp8 = numerics == DSD_NUMERICS_PRODUCTION,
        .kv_lora_rank = cfg->kv_lora_rank,
        .rope_dim = cfg->qk_rope_head_dim,
        .index_dim = cfg->index_head_dim,
    };
    size_t L = (size_t)l.kv_lora_rank, R = (size_t)l.rope_dim, Di = (size_t)l.index_dim;
    switch (l.mla_dtype) {
    case DSD_KV_FP8:
        l.mla_token_bytes = L + (L / 128) * 4 + R * 2;      /* 656 for 512/64 */
        break;
    case DSD_KV_BF16:
        l.mla_token_bytes = (L + R) * 2;
        break;
    case DSD_KV_F32:
        l.mla_token_bytes = (L + R) * 4;
        break;
    }
    l.index_page_bytes = l.index_fp8 ? DSD_KV_PAGE_TOKENS * (Di + 4) : DSD_KV_PAGE_TOKENS * Di * 4;
    return l;
}
