// Sampling on the GPU (contract in kernels/ops.h, semantics and the reference in
// kernels/sample.h / kernels/sample_ref.c, docs/SAMPLING.md), and the penalty state.
// cuda_op_sample picks the engine (dsd_backend_cuda_set_sampler): this file's kernel, one CTA
// of 1024 threads per row (the default), or cuda_sample_slices.cu's, a row in slices of many
// CTAs. Here the row (a few hundred KiB) stays in L2 across the passes:
//   greedy:   one arg-max pass over the penalized logits;
//   sampling: the max, the mass Z = sum exp(x - max), then the kept prefix of the order
//             (p descending, id ascending) by radix selection on the bits of p: its length
//             n = min(top-k, #{p >= min_p}, shortest prefix with mass >= top_p Z), then the
//             n-th element's key and, among ids tied with it, the last one kept; finally the
//             draw walks the kept ids in ascending order (a block scan) to the first whose
//             running mass exceeds u times the kept mass.
// Masses are sums of p in 32.32 fixed point (integers): exact and independent of the order of
// the additions, so a seeded request gets the same tokens on every run.
// Logprobs come from the raw logits: the log-sum-exp, the pick's, and the n_top largest by
// successive arg-max passes below the previous pick.
#include <math.h>
#include <stdint.h>

#include "cuda_backend.h"
#include "cuda_sample_util.h"

using namespace dsd_sample;

#define SP_THREADS 1024
#define SP_WARPS (SP_THREADS / 32)

namespace {

// Radix selection from the top: the key K with W(key > K) < target <= W(key >= K), where
// W sums weight(p) (1 per id, or its fixed-point mass). Returns K; *above = W(key > K).
template <bool MASS>
__device__ uint32_t radix_select(const row_ctx &c, float m, unsigned long long target, unsigned long long *hist,
                                 unsigned long long *above)
{
    uint32_t prefix = 0, mask = 0;
    unsigned long long acc_above = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += SP_THREADS)
            hist[b] = 0;
        __syncthreads();
        // (One shared atomic per id: warp-aggregating the updates with __match_any_sync was
        // measured slower, 1.5 vs 1.0 ms for top-k 50 at V = 129,280 on an H100.)
        for (int64_t i = threadIdx.x; i < c.V; i += SP_THREADS) {
            const float p = prob_of(xform(c, i), m);
            const uint32_t key = __float_as_uint(p);
            if ((key & mask) == prefix)
                atomicAdd(&hist[(key >> shift) & 255], MASS ? fixq(p) : 1ull);
        }
        __syncthreads();
        // walk the buckets from the top (one thread: 256 steps)
        if (threadIdx.x == 0) {
            unsigned long long acc = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (acc + hist[b] >= target)
                    break;
                acc += hist[b];
            }
            hist[256] = (unsigned long long)b;
            hist[257] = acc;
        }
        __syncthreads();
        const uint32_t b = (uint32_t)hist[256];
        const unsigned long long acc = hist[257];
        __syncthreads();
        acc_above += acc;
        target -= acc;
        prefix |= b << shift;
        mask |= 255u << shift;
    }
    *above = acc_above;
    return prefix;
}

using sample_args = op_args;

