/*
 * GPU host only (tests/gpu/run.sh): the CUDA linear op (kernels/cuda/cuda_linear.c) against the
 * CPU backend in production numerics, on every linear of V3.2 at the tiny config, another
 * config (hidden 1536, 12 heads, 64 experts, non-ue8m0 activation scales) and full V3.2 dims:
 *   FP8 block-scaled: q_a, q_b, kv_a (N = L + R, not a multiple of 128), o_proj, indexer wq_b
 *     and wk, expert gate/down, dense up/down; also with an f32 output and with N % 16 != 0
 *     (the plain-kernel fallback);
 *   BF16: indexer weights_proj (f32 out), eh_proj (bf16 out), LM head (f32 out);
 *   F32: the router (f32 out, and bf16 out).
 * Every FP8 and BF16 case of M <= 64 runs twice: the default path and the other one of cuBLASLt
 * and the weight-streaming kernel (kernels/cuda/cuda_linear_stream.cu; the default streams FP8
 * steps of up to 8 tokens), whose K splits and partial n-tiles
 * the shapes here cover (N = 72, 128, 576 ...; M = 33 pads to 40 tokens of 48 quantized rows).
 * M = 1, 7, 33, 64, 300, 4096 (4096 checked on its first and last 64 rows; the LM head up to 64,
 * dense up/down up to 300), and strided x/out (offsets inside wider rows; the padding
 * columns of out must stay NaN). Timings at full dims for M = 1, 64, 4096.
 * Gates: bf16 outputs 5e-3 (the GPU sums in another order, so an output may round to the
 * neighbouring bf16 value: ~4e-3 each); f32 outputs 1e-3 (FP8: the tensor cores' accumulation
 * inside a 128-block), 1e-4 (BF16, F32 weights).
 * Exit 0 all passed, 1 a failure, 77 no GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"     /* CUDA_LINEAR_STREAM_MAX_M, _AUTO_M */
#include "dsd_cuda.h"
#include "gpu_harness.h"

struct lshape {
    const char *name;
    int64_t N, K;
    enum dsd_dtype dt;
    unsigned flags;
    int max_m;
};

static const char *dt_name(enum dsd_dtype d)
{
    return d == DSD_DTYPE_F8_E4M3 ? "fp8" : d == DSD_DTYPE_BF16 ? "bf16" : "f32";
}

static double gate_for(const struct lshape *s)
{
    if (!(s->flags & DSD_LINEAR_F32_OUT))
        return 5e-3;
    return s->dt == DSD_DTYPE_F8_E4M3 ? 1e-3 : 1e-4;
}

struct wpair {
    struct gh_wset c, g;
};

static int wpair_make(struct gh_ctx *h, struct wpair *wp, const struct lshape *s)
{
    struct dsd_weight w;
    memset(wp, 0, sizeof *wp);
    /* std ~ 1/sqrt(K): outputs of order one for inputs of order one */
    if (gh_rand_weight(&w, s->dt, s->N, s->K, 1.0f / sqrtf((float)s->K), 0.0f, s->name)) {
        gh_fail("%s: out of host memory", s->name);
        return -1;
    }
    int rc = gh_wset_single(&wp->c, &w) || gh_wset_single(&wp->g, &w);
    gh_weight_free(&w);
    if (rc || gh_wset_prepare(&wp->c, h->cpu) || gh_wset_prepare(&wp->g, h->gpu))
        return -1;
    return 0;
}

static void wpair_free(struct wpair *wp)
{
    gh_wset_free(&wp->c);
    gh_wset_free(&wp->g);
}

struct timed {
    struct gh_ctx *h;
    void *out, *x;
    int ldo, ldx, M;
    const struct dsd_weight *w;
    unsigned flags;
};

static void timed_linear(void *p)
{
    struct timed *a = p;
    a->h->go->linear(a->h->gpu, a->out, a->ldo, a->x, a->ldx, a->w, a->M, a->flags);
}

/* One linear at M rows; strided: x at column 64 of rows K + 128 wide, out at column 16 of
 * rows N + 48 wide. */
/* the FP8 and BF16 linears of steps up to CUDA_LINEAR_STREAM_MAX_M (64) run a second time on
 * the path the default did not take: the weight-streaming kernel (linear = stream, names end in
 * " stream") or cuBLASLt (linear = lt, " lt"; the default streams FP8 up to
 * CUDA_LINEAR_STREAM_AUTO_M tokens) */
static const char *g_path = "";

