/*
 * tools/probe/probe_args.c: the command line of deepseekd-probe. Global options come before
 * the command, the command's options after it; every value is checked here (range, syntax)
 * so a typo is a usage error naming the option, never a confusing daemon refusal.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe.h"

static const char *const cmd_names[] = {
    [PROBE_NONE] = "", [PROBE_PING] = "ping", [PROBE_INFO] = "info", [PROBE_STATS] = "stats",
    [PROBE_HEALTH] = "health", [PROBE_GENERATE] = "generate", [PROBE_CHAT] = "chat",
    [PROBE_TOKENIZE] = "tokenize", [PROBE_BENCH] = "bench", [PROBE_RAW] = "raw",
};

const char *probe_cmd_name(enum probe_cmd cmd)
{
    return (unsigned)cmd < sizeof cmd_names / sizeof cmd_names[0] ? cmd_names[cmd] : "";
}

#define SAMPLING_HELP                                                                        \
    "  --max-tokens N           stop after N tokens (0 = the daemon's limit)\n"               \
    "  --temperature X          0..100, 0 = greedy (default 1)\n"                             \
    "  --top-p X                (0, 1] (default 1)\n"                                         \
    "  --top-k N                0 = off\n"                                                    \
    "  --min-p X                [0, 1]\n"                                                     \
    "  --repetition-penalty X   (0, 10] (default 1)\n"                                        \
    "  --frequency-penalty X    [-2, 2]\n"                                                    \
    "  --presence-penalty X     [-2, 2]\n"                                                    \
    "  --seed N                 reproducible sampling\n"                                      \
    "  --stop STR               stop string (repeatable, up to 16)\n"                         \
    "  --stop-token ID          extra stop token id (repeatable, up to 64)\n"                 \
    "  --logprobs N             print each token's logprob and the N (0..20) best\n"          \
    "  --priority P             -1000..1000, higher first\n"                                  \
    "  --ignore-eos             keep going past EOS\n"                                        \
    "  --no-shm                 frames only (no shared-memory ring or prompt arena)\n"

static const char *const helps[] = {
    [PROBE_NONE] =
        "Usage: deepseekd-probe [--socket PATH] [--json] [--timeout MS] COMMAND [ARGS]\n"
        "\n"
        "Talks to deepseekd over its Unix socket with libdeepseekd.\n"
        "\n"
        "Commands:\n"
        "  ping                 round-trip time of a health request\n"
        "  info                 model facts, limits and running configuration\n"
        "  stats                counters and gauges\n"
        "  health               readiness (exit 0 ready, 75 loading or draining)\n"
        "  generate             stream a completion of --prompt TEXT or --prompt-tokens IDS\n"
        "  chat                 stream a chat answer (reasoning and content apart)\n"
        "  tokenize TEXT        token ids of TEXT\n"
        "  bench                concurrent streams: TTFT, inter-token latency, tokens/s\n"
        "  raw JSON             send one JSON object as a msgpack frame, print the replies\n"
        "\n"
        "Options:\n"
        "  -s, --socket PATH    socket (default $DEEPSEEKD_SOCKET, else\n"
        "                       /run/deepseekd/deepseekd.sock)\n"
        "  -j, --json           print JSON (one object per line when streaming)\n"
        "  -t, --timeout MS     per-call timeout (default 30000; raw: 5000); generate,\n"
        "                       chat, bench: the longest wait for the daemon's next\n"
        "                       event (default: none, as long as the request runs)\n"
        "  -h, --help           this text; COMMAND --help for a command's options\n"
        "\n"
        "Exit status: 0 ok, 1 request failed, 64 usage, 69 daemon unavailable,\n"
        "75 temporary failure (loading, draining, overloaded, timeout), 76 protocol error,\n"
        "77 permission denied. See deepseekd-probe(1).\n",
    [PROBE_PING] = "Usage: deepseekd-probe ping [--count N]\n"
                   "Times N (default 1) health round trips and prints them.\n",
    [PROBE_INFO] = "Usage: deepseekd-probe info\n"
                   "Prints the model, the limits, this connection's shm and the daemon's\n"
                   "running configuration.\n",
    [PROBE_STATS] = "Usage: deepseekd-probe stats [--prometheus]\nPrints the daemon's counters and gauges.\n"
                    "  --prometheus   in the Prometheus text format (deepseekd_* counters, gauges and\n"
                    "                 histograms), for a textfile collector or a scrape wrapper\n",
    [PROBE_HEALTH] = "Usage: deepseekd-probe health\n"
                     "Prints the daemon's status. Exit 0 when ok, 75 while loading or\n"
                     "draining, 69 when unhealthy.\n",
    [PROBE_GENERATE] =
        "Usage: deepseekd-probe generate (--prompt TEXT | --prompt-tokens IDS) [options]\n"
        "Streams the completion: text when the prompt is text, token ids when it is ids\n"
        "(--text / --ids choose). Ctrl-C cancels the request.\n"
        "  --prompt TEXT            raw text (BOS prepended unless --no-special)\n"
        "  --prompt-tokens IDS      token ids, \"1,2,3\" or \"1 2 3\"\n"
        "  --no-special             with --prompt: no BOS\n"
        "  --text, --ids            print text deltas / token ids\n" SAMPLING_HELP,
    [PROBE_CHAT] =
        "Usage: deepseekd-probe chat --message TEXT [--system TEXT] [--thinking] [options]\n"
        "Streams a chat answer: reasoning (with --thinking) under [reasoning], the answer\n"
        "under [answer], tool calls as [tool call] name(arguments).\n"
        "  --message TEXT           the user message\n"
        "  --system TEXT            a system message before it\n"
        "  --thinking               thinking mode\n"
        "  --tools JSON             the OpenAI tools array, as JSON text\n" SAMPLING_HELP,
    [PROBE_TOKENIZE] = "Usage: deepseekd-probe tokenize [--no-special] TEXT\n"
                       "Prints the token ids of TEXT (with BOS unless --no-special).\n",
    [PROBE_BENCH] =
        "Usage: deepseekd-probe bench [--concurrency C] [--requests N] [--prompt-len L]\n"
        "                             [--prompt-len-max L2] [--shared-prefix P]\n"
        "                             [--prefix-groups G] [--max-tokens M] [--no-shm] [--seed S]\n"
        "Runs N requests (default 64), C at a time (default 8) from C threads on one\n"
        "connection, each with L random prompt tokens (default 128; with L2, a length drawn\n"
        "from L..L2 per request) and exactly M generated tokens (default 64, EOS ignored).\n"
        "With P, a prompt's first P tokens are one of G fixed prefixes (request k gets prefix\n"
        "k mod G; the same for every run with the same seed), the rest random: the prefix\n"
        "cache's case. Prints time to first token and inter-token latency (p50/p90/p99),\n"
        "tokens/s and the prompt tokens the prefix cache served, per tier. --no-shm sends\n"
        "everything in socket frames, for comparing with the shared-memory rings.\n",
    [PROBE_RAW] =
        "Usage: deepseekd-probe raw [--no-hello] JSON\n"
        "Sends the JSON object as one msgpack frame (after a hello unless --no-hello or\n"
        "the object is a hello; \"id\" defaults to 2) and prints every reply frame as\n"
        "JSON until a final reply (done, error, *_ok) or the timeout (default 5000 ms).\n"
        "Example: deepseekd-probe raw '{\"t\":\"health\",\"id\":7}'\n",
};

const char *probe_help(enum probe_cmd cmd)
{
    return (unsigned)cmd < sizeof helps / sizeof helps[0] ? helps[cmd] : helps[0];
}

static int usage(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int usage(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *ret, char *err,
                     size_t n)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+')
        return usage(err, n, "%s: \"%s\" is not a non-negative integer", opt, s ? s : "");
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return usage(err, n, "%s: \"%s\" is not an integer in [0, %llu]", opt, s,
                     (unsigned long long)max);
    *ret = v;
    return 0;
}

static int parse_u32(const char *opt, const char *s, uint32_t min, uint32_t max, uint32_t *ret,
                     char *err, size_t n)
{
    uint64_t v;
    if (parse_u64(opt, s, max, &v, err, n) < 0)
        return -1;
    if (v < min)
        return usage(err, n, "%s: %llu is below the minimum %u", opt, (unsigned long long)v, min);
    *ret = (uint32_t)v;
    return 0;
}

static int parse_i32(const char *opt, const char *s, int32_t min, int32_t max, int32_t *ret,
                     char *err, size_t n)
{
    char *end;
    errno = 0;
    long v = s && *s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || errno || *end || v < min || v > max)
        return usage(err, n, "%s: \"%s\" is not an integer in [%d, %d]", opt, s ? s : "", min,
                     max);
    *ret = (int32_t)v;
    return 0;
}

static int parse_num(const char *opt, const char *s, double lo, double hi, bool lo_open,
                     double *ret, char *err, size_t n)
{
    char *end;
    errno = 0;
    double v = s && *s ? strtod(s, &end) : NAN;
    if (!s || !*s || errno || *end || !isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
        return usage(err, n, "%s: \"%s\" is not a number in %s%g, %g]", opt, s ? s : "",
                     lo_open ? "(" : "[", lo, hi);
    *ret = v;
    return 0;
}

int probe_parse_ids(const char *s, uint32_t **ret, char *err, size_t err_len)
{
    *ret = NULL;
    size_t cap = 16, n = 0;
    uint32_t *v = malloc(cap * sizeof *v);
    if (!v)
        return usage(err, err_len, "out of memory");
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        if (*p < '0' || *p > '9') {
            free(v);
            return usage(err, err_len, "--prompt-tokens: \"%.20s\" is not a token id", p);
        }
        char *end;
        errno = 0;
        unsigned long long id = strtoull(p, &end, 10);
        if (errno || id > UINT32_MAX || (*end && *end != ' ' && *end != ',' && *end != '\t' &&
                                         *end != '\n')) {
            free(v);
            return usage(err, err_len, "--prompt-tokens: \"%.20s\" is not a token id "
                         "(0..4294967295)", p);
        }
        if (n == PROBE_MAX_PROMPT_TOKENS) {
            free(v);
            return usage(err, err_len, "--prompt-tokens: more than %u ids",
                         PROBE_MAX_PROMPT_TOKENS);
        }
        if (n == cap) {
            uint32_t *q = realloc(v, 2 * cap * sizeof *v);
            if (!q) {
                free(v);
                return usage(err, err_len, "out of memory");
            }
            v = q;
            cap *= 2;
        }
        v[n++] = (uint32_t)id;
        p = end;
    }
    if (n == 0) {
        free(v);
        return usage(err, err_len, "--prompt-tokens: no token ids in \"%s\"", s);
    }
    *ret = v;
    return (int)n;
}

enum {
    O_PROMPT = 256, O_PROMPT_TOKENS, O_NO_SPECIAL, O_TEXT, O_IDS, O_MAX_TOKENS, O_TEMPERATURE,
    O_TOP_P, O_TOP_K, O_MIN_P, O_REP, O_FREQ, O_PRES, O_SEED, O_STOP, O_STOP_TOKEN, O_LOGPROBS,
    O_PRIORITY, O_IGNORE_EOS, O_NO_SHM, O_MESSAGE, O_SYSTEM, O_THINKING, O_TOOLS, O_COUNT,
    O_CONCURRENCY, O_REQUESTS, O_PROMPT_LEN, O_NO_HELLO, O_PROMETHEUS, O_PROMPT_LEN_MAX, O_SHARED_PREFIX,
    O_PREFIX_GROUPS,
};

#define SAMPLING_OPTS                                                                        \
    {"max-tokens", required_argument, 0, O_MAX_TOKENS},                                       \
    {"temperature", required_argument, 0, O_TEMPERATURE},                                     \
    {"top-p", required_argument, 0, O_TOP_P}, {"top-k", required_argument, 0, O_TOP_K},       \
    {"min-p", required_argument, 0, O_MIN_P},                                                 \
    {"repetition-penalty", required_argument, 0, O_REP},                                      \
    {"frequency-penalty", required_argument, 0, O_FREQ},                                      \
    {"presence-penalty", required_argument, 0, O_PRES},                                       \
    {"seed", required_argument, 0, O_SEED}, {"stop", required_argument, 0, O_STOP},           \
    {"stop-token", required_argument, 0, O_STOP_TOKEN},                                       \
    {"logprobs", required_argument, 0, O_LOGPROBS},                                           \
    {"priority", required_argument, 0, O_PRIORITY},                                           \
    {"ignore-eos", no_argument, 0, O_IGNORE_EOS}, {"no-shm", no_argument, 0, O_NO_SHM},       \
    {"help", no_argument, 0, 'h'}

static const struct option opts_generate[] = {
    {"prompt", required_argument, 0, O_PROMPT},
    {"prompt-tokens", required_argument, 0, O_PROMPT_TOKENS},
    {"no-special", no_argument, 0, O_NO_SPECIAL}, {"text", no_argument, 0, O_TEXT},
    {"ids", no_argument, 0, O_IDS}, SAMPLING_OPTS, {0, 0, 0, 0}};
static const struct option opts_chat[] = {
    {"message", required_argument, 0, O_MESSAGE}, {"system", required_argument, 0, O_SYSTEM},
    {"thinking", no_argument, 0, O_THINKING}, {"tools", required_argument, 0, O_TOOLS},
    SAMPLING_OPTS, {0, 0, 0, 0}};
static const struct option opts_ping[] = {
    {"count", required_argument, 0, O_COUNT}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
static const struct option opts_plain[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
static const struct option opts_stats[] = {
    {"prometheus", no_argument, 0, O_PROMETHEUS}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
static const struct option opts_tokenize[] = {
    {"no-special", no_argument, 0, O_NO_SPECIAL}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
static const struct option opts_bench[] = {
    {"concurrency", required_argument, 0, O_CONCURRENCY},
    {"requests", required_argument, 0, O_REQUESTS},
    {"prompt-len", required_argument, 0, O_PROMPT_LEN},
    {"prompt-len-max", required_argument, 0, O_PROMPT_LEN_MAX},
    {"shared-prefix", required_argument, 0, O_SHARED_PREFIX},
    {"prefix-groups", required_argument, 0, O_PREFIX_GROUPS},
    {"max-tokens", required_argument, 0, O_MAX_TOKENS},
    {"seed", required_argument, 0, O_SEED}, {"no-shm", no_argument, 0, O_NO_SHM},
    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
static const struct option opts_raw[] = {
    {"no-hello", no_argument, 0, O_NO_HELLO}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};

/* One option of a command; returns 0 or -1. */
static int command_opt(struct probe_args *a, int o, const char *v, char *err, size_t n)
{
    struct dsd_client_generate_params *g = &a->gp;
    switch (o) {
    case O_PROMPT: a->prompt = v; return 0;
    case O_PROMPT_TOKENS: {
        uint32_t *ids;
        int k = probe_parse_ids(v, &ids, err, n);
        if (k < 0)
            return -1;
        free(a->prompt_tokens);
        a->prompt_tokens = ids;
        a->n_prompt_tokens = (uint32_t)k;
        return 0;
    }
    case O_NO_SPECIAL: a->no_special = true; return 0;
    case O_PROMETHEUS: a->prometheus = true; return 0;
    case O_TEXT: g->detokenize = 1; return 0;
    case O_IDS: g->detokenize = 0; return 0;
    case O_MAX_TOKENS: return parse_u32("--max-tokens", v, 0, 1u << 31, &g->max_tokens, err, n);
    case O_TEMPERATURE:
        return parse_num("--temperature", v, 0, 100, false, &g->temperature, err, n);
    case O_TOP_P: return parse_num("--top-p", v, 0, 1, true, &g->top_p, err, n);
    case O_TOP_K: return parse_u32("--top-k", v, 0, 1u << 31, &g->top_k, err, n);
    case O_MIN_P: return parse_num("--min-p", v, 0, 1, false, &g->min_p, err, n);
    case O_REP:
        return parse_num("--repetition-penalty", v, 0, 10, true, &g->repetition_penalty, err, n);
    case O_FREQ:
        return parse_num("--frequency-penalty", v, -2, 2, false, &g->frequency_penalty, err, n);
    case O_PRES:
        return parse_num("--presence-penalty", v, -2, 2, false, &g->presence_penalty, err, n);
    case O_SEED:
        g->has_seed = true;
        return parse_u64("--seed", v, UINT64_MAX, &g->seed, err, n);
    case O_STOP:
        if (a->n_stops == 16)
            return usage(err, n, "--stop: at most 16 stop strings");
        if (!*v || strlen(v) > 256)
            return usage(err, n, "--stop: a stop string has 1..256 bytes");
        a->stops[a->n_stops++] = v;
        return 0;
    case O_STOP_TOKEN:
        if (a->n_stop_ids == 64)
            return usage(err, n, "--stop-token: at most 64 stop tokens");
        return parse_u32("--stop-token", v, 0, UINT32_MAX, &a->stop_ids[a->n_stop_ids++], err,
                         n);
    case O_LOGPROBS:
        g->logprobs = true;
        return parse_u32("--logprobs", v, 0, 20, &g->top_logprobs, err, n);
    case O_PRIORITY: return parse_i32("--priority", v, -1000, 1000, &g->priority, err, n);
    case O_IGNORE_EOS: g->ignore_eos = true; return 0;
    case O_NO_SHM: a->no_shm = true; g->use_shm = false; return 0;
    case O_MESSAGE: a->message = v; return 0;
    case O_SYSTEM: a->system = v; return 0;
    case O_THINKING: g->thinking = true; return 0;
    case O_TOOLS: a->tools_json = v; return 0;
    case O_COUNT: return parse_u32("--count", v, 1, 1000000, &a->count, err, n);
    case O_CONCURRENCY: return parse_u32("--concurrency", v, 1, 1024, &a->concurrency, err, n);
    case O_REQUESTS: return parse_u32("--requests", v, 1, 10000000, &a->requests, err, n);
    case O_PROMPT_LEN: return parse_u32("--prompt-len", v, 1, 1u << 20, &a->prompt_len, err, n);
    case O_PROMPT_LEN_MAX: return parse_u32("--prompt-len-max", v, 1, 1u << 20, &a->prompt_len_max, err, n);
    case O_SHARED_PREFIX: return parse_u32("--shared-prefix", v, 0, 1u << 20, &a->shared_prefix, err, n);
    case O_PREFIX_GROUPS: return parse_u32("--prefix-groups", v, 1, 1u << 16, &a->prefix_groups, err, n);
    case O_NO_HELLO: a->no_hello = true; return 0;
    case 'h': a->help = true; return 0;
    }
    return usage(err, n, "internal: unhandled option %d", o);
}

