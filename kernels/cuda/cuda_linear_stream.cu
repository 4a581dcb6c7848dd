// The linears of small steps (1-64 tokens: decode, short chunks): a weight-streaming kernel
// on mma.sync, for FP8 block-scaled weights (e4m3 x e4m3, m16n8k32) and for bf16 weights (the
// LM head, eh_proj, the indexer's weights_proj: bf16 x bf16, m16n8k16). At these sizes the
// linear is a read of the weight matrix (N x K bytes) and little else; cuBLASLt's
// block-scaled GEMM reaches only about a third of HBM bandwidth there (docs/CUDA.md), so this
// is the product's own kernel; cuda_linear.c picks it (FP8, up to CUDA_LINEAR_STREAM_AUTO_M
// tokens by default). Design, floors and measured history: docs/KERNELS.md, "Small-step FP8
// linear".
//
//   - A CTA owns 128 output features (one row block of the weight scales, so the weight
//     scale of a K-block is one number for the whole CTA) and a range of K-blocks; 8 warps,
//     warp w the features 16w .. 16w+15. The grid's second dimension splits K when the
//     features alone give too few CTAs (q_a, kv_a, wk, o_proj at one token): each split writes
//     fp32 partial sums, and linstream_reduce_kernel adds them in split order (deterministic,
//     no atomics).
//   - Weights go global -> registers, one K-block (16 rows x 128 bytes per warp) ahead of the
//     one being multiplied, read once. The tokens' e4m3 rows (act_quant's output) go
//     global -> shared by cp.async, 4 K-blocks at a time, double-buffered, shared by the 8
//     warps.
//   - The product is the weights as the A operand (16 rows) and the tokens as B (8 per
//     n-tile, NT n-tiles). Because a dot product does not care in which order its k terms
//     come, every thread loads 16 consecutive bytes of its weight row and the same 16 bytes
//     of its token row and hands them to two m16n8k32 steps as if they were the fragment's
//     k = 4q.. and 16 + 4q.. columns: both operands use the same permutation of k, so the
//     result is the plain dot product, and every load is one 16-byte access.
//   - FP8: each K-block's fp32 product is scaled by x scale * weight scale and added to the
//     accumulator, the CPU's order of operations per block (cpu_linear_rows); inside a block
//     the tensor core's fp32 sums replace the CPU's loop (the FP8 gate of tests/gpu).
//   - BF16 takes the same path with 128-byte "blocks" of 64 values, no scales, the tokens'
//     bf16 rows staged straight from x (no quantization), m16n8k16 on the same permuted
//     16-byte loads (two k16 steps per 16 bytes, like the two k32 steps of FP8).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_attn_util.h"     // mma_e4m3, cp_async16
#include "cuda_internal.h"

using dsd_attn::cp_async16;
using dsd_attn::cp_async_commit;
using dsd_attn::cp_async_wait;
using dsd_attn::mma_bf16;
using dsd_attn::mma_e4m3;

constexpr int LS_WARPS = 8;
constexpr int LS_ROWS = 16 * LS_WARPS;          // output features per CTA: one 128-row scale block
constexpr int LS_KCH = 4;                       // K-blocks per shared-memory chunk of the tokens
constexpr int LS_RS = LS_KCH * 128 + 64;        // token row stride in shared memory (bytes): the
                                                // 64-byte pad puts rows g and g+1 of a quarter-warp
                                                // on disjoint banks (docs/KERNELS.md)

template <int NT> struct ls_smem {
    uint8_t x[2][NT * 8][LS_RS];
    float s[2][LS_KCH][NT * 8];
};

