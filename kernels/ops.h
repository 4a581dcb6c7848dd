/*
 * kernels/ops.h: the operations of the DeepSeek V3.2 forward pass, as one table that every
 * backend implements (kernels/cpu is the reference and the oracle; kernels/cuda the GPU one).
 * One backend instance drives one device; it holds no process-global state.
 *
 * The forward graph (daemon/model/forward.c) only ever calls these; it never touches
 * activation memory itself, so a backend keeps it on its device. Usage:
 *
 *   struct dsd_backend_params bp = dsd_backend_default_params();
 *   bp.dims = dims;                         // dsd_model_dims_from_config() in daemon/model
 *   bp.numerics = DSD_NUMERICS_PRODUCTION;
 *   struct dsd_backend *be = dsd_backend_cpu_new(&bp, &err);   // or dsd_backend_cuda_new
 *   const struct dsd_ops *o = dsd_backend_ops(be);
 *   void *x = o->alloc(be, bytes);          // backend memory, once at load (the workspace)
 *   int32_t *meta = o->alloc_host(be, n);   // host staging the device can read fast
 *   ... fill meta ... o->upload(be, dev_meta, meta, n);       // enqueued, one copy a step
 *   o->rmsnorm(be, x, ...); ...             // enqueued
 *   o->download(be, host_logits, dev_logits, n);               // enqueued
 *   if (o->synchronize(be, &err)) ...       // waits; the first failure since the last one
 *   dsd_backend_free(be);
 *
 * Every op is enqueued on the backend's one stream and returns nothing: a failure inside
 * one (a device fault, a bad launch) is recorded and reported once by the next synchronize,
 * which then clears it. Host pointers given to upload/download must stay valid until that
 * synchronize; alloc_host memory makes those copies asynchronous on a GPU.
 *
 * Shapes use T = tokens of the step (all sequences of a ragged batch, concatenated),
 * D = hidden_size, H = attention heads, Hi = indexer heads, Di = indexer head dim (128),
 * L = kv_lora_rank, R = qk_rope_head_dim, N = qk_nope_head_dim, V = v_head_dim.
 * Activations ("act" buffers) are row-major in the backend's activation type, one row per
 * token; "ld" is a row stride in elements. The CPU backend stores activations as fp32 and, in
 * production numerics, rounds every op's outputs to bf16 values; the CUDA backend stores
 * bf16. Buffers named f32 are fp32 on every backend (router logits, indexer weights, logits).
 * In exact numerics nothing is rounded (docs/NUMERICS.md).
 */
#ifndef DSD_KERNELS_OPS_H
#define DSD_KERNELS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "sample.h"
#include "tensor.h"

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

/* The model's dimensions and constants, all an op needs to know about the model. The
 * loader derives them from config.json (dsd_model_dims_from_config); tests may fill them
 * directly. rope_inv_freq points to qk_rope_head_dim/2 floats that outlive the backend
 * (the backend copies them at creation). */
struct dsd_model_dims {
    int64_t vocab_size, hidden_size, intermediate_size, moe_intermediate_size;
    int num_attention_heads, q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int index_n_heads, index_head_dim, index_topk;
    int n_routed_experts, n_shared_experts, num_experts_per_tok, n_group, topk_group;
    bool norm_topk_prob;
    double routed_scaling_factor;
    double rms_norm_eps;
    bool act_scale_ue8m0;           /* FP8 activation scales are powers of two */
    float softmax_scale;            /* MLA: qk_head_dim^-0.5 with the YaRN mscale folded in */
    float rope_attention_factor;    /* YaRN cos/sin multiplier */
    const float *rope_inv_freq;     /* [qk_rope_head_dim/2] */
    int64_t max_position_embeddings;
};

/* A ragged batch as the kernels need it. Token t belongs to sequence seq[t], sits at
 * absolute position pos[t] and stores its KV at slot[t] (page * 64 + pos % 64). Sequence s's
 * pages, in position order, are pages[page_off[s] .. page_off[s+1]). The arrays live in
 * backend memory (uploaded in one copy per step); the counts are host values. */
struct dsd_step {
    int n_tokens;
    int n_seqs;
    int max_pos;                    /* an upper bound of every pos[t] (sizes scratch and grids;
                                       a recorded step passes its context bucket's bound) */
    int n_pages;                    /* an upper bound of page_off[n_seqs] */
    const int32_t *tokens;          /* [T] */
    const int32_t *pos;             /* [T] */
    const int32_t *seq;             /* [T] */
    const int32_t *slot;            /* [T] */
    const int32_t *page_off;        /* [n_seqs + 1] */
    const int32_t *pages;           /* [n_pages] */
};

