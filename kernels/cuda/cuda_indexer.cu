// The DSA lightning indexer on the device: FP8 scores over the paged index-K cache and the exact
// top-k (contract in kernels/ops.h; the math of kernels/cpu/cpu_indexer.c topk_token and the
// selection order of daemon/util/topk.c dsd_topk). Three kernels per sub-batch of tokens:
//   1. q_prep:  per (token, head) one warp: Hadamard, bf16 rounding, FP8 quantization with one
//               scale per head, folded into the head weight w_h = w * Hi^-1/2 * q_scale * Di^-1/2;
//               the FP8 values are kept as bf16 (exact) for the tensor cores.
//   2. score:   per (token, a few pages of 64 candidates) one CTA of ceil(Hi/16) warps: q in
//               registers (A fragments), S = q k^T on the tensor cores (products exact, fp32
//               sums), logit_j = k_scale_j * sum_h w_h relu(S_hj); written once to an fp32 row in
//               scratch. Two versions: the FP8 one copies each key page as it is
//               stored into shared memory (cp.async, double-buffered) and multiplies e4m3 by e4m3
//               with mma.m16n8k32; the bf16 one converts each page to bf16 in shared memory
//               first and uses mma.m16n8k16 (kept selectable to compare speed and numerics,
//               dsd_backend_cuda_set_indexer_kernel; docs/KERNELS.md has both). A third
//               (the default, up to 256 heads) multiplies on Hopper's warpgroup MMA:
//               q [64 heads][128] and each key page [64][128] as 128-byte-swizzled e4m3
//               tiles, S = q k^T by four m64n64k32 per page (indexer_score_wgmma_kernel).
//   3. select:  per token one CTA of 1024 threads: radix select (4 passes of 8 bits, warp-
//               aggregated bin counts) of the k-th
//               largest order-preserving key (NaN lowest, -0 == +0), then one ordered pass with
//               block-wide prefix sums emitting every key above it and the lowest-index equal
//               ones, ascending; -1 padding.
// The logits rows of a sub-batch fit a bounded scratch (INDEXER_SCRATCH_BYTES).
#include <math.h>

#include "cuda_attn_util.h"
#include "cuda_backend.h"
#include "cuda_strided.h"
#include "cuda_wgmma.h"

using namespace dsd_attn;

#define INDEXER_SCRATCH_BYTES ((size_t)512 << 20)
#define SCORE_PAGES_PER_CTA 4
#define SELECT_THREADS 1024

// ---- 1. q preparation ------------------------------------------------------------------------

