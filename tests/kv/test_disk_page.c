/*
 * The page record (daemon/kv/disk_page.h, docs/KV_CACHE.md §6): a round trip keeps every
 * byte of both arenas and the identity; a flipped bit anywhere in the header, in either
 * arena or in the padding, a truncation, foreign bytes, a future version, another model's
 * fingerprint or another geometry are each refused with their own code; the fingerprint
 * moves with every input.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk_page.h"
#include "page_hash.h"
#include "test.h"

static const struct dsd_kv_page_geom G = {.n_layers = 3, .mla_page_bytes = 64 * 328, .index_page_bytes = 64 * 132};
static const uint64_t FP = 0x1234567890abcdefULL;

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((seed = seed * 1664525u + 1013904223u) >> 24);
}

struct rec {
    uint8_t *buf, *mla, *index;
    size_t len;
    struct dsd_kv_page_meta meta;
};

static struct rec make(uint32_t seed)
{
    struct rec r;
    r.len = dsd_kv_page_record_bytes(&G);
    r.buf = aligned_alloc(DSD_KV_PAGE_ALIGN, r.len);
    r.mla = malloc(dsd_kv_page_mla_bytes(&G));
    r.index = malloc(dsd_kv_page_index_bytes(&G));
    fill(r.mla, dsd_kv_page_mla_bytes(&G), seed);
    fill(r.index, dsd_kv_page_index_bytes(&G), seed + 1);
    memset(r.buf, 0xee, r.len);                         /* encode must overwrite everything */
    memset(&r.meta, 0, sizeof r.meta);
    r.meta.parent_hash = 0xfeedULL + seed;
    r.meta.serial = 77;
    r.meta.depth = 5;
    for (int t = 0; t < DSD_KV_PAGE_TOKENS; t++)
        r.meta.tokens[t] = (int32_t)(seed * 31 + (uint32_t)t);
    dsd_kv_page_encode(r.buf, &G, FP, &r.meta, r.mla, r.index);
    return r;
}

static void drop(struct rec *r)
{
    free(r->buf);
    free(r->mla);
    free(r->index);
}

TEST(sizes_follow_the_layout)
{
    /* V3.2 (docs/KV_CACHE.md §4): 656 + 132 bytes per token and layer, 62 layers */
    struct dsd_kv_layout l = {.mla_token_bytes = 656, .index_page_bytes = 8448};
    struct dsd_kv_page_geom g = dsd_kv_page_geom_of(&l, 62);
    ASSERT_EQ_INT(dsd_kv_page_mla_bytes(&g) + dsd_kv_page_index_bytes(&g), 3126784);
    ASSERT_EQ_INT(dsd_kv_page_index_bytes(&g), 62 * 8448);
    ASSERT_EQ_INT(dsd_kv_page_record_bytes(&g) % DSD_KV_PAGE_ALIGN, 0);
    ASSERT_EQ_INT(dsd_kv_page_record_bytes(&g), 3133440);         /* §6.2: 4096 + 764 * 4096 */
}

TEST(round_trip)
{
    struct rec r = make(1);
    struct dsd_kv_page_meta m;
    struct dsd_err err = {{0}};
    ASSERT_EQ_INT(dsd_kv_page_verify(r.buf, r.len, &G, FP, &m, &err), 0);
    ASSERT_TRUE(m.chain_hash == dsd_kv_chain_hash(r.meta.parent_hash, r.meta.tokens));
    ASSERT_TRUE(m.chain_hash == r.meta.chain_hash);
    ASSERT_TRUE(m.parent_hash == r.meta.parent_hash);
    ASSERT_EQ_INT(m.serial, 77);
    ASSERT_EQ_INT(m.depth, 5);
    ASSERT_TRUE(memcmp(m.tokens, r.meta.tokens, sizeof m.tokens) == 0);
    ASSERT_TRUE(memcmp(dsd_kv_page_mla(r.buf), r.mla, dsd_kv_page_mla_bytes(&G)) == 0);
    ASSERT_TRUE(memcmp(dsd_kv_page_index(r.buf, &G), r.index, dsd_kv_page_index_bytes(&G)) == 0);
    /* in place: arenas already where they belong (a host-tier slot) */
    uint8_t *copy = aligned_alloc(DSD_KV_PAGE_ALIGN, r.len);
    memcpy(dsd_kv_page_mla(copy), r.mla, dsd_kv_page_mla_bytes(&G));
    memcpy(dsd_kv_page_index(copy, &G), r.index, dsd_kv_page_index_bytes(&G));
    struct dsd_kv_page_meta m2 = r.meta;
    dsd_kv_page_encode(copy, &G, FP, &m2, NULL, NULL);
    ASSERT_TRUE(memcmp(copy, r.buf, r.len) == 0);
    free(copy);
    drop(&r);
}

