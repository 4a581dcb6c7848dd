/*
 * deepseekd-bench and the model it runs on (tools/bench, docs/BENCH.md):
 *   test_bench BENCH_JSON BENCH_STDOUT KERNELS_JSON DETERMINISM_JSON DETERMINISM_ALT_JSON
 * - a model made from a config alone (dsd_model_new_generated, CPU backend, the tiny preset):
 *   weights where the config says, deterministic in the seed, and a forward pass whose
 *   logits are finite, not all equal and of a sensible size (never time on zeros);
 * - the output of `deepseekd-bench --quick` (run by ctest just before, the bench_quick
 *   fixture): every figure present, positive and finite, floors measured, the per-op
 *   profile covering the layer ops with a floor for each op that has one, the table on stdout;
 * - the output of `deepseekd-bench --quick --kernels` (the bench_kernels_quick fixture): a
 *   line per projection of the tiny model and batch size, each time and floor positive and
 *   the ratio theirs, the floor the longer of bytes and FLOPs; the MoE block alone at each
 *   batch and chunk size, its floor never below its pairs' FLOPs; the sampler's three modes
 *   at each batch size beside one read of the logits rows; the attention and the indexer of
 *   a decode step at each context and batch and of each prefill chunk, per layer, their
 *   floors never below the FLOPs of the selected entries and of the scored keys;
 * - the output of `deepseekd-bench --quick --determinism --threads 2 --batches 1,7` (the
 *   bench_determinism_quick fixture), and the same with --config
 *   tests/data/configs/alt-small.json --batches 1,5: on the CPU backend every decode row and the prefill
 *   chunk are bitwise equal run to run and a sequence's logits alone are bitwise its row in
 *   the batch (the CPU backend's sums do not depend on the batch or the thread split).
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "presets.h"
#include "test.h"

static const char *g_json, *g_stdout, *g_kernels, *g_det, *g_det_alt;

/* Greedy logits of one 5-token prompt on a generated tiny model with this seed. */
static int generated_logits(uint64_t seed, float *logits, int64_t *vocab)
{
    struct dsd_model_config cfg;
    if (mkmodel_preset("tiny", &cfg))
        return -1;
    cfg.num_nextn_predict_layers = 0;
    struct dsd_model_params mp = dsd_model_default_params();
    mp.n_threads = 2;
    struct dsd_model *m;
    struct dsd_err err = {{0}};
    if (dsd_model_new_generated(&cfg, &mp, seed, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, 4, &err);
    struct dsd_kv_seq seq = {0};
    int rc = !kv || dsd_kv_seq_reserve(kv, &seq, 5);
    const int32_t prompt[5] = { 3, 141, 59, 26, 535 };
    struct dsd_batch_seq b = { .tokens = prompt, .n_tokens = 5, .pos0 = 0, .kv = &seq };
    struct dsd_forward_out out = { .logits = logits };
    if (!rc && (rc = dsd_model_forward(m, kv, &b, 1, &out, &err)))
        fprintf(stderr, "%s\n", err.msg);
    *vocab = cfg.vocab_size;
    /* every weight the config implies is bound, with the dtype it has in the checkpoint */
    ASSERT_TRUE(m->w.layers[0].q_b.data && m->w.layers[0].q_b.scale);
    ASSERT_EQ_INT(m->w.layers[0].q_b.dtype, DSD_DTYPE_F8_E4M3);
    ASSERT_EQ_INT(m->w.layers[3].experts[15].down.dtype, DSD_DTYPE_F8_E4M3);
    ASSERT_TRUE(m->w.layers[3].experts[15].down.data != NULL);
    ASSERT_EQ_INT(m->w.embed.dtype, DSD_DTYPE_BF16);
    ASSERT_EQ_INT(m->w.final_norm.dtype, DSD_DTYPE_F32);
    if (kv) {
        dsd_kv_seq_release(kv, &seq);
        dsd_kv_seq_destroy(&seq);
        dsd_kv_cache_free(kv);
    }
    dsd_model_free(m);
    return rc;
}

TEST(generated_model)
{
    const size_t V = 2048;
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b), *c = malloc(V * sizeof *c);
    int64_t vocab = 0;
    ASSERT_TRUE(a && b && c);
    ASSERT_EQ_INT(generated_logits(7, a, &vocab), 0);
    ASSERT_EQ_INT(vocab, (int64_t)V);
    ASSERT_EQ_INT(generated_logits(7, b, &vocab), 0);
    ASSERT_EQ_INT(generated_logits(8, c, &vocab), 0);
    ASSERT_TRUE(memcmp(a, b, V * sizeof *a) == 0);        /* the same seed: the same model */
    ASSERT_TRUE(memcmp(a, c, V * sizeof *a) != 0);        /* another seed: another model */
    double sum = 0, sq = 0;
    int finite = 1;
    for (size_t i = 0; i < V; i++) {
        finite &= isfinite(a[i]) != 0;
        sum += a[i];
        sq += (double)a[i] * a[i];
    }
    const double mean = sum / V, sd = sqrt(sq / V - mean * mean);
    ASSERT_TRUE(finite);
    /* the LM head is scaled for logits of std ~3 (weights.h); activations stayed O(1) */
    if (!(sd > 0.3 && sd < 30))
        TEST_FAIL_AT("logit std %g: activations did not stay O(1) through the layers", sd);
    free(a);
    free(b);
    free(c);
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A figure object: time, floor and ratio positive and finite, the ratio consistent. */
static void check_figure(json_t *parent, const char *key, const char *where)
{
    json_t *f = json_object_get(parent, key);
    if (!json_is_object(f)) {
        TEST_FAIL_AT("%s: no \"%s\"", where, key);
        return;
    }
    const double ms = num(f, "ms"), floor_ms = num(f, "floor_ms"), ratio = num(f, "ratio");
    if (!(ms > 0 && isfinite(ms) && floor_ms > 0 && isfinite(floor_ms) && ratio > 0 && isfinite(ratio)))
        TEST_FAIL_AT("%s %s: ms %g, floor %g, ratio %g must be positive", where, key, ms, floor_ms, ratio);
    ASSERT_NEAR(ratio, ms / floor_ms, 1e-3, 1e-3);
    ASSERT_TRUE(num(f, "weight_bytes") > 0 && num(f, "flops") > 0);
    const char *bound = json_string_value(json_object_get(f, "bound"));
    ASSERT_TRUE(bound && (!strcmp(bound, "bytes") || !strcmp(bound, "flops")));
}

/* The JSON file at path, or NULL after a failure naming where it does not parse. */
static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *r = json_load_file(path, 0, &je);
    if (!r)
        TEST_FAIL_AT("%s: %s (line %d)", path, je.text, je.line);
    return r;
}

