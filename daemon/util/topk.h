/*
 * daemon/util/topk.h: exact top-k of a score array, the one definition the sampler, the
 * logprob reporting and the CPU kernels (indexer, MoE routing) share.
 *
 *   int32_t idx[8];
 *   dsd_topk(scores, n, 8, idx);    // the 8 best indices, ascending
 */
#ifndef DSD_UTIL_TOPK_H
#define DSD_UTIL_TOPK_H

#include <stdint.h>

/* Indices of the k largest scores[0..n) (NaN counts as -inf), ties to the lower index,
 * written in ascending index order. k <= n; k <= 0 writes nothing. */
void dsd_topk(const float *scores, int n, int k, int32_t *out);

#endif
