/*
 * daemon/serve/engine.h: the engine thread. It owns the model, the KV pool and every
 * running generation; nothing else touches them (docs/DAEMON.md).
 *
 *   struct dsd_engine *e;
 *   dsd_engine_start(&params, wake_fd, &e, &err);  // loads the model in its own thread
 *   ... dsd_engine_state(e) goes LOADING -> READY (or FAILED) ...
 *   dsd_engine_submit(e, req);                     // io thread: a validated request
 *   ... wake_fd becomes readable (eventfd) ...
 *   n = dsd_engine_take_events(e, &list);          // io thread: tokens / done events
 *   dsd_engine_cancel(e, handle);
 *   dsd_engine_stop(e);                            // joins the thread
 *
 * Between the io thread and the engine there are two mutex-protected queues, one per
 * direction, each touched once per engine step (never per token), and an eventfd the engine
 * writes after every step that produced events; the io thread reads it through io_uring.
 * The engine waits on a condition variable when it has nothing to run.
 *
 * Flow control: a request that delivers into a shared-memory ring may only produce as many
 * tokens as the io thread has granted (credit, refreshed from the ring's consumer position);
 * when its credit runs out it is parked (not scheduled, KV kept while nobody needs the
 * pages) and a STALLED event tells the io thread. dsd_engine_pause_conn() parks every
 * request of a connection whose socket is backed up. A parked request holds no batch slot
 * and loses nothing: if its pages were taken meanwhile it recomputes them.
 *
 * Scheduling (who runs, fair shares per uid and connection) is scheduler.h's policy.
 */
#ifndef DSD_SERVE_ENGINE_H
#define DSD_SERVE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "hist.h"
#include "model.h"
#include "prefix_cache.h"
#include "sampling.h"
#include "scheduler.h"
#include "tokenizer.h"

enum dsd_engine_state {
    DSD_ENGINE_LOADING = 0,
    DSD_ENGINE_READY,
    DSD_ENGINE_FAILED,
    DSD_ENGINE_STOPPED,
};

struct dsd_engine_params {
    const char *model_dir;
    const struct dsd_tokenizer *tokenizer;  /* may be NULL: token-only requests */
    struct dsd_model_params model;
    int kv_pages;                   /* 0 = derive: kv_gpu_fraction on a GPU, else kv_memory_bytes */
    uint64_t kv_memory_bytes;
    double kv_gpu_fraction;         /* share of the device memory left after weights and workspace */
    int max_batch;                  /* sequences per step */
    int max_batch_tokens;           /* tokens per step */
    int prefill_chunk;              /* max prompt tokens of one sequence per step */
    enum dsd_fairness fairness;     /* how the batch is shared (scheduler.h) */
    int max_context;                /* 0 = the model's max_position_embeddings */
    /* the prefix cache and its tiers (docs/KV_CACHE.md §7) */
    bool prefix_cache;              /* false: no sharing, no tiers */
    uint64_t host_cache_bytes;      /* host tier, 0 = none */
    const char *disk_cache_dir;     /* disk tier directory (copied at start) */
    uint64_t disk_cache_bytes;      /* disk tier, 0 = none */
    int long_queue;                 /* waiting sequences from which admission ranks by cached
                                       prefix (scheduler.h); 0 = never */
    int test_load_delay_ms;         /* testing only: wait before loading (test_load_delay_ms) */
    int speculative_tokens;         /* MTP drafts verified per decode step, 0..3 (0 = off;
                                       docs/SPECULATIVE.md) */
    int test_spec_force;            /* testing only: enum dsd_spec_force (test_spec_force) */
    int test_disk_write_delay_ms;   /* testing only: slow disk KV writes */
};

/* What ended a generation (the protocol's finish reasons). */
enum dsd_finish {
    DSD_FINISH_NONE = 0,
    DSD_FINISH_STOP,            /* EOS or a stop token id */
    DSD_FINISH_LENGTH,          /* max_tokens */
    DSD_FINISH_STOP_STRING,
    DSD_FINISH_TOOL_CALLS,      /* the model ended its output after tool calls */
    DSD_FINISH_CANCELLED,
    DSD_FINISH_CONTEXT_FULL,
    DSD_FINISH_ERROR,
};

/* One generation request, built and validated by the io thread, owned by the engine from
 * dsd_engine_submit() on. Freed by the engine (dsd_engine_request_free). */
struct dsd_engine_request {
    uint64_t handle;                /* unique per daemon run, chosen by the io thread */
    uint64_t conn_id;
    uint32_t uid;                   /* the client's uid (fair shares are per uid) */
    int32_t *prompt;                /* malloc'd, ids < vocab (checked by the io thread) */
    int n_prompt;
    struct dsd_sampling_params sampling;
    int max_tokens;                 /* >= 1, already capped by the daemon's limit */
    int priority;
    bool ignore_eos;
    bool logprobs;
    int top_logprobs;
    int32_t *stop_ids;
    int n_stop_ids;
    char **stop_strings;            /* NUL-terminated, malloc'd */
    int n_stop_strings;
    bool detokenize;
    bool chat;                      /* parse reasoning / tool calls */
    bool start_in_reasoning;
    bool credit_limited;            /* ring output: produce only within credit */
    uint64_t credit;                /* tokens that may be produced in total (ring output) */
    uint64_t t_accept_ns;           /* CLOCK_MONOTONIC when the io thread accepted it */
    int32_t *forced;                /* TEST ONLY: output token ids replacing the sampled ones
                                       (then EOS); malloc'd, NULL normally (test_force_output) */
    int n_forced;
};

void dsd_engine_request_free(struct dsd_engine_request *r);

