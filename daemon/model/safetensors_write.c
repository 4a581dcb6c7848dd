/*
 * daemon/model/safetensors_write.c: the safetensors writer and the index writer (contract in
 * safetensors.h).
 *
 * Files come out byte for byte as the Python safetensors library writes them for the same
 * tensors: data ordered by dtype alignment (descending) then name, the JSON header compact,
 * in data order with "__metadata__" first, padded with spaces so the data section starts
 * 8-byte aligned. Every tensor of such a file is therefore aligned to its element size and
 * our reader never has to copy one.
 *
 * Each file is written to a temporary name in the same directory, fsynced and renamed over
 * the final name, so a crash leaves either the old file or the new one, never half of one.
 */
#include "safetensors.h"
#include "safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct st_wtensor {
    char *name;
    enum dsd_dtype dtype;
    int ndim;
    int64_t shape[DSD_ST_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
};

struct dsd_st_writer {
    struct st_wtensor *t;
    size_t n, cap;
    json_t *names;    /* set of the names added: O(1) duplicate checks for 92k tensors */
    json_t *metadata; /* "__metadata__" entries, NULL until one is added */
};

struct dsd_st_writer *dsd_st_writer_new(void)
{
    struct dsd_st_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    if (!(w->names = json_object())) {
        free(w);
        return NULL;
    }
    return w;
}

void dsd_st_writer_free(struct dsd_st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->t[i].name);
    free(w->t);
    json_decref(w->names);
    json_decref(w->metadata);
    free(w);
}

/* jansson refuses strings that are not UTF-8; JSON headers can only hold UTF-8 names. */
static bool st_is_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

int dsd_st_writer_add(struct dsd_st_writer *w, const char *name, enum dsd_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, uint64_t nbytes)
{
    if (!w || !name || strcmp(name, "__metadata__") == 0 || !st_is_utf8(name))
        return -EINVAL;
    if ((unsigned)dtype >= DSD_DTYPE_COUNT || ndim < 0 || ndim > DSD_ST_MAX_DIMS ||
        (ndim > 0 && !shape) || (nbytes > 0 && !data))
        return -EINVAL;
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
            return -EINVAL;
    uint64_t want;
    if (__builtin_mul_overflow(numel, dsd_dtype_size(dtype), &want) || want != nbytes ||
        nbytes > INT64_MAX)
        return -EINVAL;
    if (json_object_get(w->names, name))
        return -EINVAL;

    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        void *p = realloc(w->t, cap * sizeof *w->t);
        if (!p)
            return -ENOMEM;
        w->t = p;
        w->cap = cap;
    }
    struct st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return -ENOMEM;
    if (json_object_set_new(w->names, name, json_null()) < 0) {
        free(t->name);
        return -ENOMEM;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    return 0;
}

int dsd_st_writer_add_metadata(struct dsd_st_writer *w, const char *key, const char *value)
{
    if (!w || !key || !value || !st_is_utf8(key) || !st_is_utf8(value))
        return -EINVAL;
    if (!w->metadata && !(w->metadata = json_object()))
        return -ENOMEM;
    if (json_object_get(w->metadata, key))
        return -EINVAL;
    return json_object_set_new(w->metadata, key, json_string(value)) < 0 ? -ENOMEM : 0;
}

/* ------------------------------------------------------------------------------------ */
/* Writing a file atomically                                                            */

struct st_out {
    int fd;
    char *tmp_path;
    const char *path; /* for messages */
    char *buf;        /* small writes are gathered here */
    size_t len, cap;
};

