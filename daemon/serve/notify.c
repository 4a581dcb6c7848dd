/*
 * daemon/serve/notify.c: the sd_notify protocol and socket activation through libsystemd.
 *
 * libsystemd does the protocol (the $NOTIFY_SOCKET datagram with our credentials, abstract
 * socket names, $LISTEN_PID checks); this file only decides what to say and keeps every
 * message to one line.
 */
#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#define NOTIFY_MAX 1024

/* Appends "STATUS=<fmt...>" to buf (at o) with newlines flattened. Returns the new length. */
static size_t append_status(char *buf, size_t o, const char *fmt, va_list ap)
{
    if (o >= NOTIFY_MAX - 8)
        return o;
    o += (size_t)snprintf(buf + o, NOTIFY_MAX - o, "STATUS=");
    size_t start = o;
    int n = vsnprintf(buf + o, NOTIFY_MAX - o, fmt, ap);
    if (n > 0)
        o += (size_t)n < NOTIFY_MAX - o ? (size_t)n : NOTIFY_MAX - o - 1;
    for (size_t i = start; i < o; i++)
        if (buf[i] == '\n' || buf[i] == '\r')
            buf[i] = ' ';
    return o;
}

static int send_message(const char *msg)
{
    int r = sd_notify(0, msg);
    return r < 0 ? r : r > 0 ? 1 : 0;
}

int dsd_notify_status(const char *fmt, ...)
{
    char buf[NOTIFY_MAX];
    va_list ap;
    va_start(ap, fmt);
    append_status(buf, 0, fmt, ap);
    va_end(ap);
    return send_message(buf);
}

int dsd_notify_progress(unsigned percent, uint64_t extend_usec, const char *fmt, ...)
{
    char buf[NOTIFY_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t o = append_status(buf, 0, fmt, ap);
    va_end(ap);
    o += (size_t)snprintf(buf + o, sizeof buf - o, " (%u%%)", percent > 100 ? 100 : percent);
    if (extend_usec && o < sizeof buf)
        snprintf(buf + o, sizeof buf - o, "\nEXTEND_TIMEOUT_USEC=%llu",
                 (unsigned long long)extend_usec);
    return send_message(buf);
}

/* A state line, then STATUS= from fmt when there is one. */
static int send_state(const char *state, const char *fmt, va_list ap)
{
    char buf[NOTIFY_MAX];
    size_t o = (size_t)snprintf(buf, sizeof buf, "%s", state);
    if (fmt) {
        buf[o++] = '\n';
        append_status(buf, o, fmt, ap);
    }
    return send_message(buf);
}

int dsd_notify_ready(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_state("READY=1", fmt, ap);
    va_end(ap);
    return rc;
}

int dsd_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec = (unsigned long long)ts.tv_sec * 1000000ull +
                              (unsigned long long)ts.tv_nsec / 1000ull;
    char buf[NOTIFY_MAX];
    snprintf(buf, sizeof buf, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading configuration",
             usec);
    return send_message(buf);
}

int dsd_notify_stopping(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_state("STOPPING=1", fmt, ap);
    va_end(ap);
    return rc;
}

int dsd_notify_watchdog(void)
{
    return send_message("WATCHDOG=1");
}

uint64_t dsd_notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

int dsd_listen_socket(int *fd, struct dsd_err *err)
{
    *fd = -1;
    int n = sd_listen_fds(1);
    if (n < 0)
        return dsd_errf(err, n, "reading the sockets passed by systemd ($LISTEN_FDS): %s",
                        strerror(-n));
    if (n == 0)
        return 0;
    if (n > 1)
        return dsd_errf(err, -EINVAL,
                        "systemd passed %d file descriptors; deepseekd takes exactly one "
                        "listening socket: keep one ListenStream= in deepseekd.socket", n);
    int r = sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0);
    if (r < 0)
        return dsd_errf(err, r, "checking the socket passed by systemd (fd %d): %s",
                        SD_LISTEN_FDS_START, strerror(-r));
    if (r == 0)
        return dsd_errf(err, -EINVAL,
                        "the file descriptor passed by systemd (fd %d) is not a listening "
                        "Unix stream socket: deepseekd.socket needs ListenStream=/path",
                        SD_LISTEN_FDS_START);
    *fd = SD_LISTEN_FDS_START;
    return 1;
}
