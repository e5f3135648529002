/* cli_data.c: `cvae data`: what training would read from a data folder or files, without
 * training: the splits, the classes and their counts or the condition columns and their
 * ranges, the image size, the decoded cache and whether it is fresh, and a preview grid
 * of real images. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "data/image_set.h"
#include "data/png.h"
#include "util/interrupt.h"

static const char *help =
    "usage: cvae data DIR [data flags] [--preview FILE.png] [--build-cache]\n"
    "       cvae data --data DIR [data flags] [...]\n"
    "       cvae data --train-csv FILE [--test-csv FILE] [data flags] [...]\n"
    "\n"
    "Print what cvae train would read, with the same data flags: the images of each split,\n"
    "their size and channels, the classes and how many images each has (or each\n"
    "condition column's name, minimum, mean and maximum), and for PNG and JPEG images the\n"
    "cache file of each split and whether it is fresh. Nothing is decoded but the preview\n"
    "unless --build-cache asks.\n"
    "\n"
    "  DIR, --data DIR    data folder (or the file flags below)\n"
    "  --classes K        classes of label data, as cvae train --classes\n"
    "  --preview FILE     a PNG grid of training images: a row per class, 10 each (or the\n"
    "                     first 100 images, 10 a row, for condition vectors)\n"
    "  --build-cache      decode what is not cached yet, as the first training run would\n"
    "  -h, --help         this text\n";

enum { OPT_DATA = 256, OPT_CLASSES, OPT_PREVIEW, OPT_BUILD };

#define PREVIEW_COLS 10

/* What the report reads, from a decoded data set or from an image set not yet decoded. */
typedef struct {
    int n[2];                     /* training, test images */
    const uint8_t *labels[2];     /* or NULL */
    const float *conditions[2];   /* or NULL */
    cv_condition_kind condition;
    int cond_width;
    char *const *names;
    int h, w, channels;
    bool floats;                  /* float images */
} data_view;

static void print_classes(const data_view *v) {
    long long count[2][CV_MAX_CLASSES] = {{0}};
    for (int k = 0; k < 2; k++)
        for (int i = 0; v->labels[k] && i < v->n[k]; i++) count[k][v->labels[k][i]]++;
    printf("classes: %d\n", v->cond_width);
    for (int c = 0; c < v->cond_width; c++) {
        printf("  %3d  %-24s %8lld training", c, v->names ? v->names[c] : "", count[0][c]);
        if (v->n[1]) printf(" %8lld test", count[1][c]);
        printf("\n");
    }
}

static void print_columns(const data_view *v) {
    printf("conditions: %d column%s (training split)\n", v->cond_width, v->cond_width == 1 ? "" : "s");
    printf("  %-24s %12s %12s %12s\n", "column", "minimum", "mean", "maximum");
    for (int j = 0; j < v->cond_width; j++) {
        double lo = INFINITY, hi = -INFINITY, sum = 0;
        for (int i = 0; i < v->n[0]; i++) {
            const double x = v->conditions[0][(size_t)i * v->cond_width + j];
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
            sum += x;
        }
        char name[32];
        snprintf(name, sizeof name, "%d", j);
        printf("  %-24s %12.6g %12.6g %12.6g\n", v->names ? v->names[j] : name, lo,
               v->n[0] ? sum / v->n[0] : 0.0, hi);
    }
}

static void print_view(const char *source, const data_view *v) {
    printf("data: %s\n", source);
    printf("images: %d training, %d test; %dx%d, %d channel%s (%s)%s\n", v->n[0], v->n[1], v->h,
           v->w, v->channels, v->channels == 1 ? "" : "s",
           v->channels == 1 ? "grey" : v->channels == 3 ? "RGB" : "interleaved",
           v->floats ? ", float32 values" : "");
    if (v->condition == CV_COND_LABELS)
        print_classes(v);
    else
        print_columns(v);
}

/* The preview's tiles: for labels a row per class, its first PREVIEW_COLS images (grey
 * where a class has fewer); for vectors the first images, PREVIEW_COLS a row. tile(i)
 * fills one. */
typedef cv_status (*tile_fn)(void *ctx, int i, uint8_t *tile, cv_err *err);

