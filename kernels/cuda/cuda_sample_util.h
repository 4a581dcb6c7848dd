// Device helpers of the GPU samplers (cuda_sample.cu, one CTA per row; cuda_sample_slices.cu,
// a row in slices): the transform of a logit (penalties, temperature), the order of the
// reference (value descending, id ascending, NaN last), block-wide reductions over a fixed
// tree, p = exp(x - max) and its 32.32 fixed-point mass. Semantics: kernels/sample.h.
#ifndef DSD_CUDA_SAMPLE_UTIL_H
#define DSD_CUDA_SAMPLE_UTIL_H

#include <math.h>
#include <stdint.h>

#include "sample.h"

namespace dsd_sample {


struct row_ctx {
    const float *raw;
    const uint32_t *pen;        // NULL = no penalties
    int64_t V;
    float rep, freq, pres, temp;
};

__device__ __forceinline__ float xform(const row_ctx &c, int64_t i)
{
    float v = c.raw[i];
    if (c.pen) {
        const uint32_t s = c.pen[i], cnt = s & DSD_PEN_COUNT;
        if ((s & DSD_PEN_SEEN) && c.rep != 1.0f)
            v = v > 0 ? v / c.rep : v * c.rep;
        if (cnt)
            v -= c.freq * (float)cnt + c.pres;
    }
    if (c.temp > 0.0f)
        v /= c.temp;
    return v;
}

// (value, id) with NaN below everything; "better" = larger value, then lower id
__device__ __forceinline__ bool better(float a, int64_t ia, float b, int64_t ib)
{
    const bool na = isnan(a), nb = isnan(b);
    if (na != nb)
        return nb;
    if (!na && a != b)
        return a > b;
    return ia < ib;
}

struct arg {
    float v;
    int64_t i;
};

__device__ __forceinline__ arg shfl_arg(arg a, int o)
{
    arg b;
    b.v = __shfl_xor_sync(0xffffffffu, a.v, o);
    b.i = __shfl_xor_sync(0xffffffffu, a.i, o);
    return b;
}

__device__ __forceinline__ arg warp_argmax(arg a)
{
    for (int o = 16; o > 0; o >>= 1) {
        const arg b = shfl_arg(a, o);
        if (better(b.v, b.i, a.v, a.i))
            a = b;
    }
    return a;
}

// block-wide arg-max over NW warps; every thread gets the result (sh: NW + 1 entries)
template <int NW> __device__ arg block_argmax(arg a, arg *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    a = warp_argmax(a);
    __syncthreads();
    if (lane == 0)
        sh[warp] = a;
    __syncthreads();
    if (warp == 0) {
        a = lane < NW ? sh[lane] : arg{ NAN, INT64_MAX };
        a = warp_argmax(a);
        if (lane == 0)
            sh[NW] = a;
    }
    __syncthreads();
    return sh[NW];
}

struct op_sum {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct op_max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct op_max_ll {
    __device__ long long operator()(long long a, long long b) const { return a > b ? a : b; }
};

// block-wide reduction over NW warps with op over a fixed tree (the same order every run);
// every thread gets the result; `id` is op's identity (sh: NW + 1 entries)
template <int NW, typename T, typename Op> __device__ T block_reduce(T v, T *sh, Op op, T id)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < NW ? sh[lane] : id;
        for (int o = 16; o > 0; o >>= 1)
            v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0)
            sh[NW] = v;
    }
    __syncthreads();
    return sh[NW];
}

template <int NW, typename T> __device__ T block_sum(T v, T *sh)
{
    return block_reduce<NW>(v, sh, op_sum(), (T)0);
}

template <int NW> __device__ float block_max(float v, float *sh)
{
    return block_reduce<NW>(v, sh, op_max(), -INFINITY);
}

// exclusive prefix sum over the block of NW warps, in thread order; *total receives the sum
// (sh: 33 entries)
template <int NW> __device__ unsigned long long block_exclusive_scan(unsigned long long v, unsigned long long *sh,
                                                   unsigned long long *total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o)
            incl += n;
    }
    __syncthreads();
    if (lane == 31)
        sh[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        const unsigned long long w = lane < NW ? sh[lane] : 0;
        unsigned long long wi = w;
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned long long n = __shfl_up_sync(0xffffffffu, wi, o);
            if (lane >= o)
                wi += n;
        }
        if (lane < NW)
            sh[lane] = wi - w;      // exclusive offset of each warp
        if (lane == 31)
            sh[32] = wi;
    }
    __syncthreads();
    const unsigned long long r = sh[warp] + incl - v;
    *total = sh[32];
    __syncthreads();
    return r;
}

