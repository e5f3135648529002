/* test_conditions.c: condition vectors and colour images through the cvae program: train
 * on NumPy files (from a folder or named by flags), info, eval (and --marginal refused),
 * generate from a conditions or labels file in every format (its bytes independent of
 * --batch, each image a function of its own row only), the grid of condition rows, colour
 * pictures, and the round trip of a generated data set back into training; and every bad
 * request exits with one line, writing nothing. */
#include <criterion/criterion.h>
#include <png.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/checkpoint.h"
#include "cvae/data.h"
#include "cvae/npy.h"
#include "helpers.h"

#define H 6
#define W 5
#define C 3
#define K 4
#define N_TRAIN 240
#define N_TEST 40

static char *dir;
static char data[4200], run[4200], ckpt[4300];

/* n RGB images whose colour follows the condition's first three coordinates (in [-1, 1]),
 * the fourth coordinate noise. */
static void write_split(test_rng *r, const char *prefix, int n) {
    uint8_t *px = malloc((size_t)n * H * W * C);
    float *cond = malloc((size_t)n * K * sizeof(float));
    test_fill(r, cond, (size_t)n * K, -1, 1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < H * W; j++)
            for (int c = 0; c < C; c++) {
                double v = 0.5 + 0.45 * cond[i * K + c] + test_uniform(r, -0.05, 0.05);
                px[((size_t)i * H * W + j) * C + c] = (uint8_t)(255 * fmin(1, fmax(0, v)));
            }
    char name[64];
    snprintf(name, sizeof name, "%s_images.npy", prefix);
    test_write_npy(test_path_in(data, name), CV_NPY_U8, 4, (const int64_t[4]){n, H, W, C}, px);
    snprintf(name, sizeof name, "%s_conditions.npy", prefix);
    test_write_npy(test_path_in(data, name), CV_NPY_F32, 2, (const int64_t[2]){n, K}, cond);
    free(px);
    free(cond);
}

static int cvae(char **out, char **err, const char *const *args) {
    return test_run_cvae(out, err, args);
}

/* Runs cvae and asserts exit code `rc`; returns its stderr (malloc'd) for more checks. */
static char *expect_exit(int rc, const char *const *args) {
    char *o, *e;
    int got = cvae(&o, &e, args);
    cr_assert_eq(got, rc, "cvae %s exited %d, expected %d: %s%s", args[0], got, rc, o, e);
    free(o);
    return e;
}

static void expect_error(int rc, const char *needle, const char *const *args) {
    char *e = expect_exit(rc, args);
    cr_assert(strstr(e, needle) != NULL, "expected '%s' in: %s", needle, e);
    cr_assert_eq(test_count_lines(e), 1, "not one line: %s", e);
    free(e);
}

static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    mkdir(data, 0777);
    test_rng r = test_rng_new("conditions data");
    write_split(&r, "train", N_TRAIN);
    write_split(&r, "test", N_TEST);
    char *o, *e;
    const char *args[] = {"train", "--data", data, "--epochs", "2", "--hidden", "32",
                          "--latent", "3", "--batch", "32", "--prior", "conditional",
                          "--device", "cpu", "--out", run, NULL};
    int rc = cvae(&o, &e, args);
    cr_assert_eq(rc, 0, "training on condition vectors failed: %s%s", o, e);
    cr_assert(strstr(o, "condition vectors of width 4") != NULL, "%s", o);
    cr_assert(strstr(o, "6x5x3") != NULL, "%s", o);
    free(o);
    free(e);
}
static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(conditions, .init = setup, .fini = teardown, .timeout = 240);

/* The PNG's width, height and colour type from its IHDR chunk. */
static void png_shape(const char *path, int *w, int *h, int *color) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    cr_assert(b && size > 26 && memcmp(b + 12, "IHDR", 4) == 0, "%s is not a PNG", path);
    *w = b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
    *h = b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
    *color = b[25];
    free(b);
}

static cv_npy_array read_npy(const char *path) {
    cv_npy_array a;
    cv_err err;
    cr_assert_eq(cv_npy_read(path, &a, &err), CV_OK, "%s", err.msg);
    return a;
}

