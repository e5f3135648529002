/* model_iwae.c: the IWAE objective's training passes (Burda et al. 2015; docs/design.md
 * 1.6), written over the backend table like model.c.
 *
 * Each of B images is encoded once and drawn K times; the draws are stored draw by draw
 * (sample row k * B + b is draw k of image b), so that the decoder runs once over K B rows,
 * and draw k of every image reads the batch's contiguous rows k * B .. k * B + B - 1 of
 * the images and labels copied there. With log w_k = -rec_k + beta (log p(z_k|c) -
 * log q(z_k|x,c)), an image's loss is -log (1/K sum_k w_k), and its gradient is
 * sum_k w~_k (-grad log w_k), w~ the normalised weights: the decoder's logit gradient of
 * each draw weighted by w~_k (scale_rows), and the latent gradient by iwae_backward.
 */
#include "cvae/model.h"
#include "cvae/rng.h"
#include "model/model_internal.h"

/* The images, labels and condition rows of draw 0 copied for draws 1 .. K-1. */
static void repeat_batch(cv_model *m, cv_workspace *ws, int rows) {
    cv_backend *be = m->be;
    const size_t B = (size_t)rows, D = (size_t)m->layout.dim, K = (size_t)m->layout.cfg.cond_width;
    for (size_t k = 1; k < (size_t)ws->samples; k++) {
        be->copy(be, ws->x + k * B * D, ws->x, B * D * sizeof(float));
        be->copy(be, ws->labels + k * B, ws->labels, B * sizeof(int32_t));
        if (ws->cond) be->copy(be, ws->cond + k * B * K, ws->cond, B * K * sizeof(float));
    }
}

void cv_model_iwae_forward(cv_model *m, cv_workspace *ws, int rows, const cv_noise *noise,
                           int loss_rows, float beta) {
    CV_ASSERT(rows >= 1 && (long long)rows * ws->samples <= ws->sample_rows && ws->weights &&
              loss_rows >= rows);
    cv_backend *be = m->be;
    const cv_layout *lo = &m->layout;
    const int K = ws->samples, L = lo->cfg.latent, S = rows * K;
    cv_model_encode(m, ws, rows);
    cv_prior prior;
    const cv_prior *p = cv_model_batch_prior(m, ws, rows, &prior);
    const float *enc = ws->act[lo->n_enc - 1];
    for (int k = 0; k < K; k++) {
        const size_t at = (size_t)k * rows;
        be->reparam_forward(be, enc, ws->eps + at * L, noise->draw, noise->seed,
                            noise->stream_base + CV_STREAM_IWAE_SAMPLE(k), noise->st,
                            noise->first_row, p, ws->labels, ws->z + at * L, ws->kl + at,
                            ws->log_ratio + at, rows, L);
    }
    repeat_batch(m, ws, rows);
    cv_model_layers_forward(m, ws, S, lo->n_enc, lo->n_layers, ws->z);
    cv_model_reconstruction(m, ws, S, loss_rows);
    be->iwae_weights(be, ws->rec, ws->log_ratio, beta, rows, K, ws->weights, ws->iwae_loss);
    be->scale_rows(be, ws->dact[lo->n_layers - 1], ws->weights, S, lo->dim);
    if (lo->log_sigma != CV_NO_COND) be->scale_rows(be, ws->dsigma, ws->weights, S, 1);
}

void cv_model_iwae_backward(cv_model *m, cv_workspace *ws, int rows, int loss_rows, float beta) {
    const cv_layout *lo = &m->layout;
    const int S = rows * ws->samples;
    cv_model_sigma_backward(m, ws, S);
    cv_model_layers_backward(m, ws, S, lo->n_enc, lo->n_layers, ws->z, ws->dz);
    cv_prior prior;
    const cv_prior *p = cv_model_prior_of(m, ws, &prior);
    cv_prior_grad dprior;
    cv_prior_grad *dp = cv_model_prior_grad_target(m, ws, &dprior);
    m->be->iwae_backward(m->be, ws->act[lo->n_enc - 1], ws->eps, ws->dz, ws->weights,
                         ws->samples, beta / (float)loss_rows, p, ws->labels, dp,
                         ws->dact[lo->n_enc - 1], rows, lo->cfg.latent);
    if (dp && dp->per_row) cv_model_prior_tables_backward(m, ws, rows);
    cv_model_layers_backward(m, ws, rows, 0, lo->n_enc, ws->x, NULL);
}
