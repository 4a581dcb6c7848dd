/*
 * daemon/model/safetensors.c: the safetensors reader (contract in safetensors.h, the list of
 * checks and their reasons in docs/SAFETENSORS.md).
 *
 * Opening a set maps every file read-only, parses each JSON header with jansson, checks
 * every field of it (the files come from the internet), and builds one array of tensors
 * sorted by name, searched with bsearch. Tensor data is not read at open time: the only
 * pages touched are the headers', plus the bytes of the rare tensor that is not aligned to
 * its element size, which is copied once into an aligned heap buffer owned by the set.
 */
#include "safetensors.h"
#include "safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* Message helpers                                                                      */

/* Tensor names come from the file and end up in log lines: quote them, escape control
 * bytes (a name with a newline must not forge a journal line) and cut very long ones. */
struct st_quoted {
    char s[136];
};

static const char *st_quote(struct st_quoted *q, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, cap = sizeof q->s;
    q->s[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (o + 8 >= cap) { /* room for \xHH, the closing quote, "..." and NUL */
            memcpy(q->s + o, "\"...", 5);
            return q->s;
        }
        if (c == '"' || c == '\\') {
            q->s[o++] = '\\';
            q->s[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            q->s[o++] = '\\';
            q->s[o++] = 'x';
            q->s[o++] = hex[c >> 4];
            q->s[o++] = hex[c & 15];
        } else {
            q->s[o++] = (char)c;
        }
    }
    q->s[o++] = '"';
    q->s[o] = 0;
    return q->s;
}

/* jansson's messages quote the input near the error; keep its control bytes out of logs. */
static const char *st_json_error_text(json_error_t *e)
{
    for (char *c = e->text; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    return e->text;
}

static const char *st_json_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "an unknown JSON value";
}

static char *st_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static const char *st_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* ------------------------------------------------------------------------------------ */
/* The set                                                                              */

struct st_file {
    char *path;
    const uint8_t *image; /* the whole file */
    size_t size;
    bool mapped;          /* munmap on close (else the caller owns image) */
};

struct dsd_st_set {
    struct st_file *files;
    int n_files;
    struct dsd_st_tensor *tensors; /* sorted by name once open */
    size_t n_tensors, cap_tensors;
    void **copies;                 /* aligned copies of unaligned tensors */
    size_t n_copies, cap_copies;
    uint64_t total_bytes;
};

/* Data pointer of empty tensors whose place in the file is not aligned. */
static const uint64_t st_empty_data[1];

static struct dsd_st_set *st_set_new(int n_files)
{
    struct dsd_st_set *set = calloc(1, sizeof *set);
    if (!set)
        return NULL;
    set->files = calloc((size_t)(n_files > 0 ? n_files : 1), sizeof *set->files);
    if (!set->files) {
        free(set);
        return NULL;
    }
    set->n_files = n_files;
    return set;
}

void dsd_st_close(struct dsd_st_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n_tensors; i++)
        free((char *)set->tensors[i].name);
    free(set->tensors);
    for (size_t i = 0; i < set->n_copies; i++)
        free(set->copies[i]);
    free(set->copies);
    for (int i = 0; i < set->n_files; i++) {
        if (set->files[i].mapped)
            munmap((void *)set->files[i].image, set->files[i].size);
        free(set->files[i].path);
    }
    free(set->files);
    free(set);
}

static int st_reserve_tensors(struct dsd_st_set *set, size_t more)
{
    if (set->n_tensors + more <= set->cap_tensors)
        return 0;
    size_t cap = set->cap_tensors ? set->cap_tensors : 64;
    while (cap < set->n_tensors + more)
        cap *= 2;
    void *p = realloc(set->tensors, cap * sizeof *set->tensors);
    if (!p)
        return -ENOMEM;
    set->tensors = p;
    set->cap_tensors = cap;
    return 0;
}

