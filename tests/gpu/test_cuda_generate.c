/*
 * GPU host only (tests/gpu/run.sh): what deepseekd-bench needs from the CUDA backend, against
 * the CPU backend:
 * - generate_weights: every weight of a config generated on the device from a seed equals,
 *   byte for byte, the CPU backend's from the same seed (kernels/weight_gen.h; FP8 values,
 *   bf16 values, fp32 values and the block scales, the device's padded scale rows included);
 * - moe_count: the per-expert token counts of a moe call (decode-sized and prefill-sized T)
 *   equal the CPU's (routing is bit-identical by design, docs/CUDA.md §8);
 * - copy and the timers: a device copy reproduces its source; marks give a positive time.
 * - copy_many: 2,100 pieces of a KV page's sizes (more than two launches' worth) plus
 *   unaligned and empty ones, host -> device into scattered places and back, byte for byte,
 *   from alloc_host memory (the kernel path) and from malloc'd memory (the fallback); its
 *   rate beside one upload of the same bytes and beside one upload per piece (the old path).
 * Configs: tiny and small (generation at full dims is what the bench itself runs).
 * Exit 0 all passed, 1 a failure, 77 no GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_harness.h"
#include "weights.h"

#define SEED 12345u

/* Downloads weight k of the GPU set and compares it with the CPU set's. Returns mismatches. */
static long compare_weight(struct gh_ctx *h, const struct dsd_weight *g, const struct dsd_weight *c)
{
    const size_t n = (size_t)g->rows * (size_t)g->cols * dsd_dtype_size(g->dtype);
    uint8_t *buf = malloc(n ? n : 1);
    long bad = 0;
    if (!buf || gh_download(h->gpu, buf, g->data, n)) {
        free(buf);
        return 1;
    }
    bad += memcmp(buf, c->data, n) != 0;
    free(buf);
    if (g->dtype == DSD_DTYPE_F8_E4M3) {
        const int64_t rb = (g->rows + 127) / 128, kb = (g->cols + 127) / 128;
        const int64_t stride = (kb + 3) & ~(int64_t)3;     /* dsd_cuda_weight_scale_stride */
        float *s = malloc((size_t)(rb * stride) * sizeof *s);
        if (!s || gh_download(h->gpu, s, g->scale, (size_t)(rb * stride) * sizeof *s)) {
            free(s);
            return bad + 1;
        }
        for (int64_t r = 0; r < rb; r++)
            for (int64_t k = 0; k < stride; k++)
                bad += s[r * stride + k] != (k < kb ? c->scale[r * kb + k] : 1.0f);
        free(s);
    }
    return bad;
}

