/* cli_info.c: `cvae info`. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>

#include "cli.h"
#include "cvae/checkpoint.h"

static const char *help =
    "usage: cvae info --model CKPT\n"
    "\n"
    "Validate a checkpoint (magic, version, sizes, checksum) and print what it holds: the\n"
    "model, the names of its classes or condition columns (when the data named them), the\n"
    "objective and where training stands.\n"
    "\n"
    "  --model CKPT   checkpoint written by cvae train (required)\n"
    "  -h, --help     this text\n";

int cv_cmd_info(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *cmd = "info", *model = NULL;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        if (c == 'h') {
            fputs(help, stdout);
            return 0;
        }
        model = optarg;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model) return cv_usage_error(cmd, "--model CKPT is required");
    cv_checkpoint ck;
    cv_err err;
    cv_status st = cv_checkpoint_load(model, &ck, &err);
    if (st) return cv_report(cmd, st, &err);
    const cv_model_config *c2 = &ck.cfg;
    printf("checkpoint: %s (format version %u, %llu bytes, crc32 %08x)\n", model, ck.version,
           (unsigned long long)ck.file_bytes, ck.checksum);
    printf("model: images %dx%d", c2->height, c2->width);
    if (c2->channels > 1) printf("x%d", c2->channels);
    if (c2->condition == CV_COND_LABELS)
        printf(", %d classes", c2->cond_width);
    else
        printf(", condition vectors of width %d", c2->cond_width);
    printf(", latent %d, hidden", c2->latent);
    for (int i = 0; i < c2->n_hidden; i++) printf("%s%d", i ? "," : " ", c2->hidden[i]);
    printf(", %zu parameters\n", ck.n_params);
    if (ck.names) { /* the classes or the condition columns the data named */
        printf("%s:", c2->condition == CV_COND_LABELS ? "classes" : "condition columns");
        for (int k = 0; k < c2->cond_width; k++) printf("%s %d %s", k ? "," : "", k, ck.names[k]);
        printf("\n");
    }
    if (ck.train.objective == CV_OBJECTIVE_IWAE)
        printf("objective: IWAE, %d draws per image; ", ck.train.samples);
    else
        printf("objective: ELBO; ");
    printf("%s likelihood", c2->likelihood == CV_LIKELIHOOD_GAUSSIAN ? "Gaussian" : "Bernoulli");
    if (c2->sigma_learned)
        printf(" (sigma learned: %g now, from %g)", cv_checkpoint_sigma(&ck), c2->sigma);
    else if (c2->likelihood == CV_LIKELIHOOD_GAUSSIAN)
        printf(" (sigma %g)", c2->sigma);
    printf(", %s prior, beta %g", c2->prior == CV_PRIOR_CONDITIONAL ? "conditional" : "standard",
           ck.train.beta);
    if (ck.train.kl_warmup)
        printf(" (warm-up %d epochs, %s)", ck.train.kl_warmup,
               ck.train.warmup_per_step ? "per step" : "held per epoch");
    if (ck.train.free_bits > 0) printf(", free bits %g nats", ck.train.free_bits);
    if (ck.train.binarize) printf(", dynamic binarization");
    printf("; lr %s", ck.train.cosine ? "cosine" : "constant");
    if (ck.train.warmup_steps) printf(" (warm-up %lld steps)", (long long)ck.train.warmup_steps);
    if (ck.train.clip_norm > 0) printf(", gradient clip %g", ck.train.clip_norm);
    printf("\n");
    printf("training: %d epoch%s done, step %lld, batch %d, lr %g, seed %llu\n", ck.epoch,
           ck.epoch == 1 ? "" : "s", (long long)ck.step, ck.batch, ck.lr,
           (unsigned long long)ck.seed);
    if (ck.position)
        printf("interrupted inside epoch %d after %d images: resume with --resume\n",
               ck.epoch + 1, ck.position);
    if (ck.nonfinite_steps)
        printf("non-finite steps skipped: %lld\n", (long long)ck.nonfinite_steps);
    if (ck.active_units >= 0)
        printf("active units at the last test evaluation: %d of %d\n", ck.active_units,
               c2->latent);
    printf("state: parameters and Adam m, v\n");
    cv_checkpoint_free(&ck);
    return 0;
}