Test(conditions, training_writes_a_current_checkpoint_and_colour_pictures) {
    cv_checkpoint ck;
    cv_err err;
    cr_assert_eq(cv_checkpoint_load(ckpt, &ck, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(ck.version, CV_CHECKPOINT_VERSION);
    cr_assert(ck.cfg.channels == C && ck.cfg.condition == CV_COND_VECTORS &&
              ck.cfg.cond_width == K, "the checkpoint lost the data's shape");
    cv_checkpoint_free(&ck);
    int w, h, color;
    png_shape(test_path_in(run, "samples.png"), &w, &h, &color);
    /* ten condition rows (the first test images') of ten samples, 2-pixel gaps */
    cr_assert(w == 10 * W + 11 * 2 && h == 10 * H + 11 * 2, "samples.png is %dx%d", w, h);
    cr_assert_eq(color, PNG_COLOR_TYPE_RGB);
    png_shape(test_path_in(run, "reconstructions.png"), &w, &h, &color);
    cr_assert(h == 2 * H + 3 * 2 && color == PNG_COLOR_TYPE_RGB, "reconstructions.png");
    char *o, *e;
    const char *info[] = {"info", "--model", ckpt, NULL};
    cr_assert_eq(cvae(&o, &e, info), 0, "%s", e);
    cr_assert(strstr(o, "images 6x5x3, condition vectors of width 4") != NULL, "%s", o);
    free(o);
    free(e);
}

Test(conditions, eval_scores_condition_data_and_refuses_the_marginal) {
    char *o, *e;
    const char *args[] = {"eval", "--model", ckpt, "--data", data, "--iwae", "5", "--json",
                          "--device", "cpu", NULL};
    cr_assert_eq(cvae(&o, &e, args), 0, "%s", e);
    cr_assert(strstr(o, "\"iwae_nll\"") && strstr(o, "\"test_neg_elbo\""), "%s", o);
    double elbo = 0, iwae = 0;
    cr_assert_eq(sscanf(strstr(o, "\"test_neg_elbo\": "), "\"test_neg_elbo\": %lf", &elbo), 1);
    cr_assert_eq(sscanf(strstr(o, "\"iwae_nll\": "), "\"iwae_nll\": %lf", &iwae), 1);
    cr_assert(isfinite(elbo) && isfinite(iwae) && iwae > 0, "-ELBO %g, IWAE %g", elbo, iwae);
    free(o);
    free(e);
    expect_error(2, "--marginal sums over classes",
                 (const char *[]){"eval", "--model", ckpt, "--data", data, "--iwae", "2",
                                  "--marginal", "--device", "cpu", NULL});
}

/* The final test -ELBO training prints, from the line "final test -ELBO X nats". */
static double final_test_elbo(const char *log) {
    const char *at = strstr(log, "final test -ELBO ");
    cr_assert(at, "no final test -ELBO in: %s", log);
    return strtod(at + strlen("final test -ELBO "), NULL);
}

static double json_neg_elbo(const char *json) {
    const char *at = strstr(json, "\"test_neg_elbo\": ");
    cr_assert(at, "no test_neg_elbo in: %s", json);
    return strtod(at + strlen("\"test_neg_elbo\": "), NULL);
}

/* With the training seed, eval of the checkpoint on the condition data reproduces
 * training's last test -ELBO (printed to 4 decimals), from the folder and from the test
 * files alone: eval reads no training file unless --marginal asks for their labels. */
Test(conditions, eval_reproduces_trainings_final_test_elbo_from_the_test_files_alone) {
    char out[4200], *o, *e;
    snprintf(out, sizeof out, "%s/seeded", dir);
    const char *train[] = {"train", "--data", data, "--epochs", "2", "--hidden", "32",
                           "--latent", "3", "--batch", "32", "--prior", "conditional",
                           "--seed", "5", "--device", "cpu", "--out", out, NULL};
    cr_assert_eq(cvae(&o, &e, train), 0, "%s", e);
    const double trained = final_test_elbo(o);
    free(o);
    free(e);
    const char *model = test_path_in(out, "model.ckpt");
    const char *test_images = test_path_in(data, "test_images.npy");
    const char *test_conditions = test_path_in(data, "test_conditions.npy");
    const char *from_folder[] = {"eval", "--model", model, "--data", data, "--seed", "5",
                                 "--json", "--device", "cpu", NULL};
    const char *from_files[] = {"eval", "--model", model, "--test-images", test_images,
                                "--test-conditions", test_conditions, "--seed", "5", "--json",
                                "--device", "cpu", NULL};
    const char *const *runs[2] = {from_folder, from_files};
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(cvae(&o, &e, runs[k]), 0, "%s", e);
        const double evaluated = json_neg_elbo(o);
        cr_assert(fabs(evaluated - trained) < 1e-4, "eval %.6f vs training %.4f", evaluated,
                  trained);
        free(o);
        free(e);
    }
    /* a folder that holds the test split alone */
    char only[4200];
    snprintf(only, sizeof only, "%s/test-only", dir);
    mkdir(only, 0777);
    rename(test_images, test_path_in(only, "test_images.npy"));
    rename(test_conditions, test_path_in(only, "test_conditions.npy"));
    from_folder[4] = only;
    cr_assert_eq(cvae(&o, &e, from_folder), 0, "%s", e);
    cr_assert(fabs(json_neg_elbo(o) - trained) < 1e-4, "%s", o);
    free(o);
    free(e);
    expect_error(2, "--data DIR, --test-images FILE or --test-csv FILE",
                 (const char *[]){"eval", "--model", model, "--train-images",
                                  test_path_in(data, "train_images.npy"), NULL});
}

Test(conditions, explicit_file_flags_train_without_a_folder) {
    char out[4200];
    snprintf(out, sizeof out, "%s/flags-run", dir);
    char *e = expect_exit(0, (const char *[]){
        "train", "--train-images", test_path_in(data, "train_images.npy"),
        "--train-conditions", test_path_in(data, "train_conditions.npy"),
        "--test-images", test_path_in(data, "test_images.npy"),
        "--test-conditions", test_path_in(data, "test_conditions.npy"), "--epochs", "1",
        "--hidden", "16", "--latent", "2", "--device", "cpu", "--out", out, NULL});
    free(e);
    expect_error(2, "--classes is for class labels",
                 (const char *[]){"train", "--data", data, "--classes", "4", "--epochs", "1",
                                  "--device", "cpu", NULL});
    expect_error(2, "--train-labels and --train-conditions exclude each other",
                 (const char *[]){"train", "--data", data, "--train-labels", "a",
                                  "--train-conditions", "b", NULL});
}

/* --train-conditions on an MNIST folder: its t10k files hold labels, the wrong kind for
 * the training conditions, so training goes without a test split and says why. */
Test(conditions, train_conditions_on_a_labelled_folder_train_without_its_test_split) {
    char mnist[4200], out[4200];
    snprintf(mnist, sizeof mnist, "%s/mnist", dir);
    snprintf(out, sizeof out, "%s/mnist-run", dir);
    mkdir(mnist, 0777);
    test_write_dataset(mnist, 50, 10, 4, 4, 3, false, 2);
    float rows[50 * 2];
    test_rng r = test_rng_new("mnist conditions");
    test_fill(&r, rows, 50 * 2, -1, 1);
    const char *cond = test_path_in(dir, "mnist-conditions.npy");
    test_write_npy(cond, CV_NPY_F32, 2, (const int64_t[2]){50, 2}, rows);
    char *o, *e;
    const char *args[] = {"train", "--data", mnist, "--train-conditions", cond, "--epochs", "1",
                          "--hidden", "8", "--latent", "2", "--device", "cpu", "--out", out,
                          NULL};
    cr_assert_eq(cvae(&o, &e, args), 0, "%s", e);
    cr_assert(strstr(o, "no test split: the folder's test files hold class labels, not "
                        "condition vectors (name test files with --test-images and "
                        "--test-conditions)"), "%s", o);
    cr_assert(strstr(o, "final test -ELBO") == NULL, "%s", o);
    free(o);
    free(e);
}

/* rows of width `width`, the first ones taken from the test conditions */
static char *conditions_file(const char *name, int rows, int width, float poison) {
    float *c = malloc((size_t)rows * width * sizeof(float));
    test_rng r = test_rng_new("conditions file");
    test_fill(&r, c, (size_t)rows * width, -1, 1);
    if (poison != 0) c[(size_t)rows * width - 1] = poison;
    char *p = test_path_in(dir, name);
    test_write_npy(p, CV_NPY_F32, 2, (const int64_t[2]){rows, width}, c);
    free(c);
    return p;
}

Test(conditions, generate_writes_one_image_per_row_and_a_copy_of_the_rows) {
    char *cond = conditions_file("c.npy", 37, K, 0);
    char out[4200], again[4200];
    snprintf(out, sizeof out, "%s/gen", dir);
    snprintf(again, sizeof again, "%s/gen1", dir);
    free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--conditions", cond,
                                         "--out", out, "--format", "npy", "--device", "cpu",
                                         NULL}));
    cv_npy_array img = read_npy(test_path_in(out, "images.npy"));
    cr_assert(img.dtype == CV_NPY_U8 && img.ndims == 4 && img.dims[0] == 37 &&
              img.dims[1] == H && img.dims[2] == W && img.dims[3] == C, "images.npy shape");
    cv_npy_array copy = read_npy(test_path_in(out, "conditions.npy")), given = read_npy(cond);
    cr_assert(copy.bytes == given.bytes && memcmp(copy.data, given.data, copy.bytes) == 0,
              "conditions.npy is not the rows asked for");
    size_t msize;
    char *manifest = (char *)test_read_file(test_path_in(out, "manifest.json"), &msize);
    cr_assert(strstr(manifest, "\"condition\": \"vectors\"") &&
              strstr(manifest, "\"condition_width\": 4") && strstr(manifest, "\"channels\": 3") &&
              strstr(manifest, "\"name\": \"conditions.npy\""), "%s", manifest);
    /* the same bytes whatever --batch */
    free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--conditions", cond,
                                         "--out", again, "--format", "npy", "--batch", "1",
                                         "--device", "cpu", NULL}));
    cv_npy_array img1 = read_npy(test_path_in(again, "images.npy"));
    cr_assert(memcmp(img.data, img1.data, img.bytes) == 0, "--batch changed the images");
    cv_npy_free(&img);
    cv_npy_free(&img1);
    cv_npy_free(&copy);
    cv_npy_free(&given);
    free(manifest);
}

