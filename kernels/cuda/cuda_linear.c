/*
 * Linear layers on the device (contract in ops.h), for every weight dtype prepare_weights
 * leaves on the GPU:
 *
 *  - FP8 e4m3 with 128x128 block scales (production): the bf16 input is quantized per 1x128
 *    group exactly like kernels/cpu/cpu_ref.c dsd_ref_act_quant (cuda_quant.cu), rows padded
 *    to a multiple of 16, then cuBLASLt's block-scaled FP8 GEMM in the operand assignment of
 *    docs/CUDA.md §2 (A = activations, VEC128 scales k-block-major; B = weights, BLK128x128
 *    scales [N/128][cuda_scale_stride]); cuBLASLt writes D column-major [N][rows], and a
 *    transpose kernel writes the row-major output with its stride (bf16 rounded, or f32).
 *    Shapes cuBLASLt refuses (N % 16, no algorithm) run a plain tiled kernel instead.
 *  - BF16: one cuBLASLt GEMM, fp32 accumulation, computed as out^T = W x^T so that D is the
 *    row-major output itself (ldo) and x is read in place (ldx): no copies.
 *  - F32 (the router): x widened to a compact f32 copy (exact), fp32 GEMM with
 *    CUBLAS_COMPUTE_32F (no TF32: the CPU multiplies in fp32), f32 out directly or through a
 *    compact f32 temporary rounded to bf16.
 *
 * cuBLASLt descriptors, layouts and the chosen algorithm are cached per shape (kind, M (FP8:
 * padded to 16), N, K, strides, output type, pointer alignment, workspace), so a decode step
 * asks the heuristic nothing after its first call: the heuristic and the descriptors cost
 * ~20-30 us of host time per call, which at prefill's ~770 expert GEMMs per MoE layer was
 * most of the layer. The cache is a hashed table of PLAN_SLOTS entries, PLAN_PROBE places
 * per key, the oldest of them replaced. Nothing here waits for the device; temporaries come
 * from cuda_scratch.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_internal.h"

#define PLAN_SLOTS 512
#define PLAN_PROBE 8

enum plan_kind { PLAN_FP8 = 1, PLAN_BF16, PLAN_F32 };

struct plan_key {
    int kind, M, N, K, ldx, ldo;
    int out_f32;
    int align;          /* min alignment (bytes) of the pointers and strides involved */
    int ws_kb;          /* workspace the algorithm may use, KiB */
};

struct plan {
    struct plan_key key;
    bool used, ok;      /* ok = cuBLASLt has an algorithm (else FP8 uses the plain kernel) */
    uint64_t stamp;     /* when it was built (replacement picks the oldest of a key's places) */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
};

struct cuda_linear_state {
    float *inv_freq;    /* device copy of dims.rope_inv_freq */
    struct plan plans[PLAN_SLOTS];
    uint64_t built;     /* plans built so far (the stamps) */
};

static void plan_destroy(struct plan *p)
{
    if (p->ld)
        cublasLtMatrixLayoutDestroy(p->ld);
    if (p->lb)
        cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la)
        cublasLtMatrixLayoutDestroy(p->la);
    if (p->op)
        cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

static int ptr_align(const void *p, int64_t ld_bytes)
{
    uintptr_t a = (uintptr_t)p | (uintptr_t)ld_bytes | 256;
    return (int)(a & -a);
}

/* Creates the descriptors and asks the heuristic once. Failures of the descriptor calls are
 * recorded (cuda_fail); "no algorithm" only leaves p->ok false. */
