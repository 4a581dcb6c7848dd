/* The disk tier: one preallocated file of page-record slots, an in-memory index rebuilt by
 * scanning the slot headers, LRU within the budget, io_uring (or pread/pwrite) I/O. */
#include "disk_tier.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "hash_index.h"
#include "page_hash.h"

#define FILE_HDR 4096u                  /* the file header block; slot i at FILE_HDR + i * rec */
#define SCAN_DEPTH 32                   /* headers read per batch at open (and the ring's size) */
_Static_assert(DSD_DISK_TIER_READ_DEPTH <= SCAN_DEPTH, "a batch of page reads must fit the ring");
#define LOG_DROPS_MAX 8                 /* dropped slots logged one by one, then a summary */

/* File header offsets (docs/KV_CACHE.md §6). */
enum {
    FH_MAGIC = 0,
    FH_VERSION = 8,
    FH_SUM = 16,
    FH_FINGERPRINT = 24,
    FH_RECORD_BYTES = 32,
    FH_N_SLOTS = 40,
    FH_END = 48,
};

struct dsd_disk_tier {
    struct dsd_disk_tier_config c;
    char *path;
    int fd;
    size_t rec_bytes;
    int n_slots;
    uint8_t *stage;                     /* DSD_DISK_TIER_READ_DEPTH records, 4096-aligned (registered
                                         * with the ring): writes use the first, a batch of reads
                                         * one each */
    uint8_t *scan;                      /* SCAN_DEPTH header blocks */
    uint8_t *zero;                      /* one zero block (clearing a slot header) */
    struct io_uring ring;
    /* get_many's window of reads is in the ring: synchronous I/O meanwhile (a dropped
     * page's header cleared, a short read finished) goes through pread/pwrite, so that it
     * never reaps a completion of the window's */
    bool in_window;
    pthread_mutex_t mu;                 /* guards index and st: contains/stats may run on another
                                         * thread than the I/O (daemon/kv/tier_io.h) */
    struct dsd_hash_index *index;       /* chain hash -> slot */
    uint64_t *slot_hash;
    int32_t *prev, *next;               /* [n_slots + 1]: LRU of stored slots, sentinel last */
    int32_t *free_stack;
    int n_free;
    uint8_t *taken;                     /* [n_slots / 8 + 1] bits: slots a get_many call has taken */
    uint64_t serial;                    /* next write's serial */
    int logged_drops;
    struct dsd_disk_tier_stats st;
};

static void put64(uint8_t *p, uint64_t v)
{
    for (int b = 0; b < 8; b++)
        p[b] = (uint8_t)(v >> (8 * b));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = v << 8 | p[b];
    return v;
}

__attribute__((format(printf, 3, 4))) static void tlog(const struct dsd_disk_tier_config *c, int level,
                                                        const char *fmt, ...)
{
    if (!c->log)
        return;
    char msg[DSD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->log(c->log_user, level, msg);
}

/* ---- I/O ---- */

static size_t stage_bytes(const struct dsd_disk_tier *dt)
{
    return (size_t)DSD_DISK_TIER_READ_DEPTH * dt->rec_bytes;
}

/* Whether [p, p + len) lies in the registered staging records (read_fixed/write_fixed). */
static bool in_stage(const struct dsd_disk_tier *dt, const uint8_t *p, size_t len)
{
    return p >= dt->stage && len <= stage_bytes(dt) && (size_t)(p - dt->stage) <= stage_bytes(dt) - len;
}

/* Reads or writes len bytes at off, looping over short transfers. Returns the bytes moved
 * (less than len only at end of file) or -errno. */
static ssize_t io_rw(struct dsd_disk_tier *dt, int write, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r;
        uint8_t *p = (uint8_t *)buf + done;
        if (dt->st.uring && !dt->in_window) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&dt->ring);
            if (!sqe)
                return -EBUSY;
            int fixed = dt->st.registered && in_stage(dt, p, len - done);
            if (write && fixed)
                io_uring_prep_write_fixed(sqe, dt->fd, p, (unsigned)(len - done), off + done, 0);
            else if (write)
                io_uring_prep_write(sqe, dt->fd, p, (unsigned)(len - done), off + done);
            else if (fixed)
                io_uring_prep_read_fixed(sqe, dt->fd, p, (unsigned)(len - done), off + done, 0);
            else
                io_uring_prep_read(sqe, dt->fd, p, (unsigned)(len - done), off + done);
            struct io_uring_cqe *cqe;
            int rc = io_uring_submit_and_wait(&dt->ring, 1);
            if (rc < 0)
                return rc;
            if ((rc = io_uring_wait_cqe(&dt->ring, &cqe)) < 0)
                return rc;
            r = cqe->res;
            io_uring_cqe_seen(&dt->ring, cqe);
        } else {
            r = write ? pwrite(dt->fd, p, len - done, (off_t)(off + done))
                      : pread(dt->fd, p, len - done, (off_t)(off + done));
            if (r < 0)
                r = -errno;
        }
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r < 0)
            return r;
        if (r == 0) {
            if (write)
                return -EIO;
            break;
        }
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* Reads n (<= SCAN_DEPTH) blocks at once: buf[k] gets len[k] bytes at off[k]; got[k] is the
 * bytes read (fewer only at end of file) or -errno. Through the ring all n are in flight
 * together (the disk's queue, not its latency, sets the rate); a read the ring leaves short or
 * interrupted is finished by io_rw. If the ring itself fails, it is left for pread/pwrite
 * (logged, `what` names the caller) and the reads are done one by one. */
static void read_many(struct dsd_disk_tier *dt, int n, uint8_t *const *buf, const size_t *len, const uint64_t *off,
                      ssize_t *got, const char *what)
{
    bool batched = false;
    for (int k = 0; k < n; k++)
        got[k] = -EAGAIN;
    if (dt->st.uring && n > 0) {
        int k, rc = 0;
        for (k = 0; k < n; k++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&dt->ring);
            if (!sqe)
                break;
            if (dt->st.registered && in_stage(dt, buf[k], len[k]))
                io_uring_prep_read_fixed(sqe, dt->fd, buf[k], (unsigned)len[k], off[k], 0);
            else
                io_uring_prep_read(sqe, dt->fd, buf[k], (unsigned)len[k], off[k]);
            io_uring_sqe_set_data64(sqe, (uint64_t)k);
        }
        if (k == n && (rc = io_uring_submit_and_wait(&dt->ring, (unsigned)n)) == n) {
            for (k = 0; k < n; k++) {
                struct io_uring_cqe *cqe;
                if (io_uring_wait_cqe(&dt->ring, &cqe) < 0)
                    break;
                got[io_uring_cqe_get_data64(cqe) % (uint64_t)n] = cqe->res;
                io_uring_cqe_seen(&dt->ring, cqe);
            }
            batched = k == n;
        }
        if (!batched) {
            /* the ring is in an unknown state: leave it for plain I/O */
            tlog(&dt->c, 4, "disk KV tier: io_uring failed while %s (%s); using pread/pwrite", what,
                 rc < 0 ? strerror(-rc) : "short submission");
            io_uring_queue_exit(&dt->ring);
            dt->st.uring = dt->st.registered = false;
        }
    }
    for (int k = 0; k < n; k++) {
        if (!batched || got[k] == -EINTR || got[k] == -EAGAIN) {
            got[k] = io_rw(dt, 0, buf[k], len[k], off[k]);
        } else if (got[k] > 0 && (size_t)got[k] < len[k]) {
            ssize_t r = io_rw(dt, 0, buf[k] + got[k], len[k] - (size_t)got[k], off[k] + (uint64_t)got[k]);
            got[k] = r < 0 ? r : got[k] + r;
        }
    }
}

