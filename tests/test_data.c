/* test_data.c: data folders and explicitly named files of every kind the loader reads:
 * IDX and NumPy images (bytes or floats, grey or colour), class labels or condition
 * vectors, the folder layouts, the file flags over them, and each cross-file check. The
 * files are written here (.npy through cv_npy_write, which test_npy.c checks against
 * NumPy itself). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/data.h"
#include "cvae/npy.h"
#include "helpers.h"

static char *dir;

static void setup(void) { dir = test_tmpdir(); }
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(data, .init = setup, .fini = teardown);

static char *path_of(const char *name) {
    static char paths[8][4200];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

static void write_npy(const char *name, cv_npy_dtype t, int ndims, const int64_t *dims,
                      const void *data) {
    cv_err err;
    cr_assert_eq(cv_npy_write(path_of(name), t, ndims, dims, data, &err), CV_OK, "%s", err.msg);
}

/* n byte images h x w x c (c 0: 3-d, no channel axis) with pixel i = (seed + 7 i) % 256. */
static uint8_t *byte_images(const char *name, int n, int h, int w, int c, int seed) {
    const int cc = c ? c : 1;
    size_t count = (size_t)n * h * w * cc;
    uint8_t *px = malloc(count);
    for (size_t i = 0; i < count; i++) px[i] = (uint8_t)((size_t)seed + 7 * i);
    const int64_t dims[4] = {n, h, w, cc};
    write_npy(name, CV_NPY_U8, c ? 4 : 3, dims, px);
    return px;
}

/* n float images h x w x c with fresh values in [0, 1]. */
static float *float_images(const char *name, test_rng *r, int n, int h, int w, int c) {
    size_t count = (size_t)n * h * w * c;
    float *px = malloc(count * sizeof(float));
    test_fill(r, px, count, 0, 1);
    px[0] = 0.0f; /* both ends of the range are values too */
    px[count - 1] = 1.0f;
    const int64_t dims[4] = {n, h, w, c};
    write_npy(name, CV_NPY_F32, 4, dims, px);
    return px;
}

/* n condition rows of width k, fresh values in [-3, 3]. */
static float *conditions(const char *name, test_rng *r, int n, int k) {
    float *c = malloc((size_t)n * k * sizeof(float));
    test_fill(r, c, (size_t)n * k, -3, 3);
    const int64_t dims[2] = {n, k};
    write_npy(name, CV_NPY_F32, 2, dims, c);
    return c;
}

static void int64_labels(const char *name, const int64_t *labels, int n) {
    const int64_t dims[1] = {n};
    write_npy(name, CV_NPY_I64, 1, dims, labels);
}

static void expect_load_fails(const cv_data_files *f, int n_classes, cv_status status,
                              const char *needle) {
    cv_data d;
    cv_err err = {{0}};
    cv_status st = cv_data_load_files(dir, f, n_classes, &d, &err);
    cr_assert_eq(st, status, "status %d, expected %d: %s", st, status, err.msg);
    cr_assert(strstr(err.msg, needle) != NULL, "expected '%s' in: %s", needle, err.msg);
    cr_assert(strchr(err.msg, '\n') == NULL, "more than one line: %s", err.msg);
}

static void load(const char *folder, const cv_data_files *f, int n_classes, cv_data *d) {
    cv_err err;
    cr_assert_eq(cv_data_load_files(folder, f, n_classes, d, &err), CV_OK, "%s", err.msg);
}

Test(data, a_numpy_folder_of_byte_images_and_integer_labels) {
    uint8_t *tr = byte_images("train_images.npy", 9, 4, 5, 0, 1);
    uint8_t *te = byte_images("test_images.npy", 3, 4, 5, 0, 2);
    const int64_t tl[9] = {0, 1, 2, 3, 4, 5, 6, 7, 200}, vl[3] = {200, 0, 7};
    int64_labels("train_labels.npy", tl, 9);
    int64_labels("test_labels.npy", vl, 3);
    cv_data d;
    load(dir, NULL, 0, &d);
    cr_assert_eq(d.condition, CV_COND_LABELS);
    cr_assert_eq(d.cond_width, 201, "classes from the largest label");
    cr_assert(d.train.n == 9 && d.train.h == 4 && d.train.w == 5 && d.train.channels == 1);
    cr_assert(d.test.n == 3 && d.test.channels == 1);
    cr_assert(memcmp(d.train.pixels, tr, 9 * 20) == 0 && memcmp(d.test.pixels, te, 3 * 20) == 0);
    cr_assert_null(d.train.fpixels);
    for (int i = 0; i < 9; i++) cr_assert_eq(d.train.labels[i], tl[i]);
    for (int i = 0; i < 3; i++) cr_assert_eq(d.test.labels[i], vl[i]);
    cr_assert_eq(cv_split_dim(&d.train), 20);
    cv_data_free(&d);
    free(tr);
    free(te);
}

