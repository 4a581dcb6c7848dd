/* The GPU memory plan (formulas and layout in mem_plan.h). */
#include "mem_plan.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsd_cuda.h"
#include "kv_cache.h"
#include "model.h"

struct dsd_mem_plan_params dsd_mem_plan_default_params(void)
{
    return (struct dsd_mem_plan_params){
        .kv_dtype = DSD_KV_FP8,
        .n_gpus = 1,
        .gpu_mem_bytes = DSD_MEM_PLAN_H100_80GB_BYTES,
        .max_batch = 64,
        .max_batch_tokens = 2048,
        .max_context = 0,
        .kv_mode = DSD_MEM_PLAN_KV_FRACTION,
        .kv_fraction = 0.9,
        .kv_bytes = 0,
        .kv_pages = 0,
        .host_tier_bytes = 0,
    };
}

static const char *const group_names[DSD_MEM_PLAN_GROUP_COUNT] = {
    [DSD_MEM_PLAN_EMBED] = "embedding",
    [DSD_MEM_PLAN_LM_HEAD] = "LM head",
    [DSD_MEM_PLAN_NORMS] = "layer norms",
    [DSD_MEM_PLAN_ATTENTION] = "MLA attention",
    [DSD_MEM_PLAN_INDEXER] = "DSA indexer",
    [DSD_MEM_PLAN_DENSE_MLP] = "dense MLP layers",
    [DSD_MEM_PLAN_SHARED_EXPERTS] = "shared experts",
    [DSD_MEM_PLAN_ROUTER] = "routers",
    [DSD_MEM_PLAN_MTP] = "MTP projections and norms",
    [DSD_MEM_PLAN_ROUTED_EXPERTS] = "routed experts",
};

const char *dsd_mem_plan_group_name(enum dsd_mem_plan_group g)
{
    return (unsigned)g < DSD_MEM_PLAN_GROUP_COUNT ? group_names[g] : "?";
}

/* ---- 64-bit arithmetic that notices overflow ---- */

struct ov {
    bool hit;
};

static uint64_t mul(struct ov *o, uint64_t a, uint64_t b)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
        o->hit = true;
        return 0;
    }
    return r;
}

static uint64_t add(struct ov *o, uint64_t a, uint64_t b)
{
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        o->hit = true;
        return 0;
    }
    return r;
}

static uint64_t mul3(struct ov *o, uint64_t a, uint64_t b, uint64_t c)
{
    return mul(o, mul(o, a, b), c);
}

static uint64_t max64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* ---- Weights ---- */

uint64_t dsd_mem_plan_tensor_bytes(const char *name, enum dsd_tensor_role role, enum dsd_dtype dtype,
                                   int ndim, const int64_t *shape)
{
    uint64_t rows = ndim == 2 ? (uint64_t)shape[0] : 1, cols = ndim == 2 ? (uint64_t)shape[1] : (uint64_t)shape[0];
    uint64_t count = rows * cols;
    if (ends_with(name, ".kv_b_proj.weight"))
        return count * 2;
    if (role == DSD_ROLE_NORM || role == DSD_ROLE_NORM_BIAS || role == DSD_ROLE_ROUTER_BIAS)
        return count * 4;
    if (dtype == DSD_DTYPE_F8_E4M3) {
        uint64_t stride = (uint64_t)dsd_cuda_weight_scale_stride((int)(ceil_div(cols, 128) * 128));
        return count + 4 * ceil_div(rows, 128) * stride;
    }
    return count * dsd_dtype_size(dtype);
}

