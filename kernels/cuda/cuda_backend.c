/* The CUDA backend: creation, memory, the stream and its status, weights to the device, and
 * the op table. The ops themselves live in one file per concern (cuda_act.cu, cuda_linear.c,
 * cuda_kv.cu, cuda_indexer.cu, cuda_attention.cu, cuda_moe.cu). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_internal.h"
#include "dsd_cuda.h"
#include "numeric.h"
#include "weight_gen.h"

#define LT_WORKSPACE_BYTES DSD_CUDA_GEMM_WORKSPACE_BYTES   /* what the memory plan counts */
#define STAGING_BYTES (64u << 20)       /* each of the two pinned upload buffers */

void cuda_use(struct cuda_backend *cb)
{
    /* cudaSetDevice is cheap when the device is already current */
    (void)cudaSetDevice(cb->device);
}

void cuda_fail(struct cuda_backend *cb, int code, const char *fmt, ...)
{
    if (cb->status)
        return;
    cb->status = code ? code : -EIO;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cb->status_msg, sizeof cb->status_msg, fmt, ap);
    va_end(ap);
}

bool cuda_ok_(struct cuda_backend *cb, cudaError_t e, const char *what, const char *file, int line)
{
    if (e == cudaSuccess)
        return true;
    cuda_fail(cb, e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO, "%s:%d: %s: %s", file, line, what,
              cudaGetErrorString(e));
    return false;
}

bool cublas_ok_(struct cuda_backend *cb, cublasStatus_t s, const char *what, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return true;
    cuda_fail(cb, s == CUBLAS_STATUS_ALLOC_FAILED ? -ENOMEM : -EIO, "%s:%d: %s: cuBLAS status %d", file, line, what,
              (int)s);
    return false;
}

void *cuda_scratch(struct cuda_backend *cb, size_t bytes)
{
    if (bytes <= cb->scratch_bytes)
        return cb->scratch;
    if (!CU_OK(cb, cudaStreamSynchronize(cb->stream)))
        return NULL;
    if (cb->live_graphs > 0 && cb->scratch) {
        if (cb->n_retired == CUDA_RETIRED_MAX) {
            cuda_fail(cb, -ENOMEM, "cuda: scratch outgrown %d times while recorded steps hold it", CUDA_RETIRED_MAX);
            return NULL;
        }
        cb->retired[cb->n_retired++] = cb->scratch;
    } else {
        cudaFree(cb->scratch);
    }
    cb->scratch = NULL;
    cb->scratch_bytes = 0;
    size_t want = bytes + bytes / 4;
    if (!CU_OK(cb, cudaMalloc(&cb->scratch, want)))
        return NULL;
    cb->scratch_bytes = want;
    return cb->scratch;
}

/* ---- memory ---------------------------------------------------------------------------- */

static void *cu_alloc(struct dsd_backend *be, size_t bytes)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();   /* an allocation failure is returned, not sticky */
        return NULL;
    }
    if (cudaMemsetAsync(p, 0, bytes ? bytes : 1, cb->stream) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_release(struct dsd_backend *be, void *p)
{
    struct cuda_backend *cb = cuda(be);
    if (!p)
        return;
    cuda_use(cb);
    /* cudaFree waits for the device; work queued on p is done before it returns */
    cudaFree(p);
}

static void *cu_alloc_host(struct dsd_backend *be, size_t bytes)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

static void cu_release_host(struct dsd_backend *be, void *p)
{
    if (!p)
        return;
    cuda_use(cuda(be));
    cudaFreeHost(p);
}

static void cu_upload(struct dsd_backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_backend *cb = cuda(be);
    if (bytes)
        CU_OK(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->stream));
}

static void cu_download(struct dsd_backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_backend *cb = cuda(be);
    if (bytes)
        CU_OK(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
}

/* ops.h copy_many: one kernel for all pieces (cuda_copy.cu) when the host side is mapped
 * pinned memory, as alloc_host's is; otherwise, or for a piece of 4 GiB or more, one
 * cudaMemcpyAsync per piece. */
static void copy_many_on(struct cuda_backend *cb, cudaStream_t st, const struct dsd_copy *p, int n, bool to_backend)
{
    bool kernel = true;
    struct cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, to_backend ? p[0].src : p[0].dst) != cudaSuccess ||
        at.type != cudaMemoryTypeHost) {
        (void)cudaGetLastError();
        kernel = false;
    }
    for (int i = 0; i < n && kernel; i++)
        kernel = p[i].bytes < ((size_t)1 << 32);
    if (kernel) {
        CU_OK(cb, cuda_launch_copy_many(st, p, n));
        return;
    }
    for (int i = 0; i < n; i++)
        if (p[i].bytes)
            CU_OK(cb, cudaMemcpyAsync(p[i].dst, p[i].src, p[i].bytes,
                                      to_backend ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, st));
}

