// Sparse MLA attention for many query tokens, warp-specialized on Hopper (sm_90a): the third
// engine of the head-tiled kernel (cuda_attn_wgmma.cu has the second; cuda_attention.cu
// picks). Same arguments, same CTA per (token, 64 heads), same gathered bf16 entry rows.
//
// Why a third engine: under ncu the two-warpgroup wgmma kernel kept the tensor cores ~35 %
// busy at prefill: both warpgroups computed half of each block's scores, met twice per
// 64-entry block at CTA-wide barriers, waited for each wgmma before the softmax, and issued
// their own gathers (docs/KERNELS.md, "Sparse MLA"). Here the work of a block is split so
// that one warpgroup's softmax runs while the other's matrix products do:
//
//   producer warpgroup (WG2, 80 registers): gathers block b's entry rows into stage b % 2
//     with cp.async (warps 0-1 stage 0, warps 2-3 stage 1), in two halves per stage (columns
//     [0, L/2) and [L/2, L + R)); each half has a "full" mbarrier (the copies landed; the
//     left half also publishes the block's valid flags) and an "empty" one (its readers are
//     done). Consumers read no selection from global memory.
//   WG0 takes the even blocks, WG1 the odd ones; each computes its block's scores for all 64
//     heads, S = Q K^T over L + R columns (m64n64k16 over both halves).
//   the running row maximum is handed along WG0 -> WG1 through shared memory with named
//     barriers: m0 = max(m, rowmax S_even), m1 = max(m0, rowmax S_odd), so both blocks of a
//     pair end relative to the same m1.
//   O = P V is split by columns: WG0 owns latent columns [0, L/2), WG1 [L/2, L). Each feeds
//     its own block's P to wgmma from registers (the score accumulators, rounded to bf16, are
//     already in the A-operand layout) and reads the other's P from a shared 64 x 64 tile,
//     rescaling O between the two products (WG0's P is relative to m0, WG1's to m1).
// Every P is bf16(exp(s - m)) as in the other engines; the maximum it is taken against is the
// running one over pairs of blocks (128 entries) rather than one block, so roundings differ
// from the other engines by bf16 ulps, not in kind. l is the sum of the rounded P values.
//
// Shared memory (SW128 tiles of 8 KB, cuda_wgmma.h; CB = (L + R + 63) / 64 column blocks):
// Q (CB tiles), two stages (2 CB), WG1's P tile; WG0's P tile lives in stage 0's first rope
// column block (read only by S, which is done by then; refilled only after WG1's P V read
// it), or in one more tile when R = 0. For L = 512, R = 64: 28 tiles = 229,376 bytes plus the
// barriers and row statistics, within the 232,448 a Hopper CTA may have.
#include <math.h>
#include <stdint.h>

#include "cuda_attn_tile.h"
#include "cuda_attn_util.h"
#include "cuda_attn_wg.h"
#include "cuda_wgmma.h"

using namespace dsd_attn;
using namespace dsd_wgmma;

#define WS_HEADS 64
#define WS_BLOCK 64
#define WS_THREADS 384
#define WS_CONSUMERS 256
#define WS_TILE (64 * 128)