static bool plan_build(struct cuda_backend *cb, struct plan *p, const struct plan_key *k, const void *sa,
                       const void *sb)
{
    memset(p, 0, sizeof *p);
    p->key = *k;
    p->used = true;
    const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    const cudaDataType_t scale_t = CUDA_R_32F;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cudaDataType_t at, bt, dt = k->out_f32 ? CUDA_R_32F : CUDA_R_16BF;
    /* (rows, cols, ld) of the column-major A (K x m), B (K x n) and D (m x n) */
    int64_t a_rows = k->K, a_cols, a_ld = k->K, b_rows = k->K, b_cols, b_ld, d_rows, d_cols, d_ld;
    if (k->kind == PLAN_FP8) {
        /* A = activations [rows][K], B = weights [N][K], D = [N][rows] column-major rows x N */
        at = bt = CUDA_R_8F_E4M3;
        a_cols = k->M;
        b_cols = k->N;
        b_ld = k->K;
        d_rows = k->M;
        d_cols = k->N;
        d_ld = k->M;
    } else {
        /* A = weights [N][K], B = x [M][ldx], D = out [M][ldo] = column-major N x M */
        at = k->kind == PLAN_BF16 ? CUDA_R_16BF : CUDA_R_32F;
        bt = at;
        a_cols = k->N;
        b_cols = k->M;
        b_ld = k->ldx;
        d_rows = k->N;
        d_cols = k->M;
        d_ld = k->ldo;
    }
    if (!CUBLAS_OK(cb, cublasLtMatmulDescCreate(&p->op, compute, scale_t)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb)))
        return false;
    if (k->kind == PLAN_FP8) {
        cublasLtMatmulMatrixScale_t ma = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                                    mb = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
        if (!CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma, sizeof ma)) ||
            !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb, sizeof mb)) ||
            !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa)) ||
            !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb)))
            return false;
    }
    if (!CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&p->la, at, (uint64_t)a_rows, (uint64_t)a_cols, a_ld)) ||
        !CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&p->lb, bt, (uint64_t)b_rows, (uint64_t)b_cols, b_ld)) ||
        !CUBLAS_OK(cb, cublasLtMatrixLayoutCreate(&p->ld, dt, (uint64_t)d_rows, (uint64_t)d_cols, d_ld)))
        return false;
    cublasLtMatmulPreference_t pref;
    if (!CUBLAS_OK(cb, cublasLtMatmulPreferenceCreate(&pref)))
        return false;
    size_t wsb = (size_t)k->ws_kb << 10;
    uint32_t al = (uint32_t)k->align;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al);
    cublasLtMatmulHeuristicResult_t h[4];
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cb->lt, p->op, p->la, p->lb, p->ld, p->ld, pref, 4, h, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    for (int i = 0; st == CUBLAS_STATUS_SUCCESS && i < found; i++) {
        if (h[i].state == CUBLAS_STATUS_SUCCESS) {
            p->algo = h[i].algo;
            p->ok = true;
            break;
        }
    }
    return true;
}

static uint32_t plan_hash(const struct plan_key *k)
{
    /* FNV-1a over the key's ints */
    const int v[] = { k->kind, k->M, k->N, k->K, k->ldx, k->ldo, k->out_f32, k->align, k->ws_kb };
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        h = (h ^ (uint32_t)v[i]) * 16777619u;
    return h;
}

/* The cached plan for k, built on first use; NULL after recording a failure. */
static struct plan *plan_get(struct cuda_backend *cb, const struct plan_key *k, const void *sa, const void *sb)
{
    struct cuda_linear_state *s = cb->lin;
    const uint32_t h = plan_hash(k);
    struct plan *victim = NULL;
    for (int i = 0; i < PLAN_PROBE; i++) {
        struct plan *p = &s->plans[(h + (uint32_t)i) % PLAN_SLOTS];
        if (p->used && memcmp(&p->key, k, sizeof *k) == 0)
            return p;
        if (!victim || !p->used || (victim->used && p->stamp < victim->stamp))
            victim = p;
    }
    plan_destroy(victim);
    if (!plan_build(cb, victim, k, sa, sb)) {
        plan_destroy(victim);
        return NULL;
    }
    victim->stamp = ++s->built;
    return victim;
}

static size_t round256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

