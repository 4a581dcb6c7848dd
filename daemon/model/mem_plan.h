/*
 * daemon/model/mem_plan.h: where every byte of GPU memory goes, before anything is loaded.
 *
 * One function computes the plan: the weights each GPU holds, the workspace of one engine
 * step, the KV pages made from what is left, and the host tier. `deepseekd --plan` prints
 * it (daemon/serve/plan.c); the CUDA backend will size its pools from the same numbers.
 *
 *   struct dsd_model_config cfg;                 // dsd_model_config_load(DIR/config.json)
 *   struct dsd_mem_plan_params p = dsd_mem_plan_default_params();
 *   p.n_gpus = 8;
 *   p.gpu_mem_bytes = free_bytes;                // cudaMemGetInfo's free, after the context
 *   p.max_batch_tokens = 2048; p.max_batch = 64;
 *   p.kv_mode = DSD_MEM_PLAN_KV_FRACTION; p.kv_fraction = 0.9;
 *   struct dsd_mem_plan plan;
 *   if (dsd_mem_plan_compute(&cfg, set_or_NULL, &p, &plan, &err) < 0) die(err.msg);
 *   if (!plan.fits) printf("needs %llu more bytes per GPU\n", plan.shortfall);
 *   dsd_mem_plan_print(&plan, stdout);
 *
 * set is the checkpoint's open safetensors set (dsd_st_open_dir) or NULL for a config.json
 * alone. With a set, each tensor's dtype comes from its header (only headers are read);
 * without one, from the dtype the published checkpoint stores (dsd_tensor_specs()).
 *
 * ---- Parallel layout (N GPUs) ----
 * Data-parallel attention + expert-parallel MoE: every GPU holds the embedding, the LM head,
 * all attention and indexer weights, the dense MLP layers, the shared experts, the routers
 * and every norm ("replicated"); the routed experts of every MoE layer (the MTP layer's
 * included) are split into N contiguous blocks, GPU g holding E/N experts, the first E % N
 * GPUs one more. Each GPU runs whole sequences (its own KV pool, all layers, all heads).
 * Why not tensor-parallel attention: MLA caches one latent per token shared by all heads,
 * so splitting heads over GPUs would store the same latent on every GPU (N copies of the KV
 * cache); replicating the ~14 GB of attention weights of V3.2 costs less than that, and
 * keeps attention free of collectives. The experts (over 95% of V3.2's bytes) are what
 * must be split.
 *
 * ---- Weights: bytes as a GPU keeps them ----
 * Per tensor of dsd_tensor_specs() (rows x cols, 1-D tensors have rows = 1):
 *   kv_b_proj (any dtype)  rows*cols*2       dequantized to bf16 once (docs/NUMERICS.md,
 *                                            "absorbed attention"); the FP8 original is dropped
 *   F8_E4M3 linear         rows*cols + 4*ceil(rows/128)*S(cols)   with
 *                          S(K) = (ceil(K/128) + 3) & ~3: each row of weight_scale_inv padded
 *                          to a multiple of 4 blocks (dsd_cuda_weight_scale_stride(),
 *                          kernels/cuda/dsd_cuda.h)
 *   norm weights, norm biases, e_score_correction_bias
 *                          count*4           fp32 (norms run in fp32, docs/NUMERICS.md)
 *   anything else          count*size(dtype) as stored (bf16 embedding, LM head, router,
 *                                            indexer weights_proj, MTP eh_proj)
 * The MTP layer's optional copies of the embedding and LM head are not loaded (the main
 * model's are used), so they count nothing.
 *
 * ---- Workspace: one engine step, identical on every GPU ----
 * T = max_batch_tokens, T16 = T rounded up to 16 (dsd_cuda_fp8_rows()), B = max_batch,
 * C = max_context, N = n_gpus, k = num_experts_per_tok, E = n_routed_experts,
 * D = hidden_size, Q = q_lora_rank, H = num_attention_heads, Nd = qk_nope_head_dim,
 * R = qk_rope_head_dim, L = kv_lora_rank, V = v_head_dim, Hi = index_n_heads,
 * Di = index_head_dim, K = index_topk, I = intermediate_size, F = moe_intermediate_size,
 * S = n_shared_experts, Vocab = vocab_size, M = 1 when the model has an MTP layer else 0.
 * Activations are fp32 arrays (the contract of kernels/ops.h); all terms are bytes.
 *   activations     4*T*(3D + Q + H*(Nd+R) + (L+R) + Hi*Di + 2*Di + Hi + H*V + K + 2D*M)
 *                   the step buffers of daemon/model/forward.c (alloc_bufs), MTP concat incl.
 *   fp8_staging     max over the two row counts below of rows16*(Kx + 4*ceil(Kx/128)) (quantized
 *                   input and its 1x128 scales) + max of 2*rows16*Nx (the bf16 GEMM output
 *                   before the transpose, kernels/cuda/cuda_fp8_gemm.c), where
 *                   rows16 = T16 with Kx/Nx the largest in/out features of the FP8 linears
 *                   outside routed experts, and rows16 = Rc rounded up to 16 with Kx/Nx the
 *                   largest of the routed experts' (Rc below); 0 when nothing is FP8
 *   gemm_workspace  DSD_CUDA_GEMM_WORKSPACE_BYTES (cuBLASLt, kernels/cuda/dsd_cuda.h), when
 *                   anything is FP8
 *   mlp             4*T*2*max(I if a dense layer exists, S*F if an MoE layer exists)
 *                   gate and up outputs of the dense MLP / shared expert (silu*up in place)
 *   router          4*T*E + 8*T*k   (fp32 router logits; chosen expert ids and weights)
 *   moe_dispatch    N > 1: 2*4*N*T*D + 8*N*T*k. Each GPU receives at most one copy of every
 *                   token of every GPU (N*T rows, each with its k routes) and sends as many
 *                   weighted results back; 0 on one GPU
 *   moe_experts     max(4*Rc*(2D + 2F), G) with Rc = T*k: the routed experts run over expanded
 *                   (token, expert) rows in chunks of at most Rc rows (one GPU's step never
 *                   has more; N GPUs may send up to N*T*min(k, experts on a GPU), processed
 *                   in several chunks): gathered input, gate and up outputs, expert output;
 *                   G = the CUDA backend's grouped experts (kernels/cuda/cuda_moe_grouped.cu):
 *                   2*P*D + T*(D + 4*ceil(D/128)) + 16*nb + 128*min(nb, 256)*(3Fx + 4*ceil(Fx/128))
 *                   with P = Rc + T (the shared expert's pairs; Rc without one), Fx = max(F, S*F),
 *                   nb = min(ceil(P/128) + E + 1 (E without a shared expert), P) blocks of 128
 *                   pairs: y per pair, the quantized tokens, the block list and one chunk of
 *                   intermediate rows (bf16, e4m3, scales); G is the larger when T is small
 *   attention       4*T*H*(2L + R + 1)   absorbed sparse MLA: q in latent form (L+R per
 *                   head), the latent output (L per head) and the softmax log-sum-exp
 *   indexer_logits  4*T*C   fp32 scores of every step token against every cached position
 *                   of its sequence (worst case: all T tokens at context C)
 *   logits          4*B*(Vocab + D)   one logits row per sequence and its gathered hidden row
 *   step_meta       4*4*T + 4*B*ceil(C/64)   token ids, positions, sequence ids and KV slots
 *                   of the step; the page table of B sequences
 * (MoE terms are 0 for a model without MoE layers.)
 *
 * ---- KV pages ----
 * page_bytes = dsd_kv_cache_page_bytes(dsd_kv_layout_for(cfg, production, kv_dtype),
 * main + MTP layers): 64 tokens of latent entries (656 B per token and layer in FP8, 1152 in
 * bf16, for V3.2) and one index-K page (64 * 132 B) per layer. Page 0 of a pool is scratch.
 *   need      = weights + workspace + min_pages*page_bytes,
 *               min_pages = 1 + ceil(T/64) (scratch + one full step of one sequence)
 *   fits      = need <= gpu_mem on every GPU; shortfall = max over GPUs of need - gpu_mem
 *   leftover  = gpu_mem - weights - workspace
 *   pages     = DSD_MEM_PLAN_KV_FRACTION: floor(floor(kv_fraction*leftover) / page_bytes)
 *               DSD_MEM_PLAN_KV_BYTES:    floor(kv_bytes / page_bytes)
 *               DSD_MEM_PLAN_KV_PAGES:    kv_pages
 *               then raised to min_pages if below (kv_raised); with BYTES/PAGES a pool
 *               larger than leftover does not fit (need uses the pool instead of min_pages)
 *   tokens    = (pages - 1) * 64 per GPU (a sequence lives on one GPU)
 *   unused    = gpu_mem - weights - workspace - pages*page_bytes
 * Host tier: host_pages = floor(host_tier_bytes / page_bytes) (one pool for the host, no
 * scratch page), host_tokens = host_pages * 64.
 */
