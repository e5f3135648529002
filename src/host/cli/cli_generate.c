/* cli_generate.c: `cvae generate`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "cvae/checkpoint.h"
#include "cvae/generate.h"
#include "util/interrupt.h"
#include "data/names.h"

static const char *help =
    "usage: cvae generate --model CKPT --per-class N --out DIR [flags]\n"
    "       cvae generate --model CKPT (--labels FILE | --conditions FILE.npy) --out DIR\n"
    "                     [flags]\n"
    "       cvae generate --model CKPT --format traversal [--classes LIST | --labels FILE\n"
    "                     | --conditions FILE.npy] --out FILE.png [--units N] [--steps S]\n"
    "       cvae generate --model CKPT --format interpolate (--data DIR | --test-images F\n"
    "                     (--test-labels | --test-conditions) F) [--images I,J] --out FILE.png\n"
    "\n"
    "Generate a synthetic data set: z drawn from the prior p(z|c) and decoded, for each\n"
    "condition c. A model of class labels takes N images of each class, interleaved (image\n"
    "i has class classes[i % K], so every prefix is balanced), or the classes of a labels\n"
    "file in its row order; a model of condition vectors takes the rows of a float32 .npy\n"
    "of shape (rows, K). DIR must not exist or be empty; it appears only when complete,\n"
    "with manifest.json (checkpoint checksum, seed, mode, counts, and each file's size and\n"
    "SHA-256), and for condition vectors conditions.npy, the row of each image. A new DIR\n"
    "is written as DIR.tmp.PID and renamed; an existing empty one (a mount point) is\n"
    "filled in place, manifest.json last. SIGINT or SIGTERM stops the work, removes what\n"
    "it made and exits with 130 or 143.\n"
    "\n"
    "The same model and seed give the same bytes on one device whatever --batch. Between\n"
    "the CPU and a GPU the GEMMs round differently: a --mean pixel may then be 1 off, and\n"
    "a --sample pixel flips where p is within rounding of its uniform draw (fewer than 1\n"
    "pixel in 10,000).\n"
    "\n"
    "Two pictures show the latent space (PNG, pixels round(255 p)). traversal: for each\n"
    "class or condition row, a row per latent unit, the most active first (activity: how\n"
    "much the row's decoded images vary; units the decoder ignores come last), and a column\n"
    "per step of that unit across -3..3 standard deviations of the prior p(z|c), the other\n"
    "units at the prior's mean; the units' order is printed. interpolate: the test images I\n"
    "and J at the ends of a row, between them the decoded path from I's posterior mean to\n"
    "J's, z = mu_I + t (mu_J - mu_I) for t in 0..1, under I's condition (and a second row\n"
    "under J's when it differs).\n";

static const char *help_flags =
    "  --model CKPT       checkpoint written by cvae train (required)\n"
    "  --per-class N      images per class (required for classes, except for a grid: its\n"
    "                     columns, default 10)\n"
    "  --classes LIST     classes to generate, by number or by name (a model trained on\n"
    "                     class folders or named labels), e.g. 0,3,7 or Bag,Sneaker\n"
    "                     (default: all)\n"
    "  --labels FILE      class labels (an integer .npy (N,) or IDX idx1): one image per\n"
    "                     row, in row order\n"
    "  --conditions FILE  condition vectors, float32 .npy (N, K): one image per row\n"
    "  --per-row N        with --labels or --conditions: images per row, row after row as\n"
    "                     with classes (default 1; a grid's columns, default 10)\n"
    "  --out DIR          output folder, made with its parents (required; grid: the PNG\n"
    "                     file, ending in .png)\n"
    "  --format F         idx (default), idx.gz, npy, png (DIR/<class>/<index>.png, the\n"
    "                     class's name as its folder when the model has names, or\n"
    "                     DIR/<index>.png for condition vectors), grid (one PNG: a row\n"
    "                     per class or condition row, a column per sample), traversal or\n"
    "                     interpolate (one PNG each, above)\n"
    "  --mean             pixels round(255 p) from the decoder's mean (default)\n"
    "  --sample           pixels drawn from the likelihood: Bernoulli(p) as 0 or 255, or\n"
    "                     for a Gaussian model round(255 clamp(p + sigma n, 0, 1))\n"
    "  --same-z           grid only: one z per column shared by every row\n"
    "  --seed S           seed of z and of the pixel draws (default 0)\n"
    "  --batch B          images per device round trip (default 1000), rounded up to whole\n"
    "                     decoding blocks of min(256, 4194304 / D) images, D = H W C values\n"
    "                     an image; it does not change the bytes\n"
    "  --device D         auto, cpu, cuda or cuda:N (default auto)\n"
    "  --units N          traversal: the N most active units (default all, at most 64)\n"
    "  --steps S          traversal: columns (default 9); interpolate: images on the path\n"
    "                     (default 10); 2..256\n"
    "  --images I,J       interpolate: the two test images, by index (default 0,1)\n"
    "  --data DIR         interpolate: the data folder of the test images, or the test\n"
    "                     file flags of cvae eval (--test-images, --test-labels,\n"
    "                     --test-conditions)\n"
    "  -h, --help         this text\n";

enum { OPT_MODEL = 256, OPT_PER_CLASS, OPT_CLASSES, OPT_OUT, OPT_FORMAT, OPT_MEAN, OPT_SAMPLE,
       OPT_SAME_Z, OPT_SEED, OPT_BATCH, OPT_DEVICE, OPT_LABELS, OPT_CONDITIONS, OPT_PER_ROW,
       OPT_UNITS, OPT_STEPS, OPT_IMAGES, OPT_DATA };

/* Where the images' conditions come from, as the flags gave them. */
typedef struct {
    const char *labels_file, *conditions_file;
    const char *classes; /* --classes, as given (NULL: all the model's classes) */
} condition_flags;

