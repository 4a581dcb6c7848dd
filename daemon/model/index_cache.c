/* IndexCache's per-layer plan (contract in index_cache.h). */
#include "index_cache.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>

int dsd_index_cache_check(int freq, const char *pattern, int n_layers, const char *where, struct dsd_err *err)
{
    if (freq < 1)
        return dsd_errf(err, -EINVAL,
                        "%s: index_topk_freq = %d: must be at least 1 (1 = every layer computes the indexer)", where,
                        freq);
    if (!pattern || !pattern[0])
        return 0;
    size_t n = strnlen(pattern, DSD_CFG_INDEX_PATTERN_MAX + 1);
    if (n > DSD_CFG_INDEX_PATTERN_MAX)
        return dsd_errf(err, -EINVAL, "%s: index_topk_pattern is longer than %d characters", where,
                        DSD_CFG_INDEX_PATTERN_MAX);
    for (size_t i = 0; i < n; i++)
        if (pattern[i] != 'F' && pattern[i] != 'S')
            return dsd_errf(err, -EINVAL,
                            "%s: index_topk_pattern character %zu is '%c': only 'F' (the layer computes its "
                            "indexer) and 'S' (it reuses the top-k of the 'F' layer before it) are allowed",
                            where, i, pattern[i]);
    if (pattern[0] != 'F')
        return dsd_errf(err, -EINVAL,
                        "%s: index_topk_pattern must start with 'F': layer 0 has no earlier top-k to reuse", where);
    if (n_layers > 0 && n != (size_t)n_layers)
        return dsd_errf(err, -EINVAL,
                        "%s: index_topk_pattern has %zu characters; the model has %d main layers "
                        "(num_hidden_layers): one 'F' or 'S' per layer",
                        where, n, n_layers);
    return 0;
}

int dsd_index_cache_apply(struct dsd_model_config *c, int freq, const char *pattern, struct dsd_err *err)
{
    const bool by_daemon = freq > 0 || (pattern && pattern[0]);
    if (c->index_topk_freq < 1)
        c->index_topk_freq = 1;     /* a config built in code (presets) leaves it 0: unset */
    if (by_daemon) {
        c->index_topk_freq = freq > 0 ? freq : 1;
        snprintf(c->index_topk_pattern, sizeof c->index_topk_pattern, "%s", pattern ? pattern : "");
        if (pattern && strlen(pattern) > DSD_CFG_INDEX_PATTERN_MAX)
            return dsd_errf(err, -EINVAL, "daemon configuration: index_topk_pattern is longer than %d characters",
                            DSD_CFG_INDEX_PATTERN_MAX);
    }
    return dsd_index_cache_check(c->index_topk_freq, c->index_topk_pattern, c->num_hidden_layers,
                                 by_daemon ? "daemon configuration" : "config.json", err);
}

bool dsd_index_cache_computes(const struct dsd_model_config *c, int layer)
{
    if (layer <= 0 || layer >= c->num_hidden_layers)
        return true;    /* layer 0 has nothing to reuse; MTP layers compute their own */
    if (c->index_topk_pattern[0])
        return c->index_topk_pattern[layer] != 'S';
    return c->index_topk_freq <= 1 || (layer - 1) % c->index_topk_freq == 0;
}

int dsd_index_cache_computing_layers(const struct dsd_model_config *c)
{
    int n = 0;
    for (int l = 0; l < c->num_hidden_layers; l++)
        n += dsd_index_cache_computes(c, l);
    return n;
}

bool dsd_index_cache_on(const struct dsd_model_config *c)
{
    return dsd_index_cache_computing_layers(c) < c->num_hidden_layers;
}

void dsd_index_cache_describe(const struct dsd_model_config *c, char *out, size_t len)
{
    if (!len)
        return;
    if (!dsd_index_cache_on(c)) {
        snprintf(out, len, "off");
        return;
    }
    int k = snprintf(out, len, "on: %d of %d layers compute the indexer (", dsd_index_cache_computing_layers(c),
                     c->num_hidden_layers);
    for (int l = 0; l < c->num_hidden_layers && k >= 0 && (size_t)k + 1 < len; l++)
        out[k++] = dsd_index_cache_computes(c, l) ? 'F' : 'S';
    if (k >= 0 && (size_t)k + 1 < len) {
        out[k++] = ')';
        out[k] = '\0';
    } else {
        out[len - 1] = '\0';
    }
}

void dsd_index_cache_mix_id(const struct dsd_model_config *c, uint8_t *id, size_t len)
{
    if (!dsd_index_cache_on(c))
        return;
    char plan[DSD_CFG_INDEX_PATTERN_MAX + 32];
    int k = snprintf(plan, sizeof plan, "indexcache ");
    for (int l = 0; l < c->num_hidden_layers && (size_t)k + 1 < sizeof plan; l++)
        plan[k++] = dsd_index_cache_computes(c, l) ? 'F' : 'S';
    /* the new id: the plan's hash seeded with the weights' id (both change it) */
    uint64_t h = XXH64(plan, (size_t)k, XXH64(id, len, 0));
    for (size_t i = 0; i < len; i++)
        id[i] = (uint8_t)(h >> (8 * (i % 8)));
}
