#include "ipc_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096u
#define SEALS_REQUIRED (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#define SEALS_FORBIDDEN (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static uint64_t ring_stride_for(uint32_t cap)
{
    return align_up(DSD_SHM_RING_SLOTS_OFFSET + 4ull * cap, DSD_SHM_LINE);
}

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

int dsd_shm_layout(const struct dsd_shm_params *p, struct dsd_shm_header *hdr,
                   struct dsd_err *err)
{
    if (p->ring_count > DSD_SHM_MAX_RINGS)
        return dsd_errf(err, -EINVAL, "shm: %u rings requested, at most %u", p->ring_count,
                        DSD_SHM_MAX_RINGS);
    if (p->ring_count && (!is_pow2(p->ring_capacity) || p->ring_capacity < DSD_SHM_MIN_RING_CAP ||
                          p->ring_capacity > DSD_SHM_MAX_RING_CAP))
        return dsd_errf(err, -EINVAL,
                        "shm: ring capacity %u must be a power of two in [%u, %u]",
                        p->ring_capacity, DSD_SHM_MIN_RING_CAP, DSD_SHM_MAX_RING_CAP);
    if (!p->ring_count && !p->prompt_capacity)
        return dsd_errf(err, -EINVAL, "shm: neither a prompt arena nor rings requested");
    if (p->prompt_capacity > (1ull << 40))
        return dsd_errf(err, -EINVAL, "shm: prompt capacity %llu tokens is absurd",
                        (unsigned long long)p->prompt_capacity);
    memset(hdr, 0, sizeof *hdr);
    memcpy(hdr->magic, DSD_SHM_MAGIC, sizeof hdr->magic);
    hdr->version = DSD_SHM_VERSION;
    hdr->header_size = DSD_SHM_HEADER_SIZE;
    /* Page-aligned areas: the arena and rings can be pinned for DMA (cudaHostRegister). */
    uint64_t at = PAGE;
    if (p->prompt_capacity) {
        hdr->prompt_offset = at;
        hdr->prompt_capacity = p->prompt_capacity;
        at = align_up(at + 4 * p->prompt_capacity, PAGE);
    }
    if (p->ring_count) {
        hdr->rings_offset = at;
        hdr->ring_count = p->ring_count;
        hdr->ring_capacity = p->ring_capacity;
        hdr->ring_stride = ring_stride_for(p->ring_capacity);
        at = align_up(at + hdr->ring_stride * p->ring_count, PAGE);
    }
    hdr->total_size = at;
    return 0;
}