static enum dsd_mem_plan_group group_of(const char *name)
{
    if (strcmp(name, "model.embed_tokens.weight") == 0)
        return DSD_MEM_PLAN_EMBED;
    if (strcmp(name, "lm_head.weight") == 0)
        return DSD_MEM_PLAN_LM_HEAD;
    if (strcmp(name, "model.norm.weight") == 0 || strstr(name, ".input_layernorm.") ||
        strstr(name, ".post_attention_layernorm."))
        return DSD_MEM_PLAN_NORMS;
    if (strstr(name, ".self_attn.indexer."))
        return DSD_MEM_PLAN_INDEXER;
    if (strstr(name, ".self_attn."))
        return DSD_MEM_PLAN_ATTENTION;
    if (strstr(name, ".mlp.experts."))
        return DSD_MEM_PLAN_ROUTED_EXPERTS;
    if (strstr(name, ".mlp.shared_experts."))
        return DSD_MEM_PLAN_SHARED_EXPERTS;
    if (strstr(name, ".mlp.gate."))
        return DSD_MEM_PLAN_ROUTER;
    if (strstr(name, ".mlp."))
        return DSD_MEM_PLAN_DENSE_MLP;
    return DSD_MEM_PLAN_MTP; /* enorm, hnorm, eh_proj, shared_head.norm */
}

/* Expert e's GPU: contiguous blocks, the first E % N GPUs one expert more. */
static int expert_owner(int e, int n_experts, int n_gpus)
{
    int base = n_experts / n_gpus, extra = n_experts % n_gpus;
    if (e < extra * (base + 1))
        return e / (base + 1);
    return extra + (e - extra * (base + 1)) / base;
}

struct fp8_dims {
    uint64_t kt, nt;    /* largest in/out features of FP8 linears outside routed experts */
    uint64_t ke, ne;    /* the same for routed experts */
    bool any;
};

static int shape_text(char *buf, size_t len, int ndim, const int64_t *shape)
{
    return ndim == 1 ? snprintf(buf, len, "[%lld]", (long long)shape[0])
                     : snprintf(buf, len, "[%lld, %lld]", (long long)shape[0], (long long)shape[1]);
}

static int plan_weights(const struct dsd_model_config *cfg, const struct dsd_st_set *set,
                        struct dsd_mem_plan *plan, struct fp8_dims *fd, struct ov *o, struct dsd_err *err)
{
    struct dsd_tensor_spec *specs;
    size_t n;
    int rc = dsd_tensor_specs(cfg, NULL, &specs, &n);
    if (rc)
        return dsd_errf(err, rc, "memory plan: out of memory listing tensors");
    const int E = cfg->n_routed_experts, G = plan->params.n_gpus;
    uint64_t *per_expert = calloc((size_t)E, sizeof *per_expert);
    if (!per_expert) {
        free(specs);
        return dsd_errf(err, -ENOMEM, "memory plan: out of memory");
    }
    memset(fd, 0, sizeof *fd);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct dsd_tensor_spec *s = &specs[i];
        if (s->optional)
            continue;   /* MTP copies of the embedding and LM head: never loaded */
        enum dsd_dtype dtype = s->official_dtype;
        if (set) {
            const struct dsd_st_tensor *t = dsd_st_find(set, s->name);
            char want[64], got[64];
            shape_text(want, sizeof want, s->ndim, s->shape);
            if (!t) {
                rc = dsd_errf(err, -EINVAL, "memory plan: tensor %s %s is missing from the checkpoint", s->name,
                              want);
                break;
            }
            bool same = t->ndim == s->ndim;
            for (int d = 0; same && d < s->ndim; d++)
                same = t->shape[d] == s->shape[d];
            if (!same) {
                if (t->ndim <= 2)
                    shape_text(got, sizeof got, t->ndim, t->shape);
                else
                    snprintf(got, sizeof got, "a %d-D tensor", t->ndim);
                rc = dsd_errf(err, -EINVAL, "memory plan: tensor %s is %s in the checkpoint; config.json implies %s",
                              s->name, got, want);
                break;
            }
            dtype = t->dtype;
        }
        uint64_t b = dsd_mem_plan_tensor_bytes(s->name, s->role, dtype, s->ndim, s->shape);
        enum dsd_mem_plan_group g = group_of(s->name);
        plan->weights_by_group[g] = add(o, plan->weights_by_group[g], b);
        plan->weights_total = add(o, plan->weights_total, b);
        if (dtype == DSD_DTYPE_F8_E4M3 && !ends_with(s->name, ".kv_b_proj.weight") && s->ndim == 2) {
            fd->any = true;
            uint64_t rows = (uint64_t)s->shape[0], cols = (uint64_t)s->shape[1];
            if (g == DSD_MEM_PLAN_ROUTED_EXPERTS) {
                fd->ke = max64(fd->ke, cols);
                fd->ne = max64(fd->ne, rows);
            } else {
                fd->kt = max64(fd->kt, cols);
                fd->nt = max64(fd->nt, rows);
            }
        }
        if (g == DSD_MEM_PLAN_ROUTED_EXPERTS) {
            const char *at = strstr(s->name, ".mlp.experts.") + strlen(".mlp.experts.");
            int e = atoi(at);
            DSD_CHECK(e >= 0 && e < E);
            per_expert[e] = add(o, per_expert[e], b);
            struct dsd_mem_plan_gpu *gpu = &plan->gpu[expert_owner(e, E, G)];
            gpu->weights_experts = add(o, gpu->weights_experts, b);
        }
    }
    for (int e = 0; e < E; e++)
        plan->expert_bytes_max = max64(plan->expert_bytes_max, per_expert[e]);
    free(per_expert);
    free(specs);
    plan->weights_replicated = plan->weights_total - plan->weights_by_group[DSD_MEM_PLAN_ROUTED_EXPERTS];
    return rc;
}

