// Per-token 1x128 FP8 activation quantization (docs/MODEL.md §7.2) and the small layout kernels
// around the cuBLASLt FP8 GEMM. One warp per 128-group: 4 values per lane, amax by shuffle.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_check.h"
#include "cuda_internal.h"

__device__ __forceinline__ float ue8m0_round(float s)
{
    // 2^ceil(log2 s) from the bits, as the CPU reference does (kernels/numeric.h)
    unsigned u = __float_as_uint(s);
    int e = (int)((u >> 23) & 0xff) - 127 + ((u & 0x7fffff) != 0);
    return ldexpf(1.0f, e);
}

// rows >= M: rows past M are padding (zeros, scale 1) so cuBLASLt sees aligned operands
__global__ void act_quant_kernel(const float *__restrict__ x, int M, int rows, int K, bool ue8m0,
                                 uint8_t *__restrict__ xq, float *__restrict__ xs)
{
    const int groups_per_row = K / 128;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x & 31;
    if (warp >= rows * groups_per_row)
        return;
    const int m = warp / groups_per_row, g = warp % groups_per_row;
    if (m >= M) {
        reinterpret_cast<uint32_t *>(xq + (size_t)m * K + g * 128)[lane] = 0;
        if (lane == 0)
            xs[(size_t)g * rows + m] = 1.0f;
        return;
    }
    const float4 v = reinterpret_cast<const float4 *>(x + (size_t)m * K + g * 128)[lane];
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    amax = fmaxf(amax, 1e-4f);
    float s = amax * (1.0f / 448.0f);
    if (ue8m0)
        s = ue8m0_round(s);
    const float inv = 1.0f / s;     // s is a power of two under ue8m0: exact
    uint32_t packed = 0;
    const float vals[4] = { v.x, v.y, v.z, v.w };
    for (int i = 0; i < 4; i++) {
        float y = fminf(fmaxf(ue8m0 ? vals[i] * inv : vals[i] / s, -448.0f), 448.0f);
        __nv_fp8_storage_t b = __nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
        packed |= (uint32_t)b << (8 * i);
    }
    reinterpret_cast<uint32_t *>(xq + (size_t)m * K + g * 128)[lane] = packed;
    if (lane == 0)
        xs[(size_t)g * rows + m] = s;  // k-block-major, what cuBLASLt's VEC128 mode reads
}

// [N][ld] bf16 (cuBLASLt's column-major output, ld = padded rows) -> row-major [M][N] float
__global__ void transpose_bf16_kernel(const __nv_bfloat16 *__restrict__ in, float *__restrict__ out, int M, int N,
                                      int ld)
{
    __shared__ float tile[32][33];
    int n0 = blockIdx.x * 32, m0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int n = n0 + i, m = m0 + threadIdx.x;
        if (n < N && m < M)
            tile[i][threadIdx.x] = __bfloat162float(in[(size_t)n * ld + m]);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int m = m0 + i, n = n0 + threadIdx.x;
        if (n < N && m < M)
            out[(size_t)m * N + n] = tile[threadIdx.x][i];
    }
}

extern "C" void dsd_cuda_launch_act_quant(cudaStream_t st, const float *x, int M, int rows, int K, bool ue8m0,
                                          uint8_t *xq, float *xs)
{
    int warps = rows * (K / 128), threads = 256;
    int blocks = (warps * 32 + threads - 1) / threads;
    act_quant_kernel<<<blocks, threads, 0, st>>>(x, M, rows, K, ue8m0, xq, xs);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void dsd_cuda_launch_transpose_bf16(cudaStream_t st, const void *in, float *out, int M, int N, int ld)
{
    dim3 block(32, 8), grid((N + 31) / 32, (M + 31) / 32);
    transpose_bf16_kernel<<<grid, block, 0, st>>>((const __nv_bfloat16 *)in, out, M, N, ld);
    CUDA_CHECK(cudaGetLastError());
}
