/*
 * The GPU memory plan (daemon/model/mem_plan.c) against numbers this test derives on its own:
 *   test_mem_plan TINY_DIR SHARDED_DIR V32_CONFIG_JSON
 * - weight bytes of a generated checkpoint from its raw safetensors header (read here with
 *   jansson, not through the project's reader), with the rules of mem_plan.h;
 * - the published V3.2 config: parameter counts written out from the dimensions, the
 *   workspace formula of mem_plan.h re-implemented term by term, the KV page from the
 *   656/132-byte entry layout;
 * - 1 GPU and 8 GPUs of 80 GB (neither fits: 8 x 80 GB is less than the weights), 8 GPUs
 *   of an H200's memory (fits), and other configs and KV sizing modes.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mem_plan.h"
#include "safetensors.h"
#include "test.h"

static const char *g_tiny, *g_sharded, *g_v32;
static struct dsd_mem_plan g_plan, g_plan2; /* large: keep them off the stack */

/* An H100 80GB (the default) and an H200, about 139 GiB usable, as given to the plan. */
#define MEM_80GB DSD_MEM_PLAN_H100_80GB_BYTES
#define MEM_H200 (139ull << 30)

static uint64_t cdiv(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

static uint64_t max_u(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* ---- (a) a generated checkpoint's header, read raw ---- */

struct header_sum {
    uint64_t total, experts[64];
    int n_experts;
};

static uint64_t dtype_bytes(const char *dt)
{
    if (!strcmp(dt, "F8_E4M3"))
        return 1;
    if (!strcmp(dt, "BF16") || !strcmp(dt, "F16"))
        return 2;
    if (!strcmp(dt, "F32"))
        return 4;
    fprintf(stderr, "unexpected dtype %s\n", dt);
    abort();
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

static json_t *read_header(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    unsigned char len8[8];
    if (fread(len8, 1, 8, f) != 8)
        abort();
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | len8[i];
    char *text = malloc(n);
    if (fread(text, 1, n, f) != n)
        abort();
    fclose(f);
    json_error_t e;
    json_t *h = json_loadb(text, n, 0, &e);
    free(text);
    if (!h)
        abort();
    return h;
}

static uint64_t numel(json_t *t)
{
    uint64_t n = 1;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(t, "shape"), i, d) n *= (uint64_t)json_integer_value(d);
    return n;
}

/* Device bytes of every tensor of the header by the documented rules: kv_b as bf16; FP8
 * weights 1 byte plus their scale tensor [r][c] as stored, each row padded to a multiple of
 * 4 fp32 entries; norms, norm biases and the router's correction bias as fp32; the rest
 * as stored. The MTP layer's embed_tokens/shared_head.head copies are not loaded. */
static void sum_header(const char *path, int mtp_layer, struct header_sum *s)
{
    memset(s, 0, sizeof *s);
    json_t *h = read_header(path);
    const char *name;
    json_t *t;
    char skip1[128], skip2[128];
    snprintf(skip1, sizeof skip1, "model.layers.%d.embed_tokens.weight", mtp_layer);
    snprintf(skip2, sizeof skip2, "model.layers.%d.shared_head.head.weight", mtp_layer);
    json_object_foreach(h, name, t) {
        if (!strcmp(name, "__metadata__") || has_suffix(name, ".weight_scale_inv") || !strcmp(name, skip1) ||
            !strcmp(name, skip2))
            continue;
        const char *dt = json_string_value(json_object_get(t, "dtype"));
        uint64_t b;
        if (has_suffix(name, "kv_b_proj.weight"))
            b = numel(t) * 2;
        else if (strstr(name, "norm") || strstr(name, "e_score_correction_bias"))
            b = numel(t) * 4;
        else if (!strcmp(dt, "F8_E4M3")) {
            char sname[200];
            snprintf(sname, sizeof sname, "%.*s.weight_scale_inv", (int)(strlen(name) - strlen(".weight")), name);
            json_t *sc = json_object_get(h, sname);
            if (!sc)
                abort();
            uint64_t r = (uint64_t)json_integer_value(json_array_get(json_object_get(sc, "shape"), 0));
            uint64_t c = (uint64_t)json_integer_value(json_array_get(json_object_get(sc, "shape"), 1));
            b = numel(t) + r * ((c + 3) / 4 * 4) * 4;
        } else
            b = numel(t) * dtype_bytes(dt);
        s->total += b;
        const char *ex = strstr(name, ".mlp.experts.");
        if (ex) {
            int e = atoi(ex + strlen(".mlp.experts."));
            s->experts[e] += b;
            if (e + 1 > s->n_experts)
                s->n_experts = e + 1;
        }
    }
    json_decref(h);
}

static void load_cfg(const char *dir, struct dsd_model_config *c)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    struct dsd_err err;
    if (dsd_model_config_load(p, c, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

static struct dsd_mem_plan_params params(int gpus, uint64_t mem)
{
    struct dsd_mem_plan_params p = dsd_mem_plan_default_params();
    p.n_gpus = gpus;
    p.gpu_mem_bytes = mem;
    return p;
}

TEST(checkpoint_weights_match_the_header)
{
    struct dsd_model_config c;
    load_cfg(g_tiny, &c);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", g_tiny);
    struct header_sum hs;
    sum_header(path, c.num_hidden_layers, &hs);
    ASSERT_EQ_INT(hs.n_experts, c.n_routed_experts);
    uint64_t routed = 0;
    for (int e = 0; e < hs.n_experts; e++)
        routed += hs.experts[e];
    ASSERT_TRUE(routed > 0 && routed < hs.total);

    struct dsd_st_set *set, *sharded;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_st_open_dir(g_tiny, &set, &err), 0);
    ASSERT_EQ_INT(dsd_st_open_dir(g_sharded, &sharded, &err), 0);
    struct dsd_mem_plan_params p = params(1, 1ull << 30);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, set, &p, &g_plan, &err), 0);
    ASSERT_TRUE(g_plan.from_checkpoint);
    ASSERT_EQ_INT(g_plan.weights_total, hs.total);
    ASSERT_EQ_INT(g_plan.gpu[0].weights, hs.total);
    ASSERT_EQ_INT(g_plan.weights_by_group[DSD_MEM_PLAN_ROUTED_EXPERTS], routed);
    ASSERT_EQ_INT(g_plan.weights_replicated, hs.total - routed);
    ASSERT_EQ_INT(g_plan.gpu[0].n_experts, c.n_routed_experts);
    /* Sharded files, same tensors: the same plan. */
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, sharded, &p, &g_plan2, &err), 0);
    ASSERT_EQ_INT(g_plan2.weights_total, hs.total);
    /* mkmodel writes the published dtypes, so config.json alone predicts the same. */
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan2, &err), 0);
    ASSERT_EQ_INT(g_plan2.weights_total, hs.total);
    ASSERT_TRUE(!g_plan2.from_checkpoint);

    /* N GPUs: contiguous expert blocks, the first E % N GPUs one more; replicated parts on
     * every GPU, so the sum over GPUs is the total plus (N-1) replicated copies. */
    for (int n = 2; n <= 5; n++) {
        p.n_gpus = n;
        ASSERT_EQ_INT(dsd_mem_plan_compute(&c, set, &p, &g_plan, &err), 0);
        uint64_t sum = 0;
        int e = 0;
        for (int g = 0; g < n; g++) {
            int want_n = c.n_routed_experts / n + (g < c.n_routed_experts % n ? 1 : 0);
            uint64_t want = 0;
            ASSERT_EQ_INT(g_plan.gpu[g].first_expert, e);
            ASSERT_EQ_INT(g_plan.gpu[g].n_experts, want_n);
            for (int k = 0; k < want_n; k++)
                want += hs.experts[e++];
            ASSERT_EQ_INT(g_plan.gpu[g].weights_experts, want);
            ASSERT_EQ_INT(g_plan.gpu[g].weights, hs.total - routed + want);
            sum += g_plan.gpu[g].weights;
        }
        ASSERT_EQ_INT(e, c.n_routed_experts);
        ASSERT_EQ_INT(sum, hs.total + (hs.total - routed) * (uint64_t)(n - 1));
    }
    dsd_st_close(set);
    dsd_st_close(sharded);
}

