/*
 * daemon/model/safetensors.h: reading and writing checkpoints in the safetensors format,
 * single-file or sharded, exactly as Hugging Face publishes them.
 *
 * Reading (zero-copy: tensors point into read-only mmaps of the files):
 *
 *   struct dsd_st_set *set;
 *   struct dsd_err err;
 *   if (dsd_st_open_dir("/models/DeepSeek-V3.2", &set, &err) < 0) { puts(err.msg); ... }
 *   const struct dsd_st_tensor *t = dsd_st_find(set, "model.embed_tokens.weight");
 *   ... t->dtype, t->ndim, t->shape[], t->data, t->nbytes ...
 *   dsd_st_close(set);
 *
 * dsd_st_open_dir() uses DIR/model.safetensors.index.json when present (its "weight_map"
 * names the shard of every tensor; every shard it names is opened, every tensor it lists
 * must exist in that shard, and every tensor of a shard must be listed there), otherwise
 * DIR/model.safetensors. A file is: u64 little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "F8_E4M3", "shape": [..], "data_offsets": [begin, end]}, ...,
 * optional "__metadata__": {str: str}}), then the data section; offsets are relative to
 * the data section.
 *
 * Validation (each failure is a negative errno and a message naming the file and tensor;
 * nothing here may crash on any file content):
 *   - header length larger than the file, or absurdly large (> 100 MiB), or not JSON;
 *   - a tensor entry that is not an object, an unknown dtype string, a shape that is not an
 *     array of non-negative integers, data_offsets not [begin <= end];
 *   - end past the end of the file's data section; (end - begin) != product(shape) * size;
 *   - two tensors whose byte ranges overlap; a name that appears twice (also across shards);
 *   - an index.json that is not JSON, lacks "weight_map", names a shard file that is
 *     missing, or disagrees with the shards.
 * Tensor data pointers are aligned to their element size: if a file's data is not, the
 * tensor is copied into an aligned heap buffer (safetensors itself does not promise it).
 * Opening reads only the headers (with pread, so the kernel does not read megabytes of
 * tensor data around them); "metadata"/"total_size" in the index is not checked, and gaps
 * between tensors are allowed (docs/SAFETENSORS.md says why). A file truncated or rewritten
 * by someone else while it is open makes later access fault (SIGBUS): that is mmap.
 *
 * Writing (used by deepseekd-mkmodel and tests; writes the same format any reader accepts):
 *
 *   struct dsd_st_writer *w = dsd_st_writer_new();
 *   dsd_st_writer_add(w, "model.norm.weight", DSD_DTYPE_F32, 1, (int64_t[]){7168}, data, nbytes);
 *   dsd_st_writer_write(w, "/tmp/m/model.safetensors", &err);
 *   dsd_st_writer_free(w);
 * The writer copies nothing: data must stay valid until dsd_st_writer_write() returns.
 * Files come out byte for byte as the Python safetensors library writes them: data sorted
 * by dtype alignment (widest first), then by name, so every tensor is aligned; the header
 * lists tensors in that order with "__metadata__" first, compact, space-padded to a
 * multiple of 8. Each file goes to PATH.tmp.PID.N first and is renamed over PATH once
 * fsynced, so a crash never leaves half a file under the final name.
 */
#ifndef DSD_MODEL_SAFETENSORS_H
#define DSD_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"

#define DSD_ST_MAX_DIMS 8

struct dsd_st_tensor {
    const char *name;       /* owned by the set */
    enum dsd_dtype dtype;
    int ndim;
    int64_t shape[DSD_ST_MAX_DIMS];
    const void *data;       /* read-only, aligned to the element size */
    uint64_t nbytes;
    int file_index;         /* which file of the set holds it */
};

struct dsd_st_set;


/* Opens DIR as described above. Returns 0, or a negative errno with err set and *out NULL
 * (-ENOENT: no model.safetensors(.index.json) in DIR or a shard missing; -EINVAL: a
 * malformed file; -ENOMEM; -EIO: a file ended while its header was read; other errnos
 * from open/pread/mmap). */
int dsd_st_open_dir(const char *dir, struct dsd_st_set **out, struct dsd_err *err);
/* Opens an explicit list of files (n_paths >= 1) as one set (no index); file_index is the
 * position in paths. Same returns. */
int dsd_st_open_files(const char *const *paths, int n_paths, struct dsd_st_set **out,
                      struct dsd_err *err);
void dsd_st_close(struct dsd_st_set *set); /* NULL is fine */

/* Lookup by exact name; NULL when absent. O(log n) or better. */
const struct dsd_st_tensor *dsd_st_find(const struct dsd_st_set *set, const char *name);
size_t dsd_st_count(const struct dsd_st_set *set);
const struct dsd_st_tensor *dsd_st_at(const struct dsd_st_set *set, size_t i); /* sorted by name */
int dsd_st_file_count(const struct dsd_st_set *set);
const char *dsd_st_file_path(const struct dsd_st_set *set, int file_index);
/* Total bytes of all tensor data in the set. */
uint64_t dsd_st_total_bytes(const struct dsd_st_set *set);

/* Asks the kernel to read every file's pages ahead (MADV_WILLNEED) and then touches one
 * byte per page, whole files split evenly over n_threads threads (1..1024; the calling
 * thread is one of them), so later access does not fault. Returns 0, -EINVAL (bad
 * n_threads) or -errno from madvise. Safe to call while other threads read the set. */
int dsd_st_prefault(const struct dsd_st_set *set, int n_threads, struct dsd_err *err);

struct dsd_st_writer;
struct dsd_st_writer *dsd_st_writer_new(void); /* NULL when out of memory */
/* Returns 0, -EINVAL (bad dtype/shape, nbytes != product(shape)*size, duplicate name, name
 * "__metadata__" or not UTF-8, data NULL with nbytes > 0) or -ENOMEM. */
int dsd_st_writer_add(struct dsd_st_writer *w, const char *name, enum dsd_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, uint64_t nbytes);
/* Adds a "__metadata__" string entry (e.g. {"format": "pt"}); 0, -EINVAL (key already
 * added, not UTF-8) or -ENOMEM. */
int dsd_st_writer_add_metadata(struct dsd_st_writer *w, const char *key, const char *value);
/* Writes the file as described above (a writer without tensors writes a valid empty
 * file); returns 0 or a negative errno with err set (then PATH is as it was and no
 * temporary file is left). */
int dsd_st_writer_write(struct dsd_st_writer *w, const char *path, struct dsd_err *err);
void dsd_st_writer_free(struct dsd_st_writer *w);

/* Writes DIR/model.safetensors.index.json: {"metadata": {"total_size": N},
 * "weight_map": {tensor name: shard file name}} for the given parallel arrays (n >= 1),
 * formatted as transformers writes it (indent 2, sorted keys), atomically like the writer.
 * Returns 0, -EINVAL (a name listed twice, a shard name with '/' or control characters)
 * or another negative errno, with err set. */
int dsd_st_write_index(const char *dir, const char *const *tensor_names,
                       const char *const *shard_names, size_t n, uint64_t total_size,
                       struct dsd_err *err);

#endif
