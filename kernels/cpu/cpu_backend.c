/* The CPU reference backend: creation, memory and the op table. The ops themselves live in
 * one file per concern (cpu_linear.c, cpu_norm.c, cpu_rope.c, cpu_attention.c,
 * cpu_indexer.c, cpu_moe.c, cpu_sample.c). */
#include "cpu_backend.h"
#include "weight_gen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Zeroed, 64-byte aligned memory. Every block starts with a 64-byte header holding its size
 * and how it was obtained: large blocks (the KV arenas: gigabytes) come from mmap, whose pages
 * the kernel zeroes lazily, so start-up does not write every byte of the pool. */
#define ALLOC_HEADER 64
#define ALLOC_MMAP_MIN (1u << 20)

static void *alloc_flags(size_t bytes, int mmap_flags)
{
    size_t total = ALLOC_HEADER + ((bytes + 63) & ~(size_t)63);
    uint8_t *base;
    if (total >= ALLOC_MMAP_MIN) {
        base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | mmap_flags, -1, 0);
        if (base == MAP_FAILED)
            return NULL;
    } else {
        void *p = NULL;
        if (posix_memalign(&p, 64, total) != 0)
            return NULL;
        memset(p, 0, total);
        base = p;
    }
    memcpy(base, &total, sizeof total);
    return base + ALLOC_HEADER;
}

static void *cpu_alloc(struct dsd_backend *be, size_t bytes)
{
    (void)be;
    return alloc_flags(bytes, 0);
}

/* alloc_host: resident from the start, as a GPU backend's pinned memory is (the host KV tier,
 * the disk staging records). Left to fault in lazily, the first disk hit after a restart paid
 * for it page by page: its O_DIRECT reads pinned fresh pages (zeroed one by one) on the tier
 * I/O thread between the checksums (build machine, 2026-12-07: a 46 MB disk hit's reads at a
 * median 77 % of dd's rate lazily, 96 % resident, four restarts each, taken in turn). */
static void *cpu_alloc_host(struct dsd_backend *be, size_t bytes)
{
    (void)be;
    return alloc_flags(bytes, MAP_POPULATE);
}

static void cpu_release(struct dsd_backend *be, void *p)
{
    (void)be;
    if (!p)
        return;
    uint8_t *base = (uint8_t *)p - ALLOC_HEADER;
    size_t total;
    memcpy(&total, base, sizeof total);
    if (total >= ALLOC_MMAP_MIN)
        munmap(base, total);
    else
        free(base);
}

/* Host and backend memory are the same here: copies happen at once, nothing is queued. */
static void cpu_copy(struct dsd_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    memcpy(dst, src, bytes);
}

/* Side copies (ops.h) are made when they are waited for (side_wait, synchronize), not when
 * they are enqueued: a device may make them any time in between, and the CPU backend takes
 * the latest moment, so that a test on it sees stale memory wherever a reader forgot to wait.
 * Pending pieces are kept in order; a layer's are made in the order they were enqueued. */
static void cpu_side_wait(struct dsd_backend *be, int layer)
{
    struct cpu_backend *cb = cpu(be);
    int kept = 0;
    for (int i = 0; i < cb->n_side; i++) {
        const struct cpu_side_copy *q = &cb->side[i];
        if (layer < 0 || q->layer == layer)
            memcpy(q->c.dst, q->c.src, q->c.bytes);
        else
            cb->side[kept++] = *q;
    }
    cb->n_side = kept;
}

static int cpu_side_copy(struct dsd_backend *be, const struct dsd_copy *p, int n, int layer)
{
    struct cpu_backend *cb = cpu(be);
    if (n <= 0)
        return 0;
    if (cb->n_side + n > cb->side_cap) {
        int cap = cb->side_cap ? cb->side_cap : 256;
        while (cap < cb->n_side + n)
            cap *= 2;
        struct cpu_side_copy *ns = realloc(cb->side, (size_t)cap * sizeof *ns);
        if (!ns) {
            /* no memory to defer them: made now, which is as correct, only not late */
            for (int i = 0; i < n; i++)
                memcpy(p[i].dst, p[i].src, p[i].bytes);
            return 0;
        }
        cb->side = ns;
        cb->side_cap = cap;
    }
    for (int i = 0; i < n; i++)
        cb->side[cb->n_side++] = (struct cpu_side_copy){.c = p[i], .layer = layer};
    return 0;
}

static int cpu_synchronize(struct dsd_backend *be, struct dsd_err *err)
{
    (void)err;
    cpu_side_wait(be, -1);
    return 0;
}

static void cpu_to_f32(struct dsd_backend *be, float *out, const void *x, int T, int n)
{
    (void)be;
    memmove(out, x, (size_t)T * (size_t)n * sizeof(float));
}