/* ---- Workspace ---- */

static void plan_workspace(const struct dsd_model_config *c, const struct dsd_mem_plan *plan,
                           const struct fp8_dims *fd, struct dsd_mem_plan_workspace *w, struct ov *o)
{
    const struct dsd_mem_plan_params *p = &plan->params;
    const uint64_t T = (uint64_t)p->max_batch_tokens, T16 = (uint64_t)dsd_cuda_fp8_rows(p->max_batch_tokens);
    const uint64_t B = (uint64_t)p->max_batch, C = (uint64_t)p->max_context, N = (uint64_t)p->n_gpus;
    const uint64_t k = (uint64_t)c->num_experts_per_tok, E = (uint64_t)c->n_routed_experts;
    const uint64_t D = (uint64_t)c->hidden_size, Q = (uint64_t)c->q_lora_rank, H = (uint64_t)c->num_attention_heads;
    const uint64_t Nd = (uint64_t)c->qk_nope_head_dim, R = (uint64_t)c->qk_rope_head_dim;
    const uint64_t L = (uint64_t)c->kv_lora_rank, V = (uint64_t)c->v_head_dim;
    const uint64_t Hi = (uint64_t)c->index_n_heads, Di = (uint64_t)c->index_head_dim, K = (uint64_t)c->index_topk;
    const uint64_t I = (uint64_t)c->intermediate_size, F = (uint64_t)c->moe_intermediate_size;
    const uint64_t S = (uint64_t)c->n_shared_experts, Vocab = (uint64_t)c->vocab_size;
    const uint64_t M = c->num_nextn_predict_layers > 0 ? 1 : 0;
    const bool has_moe = plan->n_moe_layers > 0, has_dense = c->first_k_dense_replace > 0;
    memset(w, 0, sizeof *w);

    uint64_t per_token = 3 * D + Q + H * (Nd + R) + (L + R) + Hi * Di + 2 * Di + Hi + H * V + K + 2 * D * M;
    w->activations = mul3(o, 4, T, per_token);

    const uint64_t Rc = has_moe ? mul(o, T, k) : 0;
    const uint64_t Rc16 = (Rc + 15) & ~(uint64_t)15;
    if (fd->any) {
        uint64_t in_t = mul(o, T16, fd->kt + 4 * ceil_div(fd->kt, 128));
        uint64_t in_e = mul(o, Rc16, fd->ke + 4 * ceil_div(fd->ke, 128));
        uint64_t out_t = mul3(o, 2, T16, fd->nt), out_e = mul3(o, 2, Rc16, fd->ne);
        w->fp8_staging = add(o, max64(in_t, in_e), max64(out_t, out_e));
        w->gemm_workspace = DSD_CUDA_GEMM_WORKSPACE_BYTES;
    }
    uint64_t inter = max64(has_dense ? I : 0, has_moe ? S * F : 0);
    w->mlp = mul3(o, 8, T, inter);
    if (has_moe) {
        w->router = add(o, mul3(o, 4, T, E), mul3(o, 8, T, k));
        if (N > 1)
            w->moe_dispatch = add(o, mul(o, mul3(o, 8, N, T), D), mul(o, mul3(o, 8, N, T), k));
        /* the CUDA backend's grouped experts: y per pair (bf16, the shared expert's pairs too),
         * the tokens quantized, the block list, one chunk of intermediate rows */
        const uint64_t P = add(o, Rc, S > 0 ? T : 0), Fx = max64(F, S * F);
        const uint64_t blocks = (uint64_t)dsd_cuda_grouped_max_blocks((long long)P, (long long)(E + (S > 0 ? 1 : 0)));
        const uint64_t chunk_rows = DSD_CUDA_GROUPED_BLOCK_ROWS * min64(blocks, DSD_CUDA_GROUPED_CHUNK_BLOCKS);
        uint64_t grouped = add(o, mul3(o, 2, P, D), mul(o, T, D + 4 * ceil_div(D, 128)));
        grouped = add(o, grouped, add(o, 16 * blocks, mul(o, chunk_rows, 3 * Fx + 4 * ceil_div(Fx, 128))));
        w->moe_experts = max64(mul3(o, 4, Rc, 2 * D + 2 * F), grouped);
    }
    w->attention = mul(o, mul3(o, 4, T, H), 2 * L + R + 1);
    w->indexer_logits = mul3(o, 4, T, C);
    w->logits = mul3(o, 4, B, Vocab + D);
    w->step_meta = add(o, mul3(o, 16, T, 1), mul3(o, 4, B, ceil_div(C, DSD_KV_PAGE_TOKENS)));
    const uint64_t terms[] = { w->activations, w->fp8_staging, w->gemm_workspace, w->mlp, w->router,
                               w->moe_dispatch, w->moe_experts, w->attention, w->indexer_logits,
                               w->logits, w->step_meta };
    for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++)
        w->total = add(o, w->total, terms[i]);
}