Test(data, a_numpy_folder_of_float_colour_images_and_condition_vectors) {
    test_rng r = test_rng_new("data float colour");
    float *tr = float_images("train_images.npy", &r, 7, 3, 2, 3);
    float *te = float_images("test_images.npy", &r, 4, 3, 2, 3);
    float *tc = conditions("train_conditions.npy", &r, 7, 5);
    float *vc = conditions("test_conditions.npy", &r, 4, 5);
    cv_data d;
    load(dir, NULL, 0, &d);
    cr_assert_eq(d.condition, CV_COND_VECTORS);
    cr_assert_eq(d.cond_width, 5);
    cr_assert(d.train.n == 7 && d.train.h == 3 && d.train.w == 2 && d.train.channels == 3);
    cr_assert_eq(cv_split_dim(&d.train), 18);
    cr_assert_null(d.train.pixels);
    cr_assert_null(d.train.labels);
    cr_assert(memcmp(d.train.fpixels, tr, 7 * 18 * 4) == 0);
    cr_assert(memcmp(d.test.fpixels, te, 4 * 18 * 4) == 0);
    cr_assert(memcmp(d.train.conditions, tc, 7 * 5 * 4) == 0);
    cr_assert(memcmp(d.test.conditions, vc, 4 * 5 * 4) == 0);
    cr_assert(d.train.cond_width == 5 && d.test.cond_width == 5);
    cv_data_free(&d);
    free(tr);
    free(te);
    free(tc);
    free(vc);
}

Test(data, four_dimensional_idx_images_are_colour) {
    const int dims[4] = {6, 2, 3, 4};
    uint8_t px[6 * 24], lab[6] = {0, 1, 0, 1, 0, 1};
    for (int i = 0; i < 6 * 24; i++) px[i] = (uint8_t)(i * 5);
    cv_err err;
    cr_assert_eq(cv_idx_write(path_of("train-images-idx3-ubyte"), 4, dims, px, true, &err), CV_OK);
    const int ldims[1] = {6};
    cr_assert_eq(cv_idx_write(path_of("train-labels-idx1-ubyte"), 1, ldims, lab, false, &err),
                 CV_OK);
    cv_data d;
    load(dir, NULL, 0, &d);
    cr_assert(d.train.n == 6 && d.train.h == 2 && d.train.w == 3 && d.train.channels == 4);
    cr_assert(memcmp(d.train.pixels, px, sizeof px) == 0);
    cr_assert_eq(d.cond_width, 2);
    cv_data_free(&d);
}

Test(data, a_folder_cvae_generate_wrote_is_a_training_split) {
    test_rng r = test_rng_new("data generated folder");
    uint8_t *px = byte_images("images.npy", 5, 2, 2, 3, 9);
    float *c = conditions("conditions.npy", &r, 5, 2);
    cv_data d;
    load(dir, NULL, 0, &d);
    cr_assert(d.train.n == 5 && d.train.channels == 3 && d.test.n == 0);
    cr_assert(d.condition == CV_COND_VECTORS && d.cond_width == 2);
    cr_assert(memcmp(d.train.conditions, c, 5 * 2 * 4) == 0);
    cv_data_free(&d);
    free(px);
    free(c);
}

Test(data, file_flags_override_the_folder_and_the_format_comes_from_the_content) {
    test_rng r = test_rng_new("data flags");
    test_write_dataset(dir, 12, 4, 3, 3, 2, false, r.s);
    /* an .npy under an IDX-like name, an IDX file under a .npy name */
    float *c = conditions("conds.idx", &r, 12, 3);
    float *tc = conditions("test-conds", &r, 4, 3);
    cv_data_files f = {.train_conditions = path_of("conds.idx"),
                       .test_conditions = path_of("test-conds")};
    cv_data d;
    load(dir, &f, 0, &d);
    cr_assert(d.condition == CV_COND_VECTORS && d.cond_width == 3 && d.test.n == 4);
    cr_assert(memcmp(d.train.conditions, c, 12 * 3 * 4) == 0);
    cr_assert_null(d.train.labels, "the folder's labels were read although a flag overrides them");
    cv_data_free(&d);
    char from[4200], to[4200];
    snprintf(from, sizeof from, "%s", path_of("train-images-idx3-ubyte"));
    snprintf(to, sizeof to, "%s", path_of("elsewhere.npy"));
    cr_assert_eq(rename(from, to), 0);
    cv_data_files g = {.train_images = to, .train_labels = path_of("train-labels-idx1-ubyte")};
    load(NULL, &g, 0, &d);
    cr_assert(d.train.n == 12 && d.train.h == 3 && d.test.n == 0, "IDX under a .npy name");
    cv_data_free(&d);
    free(c);
    free(tc);
}

