/* kernels/backend_impl.h: what every backend struct starts with (for backend implementers;
 * users only see the opaque struct dsd_backend of ops.h). */
#ifndef DSD_KERNELS_BACKEND_IMPL_H
#define DSD_KERNELS_BACKEND_IMPL_H

#include "ops.h"

struct dsd_backend {
    const struct dsd_ops *ops;
    struct dsd_backend_params params;
    struct dsd_model_config cfg;        /* a copy: params.cfg points here */
    struct dsd_kv_layout kv_layout;
    void (*destroy)(struct dsd_backend *be);
};

#endif
