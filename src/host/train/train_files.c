/* train_files.c: what a training run writes (rank 0's work): the run folder and metrics
 * file prepared up front and taken back on failure, checkpoints, the metrics lines and the
 * pictures. */
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cvae/generate.h"
#include "data/png.h"
#include "data/names.h"
#include "train_run.h"

cv_status cv_run_save_state(const cv_train_options *o, const run_state *r,
                            const cv_model *model, const progress_state *p, const char *path,
                            cv_err *err) {
    char made[CV_PATH_MAX]; /* the run folder again, should someone have removed it */
    cv_status st = cv_make_dirs(o->out_dir, made, err);
    if (st) return st;
    cv_checkpoint ck = {0};
    st = cv_checkpoint_from_model(model, &ck, err);
    if (st) return st;
    /* never let a poisoned model replace a good checkpoint */
    for (size_t i = 0; i < ck.n_params; i++)
        if (!isfinite(ck.params[i]) || !isfinite(ck.adam_m[i]) || !isfinite(ck.adam_v[i])) {
            char name[128];
            cv_layout_describe(&model->layout, i, name, sizeof name);
            cv_checkpoint_free(&ck);
            bool saved = cv_path_exists(path);
            return cv_fail(err, CV_ERR_NONFINITE,
                           "step %lld: %s holds a NaN or Inf; the model was not saved%s%s",
                           (long long)p->step, name,
                           saved ? ", and the last good checkpoint stays at " : "",
                           saved ? path : "");
        }
    ck.seed = o->seed;
    ck.step = p->step;
    ck.epoch = p->epoch;
    ck.batch = o->batch;
    ck.lr = o->lr;
    ck.position = p->position;
    ck.sums = p->sums;
    ck.train = r->cfg;
    ck.nonfinite_steps = p->st.nonfinite_steps;
    ck.active_units = p->active_units;
    if (r->data.names && !cv_names_copy(r->data.names, r->data.n_names, &ck.names))
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory for the checkpoint's names");
    if (!st) st = cv_checkpoint_save(path, &ck, err);
    cv_checkpoint_free(&ck);
    return st;
}

/* v as a JSON number with "%.6f", or null where it has none: NaN (an epoch whose every
 * step was skipped has no train loss) and Inf (a diverged model's test figures) are no
 * JSON. */
static const char *json_number(char buf[64], double v) {
    if (!isfinite(v)) return "null";
    snprintf(buf, 64, "%.6f", v);
    return buf;
}

/* Appends one epoch's JSON object to the metrics text and rewrites the file whole. */
cv_status cv_run_write_metrics(const char *path, run_state *r, const epoch_report *e,
                               const cv_eval_result *t, bool has_test, cv_err *err) {
    char line[768], test[320], sigma[64] = "", num[5][64];
    if (has_test)
        snprintf(test, sizeof test,
                 "\"test_neg_elbo\": %s, \"test_rec\": %s, \"test_kl\": %s, "
                 "\"active_units\": %d", json_number(num[0], t->neg_elbo),
                 json_number(num[1], t->rec), json_number(num[2], t->kl), t->active_units);
    else
        snprintf(test, sizeof test, "\"test_neg_elbo\": null, \"test_rec\": null, "
                 "\"test_kl\": null, \"active_units\": null");
    if (r->model.layout.cfg.likelihood == CV_LIKELIHOOD_GAUSSIAN)
        snprintf(sigma, sizeof sigma, ", \"sigma\": %.6g", e->sigma);
    int n = snprintf(line, sizeof line,
                     "{\"epoch\": %d, \"train_loss\": %s, %s, \"samples_per_s\": %.1f, "
                     "\"seconds\": %.3f, \"beta\": %.6g, \"grad_norm\": %s, \"lr\": %g%s}\n",
                     e->epoch, json_number(num[3], e->train_loss), test, e->rate, e->seconds,
                     e->beta, json_number(num[4], e->grad_norm), e->lr, sigma);
    char *grown = realloc(r->metrics, r->metrics_len + (size_t)n + 1);
    if (!grown) return cv_fail(err, CV_ERR_NOMEM, "out of memory for metrics");
    memcpy(grown + r->metrics_len, line, (size_t)n + 1);
    r->metrics = grown;
    r->metrics_len += (size_t)n;
    if (!path) return CV_OK;
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
void cv_run_load_metrics(const char *path, int epochs_done, run_state *r) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return;
    cv_run_keep_metrics(fp, epochs_done, r);
    fclose(fp);
}

void cv_run_keep_metrics(FILE *fp, int epochs_done, run_state *r) {
    size_t size = 0;
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
    r->metrics_len = size;
}

