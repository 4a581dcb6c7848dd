/* The tiered prefix cache (contract in prefix_cache.h). */
#include "prefix_cache.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "disk_page.h"
#include "disk_tier.h"
#include "hash_index.h"
#include "host_tier.h"
#include "page_hash.h"
#include "tier_io.h"

struct dsd_prefix_cache {
    struct dsd_kv_cache *kv;
    struct dsd_backend *be;
    struct dsd_kv_page_geom g;
    struct dsd_radix *t;
    struct dsd_host_tier *ht;       /* NULL: no host tier */
    struct dsd_disk_tier *dt;       /* NULL: no disk tier */
    /* disk I/O staging records (with a disk tier): one for synchronous I/O; with the I/O
     * thread, io_depth records, each a page being written (writing: hash -> record) */
    struct dsd_host_tier *stage;
    struct dsd_tier_io *io;         /* NULL: disk I/O on the engine thread (no host tier) */
    int io_depth;
    struct dsd_tier_job *reaped;    /* [ring_jobs(pc)] */
    struct dsd_tier_job *read_jobs; /* [reads_max]: one read_ahead call's */
    int reads_max;                  /* reads ahead queued at most (the job ring's share) */
    int n_reads;                    /* reads ahead queued and not yet reaped */
    double reads_t0;                /* when the first of them was queued (ms) */
    struct dsd_tier_job *staged;    /* [io_depth]: writes whose device copies are enqueued */
    int n_staged;
    struct dsd_hash_index *writing; /* chain hash -> stage record, writes in flight */
    struct dsd_hash_index *reading; /* chain hash -> host slot, reads ahead in flight */
    uint8_t *from_disk;             /* [host slots]: the slot's page was read ahead from disk */
    int32_t *pages;                 /* scratch: a match's device pages, adopt's values */
    int *slots;                     /* scratch: the host slots acquire copies from */
    uint8_t *taken;
    struct dsd_radix_ref *displaced;
    /* device pages demoted to the host tier whose copies are enqueued but not yet waited
     * for (make_room's batch): the tree says HOST already, the device page is still held */
    struct demoting { uint64_t hash; int32_t node, page, slot; } *demoting;
    int n_demoting;
    /* demotions settled in stream order while side copies were pending (settle_ordered): the
     * device page is free already (whatever reuses it runs after the copy on the backend's
     * stream), the copy is confirmed by the next synchronization ([DEMOTE_BATCH]) */
    struct demoting *unconfirmed;
    int n_unconfirmed;
    /* host pages reloaded by the backend's side copies (acquire): the tree says DEVICE already
     * and the sequence runs, but the copies land only before the step's layers that read them
     * (docs/KV_CACHE.md), so each host slot is held until a synchronization shows they landed
     * (side_settle), or given back to its page if the step failed ([host slots]) */
    struct side_reload { uint64_t hash; int32_t page, slot; } *side;
    int n_side;
    uint64_t *hashes;
    /* pages sequences compute this step (chain hashes): a new sequence whose next page is
     * among them waits for it instead of computing it again (dsd_prefix_cache_wait_for) */
    struct dsd_hash_index *computing;
    uint64_t *computing_v;
    int n_computing;
    int max_pages;                  /* the pool's pages: the longest sequence */
    void (*log)(void *user, int level, const char *msg);
    void *log_user;
    struct dsd_prefix_cache_stats st;
};

