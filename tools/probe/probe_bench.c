/*
 * tools/probe/probe_bench.c: `deepseekd-probe bench`. C threads share one connection (the
 * way an application uses libdeepseekd) and run N streaming requests in total; each records
 * its time to first token and the gaps between tokens. With --no-shm the same run goes
 * through socket frames only, so the two output paths can be compared.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "probe.h"

struct bench_shared {
    struct dsd_client *c;
    struct probe_args *a;
    atomic_uint next;
    atomic_uint errors;
    atomic_ullong tokens;
    atomic_ullong prompt_tokens, cached, cached_tier[3];
    uint64_t seed;
    int first_error;
    char first_msg[512];
    pthread_mutex_t lock;
};

struct bench_thread {
    struct bench_shared *s;
    pthread_t th;
    double *ttft;               /* ms, one per request */
    uint32_t n_ttft, cap_ttft;
    double *itl;                /* ms, one per token after the first */
    uint64_t n_itl, cap_itl;
    uint32_t *prompt;
    uint64_t rng;
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

static void push(double **v, uint64_t *n, uint64_t *cap, double x)
{
    if (*n == *cap) {
        uint64_t nc = *cap ? *cap * 2 : 1024;
        double *q = realloc(*v, nc * sizeof *q);
        if (!q)
            return;
        *v = q;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
}

static void *bench_main(void *arg)
{
    struct bench_thread *t = arg;
    struct bench_shared *s = t->s;
    struct probe_args *a = s->a;
    uint32_t vocab = dsd_client_get_facts(s->c)->vocab_size;
    uint32_t lo = vocab > 2000 ? 1000 : 1, span = vocab > lo + 1 ? vocab - lo - 1 : 1;
    for (;;) {
        unsigned k = atomic_fetch_add(&s->next, 1);
        if (k >= a->requests)
            break;
        /* A fresh random prompt per request (measuring the engine, not the prefix cache),
         * but for its shared prefix: one of prefix_groups fixed ones, from the seed alone. */
        uint32_t len = a->prompt_len;
        if (a->prompt_len_max > a->prompt_len)
            len += next_rand(&t->rng) % (a->prompt_len_max - a->prompt_len + 1);
        uint64_t prng = s->seed * 0x9e3779b97f4a7c15ull + k % a->prefix_groups + 7;
        for (uint32_t i = 0; i < len; i++)
            t->prompt[i] = lo + next_rand(i < a->shared_prefix ? &prng : &t->rng) % span;
        struct dsd_client_generate_params gp = a->gp;
        gp.prompt_tokens = t->prompt;
        gp.n_prompt_tokens = len;
        gp.ignore_eos = true;
        gp.detokenize = 0;
        struct dsd_client_request *r = NULL;
        struct dsd_client_error e;
        double t0 = now_ms(), last = 0;
        int rc = dsd_client_request_start(s->c, &gp, &r, &e);
        bool first = true;
        const struct dsd_client_event *ev;
        /* -t: the longest wait for the next event of a request (none: as long as it runs) */
        int32_t wait = a->timeout_ms > 0 ? a->timeout_ms : -1;
        while (rc >= 0 && (rc = dsd_client_request_next(r, wait, &ev, &e)) > 0) {
            if (ev->n_ids) {
                double now = now_ms();
                if (first) {
                    uint64_t n = t->n_ttft, cap = t->cap_ttft;
                    push(&t->ttft, &n, &cap, now - t0);
                    t->n_ttft = (uint32_t)n;
                    t->cap_ttft = (uint32_t)cap;
                    /* ids that came with the first one arrived together: gaps of 0 */
                    for (uint32_t i = 1; i < ev->n_ids; i++)
                        push(&t->itl, &t->n_itl, &t->cap_itl, 0);
                    first = false;
                } else {
                    for (uint32_t i = 0; i < ev->n_ids; i++)
                        push(&t->itl, &t->n_itl, &t->cap_itl, (now - last) / ev->n_ids);
                }
                last = now;
                atomic_fetch_add(&s->tokens, ev->n_ids);
            }
            if (ev->type == DSD_CLIENT_EVENT_DONE) {
                atomic_fetch_add(&s->prompt_tokens, len);
                atomic_fetch_add(&s->cached, ev->done.usage.cached);
                atomic_fetch_add(&s->cached_tier[0], ev->cached_tiers.device);
                atomic_fetch_add(&s->cached_tier[1], ev->cached_tiers.host);
                atomic_fetch_add(&s->cached_tier[2], ev->cached_tiers.disk);
                rc = ev->done.finish == DSD_CLIENT_FINISH_ERROR ? -EREMOTEIO : 0;
                if (rc)
                    snprintf(e.message, sizeof e.message, "%s", ev->done.error_message);
                break;
            }
        }
        if (rc == -ETIMEDOUT) {
            dsd_client_request_cancel(r);
            snprintf(e.message, sizeof e.message, "no reply from the daemon for %d ms (-t)", wait);
        }
        if (rc != 0 || first) {
            atomic_fetch_add(&s->errors, 1);
            pthread_mutex_lock(&s->lock);
            if (!s->first_error) {
                s->first_error = rc ? rc : -EPROTO;
                snprintf(s->first_msg, sizeof s->first_msg, "%s",
                         rc ? e.message : "a request produced no tokens");
            }
            pthread_mutex_unlock(&s->lock);
        }
        dsd_client_request_free(r);
    }
    return NULL;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double pct(const double *v, uint64_t n, double p)
{
    return n ? v[(uint64_t)((double)(n - 1) * p + 0.5)] : 0;
}

/* The speculative decoding counters (docs/SPECULATIVE.md): steps, drafts, accepted. */
static void spec_counters(struct dsd_client *c, int64_t v[3])
{
    static const char *const names[3] = { "spec_steps_total", "spec_draft_tokens_total",
                                          "spec_accepted_tokens_total" };
    v[0] = v[1] = v[2] = 0;
    struct dsd_client_stats *st;
    struct dsd_client_error e;
    if (dsd_client_get_stats(c, &st, &e) < 0)
        return;
    for (uint32_t i = 0; i < st->n_values; i++)
        for (int k = 0; k < 3; k++)
            if (!strcmp(st->values[i].name, names[k]))
                v[k] = st->values[i].i;
    dsd_client_stats_free(st);
}

int probe_bench(struct dsd_client *c, struct probe_args *a)
{
    int64_t spec0[3], spec1[3];
    spec_counters(c, spec0);
    struct bench_shared s = {.c = c, .a = a};
    pthread_mutex_init(&s.lock, NULL);
    struct bench_thread *t = calloc(a->concurrency, sizeof *t);
    if (!t)
        return PROBE_EX_FAIL;
    uint64_t seed = a->gp.has_seed ? a->gp.seed : 12345;
    s.seed = seed;
    uint32_t max_len = a->prompt_len_max > a->prompt_len ? a->prompt_len_max : a->prompt_len;
    double t0 = now_ms();
    uint32_t started = 0;
    for (uint32_t i = 0; i < a->concurrency; i++) {
        t[i].s = &s;
        t[i].rng = seed * 2654435761u + i + 1;
        t[i].prompt = malloc(max_len * sizeof(uint32_t));
        if (!t[i].prompt || pthread_create(&t[i].th, NULL, bench_main, &t[i]) != 0)
            break;
        started++;
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(t[i].th, NULL);
    double wall = (now_ms() - t0) / 1e3;
    spec_counters(c, spec1);
    const int64_t sp_steps = spec1[0] - spec0[0], sp_draft = spec1[1] - spec0[1], sp_acc = spec1[2] - spec0[2];
    const double sp_len = sp_steps > 0 ? (double)(sp_acc + sp_steps) / (double)sp_steps : 0.0;

    uint64_t n_ttft = 0, n_itl = 0;
    for (uint32_t i = 0; i < started; i++) {
        n_ttft += t[i].n_ttft;
        n_itl += t[i].n_itl;
    }
    double *ttft = malloc((n_ttft ? n_ttft : 1) * sizeof *ttft);
    double *itl = malloc((n_itl ? n_itl : 1) * sizeof *itl);
    uint64_t a1 = 0, a2 = 0;
    for (uint32_t i = 0; i < started && ttft && itl; i++) {
        if (t[i].n_ttft)
            memcpy(ttft + a1, t[i].ttft, t[i].n_ttft * sizeof *ttft);
        a1 += t[i].n_ttft;
        if (t[i].n_itl)
            memcpy(itl + a2, t[i].itl, t[i].n_itl * sizeof *itl);
        a2 += t[i].n_itl;
    }
    if (ttft && itl) {
        qsort(ttft, n_ttft, sizeof *ttft, cmp_double);
        qsort(itl, n_itl, sizeof *itl, cmp_double);
    }
    unsigned long long tokens = atomic_load(&s.tokens);
    unsigned errors = atomic_load(&s.errors);
    const struct dsd_client_info *f = dsd_client_get_facts(c);
    bool shm = f->shm_ring_count > 0 && a->gp.use_shm;
    unsigned long long ptok = atomic_load(&s.prompt_tokens), cached = atomic_load(&s.cached);
    unsigned long long ct[3] = {atomic_load(&s.cached_tier[0]), atomic_load(&s.cached_tier[1]),
                                atomic_load(&s.cached_tier[2])};
    if (a->json) {
        json_t *o = json_pack(
            "{s:i, s:i, s:i, s:i, s:i, s:b, s:f, s:I, s:f, s:{s:f, s:f, s:f}, s:{s:f, s:f, s:f}, "
            "s:{s:I, s:I, s:I, s:f}}",
            "requests", (json_int_t)a->requests, "errors", (json_int_t)errors, "concurrency",
            (json_int_t)a->concurrency, "prompt_len", (json_int_t)a->prompt_len, "max_tokens",
            (json_int_t)a->gp.max_tokens, "shm", shm, "wall_s", wall, "tokens",
            (json_int_t)tokens, "tokens_per_s", tokens / wall, "ttft_ms", "p50",
            pct(ttft, n_ttft, .5), "p90", pct(ttft, n_ttft, .9), "p99", pct(ttft, n_ttft, .99),
            "itl_ms", "p50", pct(itl, n_itl, .5), "p90", pct(itl, n_itl, .9), "p99",
            pct(itl, n_itl, .99), "speculative", "steps", (json_int_t)sp_steps, "draft_tokens",
            (json_int_t)sp_draft, "accepted_tokens", (json_int_t)sp_acc, "mean_accept_length", sp_len);
        json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)ptok));
        json_t *cj = json_pack("{s:I, s:I, s:I, s:I}", "total", (json_int_t)cached, "device", (json_int_t)ct[0],
                               "host", (json_int_t)ct[1], "disk", (json_int_t)ct[2]);
        json_object_set_new(o, "cached", cj);
        char *str = json_dumps(o, JSON_COMPACT);
        if (str)
            puts(str);
        free(str);
        json_decref(o);
    } else {
        printf("%u requests (%u failed), concurrency %u, prompt %u, %u tokens each, output "
               "through %s\n", a->requests, errors, a->concurrency, a->prompt_len,
               a->gp.max_tokens, shm ? "shm rings" : "socket frames");
        printf("time to first token  p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms\n",
               pct(ttft, n_ttft, .5), pct(ttft, n_ttft, .9), pct(ttft, n_ttft, .99));
        printf("inter-token latency  p50 %8.3f ms  p90 %8.3f ms  p99 %8.3f ms\n",
               pct(itl, n_itl, .5), pct(itl, n_itl, .9), pct(itl, n_itl, .99));
        printf("throughput           %.1f tokens/s (%llu tokens in %.2f s)\n", tokens / wall,
               tokens, wall);
        printf("prefix cache         %llu of %llu prompt tokens (device %llu, host %llu, disk %llu)\n", cached,
               ptok, ct[0], ct[1], ct[2]);
        if (sp_steps > 0)
            printf("speculative          %lld drafts proposed, %lld accepted (%.1f %%), mean acceptance "
                   "length %.2f tokens/step\n", (long long)sp_draft, (long long)sp_acc,
                   sp_draft ? 100.0 * (double)sp_acc / (double)sp_draft : 0.0, sp_len);
    }
    if (errors)
        fprintf(stderr, "deepseekd-probe: bench: %u requests failed; the first: %s\n", errors,
                s.first_msg);
    for (uint32_t i = 0; i < a->concurrency; i++) {
        free(t[i].ttft);
        free(t[i].itl);
        free(t[i].prompt);
    }
    free(t);
    free(ttft);
    free(itl);
    pthread_mutex_destroy(&s.lock);
    return errors ? probe_exit_for(s.first_error) : PROBE_EX_OK;
}