static cv_status write_preview(const char *path, const data_view *v, tile_fn tile, void *ctx,
                               cv_err *err) {
    const bool labels = v->condition == CV_COND_LABELS;
    const int first = v->n[0] < PREVIEW_COLS * PREVIEW_COLS ? v->n[0] : PREVIEW_COLS * PREVIEW_COLS;
    const int rows = labels ? v->cond_width : (first + PREVIEW_COLS - 1) / PREVIEW_COLS;
    const size_t D = (size_t)v->h * v->w * v->channels;
    uint8_t *tiles = malloc((size_t)rows * PREVIEW_COLS * D);
    if (!tiles) return cv_fail(err, CV_ERR_NOMEM, "out of memory for the preview");
    memset(tiles, 128, (size_t)rows * PREVIEW_COLS * D);
    int used[CV_MAX_CLASSES] = {0};
    cv_status st = CV_OK;
    for (int i = 0; i < (labels ? v->n[0] : first) && !st; i++) {
        const int r = labels ? v->labels[0][i] : i / PREVIEW_COLS;
        const int c = labels ? used[r]++ : i % PREVIEW_COLS;
        if (r < rows && c < PREVIEW_COLS) st = tile(ctx, i, tiles + ((size_t)r * PREVIEW_COLS + c) * D, err);
    }
    if (!st) st = cv_png_write_grid(path, tiles, rows, PREVIEW_COLS, v->h, v->w, v->channels, 2, err);
    free(tiles);
    return st;
}

/* ---------- image files, not yet decoded ---------- */

typedef struct {
    const cv_image_set *set;
    cv_image_scratch scratch;
} set_tiles;

static cv_status set_tile(void *ctx, int i, uint8_t *tile, cv_err *err) {
    set_tiles *t = ctx;
    const char *path = t->set->train.paths[i];
    size_t len;
    cv_status st = cv_image_read_file(path, &t->scratch, &len, err);
    return st ? st : cv_image_decode(path, t->scratch.file, len, &t->set->target, &t->scratch, tile, err);
}

static const char *cache_state(cv_cache_state s) {
    return s == CV_CACHE_FRESH ? "fresh" : s == CV_CACHE_STALE ? "stale: the files changed, the "
           "next run decodes them again" : "missing: the first run decodes the images";
}

/* A fresh entry is mapped and its shape checked, as training would: a corrupt one is
 * refused here too, not called fresh. */
static cv_status check_fresh(const cv_image_set *s, cv_err *err) {
    for (int k = 0; k < 2; k++) {
        const int n = k ? s->test.n : s->train.n;
        if (n == 0 || s->cache[k].state != CV_CACHE_FRESH) continue;
        cv_split split;
        cv_status st = cv_cache_map(&s->cache[k], &s->target, n, &split, err);
        if (st) return st;
        cv_split_free(&split);
    }
    return CV_OK;
}

static int report_image_set(const char *dir, const cv_data_files *f, int n_classes,
                            const char *preview, bool build) {
    cv_image_set s;
    cv_err err;
    cv_status st = cv_image_set_open(dir, f, n_classes, &s, &err);
    if (st) return cv_report("data", st, &err);
    char source[2 * CV_PATH_MAX + 128];
    snprintf(source, sizeof source, "%s%s%s", s.train_from, s.test.n ? "; test: " : "", s.test_from);
    const data_view v = {{s.train.n, s.test.n}, {s.train.labels, s.test.labels},
                         {s.train.conditions, s.test.conditions}, s.condition, s.cond_width,
                         s.names.names, s.target.height, s.target.width, s.target.channels, false};
    print_view(source, &v);
    printf("size: %s%s\n", s.target.resize ? "resized to --image-size" : "the first image's, ",
           s.target.resize ? (s.target.crop_center ? ", centre-cropped" : "") : s.first);
    if (preview && s.train.n) {
        set_tiles t = {&s, {0}};
        st = write_preview(preview, &v, set_tile, &t, &err);
        cv_image_scratch_free(&t.scratch);
        if (!st) printf("preview: %s\n", preview);
    }
    cv_data d = {0};
    if (!st && build) st = cv_image_set_load(&s, &f->image, &d, &err);
    else if (!st) st = check_fresh(&s, &err);
    for (int k = 0; !st && k < 2; k++)
        if ((k ? s.test.n : s.train.n) > 0)
            printf("cache (%s): %s (%s)\n", k ? "test" : "training", s.cache[k].npy,
                   cache_state(s.cache[k].state));
    cv_data_free(&d);
    cv_image_set_free(&s);
    return st ? cv_report("data", st, &err) : 0;
}