static uint64_t slot_off(const struct dsd_disk_tier *dt, int s)
{
    return FILE_HDR + (uint64_t)s * dt->rec_bytes;
}

/* Adds one to a counter of st (read by dsd_disk_tier_stats, perhaps on another thread). */
static void count(struct dsd_disk_tier *dt, uint64_t *c)
{
    pthread_mutex_lock(&dt->mu);
    (*c)++;
    pthread_mutex_unlock(&dt->mu);
}

/* ---- index and LRU ---- */

static void lru_unlink(struct dsd_disk_tier *dt, int s)
{
    dt->next[dt->prev[s]] = dt->next[s];
    dt->prev[dt->next[s]] = dt->prev[s];
}

static void lru_front(struct dsd_disk_tier *dt, int s)
{
    int head = dt->n_slots;
    dt->prev[s] = head;
    dt->next[s] = dt->next[head];
    dt->prev[dt->next[head]] = s;
    dt->next[head] = s;
}

/* Forgets slot s's page (index, LRU) and puts the slot on the free stack. */
static void forget(struct dsd_disk_tier *dt, int s)
{
    pthread_mutex_lock(&dt->mu);
    dsd_hash_index_del(dt->index, dt->slot_hash[s]);
    dt->st.pages--;
    pthread_mutex_unlock(&dt->mu);
    lru_unlink(dt, s);
    dt->free_stack[dt->n_free++] = s;
}

/* Clears slot s's header on disk so no later scan finds it (best effort). */
static void clear_slot(struct dsd_disk_tier *dt, int s)
{
    if (io_rw(dt, 1, dt->zero, DSD_KV_PAGE_HEADER_BYTES, slot_off(dt, s)) < 0)
        count(dt, &dt->st.io_errors);
}

static void note_drop(struct dsd_disk_tier *dt, int s, const char *why)
{
    count(dt, &dt->st.dropped);
    if (dt->logged_drops++ < LOG_DROPS_MAX)
        tlog(&dt->c, 4, "disk KV tier: %s slot %d: %s; page dropped (it will be recomputed)", dt->path, s, why);
}

/* ---- open ---- */

static void file_header(const struct dsd_disk_tier *dt, uint8_t *h)
{
    memset(h, 0, FILE_HDR);
    memcpy(h + FH_MAGIC, DSD_DISK_TIER_FILE_MAGIC, 8);
    put64(h + FH_VERSION, DSD_DISK_TIER_FILE_VERSION);
    put64(h + FH_FINGERPRINT, dt->c.fingerprint);
    put64(h + FH_RECORD_BYTES, dt->rec_bytes);
    put64(h + FH_N_SLOTS, (uint64_t)dt->n_slots);
    put64(h + FH_SUM, XXH64(h, FILE_HDR, 0));
}

/* Why the file header h does not belong to this tier, or NULL when it does. */
static const char *file_header_problem(const struct dsd_disk_tier *dt, uint8_t *h)
{
    if (memcmp(h + FH_MAGIC, DSD_DISK_TIER_FILE_MAGIC, 8) != 0)
        return "not a deepseekd KV cache file (foreign data)";
    uint64_t sum = get64(h + FH_SUM);
    put64(h + FH_SUM, 0);
    int bad_sum = XXH64(h, FILE_HDR, 0) != sum;
    put64(h + FH_SUM, sum);
    if (bad_sum)
        return "file header checksum mismatch (corrupt)";
    if (get64(h + FH_VERSION) != DSD_DISK_TIER_FILE_VERSION)
        return "written by another deepseekd version";
    if (get64(h + FH_FINGERPRINT) != dt->c.fingerprint || get64(h + FH_RECORD_BYTES) != dt->rec_bytes)
        return "written for another model or KV format";
    return NULL;
}

