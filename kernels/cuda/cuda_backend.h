/*
 * kernels/cuda/cuda_backend.h: internals shared by the CUDA backend's files (one file per
 * concern, like kernels/cpu). Users see only ops.h and dsd_backend_cuda_new() (dsd_cuda.h).
 *
 * One instance per GPU and no process-global CUDA state: every call that touches the device
 * first makes the instance's device current (cuda_use), all work goes to the instance's one
 * stream, and nothing is waited for except in synchronize (and copies to pageable host
 * memory, which CUDA itself makes synchronous).
 *
 * Errors: an op never aborts. A failing CUDA or cuBLASLt call is recorded with file:line
 * (the first one wins) and the op returns; the next synchronize reports it once and clears
 * it. Kernels check their own launches with CU_LAUNCHED.
 *
 * Numerics: production only (docs/NUMERICS.md): activations are bf16 in device memory,
 * f32 buffers are f32; every op computes in fp32 and rounds its outputs to bf16 the way
 * the CPU reference does, so the CPU backend is the oracle.
 *
 * Weights after prepare_weights: every dsd_weight's data points to device memory in its
 * checkpoint dtype (F8_E4M3 or BF16; F16 is widened to F32, F32 stays F32), and FP8
 * weights' scale points to device fp32 scales laid out [ceil(rows/128)][stride] with
 * stride = cuda_scale_stride(w) (rows padded to 4 K-blocks for cuBLASLt).
 */
#ifndef DSD_CUDA_BACKEND_H
#define DSD_CUDA_BACKEND_H

#include <errno.h>
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend_impl.h"
#include "dsd_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_attn_state;     /* cuda_attention.cu */
struct cuda_moe_state;      /* cuda_moe.cu */
struct cuda_linear_state;   /* cuda_linear.c */

#define CUDA_RETIRED_MAX 32
/* Streams beside the main one for prefill work that comes in many small independent pieces
 * (the MoE experts' GEMMs, cuda_moe_lt.c): forked from and joined back to `stream` with
 * events inside one op, so the op stays ordered on `stream` for everything else. */
#define CUDA_SIDE_STREAMS 4

struct cuda_backend {
    struct dsd_backend base;
    int device;
    char name[256];             /* "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" */
    size_t mem_total;
    int sms;                    /* streaming multiprocessors */
    cudaStream_t stream;
    cudaStream_t side[CUDA_SIDE_STREAMS];
    cudaEvent_t side_fork, side_join[CUDA_SIDE_STREAMS];
    /* ops.h side_copy: a copy stream that starts after what `stream` has enqueued, and per
     * layer the event of its latest copies (made on first use) and whether `stream` has yet
     * to wait for it */
    cudaStream_t copy_stream;
    cudaEvent_t copy_after;
    cudaEvent_t layer_done[DSD_SIDE_LAYERS];
    bool layer_pending[DSD_SIDE_LAYERS];
    cublasLtHandle_t lt;
    void *lt_workspace;         /* the side streams each take 1/CUDA_SIDE_STREAMS of it */
    size_t lt_workspace_bytes;
    void *scratch;              /* cuda_scratch() */
    size_t scratch_bytes;
    /* Scratch buffers outgrown while recorded steps existed: a graph keeps the addresses it
     * was recorded with, so they live until the last graph is freed (cu_graph_free). */
    void *retired[CUDA_RETIRED_MAX];
    int n_retired;
    int live_graphs;            /* graphs instantiated and not yet freed */
    /* the first failure since the last synchronize */
    int status;
    char status_msg[DSD_ERR_MSG_MAX];
    struct cuda_linear_state *lin;
    struct cuda_attn_state *attn;
    enum dsd_cuda_attn_kernel attn_kernel;      /* dsd_backend_cuda_set_attention_kernel */
    enum dsd_cuda_attn_tile attn_tile;          /* dsd_backend_cuda_set_attention_tile */
    enum dsd_cuda_indexer_kernel indexer_kernel;    /* dsd_backend_cuda_set_indexer_kernel */
    enum dsd_cuda_ffn_path ffn_path;            /* dsd_backend_cuda_set_ffn_path */
    enum dsd_cuda_moe_prefill moe_prefill;      /* dsd_backend_cuda_set_moe_prefill */
    enum dsd_cuda_linear_path linear_path;      /* dsd_backend_cuda_set_linear_path */
    enum dsd_cuda_sampler sampler;              /* dsd_backend_cuda_set_sampler */
    enum dsd_cuda_kv_reload kv_reload;          /* dsd_backend_cuda_set_kv_reload */
    struct cuda_moe_state *moe;
    int32_t *moe_hits;          /* moe_count's counters (device), or NULL */
    void *weight_block;         /* every weight, one allocation (prepare_weights) */
    size_t weight_bytes;
};

static inline struct cuda_backend *cuda(struct dsd_backend *be)
{
    return (struct cuda_backend *)be;
}

