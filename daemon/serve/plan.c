/* deepseekd --plan (contract in plan.h). */
#include "plan.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index_cache.h"
#include "mem_plan.h"
#include "safetensors.h"

static bool has_file(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return false;
    return access(path, F_OK) == 0;
}

static struct dsd_mem_plan_params params_from(const struct dsd_serve_config *cfg,
                                              const struct dsd_model_config *mc)
{
    struct dsd_mem_plan_params p = dsd_mem_plan_default_params();
    p.kv_dtype = cfg->kv_dtype == DSD_SERVE_KV_BF16 ? DSD_KV_BF16 : DSD_KV_FP8;
    p.n_gpus = (int)cfg->gpus;
    p.gpu_mem_bytes = cfg->gpu_mem > 0 ? (uint64_t)cfg->gpu_mem : DSD_MEM_PLAN_H100_80GB_BYTES;
    p.max_batch = (int)cfg->max_batch;
    p.max_batch_tokens = (int)cfg->max_batch_tokens;
    p.max_context = 0;
    if (cfg->max_prompt_tokens > 0) {
        int64_t ctx = cfg->max_prompt_tokens + cfg->max_tokens;
        p.max_context = ctx < mc->max_position_embeddings ? ctx : mc->max_position_embeddings;
    }
    if (cfg->kv_pages > 0) {
        p.kv_mode = DSD_MEM_PLAN_KV_PAGES;
        p.kv_pages = cfg->kv_pages;
    } else if (cfg->kv_gpu_fraction > 0) {
        p.kv_mode = DSD_MEM_PLAN_KV_FRACTION;
        p.kv_fraction = cfg->kv_gpu_fraction;
    } else {
        p.kv_mode = DSD_MEM_PLAN_KV_BYTES;
        p.kv_bytes = (uint64_t)cfg->kv_memory_mb << 20;
    }
    p.host_tier_bytes = cfg->prefix_cache ? (uint64_t)(cfg->host_cache_gb * 1073741824.0) : 0;
    return p;
}

int dsd_serve_plan(const struct dsd_serve_config *cfg, FILE *out, struct dsd_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/config.json", cfg->model) >= (int)sizeof path)
        return dsd_errf(err, -ENAMETOOLONG, "%s: path too long", cfg->model);
    struct dsd_model_config mc;
    int rc = dsd_model_config_load(path, &mc, err);
    if (!rc)
        rc = dsd_index_cache_apply(&mc, (int)cfg->index_topk_freq, cfg->index_topk_pattern, err);
    if (rc)
        return rc;
    struct dsd_st_set *set = NULL;
    if (has_file(cfg->model, "model.safetensors.index.json") || has_file(cfg->model, "model.safetensors")) {
        if ((rc = dsd_st_open_dir(cfg->model, &set, err)))
            return rc;
    }
    struct dsd_mem_plan_params p = params_from(cfg, &mc);
    /* Two plans are a few hundred KiB: keep them off the stack. */
    struct dsd_mem_plan *plan = malloc(2 * sizeof *plan);
    if (!plan) {
        dsd_st_close(set);
        return dsd_errf(err, -ENOMEM, "out of memory");
    }
    struct dsd_mem_plan *from_config = &plan[1];
    if ((rc = dsd_mem_plan_compute(&mc, set, &p, plan, err)) ||
        (set && (rc = dsd_mem_plan_compute(&mc, NULL, &p, from_config, err)))) {
        dsd_err_prefix(err, rc, "%s", cfg->model);
        goto out;
    }

    fprintf(out, "deepseekd --plan %s\n", cfg->model);
    if (cfg->gpu_mem == 0)
        fprintf(out, "  (gpu_mem is 0 and no GPU is asked: planning for an H100 80GB, 81559 MiB;\n"
                     "   set --gpu-mem for another GPU)\n");
    if ((rc = dsd_mem_plan_print(plan, &mc, out)))
        goto io;
    {   /* the KV pages keep every layer's index-K arena either way (docs/INDEXCACHE.md) */
        char ic[DSD_CFG_INDEX_PATTERN_MAX + 64];
        dsd_index_cache_describe(&mc, ic, sizeof ic);
        fprintf(out, "\nIndexCache: %s\n", ic);
    }
    if (set) {
        char a[32], b[32];
        long long d = (long long)(plan->weights_total - from_config->weights_total);
        fprintf(out, "\nCross-check: the checkpoint's headers give %s bytes of weights (one copy);\n"
                     "config.json alone, with the published dtypes, predicts %s (difference %+lld).\n",
                dsd_mem_plan_grouped(plan->weights_total, a, sizeof a),
                dsd_mem_plan_grouped(from_config->weights_total, b, sizeof b), d);
        if (d != 0)
            fprintf(out, "The difference is tensors stored in other dtypes than the published ones.\n");
    }
    fflush(out);
    if (ferror(out))
        goto io;
    rc = plan->fits ? DSD_SERVE_PLAN_FITS : DSD_SERVE_PLAN_DOES_NOT_FIT;
    goto out;
io:
    rc = dsd_errf(err, -EIO, "writing the plan failed");
out:
    free(plan);
    dsd_st_close(set);
    return rc;
}
