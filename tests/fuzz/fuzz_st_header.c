/*
 * tests/fuzz/fuzz_st_header.c: libFuzzer target for the safetensors header parser.
 *
 * The input is a whole file image (8-byte length, JSON header, data). libFuzzer hands it over
 * in a heap buffer of exactly its size, so the address sanitizer flags any read past it.
 * Besides "never crash", every accepted file must keep the reader's promises: each tensor's
 * bytes readable, its pointer aligned to its element size, lookup by name finding it; every
 * rejected one must say why.
 */
#include "safetensors_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dsd_st_set *set = NULL;
    struct dsd_err err = {{0}};
    int rc = dsd_st_open_image("fuzz.safetensors", data, size, &set, &err);
    if (rc < 0) {
        if (set || err.msg[0] == 0)
            abort();
        return 0;
    }
    uint8_t sink = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < dsd_st_count(set); i++) {
        const struct dsd_st_tensor *t = dsd_st_at(set, i);
        if (dsd_st_find(set, t->name) != t || t->ndim < 0 || t->ndim > DSD_ST_MAX_DIMS)
            abort();
        if ((uintptr_t)t->data % dsd_dtype_size(t->dtype) != 0)
            abort();
        if (i > 0 && strcmp(dsd_st_at(set, i - 1)->name, t->name) >= 0)
            abort();
        uint64_t n = dsd_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++)
            n *= (uint64_t)t->shape[d];
        if (n != t->nbytes || t->nbytes > size)
            abort();
        for (uint64_t b = 0; b < t->nbytes; b++)
            sink ^= ((const uint8_t *)t->data)[b];
        total += t->nbytes;
    }
    if (total != dsd_st_total_bytes(set) || total > size)
        abort();
    /* Uses every byte read above, so none of the reads can be optimized away. */
    __asm__ volatile("" : : "r"(sink));
    dsd_st_close(set);
    return 0;
}