static void cpu_from_f32(struct dsd_backend *be, void *out_, const float *x, int T, int n)
{
    const struct cpu_backend *cb = cpu(be);
    float *out = out_;
    for (size_t i = 0; i < (size_t)T * (size_t)n; i++)
        out[i] = cpu_act(cb, x[i]);
}

static int cpu_prepare_weights(struct dsd_backend *be, struct dsd_model_weights *w, struct dsd_err *err)
{
    return cpu_prepare_attention_weights(cpu(be), w, err);
}

static void cpu_release_weights(struct dsd_backend *be, struct dsd_model_weights *w)
{
    struct cpu_backend *cb = cpu(be);
    cpu_release_attention_weights(cb, w);
    cpu_release(be, cb->gen_block);
    cb->gen_block = NULL;
}

/* ---- generated weights (ops.h generate_weights, kernels/weight_gen.h) ------------------ */

struct gen_job {
    const struct dsd_weight_init *init;
    uint8_t **data;                 /* where weight k's values go */
    float **scale;                  /* and its FP8 block scales */
    uint64_t seed;
};

static void gen_task(void *ctx, int k, int thread)
{
    (void)thread;
    const struct gen_job *j = ctx;
    const struct dsd_weight_init *in = &j->init[k];
    const struct dsd_weight *w = in->w;
    const uint64_t st = dsd_gen_stream(j->seed, (uint64_t)k), n = (uint64_t)w->rows * (uint64_t)w->cols;
    switch (w->dtype) {
    case DSD_DTYPE_F8_E4M3: {
        uint8_t *q = j->data[k];
        for (uint64_t i = 0; i < n; i++)
            q[i] = dsd_f32_to_e4m3(dsd_gen_uniform(st, i) * DSD_GEN_FP8_RANGE);
        const int64_t nb = ((w->rows + 127) / 128) * ((w->cols + 127) / 128);
        for (int64_t b = 0; b < nb; b++)
            j->scale[k][b] = in->half / DSD_GEN_FP8_RANGE;
        break;
    }
    case DSD_DTYPE_BF16: {
        uint16_t *o = (uint16_t *)j->data[k];
        for (uint64_t i = 0; i < n; i++)
            o[i] = dsd_f32_to_bf16(in->center + in->half * dsd_gen_uniform(st, i));
        break;
    }
    default: {
        float *o = (float *)j->data[k];
        for (uint64_t i = 0; i < n; i++)
            o[i] = in->center + in->half * dsd_gen_uniform(st, i);
        break;
    }
    }
}

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static int cpu_generate_weights(struct dsd_backend *be, struct dsd_model_weights *w,
                                const struct dsd_weight_init *init, size_t n_init, uint64_t seed,
                                struct dsd_err *err)
{
    struct cpu_backend *cb = cpu(be);
    if (cb->gen_block)
        return dsd_errf(err, -EBUSY, "cpu: generated weights already exist on this backend (release them first)");
    if (n_init > INT32_MAX)
        return dsd_errf(err, -EINVAL, "cpu: %zu weights to generate, too many", n_init);
    size_t total = 0;
    for (size_t k = 0; k < n_init; k++) {
        const struct dsd_weight *x = init[k].w;
        if ((x->dtype != DSD_DTYPE_F8_E4M3 && x->dtype != DSD_DTYPE_BF16 && x->dtype != DSD_DTYPE_F32) ||
            x->rows <= 0 || x->cols <= 0)
            return dsd_errf(err, -EINVAL, "cpu: cannot generate %s (%s [%lld, %lld])", x->name ? x->name : "?",
                            dsd_dtype_name(x->dtype), (long long)x->rows, (long long)x->cols);
        total += align64((size_t)x->rows * (size_t)x->cols * dsd_dtype_size(x->dtype));
        if (x->dtype == DSD_DTYPE_F8_E4M3)
            total += align64((size_t)((x->rows + 127) / 128) * (size_t)((x->cols + 127) / 128) * sizeof(float));
    }
    uint8_t *block = cpu_alloc(be, total);
    uint8_t **data = calloc(n_init ? n_init : 1, sizeof *data);
    float **scale = calloc(n_init ? n_init : 1, sizeof *scale);
    if (!block || !data || !scale) {
        cpu_release(be, block);
        free(data);
        free(scale);
        return dsd_errf(err, -ENOMEM, "cpu: no memory for %.2f GiB of generated weights", (double)total / (1u << 30));
    }
    uint8_t *at = block;
    for (size_t k = 0; k < n_init; k++) {
        struct dsd_weight *x = init[k].w;
        data[k] = at;
        at += align64((size_t)x->rows * (size_t)x->cols * dsd_dtype_size(x->dtype));
        if (x->dtype == DSD_DTYPE_F8_E4M3) {
            scale[k] = (float *)at;
            at += align64((size_t)((x->rows + 127) / 128) * (size_t)((x->cols + 127) / 128) * sizeof(float));
        }
    }
    struct gen_job j = { .init = init, .data = data, .scale = scale, .seed = seed };
    dsd_thread_pool_run(cb->pool, (int)n_init, gen_task, &j);
    for (size_t k = 0; k < n_init; k++) {
        init[k].w->data = data[k];
        init[k].w->scale = scale[k];
    }
    free(data);
    free(scale);
    cb->gen_block = block;
    int rc = cpu_prepare_weights(be, w, err);
    if (rc)
        cpu_release_weights(be, w);
    return rc;
}

