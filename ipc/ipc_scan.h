/*
 * ipc/ipc_scan.h: a bounded structural check of msgpack bytes, run before msgpack-c sees
 * them (PROTOCOL.md §10).
 *
 * Why our own walk: msgpack-c 4.0 allocates count x 24 bytes (array) or count x 48 (map) the
 * moment it reads a container header, before it has seen a single element, so the 5 bytes
 * `dd 01 00 00 00` make it allocate 384 MiB, and it aborts on nesting deeper than 32. This walk
 * allocates nothing and checks, for one complete object that must span the whole body:
 *   - every str/bin/ext length fits in the bytes that remain;
 *   - every array/map count fits: each element still owed needs at least one byte, so the
 *     total number of owed elements never exceeds the remaining bytes;
 *   - container nesting depth <= max_depth (the top-level map is depth 1; empty containers
 *     count too);
 *   - number of objects (scalars, containers, keys and values all count) <= max_objects;
 *   - no reserved byte 0xc1, no bytes after the object.
 * When it passes, msgpack_unpack_next() on the same bytes allocates at most about
 * 48 bytes x objects and cannot hit its own nesting limit (max_depth is capped at 32).
 *
 *   uint32_t n;
 *   if (dsd_ipc_scan(body, len, DSD_IPC_MAX_DEPTH, DSD_IPC_MAX_OBJECTS, &n, &fail) < 0)
 *       ... fail.code is DSD_IPC_E_BAD_MSGPACK or DSD_IPC_E_TOO_COMPLEX ...
 */
#ifndef DSD_IPC_SCAN_H
#define DSD_IPC_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "ipc_proto.h"

#define DSD_IPC_SCAN_DEPTH_CEIL 32  /* msgpack-c's MSGPACK_EMBED_STACK_SIZE */

/* Returns 0 (and the object count in *ret_objects, which may be NULL) or -EPROTO with fail
 * set to DSD_IPC_E_BAD_MSGPACK (malformed, truncated, trailing bytes, a length beyond the end)
 * or DSD_IPC_E_TOO_COMPLEX (depth or object count over the limit). max_depth is clamped to
 * [1, DSD_IPC_SCAN_DEPTH_CEIL]. fail->id is not touched. */
int dsd_ipc_scan(const uint8_t *body, size_t len, uint32_t max_depth, uint32_t max_objects,
                 uint32_t *ret_objects, struct dsd_ipc_fail *fail);

#endif
