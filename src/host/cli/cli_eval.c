/* cli_eval.c: `cvae eval`. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cvae/checkpoint.h"
#include "cvae/eval.h"
#include "util/fileio.h"
#include "util/clock.h"

static const char *help =
    "usage: cvae eval --model CKPT --data DIR [flags]\n"
    "       cvae eval --model CKPT --test-images FILE (--test-labels | --test-conditions) FILE\n"
    "                 [flags]\n"
    "\n"
    "Evaluate a checkpoint on the test split of DIR (t10k-* or test_*.npy files, as cvae\n"
    "train reads them, or the test file flags below; the training files are read only for\n"
    "--marginal, which needs their label frequencies): the test negative ELBO (one z per\n"
    "image) split into rec and kl, the KL of each latent dimension and the count of active\n"
    "units (variance over the test set of the posterior mean > 0.01), and with --iwae K\n"
    "the importance-weighted estimate of -log p(x|c) from K samples. Figures are nats per\n"
    "image, and bits per dimension (nats / (D ln 2)) beside them; a Gaussian likelihood's\n"
    "are a density's on continuous values, not comparable with Bernoulli ones. A model\n"
    "trained with\n"
    "--binarize is evaluated on the test set binarized with the same fixed seed. When\n"
    "stderr is a terminal, a progress line shows the batches done and images per second.\n"
    "\n"
    "  --model CKPT   checkpoint written by cvae train (required)\n"
    "  --data DIR     data folder with the test files (or the file flags), and with\n"
    "                 --marginal the training files\n"
    "  --iwae K       also the IWAE bound with K importance samples\n"
    "  --marginal     with --iwae: -log p(x) = -logsumexp_c [log p(c) + log p(x|c)], p(c)\n"
    "                 the training label frequencies, each term with K samples (models\n"
    "                 of class labels only)\n"
    "  --seed S       seed of the evaluation noise (default 0)\n"
    "  --device D     auto, cpu, cuda or cuda:N (default auto)\n"
    "  --json         one JSON object: likelihood, test_neg_elbo, test_rec, test_kl,\n"
    "                 *_bits_per_dim, kl_per_dim, active_units[, iwae_nll][, marginal_nll]\n"
    "  -h, --help     this text\n";

/* The progress line on a terminal's stderr, as training and generation draw theirs: batches
 * done and images evaluated per second, redrawn at most every 0.2 s and cleared at the end. */
typedef struct {
    double t0, shown;
} eval_progress;

static void show_progress(void *ctx, int images_done, int images_total, int batches_done,
                          int batches_total) {
    eval_progress *p = ctx;
    double t = cv_now_seconds();
    bool last = batches_done == batches_total;
    if (!last && t - p->shown <= 0.2) return;
    fprintf(stderr, "\reval: batch %d/%d, %d/%d images (%.0f images/s) ", batches_done,
            batches_total, images_done, images_total, images_done / (t - p->t0));
    if (last) fprintf(stderr, "\r%*s\r", 70, "");
    fflush(stderr);
    p->shown = t;
}

enum { OPT_MODEL = 256, OPT_DATA, OPT_IWAE, OPT_SEED, OPT_DEVICE, OPT_JSON, OPT_MARGINAL };

typedef struct {
    cv_checkpoint ck;
    cv_data data;
    cv_backend *be;
    cv_model model;
    cv_workspace ws;
    cv_device_split test;
} eval_state;

static void eval_free(eval_state *s) {
    if (s->be) {
        cv_device_split_free(s->be, &s->test);
        if (s->ws.max_rows) cv_workspace_destroy(&s->model, &s->ws);
        cv_model_destroy(&s->model);
        s->be->destroy(s->be);
    }
    cv_data_free(&s->data);
    cv_checkpoint_free(&s->ck);
}

/* The first of names that is a file in folder, as folder/name; NULL when none is. */
static const char *first_file(const char *folder, const char *const *names, char *path,
                              size_t size) {
    for (int i = 0; folder && names[i]; i++) {
        snprintf(path, size, "%s/%s", folder, names[i]);
        if (cv_path_exists(path)) return path;
    }
    return NULL;
}

/* No test split in the folder. When it holds a training split (a data set `cvae generate`
 * wrote is one), the line says how to evaluate on those files. */