Test(data, two_candidates_for_one_file_are_an_error_naming_both) {
    test_rng r = test_rng_new("data ambiguous");
    test_write_dataset(dir, 6, 0, 2, 2, 2, false, r.s);
    uint8_t *px = byte_images("train_images.npy", 6, 2, 2, 0, 3);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "holds both");
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "train_images.npy");
    free(px);
    remove(path_of("train_images.npy"));
    float *c = conditions("train_conditions.npy", &r, 6, 2);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "--train-labels or --train-conditions");
    /* naming one resolves it */
    cv_data_files f = {.train_labels = path_of("train-labels-idx1-ubyte")};
    cv_data d;
    load(dir, &f, 0, &d);
    cr_assert_eq(d.condition, CV_COND_LABELS);
    cv_data_free(&d);
    free(c);
}

Test(data, float_images_outside_0_1_are_refused) {
    test_rng r = test_rng_new("data float range");
    float *px = float_images("train_images.npy", &r, 3, 2, 2, 1);
    px[5] = 1.5f;
    const int64_t dims[3] = {3, 2, 2};
    write_npy("train_images.npy", CV_NPY_F32, 3, dims, px);
    const int64_t lab[3] = {0, 1, 0};
    int64_labels("train_labels.npy", lab, 3);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "value 1.5 at element 5 is not in [0, 1]");
    px[5] = NAN;
    write_npy("train_images.npy", CV_NPY_F32, 3, dims, px);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "at element 5 is not in [0, 1]");
    free(px);
}

Test(data, condition_vectors_must_be_finite_float32_of_two_dimensions) {
    test_rng r = test_rng_new("data condition values");
    uint8_t *px = byte_images("train_images.npy", 4, 2, 2, 0, 1);
    float *c = conditions("train_conditions.npy", &r, 4, 3);
    c[7] = INFINITY;
    const int64_t dims[2] = {4, 3};
    write_npy("train_conditions.npy", CV_NPY_F32, 2, dims, c);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "row 2 holds a NaN or Inf (column 1)");
    const int64_t flat[1] = {12};
    write_npy("train_conditions.npy", CV_NPY_F32, 1, flat, c);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "expected shape (N, K)");
    const int64_t ints[8] = {0};
    write_npy("train_conditions.npy", CV_NPY_I64, 2, (const int64_t[2]){4, 2}, ints);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "expected float32");
    free(px);
    free(c);
}

Test(data, labels_must_be_integers_0_to_255_of_one_dimension) {
    uint8_t *px = byte_images("train_images.npy", 3, 2, 2, 0, 1);
    int64_labels("train_labels.npy", (const int64_t[3]){0, 256, 1}, 3);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "label at index 1 is out of range 0..255");
    int64_labels("train_labels.npy", (const int64_t[3]){0, -1, 1}, 3);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "label at index 1 is out of range");
    const float f[3] = {0, 1, 2};
    write_npy("train_labels.npy", CV_NPY_F32, 1, (const int64_t[1]){3}, f);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "expected integer class indices");
    const int64_t two[6] = {0};
    write_npy("train_labels.npy", CV_NPY_I64, 2, (const int64_t[2]){3, 2}, two);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "expected shape (N,)");
    free(px);
}

Test(data, counts_widths_and_shapes_are_checked_across_files) {
    test_rng r = test_rng_new("data cross checks");
    uint8_t *px = byte_images("train_images.npy", 5, 2, 3, 0, 1);
    float *c = conditions("train_conditions.npy", &r, 4, 2);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "holds 4 condition rows but");
    free(c);
    c = conditions("train_conditions.npy", &r, 5, 2);
    uint8_t *tp = byte_images("test_images.npy", 2, 2, 3, 0, 1);
    float *tc = conditions("test_conditions.npy", &r, 2, 3);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "condition rows have width 3 but the training");
    free(tc);
    tc = conditions("test_conditions.npy", &r, 2, 2);
    free(tp);
    tp = byte_images("test_images.npy", 2, 2, 3, 2, 1);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "are 2x3x2 but training images are 2x3x1");
    free(tp);
    tp = byte_images("test_images.npy", 2, 2, 3, 0, 1);
    remove(path_of("test_conditions.npy"));
    int64_labels("test_labels.npy", (const int64_t[2]){0, 1}, 2);
    expect_load_fails(NULL, 0, CV_ERR_IO, "the test split holds the other kind of condition");
    cv_data_files wrong = {.test_labels = path_of("test_labels.npy")};
    expect_load_fails(&wrong, 0, CV_ERR_USAGE, "needs condition vectors too");
    expect_load_fails(NULL, 3, CV_ERR_USAGE, "--classes is for class labels");
    free(px);
    free(c);
    free(tc);
    free(tp);
}