TEST(bench_json)
{
    json_t *r = load_json(g_json);
    if (!r)
        return;
    ASSERT_EQ_STR(json_string_value(json_object_get(r, "tool")), "deepseekd-bench");
    ASSERT_EQ_STR(json_string_value(json_object_get(r, "backend")), "cpu");
    const char *date = json_string_value(json_object_get(r, "date"));
    ASSERT_TRUE(date && strlen(date) == 20 && date[10] == 'T');
    json_t *model = json_object_get(r, "model");
    const int layers = (int)num(model, "layers"), dense = (int)num(model, "dense_layers");
    const int experts = (int)num(model, "experts");
    ASSERT_EQ_INT(layers, 3);
    ASSERT_EQ_INT(dense, 1);
    ASSERT_TRUE(num(model, "weight_bytes") > 0);
    json_t *fl = json_object_get(r, "floors");
    ASSERT_TRUE(num(fl, "copy_gbps") > 0 && num(fl, "gemm_tflops") > 0 && num(fl, "linear_op_tflops") > 0);

    json_t *dec = json_object_get(r, "decode");
    ASSERT_EQ_INT(json_array_size(dec), 4);         /* --quick: batches 1, 4 x contexts 64, 256 */
    size_t i;
    json_t *e;
    json_array_foreach(dec, i, e) {
        char where[64];
        snprintf(where, sizeof where, "decode[%zu]", i);
        ASSERT_TRUE(num(e, "batch") >= 1 && num(e, "context") >= 1);
        check_figure(e, "dense_layer", where);
        check_figure(e, "moe_layer", where);
        check_figure(e, "step", where);
        /* its own step (sampled on the backend, no logits downloaded): positive and finite */
        ASSERT_TRUE(num(e, "step_with_sampling_ms") > 0 && isfinite(num(e, "step_with_sampling_ms")));
        json_t *moe = json_object_get(e, "moe_layer");
        const double used = num(moe, "experts_used");
        /* measured on the CPU backend: between top-k and top-k x batch, at most all */
        ASSERT_TRUE(json_is_true(json_object_get(moe, "experts_measured")));
        ASSERT_TRUE(used >= 4 && used <= 4 * num(e, "batch") && used <= experts);
    }
    json_t *pre = json_object_get(r, "prefill");
    ASSERT_EQ_INT(json_array_size(pre), 2);
    json_array_foreach(pre, i, e) {
        char where[64];
        snprintf(where, sizeof where, "prefill[%zu]", i);
        check_figure(e, "dense_layer", where);
        check_figure(e, "moe_layer", where);
        check_figure(e, "chunk", where);
        ASSERT_TRUE(num(e, "gemm_rate_share") > 0);
    }

    json_t *prof = json_object_get(r, "profile");
    json_t *flo = json_object_get(r, "floors");
    const double gemm = num(flo, "gemm_tflops"), vocab = num(json_object_get(r, "model"), "vocab");
    const double hidden = num(json_object_get(r, "model"), "hidden_size");
    ASSERT_TRUE(gemm > 0 && vocab > 0 && hidden > 0);
    /* decode steps at the smallest and the largest batch, then the largest prefill chunk */
    ASSERT_EQ_INT(json_array_size(prof), 3);
    json_array_foreach(prof, i, e) {
        ASSERT_TRUE(i < 2 ? num(e, "chunk") == 0 && num(e, "batch") >= 1 : num(e, "chunk") > 1);
        json_t *ops = json_object_get(e, "ops"), *op;
        size_t k;
        double sum = 0;
        int moe = 0, mlp = 0, topk = 0, attn = 0, head = 0;
        json_array_foreach(ops, k, op) {
            const char *name = json_string_value(json_object_get(op, "op"));
            const double ms = num(op, "ms"), floor_ms = num(op, "floor_ms");
            ASSERT_TRUE(name && ms >= 0 && isfinite(ms) && floor_ms >= 0 && isfinite(floor_ms));
            sum += ms;
            if (!name)
                continue;
            /* per-op floors (bench_op_need): the work ops have one, the small copies none */
            static const char *const with_floor[] = { "q_a", "kv_a", "o_proj", "attn_norm", "mla_attention",
                                                      "indexer_topk", "moe", "mlp", "lm_head", "embed" };
            for (size_t w = 0; w < sizeof with_floor / sizeof *with_floor; w++)
                if (!strcmp(name, with_floor[w]))
                    ASSERT_TRUE(floor_ms > 0);
            if (!strcmp(name, "rope") || !strcmp(name, "mla_kv_store") || !strcmp(name, "gather_rows"))
                ASSERT_TRUE(floor_ms == 0);
            /* the LM head's floor is at least its FLOPs at the measured rate: rows x hidden x vocab */
            if (!strcmp(name, "lm_head")) {
                const double rows = num(e, "chunk") > 0 ? 1 : num(e, "batch");
                ASSERT_TRUE(floor_ms >= 2.0 * rows * hidden * vocab / (gemm * 1e12) * 1e3 * (1 - 1e-6));
            }
            moe += !strcmp(name, "moe");
            mlp += !strcmp(name, "mlp");
            topk += !strcmp(name, "indexer_topk");
            attn += !strcmp(name, "mla_attention");
            head += !strcmp(name, "lm_head");
        }
        /* one of each per layer of its kind: 1 dense and 2 MoE layers */
        ASSERT_EQ_INT(mlp, 1);
        ASSERT_EQ_INT(moe, 2);
        ASSERT_EQ_INT(topk, 3);
        ASSERT_EQ_INT(attn, 3);
        ASSERT_EQ_INT(head, 1);
        ASSERT_TRUE(sum > 0);
        ASSERT_NEAR(sum, num(e, "total_ms"), 1e-4, 1e-3);
    }
    json_decref(r);
}

