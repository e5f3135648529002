/* train.c: the training loop: shuffle, steps, per-epoch evaluation, logs, checkpoints. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cvae/checkpoint.h"
#include "cvae/fileio.h"
#include "cvae/generate.h"
#include "cvae/rng.h"
#include "cvae/train.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cv_train_step(cv_model *m, cv_workspace *ws, const cv_device_split *s, int rows,
                   uint64_t seed, float lr, float beta) {
    cv_backend *be = m->be;
    be->gather_batch(be, s->pixels, s->labels, s->perm, ws->step, rows, s->dim, ws->x,
                     ws->labels);
    be->zero(be, m->grads, m->layout.n_params * sizeof(float));
    cv_noise noise = {true, seed, CV_STREAM_TRAIN_EPS(0), ws->step};
    cv_model_forward(m, ws, rows, &noise, true, false);
    be->accumulate(be, &ws->sums[0], ws->rec, rows);
    be->accumulate(be, &ws->sums[1], ws->kl, rows);
    cv_model_backward(m, ws, rows, beta);
    be->adam(be, m->params, m->grads, m->adam_m, m->adam_v, m->layout.n_params, lr,
             CV_ADAM_BETA1, CV_ADAM_BETA2, CV_ADAM_EPS, ws->step);
    be->advance_step(be, ws->step, rows);
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

static cv_status save_checkpoint(const cv_train_options *o, cv_model *m, int64_t step,
                                 int epoch, const char *path, cv_err *err) {
    cv_status st = cv_ensure_dir(o->out_dir, err);
    if (st) return st;
    cv_checkpoint ck = {0};
    st = cv_checkpoint_from_model(m, &ck, err);
    if (st) return st;
    ck.seed = o->seed;
    ck.step = step;
    ck.epoch = epoch;
    ck.batch = o->batch;
    ck.lr = o->lr;
    st = cv_checkpoint_save(path, &ck, err);
    cv_checkpoint_free(&ck);
    return st;
}

/* Appends one epoch's JSON object to the metrics text and rewrites the file whole. */
static cv_status write_metrics(const char *path, char **text, size_t *len, int epoch,
                               double train_loss, const cv_eval_result *t, bool has_test,
                               double rate, double seconds, cv_err *err) {
    char line[512], test[256];
    if (has_test)
        snprintf(test, sizeof test,
                 "\"test_neg_elbo\": %.6f, \"test_rec\": %.6f, \"test_kl\": %.6f",
                 t->neg_elbo, t->rec, t->kl);
    else
        snprintf(test, sizeof test,
                 "\"test_neg_elbo\": null, \"test_rec\": null, \"test_kl\": null");
    int n = snprintf(line, sizeof line,
                     "{\"epoch\": %d, \"train_loss\": %.6f, %s, \"samples_per_s\": %.1f, "
                     "\"seconds\": %.3f}\n",
                     epoch, train_loss, test, rate, seconds);
    char *grown = realloc(*text, *len + (size_t)n + 1);
    if (!grown) return cv_fail(err, CV_ERR_NOMEM, "out of memory for metrics");
    memcpy(grown + *len, line, (size_t)n + 1);
    *text = grown;
    *len += (size_t)n;
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (!st) st = cv_outfile_write(&f, *text, *len, err);
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}

typedef struct {
    cv_data data;
    cv_backend *be;
    void *full_step; /* the recorded full-batch step, when the backend records */
    cv_model model;
    cv_workspace ws;
    cv_device_split train, test;
    int32_t *perm;
    char *metrics;
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
    free(r->perm);
    free(r->metrics);
}

/* RUNDIR/samples.png (a row per class, ten samples each) and RUNDIR/reconstructions.png
 * (ten test images, or training images without a test set, above their reconstructions). */
static cv_status write_pictures(const cv_train_options *o, run_state *r, cv_err *err) {
    char samples[4200], recon[4200];
    snprintf(samples, sizeof samples, "%s/samples.png", o->out_dir);
    snprintf(recon, sizeof recon, "%s/reconstructions.png", o->out_dir);
    int classes[256];
    for (int c = 0; c < r->data.n_classes; c++) classes[c] = c;
    cv_status st = cv_generate_grid(&r->model, &r->ws, classes, r->data.n_classes, 10, false,
                                    true, o->seed, samples, err);
    const cv_split *src = r->data.test.n ? &r->data.test : &r->data.train;
    int count = src->n < 10 ? src->n : 10;
    if (!st)
        st = cv_reconstructions_png(&r->model, &r->ws, src->pixels, src->labels, count, recon,
                                    err);
    if (!st) fprintf(o->log, "pictures: %s, %s\n", samples, recon);
    return st;
}

static cv_status check_outputs(const cv_train_options *o, char *ckpt_path, size_t size,
                               cv_err *err) {
    ckpt_path[0] = 0;
    if (!o->out_dir) return CV_OK;
    snprintf(ckpt_path, size, "%s/model.ckpt", o->out_dir);
    if (cv_path_exists(ckpt_path))
        return cv_fail(err, CV_ERR_IO,
                       "%s already exists; choose another --out so it is not overwritten",
                       ckpt_path);
    return CV_OK;
}

