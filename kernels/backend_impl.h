/* kernels/backend_impl.h: what every backend struct starts with (for backend implementers;
 * users only see the opaque struct dsd_backend of ops.h). */
#ifndef DSD_KERNELS_BACKEND_IMPL_H
#define DSD_KERNELS_BACKEND_IMPL_H

#include "ops.h"

struct dsd_backend {
    const struct dsd_ops *ops;
    struct dsd_backend_params params;
    struct dsd_model_dims dims;         /* a copy; rope_inv_freq points to rope_inv_freq below */
    float *rope_inv_freq;               /* the backend's host copy, [qk_rope_head_dim/2] */
    struct dsd_kv_layout kv_layout;
    size_t act_bytes;                   /* bytes of one activation element */
    void (*destroy)(struct dsd_backend *be);
};

/* Fills the common part from p (copying the dims and their RoPE table). Returns 0, -EINVAL
 * (dims a backend of this project cannot run; err says which), -ENOMEM. */
int dsd_backend_init_common(struct dsd_backend *be, const struct dsd_backend_params *p, size_t act_bytes,
                            struct dsd_err *err);
/* Frees what dsd_backend_init_common allocated. */
void dsd_backend_fini_common(struct dsd_backend *be);

#endif
