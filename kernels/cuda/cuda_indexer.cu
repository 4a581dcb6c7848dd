// The DSA lightning indexer's scores and exact top-k on the device (contract in ops.h).
// STUB: not implemented yet.
#include "cuda_backend.h"

extern "C" void cuda_op_indexer_topk(struct dsd_backend *be, int32_t *, int, const void *, const float *,
                                     const struct dsd_kv_layer *, const struct dsd_step *)
{
    cuda_fail(cuda(be), -ENOSYS, "indexer_topk: not implemented");
}