TEST(bench_table)
{
    FILE *f = fopen(g_stdout, "r");
    ASSERT_TRUE(f != NULL);
    if (!f)
        return;
    char line[512];
    int floors = 0, decode = 0, prefill = 0, profile = 0, ratios = 0;
    while (fgets(line, sizeof line, f)) {
        floors += strstr(line, "floors measured now: copy") != NULL;
        decode += strncmp(line, "decode:", 7) == 0;
        prefill += strncmp(line, "prefill:", 8) == 0;
        profile += strncmp(line, "per-op profile of one ", 22) == 0;
        double ms, fl, x;
        const char *p = strstr(line, " ms  floor ");
        if (p && sscanf(p, " ms  floor %lf ms", &fl) == 1) {
            const char *q = strrchr(line, 'x');
            ASSERT_TRUE(q && sscanf(q, "x%lf", &x) == 1 && x > 0);
            const char *n = p;
            while (n > line && n[-1] != ' ')
                n--;
            ASSERT_TRUE(sscanf(n, "%lf", &ms) == 1 && ms > 0);
            ratios++;
        }
    }
    fclose(f);
    ASSERT_EQ_INT(floors, 1);
    ASSERT_EQ_INT(decode, 1);
    ASSERT_EQ_INT(prefill, 1);
    ASSERT_EQ_INT(profile, 3);                      /* two decode steps, one prefill chunk */
    ASSERT_EQ_INT(ratios, 4 * 3 + 2 * 3);           /* dense, MoE, step per decode and prefill figure */
}

