/* test_score.c: cvae score on models built by hand to have known answers, on data whose
 * classes a linear probe separates (bands of rows): one that copies the real data (each
 * class's mean training image: fidelity near the ceiling) and one that ignores its
 * condition (one image for every class: fidelity and CAS near chance); the same seed gives
 * the same figures; a model whose images do not match the data is one line and exit 1. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cvae/checkpoint.h"
#include "cvae/data.h"
#include "cvae/model.h"
#include "helpers.h"

#define SIDE 8
#define CLASSES 4

static char *dir;
static char data[4200];

static void setup(void) {
    dir = test_tmpdir();
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(mkdir(data, 0777), 0);
    test_rng r = test_rng_new("score data");
    test_write_dataset(data, 1200, 400, SIDE, SIDE, CLASSES, false, r.s);
}

static void teardown(void) {
    test_rmtree(dir);
    free(dir);
}

TestSuite(score, .init = setup, .fini = teardown, .timeout = 300);

static float logit(double p) {
    p = p < 0.01 ? 0.01 : p > 0.99 ? 0.99 : p;
    return (float)log(p / (1 - p));
}

/* A model whose decoder ignores z: its hidden layer is the one-hot of the class (copies:
 * the condition table is the identity) or always unit 0 (ignores: the table is 0, the
 * bias 1 on unit 0), and its output column k is the logit of an image: class k's mean
 * training image (copies), or the mean of all (ignores). Saved as a checkpoint. */
static void write_model(const char *path, bool copies) {
    cv_data d;
    cv_err err;
    cr_assert_eq(cv_data_load(data, 0, &d, &err), CV_OK, "%s", err.msg);
    const int D = SIDE * SIDE, K = CLASSES;
    double mean[CLASSES + 1][SIDE * SIDE] = {{0}}, count[CLASSES + 1] = {0};
    for (int i = 0; i < d.train.n; i++)
        for (int slot = 0; slot < 2; slot++) {
            const int k = slot ? K : d.train.labels[i]; /* slot K: every image */
            count[k] += slot == 0 ? 1 : 1;
            for (int j = 0; j < D; j++) mean[k][j] += d.train.pixels[(size_t)i * D + j] / 255.0;
        }
    cv_backend *be;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
    cv_model_config cfg = {.height = SIDE, .width = SIDE, .channels = 1,
                           .condition = CV_COND_LABELS, .cond_width = K, .latent = 2,
                           .n_hidden = 1, .hidden = {K}, .sigma = 0.1f};
    cv_model m;
    cr_assert_eq(cv_model_create(be, &cfg, &m, &err), CV_OK, "%s", err.msg);
    cr_assert_eq(cv_model_init_params(&m, 3, &err), CV_OK, "%s", err.msg);
    const cv_layer *g1 = &m.layout.layers[m.layout.n_enc], *out = &m.layout.layers[m.layout.n_layers - 1];
    float *p = m.params;
    memset(p + g1->w, 0, (size_t)g1->in * g1->out * sizeof(float)); /* z plays no part */
    for (int c = 0; c < K; c++)
        for (int u = 0; u < K; u++) p[g1->cond + (size_t)c * K + u] = copies && c == u ? 1.0f : 0.0f;
    for (int u = 0; u < K; u++) p[g1->b + u] = !copies && u == 0 ? 1.0f : 0.0f;
    for (int j = 0; j < D; j++) {
        for (int u = 0; u < K; u++)
            p[out->w + (size_t)j * K + u] = logit(mean[copies ? u : K][j] / count[copies ? u : K]);
        p[out->b + j] = 0.0f;
    }
    cv_checkpoint ck = {0};
    cr_assert_eq(cv_checkpoint_from_model(&m, &ck, &err), CV_OK, "%s", err.msg);
    ck.batch = 32;
    ck.lr = 1e-3f;
    ck.train = (cv_train_config){.beta = 1.0f, .samples = 1, .warmup_per_step = 1};
    ck.active_units = -1;
    cr_assert_eq(cv_checkpoint_save(path, &ck, &err), CV_OK, "%s", err.msg);
    cv_checkpoint_free(&ck);
    cv_model_destroy(&m);
    be->destroy(be);
    cv_data_free(&d);
}

/* The value of "key": in a JSON object. */
static double json_number(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *at = strstr(json, pattern);
    cr_assert_not_null(at, "no %s in %s", key, json);
    return strtod(at + strlen(pattern), NULL);
}

/* cvae score --json of the model at path; its stdout (malloc'd). */
static char *score_json(const char *path, const char *seed) {
    const char *args[] = {"score", "--model", path, "--data", data, "--per-class", "200",
                          "--steps", "400", "--seed", seed, "--device", "cpu", "--json", NULL};
    char *out, *err;
    cr_assert_eq(test_run_cvae(&out, &err, args), 0, "%s", err);
    free(err);
    return out;
}

