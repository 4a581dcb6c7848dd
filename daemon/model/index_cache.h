/*
 * daemon/model/index_cache.h: IndexCache, the DSA indexer's top-k reused across layers
 * (docs/INDEXCACHE.md). Opt-in: it changes the model's outputs.
 *
 * A main layer either computes its indexer ("F", full) or skips it whole and attends to the
 * top-k selection of the nearest computing layer before it ("S", shared). The plan comes from
 * two settings of struct dsd_model_config:
 *   - index_topk_pattern, one 'F' or 'S' per main layer (layer 0 first), wins when set;
 *   - else index_topk_freq N: layer l computes when max(l - 1, 0) is a multiple of N, so
 *     layers 0 and 1 compute, then every N-th (N = 4 over 61 layers: 0, 1, 5, 9, ..., 57);
 *     N = 1 (the default) computes everywhere.
 * The MTP layers always compute their own indexer. Layer 0 always computes (a pattern must
 * start with 'F').
 *
 *   struct dsd_model_config c;                       // from config.json
 *   if (dsd_index_cache_apply(&c, 4, "", &err) < 0)  // the daemon's keys, 0/"" = keep
 *       die(err.msg);
 *   if (!dsd_index_cache_computes(&c, layer)) reuse the top-k of the layer before;
 */
#ifndef DSD_MODEL_INDEX_CACHE_H
#define DSD_MODEL_INDEX_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

/* Checks a setting: freq >= 1; pattern "" or only 'F'/'S', starting with 'F', and exactly
 * n_layers long (n_layers 0: any length up to DSD_CFG_INDEX_PATTERN_MAX). `where` prefixes
 * the message ("config.json", "index_topk_pattern = ..." of the daemon). Returns 0, -EINVAL. */
int dsd_index_cache_check(int freq, const char *pattern, int n_layers, const char *where, struct dsd_err *err);

/* Overrides c's setting with the daemon's: when freq > 0 or pattern is not empty, both of
 * c's keys are replaced (freq 0 becomes 1, pattern NULL becomes ""), so the daemon can also
 * turn off a setting config.json makes (freq = 1). Then checks the result against c's layers.
 * Returns 0, -EINVAL (err names the key and the rule). */
int dsd_index_cache_apply(struct dsd_model_config *c, int freq, const char *pattern, struct dsd_err *err);

/* Whether layer (main or MTP) computes its indexer. */
bool dsd_index_cache_computes(const struct dsd_model_config *c, int layer);

/* Main layers that compute their indexer (num_hidden_layers when off). */
int dsd_index_cache_computing_layers(const struct dsd_model_config *c);

/* Whether any main layer reuses (IndexCache is on). */
bool dsd_index_cache_on(const struct dsd_model_config *c);

/* Folds the plan into id[0..len) (the weights identity the KV cache's fingerprint takes,
 * daemon/model/weights_id.h), so that cached pages computed under one plan are never served
 * under another: a reusing layer leaves its index-K unwritten, and the latent KV of every
 * later layer differs. Off leaves id as it is (caches written without IndexCache stay valid). */
void dsd_index_cache_mix_id(const struct dsd_model_config *c, uint8_t *id, size_t len);

/* "off", or "on: 3 of 4 layers compute the indexer (FFSF)", truncated to fit len. */
void dsd_index_cache_describe(const struct dsd_model_config *c, char *out, size_t len);

#endif