TEST(kernels_json)
{
    json_t *r = load_json(g_kernels);
    if (!r)
        return;
    ASSERT_TRUE(json_is_true(json_object_get(r, "ok")));
    const double copy = num(r, "copy_gbps"), gemm = num(r, "gemm_tflops");
    ASSERT_TRUE(copy > 0 && gemm > 0);
    json_t *k = json_object_get(r, "kernels"), *e;
    size_t i;
    /* the tiny preset: 7 attention/indexer projections, the dense MLP's 3, the router, the
     * shared and a routed expert's gate and down, the LM head; --quick batches 1 and 4 */
    ASSERT_EQ_INT(json_array_size(k), 16 * 2);
    int named_q_a = 0, named_lm = 0;
    json_array_foreach(k, i, e) {
        const double ms = num(e, "ms"), fl = num(e, "floor_ms"), ratio = num(e, "ratio");
        const double rows = num(e, "rows"), cols = num(e, "cols"), M = num(e, "M");
        const char *w = json_string_value(json_object_get(e, "weight"));
        const char *bound = json_string_value(json_object_get(e, "floor"));
        ASSERT_TRUE(w != NULL && bound != NULL);
        ASSERT_TRUE(ms > 0 && fl > 0 && rows > 0 && cols > 0 && (M == 1 || M == 4));
        ASSERT_TRUE(fabs(ratio - ms / fl) <= 1e-3 * ratio);
        /* timed over rotating copies holding >= 256 MiB: every tiny weight gets the cap, 128 */
        ASSERT_TRUE(num(e, "copies") == 128);
        /* the FLOP floor alone, at the measured rate: the floor is never below it */
        ASSERT_TRUE(fl >= 2.0 * M * rows * cols / (gemm * 1e12) * 1e3 * (1 - 1e-3));
        ASSERT_TRUE(!strcmp(bound, "bytes") || !strcmp(bound, "flops"));
        named_q_a += w && !strcmp(w, "q_a");
        named_lm += w && !strcmp(w, "lm_head");
    }
    ASSERT_EQ_INT(named_q_a, 2);
    ASSERT_EQ_INT(named_lm, 2);
    /* the MoE block alone at each --quick batch (1, 4) and chunk (32, 128) */
    struct dsd_model_config cfg;
    ASSERT_EQ_INT(mkmodel_preset("tiny", &cfg), 0);
    const double pair_flops = 2.0 * 3.0 * (double)cfg.hidden_size * (double)cfg.moe_intermediate_size;
    json_t *ops = json_object_get(r, "ops");
    /* 4 sizes of the MoE block, then the sampler: 3 modes x the 2 batches, then the attention
     * and the indexer at 2 contexts x 2 batches and 2 chunks */
    ASSERT_EQ_INT(json_array_size(ops), 4 + 3 * 2 + 2 * (2 * 2 + 2));
    int seen = 0, sampled = 0, attn_seen = 0;
    json_array_foreach(ops, i, e) {
        const double T = num(e, "T"), ms = num(e, "ms"), fl = num(e, "floor_ms"), ratio = num(e, "ratio");
        const char *op = json_string_value(json_object_get(e, "op"));
        ASSERT_TRUE(op != NULL);
        if (op && (!strcmp(op, "mla_attention") || !strcmp(op, "indexer_topk"))) {
            const bool attn = !strcmp(op, "mla_attention");
            const double B = num(e, "batch"), ctx = num(e, "context"), chunk = num(e, "chunk");
            const double mpl = num(e, "ms_per_layer"), fpl = num(e, "floor_ms_per_layer");
            ASSERT_TRUE(num(e, "layers") == 3);     /* every main layer of the --quick model */
            ASSERT_TRUE(mpl > 0 && fpl > 0 && fabs(num(e, "ratio") - mpl / fpl) <= 1e-3 * mpl / fpl);
            /* the FLOPs alone at the measured rate: per token, 2 H n (2L + R) over the n
             * selected entries (attention) or 2 Hi Di over the keys at positions 0..pos where
             * they are more than top-k (fewer are all selected, nothing to score) */
            double flops = 0;
            const double H = cfg.num_attention_heads, L = cfg.kv_lora_rank, R = cfg.qk_rope_head_dim;
            const double Hi = cfg.index_n_heads, Di = cfg.index_head_dim, K = cfg.index_topk;
            const int n_tok = chunk > 0 ? (int)chunk : (int)B;
            for (int t = 0; t < n_tok; t++) {
                const double pos = chunk > 0 ? t : ctx, keys = pos + 1;
                flops += attn ? 2.0 * H * (keys < K ? keys : K) * (2 * L + R) : keys > K ? 2.0 * Hi * Di * keys : 0;
            }
            ASSERT_TRUE(fpl >= flops / (gemm * 1e12) * 1e3 * (1 - 1e-3));
            const int which = chunk == 32 ? 4 : chunk == 128 ? 5 : (ctx == 256) * 2 + (B == 4);
            ASSERT_TRUE(chunk > 0 || ((ctx == 64 || ctx == 256) && (B == 1 || B == 4)));
            attn_seen |= 1 << (which * 2 + attn);
            continue;
        }
        if (op && !strcmp(op, "sample")) {
            /* one read of the logits rows: T x vocab x 4 bytes, at the measured copy rate */
            ASSERT_TRUE(T == 1 || T == 4);
            ASSERT_TRUE(ms > 0 && fabs(ratio - ms / fl) <= 1e-3 * ratio);
            ASSERT_TRUE(fabs(fl - T * cfg.vocab_size * 4.0 / (copy * 1e9) * 1e3) <= 1e-6 * fl);
            sampled++;
            continue;
        }
        ASSERT_TRUE(op && !strcmp(op, "moe"));
        ASSERT_TRUE(num(e, "layer") == 1);     /* the bench model: one dense layer, then MoE */
        seen |= (T == 1) << 0 | (T == 4) << 1 | (T == 32) << 2 | (T == 128) << 3;
        ASSERT_TRUE(ms > 0 && fl > 0 && fabs(ratio - ms / fl) <= 1e-3 * ratio);
        /* every token's routed and shared pairs at the measured FP8 rate: the floor is never below */
        const double pairs = T * (cfg.num_experts_per_tok + cfg.n_shared_experts);
        ASSERT_TRUE(fl >= pairs * pair_flops / (gemm * 1e12) * 1e3 * (1 - 1e-3));
        /* experts expected: E (1 - (1 - k/E)^T), at most E */
        const double ex = num(e, "experts_expected");
        ASSERT_TRUE(ex > 0 && ex <= cfg.n_routed_experts + 1e-9);
    }
    ASSERT_EQ_INT(seen, 15);
    ASSERT_EQ_INT(sampled, 6);
    ASSERT_EQ_INT(attn_seen, (1 << 12) - 1);
    json_decref(r);
}

