/*
 * deepseekd: the daemon. Reads its configuration (daemon/serve/config.c), takes the listening
 * socket from systemd or binds its own, starts the engine thread (which loads the model and
 * says READY after a warm-up step), and runs the io loop until SIGTERM, then drains.
 *
 * Exit status: 0 after a clean shutdown; 78 (EX_CONFIG) for a bad configuration; 1 when the
 * model cannot be loaded or the socket cannot be set up.
 *
 * `deepseekd --plan` prints the GPU memory plan of the configured model and exits without
 * serving (daemon/serve/plan.h): 0 when it fits, 2 when it does not, 1 when config.json or
 * the checkpoint cannot be read, 78 for a bad configuration.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "index_cache.h"
#include "log.h"
#include "notify.h"
#include "plan.h"
#include "server.h"
#include "tokenizer.h"

#define EX_CONFIG 78
#define EX_PLAN_DOES_NOT_FIT 2

static void limits_from_config(const struct dsd_serve_config *c, struct dsd_server_limits *l)
{
    l->max_frame = (uint32_t)c->max_frame_kb * 1024u;
    l->max_shm_bytes = (uint64_t)c->max_shm_mb << 20;
    l->max_prompt_tokens = (int)c->max_prompt_tokens;
    l->max_tokens = (int)c->max_tokens;
    l->max_inflight = (int)c->max_inflight;
    l->max_inflight_per_uid = (int)c->max_inflight_per_uid;
    l->max_connections_per_uid = (int)c->max_connections_per_uid;
    l->stall_timeout_s = (int)c->stall_timeout_s;
    l->drain_timeout_s = (int)c->drain_timeout_s;
    l->frame_timeout_s = (int)c->frame_timeout_s;
    l->idle_timeout_s = (int)c->idle_timeout_s;
}

/* SIGHUP: re-read the file, apply the reloadable keys, say what needs a restart. */
static int reload(void *user, struct dsd_server_limits *limits, struct dsd_err *err)
{
    struct dsd_serve_config *cfg = user;
    struct dsd_serve_config_changes ch;
    int rc = dsd_serve_config_reload(cfg, &ch, err);
    if (rc)
        return rc;
    for (int i = 0; i < ch.count; i++)
        dsd_log(ch.item[i].needs_restart ? LOG_WARNING : LOG_NOTICE, "%s: %s -> %s%s", ch.item[i].key,
                ch.item[i].old_value, ch.item[i].new_value, ch.item[i].needs_restart ? " (needs a restart)" : "");
    dsd_log_set_level(cfg->log_level);
    limits_from_config(cfg, limits);
    return 0;
}

static const char *basename_of(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/')
        s--;
    return s;
}