static int cmp_serial(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Reads every slot header (the first n_valid slots lie within the file as it was) and
 * indexes the good ones; the others are dropped. Returns 0 or -ENOMEM. */
static int scan_slots(struct dsd_disk_tier *dt, uint64_t file_size)
{
    uint64_t *order = malloc((size_t)dt->n_slots * 2 * sizeof *order);   /* (serial, slot) */
    if (!order)
        return -ENOMEM;
    int n_good = 0;
    for (int base = 0; base < dt->n_slots; base += SCAN_DEPTH) {
        int n = dt->n_slots - base < SCAN_DEPTH ? dt->n_slots - base : SCAN_DEPTH;
        ssize_t got[SCAN_DEPTH];
        for (int k = 0; k < n; k++)
            got[k] = 0;
        int n_read = 0;
        for (int k = 0; k < n; k++)
            if (slot_off(dt, base + k) < file_size)
                n_read = k + 1;
        uint8_t *bufs[SCAN_DEPTH];
        size_t lens[SCAN_DEPTH];
        uint64_t offs[SCAN_DEPTH];
        for (int k = 0; k < n_read; k++) {
            bufs[k] = dt->scan + (size_t)k * DSD_KV_PAGE_HEADER_BYTES;
            lens[k] = DSD_KV_PAGE_HEADER_BYTES;
            offs[k] = slot_off(dt, base + k);
        }
        read_many(dt, n_read, bufs, lens, offs, got, "reading headers");
        for (int k = 0; k < n; k++) {
            int s = base + k;
            const uint8_t *h = dt->scan + (size_t)k * DSD_KV_PAGE_HEADER_BYTES;
            static const uint8_t no_magic[8];
            if (k >= n_read || got[k] == 0 || (got[k] >= 8 && memcmp(h, no_magic, 8) == 0))
                continue;                               /* never written, or cleared: free */
            struct dsd_err e = {{0}};
            struct dsd_kv_page_meta m;
            int rc;
            if (got[k] < 0) {
                dt->st.io_errors++;
                rc = dsd_errf(&e, (int)got[k], "reading the header failed: %s", strerror((int)-got[k]));
            } else {
                rc = dsd_kv_page_decode_header(h, (size_t)got[k], &dt->c.geom, dt->c.fingerprint, &m, &e);
                if (!rc && slot_off(dt, s) + dt->rec_bytes > file_size)
                    rc = dsd_errf(&e, -ENODATA, "the file ends inside this page (truncated)");
            }
            if (!rc) {
                int32_t other = dsd_hash_index_get(dt->index, m.chain_hash);
                if (other >= 0) {
                    /* the same page twice (an interrupted rewrite): keep the newer */
                    int n_o;
                    for (n_o = 0; n_o < n_good && order[2 * n_o + 1] != (uint64_t)other; n_o++)
                        ;
                    if (order[2 * n_o] >= m.serial) {
                        clear_slot(dt, s);
                        continue;
                    }
                    dsd_hash_index_del(dt->index, m.chain_hash);
                    clear_slot(dt, other);
                    order[2 * n_o] = order[2 * (n_good - 1)];
                    order[2 * n_o + 1] = order[2 * (n_good - 1) + 1];
                    n_good--;
                }
                dsd_hash_index_put(dt->index, m.chain_hash, s);
                dt->slot_hash[s] = m.chain_hash;
                order[2 * n_good] = m.serial;
                order[2 * n_good + 1] = (uint64_t)s;
                n_good++;
                if (m.serial >= dt->serial)
                    dt->serial = m.serial + 1;
            } else {
                note_drop(dt, s, e.msg);
                clear_slot(dt, s);
            }
        }
    }
    qsort(order, (size_t)n_good, 2 * sizeof *order, cmp_serial);
    uint8_t *stored = calloc((size_t)dt->n_slots, 1);
    if (!stored) {
        free(order);
        return -ENOMEM;
    }
    for (int i = 0; i < n_good; i++) {
        lru_front(dt, (int)order[2 * i + 1]);   /* oldest first: the newest ends in front */
        stored[order[2 * i + 1]] = 1;
    }
    for (int s = dt->n_slots - 1; s >= 0; s--)  /* low slots are handed out first */
        if (!stored[s])
            dt->free_stack[dt->n_free++] = s;
    free(stored);
    dt->st.pages = n_good;
    free(order);
    return 0;
}

/* Tells about the directory's other files; ours is name. */
static void survey_dir(const struct dsd_disk_tier_config *c, const char *name)
{
    DIR *d = opendir(c->dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        if (n[0] == '.' || strcmp(n, name) == 0)
            continue;
        if (len == strlen(name) && strncmp(n, "kv-", 3) == 0 && strcmp(n + len - 6, ".dsdkv") == 0)
            tlog(c, 5, "disk KV tier: %s/%s belongs to another model or KV format: not used; delete it to "
                 "reclaim its space", c->dir, n);
        else
            tlog(c, 5, "disk KV tier: %s/%s is not a deepseekd cache file: ignored", c->dir, n);
    }
    closedir(d);
}

static int open_file(struct dsd_disk_tier *dt, struct dsd_err *err)
{
    int direct = !(dt->c.flags & DSD_DISK_TIER_BUFFERED);
    int fl = O_RDWR | O_CREAT | O_CLOEXEC;
    dt->fd = open(dt->path, fl | (direct ? O_DIRECT : 0), 0640);
    if (dt->fd < 0 && direct && errno == EINVAL) {
        tlog(&dt->c, 5, "disk KV tier: %s: the file system refuses O_DIRECT; using buffered I/O", dt->path);
        direct = 0;
        dt->fd = open(dt->path, fl, 0640);
    }
    if (dt->fd < 0)
        return dsd_errf(err, -errno, "disk KV tier disabled: cannot open %s: %s", dt->path, strerror(errno));
    dt->st.direct = direct;
    return 0;
}

static int setup_ring(struct dsd_disk_tier *dt)
{
    if (dt->c.flags & DSD_DISK_TIER_NO_URING)
        return 0;
    int rc = io_uring_queue_init(SCAN_DEPTH, &dt->ring, 0);
    if (rc < 0) {
        tlog(&dt->c, 5, "disk KV tier: io_uring unavailable (%s); using pread/pwrite", strerror(-rc));
        return 0;
    }
    dt->st.uring = true;
    /* registering pins the staging records, which counts against RLIMIT_MEMLOCK where the
     * process lacks CAP_IPC_LOCK (the unit sets LimitMEMLOCK=infinity); without it every read
     * and write still goes through the ring, unregistered */
    struct iovec iov = {.iov_base = dt->stage, .iov_len = stage_bytes(dt)};
    rc = dt->c.flags & DSD_DISK_TIER_NO_REGISTER ? -EPERM : io_uring_register_buffers(&dt->ring, &iov, 1);
    if (rc < 0)
        tlog(&dt->c, 6, "disk KV tier: cannot register the staging buffer (%s); unregistered I/O", strerror(-rc));
    else
        dt->st.registered = true;
    return 0;
}

struct dsd_disk_tier *dsd_disk_tier_open(const struct dsd_disk_tier_config *c, struct dsd_err *err)
{
    if (!c || !c->dir || !c->dir[0] || c->geom.n_layers < 1 || !c->geom.mla_page_bytes || !c->geom.index_page_bytes) {
        dsd_errf(err, -EINVAL, "disk KV tier disabled: no cache directory or page geometry configured");
        return NULL;
    }
    size_t rec = dsd_kv_page_record_bytes(&c->geom);
    uint64_t n = c->budget_bytes > FILE_HDR ? (c->budget_bytes - FILE_HDR) / rec : 0;
    if (n < 1 || n > INT32_MAX - 1) {
        dsd_errf(err, -EINVAL, "disk KV tier disabled: a budget of %llu bytes holds %llu pages of %zu bytes "
                 "(raise disk_cache_gb)", (unsigned long long)c->budget_bytes, (unsigned long long)n, rec);
        return NULL;
    }
    struct stat sb;
    if (stat(c->dir, &sb) < 0) {
        if (errno != ENOENT || mkdir(c->dir, 0750) < 0) {
            dsd_errf(err, -errno, "disk KV tier disabled: cache directory %s: %s (create it, writable by the "
                     "daemon, or set disk_cache_dir)", c->dir, strerror(errno));
            return NULL;
        }
        tlog(c, 5, "disk KV tier: created %s", c->dir);
    } else if (!S_ISDIR(sb.st_mode)) {
        dsd_errf(err, -ENOTDIR, "disk KV tier disabled: %s is not a directory (set disk_cache_dir)", c->dir);
        return NULL;
    }

    struct dsd_disk_tier *dt = calloc(1, sizeof *dt);
    if (!dt) {
        dsd_errf(err, -ENOMEM, "disk KV tier disabled: out of memory");
        return NULL;
    }
    dt->c = *c;
    dt->fd = -1;
    pthread_mutex_init(&dt->mu, NULL);
    dt->rec_bytes = rec;
    dt->n_slots = (int)n;
    dt->st.slots = (int)n;
    char name[64];
    snprintf(name, sizeof name, "kv-%016llx.dsdkv", (unsigned long long)c->fingerprint);
    size_t plen = strlen(c->dir) + 1 + strlen(name) + 1;
    dt->path = malloc(plen);
    dt->c.dir = NULL;           /* not kept: the caller's string */
    dt->stage = aligned_alloc(DSD_KV_PAGE_ALIGN, (size_t)DSD_DISK_TIER_READ_DEPTH * rec);
    dt->scan = aligned_alloc(DSD_KV_PAGE_ALIGN, (size_t)SCAN_DEPTH * DSD_KV_PAGE_HEADER_BYTES);
    dt->zero = aligned_alloc(DSD_KV_PAGE_ALIGN, DSD_KV_PAGE_HEADER_BYTES);
    dt->index = dsd_hash_index_new((int)n);
    dt->slot_hash = calloc(n, sizeof *dt->slot_hash);
    dt->prev = malloc((n + 1) * sizeof *dt->prev);
    dt->next = malloc((n + 1) * sizeof *dt->next);
    dt->free_stack = malloc(n * sizeof *dt->free_stack);
    dt->taken = calloc(n / 8 + 1, 1);
    if (!dt->path || !dt->stage || !dt->scan || !dt->zero || !dt->index || !dt->slot_hash || !dt->prev || !dt->next ||
        !dt->free_stack || !dt->taken) {
        dsd_errf(err, -ENOMEM, "disk KV tier disabled: out of memory for %llu slots", (unsigned long long)n);
        goto fail;
    }
    snprintf(dt->path, plen, "%s/%s", c->dir, name);
    memset(dt->zero, 0, DSD_KV_PAGE_HEADER_BYTES);
    dt->prev[n] = dt->next[n] = (int32_t)n;
    survey_dir(c, name);
    if (open_file(dt, err) < 0)
        goto fail;
    setup_ring(dt);

    /* The file header: ours, or the file starts over. */
    uint64_t file_size = 0;
    if (fstat(dt->fd, &sb) == 0)
        file_size = (uint64_t)sb.st_size;
    ssize_t r = file_size >= FILE_HDR ? io_rw(dt, 0, dt->stage, FILE_HDR, 0) : 0;
    const char *problem = r == (ssize_t)FILE_HDR ? file_header_problem(dt, dt->stage)
                          : r < 0                ? "its header cannot be read"
                                                 : "shorter than its header";
    if (problem) {
        if (file_size > 0)
            tlog(c, 4, "disk KV tier: %s: %s; starting it over", dt->path, problem);
        if (ftruncate(dt->fd, 0) < 0) {
            dsd_errf(err, -errno, "disk KV tier disabled: cannot reset %s: %s", dt->path, strerror(errno));
            goto fail;
        }
        file_size = 0;
    }
    uint64_t want = FILE_HDR + n * rec;
    if (file_size > want && ftruncate(dt->fd, (off_t)want) < 0) {
        dsd_errf(err, -errno, "disk KV tier disabled: cannot shrink %s: %s", dt->path, strerror(errno));
        goto fail;
    }
    if (file_size < want) {
        if (fallocate(dt->fd, 0, 0, (off_t)want) < 0) {
            int e = errno;
            if (e != EOPNOTSUPP) {
                dsd_errf(err, -e, "disk KV tier disabled: cannot preallocate %llu bytes for %s: %s (lower "
                         "disk_cache_gb or free space)", (unsigned long long)want, dt->path, strerror(e));
                goto fail;
            }
            tlog(c, 5, "disk KV tier: %s: the file system cannot preallocate; the file is sparse (a full disk "
                 "shows as failed writes)", dt->path);
            if (ftruncate(dt->fd, (off_t)want) < 0) {
                dsd_errf(err, -errno, "disk KV tier disabled: cannot size %s: %s", dt->path, strerror(errno));
                goto fail;
            }
        }
    }
    file_header(dt, dt->stage);
    if ((r = io_rw(dt, 1, dt->stage, FILE_HDR, 0)) < 0) {
        dsd_errf(err, (int)r, "disk KV tier disabled: cannot write %s: %s", dt->path, strerror((int)-r));
        goto fail;
    }
    if (scan_slots(dt, file_size) < 0) {
        dsd_errf(err, -ENOMEM, "disk KV tier disabled: out of memory");
        goto fail;
    }
    if (dt->logged_drops > LOG_DROPS_MAX)
        tlog(c, 4, "disk KV tier: %s: %d pages dropped in all", dt->path, dt->logged_drops);
    tlog(c, 6, "disk KV tier: %s: %d of %d slots hold pages (%s I/O%s)", dt->path, dt->st.pages, dt->n_slots,
         dt->st.direct ? "direct" : "buffered", dt->st.uring ? ", io_uring" : "");
    return dt;
fail:
    dsd_disk_tier_close(dt);
    return NULL;
}

void dsd_disk_tier_close(struct dsd_disk_tier *dt)
{
    if (!dt)
        return;
    if (dt->st.uring)
        io_uring_queue_exit(&dt->ring);
    if (dt->fd >= 0)
        close(dt->fd);
    dsd_hash_index_free(dt->index);
    free(dt->path);
    free(dt->stage);
    free(dt->scan);
    free(dt->zero);
    free(dt->slot_hash);
    free(dt->prev);
    free(dt->next);
    free(dt->free_stack);
    free(dt->taken);
    pthread_mutex_destroy(&dt->mu);
    free(dt);
}

/* ---- pages ---- */

bool dsd_disk_tier_contains(const struct dsd_disk_tier *dt, uint64_t h)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&dt->mu;
    pthread_mutex_lock(mu);
    bool in = dsd_hash_index_get(dt->index, h) >= 0;
    pthread_mutex_unlock(mu);
    return in;
}