cv_status cv_read_condition_rows(const char *labels_file, const char *conditions_file,
                                 cv_gen_conditions *c, cv_err *err) {
    int n = 0, width = 0;
    cv_status st = CV_OK;
    if (labels_file) {
        uint8_t *labels = NULL;
        st = cv_labels_read(labels_file, &labels, &n, err);
        c->labels = labels;
        c->source = labels_file;
    } else if (conditions_file) {
        float *rows = NULL;
        st = cv_conditions_read(conditions_file, &rows, &n, &width, err);
        c->conditions = rows;
        c->width = width;
        c->source = conditions_file;
    }
    c->n_rows = n;
    return st;
}

static bool parse_format(const char *s, cv_gen_format *f) {
    for (int i = 0; i < CV_FMT_COUNT; i++)
        if (strcmp(s, cv_gen_format_name((cv_gen_format)i)) == 0) {
            *f = (cv_gen_format)i;
            return true;
        }
    return false;
}

/* One class of --classes: a name of the model's, else a number 0..255 (cv_generate_check
 * then checks it is below K). */
static bool class_of(const char *word, const cv_checkpoint *ck, int *c) {
    const bool named = ck->names && ck->cfg.condition == CV_COND_LABELS;
    for (int k = 0; named && k < ck->cfg.cond_width; k++)
        if (strcmp(word, ck->names[k]) == 0) {
            *c = k;
            return true;
        }
    char *end;
    long v = strtol(word, &end, 10);
    if (end == word || *end || v < 0 || v >= CV_MAX_CLASSES) return false;
    *c = (int)v;
    return true;
}

/* --classes: a comma-separated list of class names or numbers. Returns 0 or the exit code
 * after the error line. */
static int parse_classes(const char *list, const cv_checkpoint *ck, cv_gen_conditions *cond) {
    cond->n_classes = 0;
    for (const char *p = list;;) {
        const size_t len = strcspn(p, ",");
        char word[CV_NAME_MAX + 1];
        snprintf(word, sizeof word, "%.*s", (int)(len < CV_NAME_MAX ? len : CV_NAME_MAX), p);
        int c;
        if (cond->n_classes == CV_MAX_CLASSES || !class_of(word, ck, &c))
            return cv_usage_error("generate", "--classes takes at most %d class names or numbers "
                                  "0..255, separated by commas; '%s' is %s", CV_MAX_CLASSES,
                                  word, ck->names ? "neither a class of the model (cvae info "
                                  "lists them) nor a number" : "not a class number (the model "
                                  "names none)");
        cond->classes[cond->n_classes++] = c;
        if (!p[len]) return 0;
        p += len + 1;
    }
}

