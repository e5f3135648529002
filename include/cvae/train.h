/* train.h: `cvae train` as a library call. */
#ifndef CVAE_TRAIN_H
#define CVAE_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "cvae/checkpoint.h"
#include "cvae/eval.h"
#include "cvae/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CV_ADAM_BETA1 0.9f
#define CV_ADAM_BETA2 0.999f
#define CV_ADAM_EPS 1e-8f

typedef struct {
    cv_comm *comm;            /* the run's ranks (NULL: one process); rank 0 writes, prints */
    const char *data_dir;     /* may be NULL when files names the training data */
    cv_data_files files;      /* files named explicitly, over the folder's */
    const char *device;       /* auto, cpu or cuda */
    cv_backend_options backend;
    const char *out_dir;      /* NULL: the folder of resume_path, or without one nothing
                                 is saved */
    const char *metrics_path; /* NULL: no JSON lines */
    const char *resume_path;  /* NULL: a fresh run */
    long long skip_nonfinite; /* steps with a NaN or Inf that may be skipped before stopping */
    int n_hidden;
    int hidden[CV_MAX_HIDDEN];
    int latent;
    int n_classes; /* class labels: 0 means from the training labels */
    cv_prior_kind prior;
    cv_likelihood likelihood;
    float sigma;              /* fixed, or the learned one's start */
    bool sigma_learned;       /* Gaussian: sigma learned with the model (--sigma learned) */
    cv_train_config train; /* beta, KL warm-up, learning-rate schedule, clipping, binarize,
                            * the objective (ELBO or IWAE, free bits) */
    int batch, epochs;
    /* checkpoints besides the last epoch's and a signal's: every checkpoint_every epochs;
     * with 0, at the first epoch end checkpoint_seconds or more after the last one (or the
     * start), and in an epoch that itself lasts that long, mid-epoch at the host's next
     * check of the run (every 50 steps); 0 for both: at every epoch end */
    int checkpoint_every;
    double checkpoint_seconds;
    float lr;
    uint64_t seed;
    FILE *log; /* epoch lines; progress goes to stderr when it is a terminal (rank 0) */
    const char *command; /* the command line that started the run, for RUNDIR/report.html
                            (NULL: not recorded) */
} cv_train_options;

typedef struct {
    int epochs_done;
    double train_loss;
    cv_eval_result test; /* valid when has_test */
    int has_test;
    int signal;          /* with CV_ERR_INTERRUPTED: SIGINT or SIGTERM */
    double grad_norm;    /* mean global gradient norm (before clipping) of the last epoch */
    double beta;         /* the last epoch's mean beta */
    float sigma;         /* the Gaussian likelihood's sigma at the end (learned or fixed) */
} cv_train_result;

/* The defaults of `cvae train` (docs/design.md 1.14): hidden 400, latent 20, batch 128,
 * 10 epochs, lr 1e-3, beta 1, seed 0, Bernoulli, standard prior, device auto, a
 * checkpoint at least once a minute (checkpoint_seconds 60). */
cv_train_options cv_train_defaults(void);

cv_status cv_train_run(const cv_train_options *opt, cv_train_result *result, cv_err *err);

/* One optimiser step on the batch of part->total rows from ws->step->start of split's
 * order, of which this rank takes part->rows from part->offset (cv_batch_part_of; all of
 * them in one process): gather, noise of stream ws->step->step (the rows' own elements of
 * it), forward, backward with the loss averaged over the whole batch, the gradient summed
 * over the ranks (with more than one), the non-finite check, Adam (t = step + 1, skipped
 * for a flagged step), then the step state moves on by the whole batch. Adds the rank's
 * loss sums and the step's gradient norm to ws->sums on the device. Everything it reads
 * that changes from step to step is in ws->step, so it can be recorded once and
 * replayed. */
void cv_train_step(cv_model *model, cv_workspace *ws, const cv_device_split *split,
                   const cv_batch_part *part, uint64_t seed, const cv_adam_config *adam,
                   float beta, bool binarize);

/* cv_train_step for any objective (model.h): the ELBO with or without free bits, or the
 * IWAE objective with obj->samples draws (ws made for them). A step's reported losses are
 * the ELBO's rec and kl, or each image's -IWAE bound as rec with kl 0. */
void cv_train_step_objective(cv_model *model, cv_workspace *ws, const cv_device_split *split,
                             const cv_batch_part *part, uint64_t seed,
                             const cv_adam_config *adam, const cv_objective *obj,
                             bool binarize);

/* beta of epoch `epoch` (from 1) as versions 1 to 3 ramped it (held for a whole epoch): 0
 * in the first, rising linearly to cfg->beta at the end of epoch cfg->kl_warmup, then
 * constant. */
float cv_beta_at(const cv_train_config *cfg, int epoch);

/* beta of optimiser step `step` (from 0) with steps_per_epoch steps an epoch: with
 * cfg->warmup_per_step, beta * step / (kl_warmup * steps_per_epoch) during the warm-up
 * (Bowman et al. 2016), then beta; otherwise cv_beta_at of the step's epoch. */
float cv_beta_at_step(const cv_train_config *cfg, int64_t step, int64_t steps_per_epoch);

#ifdef __cplusplus
}
#endif

#endif
