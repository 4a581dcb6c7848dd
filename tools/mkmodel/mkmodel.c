/*
 * deepseekd-mkmodel: writes a deterministic random DeepSeek V3.2 checkpoint in exactly the
 * official layout (names, dtypes, 128x128 FP8 blocks with weight_scale_inv, F32 norms, BF16
 * gate / weights_proj / eh_proj / embeddings / lm_head, the MTP layer at index
 * num_hidden_layers, sharded with model.safetensors.index.json when --shards > 1).
 *
 * The tensor list comes from dsd_tensor_specs(), the same list the loader checks, so a
 * generated checkpoint and the loader can never disagree. Values come from a per-tensor
 * xoshiro stream seeded by xxh64(name, seed): the same arguments give the same bytes on
 * every machine, whatever the number of threads.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>
#include <xxhash.h>

#include "config.h"
#include "numeric.h"
#include "presets.h"
#include "rng.h"
#include "safetensors.h"
#include "thread_pool.h"
#include "weights.h"

static const char usage[] =
    "usage: deepseekd-mkmodel --preset tiny|small|full-dims [--layers N] [--dense D] [--shards K]\n"
    "                         [--seed S] [--tokenizer FILE] [--threads N] --out DIR\n"
    "Writes a random DeepSeek V3.2 checkpoint (config.json + safetensors) into DIR.\n"
    "  --preset     tiny: every code path at toy size; small: real KV geometry, ~250 MB;\n"
    "               full-dims: the real V3.2 shapes (use --layers to bound the size)\n"
    "  --layers N   number of main layers (the MTP layer comes on top)\n"
    "  --dense D    the first D main layers dense (first_k_dense_replace; default the\n"
    "               preset's, at most N): e.g. many full-dimension layers without the\n"
    "               size of their experts\n"
    "  --shards K   split into K files with model.safetensors.index.json (default 1)\n"
    "  --seed S     random seed (default 1)\n"
    "  --tokenizer FILE  copy this tokenizer.json (and tokenizer_config.json beside it) and\n"
    "               size the vocabulary to it\n";

/* ---- deterministic values ---------------------------------------------------------- */

/* Each tensor has its own stream, seeded by xxh64(name, seed), so tensors can be generated
 * in any order and in parallel. */
static void rng_seed(struct dsd_rng *r, const char *name, uint64_t seed)
{
    dsd_rng_seed(r, XXH64(name, strlen(name), seed));
}

/* Uniform in [-a, a) from 24 random bits (exact in fp32, identical everywhere). */
static float uniform(struct dsd_rng *r, float a)
{
    return ((float)(dsd_rng_next(r) >> 40) * 0x1p-23f - 1.0f) * a;
}

/* The initialization: scales chosen so every sub-layer changes the residual stream
 * noticeably (attention and MoE errors show in the logits), attention and the indexer
 * scores are far from uniform, and the logits are not flat (argmax tests mean something). */
static void init_values(const struct dsd_tensor_spec *s, uint64_t seed, float *v, int64_t n)
{
    struct dsd_rng r;
    rng_seed(&r, s->name, seed);
    float center, half;
    dsd_weight_init_range(s, &center, &half);
    for (int64_t i = 0; i < n; i++)
        v[i] = center + uniform(&r, half);
}

/* ---- one output tensor --------------------------------------------------------------- */

struct out_tensor {
    const struct dsd_tensor_spec *spec;
    enum dsd_dtype dtype;
    bool is_scale;              /* the weight_scale_inv of the previous entry */
    char name[128];
    int ndim;
    int64_t shape[2];
    uint64_t nbytes;
    int shard;
    void *data;                 /* filled by generate() */
};

struct gen_job {
    struct out_tensor *t;       /* an F8 weight is followed by its scale: generated together */
    uint64_t seed;
    int failed;
};

static void quantize_fp8(const float *v, int64_t rows, int64_t cols, uint8_t *q, float *scales)
{
    int64_t rb = (rows + 127) / 128, cb = (cols + 127) / 128;
    for (int64_t bi = 0; bi < rb; bi++)
        for (int64_t bj = 0; bj < cb; bj++) {
            int64_t r1 = bi * 128 + 128 < rows ? bi * 128 + 128 : rows;
            int64_t c1 = bj * 128 + 128 < cols ? bj * 128 + 128 : cols;
            float amax = 0.0f;
            for (int64_t r = bi * 128; r < r1; r++)
                for (int64_t c = bj * 128; c < c1; c++)
                    amax = fmaxf(amax, fabsf(v[r * cols + c]));
            float s = amax > 0.0f ? amax / DSD_E4M3_MAX : 1.0f;
            scales[bi * cb + bj] = s;
            for (int64_t r = bi * 128; r < r1; r++)
                for (int64_t c = bj * 128; c < c1; c++)
                    q[r * cols + c] = dsd_f32_to_e4m3(v[r * cols + c] / s);
        }
}

