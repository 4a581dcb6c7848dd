/*
 * libFuzzer target: the frame reader and the message decoder, both directions.
 *
 * Input: byte 0 chooses the direction (bit 0) and the reader's chunking (bits 1..7); the rest
 * is a byte stream. It is decoded twice:
 *   1. as one frame body (dsd_ipc_decode);
 *   2. as a stream pushed through a reader with a small max_frame in varying chunk sizes, each
 *      complete frame decoded.
 * Every successful decode must re-encode, decode again, and re-encode to the same bytes (a
 * decoded message holds nothing the encoder cannot write and vice versa); every failure must
 * carry a known code and a message. Violations abort, which libFuzzer reports.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc_frame.h"
#include "ipc_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_decoded(const uint8_t *body, size_t len, enum dsd_ipc_dir dir)
{
    struct dsd_ipc_msg m;
    struct dsd_ipc_fail fail;
    int rc = dsd_ipc_decode(body, len, dir, &m, &fail);
    if (rc < 0) {
        if (!dsd_ipc_code_name(fail.code) || !fail.err.msg[0] || m.arena || m.type)
            abort();
        /* The error frame built from any failure must itself decode. */
        struct dsd_ipc_buf eb = {0};
        struct dsd_ipc_msg em;
        if (dsd_ipc_encode_fail(&eb, &fail, DSD_IPC_HELLO_FRAME, NULL) < 0 ||
            dsd_ipc_decode(eb.data + 4, eb.len - 4, DSD_IPC_TO_CLIENT, &em, NULL) < 0)
            abort();
        dsd_ipc_msg_free(&em);
        dsd_ipc_buf_free(&eb);
        return;
    }
    struct dsd_ipc_buf b1 = {0}, b2 = {0};
    struct dsd_ipc_msg m2;
    if (dsd_ipc_encode(&b1, &m, DSD_IPC_FRAME_CEIL, NULL) < 0)
        abort();
    if (dsd_ipc_decode(b1.data + 4, b1.len - 4, dir, &m2, &fail) < 0) {
        fprintf(stderr, "re-decode failed: %s\n", fail.err.msg);
        abort();
    }
    if (dsd_ipc_encode(&b2, &m2, DSD_IPC_FRAME_CEIL, NULL) < 0 || b1.len != b2.len ||
        memcmp(b1.data, b2.data, b1.len) != 0)
        abort();
    dsd_ipc_msg_free(&m2);
    dsd_ipc_msg_free(&m);
    dsd_ipc_buf_free(&b1);
    dsd_ipc_buf_free(&b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum dsd_ipc_dir dir = (data[0] & 1) ? DSD_IPC_TO_CLIENT : DSD_IPC_TO_DAEMON;
    size_t step = 1 + (data[0] >> 1);
    const uint8_t *body = data + 1;
    size_t len = size - 1;

    check_decoded(body, len, dir);

    struct dsd_ipc_reader r;
    dsd_ipc_reader_init(&r, 4096);
    size_t off = 0;
    while (off < len) {
        size_t n = step < len - off ? step : len - off;
        size_t at = 0;
        while (at < n) {
            size_t used;
            struct dsd_ipc_frame f;
            struct dsd_ipc_fail fail;
            int rc = dsd_ipc_reader_push(&r, body + off + at, n - at, &used, &f, &fail);
            if (used > n - at)
                abort();
            at += used;
            if (rc < 0) {
                if (fail.code != DSD_IPC_E_FRAME_TOO_LARGE)
                    abort();
                goto done;
            }
            if (rc == 1) {
                if (f.len > 4096)
                    abort();
                check_decoded(f.body, f.len, dir);
            }
        }
        off += n;
    }
done:
    dsd_ipc_reader_free(&r);
    return 0;
}
