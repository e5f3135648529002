/* train_setup.c: a training run brought up on a rank, in the order that fails fastest
 * (outputs, device, checkpoint and data, model), and its state freed. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/names.h"
#include "replicas.h"
#include "train_run.h"

/* The ranks' check that they hold one model (replicas.c), at the start and each epoch's
 * end: their state, the data they read and where they are in it. */
cv_status cv_run_check_replicas(run_state *r, const progress_state *p, cv_err *err) {
    const int64_t place[5] = {r->data_crc[0], r->data_crc[1], p->epoch, p->position, p->step};
    return cv_replicas_agree(r->comm, &r->model, place, sizeof place, p->step, err);
}

/* The checkpoint a resume continues must describe the run the flags describe (its KL
 * warm-up's kind is the checkpoint's own: a run from before version 4 keeps holding beta
 * per epoch, so that it resumes exactly). */
static cv_status check_resume(const cv_train_options *o, const cv_checkpoint *ck, cv_err *err) {
    const cv_model_config *c = &ck->cfg;
    cv_train_config want = o->train;
    want.warmup_per_step = ck->train.warmup_per_step;
    bool hidden_same = c->n_hidden == o->n_hidden;
    for (int i = 0; hidden_same && i < o->n_hidden; i++) hidden_same = c->hidden[i] == o->hidden[i];
    const char *what = !hidden_same                 ? "--hidden"
                       : c->latent != o->latent     ? "--latent"
                       : ck->batch != o->batch      ? "--batch"
                       : ck->lr != o->lr            ? "--lr"
                       : ck->seed != o->seed        ? "--seed"
                       : (o->n_classes && o->n_classes != c->cond_width) ? "--classes"
                       : c->prior != o->prior                            ? "--prior"
                       : c->likelihood != o->likelihood || c->sigma != o->sigma ||
                                 c->sigma_learned != o->sigma_learned
                           ? "--likelihood/--sigma"
                       : ck->train.objective != o->train.objective ||
                                 ck->train.samples != o->train.samples
                           ? "--objective/--samples"
                       : ck->train.free_bits != o->train.free_bits ? "--free-bits"
                       : memcmp(&ck->train, &want, sizeof ck->train) != 0
                           ? "--beta, --kl-warmup, --lr-schedule, --warmup-steps, --clip-grad "
                             "or --binarize"
                           : NULL;
    if (what)
        return cv_fail(err, CV_ERR_USAGE,
                       "%s differs from the checkpoint's; resume with the original command "
                       "plus --resume (cvae info shows it)",
                       what);
    if (ck->epoch >= o->epochs)
        return cv_fail(err, CV_ERR_USAGE,
                       "the checkpoint has already trained %d epoch%s; --epochs counts the "
                       "total, so ask for more than %d",
                       ck->epoch, ck->epoch == 1 ? "" : "s", ck->epoch);
    return CV_OK;
}

/* A resume must see the conditions the checkpoint names (or none, as it does). */
static cv_status check_names(const cv_train_options *o, const cv_checkpoint *ck,
                             const cv_data *d, cv_err *err) {
    const bool same = (d->names == NULL) == (ck->names == NULL) &&
                      (!d->names || (d->n_names == ck->cfg.cond_width &&
                                     cv_names_equal(d->names, ck->names, d->n_names)));
    if (same) return CV_OK;
    return cv_fail(err, CV_ERR_USAGE, "%s: its %s are not the ones %s names (cvae info shows "
                   "them)", cv_run_data_name(o), d->condition == CV_COND_LABELS ? "classes"
                                                                       : "condition columns",
                   o->resume_path);
}

