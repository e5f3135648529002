/* export.h: a trained model written for other tools: safetensors for PyTorch, ONNX for
 * ONNX Runtime.
 *
 * Both hold the parameters under PyTorch's names and shapes, those of a CVAE whose first
 * layers take the concatenation [x, c] (or [z, c]), as nn.Linear(D + K, H1) does:
 *   enc.{i}.weight (H_{i+1}, in), enc.{i}.bias   the encoder's hidden layers; enc.0's
 *                                                weight is (H1, D + K) = [W1 | T1^T]
 *   head.weight (2L, Hn), head.bias              [mean | logvar] of q(z|x,c)
 *   dec.{i}.weight, dec.{i}.bias                 the decoder's hidden layers; dec.0's
 *                                                weight is (Hn, L + K) = [V1 | U1^T]
 *   out.weight (D, H1), out.bias                 the logits of p(x|z,c)
 *   prior_mean.weight, prior_logvar.weight (L, K) the learned prior's maps (M, R), with
 *                                                --prior conditional only
 * and the model's configuration as one JSON object (docs/design.md 4.6). */
#ifndef CVAE_EXPORT_H
#define CVAE_EXPORT_H

#include "cvae/checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What an export is made from. */
typedef struct {
    const cv_checkpoint *ck;
    char checkpoint_sha256[65];    /* the checkpoint file's SHA-256, lowercase hex */
    const char *const *class_names;/* K names of the classes, or NULL when unknown */
} cv_export_source;

/* path (a .safetensors file, which must not exist yet): every tensor as F32, the header's
 * __metadata__ holding {"format": "pt", "cvae": CONFIG_JSON}. Written whole or not at
 * all (temporary name, fsync, rename). */
cv_status cv_export_safetensors(const cv_export_source *src, const char *path, cv_err *err);

/* DIR/encoder.onnx ((x, c) -> mean, logvar), DIR/decoder.onnx ((z, c) -> x_mean) and,
 * with a learned prior, DIR/prior.onnx (c -> prior_mean, prior_logvar): opset 13, a
 * dynamic batch dimension "N", the configuration in metadata_props["cvae"]. DIR is made
 * with its parents; none of the files may exist yet, and either all are written or
 * none. CV_ERR_USAGE in a build without ONNX export. */
cv_status cv_export_onnx(const cv_export_source *src, const char *dir, cv_err *err);

#ifdef __cplusplus
}
#endif

#endif
