/*
 * deepseekd-diskbench: how fast the disk KV tier reads a prefix back, beside what the same
 * disk gives a plain sequential reader of the same file (the "reload at >= 80 % of the
 * link's measured rate", for the disk link). No GPU, no model: page records of a chosen size.
 *
 *   deepseekd-diskbench DIR [--pages N] [--layers L] [--reps R]
 *
 * It writes N pages chained like a prompt's prefix into a disk tier in DIR (the records of a
 * model with L layers of V3.2's KV widths: 656-byte latent entries and 132-byte index keys per
 * token), closes it and opens it again (a restart: the index comes from the file's headers),
 * then times, R times each, in this order:
 *   raw     O_DIRECT pread of the records' bytes in 4 MiB requests, one at a time (what `dd
 *           iflag=direct bs=4M` measures, over the written part of the file only; buffered
 *           where the tier itself could not use O_DIRECT, a tmpfs for one);
 *   get     dsd_disk_tier_get_many over all N pages into aligned records (what the tier I/O
 *           thread runs for a read-ahead: windows of reads in flight, vectored runs of
 *           consecutive slots, each record verified as it lands);
 *   verify  dsd_kv_page_verify of the N records already in memory (the checksums alone).
 * Prints one line per measure (best and median GB/s of records) and get's share of raw.
 * Exit status 0, 1 on an error (with a message), 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "disk_page.h"
#include "disk_tier.h"
#include "page_hash.h"

#define RAW_READ (4u << 20)     /* dd's bs=4M */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *gbps, int reps, double ref)
{
    qsort(gbps, (size_t)reps, sizeof *gbps, cmp_double);
    printf("%-7s best %6.2f GB/s  median %6.2f GB/s", what, gbps[reps - 1], gbps[reps / 2]);
    if (ref > 0)
        printf("  (%.0f %% of raw's median)", 100.0 * gbps[reps / 2] / ref);
    printf("\n");
}

