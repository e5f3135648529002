/* train.c: the training loop: shuffle, steps, per-epoch evaluation, the epoch lines, exact
 * resume, clean stops on SIGINT/SIGTERM, and the non-finite guard; on one rank of a
 * data-parallel run too (cvae/comm.h), where every rank takes its part of each batch and
 * rank 0 alone writes and prints. The run is brought up in train_setup.c; its files are
 * written by train_files.c.
 *
 * Every random draw is a function of (seed, epoch) or (seed, step), and the checkpoint
 * holds the position inside the epoch, so a resumed run takes exactly the steps the
 * uninterrupted one would have: the final parameters are bitwise equal on the CPU.
 */
#include <libgen.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cv_math.h"
#include "cvae/rng.h"
#include "train_run.h"
#include "util/interrupt.h"
#include "util/clock.h"

/* How often the host looks at the step state for non-finite steps: rare enough that a
 * GPU stays busy, often enough that a poisoned run stops soon. */
#define NONFINITE_POLL_STEPS 50

cv_train_options cv_train_defaults(void) {
    cv_train_options o = {.device = "auto", .n_hidden = 1, .hidden = {400}, .latent = 20,
                          .batch = 128, .epochs = 10, .lr = 1e-3f, .seed = 0, .log = stdout,
                          .sigma = 0.1f,
                          .train = {.beta = 1.0f, .samples = 1, .warmup_per_step = 1},
                          .checkpoint_seconds = 60.0};
    return o;
}

float cv_beta_at(const cv_train_config *cfg, int epoch) {
    if (cfg->kl_warmup <= 0 || epoch > cfg->kl_warmup) return cfg->beta;
    return cfg->beta * (float)(epoch - 1) / (float)cfg->kl_warmup;
}

float cv_beta_at_step(const cv_train_config *cfg, int64_t step, int64_t steps_per_epoch) {
    if (!cfg->warmup_per_step) return cv_beta_at(cfg, (int)(step / steps_per_epoch) + 1);
    const int64_t ramp = (int64_t)cfg->kl_warmup * steps_per_epoch;
    if (ramp <= 0 || step >= ramp) return cfg->beta;
    return cfg->beta * (float)((double)step / (double)ramp);
}

/* Whether beta still changes from step to step at `step` (a per-step warm-up): such steps
 * run eagerly rather than from a recording made at one beta. */
static bool beta_ramping(const cv_train_config *cfg, int64_t step, int64_t steps_per_epoch) {
    return cfg->warmup_per_step && step < (int64_t)cfg->kl_warmup * steps_per_epoch;
}

/* The mean beta of epoch `epoch`'s steps: what its line and metrics report. */
static double epoch_mean_beta(const cv_train_config *cfg, int epoch, int64_t steps_per_epoch) {
    double sum = 0.0;
    const int64_t first = (int64_t)(epoch - 1) * steps_per_epoch;
    for (int64_t t = first; t < first + steps_per_epoch; t++)
        sum += cv_beta_at_step(cfg, t, steps_per_epoch);
    return sum / (double)steps_per_epoch;
}

/* The rank's rows of the batch: forward and backward into the zeroed gradients. */
static void local_gradient(cv_model *m, cv_workspace *ws, const cv_device_split *s,
                           const cv_batch_part *part, uint64_t seed, const cv_objective *obj,
                           bool binarize) {
    cv_backend *be = m->be;
    be->zero(be, m->grads, m->layout.n_params * sizeof(float));
    if (part->rows == 0) { /* fewer rows in the batch than ranks */
        if (obj->free_bits > 0.0f && obj->sum_ranks) { /* the others' per-unit sum */
            be->zero(be, ws->unit_kl, (size_t)m->layout.cfg.latent * sizeof(float));
            be->allreduce(be, ws->unit_kl, (size_t)m->layout.cfg.latent);
        }
        return;
    }
    be->gather_batch(be, s, ws->step, part->offset, part->rows, binarize, seed, ws->x,
                     ws->labels, ws->cond);
    cv_noise noise = {true, seed, CV_STREAM_TRAIN_EPS(0), ws->step, part->offset};
    if (obj->samples > 1) {
        cv_model_iwae_forward(m, ws, part->rows, &noise, part->total, obj->beta);
        cv_model_iwae_backward(m, ws, part->rows, part->total, obj->beta);
    } else {
        cv_model_forward(m, ws, part->rows, &noise, part->total, false);
        cv_model_backward_objective(m, ws, part->rows, part->total, obj);
    }
}