/* ---------- IDX and .npy files, mapped ---------- */

static cv_status split_tile(void *ctx, int i, uint8_t *tile, cv_err *err) {
    (void)err;
    const cv_split *s = ctx;
    const size_t D = (size_t)cv_split_dim(s);
    for (size_t j = 0; j < D; j++)
        tile[j] = s->pixels ? s->pixels[i * D + j]
                            : (uint8_t)floorf(255.0f * s->fpixels[i * D + j] + 0.5f);
    return CV_OK;
}

static int report_arrays(const char *dir, const cv_data_files *f, int n_classes,
                         const char *preview) {
    cv_data d;
    cv_err err;
    cv_status st = cv_data_load_files(dir, f, n_classes, &d, &err);
    if (st) return cv_report("data", st, &err);
    const data_view v = {{d.train.n, d.test.n}, {d.train.labels, d.test.labels},
                         {d.train.conditions, d.test.conditions}, d.condition, d.cond_width,
                         d.names, d.train.h, d.train.w, d.train.channels, d.train.fpixels != NULL};
    print_view(dir ? dir : f->train_images, &v);
    if (preview && v.channels > CV_PNG_MAX_CHANNELS)
        st = cv_fail(&err, CV_ERR_USAGE, "images of %d channels do not fit a PNG preview",
                     v.channels);
    else if (preview)
        st = write_preview(preview, &v, split_tile, &d.train, &err);
    if (!st && preview) printf("preview: %s\n", preview);
    cv_data_free(&d);
    return st ? cv_report("data", st, &err) : 0;
}

int cv_cmd_data(int argc, char **argv) {
    static const struct option opts[] = {
        {"data", required_argument, 0, OPT_DATA},
        {"classes", required_argument, 0, OPT_CLASSES},
        {"preview", required_argument, 0, OPT_PREVIEW},
        {"build-cache", no_argument, 0, OPT_BUILD},
        CV_DATA_FILE_OPTIONS,
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "data", *dir = NULL, *preview = NULL;
    cv_data_files f = {0};
    int n_classes = 0, c, rc = 0;
    bool build = false;
    if (argc > 1 && argv[1][0] != '-') { /* cvae data DIR [flags]: the flags follow DIR */
        dir = argv[1];
        argc--;
        argv++;
    }
    opterr = 0;
    optind = 1;
    while ((c = cv_next_flag(cmd, argc, argv, opts, &rc)) > 0) {
        bool ok = true;
        switch (c) {
        case 'h':
            return cv_print_help_with_data_flags(help);
        case OPT_DATA:
            if (dir) return cv_usage_error(cmd, "the data folder is given twice ('%s', then "
                                           "--data '%s')", dir, optarg);
            dir = optarg;
            break;
        case OPT_CLASSES: ok = cv_parse_int(cmd, "--classes", optarg, 1, 256, &n_classes); break;
        case OPT_PREVIEW: preview = optarg; break;
        case OPT_BUILD: build = true; break;
        default:
            if (!cv_data_file_flag(cmd, c, optarg, &f, &ok)) CV_ASSERT(!"a flag without a case");
        }
        if (!ok) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!dir && !f.train_images && !f.train_table)
        return cv_usage_error(cmd, "--data DIR (or --train-images FILE, or --train-csv FILE) is "
                              "required");
    if ((rc = cv_check_data_file_flags(cmd, &f))) return rc;
    if (preview && !preview[0]) return cv_usage_error(cmd, "--preview must not be empty");
    const bool images = cv_data_has_image_files(dir, &f);
    if (build && !images)
        return cv_usage_error(cmd, "--build-cache decodes PNG and JPEG images; IDX and .npy "
                              "files are mapped as they are");
    f.image.progress = isatty(STDERR_FILENO);
    f.image.log = stdout;
    cv_interrupt_guard guard; /* Ctrl-C stops the decoding, which then writes nothing */
    cv_interrupt_install(&guard);
    rc = images ? report_image_set(dir, &f, n_classes, preview, build)
                : report_arrays(dir, &f, n_classes, preview);
    if (cv_interrupt_pending()) rc = 128 + cv_interrupt_pending();
    cv_interrupt_restore(&guard);
    return rc;
}