static int usage(void)
{
    fprintf(stderr, "usage: deepseekd-diskbench DIR [--pages N] [--layers L] [--reps R]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return usage();
    const char *dir = argv[1];
    int n = 511, layers = 2, reps = 5;
    for (int i = 2; i < argc; i++) {
        int *dst = !strcmp(argv[i], "--pages") ? &n : !strcmp(argv[i], "--layers") ? &layers
                 : !strcmp(argv[i], "--reps") ? &reps : NULL;
        if (!dst || i + 1 >= argc)
            return usage();
        char *end;
        long v = strtol(argv[++i], &end, 10);
        if (*end || v < 1 || v > 1000000)
            return usage();
        *dst = (int)v;
    }
    if (reps > 64)
        reps = 64;
    const struct dsd_kv_page_geom g = {.n_layers = layers, .mla_page_bytes = 64 * 656, .index_page_bytes = 64 * 132};
    const size_t rec = dsd_kv_page_record_bytes(&g), mla_b = dsd_kv_page_mla_bytes(&g),
                 idx_b = dsd_kv_page_index_bytes(&g);
    const uint64_t fp = 0x5eed5eedull;
    struct dsd_err err = {{0}};
    struct dsd_disk_tier_config c = {.dir = dir, .budget_bytes = 4096 + (uint64_t)(n + 8) * rec, .geom = g,
                                     .fingerprint = fp};
    uint8_t *recs = aligned_alloc(4096, (size_t)n * rec), *rawbuf = aligned_alloc(4096, RAW_READ);
    uint8_t *mla = malloc(mla_b), *idx = malloc(idx_b);
    uint64_t *hash = malloc((size_t)n * sizeof *hash);
    struct dsd_kv_page_meta *meta = calloc((size_t)n, sizeof *meta);
    struct dsd_disk_get *gets = calloc((size_t)n, sizeof *gets);
    if (!recs || !rawbuf || !mla || !idx || !hash || !meta || !gets) {
        fprintf(stderr, "diskbench: out of memory for %d records of %zu bytes\n", n, rec);
        return 1;
    }
    /* the prefix: page p's tokens, its parent the page before */
    struct dsd_disk_tier *dt = dsd_disk_tier_open(&c, &err);
    if (!dt) {
        fprintf(stderr, "diskbench: %s\n", err.msg);
        return 1;
    }
    uint64_t parent = 0;
    double t0 = now_s();
    for (int p = 0; p < n; p++) {
        for (size_t i = 0; i < mla_b; i++)
            mla[i] = (uint8_t)(i * 31u + (unsigned)p);
        for (size_t i = 0; i < idx_b; i++)
            idx[i] = (uint8_t)(i * 17u + (unsigned)p);
        meta[p].parent_hash = parent;
        for (int t = 0; t < DSD_KV_PAGE_TOKENS; t++)
            meta[p].tokens[t] = p * DSD_KV_PAGE_TOKENS + t;
        if (dsd_disk_tier_put(dt, &meta[p], mla, idx, &err) < 0) {
            fprintf(stderr, "diskbench: writing page %d: %s\n", p, err.msg);
            return 1;
        }
        hash[p] = parent = meta[p].chain_hash;
    }
    double tw = now_s() - t0;
    struct dsd_disk_tier_stats st;
    dsd_disk_tier_stats(dt, &st);
    printf("diskbench: %d pages of %zu bytes (%d layers) in %s, %s, %s; written at %.2f GB/s\n", n, rec, layers,
           dsd_disk_tier_path(dt), st.direct ? "O_DIRECT" : "buffered", st.uring ? "io_uring" : "pread",
           (double)n * rec / tw / 1e9);
    char path[4096];
    snprintf(path, sizeof path, "%s", dsd_disk_tier_path(dt));
    dsd_disk_tier_close(dt);
    dt = dsd_disk_tier_open(&c, &err);          /* a restart */
    if (!dt) {
        fprintf(stderr, "diskbench: reopening: %s\n", err.msg);
        return 1;
    }

    double raw[64], get[64], ver[64];
    const size_t bytes = (size_t)n * rec;
    for (int r = 0; r < reps; r++) {
        /* raw: the records' bytes (slots are handed out from the file's start) in 4 MiB reads */
        int fd = open(path, O_RDONLY | (st.direct ? O_DIRECT : 0));
        if (fd < 0) {
            fprintf(stderr, "diskbench: %s: %s\n", path, strerror(errno));
            return 1;
        }
        t0 = now_s();
        for (size_t off = 0; off < bytes;) {
            const size_t left = (bytes - off + 4095) & ~(size_t)4095, len = left < RAW_READ ? left : RAW_READ;
            ssize_t got = pread(fd, rawbuf, len, (off_t)(4096 + off));
            if (got <= 0) {
                fprintf(stderr, "diskbench: raw read at %zu: %s\n", off, got < 0 ? strerror(errno) : "end of file");
                close(fd);
                return 1;
            }
            off += (size_t)got;
        }
        raw[r] = (double)bytes / (now_s() - t0) / 1e9;
        close(fd);

        /* get: the tier's read path, into aligned records */
        for (int p = 0; p < n; p++)
            gets[p] = (struct dsd_disk_get){.hash = hash[p], .expect = &meta[p], .rec = recs + (size_t)p * rec};
        t0 = now_s();
        dsd_disk_tier_get_many(dt, n, gets);
        get[r] = (double)bytes / (now_s() - t0) / 1e9;
        for (int p = 0; p < n; p++)
            if (gets[p].rc != 0) {
                fprintf(stderr, "diskbench: page %d: %s\n", p, gets[p].err.msg);
                return 1;
            }

        /* verify: the checksums of the same records */
        t0 = now_s();
        for (int p = 0; p < n; p++) {
            struct dsd_kv_page_meta m;
            if (dsd_kv_page_verify(recs + (size_t)p * rec, rec, &g, fp, &m, &err) != 0) {
                fprintf(stderr, "diskbench: verifying page %d: %s\n", p, err.msg);
                return 1;
            }
        }
        ver[r] = (double)bytes / (now_s() - t0) / 1e9;
    }
    dsd_disk_tier_stats(dt, &st);
    report("raw", raw, reps, 0);                /* (sorts raw: raw[reps / 2] is its median) */
    report("get", get, reps, raw[reps / 2]);
    report("verify", ver, reps, 0);
    printf("get: %llu disk requests for %d x %d pages\n", (unsigned long long)st.read_requests, reps, n);
    dsd_disk_tier_close(dt);
    unlink(path);
    free(recs);
    free(rawbuf);
    free(mla);
    free(idx);
    free(hash);
    free(meta);
    free(gets);
    return 0;
}
