/* deepseekd-run through the engine thread (contract in run_engine.h). */
#include "run_engine.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Waits for the engine's eventfd (at most 1 s) and drains it. */
static void wait_wake(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, 1000) > 0) {
        uint64_t v;
        if (read(fd, &v, sizeof v) < 0) {
            /* EAGAIN: nothing pending after all */
        }
    }
}

int run_engine(const struct run_engine_args *a)
{
    int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0)
        return perror("deepseekd-run: eventfd"), 1;
    const int batch = a->batch > 0 ? a->batch : 1;
    struct dsd_engine_params ep = {
        .model_dir = a->model_dir, .model = a->mp,
        .kv_memory_bytes = (uint64_t)batch * (uint64_t)(a->n_prompt + a->max_tokens + 2 * DSD_KV_PAGE_TOKENS) * 8192u +
                           (64u << 20),
        .kv_gpu_fraction = 0.9, .max_batch = batch, .max_batch_tokens = 2048 > batch * 4 ? 2048 : batch * 4,
        .prefill_chunk = 512, .fairness = DSD_FAIR_OFF,
        .speculative_tokens = a->speculative_tokens, .test_spec_force = a->spec_force,
    };
    struct dsd_engine *e;
    struct dsd_err err = {{0}};
    uint64_t t0 = now_ns();
    if (dsd_engine_start(&ep, wake, &e, &err)) {
        fprintf(stderr, "deepseekd-run: %s\n", err.msg);
        close(wake);
        return 1;
    }
    while (dsd_engine_state(e) == DSD_ENGINE_LOADING)
        wait_wake(wake);
    if (dsd_engine_state(e) != DSD_ENGINE_READY) {
        fprintf(stderr, "deepseekd-run: %s\n", dsd_engine_failure(e));
        dsd_engine_stop(e);
        close(wake);
        return 1;
    }
    const double t_load = (double)(now_ns() - t0) / 1e9;
    int32_t *ids = malloc(((size_t)a->max_tokens + 1) * sizeof *ids);
    if (!ids)
        return fprintf(stderr, "deepseekd-run: out of memory\n"), 1;
    int n_ids = 0, done = 0, rc = 0;
    uint64_t tokens = 0, t_first = 0;
    const uint64_t t1 = now_ns();
    for (int i = 0; i < batch; i++) {
        struct dsd_engine_request *r = calloc(1, sizeof *r);
        if (!r || !(r->prompt = malloc((size_t)a->n_prompt * sizeof *r->prompt)))
            return fprintf(stderr, "deepseekd-run: out of memory\n"), 1;
        memcpy(r->prompt, a->prompt, (size_t)a->n_prompt * sizeof *r->prompt);
        r->handle = (uint64_t)i + 1;
        r->conn_id = (uint64_t)i + 1;
        r->n_prompt = a->n_prompt;
        r->sampling = a->sp;
        r->max_tokens = a->max_tokens;
        r->ignore_eos = a->ignore_eos;
        r->t_accept_ns = now_ns();
        dsd_engine_submit(e, r);
    }
    while (done < batch) {
        wait_wake(wake);
        struct dsd_engine_event **evs;
        int n = dsd_engine_take_events(e, &evs);
        for (int i = 0; i < n; i++) {
            struct dsd_engine_event *ev = evs[i];
            if (ev->n_ids && !t_first)
                t_first = now_ns();
            tokens += (uint64_t)ev->n_ids;
            for (int k = 0; ev->handle == 1 && k < ev->n_ids && n_ids < a->max_tokens; k++)
                ids[n_ids++] = ev->ids[k];
            if (ev->kind == DSD_EV_DONE) {
                done++;
                if (ev->finish == DSD_FINISH_ERROR) {
                    fprintf(stderr, "deepseekd-run: %s\n", ev->error ? ev->error : "error");
                    rc = 1;
                }
            }
            dsd_engine_event_free(ev);
        }
        free(evs);
    }
    const uint64_t t2 = now_ns();
    struct dsd_engine_stats st;
    dsd_engine_stats(e, &st);
    dsd_engine_stop(e);
    close(wake);
    for (int i = 0; i < n_ids; i++)
        printf("%s%d", i ? " " : "", ids[i]);
    printf("\n");
    fflush(stdout);
    free(ids);
    /* decode: every token after each request's first, from the first token on */
    const double dec_s = t_first && t2 > t_first ? (double)(t2 - t_first) / 1e9 : 0.0;
    const uint64_t dec_tokens = tokens > (uint64_t)batch ? tokens - (uint64_t)batch : 0;
    fprintf(stderr, "load %.3f s; %d request(s) of %d prompt tokens; first token %.3f s; decode %llu tokens %.3f s "
                    "(%.2f tok/s)\n",
            t_load, batch, a->n_prompt, t_first ? (double)(t_first - t1) / 1e9 : 0.0, (unsigned long long)dec_tokens,
            dec_s, dec_s > 0 ? (double)dec_tokens / dec_s : 0.0);
    fprintf(stderr, "speculative: k %d, %llu verify steps, %llu drafts, %llu accepted, mean acceptance length %.2f; "
                    "engine steps %llu\n",
            a->speculative_tokens, (unsigned long long)st.spec_steps, (unsigned long long)st.spec_draft_tokens,
            (unsigned long long)st.spec_accepted_tokens,
            st.spec_steps ? (double)(st.spec_accepted_tokens + st.spec_steps) / (double)st.spec_steps : 0.0,
            (unsigned long long)st.steps);
    return rc;
}