static int st_keep_copy(struct dsd_st_set *set, void *copy)
{
    if (set->n_copies == set->cap_copies) {
        size_t cap = set->cap_copies ? set->cap_copies * 2 : 8;
        void *p = realloc(set->copies, cap * sizeof *set->copies);
        if (!p)
            return -ENOMEM;
        set->copies = p;
        set->cap_copies = cap;
    }
    set->copies[set->n_copies++] = copy;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* One file's header                                                                    */

/* Reads a JSON integer that must be >= 0. */
static bool st_json_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int st_parse_metadata(const char *path, const json_t *md, struct dsd_err *err)
{
    struct st_quoted q;
    if (!json_is_object(md))
        return dsd_errf(err, -EINVAL,
                        "%s: \"__metadata__\" is %s, expected an object of strings", path,
                        st_json_type(md));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)md, key, v) {
        if (!json_is_string(v))
            return dsd_errf(err, -EINVAL,
                            "%s: \"__metadata__\" entry %s is %s, expected a string", path,
                            st_quote(&q, key), st_json_type(v));
    }
    return 0;
}

/* Checks one header entry and fills t (everything but name and data). data_len is the
 * size of the file's data section. */
static int st_parse_entry(const char *path, const char *name, const json_t *e,
                          uint64_t data_len, struct dsd_st_tensor *t, uint64_t *begin_out,
                          struct dsd_err *err)
{
    struct st_quoted q; /* quoted only on failure: this runs for each of 92k tensors */
#define QNAME st_quote(&q, name)
    if (!json_is_object(e))
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: entry is %s, expected an object with \"dtype\", "
                        "\"shape\" and \"data_offsets\"", path, QNAME, st_json_type(e));

    const json_t *jd = json_object_get(e, "dtype");
    if (!jd)
        return dsd_errf(err, -EINVAL, "%s: tensor %s: \"dtype\" is missing", path, QNAME);
    if (!json_is_string(jd))
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: \"dtype\" is %s, expected a string such as \"BF16\"",
                        path, QNAME, st_json_type(jd));
    if (dsd_dtype_parse(json_string_value(jd), &t->dtype) < 0) {
        struct st_quoted qd;
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: unknown dtype %s (expected one of F8_E4M3, F8_E5M2, "
                        "BF16, F16, F32, F64, I8, U8, I16, I32, I64, BOOL)", path, QNAME,
                        st_quote(&qd, json_string_value(jd)));
    }
    uint64_t esize = dsd_dtype_size(t->dtype);

    const json_t *js = json_object_get(e, "shape");
    if (!js)
        return dsd_errf(err, -EINVAL, "%s: tensor %s: \"shape\" is missing", path, QNAME);
    if (!json_is_array(js))
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: \"shape\" is %s, expected an array of non-negative "
                        "integers", path, QNAME, st_json_type(js));
    size_t ndim = json_array_size(js);
    if (ndim > DSD_ST_MAX_DIMS)
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: shape has %zu dimensions, at most %d are supported",
                        path, QNAME, ndim, DSD_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < ndim; i++) {
        const json_t *d = json_array_get(js, i);
        uint64_t dim;
        if (!st_json_uint(d, &dim)) {
            if (json_is_integer(d))
                return dsd_errf(err, -EINVAL,
                                "%s: tensor %s: shape[%zu] is %lld, expected a non-negative "
                                "integer", path, QNAME, i, (long long)json_integer_value(d));
            return dsd_errf(err, -EINVAL,
                            "%s: tensor %s: shape[%zu] is %s, expected a non-negative integer",
                            path, QNAME, i, st_json_type(d));
        }
        t->shape[i] = (int64_t)dim;
        overflow |= __builtin_mul_overflow(numel, dim, &numel);
    }
    for (size_t i = ndim; i < DSD_ST_MAX_DIMS; i++)
        t->shape[i] = 0;
    uint64_t nbytes;
    overflow |= __builtin_mul_overflow(numel, esize, &nbytes);

    const json_t *jo = json_object_get(e, "data_offsets");
    if (!jo)
        return dsd_errf(err, -EINVAL, "%s: tensor %s: \"data_offsets\" is missing", path, QNAME);
    uint64_t begin, end;
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !st_json_uint(json_array_get(jo, 0), &begin) ||
        !st_json_uint(json_array_get(jo, 1), &end))
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: \"data_offsets\" must be [begin, end], two non-negative "
                        "integers", path, QNAME);
    if (begin > end)
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: data_offsets [%llu, %llu] are reversed (expected "
                        "begin <= end)", path, QNAME, (unsigned long long)begin,
                        (unsigned long long)end);
    if (end > data_len)
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: data_offsets end %llu is past the end of the data "
                        "section (%llu bytes; file truncated?)", path, QNAME,
                        (unsigned long long)end, (unsigned long long)data_len);
    if (overflow)
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: shape has more elements than 64 bits can count", path,
                        QNAME);
    if (end - begin != nbytes)
        return dsd_errf(err, -EINVAL,
                        "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, but %s shape "
                        "with %llu elements needs %llu", path, QNAME, (unsigned long long)begin,
                        (unsigned long long)end, (unsigned long long)(end - begin),
                        dsd_dtype_name(t->dtype), (unsigned long long)numel,
                        (unsigned long long)nbytes);
    t->nbytes = nbytes;
    *begin_out = begin;
    return 0;
}
#undef QNAME