/* A checkpoint that disagrees with its config.json is an error naming the tensor. */
TEST(checkpoint_shape_mismatch_is_an_error)
{
    struct dsd_model_config c;
    load_cfg(g_tiny, &c);
    c.moe_intermediate_size += 128;     /* every expert tensor now has another shape */
    struct dsd_st_set *set;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_st_open_dir(g_tiny, &set, &err), 0);
    struct dsd_mem_plan_params p = params(1, 1ull << 30);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, set, &p, &g_plan, &err), -EINVAL);
    ASSERT_TRUE(strstr(err.msg, "experts") != NULL);
    dsd_st_close(set);
}

/* ---- (b, c, d) configs from their dimensions ---- */

/* FP8 linear [r][k] with its padded scales; bf16 and fp32 tensors. */
static uint64_t fp8(uint64_t r, uint64_t k)
{
    return r * k + 4 * cdiv(r, 128) * ((cdiv(k, 128) + 3) / 4 * 4);
}

struct expect {
    uint64_t replicated, per_expert, total;
    uint64_t kt, nt, ke, ne;    /* largest FP8 linear in/out features: token / expert linears */
    bool any_fp8;
};

/* Weight bytes of a config from its dimensions: every tensor of DeepSeek V3.2 written out
 * (MLA, indexer, dense MLP / MoE, MTP extras, embedding, head, norms). */
