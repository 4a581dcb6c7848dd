/* Creating the backend a model asks for. The CPU backend is linked in. The CUDA backend is a
 * module (libdsd_backend_cuda.so, kernels/cuda/cuda_module.c) opened only when asked for, so
 * deepseekd runs on machines without the CUDA libraries; it is looked for, in order, at
 * $DSD_CUDA_MODULE, in the install's library folder (lib/deepseekd/), next to the
 * executable, and where this build made it. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsd_cuda.h"
#include "model.h"

#ifndef DSD_CUDA_MODULE_INSTALL
#define DSD_CUDA_MODULE_INSTALL "/usr/local/lib/deepseekd/libdsd_backend_cuda.so"
#endif

static const struct dsd_cuda_module *g_cuda;   /* loaded once, never unloaded */

static const struct dsd_cuda_module *cuda_module(struct dsd_err *err)
{
    if (g_cuda)
        return g_cuda;
    char self[PATH_MAX] = "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash)
            snprintf(slash + 1, sizeof self - (size_t)(slash + 1 - self), "libdsd_backend_cuda.so");
    } else {
        self[0] = 0;
    }
    const char *cands[] = {
        getenv("DSD_CUDA_MODULE"), DSD_CUDA_MODULE_INSTALL, self,
#ifdef DSD_CUDA_MODULE_BUILD
        DSD_CUDA_MODULE_BUILD,
#endif
    };
    char why[512] = "";
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        if (!cands[i] || !cands[i][0] || access(cands[i], R_OK) != 0)
            continue;
        void *h = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *e = dlerror();
            snprintf(why, sizeof why, "%s", e ? e : cands[i]);
            continue;
        }
        const struct dsd_cuda_module *mod = dlsym(h, "dsd_cuda_module");
        if (!mod || mod->abi != DSD_CUDA_MODULE_ABI) {
            snprintf(why, sizeof why, "%s is not this deepseekd's CUDA module (ABI %d, want %d)", cands[i],
                     mod ? mod->abi : -1, DSD_CUDA_MODULE_ABI);
            dlclose(h);
            continue;
        }
        g_cuda = mod;
        return g_cuda;
    }
    dsd_errf(err, -ENOTSUP,
             "the CUDA backend is not installed: %s (build with -DDSD_CUDA=ON and install, or set "
             "DSD_CUDA_MODULE to libdsd_backend_cuda.so)",
             why[0] ? why : "libdsd_backend_cuda.so was not found");
    return NULL;
}

struct dsd_backend *dsd_model_backend_new(enum dsd_model_backend kind, const struct dsd_backend_params *bp,
                                          struct dsd_err *err)
{
    if (kind == DSD_MODEL_BACKEND_CPU)
        return dsd_backend_cpu_new(bp, err);
    const struct dsd_cuda_module *mod = cuda_module(err);
    return mod ? mod->backend_new(bp, err) : NULL;
}

uint64_t dsd_model_device_weight_bytes(const struct dsd_model *m)
{
    if (m->params.backend == DSD_MODEL_BACKEND_CUDA && g_cuda)
        return g_cuda->weight_bytes(m->be);
    return m->load.weight_bytes;     /* the CPU computes from the checkpoint's mmap */
}

const char *dsd_model_device_name(const struct dsd_model *m)
{
    if (m->params.backend == DSD_MODEL_BACKEND_CUDA && g_cuda)
        return g_cuda->device_name(m->be);
    return "cpu";
}

int dsd_model_fp8_gemm_ms(struct dsd_model *m, int M, int N, int K, int iters, double *ms, struct dsd_err *err)
{
    if (m->params.backend != DSD_MODEL_BACKEND_CUDA || !g_cuda || !g_cuda->fp8_gemm_ms)
        return dsd_errf(err, -ENOTSUP, "the %s backend has no separate FP8 GEMM (time the linear op)", m->ops->name);
    return g_cuda->fp8_gemm_ms(m->be, M, N, K, iters, ms, err);
}

int dsd_model_set_engine(struct dsd_model *m, const char *name, const char *value, struct dsd_err *err)
{
    if (m->params.backend != DSD_MODEL_BACKEND_CUDA || !g_cuda || !g_cuda->set_engine)
        return dsd_errf(err, -ENOTSUP, "the %s backend has no engine choices", m->ops->name);
    return g_cuda->set_engine(m->be, name, value, err);
}
