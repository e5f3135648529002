/* model.h: the CVAE of docs/design.md section 1 over a backend.
 *
 * Encoder: h1 = relu(W1x x + W1c c + b1), ..., enc = Whead h + bhead = [mu | s].
 * Decoder: g1 = relu(V1z z + V1c c + d1), ..., logits = Vout g + dout.
 * c is the condition: a class label's one-hot vector, whose product with W1c is the
 * gathered column c, or a vector of K numbers, whose product is a GEMM. All parameters
 * live in one contiguous buffer described by cv_layout; gradients and Adam's m and v use
 * the same layout, so the optimiser is one pass and a checkpoint one write. W1c is stored
 * transposed, as a (K, out) table, so the column of class c is one contiguous row and a
 * batch of vectors C (rows, K) multiplies it as C x table.
 */
#ifndef CVAE_MODEL_H
#define CVAE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cvae/backend.h"
#include "cvae/data.h"
#include "cvae/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CV_MAX_HIDDEN 8
#define CV_MAX_LAYERS (2 * CV_MAX_HIDDEN + 2)
#define CV_NO_COND ((size_t)-1)

typedef enum { CV_PRIOR_STANDARD = 0, CV_PRIOR_CONDITIONAL = 1 } cv_prior_kind;

typedef struct {
    int height, width, channels; /* D = height * width * channels */
    cv_condition_kind condition; /* class labels or condition vectors */
    int cond_width;              /* K: the classes, or the condition vectors' width */
    int latent;
    int n_hidden;
    int hidden[CV_MAX_HIDDEN];
    cv_prior_kind prior;      /* conditional: learned N(M c, diag exp(R c)), tables at 0 */
    cv_likelihood likelihood; /* Bernoulli, or Gaussian with standard deviation sigma */
    float sigma;              /* with sigma_learned, the learned one's start */
    bool sigma_learned;       /* Gaussian: sigma is a parameter (log sigma, the layout's last) */
} cv_model_config;

typedef struct {
    int in, out;
    size_t w;    /* (out, in) */
    size_t cond; /* (K, out), or CV_NO_COND */
    size_t b;    /* (out) */
    bool relu;
} cv_layer;

typedef struct {
    cv_model_config cfg;
    int dim;      /* D */
    int n_layers; /* encoder layers (hidden + head) then decoder layers (hidden + out) */
    int n_enc;
    cv_layer layers[CV_MAX_LAYERS];
    size_t prior_m, prior_r; /* (K, L) tables of the conditional prior, or CV_NO_COND */
    size_t log_sigma;        /* the learned Gaussian log sigma (1), or CV_NO_COND */
    size_t n_params;
} cv_layout;

/* Per-batch buffers (device), sized for up to max_rows images; with the IWAE objective
 * each of a batch's images is drawn `samples` times (1 otherwise), and what the decoder
 * side holds is sized for sample_rows rows (its draws, stored draw by draw: row
 * k * rows + b is draw k of image b; at least max_rows). */
typedef struct {
    int max_rows;
    int sample_rows;
    int samples;
    float *x;         /* (sample rows, D): each image again for each draw */
    int32_t *labels;  /* (sample rows): class labels */
    float *cond;      /* (sample rows, K): condition vectors; NULL for labels */
    /* condition vectors with the learned prior: each row's prior mean and log-variance
     * (M c, R c) and their gradients, (rows, L) each; else NULL */
    float *prior_m, *prior_r, *dprior_m, *dprior_r;
    float *act[CV_MAX_LAYERS];  /* layer outputs (rows, out); act[n_enc-1] = [mu | s] */
    float *dact[CV_MAX_LAYERS]; /* their gradients */
    float *eps, *z, *dz;        /* (sample rows, L) */
    float *kl, *rec, *log_ratio;/* (sample rows) */
    float *unit_kl;             /* (L): free bits' per-unit KL sums */
    float *dsigma;              /* (sample rows): a learned sigma's per-row gradients */
    float *weights;             /* samples > 1: (sample rows) normalised importance weights */
    float *iwae_loss, *zeros;   /* samples > 1: (rows) each image's -IWAE bound; zeros */
    cv_loss_sums *sums;         /* the loss sums of the steps so far, on the device */
    cv_step *step;              /* the step state the batch operations read */
} cv_workspace;

/* Where a forward pass takes its noise: with draw, from the Philox stream
 * stream_base + (st ? st->step : 0) under seed (written to ws->eps for the backward
 * pass), ws's row r drawing row first_row + r of the batch (a rank's part of it; 0 in one
 * process); otherwise ws->eps as the caller filled it. */
typedef struct {
    bool draw;
    uint64_t seed, stream_base;
    const cv_step *st;
    int first_row;
} cv_noise;

typedef struct {
    cv_backend *be;
    cv_layout layout;
    /* (n_params) each, device; grads holds one float more, grads[n_params]: the loss flag
     * of a data-parallel step, summed over the ranks with the gradient (cv_train_step) */
    float *params, *grads, *adam_m, *adam_v;
} cv_model;

cv_status cv_layout_init(const cv_model_config *cfg, cv_layout *layout, cv_err *err);

/* "class labels" or "condition vectors", for messages. */
const char *cv_condition_kind_name(cv_condition_kind kind);

/* CV_OK when split (of data) is what a model of cfg takes: the image shape, the kind of
 * condition and its width; else CV_ERR_FORMAT, one line beginning with name. */
cv_status cv_model_takes(const cv_model_config *cfg, const cv_data *data, const cv_split *split,
                         const char *name, cv_err *err);