static int st_write_all(struct st_out *o, const void *p, size_t n, struct dsd_err *err)
{
    const char *c = p;
    while (n > 0) {
        ssize_t r = write(o->fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return dsd_errf(err, -errno, "%s: write failed: %s", o->tmp_path, strerror(errno));
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static int st_flush(struct st_out *o, struct dsd_err *err)
{
    int rc = st_write_all(o, o->buf, o->len, err);
    o->len = 0;
    return rc;
}

static int st_put(struct st_out *o, const void *p, size_t n, struct dsd_err *err)
{
    if (n == 0)
        return 0; /* p may be NULL for an empty tensor */
    if (n > o->cap - o->len) {
        int rc = st_flush(o, err);
        if (rc < 0)
            return rc;
        if (n >= o->cap)
            return st_write_all(o, p, n, err);
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

/* Opens PATH.tmp.PID.N exclusively (0644 less the umask). */
static int st_out_open(struct st_out *o, const char *path, struct dsd_err *err)
{
    static atomic_uint counter;
    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->path = path;
    o->cap = 1 << 20;
    size_t len = strlen(path) + 48;
    if (!(o->buf = malloc(o->cap)) || !(o->tmp_path = malloc(len)))
        return dsd_errf(err, -ENOMEM, "%s: out of memory", path);
    for (int tries = 0; tries < 100; tries++) {
        snprintf(o->tmp_path, len, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&counter, 1));
        o->fd = open(o->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (o->fd >= 0 || errno != EEXIST)
            break;
    }
    if (o->fd < 0)
        return dsd_errf(err, -errno, "%s: cannot create: %s", o->tmp_path, strerror(errno));
    return 0;
}

/* Removes the temporary file (after a failure) and frees everything. */
static void st_out_abort(struct st_out *o)
{
    if (o->fd >= 0) {
        close(o->fd);
        unlink(o->tmp_path);
    }
    free(o->tmp_path);
    free(o->buf);
    o->fd = -1;
    o->tmp_path = o->buf = NULL;
}

/* Makes the temporary file durable, then gives it the final name. */
static int st_out_commit(struct st_out *o, struct dsd_err *err)
{
    int rc = st_flush(o, err);
    if (rc == 0 && fsync(o->fd) < 0)
        rc = dsd_errf(err, -errno, "%s: fsync failed: %s", o->tmp_path, strerror(errno));
    if (rc == 0) {
        int fd = o->fd;
        o->fd = -1;
        if (close(fd) < 0)
            rc = dsd_errf(err, -errno, "%s: close failed: %s", o->tmp_path, strerror(errno));
        else if (rename(o->tmp_path, o->path) < 0)
            rc = dsd_errf(err, -errno, "%s: cannot rename %s over it: %s", o->path, o->tmp_path,
                          strerror(errno));
        if (rc < 0)
            unlink(o->tmp_path);
    }
    if (rc == 0) {
        /* The rename itself is durable once the directory is synced; a filesystem that
         * cannot sync directories still has a whole file under one of the two names. */
        char *dir = strdup(o->path);
        if (dir) {
            char *slash = strrchr(dir, '/');
            if (slash)
                *(slash == dir ? slash + 1 : slash) = 0;
            int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            free(dir);
        }
    }
    st_out_abort(o);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Tensor files                                                                         */

static int st_layout_cmp(const void *a, const void *b)
{
    const struct st_wtensor *x = a, *y = b;
    int rx = dsd_dtype_safetensors_rank(x->dtype), ry = dsd_dtype_safetensors_rank(y->dtype);
    if (rx != ry)
        return rx > ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The header JSON, compact, not yet padded. */
static char *st_header_json(const struct dsd_st_writer *w)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    bool ok = !w->metadata || json_object_set(root, "__metadata__", w->metadata) == 0;
    uint64_t off = 0;
    for (size_t i = 0; ok && i < w->n; i++) {
        const struct st_wtensor *t = &w->t[i];
        json_t *shape = json_array(), *offsets = json_array(), *e = json_object();
        ok = shape && offsets && e;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
        ok = ok && json_array_append_new(offsets, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(offsets, json_integer((json_int_t)(off + t->nbytes))) == 0;
        /* Key order as the Python library writes it: dtype, shape, data_offsets. */
        ok = ok && json_object_set_new(e, "dtype", json_string(dsd_dtype_name(t->dtype))) == 0;
        ok = ok && json_object_set(e, "shape", shape) == 0 &&
             json_object_set(e, "data_offsets", offsets) == 0 &&
             json_object_set(root, t->name, e) == 0;
        json_decref(shape);
        json_decref(offsets);
        json_decref(e);
        off += t->nbytes;
    }
    char *s = ok ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return s;
}

int dsd_st_writer_write(struct dsd_st_writer *w, const char *path, struct dsd_err *err)
{
    if (!w || !path)
        return dsd_errf(err, -EINVAL, "safetensors writer: no writer or no path");
    uint64_t total = 0;
    for (size_t i = 0; i < w->n; i++)
        if (__builtin_add_overflow(total, w->t[i].nbytes, &total) || total > INT64_MAX)
            return dsd_errf(err, -EINVAL, "%s: tensors add up to more than 2^63 bytes", path);
    if (w->n > 1) /* t is NULL in a writer without tensors */
        qsort(w->t, w->n, sizeof *w->t, st_layout_cmp);
    char *header = st_header_json(w);
    if (!header)
        return dsd_errf(err, -ENOMEM, "%s: out of memory building the header", path);
    size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++)
        len_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));

    struct st_out o;
    int rc = st_out_open(&o, path, err);
    if (rc == 0)
        rc = st_put(&o, len_le, 8, err);
    if (rc == 0)
        rc = st_put(&o, header, hlen, err);
    if (rc == 0)
        rc = st_put(&o, "        ", padded - hlen, err);
    for (size_t i = 0; rc == 0 && i < w->n; i++)
        rc = st_put(&o, w->t[i].data, (size_t)w->t[i].nbytes, err);
    free(header);
    if (rc == 0)
        return st_out_commit(&o, err);
    st_out_abort(&o);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* model.safetensors.index.json                                                         */

int dsd_st_write_index(const char *dir, const char *const *tensor_names,
                       const char *const *shard_names, size_t n, uint64_t total_size,
                       struct dsd_err *err)
{
    if (!dir || n == 0 || !tensor_names || !shard_names)
        return dsd_errf(err, -EINVAL, "index writer: no directory or no tensors");
    if (total_size > INT64_MAX)
        return dsd_errf(err, -EINVAL, "index writer: total_size %llu is too large",
                        (unsigned long long)total_size);
    json_t *root = json_object(), *md = json_object(), *wm = json_object();
    int rc = 0;
    if (!root || !md || !wm || json_object_set(root, "metadata", md) < 0 ||
        json_object_set(root, "weight_map", wm) < 0 ||
        json_object_set_new(md, "total_size", json_integer((json_int_t)total_size)) < 0)
        rc = dsd_errf(err, -ENOMEM, "index writer: out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *t = tensor_names[i], *s = shard_names[i];
        const char *problem = s ? dsd_st_shard_name_problem(s) : "it is missing";
        if (!t || !st_is_utf8(t))
            rc = dsd_errf(err, -EINVAL, "index writer: tensor name %zu is missing or not UTF-8", i);
        else if (problem)
            rc = dsd_errf(err, -EINVAL, "index writer: tensor %s: bad shard name: %s", t, problem);
        else if (!st_is_utf8(s))
            rc = dsd_errf(err, -EINVAL, "index writer: tensor %s: shard name is not UTF-8", t);
        else if (json_object_get(wm, t))
            rc = dsd_errf(err, -EINVAL, "index writer: tensor %s is listed twice", t);
        else if (json_object_set_new(wm, t, json_string(s)) < 0)
            rc = dsd_errf(err, -ENOMEM, "index writer: out of memory");
    }
    /* What transformers writes: json.dumps(index, indent=2, sort_keys=True) + "\n". */
    char *text = rc == 0 ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    if (rc == 0 && !text)
        rc = dsd_errf(err, -ENOMEM, "index writer: out of memory");
    json_decref(md);
    json_decref(wm);
    json_decref(root);

    char *path = NULL;
    if (rc == 0) {
        size_t len = strlen(dir) + sizeof DSD_ST_INDEX_NAME + 1;
        if (!(path = malloc(len)))
            rc = dsd_errf(err, -ENOMEM, "index writer: out of memory");
        else
            snprintf(path, len, "%s/%s", dir, DSD_ST_INDEX_NAME);
    }
    struct st_out o;
    if (rc == 0) {
        rc = st_out_open(&o, path, err);
        if (rc == 0)
            rc = st_put(&o, text, strlen(text), err);
        if (rc == 0)
            rc = st_put(&o, "\n", 1, err);
        if (rc == 0)
            rc = st_out_commit(&o, err);
        else
            st_out_abort(&o);
    }
    free(text);
    free(path);
    return rc;
}
