/*
 * tests/unit/bench_safetensors.c: how long opening and prefaulting a checkpoint take.
 *
 *   bench_safetensors [MiB [DIR [TENSORS SHARDS]]]
 *
 * (defaults: 16 MiB in a fresh directory under $TMPDIR; 2000 tensors in 8 shards)
 *
 * Writes a 4-shard checkpoint of about MiB mebibytes with the DeepSeek mix of tensors (FP8
 * 2048x7168 weights, their F32 128x128-block scales, BF16 norms) and an index, then times:
 * the write, opening it cold (its pages dropped from the page cache with
 * POSIX_FADV_DONTNEED, which needs no root for clean pages) and warm, and prefaulting it cold
 * and warm. It checks a checksum of every tensor, so it fails if anything reads wrong.
 * Then it times opening a checkpoint shaped like the real one's metadata: TENSORS tiny
 * tensors with DeepSeek names in SHARDS shards (92425 and 163 for V3.2), where the cost is
 * header parsing, sorting and the index cross-check rather than bytes.
 * ctest runs it small (label bench); for the numbers in docs/SAFETENSORS.md run by hand
 *   bench_safetensors 1024 DIR 92425 163
 */
#include "safetensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define N_SHARDS 4

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t fill(uint8_t *p, uint64_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1, sum = 0;
    for (uint64_t i = 0; i < n; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t m = n - i < 8 ? n - i : 8;
        memcpy(p + i, &x, m);
    }
    for (uint64_t i = 0; i < n; i++)
        sum = sum * 31 + p[i];
    return sum;
}

static uint64_t checksum(const uint8_t *p, uint64_t n)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum = sum * 31 + p[i];
    return sum;
}

static void drop_cache(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    if (d)
        closedir(d);
}

static void remove_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (de->d_name[0] != '.')
            unlink(path);
    }
    if (d)
        closedir(d);
}

/* Metadata-heavy checkpoint: n tensors of 8 bytes in n_sh shards under PARENT/many. */
static int bench_many(const char *parent, int n, int n_sh, int cleanup)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/many", parent);
    mkdir(dir, 0755);
    char (*names)[80] = calloc((size_t)n, sizeof *names);
    char (*shard_of)[48] = calloc((size_t)n, sizeof *shard_of);
    const char **np = calloc((size_t)n, sizeof *np), **sp = calloc((size_t)n, sizeof *sp);
    static const uint8_t bytes[8];
    struct dsd_err err = {{0}};
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        /* 256 experts x 6 tensors per layer, like the MoE layers. */
        static const char *const kind[6] = {"down_proj.weight", "down_proj.weight_scale_inv",
                                            "gate_proj.weight", "gate_proj.weight_scale_inv",
                                            "up_proj.weight", "up_proj.weight_scale_inv"};
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.experts.%d.%s", i / 1536,
                 i / 6 % 256, kind[i % 6]);
        snprintf(shard_of[i], sizeof shard_of[i], "model-%05d-of-%06d.safetensors",
                 (int)((int64_t)i * n_sh / n) + 1, n_sh);
        np[i] = names[i];
        sp[i] = shard_of[i];
    }
    for (int lo = 0; lo < n;) {
        int hi = lo;
        while (hi < n && strcmp(shard_of[hi], shard_of[lo]) == 0)
            hi++;
        struct dsd_st_writer *w = dsd_st_writer_new();
        for (int i = lo; i < hi; i++)
            dsd_st_writer_add(w, names[i], DSD_DTYPE_BF16, 1, (int64_t[]){4}, bytes, 8);
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", dir, shard_of[lo]);
        if (dsd_st_writer_write(w, path, &err) < 0) {
            fprintf(stderr, "write: %s\n", err.msg);
            return 1;
        }
        dsd_st_writer_free(w);
        lo = hi;
    }
    if (dsd_st_write_index(dir, np, sp, (size_t)n, (uint64_t)n * 8, &err) < 0) {
        fprintf(stderr, "write_index: %s\n", err.msg);
        return 1;
    }
    double t_write = now_ms() - t0;
    drop_cache(dir);
    struct dsd_st_set *set = NULL;
    t0 = now_ms();
    int rc = dsd_st_open_dir(dir, &set, &err);
    double t_cold = now_ms() - t0;
    if (rc < 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    dsd_st_close(set);
    t0 = now_ms();
    rc = dsd_st_open_dir(dir, &set, &err);
    double t_warm = now_ms() - t0;
    int bad = rc < 0 || dsd_st_count(set) != (size_t)n || dsd_st_file_count(set) != n_sh;
    t0 = now_ms();
    for (int i = 0; i < n; i++)
        bad += dsd_st_find(set, names[i]) == NULL;
    double t_find = (now_ms() - t0) / n * 1e6;
    dsd_st_close(set);
    printf("metadata-scale checkpoint: %d tensors in %d shards + index (written in %.0f ms)\n",
           n, n_sh, t_write);
    printf("open, cold page cache:  %9.1f ms\n", t_cold);
    printf("open, warm:             %9.1f ms\n", t_warm);
    printf("find, per lookup:       %9.0f ns\n", t_find);
    if (cleanup) {
        remove_files(dir);
        rmdir(dir);
    }
    free(names);
    free(shard_of);
    free(np);
    free(sp);
    return bad;
}