/* For data read without a class count (cv_data_load_files with n_classes 0) to feed a model
 * of cfg: when both hold class labels, every label below the model's K, which becomes the
 * data's; else CV_ERR_FORMAT, one line beginning with name. Other kinds are left to
 * cv_model_takes. */
cv_status cv_model_fit_labels(const cv_model_config *cfg, cv_data *data, const char *name,
                              cv_err *err);

/* Names the tensor that parameter element `index` belongs to, e.g. "decoder layer 1
 * bias [12]", for error messages. */
void cv_layout_describe(const cv_layout *layout, size_t index, char *buf, size_t size);

cv_status cv_model_create(cv_backend *be, const cv_model_config *cfg, cv_model *model,
                          cv_err *err);
void cv_model_destroy(cv_model *model);

/* nn.Linear initialisation: every weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * fan_in counting the K condition columns; gradients and Adam state zeroed. CV_ERR_NOMEM
 * when the host copy the values are drawn into cannot be allocated. */
cv_status cv_model_init_params(cv_model *model, uint64_t seed, cv_err *err);

cv_status cv_workspace_create(cv_model *model, int max_rows, cv_workspace *ws,
                              cv_err *err);
/* The most rows the decoder of an IWAE pass takes (its GEMMs count rows in an int). */
#define CV_MAX_SAMPLE_ROWS 2147483647

/* The same with the IWAE objective's buffers (ws->weights, iwae_loss, zeros; for any
 * samples >= 1), its passes taking batches of up to draw_rows (<= max_rows) images drawn
 * `samples` times each. */
cv_status cv_workspace_create_samples(cv_model *model, int max_rows, int draw_rows,
                                      int samples, cv_workspace *ws, cv_err *err);
/* The bytes cv_workspace_create_samples allocates for a model of this layout (whether or
 * not the rows fit CV_MAX_SAMPLE_ROWS). */
size_t cv_workspace_bytes(const cv_layout *layout, int max_rows, int draw_rows, int samples);
void cv_workspace_destroy(cv_model *model, cv_workspace *ws);

/* Forward pass over ws->x and ws->labels or ws->cond (rows filled): per-sample rec and kl in
 * ws->rec and ws->kl, and ws->log_ratio when want_log_ratio. With loss_rows > 0, also the
 * gradient of the logits for loss = (1/loss_rows) sum (rec + beta kl), loss_rows the rows
 * of the whole batch (rows in one process; a rank's rows are a part of it); 0: no
 * gradient. */
void cv_model_forward(cv_model *model, cv_workspace *ws, int rows, const cv_noise *noise,
                      int loss_rows, bool want_log_ratio);

/* The two halves of cv_model_forward: encode fills ws->act[n_enc-1] = [mu | s]; sample
 * and decode draws z from ws->eps and computes rec, kl (and the logit gradient). */
void cv_model_encode(cv_model *model, cv_workspace *ws, int rows);
void cv_model_sample_decode(cv_model *model, cv_workspace *ws, int rows,
                            const cv_noise *noise, int loss_rows, bool want_log_ratio);

/* The prior of the batch in ws (NULL: the standard normal): with labels, the tables in
 * params, indexed by ws->labels; with condition vectors, the rows M c and R c, which this
 * computes into ws->prior_m and ws->prior_r from ws->cond. */
const cv_prior *cv_model_batch_prior(cv_model *model, cv_workspace *ws, int rows,
                                     cv_prior *storage);

/* Backward pass after a forward with the same loss_rows: accumulates into model->grads. */
void cv_model_backward(cv_model *model, cv_workspace *ws, int rows, int loss_rows, float beta);

/* The objective a training step takes the gradient of (docs/design.md 1.6). */
typedef struct {
    float beta;      /* the KL term's (or IWAE log ratio's) weight */
    float free_bits; /* lambda: each unit's KL, averaged over the batch, counts as at least
                      * this many nats (0: none); the ELBO only */
    int samples;     /* the IWAE objective's draws per image; 1: the ELBO */
    bool sum_ranks;  /* a data-parallel step: free bits' per-unit sums over every rank */
} cv_objective;

/* cv_model_backward for the ELBO with free bits (the per-unit KL sums of the batch in
 * ws->unit_kl, summed over the ranks with sum_ranks, then the KL gradient of each unit
 * under lambda * loss_rows left out). */
void cv_model_backward_objective(cv_model *model, cv_workspace *ws, int rows, int loss_rows,
                                 const cv_objective *obj);

/* The IWAE objective (model_iwae.c): `samples` draws per image of ws's `rows` images, the
 * draws stored draw by draw (ws->eps, z, rec, log_ratio, weights: row k * rows + b). The
 * forward pass encodes, draws (draw k from noise->stream_base + CV_STREAM_IWAE_SAMPLE(k),
 * or ws->eps as given), decodes every draw, and leaves each image's loss -log (1/K sum_k
 * w_k) in ws->iwae_loss, the normalised weights in ws->weights and the weighted logit
 * gradient for loss = (1/loss_rows) sum of those losses; the backward pass accumulates the
 * gradient into model->grads. */
void cv_model_iwae_forward(cv_model *model, cv_workspace *ws, int rows, const cv_noise *noise,
                           int loss_rows, float beta);
void cv_model_iwae_backward(cv_model *model, cv_workspace *ws, int rows, int loss_rows,
                            float beta);

/* The learned Gaussian sigma of a model (exp of its log sigma, clamped as the likelihood
 * clamps it), or cfg.sigma when it is fixed. */
float cv_model_sigma(cv_model *model);

/* Decodes z (rows, L) with ws->labels or ws->cond into logits ws->act[n_layers-1]
 * (rows, D). */
void cv_model_decode(cv_model *model, cv_workspace *ws, int rows);

#ifdef __cplusplus
}
#endif

#endif