// qv: [Tsub][Hp][128] bf16 (Hp = Hi padded to 16; pad heads zero), or with qv8 the e4m3 bytes
// [Tsub][Hp][128] there instead; wh: [Tsub][Hp] f32
__global__ void indexer_q_prep_kernel(const uint16_t *__restrict__ q, const float *__restrict__ w, int Hi, int Hp,
                                      int Tsub, bool ue8m0, float had, float head_scale, float dim_scale,
                                      uint16_t *__restrict__ qv, uint8_t *__restrict__ qv8, float *__restrict__ wh)
{
    const int gw = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (gw >= Tsub * Hp)
        return;
    const int t = gw / Hp, h = gw % Hp;
    uint16_t *dst = qv + (size_t)gw * 128;
    if (h >= Hi) {
        if (qv8)
            *reinterpret_cast<uint32_t *>(qv8 + (size_t)gw * 128 + 4 * lane) = 0;
        else
            for (int i = 0; i < 4; i++)
                dst[4 * lane + i] = 0;
        if (lane == 0)
            wh[gw] = 0.0f;
        return;
    }
    const uint16_t *src = q + ((size_t)t * Hi + h) * 128;
    float v[4];
    for (int i = 0; i < 4; i++)
        v[i] = bf16_bits_to_f32(src[4 * lane + i]);
    const float wt = w[(size_t)t * Hi + h];
    warp_hadamard128(v, had);
    float amax = 0.0f;
    for (int i = 0; i < 4; i++) {
        v[i] = round_bf16(v[i]);
        amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = warp_max(amax);
    const float sc = quant_scale(amax, ue8m0);
    if (qv8) {
        uint32_t packed = 0;
        for (int i = 0; i < 4; i++)
            packed |= (uint32_t)quant_e4m3(v[i], sc) << (8 * i);
        *reinterpret_cast<uint32_t *>(qv8 + (size_t)gw * 128 + 4 * lane) = packed;
    } else {
        for (int i = 0; i < 4; i++) {
            float qf = e4m3_to_f32(quant_e4m3(v[i], sc));
            dst[4 * lane + i] = f32_to_bf16_bits(qf);      // exact: e4m3 values fit bf16
        }
    }
    if (lane == 0)
        wh[gw] = wt * head_scale * sc * dim_scale;      // the CPU's order of products
}

// ---- 2. scores -------------------------------------------------------------------------------

// The pages the CTA (blockIdx.x, token t) of a score kernel walks: n_cand candidate keys of
// the token (its position + 1, capped at max_pos + 1), its first page page0 and n_pg pages (up
// to ppc). False when it has none: the token's candidates fit top-k (select writes 0..n-1
// itself) or lie before this CTA's pages.
__device__ __forceinline__ bool score_pages(const int32_t *pos, int t, int max_pos, int topk, int ppc, int *n_cand,
                                            int *page0, int *n_pg)
{
    const int p = pos[t] > max_pos ? max_pos : pos[t];
    *n_cand = p + 1;
    *page0 = blockIdx.x * ppc;
    if (*n_cand <= topk || *page0 * 64 >= *n_cand)
        return false;
    *n_pg = min(ppc, (*n_cand + 63) / 64 - *page0);
    return true;
}

#define KS_LD 136   // bf16 per key row in shared memory (128 + 8: conflict-free fragment loads)

// grid (ceil(n_pages_max / SCORE_PAGES_PER_CTA), Tsub), block 32 * (Hp / 16)
__global__ void indexer_score_kernel(const uint16_t *__restrict__ qv, const float *__restrict__ wh, int Hp,
                                     const uint8_t *__restrict__ index, size_t page_bytes,
                                     const int32_t *__restrict__ pos, const int32_t *__restrict__ seq,
                                     const int32_t *__restrict__ page_off, const int32_t *__restrict__ pages,
                                     int t0, int max_pos, int topk, float *__restrict__ logits, size_t ld_logits)
{
    extern __shared__ __align__(16) uint8_t smem[];
    uint16_t *ks = reinterpret_cast<uint16_t *>(smem);                             // [64][KS_LD]
    float *kscale = reinterpret_cast<float *>(smem + 64 * KS_LD * 2);              // [64]
    float *red = kscale + 64;                                                      // [warps][64]

    const int tt = blockIdx.y, t = t0 + tt;
    int n_cand, page0, n_pg;
    if (!score_pages(pos, t, max_pos, topk, SCORE_PAGES_PER_CTA, &n_cand, &page0, &n_pg))
        return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
    const int nwarps = blockDim.x >> 5;
    const int32_t *pg_tab = pages + page_off[seq[t]];

    // A fragments of this warp's 16 heads, all 8 k-steps, and their head weights
    const uint16_t *qrow0 = qv + ((size_t)tt * Hp + warp * 16 + g) * 128;
    const uint16_t *qrow1 = qrow0 + 8 * 128;
    uint32_t a[8][4];
    for (int kk = 0; kk < 8; kk++) {
        const int c = kk * 16 + 2 * q4;
        a[kk][0] = *reinterpret_cast<const uint32_t *>(qrow0 + c);
        a[kk][1] = *reinterpret_cast<const uint32_t *>(qrow1 + c);
        a[kk][2] = *reinterpret_cast<const uint32_t *>(qrow0 + c + 8);
        a[kk][3] = *reinterpret_cast<const uint32_t *>(qrow1 + c + 8);
    }
    const float w0 = wh[(size_t)tt * Hp + warp * 16 + g], w1 = wh[(size_t)tt * Hp + warp * 16 + g + 8];

    for (int pi = 0; pi < SCORE_PAGES_PER_CTA; pi++) {
        const int jp = page0 + pi;
        if (jp * 64 >= n_cand)
            break;
        const uint8_t *pg = index + (size_t)pg_tab[jp] * page_bytes;
        __syncthreads();    // the previous page's keys and partial sums are consumed
        {
            // 64 keys x 128 e4m3 = 512 chunks of 16 bytes
            for (int c = threadIdx.x; c < 512; c += blockDim.x) {
                const int row = c >> 3, col = (c & 7) * 16;
                uint4 raw = *reinterpret_cast<const uint4 *>(pg + row * 128 + col);
                const uint8_t *b = reinterpret_cast<const uint8_t *>(&raw);
                uint32_t out[8];
                for (int i = 0; i < 8; i++)
                    out[i] = pack_bf16(f32_to_bf16_bits(e4m3_to_f32(b[2 * i])),
                                       f32_to_bf16_bits(e4m3_to_f32(b[2 * i + 1])));
                uint4 *d = reinterpret_cast<uint4 *>(ks + row * KS_LD + col);
                d[0] = make_uint4(out[0], out[1], out[2], out[3]);
                d[1] = make_uint4(out[4], out[5], out[6], out[7]);
            }
            for (int c = threadIdx.x; c < 64; c += blockDim.x)
                kscale[c] = reinterpret_cast<const float *>(pg + 64 * 128)[c];
        }
        __syncthreads();
        for (int nt = 0; nt < 8; nt++) {
            float acc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
            const uint16_t *krow = ks + (nt * 8 + g) * KS_LD + 2 * q4;
            for (int kk = 0; kk < 8; kk++) {
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(krow + kk * 16);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(krow + kk * 16 + 8);
                mma_bf16(acc, a[kk], b0, b1);
            }
            // columns 2q, 2q+1 of this n-tile: rows g (acc0, acc1) and g + 8 (acc2, acc3)
            float s0 = w0 * fmaxf(acc[0], 0.0f) + w1 * fmaxf(acc[2], 0.0f);
            float s1 = w0 * fmaxf(acc[1], 0.0f) + w1 * fmaxf(acc[3], 0.0f);
            for (int o = 4; o < 32; o <<= 1) {
                s0 += __shfl_xor_sync(0xffffffffu, s0, o);
                s1 += __shfl_xor_sync(0xffffffffu, s1, o);
            }
            if (g == 0) {
                red[warp * 64 + nt * 8 + 2 * q4] = s0;
                red[warp * 64 + nt * 8 + 2 * q4 + 1] = s1;
            }
        }
        __syncthreads();
        for (int c = threadIdx.x; c < 64; c += blockDim.x) {
            const int j = jp * 64 + c;
            if (j < n_cand) {
                float s = 0.0f;
                for (int w = 0; w < nwarps; w++)
                    s += red[w * 64 + c];
                logits[(size_t)tt * ld_logits + j] = s * kscale[c];
            }
        }
    }
}

// Before page i of a score kernel's walk: page i + 1 is put in flight with `issue` (after a
// barrier: its stage and the reduction buffer were read for page i - 1), then page i waited
// for; the caller's barrier makes it visible to every thread.
template <class Issue> __device__ __forceinline__ void next_page(int i, int n_pg, Issue issue)
{
    if (i + 1 < n_pg) {
        __syncthreads();
        issue(i + 1);
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
}

#define KS8_LD 144                              // bytes per key row in shared memory (128 + 16:
                                                // the 32-bit fragment loads of a warp hit 32 banks)
#define KS8_STAGE (64 * KS8_LD + 64 * 4)        // one page in shared memory: keys, then scales

// The FP8 version: grid (ceil(n_pages_max / ppc), Tsub), block 32 * (Hp / 16), dynamic shared
// memory 2 * KS8_STAGE + warps * 64 * 4. Each CTA walks `ppc` pages of its token's sequence;
// page i + 1 is in flight (cp.async) while page i is multiplied.
__global__ void indexer_score_fp8_kernel(const uint8_t *__restrict__ qv8, const float *__restrict__ wh, int Hp,
                                         const uint8_t *__restrict__ index, size_t page_bytes,
                                         const int32_t *__restrict__ pos, const int32_t *__restrict__ seq,
                                         const int32_t *__restrict__ page_off, const int32_t *__restrict__ pages,
                                         int t0, int max_pos, int topk, int ppc, float *__restrict__ logits,
                                         size_t ld_logits)
{
    extern __shared__ __align__(16) uint8_t smem[];
    float *red = reinterpret_cast<float *>(smem + 2 * KS8_STAGE);                 // [warps][64]

    const int tt = blockIdx.y, t = t0 + tt;
    int n_cand, page0, n_pg;
    if (!score_pages(pos, t, max_pos, topk, ppc, &n_cand, &page0, &n_pg))
        return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
    const int nwarps = blockDim.x >> 5;
    const int32_t *pg_tab = pages + page_off[seq[t]] + page0;

    // page i of this CTA into stage i % 2: 512 chunks of keys and 16 of scales, 16 bytes each
    auto issue = [&](int i) {
        const uint8_t *pg = index + (size_t)pg_tab[i] * page_bytes;
        uint8_t *st = smem + (i & 1) * KS8_STAGE;
        for (int c = threadIdx.x; c < 512 + 16; c += blockDim.x) {
            if (c < 512)
                cp_async16(st + (c >> 3) * KS8_LD + (c & 7) * 16, pg + c * 16, true);
            else
                cp_async16(st + 64 * KS8_LD + (c - 512) * 16, pg + 64 * 128 + (c - 512) * 16, true);
        }
        cp_async_commit();
    };
    issue(0);

    // A fragments of this warp's 16 heads, all 4 k-steps of 32, and their head weights
    const uint8_t *qrow0 = qv8 + ((size_t)tt * Hp + warp * 16 + g) * 128 + 4 * q4;
    const uint8_t *qrow1 = qrow0 + 8 * 128;
    uint32_t a[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        a[kk][0] = *reinterpret_cast<const uint32_t *>(qrow0 + kk * 32);
        a[kk][1] = *reinterpret_cast<const uint32_t *>(qrow1 + kk * 32);
        a[kk][2] = *reinterpret_cast<const uint32_t *>(qrow0 + kk * 32 + 16);
        a[kk][3] = *reinterpret_cast<const uint32_t *>(qrow1 + kk * 32 + 16);
    }
    const float w0 = wh[(size_t)tt * Hp + warp * 16 + g], w1 = wh[(size_t)tt * Hp + warp * 16 + g + 8];

    for (int i = 0; i < n_pg; i++) {
        next_page(i, n_pg, issue);
        __syncthreads();            // page i has landed for every thread
        const uint8_t *ks = smem + (i & 1) * KS8_STAGE;
        const float *kscale = reinterpret_cast<const float *>(ks + 64 * KS8_LD);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            float acc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
            const uint8_t *krow = ks + (nt * 8 + g) * KS8_LD + 4 * q4;
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const uint32_t b0 = *reinterpret_cast<const uint32_t *>(krow + kk * 32);
                const uint32_t b1 = *reinterpret_cast<const uint32_t *>(krow + kk * 32 + 16);
                mma_e4m3(acc, a[kk], b0, b1);
            }
            // columns 2q, 2q+1 of this n-tile: rows g (acc0, acc1) and g + 8 (acc2, acc3)
            float s0 = w0 * fmaxf(acc[0], 0.0f) + w1 * fmaxf(acc[2], 0.0f);
            float s1 = w0 * fmaxf(acc[1], 0.0f) + w1 * fmaxf(acc[3], 0.0f);
            for (int o = 4; o < 32; o <<= 1) {
                s0 += __shfl_xor_sync(0xffffffffu, s0, o);
                s1 += __shfl_xor_sync(0xffffffffu, s1, o);
            }
            if (g == 0) {
                red[warp * 64 + nt * 8 + 2 * q4] = s0;
                red[warp * 64 + nt * 8 + 2 * q4 + 1] = s1;
            }
        }
        __syncthreads();
        for (int c = threadIdx.x; c < 64; c += blockDim.x) {
            const int j = (page0 + i) * 64 + c;
            if (j < n_cand) {
                float s = 0.0f;
                for (int w = 0; w < nwarps; w++)
                    s += red[w * 64 + c];
                logits[(size_t)tt * ld_logits + j] = s * kscale[c];
            }
        }
    }
}

