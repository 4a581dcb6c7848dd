/*
 * kernels/ops.h: the operations of the DeepSeek V3.2 forward pass, as one table that every
 * backend implements (kernels/cpu is the reference; kernels/cuda the fast one).
 *
 * The forward graph (daemon/model/forward.c) only ever calls these; it never touches
 * activation memory itself, so a backend is free to keep it on a device.
 *
 *   struct dsd_backend_params bp = dsd_backend_default_params();
 *   bp.cfg = &cfg; bp.numerics = DSD_NUMERICS_PRODUCTION; bp.n_threads = 8;
 *   struct dsd_backend *be = dsd_backend_cpu_new(&bp, &err);
 *   const struct dsd_ops *ops = dsd_backend_ops(be);
 *   float *x = ops->alloc(be, bytes);
 *   ops->rmsnorm(be, x, ...);
 *   dsd_backend_free(be);
 *
 * Shapes use T = tokens of the step (all sequences of a ragged batch, concatenated),
 * D = hidden_size, H = attention heads, Hi = indexer heads, Di = indexer head dim (128),
 * L = kv_lora_rank, R = qk_rope_head_dim, N = qk_nope_head_dim, V = v_head_dim.
 * Activations are float arrays, row-major, one row per token; "ld" is a row stride in
 * floats. In production numerics every op rounds its outputs to bf16 values (they are
 * stored in floats on the CPU); in exact numerics nothing is rounded (docs/NUMERICS.md).
 */
#ifndef DSD_KERNELS_OPS_H
#define DSD_KERNELS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "weights.h"

enum dsd_numerics {
    DSD_NUMERICS_PRODUCTION = 0,    /* bf16 activations, FP8 linears/indexer/KV: what the GPU runs */
    DSD_NUMERICS_EXACT,             /* fp32 everywhere, dequantized weights: what transformers runs */
};

enum dsd_kv_dtype {
    DSD_KV_FP8 = 0,     /* latent as e4m3 + one fp32 scale per 128, k_pe bf16 (656 B for V3.2) */
    DSD_KV_BF16,        /* latent and k_pe as bf16 (1152 B for V3.2), no FP8 round trip */
    DSD_KV_F32,         /* unquantized fp32 (exact numerics) */
};

#define DSD_KV_PAGE_TOKENS 64

/* Byte layout of one layer's KV entries (docs/KV_CACHE.md §2, §3). One page id addresses both
 * arenas: token slot s = page * 64 + (pos % 64). */
struct dsd_kv_layout {
    enum dsd_kv_dtype mla_dtype;
    bool index_fp8;                 /* production: 128 fp8 + fp32 scale per token; else fp32 */
    int kv_lora_rank, rope_dim, index_dim;
    size_t mla_token_bytes;         /* bytes of one token's latent+rope entry */
    size_t index_page_bytes;        /* bytes of one 64-token index-K page */
};

/* Where one layer's cache lives (backend memory). */
struct dsd_kv_layer {
    uint8_t *mla;                   /* n_pages * 64 * mla_token_bytes */
    uint8_t *index;                 /* n_pages * index_page_bytes */
};

/* A ragged batch as the kernels need it. Token t belongs to sequence seq[t] and sits at
 * absolute position pos[t]; its KV is stored at slot[t]. page_table[s][i] is the page of
 * positions [64i, 64i+63] of sequence s. Host memory. */
struct dsd_step {
    int n_tokens;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *seq;
    const int32_t *slot;
    int n_seqs;
    const int32_t *const *page_table;
};

struct dsd_backend;

#define DSD_LINEAR_F32_OUT 1u       /* keep fp32 outputs (router logits, indexer weights, LM head) */

struct dsd_ops {
    const char *name;

