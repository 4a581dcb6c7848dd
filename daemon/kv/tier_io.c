/* The tier I/O thread (contract in tier_io.h): one ring of jobs; the owner submits at the
 * tail and reaps at the head, the thread runs them in between. */
#include "tier_io.h"

#include "deadline.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dsd_tier_io {
    struct dsd_disk_tier *dt;
    int depth, test_delay_ms;
    struct dsd_tier_job *jobs;          /* [depth], job k at k % depth */
    struct dsd_disk_get *gets;          /* [depth]: the reads running now, gets[i] job window0 + i */
    uint64_t window0;
    uint64_t head, run, tail;           /* head <= run <= tail: reaped, finished, submitted */
    bool stop, drain;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t thread;
};

static void test_delay(const struct dsd_tier_io *io)
{
    if (io->test_delay_ms > 0) {
        struct timespec ts = {io->test_delay_ms / 1000, (long)(io->test_delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
}

/* A read of the window running now is judged, and every read before it: its job finishes
 * at once (the owner can reap it while the rest are read). */
static void read_landed(void *user, int k)
{
    struct dsd_tier_io *io = user;
    struct dsd_tier_job *j = &io->jobs[(io->window0 + (uint64_t)k) % (uint64_t)io->depth];
    const struct dsd_disk_get *g = &io->gets[k];
    j->rc = g->rc;
    if (g->rc < 0)
        snprintf(j->msg, sizeof j->msg, "%s", g->err.msg);
    pthread_mutex_lock(&io->mu);
    io->run = io->window0 + (uint64_t)k + 1;
    pthread_cond_broadcast(&io->done);
    pthread_mutex_unlock(&io->mu);
}

/* Runs the n jobs from io->run: a write alone, or n consecutive reads as one
 * dsd_disk_tier_get_stream (one window: their disk reads overlap each other and the
 * checksums; each finishes as it lands). */
static void run_jobs(struct dsd_tier_io *io, int n)
{
    const struct dsd_kv_page_geom *g = dsd_disk_tier_geom(io->dt);
    struct dsd_tier_job *j = &io->jobs[io->run % (uint64_t)io->depth];
    for (int k = 0; k < n; k++)
        test_delay(io);
    if (j->kind == DSD_TIER_READ) {
        io->window0 = io->run;
        for (int k = 0; k < n; k++) {
            struct dsd_tier_job *r = &io->jobs[(io->run + (uint64_t)k) % (uint64_t)io->depth];
            io->gets[k] = (struct dsd_disk_get){.hash = r->hash, .expect = &r->meta, .rec = r->rec};
        }
        dsd_disk_tier_get_stream(io->dt, n, io->gets, read_landed, io);
        return;
    }
    struct dsd_err err = {{0}};
    if (j->kind == DSD_TIER_WRITE)
        j->rc = dsd_disk_tier_put(io->dt, &j->meta, dsd_kv_page_mla(j->rec), dsd_kv_page_index(j->rec, g), &err);
    else
        j->rc = dsd_errf(&err, -EINVAL, "tier I/O: unknown job kind %d", j->kind);
    if (j->rc < 0)
        snprintf(j->msg, sizeof j->msg, "%s", err.msg);
    pthread_mutex_lock(&io->mu);
    io->run++;
    pthread_cond_broadcast(&io->done);
    pthread_mutex_unlock(&io->mu);
}

static void *worker(void *arg)
{
    struct dsd_tier_io *io = arg;
    pthread_mutex_lock(&io->mu);
    for (;;) {
        while (io->run == io->tail && !io->stop)
            pthread_cond_wait(&io->work, &io->mu);
        if (io->run == io->tail || (io->stop && !io->drain))
            break;
        /* the next job, and every read queued right behind a read */
        const bool read = io->jobs[io->run % (uint64_t)io->depth].kind == DSD_TIER_READ;
        int n = 1;
        while (read && io->run + (uint64_t)n < io->tail &&
               io->jobs[(io->run + (uint64_t)n) % (uint64_t)io->depth].kind == DSD_TIER_READ)
            n++;
        pthread_mutex_unlock(&io->mu);
        run_jobs(io, n);        /* [run, tail) is the thread's: the owner never touches it */
        pthread_mutex_lock(&io->mu);
    }
    pthread_mutex_unlock(&io->mu);
    return NULL;
}

struct dsd_tier_io *dsd_tier_io_new(struct dsd_disk_tier *dt, int depth, int test_delay_ms, struct dsd_err *err)
{
    if (!dt || depth < 1) {
        dsd_errf(err, -EINVAL, "tier I/O: no disk tier or a depth of %d", depth);
        return NULL;
    }
    struct dsd_tier_io *io = calloc(1, sizeof *io);
    struct dsd_tier_job *jobs = calloc((size_t)depth, sizeof *jobs);
    struct dsd_disk_get *gets = calloc((size_t)depth, sizeof *gets);
    if (!io || !jobs || !gets) {
        free(io);
        free(jobs);
        free(gets);
        dsd_errf(err, -ENOMEM, "tier I/O: out of memory for %d jobs", depth);
        return NULL;
    }
    io->dt = dt;
    io->depth = depth;
    io->test_delay_ms = test_delay_ms;
    io->jobs = jobs;
    io->gets = gets;
    pthread_mutex_init(&io->mu, NULL);
    pthread_cond_init(&io->work, NULL);
    pthread_cond_init(&io->done, NULL);
    int rc = pthread_create(&io->thread, NULL, worker, io);
    if (rc) {
        dsd_errf(err, -rc, "tier I/O: cannot start the thread: %s", strerror(rc));
        pthread_cond_destroy(&io->work);
        pthread_cond_destroy(&io->done);
        pthread_mutex_destroy(&io->mu);
        free(jobs);
        free(gets);
        free(io);
        return NULL;
    }
    return io;
}

void dsd_tier_io_free(struct dsd_tier_io *io, bool drain)
{
    if (!io)
        return;
    pthread_mutex_lock(&io->mu);
    io->stop = true;
    io->drain = drain;
    pthread_cond_broadcast(&io->work);
    pthread_mutex_unlock(&io->mu);
    pthread_join(io->thread, NULL);
    pthread_cond_destroy(&io->work);
    pthread_cond_destroy(&io->done);
    pthread_mutex_destroy(&io->mu);
    free(io->jobs);
    free(io->gets);
    free(io);
}

int dsd_tier_io_submit_many(struct dsd_tier_io *io, const struct dsd_tier_job *j, int n)
{
    pthread_mutex_lock(&io->mu);
    int k = 0;
    for (; k < n && io->tail - io->head < (uint64_t)io->depth; k++) {
        struct dsd_tier_job *slot = &io->jobs[io->tail % (uint64_t)io->depth];
        *slot = j[k];
        slot->rc = 0;
        slot->msg[0] = 0;
        io->tail++;
    }
    if (k > 0)
        pthread_cond_signal(&io->work);     /* once: the thread finds them all queued */
    pthread_mutex_unlock(&io->mu);
    return k;
}

int dsd_tier_io_submit(struct dsd_tier_io *io, const struct dsd_tier_job *j)
{
    return dsd_tier_io_submit_many(io, j, 1) == 1 ? 0 : -EBUSY;
}

int dsd_tier_io_reap(struct dsd_tier_io *io, struct dsd_tier_job *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&io->mu);
    while (n < max && io->head < io->run)
        out[n++] = io->jobs[io->head++ % (uint64_t)io->depth];
    pthread_mutex_unlock(&io->mu);
    return n;
}

int dsd_tier_io_pending(struct dsd_tier_io *io)
{
    pthread_mutex_lock(&io->mu);
    int n = (int)(io->tail - io->head);
    pthread_mutex_unlock(&io->mu);
    return n;
}

bool dsd_tier_io_wait(struct dsd_tier_io *io, int timeout_ms)
{
    struct timespec ts = dsd_deadline_ms(timeout_ms);
    pthread_mutex_lock(&io->mu);
    while (io->head == io->run && io->run < io->tail)
        if (pthread_cond_timedwait(&io->done, &io->mu, &ts) == ETIMEDOUT)
            break;
    bool any = io->head < io->run;
    pthread_mutex_unlock(&io->mu);
    return any;
}
