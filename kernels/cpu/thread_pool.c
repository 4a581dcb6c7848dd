/* Worker pool: a generation counter under a mutex wakes the workers; tasks are claimed with
 * an atomic counter; the last finisher signals the caller. Workers spin briefly before
 * sleeping because the forward pass issues ops back to back (microseconds apart). */
#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define SPIN_ROUNDS 20000

struct dsd_thread_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    atomic_uint generation;         /* bumped for every run() */
    atomic_int next_task;
    atomic_int workers_busy;        /* workers that have not finished the current run */
    int n_tasks;
    dsd_task_fn *fn;
    void *ctx;
    bool stop;
};

struct worker_arg {
    struct dsd_thread_pool *tp;
    int index;
};

static void drain_tasks(struct dsd_thread_pool *tp, int thread)
{
    for (;;) {
        int t = atomic_fetch_add_explicit(&tp->next_task, 1, memory_order_relaxed);
        if (t >= tp->n_tasks)
            break;
        tp->fn(tp->ctx, t, thread);
    }
}

static void *worker_main(void *p)
{
    struct worker_arg *a = p;
    struct dsd_thread_pool *tp = a->tp;
    int index = a->index;
    free(a);
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&tp->generation, memory_order_acquire)) == seen &&
               spins < SPIN_ROUNDS) {
            spins++;
            if ((spins & 255) == 0)
                sched_yield();
        }
        if (gen == seen) {
            pthread_mutex_lock(&tp->mu);
            while (atomic_load_explicit(&tp->generation, memory_order_acquire) == seen && !tp->stop)
                pthread_cond_wait(&tp->wake, &tp->mu);
            bool stop = tp->stop;
            pthread_mutex_unlock(&tp->mu);
            if (stop)
                return NULL;
            gen = atomic_load_explicit(&tp->generation, memory_order_acquire);
        }
        seen = gen;
        drain_tasks(tp, index);
        if (atomic_fetch_sub_explicit(&tp->workers_busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
}

struct dsd_thread_pool *dsd_thread_pool_new(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    struct dsd_thread_pool *tp = calloc(1, sizeof *tp);
    if (!tp)
        return NULL;
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->wake, NULL);
    pthread_cond_init(&tp->done, NULL);
    tp->threads = calloc((size_t)n_threads, sizeof *tp->threads);
    if (!tp->threads) {
        free(tp);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *a = malloc(sizeof *a);
        if (a) {
            a->tp = tp;
            a->index = i;
        }
        if (!a || pthread_create(&tp->threads[i], NULL, worker_main, a) != 0) {
            free(a);
            tp->n_threads = i;      /* run with what started */
            break;
        }
    }
    return tp;
}

int dsd_thread_pool_size(const struct dsd_thread_pool *tp)
{
    return tp->n_threads;
}

void dsd_thread_pool_run(struct dsd_thread_pool *tp, int n_tasks, dsd_task_fn *fn, void *ctx)
{
    if (n_tasks <= 0)
        return;
    if (tp->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    tp->n_tasks = n_tasks;
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store_explicit(&tp->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&tp->workers_busy, tp->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->generation, 1, memory_order_release);
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);

    drain_tasks(tp, 0);

    int spins = 0;
    while (atomic_load_explicit(&tp->workers_busy, memory_order_acquire) > 0 && spins < SPIN_ROUNDS) {
        spins++;
        if ((spins & 255) == 0)
            sched_yield();
    }
    if (atomic_load_explicit(&tp->workers_busy, memory_order_acquire) > 0) {
        pthread_mutex_lock(&tp->mu);
        while (atomic_load_explicit(&tp->workers_busy, memory_order_acquire) > 0)
            pthread_cond_wait(&tp->done, &tp->mu);
        pthread_mutex_unlock(&tp->mu);
    }
}

void dsd_thread_pool_free(struct dsd_thread_pool *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->mu);
    tp->stop = true;
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n_threads; i++)
        pthread_join(tp->threads[i], NULL);
    pthread_cond_destroy(&tp->wake);
    pthread_cond_destroy(&tp->done);
    pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp);
}
