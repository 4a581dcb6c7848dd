/*
 * daemon/util/npy.h: float32 2-D arrays in NumPy's .npy format (version 1.0), so dumps from
 * deepseekd-run and the golden reference data are read by numpy/torch and by our tests alike.
 *
 *   struct dsd_npy_writer *w;
 *   dsd_npy_writer_open("logits.npy", vocab, &w, &err);   // columns fixed, rows appended
 *   dsd_npy_writer_rows(w, rows, n, &err);
 *   dsd_npy_writer_close(w, &err);                          // header gets the final shape
 *
 *   float *data; int64_t rows, cols;
 *   dsd_npy_read_f32("golden.npy", &data, &rows, &cols, &err);  // '<f4', C order, 1-D or 2-D
 *
 * All functions return 0 or a negative errno with err set.
 */
#ifndef DSD_UTIL_NPY_H
#define DSD_UTIL_NPY_H

#include <stdint.h>

#include "err.h"

struct dsd_npy_writer;

int dsd_npy_writer_open(const char *path, int64_t cols, struct dsd_npy_writer **out, struct dsd_err *err);
int dsd_npy_writer_rows(struct dsd_npy_writer *w, const float *rows, int64_t n, struct dsd_err *err);
int dsd_npy_writer_close(struct dsd_npy_writer *w, struct dsd_err *err);

/* Reads a little-endian float32 array; a 1-D array reads as one row. *data is malloc'd. */
int dsd_npy_read_f32(const char *path, float **data, int64_t *rows, int64_t *cols, struct dsd_err *err);

#endif
