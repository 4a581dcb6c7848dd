/*
 * ipc/ipc_frame.h: framing of the deepseekd socket (PROTOCOL.md §2): a u32 little-endian
 * body length, then the body (one msgpack map). Bytes come in chunks of any size; a reader
 * turns them into whole frame bodies, checking the length against the maximum before it
 * buffers anything.
 *
 * Reading (the daemon's io_uring loop with provided buffers, or a client's read() loop):
 *
 *   struct dsd_ipc_reader r;
 *   dsd_ipc_reader_init(&r, DSD_IPC_HELLO_FRAME);
 *   ... a chunk (data, n) arrives ...
 *   size_t off = 0;
 *   while (off < n) {
 *       size_t used;
 *       struct dsd_ipc_frame f;
 *       int rc = dsd_ipc_reader_push(&r, data + off, n - off, &used, &f, &fail);
 *       off += used;
 *       if (rc < 0) { send the error in fail; close; break; }   // fatal: frame_too_large
 *       if (rc == 1) handle(f.body, f.len);                      // decode it now
 *   }
 *   ... after hello: dsd_ipc_reader_set_max(&r, negotiated max_frame) ...
 *   dsd_ipc_reader_free(&r);
 *
 * A frame's body pointer is valid until the next push on that reader (and, when the frame
 * lay whole inside the caller's chunk, only while that chunk is: the reader then hands out a
 * pointer into it instead of copying). So decode a frame before pushing again and before
 * returning the chunk's buffer to the kernel. The decoder copies what it keeps.
 *
 * Writing: dsd_ipc_encode() (ipc_msg.h) appends whole frames to a struct dsd_ipc_buf; send
 * its bytes in order, any number at a time.
 *
 * Nothing here blocks, allocates more than max_frame per reader, or keeps global state: one
 * reader per connection, used by one thread at a time.
 */
#ifndef DSD_IPC_FRAME_H
#define DSD_IPC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc_proto.h"

/* A growable byte buffer (the encoder's output). Zero-initialized is a valid empty buffer. */
struct dsd_ipc_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Makes room for `extra` more bytes. Returns 0 or -ENOMEM (the buffer is unchanged). */
int dsd_ipc_buf_reserve(struct dsd_ipc_buf *b, size_t extra);
/* Appends n bytes. Returns 0 or -ENOMEM (unchanged). */
int dsd_ipc_buf_append(struct dsd_ipc_buf *b, const void *data, size_t n);
/* Drops the first n bytes (after they were sent); n > len drops everything. */
void dsd_ipc_buf_consume(struct dsd_ipc_buf *b, size_t n);
/* Frees the memory; the buffer is empty and reusable afterwards. NULL is allowed. */
void dsd_ipc_buf_free(struct dsd_ipc_buf *b);

/* One complete frame body handed out by the reader. */
struct dsd_ipc_frame {
    const uint8_t *body;
    uint32_t len;
    uint64_t offset;        /* stream offset of the frame's first prefix byte (fd pairing) */
};

struct dsd_ipc_reader {
    uint32_t max_frame;
    uint32_t need;          /* body length of the frame being read (valid once hdr_have == 4) */
    uint8_t hdr[DSD_IPC_PREFIX_BYTES];
    uint8_t hdr_have;
    bool dead;              /* a fatal framing error happened; push keeps failing */
    bool handed_out;        /* the previous push returned a frame from buf */
    uint8_t *buf;           /* body bytes gathered so far */
    uint32_t have;
    uint32_t cap;
    uint64_t offset;        /* stream bytes consumed so far */
    uint64_t frame_offset;  /* stream offset of the current frame's prefix */
    uint32_t dead_len;      /* the oversized length, for repeating the error */
};

/* Initializes an empty reader that accepts bodies of at most max_frame bytes (clamped to
 * [1, DSD_IPC_FRAME_CEIL]). Allocates nothing. */
void dsd_ipc_reader_init(struct dsd_ipc_reader *r, uint32_t max_frame);
/* Changes the maximum (after hello). A frame already being read keeps the limit it was
 * checked against. */
void dsd_ipc_reader_set_max(struct dsd_ipc_reader *r, uint32_t max_frame);
/* Frees the buffer. NULL is allowed; the reader may be initialized again. */
void dsd_ipc_reader_free(struct dsd_ipc_reader *r);

/*
 * Consumes bytes from data[0..len) until one frame is complete or the bytes run out.
 * *used is set to the bytes consumed (always, also on error).
 *   1        a frame is complete: *frame describes it; bytes after it were not consumed
 *   0        all len bytes consumed, no frame complete yet
 *   -EPROTO  fatal: the length prefix exceeds max_frame (DSD_IPC_E_FRAME_TOO_LARGE in fail;
 *            the stream cannot be resynchronized: close the connection). Every later call
 *            fails the same way.
 *   -ENOMEM  the body buffer could not be allocated (fail: DSD_IPC_E_INTERNAL); the reader
 *            is left dead too, since the stream position is lost.
 * A zero-length body is returned as a frame (len 0): the decoder reports it as
 * bad_msgpack, and the connection goes on.
 */
int dsd_ipc_reader_push(struct dsd_ipc_reader *r, const void *data, size_t len, size_t *used,
                        struct dsd_ipc_frame *frame, struct dsd_ipc_fail *fail);

/* True when no partial frame is buffered: EOF now is a clean end of stream. EOF in the
 * middle of a frame means the peer sent a truncated frame. */
bool dsd_ipc_reader_idle(const struct dsd_ipc_reader *r);

/* Writes the 4-byte little-endian prefix for a body of len bytes. */
void dsd_ipc_put_prefix(uint8_t out[DSD_IPC_PREFIX_BYTES], uint32_t len);

#endif