static void check_generate(struct gh_ctx *h, struct gh_config *conf)
{
    struct dsd_model_config cfg = conf->cfg;
    cfg.num_nextn_predict_layers = 0;
    struct dsd_model_weights wc, wg;
    struct dsd_tensor_spec *sc = NULL, *sg = NULL;
    struct dsd_weight_init *ic = NULL, *ig = NULL;
    size_t nc = 0, ng = 0;
    struct dsd_err err = {{0}};
    if (dsd_weights_describe(&cfg, &wc, &sc, &ic, &nc, &err) || dsd_weights_describe(&cfg, &wg, &sg, &ig, &ng, &err)) {
        gh_fail("describe: %s", err.msg);
        return;
    }
    int rc_c = h->co->generate_weights(h->cpu, &wc, ic, nc, SEED, &err);
    if (rc_c)
        gh_fail("cpu generate_weights: %s", err.msg);
    int rc_g = h->go->generate_weights(h->gpu, &wg, ig, ng, SEED, &err);
    if (rc_g)
        gh_fail("cuda generate_weights: %s", err.msg);
    if (!rc_c && !rc_g) {
        long bad = 0, worst = -1;
        for (size_t k = 0; k < ng; k++) {
            long b = compare_weight(h, ig[k].w, ic[k].w);
            if (b && worst < 0)
                worst = (long)k;
            bad += b;
        }
        char shape[96];
        snprintf(shape, sizeof shape, "%zu weights", ng);
        gh_report(h, "generate_weights", shape, (double)bad, 0.0, 0.0, bad == 0);
        if (worst >= 0)
            printf("  first differing weight: %s\n", ig[worst].w->name);

        /* moe_count on the first MoE layer, decode- and prefill-sized */
        int layer = -1;
        for (int l = 0; l < cfg.num_hidden_layers && layer < 0; l++)
            if (wc.layers[l].is_moe)
                layer = l;
        const int E = cfg.n_routed_experts, D = (int)cfg.hidden_size;
        const int Ts[2] = { 5, 100 };
        for (int i = 0; layer >= 0 && i < 2; i++) {
            const int T = Ts[i];
            const size_t nh = (size_t)cfg.num_hidden_layers * E;
            float *x = malloc((size_t)T * D * sizeof *x);
            int32_t *hc = calloc(nh, sizeof *hc), *hg = calloc(nh, sizeof *hg);
            void *xc = gh_alloc_act(h->cpu, T, D), *xg = gh_alloc_act(h->gpu, T, D);
            void *oc = gh_alloc_act(h->cpu, T, D), *og = gh_alloc_act(h->gpu, T, D);
            int32_t *dc = gh_alloc(h->cpu, nh * sizeof(int32_t)), *dg = gh_alloc(h->gpu, nh * sizeof(int32_t));
            if (!x || !hc || !hg || !xc || !xg || !oc || !og || !dc || !dg) {
                gh_fail("moe_count: out of memory");
            } else {
                gh_fill(x, (size_t)T * D, 1.0f, true);
                gh_put(h->cpu, xc, x, T, D);
                gh_put(h->gpu, xg, x, T, D);
                h->co->moe_count(h->cpu, dc);
                h->go->moe_count(h->gpu, dg);
                h->co->moe(h->cpu, oc, xc, &wc.layers[layer], T);
                h->go->moe(h->gpu, og, xg, &wg.layers[layer], T);
                h->co->moe_count(h->cpu, NULL);
                h->go->moe_count(h->gpu, NULL);
                gh_download(h->cpu, hc, dc, nh * sizeof(int32_t));
                gh_download(h->gpu, hg, dg, nh * sizeof(int32_t));
                long diff = 0, total = 0;
                for (size_t e = 0; e < nh; e++) {
                    diff += hc[e] != hg[e];
                    total += hg[e];
                }
                snprintf(shape, sizeof shape, "T=%d layer=%d", T, layer);
                gh_report(h, "moe_count", shape, (double)diff, 0.0, 0.0,
                          diff == 0 && total == (long)T * cfg.num_experts_per_tok);
            }
            void *bufs_c[] = { xc, oc, dc }, *bufs_g[] = { xg, og, dg };
            for (int k = 0; k < 3; k++) {
                if (bufs_c[k])
                    h->co->release(h->cpu, bufs_c[k]);
                if (bufs_g[k])
                    h->go->release(h->gpu, bufs_g[k]);
            }
            free(x);
            free(hc);
            free(hg);
        }
    }
    if (!rc_c)
        h->co->release_weights(h->cpu, &wc);
    if (!rc_g)
        h->go->release_weights(h->gpu, &wg);
    dsd_weights_free(&wc);
    dsd_weights_free(&wg);
    free(sc);
    free(sg);
    free(ic);
    free(ig);
}

