/*
 * tests/unit/test_safetensors.c: the safetensors reader and writer (daemon/model/safetensors.h).
 *
 * Round trips through our writer, a file laid out byte for byte as the Python safetensors
 * library writes it (bytes written out by hand below from the format's rules, not produced
 * by our writer), sharded checkpoints with an index, and one assertion per kind of bad file:
 * each must fail with a negative errno and a message that names the problem.
 */
#include "safetensors.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[512]; /* per-run scratch directory */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void scratch_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/dsd-st-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        exit(1);
    }
}

static void scratch_cleanup(void)
{
    nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* g_root/rel, made fresh (rel may contain one directory level, created as needed). */
static const char *scratch(const char *rel)
{
    static char bufs[8][1024];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, 1024, "%s/%s", g_root, rel);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", p);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        mkdir(dir, 0755);
    }
    return p;
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        n = -1;
    fclose(f);
    buf[n < 0 ? 0 : n] = 0;
    *len = (size_t)n;
    return buf;
}

/* A safetensors file from parts: 8-byte length (header_len, or the header's own length when
 * header_len is UINT64_MAX), the header text, then data. */
static const char *put_file(const char *rel, uint64_t header_len, const char *header,
                            const void *data, size_t data_len)
{
    const char *path = scratch(rel);
    size_t hl = strlen(header);
    uint64_t n = header_len == UINT64_MAX ? hl : header_len;
    uint8_t *buf = malloc(8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (data_len)
        memcpy(buf + 8 + hl, data, data_len);
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
    return path;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint8_t rng_byte(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 32);
}

static int msg_has(const char *msg, const char *sub)
{
    return !sub || strstr(msg, sub) != NULL;
}

/* Opening must fail with a negative errno (code, unless 0) whose message has every
 * non-NULL substring given. */
#define EXPECT_OPEN_FAILS(rc_expr, code, sub1, sub2)                                   \
    do {                                                                              \
        struct dsd_err e_ = {{0}};                                                    \
        struct dsd_st_set *s_ = (struct dsd_st_set *)1;                               \
        int rc_ = (rc_expr);                                                          \
        ASSERT_TRUE(rc_ < 0);                                                         \
        if (rc_ >= 0)                                                                 \
            dsd_st_close(s_);                                                         \
        else                                                                          \
            ASSERT_TRUE(s_ == NULL);                                                  \
        if ((code) != 0)                                                              \
            ASSERT_EQ_INT(rc_, (code));                                               \
        if (!msg_has(e_.msg, (sub1)))                                                 \
            TEST_FAIL_AT("message \"%s\" lacks \"%s\"", e_.msg, (const char *)(sub1)); \
        if (!msg_has(e_.msg, (sub2)))                                                 \
            TEST_FAIL_AT("message \"%s\" lacks \"%s\"", e_.msg, (const char *)(sub2)); \
        (void)s_;                                                                     \
    } while (0)

/* Opens one file; fails the test with the message if that fails. */
static struct dsd_st_set *open_one(const char *path)
{
    struct dsd_st_set *set = NULL;
    struct dsd_err e = {{0}};
    int rc = dsd_st_open_files(&path, 1, &set, &e);
    if (rc < 0)
        TEST_FAIL_AT("open %s: %d %s", path, rc, e.msg);
    return set;
}

/* ------------------------------------------------------------------------------------ */

TEST(dtype_table)
{
    static const struct { const char *name; size_t size; } want[] = {
        {"F8_E4M3", 1}, {"BF16", 2}, {"F16", 2}, {"F32", 4}, {"F64", 8}, {"I8", 1},
        {"U8", 1}, {"I16", 2}, {"I32", 4}, {"I64", 8}, {"BOOL", 1}, {"F8_E5M2", 1},
    };
    ASSERT_EQ_INT(sizeof want / sizeof want[0], DSD_DTYPE_COUNT);
    for (int i = 0; i < DSD_DTYPE_COUNT; i++) {
        ASSERT_EQ_STR(dsd_dtype_name((enum dsd_dtype)i), want[i].name);
        ASSERT_EQ_INT(dsd_dtype_size((enum dsd_dtype)i), want[i].size);
        enum dsd_dtype dt = DSD_DTYPE_COUNT;
        ASSERT_EQ_INT(dsd_dtype_parse(want[i].name, &dt), 0);
        ASSERT_EQ_INT(dt, i);
    }
    enum dsd_dtype dt;
    ASSERT_EQ_INT(dsd_dtype_parse("bf16", &dt), -EINVAL);
    ASSERT_EQ_INT(dsd_dtype_parse("F4", &dt), -EINVAL);
    ASSERT_EQ_INT(dsd_dtype_parse("", &dt), -EINVAL);
    ASSERT_EQ_INT(dsd_dtype_size(DSD_DTYPE_COUNT), 0);
}

struct spec {
    const char *name;
    enum dsd_dtype dtype;
    int ndim;
    int64_t shape[4];
    uint8_t *data;
    uint64_t nbytes;
};

static void spec_fill(struct spec *s)
{
    uint64_t n = dsd_dtype_size(s->dtype);
    for (int d = 0; d < s->ndim; d++)
        n *= (uint64_t)s->shape[d];
    s->nbytes = n;
    s->data = malloc(n ? n : 1);
    for (uint64_t i = 0; i < n; i++)
        s->data[i] = rng_byte();
}

static void check_tensor(const struct dsd_st_set *set, const struct spec *s, int file_index)
{
    const struct dsd_st_tensor *t = dsd_st_find(set, s->name);
    ASSERT_TRUE(t != NULL);
    if (!t)
        return;
    ASSERT_EQ_STR(t->name, s->name);
    ASSERT_EQ_INT(t->dtype, s->dtype);
    ASSERT_EQ_INT(t->ndim, s->ndim);
    for (int d = 0; d < s->ndim; d++)
        ASSERT_EQ_INT(t->shape[d], s->shape[d]);
    ASSERT_EQ_INT(t->nbytes, s->nbytes);
    ASSERT_TRUE(t->data != NULL);
    ASSERT_EQ_INT((uintptr_t)t->data % dsd_dtype_size(t->dtype), 0);
    if (s->nbytes)
        ASSERT_TRUE(memcmp(t->data, s->data, s->nbytes) == 0);
    if (file_index >= 0)
        ASSERT_EQ_INT(t->file_index, file_index);
}

TEST(roundtrip_every_dtype)
{
    /* One tensor per dtype, cycling through 0-d, 1-d and 3-d shapes; odd sizes so that a
     * writer in plain name order would misalign the wider types. Plus empty tensors. */
    struct spec specs[DSD_DTYPE_COUNT + 3];
    static const int64_t shapes[3][4] = {{0}, {7}, {3, 1, 5}};
    static const int ndims[3] = {0, 1, 3};
    char names[DSD_DTYPE_COUNT][32];
    int n = 0;
    for (int i = 0; i < DSD_DTYPE_COUNT; i++, n++) {
        snprintf(names[i], sizeof names[i], "layer.%s.w", dsd_dtype_name((enum dsd_dtype)i));
        specs[n] = (struct spec){names[i], (enum dsd_dtype)i, ndims[i % 3], {0}, NULL, 0};
        memcpy(specs[n].shape, shapes[i % 3], sizeof specs[n].shape);
    }
    specs[n++] = (struct spec){"empty.1d", DSD_DTYPE_F32, 1, {0}, NULL, 0};
    specs[n++] = (struct spec){"empty.3d", DSD_DTYPE_BF16, 3, {2, 0, 3}, NULL, 0};
    specs[n++] = (struct spec){"scalar", DSD_DTYPE_F64, 0, {0}, NULL, 0};
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        spec_fill(&specs[i]);
        total += specs[i].nbytes;
    }

    struct dsd_st_writer *w = dsd_st_writer_new();
    ASSERT_TRUE(w != NULL);
    for (int i = 0; i < n; i++)
        ASSERT_EQ_INT(dsd_st_writer_add(w, specs[i].name, specs[i].dtype, specs[i].ndim,
                                        specs[i].shape, specs[i].data, specs[i].nbytes), 0);
    ASSERT_EQ_INT(dsd_st_writer_add_metadata(w, "format", "pt"), 0);
    struct dsd_err e = {{0}};
    const char *path = scratch("rt/model.safetensors");
    ASSERT_EQ_INT(dsd_st_writer_write(w, path, &e), 0);
    dsd_st_writer_free(w);

    /* The file as bytes: 8-aligned header, padded with spaces, metadata first, data after. */
    size_t flen;
    uint8_t *raw = read_whole(path, &flen);
    ASSERT_TRUE(raw != NULL && flen >= 8);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--)
        hn = hn << 8 | raw[i];
    ASSERT_EQ_INT(hn % 8, 0);
    ASSERT_EQ_INT(flen, 8 + hn + total);
    ASSERT_TRUE(memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"},", 32) == 0);
    size_t close_brace = 8 + hn;
    while (close_brace > 8 && raw[close_brace - 1] == ' ')
        close_brace--;
    ASSERT_TRUE(raw[close_brace - 1] == '}');
    ASSERT_TRUE(8 + hn - close_brace < 8);
    free(raw);

    /* No temporary file left behind. */
    int entries = 0;
    DIR *d = opendir(scratch("rt"));
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (de->d_name[0] != '.') {
                entries++;
                ASSERT_EQ_STR(de->d_name, "model.safetensors");
            }
        closedir(d);
    }
    ASSERT_EQ_INT(entries, 1);

    struct dsd_st_set *set = NULL;
    ASSERT_EQ_INT(dsd_st_open_dir(scratch("rt"), &set, &e), 0);
    if (!set) {
        TEST_FAIL_AT("open_dir: %s", e.msg);
        return;
    }
    ASSERT_EQ_INT(dsd_st_count(set), n);
    ASSERT_EQ_INT(dsd_st_file_count(set), 1);
    ASSERT_EQ_STR(dsd_st_file_path(set, 0), path);
    ASSERT_TRUE(dsd_st_file_path(set, 1) == NULL);
    ASSERT_EQ_INT(dsd_st_total_bytes(set), total);
    for (int i = 0; i < n; i++)
        check_tensor(set, &specs[i], 0);
    for (size_t i = 1; i < dsd_st_count(set); i++)
        ASSERT_TRUE(strcmp(dsd_st_at(set, i - 1)->name, dsd_st_at(set, i)->name) < 0);
    ASSERT_TRUE(dsd_st_at(set, dsd_st_count(set)) == NULL);
    ASSERT_TRUE(dsd_st_find(set, "layer.F32") == NULL);
    ASSERT_TRUE(dsd_st_find(set, "") == NULL);
    dsd_st_close(set);
    for (int i = 0; i < n; i++)
        free(specs[i].data);
}

