/* tools/mkmodel/presets.h: the model shapes deepseekd-mkmodel can write. */
#ifndef DSD_MKMODEL_PRESETS_H
#define DSD_MKMODEL_PRESETS_H

#include "config.h"

/* Fills cfg with preset `name` ("tiny", "small", "full-dims"); returns 0 or -EINVAL. */
int mkmodel_preset(const char *name, struct dsd_model_config *cfg);

#endif
