/*
 * deepseekd-text tokenize --tokenizer FILE [--jsonl] [--special]
 *   One input per line (with --jsonl each line is a JSON string, so inputs may hold
 *   newlines); prints the ids of each, space-separated, one line each, no BOS added.
 *   --special: special-token strings in the input become their tokens (default: text).
 * deepseekd-text detokenize --tokenizer FILE [--skip-special]
 *   One line of space-separated ids per input line; prints each text as a JSON string.
 * Exit status 0, 1 for bad input (message names the line), 2 for bad usage.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "tokenizer.h"

#define EXIT_BAD_INPUT 1
#define EXIT_USAGE 2

struct text_opts {
    const char *tokenizer;
    bool jsonl, special, skip_special;
};

static int parse_opts(const char *name, int argc, char **argv, bool tokenize, struct text_opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            o->tokenizer = argv[++i];
        else if (tokenize && !strcmp(argv[i], "--jsonl"))
            o->jsonl = true;
        else if (tokenize && !strcmp(argv[i], "--special"))
            o->special = true;
        else if (!tokenize && !strcmp(argv[i], "--skip-special"))
            o->skip_special = true;
        else {
            fprintf(stderr, "deepseekd-text %s: unknown or incomplete option '%s'\n", name, argv[i]);
            return EXIT_USAGE;
        }
    }
    if (!o->tokenizer) {
        fprintf(stderr, "deepseekd-text %s: --tokenizer FILE is required\n", name);
        return EXIT_USAGE;
    }
    return 0;
}

static struct dsd_tokenizer *load(const char *name, const char *path)
{
    struct dsd_tokenizer *tok;
    struct dsd_err err;
    if (dsd_tokenizer_load(&tok, path, &err) < 0) {
        fprintf(stderr, "deepseekd-text %s: %s\n", name, err.msg);
        return NULL;
    }
    return tok;
}

int cmd_tokenize(const struct subcommand *cmd, int argc, char **argv)
{
    (void)cmd;
    struct text_opts o;
    int rc = parse_opts("tokenize", argc, argv, true, &o);
    if (rc)
        return rc;
    struct dsd_tokenizer *tok = load("tokenize", o.tokenizer);
    if (!tok)
        return EXIT_BAD_INPUT;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    struct dsd_tok_ids ids = {0};
    struct dsd_err err;
    rc = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n')
            n--;
        const char *text = line;
        size_t len = (size_t)n;
        json_t *js = NULL;
        if (o.jsonl) {
            json_error_t je;
            js = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!js || !json_is_string(js)) {
                fprintf(stderr, "deepseekd-text tokenize: line %ld is not a JSON string%s%s\n", lineno,
                        js ? "" : ": ", js ? "" : je.text);
                json_decref(js);
                rc = EXIT_BAD_INPUT;
                break;
            }
            text = json_string_value(js);
            len = json_string_length(js);
        }
        ids.len = 0;
        if (dsd_tokenizer_encode(tok, text, len, o.special ? DSD_TOK_PARSE_SPECIAL : 0, &ids, &err) < 0) {
            fprintf(stderr, "deepseekd-text tokenize: line %ld: %s\n", lineno, err.msg);
            json_decref(js);
            rc = EXIT_BAD_INPUT;
            break;
        }
        for (size_t i = 0; i < ids.len; i++)
            printf(i ? " %d" : "%d", ids.ids[i]);
        putchar('\n');
        json_decref(js);
    }
    free(line);
    dsd_tok_ids_free(&ids);
    dsd_tokenizer_free(tok);
    return rc;
}

int cmd_detokenize(const struct subcommand *cmd, int argc, char **argv)
{
    (void)cmd;
    struct text_opts o;
    int rc = parse_opts("detokenize", argc, argv, false, &o);
    if (rc)
        return rc;
    struct dsd_tokenizer *tok = load("detokenize", o.tokenizer);
    if (!tok)
        return EXIT_BAD_INPUT;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    struct dsd_tok_ids ids = {0};
    struct dsd_tok_text text = {0};
    struct dsd_err err;
    rc = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) >= 0 && rc == 0) {
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = 0;
        ids.len = 0;
        for (char *p = line, *end;; p = end) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            if (*p == 0)
                break;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < 0 || v > INT32_MAX) {
                fprintf(stderr, "deepseekd-text detokenize: line %ld: \"%.20s\" is not a token id\n", lineno, p);
                rc = EXIT_BAD_INPUT;
                break;
            }
            dsd_tok_ids_push(&ids, (int32_t)v);
        }
        if (rc)
            break;
        text.len = 0;
        unsigned flags = DSD_TOK_LOSSY | (o.skip_special ? DSD_TOK_SKIP_SPECIAL : 0);
        if (dsd_tokenizer_decode(tok, ids.ids, ids.len, flags, &text, &err) < 0) {
            fprintf(stderr, "deepseekd-text detokenize: line %ld: %s\n", lineno, err.msg);
            rc = EXIT_BAD_INPUT;
            break;
        }
        json_t *js = json_stringn(text.data ? text.data : "", text.len);
        char *out = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        if (!out) {
            fprintf(stderr, "deepseekd-text detokenize: line %ld: out of memory\n", lineno);
            rc = EXIT_BAD_INPUT;
        } else {
            puts(out);
        }
        free(out);
        json_decref(js);
    }
    free(line);
    dsd_tok_ids_free(&ids);
    dsd_tok_text_free(&text);
    dsd_tokenizer_free(tok);
    return rc;
}