static void check_copy_timers(struct gh_ctx *h)
{
    const size_t n = (size_t)64 << 20;
    uint8_t *host = malloc(n), *back = malloc(n);
    void *a = gh_alloc(h->gpu, n), *b = gh_alloc(h->gpu, n);
    void *t0 = h->go->timer_new(h->gpu), *t1 = h->go->timer_new(h->gpu);
    if (!host || !back || !a || !b || !t0 || !t1) {
        gh_fail("copy: out of memory");
    } else {
        for (size_t i = 0; i < n; i++)
            host[i] = (uint8_t)(i * 2654435761u >> 13);
        gh_upload(h->gpu, a, host, n);
        h->go->timer_mark(h->gpu, t0);
        h->go->copy(h->gpu, b, a, n);
        h->go->timer_mark(h->gpu, t1);
        gh_download(h->gpu, back, b, n);
        const double ms = h->go->timer_ms(h->gpu, t0, t1);
        gh_report(h, "copy", "64 MiB", memcmp(host, back, n) != 0, 0.0, 0.0, memcmp(host, back, n) == 0);
        gh_report(h, "timer_ms", "64 MiB copy", ms, 0.0, 0.0, ms > 0 && isfinite(ms));
        if (ms > 0)
            gh_report_time(h, "copy", "64 MiB", ms, 2.0 * (double)n, 0);
    }
    if (t0)
        h->go->timer_free(h->gpu, t0);
    if (t1)
        h->go->timer_free(h->gpu, t1);
    if (a)
        h->go->release(h->gpu, a);
    if (b)
        h->go->release(h->gpu, b);
    free(host);
    free(back);
}

/* The pieces of check_copy_many: page-sized pieces (41,984 and 8,448 bytes, V3.2's FP8 MLA
 * and index-K pages) laid out back to back on the host, scattered in reverse order on the
 * device, then a few odd ones (unaligned, 1 byte, empty). Returns the host bytes used. */
#define CM_PIECES 2100
#define CM_ODD 4
static size_t cm_layout(struct dsd_copy *up, struct dsd_copy *down, uint8_t *host, uint8_t *back, uint8_t *dev,
                        size_t total)
{
    size_t off = 0;
    for (int i = 0; i < CM_PIECES; i++) {
        size_t b = i % 2 ? 8448 : 41984;
        size_t doff = total - off - b;      /* reversed on the device */
        up[i] = (struct dsd_copy){.dst = dev + doff, .src = host + off, .bytes = b};
        down[i] = (struct dsd_copy){.dst = back + off, .src = dev + doff, .bytes = b};
        off += b;
    }
    const size_t odd[CM_ODD][2] = {{3, 1001}, {16, 1}, {32, 0}, {5, 4096}};   /* offset, bytes */
    size_t base = off;
    for (int k = 0; k < CM_ODD; k++) {
        size_t o = base + odd[k][0];
        up[CM_PIECES + k] = (struct dsd_copy){.dst = dev + o + 7, .src = host + o, .bytes = odd[k][1]};
        down[CM_PIECES + k] = (struct dsd_copy){.dst = back + o, .src = dev + o + 7, .bytes = odd[k][1]};
        base += odd[k][0] + odd[k][1] + 64;
    }
    return base;
}