static cv_status no_test_split(const char *folder, const char *data, cv_err *err) {
    static const char *const images[] = {"images-idx3-ubyte", "images-idx3-ubyte.gz",
        "images-idx4-ubyte", "images-idx4-ubyte.gz", "images.npy", "train-images-idx3-ubyte",
        "train-images-idx3-ubyte.gz", "train_images.npy", NULL};
    static const char *const labels[] = {"labels-idx1-ubyte", "labels-idx1-ubyte.gz",
        "labels.npy", "train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz",
        "train_labels.npy", NULL};
    static const char *const conditions[] = {"conditions.npy", "train_conditions.npy", NULL};
    char img[4400], cond[4400];
    const char *labels_file = first_file(folder, labels, cond, sizeof cond);
    const char *cond_file = labels_file ? NULL : first_file(folder, conditions, cond, sizeof cond);
    if (first_file(folder, images, img, sizeof img) && (labels_file || cond_file))
        return cv_fail(err, CV_ERR_IO, "%s: no test split, only training files (as cvae "
                       "generate writes them); to evaluate on those, give --test-images %s "
                       "--test-%s %s", folder, img, labels_file ? "labels" : "conditions", cond);
    return cv_fail(err, CV_ERR_IO, "%s: no test files to evaluate on (t10k-images and "
                   "t10k-labels, test_images.npy with test_labels.npy or test_conditions.npy, "
                   "or --test-images)", data);
}

/* The test split must be what the checkpoint's model takes (a label model's K is its own). */
static cv_status check_test_split(cv_data *d, const cv_model_config *c, const char *folder,
                                  const char *data, cv_err *err) {
    const cv_split *t = &d->test;
    if (!t->n) return no_test_split(folder, data, err);
    cv_status st = cv_model_fit_labels(c, d, data, err);
    return st ? st : cv_model_takes(c, d, t, data, err);
}

/* Each phase ends with the ranks' agreement (cv_comm_agree): a rank that failed stops
 * them all before any of them waits in a collective (one process: no agreement). */
static cv_status prepare(eval_state *s, const char *model, const char *data,
                         const cv_data_files *files, const char *device, bool marginal,
                         cv_comm *comm, cv_err *err) {
    cv_status st = cv_checkpoint_load(model, &s->ck, err);
    const cv_model_config *c = &s->ck.cfg;
    if (!st && marginal && c->condition != CV_COND_LABELS)
        st = cv_fail(err, CV_ERR_USAGE, "--marginal sums over classes: %s takes condition "
                     "vectors, not class labels", model);
    cv_data_files read = *files;
    read.test_only = !marginal; /* only the marginal needs the training labels */
    if (!st) cv_data_files_for_model(&read, &s->ck);
    read.image.progress = read.image.progress && cv_comm_rank(comm) == 0;
    /* the marginal's training labels: a label model's classes are its K, whatever labels
     * the training files hold (without them, K comes from the model after loading) */
    const int classes = marginal && c->condition == CV_COND_LABELS ? c->cond_width : 0;
    if (!st)
        st = cv_data_load_files(data, &read, classes, &s->data, err);
    if (!st) st = cv_data_names_fit(&s->data, &s->ck, data ? data : files->test_table, model, err);
    if (!st && s->ck.train.binarize) cv_split_binarize(&s->data.test);
    if (!st)
        st = check_test_split(&s->data, c, data,
                              data ? data : files->test_table ? files->test_table
                                                             : files->test_images, err);
    st = cv_comm_agree(comm, st, err);
    if (st) return st;
    const cv_backend_options bo = {.comm = comm};
    st = cv_comm_agree(comm, cv_backend_open(device, &bo, &s->be, err), err);
    if (!st) st = cv_model_from_checkpoint(s->be, &s->ck, &s->model, err);
    if (!st) st = cv_workspace_create(&s->model, CV_EVAL_BATCH, &s->ws, err);
    if (!st) st = cv_device_split_use(s->be, &s->data.test, &s->test, err);
    return cv_comm_agree(comm, st, err);
}

/* log p(c) of each of the K classes: the training label frequencies (--marginal). */
static void class_log_prior(const cv_split *train, int K, double *log_prior) {
    for (int c = 0; c < K; c++) log_prior[c] = 0;
    for (int i = 0; i < train->n; i++) log_prior[train->labels[i]] += 1;
    for (int c = 0; c < K; c++) log_prior[c] = log(log_prior[c] / train->n);
}

static void print_json(const cv_eval_result *r, double bpd, int iwae, bool marginal, int L,
                       bool gaussian) {
    printf("{\"likelihood\": \"%s\", \"test_neg_elbo\": %.6f, \"test_rec\": %.6f, \"test_kl\": %.6f, "
           "\"test_neg_elbo_bits_per_dim\": %.6f", gaussian ? "gaussian" : "bernoulli", r->neg_elbo,
           r->rec, r->kl, r->neg_elbo * bpd);
    if (iwae)
        printf(", \"iwae_nll\": %.6f, \"iwae_bits_per_dim\": %.6f, \"iwae_k\": %d",
               r->iwae_nll, r->iwae_nll * bpd, iwae);
    if (marginal)
        printf(", \"marginal_nll\": %.6f, \"marginal_bits_per_dim\": %.6f", r->marginal_nll,
               r->marginal_nll * bpd);
    printf(", \"active_units\": %d, \"kl_per_dim\": [", r->active_units);
    for (int j = 0; j < L; j++) printf("%s%.6f", j ? ", " : "", r->kl_per_dim[j]);
    printf("]}\n");
}