/* ---- The plan ---- */

static int check_params(const struct dsd_mem_plan_params *p, struct dsd_err *err)
{
    if (p->kv_dtype != DSD_KV_FP8 && p->kv_dtype != DSD_KV_BF16)
        return dsd_errf(err, -EINVAL, "memory plan: the KV dtype must be fp8 or bf16");
    if (p->n_gpus < 1 || p->n_gpus > DSD_MEM_PLAN_MAX_GPUS)
        return dsd_errf(err, -EINVAL, "memory plan: %d GPUs; between 1 and %d", p->n_gpus, DSD_MEM_PLAN_MAX_GPUS);
    if (p->gpu_mem_bytes == 0)
        return dsd_errf(err, -EINVAL, "memory plan: GPU memory is 0 bytes");
    if (p->max_batch < 1 || p->max_batch_tokens < 1)
        return dsd_errf(err, -EINVAL, "memory plan: max_batch (%d) and max_batch_tokens (%d) must be at least 1",
                        p->max_batch, p->max_batch_tokens);
    if (p->max_context < 0)
        return dsd_errf(err, -EINVAL, "memory plan: negative context length %lld", (long long)p->max_context);
    switch (p->kv_mode) {
    case DSD_MEM_PLAN_KV_FRACTION:
        if (!(p->kv_fraction > 0.0 && p->kv_fraction <= 1.0))
            return dsd_errf(err, -EINVAL, "memory plan: kv fraction %g is outside (0, 1]", p->kv_fraction);
        return 0;
    case DSD_MEM_PLAN_KV_BYTES:
        if (p->kv_bytes == 0)
            return dsd_errf(err, -EINVAL, "memory plan: KV memory of 0 bytes");
        return 0;
    case DSD_MEM_PLAN_KV_PAGES:
        if (p->kv_pages < 1)
            return dsd_errf(err, -EINVAL, "memory plan: %lld KV pages; at least 1", (long long)p->kv_pages);
        return 0;
    }
    return dsd_errf(err, -EINVAL, "memory plan: unknown KV sizing mode %d", (int)p->kv_mode);
}