/* ---- timing: ops run when called here, so a mark is the time of the call ------------- */

static void *cpu_timer_new(struct dsd_backend *be)
{
    (void)be;
    return calloc(1, sizeof(struct timespec));
}

static void cpu_timer_mark(struct dsd_backend *be, void *t)
{
    (void)be;
    clock_gettime(CLOCK_MONOTONIC, (struct timespec *)t);
}

static double cpu_timer_ms(struct dsd_backend *be, void *a, void *b)
{
    (void)be;
    const struct timespec *x = a, *y = b;
    return (double)(y->tv_sec - x->tv_sec) * 1e3 + (double)(y->tv_nsec - x->tv_nsec) * 1e-6;
}

static void cpu_timer_free(struct dsd_backend *be, void *t)
{
    (void)be;
    free(t);
}

static void cpu_moe_count(struct dsd_backend *be, int32_t *hits)
{
    cpu(be)->moe_hits = hits;
}

static const struct dsd_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .alloc_host = cpu_alloc_host,
    .release_host = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_synchronize,
    .prepare_weights = cpu_prepare_weights,
    .release_weights = cpu_release_weights,
    .embed = cpu_op_embed,
    .rmsnorm = cpu_op_rmsnorm,
    .add_rmsnorm = cpu_op_add_rmsnorm,
    .layernorm = cpu_op_layernorm,
    .linear = cpu_op_linear,
    .rope = cpu_op_rope,
    .mla_kv_store = cpu_op_mla_kv_store,
    .index_k_store = cpu_op_index_k_store,
    .indexer_topk = cpu_op_indexer_topk,
    .mla_attention = cpu_op_mla_attention,
    .mlp = cpu_op_mlp,
    .moe = cpu_op_moe,
    .concat = cpu_op_concat,
    .gather_rows = cpu_op_gather_rows,
    .to_f32 = cpu_to_f32,
    .from_f32 = cpu_from_f32,
    .sample = cpu_op_sample,
    .penalty_mark = cpu_op_penalty_mark,
    .generate_weights = cpu_generate_weights,
    .copy = cpu_copy,
    .side_copy = cpu_side_copy,
    .side_wait = cpu_side_wait,
    .timer_new = cpu_timer_new,
    .timer_mark = cpu_timer_mark,
    .timer_ms = cpu_timer_ms,
    .timer_free = cpu_timer_free,
    .moe_count = cpu_moe_count,
};

static void cpu_destroy(struct dsd_backend *be)
{
    struct cpu_backend *cb = cpu(be);
    cpu_release(be, cb->gen_block);
    dsd_thread_pool_free(cb->pool);
    free(cb->sample_scratch);
    free(cb->side);
    dsd_backend_fini_common(be);
    free(cb);
}

struct dsd_backend *dsd_backend_cpu_new(const struct dsd_backend_params *p, struct dsd_err *err)
{
    if (!p) {
        dsd_errf(err, -EINVAL, "cpu backend: no parameters given");
        return NULL;
    }
    struct cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) {
        dsd_errf(err, -ENOMEM, "cpu backend: out of memory");
        return NULL;
    }
    if (dsd_backend_init_common(&cb->base, p, sizeof(float), err)) {
        free(cb);
        return NULL;
    }
    cb->base.ops = &cpu_ops;
    cb->base.destroy = cpu_destroy;
    cb->production = p->numerics == DSD_NUMERICS_PRODUCTION;
    int n = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    cb->base.params.n_threads = n;
    cb->pool = dsd_thread_pool_new(n);
    if (!cb->pool) {
        dsd_errf(err, -ENOMEM, "cpu backend: out of memory");
        cpu_destroy(&cb->base);
        return NULL;
    }
    cb->inv_freq = cb->base.rope_inv_freq;
    cb->rope_attention_factor = p->dims.rope_attention_factor;
    cb->softmax_scale = p->dims.softmax_scale;
    return &cb->base;
}

void cpu_weight_vector(const struct dsd_weight *w, float *out)
{
    dsd_ref_weight_row(w, 0, out);
}
