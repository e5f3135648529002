/* eval.h: data resident on the backend, and the test-set figures.
 *
 * The test -ELBO uses one z per image from the evaluation noise streams; the IWAE
 * estimate of -log p(x|c) uses K more. Batches are CV_EVAL_BATCH images, so the noise an
 * image sees, and thus every figure, depends only on the seed. The IWAE log-sum-exp over
 * the K samples (and the marginal's over classes) runs on the backend, per row in double;
 * the host reads each batch's result once.
 */
#ifndef CVAE_EVAL_H
#define CVAE_EVAL_H

#include <stdbool.h>

#include "cvae/data.h"
#include "cvae/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CV_EVAL_BATCH 500

cv_status cv_device_split_upload(cv_backend *be, const cv_split *split,
                                 cv_device_split *out, cv_err *err);
/* cv_device_split_upload, except that a backend of host memory (the CPU) uses the split's
 * arrays where they lie, a memory-mapped file included, instead of copying them (the
 * split must then outlive *out). A GPU's copy that does not fit its free memory is one
 * line naming both sizes: data sets are not streamed to a GPU. */
cv_status cv_device_split_use(cv_backend *be, const cv_split *split, cv_device_split *out,
                              cv_err *err);
void cv_device_split_free(cv_backend *be, cv_device_split *ds);

typedef struct {
    int iwae_k;                   /* 0: no importance-weighted estimate */
    bool marginal;                /* with iwae_k: log p(x) = logsumexp_c log p(c) p(x|c) */
    const double *class_log_prior;/* log p(c) for the marginal: (classes) */
    bool latent_stats;            /* per-dimension KL and active units */
    /* When not NULL, called after each batch with the images and batches done so far and
     * their totals (the CLI draws a progress line from it). With iwae_k or latent_stats a
     * batch's work has finished by then; otherwise it may still be queued on a GPU. */
    void (*progress)(void *ctx, int images_done, int images_total, int batches_done,
                     int batches_total);
    void *progress_ctx;
    /* a data-parallel run's ranks (NULL: one process): each rank evaluates whole batches
     * of its own, and every rank gets the figures of the whole split (every rank must
     * call); progress then counts the rank's own batches */
    cv_comm *comm;
} cv_eval_options;

/* A unit is active when the variance over the test set of its posterior mean exceeds
 * this (Burda et al. 2016). */
#define CV_ACTIVE_UNIT_VARIANCE 0.01

typedef struct {
    double neg_elbo, rec, kl; /* nats per sample */
    double iwae_nll;          /* -log p(x|c), nats per sample; only with iwae_k */
    double marginal_nll;      /* -log p(x), nats per sample; only with marginal */
    double *kl_per_dim;       /* latent_stats: (L), malloc'd; cv_eval_result_free */
    int active_units;         /* latent_stats */
} cv_eval_result;

/* ws must hold at least CV_EVAL_BATCH rows or the whole split; opt may be NULL (the ELBO
 * only). CV_ERR_NOMEM, with nothing in out to free, when the host scratch cannot be
 * allocated. */
cv_status cv_evaluate(cv_model *model, cv_workspace *ws, const cv_device_split *split,
                      uint64_t seed, const cv_eval_options *opt, cv_eval_result *out,
                      cv_err *err);
void cv_eval_result_free(cv_eval_result *r);

#ifdef __cplusplus
}
#endif

#endif
