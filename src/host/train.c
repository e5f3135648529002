/* train.c: the training loop: shuffle, steps, per-epoch evaluation, logs, checkpoints,
 * exact resume, clean stops on SIGINT/SIGTERM, and the non-finite guard; on one rank of a
 * data-parallel run too (cvae/comm.h), where every rank takes its part of each batch and
 * rank 0 alone writes and prints.
 *
 * Every random draw is a function of (seed, epoch) or (seed, step), and the checkpoint
 * holds the position inside the epoch, so a resumed run takes exactly the steps the
 * uninterrupted one would have: the final parameters are bitwise equal on the CPU.
 */
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cvae/checkpoint.h"
#include "cvae/fileio.h"
#include "cvae/generate.h"
#include "cvae/interrupt.h"
#include "cvae/png.h"
#include "cvae/rng.h"
#include "cvae/train.h"
#include "replicas.h"

/* How often the host looks at the step state for non-finite steps: rare enough that a
 * GPU stays busy, often enough that a poisoned run stops soon. */
#define NONFINITE_POLL_STEPS 50

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cv_train_options cv_train_defaults(void) {
    cv_train_options o = {.device = "auto", .n_hidden = 1, .hidden = {400}, .latent = 20,
                          .batch = 128, .epochs = 10, .lr = 1e-3f, .seed = 0, .log = stdout,
                          .sigma = 0.1f, .train = {.beta = 1.0f}};
    return o;
}

float cv_beta_at(const cv_train_config *cfg, int epoch) {
    if (cfg->kl_warmup <= 0 || epoch > cfg->kl_warmup) return cfg->beta;
    return cfg->beta * (float)(epoch - 1) / (float)cfg->kl_warmup;
}

/* The rank's rows of the batch: forward and backward into the zeroed gradients. */
static void local_gradient(cv_model *m, cv_workspace *ws, const cv_device_split *s,
                           const cv_batch_part *part, uint64_t seed, float beta, bool binarize) {
    cv_backend *be = m->be;
    be->zero(be, m->grads, m->layout.n_params * sizeof(float));
    if (part->rows == 0) return; /* fewer rows in the batch than ranks */
    be->gather_batch(be, s, ws->step, part->offset, part->rows, binarize, seed, ws->x,
                     ws->labels, ws->cond);
    cv_noise noise = {true, seed, CV_STREAM_TRAIN_EPS(0), ws->step, part->offset};
    cv_model_forward(m, ws, part->rows, &noise, part->total, false);
    cv_model_backward(m, ws, part->rows, part->total, beta);
}

