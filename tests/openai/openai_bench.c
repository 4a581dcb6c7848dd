/*
 * openai_bench: deepseekd-openai's counterpart of `deepseekd-probe bench` (tools/probe/
 * probe_bench.c), for measuring what the HTTP gateway adds
 * (bench/results/2026-12-06-openai-gateway-overhead-cpu.md). C threads, each running streamed
 * /v1/completions requests one after another on fresh HTTP/1.1 connections: L random
 * prompt token ids, exactly M generated tokens (ignore_eos), the same statistics as the
 * probe: time to first token and the gaps between tokens (p50/p90/p99), tokens/s.
 *
 *   openai_bench HOST PORT MODEL [--concurrency C] [--requests N] [--prompt-len L]
 *                [--max-tokens M] [--seed S]
 *
 * A streamed chunk may carry several tokens (the daemon's event of one step holds all the
 * tokens a request got in that step); the bench counts chunks and spreads a chunk's gap
 * over tokens only when chunks and tokens agree, and says how many did.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct shared {
    const char *host, *model;
    int port, prompt_len, max_tokens, requests;
    atomic_int next, failed, mismatched;
    atomic_long tokens;
};

struct thread {
    struct shared *s;
    pthread_t th;
    uint64_t rng;
    double *ttft, *itl;
    size_t n_ttft, n_itl, cap_itl;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint32_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

static void push_itl(struct thread *t, double x)
{
    if (t->n_itl == t->cap_itl) {
        size_t c = t->cap_itl ? t->cap_itl * 2 : 1024;
        double *q = realloc(t->itl, c * sizeof *q);
        if (!q)
            return;
        t->itl = q;
        t->cap_itl = c;
    }
    t->itl[t->n_itl++] = x;
}

/* One streamed request. Returns the number of token chunks, or -1. */
static int one_request(struct thread *t, char *body, size_t body_len)
{
    struct shared *s = t->s;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port) };
    inet_pton(AF_INET, s->host, &a.sin_addr);
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n", s->host, body_len);
    double t0 = now_ms();
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 || write(fd, head, (size_t)hl) != hl ||
        write(fd, body, body_len) != (ssize_t)body_len) {
        close(fd);
        return -1;
    }
    /* Raw bytes -> dechunked payload -> SSE events ("data: ...\n\n"). */
    static __thread char raw[65536];
    char *pay = malloc(1 << 20);
    size_t pay_len = 0, pay_cap = 1 << 20, scan = 0;
    int state = 0;                  /* 0 headers, 1 size line, 2 data, 3 CRLF after data, 4 end */
    char line[64];
    size_t line_len = 0, left = 0;
    int chunks = 0;
    bool done = false, ok_status = false;
    double last = 0;
    char hdr[4096];
    size_t hdr_len = 0;
    while (!done && pay) {
        ssize_t n = read(fd, raw, sizeof raw);
        if (n <= 0)
            break;
        double tn = now_ms();
        for (ssize_t i = 0; i < n; i++) {
            char c = raw[i];
            switch (state) {
            case 0:
                if (hdr_len < sizeof hdr - 1)
                    hdr[hdr_len++] = c;
                if (hdr_len >= 4 && memcmp(hdr + hdr_len - 4, "\r\n\r\n", 4) == 0) {
                    hdr[hdr_len] = 0;
                    ok_status = strncmp(hdr, "HTTP/1.1 200", 12) == 0;
                    state = 1;
                }
                break;
            case 1:
                if (c == '\n') {
                    line[line_len] = 0;
                    left = strtoul(line, NULL, 16);
                    line_len = 0;
                    state = left ? 2 : 4;
                } else if (c != '\r' && line_len < sizeof line - 1) {
                    line[line_len++] = c;
                }
                break;
            case 2:
                if (pay_len == pay_cap) {
                    pay_cap *= 2;
                    char *p2 = realloc(pay, pay_cap);
                    if (!p2) {
                        free(pay);
                        pay = NULL;
                        close(fd);
                        return -1;
                    }
                    pay = p2;
                }
                pay[pay_len++] = c;
                if (--left == 0)
                    state = 3;
                break;
            case 3:
                if (c == '\n')
                    state = 1;
                break;
            default:
                break;
            }
        }
        /* complete events in the payload */
        for (;;) {
            char *end = memmem(pay + scan, pay_len - scan, "\n\n", 2);
            if (!end)
                break;
            size_t ev_len = (size_t)(end - (pay + scan));
            char *ev = pay + scan;
            if (ev_len >= 12 && memcmp(ev, "data: [DONE]", 12) == 0) {
                done = true;
            } else if (memmem(ev, ev_len, "\"text\":\"", 8) && !memmem(ev, ev_len, "\"text\":\"\"", 9)) {
                if (chunks == 0)
                    t->ttft[t->n_ttft++] = tn - t0;
                else
                    push_itl(t, tn - last);
                last = tn;
                chunks++;
            }
            scan = (size_t)(end - pay) + 2;
        }
        if (state == 4)
            done = true;
    }
    close(fd);
    free(pay);
    return done && ok_status ? chunks : -1;
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    struct shared *s = t->s;
    size_t cap = (size_t)s->prompt_len * 8 + 512;
    char *body = malloc(cap);
    for (;;) {
        int k = atomic_fetch_add(&s->next, 1);
        if (k >= s->requests || !body)
            break;
        size_t n = (size_t)snprintf(body, cap, "{\"model\":\"%s\",\"stream\":true,\"ignore_eos\":true,\"max_tokens\":%d,"
                                    "\"seed\":%d,\"prompt\":[", s->model, s->max_tokens, k);
        for (int i = 0; i < s->prompt_len; i++)     /* fresh random ids: no prefix-cache hits */
            n += (size_t)snprintf(body + n, cap - n, "%s%u", i ? "," : "", 1000 + next_rand(&t->rng) % 100000);
        n += (size_t)snprintf(body + n, cap - n, "]}");
        size_t itl_before = t->n_itl;
        int chunks = one_request(t, body, n);
        if (chunks < 0) {
            atomic_fetch_add(&s->failed, 1);
            continue;
        }
        atomic_fetch_add(&s->tokens, s->max_tokens);
        if (chunks != s->max_tokens) {
            atomic_fetch_add(&s->mismatched, 1);
            t->n_itl = itl_before;      /* gaps of multi-token chunks are not per token */
        }
    }
    free(body);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    return n ? v[(size_t)(p * (double)(n - 1) + 0.5)] : 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT MODEL [--concurrency C] [--requests N] [--prompt-len L] "
                        "[--max-tokens M] [--seed S]\n", argv[0]);
        return 64;
    }
    struct shared s = { .host = argv[1], .port = atoi(argv[2]), .model = argv[3], .prompt_len = 128,
                        .max_tokens = 64, .requests = 64 };
    int conc = 8;
    uint64_t seed = 1;
    for (int i = 4; i + 1 < argc; i += 2) {
        long v = atol(argv[i + 1]);
        if (strcmp(argv[i], "--concurrency") == 0) conc = (int)v;
        else if (strcmp(argv[i], "--requests") == 0) s.requests = (int)v;
        else if (strcmp(argv[i], "--prompt-len") == 0) s.prompt_len = (int)v;
        else if (strcmp(argv[i], "--max-tokens") == 0) s.max_tokens = (int)v;
        else if (strcmp(argv[i], "--seed") == 0) seed = (uint64_t)v;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 64;
        }
    }
    if (conc < 1 || s.requests < 1 || s.prompt_len < 1 || s.max_tokens < 2)
        return 64;
    struct thread *t = calloc((size_t)conc, sizeof *t);
    double t0 = now_ms();
    for (int i = 0; i < conc; i++) {
        t[i].s = &s;
        t[i].rng = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i + 1;
        t[i].ttft = calloc((size_t)s.requests, sizeof(double));
        pthread_create(&t[i].th, NULL, thread_main, &t[i]);
    }
    size_t n_ttft = 0, n_itl = 0;
    for (int i = 0; i < conc; i++) {
        pthread_join(t[i].th, NULL);
        n_ttft += t[i].n_ttft;
        n_itl += t[i].n_itl;
    }
    double wall = (now_ms() - t0) / 1e3;
    double *ttft = malloc((n_ttft + 1) * sizeof *ttft), *itl = malloc((n_itl + 1) * sizeof *itl);
    size_t a = 0, b = 0;
    for (int i = 0; i < conc; i++) {
        memcpy(ttft + a, t[i].ttft, t[i].n_ttft * sizeof *ttft);
        a += t[i].n_ttft;
        if (t[i].n_itl)
            memcpy(itl + b, t[i].itl, t[i].n_itl * sizeof *itl);
        b += t[i].n_itl;
    }
    qsort(ttft, n_ttft, sizeof *ttft, cmp);
    qsort(itl, n_itl, sizeof *itl, cmp);
    printf("%d requests (%d failed), concurrency %d, prompt %d, %d tokens each, through deepseekd-openai "
           "(HTTP, SSE); %d of them had multi-token chunks (their gaps are left out)\n",
           s.requests, atomic_load(&s.failed), conc, s.prompt_len, s.max_tokens, atomic_load(&s.mismatched));
    printf("time to first token  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n", pct(ttft, n_ttft, .5),
           pct(ttft, n_ttft, .9), pct(ttft, n_ttft, .99));
    printf("inter-token latency  p50 %8.3f ms  p90 %8.3f ms  p99 %8.3f ms\n", pct(itl, n_itl, .5), pct(itl, n_itl, .9),
           pct(itl, n_itl, .99));
    printf("throughput           %.1f tokens/s (%ld tokens in %.2f s)\n", (double)atomic_load(&s.tokens) / wall,
           atomic_load(&s.tokens), wall);
    return atomic_load(&s.failed) ? 1 : 0;
}