/* The checkpoint to resume (checked against the flags) and the data set. */
static cv_status load_inputs(const cv_train_options *o, run_state *r, cv_err *err) {
    if (o->resume_path) {
        cv_status st = cv_checkpoint_load(o->resume_path, &r->resume, err);
        if (!st) st = check_resume(o, &r->resume, err);
        if (st) return st;
    }
    cv_data_files files = o->files; /* image files decode with the run's log and progress */
    files.image.log = r->log;
    files.image.progress = cv_run_leads(r) && isatty(STDERR_FILENO);
    cv_status st = cv_data_load_files(o->data_dir, &files, o->n_classes, &r->data, err);
    if (!st && o->resume_path) st = check_names(o, &r->resume, &r->data, err);
    if (!st && o->resume_path) st = cv_model_fit_labels(&r->resume.cfg, &r->data, cv_run_data_name(o), err);
    if (st) return st;
    /* a resume must train the model its checkpoint holds (a usage error: the flags and the
     * checkpoint disagree) */
    if (o->resume_path && cv_model_takes(&r->resume.cfg, &r->data, &r->data.train,
                                         cv_run_data_name(o), err))
        return CV_ERR_USAGE;
    if (o->resume_path && r->resume.position >= r->data.train.n)
        return cv_fail(err, CV_ERR_USAGE, "%s: the checkpoint stopped %d images into an "
                       "epoch, but %s has %d training images", o->resume_path,
                       r->resume.position, cv_run_data_name(o), r->data.train.n);
    if (o->train.binarize) cv_split_binarize(&r->data.test);
    return CV_OK;
}

/* The IWAE objective's workspace grows with its draws: one that the device cannot hold is
 * refused before anything is allocated or trained. */
static cv_status check_workspace_fits(const cv_train_options *o, run_state *r, int ws_rows,
                                      cv_err *err) {
    if (o->train.samples <= 1) return CV_OK;
    const double need =
        (double)cv_workspace_bytes(&r->model.layout, ws_rows, o->batch, o->train.samples);
    size_t free_bytes = 0, total_bytes = 0;
    r->be->memory_info(r->be, &free_bytes, &total_bytes);
    const long long rows = (long long)o->batch * o->train.samples;
    if (need <= (double)free_bytes && rows <= CV_MAX_SAMPLE_ROWS) return CV_OK;
    return cv_fail(err, CV_ERR_NOMEM,
                   "--samples %d does not fit: batches of %d images drawn %d times need %.2f "
                   "GiB of workspace, and the device (%s) has %.2f GiB free; lower --samples "
                   "or --batch (cvae train --help gives the memory per draw)",
                   o->train.samples, o->batch, o->train.samples, need / 1073741824.0,
                   r->be->name, (double)free_bytes / 1073741824.0);
}

/* The model, its workspace and the data on the device. */
static cv_status build_model(const cv_train_options *o, run_state *r, cv_err *err) {
    cv_model_config cfg = {.height = r->data.train.h, .width = r->data.train.w,
                           .channels = r->data.train.channels, .condition = r->data.condition,
                           .cond_width = r->data.cond_width, .latent = o->latent,
                           .n_hidden = o->n_hidden, .prior = o->prior,
                           .likelihood = o->likelihood, .sigma = o->sigma,
                           .sigma_learned = o->sigma_learned};
    memcpy(cfg.hidden, o->hidden, sizeof cfg.hidden);
    int ws_rows = o->batch > CV_EVAL_BATCH ? o->batch : CV_EVAL_BATCH;
    cv_status st = cv_model_create(r->be, &cfg, &r->model, err);
    if (!st) st = check_workspace_fits(o, r, ws_rows, err);
    if (!st && o->train.samples > 1)
        st = cv_workspace_create_samples(&r->model, ws_rows, o->batch, o->train.samples, &r->ws,
                                         err);
    else if (!st)
        st = cv_workspace_create(&r->model, ws_rows, &r->ws, err); /* K = 1 is the ELBO */
    if (!st) st = cv_device_split_use(r->be, &r->data.train, &r->train, err);
    if (!st && r->data.test.n) st = cv_device_split_use(r->be, &r->data.test, &r->test, err);
    if (!st && !(r->perm = malloc((size_t)r->data.train.n * sizeof(int32_t))))
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory: the shuffle order needs %zu bytes",
                     (size_t)r->data.train.n * sizeof(int32_t));
    return st;
}