static void cu_copy_many(struct dsd_backend *be, const struct dsd_copy *p, int n, bool to_backend)
{
    struct cuda_backend *cb = cuda(be);
    if (n <= 0)
        return;
    cuda_use(cb);
    copy_many_on(cb, cb->stream, p, n, to_backend);
}

/* ops.h side_copy: with kv_reload = OVERLAP, on the copy stream, after everything enqueued on
 * the main stream so far (a reloaded page's previous contents may still be read there), then
 * the layer's event; otherwise not done here (-EOPNOTSUPP: the caller copies in order). */
static int cu_side_copy(struct dsd_backend *be, const struct dsd_copy *p, int n, int layer)
{
    struct cuda_backend *cb = cuda(be);
    if (cb->kv_reload != DSD_CUDA_KV_RELOAD_OVERLAP)
        return -EOPNOTSUPP;
    if (n <= 0)
        return 0;
    if (layer < 0 || layer >= DSD_SIDE_LAYERS) {
        cuda_fail(cb, -EINVAL, "side_copy: layer %d out of range", layer);
        return 0;
    }
    cuda_use(cb);
    if (!cb->layer_done[layer] &&
        !CU_OK(cb, cudaEventCreateWithFlags(&cb->layer_done[layer], cudaEventDisableTiming)))
        return 0;
    if (!CU_OK(cb, cudaEventRecord(cb->copy_after, cb->stream)) ||
        !CU_OK(cb, cudaStreamWaitEvent(cb->copy_stream, cb->copy_after, 0)))
        return 0;
    copy_many_on(cb, cb->copy_stream, p, n, true);
    if (CU_OK(cb, cudaEventRecord(cb->layer_done[layer], cb->copy_stream)))
        cb->layer_pending[layer] = true;
    return 0;
}

static void cu_side_wait(struct dsd_backend *be, int layer)
{
    struct cuda_backend *cb = cuda(be);
    const int l0 = layer < 0 ? 0 : layer, l1 = layer < 0 ? DSD_SIDE_LAYERS : layer + 1;
    if (l0 >= DSD_SIDE_LAYERS)
        return;
    for (int l = l0; l < l1; l++)
        if (cb->layer_pending[l]) {
            cuda_use(cb);
            CU_OK(cb, cudaStreamWaitEvent(cb->stream, cb->layer_done[l], 0));
            cb->layer_pending[l] = false;
        }
}

static int cu_synchronize(struct dsd_backend *be, struct dsd_err *err)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    cu_side_wait(be, -1);       /* the side copies too */
    CU_OK(cb, cudaStreamSynchronize(cb->stream));
    int rc = cb->status;
    if (rc) {
        dsd_errf(err, rc, "cuda device %d: %s", cb->device, cb->status_msg);
        cb->status = 0;
        cb->status_msg[0] = 0;
    }
    return rc;
}

/* ---- weights --------------------------------------------------------------------------- */

/* Every weight of the model, for walking them. */
static int collect_weights(struct dsd_model_weights *w, const struct dsd_model_dims *d, struct dsd_weight ***out)
{
    size_t cap = 16, n = 0;
    struct dsd_weight **v = malloc(cap * sizeof *v);
    if (!v)
        return -ENOMEM;
#define ADD(x)                                                                  \
    do {                                                                        \
        if ((x).data && (x).rows > 0) {                                         \
            if (n == cap) {                                                     \
                struct dsd_weight **nv = realloc(v, 2 * cap * sizeof *nv);      \
                if (!nv) {                                                      \
                    free(v);                                                    \
                    return -ENOMEM;                                             \
                }                                                               \
                v = nv;                                                         \
                cap *= 2;                                                       \
            }                                                                   \
            v[n++] = &(x);                                                      \
        }                                                                       \
    } while (0)
#define ADD_EXPERT(e) ADD((e).gate); ADD((e).up); ADD((e).down)
    ADD(w->embed);
    ADD(w->final_norm);
    ADD(w->lm_head);
    for (int l = 0; l < w->n_layers; l++) {
        struct dsd_layer_weights *lw = &w->layers[l];
        ADD(lw->attn_norm); ADD(lw->ffn_norm);
        ADD(lw->q_a); ADD(lw->q_a_norm); ADD(lw->q_b); ADD(lw->kv_a); ADD(lw->kv_a_norm); ADD(lw->kv_b);
        ADD(lw->o_proj);
        ADD(lw->idx_wq_b); ADD(lw->idx_wk); ADD(lw->idx_k_norm); ADD(lw->idx_k_norm_bias);
        ADD(lw->idx_weights_proj);
        ADD_EXPERT(lw->mlp);
        ADD(lw->router); ADD(lw->router_bias);
        ADD_EXPERT(lw->shared);
        if (lw->experts)
            for (int e = 0; e < d->n_routed_experts; e++) {
                ADD_EXPERT(lw->experts[e]);
            }
        ADD(lw->enorm); ADD(lw->hnorm); ADD(lw->eh_proj); ADD(lw->head_norm);
    }
#undef ADD_EXPERT
#undef ADD
    *out = v;
    return (int)n;
}

