/* score.h: how good a model's generated data is (`cvae score`), judged by linear probes
 * trained on cvae's own backend.
 *
 * The probe is a linear map of an image's values x in [0, 1] (D of them), y = W x + b:
 * a classifier (softmax regression, cross-entropy) for class labels, a regression
 * (squared error) for condition vectors, with scikit-learn's L2 penalty: the objective is
 * C sum_i loss_i + |W|^2 / 2 (b not penalised), C = 1 by default, taken per image. W and b
 * start at 0; Adam (PyTorch's semantics, betas 0.9 / 0.999, its learning rate decaying to
 * 0 along a cosine, so that it settles at the optimum scikit-learn's LogisticRegression
 * converges to) takes mini-batches of the training images in an order shuffled each epoch
 * from the seed (stream
 * CV_STREAM_SCORE_SHUFFLE(epoch)). It runs on any backend, with the model's GEMMs and
 * Adam: deterministic for a seed on one device.
 *
 * Label models (Ravuri and Vinyals 2019): a classifier trained on the real training
 * images, tested on the real test images (the ceiling) and on images generated per class
 * (fidelity: do they look like their class?), and a classifier trained on the generated
 * images alone, tested on the real test images (CAS: could one train on them?).
 * Condition-vector models: a regression from images to conditions trained on the real
 * training images, applied to images generated from the test split's condition rows
 * (condition fidelity: R^2 of what it reads against the rows asked for) and to the real
 * test images (the ceiling).
 */
#ifndef CVAE_SCORE_H
#define CVAE_SCORE_H

#include <stdbool.h>
#include <stdint.h>

#include "cvae/data.h"
#include "cvae/eval.h"
#include "cvae/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int steps;  /* Adam steps (default 8000), over as many shuffled passes as they take */
    int batch;  /* images a step (default 256) */
    float lr;   /* Adam's at the start, decaying to 0 along a cosine (default 0.03) */
    float c;    /* the inverse of the L2 penalty's strength, scikit-learn's C (default 1) */
    uint64_t seed;
} cv_probe_options;

/* The defaults above, seed 0. */
cv_probe_options cv_probe_defaults(void);

/* A linear probe on a backend: outputs = the classes (classify) or the condition width. */
typedef struct {
    cv_backend *be;
    int dim, outputs;
    bool classify;
    float *params, *grads, *adam_m, *adam_v; /* W (outputs, dim), then b (outputs) */
} cv_probe;

/* Trains a probe on split (device; labels for a classifier of `outputs` classes,
 * condition vectors of width `outputs` for a regression). split's order (perm) is
 * shuffled on the device each epoch; cv_probe_predict puts it back. */
cv_status cv_probe_fit(cv_backend *be, const cv_device_split *split, int outputs, bool classify,
                       const cv_probe_options *opt, cv_probe *probe, cv_err *err);
/* The probe on every image of split, in order: the class of largest score (labels, n) for
 * a classifier, the outputs (out, (n, outputs)) for a regression. */
cv_status cv_probe_predict(cv_probe *probe, cv_device_split *split, int32_t *labels,
                           float *out, cv_err *err);
void cv_probe_free(cv_probe *probe);


typedef struct {
    bool labels;      /* which figures follow */
    long long generated;
    /* labels: accuracies over all, and per class (recall; NaN for a class with no test
     * or generated image) */
    double ceiling, fidelity, cas;
    double ceiling_class[CV_MAX_CLASSES], fidelity_class[CV_MAX_CLASSES],
        cas_class[CV_MAX_CLASSES];
    /* vectors: R^2 = 1 - SS_res / SS_tot per column (NaN for a constant column) and their
     * mean over the other columns, on generated and on real test images */
    double r2, r2_real;
    double *r2_column, *r2_real_column; /* (K) each, malloc'd; cv_score_result_free */
} cv_score_result;

typedef struct {
    long long per_class; /* label models: images generated per class */
    bool mean;           /* generated as round(255 p) rather than drawn */
    uint64_t seed;       /* of generation and of the probes */
    cv_probe_options probe;
    bool progress;       /* a line on stderr per phase */
} cv_score_options;

/* Scores model on data (its training and test splits, of the model's kind and shape; ws
 * with at least cv_generate_block_rows rows). */
cv_status cv_score(cv_model *model, cv_workspace *ws, const cv_data *data,
                   const cv_score_options *opt, cv_score_result *res, cv_err *err);
void cv_score_result_free(cv_score_result *res);

#ifdef __cplusplus
}
#endif

#endif
