#include "chat_json.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 2048

int dsd_chat_json_dump_string(struct dsd_chat_buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (dsd_chat_buf_put(out, "\"", 1) < 0)
        return -ENOMEM;
    size_t run = 0; /* start of the current run of bytes that need no escape */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t n = 2;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            if (c >= 0x20)
                continue;
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        if (dsd_chat_buf_put(out, s + run, i - run) < 0 || dsd_chat_buf_put(out, esc, n) < 0)
            return -ENOMEM;
        run = i + 1;
    }
    if (dsd_chat_buf_put(out, s + run, len - run) < 0 || dsd_chat_buf_put(out, "\"", 1) < 0)
        return -ENOMEM;
    return 0;
}

/* Parses "%.*e" output ("d.dddde+XX") into its digit string and decimal exponent. */
static void split_exp_form(const char *txt, char *digits, int *ndigits, int *exp10)
{
    int n = 0;
    const char *p = txt;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[n++] = *p;
    *exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    digits[n] = 0;
    *ndigits = n;
}

/* Does the p-digit decimal m * 10^(e10 - p + 1) read back as x? */
static int round_trips(uint64_t m, int p, int e10, double x)
{
    char txt[48];
    snprintf(txt, sizeof txt, "%llue%d", (unsigned long long)m, e10 - p + 1);
    return strtod(txt, NULL) == x;
}

/*
 * Shortest round-tripping digits of x > 0 (finite), as Python's repr picks them: the fewest
 * significant digits that read back as x and, among those, the nearest. For each length p the
 * two candidates are the nearest p-digit decimal (printf's correctly rounded %.e) and its
 * neighbour on the other side of x; the neighbour only wins next to a power of two, where the
 * rounding interval of x is lopsided.
 */
static void shortest_digits(double x, char *digits, int *ndigits, int *decpt)
{
    char txt[48];
    for (int p = 1; p <= 17; p++) {
        snprintf(txt, sizeof txt, "%.*e", p - 1, x);
        char d[24];
        int nd, e10;
        split_exp_form(txt, d, &nd, &e10);
        if (strtod(txt, NULL) == x) {
            memcpy(digits, d, (size_t)nd + 1);
            *ndigits = nd;
            *decpt = e10 + 1;
            return;
        }
        uint64_t m = 0;
        for (const char *q = txt; *q && *q != 'e'; q++)
            if (*q >= '0' && *q <= '9')
                m = m * 10 + (uint64_t)(*q - '0');
        uint64_t pow_p1 = 1; /* 10^(p-1) */
        for (int i = 1; i < p; i++)
            pow_p1 *= 10;
        uint64_t nm = m;
        int ne = e10;
        if (strtod(txt, NULL) > x) {
            if (m == pow_p1) { /* 1.000eE steps down to 9.999e(E-1) */
                nm = pow_p1 * 10 - 1;
                ne = e10 - 1;
            } else {
                nm = m - 1;
            }
        } else {
            nm = m + 1;
            if (nm == pow_p1 * 10) { /* 9.999eE steps up to 1.000e(E+1) */
                nm = pow_p1;
                ne = e10 + 1;
            }
        }
        if (round_trips(nm, p, ne, x)) {
            snprintf(txt, sizeof txt, "%llu", (unsigned long long)nm);
            int n = (int)strlen(txt);
            while (n > 1 && txt[n - 1] == '0')
                n--;
            memcpy(digits, txt, (size_t)n);
            digits[n] = 0;
            *ndigits = n;
            *decpt = ne + 1;
            return;
        }
    }
    /* %.17e always round-trips, so the loop returns; keep the compiler and readers calm. */
    snprintf(txt, sizeof txt, "%.16e", x);
    int e10;
    split_exp_form(txt, digits, ndigits, &e10);
    *decpt = e10 + 1;
}

