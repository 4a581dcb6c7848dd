/*
 * daemon/kv/disk_tier.h: the disk tier of the KV cache (docs/KV_CACHE.md §6): page records
 * (daemon/kv/disk_page.h) in one preallocated file per model in the cache directory
 * (`disk_cache_dir`, default the unit's CacheDirectory= /var/cache/deepseekd), within a byte
 * budget (`disk_cache_gb`), found by their chain hash (daemon/kv/page_hash.h). Opening scans
 * the file's page headers, so a restarted daemon finds the pages an earlier one wrote.
 *
 *   struct dsd_disk_tier_config c = {.dir = dir, .budget_bytes = gb << 30, .geom = geom,
 *                                    .fingerprint = fp, .log = my_log, .log_user = me};
 *   struct dsd_disk_tier *dt = dsd_disk_tier_open(&c, &err);
 *   if (!dt) log "disk KV tier disabled: %s", err.msg and go on without it
 *   ...
 *   struct dsd_kv_page_meta m = {.parent_hash = ph};  memcpy(m.tokens, page_tokens, 256);
 *   if (dsd_disk_tier_put(dt, &m, mla, index, &err) < 0) log it; the page is only not cached
 *   ...
 *   if (dsd_disk_tier_contains(dt, h))                      // no I/O
 *       rc = dsd_disk_tier_get(dt, h, &expect, mla, index, &err);  // 0: both arenas filled
 *       // rc < 0: miss, corrupt (dropped), I/O error: recompute the page
 *   dsd_disk_tier_get_many(dt, n, gets);      // the same for n pages, read together
 *   dsd_disk_tier_get_stream(dt, n, gets, landed, me);  // and each page handed on as it lands
 *   dsd_disk_tier_close(dt);
 *
 * Reads and writes go through io_uring into 4096-aligned staging records registered with the
 * ring (one per read in flight, DSD_DISK_TIER_READ_DEPTH), with O_DIRECT where the file system
 * allows it (a tmpfs, for one, may refuse: then buffered I/O with a logged note). Where
 * io_uring is unavailable (a seccomp filter), plain pread/pwrite, also with a note. Every operation is synchronous for its caller. A write
 * puts the record's arenas first and its header last (a slot that held another page has its
 * header cleared before), so a write cut short leaves no header naming the new page: the slot
 * reads as empty or as a page whose checksums fail, never as a page.
 *
 * What opening tolerates (logged, never fatal to the daemon): files in the directory that
 * are not this model's cache file (skipped: another model's, or foreign); a cache file with
 * a foreign or outdated file header, or another geometry (reinitialized); a truncated file
 * (pages past its end dropped); slots whose header is corrupt or another model's (dropped).
 * A directory that is missing and cannot be created, not writable, or lacks the room for the
 * budget makes open fail with the reason: the caller runs without the disk tier.
 *
 * One thread does a tier's I/O (put, get, drop: the tier I/O thread, daemon/kv/tier_io.h, or
 * the engine's); contains and stats may be called from another thread at the same time (a
 * mutex guards the index and the counters, never held across I/O).
 */
#ifndef DSD_KV_DISK_TIER_H
#define DSD_KV_DISK_TIER_H

#include <stdbool.h>
#include <stdint.h>

#include "disk_page.h"
#include "err.h"

#define DSD_DISK_TIER_BUFFERED 1u   /* never O_DIRECT (tests of the buffered path) */
#define DSD_DISK_TIER_NO_URING 2u   /* never io_uring: pread/pwrite (tests of the fallback) */
#define DSD_DISK_TIER_NO_REGISTER 4u /* io_uring without a registered buffer (tests: what a
                                        locked-memory limit too low to register it leaves) */

#define DSD_DISK_TIER_READ_DEPTH 16  /* pages dsd_disk_tier_get_many keeps in flight at once */

#define DSD_DISK_TIER_FILE_MAGIC "DSDKVSLB" /* the file header's 8 bytes */
#define DSD_DISK_TIER_FILE_VERSION 1u

struct dsd_disk_tier_config {
    const char *dir;                    /* the cache directory (created if missing, one level) */
    uint64_t budget_bytes;              /* file size: a 4096-byte file header + the slots */
    struct dsd_kv_page_geom geom;
    uint64_t fingerprint;               /* dsd_kv_fingerprint() of the loaded model */
    unsigned flags;                     /* DSD_DISK_TIER_* */
    int test_write_delay_ms;            /* tests only: each write sleeps this long between its
                                         * arenas and its header (a slow disk, a window to cut
                                         * a write short in) */
    /* Optional: gets every note, warning and error (level: syslog priority, 3 error,
     * 4 warning, 5 notice, 6 info), one line each without the trailing newline. */
    void (*log)(void *user, int level, const char *msg);
    void *log_user;
};

