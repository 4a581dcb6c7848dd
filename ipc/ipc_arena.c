#include "ipc_arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN alignof(max_align_t)
#define ARENA_FIRST_CHUNK 4096u

/* Chunks are chained newest first; allocation bumps inside the newest one. */
struct dsd_ipc_arena {
    struct dsd_ipc_arena *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

void *dsd_ipc_arena_alloc(struct dsd_ipc_arena **a, size_t n)
{
    if (n > (SIZE_MAX >> 2))
        return NULL;
    n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (n == 0)
        n = ARENA_ALIGN;
    struct dsd_ipc_arena *c = *a;
    if (!c || c->cap - c->used < n) {
        /* Double the chunk size each time, so a message of S bytes takes O(log S) chunks and
         * at most ~2S bytes. */
        size_t cap = c ? c->cap * 2 : ARENA_FIRST_CHUNK;
        if (cap < n)
            cap = n;
        struct dsd_ipc_arena *nc = malloc(sizeof *nc + cap);
        if (!nc)
            return NULL;
        nc->next = c;
        nc->used = 0;
        nc->cap = cap;
        *a = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void dsd_ipc_arena_free(struct dsd_ipc_arena *a)
{
    while (a) {
        struct dsd_ipc_arena *next = a->next;
        free(a);
        a = next;
    }
}
