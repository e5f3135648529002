/* cli_score.c: `cvae score`. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cvae/checkpoint.h"
#include "cvae/generate.h"
#include "cvae/score.h"

static const char *help =
    "usage: cvae score --model CKPT --data DIR [flags]\n"
    "       cvae score --model CKPT --train-images FILE (--train-labels | --train-conditions)\n"
    "                  FILE --test-images FILE (--test-labels | --test-conditions) FILE [flags]\n"
    "\n"
    "How good the data a model generates is, judged by linear probes on its images' values\n"
    "in [0, 1], trained on cvae's own backend: softmax regression (cross-entropy) for class\n"
    "labels, linear regression (squared error) for condition vectors, with scikit-learn's\n"
    "L2 penalty (C sum of the losses + |W|^2 / 2, C = 1), W and b from 0, Adam (betas 0.9,\n"
    "0.999, its learning rate decaying to 0 along a cosine: it converges where scikit-\n"
    "learn's LogisticRegression does) over mini-batches in an order shuffled each epoch from\n"
    "--seed: the same figures for the same seed on one device.\n"
    "\n"
    "A model of class labels: N images generated per class (as cvae generate --per-class N\n"
    "--seed S writes them) and three accuracies, over all and per class:\n"
    "  ceiling   a classifier trained on the real training images, on the real test images\n"
    "  fidelity  that classifier on the generated images: do they look like their class?\n"
    "  CAS       a classifier trained on the generated images alone, on the real test\n"
    "            images: the classification accuracy score (Ravuri and Vinyals 2019)\n"
    "A model of condition vectors: one image generated per test condition row (as cvae\n"
    "generate --conditions writes them), and a regression from images to conditions trained\n"
    "on the real training images: R^2 (1 - SS_res / SS_tot) per column and their mean, on\n"
    "the generated images against the rows asked for (condition fidelity) and on the real\n"
    "test images (the ceiling).\n"
    "\n"
    "  --model CKPT       checkpoint written by cvae train (required)\n"
    "  --data DIR         the real data: a training and a test split of the model's kind\n"
    "                     (or the file flags below)\n"
    "  --per-class N      images generated per class (label models; default 1000)\n"
    "  --mean | --sample  generate round(255 p) (default) or draws from the likelihood\n"
    "  --seed S           seed of generation and of the probes (default 0)\n"
    "  --steps N          each probe's Adam steps (default 8000)\n"
    "  --batch B          the probes' mini-batch (default 256)\n"
    "  --lr LR            the probes' Adam learning rate at the start, decaying to 0\n"
    "                     along a cosine (default 0.03)\n"
    "  --device D         auto, cpu, cuda or cuda:N (default auto)\n"
    "  --json             one JSON object: labels: ceiling, fidelity, cas and their\n"
    "                     *_per_class lists; vectors: r2, r2_per_column, r2_real,\n"
    "                     r2_real_per_column (null where a column is constant)\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: 0, 1 (data, files, memory: a model whose images or conditions do not\n"
    "match the data is one line), 2 (a bad command line or an unusable device).\n";

enum { OPT_MODEL = 256, OPT_DATA, OPT_PER_CLASS, OPT_MEAN, OPT_SAMPLE, OPT_SEED, OPT_STEPS,
       OPT_BATCH, OPT_LR, OPT_DEVICE, OPT_JSON };

typedef struct {
    cv_checkpoint ck;
    cv_data data;
    cv_backend *be;
    cv_model model;
    cv_workspace ws;
} score_state;

static void state_free(score_state *s) {
    if (s->be) {
        if (s->ws.max_rows) cv_workspace_destroy(&s->model, &s->ws);
        cv_model_destroy(&s->model);
        s->be->destroy(s->be);
    }
    cv_data_free(&s->data);
    cv_checkpoint_free(&s->ck);
}

/* The checkpoint, the data (both splits, of the model's kind and shape), the device. */
static cv_status prepare(score_state *s, const char *model, const char *data,
                         const cv_data_files *files, const char *device, cv_err *err) {
    cv_status st = cv_checkpoint_load(model, &s->ck, err);
    const char *name = data ? data : files->train_table ? files->train_table : files->train_images;
    cv_data_files read = *files;
    if (!st) cv_data_files_for_model(&read, &s->ck);
    /* a label model's classes are its K, whatever labels the training files hold */
    const int classes = !st && s->ck.cfg.condition == CV_COND_LABELS ? s->ck.cfg.cond_width : 0;
    if (!st) st = cv_data_load_files(data, &read, classes, &s->data, err);
    if (!st) st = cv_data_names_fit(&s->data, &s->ck, name, model, err);
    if (!st) st = cv_model_fit_labels(&s->ck.cfg, &s->data, name, err);
    if (!st) st = cv_model_takes(&s->ck.cfg, &s->data, &s->data.train, name, err);
    if (!st && !s->data.test.n)
        st = cv_fail(err, CV_ERR_IO, "%s: no test split: the ceiling and CAS are measured on "
                     "real test images", name);
    if (!st && s->ck.train.binarize) cv_split_binarize(&s->data.test);
    if (st) return st;
    st = cv_backend_open(device, NULL, &s->be, err);
    if (!st) st = cv_model_from_checkpoint(s->be, &s->ck, &s->model, err);
    if (!st) st = cv_workspace_create(&s->model, cv_generate_block_rows(&s->model), &s->ws, err);
    return st;
}

/* A figure, or null (JSON) / n/a (text) where it has none. */
static void figure(bool json, double v) {
    if (isnan(v)) printf(json ? "null" : "   n/a");
    else printf(json ? "%.6f" : "%6.4f", v);
}

