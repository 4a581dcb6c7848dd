/*
 * daemon/serve/config.h: deepseekd's configuration, from one table of keys.
 *
 * Every setting is a key of the table in config.c. The same table reads the configuration
 * file, parses command-line flags, generates --help and the example file (--print-config,
 * shipped as units/deepseekd.conf.example) and decides what a reload may change.
 *
 *   struct dsd_serve_config cfg;
 *   struct dsd_err err;
 *   int rc = dsd_serve_config_load(argc, argv, &cfg, &err);
 *   if (rc == DSD_SERVE_CONFIG_HANDLED) return 0;        // --help, --version, --print-config
 *   if (rc < 0) { dsd_log(LOG_ERR, "%s", err.msg); return 1; }
 *   ... run with cfg ...
 *   // on SIGHUP (between dsd_notify_reloading() and dsd_notify_ready()):
 *   struct dsd_serve_config_changes ch;
 *   if (dsd_serve_config_reload(&cfg, &ch, &err) < 0)
 *       dsd_log(LOG_ERR, "reload: %s (configuration unchanged)", err.msg);
 *   for (int i = 0; i < ch.count; i++) log ch.item[i] (applied, or needs a restart)
 *
 * Sources, later ones win:
 *   1. built-in defaults (dsd_serve_config_defaults);
 *   2. the configuration file: --config FILE, else dsd_serve_config_default_path() when
 *      that file exists (a missing default file is fine; a missing explicit one is an error).
 *      Format: `key = value` lines; `#` starts a comment line; blank lines are skipped;
 *      a value may be wrapped in double quotes (needed only for an empty string); a later
 *      line for the same key wins;
 *   3. flags: `--key value` or `--key=value`; dashes and underscores are interchangeable in
 *      flag names (--kv-dtype = --kv_dtype), the file uses underscores.
 * An unknown key, a malformed value or a value out of bounds is an error whose message names
 * where (file:line, or the flag) and the key, and says what is allowed.
 *
 * Reload re-reads the same file (same rule as at start), keeps every key given as a flag at
 * its flag value, and applies only keys marked reloadable. A changed key that is not
 * reloadable keeps its running value and is reported as needing a restart.
 *
 * Threads: struct dsd_serve_config is plain data and these functions do no locking. Load and
 * reload on the thread that reads the reloadable fields (the io thread), and hand other
 * threads copies of what they need. The log level has its own atomic (dsd_log_set_level).
 */
#ifndef DSD_SERVE_CONFIG_H
#define DSD_SERVE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* dsd_serve_config_load(): --help, --version or --print-config was printed to stdout; the
 * caller exits with status 0. (--plan is not handled there: it loads the configuration as
 * usual and sets cfg->plan; the caller then prints the plan, daemon/serve/plan.h.) */
#define DSD_SERVE_CONFIG_HANDLED 1

#define DSD_SERVE_CONFIG_PATH_MAX 4096
/* The bound of the table's own size, so per-key bookkeeping fits in fixed arrays. */
#define DSD_SERVE_CONFIG_MAX_KEYS 64

enum dsd_serve_backend { DSD_SERVE_BACKEND_CPU = 0, DSD_SERVE_BACKEND_CUDA };
enum dsd_serve_numerics { DSD_SERVE_NUMERICS_PRODUCTION = 0, DSD_SERVE_NUMERICS_EXACT };
enum dsd_serve_kv_dtype { DSD_SERVE_KV_FP8 = 0, DSD_SERVE_KV_BF16 };
enum dsd_serve_fairness { DSD_SERVE_FAIR_UID = 0, DSD_SERVE_FAIR_CONNECTION, DSD_SERVE_FAIR_OFF };
/* test_spec_force: the values of speculative.h's enum dsd_spec_force */
enum dsd_serve_spec_force { DSD_SERVE_SPEC_FORCE_NONE = 0, DSD_SERVE_SPEC_FORCE_ACCEPT, DSD_SERVE_SPEC_FORCE_REJECT };

/* One field per key (config.c's table documents each). Integers are int64_t whatever their
 * bounds, so one code path stores them all. */