static void cm_round(struct gh_ctx *h, bool pinned)
{
    const size_t total = (size_t)CM_PIECES / 2 * (41984 + 8448);
    const size_t cap = total + 8192;
    const struct dsd_ops *o = h->go;
    uint8_t *host = pinned ? o->alloc_host(h->gpu, cap) : malloc(cap);
    uint8_t *back = pinned ? o->alloc_host(h->gpu, cap) : malloc(cap);
    uint8_t *dev = gh_alloc(h->gpu, cap);
    struct dsd_copy *up = malloc((CM_PIECES + CM_ODD) * sizeof *up);
    struct dsd_copy *down = malloc((CM_PIECES + CM_ODD) * sizeof *down);
    void *t[4] = {o->timer_new(h->gpu), o->timer_new(h->gpu), o->timer_new(h->gpu), o->timer_new(h->gpu)};
    const char *what = pinned ? "alloc_host" : "malloc";
    if (!host || !back || !dev || !up || !down || !t[0] || !t[1] || !t[2] || !t[3]) {
        gh_fail("copy_many (%s): out of memory", what);
        goto out;
    }
    for (size_t i = 0; i < cap; i++) {
        host[i] = (uint8_t)(i * 2654435761u >> 11);
        back[i] = (uint8_t)(0xffu ^ host[i]);
    }
    size_t used = cm_layout(up, down, host, back, dev, total);
    o->copy_many(h->gpu, up, CM_PIECES + CM_ODD, true);
    o->copy_many(h->gpu, down, CM_PIECES + CM_ODD, false);
    if (gh_sync(h->gpu, "copy_many"))
        goto out;
    /* every piece came back; the gaps between the odd pieces were never written */
    long bad = 0;
    for (int i = 0; i < CM_PIECES + CM_ODD; i++) {
        size_t off = (size_t)((const uint8_t *)down[i].dst - back);
        bad += memcmp(back + off, host + off, down[i].bytes) != 0;
    }
    for (size_t i = total; i < used; i++) {
        bool inside = false;
        for (int k = CM_PIECES; k < CM_PIECES + CM_ODD; k++) {
            size_t off = (size_t)((const uint8_t *)down[k].dst - back);
            inside |= i >= off && i < off + down[k].bytes;
        }
        bad += !inside && (back[i] ^ host[i]) != 0xff;
    }
    char shape[64];
    snprintf(shape, sizeof shape, "%d pieces + %d odd, %s", CM_PIECES, CM_ODD, what);
    gh_report(h, "copy_many", shape, (double)bad, 0.0, 0.0, bad == 0);
    if (!pinned)
        goto out;
    /* rates: the pieces at once, one upload of all their bytes, one upload per piece */
    o->timer_mark(h->gpu, t[0]);
    o->copy_many(h->gpu, up, CM_PIECES, true);
    o->timer_mark(h->gpu, t[1]);
    o->upload(h->gpu, dev, host, total);
    o->timer_mark(h->gpu, t[2]);
    for (int i = 0; i < CM_PIECES; i++)
        o->upload(h->gpu, up[i].dst, up[i].src, up[i].bytes);
    o->timer_mark(h->gpu, t[3]);
    if (gh_sync(h->gpu, "copy_many timing"))
        goto out;
    gh_report_time(h, "copy_many", "2100 KV page pieces, host -> device", o->timer_ms(h->gpu, t[0], t[1]),
                   (double)total, 0);
    gh_report_time(h, "upload", "the same bytes in one copy", o->timer_ms(h->gpu, t[1], t[2]), (double)total, 0);
    gh_report_time(h, "upload", "one copy per piece", o->timer_ms(h->gpu, t[2], t[3]), (double)total, 0);
out:
    for (int k = 0; k < 4; k++)
        if (t[k])
            o->timer_free(h->gpu, t[k]);
    if (dev)
        o->release(h->gpu, dev);
    if (pinned) {
        if (host)
            o->release_host(h->gpu, host);
        if (back)
            o->release_host(h->gpu, back);
    } else {
        free(host);
        free(back);
    }
    free(up);
    free(down);
}

static void check_copy_many(struct gh_ctx *h)
{
    cm_round(h, true);
    cm_round(h, false);
}

int main(int argc, char **argv)
{
    gh_init(argc, argv, "test_cuda_generate");
    const char *presets[] = { "tiny", "small" };
    for (int p = 0; p < (gh_tiny_only() ? 1 : 2); p++) {
        struct gh_config c;
        if (gh_config_preset(&c, presets[p]))
            return gh_finish();
        struct gh_ctx h;
        if (gh_open(&h, &c))
            return gh_finish();
        check_generate(&h, &c);
        if (p == 0) {
            check_copy_timers(&h);
            check_copy_many(&h);
        }
        gh_close(&h);
    }
    return gh_finish();
}