Test(conditions, every_format_and_the_grid_hold_colour_images) {
    char *cond = conditions_file("c.npy", 5, K, 0);
    char idx[4200], png[4200], grid[4200];
    snprintf(idx, sizeof idx, "%s/idx", dir);
    snprintf(png, sizeof png, "%s/png", dir);
    snprintf(grid, sizeof grid, "%s/grid.png", dir);
    free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--conditions", cond,
                                         "--per-row", "2", "--out", idx, "--format", "idx.gz",
                                         "--device", "cpu", NULL}));
    uint8_t *px;
    int dims[4];
    cv_err err;
    cr_assert_eq(cv_idx_read_images(test_path_in(idx, "images-idx4-ubyte.gz"), dims, &px, &err),
                 CV_OK, "%s", err.msg);
    cr_assert(dims[0] == 10 && dims[1] == H && dims[2] == W && dims[3] == C);
    free(px);
    cv_npy_array rows = read_npy(test_path_in(idx, "conditions.npy"));
    cr_assert(rows.dims[0] == 10 && rows.dims[1] == K, "a row per image");
    cv_npy_free(&rows);
    free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--conditions", cond,
                                         "--out", png, "--format", "png", "--device", "cpu",
                                         NULL}));
    int w, h, color;
    png_shape(test_path_in(png, "4.png"), &w, &h, &color);
    cr_assert(w == W && h == H && color == PNG_COLOR_TYPE_RGB, "4.png %dx%d colour %d", w, h,
              color);
    struct stat sb;
    cr_assert(stat(test_path_in(png, "conditions.npy"), &sb) == 0 &&
              stat(test_path_in(png, "5.png"), &sb) != 0);
    free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--conditions", cond,
                                         "--per-row", "3", "--out", grid, "--format", "grid",
                                         "--device", "cpu", NULL}));
    png_shape(grid, &w, &h, &color);
    cr_assert(w == 3 * W + 4 * 2 && h == 5 * H + 6 * 2 && color == PNG_COLOR_TYPE_RGB,
              "grid %dx%d colour %d", w, h, color);
}

