/* cli_encode.c: `cvae encode`, the posteriors of a data set's images. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cvae/eval.h"
#include "cvae/latent.h"
#include "cvae/npy.h"
#include "util/fileio.h"
#include "util/clock.h"

static const char *help =
    "usage: cvae encode --model CKPT --data DIR --out FILE.npy [flags]\n"
    "       cvae encode --model CKPT --test-images FILE (--test-labels | --test-conditions)\n"
    "                   FILE --out FILE.npy [flags]\n"
    "\n"
    "Encode images into the model's latent space: for each image x with its condition c,\n"
    "the posterior q(z|x,c) = N(mean, diag exp(logvar)) as one row [mean | logvar] of\n"
    "FILE.npy, float32 (N, 2L), in the images' order; the log-variance is clamped to\n"
    "[-30, 30] as in training. The images are taken as they are (x = pixel / 255, or the\n"
    "floats), never binarized. The data flags are those of cvae eval; --split train\n"
    "encodes the training split instead of the test split. FILE.npy must not exist yet; it\n"
    "appears only when whole. Images go through the backend in batches, so N may be\n"
    "anything.\n"
    "\n"
    "  --model CKPT   checkpoint written by cvae train (required)\n"
    "  --data DIR     data folder (or the file flags below)\n"
    "  --split S      test (default) or train\n"
    "  --out FILE     the .npy to write (required)\n"
    "  --batch B      images per batch (default 500); it does not change the output\n"
    "  --device D     auto, cpu, cuda or cuda:N (default auto)\n"
    "  -h, --help     this text\n";

enum { OPT_MODEL = 256, OPT_DATA, OPT_SPLIT, OPT_OUT, OPT_BATCH, OPT_DEVICE };

typedef struct {
    const char *model, *data, *out, *device;
    cv_data_files files;
    bool train;
    int batch;
} encode_request;

/* The checkpoint and the split to encode, checked against each other. */
static cv_status load_inputs(const encode_request *q, cv_checkpoint *ck, cv_data *d,
                             cv_err *err) {
    cv_status st = cv_checkpoint_load(q->model, ck, err);
    cv_data_files read = q->files;
    read.test_only = !q->train;
    if (!st) cv_data_files_for_model(&read, ck);
    if (!st) st = cv_data_load_files(q->data, &read, 0, d, err);
    const char *name = q->data            ? q->data
                       : q->train         ? (q->files.train_table ? q->files.train_table
                                                                  : q->files.train_images)
                       : q->files.test_table ? q->files.test_table
                                             : q->files.test_images;
    if (!st) st = cv_data_names_fit(d, ck, name, q->model, err);
    const cv_split *s = q->train ? &d->train : &d->test;
    if (!st && !s->n)
        st = cv_fail(err, CV_ERR_IO, "%s: no %s images to encode", name,
                     q->train ? "training" : "test");
    if (!st) st = cv_model_fit_labels(&ck->cfg, d, name, err);
    return st ? st : cv_model_takes(&ck->cfg, d, s, name, err);
}

static cv_status encode(const encode_request *q, cv_err *err) {
    char made[CV_PATH_MAX];
    if (cv_path_exists(q->out))
        return cv_fail(err, CV_ERR_IO, "%s: exists already; choose a new file", q->out);
    cv_status st = cv_prepare_output_file(q->out, made, err);
    if (st) return st;
    cv_checkpoint ck = {0};
    cv_data d = {0};
    cv_backend *be = NULL;
    cv_model m = {0};
    cv_workspace ws = {0};
    float *out = NULL;
    st = load_inputs(q, &ck, &d, err);
    const cv_split *s = q->train ? &d.train : &d.test;
    const int L = ck.cfg.latent;
    if (!st && !(out = malloc((size_t)s->n * 2 * L * sizeof(float))))
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory: %d posteriors need %.1f MiB", s->n,
                     (double)s->n * 2 * L * sizeof(float) / 1048576.0);
    if (!st) st = cv_backend_open(q->device, NULL, &be, err);
    if (!st) st = cv_model_from_checkpoint(be, &ck, &m, err);
    if (!st) st = cv_workspace_create(&m, s->n < q->batch ? s->n : q->batch, &ws, err);
    if (!st) {
        printf("device: %s\n", be->description);
        fflush(stdout);
        double t0 = cv_now_seconds();
        st = cv_encode_split(&m, &ws, s, out, err);
        const int64_t dims[2] = {s->n, 2 * L};
        if (!st) st = cv_npy_write(q->out, CV_NPY_F32, 2, dims, out, err);
        double t = cv_now_seconds() - t0;
        if (!st)
            printf("encoded %d images into %s: (%d, %d) = [mean | logvar], in %.2f s: %.0f "
                   "images/s\n", s->n, q->out, s->n, 2 * L, t, s->n / (t > 0 ? t : 1e-9));
    }
    if (ws.max_rows) cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    if (be) be->destroy(be);
    free(out);
    cv_data_free(&d);
    cv_checkpoint_free(&ck);
    if (st) { /* the folders made for it, taken back */
        char copy[CV_PATH_MAX];
        snprintf(copy, sizeof copy, "%s", q->out);
        cv_unmake_dirs(dirname(copy), made);
    }
    return st;
}

int cv_cmd_encode(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL},   {"data", required_argument, 0, OPT_DATA},
        {"split", required_argument, 0, OPT_SPLIT},   {"out", required_argument, 0, OPT_OUT},
        {"batch", required_argument, 0, OPT_BATCH},   {"device", required_argument, 0, OPT_DEVICE},
        CV_DATA_FILE_OPTIONS,                         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *const splits[] = {"test", "train"};
    const char *cmd = "encode";
    encode_request q = {.device = "auto", .batch = CV_EVAL_BATCH};
    int split = 0;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        bool ok = true;
        switch (c) {
        case 'h':
            return cv_print_help_with_data_flags(help);
        case OPT_MODEL: q.model = optarg; break;
        case OPT_DATA: q.data = optarg; break;
        case OPT_SPLIT: ok = cv_parse_choice(cmd, "--split", optarg, splits, 2, &split); break;
        case OPT_OUT: q.out = optarg; break;
        case OPT_BATCH: ok = cv_parse_int(cmd, "--batch", optarg, 1, 1 << 20, &q.batch); break;
        case OPT_DEVICE: ok = cv_parse_device(cmd, optarg); q.device = optarg; break;
        default: /* a data file flag, or a flag without a case */
            if (!cv_data_file_flag(cmd, c, optarg, &q.files, &ok))
                CV_ASSERT(!"a flag without a case");
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (!rc) rc = cv_check_data_file_flags(cmd, &q.files);
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!q.model) return cv_usage_error(cmd, "--model CKPT is required");
    if (!q.out || !q.out[0]) return cv_usage_error(cmd, "--out FILE.npy is required");
    q.train = split == 1;
    if (!q.data && !(q.train ? q.files.train_images || q.files.train_table
                             : q.files.test_images || q.files.test_table))
        return cv_usage_error(cmd, "--data DIR, --%s-images FILE or --%s-csv FILE is required",
                              q.train ? "train" : "test", q.train ? "train" : "test");
    cv_err err;
    cv_status st = encode(&q, &err);
    return st ? cv_report(cmd, st, &err) : 0;
}
