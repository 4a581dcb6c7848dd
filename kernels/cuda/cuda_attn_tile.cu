// Sparse MLA attention for many query tokens (prefill, and decode of large batches): the
// head-tiled kernel that cuda_attention.cu's cuda_op_mla_attention picks when a step has
// enough tokens (the choice and its rule are there; the design and its floors are in
// docs/KERNELS.md).
//
// Why a second kernel: the per-token kernel (mla_attn_kernel) dequantizes each selected FP8
// entry once per (token, 32 heads), so at prefill every entry is converted 4 x (tokens that
// select it) times and the conversion, not the tensor cores, sets the pace (~31 TFLOP/s). Here
//   1. an FP8 cache's entries are dequantized ONCE into a bf16 buffer [rows][L + R], either
//      one row per position of each sequence's page table (mla_dequant_rows_kernel, indexed by
//      the flat page-table index: prefill, where a chunk's tokens select mostly the same
//      entries) or one row per (token, selection slot) (mla_dequant_selected_kernel: decode,
//      where every token has its own long context and dequantizing its pages would cost more
//      than its selection); whichever is fewer rows. A bf16 cache is read in place (same row
//      format, through the page table);
//   2. one CTA per (token, 64 heads) walks its selection 64 entries at a time: the block's rows
//      are gathered with cp.async into shared memory (double-buffered: block b + 1 lands while
//      block b is computed), S = q . entry on the tensor cores, online softmax in fp32 with the
//      probabilities rounded to bf16, O += P V. Each entry row is read from L2 once per CTA and
//      reused by 64 heads.
// Numerics are the per-token kernel's (docs/NUMERICS.md): bf16 entries exactly as its loader
// makes them, sm_scale applied to the fp32 score, p = bf16(exp(s - m)), l sums the rounded p,
// o_lat = O / l rounded to bf16; only the fp32 summation order differs.
//
// Warp layout (8 warps): row group rg = warp / 4 owns heads rg*32 .. +31 (two m16 tiles),
// quarter qd = warp % 4 owns entries qd*16 .. +15 of the block for S and latent columns
// qd*L/4 .. for O. The four warps of a row group exchange row maxima and P through shared
// memory behind a named barrier of their own; the whole CTA meets once per block (the
// stage it is about to overwrite is free).
//
// Shared memory (L = 512, R = 64: rows of 576 bf16): Q 64 rows, two stages of 64 entry rows,
// P 64 x 64, row-max exchange 4 x 64 floats: 230,416 bytes of the 232,448 a Hopper CTA may
// have. Rows are XOR-swizzled in 16-byte chunks (chunk ^ row % 8) so the 8 row addresses of
// every ldmatrix fall in distinct banks without padding (padding would not fit).
#include <math.h>
#include <stdint.h>

#include "cuda_attn_tile.h"
#include "cuda_attn_util.h"

using namespace dsd_attn;

#define TL_HEADS 64
#define TL_BLOCK 64
#define TL_THREADS 256

namespace {

// element (r, c) of a swizzled tile whose rows are rs elements (rs a multiple of 64)
__device__ __forceinline__ int swz(int r, int c, int rs)
{
    return r * rs + ((((c >> 3) ^ r) & 7) | ((c >> 3) & ~7)) * 8 + (c & 7);
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *smem_row)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// the 128 threads of one row group
__device__ __forceinline__ void group_barrier(int rg)
{
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + rg) : "memory");
}