/* The dtypes weights may have on the GPU (F16 is widened to F32 on the way). */
static bool device_dtype(enum dsd_dtype t)
{
    return t == DSD_DTYPE_F8_E4M3 || t == DSD_DTYPE_BF16 || t == DSD_DTYPE_F16 || t == DSD_DTYPE_F32;
}

/* What one weight occupies on the device: data (F16 widened to F32), then FP8 scales with
 * rows padded to cuda_scale_stride blocks. */
static size_t device_data_bytes(const struct dsd_weight *w)
{
    size_t el = w->dtype == DSD_DTYPE_F16 ? 4 : dsd_dtype_size(w->dtype);
    return (size_t)w->rows * (size_t)w->cols * el;
}

static size_t device_scale_bytes(const struct dsd_weight *w)
{
    if (w->dtype != DSD_DTYPE_F8_E4M3 || !w->scale)
        return 0;
    return (size_t)((w->rows + 127) / 128) * (size_t)cuda_scale_stride(w) * sizeof(float);
}

/* Streams src (n bytes of host memory, e.g. the checkpoint's mmap) to dst through the two
 * pinned staging buffers: the copy of one half runs while the CPU fills the other. convert,
 * when set, rewrites each staged chunk (F16 -> F32 widening) into out_chunk bytes. */
struct stager {
    struct cuda_backend *cb;
    uint8_t *buf[2];
    cudaEvent_t done[2];
    int next;
    size_t moved;               /* bytes copied to the device so far */
};

static bool stage_copy(struct stager *s, uint8_t *dst, const uint8_t *src, size_t n, bool widen_f16)
{
    struct cuda_backend *cb = s->cb;
    const size_t in_chunk = widen_f16 ? STAGING_BYTES / 2 : STAGING_BYTES;
    size_t off_in = 0, off_out = 0;
    while (off_in < n) {
        size_t take = n - off_in < in_chunk ? n - off_in : in_chunk;
        int b = s->next;
        s->next ^= 1;
        if (!CU_OK(cb, cudaEventSynchronize(s->done[b])))
            return false;
        size_t out;
        if (widen_f16) {
            const uint16_t *h = (const uint16_t *)(src + off_in);
            float *f = (float *)s->buf[b];
            for (size_t i = 0; i < take / 2; i++)
                f[i] = dsd_f16_to_f32(h[i]);
            out = take * 2;
        } else {
            memcpy(s->buf[b], src + off_in, take);
            out = take;
        }
        if (!CU_OK(cb, cudaMemcpyAsync(dst + off_out, s->buf[b], out, cudaMemcpyHostToDevice, cb->stream)) ||
            !CU_OK(cb, cudaEventRecord(s->done[b], cb->stream)))
            return false;
        off_in += take;
        off_out += out;
        s->moved += out;
    }
    return true;
}