struct st_range {
    uint64_t begin, end;
    size_t tensor; /* index into set->tensors */
};

static int st_range_cmp(const void *a, const void *b)
{
    const struct st_range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Rejects two non-empty byte ranges that share a byte (one tensor's data aliasing another's
 * is never what a writer meant, and a loader that writes a converted copy back would
 * corrupt both). Gaps between tensors are allowed: they are unambiguous. */
static int st_check_overlaps(const struct dsd_st_set *set, const char *path,
                             struct st_range *r, size_t n, struct dsd_err *err)
{
    qsort(r, n, sizeof *r, st_range_cmp);
    const struct st_range *far = NULL; /* non-empty range reaching furthest so far */
    for (size_t i = 0; i < n; i++) {
        if (r[i].begin == r[i].end)
            continue;
        if (far && r[i].begin < far->end) {
            struct st_quoted qa, qb;
            return dsd_errf(err, -EINVAL,
                            "%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap (expected "
                            "disjoint byte ranges)", path,
                            st_quote(&qa, set->tensors[far->tensor].name),
                            (unsigned long long)far->begin, (unsigned long long)far->end,
                            st_quote(&qb, set->tensors[r[i].tensor].name),
                            (unsigned long long)r[i].begin, (unsigned long long)r[i].end);
        }
        if (!far || r[i].end > far->end)
            far = &r[i];
    }
    return 0;
}

/* Parses and checks file fi's header and appends its tensors to the set. head holds the
 * file's first bytes: min(size, 8) of them, and all 8 + N when the length N passes the
 * checks below. */
static int st_parse_file(struct dsd_st_set *set, int fi, const uint8_t *head,
                         struct dsd_err *err)
{
    const struct st_file *f = &set->files[fi];
    const char *path = f->path;
    if (f->size < 8)
        return dsd_errf(err, -EINVAL,
                        "%s: file is %zu bytes, too short for a safetensors file (expected an "
                        "8-byte header length, a JSON header and data)", path, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | head[i];
    if (n > DSD_ST_MAX_HEADER_BYTES)
        return dsd_errf(err, -EINVAL,
                        "%s: header length is %llu bytes, more than the %llu-byte limit (not a "
                        "safetensors file?)", path, (unsigned long long)n,
                        (unsigned long long)DSD_ST_MAX_HEADER_BYTES);
    if (n > f->size - 8)
        return dsd_errf(err, -EINVAL,
                        "%s: header length %llu runs past the end of the file (%zu bytes; "
                        "truncated, or not a safetensors file)", path, (unsigned long long)n,
                        f->size);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)head + 8, (size_t)n,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root)
        return dsd_errf(err, -EINVAL,
                        "%s: header is not valid JSON: %s (header byte %d; expected a JSON "
                        "object of tensors)", path, st_json_error_text(&jerr), jerr.position);
    int rc = 0;
    struct st_range *ranges = NULL;
    if (!json_is_object(root)) {
        rc = dsd_errf(err, -EINVAL, "%s: header is %s, expected a JSON object of tensors",
                      path, st_json_type(root));
        goto out;
    }

    size_t cap = json_object_size(root);
    if (st_reserve_tensors(set, cap) < 0 || !(ranges = malloc((cap ? cap : 1) * sizeof *ranges))) {
        rc = dsd_errf(err, -ENOMEM, "%s: out of memory for %zu tensors", path, cap);
        goto out;
    }
    uint64_t data_start = 8 + n, data_len = f->size - data_start;
    size_t nr = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = st_parse_metadata(path, v, err)) < 0)
                goto out;
            continue;
        }
        struct dsd_st_tensor *t = &set->tensors[set->n_tensors];
        memset(t, 0, sizeof *t);
        uint64_t begin = 0;
        if ((rc = st_parse_entry(path, key, v, data_len, t, &begin, err)) < 0)
            goto out;
        if (!(t->name = strdup(key))) {
            rc = dsd_errf(err, -ENOMEM, "%s: out of memory", path);
            goto out;
        }
        t->file_index = fi;
        ranges[nr++] = (struct st_range){begin, begin + t->nbytes, set->n_tensors};
        set->n_tensors++;
    }
    if ((rc = st_check_overlaps(set, path, ranges, nr, err)) < 0)
        goto out;

    /* The format does not promise alignment (the Python writer pads the header so that it
     * holds, other writers may not); the kernels need it, so misplaced tensors are copied. */
    for (size_t i = 0; i < nr; i++) {
        struct dsd_st_tensor *t = &set->tensors[ranges[i].tensor];
        const uint8_t *p = f->image + data_start + ranges[i].begin;
        size_t align = dsd_dtype_size(t->dtype);
        if ((uintptr_t)p % align == 0) {
            t->data = p;
        } else if (t->nbytes == 0) {
            t->data = st_empty_data;
        } else {
            void *copy = NULL;
            if (posix_memalign(&copy, 64, (size_t)t->nbytes) != 0 || st_keep_copy(set, copy) < 0) {
                free(copy);
                rc = dsd_errf(err, -ENOMEM, "%s: out of memory for an aligned copy of %llu bytes",
                              path, (unsigned long long)t->nbytes);
                goto out;
            }
            memcpy(copy, p, (size_t)t->nbytes);
            t->data = copy;
        }
    }
