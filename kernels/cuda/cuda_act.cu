// Embedding, norms, RoPE, row copies and conversions on the device (contracts in ops.h).
//
// Numerics follow the CPU reference (kernels/cpu/cpu_norm.c, cpu_rope.c, cpu_linear.c): fp32
// arithmetic on bf16 values, outputs rounded to bf16 nearest-even. Products that the CPU
// rounds separately (it is built with -ffp-contract=off) use __fmul_rn/__fadd_rn so nvcc
// does not fuse them into FMAs; only the fp32 summation order of the reductions differs.
// Everything is enqueued on cb->stream; per-token data (tokens, positions, row ids) is read
// from device memory inside the kernels, launch sizes depend only on host ints.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <math.h>

#include "cuda_backend.h"
#include "cuda_internal.h"
#include "cuda_strided.h"

typedef __nv_bfloat16 bf16;

namespace {

__device__ __forceinline__ float bf(const bf16 v)
{
    return __bfloat162float(v);
}

__device__ __forceinline__ bf16 to_bf(float v)
{
    return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float e4m3_val(uint8_t b)
{
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3);
    return __half2float(__half(h));
}

// Element i of a 1-D weight vector (norm weights and biases), as the CPU's cpu_weight_vector
// reads it: BF16/F32 values (F16 is widened to F32 by prepare_weights), FP8 without its scale.
__device__ __forceinline__ float wvec(const void *p, int dtype, int i)
{
    if (dtype == DSD_DTYPE_BF16)
        return bf(((const bf16 *)p)[i]);
    if (dtype == DSD_DTYPE_F8_E4M3)
        return e4m3_val(((const uint8_t *)p)[i]);
    return ((const float *)p)[i];
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ float block_sum(float v)
{
    __shared__ float part[32];
    __shared__ float total;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < nw ? part[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0)
            total = s;
    }
    __syncthreads();
    float r = total;
    __syncthreads();    // part/total may be reused by a second call
    return r;
}

// Row passes: the block's threads over ids 0 .. n-1, 8 loads in flight per thread
// (cuda_strided.h; at one token a row is one block, and a plain strided loop was a chain of
// memory latencies: the embedding's 28 rounds took ~15 us in ncu on an H100). Same ids in the
// same order per thread as that loop, so every sum and result is unchanged.
#define ROW_UNROLL 8
template <typename Load, typename F> __device__ __forceinline__ void row_pass(int n, Load load, F f)
{
    strided_pass<ROW_UNROLL>((int)threadIdx.x, n, (int)blockDim.x, load, f);
}

// ---- embedding ---------------------------------------------------------------------------

// out[t] = round(table[tokens[t]]); FP8 tables are dequantized with their block scales
// (device layout [rows/128][scale_stride]). A token outside the table gives NaN rows.
__global__ void embed_kernel(bf16 *__restrict__ out, const void *__restrict__ table, int dtype,
                             const float *__restrict__ scale, int64_t scale_stride, const int32_t *__restrict__ tokens,
                             int64_t rows, int D)
{
    const int t = blockIdx.x;
    const int64_t tok = tokens[t];
    bf16 *o = out + (size_t)t * D;
    if (tok < 0 || tok >= rows) {
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            o[i] = to_bf(__int_as_float(0x7fc00000));
        return;
    }
    if (dtype == DSD_DTYPE_BF16) {
        const bf16 *r = (const bf16 *)table + (size_t)tok * D;
        row_pass(D, [&](int i) { return r[i]; }, [&](int i, bf16 v) { o[i] = v; });
    } else if (dtype == DSD_DTYPE_F8_E4M3) {
        const uint8_t *r = (const uint8_t *)table + (size_t)tok * D;
        const float *s = scale ? scale + (size_t)(tok / 128) * scale_stride : nullptr;
        row_pass(D, [&](int i) { return s ? __fmul_rn(e4m3_val(r[i]), s[i / 128]) : e4m3_val(r[i]); },
                 [&](int i, float v) { o[i] = to_bf(v); });
    } else {
        const float *r = (const float *)table + (size_t)tok * D;
        row_pass(D, [&](int i) { return r[i]; }, [&](int i, float v) { o[i] = to_bf(v); });
    }
}

// ---- norms -------------------------------------------------------------------------------

// out[t] = round(w * (x[t] * r)), r = 1 / sqrt(sum(x^2)/n + eps), one block per row. out may be
// x (in place, same ld): each thread reads its elements before writing them.
__global__ void rmsnorm_kernel(bf16 *out, int ldo, const bf16 *x, int ldx, const void *__restrict__ w, int wdtype,
                               int n, float eps)
{
    const int t = blockIdx.x;
    const bf16 *xr = x + (size_t)t * ldx;
    float ss = 0.0f;
    row_pass(n, [&](int i) { return bf(xr[i]); }, [&](int, float v) { ss = __fadd_rn(ss, __fmul_rn(v, v)); });
    ss = block_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)n + eps);
    bf16 *o = out + (size_t)t * ldo;
    // x and w of ROW_UNROLL ids loaded before any is written (out may be x)
    row_pass(n, [&](int i) { return make_float2(bf(xr[i]), wvec(w, wdtype, i)); },
             [&](int i, float2 xw) { o[i] = to_bf(__fmul_rn(xw.y, __fmul_rn(xw.x, r))); });
}