namespace {

// named barriers among the 256 consumer threads
enum { BAR_Q = 1, BAR_M0, BAR_M1, BAR_S0, BAR_S1, BAR_L };

struct ws_layout {
    int tiles;          // 8 KB tiles before the small fields
    size_t bytes;       // dynamic shared memory to ask for
};

__host__ __device__ inline ws_layout ws_layout_of(int L, int R)
{
    const int cb = (L + R + 63) / 64;
    ws_layout s;
    s.tiles = 3 * cb + 1 + (R == 0);
    // 8 mbarriers, m0[64], m1[64], l[2][64], n, valid flags [2][64]
    s.bytes = (size_t)s.tiles * WS_TILE + 8 * 8 + 4 * WS_HEADS * 4 + 16 + 2 * WS_BLOCK + 1024;
    return s;
}

// ---- the producer of FP8 entries (attn_tile = ws-fp8) ------------------------------------
// The cached entry is [L e4m3 | L/128 fp32 scales | R bf16] (656 bytes at V3.2), the row the
// consumers read [L | R] bf16 (1,152). Instead of a pass that dequantizes rows into a buffer
// for cp.async to gather, the producer loads the FP8 entries into registers, converts them
// (bf16(e4m3 * scale), the dequantization pass's rounding) and stores the swizzled bf16 tile
// itself: 57 % of the bytes through L2, no pass before the kernel, and the loads of the next
// rows are issued before the stage they go to is free, so their latency passes under the
// consumers' products instead of after them.
//
// A stage's 64 threads take 16 rows at a time, 4 lanes per row (each lane 16-byte pieces
// lane4, lane4 + 4, ...: a row's 4 lanes read 64 contiguous bytes), so a thread owns rows
// pt/4 + 16m, m = 0..3, and LT 16-byte pieces of each half of each (lane4 + 4k, k < LT). One
// "round" is PR of them of one (half, row) (PR = 2, or LT when LT is odd); a block is 8 LT / PR
// rounds, the left half of the 4 rows first, double-buffered in registers: round k + 1's
// loads are in flight while round k is converted and stored. The rope columns are bf16
// already: they go by cp.async (R <= 64: at most two 16-byte pieces per lane), so the right
// half's "full" barrier counts each thread twice (its stores, and its copies landing). Registers are what bounds this design: the producer has 88
// (the consumers keep 208; at 200 they spill), and rounds of 4 pieces, or a rope piece in the
// round buffers, made ptxas spill.
template <int LT>
struct fp8_round {
    static constexpr int PR = LT % 2 ? LT : 2;     // pieces per round
    uint4 d[PR];        // latent pieces (16 e4m3 each)
    float s[2];         // their scales: piece k's is s[scale_slot(h, k0, k)]
};

// Piece k of half h starts at column h * L/2 + 16 (lane4 + 4k), within 64-column run
// h * LT + k, so its 128-column scale group is (h * LT + k) / 2. A round's pieces k0 ..
// k0 + PR - 1 touch at most two groups; the slot of piece k's scale among them:
template <int LT>
__device__ __forceinline__ int scale_slot(int h, int k0, int k)
{
    return ((h * LT + k) >> 1) - ((h * LT + k0) >> 1);
}

// 16 bytes from an address that is 16-byte aligned (al16) or only 4-byte aligned
__device__ __forceinline__ uint4 ld16(const uint8_t *p, bool al16)
{
    if (al16)
        return __ldg(reinterpret_cast<const uint4 *>(p));
    const uint32_t *w = reinterpret_cast<const uint32_t *>(p);
    return make_uint4(__ldg(w), __ldg(w + 1), __ldg(w + 2), __ldg(w + 3));
}

// two e4m3 (low byte first) times s as a bf16x2 word: bf16(f32(e4m3) * s), each rounded to
// nearest even as dequant_entry does (the e4m3 -> f16 -> f32 steps are exact)
__device__ __forceinline__ uint32_t e4m3x2_bf16x2(uint32_t two, float s)
{
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(two & 0xffffu), __NV_E4M3);
    const __nv_bfloat162 b = __floats2bfloat162_rn(__half2float(__half(__half_raw{h.x})) * s,
                                                   __half2float(__half(__half_raw{h.y})) * s);
    return *reinterpret_cast<const uint32_t *>(&b);
}

