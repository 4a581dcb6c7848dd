/*
 * tests/gpu/gpu_harness.h: what every GPU parity test (tests/gpu/test_cuda_*.c) shares: the
 * model dims of a preset, a CPU backend (the oracle, production numerics, FP8 KV) and a CUDA
 * backend made from the same parameters, random host weights and their deep copies, moving
 * activations in and out of either backend through its ops, NaN poisoning, error metrics,
 * result lines (stdout, plus CSV in $OUT) and CUDA-event timing.
 *
 *   int main(int argc, char **argv) {
 *       gh_init(argc, argv, "test_cuda_act");           // --tiny-only, --iters N, --seed N
 *       struct gh_config c;
 *       gh_config_preset(&c, "tiny");                    // or "small", "full-dims"
 *       c.cfg.num_attention_heads = 8; gh_config_update(&c);   // tweak, then re-derive dims
 *       struct gh_ctx h;
 *       if (gh_open(&h, &c)) return gh_finish();        // both backends (77 without a GPU)
 *       void *x_cpu = gh_alloc_act(h.cpu, T, n), *x_gpu = gh_alloc_act(h.gpu, T, n);
 *       gh_put(h.cpu, x_cpu, host, T, n);  gh_put(h.gpu, x_gpu, host, T, n);
 *       gh_poison_act(h.gpu, out_gpu, T, n);
 *       h.go->rmsnorm(h.gpu, ...);  h.co->rmsnorm(h.cpu, ...);
 *       gh_get(h.gpu, got, out_gpu, T, n);  gh_get(h.cpu, want, out_cpu, T, n);
 *       gh_check(&h, "rmsnorm", "T=7 n=256", got, want, (size_t)T * n, 1e-2);
 *       gh_close(&h);
 *       return gh_finish();                              // 0 all passed, 1 a failure
 *   }
 *
 * Weights: gh_rand_weight() makes a host weight (malloc'd data; FP8 e4m3 bytes with random
 * positive 128x128 block scales, or BF16/F32 values); a backend's prepare_weights may rebind
 * its data pointers to device memory, so each backend gets its own deep copy (struct
 * gh_wset: it owns the host memory until gh_wset_free, which releases the prepared weights
 * first). A single weight travels as the lm_head of a model with no layers (gh_wset_single).
 * The CUDA backend holds one prepared weight set at a time (a second prepare_weights fails
 * with -EBUSY until release_weights): put every weight one check needs into one set.
 *
 * Every helper that must wait (put/get/poison/time) synchronizes the backend and turns a
 * failure into a FAIL line. Nothing here aborts on a kernel's failure.
 */
#ifndef DSD_GPU_HARNESS_H
#define DSD_GPU_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dsd_cuda.h"
#include "ops.h"

#define GH_SKIP 77                      /* exit status: no usable GPU */

/* Command line: --tiny-only (only the tiny config: compute-sanitizer runs), --iters N
 * (timing iterations, default 20), --seed N, --racecheck (a compute-sanitizer racecheck run:
 * each test leaves out the kernels whose shared-memory handoffs racecheck cannot follow, and
 * says which). */
void gh_init(int argc, char **argv, const char *test_name);
bool gh_tiny_only(void);
bool gh_racecheck(void);
/* The attention tile engine a test leaves a CUDA backend on (gh_open sets it): AUTO, or under
 * --racecheck the two-warpgroup wgmma engine, since racecheck reports the warp-specialized
 * engine's named-barrier and mbarrier handoffs as hazards it cannot follow (docs/TESTING.md). */
enum dsd_cuda_attn_tile gh_attn_tile_auto(void);
int gh_iters(void);
/* 0 when every check passed, 1 after a failure, GH_SKIP when no GPU was usable. */
int gh_finish(void);
/* A backend's creation failed with `msg`: true (and the run counts as skipped) when it says
 * there is no CUDA device, false for any other failure. */
bool gh_no_device(const char *msg);

/* ---- configurations ---- */
struct gh_config {
    char name[48];                      /* shows up in result lines ("tiny", "full-dims", ...) */
    struct dsd_model_config cfg;        /* tweak fields, then gh_config_update */
    struct dsd_model_dims dims;
    float inv_freq[512];
};
/* A preset of tools/mkmodel/presets.c; returns 0 or -EINVAL. */
int gh_config_preset(struct gh_config *c, const char *preset);
/* Re-derives c->dims from c->cfg (dsd_model_dims_from_config); optionally renames it. */
void gh_config_update(struct gh_config *c, const char *new_name);

/* ---- the two backends ---- */
struct gh_ctx {
    struct gh_config *conf;
    struct dsd_backend *cpu, *gpu;
    const struct dsd_ops *co, *go;
};
/* Creates both backends for c (production numerics, FP8 KV). Returns 0; GH_SKIP when no CUDA
 * device (gh_finish then returns 77); -1 on any other failure (recorded as a FAIL). */
