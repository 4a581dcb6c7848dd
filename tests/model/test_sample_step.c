/*
 * Sampling inside the forward step (daemon/model/forward.c + the backend's sample op) equals
 * the host sampler (daemon/model/sampling.c) run on the same step's logits: three sequences
 * decode together for 24 steps with their own parameters (greedy with penalties, temperature
 * with top-p and penalties, top-k with min-p), their penalty state on the backend loaded from
 * the prompt, updated by every pick, and reloaded into another slot mid-way (as the engine
 * does when a sequence loses its slot). Also the refusals: a penalty slot out of range,
 * samples asked for without rows.
 *   test_sample_step TINY_DIR
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_harness.h"
#include "sampling.h"
#include "test.h"

static const char *g_tiny;

#define NS 3
#define STEPS 24

TEST(device_sampling_matches_the_host_sampler)
{
    struct dsd_model *m = harness_load(g_tiny, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 2);
    ASSERT_TRUE(m != NULL);
    struct dsd_err err = {{0}};
    const int64_t V = m->cfg.vocab_size;
    ASSERT_EQ_INT(dsd_model_penalty_reserve(m, 4, &err), 0);
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 16, &err);
    ASSERT_TRUE(kv != NULL);

    struct dsd_sampling_params sp[NS];
    for (int i = 0; i < NS; i++)
        sp[i] = dsd_sampling_default_params();
    sp[0].repetition_penalty = 4.0f;                    /* greedy, penalized */
    sp[0].presence_penalty = 2.0f;
    sp[1].temperature = 0.9f;                           /* sampled, nucleus, penalized */
    sp[1].top_p = 0.8f;
    sp[1].frequency_penalty = 2.0f;
    sp[1].seed = 11;
    sp[2].temperature = 1.2f;                           /* sampled, top-k + min-p */
    sp[2].top_k = 40;
    sp[2].min_p = 0.01f;
    sp[2].seed = 12;

    /* the same requests twice: on the backend (dev) and on the host (ref) */
    struct dsd_sampler *dev[NS], *ref[NS];
    int32_t toks[NS][64];
    int len[NS], slot[NS] = { 0, 1, -1 };
    struct dsd_kv_seq seq[NS];
    memset(seq, 0, sizeof seq);
    for (int i = 0; i < NS; i++) {
        ASSERT_EQ_INT(dsd_sampler_new(&sp[i], V, &dev[i], &err), 0);
        ASSERT_EQ_INT(dsd_sampler_new(&sp[i], V, &ref[i], &err), 0);
        len[i] = 5 + 3 * i;
        for (int j = 0; j < len[i]; j++)
            toks[i][j] = (int32_t)((j * 7 + i * 13 + 1) % V);
        dsd_sampler_accept_prompt(ref[i], toks[i], len[i]);
        ASSERT_EQ_INT(dsd_kv_seq_reserve(kv, &seq[i], len[i] + STEPS), 0);
        if (slot[i] >= 0)
            ASSERT_EQ_INT(dsd_model_penalty_load(m, slot[i], toks[i], len[i], len[i], &err), 0);
    }
    float *logits = malloc((size_t)NS * (size_t)V * sizeof *logits);
    int pos[NS] = { 0, 0, 0 }, mismatches = 0, sampled_rows = 0;
    for (int step = 0; step < STEPS; step++) {
        if (step == 10) {
            /* sequence 0 moves to slot 3: its state is rebuilt from its tokens */
            slot[0] = 3;
            ASSERT_EQ_INT(dsd_model_penalty_load(m, 3, toks[0], len[0], len[0] - step, &err), 0);
        }
        struct dsd_batch_seq b[NS];
        struct dsd_sample_row rows[NS];
        for (int i = 0; i < NS; i++) {
            b[i] = (struct dsd_batch_seq){ .tokens = toks[i] + pos[i], .n_tokens = len[i] - pos[i], .pos0 = pos[i],
                                           .kv = &seq[i] };
            dsd_sampler_row(dev[i], i == 1 ? 3 : -1, &rows[i]);
            rows[i].pen_slot = slot[i];
        }
        struct dsd_sample_result res[NS];
        struct dsd_forward_out out = { .logits = logits, .sample = rows, .samples = res };
        ASSERT_EQ_INT(dsd_model_forward(m, kv, b, NS, &out, &err), 0);
        for (int i = 0; i < NS; i++) {
            struct dsd_sample_result want;
            dsd_sampler_sample_full(ref[i], logits + (size_t)i * V, i == 1 ? 3 : -1, &want, NULL);
            dsd_sampler_accept(ref[i], want.token);
            mismatches += want.token != res[i].token;
            sampled_rows += sp[i].temperature > 0;
            if (i == 1) {
                ASSERT_NEAR(res[i].logprob, want.logprob, 1e-6, 0);
                for (int k = 0; k < 3; k++)
                    ASSERT_EQ_INT(res[i].top_ids[k], want.top_ids[k]);
            }
            pos[i] = len[i];
            toks[i][len[i]++] = want.token;     /* both continue with the reference's pick */
        }
    }
    ASSERT_EQ_INT(mismatches, 0);
    /* the backend's penalty rows hold what the host samplers hold (a random tiny model rarely
     * repeats a token, so the picks alone would not show a missed count) */
    uint32_t *pr = malloc((size_t)V * sizeof *pr);
    for (int i = 0; i < 2; i++) {
        m->ops->download(m->be, pr, m->pen + (size_t)slot[i] * (size_t)V, (size_t)V * sizeof *pr);
        ASSERT_EQ_INT(m->ops->synchronize(m->be, &err), 0);
        ASSERT_TRUE(memcmp(pr, dsd_sampler_penalty_state(ref[i]), (size_t)V * sizeof *pr) == 0);
    }
    free(pr);
    ASSERT_TRUE(sampled_rows == 2 * STEPS);

    /* refusals */
    struct dsd_batch_seq b = { .tokens = toks[0] + pos[0], .n_tokens = 1, .pos0 = pos[0], .kv = &seq[0] };
    struct dsd_sample_row row;
    dsd_sampler_row(dev[0], -1, &row);
    struct dsd_sample_result res;
    row.pen_slot = 4;                                   /* 4 slots: 0..3 */
    struct dsd_forward_out out = { .sample = &row, .samples = &res };
    ASSERT_EQ_INT(dsd_model_forward(m, kv, &b, 1, &out, &err), -EINVAL);
    struct dsd_forward_out no_rows = { .samples = &res };
    ASSERT_EQ_INT(dsd_model_forward(m, kv, &b, 1, &no_rows, &err), -EINVAL);
    ASSERT_EQ_INT(dsd_model_penalty_load(m, 4, toks[0], 1, 0, &err), -EINVAL);

    free(logits);
    for (int i = 0; i < NS; i++) {
        dsd_sampler_free(dev[i]);
        dsd_sampler_free(ref[i]);
        dsd_kv_seq_release(kv, &seq[i]);
        dsd_kv_seq_destroy(&seq[i]);
    }
    dsd_kv_cache_free(kv);
    dsd_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_sample_step TINY_DIR\n");
        return 2;
    }
    g_tiny = argv[1];
    RUN(device_sampling_matches_the_host_sampler);
    return test_report();
}