template <int LT>
__device__ __forceinline__ void fp8_producer(const mla_tile_args &a, const int32_t *sel, int n, int nb, int fp0,
                                             int n_pos, int st, int pt, uint8_t *stage, uint64_t *full, uint64_t *empty,
                                             uint8_t *vflag)
{
    constexpr int L = 128 * LT;
    const int R = a.R, EB = (int)a.src_row_bytes, lane4 = pt & 3, rowq = pt >> 2;
    const int ropeq = R / 8;                       // 16-byte rope pieces per row
    const bool al16 = EB % 16 == 0 && (uintptr_t)a.src % 16 == 0;
    const bool rope16 = al16 && (L + L / 32) % 16 == 0;
    // entry index (page * 64 + slot) of each of the thread's rows in block b, -1 if not cached
    auto rows_of = [&](int b, int (&idx)[4]) {
#pragma unroll
        for (int m = 0; m < 4; m++) {
            const int j = b * WS_BLOCK + rowq + 16 * m;
            idx[m] = j < n ? sel[j] : -1;
        }
#pragma unroll
        for (int m = 0; m < 4; m++) {
            const int p = idx[m];
            idx[m] = p >= 0 && p < n_pos ? a.pages[fp0 + p / 64] * 64 + p % 64 : -1;
        }
    };
    constexpr int PR = fp8_round<LT>::PR, SUB = LT / PR, NR = 8 * SUB;
    // loads of round w (half h, row m, pieces k0 ..) of the rows idx into B (zeros for a row
    // that is not cached)
    auto issue = [&](fp8_round<LT> &B, const int (&idx)[4], int w) {
        const int h = w / (4 * SUB), m = (w / SUB) % 4, k0 = (w % SUB) * PR;
        const int e = idx[m];
        const uint8_t *row = a.src + (long long)(e < 0 ? 0 : e) * EB;
#pragma unroll
        for (int k = 0; k < PR; k++) {
            const int col = h * (L / 2) + 16 * (lane4 + 4 * (k0 + k));
            B.d[k] = e >= 0 ? ld16(row + col, al16) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j <= scale_slot<LT>(h, k0, k0 + PR - 1); j++)
            B.s[j] = e >= 0 ? __ldg(reinterpret_cast<const float *>(row + L) + ((h * LT + k0) >> 1) + j) : 0.0f;
    };
    // converts and stores round w of B into the stage (and copies the row's rope pieces with
    // the first round of its right half)
    auto store = [&](const fp8_round<LT> &B, const int (&idx)[4], int w) {
        const int h = w / (4 * SUB), m = (w / SUB) % 4, k0 = (w % SUB) * PR;
        const int r = rowq + 16 * m;
#pragma unroll
        for (int k = 0; k < PR; k++) {
            const int col = h * (L / 2) + 16 * (lane4 + 4 * (k0 + k));
            const uint4 d = B.d[k];
            const float sc = B.s[scale_slot<LT>(h, k0, k0 + k)];
            *reinterpret_cast<uint4 *>(stage + sw128(r, col, 64)) =
                make_uint4(e4m3x2_bf16x2(d.x, sc), e4m3x2_bf16x2(d.x >> 16, sc), e4m3x2_bf16x2(d.y, sc),
                           e4m3x2_bf16x2(d.y >> 16, sc));
            *reinterpret_cast<uint4 *>(stage + sw128(r, col + 8, 64)) =
                make_uint4(e4m3x2_bf16x2(d.z, sc), e4m3x2_bf16x2(d.z >> 16, sc), e4m3x2_bf16x2(d.w, sc),
                           e4m3x2_bf16x2(d.w >> 16, sc));
        }
        if (h == 1 && k0 == 0) {
            const int e = idx[m];
            const uint8_t *rope = a.src + (long long)(e < 0 ? 0 : e) * EB + L + L / 32;
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const int c = lane4 + 4 * k;
                if (c < ropeq) {
                    uint8_t *dst = stage + sw128(r, L + 8 * c, 64);
                    if (rope16) {
                        cp_async16(dst, rope + 16 * c, e >= 0);
                    } else {
#pragma unroll
                        for (int x = 0; x < 4; x++)
                            cp_async4(dst + 4 * x, rope + 16 * c + 4 * x, e >= 0);
                    }
                }
            }
        }
    };

    int cur[4], nxt[4] = { -1, -1, -1, -1 };
    fp8_round<LT> buf[2];
    if (st >= nb)
        return;
    rows_of(st, cur);
    issue(buf[0], cur, 0);
    for (int i = 0, b = st; b < nb; i++, b += 2) {
        const bool more = b + 2 < nb;
#pragma unroll
        for (int w = 0; w < NR; w++) {
            const int h = w / (4 * SUB), m = (w / SUB) % 4, part = w % SUB;
            // the next round's loads first (the next block's first round at the end)
            if (w < NR - 1)
                issue(buf[(w + 1) & 1], cur, w + 1);
            else if (more)
                issue(buf[0], nxt, 0);
            if (w == NR / 4 && more)
                rows_of(b + 2, nxt);    // used by the last round's prefetch
            if (m == 0 && part == 0) {
                // the half is free once its readers of the stage's previous block are done
                if (i > 0)
                    mbar_wait(&empty[h], (i - 1) & 1);
                if (h == 0 && lane4 == 0) {
#pragma unroll
                    for (int q = 0; q < 4; q++)
                        vflag[rowq + 16 * q] = cur[q] >= 0;
                }
            }
            store(buf[w & 1], cur, w);
            if (m == 3 && part == SUB - 1) {
                // the stores (generic proxy) become visible to wgmma (async proxy), then the
                // half is announced; the left half's arrival also releases the valid flags,
                // the right half's barrier also waits for the rope copies
                if (h == 1)
                    cp_async_mbar_arrive(&full[h]);
                proxy_fence();
                mbar_arrive(&full[h]);
            }
        }
#pragma unroll
        for (int m = 0; m < 4; m++)
            cur[m] = nxt[m];
    }
    cp_async_wait_all();
}

