/*
 * tools/probe/probe.h: deepseekd-probe, the command-line client of deepseekd and the first
 * user of libdeepseekd. The argument parser and the JSON <-> msgpack conversion are separate
 * from the commands so tests/client/test_probe.c can check them without a daemon.
 *
 * Exit codes (sysexits.h, documented in deepseekd-probe(1)):
 *   0 ok, 1 the request failed, 64 usage, 69 daemon unavailable, 75 temporary failure
 *   (loading, draining, overloaded, timed out), 76 protocol error, 77 permission denied.
 */
#ifndef DSD_PROBE_H
#define DSD_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <msgpack.h>

#include "deepseekd.h"

#define PROBE_EX_OK 0
#define PROBE_EX_FAIL 1
#define PROBE_EX_USAGE 64
#define PROBE_EX_UNAVAILABLE 69
#define PROBE_EX_TEMPFAIL 75
#define PROBE_EX_PROTOCOL 76
#define PROBE_EX_NOPERM 77

enum probe_cmd {
    PROBE_NONE = 0,
    PROBE_PING,
    PROBE_INFO,
    PROBE_STATS,
    PROBE_HEALTH,
    PROBE_GENERATE,
    PROBE_CHAT,
    PROBE_TOKENIZE,
    PROBE_BENCH,
    PROBE_RAW,
};

#define PROBE_MAX_PROMPT_TOKENS (1u << 24)

struct probe_args {
    const char *socket;             /* NULL: the library's default ($DEEPSEEKD_SOCKET) */
    int32_t timeout_ms;             /* -1: the command's default */
    bool json;
    bool prometheus;                /* stats --prometheus */
    bool help;                      /* --help given: print help for cmd (or the tool) */
    enum probe_cmd cmd;

    /* generate, chat, bench */
    struct dsd_client_generate_params gp;
    uint32_t *prompt_tokens;        /* owned (probe_args_free) */
    uint32_t n_prompt_tokens;
    const char *prompt;
    const char *message, *system, *tools_json;
    const char *stops[16];
    uint32_t n_stops;
    uint32_t stop_ids[64];
    uint32_t n_stop_ids;
    bool no_shm;

    /* ping */
    uint32_t count;

    /* tokenize */
    const char *text;
    bool no_special;

    /* bench */
    uint32_t concurrency, requests, prompt_len;
    uint32_t prompt_len_max;        /* bench: prompt lengths uniform in [prompt_len, this] */
    uint32_t shared_prefix, prefix_groups;  /* bench: request k starts with prefix k % groups */

    /* raw */
    const char *raw_json;
    bool no_hello;
};

/*
 * Parses argv into *a (argv strings are referenced, not copied). Returns 0 (a->help set when
 * --help was asked), or -1 with a message in err naming the bad argument (exit 64).
 */
int probe_parse(int argc, char **argv, struct probe_args *a, char *err, size_t err_len);
void probe_args_free(struct probe_args *a);
/* The help text of a command (PROBE_NONE: the tool's). */
const char *probe_help(enum probe_cmd cmd);
const char *probe_cmd_name(enum probe_cmd cmd);

/* Parses "1,2, 3 4" (commas and/or spaces). Returns the count (>= 1) or -1 (err set). The
 * array is malloc'd. */
int probe_parse_ids(const char *s, uint32_t **ret, char *err, size_t err_len);

/* The exit code for a negative errno from libdeepseekd. */
int probe_exit_for(int err);

/* JSON -> msgpack (into out, appended): objects become maps, arrays arrays, integers
 * uint (>= 0) or int, reals float64, strings str, true/false/null. Returns 0 or -1 (err). */
int probe_json_to_msgpack(const json_t *j, msgpack_sbuffer *out, char *err, size_t err_len);
/* One msgpack object spanning body[0..len) -> JSON (bounded by ipc/'s pre-scan first).
 * Non-string map keys become their JSON text, bin becomes {"$bin": "hex"}, ext
 * {"$ext": type, "hex": "..."}, NaN and infinities the strings "nan", "inf", "-inf".
 * Returns a new reference or NULL (err). */
/* Writes stats values as the Prometheus text format (probe_prom.c says how names map).
 * Returns 0 or -1 (a write failed). */
int probe_prometheus(FILE *out, const struct dsd_client_value *v, uint32_t n);

json_t *probe_msgpack_to_json(const uint8_t *body, size_t len, char *err, size_t err_len);

/* Commands (probe_cmds.c, probe_bench.c, probe_raw.c); each returns an exit code. */
int probe_run(struct probe_args *a);
int probe_bench(struct dsd_client *c, struct probe_args *a);
int probe_raw(struct probe_args *a);

#endif
