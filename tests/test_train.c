/* test_train.c: training lowers the loss, is bitwise deterministic for a seed, keeps the
 * last partial batch, and its checkpoint evaluates to the figures it printed; a run that
 * diverges stops at its bad step (the non-finite guard, Adam's state included). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cv_math.h"
#include "cvae/checkpoint.h"
#include "cvae/train.h"
#include "helpers.h"

static char *dir;
static FILE *log_sink;

static void setup(void) {
    dir = test_tmpdir();
    log_sink = fopen("/dev/null", "w");
}
static void teardown(void) {
    fclose(log_sink);
    test_rmtree(dir);
    free(dir);
}

TestSuite(train, .init = setup, .fini = teardown, .timeout = 120);

static cv_train_options small_options(const char *data, const char *out, const char *metrics,
                                      uint64_t seed) {
    cv_train_options o = cv_train_defaults();
    o.data_dir = data;
    o.device = "cpu";
    o.out_dir = out;
    o.metrics_path = metrics;
    o.hidden[0] = 32;
    o.latent = 4;
    o.batch = 32;
    o.epochs = 6;
    o.lr = 3e-3f;
    o.seed = seed;
    o.log = log_sink;
    return o;
}

/* The value of "key": in each line of a JSON-lines file, in order. */
static int read_metric(const char *path, const char *key, double *out, int max) {
    size_t size;
    char *text = (char *)test_read_file(path, &size);
    cr_assert_not_null(text, "no metrics file %s", path);
    text[size] = 0;
    int n = 0;
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    for (char *p = strstr(text, pattern); p && n < max; p = strstr(p + 1, pattern))
        out[n++] = strtod(p + strlen(pattern), NULL);
    free(text);
    return n;
}

