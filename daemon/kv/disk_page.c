/* The page record: a little-endian header with checksums, then the two arenas. */
#include "disk_page.h"

#include <errno.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY  /* XXH64_state_t on the stack */
#include <xxhash.h>

#include "page_hash.h"

/* Header byte offsets (docs/KV_CACHE.md §6). */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_HEADER_BYTES = 12,
    OFF_HEADER_SUM = 16,
    OFF_FINGERPRINT = 24,
    OFF_RECORD_BYTES = 32,
    OFF_N_LAYERS = 40,
    OFF_PAGE_TOKENS = 44,
    OFF_MLA_PAGE_BYTES = 48,
    OFF_INDEX_PAGE_BYTES = 56,
    OFF_PARENT_HASH = 64,
    OFF_CHAIN_HASH = 72,
    OFF_SERIAL = 80,
    OFF_DEPTH = 88,
    OFF_RESERVED = 92,
    OFF_MLA_SUM = 96,
    OFF_INDEX_SUM = 104,
    OFF_TOKENS = 112,
    OFF_END = OFF_TOKENS + 4 * DSD_KV_PAGE_TOKENS,
};

static void put32(uint8_t *p, uint32_t v)
{
    for (int b = 0; b < 4; b++)
        p[b] = (uint8_t)(v >> (8 * b));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int b = 0; b < 8; b++)
        p[b] = (uint8_t)(v >> (8 * b));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int b = 3; b >= 0; b--)
        v = v << 8 | p[b];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = v << 8 | p[b];
    return v;
}

static size_t round_up(size_t n)
{
    return (n + DSD_KV_PAGE_ALIGN - 1) / DSD_KV_PAGE_ALIGN * DSD_KV_PAGE_ALIGN;
}

struct dsd_kv_page_geom dsd_kv_page_geom_of(const struct dsd_kv_layout *layout, int n_layers)
{
    return (struct dsd_kv_page_geom){.n_layers = n_layers,
                                     .mla_page_bytes = (size_t)DSD_KV_PAGE_TOKENS * layout->mla_token_bytes,
                                     .index_page_bytes = layout->index_page_bytes};
}

size_t dsd_kv_page_mla_bytes(const struct dsd_kv_page_geom *g)
{
    return (size_t)g->n_layers * g->mla_page_bytes;
}

size_t dsd_kv_page_index_bytes(const struct dsd_kv_page_geom *g)
{
    return (size_t)g->n_layers * g->index_page_bytes;
}

size_t dsd_kv_page_record_bytes(const struct dsd_kv_page_geom *g)
{
    return DSD_KV_PAGE_HEADER_BYTES + round_up(dsd_kv_page_mla_bytes(g) + dsd_kv_page_index_bytes(g));
}

static void hash_u64(XXH64_state_t *s, uint64_t v)
{
    uint8_t b[8];
    put64(b, v);
    XXH64_update(s, b, 8);
}

static void hash_f64(XXH64_state_t *s, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    hash_u64(s, v);
}

