/*
 * The prefix cache and its tiers in the real daemon (docs/KV_CACHE.md §7), on the CPU
 * backend, every output checked against the in-process engine's greedy tokens:
 *   test_prefix_cache DEEPSEEKD PROBE MODEL_DIR
 *  - a repeated prompt: the second request reports its 3 full pages cached, prefills only
 *    the rest (stats prove the prefix was computed once) and gives the same tokens;
 *  - a multi-turn chat: turn 2 (turn 1's prompt + answer + more) reuses turn 1's pages;
 *  - a request arriving while another with the same prompt still decodes shares the pages
 *    the running one completed (published as each completed), and 8 requests with one
 *    4-page prefix arriving together compute it once (the others wait for its pages);
 *  - a client killed mid-prefill leaves no page locked or in use;
 *  - `deepseekd-probe stats --prometheus` parses as the Prometheus text format: names,
 *    TYPE lines, counters ending in _total, tier labels, cumulative histogram buckets;
 *  - a restarted daemon serves the prefix from the disk tier (cached > 0, disk hits) with
 *    the same tokens;
 *  - a corrupted cache file: the damaged pages are dropped with a warning, nothing wrong is
 *    served, the tokens are still right;
 *  - a slow disk (every page write takes 2 s) does not slow requests (writes run on the tier
 *    I/O thread); the daemon killed in the middle of a write restarts, serves the pages
 *    written whole from disk, never the cut one, and the tokens are right;
 *  - device pressure: a pool of 10 pages and 64 concurrent requests (mixed lengths, shared
 *    prefixes, distinct tails): pages move to the host tier, sequences are preempted and
 *    resume, every request completes with exactly the tokens of an unconstrained run;
 *  - a cache directory that cannot be used: the daemon starts and serves without the tier.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "engine_harness.h"
#include "model.h"
#include "test.h"

static const char *g_bin, *g_probe, *g_model;
static struct dsd_model *g_m;
static char g_cache[256];           /* the disk tier's directory, kept across restarts */
static int g_tiers[3];              /* the last done's cached tokens per tier */

static void make_prompt(uint32_t *p, int n, int seed)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint32_t)((seed * 7919 + i * 104729 + 17) % (g_m->cfg.vocab_size - 2) + 2);
}

static void reference(const uint32_t *prompt, int np, int n, uint32_t *out)
{
    harness_greedy(g_m, (const int32_t *)prompt, np, n, (int32_t *)out);
}

/* Runs one greedy request on fd; fills got (n ids) and *cached. Returns 0 or -1. */
static int generate(int fd, uint64_t id, const uint32_t *prompt, int np, int n, uint32_t *got, int *cached)
{
    struct dsd_ipc_msg m = raw_generate_msg(id, prompt, np, n), done;
    if (raw_send(fd, &m) != 0)
        return -1;
    int k = 0;
    if (raw_wait_done(fd, id, &done, got, &k, n, 120000) != DSD_IPC_DONE)
        return -1;
    *cached = (int)done.done.usage.cached;
    g_tiers[0] = (int)done.done.usage.cached_device;
    g_tiers[1] = (int)done.done.usage.cached_host;
    g_tiers[2] = (int)done.done.usage.cached_disk;
    if (done.done.usage.cached && (!done.done.usage.has_tiers || (uint32_t)(g_tiers[0] + g_tiers[1] + g_tiers[2]) !=
                                                                  done.done.usage.cached))
        *cached = -2;                   /* the per-tier split must add up */
    int ok = k == n && done.done.usage.prompt == (uint32_t)np;
    dsd_ipc_msg_free(&done);
    return ok ? 0 : -1;
}

/* A daemon with a slow disk (test_disk_write_delay_ms) when write_delay is not NULL. */
static int start_slow(struct daemon *d, const char *pages, const char *host_gb, const char *dir,
                      const char *write_delay)
{
    const char *extra[] = { "--threads", "2", "--kv-pages", pages, "--host-cache-gb", host_gb,
                            "--disk-cache-dir", dir, "--disk-cache-gb", "0.02", "--max-batch", "8",
                            "--prefill-chunk", "64", "--max-inflight", "64",
                            write_delay ? "--test-disk-write-delay-ms" : NULL, write_delay, NULL };
    return daemon_start(d, g_bin, g_model, extra, 120);
}