/* How generate_weights fills one weight: values uniform in [center - half, center + half].
 * FP8 weights get e4m3 values uniform over [-448, 448] with every 128x128 block scale
 * half/448 (so the dequantized values have that range); BF16/F32 the values themselves.
 * Element i of weight number k (its place in init) is a hash of (seed, k, i): the same seed
 * gives the same weights on the same backend. */
struct dsd_weight_init {
    struct dsd_weight *w;
    float center, half;
};

struct dsd_backend;

/* Layers a side copy may be tagged with (dsd_ops.side_copy). */
#define DSD_SIDE_LAYERS 256

/* One piece of dsd_ops.copy_many. */
struct dsd_copy {
    void *dst;
    const void *src;
    size_t bytes;
};

#define DSD_LINEAR_F32_OUT 1u       /* fp32 output buffer (router logits, indexer weights, LM head) */

/* Every member is required unless it says otherwise. "act" = activation buffer (see top). */
struct dsd_ops {
    const char *name;

    /* -- memory and synchronization -- */
    void *(*alloc)(struct dsd_backend *be, size_t bytes);      /* zeroed backend memory; NULL on failure */
    void (*release)(struct dsd_backend *be, void *p);
    void *(*alloc_host)(struct dsd_backend *be, size_t bytes); /* zeroed host memory fast to copy; NULL on failure */
    void (*release_host)(struct dsd_backend *be, void *p);
    /* Enqueued copies host -> backend and backend -> host (see the top for lifetimes). */
    void (*upload)(struct dsd_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(struct dsd_backend *be, void *dst, const void *src, size_t bytes);
    /* Waits for everything enqueued. Returns 0, or the first failure since the last call
     * (negative errno, err says what and where) and forgets it. */
    int (*synchronize)(struct dsd_backend *be, struct dsd_err *err);
    /* Derive what a backend wants from the bound weights: device copies, dequantized kv_b.
     * May point data/scale of w's weights at backend memory (the caller keeps the host
     * copies, e.g. the checkpoint's mmap, alive until release_weights). Returns 0 or -errno. */
    int (*prepare_weights)(struct dsd_backend *be, struct dsd_model_weights *w, struct dsd_err *err);
    /* Frees what prepare_weights derived (before the weights go away). */
    void (*release_weights)(struct dsd_backend *be, struct dsd_model_weights *w);

    /* -- the forward pass -- */
    /* out[t] = table[tokens[t]] (tokens: backend memory)             act [T][D] */
    void (*embed)(struct dsd_backend *be, void *out, const struct dsd_weight *table, const int32_t *tokens, int T);
    /* out[t] = w * x[t] / rms(x[t])                                    act [T][n], strided */
    void (*rmsnorm)(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                    int T, int n);
    /* resid[t] += delta[t] (rounded like an activation); out[t] = rmsnorm(resid[t]).
     * delta may be NULL (then only the norm).                          act [T][D] */
    void (*add_rmsnorm)(struct dsd_backend *be, void *out, void *resid, const void *delta, const struct dsd_weight *w,
                        int T);
    /* out[t] = LayerNorm(x[t]) * w + b, eps 1e-6                       act [T][n] */
    void (*layernorm)(struct dsd_backend *be, void *out, const void *x, const struct dsd_weight *w,
                      const struct dsd_weight *b, int T, int n);
    /* out[t][0:rows] = W x[t] (x has W.cols entries); out is f32 with DSD_LINEAR_F32_OUT,
     * else act. FP8 weights in production numerics quantize x per 1x128 group first
     * (docs/MODEL.md §7.2-7.3). */
    void (*linear)(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                   int T, unsigned flags);
    /* Rotates dims [offset, offset+R) of each of n_heads heads (head h starts at h*head_stride)
     * of row t by pos[t]: interleaved pairs (MLA) or half-split pairs (indexer).   act */
    void (*rope)(struct dsd_backend *be, void *x, int ld, int n_heads, int head_stride, int offset,
                 const int32_t *pos, int T, bool interleaved);
    /* Stores kv[t] = [normalized latent (L) | roped k_pe (R)] at slot[t].          act in */
    void (*mla_kv_store)(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *kv_in, int ld,
                         const int32_t *slot, int T);
    /* Stores the indexer key k[t] (Di, after LayerNorm and RoPE) at slot[t]; production numerics
     * apply the Hadamard rotation and FP8 quantization first.                     act in */
    void (*index_k_store)(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *k, const int32_t *slot,
                          int T);
    /* For each token: score every cached key of its sequence at positions 0..pos[t] and write
     * the top min(topk, pos[t]+1) positions, ascending, to out[t][0..topk), padded with -1.
     * q: act [T][Hi*Di] after RoPE; w: f32 [T][Hi] raw weights_proj output. */
    void (*indexer_topk)(struct dsd_backend *be, int32_t *out, int topk, const void *q, const float *w,
                         const struct dsd_kv_layer *kv, const struct dsd_step *st);
    /* Sparse MLA in the absorbed form over the selected positions (docs/MODEL.md §3.6, §5):
     * q: act [T][H*(N+R)] (rope part already rotated); sel: [T][topk] positions (the row ends
     * at its first -1; a position past the token's sequence's pages is skipped);
     * out: act [T][H*V], ready for o_proj. */
    void (*mla_attention)(struct dsd_backend *be, void *out, const void *q, const struct dsd_weight *kv_b,
                          const struct dsd_kv_layer *kv, const int32_t *sel, int topk, const struct dsd_step *st);
    /* SwiGLU MLP: out = down(silu(gate x) * up x)                      act [T][D] */
    void (*mlp)(struct dsd_backend *be, void *out, const void *x, const struct dsd_expert_weights *w, int T);
    /* MoE block: sigmoid router with correction bias, group-limited top-k, routed experts
     * weighted and scaled, plus the shared experts (docs/MODEL.md §6).         act [T][D] */
    void (*moe)(struct dsd_backend *be, void *out, const void *x, const struct dsd_layer_weights *lw, int T);
    /* out[t] = [a[t] (na) | b[t] (nb)]  (MTP input)                    act */
    void (*concat)(struct dsd_backend *be, void *out, const void *a, int na, const void *b, int nb, int T);
    /* Copies rows: out[i] = x[rows[i]] for i < n (rows: backend memory).           act */
    void (*gather_rows)(struct dsd_backend *be, void *out, const void *x, int n_cols, const int32_t *rows, int n);
    /* out = x converted to f32 (downloading hidden states)             [T][n] */
    void (*to_f32)(struct dsd_backend *be, float *out, const void *x, int T, int n);
    /* out = x converted to the activation type (uploading hidden states)   [T][n] */
    void (*from_f32)(struct dsd_backend *be, void *out, const float *x, int T, int n);

    /* -- sampling (kernels/sample.h: semantics and the reference) -- */
    /* One token per row of logits (f32 [n_rows][vocab]) with rows[i]'s parameters (backend
     * memory) into out[i] (backend memory). pen: the penalty state, [slots][vocab] uint32 in
     * backend memory (may be NULL when no row has pen_slot >= 0); a row with pen_slot >= 0
     * reads row pen_slot and counts its pick there. */
    void (*sample)(struct dsd_backend *be, struct dsd_sample_result *out, const float *logits,
                   const struct dsd_sample_row *rows, int n_rows, uint32_t *pen, int64_t vocab);
    /* One row of the penalty state: cleared first when `reset`, then every id of tokens[0..n)
     * (backend memory) marked seen and those at index >= count_from counted once. */
    void (*penalty_mark)(struct dsd_backend *be, uint32_t *pen_row, const int32_t *tokens, int n, int count_from,
                         bool reset, int64_t vocab);

    /* -- optional (NULL where a backend has none) -- */
    /* The device's free and total memory in bytes. Returns 0 or -errno. */
    int (*mem_info)(struct dsd_backend *be, size_t *free_bytes, size_t *total_bytes);
    /* Recorded steps (CUDA graphs): */
    /* From here on, ops are recorded instead of run. Returns 0 or -errno. */
    int (*graph_begin)(struct dsd_backend *be, struct dsd_err *err);
    /* Ends the recording: *graph is a replayable step (NULL with -errno when the recording
     * failed; the backend is then usable again, eagerly); *kernels (may be NULL) receives the
     * number of kernel launches it holds (what the step costs in launches when run eagerly). */
    int (*graph_end)(struct dsd_backend *be, void **graph, size_t *kernels, struct dsd_err *err);
    /* Enqueues a recorded step: the same ops on the same buffers, reading whatever the
     * buffers hold at that point of the stream. */
    void (*graph_launch)(struct dsd_backend *be, void *graph);
    void (*graph_free)(struct dsd_backend *be, void *graph);
    /* Weights without a checkpoint (deepseekd-bench, tests): instead of prepare_weights,
     * allocates backend memory for each init[i].w (dtype, rows and cols set, data NULL),
     * fills it with deterministic values from seed (struct dsd_weight_init), points data
     * (and, for FP8, scale) at it, then derives what prepare_weights would. The values are
     * made where they live (on the GPU for CUDA: no host copy). release_weights frees them.
     * Returns 0, -EINVAL (a dtype or shape it cannot make), -ENOMEM, -EBUSY (weights already
     * prepared on this backend). */
    int (*generate_weights)(struct dsd_backend *be, struct dsd_model_weights *w, const struct dsd_weight_init *init,
                            size_t n_init, uint64_t seed, struct dsd_err *err);
    /* Enqueued copy of bytes of backend memory (benchmarks: the copy bandwidth, KV set-up). */
    void (*copy)(struct dsd_backend *be, void *dst, const void *src, size_t bytes);
    /* Enqueued copies of n pieces, all host -> backend (to_backend) or all backend -> host,
     * with upload's and download's lifetimes; host pieces lie in alloc_host memory and no two
     * pieces overlap. One operation for all of them: a GPU moves the KV pages of a tier hit
     * together instead of paying a copy's setup per piece. Callers use
     * dsd_backend_copy_many, which loops upload/download where this is NULL. */
    void (*copy_many)(struct dsd_backend *be, const struct dsd_copy *pieces, int n, bool to_backend);
    /* Copies beside the compute (optional; NULL where the backend has none): n pieces, all
     * host -> backend under copy_many's rules, tagged with `layer` (0 <= layer <
     * DSD_SIDE_LAYERS), enqueued so that they overlap the ops enqueued after them: no op waits
     * for them until side_wait(layer) (every op enqueued after it runs after that layer's side
     * copies) or side_wait(-1) (after all of them); synchronize waits for them too. The host
     * pieces must stay unchanged, and nothing may read the destinations, until then. The KV
     * tiers reload a hit's pages this way, layer by layer, and the forward pass waits for a
     * layer's pages just before that layer's attention (docs/KV_CACHE.md). Returns 0, or
     * -EOPNOTSUPP with nothing enqueued where the backend does not overlap copies now (a
     * choice of its own: the caller then uses copy_many); other failures are recorded for the
     * next synchronize, as an op's are. */
    int (*side_copy)(struct dsd_backend *be, const struct dsd_copy *pieces, int n, int layer);
    void (*side_wait)(struct dsd_backend *be, int layer);
    /* Timing points of the stream (benchmarks, the per-op profile of forward.c): timer_new
     * makes one (NULL on failure), timer_mark enqueues it (it records when the work enqueued
     * before it is done), timer_ms gives the milliseconds from mark a to mark b once both
     * are done (after synchronize; negative when unknown). */
    void *(*timer_new)(struct dsd_backend *be);
    void (*timer_mark)(struct dsd_backend *be, void *t);
    double (*timer_ms)(struct dsd_backend *be, void *a, void *b);
    void (*timer_free)(struct dsd_backend *be, void *t);
    /* Where later moe ops count their routing (benchmarks: the experts a batch really uses):
     * each moe call adds the number of tokens it sends to routed expert e to
     * hits[lw->index * n_routed_experts + e] (backend memory the caller zeroed); NULL stops.
     * Recorded steps count as they were recorded. */
    void (*moe_count)(struct dsd_backend *be, int32_t *hits);
};

struct dsd_backend_params {
    struct dsd_model_dims dims;
    enum dsd_numerics numerics;
    enum dsd_kv_dtype kv_dtype;     /* ignored (F32) in exact numerics */
    int n_threads;                  /* CPU worker threads, 0 = one per online CPU */
    int device;                     /* GPU ordinal (CUDA backend) */
    /* Optional: called by prepare_weights with the fraction of weight bytes placed (0..1]. */
    void (*progress)(void *user, double fraction);
    void *progress_user;
};

struct dsd_backend_params dsd_backend_default_params(void);

/* The CPU reference backend. Returns NULL with err set on failure (-EINVAL: dims it cannot
 * run, -ENOMEM). */
struct dsd_backend *dsd_backend_cpu_new(const struct dsd_backend_params *p, struct dsd_err *err);
const struct dsd_ops *dsd_backend_ops(const struct dsd_backend *be);
const struct dsd_backend_params *dsd_backend_params(const struct dsd_backend *be);
/* Bytes of one activation element (4 on the CPU, 2 on CUDA). */
size_t dsd_backend_act_bytes(const struct dsd_backend *be);
void dsd_backend_free(struct dsd_backend *be);
/* ops->copy_many where the backend has it, else one upload or download per piece. */
void dsd_backend_copy_many(struct dsd_backend *be, const struct dsd_copy *pieces, int n, bool to_backend);
/* ops->side_wait where the backend has it (layer -1: every side copy); nothing otherwise. */
void dsd_backend_side_wait(struct dsd_backend *be, int layer);

/* The KV byte layout implied by the dims, numerics and KV dtype (one definition). */
struct dsd_kv_layout dsd_kv_layout_for(const struct dsd_model_dims *dims, enum dsd_numerics numerics,
                                       enum dsd_kv_dtype kv_dtype);

#endif