int dsd_mem_plan_compute(const struct dsd_model_config *cfg, const struct dsd_st_set *set,
                         const struct dsd_mem_plan_params *p, struct dsd_mem_plan *plan, struct dsd_err *err)
{
    int rc = check_params(p, err);
    if (rc)
        return rc;
    memset(plan, 0, sizeof *plan);
    plan->params = *p;
    if (plan->params.max_context == 0 || plan->params.max_context > cfg->max_position_embeddings)
        plan->params.max_context = cfg->max_position_embeddings;
    plan->from_checkpoint = set != NULL;
    plan->n_layers = dsd_cfg_total_layers(cfg);
    plan->n_moe_layers = plan->n_layers - cfg->first_k_dense_replace;
    const int E = cfg->n_routed_experts, G = p->n_gpus;
    struct ov o = { false };

    struct fp8_dims fd;
    if ((rc = plan_weights(cfg, set, plan, &fd, &o, err)))
        return rc;
    if (set)
        plan->file_tensor_bytes = dsd_st_total_bytes(set);
    plan_workspace(cfg, plan, &fd, &plan->ws, &o);

    float inv_freq[cfg->qk_rope_head_dim / 2 > 0 ? cfg->qk_rope_head_dim / 2 : 1];
    struct dsd_model_dims dims;
    dsd_model_dims_from_config(cfg, inv_freq, &dims);
    const struct dsd_kv_layout lay = dsd_kv_layout_for(&dims, DSD_NUMERICS_PRODUCTION, p->kv_dtype);
    plan->mla_token_bytes = lay.mla_token_bytes;
    plan->index_page_bytes = lay.index_page_bytes;
    plan->page_bytes = dsd_kv_cache_page_bytes(&lay, plan->n_layers);
    plan->min_pages = 1 + (int64_t)ceil_div((uint64_t)p->max_batch_tokens, DSD_KV_PAGE_TOKENS);

    for (int g = 0; g < G; g++) {
        struct dsd_mem_plan_gpu *gpu = &plan->gpu[g];
        int base = E / G, extra = E % G;
        gpu->n_experts = base + (g < extra);
        gpu->first_expert = g * base + (g < extra ? g : extra);
        gpu->weights_replicated = plan->weights_replicated;
        gpu->weights = add(&o, gpu->weights_replicated, gpu->weights_experts);
        gpu->workspace = plan->ws.total;
        uint64_t base_need = add(&o, gpu->weights, gpu->workspace);
        uint64_t leftover = base_need < p->gpu_mem_bytes ? p->gpu_mem_bytes - base_need : 0;

        int64_t pages;
        switch (p->kv_mode) {
        case DSD_MEM_PLAN_KV_FRACTION:
            pages = (int64_t)((uint64_t)floor(p->kv_fraction * (double)leftover) / plan->page_bytes);
            break;
        case DSD_MEM_PLAN_KV_BYTES:
            pages = (int64_t)(p->kv_bytes / plan->page_bytes);
            break;
        default:
            pages = p->kv_pages;
            break;
        }
        if (pages < plan->min_pages) {
            pages = plan->min_pages;
            plan->kv_raised = true;
        }
        /* A fraction only ever asks for what is left: its need is the minimum pool. */
        int64_t need_pages = p->kv_mode == DSD_MEM_PLAN_KV_FRACTION ? plan->min_pages : pages;
        gpu->need = add(&o, base_need, mul(&o, (uint64_t)need_pages, plan->page_bytes));
        if (o.hit)
            break;  /* reported below; nothing after this may use a wrapped size */
        gpu->fits = gpu->need <= p->gpu_mem_bytes;
        if (!gpu->fits) {
            gpu->shortfall = gpu->need - p->gpu_mem_bytes;
            plan->shortfall = max64(plan->shortfall, gpu->shortfall);
            continue;
        }
        gpu->kv_pages = pages;
        gpu->kv_bytes = mul(&o, (uint64_t)pages, plan->page_bytes);
        gpu->kv_tokens = (pages - 1) * DSD_KV_PAGE_TOKENS;
        gpu->unused = p->gpu_mem_bytes - base_need - gpu->kv_bytes;
        plan->kv_tokens_total += gpu->kv_tokens;
    }
    plan->fits = plan->shortfall == 0;
    for (int g = 0; g < G; g++)
        plan->fits &= plan->gpu[g].fits;
    if (!plan->fits)
        plan->kv_tokens_total = 0;
    /* A raised pool only matters when it is the pool the plan ends up with. */
    if (p->kv_mode == DSD_MEM_PLAN_KV_FRACTION && !plan->fits)
        plan->kv_raised = false;

    plan->host_pages = (int64_t)(p->host_tier_bytes / plan->page_bytes);
    plan->host_bytes = mul(&o, (uint64_t)plan->host_pages, plan->page_bytes);
    plan->host_tokens = plan->host_pages * DSD_KV_PAGE_TOKENS;
    if (o.hit)
        return dsd_errf(err, -EOVERFLOW, "memory plan: a size does not fit in 64 bits (dimensions or parameters too large)");
    return 0;
}