#ifndef DSD_MODEL_MEM_PLAN_H
#define DSD_MODEL_MEM_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "err.h"
#include "ops.h"
#include "safetensors.h"
#include "weights.h"

#define DSD_MEM_PLAN_MAX_GPUS 256
/* Memory per GPU when none is given and no GPU is asked: an H100 80GB HBM3, whose memory
 * nvidia-smi reports as 81559 MiB. The CUDA context takes some of it (docs/MEMORY_PLAN.md,
 * "GPU memory"); the CUDA backend passes cudaMemGetInfo's free bytes instead. */
#define DSD_MEM_PLAN_H100_80GB_BYTES 85520809984ull

enum dsd_mem_plan_kv_mode {
    DSD_MEM_PLAN_KV_FRACTION = 0,   /* kv_fraction of what weights and workspace leave */
    DSD_MEM_PLAN_KV_BYTES,          /* kv_bytes per GPU */
    DSD_MEM_PLAN_KV_PAGES,          /* kv_pages per GPU (scratch page included) */
};

struct dsd_mem_plan_params {
    enum dsd_kv_dtype kv_dtype;     /* DSD_KV_FP8 or DSD_KV_BF16 (production numerics) */
    int n_gpus;                     /* 1..DSD_MEM_PLAN_MAX_GPUS */
    uint64_t gpu_mem_bytes;         /* usable bytes per GPU, > 0 */
    int max_batch;                  /* sequences per step, >= 1 */
    int max_batch_tokens;           /* tokens per step, >= 1 */
    int64_t max_context;            /* tokens per sequence; 0 = max_position_embeddings */
    enum dsd_mem_plan_kv_mode kv_mode;
    double kv_fraction;             /* FRACTION: in (0, 1] */
    uint64_t kv_bytes;              /* BYTES: > 0 */
    int64_t kv_pages;               /* PAGES: >= 1 */
    uint64_t host_tier_bytes;       /* pinned host memory for the KV host tier, 0 = none */
};

