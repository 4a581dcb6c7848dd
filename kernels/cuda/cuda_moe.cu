// The dense SwiGLU MLP and the MoE block on the device (contracts in ops.h; the oracle is
// kernels/cpu/cpu_moe.c with dsd_ref_moe_route in kernels/cpu/cpu_ref.c). Design in
// docs/CUDA.md, "The dense MLP and the MoE block".
//
// One MoE call, every step enqueued on cb->stream (with moe_prefill = LANES the cuBLASLt experts
// on the side streams, forked and joined inside the call):
//   1. router_logits_kernel: fp32 logits x . router[e], summed in dsd_ref_dot's exact order
//      (8 interleaved lanes, then its fixed tree; no FMA contraction) so the logits are the
//      CPU's bit for bit and near-ties pick the same experts.
//   2. route_kernel, one block per token: sigmoid, correction bias, group scores (top-2 sum),
//      top groups, top-k experts (ties to the lower index, NaN lowest: daemon/util/topk.c),
//      weights normalized and scaled like dsd_ref_moe_route; ids ascending.
//   3. sort_count/sort_scan/sort_fill: the (token, slot) pairs bucketed by expert,
//      deterministic (ascending pair order inside an expert, like cpu_moe.c), plus the list
//      of active experts; the shared expert is one more "expert" (id E) whose pairs are
//      T*k + t, one per token.
//   4. quant_kernel: x quantized per 1x128 group once per token (dsd_ref_act_quant).
//   5. Experts, paths chosen by the host int T (MOE_STREAM_MAX_T) and moe_prefill:
//      - stream (decode): ffn_stream_kernel<GATEUP> reads each active expert's gate/up FP8
//        rows once per block of rows and computes them for every pair routed to it (tiles of
//        4 pairs), writes h = bf16(silu(bf16 g) * bf16 u); quant_kernel quantizes h per pair;
//        ffn_stream_kernel<DOWN> gives y = bf16(down h) per pair. No host synchronization.
//      - larger steps, by default (moe_prefill = AUTO, GROUPED): cuda_moe_grouped.cu, every
//        expert in grouped FP8 wgmma launches over 128-pair blocks; no host synchronization.
//      - moe_prefill = LANES or SERIAL (cuda_moe_lt.c): one synchronize to read the
//        per-expert counts, then cuBLASLt block-scaled FP8 GEMMs per active expert on
//        gathered rows (LANES spreads them over the side streams).
//   6. combine_kernel: out[t] = bf16(sum_s y[t,s] * w[t,s] in slot order + y_shared[t]),
//      the CPU's order and rounding exactly (mul and add rounded separately).
// The dense MLP is the same machinery with one "expert" and the identity pairs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "err.h"            // dsd_errf has C linkage; err.h has no extern "C" of its own
}
#include "cuda_backend.h"
#include "cuda_moe.h"
#include "cuda_attn_util.h"   // cp_async16 and its commit/wait

// ---------------------------------------------------------------------------------------
// small helpers

__device__ __forceinline__ float bf16r(float v)
{
    return __bfloat162float(__float2bfloat16_rn(v));
}

// dsd_topk's order: higher score first, NaN below everything, ties to the lower index
__device__ __forceinline__ bool better(float sa, int ia, float sb, int ib)
{
    bool na = isnan(sa), nb = isnan(sb);
    if (na != nb)
        return nb;
    if (!na && sa != sb)
        return sa > sb;
    return ia < ib;
}

__device__ __forceinline__ float ue8m0_scale(float amax)
{
    // dsd_ue8m0_scale (kernels/numeric.h): 2^ceil(log2(max(amax, 1e-4) / 448)) from the bits
    if (!(amax > 1e-4f))
        amax = 1e-4f;
    float s = amax * (1.0f / 448.0f);
    unsigned u = __float_as_uint(s);
    int e = (int)((u >> 23) & 0xff) - 127 + ((u & 0x7fffff) != 0);
    return ldexpf(1.0f, e);
}

// 16 e4m3 bytes -> 16 floats (exact)
__device__ __forceinline__ void fp8x16_to_f32(uint4 v, float *f)
{
    const uint32_t w[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[i] & 0xffff), __NV_E4M3);
        __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[i] >> 16), __NV_E4M3);
        float2 a = __half22float2(*reinterpret_cast<__half2 *>(&lo));
        float2 b = __half22float2(*reinterpret_cast<__half2 *>(&hi));
        f[4 * i + 0] = a.x;
        f[4 * i + 1] = a.y;
        f[4 * i + 2] = b.x;
        f[4 * i + 3] = b.y;
    }
}

// ---------------------------------------------------------------------------------------
// 1. router logits, in dsd_ref_dot's order

#define RL_EXPERTS 8        // experts per block (8 lanes each: 64 threads)
#define RL_TOKENS 4         // tokens per block
#define RL_CHUNK 512        // x columns staged in shared memory at a time

template <typename W>
__device__ __forceinline__ float wval(const W *p);
template <>
__device__ __forceinline__ float wval<float>(const float *p)
{
    return __ldg(p);
}
template <>
__device__ __forceinline__ float wval<__nv_bfloat16>(const __nv_bfloat16 *p)
{
    return __bfloat162float(*p);
}

// The 8 lanes of an expert (lanes 8e' .. 8e' + 7 of the warp) sum their column sums as
// ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)), exactly dsd_ref_dot's tree, and lane 0
// of them stores the logit of each of the nt tokens.
__device__ __forceinline__ void rl_store(float *logits, const float *acc, int lane8, int e, int E, int t0, int nt)
{
#pragma unroll
    for (int j = 0; j < RL_TOKENS; j++) {
        float v = acc[j];
        v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 4, 8));
        v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 1, 8));
        v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 2, 8));
        if (lane8 == 0 && e < E && j < nt)
            logits[(size_t)(t0 + j) * E + e] = v;
    }
}

template <typename W>
__global__ void __launch_bounds__(RL_EXPERTS * 8)
router_logits_kernel(float *__restrict__ logits, const __nv_bfloat16 *__restrict__ x, const W *__restrict__ w,
                     int T, int E, int D)
{
    __shared__ float xs[RL_TOKENS][RL_CHUNK];
    const int lane8 = threadIdx.x & 7, el = threadIdx.x >> 3;
    const int e = blockIdx.x * RL_EXPERTS + el, t0 = blockIdx.y * RL_TOKENS;
    const int nt = min(RL_TOKENS, T - t0);
    float acc[RL_TOKENS];
#pragma unroll
    for (int j = 0; j < RL_TOKENS; j++)
        acc[j] = 0.0f;
    const W *wr = w + (size_t)(e < E ? e : 0) * D;
    for (int c0 = 0; c0 < D; c0 += RL_CHUNK) {
        const int cn = min(RL_CHUNK, D - c0);
        __syncthreads();
        for (int i = threadIdx.x; i < RL_TOKENS * RL_CHUNK; i += blockDim.x) {
            int j = i / RL_CHUNK, c = i % RL_CHUNK;
            xs[j][c] = (j < nt && c < cn) ? __bfloat162float(x[(size_t)(t0 + j) * D + c0 + c]) : 0.0f;
        }
        __syncthreads();
        if (e < E) {
            // lane8 owns columns i == lane8 (mod 8): dsd_ref_dot's lane, summed in column order
            // (the 8-wide main loop and the tail both add column i to lane i & 7)
            for (int c = lane8; c < cn; c += 8) {
                float wv = wval<W>(wr + c0 + c);
#pragma unroll
                for (int j = 0; j < RL_TOKENS; j++)
                    acc[j] = __fadd_rn(acc[j], __fmul_rn(xs[j][c], wv));
            }
        }
    }
    rl_store(logits, acc, lane8, e, E, t0, nt);
}