/* The images' conditions from the flags and the checkpoint: all the model's classes
 * unless --classes picked some, or the rows of --labels or --conditions (cv_generate_check
 * then checks them against the model). Returns 0 or the exit code after the error line. */
static int set_conditions(const condition_flags *f, const cv_checkpoint *ck,
                          cv_generate_options *o) {
    if (ck->cfg.condition == CV_COND_LABELS) o->class_names = ck->names;
    if (!f->classes && ck->cfg.condition == CV_COND_LABELS) {
        o->cond.n_classes = ck->cfg.cond_width;
        for (int c = 0; c < ck->cfg.cond_width; c++) o->cond.classes[c] = c;
    }
    if (f->classes && ck->cfg.condition == CV_COND_LABELS) {
        const int rc = parse_classes(f->classes, ck, &o->cond);
        if (rc) return rc;
    }
    cv_err err;
    cv_status st = cv_read_condition_rows(f->labels_file, f->conditions_file, &o->cond, &err);
    return st ? cv_report("generate", st, &err) : 0;
}

/* Which flags go together: --per-class with classes, --per-row with rows, one source of
 * rows. Returns 0 or the exit code after the error line. */
static int check_condition_flags(const condition_flags *f, bool per_class, bool per_row,
                                 cv_gen_format format) {
    const char *cmd = "generate";
    const bool rows = f->labels_file || f->conditions_file;
    if (f->labels_file && f->conditions_file)
        return cv_usage_error(cmd, "--labels and --conditions exclude each other");
    if (rows && f->classes)
        return cv_usage_error(cmd, "--classes picks classes to interleave; with --labels or "
                              "--conditions the rows say each image's condition");
    if (rows && per_class)
        return cv_usage_error(cmd, "--per-class counts images of each class; with --labels or "
                              "--conditions use --per-row");
    if (!rows && per_row)
        return cv_usage_error(cmd, "--per-row applies to --labels or --conditions");
    if (!rows && !per_class && format != CV_FMT_GRID)
        return cv_usage_error(cmd, "--per-class N (or --labels or --conditions FILE) is required");
    return 0;
}

/* The exit code of a failed run: 130 or 143 after a signal, as `cvae train`. */
static int report_failure(const char *cmd, cv_status st, const cv_err *err) {
    int rc = cv_report(cmd, st, err);
    return st == CV_ERR_INTERRUPTED ? 128 + cv_interrupt_pending() : rc;
}

/* The data set or grid of o, from ck's model: its checks, the device, the decoding and
 * the files. */
static int generate_from(const char *cmd, const char *model, const char *device,
                         cv_checkpoint *ck, cv_generate_options *o) {
    cv_err err;
    cv_status st;
    int rc = 0;
    long long n = cv_generate_count(o);
    if (o->format != CV_FMT_GRID && n > 2147483647LL)
        rc = cv_usage_error(cmd, "%lld images is more than one IDX/NPY file can index", n);
    if (!rc && (st = cv_generate_check(&ck->cfg, o, &err))) rc = cv_report(cmd, st, &err);
    if (!rc && (st = cv_generate_check_output(o, &err))) rc = cv_report(cmd, st, &err);
    if (rc) return rc;
    o->checkpoint = model;
    o->checkpoint_crc = ck->checksum;
    cv_backend *be = NULL;
    cv_model m = {0};
    cv_workspace ws = {0};
    st = cv_backend_open(device, NULL, &be, &err);
    if (!st) st = cv_model_from_checkpoint(be, ck, &m, &err);
    if (!st) {
        int block = cv_generate_block_rows(&m), R = (int)cv_gen_condition_count(&o->cond);
        st = cv_workspace_create(&m, o->format == CV_FMT_GRID && R > block ? R : block, &ws,
                                 &err);
    }
    cv_generate_result res;
    if (!st) {
        printf("device: %s\n", be->description);
        fflush(stdout);
        st = cv_generate(&m, &ws, o, &res, &err);
    }
    if (!st && o->z)
        printf("decoded %lld latents (%s) to %s in %.2f s: %.0f images/s\n", res.images,
               o->z_source, o->out, res.seconds,
               res.images / (res.seconds > 0 ? res.seconds : 1e-9));
    else if (!st) {
        const long long R = cv_gen_condition_count(&o->cond);
        printf("wrote %lld images (%lld %s%s x %lld, %s) to %s in %.2f s: %.0f images/s\n",
               res.images, R, o->cond.n_rows ? "row" : "class",
               R == 1 ? "" : o->cond.n_rows ? "s" : "es", o->per, o->mean ? "mean" : "sample",
               o->out, res.seconds, res.images / (res.seconds > 0 ? res.seconds : 1e-9));
    }
    if (ws.max_rows) cv_workspace_destroy(&m, &ws);
    cv_model_destroy(&m);
    if (be) be->destroy(be);
    return st ? report_failure(cmd, st, &err) : 0;
}

