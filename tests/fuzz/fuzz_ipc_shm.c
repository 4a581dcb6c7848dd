/*
 * libFuzzer target: shared-memory validation and the ring producer against a hostile client.
 *
 * Input layout:
 *   byte 0       bit 0: also run the real memfd path; bits 1..5: seals to add
 *                (SHRINK, GROW, SEAL, WRITE, FUTURE_WRITE)
 *   bytes 1..8   file size (u64 little-endian) for the pure header check
 *   bytes 9..136 the header (zero-padded when the input is short)
 *   the rest     operations, 17 bytes each: a ring index k, then u64 a and u64 b: a goes into
 *                ring k's consumer position, b is the daemon's producer position; for
 *                k = 0xff, a and b are a prompt span's offset and count
 *
 * Checked: dsd_shm_check_header() accepts only geometries whose every region lies inside the
 * file without overlap; with a real sealed memfd, dsd_shm_attach() agrees with it, and no
 * consumer position and no prompt span makes the daemon write outside the ring it produces
 * into or read outside the arena (the whole mapping is compared against a snapshot).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ipc_shm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MEMFD_MAX (256u << 10)

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Everything a valid geometry promises. */
static void check_geometry(const struct dsd_shm_geometry *g, uint64_t file_size)
{
    if (g->total_size != file_size || file_size < DSD_SHM_HEADER_SIZE)
        abort();
    if (!g->prompt_capacity && !g->ring_count)
        abort();
    uint64_t pe = 0, re = 0;
    if (g->prompt_capacity) {
        if (g->prompt_offset < DSD_SHM_HEADER_SIZE || g->prompt_offset > file_size ||
            g->prompt_capacity > (file_size - g->prompt_offset) / 4)
            abort();
        pe = g->prompt_offset + 4 * g->prompt_capacity;
    }
    if (g->ring_count) {
        if (g->ring_capacity < 16 || (g->ring_capacity & (g->ring_capacity - 1)) ||
            g->ring_stride < DSD_SHM_RING_SLOTS_OFFSET + 4ull * g->ring_capacity ||
            g->rings_offset < DSD_SHM_HEADER_SIZE || g->rings_offset > file_size ||
            g->ring_count > (file_size - g->rings_offset) / g->ring_stride)
            abort();
        re = g->rings_offset + (uint64_t)g->ring_count * g->ring_stride;
    }
    if (g->prompt_capacity && g->ring_count && !(pe <= g->rings_offset || re <= g->prompt_offset))
        abort();
}

static void run_memfd(const uint8_t *hdr, uint64_t total, int seals, const uint8_t *ops,
                      size_t nops, const struct dsd_shm_geometry *want)
{
    int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return;
    if (ftruncate(fd, (off_t)total) < 0 || pwrite(fd, hdr, DSD_SHM_HEADER_SIZE, 0) < 0 ||
        (seals && fcntl(fd, F_ADD_SEALS, seals) < 0)) {
        close(fd);
        return;
    }
    /* The client's own view, to plant hostile positions and compare against. */
    uint8_t *client = mmap(NULL, total, PROT_READ | (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)
                                                         ? 0 : PROT_WRITE),
                           MAP_SHARED, fd, 0);
    struct dsd_shm d;
    struct dsd_ipc_fail fail;
    int rc = dsd_shm_attach(fd, 1ull << 30, &d, &fail);    /* takes fd over */
    const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    bool seals_ok = (seals & need) == need && !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE));
    if ((rc == 0) != seals_ok)
        abort();
    if (rc < 0) {
        if (fail.code != DSD_IPC_E_SHM_INVALID)
            abort();
        if (client != MAP_FAILED)
            munmap(client, total);
        return;
    }
    if (memcmp(&d.geo, want, sizeof *want) != 0 || client == MAP_FAILED)
        abort();
    uint8_t *snap = malloc(total);
    uint32_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = 0xdead0000u + (uint32_t)i;
    for (size_t i = 0; i + 17 <= nops && i < 17 * 32; i += 17) {
        uint8_t k = ops[i];
        uint64_t a = rd64(ops + i + 1), b = rd64(ops + i + 9);
        memcpy(snap, client, total);
        if (k == 0xff) {
            uint32_t *buf = malloc(64 * sizeof *buf);
            /* Counts above 64 would overflow buf if the span check let them through, which
             * is exactly what ASan is here to see; keep the buffer at 64 and the count
             * limited only when the span is valid. */
            uint32_t count = (uint32_t)b;
            if (a <= want->prompt_capacity && count <= want->prompt_capacity - a && count > 64)
                count = 64;
            (void)dsd_shm_copy_prompt(&d, a, count, buf, &fail);
            free(buf);
            if (memcmp(snap, client, total) != 0)
                abort();
            continue;
        }
        struct dsd_shm_ring *ring = dsd_shm_ring(&d, k);
        if (!ring) {
            if (k < want->ring_count)
                abort();
            continue;
        }
        struct dsd_shm_ring *cring = (struct dsd_shm_ring *)(client + want->rings_offset +
                                                             (uint64_t)k * want->ring_stride);
        atomic_store(&cring->cons_pos, a);
        memcpy(snap, client, total);
        struct dsd_ring_producer pr;
        dsd_ring_producer_init(&pr, &d, k, b);
        int64_t n = dsd_ring_produce(&pr, ids, (uint32_t)(a % 65));
        uint64_t used = b - a;
        if ((used > want->ring_capacity) != (n < 0))
            abort();
        if (n > (int64_t)want->ring_capacity)
            abort();
        /* Only this ring's bytes may have changed. */
        uint64_t lo = want->rings_offset + (uint64_t)k * want->ring_stride;
        uint64_t hi = lo + DSD_SHM_RING_SLOTS_OFFSET + 4ull * want->ring_capacity;
        if (memcmp(snap, client, lo) != 0 || memcmp(snap + hi, client + hi, total - hi) != 0)
            abort();
    }
    free(snap);
    munmap(client, total);
    dsd_shm_close(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    uint8_t hdr[DSD_SHM_HEADER_SIZE] = {0};
    size_t hn = size - 9 < sizeof hdr ? size - 9 : sizeof hdr;
    memcpy(hdr, data + 9, hn);
    uint64_t file_size = rd64(data + 1);
    struct dsd_shm_geometry g;
    struct dsd_ipc_fail fail;
    if (dsd_shm_check_header(hdr, sizeof hdr, file_size, &g, &fail) == 0)
        check_geometry(&g, file_size);
    else if (fail.code != DSD_IPC_E_SHM_INVALID || !fail.err.msg[0])
        abort();

    /* The real path uses the header's own total_size as the memfd size. */
    uint64_t total;
    memcpy(&total, hdr + 16, 8);
    if (!(data[0] & 1) || total < DSD_SHM_HEADER_SIZE || total > MEMFD_MAX)
        return 0;
    if (dsd_shm_check_header(hdr, sizeof hdr, total, &g, NULL) < 0)
        return 0;
    static const int seal_bits[5] = {F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_WRITE,
                                     F_SEAL_FUTURE_WRITE};
    int seals = 0;
    for (int i = 0; i < 5; i++)
        if (data[0] & (2 << i))
            seals |= seal_bits[i];
    const uint8_t *ops = size > 9 + sizeof hdr ? data + 9 + sizeof hdr : NULL;
    size_t nops = ops ? size - 9 - sizeof hdr : 0;
    run_memfd(hdr, total, seals, ops, nops, &g);
    return 0;
}