// The wgmma version: grid (ceil(n_pages_max / ppc), Tsub), one warpgroup (128 threads) for
// any head count (64-head tiles, zero rows past Hp), dynamic shared memory
// indexer_wgmma_smem(Hp). q and each page's keys are stored as 128-byte-swizzled e4m3 tiles
// (cuda_wgmma.h: a key row is one 128-byte swizzle row, K-major); page i + 1 is in flight while
// page i is multiplied. The ReLU-weighted head sum and the store are the FP8 kernel's.
#define KW_STAGE (9 * 1024)                     // keys (8 KB, 1 KB aligned) + 64 scales, rounded
#define KW_MAX_TILES 4                          // up to 256 heads

__host__ __device__ inline size_t indexer_wgmma_smem(int Hp)
{
    return (size_t)((Hp + 63) / 64) * 8192 + 2 * KW_STAGE + 4 * 64 * 4 + 1024;
}

__global__ void __launch_bounds__(128) indexer_score_wgmma_kernel(
    const uint8_t *__restrict__ qv8, const float *__restrict__ wh, int Hp, const uint8_t *__restrict__ index,
    size_t page_bytes, const int32_t *__restrict__ pos, const int32_t *__restrict__ seq,
    const int32_t *__restrict__ page_off, const int32_t *__restrict__ pages, int t0, int max_pos, int topk, int ppc,
    float *__restrict__ logits, size_t ld_logits)
{
    using namespace dsd_wgmma;
    extern __shared__ uint8_t smem_raw[];
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem_raw);
    uint8_t *sm = smem_raw + ((1024 - (base & 1023)) & 1023);
    const int MT = (Hp + 63) / 64;
    uint8_t *Qs = sm;                                   // [MT][64 rows][128 B]
    uint8_t *Ks = Qs + MT * 8192;                       // [2][KW_STAGE]
    float *red = reinterpret_cast<float *>(Ks + 2 * KW_STAGE);     // [4][64]

    const int tt = blockIdx.y, t = t0 + tt;
    int n_cand, page0, n_pg;
    if (!score_pages(pos, t, max_pos, topk, ppc, &n_cand, &page0, &n_pg))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
    const int32_t *pg_tab = pages + page_off[seq[t]] + page0;

    // page i of this CTA into stage i % 2: 512 chunks of keys (swizzled) and 16 of scales
    auto issue = [&](int i) {
        const uint8_t *pg = index + (size_t)pg_tab[i] * page_bytes;
        uint8_t *st = Ks + (i & 1) * KW_STAGE;
        for (int c = tid; c < 512 + 16; c += 128) {
            if (c < 512)
                cp_async16(st + (c >> 3) * 128 + (((c & 7) ^ ((c >> 3) & 7)) << 4), pg + c * 16, true);
            else
                cp_async16(st + 8192 + (c - 512) * 16, pg + 64 * 128 + (c - 512) * 16, true);
        }
        cp_async_commit();
    };
    issue(0);

    // q rows (zero past Hp), swizzled like the keys; this thread's head weights
    for (int c = tid; c < MT * 64 * 8; c += 128) {
        const int r = c >> 3, j = c & 7;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < Hp)
            v = *reinterpret_cast<const uint4 *>(qv8 + ((size_t)tt * Hp + r) * 128 + j * 16);
        *reinterpret_cast<uint4 *>(Qs + (r >> 6) * 8192 + (r & 63) * 128 + ((j ^ (r & 7)) << 4)) = v;
    }
    float w0[KW_MAX_TILES], w1[KW_MAX_TILES];