static void run_case(struct gh_ctx *h, struct wpair *wp, const struct lshape *s, int M, bool strided, bool time_it)
{
    const int N = (int)s->N, K = (int)s->K;
    const int ldx = strided ? K + 128 : K, xo = strided ? 64 : 0, ldo = strided ? N + 48 : N, oo = strided ? 16 : 0;
    const bool f32 = (s->flags & DSD_LINEAR_F32_OUT) != 0;
    const size_t ab_c = dsd_backend_act_bytes(h->cpu), ab_g = dsd_backend_act_bytes(h->gpu);
    const size_t out_el_c = f32 ? 4 : ab_c, out_el_g = f32 ? 4 : ab_g;
    char shape[160];
    snprintf(shape, sizeof shape, "%s %s%s M=%d N=%d K=%d%s%s", s->name, dt_name(s->dt), f32 ? "->f32" : "", M, N, K,
             strided ? " strided" : "", g_path);
    float *xh = malloc((size_t)M * ldx * sizeof *xh), *got = malloc((size_t)M * ldo * sizeof *got),
          *want = malloc((size_t)M * ldo * sizeof *want);
    void *xc = gh_alloc_act(h->cpu, M, ldx), *xg = gh_alloc_act(h->gpu, M, ldx);
    void *oc = gh_alloc(h->cpu, (size_t)M * ldo * out_el_c), *og = gh_alloc(h->gpu, (size_t)M * ldo * out_el_g);
    if (!xh || !got || !want || !xc || !xg || !oc || !og) {
        gh_fail("%s: out of memory", shape);
        goto out;
    }
    gh_fill(xh, (size_t)M * ldx, 1.0f, true);
    /* a few large values so the FP8 groups have different scales */
    for (size_t i = 0; i < (size_t)M * ldx; i += 97)
        xh[i] *= 8.0f;
    if (gh_put(h->cpu, xc, xh, M, ldx) || gh_put(h->gpu, xg, xh, M, ldx))
        goto out;
    if (f32) {
        gh_poison_f32(h->cpu, oc, (size_t)M * ldo);
        gh_poison_f32(h->gpu, og, (size_t)M * ldo);
    } else {
        gh_poison_act(h->cpu, oc, M, ldo);
        gh_poison_act(h->gpu, og, M, ldo);
    }
    h->go->linear(h->gpu, (char *)og + oo * out_el_g, ldo, (char *)xg + xo * ab_g, ldx, &wp->g.w.lm_head, M, s->flags);
    if (gh_sync(h->gpu, shape))
        goto out;
    /* the CPU on all rows, or the first and last 64 */
    int spans[2][2] = { { 0, M }, { 0, 0 } };
    if (M > 300) {
        spans[0][1] = 64;
        spans[1][0] = M - 64;
        spans[1][1] = M;
    }
    for (int i = 0; i < 2; i++) {
        int r0 = spans[i][0], n = spans[i][1] - r0;
        if (n > 0)
            h->co->linear(h->cpu, (char *)oc + ((size_t)r0 * ldo + oo) * out_el_c, ldo,
                          (char *)xc + ((size_t)r0 * ldx + xo) * ab_c, ldx, &wp->c.w.lm_head, n, s->flags);
    }
    int rc;
    if (f32)
        rc = gh_download(h->gpu, got, og, (size_t)M * ldo * 4) || gh_download(h->cpu, want, oc, (size_t)M * ldo * 4);
    else
        rc = gh_get(h->gpu, got, og, M, ldo) || gh_get(h->cpu, want, oc, M, ldo);
    if (rc)
        goto out;
    /* compact the checked rows/columns; count written padding */
    size_t k = 0, pad_written = 0;
    for (int i = 0; i < 2; i++)
        for (int r = spans[i][0]; r < spans[i][1]; r++)
            for (int c = 0; c < ldo; c++) {
                float g = got[(size_t)r * ldo + c];
                if (c >= oo && c < oo + N) {
                    got[k] = g;
                    want[k] = want[(size_t)r * ldo + c];
                    k++;
                } else if (!isnan(g)) {
                    pad_written++;
                }
            }
    gh_check(h, "linear", shape, got, want, k, gate_for(s));
    if (strided)
        gh_report(h, "linear ldo padding", shape, (double)pad_written, 0, 0, pad_written == 0);
    if (time_it) {
        struct timed a = { h, (char *)og + oo * out_el_g, (char *)xg + xo * ab_g, ldo, ldx, M, &wp->g.w.lm_head,
                           s->flags };
        double ms = gh_time_gpu(h, timed_linear, &a);
        double wbytes = (double)N * K * (s->dt == DSD_DTYPE_F8_E4M3 ? 1 : s->dt == DSD_DTYPE_BF16 ? 2 : 4);
        gh_report_time(h, "linear", shape, ms, wbytes + (double)M * K * 2 + (double)M * N * out_el_g,
                       2.0 * M * N * K);
    }
out:
    free(xh);
    free(got);
    free(want);
    if (xc)
        h->co->release(h->cpu, xc);
    if (oc)
        h->co->release(h->cpu, oc);
    if (xg)
        h->go->release(h->gpu, xg);
    if (og)
        h->go->release(h->gpu, og);
}

