// The dense SwiGLU MLP and the MoE block on the device (contracts in ops.h).
// STUB: not implemented yet.
#include "cuda_backend.h"

extern "C" {
void cuda_op_mlp(struct dsd_backend *be, void *, const void *, const struct dsd_expert_weights *, int)
{ cuda_fail(cuda(be), -ENOSYS, "mlp: not implemented"); }
void cuda_op_moe(struct dsd_backend *be, void *, const void *, const struct dsd_layer_weights *, int)
{ cuda_fail(cuda(be), -ENOSYS, "moe: not implemented"); }
int cuda_moe_prepare(struct cuda_backend *, struct dsd_model_weights *, struct dsd_err *) { return 0; }
void cuda_moe_release(struct cuda_backend *, struct dsd_model_weights *) {}
}
