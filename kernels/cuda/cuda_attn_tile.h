// kernels/cuda/cuda_attn_tile.h: the head-tiled sparse MLA kernel for many query tokens
// (cuda_attn_tile.cu) and the pass that dequantizes a step's FP8 entries for it. CUDA C++
// only: cuda_attention.cu includes it and decides when to use it.
#ifndef DSD_CUDA_ATTN_TILE_H
#define DSD_CUDA_ATTN_TILE_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_backend.h"
#ifdef __CUDACC__
#include "cuda_strided.h"
#endif

enum { MLA_SRC_CACHE, MLA_SRC_PAGES, MLA_SRC_SELECTED, MLA_SRC_FP8 };

struct mla_tile_args {
    const uint16_t *qabs;       // [Tc][H][L]
    const uint16_t *q;          // [Tc][H*(N+R)]
    int H, N, R;
    // bf16 entry rows [L | R], by `src_kind`:
    //   MLA_SRC_CACHE:    a bf16 cache read in place, row of (flat page-table index fp, slot)
    //                     at src + (pages[fp] * 64 + slot) * src_row_bytes
    //   MLA_SRC_PAGES:    cuda_mla_dequant_rows' output, at src + (fp * 64 + slot) * src_row_bytes
    //   MLA_SRC_SELECTED: cuda_mla_dequant_selected's output, selection slot j of token tt
    //                     at src + (tt * topk + j) * src_row_bytes
    //   MLA_SRC_FP8:      not bf16 rows: the FP8 cache itself, entry (pages[fp] * 64 + slot)
    //                     at src + that * src_row_bytes, converted by the warp-specialized
    //                     engine's producer (cuda_mla_ws_attn only)
    const uint8_t *src;
    size_t src_row_bytes;
    int src_kind;
    const int32_t *sel;         // [Tc][topk]
    int topk;
    const int32_t *seq, *page_off, *pages;      // seq indexed by t0 + tt
    int t0;
    float sm_scale;
    uint16_t *olat;             // [Tc][H][L]
};

#ifdef __CUDACC__
// The bf16 row of token tt's selection slot j, cached position p of the sequence whose pages
// start at flat page-table index fp0, wherever a.src_kind keeps it (both engines gather by it).
__device__ __forceinline__ const uint8_t *mla_src_row(const mla_tile_args &a, int tt, int j, int fp0, int p)
{
    long long row;
    if (a.src_kind == MLA_SRC_SELECTED)
        row = (long long)tt * a.topk + j;
    else
        row = (a.src_kind == MLA_SRC_CACHE ? (long long)a.pages[fp0 + p / 64] : (long long)(fp0 + p / 64)) * 64 + p % 64;
    return a.src + row * (long long)a.src_row_bytes;
}

// The length of a token's selection: up to its first -1 (as the CPU's), found by the whole
// CTA (nthreads threads) through *n_s in shared memory, 8 entries per thread read before any
// is tested (a decode CTA walks one chunk, and a chain of dependent rounds here costs as much
// as its work). Contains two __syncthreads.
__device__ __forceinline__ int mla_selection_len(const int32_t *sel, int topk, int *n_s, int tid, int nthreads)
{
    if (tid == 0)
        *n_s = topk;
    __syncthreads();
    strided_pass<8>(tid, topk, nthreads, [&](int i) { return sel[i]; }, [&](int i, int32_t p) {
        if (p < 0)
            atomicMin(n_s, i);
    });
    __syncthreads();
    return *n_s;
}
#endif

// Shared memory one CTA needs (compare with the device's opt-in limit).
size_t cuda_mla_tile_smem(int L, int R);
// Heads one CTA computes.
int cuda_mla_tile_heads(void);
// out[r] = the FP8 entry of flat page-table row r (r / 64 = index into pages, r % 64 = slot),
// dequantized to bf16 [L | R], for r < min(max_rows, page_off[n_seqs] * 64). Enqueued.
void cuda_mla_dequant_rows(struct cuda_backend *cb, uint16_t *out, const uint8_t *mla, size_t entry_bytes, int L,
                           int R, const int32_t *page_off, int n_seqs, const int32_t *pages, int max_rows);
// out[t * topk + j] = the FP8 entry that token t0 + t selected in slot j, dequantized as
// above, for t < tokens and every j whose position is cached (others are left as they are:
// the tiled kernel never reads them). sel is [tokens][topk]. Enqueued.
void cuda_mla_dequant_selected(struct cuda_backend *cb, uint16_t *out, const uint8_t *mla, size_t entry_bytes, int L,
                               int R, const int32_t *sel, int topk, int tokens, int t0, const int32_t *seq,
                               const int32_t *page_off, const int32_t *pages);
// o_lat of `tokens` tokens (a->t0 ..), L = 128, 256, 384 or 512. Enqueued; failures recorded.
void cuda_mla_tile_attn(struct cuda_backend *cb, const mla_tile_args *a, int L, int tokens);

// The same computation on Hopper's warpgroup MMA (cuda_attn_wgmma.cu): same arguments, same
// CTA per (token, cuda_mla_tile_heads() heads); takes L = 128 .. 512 in steps of 128 with
// (L + R) % 16 == 0 (cuda_mla_wgmma_ok), and cuda_mla_wgmma_smem bytes of shared memory.
bool cuda_mla_wgmma_ok(int L, int R);
size_t cuda_mla_wgmma_smem(int L, int R);
void cuda_mla_wgmma_attn(struct cuda_backend *cb, const mla_tile_args *a, int L, int tokens);

// The same computation warp-specialized (cuda_attn_ws.cu): a producer warpgroup gathers, two
// consumer warpgroups take alternate blocks. Same shapes as the wgmma engine.
bool cuda_mla_ws_ok(int L, int R);
size_t cuda_mla_ws_smem(int L, int R);
// Whether the same engine can read an FP8 cache in place (a.src_kind = MLA_SRC_FP8): its
// shapes with R <= 64.
bool cuda_mla_ws_fp8_ok(int L, int R);
void cuda_mla_ws_attn(struct cuda_backend *cb, const mla_tile_args *a, int L, int tokens);

#endif