Test(score, a_model_that_copies_the_data_scores_near_the_ceiling) {
    char *path = test_path_in(dir, "copies.ckpt");
    write_model(path, true);
    char *json = score_json(path, "4");
    const double ceiling = json_number(json, "ceiling"), fidelity = json_number(json, "fidelity");
    const double cas = json_number(json, "cas");
    /* the bands are linearly separable: the real classifier is near perfect, and each class's
     * mean image is the clearest image of its class */
    cr_assert_gt(ceiling, 0.95, "%s", json);
    cr_assert_geq(fidelity, ceiling - 0.02, "%s", json);
    /* one image per class still teaches which band is which */
    cr_assert_geq(cas, ceiling - 0.1, "%s", json);
    free(json);
}

Test(score, a_model_that_ignores_its_condition_scores_near_chance) {
    char *path = test_path_in(dir, "ignores.ckpt");
    write_model(path, false);
    char *json = score_json(path, "4");
    const double chance = 1.0 / CLASSES;
    /* every class's images are one image: the classifier gives them all one class */
    cr_assert_leq(fabs(json_number(json, "fidelity") - chance), 1e-9, "%s", json);
    /* trained on one image under every label, the classifier learns no class: it guesses
     * one, right as often as that class is in the test set (400 rows of 4 classes drawn
     * uniformly: within 0.1 of 1/4 but once in ~10^5) */
    cr_assert_leq(json_number(json, "cas"), chance + 0.1, "%s", json);
    cr_assert_gt(json_number(json, "ceiling"), 0.95, "%s", json);
    free(json);
}

Test(score, the_same_seed_gives_the_same_figures) {
    char *path = test_path_in(dir, "copies.ckpt");
    write_model(path, true);
    char *a = score_json(path, "9"), *b = score_json(path, "9");
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
}

Test(score, a_model_of_other_images_is_one_line_and_exit_1) {
    char *path = test_path_in(dir, "copies.ckpt");
    write_model(path, true);
    char other[4300];
    snprintf(other, sizeof other, "%s/other", dir);
    cr_assert_eq(mkdir(other, 0777), 0);
    test_write_dataset(other, 100, 50, SIDE + 2, SIDE, CLASSES, false, 5);
    const char *args[] = {"score", "--model", path, "--data", other, "--device", "cpu", NULL};
    char *out, *err;
    cr_assert_eq(test_run_cvae(&out, &err, args), 1, "%s", err);
    cr_assert_eq(test_count_lines(err), 1, "%s", err);
    cr_assert(strstr(err, "cvae score: ") && strstr(err, "10x8x1 but the model takes 8x8x1"),
              "%s", err);
    free(out);
    free(err);
    const char *bad[] = {"score", "--model", path, "--data", data, "--mean", "--sample", NULL};
    cr_assert_eq(test_run_cvae(&out, &err, bad), 2, "%s", err);
    cr_assert_eq(test_count_lines(err), 1, "%s", err);
    free(out);
    free(err);
}

/* A model of --classes 4 trained on data whose training labels are 0..2, scored on a test
 * split that holds a 3: the model's class count decides (as for eval --marginal). It was
 * refused: "label 3 at index ... is not among the 3 classes (0..2)". */
Test(score, the_models_classes_decide_not_the_training_labels) {
    char few[4300], more[4300], run[4300], ckpt[4400];
    snprintf(few, sizeof few, "%s/few", dir);
    snprintf(more, sizeof more, "%s/more", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", run);
    cr_assert_eq(mkdir(few, 0777), 0);
    cr_assert_eq(mkdir(more, 0777), 0);
    test_write_dataset(few, 300, 0, SIDE, SIDE, 3, false, 11);
    test_write_dataset(more, 10, 100, SIDE, SIDE, 4, false, 12);
    const char *names[] = {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    for (int i = 0; i < 2; i++) {
        char from[4400];
        snprintf(from, sizeof from, "%s", test_path_in(more, names[i]));
        cr_assert_eq(rename(from, test_path_in(few, names[i])), 0);
    }
    const char *train[] = {"train", "--data", few, "--classes", "4", "--epochs", "1",
                           "--hidden", "16", "--latent", "2", "--out", run, "--device", "cpu",
                           NULL};
    char *out, *err;
    cr_assert_eq(test_run_cvae(&out, &err, train), 0, "%s", err);
    free(out);
    free(err);
    const char *score[] = {"score", "--model", ckpt, "--data", few, "--per-class", "20",
                           "--steps", "50", "--device", "cpu", "--json", NULL};
    cr_assert_eq(test_run_cvae(&out, &err, score), 0, "%s", err);
    cr_assert(strstr(out, "\"generated\": 80"), "%s", out);
    free(out);
    free(err);
}