static int fails_with(const uint8_t *buf, size_t len, uint64_t fp, int code, const char *needle)
{
    struct dsd_err err = {{0}};
    int rc = dsd_kv_page_verify(buf, len, &G, fp, NULL, &err);
    if (rc != code || (needle && !strstr(err.msg, needle))) {
        fprintf(stderr, "  got %d (%s), expected %d mentioning \"%s\"\n", rc, err.msg, code, needle ? needle : "");
        return 0;
    }
    return 1;
}

TEST(every_header_bit_is_checked)
{
    struct rec r = make(2);
    int missed = 0;
    for (size_t b = 0; b < DSD_KV_PAGE_HEADER_BYTES; b++) {
        for (int bit = 0; bit < 8; bit += 3) {
            r.buf[b] ^= (uint8_t)(1u << bit);
            int code = b < 8 ? -ENOMSG : b < 12 ? -EPROTONOSUPPORT : -EBADMSG;
            if (!fails_with(r.buf, r.len, FP, code, NULL) && missed++ < 5)
                fprintf(stderr, "  header byte %zu bit %d\n", b, bit);
            r.buf[b] ^= (uint8_t)(1u << bit);
        }
    }
    ASSERT_EQ_INT(missed, 0);
    ASSERT_EQ_INT(dsd_kv_page_verify(r.buf, r.len, &G, FP, NULL, NULL), 0);
    drop(&r);
}

TEST(arena_and_padding_corruption_is_caught)
{
    struct rec r = make(3);
    size_t mla = dsd_kv_page_mla_bytes(&G), idx = dsd_kv_page_index_bytes(&G);
    size_t start = DSD_KV_PAGE_HEADER_BYTES;
    int missed = 0, tried = 0;
    /* the first and last byte of every layer's part of each arena, and a stride through */
    for (size_t off = start; off < r.len; off += 509) {
        size_t at[3] = {off, 0, 0};
        int n = 1;
        if (off == start)
            for (int l = 0; l < G.n_layers; l++) {
                at[n++ % 3] = start + (size_t)l * G.mla_page_bytes + G.mla_page_bytes - 1;
                at[n++ % 3] = start + mla + (size_t)l * G.index_page_bytes;
            }
        for (int k = 0; k < 3 && k < n; k++) {
            size_t b = at[k];
            const char *what = b < start + mla ? "MLA" : b < start + mla + idx ? "index-K" : "padding";
            r.buf[b] ^= 0x10;
            tried++;
            if (!fails_with(r.buf, r.len, FP, -EBADMSG, what) && missed++ < 5)
                fprintf(stderr, "  byte %zu (%s)\n", b, what);
            r.buf[b] ^= 0x10;
        }
    }
    ASSERT_TRUE(tried > 100);
    ASSERT_EQ_INT(missed, 0);
    /* the padding: the record's last byte (G leaves some) */
    ASSERT_TRUE(start + mla + idx < r.len);
    r.buf[r.len - 1] = 1;
    ASSERT_TRUE(fails_with(r.buf, r.len, FP, -EBADMSG, "padding"));
    drop(&r);
}

