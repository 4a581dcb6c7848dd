/*
 * kernels/cpu/cpu_ref.h: the scalar building blocks of the CPU reference backend, exposed
 * so unit tests (and the CUDA parity tests) can check each one on its own.
 * All functions are pure and thread-safe.
 */
#ifndef DSD_CPU_REF_H
#define DSD_CPU_REF_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

/* e4m3 byte -> float, a 256-entry table. */
extern float dsd_e4m3_lut[256];

/* Sum of a[i]*b[i] in a fixed order (8 interleaved fp32 lanes, then a fixed tree), so the
 * result is the same for every build and thread count. */
float dsd_ref_dot(const float *a, const float *b, int n);

/* Row `row` of w as floats: F8_E4M3 -> raw e4m3 values WITHOUT the block scale (the scale
 * is applied per 128-block by the GEMM); BF16/F16/F32 -> values. out: w->cols floats. */
void dsd_ref_weight_row(const struct dsd_weight *w, int64_t row, float *out);
/* Row `row` fully dequantized (FP8 values times their block scale). */
void dsd_ref_weight_row_dequant(const struct dsd_weight *w, int64_t row, float *out);
/* The 128x128 block scale multiplying w[row][kb*128 ...]; 1 for non-FP8 weights. */
static inline float dsd_ref_weight_scale(const struct dsd_weight *w, int64_t row, int64_t kb)
{
    if (!w->scale)
        return 1.0f;
    return w->scale[(row / 128) * ((w->cols + 127) / 128) + kb];
}

/* act_quant (docs/MODEL.md §7.2) of n values (n % 128 == 0): for each 128-group,
 * scale = ue8m0 ? 2^ceil(log2(max(amax,1e-4)/448)) : max(amax,1e-4)/448, and
 * q = e4m3(clamp(x/scale, +-448)). Writes the e4m3 bytes (q_bytes, may be NULL), their
 * float values (q_vals, may be NULL) and n/128 scales. */
void dsd_ref_act_quant(const float *x, int n, bool ue8m0, uint8_t *q_bytes, float *q_vals, float *scales);

/* In-place y = (x H) / sqrt(n) with H the n x n Sylvester Hadamard matrix in natural order,
 * H[i][j] = (-1)^popcount(i & j); n a power of two. */
void dsd_ref_hadamard(float *x, int n);

/* DeepSeek V3 routing for one token (docs/MODEL.md §6): s = sigmoid(logits); b = s + bias;
 * group score = sum of the top-2 b of each of n_group groups; keep the topk_group best
 * groups; pick the top-k experts by b among them; weights = s of those, normalized when
 * norm, times scale. Outputs k expert ids in ascending order and their weights. */
void dsd_ref_moe_route(const float *logits, const float *bias, int n_experts, int n_group, int topk_group,
                       int k, bool norm, float scale, int32_t *experts, float *weights);

/* silu(g) * u in fp32. */
static inline float dsd_ref_swiglu(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

#endif