uint64_t dsd_kv_fingerprint(const struct dsd_model_dims *d, const struct dsd_kv_layout *l, int n_layers,
                            const void *weights_id, size_t id_len)
{
    XXH64_state_t s;
    XXH64_reset(&s, 0);
    static const char tag[] = "deepseekd kv fingerprint 1";
    XXH64_update(&s, tag, sizeof tag - 1);
    const int64_t ints[] = {
        d->vocab_size, d->hidden_size, d->intermediate_size, d->moe_intermediate_size, d->num_attention_heads,
        d->q_lora_rank, d->kv_lora_rank, d->qk_nope_head_dim, d->qk_rope_head_dim, d->v_head_dim,
        d->index_n_heads, d->index_head_dim, d->index_topk, d->n_routed_experts, d->n_shared_experts,
        d->num_experts_per_tok, d->n_group, d->topk_group, d->norm_topk_prob, d->act_scale_ue8m0,
        d->max_position_embeddings, n_layers, l->mla_dtype, l->index_fp8, l->kv_lora_rank, l->rope_dim,
        l->index_dim, (int64_t)l->mla_token_bytes, (int64_t)l->index_page_bytes, DSD_KV_PAGE_TOKENS,
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        hash_u64(&s, (uint64_t)ints[i]);
    hash_f64(&s, d->routed_scaling_factor);
    hash_f64(&s, d->rms_norm_eps);
    hash_f64(&s, d->softmax_scale);
    hash_f64(&s, d->rope_attention_factor);
    if (d->rope_inv_freq)
        for (int i = 0; i < d->qk_rope_head_dim / 2; i++)
            hash_f64(&s, d->rope_inv_freq[i]);
    hash_u64(&s, id_len);
    if (id_len)
        XXH64_update(&s, weights_id, id_len);
    return XXH64_digest(&s);
}

uint8_t *dsd_kv_page_mla(void *rec)
{
    return (uint8_t *)rec + DSD_KV_PAGE_HEADER_BYTES;
}

uint8_t *dsd_kv_page_index(void *rec, const struct dsd_kv_page_geom *g)
{
    return (uint8_t *)rec + DSD_KV_PAGE_HEADER_BYTES + dsd_kv_page_mla_bytes(g);
}

/* XXH64 of the header block with its checksum field read as zero. */
static uint64_t header_sum(const uint8_t *h)
{
    static const uint8_t zero[8];
    XXH64_state_t s;
    XXH64_reset(&s, 0);
    XXH64_update(&s, h, OFF_HEADER_SUM);
    XXH64_update(&s, zero, 8);
    XXH64_update(&s, h + OFF_HEADER_SUM + 8, DSD_KV_PAGE_HEADER_BYTES - OFF_HEADER_SUM - 8);
    return XXH64_digest(&s);
}

void dsd_kv_page_encode(void *rec, const struct dsd_kv_page_geom *g, uint64_t fingerprint,
                        struct dsd_kv_page_meta *meta, const void *mla, const void *index)
{
    uint8_t *h = rec;
    size_t mla_bytes = dsd_kv_page_mla_bytes(g), index_bytes = dsd_kv_page_index_bytes(g);
    size_t rec_bytes = dsd_kv_page_record_bytes(g);
    uint8_t *m = dsd_kv_page_mla(rec), *x = dsd_kv_page_index(rec, g);
    if (mla && mla != m)
        memmove(m, mla, mla_bytes);
    if (index && index != x)
        memmove(x, index, index_bytes);
    memset(x + index_bytes, 0, rec_bytes - DSD_KV_PAGE_HEADER_BYTES - mla_bytes - index_bytes);
    meta->chain_hash = dsd_kv_chain_hash(meta->parent_hash, meta->tokens);

    memset(h, 0, DSD_KV_PAGE_HEADER_BYTES);
    memcpy(h + OFF_MAGIC, DSD_KV_PAGE_MAGIC, 8);
    put32(h + OFF_VERSION, DSD_KV_PAGE_VERSION);
    put32(h + OFF_HEADER_BYTES, DSD_KV_PAGE_HEADER_BYTES);
    put64(h + OFF_FINGERPRINT, fingerprint);
    put64(h + OFF_RECORD_BYTES, rec_bytes);
    put32(h + OFF_N_LAYERS, (uint32_t)g->n_layers);
    put32(h + OFF_PAGE_TOKENS, DSD_KV_PAGE_TOKENS);
    put64(h + OFF_MLA_PAGE_BYTES, g->mla_page_bytes);
    put64(h + OFF_INDEX_PAGE_BYTES, g->index_page_bytes);
    put64(h + OFF_PARENT_HASH, meta->parent_hash);
    put64(h + OFF_CHAIN_HASH, meta->chain_hash);
    put64(h + OFF_SERIAL, meta->serial);
    put32(h + OFF_DEPTH, meta->depth);
    put64(h + OFF_MLA_SUM, XXH64(m, mla_bytes, 0));
    put64(h + OFF_INDEX_SUM, XXH64(x, index_bytes, 0));
    for (int t = 0; t < DSD_KV_PAGE_TOKENS; t++)
        put32(h + OFF_TOKENS + 4 * t, (uint32_t)meta->tokens[t]);
    put64(h + OFF_HEADER_SUM, header_sum(h));
}

int dsd_kv_page_decode_header(const void *buf, size_t len, const struct dsd_kv_page_geom *g, uint64_t fingerprint,
                              struct dsd_kv_page_meta *meta, struct dsd_err *err)
{
    const uint8_t *h = buf;
    if (!buf || !g)
        return dsd_errf(err, -EINVAL, "kv page: no buffer or geometry");
    if (len < DSD_KV_PAGE_HEADER_BYTES)
        return dsd_errf(err, -ENODATA, "kv page: truncated: %zu bytes, a page header needs %u", len,
                        DSD_KV_PAGE_HEADER_BYTES);
    if (memcmp(h + OFF_MAGIC, DSD_KV_PAGE_MAGIC, 8) != 0)
        return dsd_errf(err, -ENOMSG, "kv page: not a deepseekd KV page (no \"%s\" magic): foreign data",
                        DSD_KV_PAGE_MAGIC);
    uint32_t version = get32(h + OFF_VERSION);
    if (version != DSD_KV_PAGE_VERSION)
        return dsd_errf(err, -EPROTONOSUPPORT,
                        "kv page: format version %u, this deepseekd reads version %u: it was written by %s "
                        "deepseekd (the page is dropped and recomputed; delete the cache directory to reclaim it)",
                        version, DSD_KV_PAGE_VERSION, version > DSD_KV_PAGE_VERSION ? "a newer" : "another");
    uint64_t want = get64(h + OFF_HEADER_SUM), got = header_sum(h);
    if (want != got)
        return dsd_errf(err, -EBADMSG,
                        "kv page: header checksum mismatch (stored %016llx, computed %016llx): corrupt page, "
                        "dropped (a recurring error means failing storage)",
                        (unsigned long long)want, (unsigned long long)got);
    if (get32(h + OFF_HEADER_BYTES) != DSD_KV_PAGE_HEADER_BYTES || get32(h + OFF_PAGE_TOKENS) != DSD_KV_PAGE_TOKENS ||
        get32(h + OFF_RESERVED) != 0)
        return dsd_errf(err, -EPROTONOSUPPORT, "kv page: header size %u, page of %u tokens: not a layout of format "
                        "version %u", get32(h + OFF_HEADER_BYTES), get32(h + OFF_PAGE_TOKENS), DSD_KV_PAGE_VERSION);
    uint64_t fp = get64(h + OFF_FINGERPRINT);
    if (fp != fingerprint)
        return dsd_errf(err, -ESTALE, "kv page: model fingerprint %016llx, the loaded model's is %016llx: a page of "
                        "another model or KV format, not served",
                        (unsigned long long)fp, (unsigned long long)fingerprint);
    if (get32(h + OFF_N_LAYERS) != (uint32_t)g->n_layers || get64(h + OFF_MLA_PAGE_BYTES) != g->mla_page_bytes ||
        get64(h + OFF_INDEX_PAGE_BYTES) != g->index_page_bytes ||
        get64(h + OFF_RECORD_BYTES) != dsd_kv_page_record_bytes(g))
        return dsd_errf(err, -ESTALE, "kv page: geometry %u layers x (%llu + %llu) bytes, expected %d x (%zu + %zu): "
                        "another KV format, not served", get32(h + OFF_N_LAYERS),
                        (unsigned long long)get64(h + OFF_MLA_PAGE_BYTES),
                        (unsigned long long)get64(h + OFF_INDEX_PAGE_BYTES), g->n_layers, g->mla_page_bytes,
                        g->index_page_bytes);
    for (size_t b = OFF_END; b < DSD_KV_PAGE_HEADER_BYTES; b++)
        if (h[b])
            return dsd_errf(err, -EBADMSG, "kv page: nonzero byte %zu in the header's reserved area: corrupt page, "
                            "dropped", b);
    struct dsd_kv_page_meta m;
    m.parent_hash = get64(h + OFF_PARENT_HASH);
    m.chain_hash = get64(h + OFF_CHAIN_HASH);
    m.serial = get64(h + OFF_SERIAL);
    m.depth = get32(h + OFF_DEPTH);
    for (int t = 0; t < DSD_KV_PAGE_TOKENS; t++)
        m.tokens[t] = (int32_t)get32(h + OFF_TOKENS + 4 * t);
    if (dsd_kv_chain_hash(m.parent_hash, m.tokens) != m.chain_hash)
        return dsd_errf(err, -EBADMSG, "kv page: chain hash does not match its parent and tokens: corrupt page, dropped");
    if (meta)
        *meta = m;
    return 0;
}

int dsd_kv_page_verify(const void *rec, size_t len, const struct dsd_kv_page_geom *g, uint64_t fingerprint,
                       struct dsd_kv_page_meta *meta, struct dsd_err *err)
{
    int rc = dsd_kv_page_decode_header(rec, len, g, fingerprint, meta, err);
    if (rc)
        return rc;
    size_t rec_bytes = dsd_kv_page_record_bytes(g);
    if (len < rec_bytes)
        return dsd_errf(err, -ENODATA, "kv page: truncated: %zu of %zu bytes", len, rec_bytes);
    const uint8_t *h = rec;
    const uint8_t *m = dsd_kv_page_mla((void *)rec), *x = dsd_kv_page_index((void *)rec, g);
    size_t mla_bytes = dsd_kv_page_mla_bytes(g), index_bytes = dsd_kv_page_index_bytes(g);
    if (XXH64(m, mla_bytes, 0) != get64(h + OFF_MLA_SUM))
        return dsd_errf(err, -EBADMSG, "kv page: MLA arena checksum mismatch: corrupt page, dropped "
                        "(a recurring error means failing storage)");
    if (XXH64(x, index_bytes, 0) != get64(h + OFF_INDEX_SUM))
        return dsd_errf(err, -EBADMSG, "kv page: index-K arena checksum mismatch: corrupt page, dropped "
                        "(a recurring error means failing storage)");
    for (const uint8_t *p = x + index_bytes; p < h + rec_bytes; p++)
        if (*p)
            return dsd_errf(err, -EBADMSG, "kv page: nonzero padding at byte %zu: corrupt page, dropped",
                            (size_t)(p - h));
    return 0;
}
