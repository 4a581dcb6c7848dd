// KV stores on the device: the 656-byte FP8 MLA entry and the FP8 index key (contracts in ops.h).
// STUB: not implemented yet.
#include "cuda_backend.h"

extern "C" {
void cuda_op_mla_kv_store(struct dsd_backend *be, const struct dsd_kv_layer *, const void *, int, const int32_t *, int)
{ cuda_fail(cuda(be), -ENOSYS, "mla_kv_store: not implemented"); }
void cuda_op_index_k_store(struct dsd_backend *be, const struct dsd_kv_layer *, const void *, const int32_t *, int)
{ cuda_fail(cuda(be), -ENOSYS, "index_k_store: not implemented"); }
}