static struct expect expect_weights(const struct dsd_model_config *c)
{
    struct expect x = {0};
    const uint64_t D = (uint64_t)c->hidden_size, Q = (uint64_t)c->q_lora_rank, H = (uint64_t)c->num_attention_heads;
    const uint64_t Nd = (uint64_t)c->qk_nope_head_dim, R = (uint64_t)c->qk_rope_head_dim;
    const uint64_t L = (uint64_t)c->kv_lora_rank, V = (uint64_t)c->v_head_dim;
    const uint64_t Hi = (uint64_t)c->index_n_heads, Di = (uint64_t)c->index_head_dim;
    const uint64_t I = (uint64_t)c->intermediate_size, F = (uint64_t)c->moe_intermediate_size;
    const uint64_t S = (uint64_t)c->n_shared_experts, E = (uint64_t)c->n_routed_experts, Vo = (uint64_t)c->vocab_size;
    const bool q8 = c->fp8_weights;
#define LIN(r, k) (q8 ? fp8((r), (k)) : 2 * (uint64_t)(r) * (uint64_t)(k))
#define TOK(r, k) (x.kt = max_u(x.kt, (k)), x.nt = max_u(x.nt, (r)), LIN((r), (k)))
    const int layers = c->num_hidden_layers + c->num_nextn_predict_layers;
    uint64_t rep = 2 * Vo * D * 2 + 4 * D;      /* embedding, LM head, final norm */
    for (int l = 0; l < layers; l++) {
        rep += 4 * 2 * D;                                                     /* layer norms */
        rep += TOK(Q, D) + 4 * Q + TOK(H * (Nd + R), Q) + TOK(L + R, D) + 4 * L  /* MLA */
               + 2 * H * (Nd + V) * L + TOK(D, H * V);
        rep += TOK(Hi * Di, Q) + TOK(Di, D) + 2 * 4 * Di + 2 * Hi * D;       /* indexer */
        if (l < c->first_k_dense_replace) {
            rep += 2 * TOK(I, D) + TOK(D, I);
        } else {
            rep += 2 * E * D + 4 * E;                                         /* router */
            if (S)
                rep += 2 * TOK(S * F, D) + TOK(D, S * F);
            x.per_expert += 2 * LIN(F, D) + LIN(D, F);
            x.ke = max_u(x.ke, max_u(D, F));
            x.ne = max_u(x.ne, max_u(D, F));
        }
        if (l >= c->num_hidden_layers)
            rep += 4 * D * 3 + 2 * D * 2 * D;                                 /* enorm, hnorm, head norm, eh_proj */
    }
#undef TOK
#undef LIN
    x.replicated = rep;
    x.total = rep + x.per_expert * E;
    x.any_fp8 = q8;
    if (!q8)
        x.kt = x.nt = x.ke = x.ne = 0;
    return x;
}

