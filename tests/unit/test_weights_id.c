/*
 * The weights identity of the KV cache's model fingerprint (daemon/model/weights_id.h): the
 * same tensors give the same identity from two files; a changed byte in any sampled place, a
 * renamed tensor, another shape or dtype give another; a byte outside the samples does not
 * (the documented limit).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "test.h"
#include "weights_id.h"

enum { NA = 2048 };             /* tensor "a": 8 KiB of f32, more than three samples */
static float g_a[NA], g_b[4];
static int g_n;

/* Writes tensors a (shape [NA]) and `bname` (dtype/shape as given) and returns the identity. */
static uint64_t id_of(const char *bname, enum dsd_dtype bdt, int bndim, const int64_t *bshape)
{
    char path[128];
    snprintf(path, sizeof path, "weights-id-%d-%d.safetensors", (int)getpid(), g_n++);
    struct dsd_err err = {{0}};
    struct dsd_st_writer *w = dsd_st_writer_new();
    dsd_st_writer_add(w, "a", DSD_DTYPE_F32, 1, (int64_t[]){NA}, g_a, sizeof g_a);
    dsd_st_writer_add(w, bname, bdt, bndim, bshape, g_b, sizeof g_b);
    if (dsd_st_writer_write(w, path, &err) < 0)
        fprintf(stderr, "write: %s\n", err.msg);
    dsd_st_writer_free(w);
    struct dsd_st_set *set = NULL;
    const char *paths[1] = {path};
    uint64_t id = 0;
    if (dsd_st_open_files(paths, 1, &set, &err) == 0) {
        uint8_t b[DSD_WEIGHTS_ID_BYTES];
        dsd_weights_id(set, b);
        for (int i = DSD_WEIGHTS_ID_BYTES - 1; i >= 0; i--)
            id = id << 8 | b[i];
        dsd_st_close(set);
    } else {
        fprintf(stderr, "open: %s\n", err.msg);
    }
    unlink(path);
    return id;
}

static uint64_t id_plain(void)
{
    return id_of("b", DSD_DTYPE_F32, 1, (int64_t[]){4});
}

/* The identity with byte `off` of tensor a flipped (restored afterwards). */
static uint64_t id_flipped(size_t off)
{
    uint8_t *p = (uint8_t *)g_a;
    p[off] ^= 0x01;
    uint64_t id = id_plain();
    p[off] ^= 0x01;
    return id;
}

TEST(identity_follows_the_weights)
{
    for (int i = 0; i < NA; i++)
        g_a[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 4; i++)
        g_b[i] = (float)i;
    uint64_t base = id_plain();
    ASSERT_TRUE(base != 0);
    ASSERT_TRUE(id_plain() == base);                            /* another file, same tensors */
    size_t bytes = sizeof g_a, k = DSD_WEIGHTS_ID_SAMPLE;
    ASSERT_TRUE(id_flipped(0) != base);                         /* the first sample */
    ASSERT_TRUE(id_flipped(bytes / 2) != base);                 /* the middle one */
    ASSERT_TRUE(id_flipped(bytes - 1) != base);                 /* the last one */
    ASSERT_TRUE(id_flipped(k + 100) == base);                   /* between samples: the limit */
    ASSERT_TRUE(id_of("c", DSD_DTYPE_F32, 1, (int64_t[]){4}) != base);
    ASSERT_TRUE(id_of("b", DSD_DTYPE_F32, 2, (int64_t[]){2, 2}) != base);
    ASSERT_TRUE(id_of("b", DSD_DTYPE_BF16, 1, (int64_t[]){8}) != base);
    g_b[3] = 9;                                                 /* a small tensor is hashed whole */
    ASSERT_TRUE(id_plain() != base);
}

int main(void)
{
    RUN(identity_follows_the_weights);
    return test_report();
}
