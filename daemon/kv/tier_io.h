/*
 * daemon/kv/tier_io.h: the tier I/O thread (docs/KV_CACHE.md §7): the disk tier's reads and
 * writes (daemon/kv/disk_tier.h, checksums and io_uring included) run on a thread of their
 * own, so the engine thread never waits on the disk. The owner (the prefix cache, on the
 * engine thread) copies a page out of device memory into a host record first -- the copy
 * that must happen before the device page is reused -- and submits the record; it learns
 * what finished by reaping.
 *
 *   struct dsd_tier_io *io = dsd_tier_io_new(dt, 64, &err);        // the thread starts
 *   struct dsd_tier_job j = {.kind = DSD_TIER_WRITE, .rec = rec, .meta = m, .tag = slot};
 *   if (dsd_tier_io_submit(io, &j) < 0) ... the queue is full: the page is not written now
 *   ...
 *   struct dsd_tier_job done[8];
 *   int n = dsd_tier_io_reap(io, done, 8);     // finished jobs, in submission order; the
 *                                              // records they named are the owner's again
 *   dsd_tier_io_free(io, true);                // drains what is queued, joins
 *
 * A job's record (dsd_kv_page_record_bytes, arenas at dsd_kv_page_mla/index) belongs to the
 * thread from submit until the job is reaped: a WRITE reads it (the owner may read it too:
 * a page in flight served from its host copy), a READ fills it (the owner must not touch it).
 * Jobs run in submission order, so a READ submitted after the WRITE of the same page finds it
 * on disk; all the READs queued one behind another run together as one
 * dsd_disk_tier_get_stream (one window of reads in flight, each page verified as it lands, read
 * straight into its record), and each finishes, in order, as soon as it has landed and been
 * verified: the owner reaps a prefix's first pages while its last are still being read. Reads
 * queued while a window runs start after it (with the next job). The disk tier's contains and
 * stats may be called meanwhile (its index is guarded); nothing else of it may.
 *
 * Shutdown: free with drain runs every queued job first; without, the job running (or the
 * window of reads running: all the reads that were queued together when it started) finishes
 * and the rest are dropped. Either way no page is ever torn on disk: a write puts the header
 * last (disk_tier.h), and a write cut short by a crash leaves no header naming the page.
 */
#ifndef DSD_KV_TIER_IO_H
#define DSD_KV_TIER_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "disk_page.h"
#include "disk_tier.h"
#include "err.h"

enum dsd_tier_job_kind {
    DSD_TIER_WRITE = 1,     /* store rec's arenas as the page meta describes (dsd_disk_tier_put) */
    DSD_TIER_READ = 2,      /* read page `hash` into rec's arenas, verified (dsd_disk_tier_get) */
};

struct dsd_tier_job {
    int kind;                       /* enum dsd_tier_job_kind */
    uint64_t hash;                  /* READ: the page's chain hash */
    struct dsd_kv_page_meta meta;   /* WRITE: parent_hash, depth, tokens; READ: what to expect */
    void *rec;                      /* the record buffer */
    uint64_t tag;                   /* the owner's, returned as given */
    int rc;                         /* on reaping: 0, or the put/get error */
    char msg[160];                  /* on reaping, when rc < 0: why */
};

struct dsd_tier_io;

/* Starts the thread for dt (which it then owns, but for contains and stats), with room for
 * `depth` jobs queued or finished and not yet reaped. test_delay_ms (tests only) is slept
 * before each job. Returns NULL with err set: -EINVAL, -ENOMEM, -EAGAIN (no thread). */
struct dsd_tier_io *dsd_tier_io_new(struct dsd_disk_tier *dt, int depth, int test_delay_ms, struct dsd_err *err);
/* Stops the thread: drain runs every queued job first, otherwise only the running one ends.
 * Jobs not reaped are forgotten (their records are the owner's again). */
void dsd_tier_io_free(struct dsd_tier_io *io, bool drain);

/* Queues a copy of *j. Returns 0 or -EBUSY (depth jobs not yet reaped). */
int dsd_tier_io_submit(struct dsd_tier_io *io, const struct dsd_tier_job *j);
/* Queues j[0..n) in order, as many as there is room for, under one wakeup of the thread (reads
 * queued together run together: dsd_disk_tier_get_many). Returns how many were queued. */
int dsd_tier_io_submit_many(struct dsd_tier_io *io, const struct dsd_tier_job *j, int n);
/* Up to max finished jobs, oldest first. Returns how many (>= 0). */
int dsd_tier_io_reap(struct dsd_tier_io *io, struct dsd_tier_job *out, int max);
/* Jobs submitted and not yet reaped. */
int dsd_tier_io_pending(struct dsd_tier_io *io);
/* Waits until a job has finished and is not yet reaped, or timeout_ms passed. Returns whether
 * one is there. */
bool dsd_tier_io_wait(struct dsd_tier_io *io, int timeout_ms);

#endif
