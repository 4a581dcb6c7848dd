/*
 * kernels/cpu/thread_pool.h: a fixed pool of worker threads for the CPU backend.
 *
 *   struct dsd_thread_pool *tp = dsd_thread_pool_new(8);
 *   dsd_thread_pool_run(tp, n_tasks, fn, ctx);   // fn(ctx, task, thread) for every task
 *   dsd_thread_pool_free(tp);
 *
 * run() returns when every task has finished; the calling thread works too (it is thread
 * 0), so a pool of n uses n-1 extra threads. Tasks are handed out dynamically; kernels make
 * each output element the work of exactly one task with a fixed internal order, so results
 * never depend on the number of threads. Not reentrant: one run() at a time per pool.
 */
#ifndef DSD_CPU_THREAD_POOL_H
#define DSD_CPU_THREAD_POOL_H

typedef void dsd_task_fn(void *ctx, int task, int thread);

struct dsd_thread_pool;

struct dsd_thread_pool *dsd_thread_pool_new(int n_threads); /* NULL on failure */
int dsd_thread_pool_size(const struct dsd_thread_pool *tp);
void dsd_thread_pool_run(struct dsd_thread_pool *tp, int n_tasks, dsd_task_fn *fn, void *ctx);
void dsd_thread_pool_free(struct dsd_thread_pool *tp);

#endif
