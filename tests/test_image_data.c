/* test_image_data.c: training on image files through the program: tables of PNGs train to
 * the very checkpoint of the same images in IDX files; class folders put their names in
 * the checkpoint, cvae info, generate --classes and png folders; a model conditioned on
 * two table columns moves its images the way the columns say; score and encode read tables
 * as eval does; ImageFolder's root without train/ is told the image layouts. Fashion-MNIST
 * (Debian's dataset-fashion-mnist) supplies the images. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/data.h"
#include "cvae/npy.h"
#include "data/png.h"
#include "helpers.h"
#include "util/fileio.h"

#define FASHION "/usr/share/datasets/fashion-mnist"

static char *dir;
static uint8_t *images, *labels; /* Fashion-MNIST's training set */
static int n_images;

static void setup(void) {
    dir = test_tmpdir();
    if (!cv_path_exists(FASHION)) return;
    int dims[4];
    cv_err err;
    cr_assert_eq(cv_idx_read(FASHION "/train-images-idx3-ubyte.gz", 3, dims, &images, &err), CV_OK,
                 "%s", err.msg);
    n_images = dims[0];
    cr_assert_eq(cv_idx_read(FASHION "/train-labels-idx1-ubyte.gz", 1, dims, &labels, &err), CV_OK,
                 "%s", err.msg);
}

static void teardown(void) {
    free(images);
    free(labels);
    test_rmtree(dir);
    free(dir);
}

TestSuite(image_data, .init = setup, .fini = teardown, .timeout = 600);

static void need_fashion(void) {
    if (!images) cr_skip_test("no %s (Debian's dataset-fashion-mnist)", FASHION);
}

static char *in_dir(const char *name) { return test_path_in(dir, name); }

static void make_dir(const char *path) {
    cr_assert(mkdir(path, 0777) == 0 || cv_path_exists(path), "cannot make %s", path);
}

static void write_png(const char *path, const uint8_t *px, int h, int w, int c) {
    cv_err err;
    cr_assert_eq(cv_png_write(path, px, h, w, c, &err), CV_OK, "%s", err.msg);
}

/* Runs cvae (args NULL-terminated), asserting the exit code; returns its stdout. */
static char *cvae_ok(const char *const *args) {
    char *out, *err;
    const int rc = test_run_cvae(&out, &err, args);
    cr_assert_eq(rc, 0, "cvae %s exited %d: %s", args[0], rc, err);
    free(err);
    return out;
}

static uint8_t *file_bytes(const char *path, size_t *n) {
    uint8_t *b = test_read_file(path, n);
    cr_assert_not_null(b, "no %s", path);
    return b;
}

/* Images first..first+n of Fashion-MNIST as PNGs DIR/png/<split>/<i>.png, a table of them
 * (image, label as a number, and a note column that is not a number) in their order, and
 * the same images and labels as IDX files DIR/idx/<prefix>-... */
static void write_split(const char *split, const char *prefix, int first, int n) {
    char path[4400], table[4400];
    snprintf(path, sizeof path, "%s/png/%s", dir, split);
    make_dir(path);
    snprintf(table, sizeof table, "%s/png/%s.csv", dir, split);
    FILE *fp = fopen(table, "w");
    fprintf(fp, "image,label,note\n");
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/png/%s/%05d.png", dir, split, i);
        write_png(path, images + (size_t)(first + i) * 784, 28, 28, 1);
        fprintf(fp, "%s/%05d.png,%d,item %d\n", split, i, labels[first + i], i);
    }
    fclose(fp);
    cv_err err;
    snprintf(path, sizeof path, "%s/idx/%s-images-idx3-ubyte", dir, prefix);
    cr_assert_eq(cv_idx_write(path, 3, (int[]){n, 28, 28}, images + (size_t)first * 784, false,
                              &err), CV_OK);
    snprintf(path, sizeof path, "%s/idx/%s-labels-idx1-ubyte", dir, prefix);
    cr_assert_eq(cv_idx_write(path, 1, (int[]){n}, labels + first, false, &err), CV_OK);
}