out:
    /* On failure the tensors appended so far stay in the set; dsd_st_close() frees them. */
    free(ranges);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Opening                                                                              */

/* pread() of exactly n bytes: 0, -errno, or -EIO when the file ends first. */
static int st_pread_all(int fd, void *buf, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;
        got += (size_t)r;
    }
    return 0;
}

/* Maps file fi and reads its header into *head (see st_parse_file()). The header is read
 * with pread() under POSIX_FADV_RANDOM rather than through the mapping: a fault on the
 * mapping would make the kernel read around it (read_ahead_kb, 8 MiB on some machines),
 * i.e. pull megabytes of tensor data from each of 163 shards just to open them. */
static int st_map_file(struct dsd_st_set *set, int fi, const char *path, const char *named_by,
                       uint8_t **head, struct dsd_err *err)
{
    struct st_file *f = &set->files[fi];
    *head = NULL;
    if (!(f->path = strdup(path)))
        return dsd_errf(err, -ENOMEM, "%s: out of memory", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (named_by)
            return dsd_errf(err, -e, "%s: %s (%s names it as a shard)", path, strerror(e),
                            named_by);
        return dsd_errf(err, -e, "%s: %s", path, strerror(e));
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        rc = dsd_errf(err, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = dsd_errf(err, -EINVAL, "%s: not a regular file (expected a .safetensors file)",
                      path);
        goto out;
    }
    size_t size = (size_t)st.st_size, want = size < 8 ? size : 8;
    uint8_t len_le[8];
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    if ((rc = st_pread_all(fd, len_le, want, 0)) < 0) {
        rc = dsd_errf(err, rc, "%s: cannot read the header: %s", path, strerror(-rc));
        goto out;
    }
    if (want == 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = n << 8 | len_le[i];
        if (n <= DSD_ST_MAX_HEADER_BYTES && n <= size - 8)
            want = 8 + (size_t)n;
    }
    if (!(*head = malloc(want ? want : 1))) {
        rc = dsd_errf(err, -ENOMEM, "%s: out of memory for a %zu-byte header", path, want);
        goto out;
    }
    memcpy(*head, len_le, want < 8 ? want : 8);
    if (want > 8 && (rc = st_pread_all(fd, *head + 8, want - 8, 8)) < 0) {
        rc = dsd_errf(err, rc, "%s: cannot read the header: %s", path, strerror(-rc));
        goto out;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_NORMAL);
    if (size == 0) {
        f->image = (const uint8_t *)"";
        f->size = 0; /* st_parse_file() reports it as too short */
        goto out;
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = dsd_errf(err, -errno, "%s: mmap of %zu bytes failed: %s", path, size,
                      strerror(errno));
        goto out;
    }
    f->image = p;
    f->size = size;
    f->mapped = true;
out:
    close(fd);
    return rc;
}

static int st_name_cmp(const void *a, const void *b)
{
    return strcmp(((const struct dsd_st_tensor *)a)->name,
                  ((const struct dsd_st_tensor *)b)->name);
}

/* Sorts by name, rejects names seen twice, sums the bytes. */
static int st_finish(struct dsd_st_set *set, struct dsd_err *err)
{
    if (set->n_tensors > 1) /* tensors is NULL in a set without any */
        qsort(set->tensors, set->n_tensors, sizeof *set->tensors, st_name_cmp);
    set->total_bytes = 0;
    for (size_t i = 0; i < set->n_tensors; i++) {
        if (i > 0 && strcmp(set->tensors[i - 1].name, set->tensors[i].name) == 0) {
            struct st_quoted q;
            return dsd_errf(err, -EINVAL,
                            "tensor %s appears twice: in %s and in %s (expected each name once "
                            "in the whole checkpoint)", st_quote(&q, set->tensors[i].name),
                            set->files[set->tensors[i - 1].file_index].path,
                            set->files[set->tensors[i].file_index].path);
        }
        set->total_bytes += set->tensors[i].nbytes;
    }
    return 0;
}

static int st_open_paths(const char *const *paths, int n_paths, const char *named_by,
                         struct dsd_st_set **out, struct dsd_err *err)
{
    *out = NULL;
    if (n_paths < 1 || !paths)
        return dsd_errf(err, -EINVAL, "no safetensors files given");
    struct dsd_st_set *set = st_set_new(n_paths);
    if (!set)
        return dsd_errf(err, -ENOMEM, "out of memory");
    int rc = 0;
    for (int i = 0; i < n_paths && rc == 0; i++) {
        uint8_t *head;
        rc = st_map_file(set, i, paths[i], named_by, &head, err);
        if (rc == 0)
            rc = st_parse_file(set, i, head, err);
        free(head);
    }
    if (rc == 0)
        rc = st_finish(set, err);
    if (rc < 0) {
        dsd_st_close(set);
        return rc;
    }
    *out = set;
    return 0;
}

int dsd_st_open_files(const char *const *paths, int n_paths, struct dsd_st_set **out,
                      struct dsd_err *err)
{
    return st_open_paths(paths, n_paths, NULL, out, err);
}

int dsd_st_open_image(const char *label, const void *image, size_t size,
                      struct dsd_st_set **out, struct dsd_err *err)
{
    *out = NULL;
    struct dsd_st_set *set = st_set_new(1);
    if (!set || !(set->files[0].path = strdup(label ? label : "(memory)"))) {
        dsd_st_close(set);
        return dsd_errf(err, -ENOMEM, "out of memory");
    }
    set->files[0].image = image;
    set->files[0].size = size;
    int rc = st_parse_file(set, 0, image, err);
    if (rc == 0)
        rc = st_finish(set, err);
    if (rc < 0) {
        dsd_st_close(set);
        return rc;
    }
    *out = set;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Sharded checkpoints: model.safetensors.index.json                                    */

const char *dsd_st_shard_name_problem(const char *name)
{
    if (!name[0])
        return "it is empty";
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strchr(name, '/'))
        return "it must be a file name inside the model directory, without '/'";
    if (strlen(name) > 255)
        return "it is longer than 255 bytes";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return "it contains control characters";
    return NULL;
}

static int st_read_file(const char *path, size_t max, char **out, size_t *len,
                        struct dsd_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return dsd_errf(err, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    if (fstat(fd, &st) < 0) {
        rc = dsd_errf(err, -errno, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = dsd_errf(err, -EINVAL, "%s: not a regular file", path);
    } else if ((uint64_t)st.st_size > max) {
        rc = dsd_errf(err, -EINVAL, "%s: %lld bytes, more than the %zu-byte limit", path,
                      (long long)st.st_size, max);
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        rc = dsd_errf(err, -ENOMEM, "%s: out of memory", path);
    } else {
        size_t got = 0, want = (size_t)st.st_size;
        while (got < want) {
            ssize_t r = read(fd, buf + got, want - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                rc = dsd_errf(err, -errno, "%s: read failed: %s", path, strerror(errno));
                break;
            }
            if (r == 0)
                break; /* shrank while reading: parse what is there */
            got += (size_t)r;
        }
        *len = got;
    }
    close(fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

static int st_cstr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks that the index and the shards agree, both ways. */
static int st_check_index(const struct dsd_st_set *set, const char *index_path,
                          const json_t *wm, struct dsd_err *err)
{
    struct st_quoted q, qs;
    for (size_t i = 0; i < set->n_tensors; i++) {
        const struct dsd_st_tensor *t = &set->tensors[i];
        const char *path = set->files[t->file_index].path;
        const json_t *v = json_object_get(wm, t->name);
        if (!v)
            return dsd_errf(err, -EINVAL,
                            "%s: tensor %s is in this shard but not in %s (expected the index "
                            "to list every tensor)", path, st_quote(&q, t->name), index_path);
        if (strcmp(json_string_value(v), st_basename(path)) != 0)
            return dsd_errf(err, -EINVAL,
                            "%s: tensor %s is in shard %s, but the index says %s", index_path,
                            st_quote(&q, t->name), st_basename(path),
                            st_quote(&qs, json_string_value(v)));
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)wm, key, v) {
        if (!dsd_st_find(set, key))
            return dsd_errf(err, -EINVAL,
                            "%s: lists tensor %s in shard %s, but that shard has no such tensor",
                            index_path, st_quote(&q, key), st_quote(&qs, json_string_value(v)));
    }
    return 0;
}

static int st_open_indexed(const char *dir, const char *index_path, struct dsd_st_set **out,
                           struct dsd_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = st_read_file(index_path, DSD_ST_MAX_INDEX_BYTES, &text, &len, err);
    if (rc < 0)
        return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    free(text);
    if (!root)
        return dsd_errf(err, -EINVAL, "%s: not valid JSON: %s (line %d, column %d)", index_path,
                        st_json_error_text(&jerr), jerr.line, jerr.column);

    const char **shards = NULL;
    char **paths = NULL;
    size_t n_shards = 0;
    struct st_quoted q, qs;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(root)) {
        rc = dsd_errf(err, -EINVAL,
                      "%s: the index is %s, expected a JSON object with \"weight_map\"",
                      index_path, st_json_type(root));
        goto out;
    }
    if (!wm) {
        rc = dsd_errf(err, -EINVAL,
                      "%s: \"weight_map\" is missing (expected an object mapping each tensor "
                      "name to its shard file)", index_path);
        goto out;
    }
    if (!json_is_object(wm)) {
        rc = dsd_errf(err, -EINVAL,
                      "%s: \"weight_map\" is %s, expected an object mapping each tensor name "
                      "to its shard file", index_path, st_json_type(wm));
        goto out;
    }
    if (json_object_size(wm) == 0) {
        rc = dsd_errf(err, -EINVAL, "%s: \"weight_map\" is empty (expected at least one tensor)",
                      index_path);
        goto out;
    }
    /* "metadata" (total_size) is deliberately not checked: see docs/SAFETENSORS.md. */

    size_t n = json_object_size(wm);
    if (!(shards = malloc(n * sizeof *shards))) {
        rc = dsd_errf(err, -ENOMEM, "%s: out of memory", index_path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            rc = dsd_errf(err, -EINVAL,
                          "%s: weight_map entry for tensor %s is %s, expected a shard file name",
                          index_path, st_quote(&q, key), st_json_type(v));
            goto out;
        }
        const char *problem = dsd_st_shard_name_problem(json_string_value(v));
        if (problem) {
            rc = dsd_errf(err, -EINVAL, "%s: tensor %s: bad shard file name %s: %s", index_path,
                          st_quote(&q, key), st_quote(&qs, json_string_value(v)), problem);
            goto out;
        }
        shards[n_shards++] = json_string_value(v);
    }
    qsort(shards, n_shards, sizeof *shards, st_cstr_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0)
            shards[u++] = shards[i];
    n_shards = u;
    if (n_shards > INT32_MAX || !(paths = calloc(n_shards, sizeof *paths))) {
        rc = dsd_errf(err, -ENOMEM, "%s: out of memory", index_path);
        goto out;
    }
    for (size_t i = 0; i < n_shards; i++) {
        if (!(paths[i] = st_join(dir, shards[i]))) {
            rc = dsd_errf(err, -ENOMEM, "%s: out of memory", index_path);
            goto out;
        }
    }
    struct dsd_st_set *set;
    rc = st_open_paths((const char *const *)paths, (int)n_shards, DSD_ST_INDEX_NAME, &set, err);
    if (rc < 0)
        goto out;
    if ((rc = st_check_index(set, index_path, wm, err)) < 0) {
        dsd_st_close(set);
        goto out;
    }
    *out = set;
out:
    if (paths)
        for (size_t i = 0; i < n_shards; i++)
            free(paths[i]);
    free(paths);
    free(shards);
    json_decref(root);
    return rc;
}

int dsd_st_open_dir(const char *dir, struct dsd_st_set **out, struct dsd_err *err)
{
    *out = NULL;
    char *index_path = st_join(dir, DSD_ST_INDEX_NAME);
    char *single_path = st_join(dir, DSD_ST_SINGLE_NAME);
    int rc;
    struct stat st;
    if (!index_path || !single_path) {
        rc = dsd_errf(err, -ENOMEM, "out of memory");
    } else if (stat(index_path, &st) == 0) {
        rc = st_open_indexed(dir, index_path, out, err);
    } else if (errno != ENOENT) {
        rc = dsd_errf(err, -errno, "%s: %s", index_path, strerror(errno));
    } else if (stat(single_path, &st) == 0) {
        rc = dsd_st_open_files((const char *const *)&single_path, 1, out, err);
    } else if (errno != ENOENT) {
        rc = dsd_errf(err, -errno, "%s: %s", single_path, strerror(errno));
    } else if (stat(dir, &st) < 0) {
        rc = dsd_errf(err, -errno, "%s: %s (expected a model directory)", dir, strerror(errno));
    } else {
        rc = dsd_errf(err, -ENOENT,
                      "%s: has neither %s nor %s (expected a Hugging Face model directory)", dir,
                      DSD_ST_INDEX_NAME, DSD_ST_SINGLE_NAME);
    }
    free(index_path);
    free(single_path);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Queries                                                                              */

static int st_key_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct dsd_st_tensor *)elem)->name);
}

