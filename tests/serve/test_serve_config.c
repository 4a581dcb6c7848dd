/*
 * The configuration table against its specification (the key list below is written from the
 * design brief, not read from the table): defaults, bounds of every key, the file format,
 * options, errors that name file:line (or the option) and the key, --help, the example file,
 * the default-file rule, and reload (applies reloadable keys only, reports the others, keeps
 * option values, leaves everything untouched on a bad file).
 *
 * The test includes config.c so it can point the default configuration path at a file of its
 * own (a machine with /etc/deepseekd/deepseekd.conf must not change the results) and reach the
 * bool type, which no key uses yet.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static char test_default_path[512];
#define DSD_SERVE_CONFIG_DEFAULT_PATH test_default_path
#include "config.c"

#include "test.h"

/* ---- The specification: name, default, bounds (or NULL), a valid other value, reloadable */
struct key_spec {
    const char *name;
    const char *def;                /* as dsd_serve_config_format prints it; NULL = required */
    const char *min, *max;          /* for integers, sizes and modes */
    const char *alt;                /* another valid value, as formatted */
    bool reloadable;
};

static const struct key_spec spec[] = {
    { "model", NULL, NULL, NULL, "/srv/other-model", false },
    { "socket", "/run/deepseekd/deepseekd.sock", NULL, NULL, "/run/other.sock", false },
    { "socket_mode", "0660", "0000", "0777", "0600", false },
    { "socket_group", "", NULL, NULL, "inference", false },
    { "backend", "cpu", NULL, NULL, NULL, false },      /* cuda depends on the build: tested below */
    { "gpu", "0", "0", "1023", "1", false },
    { "numerics", "production", NULL, NULL, "exact", false },
    { "kv_dtype", "fp8", NULL, NULL, "bf16", false },
    { "index_topk_freq", "0", "0", "65536", "4", false },
    { "index_topk_pattern", "", NULL, NULL, "FFSF", false },
    { "threads", "0", "0", "1024", "8", false },
    { "kv_pages", "0", "0", "16777216", "1000", false },
    { "kv_memory_mb", "1024", "16", "16777216", "2048", false },
    { "kv_gpu_fraction", "0.9", "0", "1", "0.5", false },
    { "prefix_cache", "yes", NULL, NULL, "no", false },
    { "host_cache_gb", "0", "0", "65536", "0.5", false },
    { "disk_cache_dir", "/var/cache/deepseekd", NULL, NULL, "/srv/cache", false },
    { "disk_cache_gb", "0", "0", "1048576", "64", false },
    { "gpus", "1", "1", "256", "8", false },
    { "gpu_mem", "0", "0", "1125899906842624", "85520809984", false },
    { "max_batch", "64", "1", "4096", "32", false },
    { "max_batch_tokens", "2048", "1", "1048576", "4096", false },
    { "prefill_chunk", "512", "1", "1048576", "256", false },
    { "fairness", "uid", NULL, NULL, "connection", false },
    { "speculative_tokens", "0", "0", "3", "2", false },
    { "max_prompt_tokens", "0", "0", "2147483648", "100000", false },
    { "max_tokens", "4096", "1", "2147483648", "8192", true },
    { "max_connections_per_uid", "64", "1", "65536", "16", true },
    { "max_inflight", "256", "1", "65536", "128", true },
    { "max_inflight_per_uid", "1024", "1", "1048576", "512", true },
    { "max_frame_kb", "4096", "64", "65536", "8192", false },
    { "max_shm_mb", "1024", "1", "1048576", "2048", false },
    { "stall_timeout_s", "60", "1", "86400", "120", true },
    { "drain_timeout_s", "30", "0", "3600", "5", true },
    { "frame_timeout_s", "30", "1", "3600", "10", true },
    { "idle_timeout_s", "600", "0", "604800", "60", true },
    { "log_level", "info", NULL, NULL, "debug", true },
    { "test_force_trigger", "", NULL, NULL, "[[force]]", false },
    { "test_force_output", "", NULL, NULL, "forced text", false },
    { "test_load_delay_ms", "0", "0", "600000", "2500", false },
    { "test_spec_force", "none", NULL, NULL, "accept", false },
    { "test_disk_write_delay_ms", "0", "0", "600000", "2500", false },
};
#define N_SPEC ((int)(sizeof spec / sizeof spec[0]))

/* ---- helpers ---- */

static char tmpdir[256];