Test(conditions, a_generated_data_set_trains_a_new_model_through_data) {
    char *cond = conditions_file("c.npy", 96, K, 0);
    char gen[4200], again[4200];
    snprintf(gen, sizeof gen, "%s/gen", dir);
    snprintf(again, sizeof again, "%s/again", dir);
    free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--conditions", cond,
                                         "--out", gen, "--format", "npy", "--sample",
                                         "--device", "cpu", NULL}));
    char *o, *e;
    const char *args[] = {"train", "--data", gen, "--epochs", "1", "--hidden", "16",
                          "--latent", "2", "--batch", "32", "--device", "cpu", "--out", again,
                          NULL};
    cr_assert_eq(cvae(&o, &e, args), 0, "training on the generated set failed: %s", e);
    cr_assert(strstr(o, "96 training images 6x5x3, condition vectors of width 4") != NULL, "%s",
              o);
    free(o);
    free(e);
    struct stat sb;
    cr_assert_eq(stat(test_path_in(again, "model.ckpt"), &sb), 0);
}

Test(conditions, bad_rows_exit_1_and_write_nothing) {
    char out[4200];
    snprintf(out, sizeof out, "%s/never", dir);
    const char *narrow = conditions_file("narrow.npy", 4, K - 1, 0);
    expect_error(1, "rows have width 3 but the model's condition vectors have 4",
                 (const char *[]){"generate", "--model", ckpt, "--conditions", narrow, "--out",
                                  out, "--device", "cpu", NULL});
    const char *nan = conditions_file("nan.npy", 4, K, NAN);
    expect_error(1, "row 3 holds a NaN or Inf (column 3)",
                 (const char *[]){"generate", "--model", ckpt, "--conditions", nan, "--out", out,
                                  "--device", "cpu", NULL});
    const char *labels = test_path_in(dir, "labels.npy");
    test_write_npy(labels, CV_NPY_I64, 1, (const int64_t[1]){2}, (const int64_t[2]){0, 1});
    expect_error(2, "the model takes condition vectors of width 4",
                 (const char *[]){"generate", "--model", ckpt, "--labels", labels, "--out", out,
                                  "--device", "cpu", NULL});
    expect_error(2, "the model takes condition vectors of width 4",
                 (const char *[]){"generate", "--model", ckpt, "--per-class", "3", "--out", out,
                                  "--device", "cpu", NULL});
    struct stat sb;
    cr_assert_neq(stat(out, &sb), 0, "a failed generate left %s", out);
}