// The same sums for decode-sized steps (T <= RL_SLAB_MAX_T), where the kernel above is slow
// for a reason of latency, not bytes: its lanes load their 2-byte weights one dependent step
// at a time (the adds must stay in dsd_ref_dot's column order), so a block of 8 experts
// spends ~D/8 global round trips per chunk. Here a block of RL_SLAB_THREADS first copies its
// RL_SLAB_EXPERTS expert rows whole into shared memory with the tokens' rows (cp.async: every
// thread keeps its 16-byte pieces in flight at once), then one warp (8 lanes per expert) walks
// the same columns in the same order from there. Rows are padded by 16 bytes so the 4 experts
// of the warp read 4 different bank groups. (H100, E = 256, D = 7168: 8 experts per block of
// 64 threads took 35 us at T = 1, the copy in being the time.)
#define RL_SLAB_MAX_T 64
#define RL_SLAB_EXPERTS 4
#define RL_SLAB_THREADS 256

__host__ __device__ constexpr size_t rl_slab_row_bytes(int D, int wbytes)
{
    return (size_t)D * wbytes + 16;
}

static size_t rl_slab_smem(int D, int wbytes, int T)
{
    const int nt = T < RL_TOKENS ? T : RL_TOKENS;
    return RL_SLAB_EXPERTS * rl_slab_row_bytes(D, wbytes) + (size_t)nt * D * sizeof(__nv_bfloat16);
}

template <typename W>
__global__ void __launch_bounds__(RL_SLAB_THREADS)
router_logits_slab_kernel(float *__restrict__ logits, const __nv_bfloat16 *__restrict__ x, const W *__restrict__ w,
                          int T, int E, int D)
{
    extern __shared__ __align__(16) uint8_t rl_sm[];
    const size_t rs = rl_slab_row_bytes(D, (int)sizeof(W));
    __nv_bfloat16 *xs = reinterpret_cast<__nv_bfloat16 *>(rl_sm + RL_SLAB_EXPERTS * rs);     // [nt][D]
    const int e0 = blockIdx.x * RL_SLAB_EXPERTS, t0 = blockIdx.y * RL_TOKENS;
    const int nt = min(RL_TOKENS, T - t0);
    const int wc = D * (int)sizeof(W) / 16, xc = D * 2 / 16;  // 16-byte pieces per row
    for (int i = threadIdx.x; i < RL_SLAB_EXPERTS * wc; i += blockDim.x) {
        const int r = i / wc, c = i % wc;
        const bool ok = e0 + r < E;
        dsd_attn::cp_async16(rl_sm + r * rs + 16 * c,
                             reinterpret_cast<const uint8_t *>(w + (size_t)(ok ? e0 + r : 0) * D) + 16 * c, ok);
    }
    for (int i = threadIdx.x; i < nt * xc; i += blockDim.x) {
        const int j = i / xc, c = i % xc;
        dsd_attn::cp_async16(reinterpret_cast<uint8_t *>(xs + (size_t)j * D) + 16 * c,
                             reinterpret_cast<const uint8_t *>(x + (size_t)(t0 + j) * D) + 16 * c, true);
    }
    dsd_attn::cp_async_commit();
    dsd_attn::cp_async_wait_all();
    __syncthreads();
    if (threadIdx.x >= RL_SLAB_EXPERTS * 8)
        return;
    const int lane8 = threadIdx.x & 7, el = threadIdx.x >> 3, e = e0 + el;
    const W *wr = reinterpret_cast<const W *>(rl_sm + el * rs);
    float acc[RL_TOKENS];
#pragma unroll
    for (int j = 0; j < RL_TOKENS; j++)
        acc[j] = 0.0f;
    for (int c = lane8; c < D; c += 8) {
        const float wv = static_cast<float>(wr[c]);
#pragma unroll
        for (int j = 0; j < RL_TOKENS; j++)
            if (j < nt)
                acc[j] = __fadd_rn(acc[j], __fmul_rn(__bfloat162float(xs[(size_t)j * D + c]), wv));
    }
    rl_store(logits, acc, lane8, e, E, t0, nt);
}

// ---------------------------------------------------------------------------------------
// 2. routing, one block per token

#define ROUTE_THREADS 256

__global__ void __launch_bounds__(ROUTE_THREADS)
route_kernel(int32_t *__restrict__ ids, float *__restrict__ wts, const float *__restrict__ logits,
             const float *__restrict__ bias, int E, int n_group, int topk_group, int k, bool norm, float scale)
{
    extern __shared__ float sm[];
    float *s = sm, *b = s + E, *masked = b + E, *gscore = masked + E;
    int *keep = (int *)(gscore + n_group);
    int *sel = keep + n_group;              // [E]: selected flag
    const int t = blockIdx.x;
    const float *lg = logits + (size_t)t * E;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        // 1 / (1 + expf(-x)): glibc's expf is correctly rounded in practice; exp in double
        // rounded once to float gives the same float
        float ex = (float)exp(-(double)lg[e]);
        float sv = __fdiv_rn(1.0f, __fadd_rn(1.0f, ex));
        s[e] = sv;
        b[e] = bias ? __fadd_rn(sv, bias[e]) : sv;
    }
    __syncthreads();
    const int per = E / n_group;
    for (int g = threadIdx.x; g < n_group; g += blockDim.x) {
        float m1 = -INFINITY, m2 = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) {
            float v = b[e];
            if (v > m1) {
                m2 = m1;
                m1 = v;
            } else if (v > m2) {
                m2 = v;
            }
        }
        gscore[g] = __fadd_rn(m1, m2);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        // top topk_group groups; the order of keep[] does not matter for the mask
        if (topk_group >= n_group) {
            for (int g = 0; g < n_group; g++)
                keep[g] = 1;
        } else {
            for (int g = 0; g < n_group; g++)
                keep[g] = 0;
            for (int i = 0; i < topk_group; i++) {
                int best = -1;
                for (int g = 0; g < n_group; g++)
                    if (!keep[g] && (best < 0 || better(gscore[g], g, gscore[best], best)))
                        best = g;
                keep[best] = 1;
            }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        masked[e] = (e / per < n_group && keep[e / per]) ? b[e] : -INFINITY;
    __syncthreads();
    // The k best by `better`, one block-wide argmax per round (a winner is marked taken):
    // ~k short reductions instead of every thread ranking its expert against all E (a chain
    // of E dependent shared-memory reads, which held the kernel at ~40 us on an H100). The
    // winners then go in ascending id order, as dsd_topk gives them, and the weights are
    // summed in that order.
    int *win = sel + E;                     // [k]
    __shared__ float wv[ROUTE_THREADS / 32];
    __shared__ int wi[ROUTE_THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        sel[e] = 0;
    __syncthreads();
    const int kk = k < E ? k : E;
    for (int r = 0; r < kk; r++) {
        float bv = 0.0f;
        int bi = -1;
        for (int e = threadIdx.x; e < E; e += blockDim.x)
            if (!sel[e] && (bi < 0 || better(masked[e], e, bv, bi))) {
                bv = masked[e];
                bi = e;
            }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
            const int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            if (i2 >= 0 && (bi < 0 || better(v2, i2, bv, bi))) {
                bv = v2;
                bi = i2;
            }
        }
        if (lane == 0) {
            wv[warp] = bv;
            wi[warp] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < ROUTE_THREADS / 32; w++)
                if (wi[w] >= 0 && (bi < 0 || better(wv[w], wi[w], bv, bi))) {
                    bv = wv[w];
                    bi = wi[w];
                }
            win[r] = bi;
            sel[bi] = 1;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        for (int i = 1; i < kk; i++)        // ascending ids (k is small)
            for (int j = i; j > 0 && win[j - 1] > win[j]; j--) {
                const int x = win[j];
                win[j] = win[j - 1];
                win[j - 1] = x;
            }
        float sum = 0.0f;
        int32_t *id = ids + (size_t)t * k;
        float *wt = wts + (size_t)t * k;
        for (int i = 0; i < kk; i++)
            sum = __fadd_rn(sum, s[win[i]]);
        for (int i = 0; i < kk; i++) {
            float v = s[win[i]];
            if (norm)
                v = __fdiv_rn(v, sum);
            id[i] = win[i];
            wt[i] = __fmul_rn(v, scale);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. the token-by-expert sort

#define SORT_CHUNK_TOKENS 64
#define SORT_THREADS 256

// cnt_chunk[c][e] = pairs of chunk c routed to expert e
__global__ void __launch_bounds__(SORT_THREADS)
sort_count_kernel(int32_t *__restrict__ cnt_chunk, const int32_t *__restrict__ ids, int T, int k, int E)
{
    extern __shared__ int32_t sid[];
    const int c = blockIdx.x, p0 = c * SORT_CHUNK_TOKENS * k;
    const int np = min(SORT_CHUNK_TOKENS * k, T * k - p0);
    for (int i = threadIdx.x; i < np; i += blockDim.x)
        sid[i] = ids[p0 + i];
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int n = 0;
        for (int i = 0; i < np; i++)
            n += sid[i] == e;
        cnt_chunk[(size_t)c * E + e] = n;
    }
}

// per expert: base of each chunk, totals, offsets (experts in id order, then the shared
// expert at E with its T pairs), the ascending list of active experts and their number. The
// offsets and the active list are block-wide prefix sums over tiles of 1024 experts (one
// thread walking E experts through global memory cost ~20 us at E = 256).
// (CUB's BlockScan would do; its headers declare a namespace `cuda` that collides with this
// folder's cuda() accessor, so the few lines of a warp-shuffle scan live here.)
// Exclusive prefix sum of v over a block of 1024 threads; *total gets the block's sum. Every
// thread must call it; ws is 32 ints of shared memory.
__device__ __forceinline__ int block_exclusive_sum(int v, int *ws, int *total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o)
            x += y;
    }
    if (lane == 31)
        ws[warp] = x;
    __syncthreads();
    if (warp == 0) {
        int w = ws[lane];
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o)
                w += y;
        }
        ws[lane] = w;               // inclusive sums of the warps' totals
    }
    __syncthreads();
    const int before = warp ? ws[warp - 1] : 0;
    *total = ws[31];
    __syncthreads();                // ws may be reused by the next call
    return before + x - v;
}