const struct dsd_st_tensor *dsd_st_find(const struct dsd_st_set *set, const char *name)
{
    if (!set || !name || set->n_tensors == 0)
        return NULL;
    return bsearch(name, set->tensors, set->n_tensors, sizeof *set->tensors, st_key_cmp);
}

size_t dsd_st_count(const struct dsd_st_set *set)
{
    return set ? set->n_tensors : 0;
}

const struct dsd_st_tensor *dsd_st_at(const struct dsd_st_set *set, size_t i)
{
    return set && i < set->n_tensors ? &set->tensors[i] : NULL;
}

int dsd_st_file_count(const struct dsd_st_set *set)
{
    return set ? set->n_files : 0;
}

const char *dsd_st_file_path(const struct dsd_st_set *set, int file_index)
{
    return set && file_index >= 0 && file_index < set->n_files ? set->files[file_index].path
                                                               : NULL;
}

uint64_t dsd_st_total_bytes(const struct dsd_st_set *set)
{
    return set ? set->total_bytes : 0;
}

/* ------------------------------------------------------------------------------------ */
/* Prefault                                                                             */

/* Pages of all files are numbered one after another; each thread touches one slice. */
struct st_prefault_job {
    const struct dsd_st_set *set;
    uint64_t first, last; /* global page numbers, [first, last) */
    size_t page;
    uint64_t sink;        /* keeps the reads from being optimized away */
};

