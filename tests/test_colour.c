/* test_colour.c: the pixel layout of generated pictures for every PNG channel count. A
 * small model is trained here on (N, H, W, C) images (H != W, so a swapped axis shows),
 * then generate writes the same images as images.npy, as a png data set and as a grid;
 * each PNG, read back through libpng's png_image API, must hold images.npy's pixels:
 * grey (from a labels file) for C = 1, grey + alpha for C = 2, RGB for C = 3 (with
 * condition vectors: <index>.png), RGBA for C = 4. Images of C = 5 train without
 * pictures, and generate refuses png and grid. */
#include <criterion/criterion.h>
#include <png.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/npy.h"
#include "helpers.h"

#define H 5
#define W 4
#define N 48
#define CLASSES 3
#define GAP 2 /* the grid's border, as cv_generate_grid draws it */

static char *dir;

static void setup(void) { dir = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(colour, .init = setup, .fini = teardown, .timeout = 120);

/* DIR/train_images.npy of N images H x W x c, each channel's level set by the image's
 * condition, and DIR/train_labels.npy (k 0: CLASSES classes) or train_conditions.npy
 * (k columns in [-1, 1]). */
static void write_data(const char *data, int c, int k) {
    test_rng r = test_rng_new("colour data");
    uint8_t *px = malloc((size_t)N * H * W * c), labels[N];
    float cond[N * 3];
    test_fill(&r, cond, (size_t)N * 3, -1, 1);
    for (int i = 0; i < N; i++) {
        labels[i] = (uint8_t)(i % CLASSES);
        for (int j = 0; j < H * W * c; j++) {
            double level = k ? 0.5 + 0.4 * cond[i * 3 + j % c % k] : 0.2 + 0.3 * labels[i];
            px[(size_t)i * H * W * c + j] = (uint8_t)(255 * (level + test_uniform(&r, -0.1, 0.1)));
        }
    }
    mkdir(data, 0777);
    test_write_npy(test_path_in(data, "train_images.npy"), CV_NPY_U8, 4,
                   (const int64_t[4]){N, H, W, c}, px);
    if (k)
        test_write_npy(test_path_in(data, "train_conditions.npy"), CV_NPY_F32, 2,
                       (const int64_t[2]){N, k}, cond);
    else
        test_write_npy(test_path_in(data, "train_labels.npy"), CV_NPY_U8, 1,
                       (const int64_t[1]){N}, labels);
    free(px);
}

/* Runs cvae, asserts exit `rc`, returns stdout and stderr together (malloc'd). */
static char *expect_exit(int rc, const char *const *args) {
    char *o, *e;
    int got = test_run_cvae(&o, &e, args);
    cr_assert_eq(got, rc, "cvae %s exited %d, expected %d: %s%s", args[0], got, rc, o, e);
    char *both = malloc(strlen(o) + strlen(e) + 1);
    strcpy(stpcpy(both, o), e);
    free(o);
    free(e);
    return both;
}

/* Trains on the data of c channels (k condition columns, or labels) into RUN; returns
 * training's output. */
static char *train(int c, int k, char run[4200]) {
    char data[4200];
    snprintf(data, 4200, "%s/data%d", dir, c);
    snprintf(run, 4200, "%s/run%d", dir, c);
    write_data(data, c, k);
    return expect_exit(0, (const char *[]){"train", "--data", data, "--epochs", "1", "--hidden",
                                           "16", "--latent", "2", "--batch", "16", "--device",
                                           "cpu", "--out", run, NULL});
}

/* png_image's 8-bit format of c interleaved channels. */
static png_uint_32 format_of(int c) {
    static const png_uint_32 formats[4] = {PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB,
                                           PNG_FORMAT_RGBA};
    return formats[c - 1];
}

/* A PNG's pixels (height x width x c, malloc'd), read in the format of c channels, which
 * must be the file's own. */
static uint8_t *read_png(const char *path, int c, int width, int height) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path), "%s: %s", path, img.message);
    cr_assert(img.width == (png_uint_32)width && img.height == (png_uint_32)height,
              "%s is %ux%u, expected %dx%d", path, img.width, img.height, width, height);
    cr_assert_eq(img.format, format_of(c), "%s holds format %#x, not that of %d channels", path,
                 img.format, c);
    uint8_t *px = malloc(PNG_IMAGE_SIZE(img));
    cr_assert(png_image_finish_read(&img, NULL, px, 0, NULL), "%s: %s", path, img.message);
    return px;
}

