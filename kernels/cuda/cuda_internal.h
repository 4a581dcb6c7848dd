/* kernels/cuda/cuda_internal.h: launchers shared between the .cu and .c files of this folder. */
#ifndef DSD_CUDA_INTERNAL_H
#define DSD_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void dsd_cuda_launch_act_quant(cudaStream_t st, const float *x, int M, int rows, int K, bool ue8m0, uint8_t *xq,
                               float *xs);
void dsd_cuda_launch_transpose_bf16(cudaStream_t st, const void *in, float *out, int M, int N, int ld);

#ifdef __cplusplus
}
#endif

#endif
