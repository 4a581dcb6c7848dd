/* Element types: names, sizes, the safetensors order (contract in dtype.h). */
#include "dtype.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    int layout_rank; /* position in the Python library's Dtype enum (increasing alignment) */
} dtype_info[DSD_DTYPE_COUNT] = {
    [DSD_DTYPE_BOOL] = {"BOOL", 1, 0},     [DSD_DTYPE_U8] = {"U8", 1, 1},
    [DSD_DTYPE_I8] = {"I8", 1, 2},         [DSD_DTYPE_F8_E5M2] = {"F8_E5M2", 1, 3},
    [DSD_DTYPE_F8_E4M3] = {"F8_E4M3", 1, 4}, [DSD_DTYPE_I16] = {"I16", 2, 5},
    [DSD_DTYPE_F16] = {"F16", 2, 7},       [DSD_DTYPE_BF16] = {"BF16", 2, 8},
    [DSD_DTYPE_I32] = {"I32", 4, 9},       [DSD_DTYPE_F32] = {"F32", 4, 11},
    [DSD_DTYPE_F64] = {"F64", 8, 12},      [DSD_DTYPE_I64] = {"I64", 8, 13},
};

const char *dsd_dtype_name(enum dsd_dtype dt)
{
    return (unsigned)dt < DSD_DTYPE_COUNT ? dtype_info[dt].name : "invalid dtype";
}

size_t dsd_dtype_size(enum dsd_dtype dt)
{
    return (unsigned)dt < DSD_DTYPE_COUNT ? dtype_info[dt].size : 0;
}

int dsd_dtype_safetensors_rank(enum dsd_dtype dt)
{
    return (unsigned)dt < DSD_DTYPE_COUNT ? dtype_info[dt].layout_rank : -1;
}

int dsd_dtype_parse(const char *s, enum dsd_dtype *out)
{
    for (int i = 0; s && i < DSD_DTYPE_COUNT; i++) {
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (enum dsd_dtype)i;
            return 0;
        }
    }
    return -EINVAL;
}
