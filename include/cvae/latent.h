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
#include "cvae/generate.h"
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

/* A latent traversal: for each of the R conditions of cond, a row per latent unit, the
 * `units` most active first; column k holds unit j at t_k = -3 + 6 k / (steps - 1)
 * standard deviations of the prior p(z|c) from its mean, every other unit at the mean.
 * activity (L) ranks the units; NULL ranks them by how much their rows vary: the variance
 * across the row of the decoded means, summed over pixels and conditions (a unit the
 * decoder ignores scores 0), which decodes every unit's rows once more (L R steps rows,
 * each GEMM of the first decoder layer L wide). Ties keep the unit order. order (L)
 * receives every unit, most active first. ws holds at least `steps` rows; steps >= 2. */
cv_status cv_latent_traversal(cv_model *model, cv_workspace *ws, const cv_gen_conditions *cond,
                              int units, int steps, const double *activity, cv_tiles *out,
                              int *order, cv_err *err);

/* Each unit's activity over the first min(count, split->n) images of split: the variance
 * of its posterior mean (the measure of active units, docs/design.md 1.11), into
 * activity (L). Encodes in batches of at most ws->max_rows rows (and 2^22 host floats). */
cv_status cv_posterior_activity(cv_model *model, cv_workspace *ws, const cv_split *split,
                                int count, double *activity, cv_err *err);

/* The path between the posterior means mu_a, mu_b of images a and b of split: a row per
 * distinct condition of the two (a's, then b's), each image a, then z_k = mu_a + k / (steps
 * - 1) (mu_b - mu_a) decoded under the row's condition for k < steps, then image b. ws holds
 * at least `steps` rows; steps >= 2. */
cv_status cv_latent_interpolation(cv_model *model, cv_workspace *ws, const cv_split *split,
                                  int a, int b, int steps, cv_tiles *out, cv_err *err);

#ifdef __cplusplus
}
#endif

#endif
