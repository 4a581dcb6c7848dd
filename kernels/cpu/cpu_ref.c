/* Scalar reference building blocks (contract in cpu_ref.h). */
#include "cpu_ref.h"

#include "topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numeric.h"

float dsd_e4m3_lut[256];

__attribute__((constructor)) static void init_e4m3_lut(void)
{
    for (int i = 0; i < 256; i++)
        dsd_e4m3_lut[i] = dsd_e4m3_to_f32((uint8_t)i);
}

float dsd_ref_dot(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        acc[i & 7] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void dsd_ref_weight_row(const struct dsd_weight *w, int64_t row, float *out)
{
    int64_t n = w->cols;
    switch (w->dtype) {
    case DSD_DTYPE_F8_E4M3: {
        const uint8_t *p = (const uint8_t *)w->data + row * n;
        for (int64_t i = 0; i < n; i++)
            out[i] = dsd_e4m3_lut[p[i]];
        break;
    }
    case DSD_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + row * n;
        for (int64_t i = 0; i < n; i++)
            out[i] = dsd_bf16_to_f32(p[i]);
        break;
    }
    case DSD_DTYPE_F16: {
        const uint16_t *p = (const uint16_t *)w->data + row * n;
        for (int64_t i = 0; i < n; i++)
            out[i] = dsd_f16_to_f32(p[i]);
        break;
    }
    default: /* F32: the loader admits nothing else */
        memcpy(out, (const float *)w->data + row * n, (size_t)n * sizeof(float));
        break;
    }
}

void dsd_ref_weight_row_dequant(const struct dsd_weight *w, int64_t row, float *out)
{
    dsd_ref_weight_row(w, row, out);
    if (!w->scale)
        return;
    for (int64_t i = 0; i < w->cols; i++)
        out[i] *= dsd_ref_weight_scale(w, row, i / 128);
}

void dsd_ref_act_quant(const float *x, int n, bool ue8m0, uint8_t *q_bytes, float *q_vals, float *scales)
{
    for (int g = 0; g < n / DSD_QUANT_GROUP; g++) {
        const float *v = x + g * DSD_QUANT_GROUP;
        float amax = 0.0f;
        for (int i = 0; i < DSD_QUANT_GROUP; i++)
            amax = fmaxf(amax, fabsf(v[i]));
        float s;
        if (ue8m0) {
            s = dsd_ue8m0_scale(amax);
        } else {
            s = fmaxf(amax, DSD_ACT_AMAX_FLOOR) * (1.0f / DSD_E4M3_MAX);
        }
        scales[g] = s;
        for (int i = 0; i < DSD_QUANT_GROUP; i++) {
            float y = v[i] / s;
            y = fminf(fmaxf(y, -DSD_E4M3_MAX), DSD_E4M3_MAX);
            uint8_t b = dsd_f32_to_e4m3(y);
            if (q_bytes)
                q_bytes[g * DSD_QUANT_GROUP + i] = b;
            if (q_vals)
                q_vals[g * DSD_QUANT_GROUP + i] = dsd_e4m3_lut[b];
        }
    }
}

void dsd_ref_hadamard(float *x, int n)
{
    for (int h = 1; h < n; h *= 2)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float s = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i++)
        x[i] *= s;
}


void dsd_ref_moe_route(const float *logits, const float *bias, int n_experts, int n_group, int topk_group,
                       int k, bool norm, float scale, int32_t *experts, float *weights)
{
    /* One heap block for the scratch vectors: n_experts may be large (config allows 65536). */
    float *s = malloc(((size_t)3 * n_experts + (size_t)n_group) * sizeof(float) + (size_t)n_group * sizeof(int32_t));
    if (!s)
        abort();
    float *b = s + n_experts, *masked = b + n_experts, *gscore = masked + n_experts;
    int32_t *keep = (int32_t *)(gscore + n_group);
    for (int e = 0; e < n_experts; e++) {
        s[e] = 1.0f / (1.0f + expf(-logits[e]));
        b[e] = bias ? s[e] + bias[e] : s[e];
    }
    int per = n_experts / n_group;
    for (int g = 0; g < n_group; g++) {
        float m1 = -INFINITY, m2 = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) {
            if (b[e] > m1) {
                m2 = m1;
                m1 = b[e];
            } else if (b[e] > m2) {
                m2 = b[e];
            }
        }
        gscore[g] = m1 + m2;
    }
    dsd_topk(gscore, n_group, topk_group, keep);
    for (int e = 0; e < n_experts; e++)
        masked[e] = -INFINITY;
    for (int i = 0; i < topk_group; i++)
        for (int e = keep[i] * per; e < (keep[i] + 1) * per; e++)
            masked[e] = b[e];
    dsd_topk(masked, n_experts, k, experts);
    float sum = 0.0f;
    for (int i = 0; i < k; i++) {
        weights[i] = s[experts[i]];
        sum += weights[i];
    }
    for (int i = 0; i < k; i++) {
        if (norm)
            weights[i] /= sum;
        weights[i] *= scale;
    }
    free(s);
}
