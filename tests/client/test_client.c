/*
 * tests/client/test_client.c: libdeepseekd against the in-process fake daemon
 * (fake_daemon.h): every call, streaming through frames and through shm rings (wraparound,
 * stalls and resumes, the prompt arena), many threads on one connection, cancel, timeouts,
 * the daemon disconnecting mid-stream, refusals, and malformed or impossible replies, which
 * must come back as errors and never as a crash (the sanitizer tree runs this too).
 *
 * Expected tokens come from the fake's rule (token k of a request = sum of its prompt ids
 * + k), not from the library, so a library that loses, reorders or duplicates a token fails.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deepseekd.h"
#include "fake_daemon.h"
#include "ipc_shm.h"
#include "test.h"

static struct dsd_client *connect_to(struct fake *f, struct dsd_client_params *cp)
{
    struct dsd_client_params p = cp ? *cp : dsd_client_default_params();
    p.socket_path = fake_path(f);
    struct dsd_client *c = NULL;
    struct dsd_client_error e = {0};
    int rc = dsd_client_connect(&p, &c, &e);
    if (rc < 0)
        TEST_FAIL_AT("connect: %d %s", rc, e.message);
    return c;
}

static struct fake *engine(struct fake_opts o)
{
    struct fake *f = fake_start(&o);
    if (!f)
        TEST_FAIL_AT("fake_start failed");
    return f;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Reads a stream to its end and checks the fake's token rule. Returns the finish reason
 * (or a negative errno). *got counts the ids seen. */
static int drain_check(struct dsd_client_request *r, uint32_t base, uint32_t *got,
                       int slow_ms, bool *ok)
{
    const struct dsd_client_event *ev;
    struct dsd_client_error e;
    uint32_t n = 0;
    int rc;
    *ok = true;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while ((rc = dsd_client_request_next(r, 10000, &ev, &e)) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 30) {       /* events without progress (a stall loop) */
            fprintf(stderr, "stream still running after 30 s, %u tokens\n", n);
            *ok = false;
            *got = n;
            return -ETIMEDOUT;
        }
        for (uint32_t i = 0; i < ev->n_ids; i++, n++)
            if (ev->ids[i] != base + n) {
                if (*ok)
                    fprintf(stderr, "token %u is %u, expected %u\n", n, ev->ids[i], base + n);
                *ok = false;
            }
        if (ev->type == DSD_CLIENT_EVENT_DONE) {
            *got = n;
            return (int)ev->done.finish;
        }
        if (slow_ms)
            sleep_ms(slow_ms);
    }
    *got = n;
    if (rc == 0) {
        fprintf(stderr, "stream ended without DONE\n");
        *ok = false;
    }
    return rc;
}

static struct dsd_client_request *start_tokens(struct dsd_client *c, const uint32_t *prompt,
                                               uint32_t n, uint32_t max_tokens, bool use_shm)
{
    struct dsd_client_generate_params gp = dsd_client_generate_default_params();
    gp.prompt_tokens = prompt;
    gp.n_prompt_tokens = n;
    gp.max_tokens = max_tokens;
    gp.use_shm = use_shm;
    struct dsd_client_request *r = NULL;
    struct dsd_client_error e;
    int rc = dsd_client_request_start(c, &gp, &r, &e);
    if (rc < 0)
        TEST_FAIL_AT("request_start: %d %s", rc, e.message);
    return r;
}

/* ---- basic calls -------------------------------------------------------------------------- */

TEST(connect_facts_and_calls)
{
    struct fake *f = engine((struct fake_opts){0});
    struct dsd_client *c = connect_to(f, NULL);
    if (!c) {
        fake_stop(f);
        return;
    }
    const struct dsd_client_info *facts = dsd_client_get_facts(c);
    ASSERT_EQ_STR(facts->model_name, "fake-model");
    ASSERT_EQ_STR(facts->daemon_version, "fake-0.1");
    ASSERT_EQ_INT(facts->vocab_size, 129280);
    ASSERT_EQ_INT(facts->n_eos_ids, 1);
    ASSERT_EQ_INT(facts->bos_id, 0);
    ASSERT_EQ_INT(facts->max_frame, 4u << 20);
    ASSERT_EQ_INT(facts->shm_ring_count, 64);          /* the default params */
    ASSERT_EQ_INT(facts->shm_ring_capacity, 4096);

    struct dsd_client_error e;
    struct dsd_client_info *info = NULL;
    ASSERT_EQ_INT(dsd_client_get_info(c, &info, &e), 0);
    if (info) {
        ASSERT_EQ_INT(info->n_server, 3);
        ASSERT_EQ_STR(info->server[0].name, "max_batch");
        ASSERT_EQ_INT(info->server[0].type, DSD_CLIENT_VALUE_INT);
        ASSERT_EQ_INT(info->server[0].i, 64);
        ASSERT_EQ_STR(info->server[1].s, "cpu");
        ASSERT_TRUE(info->server[2].b);
        ASSERT_EQ_STR(info->backend, "cpu");
        ASSERT_EQ_INT(info->shm_ring_count, 64);
    }
    dsd_client_info_free(info);

    struct dsd_client_stats *st = NULL;
    ASSERT_EQ_INT(dsd_client_get_stats(c, &st, &e), 0);
    if (st) {
        ASSERT_EQ_INT(st->n_values, 2);
        ASSERT_EQ_STR(st->values[1].name, "cache_hit_rate");
        ASSERT_NEAR(st->values[1].f, 0.25, 0, 0);
    }
    dsd_client_stats_free(st);

    enum dsd_client_health h = DSD_CLIENT_HEALTH_UNHEALTHY;
    char detail[8];
    ASSERT_EQ_INT(dsd_client_get_health(c, &h, detail, sizeof detail, &e), 0);
    ASSERT_EQ_INT(h, DSD_CLIENT_HEALTH_OK);
    ASSERT_EQ_STR(detail, "fake is");                  /* cut to the buffer */
    ASSERT_EQ_STR(dsd_client_health_name(h), "ok");

    uint32_t *ids = NULL, n = 0;
    ASSERT_EQ_INT(dsd_client_tokenize_text(c, "hey", true, &ids, &n, &e), 0);
    ASSERT_EQ_INT(n, 4);
    if (n == 4) {
        ASSERT_EQ_INT(ids[0], 0);
        ASSERT_EQ_INT(ids[1], 'h');
        ASSERT_EQ_INT(ids[3], 'y');
    }
    dsd_client_buffer_free(ids);
    struct dsd_client_message msgs[2] = {{.role = DSD_CLIENT_ROLE_SYSTEM, .content = "s"},
                                         {.role = DSD_CLIENT_ROLE_USER, .content = "u"}};
    ASSERT_EQ_INT(dsd_client_tokenize_chat(c, msgs, 2, NULL, false, &ids, &n, &e), 0);
    ASSERT_EQ_INT(n, 20);
    dsd_client_buffer_free(ids);

    uint32_t toks[3] = {0, 1, 25};
    char *text = NULL;
    size_t len = 0;
    ASSERT_EQ_INT(dsd_client_detokenize(c, toks, 3, false, &text, &len, &e), 0);
    ASSERT_EQ_STR(text, "abz");
    ASSERT_EQ_INT(len, 3);
    dsd_client_buffer_free(text);

    /* Bad arguments are errors, not crashes. */
    ASSERT_EQ_INT(dsd_client_get_info(c, NULL, &e), -EINVAL);
    ASSERT_EQ_INT(dsd_client_tokenize_text(c, NULL, true, &ids, &n, &e), -EINVAL);
    ASSERT_EQ_INT(dsd_client_detokenize(c, NULL, 3, false, &text, NULL, &e), -EINVAL);
    ASSERT_EQ_INT(dsd_client_request_next(NULL, 0, NULL, &e), -EINVAL);
    ASSERT_EQ_INT(dsd_client_request_cancel(NULL), -EINVAL);
    ASSERT_TRUE(dsd_client_get_facts(NULL) == NULL);
    dsd_client_free(NULL);
    dsd_client_request_free(NULL);
    dsd_client_result_free(NULL);
    dsd_client_info_free(NULL);
    dsd_client_stats_free(NULL);
    ASSERT_EQ_STR(dsd_client_finish_name((enum dsd_client_finish)99), "unknown");
    ASSERT_EQ_STR(dsd_client_finish_name(DSD_CLIENT_FINISH_TOOL_CALLS), "tool_calls");
    ASSERT_EQ_STR(dsd_client_version(), "0.1.0");

    dsd_client_free(c);
    fake_stop(f);
}