TEST(truncated_foreign_future_other_model)
{
    struct rec r = make(4);
    ASSERT_TRUE(fails_with(r.buf, r.len - 1, FP, -ENODATA, "truncated"));
    ASSERT_TRUE(fails_with(r.buf, DSD_KV_PAGE_HEADER_BYTES, FP, -ENODATA, "truncated"));
    ASSERT_TRUE(fails_with(r.buf, 100, FP, -ENODATA, "truncated"));
    ASSERT_TRUE(fails_with(r.buf, 0, FP, -ENODATA, "truncated"));
    /* the header alone is fine for decode_header */
    ASSERT_EQ_INT(dsd_kv_page_decode_header(r.buf, DSD_KV_PAGE_HEADER_BYTES, &G, FP, NULL, NULL), 0);
    /* another model, another geometry */
    ASSERT_TRUE(fails_with(r.buf, r.len, FP ^ 1, -ESTALE, "another model"));
    struct dsd_kv_page_geom g2 = G;
    g2.n_layers = 4;
    struct dsd_err err = {{0}};
    ASSERT_EQ_INT(dsd_kv_page_verify(r.buf, r.len, &g2, FP, NULL, &err), -ESTALE);
    ASSERT_TRUE(strstr(err.msg, "geometry") != NULL);
    /* a future version: its header is whatever that version says, the version field decides */
    uint8_t saved = r.buf[8];
    r.buf[8] = 2;
    ASSERT_TRUE(fails_with(r.buf, r.len, FP, -EPROTONOSUPPORT, "newer"));
    r.buf[8] = saved;
    /* foreign bytes: text, zeros, random */
    uint8_t *foreign = calloc(1, r.len);
    ASSERT_TRUE(fails_with(foreign, r.len, FP, -ENOMSG, "foreign"));
    memcpy(foreign, "{\"not\": \"a page\"}\n", 18);
    ASSERT_TRUE(fails_with(foreign, r.len, FP, -ENOMSG, "foreign"));
    fill(foreign, r.len, 99);
    ASSERT_TRUE(fails_with(foreign, r.len, FP, -ENOMSG, "foreign"));
    free(foreign);
    ASSERT_EQ_INT(dsd_kv_page_verify(NULL, 10, &G, FP, NULL, NULL), -EINVAL);
    drop(&r);
}

TEST(fingerprint_moves_with_every_input)
{
    float inv[16];
    for (int i = 0; i < 16; i++)
        inv[i] = 1.0f / (float)(i + 1);
    struct dsd_model_dims d = {.vocab_size = 1000, .hidden_size = 64, .num_attention_heads = 2, .kv_lora_rank = 256,
                               .qk_rope_head_dim = 32, .index_head_dim = 128, .index_topk = 64,
                               .rms_norm_eps = 1e-6, .rope_inv_freq = inv};
    struct dsd_kv_layout l = dsd_kv_layout_for(&d, DSD_NUMERICS_PRODUCTION, DSD_KV_FP8);
    uint64_t base = dsd_kv_fingerprint(&d, &l, 3, "w1", 2);
    ASSERT_TRUE(base == dsd_kv_fingerprint(&d, &l, 3, "w1", 2));
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d, &l, 4, "w1", 2));
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d, &l, 3, "w2", 2));
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d, &l, 3, "w1", 1));
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d, &l, 3, NULL, 0));
    struct dsd_kv_layout lb = dsd_kv_layout_for(&d, DSD_NUMERICS_PRODUCTION, DSD_KV_BF16);
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d, &lb, 3, "w1", 2));
    struct dsd_model_dims d2 = d;
    d2.vocab_size++;
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d2, &l, 3, "w1", 2));
    d2 = d;
    d2.rms_norm_eps = 1e-5;
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d2, &l, 3, "w1", 2));
    inv[3] *= 1.5f;
    ASSERT_TRUE(base != dsd_kv_fingerprint(&d, &l, 3, "w1", 2));
}

int main(void)
{
    RUN(sizes_follow_the_layout);
    RUN(round_trip);
    RUN(every_header_bit_is_checked);
    RUN(arena_and_padding_corruption_is_caught);
    RUN(truncated_foreign_future_other_model);
    RUN(fingerprint_moves_with_every_input);
    return test_report();
}
