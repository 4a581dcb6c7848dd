/* The CPU backend's sampling ops (contracts in ops.h): the reference of kernels/sample.h,
 * one row per worker. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"

struct sample_task {
    struct dsd_sample_result *out;
    const float *logits;
    const struct dsd_sample_row *rows;
    uint32_t *pen;
    int64_t vocab;
    uint8_t *scratch;               /* one dsd_sample_scratch_bytes(vocab) block per thread */
};

static void sample_row(void *p, int i, int thread)
{
    const struct sample_task *a = p;
    const struct dsd_sample_row *r = &a->rows[i];
    uint32_t *pen = a->pen && r->pen_slot >= 0 ? a->pen + (size_t)r->pen_slot * (size_t)a->vocab : NULL;
    void *scratch = a->scratch + (size_t)thread * dsd_sample_scratch_bytes(a->vocab);
    dsd_sample_ref(a->logits + (size_t)i * (size_t)a->vocab, a->vocab, r, pen, scratch, &a->out[i], NULL);
}

void cpu_op_sample(struct dsd_backend *be, struct dsd_sample_result *out, const float *logits,
                   const struct dsd_sample_row *rows, int n_rows, uint32_t *pen, int64_t vocab)
{
    struct cpu_backend *cb = cpu(be);
    /* per-thread scratch, allocated by the first call for the vocabulary it samples */
    const size_t need = dsd_sample_scratch_bytes(vocab) * (size_t)dsd_thread_pool_size(cb->pool);
    if (need > cb->sample_scratch_bytes) {
        free(cb->sample_scratch);
        cb->sample_scratch = malloc(need);
        if (!cb->sample_scratch)
            abort();    /* the reference backend has no error path for host memory (as its ops) */
        cb->sample_scratch_bytes = need;
    }
    struct sample_task a = { out, logits, rows, pen, vocab, cb->sample_scratch };
    dsd_thread_pool_run(cb->pool, n_rows, sample_row, &a);
}

void cpu_op_penalty_mark(struct dsd_backend *be, uint32_t *pen_row, const int32_t *tokens, int n, int count_from,
                         bool reset, int64_t vocab)
{
    (void)be;
    if (reset)
        memset(pen_row, 0, (size_t)vocab * sizeof *pen_row);
    for (int i = 0; i < n; i++) {
        const int32_t t = tokens[i];
        if (t < 0 || t >= vocab)
            continue;
        uint32_t c = pen_row[t] & DSD_PEN_COUNT;
        if (i >= count_from && c < DSD_PEN_COUNT)
            c++;
        pen_row[t] = DSD_PEN_SEEN | c;
    }
}
