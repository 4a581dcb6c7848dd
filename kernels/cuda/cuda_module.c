/* The CUDA backend as a loadable module (libdsd_backend_cuda.so): deepseekd and the tools
 * load it with dlopen only when backend = cuda is asked for, so a CPU-only install runs
 * without the CUDA runtime or cuBLASLt present (daemon/model/backend_load.c). It exports
 * one table; its version must match the loader's. */
#include "dsd_cuda.h"

DSD_CUDA_MODULE_EXPORT const struct dsd_cuda_module dsd_cuda_module = {
    .abi = DSD_CUDA_MODULE_ABI,
    .backend_new = dsd_backend_cuda_new,
    .device_name = dsd_backend_cuda_device_name,
    .weight_bytes = dsd_backend_cuda_weight_bytes,
    .fp8_gemm_ms = dsd_backend_cuda_fp8_gemm_ms,
    .set_engine = dsd_backend_cuda_set_engine,
};
