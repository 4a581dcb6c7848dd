/*
 * kernels/numeric.h: the number formats of DeepSeek V3.2 (docs/MODEL.md §7), one definition each.
 *
 *   bf16:  f32 -> bf16 round-to-nearest-even (NaN stays NaN), bf16 -> f32 exact.
 *   e4m3:  float8 e4m3fn (bias 7, no infinities, 0x7f/0xff = NaN, max finite 448).
 *          f32 -> e4m3 rounds to nearest even and saturates to +-448 (the reference clamps
 *          before casting; a plain cast would turn 449..464 into NaN). e4m3 -> f32 is exact.
 *   ue8m0: activation/KV scales rounded up to a power of two:
 *          s = 2^ceil(log2(amax / 448)), amax floored at 1e-4 (act_quant of the reference).
 *
 * Everything here is inline and allocation-free: kernels call it per element.
 */
#ifndef DSD_KERNELS_NUMERIC_H
#define DSD_KERNELS_NUMERIC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define DSD_E4M3_MAX 448.0f
#define DSD_QUANT_GROUP 128     /* 1x128 activation groups, 128x128 weight blocks */
#define DSD_ACT_AMAX_FLOOR 1e-4f

static inline uint32_t dsd_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float dsd_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t dsd_f32_to_bf16(float f)
{
    uint32_t u = dsd_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)        /* NaN: keep it quiet and NaN */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);            /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

static inline float dsd_bf16_to_f32(uint16_t h)
{
    return dsd_bits_f32((uint32_t)h << 16);
}

/* IEEE half precision to float (exact: every f16 value is a float). */
static inline float dsd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, man = h & 1023;
    float mag;
    if (exp == 0)
        mag = ldexpf((float)man, -24);
    else if (exp == 31)
        mag = man ? NAN : INFINITY;
    else
        mag = ldexpf((float)(man | 1024), (int)exp - 25);
    return sign ? -mag : mag;
}

/* The value f would have after a round trip through bf16 (activations between ops). */
static inline float dsd_round_bf16(float f)
{
    return dsd_bf16_to_f32(dsd_f32_to_bf16(f));
}

static inline float dsd_e4m3_to_f32(uint8_t v)
{
    int exp = (v >> 3) & 15, man = v & 7;
    float mag;
    if (exp == 15 && man == 7)
        return NAN;
    if (exp == 0)
        mag = ldexpf((float)man, -9);               /* subnormal: man/8 * 2^-6 */
    else
        mag = ldexpf((float)(8 + man), exp - 10);   /* (1 + man/8) * 2^(exp-7) */
    return (v & 0x80) ? -mag : mag;
}

static inline uint8_t dsd_f32_to_e4m3(float f)
{
    uint8_t sign = (dsd_f32_bits(f) >> 24) & 0x80;
    if (isnan(f))
        return 0x7f;
    float a = fabsf(f);
    if (a >= DSD_E4M3_MAX)
        return sign | 0x7e;                          /* saturate to 448 */
    if (a < 0x1p-6f) {                               /* subnormal range: steps of 2^-9 */
        int q = (int)nearbyintf(a * 0x1p9f);         /* exact scaling, RNE */
        return sign | (uint8_t)q;                    /* q == 8 encodes 2^-6, the min normal */
    }
    int e;
    float m = frexpf(a, &e);                         /* a = m * 2^e, m in [0.5, 1) */
    int q = (int)nearbyintf(m * 16.0f);              /* 8..16: 1 implicit + 3 mantissa bits */
    if (q == 16) {
        q = 8;
        e++;
    }
    int exp = e - 1 + 7;
    if (exp > 15 || (exp == 15 && q - 8 == 7))
        return sign | 0x7e;
    return sign | (uint8_t)(exp << 3) | (uint8_t)(q - 8);
}

/* The power-of-two scale for a group whose largest magnitude is amax (ue8m0 rounding of
 * amax/448, with the 1e-4 floor of the reference act_quant). */
static inline float dsd_ue8m0_scale(float amax)
{
    if (!(amax > DSD_ACT_AMAX_FLOOR))                /* also catches NaN */
        amax = DSD_ACT_AMAX_FLOOR;
    float s = amax * (1.0f / DSD_E4M3_MAX);
    uint32_t u = dsd_f32_bits(s);
    int exp = (int)((u >> 23) & 0xff) - 127 + ((u & 0x7fffffu) != 0);
    return ldexpf(1.0f, exp);
}

#endif
