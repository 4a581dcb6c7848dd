// The MoE block's experts for steps of more than MOE_STREAM_MAX_T tokens as grouped FP8 GEMMs
// on Hopper's warpgroup MMA (moe_prefill = auto or grouped): every routed (token, expert)
// pair and the shared expert's pairs in a few launches, with no host synchronization (the
// per-expert counts stay on the device, so decode steps with these launches can be recorded as
// graphs). Design and measured history: docs/KERNELS.md, "Grouped FP8 experts".
//
//   1. cuda_moe_launch_plan (cuda_moe.cu, beside the sort whose prefix sum it shares): the
//      per-expert counts become a list of 128-row blocks, each inside one expert's run of
//      pairs (perm order), padded at its end; the list's length stays on the device.
//   2. For each chunk of GROUPED_CHUNK_BLOCKS blocks (so the intermediate rows need bounded
//      scratch), grouped_kernel<GATEUP>: a CTA per (64 columns of the intermediate width,
//      block) multiplies the block's token rows (gathered from the quantized tokens by the
//      pair's token) by the expert's gate and up rows n0..n0+63 at once (one m64n128k32
//      wgmma per 32 bytes of K: B rows 0-63 gate, 64-127 up), and writes
//      h = bf16(silu(bf16 g) * bf16 u) for its 128 rows; quant_kernel (cuda_moe.cu's)
//      quantizes h per 1x128 group; grouped_kernel<DOWN>: a CTA per (128 output columns,
//      block) gives y[pair] = bf16(h . down^T) for the block's valid rows.
// Block scaling is exact per 128-deep K block: each K block's product goes to a scratch
// accumulator (wgmma with scale-d 0) and is added to the result times (row's activation
// scale x the expert's 128x128 weight scale), the order of the CPU's cpu_linear_rows.
// The CTA: 256 threads, two warpgroups of 64 rows each; every thread also issues its share
// of the cp.async loads of a 6-stage ring, 4 K blocks in flight beyond the two being
// multiplied (per stage: A tile 128 x 128 B, B tile 128 x 128 B, 128 A scales; tiles
// 128-byte swizzled as cuda_wgmma.h describes, K-major: the only layout e4m3 wgmma takes).
// Hand-written because no library has it: cuBLASLt has no grouped block-scaled FP8 GEMM
// (docs/KERNELS.md). CUDA C++ only; no code from other projects.
#include <cuda_bf16.h>
#include <stdint.h>

extern "C" {
#include "err.h"
}
#include "cuda_attn_util.h"
#include "cuda_backend.h"
#include "cuda_moe.h"
#include "cuda_wgmma.h"

using namespace dsd_attn;

#define GB_ROWS DSD_CUDA_GROUPED_BLOCK_ROWS     // rows of a block (two warpgroups of 64)
static_assert(GB_ROWS == 128, "a block is two warpgroups of 64 rows");
#define GB_STAGES 6
#define GB_AHEAD (GB_STAGES - 2)        // K blocks in flight beyond the two multiplied
#ifndef GB_BAND
#define GB_BAND 8                       // row blocks a band of CTAs walks together (L2 reuse)
#endif
#define GB_TILE 16384                   // 128 rows x 128 bytes
#define GB_STAGE_BYTES (2 * GB_TILE + 1024)     // A, B, A scales (512 B), 1 KB aligned
#define GB_SMEM (GB_STAGES * GB_STAGE_BYTES + GB_ROWS * 4 + 1024)
#define GB_THREADS 256

// 4-byte global -> shared copy (cp.async.ca: the only form for fewer than 16 bytes)
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem)
{
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}

struct grouped_args {
    const int4 *blocks;
    const int32_t *n_blocks;
    int chunk0;                         // first block of this launch
    const struct moe_ffn_w *table;      // device [n_exp]
    const int32_t *perm;
    int Tk, k, D, Imax;
    const uint8_t *xq;                  // GATEUP: quantized tokens [T][D], scales [T][D/128]
    const float *xs;
    __nv_bfloat16 *h;                   // [chunk rows][Imax]: GATEUP writes, DOWN reads hq/hs
    const uint8_t *hq;
    const float *hs;                    // [chunk rows][Imax/128]
    __nv_bfloat16 *y;                   // DOWN: [pair][D]
};

