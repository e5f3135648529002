/* cli_train.c: `cvae train`. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cvae/train.h"

static const char *help =
    "usage: cvae train --data DIR [flags]\n"
    "       cvae train --train-images FILE (--train-labels | --train-conditions) FILE [flags]\n"
    "       cvae train --train-csv FILE [--test-csv FILE] [flags]\n"
    "\n"
    "Train a conditional VAE on the images in DIR and their conditions: class labels or\n"
    "condition vectors. DIR holds MNIST's IDX files (train-images-idx3-ubyte[.gz],\n"
    "train-labels-idx1-ubyte[.gz], optionally t10k-* for test evaluation), or NumPy files\n"
    "(train_images.npy with train_labels.npy or train_conditions.npy, optionally test_*),\n"
    "or a data set cvae generate wrote (images and labels or conditions), or PNG and JPEG\n"
    "images in class folders or named by a table (below). Prints one line\n"
    "per epoch: train loss, test -ELBO (rec, kl) in nats per sample, training samples/s\n"
    "and the epoch's seconds.\n"
    "\n"
    "  --data DIR             data folder (or the file flags below)\n"
    "  --hidden LIST          hidden layer sizes, e.g. 400 or 1024,512 (default 400)\n"
    "  --latent L             latent dimensions (default 20)\n"
    "  --classes K            number of classes of label data (default: largest training\n"
    "                         label + 1); condition vectors take their width from the file\n"
    "  --batch B              batch size; the last partial batch is kept (default 128)\n"
    "  --epochs E             epochs (default 10)\n"
    "  --lr LR                Adam learning rate (default 1e-3)\n"
    "  --seed S               seed of initialisation, shuffling and noise (default 0)\n"
    "  --device D             auto, cpu, cuda or cuda:N (default auto: a GPU when usable);\n"
    "                         under mpirun, cuda is GPU (local rank mod GPU count)\n"
    "  --precision P          how GEMMs round their inputs; weights, Adam state, the loss\n"
    "                         and every sum stay fp32, and checkpoints are fp32 in all:\n"
    "                         fp32    plain fp32 GEMMs (default)\n"
    "                         tf32    inputs rounded to TF32 (10-bit mantissa) by the\n"
    "                                 tensor cores, fp32 sums (GPU only)\n"
    "                         bf16    inputs rounded to bf16 (nearest even), fp32 sums and\n"
    "                                 outputs (on the GPU, bf16 tensor cores; on the CPU,\n"
    "                                 the same rounding before fp32 OpenBLAS)\n"
    "                         tf32x3  each input split into two TF32 parts, three TF32\n"
    "                                 products summed in fp32: near-fp32 accuracy on the\n"
    "                                 tensor cores (on the CPU, the same split emulated;\n"
    "                                 not yet measured on a GPU)\n"
    "                         a resume may change it, but is bitwise only with the same\n"
    "                         precision\n"
    "\n";

/* The help in parts: C11 promises string literals of 4095 characters, no more. */
static const char *help_model =
    "model and objective:\n"
    "  --prior P              standard (N(0, I), default) or conditional: a learned\n"
    "                         N(M c, diag exp(R c)) of the condition c (per class for\n"
    "                         labels), M and R starting at 0\n"
    "  --likelihood L         bernoulli (default) or gaussian (mean sigmoid(logits))\n"
    "  --sigma S|learned      standard deviation of the Gaussian likelihood (default 0.1),\n"
    "                         or learned: one sigma learned with the model (log sigma a\n"
    "                         parameter, from 0.1), reported per epoch, saved, and used\n"
    "                         by generate --sample. Gaussian nats and bits per dimension\n"
    "                         are a density's: not comparable with Bernoulli ones\n"
    "  --binarize             dynamic binarization: each batch's values drawn as\n"
    "                         Bernoulli(value); the test set binarized once, fixed seed\n"
    "  --objective O          elbo (default) or iwae: the importance-weighted bound of\n"
    "                         Burda et al. 2015 with --samples K posterior draws per image,\n"
    "                         its gradient weighted by the normalised importance weights;\n"
    "                         K = 1 is the ELBO and trains bitwise as --objective elbo\n"
    "  --samples K            the IWAE draws (default 5). Memory grows with K: each draw\n"
    "                         takes 4 (3 D + 2 (H1 + ... + Hn) + 3 L + 5) bytes more per\n"
    "                         image of a batch (D the image's values, L the latent; about\n"
    "                         1.6 MiB for the default model at batch 128); a K the device\n"
    "                         cannot hold is refused before training\n"
    "  --free-bits LAMBDA     free bits (Kingma et al. 2016): each latent unit's KL,\n"
    "                         averaged over the batch, counts as at least LAMBDA nats, and\n"
    "                         a unit under the floor gets no KL gradient (ELBO only; the\n"
    "                         reported -ELBO stays the true one)\n"
    "  --beta B               weight of the KL term (default 1)\n"
    "  --kl-warmup E          beta rises linearly from 0, step by step, over the first E\n"
    "                         epochs (the epoch lines report each epoch's mean beta)\n"
    "  --lr-schedule S        constant (default) or cosine (decay to 0 at the last step)\n"
    "  --warmup-steps N       linear learning-rate warm-up over the first N steps\n"
    "  --clip-grad NORM       clip the global gradient norm to NORM (its mean before\n"
    "                         clipping is reported per epoch)\n"
    "log-variances are clamped to [-30, 30] so exp() never overflows in float\n";