__global__ void __launch_bounds__(1024)
sort_scan_kernel(struct moe_sort s, int n_chunks, int T, int k, int E, bool shared)
{
    __shared__ int ws[32];
    __shared__ int carry_off, carry_na;
    if (threadIdx.x == 0)
        carry_off = carry_na = 0;
    __syncthreads();
    for (int base = 0; base < E; base += 1024) {
        const int e = base + threadIdx.x;
        int run = 0;
        if (e < E) {
            for (int c = 0; c < n_chunks; c++) {
                int n = s.cnt_chunk[(size_t)c * E + e];
                s.cnt_chunk[(size_t)c * E + e] = run;   // becomes the chunk's base within e
                run += n;
            }
            s.cnt[e] = run;
        }
        const int act = e < E && run > 0;
        int tot_off, tot_na;
        const int off = block_exclusive_sum(run, ws, &tot_off);
        const int idx = block_exclusive_sum(act, ws, &tot_na);
        if (e < E) {
            s.off[e] = carry_off + off;
            if (act)
                s.active[carry_na + idx] = e;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            carry_off += tot_off;
            carry_na += tot_na;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        int off = carry_off, na = carry_na;
        s.off[E] = off;             // == T * k
        s.cnt[E] = shared ? T : 0;
        s.off[E + 1] = off + s.cnt[E];
        if (shared)
            s.active[na++] = E;
        *s.n_active = na;
    }
}

// The grouped prefill path's block list (cuda_moe_grouped.cu): blocks[i] = {expert, first
// pair's index into perm, valid rows (<= rows)} for every run of `rows` pairs of one expert,
// experts in id order; *n_blocks = their number.
__global__ void __launch_bounds__(1024) moe_plan_kernel(int4 *__restrict__ blocks, int32_t *__restrict__ n_blocks,
                                                        struct moe_sort s, int n_exp, int rows)
{
    __shared__ int ws[32];
    __shared__ int carry;
    if (threadIdx.x == 0)
        carry = 0;
    __syncthreads();
    for (int base = 0; base < n_exp; base += 1024) {
        const int e = base + threadIdx.x;
        const int c = e < n_exp ? s.cnt[e] : 0, nb = (c + rows - 1) / rows;
        int total;
        const int first = carry + block_exclusive_sum(nb, ws, &total);
        for (int b = 0; b < nb; b++)
            blocks[first + b] = make_int4(e, s.off[e] + b * rows, c - b * rows < rows ? c - b * rows : rows, 0);
        __syncthreads();            // every thread has read carry
        if (threadIdx.x == 0)
            carry += total;
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *n_blocks = carry;
}

// moe_count (ops.h): hits[e] += tokens sent to routed expert e by this call
__global__ void count_hits_kernel(int32_t *__restrict__ hits, const int32_t *__restrict__ cnt, int E)
{
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x)
        hits[e] += cnt[e];
}

__global__ void __launch_bounds__(SORT_THREADS)
sort_fill_kernel(struct moe_sort s, const int32_t *__restrict__ ids, int T, int k, int E, bool shared)
{
    extern __shared__ int32_t sid[];
    const int c = blockIdx.x, p0 = c * SORT_CHUNK_TOKENS * k;
    const int np = min(SORT_CHUNK_TOKENS * k, T * k - p0);
    for (int i = threadIdx.x; i < np; i += blockDim.x)
        sid[i] = ids[p0 + i];
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int at = s.off[e] + s.cnt_chunk[(size_t)c * E + e];
        for (int i = 0; i < np; i++)
            if (sid[i] == e)
                s.perm[at++] = p0 + i;
    }
    if (shared)
        for (int t = c * SORT_CHUNK_TOKENS + threadIdx.x; t < min(T, (c + 1) * SORT_CHUNK_TOKENS); t += blockDim.x)
            s.perm[T * k + t] = T * k + t;
}

// the dense MLP: one expert (0) whose pairs are the tokens
__global__ void mlp_sort_kernel(struct moe_sort s, int T)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < T)
        s.perm[i] = i;
    if (i == 0) {
        s.cnt[0] = T;
        s.off[0] = 0;
        s.off[1] = T;
        s.active[0] = 0;
        *s.n_active = 1;
    }
}

// ---------------------------------------------------------------------------------------
// 4. act_quant of rows (dsd_ref_act_quant): one warp per 128-group, 4 values per lane.
// Row r of the input is x[r * ldx]. Scales go to xs[r * s_row + g * s_grp] (token-major for the stream kernels, k-block-major
// for cuBLASLt). Rows r in [M, rows) are padding: zero bytes, scale 1.