static void list(bool json, const double *v, int n) {
    for (int i = 0; i < n; i++) {
        printf(i ? (json ? ", " : " ") : "");
        figure(json, v[i]);
    }
}

static void print_labels(const cv_score_result *r, int K, bool json) {
    const char *names[3] = {"ceiling", "fidelity", "cas"};
    const double all[3] = {r->ceiling, r->fidelity, r->cas};
    const double *per[3] = {r->ceiling_class, r->fidelity_class, r->cas_class};
    if (json) {
        printf("{\"condition\": \"labels\", \"generated\": %lld", r->generated);
        for (int i = 0; i < 3; i++) {
            printf(", \"%s\": ", names[i]);
            figure(true, all[i]);
            printf(", \"%s_per_class\": [", names[i]);
            list(true, per[i], K);
            printf("]");
        }
        printf("}\n");
        return;
    }
    const char *titles[3] = {"ceiling  (real -> real)", "fidelity (real -> generated)",
                             "CAS      (generated -> real)"};
    printf("%lld images generated; accuracy, then per class 0..%d\n", r->generated, K - 1);
    for (int i = 0; i < 3; i++) {
        printf("%-29s ", titles[i]);
        figure(false, all[i]);
        printf("  ");
        list(false, per[i], K);
        printf("\n");
    }
}

static void print_vectors(const cv_score_result *r, int K, bool json) {
    if (json) {
        printf("{\"condition\": \"vectors\", \"generated\": %lld, \"r2\": ", r->generated);
        figure(true, r->r2);
        printf(", \"r2_per_column\": [");
        list(true, r->r2_column, K);
        printf("], \"r2_real\": ");
        figure(true, r->r2_real);
        printf(", \"r2_real_per_column\": [");
        list(true, r->r2_real_column, K);
        printf("]}\n");
        return;
    }
    printf("%lld images generated; R^2 of the conditions read back, then per column\n",
           r->generated);
    printf("%-29s ", "generated (condition fidelity)");
    figure(false, r->r2);
    printf("  ");
    list(false, r->r2_column, K);
    printf("\n%-29s ", "real test images (ceiling)");
    figure(false, r->r2_real);
    printf("  ");
    list(false, r->r2_real_column, K);
    printf("\n");
}

int cv_cmd_score(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL},   {"data", required_argument, 0, OPT_DATA},
        {"per-class", required_argument, 0, OPT_PER_CLASS},
        {"mean", no_argument, 0, OPT_MEAN},           {"sample", no_argument, 0, OPT_SAMPLE},
        {"seed", required_argument, 0, OPT_SEED},     {"steps", required_argument, 0, OPT_STEPS},
        {"batch", required_argument, 0, OPT_BATCH},   {"lr", required_argument, 0, OPT_LR},
        {"device", required_argument, 0, OPT_DEVICE}, {"json", no_argument, 0, OPT_JSON},
        CV_DATA_FILE_OPTIONS,                         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "score", *model = NULL, *data = NULL, *device = "auto";
    cv_data_files files = {0};
    cv_score_options o = {.per_class = 1000, .mean = true, .probe = cv_probe_defaults()};
    int per_class = 1000, modes = 0;
    bool json = false;
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
        case OPT_PER_CLASS: ok = cv_parse_int(cmd, "--per-class", optarg, 1, 1000000, &per_class); break;
        case OPT_MEAN: o.mean = true; modes |= 1; break;
        case OPT_SAMPLE: o.mean = false; modes |= 2; break;
        case OPT_SEED: ok = cv_parse_u64(cmd, "--seed", optarg, &o.seed); break;
        case OPT_STEPS: ok = cv_parse_int(cmd, "--steps", optarg, 1, 100000000, &o.probe.steps); break;
        case OPT_BATCH: ok = cv_parse_int(cmd, "--batch", optarg, 1, 1 << 20, &o.probe.batch); break;
        case OPT_LR: ok = cv_parse_positive_float(cmd, "--lr", optarg, &o.probe.lr); break;
        case OPT_DEVICE: ok = cv_parse_device(cmd, optarg); device = optarg; break;
        case OPT_JSON: json = true; break;
        default: /* a data file flag, or a flag without a case */
            if (!cv_data_file_flag(cmd, c, optarg, &files, &ok))
                CV_ASSERT(!"a flag without a case");
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (!rc) rc = cv_check_data_file_flags(cmd, &files);
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model) return cv_usage_error(cmd, "--model CKPT is required");
    if (!data && !files.train_images && !files.train_table)
        return cv_usage_error(cmd, "--data DIR (or --train-images FILE, or --train-csv FILE) is "
                              "required");
    if (modes == 3) return cv_usage_error(cmd, "--mean and --sample exclude each other");
    o.per_class = per_class;
    o.probe.seed = o.seed;
    o.progress = !json;
    score_state s;
    memset(&s, 0, sizeof s);
    cv_err err;
    cv_status st = prepare(&s, model, data, &files, device, &err);
    if (!st && !json) {
        printf("device: %s\n", s.be->description);
        fflush(stdout);
    }
    cv_score_result r;
    if (!st) st = cv_score(&s.model, &s.ws, &s.data, &o, &r, &err);
    if (st) {
        state_free(&s);
        return cv_report(cmd, st, &err);
    }
    if (r.labels)
        print_labels(&r, s.ck.cfg.cond_width, json);
    else
        print_vectors(&r, s.ck.cfg.cond_width, json);
    cv_score_result_free(&r);
    state_free(&s);
    return 0;
}