static const char *help_run =
    "\n"
    "run:\n"
    "  --out RUNDIR           write RUNDIR/model.ckpt (refuses to overwrite one), with a\n"
    "                         test set RUNDIR/model-best.ckpt (the lowest test -ELBO so\n"
    "                         far), the pictures, and RUNDIR/report.html at each epoch's\n"
    "                         end (the curves, pictures, settings and command on one page\n"
    "                         that needs nothing else: reload it while the run goes on);\n"
    "                         RUNDIR and its parents are made up front, and\n"
    "                         RUNDIR/cvae.lock keeps a second trainer out while this runs\n"
    "                         (default with --resume: the checkpoint's folder)\n"
    "  --checkpoint-every N|T the checkpoint every N epochs, or at the first epoch end a time\n"
    "                         T (30s, 10m, 2h) after the last one, and mid-epoch in epochs\n"
    "                         that last longer (default 1m), besides the last epoch's\n"
    "  --metrics FILE         one JSON object per epoch (epoch, train_loss, test_neg_elbo,\n"
    "                         test_rec, test_kl, active_units, samples_per_s, seconds,\n"
    "                         beta, grad_norm, lr, and sigma for the Gaussian likelihood);\n"
    "                         an existing FILE is refused unless the run resumes\n"
    "  --resume CKPT          continue the run that wrote CKPT: give the original command\n"
    "                         plus --resume; --epochs counts the total. The result is\n"
    "                         bitwise the run that was never interrupted (on the CPU)\n"
    "  --skip-nonfinite N     skip up to N steps whose loss or gradient holds a NaN or Inf,\n"
    "                         or a gradient element too large for Adam (2^63 or more)\n"
    "                         (default 0: the first one stops training; the diverged\n"
    "                         model is not saved, the best model so far is written)\n"
    "  -h, --help             this text\n"
    "\n"
    "SIGINT or SIGTERM finishes the current step, writes RUNDIR/model.ckpt and exits with\n"
    "130 or 143; the same signal again ends it at once (after the last step it stops\n"
    "nothing: the run completes). Every file is written under a temporary name and\n"
    "renamed when whole. A run that fails before its first checkpoint removes the\n"
    "folders it made, unless it wrote a report page in them. A metrics, picture or report\n"
    "file that cannot be written stops the run (exit 1) after the checkpoint is written.\n"
    "\n"
    "mpirun -np N cvae train ... trains one model on N processes (ranks), with the same\n"
    "flags and the same results within float rounding: each rank takes its part of every\n"
    "batch of B, their gradients are summed, and rank 0 alone prints and writes the\n"
    "files. A signal to any rank stops them all as above.\n";

enum { OPT_DATA = 256, OPT_HIDDEN, OPT_LATENT, OPT_CLASSES, OPT_BATCH, OPT_EPOCHS, OPT_LR,
       OPT_SEED, OPT_DEVICE, OPT_OUT, OPT_CKPT_EVERY, OPT_METRICS, OPT_PRECISION,
       OPT_RESUME, OPT_SKIP_NONFINITE, OPT_PRIOR, OPT_LIKELIHOOD, OPT_SIGMA, OPT_BINARIZE,
       OPT_BETA, OPT_KL_WARMUP, OPT_LR_SCHEDULE, OPT_WARMUP_STEPS, OPT_CLIP_GRAD,
       OPT_OBJECTIVE, OPT_SAMPLES, OPT_FREE_BITS };