template <typename X>
__device__ __forceinline__ float4 load4(const X *p);
template <>
__device__ __forceinline__ float4 load4<float>(const float *p)
{
    return *reinterpret_cast<const float4 *>(p);
}
template <>
__device__ __forceinline__ float4 load4<__nv_bfloat16>(const __nv_bfloat16 *p)
{
    uint2 u = *reinterpret_cast<const uint2 *>(p);
    __nv_bfloat162 a = *reinterpret_cast<__nv_bfloat162 *>(&u.x), b = *reinterpret_cast<__nv_bfloat162 *>(&u.y);
    float2 fa = __bfloat1622float2(a), fb = __bfloat1622float2(b);
    return make_float4(fa.x, fa.y, fb.x, fb.y);
}

template <typename X>
__global__ void quant_kernel(uint8_t *__restrict__ xq, float *__restrict__ xs, const X *__restrict__ x, int M,
                             int rows, int K, int ldx, int ldq, int64_t s_row, int64_t s_grp, bool ue8m0)
{
    const int groups = K / 128;
    const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (warp >= (int64_t)rows * groups)
        return;
    const int m = (int)(warp / groups), g = (int)(warp % groups);
    uint32_t *q = reinterpret_cast<uint32_t *>(xq + (size_t)m * ldq + g * 128);
    if (m >= M) {
        q[lane] = 0;
        if (lane == 0)
            xs[m * s_row + g * s_grp] = 1.0f;
        return;
    }
    const float4 v = load4<X>(x + (size_t)m * ldx + g * 128 + lane * 4);
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float s = ue8m0 ? ue8m0_scale(amax) : __fmul_rn(fmaxf(amax, 1e-4f), 1.0f / 448.0f);
    const float vals[4] = { v.x, v.y, v.z, v.w };
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float y = fminf(fmaxf(__fdiv_rn(vals[i], s), -448.0f), 448.0f);
        packed |= (uint32_t)__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3) << (8 * i);
    }
    q[lane] = packed;
    if (lane == 0)
        xs[m * s_row + g * s_grp] = s;
}

// ---------------------------------------------------------------------------------------
// 5a. the weight-streaming expert kernel (decode)
//
// Block: 8 warps. Warp w of block (bx, slot) owns 4 output rows (GATEUP: the same 4 rows of
// gate and of up; DOWN: 8 rows of down). Lane l reads 16 bytes of each of its rows per step
// (a warp step covers 512 columns = 4 K-blocks; the lane stays inside K-block
// (step * 512 + l * 16) / 128), so every weight byte is read once per tile of 4 pairs. A
// lane accumulates sum over its K-blocks of (16-wide fp8 dot) * (x scale * w scale) in fp32
// and the warp sums its lanes at the end: the CPU's per-block scaling, up to summation order.

#define ST_WARPS 8
#define ST_TM 4             // pairs per tile (TM: ST_TM, or 1 for single-token steps)
#define ST_GU_ROWS 4        // gate rows (and up rows) per warp
#define ST_DN_ROWS 8        // down rows per warp

// TM = 1 serves steps of one token (every expert then has one pair): a tile of 4 pairs would
// hold 4x the input registers for nothing, and the register count is what limits how many
// warps per SM keep weight loads in flight.
template <bool GATEUP, int TM>
__global__ void __launch_bounds__(ST_WARPS * 32)
ffn_stream_kernel(struct moe_stream_args a)
{
    constexpr int R = GATEUP ? 2 * ST_GU_ROWS : ST_DN_ROWS;     // weight rows per warp
    constexpr int RO = GATEUP ? ST_GU_ROWS : ST_DN_ROWS;        // output rows per warp
    const int slot = blockIdx.y;
    if (slot >= *a.n_active)
        return;
    const int ex = a.active[slot];
    const struct moe_ffn_w fw = a.table ? a.table[ex] : a.single;
    const int m = a.cnt[ex];
    const int32_t *pairs = a.perm + a.off[ex];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = (blockIdx.x * ST_WARPS + warp) * RO;
    const int N = GATEUP ? fw.I : a.D;      // output rows of this matrix
    const int K = GATEUP ? a.D : fw.I;      // its input width
    if (row0 >= N || m == 0)
        return;
    const uint8_t *wbase[2];
    const float *sbase[2];
    if (GATEUP) {
        wbase[0] = fw.w[0];
        sbase[0] = fw.s[0];
        wbase[1] = fw.w[1];
        sbase[1] = fw.s[1];
    } else {
        wbase[0] = wbase[1] = fw.w[2];
        sbase[0] = sbase[1] = fw.s[2];
    }
    const int64_t sstride = ((K + 127) / 128 + 3) & ~3;     // cuda_scale_stride
    const int steps = (K + 511) / 512;

    for (int p0 = 0; p0 < m; p0 += TM) {
        const int tm = min(TM, m - p0);
        // the input rows of this tile: tokens (GATEUP) or pairs (DOWN)
        const uint8_t *xr[TM];
        const float *xsr[TM];
#pragma unroll
        for (int j = 0; j < TM; j++) {
            int p = pairs[p0 + (j < tm ? j : 0)];
            int r = GATEUP ? (p < a.Tk ? p / a.k : p - a.Tk) : p;
            xr[j] = a.xq + (size_t)r * a.ldq;
            xsr[j] = a.xs + (size_t)r * a.lds;
        }
        float acc[R][TM];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int j = 0; j < TM; j++)
                acc[r][j] = 0.0f;
        for (int st = 0; st < steps; st++) {
            const int col = st * 512 + lane * 16;
            if (col >= K)
                break;
            const int kb = col / 128;
            uint4 wv[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int half = GATEUP ? r / RO : 0;
                const int row = row0 + (GATEUP ? r % RO : r);
                wv[r] = row < N ? __ldg(reinterpret_cast<const uint4 *>(wbase[half] + (size_t)row * K + col))
                                : make_uint4(0, 0, 0, 0);
            }
            float wsc[2];
            wsc[0] = __ldg(sbase[0] + (size_t)(row0 / 128) * sstride + kb);
            wsc[1] = GATEUP ? __ldg(sbase[1] + (size_t)(row0 / 128) * sstride + kb) : wsc[0];
            float xf[TM][16];
            float xsc[TM];
#pragma unroll
            for (int j = 0; j < TM; j++) {
                if (j < tm) {
                    fp8x16_to_f32(__ldg(reinterpret_cast<const uint4 *>(xr[j] + col)), xf[j]);
                    xsc[j] = __ldg(xsr[j] + kb);
                } else {
#pragma unroll
                    for (int i = 0; i < 16; i++)
                        xf[j][i] = 0.0f;
                    xsc[j] = 0.0f;
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                float wf[16];
                fp8x16_to_f32(wv[r], wf);
                const float ws = wsc[GATEUP ? r / RO : 0];
#pragma unroll
                for (int j = 0; j < TM; j++) {
                    float d = 0.0f;
#pragma unroll
                    for (int i = 0; i < 16; i++)
                        d = fmaf(wf[i], xf[j][i], d);
                    acc[r][j] = fmaf(d, xsc[j] * ws, acc[r][j]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int j = 0; j < TM; j++) {
                float v = acc[r][j];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1)
                    v += __shfl_xor_sync(0xffffffffu, v, o);
                acc[r][j] = v;
            }
        // lane (r, j) writes one result
        if (lane < RO * TM) {
            const int r = lane / TM, j = lane % TM, row = row0 + r;
            float res = 0.0f;
#pragma unroll
            for (int rr = 0; rr < RO; rr++)
#pragma unroll
                for (int jj = 0; jj < TM; jj++)
                    if (rr == r && jj == j) {
                        if constexpr (GATEUP) {
                            float g = bf16r(acc[rr][jj]), u = bf16r(acc[rr + RO][jj]);
                            // dsd_ref_swiglu: g / (1 + expf(-g)) * u, then an activation
                            res = bf16r(__fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u));
                        } else {
                            res = bf16r(acc[rr][jj]);
                        }
                    }
            if (j < tm && row < N)
                static_cast<__nv_bfloat16 *>(a.out)[(size_t)pairs[p0 + j] * a.ldo + row] = __float2bfloat16_rn(res);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 6. combine: out[t] = bf16(sum over slots in order of y * w, + shared)

__global__ void combine_kernel(__nv_bfloat16 *__restrict__ out, const __nv_bfloat16 *__restrict__ y,
                               const float *__restrict__ wts, int T, int k, int D, bool shared)
{
    const int t = blockIdx.y;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= D)
        return;
    float acc = 0.0f;
    for (int s = 0; s < k; s++)
        acc = __fadd_rn(acc, __fmul_rn(__bfloat162float(y[((size_t)t * k + s) * D + i]), wts[(size_t)t * k + s]));
    if (shared)
        acc = __fadd_rn(acc, __bfloat162float(y[((size_t)T * k + t) * D + i]));
    out[(size_t)t * D + i] = __float2bfloat16_rn(acc);
}

// ---------------------------------------------------------------------------------------
// 5b. the prefill path's layout kernels (cuda_moe_lt.c runs the GEMMs)

// aq[i] = xq[token of pair perm[i]], as[g][i] its scales (k-block-major); pad rows zero
__global__ void gather_kernel(uint8_t *__restrict__ aq, float *__restrict__ as, int rows,
                              const uint8_t *__restrict__ xq, const float *__restrict__ xs, int D,
                              const int32_t *__restrict__ perm, int m, int Tk, int k)
{
    const int i = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;     // c: 16-byte column
    if (c >= D / 16)
        return;
    uint4 v = make_uint4(0, 0, 0, 0);
    float sc = 1.0f;
    int tok = -1;
    if (i < m) {
        int p = perm ? perm[i] : i;
        tok = p < Tk ? p / k : p - Tk;
        v = reinterpret_cast<const uint4 *>(xq + (size_t)tok * D)[c];
    }
    reinterpret_cast<uint4 *>(aq + (size_t)i * D)[c] = v;
    if ((c * 16) % 128 == 0) {
        const int g = c * 16 / 128;
        if (tok >= 0)
            sc = xs[(size_t)tok * (D / 128) + g];
        as[(size_t)g * rows + i] = sc;
    }
}

// h[i][n] = bf16(silu(g) * u) from column-major bf16 g, u [I][rows] (already bf16: the
// GEMMs' rounded outputs, as the CPU rounds its linears)
__global__ void swiglu_cm_kernel(float *__restrict__ h, const __nv_bfloat16 *__restrict__ g,
                                 const __nv_bfloat16 *__restrict__ u, int m, int rows, int I)
{
    __shared__ float tile[32][33];
    const int n0 = blockIdx.x * 32, i0 = blockIdx.y * 32;
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int n = n0 + r, i = i0 + threadIdx.x;
        float v = 0.0f;
        if (n < I && i < rows) {
            float gv = __bfloat162float(g[(size_t)n * rows + i]), uv = __bfloat162float(u[(size_t)n * rows + i]);
            v = bf16r(__fmul_rn(__fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv))), uv));
        }
        tile[r][threadIdx.x] = v;
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int i = i0 + r, n = n0 + threadIdx.x;
        if (i < rows && n < I)
            h[(size_t)i * I + n] = i < m ? tile[threadIdx.x][r] : 0.0f;
    }
}