static int cu_prepare_weights(struct dsd_backend *be, struct dsd_model_weights *w, struct dsd_err *err)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    if (cb->weight_block) {
        /* one weight block per backend: a second prepare would orphan the first block and
         * release_weights would free the wrong one */
        return dsd_errf(err, -EBUSY, "cuda: weights are already prepared on this backend (release them first)");
    }
    struct dsd_weight **v;
    int n = collect_weights(w, &be->dims, &v);
    if (n < 0)
        return dsd_errf(err, -ENOMEM, "cuda: out of memory");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!device_dtype(v[i]->dtype)) {
            int rc = dsd_errf(err, -EINVAL, "cuda: weight %s has a dtype the GPU backend does not take",
                              v[i]->name ? v[i]->name : "?");
            free(v);
            return rc;
        }
        total += (device_data_bytes(v[i]) + 255) / 256 * 256 + (device_scale_bytes(v[i]) + 255) / 256 * 256;
    }
    /* One block for all weights: one allocation, nothing to fragment. */
    uint8_t *block = NULL;
    if (cudaMalloc((void **)&block, total ? total : 1) != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        free(v);
        return dsd_errf(err, -ENOMEM, "cuda: the weights need %.2f GiB, the device has %.2f GiB free of %.2f GiB",
                        (double)total / (1u << 30), (double)fr / (1u << 30), (double)tot / (1u << 30));
    }
    struct stager s = { .cb = cb };
    int rc = 0;
    if (cudaMallocHost((void **)&s.buf[0], STAGING_BYTES) != cudaSuccess ||
        cudaMallocHost((void **)&s.buf[1], STAGING_BYTES) != cudaSuccess ||
        cudaEventCreateWithFlags(&s.done[0], cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&s.done[1], cudaEventDisableTiming) != cudaSuccess) {
        rc = dsd_errf(err, -ENOMEM, "cuda: no pinned staging memory");
        goto out;
    }
    CU_OK(cb, cudaEventRecord(s.done[0], cb->stream));
    CU_OK(cb, cudaEventRecord(s.done[1], cb->stream));
    uint8_t *at = block;
    for (int i = 0; i < n && !cb->status; i++) {
        struct dsd_weight *x = v[i];
        bool widen = x->dtype == DSD_DTYPE_F16;
        size_t host_bytes = (size_t)x->rows * (size_t)x->cols * dsd_dtype_size(x->dtype);
        uint8_t *d_data = at;
        at += (device_data_bytes(x) + 255) / 256 * 256;
        stage_copy(&s, d_data, x->data, host_bytes, widen);
        float *d_scale = NULL;
        if (device_scale_bytes(x)) {
            d_scale = (float *)at;
            at += (device_scale_bytes(x) + 255) / 256 * 256;
            const int64_t rb = (x->rows + 127) / 128, kb = (x->cols + 127) / 128, stride = cuda_scale_stride(x);
            /* rows of kb scales, padded with ones to stride */
            for (int64_t r = 0; r < rb && !cb->status; r++) {
                float row[stride];
                for (int64_t k = 0; k < stride; k++)
                    row[k] = k < kb ? x->scale[r * kb + k] : 1.0f;
                stage_copy(&s, (uint8_t *)(d_scale + r * stride), (const uint8_t *)row, (size_t)stride * sizeof(float),
                           false);
            }
        }
        x->data = d_data;
        x->scale = d_scale;
        if (widen)
            x->dtype = DSD_DTYPE_F32;
        if (be->params.progress)
            be->params.progress(be->params.progress_user, (double)(i + 1) / n);
    }
    CU_OK(cb, cudaStreamSynchronize(cb->stream));
    if (cb->status) {
        rc = dsd_errf(err, cb->status, "cuda: uploading weights: %s", cb->status_msg);
        cb->status = 0;
        goto out;
    }
    cb->weight_bytes = total;
    cb->weight_block = block;
    block = NULL;
    if ((rc = cuda_attention_prepare(cb, w, err)) || (rc = cuda_moe_prepare(cb, w, err)))
        goto out;
out:
    if (s.buf[0])
        cudaFreeHost(s.buf[0]);
    if (s.buf[1])
        cudaFreeHost(s.buf[1]);
    if (s.done[0])
        cudaEventDestroy(s.done[0]);
    if (s.done[1])
        cudaEventDestroy(s.done[1]);
    if (block)
        cudaFree(block);
    free(v);
    return rc;
}

/* generate_weights (ops.h): the same block layout as prepare_weights, filled on the device
 * by cuda_generate.cu instead of copied from the host. */
