// Sparse MLA attention for many query tokens on Hopper's warpgroup MMA (wgmma, sm_90a): the
// second engine of the head-tiled kernel (cuda_attn_tile.cu has the first, on mma.sync, and
// the dequantization passes both read from; cuda_attention.cu picks the engine). Same
// arguments, same numerics, same CTA shape: one CTA per (token, 64 heads) walks its
// selection 64 entries at a time, gathering the entries' bf16 rows with cp.async into a
// double-buffered stage.
//
// Why a second engine: the mma.sync kernel feeds every tensor-core instruction from
// registers loaded by ldmatrix, and at prefill it ran at ~160 TFLOP/s on an H100 with the
// shared-memory loads, not the tensor cores, setting its pace. wgmma reads both operands
// straight from shared memory through descriptors, one instruction per 64 x N x 16 block.
//
// Two warpgroups, symmetric:
//   S = Q K^T: warpgroup g computes all 64 heads x entries g*32 .. g*32+31 of the block
//      (m64n32k16 over the E = L + R columns; Q and the entries K-major).
//   softmax: each warpgroup's row maxima over its 32 entries go through shared memory, both
//      take the row maximum of the 64, p = bf16(exp(s - m)) written to P [64 x 64] in shared
//      memory (each its 32 columns), row sums kept per warpgroup.
//   O += P V: warpgroup g owns latent columns g*L/2 .. of all 64 heads (m64n(L/2)k16, P
//      K-major, the same entry rows read as an MN-major B). Its accumulators are the rows its
//      threads hold for S, so the rescale by exp(m_old - m_new) is local.
// At the end l = the two warpgroups' sums, o_lat = O / l rounded to bf16.
//
// Shared memory (SW128 tiles, cuda_wgmma.h; L = 512, R = 64: CB = 9 column blocks of 8 KB):
// Q, two stages of entries, P (one block), the row-max exchange: (3 * CB + 1) * 8 KB + 0.5 KB
// = 230,400 bytes of the 232,448 a Hopper CTA may have (with the 1 KB alignment slack).
// Needs (L + R) % 16 == 0 (k16 steps) and L = 128 * LT, LT <= 4.
#include <math.h>
#include <stdint.h>

#include "cuda_attn_tile.h"
#include "cuda_attn_util.h"
#include "cuda_attn_wg.h"
#include "cuda_wgmma.h"

using namespace dsd_attn;
using namespace dsd_wgmma;

#define WG_HEADS 64
#define WG_BLOCK 64
#define WG_THREADS 256
#define WG_TILE_BYTES (64 * 128)    // one column block of a 64-row SW128 tile

namespace {

template <int LT>   // L = 128 * LT
__global__ void __launch_bounds__(WG_THREADS, 1) mla_wgmma_kernel(const mla_tile_args a)
{
    constexpr int L = 128 * LT;
    constexpr int NH = L / 2;           // latent columns per warpgroup
    constexpr int NO = NH / 2;          // their accumulators per thread
    const int R = a.R, E = L + R, CB = (E + 63) / 64, CH = E / 8, KS = E / 16;
    extern __shared__ uint8_t smem_raw[];
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem_raw);
    uint8_t *sm = smem_raw + ((1024 - (base & 1023)) & 1023);
    uint8_t *Qs = sm;                                   // [CB][64 rows][128 B]
    uint8_t *Ks = Qs + CB * WG_TILE_BYTES;              // [2][CB][64 rows][128 B]
    uint8_t *Ps = Ks + 2 * CB * WG_TILE_BYTES;          // [64 rows][64 entries]
    float *red = reinterpret_cast<float *>(Ps + WG_TILE_BYTES);     // [2][64]
    int *n_s = reinterpret_cast<int *>(red + 2 * WG_HEADS);

    const int hg = blockIdx.x, tt = blockIdx.y, t = a.t0 + tt;
    const int tid = threadIdx.x, g = tid >> 7, w = (tid >> 5) & 3, lane = tid & 31, q4 = lane & 3;
    const int row0 = w * 16 + (lane >> 2);      // this thread's rows: row0, row0 + 8
    const int32_t *sel = a.sel + (size_t)tt * a.topk;
    const int s_id = a.seq[t];
    const int fp0 = a.page_off[s_id];
    const int n_pos = (a.page_off[s_id + 1] - fp0) * 64;

    const int n = mla_selection_len(sel, a.topk, n_s, tid, WG_THREADS), nb = (n + WG_BLOCK - 1) / WG_BLOCK;

    // gather block b's entry rows into stage st: 4 threads per entry, 16-byte chunks
    auto issue = [&](int b, int st) {
        const int e = tid >> 2, part = tid & 3, j = b * WG_BLOCK + e;
        const int p = j < n ? sel[j] : -1;
        const bool valid = p >= 0 && p < n_pos;
        const uint8_t *row = valid ? mla_src_row(a, tt, j, fp0, p) : a.src;
        uint8_t *dst = Ks + st * CB * WG_TILE_BYTES;
        for (int c = part; c < CH; c += 4)
            cp_async16(dst + sw128(e, 8 * c, 64), row + 16 * c, valid);
        cp_async_commit();
    };
    if (nb > 0)
        issue(0, 0);

    // q rows of this head group: [q_abs (L) | q_pe (R)], zero rows past H
    dsd_attn_wg::load_q_words(Qs, a, tt, hg * WG_HEADS, L, tid, WG_THREADS);

    float o[NO];
#pragma unroll
    for (int i = 0; i < NO; i++)
        o[i] = 0.0f;
    float m_run[2] = { -INFINITY, -INFINITY }, l_run[2] = { 0.0f, 0.0f };