#pragma unroll
    for (int mt = 0; mt < KW_MAX_TILES; mt++) {
        const int h0 = mt * 64 + warp * 16 + g, h1 = h0 + 8;
        w0[mt] = mt < MT && h0 < Hp ? wh[(size_t)tt * Hp + h0] : 0.0f;
        w1[mt] = mt < MT && h1 < Hp ? wh[(size_t)tt * Hp + h1] : 0.0f;
    }

    for (int i = 0; i < n_pg; i++) {
        next_page(i, n_pg, issue);
        proxy_fence();              // q's stores and the page's cp.async writes are read by wgmma
        __syncthreads();            // page i has landed for every thread
        const uint8_t *ks = Ks + (i & 1) * KW_STAGE;
        const float *kscale = reinterpret_cast<const float *>(ks + 8192);
        // columns 8 jn + 2 q4 + x of the page: this thread's two rows of every 64-head tile
        float s[16];
#pragma unroll
        for (int x = 0; x < 16; x++)
            s[x] = 0.0f;
#pragma unroll
        for (int mt = 0; mt < KW_MAX_TILES; mt++) {
            if (mt >= MT)
                break;
            float acc[32];
            fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
                wgmma_e4m3<64>::run(acc, desc(Qs + mt * 8192 + kk * 32, 16, 1024), desc(ks + kk * 32, 16, 1024),
                                    kk > 0);
            commit();
            wait<0>();
            pin(acc);
#pragma unroll
            for (int jn = 0; jn < 8; jn++)
#pragma unroll
                for (int x = 0; x < 2; x++)
                    s[2 * jn + x] += w0[mt] * fmaxf(acc[4 * jn + x], 0.0f) + w1[mt] * fmaxf(acc[4 * jn + 2 + x], 0.0f);
        }
#pragma unroll
        for (int x = 0; x < 16; x++)
            for (int o = 4; o < 32; o <<= 1)
                s[x] += __shfl_xor_sync(0xffffffffu, s[x], o);
        if (g == 0)
#pragma unroll
            for (int jn = 0; jn < 8; jn++) {
                red[warp * 64 + 8 * jn + 2 * q4] = s[2 * jn];
                red[warp * 64 + 8 * jn + 2 * q4 + 1] = s[2 * jn + 1];
            }
        __syncthreads();
        if (tid < 64) {
            const int j = (page0 + i) * 64 + tid;
            if (j < n_cand)
                logits[(size_t)tt * ld_logits + j] =
                    (red[tid] + red[64 + tid] + red[128 + tid] + red[192 + tid]) * kscale[tid];
        }
    }
}

