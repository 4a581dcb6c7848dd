/*
 * daemon/util/dtype.h: element types of tensors, shared by the checkpoint reader
 * (daemon/model/safetensors.h names and sizes them) and the kernels (kernels/tensor.h).
 */
#ifndef DSD_UTIL_DTYPE_H
#define DSD_UTIL_DTYPE_H

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

#endif