static void write_file(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

static char conf_path[512];

/* Writes the test configuration file (with a model line unless the text sets one). */
static const char *conf(const char *fmt, ...)
{
    snprintf(conf_path, sizeof conf_path, "%s/deepseekd.conf", tmpdir);
    char body[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    write_file(conf_path, "%s", body);
    return conf_path;
}

/* Loads with argv = {"deepseekd", args..., NULL}. */
static int load(struct dsd_serve_config *cfg, struct dsd_err *err, ...)
{
    char *argv[32] = { "deepseekd" };
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    const char *a;
    while ((a = va_arg(ap, const char *)) && argc < 31)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    memset(err, 0, sizeof *err);
    return dsd_serve_config_load(argc, argv, cfg, err);
}

static const char *value_of(const struct dsd_serve_config *cfg, const char *key)
{
    static char buf[DSD_SERVE_CONFIG_PATH_MAX];
    if (dsd_serve_config_format(cfg, key, buf, sizeof buf) < 0)
        return "(unknown key)";
    return buf;
}

#define ASSERT_CONTAINS(hay, needle)                                                    \
    do {                                                                                \
        const char *h_ = (hay), *n_ = (needle);                                         \
        test_checks_total++;                                                            \
        if (!strstr(h_, n_))                                                            \
            TEST_FAIL_AT("expected \"%s\" in \"%s\"", n_, h_);                           \
    } while (0)

/* Runs fn with stdout going to a file; returns the captured text (static buffer). */
static const char *capture_stdout(int (*fn)(void *), void *arg, int *rc)
{
    static char text[65536];
    char path[512];
    snprintf(path, sizeof path, "%s/stdout", tmpdir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    *rc = fn(arg);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = 0;
    if (f)
        fclose(f);
    return text;
}

/* ---- tests ---- */

TEST(table_matches_the_specification)
{
    int n = 0;
    while (dsd_serve_config_key_name(n))
        n++;
    ASSERT_EQ_INT(n, N_SPEC);
    for (int i = 0; i < N_SPEC; i++) {
        test_checks_total++;
        if (!key_find(spec[i].name, NULL))
            TEST_FAIL_AT("key %s is missing from the table", spec[i].name);
        test_checks_total++;
        if (dsd_serve_config_key_reloadable(spec[i].name) != spec[i].reloadable)
            TEST_FAIL_AT("key %s: reloadable should be %d", spec[i].name, spec[i].reloadable);
    }
    ASSERT_TRUE(!dsd_serve_config_key_reloadable("no_such_key"));
}

TEST(defaults)
{
    struct dsd_serve_config cfg;
    dsd_serve_config_defaults(&cfg);
    for (int i = 0; i < N_SPEC; i++) {
        const char *want = spec[i].def ? spec[i].def : "";
        test_checks_total++;
        if (strcmp(value_of(&cfg, spec[i].name), want) != 0)
            TEST_FAIL_AT("default of %s: \"%s\", want \"%s\"", spec[i].name,
                         value_of(&cfg, spec[i].name), want);
    }
    /* The fields themselves, for the types the daemon reads directly. */
    ASSERT_EQ_INT(cfg.backend, DSD_SERVE_BACKEND_CPU);
    ASSERT_EQ_INT(cfg.numerics, DSD_SERVE_NUMERICS_PRODUCTION);
    ASSERT_EQ_INT(cfg.kv_dtype, DSD_SERVE_KV_FP8);
    ASSERT_EQ_INT(cfg.socket_mode, 0660);
    ASSERT_EQ_INT(cfg.log_level, LOG_INFO);
    ASSERT_EQ_INT(cfg.max_prompt_tokens, 0);
    ASSERT_EQ_INT(cfg.max_tokens, 4096);
    ASSERT_EQ_INT(cfg.kv_memory_mb, 1024);
    ASSERT_EQ_STR(cfg.model, "");
}

TEST(model_is_required)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    test_default_path[0] = 0;
    ASSERT_EQ_INT(load(&cfg, &err, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "model");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", NULL), 0);
    ASSERT_EQ_STR(cfg.model, "/m");
    ASSERT_EQ_STR(cfg.config_path, "");
}

TEST(file_format)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    const char *p = conf("# a comment\n"
                         "\n"
                         "   # an indented comment\n"
                         "model = /srv/models/x\n"
                         "threads=3\n"
                         "\tmax_batch   =   12   \n"
                         "max_batch = 13\n"                 /* later lines win */
                         "socket_group = \"\"\n"
                         "socket = \"/run/with space.sock\"\n"
                         "backend = cpu\r\n"                /* CRLF */
                         "kv_dtype = bf16\n"
                         "socket_mode = 600\n"
                         "log_level = debug");              /* no final newline */
    int rc = load(&cfg, &err, "--config", p, NULL);
    ASSERT_EQ_INT(rc, 0);
    if (rc)
        printf("  %s\n", err.msg);
    ASSERT_EQ_STR(cfg.model, "/srv/models/x");
    ASSERT_EQ_INT(cfg.threads, 3);
    ASSERT_EQ_INT(cfg.max_batch, 13);
    ASSERT_EQ_STR(cfg.socket_group, "");
    ASSERT_EQ_STR(cfg.socket, "/run/with space.sock");
    ASSERT_EQ_INT(cfg.kv_dtype, DSD_SERVE_KV_BF16);
    ASSERT_EQ_INT(cfg.socket_mode, 0600);
    ASSERT_EQ_INT(cfg.log_level, LOG_DEBUG);
    ASSERT_EQ_STR(cfg.config_path, p);
    ASSERT_TRUE(cfg.config_explicit);
}

TEST(sizes_take_suffixes)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    static const struct { const char *key, *text; long long want; } ok[] = {
        { "kv_memory_mb", "64G", 65536 }, { "kv_memory_mb", "1t", 1048576 },
        { "kv_memory_mb", "2048M", 2048 }, { "kv_memory_mb", "16384K", 16 },
        { "kv_memory_mb", "1GiB", 1024 }, { "kv_memory_mb", "1gb", 1024 },
        { "max_frame_kb", "4M", 4096 }, { "max_frame_kb", "100", 100 },
        { "max_frame_kb", "64K", 64 }, { "max_shm_mb", "1G", 1024 },
        { "gpu_mem", "80G", 85899345920LL }, { "gpu_mem", "1000", 1000 },
        { "gpu_mem", "141GiB", 151397597184LL }, { "gpu_mem", "2K", 2048 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int rc = load(&cfg, &err, "--config", conf("model = /m\n%s = %s\n", ok[i].key, ok[i].text),
                      NULL);
        test_checks_total++;
        char want[32];
        snprintf(want, sizeof want, "%lld", ok[i].want);
        if (rc != 0 || strcmp(value_of(&cfg, ok[i].key), want) != 0)
            TEST_FAIL_AT("%s = %s: rc %d, got %s, want %s (%s)", ok[i].key, ok[i].text, rc,
                         value_of(&cfg, ok[i].key), want, err.msg);
    }
    static const struct { const char *key, *text, *why; } bad[] = {
        { "kv_memory_mb", "512K", "whole number of MiB" },
        { "kv_memory_mb", "8M", "out of range" },
        { "kv_memory_mb", "17T", "out of range" },
        { "kv_memory_mb", "9999999999999T", "out of range" },
        { "kv_memory_mb", "1X", "not a size" },
        { "kv_memory_mb", "1Kx", "not a size" },
        { "kv_memory_mb", "G", "not a size" },
        { "max_frame_kb", "65M", "out of range" },
        { "max_frame_kb", "63", "out of range" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = conf("model = /m\n%s = %s\n", bad[i].key, bad[i].text);
        ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
        char where[600];
        snprintf(where, sizeof where, "%s:2: %s = \"%s\"", p, bad[i].key, bad[i].text);
        ASSERT_CONTAINS(err.msg, where);
        ASSERT_CONTAINS(err.msg, bad[i].why);
    }
}

/* min and max are accepted; one beyond either is an error naming file:line, the key and
 * the allowed range. */
TEST(bounds_of_every_key)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    for (int i = 0; i < N_SPEC; i++) {
        const struct key_spec *s = &spec[i];
        if (!s->min)
            continue;
        bool octal = strcmp(s->name, "socket_mode") == 0;
        long long lo = strtoll(s->min, NULL, octal ? 8 : 10);
        long long hi = strtoll(s->max, NULL, octal ? 8 : 10);
        char v[4][32];
        const char *fmt = octal ? "%llo" : "%lld";
        snprintf(v[0], 32, fmt, lo);
        snprintf(v[1], 32, fmt, hi);
        snprintf(v[2], 32, octal ? "%llo" : "%lld", lo - 1);
        snprintf(v[3], 32, fmt, hi + 1);
        for (int j = 0; j < 4; j++) {
            if (j == 2 && lo == 0)
                snprintf(v[2], 32, "-1");
            if (octal && j == 2)
                continue;   /* "-1" is not octal at all: covered by malformed_values */
            const char *p = conf("\n\nmodel = /m\n%s = %s\n", s->name, v[j]);
            int rc = load(&cfg, &err, "--config", p, NULL);
            if (j < 2) {
                test_checks_total++;
                if (rc != 0)
                    TEST_FAIL_AT("%s = %s should be accepted: %s", s->name, v[j], err.msg);
                continue;
            }
            test_checks_total++;
            if (rc != -EINVAL) {
                TEST_FAIL_AT("%s = %s should be refused (rc %d)", s->name, v[j], rc);
                continue;
            }
            char where[600];
            snprintf(where, sizeof where, "%s:4: %s = \"%s\": ", p, s->name, v[j]);
            ASSERT_CONTAINS(err.msg, where);
            ASSERT_CONTAINS(err.msg, "out of range");
            ASSERT_CONTAINS(err.msg, s->min);
            ASSERT_CONTAINS(err.msg, s->max);
        }
    }
}

TEST(malformed_values)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    static const struct { const char *line, *needle; } bad[] = {
        { "threads = abc", "not an integer" },
        { "threads = 4 # four", "not an integer" },
        { "threads = 4.5", "not an integer" },
        { "threads =", "not an integer" },
        { "threads = 0x10", "not an integer" },
        { "max_tokens = 99999999999999999999999", "out of range" },
        { "backend = gpu", "must be one of cpu, cuda" },
        { "kv_dtype = FP8", "must be one of fp8, bf16" },
        { "numerics = fast", "must be one of production, exact" },
        { "log_level = warn", "must be one of err, warning, notice, info, debug" },
        { "socket_mode = 0680", "not an octal mode" },
        { "socket_mode = rw", "not an octal mode" },
        { "socket_mode = 1777", "out of range" },
        { "socket_mode = -1", "not an octal mode" },
        { "kv_gpu_fraction = abc", "not a decimal number (allowed: 0..1, e.g. 0.9)" },
        { "host_cache_gb = 64G", "not a decimal number (allowed: 0..65536" },
        { "host_cache_gb = -1", "out of range (allowed: 0..65536)" },
        { "disk_cache_gb = 2000000", "out of range (allowed: 0..1048576)" },
        { "prefix_cache = maybe", "must be yes or no" },
        { "kv_gpu_fraction = 1e-1", "not a decimal number" },
        { "kv_gpu_fraction = 0.5.1", "not a decimal number" },
        { "kv_gpu_fraction = .", "not a decimal number" },
        { "kv_gpu_fraction = nan", "not a decimal number" },
        { "kv_gpu_fraction = 1.01", "out of range (allowed: 0..1)" },
        { "kv_gpu_fraction = -0.5", "out of range (allowed: 0..1)" },
        { "gpu_mem = 80X", "not a size (allowed: 0..1125899906842624 bytes" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = conf("model = /m\n%s\n", bad[i].line);
        ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
        char key[64];
        sscanf(bad[i].line, "%63[a-z_]", key);
        char where[600];
        snprintf(where, sizeof where, "%s:2: %s = ", p, key);
        ASSERT_CONTAINS(err.msg, where);
        ASSERT_CONTAINS(err.msg, bad[i].needle);
    }
    /* A socket path longer than sun_path. */
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = 0;
    const char *p = conf("model = /m\nsocket = %s\n", longpath);
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, ":2: socket = ");
    ASSERT_CONTAINS(err.msg, "too long (199 bytes, at most 107)");
    /* An empty socket path is refused, naming the line. */
    p = conf("model = /m\nsocket = \"\"\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, ":2: socket = \"\"");
}

TEST(syntax_errors)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    const char *p = conf("model = /m\nthreads 4\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    char where[600];
    snprintf(where, sizeof where, "%s:2: expected \"key = value\", got \"threads 4\"", p);
    ASSERT_CONTAINS(err.msg, where);

    p = conf("model = /m\n\n# x\nthread = 4\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    snprintf(where, sizeof where, "%s:4: unknown key \"thread\" (did you mean \"threads\"?)", p);
    ASSERT_CONTAINS(err.msg, where);

    p = conf("model = /m\ncompletely_unrelated = 1\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, ":2: unknown key \"completely_unrelated\" (deepseekd --help");

    /* A NUL byte inside a line. */
    snprintf(conf_path, sizeof conf_path, "%s/nul.conf", tmpdir);
    FILE *f = fopen(conf_path, "w");
    fwrite("model = /m\nthreads = 1\0 2\n", 1, 26, f);
    fclose(f);
    ASSERT_EQ_INT(load(&cfg, &err, "--config", conf_path, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "nul.conf:2: line contains a NUL byte");

    /* A NUL byte in a last line without a newline. */
    f = fopen(conf_path, "w");
    fwrite("model = /m\nthreads = 1\0", 1, 24, f);
    fclose(f);
    ASSERT_EQ_INT(load(&cfg, &err, "--config", conf_path, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "nul.conf:2: line contains a NUL byte");

    /* A quote at one end of a value only. */
    p = conf("model = \"/m\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, ":1: model: unbalanced double quote");
    p = conf("model = /m\nthreads = 4\"\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, ":2: threads: unbalanced double quote");

    /* A file that never ends (/dev/zero) or is far too large: refused without reading it all;
     * one just under the limit (comment lines) loads */
    ASSERT_EQ_INT(load(&cfg, &err, "--config", "/dev/zero", NULL), -EFBIG);
    ASSERT_CONTAINS(err.msg, "/dev/zero is larger than 1024 KiB");
    snprintf(conf_path, sizeof conf_path, "%s/big.conf", tmpdir);
    f = fopen(conf_path, "w");
    fputs("model = /m\n", f);
    for (int i = 0; i < 16383; i++)
        fputs("# .............................................................\n", f);     /* 64 bytes: 11 + 16383 x 64 = 1 MiB - 53 */
    fclose(f);
    ASSERT_EQ_INT(load(&cfg, &err, "--config", conf_path, NULL), 0);
    f = fopen(conf_path, "a");
    fputs("# .............................................................\n", f);         /* 64 more: past 1 MiB */
    fclose(f);
    ASSERT_EQ_INT(load(&cfg, &err, "--config", conf_path, NULL), -EFBIG);
}

/* cuda with exact numerics is refused on every build (exact runs on the CPU); a build
 * without CUDA refuses cuda at all. Either way the message names the line. */
TEST(cuda_is_refused_with_its_origin)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    const char *p = conf("model = /m\n\nbackend = cuda\nnumerics = exact\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    char where[600];
    snprintf(where, sizeof where, "%s:3: backend = \"cuda\"", p);
    ASSERT_CONTAINS(err.msg, where);
    ASSERT_CONTAINS(err.msg, DSD_SERVE_HAVE_CUDA ? "exact numerics run on the CPU" : "built without the CUDA backend");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--backend", "cuda", "--numerics", "exact", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "option --backend: backend = \"cuda\"");
    /* An option overriding the file's cuda is fine. */
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, "--backend=cpu", NULL), 0);
    /* cuda in production numerics: accepted exactly when this build has CUDA */
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--backend", "cuda", "--gpu", "1", NULL),
                  DSD_SERVE_HAVE_CUDA ? 0 : -EINVAL);
    if (DSD_SERVE_HAVE_CUDA)
        ASSERT_EQ_INT(cfg.gpu, 1);
    ASSERT_TRUE(!cfg.plan);
    /* --plan runs no backend: it plans for GPUs whatever backend is configured. */
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, "--plan", NULL), 0);
    ASSERT_TRUE(cfg.plan);
}

