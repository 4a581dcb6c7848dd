/*
 * daemon/kv/prefix_cache.h: the tiered prefix cache the engine uses (docs/KV_CACHE.md §7):
 * the radix tree (radix.h) over the device pool (kv_cache.h), the host tier (host_tier.h) and
 * the disk tier (disk_tier.h), put together. Policy in one place: what a new sequence shares,
 * what a finished or preempted one hands over, and what moves down a tier when the pool runs
 * short.
 *
 *   struct dsd_prefix_cache_config c = {.host_bytes = 4ull << 30, .disk_dir = "/var/cache/deepseekd",
 *                                       .disk_bytes = 64ull << 30, .fingerprint = fp, .log = f};
 *   struct dsd_prefix_cache *pc = dsd_prefix_cache_new(kv, &c, &err);  // tiers that fail are logged, left out
 *
 *   // admission: the longest cached prefix, whole pages, >= 1 token left to compute
 *   struct dsd_prefix_hold h = {0};
 *   int m = dsd_prefix_cache_acquire(pc, tokens, n_tokens - 1, &seq.kv, &h, &hit);  // seq.kv empty
 *   ... the sequence computes from position 64 * m ...
 *   // every step: each page it completed enters the tree at once, locked in h
 *   dsd_prefix_cache_publish(pc, tokens, n_computed, &seq.kv, &h);
 *   // it ends, or is preempted: its full computed pages go to the tree, its hold is dropped
 *   dsd_prefix_cache_adopt(pc, tokens, n_computed, &seq.kv);
 *   dsd_prefix_cache_unhold(pc, &h);
 *   dsd_kv_seq_release(kv, &seq.kv);
 *   // the pool is short: pages the tree alone holds move down (device -> host -> disk)
 *   dsd_prefix_cache_make_room(pc, want_free_pages);
 *
 * Where a page goes: a device page the tree alone holds (unlocked) is copied to a host slot
 * when the pool is short; a host page is written to disk (unless already there) and dropped
 * when the host tier is short; without a tier below, it is dropped. Every page the tree takes
 * is written to the disk tier once, so pages survive a restart however the daemon ends: with
 * a host tier, on the tier I/O thread (daemon/kv/tier_io.h; the engine copies the page into a
 * staging record and never waits on the disk), otherwise synchronously. A match reloads host
 * pages into fresh device pages, then continues with pages on their way to disk (served from
 * their staging record) or, without the I/O thread, on disk by chain hash (disk -> staging
 * record -> device page), each page whole and verified (docs/KV_CACHE.md §6.3); a page that
 * fails is dropped and the match ends there: the sequence computes the rest. With the I/O
 * thread, pages on disk are read ahead into the host tier before admission (wait_for).
 * Running sequences publish their pages as each completes (publish).
 *
 * The engine thread owns it, like the pool; the I/O thread touches only the disk tier and the
 * records it was handed. Allocation happens at creation (the tree, the tiers, the staging
 * records, scratch for the longest sequence the pool holds) and per sequence (its hold's
 * refs, grown by doubling with its length).
 */
#ifndef DSD_KV_PREFIX_CACHE_H
#define DSD_KV_PREFIX_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "kv_cache.h"
#include "radix.h"

#define DSD_PREFIX_CACHE_IO_DEPTH 16   /* staging records for writes in flight (io_depth 0) */

struct dsd_prefix_cache_config {
    uint64_t host_bytes;            /* host tier budget, 0 = no host tier */
    const char *disk_dir;           /* cache directory, NULL or "" = no disk tier */
    uint64_t disk_bytes;            /* disk tier budget, 0 = no disk tier */
    uint64_t fingerprint;           /* dsd_kv_fingerprint() of the loaded model */
    unsigned disk_flags;            /* DSD_DISK_TIER_* (tests) */
    /* Disk I/O runs on the tier I/O thread (daemon/kv/tier_io.h) when there are a host tier
     * and a disk tier: io_depth staging records for writes in flight (0: the default). */
    int io_depth;
    bool sync_io;                   /* tests: disk I/O on the caller's thread even so */
    int test_io_delay_ms;           /* tests: the I/O thread sleeps this long before each job */
    int test_write_delay_ms;        /* tests: each disk write sleeps this long before its header */
    /* Notes and warnings (level: syslog priority), one line each. May be NULL. */
    void (*log)(void *user, int level, const char *msg);
    void *log_user;
};