/* generate_from under the signal guard: a SIGINT or SIGTERM stops the work between chunks
 * and takes back what it made (a second one ends the process at once). */
int cv_generate_from(const char *cmd, const char *model, const char *device,
                     cv_checkpoint *ck, cv_generate_options *o) {
    cv_interrupt_guard guard;
    cv_interrupt_install(&guard);
    int rc = generate_from(cmd, model, device, ck, o);
    cv_interrupt_restore(&guard);
    return rc;
}

/* A picture's request (q->steps 0: none asked for) against the other flags. */
static int check_picture_flags(const cv_picture_request *q, const condition_flags *f,
                               bool per_class, bool per_row, bool data_flags) {
    const char *cmd = "generate";
    if (per_class || per_row)
        return cv_usage_error(cmd, "--per-class and --per-row apply to data sets and grids");
    if (q->interpolate && (f->labels_file || f->conditions_file || f->classes))
        return cv_usage_error(cmd, "--format interpolate takes the conditions of its two "
                              "images, not --classes, --labels or --conditions");
    if (q->interpolate && !q->data && !q->files.test_images && !q->files.test_table)
        return cv_usage_error(cmd, "--format interpolate needs the test images: --data DIR, "
                              "--test-images FILE or --test-csv FILE");
    if (!q->interpolate && (data_flags || q->images[1] >= 0))
        return cv_usage_error(cmd, "--data, the data file flags and --images apply to "
                              "--format interpolate");
    if (q->interpolate && q->units)
        return cv_usage_error(cmd, "--units applies to --format traversal");
    return 0;
}