/* IndexCache's keys: the model's rules (daemon/model/index_cache.h) with the key's origin;
 * the pattern's length waits for the model. */
TEST(index_cache_keys)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--index-topk-pattern", "FSSF", NULL), 0);
    ASSERT_EQ_STR(cfg.index_topk_pattern, "FSSF");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--index-topk-freq", "4", NULL), 0);
    ASSERT_EQ_INT(cfg.index_topk_freq, 4);
    const char *p = conf("model = /m\nindex_topk_freq = 0\nindex_topk_pattern = FSxS\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, ":3: index_topk_pattern character 2 is 'x'");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, "--index-topk-pattern", "FSFS", NULL), 0);
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--index-topk-pattern", "SFFF", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "option --index-topk-pattern: index_topk_pattern must start with 'F'");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--index-topk-freq", "0", "--index-topk-pattern", "F", NULL), 0);
}

TEST(plan_flag)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    ASSERT_EQ_INT(load(&cfg, &err, "--plan", "--model", "/m", "--gpus", "8", "--gpu-mem", "141G",
                       "--kv-gpu-fraction", "0.85", NULL), 0);
    ASSERT_TRUE(cfg.plan);
    ASSERT_EQ_INT(cfg.gpus, 8);
    ASSERT_EQ_INT(cfg.gpu_mem, 141LL << 30);
    ASSERT_TRUE(cfg.kv_gpu_fraction == 0.85);
    ASSERT_EQ_STR(value_of(&cfg, "kv_gpu_fraction"), "0.85");
    /* the cache tiers: decimal GiB, so a test can ask for a few pages */
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--host-cache-gb", "0.0005", "--disk-cache-gb=1.5",
                       "--disk-cache-dir", "/tmp/c", "--prefix-cache", "off", NULL), 0);
    ASSERT_TRUE(cfg.host_cache_gb == 0.0005 && cfg.disk_cache_gb == 1.5 && !cfg.prefix_cache);
    ASSERT_EQ_STR(cfg.disk_cache_dir, "/tmp/c");
    ASSERT_EQ_STR(value_of(&cfg, "host_cache_gb"), "0.0005");
    /* --plan still needs a model, and takes no value. */
    test_default_path[0] = 0;
    ASSERT_EQ_INT(load(&cfg, &err, "--plan", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "no model directory");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--plan=yes", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "unknown option \"--plan=yes\"");
}

