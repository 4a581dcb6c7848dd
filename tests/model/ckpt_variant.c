/* Checkpoint variants for tests (contract in ckpt_variant.h). */
#include "ckpt_variant.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"

void ckpt_copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    char buf[65536];
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

/* (what each `how` does: ckpt_variant.h) */
char *ckpt_variant(const char *good, const char *tmp, const char *name, const char *victim, const char *how,
                   bool keep_quant_config)
{
    static char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    mkdir(dir, 0755);
    char src[PATH_MAX], dst[PATH_MAX];
    snprintf(src, sizeof src, "%s/config.json", good);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    if (keep_quant_config) {
        ckpt_copy_file(src, dst);
    } else {
        struct dsd_model_config c;
        struct dsd_err e;
        dsd_model_config_load(src, &c, &e);
        c.fp8_weights = false;
        dsd_model_config_save(&c, dst, &e);
    }
    struct dsd_st_set *set;
    struct dsd_err err;
    if (dsd_st_open_dir(good, &set, &err))
        abort();
    struct dsd_st_writer *w = dsd_st_writer_new();
    char scale_name[256];
    snprintf(scale_name, sizeof scale_name, "%.*s.weight_scale_inv", (int)(strlen(victim) - 7), victim);
    void *owned[4] = {0};
    int n_owned = 0;
    for (size_t i = 0; i < dsd_st_count(set); i++) {
        const struct dsd_st_tensor *t = dsd_st_at(set, i);
        int64_t shape[DSD_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        enum dsd_dtype dt = t->dtype;
        const void *data = t->data;
        uint64_t nbytes = t->nbytes;
        bool is_victim = !strcmp(t->name, victim), is_scale = !strcmp(t->name, scale_name);
        if (is_victim && !strcmp(how, "drop"))
            continue;
        if (is_scale && !strcmp(how, "scale_drop"))
            continue;
        if (is_victim && !strcmp(how, "shape")) {
            shape[0]--;
            nbytes = nbytes / (uint64_t)t->shape[0] * (uint64_t)shape[0];
        }
        if (is_victim && !strcmp(how, "dtype")) {       /* same bytes reinterpreted: 4-byte ints */
            dt = DSD_DTYPE_I32;
        }
        if (is_victim && !strcmp(how, "bf16")) {
            uint16_t *b = malloc(nbytes * 2);
            for (uint64_t k = 0; k < nbytes; k++)
                b[k] = 0x3f80;
            data = owned[n_owned++] = b;
            nbytes *= 2;
            dt = DSD_DTYPE_BF16;
        }
        if (is_scale && !strcmp(how, "bf16"))
            continue;
        if (is_scale && !strcmp(how, "scale_shape")) {
            shape[1]--;
            nbytes = (uint64_t)shape[0] * (uint64_t)shape[1] * 4;
        }
        if (is_scale && !strcmp(how, "scale_neg")) {
            float *f = malloc(nbytes);
            memcpy(f, t->data, nbytes);
            f[0] = -f[0];
            data = owned[n_owned++] = f;
        }
        if (is_victim && !strcmp(how, "fp8_nan")) {
            uint8_t *b = malloc(nbytes);
            memset(b, 0x7f, nbytes);
            data = owned[n_owned++] = b;
        }
        if (dsd_st_writer_add(w, t->name, dt, t->ndim, shape, data, nbytes))
            abort();
    }
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    if (dsd_st_writer_write(w, dst, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    dsd_st_writer_free(w);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    dsd_st_close(set);
    return dir;
}

