/*
 * daemon/serve/log.h: the daemon's log, one line per message on stderr.
 *
 *   dsd_log_set_level(cfg.log_level);                  // at start and on reload
 *   dsd_log(LOG_INFO, "listening on %s", path);        // -> "<6>listening on /run/...\n"
 *   if (dsd_model_load(dir, &mp, &m, &err) < 0)
 *       dsd_log_err(LOG_ERR, &err, "loading %s", dir); // -> "<3>loading DIR: <err.msg>\n"
 *
 * Each line starts with the syslog priority in angle brackets (<3> = LOG_ERR ... <7> =
 * LOG_DEBUG, as sd-daemon.h's SD_ERR..SD_DEBUG). journald reads stderr of a service, strips
 * the prefix and files the line under that priority, so `journalctl -p warning -u deepseekd`
 * works without the journal's native protocol. Run by hand, the prefix is plainly visible.
 *
 * Safe from any thread: a line is formatted into a buffer and written with one write(2), so
 * lines of different threads never interleave. Control characters in the message (a newline
 * in a client's string, say) are written as \n, \t, \xNN, so one call is always exactly one
 * line and nobody can forge log lines. Lines longer than DSD_LOG_LINE_MAX bytes are cut and
 * end with "...". errno is preserved.
 */
#ifndef DSD_SERVE_LOG_H
#define DSD_SERVE_LOG_H

#include <stdbool.h>
#include <syslog.h>

#include "err.h"

#define DSD_LOG_LINE_MAX 4096

/* Messages less important than level (a larger number) are dropped. Levels outside
 * LOG_ERR..LOG_DEBUG are clamped into it (errors are always logged). Atomic: a reload may
 * change it while other threads log. The initial level is LOG_INFO. */
void dsd_log_set_level(int level);
int dsd_log_get_level(void);
/* True when a message at level would be written (to skip building expensive messages). */
bool dsd_log_enabled(int level);

/* Writes one line "<level>message\n" to stderr when level passes the filter. level is
 * LOG_EMERG..LOG_DEBUG from syslog.h. */
void dsd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs err->msg with context: "<level>CONTEXT: err->msg"; fmt may be NULL (just the
 * message). A NULL or empty err logs the context alone. */
void dsd_log_err(int level, const struct dsd_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