// y[perm[i]][n] = yc[n][i]
__global__ void scatter_cm_kernel(__nv_bfloat16 *__restrict__ y, const __nv_bfloat16 *__restrict__ yc, int rows,
                                  int D, const int32_t *__restrict__ perm, int m)
{
    __shared__ __nv_bfloat16 tile[32][34];
    const int n0 = blockIdx.x * 32, i0 = blockIdx.y * 32;
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int n = n0 + r, i = i0 + threadIdx.x;
        if (n < D && i < m)
            tile[r][threadIdx.x] = yc[(size_t)n * rows + i];
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int i = i0 + r, n = n0 + threadIdx.x;
        if (i < m && n < D) {
            const int p = perm ? perm[i] : i;
            y[(size_t)p * D + n] = tile[threadIdx.x][r];
        }
    }
}

// ---------------------------------------------------------------------------------------
// host side

struct moe_layer_table {
    const void *key;                // lw->experts of the layer it describes
    struct moe_ffn_w *table;        // device [E + 1]: routed experts, then the shared one
    struct moe_ffn_w *host;         // the same on the host (the prefill path's GEMMs)
};

struct cuda_moe_state {
    struct moe_layer_table *v;
    int n, cap;
};

static void fill_ffn(struct moe_ffn_w *f, const struct dsd_expert_weights *e)
{
    f->w[0] = (const uint8_t *)e->gate.data;
    f->w[1] = (const uint8_t *)e->up.data;
    f->w[2] = (const uint8_t *)e->down.data;
    f->s[0] = e->gate.scale;
    f->s[1] = e->up.scale;
    f->s[2] = e->down.scale;
    f->I = (int)e->gate.rows;
}

static bool ffn_ok(const struct dsd_expert_weights *e, int64_t D)
{
    const struct dsd_weight *w[3] = { &e->gate, &e->up, &e->down };
    for (int i = 0; i < 3; i++)
        if (w[i]->dtype != DSD_DTYPE_F8_E4M3 || !w[i]->scale || !w[i]->data)
            return false;
    int64_t I = e->gate.rows;
    return e->gate.cols == D && e->up.rows == I && e->up.cols == D && e->down.rows == D && e->down.cols == I &&
           I % 128 == 0 && D % 128 == 0;
}

// The device table of one MoE layer, built (and uploaded: the one synchronous step, normally
// done by prepare_weights) on first use.
static const struct moe_layer_table *layer_table(struct cuda_backend *cb, const struct dsd_layer_weights *lw)
{
    struct cuda_moe_state *st = cb->moe;
    if (!st) {
        st = (struct cuda_moe_state *)calloc(1, sizeof *st);
        if (!st) {
            cuda_fail(cb, -ENOMEM, "moe: out of memory");
            return NULL;
        }
        cb->moe = st;
    }
    for (int i = 0; i < st->n; i++)
        if (st->v[i].key == lw->experts)
            return &st->v[i];
    const struct dsd_model_dims *d = &cb->base.dims;
    const int E = d->n_routed_experts;
    struct moe_ffn_w *h = (struct moe_ffn_w *)calloc((size_t)E + 1, sizeof *h);
    if (!h) {
        cuda_fail(cb, -ENOMEM, "moe: out of memory");
        return NULL;
    }
    for (int e = 0; e < E; e++) {
        if (!ffn_ok(&lw->experts[e], d->hidden_size)) {
            free(h);
            cuda_fail(cb, -ENOTSUP, "moe: layer %d expert %d: the GPU MoE takes FP8 experts with block scales, "
                                    "widths multiples of 128", lw->index, e);
            return NULL;
        }
        fill_ffn(&h[e], &lw->experts[e]);
    }
    if (d->n_shared_experts > 0) {
        if (!ffn_ok(&lw->shared, d->hidden_size)) {
            free(h);
            cuda_fail(cb, -ENOTSUP, "moe: layer %d: the shared expert is not an FP8 SwiGLU", lw->index);
            return NULL;
        }
        fill_ffn(&h[E], &lw->shared);
    }
    struct moe_ffn_w *dt = NULL;
    if (st->n == st->cap) {
        int cap = st->cap ? 2 * st->cap : 16;
        struct moe_layer_table *nv = (struct moe_layer_table *)realloc(st->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            free(h);
            cuda_fail(cb, -ENOMEM, "moe: out of memory");
            return NULL;
        }
        st->v = nv;
        st->cap = cap;
    }
    if (!CU_OK(cb, cudaMalloc((void **)&dt, ((size_t)E + 1) * sizeof *dt)) ||
        !CU_OK(cb, cudaMemcpy(dt, h, ((size_t)E + 1) * sizeof *dt, cudaMemcpyHostToDevice))) {
        cudaFree(dt);
        free(h);
        return NULL;
    }
    st->v[st->n].key = lw->experts;
    st->v[st->n].table = dt;
    st->v[st->n].host = h;
    return &st->v[st->n++];
}

