/*
 * deepseekd-text: the daemon's text layer on the command line.
 *
 *   deepseekd-text encode-chat [--thinking] [--no-bos] < request.json   > prompt.txt
 *   deepseekd-text parse [--thinking] [--chunk N]     < output.txt     > events.jsonl
 *   deepseekd-text tokenize --tokenizer FILE [--jsonl] [--special]     (cmd_tokenize.c)
 *   deepseekd-text detokenize --tokenizer FILE [--skip-special]        (cmd_tokenize.c)
 *
 * encode-chat prints the prompt text exactly (no newline added). parse prints one JSON object
 * per line, in order: {"content": "..."}, {"reasoning": "..."}, {"tool_call": {"name": "...",
 * "arguments": {...}}}, {"error": "..."}; adjacent pieces of one kind are merged.
 * Exit status: 0 on success, 1 for bad input (message on stderr), 2 for bad usage.
 *
 * Each subcommand is one row of SUBCOMMANDS below; adding one is adding a row.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_buf.h"
#include "chat_encoder.h"
#include "chat_json.h"
#include "commands.h"
#include "output_parser.h"

#define EXIT_BAD_INPUT 1
#define EXIT_USAGE 2

struct subcommand {
    const char *name;
    const char *args;
    const char *what;
    int (*run)(const struct subcommand *cmd, int argc, char **argv);
};

static int usage_error(const struct subcommand *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "deepseekd-text %s: ", cmd->name);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: deepseekd-text %s %s\n", cmd->name, cmd->args);
    return EXIT_USAGE;
}

static int read_all(int fd, struct dsd_chat_buf *out)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (dsd_chat_buf_put(out, chunk, (size_t)n) < 0)
            return -ENOMEM;
    }
}

/* ------------------------------------------------------------------------------ encode-chat */