// a "K-block" here is 128 bytes of a row: 128 e4m3 values or 64 bf16 ones
struct ls_args {
    const uint8_t *x;       // token rows: e4m3 [rows][K] (act_quant) or bf16 [M][ldx]
    int64_t x_stride;       // bytes between token rows
    int x_rows;             // token rows that may be read (the rest are zeros)
    const float *xs;        // FP8: [K/128][rows] token scales
    int rows;
    const uint8_t *w;       // [N][K] e4m3 or bf16
    int64_t w_stride;       // bytes per weight row
    const float *ws;        // FP8: [N/128][ws_stride]
    int64_t ws_stride;
    void *out;              // [M][ldo] bf16 or f32 (ksplit == 1)
    float *part;            // [ksplit][M][N] fp32 (ksplit > 1)
    bool out_f32;
    int ldo, M, N, kblocks, kb_per;
};

__device__ __forceinline__ uint4 ld_weights(const uint8_t *p, bool valid)
{
    uint4 v = make_uint4(0, 0, 0, 0);
    if (valid)
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    return v;
}

// the tokens' K-blocks kb .. kb+n-1 into buffer b (every thread of the CTA takes part)
template <int NT, bool BF>
__device__ __forceinline__ void ls_load_chunk(ls_smem<NT> &sm, int b, const ls_args &a, int kb, int n)
{
    constexpr int TOK = NT * 8;
    const int pieces = TOK * n * 8;             // 16-byte pieces of token rows
    for (int i = threadIdx.x; i < pieces; i += LS_WARPS * 32) {
        const int r = i / (n * 8), c = i % (n * 8);
        const bool v = r < a.x_rows;        // the n-tiles may reach past the token rows: zeros
        cp_async16(&sm.x[b][r][c * 16], a.x + (v ? r : 0) * a.x_stride + (int64_t)kb * 128 + c * 16, v);
    }
    // FP8 scales: rows is a multiple of 4 and xs 16-byte aligned, so 4 tokens are 16 bytes
    if constexpr (!BF)
        for (int i = threadIdx.x; i < n * (TOK / 4); i += LS_WARPS * 32) {
            const int j = i / (TOK / 4), c = i % (TOK / 4);
            const bool v = c * 4 < a.rows;
            cp_async16(&sm.s[b][j][c * 4], a.xs + (size_t)(kb + j) * a.rows + (v ? c * 4 : 0), v);
        }
    cp_async_commit();
}

template <int NT>
__device__ __forceinline__ void ls_zero(float (&f)[NT][4])
{
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            f[n][i] = 0.0f;
}