TEST(connect_errors)
{
    struct dsd_client_params p = dsd_client_default_params();
    struct dsd_client *c = (struct dsd_client *)1;
    struct dsd_client_error e;
    p.socket_path = "/tmp/dsd-client-test-no-such-dir/sock";
    int rc = dsd_client_connect(&p, &c, &e);
    ASSERT_EQ_INT(rc, -ENOENT);
    ASSERT_TRUE(c == NULL);
    ASSERT_TRUE(strstr(e.message, "no deepseekd listening") != NULL);

    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    p.socket_path = longp;
    ASSERT_EQ_INT(dsd_client_connect(&p, &c, &e), -EINVAL);

    p = dsd_client_default_params();
    p.shm_ring_capacity = 1000;                        /* not a power of two */
    ASSERT_EQ_INT(dsd_client_connect(&p, &c, &e), -EINVAL);
    ASSERT_TRUE(strstr(e.message, "shm_ring_capacity") != NULL);
    ASSERT_EQ_INT(dsd_client_connect(&p, NULL, &e), -EINVAL);

    /* The environment variable is the default path. */
    struct fake *f = engine((struct fake_opts){0});
    setenv("DEEPSEEKD_SOCKET", fake_path(f), 1);
    ASSERT_EQ_INT(dsd_client_connect(NULL, &c, &e), 0);
    unsetenv("DEEPSEEKD_SOCKET");
    dsd_client_free(c);
    fake_stop(f);
}

/* ---- streaming ---------------------------------------------------------------------------- */

TEST(stream_frames)
{
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 3});
    struct dsd_client_params cp = dsd_client_default_params();
    cp.use_shm = false;
    struct dsd_client *c = connect_to(f, &cp);
    if (!c) {
        fake_stop(f);
        return;
    }
    ASSERT_EQ_INT(dsd_client_get_facts(c)->shm_ring_count, 0);
    struct dsd_client_generate_params gp = dsd_client_generate_default_params();
    uint32_t prompt[2] = {5, 6};
    gp.prompt_tokens = prompt;
    gp.n_prompt_tokens = 2;
    gp.max_tokens = 20;
    gp.detokenize = 1;
    struct dsd_client_request *r;
    struct dsd_client_error e;
    ASSERT_EQ_INT(dsd_client_request_start(c, &gp, &r, &e), 0);
    const struct dsd_client_event *ev;
    char text[512] = "";
    uint32_t n = 0, events = 0;
    int rc;
    while ((rc = dsd_client_request_next(r, 5000, &ev, &e)) > 0) {
        events++;
        for (uint32_t i = 0; i < ev->n_ids; i++, n++)
            ASSERT_EQ_INT(ev->ids[i], 11 + n);
        if (ev->text)
            strncat(text, ev->text, sizeof text - strlen(text) - 1);
        if (ev->type == DSD_CLIENT_EVENT_DONE) {
            ASSERT_EQ_INT(ev->done.finish, DSD_CLIENT_FINISH_LENGTH);
            ASSERT_EQ_INT(ev->done.usage.completion, 20);
            ASSERT_EQ_INT(ev->done.usage.prompt, 2);
            ASSERT_EQ_INT(ev->done.timings.total_us, 1000);
            ASSERT_EQ_INT(ev->done.stop_token, -1);
        }
    }
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(n, 20);
    ASSERT_EQ_INT(events, 7 + 1);                      /* ceil(20/3) token frames + done */
    ASSERT_TRUE(strncmp(text, "t11 t12 t13 ", 12) == 0);
    ASSERT_TRUE(strstr(text, "t30 ") != NULL);
    ASSERT_EQ_INT(dsd_client_request_next(r, 0, &ev, &e), 0);   /* stays ended */
    dsd_client_request_free(r);
    ASSERT_EQ_INT(atomic_load(&fake_stats(f)->ring_requests), 0);
    dsd_client_free(c);
    fake_stop(f);
}