/* The workspace formula of mem_plan.h, term by term. */
static uint64_t expect_workspace(const struct dsd_model_config *c, const struct expect *x, uint64_t T, uint64_t B,
                                 uint64_t C, uint64_t N)
{
    const uint64_t D = (uint64_t)c->hidden_size, Q = (uint64_t)c->q_lora_rank, H = (uint64_t)c->num_attention_heads;
    const uint64_t Nd = (uint64_t)c->qk_nope_head_dim, R = (uint64_t)c->qk_rope_head_dim;
    const uint64_t L = (uint64_t)c->kv_lora_rank, V = (uint64_t)c->v_head_dim;
    const uint64_t Hi = (uint64_t)c->index_n_heads, Di = (uint64_t)c->index_head_dim, K = (uint64_t)c->index_topk;
    const uint64_t I = (uint64_t)c->intermediate_size, F = (uint64_t)c->moe_intermediate_size;
    const uint64_t S = (uint64_t)c->n_shared_experts, E = (uint64_t)c->n_routed_experts, k = (uint64_t)c->num_experts_per_tok;
    const uint64_t M = c->num_nextn_predict_layers > 0, Vo = (uint64_t)c->vocab_size;
    const bool moe = c->num_hidden_layers + c->num_nextn_predict_layers > c->first_k_dense_replace;
    const bool dense = c->first_k_dense_replace > 0;
    const uint64_t T16 = (T + 15) / 16 * 16, Rc = moe ? T * k : 0, Rc16 = (Rc + 15) / 16 * 16;
    uint64_t w = 4 * T * (3 * D + Q + H * (Nd + R) + (L + R) + Hi * Di + 2 * Di + Hi + H * V + K + 2 * D * M);
    if (x->any_fp8) {
        w += max_u(T16 * (x->kt + 4 * cdiv(x->kt, 128)), Rc16 * (x->ke + 4 * cdiv(x->ke, 128)));
        w += max_u(2 * T16 * x->nt, 2 * Rc16 * x->ne);
        w += 64ull << 20;
    }
    w += 4 * T * 2 * max_u(dense ? I : 0, moe ? S * F : 0);
    if (moe) {
        w += 4 * T * E + 8 * T * k;
        if (N > 1)
            w += 2 * 4 * N * T * D + 8 * N * T * k;
        const uint64_t P = Rc + (S > 0 ? T : 0), Fx = max_u(F, S * F);
        const uint64_t nb = cdiv(P, 128) + E + (S > 0) < P ? cdiv(P, 128) + E + (S > 0) : P;
        const uint64_t grouped = 2 * P * D + T * (D + 4 * cdiv(D, 128)) + 16 * nb +
                                 128 * (nb < 256 ? nb : 256) * (3 * Fx + 4 * cdiv(Fx, 128));
        w += max_u(4 * Rc * (2 * D + 2 * F), grouped);
    }
    w += 4 * T * H * (2 * L + R + 1);
    w += 4 * T * C;
    w += 4 * B * (Vo + D);
    w += 4 * 4 * T + 4 * B * cdiv(C, 64);
    return w;
}

/* One 64-token page over every layer: the latent entry (e4m3 latent, an fp32 scale per 128,
 * bf16 rope part; or all bf16) and the indexer key (Di e4m3 + an fp32 scale). */
static uint64_t expect_page(const struct dsd_model_config *c, bool bf16)
{
    uint64_t L = (uint64_t)c->kv_lora_rank, R = (uint64_t)c->qk_rope_head_dim, Di = (uint64_t)c->index_head_dim;
    uint64_t mla = bf16 ? 2 * (L + R) : L + 4 * (L / 128) + 2 * R;
    return (uint64_t)(c->num_hidden_layers + c->num_nextn_predict_layers) * 64 * (mla + Di + 4);
}

/* Every fitting GPU's bytes add up to its memory exactly. */
static void check_accounting(const struct dsd_mem_plan *pl)
{
    for (int g = 0; g < pl->params.n_gpus; g++) {
        const struct dsd_mem_plan_gpu *u = &pl->gpu[g];
        ASSERT_TRUE(u->fits);
        ASSERT_TRUE(u->kv_pages > 0);
        ASSERT_EQ_INT(u->kv_bytes, (uint64_t)u->kv_pages * pl->page_bytes);
        ASSERT_TRUE(u->kv_bytes <= pl->params.gpu_mem_bytes - u->weights - u->workspace);
        ASSERT_EQ_INT(u->weights + u->workspace + u->kv_bytes + u->unused, pl->params.gpu_mem_bytes);
        ASSERT_EQ_INT(u->kv_tokens, (u->kv_pages - 1) * 64);
    }
}

