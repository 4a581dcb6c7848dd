/*
 * kernels/cuda/dsd_cuda.h: the first pieces of the CUDA backend (Hopper, sm_90a): per-token
 * 1x128 FP8 activation quantization and the block-scaled FP8 linear through cuBLASLt
 * (docs/MODEL.md §7, docs/CUDA.md). C API; the kernels are CUDA C++ in this folder.
 *
 *   struct dsd_cuda *cu;
 *   if (dsd_cuda_open(0, &cu, &err) < 0) ...            // -ENODEV without a GPU
 *   dsd_cuda_act_quant(cu, x_dev, M, K, true, xq_dev, xs_dev);  // xs: [K/128][M] (k-block-major)
 *   dsd_cuda_fp8_linear(cu, y_dev, xq_dev, xs_dev, w_dev, ws_dev, M, N, K, &err);
 *   dsd_cuda_close(cu);
 *
 * Layouts: x row-major [M][K] float; xq [M][K] e4m3; w [N][K] e4m3 with the checkpoint's
 * weight_scale_inv [ceil(N/128)][K/128] as is; y row-major [M][N] float (bf16-rounded).
 * CUDA failures inside these calls are programming or driver errors: they abort with
 * file:line (CUDA_CHECK); configuration problems return -errno with err set.
 */
#ifndef DSD_CUDA_H
#define DSD_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend of kernels/ops.h on GPU p->device (production numerics only). Returns
 * NULL with err set: -ENODEV (no such GPU, no driver), -ENOTSUP (not a Hopper GPU, exact
 * numerics), -EINVAL (dims), -ENOMEM. */
struct dsd_backend;
struct dsd_backend_params;
struct dsd_backend *dsd_backend_cuda_new(const struct dsd_backend_params *p, struct dsd_err *err);
/* "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" */
const char *dsd_backend_cuda_device_name(const struct dsd_backend *be);
/* Device bytes the weights occupy after prepare_weights. */
size_t dsd_backend_cuda_weight_bytes(const struct dsd_backend *be);

/* Benchmarks (deepseekd-bench): the milliseconds one block-scaled FP8 GEMM of the engine's
 * linear takes (cuBLASLt, docs/CUDA.md §2; without the input quantization and the output
 * transpose), y[M][N] = x[M][K] W[N][K]^T on random e4m3 operands, the mean of `iters`
 * calls after 3 warm-up calls. Allocates and frees its operands. Returns 0, -EINVAL (M, N
 * not multiples of 16, K not of 128), -ENOTSUP (no algorithm), -ENOMEM, -EIO. */
int dsd_backend_cuda_fp8_gemm_ms(struct dsd_backend *be, int M, int N, int K, int iters, double *ms,
                                 struct dsd_err *err);

/* Tests and benchmarks: which sparse MLA kernel mla_attention runs. AUTO (the default)
 * chooses per call (the rule is in kernels/cuda/cuda_attention.cu, docs/KERNELS.md). TILED
 * runs the head-tiled kernel and lets the rule pick how an FP8 cache's rows reach it;
 * TILED_PAGES dequantizes every cached row of the step once, TILED_GATHER each token's
 * selected rows (a bf16 cache is read in place by all three). The TILED kinds still fall
 * back to PER_TOKEN for shapes the tiled kernel does not take. */
enum dsd_cuda_attn_kernel {
    DSD_CUDA_ATTN_AUTO,
    DSD_CUDA_ATTN_PER_TOKEN,
    DSD_CUDA_ATTN_TILED,
    DSD_CUDA_ATTN_TILED_PAGES,
    DSD_CUDA_ATTN_TILED_GATHER,
};
void dsd_backend_cuda_set_attention_kernel(struct dsd_backend *be, enum dsd_cuda_attn_kernel k);

