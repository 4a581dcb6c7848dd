/* .npy version 1.0 reading and writing (float32 only). */
#include "npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_LEN 128  /* magic(6) + version(2) + len(2) + dict padded: enough for any 2-D shape */

struct dsd_npy_writer {
    FILE *f;
    char *path;
    int64_t cols, rows;
};

static int write_header(FILE *f, int64_t rows, int64_t cols)
{
    char dict[HEADER_LEN];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%" PRId64 ", %" PRId64 "), }",
                     rows, cols);
    int body = HEADER_LEN - 10;
    if (n >= body)
        return -EOVERFLOW;
    memset(dict + n, ' ', (size_t)(body - n - 1));
    dict[body - 1] = '\n';
    unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(body & 0xff),
                              (unsigned char)(body >> 8) };
    if (fseek(f, 0, SEEK_SET) != 0 || fwrite(pre, 1, 10, f) != 10 || fwrite(dict, 1, (size_t)body, f) != (size_t)body)
        return -EIO;
    return 0;
}

int dsd_npy_writer_open(const char *path, int64_t cols, struct dsd_npy_writer **out, struct dsd_err *err)
{
    struct dsd_npy_writer *w = calloc(1, sizeof *w);
    if (!w)
        return dsd_errf(err, -ENOMEM, "%s: out of memory", path);
    w->f = fopen(path, "wb");
    if (!w->f) {
        int e = errno;
        free(w);
        return dsd_errf(err, -e, "%s: cannot create: %s", path, strerror(e));
    }
    w->cols = cols;
    if (write_header(w->f, 0, cols)) {
        fclose(w->f);
        free(w);
        return dsd_errf(err, -EIO, "%s: write error", path);
    }
    w->path = strdup(path);
    *out = w;
    return 0;
}

int dsd_npy_writer_rows(struct dsd_npy_writer *w, const float *rows, int64_t n, struct dsd_err *err)
{
    size_t cnt = (size_t)(n * w->cols);
    if (fwrite(rows, sizeof(float), cnt, w->f) != cnt)
        return dsd_errf(err, -EIO, "%s: write error", w->path ? w->path : "npy");
    w->rows += n;
    return 0;
}

int dsd_npy_writer_close(struct dsd_npy_writer *w, struct dsd_err *err)
{
    int rc = write_header(w->f, w->rows, w->cols);
    if (fclose(w->f) != 0)
        rc = -EIO;
    if (rc)
        dsd_errf(err, rc, "%s: write error", w->path ? w->path : "npy");
    free(w->path);
    free(w);
    return rc;
}

int dsd_npy_read_f32(const char *path, float **data, int64_t *rows, int64_t *cols, struct dsd_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return dsd_errf(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    unsigned char pre[10];
    int rc = -EINVAL;
    char dict[4096];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] != 1) {
        dsd_errf(err, rc, "%s: not a version 1 .npy file", path);
        goto out;
    }
    size_t hl = (size_t)pre[8] | (size_t)pre[9] << 8;
    if (hl >= sizeof dict || fread(dict, 1, hl, f) != hl) {
        dsd_errf(err, rc, "%s: truncated .npy header", path);
        goto out;
    }
    dict[hl] = 0;
    if (!strstr(dict, "'descr': '<f4'") || !strstr(dict, "'fortran_order': False")) {
        dsd_errf(err, rc, "%s: expected little-endian float32 in C order", path);
        goto out;
    }
    const char *sh = strstr(dict, "'shape': (");
    long long r = 0, c = 1;
    if (!sh || (sscanf(sh, "'shape': (%lld, %lld)", &r, &c) != 2 && sscanf(sh, "'shape': (%lld,)", &r) != 1) || r < 0 ||
        c < 0) {
        dsd_errf(err, rc, "%s: expected a 1-D or 2-D shape", path);
        goto out;
    }
    size_t n = (size_t)r * (size_t)c;
    *data = malloc(n ? n * sizeof(float) : 1);
    if (!*data) {
        rc = dsd_errf(err, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (fread(*data, sizeof(float), n, f) != n) {
        free(*data);
        *data = NULL;
        dsd_errf(err, rc, "%s: truncated data (%zu floats expected)", path, n);
        goto out;
    }
    *rows = r;
    *cols = c;
    rc = 0;
out:
    fclose(f);
    return rc;
}
