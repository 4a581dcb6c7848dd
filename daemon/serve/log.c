/*
 * daemon/serve/log.c: "<N>message\n" lines on stderr, one write(2) each.
 *
 * Why not sd_journal_send(): journald already parses stderr's priority prefixes, stderr
 * works the same outside systemd, and one write per line is all the thread safety needed.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int log_level = LOG_INFO;

static int clamp_level(int level)
{
    if (level < LOG_ERR)
        return LOG_ERR;
    if (level > LOG_DEBUG)
        return LOG_DEBUG;
    return level;
}

void dsd_log_set_level(int level)
{
    atomic_store_explicit(&log_level, clamp_level(level), memory_order_relaxed);
}

int dsd_log_get_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

bool dsd_log_enabled(int level)
{
    return level <= dsd_log_get_level();
}

/* Copies msg into out as printable text: control bytes become \n, \r, \t or \xNN. Returns
 * the length written; stops (and ends with "...") when out would overflow. */
static size_t escape_into(char *out, size_t cap, const char *msg)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        char tmp[4];
        size_t n = 1;
        tmp[0] = (char)*p;
        if (*p < 0x20 || *p == 0x7f) {
            tmp[0] = '\\';
            n = 2;
            if (*p == '\n')
                tmp[1] = 'n';
            else if (*p == '\r')
                tmp[1] = 'r';
            else if (*p == '\t')
                tmp[1] = 't';
            else {
                tmp[1] = 'x';
                tmp[2] = hex[*p >> 4];
                tmp[3] = hex[*p & 15];
                n = 4;
            }
        }
        if (o + n + 3 > cap) {      /* room for "..." */
            memcpy(out + o, "...", 3);
            return o + 3;
        }
        memcpy(out + o, tmp, n);
        o += n;
    }
    return o;
}

static void log_line(int level, const char *msg)
{
    char line[DSD_LOG_LINE_MAX];
    int p = snprintf(line, sizeof line, "<%d>", level < 0 ? 0 : level > 7 ? 7 : level);
    size_t n = (size_t)p + escape_into(line + p, sizeof line - (size_t)p - 1, msg);
    line[n++] = '\n';
    /* One write keeps lines whole; a pipe or a journald stream takes it at once, a partial
     * write (a full disk, a signal) finishes the same line. */
    for (size_t off = 0; off < n;) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

void dsd_log(int level, const char *fmt, ...)
{
    if (!dsd_log_enabled(level))
        return;
    int saved = errno;
    char msg[DSD_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_line(level, msg);
    errno = saved;
}

void dsd_log_err(int level, const struct dsd_err *err, const char *fmt, ...)
{
    if (!dsd_log_enabled(level))
        return;
    int saved = errno;
    char msg[DSD_LOG_LINE_MAX];
    size_t n = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        int r = vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        n = r < 0 ? 0 : (size_t)r < sizeof msg ? (size_t)r : sizeof msg - 1;
    }
    msg[n] = 0;
    if (err && err->msg[0])
        snprintf(msg + n, sizeof msg - n, "%s%.*s", n ? ": " : "", (int)sizeof err->msg,
                 err->msg);
    log_line(level, msg);
    errno = saved;
}