template <bool GATEUP>
__global__ void __launch_bounds__(GB_THREADS, 1) grouped_kernel(const grouped_args a)
{
    using namespace dsd_wgmma;
    // Rasterization: consecutive CTAs take the same columns of GB_BAND consecutive row blocks
    // (mostly one expert's), then the next columns, so a band's token rows and the weight
    // tile being streamed are read from L2 by several CTAs at once instead of from DRAM again.
    const int NT = (int)gridDim.x, lin = (int)blockIdx.x + (int)blockIdx.y * NT;
    const int band = lin / (GB_BAND * NT), within = lin % (GB_BAND * NT);
    const int in_band = min(GB_BAND, (int)gridDim.y - band * GB_BAND);
    const int by = band * GB_BAND + within % in_band, bx = within / in_band;
    const int bi = a.chunk0 + by;
    if (bi >= *a.n_blocks)
        return;
    const int4 blk = a.blocks[bi];
    const int e = blk.x, pstart = blk.y, nrows = blk.z;
    const struct moe_ffn_w f = a.table[e];
    const int BN = GATEUP ? 64 : 128;               // output columns per CTA
    const int n0 = bx * BN;
    const int K = GATEUP ? a.D : f.I, N = GATEUP ? f.I : a.D;
    if (n0 >= N)
        return;
    const int KB = K / 128, sstride = (KB + 3) & ~3;     // dsd_cuda_weight_scale_stride
    const int slot = by * GB_ROWS;          // this block's rows in h / hq

    extern __shared__ uint8_t smem_raw[];
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem_raw);
    uint8_t *sm = smem_raw + ((1024 - (base & 1023)) & 1023);
    int *rowid = reinterpret_cast<int *>(sm + GB_STAGES * GB_STAGE_BYTES);  // [128]: token (GATEUP) or pair

    const int tid = threadIdx.x;
    if (tid < GB_ROWS) {
        int v = -1;
        if (tid < nrows) {
            const int p = a.perm[pstart + tid];
            v = GATEUP ? (p < a.Tk ? p / a.k : p - a.Tk) : p;
        }
        rowid[tid] = v;
    }
    __syncthreads();

    // this thread's 4 A rows and 4 B rows of every stage: rows tid / 8 + 32 i, chunk tid % 8
    const int j = tid & 7;
    const uint8_t *arow[4], *brow[4];
    bool aok[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = (tid >> 3) + 32 * i;
        if (GATEUP) {
            aok[i] = rowid[r] >= 0;
            arow[i] = a.xq + (size_t)(aok[i] ? rowid[r] : 0) * a.D + j * 16;
            brow[i] = r < 64 ? f.w[0] + (size_t)(n0 + r) * K + j * 16 : f.w[1] + (size_t)(n0 + r - 64) * K + j * 16;
        } else {
            aok[i] = true;                          // padding rows of h are zeros, quantized
            arow[i] = a.hq + (size_t)(slot + r) * a.Imax + j * 16;
            brow[i] = f.w[2] + (size_t)(n0 + r) * K + j * 16;
        }
    }
    // this thread's A scale row (threads 0..127)
    const float *srow = NULL;
    if (tid < GB_ROWS) {
        if (GATEUP)
            srow = rowid[tid] >= 0 ? a.xs + (size_t)rowid[tid] * (a.D / 128) : NULL;
        else
            srow = a.hs + (size_t)(slot + tid) * (a.Imax / 128);
    }

    auto issue = [&](int kb) {
        if (kb < KB) {
            uint8_t *st = sm + (kb % GB_STAGES) * GB_STAGE_BYTES;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int r = (tid >> 3) + 32 * i;
                const uint32_t o = r * 128 + ((j ^ (r & 7)) << 4);
                cp_async16(st + o, arow[i] + kb * 128, aok[i]);
                cp_async16(st + GB_TILE + o, brow[i] + kb * 128, true);
            }
            float *as = reinterpret_cast<float *>(st + 2 * GB_TILE);
            if (tid < GB_ROWS) {
                if (srow)
                    cp_async4(&as[tid], srow + kb);
                else
                    as[tid] = 0.0f;
            }
        }
        cp_async_commit();          // one group per K block, empty past the end
    };
