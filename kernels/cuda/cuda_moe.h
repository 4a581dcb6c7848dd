/*
 * kernels/cuda/cuda_moe.h: what cuda_moe.cu (routing, sort, streaming experts, combine) and
 * cuda_moe_lt.c (the prefill experts through cuBLASLt) share. Design: docs/CUDA.md,
 * "The dense MLP and the MoE block".
 */
#ifndef DSD_CUDA_MOE_H
#define DSD_CUDA_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tokens up to which the experts run in the weight-streaming kernels; above it the grouped
 * FP8 GEMMs (cuda_moe_grouped.cu, moe_prefill = AUTO or GROUPED) or cuBLASLt per expert
 * (LANES, SERIAL: one host synchronization per call). Streaming and grouped are both free of
 * host synchronization, so graph-capturable. Measured on an H100 at V3.2's shapes
 * (test_cuda_moe's forced sweep, 2026-12-07, docs/KERNELS.md): streaming 1.26 ms at 8 tokens
 * against grouped 1.46; at 16 tokens 2.25 against 2.03, at 32 3.68 against 2.72, at 128 10.9
 * against 3.9. (Against cuBLASLt alone, 2026-12-06, streaming won up to 128 tokens.) */
#define MOE_STREAM_MAX_T 8

/* The same choice for the dense MLP, where every token is a pair of the one "expert", so
 * streaming re-reads the whole weight per tile of 4 tokens while one cuBLASLt GEMM per
 * matrix (no synchronization: the count is T) reads it once. Same sweep: a single token
 * streams in 0.163 ms (the one-pair kernel), 4 tokens take 0.289 ms streamed, and cuBLASLt
 * takes 0.21 ms from 8 tokens up (0.57 ms streamed at 8, 3.3 ms at 32). */
#define MLP_STREAM_MAX_T 1

/* One SwiGLU FFN's device weights: gate, up, down (FP8) and their block scales (rows padded
 * to cuda_scale_stride K-blocks); I = intermediate width (gate rows). */
struct moe_ffn_w {
    const uint8_t *w[3];
    const float *s[3];
    int I;
    int pad_;
};

/* The token-by-expert sort, device memory. Pair p < T*k is (token p / k, slot p % k); the
 * shared expert (id E) owns pairs T*k + t. Expert e's pairs are perm[off[e] .. off[e] +
 * cnt[e]) in ascending order; active[0 .. *n_active) lists experts with pairs, ascending
 * (the shared expert last). cnt_chunk: [n_chunks][E] scratch of the sort. */
struct moe_sort {
    int32_t *cnt_chunk;
    int32_t *cnt;           /* [E + 1] */
    int32_t *off;           /* [E + 2] */
    int32_t *active;        /* [E + 1] */
    int32_t *n_active;      /* [1] */
    int32_t *perm;          /* [T*k + T] */
};

/* Arguments of the streaming kernels (passed by value). */
struct moe_stream_args {
    const struct moe_ffn_w *table;      /* device [E + 1], or NULL: use `single` */
    struct moe_ffn_w single;
    const int32_t *active, *n_active, *cnt, *off, *perm;
    int Tk, k, D;
    const uint8_t *xq;                  /* quantized input rows (tokens or pairs) */
    const float *xs;                    /* their scales, [row][K/128] */
    int ldq, lds;
    void *out;                          /* bf16 [pair][ldo] */
    int ldo;
};

/* Scratch of the prefill path, carved by the caller (sizes in cuda_moe.cu). */
struct moe_lt_bufs {
    uint8_t *aq;        /* [rows][D] gathered FP8 tokens */
    float *as;          /* [D/128][rows] their scales, k-block-major */
    void *g, *u;        /* bf16 [I][rows] (cuBLASLt's column-major output) */
    float *h;           /* [rows][I] silu(g) * u, bf16 values */
    uint8_t *hq;        /* [rows][I] */
    float *hs;          /* [I/128][rows] */
    void *yc;           /* bf16 [D][rows] */
    int max_rows;       /* rows (M padded to 16) the buffers hold */
};

/* Rows a prefill lane's buffers hold (cuda_moe_lt.c): an expert with more pairs runs in chunks. */
#define MOE_LT_LANE_ROWS 2048

/* Lanes (buffer sets, streams) the cuBLASLt prefill experts use: CUDA_SIDE_STREAMS with
 * moe_prefill = LANES (1.7x the serial order at 512 tokens on an H100), or 1 (the main
 * stream) with SERIAL. */
static inline int cuda_moe_lt_lanes(const struct cuda_backend *cb)
{
    return cb->moe_prefill == DSD_CUDA_MOE_PREFILL_SERIAL ? 1 : CUDA_SIDE_STREAMS;
}

/* cuda_moe_lt.c: the experts of one MoE call for T > MOE_STREAM_MAX_T. Synchronizes the
 * stream once (to read the counts); fills y [T*k + T][D] bf16 per pair. host_table: the
 * layer's [E + 1] FFNs (host copy of the pointers); b: cuda_moe_lt_lanes(cb) buffer sets. */
void cuda_moe_lt_experts(struct cuda_backend *cb, const struct moe_sort *s, const struct moe_ffn_w *host_table,
                         int E, bool shared, int T, int k, const uint8_t *xq, const float *xs,
                         const struct moe_lt_bufs *b, void *y);
/* The dense MLP for large T: out [T][D] bf16 (no synchronization). */
void cuda_moe_lt_mlp(struct cuda_backend *cb, void *out, const uint8_t *xq, const float *xs,
                     const struct moe_ffn_w *f, int T, const struct moe_lt_bufs *b);

/* The routing steps of cuda_op_moe on their own (tests/gpu/test_cuda_moe.c checks them
 * exactly): fp32 logits [T][E] = x . router (bf16 x [T][D]; router F32 or BF16, summed in
 * dsd_ref_dot's order), and ids [T][k] ascending / wts [T][k] as dsd_ref_moe_route from
 * logits [T][E] and the correction bias (F32 [E] or NULL). Device pointers; enqueued. */
void cuda_moe_router_logits(struct cuda_backend *cb, float *logits, const void *x, const struct dsd_weight *rw, int T);
void cuda_moe_route(struct cuda_backend *cb, int32_t *ids, float *wts, const float *logits, const float *bias, int T);

/* Scratch of the grouped prefill path (cuda_moe_grouped.cu): the block list and the
 * intermediate rows of GROUPED_CHUNK_BLOCKS blocks of 128 pairs (h bf16, hq/hs its 1x128
 * quantization), carved from `base` by cuda_moe_grouped_bytes. */
#define GROUPED_CHUNK_BLOCKS DSD_CUDA_GROUPED_CHUNK_BLOCKS
struct moe_grouped_bufs {
    void *base;
    void *blocks;       /* int4 [max_blocks] */
    int32_t *n_blocks;  /* [1] */
    void *h;            /* bf16 [chunk_blocks * 128][Imax] */
    uint8_t *hq;        /* [chunk_blocks * 128][Imax] */
    float *hs;          /* [chunk_blocks * 128][Imax / 128] */
    int max_blocks, chunk_blocks;
};
/* Bytes of that scratch for P pairs over n_exp experts; with b non-NULL also carves b->base. */
size_t cuda_moe_grouped_bytes(int P, int n_exp, int Imax, struct moe_grouped_bufs *b);
/* The experts of one MoE call for T > MOE_STREAM_MAX_T, every pair in grouped launches (no
 * host synchronization): y [P][D] bf16 per pair, as cuda_moe_lt_experts. table: the layer's
 * device [n_exp] FFNs (routed, then the shared one). */
void cuda_moe_grouped_experts(struct cuda_backend *cb, const struct moe_sort *s, const struct moe_ffn_w *table,
                              int n_exp, int Tk, int k, int D, int Imax, const uint8_t *xq, const float *xs,
                              const struct moe_grouped_bufs *b, void *y);
/* The grouped path's block list from the sort's counts: blocks (int4 [max_blocks]) =
 * {expert, first pair's index into perm, valid rows} per run of `rows` pairs of one expert. */
void cuda_moe_launch_plan(struct cuda_backend *cb, void *blocks, int32_t *n_blocks, const struct moe_sort *s, int n_exp,
                          int rows);
/* quant_kernel over bf16 rows [rows][K] into q [rows][K] and s [rows][K/128] (row-major). */
void cuda_moe_launch_quant_bf16(struct cuda_backend *cb, uint8_t *q, float *s, const void *x, int rows, int K);

/* cuda_moe.cu launchers for cuda_moe_lt.c (enqueued on st, failures recorded). */
/* Gathers the token rows of pairs perm[0..m) (pair p -> token p < Tk ? p / k : p - Tk; perm
 * NULL: pair i is token i) from token-major xq [T][D] / xs [T][D/128] into aq [rows][D] and
 * k-block-major as [D/128][rows]; rows m..rows-1 become zeros with scale 1. */
void cuda_moe_launch_gather(struct cuda_backend *cb, cudaStream_t st, uint8_t *aq, float *as, int rows,
                            const uint8_t *xq, const float *xs, int D, const int32_t *perm, int m, int Tk, int k);
/* h[i][n] = bf16(silu(bf16 g) * bf16 u) from column-major g, u [I][rows], i < m, as floats;
 * then h quantized into hq [rows][I] / hs [I/128][rows] (pad rows zero, scale 1). */
void cuda_moe_launch_swiglu_quant(struct cuda_backend *cb, cudaStream_t st, float *h, uint8_t *hq, float *hs,
                                  const void *g, const void *u, int m, int rows, int I);
/* y[perm[i]][n] = yc[n][i] for i < m (perm NULL: row i), y row stride D. */
void cuda_moe_launch_scatter(struct cuda_backend *cb, cudaStream_t st, void *y, const void *yc, int rows, int D,
                             const int32_t *perm, int m);

#ifdef __cplusplus
}
#endif

#endif