template <int LT>   // L = 128 * LT
__global__ void __launch_bounds__(TL_THREADS, 1) mla_tile_kernel(const mla_tile_args a)
{
    constexpr int L = 128 * LT;
    constexpr int NTW = L / 32;         // 8-column n-tiles of O per warp
    const int R = a.R, E = L + R, RS = (E + 63) / 64 * 64, CH = E / 8;
    extern __shared__ __align__(128) uint8_t smem[];
    uint16_t *Qs = reinterpret_cast<uint16_t *>(smem);                 // [64][RS]
    uint16_t *Ks = Qs + TL_HEADS * RS;                                  // [2][64][RS]
    uint16_t *Ps = Ks + 2 * TL_BLOCK * RS;                              // [64][64]
    float *red = reinterpret_cast<float *>(Ps + TL_HEADS * TL_BLOCK);  // [4][64]
    int *n_s = reinterpret_cast<int *>(red + 4 * TL_HEADS);

    const int hg = blockIdx.x, tt = blockIdx.y, t = a.t0 + tt;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
    const int rg = warp >> 2, qd = warp & 3;
    const int32_t *sel = a.sel + (size_t)tt * a.topk;
    const int s_id = a.seq[t];
    const int fp0 = a.page_off[s_id];
    const int n_pos = (a.page_off[s_id + 1] - fp0) * 64;

    const int n = mla_selection_len(sel, a.topk, n_s, tid, TL_THREADS), nb = (n + TL_BLOCK - 1) / TL_BLOCK;

    // gather block b's entry rows into stage st: 4 threads per entry, 16-byte chunks
    auto issue = [&](int b, int st) {
        const int e = tid >> 2, part = tid & 3, j = b * TL_BLOCK + e;
        const int p = j < n ? sel[j] : -1;
        const bool valid = p >= 0 && p < n_pos;
        const uint8_t *row = valid ? mla_src_row(a, tt, j, fp0, p) : a.src;
        uint16_t *dst = Ks + st * TL_BLOCK * RS;
        for (int c = part; c < CH; c += 4)
            cp_async16(dst + swz(e, 8 * c, RS), row + 16 * c, valid);
        cp_async_commit();
    };
    if (nb > 0)
        issue(0, 0);

    // q rows of this head group: [q_abs (L) | q_pe (R)], zero rows past H
    const int NR = a.N + R;
    for (int i = tid; i < TL_HEADS * (E / 2); i += TL_THREADS) {
        const int r = i / (E / 2), c = 2 * (i % (E / 2)), h = hg * TL_HEADS + r;
        uint32_t v = 0;
        if (h < a.H)
            v = c < L ? *reinterpret_cast<const uint32_t *>(a.qabs + ((size_t)tt * a.H + h) * L + c)
                      : *reinterpret_cast<const uint32_t *>(a.q + (size_t)tt * a.H * NR + (size_t)h * NR + a.N +
                                                            (c - L));
        *reinterpret_cast<uint32_t *>(Qs + swz(r, c, RS)) = v;
    }

    float o[2][NTW][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int i = 0; i < NTW; i++)
            o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    // per thread: rows rg*32 + mt*16 + g + 8*hf, index 2*mt + hf
    float m_run[4] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    float l_run[4] = { 0.0f, 0.0f, 0.0f, 0.0f };

    for (int b = 0; b < nb; b++) {
        cp_async_wait_all();
        __syncthreads();    // block b visible to all; block b - 1's stage is free
        if (b + 1 < nb)
            issue(b + 1, (b + 1) & 1);
        const uint16_t *K = Ks + (b & 1) * TL_BLOCK * RS;

        // S[32 rows][16 entries] = Q K^T over E
        float s[2][2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
                s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
        {
            const int arow = rg * 32 + (lane & 15), acol = (lane >> 4) * 8;
            const int brow = qd * 16 + (lane & 7) + ((lane >> 4) & 1) * 8, bcol = ((lane >> 3) & 1) * 8;
            for (int k0 = 0; k0 < E; k0 += 16) {
                uint32_t a0[4], a1[4], bb[4];
                ldmatrix_x4(a0, Qs + swz(arow, k0 + acol, RS));
                ldmatrix_x4(a1, Qs + swz(arow + 16, k0 + acol, RS));
                ldmatrix_x4(bb, K + swz(brow, k0 + bcol, RS));
                mma_bf16(s[0][0], a0, bb[0], bb[1]);
                mma_bf16(s[0][1], a0, bb[2], bb[3]);
                mma_bf16(s[1][0], a1, bb[0], bb[1]);
                mma_bf16(s[1][1], a1, bb[2], bb[3]);
            }
        }
        // scale, mask, this quarter's row maxima
        bool ok[2][2];
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int x = 0; x < 2; x++) {
                const int j = b * TL_BLOCK + qd * 16 + nt * 8 + 2 * q4 + x;
                const int p = j < n ? sel[j] : -1;
                ok[nt][x] = p >= 0 && p < n_pos;
            }
        float mx[4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                float v = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < 2; nt++)
#pragma unroll
                    for (int x = 0; x < 2; x++) {
                        float &sv = s[mt][nt][2 * hf + x];
                        sv = ok[nt][x] ? a.sm_scale * sv : -INFINITY;
                        v = fmaxf(v, sv);
                    }
                mx[2 * mt + hf] = quad_max(v);
            }
        if (q4 == 0)
#pragma unroll
            for (int i = 0; i < 4; i++)
                red[qd * TL_HEADS + rg * 32 + (i >> 1) * 16 + g + 8 * (i & 1)] = mx[i];
        group_barrier(rg);
        float alpha[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int row = rg * 32 + (i >> 1) * 16 + g + 8 * (i & 1);
            float m_new = m_run[i];
#pragma unroll
            for (int q = 0; q < 4; q++)
                m_new = fmaxf(m_new, red[q * TL_HEADS + row]);
            alpha[i] = m_new == -INFINITY ? 1.0f : expf(m_run[i] - m_new);
            mx[i] = m_new;
            m_run[i] = m_new;
        }
        // P = bf16(exp(s - m)) into shared memory; this quarter's row sums
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int i = 2 * mt + hf, row = rg * 32 + mt * 16 + g + 8 * hf;
                float sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    uint16_t pb[2];
#pragma unroll
                    for (int x = 0; x < 2; x++) {
                        const float p = mx[i] == -INFINITY ? 0.0f : round_bf16(expf(s[mt][nt][2 * hf + x] - mx[i]));
                        sum += p;
                        pb[x] = f32_to_bf16_bits(p);
                    }
                    *reinterpret_cast<uint32_t *>(Ps + swz(row, qd * 16 + nt * 8 + 2 * q4, TL_BLOCK)) =
                        pack_bf16(pb[0], pb[1]);
                }
                l_run[i] = l_run[i] * alpha[i] + quad_sum(sum);
            }
        group_barrier(rg);

        // O = O * alpha + P V over this quarter's latent columns
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int i = 0; i < NTW; i++) {
                o[mt][i][0] *= alpha[2 * mt];
                o[mt][i][1] *= alpha[2 * mt];
                o[mt][i][2] *= alpha[2 * mt + 1];
                o[mt][i][3] *= alpha[2 * mt + 1];
            }
        {
            const int arow = rg * 32 + (lane & 15), acol = (lane >> 4) * 8;
            const int vrow = (lane & 7) + ((lane >> 3) & 1) * 8, vcol = qd * (L / 4) + (lane >> 4) * 8;
#pragma unroll
            for (int k0 = 0; k0 < TL_BLOCK; k0 += 16) {
                uint32_t a0[4], a1[4];
                ldmatrix_x4(a0, Ps + swz(arow, k0 + acol, TL_BLOCK));
                ldmatrix_x4(a1, Ps + swz(arow + 16, k0 + acol, TL_BLOCK));
#pragma unroll
                for (int np = 0; np < NTW / 2; np++) {
                    uint32_t bb[4];
                    ldmatrix_x4_trans(bb, K + swz(k0 + vrow, vcol + np * 16, RS));
                    mma_bf16(o[0][2 * np], a0, bb[0], bb[1]);
                    mma_bf16(o[0][2 * np + 1], a0, bb[2], bb[3]);
                    mma_bf16(o[1][2 * np], a1, bb[0], bb[1]);
                    mma_bf16(o[1][2 * np + 1], a1, bb[2], bb[3]);
                }
            }
        }
    }

    // l = the four quarters' sums; o_lat = O / l
    __syncthreads();
    if (q4 == 0)