#pragma unroll
    for (int s = 0; s < GB_AHEAD; s++)
        issue(s);

    const int warp = tid >> 5, lane = tid & 31, wg = warp >> 2, g = lane >> 2, q4 = lane & 3;
    const int r0 = wg * 64 + (warp & 3) * 16 + g;       // this thread's rows r0 and r0 + 8
    const float *ws0 = GATEUP ? f.s[0] + (size_t)(n0 / 128) * sstride : f.s[2] + (size_t)(n0 / 128) * sstride;
    const float *ws1 = GATEUP ? f.s[1] + (size_t)(n0 / 128) * sstride : ws0;

    // Two scratch accumulators: each iteration issues K blocks kb and kb + 1 back to back (into
    // t0, t1) and scales t0 into acc while t1's wgmma still runs. Both buffers are written and
    // read inside one iteration, so ptxas can see which wgmma each read waits for (across
    // iterations it serializes every wgmma instead: warning C7514).
    float acc[64], t0[64], t1[64];
#pragma unroll
    for (int i = 0; i < 64; i++)
        acc[i] = 0.0f;
    auto promote = [&](const float (&t)[64], int kb, float w0, float w1) {
        const float *as = reinterpret_cast<const float *>(sm + (kb % GB_STAGES) * GB_STAGE_BYTES + 2 * GB_TILE);
        const float sa0 = as[r0], sa1 = as[r0 + 8];
#pragma unroll
        for (int i = 0; i < 64; i++)
            acc[i] += t[i] * ((i & 2 ? sa1 : sa0) * (GATEUP && i >= 32 ? w1 : w0));
    };
    auto mma = [&](float (&t)[64], int kb) {
        const uint8_t *st = sm + (kb % GB_STAGES) * GB_STAGE_BYTES;
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
            wgmma_e4m3<128>::run(t, desc(st + wg * 8192 + kk * 32, 16, 1024), desc(st + GB_TILE + kk * 32, 16, 1024),
                                 kk > 0);
        commit();
    };
    for (int kb = 0; kb < KB; kb += 2) {
        const bool two = kb + 1 < KB;
        const float a0 = __ldg(ws0 + kb), a1 = __ldg(ws1 + kb);
        const float b0 = two ? __ldg(ws0 + kb + 1) : 0.0f, b1 = two ? __ldg(ws1 + kb + 1) : 0.0f;
        cp_async_wait<GB_AHEAD - 2>();
        proxy_fence();
        // K blocks kb, kb + 1 landed for every thread; the stages of kb - 2 and kb - 1 are read
        // by no one (every wgmma of the previous iteration was waited for), so they take
        // blocks kb + GB_AHEAD and kb + GB_AHEAD + 1
        __syncthreads();
        issue(kb + GB_AHEAD);
        issue(kb + GB_AHEAD + 1);
        fence();
        mma(t0, kb);
        if (two) {
            mma(t1, kb + 1);
            wait<1>();
            pin(t0);
            promote(t0, kb, a0, a1);
            wait<0>();
            pin(t1);
            promote(t1, kb + 1, b0, b1);
        } else {
            wait<0>();
            pin(t0);
            promote(t0, kb, a0, a1);
        }
    }

    // epilogue: columns 8 jn + 2 q4 + x, rows r0 (+8 for i & 2)
    if (GATEUP) {
#pragma unroll
        for (int jn = 0; jn < 8; jn++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                float v[2];
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    const float gv = round_bf16(acc[4 * jn + 2 * hh + x]), uv = round_bf16(acc[32 + 4 * jn + 2 * hh + x]);
                    v[x] = __fmul_rn(__fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv))), uv);
                }
                const int r = r0 + 8 * hh;
                *reinterpret_cast<__nv_bfloat162 *>(a.h + (size_t)(slot + r) * a.Imax + n0 + 8 * jn + 2 * q4) =
                    __floats2bfloat162_rn(v[0], v[1]);
            }
    } else {
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int p = rowid[r0 + 8 * hh];
            if (p < 0)
                continue;
            __nv_bfloat16 *yr = a.y + (size_t)p * a.D + n0 + 2 * q4;
#pragma unroll
            for (int jn = 0; jn < 16; jn++)
                *reinterpret_cast<__nv_bfloat162 *>(yr + 8 * jn) =
                    __floats2bfloat162_rn(acc[4 * jn + 2 * hh], acc[4 * jn + 2 * hh + 1]);
        }
    }
}