/* Tests and benchmarks: which engine computes the head-tiled kernel's tiles: MMA (mma.sync),
 * WGMMA (Hopper's warpgroup MMA, two symmetric warpgroups) or WS (warpgroup MMA with a
 * producer warpgroup and the two consumers ping-ponging, docs/KERNELS.md). WGMMA and WS take
 * shapes with (L + R) % 16 == 0, L <= 512; elsewhere MMA runs. AUTO (the default) is WS
 * where it runs. WS_FP8 is WS whose producer reads an FP8 cache's entries itself and converts
 * them (no dequantization pass; R <= 64); with a bf16 cache, or a shape it does not take, it
 * is WS. */
enum dsd_cuda_attn_tile {
    DSD_CUDA_TILE_AUTO,
    DSD_CUDA_TILE_MMA,
    DSD_CUDA_TILE_WGMMA,
    DSD_CUDA_TILE_WS,
    DSD_CUDA_TILE_WS_FP8,
};
void dsd_backend_cuda_set_attention_tile(struct dsd_backend *be, enum dsd_cuda_attn_tile t);

/* Tests and benchmarks: which tensor-core path the indexer's scores take. FP8 multiplies the
 * e4m3 keys as stored (mma.m16n8k32); WGMMA does the same on Hopper's warpgroup MMA
 * (m64n64k32 per key page; up to 256 heads); BF16 converts each key page to bf16 first
 * (mma.m16n8k16). AUTO (the default) is WGMMA where it runs, else FP8. All have exact
 * products and fp32 sums (docs/KERNELS.md). */
enum dsd_cuda_indexer_kernel { DSD_CUDA_INDEXER_AUTO, DSD_CUDA_INDEXER_BF16, DSD_CUDA_INDEXER_FP8, DSD_CUDA_INDEXER_WGMMA };
void dsd_backend_cuda_set_indexer_kernel(struct dsd_backend *be, enum dsd_cuda_indexer_kernel k);

/* Tests and benchmarks: how the dense MLP and the MoE experts run. AUTO (the default) streams
 * the weights for small steps and uses cuBLASLt GEMMs above a token count
 * (kernels/cuda/cuda_moe.h: MLP_STREAM_MAX_T, MOE_STREAM_MAX_T); STREAM and GEMM force one. */
enum dsd_cuda_ffn_path { DSD_CUDA_FFN_AUTO, DSD_CUDA_FFN_STREAM, DSD_CUDA_FFN_GEMM };
void dsd_backend_cuda_set_ffn_path(struct dsd_backend *be, enum dsd_cuda_ffn_path p);

/* Tests and benchmarks: how the prefill path runs the MoE experts' GEMMs: SERIAL, one expert
 * after another on the backend's stream, or LANES, spread over CUDA_SIDE_STREAMS side streams
 * (kernels/cuda/cuda_moe_lt.c), both cuBLASLt with one host synchronization per call; or
 * GROUPED, every expert in grouped FP8 wgmma launches with none (kernels/cuda/cuda_moe_grouped.cu).
 * AUTO (the default) is GROUPED. */
enum dsd_cuda_moe_prefill {
    DSD_CUDA_MOE_PREFILL_AUTO,
    DSD_CUDA_MOE_PREFILL_SERIAL,
    DSD_CUDA_MOE_PREFILL_LANES,
    DSD_CUDA_MOE_PREFILL_GROUPED
};
void dsd_backend_cuda_set_moe_prefill(struct dsd_backend *be, enum dsd_cuda_moe_prefill m);

/* Tests and benchmarks: how the FP8 block-scaled and bf16 linears of steps of at most
 * CUDA_LINEAR_STREAM_MAX_M (64) tokens run: LT, cuBLASLt's GEMM, or STREAM, the
 * weight-streaming kernel (kernels/cuda/cuda_linear_stream.cu). Larger steps always take
 * cuBLASLt. AUTO (the default) streams the FP8 linears of steps of up to
 * CUDA_LINEAR_STREAM_AUTO_M (8) tokens and gives the rest to cuBLASLt. */