// Scratch carving: 256-byte aligned pieces.
struct carve {
    uint8_t *p;
    size_t at;
};
static void *take(struct carve *c, size_t bytes)
{
    void *r = c->p ? c->p + c->at : NULL;
    c->at += (bytes + 255) & ~(size_t)255;
    return r;
}

// The prefill path's per-expert buffers for up to m pairs.
static void carve_lt(struct carve *c, struct moe_lt_bufs *b, int m, int D, int I)
{
    const int rows = (m + 15) & ~15;
    b->max_rows = rows;
    b->aq = (uint8_t *)take(c, (size_t)rows * D);
    b->as = (float *)take(c, (size_t)rows * (D / 128) * sizeof(float));
    b->g = take(c, (size_t)rows * I * 2);
    b->u = take(c, (size_t)rows * I * 2);
    b->h = (float *)take(c, (size_t)rows * I * sizeof(float));
    b->hq = (uint8_t *)take(c, (size_t)rows * I);
    b->hs = (float *)take(c, (size_t)rows * (I / 128) * sizeof(float));
    b->yc = take(c, (size_t)rows * D * 2);
}

// bf16 rows [rows][K] -> e4m3 q [rows][K] and row-major 1x128 scales s [rows][K/128]: the
// tokens before the experts, h between gate/up and down (streaming and grouped paths).
// Declared in cuda_moe.h (C linkage) for cuda_moe_grouped.cu.
void cuda_moe_launch_quant_bf16(struct cuda_backend *cb, uint8_t *q, float *s, const void *x, int rows, int K)
{
    const int groups = K / 128;
    const int64_t warps = (int64_t)rows * groups;
    quant_kernel<__nv_bfloat16><<<(unsigned)((warps * 32 + 255) / 256), 256, 0, cb->stream>>>(
        q, s, (const __nv_bfloat16 *)x, rows, rows, K, K, K, groups, 1, cb->base.dims.act_scale_ue8m0);
    CU_LAUNCHED(cb);
}

// The expert stage shared by mlp and moe once the sort exists: gate/up, quantize h, down.
// y receives [P][D] (pairs); xq/xs hold the quantized tokens.
static void run_stream(struct cuda_backend *cb, const struct moe_sort *s, const struct moe_ffn_w *table,
                       const struct moe_ffn_w *single, int n_slots, int Tk, int k, int P, int D, int Imax,
                       const uint8_t *xq, const float *xs, __nv_bfloat16 *h, uint8_t *hq,
                       float *hs, __nv_bfloat16 *y, bool one_token)
{
    struct moe_stream_args a;
    memset(&a, 0, sizeof a);
    a.table = table;
    if (single)
        a.single = *single;
    a.active = s->active;
    a.n_active = s->n_active;
    a.cnt = s->cnt;
    a.off = s->off;
    a.perm = s->perm;
    a.Tk = Tk;
    a.k = k;
    a.D = D;
    // gate/up: input = quantized tokens, output = h [P][Imax]
    a.xq = xq;
    a.xs = xs;
    a.ldq = D;
    a.lds = D / 128;
    a.out = h;
    a.ldo = Imax;
    dim3 g1((Imax + ST_WARPS * ST_GU_ROWS - 1) / (ST_WARPS * ST_GU_ROWS), n_slots);
    if (one_token)
        ffn_stream_kernel<true, 1><<<g1, ST_WARPS * 32, 0, cb->stream>>>(a);
    else
        ffn_stream_kernel<true, ST_TM><<<g1, ST_WARPS * 32, 0, cb->stream>>>(a);
    if (!CU_LAUNCHED(cb))
        return;
    // h per pair -> FP8. When the shared expert's width differs from the routed ones, the
    // groups past a pair's own width are quantized too but never read.
    const int groups = Imax / 128;
    cuda_moe_launch_quant_bf16(cb, hq, hs, h, P, Imax);
    if (cb->status)
        return;
    // down: input = quantized h, output = y [P][D]
    a.xq = hq;
    a.xs = hs;
    a.ldq = Imax;
    a.lds = groups;
    a.out = y;
    a.ldo = D;
    dim3 g2((D + ST_WARPS * ST_DN_ROWS - 1) / (ST_WARPS * ST_DN_ROWS), n_slots);
    if (one_token)
        ffn_stream_kernel<false, 1><<<g2, ST_WARPS * 32, 0, cb->stream>>>(a);
    else
        ffn_stream_kernel<false, ST_TM><<<g2, ST_WARPS * 32, 0, cb->stream>>>(a);
    CU_LAUNCHED(cb);
}

