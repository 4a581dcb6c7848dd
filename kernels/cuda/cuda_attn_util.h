// kernels/cuda/cuda_attn_util.h: device helpers shared by the KV stores, the indexer and the
// attention kernels (cuda_kv.cu, cuda_indexer.cu, cuda_attention.cu). CUDA C++ only: include
// from .cu files. Every helper reproduces a CPU reference rounding point bit for bit
// (kernels/cpu/cpu_ref.c, kernels/numeric.h) unless it says otherwise.
#ifndef DSD_CUDA_ATTN_UTIL_H
#define DSD_CUDA_ATTN_UTIL_H

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace dsd_attn {

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

// round to nearest even, NaN stays NaN (dsd_f32_to_bf16)
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float round_bf16(float f)
{
    return bf16_bits_to_f32(f32_to_bf16_bits(f));
}

__device__ __forceinline__ float e4m3_to_f32(uint8_t b)
{
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3);
    return __half2float(__half(h));
}

// The scale of one 128-group whose largest magnitude is amax: dsd_ue8m0_scale or amax/448,
// both with the 1e-4 floor (dsd_ref_act_quant). NaN amax counts as the floor.
__device__ __forceinline__ float quant_scale(float amax, bool ue8m0)
{
    if (!(amax > 1e-4f))
        amax = 1e-4f;
    float s = amax * (1.0f / 448.0f);
    if (ue8m0) {
        uint32_t u = __float_as_uint(s);
        int e = (int)((u >> 23) & 0xff) - 127 + ((u & 0x7fffffu) != 0);
        s = ldexpf(1.0f, e);
    }
    return s;
}

// e4m3(clamp(v / s, +-448)), round to nearest even (dsd_ref_act_quant)
__device__ __forceinline__ uint8_t quant_e4m3(float v, float s)
{
    float y = fminf(fmaxf(v / s, -448.0f), 448.0f);
    return (uint8_t)__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// In-warp Sylvester Hadamard transform of 128 values, lane l holding x[4l .. 4l+3], then
// times `scale` (1/sqrt(128) computed by the caller as the CPU does). The same butterflies in
// the same order as dsd_ref_hadamard (a+b to the lower, a-b to the upper element), so the
// result is bitwise identical.
__device__ __forceinline__ void warp_hadamard128(float x[4], float scale)
{
    const int lane = threadIdx.x & 31;
    float a, b;
    // h = 1: pairs (0,1), (2,3) inside the lane
    a = x[0], b = x[1]; x[0] = a + b; x[1] = a - b;
    a = x[2], b = x[3]; x[2] = a + b; x[3] = a - b;
    // h = 2: pairs (0,2), (1,3)
    a = x[0], b = x[2]; x[0] = a + b; x[2] = a - b;
    a = x[1], b = x[3]; x[1] = a + b; x[3] = a - b;
    // h = 4 .. 64: across lanes (lane bit h/4)
    for (int m = 1; m < 32; m <<= 1) {
        const bool upper = (lane & m) != 0;
        for (int i = 0; i < 4; i++) {
            float p = __shfl_xor_sync(0xffffffffu, x[i], m);
            x[i] = upper ? p - x[i] : x[i] + p;
        }
    }
    for (int i = 0; i < 4; i++)
        x[i] *= scale;
}

// D += A * B, m16n8k16, bf16 operands, fp32 accumulators (PTX ISA "mma.m16n8k16" fragments:
// A rows g, g+8 / cols 2q, 2q+1, +8; B cols g / rows 2q, 2q+1, +8; C rows g, g+8 / cols 2q, 2q+1,
// with g = lane / 4, q = lane % 4).
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D += A * B, m16n8k32, e4m3 operands, fp32 accumulators (PTX ISA "mma.m16n8k32" fragments
// of 8-bit types: A a0 row g / cols 4q .. 4q+3, a1 row g+8, a2 row g / cols 16+4q .., a3 row
// g+8; B b0 col g / rows 4q .. 4q+3, b1 rows 16+4q ..; C as mma_bf16). Products of e4m3 values
// are exact; the tensor core adds each k32 step's products into the fp32 accumulator itself.
__device__ __forceinline__ void mma_e4m3(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without registers (cp.async.cg: L2 only); valid = false fills
// the 16 bytes with zeros instead of reading
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid)
{
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

// 4 bytes global -> shared (cp.async.ca: sizes below 16 go through L1); valid = false fills
// zeros
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, bool valid)
{
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    const int n = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

// wait until at most N committed groups are still in flight
template <int N>
__device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void cp_async_wait_all()
{
    cp_async_wait<0>();
}

// Four 8x8 b16 matrices from shared memory, transposed (ldmatrix .trans): lane l gives the row
// address of matrix l / 8, row l % 8.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *smem_row)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// max / sum over the 4 lanes of a quad (the lanes that share an mma accumulator row)
__device__ __forceinline__ float quad_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v)
{
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ uint32_t pack_bf16(uint16_t lo, uint16_t hi)
{
    return (uint32_t)lo | ((uint32_t)hi << 16);
}

} // namespace dsd_attn

#endif