static int cmd_encode_chat(const struct subcommand *cmd, int argc, char **argv)
{
    struct dsd_chat_options opt = {0};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--thinking") == 0)
            opt.thinking = true;
        else if (strcmp(argv[i], "--no-bos") == 0)
            opt.omit_bos = true;
        else
            return usage_error(cmd, "unknown option '%s'", argv[i]);
    }
    struct dsd_chat_buf in = {0};
    int rc = read_all(STDIN_FILENO, &in);
    if (rc < 0) {
        fprintf(stderr, "deepseekd-text encode-chat: reading stdin: %s\n", strerror(-rc));
        dsd_chat_buf_free(&in);
        return EXIT_BAD_INPUT;
    }
    char *prompt;
    size_t len;
    struct dsd_err err = {{0}};
    rc = dsd_chat_encode_json(in.data ? in.data : "", in.len, &opt, &prompt, &len, &err);
    dsd_chat_buf_free(&in);
    if (rc < 0) {
        fprintf(stderr, "deepseekd-text encode-chat: %s\n", err.msg);
        return EXIT_BAD_INPUT;
    }
    bool ok = fwrite(prompt, 1, len, stdout) == len && fflush(stdout) == 0;
    free(prompt);
    if (!ok) {
        fprintf(stderr, "deepseekd-text encode-chat: writing stdout: %s\n", strerror(errno));
        return EXIT_BAD_INPUT;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ parse */

/* Merges adjacent deltas of one kind into one line. */
struct printer {
    enum dsd_output_event_kind pending_kind; /* 0: nothing pending */
    struct dsd_chat_buf pending;
    struct dsd_chat_buf line;
    bool write_failed;
};

static int print_line(struct printer *pr, const char *key, const char *text, size_t len,
                      const json_t *arguments)
{
    pr->line.len = 0;
    int rc = dsd_chat_buf_puts(&pr->line, "{");
    if (rc == 0)
        rc = dsd_chat_json_dump_string(&pr->line, key, strlen(key));
    if (rc == 0)
        rc = dsd_chat_buf_puts(&pr->line, ": ");
    if (rc == 0 && arguments) {
        /* {"tool_call": {"name": NAME, "arguments": {...}}} */
        rc = dsd_chat_buf_puts(&pr->line, "{\"name\": ");
        if (rc == 0)
            rc = dsd_chat_json_dump_string(&pr->line, text, len);
        if (rc == 0)
            rc = dsd_chat_buf_puts(&pr->line, ", \"arguments\": ");
        if (rc == 0)
            rc = dsd_chat_json_dump(&pr->line, arguments, NULL);
        if (rc == 0)
            rc = dsd_chat_buf_puts(&pr->line, "}");
    } else if (rc == 0) {
        rc = dsd_chat_json_dump_string(&pr->line, text, len);
    }
    if (rc == 0)
        rc = dsd_chat_buf_puts(&pr->line, "}\n");
    if (rc < 0)
        return rc;
    if (fwrite(pr->line.data, 1, pr->line.len, stdout) != pr->line.len) {
        pr->write_failed = true;
        return -EIO;
    }
    return 0;
}

static int flush_pending(struct printer *pr)
{
    if (!pr->pending_kind)
        return 0;
    const char *key = pr->pending_kind == DSD_OUTPUT_CONTENT ? "content" : "reasoning";
    int rc = print_line(pr, key, pr->pending.data ? pr->pending.data : "", pr->pending.len, NULL);
    pr->pending_kind = 0;
    pr->pending.len = 0;
    return rc;
}

static int on_event(void *user, const struct dsd_output_event *ev)
{
    struct printer *pr = user;
    if (ev->kind == DSD_OUTPUT_CONTENT || ev->kind == DSD_OUTPUT_REASONING) {
        if (pr->pending_kind && pr->pending_kind != ev->kind) {
            int rc = flush_pending(pr);
            if (rc < 0)
                return rc;
        }
        pr->pending_kind = ev->kind;
        return dsd_chat_buf_put(&pr->pending, ev->text, ev->len);
    }
    int rc = flush_pending(pr);
    if (rc < 0)
        return rc;
    if (ev->kind == DSD_OUTPUT_TOOL_CALL)
        return print_line(pr, "tool_call", ev->name, ev->name_len, ev->arguments);
    return print_line(pr, "error", ev->text, ev->len, NULL);
}

static int cmd_parse(const struct subcommand *cmd, int argc, char **argv)
{
    struct dsd_output_parser_options opt = {0};
    size_t chunk = 4096;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--thinking") == 0) {
            opt.start_in_reasoning = true;
        } else if (strcmp(argv[i], "--chunk") == 0) {
            if (i + 1 == argc)
                return usage_error(cmd, "%s needs a number of bytes", argv[i]);
            char *end;
            errno = 0;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (errno || *end || v == 0 || argv[i][0] == '-')
                return usage_error(cmd, "--chunk wants a positive number of bytes, not '%s'",
                                   argv[i]);
            chunk = (size_t)v;
        } else {
            return usage_error(cmd, "unknown option '%s'", argv[i]);
        }
    }
    struct printer pr = {0};
    struct dsd_output_parser *parser;
    struct dsd_err err = {{0}};
    int status = EXIT_BAD_INPUT;
    if (dsd_output_parser_create(&opt, on_event, &pr, &parser, &err) < 0) {
        fprintf(stderr, "deepseekd-text parse: %s\n", err.msg);
        return EXIT_BAD_INPUT;
    }
    /* Stream stdin through the parser in pieces of `chunk` bytes, as the daemon would feed
     * detokenized deltas. */
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "deepseekd-text parse: reading stdin: %s\n", strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        for (size_t off = 0; off < (size_t)n && rc == 0; off += chunk) {
            size_t len = (size_t)n - off < chunk ? (size_t)n - off : chunk;
            rc = dsd_output_parser_feed(parser, buf + off, len, &err);
        }
        if (rc < 0)
            break;
    }
    if (rc == 0)
        rc = dsd_output_parser_finish(parser, &err);
    if (rc == 0)
        rc = flush_pending(&pr);
    if (rc < 0 || fflush(stdout) != 0) {
        if (pr.write_failed || rc == 0)
            fprintf(stderr, "deepseekd-text parse: writing stdout: %s\n", strerror(errno));
        else
            fprintf(stderr, "deepseekd-text parse: %s\n", err.msg[0] ? err.msg : strerror(-rc));
        goto out;
    }
    status = 0;
out:
    dsd_output_parser_free(parser);
    dsd_chat_buf_free(&pr.pending);
    dsd_chat_buf_free(&pr.line);
    return status;
}

static const struct subcommand SUBCOMMANDS[] = {
    {"tokenize", "--tokenizer FILE [--jsonl] [--special]",
     "print the token ids of each input line", cmd_tokenize},
    {"detokenize", "--tokenizer FILE [--skip-special]", "print each line of token ids as a JSON string",
     cmd_detokenize},
    {"encode-chat", "[--thinking] [--no-bos]",
     "read a chat request (JSON) on stdin, print the V3.2 prompt text", cmd_encode_chat},
    {"parse", "[--thinking] [--chunk N]",
     "read model output on stdin, print content/reasoning/tool_call/error lines", cmd_parse},
};

static int usage(FILE *f)
{
    fprintf(f, "usage: deepseekd-text COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; i++)
        fprintf(f, "  %-12s %s\n  %-12s   %s\n", SUBCOMMANDS[i].name, SUBCOMMANDS[i].args, "",
                SUBCOMMANDS[i].what);
    return f == stdout ? 0 : EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return usage(stdout);
    for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; i++)
        if (strcmp(argv[1], SUBCOMMANDS[i].name) == 0)
            return SUBCOMMANDS[i].run(&SUBCOMMANDS[i], argc - 2, argv + 2);
    fprintf(stderr, "deepseekd-text: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