TEST(options)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    const char *p = conf("model = /from/file\nthreads = 2\nmax_batch = 5\nkv_dtype = bf16\n");
    /* Options override the file wherever they stand relative to --config. */
    int rc = load(&cfg, &err, "--threads", "7", "--config", p, "--kv-dtype=fp8",
                  "--max_batch=9", "--socket-mode", "0640", "--log-level", "err", NULL);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_STR(cfg.model, "/from/file");
    ASSERT_EQ_INT(cfg.threads, 7);
    ASSERT_EQ_INT(cfg.max_batch, 9);
    ASSERT_EQ_INT(cfg.kv_dtype, DSD_SERVE_KV_FP8);
    ASSERT_EQ_INT(cfg.socket_mode, 0640);
    ASSERT_EQ_INT(cfg.log_level, LOG_ERR);
    ASSERT_TRUE(cfg.from_flag[0] == false);     /* model came from the file */
    /* The last of a repeated option wins; an empty value via = is a value. */
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/a", "--model", "/b", "--socket-group=", NULL), 0);
    ASSERT_EQ_STR(cfg.model, "/b");
    ASSERT_EQ_STR(cfg.socket_group, "");
    /* A value that starts with "--" needs the = form. */
    ASSERT_EQ_INT(load(&cfg, &err, "--model=--odd", NULL), 0);
    ASSERT_EQ_STR(cfg.model, "--odd");
}