/* What one sequence holds locked in the tree (its match). Start zeroed. */
struct dsd_prefix_hold {
    struct dsd_radix_ref *refs;
    int n, cap;
};

/* Where a match's pages came from. */
struct dsd_prefix_hit {
    int device, host, disk;         /* pages per tier */
};

struct dsd_prefix_cache_stats {
    bool host_tier, disk_tier;      /* which tiers run */
    int device_pages;               /* pages the tree holds on the device (in use or not) */
    int device_reclaimable;         /* of those, unlocked: make_room can free them */
    int host_pages, host_slots;
    int host_used;                  /* host slots allocated: the tree's host pages, pending reloads and reads */
    int disk_pages, disk_slots;
    uint64_t lookups;               /* acquire calls */
    /* pages per tier: hits = served from it; misses = looked for there and not found
     * (a page missed on the device is looked for on the host, then on disk) */
    uint64_t hits[3], misses[3];
    /* pages leaving a tier: device -> host and host -> disk (demotions); dropped for want of
     * room (evictions: device pages with no host room, host pages, disk pages overwritten) */
    uint64_t demotions[2], evictions[3];
    uint64_t disk_writes, disk_errors, disk_dropped;    /* dropped: corrupt or foreign */
    uint64_t published;             /* pages the tree took from running sequences (publish) */
    uint64_t waits;                 /* times a new sequence waited for a page being computed */
    uint64_t prefetched;            /* pages read ahead from disk into the host tier */
    uint64_t disk_skipped;          /* pages not written to disk: the write queue was full */
    /* host -> device reloads of hits (acquire): pages copied and what they cost the engine
     * thread: the time from enqueueing the copies to their synchronization, or, where they
     * run beside the step (side copies), the time to enqueue them */
    uint64_t reload_pages;
    double reload_seconds;
    /* disk -> host reads ahead (dsd_prefix_cache_wait_for): pages read and verified, and the
     * time reads were under way, from queueing the first of a read-ahead to reaping its last
     * (overlapping read-aheads count once): pages x record bytes / seconds is the rate a disk
     * hit's records arrive at, beside the disk's own */
    uint64_t read_ahead_pages;
    double read_ahead_seconds;
};

struct dsd_prefix_cache;

/* Builds the tree and the tiers for kv. A host tier that cannot be allocated, or a disk tier
 * whose directory cannot be used, is logged and left out: creation fails only for want of
 * memory for the tree itself (NULL with err set, -ENOMEM / -EINVAL). */
struct dsd_prefix_cache *dsd_prefix_cache_new(struct dsd_kv_cache *kv, const struct dsd_prefix_cache_config *c,
                                              struct dsd_err *err);
void dsd_prefix_cache_free(struct dsd_prefix_cache *pc);

/* Shares the longest cached prefix of tokens[0..n_tokens) (whole pages) into seq, which must
 * hold no pages, reloading host and disk pages into device pages as it goes (it may call
 * make_room for them; host pages as side copies where the backend has them: call step_done
 * after the next forward step). Locks what it shares in h (drop with unhold). Fills hit (may be NULL).
 * Returns the pages shared (>= 0), -EINVAL (seq not empty), -ENOMEM. */
int dsd_prefix_cache_acquire(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens, struct dsd_kv_seq *seq,
                             struct dsd_prefix_hold *h, struct dsd_prefix_hit *hit);