extern "C" {

size_t cuda_moe_grouped_bytes(int P, int n_exp, int Imax, struct moe_grouped_bufs *b)
{
    const int max_blocks = (int)dsd_cuda_grouped_max_blocks(P, n_exp);
    const int chunk = max_blocks < GROUPED_CHUNK_BLOCKS ? max_blocks : GROUPED_CHUNK_BLOCKS;
    const size_t rows = (size_t)chunk * GB_ROWS;
    size_t at = 0;
    const size_t sz[5] = { (size_t)max_blocks * sizeof(int4), 256, rows * Imax * 2, rows * Imax,
                           rows * (Imax / 128) * sizeof(float) };
    size_t o[5];
    for (int i = 0; i < 5; i++) {
        o[i] = at;
        at += (sz[i] + 255) & ~(size_t)255;
    }
    if (b) {
        uint8_t *p = (uint8_t *)b->base;
        b->blocks = p + o[0];
        b->n_blocks = (int32_t *)(p + o[1]);
        b->h = p + o[2];
        b->hq = p + o[3];
        b->hs = (float *)(p + o[4]);
        b->max_blocks = max_blocks;
        b->chunk_blocks = chunk;
    }
    return at;
}

void cuda_moe_grouped_experts(struct cuda_backend *cb, const struct moe_sort *s, const struct moe_ffn_w *table,
                              int n_exp, int Tk, int k, int D, int Imax, const uint8_t *xq, const float *xs,
                              const struct moe_grouped_bufs *b, void *y)
{
    if (!CU_OK(cb, cudaFuncSetAttribute(grouped_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, GB_SMEM)) ||
        !CU_OK(cb, cudaFuncSetAttribute(grouped_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, GB_SMEM)))
        return;
    cuda_moe_launch_plan(cb, (int4 *)b->blocks, b->n_blocks, s, n_exp, GB_ROWS);
    if (cb->status)
        return;
    grouped_args a = { .blocks = (const int4 *)b->blocks, .n_blocks = b->n_blocks, .chunk0 = 0, .table = table,
                       .perm = s->perm, .Tk = Tk, .k = k, .D = D, .Imax = Imax, .xq = xq, .xs = xs,
                       .h = (__nv_bfloat16 *)b->h, .hq = b->hq, .hs = b->hs, .y = (__nv_bfloat16 *)y };
    const int rows = b->chunk_blocks * GB_ROWS;
    for (int c0 = 0; c0 < b->max_blocks && !cb->status; c0 += b->chunk_blocks) {
        a.chunk0 = c0;
        grouped_kernel<true><<<dim3(Imax / 64, b->chunk_blocks), GB_THREADS, GB_SMEM, cb->stream>>>(a);
        if (!CU_LAUNCHED(cb))
            return;
        cuda_moe_launch_quant_bf16(cb, b->hq, b->hs, b->h, rows, Imax);
        if (cb->status)
            return;
        grouped_kernel<false><<<dim3(D / 128, b->chunk_blocks), GB_THREADS, GB_SMEM, cb->stream>>>(a);
        if (!CU_LAUNCHED(cb))
            return;
    }
}

}
