/*
 * tests/client/test_probe.c: deepseekd-probe. Its argument parser (every command, the value
 * checks, the usage errors) and its JSON <-> msgpack conversion as units; then the real
 * binary (argv[1]) run against the in-process fake daemon: exit codes, output, --json.
 * End-to-end runs against the real daemon belong to test_client_daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_daemon.h"
#include "probe.h"
#include "test.h"

static int parse(struct probe_args *a, char *err, const char *first, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "deepseekd-probe";
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s && argc < 63; s = va_arg(ap, const char *))
        argv[argc++] = (char *)s;
    va_end(ap);
    argv[argc] = NULL;
    return probe_parse(argc, argv, a, err, 512);
}

TEST(parse_commands)
{
    struct probe_args a;
    char err[512];
    ASSERT_EQ_INT(parse(&a, err, "--socket", "/x.sock", "--json", "ping", "--count", "5", NULL), 0);
    ASSERT_EQ_INT(a.cmd, PROBE_PING);
    ASSERT_EQ_STR(a.socket, "/x.sock");
    ASSERT_TRUE(a.json);
    ASSERT_EQ_INT(a.count, 5);
    probe_args_free(&a);

    ASSERT_EQ_INT(parse(&a, err, "generate", "--prompt-tokens", "1, 2 3,4", "--max-tokens", "9",
                        "--temperature", "0", "--top-p", "0.9", "--top-k", "40", "--min-p",
                        "0.05", "--repetition-penalty", "1.1", "--frequency-penalty", "-0.5",
                        "--presence-penalty", "2", "--seed", "18446744073709551615", "--stop",
                        "END", "--stop", "###", "--stop-token", "7", "--logprobs", "3",
                        "--priority", "-5", "--no-shm", "--ignore-eos", NULL), 0);
    ASSERT_EQ_INT(a.cmd, PROBE_GENERATE);
    ASSERT_EQ_INT(a.n_prompt_tokens, 4);
    if (a.n_prompt_tokens == 4)
        ASSERT_EQ_INT(a.prompt_tokens[3], 4);
    ASSERT_EQ_INT(a.gp.max_tokens, 9);
    ASSERT_NEAR(a.gp.temperature, 0, 0, 0);
    ASSERT_NEAR(a.gp.top_p, 0.9, 0, 0);
    ASSERT_EQ_INT(a.gp.top_k, 40);
    ASSERT_NEAR(a.gp.min_p, 0.05, 0, 0);
    ASSERT_NEAR(a.gp.repetition_penalty, 1.1, 0, 0);
    ASSERT_NEAR(a.gp.frequency_penalty, -0.5, 0, 0);
    ASSERT_NEAR(a.gp.presence_penalty, 2, 0, 0);
    ASSERT_TRUE(a.gp.has_seed && a.gp.seed == UINT64_MAX);
    ASSERT_EQ_INT(a.gp.n_stop, 2);
    ASSERT_EQ_STR(a.gp.stop[1], "###");
    ASSERT_EQ_INT(a.gp.n_stop_token_ids, 1);
    ASSERT_EQ_INT(a.gp.stop_token_ids[0], 7);
    ASSERT_TRUE(a.gp.logprobs);
    ASSERT_EQ_INT(a.gp.top_logprobs, 3);
    ASSERT_EQ_INT(a.gp.priority, -5);
    ASSERT_TRUE(!a.gp.use_shm && a.no_shm && a.gp.ignore_eos);
    probe_args_free(&a);

    ASSERT_EQ_INT(parse(&a, err, "chat", "--message", "hi", "--system", "be brief",
                        "--thinking", "--tools", "[]", NULL), 0);
    ASSERT_EQ_INT(a.cmd, PROBE_CHAT);
    ASSERT_EQ_STR(a.message, "hi");
    ASSERT_EQ_STR(a.system, "be brief");
    ASSERT_TRUE(a.gp.thinking);
    ASSERT_EQ_STR(a.tools_json, "[]");
    probe_args_free(&a);

    ASSERT_EQ_INT(parse(&a, err, "tokenize", "--no-special", "hello world", NULL), 0);
    ASSERT_EQ_STR(a.text, "hello world");
    ASSERT_TRUE(a.no_special);
    ASSERT_EQ_INT(parse(&a, err, "bench", "--concurrency", "64", "--requests", "256",
                        "--prompt-len", "512", "--max-tokens", "32", NULL), 0);
    ASSERT_EQ_INT(a.concurrency, 64);
    ASSERT_EQ_INT(a.requests, 256);
    ASSERT_EQ_INT(a.prompt_len, 512);
    ASSERT_EQ_INT(a.gp.max_tokens, 32);
    ASSERT_EQ_INT(parse(&a, err, "bench", "--concurrency", "9", "--requests", "3", NULL), 0);
    ASSERT_EQ_INT(a.concurrency, 3);                   /* never more threads than requests */
    ASSERT_EQ_INT(parse(&a, err, "-t", "250", "raw", "--no-hello", "{\"t\":\"info\"}", NULL), 0);
    ASSERT_EQ_INT(a.timeout_ms, 250);
    ASSERT_TRUE(a.no_hello);
    ASSERT_EQ_STR(a.raw_json, "{\"t\":\"info\"}");
    const char *plain[3] = {"info", "stats", "health"};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ_INT(parse(&a, err, plain[i], NULL), 0);
        ASSERT_EQ_STR(probe_cmd_name(a.cmd), plain[i]);
    }
}

