/*
 * daemon/util/dtype.h: element types of tensors, their names and sizes, shared by the
 * checkpoint reader and writer (daemon/model/safetensors*), the kernels (kernels/tensor.h) and
 * the tests.
 */
#ifndef DSD_UTIL_DTYPE_H
#define DSD_UTIL_DTYPE_H

#include <stddef.h>

/* Element types that may appear in a file. Only F8_E4M3, BF16, F16 and F32 are used by the
 * model; the others are recognized so errors can name them ("found I64"). */
enum dsd_dtype {
    DSD_DTYPE_F8_E4M3 = 0,
    DSD_DTYPE_BF16,
    DSD_DTYPE_F16,
    DSD_DTYPE_F32,
    DSD_DTYPE_F64,
    DSD_DTYPE_I8,
    DSD_DTYPE_U8,
    DSD_DTYPE_I16,
    DSD_DTYPE_I32,
    DSD_DTYPE_I64,
    DSD_DTYPE_BOOL,
    DSD_DTYPE_F8_E5M2,
    DSD_DTYPE_COUNT
};

/* "F8_E4M3", "BF16", ... (the safetensors spelling); "invalid dtype" when out of range. */
const char *dsd_dtype_name(enum dsd_dtype dt);
/* Size of one element in bytes; 0 when out of range. */
size_t dsd_dtype_size(enum dsd_dtype dt);
/* Parses a safetensors dtype string; returns 0 and sets *out, or -EINVAL. */
int dsd_dtype_parse(const char *s, enum dsd_dtype *out);
/* Rank of a dtype in the order the Python safetensors library lays out data: it sorts
 * tensors by this rank, descending, then by name, so that with an 8-aligned data section
 * every tensor is aligned to its element size. -1 when out of range. */
int dsd_dtype_safetensors_rank(enum dsd_dtype dt);

#endif