#pragma unroll
        for (int i = 0; i < 4; i++)
            red[qd * TL_HEADS + rg * 32 + (i >> 1) * 16 + g + 8 * (i & 1)] = l_run[i];
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int row = rg * 32 + mt * 16 + g + 8 * hf, h = hg * TL_HEADS + row;
            if (h >= a.H)
                continue;
            const float l = red[row] + red[TL_HEADS + row] + red[2 * TL_HEADS + row] + red[3 * TL_HEADS + row];
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            uint16_t *dst = a.olat + ((size_t)tt * a.H + h) * L + qd * (L / 4) + 2 * q4;
#pragma unroll
            for (int i = 0; i < NTW; i++)
                *reinterpret_cast<uint32_t *>(dst + i * 8) = pack_bf16(f32_to_bf16_bits(o[mt][i][2 * hf] * inv),
                                                                     f32_to_bf16_bits(o[mt][i][2 * hf + 1] * inv));
        }
}

// one FP8 entry [L e4m3 | L/128 fp32 scales | R bf16] dequantized to [L bf16 | R bf16] by
// one warp, each latent value bf16(e4m3 * scale) as the per-token kernel's loader makes it
__device__ __forceinline__ void dequant_entry(const uint8_t *__restrict__ e, uint16_t *__restrict__ dst, int L, int R,
                                              int lane)
{
    const float *sc = reinterpret_cast<const float *>(e + L);
    for (int w = lane; w < L / 4; w += 32) {
        const uint32_t raw = *reinterpret_cast<const uint32_t *>(e + 4 * w);
        const float s = sc[w / 32];
        uint16_t v[4];
        for (int x = 0; x < 4; x++)
            v[x] = f32_to_bf16_bits(e4m3_to_f32((uint8_t)(raw >> (8 * x))) * s);
        *reinterpret_cast<uint2 *>(dst + 4 * w) = make_uint2(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]));
    }
    const uint32_t *pe = reinterpret_cast<const uint32_t *>(e + L + 4 * (L / 128));
    for (int w = lane; w < R / 2; w += 32)
        *reinterpret_cast<uint32_t *>(dst + L + 2 * w) = pe[w];
}