int dsd_shm_create(const struct dsd_shm_params *p, struct dsd_shm *shm, struct dsd_err *err)
{
    struct dsd_shm_header hdr;
    memset(shm, 0, sizeof *shm);
    shm->fd = -1;
    int rc = dsd_shm_layout(p, &hdr, err);
    if (rc)
        return rc;
    int fd = memfd_create("deepseekd-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return dsd_errf(err, -errno, "shm: memfd_create: %s", strerror(errno));
    if (ftruncate(fd, (off_t)hdr.total_size) < 0) {
        rc = dsd_errf(err, -errno, "shm: ftruncate to %llu bytes: %s",
                      (unsigned long long)hdr.total_size, strerror(errno));
        close(fd);
        return rc;
    }
    void *base = mmap(NULL, hdr.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = dsd_errf(err, -errno, "shm: mmap of %llu bytes: %s",
                      (unsigned long long)hdr.total_size, strerror(errno));
        close(fd);
        return rc;
    }
    memcpy(base, &hdr, sizeof hdr);
    if (fcntl(fd, F_ADD_SEALS, SEALS_REQUIRED) < 0) {
        rc = dsd_errf(err, -errno, "shm: sealing the memfd: %s", strerror(errno));
        munmap(base, hdr.total_size);
        close(fd);
        return rc;
    }
    shm->fd = fd;
    shm->base = base;
    shm->size = hdr.total_size;
    shm->geo = (struct dsd_shm_geometry){
        .total_size = hdr.total_size,
        .prompt_offset = hdr.prompt_offset,
        .prompt_capacity = hdr.prompt_capacity,
        .rings_offset = hdr.rings_offset,
        .ring_stride = hdr.ring_stride,
        .ring_count = hdr.ring_count,
        .ring_capacity = hdr.ring_capacity,
    };
    return 0;
}

static int shm_bad(struct dsd_ipc_fail *fail, int ret, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int shm_bad(struct dsd_ipc_fail *fail, int ret, const char *fmt, ...)
{
    if (!fail)
        return ret;
    char what[DSD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return dsd_ipc_failf(fail, ret, DSD_IPC_E_SHM_INVALID, "shm_attach: %s", what);
}

int dsd_shm_check_header(const void *hdrp, size_t avail, uint64_t file_size,
                         struct dsd_shm_geometry *geo, struct dsd_ipc_fail *fail)
{
    struct dsd_shm_header h;
    if (avail < sizeof h || file_size < sizeof h)
        return shm_bad(fail, -EPROTO, "region of %llu bytes is smaller than the %u-byte header",
                       (unsigned long long)(avail < file_size ? avail : file_size),
                       DSD_SHM_HEADER_SIZE);
    memcpy(&h, hdrp, sizeof h);     /* one read of the shared bytes; all checks use the copy */
    if (memcmp(h.magic, DSD_SHM_MAGIC, sizeof h.magic) != 0)
        return shm_bad(fail, -EPROTO, "bad magic (not a deepseekd shm region; create it with "
                                      "dsd_shm_create or lay it out as PROTOCOL.md section 7)");
    if (h.version != DSD_SHM_VERSION)
        return shm_bad(fail, -EPROTO, "shm layout version %u, this daemon speaks version %u",
                       h.version, DSD_SHM_VERSION);
    if (h.header_size != DSD_SHM_HEADER_SIZE)
        return shm_bad(fail, -EPROTO, "header_size %u, must be %u", h.header_size,
                       DSD_SHM_HEADER_SIZE);
    if (h.total_size != file_size)
        return shm_bad(fail, -EPROTO, "header says %llu bytes but the memfd has %llu",
                       (unsigned long long)h.total_size, (unsigned long long)file_size);
    if (h.flags != 0)
        return shm_bad(fail, -EPROTO, "flags 0x%x set; version 1 defines none", h.flags);
    for (size_t i = 0; i < sizeof h.reserved; i++)
        if (h.reserved[i])
            return shm_bad(fail, -EPROTO, "reserved header byte %zu is not zero",
                           offsetof(struct dsd_shm_header, reserved) + i);
    const uint64_t total = h.total_size;
    uint64_t prompt_end = 0, rings_end = 0;
    if (h.prompt_capacity) {
        if (h.prompt_offset % DSD_SHM_LINE || h.prompt_offset < DSD_SHM_HEADER_SIZE)
            return shm_bad(fail, -EPROTO, "prompt_offset %llu must be a multiple of %u and at "
                           "least %u",
                           (unsigned long long)h.prompt_offset, DSD_SHM_LINE,
                           DSD_SHM_HEADER_SIZE);
        if (h.prompt_offset > total || h.prompt_capacity > (total - h.prompt_offset) / 4)
            return shm_bad(fail, -EPROTO, "prompt arena (%llu tokens at offset %llu) ends past "
                           "the region's %llu bytes",
                           (unsigned long long)h.prompt_capacity,
                           (unsigned long long)h.prompt_offset, (unsigned long long)total);
        prompt_end = h.prompt_offset + 4 * h.prompt_capacity;
    }
    if (h.ring_count) {
        if (h.ring_count > DSD_SHM_MAX_RINGS)
            return shm_bad(fail, -EPROTO, "%u rings, at most %u", h.ring_count,
                           DSD_SHM_MAX_RINGS);
        if (!is_pow2(h.ring_capacity) || h.ring_capacity < DSD_SHM_MIN_RING_CAP ||
            h.ring_capacity > DSD_SHM_MAX_RING_CAP)
            return shm_bad(fail, -EPROTO, "ring_capacity %u must be a power of two in [%u, %u]",
                           h.ring_capacity, DSD_SHM_MIN_RING_CAP, DSD_SHM_MAX_RING_CAP);
        if (h.ring_stride % DSD_SHM_LINE ||
            h.ring_stride < DSD_SHM_RING_SLOTS_OFFSET + 4ull * h.ring_capacity)
            return shm_bad(fail, -EPROTO, "ring_stride %llu must be a multiple of %u and at "
                           "least %llu",
                           (unsigned long long)h.ring_stride, DSD_SHM_LINE,
                           (unsigned long long)(DSD_SHM_RING_SLOTS_OFFSET +
                                                4ull * h.ring_capacity));
        if (h.rings_offset % DSD_SHM_LINE || h.rings_offset < DSD_SHM_HEADER_SIZE)
            return shm_bad(fail, -EPROTO, "rings_offset %llu must be a multiple of %u and at "
                           "least %u",
                           (unsigned long long)h.rings_offset, DSD_SHM_LINE,
                           DSD_SHM_HEADER_SIZE);
        if (h.rings_offset > total || h.ring_count > (total - h.rings_offset) / h.ring_stride)
            return shm_bad(fail, -EPROTO, "%u rings of %llu bytes at offset %llu end past the "
                           "region's %llu bytes",
                           h.ring_count, (unsigned long long)h.ring_stride,
                           (unsigned long long)h.rings_offset, (unsigned long long)total);
        rings_end = h.rings_offset + (uint64_t)h.ring_count * h.ring_stride;
    }
    if (!h.prompt_capacity && !h.ring_count)
        return shm_bad(fail, -EPROTO, "region has neither a prompt arena nor rings");
    if (h.prompt_capacity && h.ring_count &&
        !(prompt_end <= h.rings_offset || rings_end <= h.prompt_offset))
        return shm_bad(fail, -EPROTO, "prompt arena [%llu, %llu) overlaps the rings [%llu, %llu)",
                       (unsigned long long)h.prompt_offset, (unsigned long long)prompt_end,
                       (unsigned long long)h.rings_offset, (unsigned long long)rings_end);
    *geo = (struct dsd_shm_geometry){
        .total_size = total,
        .prompt_offset = h.prompt_capacity ? h.prompt_offset : 0,
        .prompt_capacity = h.prompt_capacity,
        .rings_offset = h.ring_count ? h.rings_offset : 0,
        .ring_stride = h.ring_count ? h.ring_stride : 0,
        .ring_count = h.ring_count,
        .ring_capacity = h.ring_count ? h.ring_capacity : 0,
    };
    return 0;
}

static const char *seal_list(int seals, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s%s%s%s", seals & F_SEAL_SHRINK ? "SHRINK " : "",
             seals & F_SEAL_GROW ? "GROW " : "", seals & F_SEAL_SEAL ? "SEAL " : "",
             seals & F_SEAL_WRITE ? "WRITE " : "",
             seals & F_SEAL_FUTURE_WRITE ? "FUTURE_WRITE " : "");
    size_t l = strlen(buf);
    if (l)
        buf[l - 1] = 0;
    else
        snprintf(buf, n, "none");
    return buf;
}

int dsd_shm_attach(int fd, uint64_t max_bytes, struct dsd_shm *shm, struct dsd_ipc_fail *fail)
{
    return dsd_shm_attach_hooked(fd, max_bytes, shm, fail, NULL, NULL);
}

int dsd_shm_attach_hooked(int fd, uint64_t max_bytes, struct dsd_shm *shm,
                          struct dsd_ipc_fail *fail, void (*between)(int fd, void *user),
                          void *user)
{
    memset(shm, 0, sizeof *shm);
    shm->fd = -1;
    if (fd < 0)
        return shm_bad(fail, -EPROTO, "no file descriptor came with the frame (send the memfd "
                                      "as SCM_RIGHTS on the sendmsg carrying the frame)");
    struct stat st;
    int rc;
    char sl[64];
    /* Seals first, size second. The client keeps its own fd: until SHRINK|GROW are set it
     * can still resize the file, so a size read before the seal check could be stale by the
     * time the seals are seen (shrunk, then sealed: the mapping would reach past the end of
     * the file and the first ring write would SIGBUS the daemon). Once SHRINK|GROW|SEAL are
     * seen they are permanent, so the size read after them is final. */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        rc = shm_bad(fail, -EPROTO, "the fd is not a memfd (F_GET_SEALS: %s)", strerror(errno));
        goto out_close;
    }
    if ((seals & SEALS_REQUIRED) != SEALS_REQUIRED) {
        rc = shm_bad(fail, -EPROTO, "the memfd is not sealed (seals: %s); add "
                     "F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL with fcntl(F_ADD_SEALS) before "
                     "sending it (memfd_create needs MFD_ALLOW_SEALING)",
                     seal_list(seals, sl, sizeof sl));
        goto out_close;
    }
    if (seals & SEALS_FORBIDDEN) {
        rc = shm_bad(fail, -EPROTO, "the memfd is sealed against writes (seals: %s); the daemon "
                     "writes the rings, leave F_SEAL_WRITE and F_SEAL_FUTURE_WRITE off",
                     seal_list(seals, sl, sizeof sl));
        goto out_close;
    }
    if (between)
        between(fd, user);      /* tests: what a racing client does between the two reads */
    if (fstat(fd, &st) < 0) {
        rc = shm_bad(fail, -errno, "fstat of the fd failed: %s", strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = shm_bad(fail, -EPROTO, "the fd is not a memfd (not a regular file)");
        goto out_close;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < DSD_SHM_HEADER_SIZE) {
        rc = shm_bad(fail, -EPROTO, "the memfd has %llu bytes, less than the %u-byte header",
                     (unsigned long long)size, DSD_SHM_HEADER_SIZE);
        goto out_close;
    }
    if (size > max_bytes || size > SIZE_MAX) {
        rc = shm_bad(fail, -EPROTO, "the memfd has %llu bytes, the limit is %llu",
                     (unsigned long long)size, (unsigned long long)max_bytes);
        goto out_close;
    }
    /* Sealed against shrinking, the file cannot lose pages under this mapping (no SIGBUS). */
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = shm_bad(fail, -errno, "mmap of %llu bytes failed: %s", (unsigned long long)size,
                     strerror(errno));
        goto out_close;
    }
    rc = dsd_shm_check_header(base, size, size, &shm->geo, fail);
    if (rc) {
        munmap(base, size);
        goto out_close;
    }
    shm->base = base;
    shm->size = size;
    rc = 0;
out_close:
    close(fd);
    return rc;
}

void dsd_shm_close(struct dsd_shm *shm)
{
    if (!shm)
        return;
    if (shm->base)
        munmap(shm->base, shm->size);
    if (shm->fd >= 0)
        close(shm->fd);
    shm->base = NULL;
    shm->size = 0;
    shm->fd = -1;
}

uint32_t *dsd_shm_prompt(const struct dsd_shm *shm)
{
    if (!shm->base || !shm->geo.prompt_capacity)
        return NULL;
    return (uint32_t *)(shm->base + shm->geo.prompt_offset);
}

int dsd_shm_copy_prompt(const struct dsd_shm *shm, uint64_t offset, uint32_t count,
                        uint32_t *dst, struct dsd_ipc_fail *fail)
{
    uint64_t cap = shm->base ? shm->geo.prompt_capacity : 0;
    if (count == 0 || offset > cap || count > cap - offset)
        return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_RING_UNAVAILABLE,
                             "generate: \"prompt_span\" {offset %llu, count %u} is outside the "
                             "prompt arena of %llu tokens",
                             (unsigned long long)offset, count, (unsigned long long)cap);
    memcpy(dst, shm->base + shm->geo.prompt_offset + 4 * offset, 4ull * count);
    return 0;
}

