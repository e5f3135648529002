/* cli_generate.c: `cvae generate`. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cvae/checkpoint.h"
#include "cvae/generate.h"

static const char *help =
    "usage: cvae generate --model CKPT --per-class N --out DIR [flags]\n"
    "\n"
    "Generate a labeled synthetic data set: N images of each class, z drawn from the prior\n"
    "p(z|c) and decoded. Images are interleaved by class (image i has class\n"
    "classes[i % K]), so every prefix is balanced. DIR must not exist or be empty; it\n"
    "appears only when complete, with manifest.json (checkpoint checksum, seed, mode,\n"
    "counts, and each file's size and SHA-256).\n"
    "\n"
    "The same model and seed give the same bytes on one device whatever --batch. Between\n"
    "the CPU and a GPU the GEMMs round differently: a --mean pixel may then be 1 off, and\n"
    "a --sample pixel flips where p is within rounding of its uniform draw (fewer than 1\n"
    "pixel in 10,000).\n"
    "\n"
    "  --model CKPT       checkpoint written by cvae train (required)\n"
    "  --per-class N      images per class (required, except for a grid: its columns,\n"
    "                     default 10)\n"
    "  --classes LIST     classes to generate, e.g. 0,3,7 (default: all)\n"
    "  --out DIR          output folder, made with its parents (required; grid: the PNG\n"
    "                     file)\n"
    "  --format F         idx (default), idx.gz, npy, png (DIR/<class>/<index>.png), or\n"
    "                     grid (one PNG: a row per class, a column per sample)\n"
    "  --mean             pixels round(255 p) from the decoder's mean (default)\n"
    "  --sample           pixels drawn from the likelihood: Bernoulli(p) as 0 or 255, or\n"
    "                     for a Gaussian model round(255 clamp(p + sigma n, 0, 1))\n"
    "  --same-z           grid only: one z per column shared by every class\n"
    "  --seed S           seed of z and of the pixel draws (default 0)\n"
    "  --batch B          images per device round trip, rounded up to whole blocks of 256\n"
    "                     (default 1000); it does not change the bytes\n"
    "  --device D         auto, cpu or cuda (default auto)\n"
    "  -h, --help         this text\n";

enum { OPT_MODEL = 256, OPT_PER_CLASS, OPT_CLASSES, OPT_OUT, OPT_FORMAT, OPT_MEAN, OPT_SAMPLE,
       OPT_SAME_Z, OPT_SEED, OPT_BATCH, OPT_DEVICE };

static bool parse_format(const char *s, cv_gen_format *f) {
    static const char *names[] = {"idx", "idx.gz", "npy", "png", "grid"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *f = (cv_gen_format)i;
            return true;
        }
    return false;
}

static int run(const char *model, const char *device, cv_generate_options *o, bool all_classes) {
    const char *cmd = "generate";
    cv_checkpoint ck;
    cv_err err;
    cv_status st = cv_checkpoint_load(model, &ck, &err);
    if (st) return cv_report(cmd, st, &err);
    int rc = 0;
    int K = ck.cfg.n_classes;
    if (all_classes) {
        o->n_classes = K;
        for (int c = 0; c < K; c++) o->classes[c] = c;
    }
    for (int i = 0; i < o->n_classes && !rc; i++) {
        if (o->classes[i] >= K)
            rc = cv_usage_error(cmd, "class %d is not among the model's %d classes (0..%d)",
                                o->classes[i], K, K - 1);
        for (int j = 0; j < i && !rc; j++)
            if (o->classes[j] == o->classes[i])
                rc = cv_usage_error(cmd, "class %d is listed twice in --classes", o->classes[i]);
    }
    long long n = o->per_class * o->n_classes;
    if (!rc && o->format != CV_FMT_GRID && n > 2147483647LL)
        rc = cv_usage_error(cmd, "%lld images is more than one IDX/NPY file can index", n);
    if (rc) {
        cv_checkpoint_free(&ck);
        return rc;
    }
    o->checkpoint = model;
    o->checkpoint_crc = ck.checksum;
    cv_backend *be = NULL;
    cv_model m = {0};
    cv_workspace ws = {0};
    st = cv_backend_open(device, NULL, &be, &err);
    if (!st) st = cv_model_from_checkpoint(be, &ck, &m, &err);
    if (!st) {
        int block = cv_generate_block_rows(&m);
        st = cv_workspace_create(&m, block > o->n_classes ? block : o->n_classes, &ws, &err);
    }
    cv_generate_result res;
    if (!st) {
        printf("device: %s\n", be->description);
        fflush(stdout);
        st = cv_generate(&m, &ws, o, &res, &err);
    }
    if (!st)
        printf("wrote %lld images (%d classes x %lld, %s) to %s in %.2f s: %.0f images/s\n",
               res.images, o->n_classes, o->per_class, o->mean ? "mean" : "sample", o->out,
               res.seconds, res.images / (res.seconds > 0 ? res.seconds : 1e-9));
    if (ws.max_rows) cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    if (be) be->destroy(be);
    cv_checkpoint_free(&ck);
    return st ? cv_report(cmd, st, &err) : 0;
}

int cv_cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"per-class", required_argument, 0, OPT_PER_CLASS},
        {"classes", required_argument, 0, OPT_CLASSES},
        {"out", required_argument, 0, OPT_OUT},
        {"format", required_argument, 0, OPT_FORMAT},
        {"mean", no_argument, 0, OPT_MEAN},
        {"sample", no_argument, 0, OPT_SAMPLE},
        {"same-z", no_argument, 0, OPT_SAME_Z},
        {"seed", required_argument, 0, OPT_SEED},
        {"batch", required_argument, 0, OPT_BATCH},
        {"device", required_argument, 0, OPT_DEVICE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "generate", *model = NULL, *device = "auto";
    cv_generate_options o = {.format = CV_FMT_IDX, .mean = true, .batch = 1000,
                             .progress = isatty(STDERR_FILENO)};
    bool all_classes = true, have_per_class = false, mean_flag = false, sample_flag = false;
    int per_class = 0;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        bool ok = true;
        switch (c) {
        case 'h': fputs(help, stdout); return 0;
        case OPT_MODEL: model = optarg; break;
        case OPT_PER_CLASS:
            ok = cv_parse_int(cmd, "--per-class", optarg, 1, 2147483647L, &per_class);
            have_per_class = true;
            break;
        case OPT_CLASSES:
            ok = cv_parse_int_list(cmd, "--classes", optarg, 0, 255, 256, o.classes,
                                   &o.n_classes);
            all_classes = false;
            break;
        case OPT_OUT: o.out = optarg; break;
        case OPT_FORMAT:
            if (!parse_format(optarg, &o.format))
                return cv_usage_error(cmd, "--format must be idx, idx.gz, npy, png or grid, got '%s'",
                                      optarg);
            break;
        case OPT_MEAN: mean_flag = true; break;
        case OPT_SAMPLE: sample_flag = true; break;
        case OPT_SAME_Z: o.same_z = true; break;
        case OPT_SEED: ok = cv_parse_u64(cmd, "--seed", optarg, &o.seed); break;
        case OPT_BATCH: ok = cv_parse_int(cmd, "--batch", optarg, 1, 1 << 20, &o.batch); break;
        case OPT_DEVICE: ok = cv_parse_device(cmd, optarg); device = optarg; break;
        default: CV_ASSERT(!"a flag without a case");
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model) return cv_usage_error(cmd, "--model CKPT is required");
    if (!o.out || !o.out[0]) return cv_usage_error(cmd, "--out is required");
    if (mean_flag && sample_flag) return cv_usage_error(cmd, "--mean and --sample exclude each other");
    o.mean = !sample_flag;
    if (o.same_z && o.format != CV_FMT_GRID)
        return cv_usage_error(cmd, "--same-z applies to --format grid only");
    if (!have_per_class && o.format != CV_FMT_GRID)
        return cv_usage_error(cmd, "--per-class N is required");
    o.per_class = have_per_class ? per_class : 10;
    if (o.format == CV_FMT_GRID && o.per_class > 1000)
        return cv_usage_error(cmd, "a grid holds at most 1000 columns");
    if (o.format == CV_FMT_GRID && access(o.out, F_OK) == 0)
        return cv_report(cmd, CV_ERR_IO,
                         &(cv_err){"--out exists already; choose a new file for the grid"});
    return run(model, device, &o, all_classes);
}
