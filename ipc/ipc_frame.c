#include "ipc_frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A reader keeps at most this much memory between frames; a larger buffer (left by a big
 * frame) is freed once the frame has been handed out, so idle connections stay small. */
#define READER_KEEP_BYTES (64u << 10)

int dsd_ipc_buf_reserve(struct dsd_ipc_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int dsd_ipc_buf_append(struct dsd_ipc_buf *b, const void *data, size_t n)
{
    int rc = dsd_ipc_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

void dsd_ipc_buf_consume(struct dsd_ipc_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void dsd_ipc_buf_free(struct dsd_ipc_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void dsd_ipc_put_prefix(uint8_t out[DSD_IPC_PREFIX_BYTES], uint32_t len)
{
    out[0] = (uint8_t)len;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 24);
}

static uint32_t clamp_max(uint32_t max_frame)
{
    if (max_frame == 0)
        return 1;
    return max_frame > DSD_IPC_FRAME_CEIL ? DSD_IPC_FRAME_CEIL : max_frame;
}

void dsd_ipc_reader_init(struct dsd_ipc_reader *r, uint32_t max_frame)
{
    memset(r, 0, sizeof *r);
    r->max_frame = clamp_max(max_frame);
}

void dsd_ipc_reader_set_max(struct dsd_ipc_reader *r, uint32_t max_frame)
{
    r->max_frame = clamp_max(max_frame);
}

void dsd_ipc_reader_free(struct dsd_ipc_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    r->buf = NULL;
    r->cap = r->have = 0;
}

bool dsd_ipc_reader_idle(const struct dsd_ipc_reader *r)
{
    return r->hdr_have == 0 || r->handed_out;
}

static int fail_too_large(struct dsd_ipc_reader *r, struct dsd_ipc_fail *fail)
{
    if (fail)
        fail->id = 0;
    return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_FRAME_TOO_LARGE,
                         "frame of %u bytes announced, the limit is %u bytes (split the data or "
                         "put prompt tokens in shared memory); closing the connection",
                         r->dead_len, r->max_frame);
}

/* Forgets the frame just handed out and trims a big buffer. */
static void reader_reset_frame(struct dsd_ipc_reader *r)
{
    r->handed_out = false;
    r->hdr_have = 0;
    r->have = 0;
    r->need = 0;
    if (r->cap > READER_KEEP_BYTES) {
        free(r->buf);
        r->buf = NULL;
        r->cap = 0;
    }
}

int dsd_ipc_reader_push(struct dsd_ipc_reader *r, const void *data, size_t len, size_t *used,
                        struct dsd_ipc_frame *frame, struct dsd_ipc_fail *fail)
{
    const uint8_t *p = data;
    size_t off = 0;
    *used = 0;
    if (r->dead)
        return r->dead_len ? fail_too_large(r, fail)
                           : dsd_ipc_failf(fail, -ENOMEM, DSD_IPC_E_INTERNAL,
                                           "frame reader is out of memory");
    if (r->handed_out)
        reader_reset_frame(r);

    if (r->hdr_have < DSD_IPC_PREFIX_BYTES) {
        if (r->hdr_have == 0)
            r->frame_offset = r->offset;
        while (r->hdr_have < DSD_IPC_PREFIX_BYTES && off < len)
            r->hdr[r->hdr_have++] = p[off++];
        if (r->hdr_have < DSD_IPC_PREFIX_BYTES) {
            *used = off;
            r->offset += off;
            return 0;
        }
        r->need = (uint32_t)r->hdr[0] | (uint32_t)r->hdr[1] << 8 | (uint32_t)r->hdr[2] << 16 |
                  (uint32_t)r->hdr[3] << 24;
        if (r->need > r->max_frame) {
            r->dead = true;
            r->dead_len = r->need;
            *used = off;
            r->offset += off;
            return fail_too_large(r, fail);
        }
        r->have = 0;
        /* Zero-copy: the whole body is in the caller's chunk and nothing is buffered. */
        if (len - off >= r->need) {
            frame->body = p + off;
            frame->len = r->need;
            frame->offset = r->frame_offset;
            off += r->need;
            *used = off;
            r->offset += off;
            r->handed_out = true;
            return 1;
        }
    }

    /* Gather the body in our buffer; it never grows beyond the checked length. */
    if (r->cap < r->need) {
        uint8_t *nb = realloc(r->buf, r->need);
        if (!nb) {
            r->dead = true;
            r->dead_len = 0;
            *used = off;
            r->offset += off;
            return dsd_ipc_failf(fail, -ENOMEM, DSD_IPC_E_INTERNAL,
                                 "cannot allocate %u bytes for a frame", r->need);
        }
        r->buf = nb;
        r->cap = r->need;
    }
    size_t take = r->need - r->have;
    if (take > len - off)
        take = len - off;
    if (take)
        memcpy(r->buf + r->have, p + off, take);
    r->have += (uint32_t)take;
    off += take;
    *used = off;
    r->offset += off;
    if (r->have < r->need)
        return 0;
    frame->body = r->buf;
    frame->len = r->need;
    frame->offset = r->frame_offset;
    r->handed_out = true;
    return 1;
}