struct dsd_disk_tier_stats {
    int slots, pages;                   /* capacity, pages stored now */
    uint64_t hits, misses;              /* gets served / not (absent, mismatch, corrupt, I/O) */
    uint64_t writes, evictions;         /* pages written; pages overwritten to make room */
    uint64_t dropped;                   /* pages found corrupt or foreign (scan and reads) */
    uint64_t io_errors;
    uint64_t read_requests;             /* disk requests that page reads took (a vectored read
                                           of consecutive slots is one) */
    bool direct, uring, registered;     /* O_DIRECT, io_uring, a registered staging buffer */
};

struct dsd_disk_tier;

/* Opens (creating or reinitializing as needed) the cache file and indexes the pages in it.
 * Returns NULL with err set ("disk KV tier disabled: ..."):
 *   -EINVAL   a config field is missing, or the budget holds no page
 *   -ENOENT, -EACCES, -EROFS, -ENOTDIR, -EPERM   the directory cannot be used
 *   -ENOSPC   the file system has no room for the budget
 *   -ENOMEM, -EIO, other -errno of open/fallocate/read */
struct dsd_disk_tier *dsd_disk_tier_open(const struct dsd_disk_tier_config *c, struct dsd_err *err);
void dsd_disk_tier_close(struct dsd_disk_tier *dt);

/* Whether a page named h is stored (no I/O, no verification: a get may still fail). */
bool dsd_disk_tier_contains(const struct dsd_disk_tier *dt, uint64_t h);

/* Stores a page: meta's parent_hash, depth and tokens (chain_hash and serial are set here),
 * both arenas (dsd_kv_page_mla_bytes and _index_bytes bytes). Overwrites the least recently
 * used page when the budget is full. A page already stored is only marked used. Returns 0,
 * -EIO or -ENOSPC (the write failed: the page is not stored; recompute it when needed). */
int dsd_disk_tier_put(struct dsd_disk_tier *dt, struct dsd_kv_page_meta *meta, const void *mla, const void *index,
                      struct dsd_err *err);

/* Reads page h and verifies the whole record; expect (may be NULL) must then agree on
 * parent_hash and tokens. Fills mla and index only when everything checks. Returns 0,
 * -ENOENT (not stored, or a different page under that name), -EIO (read failed: dropped),
 * or the error of dsd_kv_page_verify (-EBADMSG, -ENODATA, -ESTALE, ...: dropped). */
int dsd_disk_tier_get(struct dsd_disk_tier *dt, uint64_t h, const struct dsd_kv_page_meta *expect, void *mla,
                      void *index, struct dsd_err *err);

/* One page of dsd_disk_tier_get_many: the arguments of dsd_disk_tier_get, and its result. */
struct dsd_disk_get {
    uint64_t hash;
    const struct dsd_kv_page_meta *expect;  /* may be NULL */
    void *mla, *index;                      /* filled only when the page checks (rec NULL) */
    /* Or a whole record buffer (dsd_kv_page_record_bytes): the record is read into it and
     * verified there, arenas at dsd_kv_page_mla/index (mla and index are then ignored).
     * Aligned to DSD_KV_PAGE_ALIGN, the disk reads straight into it; otherwise through a
     * staging record and a copy. On a failure its contents are undefined. */
    void *rec;
    int rc;                                 /* out: what dsd_disk_tier_get would return */
    struct dsd_err err;                     /* out, when rc < 0: why */
};
/* dsd_disk_tier_get for n pages through one window of reads in flight (io_uring: up to
 * DSD_DISK_TIER_READ_DEPTH requests, vectored over consecutive slots): each page is verified
 * as it lands while the next are read, so a long prefix comes off the disk at its queue's
 * rate, not one latency per page nor one checksum pass per batch, and the window never drains
 * before the last page. Each g[k] gets its own rc; a page named twice in one call is read
 * once (the later gets of it are -ENOENT). */
void dsd_disk_tier_get_many(struct dsd_disk_tier *dt, int n, struct dsd_disk_get *g);
/* The same, and landed(user, k) for each k in order, as soon as g[k] and every get before it
 * are judged (g[k].rc and its record final: the caller may use it from then on, while the
 * call goes on reading the rest). landed runs on the calling thread and must not call into
 * the tier. */
void dsd_disk_tier_get_stream(struct dsd_disk_tier *dt, int n, struct dsd_disk_get *g,
                              void (*landed)(void *user, int k), void *user);

/* Forgets page h (its slot's header is cleared on disk). Returns 0 or -ENOENT. */
int dsd_disk_tier_drop(struct dsd_disk_tier *dt, uint64_t h);

void dsd_disk_tier_stats(const struct dsd_disk_tier *dt, struct dsd_disk_tier_stats *out);
/* The cache file's path (for messages and tests). */
const char *dsd_disk_tier_path(const struct dsd_disk_tier *dt);
/* The page geometry the tier stores. */
const struct dsd_kv_page_geom *dsd_disk_tier_geom(const struct dsd_disk_tier *dt);

#endif