Test(train, lowers_the_loss_and_keeps_the_partial_batch) {
    test_rng r = test_rng_new("train data");
    char data[4096], out[4096], metrics[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 600, 100, 8, 8, 3, false, r.s);
    cv_train_options o = small_options(data, out, metrics, r.s);
    cv_train_result res;
    cv_err err;
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
    double loss[16], test[16];
    cr_assert_eq(read_metric(metrics, "train_loss", loss, 16), 6);
    cr_assert_eq(read_metric(metrics, "test_neg_elbo", test, 16), 6);
    cr_assert_lt(loss[5], 0.85 * loss[0], "train loss %g -> %g", loss[0], loss[5]);
    cr_assert_lt(test[5], test[0], "test -ELBO %g -> %g", test[0], test[5]);

    char ckpt[8192];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    cv_checkpoint ck;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    /* 600 = 18 * 32 + 24: 19 steps an epoch, the partial one included */
    cr_assert_eq(ck.step, 19 * 6);
    cr_assert_eq(ck.epoch, 6);

    /* the checkpoint evaluates to the figures training printed */
    cv_backend *be;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    cv_model m;
    cv_workspace ws;
    cv_data d;
    cv_device_split split;
    cr_assert_eq(cv_model_from_checkpoint(be, &ck, &m, &err), CV_OK);
    cr_assert_eq(cv_workspace_create(&m, CV_EVAL_BATCH, &ws, &err), CV_OK);
    cr_assert_eq(cv_data_load(data, ck.cfg.cond_width, &d, &err), CV_OK);
    cr_assert_eq(cv_device_split_upload(be, &d.test, &split, &err), CV_OK);
    cv_eval_result ev;
    double log_prior[3];
    int counts[3] = {0};
    for (int i = 0; i < d.train.n; i++) counts[d.train.labels[i]]++;
    for (int c = 0; c < 3; c++) log_prior[c] = log((double)counts[c] / d.train.n);
    cv_eval_options eo = {.iwae_k = 64, .marginal = true, .class_log_prior = log_prior,
                          .latent_stats = true};
    cr_assert_eq(cv_evaluate(&m, &ws, &split, r.s, &eo, &ev, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(ev.neg_elbo, res.test.neg_elbo, "eval %.9g vs training %.9g", ev.neg_elbo,
                 res.test.neg_elbo);
    /* the IWAE bound is tighter than the ELBO */
    cr_assert_lt(ev.iwae_nll, ev.neg_elbo, "IWAE %g vs -ELBO %g", ev.iwae_nll, ev.neg_elbo);
    /* log p(x) >= log p(c) + log p(x|c) for the true class: the marginal NLL is at most
     * the conditional one plus -log p(c) of the rarest class (estimates, so 1 nat slack) */
    double worst_prior = -fmin(log_prior[0], fmin(log_prior[1], log_prior[2]));
    cr_assert_lt(ev.marginal_nll, ev.iwae_nll + worst_prior + 1.0, "marginal %g, IWAE %g",
                 ev.marginal_nll, ev.iwae_nll);
    cr_assert_gt(ev.marginal_nll, 0.0);
    /* the per-dimension KL adds up to the test KL; active units are among the 4 */
    double kl_sum = 0;
    for (int j = 0; j < 4; j++) kl_sum += ev.kl_per_dim[j];
    cr_assert(fabs(kl_sum - ev.kl) < 1e-3 * (1 + ev.kl), "KL per dimension sums to %g, KL %g",
              kl_sum, ev.kl);
    cr_assert(ev.active_units >= 1 && ev.active_units <= 4, "%d active units", ev.active_units);
    cv_eval_result_free(&ev);
    cv_device_split_free(be, &split);
    cv_data_free(&d);
    cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    be->destroy(be);
    cv_checkpoint_free(&ck);
}

Test(train, every_option_trains_and_lowers_its_loss) {
    test_rng r = test_rng_new("options");
    char data[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 600, 100, 8, 8, 3, false, r.s);
    for (int variant = 0; variant < 7; variant++) {
        char out[4200], metrics[4200];
        snprintf(out, sizeof out, "%s/run%d", dir, variant);
        snprintf(metrics, sizeof metrics, "%s/m%d.jsonl", dir, variant);
        cv_train_options o = small_options(data, out, metrics, r.s);
        o.epochs = 4;
        switch (variant) {
        case 0: o.prior = CV_PRIOR_CONDITIONAL; o.train.binarize = 1; break;
        case 1: o.likelihood = CV_LIKELIHOOD_GAUSSIAN; o.sigma = 0.2f; break;
        case 2: o.train.beta = 2.0f; o.train.kl_warmup = 2; break;
        case 3: o.train.cosine = 1; o.train.warmup_steps = 10; o.train.clip_norm = 5.0f; break;
        case 4: o.train.free_bits = 0.5f; break;
        case 5: o.train.objective = CV_OBJECTIVE_IWAE; o.train.samples = 3; break;
        case 6: o.likelihood = CV_LIKELIHOOD_GAUSSIAN; o.sigma_learned = true; break;
        }
        cv_train_result res;
        cv_err err;
        cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "variant %d: %s", variant, err.msg);
        double loss[8], test[8], beta[8], norm[8];
        cr_assert_eq(read_metric(metrics, "train_loss", loss, 8), 4);
        cr_assert_eq(read_metric(metrics, "test_neg_elbo", test, 8), 4);
        cr_assert_eq(read_metric(metrics, "beta", beta, 8), 4);
        cr_assert_eq(read_metric(metrics, "grad_norm", norm, 8), 4);
        cr_assert_lt(test[3], test[0], "variant %d: test -ELBO %g -> %g", variant, test[0], test[3]);
        for (int e = 0; e < 4; e++) cr_assert(isfinite(loss[e]) && norm[e] > 0);
        /* beta rises step by step over warm-up epochs 1 and 2 (S steps each) to 2: epoch
         * 1's mean is 2 (0 + ... + S-1) / (2S S) = (S - 1) / 2S, epoch 2's (3S - 1) / 2S */
        const double S = (600 + o.batch - 1) / o.batch;
        if (variant == 2)
            cr_assert(fabs(beta[0] - (S - 1) / (2 * S)) < 1e-5 &&
                      fabs(beta[1] - (3 * S - 1) / (2 * S)) < 1e-5 && beta[2] == 2 &&
                      beta[3] == 2, "beta %g %g %g %g", beta[0], beta[1], beta[2], beta[3]);
        else
            cr_assert(beta[0] == 1 && beta[3] == 1);
    }
}

Test(train, same_seed_same_bits_other_seed_other_bits) {
    test_rng r = test_rng_new("determinism");
    char data[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 300, 50, 6, 7, 4, true, r.s);
    uint8_t *bytes[3];
    size_t sizes[3];
    double losses[3][4];
    uint64_t seeds[3] = {r.s, r.s, r.s + 1};
    for (int i = 0; i < 3; i++) {
        char out[4096], metrics[4096], ckpt[8192];
        snprintf(out, sizeof out, "%s/run%d", dir, i);
        snprintf(metrics, sizeof metrics, "%s/m%d.jsonl", dir, i);
        cv_train_options o = small_options(data, out, metrics, seeds[i]);
        o.epochs = 3;
        cv_train_result res;
        cv_err err;
        cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
        snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
        bytes[i] = test_read_file(ckpt, &sizes[i]);
        cr_assert_eq(read_metric(metrics, "train_loss", losses[i], 4), 3);
    }
    cr_assert(sizes[0] == sizes[1] && memcmp(bytes[0], bytes[1], sizes[0]) == 0,
              "two runs with one seed wrote different checkpoints");
    cr_assert(memcmp(losses[0], losses[1], sizeof losses[0]) == 0);
    cr_assert(memcmp(bytes[0], bytes[2], sizes[0]) != 0, "another seed gave the same model");
    for (int i = 0; i < 3; i++) free(bytes[i]);
}

Test(train, trains_without_test_files_and_refuses_to_overwrite) {
    test_rng r = test_rng_new("no test set");
    char data[4096], out[4096], ckpt[8192];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 100, 0, 4, 4, 2, false, r.s);
    cv_train_options o = small_options(data, out, NULL, r.s);
    o.epochs = 1;
    cv_train_result res;
    cv_err err;
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(res.has_test, 0);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", out);
    size_t before, after;
    uint8_t *a = test_read_file(ckpt, &before);
    o.seed++;
    cr_assert_eq(cv_train_run(&o, &res, &err), CV_ERR_IO, "an existing checkpoint was overwritten");
    cr_assert(strstr(err.msg, "already exists") != NULL, "%s", err.msg);
    uint8_t *b = test_read_file(ckpt, &after);
    cr_assert(before == after && memcmp(a, b, before) == 0, "the old checkpoint changed");
    free(a);
    free(b);
}