int gh_open(struct gh_ctx *h, struct gh_config *c);
void gh_close(struct gh_ctx *h);
/* Synchronizes be; a failure is printed as a FAIL line naming `what`. Returns 0 or -errno. */
int gh_sync(struct dsd_backend *be, const char *what);

/* ---- random numbers (xorshift; deterministic for a seed) ---- */
float gh_frand(void);                   /* uniform [-1, 1) */
float gh_frand_normal(void);            /* ~N(0, 1) */
/* n floats: a * normal, rounded to bf16 values when `bf16` (what an activation holds). */
void gh_fill(float *x, size_t n, float a, bool bf16);

/* ---- host weights ---- */
/* rows x cols of dtype (F8_E4M3: e4m3 bytes of uniform values in +-448 and block scales
 * amp/448 * U[0.5, 1.5); BF16/F32: offset + uniform values of standard deviation amp).
 * Returns 0 or -ENOMEM. Free with gh_weight_free. */
int gh_rand_weight(struct dsd_weight *w, enum dsd_dtype dtype, int64_t rows, int64_t cols, float amp, float offset,
                   const char *name);
void gh_weight_free(struct dsd_weight *w);

/* A deep copy of model weights that one backend may prepare (and rebind). */
struct gh_wset {
    struct dsd_model_weights w;
    struct dsd_backend *prepared_on;    /* set by gh_wset_prepare */
    void **mem;                         /* every host block the copy owns */
    size_t n_mem, cap_mem;
};
/* Copies src (n_routed_experts: the length of each layer's experts array). 0 or -ENOMEM. */
int gh_wset_clone(struct gh_wset *dst, const struct dsd_model_weights *src, int n_routed_experts);
/* A model with no layers whose lm_head is a copy of w. */
int gh_wset_single(struct gh_wset *dst, const struct dsd_weight *w);
/* be->prepare_weights on the copy; 0 or -errno (printed as a FAIL). */
int gh_wset_prepare(struct gh_wset *s, struct dsd_backend *be);
/* release_weights (if prepared), then frees the host copy. */
void gh_wset_free(struct gh_wset *s);

/* ---- activations through ops ---- */
void *gh_alloc_act(struct dsd_backend *be, int T, int n);      /* T*n activations */
void *gh_alloc(struct dsd_backend *be, size_t bytes);           /* raw backend memory */
/* host fp32 [T][n] -> backend act buffer (upload into an f32 buffer + from_f32); waits. */
int gh_put(struct dsd_backend *be, void *dst, const float *src, int T, int n);
/* backend act [T][n] -> host fp32 (to_f32 + download); waits. */
int gh_get(struct dsd_backend *be, float *dst, const void *src, int T, int n);
/* raw copies (f32 buffers, int arrays); wait. */
int gh_upload(struct dsd_backend *be, void *dst, const void *src, size_t bytes);
int gh_download(struct dsd_backend *be, void *dst, const void *src, size_t bytes);
/* Fills an act buffer of T*n elements / an f32 buffer of n floats with NaN; waits. */
int gh_poison_act(struct dsd_backend *be, void *buf, int T, int n);
int gh_poison_f32(struct dsd_backend *be, float *buf, size_t n);

/* ---- checks and reports ---- */
/* ||got - want|| / ||want|| (absolute norm when want is all zero); +inf when anything is not
 * finite (NaN never passes). */
double gh_rel_err(const float *got, const float *want, size_t n);
/* max |got - want|; +inf when anything is not finite. */
double gh_max_abs(const float *got, const float *want, size_t n);
/* Prints "PASS|FAIL op config shape rel=.. max_abs=.. gate=.." and a CSV row; true on pass. */
bool gh_check(const struct gh_ctx *h, const char *op, const char *shape, const float *got, const float *want,
              size_t n, double gate);
/* The same line for a result computed elsewhere (e.g. exact comparisons: gate 0). */
bool gh_report(const struct gh_ctx *h, const char *op, const char *shape, double rel, double max_abs, double gate,
               bool pass);
/* An explicit failure (setup, allocation). */
void gh_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- timing ---- */
/* Mean milliseconds of one fn(user) on the CUDA backend's stream: one warm-up call, then
 * gh_iters() calls between two CUDA events. Negative on failure. */
double gh_time_gpu(struct gh_ctx *h, void (*fn)(void *user), void *user);
/* Prints "TIME op config shape ms [GB/s] [TFLOP/s]" and a CSV row (bytes/flops may be 0). */
void gh_report_time(const struct gh_ctx *h, const char *op, const char *shape, double ms, double bytes,
                    double flops);

#endif