/* Writes the record in the staging buffer to slot s: the arenas first, the header block
 * last, so a write cut short (a crash, a kill) never leaves a header naming this page over
 * arenas that are not its own; a slot that held another page has its header cleared first.
 * Returns 0 or -errno. */
static int write_record(struct dsd_disk_tier *dt, int s, bool had_page)
{
    ssize_t r = 0;
    if (had_page && (r = io_rw(dt, 1, dt->zero, DSD_KV_PAGE_HEADER_BYTES, slot_off(dt, s))) < 0)
        return (int)r;
    r = io_rw(dt, 1, dt->stage + DSD_KV_PAGE_HEADER_BYTES, dt->rec_bytes - DSD_KV_PAGE_HEADER_BYTES,
              slot_off(dt, s) + DSD_KV_PAGE_HEADER_BYTES);
    if (r < 0)
        return (int)r;
    if (dt->c.test_write_delay_ms > 0) {
        struct timespec ts = {dt->c.test_write_delay_ms / 1000, (long)(dt->c.test_write_delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    r = io_rw(dt, 1, dt->stage, DSD_KV_PAGE_HEADER_BYTES, slot_off(dt, s));
    return r < 0 ? (int)r : 0;
}

int dsd_disk_tier_put(struct dsd_disk_tier *dt, struct dsd_kv_page_meta *meta, const void *mla, const void *index,
                      struct dsd_err *err)
{
    meta->chain_hash = dsd_kv_chain_hash(meta->parent_hash, meta->tokens);
    pthread_mutex_lock(&dt->mu);
    int32_t s = dsd_hash_index_get(dt->index, meta->chain_hash);
    pthread_mutex_unlock(&dt->mu);
    if (s >= 0) {
        lru_unlink(dt, s);
        lru_front(dt, s);
        return 0;
    }
    meta->serial = dt->serial;
    dsd_kv_page_encode(dt->stage, &dt->c.geom, dt->c.fingerprint, meta, mla, index);
    bool had_page = dt->n_free == 0;
    if (had_page) {
        s = dt->prev[dt->n_slots];          /* the least recently used page makes room */
        forget(dt, s);
        count(dt, &dt->st.evictions);
    }
    s = dt->free_stack[--dt->n_free];
    dt->serial++;
    int r = write_record(dt, s, had_page);
    if (r < 0) {
        dt->free_stack[dt->n_free++] = s;
        count(dt, &dt->st.io_errors);
        clear_slot(dt, s);
        int rc = r == -ENOSPC || r == -EDQUOT ? -ENOSPC : -EIO;
        tlog(&dt->c, 4, "disk KV tier: writing a page to %s failed: %s; not cached on disk", dt->path,
             strerror(-r));
        return dsd_errf(err, rc, "disk KV tier: writing a page to %s failed: %s (the page is not cached)", dt->path,
                        strerror(-r));
    }
    pthread_mutex_lock(&dt->mu);
    dsd_hash_index_put(dt->index, meta->chain_hash, s);
    dt->st.pages++;
    dt->st.writes++;
    pthread_mutex_unlock(&dt->mu);
    dt->slot_hash[s] = meta->chain_hash;
    lru_front(dt, s);
    return 0;
}

/* The checks and bookkeeping of one page read into rec (r bytes, or -errno) from slot s. */
static int finish_read(struct dsd_disk_tier *dt, int s, uint64_t h, uint8_t *rec, ssize_t r,
                       const struct dsd_kv_page_meta *expect, void *mla, void *index, struct dsd_err *err)
{
    if (r < 0) {
        count(dt, &dt->st.io_errors);
        count(dt, &dt->st.misses);
        forget(dt, s);
        tlog(&dt->c, 4, "disk KV tier: reading slot %d of %s failed: %s; page dropped", s, dt->path,
             strerror((int)-r));
        return dsd_errf(err, -EIO, "disk KV tier: reading slot %d of %s failed: %s (recompute the page)", s, dt->path,
                        strerror((int)-r));
    }
    struct dsd_kv_page_meta m;
    int rc = dsd_kv_page_verify(rec, (size_t)r, &dt->c.geom, dt->c.fingerprint, &m, err);
    if (!rc && m.chain_hash != h)
        rc = dsd_errf(err, -EBADMSG, "kv page: slot holds page %016llx, indexed as %016llx",
                      (unsigned long long)m.chain_hash, (unsigned long long)h);
    if (rc) {
        count(dt, &dt->st.misses);
        forget(dt, s);
        clear_slot(dt, s);
        note_drop(dt, s, err ? err->msg : "verification failed");
        return rc;
    }
    if (expect && (expect->parent_hash != m.parent_hash || memcmp(expect->tokens, m.tokens, sizeof m.tokens) != 0)) {
        count(dt, &dt->st.misses);
        return dsd_errf(err, -ENOENT, "disk KV tier: page %016llx holds other tokens (a hash collision)",
                        (unsigned long long)h);
    }
    if (mla)
        memcpy(mla, dsd_kv_page_mla(rec), dsd_kv_page_mla_bytes(&dt->c.geom));
    if (index)
        memcpy(index, dsd_kv_page_index(rec, &dt->c.geom), dsd_kv_page_index_bytes(&dt->c.geom));
    lru_unlink(dt, s);
    lru_front(dt, s);
    count(dt, &dt->st.hits);
    return 0;
}

/* Whether get g's own record takes the read directly (aligned for direct I/O). */
static bool direct_rec(const struct dsd_disk_get *g)
{
    return g->rec && (uintptr_t)g->rec % DSD_KV_PAGE_ALIGN == 0;
}

/* Where get g reads its record: its own rec when direct_rec (no copy afterwards), else
 * staging record `stage`. */
static uint8_t *get_buffer(struct dsd_disk_tier *dt, const struct dsd_disk_get *g, int stage)
{
    return direct_rec(g) ? (uint8_t *)g->rec : dt->stage + (size_t)stage * dt->rec_bytes;
}

/* Judges get g from the r bytes (or -errno) read into buf from slot s: g->rc, and its
 * record or arenas filled when the page checks. */
static void judge(struct dsd_disk_tier *dt, struct dsd_disk_get *g, int s, uint8_t *buf, ssize_t r)
{
    const bool in_rec = buf == g->rec;
    g->rc = finish_read(dt, s, g->hash, buf, r, g->expect, in_rec ? NULL : g->mla, in_rec ? NULL : g->index,
                        &g->err);
    if (!in_rec && g->rec && g->rc == 0)
        memcpy(g->rec, buf, dt->rec_bytes);
}

#define RUN_BYTES (4u << 20)   /* the largest vectored read of consecutive slots */
#define RUN_PAGES 64            /* and its pages (iovecs) */
/* The most bytes the window keeps in flight. A disk serves a few large requests as fast as
 * many (build machine, 2026-12-07: 4 MiB reads at 1.35-1.6 GB/s one at a time, 1.5-1.6 two
 * or four at a time); more in flight only lands more pages at once, whose checksums then run
 * after the disk has finished instead of beside it. */
#define WINDOW_BYTES (16u << 20)
#define GET_PENDING 1           /* g->rc of a page taken into the window, not yet judged */

/* The slot of g->hash if it is stored and no earlier get of this call took it (a page named
 * twice is read once: the second is a miss, -ENOENT in g->rc). Marks it taken. */
static int32_t take_slot(struct dsd_disk_tier *dt, struct dsd_disk_get *g)
{
    pthread_mutex_lock(&dt->mu);
    int32_t s = dsd_hash_index_get(dt->index, g->hash);
    pthread_mutex_unlock(&dt->mu);
    if (s >= 0 && (dt->taken[s / 8] >> (s % 8) & 1))
        s = -1;
    if (s < 0) {
        count(dt, &dt->st.misses);
        g->rc = dsd_errf(&g->err, -ENOENT, "disk KV tier: page %016llx is not stored", (unsigned long long)g->hash);
        return -1;
    }
    dt->taken[s / 8] |= (uint8_t)(1u << (s % 8));
    g->rc = GET_PENDING;
    return s;
}

/* Whether g->hash is stored in slot s and not yet taken by this call: then it is taken (the
 * next page of a vectored run). */
static bool take_next(struct dsd_disk_tier *dt, struct dsd_disk_get *g, int32_t s)
{
    pthread_mutex_lock(&dt->mu);
    bool there = dsd_hash_index_get(dt->index, g->hash) == s;
    pthread_mutex_unlock(&dt->mu);
    if (!there || (dt->taken[s / 8] >> (s % 8) & 1))
        return false;
    dt->taken[s / 8] |= (uint8_t)(1u << (s % 8));
    g->rc = GET_PENDING;
    return true;
}

/* A page whose read came back short or interrupted, or whose vectored read failed (one bad
 * page must not cost its neighbours), read again alone and judged. pread while the window is
 * in the ring (io_rw), so that it never reaps one of the window's completions. */
static void reread(struct dsd_disk_tier *dt, struct dsd_disk_get *g, int32_t s, uint8_t *buf)
{
    count(dt, &dt->st.read_requests);
    judge(dt, g, s, buf, io_rw(dt, 0, buf, dt->rec_bytes, slot_off(dt, s)));
}

/* The gets judged so far, in order, to landed (once each). */
static void report(struct dsd_disk_get *g, int taken, int *reported, void (*landed)(void *, int), void *user)
{
    while (*reported < taken && g[*reported].rc != GET_PENDING) {
        if (landed)
            landed(user, *reported);
        (*reported)++;
    }
}

void dsd_disk_tier_get_stream(struct dsd_disk_tier *dt, int n, struct dsd_disk_get *g,
                              void (*landed)(void *user, int k), void *user)
{
    memset(dt->taken, 0, (size_t)dt->n_slots / 8 + 1);
    /* One window of reads in flight through the ring over all n pages, never drained
     * between them: each page is verified as it lands while the next ones are read (the
     * disk never waits for checksums), and reported to landed in order as soon as it and
     * every page before it are judged. Pages whose slots follow each other (a prefix written
     * in order) and whose records are aligned go in one vectored read of up to RUN_BYTES: a
     * disk that limits requests per second (cloud volumes) then moves as many bytes per
     * request as dd does. A get without an aligned rec reads alone, through a staging
     * record. The window holds up to DSD_DISK_TIER_READ_DEPTH requests and WINDOW_BYTES. */
    int stage_of[DSD_DISK_TIER_READ_DEPTH], free_stage[DSD_DISK_TIER_READ_DEPTH], n_free = 0;
    for (int i = DSD_DISK_TIER_READ_DEPTH - 1; i >= 0; i--)
        free_stage[n_free++] = i;
    int next = 0, reported = 0, inflight = 0;
    size_t inflight_bytes = 0;
    /* window position: first get, pages, first slot */
    int run_k[DSD_DISK_TIER_READ_DEPTH], run_n[DSD_DISK_TIER_READ_DEPTH];
    int32_t run_s[DSD_DISK_TIER_READ_DEPTH];
    struct iovec iov[DSD_DISK_TIER_READ_DEPTH][RUN_PAGES];
    for (int w = 0; w < DSD_DISK_TIER_READ_DEPTH; w++)
        run_k[w] = -1;
    const size_t fit = RUN_BYTES / dt->rec_bytes;
    const int run_max = fit < 1 ? 1 : fit > RUN_PAGES ? RUN_PAGES : (int)fit;
    dt->in_window = true;
    while (dt->st.uring && (next < n || inflight > 0)) {
        while (inflight < DSD_DISK_TIER_READ_DEPTH && next < n &&
               (inflight == 0 || inflight_bytes + (size_t)run_max * dt->rec_bytes <= WINDOW_BYTES)) {
            if (io_uring_sq_space_left(&dt->ring) == 0)
                break;                      /* (the ring outsizes the window: not expected) */
            int k = next;
            int32_t s = take_slot(dt, &g[k]);
            if (s < 0) {
                next++;
                continue;
            }
            struct io_uring_sqe *sqe = io_uring_get_sqe(&dt->ring);
            int w = 0;
            while (run_k[w] >= 0)
                w++;
            const bool direct = direct_rec(&g[k]);
            int len = 1;
            if (direct)
                while (len < run_max && k + len < n && direct_rec(&g[k + len]) && take_next(dt, &g[k + len], s + len))
                    len++;
            int st = direct ? -1 : free_stage[--n_free];
            uint8_t *buf = get_buffer(dt, &g[k], st);
            if (len > 1) {
                for (int i = 0; i < len; i++)
                    iov[w][i] = (struct iovec){.iov_base = g[k + i].rec, .iov_len = dt->rec_bytes};
                io_uring_prep_readv(sqe, dt->fd, iov[w], (unsigned)len, slot_off(dt, s));
            } else if (dt->st.registered && in_stage(dt, buf, dt->rec_bytes)) {
                io_uring_prep_read_fixed(sqe, dt->fd, buf, (unsigned)dt->rec_bytes, slot_off(dt, s), 0);
            } else {
                io_uring_prep_read(sqe, dt->fd, buf, (unsigned)dt->rec_bytes, slot_off(dt, s));
            }
            io_uring_sqe_set_data64(sqe, (uint64_t)w);
            count(dt, &dt->st.read_requests);
            run_k[w] = k;
            run_n[w] = len;
            run_s[w] = s;
            stage_of[w] = st;
            inflight++;
            inflight_bytes += (size_t)len * dt->rec_bytes;
            next += len;
        }
        int rc = inflight > 0 ? io_uring_submit_and_wait(&dt->ring, 1) : 0;
        if (rc < 0 && rc != -EINTR) {
            tlog(&dt->c, 4, "disk KV tier: io_uring failed while reading pages (%s); using pread", strerror(-rc));
            /* what is in flight cannot be trusted: the ring goes, those pages are read again */
            io_uring_queue_exit(&dt->ring);
            dt->st.uring = dt->st.registered = false;
            for (int w = 0; w < DSD_DISK_TIER_READ_DEPTH; w++)
                if (run_k[w] >= 0) {
                    for (int i = 0; i < run_n[w]; i++)
                        reread(dt, &g[run_k[w] + i], run_s[w] + i, get_buffer(dt, &g[run_k[w] + i], 0));
                    run_k[w] = -1;
                }
            break;
        }
        struct io_uring_cqe *cqe;
        while (inflight > 0 && io_uring_peek_cqe(&dt->ring, &cqe) == 0) {
            int w = (int)(io_uring_cqe_get_data64(cqe) % DSD_DISK_TIER_READ_DEPTH);
            ssize_t got = cqe->res;
            io_uring_cqe_seen(&dt->ring, cqe);
            const int k0 = run_k[w], len = run_n[w];
            /* the pages the read covered are judged now; a page it left short, an interrupted
             * read, or a vectored read that failed are read again one by one */
            const bool retry = got == -EINTR || got == -EAGAIN || (got < 0 && len > 1);
            for (int i = 0; i < len; i++) {
                const int k = k0 + i;
                uint8_t *buf = get_buffer(dt, &g[k], stage_of[w]);
                const ssize_t end = (ssize_t)((size_t)(i + 1) * dt->rec_bytes);
                ssize_t mine = got < 0 ? got : got >= end ? (ssize_t)dt->rec_bytes : -1;
                if (retry || mine == -1)
                    reread(dt, &g[k], run_s[w] + i, buf);
                else
                    judge(dt, &g[k], run_s[w] + i, buf, mine);
            }
            if (stage_of[w] >= 0)
                free_stage[n_free++] = stage_of[w];
            run_k[w] = -1;
            inflight--;
            inflight_bytes -= (size_t)len * dt->rec_bytes;
        }
        report(g, next, &reported, landed, user);
    }
    dt->in_window = false;
    report(g, next, &reported, landed, user);
    /* without the ring (or after it failed): one read at a time */
    for (int k = next; k < n; k++) {
        int32_t s = take_slot(dt, &g[k]);
        if (s >= 0)
            reread(dt, &g[k], s, get_buffer(dt, &g[k], 0));
        report(g, k + 1, &reported, landed, user);
    }
}

void dsd_disk_tier_get_many(struct dsd_disk_tier *dt, int n, struct dsd_disk_get *g)
{
    dsd_disk_tier_get_stream(dt, n, g, NULL, NULL);
}

int dsd_disk_tier_get(struct dsd_disk_tier *dt, uint64_t h, const struct dsd_kv_page_meta *expect, void *mla,
                      void *index, struct dsd_err *err)
{
    struct dsd_disk_get g = {.hash = h, .expect = expect, .mla = mla, .index = index};
    dsd_disk_tier_get_many(dt, 1, &g);
    if (g.rc < 0 && err)
        *err = g.err;
    return g.rc;
}

int dsd_disk_tier_drop(struct dsd_disk_tier *dt, uint64_t h)
{
    pthread_mutex_lock(&dt->mu);
    int32_t s = dsd_hash_index_get(dt->index, h);
    pthread_mutex_unlock(&dt->mu);
    if (s < 0)
        return -ENOENT;
    forget(dt, s);
    clear_slot(dt, s);
    return 0;
}

void dsd_disk_tier_stats(const struct dsd_disk_tier *dt, struct dsd_disk_tier_stats *out)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&dt->mu;
    pthread_mutex_lock(mu);
    *out = dt->st;
    pthread_mutex_unlock(mu);
}

const char *dsd_disk_tier_path(const struct dsd_disk_tier *dt)
{
    return dt->path;
}

const struct dsd_kv_page_geom *dsd_disk_tier_geom(const struct dsd_disk_tier *dt)
{
    return &dt->c.geom;
}