/* 2,000 training and 500 test images as PNG files named by tables in IDX order train to
 * the same checkpoint bytes as the IDX files of the same images, with the same seed; the
 * second run maps the cache the first one decoded, and ends the same. */
Test(image_data, tables_of_pngs_train_to_the_checkpoint_of_the_idx_files) {
    need_fashion();
    make_dir(in_dir("png"));
    make_dir(in_dir("idx"));
    write_split("train", "train", 0, 2000);
    write_split("test", "t10k", 50000, 500);
    char idx[4400], from_idx[4400], from_png[4400], again[4400], train[4400], test[4400], cache[4400];
    snprintf(idx, sizeof idx, "%s/idx", dir);
    snprintf(train, sizeof train, "%s/png/train.csv", dir);
    snprintf(test, sizeof test, "%s/png/test.csv", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(from_idx, sizeof from_idx, "%s/run-idx", dir);
    snprintf(from_png, sizeof from_png, "%s/run-png", dir);
    snprintf(again, sizeof again, "%s/run-again", dir);
    const char *common[] = {"--epochs", "2", "--hidden", "64", "--latent", "8", "--seed", "7",
                            "--device", "cpu"};
    const char *a[20] = {"train", "--data", idx, "--out", from_idx};
    memcpy(a + 5, common, sizeof common);
    free(cvae_ok(a));
    const char *b[20] = {"train", "--train-csv", train, "--test-csv", test, "--cache", cache,
                         "--out", from_png};
    memcpy(b + 9, common, sizeof common);
    char *log = cvae_ok(b);
    cr_assert(strstr(log, "decoded 2000 training images") && strstr(log, "decoded 500 test"),
              "the first run did not decode both splits:\n%s", log);
    free(log);
    b[8] = again;
    log = cvae_ok(b);
    cr_assert(!strstr(log, "decoded"), "the second run decoded again:\n%s", log);
    free(log);
    size_t n1, n2, n3;
    uint8_t *c1 = file_bytes(test_path_in(from_idx, "model.ckpt"), &n1);
    uint8_t *c2 = file_bytes(test_path_in(from_png, "model.ckpt"), &n2);
    uint8_t *c3 = file_bytes(test_path_in(again, "model.ckpt"), &n3);
    cr_assert(n1 == n2 && memcmp(c1, c2, n1) == 0, "the tables' checkpoint differs from the IDX "
              "files' (%zu and %zu bytes)", n1, n2);
    cr_assert(n1 == n3 && memcmp(c1, c3, n1) == 0, "the cached run's checkpoint differs");
    free(c1);
    free(c2);
    free(c3);
}

/* DIR/<split>/<class>/<i>.png for n images of each of the classes (Fashion-MNIST labels
 * and the folder names given), from Fashion-MNIST's images at `from` on. */
static void write_classes(const char *split, const int *which, char *const *names, int k, int n,
                          int from) {
    char path[4400];
    snprintf(path, sizeof path, "%s/tree/%s", dir, split);
    make_dir(path);
    for (int c = 0; c < k; c++) {
        snprintf(path, sizeof path, "%s/tree/%s/%s", dir, split, names[c]);
        make_dir(path);
        for (int i = from, got = 0; got < n; i++)
            if (labels[i] == which[c]) {
                snprintf(path, sizeof path, "%s/tree/%s/%s/%d.png", dir, split, names[c], got++);
                write_png(path, images + (size_t)i * 784, 28, 28, 1);
            }
    }
}

/* Class folders: their names go into the checkpoint; cvae info lists them, generate
 * --classes takes them, and --format png names its folders by them. The test split holds
 * two of the three classes, and keeps the training split's class numbers. */
Test(image_data, class_folders_name_the_classes_everywhere) {
    need_fashion();
    make_dir(in_dir("tree"));
    char *names[] = {"bag", "sneaker", "trouser"}; /* sorted, as the classes will be */
    const int which[] = {8, 7, 1};
    write_classes("train", which, names, 3, 300, 0);
    char *two[] = {"bag", "trouser"};
    const int which_two[] = {8, 1};
    write_classes("test", which_two, two, 2, 40, 50000);
    /* files not named as images are left out, with a note */
    test_write_file(in_dir("tree/train/bag/notes.txt"), "x", 1);
    test_write_file(in_dir("tree/test/bag/anim.gif"), "GIF89a", 6);
    char tree[4400], run[4400], ckpt[4500], png[4400], cache[4400];
    snprintf(tree, sizeof tree, "%s/tree", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    snprintf(png, sizeof png, "%s/gen", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    const char *train[] = {"train", "--data", tree, "--cache", cache, "--out", run, "--epochs", "3",
                           "--hidden", "64", "--latent", "4", "--device", "cpu", NULL};
    char *log = cvae_ok(train);
    cr_assert(strstr(log, "900 training images 28x28, 3 classes, 80 test images") &&
              strstr(log, "note: 2 files in the class folders are not named as PNG or JPEG "
                          "images (.png, .jpg, .jpeg) and are left out"), "%s", log);
    free(log);
    const char *info[] = {"info", "--model", ckpt, NULL};
    log = cvae_ok(info);
    cr_assert(strstr(log, "classes: 0 bag, 1 sneaker, 2 trouser\n"), "%s", log);
    free(log);
    /* cvae data: the classes and their counts, the fresh cache, a preview of 3 rows */
    char preview[4500];
    snprintf(preview, sizeof preview, "%s/preview.png", dir);
    const char *data[] = {"data", tree, "--cache", cache, "--preview", preview, NULL};
    log = cvae_ok(data);
    cr_assert(strstr(log, "images: 900 training, 80 test; 28x28, 1 channel (grey)") &&
              strstr(log, "    1  sneaker                       300 training        0 test") &&
              strstr(log, "    2  trouser                       300 training       40 test") &&
              strstr(log, "(fresh)") && strstr(log, "note: 2 files in the class folders"),
              "%s", log);
    free(log);
    size_t n;
    uint8_t *bytes = test_read_file(preview, &n);
    cr_assert(bytes && n > 24, "no preview");
    const uint32_t w = (uint32_t)bytes[16] << 24 | bytes[17] << 16 | bytes[18] << 8 | bytes[19];
    const uint32_t h = (uint32_t)bytes[20] << 24 | bytes[21] << 16 | bytes[22] << 8 | bytes[23];
    cr_assert(w == 10 * 30 + 2 && h == 3 * 30 + 2, "a preview of %ux%u", w, h);
    free(bytes);
    const char *gen[] = {"generate", "--model", ckpt, "--classes", "sneaker,0", "--per-class",
                         "2", "--format", "png", "--out", png, "--device", "cpu", NULL};
    free(cvae_ok(gen));
    char path[4600];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/sneaker/%d.png", png, i);
        cr_assert(cv_path_exists(path), "no %s", path);
        snprintf(path, sizeof path, "%s/bag/%d.png", png, i);
        cr_assert(cv_path_exists(path), "no %s", path);
    }
    snprintf(path, sizeof path, "%s/1", png);
    cr_assert(!cv_path_exists(path), "a class folder by number beside the named ones");
    const char *eval[] = {"eval", "--model", ckpt, "--data", tree, "--cache", cache, "--device",
                          "cpu", NULL};
    log = cvae_ok(eval);
    cr_assert(strstr(log, "over 80 images"), "%s", log);
    free(log);
    /* encode reads the folders as eval does: the test split's 80 images */
    char z[4500], exported[4500];
    snprintf(z, sizeof z, "%s/z.npy", dir);
    const char *enc[] = {"encode", "--model", ckpt, "--data", tree, "--cache", cache, "--out", z,
                         "--device", "cpu", NULL};
    free(cvae_ok(enc));
    cv_npy_array za;
    cv_err npy_err;
    cr_assert_eq(cv_npy_read(z, &za, &npy_err), CV_OK, "%s", npy_err.msg);
    cr_assert(za.ndims == 2 && za.dims[0] == 80, "z.npy of %d dims, %lld rows", za.ndims,
              (long long)za.dims[0]);
    cv_npy_free(&za);
    /* an export names the classes as the checkpoint does (the header's JSON holds the
     * configuration as a string: its quotes escaped) */
    snprintf(exported, sizeof exported, "%s/model.safetensors", dir);
    const char *exp[] = {"export", "--model", ckpt, "--format", "safetensors", "--out", exported,
                         NULL};
    free(cvae_ok(exp));
    bytes = test_read_file(exported, &n);
    const char *want = "\\\"class_names\\\": [\\\"bag\\\", \\\"sneaker\\\", \\\"trouser\\\"]";
    cr_assert(memmem(bytes, n, want, strlen(want)), "no class names in %.600s", bytes + 8);
    free(bytes);
    char *out, *err;
    const char *bad[] = {"generate", "--model", ckpt, "--classes", "sneakers", "--per-class", "1",
                         "--out", png, NULL};
    cr_assert_eq(test_run_cvae(&out, &err, bad), 2, "%s", err);
    cr_assert(strstr(err, "'sneakers' is neither a class of the model") &&
              test_count_lines(err) == 1, "%s", err);
    free(out);
    free(err);
}

/* Fashion-MNIST images shifted across by s pixels (-4..4) and dimmed to a fraction b
 * (0.4..1) of their ink: a model conditioned on the columns shift = s / 4 and ink =
 * (b - 0.7) / 0.3, both in [-1, 1], generates for the rows it is asked images whose ink
 * and horizontal centre of mass follow them. */
Test(image_data, two_condition_columns_move_the_images_their_way) {
    need_fashion();
    test_rng r = test_rng_new("conditions");
    make_dir(in_dir("attr"));
    FILE *fp = fopen(in_dir("attr/table.txt"), "w");
    fprintf(fp, "image label ink shift\n"); /* whitespace-separated, a label column too */
    uint8_t px[784];
    const int n = 3000;
    for (int i = 0; i < n; i++) {
        const int s = (int)floor(test_uniform(&r, -4, 5));
        const double b = test_uniform(&r, 0.4, 1.0);
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                const int from = x - s;
                px[y * 28 + x] = from < 0 || from >= 28 ? 0
                                 : (uint8_t)lround(b * images[(size_t)i * 784 + y * 28 + from]);
            }
        char name[64];
        snprintf(name, sizeof name, "attr/%d.png", i);
        write_png(in_dir(name), px, 28, 28, 1);
        fprintf(fp, "%d.png %d %.4f %.4f\n", i, labels[i], (b - 0.7) / 0.3, s / 4.0);
    }
    fclose(fp);
    char table[4400], run[4400], ckpt[4500], wanted[4400], gen[4400], cache[4400];
    snprintf(table, sizeof table, "%s/attr/table.txt", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    snprintf(wanted, sizeof wanted, "%s/wanted.npy", dir);
    snprintf(gen, sizeof gen, "%s/gen", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    const char *train[] = {"train", "--train-csv", table, "--condition-columns", "ink,shift",
                           "--cache", cache, "--out", run, "--epochs", "10", "--hidden", "200",
                           "--latent", "8", "--device", "cpu", NULL};
    free(cvae_ok(train));
    const char *info[] = {"info", "--model", ckpt, NULL};
    char *log = cvae_ok(info);
    cr_assert(strstr(log, "condition vectors of width 2") &&
              strstr(log, "condition columns: 0 ink, 1 shift\n"), "%s", log);
    free(log);
    char exported[4500];
    snprintf(exported, sizeof exported, "%s/model.safetensors", dir);
    const char *exp[] = {"export", "--model", ckpt, "--format", "safetensors", "--out", exported,
                         NULL};
    free(cvae_ok(exp));
    size_t n_bytes;
    uint8_t *bytes = test_read_file(exported, &n_bytes);
    const char *want = "\\\"class_names\\\": null, "
                       "\\\"condition_columns\\\": [\\\"ink\\\", \\\"shift\\\"]";
    cr_assert(memmem(bytes, n_bytes, want, strlen(want)), "no columns in %.600s", bytes + 8);
    free(bytes);
    const char *data[] = {"data", "--train-csv", table, "--condition-columns", "ink,shift",
                          "--cache", cache, NULL};
    log = cvae_ok(data);
    cr_assert(strstr(log, "conditions: 2 columns (training split)") &&
              strstr(log, "  shift                              -1 ") && strstr(log, "(fresh)"),
              "%s", log);
    free(log);
    /* four rows: (ink, shift) = (-0.8, -1), (-0.8, 1), (0.8, -1), (0.8, 1): b = 0.46, 0.94 */
    const float rows[8] = {-0.8f, -1, -0.8f, 1, 0.8f, -1, 0.8f, 1};
    test_write_npy(wanted, CV_NPY_F32, 2, (const int64_t[]){4, 2}, rows);
    const char *g[] = {"generate", "--model", ckpt, "--conditions", wanted, "--per-row", "100",
                       "--format", "npy", "--out", gen, "--device", "cpu", NULL};
    free(cvae_ok(g));
    cv_npy_array a;
    cv_err err;
    cr_assert_eq(cv_npy_read(test_path_in(gen, "images.npy"), &a, &err), CV_OK, "%s", err.msg);
    double ink[4] = {0}, centre[4] = {0};
    const uint8_t *img = a.data;
    for (int i = 0; i < 400; i++) { /* image i has row i % 4 */
        double sum = 0, mx = 0;
        for (int j = 0; j < 784; j++) sum += img[(size_t)i * 784 + j], mx += (j % 28) * img[(size_t)i * 784 + j];
        ink[i % 4] += sum / 784 / 100;
        centre[i % 4] += mx / (sum > 0 ? sum : 1) / 100;
    }
    cv_npy_free(&a);
    cr_log_info("mean pixel %.2f %.2f %.2f %.2f, centre of mass %.2f %.2f %.2f %.2f", ink[0],
                ink[1], ink[2], ink[3], centre[0], centre[1], centre[2], centre[3]);
    /* the rows ask for 8 pixels of shift and 2 times the ink; a mean over 100 images
     * varies by about 0.2 pixel: a third of each is far beyond chance */
    for (int k = 0; k < 4; k += 2)
        cr_assert(centre[k + 1] - centre[k] > 2.7, "shift -1 to 1 moved the centre of mass from "
                  "%.2f to %.2f only", centre[k], centre[k + 1]);
    for (int k = 0; k < 2; k++)
        cr_assert(ink[k + 2] > 1.4 * ink[k], "ink -0.8 to 0.8 took the mean pixel from %.2f to "
                  "%.2f only", ink[k], ink[k + 2]);
}

/* cvae eval --condition-columns may name a test table's columns for a model of condition
 * vectors (another table may call them otherwise), but a column the model conditions on
 * under the same name at another place is a swap: refused, not evaluated on swapped
 * conditions. */
Test(image_data, eval_refuses_the_models_columns_in_another_order) {
    test_rng r = test_rng_new("column order");
    make_dir(in_dir("swap"));
    FILE *fp = fopen(in_dir("swap/table.csv"), "w");
    fprintf(fp, "image,a,b\n");
    uint8_t px[64];
    for (int i = 0; i < 40; i++) {
        for (int j = 0; j < 64; j++) px[j] = (uint8_t)test_uniform(&r, 0, 256);
        char name[64];
        snprintf(name, sizeof name, "swap/%d.png", i);
        write_png(in_dir(name), px, 8, 8, 1);
        fprintf(fp, "%d.png,%.4f,%.4f\n", i, test_uniform(&r, -1, 1), test_uniform(&r, -1, 1));
    }
    fclose(fp);
    char table[4400], run[4400], ckpt[4500], cache[4400];
    snprintf(table, sizeof table, "%s/swap/table.csv", dir);
    snprintf(run, sizeof run, "%s/swap-run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    const char *train[] = {"train", "--train-csv", table, "--test-csv", table,
                           "--condition-columns", "a,b", "--cache", cache, "--out", run,
                           "--epochs", "1", "--hidden", "8", "--latent", "2", "--device", "cpu",
                           NULL};
    free(cvae_ok(train));
    const char *same[] = {"eval", "--model", ckpt, "--test-csv", table, "--condition-columns",
                          "a,b", "--cache", cache, "--device", "cpu", NULL};
    free(cvae_ok(same));
    const char *swapped[] = {"eval", "--model", ckpt, "--test-csv", table,
                             "--condition-columns", "b,a", "--cache", cache, "--device", "cpu",
                             NULL};
    char *out, *err;
    cr_assert_eq(test_run_cvae(&out, &err, swapped), 2, "evaluated on swapped columns: %s%s",
                 out, err);
    cr_assert(strstr(err, "'b'") && test_count_lines(err) == 1, "%s", err);
    free(out);
    free(err);
    /* a table of another width is named in the refusal */
    const char *narrow[] = {"eval", "--model", ckpt, "--test-csv", table, "--condition-columns",
                            "a", "--cache", cache, "--device", "cpu", NULL};
    cr_assert_eq(test_run_cvae(&out, &err, narrow), 1, "%s%s", out, err);
    cr_assert(strstr(err, table) && !strstr(err, "(null)") && test_count_lines(err) == 1, "%s",
              err);
    free(out);
    free(err);
}

/* score and encode read a table as eval does (--train-csv, --test-csv): the same figures
 * and the same latents as from NumPy files of the same images and conditions. */
Test(image_data, score_and_encode_read_tables_as_the_npy_files_of_their_images) {
    test_rng r = test_rng_new("score and encode tables");
    make_dir(in_dir("tab"));
    FILE *fp = fopen(in_dir("tab/table.csv"), "w");
    fprintf(fp, "image,a,b\n");
    enum { N = 48, H = 8, W = 8 };
    uint8_t px[N * H * W];
    float cond[N * 2];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < H * W; j++) px[i * H * W + j] = (uint8_t)test_uniform(&r, 0, 256);
        char name[64], a[32], b[32];
        snprintf(name, sizeof name, "tab/%d.png", i);
        write_png(in_dir(name), px + i * H * W, H, W, 1);
        snprintf(a, sizeof a, "%.4f", test_uniform(&r, -1, 1));
        snprintf(b, sizeof b, "%.4f", test_uniform(&r, -1, 1));
        cond[2 * i] = strtof(a, NULL);
        cond[2 * i + 1] = strtof(b, NULL);
        fprintf(fp, "%d.png,%s,%s\n", i, a, b);
    }
    fclose(fp);
    char table[4400], run[4400], ckpt[4500], cache[4400], imgs[4400], conds[4400];
    snprintf(table, sizeof table, "%s/tab/table.csv", dir);
    snprintf(run, sizeof run, "%s/tab-run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(imgs, sizeof imgs, "%s/tab-images.npy", dir);
    snprintf(conds, sizeof conds, "%s/tab-conditions.npy", dir);
    test_write_npy(imgs, CV_NPY_U8, 3, (const int64_t[]){N, H, W}, px);
    test_write_npy(conds, CV_NPY_F32, 2, (const int64_t[]){N, 2}, cond);
    const char *train[] = {"train", "--train-csv", table, "--test-csv", table,
                           "--condition-columns", "a,b", "--cache", cache, "--out", run,
                           "--epochs", "1", "--hidden", "8", "--latent", "2", "--device", "cpu",
                           NULL};
    free(cvae_ok(train));

    const char *score_tab[] = {"score", "--model", ckpt, "--train-csv", table, "--test-csv",
                               table, "--condition-columns", "a,b", "--cache", cache,
                               "--steps", "20", "--json", "--device", "cpu", NULL};
    const char *score_npy[] = {"score", "--model", ckpt, "--train-images", imgs,
                               "--train-conditions", conds, "--test-images", imgs,
                               "--test-conditions", conds, "--steps", "20", "--json",
                               "--device", "cpu", NULL};
    char *from_tab = cvae_ok(score_tab), *from_npy = cvae_ok(score_npy);
    cr_assert(strstr(from_tab, "\"r2_real\""), "no R^2 in score's object: %s", from_tab);
    cr_assert_str_eq(from_tab, from_npy, "score of the table differs from the npy files'");
    free(from_tab);
    free(from_npy);

    for (int train_split = 0; train_split < 2; train_split++) {
        char z_tab[4400], z_npy[4400];
        snprintf(z_tab, sizeof z_tab, "%s/z-tab-%d.npy", dir, train_split);
        snprintf(z_npy, sizeof z_npy, "%s/z-npy-%d.npy", dir, train_split);
        const char *split = train_split ? "train" : "test";
        const char *enc_tab[] = {"encode", "--model", ckpt,
                                 train_split ? "--train-csv" : "--test-csv", table,
                                 "--condition-columns", "a,b", "--cache", cache, "--split",
                                 split, "--out", z_tab, "--device", "cpu", NULL};
        const char *enc_npy[] = {"encode", "--model", ckpt,
                                 train_split ? "--train-images" : "--test-images", imgs,
                                 train_split ? "--train-conditions" : "--test-conditions",
                                 conds, "--split", split, "--out", z_npy, "--device", "cpu",
                                 NULL};
        free(cvae_ok(enc_tab));
        free(cvae_ok(enc_npy));
        size_t n1, n2;
        uint8_t *b1 = file_bytes(z_tab, &n1), *b2 = file_bytes(z_npy, &n2);
        cr_assert(n1 == n2 && memcmp(b1, b2, n1) == 0,
                  "encode --split %s of the table differs from the npy files' (%zu, %zu bytes)",
                  split, n1, n2);
        free(b1);
        free(b2);
    }
}

/* torchvision's ImageFolder root, DIR/<class>/NAME.png without DIR/train/, is a common first
 * try: the refusal names the image layouts too, not only the IDX and NumPy files. */
Test(image_data, a_folder_of_classes_without_train_is_told_the_image_layouts) {
    test_rng r = test_rng_new("class folders without train");
    make_dir(in_dir("root"));
    make_dir(in_dir("root/cat"));
    make_dir(in_dir("root/dog"));
    uint8_t px[16];
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 16; j++) px[j] = (uint8_t)test_uniform(&r, 0, 256);
        char name[64];
        snprintf(name, sizeof name, "root/%s/%d.png", i % 2 ? "cat" : "dog", i);
        write_png(in_dir(name), px, 4, 4, 1);
    }
    char root[4400], run[4400];
    snprintf(root, sizeof root, "%s/root", dir);
    snprintf(run, sizeof run, "%s/root-run", dir);
    const char *args[] = {"train", "--data", root, "--out", run, "--epochs", "1", "--device",
                          "cpu", NULL};
    char *out, *err;
    cr_assert_eq(test_run_cvae(&out, &err, args), 1, "%s%s", out, err);
    cr_assert(test_count_lines(err) == 1 && strstr(err, root) && strstr(err, "train/<class>/") &&
                  strstr(err, "--train-csv"), "%s", err);
    cr_assert(!cv_path_exists(run), "a refused run left its folder");
    free(out);
    free(err);
}