/* The images.npy of the set generated in OUT: n images H x W x c (no channel axis for
 * grey). */
static cv_npy_array generated(const char *out, int c, long long n) {
    cv_npy_array a;
    cv_err err;
    cr_assert_eq(cv_npy_read(test_path_in(out, "images.npy"), &a, &err), CV_OK, "%s", err.msg);
    cr_assert(a.ndims == (c > 1 ? 4 : 3) && a.dims[0] == n && a.dims[1] == H &&
              a.dims[2] == W && (c == 1 || a.dims[3] == c), "images.npy has the wrong shape");
    return a;
}

/* Each PNG of a png data set holds its image of images.npy exactly: the same decoding.
 * names[i] is image i's file. */
static void expect_pngs(const char *out, const uint8_t *images, int c, int n,
                        char names[][32]) {
    const size_t d = (size_t)H * W * c;
    for (int i = 0; i < n; i++) {
        uint8_t *px = read_png(test_path_in(out, names[i]), c, W, H);
        cr_assert(memcmp(px, images + i * d, d) == 0, "%s differs from image %d of images.npy",
                  names[i], i);
        free(px);
    }
}

/* Tile (a, k) of a grid of R rows and `cols` columns is image k R + a of the order, on a
 * mid-grey (opaque) border. The grid decodes R rows at a time and the data set blocks of
 * 256, so the GEMMs differ in shape and may round apart: a --mean pixel round(255 p) may
 * then be 1 off (generate.h); a channel or axis out of place is off by far more. */