/* The images (and their count) of a generated npy data set. */
static cv_npy_array generated_images(const char *out) {
    return read_npy(test_path_in(out, "images.npy"));
}

/* Image i of a and b (image i has row i % rows) are byte-identical exactly when its row
 * is not `row`. */
static void expect_only_images_changed(const cv_npy_array *a, const cv_npy_array *b,
                                       long long rows, long long row) {
    cr_assert(a->bytes == b->bytes && a->dims[0] == b->dims[0], "the sets differ in shape");
    const size_t d = a->bytes / (size_t)a->dims[0];
    for (long long i = 0; i < a->dims[0]; i++) {
        const bool same = memcmp((uint8_t *)a->data + i * d, (uint8_t *)b->data + i * d, d) == 0;
        const bool changed_row = i % rows == row;
        cr_assert(same != changed_row, "image %lld %s", i,
                  changed_row ? "did not change with its row" : "changed with another row");
    }
}

/* Each image depends on its own row only: changing row 20 of 37 (two images a row, image
 * i of row i % 37) changes images 20 and 57, and leaves the other 72 byte for byte. */
Test(conditions, changing_one_condition_row_changes_only_its_images) {
    float rows[37 * K];
    test_rng r = test_rng_new("one row");
    test_fill(&r, rows, 37 * K, -1, 1);
    char *before = test_path_in(dir, "before.npy"), *after = test_path_in(dir, "after.npy");
    test_write_npy(before, CV_NPY_F32, 2, (const int64_t[2]){37, K}, rows);
    for (int k = 0; k < K; k++) rows[20 * K + k] = -rows[20 * K + k];
    test_write_npy(after, CV_NPY_F32, 2, (const int64_t[2]){37, K}, rows);
    cv_npy_array sets[2];
    const char *files[2] = {before, after};
    for (int k = 0; k < 2; k++) {
        char out[4200];
        snprintf(out, sizeof out, "%s/gen%d", dir, k);
        free(expect_exit(0, (const char *[]){"generate", "--model", ckpt, "--conditions",
                                             files[k], "--per-row", "2", "--out", out,
                                             "--format", "npy", "--device", "cpu", NULL}));
        sets[k] = generated_images(out);
    }
    expect_only_images_changed(&sets[0], &sets[1], 37, 20);
    cv_npy_free(&sets[0]);
    cv_npy_free(&sets[1]);
}