/* A finite gradient can still poison Adam: its second moment v = b2 v + (1 - b2) g^2 is a
 * float, and g^2 overflows from |g| = 2^64. A run that diverges (--lr 1e6) reaches such
 * gradients: the check passed them, Adam wrote v = Inf, and the run went on until its
 * checkpoint refused the model. An element of magnitude 2^63 or more (CV_GRAD_LIMIT) is
 * flagged like a NaN, so the step is skipped and named; below it, Adam's state stays
 * finite. */
Test(train, a_gradient_too_large_for_adams_state_is_flagged) {
    test_rng r = test_rng_new("gradient overflow");
    cv_backend *be;
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK, "%s", err.msg);
    const size_t n = 50001;
    float *g = malloc(n * 4), *p = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
    float rec[3] = {1, 2, 3}, kl[3] = {1, 1, 1};
    test_fill(&r, g, n, -1, 1);
    test_fill(&r, p, n, -1, 1);
    const size_t at = 1 + (size_t)test_uniform(&r, 0, n - 2);
    cv_adam_config ac = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    cv_step st = {.step = 7, .first_bad_step = -1, .first_bad_index = -1,
                  .allowed_nonfinite = 5};
    /* just below the limit, either sign: taken, and Adam's state stays finite */
    g[at] = -nextafterf(CV_GRAD_LIMIT, 0.0f);
    g[at - 1] = nextafterf(CV_GRAD_LIMIT, 0.0f);
    be->check_finite(be, rec, kl, 3, g, n, &st);
    cr_assert(!st.skip, "a gradient below the limit was flagged");
    be->adam(be, p, g, m, v, n, &ac, &st);
    for (size_t i = 0; i < n; i++)
        cr_assert(isfinite(p[i]) && isfinite(m[i]) && isfinite(v[i]), "Adam wrote a non-finite "
                  "value at %zu from g = %g", i, g[i]);
    be->advance_step(be, &st, 3);
    float *p0 = malloc(n * 4), *v0 = malloc(n * 4);
    memcpy(p0, p, n * 4);
    memcpy(v0, v, n * 4);
    /* at the limit (finite, far from FLT_MAX): flagged, named, and no update */
    g[at] = CV_GRAD_LIMIT;
    g[at + 1] = -3e38f;
    be->check_finite(be, rec, kl, 3, g, n, &st);
    cr_assert(st.skip && st.nonfinite_steps == 1 && st.first_bad_index == (int64_t)at,
              "flag %d, count %lld, index %lld (want %zu)", st.skip,
              (long long)st.nonfinite_steps, (long long)st.first_bad_index, at);
    be->adam(be, p, g, m, v, n, &ac, &st);
    cr_assert(memcmp(p, p0, n * 4) == 0 && memcmp(v, v0, n * 4) == 0,
              "Adam updated a flagged step");
    free(g); free(p); free(m); free(v); free(p0); free(v0);
    be->destroy(be);
}

/* A run that diverges (--lr 1e6) used to print losses of 1e34 for every epoch and fail
 * only at its save ("encoder layer 1 weight [4] holds a NaN or Inf; the model was not
 * saved"): the gradients stayed finite while Adam's update wrote an Inf into its state.
 * It stops at the bad step, naming it and the tensor, before any epoch ends; with
 * --skip-nonfinite the bad steps are skipped and the run saves a finite model. */