void cv_train_step(cv_model *m, cv_workspace *ws, const cv_device_split *s,
                   const cv_batch_part *part, uint64_t seed, const cv_adam_config *adam,
                   float beta, bool binarize) {
    const cv_objective elbo = {.beta = beta, .samples = 1, .sum_ranks = part->ranks > 1};
    cv_train_step_objective(m, ws, s, part, seed, adam, &elbo, binarize);
}

void cv_train_step_objective(cv_model *m, cv_workspace *ws, const cv_device_split *s,
                             const cv_batch_part *part, uint64_t seed,
                             const cv_adam_config *adam, const cv_objective *obj,
                             bool binarize) {
    cv_backend *be = m->be;
    const size_t n = m->layout.n_params;
    local_gradient(m, ws, s, part, seed, obj, binarize);
    /* the rows' reported losses: the ELBO's rec and kl, or the -IWAE bound and zeros */
    const float *rec = obj->samples > 1 ? ws->iwae_loss : ws->rec;
    const float *kl = obj->samples > 1 ? ws->zeros : ws->kl;
    if (part->ranks > 1) {
        /* one sum of the gradients and, after them, the loss flag: every rank then takes
         * the same step, or skips it, and flags it the same way */
        float *flag = m->grads + n;
        be->loss_flag(be, rec, kl, part->rows, flag);
        be->allreduce(be, m->grads, n + 1);
        be->check_finite(be, flag, flag, 1, m->grads, n, ws->step);
    } else {
        be->check_finite(be, rec, kl, part->rows, m->grads, n, ws->step);
    }
    /* every rank counts the step and its norm; each its own rows' loss */
    be->accumulate_loss(be, ws->sums, rec, kl, part->rows, ws->step);
    be->adam(be, m->params, m->grads, m->adam_m, m->adam_v, n, adam, ws->step);
    be->advance_step(be, ws->step, part->total);
}

static void progress(int epoch, int epochs, int done, int total, double rate) {
    const int width = 30;
    int fill = (int)((long)width * done / total);
    fprintf(stderr, "\repoch %d/%d [%.*s%*s] %3d%%  %.0f samples/s ", epoch, epochs, fill,
            "##############################", width - fill, "", (int)(100L * done / total),
            rate);
    if (done == total) fprintf(stderr, "\r%*s\r", 80, "");
    fflush(stderr);
}

/* A progress line on the terminal, cleared before the line that says why training
 * stopped. */
static void clear_progress(bool shown) {
    if (!shown) return;
    fprintf(stderr, "\r%*s\r", 80, "");
    fflush(stderr);
}

/* The epoch's loss sums over the ranks: each rank summed its own rows' rec, kl and rows;
 * the steps and their gradient norms are every rank's alike. */
static void global_sums(run_state *r, cv_loss_sums *s) {
    r->be->download(r->be, s, r->ws.sums, sizeof *s);
    double part[3] = {s->rec, s->kl, s->rows};
    cv_comm_sum_f64(r->comm, part, 3);
    s->rec = part[0];
    s->kl = part[1];
    s->rows = part[2];
}

/* What a rank starts an epoch's device sums from: the partial sums a resume continues,
 * their rows' part on rank 0 alone, so that global_sums counts them once. */
static cv_loss_sums rank_sums(const run_state *r, const cv_loss_sums *s) {
    cv_loss_sums own = *s;
    if (!cv_run_leads(r)) own.rec = own.kl = own.rows = 0.0;
    return own;
}