TEST(stream_ring_wraparound_stall_resume)
{
    /* 16-token rings, 16 tokens per step, a slow reader: the ring fills every step, the
     * daemon stalls, the library consumes and resumes; 400 tokens wrap the ring 25 times. */
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 16, .step_us = 100});
    struct dsd_client_params cp = dsd_client_default_params();
    cp.shm_ring_count = 2;
    cp.shm_ring_capacity = 16;
    struct dsd_client *c = connect_to(f, &cp);
    if (!c) {
        fake_stop(f);
        return;
    }
    ASSERT_EQ_INT(dsd_client_get_facts(c)->shm_ring_capacity, 16);
    uint32_t prompt[1] = {1000};
    struct dsd_client_request *r = start_tokens(c, prompt, 1, 400, true);
    uint32_t got = 0;
    bool ok;
    int fin = drain_check(r, 1000, &got, 5, &ok);   /* 5 ms per event: slower than steps */
    ASSERT_EQ_INT(fin, DSD_CLIENT_FINISH_LENGTH);
    ASSERT_EQ_INT(got, 400);
    ASSERT_TRUE(ok);
    dsd_client_request_free(r);
    struct fake_stats *s = fake_stats(f);
    ASSERT_EQ_INT(atomic_load(&s->ring_requests), 1);
    ASSERT_TRUE(atomic_load(&s->stalls) > 0);
    ASSERT_TRUE(atomic_load(&s->resumes) >= atomic_load(&s->stalls));

    /* The same ring again, continuing from its old position. */
    r = start_tokens(c, prompt, 1, 100, true);
    fin = drain_check(r, 1000, &got, 0, &ok);
    ASSERT_EQ_INT(fin, DSD_CLIENT_FINISH_LENGTH);
    ASSERT_EQ_INT(got, 100);
    ASSERT_TRUE(ok);
    dsd_client_request_free(r);
    dsd_client_free(c);
    fake_stop(f);
}

TEST(prompt_arena)
{
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 4});
    struct dsd_client_params cp = dsd_client_default_params();
    cp.shm_prompt_min_tokens = 100;
    cp.shm_prompt_capacity = 1000;
    struct dsd_client *c = connect_to(f, &cp);
    if (!c) {
        fake_stop(f);
        return;
    }
    uint32_t big[600], small[3] = {1, 2, 3};
    uint32_t sum = 0;
    for (uint32_t i = 0; i < 600; i++)
        sum += big[i] = i * 7;
    /* Two big prompts at once: the second does not fit the 1000-token arena next to the
     * first and goes inline; both must arrive intact. */
    struct dsd_client_request *a = start_tokens(c, big, 600, 16, true);
    struct dsd_client_request *b = start_tokens(c, big, 600, 16, true);
    struct dsd_client_request *s = start_tokens(c, small, 3, 16, true);
    uint32_t got;
    bool ok;
    ASSERT_EQ_INT(drain_check(a, sum, &got, 0, &ok), DSD_CLIENT_FINISH_LENGTH);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(drain_check(b, sum, &got, 0, &ok), DSD_CLIENT_FINISH_LENGTH);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(drain_check(s, 6, &got, 0, &ok), DSD_CLIENT_FINISH_LENGTH);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(atomic_load(&fake_stats(f)->span_prompts), 1);
    dsd_client_request_free(a);
    dsd_client_request_free(b);
    dsd_client_request_free(s);
    /* After `accepted` the span is free again: a new big prompt uses the arena. */
    a = start_tokens(c, big, 600, 4, true);
    ASSERT_EQ_INT(drain_check(a, sum, &got, 0, &ok), DSD_CLIENT_FINISH_LENGTH);
    ASSERT_TRUE(ok);
    ASSERT_EQ_INT(atomic_load(&fake_stats(f)->span_prompts), 2);
    dsd_client_request_free(a);
    dsd_client_free(c);
    fake_stop(f);
}

