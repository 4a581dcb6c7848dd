// Weights made on the device (ops.h generate_weights): every element from the counter-based
// hash of kernels/weight_gen.h, bit for bit the values the CPU backend writes (the same
// products and sums, rounded separately; e4m3 and bf16 conversions round to nearest even;
// tests/gpu/test_cuda_generate.c compares them). Grid-stride loops; no host copy of the values
// ever exists.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_internal.h"
#include "weight_gen.h"

__global__ void gen_fill_kernel(void *dst, int kind, uint64_t n, uint64_t stream, float center, float half)
{
    const uint64_t step = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const float u = dsd_gen_uniform(stream, i);
        if (kind == CUDA_GEN_FP8)
            ((uint8_t *)dst)[i] = (uint8_t)__nv_cvt_float_to_fp8(u * DSD_GEN_FP8_RANGE, __NV_SATFINITE, __NV_E4M3);
        else if (kind == CUDA_GEN_BF16)     // no FMA: the CPU rounds the product, then the sum
            ((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(__fadd_rn(center, __fmul_rn(half, u)));
        else
            ((float *)dst)[i] = __fadd_rn(center, __fmul_rn(half, u));
    }
}

__global__ void gen_scales_kernel(float *dst, int64_t n, int64_t kb, int64_t stride, float value)
{
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        dst[i] = i % stride < kb ? value : 1.0f;
}

static unsigned gen_blocks(uint64_t n)
{
    uint64_t b = (n + 255) / 256;
    return (unsigned)(b < 4096 ? (b ? b : 1) : 4096);
}

extern "C" cudaError_t cuda_launch_gen_fill(cudaStream_t st, void *dst, int kind, uint64_t n, uint64_t stream,
                                            float center, float half)
{
    gen_fill_kernel<<<gen_blocks(n), 256, 0, st>>>(dst, kind, n, stream, center, half);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_gen_scales(cudaStream_t st, float *dst, int64_t rb, int64_t kb, int64_t stride,
                                              float value)
{
    const int64_t n = rb * stride;
    gen_scales_kernel<<<gen_blocks((uint64_t)n), 256, 0, st>>>(dst, n, kb, stride, value);
    return cudaGetLastError();
}
