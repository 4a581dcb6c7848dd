/*
 * daemon/model/model.h: a loaded DeepSeek V3.2 checkpoint and its forward pass.
 *
 *   struct dsd_model_params mp = dsd_model_default_params();
 *   mp.numerics = DSD_NUMERICS_PRODUCTION;
 *   struct dsd_model *m;
 *   if (dsd_model_load("/models/DeepSeek-V3.2", &mp, &m, &err) < 0) die(err.msg);
 *   struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, n_pages, &err);
 *
 *   // one step of a ragged batch: sequence 0 prefills 7 tokens, sequence 1 decodes 1
 *   struct dsd_batch_seq b[2] = {
 *       { .tokens = chunk, .n_tokens = 7, .pos0 = 0,  .kv = &seq0 },
 *       { .tokens = &tok,  .n_tokens = 1, .pos0 = 41, .kv = &seq1 },
 *   };
 *   float logits[2 * vocab];          // one row per sequence (its last token) by default
 *   struct dsd_forward_out out = { .logits = logits };
 *   dsd_model_forward(m, kv, b, 2, &out, &err);
 *
 * The caller reserves KV pages (dsd_kv_seq_reserve) for positions [0, pos0 + n_tokens)
 * before the step; the step writes the KV of its tokens and reads earlier positions.
 * Positions are absolute: any chunking of a prompt (one prefill, chunks, token by token)
 * computes the same thing, bitwise on the CPU backend.
 * Not thread-safe: one engine thread owns a model and its caches.
 */
#ifndef DSD_MODEL_MODEL_H
#define DSD_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "kv_cache.h"
#include "ops.h"
#include "safetensors.h"
#include "weights.h"

struct dsd_forward_ws;

enum dsd_model_backend {
    DSD_MODEL_BACKEND_CPU = 0,  /* kernels/cpu: the reference, any machine */
    DSD_MODEL_BACKEND_CUDA,     /* kernels/cuda: one Hopper GPU, production numerics */
};

struct dsd_model_params {
    enum dsd_numerics numerics;
    enum dsd_kv_dtype kv_dtype;
    enum dsd_model_backend backend;
    int device;                 /* GPU ordinal for the CUDA backend */
    int n_threads;              /* 0 = all online CPUs */
    bool prefault;              /* read every weight page at load (a daemon wants this) */
    bool no_graphs;             /* never record decode steps (measuring, debugging) */
    /* IndexCache (index_cache.h, docs/INDEXCACHE.md): when either is set, both replace
     * config.json's index_topk_freq and index_topk_pattern (0 / NULL or "" = keep them).
     * Read at load only: the plan is fixed for the model's life. */
    int index_topk_freq;
    const char *index_topk_pattern;
    /* Optional: loading progress 0..1 (weights placed on the device), from the loading thread. */
    void (*progress)(void *user, double fraction);
    void *progress_user;
};

struct dsd_model_params dsd_model_default_params(void);

struct dsd_forward_prof;

struct dsd_model {
    struct dsd_model_config cfg;
    struct dsd_model_dims dims;         /* what the kernels know of cfg */
    float *rope_inv_freq;               /* dims.rope_inv_freq points here */
    struct dsd_forward_ws *ws;          /* the forward pass's workspace (forward.c), NULL until used */
    struct dsd_st_set *set;
    struct dsd_model_weights w;
    struct dsd_backend *be;
    const struct dsd_ops *ops;
    struct dsd_model_params params;
    /* how loading went: weight bytes, seconds reading the files ahead (prefault, CPU backend)
     * and placing the weights on the backend (prepare_weights: on a GPU the copy, which reads
     * the files as it goes) */
    struct dsd_model_load_stats {
        uint64_t weight_bytes;
        double read_s, place_s;
    } load;
    /* sampling's penalty state on the backend (forward.c): [pen_slots][vocab] */
    uint32_t *pen;
    int32_t *pen_tok;                   /* staging of the tokens penalty loads mark */
    int pen_slots;
    struct dsd_tensor_spec *gen_specs;  /* generated models: the names their weights point to */
    bool limit_layers;                  /* steps run only main layers [0, active_layers) (benchmarks) */
    int active_layers;
    struct dsd_forward_prof *prof;      /* the per-op profile, NULL unless enabled (forward.c) */
    bool counting;                      /* a step counting expert use runs (never recorded) */
};

/* The backend `kind` names (backend_load.c): the CPU backend, or the CUDA module loaded on
 * first use. NULL with err set: -ENOTSUP (no CUDA module installed), what the backend says. */