TEST(blocking_chat_thinking_tools_logprobs)
{
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 2});
    struct dsd_client *c = connect_to(f, NULL);
    if (!c) {
        fake_stop(f);
        return;
    }
    struct dsd_client_tool_call prev_call = {.id = "c1", .name = "f", .arguments = "{}"};
    struct dsd_client_message msgs[3] = {
        {.role = DSD_CLIENT_ROLE_USER, .content = "weather?"},
        {.role = DSD_CLIENT_ROLE_ASSISTANT, .tool_calls = &prev_call, .n_tool_calls = 1},
        {.role = DSD_CLIENT_ROLE_TOOL, .content = "sunny", .tool_call_id = "c1"},
    };
    struct dsd_client_generate_params gp = dsd_client_generate_default_params();
    gp.messages = msgs;
    gp.n_messages = 3;
    gp.tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]";
    gp.thinking = true;
    gp.max_tokens = 6;
    gp.logprobs = true;
    gp.top_logprobs = 3;
    gp.temperature = 0.6;
    gp.has_seed = true;
    gp.seed = 42;
    const char *stops[1] = {"END"};
    gp.stop = stops;
    gp.n_stop = 1;
    struct dsd_client_result *res = NULL;
    struct dsd_client_error e;
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), 0);
    if (res) {
        ASSERT_EQ_INT(res->n_tokens, 6);
        ASSERT_EQ_INT(res->tokens[0], 3000);
        ASSERT_EQ_STR(res->reasoning, "r3000 r3001 ");
        ASSERT_EQ_STR(res->text, "t3002 t3003 t3004 t3005 ");
        ASSERT_EQ_INT(res->text_len, strlen("t3002 t3003 t3004 t3005 "));
        ASSERT_EQ_INT(res->n_tool_calls, 1);
        if (res->n_tool_calls == 1) {
            ASSERT_EQ_STR(res->tool_calls[0].id, "call_0");
            ASSERT_EQ_STR(res->tool_calls[0].name, "get_weather");
            ASSERT_EQ_STR(res->tool_calls[0].arguments, "{\"city\":\"Paris\"}");
        }
        ASSERT_TRUE(res->tool_call_errors != NULL);
        if (res->tool_call_errors)
            ASSERT_EQ_STR(res->tool_call_errors, "dropped at 4\ndropped at 6");
        ASSERT_EQ_INT(res->done.finish, DSD_CLIENT_FINISH_TOOL_CALLS);
        ASSERT_EQ_INT(res->n_logprobs, 6);
        if (res->n_logprobs == 6) {
            ASSERT_NEAR(res->logprobs[4].logprob, -2.0, 0, 0);
            ASSERT_EQ_INT(res->logprobs[4].n_top, 3);
            ASSERT_EQ_INT(res->logprobs[4].top[2].token, 3004 + 2);
            ASSERT_NEAR(res->logprobs[4].top[2].logprob, -3.0, 0, 0);
        }
    }
    dsd_client_result_free(res);

    /* Text prompt, blocking, no detokenize: no text, ids only. */
    gp = dsd_client_generate_default_params();
    gp.prompt_text = "hello";
    gp.max_tokens = 3;
    gp.detokenize = 0;
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), 0);
    if (res) {
        ASSERT_EQ_INT(res->n_tokens, 3);
        ASSERT_EQ_INT(res->tokens[2], 5 + 2);
        ASSERT_EQ_STR(res->text, "");
        ASSERT_TRUE(res->tool_call_errors == NULL);
        ASSERT_EQ_INT(res->done.usage.prompt, 6);      /* 5 bytes + BOS */
    }
    dsd_client_result_free(res);

    /* Parameter errors found before anything is sent. */
    gp = dsd_client_generate_default_params();
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), -EINVAL);    /* no prompt */
    ASSERT_TRUE(strstr(e.message, "exactly one prompt") != NULL);
    gp.prompt_text = "x";
    gp.messages = msgs;
    gp.n_messages = 1;
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), -EINVAL);    /* two prompts */
    gp.messages = NULL;
    gp.n_messages = 0;
    gp.n_stop = 2;
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), -EINVAL);    /* stop is NULL */
    gp.n_stop = 0;
    gp.tools_json = "[]";
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), -EINVAL);    /* tools w/o chat */
    struct dsd_client_message bad = {.role = (enum dsd_client_role)9, .content = "x"};
    gp = dsd_client_generate_default_params();
    gp.messages = &bad;
    gp.n_messages = 1;
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), -EINVAL);
    ASSERT_TRUE(strstr(e.message, "role") != NULL);
    ASSERT_TRUE(res == NULL);
    dsd_client_free(c);
    fake_stop(f);
}

/* ---- threads -------------------------------------------------------------------------- */

struct worker {
    struct dsd_client *c;
    uint32_t seed;
    int requests;
    atomic_int *failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int k = 0; k < w->requests; k++) {
        uint32_t prompt[2] = {w->seed * 100 + (uint32_t)k, 1};
        uint32_t max = 20 + (w->seed * 7 + (uint32_t)k * 13) % 60;
        struct dsd_client_generate_params gp = dsd_client_generate_default_params();
        gp.prompt_tokens = prompt;
        gp.n_prompt_tokens = 2;
        gp.max_tokens = max;
        gp.use_shm = (k + w->seed) % 3 != 0;
        struct dsd_client_request *r;
        struct dsd_client_error e;
        if (dsd_client_request_start(w->c, &gp, &r, &e) < 0) {
            fprintf(stderr, "worker %u: start: %s\n", w->seed, e.message);
            atomic_fetch_add(w->failures, 1);
            continue;
        }
        uint32_t got;
        bool ok;
        int fin = drain_check(r, prompt[0] + 1, &got, 0, &ok);
        if (fin != DSD_CLIENT_FINISH_LENGTH || got != max || !ok) {
            fprintf(stderr, "worker %u request %d: finish %d, %u of %u tokens\n", w->seed, k,
                    fin, got, max);
            atomic_fetch_add(w->failures, 1);
        }
        dsd_client_request_free(r);
    }
    return NULL;
}

TEST(threads_share_one_connection)
{
    /* 24 threads x 6 requests on one client, 8 rings (the rest fall back to frames), 4-token
     * rings' worth of small steps so rings stall too. */
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 5, .step_us = 300});
    struct dsd_client_params cp = dsd_client_default_params();
    cp.shm_ring_count = 8;
    cp.shm_ring_capacity = 16;
    struct dsd_client *c = connect_to(f, &cp);
    if (!c) {
        fake_stop(f);
        return;
    }
    enum { N = 24 };
    pthread_t th[N];
    struct worker w[N];
    atomic_int failures = 0;
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){c, (uint32_t)i + 1, 6, &failures};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    ASSERT_EQ_INT(atomic_load(&failures), 0);
    ASSERT_EQ_INT(atomic_load(&fake_stats(f)->generates), N * 6);
    ASSERT_TRUE(atomic_load(&fake_stats(f)->ring_requests) > 0);
    dsd_client_free(c);
    fake_stop(f);
}

TEST(many_streams_one_thread)
{
    /* 64 open streams drained round-robin with timeout 0 from one thread: the reader role
     * dispatches to all of them; every next() with nothing queued is -ETIMEDOUT. */
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 2, .step_us = 200});
    struct dsd_client *c = connect_to(f, NULL);
    if (!c) {
        fake_stop(f);
        return;
    }
    enum { N = 64, MAX = 30 };
    struct dsd_client_request *r[N];
    uint32_t prompt[N], got[N] = {0};
    bool done[N] = {0}, ok = true;
    for (int i = 0; i < N; i++) {
        prompt[i] = (uint32_t)i * 1000;
        r[i] = start_tokens(c, &prompt[i], 1, MAX, true);
    }
    int remaining = N, spins = 0;
    while (remaining && spins < 2000000) {
        for (int i = 0; i < N; i++) {
            if (done[i] || !r[i])
                continue;
            const struct dsd_client_event *ev;
            struct dsd_client_error e;
            int rc = dsd_client_request_next(r[i], 0, &ev, &e);
            spins++;
            if (rc == -ETIMEDOUT)
                continue;
            if (rc <= 0) {
                fprintf(stderr, "stream %d: %d %s\n", i, rc, e.message);
                ok = false;
                done[i] = true;
                remaining--;
                continue;
            }
            for (uint32_t k = 0; k < ev->n_ids; k++, got[i]++)
                if (ev->ids[k] != prompt[i] + got[i])
                    ok = false;
            if (ev->type == DSD_CLIENT_EVENT_DONE) {
                done[i] = true;
                remaining--;
            }
        }
    }
    ASSERT_EQ_INT(remaining, 0);
    ASSERT_TRUE(ok);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ_INT(got[i], MAX);
        dsd_client_request_free(r[i]);
    }
    dsd_client_free(c);
    fake_stop(f);
}