static void load_v32(struct dsd_model_config *c)
{
    struct dsd_err err;
    int rc = dsd_model_config_load(g_v32, c, &err);
    ASSERT_EQ_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

TEST(v32_config_is_the_published_model)
{
    struct dsd_model_config c;
    load_v32(&c);
    ASSERT_EQ_STR(c.architecture, "DeepseekV32ForCausalLM");
    ASSERT_EQ_INT(c.hidden_size, 7168);
    ASSERT_EQ_INT(c.num_hidden_layers, 61);
    ASSERT_EQ_INT(c.num_nextn_predict_layers, 1);
    ASSERT_EQ_INT(c.n_routed_experts, 256);
    ASSERT_TRUE(c.fp8_weights && c.act_scale_ue8m0);
    /* 671B parameters in the main model (the published size), 685B with the MTP layer. */
    const double D = 7168, Vo = 129280;
    double attn = 1536 * D + 128 * 192 * 1536. + 576 * D + 128 * 256 * 512. + D * 128 * 128 +
                  64 * 128 * 1536. + 128 * D + 64 * D + 1536 + 512 + 2 * 128 + 2 * D;
    double dense = 3 * 18432 * D, moe = 256 * 3 * 2048 * D + 3 * 2048 * D + 256 * D + 256;
    double main_params = 2 * Vo * D + D + 61 * attn + 3 * dense + 58 * moe;
    ASSERT_NEAR(main_params / 1e9, 671.0, 1.0, 0);
    /* The MTP layer: attention, MoE, eh_proj, its norms, and (counted in the published total,
     * though never loaded) its copies of the embedding and LM head. */
    ASSERT_NEAR((main_params + attn + moe + 2 * D * D + 3 * D + 2 * Vo * D) / 1e9, 685.0, 1.0, 0);
}

/* (b) One 80 GB GPU: does not fit; the shortfall is weights + workspace + the least KV pool
 * minus the memory. */
TEST(v32_one_gpu_does_not_fit)
{
    struct dsd_model_config c;
    load_v32(&c);
    struct dsd_mem_plan_params p = params(1, MEM_80GB);
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    struct expect x = expect_weights(&c);
    uint64_t ws = expect_workspace(&c, &x, 2048, 64, 163840, 1);
    uint64_t page = expect_page(&c, false);
    ASSERT_EQ_INT(page, 62ull * (64 * 656 + 64 * 132));
    ASSERT_EQ_INT(g_plan.page_bytes, page);
    ASSERT_EQ_INT(g_plan.weights_total, x.total);
    ASSERT_EQ_INT(g_plan.gpu[0].weights, x.total);
    ASSERT_EQ_INT(g_plan.ws.total, ws);
    ASSERT_TRUE(!g_plan.fits);
    ASSERT_TRUE(!g_plan.gpu[0].fits);
    uint64_t need = x.total + ws + (1 + 2048 / 64) * page;
    ASSERT_EQ_INT(g_plan.shortfall, need - MEM_80GB);
    ASSERT_TRUE(g_plan.shortfall > 600ull * 1000 * 1000 * 1000);
    ASSERT_EQ_INT(g_plan.gpu[0].kv_pages, 0);
}

/* A small step budget (64 tokens): the CUDA backend's grouped experts keep a chunk of up to
 * 256 blocks of 128 intermediate rows whatever T is, which is then larger than the expanded
 * rows' term, and the plan counts it. */
TEST(v32_small_step_counts_the_grouped_experts)
{
    struct dsd_model_config c;
    load_v32(&c);
    struct dsd_mem_plan_params p = params(8, 141ull * 1000 * 1000 * 1000);
    p.max_batch_tokens = 64;
    p.max_batch = 64;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    struct expect x = expect_weights(&c);
    ASSERT_EQ_INT(g_plan.ws.total, expect_workspace(&c, &x, 64, 64, 163840, 8));
    const uint64_t expanded = 4ull * 64 * 8 * (2 * 7168 + 2 * 2048);
    /* 576 pairs in 262 blocks (256 per chunk): 32,768 rows of 2,048 (bf16, e4m3, scales) */
    const uint64_t grouped = 2ull * 576 * 7168 + 64ull * (7168 + 4 * 56) + 16 * 262 + 32768ull * (3 * 2048 + 4 * 16);
    ASSERT_TRUE(grouped > expanded);
    ASSERT_EQ_INT(g_plan.ws.moe_experts, grouped);
}

/* (c) Eight GPUs: experts 32 per GPU. 8 x 80 GB hold less than the weights alone, so no
 * layout fits there; with an H200's memory each it fits and every byte is accounted for. */
TEST(v32_eight_gpus)
{
    struct dsd_model_config c;
    load_v32(&c);
    struct expect x = expect_weights(&c);
    ASSERT_TRUE(x.total > 8 * MEM_80GB);
    uint64_t ws = expect_workspace(&c, &x, 2048, 64, 163840, 8);
    uint64_t page = expect_page(&c, false);
    uint64_t per_gpu = x.replicated + 32 * x.per_expert;
    struct dsd_err err;

    struct dsd_mem_plan_params p = params(8, MEM_80GB);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    ASSERT_TRUE(!g_plan.fits);
    for (int g = 0; g < 8; g++) {
        ASSERT_EQ_INT(g_plan.gpu[g].n_experts, 32);
        ASSERT_EQ_INT(g_plan.gpu[g].first_expert, 32 * g);
        ASSERT_EQ_INT(g_plan.gpu[g].weights, per_gpu);
        ASSERT_EQ_INT(g_plan.gpu[g].workspace, ws);
    }
    ASSERT_EQ_INT(g_plan.shortfall, per_gpu + ws + 33 * page - MEM_80GB);

    p.gpu_mem_bytes = MEM_H200;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    ASSERT_TRUE(g_plan.fits);
    ASSERT_EQ_INT(g_plan.shortfall, 0);
    check_accounting(&g_plan);
    uint64_t leftover = MEM_H200 - per_gpu - ws;
    int64_t pages = (int64_t)((uint64_t)floor(0.9 * (double)leftover) / page);
    int64_t total = 0;
    for (int g = 0; g < 8; g++) {
        ASSERT_EQ_INT(g_plan.gpu[g].kv_pages, pages);
        ASSERT_EQ_INT(g_plan.gpu[g].unused, leftover - (uint64_t)pages * page);
        total += (pages - 1) * 64;
    }
    ASSERT_EQ_INT(g_plan.kv_tokens_total, total);
    /* Tens of GiB of KV per GPU: at least one full 163840-token context. */
    ASSERT_TRUE((pages - 1) * 64 >= 163840);

    /* bf16 KV: 1152 + 132 bytes per token and layer, fewer pages from the same memory. */
    p.kv_dtype = DSD_KV_BF16;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan2, &err), 0);
    ASSERT_EQ_INT(g_plan2.page_bytes, 62ull * 64 * (1152 + 132));
    ASSERT_EQ_INT(g_plan2.gpu[0].kv_pages, (int64_t)((uint64_t)floor(0.9 * (double)leftover) / g_plan2.page_bytes));
    check_accounting(&g_plan2);
}