enum dsd_cuda_linear_path { DSD_CUDA_LINEAR_AUTO, DSD_CUDA_LINEAR_LT, DSD_CUDA_LINEAR_STREAM };
void dsd_backend_cuda_set_linear_path(struct dsd_backend *be, enum dsd_cuda_linear_path p);

/* Tests and benchmarks: which kernels run the sample op: BLOCK, one CTA of 1,024 threads per
 * row (kernels/cuda/cuda_sample.cu), or SLICES, each row cut into slices of 4,096 ids, one CTA
 * each, in six launches (kernels/cuda/cuda_sample_slices.cu; built for a small batch, which
 * BLOCK leaves on a few SMs). AUTO (the default) is SLICES (measured on an H100: 8-17x
 * faster for sampled rows, a few µs slower for greedy ones; docs/KERNELS.md, "Sampling"). */
enum dsd_cuda_sampler { DSD_CUDA_SAMPLER_AUTO, DSD_CUDA_SAMPLER_BLOCK, DSD_CUDA_SAMPLER_SLICES };
void dsd_backend_cuda_set_sampler(struct dsd_backend *be, enum dsd_cuda_sampler s);

/* Tests and benchmarks: how the ops.h side copies (a KV tier hit's host pages coming back)
 * run: STREAM, in order on the backend's stream (the copies then precede the step that
 * follows them, as before side copies existed), or OVERLAP, on a copy stream of their own
 * with an event per layer that the step's layers wait for one by one, so the reload of later
 * layers runs beside the compute of earlier ones. AUTO (the default) is STREAM until OVERLAP
 * is measured on a GPU (docs/KV_CACHE.md, "What overlaps what"). */
enum dsd_cuda_kv_reload { DSD_CUDA_KV_RELOAD_AUTO, DSD_CUDA_KV_RELOAD_STREAM, DSD_CUDA_KV_RELOAD_OVERLAP };
void dsd_backend_cuda_set_kv_reload(struct dsd_backend *be, enum dsd_cuda_kv_reload r);

/* The eight choices above by name, for tools that reach the backend through the module
 * (deepseekd-bench --engine NAME=VALUE): "attention" (auto, per-token, tiled, tiled-pages,
 * tiled-gather), "attn_tile" (auto, mma, wgmma, ws, ws-fp8), "indexer" (auto, bf16, fp8, wgmma), "ffn"
 * (auto, stream, gemm), "moe_prefill" (auto, serial, lanes, grouped), "linear" (auto, lt,
 * stream), "sampler" (auto, block, slices), "kv_reload" (auto, stream, overlap). Returns 0, or -EINVAL (unknown name or value; err
 * lists the values). */
int dsd_backend_cuda_set_engine(struct dsd_backend *be, const char *name, const char *value, struct dsd_err *err);

/* What the loadable module (libdsd_backend_cuda.so, kernels/cuda/cuda_module.c) exports as
 * the symbol "dsd_cuda_module". The ABI number changes whenever this table or ops.h does. */
#define DSD_CUDA_MODULE_ABI 4
#define DSD_CUDA_MODULE_EXPORT __attribute__((visibility("default")))
struct dsd_cuda_module {
    int abi;
    struct dsd_backend *(*backend_new)(const struct dsd_backend_params *p, struct dsd_err *err);
    const char *(*device_name)(const struct dsd_backend *be);
    size_t (*weight_bytes)(const struct dsd_backend *be);
    int (*fp8_gemm_ms)(struct dsd_backend *be, int M, int N, int K, int iters, double *ms, struct dsd_err *err);
    int (*set_engine)(struct dsd_backend *be, const char *name, const char *value, struct dsd_err *err);
};

struct dsd_cuda;

int dsd_cuda_open(int device, struct dsd_cuda **out, struct dsd_err *err);
void dsd_cuda_close(struct dsd_cuda *cu);
/* Name and memory of the opened device, for logs. */
const char *dsd_cuda_device_name(const struct dsd_cuda *cu);