static int start(struct daemon *d, const char *pages, const char *host_gb, const char *dir)
{
    return start_slow(d, pages, host_gb, dir, NULL);
}

static bool log_contains(const struct daemon *d, const char *what)
{
    FILE *f = fopen(d->log, "r");
    if (!f)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

/* ---- one daemon: repeated prompt, chat turns, killed client, Prometheus ----------------- */

static struct daemon g_d;

/* kv_pages_used once the engine has published the counts after the last step: the `done`
 * events go out during a step, the counts after it (a loaded machine widens the gap). Polls
 * for up to 5 s and returns the last value read. */
static int64_t pages_used_settled(int fd)
{
    int64_t used = raw_stat(fd, "kv_pages_used");
    for (int i = 0; i < 250 && used != 0; i++) {
        usleep(20000);
        used = raw_stat(fd, "kv_pages_used");
    }
    return used;
}

TEST(repeated_prompt_is_computed_once)
{
    enum { NP = 200, NT = 8 };
    uint32_t prompt[NP], want[NT], got[NT];
    make_prompt(prompt, NP, 1);
    reference(prompt, NP, NT, want);
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    int cached = -1;
    int64_t pre0 = raw_stat(fd, "tokens_prefilled_total"), hits0 = raw_stat(fd, "kv_cache_device_hits_total");
    ASSERT_EQ_INT(generate(fd, 1, prompt, NP, NT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_EQ_INT(cached, 0);
    ASSERT_EQ_INT(raw_stat(fd, "tokens_prefilled_total") - pre0, NP);
    /* the same prompt again: 3 whole pages (192 tokens) shared, 8 computed */
    int64_t pre1 = raw_stat(fd, "tokens_prefilled_total");
    ASSERT_EQ_INT(generate(fd, 2, prompt, NP, NT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_EQ_INT(cached, 192);
    ASSERT_EQ_INT(raw_stat(fd, "tokens_prefilled_total") - pre1, NP - 192);
    ASSERT_EQ_INT(raw_stat(fd, "kv_cache_device_hits_total") - hits0, 3);
    ASSERT_EQ_INT(g_tiers[0], 192);     /* done.usage.cached_device */
    ASSERT_EQ_INT(pages_used_settled(fd), 0);
    close(fd);
}

TEST(chat_turn_reuses_the_previous_turn)
{
    enum { P1 = 130, G1 = 70, EXTRA = 40, NT = 6 };
    uint32_t turn1[P1], answer[G1], turn2[P1 + G1 + EXTRA], want[NT], got[G1];
    make_prompt(turn1, P1, 2);
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    int cached = -1;
    ASSERT_EQ_INT(generate(fd, 3, turn1, P1, G1, answer, &cached), 0);
    /* turn 2: the whole conversation so far, then the next message */
    memcpy(turn2, turn1, sizeof turn1);
    memcpy(turn2 + P1, answer, sizeof answer);
    make_prompt(turn2 + P1 + G1, EXTRA, 3);
    reference(turn2, P1 + G1 + EXTRA, NT, want);
    ASSERT_EQ_INT(generate(fd, 4, turn2, P1 + G1 + EXTRA, NT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    /* turn 1 computed 199 tokens (its last answer token was never fed back): 3 pages */
    ASSERT_EQ_INT(cached, 192);
    close(fd);
}

TEST(client_killed_mid_prefill_leaves_no_locked_pages)
{
    enum { NP = 900 };
    uint32_t prompt[NP];
    make_prompt(prompt, NP, 4);
    /* first the prefix is cached, so the killed request holds locked pages while it runs */
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    uint32_t got[2];
    int cached;
    ASSERT_EQ_INT(generate(fd, 5, prompt, 200, 2, got, &cached), 0);
    pid_t child = fork();
    if (child == 0) {
        int c = raw_connect(&g_d);
        struct dsd_ipc_msg m = raw_generate_msg(1, prompt, NP, 50);
        raw_send(c, &m);
        pause();
        _exit(0);
    }
    /* wait until it is prefilling (running, holding pages), then kill it */
    int64_t used = 0;
    for (int i = 0; i < 400 && used <= 0; i++) {
        usleep(20000);
        used = raw_stat(fd, "kv_pages_used");
    }
    ASSERT_TRUE(used > 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    int64_t running = 1;
    for (int i = 0; i < 500 && (running || used); i++) {
        usleep(20000);
        running = raw_stat(fd, "requests_running") + raw_stat(fd, "requests_waiting");
        used = raw_stat(fd, "kv_pages_used");
    }
    ASSERT_EQ_INT(running, 0);
    ASSERT_EQ_INT(used, 0);             /* every page free or the cache's, none locked */
    close(fd);
}

TEST(a_running_request_shares_its_completed_pages)
{
    enum { NP = 200, NT = 8 };
    uint32_t prompt[NP], want[NT], got[NT];
    make_prompt(prompt, NP, 21);
    reference(prompt, NP, NT, want);
    int fa = raw_connect(&g_d), fd = raw_connect(&g_d);
    ASSERT_TRUE(fa >= 0 && fd >= 0);
    int64_t pub0 = raw_stat(fd, "kv_cache_published_total");
    /* A: the prompt, then a long generation; wait for its first token (prompt computed) */
    struct dsd_ipc_msg m = raw_generate_msg(30, prompt, NP, 3000), r;
    ASSERT_EQ_INT(raw_send(fa, &m), 0);
    int first = 0;
    for (int i = 0; i < 100 && !first; i++) {
        if (raw_recv(fa, &r, 1000) != 0)
            continue;
        first = r.type == DSD_IPC_TOKENS;
        dsd_ipc_msg_free(&r);
    }
    ASSERT_TRUE(first);
    ASSERT_TRUE(raw_stat(fd, "kv_cache_published_total") - pub0 >= 3);
    /* B, the same prompt, while A decodes: A's 3 full pages shared, 8 tokens computed */
    int64_t pre = raw_stat(fd, "tokens_prefilled_total");
    int cached = -1;
    ASSERT_EQ_INT(generate(fd, 31, prompt, NP, NT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_EQ_INT(cached, 192);
    ASSERT_EQ_INT(raw_stat(fd, "tokens_prefilled_total") - pre, NP - 192);
    ASSERT_TRUE(raw_stat(fd, "requests_running") >= 1);        /* A still runs */
    close(fa);                                                  /* A is cancelled */
    ASSERT_EQ_INT(pages_used_settled(fd), 0);
    close(fd);
}

TEST(requests_arriving_together_compute_their_prefix_once)
{
    /* 8 prompts: one 256-token prefix (4 pages), distinct 40-token tails */
    enum { S = 8, PRE = 256, NP = PRE + 40, NT = 6 };
    static uint32_t prompts[S][NP], want[S][NT];
    uint32_t prefix[PRE];
    make_prompt(prefix, PRE, 40);
    for (int i = 0; i < S; i++) {
        make_prompt(prompts[i], NP, 41 + i);
        memcpy(prompts[i], prefix, sizeof prefix);
        reference(prompts[i], NP, NT, want[i]);
    }
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    int64_t pre = raw_stat(fd, "tokens_prefilled_total"), waits = raw_stat(fd, "kv_cache_waits_total");
    int fds[S];
    for (int i = 0; i < S; i++) {
        fds[i] = raw_connect(&g_d);
        ASSERT_TRUE(fds[i] >= 0);
        struct dsd_ipc_msg m = raw_generate_msg(40 + (uint64_t)i, prompts[i], NP, NT);
        ASSERT_EQ_INT(raw_send(fds[i], &m), 0);
    }
    int exact = 0, shared = 0;
    for (int i = 0; i < S; i++) {
        uint32_t got[NT + 4];
        int n = 0;
        struct dsd_ipc_msg done;
        if (raw_wait_done(fds[i], 40 + (uint64_t)i, &done, got, &n, NT + 4, 120000) == DSD_IPC_DONE) {
            exact += n == NT && memcmp(got, want[i], sizeof want[i]) == 0;
            shared += done.done.usage.cached == PRE;
            dsd_ipc_msg_free(&done);
        }
        close(fds[i]);
    }
    int64_t prefilled = raw_stat(fd, "tokens_prefilled_total") - pre;
    printf("  %d/%d exact, %d shared the prefix, %lld tokens prefilled, %lld waits\n", exact, S, shared,
           (long long)prefilled, (long long)(raw_stat(fd, "kv_cache_waits_total") - waits));
    ASSERT_EQ_INT(exact, S);
    /* the prefix once, every tail once: nobody computed a page another was computing */
    ASSERT_EQ_INT(prefilled, PRE + S * (NP - PRE));
    ASSERT_EQ_INT(shared, S - 1);
    ASSERT_TRUE(raw_stat(fd, "kv_cache_waits_total") > waits);
    ASSERT_EQ_INT(pages_used_settled(fd), 0);
    close(fd);
}

/* Checks one line of the text format; updates the family table. Returns NULL or what is wrong. */
struct fam {
    char name[128], type[16];
    double last_bucket;
    bool seen_inf;
    double inf_value;
};

static const char *prom_line(const char *line, struct fam *fams, int *nf, int *samples)
{
    static regex_t re_type, re_sample;
    static bool init;
    if (!init) {
        regcomp(&re_type, "^# TYPE (deepseekd_[a-z0-9_]+) (counter|gauge|histogram)$", REG_EXTENDED);
        regcomp(&re_sample,
                "^(deepseekd_[a-z0-9_]+)(\\{[a-z_]+=\"[^\"]*\"(,[a-z_]+=\"[^\"]*\")*\\})? "
                "(-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?|\\+Inf|NaN)$",
                REG_EXTENDED);
        init = true;
    }
    regmatch_t g[8];
    if (line[0] == '#') {
        if (regexec(&re_type, line, 3, g, 0) != 0)
            return "a comment that is not a # TYPE line";
        struct fam *f = &fams[(*nf)++];
        memset(f, 0, sizeof *f);
        snprintf(f->name, sizeof f->name, "%.*s", (int)(g[1].rm_eo - g[1].rm_so), line + g[1].rm_so);
        snprintf(f->type, sizeof f->type, "%.*s", (int)(g[2].rm_eo - g[2].rm_so), line + g[2].rm_so);
        for (int i = 0; i < *nf - 1; i++)
            if (strcmp(fams[i].name, f->name) == 0)
                return "a family declared twice";
        if (strcmp(f->type, "counter") == 0 && !strstr(f->name + strlen(f->name) - 6, "_total"))
            return "a counter not named ..._total";
        if (strcmp(f->type, "counter") != 0 && strstr(f->name, "_total"))
            return "a non-counter named ..._total";
        return NULL;
    }
    if (regexec(&re_sample, line, 8, g, 0) != 0)
        return "a sample line that does not parse";
    if (*nf == 0)
        return "a sample before any TYPE line";
    (*samples)++;
    struct fam *f = &fams[*nf - 1];
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(g[1].rm_eo - g[1].rm_so), line + g[1].rm_so);
    double v = strtod(line + g[4].rm_so, NULL);
    if (strcmp(f->type, "histogram") != 0)
        return strcmp(name, f->name) == 0 ? NULL : "a sample outside its family";
    size_t fl = strlen(f->name);
    if (strncmp(name, f->name, fl) != 0)
        return "a histogram sample outside its family";
    const char *suf = name + fl;
    if (strcmp(suf, "_bucket") == 0) {
        if (f->seen_inf)
            return "a bucket after le=\"+Inf\"";
        if (v < f->last_bucket)
            return "histogram buckets not cumulative";
        f->last_bucket = v;
        if (strstr(line, "le=\"+Inf\"")) {
            f->seen_inf = true;
            f->inf_value = v;
        }
        return NULL;
    }
    if (strcmp(suf, "_sum") == 0)
        return f->seen_inf ? NULL : "_sum before the +Inf bucket";
    if (strcmp(suf, "_count") == 0)
        return f->seen_inf && v == f->inf_value ? NULL : "_count differs from the +Inf bucket";
    return "an unknown histogram sample";
}

TEST(prometheus_output_parses)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --socket '%s' stats --prometheus", g_probe, g_d.socket);
    FILE *p = popen(cmd, "r");
    ASSERT_TRUE(p != NULL);
    static struct fam fams[512];
    int nf = 0, samples = 0, bad = 0;
    char line[1024];
    bool ttft = false, hits_device = false, pages_host = false;
    while (fgets(line, sizeof line, p) && nf < 511) {
        line[strcspn(line, "\n")] = 0;
        const char *why = prom_line(line, fams, &nf, &samples);
        if (why && bad++ < 5)
            printf("  bad line \"%s\": %s\n", line, why);
        ttft |= strncmp(line, "deepseekd_time_to_first_token_seconds_count ", 44) == 0 && atoi(line + 44) > 0;
        hits_device |= strncmp(line, "deepseekd_kv_cache_hits_total{tier=\"device\"} ", 45) == 0;
        pages_host |= strncmp(line, "deepseekd_kv_cache_pages{tier=\"host\"} ", 38) == 0;
    }
    ASSERT_EQ_INT(pclose(p), 0);
    ASSERT_EQ_INT(bad, 0);
    ASSERT_TRUE(samples > 50);
    ASSERT_TRUE(ttft);                  /* the requests above were observed */
    ASSERT_TRUE(hits_device);
    ASSERT_TRUE(pages_host);
    bool hist_itl = false;
    for (int i = 0; i < nf; i++)
        hist_itl |= strcmp(fams[i].name, "deepseekd_inter_token_latency_seconds") == 0 &&
                    strcmp(fams[i].type, "histogram") == 0 && fams[i].seen_inf;
    ASSERT_TRUE(hist_itl);
    /* and the checker itself rejects what it must */
    int n2 = 0, s2 = 0;
    struct fam f2[4];
    ASSERT_TRUE(prom_line("# TYPE deepseekd_x_total gauge", f2, &n2, &s2) != NULL);
    n2 = 0;
    ASSERT_TRUE(prom_line("# TYPE deepseekd_y counter", f2, &n2, &s2) != NULL);
    n2 = 0;
    ASSERT_TRUE(prom_line("deepseekd_z 1", f2, &n2, &s2) != NULL);
    ASSERT_TRUE(prom_line("# TYPE deepseekd_h histogram", f2, &n2, &s2) == NULL);
    ASSERT_TRUE(prom_line("deepseekd_h_bucket{le=\"1\"} 3", f2, &n2, &s2) == NULL);
    ASSERT_TRUE(prom_line("deepseekd_h_bucket{le=\"+Inf\"} 2", f2, &n2, &s2) != NULL);
}

/* ---- restarts: the disk tier -------------------------------------------------------- */

enum { RP = 260, RT = 8 };
static uint32_t g_rprompt[RP], g_rwant[RT];

TEST(restart_serves_the_prefix_from_disk)
{
    make_prompt(g_rprompt, RP, 7);
    reference(g_rprompt, RP, RT, g_rwant);
    int fd = raw_connect(&g_d);
    ASSERT_TRUE(fd >= 0);
    uint32_t got[RT];
    int cached = -1;
    ASSERT_EQ_INT(generate(fd, 8, g_rprompt, RP, RT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, g_rwant, sizeof got) == 0);
    ASSERT_TRUE(raw_stat(fd, "kv_cache_disk_writes_total") >= 4);
    close(fd);
    ASSERT_EQ_INT(daemon_stop(&g_d), 0);

    struct daemon d2;
    ASSERT_EQ_INT(start(&d2, "64", "0.002", g_cache), 0);
    fd = raw_connect(&d2);
    ASSERT_TRUE(fd >= 0);
    ASSERT_TRUE(raw_stat(fd, "kv_cache_disk_pages") >= 4);
    int64_t pre0 = raw_stat(fd, "tokens_prefilled_total");
    memset(got, 0, sizeof got);
    ASSERT_EQ_INT(generate(fd, 9, g_rprompt, RP, RT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, g_rwant, sizeof got) == 0);
    ASSERT_EQ_INT(cached, 256);         /* 4 whole pages of 260 tokens, all from disk */
    ASSERT_EQ_INT(g_tiers[2], 256);     /* done.usage.cached_disk */
    ASSERT_EQ_INT(g_tiers[0] + g_tiers[1], 0);
    ASSERT_EQ_INT(raw_stat(fd, "kv_cache_disk_hits_total"), 4);
    ASSERT_EQ_INT(raw_stat(fd, "kv_cache_read_ahead_pages_total"), 4);     /* read ahead, then reloaded */
    ASSERT_EQ_INT(raw_stat(fd, "tokens_prefilled_total") - pre0, RP - 256);
    close(fd);
    if (test_failures_total)
        daemon_print_log(&d2);
    ASSERT_EQ_INT(daemon_stop(&d2), 0);
}

/* The slow disk's delay per write. A request's own time is absolute (a loaded 2-core CI machine
 * took 1.9 s for one that takes 0.14 s alone), so the delay is long enough that a request which
 * waits for no write ends well inside one write's delay even there; under ASan/UBSan the daemon
 * computes several times slower, so the delay doubles. The kill below is placed by the writes
 * themselves (right after the first write is counted, while the second sleeps between its
 * arenas and its header), never by elapsed time. */
#if defined(__SANITIZE_ADDRESS__)
#define SLOW_WRITE_MS 16000
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLOW_WRITE_MS 16000
#endif
#endif
#ifndef SLOW_WRITE_MS
#define SLOW_WRITE_MS 8000
#endif

TEST(slow_disk_writes_do_not_slow_requests_and_a_cut_write_is_never_served)
{
    enum { NP = 200, NT = 8 };
    char delay[16];
    snprintf(delay, sizeof delay, "%d", SLOW_WRITE_MS);
    uint32_t prompt[NP], want[NT], got[NT];
    make_prompt(prompt, NP, 61);
    reference(prompt, NP, NT, want);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/slow", g_cache);
    struct daemon d;
    ASSERT_EQ_INT(start_slow(&d, "64", "0.002", dir, delay), 0);
    int fd = raw_connect(&d);
    ASSERT_TRUE(fd >= 0);
    /* 3 pages go to disk, SLOW_WRITE_MS each on the I/O thread: the request does not wait */
    int cached = -1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_EQ_INT(generate(fd, 60, prompt, NP, NT, got, &cached), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("  a request with 3 page writes of %d ms queued took %.0f ms\n", SLOW_WRITE_MS, ms);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_TRUE(ms < 0.95 * SLOW_WRITE_MS);
    /* the first write began during the request, so it cannot have ended yet */
    ASSERT_EQ_INT(raw_stat(fd, "kv_cache_disk_writes_total"), 0);
    /* the same prompt again meanwhile: served from the device, right */
    ASSERT_EQ_INT(generate(fd, 61, prompt, NP, NT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_EQ_INT(cached, 192);
    /* once the first write is counted (the stats lag the disk by at most the engine's 1 s idle
     * wait), the I/O thread is on the second, which writes its arenas and then sleeps a whole
     * delay before its header: killed a tenth of a delay later, well inside that sleep */
    int64_t writes = 0;
    for (int waited = 0; waited < 3 * SLOW_WRITE_MS && (writes = raw_stat(fd, "kv_cache_disk_writes_total")) < 1;
         waited += 5)
        usleep(5000);
    ASSERT_EQ_INT(writes, 1);
    usleep(SLOW_WRITE_MS * 100);
    close(fd);
    kill(d.pid, SIGKILL);
    waitpid(d.pid, NULL, 0);
    d.pid = 0;
    struct daemon d2;
    ASSERT_EQ_INT(start(&d2, "64", "0.002", dir), 0);
    fd = raw_connect(&d2);
    ASSERT_TRUE(fd >= 0);
    int64_t stored = raw_stat(fd, "kv_cache_disk_pages");
    printf("  after the kill: %lld pages on disk\n", (long long)stored);
    ASSERT_EQ_INT(stored, 1);           /* the second was cut between its arenas and its header */
    ASSERT_EQ_INT(generate(fd, 62, prompt, NP, NT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, want, sizeof want) == 0);
    ASSERT_EQ_INT(cached, 64 * (int)stored);
    ASSERT_EQ_INT(g_tiers[2], 64 * (int)stored);       /* from disk */
    ASSERT_EQ_INT(raw_stat(fd, "kv_cache_disk_dropped_total"), 0);
    close(fd);
    if (test_failures_total)
        daemon_print_log(&d2);
    ASSERT_EQ_INT(daemon_stop(&d2), 0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", d.dir);
}

/* The cache file's path (the one kv-*.dsdkv in the directory). */
static int cache_file(char *out, size_t n)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls '%s'/kv-*.dsdkv 2>/dev/null | head -1", g_cache);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    out[0] = 0;
    if (!fgets(out, (int)n, p))
        out[0] = 0;
    pclose(p);
    out[strcspn(out, "\n")] = 0;
    return out[0] ? 0 : -1;
}

TEST(corrupted_cache_file_is_dropped_and_output_stays_right)
{
    char path[512];
    ASSERT_EQ_INT(cache_file(path, sizeof path), 0);
    int f = open(path, O_RDWR);
    ASSERT_TRUE(f >= 0);
    uint8_t hdr[64];
    ASSERT_EQ_INT((int)pread(f, hdr, sizeof hdr, 0), 64);
    uint64_t rec = 0;
    memcpy(&rec, hdr + 32, 8);          /* record bytes (docs/KV_CACHE.md §6.1) */
    struct stat st;
    ASSERT_EQ_INT(fstat(f, &st), 0);
    ASSERT_TRUE(rec > 4096 && (uint64_t)st.st_size >= 4096 + rec);
    /* flip a byte in the MLA arena of every stored page, one in the index-K arena too */
    int damaged = 0;
    for (uint64_t off = 4096; off + rec <= (uint64_t)st.st_size; off += rec) {
        uint8_t magic[8];
        if (pread(f, magic, 8, (off_t)off) != 8 || memcmp(magic, "DSDKVPAG", 8) != 0)
            continue;
        uint8_t b;
        uint64_t at = off + 4096 + 77 + (uint64_t)damaged * 13;
        if (damaged % 2)
            at = off + rec - 4096 - 11;      /* toward the end: index-K arena or padding */
        ASSERT_EQ_INT((int)pread(f, &b, 1, (off_t)at), 1);
        b ^= 0x5a;
        ASSERT_EQ_INT((int)pwrite(f, &b, 1, (off_t)at), 1);
        damaged++;
    }
    close(f);
    ASSERT_TRUE(damaged >= 4);

    struct daemon d3;
    ASSERT_EQ_INT(start(&d3, "64", "0.002", g_cache), 0);
    int fd = raw_connect(&d3);
    ASSERT_TRUE(fd >= 0);
    uint32_t got[RT];
    int cached = -1;
    ASSERT_EQ_INT(generate(fd, 10, g_rprompt, RP, RT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, g_rwant, sizeof got) == 0);
    ASSERT_EQ_INT(cached, 0);           /* the first page is damaged: nothing is served */
    ASSERT_TRUE(raw_stat(fd, "kv_cache_disk_dropped_total") >= 1);
    ASSERT_EQ_INT(raw_stat(fd, "kv_cache_disk_hits_total"), 0);
    /* computed again, written again: a second request hits the device tier */
    ASSERT_EQ_INT(generate(fd, 11, g_rprompt, RP, RT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, g_rwant, sizeof got) == 0);
    ASSERT_EQ_INT(cached, 256);
    close(fd);
    ASSERT_TRUE(log_contains(&d3, "dropped"));
    if (test_failures_total)
        daemon_print_log(&d3);
    ASSERT_EQ_INT(daemon_stop(&d3), 0);
}

TEST(unusable_cache_directory_does_not_stop_the_daemon)
{
    char file[300];
    snprintf(file, sizeof file, "%s/not-a-dir", g_cache);
    FILE *f = fopen(file, "w");
    ASSERT_TRUE(f != NULL);
    fclose(f);
    struct daemon d4;
    ASSERT_EQ_INT(start(&d4, "64", "0", file), 0);
    int fd = raw_connect(&d4);
    ASSERT_TRUE(fd >= 0);
    uint32_t got[RT];
    int cached = -1;
    ASSERT_EQ_INT(generate(fd, 12, g_rprompt, RP, RT, got, &cached), 0);
    ASSERT_TRUE(memcmp(got, g_rwant, sizeof got) == 0);
    ASSERT_EQ_INT(cached, 0);
    ASSERT_EQ_INT(raw_stat(fd, "kv_cache_disk_slots"), 0);
    close(fd);
    ASSERT_TRUE(log_contains(&d4, "disk KV tier disabled"));
    ASSERT_EQ_INT(daemon_stop(&d4), 0);
}

/* ---- device pressure ------------------------------------------------------------------ */

TEST(device_pressure_demotes_to_host_and_every_request_completes)
{
    /* 9 usable pages; 64 concurrent requests of 70 .. 199 prompt tokens (2 .. 4 pages with
     * their output): three of every four share a 2-page prefix with one of 3 families, the
     * rest are unique; every tail is distinct */
    enum { S = 64, NPMAX = 200, NT = 24 };
    static uint32_t prompts[S][NPMAX], want[S][NT], family[3][128];
    int np[S];
    for (int f = 0; f < 3; f++)
        make_prompt(family[f], 128, 90 + f);
    for (int i = 0; i < S; i++) {
        np[i] = 70 + (i * 37) % 130;
        make_prompt(prompts[i], np[i], 100 + i);
        if (i % 4 && np[i] > 128)
            memcpy(prompts[i], family[i % 3], sizeof family[0]);
        reference(prompts[i], np[i], NT, want[i]);
    }
    struct daemon d5;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/pressure", g_cache);
    ASSERT_EQ_INT(start(&d5, "10", "0.01", dir), 0);
    int fds[S];
    for (int i = 0; i < S; i++) {
        fds[i] = raw_connect(&d5);
        ASSERT_TRUE(fds[i] >= 0);
        struct dsd_ipc_msg m = raw_generate_msg(100 + (uint64_t)i, prompts[i], np[i], NT);
        ASSERT_EQ_INT(raw_send(fds[i], &m), 0);
    }
    int exact = 0;
    for (int i = 0; i < S; i++) {
        uint32_t got[NT + 4];
        int n = 0;
        struct dsd_ipc_msg done;
        if (raw_wait_done(fds[i], 100 + (uint64_t)i, &done, got, &n, NT + 4, 300000) == DSD_IPC_DONE) {
            exact += done.done.finish == DSD_IPC_FINISH_LENGTH && n == NT && memcmp(got, want[i], sizeof want[i]) == 0;
            dsd_ipc_msg_free(&done);
        }
        close(fds[i]);
    }
    printf("  %d/%d requests under device pressure returned exactly their tokens\n", exact, S);
    ASSERT_EQ_INT(exact, S);
    int fd = raw_connect(&d5);
    int64_t pre = raw_stat(fd, "preemptions_total"), dem = raw_stat(fd, "kv_cache_device_demotions_total");
    int64_t hh = raw_stat(fd, "kv_cache_host_hits_total") + raw_stat(fd, "kv_cache_device_hits_total");
    printf("  preemptions %lld, device -> host %lld, pages reused %lld\n", (long long)pre, (long long)dem,
           (long long)hh);
    ASSERT_TRUE(pre > 0);
    ASSERT_TRUE(dem > 0);
    ASSERT_TRUE(hh > 0);
    ASSERT_EQ_INT(pages_used_settled(fd), 0);
    close(fd);
    if (test_failures_total)
        daemon_print_log(&d5);
    ASSERT_EQ_INT(daemon_stop(&d5), 0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_prefix_cache DEEPSEEKD PROBE MODEL_DIR\n");
        return 2;
    }
    g_bin = argv[1];
    g_probe = argv[2];
    g_model = argv[3];
    /* the in-process engine the daemon's output is compared with */
    if (!(g_m = harness_load(g_model, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 1)))
        return 1;
    snprintf(g_cache, sizeof g_cache, "/tmp/dsd-prefix-cache-XXXXXX");
    if (!mkdtemp(g_cache)) {
        perror("mkdtemp");
        return 1;
    }
    if (start(&g_d, "64", "0.002", g_cache))
        return 1;
    RUN(repeated_prompt_is_computed_once);
    RUN(chat_turn_reuses_the_previous_turn);
    RUN(client_killed_mid_prefill_leaves_no_locked_pages);
    RUN(a_running_request_shares_its_completed_pages);
    RUN(requests_arriving_together_compute_their_prefix_once);
    RUN(prometheus_output_parses);
    if (test_failures_total)
        daemon_print_log(&g_d);
    RUN(restart_serves_the_prefix_from_disk);
    RUN(corrupted_cache_file_is_dropped_and_output_stays_right);
    RUN(unusable_cache_directory_does_not_stop_the_daemon);
    RUN(slow_disk_writes_do_not_slow_requests_and_a_cut_write_is_never_served);
    RUN(device_pressure_demotes_to_host_and_every_request_completes);
    if (g_d.pid > 0)
        daemon_stop(&g_d);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_cache);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", g_cache);
    dsd_model_free(g_m);
    return test_report();
}
