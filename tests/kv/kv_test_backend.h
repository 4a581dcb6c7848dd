/*
 * tests/kv/kv_test_backend.h: a CPU backend with small made-up dimensions for the KV tests
 * (they need the backend's memory and copies, never a model). Production numerics with the
 * FP8 KV: a latent of 256 (MLA entry 256 + 2*4 + 32*2 = 328 bytes), index keys of 128.
 */
#ifndef DSD_TESTS_KV_TEST_BACKEND_H
#define DSD_TESTS_KV_TEST_BACKEND_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kv_cache.h"
#include "ops.h"

static float kv_test_inv_freq[16];

static inline struct dsd_backend *kv_test_backend(enum dsd_kv_dtype kv_dtype)
{
    struct dsd_backend_params bp = dsd_backend_default_params();
    for (int i = 0; i < 16; i++)
        kv_test_inv_freq[i] = 1.0f / (float)(1 + i);
    bp.dims = (struct dsd_model_dims){.vocab_size = 1000, .hidden_size = 64, .num_attention_heads = 2,
                                      .q_lora_rank = 64, .kv_lora_rank = 256, .qk_nope_head_dim = 32,
                                      .qk_rope_head_dim = 32, .v_head_dim = 32, .index_n_heads = 2,
                                      .index_head_dim = 128, .index_topk = 64, .rms_norm_eps = 1e-6,
                                      .rope_inv_freq = kv_test_inv_freq, .max_position_embeddings = 4096};
    bp.numerics = DSD_NUMERICS_PRODUCTION;
    bp.kv_dtype = kv_dtype;
    bp.n_threads = 1;
    struct dsd_err err = {{0}};
    struct dsd_backend *be = dsd_backend_cpu_new(&bp, &err);
    if (!be)
        fprintf(stderr, "kv_test_backend: %s\n", err.msg);
    return be;
}

/* Fills every byte of device page `page` of kv (both arenas, all layers) from seed. */
static inline void kv_test_fill_page(struct dsd_kv_cache *kv, int32_t page, uint32_t seed)
{
    const struct dsd_kv_layout *l = dsd_kv_cache_layout(kv);
    size_t mp = (size_t)DSD_KV_PAGE_TOKENS * l->mla_token_bytes, ip = l->index_page_bytes;
    for (int layer = 0; layer < dsd_kv_cache_n_layers(kv); layer++) {
        const struct dsd_kv_layer *lay = dsd_kv_cache_layer(kv, layer);
        uint32_t x = seed * 2654435761u + (uint32_t)layer * 40503u + 1;
        for (size_t b = 0; b < mp; b++)
            lay->mla[(size_t)page * mp + b] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
        for (size_t b = 0; b < ip; b++)
            lay->index[(size_t)page * ip + b] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
    }
}

/* Whether device pages a and b hold the same bytes in both arenas of every layer. */
static inline int kv_test_pages_equal(struct dsd_kv_cache *kv, int32_t a, int32_t b)
{
    const struct dsd_kv_layout *l = dsd_kv_cache_layout(kv);
    size_t mp = (size_t)DSD_KV_PAGE_TOKENS * l->mla_token_bytes, ip = l->index_page_bytes;
    for (int layer = 0; layer < dsd_kv_cache_n_layers(kv); layer++) {
        const struct dsd_kv_layer *lay = dsd_kv_cache_layer(kv, layer);
        if (memcmp(lay->mla + (size_t)a * mp, lay->mla + (size_t)b * mp, mp) ||
            memcmp(lay->index + (size_t)a * ip, lay->index + (size_t)b * ip, ip))
            return 0;
    }
    return 1;
}

#endif
