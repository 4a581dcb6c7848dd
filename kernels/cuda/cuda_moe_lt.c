/*
 * The MoE block's prefill experts (T > MOE_STREAM_MAX_T) and the dense MLP (T > MLP_STREAM_MAX_T),
 * through cuBLASLt's block-scaled FP8 GEMM in the operand assignment of docs/CUDA.md §2
 * (A = activations with VEC128 scales k-block-major [K/128][rows], B = the weight with
 * BLK128x128 scales, rows padded to cuda_scale_stride; TN; fp32 compute; bf16 output written
 * column-major [N][rows]). The layout kernels around the GEMMs (gather, SwiGLU + quantize,
 * scatter) are in cuda_moe.cu; the GEMM and its cached plans in cuda_linear.c.
 *
 * The MoE path synchronizes the stream ONCE per call: it downloads the per-expert counts
 * and offsets the device sort produced, to size and address one GEMM per active expert.
 * This is the only host synchronization of the MoE ops; the path is taken only when chosen
 * (moe_prefill = LANES or SERIAL) for a step of more than MOE_STREAM_MAX_T tokens.
 *
 * With moe_prefill = LANES (SERIAL keeps them on the main stream; the default, AUTO, takes
 * the grouped kernels of cuda_moe_grouped.cu instead of this file) the
 * experts run on the backend's CUDA_SIDE_STREAMS side streams, forked from and joined back to
 * the main stream inside the call. At a 16K-token chunk a routed expert gets ~500
 * rows, and its gate/up GEMM (N = 2048) is ~64 output tiles: half of an H100's SMs. Lanes
 * let several experts' GEMMs share the machine; each lane has its own buffers and its own
 * slice of the cuBLASLt workspace. Experts go longest first onto the least-loaded lane; an
 * expert with more rows than a lane's buffers (the shared one) runs in row chunks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_moe.h"

/* where one FFN runs: a stream, its buffers and its cuBLASLt workspace */
struct lane {
    cudaStream_t st;
    void *ws;
    size_t ws_bytes;
    const struct moe_lt_bufs *b;
    long long load;     /* rows given to it so far */
};

static void lane_gemm(struct cuda_backend *cb, const struct lane *ln, void *out, const uint8_t *aq, const float *as,
                      const uint8_t *w, const float *ws, int rows, int N, int K)
{
    if (cb->status)
        return;
    if (cuda_lt_fp8_gemm(cb, ln->st, ln->ws, ln->ws_bytes, out, false, aq, as, rows, w, ws, N, K) == 0)
        cuda_fail(cb, -ENOTSUP, "moe: cuBLASLt has no FP8 algorithm for M=%d N=%d K=%d", rows, N, K);
}

/* One SwiGLU FFN over m pairs: y rows perm[i] (perm NULL: row i) <- down(silu(gate) * up),
 * in chunks of the lane's buffer rows. */
static void run_ffn(struct cuda_backend *cb, const struct lane *ln, const struct moe_ffn_w *f, const int32_t *perm,
                    int m, int Tk, int k, const uint8_t *xq, const float *xs, int D, void *y)
{
    const struct moe_lt_bufs *b = ln->b;
    for (int c0 = 0; c0 < m && !cb->status; c0 += b->max_rows) {
        const int mc = m - c0 < b->max_rows ? m - c0 : b->max_rows, rows = (mc + 15) & ~15;
        /* without perm, pair i is token i: the chunk starts at token c0 */
        const uint8_t *cxq = perm ? xq : xq + (size_t)c0 * D;
        const float *cxs = perm ? xs : xs + (size_t)c0 * (D / 128);
        void *cy = perm ? y : (uint8_t *)y + (size_t)c0 * D * 2;
        const int32_t *cperm = perm ? perm + c0 : NULL;
        cuda_moe_launch_gather(cb, ln->st, b->aq, b->as, rows, cxq, cxs, D, cperm, mc, Tk, k);
        lane_gemm(cb, ln, b->g, b->aq, b->as, f->w[0], f->s[0], rows, f->I, D);
        lane_gemm(cb, ln, b->u, b->aq, b->as, f->w[1], f->s[1], rows, f->I, D);
        if (cb->status)
            return;
        cuda_moe_launch_swiglu_quant(cb, ln->st, b->h, b->hq, b->hs, b->g, b->u, mc, rows, f->I);
        lane_gemm(cb, ln, b->yc, b->hq, b->hs, f->w[2], f->s[2], rows, D, f->I);
        if (cb->status)
            return;
        cuda_moe_launch_scatter(cb, ln->st, cy, b->yc, rows, D, cperm, mc);
    }
}

