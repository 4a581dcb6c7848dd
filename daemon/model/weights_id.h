/*
 * daemon/model/weights_id.h: an identity of a checkpoint's weights, the part of the KV
 * cache's model fingerprint that the config cannot give (docs/KV_CACHE.md §6.1): two
 * checkpoints of the same shape but other weights (a fine-tune, another revision) must never
 * serve each other's cached pages.
 *
 *   uint8_t id[DSD_WEIGHTS_ID_BYTES];
 *   dsd_weights_id(m->set, id);
 *   uint64_t fp = dsd_kv_fingerprint(&m->dims, layout, n_layers, id, sizeof id);
 *
 * The identity is an xxHash64 over every tensor, in name order: its name, dtype, shape, size
 * and up to three 1 KiB samples of its data (the start, the middle, the end). Reading the
 * samples touches at most three pages of each tensor. A change confined to unsampled bytes
 * of a tensor goes unnoticed; retraining changes every weight, so that is not a practical
 * gap, and deleting the cache directory clears any doubt.
 */
#ifndef DSD_MODEL_WEIGHTS_ID_H
#define DSD_MODEL_WEIGHTS_ID_H

#include <stdint.h>

#include "safetensors.h"

#define DSD_WEIGHTS_ID_BYTES 8
#define DSD_WEIGHTS_ID_SAMPLE 1024      /* bytes per data sample */

/* Writes the identity (little-endian) to out. */
void dsd_weights_id(const struct dsd_st_set *set, uint8_t out[DSD_WEIGHTS_ID_BYTES]);

#endif
