// Sparse MLA attention in the absorbed form over the paged KV cache (contract in kernels/ops.h,
// the math of kernels/cpu/cpu_attention.c attention_token, docs/MODEL.md §3.6, §5):
//   1. q_abs[t][h] = W_UK[h]^T q_nope[t][h]          cuBLASLt bf16 GEMM batched over heads,
//                                                    fp32 accumulation, bf16 out (the CPU rounds)
//   2. per (token, 32 heads, split of the selection) one CTA of 8 warps walks the selected
//      entries 64 at a time: each entry is read and dequantized ONCE per CTA into shared memory
//      as bf16 [latent | k_pe] (exact for ue8m0 scales: e4m3 * 2^k fits bf16), S = q . entry by
//      mma.m16n8k16 (warp = 16 heads x 16 entries), online softmax in fp32 (probabilities rounded
//      to bf16 for the second MMA, as FlashMLA does; docs/NUMERICS.md), O += P V with warp =
//      16 heads x L/4 latent columns; o_lat = O / l rounded to bf16. Several splits of one token
//      (few tokens: decode) are merged by a small combine kernel (flash-decoding).
//   3. out[t][h] = W_UV[h] o_lat[t][h]                cuBLASLt bf16 GEMM batched over heads.
// W_UK / W_UV are kv_b dequantized to bf16 once (cuda_attention_prepare), as the CPU's
// cpu_prepare_attention_weights does, stored in kv_b.prepared ([H*(N+V)][L] bf16, kv_b's rows).
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_attn_tile.h"
#include "cuda_attn_util.h"
#include "cuda_backend.h"

using namespace dsd_attn;

#define AT_HG 32            // heads per CTA
#define AT_CHUNK 64         // selected entries per step
#define AT_THREADS 256      // 8 warps: 2 head tiles x 4 entry / column quarters
#define AT_TOKENS_SCRATCH ((size_t)256 << 20)   // bound for q_abs + o_lat of one sub-batch
#define AT_PLAN_CACHE 16
#define AT_DEQUANT_MAX ((size_t)1 << 30)     // bound for the tiled kernel's dequantized rows

// ---- cuBLASLt bf16 strided-batched GEMMs, plans cached by shape --------------------------------

struct lt_key {
    int transa, m, n, k, batch;
    int64_t lda, ldb, ldc, sa, sb, sc;
    int align;              // min pointer/stride alignment in bytes (cuBLASLt preference)
};

struct lt_plan {
    bool used;
    struct lt_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

struct cuda_attn_state {
    void *wblock;           // every layer's dequantized kv_b, one allocation
    struct lt_plan plans[AT_PLAN_CACHE];
    int next_plan;
    int n_sm;
    int smem_optin;         // shared memory one CTA may opt in to
};

static void plan_free(struct lt_plan *p)
{
    if (!p->used)
        return;
    cublasLtMatmulDescDestroy(p->desc);
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    p->used = false;
}

static bool set_batch(struct cuda_backend *cb, cublasLtMatrixLayout_t l, int batch, int64_t stride)
{
    return CUBLAS_OK(cb, cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch)) &&
           CUBLAS_OK(cb, cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                          sizeof stride));
}