static int cu_generate_weights(struct dsd_backend *be, struct dsd_model_weights *w,
                               const struct dsd_weight_init *init, size_t n_init, uint64_t seed,
                               struct dsd_err *err)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    if (cb->weight_block)
        return dsd_errf(err, -EBUSY, "cuda: weights are already prepared on this backend (release them first)");
    size_t total = 0;
    for (size_t k = 0; k < n_init; k++) {
        const struct dsd_weight *x = init[k].w;
        if ((x->dtype != DSD_DTYPE_F8_E4M3 && x->dtype != DSD_DTYPE_BF16 && x->dtype != DSD_DTYPE_F32) ||
            x->rows <= 0 || x->cols <= 0)
            return dsd_errf(err, -EINVAL, "cuda: cannot generate %s (%s [%lld, %lld])", x->name ? x->name : "?",
                            dsd_dtype_name(x->dtype), (long long)x->rows, (long long)x->cols);
        total += (device_data_bytes(x) + 255) / 256 * 256;
        if (x->dtype == DSD_DTYPE_F8_E4M3)
            total += ((size_t)((x->rows + 127) / 128) * (size_t)cuda_scale_stride(x) * sizeof(float) + 255) / 256 * 256;
    }
    uint8_t *block = NULL;
    if (cudaMalloc((void **)&block, total ? total : 1) != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return dsd_errf(err, -ENOMEM, "cuda: the weights need %.2f GiB, the device has %.2f GiB free of %.2f GiB",
                        (double)total / (1u << 30), (double)fr / (1u << 30), (double)tot / (1u << 30));
    }
    uint8_t *at = block;
    for (size_t k = 0; k < n_init && !cb->status; k++) {
        struct dsd_weight *x = init[k].w;
        const uint64_t n = (uint64_t)x->rows * (uint64_t)x->cols, st = dsd_gen_stream(seed, k);
        const int kind = x->dtype == DSD_DTYPE_F8_E4M3 ? CUDA_GEN_FP8 : x->dtype == DSD_DTYPE_BF16 ? CUDA_GEN_BF16
                                                                                                 : CUDA_GEN_F32;
        x->data = at;
        CU_OK(cb, cuda_launch_gen_fill(cb->stream, at, kind, n, st, init[k].center, init[k].half));
        at += (device_data_bytes(x) + 255) / 256 * 256;
        x->scale = NULL;
        if (kind == CUDA_GEN_FP8) {
            const int64_t rb = (x->rows + 127) / 128, kb = (x->cols + 127) / 128, stride = cuda_scale_stride(x);
            float *sc = (float *)at;
            CU_OK(cb, cuda_launch_gen_scales(cb->stream, sc, rb, kb, stride, init[k].half / DSD_GEN_FP8_RANGE));
            x->scale = sc;
            at += ((size_t)rb * (size_t)stride * sizeof(float) + 255) / 256 * 256;
        }
        if (be->params.progress)
            be->params.progress(be->params.progress_user, (double)(k + 1) / (double)n_init);
    }
    CU_OK(cb, cudaStreamSynchronize(cb->stream));
    if (cb->status) {
        int rc = dsd_errf(err, cb->status, "cuda: generating weights: %s", cb->status_msg);
        cb->status = 0;
        cb->status_msg[0] = 0;
        cudaFree(block);
        return rc;
    }
    cb->weight_bytes = total;
    cb->weight_block = block;
    int rc = cuda_attention_prepare(cb, w, err);
    if (!rc)
        rc = cuda_moe_prepare(cb, w, err);
    return rc;
}

static void cu_release_weights(struct dsd_backend *be, struct dsd_model_weights *w)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    cuda_moe_release(cb, w);
    cuda_attention_release(cb, w);
    /* the weights' data pointers point into this block; the caller drops the struct */
    cudaFree(cb->weight_block);
    cb->weight_block = NULL;
    cb->weight_bytes = 0;
}

static int cu_mem_info(struct dsd_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    cuda_use(cuda(be));
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return -EIO;
    }
    return 0;
}

/* ---- benchmarks: device copies and stream timing --------------------------------------- */

static void cu_copy(struct dsd_backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_backend *cb = cuda(be);
    if (bytes)
        CU_OK(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cb->stream));
}

static void *cu_timer_new(struct dsd_backend *be)
{
    cuda_use(cuda(be));
    cudaEvent_t e = NULL;
    if (cudaEventCreate(&e) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return e;
}

static void cu_timer_mark(struct dsd_backend *be, void *t)
{
    struct cuda_backend *cb = cuda(be);
    CU_OK(cb, cudaEventRecord((cudaEvent_t)t, cb->stream));
}

static double cu_timer_ms(struct dsd_backend *be, void *a, void *b)
{
    cuda_use(cuda(be));
    float ms = -1.0f;
    if (cudaEventElapsedTime(&ms, (cudaEvent_t)a, (cudaEvent_t)b) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1.0;
    }
    return ms;
}

static void cu_timer_free(struct dsd_backend *be, void *t)
{
    cuda_use(cuda(be));
    if (t)
        cudaEventDestroy((cudaEvent_t)t);
}

static void cu_moe_count(struct dsd_backend *be, int32_t *hits)
{
    cuda(be)->moe_hits = hits;
}

/* ---- recorded steps (CUDA graphs) ------------------------------------------------------ */

static int cu_graph_begin(struct dsd_backend *be, struct dsd_err *err)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    if (cb->status)
        return dsd_errf(err, cb->status, "cuda: not recording after a failure: %s", cb->status_msg);
    cudaError_t e = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess)
        return dsd_errf(err, -EIO, "cuda: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
    return 0;
}