// ---- 3. exact selection ----------------------------------------------------------------------

// order-preserving key: larger float -> larger key; NaN lowest (0); -0 == +0
__device__ __forceinline__ uint32_t sort_key(float f)
{
    if (isnan(f))
        return 0u;
    if (f == 0.0f)
        f = 0.0f;
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// exclusive block-wide prefix sum of two counters (SELECT_THREADS threads); totals returned too
__device__ __forceinline__ int2 block_scan2(int2 v, int2 *total, int2 *warp_buf)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int2 inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        int x = __shfl_up_sync(0xffffffffu, inc.x, o), y = __shfl_up_sync(0xffffffffu, inc.y, o);
        if (lane >= o) {
            inc.x += x;
            inc.y += y;
        }
    }
    if (lane == 31)
        warp_buf[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        int2 wv = lane < nw ? warp_buf[lane] : make_int2(0, 0);
        int2 wi = wv;
        for (int o = 1; o < 32; o <<= 1) {
            int x = __shfl_up_sync(0xffffffffu, wi.x, o), y = __shfl_up_sync(0xffffffffu, wi.y, o);
            if (lane >= o) {
                wi.x += x;
                wi.y += y;
            }
        }
        if (lane < nw)
            warp_buf[lane] = make_int2(wi.x - wv.x, wi.y - wv.y);     // exclusive warp offsets
        if (lane == nw - 1)
            warp_buf[32] = wi;
    }
    __syncthreads();
    int2 off = warp_buf[warp];
    *total = warp_buf[32];
    __syncthreads();    // warp_buf is reused by the next call
    return make_int2(off.x + inc.x - v.x, off.y + inc.y - v.y);
}

