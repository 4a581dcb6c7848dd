/* Linear layers on the device: FP8 block-scaled through cuBLASLt, bf16/f32 weights
 * (contract in ops.h). STUB: not implemented yet. */
#include <errno.h>

#include "cuda_backend.h"

void cuda_op_linear(struct dsd_backend *be, void *out, int ldo, const void *x, int ldx, const struct dsd_weight *w,
                    int T, unsigned flags)
{
    (void)out, (void)ldo, (void)x, (void)ldx, (void)w, (void)T, (void)flags;
    cuda_fail(cuda(be), -ENOSYS, "linear: not implemented");
}

int cuda_linear_init(struct cuda_backend *cb, struct dsd_err *err)
{
    (void)cb, (void)err;
    return 0;
}

void cuda_linear_free(struct cuda_backend *cb)
{
    (void)cb;
}