static int cu_graph_end(struct dsd_backend *be, void **graph, size_t *kernels, struct dsd_err *err)
{
    struct cuda_backend *cb = cuda(be);
    *graph = NULL;
    if (kernels)
        *kernels = 0;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(cb->stream, &g);
    int rc = 0;
    if (e != cudaSuccess || !g) {
        rc = dsd_errf(err, -EIO, "cuda: recording failed: %s", cudaGetErrorString(e));
    } else if (cb->status) {
        rc = dsd_errf(err, cb->status, "cuda: an op failed while recording: %s", cb->status_msg);
    } else {
        size_t n = 0;
        if (kernels && cudaGraphGetNodes(g, NULL, &n) == cudaSuccess && n > 0) {
            cudaGraphNode_t *nodes = malloc(n * sizeof *nodes);
            if (nodes && cudaGraphGetNodes(g, nodes, &n) == cudaSuccess)
                for (size_t i = 0; i < n; i++) {
                    enum cudaGraphNodeType t;
                    if (cudaGraphNodeGetType(nodes[i], &t) == cudaSuccess && t == cudaGraphNodeTypeKernel)
                        (*kernels)++;
                }
            free(nodes);
        }
        cudaGraphExec_t x = NULL;
        e = cudaGraphInstantiate(&x, g, 0);
        if (e != cudaSuccess)
            rc = dsd_errf(err, -EIO, "cuda: cudaGraphInstantiate: %s", cudaGetErrorString(e));
        else {
            *graph = x;
            cb->live_graphs++;
        }
    }
    if (g)
        cudaGraphDestroy(g);
    if (rc) {
        /* nothing recorded ran: forget the failures of the recording, clear CUDA's own */
        (void)cudaGetLastError();
        cb->status = 0;
        cb->status_msg[0] = 0;
    }
    return rc;
}

static void cu_graph_launch(struct dsd_backend *be, void *graph)
{
    struct cuda_backend *cb = cuda(be);
    CU_OK(cb, cudaGraphLaunch((cudaGraphExec_t)graph, cb->stream));
}

static void cu_graph_free(struct dsd_backend *be, void *graph)
{
    cuda_use(cuda(be));
    if (!graph)
        return;
    struct cuda_backend *cb = cuda(be);
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
    if (--cb->live_graphs == 0) {
        /* no recorded step can touch an outgrown scratch buffer any more */
        if (cb->n_retired > 0)
            CU_OK(cb, cudaStreamSynchronize(cb->stream));
        for (int i = 0; i < cb->n_retired; i++)
            cudaFree(cb->retired[i]);
        cb->n_retired = 0;
    }
}

/* ---- the backend ----------------------------------------------------------------------- */

static const struct dsd_ops cuda_ops = {
    .name = "cuda",
    .alloc = cu_alloc,
    .release = cu_release,
    .alloc_host = cu_alloc_host,
    .release_host = cu_release_host,
    .upload = cu_upload,
    .download = cu_download,
    .synchronize = cu_synchronize,
    .prepare_weights = cu_prepare_weights,
    .release_weights = cu_release_weights,
    .embed = cuda_op_embed,
    .rmsnorm = cuda_op_rmsnorm,
    .add_rmsnorm = cuda_op_add_rmsnorm,
    .layernorm = cuda_op_layernorm,
    .linear = cuda_op_linear,
    .rope = cuda_op_rope,
    .mla_kv_store = cuda_op_mla_kv_store,
    .index_k_store = cuda_op_index_k_store,
    .indexer_topk = cuda_op_indexer_topk,
    .mla_attention = cuda_op_mla_attention,
    .mlp = cuda_op_mlp,
    .moe = cuda_op_moe,
    .concat = cuda_op_concat,
    .gather_rows = cuda_op_gather_rows,
    .to_f32 = cuda_op_to_f32,
    .from_f32 = cuda_op_from_f32,
    .sample = cuda_op_sample,
    .penalty_mark = cuda_op_penalty_mark,
    .mem_info = cu_mem_info,
    .graph_begin = cu_graph_begin,
    .graph_end = cu_graph_end,
    .graph_launch = cu_graph_launch,
    .graph_free = cu_graph_free,
    .generate_weights = cu_generate_weights,
    .copy = cu_copy,
    .copy_many = cu_copy_many,
    .side_copy = cu_side_copy,
    .side_wait = cu_side_wait,
    .timer_new = cu_timer_new,
    .timer_mark = cu_timer_mark,
    .timer_ms = cu_timer_ms,
    .timer_free = cu_timer_free,
    .moe_count = cu_moe_count,
};