template <int LT, bool F8>   // L = 128 * LT; F8: a.src is the FP8 cache (MLA_SRC_FP8)
__global__ void __launch_bounds__(WS_THREADS, 1) mla_ws_kernel(const mla_tile_args a)
{
    constexpr int L = 128 * LT;
    constexpr int NH = L / 2;           // latent columns per consumer warpgroup
    constexpr int NO = NH / 2;          // their accumulators per thread
    constexpr int KSL = NH / 16;        // k16 steps of the left half (columns [0, L/2))
    constexpr int CHL = NH / 8;         // 16-byte chunks of a row's left half
    const int R = a.R, E = L + R, CB = (E + 63) / 64, CH = E / 8, KS = E / 16;
    extern __shared__ uint8_t smem_raw[];
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem_raw);
    uint8_t *sm = smem_raw + ((1024 - (base & 1023)) & 1023);
    uint8_t *Qs = sm;                                   // [CB][64 rows][128 B]
    uint8_t *Ks = Qs + CB * WS_TILE;                    // [2][CB][64 rows][128 B]
    uint8_t *P1s = Ks + 2 * CB * WS_TILE;               // WG1's P [64 heads][64 entries]
    uint8_t *P0s = R > 0 ? Ks + (L / 64) * WS_TILE : P1s + WS_TILE;
    const ws_layout lay = ws_layout_of(L, R);
    uint64_t *full = reinterpret_cast<uint64_t *>(sm + (size_t)lay.tiles * WS_TILE);   // [stage][half]
    uint64_t *empty = full + 4;
    float *m0s = reinterpret_cast<float *>(empty + 4), *m1s = m0s + WS_HEADS, *ls = m1s + WS_HEADS;
    int *n_s = reinterpret_cast<int *>(ls + 2 * WS_HEADS);
    uint8_t *vflag = reinterpret_cast<uint8_t *>(n_s + 4);     // [stage][entry]: selected and cached

    const int hg = blockIdx.x, tt = blockIdx.y, t = a.t0 + tt;
    // the role as a warp-uniform value (a shuffle from lane 0): ptxas then knows every branch
    // on it is uniform and keeps the wgmma pipeline instead of serializing it
    const int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid >> 7, 0);
    const int32_t *sel = a.sel + (size_t)tt * a.topk;
    const int s_id = a.seq[t];
    const int fp0 = a.page_off[s_id];
    const int n_pos = (a.page_off[s_id + 1] - fp0) * 64;

    // A stage's left half (filled first) also carries the block's valid flags: its "full"
    // barrier counts the 8 flag writers' plain arrivals besides one .noinc arrival per
    // producer thread of the stage.
    if (tid == 0) {
        for (int i = 0; i < 4; i++)
            mbar_init(&full[i], F8 ? 64 * (1 + i % 2) : 64 + (i % 2 == 0 ? 8 : 0));
        // readers of each half: stage 0 left = WG0 (S, P V); stage 0 right = WG0 (S) + WG1
        // (P V); stage 1 left = WG1 (S) + WG0 (P V); stage 1 right = WG1 (S, P V)
        mbar_init(&empty[0], 128);
        mbar_init(&empty[1], 256);
        mbar_init(&empty[2], 256);
        mbar_init(&empty[3], 128);
    }
    // (its two __syncthreads also publish the barriers' initialization)
    const int n = mla_selection_len(sel, a.topk, n_s, tid, WS_THREADS);
    const int nb = __shfl_sync(0xffffffffu, (n + WS_BLOCK - 1) / WS_BLOCK, 0), npairs = (nb + 1) / 2;

    if (F8 && wg == 2) {
        // producer of FP8 entries: converts them itself (fp8_producer above)
        regs_dec<88>();
        const int st = (tid - WS_CONSUMERS) >> 6;
        fp8_producer<LT>(a, sel, n, nb, fp0, n_pos, st, tid & 63, Ks + st * CB * WS_TILE, &full[2 * st],
                         &empty[2 * st], vflag + st * WS_BLOCK);
        return;
    }
    if (wg == 2) {
        // producer: warps 0-1 of the warpgroup fill stage 0 (the even blocks), warps 2-3
        // stage 1, so that neither waits for the other's readers. 8 threads per entry row (8
        // rows at a time), 16-byte chunks; the next block's selection is loaded while this
        // one's halves wait for their readers.
        regs_dec<80>();
        const int st = (tid - WS_CONSUMERS) >> 6, pt = tid & 63, e0 = pt >> 3, c0 = pt & 7;
        auto load_sel = [&](int b, int (&ps)[8]) {
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const int j = b * WS_BLOCK + e0 + 8 * k;
                ps[k] = j < n ? sel[j] : -1;
            }
        };
        int cur[8], nxt[8];
        load_sel(st, cur);
        uint8_t *dst = Ks + st * CB * WS_TILE;
        for (int i = 0, b = st; b < nb; i++, b += 2) {
            if (b + 2 < nb)
                load_sel(b + 2, nxt);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (i > 0)
                    mbar_wait(&empty[2 * st + h], (i - 1) & 1);
                const int lo = h ? CHL : 0, hi = h ? CH : CHL;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const int e = e0 + 8 * k, p = cur[k];
                    const bool valid = p >= 0 && p < n_pos;
                    const uint8_t *row = valid ? mla_src_row(a, tt, b * WS_BLOCK + e, fp0, p) : a.src;
                    if (h == 0 && c0 == 0)
                        vflag[st * WS_BLOCK + e] = valid;
#pragma unroll 1
                    for (int c = lo + c0; c < hi; c += 8)
                        cp_async16(dst + sw128(e, 8 * c, 64), row + 16 * c, valid);
                }
                cp_async_mbar_arrive(&full[2 * st + h]);
                if (h == 0 && c0 == 0)
                    mbar_arrive(&full[2 * st + h]);     // releases the flags
            }