#define SEL_ITEMS 4
#define SELECT_CACHE_MAX 24576      // keys a select block caches in shared memory (96 KB)

template <bool CACHE>
__global__ void __launch_bounds__(SELECT_THREADS, CACHE ? 1 : 2)
indexer_select_kernel(const float *__restrict__ logits, size_t ld_logits, const int32_t *__restrict__ pos, int t0,
                      int max_pos, int topk, int32_t *__restrict__ out, int cache_cap)
{
    extern __shared__ uint32_t key_cache[];     // [cache_cap]: the row's keys, when it fits
    __shared__ int hist[256];
    __shared__ int2 warp_buf[33];
    __shared__ uint32_t s_prefix;
    __shared__ int s_remaining;

    const int tt = blockIdx.x, t = t0 + tt;
    int p = pos[t];
    if (p > max_pos)
        p = max_pos;
    const int n = p + 1;
    const int k = n < topk ? n : topk;
    int32_t *o = out + (size_t)t * topk;
    for (int i = k + threadIdx.x; i < topk; i += blockDim.x)
        o[i] = -1;
    if (n <= topk) {
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            o[i] = i;
        return;
    }
    const float *row = logits + (size_t)tt * ld_logits;
    // A row that fits the cache is read from global memory once, every thread's loads issued
    // together; the five passes below then read shared memory. (At decode a row is one block:
    // five strided passes over 4K global logits were a chain of ~17 memory latencies, 17 us in
    // ncu on an H100.) The keys are the same either way, so the selection is too.
    const bool cached = CACHE && n <= cache_cap;
    if (cached) {
        strided_pass<8>((int)threadIdx.x, n, SELECT_THREADS, [&](int i) { return row[i]; },
                        [&](int i, float v) { key_cache[i] = sort_key(v); });
        __syncthreads();
    }
    const auto key_at = [&](int i) {
        if constexpr (CACHE)
            if (cached)
                return key_cache[i];
        return sort_key(row[i]);
    };

    // radix select of the k-th largest key, 8 bits at a time from the top
    uint32_t prefix = 0, mask = 0;
    int remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            hist[i] = 0;
        __syncthreads();
        // Warp-aggregated counting: the keys of one row share their top bits (logits of similar
        // magnitude), so most lanes of a warp hit the same bin, and 32 shared-memory atomics on
        // one address serialize. Lanes with the same bin find each other (match.any) and
        // their lowest lane adds the group's count. Every lane of a warp runs every round.
        for (int base = 0; base < n; base += blockDim.x) {
            const int i = base + threadIdx.x;
            const uint32_t key = i < n ? key_at(i) : 0u;
            const bool in = i < n && (key & mask) == prefix;
            const uint32_t bin = in ? (key >> shift) & 255 : 256u;
            const unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (in && (threadIdx.x & 31) == __ffs(peers) - 1)
                atomicAdd(&hist[bin], __popc(peers));
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            // lane l owns bins 255 - 8l .. 248 - 8l (descending)
            const int lane = threadIdx.x;
            int c[8], sum = 0;
            for (int i = 0; i < 8; i++) {
                c[i] = hist[255 - 8 * lane - i];
                sum += c[i];
            }
            int inc = sum;
            for (int of = 1; of < 32; of <<= 1) {
                int x = __shfl_up_sync(0xffffffffu, inc, of);
                if (lane >= of)
                    inc += x;
            }
            int above = inc - sum;
            for (int i = 0; i < 8; i++) {
                if (above < remaining && remaining <= above + c[i]) {
                    s_prefix = prefix | ((uint32_t)(255 - 8 * lane - i) << shift);
                    s_remaining = remaining - above;
                }
                above += c[i];
            }
        }
        __syncthreads();
        prefix = s_prefix;
        remaining = s_remaining;
        mask |= 255u << shift;
        __syncthreads();
    }
    const uint32_t kth = prefix;    // the k-th largest key; `remaining` equal ones are taken

    // ordered pass: everything above kth, plus the first `remaining` equal to it, ascending
    int eq_seen = 0, taken = 0;
    for (int base = 0; base < n; base += SELECT_THREADS * SEL_ITEMS) {
        const int i0 = base + threadIdx.x * SEL_ITEMS;
        uint32_t keys[SEL_ITEMS];
        int n_gt = 0, n_eq = 0;
        for (int i = 0; i < SEL_ITEMS; i++) {
            keys[i] = i0 + i < n ? key_at(i0 + i) : 0u;
            const bool in = i0 + i < n;
            n_gt += in && keys[i] > kth;
            n_eq += in && keys[i] == kth;
        }
        int2 tot;
        int2 ex = block_scan2(make_int2(n_eq, 0), &tot, warp_buf);
        int eq_rank = eq_seen + ex.x;
        // how many of my equal ones are taken
        int take_eq = remaining - eq_rank;
        take_eq = take_eq < 0 ? 0 : (take_eq > n_eq ? n_eq : take_eq);
        int2 tot2;
        int2 ex2 = block_scan2(make_int2(n_gt + take_eq, 0), &tot2, warp_buf);
        int at = taken + ex2.x, eq_left = take_eq;
        for (int i = 0; i < SEL_ITEMS; i++) {
            if (i0 + i >= n)
                break;
            bool take = keys[i] > kth;
            if (!take && keys[i] == kth && eq_left > 0) {
                take = true;
                eq_left--;
            }
            if (take)
                o[at++] = i0 + i;
        }
        eq_seen += tot.x;
        taken += tot2.x;
    }
}