struct job {
    int rows, e;
};

static int by_rows_desc(const void *a, const void *b)
{
    const struct job *x = a, *y = b;
    if (x->rows != y->rows)
        return x->rows > y->rows ? -1 : 1;
    return x->e - y->e;
}

void cuda_moe_lt_experts(struct cuda_backend *cb, const struct moe_sort *s, const struct moe_ffn_w *host_table,
                         int E, bool shared, int T, int k, const uint8_t *xq, const float *xs,
                         const struct moe_lt_bufs *b, void *y)
{
    const int D = (int)cb->base.dims.hidden_size;
    /* one host allocation: the experts' order, then the counts and offsets */
    struct job *order = malloc(((size_t)E + 1) * sizeof *order + ((size_t)2 * E + 3) * sizeof(int32_t));
    if (!order) {
        cuda_fail(cb, -ENOMEM, "moe: out of memory");
        return;
    }
    int32_t *cnt = (int32_t *)(order + E + 1), *off = cnt + E + 1;
    /* the prefill path's one synchronization: the counts decide the GEMM shapes */
    if (!CU_OK(cb, cudaMemcpyAsync(cnt, s->cnt, ((size_t)E + 1) * sizeof *cnt, cudaMemcpyDeviceToHost, cb->stream)) ||
        !CU_OK(cb, cudaMemcpyAsync(off, s->off, ((size_t)E + 2) * sizeof *off, cudaMemcpyDeviceToHost, cb->stream)) ||
        !CU_OK(cb, cudaStreamSynchronize(cb->stream))) {
        free(order);
        return;
    }
    int n = 0;
    for (int e = 0; e < E + (shared ? 1 : 0); e++)
        if (cnt[e] > 0)
            order[n++] = (struct job){ .rows = cnt[e], .e = e };
    qsort(order, (size_t)n, sizeof *order, by_rows_desc);

    /* LANES: the side streams, each with a quarter of the workspace; SERIAL (the default until
     * LANES has run on a GPU): one lane on the main stream with all of it */
    const int n_lanes = cuda_moe_lt_lanes(cb);
    struct lane lanes[CUDA_SIDE_STREAMS];
    const size_t slice = n_lanes > 1 ? cb->lt_workspace_bytes / CUDA_SIDE_STREAMS & ~(size_t)255 : cb->lt_workspace_bytes;
    for (int i = 0; i < n_lanes; i++)
        lanes[i] = (struct lane){ .st = n_lanes > 1 ? cb->side[i] : cb->stream,
                                  .ws = (uint8_t *)cb->lt_workspace + i * slice, .ws_bytes = slice, .b = &b[i],
                                  .load = 0 };
    /* fork: every lane starts after what the main stream holds so far */
    bool forked = n_lanes == 1 || CU_OK(cb, cudaEventRecord(cb->side_fork, cb->stream));
    for (int i = 0; n_lanes > 1 && forked && i < n_lanes; i++)
        forked = CU_OK(cb, cudaStreamWaitEvent(cb->side[i], cb->side_fork, 0));
    for (int j = 0; forked && j < n && !cb->status; j++) {
        struct lane *ln = &lanes[0];
        for (int i = 1; i < n_lanes; i++)
            if (lanes[i].load < ln->load)
                ln = &lanes[i];
        const int e = order[j].e;
        ln->load += (cnt[e] + 15) & ~15;
        run_ffn(cb, ln, &host_table[e], s->perm + off[e], cnt[e], T * k, k, xq, xs, D, y);
    }
    /* join, whatever happened: the main stream waits for all that was enqueued */
    for (int i = 0; n_lanes > 1 && forked && i < n_lanes; i++)
        if (CU_OK(cb, cudaEventRecord(cb->side_join[i], cb->side[i])))
            CU_OK(cb, cudaStreamWaitEvent(cb->stream, cb->side_join[i], 0));
    free(order);
}

void cuda_moe_lt_mlp(struct cuda_backend *cb, void *out, const uint8_t *xq, const float *xs,
                     const struct moe_ffn_w *f, int T, const struct moe_lt_bufs *b)
{
    const struct lane ln = { .st = cb->stream, .ws = cb->lt_workspace, .ws_bytes = cb->lt_workspace_bytes, .b = b };
    run_ffn(cb, &ln, f, NULL, T, 0, 1, xq, xs, (int)cb->base.dims.hidden_size, out);
}