void *dsd_cuda_alloc(struct dsd_cuda *cu, size_t bytes);
void dsd_cuda_free(struct dsd_cuda *cu, void *p);
void dsd_cuda_upload(struct dsd_cuda *cu, void *dst, const void *src, size_t bytes);
void dsd_cuda_download(struct dsd_cuda *cu, void *dst, const void *src, size_t bytes);
void dsd_cuda_sync(struct dsd_cuda *cu);

/* Device memory of the cuBLASLt workspace dsd_cuda_open() allocates (the memory plan,
 * daemon/model/mem_plan.h, counts it). */
#define DSD_CUDA_GEMM_WORKSPACE_BYTES ((size_t)64 << 20)

/* The grouped MoE experts (kernels/cuda/cuda_moe_grouped.cu) work in blocks of 128 pairs of
 * one expert and keep the intermediate rows of at most 256 blocks at a time: h in bf16, its
 * e4m3 quantization and 1x128 scales (the memory plan, daemon/model/mem_plan.h, counts them). */
#define DSD_CUDA_GROUPED_BLOCK_ROWS 128
#define DSD_CUDA_GROUPED_CHUNK_BLOCKS 256
/* Blocks a call of P pairs over n_exp experts (the shared expert counted) can need: each
 * expert's last block may be partial, and no block is empty. */
static inline long long dsd_cuda_grouped_max_blocks(long long P, long long n_exp)
{
    const long long nb = (P + DSD_CUDA_GROUPED_BLOCK_ROWS - 1) / DSD_CUDA_GROUPED_BLOCK_ROWS + n_exp;
    return nb < P ? nb : P;
}

/* Rows the quantized-activation buffers must have for M tokens: cuBLASLt wants 16-byte
 * aligned leading dimensions for the FP8 operands and the bf16 output, so M is padded to
 * a multiple of 16 (the pad rows are zeros and their outputs are dropped). */
static inline int dsd_cuda_fp8_rows(int M)
{
    return (M + 15) & ~15;
}
/* act_quant on the device; K % 128 == 0. xq: [rows][K], xs: [K/128][rows] (k-block-major)
 * with rows = dsd_cuda_fp8_rows(M). */
void dsd_cuda_act_quant(struct dsd_cuda *cu, const float *x, int M, int K, bool ue8m0, uint8_t *xq, float *xs);
/* Row stride, in K blocks, of the weight scales dsd_cuda_fp8_linear reads: the checkpoint's
 * [ceil(N/128)][K/128] with each row padded to a multiple of 4 blocks (16 bytes). Measured
 * on the H200: with K/128 = 2, 3, 5, 6, 10 unpadded rows give wrong results (rel err ~0.5),
 * padded rows are right (bench/results/2026-11-29-cublaslt-fp8-scale-padding-h200.md).
 * Every V3.2 linear has K/128 % 4 == 0, where this is the checkpoint's layout unchanged. */
static inline int dsd_cuda_weight_scale_stride(int K)
{
    return (K / 128 + 3) & ~3;
}
/* y = x W^T with x given quantized (xq, xs) and W FP8 with 128x128 block scales ws laid out
 * with dsd_cuda_weight_scale_stride(K). Returns 0, -EINVAL (shape cuBLASLt cannot do:
 * K % 128, N % 16), -ENOTSUP (no algorithm). */
int dsd_cuda_fp8_linear(struct dsd_cuda *cu, float *y, const uint8_t *xq, const float *xs, const uint8_t *w,
                        const float *ws, int M, int N, int K, struct dsd_err *err);
/* Milliseconds between two points of the stream (CUDA events), for benchmarks. */
void dsd_cuda_timer_start(struct dsd_cuda *cu);
float dsd_cuda_timer_stop(struct dsd_cuda *cu);

#ifdef __cplusplus
}
#endif

#endif