template <int NT, bool BF>
__global__ void __launch_bounds__(LS_WARPS * 32, NT == 8 ? 1 : 2) linstream_kernel(const ls_args a)
{
    extern __shared__ __align__(16) uint8_t ls_raw[];
    ls_smem<NT> &sm = *reinterpret_cast<ls_smem<NT> *>(ls_raw);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int rb = blockIdx.x, row = rb * LS_ROWS + warp * 16 + g;     // this thread's rows: row, row + 8
    const int kb0 = blockIdx.y * a.kb_per, kb1 = min(a.kblocks, kb0 + a.kb_per);
    if (kb0 >= kb1)
        return;
    const uint8_t *w0 = a.w + row * a.w_stride + q * 16, *w8 = w0 + 8 * a.w_stride;
    const bool v0 = row < a.N, v8 = row + 8 < a.N;
    const float *wsc = BF ? nullptr : a.ws + (size_t)rb * a.ws_stride;

    float acc[NT][4];
    ls_zero<NT>(acc);

    // weights of one K-block: [half][row g / g+8]
    uint4 wc[2][2], wn[2][2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        wc[h][0] = ld_weights(w0 + (size_t)kb0 * 128 + h * 64, v0);
        wc[h][1] = ld_weights(w8 + (size_t)kb0 * 128 + h * 64, v8);
    }
    ls_load_chunk<NT, BF>(sm, 0, a, kb0, min(LS_KCH, kb1 - kb0));
    int buf = 0;
    for (int c0 = kb0; c0 < kb1; c0 += LS_KCH, buf ^= 1) {
        const int cn = min(LS_KCH, kb1 - c0);
        if (c0 + LS_KCH < kb1) {
            ls_load_chunk<NT, BF>(sm, buf ^ 1, a, c0 + LS_KCH, min(LS_KCH, kb1 - c0 - LS_KCH));
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        for (int j = 0; j < cn; j++) {
            const int kb = c0 + j;
            const bool more = kb + 1 < kb1;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                wn[h][0] = ld_weights(w0 + (size_t)(kb + 1) * 128 + h * 64, v0 && more);
                wn[h][1] = ld_weights(w8 + (size_t)(kb + 1) * 128 + h * 64, v8 && more);
            }
            // FP8 sums each K-block apart (it is scaled before it joins acc); BF16 sums into acc
            float blk[NT][4];
            ls_zero<NT>(blk);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint32_t lo[4] = { wc[h][0].x, wc[h][1].x, wc[h][0].y, wc[h][1].y };
                const uint32_t hi[4] = { wc[h][0].z, wc[h][1].z, wc[h][0].w, wc[h][1].w };
#pragma unroll
                for (int n = 0; n < NT; n++) {
                    const uint4 xv = *reinterpret_cast<const uint4 *>(&sm.x[buf][n * 8 + g][j * 128 + h * 64 + q * 16]);
                    if constexpr (BF) {
                        mma_bf16(acc[n], lo, xv.x, xv.y);
                        mma_bf16(acc[n], hi, xv.z, xv.w);
                    } else {
                        mma_e4m3(blk[n], lo, xv.x, xv.y);
                        mma_e4m3(blk[n], hi, xv.z, xv.w);
                    }
                }
            }
            if constexpr (!BF) {
                const float sw = __ldg(wsc + kb);
#pragma unroll
                for (int n = 0; n < NT; n++) {
                    const float s0 = __fmul_rn(sm.s[buf][j][n * 8 + 2 * q], sw);
                    const float s1 = __fmul_rn(sm.s[buf][j][n * 8 + 2 * q + 1], sw);
                    acc[n][0] = __fadd_rn(acc[n][0], __fmul_rn(blk[n][0], s0));
                    acc[n][1] = __fadd_rn(acc[n][1], __fmul_rn(blk[n][1], s1));
                    acc[n][2] = __fadd_rn(acc[n][2], __fmul_rn(blk[n][2], s0));
                    acc[n][3] = __fadd_rn(acc[n][3], __fmul_rn(blk[n][3], s1));
                }
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                wc[h][0] = wn[h][0];
                wc[h][1] = wn[h][1];
            }
        }
        __syncthreads();        // every warp is done with buf before the next chunk refills it
    }

    // C fragment: acc[n][0..1] row g, tokens n*8 + 2q, +1; acc[n][2..3] row g + 8
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int m = n * 8 + 2 * q + (i & 1), r = row + (i >> 1) * 8;
            if (m >= a.M || r >= a.N)
                continue;
            if (a.part)
                a.part[((size_t)blockIdx.y * a.M + m) * a.N + r] = acc[n][i];
            else if (a.out_f32)
                static_cast<float *>(a.out)[(size_t)m * a.ldo + r] = acc[n][i];
            else
                static_cast<__nv_bfloat16 *>(a.out)[(size_t)m * a.ldo + r] = __float2bfloat16_rn(acc[n][i]);
        }
}

// out[m][n] = the splits' partial sums added in split order
__global__ void linstream_reduce_kernel(const float *__restrict__ part, int ksplit, int M, int N, void *out,
                                        bool out_f32, int ldo)
{
    const int m = blockIdx.y, n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N)
        return;
    float v = 0.0f;
    for (int s = 0; s < ksplit; s++)
        v = __fadd_rn(v, part[((size_t)s * M + m) * N + n]);
    if (out_f32)
        static_cast<float *>(out)[(size_t)m * ldo + n] = v;
    else
        static_cast<__nv_bfloat16 *>(out)[(size_t)m * ldo + n] = __float2bfloat16_rn(v);
}