static void linear_fp8(struct cuda_backend *cb, void *out, int ldo, const void *x, int ldx,
                       const struct dsd_weight *w, int M, bool out_f32)
{
    const int N = (int)w->rows, K = (int)w->cols, rows = (M + 15) & ~15, KB = K / 128;
    if (K % 128) {
        cuda_fail(cb, -EINVAL, "linear %s: FP8 weights need in_features %% 128 == 0 (have %d)",
                  w->name ? w->name : "?", K);
        return;
    }
    if (!w->scale) {
        cuda_fail(cb, -EINVAL, "linear %s: FP8 weight without block scales", w->name ? w->name : "?");
        return;
    }
    /* small steps: the weight-streaming kernel (its d is the K splits' partial sums) */
    const bool stream = cb->linear_path == DSD_CUDA_LINEAR_STREAM ? M <= CUDA_LINEAR_STREAM_MAX_M
                        : cb->linear_path == DSD_CUDA_LINEAR_AUTO && M <= CUDA_LINEAR_STREAM_AUTO_M;
    const int ksplit = stream ? cuda_linear_stream_splits(M, N, K, cb->sms) : 1;
    const size_t q_bytes = round256((size_t)rows * K), s_bytes = round256((size_t)KB * rows * sizeof(float)),
                 d_bytes = stream ? round256((size_t)(ksplit > 1 ? ksplit : 0) * M * N * sizeof(float))
                                  : round256((size_t)rows * N * (out_f32 ? 4 : 2));
    uint8_t *scr = cuda_scratch(cb, q_bytes + s_bytes + d_bytes);
    if (!scr)
        return;
    uint8_t *xq = scr;
    float *xs = (float *)(scr + q_bytes);
    void *d = scr + q_bytes + s_bytes;
    if (!CU_OK(cb, cuda_launch_act_quant_bf16(cb->stream, x, ldx, M, rows, K, cb->base.dims.act_scale_ue8m0, xq, xs)))
        return;
    if (stream) {
        CU_OK(cb, cuda_launch_linear_stream(cb->stream, xq, xs, rows, w->data, w->scale, cuda_scale_stride(w), out,
                                            out_f32, ldo, M, N, K, ksplit, d));
        return;
    }
    const int r = N % 16 ? 0 : cuda_lt_fp8_gemm(cb, cb->stream, cb->lt_workspace, cb->lt_workspace_bytes, d, out_f32,
                                                 xq, xs, rows, w->data, w->scale, N, K);
    if (r > 0)
        CU_OK(cb, cuda_launch_transpose_out(cb->stream, d, out_f32, out, out_f32, M, N, rows, ldo));
    else if (r == 0)
        CU_OK(cb, cuda_launch_fp8_gemm_simt(cb->stream, xq, xs, rows, w->data, w->scale, cuda_scale_stride(w), out,
                                            out_f32, ldo, M, N, K));
}

int cuda_lt_fp8_gemm(struct cuda_backend *cb, cudaStream_t st, void *ws, size_t ws_bytes, void *d, bool d_f32,
                     const uint8_t *aq, const float *as, int rows, const uint8_t *w, const float *wscale, int N, int K)
{
    struct plan_key k = { .kind = PLAN_FP8, .M = rows, .N = N, .K = K, .out_f32 = d_f32, .align = 256,
                          .ws_kb = (int)(ws_bytes >> 10) };
    struct plan *p = plan_get(cb, &k, as, wscale);
    if (!p)
        return -1;
    if (!p->ok)
        return 0;
    const void *sa = as, *sb = wscale;
    const float alpha = 1.0f, beta = 0.0f;
    if (!CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa)) ||
        !CUBLAS_OK(cb, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb)) ||
        !CUBLAS_OK(cb, cublasLtMatmul(cb->lt, p->op, &alpha, aq, p->la, w, p->lb, &beta, d, p->ld, d, p->ld, &p->algo,
                                      ws, ws_bytes, st)))
        return -1;
    return 1;
}

static void linear_bf16(struct cuda_backend *cb, void *out, int ldo, const void *x, int ldx,
                        const struct dsd_weight *w, int M, bool out_f32)
{
    const int N = (int)w->rows, K = (int)w->cols;
    if (M <= CUDA_LINEAR_STREAM_MAX_M && cb->linear_path == DSD_CUDA_LINEAR_STREAM && K % 64 == 0 && ldx % 8 == 0 &&
        ptr_align(x, 16) >= 16 && ptr_align(w->data, 16) >= 16) {
        const int ksplit = cuda_linear_stream_splits(M, N, (int64_t)K * 2, cb->sms);
        float *part = ksplit > 1 ? cuda_scratch(cb, (size_t)ksplit * M * N * sizeof(float)) : NULL;
        if (ksplit == 1 || part)
            CU_OK(cb, cuda_launch_linear_stream_bf16(cb->stream, x, ldx, w->data, out, out_f32, ldo, M, N, K, ksplit,
                                                     part));
        return;
    }
    int al = ptr_align(x, (int64_t)ldx * 2), ao = ptr_align(out, (int64_t)ldo * (out_f32 ? 4 : 2)),
        aw = ptr_align(w->data, (int64_t)K * 2);
    struct plan_key k = { .kind = PLAN_BF16, .M = M, .N = N, .K = K, .ldx = ldx, .ldo = ldo, .out_f32 = out_f32,
                          .align = al < ao ? (al < aw ? al : aw) : (ao < aw ? ao : aw),
                          .ws_kb = (int)(cb->lt_workspace_bytes >> 10) };
    struct plan *p = plan_get(cb, &k, NULL, NULL);
    if (!p)
        return;
    if (!p->ok) {
        cuda_fail(cb, -ENOTSUP, "linear %s: cuBLASLt has no bf16 algorithm for M=%d N=%d K=%d ldx=%d ldo=%d",
                  w->name ? w->name : "?", M, N, K, ldx, ldo);
        return;
    }
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_OK(cb, cublasLtMatmul(cb->lt, p->op, &alpha, w->data, p->la, x, p->lb, &beta, out, p->ld, out, p->ld,
                                 &p->algo, cb->lt_workspace, cb->lt_workspace_bytes, cb->stream));
}