static void print_text(const cv_eval_result *r, double bpd, int n, int iwae, bool marginal,
                       int L, bool gaussian) {
    printf("test -ELBO %.4f nats (rec %.4f, kl %.4f) over %d images; %.5f bits/dim\n",
           r->neg_elbo, r->rec, r->kl, n, r->neg_elbo * bpd);
    if (iwae)
        printf("test IWAE-%d -log p(x|c) %.4f nats; %.5f bits/dim\n", iwae, r->iwae_nll,
               r->iwae_nll * bpd);
    if (marginal)
        printf("test marginal -log p(x) %.4f nats; %.5f bits/dim\n", r->marginal_nll,
               r->marginal_nll * bpd);
    printf("active units: %d of %d; KL per dimension:", r->active_units, L);
    for (int j = 0; j < L; j++) printf(" %.3f", r->kl_per_dim[j]);
    printf("\n");
    if (gaussian)
        printf("note: a Gaussian likelihood's nats and bits per dimension are a density's on "
               "continuous values (they may be negative): not comparable with a Bernoulli "
               "model's\n");
}

int cv_cmd_eval(int argc, char **argv, cv_comm *comm) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL}, {"data", required_argument, 0, OPT_DATA},
        {"iwae", required_argument, 0, OPT_IWAE},   {"seed", required_argument, 0, OPT_SEED},
        {"device", required_argument, 0, OPT_DEVICE}, {"json", no_argument, 0, OPT_JSON},
        {"marginal", no_argument, 0, OPT_MARGINAL}, CV_DATA_FILE_OPTIONS,
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0},
    };
    const char *cmd = "eval", *model = NULL, *data = NULL, *device = "auto";
    cv_data_files files = {0};
    int iwae = 0;
    uint64_t seed = 0;
    bool json = false, marginal = false;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        bool ok = true;
        switch (c) {
        case 'h':
            return cv_print_help_with_data_flags(help);
        case OPT_MODEL: model = optarg; break;
        case OPT_DATA: data = optarg; break;
        case OPT_IWAE: ok = cv_parse_int(cmd, "--iwae", optarg, 1, 1000000, &iwae); break;
        case OPT_SEED: ok = cv_parse_u64(cmd, "--seed", optarg, &seed); break;
        case OPT_DEVICE: ok = cv_parse_device(cmd, optarg); device = optarg; break;
        case OPT_JSON: json = true; break;
        case OPT_MARGINAL: marginal = true; break;
        default: /* a data file flag, or a flag without a case */
            if (!cv_data_file_flag(cmd, c, optarg, &files, &ok))
                CV_ASSERT(!"a flag without a case");
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model) return cv_usage_error(cmd, "--model CKPT is required");
    if (!data && !files.test_images && !files.test_table)
        return cv_usage_error(cmd, "--data DIR, --test-images FILE or --test-csv FILE is "
                              "required");
    rc = cv_check_data_file_flags(cmd, &files);
    if (rc) return rc;
    if (marginal && !iwae) return cv_usage_error(cmd, "--marginal needs --iwae K");
    if (marginal && !data && !files.train_images && !files.train_table)
        return cv_usage_error(cmd, "--marginal needs the training labels: --data DIR, "
                              "--train-images and --train-labels, or --train-csv");

    eval_state s;
    memset(&s, 0, sizeof s);
    cv_err err;
    cv_status st = prepare(&s, model, data, &files, device, marginal, comm, &err);
    if (st) {
        eval_free(&s);
        return cv_report(cmd, st, &err);
    }
    if (!json) {
        printf("device: %s\n", s.be->description);
        fflush(stdout); /* before a long --iwae run, not after it */
    }
    double log_prior[CV_MAX_CLASSES];
    if (marginal) class_log_prior(&s.data.train, s.ck.cfg.cond_width, log_prior);
    eval_progress progress = {.t0 = cv_now_seconds()};
    progress.shown = progress.t0;
    cv_eval_options eo = {.iwae_k = iwae, .marginal = marginal, .class_log_prior = log_prior,
                          .latent_stats = true,
                          .progress = cv_comm_rank(comm) == 0 && isatty(STDERR_FILENO)
                                          ? show_progress : NULL,
                          .progress_ctx = &progress, .comm = comm};
    cv_eval_result r;
    st = cv_evaluate(&s.model, &s.ws, &s.test, seed, &eo, &r, &err);
    if (st) {
        eval_free(&s);
        return cv_report(cmd, st, &err);
    }
    const cv_model_config *cfg = &s.ck.cfg;
    const double bpd = 1.0 / ((double)cfg->height * cfg->width * cfg->channels * log(2.0));
    const bool gaussian = cfg->likelihood == CV_LIKELIHOOD_GAUSSIAN;
    if (json)
        print_json(&r, bpd, iwae, marginal, cfg->latent, gaussian);
    else
        print_text(&r, bpd, s.test.n, iwae, marginal, cfg->latent, gaussian);
    cv_eval_result_free(&r);
    eval_free(&s);
    return 0;
}