Test(data, missing_and_conflicting_files_are_named) {
    cv_data_files none = {.train_images = path_of("absent.npy"),
                          .train_labels = path_of("labels.npy")};
    expect_load_fails(&none, 0, CV_ERR_IO, "absent.npy: no such file (the training images)");
    uint8_t *px = byte_images("train_images.npy", 3, 2, 2, 0, 1);
    expect_load_fails(NULL, 0, CV_ERR_IO, "no training labels or conditions beside them");
    cv_data_files both = {.train_labels = path_of("a"), .train_conditions = path_of("b")};
    expect_load_fails(&both, 0, CV_ERR_USAGE, "both given");
    cv_data d;
    cv_err err;
    cr_assert_eq(cv_data_load_files(NULL, &(cv_data_files){0}, 0, &d, &err), CV_ERR_USAGE);
    cr_assert(strstr(err.msg, "--train-images") != NULL, "%s", err.msg);
    cr_assert_eq(cv_data_load_files(path_of("train_images.npy"), NULL, 0, &d, &err), CV_ERR_IO);
    cr_assert(strstr(err.msg, "is not a folder") != NULL, "%s", err.msg);
    free(px);
}

Test(data, binarizing_float_images_draws_zeros_and_ones) {
    test_rng r = test_rng_new("data binarize floats");
    float *px = float_images("train_images.npy", &r, 40, 5, 5, 1);
    float *c = conditions("train_conditions.npy", &r, 40, 2);
    cv_data d;
    load(dir, NULL, 0, &d);
    cv_split_binarize(&d.train);
    double ones = 0, expect = 0;
    for (int i = 0; i < 40 * 25; i++) {
        cr_assert(d.train.fpixels[i] == 0.0f || d.train.fpixels[i] == 1.0f);
        ones += d.train.fpixels[i];
        expect += px[i];
    }
    cr_assert(fabs(ones - expect) < 6 * sqrt(1000 / 4.0), "%g ones, expected %g", ones, expect);
    cv_data_free(&d);
    free(px);
    free(c);
}

/* Images are at most 65535 on each side (channels included) and 2^24 values each; each
 * refusal names the whole H x W x C shape, for .npy and 4-dimensional IDX alike. */
Test(data, image_sides_and_sizes_are_bounded) {
    int64_labels("train_labels.npy", (const int64_t[1]){0}, 1);
    uint8_t *px = byte_images("train_images.npy", 1, 1, 1, 65536, 0);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "images of 1x1x65536 are over 65535 per side");
    free(px);
    px = byte_images("train_images.npy", 1, 65536, 1, 0, 0);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "images of 65536x1x1 are over 65535 per side");
    free(px);
    /* 4097 x 4096: 2^24 + 4096 values */
    px = byte_images("train_images.npy", 1, 4097, 4096, 0, 0);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "images of 4097x4096x1 are over the 16777216 "
                      "values supported");
    free(px);
    px = byte_images("train_images.npy", 1, 4096, 4096, 0, 0);
    cv_data d;
    load(dir, NULL, 0, &d);
    cr_assert_eq(cv_split_dim(&d.train), 1 << 24, "2^24 values are within the bound");
    cv_data_free(&d);
    free(px);
    remove(path_of("train_images.npy"));
    uint8_t wide[1 * 2 * 70000];
    memset(wide, 7, sizeof wide);
    cv_err err;
    cr_assert_eq(cv_idx_write(path_of("train-images-idx3-ubyte"), 4, (const int[4]){1, 2, 1, 70000},
                              wide, false, &err), CV_OK, "%s", err.msg);
    expect_load_fails(NULL, 0, CV_ERR_FORMAT, "images of 2x1x70000 are over 65535 per side");
}

