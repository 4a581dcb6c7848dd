// Embedding, norms, RoPE, row copies and conversions on the device (contracts in ops.h).
// STUB: not implemented yet; every op records a failure that synchronize reports.
#include "cuda_backend.h"

extern "C" {
void cuda_op_embed(struct dsd_backend *be, void *, const struct dsd_weight *, const int32_t *, int)
{ cuda_fail(cuda(be), -ENOSYS, "embed: not implemented"); }
void cuda_op_rmsnorm(struct dsd_backend *be, void *, int, const void *, int, const struct dsd_weight *, int, int)
{ cuda_fail(cuda(be), -ENOSYS, "rmsnorm: not implemented"); }
void cuda_op_add_rmsnorm(struct dsd_backend *be, void *, void *, const void *, const struct dsd_weight *, int)
{ cuda_fail(cuda(be), -ENOSYS, "add_rmsnorm: not implemented"); }
void cuda_op_layernorm(struct dsd_backend *be, void *, const void *, const struct dsd_weight *, const struct dsd_weight *, int, int)
{ cuda_fail(cuda(be), -ENOSYS, "layernorm: not implemented"); }
void cuda_op_rope(struct dsd_backend *be, void *, int, int, int, int, const int32_t *, int, bool)
{ cuda_fail(cuda(be), -ENOSYS, "rope: not implemented"); }
void cuda_op_concat(struct dsd_backend *be, void *, const void *, int, const void *, int, int)
{ cuda_fail(cuda(be), -ENOSYS, "concat: not implemented"); }
void cuda_op_gather_rows(struct dsd_backend *be, void *, const void *, int, const int32_t *, int)
{ cuda_fail(cuda(be), -ENOSYS, "gather_rows: not implemented"); }
void cuda_op_to_f32(struct dsd_backend *be, float *, const void *, int, int)
{ cuda_fail(cuda(be), -ENOSYS, "to_f32: not implemented"); }
void cuda_op_from_f32(struct dsd_backend *be, void *, const float *, int, int)
{ cuda_fail(cuda(be), -ENOSYS, "from_f32: not implemented"); }
}