TEST(writer_rejects_bad_input)
{
    struct dsd_st_writer *w = dsd_st_writer_new();
    float f[2] = {1, 2};
    int64_t s2[1] = {2}, neg[1] = {-2}, s3[1] = {3};
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 2};
    ASSERT_EQ_INT(dsd_st_writer_add(w, "a", DSD_DTYPE_F32, 1, s2, f, 8), 0);
    ASSERT_EQ_INT(dsd_st_writer_add(w, "a", DSD_DTYPE_F32, 1, s2, f, 8), -EINVAL);  /* duplicate */
    ASSERT_EQ_INT(dsd_st_writer_add(w, "b", DSD_DTYPE_COUNT, 1, s2, f, 8), -EINVAL); /* dtype */
    ASSERT_EQ_INT(dsd_st_writer_add(w, "b", DSD_DTYPE_F32, 1, neg, f, 8), -EINVAL);  /* shape */
    ASSERT_EQ_INT(dsd_st_writer_add(w, "b", DSD_DTYPE_F32, 1, s3, f, 8), -EINVAL);   /* size */
    ASSERT_EQ_INT(dsd_st_writer_add(w, "b", DSD_DTYPE_F32, 9, nine, f, 8), -EINVAL); /* ndim */
    ASSERT_EQ_INT(dsd_st_writer_add(w, "b", DSD_DTYPE_F32, 1, s2, NULL, 8), -EINVAL);
    ASSERT_EQ_INT(dsd_st_writer_add(w, "__metadata__", DSD_DTYPE_F32, 1, s2, f, 8), -EINVAL);
    ASSERT_EQ_INT(dsd_st_writer_add(w, "\xff\xfe", DSD_DTYPE_F32, 1, s2, f, 8), -EINVAL);
    ASSERT_EQ_INT(dsd_st_writer_add_metadata(w, "format", "pt"), 0);
    ASSERT_EQ_INT(dsd_st_writer_add_metadata(w, "format", "np"), -EINVAL);
    struct dsd_err e = {{0}};
    ASSERT_TRUE(dsd_st_writer_write(w, scratch("nodir/none/x.safetensors"), &e) < 0);
    ASSERT_TRUE(strstr(e.msg, "x.safetensors") != NULL);
    /* The final rename fails (a directory has the name): no temporary file is left. */
    ASSERT_EQ_INT(mkdir(scratch("wr/isdir"), 0755), 0);
    ASSERT_TRUE(dsd_st_writer_write(w, scratch("wr/isdir"), &e) < 0);
    ASSERT_TRUE(strstr(e.msg, "rename") != NULL);
    int entries = 0;
    DIR *d = opendir(scratch("wr"));
    for (struct dirent *de; d && (de = readdir(d)) != NULL;)
        entries += de->d_name[0] != '.';
    if (d)
        closedir(d);
    ASSERT_EQ_INT(entries, 1);
    dsd_st_writer_free(w);

    /* No tensors: what the Python library writes for an empty dict, "{}" padded to 8. */
    w = dsd_st_writer_new();
    ASSERT_EQ_INT(dsd_st_writer_write(w, scratch("wr/empty.safetensors"), &e), 0);
    dsd_st_writer_free(w);
    size_t len;
    char *got = read_whole(scratch("wr/empty.safetensors"), &len);
    ASSERT_EQ_INT(len, 16);
    ASSERT_TRUE(got && len == 16 && memcmp(got, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    free(got);

    const char *names[1] = {"a"}, *bad_shard[1] = {"../a.safetensors"};
    ASSERT_EQ_INT(dsd_st_write_index(g_root, names, bad_shard, 1, 8, &e), -EINVAL);
    ASSERT_TRUE(strstr(e.msg, "shard") != NULL);
    const char *two[2] = {"a", "a"}, *shards[2] = {"x.safetensors", "x.safetensors"};
    ASSERT_EQ_INT(dsd_st_write_index(g_root, two, shards, 2, 8, &e), -EINVAL);
    ASSERT_TRUE(strstr(e.msg, "twice") != NULL);
}

/* Three shards and an index written through the public writer API. */
#define N_SHARDED 9
static struct spec g_sharded[N_SHARDED];
static const char *const g_shard_of[N_SHARDED] = {
    "model-00001-of-00003.safetensors", "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors", "model-00002-of-00003.safetensors",
    "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
    "model-00003-of-00003.safetensors", "model-00003-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
};

static void write_sharded(const char *dir_rel)
{
    static const char *const names[N_SHARDED] = {
        "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_a_proj.weight",
        "model.layers.0.self_attn.q_a_proj.weight_scale_inv",
        "model.layers.0.mlp.gate.e_score_correction_bias",
        "model.layers.1.mlp.experts.0.down_proj.weight",
        "model.layers.1.mlp.experts.0.down_proj.weight_scale_inv",
        "model.norm.weight",
        "lm_head.weight",
    };
    static const enum dsd_dtype dts[N_SHARDED] = {
        DSD_DTYPE_BF16, DSD_DTYPE_BF16, DSD_DTYPE_F8_E4M3, DSD_DTYPE_F32, DSD_DTYPE_F32,
        DSD_DTYPE_F8_E4M3, DSD_DTYPE_F32, DSD_DTYPE_BF16, DSD_DTYPE_BF16,
    };
    static const int64_t shp[N_SHARDED][2] = {
        {11, 8}, {8, 0}, {5, 8}, {1, 1}, {3, 0}, {8, 3}, {1, 1}, {8, 0}, {11, 8},
    };
    uint64_t total = 0;
    for (int i = 0; i < N_SHARDED; i++) {
        int nd = shp[i][1] ? 2 : 1;
        g_sharded[i] = (struct spec){names[i], dts[i], nd, {shp[i][0], shp[i][1]}, NULL, 0};
        spec_fill(&g_sharded[i]);
        total += g_sharded[i].nbytes;
    }
    struct dsd_err e = {{0}};
    for (int s = 1; s <= 3; s++) {
        struct dsd_st_writer *w = dsd_st_writer_new();
        char shard[64], rel[256];
        snprintf(shard, sizeof shard, "model-%05d-of-00003.safetensors", s);
        for (int i = 0; i < N_SHARDED; i++)
            if (strcmp(g_shard_of[i], shard) == 0)
                ASSERT_EQ_INT(dsd_st_writer_add(w, g_sharded[i].name, g_sharded[i].dtype,
                                                g_sharded[i].ndim, g_sharded[i].shape,
                                                g_sharded[i].data, g_sharded[i].nbytes), 0);
        dsd_st_writer_add_metadata(w, "format", "pt");
        snprintf(rel, sizeof rel, "%s/%s", dir_rel, shard);
        ASSERT_EQ_INT(dsd_st_writer_write(w, scratch(rel), &e), 0);
        dsd_st_writer_free(w);
    }
    const char *tnames[N_SHARDED];
    for (int i = 0; i < N_SHARDED; i++)
        tnames[i] = g_sharded[i].name;
    char rel[256];
    snprintf(rel, sizeof rel, "%s/x", dir_rel);
    char *dir = (char *)scratch(rel);
    *strrchr(dir, '/') = 0;
    ASSERT_EQ_INT(dsd_st_write_index(dir, tnames, (const char *const *)g_shard_of, N_SHARDED,
                                     total, &e), 0);
}

TEST(sharded_with_index)
{
    write_sharded("sh");
    struct dsd_st_set *set = NULL;
    struct dsd_err e = {{0}};
    ASSERT_EQ_INT(dsd_st_open_dir(scratch("sh"), &set, &e), 0);
    if (!set) {
        TEST_FAIL_AT("open_dir: %s", e.msg);
        return;
    }
    ASSERT_EQ_INT(dsd_st_count(set), N_SHARDED);
    ASSERT_EQ_INT(dsd_st_file_count(set), 3);
    uint64_t total = 0;
    for (int i = 0; i < N_SHARDED; i++) {
        check_tensor(set, &g_sharded[i], -1);
        total += g_sharded[i].nbytes;
        const struct dsd_st_tensor *t = dsd_st_find(set, g_sharded[i].name);
        const char *p = t ? dsd_st_file_path(set, t->file_index) : NULL;
        ASSERT_TRUE(p && strstr(p, g_shard_of[i]) != NULL);
    }
    ASSERT_EQ_INT(dsd_st_total_bytes(set), total);
    ASSERT_TRUE(dsd_st_find(set, "model.layers.99.mlp.gate.weight") == NULL);
    dsd_st_close(set);

    /* The index in the shape transformers writes (indent 2, sorted keys, newline). */
    size_t len;
    char *idx = read_whole(scratch("sh/model.safetensors.index.json"), &len);
    char want[128];
    snprintf(want, sizeof want, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n",
             (unsigned long long)total);
    ASSERT_TRUE(idx && strncmp(idx, want, strlen(want)) == 0);
    ASSERT_TRUE(idx && strstr(idx, "  \"weight_map\": {\n    \"lm_head.weight\": "
                                   "\"model-00003-of-00003.safetensors\",\n") != NULL);
    ASSERT_TRUE(idx && len > 2 && idx[len - 1] == '\n' && idx[len - 2] == '}');
    free(idx);
}

/* A file laid out as the Python library (safetensors.torch.save_file with
 * metadata={"format": "pt"}) writes it: data sorted by dtype alignment, then name; the JSON
 * header compact and in data order with __metadata__ first, keys dtype/shape/data_offsets;
 * header padded with spaces to a multiple of 8 (220 -> 224 = 0xe0 bytes). */
static const char python_file[] =
    "\xe0\x00\x00\x00\x00\x00\x00\x00"
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"weight\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
    "\"weight_scale\":{\"dtype\":\"F8_E4M3\",\"shape\":[3],\"data_offsets\":[16,19]}}"
    "    "
    "\x00\x00\x80\x3f\x00\x00\x00\xc0" /* F32 1.0, -2.0 */
    "\x80\x3f\x00\x40\x80\xbf\x00\x3f" /* BF16 1.0, 2.0, -1.0, 0.5 */
    "\x38\x40\xb8";                    /* E4M3 1.0, 2.0, -1.0 */

TEST(reads_python_written_file)
{
    ASSERT_EQ_INT(sizeof python_file - 1, 8 + 224 + 19);
    const char *path = scratch("py/model.safetensors");
    write_bytes(path, python_file, sizeof python_file - 1);
    struct dsd_st_set *set = open_one(path);
    if (!set)
        return;
    ASSERT_EQ_INT(dsd_st_count(set), 3);
    const struct dsd_st_tensor *b = dsd_st_find(set, "bias");
    const struct dsd_st_tensor *w = dsd_st_find(set, "weight");
    const struct dsd_st_tensor *s = dsd_st_find(set, "weight_scale");
    ASSERT_TRUE(b && w && s);
    if (b && w && s) {
        ASSERT_EQ_INT(b->dtype, DSD_DTYPE_F32);
        ASSERT_EQ_INT(b->ndim, 1);
        ASSERT_EQ_INT(b->shape[0], 2);
        float f[2];
        memcpy(f, b->data, 8);
        ASSERT_TRUE(f[0] == 1.0f && f[1] == -2.0f);
        ASSERT_EQ_INT(w->dtype, DSD_DTYPE_BF16);
        ASSERT_EQ_INT(w->ndim, 2);
        ASSERT_EQ_INT(w->shape[0] * 10 + w->shape[1], 22);
        const uint16_t *bf = w->data;
        ASSERT_EQ_INT(bf[0], 0x3f80);
        ASSERT_EQ_INT(bf[3], 0x3f00);
        ASSERT_EQ_INT(s->dtype, DSD_DTYPE_F8_E4M3);
        ASSERT_EQ_INT(s->nbytes, 3);
        ASSERT_EQ_INT(((const uint8_t *)s->data)[2], 0xb8);
    }
    dsd_st_close(set);

    /* Our writer, given the same tensors in another order, writes exactly these bytes. */
    const uint8_t *data = (const uint8_t *)python_file + 8 + 224;
    struct dsd_st_writer *wr = dsd_st_writer_new();
    ASSERT_EQ_INT(dsd_st_writer_add(wr, "weight_scale", DSD_DTYPE_F8_E4M3, 1, (int64_t[]){3},
                                    data + 16, 3), 0);
    ASSERT_EQ_INT(dsd_st_writer_add(wr, "weight", DSD_DTYPE_BF16, 2, (int64_t[]){2, 2}, data + 8,
                                    8), 0);
    ASSERT_EQ_INT(dsd_st_writer_add(wr, "bias", DSD_DTYPE_F32, 1, (int64_t[]){2}, data, 8), 0);
    ASSERT_EQ_INT(dsd_st_writer_add_metadata(wr, "format", "pt"), 0);
    struct dsd_err e = {{0}};
    const char *ours = scratch("py/ours.safetensors");
    ASSERT_EQ_INT(dsd_st_writer_write(wr, ours, &e), 0);
    dsd_st_writer_free(wr);
    size_t len;
    uint8_t *got = read_whole(ours, &len);
    ASSERT_EQ_INT(len, sizeof python_file - 1);
    ASSERT_TRUE(got && len == sizeof python_file - 1 && memcmp(got, python_file, len) == 0);
    free(got);
}

TEST(unaligned_data_is_copied)
{
    /* Padded header (data starts 8-aligned) but "b" (F32) at offset 1, "c" (BF16) at 9. */
    const char *hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
                      "\"c\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[9,15]}}";
    char padded[512];
    snprintf(padded, sizeof padded, "%s%.*s", hdr, (int)((8 - strlen(hdr) % 8) % 8), "       ");
    ASSERT_EQ_INT(strlen(padded) % 8, 0);
    uint8_t data[15] = {7};
    float fb[2] = {3.5f, -0.25f};
    uint16_t hc[3] = {0x1234, 0xabcd, 0x4000};
    memcpy(data + 1, fb, 8);
    memcpy(data + 9, hc, 6);
    struct dsd_st_set *set = open_one(put_file("ua/a.safetensors", UINT64_MAX, padded, data, 15));
    if (set) {
        const struct dsd_st_tensor *b = dsd_st_find(set, "b"), *c = dsd_st_find(set, "c");
        ASSERT_TRUE(b && c);
        if (b && c) {
            ASSERT_EQ_INT((uintptr_t)b->data % 4, 0);
            ASSERT_EQ_INT((uintptr_t)c->data % 2, 0);
            ASSERT_TRUE(((const float *)b->data)[0] == 3.5f);
            ASSERT_TRUE(((const float *)b->data)[1] == -0.25f);
            ASSERT_EQ_INT(((const uint16_t *)c->data)[1], 0xabcd);
            ASSERT_EQ_INT(*(const uint8_t *)dsd_st_find(set, "a")->data, 7);
        }
        dsd_st_close(set);
    }

    /* Unpadded header: the data section itself starts at an odd offset. */
    const char *h2 = "{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}} ";
    ASSERT_TRUE((8 + strlen(h2)) % 2 == 1);
    double v = 6.125;
    set = open_one(put_file("ua/b.safetensors", UINT64_MAX, h2, &v, 8));
    if (set) {
        const struct dsd_st_tensor *x = dsd_st_find(set, "x");
        ASSERT_TRUE(x && (uintptr_t)x->data % 8 == 0 && *(const double *)x->data == 6.125);
        dsd_st_close(set);
    }
}

TEST(lenient_where_unambiguous)
{
    /* A gap before the first tensor and an empty tensor inside another's range are fine;
     * so are unknown keys inside an entry. */
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8],\"x\":1},"
                    "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[5,5]}}";
    uint8_t data[8] = {0};
    struct dsd_st_set *set = open_one(put_file("len/a.safetensors", UINT64_MAX, h, data, 8));
    ASSERT_EQ_INT(dsd_st_count(set), 2);
    dsd_st_close(set);
    /* An empty header object: a valid file without tensors. */
    set = open_one(put_file("len/b.safetensors", UINT64_MAX, "{}      ", NULL, 0));
    ASSERT_EQ_INT(dsd_st_count(set), 0);
    dsd_st_close(set);
}