TEST(option_errors)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--thread", "4", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "unknown option \"--thread\" (did you mean --threads?)");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--max-bach=3", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "unknown option \"--max-bach=3\" (did you mean --max-batch?)");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--frobnicate", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "unknown option \"--frobnicate\" (see deepseekd --help)");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "--model needs a value");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "--threads", "3", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "--model needs a value");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "serve", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "unexpected argument \"serve\"");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "-t", "3", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "unexpected argument \"-t\"");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--", NULL), -EINVAL);
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--config=", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "--config needs a file name");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--threads", "2000", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "option --threads: threads = \"2000\": out of range (allowed: 0..1024)");
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--max-inflight-per-uid=0", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "option --max-inflight-per-uid: max_inflight_per_uid = \"0\"");
    /* Option errors are found before the file is read (the file is never opened). */
    ASSERT_EQ_INT(load(&cfg, &err, "--config", "/nonexistent/x.conf", "--bogus", NULL), -EINVAL);
    ASSERT_CONTAINS(err.msg, "--bogus");
}

TEST(config_file_rules)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing.conf", tmpdir);
    /* An explicit file must exist. */
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--config", missing, NULL), -ENOENT);
    ASSERT_CONTAINS(err.msg, "cannot open configuration file");
    ASSERT_CONTAINS(err.msg, missing);
    /* A directory is not a file. */
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", "--config", tmpdir, NULL), -EISDIR);
    /* The default file is optional ... */
    snprintf(test_default_path, sizeof test_default_path, "%s", missing);
    ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", NULL), 0);
    ASSERT_EQ_STR(cfg.config_path, "");
    /* ... and read when it exists, with options still on top. */
    snprintf(test_default_path, sizeof test_default_path, "%s/default.conf", tmpdir);
    write_file(test_default_path, "model = /default\nthreads = 5\nmax_tokens = 100\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--threads", "6", NULL), 0);
    ASSERT_EQ_STR(cfg.model, "/default");
    ASSERT_EQ_INT(cfg.threads, 6);
    ASSERT_EQ_INT(cfg.max_tokens, 100);
    ASSERT_EQ_STR(cfg.config_path, test_default_path);
    ASSERT_TRUE(!cfg.config_explicit);
    /* An explicit file replaces the default one. */
    ASSERT_EQ_INT(load(&cfg, &err, "--config", conf("model = /explicit\n"), NULL), 0);
    ASSERT_EQ_STR(cfg.model, "/explicit");
    ASSERT_EQ_INT(cfg.max_tokens, 4096);
    /* An unreadable default file is an error, not silently skipped (root reads anything). */
    if (geteuid() != 0) {
        chmod(test_default_path, 0);
        ASSERT_EQ_INT(load(&cfg, &err, "--model", "/m", NULL), -EACCES);
        ASSERT_CONTAINS(err.msg, test_default_path);
    }
    unlink(test_default_path);
    test_default_path[0] = 0;
    /* A relative --config is remembered as an absolute path: a reload after chdir works. */
    char cwd[1024];
    ASSERT_TRUE(getcwd(cwd, sizeof cwd) != NULL);
    conf("model = /rel\n");
    ASSERT_EQ_INT(chdir(tmpdir), 0);
    ASSERT_EQ_INT(load(&cfg, &err, "--config", "deepseekd.conf", NULL), 0);
    ASSERT_EQ_STR(cfg.config_path, conf_path);
    ASSERT_EQ_INT(chdir("/"), 0);
    conf("model = /rel\nmax_tokens = 77\n");
    struct dsd_serve_config_changes ch;
    ASSERT_EQ_INT(dsd_serve_config_reload(&cfg, &ch, &err), 0);
    ASSERT_EQ_INT(cfg.max_tokens, 77);
    ASSERT_EQ_INT(chdir(cwd), 0);
}