/* ---- cancel, timeouts, freeing -------------------------------------------------------- */

struct canceller {
    struct dsd_client_request *r;
    int delay_ms;
};

static void *cancel_main(void *arg)
{
    struct canceller *k = arg;
    sleep_ms(k->delay_ms);
    dsd_client_request_cancel(k->r);
    dsd_client_request_cancel(k->r);                   /* twice is fine */
    return NULL;
}

TEST(cancel_from_another_thread)
{
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 1, .step_us = 1000});
    struct dsd_client *c = connect_to(f, NULL);
    if (!c) {
        fake_stop(f);
        return;
    }
    for (int use_shm = 0; use_shm < 2; use_shm++) {
        uint32_t prompt[1] = {7};
        struct dsd_client_request *r = start_tokens(c, prompt, 1, 1000000, use_shm);
        struct canceller k = {r, 30};
        pthread_t th;
        pthread_create(&th, NULL, cancel_main, &k);
        uint32_t got;
        bool ok;
        int fin = drain_check(r, 7, &got, 0, &ok);     /* blocks in next() meanwhile */
        pthread_join(th, NULL);
        ASSERT_EQ_INT(fin, DSD_CLIENT_FINISH_CANCELLED);
        ASSERT_TRUE(ok);
        ASSERT_TRUE(got > 0 && got < 1000000);
        ASSERT_EQ_INT(dsd_client_request_cancel(r), 0);    /* after the end: nothing to do */
        dsd_client_request_free(r);
    }
    ASSERT_EQ_INT(atomic_load(&fake_stats(f)->cancels), 2);
    dsd_client_free(c);
    fake_stop(f);
}