static int open_path(const char *path, struct dsd_st_set **s, struct dsd_err *e)
{
    return dsd_st_open_files(&path, 1, s, e);
}

#define T1(h) "{\"t\":{\"dtype\":\"F32\",\"shape\":" h "}}"

TEST(bad_files)
{
    uint8_t data[64] = {0};
    const char *p;
    p = put_file("bad/short", 0, "", NULL, 0);
    ASSERT_EQ_INT(truncate(p, 5), 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "5 bytes, too short", "bad/short");
    p = put_file("bad/empty", 0, "", NULL, 0);
    ASSERT_EQ_INT(truncate(p, 0), 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "0 bytes, too short", NULL);

    p = put_file("bad/len_past_eof", 1000, "{}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "runs past the end of the file",
                      "len_past_eof");
    p = put_file("bad/huge_header", (uint64_t)200 << 20, "{}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "limit", NULL);
    p = put_file("bad/len_wraps", UINT64_MAX - 3, "{}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "limit", NULL);

    p = put_file("bad/not_json", UINT64_MAX, "{\"t\": nope}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "not valid JSON", "not_json");
    p = put_file("bad/not_utf8", UINT64_MAX, "{\"\xff\xfe\":{}}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "not valid JSON", NULL);
    p = put_file("bad/trailing", UINT64_MAX, "{} x", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "not valid JSON", NULL);
    p = put_file("bad/dup_key", UINT64_MAX,
                 "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                 "\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", data, 2);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "duplicate", NULL);
    p = put_file("bad/array", UINT64_MAX, "[1,2]", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "header is an array",
                      "expected a JSON object");
    p = put_file("bad/entry_int", UINT64_MAX, "{\"t\":5}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "tensor \"t\": entry is an integer", NULL);

    p = put_file("bad/meta", UINT64_MAX, "{\"__metadata__\":{\"format\":1}}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "\"__metadata__\" entry \"format\"",
                      "expected a string");
    p = put_file("bad/meta2", UINT64_MAX, "{\"__metadata__\":[]}", NULL, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "\"__metadata__\" is an array", NULL);

    p = put_file("bad/dtype", UINT64_MAX,
                 "{\"t\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,1]}}", data, 1);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "unknown dtype \"Q8\"", "tensor \"t\"");
    p = put_file("bad/dtype_type", UINT64_MAX,
                 "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}", data, 1);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "\"dtype\" is an integer", NULL);
    p = put_file("bad/no_dtype", UINT64_MAX, "{\"t\":{\"shape\":[1],\"data_offsets\":[0,1]}}",
                 data, 1);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "\"dtype\" is missing", NULL);

    p = put_file("bad/shape_neg", UINT64_MAX, T1("[2,-1],\"data_offsets\":[0,0]"), data, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "shape[1] is -1", "non-negative integer");
    p = put_file("bad/shape_real", UINT64_MAX, T1("[2.0],\"data_offsets\":[0,8]"), data, 8);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "shape[0] is a real number", NULL);
    p = put_file("bad/shape_str", UINT64_MAX, T1("\"2\",\"data_offsets\":[0,8]"), data, 8);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "\"shape\" is a string", NULL);
    p = put_file("bad/shape_9d", UINT64_MAX, T1("[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]"),
                 data, 4);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "9 dimensions", NULL);
    p = put_file("bad/shape_overflow", UINT64_MAX,
                 T1("[4294967296,4294967296,16],\"data_offsets\":[0,0]"), data, 0);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "more elements than 64 bits", NULL);

    p = put_file("bad/offsets_reversed", UINT64_MAX, T1("[1],\"data_offsets\":[8,4]"), data, 8);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "[8, 4] are reversed", "tensor \"t\"");
    p = put_file("bad/offsets_past_end", UINT64_MAX, T1("[4],\"data_offsets\":[0,16]"), data, 8);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "end 16 is past the end of the data section",
                      "(8 bytes");
    p = put_file("bad/offsets_form", UINT64_MAX, T1("[1],\"data_offsets\":[0]"), data, 4);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "must be [begin, end]", NULL);
    p = put_file("bad/offsets_neg", UINT64_MAX, T1("[1],\"data_offsets\":[-4,0]"), data, 4);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "must be [begin, end]", NULL);
    p = put_file("bad/size_mismatch", UINT64_MAX, T1("[3],\"data_offsets\":[0,8]"), data, 16);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "hold 8 bytes", "needs 12");

    p = put_file("bad/overlap", UINT64_MAX,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", data, 12);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "\"a\" [0, 8] and \"b\" [4, 12] overlap",
                      NULL);
    p = put_file("bad/overlap_nested", UINT64_MAX,
                 "{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]},"
                 "\"c\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9,10]}}", data, 16);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "overlap", NULL);

    /* A name with control bytes is escaped in the message. */
    p = put_file("bad/evil_name", UINT64_MAX,
                 "{\"x\\ny\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1]}}", data, 4);
    EXPECT_OPEN_FAILS(open_path(p, &s_, &e_), -EINVAL, "\"x\\x0ay\"", NULL);

    /* The same name in two files of one set. */
    const char *h = "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    const char *two[2] = {put_file("bad/dup1", UINT64_MAX, h, data, 1),
                          put_file("bad/dup2", UINT64_MAX, h, data, 1)};
    EXPECT_OPEN_FAILS(dsd_st_open_files(two, 2, &s_, &e_), -EINVAL, "\"w\" appears twice",
                      "bad/dup2");
    EXPECT_OPEN_FAILS(dsd_st_open_files(two, 0, &s_, &e_), -EINVAL, NULL, NULL);
    const char *missing = scratch("bad/nope.safetensors");
    EXPECT_OPEN_FAILS(dsd_st_open_files(&missing, 1, &s_, &e_), -ENOENT, "nope.safetensors",
                      NULL);
}

