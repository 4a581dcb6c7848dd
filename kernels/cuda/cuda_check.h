/* kernels/cuda/cuda_check.h: fail-fast checks for CUDA and cuBLASLt calls (file:line). */
#ifndef DSD_CUDA_CHECK_H
#define DSD_CUDA_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call)                                                                      \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "<2>deepseekd: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,        \
                    cudaGetErrorString(e_));                                                  \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

#define CUBLAS_CHECK(call)                                                                    \
    do {                                                                                      \
        cublasStatus_t s_ = (call);                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            fprintf(stderr, "<2>deepseekd: %s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__, \
                    #call, (int)s_);                                                          \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

#endif