/* st of a failure every rank meets alike (the same step state): rank 0 says it. */
static cv_status quiet_unless_leading(const run_state *r, cv_status st, cv_err *err) {
    if (!cv_run_leads(r)) err->msg[0] = '\0';
    return st;
}

/* A NaN or Inf stopped the step (on every rank: the loss flag is summed with the
 * gradients): rank 0 writes the best model's copy, which is finite, and every rank stops
 * with the line that names the step, the tensor and what was kept (as stop_on_signal). */
static cv_status stop_on_nonfinite(const cv_train_options *o, run_state *r, const cv_step *st,
                                   cv_err *err) {
    char what[256] = "NaN or Inf in the loss";
    if (st->first_bad_index >= 0) {
        char name[128];
        cv_layout_describe(&r->model.layout, (size_t)st->first_bad_index, name, sizeof name);
        snprintf(what, sizeof what, "NaN, Inf or a value too large for Adam (2^63 or more) in "
                 "the gradient of %s", name);
    }
    /* a copy newer than its file would be lost with the run */
    cv_err best_err;
    char best[CV_PATH_MAX + 160] = "";
    if (cv_run_best_save(o, r, &best_err))
        snprintf(best, sizeof best, "; the best model could not be saved: %.*s", 1000,
                 best_err.msg);
    else if (r->best.path[0] && cv_path_exists(r->best.path))
        snprintf(best, sizeof best, "; the best model so far (epoch %d, test -ELBO %.4f) is %s",
                 r->best.at.epoch, r->best.neg_elbo, r->best.path);
    const bool saved = r->ckpt[0] && cv_path_exists(r->ckpt);
    /* with --skip-nonfinite the run stops at a later bad step than the one recorded */
    return cv_fail(err, CV_ERR_NONFINITE,
                   "step %lld%s: %s (%lld such step%s, --skip-nonfinite allows "
                   "%lld); stopped, the diverged model not saved%s%s%s",
                   (long long)st->first_bad_step,
                   st->nonfinite_steps > 1 ? " (the first such step)" : "", what,
                   (long long)st->nonfinite_steps, st->nonfinite_steps == 1 ? "" : "s",
                   o->skip_nonfinite,
                   saved ? ": the last good checkpoint is " : "", saved ? r->ckpt : "", best);
}

/* Shuffles the epoch's order and puts it, the partial sums and the step state on the
 * device. */
static void begin_epoch(const cv_train_options *o, run_state *r, progress_state *p, int epoch) {
    cv_backend *be = r->be;
    cv_shuffle(r->perm, r->train.n, o->seed, CV_STREAM_SHUFFLE(epoch - 1));
    be->upload(be, r->train.perm, r->perm, (size_t)r->train.n * sizeof(int32_t));
    const cv_loss_sums sums = rank_sums(r, &p->sums);
    be->upload(be, r->ws.sums, &sums, sizeof sums);
    p->st.step = p->step;
    p->st.start = p->position;
    p->st.skip = 0;
    be->upload(be, r->ws.step, &p->st, sizeof p->st);
}

/* One step of a batch of `rows` rows, this rank's part of them: a full batch replays the
 * recorded step (recording it first where the backend records, and again when beta has
 * changed), a partial one, or one of a per-step KL warm-up, runs eagerly. */
static void run_step(const cv_train_options *o, run_state *r, const cv_adam_config *adam,
                     float beta, bool ramping, int rows) {
    cv_backend *be = r->be;
    const bool binarize = r->cfg.binarize != 0;
    const cv_batch_part part = cv_batch_part_of(rows, r->rank, r->ranks);
    const cv_objective obj = {.beta = beta, .free_bits = r->cfg.free_bits,
                              .samples = r->cfg.samples, .sum_ranks = r->ranks > 1};
    const bool recorded = rows == o->batch && !ramping;
    if (recorded && r->full_step && r->full_step_beta != beta) {
        be->recording_free(be, r->full_step);
        r->full_step = NULL;
    }
    if (recorded && !r->full_step && be->capture_begin(be)) {
        cv_train_step_objective(&r->model, &r->ws, &r->train, &part, o->seed, adam, &obj,
                                binarize);
        r->full_step = be->capture_end(be);
        r->full_step_beta = beta;
    }
    if (recorded && r->full_step)
        be->replay(be, r->full_step);
    else
        cv_train_step_objective(&r->model, &r->ws, &r->train, &part, o->seed, adam, &obj,
                                binarize);
}