static void put_text(const char *rel, const char *text)
{
    write_bytes(scratch(rel), text, strlen(text));
}

TEST(bad_index)
{
    uint8_t data[8] = {0};
    const char *ha = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    const char *hb = "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";

    /* A shard the index names is missing. */
    put_file("ix1/s1.safetensors", UINT64_MAX, ha, data, 1);
    put_text("ix1/model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix1"), &s_, &e_), -ENOENT, "ix1/s2.safetensors",
                      "model.safetensors.index.json");

    /* The index lists a tensor its shard lacks. */
    put_file("ix2/s1.safetensors", UINT64_MAX, ha, data, 1);
    put_text("ix2/model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s1.safetensors\",\"z\":\"s1.safetensors\"}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix2"), &s_, &e_), -EINVAL, "tensor \"z\"",
                      "no such tensor");

    /* A shard has a tensor the index does not list. */
    put_file("ix3/s1.safetensors", UINT64_MAX, ha, data, 1);
    put_file("ix3/s2.safetensors", UINT64_MAX, hb, data, 1);
    /* total_size is not checked (docs/SAFETENSORS.md): 12345 is not 2, and that is fine. */
    put_text("ix3/model.safetensors.index.json",
             "{\"metadata\":{\"total_size\":12345},"
             "\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    struct dsd_st_set *set = NULL;
    struct dsd_err e = {{0}};
    ASSERT_EQ_INT(dsd_st_open_dir(scratch("ix3"), &set, &e), 0); /* the good baseline */
    dsd_st_close(set);
    /* s1 gains a tensor "c" the index does not list. */
    put_file("ix3/s1.safetensors", UINT64_MAX,
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
             "\"c\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", data, 2);
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix3"), &s_, &e_), -EINVAL, "tensor \"c\"",
                      "not in");

    /* The index puts a tensor in the wrong shard. */
    put_file("ix4/s1.safetensors", UINT64_MAX, ha, data, 1);
    put_file("ix4/s2.safetensors", UINT64_MAX, hb, data, 1);
    put_text("ix4/model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s1.safetensors\"}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix4"), &s_, &e_), -EINVAL, "the index says",
                      NULL);

    /* The same tensor in two shards. */
    put_file("ix5/s1.safetensors", UINT64_MAX, ha, data, 1);
    put_file("ix5/s2.safetensors", UINT64_MAX, ha, data, 1);
    put_text("ix5/model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s1.safetensors\",\"x\":\"s2.safetensors\"}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix5"), &s_, &e_), -EINVAL, "appears twice", NULL);

    /* Malformed indexes. */
    put_text("ix6/model.safetensors.index.json", "{\"weight_map\":");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix6"), &s_, &e_), -EINVAL, "not valid JSON",
                      "index.json");
    put_text("ix6/model.safetensors.index.json", "{\"metadata\":{}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix6"), &s_, &e_), -EINVAL,
                      "\"weight_map\" is missing", NULL);
    put_text("ix6/model.safetensors.index.json", "{\"weight_map\":[]}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix6"), &s_, &e_), -EINVAL,
                      "\"weight_map\" is an array", NULL);
    put_text("ix6/model.safetensors.index.json", "{\"weight_map\":{}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix6"), &s_, &e_), -EINVAL, "empty", NULL);
    put_text("ix6/model.safetensors.index.json", "{\"weight_map\":{\"a\":3}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix6"), &s_, &e_), -EINVAL, "is an integer",
                      "shard file name");
    put_text("ix6/model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"../ix1/s1.safetensors\"}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix6"), &s_, &e_), -EINVAL, "bad shard file name",
                      "without '/'");
    put_text("ix6/model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s.safetensors\",\"a\":\"s.safetensors\"}}");
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix6"), &s_, &e_), -EINVAL, "duplicate", NULL);

    /* Directories without a checkpoint. */
    mkdir(scratch("ix7"), 0755);
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix7"), &s_, &e_), -ENOENT, "has neither", NULL);
    EXPECT_OPEN_FAILS(dsd_st_open_dir(scratch("ix-none"), &s_, &e_), -ENOENT, "ix-none", NULL);
}