/* What flags were given: the checks that need all of them (check_flags). */
typedef struct {
    bool sigma, samples;
} given_flags;

/* --beta: 0 (however written) is allowed too, a plain autoencoder with a KL monitor. */
static bool parse_beta(const char *cmd, const char *s, float *beta) {
    char *end;
    errno = 0; /* an underflow (1e-50) is not a zero */
    if (strtof(s, &end) == 0.0f && !errno && end != s && *end == '\0' && s[0] != '-') {
        *beta = 0.0f;
        return true;
    }
    return cv_parse_positive_float(cmd, "--beta", s, beta);
}

/* --checkpoint-every: a count of epochs, or a time (30s, 10m, 2h: at the first epoch end
 * that long after the last checkpoint), from 1 s to a year. */
static bool parse_checkpoint_every(const char *cmd, const char *s, cv_train_options *o) {
    char *end;
    errno = 0;
    const long epochs = strtol(s, &end, 10);
    if (!errno && end != s && *end == '\0' && epochs >= 1 && epochs <= 1000000) {
        o->checkpoint_every = (int)epochs;
        return true;
    }
    errno = 0;
    const double t = strtod(s, &end);
    const char *unit = end != s && end[0] && !end[1] ? strchr("smh", end[0]) : NULL;
    const double seconds = unit ? t * (*unit == 'h' ? 3600.0 : *unit == 'm' ? 60.0 : 1.0) : 0.0;
    if (!errno && unit && seconds >= 1.0 && seconds <= 366.0 * 86400.0) {
        o->checkpoint_every = 0;
        o->checkpoint_seconds = seconds;
        return true;
    }
    cv_usage_error(cmd, "--checkpoint-every must be a count of epochs (1..1000000) or a time "
                   "from 1s to a year, as 30s, 10m or 2h; got '%s'", s);
    return false;
}

static bool parse_count(const char *cmd, const char *flag, const char *s, long long *out) {
    int n;
    if (!cv_parse_int(cmd, flag, s, 0, 2147483647L, &n)) return false;
    *out = n;
    return true;
}