/* Makes the instance's device current for this thread. */
void cuda_use(struct cuda_backend *cb);
/* Records a failure (the first one is kept until synchronize). */
void cuda_fail(struct cuda_backend *cb, int code, const char *fmt, ...)
#ifndef __CUDACC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Records a failed CUDA runtime call; returns whether it succeeded. */
bool cuda_ok_(struct cuda_backend *cb, cudaError_t e, const char *what, const char *file, int line);
bool cublas_ok_(struct cuda_backend *cb, cublasStatus_t s, const char *what, const char *file, int line);
#define CU_OK(cb, call) cuda_ok_((cb), (call), #call, __FILE__, __LINE__)
#define CUBLAS_OK(cb, call) cublas_ok_((cb), (call), #call, __FILE__, __LINE__)
#define CU_LAUNCHED(cb) cuda_ok_((cb), cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

/* A device buffer of at least `bytes` for one op's temporaries, valid until the next call
 * of cuda_scratch (ops run one after the other on the stream, so one buffer serves all).
 * Grows (waiting for the stream first) when too small; NULL after recording a failure, or
 * while recording a step (growing would synchronize the stream being captured: the recording
 * then fails and the step runs eagerly). A buffer outgrown while recorded steps exist is
 * kept until they are all freed: a replayed step still writes to it. */
void *cuda_scratch(struct cuda_backend *cb, size_t bytes);

/* Row stride, in K blocks, of an FP8 weight's device scales (see the top). */
static inline int64_t cuda_scale_stride(const struct dsd_weight *w)
{
    return dsd_cuda_weight_scale_stride((int)((w->cols + 127) / 128 * 128));
}

/* ---- the ops (contracts in ops.h), one file per concern ---- */
/* cuda_act.cu: embedding, norms, RoPE, copies, conversions */
void cuda_op_embed(struct dsd_backend *be, void *out, const struct dsd_weight *table, const int32_t *tokens, int T);
void cuda_op_rmsnorm(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                     int T, int n);
void cuda_op_add_rmsnorm(struct dsd_backend *be, void *out, void *resid, const void *delta,
                         const struct dsd_weight *w, int T);
void cuda_op_layernorm(struct dsd_backend *be, void *out, const void *x, const struct dsd_weight *w,
                       const struct dsd_weight *b, int T, int n);
void cuda_op_rope(struct dsd_backend *be, void *x, int ld, int n_heads, int head_stride, int offset,
                  const int32_t *pos, int T, bool interleaved);
void cuda_op_concat(struct dsd_backend *be, void *out, const void *a, int na, const void *b, int nb, int T);
void cuda_op_gather_rows(struct dsd_backend *be, void *out, const void *x, int n_cols, const int32_t *rows, int n);
void cuda_op_to_f32(struct dsd_backend *be, float *out, const void *x, int T, int n);
void cuda_op_from_f32(struct dsd_backend *be, void *out, const float *x, int T, int n);
/* cuda_linear.c (+ cuda_quant.cu): FP8 block-scaled and bf16/f32 linears */
void cuda_op_linear(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                    int T, unsigned flags);
int cuda_linear_init(struct cuda_backend *cb, struct dsd_err *err);
void cuda_linear_free(struct cuda_backend *cb);
/* cuda_kv.cu: KV stores */
void cuda_op_mla_kv_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *kv_in, int ld,
                          const int32_t *slot, int T);
void cuda_op_index_k_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *k, const int32_t *slot,
                           int T);
/* cuda_indexer.cu */
void cuda_op_indexer_topk(struct dsd_backend *be, int32_t *out, int topk, const void *q, const float *w,
                          const struct dsd_kv_layer *kv, const struct dsd_step *st);
/* cuda_attention.cu */
void cuda_op_mla_attention(struct dsd_backend *be, void *out, const void *q, const struct dsd_weight *kv_b,
                           const struct dsd_kv_layer *kv, const int32_t *sel, int topk, const struct dsd_step *st);
int cuda_attention_prepare(struct cuda_backend *cb, struct dsd_model_weights *w, struct dsd_err *err);
void cuda_attention_release(struct cuda_backend *cb, struct dsd_model_weights *w);
/* cuda_moe.cu: dense MLP and the MoE block */
void cuda_op_mlp(struct dsd_backend *be, void *out, const void *x, const struct dsd_expert_weights *w, int T);
void cuda_op_moe(struct dsd_backend *be, void *out, const void *x, const struct dsd_layer_weights *lw, int T);
/* cuda_sample.cu: sampling and the penalty state */
void cuda_op_sample(struct dsd_backend *be, struct dsd_sample_result *out, const float *logits,
                    const struct dsd_sample_row *rows, int n_rows, uint32_t *pen, int64_t vocab);
/* cuda_sample_slices.cu: the sample op with each row in slices of many CTAs (enqueued on
 * cb->stream; its temporaries in cuda_scratch) */
void cuda_sample_slices(struct cuda_backend *cb, struct dsd_sample_result *out, const float *logits,
                        const struct dsd_sample_row *rows, int n_rows, uint32_t *pen, int64_t vocab);
void cuda_op_penalty_mark(struct dsd_backend *be, uint32_t *pen_row, const int32_t *tokens, int n, int count_from,
                          bool reset, int64_t vocab);
int cuda_moe_prepare(struct cuda_backend *cb, struct dsd_model_weights *w, struct dsd_err *err);
void cuda_moe_release(struct cuda_backend *cb, struct dsd_model_weights *w);

#ifdef __cplusplus
}
#endif

#endif