/* The checkpoint of where training stands, and the best model when it is newer than its
 * file; never one of a model with a NaN or Inf. */
static cv_status save_checkpoint(const cv_train_options *o, run_state *r,
                                 const progress_state *p, cv_err *err) {
    const double t0 = cv_now_seconds();
    cv_status st = cv_run_save_state(o, r, &r->model, p, r->ckpt, err);
    if (st) return st;
    if (r->guard) cv_interrupt_undo_clear(r->guard); /* the folder now holds a model */
    st = cv_run_best_save(o, r, err);
    r->last_save = cv_now_seconds();
    r->save_seconds += r->last_save - t0;
    r->saves++;
    return st;
}

/* A signal arrived after a step (on any rank: they agree on it): rank 0 writes the
 * checkpoint (when there is a run folder), and every rank stops with the line that says
 * how to resume, printed by rank 0. */
static cv_status stop_on_signal(const cv_train_options *o, run_state *r, progress_state *p,
                                int sig, int epoch, cv_err *err) {
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    /* between epochs the epoch's sums are already reset (and the device's sums buffer
     * holds the test evaluation's) */
    if (p->position > 0) global_sums(r, &p->sums);
    cv_status st = r->ckpt[0] && cv_run_leads(r) ? save_checkpoint(o, r, p, err) : CV_OK;
    st = cv_comm_agree(r->comm, st, err);
    if (st) return st;
    if (!r->ckpt[0])
        st = cv_fail(err, CV_ERR_INTERRUPTED,
                     "interrupted by %s at step %lld (epoch %d); no --out was given, so "
                     "nothing was saved", name, (long long)p->step, epoch);
    else
        st = cv_fail(err, CV_ERR_INTERRUPTED,
                     "interrupted by %s at step %lld (epoch %d, %d of %d images); checkpoint "
                     "%s: resume with --resume %s", name, (long long)p->step, epoch,
                     p->position, r->train.n, r->ckpt, r->ckpt);
    return quiet_unless_leading(r, st, err);
}

static void print_epoch_line(const cv_train_options *o, const run_state *r,
                             const epoch_report *e, const cv_train_result *res,
                             const cv_step *st) {
    fprintf(r->log, "epoch %3d/%d  train_loss %9.4f", e->epoch, o->epochs, e->train_loss);
    if (r->test.n)
        fprintf(r->log, "  test_neg_elbo %9.4f (rec %9.4f  kl %8.4f)", res->test.neg_elbo,
                res->test.rec, res->test.kl);
    fprintf(r->log, "  %8.0f samples/s  %6.2f s", e->rate, e->seconds);
    if (r->test.n) fprintf(r->log, "  active %d/%d", res->test.active_units, o->latent);
    if (o->train.kl_warmup || o->train.beta != 1.0f) fprintf(r->log, "  beta %.4g", e->beta);
    if (o->sigma_learned) fprintf(r->log, "  sigma %.4f", e->sigma);
    if (o->train.clip_norm > 0.0f) fprintf(r->log, "  grad_norm %.3f", e->grad_norm);
    fputc('\n', r->log);
    if (st->nonfinite_steps)
        fprintf(r->log, "note: %lld step%s with a NaN or Inf skipped so far (first: step "
                        "%lld)\n",
                (long long)st->nonfinite_steps, st->nonfinite_steps == 1 ? "" : "s",
                (long long)st->first_bad_step);
    fflush(r->log);
}

/* Whether an epoch's end writes the checkpoint: the last epoch's; every --checkpoint-every
 * N epochs; by default the first epoch end a minute (checkpoint_seconds) or more after the
 * last checkpoint. */
