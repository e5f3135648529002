/* train_run.h: one training run's state, shared by train.c (the loop), train_setup.c
 * (bringing the run up and down) and train_files.c (what it writes). Internal to them. */
#ifndef CV_TRAIN_RUN_H
#define CV_TRAIN_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cvae/checkpoint.h"
#include "cvae/generate.h"
#include "cvae/train.h"
#include "util/fileio.h"
#include "util/interrupt.h"

/* The best model so far (lowest test -ELBO), beside model.ckpt in the run folder. */
#define CV_BEST_CKPT "model-best.ckpt"

/* Where training stands: what a checkpoint records. */
typedef struct {
    int64_t step;
    int epoch;         /* epochs completed */
    int position;      /* rows of the next epoch done */
    cv_loss_sums sums; /* that epoch's partial sums */
    int active_units;  /* of the last test evaluation; -1: none yet */
    cv_step st;        /* the device step state as last read */
} progress_state;

/* The best model so far, by test -ELBO (train_best.c; rank 0). */
typedef struct {
    float *params, *adam_m, *adam_v; /* its state, copied on the device (NULL: no room for
                                        the copy, so each new best is written at once) */
    double neg_elbo;                 /* its test -ELBO; INFINITY before the first */
    progress_state at;               /* where training stood then */
    bool unsaved;                    /* newer than its file */
    char path[4200];                 /* RUNDIR/model-best.ckpt; "" when none is kept */
} best_model;

/* The run's state on one rank. */
typedef struct {
    cv_comm *comm;  /* the run's ranks (NULL: one process) */
    int rank, ranks;
    uint32_t data_crc[2]; /* of the training and test splits, in a data-parallel run */
    FILE *log;      /* rank 0: the options' log; the others: /dev/null */
    cv_data data;
    cv_train_config cfg; /* the options' training config, as the run follows it (a resumed
                          * checkpoint's KL warm-up held per epoch stays so) */
    cv_backend *be;
    void *full_step;       /* the recorded full-batch step, when the backend records */
    float full_step_beta;  /* the beta it was recorded with */
    cv_model model;
    cv_workspace ws;
    cv_device_split train, test;
    int32_t *perm;
    char *metrics;
    size_t metrics_len;
    cv_checkpoint resume;
    cv_dir_lock lock; /* of the run folder, held while training */
    cv_interrupt_guard *guard; /* the signal guard: what a second signal takes back */
    double last_save;          /* when model.ckpt was last written, or training began */
    double save_seconds;       /* spent writing checkpoints and copying best models */
    int saves;                 /* model.ckpt written */
    best_model best;
    char ckpt[4200];
    /* the shallowest folders this run created for --out and --metrics ("" for none) */
    char made_out[CV_PATH_MAX], made_metrics[CV_PATH_MAX];
} run_state;

/* What one epoch reports. */
typedef struct {
    int epoch;
    float beta;  /* the epoch's mean */
    float sigma; /* the Gaussian likelihood's, at the epoch's end */
    double train_loss, grad_norm;
    double lr;      /* the learning rate of the epoch's last step */
    double rate;    /* training samples/s */
    double seconds; /* the whole epoch, evaluation included */
} epoch_report;

/* Rank 0 writes the files and the log; in one process, that is the process. */
static inline bool cv_run_leads(const run_state *r) { return r->rank == 0; }

/* train_setup.c */

/* The run brought up on this rank: its outputs checked, the device, the data, the model
 * and where training stands (fresh or resumed); every rank agrees on the outcome. */
cv_status cv_run_prepare(const cv_train_options *o, run_state *r, progress_state *p,
                         cv_err *err);
/* Checks that every rank holds rank 0's model, data and place in it (replicas.c). */
cv_status cv_run_check_replicas(run_state *r, const progress_state *p, cv_err *err);
void cv_run_free(run_state *r);

/* train_header.c */

/* What the user called the data: the folder, or the training images' file or table. */
const char *cv_run_data_name(const cv_train_options *o);
/* The settings the run starts with, on its log. */
void cv_run_print_header(const cv_train_options *o, const run_state *r, const progress_state *p);

/* train_files.c: rank 0's files */

/* The run folder and the metrics file, made and checked before anything slow. */
cv_status cv_run_prepare_outputs(const cv_train_options *o, run_state *r, cv_err *err);
/* A failed run's folders taken back, where it created them and wrote nothing in them. */
void cv_run_undo_outputs(const cv_train_options *o, run_state *r);
/* The state of `model` (the run's, or a view of the best one's copy) where p says
 * training stood, under the run's training config and with its data's condition names,
 * saved to path; never one with a NaN or Inf. */
cv_status cv_run_save_state(const cv_train_options *o, const run_state *r,
                            const cv_model *model, const progress_state *p, const char *path,
                            cv_err *err);
/* One epoch's line added to the run's metrics lines, and the metrics file (path; NULL:
 * none) rewritten with them. */
cv_status cv_run_write_metrics(const char *path, run_state *r, const epoch_report *e,
                               const cv_eval_result *t, bool has_test, cv_err *err);
/* On resume, the metrics of the epochs the checkpoint completed: from the metrics file,
 * or the lines of fp. */
void cv_run_load_metrics(const char *path, int epochs_done, run_state *r);
void cv_run_keep_metrics(FILE *fp, int epochs_done, run_state *r);
/* The conditions of the run's sample pictures: every class, or the condition rows of the
 * first `count` images of src. */
cv_gen_conditions cv_run_picture_conditions(const run_state *r, const cv_split *src, int count);
/* The run's samples.png and reconstructions.png. */
cv_status cv_run_write_pictures(const cv_train_options *o, run_state *r, cv_err *err);

/* train_report.c: rank 0's RUNDIR/report.html */

/* The report page of the run as it stands after epoch p->epoch. */
cv_status cv_run_write_report(const cv_train_options *o, run_state *r, const progress_state *p,
                              cv_err *err);
/* "report: RUNDIR/report.html" in the log, when the run has written its page. */
void cv_run_print_report_path(const cv_train_options *o, run_state *r);
/* On resume without a metrics file, the completed epochs' lines from RUNDIR/report.html. */
void cv_run_load_report_metrics(const char *out_dir, int epochs_done, run_state *r);
/* train_best.c: the best model so far (rank 0) */

/* Its copy on the device, and on resume the figure of the model-best.ckpt already there. */
cv_status cv_run_best_start(const cv_train_options *o, run_state *r, cv_err *err);
/* After an epoch's test evaluation: a new best is copied (or, without room for the copy,
 * written at once). */
cv_status cv_run_best_consider(const cv_train_options *o, run_state *r, const progress_state *p,
                               double neg_elbo, cv_err *err);
/* model-best.ckpt written, when the best is newer than it. */
cv_status cv_run_best_save(const cv_train_options *o, run_state *r, cv_err *err);
void cv_run_best_free(run_state *r);

#endif
