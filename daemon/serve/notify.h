/*
 * daemon/serve/notify.h: what deepseekd tells systemd, and the socket systemd hands it.
 *
 * The life of the daemon as systemd sees it (deepseekd.service is Type=notify):
 *
 *   int fd;
 *   if (dsd_listen_socket(&fd, &err) < 0) fail(err);     // 1: socket-activated, fd >= 3
 *                                                        // 0: none, bind cfg.socket yourself
 *   dsd_notify_progress(37, 30 * 1000000ull, "loading weights: shard %d/%d", 61, 163);
 *   ...warm-up step...
 *   dsd_notify_ready("serving %s on %s", model_name, path);     // READY=1 + STATUS=
 *   uint64_t wd = dsd_notify_watchdog_usec();            // 0: no WatchdogSec=
 *   engine loop: after a step completes (or while idle), at least every wd/2:
 *       dsd_notify_watchdog();                           // WATCHDOG=1
 *   SIGHUP: dsd_notify_reloading(); reload config; dsd_notify_ready("serving ...");
 *   SIGTERM: dsd_notify_stopping("draining %d requests", n); ...drain...; exit
 *
 * Outside systemd ($NOTIFY_SOCKET unset) every dsd_notify_* call does nothing and returns 0,
 * and dsd_listen_socket() reports no socket, so the daemon runs the same by hand.
 *
 * Return values of dsd_notify_*: 1 sent, 0 not running under a service manager, or a
 * negative errno when sending failed (the daemon may log it and carry on: systemd acts on
 * what it missed through its own timeouts). Thread-safe: each call is one datagram.
 * Messages are single-line: newlines in STATUS= text become spaces.
 */
#ifndef DSD_SERVE_NOTIFY_H
#define DSD_SERVE_NOTIFY_H

#include <stdint.h>

#include "err.h"

/* STATUS=<text>: one line shown by `systemctl status`. */
int dsd_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Start-up progress: STATUS=<text> (<percent>%) and EXTEND_TIMEOUT_USEC=<extend_usec>, which
 * pushes systemd's start timeout to at least extend_usec from now (send again before it
 * runs out; 0 sends no extension). percent is clamped to 0..100. */
int dsd_notify_progress(unsigned percent, uint64_t extend_usec, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* READY=1: start-up (or a reload) finished; fmt, if not NULL, also sets STATUS=. */
int dsd_notify_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* RELOADING=1 with MONOTONIC_USEC=<now> (systemd >= 253 needs it for Type=notify-reload,
 * older ones ignore it) and STATUS=reloading configuration. Follow with dsd_notify_ready(). */
int dsd_notify_reloading(void);

/* STOPPING=1: shutdown began; fmt, if not NULL, also sets STATUS=. */
int dsd_notify_stopping(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1: the engine made progress. Send only when a step completed or there is no
 * work, so a wedged engine stops the pings and systemd restarts the unit. */
int dsd_notify_watchdog(void);

/* The watchdog timeout systemd expects pings within (WatchdogSec=), in microseconds, or 0
 * when no watchdog is set up for this process. Ping at half of it. */
uint64_t dsd_notify_watchdog_usec(void);

/* The listening socket systemd passed (socket activation through deepseekd.socket).
 * Returns 1 with *fd set (a listening AF_UNIX SOCK_STREAM socket, close-on-exec), 0 with
 * *fd = -1 when none was passed, or -EINVAL when systemd passed more than one fd or one that
 * is not a listening Unix stream socket (err says which and what to fix in the unit).
 * Reads and then removes $LISTEN_FDS/$LISTEN_PID/$LISTEN_FDNAMES: call it once. */
int dsd_listen_socket(int *fd, struct dsd_err *err);

#endif