#pragma unroll
            for (int k = 0; k < 8; k++)
                cur[k] = nxt[k];
        }
        cp_async_wait_all();
        return;
    }

    regs_inc<208>();
    const int g = wg, w = (tid >> 5) & 3, lane = tid & 31, q4 = lane & 3;
    const int row0 = w * 16 + (lane >> 2);      // this thread's rows: row0, row0 + 8

    // q rows of this head group: [q_abs (L) | q_pe (R)], zero rows past H
    const int NR = a.N + R;
    if (a.N % 8 == 0 && R % 8 == 0 && ((uintptr_t)a.q | (uintptr_t)a.qabs) % 16 == 0) {
        // 16-byte pieces with cp.async (rows past H zero-filled)
        for (int i = tid; i < WS_HEADS * CH; i += WS_CONSUMERS) {
            const int r = i / CH, c = 8 * (i % CH), h = hg * WS_HEADS + r;
            const bool in = h < a.H;
            const uint16_t *src = !in ? a.qabs
                                  : c < L ? a.qabs + ((size_t)tt * a.H + h) * L + c
                                          : a.q + (size_t)tt * a.H * NR + (size_t)h * NR + a.N + (c - L);
            cp_async16(Qs + sw128(r, c, 64), src, in);
        }
        cp_async_commit();
        cp_async_wait_all();
    } else {
        // 4-byte pieces (row offsets that are not 16-byte aligned)
        dsd_attn_wg::load_q_words(Qs, a, tt, hg * WS_HEADS, L, tid, WS_CONSUMERS);
    }
    proxy_fence();
    named_sync(BAR_Q, WS_CONSUMERS);

    float o[NO];