TEST(timeouts)
{
    struct fake *f = engine((struct fake_opts){.mute = true});
    struct dsd_client *c = connect_to(f, NULL);
    if (!c) {
        fake_stop(f);
        return;
    }
    uint32_t prompt[1] = {1};
    struct dsd_client_request *r = start_tokens(c, prompt, 1, 10, true);
    const struct dsd_client_event *ev;
    struct dsd_client_error e;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_EQ_INT(dsd_client_request_next(r, 80, &ev, &e), -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    ASSERT_TRUE(ms >= 79 && ms < 2000);
    ASSERT_EQ_INT(dsd_client_request_next(r, 0, &ev, &e), -ETIMEDOUT);
    /* The request is still alive: cancel ends it properly. */
    ASSERT_EQ_INT(dsd_client_request_cancel(r), 0);
    ASSERT_EQ_INT(dsd_client_request_next(r, 5000, &ev, &e), 1);
    ASSERT_EQ_INT(ev->type, DSD_CLIENT_EVENT_DONE);
    ASSERT_EQ_INT(ev->done.finish, DSD_CLIENT_FINISH_CANCELLED);
    dsd_client_request_free(r);

    /* Blocking generate with a deadline: -ETIMEDOUT, no result, request cancelled. */
    struct dsd_client_generate_params gp = dsd_client_generate_default_params();
    gp.prompt_tokens = prompt;
    gp.n_prompt_tokens = 1;
    gp.timeout_ms = 50;
    struct dsd_client_result *res = (struct dsd_client_result *)1;
    ASSERT_EQ_INT(dsd_client_generate(c, &gp, &res, &e), -ETIMEDOUT);
    ASSERT_TRUE(res == NULL);
    sleep_ms(50);
    ASSERT_EQ_INT(atomic_load(&fake_stats(f)->cancels), 2);
    dsd_client_free(c);
    fake_stop(f);
}

static void script_silent_health(struct fake *f, void *arg)
{
    (void)arg;
    if (fake_handshake(f, false) < 0)
        return;
    struct dsd_ipc_msg m;
    while (fake_recv(f, &m, 2000) == 0)                 /* reads, never answers */
        dsd_ipc_msg_free(&m);
}

TEST(call_timeout)
{
    struct fake *f = fake_start(&(struct fake_opts){.script = script_silent_health});
    struct dsd_client_params cp = dsd_client_default_params();
    cp.use_shm = false;
    cp.timeout_ms = 60;
    struct dsd_client *c = connect_to(f, &cp);
    if (c) {
        enum dsd_client_health h;
        struct dsd_client_error e;
        ASSERT_EQ_INT(dsd_client_get_health(c, &h, NULL, 0, &e), -ETIMEDOUT);
        ASSERT_TRUE(strstr(e.message, "health") != NULL);
        dsd_client_free(c);
    }
    fake_stop(f);
}

TEST(free_running_request_then_reuse_ring)
{
    /* One ring: the freed request keeps it until the daemon's `done` (cancelled) arrives,
     * then the next request binds it again. */
    struct fake *f = engine((struct fake_opts){.tokens_per_step = 4, .step_us = 500});
    struct dsd_client_params cp = dsd_client_default_params();
    cp.shm_ring_count = 1;
    cp.shm_ring_capacity = 16;
    struct dsd_client *c = connect_to(f, &cp);
    if (!c) {
        fake_stop(f);
        return;
    }
    uint32_t prompt[1] = {50};
    struct dsd_client_request *r = start_tokens(c, prompt, 1, 100000, true);
    const struct dsd_client_event *ev;
    struct dsd_client_error e;
    ASSERT_EQ_INT(dsd_client_request_next(r, 5000, &ev, &e), 1);
    /* Let the daemon fill the ring and stall before the free: the cancelled request leaves
     * unread tokens behind, which the next request on this ring must not be charged for. */
    sleep_ms(30);
    dsd_client_request_free(r);                         /* mid-stream */
    for (int k = 0; k < 3; k++) {
        r = start_tokens(c, prompt, 1, 40, true);
        uint32_t got;
        bool ok;
        ASSERT_EQ_INT(drain_check(r, 50, &got, 0, &ok), DSD_CLIENT_FINISH_LENGTH);
        ASSERT_TRUE(ok);
        ASSERT_EQ_INT(got, 40);
        dsd_client_request_free(r);
    }
    ASSERT_EQ_INT(atomic_load(&fake_stats(f)->cancels), 1);
    ASSERT_TRUE(atomic_load(&fake_stats(f)->ring_requests) >= 2);
    dsd_client_free(c);
    fake_stop(f);
}

TEST(client_freed_with_requests_held)
{
    struct fake *f = engine((struct fake_opts){.step_us = 1000});
    struct dsd_client *c = connect_to(f, NULL);
    if (!c) {
        fake_stop(f);
        return;
    }
    uint32_t prompt[1] = {1};
    struct dsd_client_request *r = start_tokens(c, prompt, 1, 100000, true);
    struct dsd_client_request *r2 = start_tokens(c, prompt, 1, 100000, false);
    dsd_client_free(c);
    const struct dsd_client_event *ev;
    struct dsd_client_error e;
    int rc;
    while ((rc = dsd_client_request_next(r, 1000, &ev, &e)) > 0)
        ;
    ASSERT_EQ_INT(rc, -ECONNABORTED);
    ASSERT_EQ_INT(dsd_client_request_cancel(r), 0);
    dsd_client_request_free(r);
    dsd_client_request_free(r2);                        /* the last handle frees the client */
    fake_stop(f);
}

/* ---- the daemon failing ------------------------------------------------------------------- */

static void *drain_expect_reset(void *arg)
{
    struct dsd_client_request *r = arg;
    const struct dsd_client_event *ev;
    struct dsd_client_error e;
    int rc;
    while ((rc = dsd_client_request_next(r, 10000, &ev, &e)) > 0)
        if (ev->type == DSD_CLIENT_EVENT_DONE)
            return (void *)(intptr_t)1;
    if (rc != -ECONNRESET || !strstr(e.message, "closed the connection"))
        return (void *)(intptr_t)(rc ? rc : 2);
    return NULL;
}

TEST(daemon_disconnects_mid_stream)
{
    struct fake *f = engine((struct fake_opts){.step_us = 500, .die_after_frames = 30});
    struct dsd_client *c = connect_to(f, NULL);
    if (!c) {
        fake_stop(f);
        return;
    }
    enum { N = 6 };
    struct dsd_client_request *r[N];
    pthread_t th[N];
    uint32_t prompt[1] = {3};
    for (int i = 0; i < N; i++) {
        r[i] = start_tokens(c, prompt, 1, 100000, i % 2);
        pthread_create(&th[i], NULL, drain_expect_reset, r[i]);
    }
    for (int i = 0; i < N; i++) {
        void *res;
        pthread_join(th[i], &res);
        ASSERT_EQ_INT((intptr_t)res, 0);
        dsd_client_request_free(r[i]);
    }
    /* Later calls fail at once with the same reason. */
    struct dsd_client_error e;
    struct dsd_client_request *x = NULL;
    struct dsd_client_generate_params gp = dsd_client_generate_default_params();
    gp.prompt_tokens = prompt;
    gp.n_prompt_tokens = 1;
    ASSERT_EQ_INT(dsd_client_request_start(c, &gp, &x, &e), -ECONNRESET);
    enum dsd_client_health h;
    ASSERT_EQ_INT(dsd_client_get_health(c, &h, NULL, 0, &e), -ECONNRESET);
    dsd_client_free(c);
    fake_stop(f);
}

TEST(refusals_map_to_errno)
{
    const struct {
        uint32_t code;
        int err;
    } cases[] = {
        {DSD_IPC_E_NOT_READY, -EAGAIN},        {DSD_IPC_E_OVERLOADED, -EBUSY},
        {DSD_IPC_E_TOO_MANY_REQUESTS, -EBUSY}, {DSD_IPC_E_SHUTTING_DOWN, -ESHUTDOWN},
        {DSD_IPC_E_PROMPT_TOO_LONG, -E2BIG},   {DSD_IPC_E_BAD_VALUE, -EINVAL},
        {DSD_IPC_E_UNSUPPORTED, -EOPNOTSUPP},  {DSD_IPC_E_INTERNAL, -EREMOTEIO},
        {999, -EREMOTEIO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fake *f = engine((struct fake_opts){.refuse_code = cases[i].code});
        struct dsd_client *c = connect_to(f, NULL);
        if (!c) {
            fake_stop(f);
            continue;
        }
        uint32_t prompt[1] = {1};
        struct dsd_client_request *r = start_tokens(c, prompt, 1, 4, true);
        const struct dsd_client_event *ev;
        struct dsd_client_error e;
        ASSERT_EQ_INT(dsd_client_request_next(r, 5000, &ev, &e), cases[i].err);
        ASSERT_EQ_INT(e.daemon_code, cases[i].code);
        ASSERT_TRUE(strstr(e.message, "refused by test option") != NULL);
        ASSERT_EQ_INT(dsd_client_request_next(r, 0, &ev, &e), 0);
        dsd_client_request_free(r);
        /* The connection is fine afterwards (a non-fatal code; 999 is unknown and treated
         * as fatal, PROTOCOL.md §5.8). */
        enum dsd_client_health h;
        ASSERT_EQ_INT(dsd_client_get_health(c, &h, NULL, 0, &e),
                      cases[i].code == 999 ? -EREMOTEIO : 0);
        dsd_client_free(c);
        fake_stop(f);
    }
}

TEST(shm_refused_or_limited)
{
    struct fake *f = engine((struct fake_opts){.refuse_shm = true});
    struct dsd_client *c = connect_to(f, NULL);
    if (c) {
        ASSERT_EQ_INT(dsd_client_get_facts(c)->shm_ring_count, 0);
        uint32_t prompt[1] = {9}, got;
        bool ok;
        struct dsd_client_request *r = start_tokens(c, prompt, 1, 10, true);
        ASSERT_EQ_INT(drain_check(r, 9, &got, 0, &ok), DSD_CLIENT_FINISH_LENGTH);
        ASSERT_TRUE(ok);
        dsd_client_request_free(r);
        dsd_client_free(c);
    }
    fake_stop(f);

    f = engine((struct fake_opts){.max_shm_bytes = 300000});
    c = connect_to(f, NULL);                            /* defaults want ~2 MiB */
    if (c) {
        const struct dsd_client_info *fa = dsd_client_get_facts(c);
        ASSERT_TRUE(fa->shm_ring_count > 0);
        ASSERT_TRUE(fa->shm_prompt_capacity * 4 + fa->shm_ring_count * (384 + 4 * 4096) <=
                    300000);
        dsd_client_free(c);
    }
    fake_stop(f);
}

/* ---- malformed and impossible replies (scripts) ----------------------------------------- */

struct script_case {
    int step;                   /* which misbehaviour */
    atomic_bool saw_cancel;
};

/* Waits for the generate and answers `accepted` (+ ring when asked). Returns its id. */
static uint64_t expect_generate(struct fake *f, bool *ring)
{
    struct dsd_ipc_msg m;
    if (fake_recv(f, &m, 5000) < 0 || m.type != DSD_IPC_GENERATE) {
        dsd_ipc_msg_free(&m);
        return 0;
    }
    uint64_t id = m.id;
    *ring = m.generate.use_ring;
    if (m.generate.use_ring)
        dsd_ring_producer_bind(&(struct dsd_ring_producer){
                                   .ring = dsd_shm_ring(fake_shm(f), m.generate.ring)},
                               id);
    dsd_ipc_msg_free(&m);
    return id;
}

static void wait_cancel(struct fake *f, struct script_case *sc)
{
    struct dsd_ipc_msg m;
    while (fake_recv(f, &m, 3000) == 0) {
        if (m.type == DSD_IPC_CANCEL)
            atomic_store(&sc->saw_cancel, true);
        dsd_ipc_msg_free(&m);
    }
}

static void script_malformed(struct fake *f, void *arg)
{
    struct script_case *sc = arg;
    if (fake_handshake(f, true) < 0)
        return;
    bool ring;
    uint64_t id = expect_generate(f, &ring);
    if (!id)
        return;
    uint32_t ids[2] = {1, 2};
    switch (sc->step) {
    case 0: {   /* garbage that is not msgpack, no id: the connection dies */
        uint8_t body[3] = {0xc1, 0xc1, 0xc1};
        fake_send_body(f, body, 3);
        break;
    }
    case 1: {   /* a tokens frame whose "ids" is a string: this request fails, cancel sent */
        fake_send_accepted(f, id, 1, ring, 0);
        /* {"t":"tokens","id":id,"ids":"x"} */
        uint8_t body[] = {0x83, 0xa1, 't', 0xa6, 't', 'o', 'k', 'e', 'n', 's', 0xa2, 'i', 'd',
                          (uint8_t)id, 0xa3, 'i', 'd', 's', 0xa1, 'x'};
        fake_send_body(f, body, sizeof body);
        wait_cancel(f, sc);
        break;
    }
    case 2:     /* tokens before accepted */
        fake_send_ids(f, id, ids, 2, NULL);
        wait_cancel(f, sc);
        break;
    case 3: {   /* a ring position beyond what the ring holds */
        fake_send_accepted(f, id, 1, ring, 0);
        struct dsd_ipc_msg t = {.type = DSD_IPC_TOKENS, .id = id};
        t.tokens.has_pos = true;
        t.tokens.pos = 5;                              /* prod_pos is still 0 */
        fake_send(f, &t);
        wait_cancel(f, sc);
        break;
    }
    case 4: {   /* a length prefix above max_frame */
        uint8_t pre[4];
        dsd_ipc_put_prefix(pre, 100u << 20);
        fake_send_raw(f, pre, 4);
        break;
    }
    case 5: {   /* half a frame, then hang up */
        uint8_t pre[6] = {50, 0, 0, 0, 0x82, 0xa1};
        fake_send_raw(f, pre, sizeof pre);
        fake_hangup(f);
        break;
    }
    case 6:     /* a fatal error about the connection */
        fake_send_error(f, 0, DSD_IPC_E_IDLE_TIMEOUT, "closed after 600 s without a request",
                        true);
        break;
    case 7:     /* finish error after accepted */
        fake_send_accepted(f, id, 1, ring, 0);
        fake_send_ids(f, id, ids, 2, "ab");
        {
            struct dsd_ipc_msg d = {.type = DSD_IPC_DONE, .id = id};
            d.done.finish = DSD_IPC_FINISH_ERROR;
            d.done.has_error = true;
            d.done.error_code = DSD_IPC_E_STALL_TIMEOUT;
            d.done.error_msg = dsd_ipc_s("stalled for 30 s");
            fake_send(f, &d);
        }
        wait_cancel(f, sc);
        break;
    case 8:     /* an unknown id, a reply type that makes no sense, then the real stream */
        fake_send_ids(f, id + 1000, ids, 2, NULL);
        {
            struct dsd_ipc_msg h = {.type = DSD_IPC_HEALTH_OK, .id = id};
            h.health_ok.status = DSD_IPC_STATUS_OK;
            fake_send(f, &h);
        }
        wait_cancel(f, sc);
        break;
    }
    sleep_ms(20);
}

TEST(malformed_replies)
{
    const struct {
        int rc;
        const char *msg;
    } want[] = {
        {-EPROTO, "malformed frame"},       {-EPROTO, "malformed frame for this request"},
        {-EPROTO, "before 'accepted'"},     {-EPROTO, "ring holds only"},
        {-EPROTO, "above the negotiated"},               {-ECONNRESET, "middle of a frame"},
        {-ECONNRESET, "without a request"},           {1, NULL},
        {-EPROTO, "health_ok"},
    };
    for (int step = 0; step < (int)(sizeof want / sizeof want[0]); step++) {
        struct script_case sc = {.step = step};
        struct fake *f = fake_start(&(struct fake_opts){.script = script_malformed, .arg = &sc});
        struct dsd_client *c = connect_to(f, NULL);
        if (!c) {
            fake_stop(f);
            continue;
        }
        uint32_t prompt[1] = {1};
        struct dsd_client_request *r = start_tokens(c, prompt, 1, 10, true);
        const struct dsd_client_event *ev;
        struct dsd_client_error e = {0};
        int rc;
        int events = 0;
        while ((rc = dsd_client_request_next(r, 5000, &ev, &e)) > 0) {
            events++;
            if (ev->type == DSD_CLIENT_EVENT_DONE) {
                ASSERT_EQ_INT(ev->done.finish, DSD_CLIENT_FINISH_ERROR);
                ASSERT_EQ_INT(ev->done.error_code, DSD_IPC_E_STALL_TIMEOUT);
                ASSERT_EQ_STR(ev->done.error_message, "stalled for 30 s");
            }
        }
        if (want[step].rc == 1) {
            ASSERT_EQ_INT(rc, 0);
            ASSERT_EQ_INT(events, 2);
        } else {
            if (rc != want[step].rc || !strstr(e.message, want[step].msg))
                TEST_FAIL_AT("step %d: rc %d (want %d), message \"%s\" (want \"%s\")", step,
                             rc, want[step].rc, e.message, want[step].msg);
        }
        dsd_client_request_free(r);
        dsd_client_free(c);
        fake_stop(f);
        if (step == 1 || step == 2 || step == 3 || step == 8)
            ASSERT_TRUE(atomic_load(&sc.saw_cancel));
    }
}

static void script_bad_hello(struct fake *f, void *arg)
{
    int which = *(int *)arg;
    struct dsd_ipc_msg m;
    if (fake_recv(f, &m, 5000) < 0)
        return;
    uint64_t id = m.id;
    dsd_ipc_msg_free(&m);
    if (which == 0) {
        fake_send_error(f, id, DSD_IPC_E_VERSION_UNSUPPORTED, "this daemon speaks 2..3", true);
    } else if (which == 1) {
        struct dsd_ipc_msg h = {.type = DSD_IPC_HELLO_OK, .id = id};
        h.hello_ok.version = 2;
        h.hello_ok.model.vocab_size = 10;
        h.hello_ok.model.max_context = 10;
        h.hello_ok.model.n_eos = 1;
        h.hello_ok.limits.max_frame = 65536;
        fake_send(f, &h);
    } else if (which == 2) {
        fake_hangup(f);
    } else {
        uint8_t junk[8] = {4, 0, 0, 0, 0x93, 1, 2, 3};         /* an array, not a map */
        fake_send_raw(f, junk, sizeof junk);
    }
    sleep_ms(20);
}

TEST(bad_handshakes)
{
    const int want[4] = {-EPROTONOSUPPORT, -EPROTONOSUPPORT, -ECONNRESET, -EPROTO};
    for (int which = 0; which < 4; which++) {
        struct fake *f = fake_start(&(struct fake_opts){.script = script_bad_hello,
                                                        .arg = &which});
        struct dsd_client_params p = dsd_client_default_params();
        p.socket_path = fake_path(f);
        struct dsd_client *c = (struct dsd_client *)1;
        struct dsd_client_error e;
        int rc = dsd_client_connect(&p, &c, &e);
        if (rc != want[which])
            TEST_FAIL_AT("handshake %d: rc %d want %d (%s)", which, rc, want[which], e.message);
        ASSERT_TRUE(c == NULL);
        fake_stop(f);
    }
}

/* Random frames after `accepted`: whatever they are, the library returns an event or an
 * error, and never crashes or leaks (the sanitizer tree runs this). */
static void script_random(struct fake *f, void *arg)
{
    unsigned seed = *(unsigned *)arg;
    if (fake_handshake(f, true) < 0)
        return;
    bool ring;
    uint64_t id = expect_generate(f, &ring);
    if (!id)
        return;
    fake_send_accepted(f, id, 1, ring, 0);
    for (int k = 0; k < 20; k++) {
        uint8_t body[64];
        uint32_t n = 1 + (uint32_t)(rand_r(&seed) % sizeof body);
        /* Start most frames like a real tokens map, so the decoder gets past "t" and "id". */
        uint8_t head[] = {0x83, 0xa1, 't', 0xa6, 't', 'o', 'k', 'e', 'n', 's', 0xa2, 'i', 'd',
                          (uint8_t)id};
        uint32_t h = (rand_r(&seed) % 4) ? sizeof head : 0;
        memcpy(body, head, h);
        for (uint32_t i = h; i < n + h && i < sizeof body; i++)
            body[i] = (uint8_t)rand_r(&seed);
        fake_send_body(f, body, n + h < sizeof body ? n + h : sizeof body);
    }
    struct dsd_ipc_msg m;
    while (fake_recv(f, &m, 500) == 0)
        dsd_ipc_msg_free(&m);
}

TEST(random_frames_never_crash)
{
    int errors = 0;
    for (unsigned seed = 1; seed <= 40; seed++) {
        struct fake *f = fake_start(&(struct fake_opts){.script = script_random, .arg = &seed});
        struct dsd_client *c = connect_to(f, NULL);
        if (!c) {
            fake_stop(f);
            continue;
        }
        uint32_t prompt[1] = {1};
        struct dsd_client_request *r = start_tokens(c, prompt, 1, 10, seed % 2);
        const struct dsd_client_event *ev;
        struct dsd_client_error e;
        int rc;
        while ((rc = dsd_client_request_next(r, 3000, &ev, &e)) > 0)
            ;
        errors += rc < 0;
        ASSERT_TRUE(rc != -ETIMEDOUT);                  /* every case ends decisively */
        dsd_client_request_free(r);
        dsd_client_free(c);
        fake_stop(f);
    }
    ASSERT_TRUE(errors > 30);
}

int main(void)
{
    RUN(connect_facts_and_calls);
    RUN(connect_errors);
    RUN(stream_frames);
    RUN(stream_ring_wraparound_stall_resume);
    RUN(prompt_arena);
    RUN(blocking_chat_thinking_tools_logprobs);
    RUN(threads_share_one_connection);
    RUN(many_streams_one_thread);
    RUN(cancel_from_another_thread);
    RUN(timeouts);
    RUN(call_timeout);
    RUN(free_running_request_then_reuse_ring);
    RUN(client_freed_with_requests_held);
    RUN(daemon_disconnects_mid_stream);
    RUN(refusals_map_to_errno);
    RUN(shm_refused_or_limited);
    RUN(malformed_replies);
    RUN(bad_handshakes);
    RUN(random_frames_never_crash);
    return test_report();
}
