/*
 * daemon/model/weights.h: the tensors of a DeepSeek V3.2 checkpoint, named once.
 *
 * dsd_tensor_specs() is the single list of every tensor a config implies (name, shape,
 * which dtypes are allowed, what it is for). The loader checks a checkpoint against it and
 * deepseekd-mkmodel writes checkpoints from it, so the two can never disagree.
 *
 *   struct dsd_model_weights w;
 *   if (dsd_weights_bind(&cfg, set, &w, &err) < 0) die(err.msg);
 *   ... w.layers[3].experts[17].up.data ...
 *   dsd_weights_free(&w);
 *
 * A bound weight points into the checkpoint's mmap (struct dsd_st_set): keep the set open
 * as long as the weights are used.
 */
#ifndef DSD_MODEL_WEIGHTS_H
#define DSD_MODEL_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "ops.h"
#include "safetensors.h"
#include "tensor.h"

/* What a tensor may be stored as. */
enum dsd_tensor_kind {
    DSD_TENSOR_LINEAR,      /* F8_E4M3 + weight_scale_inv (FP8 checkpoints), or BF16/F16/F32 */
    DSD_TENSOR_FLOAT,       /* BF16, F16 or F32, never FP8 */
};

/* What a tensor is for (mkmodel chooses its initialization from this). */
enum dsd_tensor_role {
    DSD_ROLE_PROJ,          /* a linear projection */
    DSD_ROLE_OUT_PROJ,      /* a projection writing into the residual stream */
    DSD_ROLE_NORM,          /* RMSNorm / LayerNorm weight */
    DSD_ROLE_NORM_BIAS,     /* LayerNorm bias */
    DSD_ROLE_ROUTER,
    DSD_ROLE_ROUTER_BIAS,   /* e_score_correction_bias */
    DSD_ROLE_EMBED,
    DSD_ROLE_LM_HEAD,
};

struct dsd_tensor_spec {
    char name[112];
    enum dsd_tensor_kind kind;
    enum dsd_tensor_role role;
    enum dsd_dtype official_dtype;  /* what the published V3.2 checkpoint stores */
    int ndim;
    int64_t shape[2];
    int layer;                      /* -1 for global tensors */
    bool optional;                  /* may be absent (MTP copies of embed/head) */
    struct dsd_weight *dst;         /* where dsd_weights_bind() puts it (NULL: check only) */
};

/* Every tensor cfg implies, in a fixed order. With w != NULL, dst fields point into w
 * (whose layers/experts arrays this allocates). Returns 0, -ENOMEM. Free *out with free(). */
int dsd_tensor_specs(const struct dsd_model_config *cfg, struct dsd_model_weights *w,
                     struct dsd_tensor_spec **out, size_t *n_out);

/* Checks every tensor of set against the specs of cfg and binds them into w.
 * Errors (-EINVAL) name the tensor, the expected and the found dtype/shape: a missing
 * tensor, a wrong shape, a disallowed dtype, an FP8 tensor without its weight_scale_inv
 * (or a scale of the wrong shape/dtype, or with non-finite/non-positive entries), an FP8
 * tensor in a checkpoint whose config has no quantization_config. Tensors the config does
 * not imply are ignored (an index may list extra tensors). */
int dsd_weights_bind(const struct dsd_model_config *cfg, const struct dsd_st_set *set,
                     struct dsd_model_weights *w, struct dsd_err *err);
void dsd_weights_free(struct dsd_model_weights *w);

/* A model without a checkpoint (dsd_model_new_generated, deepseekd-bench): binds w to the
 * tensors cfg implies with data NULL (dtype, shape and name set: FP8 linears when cfg has
 * FP8 weights, else BF16; the rest as the official checkpoint stores them) and lists how
 * the backend's generate_weights fills each, by role, as deepseekd-mkmodel's checkpoints
 * are made: norms 1 +- 0.25, projections +-1/sqrt(fan_in) (into the residual stream 0.2 of
 * that), router +-2/sqrt(fan_in), its correction bias +-0.05, embedding of std 1, LM head
 * for logits of std ~3; so activations stay O(1) through the layers. The names point into
 * *specs (free it with free() after the weights). Returns 0, -ENOMEM. */
int dsd_weights_describe(const struct dsd_model_config *cfg, struct dsd_model_weights *w,
                         struct dsd_tensor_spec **specs, struct dsd_weight_init **init, size_t *n_init,
                         struct dsd_err *err);

/* The range random weights of this tensor are drawn from, uniform in [center - half,
 * center + half] (mkmodel's checkpoints and generated models): scales chosen so every
 * sub-layer changes the residual stream noticeably, attention and indexer scores are far
 * from uniform and the logits are not flat. */
void dsd_weight_init_range(const struct dsd_tensor_spec *s, float *center, float *half);

/* Total bytes of the bound weights (data + scales). */
uint64_t dsd_weights_bytes(const struct dsd_model_weights *w, const struct dsd_model_config *cfg);

#endif