/* After each forward step (ok: it succeeded, so it synchronized): a backend with side copies
 * (kernels/ops.h side_copy) gets an acquire's host pages back beside the step's compute, each
 * layer's pages before that layer's attention; their host slots are held until a step shows
 * the copies landed (ok) and then freed, or, when the step failed, the pages go back to those
 * host slots (their device copies are not trusted). A no-op without pending reloads. */
void dsd_prefix_cache_step_done(struct dsd_prefix_cache *pc, bool ok);

/* Pages of tokens[0..n_tokens) the tree holds now (device or host), changing nothing: what
 * the scheduler ranks a long queue by. */
int dsd_prefix_cache_peek(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens);

/* Drops h's locks (keeps its storage for reuse). */
void dsd_prefix_cache_unhold(struct dsd_prefix_cache *pc, struct dsd_prefix_hold *h);
/* Frees h's storage (after unhold). */
void dsd_prefix_cache_hold_destroy(struct dsd_prefix_hold *h);

/* Hands the full pages of tokens[0..n_computed) (the KV seq has computed) to the tree: it
 * takes a reference to each page it adopts, and writes each new one to disk. Returns the
 * pages adopted (>= 0). */
int dsd_prefix_cache_adopt(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_computed,
                           const struct dsd_kv_seq *seq);

/* A running sequence's pages enter the tree as soon as they are complete: the full pages
 * of tokens[0..n_computed) (computed into seq's pages, every layer written) past the h->n
 * pages h holds are published, each locked in h (drop with unhold as usual), so a
 * concurrent sequence with the same prefix shares them read-only (the owner never rewrites
 * a completed position). h must hold seq's pages 0..h->n (what acquire and publish put
 * there). A page another sequence published first is locked and not taken (the sequence
 * keeps its own copy); publishing stops at a page the tree cannot take (full, a collision)
 * and is tried again next call. Each page taken is written to disk once. Returns the pages
 * taken (>= 0) or -ENOMEM. */
int dsd_prefix_cache_publish(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_computed,
                             const struct dsd_kv_seq *seq, struct dsd_prefix_hold *h);

/* Pages being computed this step, so requests with the same new prefix arriving together
 * compute it once: step_begin forgets the last step's; computing registers the pages of
 * tokens[0..n_tokens) a sequence holding h completes by computing positions [from, to);
 * wait_for says whether the first page of tokens[0..n_tokens) the tree lacks is being
 * computed (the new sequence waits a step and shares it once published). */
void dsd_prefix_cache_step_begin(struct dsd_prefix_cache *pc);
void dsd_prefix_cache_computing(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens, int from, int to,
                                const struct dsd_prefix_hold *h);
bool dsd_prefix_cache_wait_for(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens);
/* (With the I/O thread, wait_for also reads the pages that follow on disk ahead into the
 * host tier and says to wait while they are on their way; step_begin takes in what the
 * thread finished. A step with nothing to run but sequences waiting on reads calls io_wait,
 * which sleeps up to timeout_ms for the thread, taking the pages read ahead in as they land,
 * and returns early once none is on its way; with none on its way, once any job finished.) */
void dsd_prefix_cache_io_wait(struct dsd_prefix_cache *pc, int timeout_ms);

/* Pages make_room could free now (the tree's unlocked device pages). */
int dsd_prefix_cache_reclaimable(const struct dsd_prefix_cache *pc);
/* Moves the tree's least recently used unlocked device pages down (or drops them) until the
 * pool has `want` free pages or nothing more can go. Returns the pool's free pages. */
int dsd_prefix_cache_make_room(struct dsd_prefix_cache *pc, int want);

void dsd_prefix_cache_stats(const struct dsd_prefix_cache *pc, struct dsd_prefix_cache_stats *out);
/* The tree (tests: dsd_radix_check). */
const struct dsd_radix *dsd_prefix_cache_tree(const struct dsd_prefix_cache *pc);

#endif
