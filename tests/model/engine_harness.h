/* tests/model/engine_harness.h: running prompts through the engine for the model tests. */
#ifndef DSD_TEST_ENGINE_HARNESS_H
#define DSD_TEST_ENGINE_HARNESS_H

#include <stdint.h>

#include "model.h"

/* Result of one prompt: logits of every position and the indexer's selections. */
struct prompt_run {
    int n;                  /* positions */
    int64_t vocab;
    int layers, topk;
    float *logits;          /* [n][vocab] */
    int32_t *sel;           /* [layers][n][topk] (main layers) */
    float *hidden;          /* [n][hidden] post-norm */
};

/* Loads dir with the given numerics/KV dtype (NULL on failure, message printed). Production
 * numerics load onto the backend set by harness_set_production_backend (the CPU by default);
 * exact numerics always run on the CPU. */
struct dsd_model *harness_load(const char *dir, enum dsd_numerics numerics, enum dsd_kv_dtype kv, int threads);
void harness_set_production_backend(enum dsd_model_backend b);
/* Same, with IndexCache's daemon-side keys (model.h: 0 / NULL keep config.json's). */
struct dsd_model *harness_load_index_cache(const char *dir, enum dsd_numerics numerics, enum dsd_kv_dtype kv,
                                           int threads, int index_topk_freq, const char *index_topk_pattern);
/* Prefills ids in chunks of `chunk` tokens; 0 on success. */
int harness_run(struct dsd_model *m, const int32_t *ids, int n, int chunk, struct prompt_run *out);
void harness_free_run(struct prompt_run *r);
/* One MTP step over n positions from pos0 in a KV cache of its own: next[i] are the tokens
 * t_{i+1}, hidden [n][hidden] the main model's; logits [n][vocab]. 0 or the error. */
int harness_mtp(struct dsd_model *m, const int32_t *next, const float *hidden, int n, int pos0, float *logits);

/* Greedy generation of n tokens after prompt, one sequence, token by token after the prompt:
 * the reference the daemon's output is compared with. 0 or -1. */
int harness_greedy(struct dsd_model *m, const int32_t *prompt, int np, int n, int32_t *out);

/* max over rows of max|a-b| / max|b| (b = reference). */
double logits_max_rel_err(const float *a, const float *b, int rows, int64_t cols);
/* rows whose argmax agree. */
int logits_argmax_agree(const float *a, const float *b, int rows, int64_t cols);
/* Mean over (layer, position) of |A ∩ B| / |B| for the selections of positions whose
 * selection is sparse (pos+1 > topk); *n_sets receives how many sets were compared. */
double selection_overlap(const int32_t *a, const int32_t *b, int layers, int n, int topk, int *n_sets);

#endif