#pragma unroll
    for (int i = 0; i < NO; i++)
        o[i] = 0.0f;
    float m_run[2] = { -INFINITY, -INFINITY }, l_run[2] = { 0.0f, 0.0f };
    uint8_t *K0 = Ks, *K1 = Ks + CB * WS_TILE;
    uint8_t *Kmine = g ? K1 : K0;

    // S = Q K^T of this warpgroup's block, issued one half of the columns at a time
    // (s_issue(h): waits for that half of the stage and commits one wgmma group; the left half
    // also brings the block's valid flags into ok), then s_finish: waits for every group,
    // scales and masks, and returns the row maxima (register s[4i + x]: row row0 + 8 (x >> 1),
    // entry 8i + 2 q4 + (x & 1) of the block).
    uint32_t ok = 0;                        // bit 2i + x: entry 8i + 2 q4 + x is valid
    auto s_issue = [&](float (&s)[32], int h, int par) {
        mbar_wait(&full[2 * g + h], par);
        proxy_fence();
        if (h == 0)
            fence();
        const int j0 = h ? KSL : 0, j1 = h ? KS : KSL;
        for (int j = j0; j < j1; j++) {
            const int off = (j >> 2) * WS_TILE + (j & 3) * 32;
            wgmma_bf16<64, 0>::run(s, desc(Qs + off, 16, 1024), desc(Kmine + off, 16, 1024), h > 0 || j > j0);
        }
        commit();
        if (h == 0) {
            ok = 0;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const uint16_t v = *reinterpret_cast<const uint16_t *>(vflag + g * WS_BLOCK + 8 * i + 2 * q4);
                ok |= (uint32_t)((v & 0xff) != 0) << (2 * i) | (uint32_t)((v >> 8) != 0) << (2 * i + 1);
            }
        }
    };
    auto s_finish = [&](float (&s)[32], float (&mx)[2]) {
        wait<0>();
        pin(s);
        mx[0] = mx[1] = -INFINITY;
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int x = 0; x < 2; x++) {
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    float &sv = s[4 * i + 2 * hf + x];
                    sv = (ok >> (2 * i + x)) & 1 ? a.sm_scale * sv : -INFINITY;
                    mx[hf] = fmaxf(mx[hf], sv);
                }
            }