static bool checkpoint_due(const cv_train_options *o, const run_state *r, int epoch) {
    if (epoch == o->epochs) return true;
    if (o->checkpoint_every > 0) return epoch % o->checkpoint_every == 0;
    return cv_now_seconds() - r->last_save >= o->checkpoint_seconds;
}

/* A metrics or picture file failed (status `failed`, err's line): the training is saved
 * all the same, unless it just was, and the line says where. */
static cv_status save_after_failure(const cv_train_options *o, run_state *r,
                                    const progress_state *p, bool saved, cv_status failed,
                                    cv_err *err) {
    char msg[sizeof err->msg];
    memcpy(msg, err->msg, sizeof msg);
    const int room = (int)sizeof msg - 200; /* the first line is cut, not the second */
    cv_err save_err;
    if (!r->ckpt[0])
        return cv_fail(err, failed, "%.*s; no --out was given, so nothing was saved", room, msg);
    if (!saved && save_checkpoint(o, r, p, &save_err))
        return cv_fail(err, failed, "%.*s; the checkpoint failed too: %s", room, msg,
                       save_err.msg);
    if (p->epoch < o->epochs)
        return cv_fail(err, failed, "%.*s; the training so far is saved: continue it with "
                       "--resume %s", room, msg, r->ckpt);
    return cv_fail(err, failed, "%.*s; the trained model is saved in %s", room, msg, r->ckpt);
}

/* Rank 0's files at an epoch's end: a new best model's copy, the checkpoint when due
 * (first, so that a metrics file that cannot be written loses no training), then the
 * metrics and the report page; if they fail, the checkpoint is written all the same and
 * the run stops. */
static cv_status write_epoch_files(const cv_train_options *o, run_state *r,
                                   const progress_state *p, const epoch_report *e,
                                   const cv_train_result *res, cv_err *err) {
    cv_status st = r->test.n ? cv_run_best_consider(o, r, p, res->test.neg_elbo, err) : CV_OK;
    const bool due = r->ckpt[0] && checkpoint_due(o, r, e->epoch);
    if (!st && due) st = save_checkpoint(o, r, p, err);
    if (!st) {
        st = cv_run_write_metrics(o->metrics_path, r, e, &res->test, r->test.n > 0, err);
        if (!st && r->ckpt[0]) st = cv_run_write_report(o, r, p, err);
        if (st) st = save_after_failure(o, r, p, due, st, err);
    }
    return st;
}

/* By default, an epoch that itself lasts a minute (checkpoint_seconds) or more is
 * checkpointed mid-epoch too, at the host's check of the run, once a minute has passed
 * since the last checkpoint; rank 0 decides, and every rank takes part in the sums. */
static cv_status checkpoint_mid_epoch(const cv_train_options *o, run_state *r,
                                      progress_state *p, double epoch_start, cv_err *err) {
    if (!r->ckpt[0] || o->checkpoint_every > 0 || !(o->checkpoint_seconds > 0.0)) return CV_OK;
    const double t = cv_now_seconds();
    const int due = cv_run_leads(r) && t - r->last_save >= o->checkpoint_seconds &&
                    t - epoch_start >= o->checkpoint_seconds;
    if (!cv_comm_max_int(r->comm, due)) return CV_OK;
    global_sums(r, &p->sums);
    cv_status st = cv_run_leads(r) ? save_checkpoint(o, r, p, err) : CV_OK;
    return cv_comm_agree(r->comm, st, err);
}

/* After an epoch's last step: its figures, the test evaluation, the epoch line, the
 * metrics and (when due) the checkpoint. */
