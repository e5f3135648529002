/* train_header.c: what a training run prints about itself as it starts (its header: the
 * ranks, device, precision, data, model and objective), which the report page shows too. */
#include <stdio.h>

#include "train_run.h"

/* What the user called the data: the folder, or the training images' file or table. */
const char *cv_run_data_name(const cv_train_options *o) {
    return o->files.train_images ? o->files.train_images
           : o->files.train_table ? o->files.train_table
                                  : o->data_dir;
}

void cv_run_print_header(const cv_train_options *o, const run_state *r, const progress_state *p) {
    if (r->ranks > 1) {
        char split[64];
        cv_batch_split_text(split, sizeof split, o->batch, r->ranks);
        fprintf(r->log, "ranks: %d (MPI), the batch of %d split %s\n", r->ranks, o->batch, split);
    }
    fprintf(r->log, "device: %s\n", r->be->description);
    fprintf(r->log, "precision %s: %s\n", cv_precision_name(r->be->precision),
            cv_precision_describe(r->be->precision));
    const cv_split *t = &r->data.train;
    fprintf(r->log, "data: %s: %d training images %dx%d", cv_run_data_name(o), t->n, t->h, t->w);
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
    if (r->cfg.objective == CV_OBJECTIVE_IWAE)
        fprintf(r->log, "objective: IWAE, %d draws per image%s; ", r->cfg.samples,
                r->cfg.samples == 1 ? " (the ELBO)" : "");
    else
        fprintf(r->log, "objective: ELBO; ");
    fprintf(r->log, "%s likelihood", o->likelihood == CV_LIKELIHOOD_GAUSSIAN
                                         ? "Gaussian" : "Bernoulli");
    if (o->sigma_learned)
        fprintf(r->log, " (sigma learned, from %g)", o->sigma);
    else if (o->likelihood == CV_LIKELIHOOD_GAUSSIAN)
        fprintf(r->log, " (sigma %g)", o->sigma);
    fprintf(r->log, ", %s prior, beta %g", o->prior == CV_PRIOR_CONDITIONAL ? "conditional"
                                                                           : "standard normal",
            o->train.beta);
    if (o->train.kl_warmup)
        fprintf(r->log, " after %d warm-up epochs (%s)", o->train.kl_warmup,
                r->cfg.warmup_per_step ? "rising every step"
                                       : "held per epoch, as the checkpoint was trained");
    if (r->cfg.free_bits > 0.0f)
        fprintf(r->log, ", free bits %g nats per unit", r->cfg.free_bits);
    if (o->train.binarize) fprintf(r->log, ", dynamic binarization");
    fprintf(r->log, "; lr %s", o->train.cosine ? "cosine" : "constant");
    if (o->train.warmup_steps) fprintf(r->log, " after %lld warm-up steps",
                                       (long long)o->train.warmup_steps);
    if (o->train.clip_norm > 0.0f) fprintf(r->log, ", gradients clipped to norm %g",
                                           o->train.clip_norm);
    fputc('\n', r->log);
    if (o->likelihood == CV_LIKELIHOOD_GAUSSIAN)
        fprintf(r->log, "note: the Gaussian likelihood's nats are a density's on continuous "
                        "values (they may be negative): not comparable with a Bernoulli model's\n");
    if (o->resume_path)
        fprintf(r->log, "resuming %s at epoch %d, step %lld (%d images into the epoch); "
                "checkpoints to %s\n", o->resume_path, p->epoch + 1, (long long)p->step,
                p->position, r->ckpt);
    if (!o->out_dir) fprintf(r->log, "note: no --out given: the model will not be saved\n");
    fflush(r->log); /* a log file or pipe shows the run's settings as it starts */
}
