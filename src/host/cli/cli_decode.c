/* cli_decode.c: `cvae decode`, the decoder's output for given latents. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cvae/npy.h"

static const char *help =
    "usage: cvae decode --model CKPT --z FILE.npy (--labels FILE | --class C\n"
    "                   | --conditions FILE.npy) --out DIR [flags]\n"
    "\n"
    "Decode latents: for each row z of FILE.npy, a float32 array (N, L) as cvae encode\n"
    "writes its means, the decoder's output E[x|z,c] under that row's condition: the\n"
    "Bernoulli probabilities, or the Gaussian means, sigmoid(logits). A model of class\n"
    "labels takes a labels file of N rows (or of one row for all) or --class C for all; a\n"
    "model of condition vectors a float32 .npy (N, K) or (1, K). DIR must not exist or be\n"
    "empty; it appears only when complete, holding decoded.npy (N, H, W[, C]) float32,\n"
    "the images as pixels round(255 p) in --format, the labels or conditions, and\n"
    "manifest.json (checkpoint checksum, the latents' file, each file's size and SHA-256).\n"
    "Rows are decoded in blocks through the backend, so N may be anything.\n"
    "\n"
    "  --model CKPT       checkpoint written by cvae train (required)\n"
    "  --z FILE.npy       latents, float32 (N, L), L the model's latent size (required)\n"
    "  --labels FILE      class labels (an integer .npy (N,) or IDX idx1), one per row\n"
    "  --class C          class C for every row\n"
    "  --conditions FILE  condition vectors, float32 .npy (N, K), one per row\n"
    "  --out DIR          output folder, made with its parents (required)\n"
    "  --format F         the images: npy (default; images.npy), idx, idx.gz or png\n"
    "  --batch B          rows per device round trip (default 1000), rounded up to whole\n"
    "                     decoding blocks; it does not change the output\n"
    "  --device D         auto, cpu, cuda or cuda:N (default auto)\n"
    "  -h, --help         this text\n";

enum { OPT_MODEL = 256, OPT_Z, OPT_LABELS, OPT_CLASS, OPT_CONDITIONS, OPT_OUT, OPT_FORMAT,
       OPT_BATCH, OPT_DEVICE };

/* The latents of path, (N, L) float32 for a model of latent size L, into o (malloc'd). */
static cv_status read_latents(const char *path, int L, cv_generate_options *o, cv_err *err) {
    cv_npy_array a;
    cv_status st = cv_npy_read(path, &a, err);
    if (st) return st;
    if (a.dtype != CV_NPY_F32 || a.ndims != 2 || a.dims[1] != L) {
        char shape[96] = "";
        for (int i = 0; i < a.ndims; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld",
                     i ? ", " : "", (long long)a.dims[i]);
        st = cv_fail(err, CV_ERR_FORMAT, "%s: latents must be float32 (N, %d), the model's "
                     "latent size; this is %s (%s)", path, L, cv_npy_descr(a.dtype), shape);
        cv_npy_free(&a);
        return st;
    }
    o->z = a.data;
    o->z_rows = a.dims[0];
    o->z_source = path;
    return CV_OK;
}

static int run(const char *model, const char *device, const char *z_path, const char *labels,
               const char *conditions, int cls, cv_generate_options *o) {
    const char *cmd = "decode";
    cv_checkpoint ck;
    cv_err err;
    cv_status st = cv_checkpoint_load(model, &ck, &err);
    if (st) return cv_report(cmd, st, &err);
    if (!labels && !conditions && ck.cfg.condition == CV_COND_VECTORS)
        st = cv_fail(&err, CV_ERR_USAGE, "the model takes condition vectors of width %d: give "
                     "them with --conditions FILE.npy, not --class", ck.cfg.cond_width);
    if (conditions && ck.cfg.condition == CV_COND_LABELS)
        st = cv_fail(&err, CV_ERR_USAGE, "the model takes class labels (%d classes): give "
                     "them with --labels FILE or --class C, not --conditions",
                     ck.cfg.cond_width);
    if (!st) st = read_latents(z_path, ck.cfg.latent, o, &err);
    if (!st) st = cv_read_condition_rows(labels, conditions, &o->cond, &err);
    if (!labels && !conditions) /* one class for all */
        o->cond = (cv_gen_conditions){.n_classes = 1, .classes = {cls}};
    int rc = st ? cv_report(cmd, st, &err) : cv_generate_from(cmd, model, device, &ck, o);
    cv_checkpoint_free(&ck);
    free((void *)o->z);
    free((void *)o->cond.labels);
    free((void *)o->cond.conditions);
    return rc;
}

int cv_cmd_decode(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"z", required_argument, 0, OPT_Z},
        {"labels", required_argument, 0, OPT_LABELS},
        {"class", required_argument, 0, OPT_CLASS},
        {"conditions", required_argument, 0, OPT_CONDITIONS},
        {"out", required_argument, 0, OPT_OUT},
        {"format", required_argument, 0, OPT_FORMAT},
        {"batch", required_argument, 0, OPT_BATCH},
        {"device", required_argument, 0, OPT_DEVICE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *const formats[] = {"npy", "idx", "idx.gz", "png"};
    static const cv_gen_format format_of[] = {CV_FMT_NPY, CV_FMT_IDX, CV_FMT_IDX_GZ, CV_FMT_PNG};
    const char *cmd = "decode", *model = NULL, *device = "auto", *z = NULL;
    const char *labels = NULL, *conditions = NULL;
    cv_generate_options o = {.format = CV_FMT_NPY, .mean = true, .per = 1, .batch = 1000,
                             .decoded = true, .progress = isatty(STDERR_FILENO)};
    int cls = -1, format = 0;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        bool ok = true;
        switch (c) {
        case 'h': fputs(help, stdout); return 0;
        case OPT_MODEL: model = optarg; break;
        case OPT_Z: z = optarg; break;
        case OPT_LABELS: labels = optarg; break;
        case OPT_CLASS: ok = cv_parse_int(cmd, "--class", optarg, 0, 255, &cls); break;
        case OPT_CONDITIONS: conditions = optarg; break;
        case OPT_OUT: o.out = optarg; break;
        case OPT_FORMAT: ok = cv_parse_choice(cmd, "--format", optarg, formats, 4, &format); break;
        case OPT_BATCH: ok = cv_parse_int(cmd, "--batch", optarg, 1, 1 << 20, &o.batch); break;
        case OPT_DEVICE: ok = cv_parse_device(cmd, optarg); device = optarg; break;
        default: CV_ASSERT(!"a flag without a case");
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model) return cv_usage_error(cmd, "--model CKPT is required");
    if (!z) return cv_usage_error(cmd, "--z FILE.npy is required");
    if (!o.out || !o.out[0]) return cv_usage_error(cmd, "--out DIR is required");
    if ((labels != NULL) + (conditions != NULL) + (cls >= 0) != 1)
        return cv_usage_error(cmd, "give the rows' conditions once: --labels FILE, --class C "
                              "or --conditions FILE.npy");
    o.format = format_of[format];
    return run(model, device, z, labels, conditions, cls, &o);
}