/* A FIFO named as any data file is refused at once, whichever reader gets it. */
Test(data, a_fifo_as_a_data_file_is_refused_without_waiting, .timeout = 10) {
    uint8_t *px = byte_images("train_images.npy", 2, 2, 2, 0, 1);
    int64_labels("train_labels.npy", (const int64_t[2]){0, 1}, 2);
    cr_assert_eq(mkfifo(path_of("fifo"), 0666), 0);
    const char *fifo = path_of("fifo");
    const cv_data_files cases[] = {{.train_images = fifo}, {.train_labels = fifo},
                                   {.train_conditions = fifo}, {.test_images = fifo,
                                   .test_labels = path_of("train_labels.npy")}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_load_fails(&cases[i], 0, CV_ERR_IO, "fifo: is not a regular file");
    free(px);
}

/* A file cut inside the NumPy magic is a truncated .npy, whichever role it has. */
Test(data, a_file_cut_inside_the_npy_magic_is_a_truncated_npy) {
    uint8_t *px = byte_images("train_images.npy", 2, 2, 2, 0, 1);
    test_write_file(path_of("cut.npy"), "\x93NUM", 4);
    const char *cut = path_of("cut.npy");
    const cv_data_files cases[] = {{.train_labels = cut}, {.train_conditions = cut},
                                   {.train_images = cut, .train_labels = cut}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_load_fails(&cases[i], 0, CV_ERR_FORMAT, "cut.npy: truncated header (4 of 8 bytes");
    free(px);
}

/* test_only reads the test split alone, its kind from its own files and K from n_classes
 * (or its largest label + 1) or its vectors' width; the training files need not exist. */
Test(data, test_only_reads_the_test_split_alone) {
    test_rng r = test_rng_new("data test only");
    uint8_t *px = byte_images("test_images.npy", 3, 2, 2, 3, 1);
    int64_labels("test_labels.npy", (const int64_t[3]){0, 4, 1}, 3);
    const cv_data_files only = {.test_only = true};
    cv_data d;
    load(dir, &only, 0, &d);
    cr_assert(d.train.n == 0 && d.test.n == 3 && d.test.channels == 3);
    cr_assert(d.condition == CV_COND_LABELS && d.cond_width == 5, "K %d", d.cond_width);
    cv_data_free(&d);
    load(dir, &only, 7, &d);
    cr_assert_eq(d.cond_width, 7);
    cv_data_free(&d);
    expect_load_fails(&only, 4, CV_ERR_FORMAT, "label 4 at index 1 is not among the 4 classes");
    float *c = conditions("test_conditions.npy", &r, 3, 6);
    expect_load_fails(&only, 0, CV_ERR_FORMAT, "holds both");
    remove(path_of("test_labels.npy"));
    load(dir, &only, 0, &d);
    cr_assert(d.condition == CV_COND_VECTORS && d.cond_width == 6);
    cr_assert(memcmp(d.test.conditions, c, 3 * 6 * sizeof(float)) == 0);
    cv_data_free(&d);
    expect_load_fails(&only, 3, CV_ERR_USAGE, "--classes is for class labels");
    /* the flags name the kind; the training flags are ignored */
    const cv_data_files named = {.test_only = true, .train_images = path_of("absent.npy"),
                                 .test_images = path_of("test_images.npy"),
                                 .test_conditions = path_of("test_conditions.npy")};
    load(NULL, &named, 0, &d);
    cr_assert(d.condition == CV_COND_VECTORS && d.test.n == 3);
    cv_data_free(&d);
    free(px);
    free(c);
}

/* A training condition named by a flag, of the other kind than the folder's test split
 * (MNIST's t10k labels beside --train-conditions): the folder's test split belongs to
 * its own training labels, so it is left out and said so (test_skipped), not an error. */
Test(data, a_folders_test_split_of_the_other_kind_is_left_out) {
    test_rng r = test_rng_new("data other kind");
    test_write_dataset(dir, 30, 10, 4, 4, 3, false, 1);
    float *c = conditions("c.npy", &r, 30, 2);
    cv_data d;
    const cv_data_files vectors = {.train_conditions = path_of("c.npy")};
    load(dir, &vectors, 0, &d);
    cr_assert(d.condition == CV_COND_VECTORS && d.train.n == 30);
    cr_assert(d.test.n == 0 && d.test_skipped, "the folder's labelled test split was read");
    cv_data_free(&d);
    /* a test split of the training kind is read as ever, and so are test flags */
    const cv_data_files labels = {.train_labels = path_of("train-labels-idx1-ubyte")};
    load(dir, &labels, 0, &d);
    cr_assert(d.test.n == 10 && !d.test_skipped);
    cv_data_free(&d);
    const cv_data_files named = {.train_conditions = path_of("c.npy"),
                                 .test_images = path_of("t10k-images-idx3-ubyte")};
    expect_load_fails(&named, 0, CV_ERR_IO, "the test split holds the other kind of condition");
    free(c);
}