// ---- the op ----------------------------------------------------------------------------------

extern "C" void cuda_op_indexer_topk(struct dsd_backend *be, int32_t *out, int topk, const void *q, const float *w,
                                     const struct dsd_kv_layer *kv, const struct dsd_step *st)
{
    struct cuda_backend *cb = cuda(be);
    const struct dsd_kv_layout *lay = &be->kv_layout;
    const int T = st->n_tokens, Hi = be->dims.index_n_heads, Di = lay->index_dim;
    if (T <= 0 || topk <= 0)
        return;
    cuda_use(cb);
    if (Di != 128 || Hi <= 0 || Hi > 256) {
        cuda_fail(cb, -EINVAL, "indexer_topk: index heads %d x dim %d (need dim 128, at most 256 heads)", Hi, Di);
        return;
    }
    const int Hp = (Hi + 15) / 16 * 16;
    const int n_max = st->max_pos + 1;
    const size_t ld_logits = ((size_t)n_max + 3) / 4 * 4;
    const size_t per_token = (size_t)Hp * 128 * 2 + (size_t)Hp * 4 + ld_logits * 4;
    int Tsub = (int)(INDEXER_SCRATCH_BYTES / per_token);
    if (Tsub < 1)
        Tsub = 1;
    if (Tsub > T)
        Tsub = T;
    if (Tsub > 65535)
        Tsub = 65535;     // grid y of the score kernel
    uint8_t *scratch = (uint8_t *)cuda_scratch(cb, per_token * (size_t)Tsub + 256);
    if (!scratch)
        return;
    float *logits = (float *)scratch;
    uint16_t *qv = (uint16_t *)(scratch + ld_logits * 4 * (size_t)Tsub);
    float *wh = (float *)(qv + (size_t)Tsub * Hp * 128);

    if (!lay->index_fp8) {
        cuda_fail(cb, -ENOTSUP, "indexer_topk: fp32 index keys (exact numerics) are not a CUDA layout");
        return;
    }
    const float had = 1.0f / sqrtf(128.0f);
    const float head_scale = 1.0f / sqrtf((float)Hi), dim_scale = 1.0f / sqrtf((float)Di);
    const int n_pages_max = (n_max + 63) / 64;
    const int score_threads = 32 * (Hp / 16);
    const bool fp8 = cb->indexer_kernel != DSD_CUDA_INDEXER_BF16;
    // the wgmma scores by default (measured faster at every decode and prefill size on an H100:
    // docs/KERNELS.md), up to KW_MAX_TILES 64-head tiles; FP8 asks for mma.sync
    const bool wg = (cb->indexer_kernel == DSD_CUDA_INDEXER_AUTO || cb->indexer_kernel == DSD_CUDA_INDEXER_WGMMA) &&
                    Hp <= 64 * KW_MAX_TILES;
    const size_t wg_smem = indexer_wgmma_smem(Hp);
    const size_t score_smem = fp8 ? 2 * KS8_STAGE + (size_t)(Hp / 16) * 64 * 4
                                  : 64 * KS_LD * 2 + 64 * 4 + (size_t)(Hp / 16) * 64 * 4;
    if (score_smem > 48 * 1024 &&
        !CU_OK(cb, fp8 ? cudaFuncSetAttribute(indexer_score_fp8_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)score_smem)
                       : cudaFuncSetAttribute(indexer_score_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)score_smem)))
        return;
    if (wg && !CU_OK(cb, cudaFuncSetAttribute(indexer_score_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)wg_smem)))
        return;
    // pages per CTA of the FP8 kernel: few when a step has few tokens (decode), so that a long
    // context still spreads over every SM; more for prefill, where tokens fill the grid
    const int ppc = T >= 64 ? 8 : 2;
    for (int t0 = 0; t0 < T; t0 += Tsub) {
        const int n = T - t0 < Tsub ? T - t0 : Tsub;
        const int warps = n * Hp, threads = 256;
        indexer_q_prep_kernel<<<(warps * 32 + threads - 1) / threads, threads, 0, cb->stream>>>(
            (const uint16_t *)q + (size_t)t0 * Hi * 128, w + (size_t)t0 * Hi, Hi, Hp, n,
            be->dims.act_scale_ue8m0, had, head_scale, dim_scale, qv, fp8 ? (uint8_t *)qv : NULL, wh);
        if (!CU_LAUNCHED(cb))
            return;
        if (n_max > topk && wg) {
            dim3 grid((n_pages_max + ppc - 1) / ppc, n);
            indexer_score_wgmma_kernel<<<grid, 128, wg_smem, cb->stream>>>(
                (const uint8_t *)qv, wh, Hp, kv->index, lay->index_page_bytes, st->pos, st->seq, st->page_off,
                st->pages, t0, st->max_pos, topk, ppc, logits, ld_logits);
            if (!CU_LAUNCHED(cb))
                return;
        } else if (n_max > topk && fp8) {
            dim3 grid((n_pages_max + ppc - 1) / ppc, n);
            indexer_score_fp8_kernel<<<grid, score_threads, score_smem, cb->stream>>>(
                (const uint8_t *)qv, wh, Hp, kv->index, lay->index_page_bytes, st->pos, st->seq, st->page_off,
                st->pages, t0, st->max_pos, topk, ppc, logits, ld_logits);
            if (!CU_LAUNCHED(cb))
                return;
        } else if (n_max > topk) {
            dim3 grid((n_pages_max + SCORE_PAGES_PER_CTA - 1) / SCORE_PAGES_PER_CTA, n);
            indexer_score_kernel<<<grid, score_threads, score_smem, cb->stream>>>(
                qv, wh, Hp, kv->index, lay->index_page_bytes, st->pos, st->seq, st->page_off,
                st->pages, t0, st->max_pos, topk, logits, ld_logits);
            if (!CU_LAUNCHED(cb))
                return;
        }
        // few tokens (decode): each row's keys cached in shared memory, up to 96 KB
        const int cache_cap = n < cb->sms ? (n_max < SELECT_CACHE_MAX ? n_max : SELECT_CACHE_MAX) : 0;
        const size_t sel_smem = (size_t)cache_cap * sizeof(uint32_t);
        if (sel_smem > 48 * 1024 &&
            !CU_OK(cb, cudaFuncSetAttribute(indexer_select_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)sel_smem)))
            return;
        if (cache_cap)
            indexer_select_kernel<true><<<n, SELECT_THREADS, sel_smem, cb->stream>>>(logits, ld_logits, st->pos, t0,
                                                                                     st->max_pos, topk, out, cache_cap);
        else
            indexer_select_kernel<false><<<n, SELECT_THREADS, 0, cb->stream>>>(logits, ld_logits, st->pos, t0,
                                                                               st->max_pos, topk, out, 0);
        if (!CU_LAUNCHED(cb))
            return;
    }
}

extern "C" void dsd_backend_cuda_set_indexer_kernel(struct dsd_backend *be, enum dsd_cuda_indexer_kernel k)
{
    cuda(be)->indexer_kernel = k;
}
