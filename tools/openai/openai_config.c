/*
 * deepseekd-openai's configuration (openai.h): one table of keys read from a file of
 * `key = value` lines (# comments, optional double quotes) and from --key VALUE flags
 * (dashes and underscores interchangeable), later sources winning: defaults, the file,
 * flags. An unknown key or a bad value is an error naming where it was.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "openai.h"

#ifndef OA_DEFAULT_CONFIG
#define OA_DEFAULT_CONFIG "/etc/deepseekd/openai.conf"
#endif
#ifndef OA_VERSION
#define OA_VERSION "0"
#endif

enum key_type { K_STRING, K_INT, K_LEVEL };

struct key {
    const char *name;
    enum key_type type;
    size_t off, size;
    long long lo, hi;
    const char *def;
    const char *help;
};

#define F(f) offsetof(struct oa_config, f), sizeof(((struct oa_config *)0)->f)

static const struct key keys[] = {
    { "socket", K_STRING, F(socket), 0, 0, "",
      "deepseekd's socket (\"\" = $DEEPSEEKD_SOCKET, else /run/deepseekd/deepseekd.sock)" },
    { "listen", K_STRING, F(listen), 0, 0, "127.0.0.1:8000",
      "where to serve HTTP: HOST:PORT, [IPV6]:PORT or unix:PATH (ignored under socket activation)" },
    { "max_body_kb", K_INT, F(max_body_kb), 1, 1048576, "4096", "largest request body, KiB (413 above)" },
    { "max_requests", K_INT, F(max_requests), 1, 65536, "256", "generations running at once (429 above)" },
    { "connections", K_INT, F(connections), 1, 64, "4", "connections to deepseekd, shared by all requests" },
    { "stream_buffer_kb", K_INT, F(stream_buffer_kb), 1, 65536, "64",
      "output held per stream for a slow reader, KiB (then the daemon pauses that request)" },
    { "http_timeout_s", K_INT, F(http_timeout_s), 1, 86400, "300",
      "an HTTP connection with no traffic this long is closed (not while a request waits on the model)" },
    { "threads", K_INT, F(threads), 1, 64, "1", "HTTP polling threads" },
    { "log_level", K_LEVEL, F(log_level), 0, 0, "info", "err, warning, notice, info or debug" },
};
#define N_KEYS (sizeof keys / sizeof keys[0])

static const char *const levels[] = { "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug" };

static const struct key *find(const char *name)
{
    char n[64];
    size_t i = 0;
    for (; name[i] && i < sizeof n - 1; i++)
        n[i] = name[i] == '-' ? '_' : name[i];
    n[i] = 0;
    for (size_t k = 0; k < N_KEYS; k++)
        if (strcmp(keys[k].name, n) == 0)
            return &keys[k];
    return NULL;
}

static int set(struct oa_config *c, const struct key *k, const char *v, const char *where, struct dsd_err *err)
{
    char *f = (char *)c + k->off;
    switch (k->type) {
    case K_STRING:
        if (strlen(v) >= k->size)
            return dsd_errf(err, -EINVAL, "%s: %s: too long (at most %zu bytes)", where, k->name, k->size - 1);
        memcpy(f, v, strlen(v) + 1);
        return 0;
    case K_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < k->lo || x > k->hi)
            return dsd_errf(err, -EINVAL, "%s: %s = '%s': want an integer from %lld to %lld", where, k->name, v, k->lo,
                            k->hi);
        *(int64_t *)f = x;
        return 0;
    }
    case K_LEVEL:
        for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
            if (strcmp(v, levels[i]) == 0) {
                *(int *)f = i;
                return 0;
            }
        return dsd_errf(err, -EINVAL, "%s: %s = '%s': want err, warning, notice, info or debug", where, k->name, v);
    }
    return -EINVAL;
}

static int read_file(struct oa_config *c, const char *path, bool must_exist, struct dsd_err *err)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        if (errno == ENOENT && !must_exist)
            return 0;
        return dsd_errf(err, -errno, "%s: %s", path, strerror(errno));
    }
    snprintf(c->config_path, sizeof c->config_path, "%s", path);
    char line[8192];
    int ln = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, fp)) {
        ln++;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
            s[--n] = 0;
        if (!*s || *s == '#')
            continue;
        char where[OA_PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%d", path, ln);
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = dsd_errf(err, -EINVAL, "%s: want `key = value`", where);
            break;
        }
        char *ke = eq;
        while (ke > s && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        *ke = 0;
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = 0;
            v++;
        }
        const struct key *k = find(s);
        if (!k)
            rc = dsd_errf(err, -EINVAL, "%s: unknown key '%s' (deepseekd-openai --help lists them)", where, s);
        else
            rc = set(c, k, v, where, err);
    }
    fclose(fp);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: deepseekd-openai [--config FILE] [--KEY VALUE]...\n"
                 "Serves the OpenAI HTTP API (/v1/chat/completions, /v1/completions, /v1/models)\n"
                 "in front of deepseekd (docs/OPENAI.md). Keys, as flags or in the file\n"
                 "(default %s, read when it exists):\n", OA_DEFAULT_CONFIG);
    for (size_t k = 0; k < N_KEYS; k++)
        fprintf(out, "  --%-18s %s (default \"%s\")\n", keys[k].name, keys[k].help, keys[k].def);
    fprintf(out, "  --config FILE        the configuration file\n"
                 "  --help, --version\n");
}

int oa_config_load(int argc, char **argv, struct oa_config *c, struct dsd_err *err)
{
    memset(c, 0, sizeof *c);
    for (size_t k = 0; k < N_KEYS; k++)
        if (set(c, &keys[k], keys[k].def, "default", err))
            return -EINVAL;
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return OA_CONFIG_HANDLED;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("deepseekd-openai %s\n", OA_VERSION);
            return OA_CONFIG_HANDLED;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i] + 9;
    }
    int rc = read_file(c, config ? config : OA_DEFAULT_CONFIG, config != NULL, err);
    if (rc)
        return rc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return dsd_errf(err, -EINVAL, "unexpected argument '%s' (see --help)", a);
        char name[64];
        const char *v = strchr(a, '=');
        size_t nl = v ? (size_t)(v - a - 2) : strlen(a + 2);
        if (nl >= sizeof name)
            return dsd_errf(err, -EINVAL, "unknown option '%s' (see --help)", a);
        memcpy(name, a + 2, nl);
        name[nl] = 0;
        if (v) {
            v++;
        } else {
            if (i + 1 >= argc)
                return dsd_errf(err, -EINVAL, "%s needs a value", a);
            v = argv[++i];
        }
        if (strcmp(name, "config") == 0)
            continue;
        const struct key *k = find(name);
        if (!k)
            return dsd_errf(err, -EINVAL, "unknown option '--%s' (see --help)", name);
        char where[80];
        snprintf(where, sizeof where, "--%s", name);
        if ((rc = set(c, k, v, where, err)))
            return rc;
    }
    return 0;
}