static cv_status end_epoch(const cv_train_options *o, run_state *r, progress_state *p,
                           epoch_report *e, double t0, cv_train_result *res, cv_err *err) {
    global_sums(r, &p->sums);
    e->train_loss = (p->sums.rec + e->beta * p->sums.kl) / p->sums.rows;
    e->grad_norm = p->sums.steps > 0 ? p->sums.grad_norm / p->sums.steps : 0.0;
    res->train_loss = e->train_loss;
    res->grad_norm = e->grad_norm;
    e->sigma = cv_model_sigma(&r->model);
    res->sigma = e->sigma;
    res->beta = e->beta;
    if (r->test.n) {
        /* the latent statistics cost a download of [mu | s] per test batch: cheap */
        const cv_eval_options eo = {.comm = r->comm, .latent_stats = true};
        cv_status st = cv_evaluate(&r->model, &r->ws, &r->test, o->seed, &eo, &res->test, err);
        if (st) return st;
        cv_eval_result_free(&res->test); /* kl_per_dim: the active units are what is kept */
        p->active_units = res->test.active_units;
    }
    e->seconds = cv_now_seconds() - t0;
    print_epoch_line(o, r, e, res, &p->st);
    res->epochs_done = e->epoch;
    p->epoch = e->epoch;
    p->position = 0;
    p->sums = (cv_loss_sums){0};
    cv_status st = cv_run_check_replicas(r, p, err);
    if (st) return st;
    st = cv_run_leads(r) ? write_epoch_files(o, r, p, e, res, err) : CV_OK;
    return cv_comm_agree(r->comm, st, err);
}

static cv_status train_epoch(const cv_train_options *o, run_state *r, progress_state *p,
                             const cv_adam_config *adam, int epoch, cv_train_result *res,
                             cv_err *err) {
    const int n = r->train.n;
    const bool show_progress = cv_run_leads(r) && isatty(STDERR_FILENO);
    const double t0 = cv_now_seconds();
    const int64_t steps_per_epoch = (n + o->batch - 1) / o->batch;
    epoch_report e = {.epoch = epoch, .beta = epoch_mean_beta(&r->cfg, epoch, steps_per_epoch)};
    begin_epoch(o, r, p, epoch);
    double last_shown = t0;
    const int done_at_start = p->position;
    for (int k = 0; p->position < n; k++) {
        int rows = n - p->position < o->batch ? n - p->position : o->batch;
        run_step(o, r, adam, cv_beta_at_step(&r->cfg, p->step, steps_per_epoch),
                 beta_ramping(&r->cfg, p->step, steps_per_epoch), rows);
        p->step++;
        p->position += rows;
        /* a signal in the epoch's last step stops after the epoch ends (train_epochs): a
         * checkpoint at position n would describe no resumable state */
        int sig = cv_comm_max_int(r->comm, p->position < n ? cv_interrupt_pending() : 0);
        if (sig || (k + 1) % NONFINITE_POLL_STEPS == 0 || p->position == n) {
            r->be->download(r->be, &p->st, r->ws.step, sizeof p->st);
            if (p->st.halted) {
                clear_progress(show_progress);
                return quiet_unless_leading(r, stop_on_nonfinite(o, r, &p->st, err), err);
            }
        }
        if (sig) {
            clear_progress(show_progress);
            res->signal = sig;
            return stop_on_signal(o, r, p, sig, epoch, err);
        }
        if ((k + 1) % NONFINITE_POLL_STEPS == 0 && p->position < n) {
            cv_status st = checkpoint_mid_epoch(o, r, p, t0, err);
            if (st) return st;
        }
        double t = cv_now_seconds();
        if (show_progress && (t - last_shown > 0.2 || p->position == n)) {
            progress(epoch, o->epochs, p->position, n, (p->position - done_at_start) / (t - t0));
            last_shown = t;
        }
    }
    /* the last step's state was just read back, so the device has finished the epoch */
    e.rate = (n - done_at_start) / (cv_now_seconds() - t0);
    e.lr = cv_lr_at(adam->lr, p->step - 1, adam->warmup_steps, adam->total_steps, adam->cosine);
    return end_epoch(o, r, p, &e, t0, res, err);
}