/* The V3.2 text with `from` replaced by `to`. */
static int parse_edited(struct dsd_model_config *c, const char *const *edits, int n)
{
    FILE *f = fopen(g_v32, "rb");
    static char text[16384];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    for (int i = 0; i < n; i += 2) {
        char *at = strstr(text, edits[i]);
        if (!at) {
            fprintf(stderr, "test bug: %s not in the config\n", edits[i]);
            abort();
        }
        size_t fl = strlen(edits[i]), tl = strlen(edits[i + 1]);
        memmove(at + tl, at + fl, strlen(at + fl) + 1);
        memcpy(at, edits[i + 1], tl);
    }
    struct dsd_err err;
    int rc = dsd_model_config_parse(text, strlen(text), "edited", c, &err);
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    return rc;
}

/* (d) A smaller model of another shape: 64 heads, 64 experts in 4 groups, one dense layer,
 * no MTP layer, bf16 weights; 3 GPUs (experts 22/21/21), bf16 KV, a byte-sized KV pool. */
TEST(other_config_plans_sensibly)
{
    static const char *const edits[] = {
        "\"hidden_size\": 7168", "\"hidden_size\": 2048",
        "\"intermediate_size\": 18432", "\"intermediate_size\": 10880",
        "\"moe_intermediate_size\": 2048", "\"moe_intermediate_size\": 1408",
        "\"num_hidden_layers\": 61", "\"num_hidden_layers\": 27",
        "\"first_k_dense_replace\": 3", "\"first_k_dense_replace\": 1",
        "\"n_routed_experts\": 256", "\"n_routed_experts\": 64",
        "\"n_group\": 8", "\"n_group\": 4",
        "\"topk_group\": 4", "\"topk_group\": 2",
        "\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 6",
        "\"n_shared_experts\": 1", "\"n_shared_experts\": 2",
        "\"num_attention_heads\": 128", "\"num_attention_heads\": 64",
        "\"num_key_value_heads\": 128", "\"num_key_value_heads\": 64",
        "\"q_lora_rank\": 1536", "\"q_lora_rank\": 768",
        "\"index_n_heads\": 64", "\"index_n_heads\": 16",
        "\"index_topk\": 2048", "\"index_topk\": 512",
        "\"num_nextn_predict_layers\": 1", "\"num_nextn_predict_layers\": 0",
        "\"vocab_size\": 129280", "\"vocab_size\": 102400",
        "\"max_position_embeddings\": 163840", "\"max_position_embeddings\": 32768",
        "\"quantization_config\"", "\"no_quantization\"",
    };
    struct dsd_model_config c;
    ASSERT_EQ_INT(parse_edited(&c, edits, (int)(sizeof edits / sizeof edits[0])), 0);
    ASSERT_TRUE(!c.fp8_weights);
    struct expect x = expect_weights(&c);
    struct dsd_mem_plan_params p = params(3, 24ull << 30);
    p.kv_dtype = DSD_KV_BF16;
    p.kv_mode = DSD_MEM_PLAN_KV_BYTES;
    p.kv_bytes = 4ull << 30;
    p.max_batch_tokens = 1000;  /* not a multiple of 16 or 64 */
    p.max_batch = 17;
    p.host_tier_bytes = 10ull << 30;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    ASSERT_EQ_INT(g_plan.n_layers, 27);
    ASSERT_EQ_INT(g_plan.n_moe_layers, 26);
    ASSERT_EQ_INT(g_plan.weights_total, x.total);
    ASSERT_EQ_INT(g_plan.ws.fp8_staging, 0);
    ASSERT_EQ_INT(g_plan.ws.gemm_workspace, 0);
    ASSERT_EQ_INT(g_plan.ws.total, expect_workspace(&c, &x, 1000, 17, 32768, 3));
    uint64_t page = expect_page(&c, true);
    ASSERT_EQ_INT(g_plan.page_bytes, page);
    ASSERT_EQ_INT(g_plan.min_pages, 1 + 16);
    ASSERT_TRUE(g_plan.fits);
    const int counts[3] = { 22, 21, 21 };
    for (int g = 0; g < 3; g++) {
        ASSERT_EQ_INT(g_plan.gpu[g].n_experts, counts[g]);
        ASSERT_EQ_INT(g_plan.gpu[g].weights, x.replicated + (uint64_t)counts[g] * x.per_expert);
        ASSERT_EQ_INT(g_plan.gpu[g].kv_pages, (int64_t)((4ull << 30) / page));
    }
    check_accounting(&g_plan);
    ASSERT_EQ_INT(g_plan.host_pages, (int64_t)((10ull << 30) / page));
    ASSERT_EQ_INT(g_plan.host_tokens, g_plan.host_pages * 64);
    ASSERT_EQ_INT(g_plan.host_bytes, (uint64_t)g_plan.host_pages * page);

    /* A pool that does not fit beside the weights: the shortfall counts the pool asked for. */
    p.kv_mode = DSD_MEM_PLAN_KV_PAGES;
    p.kv_pages = 100000;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    ASSERT_TRUE(!g_plan.fits);
    ASSERT_EQ_INT(g_plan.shortfall, x.replicated + 22 * x.per_expert + g_plan.ws.total + 100000 * page - (24ull << 30));
    ASSERT_TRUE(!g_plan.gpu[0].fits);
    /* ... while GPUs with fewer experts may still fit: the shortfall is the worst GPU's. */
    ASSERT_TRUE(g_plan.gpu[0].shortfall >= g_plan.gpu[2].shortfall);

    /* A pool below one step's pages is raised to the minimum. */
    p.kv_pages = 3;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    ASSERT_TRUE(g_plan.fits && g_plan.kv_raised);
    ASSERT_EQ_INT(g_plan.gpu[1].kv_pages, 17);
    check_accounting(&g_plan);

    /* More GPUs than experts: some hold none. */
    p.n_gpus = 100;
    p.kv_pages = 20;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    ASSERT_EQ_INT(g_plan.gpu[63].n_experts, 1);
    ASSERT_EQ_INT(g_plan.gpu[64].n_experts, 0);
    ASSERT_EQ_INT(g_plan.gpu[99].weights, x.replicated);
}

