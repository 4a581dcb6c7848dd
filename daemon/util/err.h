/*
 * daemon/util/err.h: how deepseekd reports errors.
 *
 * Request paths and loaders return a negative errno (or 0 / a count on success) and
 * describe the failure in a caller-owned struct dsd_err, so the caller decides what to do
 * and what to print:
 *
 *   struct dsd_err err = {0};
 *   if (dsd_model_config_load(path, &cfg, &err) < 0)
 *       fprintf(stderr, "deepseekd: %s\n", err.msg);
 *
 * dsd_errf() formats the message and returns the code, so failures are one line:
 *   return dsd_errf(err, -EINVAL, "%s: field \"%s\" is missing", path, key);
 * A NULL err is allowed (the message is dropped).
 *
 * DSD_CHECK() is only for start-up invariants and internal bugs: it prints file:line and
 * aborts. Never use it on anything a client, a config file or a model file controls.
 */
#ifndef DSD_UTIL_ERR_H
#define DSD_UTIL_ERR_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSD_ERR_MSG_MAX 512

struct dsd_err {
    char msg[DSD_ERR_MSG_MAX];
};

/* Formats into err->msg (truncating) and returns code unchanged. */
int dsd_errf(struct dsd_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err->msg with "prefix: " (for adding context on the way up); returns code. */
int dsd_err_prefix(struct dsd_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define DSD_CHECK(cond)                                                                 \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "<2>deepseekd: %s:%d: internal check failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                                   \
            abort();                                                                    \
        }                                                                               \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
