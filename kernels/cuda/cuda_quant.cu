// Per-token 1x128 FP8 activation quantization (docs/MODEL.md §7.2) and the small layout kernels
// around the cuBLASLt GEMMs of cuda_linear.c, plus a plain FP8 GEMM for shapes cuBLASLt's
// block-scaled path refuses. One warp per 128-group: 4 values per lane, amax by shuffle.
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

// ---- the backend's kernels (cuda_internal.h) -----------------------------------------------

// The same quantization as act_quant_kernel, reading bf16 rows with a stride. y = v / s in fp32
// exactly as kernels/cpu/cpu_ref.c dsd_ref_act_quant, then e4m3 round-to-nearest-even with
// saturation (the clamp to +-448 comes first, as there).
__global__ void act_quant_bf16_kernel(const __nv_bfloat16 *__restrict__ x, int ldx, int M, int rows, int K,
                                      bool ue8m0, uint8_t *__restrict__ xq, float *__restrict__ xs)
{
    const int groups_per_row = K / 128;
    const int warp = (int)(((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32), lane = threadIdx.x & 31;
    if (warp >= rows * groups_per_row)
        return;
    const int m = warp / groups_per_row, g = warp % groups_per_row;
    if (m >= M) {
        reinterpret_cast<uint32_t *>(xq + (size_t)m * K + g * 128)[lane] = 0;
        if (lane == 0)
            xs[(size_t)g * rows + m] = 1.0f;
        return;
    }
    // 4 consecutive bf16 per lane: 8 bytes, aligned when ldx is a multiple of 4 (else scalar)
    const __nv_bfloat16 *src = x + (size_t)m * ldx + g * 128 + lane * 4;
    float vals[4];
    for (int i = 0; i < 4; i++)
        vals[i] = __bfloat162float(src[i]);
    float amax = fmaxf(fmaxf(fabsf(vals[0]), fabsf(vals[1])), fmaxf(fabsf(vals[2]), fabsf(vals[3])));
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float s;
    if (ue8m0) {
        if (!(amax > 1e-4f))
            amax = 1e-4f;
        s = ue8m0_round(amax * (1.0f / 448.0f));
    } else {
        s = fmaxf(amax, 1e-4f) * (1.0f / 448.0f);
    }
    uint32_t packed = 0;
    for (int i = 0; i < 4; i++) {
        float y = fminf(fmaxf(__fdiv_rn(vals[i], s), -448.0f), 448.0f);
        __nv_fp8_storage_t b = __nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
        packed |= (uint32_t)b << (8 * i);
    }
    reinterpret_cast<uint32_t *>(xq + (size_t)m * K + g * 128)[lane] = packed;
    if (lane == 0)
        xs[(size_t)g * rows + m] = s;
}

template <typename TI, typename TO> __device__ __forceinline__ TO conv(TI v);
template <> __device__ __forceinline__ float conv<__nv_bfloat16, float>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ __nv_bfloat16 conv<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16 v) { return v; }
template <> __device__ __forceinline__ float conv<float, float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 conv<float, __nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// [N][ld] column-major D -> row-major [M][ldo], through a 32x33 tile.
template <typename TI, typename TO>
__global__ void transpose_out_kernel(const TI *__restrict__ in, TO *__restrict__ out, int M, int N, int ld, int ldo)
{
    __shared__ TI tile[32][33];
    const int n0 = blockIdx.x * 32, m0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int n = n0 + i, m = m0 + threadIdx.x;
        if (n < N && m < M)
            tile[i][threadIdx.x] = in[(size_t)n * ld + m];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int m = m0 + i, n = n0 + threadIdx.x;
        if (n < N && m < M)
            out[(size_t)m * ldo + n] = conv<TI, TO>(tile[threadIdx.x][i]);
    }
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16 *__restrict__ x, int ldx, int M, int K, float *__restrict__ out)
{
    const size_t total = (size_t)M * K;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x)
        out[k] = __bfloat162float(x[(k / K) * ldx + k % K]);
}

__device__ __forceinline__ float e4m3_f(uint8_t b)
{
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3);
    return __half2float(__half(h));
}