// p = exp(x - m) as the CPU computes it (NaN -> 0); its key is its bit pattern (p >= 0)
__device__ __forceinline__ float prob_of(float x, float m)
{
    return isnan(x) ? 0.0f : expf(x - m);
}

__device__ __forceinline__ unsigned long long fixq(float p)
{
    return __float2ull_rn(p * 4294967296.0f);
}

// ---- walks over a range of ids [i0, i1) in ascending order (a thread's own range), with the
// kept prefix's last key K and its last kept tie tie_last: kept = key > K, or key == K and
// id <= tie_last (key: the bit pattern of p = exp(x - m)) ----

__device__ __forceinline__ uint32_t key_of(const row_ctx &c, float m, int64_t i)
{
    return __float_as_uint(prob_of(xform(c, i), m));
}

// how many ids of the range have key K
__device__ __forceinline__ unsigned long long count_key(const row_ctx &c, float m, uint32_t K, int64_t i0, int64_t i1)
{
    unsigned long long n = 0;
    for (int64_t i = i0; i < i1; i++)
        n += key_of(c, m, i) == K;
    return n;
}

// the id of the range where the count of ids with key K, starting at k, reaches need (-1: not
// in this range)
__device__ __forceinline__ int64_t nth_key(const row_ctx &c, float m, uint32_t K, int64_t i0, int64_t i1,
                                           unsigned long long k, unsigned long long need)
{
    for (int64_t i = i0; i < i1; i++)
        if (key_of(c, m, i) == K && ++k == need)
            return i;
    return -1;
}

// the kept mass of the range
__device__ __forceinline__ unsigned long long kept_mass(const row_ctx &c, float m, uint32_t K, int64_t tie_last,
                                                       int64_t i0, int64_t i1)
{
    unsigned long long mass = 0;
    for (int64_t i = i0; i < i1; i++) {
        const float p = prob_of(xform(c, i), m);
        const uint32_t key = __float_as_uint(p);
        if (key > K || (key == K && i <= tie_last))
            mass += fixq(p);
    }
    return mass;
}

// the draw: the first kept id of the range where the running kept mass, from acc, passes rr
// (-1: not in this range)
__device__ __forceinline__ int64_t draw_in(const row_ctx &c, float m, uint32_t K, int64_t tie_last, int64_t i0,
                                           int64_t i1, unsigned long long acc, double rr)
{
    for (int64_t i = i0; i < i1; i++) {
        const float p = prob_of(xform(c, i), m);
        const uint32_t key = __float_as_uint(p);
        if (key > K || (key == K && i <= tie_last)) {
            acc += fixq(p);
            if (rr < (double)acc)
                return i;
        }
    }
    return -1;
}

// The sample op's arguments (kernels/ops.h), as every sampling kernel receives them.
struct op_args {
    struct dsd_sample_result *out;
    const float *logits;
    const struct dsd_sample_row *rows;
    uint32_t *pen;
    int64_t V;
};

// A row's context from its parameters: penalties only where the row has some and a slot.
__device__ __forceinline__ row_ctx row_ctx_of(const struct dsd_sample_row &r, const float *logits, uint32_t *pen,
                                               int row, int64_t V)
{
    row_ctx c;
    c.raw = logits + (size_t)row * V;
    c.V = V;
    c.pen = pen && r.pen_slot >= 0 && dsd_sample_row_penalized(&r) ? pen + (size_t)r.pen_slot * V : NULL;
    c.rep = r.repetition_penalty, c.freq = r.frequency_penalty, c.pres = r.presence_penalty;
    c.temp = r.temperature;
    return c;
}

// The pick counted in the penalty state (seen, generated once more; the count saturates).
__device__ __forceinline__ void count_pick(uint32_t *pen, const struct dsd_sample_row &r, int64_t V, int64_t pick)
{
    if (pen && r.pen_slot >= 0) {
        uint32_t *s = pen + (size_t)r.pen_slot * V + pick;
        const uint32_t cnt = *s & DSD_PEN_COUNT;
        *s = DSD_PEN_SEEN | (cnt < DSD_PEN_COUNT ? cnt + 1 : cnt);
    }
}

} // namespace dsd_sample

#endif