static int run_load_argv(void *arg)
{
    char **argv = arg;
    int argc = 0;
    while (argv[argc])
        argc++;
    struct dsd_serve_config cfg;
    struct dsd_err err;
    return dsd_serve_config_load(argc, argv, &cfg, &err);
}

/* The block of --help describing one key: from "--name " to the next option. */
static void help_block(const char *help, const char *key, char *out, size_t size)
{
    char flag[80];
    snprintf(flag, sizeof flag, "\n  --%s ", key);
    dashed(flag + 5);
    out[0] = 0;
    const char *s = strstr(help, flag);
    if (!s)
        return;
    const char *e = strstr(s + 1, "\n  --");
    const char *g = strstr(s + 1, "\n\n");
    if (!e || (g && g < e))
        e = g;
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n >= size)
        n = size - 1;
    memcpy(out, s, n);
    out[n] = 0;
}

TEST(help_lists_every_key)
{
    int rc;
    char *argv[] = { "deepseekd", "--threads", "1", "--help", "--bogus", NULL };
    const char *help = capture_stdout(run_load_argv, argv, &rc);
    ASSERT_EQ_INT(rc, DSD_SERVE_CONFIG_HANDLED);
    ASSERT_CONTAINS(help, "Usage: deepseekd");
    ASSERT_CONTAINS(help, "--config FILE");
    ASSERT_CONTAINS(help, "--print-config");
    for (int i = 0; i < N_SPEC; i++) {
        char block[1024];
        help_block(help, spec[i].name, block, sizeof block);
        test_checks_total++;
        if (!block[0]) {
            TEST_FAIL_AT("--help does not list %s", spec[i].name);
            continue;
        }
        char def[300];
        snprintf(def, sizeof def, "(default: %s", spec[i].def ? (spec[i].def[0] ? spec[i].def : "\"\"")
                                                              : "none, required");
        ASSERT_CONTAINS(block, def);
        test_checks_total++;
        if ((strstr(block, "[reload]") != NULL) != spec[i].reloadable)
            TEST_FAIL_AT("--help for %s: [reload] should be %s", spec[i].name,
                         spec[i].reloadable ? "present" : "absent");
        if (spec[i].min) {
            char range[80];
            snprintf(range, sizeof range, "%s..%s", spec[i].min, spec[i].max);
            ASSERT_CONTAINS(block, range);
        }
    }
    /* No line is wider than a terminal. */
    for (const char *l = help; *l;) {
        size_t n = strcspn(l, "\n");
        test_checks_total++;
        if (n > 80)
            TEST_FAIL_AT("help line longer than 80: %.*s", (int)n, l);
        l += n + (l[n] ? 1 : 0);
    }
    char *argv2[] = { "deepseekd", "-h", NULL };
    capture_stdout(run_load_argv, argv2, &rc);
    ASSERT_EQ_INT(rc, DSD_SERVE_CONFIG_HANDLED);
    char *argv3[] = { "deepseekd", "--version", NULL };
    const char *v = capture_stdout(run_load_argv, argv3, &rc);
    ASSERT_EQ_INT(rc, DSD_SERVE_CONFIG_HANDLED);
    ASSERT_TRUE(strncmp(v, "deepseekd ", 10) == 0 && isdigit((unsigned char)v[10]));
}

/* The example file documents every key at its default, and is itself a valid configuration:
 * uncommenting every key line (and setting the model) loads the defaults. */