static void expect_grid(const char *grid, const uint8_t *images, int c, int R, int cols) {
    const int gw = cols * W + (cols + 1) * GAP, gh = R * H + (R + 1) * GAP;
    uint8_t *px = read_png(grid, c, gw, gh);
    for (int ch = 0; ch < c; ch++)
        cr_assert_eq(px[ch], c % 2 == 0 && ch == c - 1 ? 255 : 128, "border channel %d", ch);
    int off_by_one = 0;
    for (int a = 0; a < R; a++)
        for (int k = 0; k < cols; k++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    for (int ch = 0; ch < c; ch++) {
                        const size_t at = ((size_t)(GAP + a * (H + GAP) + y) * gw +
                                           (size_t)(GAP + k * (W + GAP) + x)) * c + ch;
                        const int want = images[((((size_t)k * R + a) * H + y) * W + x) * c + ch];
                        cr_assert(abs(px[at] - want) <= 1, "grid tile (%d, %d) pixel (%d, %d) "
                                  "channel %d is %d, image %d has %d", a, k, y, x, ch, px[at],
                                  k * R + a, want);
                        off_by_one += px[at] != want;
                    }
    cr_log_info("grid of %d channels: %d values 1 off", c, off_by_one);
    free(px);
}

/* The same images generated three ways: DIR/npy, DIR/png and DIR/grid.png, each by cvae
 * generate --model ckpt with the condition flags `which` (NULL-terminated). */
typedef struct {
    char npy[4200], png[4200], grid[4200];
} outputs;

static void generate_all(outputs *o, const char *ckpt, const char *const *which) {
    snprintf(o->npy, sizeof o->npy, "%s/npy", dir);
    snprintf(o->png, sizeof o->png, "%s/png", dir);
    snprintf(o->grid, sizeof o->grid, "%s/grid.png", dir);
    const char *formats[3][2] = {{"npy", o->npy}, {"png", o->png}, {"grid", o->grid}};
    for (int f = 0; f < 3; f++) {
        const char *args[16] = {"generate", "--model", ckpt};
        int n = 3;
        for (int i = 0; which[i]; i++) args[n++] = which[i];
        const char *tail[] = {"--out", formats[f][1], "--format", formats[f][0], "--device",
                              "cpu"};
        for (int i = 0; i < 6; i++) args[n++] = tail[i];
        args[n] = NULL;
        free(expect_exit(0, args));
    }
}

/* A model of class labels on c channels: the png data set (<class>/<index>.png, the index
 * within its class) and the grid against images.npy. */
static void labels_round_trip(int c) {
    char run[4200];
    free(train(c, 0, run));
    outputs o;
    generate_all(&o, test_path_in(run, "model.ckpt"), (const char *[]){"--per-class", "4", NULL});
    cv_npy_array a = generated(o.npy, c, 4 * CLASSES);
    char names[4 * CLASSES][32];
    for (int i = 0; i < 4 * CLASSES; i++)
        snprintf(names[i], 32, "%d/%d.png", i % CLASSES, i / CLASSES);
    expect_pngs(o.png, a.data, c, 4 * CLASSES, names);
    expect_grid(o.grid, a.data, c, CLASSES, 4);
    cv_npy_free(&a);
}

Test(colour, grey_and_alpha_pngs_hold_the_generated_pixels) { labels_round_trip(2); }
Test(colour, rgba_pngs_hold_the_generated_pixels) { labels_round_trip(4); }

/* RGB with condition vectors: <index>.png, and a grid of a row per condition row. */
Test(colour, rgb_pngs_of_condition_vectors_hold_the_generated_pixels) {
    char run[4200];
    free(train(3, 3, run));
    float rows[5 * 3];
    test_rng r = test_rng_new("colour rows");
    test_fill(&r, rows, 5 * 3, -1, 1);
    const char *cond = test_path_in(dir, "rows.npy");
    test_write_npy(cond, CV_NPY_F32, 2, (const int64_t[2]){5, 3}, rows);
    outputs o;
    generate_all(&o, test_path_in(run, "model.ckpt"),
                 (const char *[]){"--conditions", cond, "--per-row", "3", NULL});
    cv_npy_array a = generated(o.npy, 3, 15);
    char names[15][32];
    for (int i = 0; i < 15; i++) snprintf(names[i], 32, "%d.png", i);
    expect_pngs(o.png, a.data, 3, 15, names);
    expect_grid(o.grid, a.data, 3, 5, 3);
    cv_npy_free(&a);
}

/* A labels file with png and grid, on grey images: image i has row i % R, its PNG is
 * <class>/<i>.png (the image's own index: a class may stand in several rows), and the grid
 * a row per label row. */
Test(colour, labels_files_name_pngs_by_class_and_image_and_draw_a_row_each) {
    char run[4200];
    free(train(1, 0, run));
    const uint8_t order[4] = {2, 0, 2, 1};
    const char *labels = test_path_in(dir, "order.npy");
    test_write_npy(labels, CV_NPY_U8, 1, (const int64_t[1]){4}, order);
    outputs o;
    generate_all(&o, test_path_in(run, "model.ckpt"),
                 (const char *[]){"--labels", labels, "--per-row", "2", NULL});
    cv_npy_array a = generated(o.npy, 1, 8);
    char names[8][32];
    for (int i = 0; i < 8; i++) snprintf(names[i], 32, "%d/%d.png", order[i % 4], i);
    expect_pngs(o.png, a.data, 1, 8, names);
    expect_grid(o.grid, a.data, 1, 4, 2);
    cv_npy_free(&a);
}

/* Five channels fit no PNG: training says so and draws no pictures, generate refuses png
 * and grid with one line and exit 2 and writes nothing, and npy holds the five. */
Test(colour, five_channels_train_without_pictures_and_refuse_png_output) {
    char run[4200], npy[4200];
    char *log = train(5, 0, run);
    cr_assert(strstr(log, "pictures: none (a PNG holds 1 to 4 channels, the images have 5)"),
              "%s", log);
    free(log);
    struct stat sb;
    cr_assert(stat(test_path_in(run, "samples.png"), &sb) != 0, "samples.png of 5 channels");
    cr_assert(stat(test_path_in(run, "reconstructions.png"), &sb) != 0);
    const char *ckpt = test_path_in(run, "model.ckpt");
    const char *formats[2][2] = {{"png", "png"}, {"grid", "grid.png"}};
    for (int f = 0; f < 2; f++) {
        const char *out = test_path_in(dir, formats[f][1]);
        char *e = expect_exit(2, (const char *[]){"generate", "--model", ckpt, "--per-class",
                                                  "2", "--out", out, "--format", formats[f][0],
                                                  "--device", "cpu", NULL});
        cr_assert(strstr(e, "images of 5 channels do not fit a PNG (1 to 4)"), "%s", e);
        cr_assert_eq(test_count_lines(e), 1, "%s", e);
        cr_assert(stat(out, &sb) != 0, "a refused generate wrote %s", out);
        free(e);
    }
    snprintf(npy, sizeof npy, "%s/npy", dir);
    free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--per-class", "2",
                                         "--out", npy, "--format", "npy", "--device", "cpu",
                                         NULL}));
    cv_npy_array a = generated(npy, 5, 2 * CLASSES);
    cv_npy_free(&a);
}
