/* train_best.c: the best model so far, by test -ELBO, kept as RUNDIR/model-best.ckpt beside
 * model.ckpt (a run with a run folder and a test set; rank 0's work).
 *
 * An epoch whose test -ELBO is the lowest so far copies the model's state (parameters,
 * Adam m and v) into a second buffer on the device, which costs a memory copy, not a file
 * each epoch. The copy is written by the checkpoint rules (temporary name, fsync, rename)
 * with the next model.ckpt, so it is never older than the last checkpoint, and when a NaN or
 * Inf stops the run. Where the
 * device has no room for the copy, each new best is written at once. A resume continues
 * the best of the model-best.ckpt already in its folder: that model is evaluated again
 * with the run's seed and test set, which gives the figure its epoch had.
 */
#include <math.h>
#include <string.h>

#include "train_run.h"
#include "util/clock.h"

static void release_copy(run_state *r) {
    float **copy[3] = {&r->best.params, &r->best.adam_m, &r->best.adam_v};
    for (int i = 0; i < 3; i++) {
        if (*copy[i]) r->be->release(r->be, *copy[i]);
        *copy[i] = NULL;
    }
}

/* The device copy of the three arrays of n_params floats; none when one does not fit. */
static void make_copy(run_state *r) {
    const size_t bytes = r->model.layout.n_params * sizeof(float);
    float **copy[3] = {&r->best.params, &r->best.adam_m, &r->best.adam_v};
    cv_err ignored;
    for (int i = 0; i < 3; i++)
        if (r->be->alloc(r->be, (void **)copy[i], bytes, "the best model's copy", &ignored)) {
            release_copy(r);
            fprintf(r->log, "note: no room on the device for a copy of the best model: %s is "
                    "written at each new best\n", r->best.path);
            return;
        }
}

/* The state of ck into the device copy (when there is one). */
static void copy_from(run_state *r, const cv_checkpoint *ck) {
    if (!r->best.params) return;
    const size_t bytes = ck->n_params * sizeof(float);
    r->be->upload(r->be, r->best.params, ck->params, bytes);
    r->be->upload(r->be, r->best.adam_m, ck->adam_m, bytes);
    r->be->upload(r->be, r->best.adam_v, ck->adam_v, bytes);
}

/* The figure to beat on resume: the test -ELBO of the model-best.ckpt already there,
 * evaluated in the run's own model, which then gets the resumed state back. */
static cv_status continue_best(const cv_train_options *o, run_state *r, cv_err *err) {
    cv_checkpoint ck;
    cv_status st = cv_checkpoint_load(r->best.path, &ck, err);
    if (st) return st;
    const cv_model_config *a = &ck.cfg, *b = &r->model.layout.cfg;
    if (ck.n_params != r->model.layout.n_params || ck.seed != o->seed ||
        a->latent != b->latent || a->cond_width != b->cond_width ||
        a->height * a->width * a->channels != b->height * b->width * b->channels) {
        cv_checkpoint_free(&ck);
        return cv_fail(err, CV_ERR_FORMAT, "%s: not a model of this run; move it away to "
                       "resume", r->best.path);
    }
    cv_checkpoint_to_model(&ck, &r->model);
    cv_eval_result res;
    st = cv_evaluate(&r->model, &r->ws, &r->test, o->seed, NULL, &res, err);
    cv_checkpoint_to_model(&r->resume, &r->model);
    if (!st) {
        r->best.neg_elbo = res.neg_elbo;
        r->best.unsaved = false;
        copy_from(r, &ck);
    }
    cv_checkpoint_free(&ck);
    return st;
}

cv_status cv_run_best_start(const cv_train_options *o, run_state *r, cv_err *err) {
    r->best.neg_elbo = INFINITY;
    if (!cv_run_leads(r) || !o->out_dir || !r->test.n) return CV_OK;
    snprintf(r->best.path, sizeof r->best.path, "%s/%s", o->out_dir, CV_BEST_CKPT);
    make_copy(r);
    if (!o->resume_path || !cv_path_exists(r->best.path)) return CV_OK;
    return continue_best(o, r, err);
}

cv_status cv_run_best_consider(const cv_train_options *o, run_state *r, const progress_state *p,
                               double neg_elbo, cv_err *err) {
    best_model *b = &r->best;
    if (!b->path[0] || !(neg_elbo < b->neg_elbo)) return CV_OK;
    b->neg_elbo = neg_elbo;
    b->at = *p;
    const double t0 = cv_now_seconds();
    cv_status st = CV_OK;
    if (b->params) {
        const size_t bytes = r->model.layout.n_params * sizeof(float);
        r->be->copy(r->be, b->params, r->model.params, bytes);
        r->be->copy(r->be, b->adam_m, r->model.adam_m, bytes);
        r->be->copy(r->be, b->adam_v, r->model.adam_v, bytes);
        b->unsaved = true;
    } else {
        st = cv_run_save_state(o, r, &r->model, p, b->path, err);
    }
    r->save_seconds += cv_now_seconds() - t0;
    return st;
}

cv_status cv_run_best_save(const cv_train_options *o, run_state *r, cv_err *err) {
    best_model *b = &r->best;
    if (!b->unsaved) return CV_OK;
    cv_model view = r->model; /* the run's model, its state replaced by the copy */
    view.params = b->params;
    view.adam_m = b->adam_m;
    view.adam_v = b->adam_v;
    cv_status st = cv_run_save_state(o, r, &view, &b->at, b->path, err);
    if (!st) b->unsaved = false;
    return st;
}

void cv_run_best_free(run_state *r) {
    if (r->be) release_copy(r);
}
