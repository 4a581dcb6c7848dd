/* Rotary position embedding: interleaved pairs for MLA, half-split pairs for the indexer
 * (docs/MODEL.md §3.4, §4.3). Angles are pos * inv_freq in fp32, as the reference computes them. */
#include "cpu_backend.h"

#include <math.h>

void cpu_op_rope(struct dsd_backend *be, void *x_, int ld, int n_heads, int head_stride, int offset, const int32_t *pos, int T, bool interleaved)
{
    float *x = x_;
    struct cpu_backend *cb = cpu(be);
    const int R = cb->base.dims.qk_rope_head_dim, half = R / 2;
    float cs[half], sn[half];
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            float angle = (float)pos[t] * cb->inv_freq[i];
            cs[i] = (float)cos((double)angle) * cb->rope_attention_factor;
            sn[i] = (float)sin((double)angle) * cb->rope_attention_factor;
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)t * ld + (size_t)h * head_stride + offset;
            for (int i = 0; i < half; i++) {
                int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
                float x0 = v[a], x1 = v[b];
                v[a] = cpu_act(cb, x0 * cs[i] - x1 * sn[i]);
                v[b] = cpu_act(cb, x0 * sn[i] + x1 * cs[i]);
            }
        }
    }
}