static cv_status train_epochs(const cv_train_options *o, run_state *r, const char *ckpt,
                              cv_train_result *res, cv_err *err) {
    cv_model *m = &r->model;
    cv_backend *be = r->be;
    const int n = r->train.n;
    const bool show_progress = isatty(STDERR_FILENO);
    size_t metrics_len = 0;
    int64_t step = 0;
    for (int epoch = 1; epoch <= o->epochs; epoch++) {
        double t0 = now_seconds();
        cv_shuffle(r->perm, n, o->seed, CV_STREAM_SHUFFLE(epoch - 1));
        be->upload(be, r->train.perm, r->perm, (size_t)n * sizeof(int32_t));
        be->zero(be, r->ws.sums, 2 * sizeof(double));
        cv_step first = {.step = step, .start = 0};
        be->upload(be, r->ws.step, &first, sizeof first);
        double last_shown = t0;
        for (int start = 0; start < n; start += o->batch, step++) {
            int rows = n - start < o->batch ? n - start : o->batch;
            if (rows == o->batch && r->full_step) {
                be->replay(be, r->full_step);
            } else if (rows == o->batch && be->capture_begin(be)) {
                cv_train_step(m, &r->ws, &r->train, rows, o->seed, o->lr, 1.0f);
                r->full_step = be->capture_end(be);
                be->replay(be, r->full_step);
            } else {
                cv_train_step(m, &r->ws, &r->train, rows, o->seed, o->lr, 1.0f);
            }
            double t = now_seconds();
            if (show_progress && (t - last_shown > 0.2 || start + rows == n)) {
                progress(epoch, o->epochs, start + rows, n, (start + rows) / (t - t0));
                last_shown = t;
            }
        }
        double sums[2];
        be->download(be, sums, r->ws.sums, sizeof sums);
        double train_seconds = now_seconds() - t0;
        double loss = (sums[0] + sums[1]) / n;
        if (!isfinite(loss))
            return cv_fail(err, CV_ERR_NONFINITE,
                           "training loss became %f in epoch %d (step %lld); try a lower --lr",
                           loss, epoch, (long long)step);
        res->train_loss = loss;
        if (r->test.n) cv_evaluate(m, &r->ws, &r->test, o->seed, 0, &res->test);
        double seconds = now_seconds() - t0, rate = n / train_seconds;
        if (r->test.n)
            fprintf(o->log,
                    "epoch %3d/%d  train_loss %9.4f  test_neg_elbo %9.4f (rec %9.4f  kl "
                    "%8.4f)  %8.0f samples/s  %6.2f s\n",
                    epoch, o->epochs, loss, res->test.neg_elbo, res->test.rec, res->test.kl,
                    rate, seconds);
        else
            fprintf(o->log, "epoch %3d/%d  train_loss %9.4f  %8.0f samples/s  %6.2f s\n",
                    epoch, o->epochs, loss, rate, seconds);
        fflush(o->log);
        res->epochs_done = epoch;
        cv_status st = CV_OK;
        if (o->metrics_path)
            st = write_metrics(o->metrics_path, &r->metrics, &metrics_len, epoch, loss,
                               &res->test, r->test.n > 0, rate, seconds, err);
        bool save = ckpt[0] && (epoch == o->epochs ||
                                (o->checkpoint_every > 0 && epoch % o->checkpoint_every == 0));
        if (!st && save) st = save_checkpoint(o, m, step, epoch, ckpt, err);
        if (st) return st;
    }
    return CV_OK;
}

cv_status cv_train_run(const cv_train_options *o, cv_train_result *res, cv_err *err) {
    memset(res, 0, sizeof *res);
    run_state r;
    memset(&r, 0, sizeof r);
    char ckpt[4200];
    cv_status st = check_outputs(o, ckpt, sizeof ckpt, err);
    if (!st) st = cv_data_load(o->data_dir, o->n_classes, &r.data, err);
    if (st) return st;
    st = cv_backend_open(o->device, &o->backend, &r.be, err);
    if (st) {
        run_free(&r);
        return st;
    }
    cv_model_config cfg = {.height = r.data.train.h, .width = r.data.train.w,
                           .n_classes = r.data.n_classes, .latent = o->latent,
                           .n_hidden = o->n_hidden};
    memcpy(cfg.hidden, o->hidden, sizeof cfg.hidden);
    int ws_rows = o->batch > CV_EVAL_BATCH ? o->batch : CV_EVAL_BATCH;
    st = cv_model_create(r.be, &cfg, &r.model, err);
    if (!st) st = cv_workspace_create(&r.model, ws_rows, &r.ws, err);
    if (!st) st = cv_device_split_upload(r.be, &r.data.train, &r.train, err);
    if (!st && r.data.test.n) st = cv_device_split_upload(r.be, &r.data.test, &r.test, err);
    if (!st && !(r.perm = malloc((size_t)r.data.train.n * sizeof(int32_t))))
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory for the shuffle order");
    if (st) {
        run_free(&r);
        return st;
    }
    cv_model_init_params(&r.model, o->seed);
    res->has_test = r.data.test.n > 0;

    fprintf(o->log, "device: %s\n", r.be->description);
    fprintf(o->log, "data: %s: %d training images %dx%d, %d classes, ", o->data_dir,
            r.data.train.n, r.data.train.h, r.data.train.w, r.data.n_classes);
    if (r.data.test.n)
        fprintf(o->log, "%d test images\n", r.data.test.n);
    else
        fprintf(o->log, "no t10k test files: training without test evaluation\n");
    fprintf(o->log, "model: %zu parameters, latent %d, hidden", r.model.layout.n_params,
            o->latent);
    for (int i = 0; i < o->n_hidden; i++) fprintf(o->log, "%s%d", i ? "," : " ", o->hidden[i]);
    fprintf(o->log, "; batch %d, lr %g, seed %llu\n", o->batch, o->lr,
            (unsigned long long)o->seed);
    if (!o->out_dir) fprintf(o->log, "note: no --out given: the model will not be saved\n");

    st = train_epochs(o, &r, ckpt, res, err);
    if (!st && ckpt[0]) fprintf(o->log, "checkpoint: %s\n", ckpt);
    if (!st && ckpt[0]) st = write_pictures(o, &r, err);
    run_free(&r);
    return st;
}
