// Many host <-> device copies in one launch (ops.h copy_many). A KV tier hit moves each page
// as 2 x layers pieces of 8-42 KB; one cudaMemcpyAsync per piece costs its own setup (host
// time and a DMA start), which held the host tier's reload to 9 GB/s of the link's 55 on an
// H100 (docs/KV_CACHE.md, "Measured"). Here the SMs read the pinned host memory directly
// (alloc_host memory is mapped into the device's address space at the same address) and write
// device memory, or the reverse: one CTA per piece, each thread keeping four 16-byte loads in
// flight, so thousands of PCIe reads are outstanding at once. The pieces travel as the
// kernel's parameters (up to COPY_BATCH per launch: Hopper takes 32 KB of parameters), so no
// descriptor upload precedes the copy.
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_internal.h"
#include "ops.h"

#define COPY_THREADS 256
#define COPY_UNROLL 4

struct copy_batch {
    const uint8_t *src[CUDA_COPY_BATCH];
    uint8_t *dst[CUDA_COPY_BATCH];
    uint32_t bytes[CUDA_COPY_BATCH];
};

__global__ void __launch_bounds__(COPY_THREADS) copy_many_kernel(const __grid_constant__ copy_batch b)
{
    const uint8_t *src = b.src[blockIdx.x];
    uint8_t *dst = b.dst[blockIdx.x];
    const uint32_t n = b.bytes[blockIdx.x];
    if ((((uintptr_t)src | (uintptr_t)dst | n) & 15) != 0) {
        // not 16-byte aligned: bytes (no caller of this project passes such a piece)
        for (uint32_t i = threadIdx.x; i < n; i += COPY_THREADS)
            dst[i] = src[i];
        return;
    }
    const uint4 *s = reinterpret_cast<const uint4 *>(src);
    uint4 *d = reinterpret_cast<uint4 *>(dst);
    const uint32_t n16 = n / 16;
    for (uint32_t i0 = 0; i0 < n16; i0 += COPY_THREADS * COPY_UNROLL) {
        uint4 v[COPY_UNROLL];
#pragma unroll
        for (int u = 0; u < COPY_UNROLL; u++) {
            const uint32_t i = i0 + u * COPY_THREADS + threadIdx.x;
            if (i < n16)
                v[u] = s[i];
        }
#pragma unroll
        for (int u = 0; u < COPY_UNROLL; u++) {
            const uint32_t i = i0 + u * COPY_THREADS + threadIdx.x;
            if (i < n16)
                d[i] = v[u];
        }
    }
}

extern "C" cudaError_t cuda_launch_copy_many(cudaStream_t st, const struct dsd_copy *p, int n)
{
    for (int i0 = 0; i0 < n; i0 += CUDA_COPY_BATCH) {
        const int m = n - i0 < CUDA_COPY_BATCH ? n - i0 : CUDA_COPY_BATCH;
        copy_batch b;
        for (int i = 0; i < m; i++) {
            b.src[i] = static_cast<const uint8_t *>(p[i0 + i].src);
            b.dst[i] = static_cast<uint8_t *>(p[i0 + i].dst);
            b.bytes[i] = (uint32_t)p[i0 + i].bytes;
        }
        copy_many_kernel<<<m, COPY_THREADS, 0, st>>>(b);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}