TEST(parse_help)
{
    struct probe_args a;
    char err[512];
    ASSERT_EQ_INT(parse(&a, err, "--help", NULL), 0);
    ASSERT_TRUE(a.help && a.cmd == PROBE_NONE);
    ASSERT_EQ_INT(parse(&a, err, "generate", "--help", NULL), 0);
    ASSERT_TRUE(a.help && a.cmd == PROBE_GENERATE);
    ASSERT_TRUE(strstr(probe_help(PROBE_GENERATE), "--repetition-penalty") != NULL);
    ASSERT_TRUE(strstr(probe_help(PROBE_NONE), "Exit status") != NULL);
    for (int c = PROBE_PING; c <= PROBE_RAW; c++) {
        ASSERT_EQ_INT(parse(&a, err, probe_cmd_name((enum probe_cmd)c), "--help", NULL), 0);
        ASSERT_TRUE(strstr(probe_help((enum probe_cmd)c), probe_cmd_name((enum probe_cmd)c)));
    }
}

TEST(parse_errors)
{
    const struct {
        const char *argv[6];
        const char *msg;
    } bad[] = {
        {{NULL}, "no command"},
        {{"frobnicate", NULL}, "unknown command \"frobnicate\""},
        {{"--bogus", "ping", NULL}, "unknown option --bogus"},
        {{"--socket", NULL}, "needs a value"},
        {{"ping", "--count", "0", NULL}, "below the minimum"},
        {{"ping", "--count", "x", NULL}, "--count"},
        {{"ping", "extra", NULL}, "unexpected argument"},
        {{"generate", NULL}, "exactly one of --prompt"},
        {{"generate", "--prompt", "a", "--prompt-tokens", "1", NULL}, "exactly one"},
        {{"generate", "--prompt-tokens", "1,x", NULL}, "not a token id"},
        {{"generate", "--prompt-tokens", "99999999999", NULL}, "not a token id"},
        {{"generate", "--prompt-tokens", " , ", NULL}, "no token ids"},
        {{"generate", "--prompt", "a", "--temperature", "-1", NULL}, "--temperature"},
        {{"generate", "--prompt", "a", "--top-p", "0", NULL}, "(0, 1]"},
        {{"generate", "--prompt", "a", "--top-p", "nan", NULL}, "--top-p"},
        {{"generate", "--prompt", "a", "--logprobs", "21", NULL}, "--logprobs"},
        {{"generate", "--prompt", "a", "--priority", "1001", NULL}, "--priority"},
        {{"generate", "--prompt", "a", "--max-tokens", "-3", NULL}, "non-negative"},
        {{"generate", "--prompt", "a", "--stop", "", NULL}, "1..256 bytes"},
        {{"generate", "--prompt-tokens", "1", "--no-special", NULL}, "--no-special"},
        {{"generate", "--prompt", "a", "--frobnicate", NULL}, "unknown option --frobnicate"},
        {{"chat", NULL}, "chat needs --message"},
        {{"tokenize", NULL}, "one TEXT"},
        {{"raw", NULL}, "one JSON"},
        {{"bench", "--concurrency", "0", NULL}, "--concurrency"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[8] = {"deepseekd-probe"};
        int argc = 1;
        for (int k = 0; bad[i].argv[k]; k++)
            argv[argc++] = (char *)bad[i].argv[k];
        struct probe_args a;
        char err[512];
        int rc = probe_parse(argc, argv, &a, err, sizeof err);
        if (rc != -1 || !strstr(err, bad[i].msg))
            TEST_FAIL_AT("case %zu: rc %d, message \"%s\", want \"%s\"", i, rc, err, bad[i].msg);
        probe_args_free(&a);
    }
}

TEST(exit_codes)
{
    ASSERT_EQ_INT(probe_exit_for(0), 0);
    ASSERT_EQ_INT(probe_exit_for(-ENOENT), 69);
    ASSERT_EQ_INT(probe_exit_for(-ECONNREFUSED), 69);
    ASSERT_EQ_INT(probe_exit_for(-EACCES), 77);
    ASSERT_EQ_INT(probe_exit_for(-EPROTO), 76);
    ASSERT_EQ_INT(probe_exit_for(-EAGAIN), 75);
    ASSERT_EQ_INT(probe_exit_for(-ESHUTDOWN), 75);
    ASSERT_EQ_INT(probe_exit_for(-EINVAL), 1);
}

TEST(json_msgpack_round_trip)
{
    const char *in = "{\"t\":\"generate\",\"id\":7,\"tokens\":[0,1,4294967295],"
                     "\"temperature\":0.5,\"seed\":-3,\"logprobs\":true,\"stop\":null,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}]}";
    json_error_t je;
    json_t *j = json_loads(in, 0, &je);
    ASSERT_TRUE(j != NULL);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    ASSERT_EQ_INT(probe_json_to_msgpack(j, &sb, err, sizeof err), 0);
    /* Bytes checked by hand: fixmap of 8, then "t" -> "generate". */
    ASSERT_EQ_INT((uint8_t)sb.data[0], 0x88);
    ASSERT_EQ_INT((uint8_t)sb.data[1], 0xa1);
    ASSERT_EQ_INT(sb.data[2], 't');
    ASSERT_EQ_INT((uint8_t)sb.data[3], 0xa8);
    json_t *back = probe_msgpack_to_json((const uint8_t *)sb.data, sb.size, err, sizeof err);
    ASSERT_TRUE(back && json_equal(j, back));
    msgpack_sbuffer_destroy(&sb);
    json_decref(back);
    json_decref(j);

    /* msgpack -> JSON for what JSON lacks: bin, ext, non-string keys, NaN, invalid UTF-8. */
    const uint8_t odd[] = {0x85, 0xa1, 'b', 0xc4, 0x02, 0xde, 0xad,      /* "b": bin */
                           0x01, 0xa1, 'x',                             /* 1: "x" */
                           0xa1, 'f', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, /* "f": NaN */
                           0xa1, 'e', 0xd4, 0x05, 0x2a,                 /* "e": fixext1 */
                           0xa1, 's', 0xa1, 0xff};                      /* "s": bad UTF-8 */
    back = probe_msgpack_to_json(odd, sizeof odd, err, sizeof err);
    ASSERT_TRUE(back != NULL);
    if (back) {
        char *s = json_dumps(back, JSON_COMPACT | JSON_SORT_KEYS);
        ASSERT_EQ_STR(s, "{\"1\":\"x\",\"b\":{\"$bin\":\"dead\"},\"e\":{\"$ext\":5,\"hex\":\"2a\"},"
                         "\"f\":\"nan\",\"s\":{\"$badstr\":\"ff\"}}");
        free(s);
        json_decref(back);
    }
    /* Malformed msgpack is refused by the pre-scan, never handed to msgpack-c. */
    const uint8_t huge[] = {0xdd, 0x01, 0x00, 0x00, 0x00};
    ASSERT_TRUE(probe_msgpack_to_json(huge, sizeof huge, err, sizeof err) == NULL);
    ASSERT_TRUE(strstr(err, "not a msgpack object") != NULL);
    const uint8_t trailing[] = {0x80, 0x00};
    ASSERT_TRUE(probe_msgpack_to_json(trailing, sizeof trailing, err, sizeof err) == NULL);
}

/* ---- the binary against the fake daemon ----------------------------------------------- */

static const char *probe_bin;

/* Runs the probe with args; returns the exit status, stdout into out. */
static int run_probe(char *out, size_t out_len, const char *const *args)
{
    int pipefd[2];
    if (pipe(pipefd) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        close(pipefd[0]);
        alarm(20);                      /* kept across exec: a hung probe dies, never the test */
        char *argv[32] = {(char *)probe_bin};
        int n = 1;
        for (; args[n - 1] && n < 31; n++)
            argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(probe_bin, argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t len = 0;
    ssize_t k;
    while ((k = read(pipefd[0], out + len, out_len - 1 - len)) > 0)
        len += (size_t)k;
    out[len] = '\0';
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(binary_against_fake)
{
    if (!probe_bin) {
        printf("skipped binary_against_fake: no probe binary given\n");
        return;
    }
    struct fake *f = fake_start(&(struct fake_opts){.tokens_per_step = 2});
    ASSERT_TRUE(f != NULL);
    if (!f)
        return;
    const char *sock = fake_path(f);
    static char out[65536];
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "ping", NULL}), 0);
    ASSERT_TRUE(strstr(out, "pong from fake-model") != NULL);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "--json", "ping",
                                                              "--count", "20", NULL}), 0);
    ASSERT_TRUE(strstr(out, "\"p99_us\"") != NULL);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "health", NULL}), 0);
    ASSERT_EQ_STR(out, "ok: fake is fine\n");
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "-j", "info", NULL}),
                  0);
    ASSERT_TRUE(strstr(out, "\"vocab_size\":129280") && strstr(out, "\"max_batch\":64"));
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "stats", NULL}), 0);
    ASSERT_TRUE(strstr(out, "requests_running") != NULL);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "tokenize", "ab", NULL}),
                  0);
    ASSERT_EQ_STR(out, "0 97 98\n");
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "generate",
                                                              "--prompt-tokens", "10,20",
                                                              "--max-tokens", "4", NULL}), 0);
    ASSERT_EQ_STR(out, "30 31 32 33 ");
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "generate", "--prompt",
                                                              "abc", "--max-tokens", "2", NULL}),
                  0);
    ASSERT_EQ_STR(out, "t3 t4 ");
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "chat", "--message",
                                                              "q", "--thinking", "--max-tokens",
                                                              "4", NULL}), 0);
    ASSERT_EQ_STR(out, "[reasoning]\nr1000 r1001 \n[answer]\nt1002 t1003 ");
    /* With tools the fake also sends a tool call and unreadable-call reports (last step). */
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "chat", "--message",
                                                              "q", "--tools", "[]", "--max-tokens",
                                                              "2", NULL}), 0);
    ASSERT_TRUE(strstr(out, "[tool call 0] get_weather({\"city\":\"Paris\"})") != NULL);
    ASSERT_TRUE(strstr(out, "[unreadable tool call skipped] dropped at 2\n") != NULL);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "-j", "chat", "--message",
                                                              "q", "--tools", "[]", "--max-tokens",
                                                              "2", NULL}), 0);
    ASSERT_TRUE(strstr(out, "\"tool_call_error\":\"dropped at 2\"") != NULL);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "-j", "generate",
                                                              "--prompt-tokens", "1",
                                                              "--max-tokens", "2", "--no-shm",
                                                              NULL}), 0);
    ASSERT_TRUE(strstr(out, "{\"ids\":[1,2]}\n") != NULL);
    ASSERT_TRUE(strstr(out, "\"finish\":\"length\"") != NULL);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "bench",
                                                              "--concurrency", "4",
                                                              "--requests", "8", "--prompt-len",
                                                              "16", "--max-tokens", "8", NULL}),
                  0);
    ASSERT_TRUE(strstr(out, "8 requests (0 failed)") && strstr(out, "shm rings"));
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "-j", "bench",
                                                              "--requests", "4", "--max-tokens",
                                                              "4", "--no-shm", NULL}), 0);
    ASSERT_TRUE(strstr(out, "\"tokens\":16") && strstr(out, "\"shm\":false"));
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "raw",
                                                              "{\"t\":\"health\",\"id\":9}",
                                                              NULL}), 0);
    ASSERT_EQ_STR(out, "{\"t\":\"health_ok\",\"id\":9,\"status\":\"ok\",\"detail\":\"fake is "
                       "fine\"}\n");
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "raw",
                                                              "{\"t\":\"nonsense\"}", NULL}), 1);
    ASSERT_TRUE(strstr(out, "\"t\":\"error\"") && strstr(out, "\"code\":203"));
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "raw", "[1]", NULL}),
                  64);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", sock, "generate", NULL}), 64);
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"--help", NULL}), 0);
    ASSERT_TRUE(strstr(out, "Usage: deepseekd-probe") != NULL);
    fake_stop(f);

    /* Nobody listening: 69. A daemon refusing as not ready: 75. */
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", "/tmp/dsd-nope/x.sock", "ping",
                                                              NULL}), 69);
    f = fake_start(&(struct fake_opts){.refuse_code = 501});
    ASSERT_EQ_INT(run_probe(out, sizeof out, (const char *[]){"-s", fake_path(f), "generate",
                                                              "--prompt", "x", NULL}), 75);
    fake_stop(f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

TEST(timeout_while_waiting_for_tokens)
{
    if (!probe_bin) {
        printf("skipped timeout_while_waiting_for_tokens: no probe binary given\n");
        return;
    }
    /* A daemon that accepts the request and then never produces: -t must end the wait. */
    struct fake *f = fake_start(&(struct fake_opts){.mute = true});
    ASSERT_TRUE(f != NULL);
    if (!f)
        return;
    static char out[4096];
    const char *const *cases[] = {
        (const char *[]){"-s", fake_path(f), "-t", "500", "generate", "--prompt-tokens", "1,2",
                         "--max-tokens", "4", NULL},
        (const char *[]){"-s", fake_path(f), "-t", "500", "generate", "--prompt-tokens", "1,2",
                         "--no-shm", NULL},
        (const char *[]){"-s", fake_path(f), "-t", "500", "chat", "--message", "q", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double t0 = now_s();
        int ex = run_probe(out, sizeof out, cases[i]);
        double dt = now_s() - t0;
        printf("  case %zu: exit %d after %.2f s (-t 500)\n", i, ex, dt);
        ASSERT_EQ_INT(ex, 75);          /* EX_TEMPFAIL: a timeout (-1 = killed by the alarm) */
        ASSERT_TRUE(dt >= 0.45 && dt < 5.0);
    }
    ASSERT_TRUE(atomic_load(&fake_stats(f)->cancels) >= 1);     /* the request was cancelled */
    fake_stop(f);
}

int main(int argc, char **argv)
{
    probe_bin = argc > 1 ? argv[1] : NULL;
    RUN(parse_commands);
    RUN(parse_help);
    RUN(parse_errors);
    RUN(exit_codes);
    RUN(json_msgpack_round_trip);
    RUN(binary_against_fake);
    RUN(timeout_while_waiting_for_tokens);
    return test_report();
}
