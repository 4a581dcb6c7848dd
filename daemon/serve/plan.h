/*
 * daemon/serve/plan.h: `deepseekd --plan`, the GPU memory plan of the configured model.
 *
 *   struct dsd_serve_config cfg;
 *   if (dsd_serve_config_load(argc, argv, &cfg, &err) == 0 && cfg.plan) {
 *       int rc = dsd_serve_plan(&cfg, stdout, &err);
 *       exit(rc < 0 ? 1 : rc == DSD_SERVE_PLAN_FITS ? 0 : 2);
 *   }
 *
 * cfg.model may hold config.json alone (the plan uses the dtypes of the published
 * checkpoint) or a whole checkpoint (then every tensor's dtype and shape come from the
 * safetensors headers, which are all that is read, and the output also shows what
 * config.json alone predicts, as a cross-check). The plan itself is dsd_mem_plan_compute()
 * (daemon/model/mem_plan.h) with parameters from the configuration:
 *   n_gpus = gpus; gpu_mem_bytes = gpu_mem, or DSD_MEM_PLAN_H100_80GB_BYTES when 0;
 *   KV: kv_pages when > 0, else kv_gpu_fraction when > 0, else kv_memory_mb per GPU;
 *   kv_dtype; max_batch; max_batch_tokens; host tier = host_cache_gb (with prefix_cache);
 *   context = max_prompt_tokens + max_tokens when max_prompt_tokens > 0, capped at the
 *   model's max_position_embeddings, else the model's.
 */
#ifndef DSD_SERVE_PLAN_H
#define DSD_SERVE_PLAN_H

#include <stdio.h>

#include "config.h"
#include "err.h"

#define DSD_SERVE_PLAN_FITS 0
#define DSD_SERVE_PLAN_DOES_NOT_FIT 1

/* Computes and prints the plan to out. Returns DSD_SERVE_PLAN_FITS or
 * DSD_SERVE_PLAN_DOES_NOT_FIT after printing it, or a negative errno with err set and
 * nothing printed: the errors of dsd_model_config_load() (config.json unreadable or
 * invalid), of dsd_st_open_dir() (a checkpoint present but unreadable), of
 * dsd_mem_plan_compute() (-EINVAL: the checkpoint's tensors disagree with config.json),
 * -ENAMETOOLONG (model path), -EIO (writing out failed). */
int dsd_serve_plan(const struct dsd_serve_config *cfg, FILE *out, struct dsd_err *err);

#endif