int main(int argc, char **argv)
{
    /* Before any thread exists, so only the io loop's signalfd sees these. */
    dsd_server_block_signals();

    static struct dsd_serve_config cfg;
    struct dsd_err err = {{0}};
    int rc = dsd_serve_config_load(argc, argv, &cfg, &err);
    if (rc == DSD_SERVE_CONFIG_HANDLED)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "<3>deepseekd: %s\n", err.msg);
        return EX_CONFIG;
    }
    dsd_log_set_level(cfg.log_level);
    if (cfg.plan) {
        rc = dsd_serve_plan(&cfg, stdout, &err);
        if (rc < 0) {
            fprintf(stderr, "deepseekd: %s\n", err.msg);
            return 1;
        }
        return rc == DSD_SERVE_PLAN_FITS ? 0 : EX_PLAN_DOES_NOT_FIT;
    }

    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", cfg.model);
    static struct dsd_model_config mcfg;
    /* IndexCache as the model will load it (the daemon's keys over config.json's): a bad
     * pattern fails here, before the weights load */
    if (dsd_model_config_load(path, &mcfg, &err) ||
        dsd_index_cache_apply(&mcfg, (int)cfg.index_topk_freq, cfg.index_topk_pattern, &err)) {
        dsd_log(LOG_ERR, "%s", err.msg);
        return 1;
    }
    char model_name[256];
    snprintf(model_name, sizeof model_name, "%s", basename_of(cfg.model));

    struct dsd_tokenizer *tok = NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", cfg.model);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (dsd_tokenizer_load(&tok, path, &err) < 0) {
            dsd_log(LOG_ERR, "%s", err.msg);
            return 1;
        }
    } else {
        dsd_log(LOG_NOTICE, "%s has no tokenizer.json: only token-id requests will be served", cfg.model);
    }

    int listen_fd = -1;
    bool own_socket = false;
    if (dsd_listen_socket(&listen_fd, &err) < 0) {
        dsd_log(LOG_ERR, "%s", err.msg);
        return 1;
    }
    if (listen_fd < 0) {
        listen_fd = dsd_server_listen(cfg.socket, cfg.socket_mode, cfg.socket_group, &err);
        if (listen_fd < 0) {
            dsd_log(LOG_ERR, "%s", err.msg);
            return 1;
        }
        own_socket = true;
    }
    int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0) {
        dsd_log(LOG_ERR, "eventfd: %s", strerror(errno));
        return 1;
    }

    struct dsd_engine_params ep = {
        .model_dir = cfg.model,
        .tokenizer = tok,
        .model = dsd_model_default_params(),
        .kv_pages = (int)cfg.kv_pages,
        .kv_memory_bytes = (uint64_t)cfg.kv_memory_mb << 20,
        .kv_gpu_fraction = cfg.kv_gpu_fraction,
        .max_batch = (int)cfg.max_batch,
        .max_batch_tokens = (int)cfg.max_batch_tokens,
        .prefill_chunk = (int)cfg.prefill_chunk,
        .fairness = cfg.fairness == DSD_SERVE_FAIR_CONNECTION ? DSD_FAIR_CONNECTION
                    : cfg.fairness == DSD_SERVE_FAIR_OFF      ? DSD_FAIR_OFF
                                                              : DSD_FAIR_UID,
        .prefix_cache = cfg.prefix_cache,
        .host_cache_bytes = (uint64_t)(cfg.host_cache_gb * 1073741824.0),
        .disk_cache_dir = cfg.disk_cache_dir,
        .disk_cache_bytes = (uint64_t)(cfg.disk_cache_gb * 1073741824.0),
        .long_queue = 2 * (int)cfg.max_batch,
        .test_load_delay_ms = (int)cfg.test_load_delay_ms,
        .speculative_tokens = (int)cfg.speculative_tokens,
        .test_spec_force = (int)cfg.test_spec_force,
        .test_disk_write_delay_ms = (int)cfg.test_disk_write_delay_ms,
    };
    ep.model.numerics = cfg.numerics == DSD_SERVE_NUMERICS_EXACT ? DSD_NUMERICS_EXACT : DSD_NUMERICS_PRODUCTION;
    ep.model.kv_dtype = cfg.kv_dtype == DSD_SERVE_KV_BF16 ? DSD_KV_BF16 : DSD_KV_FP8;
    ep.model.n_threads = (int)cfg.threads;
    ep.model.backend = cfg.backend == DSD_SERVE_BACKEND_CUDA ? DSD_MODEL_BACKEND_CUDA : DSD_MODEL_BACKEND_CPU;
    ep.model.device = (int)cfg.gpu;
    ep.model.index_topk_freq = (int)cfg.index_topk_freq;
    ep.model.index_topk_pattern = cfg.index_topk_pattern;
    dsd_notify_status("loading %s", model_name);
    dsd_log(LOG_INFO, "deepseekd starting: model %s, %s numerics, %s KV, socket %s", cfg.model,
            dsd_serve_numerics_name(cfg.numerics), dsd_serve_kv_dtype_name(cfg.kv_dtype),
            own_socket ? cfg.socket : "(from systemd)");
    struct dsd_engine *engine;
    if (dsd_engine_start(&ep, wake_fd, &engine, &err)) {
        dsd_log(LOG_ERR, "%s", err.msg);
        return 1;
    }

    const char *kv_name = ep.model.numerics == DSD_NUMERICS_EXACT ? "f32"
                          : ep.model.kv_dtype == DSD_KV_BF16  ? "bf16" : "fp8_e4m3";
    const char *info_keys[] = { "numerics", "kv_dtype", "threads", "max_batch", "max_batch_tokens", "prefill_chunk",
                                "fairness", "backend", "speculative_tokens", "index_cache" };
    char v_threads[32], v_batch[32], v_tokens[32], v_chunk[32], v_spec[32];
    snprintf(v_spec, sizeof v_spec, "%lld", (long long)cfg.speculative_tokens);
    static char v_index_cache[DSD_CFG_INDEX_PATTERN_MAX + 64];
    dsd_index_cache_describe(&mcfg, v_index_cache, sizeof v_index_cache);
    snprintf(v_threads, sizeof v_threads, "%lld", (long long)cfg.threads);
    snprintf(v_batch, sizeof v_batch, "%lld", (long long)cfg.max_batch);
    snprintf(v_tokens, sizeof v_tokens, "%lld", (long long)cfg.max_batch_tokens);
    snprintf(v_chunk, sizeof v_chunk, "%lld", (long long)cfg.prefill_chunk);
    const char *info_values[] = { dsd_serve_numerics_name(cfg.numerics), kv_name, v_threads, v_batch, v_tokens, v_chunk,
                                  dsd_serve_fairness_name(cfg.fairness), dsd_serve_backend_name(cfg.backend),
                                  v_spec, v_index_cache };
    struct dsd_server_params sp = {
        .listen_fd = listen_fd,
        .wake_fd = wake_fd,
        .engine = engine,
        .tokenizer = tok,
        .model_cfg = &mcfg,
        .model_name = model_name,
        .kv_dtype_name = kv_name,
        .backend_name = dsd_serve_backend_name(cfg.backend),
        .max_context = mcfg.max_position_embeddings < INT32_MAX ? (int)mcfg.max_position_embeddings : INT32_MAX,
        .reload = reload,
        .reload_user = &cfg,
        .test_force_trigger = cfg.test_force_trigger,
        .test_force_output = cfg.test_force_output,
        .info_keys = info_keys,
        .info_values = info_values,
        .n_info = (int)(sizeof info_keys / sizeof info_keys[0]),
    };
    limits_from_config(&cfg, &sp.limits);
    if (cfg.test_spec_force != DSD_SERVE_SPEC_FORCE_NONE)
        dsd_log(LOG_WARNING, "test_spec_force is set: every speculative draft is %s (tests only)",
                cfg.test_spec_force == DSD_SERVE_SPEC_FORCE_ACCEPT ? "accepted" : "rejected");
    if (cfg.test_disk_write_delay_ms > 0)
        dsd_log(LOG_WARNING, "test_disk_write_delay_ms is set: disk KV writes take %lld ms more (tests only)",
                (long long)cfg.test_disk_write_delay_ms);
    if (cfg.test_load_delay_ms > 0)
        dsd_log(LOG_WARNING, "test_load_delay_ms is set: loading starts %lld ms late (tests only)",
                (long long)cfg.test_load_delay_ms);
    if (cfg.test_force_trigger[0] && cfg.test_force_output[0])
        dsd_log(LOG_WARNING, "test_force_trigger is set: chats ending with it get a forced output (tests only)");
    rc = dsd_server_run(&sp, &err);
    if (rc)
        dsd_log(LOG_ERR, "%s", err.msg);
    bool failed = dsd_engine_state(engine) == DSD_ENGINE_FAILED;
    dsd_engine_stop(engine);
    close(wake_fd);
    close(listen_fd);
    if (own_socket)
        unlink(cfg.socket);
    dsd_tokenizer_free(tok);
    dsd_log(LOG_INFO, "deepseekd stopped");
    return rc || failed ? 1 : 0;
}