static struct lt_plan *plan_get(struct cuda_backend *cb, const struct lt_key *key)
{
    struct cuda_attn_state *as = cb->attn;
    for (int i = 0; i < AT_PLAN_CACHE; i++)
        if (as->plans[i].used && !memcmp(&as->plans[i].key, key, sizeof *key))
            return &as->plans[i];
    struct lt_plan *p = &as->plans[as->next_plan];
    as->next_plan = (as->next_plan + 1) % AT_PLAN_CACHE;
    plan_free(p);
    memset(p, 0, sizeof *p);
    p->key = *key;
    cublasOperation_t ta = key->transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    if (!CUBLAS_OK(cb, cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)))
        return NULL;
    bool ok = CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)) &&
              CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    // stored (column-major) shapes: A is m x k (or k x m transposed), B k x n, C m x n
    const int64_t ar = key->transa ? key->k : key->m, ac = key->transa ? key->m : key->k;
    ok = ok && CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, ar, ac, key->lda));
    ok = ok && CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, key->k, key->n, key->ldb));
    ok = ok && CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&p->c, CUDA_R_16BF, key->m, key->n, key->ldc));
    if (!ok) {
        // destroy what exists (the descriptors created so far are non-NULL)
        if (p->desc)
            cublasLtMatmulDescDestroy(p->desc);
        if (p->a)
            cublasLtMatrixLayoutDestroy(p->a);
        if (p->b)
            cublasLtMatrixLayoutDestroy(p->b);
        if (p->c)
            cublasLtMatrixLayoutDestroy(p->c);
        return NULL;
    }
    p->used = true;
    if (!set_batch(cb, p->a, key->batch, key->sa) || !set_batch(cb, p->b, key->batch, key->sb) ||
        !set_batch(cb, p->c, key->batch, key->sc)) {
        plan_free(p);
        return NULL;
    }
    cublasLtMatmulPreference_t pref;
    if (!CUBLAS_OK(cb, cublasLtMatmulPreferenceCreate(&pref))) {
        plan_free(p);
        return NULL;
    }
    uint64_t ws = cb->lt_workspace_bytes;
    uint32_t al = (uint32_t)key->align;
    ok = CUBLAS_OK(cb, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                            sizeof ws)) &&
         CUBLAS_OK(cb, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al,
                                                            sizeof al)) &&
         CUBLAS_OK(cb, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al,
                                                            sizeof al)) &&
         CUBLAS_OK(cb, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al,
                                                            sizeof al)) &&
         CUBLAS_OK(cb, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al,
                                                            sizeof al));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (ok)
        ok = CUBLAS_OK(cb, cublasLtMatmulAlgoGetHeuristic(cb->lt, p->desc, p->a, p->b, p->c, p->c, pref, 1, &res,
                                                          &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (!ok || found < 1) {
        if (ok)
            cuda_fail(cb, -ENOTSUP, "mla_attention: cuBLASLt has no bf16 algorithm for m %d n %d k %d batch %d",
                      key->m, key->n, key->k, key->batch);
        plan_free(p);
        return NULL;
    }
    p->algo = res.algo;
    return p;
}

static int align_of(const void *ptr, int64_t stride_bytes, int64_t ld_bytes)
{
    uint64_t v = (uint64_t)(uintptr_t)ptr | (uint64_t)stride_bytes | (uint64_t)ld_bytes | 256u;
    return (int)(v & (~v + 1));     // lowest set bit, at most 256
}

// C[b] (m x n, ldc) = op(A[b]) B[b], column-major, bf16 in and out, fp32 accumulation
static bool gemm_bf16_batched(struct cuda_backend *cb, bool transa, int m, int n, int k, const void *A, int64_t lda,
                              int64_t sa, const void *B, int64_t ldb, int64_t sb, void *C, int64_t ldc, int64_t sc,
                              int batch)
{
    struct lt_key key;
    memset(&key, 0, sizeof key);
    key.transa = transa;
    key.m = m, key.n = n, key.k = k, key.batch = batch;
    key.lda = lda, key.ldb = ldb, key.ldc = ldc, key.sa = sa, key.sb = sb, key.sc = sc;
    int al = align_of(A, sa * 2, lda * 2), bl = align_of(B, sb * 2, ldb * 2), cl = align_of(C, sc * 2, ldc * 2);
    key.align = al < bl ? al : bl;
    key.align = key.align < cl ? key.align : cl;
    struct lt_plan *p = plan_get(cb, &key);
    if (!p)
        return false;
    const float one = 1.0f, zero = 0.0f;
    return CUBLAS_OK(cb, cublasLtMatmul(cb->lt, p->desc, &one, A, p->a, B, p->b, &zero, C, p->c, C, p->c, &p->algo,
                                        cb->lt_workspace, cb->lt_workspace_bytes, cb->stream));
}

// ---- the attention kernel ----------------------------------------------------------------------

struct attn_args {
    const uint16_t *qabs;       // [Tc][H][L]
    const uint16_t *q;          // [Tc][H*(N+R)]
    int H, N, R;
    const uint8_t *mla;
    size_t entry_bytes;
    bool kv_fp8;
    bool entry16;               // FP8 entries and their rope parts start on 16 bytes
    bool q16;                   // q_abs and q_pe rows start on 16 bytes (8 values)
    const int32_t *sel;         // [Tc][topk]
    int topk;
    const int32_t *seq, *page_off, *pages;     // seq indexed by t0 + tt
    int t0;
    float sm_scale;
    int splits, span;
    uint16_t *olat;             // [Tc][H][L] (splits == 1)
    float *part_o, *part_ml;    // [Tc][H][splits][L], [..][2] (splits > 1)
};

template <int NT>   // latent columns per warp / 8: L = 32 * NT
__global__ void __launch_bounds__(AT_THREADS) mla_attn_kernel(const attn_args a)
{
    constexpr int L = 32 * NT;
    const int R = a.R, E = L + R, LDE = E + 8;
    extern __shared__ __align__(16) uint8_t smem[];
    uint16_t *Es = reinterpret_cast<uint16_t *>(smem);                    // [64][LDE]
    uint16_t *Qs = Es + AT_CHUNK * LDE;                                    // [32][LDE]
    float *Ss = reinterpret_cast<float *>(Qs + AT_HG * LDE);               // [32][68]
    uint16_t *Ps = reinterpret_cast<uint16_t *>(Ss + AT_HG * 68);          // [32][72]
    float *m_s = reinterpret_cast<float *>(Ps + AT_HG * 72);               // [32]
    float *l_s = m_s + AT_HG, *alpha_s = l_s + AT_HG;                      // [32] each
    long long *off_s = reinterpret_cast<long long *>(alpha_s + AT_HG);     // [64]
    float *sc_s = reinterpret_cast<float *>(off_s + AT_CHUNK);             // [64][L/128]
    int *n_s = reinterpret_cast<int *>(sc_s + AT_CHUNK * (L / 128));

    const int tt = blockIdx.z, t = a.t0 + tt, hg = blockIdx.x, split = blockIdx.y;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
    const int mt = warp >> 2, qq = warp & 3;
    const int32_t *sel = a.sel + (size_t)tt * a.topk;

    if (tid < AT_HG) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
        alpha_s[tid] = 1.0f;
    }
    // the CPU stops at the first -1 of the selection (its barriers also publish the above)
    const int n = mla_selection_len(sel, a.topk, n_s, tid, AT_THREADS);
    // q rows of this head group: [q_abs (L) | q_pe (R)], zero rows past H
    const int NR = a.N + a.R;
    if (a.q16) {
        // 16-byte pieces (8 values), all of a thread's loads issued before its stores
        constexpr int LP = L / 8;
        const int RP = R / 8, EP = LP + RP, PIECES = AT_HG * EP;
        for (int base = tid; base < PIECES; base += AT_THREADS * 4) {
            uint4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int i = base + u * AT_THREADS, r = i / EP, c = i % EP, h = hg * AT_HG + r;
                v[u] = make_uint4(0, 0, 0, 0);
                if (i < PIECES && h < a.H)
                    v[u] = c < LP ? *reinterpret_cast<const uint4 *>(a.qabs + ((size_t)tt * a.H + h) * L + 8 * c)
                                  : *reinterpret_cast<const uint4 *>(a.q + (size_t)tt * a.H * NR + (size_t)h * NR +
                                                                     a.N + 8 * (c - LP));
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int i = base + u * AT_THREADS;
                if (i < PIECES)
                    *reinterpret_cast<uint4 *>(Qs + (i / EP) * LDE + 8 * (i % EP)) = v[u];
            }
        }
    } else {
        for (int i = tid; i < AT_HG * (E / 2); i += AT_THREADS) {
            const int r = i / (E / 2), c = 2 * (i % (E / 2)), h = hg * AT_HG + r;
            uint32_t v = 0;
            if (h < a.H)
                v = c < L ? *reinterpret_cast<const uint32_t *>(a.qabs + ((size_t)tt * a.H + h) * L + c)
                          : *reinterpret_cast<const uint32_t *>(a.q + (size_t)tt * a.H * NR + (size_t)h * NR + a.N +
                                                                (c - L));
            *reinterpret_cast<uint32_t *>(Qs + r * LDE + c) = v;
        }
    }
    __syncthreads();
    const int s_id = a.seq[t];
    const int32_t *pg = a.pages + a.page_off[s_id];
    const int n_pos = (a.page_off[s_id + 1] - a.page_off[s_id]) * 64;
    const int j_begin = split * a.span, j_end = min(n, j_begin + a.span);

    float o[NT][4];
    for (int i = 0; i < NT; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;

    for (int c0 = j_begin; c0 < j_end; c0 += AT_CHUNK) {
        __syncthreads();    // Es / Ps of the previous step are consumed
        if (tid < AT_CHUNK) {
            const int j = c0 + tid;
            long long off = -1;
            if (j < j_end) {
                const int p = sel[j];
                if (p >= 0 && p < n_pos)
                    off = ((long long)pg[p / 64] * 64 + p % 64) * (long long)a.entry_bytes;
            }
            off_s[tid] = off;
            if (a.kv_fp8)
                for (int gi = 0; gi < L / 128; gi++)
                    sc_s[tid * (L / 128) + gi] =
                        off >= 0 ? reinterpret_cast<const float *>(a.mla + off + L)[gi] : 0.0f;
        }
        __syncthreads();
        if (a.kv_fp8 && a.entry16) {
            // 16 FP8 values per 16-byte load, every load of a thread issued before the first
            // is used (a decode CTA walks one chunk: this gather is most of its time); needs
            // 16-byte aligned entries and rope parts (V3.2's 656-byte entries: L = 512)
            constexpr int PIECES = AT_CHUNK * (L / 16), PER = (PIECES + AT_THREADS - 1) / AT_THREADS;
            uint4 raw[PER];
#pragma unroll
            for (int k = 0; k < PER; k++) {
                const int i = tid + k * AT_THREADS, e = i / (L / 16), w = i % (L / 16);
                const long long off = i < PIECES ? off_s[e] : -1;
                raw[k] = off >= 0 ? *reinterpret_cast<const uint4 *>(a.mla + off + 16 * w) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int k = 0; k < PER; k++) {
                const int i = tid + k * AT_THREADS, e = i / (L / 16), w = i % (L / 16);
                if (i >= PIECES)
                    continue;
                const float sc = sc_s[e * (L / 128) + w / 8];
                const uint32_t wd[4] = { raw[k].x, raw[k].y, raw[k].z, raw[k].w };
                uint32_t pk[8];
#pragma unroll
                for (int x = 0; x < 8; x++) {
                    const uint32_t b = wd[x / 2] >> (16 * (x & 1));
                    pk[x] = pack_bf16(f32_to_bf16_bits(e4m3_to_f32((uint8_t)b) * sc),
                                      f32_to_bf16_bits(e4m3_to_f32((uint8_t)(b >> 8)) * sc));
                }
                uint4 *dst = reinterpret_cast<uint4 *>(Es + e * LDE + 16 * w);
                dst[0] = make_uint4(pk[0], pk[1], pk[2], pk[3]);
                dst[1] = make_uint4(pk[4], pk[5], pk[6], pk[7]);
            }
            const size_t pe_off = (size_t)L + 4 * (L / 128);
            for (int i = tid; i < AT_CHUNK * (R / 8); i += AT_THREADS) {
                const int e = i / (R / 8), w = i % (R / 8);
                const long long off = off_s[e];
                const uint4 v = off >= 0 ? *reinterpret_cast<const uint4 *>(a.mla + off + pe_off + 16 * w)
                                         : make_uint4(0, 0, 0, 0);
                *reinterpret_cast<uint4 *>(Es + e * LDE + L + 8 * w) = v;
            }
        } else if (a.kv_fp8) {
            for (int i = tid; i < AT_CHUNK * (L / 4); i += AT_THREADS) {
                const int e = i / (L / 4), w = i % (L / 4);
                const long long off = off_s[e];
                uint32_t lo = 0, hi = 0;
                if (off >= 0) {
                    const uint32_t raw = *reinterpret_cast<const uint32_t *>(a.mla + off + 4 * w);
                    const float sc = sc_s[e * (L / 128) + w / 32];
                    uint16_t b[4];
                    for (int x = 0; x < 4; x++)
                        b[x] = f32_to_bf16_bits(e4m3_to_f32((uint8_t)(raw >> (8 * x))) * sc);
                    lo = pack_bf16(b[0], b[1]);
                    hi = pack_bf16(b[2], b[3]);
                }
                *reinterpret_cast<uint2 *>(Es + e * LDE + 4 * w) = make_uint2(lo, hi);
            }
            const size_t pe_off = (size_t)L + 4 * (L / 128);
            for (int i = tid; i < AT_CHUNK * (R / 2); i += AT_THREADS) {
                const int e = i / (R / 2), w = i % (R / 2);
                const long long off = off_s[e];
                const uint32_t v = off >= 0 ? *reinterpret_cast<const uint32_t *>(a.mla + off + pe_off + 4 * w) : 0u;
                *reinterpret_cast<uint32_t *>(Es + e * LDE + L + 2 * w) = v;
            }
        } else {
            for (int i = tid; i < AT_CHUNK * (E / 2); i += AT_THREADS) {
                const int e = i / (E / 2), w = i % (E / 2);
                const long long off = off_s[e];
                const uint32_t v = off >= 0 ? *reinterpret_cast<const uint32_t *>(a.mla + off + 4 * w) : 0u;
                *reinterpret_cast<uint32_t *>(Es + e * LDE + 2 * w) = v;
            }
        }
        __syncthreads();

        // S = q . entry: warp = heads mt*16.., entries qq*16.. (2 n-tiles)
        {
            float s[2][4] = { { 0.0f, 0.0f, 0.0f, 0.0f }, { 0.0f, 0.0f, 0.0f, 0.0f } };
            const uint16_t *qa = Qs + (mt * 16 + g) * LDE + 2 * q4;
            const uint16_t *kb0 = Es + (qq * 16 + g) * LDE + 2 * q4, *kb1 = kb0 + 8 * LDE;
            for (int kk = 0; kk < E / 16; kk++) {
                const int c = kk * 16;
                uint32_t af[4];
                af[0] = *reinterpret_cast<const uint32_t *>(qa + c);
                af[1] = *reinterpret_cast<const uint32_t *>(qa + 8 * LDE + c);
                af[2] = *reinterpret_cast<const uint32_t *>(qa + c + 8);
                af[3] = *reinterpret_cast<const uint32_t *>(qa + 8 * LDE + c + 8);
                mma_bf16(s[0], af, *reinterpret_cast<const uint32_t *>(kb0 + c),
                         *reinterpret_cast<const uint32_t *>(kb0 + c + 8));
                mma_bf16(s[1], af, *reinterpret_cast<const uint32_t *>(kb1 + c),
                         *reinterpret_cast<const uint32_t *>(kb1 + c + 8));
            }
            for (int nt = 0; nt < 2; nt++)
                for (int x = 0; x < 4; x++) {
                    const int row = mt * 16 + g + (x >= 2 ? 8 : 0), col = qq * 16 + nt * 8 + 2 * q4 + (x & 1);
                    Ss[row * 68 + col] = off_s[col] >= 0 ? a.sm_scale * s[nt][x] : -INFINITY;
                }
        }
        __syncthreads();

        // online softmax: warp w owns rows 4w .. 4w+3
        for (int r = warp * 4; r < warp * 4 + 4; r++) {
            const float s0 = Ss[r * 68 + lane], s1 = Ss[r * 68 + lane + 32];
            const float m_old = m_s[r];
            const float m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
            float p0 = 0.0f, p1 = 0.0f, alpha = 1.0f;
            if (m_new != -INFINITY) {
                p0 = round_bf16(expf(s0 - m_new));
                p1 = round_bf16(expf(s1 - m_new));
                alpha = expf(m_old - m_new);
            }
            Ps[r * 72 + lane] = f32_to_bf16_bits(p0);
            Ps[r * 72 + lane + 32] = f32_to_bf16_bits(p1);
            const float psum = warp_sum(p0 + p1);
            __syncwarp();   // every lane has read m_s[r] before lane 0 replaces it
            if (lane == 0) {
                l_s[r] = l_s[r] * alpha + psum;
                m_s[r] = m_new;
                alpha_s[r] = alpha;
            }
        }
        __syncthreads();

        // O = O * alpha + P V: warp = heads mt*16.., latent columns qq*L/4 ..
        {
            const float a0 = alpha_s[mt * 16 + g], a1 = alpha_s[mt * 16 + g + 8];
            for (int i = 0; i < NT; i++) {
                o[i][0] *= a0;
                o[i][1] *= a0;
                o[i][2] *= a1;
                o[i][3] *= a1;
            }
            const uint16_t *pa = Ps + (mt * 16 + g) * 72 + 2 * q4;
            for (int kk = 0; kk < AT_CHUNK / 16; kk++) {
                uint32_t af[4];
                af[0] = *reinterpret_cast<const uint32_t *>(pa + kk * 16);
                af[1] = *reinterpret_cast<const uint32_t *>(pa + 8 * 72 + kk * 16);
                af[2] = *reinterpret_cast<const uint32_t *>(pa + kk * 16 + 8);
                af[3] = *reinterpret_cast<const uint32_t *>(pa + 8 * 72 + kk * 16 + 8);
                const int krow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                const uint16_t *vb = Es + krow * LDE + qq * (L / 4) + (lane >> 4) * 8;
#pragma unroll
                for (int np = 0; np < NT / 2; np++) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, vb + np * 16);
                    mma_bf16(o[2 * np], af, b[0], b[1]);
                    mma_bf16(o[2 * np + 1], af, b[2], b[3]);
                }
            }
        }
    }
    __syncthreads();

    // finish: rows g and g + 8 of this warp's head tile
    for (int half = 0; half < 2; half++) {
        const int r = mt * 16 + g + 8 * half, h = hg * AT_HG + r;
        if (h >= a.H)
            continue;
        const float l = l_s[r];
        const size_t th = (size_t)tt * a.H + h;
        if (a.splits == 1) {
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            uint16_t *dst = a.olat + th * L + qq * (L / 4) + 2 * q4;
            for (int i = 0; i < NT; i++)
                *reinterpret_cast<uint32_t *>(dst + i * 8) =
                    pack_bf16(f32_to_bf16_bits(o[i][2 * half] * inv), f32_to_bf16_bits(o[i][2 * half + 1] * inv));
        } else {
            const size_t ps = th * a.splits + split;
            float *dst = a.part_o + ps * L + qq * (L / 4) + 2 * q4;
            for (int i = 0; i < NT; i++)
                *reinterpret_cast<float2 *>(dst + i * 8) = make_float2(o[i][2 * half], o[i][2 * half + 1]);
            if (qq == 0 && q4 == 0) {
                a.part_ml[2 * ps] = m_s[r];
                a.part_ml[2 * ps + 1] = l;
            }
        }
    }
}