struct dsd_backend *dsd_model_backend_new(enum dsd_model_backend kind, const struct dsd_backend_params *bp,
                                          struct dsd_err *err);
/* "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or "cpu". */
const char *dsd_model_device_name(const struct dsd_model *m);
/* Bytes the weights take where the backend keeps them. */
uint64_t dsd_model_device_weight_bytes(const struct dsd_model *m);

/* The kernels' view of a config (kernels/ops.h): dimensions and derived constants. inv_freq
 * receives the qk_rope_head_dim/2 RoPE frequencies and must outlive every use of *out. */
void dsd_model_dims_from_config(const struct dsd_model_config *c, float *inv_freq, struct dsd_model_dims *out);

/* Loads DIR (config.json + safetensors) onto the backend p names. Returns 0 or a negative
 * errno with err naming the file, tensor or field at fault; -ENOTSUP when this build has no
 * CUDA backend or the GPU cannot run it; -ENODEV when there is no such GPU; -ENOMEM when the
 * weights do not fit its memory. */
int dsd_model_load(const char *dir, const struct dsd_model_params *p, struct dsd_model **out,
                   struct dsd_err *err);
void dsd_model_free(struct dsd_model *m);

/* A model with cfg's shapes and no checkpoint (deepseekd-bench, tests): the weights are made
 * by the backend in its own memory from seed (ops.h generate_weights; on a GPU they never
 * exist on the host), with the scales of dsd_weights_describe (weights.h). p->prefault is
 * ignored. Returns 0, -EINVAL (cfg has shapes the backend cannot run), -ENOTSUP (the backend
 * cannot generate weights, or no CUDA module), -ENODEV, -ENOMEM (they do not fit). */
int dsd_model_new_generated(const struct dsd_model_config *cfg, const struct dsd_model_params *p, uint64_t seed,
                            struct dsd_model **out, struct dsd_err *err);

/* Steps run only main layers [0, n) (benchmarks: the time of a layer is the difference of
 * two such steps; n = 0 runs the embedding and the head alone); n = num_hidden_layers
 * restores all. Decode steps are recorded per layer count. Returns 0, -EINVAL. */
int dsd_model_set_active_layers(struct dsd_model *m, int n, struct dsd_err *err);

/* Milliseconds of one block-scaled FP8 GEMM [M][K] x [N][K]^T on the model's device, the
 * mean of iters calls after a warm-up (the CUDA backend's cuBLASLt GEMM without the
 * activation quantization). -ENOTSUP on backends without one (the CPU: time the linear op
 * instead), else what dsd_cuda.h's dsd_backend_cuda_fp8_gemm_ms returns. */
int dsd_model_fp8_gemm_ms(struct dsd_model *m, int M, int N, int K, int iters, double *ms, struct dsd_err *err);

/* Benchmarks: one of the CUDA backend's kernel choices by name (dsd_cuda.h,
 * dsd_backend_cuda_set_engine: "attn_tile" = "wgmma", ...). Returns 0, -EINVAL (unknown name
 * or value), -ENOTSUP (not the CUDA backend). */
int dsd_model_set_engine(struct dsd_model *m, const char *name, const char *value, struct dsd_err *err);

/* The per-op profile (deepseekd-bench): while on, every op a main-model step enqueues is
 * bracketed by backend timer marks (so such steps run op by op, never from a recording),
 * and dsd_model_profile_read lists the ops of the last step. */
struct dsd_op_time {
    const char *op;             /* "q_a", "indexer_topk", "moe", "lm_head", ... */
    int layer;                  /* -1 outside the layers */
    double ms;
};
/* Turns the profile on for steps of up to max_ops ops (timers allocated here, once).
 * Returns 0, -ENOTSUP (the backend has no timers), -ENOMEM. */
int dsd_model_profile_begin(struct dsd_model *m, int max_ops, struct dsd_err *err);
/* The ops of the last step, in order (at most max); returns how many, or -ENOSPC when the
 * step had more ops than max_ops, -EINVAL when the profile is off or no step ran. */
int dsd_model_profile_read(struct dsd_model *m, struct dsd_op_time *out, int max);
void dsd_model_profile_end(struct dsd_model *m);

/* A KV pool for this model's layers (main + MTP) with n_pages pages (incl. scratch). */
struct dsd_kv_cache *dsd_model_kv_cache_new(struct dsd_model *m, int n_pages, struct dsd_err *err);

struct dsd_batch_seq {
    const int32_t *tokens;
    int n_tokens;
    int32_t pos0;               /* absolute position of tokens[0] */
    struct dsd_kv_seq *kv;      /* pages for [0, pos0 + n_tokens) already reserved */
    bool logits_all;            /* logits for every token of this sequence, else only the last */
    bool no_logits;             /* no logits at all (a prefill chunk that does not end the prompt) */
};