/* One flag into o; false after printing the error line. */
static bool apply_flag(int c, const char *arg, cv_train_options *o, given_flags *given) {
    const char *cmd = "train";
    /* in cv_precision's order */
    static const char *const precisions[] = {"fp32", "tf32", "bf16", "tf32x3"};
    static const char *const priors[] = {"standard", "conditional"};
    static const char *const likelihoods[] = {"bernoulli", "gaussian"};
    static const char *const schedules[] = {"constant", "cosine"};
    static const char *const objectives[] = {"elbo", "iwae"}; /* cv_objective_kind's order */
    int choice = 0;
    bool ok = true;
    switch (c) {
    case OPT_DATA: o->data_dir = arg; break;
    case OPT_HIDDEN:
        ok = cv_parse_int_list(cmd, "--hidden", arg, 1, 65536, CV_MAX_HIDDEN, o->hidden,
                               &o->n_hidden);
        break;
    case OPT_LATENT: ok = cv_parse_int(cmd, "--latent", arg, 1, 65536, &o->latent); break;
    case OPT_CLASSES: ok = cv_parse_int(cmd, "--classes", arg, 1, 256, &o->n_classes); break;
    case OPT_BATCH: ok = cv_parse_int(cmd, "--batch", arg, 1, 1 << 20, &o->batch); break;
    case OPT_EPOCHS: ok = cv_parse_int(cmd, "--epochs", arg, 1, 1000000, &o->epochs); break;
    case OPT_LR: ok = cv_parse_positive_float(cmd, "--lr", arg, &o->lr); break;
    case OPT_SEED: ok = cv_parse_u64(cmd, "--seed", arg, &o->seed); break;
    case OPT_DEVICE: ok = cv_parse_device(cmd, arg); o->device = arg; break;
    case OPT_PRECISION:
        ok = cv_parse_choice(cmd, "--precision", arg, precisions, CV_PRECISION_COUNT, &choice);
        o->backend.precision = (cv_precision)choice;
        break;
    case OPT_OUT: o->out_dir = arg; break;
    case OPT_CKPT_EVERY: ok = parse_checkpoint_every(cmd, arg, o); break;
    case OPT_METRICS: o->metrics_path = arg; break;
    case OPT_RESUME: o->resume_path = arg; break;
    case OPT_PRIOR:
        ok = cv_parse_choice(cmd, "--prior", arg, priors, 2, &choice);
        o->prior = choice == 1 ? CV_PRIOR_CONDITIONAL : CV_PRIOR_STANDARD;
        break;
    case OPT_LIKELIHOOD:
        ok = cv_parse_choice(cmd, "--likelihood", arg, likelihoods, 2, &choice);
        o->likelihood = choice == 1 ? CV_LIKELIHOOD_GAUSSIAN : CV_LIKELIHOOD_BERNOULLI;
        break;
    case OPT_SIGMA:
        o->sigma_learned = strcmp(arg, "learned") == 0;
        ok = o->sigma_learned || cv_parse_positive_float(cmd, "--sigma", arg, &o->sigma);
        given->sigma = true;
        break;
    case OPT_OBJECTIVE:
        ok = cv_parse_choice(cmd, "--objective", arg, objectives, 2, &choice);
        o->train.objective = choice;
        break;
    case OPT_SAMPLES:
        /* draws are addressed by streams CV_STREAM_IWAE_SAMPLE(k), k < 2^20 */
        ok = cv_parse_int(cmd, "--samples", arg, 1, 1 << 20, &o->train.samples);
        given->samples = true;
        break;
    case OPT_FREE_BITS: {
        char *end;
        errno = 0;
        o->train.free_bits = strtof(arg, &end);
        ok = !errno && end != arg && !*end && isfinite(o->train.free_bits) &&
             o->train.free_bits >= 0.0f && arg[0] != '-';
        if (!ok) cv_usage_error(cmd, "--free-bits must be a finite number >= 0, got '%s'", arg);
        break;
    }
    case OPT_BINARIZE: o->train.binarize = 1; break;
    case OPT_BETA: ok = parse_beta(cmd, arg, &o->train.beta); break;
    case OPT_KL_WARMUP:
        ok = cv_parse_int(cmd, "--kl-warmup", arg, 0, 1000000, &o->train.kl_warmup);
        break;
    case OPT_LR_SCHEDULE:
        ok = cv_parse_choice(cmd, "--lr-schedule", arg, schedules, 2, &choice);
        o->train.cosine = choice == 1;
        break;
    case OPT_WARMUP_STEPS: {
        long long n;
        ok = parse_count(cmd, "--warmup-steps", arg, &n);
        o->train.warmup_steps = n;
        break;
    }
    case OPT_CLIP_GRAD:
        ok = cv_parse_positive_float(cmd, "--clip-grad", arg, &o->train.clip_norm);
        break;
    case OPT_SKIP_NONFINITE: ok = parse_count(cmd, "--skip-nonfinite", arg, &o->skip_nonfinite); break;
    default: /* a data file flag, or a flag without a case */
        if (!cv_data_file_flag(cmd, c, arg, &o->files, &ok)) CV_ASSERT(!"a flag without a case");
    }
    return ok;
}

/* The checks that need every flag. Returns 0, or the exit code after the error line. */
static int check_flags(cv_train_options *o, const given_flags *given) {
    const char *cmd = "train";
    const cv_data_files *f = &o->files;
    if (!o->data_dir && !f->train_images && !f->train_table)
        return cv_usage_error(cmd, "--data DIR (or --train-images FILE, or --train-csv FILE) is "
                              "required");
    if (!o->data_dir && !f->train_table && !f->train_labels && !f->train_conditions)
        return cv_usage_error(cmd, "--train-images without --data needs --train-labels or "
                              "--train-conditions");
    if (f->train_labels && f->train_conditions)
        return cv_usage_error(cmd, "--train-labels and --train-conditions exclude each other");
    if (f->test_labels && f->test_conditions)
        return cv_usage_error(cmd, "--test-labels and --test-conditions exclude each other");
    const int rc = cv_check_data_file_flags(cmd, f);
    if (rc) return rc;
    if (given->sigma && o->likelihood != CV_LIKELIHOOD_GAUSSIAN)
        return cv_usage_error(cmd, "--sigma applies to --likelihood gaussian only");
    if (given->samples && o->train.objective != CV_OBJECTIVE_IWAE)
        return cv_usage_error(cmd, "--samples applies to --objective iwae only");
    if (o->train.objective == CV_OBJECTIVE_IWAE && !given->samples) o->train.samples = 5;
    if (o->train.objective == CV_OBJECTIVE_IWAE && o->train.free_bits > 0.0f)
        return cv_usage_error(cmd, "--free-bits floors the ELBO's KL of each unit; the IWAE "
                              "bound has none: use one or the other");
    if (o->out_dir && !o->out_dir[0]) return cv_usage_error(cmd, "--out must not be empty");
    if (o->metrics_path && !o->metrics_path[0])
        return cv_usage_error(cmd, "--metrics must not be empty");
    return 0;
}