static void *st_prefault_run(void *arg)
{
    struct st_prefault_job *job = arg;
    uint64_t base = 0, sum = 0;
    for (int fi = 0; fi < job->set->n_files; fi++) {
        const struct st_file *f = &job->set->files[fi];
        uint64_t pages = (f->size + job->page - 1) / job->page;
        if (job->last <= base)
            break;
        uint64_t lo = job->first > base ? job->first - base : 0;
        uint64_t hi = job->last - base < pages ? job->last - base : pages;
        for (uint64_t p = lo; p < hi; p++)
            sum += ((const volatile uint8_t *)f->image)[p * job->page];
        base += pages;
    }
    job->sink = sum;
    return NULL;
}

int dsd_st_prefault(const struct dsd_st_set *set, int n_threads, struct dsd_err *err)
{
    if (!set)
        return dsd_errf(err, -EINVAL, "prefault: no set");
    if (n_threads < 1 || n_threads > 1024)
        return dsd_errf(err, -EINVAL, "prefault: %d threads, expected 1 to 1024", n_threads);
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    uint64_t total = 0;
    for (int fi = 0; fi < set->n_files; fi++) {
        const struct st_file *f = &set->files[fi];
        /* Starts reading ahead in the background while the threads below fault pages in. */
        if (f->mapped && madvise((void *)f->image, f->size, MADV_WILLNEED) < 0)
            return dsd_errf(err, -errno, "%s: madvise(MADV_WILLNEED) failed: %s", f->path,
                            strerror(errno));
        total += (f->size + page - 1) / page;
    }
    if ((uint64_t)n_threads > total)
        n_threads = total > 0 ? (int)total : 1;

    struct st_prefault_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_threads, sizeof *tids);
    bool *started = calloc((size_t)n_threads, sizeof *started);
    if (!jobs || !tids || !started) {
        free(jobs);
        free(tids);
        free(started);
        return dsd_errf(err, -ENOMEM, "prefault: out of memory");
    }
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = (struct st_prefault_job){set, total * (uint64_t)i / (uint64_t)n_threads,
                                           total * (uint64_t)(i + 1) / (uint64_t)n_threads,
                                           page, 0};
        /* Slice 0 runs on the calling thread; a slice whose thread cannot start does too. */
        if (i > 0 && pthread_create(&tids[i], NULL, st_prefault_run, &jobs[i]) == 0)
            started[i] = true;
    }
    for (int i = 0; i < n_threads; i++)
        if (!started[i])
            st_prefault_run(&jobs[i]);
    for (int i = 0; i < n_threads; i++)
        if (started[i])
            pthread_join(tids[i], NULL);
    free(jobs);
    free(tids);
    free(started);
    return 0;
}