static void linear_f32(struct cuda_backend *cb, void *out, int ldo, const void *x, int ldx,
                       const struct dsd_weight *w, int M, bool out_f32)
{
    const int N = (int)w->rows, K = (int)w->cols;
    const size_t xb = round256((size_t)M * K * sizeof(float)), db = out_f32 ? 0 : round256((size_t)M * N * sizeof(float));
    uint8_t *scr = cuda_scratch(cb, xb + db);
    if (!scr)
        return;
    float *xf = (float *)scr;
    float *d = out_f32 ? (float *)out : (float *)(scr + xb);
    const int ldd = out_f32 ? ldo : N;
    if (!CU_OK(cb, cuda_launch_bf16_to_f32(cb->stream, x, ldx, M, K, xf)))
        return;
    int ao = ptr_align(d, (int64_t)ldd * 4), aw = ptr_align(w->data, (int64_t)K * 4);
    struct plan_key k = { .kind = PLAN_F32, .M = M, .N = N, .K = K, .ldx = K, .ldo = ldd, .out_f32 = 1,
                          .align = ao < aw ? ao : aw, .ws_kb = (int)(cb->lt_workspace_bytes >> 10) };
    struct plan *p = plan_get(cb, &k, NULL, NULL);
    if (!p)
        return;
    if (!p->ok) {
        cuda_fail(cb, -ENOTSUP, "linear %s: cuBLASLt has no fp32 algorithm for M=%d N=%d K=%d",
                  w->name ? w->name : "?", M, N, K);
        return;
    }
    const float alpha = 1.0f, beta = 0.0f;
    if (!CUBLAS_OK(cb, cublasLtMatmul(cb->lt, p->op, &alpha, w->data, p->la, xf, p->lb, &beta, d, p->ld, d, p->ld,
                                      &p->algo, cb->lt_workspace, cb->lt_workspace_bytes, cb->stream)))
        return;
    if (!out_f32)
        CU_OK(cb, cuda_launch_f32_rows_to_bf16(cb->stream, d, M, N, out, ldo));
}

void cuda_op_linear(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                    int T, unsigned flags)
{
    struct cuda_backend *cb = cuda(be);
    if (T <= 0)
        return;
    const bool out_f32 = (flags & DSD_LINEAR_F32_OUT) != 0;
    if (!w || !w->data || w->rows <= 0 || w->cols <= 0 || w->rows > INT32_MAX || w->cols > INT32_MAX ||
        ldx < w->cols || ldo < w->rows) {
        cuda_fail(cb, -EINVAL, "linear %s: bad shape (rows %lld, cols %lld, ldx %d, ldo %d)",
                  w && w->name ? w->name : "?", w ? (long long)w->rows : 0LL, w ? (long long)w->cols : 0LL, ldx, ldo);
        return;
    }
    cuda_use(cb);
    switch (w->dtype) {
    case DSD_DTYPE_F8_E4M3:
        linear_fp8(cb, out, ldo, x, ldx, w, T, out_f32);
        break;
    case DSD_DTYPE_BF16:
        linear_bf16(cb, out, ldo, x, ldx, w, T, out_f32);
        break;
    case DSD_DTYPE_F32:
        linear_f32(cb, out, ldo, x, ldx, w, T, out_f32);
        break;
    default:
        cuda_fail(cb, -EINVAL, "linear %s: weight dtype %d is not on the device (F16 is widened at prepare)",
                  w->name ? w->name : "?", (int)w->dtype);
    }
}