// merges the splits of one (token, head): o_lat = sum_s e^(m_s - m) O_s / sum_s e^(m_s - m) l_s.
// The per-split factors e^(m_s - m) are computed once into shared memory (dynamic: splits
// floats), then each thread adds its columns over the splits: the same operations in the
// same order as one thread doing it all, so the result does not depend on the block size.
// (Before, every thread recomputed every factor for each of its columns, a chain of splits x
// columns dependent loads and expf: 62 us of a 96 us decode attention at batch 1 in ncu.)
__global__ void mla_attn_combine_kernel(const float *__restrict__ part_o, const float *__restrict__ part_ml, int splits,
                                        int L, uint16_t *__restrict__ olat)
{
    extern __shared__ float cm_f[];         // [splits]: e^(m_s - m), or 0 for an empty split
    const size_t th = blockIdx.x;
    const float *ml = part_ml + 2 * th * splits;
    float m = -INFINITY;
    for (int s = 0; s < splits; s++)
        if (ml[2 * s + 1] > 0.0f)
            m = fmaxf(m, ml[2 * s]);
    for (int s = threadIdx.x; s < splits; s += blockDim.x)
        cm_f[s] = ml[2 * s + 1] > 0.0f ? expf(ml[2 * s] - m) : 0.0f;
    __syncthreads();
    float l = 0.0f;
    for (int s = 0; s < splits; s++)
        if (ml[2 * s + 1] > 0.0f)
            l += ml[2 * s + 1] * cm_f[s];
    const float *po = part_o + th * splits * L;
    for (int c = threadIdx.x; c < L; c += blockDim.x) {
        float acc = 0.0f;
#pragma unroll 8
        for (int s = 0; s < splits; s++)
            if (ml[2 * s + 1] > 0.0f)
                acc += po[(size_t)s * L + c] * cm_f[s];
        olat[th * L + c] = f32_to_bf16_bits(l > 0.0f ? acc / l : 0.0f);
    }
}