#pragma unroll
        for (int hf = 0; hf < 2; hf++)
            mx[hf] = quad_max(mx[hf]);
    };
    // P = bf16(exp(s - m)): kept in s (as floats) and packed as the A operand of four k16 steps
    // (pa[kk]); added to the row sums
    auto probs = [&](float (&s)[32], const float (&m)[2], uint32_t (&pa)[4][4]) {
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                uint16_t pb[2];
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    float &sv = s[4 * i + 2 * hf + x];
                    sv = m[hf] == -INFINITY ? 0.0f : round_bf16(expf(sv - m[hf]));
                    l_run[hf] += sv;
                    pb[x] = f32_to_bf16_bits(sv);
                }
                pa[i >> 1][2 * (i & 1) + hf] = pack_bf16(pb[0], pb[1]);
            }
    };
    // P (its bf16 values, kept in s) stored to an SW128 64 x 64 tile
    auto share = [&](const float (&s)[32], uint8_t *dst) {
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
                *reinterpret_cast<uint32_t *>(dst + sw128(row0 + 8 * hf, 8 * i + 2 * q4, 64)) =
                    pack_bf16(f32_to_bf16_bits(s[4 * i + 2 * hf]), f32_to_bf16_bits(s[4 * i + 2 * hf + 1]));
        proxy_fence();
    };
    // O (and with it l, for rescale) times a factor per row
    auto rescale_o = [&](const float (&f)[2]) {
#pragma unroll
        for (int i = 0; i < NO / 4; i++) {
            o[4 * i] *= f[0];
            o[4 * i + 1] *= f[0];
            o[4 * i + 2] *= f[1];
            o[4 * i + 3] *= f[1];
        }
    };
    auto rescale = [&](const float (&f)[2]) {
        rescale_o(f);
        l_run[0] *= f[0];
        l_run[1] *= f[1];
    };
    // O += P V over this warpgroup's columns, P from registers / from a shared tile; V = the
    // stage's entry rows read MN-major
    uint8_t *Vmine0 = K0 + g * LT * WS_TILE, *Vmine1 = K1 + g * LT * WS_TILE;
    // (pa must stay live and unchanged until the wait: pin_regs after it)
    auto pv_regs = [&](uint32_t (&pa)[4][4], const uint8_t *V) {
        fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
            wgmma_bf16_rs<NH>::run(o, pa[kk], desc(V + kk * 16 * 128, WS_TILE, 1024), 1);
        commit();
    };
    auto pv_shared = [&](const uint8_t *P, const uint8_t *V) {
        fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
            wgmma_bf16<NH, 1>::run(o, desc(P + kk * 32, 16, 1024), desc(V + kk * 16 * 128, WS_TILE, 1024), 1);
        commit();
    };

    // Per pair of blocks (2i on WG0, 2i + 1 on WG1), with m0 = max(m, rowmax S_2i) and
    // m1 = max(m0, rowmax S_2i+1):
    //   WG0: S_2i; publish m0; P_2i = bf16(exp(S - m0)) to its shared tile; O *= exp(m - m0);
    //        O += P_2i V_2i (P from registers); wait m1; O *= exp(m0 - m1); O += P_2i+1 V_2i+1.
    //   WG1: S_2i+1; wait m0; publish m1; P_2i+1 = bf16(exp(S - m1)) to its shared tile;
    //        O *= exp(m - m0); O += P_2i V_2i; O *= exp(m0 - m1); O += P_2i+1 V_2i+1 (registers).
    // Both tiles hold P exactly as their owner multiplies it (no second rounding), and both
    // warpgroups' O and l end each pair relative to m1.
    for (int i = 0; i < npairs; i++) {
        const int par = i & 1;
        const bool has1 = 2 * i + 1 < nb;
        float s[32], mx[2], m0[2], m1[2], f[2];
        uint32_t pa[4][4];
        if (g == 0) {
            s_issue(s, 0, par);
            s_issue(s, 1, par);
            s_finish(s, mx);
            mbar_arrive(&empty[1]);                 // stage 0 right: WG0's S is done
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                m0[hf] = fmaxf(m_run[hf], mx[hf]);
                if (q4 == 0)
                    m0s[row0 + 8 * hf] = m0[hf];
                f[hf] = m0[hf] == -INFINITY ? 1.0f : expf(m_run[hf] - m0[hf]);
            }
            named_arrive(BAR_M0, WS_CONSUMERS);
            rescale(f);
            probs(s, m0, pa);
            share(s, P0s);
            named_arrive(BAR_S0, WS_CONSUMERS);
            pv_regs(pa, Vmine0);
            named_sync(BAR_M1, WS_CONSUMERS);
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                m1[hf] = m1s[row0 + 8 * hf];
                f[hf] = m1[hf] == -INFINITY ? 1.0f : expf(m0[hf] - m1[hf]);
                m_run[hf] = m1[hf];
            }
            wait<0>();
            pin(o);
            pin_regs(pa);
            mbar_arrive(&empty[0]);                 // stage 0 left: WG0's S and P V are done
            rescale(f);
            if (has1) {
                named_sync(BAR_S1, WS_CONSUMERS);
                pv_shared(P1s, Vmine1);
                wait<0>();
                pin(o);
                mbar_arrive(&empty[2]);             // stage 1 left: WG0's P V is done
            }
        } else {
            if (has1) {
                s_issue(s, 0, par);
                s_issue(s, 1, par);
                s_finish(s, mx);
                mbar_arrive(&empty[2]);             // stage 1 left: WG1's S is done
            } else {
                mx[0] = mx[1] = -INFINITY;
            }
            named_sync(BAR_M0, WS_CONSUMERS);
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                m0[hf] = m0s[row0 + 8 * hf];
                m1[hf] = fmaxf(m0[hf], mx[hf]);
                if (q4 == 0)
                    m1s[row0 + 8 * hf] = m1[hf];
                l_run[hf] *= m1[hf] == -INFINITY ? 1.0f : expf(m_run[hf] - m1[hf]);
            }
            named_arrive(BAR_M1, WS_CONSUMERS);
            if (has1) {
                probs(s, m1, pa);
                share(s, P1s);
                named_arrive(BAR_S1, WS_CONSUMERS);
            }
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
                f[hf] = m0[hf] == -INFINITY ? 1.0f : expf(m_run[hf] - m0[hf]);
            rescale_o(f);
            named_sync(BAR_S0, WS_CONSUMERS);
            pv_shared(P0s, Vmine0);
            wait<0>();
            pin(o);
            mbar_arrive(&empty[1]);                 // stage 0 right: WG1's P V is done
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                f[hf] = m1[hf] == -INFINITY ? 1.0f : expf(m0[hf] - m1[hf]);
                m_run[hf] = m1[hf];
            }
            rescale_o(f);
            if (has1) {
                pv_regs(pa, Vmine1);
                wait<0>();
                pin(o);
                pin_regs(pa);
                mbar_arrive(&empty[3]);             // stage 1 right: WG1's S and P V are done
            }
        }
    }

    // l = both warpgroups' sums (each relative to the final maximum); o_lat = O / l
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const float l = quad_sum(l_run[hf]);
        if (q4 == 0)
            ls[g * WS_HEADS + row0 + 8 * hf] = l;
    }
    named_sync(BAR_L, WS_CONSUMERS);
    dsd_attn_wg::store_olat(a, o, ls, L, tt, hg * WS_HEADS, row0, q4, g * NH);
}