// row r of the flat page table (r / 64 = its index, r % 64 = the slot), one warp per row
__global__ void mla_dequant_rows_kernel(uint16_t *__restrict__ out, const uint8_t *__restrict__ mla,
                                        size_t entry_bytes, int L, int R, const int32_t *__restrict__ page_off,
                                        int n_seqs, const int32_t *__restrict__ pages, int max_rows)
{
    const int r = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= max_rows || r >= page_off[n_seqs] * 64)
        return;
    dequant_entry(mla + ((long long)pages[r / 64] * 64 + r % 64) * (long long)entry_bytes, out + (size_t)r * (L + R),
                  L, R, lane);
}

// selection slot j of token tt (row tt * topk + j), one warp per row; positions that are not
// cached (-1 padding, past the sequence) are skipped as the tiled kernel skips them
__global__ void mla_dequant_selected_kernel(uint16_t *__restrict__ out, const uint8_t *__restrict__ mla,
                                            size_t entry_bytes, int L, int R, const int32_t *__restrict__ sel,
                                            int topk, int rows, int t0, const int32_t *__restrict__ seq,
                                            const int32_t *__restrict__ page_off, const int32_t *__restrict__ pages)
{
    const long long r = (long long)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows)
        return;
    const int tt = (int)(r / topk), p = sel[r], s_id = seq[t0 + tt], fp0 = page_off[s_id];
    if (p < 0 || p >= (page_off[s_id + 1] - fp0) * 64)
        return;
    dequant_entry(mla + ((long long)pages[fp0 + p / 64] * 64 + p % 64) * (long long)entry_bytes,
                  out + (size_t)r * (L + R), L, R, lane);
}

template <int LT>
void launch_tile(struct cuda_backend *cb, const mla_tile_args &a, int hgroups, int tokens, size_t smem)
{
    if (!CU_OK(cb, cudaFuncSetAttribute(mla_tile_kernel<LT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid(hgroups, tokens);
    mla_tile_kernel<LT><<<grid, TL_THREADS, smem, cb->stream>>>(a);
    CU_LAUNCHED(cb);
}

} // namespace

size_t cuda_mla_tile_smem(int L, int R)
{
    const size_t rs = (size_t)(L + R + 63) / 64 * 64;
    return (TL_HEADS + 2 * TL_BLOCK) * rs * 2 + TL_HEADS * TL_BLOCK * 2 + 4 * TL_HEADS * 4 + 16;
}

int cuda_mla_tile_heads(void)
{
    return TL_HEADS;
}

void cuda_mla_dequant_rows(struct cuda_backend *cb, uint16_t *out, const uint8_t *mla, size_t entry_bytes, int L,
                           int R, const int32_t *page_off, int n_seqs, const int32_t *pages, int max_rows)
{
    if (max_rows <= 0)
        return;
    const int per_block = 8;
    mla_dequant_rows_kernel<<<(max_rows + per_block - 1) / per_block, 32 * per_block, 0, cb->stream>>>(
        out, mla, entry_bytes, L, R, page_off, n_seqs, pages, max_rows);
    CU_LAUNCHED(cb);
}

void cuda_mla_dequant_selected(struct cuda_backend *cb, uint16_t *out, const uint8_t *mla, size_t entry_bytes, int L,
                               int R, const int32_t *sel, int topk, int tokens, int t0, const int32_t *seq,
                               const int32_t *page_off, const int32_t *pages)
{
    const long long rows = (long long)tokens * topk;
    if (rows <= 0)
        return;
    const int per_block = 8;
    mla_dequant_selected_kernel<<<(unsigned)((rows + per_block - 1) / per_block), 32 * per_block, 0, cb->stream>>>(
        out, mla, entry_bytes, L, R, sel, topk, (int)rows, t0, seq, page_off, pages);
    CU_LAUNCHED(cb);
}

void cuda_mla_tile_attn(struct cuda_backend *cb, const mla_tile_args *a, int L, int tokens)
{
    const int hgroups = (a->H + TL_HEADS - 1) / TL_HEADS;
    const size_t smem = cuda_mla_tile_smem(L, a->R);
    switch (L / 128) {
    case 1: launch_tile<1>(cb, *a, hgroups, tokens, smem); break;
    case 2: launch_tile<2>(cb, *a, hgroups, tokens, smem); break;
    case 3: launch_tile<3>(cb, *a, hgroups, tokens, smem); break;
    default: launch_tile<4>(cb, *a, hgroups, tokens, smem); break;
    }
}
