/* kernels/cpu/cpu_backend.h: internals shared by the CPU backend's files. */
#ifndef DSD_CPU_BACKEND_H
#define DSD_CPU_BACKEND_H

#include "backend_impl.h"
#include "cpu_ref.h"
#include "numeric.h"
#include "thread_pool.h"

struct cpu_backend {
    struct dsd_backend base;
    struct dsd_thread_pool *pool;
    bool production;                /* numerics == PRODUCTION */
    const float *inv_freq;          /* qk_rope_head_dim/2 RoPE frequencies (base.rope_inv_freq) */
    float rope_attention_factor;
    float softmax_scale;
    void *sample_scratch;           /* cpu_sample.c's per-thread scratch */
    size_t sample_scratch_bytes;
    void *gen_block;                /* generate_weights' memory, freed by release_weights */
    int32_t *moe_hits;              /* moe_count's counters, or NULL */
    /* side copies not yet made (cpu_backend.c: made when waited for), in enqueue order */
    struct cpu_side_copy { struct dsd_copy c; int layer; } *side;
    int n_side, side_cap;
};

static inline struct cpu_backend *cpu(struct dsd_backend *be)
{
    return (struct cpu_backend *)be;
}

/* Rounds like an activation: to bf16 in production numerics, untouched in exact. */
static inline float cpu_act(const struct cpu_backend *cb, float v)
{
    return cb->production ? dsd_round_bf16(v) : v;
}

/* y[t][0:w->rows] = W x[t] for rows [n0, n1) only, in the calling thread. xq/xs are the
 * quantized activations (production FP8 path) or NULL. Used by the parallel linear op and
 * by the MoE experts (which parallelize over experts instead). */
void cpu_linear_rows(const struct cpu_backend *cb, float *y, int ldy, const float *x, int ldx, const float *xq,
                     const float *xs, const struct dsd_weight *w, int T, int64_t n0, int64_t n1, unsigned flags);
/* Quantizes x [T][K] for an FP8 linear when production numerics need it: returns false (and
 * leaves the buffers alone) otherwise. xq: T*K floats, xs: T*K/128 floats. */
bool cpu_linear_quantize_input(const struct cpu_backend *cb, const struct dsd_weight *w, const float *x, int ldx,
                               int T, float *xq, float *xs);
/* Whole linear in the calling thread (quantizing as needed); y: [T][w->rows]. */
void cpu_linear_serial(const struct cpu_backend *cb, float *y, const float *x, const struct dsd_weight *w, int T,
                       unsigned flags);

/* The ops, one file per concern (contracts in ops.h; activations are float arrays here). */
void cpu_op_embed(struct dsd_backend *be, void *out, const struct dsd_weight *table, const int32_t *tokens, int T);
void cpu_op_linear(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                   int T, unsigned flags);
void cpu_op_concat(struct dsd_backend *be, void *out, const void *a, int na, const void *b, int nb, int T);
void cpu_op_gather_rows(struct dsd_backend *be, void *out, const void *x, int n_cols, const int32_t *rows, int n);
void cpu_op_rmsnorm(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                    int T, int n);
void cpu_op_add_rmsnorm(struct dsd_backend *be, void *out, void *resid, const void *delta,
                        const struct dsd_weight *w, int T);
void cpu_op_layernorm(struct dsd_backend *be, void *out, const void *x, const struct dsd_weight *w,
                      const struct dsd_weight *b, int T, int n);
void cpu_op_rope(struct dsd_backend *be, void *x, int ld, int n_heads, int head_stride, int offset,
                 const int32_t *pos, int T, bool interleaved);
void cpu_op_mla_kv_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *kv_in, int ld,
                         const int32_t *slot, int T);
void cpu_op_mla_attention(struct dsd_backend *be, void *out, const void *q, const struct dsd_weight *kv_b,
                          const struct dsd_kv_layer *kv, const int32_t *sel, int topk, const struct dsd_step *st);
void cpu_op_index_k_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *k,
                          const int32_t *slot, int T);
void cpu_op_indexer_topk(struct dsd_backend *be, int32_t *out, int topk, const void *q, const float *w,
                         const struct dsd_kv_layer *kv, const struct dsd_step *st);
void cpu_op_mlp(struct dsd_backend *be, void *out, const void *x, const struct dsd_expert_weights *w, int T);
void cpu_op_moe(struct dsd_backend *be, void *out, const void *x, const struct dsd_layer_weights *lw, int T);
void cpu_op_sample(struct dsd_backend *be, struct dsd_sample_result *out, const float *logits,
                   const struct dsd_sample_row *rows, int n_rows, uint32_t *pen, int64_t vocab);
void cpu_op_penalty_mark(struct dsd_backend *be, uint32_t *pen_row, const int32_t *tokens, int n, int count_from,
                         bool reset, int64_t vocab);
int cpu_prepare_attention_weights(struct cpu_backend *cb, struct dsd_model_weights *w, struct dsd_err *err);
void cpu_release_attention_weights(struct cpu_backend *cb, struct dsd_model_weights *w);

/* A float vector from a 1-D weight (norm weights may be BF16/F16/F32). n <= w->cols. */
void cpu_weight_vector(const struct dsd_weight *w, float *out);

#endif