struct dsd_serve_config {
    /* model and engine */
    char model[DSD_SERVE_CONFIG_PATH_MAX];      /* required */
    enum dsd_serve_backend backend;
    int64_t gpu;                    /* CUDA device ordinal */
    enum dsd_serve_numerics numerics;
    enum dsd_serve_kv_dtype kv_dtype;
    int64_t threads;                /* 0 = one per online CPU */
    int64_t index_topk_freq;        /* IndexCache, 0 = config.json's (daemon/model/index_cache.h) */
    char index_topk_pattern[1025];  /* 'F'/'S' per layer, "" = config.json's (DSD_CFG_INDEX_PATTERN_MAX + 1) */
    int64_t kv_pages;               /* 0 = derive from kv_gpu_fraction / kv_memory_mb */
    int64_t kv_memory_mb;
    double kv_gpu_fraction;         /* share of GPU memory left after weights and workspace */
    bool prefix_cache;              /* share cached prefixes (and run the tiers) */
    double host_cache_gb;           /* KV host tier (pinned RAM) in GiB, 0 = none */
    char disk_cache_dir[DSD_SERVE_CONFIG_PATH_MAX];
    double disk_cache_gb;           /* KV disk tier in GiB, 0 = none */
    int64_t gpus;                   /* GPUs of the cuda backend */
    int64_t gpu_mem;                /* usable bytes per GPU, 0 = what the device reports */
    int64_t max_batch;              /* sequences per step */
    int64_t max_batch_tokens;       /* tokens per step */
    int64_t prefill_chunk;
    enum dsd_serve_fairness fairness;
    int64_t speculative_tokens;     /* MTP drafts per decode step, 0 = off */
    /* socket */
    char socket[108];               /* sizeof(sockaddr_un.sun_path) */
    unsigned socket_mode;           /* permission bits, e.g. 0660 */
    char socket_group[64];          /* "" = leave the group as created */
    /* requests and clients */
    int64_t max_prompt_tokens;      /* 0 = the model's context */
    int64_t max_tokens;             /* per-request generation cap (reloadable) */
    int64_t max_connections_per_uid;    /* reloadable */
    int64_t max_inflight;               /* per connection, reloadable */
    int64_t max_inflight_per_uid;       /* reloadable */
    int64_t max_frame_kb;
    int64_t max_shm_mb;
    int64_t stall_timeout_s;            /* reloadable */
    int64_t drain_timeout_s;            /* reloadable */
    int64_t frame_timeout_s;            /* reloadable */
    int64_t idle_timeout_s;             /* reloadable, 0 = never */
    /* logging */
    int log_level;                  /* LOG_ERR..LOG_DEBUG (syslog.h), reloadable */
    /* testing only: forced model output for chats ending with the trigger ("" = off) */
    char test_force_trigger[256];
    char test_force_output[4096];
    int64_t test_load_delay_ms;     /* testing only: wait before loading (0 = no) */
    enum dsd_serve_spec_force test_spec_force;  /* testing only: accept or reject every draft */
    int64_t test_disk_write_delay_ms;   /* testing only: slow disk KV writes (0 = no) */

    /* Set by --plan (not a key): print the memory plan instead of serving. */
    bool plan;

    /* Where the values came from (filled by load, used by reload). */
    char config_path[DSD_SERVE_CONFIG_PATH_MAX];    /* file read, "" = none */
    bool config_explicit;                           /* given with --config */
    bool from_flag[DSD_SERVE_CONFIG_MAX_KEYS];      /* by table index */
};

/* One key whose value in the re-read file differs from the running one. Values are shown
 * as they would be written in the file, truncated with "..." to fit. */
struct dsd_serve_config_change {
    const char *key;                /* static string: the key's name */
    bool needs_restart;             /* true: not applied (key not reloadable) */
    char old_value[96];
    char new_value[96];
};

struct dsd_serve_config_changes {
    int count;
    struct dsd_serve_config_change item[DSD_SERVE_CONFIG_MAX_KEYS];
};

/* Fills cfg with every key's default (model empty, no config file). */
void dsd_serve_config_defaults(struct dsd_serve_config *cfg);

/* Builds cfg from defaults, the configuration file and argv (argv[0] is the program name).
 * Returns 0 (cfg is complete and valid; cfg->plan tells whether --plan was given),
 * DSD_SERVE_CONFIG_HANDLED (--help, --version or
 * --print-config printed its text to stdout; cfg holds defaults), -EINVAL (err says what is
 * wrong and where: an unknown flag or key, a bad value, a missing required key, a missing
 * --config file), -EIO/-EACCES and the like (the file exists but cannot be read). */
int dsd_serve_config_load(int argc, char **argv, struct dsd_serve_config *cfg,
                          struct dsd_err *err);

/* Re-reads cfg's configuration file and applies the reloadable keys that changed; changes
 * lists every key whose value differs (applied or needing a restart). Returns 0, or a
 * negative errno with err set and cfg and changes untouched (a bad file changes nothing). */
int dsd_serve_config_reload(struct dsd_serve_config *cfg, struct dsd_serve_config_changes *changes,
                            struct dsd_err *err);

/* Writes key's current value as it would appear in the file (enum names, octal modes,
 * strings unquoted). Returns the length written (like snprintf: may exceed size, truncated)
 * or -ENOENT for an unknown key. */
int dsd_serve_config_format(const struct dsd_serve_config *cfg, const char *key, char *buf,
                            size_t size);

/* The configuration file read when --config is not given (if it exists):
 * <sysconfdir>/deepseekd/deepseekd.conf of the install prefix, /etc/deepseekd/deepseekd.conf
 * for prefix /usr. */
const char *dsd_serve_config_default_path(void);

/* The name of the i-th key of the table (0-based), NULL past the last: to list the
 * effective configuration with dsd_serve_config_format(). */
const char *dsd_serve_config_key_name(int i);

/* True when key exists and is applied by dsd_serve_config_reload. */
bool dsd_serve_config_key_reloadable(const char *key);

/* The text of --help: usage, then every key grouped, with its default, bounds and whether
 * a reload applies it. */
void dsd_serve_config_print_help(FILE *out);

/* The text of --print-config: a configuration file documenting every key, each commented
 * out at its default. units/deepseekd.conf.example is this output, byte for byte. */
void dsd_serve_config_print_example(FILE *out);

/* Names of the enum values, for messages ("cpu", "production", "fp8", "info"). */
const char *dsd_serve_backend_name(enum dsd_serve_backend b);
const char *dsd_serve_numerics_name(enum dsd_serve_numerics n);
const char *dsd_serve_kv_dtype_name(enum dsd_serve_kv_dtype k);
const char *dsd_serve_fairness_name(enum dsd_serve_fairness f);
const char *dsd_serve_log_level_name(int level);

#endif
