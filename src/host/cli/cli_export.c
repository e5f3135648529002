/* cli_export.c: `cvae export`, a checkpoint written for PyTorch or ONNX Runtime. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cvae/export.h"
#include "util/sha256.h"

static const char *help =
    "usage: cvae export --model CKPT --format safetensors --out FILE.safetensors [flags]\n"
    "       cvae export --model CKPT --format onnx --out DIR [flags]\n"
    "\n"
    "Write a trained model for other tools. Both formats hold every parameter under\n"
    "PyTorch's names and shapes (a first layer takes the concatenation [x, c] or [z, c],\n"
    "c a label's one-hot row or the condition vector: enc.0.weight is (H1, D + K)), and\n"
    "the configuration as JSON (hidden sizes, latent size, condition kind and width,\n"
    "class names (--class-names, else the checkpoint's, else null), the condition\n"
    "columns of a model of condition vectors (the checkpoint's, else null), prior,\n"
    "likelihood, sigma, image shape, the cvae version and the checkpoint's SHA-256).\n"
    "\n"
    "safetensors: one file, every tensor float32, the configuration in the header's\n"
    "  __metadata__[\"cvae\"]; examples/torch_cvae.py builds a torch.nn.Module from it.\n"
    "onnx: DIR/encoder.onnx (inputs x (N, D) in [0, 1] and c (N, K); outputs mean and\n"
    "  logvar (N, L)), DIR/decoder.onnx (inputs z (N, L) and c (N, K); output x_mean\n"
    "  (N, D), the Bernoulli probabilities or Gaussian means) and, for a learned prior,\n"
    "  DIR/prior.onnx (input c; outputs prior_mean and prior_logvar (N, L)); opset 13, N\n"
    "  dynamic, the configuration in metadata_props[\"cvae\"].\n"
    "\n"
    "Nothing is overwritten: an existing output file is refused, and files appear only\n"
    "when whole (for ONNX, all of them or none).\n"
    "\n"
    "  --model CKPT      checkpoint written by cvae train (required)\n"
    "  --format F        safetensors or onnx (required)\n"
    "  --out PATH        the .safetensors file, or the folder of the .onnx files (required)\n"
    "  --class-names L   a model of labels: the name of each class, comma-separated, in\n"
    "                    the order of the labels (e.g. T-shirt/top,Trouser,...); default:\n"
    "                    the names the checkpoint holds (a model trained on class folders\n"
    "                    or a table's class names), else none\n"
    "  -h, --help        this text\n";

enum { OPT_MODEL = 256, OPT_FORMAT, OPT_OUT, OPT_CLASS_NAMES };

/* The names of --class-names LIST, split in place at its commas into names (K of them for
 * the model ck): one for each class, none empty. */
static cv_status split_class_names(char *list, const cv_checkpoint *ck, const char **names,
                                   cv_err *err) {
    if (ck->cfg.condition != CV_COND_LABELS)
        return cv_fail(err, CV_ERR_USAGE, "--class-names: the model takes condition vectors, "
                       "not classes");
    int n = 1;
    for (const char *c = list; *c; c++) n += *c == ',';
    bool bad = n != ck->cfg.cond_width;
    for (int k = 0; !bad && k < n; k++) { /* the last name ends the list, not a comma */
        char *comma = strchr(list, ',');
        if (comma) *comma = '\0';
        names[k] = list;
        bad = !list[0];
        if (comma) list = comma + 1;
    }
    if (bad)
        return cv_fail(err, CV_ERR_USAGE, "--class-names: give %d non-empty names, one per "
                       "class of the model, separated by commas", ck->cfg.cond_width);
    return CV_OK;
}

static cv_status export_model(const char *model, bool onnx, const char *out,
                              const char *class_names, cv_err *err) {
    cv_checkpoint ck;
    cv_status st = cv_checkpoint_load(model, &ck, err);
    if (st) return st;
    /* the classes' names: the flag's, else those the checkpoint kept from its data */
    cv_export_source src = {.ck = &ck,
                            .class_names = ck.cfg.condition == CV_COND_LABELS
                                               ? (const char *const *)ck.names
                                               : NULL};
    char *list = class_names ? strdup(class_names) : NULL;
    const char **names = class_names ? calloc((size_t)ck.cfg.cond_width, sizeof *names) : NULL;
    if (class_names && (!list || !names)) st = cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st && class_names) st = split_class_names(list, &ck, names, err);
    if (names) src.class_names = names;
    uint64_t bytes;
    if (!st) st = cv_sha256_file(model, src.checkpoint_sha256, &bytes, err);
    if (!st) st = onnx ? cv_export_onnx(&src, out, err) : cv_export_safetensors(&src, out, err);
    if (!st)
        printf("exported %s (%lld parameters, sha256 %.16s...) as %s to %s\n", model,
               (long long)ck.n_params, src.checkpoint_sha256, onnx ? "ONNX" : "safetensors",
               out);
    free(names);
    free(list);
    cv_checkpoint_free(&ck);
    return st;
}

int cv_cmd_export(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"format", required_argument, 0, OPT_FORMAT},
        {"out", required_argument, 0, OPT_OUT},
        {"class-names", required_argument, 0, OPT_CLASS_NAMES},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *const formats[] = {"safetensors", "onnx"};
    const char *cmd = "export", *model = NULL, *out = NULL, *class_names = NULL;
    int format = -1;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        bool ok = true;
        switch (c) {
        case 'h': fputs(help, stdout); return 0;
        case OPT_MODEL: model = optarg; break;
        case OPT_FORMAT: ok = cv_parse_choice(cmd, "--format", optarg, formats, 2, &format); break;
        case OPT_OUT: out = optarg; break;
        case OPT_CLASS_NAMES: class_names = optarg; break;
        default: CV_ASSERT(!"a flag without a case");
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model) return cv_usage_error(cmd, "--model CKPT is required");
    if (format < 0) return cv_usage_error(cmd, "--format safetensors or --format onnx is required");
    if (!out || !out[0]) return cv_usage_error(cmd, "--out is required");
    cv_err err;
    cv_status st = export_model(model, format == 1, out, class_names, &err);
    return st ? cv_report(cmd, st, &err) : 0;
}