// ---- prepared weights: kv_b dequantized to bf16 --------------------------------------------------

__global__ void dequant_kvb_kernel(const void *__restrict__ data, int dtype, const float *__restrict__ scale,
                                   int64_t scale_stride, int64_t rows, int64_t cols, uint16_t *__restrict__ out)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols)
        return;
    const int64_t r = i / cols, c = i % cols;
    float v;
    if (dtype == DSD_DTYPE_F8_E4M3) {
        v = e4m3_to_f32(reinterpret_cast<const uint8_t *>(data)[i]);
        if (scale)
            v *= scale[(r / 128) * scale_stride + c / 128];
    } else if (dtype == DSD_DTYPE_BF16) {
        v = bf16_bits_to_f32(reinterpret_cast<const uint16_t *>(data)[i]);
    } else {
        v = reinterpret_cast<const float *>(data)[i];
    }
    out[i] = f32_to_bf16_bits(v);
}

// dsd_errf of daemon/util/err.h has C linkage, which its header does not declare for C++
static int attn_err(struct dsd_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

template <int NT>
static void launch_attn(struct cuda_backend *cb, const attn_args &a, int hgroups, int tokens, size_t smem)
{
    if (smem > 48 * 1024 &&
        !CU_OK(cb, cudaFuncSetAttribute(mla_attn_kernel<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid(hgroups, a.splits, tokens);
    mla_attn_kernel<NT><<<grid, AT_THREADS, smem, cb->stream>>>(a);
    CU_LAUNCHED(cb);
}

// The two-warpgroup wgmma engine (1.2-1.3x mma.sync at every size measured on an H100,
// docs/KERNELS.md) where the shape and shared memory allow it and the warp-specialized one
// (tile_ws) does not run; MMA asks for mma.sync.
static bool tile_wgmma(struct cuda_backend *cb, int L, int R)
{
    return cb->attn_tile != DSD_CUDA_TILE_MMA && cuda_mla_wgmma_ok(L, R) &&
           (int)cuda_mla_wgmma_smem(L, R) <= cb->attn->smem_optin;
}

// The warp-specialized wgmma engine (cuda_attn_ws.cu): AUTO's choice where it fits (at
// prefill 1.16x the two-warpgroup engine on an H100, at decode the same within 3 %,
// docs/KERNELS.md), or asked for with WS.
static bool tile_ws(struct cuda_backend *cb, int L, int R)
{
    return (cb->attn_tile == DSD_CUDA_TILE_WS || cb->attn_tile == DSD_CUDA_TILE_WS_FP8 ||
            cb->attn_tile == DSD_CUDA_TILE_AUTO) &&
           cuda_mla_ws_ok(L, R) && (int)cuda_mla_ws_smem(L, R) <= cb->attn->smem_optin;
}

// The same engine reading an FP8 cache in place (WS_FP8, only when asked: slower than the
// dequantization pass and WS on an H100, docs/KERNELS.md)
static bool tile_ws_fp8(struct cuda_backend *cb, int L, int R)
{
    return cb->attn_tile == DSD_CUDA_TILE_WS_FP8 && tile_ws(cb, L, R) && cuda_mla_ws_fp8_ok(L, R);
}

// Which kernel a call runs (docs/KERNELS.md, "Sparse MLA"): -1 for the per-token kernel, or
// the tiled kernel's source of bf16 rows (MLA_SRC_*). With an FP8 cache the tiled kernel needs
// its rows dequantized first: those of the step's pages (prefill: a chunk's tokens select
// mostly the same entries) or those of each token's selection (decode: every token has its
// own long context), whichever is fewer rows. The tiled kernel wins once the step has enough
// (token, 64 heads) CTAs: measured against the per-token kernel and its split selection, it
// is ahead from about a 16th of the SMs at a 32K context (docs/KERNELS.md, the history table).
static int tile_source(struct cuda_backend *cb, int T, int H, int L, int R, int n_pages, int topk, bool fp8,
                       size_t *deq_bytes)
{
    *deq_bytes = 0;
    if (cb->attn_kernel == DSD_CUDA_ATTN_PER_TOKEN || L > 512 ||
        (!tile_wgmma(cb, L, R) && (int)cuda_mla_tile_smem(L, R) > cb->attn->smem_optin))
        return -1;
    int src = MLA_SRC_CACHE;
    if (fp8 && tile_ws_fp8(cb, L, R)) {
        src = MLA_SRC_FP8;      // no rows to dequantize first
    } else if (fp8) {
        const size_t row = (size_t)(L + R) * 2, pages = (size_t)n_pages * 64 * row, selected = (size_t)T * topk * row;
        if (cb->attn_kernel == DSD_CUDA_ATTN_TILED_PAGES)
            src = MLA_SRC_PAGES;
        else if (cb->attn_kernel == DSD_CUDA_ATTN_TILED_GATHER)
            src = MLA_SRC_SELECTED;
        else
            src = pages <= selected ? MLA_SRC_PAGES : MLA_SRC_SELECTED;
        *deq_bytes = src == MLA_SRC_PAGES ? pages : selected;
        if (*deq_bytes > AT_DEQUANT_MAX)
            return -1;
    }
    if (cb->attn_kernel != DSD_CUDA_ATTN_AUTO)
        return src;
    const long long ctas = (long long)T * ((H + cuda_mla_tile_heads() - 1) / cuda_mla_tile_heads());
    return 16 * ctas >= cb->attn->n_sm ? src : -1;
}

extern "C" {

int cuda_attention_prepare(struct cuda_backend *cb, struct dsd_model_weights *w, struct dsd_err *err)
{
    cuda_use(cb);
    if (!cb->attn) {
        cb->attn = (struct cuda_attn_state *)calloc(1, sizeof *cb->attn);
        if (!cb->attn)
            return attn_err(err, -ENOMEM, "cuda attention: out of memory");
        int n_sm = 0;
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, cb->device);
        cb->attn->n_sm = n_sm > 0 ? n_sm : 132;
        int optin = 0;
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, cb->device);
        cb->attn->smem_optin = optin;
    }
    struct cuda_attn_state *as = cb->attn;
    size_t total = 0;
    for (int l = 0; l < w->n_layers; l++) {
        const struct dsd_weight *kvb = &w->layers[l].kv_b;
        if (kvb->data && kvb->rows > 0)
            total += ((size_t)kvb->rows * (size_t)kvb->cols * 2 + 255) / 256 * 256;
    }
    if (!total)
        return 0;
    if (as->wblock) {
        cudaFree(as->wblock);
        as->wblock = NULL;
    }
    if (cudaMalloc(&as->wblock, total) != cudaSuccess) {
        (void)cudaGetLastError();
        as->wblock = NULL;
        return attn_err(err, -ENOMEM, "cuda attention: no device memory for the dequantized kv_b (%.2f GiB)",
                        (double)total / (1u << 30));
    }
    uint8_t *at = (uint8_t *)as->wblock;
    for (int l = 0; l < w->n_layers; l++) {
        struct dsd_weight *kvb = &w->layers[l].kv_b;
        if (!kvb->data || kvb->rows <= 0)
            continue;
        const int64_t n = kvb->rows * kvb->cols;
        const int threads = 256;
        dequant_kvb_kernel<<<(unsigned)((n + threads - 1) / threads), threads, 0, cb->stream>>>(
            kvb->data, (int)kvb->dtype, kvb->dtype == DSD_DTYPE_F8_E4M3 ? kvb->scale : NULL, cuda_scale_stride(kvb),
            kvb->rows, kvb->cols, (uint16_t *)at);
        CU_LAUNCHED(cb);
        kvb->prepared = at;
        at += ((size_t)n * 2 + 255) / 256 * 256;
    }
    CU_OK(cb, cudaStreamSynchronize(cb->stream));
    if (cb->status) {
        int rc = attn_err(err, cb->status, "cuda attention: dequantizing kv_b: %s", cb->status_msg);
        cb->status = 0;
        cb->status_msg[0] = 0;
        return rc;
    }
    return 0;
}

void cuda_attention_release(struct cuda_backend *cb, struct dsd_model_weights *w)
{
    if (!cb->attn)
        return;
    cuda_use(cb);
    for (int l = 0; l < w->n_layers; l++)
        w->layers[l].kv_b.prepared = NULL;
    for (int i = 0; i < AT_PLAN_CACHE; i++)
        plan_free(&cb->attn->plans[i]);
    cudaFree(cb->attn->wblock);
    free(cb->attn);
    cb->attn = NULL;
}

void cuda_op_mla_attention(struct dsd_backend *be, void *out, const void *q, const struct dsd_weight *kv_b,
                           const struct dsd_kv_layer *kv, const int32_t *sel, int topk, const struct dsd_step *st)
{
    struct cuda_backend *cb = cuda(be);
    const struct dsd_model_dims *d = &be->dims;
    const struct dsd_kv_layout *lay = &be->kv_layout;
    const int T = st->n_tokens, H = d->num_attention_heads, N = d->qk_nope_head_dim, R = d->qk_rope_head_dim;
    const int V = d->v_head_dim, L = d->kv_lora_rank;
    if (T <= 0)
        return;
    cuda_use(cb);
    if (!cb->attn || !kv_b->prepared) {
        cuda_fail(cb, -EINVAL, "mla_attention: kv_b %s was not prepared (prepare_weights)", kv_b->name ? kv_b->name : "");
        return;
    }
    if (kv_b->rows != (int64_t)H * (N + V) || kv_b->cols != L) {
        cuda_fail(cb, -EINVAL, "mla_attention: kv_b is %lld x %lld, expected %d x %d", (long long)kv_b->rows,
                  (long long)kv_b->cols, H * (N + V), L);
        return;
    }
    if (L % 128 || L > 512 || R % 16 || N % 2 || topk <= 0 ||
        (lay->mla_dtype != DSD_KV_FP8 && lay->mla_dtype != DSD_KV_BF16)) {
        cuda_fail(cb, -ENOTSUP, "mla_attention: kv_lora_rank %d / rope %d / nope %d / KV dtype %d not supported",
                  L, R, N, (int)lay->mla_dtype);
        return;
    }
    const uint16_t *wkvb = (const uint16_t *)kv_b->prepared;
    const bool fp8 = lay->mla_dtype == DSD_KV_FP8;
    const int E = L + R;
    size_t deq_bytes = 0;
    const int src = tile_source(cb, T, H, L, R, st->n_pages, topk, fp8, &deq_bytes);
    const bool tile = src >= 0;

    int Tc = (int)(AT_TOKENS_SCRATCH / ((size_t)4 * H * L));
    if (Tc < 1)
        Tc = 1;
    if (Tc > T)
        Tc = T;
    if (Tc > 65535)
        Tc = 65535;
    const int hgroups = (H + AT_HG - 1) / AT_HG;
    const int chunks = (topk + AT_CHUNK - 1) / AT_CHUNK;
    // the per-token kernel splits the selection when the tokens alone give too few CTAs (decode)
    const int want = 2 * cb->attn->n_sm;
    int splits = 1;
    if (!tile && Tc * hgroups < want) {
        splits = (want + Tc * hgroups - 1) / (Tc * hgroups);
        if (splits > chunks)
            splits = chunks;
    }
    const int span = (chunks + splits - 1) / splits * AT_CHUNK;
    splits = (topk + span - 1) / span;

    const size_t act = (size_t)Tc * H * L * 2;
    const size_t part = splits > 1 ? (size_t)Tc * H * splits * ((size_t)L + 2) * 4 : 0;
    const size_t deq = tile ? (deq_bytes + 255) / 256 * 256 : 0;
    uint8_t *scratch = (uint8_t *)cuda_scratch(cb, deq + 2 * act + part + 512);
    if (!scratch)
        return;
    uint16_t *deq_rows = (uint16_t *)scratch;
    uint16_t *qabs = (uint16_t *)(scratch + deq), *olat = (uint16_t *)(scratch + deq + act);
    float *part_o = (float *)(scratch + deq + 2 * act);
    float *part_ml = part_o + (size_t)Tc * H * splits * L;

    if (src == MLA_SRC_PAGES)
        cuda_mla_dequant_rows(cb, deq_rows, kv->mla, lay->mla_token_bytes, L, R, st->page_off, st->n_seqs, st->pages,
                              st->n_pages * 64);
    else if (src == MLA_SRC_SELECTED)
        cuda_mla_dequant_selected(cb, deq_rows, kv->mla, lay->mla_token_bytes, L, R, sel, topk, T, 0, st->seq,
                                  st->page_off, st->pages);
    if (cb->status)
        return;

    const int LDE = E + 8;
    const size_t smem = (size_t)(AT_CHUNK + AT_HG) * LDE * 2 + AT_HG * 68 * 4 + AT_HG * 72 * 2 + 3 * AT_HG * 4 +
                        AT_CHUNK * 8 + AT_CHUNK * (L / 128) * 4 + 16;

    for (int t0 = 0; t0 < T; t0 += Tc) {
        const int nt = T - t0 < Tc ? T - t0 : Tc;
        const uint16_t *qt = (const uint16_t *)q + (size_t)t0 * H * (N + R);
        // q_abs^T (L x nt per head) = W_UK[h] (col-major L x N, ld L) * q_nope^T (N x nt, ld H(N+R))
        if (!gemm_bf16_batched(cb, false, L, nt, N, wkvb, L, (int64_t)(N + V) * L, qt, (int64_t)H * (N + R), N + R,
                               qabs, (int64_t)H * L, L, H))
            return;
        if (tile) {
            mla_tile_args a;
            a.qabs = qabs;
            a.q = qt;
            a.H = H, a.N = N, a.R = R;
            // the cache itself (bf16 rows, or FP8 entries for the producer to convert), or the
            // dequantized rows
            const bool in_place = src == MLA_SRC_CACHE || src == MLA_SRC_FP8;
            a.src_kind = src;
            a.src = in_place                  ? kv->mla
                    : src == MLA_SRC_SELECTED ? (const uint8_t *)(deq_rows + (size_t)t0 * topk * E)
                                              : (const uint8_t *)deq_rows;
            a.src_row_bytes = in_place ? lay->mla_token_bytes : (size_t)E * 2;
            a.sel = sel + (size_t)t0 * topk;
            a.topk = topk;
            a.seq = st->seq, a.page_off = st->page_off, a.pages = st->pages;
            a.t0 = t0;
            a.sm_scale = d->softmax_scale;
            a.olat = olat;
            if (tile_ws(cb, L, R))
                cuda_mla_ws_attn(cb, &a, L, nt);
            else if (tile_wgmma(cb, L, R))
                cuda_mla_wgmma_attn(cb, &a, L, nt);
            else
                cuda_mla_tile_attn(cb, &a, L, nt);
        } else {
            attn_args a;
            a.qabs = qabs;
            a.q = qt;
            a.H = H, a.N = N, a.R = R;
            a.mla = kv->mla;
            a.entry_bytes = lay->mla_token_bytes;
            a.kv_fp8 = fp8;
            a.entry16 = fp8 && lay->mla_token_bytes % 16 == 0 && (L + 4 * (L / 128)) % 16 == 0 &&
                        ((uintptr_t)kv->mla) % 16 == 0;
            a.q16 = N % 8 == 0 && R % 8 == 0 && ((uintptr_t)qt | (uintptr_t)qabs) % 16 == 0;
            a.sel = sel + (size_t)t0 * topk;
            a.topk = topk;
            a.seq = st->seq, a.page_off = st->page_off, a.pages = st->pages;
            a.t0 = t0;
            a.sm_scale = d->softmax_scale;
            a.splits = splits, a.span = span;
            a.olat = olat;
            a.part_o = part_o, a.part_ml = part_ml;
            switch (L / 128) {
            case 1: launch_attn<4>(cb, a, hgroups, nt, smem); break;
            case 2: launch_attn<8>(cb, a, hgroups, nt, smem); break;
            case 3: launch_attn<12>(cb, a, hgroups, nt, smem); break;
            default: launch_attn<16>(cb, a, hgroups, nt, smem); break;
            }
        }
        if (cb->status)
            return;
        if (splits > 1) {
            mla_attn_combine_kernel<<<nt * H, L < 512 ? L : 512, splits * sizeof(float), cb->stream>>>(
                part_o, part_ml, splits, L, olat);
            if (!CU_LAUNCHED(cb))
                return;
        }
        // out^T (V x nt per head) = W_UV[h]^T (stored col-major L x V, ld L) * o_lat^T (L x nt, ld H L)
        if (!gemm_bf16_batched(cb, true, V, nt, L, wkvb + (size_t)N * L, L, (int64_t)(N + V) * L, olat,
                               (int64_t)H * L, L, (uint16_t *)out + (size_t)t0 * H * V, (int64_t)H * V, V, H))
            return;
    }
}

void dsd_backend_cuda_set_attention_kernel(struct dsd_backend *be, enum dsd_cuda_attn_kernel k)
{
    cuda(be)->attn_kernel = k;
}

void dsd_backend_cuda_set_attention_tile(struct dsd_backend *be, enum dsd_cuda_attn_tile t)
{
    cuda(be)->attn_tile = t;
}

} // extern "C"
