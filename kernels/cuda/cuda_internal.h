/* kernels/cuda/cuda_internal.h: launchers and helpers shared between the .cu and .c files of
 * this folder (not part of the backend contract). Launchers enqueue on `st` and return
 * cudaGetLastError() of the launch (the legacy dsd_cuda_* ones abort instead). */
#ifndef DSD_CUDA_INTERNAL_H
#define DSD_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_backend;

/* -- legacy stand-alone API (dsd_cuda.h): fp32 input, abort on failure -- */
void dsd_cuda_launch_act_quant(cudaStream_t st, const float *x, int M, int rows, int K, bool ue8m0, uint8_t *xq,
                               float *xs);
void dsd_cuda_launch_transpose_bf16(cudaStream_t st, const void *in, float *out, int M, int N, int ld);

/* -- the backend's linears (cuda_quant.cu) -- */
/* act_quant (kernels/cpu/cpu_ref.c dsd_ref_act_quant) of bf16 x [M][ldx] (K % 128 == 0) into
 * xq [rows][K] e4m3 and xs [K/128][rows] (k-block-major); rows >= M are zeros with scale 1. */
cudaError_t cuda_launch_act_quant_bf16(cudaStream_t st, const void *x, int ldx, int M, int rows, int K, bool ue8m0,
                                       uint8_t *xq, float *xs);
/* cuBLASLt's column-major D ([N][ld], bf16 or f32) -> row-major out [M][ldo] (bf16 or f32). */
cudaError_t cuda_launch_transpose_out(cudaStream_t st, const void *in, bool in_f32, void *out, bool out_f32, int M,
                                      int N, int ld, int ldo);
/* bf16 x [M][ldx] -> compact f32 [M][K] (exact). */
cudaError_t cuda_launch_bf16_to_f32(cudaStream_t st, const void *x, int ldx, int M, int K, float *out);
/* compact f32 [M][N] -> bf16 rows [M][ldo], rounded to nearest even. */
cudaError_t cuda_launch_f32_rows_to_bf16(cudaStream_t st, const float *in, int M, int N, void *out, int ldo);
/* The FP8 linear without cuBLASLt (shapes it refuses): out[m][n] = sum over 128-blocks kb of
 * (fp32 dot of xq and w values) * xs[kb][m] * ws[n/128][kb], out bf16 (rounded) or f32 with ldo. */
cudaError_t cuda_launch_fp8_gemm_simt(cudaStream_t st, const uint8_t *xq, const float *xs, int rows, const uint8_t *w,
                                      const float *ws, int64_t ws_stride, void *out, bool out_f32, int ldo, int M,
                                      int N, int K);

/* The weight-streaming FP8 linear for steps of 1 .. CUDA_LINEAR_STREAM_MAX_M tokens
 * (cuda_linear_stream.cu): out [M][ldo] (bf16, or f32 with out_f32) = the same sums as
 * cuda_launch_fp8_gemm_simt, from act_quant's xq [rows][K] / xs [K/128][rows] (rows >= M, a
 * multiple of 4). K is split into ksplit ranges (cuda_linear_stream_splits); with ksplit > 1
 * part holds ksplit * M * N floats of partial sums, added in a second kernel in split order.
 * cudaErrorInvalidValue for shapes outside that contract. */
#define CUDA_LINEAR_STREAM_MAX_M 64
/* The FP8 linears of steps of up to this many tokens stream by default (linear = auto): at 1-8
 * tokens the kernel is 1.2-2.2x cuBLASLt on the small projections and level on the large ones;
 * at 64 cuBLASLt's tensor-core tiles win on the large ones (docs/KERNELS.md, H100). BF16
 * linears stay on cuBLASLt unless linear = stream. */
#define CUDA_LINEAR_STREAM_AUTO_M 8
cudaError_t cuda_launch_linear_stream(cudaStream_t st, const uint8_t *xq, const float *xs, int rows, const uint8_t *w,
                                      const float *ws, int64_t ws_stride, void *out, bool out_f32, int ldo, int M,
                                      int N, int K, int ksplit, float *part);
/* The same for bf16 weights [N][K] and bf16 x [M][ldx] (no quantization, no scales): K % 64
 * == 0, x, w 16-byte aligned, ldx % 8 == 0. */
cudaError_t cuda_launch_linear_stream_bf16(cudaStream_t st, const void *x, int ldx, const void *w, void *out,
                                           bool out_f32, int ldo, int M, int N, int K, int ksplit, float *part);
/* How many K ranges the streaming linear uses for M tokens, N outputs and weight rows of
 * row_bytes on `sms` SMs: enough CTAs for two per SM, partial sums at most a quarter of the
 * weight bytes, at least one 128-byte block per range. */
int cuda_linear_stream_splits(int M, int N, int64_t row_bytes, int sms);

/* cuBLASLt's block-scaled FP8 GEMM (cuda_linear.c; operands as docs/CUDA.md §2): d, column-major
 * [N][rows] bf16 (or f32 with d_f32), = W [N][K] (scales wscale, BLK128x128, rows padded to
 * cuda_scale_stride) . aq [rows][K]^T (scales as [K/128][rows], VEC128), enqueued on st with
 * the workspace ws (ws_bytes; concurrent GEMMs need distinct workspaces). The plan of each
 * shape is cached. Returns 1 when enqueued, 0 when cuBLASLt has no algorithm for the shape
 * (nothing recorded: the caller falls back), -1 after recording a failure. */
int cuda_lt_fp8_gemm(struct cuda_backend *cb, cudaStream_t st, void *ws, size_t ws_bytes, void *d, bool d_f32,
                     const uint8_t *aq, const float *as, int rows, const uint8_t *w, const float *wscale, int N, int K);

/* -- generated weights (cuda_generate.cu, kernels/weight_gen.h) -- */
enum { CUDA_GEN_FP8 = 0, CUDA_GEN_BF16, CUDA_GEN_F32 };
/* n values of the given kind from a weight_gen stream: e4m3 of uniform * 448, or center +
 * half * uniform as bf16 / f32. */
cudaError_t cuda_launch_gen_fill(cudaStream_t st, void *dst, int kind, uint64_t n, uint64_t stream, float center,
                                 float half);
/* FP8 block scales in the device layout: rb rows of stride floats, the first kb of each
 * `value`, the padding 1. */
cudaError_t cuda_launch_gen_scales(cudaStream_t st, float *dst, int64_t rb, int64_t kb, int64_t stride, float value);

/* -- many copies in one launch (cuda_copy.cu, ops.h copy_many) -- */
#define CUDA_COPY_BATCH 1024        /* pieces per launch: 20 KB of kernel parameters */
struct dsd_copy;
/* Copies every piece (each under 4 GiB) with a kernel, one CTA per piece, CUDA_COPY_BATCH
 * pieces per launch. Host pieces must be mapped pinned memory (cudaMallocHost under unified
 * addressing). */
cudaError_t cuda_launch_copy_many(cudaStream_t st, const struct dsd_copy *p, int n);

/* The device copy of dims.rope_inv_freq (cuda_linear.c keeps it); NULL before init. */
const float *cuda_rope_inv_freq(struct cuda_backend *cb);

#ifdef __cplusplus
}
#endif

#endif