static void check_determinism(const char *path, int batch)
{
    json_t *r = load_json(path);
    if (!r)
        return;
    json_t *d = json_object_get(r, "determinism");
    ASSERT_TRUE(d != NULL);
    ASSERT_TRUE(!strcmp(json_string_value(json_object_get(r, "device")), "cpu"));
    ASSERT_TRUE(num(d, "batch") == batch && num(d, "decode_rows") == batch);
    ASSERT_TRUE(num(d, "decode_rows_equal") == batch);
    ASSERT_TRUE(json_is_true(json_object_get(d, "prefill_equal")));
    ASSERT_TRUE(num(d, "invariance_probes") == 3);      /* sequences 0, batch/2 and batch-1 */
    ASSERT_TRUE(json_is_true(json_object_get(d, "invariance_bitwise")));
    ASSERT_TRUE(num(d, "invariance_max_abs") == 0 && num(d, "invariance_max_rel") == 0);
    ASSERT_TRUE(json_is_true(json_object_get(d, "invariance_argmax")));
    json_decref(r);
}

TEST(determinism_json)
{
    check_determinism(g_det, 7);
    /* another shape (tests/data/configs/alt-small.json: 6 heads, 24 experts in 3 groups, top-6,
     * 2 shared experts, no ue8m0, another YaRN) */
    check_determinism(g_det_alt, 5);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: test_bench BENCH_JSON BENCH_STDOUT KERNELS_JSON DETERMINISM_JSON DETERMINISM_ALT_JSON\n");
        return 2;
    }
    g_json = argv[1];
    g_stdout = argv[2];
    g_kernels = argv[3];
    g_det = argv[4];
    g_det_alt = argv[5];
    RUN(generated_model);
    RUN(bench_json);
    RUN(bench_table);
    RUN(kernels_json);
    RUN(determinism_json);
    return test_report();
}