// resid[t] = round(resid[t] + delta[t]) (delta may be NULL), then out[t] = rmsnorm(resid[t]).
__global__ void add_rmsnorm_kernel(bf16 *out, bf16 *resid, const bf16 *delta, const void *__restrict__ w,
                                   int wdtype, int n, float eps)
{
    const int t = blockIdx.x;
    bf16 *rr = resid + (size_t)t * n;
    const bf16 *dr = delta ? delta + (size_t)t * n : nullptr;
    float ss = 0.0f;
    // the load is the sum resid + delta rounded to bf16 (a thread stores only what it loaded)
    row_pass(n, [&](int i) { return dr ? bf(to_bf(__fadd_rn(bf(rr[i]), bf(dr[i])))) : bf(rr[i]); },
             [&](int i, float v) {
                 if (dr)
                     rr[i] = to_bf(v);
                 ss = __fadd_rn(ss, __fmul_rn(v, v));
             });
    ss = block_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)n + eps);
    bf16 *o = out + (size_t)t * n;
    row_pass(n, [&](int i) { return make_float2(bf(rr[i]), wvec(w, wdtype, i)); },
             [&](int i, float2 xw) { o[i] = to_bf(__fmul_rn(xw.y, __fmul_rn(xw.x, r))); });
}

// out[t] = round(((x - mean) * r) * w + b), r = 1/sqrt(var + 1e-6), two-pass variance in fp32.
__global__ void layernorm_kernel(bf16 *out, const bf16 *x, const void *__restrict__ w, int wdtype,
                                 const void *__restrict__ b, int bdtype, int n)
{
    const int t = blockIdx.x;
    const bf16 *xr = x + (size_t)t * n;
    float s = 0.0f;
    row_pass(n, [&](int i) { return bf(xr[i]); }, [&](int, float x) { s = __fadd_rn(s, x); });
    const float mean = block_sum(s) / (float)n;
    float v = 0.0f;
    row_pass(n, [&](int i) { return bf(xr[i]); }, [&](int, float x) {
        const float d = __fsub_rn(x, mean);
        v = __fadd_rn(v, __fmul_rn(d, d));
    });
    const float var = block_sum(v) / (float)n;
    const float r = 1.0f / sqrtf(var + 1e-6f);
    bf16 *o = out + (size_t)t * n;
    row_pass(n, [&](int i) { return make_float3(bf(xr[i]), wvec(w, wdtype, i), b ? wvec(b, bdtype, i) : 0.0f); },
             [&](int i, float3 xwb) {
                 const float y = __fmul_rn(__fmul_rn(__fsub_rn(xwb.x, mean), r), xwb.y);
                 o[i] = to_bf(__fadd_rn(y, xwb.z));
             });
}

// ---- RoPE --------------------------------------------------------------------------------

// Block (t, y) for token t: cos/sin of pos * inv_freq[i] (the angle in fp32, cos/sin in double
// then rounded to float, times the attention factor: kernels/cpu/cpu_rope.c), then every pair
// of heads y * heads_per .. rotated in place. Small steps spread a token's heads over several
// blocks (one block for 128 heads at one token was a chain of 16 dependent rounds, ~12 us in
// ncu); large steps keep one block per token (the trig once per token).
__global__ void rope_kernel(bf16 *x, int ld, int n_heads, int head_stride, int offset, const int32_t *__restrict__ pos,
                            const float *__restrict__ inv_freq, int half, float factor, bool interleaved,
                            int heads_per)
{
    extern __shared__ float cs_sn[];    // [half] cos, [half] sin
    const int t = blockIdx.x, h0 = blockIdx.y * heads_per, h1 = min(n_heads, h0 + heads_per);
    const float p = (float)pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float angle = __fmul_rn(p, inv_freq[i]);
        cs_sn[i] = __fmul_rn((float)cos((double)angle), factor);
        cs_sn[half + i] = __fmul_rn((float)sin((double)angle), factor);
    }
    __syncthreads();
    bf16 *row = x + (size_t)t * ld + offset;
    for (int j = h0 * half + threadIdx.x; j < h1 * half; j += blockDim.x) {
        const int h = j / half, i = j % half;
        bf16 *v = row + (size_t)h * head_stride;
        const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        const float x0 = bf(v[a]), x1 = bf(v[b]), c = cs_sn[i], s = cs_sn[half + i];
        v[a] = to_bf(__fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)));
        v[b] = to_bf(__fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c)));
    }
}