__global__ void __launch_bounds__(SP_THREADS) sample_kernel(const sample_args a)
{
    __shared__ arg sh_arg[SP_WARPS + 1];
    __shared__ double sh_d[SP_WARPS + 1];
    __shared__ float sh_f[SP_WARPS + 1];
    __shared__ unsigned long long sh_u[33];
    __shared__ unsigned long long hist[258];
    __shared__ int64_t sh_pick;

    const int row = blockIdx.x, tid = threadIdx.x;
    const struct dsd_sample_row r = a.rows[row];
    const row_ctx c = row_ctx_of(r, a.logits, a.pen, row, a.V);
    const int64_t V = a.V;

    int64_t pick;
    arg best = { NAN, V };
    if (r.temperature == 0.0f) {
        for (int64_t i = tid; i < V; i += SP_THREADS) {
            const float x = xform(c, i);
            if (better(x, i, best.v, best.i))
                best = { x, i };
        }
        best = block_argmax<SP_WARPS>(best, sh_arg);
        pick = best.i < V ? best.i : 0;
    } else {
        float m = -INFINITY;
        for (int64_t i = tid; i < V; i += SP_THREADS) {
            const float x = xform(c, i);
            const arg cand = { x, i };
            if (better(cand.v, cand.i, best.v, best.i))
                best = cand;
            if (x > m)
                m = x;
        }
        m = block_max<SP_WARPS>(m, sh_f);
        best = block_argmax<SP_WARPS>(best, sh_arg);
        if (m == -INFINITY) {
            pick = best.i < V ? best.i : 0;     // nothing has mass: as the reference, the arg-max
        } else {
            // Z and the counts the filters allow
            unsigned long long zq = 0, n_minp = 0;
            for (int64_t i = tid; i < V; i += SP_THREADS) {
                const float p = prob_of(xform(c, i), m);
                zq += fixq(p);
                n_minp += !(r.min_p > 0.0f && p < r.min_p);
            }
            zq = block_sum<SP_WARPS>(zq, sh_u);
            n_minp = block_sum<SP_WARPS>(n_minp, sh_u);
            unsigned long long n = r.top_k > 0 && r.top_k < V ? (unsigned long long)r.top_k : (unsigned long long)V;
            if (n_minp < n)
                n = n_minp;
            if (r.top_p < 1.0f && n > 0) {
                // shortest prefix whose mass reaches top_p Z
                double tq = (double)r.top_p * (double)zq;
                unsigned long long target = (unsigned long long)ceil(tq);
                if (target < 1)
                    target = 1;
                unsigned long long above;
                const uint32_t K = radix_select<true>(c, m, target, hist, &above);
                const unsigned long long qk = fixq(__uint_as_float(K));
                unsigned long long ties = qk ? (target - above + qk - 1) / qk : 1;
                // ids with key > K, then the needed ties
                unsigned long long cnt_above = 0;
                for (int64_t i = tid; i < V; i += SP_THREADS)
                    cnt_above += __float_as_uint(prob_of(xform(c, i), m)) > K;
                cnt_above = block_sum<SP_WARPS>(cnt_above, sh_u);
                if (cnt_above + ties < n)
                    n = cnt_above + ties;
            }
            if (n == 0) {
                pick = best.i < V ? best.i : 0;
            } else {
                // the n-th element of the order: key K, and the last tied id kept
                unsigned long long above;
                const uint32_t K = radix_select<false>(c, m, n, hist, &above);
                const unsigned long long need_ties = n - above;     // >= 1
                // ids in ascending order: thread t owns [t*chunk, (t+1)*chunk)
                const int64_t chunk = (V + SP_THREADS - 1) / SP_THREADS;
                const int64_t i0 = (int64_t)tid * chunk, i1 = i0 + chunk < V ? i0 + chunk : V;
                const unsigned long long my_ties = count_key(c, m, K, i0, i1);
                unsigned long long total;
                const unsigned long long before = block_exclusive_scan<SP_WARPS>(my_ties, sh_u, &total);
                if (tid == 0)
                    sh_pick = V;        // last kept tied id (found below)
                __syncthreads();
                if (before < need_ties && before + my_ties >= need_ties)
                    sh_pick = nth_key(c, m, K, i0, i1, before, need_ties);
                __syncthreads();
                const int64_t tie_last = sh_pick;
                __syncthreads();
                // kept mass, then the draw in ascending id order
                const unsigned long long my_mass = kept_mass(c, m, K, tie_last, i0, i1);
                unsigned long long kept;
                const unsigned long long mbefore = block_exclusive_scan<SP_WARPS>(my_mass, sh_u, &kept);
                const double rr = (double)r.u * (double)kept;
                if (tid == 0)
                    sh_pick = -1;
                __syncthreads();
                if (my_mass > 0 && (double)mbefore <= rr && rr < (double)(mbefore + my_mass))
                    sh_pick = draw_in(c, m, K, tie_last, i0, i1, mbefore, rr);
                __syncthreads();
                pick = sh_pick;
                if (pick < 0) {
                    // u * kept at the very end (rounding): the last kept id, as the reference
                    int64_t last = -1;
                    for (int64_t i = i0; i < i1; i++) {
                        const uint32_t key = __float_as_uint(prob_of(xform(c, i), m));
                        if (key > K || (key == K && i <= tie_last))
                            last = i;
                    }
                    arg l = { last >= 0 ? (float)last : -INFINITY, 0 };
                    l = block_argmax<SP_WARPS>(l, sh_arg);
                    pick = l.v >= 0 ? (int64_t)l.v : (best.i < V ? best.i : 0);
                }
                __syncthreads();
            }
        }
    }

    struct dsd_sample_result *o = &a.out[row];
    if (r.n_top >= 0) {
        // raw logprobs: max, log-sum-exp in double (a fixed reduction tree), the pick's, top n
        float mr = -INFINITY;
        for (int64_t i = tid; i < V; i += SP_THREADS)
            if (c.raw[i] > mr)
                mr = c.raw[i];
        mr = block_max<SP_WARPS>(mr, sh_f);
        double z = 0.0;
        for (int64_t i = tid; i < V; i += SP_THREADS)
            z += exp((double)c.raw[i] - (double)mr);
        z = block_sum<SP_WARPS>(z, sh_d);
        const double lse = (double)mr + log(z);
        if (tid == 0)
            o->logprob = (float)fmax((double)c.raw[pick] - lse, -1e30);
        const int k = r.n_top < DSD_SAMPLE_MAX_TOP ? (r.n_top < V ? r.n_top : (int)V) : DSD_SAMPLE_MAX_TOP;
        arg prev = { INFINITY, -1 };
        bool first = true;
        for (int j = 0; j < k; j++) {
            arg b = { NAN, V };
            for (int64_t i = tid; i < V; i += SP_THREADS) {
                const float v = c.raw[i];
                if ((first || better(prev.v, prev.i, v, i)) && better(v, i, b.v, b.i))
                    b = { v, i };
            }
            b = block_argmax<SP_WARPS>(b, sh_arg);
            if (tid == 0) {
                o->top_ids[j] = (int32_t)b.i;
                o->top_logprobs[j] = (float)fmax((double)b.v - lse, -1e30);
            }
            prev = b;
            first = false;
        }
        if (tid == 0)
            for (int j = k; j < DSD_SAMPLE_MAX_TOP; j++) {
                o->top_ids[j] = -1;
                o->top_logprobs[j] = 0.0f;
            }
    } else if (tid == 0) {
        o->logprob = 0.0f;
        for (int j = 0; j < DSD_SAMPLE_MAX_TOP; j++) {
            o->top_ids[j] = -1;
            o->top_logprobs[j] = 0.0f;
        }
    }
    if (tid == 0) {
        o->token = (int32_t)pick;
        o->status = isfinite(best.v) ? DSD_SAMPLE_OK : DSD_SAMPLE_NONFINITE;
        count_pick(a.pen, r, V, pick);
    }
}

