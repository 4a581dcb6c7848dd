/*
 * tests/fuzz/fuzz_st_index.c: libFuzzer target for model.safetensors.index.json handling.
 *
 * A scratch model directory holds two valid shards (a.safetensors: "x", "y";
 * b.safetensors: "z"); each input becomes its index.json and the directory is opened. The
 * input can name shards, tensors, missing files, paths outside the directory, and so on.
 * Opening must never crash, must fail with a message, or succeed only when the index and the
 * shards agree exactly.
 */
#include "safetensors.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[256];
static char g_index[300];

static void cleanup(void)
{
    static const char *const files[] = {"a.safetensors", "b.safetensors",
                                        "model.safetensors.index.json"};
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", g_dir, files[i]);
        unlink(path);
    }
    rmdir(g_dir);
}

static void add(struct dsd_st_writer *w, const char *name, const void *bytes, int64_t n)
{
    if (dsd_st_writer_add(w, name, DSD_DTYPE_U8, 1, &n, bytes, (uint64_t)n) < 0)
        abort();
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/dsd-fuzz-st-index-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir))
        abort();
    atexit(cleanup);
    snprintf(g_index, sizeof g_index, "%s/model.safetensors.index.json", g_dir);
    static const uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct dsd_err err;
    char path[512];
    struct dsd_st_writer *w = dsd_st_writer_new();
    add(w, "x", bytes, 3);
    add(w, "y", bytes, 5);
    snprintf(path, sizeof path, "%s/a.safetensors", g_dir);
    if (dsd_st_writer_write(w, path, &err) < 0)
        abort();
    dsd_st_writer_free(w);
    w = dsd_st_writer_new();
    add(w, "z", bytes, 8);
    snprintf(path, sizeof path, "%s/b.safetensors", g_dir);
    if (dsd_st_writer_write(w, path, &err) < 0)
        abort();
    dsd_st_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_dir[0])
        setup();
    int fd = open(g_index, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);

    struct dsd_st_set *set = NULL;
    struct dsd_err err = {{0}};
    if (dsd_st_open_dir(g_dir, &set, &err) < 0) {
        if (set || err.msg[0] == 0)
            abort();
        return 0;
    }
    /* Accepted: the index named exactly the tensors of the shards it names. */
    size_t n = dsd_st_count(set);
    if (n == 0 || n > 3 || dsd_st_file_count(set) < 1 || dsd_st_file_count(set) > 2)
        abort();
    for (size_t i = 0; i < n; i++) {
        const struct dsd_st_tensor *t = dsd_st_at(set, i);
        const char *file = dsd_st_file_path(set, t->file_index);
        if (!file || dsd_st_find(set, t->name) != t)
            abort();
    }
    dsd_st_close(set);
    return 0;
}