// ---- copies and conversions --------------------------------------------------------------

__global__ void concat_kernel(bf16 *__restrict__ out, const bf16 *__restrict__ a, int na, const bf16 *__restrict__ b,
                              int nb, int T)
{
    const int w = na + nb;
    const size_t total = (size_t)T * w;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x) {
        const size_t t = k / w;
        const int c = (int)(k % w);
        out[k] = c < na ? a[t * na + c] : b[t * nb + (c - na)];
    }
}

// out[i] = x[rows[i]], one block per output row (out and x must not overlap).
__global__ void gather_rows_kernel(bf16 *__restrict__ out, const bf16 *__restrict__ x, int n_cols,
                                   const int32_t *__restrict__ rows)
{
    const int i = blockIdx.x;
    const bf16 *src = x + (size_t)rows[i] * n_cols;
    bf16 *dst = out + (size_t)i * n_cols;
    row_pass(n_cols, [&](int c) { return src[c]; }, [&](int c, bf16 v) { dst[c] = v; });
}

__global__ void to_f32_kernel(float *__restrict__ out, const bf16 *__restrict__ x, size_t n)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        out[k] = bf(x[k]);
}

__global__ void from_f32_kernel(bf16 *__restrict__ out, const float *__restrict__ x, size_t n)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        out[k] = to_bf(x[k]);
}

// Grid for an elementwise kernel over n items (grid-stride loops cover the rest).
unsigned grid_for(size_t n, int threads)
{
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 8)
        b = 65535u * 8;
    return b ? (unsigned)b : 1u;
}

int norm_threads(int n)
{
    // about 4 elements per thread, at least a warp, at most 1024 threads
    int t = (n / 4 + 31) / 32 * 32;
    return t < 32 ? 32 : t > 1024 ? 1024 : t;
}

bool weight_vector_ok(struct cuda_backend *cb, const struct dsd_weight *w, int n, const char *op)
{
    if (!w || !w->data || w->rows * w->cols < n ||
        (w->dtype != DSD_DTYPE_BF16 && w->dtype != DSD_DTYPE_F32 && w->dtype != DSD_DTYPE_F8_E4M3)) {
        cuda_fail(cb, -EINVAL, "%s: weight %s missing, too short for %d or of a dtype the GPU does not take", op,
                  w && w->name ? w->name : "?", n);
        return false;
    }
    return true;
}

} // namespace