static int make_config(struct gh_config *c, int which)
{
    switch (which) {
    case 0:
        return gh_config_preset(c, "tiny");
    case 1:
        if (gh_config_preset(c, "small"))
            return -1;
        c->cfg.hidden_size = 1536;
        c->cfg.num_attention_heads = 12;
        c->cfg.q_lora_rank = 768;
        c->cfg.index_n_heads = 12;
        c->cfg.n_routed_experts = 64;
        c->cfg.moe_intermediate_size = 384;
        c->cfg.intermediate_size = 4096;
        c->cfg.act_scale_ue8m0 = false;
        gh_config_update(c, "other");
        return 0;
    default:
        return gh_config_preset(c, "full-dims");
    }
}

int main(int argc, char **argv)
{
    gh_init(argc, argv, "test_cuda_linear");
    for (int which = 0; which < 3; which++) {
        if (which > 0 && gh_tiny_only())
            break;
        struct gh_config c;
        if (make_config(&c, which)) {
            gh_fail("config %d: preset failed", which);
            continue;
        }
        struct gh_ctx h;
        int rc = gh_open(&h, &c);
        if (rc == GH_SKIP)
            return gh_finish();
        if (rc)
            continue;
        const struct dsd_model_dims *d = &c.dims;
        const int64_t D = d->hidden_size, H = d->num_attention_heads, QD = H * (d->qk_nope_head_dim + d->qk_rope_head_dim);
        const bool full = which == 2;
        const struct lshape shapes[] = {
            { "q_a", d->q_lora_rank, D, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "q_b", QD, d->q_lora_rank, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "kv_a", d->kv_lora_rank + d->qk_rope_head_dim, D, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "o_proj", D, H * d->v_head_dim, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "idx_wq_b", (int64_t)d->index_n_heads * d->index_head_dim, d->q_lora_rank, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "idx_wk", d->index_head_dim, D, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "idx_weights_proj", d->index_n_heads, D, DSD_DTYPE_BF16, DSD_LINEAR_F32_OUT, 4096 },
            { "router", d->n_routed_experts, D, DSD_DTYPE_F32, DSD_LINEAR_F32_OUT, 4096 },
            { "router->bf16", d->n_routed_experts, D, DSD_DTYPE_F32, 0, 300 },
            { "expert_gate", d->moe_intermediate_size, D, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "expert_down", D, d->moe_intermediate_size, DSD_DTYPE_F8_E4M3, 0, 4096 },
            { "dense_up", d->intermediate_size, D, DSD_DTYPE_F8_E4M3, 0, 300 },
            { "dense_down", D, d->intermediate_size, DSD_DTYPE_F8_E4M3, 0, 300 },
            { "eh_proj", D, 2 * D, DSD_DTYPE_BF16, 0, 300 },
            { "lm_head", d->vocab_size, D, DSD_DTYPE_BF16, DSD_LINEAR_F32_OUT, 64 },
            { "q_a->f32", d->q_lora_rank, D, DSD_DTYPE_F8_E4M3, DSD_LINEAR_F32_OUT, 300 },
            { "fp8 N%16!=0", 72, D, DSD_DTYPE_F8_E4M3, 0, 300 },
        };
        /* 33: the streaming kernel's n-tiles reach past act_quant's 48 rows */
        const int Ms[] = { 1, 7, 33, 64, 300, 4096 };
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
            const struct lshape *s = &shapes[i];
            struct wpair wp;
            if (wpair_make(&h, &wp, s)) {
                wpair_free(&wp);
                continue;
            }
            for (size_t j = 0; j < sizeof Ms / sizeof *Ms; j++) {
                int M = Ms[j];
                if (M > s->max_m)
                    continue;
                bool time_it = full && (M == 1 || M == 64 || M == 4096);
                /* the default streams FP8 steps of up to CUDA_LINEAR_STREAM_AUTO_M tokens */
                const bool auto_streams = s->dt == DSD_DTYPE_F8_E4M3 && M <= CUDA_LINEAR_STREAM_AUTO_M;
                for (int pass = 0; pass < 2; pass++) {
                    enum dsd_cuda_linear_path path = DSD_CUDA_LINEAR_AUTO;
                    g_path = "";
                    if (pass == 1) {
                        if (s->dt == DSD_DTYPE_F32 || M > CUDA_LINEAR_STREAM_MAX_M)
                            break;
                        path = auto_streams ? DSD_CUDA_LINEAR_LT : DSD_CUDA_LINEAR_STREAM;
                        g_path = auto_streams ? " lt" : " stream";
                    }
                    dsd_backend_cuda_set_linear_path(h.gpu, path);
                    run_case(&h, &wp, s, M, false, time_it);
                    if (M == 7 || M == 64)
                        run_case(&h, &wp, s, M, true, false);
                }
                g_path = "";
                dsd_backend_cuda_set_linear_path(h.gpu, DSD_CUDA_LINEAR_AUTO);
            }
            wpair_free(&wp);
        }
        gh_close(&h);
    }
    return gh_finish();
}
