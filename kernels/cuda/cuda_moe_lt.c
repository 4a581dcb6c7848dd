/*
 * The MoE block's prefill experts (T > MOE_STREAM_MAX_T) and the dense MLP (T > MLP_STREAM_MAX_T),
 * through cuBLASLt's block-scaled FP8 GEMM in the operand assignment of docs/CUDA.md §2
 * (A = activations with VEC128 scales k-block-major [K/128][rows], B = the weight with
 * BLK128x128 scales, rows padded to cuda_scale_stride; TN; fp32 compute; bf16 output written
 * column-major [N][rows]). The layout kernels around the GEMMs (gather, SwiGLU + quantize,
 * scatter) are in cuda_moe.cu.
 *
 * The MoE path synchronizes the stream ONCE per call: it downloads the per-expert counts
 * and offsets the device sort produced, to size and address one GEMM per active expert.
 * This is the only host synchronization of the MoE ops, and it only happens for prefill
 * (a step with more than MOE_STREAM_MAX_T tokens; decode steps never take this path, so
 * they stay graph-capturable).
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_moe.h"

/* out (bf16, column-major [N][rows]) = W [N][K] . A [rows][K]^T with block scales. */
static void lt_gemm(struct cuda_backend *cb, void *out, const uint8_t *aq, const float *as, const uint8_t *w,
                    const float *ws, int rows, int N, int K)
{
    if (cb->status)
        return;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulMatrixScale_t sa = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                                sb = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    size_t wsb = cb->lt_workspace_bytes;
    if (!CUBLAS_OK(cb, cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &sa, sizeof sa)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &sb, sizeof sb)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &as, sizeof as)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &ws, sizeof ws)) ||
        !CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, (uint64_t)K, (uint64_t)rows, K)) ||
        !CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, (uint64_t)K, (uint64_t)N, K)) ||
        !CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, (uint64_t)rows, (uint64_t)N, rows)) ||
        !CUBLAS_OK(cb, cublasLtMatmulPreferenceCreate(&pref)) ||
        !CUBLAS_OK(cb, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                            sizeof wsb)))
        goto out;
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    if (!CUBLAS_OK(cb, cublasLtMatmulAlgoGetHeuristic(cb->lt, op, la, lb, lc, lc, pref, 1, &h, &found)))
        goto out;
    if (!found) {
        cuda_fail(cb, -ENOTSUP, "moe: cuBLASLt has no FP8 algorithm for M=%d N=%d K=%d", rows, N, K);
        goto out;
    }
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_OK(cb, cublasLtMatmul(cb->lt, op, &alpha, aq, la, w, lb, &beta, out, lc, out, lc, &h.algo,
                                 cb->lt_workspace, cb->lt_workspace_bytes, cb->stream));
out:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (lc)
        cublasLtMatrixLayoutDestroy(lc);
    if (op)
        cublasLtMatmulDescDestroy(op);
}

/* One SwiGLU FFN over m gathered pairs: y rows perm[i] (or i) <- down(silu(gate) * up). */
static void run_ffn(struct cuda_backend *cb, const struct moe_ffn_w *f, const int32_t *perm, int m, int Tk, int k,
                    const uint8_t *xq, const float *xs, int D, const struct moe_lt_bufs *b, void *y)
{
    const int rows = (m + 15) & ~15;
    if (rows > b->max_rows) {
        cuda_fail(cb, -EINVAL, "moe: %d pairs for one expert, buffers hold %d", m, b->max_rows);
        return;
    }
    cuda_moe_launch_gather(cb, b->aq, b->as, rows, xq, xs, D, perm, m, Tk, k);
    lt_gemm(cb, b->g, b->aq, b->as, f->w[0], f->s[0], rows, f->I, D);
    lt_gemm(cb, b->u, b->aq, b->as, f->w[1], f->s[1], rows, f->I, D);
    if (cb->status)
        return;
    cuda_moe_launch_swiglu_quant(cb, b->h, b->hq, b->hs, b->g, b->u, m, rows, f->I);
    lt_gemm(cb, b->yc, b->hq, b->hs, f->w[2], f->s[2], rows, D, f->I);
    if (cb->status)
        return;
    cuda_moe_launch_scatter(cb, y, b->yc, rows, D, perm, m);
}

void cuda_moe_lt_experts(struct cuda_backend *cb, const struct moe_sort *s, const struct moe_ffn_w *host_table,
                         int E, bool shared, int T, int k, const uint8_t *xq, const float *xs,
                         const struct moe_lt_bufs *b, void *y)
{
    const int D = (int)cb->base.dims.hidden_size;
    int32_t *h = malloc(((size_t)2 * E + 3) * sizeof *h);
    if (!h) {
        cuda_fail(cb, -ENOMEM, "moe: out of memory");
        return;
    }
    int32_t *cnt = h, *off = h + E + 1;
    /* the prefill path's one synchronization: the counts decide the GEMM shapes */
    if (!CU_OK(cb, cudaMemcpyAsync(cnt, s->cnt, ((size_t)E + 1) * sizeof *cnt, cudaMemcpyDeviceToHost, cb->stream)) ||
        !CU_OK(cb, cudaMemcpyAsync(off, s->off, ((size_t)E + 2) * sizeof *off, cudaMemcpyDeviceToHost, cb->stream)) ||
        !CU_OK(cb, cudaStreamSynchronize(cb->stream))) {
        free(h);
        return;
    }
    for (int e = 0; e <= E && !cb->status; e++) {
        if (e == E && !shared)
            break;
        if (cnt[e] <= 0)
            continue;
        run_ffn(cb, &host_table[e], s->perm + off[e], cnt[e], T * k, k, xq, xs, D, b, y);
    }
    free(h);
}

void cuda_moe_lt_mlp(struct cuda_backend *cb, void *out, const uint8_t *xq, const float *xs,
                     const struct moe_ffn_w *f, int T, const struct moe_lt_bufs *b)
{
    run_ffn(cb, f, NULL, T, 0, 1, xq, xs, (int)cb->base.dims.hidden_size, b, out);
}