TEST(example_file_is_valid_and_complete)
{
    int rc;
    char *argv[] = { "deepseekd", "--print-config", NULL };
    const char *ex = capture_stdout(run_load_argv, argv, &rc);
    ASSERT_EQ_INT(rc, DSD_SERVE_CONFIG_HANDLED);
    char uncommented[65536];
    size_t o = 0;
    int key_lines = 0;
    for (const char *l = ex; *l;) {
        size_t n = strcspn(l, "\n");
        test_checks_total++;
        if (n > 80)
            TEST_FAIL_AT("example line longer than 80: %.*s", (int)n, l);
        char name[64];
        if (sscanf(l, "#%63[a-z_] = ", name) == 1 && key_find(name, NULL) &&
            strstr(l, " = ") && strstr(l, " = ") < l + n) {
            key_lines++;
            if (strcmp(name, "model") == 0)
                o += (size_t)snprintf(uncommented + o, sizeof uncommented - o, "model = /m\n");
            else
                o += (size_t)snprintf(uncommented + o, sizeof uncommented - o, "%.*s\n",
                                      (int)n - 1, l + 1);
        } else {
            o += (size_t)snprintf(uncommented + o, sizeof uncommented - o, "%.*s\n", (int)n, l);
        }
        l += n + (l[n] ? 1 : 0);
    }
    ASSERT_EQ_INT(key_lines, N_SPEC);
    for (int i = 0; i < N_SPEC; i++) {
        char line[300];
        if (spec[i].def)
            snprintf(line, sizeof line, "\n#%s = %s\n", spec[i].name,
                     spec[i].def[0] ? spec[i].def : "\"\"");
        else
            snprintf(line, sizeof line, "\n#%s = /", spec[i].name);
        ASSERT_CONTAINS(ex, line);
        char rl[64];
        snprintf(rl, sizeof rl, "%s\n#%s = ", spec[i].reloadable ? "Reloadable." : "Needs a restart.",
                 spec[i].name);
        ASSERT_CONTAINS(ex, rl);
    }
    struct dsd_serve_config cfg, def;
    struct dsd_err err;
    ASSERT_EQ_INT(load(&cfg, &err, "--config", conf("%s", uncommented), NULL), 0);
    dsd_serve_config_defaults(&def);
    for (int i = 0; i < N_SPEC; i++) {
        if (strcmp(spec[i].name, "model") == 0)
            continue;
        char a[256];
        snprintf(a, sizeof a, "%s", value_of(&cfg, spec[i].name));
        ASSERT_EQ_STR(a, value_of(&def, spec[i].name));
    }
}

/* Loads base (+ two options), rewrites the file with every key changed, reloads. */
TEST(reload_applies_reloadable_keys_only)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    const char *p = conf("model = /m\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, "--max-inflight", "7", "--threads", "3", NULL), 0);

    struct dsd_serve_config_changes ch;
    ASSERT_EQ_INT(dsd_serve_config_reload(&cfg, &ch, &err), 0);
    ASSERT_EQ_INT(ch.count, 0);

    char body[8192];
    size_t o = 0;
    for (int i = 0; i < N_SPEC; i++)
        if (spec[i].alt)
            o += (size_t)snprintf(body + o, sizeof body - o, "%s = \"%s\"\n", spec[i].name,
                                  spec[i].alt);
    struct dsd_serve_config before = cfg;
    conf("%s", body);
    memset(&ch, 0x55, sizeof ch);
    int rc = dsd_serve_config_reload(&cfg, &ch, &err);
    ASSERT_EQ_INT(rc, 0);
    if (rc)
        printf("  %s\n", err.msg);
    for (int i = 0; i < N_SPEC; i++) {
        const struct key_spec *s = &spec[i];
        bool flagged = strcmp(s->name, "max_inflight") == 0 || strcmp(s->name, "threads") == 0;
        const struct dsd_serve_config_change *c = NULL;
        for (int j = 0; j < ch.count; j++)
            if (strcmp(ch.item[j].key, s->name) == 0)
                c = &ch.item[j];
        char old[256];
        snprintf(old, sizeof old, "%s", value_of(&before, s->name));
        if (!s->alt || flagged) {
            test_checks_total++;
            if (c)
                TEST_FAIL_AT("%s reported as changed", s->name);
            ASSERT_EQ_STR(value_of(&cfg, s->name), old);
            continue;
        }
        test_checks_total++;
        if (!c) {
            TEST_FAIL_AT("%s changed but is not reported", s->name);
            continue;
        }
        ASSERT_EQ_INT(c->needs_restart, !s->reloadable);
        ASSERT_EQ_STR(c->old_value, old);
        ASSERT_EQ_STR(c->new_value, s->alt);
        ASSERT_EQ_STR(value_of(&cfg, s->name), s->reloadable ? s->alt : old);
    }
    ASSERT_EQ_INT(cfg.max_inflight, 7);
    ASSERT_EQ_INT(cfg.log_level, LOG_DEBUG);
    ASSERT_EQ_INT(cfg.max_tokens, 8192);
    ASSERT_EQ_STR(cfg.model, "/m");                 /* not reloadable */

    /* A second reload of the same file: the restart-needed keys are still reported, the
     * applied ones are not. */
    ASSERT_EQ_INT(dsd_serve_config_reload(&cfg, &ch, &err), 0);
    for (int j = 0; j < ch.count; j++)
        ASSERT_TRUE(ch.item[j].needs_restart);
}