cv_gen_conditions cv_run_picture_conditions(const run_state *r, const cv_split *src, int count) {
    cv_gen_conditions rows = {.n_classes = r->data.cond_width};
    if (r->data.condition == CV_COND_VECTORS)
        rows = (cv_gen_conditions){.conditions = src->conditions, .n_rows = count};
    for (int c = 0; c < rows.n_classes; c++) rows.classes[c] = c;
    return rows;
}

/* RUNDIR/samples.png (a row per class, or per condition row of the first ten test images,
 * ten samples each) and RUNDIR/reconstructions.png (ten test images, or training images
 * without a test set, above their reconstructions); none for images a PNG cannot hold. */
cv_status cv_run_write_pictures(const cv_train_options *o, run_state *r, cv_err *err) {
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
    const cv_gen_conditions rows = cv_run_picture_conditions(r, src, count);
    cv_status st = cv_generate_grid(&r->model, &r->ws, &rows, 10, false, true, o->seed, samples,
                                    err);
    if (!st) st = cv_reconstructions_png(&r->model, &r->ws, src, count, recon, err);
    if (!st) fprintf(r->log, "pictures: %s, %s\n", samples, recon);
    return st;
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

/* The temporaries (NAME.tmp.PID) that trainers no longer running left of the run's files
 * in the run folder, whose lock this run holds (the metrics file's are swept as it is
 * prepared). */
static void sweep_stale_temporaries(const cv_train_options *o) {
    static const char *const run_files[] = {"model.ckpt", CV_BEST_CKPT, "samples.png",
                                            "reconstructions.png", "report.html"};
    for (size_t i = 0; o->out_dir && i < sizeof run_files / sizeof run_files[0]; i++)
        cv_sweep_stale_temporaries(o->out_dir, run_files[i]);
}

/* What a second signal takes back before it ends the process, as cv_run_undo_outputs
 * would (until the first checkpoint is written): the folders made for `path` (the run
 * folder, with its lock file, or the metrics file's folder). */
static void undo_on_kill(run_state *r, const char *path, const char *made, bool run_folder) {
    char folder[CV_PATH_MAX], lock_path[4200];
    snprintf(folder, sizeof folder, "%s", path);
    snprintf(lock_path, sizeof lock_path, "%s/%s", path, CV_LOCK_FILE);
    if (r->guard)
        cv_interrupt_undo_on_kill(r->guard, run_folder ? lock_path : NULL,
                                  run_folder ? path : dirname(folder), made);
}

/* The run folder (created with its parents, locked) and the metrics file, checked before
 * anything slow happens, so a bad path costs the user a second, not a training run. Rank
 * 0's work: the others only name the checkpoint. */
cv_status cv_run_prepare_outputs(const cv_train_options *o, run_state *r, cv_err *err) {
    if (o->out_dir) snprintf(r->ckpt, sizeof r->ckpt, "%s/model.ckpt", o->out_dir);
    if (!cv_run_leads(r)) return CV_OK;
    if (o->out_dir) {
        cv_status st = cv_make_dirs(o->out_dir, r->made_out, err);
        if (!st) st = cv_dir_lock_take(o->out_dir, &r->lock, err);
        if (st) return name_the_flag(st, "--out", err);
        undo_on_kill(r, o->out_dir, r->made_out, true);
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
        char best[4300];
        snprintf(best, sizeof best, "%s/%s", o->out_dir, CV_BEST_CKPT);
        if (!continuing && cv_path_exists(best))
            return cv_fail(err, CV_ERR_IO, "%s already exists (another run's best model); "
                           "choose another --out so it is not overwritten", best);
    }
    cv_status st = CV_OK;
    if (o->metrics_path) {
        st = name_the_flag(cv_prepare_output_file(o->metrics_path, r->made_metrics, err),
                           "--metrics", err);
        undo_on_kill(r, o->metrics_path, r->made_metrics, false);
    }
    if (st) return st;
    sweep_stale_temporaries(o);
    /* a resume keeps its metrics file's completed epochs (cv_run_load_metrics); a fresh run does
     * not replace another run's */
    if (o->metrics_path && !o->resume_path && cv_path_exists(o->metrics_path))
        st = cv_fail(err, CV_ERR_IO,
                     "%s already exists; choose another --metrics so it is not overwritten",
                     o->metrics_path);
    return st;
}

/* A run that failed before writing anything takes back the folders it created (the
 * metrics file's first: they may lie inside the run folder), with the lock file inside a
 * run folder it created; a folder that was there keeps its lock file. Anything written
 * stays. */
void cv_run_undo_outputs(const cv_train_options *o, run_state *r) {
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
