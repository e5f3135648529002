/* eval.h: data resident on the backend, and the test-set figures.
 *
 * The test -ELBO uses one z per image from the evaluation noise streams; the IWAE
 * estimate of -log p(x|c) uses K more. Batches are CV_EVAL_BATCH images, so the noise an
 * image sees, and thus every figure, depends only on the seed.
 */
#ifndef CVAE_EVAL_H
#define CVAE_EVAL_H

#include <stdbool.h>

#include "cvae/data.h"
#include "cvae/model.h"

#define CV_EVAL_BATCH 500

typedef struct {
    uint8_t *pixels; /* (n, D), device */
    uint8_t *labels; /* (n), device */
    int32_t *perm;   /* (n), device: batch order */
    int n, dim;
} cv_device_split;

cv_status cv_device_split_upload(cv_backend *be, const cv_split *split,
                                 cv_device_split *out, cv_err *err);
void cv_device_split_free(cv_backend *be, cv_device_split *ds);

typedef struct {
    double neg_elbo, rec, kl; /* nats per sample */
    double iwae_nll;          /* nats per sample; only when iwae_k > 0 */
} cv_eval_result;

/* ws must hold at least CV_EVAL_BATCH rows or the whole split. */
void cv_evaluate(cv_model *model, cv_workspace *ws, const cv_device_split *split,
                 uint64_t seed, int iwae_k, cv_eval_result *out);

#endif