int probe_parse(int argc, char **argv, struct probe_args *a, char *err, size_t n)
{
    memset(a, 0, sizeof *a);
    a->gp = dsd_client_generate_default_params();
    a->timeout_ms = -1;
    a->count = 1;
    a->concurrency = 8;
    a->requests = 64;
    a->prompt_len = 128;
    a->prefix_groups = 1;
    err[0] = '\0';

    static const struct option global[] = {
        {"socket", required_argument, 0, 's'}, {"json", no_argument, 0, 'j'},
        {"timeout", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    opterr = 0;
    optind = 0;                         /* glibc: 0 re-initializes (tests parse many times) */
    int o;
    while ((o = getopt_long(argc, argv, "+:s:jt:h", global, NULL)) != -1) {
        switch (o) {
        case 's': a->socket = optarg; break;
        case 'j': a->json = true; break;
        case 't':
            if (parse_i32("--timeout", optarg, 1, INT32_MAX, &a->timeout_ms, err, n) < 0)
                return -1;
            break;
        case 'h': a->help = true; return 0;
        case ':': return usage(err, n, "%s needs a value", argv[optind - 1]);
        default: return usage(err, n, "unknown option %s (see --help)", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage(err, n, "no command given (see --help)");
    const char *name = argv[optind];
    for (int c = PROBE_PING; c <= PROBE_RAW; c++)
        if (strcmp(name, cmd_names[c]) == 0)
            a->cmd = (enum probe_cmd)c;
    if (a->cmd == PROBE_NONE)
        return usage(err, n, "unknown command \"%s\" (see --help)", name);

    const struct option *co = opts_plain;
    switch (a->cmd) {
    case PROBE_PING: co = opts_ping; break;
    case PROBE_GENERATE: co = opts_generate; break;
    case PROBE_CHAT: co = opts_chat; break;
    case PROBE_TOKENIZE: co = opts_tokenize; break;
    case PROBE_BENCH: co = opts_bench; break;
    case PROBE_RAW: co = opts_raw; break;
    case PROBE_STATS: co = opts_stats; break;
    default: break;
    }
    /* The command's own options: parse argv[optind..] as a fresh vector. */
    int cargc = argc - optind;
    char **cargv = argv + optind;
    optind = 0;
    while ((o = getopt_long(cargc, cargv, ":h", co, NULL)) != -1) {
        if (o == ':')
            return usage(err, n, "%s %s needs a value", name, cargv[optind - 1]);
        if (o == '?')
            return usage(err, n, "%s: unknown option %s (see %s --help)", name,
                         cargv[optind - 1], name);
        if (command_opt(a, o, optarg, err, n) < 0)
            return -1;
    }
    if (a->help)
        return 0;
    int rest = cargc - optind;
    char **pos = cargv + optind;

    switch (a->cmd) {
    case PROBE_TOKENIZE:
        if (rest != 1)
            return usage(err, n, "tokenize takes one TEXT argument (quote it)");
        a->text = pos[0];
        return 0;
    case PROBE_RAW:
        if (rest != 1)
            return usage(err, n, "raw takes one JSON argument (quote it)");
        a->raw_json = pos[0];
        return 0;
    default:
        if (rest)
            return usage(err, n, "%s: unexpected argument \"%s\"", name, pos[0]);
    }
    if (a->gp.top_logprobs && !a->gp.logprobs)
        return usage(err, n, "--logprobs is needed for alternatives");
    if (a->cmd == PROBE_GENERATE) {
        if (!a->prompt == !a->prompt_tokens)
            return usage(err, n, "generate needs exactly one of --prompt and --prompt-tokens");
        if (a->no_special && !a->prompt)
            return usage(err, n, "--no-special goes with --prompt");
        if (a->gp.thinking)
            return usage(err, n, "--thinking is for chat");
    }
    if (a->cmd == PROBE_CHAT && !a->message)
        return usage(err, n, "chat needs --message TEXT");
    if (a->cmd == PROBE_BENCH && a->concurrency > a->requests)
        a->concurrency = a->requests;
    a->gp.stop = a->n_stops ? a->stops : NULL;
    a->gp.n_stop = a->n_stops;
    a->gp.stop_token_ids = a->n_stop_ids ? a->stop_ids : NULL;
    a->gp.n_stop_token_ids = a->n_stop_ids;
    return 0;
}

void probe_args_free(struct probe_args *a)
{
    free(a->prompt_tokens);
    a->prompt_tokens = NULL;
}

int probe_exit_for(int err)
{
    switch (err) {
    case 0: return PROBE_EX_OK;
    case -ENOENT:
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -ECONNABORTED:
        return PROBE_EX_UNAVAILABLE;
    case -EACCES:
    case -EPERM:
        return PROBE_EX_NOPERM;
    case -EPROTO:
    case -EPROTONOSUPPORT:
        return PROBE_EX_PROTOCOL;
    case -EAGAIN:
    case -EBUSY:
    case -ESHUTDOWN:
    case -ETIMEDOUT:
        return PROBE_EX_TEMPFAIL;
    case -EINVAL:
        return PROBE_EX_FAIL;
    default:
        return PROBE_EX_FAIL;
    }
}