TEST(bad_parameters)
{
    struct dsd_model_config c;
    load_v32(&c);
    struct dsd_err err;
    struct dsd_mem_plan_params p = params(0, MEM_80GB);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EINVAL);
    p = params(DSD_MEM_PLAN_MAX_GPUS + 1, MEM_80GB);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EINVAL);
    p = params(1, 0);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EINVAL);
    p = params(1, MEM_80GB);
    p.kv_fraction = 1.5;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EINVAL);
    p.kv_fraction = 0;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EINVAL);
    p = params(1, MEM_80GB);
    p.kv_mode = DSD_MEM_PLAN_KV_PAGES;
    p.kv_pages = 0;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EINVAL);
    p = params(1, MEM_80GB);
    p.kv_dtype = DSD_KV_F32;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EINVAL);
    /* Sizes past 64 bits are refused, not wrapped. */
    p = params(1, MEM_80GB);
    p.max_batch_tokens = 1 << 30;
    p.max_batch = 1 << 30;
    c.max_position_embeddings = INT64_C(1) << 32;
    c.vocab_size = 1 << 24;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EOVERFLOW);
    load_v32(&c);
    p = params(1, MEM_80GB);
    p.kv_mode = DSD_MEM_PLAN_KV_PAGES;
    p.kv_pages = INT64_MAX / 2;
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), -EOVERFLOW);
}