extern "C" {

void cuda_op_mlp(struct dsd_backend *be, void *out, const void *x, const struct dsd_expert_weights *w, int T)
{
    struct cuda_backend *cb = cuda(be);
    if (T <= 0)
        return;
    cuda_use(cb);
    const int D = (int)cb->base.dims.hidden_size;
    if (!ffn_ok(w, D)) {
        cuda_fail(cb, -ENOTSUP, "mlp: the GPU MLP takes FP8 gate/up/down with block scales, widths multiples of 128");
        return;
    }
    const int I = (int)w->gate.rows;
    struct moe_ffn_w f;
    fill_ffn(&f, w);
    if (cb->ffn_path == DSD_CUDA_FFN_GEMM || (cb->ffn_path == DSD_CUDA_FFN_AUTO && T > MLP_STREAM_MAX_T)) {
        struct carve c = { NULL, 0 };
        for (int pass = 0; pass < 2; pass++) {
            uint8_t *xq = (uint8_t *)take(&c, (size_t)T * D);
            float *xs = (float *)take(&c, (size_t)T * (D / 128) * sizeof(float));
            struct moe_lt_bufs lb;
            carve_lt(&c, &lb, T, D, I);
            if (pass == 0) {
                c.p = (uint8_t *)cuda_scratch(cb, c.at);
                c.at = 0;
                if (!c.p)
                    return;
                continue;
            }
            cuda_moe_launch_quant_bf16(cb, xq, xs, x, T, D);
            cuda_moe_lt_mlp(cb, out, xq, xs, &f, T, &lb);
        }
        return;
    }
    // scratch: sort (1 expert), xq/xs, h, hq/hs; y is `out` itself
    struct carve c = { NULL, 0 };
    for (int pass = 0; pass < 2; pass++) {
        struct moe_sort s;
        s.cnt_chunk = NULL;
        s.cnt = (int32_t *)take(&c, 2 * sizeof(int32_t));
        s.off = (int32_t *)take(&c, 2 * sizeof(int32_t));
        s.active = (int32_t *)take(&c, 2 * sizeof(int32_t));
        s.n_active = (int32_t *)take(&c, sizeof(int32_t));
        s.perm = (int32_t *)take(&c, (size_t)T * sizeof(int32_t));
        uint8_t *xq = (uint8_t *)take(&c, (size_t)T * D);
        float *xs = (float *)take(&c, (size_t)T * (D / 128) * sizeof(float));
        __nv_bfloat16 *h = (__nv_bfloat16 *)take(&c, (size_t)T * I * 2);
        uint8_t *hq = (uint8_t *)take(&c, (size_t)T * I);
        float *hs = (float *)take(&c, (size_t)T * (I / 128) * sizeof(float));
        if (pass == 0) {
            c.p = (uint8_t *)cuda_scratch(cb, c.at);
            c.at = 0;
            if (!c.p)
                return;
            continue;
        }
        mlp_sort_kernel<<<(T + 255) / 256, 256, 0, cb->stream>>>(s, T);
        if (!CU_LAUNCHED(cb))
            return;
        cuda_moe_launch_quant_bf16(cb, xq, xs, x, T, D);
        run_stream(cb, &s, NULL, &f, 1, 0, 1, T, D, I, xq, xs, h, hq, hs, (__nv_bfloat16 *)out, T == 1);
    }
}

void cuda_op_moe(struct dsd_backend *be, void *out, const void *x, const struct dsd_layer_weights *lw, int T)
{
    struct cuda_backend *cb = cuda(be);
    if (T <= 0)
        return;
    cuda_use(cb);
    const struct dsd_model_dims *d = &cb->base.dims;
    const int D = (int)d->hidden_size, E = d->n_routed_experts, k = d->num_experts_per_tok;
    const bool shared = d->n_shared_experts > 0;
    if (E <= 0 || k <= 0 || k > E || d->n_group <= 0 || E % d->n_group || d->topk_group <= 0 ||
        d->topk_group > d->n_group || D % 128) {
        cuda_fail(cb, -EINVAL, "moe: unsupported routing dims (E=%d k=%d groups=%d/%d D=%d)", E, k, d->topk_group,
                  d->n_group, D);
        return;
    }
    const struct dsd_weight *rw = &lw->router;
    if (rw->rows != E || rw->cols != D || (rw->dtype != DSD_DTYPE_F32 && rw->dtype != DSD_DTYPE_BF16)) {
        cuda_fail(cb, -ENOTSUP, "moe: layer %d: router must be [%d][%d] F32 or BF16", lw->index, E, D);
        return;
    }
    if (lw->router_bias.data && (lw->router_bias.dtype != DSD_DTYPE_F32 || lw->router_bias.rows * lw->router_bias.cols != E)) {
        cuda_fail(cb, -ENOTSUP, "moe: layer %d: e_score_correction_bias must be %d F32 values", lw->index, E);
        return;
    }
    const struct moe_layer_table *lt = layer_table(cb, lw);
    if (!lt)
        return;
    const int I_r = (int)d->moe_intermediate_size;
    const int I_s = shared ? (int)lw->shared.gate.rows : 0;
    const int Imax = I_r > I_s ? I_r : I_s;
    const int Tk = T * k, P = Tk + (shared ? T : 0);
    const int n_chunks = (T + SORT_CHUNK_TOKENS - 1) / SORT_CHUNK_TOKENS;

    struct carve c = { NULL, 0 };
    for (int pass = 0; pass < 2; pass++) {
        float *logits = (float *)take(&c, (size_t)T * E * sizeof(float));
        int32_t *ids = (int32_t *)take(&c, (size_t)Tk * sizeof(int32_t));
        float *wts = (float *)take(&c, (size_t)Tk * sizeof(float));
        struct moe_sort s;
        s.cnt_chunk = (int32_t *)take(&c, (size_t)n_chunks * E * sizeof(int32_t));
        s.cnt = (int32_t *)take(&c, ((size_t)E + 1) * sizeof(int32_t));
        s.off = (int32_t *)take(&c, ((size_t)E + 2) * sizeof(int32_t));
        s.active = (int32_t *)take(&c, ((size_t)E + 1) * sizeof(int32_t));
        s.n_active = (int32_t *)take(&c, sizeof(int32_t));
        s.perm = (int32_t *)take(&c, (size_t)P * sizeof(int32_t));
        uint8_t *xq = (uint8_t *)take(&c, (size_t)T * D);
        float *xs = (float *)take(&c, (size_t)T * (D / 128) * sizeof(float));
        __nv_bfloat16 *h = NULL, *y = NULL;
        uint8_t *hq = NULL;
        float *hs = NULL;
        const bool stream = cb->ffn_path == DSD_CUDA_FFN_STREAM ||
                            (cb->ffn_path == DSD_CUDA_FFN_AUTO && T <= MOE_STREAM_MAX_T);
        struct moe_lt_bufs lb[CUDA_SIDE_STREAMS];
        memset(lb, 0, sizeof lb);
        const int n_exp = E + (shared ? 1 : 0);
        const bool grouped = !stream && (cb->moe_prefill == DSD_CUDA_MOE_PREFILL_AUTO ||
                                          cb->moe_prefill == DSD_CUDA_MOE_PREFILL_GROUPED);
        struct moe_grouped_bufs gb;
        memset(&gb, 0, sizeof gb);
        if (grouped) {
            gb.base = take(&c, cuda_moe_grouped_bytes(P, n_exp, Imax, NULL));
        } else if (stream) {
            h = (__nv_bfloat16 *)take(&c, (size_t)P * Imax * 2);
            hq = (uint8_t *)take(&c, (size_t)P * Imax);
            hs = (float *)take(&c, (size_t)P * (Imax / 128) * sizeof(float));
        } else {
            // one buffer set per lane (cuda_moe_lt.c); an expert sees at most T pairs
            for (int i = 0; i < cuda_moe_lt_lanes(cb); i++)
                carve_lt(&c, &lb[i], T < MOE_LT_LANE_ROWS ? T : MOE_LT_LANE_ROWS, D, Imax);
        }
        y = (__nv_bfloat16 *)take(&c, (size_t)P * D * 2);
        if (pass == 0) {
            c.p = (uint8_t *)cuda_scratch(cb, c.at);
            c.at = 0;
            if (!c.p)
                return;
            continue;
        }
        // 1.-2. logits and routing
        cuda_moe_router_logits(cb, logits, x, rw, T);
        cuda_moe_route(cb, ids, wts, logits, (const float *)lw->router_bias.data, T);
        if (cb->status)
            return;
        // 3. sort
        // 3. sort
        const size_t ssm = (size_t)SORT_CHUNK_TOKENS * k * sizeof(int32_t);
        if (ssm > 48 * 1024 &&
            (!CU_OK(cb, cudaFuncSetAttribute(sort_count_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ssm)) ||
             !CU_OK(cb, cudaFuncSetAttribute(sort_fill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ssm))))
            return;
        sort_count_kernel<<<n_chunks, SORT_THREADS, ssm, cb->stream>>>(s.cnt_chunk, ids, T, k, E);
        sort_scan_kernel<<<1, 1024, 0, cb->stream>>>(s, n_chunks, T, k, E, shared);
        sort_fill_kernel<<<n_chunks, SORT_THREADS, ssm, cb->stream>>>(s, ids, T, k, E, shared);
        if (cb->moe_hits)
            count_hits_kernel<<<(E + 255) / 256, 256, 0, cb->stream>>>(cb->moe_hits + (size_t)lw->index * E, s.cnt,
                                                                       E);
        if (!CU_LAUNCHED(cb))
            return;
        // 4. x quantized per token
        cuda_moe_launch_quant_bf16(cb, xq, xs, x, T, D);
        // 5. experts
        if (stream) {
            const int n_slots = (Tk < E ? Tk : E) + (shared ? 1 : 0);
            run_stream(cb, &s, lt->table, NULL, n_slots, Tk, k, P, D, Imax, xq, xs, h, hq, hs, y, T == 1);
        } else if (grouped) {
            cuda_moe_grouped_bytes(P, n_exp, Imax, &gb);
            cuda_moe_grouped_experts(cb, &s, lt->table, n_exp, Tk, k, D, Imax, xq, xs, &gb, y);
        } else {
            cuda_moe_lt_experts(cb, &s, lt->host, E, shared, T, k, xq, xs, lb, y);
        }
        if (cb->status)
            return;
        // 6. combine
        dim3 gc((D + 255) / 256, T);
        combine_kernel<<<gc, 256, 0, cb->stream>>>((__nv_bfloat16 *)out, y, wts, T, k, D, shared);
        CU_LAUNCHED(cb);
    }
}

void dsd_backend_cuda_set_moe_prefill(struct dsd_backend *be, enum dsd_cuda_moe_prefill m)
{
    cuda(be)->moe_prefill = m;
}

void dsd_backend_cuda_set_ffn_path(struct dsd_backend *be, enum dsd_cuda_ffn_path p)
{
    cuda(be)->ffn_path = p;
}

int cuda_moe_prepare(struct cuda_backend *cb, struct dsd_model_weights *w, struct dsd_err *err)
{
    cuda_use(cb);
    for (int l = 0; l < w->n_layers; l++) {
        struct dsd_layer_weights *lw = &w->layers[l];
        if (!lw->is_moe || !lw->experts)
            continue;
        if (!layer_table(cb, lw)) {
            int rc = cb->status ? cb->status : -EIO;
            dsd_errf(err, rc, "cuda moe: %s", cb->status_msg);
            cb->status = 0;
            cb->status_msg[0] = 0;
            return rc;
        }
    }
    return 0;
}

void cuda_moe_release(struct cuda_backend *cb, struct dsd_model_weights *w)
{
    (void)w;
    struct cuda_moe_state *st = cb->moe;
    if (!st)
        return;
    cuda_use(cb);
    for (int i = 0; i < st->n; i++) {
        cudaFree(st->v[i].table);
        free(st->v[i].host);
    }
    free(st->v);
    free(st);
    cb->moe = NULL;
}

void cuda_moe_router_logits(struct cuda_backend *cb, float *logits, const void *x, const struct dsd_weight *rw, int T)
{
    const int E = (int)rw->rows, D = (int)rw->cols;
    dim3 gl((E + RL_EXPERTS - 1) / RL_EXPERTS, (T + RL_TOKENS - 1) / RL_TOKENS);
    const int wb = rw->dtype == DSD_DTYPE_F32 ? 4 : 2;
    const size_t sm = rl_slab_smem(D, wb, T);
    const dim3 gs((E + RL_SLAB_EXPERTS - 1) / RL_SLAB_EXPERTS, (T + RL_TOKENS - 1) / RL_TOKENS);
    if (T <= RL_SLAB_MAX_T && D % 8 == 0 && sm <= 227 * 1024 && ((uintptr_t)x | (uintptr_t)rw->data) % 16 == 0 &&
        (rw->dtype == DSD_DTYPE_F32 || rw->dtype == DSD_DTYPE_BF16)) {
        if (rw->dtype == DSD_DTYPE_F32) {
            if (!CU_OK(cb, cudaFuncSetAttribute(router_logits_slab_kernel<float>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm)))
                return;
            router_logits_slab_kernel<float><<<gs, RL_SLAB_THREADS, sm, cb->stream>>>(
                logits, (const __nv_bfloat16 *)x, (const float *)rw->data, T, E, D);
        } else {
            if (!CU_OK(cb, cudaFuncSetAttribute(router_logits_slab_kernel<__nv_bfloat16>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm)))
                return;
            router_logits_slab_kernel<__nv_bfloat16><<<gs, RL_SLAB_THREADS, sm, cb->stream>>>(
                logits, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)rw->data, T, E, D);
        }
        CU_LAUNCHED(cb);
        return;
    }
    if (rw->dtype == DSD_DTYPE_F32)
        router_logits_kernel<float><<<gl, RL_EXPERTS * 8, 0, cb->stream>>>(
            logits, (const __nv_bfloat16 *)x, (const float *)rw->data, T, E, D);
    else if (rw->dtype == DSD_DTYPE_BF16)
        router_logits_kernel<__nv_bfloat16><<<gl, RL_EXPERTS * 8, 0, cb->stream>>>(
            logits, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)rw->data, T, E, D);
    else
        cuda_fail(cb, -ENOTSUP, "moe: router weight must be F32 or BF16");
    CU_LAUNCHED(cb);
}