int dsd_chat_json_format_real(double x, char out[32])
{
    if (isnan(x))
        return snprintf(out, 32, "NaN");
    if (isinf(x))
        return snprintf(out, 32, x < 0 ? "-Infinity" : "Infinity");
    int n = 0;
    if (signbit(x)) {
        out[n++] = '-';
        x = -x;
    }
    if (x == 0) {
        memcpy(out + n, "0.0", 4);
        return n + 3;
    }
    char digits[24];
    int nd, decpt;
    shortest_digits(x, digits, &nd, &decpt);
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[n++] = '0';
            out[n++] = '.';
            for (int i = 0; i < -decpt; i++)
                out[n++] = '0';
            memcpy(out + n, digits, (size_t)nd);
            n += nd;
        } else if (decpt < nd) {
            memcpy(out + n, digits, (size_t)decpt);
            n += decpt;
            out[n++] = '.';
            memcpy(out + n, digits + decpt, (size_t)(nd - decpt));
            n += nd - decpt;
        } else {
            memcpy(out + n, digits, (size_t)nd);
            n += nd;
            for (int i = nd; i < decpt; i++)
                out[n++] = '0';
            out[n++] = '.';
            out[n++] = '0';
        }
    } else {
        out[n++] = digits[0];
        if (nd > 1) {
            out[n++] = '.';
            memcpy(out + n, digits + 1, (size_t)(nd - 1));
            n += nd - 1;
        }
        int e = decpt - 1;
        n += snprintf(out + n, (size_t)(32 - n), "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    out[n] = 0;
    return n;
}

static int dump(struct dsd_chat_buf *out, const json_t *v, int depth, struct dsd_err *err)
{
    if (depth > MAX_DEPTH)
        return dsd_errf(err, -EINVAL, "JSON value nested deeper than %d levels", MAX_DEPTH);
    char num[32];
    switch (json_typeof(v)) {
    case JSON_NULL:
        return dsd_chat_buf_puts(out, "null") < 0 ? dsd_errf(err, -ENOMEM, "out of memory") : 0;
    case JSON_TRUE:
        return dsd_chat_buf_puts(out, "true") < 0 ? dsd_errf(err, -ENOMEM, "out of memory") : 0;
    case JSON_FALSE:
        return dsd_chat_buf_puts(out, "false") < 0 ? dsd_errf(err, -ENOMEM, "out of memory") : 0;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return dsd_chat_buf_puts(out, num) < 0 ? dsd_errf(err, -ENOMEM, "out of memory") : 0;
    case JSON_REAL:
        dsd_chat_json_format_real(json_real_value(v), num);
        return dsd_chat_buf_puts(out, num) < 0 ? dsd_errf(err, -ENOMEM, "out of memory") : 0;
    case JSON_STRING:
        if (dsd_chat_json_dump_string(out, json_string_value(v), json_string_length(v)) < 0)
            return dsd_errf(err, -ENOMEM, "out of memory");
        return 0;
    case JSON_ARRAY: {
        if (dsd_chat_buf_put(out, "[", 1) < 0)
            return dsd_errf(err, -ENOMEM, "out of memory");
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            if (i && dsd_chat_buf_put(out, ", ", 2) < 0)
                return dsd_errf(err, -ENOMEM, "out of memory");
            int rc = dump(out, item, depth + 1, err);
            if (rc < 0)
                return rc;
        }
        return dsd_chat_buf_put(out, "]", 1) < 0 ? dsd_errf(err, -ENOMEM, "out of memory") : 0;
    }
    case JSON_OBJECT: {
        if (dsd_chat_buf_put(out, "{", 1) < 0)
            return dsd_errf(err, -ENOMEM, "out of memory");
        const char *key;
        size_t key_len;
        json_t *item;
        int first = 1;
        /* json_object_keylen_foreach casts away const internally; the object is not changed. */
        json_t *obj = (json_t *)v;
        json_object_keylen_foreach(obj, key, key_len, item) {
            if (!first && dsd_chat_buf_put(out, ", ", 2) < 0)
                return dsd_errf(err, -ENOMEM, "out of memory");
            first = 0;
            if (dsd_chat_json_dump_string(out, key, key_len) < 0 ||
                dsd_chat_buf_put(out, ": ", 2) < 0)
                return dsd_errf(err, -ENOMEM, "out of memory");
            int rc = dump(out, item, depth + 1, err);
            if (rc < 0)
                return rc;
        }
        return dsd_chat_buf_put(out, "}", 1) < 0 ? dsd_errf(err, -ENOMEM, "out of memory") : 0;
    }
    }
    return dsd_errf(err, -EINVAL, "JSON value of unknown type %d", (int)json_typeof(v));
}

int dsd_chat_json_dump(struct dsd_chat_buf *out, const json_t *v, struct dsd_err *err)
{
    if (!v)
        return dsd_errf(err, -EINVAL, "no JSON value");
    return dump(out, v, 0, err);
}