struct dsd_engine_tool_item {
    int index;
    char *id, *name, *arguments;    /* malloc'd, NUL-terminated */
};

struct dsd_engine_logprob {
    int32_t token;
    float logprob;
    int n_top;
    int32_t top_ids[20];
    float top_logprobs[20];
};

enum dsd_engine_event_kind {
    DSD_EV_TOKENS = 1,              /* output of one step */
    DSD_EV_DONE,                    /* the request ended; may also carry a last step's output */
    DSD_EV_STALLED,                 /* out of ring credit: parked */
};

/* What one step produced for one request. All arrays malloc'd; freed by
 * dsd_engine_event_free(). */
struct dsd_engine_event {
    enum dsd_engine_event_kind kind;
    uint64_t handle, conn_id;
    int32_t *ids;
    int n_ids, cap_ids;
    char *text;
    size_t text_len, text_cap;
    char *reasoning;
    size_t reasoning_len, reasoning_cap;
    struct dsd_engine_tool_item *tools;
    int n_tools;
    char *tool_error;               /* malformed tool calls the parser skipped: one message
                                       per line (their raw text is never delivered) */
    size_t tool_error_len, tool_error_cap;
    struct dsd_engine_logprob *logprobs;
    int n_logprobs, cap_logprobs;
    /* DONE */
    enum dsd_finish finish;
    int32_t stop_token;             /* -1 = none */
    char *stop_string;
    int n_prompt, n_cached, n_generated;
    int cached_tier[3];             /* of n_cached: tokens from the device, host, disk tier */
    uint64_t queue_us, first_token_us, total_us;
    double per_token_us;
    char *error;                    /* finish == ERROR */
};

void dsd_engine_event_free(struct dsd_engine_event *ev);

/* Counters for `stats` (a consistent snapshot). */
struct dsd_engine_stats {
    int running, waiting, parked;
    uint64_t steps, tokens_generated, tokens_prefilled, requests_done, preemptions;
    int kv_pages_total, kv_pages_used;
    uint64_t last_step_ns;          /* CLOCK_MONOTONIC end of the latest step (watchdog) */
    double last_step_ms;            /* the latest step's forward pass, device work included */
    uint64_t steps_graph, steps_eager;  /* decode steps replayed from a recording / run op by op */
    double host_ms_graph, host_ms_eager;    /* mean host time enqueuing one step of each kind */
    uint64_t graph_kernels;         /* kernel launches one recorded decode step replays */
    uint64_t tokens_cached;         /* prompt tokens served from the prefix cache */
    /* speculative decoding (docs/SPECULATIVE.md): verify steps of a sequence, drafts they
     * verified, drafts accepted; mean acceptance length = (accepted + steps) / steps */
    uint64_t spec_steps, spec_draft_tokens, spec_accepted_tokens;
    bool prefix_cache;              /* cache below is meaningful */
    struct dsd_prefix_cache_stats cache;
    struct dsd_hist ttft, itl;      /* time to first token (accept -> first token), and
                                       between consecutive tokens of a request, in ms */
};

struct dsd_engine;

/* Starts the engine thread, which loads the model. wake_fd: an eventfd the engine writes
 * after steps with events and on state changes. Returns 0 or -errno (thread creation). */
int dsd_engine_start(const struct dsd_engine_params *p, int wake_fd, struct dsd_engine **out,
                     struct dsd_err *err);
/* Stops and joins the thread; requests still running end with CANCELLED events that are
 * freed. */
void dsd_engine_stop(struct dsd_engine *e);

enum dsd_engine_state dsd_engine_state(const struct dsd_engine *e);
/* Loading progress 0..1, and the failure message in FAILED. */
double dsd_engine_progress(const struct dsd_engine *e);
const char *dsd_engine_failure(const struct dsd_engine *e);
/* The model's config (valid from READY on). */
const struct dsd_model_config *dsd_engine_model_config(const struct dsd_engine *e);
int dsd_engine_kv_pages(const struct dsd_engine *e);
/* Where the model runs ("cpu", or the GPU's name) and the KV pool's bytes (valid from READY
 * on; "" and 0 before). */
const char *dsd_engine_device(const struct dsd_engine *e);
uint64_t dsd_engine_kv_bytes(const struct dsd_engine *e);
void dsd_engine_stats(struct dsd_engine *e, struct dsd_engine_stats *out);

/* The memory plan as loaded and how loading went (valid from READY on; zeros before). */
struct dsd_engine_memory {
    uint64_t weight_bytes;          /* the checkpoint's tensors (data + scales) */
    uint64_t device_weight_bytes;   /* what they take on the device (GPU: padded scales, dequantized kv_b) */
    uint64_t workspace_bytes;       /* the step's buffers for max_batch_tokens / max_batch */
    uint64_t penalty_bytes;         /* sampling's penalty state (max_batch rows of the vocabulary) */
    uint64_t kv_bytes;              /* the KV pool */
    uint64_t device_total, device_free;     /* the GPU's memory, free after all of the above */
    double read_s, place_s;         /* loading: reading the files ahead, placing the weights */
};
void dsd_engine_memory(const struct dsd_engine *e, struct dsd_engine_memory *out);

/* io thread -> engine. All return immediately. */
void dsd_engine_submit(struct dsd_engine *e, struct dsd_engine_request *r);
void dsd_engine_cancel(struct dsd_engine *e, uint64_t handle);
void dsd_engine_grant(struct dsd_engine *e, uint64_t handle, uint64_t credit_total);
void dsd_engine_pause_conn(struct dsd_engine *e, uint64_t conn_id, bool paused);

/* Takes every pending event (the caller frees each and the array). Returns the count. */
int dsd_engine_take_events(struct dsd_engine *e, struct dsd_engine_event ***out);

#endif