int dsd_backend_cuda_fp8_gemm_ms(struct dsd_backend *be, int M, int N, int K, int iters, double *ms,
                                 struct dsd_err *err)
{
    struct cuda_backend *cb = cuda(be);
    if (M < 16 || M % 16 || N < 16 || N % 16 || K < 128 || K % 128 || iters < 1)
        return dsd_errf(err, -EINVAL, "fp8 gemm: M %d, N %d (multiples of 16), K %d (of 128), %d calls", M, N, K,
                        iters);
    cuda_use(cb);
    struct dsd_weight w = { .dtype = DSD_DTYPE_F8_E4M3, .rows = N, .cols = K };
    const int64_t stride = cuda_scale_stride(&w), KB = K / 128, NB = (N + 127) / 128;
    const size_t a_b = round256((size_t)M * K), as_b = round256((size_t)KB * M * sizeof(float)),
                 b_b = round256((size_t)N * K), bs_b = round256((size_t)NB * stride * sizeof(float)),
                 d_b = round256((size_t)M * N * 2);
    uint8_t *buf = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int rc = 0;
    if (cudaMalloc((void **)&buf, a_b + as_b + b_b + bs_b + d_b) != cudaSuccess ||
        cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        (void)cudaGetLastError();
        rc = dsd_errf(err, -ENOMEM, "fp8 gemm: no device memory for M %d N %d K %d", M, N, K);
        goto out;
    }
    uint8_t *a = buf, *b = buf + a_b + as_b;
    float *as = (float *)(buf + a_b), *bs = (float *)(buf + a_b + as_b + b_b);
    void *d = buf + a_b + as_b + b_b + bs_b;
    /* random operands (never time on zeros): e4m3 over [-448, 448], scales 2^-9 */
    CU_OK(cb, cuda_launch_gen_fill(cb->stream, a, CUDA_GEN_FP8, (uint64_t)M * K, 0x5eed0001ull, 0.0f, 1.0f));
    CU_OK(cb, cuda_launch_gen_fill(cb->stream, b, CUDA_GEN_FP8, (uint64_t)N * K, 0x5eed0002ull, 0.0f, 1.0f));
    CU_OK(cb, cuda_launch_gen_scales(cb->stream, as, KB, M, M, 1.0f / 512));
    CU_OK(cb, cuda_launch_gen_scales(cb->stream, bs, NB, KB, stride, 1.0f / 512));
    for (int i = 0; i < iters + 3 && !cb->status; i++) {
        if (i == 3)
            CU_OK(cb, cudaEventRecord(e0, cb->stream));
        if (cuda_lt_fp8_gemm(cb, cb->stream, cb->lt_workspace, cb->lt_workspace_bytes, d, false, a, as, M, b, bs, N,
                             K) == 0) {
            rc = dsd_errf(err, -ENOTSUP, "fp8 gemm: cuBLASLt has no block-scaled algorithm for M %d N %d K %d", M, N,
                          K);
            goto out;
        }
    }
    CU_OK(cb, cudaEventRecord(e1, cb->stream));
    CU_OK(cb, cudaStreamSynchronize(cb->stream));
    float t = 0.0f;
    if (!cb->status && CU_OK(cb, cudaEventElapsedTime(&t, e0, e1)))
        *ms = (double)t / iters;
    if (cb->status) {
        rc = dsd_errf(err, cb->status, "fp8 gemm: %s", cb->status_msg);
        cb->status = 0;
        cb->status_msg[0] = 0;
    }
out:
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(buf);
    return rc;
}

const float *cuda_rope_inv_freq(struct cuda_backend *cb)
{
    return cb->lin ? cb->lin->inv_freq : NULL;
}

int cuda_linear_init(struct cuda_backend *cb, struct dsd_err *err)
{
    struct cuda_linear_state *s = calloc(1, sizeof *s);
    if (!s)
        return dsd_errf(err, -ENOMEM, "cuda backend: out of memory");
    cb->lin = s;
    const int half = cb->base.dims.qk_rope_head_dim / 2;
    cuda_use(cb);
    if (cudaMalloc((void **)&s->inv_freq, (size_t)(half > 0 ? half : 1) * sizeof(float)) != cudaSuccess) {
        (void)cudaGetLastError();
        return dsd_errf(err, -ENOMEM, "cuda backend: no device memory for the RoPE table");
    }
    /* at creation, before any op: a synchronous copy is fine here */
    if (half > 0 &&
        cudaMemcpy(s->inv_freq, cb->base.dims.rope_inv_freq, (size_t)half * sizeof(float), cudaMemcpyHostToDevice) !=
            cudaSuccess) {
        (void)cudaGetLastError();
        return dsd_errf(err, -EIO, "cuda backend: copying the RoPE table failed");
    }
    return 0;
}

void cuda_linear_free(struct cuda_backend *cb)
{
    struct cuda_linear_state *s = cb->lin;
    if (!s)
        return;
    for (int i = 0; i < PLAN_SLOTS; i++)
        plan_destroy(&s->plans[i]);
    cudaFree(s->inv_freq);
    free(s);
    cb->lin = NULL;
}

void dsd_backend_cuda_set_linear_path(struct dsd_backend *be, enum dsd_cuda_linear_path p)
{
    cuda(be)->linear_path = p;
}
