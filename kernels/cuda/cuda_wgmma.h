// kernels/cuda/cuda_wgmma.h: what a kernel needs to drive Hopper's warpgroup MMA (wgmma,
// sm_90a) on tiles in shared memory: the 128-byte-swizzled tile layout, the matrix
// descriptors, and the fences. The mma wrappers themselves are generated
// (cuda_wgmma_ops.h). CUDA C++ only; docs/KERNELS.md ("wgmma tiles") explains the layout.
//
// Tile layout ("SW128"): a bf16 tile of `rows` rows is stored in column blocks of 64 values
// (128 bytes per row); block c / 64 is a contiguous [rows][128 B] region, and inside it the
// 16-byte chunk j of row r is stored at chunk j ^ (r % 8). The hardware applies that XOR to
// address bits 4-6 from bits 7-9, so every region must start 1024-byte aligned. The same
// storage serves as a K-major operand (rows = M or N, the 64 values along K) and as an
// MN-major one (rows = K, the 64 values along N): the sparse attention reads its gathered
// entries both ways, as keys (K-major B of S = Q K^T) and as values (MN-major B of O = P V).
#ifndef DSD_CUDA_WGMMA_H
#define DSD_CUDA_WGMMA_H

#include <stdint.h>

#include "cuda_wgmma_ops.h"

namespace dsd_wgmma {

// byte offset of bf16 element (r, c) in an SW128 tile of `rows` rows
__device__ __forceinline__ uint32_t sw128(int r, int c, int rows)
{
    return (uint32_t)((c >> 6) * rows * 128 + r * 128 + ((((c >> 3) & 7) ^ (r & 7)) << 4) + ((c & 7) << 1));
}

// A shared-memory matrix descriptor for an SW128 tile: start address, "leading" and
// "stride" byte offsets (what they step over depends on the operand's major-ness:
//   K-major:  sbo = from one 8-row group to the next (1024 B); lbo unused (one k16 step
//             never leaves its 64-value column block);
//   MN-major: lbo = from one 64-value column block to the next along N (rows * 128 B),
//             sbo = from one group of 8 K-rows to the next (1024 B)),
// and the 128-byte swizzle mode (1 in bits 62-63).
__device__ __forceinline__ uint64_t desc(const void *smem, uint32_t lbo, uint32_t sbo)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    return (uint64_t)((a & 0x3FFFF) >> 4) | (uint64_t)((lbo & 0x3FFFF) >> 4) << 16 |
           (uint64_t)((sbo & 0x3FFFF) >> 4) << 32 | (uint64_t)1 << 62;
}

// Before the first wgmma of a batch (orders the accumulator registers' earlier accesses).
__device__ __forceinline__ void fence()
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void commit()
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most N committed batches are still running.
template <int N> __device__ __forceinline__ void wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared memory written by ordinary stores or cp.async and read next by wgmma: each writing
// thread fences before the barrier that publishes it.
__device__ __forceinline__ void proxy_fence()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Pins accumulator registers after a wait: the compiler must not move their reads above it.
template <int R> __device__ __forceinline__ void pin(float (&d)[R])
{
#pragma unroll
    for (int i = 0; i < R; i++)
        asm volatile("" : "+f"(d[i])::"memory");
}

} // namespace dsd_wgmma

#endif
