/*
 * deepseekd-bench --determinism: whether the engine gives the same logits for the same input
 * (docs/BENCH.md, "Determinism").
 *
 *   run to run     one decode step of `batch` sequences run three times with the same tokens
 *                  (the first may run op by op, the later ones from a recorded step), and one
 *                  prefill chunk run twice: every logits row must be bitwise the same.
 *   batch          sequences 0, batch/2 and batch-1 of that step each run alone (batch 1)
 *   invariance     with the same token at the same position over the same context: the
 *                  largest difference to their rows inside the batch, and whether the
 *                  greedy token is the same.
 *
 * Every sequence has the same context (the caller copied sequence 0's KV to the others), so
 * only the tokens differ. A decode step writes each sequence's entry at `ctx` before reading
 * it; a rerun with the same token writes the same entry when the step is deterministic, and a
 * sequence run alone writes the entry its own step computes, which is what "alone" means.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "sampling.h"

static int decode(struct dsd_model *m, struct dsd_kv_cache *kv, struct dsd_kv_seq *seqs, const int *which, int n,
                  const int32_t *tok, int ctx, float *logits, struct dsd_err *err)
{
    struct dsd_batch_seq bs[n];
    struct dsd_kv_seq view[n];
    const int pages = (ctx + 1 + DSD_KV_PAGE_TOKENS - 1) / DSD_KV_PAGE_TOKENS;
    for (int i = 0; i < n; i++) {
        const int s = which ? which[i] : i;
        view[i] = (struct dsd_kv_seq){ .pages = seqs[s].pages, .n_pages = pages, .cap = pages };
        bs[i] = (struct dsd_batch_seq){ .tokens = &tok[s], .n_tokens = 1, .pos0 = ctx, .kv = &view[i] };
    }
    struct dsd_forward_out out = { .logits = logits };
    return dsd_model_forward(m, kv, bs, n, &out, err);
}

int bench_determinism(struct dsd_model *m, struct dsd_kv_cache *kv, struct dsd_kv_seq *seqs, int batch, int ctx,
                      int chunk, uint64_t seed, struct bench_det *r, struct dsd_err *err)
{
    const int V = (int)m->cfg.vocab_size;
    const size_t row = (size_t)V * sizeof(float);
    memset(r, 0, sizeof *r);
    r->batch = batch;
    r->ctx = ctx;
    r->chunk = chunk;
    int32_t *tok = malloc((size_t)(batch > chunk ? batch : chunk) * sizeof *tok);
    float *first = malloc((size_t)batch * row), *again = malloc((size_t)batch * row), *alone = malloc(row);
    int rc = -ENOMEM;
    if (!tok || !first || !again || !alone) {
        dsd_errf(err, -ENOMEM, "out of memory");
        goto out;
    }
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 11;
    for (int i = 0; i < batch; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }

    /* run to run: decode */
    if ((rc = decode(m, kv, seqs, NULL, batch, tok, ctx, first, err)))
        goto out;
    r->decode_rows = batch;
    r->decode_rows_equal = batch;
    for (int run = 1; run < 3; run++) {
        if ((rc = decode(m, kv, seqs, NULL, batch, tok, ctx, again, err)))
            goto out;
        int equal = 0;
        for (int i = 0; i < batch; i++)
            equal += !memcmp(first + (size_t)i * V, again + (size_t)i * V, row);
        if (equal < r->decode_rows_equal)
            r->decode_rows_equal = equal;
    }

    /* batch invariance: a few sequences alone against their rows of `first` */
    const int probe[3] = { 0, batch / 2, batch - 1 };
    r->inv_bitwise = true;
    r->inv_argmax = true;
    for (int p = 0; p < 3; p++) {
        if (p && probe[p] == probe[p - 1])
            continue;
        if ((rc = decode(m, kv, seqs, &probe[p], 1, tok, ctx, alone, err)))
            goto out;
        const float *in = first + (size_t)probe[p] * V;
        double scale = 0;
        for (int v = 0; v < V; v++)
            scale = fmax(scale, fabs((double)in[v]));
        for (int v = 0; v < V; v++) {
            const double d = fabs((double)alone[v] - (double)in[v]);
            r->inv_max_abs = fmax(r->inv_max_abs, d);
            r->inv_max_rel = fmax(r->inv_max_rel, scale > 0 ? d / scale : d);
        }
        r->inv_bitwise &= !memcmp(alone, in, row);
        r->inv_argmax &= dsd_argmax(alone, V) == dsd_argmax(in, V);
        r->inv_probes++;
    }

    /* run to run: a prefill chunk of sequence 0 at position 0 (last row's logits), twice.
     * It overwrites sequence 0's first positions: the last thing measured. */
    for (int i = 0; i < chunk; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    struct dsd_batch_seq bs = { .tokens = tok, .n_tokens = chunk, .pos0 = 0, .kv = &seqs[0] };
    struct dsd_forward_out o1 = { .logits = first }, o2 = { .logits = again };
    if ((rc = dsd_model_forward(m, kv, &bs, 1, &o1, err)) || (rc = dsd_model_forward(m, kv, &bs, 1, &o2, err)))
        goto out;
    r->prefill_equal = !memcmp(first, again, row);
    rc = 0;
out:
    free(tok);
    free(first);
    free(again);
    free(alone);
    return rc;
}