static void note(struct dsd_prefix_cache *pc, int level, const char *fmt, ...)
{
    if (!pc->log)
        return;
    char msg[DSD_ERR_MSG_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pc->log(pc->log_user, level, msg);
}

/* Milliseconds of CLOCK_MONOTONIC (the debug log's timeline of reads and reloads). */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void side_settle(struct dsd_prefix_cache *pc, bool landed);

/* After a synchronization: the demotions settled in stream order are confirmed, or, if it
 * failed, their host records are not to be trusted: a node still on that host slot leaves the
 * tree (one with children or locks stays: a device that fails a synchronization fails every
 * later step too, and host_evict_one writes nothing to disk while it does). */
static void confirm_demotions(struct dsd_prefix_cache *pc, bool ok)
{
    for (int i = 0; !ok && i < pc->n_unconfirmed; i++) {
        const struct demoting *d = &pc->unconfirmed[i];
        struct dsd_radix_ref ref;
        if (dsd_radix_lookup(pc->t, d->hash, &ref) == 1 && ref.node == d->node && ref.tier == DSD_KV_TIER_HOST &&
            ref.value == d->slot && dsd_radix_remove(pc->t, d->node) == 0)
            dsd_host_tier_release(pc->ht, d->slot);
    }
    pc->n_unconfirmed = 0;
}

static int sync_be(struct dsd_prefix_cache *pc)
{
    struct dsd_err err = {{0}};
    int rc = dsd_backend_ops(pc->be)->synchronize(pc->be, &err);
    if (rc)
        note(pc, 3, "KV cache: a tier copy failed: %s", err.msg);
    else
        side_settle(pc, true);      /* the side copies landed too */
    confirm_demotions(pc, rc == 0);
    return rc;
}

/* The side-copied reloads once a step is over: after a step that synchronized (landed) the
 * copies are in and the host slots go free. After a failed step they are waited for here; if
 * the device cannot even synchronize, each page goes back to its host slot where the tree
 * can still move it (the device copy is not to be trusted; a page a failed sequence still
 * locks stays, but such a device fails every later step too). */
static void side_settle(struct dsd_prefix_cache *pc, bool landed)
{
    if (pc->n_side == 0)
        return;
    if (!landed) {
        struct dsd_err err = {{0}};
        landed = dsd_backend_ops(pc->be)->synchronize(pc->be, &err) == 0;
        if (!landed)
            note(pc, 3, "KV cache: %d pages reloaded beside a failed step: %s", pc->n_side, err.msg);
    }
    for (int i = 0; i < pc->n_side; i++) {
        const struct side_reload *r = &pc->side[i];
        struct dsd_radix_ref ref;
        if (!landed && dsd_radix_lookup(pc->t, r->hash, &ref) == 1 && ref.tier == DSD_KV_TIER_DEVICE &&
            ref.value == r->page && dsd_radix_set(pc->t, ref.node, DSD_KV_TIER_HOST, r->slot) == 0) {
            dsd_kv_page_unref(pc->kv, r->page);
            continue;
        }
        dsd_host_tier_release(pc->ht, r->slot);
    }
    pc->n_side = 0;
}

void dsd_prefix_cache_step_done(struct dsd_prefix_cache *pc, bool ok)
{
    if (!pc)
        return;
    side_settle(pc, ok);
    /* a step that synchronized saw every copy enqueued before it land, demotions included */
    if (ok)
        confirm_demotions(pc, true);
    else if (pc->n_unconfirmed)
        sync_be(pc);
}

/* Device pages demoted to the host tier per synchronization (make_room). */
#define DEMOTE_BATCH 256

/* The tier I/O job ring: reads_max reads ahead beside io_depth writes (one per staging
 * record; reads need none, they land in their host slots). reads_max is what one prefix may
 * read ahead (half the host tier, and no more than the longest sequence's pages), so that a
 * whole disk hit is queued at once and the I/O thread reads it in one window, start to end:
 * queued 64 or 128 at a time, the disk idled at every batch's tail while the window drained
 * and the engine reaped (H100, 2026-12-06/07: 59 % of dd's rate end to end). */
static int ring_jobs(const struct dsd_prefix_cache *pc)
{
    return pc->reads_max + pc->io_depth;
}

struct dsd_prefix_cache *dsd_prefix_cache_new(struct dsd_kv_cache *kv, const struct dsd_prefix_cache_config *c,
                                              struct dsd_err *err)
{
    struct dsd_prefix_cache *pc = calloc(1, sizeof *pc);
    if (!pc) {
        dsd_errf(err, -ENOMEM, "prefix cache: out of memory");
        return NULL;
    }
    pc->kv = kv;
    pc->be = dsd_kv_cache_backend(kv);
    pc->g = dsd_kv_page_geom_of(dsd_kv_cache_layout(kv), dsd_kv_cache_n_layers(kv));
    pc->log = c->log;
    pc->log_user = c->log_user;
    pc->max_pages = dsd_kv_cache_total_pages(kv);
    struct dsd_err e2 = {{0}};
    if (c->host_bytes) {
        pc->ht = dsd_host_tier_new(pc->be, &pc->g, c->host_bytes, &e2);
        if (!pc->ht)
            note(pc, 4, "host KV tier disabled: %s", e2.msg);
    }
    if (c->disk_bytes && c->disk_dir && c->disk_dir[0]) {
        struct dsd_disk_tier_config dc = {.dir = c->disk_dir, .budget_bytes = c->disk_bytes, .geom = pc->g,
                                          .fingerprint = c->fingerprint, .flags = c->disk_flags,
                                          .test_write_delay_ms = c->test_write_delay_ms, .log = c->log,
                                          .log_user = c->log_user};
        pc->dt = dsd_disk_tier_open(&dc, &e2);
        if (!pc->dt) {
            note(pc, 4, "%s", e2.msg);
        } else {
            /* the I/O thread needs the host tier: pages read ahead land there */
            pc->io_depth = pc->ht && !c->sync_io ? (c->io_depth > 0 ? c->io_depth : DSD_PREFIX_CACHE_IO_DEPTH) : 1;
            pc->stage = dsd_host_tier_new(pc->be, &pc->g, (uint64_t)pc->io_depth * dsd_kv_page_record_bytes(&pc->g),
                                          &e2);
            if (!pc->stage) {
                note(pc, 4, "disk KV tier disabled: no staging records: %s", e2.msg);
                dsd_disk_tier_close(pc->dt);
                pc->dt = NULL;
            } else if (pc->io_depth > 1) {
                int half = dsd_host_tier_slots(pc->ht) / 2;
                pc->reads_max = half < 1 ? 1 : half < pc->max_pages ? half : pc->max_pages;
                pc->io = dsd_tier_io_new(pc->dt, ring_jobs(pc), c->test_io_delay_ms, &e2);
                pc->reaped = malloc((size_t)ring_jobs(pc) * sizeof *pc->reaped);
                pc->read_jobs = malloc((size_t)pc->reads_max * sizeof *pc->read_jobs);
                pc->staged = malloc((size_t)pc->io_depth * sizeof *pc->staged);
                pc->writing = dsd_hash_index_new(pc->io_depth);
                pc->reading = dsd_hash_index_new(dsd_host_tier_slots(pc->ht));
                pc->from_disk = calloc((size_t)dsd_host_tier_slots(pc->ht), 1);
                if (!pc->io || !pc->reaped || !pc->read_jobs || !pc->staged || !pc->writing || !pc->reading ||
                    !pc->from_disk) {
                    note(pc, 4, "disk KV tier: no I/O thread (%s); disk I/O on the engine thread",
                         pc->io ? "out of memory" : e2.msg);
                    dsd_tier_io_free(pc->io, false);
                    pc->io = NULL;
                }
            }
        }
    }
    int host_slots = pc->ht ? dsd_host_tier_slots(pc->ht) : 0;
    pc->t = dsd_radix_new(pc->max_pages + host_slots, err);
    /* every pending side reload holds a distinct host slot */
    if (host_slots > 0 && dsd_backend_ops(pc->be)->side_copy && !(pc->side = malloc((size_t)host_slots * sizeof *pc->side)))
        note(pc, 4, "KV cache: host hits reload without overlapping the compute (out of memory)");
    size_t mp = (size_t)pc->max_pages + 1;
    pc->pages = malloc(mp * sizeof *pc->pages);
    pc->slots = malloc(mp * sizeof *pc->slots);
    pc->taken = malloc(mp);
    pc->displaced = malloc(mp * sizeof *pc->displaced);
    pc->demoting = malloc(DEMOTE_BATCH * sizeof *pc->demoting);
    pc->unconfirmed = malloc(DEMOTE_BATCH * sizeof *pc->unconfirmed);
    pc->hashes = malloc(mp * sizeof *pc->hashes);
    pc->computing = dsd_hash_index_new((int)mp);
    pc->computing_v = malloc(mp * sizeof *pc->computing_v);
    if (!pc->t || !pc->pages || !pc->slots || !pc->taken || !pc->displaced || !pc->demoting || !pc->unconfirmed ||
        !pc->hashes || !pc->computing || !pc->computing_v) {
        if (pc->t)
            dsd_errf(err, -ENOMEM, "prefix cache: out of memory for %d pages of scratch", pc->max_pages);
        dsd_prefix_cache_free(pc);
        return NULL;
    }
    pc->st.host_tier = pc->ht != NULL;
    pc->st.disk_tier = pc->dt != NULL;
    return pc;
}

void dsd_prefix_cache_free(struct dsd_prefix_cache *pc)
{
    if (!pc)
        return;
    /* side copies still reading host slots, and demotions still writing them, land first */
    if (pc->n_side || pc->n_unconfirmed)
        sync_be(pc);
    free(pc->side);
    /* the tree's device pages go back to the pool (the pool may outlive the cache) */
    if (pc->t) {
        int32_t v;
        while (dsd_radix_count(pc->t, DSD_KV_TIER_HOST) > 0 && dsd_radix_evict(pc->t, DSD_KV_TIER_HOST, 1, &v) == 1)
            if (pc->ht)
                dsd_host_tier_release(pc->ht, v);
        while (dsd_radix_evict(pc->t, DSD_KV_TIER_DEVICE, 1, &v) == 1)
            dsd_kv_page_unref(pc->kv, v);
    }
    dsd_radix_free(pc->t);
    dsd_tier_io_free(pc->io, true);     /* queued writes reach the disk first */
    free(pc->reaped);
    dsd_hash_index_free(pc->writing);
    dsd_hash_index_free(pc->reading);
    free(pc->from_disk);
    dsd_host_tier_free(pc->ht);
    dsd_host_tier_free(pc->stage);
    dsd_disk_tier_close(pc->dt);
    free(pc->pages);
    free(pc->slots);
    free(pc->read_jobs);
    free(pc->staged);
    free(pc->taken);
    free(pc->displaced);
    free(pc->demoting);
    free(pc->unconfirmed);
    free(pc->hashes);
    dsd_hash_index_free(pc->computing);
    free(pc->computing_v);
    free(pc);
}

/* ---- moving pages down ---------------------------------------------------------------- */

/* Finished I/O jobs: written records go back to the staging pool, pages read ahead enter
 * the tree in the host tier under their parent (dropped when it left meanwhile). */
static void reap(struct dsd_prefix_cache *pc)
{
    if (!pc->io)
        return;
    int n = dsd_tier_io_reap(pc->io, pc->reaped, ring_jobs(pc)), landed = 0;
    for (int k = 0; k < n; k++)
        landed += pc->reaped[k].kind == DSD_TIER_READ;
    if (landed) {
        /* the read-ahead's own rate: the pages it read over the time reads were under way,
         * from queueing the first to reaping the last (kv_cache_read_ahead_*) */
        const double t = now_ms();
        pc->n_reads -= landed;
        if (pc->n_reads == 0)
            pc->st.read_ahead_seconds += (t - pc->reads_t0) / 1e3;
        note(pc, 7, "KV read-ahead: %d pages landed at %.3f ms (%d pending)", landed, t, pc->n_reads);
    }
    for (int k = 0; k < n; k++) {
        struct dsd_tier_job *j = &pc->reaped[k];
        int slot = (int)(j->tag & 0xffffffffu);
        if (j->kind == DSD_TIER_WRITE) {
            dsd_hash_index_del(pc->writing, j->hash);
            dsd_host_tier_release(pc->stage, slot);
            if (j->rc < 0) {
                pc->st.disk_errors++;
                note(pc, 4, "disk KV tier: a page was not stored: %s", j->msg);
            } else {
                pc->st.disk_writes++;
                pc->st.demotions[1] += j->tag >> 32;    /* it left the host tier for disk */
            }
            continue;
        }
        dsd_hash_index_del(pc->reading, j->hash);
        pc->st.read_ahead_pages += j->rc == 0;
        struct dsd_radix_ref parent, r;
        bool root = j->meta.parent_hash == DSD_KV_CHAIN_ROOT;
        if (j->rc == 0 && (root || dsd_radix_lookup(pc->t, j->meta.parent_hash, &parent) == 1) &&
            dsd_radix_extend(pc->t, root ? NULL : &parent, j->meta.tokens, DSD_KV_TIER_HOST, slot, &r) == 1) {
            dsd_radix_unlock(pc->t, &r, 1);
            pc->from_disk[slot] = 1;
            pc->st.prefetched++;
            continue;
        }
        if (j->rc < 0 && j->rc != -ENOENT) {
            pc->st.disk_dropped++;
            note(pc, 4, "disk KV tier: page dropped, recomputing it: %s", j->msg);
        }
        dsd_host_tier_release(pc->ht, slot);
    }
}

/* A free staging record, reaping finished jobs when none is free. -ENOSPC: none. */
static int stage_record(struct dsd_prefix_cache *pc)
{
    int s = dsd_host_tier_alloc(pc->stage);
    if (s < 0) {
        reap(pc);
        s = dsd_host_tier_alloc(pc->stage);
    }
    return s < 0 ? -ENOSPC : s;
}

/* Stores page m (named hash) on disk, unless it is there or on its way: from device page
 * `page` (copied out into a staging record first) or, when page < 0, from the host record
 * rec. With the I/O thread the write is queued (the engine never waits on the disk; a full
 * queue leaves the page unwritten: disk_skipped); otherwise it is written now. demotion:
 * the page is leaving the host tier for the disk. */
static void disk_store(struct dsd_prefix_cache *pc, struct dsd_kv_page_meta *m, uint64_t hash, int32_t page,
                       void *rec, bool demotion)
{
    if (!pc->dt || dsd_disk_tier_contains(pc->dt, hash) || (pc->io && dsd_hash_index_get(pc->writing, hash) >= 0))
        return;
    int slot = -1;
    if (page >= 0 || pc->io) {
        if ((slot = stage_record(pc)) < 0) {
            pc->st.disk_skipped++;
            return;
        }
        void *stage = dsd_host_tier_record(pc->stage, slot);
        if (page >= 0 && pc->io) {
            /* the copy is enqueued; flush_writes waits for all of a call's copies at once,
             * then queues their writes (a synchronization per page cost more than its copy) */
            if (dsd_host_tier_copy_out(pc->stage, pc->kv, page, slot) < 0 ||
                dsd_hash_index_put(pc->writing, hash, slot) < 0) {
                dsd_host_tier_release(pc->stage, slot);
                return;
            }
            pc->staged[pc->n_staged++] = (struct dsd_tier_job){.kind = DSD_TIER_WRITE, .hash = hash, .meta = *m,
                                                               .rec = stage, .tag = (uint32_t)slot};
            return;
        }
        if (page >= 0) {
            if (dsd_host_tier_copy_out(pc->stage, pc->kv, page, slot) < 0 || sync_be(pc) != 0) {
                dsd_host_tier_release(pc->stage, slot);
                return;
            }
        } else {
            memcpy(dsd_kv_page_mla(stage), dsd_kv_page_mla(rec), dsd_kv_page_mla_bytes(&pc->g));
            memcpy(dsd_kv_page_index(stage, &pc->g), dsd_kv_page_index(rec, &pc->g), dsd_kv_page_index_bytes(&pc->g));
        }
        rec = stage;
    }
    if (pc->io) {
        struct dsd_tier_job j = {.kind = DSD_TIER_WRITE, .hash = hash, .meta = *m, .rec = rec,
                                 .tag = (uint64_t)demotion << 32 | (uint32_t)slot};
        if (dsd_tier_io_submit(pc->io, &j) < 0 || dsd_hash_index_put(pc->writing, hash, slot) < 0) {
            dsd_host_tier_release(pc->stage, slot);     /* (submit cannot fail with records free) */
            pc->st.disk_skipped++;
        }
        return;
    }
    struct dsd_err err = {{0}};
    if (dsd_disk_tier_put(pc->dt, m, dsd_kv_page_mla(rec), dsd_kv_page_index(rec, &pc->g), &err) < 0) {
        pc->st.disk_errors++;
        note(pc, 4, "disk KV tier: a page was not stored: %s", err.msg);
    } else {
        pc->st.disk_writes++;
        pc->st.demotions[1] += demotion;
    }
    if (slot >= 0)
        dsd_host_tier_release(pc->stage, slot);
}

/* Waits for the copies disk_store staged (one synchronization), then queues their writes.
 * On a failed copy the pages are not written (they stay cached where they are). */
static void flush_writes(struct dsd_prefix_cache *pc)
{
    if (pc->n_staged == 0)
        return;
    int n = pc->n_staged, queued = 0;
    pc->n_staged = 0;
    if (sync_be(pc) == 0)
        queued = dsd_tier_io_submit_many(pc->io, pc->staged, n);
    for (int k = queued > 0 ? queued : 0; k < n; k++) {
        dsd_hash_index_del(pc->writing, pc->staged[k].hash);
        dsd_host_tier_release(pc->stage, (int)(pc->staged[k].tag & 0xffffffffu));
        pc->st.disk_skipped++;
    }
}

/* Waits for the demotions' copies: then their device pages go free; if the copies failed,
 * the pages go back to the device tier (latest first, so no node is ever faster than its
 * parent) and the host slots free. Returns 0 or the synchronization's -errno. */
static int settle(struct dsd_prefix_cache *pc)
{
    if (pc->n_demoting == 0 && pc->n_unconfirmed == 0)
        return 0;
    int rc = sync_be(pc);
    for (int i = pc->n_demoting - 1; i >= 0; i--) {
        struct demoting *d = &pc->demoting[i];
        if (rc == 0) {
            dsd_kv_page_unref(pc->kv, d->page);
            pc->st.demotions[0]++;
        } else {
            dsd_radix_set(pc->t, d->node, DSD_KV_TIER_DEVICE, d->page);
            dsd_host_tier_release(pc->ht, d->slot);
        }
    }
    pc->n_demoting = 0;
    return rc;
}

/* settle for make_room while a hit's side copies are pending (pc->n_side): a synchronization
 * would wait for them too, and the page a hit's own step needs from a full pool would wait for
 * the hit's whole reload (H100, 2026-12-07: the overlap gained nothing). The demoted device
 * pages go free now instead: the backend runs the copies and whatever reuses the pages in the
 * order they were enqueued on its stream; the host records are confirmed by the next
 * synchronization (confirm_demotions), and host_evict_one, the one host-side reader of a
 * record, settles first. Without pending side copies: settle. */
static int settle_ordered(struct dsd_prefix_cache *pc)
{
    if (pc->n_side == 0 || pc->n_demoting > DEMOTE_BATCH - pc->n_unconfirmed)
        return settle(pc);
    for (int i = 0; i < pc->n_demoting; i++) {
        dsd_kv_page_unref(pc->kv, pc->demoting[i].page);
        pc->st.demotions[0]++;
        pc->unconfirmed[pc->n_unconfirmed++] = pc->demoting[i];
    }
    pc->n_demoting = 0;
    return 0;
}

/* Frees one host slot: the least recently used unlocked host leaf goes to disk (where it
 * is not already) and leaves the tree. Returns 0 or -ENOENT (nothing can go). */
static int host_evict_one(struct dsd_prefix_cache *pc)
{
    struct dsd_radix_ref v;
    /* the victim's record may be a demotion still in flight */
    if (!pc->ht || settle(pc) != 0 || dsd_radix_victim(pc->t, DSD_KV_TIER_HOST, DSD_RADIX_LEAF_ONLY, &v) != 1)
        return -ENOENT;
    struct dsd_kv_page_meta m = {0};
    int depth = 0;
    if (pc->dt && dsd_radix_page(pc->t, v.node, &m.parent_hash, m.tokens, &depth) == 0) {
        m.depth = (uint32_t)depth;
        disk_store(pc, &m, v.hash, -1, dsd_host_tier_record(pc->ht, v.value), true);
    }
    if (dsd_radix_remove(pc->t, v.node) < 0)
        return -ENOENT;
    dsd_host_tier_release(pc->ht, v.value);
    pc->st.evictions[1]++;
    return 0;
}

/* A free host slot, making room when none is free. Returns it or -ENOSPC. */
static int host_slot(struct dsd_prefix_cache *pc)
{
    if (!pc->ht)
        return -ENOSPC;
    int s = dsd_host_tier_alloc(pc->ht);
    if (s < 0 && host_evict_one(pc) == 0)
        s = dsd_host_tier_alloc(pc->ht);
    if (s >= 0 && pc->from_disk)
        pc->from_disk[s] = 0;
    return s < 0 ? -ENOSPC : s;
}

/* Moves one unlocked device page down (host) or out. A demotion to the host is enqueued and
 * joins pc->demoting (its device page frees at settle); a page dropped frees now. Returns 1
 * when one moved, 0 when none could. */
static int device_evict_one(struct dsd_prefix_cache *pc)
{
    struct dsd_radix_ref v;
    if (dsd_radix_victim(pc->t, DSD_KV_TIER_DEVICE, 0, &v) != 1)
        return 0;
    int s = host_slot(pc);
    if (s >= 0) {
        if (pc->n_demoting < DEMOTE_BATCH && dsd_host_tier_copy_out_evicted(pc->ht, pc->kv, v.value, s) == 0 &&
            dsd_radix_set(pc->t, v.node, DSD_KV_TIER_HOST, s) == 0) {
            pc->demoting[pc->n_demoting++] =
                (struct demoting){.hash = v.hash, .node = v.node, .page = v.value, .slot = s};
            return 1;
        }
        dsd_host_tier_release(pc->ht, s);
    }
    /* no host room: drop it (it is on disk when there is a disk tier); a node with host
     * children cannot go before them */
    if (dsd_radix_victim(pc->t, DSD_KV_TIER_DEVICE, DSD_RADIX_LEAF_ONLY, &v) != 1) {
        if (host_evict_one(pc) != 0)
            return 0;
        return 1;           /* a host page went: the next round may demote */
    }
    if (dsd_radix_remove(pc->t, v.node) < 0)
        return 0;
    dsd_kv_page_unref(pc->kv, v.value);
    pc->st.evictions[0]++;
    return 1;
}

int dsd_prefix_cache_reclaimable(const struct dsd_prefix_cache *pc)
{
    return dsd_radix_unlocked(pc->t, DSD_KV_TIER_DEVICE);
}

int dsd_prefix_cache_make_room(struct dsd_prefix_cache *pc, int want)
{
    /* bounded: every round moves a node down a tier or out of the tree. Demotions are
     * waited for together (settle), up to DEMOTE_BATCH at a time: a synchronization per
     * page would cost more than the page's copy. */
    int rounds = 2 * dsd_radix_capacity(pc->t) + 2;
    double t0 = now_ms();
    uint64_t before = pc->st.demotions[0];
    while (dsd_kv_cache_free_pages(pc->kv) + pc->n_demoting < want && rounds-- > 0) {
        if (!device_evict_one(pc))
            break;
        if (pc->n_demoting == DEMOTE_BATCH)
            settle_ordered(pc);
    }
    settle_ordered(pc);
    if (pc->st.demotions[0] > before)
        note(pc, 7, "KV: %llu device pages demoted to the host in %.3f ms",
             (unsigned long long)(pc->st.demotions[0] - before), now_ms() - t0);
    return dsd_kv_cache_free_pages(pc->kv);
}

/* ---- sharing -------------------------------------------------------------------------- */

/* A fresh device page for a reload (the tree's reference), making room as needed. */
static int32_t device_page(struct dsd_prefix_cache *pc)
{
    int32_t p = dsd_kv_page_alloc(pc->kv);
    if (p < 0 && dsd_prefix_cache_make_room(pc, 1) >= 1)
        p = dsd_kv_page_alloc(pc->kv);
    return p;
}

static int hold_grow(struct dsd_prefix_hold *h, int n)
{
    if (n <= h->cap)
        return 0;
    if (n < 2 * h->cap)
        n = 2 * h->cap;             /* a growing sequence reallocates log(n) times */
    struct dsd_radix_ref *r = realloc(h->refs, (size_t)n * sizeof *r);
    if (!r)
        return -ENOMEM;
    h->refs = r;
    h->cap = n;
    return 0;
}

/* Continues a match of n pages on disk: each page found there by its chain hash is read
 * into the staging slot, verified, copied into a fresh device page and added to the tree
 * (locked in h). Returns the new page count. */
static int extend_from_disk(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_full, struct dsd_prefix_hold *h,
                            int n)
{
    /* with the I/O thread, only pages on their way to disk (still in a staging record) are
     * served here; pages on disk were read ahead (dsd_prefix_cache_wait_for) */
    int own = pc->io ? -1 : dsd_host_tier_alloc(pc->stage);
    if (!pc->io && own < 0)
        return n;
    uint64_t parent = n > 0 ? h->refs[n - 1].hash : DSD_KV_CHAIN_ROOT;
    while (n < n_full) {
        const int32_t *tok = tokens + (size_t)n * DSD_KV_PAGE_TOKENS;
        uint64_t hash = dsd_kv_chain_hash(parent, tok);
        int slot = own;
        if (pc->io) {
            if ((slot = dsd_hash_index_get(pc->writing, hash)) < 0)
                break;
        } else {
            if (!dsd_disk_tier_contains(pc->dt, hash))
                break;
            void *rec = dsd_host_tier_record(pc->stage, slot);
            struct dsd_kv_page_meta expect = {.parent_hash = parent, .depth = (uint32_t)n};
            memcpy(expect.tokens, tok, sizeof expect.tokens);
            struct dsd_err err = {{0}};
            int rc = dsd_disk_tier_get(pc->dt, hash, &expect, dsd_kv_page_mla(rec), dsd_kv_page_index(rec, &pc->g),
                                       &err);
            if (rc < 0) {
                if (rc != -ENOENT) {
                    pc->st.disk_dropped++;
                    note(pc, 4, "disk KV tier: page dropped, recomputing it: %s", err.msg);
                }
                break;
            }
        }
        int32_t page = device_page(pc);
        if (page < 0)
            break;
        struct dsd_radix_ref r;
        if (dsd_host_tier_copy_in(pc->stage, pc->kv, slot, page) < 0 || sync_be(pc) != 0 ||
            dsd_radix_extend(pc->t, n > 0 ? &h->refs[n - 1] : NULL, tok, DSD_KV_TIER_DEVICE, page, &r) != 1) {
            dsd_kv_page_unref(pc->kv, page);
            break;
        }
        h->refs[n++] = r;
        pc->st.hits[DSD_KV_TIER_DISK]++;
        parent = hash;
    }
    if (own >= 0)
        dsd_host_tier_release(pc->stage, own);
    return n;
}

int dsd_prefix_cache_acquire(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens, struct dsd_kv_seq *seq,
                             struct dsd_prefix_hold *h, struct dsd_prefix_hit *hit)
{
    if (hit)
        *hit = (struct dsd_prefix_hit){0};
    if (seq->n_pages != 0 || h->n != 0 || n_tokens < 0)
        return -EINVAL;
    int n_full = n_tokens / DSD_KV_PAGE_TOKENS;
    if (n_full > pc->max_pages)
        n_full = pc->max_pages;
    if (n_full == 0)
        return 0;
    if (hold_grow(h, n_full) < 0)
        return -ENOMEM;
    pc->st.lookups++;
    int n = dsd_radix_match(pc->t, tokens, n_full * DSD_KV_PAGE_TOKENS, h->refs, n_full);
    if (n < 0)
        return n;
    reap(pc);
    int dev = 0, host = 0, disk = 0, ahead = 0;
    /* Host pages come back to fresh device pages, root first (tier order holds throughout):
     * every copy is enqueued first and waited for once (a synchronization per page would cost
     * more than the page's copy), then the tree learns the new places and the host slots go
     * free. pc->pages holds the new device pages meanwhile (-1: already on the device). */
    int copied = n, to_copy = 0, want = 0;
    for (int i = 0; i < n; i++)
        want += h->refs[i].tier != DSD_KV_TIER_DEVICE;
    if (want > dsd_kv_cache_free_pages(pc->kv))
        dsd_prefix_cache_make_room(pc, want);      /* room for all of them at once */
    for (int i = 0; i < n; i++) {
        struct dsd_radix_ref *r = &h->refs[i];
        pc->pages[i] = -1;
        if (r->tier == DSD_KV_TIER_DEVICE)
            continue;
        int32_t page = device_page(pc);
        if (page < 0) {
            copied = i;
            break;
        }
        pc->pages[i] = page;
        pc->slots[i] = (int)r->value;
        to_copy++;
    }
    /* the pages go back as side copies layer by layer, which the step's layers wait for one
     * by one (the slots are held until a synchronization: side_settle); where the backend has
     * none, in copy_many calls (one per 256 pages), then one synchronization */
    double t0 = to_copy ? now_ms() : 0.0;
    int crc = to_copy && pc->side ? dsd_host_tier_copy_in_side(pc->ht, pc->kv, pc->slots, pc->pages, copied)
                                  : -EOPNOTSUPP;
    const bool side = to_copy && crc == 0;
    if (crc == -EOPNOTSUPP)
        crc = to_copy ? dsd_host_tier_copy_in_many(pc->ht, pc->kv, pc->slots, pc->pages, copied) : 0;
    if (to_copy && crc < 0) {
        /* nothing was enqueued: the match stops at its first host page */
        int first = -1;
        for (int i = 0; i < copied; i++)
            if (pc->pages[i] >= 0) {
                dsd_kv_page_unref(pc->kv, pc->pages[i]);
                if (first < 0)
                    first = i;
            }
        copied = first;
        to_copy = 0;
    }
    bool synced = to_copy == 0 || side || sync_be(pc) == 0;
    if (to_copy) {
        double ms = now_ms() - t0;
        pc->st.reload_pages += (uint64_t)to_copy;
        pc->st.reload_seconds += ms / 1e3;
        note(pc, 7, side ? "KV hit: %d host pages enqueued to the device beside the compute in %.3f ms at %.3f ms"
                         : "KV hit: %d host pages copied to the device in %.3f ms at %.3f ms",
             to_copy, ms, t0 + ms);
    }
    for (int i = 0; i < copied; i++) {
        struct dsd_radix_ref *r = &h->refs[i];
        if (pc->pages[i] < 0) {
            dev++;
            continue;
        }
        if (!synced || dsd_radix_set(pc->t, r->node, DSD_KV_TIER_DEVICE, pc->pages[i]) < 0) {
            if (side)
                sync_be(pc);    /* the side copies into the pages given back land first */
            for (int k = i; k < copied; k++)
                if (pc->pages[k] >= 0)
                    dsd_kv_page_unref(pc->kv, pc->pages[k]);
            copied = i;
            break;
        }
        bool read_ahead = pc->from_disk && pc->from_disk[r->value];
        if (side)
            pc->side[pc->n_side++] = (struct side_reload){.hash = r->hash, .page = pc->pages[i], .slot = r->value};
        else
            dsd_host_tier_release(pc->ht, r->value);
        r->tier = DSD_KV_TIER_DEVICE;
        r->value = pc->pages[i];
        if (read_ahead)
            ahead++;            /* read ahead from disk for this sequence: a disk hit */
        else
            host++;
    }
    if (copied < n) {
        dsd_radix_unlock(pc->t, h->refs + copied, n - copied);
        n = copied;
    }
    /* the disk continues the match only where the tree's match ran to its end (a reload
     * that stopped early stops the match there) */
    if (pc->dt && n == dev + host + ahead && n < n_full) {
        int matched = n;
        n = extend_from_disk(pc, tokens, n_full, h, n);
        disk = n - matched;
    }
    pc->st.hits[DSD_KV_TIER_DISK] += (uint64_t)ahead;
    disk += ahead;
    for (int i = 0; i < n; i++)
        pc->pages[i] = h->refs[i].value;
    int rc = dsd_kv_seq_share(pc->kv, seq, pc->pages, n);
    if (rc < 0) {
        dsd_radix_unlock(pc->t, h->refs, n);
        return rc;
    }
    h->n = n;
    /* hits per tier, and pages looked for in each tier and not found there */
    pc->st.hits[DSD_KV_TIER_DEVICE] += (uint64_t)dev;
    pc->st.hits[DSD_KV_TIER_HOST] += (uint64_t)host;
    pc->st.misses[DSD_KV_TIER_DEVICE] += (uint64_t)(n_full - dev);
    if (pc->ht)
        pc->st.misses[DSD_KV_TIER_HOST] += (uint64_t)(n_full - dev - host);
    if (pc->dt)
        pc->st.misses[DSD_KV_TIER_DISK] += (uint64_t)(n_full - dev - host - disk);
    if (hit)
        *hit = (struct dsd_prefix_hit){.device = dev, .host = host, .disk = disk};
    return n;
}

int dsd_prefix_cache_peek(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens)
{
    int n = dsd_radix_peek(pc->t, tokens, n_tokens, pc->displaced, pc->max_pages);
    return n < 0 ? 0 : n;
}

void dsd_prefix_cache_unhold(struct dsd_prefix_cache *pc, struct dsd_prefix_hold *h)
{
    if (h->n > 0)
        dsd_radix_unlock(pc->t, h->refs, h->n);
    h->n = 0;
}

void dsd_prefix_cache_hold_destroy(struct dsd_prefix_hold *h)
{
    free(h->refs);
    *h = (struct dsd_prefix_hold){0};
}

/* Writes device page `page` (named hash; tokens, parent, depth as its record says) to the
 * disk tier unless it has it (disk_store). */
static void store_page(struct dsd_prefix_cache *pc, int32_t page, const int32_t *tok, uint64_t parent, uint64_t hash,
                       int depth)
{
    if (!pc->dt)
        return;
    struct dsd_kv_page_meta m = {.parent_hash = parent, .depth = (uint32_t)depth};
    memcpy(m.tokens, tok, sizeof m.tokens);
    disk_store(pc, &m, hash, page, NULL, false);
}

/* ---- adopting ------------------------------------------------------------------------- */

int dsd_prefix_cache_adopt(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_computed,
                           const struct dsd_kv_seq *seq)
{
    int n_full = n_computed / DSD_KV_PAGE_TOKENS;
    if (n_full > seq->n_pages)
        n_full = seq->n_pages;
    if (n_full <= 0)
        return 0;
    int nd = 0;
    int taken = dsd_radix_insert(pc->t, tokens, n_full * DSD_KV_PAGE_TOKENS, seq->pages, DSD_KV_TIER_DEVICE,
                                 pc->taken, pc->displaced, &nd);
    if (taken < 0)
        return taken;
    for (int i = 0; i < nd; i++)
        if (pc->displaced[i].tier == DSD_KV_TIER_HOST && pc->ht)
            dsd_host_tier_release(pc->ht, pc->displaced[i].value);
    if (taken == 0)
        return 0;
    dsd_kv_chain_hashes(tokens, n_full * DSD_KV_PAGE_TOKENS, pc->hashes, n_full);
    for (int i = 0; i < n_full; i++) {
        if (!pc->taken[i])
            continue;
        dsd_kv_page_ref(pc->kv, seq->pages[i]);
        store_page(pc, seq->pages[i], tokens + (size_t)i * DSD_KV_PAGE_TOKENS,
                   i > 0 ? pc->hashes[i - 1] : DSD_KV_CHAIN_ROOT, pc->hashes[i], i);
    }
    flush_writes(pc);
    return taken;
}

int dsd_prefix_cache_publish(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_computed,
                             const struct dsd_kv_seq *seq, struct dsd_prefix_hold *h)
{
    int n_full = n_computed / DSD_KV_PAGE_TOKENS;
    if (n_full > seq->n_pages)
        n_full = seq->n_pages;
    if (h->n >= n_full)
        return 0;
    if (hold_grow(h, n_full) < 0)
        return -ENOMEM;
    int taken = 0;
    while (h->n < n_full) {
        int i = h->n;
        const int32_t *tok = tokens + (size_t)i * DSD_KV_PAGE_TOKENS;
        struct dsd_radix_ref r, old;
        int rc = dsd_radix_publish(pc->t, i > 0 ? &h->refs[i - 1] : NULL, tok, DSD_KV_TIER_DEVICE, seq->pages[i], &r,
                                   &old);
        if (rc < 0)
            break;              /* the tree is full here, or the name collides: try next step */
        if (rc == 2 && pc->ht)
            dsd_host_tier_release(pc->ht, old.value);
        h->refs[h->n++] = r;
        if (rc == 0)
            continue;           /* another sequence's copy: ours stays the sequence's own */
        dsd_kv_page_ref(pc->kv, seq->pages[i]);
        store_page(pc, seq->pages[i], tok, i > 0 ? h->refs[i - 1].hash : DSD_KV_CHAIN_ROOT, r.hash, i);
        taken++;
    }
    flush_writes(pc);
    pc->st.published += (uint64_t)taken;
    return taken;
}

void dsd_prefix_cache_step_begin(struct dsd_prefix_cache *pc)
{
    reap(pc);
    for (int i = 0; i < pc->n_computing; i++)
        dsd_hash_index_del(pc->computing, pc->computing_v[i]);
    pc->n_computing = 0;
}

void dsd_prefix_cache_computing(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens, int from, int to,
                                const struct dsd_prefix_hold *h)
{
    int first = from / DSD_KV_PAGE_TOKENS, end = to / DSD_KV_PAGE_TOKENS;  /* pages that complete */
    if (end > n_tokens / DSD_KV_PAGE_TOKENS)
        end = n_tokens / DSD_KV_PAGE_TOKENS;
    if (first < h->n || first >= end)
        return;                 /* nothing completes, or the chain is not known from h */
    uint64_t hash = h->n > 0 ? h->refs[h->n - 1].hash : DSD_KV_CHAIN_ROOT;
    for (int i = h->n; i < end && pc->n_computing <= pc->max_pages; i++) {
        hash = dsd_kv_chain_hash(hash, tokens + (size_t)i * DSD_KV_PAGE_TOKENS);
        if (i >= first && dsd_hash_index_get(pc->computing, hash) < 0 &&
            dsd_hash_index_put(pc->computing, hash, 1) == 0)
            pc->computing_v[pc->n_computing++] = hash;
    }
}


/* Reads ahead the pages of tokens that follow the tree's m matched ones (refs in
 * pc->displaced) and are on disk, into host slots, on the I/O thread, in chain order.
 * At most half the host tier holds one prefix read ahead (so reading it never evicts its own
 * pages). Returns the pages on their way. */
static int read_ahead(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_full, int m, uint64_t hash)
{
    int in_host = 0, pending = 0;
    for (int i = 0; i < m; i++)
        in_host += pc->displaced[i].tier == DSD_KV_TIER_HOST;
    int cap = dsd_host_tier_slots(pc->ht) / 2;
    uint64_t parent = m > 0 ? pc->displaced[m - 1].hash : DSD_KV_CHAIN_ROOT;
    /* the reads of this call, queued together so that the I/O thread reads them in one window */
    struct dsd_tier_job *jobs = pc->read_jobs;
    int n_jobs = 0, room = pc->reads_max - pc->n_reads;
    bool busy = false;
    for (int i = m; i < n_full && in_host + pending < cap; i++) {
        if (i > m)
            hash = dsd_kv_chain_hash(parent, tokens + (size_t)i * DSD_KV_PAGE_TOKENS);
        if (dsd_hash_index_get(pc->reading, hash) >= 0) {
            pending++;
            parent = hash;
            continue;
        }
        if (!dsd_disk_tier_contains(pc->dt, hash))
            break;
        if (n_jobs >= room) {
            busy = true;                /* the queue is full: wait for it, then read on */
            break;
        }
        int slot = host_slot(pc);
        if (slot < 0)
            break;
        struct dsd_tier_job *j = &jobs[n_jobs];
        *j = (struct dsd_tier_job){.kind = DSD_TIER_READ, .hash = hash, .rec = dsd_host_tier_record(pc->ht, slot),
                                   .tag = (uint32_t)slot};
        j->meta.parent_hash = parent;
        j->meta.depth = (uint32_t)i;
        memcpy(j->meta.tokens, tokens + (size_t)i * DSD_KV_PAGE_TOKENS, sizeof j->meta.tokens);
        if (dsd_hash_index_put(pc->reading, hash, slot) < 0) {
            dsd_host_tier_release(pc->ht, slot);
            break;
        }
        n_jobs++;
        pending++;
        parent = hash;
    }
    int queued = n_jobs > 0 ? dsd_tier_io_submit_many(pc->io, jobs, n_jobs) : 0;
    if (queued > 0) {
        const double t = now_ms();
        if (pc->n_reads == 0)
            pc->reads_t0 = t;
        pc->n_reads += queued;
        note(pc, 7, "KV read-ahead: %d pages queued (%d pending) at %.3f ms", queued, pending, t);
    }
    for (int k = queued; k < n_jobs; k++) {     /* no room after all: not on their way */
        dsd_hash_index_del(pc->reading, jobs[k].hash);
        dsd_host_tier_release(pc->ht, (int)jobs[k].tag);
        pending--;
    }
    return pending + (busy && queued == n_jobs);
}

bool dsd_prefix_cache_wait_for(struct dsd_prefix_cache *pc, const int32_t *tokens, int n_tokens)
{
    if (pc->n_computing == 0 && !pc->io)
        return false;
    int n_full = n_tokens / DSD_KV_PAGE_TOKENS;
    if (n_full > pc->max_pages)
        n_full = pc->max_pages;
    int m = dsd_radix_peek(pc->t, tokens, n_full * DSD_KV_PAGE_TOKENS, pc->displaced, n_full);
    if (m < 0 || m >= n_full)
        return false;
    uint64_t hash = dsd_kv_chain_hash(m > 0 ? pc->displaced[m - 1].hash : DSD_KV_CHAIN_ROOT,
                                      tokens + (size_t)m * DSD_KV_PAGE_TOKENS);
    if (pc->n_computing > 0 && dsd_hash_index_get(pc->computing, hash) >= 0) {
        pc->st.waits++;
        return true;
    }
    return pc->io && read_ahead(pc, tokens, n_full, m, hash) > 0;
}

void dsd_prefix_cache_io_wait(struct dsd_prefix_cache *pc, int timeout_ms)
{
    if (!pc->io)
        return;
    /* While reads ahead are under way, each page is reaped as it lands (into the tree at
     * once), and the engine comes back when the last has landed or the time is up: one walk
     * of the waiting prompts per prefix, not one per page. */
    const double end = now_ms() + timeout_ms;
    do {
        const double left = end - now_ms();
        if (dsd_tier_io_pending(pc->io) > 0)
            dsd_tier_io_wait(pc->io, left > 0 ? (int)left : 0);
        reap(pc);
    } while (pc->n_reads > 0 && now_ms() < end);
}

void dsd_prefix_cache_stats(const struct dsd_prefix_cache *pc, struct dsd_prefix_cache_stats *out)
{
    *out = pc->st;
    out->device_pages = dsd_radix_count(pc->t, DSD_KV_TIER_DEVICE);
    out->device_reclaimable = dsd_radix_unlocked(pc->t, DSD_KV_TIER_DEVICE);
    out->host_pages = dsd_radix_count(pc->t, DSD_KV_TIER_HOST);
    out->host_slots = pc->ht ? dsd_host_tier_slots(pc->ht) : 0;
    out->host_used = pc->ht ? dsd_host_tier_used(pc->ht) : 0;
    if (pc->dt) {
        struct dsd_disk_tier_stats ds;
        dsd_disk_tier_stats(pc->dt, &ds);
        out->disk_pages = ds.pages;
        out->disk_slots = ds.slots;
        out->evictions[DSD_KV_TIER_DISK] = ds.evictions;
        out->disk_writes = ds.writes;   /* as they land, whichever thread wrote them */
        out->disk_dropped = pc->st.disk_dropped > ds.dropped ? pc->st.disk_dropped : ds.dropped;
    }
}

const struct dsd_radix *dsd_prefix_cache_tree(const struct dsd_prefix_cache *pc)
{
    return pc->t;
}