/* A small model of 3 classes on 4x4 grey images, trained here: its checkpoint's path. */
static const char *label_model(void) {
    char ldata[4200], lrun[4200];
    snprintf(ldata, sizeof ldata, "%s/ldata", dir);
    snprintf(lrun, sizeof lrun, "%s/lrun", dir);
    mkdir(ldata, 0777);
    test_write_dataset(ldata, 120, 0, 4, 4, 3, false, 5);
    test_train_small(ldata, lrun, 8, 2, 1, 6);
    static char ckpt_path[4300];
    snprintf(ckpt_path, sizeof ckpt_path, "%s/model.ckpt", lrun);
    return ckpt_path;
}

/* The same for a labels file: row 3 from class 1 to class 0 changes image 3 alone. */
Test(conditions, changing_one_label_row_changes_only_its_image) {
    const char *lckpt = label_model();
    int64_t order[7] = {2, 2, 0, 1, 0, 2, 1};
    char *before = test_path_in(dir, "before.npy"), *after = test_path_in(dir, "after.npy");
    test_write_npy(before, CV_NPY_I64, 1, (const int64_t[1]){7}, order);
    order[3] = 0;
    test_write_npy(after, CV_NPY_I64, 1, (const int64_t[1]){7}, order);
    cv_npy_array sets[2];
    const char *files[2] = {before, after};
    for (int k = 0; k < 2; k++) {
        char out[4200];
        snprintf(out, sizeof out, "%s/lgen%d", dir, k);
        free(expect_exit(0, (const char *[]){"generate", "--model", lckpt, "--labels", files[k],
                                             "--out", out, "--format", "npy", "--device", "cpu",
                                             NULL}));
        sets[k] = generated_images(out);
    }
    expect_only_images_changed(&sets[0], &sets[1], 7, 3);
    cv_npy_free(&sets[0]);
    cv_npy_free(&sets[1]);
}

/* A test split whose labels the model does not have is refused before anything runs,
 * read with the training split or alone. */
Test(conditions, eval_refuses_test_labels_beyond_the_models_classes) {
    const char *lckpt = label_model();
    char ldata[4200];
    snprintf(ldata, sizeof ldata, "%s/ldata", dir);
    const int64_t labels[4] = {0, 2, 3, 1};
    uint8_t px[4 * 16] = {0};
    test_write_npy(test_path_in(dir, "t_images.npy"), CV_NPY_U8, 3, (const int64_t[3]){4, 4, 4},
                   px);
    test_write_npy(test_path_in(dir, "t_labels.npy"), CV_NPY_I64, 1, (const int64_t[1]){4},
                   labels);
    const char *with_training[] = {"eval", "--model", lckpt, "--data", ldata, "--test-images",
                                   test_path_in(dir, "t_images.npy"), "--test-labels",
                                   test_path_in(dir, "t_labels.npy"), "--device", "cpu", NULL};
    expect_error(1, "test label 3 at index 2 is not among the model's 3 classes (0..2)",
                 with_training);
    const char *alone[] = {"eval", "--model", lckpt, "--test-images",
                           test_path_in(dir, "t_images.npy"), "--test-labels",
                           test_path_in(dir, "t_labels.npy"), "--device", "cpu", NULL};
    expect_error(1, "t_images.npy: test label 3 at index 2 is not among the model's 3 classes "
                 "(0..2)", alone);
}

