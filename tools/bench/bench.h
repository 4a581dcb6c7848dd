/* tools/bench/bench.h: deepseekd-bench's floors (bench_floors.c): the bytes a step must move
 * and the FLOPs it must compute, per layer, from the config alone (docs/BENCH.md has the
 * formulas in words). */
#ifndef DSD_BENCH_H
#define DSD_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

/* What one layer of a step needs at least. */
struct bench_need {
    double weight_bytes;        /* weights that must be read (FP8 as stored, scales included) */
    double kv_bytes;            /* KV and index-K bytes that must be read */
    double flops;               /* multiply-adds x 2 of every matrix product */
    double experts_hit;         /* MoE layers: routed experts the weights count (measured or expected) */
    bool experts_measured;      /* experts_hit is what the step used (else the expectation) */
};

/* Bytes of one weight as stored: rows x cols x dtype size, plus FP8 block scales. */
double bench_weight_bytes(const struct dsd_weight *w);

/* Decode step of `batch` sequences, each one token at position `context` (reading positions
 * 0..context). moe: the layer's FFN is the MoE block (else the dense MLP); experts: the
 * routed experts a MoE layer used (measured), or < 0 for bench_expected_experts. */
struct bench_need bench_decode_need(const struct dsd_model *m, bool moe, int batch, int context, double experts);
/* Prefill chunk of `tokens` tokens at positions [pos0, pos0 + tokens) of one sequence. */
struct bench_need bench_prefill_need(const struct dsd_model *m, bool moe, int tokens, int pos0, double experts);
/* Outside the layers: embedding rows, final norm, LM head over `rows` rows. */
struct bench_need bench_head_need(const struct dsd_model *m, int tokens, int rows);
/* Routed experts a batch of `tokens` tokens uses when each picks k of E independently and
 * uniformly: E (1 - (1 - k/E)^tokens). */
double bench_expected_experts(int E, int k, int tokens);

/* One step for the per-op floors: `tokens` tokens spread evenly over `seqs` sequences, a
 * sequence's tokens at positions pos0, pos0 + 1, ... (a decode step: tokens == seqs, all at
 * pos0 = the context), `rows` rows of logits. */
struct bench_step {
    int seqs, tokens, pos0, rows;
};

/* The floor of one op of the forward pass, by its per-op profile name (daemon/model/forward.c),
 * in `layer` (-1: the head's ops) of step s: the weights it must read, the other bytes it must
 * move (activations, KV entries, index keys; in kv_bytes), its FLOPs. MoE: the expected number
 * of experts hit. Returns false for ops without a floor here (copies, layout, RoPE, stores). */
bool bench_op_need(const struct dsd_model *m, const char *op, int layer, const struct bench_step *s,
                   struct bench_need *n);

/* What bench_determinism found (bench_determinism.c). */
struct bench_det {
    int batch, ctx, chunk;
    int decode_rows;            /* logits rows of the decode step */
    int decode_rows_equal;      /* of them, bitwise equal in all three runs */
    bool prefill_equal;         /* the chunk's logits bitwise equal in both runs */
    int inv_probes;             /* sequences run alone */
    double inv_max_abs;         /* largest |alone - in batch| over their logits */
    double inv_max_rel;         /* the same over the row's largest |logit| */
    bool inv_bitwise;           /* every probe's logits bitwise equal alone and in the batch */
    bool inv_argmax;            /* every probe's greedy token the same */
};

/* Run-to-run determinism and batch invariance on sequences whose KV all hold the same
 * context of ctx positions (pages for ctx + 1 and for chunk positions reserved): see the
 * file's top. Returns 0 with r filled, or the forward pass's error (err says what). */
int bench_determinism(struct dsd_model *m, struct dsd_kv_cache *kv, struct dsd_kv_seq *seqs, int batch, int ctx,
                      int chunk, uint64_t seed, struct bench_det *r, struct dsd_err *err);

#endif