static int run(const cv_train_options *o) {
    cv_train_result res;
    cv_err err;
    cv_status st = cv_train_run(o, &res, &err);
    if (st == CV_ERR_INTERRUPTED) {
        if (err.msg[0]) fprintf(stderr, "cvae train: %s\n", err.msg); /* rank 0's line */
        return 128 + res.signal;
    }
    if (st) return cv_report("train", st, &err);
    if (res.has_test)
        printf("final test -ELBO %.4f nats (rec %.4f, kl %.4f) after %d epoch%s\n",
               res.test.neg_elbo, res.test.rec, res.test.kl, res.epochs_done,
               res.epochs_done == 1 ? "" : "s");
    return 0;
}

/* "cvae train ARGS", each argument as a POSIX shell would need it (single-quoted unless
 * it is plain), for the run's report: malloc'd, NULL out of memory. */
static char *command_line(int argc, char **argv) {
    size_t size = 8;
    for (int i = 0; i < argc; i++) size += 4 * strlen(argv[i]) + 3;
    char *line = malloc(size), *o = line;
    if (!line) return NULL;
    o += sprintf(o, "cvae");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const bool plain = a[0] && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                             "0123456789_./:=,+-@%") == strlen(a);
        *o++ = ' ';
        if (plain) {
            o += sprintf(o, "%s", a);
            continue;
        }
        *o++ = '\'';
        for (; *a; a++) o += *a == '\'' ? sprintf(o, "'\\''") : sprintf(o, "%c", *a);
        *o++ = '\'';
    }
    *o = '\0';
    return line;
}

int cv_cmd_train(int argc, char **argv, cv_comm *comm) {
    static const struct option opts[] = {
        {"data", required_argument, 0, OPT_DATA},
        {"hidden", required_argument, 0, OPT_HIDDEN},
        {"latent", required_argument, 0, OPT_LATENT},
        {"classes", required_argument, 0, OPT_CLASSES},
        {"batch", required_argument, 0, OPT_BATCH},
        {"epochs", required_argument, 0, OPT_EPOCHS},
        {"lr", required_argument, 0, OPT_LR},
        {"seed", required_argument, 0, OPT_SEED},
        {"device", required_argument, 0, OPT_DEVICE},
        {"precision", required_argument, 0, OPT_PRECISION},
        {"out", required_argument, 0, OPT_OUT},
        {"checkpoint-every", required_argument, 0, OPT_CKPT_EVERY},
        {"metrics", required_argument, 0, OPT_METRICS},
        {"resume", required_argument, 0, OPT_RESUME},
        {"skip-nonfinite", required_argument, 0, OPT_SKIP_NONFINITE},
        {"prior", required_argument, 0, OPT_PRIOR},
        {"likelihood", required_argument, 0, OPT_LIKELIHOOD},
        {"sigma", required_argument, 0, OPT_SIGMA},
        {"binarize", no_argument, 0, OPT_BINARIZE},
        {"beta", required_argument, 0, OPT_BETA},
        {"kl-warmup", required_argument, 0, OPT_KL_WARMUP},
        {"lr-schedule", required_argument, 0, OPT_LR_SCHEDULE},
        {"warmup-steps", required_argument, 0, OPT_WARMUP_STEPS},
        {"clip-grad", required_argument, 0, OPT_CLIP_GRAD},
        {"objective", required_argument, 0, OPT_OBJECTIVE},
        {"samples", required_argument, 0, OPT_SAMPLES},
        {"free-bits", required_argument, 0, OPT_FREE_BITS},
        CV_DATA_FILE_OPTIONS,
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    cv_train_options o = cv_train_defaults();
    o.comm = comm;
    given_flags given = {false, false};
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag("train", argc, argv, opts, &rc)) > 0) {
        if (c == 'h') {
            fputs(help, stdout);
            fputs(help_model, stdout);
            return cv_print_help_with_data_flags(help_run);
        }
        if (!apply_flag(c, optarg, &o, &given)) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error("train", "unexpected argument '%s'", argv[optind]);
    rc = check_flags(&o, &given);
    if (rc) return rc;
    char *command = command_line(argc, argv);
    o.command = command;
    rc = run(&o);
    free(command);
    return rc;
}