struct dsd_shm_ring *dsd_shm_ring(const struct dsd_shm *shm, uint32_t k)
{
    if (!shm->base || k >= shm->geo.ring_count)
        return NULL;
    return (struct dsd_shm_ring *)(shm->base + shm->geo.rings_offset +
                                   (uint64_t)k * shm->geo.ring_stride);
}

/* ---- rings ------------------------------------------------------------------------------ */

void dsd_ring_producer_init(struct dsd_ring_producer *p, const struct dsd_shm *shm, uint32_t k,
                            uint64_t pos)
{
    p->ring = dsd_shm_ring(shm, k);
    p->slots = (uint32_t *)((uint8_t *)p->ring + DSD_SHM_RING_SLOTS_OFFSET);
    p->cap = shm->geo.ring_capacity;
    p->mask = p->cap - 1;
    p->pos = pos;
    p->floor = pos;
    p->broken = false;
    atomic_store_explicit(&p->ring->prod_pos, pos, memory_order_release);
}

void dsd_ring_producer_bind(struct dsd_ring_producer *p, uint64_t request_id)
{
    /* Tokens of an earlier request the client never read do not count against this one. */
    p->floor = p->pos;
    atomic_store_explicit(&p->ring->request_id, request_id, memory_order_relaxed);
    atomic_store_explicit(&p->ring->flags, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ring->finish, DSD_IPC_FINISH_NONE, memory_order_release);
}

