/*
 * kernels/tensor.h: weights as the kernels see them: plain descriptors of memory (a dtype,
 * a shape, a data pointer, FP8 block scales), grouped the way the forward pass uses them.
 * The loader (daemon/model/weights.c) fills them from a checkpoint; a backend may keep a
 * derived form of its own in `prepared` (device copies, dequantized matrices). Nothing here
 * knows files or configs.
 */
#ifndef DSD_KERNELS_TENSOR_H
#define DSD_KERNELS_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "dtype.h"

/* One weight as the kernels see it. 1-D tensors have rows = 1. FP8 weights carry their
 * 128x128 block scales (weight_scale_inv, a multiplier despite the name, docs/MODEL.md §7.1). */
struct dsd_weight {
    enum dsd_dtype dtype;       /* F8_E4M3, BF16, F16 or F32 */
    int64_t rows, cols;         /* [out_features, in_features] for linear weights */
    const void *data;
    const float *scale;         /* [ceil(rows/128)][ceil(cols/128)] when dtype is F8_E4M3 */
    const char *name;
    void *prepared;             /* a backend's derived form (e.g. dequantized kv_b); backend-owned */
};

struct dsd_expert_weights {
    struct dsd_weight gate, up, down;
};

struct dsd_layer_weights {
    int index;
    bool is_moe, is_mtp;
    struct dsd_weight attn_norm, ffn_norm;
    /* MLA */
    struct dsd_weight q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b, o_proj;
    /* DSA indexer */
    struct dsd_weight idx_wq_b, idx_wk, idx_k_norm, idx_k_norm_bias, idx_weights_proj;
    /* dense MLP (layers < first_k_dense_replace) */
    struct dsd_expert_weights mlp;
    /* MoE */
    struct dsd_weight router, router_bias;
    struct dsd_expert_weights shared;
    struct dsd_expert_weights *experts;     /* n_routed_experts */
    /* MTP layer only */
    struct dsd_weight enorm, hnorm, eh_proj, head_norm;
};

struct dsd_model_weights {
    struct dsd_weight embed, final_norm, lm_head;
    int n_layers;                           /* main + MTP layers */
    struct dsd_layer_weights *layers;
};

#endif