template <int NT, bool BF>
static cudaError_t ls_launch_nt(cudaStream_t st, const ls_args &a, int ksplit)
{
    const size_t smem = sizeof(ls_smem<NT>);
    if (smem > 48 * 1024) {     // per device and function: set at each launch, as the other kernels do
        cudaError_t e = cudaFuncSetAttribute(linstream_kernel<NT, BF>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess)
            return e;
    }
    dim3 grid((a.N + LS_ROWS - 1) / LS_ROWS, ksplit);
    linstream_kernel<NT, BF><<<grid, LS_WARPS * 32, smem, st>>>(a);
    return cudaGetLastError();
}

// the n-tile count from M, then the split sums when K was split
template <bool BF>
static cudaError_t ls_launch(cudaStream_t st, ls_args &a, int ksplit)
{
    a.kb_per = (a.kblocks + ksplit - 1) / ksplit;
    ksplit = (a.kblocks + a.kb_per - 1) / a.kb_per;
    if (ksplit == 1)
        a.part = nullptr;
    void *out = a.out;
    cudaError_t e;
    const int nt = (a.M + 7) / 8;
    if (nt == 1)
        e = ls_launch_nt<1, BF>(st, a, ksplit);
    else if (nt == 2)
        e = ls_launch_nt<2, BF>(st, a, ksplit);
    else if (nt <= 4)
        e = ls_launch_nt<4, BF>(st, a, ksplit);
    else
        e = ls_launch_nt<8, BF>(st, a, ksplit);
    if (e != cudaSuccess || ksplit == 1)
        return e;
    dim3 grid((a.N + 255) / 256, a.M);
    linstream_reduce_kernel<<<grid, 256, 0, st>>>(a.part, ksplit, a.M, a.N, out, a.out_f32, a.ldo);
    return cudaGetLastError();
}

extern "C" int cuda_linear_stream_splits(int M, int N, int64_t row_bytes, int sms)
{
    const int KB = (int)(row_bytes / 128), ctas = (N + LS_ROWS - 1) / LS_ROWS, tok = (M + 7) / 8 * 8;
    if (KB < 1 || ctas < 1)
        return 1;
    int s = (2 * sms + ctas - 1) / ctas;                // two CTAs per SM
    const int cap = (int)(row_bytes / (16 * tok));      // partial sums <= 1/4 of the weight bytes
    if (s > cap)
        s = cap;
    if (s > KB)
        s = KB;
    if (s < 1)
        s = 1;
    const int per = (KB + s - 1) / s;
    return (KB + per - 1) / per;
}

extern "C" cudaError_t cuda_launch_linear_stream(cudaStream_t st, const uint8_t *xq, const float *xs, int rows,
                                                 const uint8_t *w, const float *ws, int64_t ws_stride, void *out,
                                                 bool out_f32, int ldo, int M, int N, int K, int ksplit, float *part)
{
    if (M < 1 || M > CUDA_LINEAR_STREAM_MAX_M || K % 128 || rows < M || rows % 4 || ksplit < 1 || (ksplit > 1 && !part))
        return cudaErrorInvalidValue;
    ls_args a = { xq, K, rows, xs, rows, w, K, ws, ws_stride, out, part, out_f32, ldo, M, N, K / 128, 0 };
    return ls_launch<false>(st, a, ksplit);
}

extern "C" cudaError_t cuda_launch_linear_stream_bf16(cudaStream_t st, const void *x, int ldx, const void *w, void *out,
                                                      bool out_f32, int ldo, int M, int N, int K, int ksplit,
                                                      float *part)
{
    if (M < 1 || M > CUDA_LINEAR_STREAM_MAX_M || K % 64 || ((uintptr_t)x | (uintptr_t)w) % 16 || ldx % 8 ||
        ksplit < 1 || (ksplit > 1 && !part))
        return cudaErrorInvalidValue;
    ls_args a = { static_cast<const uint8_t *>(x), (int64_t)ldx * 2, M, nullptr, 0, static_cast<const uint8_t *>(w),
                  (int64_t)K * 2, nullptr, 0, out, part, out_f32, ldo, M, N, K / 64, 0 };
    return ls_launch<true>(st, a, ksplit);
}
