/*
 * daemon/model/safetensors_internal.h: pieces of the safetensors module shared between its
 * reader, its writer, the fuzzers and the unit tests. Not part of the model loader's API.
 */
#ifndef DSD_MODEL_SAFETENSORS_INTERNAL_H
#define DSD_MODEL_SAFETENSORS_INTERNAL_H

#include <stddef.h>

#include "safetensors.h"

/* Largest JSON header accepted; the Python library's limit is 100 MB, ours 100 MiB. */
#define DSD_ST_MAX_HEADER_BYTES ((uint64_t)100 << 20)
/* Largest model.safetensors.index.json accepted (V3.2's is about 9 MB). */
#define DSD_ST_MAX_INDEX_BYTES ((size_t)256 << 20)
#define DSD_ST_INDEX_NAME "model.safetensors.index.json"
#define DSD_ST_SINGLE_NAME "model.safetensors"

/* Opens one in-memory file image (8-byte length, header, data) as a one-file set, exactly
 * as dsd_st_open_files() would open a file with those bytes. The set neither owns nor
 * copies image (except unaligned tensors): image must outlive the set. label names the
 * "file" in error messages. Same returns as dsd_st_open_files(). Used by the fuzzer, whose
 * heap-allocated input lets the address sanitizer see any read past the image. */
int dsd_st_open_image(const char *label, const void *image, size_t size,
                      struct dsd_st_set **out, struct dsd_err *err);

/* Why name may not be a shard file name in an index (it must be a plain file name inside
 * the model directory), or NULL when it is fine. */
const char *dsd_st_shard_name_problem(const char *name);

#endif