__global__ void penalty_mark_kernel(uint32_t *row, const int32_t *tokens, int n, int count_from, int64_t V)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    const int32_t t = tokens[i];
    if (t < 0 || t >= V)
        return;
    atomicOr(&row[t], DSD_PEN_SEEN);
    if (i >= count_from)
        atomicAdd(&row[t], 1u);
}

} // namespace

extern "C" {

void cuda_op_sample(struct dsd_backend *be, struct dsd_sample_result *out, const float *logits,
                    const struct dsd_sample_row *rows, int n_rows, uint32_t *pen, int64_t vocab)
{
    struct cuda_backend *cb = cuda(be);
    if (n_rows <= 0)
        return;
    cuda_use(cb);
    // AUTO is SLICES: on an H100 (docs/KERNELS.md, "Sampling") it samples a top-p row in
    // 0.17 ms against this file's 2.87 and a batch of 64 in 0.65 against 2.90; greedy rows pay
    // +8 us at one row and +63 us at 64 (six launches instead of one), which a step cannot know
    // ahead (the rows' modes are on the device)
    if (cb->sampler != DSD_CUDA_SAMPLER_BLOCK) {
        cuda_sample_slices(cb, out, logits, rows, n_rows, pen, vocab);
        return;
    }
    sample_args a = { out, logits, rows, pen, vocab };
    sample_kernel<<<n_rows, SP_THREADS, 0, cb->stream>>>(a);
    CU_LAUNCHED(cb);
}

void cuda_op_penalty_mark(struct dsd_backend *be, uint32_t *pen_row, const int32_t *tokens, int n, int count_from,
                          bool reset, int64_t vocab)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    if (reset && !CU_OK(cb, cudaMemsetAsync(pen_row, 0, (size_t)vocab * sizeof(uint32_t), cb->stream)))
        return;
    if (n <= 0)
        return;
    penalty_mark_kernel<<<(n + 255) / 256, 256, 0, cb->stream>>>(pen_row, tokens, n, count_from, vocab);
    CU_LAUNCHED(cb);
}

void dsd_backend_cuda_set_sampler(struct dsd_backend *be, enum dsd_cuda_sampler s)
{
    cuda(be)->sampler = s;
}

} // extern "C"