static int run(const char *model, const char *device, cv_generate_options *o,
               const condition_flags *f, const cv_picture_request *picture) {
    cv_checkpoint ck;
    cv_err err;
    cv_status st = cv_checkpoint_load(model, &ck, &err);
    if (st) return cv_report("generate", st, &err);
    int rc = picture && picture->interpolate ? 0 : set_conditions(f, &ck, o);
    if (!rc)
        rc = picture ? cv_generate_picture(device, &ck, o, picture)
                     : cv_generate_from("generate", model, device, &ck, o);
    cv_checkpoint_free(&ck);
    free((void *)o->cond.labels);
    free((void *)o->cond.conditions);
    return rc;
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
        {"labels", required_argument, 0, OPT_LABELS},
        {"conditions", required_argument, 0, OPT_CONDITIONS},
        {"per-row", required_argument, 0, OPT_PER_ROW},
        {"units", required_argument, 0, OPT_UNITS},
        {"steps", required_argument, 0, OPT_STEPS},
        {"images", required_argument, 0, OPT_IMAGES},
        {"data", required_argument, 0, OPT_DATA},
        CV_DATA_FILE_OPTIONS,
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "generate", *model = NULL, *device = "auto";
    cv_generate_options o = {.format = CV_FMT_IDX, .mean = true, .batch = 1000,
                             .progress = isatty(STDERR_FILENO)};
    condition_flags f = {0};
    bool have_per_class = false, have_per_row = false, mean_flag = false, sample_flag = false;
    bool seed_or_batch = false;
    bool data_flags = false, picture = false;
    cv_picture_request q = {.images = {0, -1}};
    int per = 0, n_images = 0;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        bool ok = true;
        switch (c) {
        case 'h':
            fputs(help, stdout);
            fputs("\n", stdout);
            return cv_print_help_with_data_flags(help_flags);
        case OPT_MODEL: model = optarg; break;
        case OPT_PER_CLASS:
            ok = cv_parse_int(cmd, "--per-class", optarg, 1, 2147483647L, &per);
            have_per_class = true;
            break;
        case OPT_PER_ROW:
            ok = cv_parse_int(cmd, "--per-row", optarg, 1, 2147483647L, &per);
            have_per_row = true;
            break;
        case OPT_CLASSES: f.classes = optarg; break;
        case OPT_LABELS: f.labels_file = optarg; break;
        case OPT_CONDITIONS: f.conditions_file = optarg; break;
        case OPT_OUT: o.out = optarg; break;
        case OPT_FORMAT:
            picture = strcmp(optarg, "traversal") == 0 || strcmp(optarg, "interpolate") == 0;
            q.interpolate = strcmp(optarg, "interpolate") == 0;
            if (!picture && !parse_format(optarg, &o.format))
                return cv_usage_error(cmd, "--format must be idx, idx.gz, npy, png, grid, "
                                      "traversal or interpolate, got '%s'", optarg);
            break;
        case OPT_UNITS: ok = cv_parse_int(cmd, "--units", optarg, 1, 65536, &q.units); break;
        case OPT_STEPS: ok = cv_parse_int(cmd, "--steps", optarg, 2, 256, &q.steps); break;
        case OPT_IMAGES:
            ok = cv_parse_int_list(cmd, "--images", optarg, 0, 2147483647L, 2, q.images,
                                   &n_images);
            if (ok && n_images != 2)
                return cv_usage_error(cmd, "--images takes two test images, I,J");
            break;
        case OPT_DATA: q.data = optarg; data_flags = true; break;
        case OPT_MEAN: mean_flag = true; break;
        case OPT_SAMPLE: sample_flag = true; break;
        case OPT_SAME_Z: o.same_z = true; break;
        case OPT_SEED:
            ok = cv_parse_u64(cmd, "--seed", optarg, &o.seed);
            seed_or_batch = true;
            break;
        case OPT_BATCH:
            ok = cv_parse_int(cmd, "--batch", optarg, 1, 1 << 20, &o.batch);
            seed_or_batch = true;
            break;
        case OPT_DEVICE: ok = cv_parse_device(cmd, optarg); device = optarg; break;
        default: /* a data file flag, or a flag without a case */
            if (!cv_data_file_flag(cmd, c, optarg, &q.files, &ok))
                CV_ASSERT(!"a flag without a case");
            data_flags = true;
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model) return cv_usage_error(cmd, "--model CKPT is required");
    if (!o.out || !o.out[0]) return cv_usage_error(cmd, "--out is required");
    if (picture) {
        if (f.labels_file && f.conditions_file)
            return cv_usage_error(cmd, "--labels and --conditions exclude each other");
        if (mean_flag || sample_flag || o.same_z || seed_or_batch)
            return cv_usage_error(cmd, "--mean, --sample, --same-z, --seed and --batch apply "
                                  "to data sets and grids; pictures show decoded means, a "
                                  "row at a time");
        rc = check_picture_flags(&q, &f, have_per_class, have_per_row, data_flags);
        if (!rc) rc = cv_check_data_file_flags(cmd, &q.files);
        if (rc) return rc;
        if (q.images[1] < 0) q.images[1] = 1;
        if (!q.steps) q.steps = q.interpolate ? 10 : 9;
        o.format = CV_FMT_GRID; /* one PNG file, as a grid: its checks and output rules */
        return run(model, device, &o, &f, &q);
    }
    if (data_flags || q.steps || q.units || n_images)
        return cv_usage_error(cmd, "--units, --steps, --images, --data and the data file flags "
                              "apply to --format traversal or interpolate");
    if (mean_flag && sample_flag) return cv_usage_error(cmd, "--mean and --sample exclude each other");
    o.mean = !sample_flag;
    if (o.same_z && o.format != CV_FMT_GRID)
        return cv_usage_error(cmd, "--same-z applies to --format grid only");
    rc = check_condition_flags(&f, have_per_class, have_per_row, o.format);
    if (rc) return rc;
    const bool grid = o.format == CV_FMT_GRID;
    const size_t len = strlen(o.out);
    if (grid && (len < 5 || strcasecmp(o.out + len - 4, ".png") != 0))
        return cv_usage_error(cmd, "--format grid writes one PNG file: give --out a name that "
                              "ends in .png, as %s.png", o.out);
    o.per = have_per_class || have_per_row ? per : grid ? 10 : 1;
    if (grid && o.per > 1000) return cv_usage_error(cmd, "a grid holds at most 1000 columns");
    return run(model, device, &o, &f, NULL);
}
