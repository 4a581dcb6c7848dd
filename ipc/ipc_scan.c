#include "ipc_scan.h"

#include <errno.h>

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

int dsd_ipc_scan(const uint8_t *body, size_t len, uint32_t max_depth, uint32_t max_objects,
                 uint32_t *ret_objects, struct dsd_ipc_fail *fail)
{
    if (max_depth < 1)
        max_depth = 1;
    if (max_depth > DSD_IPC_SCAN_DEPTH_CEIL)
        max_depth = DSD_IPC_SCAN_DEPTH_CEIL;
    if (len == 0)
        return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK, "frame body is empty");

    /* left[d]: elements still owed by the open container at depth d (left[0]: the root). */
    uint64_t left[DSD_IPC_SCAN_DEPTH_CEIL + 1];
    uint32_t depth = 0;
    uint64_t owed = 1;      /* elements owed by all open containers together */
    uint32_t objects = 0;
    size_t pos = 0;
    left[0] = 1;

    while (owed > 0) {
        size_t rest = len - pos;
        /* Every owed element needs at least one more byte. This is the check that keeps a
         * declared count from ever exceeding what the frame can hold. */
        if (owed > rest)
            return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                                 "msgpack is truncated: %llu more objects declared but only "
                                 "%zu bytes left (at byte %zu)",
                                 (unsigned long long)owed, rest, pos);
        if (objects >= max_objects)
            return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_TOO_COMPLEX,
                                 "more than %u msgpack objects in one frame", max_objects);
        size_t at = pos;
        uint8_t b = body[pos++];
        rest--;
        objects++;
        owed--;
        left[depth]--;

        uint64_t skip = 0;      /* payload bytes after the header */
        uint64_t elems = 0;     /* elements a container owes */
        int is_container = 0;
        int lenbytes = 0;       /* size of an explicit length field */
        int extra = 0;          /* ext type byte */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            skip = 0;
        } else if (b <= 0x8f) {
            is_container = 1;
            elems = 2u * (b & 0x0f);
        } else if (b <= 0x9f) {
            is_container = 1;
            elems = b & 0x0f;
        } else if (b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc1:
                return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                                     "byte 0xc1 (never used by msgpack) at byte %zu", at);
            case 0xc4: case 0xd9: lenbytes = 1; break;             /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;             /* bin16, str16 */
            case 0xc6: case 0xdb: lenbytes = 4; break;             /* bin32, str32 */
            case 0xc7: lenbytes = 1; extra = 1; break;             /* ext8 */
            case 0xc8: lenbytes = 2; extra = 1; break;             /* ext16 */
            case 0xc9: lenbytes = 4; extra = 1; break;             /* ext32 */
            case 0xca: skip = 4; break;                            /* float32 */
            case 0xcb: skip = 8; break;                            /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;                 /* (u)int8 */
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                            /* fixext1..16 + type */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: case 0xdd: case 0xde: case 0xdf: {          /* array16/32, map16/32 */
                int n = (b == 0xdc || b == 0xde) ? 2 : 4;
                if ((size_t)n > rest)
                    return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                                         "msgpack is truncated inside a container header at "
                                         "byte %zu", at);
                elems = be(body + pos, n);
                if (b >= 0xde)
                    elems *= 2;
                pos += n;
                rest -= n;
                is_container = 1;
                break;
            }
            }
        }

        if (lenbytes) {
            if ((size_t)lenbytes > rest)
                return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                                     "msgpack is truncated inside a length field at byte %zu",
                                     at);
            skip = be(body + pos, lenbytes) + (uint64_t)extra;
            pos += lenbytes;
            rest -= lenbytes;
        }
        if (skip > rest)
            return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                                 "msgpack object at byte %zu declares %llu bytes but only %zu "
                                 "remain",
                                 at, (unsigned long long)skip, rest);
        pos += skip;
        rest -= skip;

        if (is_container) {
            if (depth + 1 > max_depth)
                return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_TOO_COMPLEX,
                                     "msgpack nesting deeper than %u at byte %zu", max_depth, at);
            /* owed <= rest held before this object; check the new total the same way. */
            if (elems > rest || owed + elems > rest)
                return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                                     "msgpack %s at byte %zu declares %llu elements but only "
                                     "%zu bytes remain",
                                     (b & 0xf0) == 0x80 || b >= 0xde ? "map" : "array", at,
                                     (unsigned long long)(b >= 0xde || (b & 0xf0) == 0x80
                                                              ? elems / 2 : elems),
                                     rest);
            depth++;
            left[depth] = elems;
            owed += elems;
        }
        while (depth > 0 && left[depth] == 0)
            depth--;
    }
    if (pos != len)
        return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                             "%zu bytes after the end of the msgpack object (a frame holds "
                             "exactly one map)",
                             len - pos);
    if (ret_objects)
        *ret_objects = objects;
    return 0;
}