static void cu_destroy(struct dsd_backend *be)
{
    struct cuda_backend *cb = cuda(be);
    cuda_use(cb);
    if (cb->stream)
        cudaStreamSynchronize(cb->stream);
    cuda_linear_free(cb);
    cudaFree(cb->scratch);
    for (int i = 0; i < cb->n_retired; i++)
        cudaFree(cb->retired[i]);
    cudaFree(cb->lt_workspace);
    cudaFree(cb->weight_block);
    if (cb->lt)
        cublasLtDestroy(cb->lt);
    for (int i = 0; i < CUDA_SIDE_STREAMS; i++) {
        if (cb->side[i])
            cudaStreamDestroy(cb->side[i]);
        if (cb->side_join[i])
            cudaEventDestroy(cb->side_join[i]);
    }
    if (cb->side_fork)
        cudaEventDestroy(cb->side_fork);
    if (cb->copy_stream) {
        cudaStreamSynchronize(cb->copy_stream);
        cudaStreamDestroy(cb->copy_stream);
    }
    if (cb->copy_after)
        cudaEventDestroy(cb->copy_after);
    for (int l = 0; l < DSD_SIDE_LAYERS; l++)
        if (cb->layer_done[l])
            cudaEventDestroy(cb->layer_done[l]);
    if (cb->stream)
        cudaStreamDestroy(cb->stream);
    dsd_backend_fini_common(be);
    free(cb);
}

void dsd_backend_cuda_set_kv_reload(struct dsd_backend *be, enum dsd_cuda_kv_reload r)
{
    struct cuda_backend *cb = cuda(be);
    cu_side_wait(be, -1);       /* nothing pending is left behind by the switch */
    cb->kv_reload = r;
}

/* ---- engine choices by name (dsd_backend_cuda_set_engine) ---- */

static void set_attention(struct dsd_backend *be, int v) { dsd_backend_cuda_set_attention_kernel(be, v); }
static void set_attn_tile(struct dsd_backend *be, int v) { dsd_backend_cuda_set_attention_tile(be, v); }
static void set_indexer(struct dsd_backend *be, int v) { dsd_backend_cuda_set_indexer_kernel(be, v); }
static void set_ffn(struct dsd_backend *be, int v) { dsd_backend_cuda_set_ffn_path(be, v); }
static void set_moe_prefill(struct dsd_backend *be, int v) { dsd_backend_cuda_set_moe_prefill(be, v); }
static void set_linear(struct dsd_backend *be, int v) { dsd_backend_cuda_set_linear_path(be, v); }
static void set_sampler(struct dsd_backend *be, int v) { dsd_backend_cuda_set_sampler(be, v); }
static void set_kv_reload(struct dsd_backend *be, int v) { dsd_backend_cuda_set_kv_reload(be, v); }

/* one row per choice; a value's index is its enum value (dsd_cuda.h) */
static const struct engine_knob {
    const char *name;
    void (*set)(struct dsd_backend *be, int v);
    const char *values[6];
} engine_knobs[] = {
    { .name = "attention", .set = set_attention,
      .values = { "auto", "per-token", "tiled", "tiled-pages", "tiled-gather" } },
    { .name = "attn_tile", .set = set_attn_tile, .values = { "auto", "mma", "wgmma", "ws", "ws-fp8" } },
    { .name = "indexer", .set = set_indexer, .values = { "auto", "bf16", "fp8", "wgmma" } },
    { .name = "ffn", .set = set_ffn, .values = { "auto", "stream", "gemm" } },
    { .name = "moe_prefill", .set = set_moe_prefill, .values = { "auto", "serial", "lanes", "grouped" } },
    { .name = "linear", .set = set_linear, .values = { "auto", "lt", "stream" } },
    { .name = "sampler", .set = set_sampler, .values = { "auto", "block", "slices" } },
    { .name = "kv_reload", .set = set_kv_reload, .values = { "auto", "stream", "overlap" } },
};

int dsd_backend_cuda_set_engine(struct dsd_backend *be, const char *name, const char *value, struct dsd_err *err)
{
    for (size_t k = 0; name && k < sizeof engine_knobs / sizeof engine_knobs[0]; k++) {
        const struct engine_knob *kn = &engine_knobs[k];
        if (strcmp(kn->name, name))
            continue;
        char list[128] = "";
        for (int v = 0; v < 6 && kn->values[v]; v++) {
            if (value && !strcmp(kn->values[v], value)) {
                kn->set(be, v);
                return 0;
            }
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", v ? ", " : "", kn->values[v]);
        }
        return dsd_errf(err, -EINVAL, "engine %s: no value \"%s\" (one of: %s)", name, value ? value : "", list);
    }
    return dsd_errf(err, -EINVAL, "no engine choice \"%s\" (attention, attn_tile, indexer, ffn, moe_prefill, linear, sampler, kv_reload)",
                    name ? name : "");
}

/* DSD_CUDA_ENGINES="NAME=VALUE ..." (spaces or commas between): engine choices for every
 * CUDA backend the process makes, so that a choice not yet the default can be tried through
 * the daemon or any tool (docs/CUDA.md). An unknown name or value fails the backend's creation
 * with the list of what is allowed. */