struct planned {
    char name[96];
    enum dsd_dtype dtype;
    int ndim;
    int64_t shape[2];
    uint64_t nbytes, sum;
    int shard;
};

int main(int argc, char **argv)
{
    long mib = argc > 1 ? atol(argv[1]) : 16;
    char dir[4096];
    if (argc > 2) {
        snprintf(dir, sizeof dir, "%s", argv[2]);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/dsd-st-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;

    /* One "layer" = FP8 weight rows x 7168 + its 128x128-block F32 scales + a BF16 norm. */
    const int64_t rows = mib >= 256 ? 2048 : 128, cols = 7168; /* small runs stay small */
    const int64_t srows = (rows + 127) / 128, scols = (cols + 127) / 128;
    uint64_t layer_bytes = (uint64_t)(rows * cols + srows * scols * 4 + cols * 2);
    int layers = (int)(((uint64_t)mib << 20) / layer_bytes);
    if (layers < N_SHARDS)
        layers = N_SHARDS;
    int n = layers * 3;
    struct planned *t = calloc((size_t)n, sizeof *t);
    for (int l = 0; l < layers; l++) {
        struct planned *w = &t[3 * l], *s = w + 1, *g = w + 2;
        *w = (struct planned){.dtype = DSD_DTYPE_F8_E4M3, .ndim = 2, .shape = {rows, cols}};
        *s = (struct planned){.dtype = DSD_DTYPE_F32, .ndim = 2, .shape = {srows, scols}};
        *g = (struct planned){.dtype = DSD_DTYPE_BF16, .ndim = 1, .shape = {cols}};
        snprintf(w->name, sizeof w->name, "model.layers.%d.mlp.down_proj.weight", l);
        snprintf(s->name, sizeof s->name, "model.layers.%d.mlp.down_proj.weight_scale_inv", l);
        snprintf(g->name, sizeof g->name, "model.layers.%d.post_attention_layernorm.weight", l);
        for (int k = 0; k < 3; k++) {
            struct planned *p = &t[3 * l + k];
            p->nbytes = dsd_dtype_size(p->dtype) * (uint64_t)p->shape[0] *
                        (uint64_t)(p->ndim > 1 ? p->shape[1] : 1);
            p->shard = l * N_SHARDS / layers;
        }
    }

    struct dsd_err err = {{0}};
    uint64_t total = 0;
    double t0 = now_ms();
    const char **names = calloc((size_t)n, sizeof *names);
    const char **shards = calloc((size_t)n, sizeof *shards);
    static char shard_names[N_SHARDS][64];
    for (int sh = 0; sh < N_SHARDS; sh++) {
        snprintf(shard_names[sh], sizeof shard_names[sh], "model-%05d-of-%05d.safetensors",
                 sh + 1, N_SHARDS);
        struct dsd_st_writer *w = dsd_st_writer_new();
        dsd_st_writer_add_metadata(w, "format", "pt");
        uint8_t **bufs = calloc((size_t)n, sizeof *bufs);
        for (int i = 0; i < n; i++) {
            if (t[i].shard != sh)
                continue;
            bufs[i] = malloc(t[i].nbytes);
            t[i].sum = fill(bufs[i], t[i].nbytes, (uint64_t)i);
            if (dsd_st_writer_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, bufs[i],
                                  t[i].nbytes) < 0) {
                fprintf(stderr, "writer_add %s failed\n", t[i].name);
                return 1;
            }
            total += t[i].nbytes;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, shard_names[sh]);
        if (dsd_st_writer_write(w, path, &err) < 0) {
            fprintf(stderr, "write: %s\n", err.msg);
            return 1;
        }
        dsd_st_writer_free(w);
        for (int i = 0; i < n; i++)
            free(bufs[i]);
        free(bufs);
    }
    for (int i = 0; i < n; i++) {
        names[i] = t[i].name;
        shards[i] = shard_names[t[i].shard];
    }
    if (dsd_st_write_index(dir, names, shards, (size_t)n, total, &err) < 0) {
        fprintf(stderr, "write_index: %s\n", err.msg);
        return 1;
    }
    double t_write = now_ms() - t0;

    drop_cache(dir);
    struct dsd_st_set *set = NULL;
    t0 = now_ms();
    if (dsd_st_open_dir(dir, &set, &err) < 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    double t_open_cold = now_ms() - t0;
    t0 = now_ms();
    if (dsd_st_prefault(set, threads, &err) < 0) {
        fprintf(stderr, "prefault: %s\n", err.msg);
        return 1;
    }
    double t_pf_cold = now_ms() - t0;
    dsd_st_close(set);

    t0 = now_ms();
    if (dsd_st_open_dir(dir, &set, &err) < 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    double t_open_warm = now_ms() - t0;
    t0 = now_ms();
    dsd_st_prefault(set, threads, &err);
    double t_pf_warm = now_ms() - t0;

    int bad = 0;
    if (dsd_st_count(set) != (size_t)n || dsd_st_total_bytes(set) != total)
        bad++;
    for (int i = 0; i < n; i++) {
        const struct dsd_st_tensor *x = dsd_st_find(set, t[i].name);
        if (!x || x->nbytes != t[i].nbytes || checksum(x->data, x->nbytes) != t[i].sum) {
            fprintf(stderr, "tensor %s reads wrong\n", t[i].name);
            bad++;
        }
    }
    dsd_st_close(set);

    printf("checkpoint: %d tensors, %.1f MiB in %d shards + index, %s\n", n,
           (double)total / (1 << 20), N_SHARDS, dir);
    printf("write (incl. fsync):    %9.1f ms\n", t_write);
    printf("open, cold page cache:  %9.2f ms\n", t_open_cold);
    printf("open, warm:             %9.2f ms\n", t_open_warm);
    printf("prefault cold, %2d thr:  %9.1f ms (%.0f MiB/s)\n", threads, t_pf_cold,
           (double)total / (1 << 20) / (t_pf_cold / 1e3));
    printf("prefault warm, %2d thr:  %9.1f ms\n", threads, t_pf_warm);

    if (argc <= 2)
        remove_files(dir);
    free(names);
    free(shards);
    free(t);

    int many = argc > 4 ? atoi(argv[3]) : 2000, n_sh = argc > 4 ? atoi(argv[4]) : 8;
    if (many < 1 || n_sh < 1 || n_sh > many) {
        fprintf(stderr, "bad TENSORS/SHARDS\n");
        return 1;
    }
    bad += bench_many(dir, many, n_sh, argc <= 2);
    if (argc <= 2)
        rmdir(dir);
    printf("%d checks failed\n", bad);
    return bad ? 1 : 0;
}