/* n_gpus 1, the H100 default memory, max_batch 64, max_batch_tokens 2048, the model's
 * context, FP8 KV, kv_fraction 0.9, no host tier. */
struct dsd_mem_plan_params dsd_mem_plan_default_params(void);

/* Weight groups, one copy of the model (for the printed breakdown). */
enum dsd_mem_plan_group {
    DSD_MEM_PLAN_EMBED = 0,         /* model.embed_tokens */
    DSD_MEM_PLAN_LM_HEAD,           /* lm_head */
    DSD_MEM_PLAN_NORMS,             /* input/post-attention layernorms, model.norm */
    DSD_MEM_PLAN_ATTENTION,         /* MLA projections and their norms (kv_b as bf16) */
    DSD_MEM_PLAN_INDEXER,           /* DSA indexer: wq_b, wk, k_norm, weights_proj */
    DSD_MEM_PLAN_DENSE_MLP,         /* layers below first_k_dense_replace */
    DSD_MEM_PLAN_SHARED_EXPERTS,
    DSD_MEM_PLAN_ROUTER,            /* gate weight and e_score_correction_bias */
    DSD_MEM_PLAN_MTP,               /* enorm, hnorm, eh_proj, shared_head.norm */
    DSD_MEM_PLAN_ROUTED_EXPERTS,    /* split over the GPUs; everything above is replicated */
    DSD_MEM_PLAN_GROUP_COUNT
};
const char *dsd_mem_plan_group_name(enum dsd_mem_plan_group g);

