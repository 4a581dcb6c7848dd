/* The acceptance rule of speculative decoding (contract in speculative.h). */
#include "speculative.h"

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double dsd_spec_uniform(uint64_t seed, int64_t pos, enum dsd_spec_draw what)
{
    const uint64_t x = mix64(mix64(mix64(seed) ^ (uint64_t)pos) ^ (uint64_t)what);
    return (double)(x >> 11) * 0x1p-53;
}

int32_t dsd_spec_pick(const float *dist, int64_t V, double u)
{
    double total = 0.0;
    for (int64_t i = 0; i < V; i++)
        total += dist[i];
    const double r = u * total;
    double acc = 0.0;
    int32_t last = 0;
    for (int64_t i = 0; i < V; i++) {
        if (dist[i] <= 0.0f)
            continue;
        last = (int32_t)i;
        acc += dist[i];
        if (r < acc)
            return (int32_t)i;
    }
    return last;
}

int dsd_spec_verify_greedy(const int32_t *draft, int n, const int32_t *target, enum dsd_spec_force force,
                           int32_t *out, int *n_accepted)
{
    int a = 0;
    if (force == DSD_SPEC_FORCE_ACCEPT)
        a = n;
    else if (force == DSD_SPEC_FORCE_NONE)
        while (a < n && draft[a] == target[a])
            a++;
    for (int j = 0; j < a; j++)
        out[j] = draft[j];
    out[a] = target[a];
    *n_accepted = a;
    return a + 1;
}

int dsd_spec_verify_sample(const float *p, const float *q, const int32_t *draft, int n, int64_t V, uint64_t seed,
                           int64_t pos, enum dsd_spec_force force, float *scratch, int32_t *out, int *n_accepted)
{
    int a = 0;
    for (; a < n && force != DSD_SPEC_FORCE_REJECT; a++) {
        const float *pj = p + (int64_t)a * V, *qj = q + (int64_t)a * V;
        const int32_t x = draft[a];
        const double px = pj[x], qx = qj[x];
        /* accept with probability min(1, p(x) / q(x)): u < p/q, i.e. u * q < p */
        if (force == DSD_SPEC_FORCE_ACCEPT || dsd_spec_uniform(seed, pos + a, DSD_SPEC_DRAW_ACCEPT) * qx < px) {
            out[a] = x;
            continue;
        }
        /* rejected: the token comes from the residual norm(max(0, p - q)) */
        double mass = 0.0;
        for (int64_t i = 0; i < V; i++) {
            const float d = pj[i] - qj[i];
            scratch[i] = d > 0.0f ? d : 0.0f;
            mass += scratch[i];
        }
        /* p == q up to rounding leaves no residual: then p itself (x was rejected only by a
         * rounding of p/q below 1) */
        out[a] = dsd_spec_pick(mass > 0.0 ? scratch : pj, V, dsd_spec_uniform(seed, pos + a, DSD_SPEC_DRAW_RESIDUAL));
        *n_accepted = a;
        return a + 1;
    }
    out[a] = dsd_spec_pick(p + (int64_t)a * V, V, dsd_spec_uniform(seed, pos + a, DSD_SPEC_DRAW_BONUS));
    *n_accepted = a;
    return a + 1;
}
