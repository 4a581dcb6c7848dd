/*
 * daemon/util/rng.h: the project's one pseudo-random generator: xoshiro256** seeded through
 * splitmix64. Deterministic on every machine (integer arithmetic only), so a seeded request
 * samples the same tokens and deepseekd-mkmodel writes the same bytes everywhere.
 *
 *   struct dsd_rng r;
 *   dsd_rng_seed(&r, 42);
 *   uint64_t x = dsd_rng_next(&r);
 *   double u = dsd_rng_uniform(&r);      // [0, 1), 53 random bits
 */
#ifndef DSD_UTIL_RNG_H
#define DSD_UTIL_RNG_H

#include <stdint.h>

struct dsd_rng {
    uint64_t s[4];
};

static inline void dsd_rng_seed(struct dsd_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

static inline uint64_t dsd_rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t dsd_rng_next(struct dsd_rng *r)
{
    uint64_t *s = r->s, out = dsd_rng_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = dsd_rng_rotl(s[3], 45);
    return out;
}

static inline double dsd_rng_uniform(struct dsd_rng *r)
{
    return (double)(dsd_rng_next(r) >> 11) * 0x1p-53;
}

#endif