struct dsd_mem_plan_workspace {     /* the terms of the header's formula, bytes */
    uint64_t activations, fp8_staging, gemm_workspace, mlp, router, moe_dispatch, moe_experts,
        attention, indexer_logits, logits, step_meta;
    uint64_t total;
};

struct dsd_mem_plan_gpu {
    int first_expert, n_experts;    /* routed experts [first, first + n) of every MoE layer */
    uint64_t weights_replicated;    /* same on every GPU */
    uint64_t weights_experts;       /* this GPU's routed experts, all MoE layers */
    uint64_t weights;               /* the two above */
    uint64_t workspace;
    uint64_t need;                  /* weights + workspace + minimum (or requested) KV */
    bool fits;
    uint64_t shortfall;             /* need - gpu_mem when !fits, else 0 */
    /* Set when fits (else 0): */
    int64_t kv_pages;               /* scratch page included */
    uint64_t kv_bytes;              /* kv_pages * page_bytes */
    int64_t kv_tokens;              /* (kv_pages - 1) * 64 */
    uint64_t unused;                /* gpu_mem - weights - workspace - kv_bytes */
};

struct dsd_mem_plan {
    struct dsd_mem_plan_params params;      /* as given, max_context resolved */
    bool from_checkpoint;                   /* dtypes from safetensors headers */
    int n_layers;                           /* main + MTP layers (each has KV) */
    int n_moe_layers;                       /* MoE layers, MTP included */
    /* one copy of the model, by group; total = sum of groups */
    uint64_t weights_by_group[DSD_MEM_PLAN_GROUP_COUNT];
    uint64_t weights_total;
    uint64_t weights_replicated;            /* total minus routed experts */
    uint64_t expert_bytes_max;              /* the largest one routed expert, all MoE layers */
    uint64_t file_tensor_bytes;             /* with a checkpoint: dsd_st_total_bytes, else 0 */
    struct dsd_mem_plan_workspace ws;
    /* KV geometry */
    size_t mla_token_bytes;                 /* per token and layer */
    size_t index_page_bytes;                /* per 64-token page and layer */
    uint64_t page_bytes;                    /* one page, every layer, both arenas */
    int64_t min_pages;
    bool kv_raised;                         /* the requested pool was below min_pages */
    /* per GPU and overall */
    struct dsd_mem_plan_gpu gpu[DSD_MEM_PLAN_MAX_GPUS];
    bool fits;                              /* every GPU fits */
    uint64_t shortfall;                     /* max over GPUs, 0 when fits */
    int64_t kv_tokens_total;                /* sum over GPUs */
    /* host tier */
    int64_t host_pages, host_tokens;
    uint64_t host_bytes;                    /* host_pages * page_bytes */
};

/* Computes the plan. Returns 0 (whether or not it fits: see plan->fits), or
 *   -EINVAL     a parameter out of range (err names it), or with a set: a tensor the config
 *               implies is missing from the checkpoint or has another shape (err names it)
 *   -ENOMEM     out of memory listing the tensors
 *   -EOVERFLOW  a size does not fit in 64 bits (absurd dimensions or parameters)
 * plan is fully written on success, unspecified on failure. */
int dsd_mem_plan_compute(const struct dsd_model_config *cfg, const struct dsd_st_set *set,
                         const struct dsd_mem_plan_params *p, struct dsd_mem_plan *plan,
                         struct dsd_err *err);

/* The device bytes of one tensor by the rules above: name is the tensor's name, dtype and
 * the 1-D/2-D shape (ndim 1: shape[0] elements) as stored, role from its spec. */
uint64_t dsd_mem_plan_tensor_bytes(const char *name, enum dsd_tensor_role role, enum dsd_dtype dtype,
                                   int ndim, const int64_t *shape);

/* Writes v with thousands separators ("85,520,809,984") into buf (len >= 27 holds any
 * value); returns buf. */
const char *dsd_mem_plan_grouped(uint64_t v, char *buf, size_t len);

/* Prints the plan as tables (GiB with 2 decimals and exact bytes) and the verdict:
 * "fits" or "does not fit: needs N more bytes per GPU". Returns 0, or -EIO when writing fails. */
int dsd_mem_plan_print(const struct dsd_mem_plan *plan, const struct dsd_model_config *cfg, FILE *out);

#endif