int64_t dsd_ring_space(struct dsd_ring_producer *p)
{
    if (p->broken)
        return -EPROTO;
    /* The one read of the client's index; unsigned difference also catches cons > pos. */
    uint64_t cons = atomic_load_explicit(&p->ring->cons_pos, memory_order_acquire);
    /* A consumer still behind the binding point (unread tokens of an earlier request, at
     * most a ring's worth) is treated as at the binding point, however far this request has
     * produced since; anything else impossible is caught below. */
    uint64_t behind = p->floor - cons;
    if (behind != 0 && behind <= p->cap)
        cons = p->floor;
    uint64_t used = p->pos - cons;
    if (used > p->cap) {
        p->broken = true;
        return -EPROTO;
    }
    return (int64_t)(p->cap - used);
}

int64_t dsd_ring_produce(struct dsd_ring_producer *p, const uint32_t *ids, uint32_t n)
{
    int64_t space = dsd_ring_space(p);
    if (space < 0)
        return space;
    uint32_t k = n < space ? n : (uint32_t)space;
    for (uint32_t i = 0; i < k; i++)
        p->slots[(p->pos + i) & p->mask] = ids[i];
    p->pos += k;
    atomic_store_explicit(&p->ring->prod_pos, p->pos, memory_order_release);
    return k;
}