/* ---- Printing ---- */

const char *dsd_mem_plan_grouped(uint64_t v, char *buf, size_t len)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

static double gib(uint64_t b)
{
    return (double)b / (double)(1ull << 30);
}

/* One table row: label, GiB (2 decimals), exact bytes. */
static void row(FILE *out, const char *label, uint64_t bytes)
{
    char b[40];
    fprintf(out, "  %-44s %10.2f %19s\n", label, gib(bytes), dsd_mem_plan_grouped(bytes, b, sizeof b));
}

static void heading(FILE *out, const char *title)
{
    fprintf(out, "\n%-46s %10s %19s\n", title, "GiB", "bytes");
}

int dsd_mem_plan_print(const struct dsd_mem_plan *plan, const struct dsd_model_config *cfg, FILE *out)
{
    const struct dsd_mem_plan_params *p = &plan->params;
    char a[40], b[40], label[128];
    const int G = p->n_gpus, E = cfg->n_routed_experts;

    fprintf(out, "Memory plan: %s, %d layers + %d MTP, %d routed experts (%d per token), hidden %lld, vocab %lld\n",
            cfg->architecture, cfg->num_hidden_layers, cfg->num_nextn_predict_layers, E, cfg->num_experts_per_tok,
            (long long)cfg->hidden_size, (long long)cfg->vocab_size);
    fprintf(out, "  weights from:  %s\n", plan->from_checkpoint
                                             ? "the checkpoint's safetensors headers (dtypes as stored)"
                                             : "config.json alone (dtypes of the published checkpoint)");
    fprintf(out, "  GPUs:          %d x %s bytes (%.2f GiB) usable each\n", G, dsd_mem_plan_grouped(p->gpu_mem_bytes, a, sizeof a),
            gib(p->gpu_mem_bytes));
    if (G > 1)
        fprintf(out, "  layout:        data-parallel attention (attention, indexer, dense layers, shared\n"
                     "                 experts, routers, embedding and LM head on every GPU), expert-parallel\n"
                     "                 MoE (routed experts of every MoE layer split over the %d GPUs in\n"
                     "                 contiguous blocks, lower GPUs first: GPU 0 holds 0-%d)\n",
                G, plan->gpu[0].n_experts - 1);
    else
        fprintf(out, "  layout:        one GPU holds everything\n");
    fprintf(out, "  step:          %d tokens, %d sequences, context %s tokens\n", p->max_batch_tokens, p->max_batch,
            dsd_mem_plan_grouped((uint64_t)p->max_context, a, sizeof a));
    fprintf(out, "  KV cache:      %s, %zu + %zu bytes per token and layer, %d layers: %s bytes per %d-token page\n",
            p->kv_dtype == DSD_KV_BF16 ? "bf16" : "fp8", plan->mla_token_bytes,
            plan->index_page_bytes / DSD_KV_PAGE_TOKENS, plan->n_layers, dsd_mem_plan_grouped(plan->page_bytes, b, sizeof b),
            DSD_KV_PAGE_TOKENS);
    switch (p->kv_mode) {
    case DSD_MEM_PLAN_KV_FRACTION:
        fprintf(out, "  KV sizing:     %.3g of the memory weights and workspace leave\n", p->kv_fraction);
        break;
    case DSD_MEM_PLAN_KV_BYTES:
        fprintf(out, "  KV sizing:     %s bytes per GPU\n", dsd_mem_plan_grouped(p->kv_bytes, a, sizeof a));
        break;
    case DSD_MEM_PLAN_KV_PAGES:
        fprintf(out, "  KV sizing:     %lld pages per GPU\n", (long long)p->kv_pages);
        break;
    }

    heading(out, "Weights, one copy of the model");
    for (int g = 0; g < DSD_MEM_PLAN_GROUP_COUNT; g++) {
        if (plan->weights_by_group[g] == 0)
            continue;
        if (g == DSD_MEM_PLAN_ROUTED_EXPERTS)
            snprintf(label, sizeof label, "routed experts (%d x %d MoE layers)", E, plan->n_moe_layers);
        else
            snprintf(label, sizeof label, "%s", group_names[g]);
        row(out, label, plan->weights_by_group[g]);
    }
    row(out, "total", plan->weights_total);
    row(out, "  of which replicated on every GPU", plan->weights_replicated);
    if (plan->from_checkpoint)
        row(out, "(tensor data in the checkpoint's files)", plan->file_tensor_bytes);

    heading(out, "Workspace per GPU (one step)");
    const struct { const char *name; uint64_t v; } ws[] = {
        { "activations (forward pass step buffers)", plan->ws.activations },
        { "FP8 linear staging (inputs, scales, output)", plan->ws.fp8_staging },
        { "cuBLASLt workspace", plan->ws.gemm_workspace },
        { "dense MLP / shared expert intermediates", plan->ws.mlp },
        { "router logits and choices", plan->ws.router },
        { "MoE dispatch and combine", plan->ws.moe_dispatch },
        { "routed expert rows (one chunk)", plan->ws.moe_experts },
        { "absorbed attention", plan->ws.attention },
        { "indexer logits", plan->ws.indexer_logits },
        { "output logits", plan->ws.logits },
        { "step metadata and page table", plan->ws.step_meta },
    };
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
        if (ws[i].v)
            row(out, ws[i].name, ws[i].v);
    row(out, "total", plan->ws.total);

    /* GPUs with the same share of experts are the same: one table per distinct share. */
    for (int g = 0; g < G; g++) {
        const struct dsd_mem_plan_gpu *u = &plan->gpu[g];
        if (g > 0 && u->n_experts == plan->gpu[g - 1].n_experts &&
            u->weights_experts == plan->gpu[g - 1].weights_experts)
            continue;
        int last = g;
        while (last + 1 < G && plan->gpu[last + 1].n_experts == u->n_experts &&
               plan->gpu[last + 1].weights_experts == u->weights_experts)
            last++;
        if (G == 1)
            snprintf(label, sizeof label, "The GPU (all %d routed experts)", E);
        else if (last == g)
            snprintf(label, sizeof label, "GPU %d (%d routed experts of each layer)", g, u->n_experts);
        else
            snprintf(label, sizeof label, "Each of GPUs %d-%d (%d routed experts each)", g, last, u->n_experts);
        heading(out, label);
        row(out, "weights, replicated", u->weights_replicated);
        if (u->n_experts > 0) {
            if (last == g)
                snprintf(label, sizeof label, "weights, routed experts %d-%d", u->first_expert,
                         u->first_expert + u->n_experts - 1);
            else
                snprintf(label, sizeof label, "weights, routed experts (%d per MoE layer)", u->n_experts);
            row(out, label, u->weights_experts);
        }
        row(out, "workspace", u->workspace);
        if (u->fits) {
            snprintf(label, sizeof label, "KV pool: %lld pages = %s tokens", (long long)u->kv_pages,
                     dsd_mem_plan_grouped((uint64_t)u->kv_tokens, a, sizeof a));
            row(out, label, u->kv_bytes);
            row(out, "unused", u->unused);
        } else {
            snprintf(label, sizeof label, "KV pool, the least it needs (%lld pages)",
                     (long long)((u->need - u->weights - u->workspace) / plan->page_bytes));
            row(out, label, u->need - u->weights - u->workspace);
            row(out, "needed in all", u->need);
        }
        row(out, "GPU memory", p->gpu_mem_bytes);
        if (!u->fits) {
            fprintf(out, "  does not fit: needs %s more bytes (%.2f GiB)\n", dsd_mem_plan_grouped(u->shortfall, a, sizeof a),
                    gib(u->shortfall));
        }
    }

    heading(out, "Host tier (pinned host memory)");
    if (plan->host_pages > 0) {
        snprintf(label, sizeof label, "%lld pages = %s tokens", (long long)plan->host_pages,
                 dsd_mem_plan_grouped((uint64_t)plan->host_tokens, a, sizeof a));
        row(out, label, plan->host_bytes);
        if (plan->host_bytes != p->host_tier_bytes)
            row(out, "configured (rounded down to whole pages)", p->host_tier_bytes);
    } else {
        fprintf(out, "  none%s\n", p->host_tier_bytes ? " (configured memory is less than one page)" : "");
    }

    fputc('\n', out);
    if (plan->fits) {
        int64_t least = plan->gpu[0].kv_tokens;
        for (int g = 1; g < G; g++)
            least = plan->gpu[g].kv_tokens < least ? plan->gpu[g].kv_tokens : least;
        fprintf(out, "Verdict: fits on %d GPU%s: %s KV tokens %sper GPU", G, G > 1 ? "s" : "",
                dsd_mem_plan_grouped((uint64_t)least, a, sizeof a), plan->gpu[G - 1].kv_tokens != least ? "or more " : "");
        if (G > 1)
            fprintf(out, ", %s in all (a sequence lives on one GPU)", dsd_mem_plan_grouped((uint64_t)plan->kv_tokens_total, b, sizeof b));
        fputs(".\n", out);
        if (plan->kv_raised)
            fprintf(out, "  (the requested KV pool was below the minimum of %lld pages and was raised to it)\n",
                    (long long)plan->min_pages);
    } else {
        fprintf(out, "Verdict: does not fit: needs %s more bytes per GPU (%.2f GiB) on %d GPU%s.\n",
                dsd_mem_plan_grouped(plan->shortfall, a, sizeof a), gib(plan->shortfall), G, G > 1 ? "s" : "");
    }
    fflush(out);
    return ferror(out) ? -EIO : 0;
}