static void gen_task(void *ctx, int i, int thread)
{
    (void)thread;
    struct gen_job *jobs = ctx, *j = &jobs[i];
    struct out_tensor *t = j->t;
    const struct dsd_tensor_spec *s = t->spec;
    int64_t rows = s->ndim == 2 ? s->shape[0] : 1, cols = s->ndim == 2 ? s->shape[1] : s->shape[0];
    int64_t n = rows * cols;
    float *v = malloc((size_t)n * sizeof *v);
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    if (!v || !t->data) {
        j->failed = 1;
        free(v);
        return;
    }
    init_values(s, j->seed, v, n);
    if (t->dtype == DSD_DTYPE_F8_E4M3) {
        struct out_tensor *sc = t + 1;
        sc->data = malloc(sc->nbytes);
        if (!sc->data) {
            j->failed = 1;
            free(v);
            return;
        }
        quantize_fp8(v, rows, cols, t->data, sc->data);
    } else if (t->dtype == DSD_DTYPE_BF16) {
        uint16_t *o = t->data;
        for (int64_t k = 0; k < n; k++)
            o[k] = dsd_f32_to_bf16(v[k]);
    } else {
        memcpy(t->data, v, (size_t)n * sizeof *v);
    }
    free(v);
}

/* ---- tokenizer ------------------------------------------------------------------------- */

static int tokenizer_vocab(const char *path, int64_t *vocab, int64_t *bos, int64_t *eos, char *errbuf, size_t len)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        snprintf(errbuf, len, "%s: not valid JSON (line %d: %s)", path, je.line, je.text);
        return -EINVAL;
    }
    int64_t max_id = -1;
    json_t *vocab_obj = json_object_get(json_object_get(root, "model"), "vocab");
    const char *key;
    json_t *val;
    json_object_foreach(vocab_obj, key, val) {
        if (json_is_integer(val) && json_integer_value(val) > max_id)
            max_id = json_integer_value(val);
    }
    size_t i;
    json_t *tok;
    json_array_foreach(json_object_get(root, "added_tokens"), i, tok) {
        json_t *id = json_object_get(tok, "id");
        const char *content = json_string_value(json_object_get(tok, "content"));
        if (!json_is_integer(id))
            continue;
        if (json_integer_value(id) > max_id)
            max_id = json_integer_value(id);
        if (content && strcmp(content, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>") == 0)
            *bos = json_integer_value(id);
        if (content && strcmp(content, "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>") == 0)
            *eos = json_integer_value(id);
    }
    json_decref(root);
    if (max_id < 0) {
        snprintf(errbuf, len, "%s: no model.vocab or added_tokens ids found", path);
        return -EINVAL;
    }
    *vocab = max_id + 1;
    return 0;
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (!in)
        return -errno;
    FILE *out = fopen(dst, "wb");
    if (!out) {
        int e = -errno;
        fclose(in);
        return e;
    }
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            rc = -EIO;
            break;
        }
    if (ferror(in))
        rc = -EIO;
    fclose(in);
    if (fclose(out) != 0)
        rc = -EIO;
    return rc;
}

/* ---- main ------------------------------------------------------------------------------ */

/* mkdir -p */
static int mkdir_p(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return -ENAMETOOLONG;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return -errno;
            *s = '/';
        }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Removes checkpoint files a previous run may have left in dir (a stale index.json next to a
 * new single file, or old shards), so the directory always holds exactly one checkpoint. */
