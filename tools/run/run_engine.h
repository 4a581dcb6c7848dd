/*
 * tools/run/run_engine.h: deepseekd-run through the daemon's engine thread (in-process, no
 * socket): batch copies of one prompt under continuous batching, with speculative decoding
 * (docs/SPECULATIVE.md). What --speculative-tokens selects.
 */
#ifndef DSD_TOOLS_RUN_ENGINE_H
#define DSD_TOOLS_RUN_ENGINE_H

#include <stdint.h>

#include "model.h"
#include "sampling.h"

struct run_engine_args {
    const char *model_dir;
    struct dsd_model_params mp;
    struct dsd_sampling_params sp;
    const int32_t *prompt;
    int n_prompt;
    int max_tokens;
    int batch;                  /* concurrent requests (copies of the prompt) */
    int speculative_tokens;     /* 0..3 */
    int spec_force;             /* enum dsd_spec_force */
    int ignore_eos;
};

/* Runs it, prints the first request's ids on stdout and the speeds and speculative counters
 * on stderr. Returns the process exit status. */
int run_engine(const struct run_engine_args *a);

#endif
