// Sparse MLA attention in the absorbed form over the FP8 paged cache (contract in ops.h).
// STUB: not implemented yet.
#include "cuda_backend.h"

extern "C" {
void cuda_op_mla_attention(struct dsd_backend *be, void *, const void *, const struct dsd_weight *,
                           const struct dsd_kv_layer *, const int32_t *, int, const struct dsd_step *)
{ cuda_fail(cuda(be), -ENOSYS, "mla_attention: not implemented"); }
int cuda_attention_prepare(struct cuda_backend *, struct dsd_model_weights *, struct dsd_err *) { return 0; }
void cuda_attention_release(struct cuda_backend *, struct dsd_model_weights *) {}
}
