/* latent.h: a model's latent space reached from outside, batched through the backend.
 *
 * Encoding gives the posterior q(z|x,c) = N(mean, diag exp(logvar)) of given images as
 * rows [mean | logvar] (the log-variance clamped to [-30, 30], as the model clamps it);
 * decoding gives E[x|z,c] of given latents: the Bernoulli probabilities, or the Gaussian
 * means, sigmoid(logits) (docs/design.md 1.2 to 1.4). Both run on any backend, a batch of
 * at most ws->max_rows rows at a time, for any number of rows.
 */
#ifndef CVAE_LATENT_H
#define CVAE_LATENT_H

#include "cvae/data.h"
#include "cvae/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Images [first, first + rows) of split, with their labels or condition rows, into ws
 * (x = pixel / 255, or the floats); rows <= ws->max_rows. CV_ERR_NOMEM when the host
 * scratch cannot be had. */
cv_status cv_workspace_load_split(cv_model *model, cv_workspace *ws, const cv_split *split,
                                  int first, int rows, cv_err *err);

/* The posterior of every image of split: out (split->n, 2L) = [mean | logvar] per row. The
 * split must be what the model takes (cv_model_takes). */
cv_status cv_encode_split(cv_model *model, cv_workspace *ws, const cv_split *split,
                          float *out, cv_err *err);

/* E[x|z,c] of the rows decoded last (cv_model_decode: ws->act[n_layers - 1] holds their
 * logits) into out (rows, D), host memory. */
void cv_decoded_means(cv_model *model, cv_workspace *ws, int rows, float *out);

#ifdef __cplusplus
}
#endif

#endif