static void remove_old_checkpoint(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        bool shard = strncmp(e->d_name, "model", 5) == 0 && n > 12 && strcmp(e->d_name + n - 12, ".safetensors") == 0;
        if (shard || strcmp(e->d_name, "model.safetensors.index.json") == 0) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

static int die(const char *fmt, const char *arg)
{
    fprintf(stderr, "deepseekd-mkmodel: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 1;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == 0 || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    const char *preset = NULL, *out_dir = NULL, *tokenizer = NULL;
    long layers = -1, dense = -1, shards = 1, threads = 0;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (!v)
            return die("%s needs a value (see --help)", a);
        i++;
        if (strcmp(a, "--preset") == 0)
            preset = v;
        else if (strcmp(a, "--out") == 0)
            out_dir = v;
        else if (strcmp(a, "--tokenizer") == 0)
            tokenizer = v;
        else if (strcmp(a, "--layers") == 0) {
            if (!parse_long(v, 1, 1024, &layers))
                return die("--layers must be an integer in [1, 1024], got \"%s\"", v);
        } else if (strcmp(a, "--dense") == 0) {
            if (!parse_long(v, 0, 1024, &dense))
                return die("--dense must be an integer in [0, 1024], got \"%s\"", v);
        } else if (strcmp(a, "--shards") == 0) {
            if (!parse_long(v, 1, 100000, &shards))
                return die("--shards must be an integer in [1, 100000], got \"%s\"", v);
        } else if (strcmp(a, "--threads") == 0) {
            if (!parse_long(v, 0, 1024, &threads))
                return die("--threads must be an integer in [0, 1024], got \"%s\"", v);
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            seed = strtoull(v, &end, 0);
            if (errno || *end || *v == 0 || *v == '-')
                return die("--seed must be a non-negative integer, got \"%s\"", v);
        } else {
            return die("unknown option %s (see --help)", a);
        }
    }
    if (!preset || !out_dir) {
        fputs(usage, stderr);
        return 64;
    }
    struct dsd_model_config cfg;
    if (mkmodel_preset(preset, &cfg) != 0)
        return die("unknown preset \"%s\" (tiny, small, full-dims)", preset);
    if (layers > 0) {
        cfg.num_hidden_layers = (int)layers;
        if (cfg.first_k_dense_replace > cfg.num_hidden_layers)
            cfg.first_k_dense_replace = cfg.num_hidden_layers;
    }
    if (dense >= 0) {
        if (dense > cfg.num_hidden_layers) {
            char n[32];
            snprintf(n, sizeof n, "%d", cfg.num_hidden_layers);
            return die("--dense is more than the main layers (%s)", n);
        }
        cfg.first_k_dense_replace = (int)dense;
    }
    if (tokenizer) {
        char e[512];
        if (tokenizer_vocab(tokenizer, &cfg.vocab_size, &cfg.bos_token_id, &cfg.eos_token_id, e, sizeof e))
            return die("%s", e);
    }
    if (mkdir_p(out_dir) != 0)
        return die("cannot create %s", out_dir);
    remove_old_checkpoint(out_dir);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct dsd_err err;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if (dsd_model_config_save(&cfg, path, &err))
        return die("%s", err.msg);
    /* Re-read what we wrote: the generator must never emit a config the loader refuses. */
    struct dsd_model_config check;
    if (dsd_model_config_load(path, &check, &err))
        return die("internal: generated config does not load: %s", err.msg);

    struct dsd_tensor_spec *specs;
    size_t n_specs;
    if (dsd_tensor_specs(&cfg, NULL, &specs, &n_specs))
        return die("%s", "out of memory");
    struct out_tensor *outs = calloc(n_specs * 2, sizeof *outs);
    if (!outs)
        return die("%s", "out of memory");
    size_t n_out = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < n_specs; i++) {
        const struct dsd_tensor_spec *s = &specs[i];
        struct out_tensor *t = &outs[n_out++];
        t->spec = s;
        t->dtype = s->official_dtype;
        snprintf(t->name, sizeof t->name, "%s", s->name);
        t->ndim = s->ndim;
        t->shape[0] = s->shape[0];
        t->shape[1] = s->shape[1];
        int64_t n = s->ndim == 2 ? s->shape[0] * s->shape[1] : s->shape[0];
        t->nbytes = (uint64_t)n * dsd_dtype_size(t->dtype);
        total += t->nbytes;
        if (t->dtype == DSD_DTYPE_F8_E4M3) {
            struct out_tensor *sc = &outs[n_out++];
            sc->spec = s;
            sc->dtype = DSD_DTYPE_F32;
            sc->is_scale = true;
            snprintf(sc->name, sizeof sc->name, "%.*s.weight_scale_inv", (int)(strlen(s->name) - 7), s->name);
            sc->ndim = 2;
            sc->shape[0] = (s->shape[0] + 127) / 128;
            sc->shape[1] = (s->shape[1] + 127) / 128;
            sc->nbytes = (uint64_t)(sc->shape[0] * sc->shape[1]) * 4;
            total += sc->nbytes;
        }
    }
    /* Shards by cumulative size, a weight and its scale always together. */
    uint64_t per_shard = (total + (uint64_t)shards - 1) / (uint64_t)shards, acc = 0;
    for (size_t i = 0; i < n_out; i++) {
        int sh = (int)(acc / (per_shard ? per_shard : 1));
        if (sh >= shards)
            sh = (int)shards - 1;
        outs[i].shard = outs[i].is_scale ? outs[i - 1].shard : sh;
        acc += outs[i].nbytes;
    }

    struct dsd_thread_pool *pool = dsd_thread_pool_new(threads > 0 ? (int)threads : 4);
    const char **index_names = calloc(n_out, sizeof *index_names), **index_files = calloc(n_out, sizeof *index_files);
    char (*shard_names)[64] = calloc((size_t)shards, sizeof *shard_names);
    struct gen_job *jobs = calloc(n_out, sizeof *jobs);
    if (!pool || !index_names || !index_files || !shard_names || !jobs)
        return die("%s", "out of memory");
    int rc = 0;
    for (int sh = 0; sh < shards && rc == 0; sh++) {
        if (shards == 1)
            snprintf(shard_names[sh], sizeof shard_names[sh], "model.safetensors");
        else
            snprintf(shard_names[sh], sizeof shard_names[sh], "model-%05d-of-%05ld.safetensors", sh + 1, shards);
        int n_jobs = 0;
        for (size_t i = 0; i < n_out; i++)
            if (outs[i].shard == sh && !outs[i].is_scale)
                jobs[n_jobs++] = (struct gen_job){ .t = &outs[i], .seed = seed };
        dsd_thread_pool_run(pool, n_jobs, gen_task, jobs);
        struct dsd_st_writer *w = dsd_st_writer_new();
        if (!w)
            return die("%s", "out of memory");
        dsd_st_writer_add_metadata(w, "format", "pt");
        for (int j = 0; j < n_jobs; j++)
            if (jobs[j].failed)
                rc = -ENOMEM;
        for (size_t i = 0; i < n_out && rc == 0; i++) {
            if (outs[i].shard != sh)
                continue;
            rc = dsd_st_writer_add(w, outs[i].name, outs[i].dtype, outs[i].ndim, outs[i].shape, outs[i].data,
                                   outs[i].nbytes);
            index_names[i] = outs[i].name;
            index_files[i] = shard_names[sh];
        }
        snprintf(path, sizeof path, "%s/%s", out_dir, shard_names[sh]);
        if (rc == 0)
            rc = dsd_st_writer_write(w, path, &err);
        else
            dsd_errf(&err, rc, "cannot generate tensors of %s", shard_names[sh]);
        dsd_st_writer_free(w);
        for (size_t i = 0; i < n_out; i++)
            if (outs[i].shard == sh) {
                free(outs[i].data);
                outs[i].data = NULL;
            }
    }
    if (rc == 0 && shards > 1)
        rc = dsd_st_write_index(out_dir, index_names, index_files, n_out, total, &err);
    if (rc)
        return die("%s", err.msg);
    if (tokenizer) {
        snprintf(path, sizeof path, "%s/tokenizer.json", out_dir);
        if (copy_file(tokenizer, path))
            return die("cannot copy %s", tokenizer);
        char src[PATH_MAX];
        snprintf(src, sizeof src, "%s", tokenizer);
        char *slash = strrchr(src, '/');
        snprintf(slash ? slash + 1 : src, sizeof src - (size_t)(slash ? slash + 1 - src : 0), "tokenizer_config.json");
        snprintf(path, sizeof path, "%s/tokenizer_config.json", out_dir);
        struct stat st;
        if (stat(src, &st) == 0 && copy_file(src, path))
            return die("cannot copy %s", src);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("wrote %s: preset %s, %d+%d layers, %zu tensors, %.1f MB in %ld file(s), %.1f s\n", out_dir, preset,
           cfg.num_hidden_layers, cfg.num_nextn_predict_layers, n_out, (double)total / 1e6, shards,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    dsd_thread_pool_free(pool);
    free(jobs);
    free(shard_names);
    free(index_files);
    free(index_names);
    free(outs);
    free(specs);
    return 0;
}
