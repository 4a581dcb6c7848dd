/* Backend-independent parts of kernels/ops.h. */
#include "backend_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "numeric.h"

struct dsd_backend_params dsd_backend_default_params(void)
{
    return (struct dsd_backend_params){
        .numerics = DSD_NUMERICS_PRODUCTION,
        .kv_dtype = DSD_KV_FP8,
        .n_threads = 0,
        .device = 0,
    };
}

int dsd_backend_init_common(struct dsd_backend *be, const struct dsd_backend_params *p, size_t act_bytes,
                            struct dsd_err *err)
{
    const struct dsd_model_dims *d = &p->dims;
    if (d->hidden_size <= 0 || d->qk_rope_head_dim <= 0 || d->qk_rope_head_dim % 2 || !d->rope_inv_freq ||
        d->kv_lora_rank <= 0 || d->index_head_dim <= 0 || d->num_attention_heads <= 0)
        return dsd_errf(err, -EINVAL, "backend: model dimensions missing (hidden_size %lld, qk_rope_head_dim %d)",
                        (long long)d->hidden_size, d->qk_rope_head_dim);
    if (d->index_head_dim != DSD_QUANT_GROUP) {
        /* The FP8 indexer folds one q scale per head into the head weights (docs/MODEL.md §4.6),
         * which is only defined for one 128-group per head. */
        return dsd_errf(err, -EINVAL, "backend: index_head_dim must be 128 (have %d)", d->index_head_dim);
    }
    be->params = *p;
    be->dims = *d;
    be->rope_inv_freq = malloc((size_t)(d->qk_rope_head_dim / 2) * sizeof(float));
    if (!be->rope_inv_freq)
        return dsd_errf(err, -ENOMEM, "backend: out of memory");
    memcpy(be->rope_inv_freq, d->rope_inv_freq, (size_t)(d->qk_rope_head_dim / 2) * sizeof(float));
    be->dims.rope_inv_freq = be->rope_inv_freq;
    be->params.dims = be->dims;
    be->kv_layout = dsd_kv_layout_for(d, p->numerics, p->kv_dtype);
    be->act_bytes = act_bytes;
    return 0;
}

void dsd_backend_fini_common(struct dsd_backend *be)
{
    free(be->rope_inv_freq);
    be->rope_inv_freq = NULL;
}

const struct dsd_ops *dsd_backend_ops(const struct dsd_backend *be)
{
    return be->ops;
}

const struct dsd_backend_params *dsd_backend_params(const struct dsd_backend *be)
{
    return &be->params;
}

size_t dsd_backend_act_bytes(const struct dsd_backend *be)
{
    return be->act_bytes;
}

void dsd_backend_free(struct dsd_backend *be)
{
    if (be)
        be->destroy(be);
}

void dsd_backend_copy_many(struct dsd_backend *be, const struct dsd_copy *pieces, int n, bool to_backend)
{
    const struct dsd_ops *o = be->ops;
    if (n <= 0)
        return;
    if (o->copy_many) {
        o->copy_many(be, pieces, n, to_backend);
        return;
    }
    for (int i = 0; i < n; i++)
        (to_backend ? o->upload : o->download)(be, pieces[i].dst, pieces[i].src, pieces[i].bytes);
}

void dsd_backend_side_wait(struct dsd_backend *be, int layer)
{
    if (be->ops->side_wait)
        be->ops->side_wait(be, layer);
}

struct dsd_kv_layout dsd_kv_layout_for(const struct dsd_model_dims *dims, enum dsd_numerics numerics,
                                       enum dsd_kv_dtype kv_dtype)
{
    struct dsd_kv_layout l = {
        .mla_dtype = numerics == DSD_NUMERICS_EXACT ? DSD_KV_F32 : kv_dtype,
        .index_fp8 = numerics == DSD_NUMERICS_PRODUCTION,
        .kv_lora_rank = dims->kv_lora_rank,
        .rope_dim = dims->qk_rope_head_dim,
        .index_dim = dims->index_head_dim,
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