// 64 x 64 output tile per block of 256 threads (4 x 4 outputs each), K stepped by one 128-block:
// both operands' 128-slices dequantized to float in shared memory, the block's partial dot
// scaled by xs * ws and added to the fp32 accumulator, as the CPU's cpu_linear_rows does.
constexpr int SG_TILE = 64, SG_KB = 128, SG_KC = 32;
__global__ void __launch_bounds__(256) fp8_gemm_simt_kernel(const uint8_t *__restrict__ xq, const float *__restrict__ xs,
                                                            int rows, const uint8_t *__restrict__ w,
                                                            const float *__restrict__ ws, int64_t ws_stride,
                                                            void *out, bool out_f32, int ldo, int M, int N, int K)
{
    __shared__ float xa[SG_KC][SG_TILE + 1];    // [k][m]
    __shared__ float wb[SG_KC][SG_TILE + 1];    // [k][n]
    const int m0 = blockIdx.y * SG_TILE, n0 = blockIdx.x * SG_TILE;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {};
    for (int kb = 0; kb < K / SG_KB; kb++) {
        float part[4][4] = {};
        for (int kc = 0; kc < SG_KB; kc += SG_KC) {
            for (int e = threadIdx.x; e < SG_TILE * SG_KC; e += blockDim.x) {
                const int r = e / SG_KC, k = e % SG_KC;
                const size_t kk = (size_t)kb * SG_KB + kc + k;
                xa[k][r] = m0 + r < M ? e4m3_f(xq[(size_t)(m0 + r) * K + kk]) : 0.0f;
                wb[k][r] = n0 + r < N ? e4m3_f(w[(size_t)(n0 + r) * K + kk]) : 0.0f;
            }
            __syncthreads();
            for (int k = 0; k < SG_KC; k++) {
                float a[4], b[4];
                for (int i = 0; i < 4; i++) {
                    a[i] = xa[k][ty + 16 * i];
                    b[i] = wb[k][tx + 16 * i];
                }
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++)
                        part[i][j] = fmaf(a[i], b[j], part[i][j]);
            }
            __syncthreads();
        }
        for (int i = 0; i < 4; i++) {
            const int m = m0 + ty + 16 * i;
            const float sx = m < M ? xs[(size_t)kb * rows + m] : 0.0f;
            for (int j = 0; j < 4; j++) {
                const int n = n0 + tx + 16 * j;
                const float sw = n < N ? ws[(size_t)(n / 128) * ws_stride + kb] : 0.0f;
                acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(part[i][j], __fmul_rn(sx, sw)));
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        const int m = m0 + ty + 16 * i;
        if (m >= M)
            continue;
        for (int j = 0; j < 4; j++) {
            const int n = n0 + tx + 16 * j;
            if (n >= N)
                continue;
            if (out_f32)
                ((float *)out)[(size_t)m * ldo + n] = acc[i][j];
            else
                ((__nv_bfloat16 *)out)[(size_t)m * ldo + n] = __float2bfloat16_rn(acc[i][j]);
        }
    }
}

extern "C" cudaError_t cuda_launch_act_quant_bf16(cudaStream_t st, const void *x, int ldx, int M, int rows, int K,
                                                  bool ue8m0, uint8_t *xq, float *xs)
{
    size_t threads_total = (size_t)rows * (K / 128) * 32;
    const int threads = 256;
    act_quant_bf16_kernel<<<(unsigned)((threads_total + threads - 1) / threads), threads, 0, st>>>(
        (const __nv_bfloat16 *)x, ldx, M, rows, K, ue8m0, xq, xs);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_transpose_out(cudaStream_t st, const void *in, bool in_f32, void *out, bool out_f32,
                                                 int M, int N, int ld, int ldo)
{
    dim3 block(32, 8), grid((N + 31) / 32, (M + 31) / 32);
    if (in_f32 && out_f32)
        transpose_out_kernel<float, float><<<grid, block, 0, st>>>((const float *)in, (float *)out, M, N, ld, ldo);
    else if (in_f32)
        transpose_out_kernel<float, __nv_bfloat16>
            <<<grid, block, 0, st>>>((const float *)in, (__nv_bfloat16 *)out, M, N, ld, ldo);
    else if (out_f32)
        transpose_out_kernel<__nv_bfloat16, float>
            <<<grid, block, 0, st>>>((const __nv_bfloat16 *)in, (float *)out, M, N, ld, ldo);
    else
        transpose_out_kernel<__nv_bfloat16, __nv_bfloat16>
            <<<grid, block, 0, st>>>((const __nv_bfloat16 *)in, (__nv_bfloat16 *)out, M, N, ld, ldo);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_bf16_to_f32(cudaStream_t st, const void *x, int ldx, int M, int K, float *out)
{
    size_t total = (size_t)M * K, blocks = (total + 255) / 256;
    if (blocks > 65535u * 8)
        blocks = 65535u * 8;
    bf16_to_f32_kernel<<<(unsigned)(blocks ? blocks : 1), 256, 0, st>>>((const __nv_bfloat16 *)x, ldx, M, K, out);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_fp8_gemm_simt(cudaStream_t st, const uint8_t *xq, const float *xs, int rows,
                                                 const uint8_t *w, const float *ws, int64_t ws_stride, void *out,
                                                 bool out_f32, int ldo, int M, int N, int K)
{
    dim3 grid((N + SG_TILE - 1) / SG_TILE, (M + SG_TILE - 1) / SG_TILE);
    fp8_gemm_simt_kernel<<<grid, 256, 0, st>>>(xq, xs, rows, w, ws, ws_stride, out, out_f32, ldo, M, N, K);
    return cudaGetLastError();
}

__global__ void f32_rows_to_bf16_kernel(const float *__restrict__ in, int M, int N, __nv_bfloat16 *__restrict__ out,
                                        int ldo)
{
    const size_t total = (size_t)M * N;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x)
        out[(k / N) * ldo + k % N] = __float2bfloat16_rn(in[k]);
}

extern "C" cudaError_t cuda_launch_f32_rows_to_bf16(cudaStream_t st, const float *in, int M, int N, void *out, int ldo)
{
    size_t total = (size_t)M * N, blocks = (total + 255) / 256;
    if (blocks > 65535u * 8)
        blocks = 65535u * 8;
    f32_rows_to_bf16_kernel<<<(unsigned)(blocks ? blocks : 1), 256, 0, st>>>(in, M, N, (__nv_bfloat16 *)out, ldo);
    return cudaGetLastError();
}