void cv_train_step(cv_model *m, cv_workspace *ws, const cv_device_split *s,
                   const cv_batch_part *part, uint64_t seed, const cv_adam_config *adam,
                   float beta, bool binarize) {
    cv_backend *be = m->be;
    const size_t n = m->layout.n_params;
    local_gradient(m, ws, s, part, seed, beta, binarize);
    if (part->ranks > 1) {
        /* one sum of the gradients and, after them, the loss flag: every rank then takes
         * the same step, or skips it, and flags it the same way */
        float *flag = m->grads + n;
        be->loss_flag(be, ws->rec, ws->kl, part->rows, flag);
        be->allreduce(be, m->grads, n + 1);
        be->check_finite(be, flag, flag, 1, m->grads, n, ws->step);
    } else {
        be->check_finite(be, ws->rec, ws->kl, part->rows, m->grads, n, ws->step);
    }
    /* every rank counts the step and its norm; each its own rows' loss */
    be->accumulate_loss(be, ws->sums, ws->rec, ws->kl, part->rows, ws->step);
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

typedef struct {
    cv_comm *comm;  /* the run's ranks (NULL: one process) */
    int rank, ranks;
    uint32_t data_crc[2]; /* of the training and test splits, in a data-parallel run */
    FILE *log;      /* rank 0: the options' log; the others: /dev/null */
    cv_data data;
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
    char ckpt[4200];
    /* the shallowest folders this run created for --out and --metrics ("" for none) */
    char made_out[CV_PATH_MAX], made_metrics[CV_PATH_MAX];
} run_state;

static void run_free(run_state *r) {
    if (r->be) {
        if (r->full_step) r->be->recording_free(r->be, r->full_step);
        cv_device_split_free(r->be, &r->train);
        cv_device_split_free(r->be, &r->test);
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

/* Rank 0 writes the files and the log; in one process, that is the process. */
static bool leads(const run_state *r) { return r->rank == 0; }

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
    if (!leads(r)) own.rec = own.kl = own.rows = 0.0;
    return own;
}

/* Where training stands: what a checkpoint records. */
typedef struct {
    int64_t step;
    int epoch;         /* epochs completed */
    int position;      /* rows of the next epoch done */
    cv_loss_sums sums; /* that epoch's partial sums */
    cv_step st;        /* the device step state as last read */
} progress_state;

/* What one epoch reports. */
typedef struct {
    int epoch;
    float beta;
    double train_loss, grad_norm;
    double rate;    /* training samples/s */
    double seconds; /* the whole epoch, evaluation included */
} epoch_report;

static cv_status save_checkpoint(const cv_train_options *o, run_state *r,
                                 const progress_state *p, cv_err *err) {
    char made[CV_PATH_MAX]; /* the run folder again, should someone have removed it */
    cv_status st = cv_make_dirs(o->out_dir, made, err);
    if (st) return st;
    cv_checkpoint ck = {0};
    st = cv_checkpoint_from_model(&r->model, &ck, err);
    if (st) return st;
    /* never let a poisoned model replace a good checkpoint */
    for (size_t i = 0; i < ck.n_params; i++)
        if (!isfinite(ck.params[i]) || !isfinite(ck.adam_m[i]) || !isfinite(ck.adam_v[i])) {
            char name[128];
            cv_layout_describe(&r->model.layout, i, name, sizeof name);
            cv_checkpoint_free(&ck);
            bool saved = cv_path_exists(r->ckpt);
            return cv_fail(err, CV_ERR_NONFINITE,
                           "step %lld: %s holds a NaN or Inf; the model was not saved%s%s",
                           (long long)p->step, name,
                           saved ? ", and the last good checkpoint stays at " : "",
                           saved ? r->ckpt : "");
        }
    ck.seed = o->seed;
    ck.step = p->step;
    ck.epoch = p->epoch;
    ck.batch = o->batch;
    ck.lr = o->lr;
    ck.position = p->position;
    ck.sums = p->sums;
    ck.train = o->train;
    ck.nonfinite_steps = p->st.nonfinite_steps;
    st = cv_checkpoint_save(r->ckpt, &ck, err);
    cv_checkpoint_free(&ck);
    return st;
}

/* Appends one epoch's JSON object to the metrics text and rewrites the file whole. */
static cv_status write_metrics(const char *path, run_state *r, const epoch_report *e,
                               const cv_eval_result *t, bool has_test, cv_err *err) {
    char line[768], test[256];
    if (has_test)
        snprintf(test, sizeof test,
                 "\"test_neg_elbo\": %.6f, \"test_rec\": %.6f, \"test_kl\": %.6f",
                 t->neg_elbo, t->rec, t->kl);
    else
        snprintf(test, sizeof test,
                 "\"test_neg_elbo\": null, \"test_rec\": null, \"test_kl\": null");
    int n = snprintf(line, sizeof line,
                     "{\"epoch\": %d, \"train_loss\": %.6f, %s, \"samples_per_s\": %.1f, "
                     "\"seconds\": %.3f, \"beta\": %g, \"grad_norm\": %.6f}\n",
                     e->epoch, e->train_loss, test, e->rate, e->seconds, e->beta,
                     e->grad_norm);
    char *grown = realloc(r->metrics, r->metrics_len + (size_t)n + 1);
    if (!grown) return cv_fail(err, CV_ERR_NOMEM, "out of memory for metrics");
    memcpy(grown + r->metrics_len, line, (size_t)n + 1);
    r->metrics = grown;
    r->metrics_len += (size_t)n;
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (!st) st = cv_outfile_write(&f, r->metrics, r->metrics_len, err);
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}

/* On resume, keeps the metrics lines of the epochs the checkpoint has completed. */
static void load_metrics(const char *path, int epochs_done, run_state *r) {
    size_t size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return;
    char line[1024];
    while (fgets(line, sizeof line, fp)) {
        const char *e = strstr(line, "\"epoch\": ");
        if (!e || atoi(e + 9) > epochs_done) continue;
        size_t n = strlen(line);
        char *grown = realloc(r->metrics, size + n + 1);
        if (!grown) break;
        memcpy(grown + size, line, n + 1);
        r->metrics = grown;
        size += n;
    }
    fclose(fp);
    r->metrics_len = size;
}

/* RUNDIR/samples.png (a row per class, or per condition row of the first ten test images,
 * ten samples each) and RUNDIR/reconstructions.png (ten test images, or training images
 * without a test set, above their reconstructions); none for images a PNG cannot hold. */
static cv_status write_pictures(const cv_train_options *o, run_state *r, cv_err *err) {
    char samples[4200], recon[4200];
    snprintf(samples, sizeof samples, "%s/samples.png", o->out_dir);
    snprintf(recon, sizeof recon, "%s/reconstructions.png", o->out_dir);
    const cv_split *src = r->data.test.n ? &r->data.test : &r->data.train;
    const int count = src->n < 10 ? src->n : 10;
    if (src->channels > CV_PNG_MAX_CHANNELS) {
        fprintf(r->log, "pictures: none (a PNG holds 1 to %d channels, the images have %d)\n",
                CV_PNG_MAX_CHANNELS, src->channels);
        return CV_OK;
    }
    cv_gen_conditions rows = {.n_classes = r->data.cond_width};
    if (r->data.condition == CV_COND_VECTORS)
        rows = (cv_gen_conditions){.conditions = src->conditions, .n_rows = count};
    for (int c = 0; c < rows.n_classes; c++) rows.classes[c] = c;
    cv_status st = cv_generate_grid(&r->model, &r->ws, &rows, 10, false, true, o->seed, samples,
                                    err);
    if (!st) st = cv_reconstructions_png(&r->model, &r->ws, src, count, recon, err);
    if (!st) fprintf(r->log, "pictures: %s, %s\n", samples, recon);
    return st;
}

/* st of a failure every rank meets alike (the same step state): rank 0 says it. */
static cv_status quiet_unless_leading(const run_state *r, cv_status st, cv_err *err) {
    if (!leads(r)) err->msg[0] = '\0';
    return st;
}

static cv_status nonfinite_error(const cv_train_options *o, run_state *r, const cv_step *st,
                                 cv_err *err) {
    char what[160] = "the loss";
    bool saved = r->ckpt[0] && cv_path_exists(r->ckpt);
    if (st->first_bad_index >= 0) {
        char name[128];
        cv_layout_describe(&r->model.layout, (size_t)st->first_bad_index, name, sizeof name);
        snprintf(what, sizeof what, "the gradient of %s", name);
    }
    return cv_fail(err, CV_ERR_NONFINITE,
                   "step %lld: NaN or Inf in %s (%lld such step%s, --skip-nonfinite allows "
                   "%lld); stopped without saving%s%s",
                   (long long)st->first_bad_step, what, (long long)st->nonfinite_steps,
                   st->nonfinite_steps == 1 ? "" : "s", o->skip_nonfinite,
                   saved ? ": the last good checkpoint is " : "", saved ? r->ckpt : "");
}

/* Shuffles the epoch's order and puts it, the partial sums and the step state on the
 * device; drops a recorded step whose beta this epoch no longer uses. */
static void begin_epoch(const cv_train_options *o, run_state *r, progress_state *p, int epoch,
                        float beta) {
    cv_backend *be = r->be;
    if (r->full_step && r->full_step_beta != beta) {
        be->recording_free(be, r->full_step);
        r->full_step = NULL;
    }
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
 * recorded step (recording it first where the backend records), a partial one runs
 * eagerly. */
static void run_step(const cv_train_options *o, run_state *r, const cv_adam_config *adam,
                     float beta, int rows) {
    cv_backend *be = r->be;
    const bool binarize = o->train.binarize != 0;
    const cv_batch_part part = cv_batch_part_of(rows, r->rank, r->ranks);
    if (rows == o->batch && !r->full_step && be->capture_begin(be)) {
        cv_train_step(&r->model, &r->ws, &r->train, &part, o->seed, adam, beta, binarize);
        r->full_step = be->capture_end(be);
        r->full_step_beta = beta;
    }
    if (rows == o->batch && r->full_step)
        be->replay(be, r->full_step);
    else
        cv_train_step(&r->model, &r->ws, &r->train, &part, o->seed, adam, beta, binarize);
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
    cv_status st = r->ckpt[0] && leads(r) ? save_checkpoint(o, r, p, err) : CV_OK;
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
    if (o->train.kl_warmup || o->train.beta != 1.0f) fprintf(r->log, "  beta %g", e->beta);
    if (o->train.clip_norm > 0.0f) fprintf(r->log, "  grad_norm %.3f", e->grad_norm);
    fputc('\n', r->log);
    if (st->nonfinite_steps)
        fprintf(r->log, "note: %lld step%s with a NaN or Inf skipped so far (first: step "
                        "%lld)\n",
                (long long)st->nonfinite_steps, st->nonfinite_steps == 1 ? "" : "s",
                (long long)st->first_bad_step);
    fflush(r->log);
}

/* The ranks' check that they hold one model (replicas.c), at the start and each epoch's
 * end: their state, the data they read and where they are in it. */
static cv_status check_replicas(run_state *r, const progress_state *p, cv_err *err) {
    const int64_t place[5] = {r->data_crc[0], r->data_crc[1], p->epoch, p->position, p->step};
    return cv_replicas_agree(r->comm, &r->model, place, sizeof place, p->step, err);
}

/* Rank 0's files at an epoch's end: the checkpoint (when due) first, so that a metrics
 * file that cannot be written loses no training, then the metrics. */
static cv_status write_epoch_files(const cv_train_options *o, run_state *r,
                                   const progress_state *p, const epoch_report *e,
                                   const cv_train_result *res, cv_err *err) {
    bool due = e->epoch == o->epochs ||
               (o->checkpoint_every > 0 && e->epoch % o->checkpoint_every == 0);
    cv_status st = r->ckpt[0] && due ? save_checkpoint(o, r, p, err) : CV_OK;
    if (!st && o->metrics_path)
        st = write_metrics(o->metrics_path, r, e, &res->test, r->test.n > 0, err);
    return st;
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
    if (r->test.n) {
        const cv_eval_options eo = {.comm = r->comm};
        cv_status st = cv_evaluate(&r->model, &r->ws, &r->test, o->seed, &eo, &res->test, err);
        if (st) return st;
    }
    e->seconds = now_seconds() - t0;
    print_epoch_line(o, r, e, res, &p->st);
    res->epochs_done = e->epoch;
    p->epoch = e->epoch;
    p->position = 0;
    p->sums = (cv_loss_sums){0};
    cv_status st = check_replicas(r, p, err);
    if (st) return st;
    st = leads(r) ? write_epoch_files(o, r, p, e, res, err) : CV_OK;
    return cv_comm_agree(r->comm, st, err);
}

static cv_status train_epoch(const cv_train_options *o, run_state *r, progress_state *p,
                             const cv_adam_config *adam, int epoch, cv_train_result *res,
                             cv_err *err) {
    const int n = r->train.n;
    const bool show_progress = leads(r) && isatty(STDERR_FILENO);
    const double t0 = now_seconds();
    epoch_report e = {.epoch = epoch, .beta = cv_beta_at(&o->train, epoch)};
    begin_epoch(o, r, p, epoch, e.beta);
    double last_shown = t0;
    const int done_at_start = p->position;
    for (int k = 0; p->position < n; k++) {
        int rows = n - p->position < o->batch ? n - p->position : o->batch;
        run_step(o, r, adam, e.beta, rows);
        p->step++;
        p->position += rows;
        /* a signal in the epoch's last step stops after the epoch ends (train_epochs): a
         * checkpoint at position n would describe no resumable state */
        int sig = cv_comm_max_int(r->comm, p->position < n ? cv_interrupt_pending() : 0);
        if (sig || (k + 1) % NONFINITE_POLL_STEPS == 0 || p->position == n) {
            r->be->download(r->be, &p->st, r->ws.step, sizeof p->st);
            if (p->st.halted)
                return quiet_unless_leading(r, nonfinite_error(o, r, &p->st, err), err);
        }
        if (sig) {
            res->signal = sig;
            return stop_on_signal(o, r, p, sig, epoch, err);
        }
        double t = now_seconds();
        if (show_progress && (t - last_shown > 0.2 || p->position == n)) {
            progress(epoch, o->epochs, p->position, n, (p->position - done_at_start) / (t - t0));
            last_shown = t;
        }
    }
    /* the last step's state was just read back, so the device has finished the epoch */
    e.rate = (n - done_at_start) / (now_seconds() - t0);
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

/* The checkpoint a resume continues must describe the run the flags describe. */
static cv_status check_resume(const cv_train_options *o, const cv_checkpoint *ck, cv_err *err) {
    const cv_model_config *c = &ck->cfg;
    bool hidden_same = c->n_hidden == o->n_hidden;
    for (int i = 0; hidden_same && i < o->n_hidden; i++) hidden_same = c->hidden[i] == o->hidden[i];
    const char *what = !hidden_same                 ? "--hidden"
                       : c->latent != o->latent     ? "--latent"
                       : ck->batch != o->batch      ? "--batch"
                       : ck->lr != o->lr            ? "--lr"
                       : ck->seed != o->seed        ? "--seed"
                       : (o->n_classes && o->n_classes != c->cond_width) ? "--classes"
                       : c->prior != o->prior                            ? "--prior"
                       : c->likelihood != o->likelihood || c->sigma != o->sigma
                           ? "--likelihood/--sigma"
                       : memcmp(&ck->train, &o->train, sizeof ck->train) != 0
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

/* A failure about an output path, with the flag that named it in front. */
static cv_status name_the_flag(cv_status st, const char *flag, cv_err *err) {
    if (st) {
        char msg[sizeof err->msg];
        memcpy(msg, err->msg, sizeof msg);
        int room = (int)(sizeof err->msg - strlen(flag) - 3); /* a long message is cut */
        snprintf(err->msg, sizeof err->msg, "%s: %.*s", flag, room, msg);
    }
    return st;
}

/* The run folder (created with its parents, locked) and the metrics file, checked before
 * anything slow happens, so a bad path costs the user a second, not a training run. Rank
 * 0's work: the others only name the checkpoint. */
static cv_status prepare_outputs(const cv_train_options *o, run_state *r, cv_err *err) {
    if (o->out_dir) snprintf(r->ckpt, sizeof r->ckpt, "%s/model.ckpt", o->out_dir);
    if (!leads(r)) return CV_OK;
    if (o->out_dir) {
        cv_status st = cv_make_dirs(o->out_dir, r->made_out, err);
        if (!st) st = cv_dir_lock_take(o->out_dir, &r->lock, err);
        if (st) return name_the_flag(st, "--out", err);
        /* a resume may continue the very checkpoint it writes; nothing else overwrites */
        bool continuing = false;
        if (o->resume_path) {
            char *a = realpath(o->resume_path, NULL), *b = realpath(r->ckpt, NULL);
            continuing = a && b && strcmp(a, b) == 0;
            free(a);
            free(b);
        }
        if (!continuing && cv_path_exists(r->ckpt))
            return cv_fail(err, CV_ERR_IO,
                           "%s already exists; choose another --out so it is not overwritten, "
                           "or continue it with --resume %s",
                           r->ckpt, r->ckpt);
    }
    if (!o->metrics_path) return CV_OK;
    cv_status st = name_the_flag(cv_prepare_output_file(o->metrics_path, r->made_metrics, err),
                                 "--metrics", err);
    /* a resume keeps its metrics file's completed epochs (load_metrics); a fresh run does
     * not replace another run's */
    if (!st && !o->resume_path && cv_path_exists(o->metrics_path))
        st = cv_fail(err, CV_ERR_IO,
                     "%s already exists; choose another --metrics so it is not overwritten",
                     o->metrics_path);
    return st;
}

/* A run that failed before writing anything takes back the folders it created (the
 * metrics file's first: they may lie inside the run folder), with the lock file inside a
 * run folder it created; a folder that was there keeps its lock file. Anything written
 * stays. */
static void undo_outputs(const cv_train_options *o, run_state *r) {
    if (r->made_metrics[0] && !cv_path_exists(o->metrics_path)) {
        char parent[CV_PATH_MAX];
        snprintf(parent, sizeof parent, "%s", o->metrics_path);
        cv_unmake_dirs(dirname(parent), r->made_metrics);
    }
    if (r->made_out[0] && !cv_path_exists(r->ckpt)) {
        char lock_path[4200];
        snprintf(lock_path, sizeof lock_path, "%s/%s", o->out_dir, CV_LOCK_FILE);
        if (r->lock.fd >= 0) unlink(lock_path); /* still held: see cv_dir_lock_take */
        cv_dir_lock_release(&r->lock);
        cv_unmake_dirs(o->out_dir, r->made_out);
    }
}

/* What the user called the data: the folder, or the training images' file. */
static const char *data_name(const cv_train_options *o) {
    return o->files.train_images ? o->files.train_images : o->data_dir;
}

/* The checkpoint to resume (checked against the flags) and the data set. */
static cv_status load_inputs(const cv_train_options *o, run_state *r, cv_err *err) {
    if (o->resume_path) {
        cv_status st = cv_checkpoint_load(o->resume_path, &r->resume, err);
        if (!st) st = check_resume(o, &r->resume, err);
        if (st) return st;
    }
    cv_status st = cv_data_load_files(o->data_dir, &o->files, o->n_classes, &r->data, err);
    if (!st && o->resume_path) st = cv_model_fit_labels(&r->resume.cfg, &r->data, data_name(o), err);
    if (st) return st;
    /* a resume must train the model its checkpoint holds (a usage error: the flags and the
     * checkpoint disagree) */
    if (o->resume_path && cv_model_takes(&r->resume.cfg, &r->data, &r->data.train,
                                         data_name(o), err))
        return CV_ERR_USAGE;
    if (o->resume_path && r->resume.position >= r->data.train.n)
        return cv_fail(err, CV_ERR_USAGE, "%s: the checkpoint stopped %d images into an "
                       "epoch, but %s has %d training images", o->resume_path,
                       r->resume.position, data_name(o), r->data.train.n);
    if (o->train.binarize) cv_split_binarize(&r->data.test);
    return CV_OK;
}

/* The model, its workspace and the data on the device. */
static cv_status build_model(const cv_train_options *o, run_state *r, cv_err *err) {
    cv_model_config cfg = {.height = r->data.train.h, .width = r->data.train.w,
                           .channels = r->data.train.channels, .condition = r->data.condition,
                           .cond_width = r->data.cond_width, .latent = o->latent,
                           .n_hidden = o->n_hidden, .prior = o->prior,
                           .likelihood = o->likelihood, .sigma = o->sigma};
    memcpy(cfg.hidden, o->hidden, sizeof cfg.hidden);
    int ws_rows = o->batch > CV_EVAL_BATCH ? o->batch : CV_EVAL_BATCH;
    cv_status st = cv_model_create(r->be, &cfg, &r->model, err);
    if (!st) st = cv_workspace_create(&r->model, ws_rows, &r->ws, err);
    if (!st) st = cv_device_split_upload(r->be, &r->data.train, &r->train, err);
    if (!st && r->data.test.n) st = cv_device_split_upload(r->be, &r->data.test, &r->test, err);
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
    if (!o->resume_path) return cv_model_init_params(&r->model, o->seed, err);
    const cv_checkpoint *ck = &r->resume;
    cv_checkpoint_to_model(ck, &r->model);
    p->step = ck->step;
    p->epoch = ck->epoch;
    p->position = ck->position;
    p->sums = ck->sums;
    p->st.nonfinite_steps = ck->nonfinite_steps;
    if (o->metrics_path && leads(r)) load_metrics(o->metrics_path, ck->epoch, r);
    return CV_OK;
}

/* The rank's place in the run and its log. */
static cv_status join_run(const cv_train_options *o, run_state *r, cv_err *err) {
    r->comm = o->comm;
    r->rank = cv_comm_rank(o->comm);
    r->ranks = cv_comm_size(o->comm);
    r->log = leads(r) ? o->log : fopen("/dev/null", "w");
    return r->log ? CV_OK : cv_fail(err, CV_ERR_IO, "cannot open /dev/null for the log");
}

/* Each phase ends with every rank's agreement, so that a rank that failed stops them all
 * at the same place (no rank waits in a collective the failed one never reaches). */
static cv_status prepare(const cv_train_options *o, run_state *r, progress_state *p,
                         cv_err *err) {
    cv_status st = join_run(o, r, err);
    /* quick checks first: the outputs, then the device, before the data is read */
    if (!st) st = prepare_outputs(o, r, err);
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
    st = cv_comm_agree(r->comm, st, err);
    return st ? st : check_replicas(r, p, err);
}

static void print_header(const cv_train_options *o, const run_state *r, const progress_state *p) {
    if (r->ranks > 1) {
        char split[64];
        cv_batch_split_text(split, sizeof split, o->batch, r->ranks);
        fprintf(r->log, "ranks: %d (MPI), the batch of %d split %s\n", r->ranks, o->batch, split);
    }
    fprintf(r->log, "device: %s\n", r->be->description);
    fprintf(r->log, "precision %s: %s\n", cv_precision_name(r->be->precision),
            cv_precision_describe(r->be->precision));
    const cv_split *t = &r->data.train;
    fprintf(r->log, "data: %s: %d training images %dx%d", data_name(o), t->n, t->h, t->w);
    if (t->channels > 1) fprintf(r->log, "x%d", t->channels);
    if (r->data.condition == CV_COND_LABELS)
        fprintf(r->log, ", %d classes, ", r->data.cond_width);
    else
        fprintf(r->log, ", condition vectors of width %d, ", r->data.cond_width);
    const bool vectors = r->data.condition == CV_COND_VECTORS;
    if (r->data.test.n)
        fprintf(r->log, "%d test images\n", r->data.test.n);
    else if (r->data.test_skipped)
        fprintf(r->log, "no test split: the folder's test files hold %s, not %s (name test "
                "files with --test-images and --test-%s)\n",
                cv_condition_kind_name(vectors ? CV_COND_LABELS : CV_COND_VECTORS),
                cv_condition_kind_name(r->data.condition), vectors ? "conditions" : "labels");
    else
        fprintf(r->log, "no test files: training without test evaluation\n");
    fprintf(r->log, "model: %zu parameters, latent %d, hidden", r->model.layout.n_params,
            o->latent);
    for (int i = 0; i < o->n_hidden; i++) fprintf(r->log, "%s%d", i ? "," : " ", o->hidden[i]);
    fprintf(r->log, "; batch %d, lr %g, seed %llu\n", o->batch, o->lr,
            (unsigned long long)o->seed);
    fprintf(r->log, "objective: %s likelihood", o->likelihood == CV_LIKELIHOOD_GAUSSIAN
                                                   ? "Gaussian" : "Bernoulli");
    if (o->likelihood == CV_LIKELIHOOD_GAUSSIAN) fprintf(r->log, " (sigma %g)", o->sigma);
    fprintf(r->log, ", %s prior, beta %g", o->prior == CV_PRIOR_CONDITIONAL ? "conditional"
                                                                           : "standard normal",
            o->train.beta);
    if (o->train.kl_warmup) fprintf(r->log, " after %d warm-up epochs", o->train.kl_warmup);
    if (o->train.binarize) fprintf(r->log, ", dynamic binarization");
    fprintf(r->log, "; lr %s", o->train.cosine ? "cosine" : "constant");
    if (o->train.warmup_steps) fprintf(r->log, " after %lld warm-up steps",
                                       (long long)o->train.warmup_steps);
    if (o->train.clip_norm > 0.0f) fprintf(r->log, ", gradients clipped to norm %g",
                                           o->train.clip_norm);
    fputc('\n', r->log);
    if (o->resume_path)
        fprintf(r->log, "resuming %s at epoch %d, step %lld (%d images into the epoch)\n",
                o->resume_path, p->epoch + 1, (long long)p->step, p->position);
    if (!o->out_dir) fprintf(r->log, "note: no --out given: the model will not be saved\n");
    fflush(r->log); /* a log file or pipe shows the run's settings as it starts */
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

cv_status cv_train_run(const cv_train_options *o, cv_train_result *res, cv_err *err) {
    memset(res, 0, sizeof *res);
    run_state r;
    memset(&r, 0, sizeof r);
    r.lock.fd = -1;
    progress_state p;
    /* caught from the start: a signal while the data loads must not leave the folders */
    cv_interrupt_guard guard;
    cv_interrupt_install(&guard);
    cv_status st = prepare(o, &r, &p, err);
    if (!st) st = stop_if_signalled_early(&r, res, err);
    if (!st) {
        res->has_test = r.data.test.n > 0;
        res->epochs_done = p.epoch;
        print_header(o, &r, &p);
        st = train_epochs(o, &r, &p, res, err);
        if (!st) note_a_late_signal(&r);
        if (!st && r.ckpt[0]) fprintf(r.log, "checkpoint: %s\n", r.ckpt);
        if (!st && r.ckpt[0] && leads(&r)) st = write_pictures(o, &r, err);
    }
    cv_interrupt_restore(&guard);
    if (st) undo_outputs(o, &r);
    run_free(&r);
    return st;
}