/* A fresh start (initialised parameters) or the resumed checkpoint's state. */
static cv_status start_progress(const cv_train_options *o, run_state *r, progress_state *p,
                                cv_err *err) {
    memset(p, 0, sizeof *p);
    p->st.first_bad_step = -1;
    p->st.first_bad_index = -1;
    p->st.allowed_nonfinite = o->skip_nonfinite;
    p->active_units = -1;
    r->cfg = o->train;
    if (!o->resume_path) return cv_model_init_params(&r->model, o->seed, err);
    const cv_checkpoint *ck = &r->resume;
    r->cfg.warmup_per_step = ck->train.warmup_per_step;
    p->active_units = ck->active_units;
    cv_checkpoint_to_model(ck, &r->model);
    p->step = ck->step;
    p->epoch = ck->epoch;
    p->position = ck->position;
    p->sums = ck->sums;
    p->st.nonfinite_steps = ck->nonfinite_steps;
    /* the metrics file's lines, or the page's when the run had no metrics file until now */
    const bool from_file = o->metrics_path && cv_path_exists(o->metrics_path);
    if (from_file && cv_run_leads(r)) cv_run_load_metrics(o->metrics_path, ck->epoch, r);
    else if (o->out_dir && cv_run_leads(r)) cv_run_load_report_metrics(o->out_dir, ck->epoch, r);
    return CV_OK;
}

/* The rank's place in the run and its log. */
static cv_status join_run(const cv_train_options *o, run_state *r, cv_err *err) {
    r->comm = o->comm;
    r->rank = cv_comm_rank(o->comm);
    r->ranks = cv_comm_size(o->comm);
    r->log = cv_run_leads(r) ? o->log : fopen("/dev/null", "w");
    return r->log ? CV_OK : cv_fail(err, CV_ERR_IO, "cannot open /dev/null for the log");
}

/* Each phase ends with every rank's agreement, so that a rank that failed stops them all
 * at the same place (no rank waits in a collective the failed one never reaches). */
cv_status cv_run_prepare(const cv_train_options *o, run_state *r, progress_state *p,
                         cv_err *err) {
    cv_status st = join_run(o, r, err);
    /* quick checks first: the outputs, then the device, before the data is read */
    if (!st) st = cv_run_prepare_outputs(o, r, err);
    st = cv_comm_agree(r->comm, st, err);
    if (st) return st;
    cv_backend_options bo = o->backend;
    bo.comm = o->comm;
    st = cv_comm_agree(r->comm, cv_backend_open(o->device, &bo, &r->be, err), err);
    if (!st) st = load_inputs(o, r, err);
    if (!st && r->ranks > 1) {
        r->data_crc[0] = cv_split_crc(&r->data.train);
        r->data_crc[1] = cv_split_crc(&r->data.test);
    }
    if (!st) st = build_model(o, r, err);
    if (!st) st = start_progress(o, r, p, err);
    if (!st) st = cv_run_best_start(o, r, err);
    st = cv_comm_agree(r->comm, st, err);
    return st ? st : cv_run_check_replicas(r, p, err);
}

void cv_run_free(run_state *r) {
    if (r->be) {
        if (r->full_step) r->be->recording_free(r->be, r->full_step);
        cv_device_split_free(r->be, &r->train);
        cv_device_split_free(r->be, &r->test);
        cv_run_best_free(r);
        if (r->ws.max_rows) cv_workspace_destroy(&r->model, &r->ws);
        cv_model_destroy(&r->model);
        r->be->destroy(r->be);
    }
    cv_data_free(&r->data);
    cv_checkpoint_free(&r->resume);
    free(r->perm);
    free(r->metrics);
    cv_dir_lock_release(&r->lock);
    if (r->log && r->rank != 0) fclose(r->log);
}