TEST(reload_with_a_bad_file_changes_nothing)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    const char *p = conf("model = /m\nmax_tokens = 10\n");
    ASSERT_EQ_INT(load(&cfg, &err, "--config", p, NULL), 0);
    struct dsd_serve_config before = cfg;
    struct dsd_serve_config_changes ch = { .count = 12345 };

    static const char *const bad[] = {
        "model = /m\nmax_tokens = 20\nlog_level = loud\n",     /* a bad value after a good one */
        "model = /m\nmax_tokens = 20\nbackend = cuda\nnumerics = exact\n",   /* refused backend */
        "max_tokens = 20\n",                                   /* model gone */
        "model = /m\nmax_tokens = 20\nbogus = 1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        conf("%s", bad[i]);
        ASSERT_EQ_INT(dsd_serve_config_reload(&cfg, &ch, &err), -EINVAL);
        ASSERT_TRUE(memcmp(&cfg, &before, sizeof cfg) == 0);
        ASSERT_EQ_INT(ch.count, 12345);
        if (i == 1) {
            char where[600];
            snprintf(where, sizeof where, "%s:3: backend = \"cuda\"", p);
            ASSERT_CONTAINS(err.msg, where);
        }
    }
    unlink(p);
    ASSERT_EQ_INT(dsd_serve_config_reload(&cfg, &ch, &err), -ENOENT);
    ASSERT_CONTAINS(err.msg, p);
    ASSERT_TRUE(memcmp(&cfg, &before, sizeof cfg) == 0);
}

TEST(reload_truncates_long_values)
{
    struct dsd_serve_config cfg;
    struct dsd_err err;
    char longdir[600];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = 0;
    ASSERT_EQ_INT(load(&cfg, &err, "--config", conf("model = /m\n"), NULL), 0);
    conf("model = %s\n", longdir);
    struct dsd_serve_config_changes ch;
    ASSERT_EQ_INT(dsd_serve_config_reload(&cfg, &ch, &err), 0);
    ASSERT_EQ_INT(ch.count, 1);
    ASSERT_EQ_INT(strlen(ch.item[0].new_value), sizeof ch.item[0].new_value - 1);
    ASSERT_TRUE(strcmp(ch.item[0].new_value + sizeof ch.item[0].new_value - 4, "...") == 0);
    ASSERT_EQ_STR(cfg.model, "/m");
}

/* The bool type (no key uses it yet): a stand-in key over a bool field of the struct. */
TEST(bool_values)
{
    const struct cfg_key k = { "flag", "Test", CFG_BOOL, FIELD(config_explicit), 0, 0, 0, NULL,
                               "no", NULL, 0, "yes|no", "", "" };
    struct dsd_serve_config cfg;
    struct cfg_where w;
    struct dsd_err err;
    snprintf(w.text, sizeof w.text, "f:1");
    static const char *const yes[] = { "yes", "true", "on", "1", "YES", "True" };
    static const char *const no[] = { "no", "false", "off", "0", "NO", "Off" };
    char buf[16];
    for (int i = 0; i < 6; i++) {
        cfg.config_explicit = false;
        ASSERT_EQ_INT(parse_value(&k, yes[i], &cfg, &w, &err), 0);
        ASSERT_TRUE(cfg.config_explicit);
        format_value(&cfg, &k, buf, sizeof buf);
        ASSERT_EQ_STR(buf, "yes");
        ASSERT_EQ_INT(parse_value(&k, no[i], &cfg, &w, &err), 0);
        ASSERT_TRUE(!cfg.config_explicit);
    }
    ASSERT_EQ_INT(parse_value(&k, "maybe", &cfg, &w, &err), -EINVAL);
    ASSERT_CONTAINS(err.msg, "f:1: flag = \"maybe\": must be yes or no");
}

TEST(enum_names)
{
    ASSERT_EQ_STR(dsd_serve_backend_name(DSD_SERVE_BACKEND_CUDA), "cuda");
    ASSERT_EQ_STR(dsd_serve_numerics_name(DSD_SERVE_NUMERICS_EXACT), "exact");
    ASSERT_EQ_STR(dsd_serve_kv_dtype_name(DSD_SERVE_KV_BF16), "bf16");
    ASSERT_EQ_STR(dsd_serve_log_level_name(LOG_WARNING), "warning");
    char buf[8];
    struct dsd_serve_config cfg;
    dsd_serve_config_defaults(&cfg);
    ASSERT_EQ_INT(dsd_serve_config_format(&cfg, "nope", buf, sizeof buf), -ENOENT);
    /* snprintf semantics: the full length is returned, the text truncated. */
    ASSERT_EQ_INT(dsd_serve_config_format(&cfg, "socket", buf, sizeof buf), 29);
    ASSERT_EQ_STR(buf, "/run/de");
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/dsd-config-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(table_matches_the_specification);
    RUN(defaults);
    RUN(model_is_required);
    RUN(file_format);
    RUN(sizes_take_suffixes);
    RUN(bounds_of_every_key);
    RUN(malformed_values);
    RUN(syntax_errors);
    RUN(cuda_is_refused_with_its_origin);
    RUN(index_cache_keys);
    RUN(plan_flag);
    RUN(options);
    RUN(option_errors);
    RUN(config_file_rules);
    RUN(help_lists_every_key);
    RUN(example_file_is_valid_and_complete);
    RUN(reload_applies_reloadable_keys_only);
    RUN(reload_with_a_bad_file_changes_nothing);
    RUN(reload_truncates_long_values);
    RUN(bool_values);
    RUN(enum_names);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_report();
}