void dsd_ring_set_stalled(struct dsd_ring_producer *p, bool stalled)
{
    atomic_store_explicit(&p->ring->flags, stalled ? DSD_SHM_RING_STALLED : 0,
                          memory_order_release);
}

void dsd_ring_producer_finish(struct dsd_ring_producer *p, enum dsd_ipc_finish finish)
{
    atomic_store_explicit(&p->ring->prod_pos, p->pos, memory_order_release);
    atomic_store_explicit(&p->ring->finish, (uint32_t)finish, memory_order_release);
}

void dsd_ring_consumer_init(struct dsd_ring_consumer *c, const struct dsd_shm *shm, uint32_t k,
                            uint64_t pos)
{
    c->ring = dsd_shm_ring(shm, k);
    c->slots = (const uint32_t *)((const uint8_t *)c->ring + DSD_SHM_RING_SLOTS_OFFSET);
    c->cap = shm->geo.ring_capacity;
    c->mask = c->cap - 1;
    c->pos = pos;
}

int64_t dsd_ring_available(const struct dsd_ring_consumer *c)
{
    uint64_t prod = atomic_load_explicit(&c->ring->prod_pos, memory_order_acquire);
    uint64_t avail = prod - c->pos;
    if (avail > c->cap)
        return -EPROTO;
    return (int64_t)avail;
}

int64_t dsd_ring_consume(struct dsd_ring_consumer *c, uint32_t *out, uint32_t max)
{
    int64_t avail = dsd_ring_available(c);
    if (avail < 0)
        return avail;
    uint32_t k = avail < max ? (uint32_t)avail : max;
    for (uint32_t i = 0; i < k; i++)
        out[i] = c->slots[(c->pos + i) & c->mask];
    c->pos += k;
    atomic_store_explicit(&c->ring->cons_pos, c->pos, memory_order_release);
    return k;
}

enum dsd_ipc_finish dsd_ring_finish_code(const struct dsd_ring_consumer *c)
{
    return (enum dsd_ipc_finish)atomic_load_explicit(&c->ring->finish, memory_order_acquire);
}

bool dsd_ring_stalled(const struct dsd_ring_consumer *c)
{
    return atomic_load_explicit(&c->ring->flags, memory_order_acquire) & DSD_SHM_RING_STALLED;
}

uint64_t dsd_ring_request_id(const struct dsd_ring_consumer *c)
{
    return atomic_load_explicit(&c->ring->request_id, memory_order_relaxed);
}
