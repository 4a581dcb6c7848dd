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

// Keeps registers a wgmma read as its A operand live (and unmoved) up to this point: call
// after the wait that covers that wgmma.
template <int R, int C> __device__ __forceinline__ void pin_regs(uint32_t (&a)[R][C])
{
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int j = 0; j < C; j++)
            asm volatile("" : "+r"(a[i][j])::"memory");
}

// --- warp-specialized pipelines: mbarriers, named barriers, register budgets ---
// An mbarrier (8 bytes of shared memory, 8-byte aligned) completes a phase once `count`
// arrivals have happened; waiters name the phase by its parity (0 for the first, then 1, 0..).
__device__ __forceinline__ void mbar_init(uint64_t *bar, int count)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(bar);
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(a), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(bar);
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(a) : "memory");
}
// Blocks until the phase of the given parity has completed. Built with DSD_MBAR_WATCHDOG (the
// CMake option DSD_CUDA_WATCHDOG, for the first GPU runs of a new pipeline), a wait that lasts
// past MBAR_WAIT_LIMIT clock cycles (~4 s at Hopper's clocks; the pipelines' waits are micro-
// to milliseconds, ~100x that under compute-sanitizer) traps: a phase that never completes (a
// miscounted arrival) ends the launch with an error the host reports instead of hanging until
// the test's timeout. Off by default: its clock reads cost the warp-specialized attention
// kernel spills (ptxas, 2026-12-07).
#define MBAR_WAIT_LIMIT (8ll << 30)
__device__ __forceinline__ void mbar_wait(uint64_t *bar, int parity)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(bar);
    uint32_t done = 0;
#ifdef DSD_MBAR_WATCHDOG
    long long t0 = 0;
#endif
    for (;;) {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(a), "r"(parity)
                     : "memory");
        if (done)
            return;
#ifdef DSD_MBAR_WATCHDOG
        const long long t = clock64();
        if (!t0)
            t0 = t;
        else if (t - t0 > MBAR_WAIT_LIMIT)
            __trap();
#endif
    }
}
// One arrival on bar once every cp.async this thread has issued so far has landed (the
// arrival is counted in the barrier's init count: .noinc).
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t *bar)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(bar);
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(a) : "memory");
}
// Named barrier `id` (1..15; 0 is __syncthreads) over `n` threads, a multiple of 32: sync
// waits for all n, arrive counts this warp and goes on (a producer's signal to syncing peers).
__device__ __forceinline__ void named_sync(int id, int n)
{
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int n)
{
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
// A warpgroup gives registers back (dec) or takes more (inc); N a multiple of 8, 24..256.
template <int N> __device__ __forceinline__ void regs_dec()
{
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> __device__ __forceinline__ void regs_inc()
{
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

} // namespace dsd_wgmma

#endif