/* Condition vectors given to a model of class labels: eval and a resume say so, naming
 * the two kinds; they spoke of a --classes flag nobody gave. */
Test(conditions, a_label_model_given_condition_vectors_says_so) {
    const char *lckpt = label_model();
    uint8_t px[4 * 16] = {0};
    for (int i = 0; i < 4 * 16; i++) px[i] = (uint8_t)(37 * i + 11);
    const char *images = test_path_in(dir, "v_images.npy");
    test_write_npy(images, CV_NPY_U8, 3, (const int64_t[3]){4, 4, 4}, px);
    const char *cond = conditions_file("v_cond.npy", 4, 3, 0);
    const char *eval[] = {"eval", "--model", lckpt, "--test-images", images,
                          "--test-conditions", cond, "--device", "cpu", NULL};
    const char *resume[] = {"train", "--train-images", images, "--train-conditions", cond,
                            "--hidden", "8", "--latent", "2", "--batch", "16", "--lr", "0.003",
                            "--seed", "6", "--epochs", "2", "--device", "cpu", "--resume",
                            lckpt, NULL};
    const char *const *cases[] = {eval, resume};
    const int codes[] = {1, 2};
    for (int k = 0; k < 2; k++) {
        char *e = expect_exit(codes[k], cases[k]);
        cr_assert(strstr(e, "the data has condition vectors of width 3 but the model takes "
                            "class labels of width 3") && !strstr(e, "--classes"),
                  "%s: %s", cases[k][0], e);
        cr_assert_eq(test_count_lines(e), 1, "not one line: %s", e);
        free(e);
    }
    /* and labels beyond its classes, in terms of the model's classes */
    const char *labels = test_path_in(dir, "v_labels.npy");
    test_write_npy(labels, CV_NPY_I64, 1, (const int64_t[1]){4},
                   (const int64_t[4]){0, 2, 3, 1});
    resume[4] = labels;
    resume[3] = "--train-labels";
    expect_error(1, "training label 3 at index 2 is not among the model's 3 classes (0..2)",
                 resume);
}

/* A model of class labels takes --labels FILE: one image per row, in the file's order. */
Test(conditions, labels_files_set_the_order_of_a_label_model) {
    char out[4200], bad[4200];
    snprintf(out, sizeof out, "%s/lgen", dir);
    snprintf(bad, sizeof bad, "%s/lbad", dir);
    const char *lckpt = label_model();
    const int64_t order[7] = {2, 2, 0, 1, 0, 2, 1};
    const char *labels = test_path_in(dir, "order.npy");
    test_write_npy(labels, CV_NPY_I64, 1, (const int64_t[1]){7}, order);
    free(expect_exit(0, (const char *[]){"generate", "--model", lckpt, "--labels", labels,
                                         "--out", out, "--format", "npy", "--device", "cpu",
                                         NULL}));
    cv_npy_array got = read_npy(test_path_in(out, "labels.npy"));
    cr_assert_eq(got.dims[0], 7);
    for (int i = 0; i < 7; i++) cr_assert_eq(((uint8_t *)got.data)[i], order[i], "row %d", i);
    cv_npy_free(&got);
    const int64_t wrong[2] = {0, 3};
    const char *wrong_path = test_path_in(dir, "wrong.npy");
    test_write_npy(wrong_path, CV_NPY_I64, 1, (const int64_t[1]){2}, wrong);
    expect_error(1, "class 3 (row 1) is not among the model's 3 classes",
                 (const char *[]){"generate", "--model", lckpt, "--labels", wrong_path, "--out",
                                  bad, "--device", "cpu", NULL});
    const char *cond = conditions_file("c.npy", 3, 3, 0);
    expect_error(2, "the model takes class labels (3 classes)",
                 (const char *[]){"generate", "--model", lckpt, "--conditions", cond, "--out",
                                  bad, "--device", "cpu", NULL});
    expect_error(2, "with --labels or --conditions use --per-row",
                 (const char *[]){"generate", "--model", lckpt, "--labels", labels,
                                  "--per-class", "2", "--out", bad, NULL});
    struct stat sb;
    cr_assert_neq(stat(bad, &sb), 0, "a failed generate left %s", bad);
}
