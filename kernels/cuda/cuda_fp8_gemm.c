/*
 * The CUDA context and the block-scaled FP8 linear through cuBLASLt.
 *
 * Operand assignment measured on the GPU host (docs/CUDA.md §2): A = activations with
 * VEC128 scales laid out k-block-major [K/128][M], B = weights with BLK128x128 scales in the
 * checkpoint's own [N/128][K/128] order, TN, fp32 compute, bf16 output. cuBLASLt then writes
 * D column-major M x N, i.e. [N][M]; a transpose kernel turns it into our row-major [M][N].
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"
#include "dsd_cuda.h"
#include "cuda_internal.h"

#define WORKSPACE_BYTES DSD_CUDA_GEMM_WORKSPACE_BYTES

struct dsd_cuda {
    int device;
    char name[256];
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;
    void *d_tmp;                /* bf16 GEMM output before the transpose */
    size_t d_tmp_bytes;
    cudaEvent_t ev0, ev1;
};

int dsd_cuda_open(int device, struct dsd_cuda **out, struct dsd_err *err)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
        return dsd_errf(err, -ENODEV, "no CUDA device is visible");
    if (device < 0 || device >= n)
        return dsd_errf(err, -ENODEV, "CUDA device %d does not exist (%d visible)", device, n);
    struct dsd_cuda *cu = calloc(1, sizeof *cu);
    if (!cu)
        return dsd_errf(err, -ENOMEM, "out of memory");
    cu->device = device;
    CUDA_CHECK(cudaSetDevice(device));
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    snprintf(cu->name, sizeof cu->name, "%s (sm_%d%d, %.0f GiB)", prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / (1 << 30));
    if (prop.major < 9) {
        free(cu);
        return dsd_errf(err, -ENOTSUP, "%s: FP8 block-scaled GEMMs need sm_90 or newer", prop.name);
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&cu->lt));
    CUDA_CHECK(cudaMalloc(&cu->workspace, WORKSPACE_BYTES));
    CUDA_CHECK(cudaEventCreate(&cu->ev0));
    CUDA_CHECK(cudaEventCreate(&cu->ev1));
    *out = cu;
    return 0;
}

void dsd_cuda_close(struct dsd_cuda *cu)
{
    if (!cu)
        return;
    cudaFree(cu->d_tmp);
    cudaFree(cu->workspace);
    cublasLtDestroy(cu->lt);
    cudaEventDestroy(cu->ev0);
    cudaEventDestroy(cu->ev1);
    cudaStreamDestroy(cu->stream);
    free(cu);
}

const char *dsd_cuda_device_name(const struct dsd_cuda *cu)
{
    return cu->name;
}

void *dsd_cuda_alloc(struct dsd_cuda *cu, size_t bytes)
{
    (void)cu;
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess)
        return NULL;
    return p;
}

void dsd_cuda_free(struct dsd_cuda *cu, void *p)
{
    (void)cu;
    cudaFree(p);
}

void dsd_cuda_upload(struct dsd_cuda *cu, void *dst, const void *src, size_t bytes)
{
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu->stream));
}

void dsd_cuda_download(struct dsd_cuda *cu, void *dst, const void *src, size_t bytes)
{
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu->stream));
    CUDA_CHECK(cudaStreamSynchronize(cu->stream));
}

void dsd_cuda_sync(struct dsd_cuda *cu)
{
    CUDA_CHECK(cudaStreamSynchronize(cu->stream));
}

void dsd_cuda_act_quant(struct dsd_cuda *cu, const float *x, int M, int K, bool ue8m0, uint8_t *xq, float *xs)
{
    dsd_cuda_launch_act_quant(cu->stream, x, M, dsd_cuda_fp8_rows(M), K, ue8m0, xq, xs);
}

static void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v, size_t n)
{
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, v, n));
}

int dsd_cuda_fp8_linear(struct dsd_cuda *cu, float *y, const uint8_t *xq, const float *xs, const uint8_t *w,
                        const float *ws, int M, int N, int K, struct dsd_err *err)
{
    if (K % 128 || N % 16 || M < 1)
        return dsd_errf(err, -EINVAL, "fp8 linear: unsupported shape M=%d N=%d K=%d (K %% 128, N %% 16)", M, N, K);
    const int rows = dsd_cuda_fp8_rows(M);
    size_t tmp = (size_t)rows * N * 2;
    if (tmp > cu->d_tmp_bytes) {
        cudaFree(cu->d_tmp);
        CUDA_CHECK(cudaMalloc(&cu->d_tmp, tmp));
        cu->d_tmp_bytes = tmp;
    }
    cublasLtMatmulDesc_t op;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    set_attr(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    set_attr(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulMatrixScale_t sa = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                                sb = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    set_attr(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &sa, sizeof sa);
    set_attr(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &sb, sizeof sb);
    set_attr(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &xs, sizeof xs);
    set_attr(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &ws, sizeof ws);
    cublasLtMatrixLayout_t la, lb, lc;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, rows, K));  /* x: K x rows col-major */
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, N, K));     /* w: K x N col-major */
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, rows, N, rows));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t wsb = WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cu->lt, op, la, lb, lc, lc, pref, 1, &h, &found);
    int rc = 0;
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        rc = dsd_errf(err, -ENOTSUP, "fp8 linear: cuBLASLt has no algorithm for M=%d N=%d K=%d (status %d)", M, N, K,
                      (int)st);
    } else {
        const float alpha = 1.0f, beta = 0.0f;
        CUBLAS_CHECK(cublasLtMatmul(cu->lt, op, &alpha, xq, la, w, lb, &beta, cu->d_tmp, lc, cu->d_tmp, lc, &h.algo,
                                    cu->workspace, WORKSPACE_BYTES, cu->stream));
        dsd_cuda_launch_transpose_bf16(cu->stream, cu->d_tmp, y, M, N, rows);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    return rc;
}

void dsd_cuda_timer_start(struct dsd_cuda *cu)
{
    CUDA_CHECK(cudaEventRecord(cu->ev0, cu->stream));
}

float dsd_cuda_timer_stop(struct dsd_cuda *cu)
{
    float ms = 0;
    CUDA_CHECK(cudaEventRecord(cu->ev1, cu->stream));
    CUDA_CHECK(cudaEventSynchronize(cu->ev1));
    CUDA_CHECK(cudaEventElapsedTime(&ms, cu->ev0, cu->ev1));
    return ms;
}
