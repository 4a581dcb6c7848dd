/*
 * daemon/kv/disk_page.h: the record one page of KV is stored as outside the device (the disk
 * tier's slots, daemon/kv/disk_tier.h; the host tier's slots use the same layout,
 * daemon/kv/host_tier.h). Format and checks: docs/KV_CACHE.md §6.
 *
 * A record is a 4096-byte header, then the page's MLA arena (every layer's 64 latent+rope
 * entries, layer after layer), then its index-K arena (every layer's index-K page), zero
 * padding to a multiple of 4096 (O_DIRECT). The header carries a magic, the format version,
 * the model fingerprint, the geometry, the page's chain hash and its parent's
 * (daemon/kv/page_hash.h), its 64 tokens and one xxHash64 checksum per arena plus one over
 * the header. A page is only ever restored whole: verify checks both arenas before anything
 * is handed out.
 *
 *   struct dsd_kv_page_geom g = dsd_kv_page_geom_of(layout, n_layers);
 *   uint64_t fp = dsd_kv_fingerprint(&dims, layout, n_layers, weights_id, id_len);
 *   void *rec = aligned_alloc(DSD_KV_PAGE_ALIGN, dsd_kv_page_record_bytes(&g));
 *   struct dsd_kv_page_meta m = {.parent_hash = ph, .depth = i};
 *   memcpy(m.tokens, tokens + 64 * i, sizeof m.tokens);
 *   dsd_kv_page_encode(rec, &g, fp, &m, mla, index);    // mla/index NULL: already in place
 *   ...
 *   if (dsd_kv_page_verify(rec, len, &g, fp, &m, &err) < 0) drop it (err says why)
 *   else use dsd_kv_page_mla(rec) and dsd_kv_page_index(rec, &g)
 *
 * Error codes of decode_header/verify (err says which field and what to do):
 *   -ENODATA          truncated: fewer bytes than a header, or than the record
 *   -ENOMSG           not a page record (foreign data: the magic is wrong)
 *   -EPROTONOSUPPORT  a format version this build does not read (newer deepseekd)
 *   -EBADMSG          corrupt: a checksum (header, MLA arena, index-K arena), the chain hash
 *                     or the padding does not match
 *   -ESTALE           another model's page (fingerprint) or another KV geometry
 *   -EINVAL           bad arguments
 */
#ifndef DSD_KV_DISK_PAGE_H
#define DSD_KV_DISK_PAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "ops.h"

#define DSD_KV_PAGE_MAGIC "DSDKVPAG"        /* 8 bytes, no terminator stored */
#define DSD_KV_PAGE_VERSION 1u
#define DSD_KV_PAGE_HEADER_BYTES 4096u
#define DSD_KV_PAGE_ALIGN 4096u             /* record size and buffer alignment (O_DIRECT) */

/* What a page's arenas look like: the per-layer byte sizes and the layer count. */
struct dsd_kv_page_geom {
    int n_layers;                           /* num_hidden_layers + MTP layers */
    size_t mla_page_bytes;                  /* one layer: 64 * mla_token_bytes */
    size_t index_page_bytes;                /* one layer: the index-K page */
};

struct dsd_kv_page_geom dsd_kv_page_geom_of(const struct dsd_kv_layout *layout, int n_layers);
size_t dsd_kv_page_mla_bytes(const struct dsd_kv_page_geom *g);     /* all layers */
size_t dsd_kv_page_index_bytes(const struct dsd_kv_page_geom *g);   /* all layers */
size_t dsd_kv_page_record_bytes(const struct dsd_kv_page_geom *g);  /* header + arenas, padded */

/* The model fingerprint: an xxHash64 of every dimension in dims (and its RoPE frequencies),
 * the KV layout, the layer count and the caller's weights identity (bytes that change when
 * the weights do, e.g. a hash of the checkpoint's tensor headers; may be empty). Pages
 * carrying another fingerprint are never served. */
uint64_t dsd_kv_fingerprint(const struct dsd_model_dims *dims, const struct dsd_kv_layout *layout, int n_layers,
                            const void *weights_id, size_t id_len);

/* What identifies a page besides the model. */
struct dsd_kv_page_meta {
    uint64_t parent_hash;                   /* chain hash of the page before (or DSD_KV_CHAIN_ROOT) */
    uint64_t chain_hash;                    /* set by encode from parent_hash and tokens */
    uint64_t serial;                        /* the writer's order (disk tier: LRU after restart) */
    uint32_t depth;                         /* page index in its sequence */
    int32_t tokens[DSD_KV_PAGE_TOKENS];
};

/* Where the arenas sit in a record (or a host-tier slot). */
uint8_t *dsd_kv_page_mla(void *rec);
uint8_t *dsd_kv_page_index(void *rec, const struct dsd_kv_page_geom *g);

/* Writes a whole record (dsd_kv_page_record_bytes bytes) to rec: the header from meta (whose
 * chain_hash it sets), the arenas copied from mla and index (each may be NULL when already
 * in place at dsd_kv_page_mla/index(rec)), the checksums, zero padding. */
void dsd_kv_page_encode(void *rec, const struct dsd_kv_page_geom *g, uint64_t fingerprint,
                        struct dsd_kv_page_meta *meta, const void *mla, const void *index);

/* Checks the header of buf (len bytes read: at least the header) against this model and
 * geometry, filling *meta (may be NULL). Returns 0 or an error code above. */
int dsd_kv_page_decode_header(const void *buf, size_t len, const struct dsd_kv_page_geom *g, uint64_t fingerprint,
                              struct dsd_kv_page_meta *meta, struct dsd_err *err);
/* decode_header, then both arena checksums and the padding: 0 only when the whole record
 * is intact. Returns 0 or an error code above. */
int dsd_kv_page_verify(const void *rec, size_t len, const struct dsd_kv_page_geom *g, uint64_t fingerprint,
                       struct dsd_kv_page_meta *meta, struct dsd_err *err);

#endif
