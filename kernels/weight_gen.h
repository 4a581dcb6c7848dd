/*
 * kernels/weight_gen.h: the values generate_weights writes (kernels/ops.h, struct
 * dsd_weight_init), as one definition both backends compile: the CPU backend in C, the CUDA
 * backend in its generator kernel. A counter-based hash (splitmix64's finalizer), so every
 * element is computed on its own, in any order, on any thread.
 */
#ifndef DSD_KERNELS_WEIGHT_GEN_H
#define DSD_KERNELS_WEIGHT_GEN_H

#include <stdint.h>

#ifdef __CUDACC__
#define DSD_GEN_FN static inline __host__ __device__
#else
#define DSD_GEN_FN static inline
#endif

DSD_GEN_FN uint64_t dsd_gen_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The stream of weight number k under seed. */
DSD_GEN_FN uint64_t dsd_gen_stream(uint64_t seed, uint64_t k)
{
    return dsd_gen_mix(seed ^ dsd_gen_mix(k + 0x632be59bd9b4e019ull));
}

/* Element i of a stream: uniform in [-1, 1) with 24 random bits. */
DSD_GEN_FN float dsd_gen_uniform(uint64_t stream, uint64_t i)
{
    uint64_t h = dsd_gen_mix(stream + i * 0xd1b54a32d192ed03ull);
    return (float)(int32_t)((uint32_t)(h >> 40) - (1u << 23)) * (1.0f / (float)(1u << 23));
}

/* FP8 weights: the e4m3 value of element i is uniform over [-448, 448]; the block scale
 * that makes the dequantized values span [-half, half]. */
#define DSD_GEN_FP8_RANGE 448.0f

#undef DSD_GEN_FN
#endif