    void *(*alloc)(struct dsd_backend *be, size_t bytes);      /* zeroed; NULL on failure */
    void (*release)(struct dsd_backend *be, void *p);
    void (*upload)(struct dsd_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(struct dsd_backend *be, void *dst, const void *src, size_t bytes);
    /* Derive what a backend wants from the bound weights (e.g. dequantized kv_b). */
    int (*prepare_weights)(struct dsd_backend *be, struct dsd_model_weights *w, struct dsd_err *err);
    /* Frees what prepare_weights derived (before the weights go away). */
    void (*release_weights)(struct dsd_backend *be, struct dsd_model_weights *w);

    /* out[t] = table[tokens[t]]                                        out: [T][D] */
    void (*embed)(struct dsd_backend *be, float *out, const struct dsd_weight *table,
                  const int32_t *tokens, int T);
    /* out[t] = w * x[t] / rms(x[t])                                    [T][n], strided */
    void (*rmsnorm)(struct dsd_backend *be, float *out, int ldo, const float *x, int ldx,
                    const struct dsd_weight *w, int T, int n);
    /* resid[t] += delta[t] (rounded like an activation); out[t] = rmsnorm(resid[t]).
     * delta may be NULL (then only the norm).                          [T][D] */
    void (*add_rmsnorm)(struct dsd_backend *be, float *out, float *resid, const float *delta,
                        const struct dsd_weight *w, int T);
    /* out[t] = LayerNorm(x[t]) * w + b, eps 1e-6                       [T][n] */
    void (*layernorm)(struct dsd_backend *be, float *out, const float *x,
                      const struct dsd_weight *w, const struct dsd_weight *b, int T, int n);
    /* out[t][0:rows] = W x[t] (x has W.cols entries).  FP8 weights in production numerics
     * quantize x per 1x128 group first (docs/MODEL.md §7.2-7.3). */
    void (*linear)(struct dsd_backend *be, float *out, int ldo, const float *x, int ldx,
                   const struct dsd_weight *w, int T, unsigned flags);
    /* Rotates dims [offset, offset+R) of each of n_heads heads (head h starts at h*head_stride)
     * of row t by pos[t]: interleaved pairs (MLA) or half-split pairs (indexer). */
    void (*rope)(struct dsd_backend *be, float *x, int ld, int n_heads, int head_stride, int offset,
                 const int32_t *pos, int T, bool interleaved);
    /* Stores kv[t] = [normalized latent (L) | roped k_pe (R)] at slot[t]. */
    void (*mla_kv_store)(struct dsd_backend *be, const struct dsd_kv_layer *kv, const float *kv_in,
                         int ld, const int32_t *slot, int T);
    /* Stores the indexer key k[t] (Di, after LayerNorm and RoPE) at slot[t]; production numerics
     * apply the Hadamard rotation and FP8 quantization first. */
    void (*index_k_store)(struct dsd_backend *be, const struct dsd_kv_layer *kv, const float *k,
                          const int32_t *slot, int T);
    /* For each token: score every cached key of its sequence at positions 0..pos[t] and write
     * the top min(topk, pos[t]+1) positions, ascending, to out[t][0..topk), padded with -1.
     * q: [T][Hi*Di] after RoPE; w: [T][Hi] raw weights_proj output (fp32). */
    void (*indexer_topk)(struct dsd_backend *be, int32_t *out, int topk, const float *q, const float *w,
                         const struct dsd_kv_layer *kv, const struct dsd_step *st);
    /* Sparse MLA in the absorbed form over the selected positions (docs/MODEL.md §3.6, §5):
     * q: [T][H*(N+R)] (rope part already rotated); sel: [T][topk] positions (-1 = none);
     * out: [T][H*V], ready for o_proj. */
    void (*mla_attention)(struct dsd_backend *be, float *out, const float *q, const struct dsd_weight *kv_b,
                          const struct dsd_kv_layer *kv, const int32_t *sel, int topk,
                          const struct dsd_step *st);
    /* SwiGLU MLP: out = down(silu(gate x) * up x)                      [T][D] */
    void (*mlp)(struct dsd_backend *be, float *out, const float *x, const struct dsd_expert_weights *w, int T);
    /* MoE block: sigmoid router with correction bias, group-limited top-k, routed experts
     * weighted and scaled, plus the shared expert (docs/MODEL.md §6).         [T][D] */
    void (*moe)(struct dsd_backend *be, float *out, const float *x, const struct dsd_layer_weights *lw, int T);
    /* out[t] = [a[t] (na) | b[t] (nb)]  (MTP input) */
    void (*concat)(struct dsd_backend *be, float *out, const float *a, int na, const float *b, int nb, int T);
    /* Copies rows: out[i] = x[rows[i]] for i < n (picking the rows that need logits). */
    void (*gather_rows)(struct dsd_backend *be, float *out, const float *x, int n_cols, const int32_t *rows, int n);
};

struct dsd_backend_params {
    const struct dsd_model_config *cfg;
    enum dsd_numerics numerics;
    enum dsd_kv_dtype kv_dtype;     /* ignored (F32) in exact numerics */
    int n_threads;                  /* CPU worker threads, 0 = one per online CPU */
};

struct dsd_backend_params dsd_backend_default_params(void);

/* The CPU reference backend. Returns NULL with err set on failure. */
struct dsd_backend *dsd_backend_cpu_new(const struct dsd_backend_params *p, struct dsd_err *err);
const struct dsd_ops *dsd_backend_ops(const struct dsd_backend *be);
const struct dsd_backend_params *dsd_backend_params(const struct dsd_backend *be);
void dsd_backend_free(struct dsd_backend *be);

/* The KV byte layout implied by a config, numerics and KV dtype (one definition). */
struct dsd_kv_layout dsd_kv_layout_for(const struct dsd_model_config *cfg, enum dsd_numerics numerics,
                                       enum dsd_kv_dtype kv_dtype);

#endif