static cv_status train_epochs(const cv_train_options *o, run_state *r, progress_state *p,
                              cv_train_result *res, cv_err *err) {
    const int64_t steps_per_epoch = (r->train.n + o->batch - 1) / o->batch;
    const cv_adam_config adam = {.lr = o->lr, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                                 .eps = CV_ADAM_EPS, .cosine = o->train.cosine,
                                 .warmup_steps = o->train.warmup_steps,
                                 .total_steps = steps_per_epoch * o->epochs,
                                 .clip_norm = o->train.clip_norm};
    for (int epoch = p->epoch + 1; epoch <= o->epochs; epoch++) {
        cv_status st = train_epoch(o, r, p, &adam, epoch, res, err);
        if (st) return st;
        int sig = cv_comm_max_int(r->comm, cv_interrupt_pending());
        if (sig && epoch < o->epochs) { /* it came in the epoch's last step */
            res->signal = sig;
            return stop_on_signal(o, r, p, sig, epoch + 1, err);
        }
    }
    return CV_OK;
}

/* A signal that came before training started (any rank's) ends the run with nothing
 * written. */
static cv_status stop_if_signalled_early(run_state *r, cv_train_result *res, cv_err *err) {
    int sig = cv_comm_max_int(r->comm, cv_interrupt_pending());
    if (!sig) return CV_OK;
    res->signal = sig;
    return quiet_unless_leading(r, cv_fail(err, CV_ERR_INTERRUPTED,
                                           "interrupted by %s before training started; "
                                           "nothing was written",
                                           sig == SIGINT ? "SIGINT" : "SIGTERM"), err);
}

/* A signal in the last epoch's last step or after it stops nothing: the run is complete,
 * its final checkpoint written, and it ends as a finished run does. */
static void note_a_late_signal(const run_state *r) {
    int sig = cv_comm_max_int(r->comm, cv_interrupt_pending());
    if (sig)
        fprintf(r->log, "note: %s came after the last step; the run is complete\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* The options as the run takes them: a resume without --out writes back into the folder
 * of the checkpoint it resumed (`folder` holds its name). */
static cv_train_options resolve_out_dir(const cv_train_options *given, char folder[CV_PATH_MAX]) {
    cv_train_options o = *given;
    if (!o.out_dir && o.resume_path) {
        snprintf(folder, CV_PATH_MAX, "%s", o.resume_path);
        o.out_dir = dirname(folder);
    }
    return o;
}

cv_status cv_train_run(const cv_train_options *given, cv_train_result *res, cv_err *err) {
    char resumed_folder[CV_PATH_MAX];
    const cv_train_options resolved = resolve_out_dir(given, resumed_folder), *o = &resolved;
    memset(res, 0, sizeof *res);
    run_state r;
    memset(&r, 0, sizeof r);
    r.lock.fd = -1;
    progress_state p;
    /* caught from the start: a signal while the data loads must not leave the folders */
    cv_interrupt_guard guard;
    cv_interrupt_install(&guard);
    r.guard = &guard;
    cv_status st = cv_run_prepare(o, &r, &p, err);
    if (st == CV_ERR_INTERRUPTED) res->signal = cv_interrupt_pending(); /* decoding images */
    if (!st) st = stop_if_signalled_early(&r, res, err);
    if (!st) {
        res->has_test = r.data.test.n > 0;
        res->epochs_done = p.epoch;
        cv_run_print_header(o, &r, &p);
        const double start = r.last_save = cv_now_seconds();
        st = train_epochs(o, &r, &p, res, err);
        if (!st) note_a_late_signal(&r);
        const double trained = cv_now_seconds() - start;
        if (!st && r.ckpt[0])
            fprintf(r.log, "checkpoint: %s (%d written; saving took %.3f s, %.2f%% of the "
                    "%.1f s of training)\n", r.ckpt, r.saves, r.save_seconds,
                    100.0 * r.save_seconds / trained, trained);
        if (!st && r.ckpt[0] && cv_run_leads(&r) && (st = cv_run_write_pictures(o, &r, err)))
            st = save_after_failure(o, &r, &p, true, st, err);
        if (!st && r.ckpt[0] && cv_run_leads(&r)) cv_run_print_report_path(o, &r);
    }
    if (st) cv_run_undo_outputs(o, &r); /* while a second signal still takes them back */
    cv_interrupt_restore(&guard);
    cv_run_free(&r);
    return st;
}