    for (int b = 0; b < nb; b++) {
        cp_async_wait_all();
        proxy_fence();      // Q's stores and the stage's cp.async writes are read by wgmma
        __syncthreads();    // block b visible to all; block b - 1's stage and P are free
        if (b + 1 < nb)
            issue(b + 1, (b + 1) & 1);
        const uint8_t *K = Ks + (b & 1) * CB * WG_TILE_BYTES;

        // S[64 heads][32 entries of this warpgroup] = Q K^T over E
        float s[16];
        fence();
#pragma unroll 4
        for (int j = 0; j < KS; j++) {
            const int off = (j >> 2) * WG_TILE_BYTES + (j & 3) * 32;
            wgmma_bf16<32, 0>::run(s, desc(Qs + off, 16, 1024), desc(K + off + g * 32 * 128, 16, 1024), j > 0);
        }
        commit();
        wait<0>();
        pin(s);

        // scale, mask, this warpgroup's row maxima (register s[4i + x]: row row0 + 8 (x >> 1),
        // entry g*32 + 8i + 2 q4 + (x & 1))
        float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int x = 0; x < 2; x++) {
                const int j = b * WG_BLOCK + g * 32 + 8 * i + 2 * q4 + x;
                const int p = j < n ? sel[j] : -1;
                const bool ok = p >= 0 && p < n_pos;
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    float &sv = s[4 * i + 2 * hf + x];
                    sv = ok ? a.sm_scale * sv : -INFINITY;
                    mx[hf] = fmaxf(mx[hf], sv);
                }
            }
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            mx[hf] = quad_max(mx[hf]);
            if (q4 == 0)
                red[g * WG_HEADS + row0 + 8 * hf] = mx[hf];
        }
        __syncthreads();
        float alpha[2];
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int row = row0 + 8 * hf;
            const float m_new = fmaxf(m_run[hf], fmaxf(red[row], red[WG_HEADS + row]));
            alpha[hf] = m_new == -INFINITY ? 1.0f : expf(m_run[hf] - m_new);
            mx[hf] = m_new;
            m_run[hf] = m_new;
        }
        // P = bf16(exp(s - m)) into shared memory; this warpgroup's row sums
        float sum[2] = { 0.0f, 0.0f };
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                uint16_t pb[2];
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    const float p = mx[hf] == -INFINITY ? 0.0f : round_bf16(expf(s[4 * i + 2 * hf + x] - mx[hf]));
                    sum[hf] += p;
                    pb[x] = f32_to_bf16_bits(p);
                }
                *reinterpret_cast<uint32_t *>(Ps + sw128(row0 + 8 * hf, g * 32 + 8 * i + 2 * q4, 64)) =
                    pack_bf16(pb[0], pb[1]);
            }
#pragma unroll
        for (int hf = 0; hf < 2; hf++)
            l_run[hf] = l_run[hf] * alpha[hf] + quad_sum(sum[hf]);
        proxy_fence();
        __syncthreads();

        // O = O * alpha + P V over this warpgroup's latent columns (register o[4i + x]: row
        // row0 + 8 (x >> 1), column g*NH + 8i + 2 q4 + (x & 1))
#pragma unroll
        for (int i = 0; i < NO / 4; i++) {
            o[4 * i] *= alpha[0];
            o[4 * i + 1] *= alpha[0];
            o[4 * i + 2] *= alpha[1];
            o[4 * i + 3] *= alpha[1];
        }
        fence();
#pragma unroll
        for (int kk = 0; kk < WG_BLOCK / 16; kk++)
            wgmma_bf16<NH, 1>::run(o, desc(Ps + kk * 32, 16, 1024),
                                 desc(K + g * (NH / 64) * WG_TILE_BYTES + kk * 16 * 128, WG_TILE_BYTES, 1024), 1);
        commit();
        wait<0>();
        pin(o);
    }

    // l = the two warpgroups' sums; o_lat = O / l
    __syncthreads();
    if (q4 == 0)
#pragma unroll
        for (int hf = 0; hf < 2; hf++)
            red[g * WG_HEADS + row0 + 8 * hf] = l_run[hf];
    __syncthreads();
    dsd_attn_wg::store_olat(a, o, red, L, tt, hg * WG_HEADS, row0, q4, g * NH);
}

template <int LT>
void launch(struct cuda_backend *cb, const mla_tile_args &a, int hgroups, int tokens, size_t smem)
{
    if (!CU_OK(cb, cudaFuncSetAttribute(mla_wgmma_kernel<LT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid(hgroups, tokens);
    mla_wgmma_kernel<LT><<<grid, WG_THREADS, smem, cb->stream>>>(a);
    CU_LAUNCHED(cb);
}

} // namespace

bool cuda_mla_wgmma_ok(int L, int R)
{
    return L % 128 == 0 && L >= 128 && L <= 512 && R >= 0 && (L + R) % 16 == 0;
}

size_t cuda_mla_wgmma_smem(int L, int R)
{
    const size_t cb = (size_t)(L + R + 63) / 64;
    return (3 * cb + 1) * WG_TILE_BYTES + 2 * WG_HEADS * 4 + 16 + 1024;
}

void cuda_mla_wgmma_attn(struct cuda_backend *cb, const mla_tile_args *a, int L, int tokens)
{
    const int hgroups = (a->H + WG_HEADS - 1) / WG_HEADS;
    const size_t smem = cuda_mla_wgmma_smem(L, a->R);
    switch (L / 128) {
    case 1: launch<1>(cb, *a, hgroups, tokens, smem); break;
    case 2: launch<2>(cb, *a, hgroups, tokens, smem); break;
    case 3: launch<3>(cb, *a, hgroups, tokens, smem); break;
    default: launch<4>(cb, *a, hgroups, tokens, smem); break;
    }
}