TEST(prefault)
{
    /* 1 MiB of data, evicted from the page cache first where the kernel allows it; after
     * prefault every page of it must be resident. */
    size_t n = 1 << 20;
    uint8_t *buf = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = rng_byte();
    struct dsd_st_writer *w = dsd_st_writer_new();
    ASSERT_EQ_INT(dsd_st_writer_add(w, "big", DSD_DTYPE_U8, 1, (int64_t[]){(int64_t)n}, buf, n), 0);
    struct dsd_err e = {{0}};
    const char *path = scratch("pf/model.safetensors");
    ASSERT_EQ_INT(dsd_st_writer_write(w, path, &e), 0);
    dsd_st_writer_free(w);
    int fd = open(path, O_RDONLY);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);

    struct dsd_st_set *set = open_one(path);
    if (!set)
        return;
    const struct dsd_st_tensor *t = dsd_st_find(set, "big");
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)t->data + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)t->data + n) & ~((uintptr_t)page - 1);
    size_t np = (hi - lo) / (size_t)page;
    unsigned char *vec = malloc(np);
    int before = 0, after = 0;
    if (mincore((void *)lo, hi - lo, vec) == 0)
        for (size_t i = 0; i < np; i++)
            before += vec[i] & 1;
    printf("prefault: %d of %zu pages resident before\n", before, np);

    ASSERT_EQ_INT(dsd_st_prefault(set, 0, &e), -EINVAL);
    ASSERT_EQ_INT(dsd_st_prefault(set, 3, &e), 0);
    ASSERT_EQ_INT(dsd_st_prefault(set, 1000, &e), 0);
    ASSERT_EQ_INT(mincore((void *)lo, hi - lo, vec), 0);
    for (size_t i = 0; i < np; i++)
        after += vec[i] & 1;
    ASSERT_EQ_INT(after, np);
    ASSERT_TRUE(memcmp(t->data, buf, n) == 0);
    free(vec);
    free(buf);
    dsd_st_close(set);
}

int main(void)
{
    scratch_setup();
    RUN(dtype_table);
    RUN(roundtrip_every_dtype);
    RUN(writer_rejects_bad_input);
    RUN(sharded_with_index);
    RUN(reads_python_written_file);
    RUN(unaligned_data_is_copied);
    RUN(lenient_where_unambiguous);
    RUN(bad_files);
    RUN(bad_index);
    RUN(prefault);
    scratch_cleanup();
    return test_report();
}