template <int LT, bool F8>
void launch(struct cuda_backend *cb, const mla_tile_args &a, int hgroups, int tokens, size_t smem)
{
    if (!CU_OK(cb, cudaFuncSetAttribute(mla_ws_kernel<LT, F8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid(hgroups, tokens);
    mla_ws_kernel<LT, F8><<<grid, WS_THREADS, smem, cb->stream>>>(a);
    CU_LAUNCHED(cb);
}

template <bool F8>
void launch_l(struct cuda_backend *cb, const mla_tile_args &a, int L, int hgroups, int tokens, size_t smem)
{
    switch (L / 128) {
    case 1: launch<1, F8>(cb, a, hgroups, tokens, smem); break;
    case 2: launch<2, F8>(cb, a, hgroups, tokens, smem); break;
    case 3: launch<3, F8>(cb, a, hgroups, tokens, smem); break;
    default: launch<4, F8>(cb, a, hgroups, tokens, smem); break;
    }
}

} // namespace

bool cuda_mla_ws_ok(int L, int R)
{
    return cuda_mla_wgmma_ok(L, R);     // the same tiles and MMA shapes
}

size_t cuda_mla_ws_smem(int L, int R)
{
    return ws_layout_of(L, R).bytes;
}

void cuda_mla_ws_attn(struct cuda_backend *cb, const mla_tile_args *a, int L, int tokens)
{
    const int hgroups = (a->H + WS_HEADS - 1) / WS_HEADS;
    const size_t smem = cuda_mla_ws_smem(L, a->R);
    if (a->src_kind == MLA_SRC_FP8)
        launch_l<true>(cb, *a, L, hgroups, tokens, smem);
    else
        launch_l<false>(cb, *a, L, hgroups, tokens, smem);
}

bool cuda_mla_ws_fp8_ok(int L, int R)
{
    return cuda_mla_ws_ok(L, R) && R <= 64;
}