extern "C" {

void cuda_op_embed(struct dsd_backend *be, void *out, const struct dsd_weight *table, const int32_t *tokens, int T)
{
    struct cuda_backend *cb = cuda(be);
    if (T <= 0)
        return;
    const int D = (int)table->cols;
    if (table->dtype != DSD_DTYPE_BF16 && table->dtype != DSD_DTYPE_F32 && table->dtype != DSD_DTYPE_F8_E4M3) {
        cuda_fail(cb, -EINVAL, "embed: table %s has a dtype the GPU does not take", table->name ? table->name : "?");
        return;
    }
    cuda_use(cb);
    embed_kernel<<<T, norm_threads(D), 0, cb->stream>>>((bf16 *)out, table->data, (int)table->dtype,
                                            table->dtype == DSD_DTYPE_F8_E4M3 ? table->scale : nullptr,
                                            cuda_scale_stride(table), tokens, table->rows, D);
    CU_LAUNCHED(cb);
}

void cuda_op_rmsnorm(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                     int T, int n)
{
    struct cuda_backend *cb = cuda(be);
    if (T <= 0 || n <= 0 || !weight_vector_ok(cb, w, n, "rmsnorm"))
        return;
    cuda_use(cb);
    rmsnorm_kernel<<<T, norm_threads(n), 0, cb->stream>>>((bf16 *)out, ldo, (const bf16 *)x, ldx, w->data,
                                                          (int)w->dtype, n, (float)be->dims.rms_norm_eps);
    CU_LAUNCHED(cb);
}

void cuda_op_add_rmsnorm(struct dsd_backend *be, void *out, void *resid, const void *delta,
                         const struct dsd_weight *w, int T)
{
    struct cuda_backend *cb = cuda(be);
    const int n = (int)be->dims.hidden_size;
    if (T <= 0 || !weight_vector_ok(cb, w, n, "add_rmsnorm"))
        return;
    cuda_use(cb);
    add_rmsnorm_kernel<<<T, norm_threads(n), 0, cb->stream>>>((bf16 *)out, (bf16 *)resid, (const bf16 *)delta,
                                                              w->data, (int)w->dtype, n,
                                                              (float)be->dims.rms_norm_eps);
    CU_LAUNCHED(cb);
}

void cuda_op_layernorm(struct dsd_backend *be, void *out, const void *x, const struct dsd_weight *w,
                       const struct dsd_weight *b, int T, int n)
{
    struct cuda_backend *cb = cuda(be);
    if (T <= 0 || n <= 0 || !weight_vector_ok(cb, w, n, "layernorm") || !weight_vector_ok(cb, b, n, "layernorm"))
        return;
    cuda_use(cb);
    layernorm_kernel<<<T, norm_threads(n), 0, cb->stream>>>((bf16 *)out, (const bf16 *)x, w->data, (int)w->dtype,
                                                            b->data, (int)b->dtype, n);
    CU_LAUNCHED(cb);
}

void cuda_op_rope(struct dsd_backend *be, void *x, int ld, int n_heads, int head_stride, int offset,
                  const int32_t *pos, int T, bool interleaved)
{
    struct cuda_backend *cb = cuda(be);
    if (T <= 0 || n_heads <= 0)
        return;
    const int half = be->dims.qk_rope_head_dim / 2;
    const float *inv_freq = cuda_rope_inv_freq(cb);
    if (!inv_freq) {
        cuda_fail(cb, -EINVAL, "rope: no device RoPE table (cuda_linear_init did not run)");
        return;
    }
    /* up to 64 tokens: blocks of 256 pairs (8 heads of V3.2's 32 pairs); beyond, a block per
     * token is enough to fill the device */
    const int heads_per = T > 64 ? n_heads : (256 + half - 1) / half;
    int threads = heads_per * half;
    threads = threads < 64 ? 64 : threads > 256 ? 256 : (threads + 31) / 32 * 32;
    cuda_use(cb);
    const dim3 grid((unsigned)T, (unsigned)((n_heads + heads_per - 1) / heads_per));
    rope_kernel<<<grid, threads, 2 * half * sizeof(float), cb->stream>>>((bf16 *)x, ld, n_heads, head_stride, offset,
                                                                         pos, inv_freq, half,
                                                                         be->dims.rope_attention_factor, interleaved,
                                                                         heads_per);
    CU_LAUNCHED(cb);
}

void cuda_op_concat(struct dsd_backend *be, void *out, const void *a, int na, const void *b, int nb, int T)
{
    struct cuda_backend *cb = cuda(be);
    size_t total = (size_t)T * (size_t)(na + nb);
    if (!total)
        return;
    cuda_use(cb);
    concat_kernel<<<grid_for(total, 256), 256, 0, cb->stream>>>((bf16 *)out, (const bf16 *)a, na, (const bf16 *)b, nb,
                                                                T);
    CU_LAUNCHED(cb);
}

void cuda_op_gather_rows(struct dsd_backend *be, void *out, const void *x, int n_cols, const int32_t *rows, int n)
{
    struct cuda_backend *cb = cuda(be);
    if (n <= 0 || n_cols <= 0)
        return;
    cuda_use(cb);
    gather_rows_kernel<<<n, norm_threads(n_cols), 0, cb->stream>>>((bf16 *)out, (const bf16 *)x, n_cols, rows);
    CU_LAUNCHED(cb);
}

void cuda_op_to_f32(struct dsd_backend *be, float *out, const void *x, int T, int n)
{
    struct cuda_backend *cb = cuda(be);
    size_t total = (size_t)T * (size_t)n;
    if (!total)
        return;
    cuda_use(cb);
    to_f32_kernel<<<grid_for(total, 256), 256, 0, cb->stream>>>(out, (const bf16 *)x, total);
    CU_LAUNCHED(cb);
}

void cuda_op_from_f32(struct dsd_backend *be, void *out, const float *x, int T, int n)
{
    struct cuda_backend *cb = cuda(be);
    size_t total = (size_t)T * (size_t)n;
    if (!total)
        return;
    cuda_use(cb);
    from_f32_kernel<<<grid_for(total, 256), 256, 0, cb->stream>>>((bf16 *)out, x, total);
    CU_LAUNCHED(cb);
}

} // extern "C"
