/* checkpoint.h: the versioned, checksummed model file.
 *
 * Layout (little-endian): "CVAECKPT", u32 version, u32 header bytes, the header fields
 * (model config, seed, step, epoch, batch, lr, the position inside the current epoch with
 * its partial loss sums, the count of skipped non-finite steps, the training options,
 * n_params), then parameters, Adam m and Adam v as float32 (n_params each) in the model's
 * buffer layout, then a CRC-32 of every byte before it. Written to a temporary file,
 * fsynced and renamed. docs/design.md gives every field's offset.
 *
 * Version 5 adds, after the arrays, the names of the K conditions (class names, or the
 * table columns of condition vectors), or none. Version 4 added the training objectives'
 * block (the objective and its draws, free bits, the per-step KL warm-up, a learned sigma,
 * the last test evaluation's active units). Version 3 added the image channels and the
 * condition kind (labels or vectors; the classes field holds K); version 2 saved the five
 * loss sums of cv_loss_sums, version 1 the first three (rec, kl, rows). All are still
 * read: versions 1 to 4 without names, 1 and 2 as grey images of class labels, a version 1
 * file with its gradient-norm sum and step count as 0, and versions 1 to 3 as ELBO
 * training whose KL warm-up held beta for a whole epoch.
 */
#ifndef CVAE_CHECKPOINT_H
#define CVAE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "cvae/model.h"
#include "cvae/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CV_CHECKPOINT_VERSION 5 /* the version written; 1 to 5 are read */

typedef enum { CV_OBJECTIVE_ELBO = 0, CV_OBJECTIVE_IWAE = 1 } cv_objective_kind;

/* How the run trains, beyond the model: what --resume must find unchanged. */
typedef struct {
    float beta;             /* weight of the KL term */
    int32_t kl_warmup;      /* epochs over which beta ramps up from 0 */
    int32_t cosine;         /* learning-rate schedule: 0 constant, 1 cosine */
    int64_t warmup_steps;   /* linear learning-rate warm-up */
    float clip_norm;        /* global gradient norm clip; 0: none */
    int32_t binarize;       /* dynamic binarization of the training images */
    /* since version 4 (docs/design.md 4.1) */
    int32_t objective;      /* cv_objective_kind */
    int32_t samples;        /* the IWAE objective's draws per image (1 for the ELBO) */
    float free_bits;        /* lambda in nats per latent unit; 0: none */
    int32_t warmup_per_step;/* 1: beta ramps step by step; 0: held per epoch (versions 1-3) */
} cv_train_config;

typedef struct {
    cv_model_config cfg;
    cv_train_config train;
    uint64_t seed;
    int64_t step;   /* Adam steps taken */
    int32_t epoch;  /* epochs completed */
    int32_t batch;
    float lr;
    int32_t position;        /* rows of epoch + 1 already trained (0 at an epoch's end) */
    cv_loss_sums sums;       /* that partial epoch's loss sums */
    int64_t nonfinite_steps; /* steps skipped for a NaN or Inf so far */
    int32_t active_units;    /* of the last test evaluation; -1: none (or before version 4) */
    size_t n_params;
    float *params, *adam_m, *adam_v; /* host, n_params each */
    char **names;                    /* cfg.cond_width names of the conditions (class names
                                        or condition columns; malloc'd), or NULL: none */
    uint32_t checksum;               /* filled by load and save */
    uint64_t file_bytes;             /* filled by load */
    uint32_t version;                /* the file's format version, filled by load */
} cv_checkpoint;

cv_status cv_checkpoint_save(const char *path, cv_checkpoint *ck, cv_err *err);
cv_status cv_checkpoint_load(const char *path, cv_checkpoint *ck, cv_err *err);
void cv_checkpoint_free(cv_checkpoint *ck);

/* Copies the model's parameters and Adam state into a new host checkpoint. */
cv_status cv_checkpoint_from_model(const cv_model *model, cv_checkpoint *ck, cv_err *err);
/* Uploads a checkpoint's parameters and Adam state into a model of the same layout. */
void cv_checkpoint_to_model(const cv_checkpoint *ck, cv_model *model);
/* The Gaussian likelihood's sigma a checkpoint's model uses: the fixed one, or the learned
 * one (exp of its log sigma, clamped as training clamps 2 log sigma); NAN for a Bernoulli
 * model or a checkpoint whose config is invalid. */
double cv_checkpoint_sigma(const cv_checkpoint *ck);
/* Creates a model on be with the checkpoint's config and state. */
cv_status cv_model_from_checkpoint(cv_backend *be, const cv_checkpoint *ck, cv_model *model,
                                   cv_err *err);

#ifdef __cplusplus
}
#endif

#endif
