/* tests/model/ckpt_variant.h: bad (or odd) checkpoints for tests, written from a good one.
 *
 *   char *dir = ckpt_variant(tiny_dir, tmp_dir, "nanweight",
 *                            "model.layers.0.self_attn.o_proj.weight", "fp8_nan", true);
 *   ... load or serve `dir` (a static buffer: copy it before the next call) ...
 */
#ifndef DSD_TEST_CKPT_VARIANT_H
#define DSD_TEST_CKPT_VARIANT_H

#include <stdbool.h>

/* Writes tmp/<name>/ = the single-file checkpoint `good` (config.json + model.safetensors)
 * with tensor `victim` changed by `how`:
 *   "drop": removed; "shape": one row less; "dtype": stored as I32 (4-byte) data;
 *   "scale_drop": its weight_scale_inv removed; "scale_shape": scale with one column less;
 *   "scale_neg": the scale's first entry negated; "fp8_nan": every byte of an FP8 weight 0x7f
 *   (e4m3's NaN; the loader does not read weight bytes, so the model loads and its logits are
 *   NaN); "bf16": an FP8 weight stored as BF16.
 * keep_quant_config false writes config.json without the FP8 quantization config. Returns the
 * directory (a static buffer); aborts on I/O errors (a test's setup). */
/* Copies a file byte for byte (nothing when either side cannot be opened). */
void ckpt_copy_file(const char *src, const char *dst);

char *ckpt_variant(const char *good, const char *tmp, const char *name, const char *victim, const char *how,
                   bool keep_quant_config);

#endif
