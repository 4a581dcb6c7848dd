/* Loading a checkpoint directory into a backend (contract in model.h). */
#include "model.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dsd_model_params dsd_model_default_params(void)
{
    return (struct dsd_model_params){
        .numerics = DSD_NUMERICS_PRODUCTION,
        .kv_dtype = DSD_KV_FP8,
        .n_threads = 0,
        .prefault = true,
    };
}

int dsd_model_load(const char *dir, const struct dsd_model_params *p, struct dsd_model **out,
                   struct dsd_err *err)
{
    struct dsd_model *m = calloc(1, sizeof *m);
    if (!m)
        return dsd_errf(err, -ENOMEM, "out of memory");
    m->params = p ? *p : dsd_model_default_params();
    char path[PATH_MAX];
    int rc;
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path) {
        rc = dsd_errf(err, -ENAMETOOLONG, "%s: path too long", dir);
        goto fail;
    }
    if ((rc = dsd_model_config_load(path, &m->cfg, err)))
        goto fail;
    if ((rc = dsd_st_open_dir(dir, &m->set, err)))
        goto fail;
    if ((rc = dsd_weights_bind(&m->cfg, m->set, &m->w, err))) {
        dsd_err_prefix(err, rc, "%s", dir);
        goto fail;
    }
    if (m->params.prefault && (rc = dsd_st_prefault(m->set, m->params.n_threads > 0 ? m->params.n_threads : 4, err)))
        goto fail;
    struct dsd_backend_params bp = dsd_backend_default_params();
    bp.cfg = &m->cfg;
    bp.numerics = m->params.numerics;
    bp.kv_dtype = m->params.kv_dtype;
    bp.n_threads = m->params.n_threads;
    m->be = dsd_backend_cpu_new(&bp, err);
    if (!m->be) {
        rc = -EINVAL;
        goto fail;
    }
    m->ops = dsd_backend_ops(m->be);
    if ((rc = m->ops->prepare_weights(m->be, &m->w, err)))
        goto fail;
    *out = m;
    return 0;
fail:
    dsd_model_free(m);
    return rc;
}

void dsd_model_free(struct dsd_model *m)
{
    if (!m)
        return;
    if (m->be && m->w.layers)
        m->ops->release_weights(m->be, &m->w);
    dsd_backend_free(m->be);
    dsd_weights_free(&m->w);
    dsd_st_close(m->set);
    free(m);
}

struct dsd_kv_cache *dsd_model_kv_cache_new(struct dsd_model *m, int n_pages, struct dsd_err *err)
{
    return dsd_kv_cache_new(m->be, dsd_cfg_total_layers(&m->cfg), n_pages, err);
}