void cuda_moe_route(struct cuda_backend *cb, int32_t *ids, float *wts, const float *logits, const float *bias, int T)
{
    const struct dsd_model_dims *d = &cb->base.dims;
    const int E = d->n_routed_experts;
    size_t rsm = (size_t)3 * E * sizeof(float) + (size_t)d->n_group * (sizeof(float) + sizeof(int)) +
                 (size_t)E * sizeof(int) + (size_t)d->num_experts_per_tok * sizeof(int);
    if (rsm > 48 * 1024 &&
        !CU_OK(cb, cudaFuncSetAttribute(route_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)rsm)))
        return;
    route_kernel<<<T, ROUTE_THREADS, rsm, cb->stream>>>(ids, wts, logits, bias, E, d->n_group, d->topk_group,
                                                         d->num_experts_per_tok, d->norm_topk_prob,
                                                         (float)d->routed_scaling_factor);
    CU_LAUNCHED(cb);
}

// ---- launchers for cuda_moe_lt.c ----

void cuda_moe_launch_gather(struct cuda_backend *cb, cudaStream_t st, uint8_t *aq, float *as, int rows,
                            const uint8_t *xq, const float *xs, int D, const int32_t *perm, int m, int Tk, int k)
{
    dim3 grid((D / 16 + 255) / 256, rows);
    gather_kernel<<<grid, 256, 0, st>>>(aq, as, rows, xq, xs, D, perm, m, Tk, k);
    CU_LAUNCHED(cb);
}

void cuda_moe_launch_swiglu_quant(struct cuda_backend *cb, cudaStream_t st, float *h, uint8_t *hq, float *hs,
                                  const void *g, const void *u, int m, int rows, int I)
{
    dim3 block(32, 8), grid((I + 31) / 32, (rows + 31) / 32);
    swiglu_cm_kernel<<<grid, block, 0, st>>>(h, (const __nv_bfloat16 *)g, (const __nv_bfloat16 *)u, m, rows, I);
    if (!CU_LAUNCHED(cb))
        return;
    const int groups = I / 128;
    const int64_t warps = (int64_t)rows * groups;
    quant_kernel<float><<<(unsigned)((warps * 32 + 255) / 256), 256, 0, st>>>(
        hq, hs, h, m, rows, I, I, I, 1, rows, cb->base.dims.act_scale_ue8m0);
    CU_LAUNCHED(cb);
}

void cuda_moe_launch_plan(struct cuda_backend *cb, void *blocks, int32_t *n_blocks, const struct moe_sort *s, int n_exp,
                          int rows)
{
    moe_plan_kernel<<<1, 1024, 0, cb->stream>>>((int4 *)blocks, n_blocks, *s, n_exp, rows);
    CU_LAUNCHED(cb);
}

void cuda_moe_launch_scatter(struct cuda_backend *cb, cudaStream_t st, void *y, const void *yc, int rows, int D,
                             const int32_t *perm, int m)
{
    dim3 block(32, 8), grid((D + 31) / 32, (m + 31) / 32);
    scatter_cm_kernel<<<grid, block, 0, st>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)yc, rows, D, perm, m);
    CU_LAUNCHED(cb);
}

}
