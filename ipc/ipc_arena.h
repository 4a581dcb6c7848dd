/*
 * ipc/ipc_arena.h (internal): the bump allocator that holds one decoded message, so a message
 * is freed with one call and the decoder needs no per-field cleanup on its error paths.
 */
#ifndef DSD_IPC_ARENA_H
#define DSD_IPC_ARENA_H

#include <stddef.h>

struct dsd_ipc_arena;

/* Returns n zeroed bytes aligned for any scalar type, or NULL when out of memory (or when n
 * is absurd). *a may be NULL (the first chunk is created). */
void *dsd_ipc_arena_alloc(struct dsd_ipc_arena **a, size_t n);
/* Frees every chunk. NULL is allowed. */
void dsd_ipc_arena_free(struct dsd_ipc_arena *a);

#endif