struct dsd_forward_out {
    float *logits;              /* host [rows][vocab]: per sequence (unless no_logits), its last
                                   token or all tokens, in batch order */
    /* Sampling on the backend: with samples set, every logits row is sampled with sample[row]
     * (kernels/sample.h; pen_slot < dsd_model_penalty_reserve's slots) and only the results
     * come back (logits too if asked). */
    const struct dsd_sample_row *sample;    /* host [rows] */
    struct dsd_sample_result *samples;      /* host [rows] */
    float *hidden;              /* optional host [T][hidden]: post-final-norm hidden of every token */
    int32_t *topk;              /* optional host [layers][T][index_topk]: indexer selections */
    int n_rows;                 /* set by the call: logits rows written */
};

/* Sizes the forward pass's workspace for steps of up to max_tokens tokens, max_rows logits
 * rows, max_seqs sequences and max_pages KV pages in all, so that such steps allocate
 * nothing (a larger step grows it). Returns 0, -EINVAL (sizes), -ENOMEM. */
int dsd_model_reserve(struct dsd_model *m, int max_tokens, int max_rows, int max_seqs, int max_pages,
                      struct dsd_err *err);
/* Since load: decode steps replayed from a recorded step (CUDA graphs) and steps run op by op,
 * the host time spent enqueuing each kind (from the call to the wait for its outputs), the
 * kernel launches a recorded step holds, and the workspace's backend memory. */
struct dsd_step_stats {
    uint64_t graph_steps, eager_steps;
    uint64_t graph_host_ns, eager_host_ns;
    size_t graph_kernels;       /* of the latest recording; 0 before one */
    size_t workspace_bytes;
};
void dsd_model_step_stats(const struct dsd_model *m, struct dsd_step_stats *out);
/* The penalty state that sampling rows with pen_slot >= 0 read and update: n_slots rows of
 * one uint32 per vocabulary id in backend memory (grows, never shrinks; growing clears it).
 * Returns 0, -EINVAL, -ENOMEM, or the backend's failure of the steps still running. */
int dsd_model_penalty_reserve(struct dsd_model *m, int n_slots, struct dsd_err *err);
/* Sets slot `slot` from a request's tokens: cleared, then tokens[0..n) marked seen and those
 * at index >= count_from (the generated ones) counted. Enqueued: tokens must stay valid until
 * the next step completes. Returns 0 or -EINVAL (slot, n). */
int dsd_model_penalty_load(struct dsd_model *m, int slot, const int32_t *tokens, int n, int count_from,
                           struct dsd_err *err);
void dsd_model_penalty_free(struct dsd_model *m);
/* Frees the workspace (dsd_model_free does). */
void dsd_forward_ws_free(struct dsd_model *m);

/* One forward step of the main model: enqueues the whole step on the backend, then waits
 * for its outputs. Returns 0, -EINVAL (a token id >= vocab, a position past
 * max_position_embeddings, missing KV pages, empty batch; err says which), -ENOMEM (the
 * workspace could not grow), or the backend's failure (-EIO, err says where). */
int dsd_model_forward(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs, int n_seqs,
                      struct dsd_forward_out *out, struct dsd_err *err);

/* The routed experts the next step uses (deepseekd-bench): runs one step like
 * dsd_model_forward, op by op, with the backend counting its routing (ops.h moe_count), and
 * writes hits[layer * n_routed_experts + e] = tokens the step sent to expert e of main layer
 * `layer` (hits: num_hidden_layers * n_routed_experts entries). Returns what
 * dsd_model_forward returns, or -ENOTSUP when the backend cannot count. */
int dsd_model_forward_count_experts(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs,
                                    int n_seqs, struct dsd_forward_out *out, int32_t *hits, struct dsd_err *err);

/* One step of the MTP layer (docs/MODEL.md §8): for each token, tokens[] are the *next* tokens
 * (t_{i+1}) and hidden_in [T][hidden] the main model's post-norm hidden at positions i
 * (pos0.. as in the batch). Logits predict t_{i+2}. Uses the MTP layer's own KV. out->hidden,
 * when given, receives the post-shared_head.norm hidden (the input of a further MTP step).
 * -EINVAL when the checkpoint has no MTP layer. */
int dsd_model_forward_mtp(struct dsd_model *m, struct dsd_kv_cache *kv, const struct dsd_batch_seq *seqs,
                          int n_seqs, const float *hidden_in, struct dsd_forward_out *out, struct dsd_err *err);

#endif
