// KV stores on the device (contracts in kernels/ops.h, byte layouts in docs/KV_CACHE.md §2-§3):
// the MLA entry (FP8: L e4m3 bytes, L/128 fp32 scales, R bf16 k_pe; or bf16 [latent | k_pe]) and
// the FP8 index key (Hadamard-128, one fp32 scale, 64-token pages). Both write exactly the bytes
// kernels/cpu/cpu_attention.c (cpu_op_mla_kv_store) and cpu_indexer.c (cpu_op_index_k_store)
// write: the same quantizer (dsd_ref_act_quant), the same butterflies, the same bf16 rounding.
#include <math.h>

#include "cuda_attn_util.h"
#include "cuda_backend.h"

using namespace dsd_attn;

// One CTA per token, one warp per 128-group of the latent; the k_pe copy is spread over the CTA.
__global__ void mla_kv_store_fp8_kernel(uint8_t *__restrict__ mla, size_t entry_bytes, const uint16_t *__restrict__ in,
                                        int ld, const int32_t *__restrict__ slot, int L, int R, bool ue8m0)
{
    const int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int32_t s = slot[t];
    if (s < 0)
        return;
    const uint16_t *src = in + (size_t)t * ld;
    uint8_t *e = mla + (size_t)s * entry_bytes;
    const int G = L / 128;
    for (int g = warp; g < G; g += blockDim.x >> 5) {
        float v[4];
        float amax = 0.0f;
        for (int i = 0; i < 4; i++) {
            v[i] = bf16_bits_to_f32(src[g * 128 + 4 * lane + i]);
            amax = fmaxf(amax, fabsf(v[i]));
        }
        amax = warp_max(amax);
        const float sc = quant_scale(amax, ue8m0);
        uint32_t packed = 0;
        for (int i = 0; i < 4; i++)
            packed |= (uint32_t)quant_e4m3(v[i], sc) << (8 * i);
        *reinterpret_cast<uint32_t *>(e + g * 128 + 4 * lane) = packed;
        if (lane == 0)
            *reinterpret_cast<float *>(e + L + 4 * g) = sc;
    }
    // k_pe: the input is already bf16, the CPU's dsd_f32_to_bf16 of it gives the same bits
    uint16_t *pe = reinterpret_cast<uint16_t *>(e + L + 4 * G);
    for (int i = threadIdx.x; i < R; i += blockDim.x)
        pe[i] = src[L + i];
}

__global__ void mla_kv_store_bf16_kernel(uint8_t *__restrict__ mla, size_t entry_bytes,
                                         const uint16_t *__restrict__ in, int ld, const int32_t *__restrict__ slot,
                                         int n)
{
    const int t = blockIdx.x;
    const int32_t s = slot[t];
    if (s < 0)
        return;
    const uint16_t *src = in + (size_t)t * ld;
    uint16_t *e = reinterpret_cast<uint16_t *>(mla + (size_t)s * entry_bytes);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        e[i] = src[i];
}

// One warp per token: Hadamard (fp32, the CPU's butterflies), bf16 rounding, one 128-group FP8
// quantization; key bytes at page + 128 * off, scale at page + 64 * 128 + 4 * off.
__global__ void index_k_store_kernel(uint8_t *__restrict__ index, size_t page_bytes, const uint16_t *__restrict__ k,
                                     const int32_t *__restrict__ slot, int T, bool ue8m0, float had_scale)
{
    const int t = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (t >= T)
        return;
    const int32_t s = slot[t];
    if (s < 0)
        return;
    const size_t page = (size_t)s / 64, off = (size_t)s % 64;
    uint8_t *pg = index + page * page_bytes;
    const uint16_t *src = k + (size_t)t * 128;
    float v[4];
    for (int i = 0; i < 4; i++)
        v[i] = bf16_bits_to_f32(src[4 * lane + i]);
    warp_hadamard128(v, had_scale);
    float amax = 0.0f;
    for (int i = 0; i < 4; i++) {
        v[i] = round_bf16(v[i]);
        amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = warp_max(amax);
    const float sc = quant_scale(amax, ue8m0);
    uint32_t packed = 0;
    for (int i = 0; i < 4; i++)
        packed |= (uint32_t)quant_e4m3(v[i], sc) << (8 * i);
    *reinterpret_cast<uint32_t *>(pg + off * 128 + 4 * lane) = packed;
    if (lane == 0)
        *reinterpret_cast<float *>(pg + 64 * 128 + off * 4) = sc;
}

extern "C" {

void cuda_op_mla_kv_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *kv_in, int ld,
                          const int32_t *slot, int T)
{
    struct cuda_backend *cb = cuda(be);
    const struct dsd_kv_layout *lay = &be->kv_layout;
    if (T <= 0)
        return;
    cuda_use(cb);
    const int L = lay->kv_lora_rank, R = lay->rope_dim;
    const uint16_t *in = (const uint16_t *)kv_in;
    switch (lay->mla_dtype) {
    case DSD_KV_FP8: {
        if (L % 128) {
            cuda_fail(cb, -EINVAL, "mla_kv_store: kv_lora_rank %d is not a multiple of 128", L);
            return;
        }
        int warps = L / 128 < 8 ? L / 128 : 8;
        mla_kv_store_fp8_kernel<<<T, 32 * warps, 0, cb->stream>>>(kv->mla, lay->mla_token_bytes, in, ld, slot, L, R,
                                                                    be->dims.act_scale_ue8m0);
        break;
    }
    case DSD_KV_BF16:
        mla_kv_store_bf16_kernel<<<T, 128, 0, cb->stream>>>(kv->mla, lay->mla_token_bytes, in, ld, slot, L + R);
        break;
    default:
        cuda_fail(cb, -ENOTSUP, "mla_kv_store: fp32 KV (exact numerics) is not a CUDA layout");
        return;
    }
    CU_LAUNCHED(cb);
}

void cuda_op_index_k_store(struct dsd_backend *be, const struct dsd_kv_layer *kv, const void *k, const int32_t *slot,
                           int T)
{
    struct cuda_backend *cb = cuda(be);
    const struct dsd_kv_layout *lay = &be->kv_layout;
    if (T <= 0)
        return;
    cuda_use(cb);
    if (lay->index_dim != 128) {
        cuda_fail(cb, -EINVAL, "index_k_store: index_head_dim %d (must be 128)", lay->index_dim);
        return;
    }
    if (!lay->index_fp8) {
        cuda_fail(cb, -ENOTSUP, "index_k_store: fp32 index keys (exact numerics) are not a CUDA layout");
        return;
    }
    const float had = 1.0f / sqrtf(128.0f);
    const int threads = 256, per = threads / 32;
    index_k_store_kernel<<<(T + per - 1) / per, threads, 0, cb->stream>>>(kv->index, lay->index_page_bytes,
                                                                          (const uint16_t *)k, slot, T,
                                                                          be->dims.act_scale_ue8m0, had);
    CU_LAUNCHED(cb);
}

} // extern "C"
