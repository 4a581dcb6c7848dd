/*
 * `deepseekd-probe stats --prometheus`: the daemon's stats (docs/OPERATIONS.md) in the
 * Prometheus text exposition format, version 0.0.4:
 *  - every name gets the prefix deepseekd_;
 *  - NAME_total is a counter, other numbers and booleans are gauges, strings are left out;
 *  - kv_cache_TIER_REST (TIER device, host or disk) becomes kv_cache_REST{tier="TIER"}, one
 *    family per REST;
 *  - NAME_ms_le_BOUND ... NAME_ms_le_inf, NAME_ms_sum, NAME_ms_count (a latency histogram in
 *    ms) becomes the histogram NAME_seconds: NAME_seconds_bucket{le="..."} in seconds,
 *    le="+Inf" last, NAME_seconds_sum and NAME_seconds_count;
 *  - each family is printed whole, with its # TYPE line first, in the order of its first
 *    stat.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe.h"

#define PROM_MAX 512

struct family {
    char name[96];
    const char *type;           /* counter, gauge, histogram */
};

/* Copies the [a-zA-Z0-9_] characters of s (others as '_') into out (size n). */
static void sanitize(const char *s, size_t len, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < len && s[i] && o + 1 < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        out[o++] = ok ? c : '_';
    }
    out[o] = 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool number_of(const struct dsd_client_value *v, double *out)
{
    switch (v->type) {
    case DSD_CLIENT_VALUE_INT: *out = (double)v->i; return true;
    case DSD_CLIENT_VALUE_FLOAT: *out = v->f; return true;
    case DSD_CLIENT_VALUE_BOOL: *out = v->b ? 1 : 0; return true;
    default: return false;
    }
}

/* One sample: its family, its label text ("" or {..}) and its value. */
struct sample {
    int family;
    char labels[64];
    char suffix[16];            /* _bucket, _sum, _count for histograms */
    double value;
};

static int family_of(struct family *f, int *nf, const char *name, const char *type)
{
    for (int i = 0; i < *nf; i++)
        if (strcmp(f[i].name, name) == 0)
            return i;
    if (*nf >= PROM_MAX)
        return -1;
    snprintf(f[*nf].name, sizeof f[*nf].name, "%s", name);
    f[*nf].type = type;
    return (*nf)++;
}

static void print_number(FILE *out, double v)
{
    if (isnan(v))
        fputs("NaN", out);
    else if (isinf(v))
        fputs(v > 0 ? "+Inf" : "-Inf", out);
    else if (v == floor(v) && fabs(v) < 9e15)
        fprintf(out, "%.0f", v);
    else
        fprintf(out, "%.17g", v);
}

int probe_prometheus(FILE *out, const struct dsd_client_value *v, uint32_t n)
{
    static struct family fam[PROM_MAX];
    static struct sample smp[PROM_MAX];
    int nf = 0, ns = 0;
    for (uint32_t i = 0; i < n && ns < PROM_MAX; i++) {
        double x;
        if (!v[i].name || !number_of(&v[i], &x))
            continue;
        char name[96], base[96];
        sanitize(v[i].name, strlen(v[i].name), name, sizeof name);
        struct sample *s = &smp[ns];
        memset(s, 0, sizeof *s);
        s->value = x;
        const char *le = strstr(name, "_ms_le_");
        const char *orig_le = strstr(v[i].name, "_ms_le_");
        int fi;
        if (le && orig_le) {
            /* a histogram bucket: the bound is in the original name (it may hold a '.') */
            snprintf(base, sizeof base, "deepseekd_%.*s_seconds", (int)(le - name), name);
            const char *b = orig_le + 7;
            if (strcmp(b, "inf") == 0) {
                snprintf(s->labels, sizeof s->labels, "{le=\"+Inf\"}");
            } else {
                char *end;
                double ms = strtod(b, &end);
                if (*end || !(ms >= 0))
                    continue;
                snprintf(s->labels, sizeof s->labels, "{le=\"%g\"}", ms / 1000.0);
            }
            snprintf(s->suffix, sizeof s->suffix, "_bucket");
            fi = family_of(fam, &nf, base, "histogram");
        } else if (ends_with(name, "_ms_sum") || ends_with(name, "_ms_count")) {
            bool sum = ends_with(name, "_ms_sum");
            size_t stem = strlen(name) - (sum ? 7 : 9);
            snprintf(base, sizeof base, "deepseekd_%.*s_seconds", (int)stem, name);
            /* only with buckets before it: else a plain gauge */
            int k = -1;
            for (int j = 0; j < nf; j++)
                if (strcmp(fam[j].name, base) == 0)
                    k = j;
            if (k < 0) {
                snprintf(base, sizeof base, "deepseekd_%s", name);
                fi = family_of(fam, &nf, base, "gauge");
            } else {
                fi = k;
                snprintf(s->suffix, sizeof s->suffix, sum ? "_sum" : "_count");
                if (sum)
                    s->value = x / 1000.0;
            }
        } else {
            const char *tiers[] = { "device", "host", "disk" };
            const char *rest = NULL, *tier = NULL;
            for (int t = 0; t < 3 && !rest; t++) {
                char pre[32];
                snprintf(pre, sizeof pre, "kv_cache_%s_", tiers[t]);
                if (strncmp(name, pre, strlen(pre)) == 0 && name[strlen(pre)]) {
                    rest = name + strlen(pre);
                    tier = tiers[t];
                }
            }
            if (rest) {
                snprintf(base, sizeof base, "deepseekd_kv_cache_%s", rest);
                snprintf(s->labels, sizeof s->labels, "{tier=\"%s\"}", tier);
            } else {
                snprintf(base, sizeof base, "deepseekd_%s", name);
            }
            fi = family_of(fam, &nf, base, ends_with(name, "_total") ? "counter" : "gauge");
        }
        if (fi < 0)
            break;
        s->family = fi;
        ns++;
    }
    for (int f = 0; f < nf; f++) {
        fprintf(out, "# TYPE %s %s\n", fam[f].name, fam[f].type);
        /* histograms: buckets in order, then sum, then count */
        for (int pass = 0; pass < 3; pass++) {
            for (int i = 0; i < ns; i++) {
                const struct sample *s = &smp[i];
                if (s->family != f)
                    continue;
                int kind = strcmp(s->suffix, "_sum") == 0 ? 1 : strcmp(s->suffix, "_count") == 0 ? 2 : 0;
                if (kind != pass)
                    continue;
                fprintf(out, "%s%s%s ", fam[f].name, s->suffix, s->labels);
                print_number(out, s->value);
                fputc('\n', out);
            }
        }
    }
    return ferror(out) ? -1 : 0;
}