/* The printed plan carries the verdict and the exact numbers. */
TEST(printed_plan)
{
    struct dsd_model_config c;
    load_v32(&c);
    struct dsd_err err;
    struct dsd_mem_plan_params p = params(1, MEM_80GB);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ASSERT_EQ_INT(dsd_mem_plan_print(&g_plan, &c, f), 0);
    fclose(f);
    char want[128], digits[32];
    /* the shortfall with thousands separators */
    snprintf(digits, sizeof digits, "%llu", (unsigned long long)g_plan.shortfall);
    char sep[40];
    size_t o = 0, n = strlen(digits);
    for (size_t i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0)
            sep[o++] = ',';
        sep[o++] = digits[i];
    }
    sep[o] = 0;
    snprintf(want, sizeof want, "does not fit: needs %s more bytes per GPU", sep);
    ASSERT_TRUE(strstr(text, want) != NULL);
    free(text);

    p = params(8, MEM_H200);
    ASSERT_EQ_INT(dsd_mem_plan_compute(&c, NULL, &p, &g_plan, &err), 0);
    f = open_memstream(&text, &len);
    ASSERT_EQ_INT(dsd_mem_plan_print(&g_plan, &c, f), 0);
    fclose(f);
    ASSERT_TRUE(strstr(text, "Verdict: fits on 8 GPUs") != NULL);
    ASSERT_TRUE(strstr(text, "Each of GPUs 0-7 (32 routed experts each)") != NULL);
    free(text);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s TINY_DIR SHARDED_DIR V32_CONFIG_JSON\n", argv[0]);
        return 2;
    }
    g_tiny = argv[1];
    g_sharded = argv[2];
    g_v32 = argv[3];
    RUN(checkpoint_weights_match_the_header);
    RUN(checkpoint_shape_mismatch_is_an_error);
    RUN(v32_config_is_the_published_model);
    RUN(v32_one_gpu_does_not_fit);
    RUN(v32_small_step_counts_the_grouped_experts);
    RUN(v32_eight_gpus);
    RUN(other_config_plans_sensibly);
    RUN(bad_parameters);
    RUN(printed_plan);
    return test_report();
}