static int apply_env_engines(struct dsd_backend *be, struct dsd_err *err)
{
    const char *env = getenv("DSD_CUDA_ENGINES");
    if (!env)
        return 0;
    char buf[512];
    if (strlen(env) >= sizeof buf)
        return dsd_errf(err, -EINVAL, "DSD_CUDA_ENGINES: longer than %zu characters", sizeof buf - 1);
    strcpy(buf, env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return dsd_errf(err, -EINVAL, "DSD_CUDA_ENGINES: \"%s\" is not NAME=VALUE", tok);
        *eq = 0;
        int rc = dsd_backend_cuda_set_engine(be, tok, eq + 1, err);
        if (rc)
            return dsd_err_prefix(err, rc, "DSD_CUDA_ENGINES");
    }
    return 0;
}

struct dsd_backend *dsd_backend_cuda_new(const struct dsd_backend_params *p, struct dsd_err *err)
{
    if (!p) {
        dsd_errf(err, -EINVAL, "cuda backend: no parameters given");
        return NULL;
    }
    if (p->numerics != DSD_NUMERICS_PRODUCTION) {
        dsd_errf(err, -ENOTSUP, "cuda backend: only production numerics run on the GPU (exact runs on the CPU backend)");
        return NULL;
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        dsd_errf(err, -ENODEV, "cuda backend: no CUDA device is visible (driver loaded? CUDA_VISIBLE_DEVICES?)");
        return NULL;
    }
    if (p->device < 0 || p->device >= count) {
        dsd_errf(err, -ENODEV, "cuda backend: GPU %d does not exist (%d visible)", p->device, count);
        return NULL;
    }
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, p->device) != cudaSuccess) {
        dsd_errf(err, -ENODEV, "cuda backend: cannot query GPU %d", p->device);
        return NULL;
    }
    if (prop.major != 9) {
        dsd_errf(err, -ENOTSUP, "cuda backend: %s is sm_%d%d; this build's kernels are for Hopper (sm_90a)", prop.name,
                 prop.major, prop.minor);
        return NULL;
    }
    struct cuda_backend *cb = calloc(1, sizeof *cb);
    if (!cb) {
        dsd_errf(err, -ENOMEM, "cuda backend: out of memory");
        return NULL;
    }
    if (dsd_backend_init_common(&cb->base, p, 2, err)) {
        free(cb);
        return NULL;
    }
    cb->base.ops = &cuda_ops;
    cb->base.destroy = cu_destroy;
    cb->device = p->device;
    cb->mem_total = prop.totalGlobalMem;
    cb->sms = prop.multiProcessorCount;
    snprintf(cb->name, sizeof cb->name, "%s (sm_%d%d, %.0f GiB)", prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / (1u << 30));
    cuda_use(cb);
    if (cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasLtCreate(&cb->lt) != CUBLAS_STATUS_SUCCESS ||
        cudaMalloc(&cb->lt_workspace, LT_WORKSPACE_BYTES) != cudaSuccess) {
        dsd_errf(err, -ENOMEM, "cuda backend: cannot set up a stream and cuBLASLt on %s", cb->name);
        cu_destroy(&cb->base);
        return NULL;
    }
    cb->lt_workspace_bytes = LT_WORKSPACE_BYTES;
    bool sides = cudaEventCreateWithFlags(&cb->side_fork, cudaEventDisableTiming) == cudaSuccess &&
                 cudaEventCreateWithFlags(&cb->copy_after, cudaEventDisableTiming) == cudaSuccess &&
                 cudaStreamCreateWithFlags(&cb->copy_stream, cudaStreamNonBlocking) == cudaSuccess;
    for (int i = 0; sides && i < CUDA_SIDE_STREAMS; i++)
        sides = cudaStreamCreateWithFlags(&cb->side[i], cudaStreamNonBlocking) == cudaSuccess &&
                cudaEventCreateWithFlags(&cb->side_join[i], cudaEventDisableTiming) == cudaSuccess;
    if (!sides) {
        (void)cudaGetLastError();
        dsd_errf(err, -ENOMEM, "cuda backend: cannot create the side streams on %s", cb->name);
        cu_destroy(&cb->base);
        return NULL;
    }
    if (cuda_linear_init(cb, err)) {
        cu_destroy(&cb->base);
        return NULL;
    }
    if (apply_env_engines(&cb->base, err)) {
        cu_destroy(&cb->base);
        return NULL;
    }
    return &cb->base;
}

const char *dsd_backend_cuda_device_name(const struct dsd_backend *be)
{
    return ((const struct cuda_backend *)be)->name;
}

size_t dsd_backend_cuda_weight_bytes(const struct dsd_backend *be)
{
    return ((const struct cuda_backend *)be)->weight_bytes;
}