Test(train, a_diverging_run_stops_at_the_bad_step_and_skip_nonfinite_skips_it) {
    char data[4096], out[4096], skipped[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/nan", dir);
    snprintf(skipped, sizeof skipped, "%s/skipped", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 2000, 200, 8, 8, 4, false, 77);
    const char *args[] = {"train", "--data", data, "--lr", "1e6", "--epochs", "3", "--out",
                          out, "--device", "cpu", NULL, NULL, NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 1, "%s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    long long step = -1;
    const char *at = strstr(e, "step ");
    cr_assert(at && sscanf(at, "step %lld:", &step) == 1, "no step named: %s", e);
    cr_assert(strstr(e, "in the gradient of ") && !strstr(e, "was not saved"),
              "the step and the tensor are not named: %s", e);
    cr_assert(step >= 0 && step < 16, "stopped at step %lld, not in the first epoch (16 "
              "steps): %s", step, e);
    cr_assert(!strstr(o, "epoch   1/3"), "an epoch of a poisoned model ended: %s", o);
    free(o);
    free(e);
    args[8] = skipped;
    args[11] = "--skip-nonfinite";
    args[12] = "100000";
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    cr_assert(strstr(o, "skipped so far"), "no skipped steps reported: %s", o);
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", skipped);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert_gt(ck.nonfinite_steps, 0);
    for (size_t i = 0; i < ck.n_params; i++)
        cr_assert(isfinite(ck.params[i]) && isfinite(ck.adam_m[i]) && isfinite(ck.adam_v[i]),
                  "the saved model holds a NaN or Inf at %zu", i);
    cv_checkpoint_free(&ck);
    free(o);
    free(e);
}

/* A run that diverges after its first epoch, before its first checkpoint (by default a
 * minute in), kept its best model only in memory: the NaN stop removed the run folder's
 * lock and left report.html alone there, the finite model of the best epoch lost. It is
 * now written to model-best.ckpt, and the error line says where. The divergence: a
 * beta so large that, as the KL warm-up raises it step by step (two steps an epoch), the
 * KL's gradient passes what Adam takes (2^63); the first beta of the list whose run gets
 * past its first epoch is taken, since the step where that happens hangs on rounding. */
Test(train, a_run_that_diverges_keeps_its_best_model) {
    char data[4096], out[4096], best[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 2000, 200, 8, 8, 4, false, 77);
    const char *betas[] = {"1e22", "5e21", "2e22", "3e21", "5e22"};
    char *o = NULL, *e = NULL;
    bool found = false;
    for (size_t i = 0; i < sizeof betas / sizeof betas[0] && !found; i++) {
        snprintf(out, sizeof out, "%s/run%zu", dir, i);
        const char *args[] = {"train", "--data", data, "--beta", betas[i], "--kl-warmup",
                              "100", "--batch", "1000", "--epochs", "100", "--out", out,
                              "--device", "cpu", NULL};
        free(o);
        free(e);
        const int rc = test_run_cvae(&o, &e, args);
        found = rc == 1 && strstr(o, "epoch   1/100") && strstr(e, "NaN");
    }
    cr_assert(found, "no beta made a run that diverges after its first epoch: %s", e);
    cr_assert_eq(test_count_lines(e), 1, "%s", e);
    snprintf(best, sizeof best, "%s/model-best.ckpt", out);
    cr_assert(strstr(e, best), "the error line does not name %s: %s", best, e);
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(best, &ck, &err), CV_OK, "%s (%s)", err.msg, e);
    cr_assert_geq(ck.epoch, 1);
    for (size_t i = 0; i < ck.n_params; i++)
        cr_assert(isfinite(ck.params[i]), "the best model holds a NaN or Inf at %zu", i);
    cv_checkpoint_free(&ck);
    free(o);
    free(e);
}

/* An epoch whose every step --skip-nonfinite skipped has no train loss (0 rows): its metrics
 * line said "train_loss": -nan, which no JSON reader takes, and a diverged model's test
 * figures may be Inf. Such values are written as null. */
Test(train, skipped_epochs_write_metrics_that_are_json) {
    char data[4096], out[4096], metrics[4200];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/skipped", dir);
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_write_dataset(data, 2000, 200, 8, 8, 4, false, 78);
    const char *args[] = {"train", "--data", data, "--lr", "1e6", "--epochs", "3", "--out",
                          out, "--metrics", metrics, "--skip-nonfinite", "100000",
                          "--device", "cpu", NULL};
    char *o, *e;
    cr_assert_eq(test_run_cvae(&o, &e, args), 0, "%s", e);
    size_t size;
    char *text = (char *)test_read_file(metrics, &size);
    cr_assert_not_null(text);
    text[size] = 0;
    cr_assert(strstr(text, "\"train_loss\": null"), "no epoch was wholly skipped: %s", text);
    for (char *c = text; *c; c++) *c = (char)tolower((unsigned char)*c);
    cr_assert(!strstr(text, "nan") && !strstr(text, "inf"), "not JSON: %s", text);
    free(text);
    free(o);
    free(e);
}
