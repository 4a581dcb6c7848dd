// kernels/cuda/cuda_attn_wg.h: pieces the two warpgroup-MMA attention engines share
// (cuda_attn_wgmma.cu, cuda_attn_ws.cu): loading a head group's query tile into the SW128
// layout, and writing o_lat = O / l from the accumulator layout. CUDA C++ only.
#ifndef DSD_CUDA_ATTN_WG_H
#define DSD_CUDA_ATTN_WG_H

#include <stdint.h>

#include "cuda_attn_tile.h"
#include "cuda_attn_util.h"
#include "cuda_wgmma.h"

namespace dsd_attn_wg {

// Rows r < 64 of the query tile of token tt, heads h0 + r: [q_abs (L) | q_pe (R)], zero rows
// at or past H, into Qs (SW128, 64 rows, E = L + R columns), in 4-byte pieces by threads
// tid = 0 .. nthreads - 1. The caller publishes it (proxy fence and a barrier).
__device__ __forceinline__ void load_q_words(uint8_t *Qs, const mla_tile_args &a, int tt, int h0, int L, int tid,
                                             int nthreads)
{
    const int E = L + a.R, NR = a.N + a.R;
    for (int i = tid; i < 64 * (E / 2); i += nthreads) {
        const int r = i / (E / 2), c = 2 * (i % (E / 2)), h = h0 + r;
        uint32_t v = 0;
        if (h < a.H)
            v = c < L ? *reinterpret_cast<const uint32_t *>(a.qabs + ((size_t)tt * a.H + h) * L + c)
                      : *reinterpret_cast<const uint32_t *>(a.q + (size_t)tt * a.H * NR + (size_t)h * NR + a.N +
                                                            (c - L));
        *reinterpret_cast<uint32_t *>(Qs + dsd_wgmma::sw128(r, c, 64)) = v;
    }
}

// o_lat[tt][h0 + row][col0 ..] = O / l for this thread's rows row0 and row0 + 8, from an
// m64nNk16 accumulator o[NO] (register 4i + x: row row0 + 8 (x >> 1), column col0 + 8i +
// 2 q4 + (x & 1)); ls[row] + ls[64 + row] is the row's sum (both warpgroups' parts). Rows at
// or past H are not written.
template <int NO>
__device__ __forceinline__ void store_olat(const mla_tile_args &a, const float (&o)[NO], const float *ls, int L, int tt,
                                           int h0, int row0, int q4, int col0)
{
    using namespace dsd_attn;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int row = row0 + 8 * hf, h = h0 + row;
        if (h >= a.H)
            continue;
        const float l = ls[row] + ls[64 + row];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        uint16_t *dst = a.olat + ((size_t)tt * a.H + h) * L + col0 + 2 * q4;
#pragma unroll
        for (int i = 0; i < NO / 4; i++)
            *reinterpret_cast<uint32_t *>(dst + 8 * i) =
                pack_bf16(f32_to_bf16_bits(o[4 * i + 2 * hf] * inv), f32_to_bf16_bits(o[4 * i + 2 * hf + 1] * inv));
    }
}

} // namespace dsd_attn_wg

#endif
